//! Output through the debug console port 0xE9, and stopping.

/// Writes go to I/O port 0xE9 (QEMU's `-debugcon`, Bochs' `port_e9_hack`,
/// and our hypervisor's debug console).
pub struct DebugCon;

impl core::fmt::Write for DebugCon {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            // SAFETY: port 0xE9 is a write-only debug port with no other
            // meaning on the platforms this guest runs on.
            unsafe { core::arch::asm!("out 0xe9, al", in("al") b, options(nomem, nostack)) };
        }
        Ok(())
    }
}

/// Stops this guest. With `exit=isa-debug-exit` on its command line (bare
/// QEMU), it ends the emulator with status 33 (pass) or 35 (fail); otherwise
/// it asks a Xen-compatible hypervisor (`xen`) to power it off (pass) or
/// records a crash (fail) with `SCHEDOP_shutdown`, and otherwise halts with
/// interrupts off.
pub fn stop(passed: bool, isa_debug_exit: bool, xen: bool) -> ! {
    if xen {
        use xen_abi::sched::ShutdownReason;
        let hc = xen_abi::guest::Hypercall::detect();
        let why = if passed {
            ShutdownReason::Poweroff
        } else {
            ShutdownReason::Crash
        };
        let _ = hc.sched_shutdown(why);
    }
    if isa_debug_exit {
        let code: u32 = if passed { 0x10 } else { 0x11 };
        // SAFETY: the command line says QEMU's isa-debug-exit sits at 0xf4;
        // writing it ends the emulator.
        unsafe {
            core::arch::asm!("out dx, eax", in("dx") 0xf4u16, in("eax") code, options(nomem, nostack))
        };
    }
    loop {
        // SAFETY: cli; hlt only stops this vCPU.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
