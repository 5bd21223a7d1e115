//! Stopping the machine.

use crate::console;
use hypervisor::cmdline::ExitMethod;
use spin::Once;

/// The value written to QEMU's isa-debug-exit when everything went well:
/// QEMU then exits with status `(0x10 << 1) | 1` = 33.
pub const EXIT_SUCCESS: u32 = 0x10;
/// The value written when something failed: QEMU exits with 35.
pub const EXIT_FAILURE: u32 = 0x11;

static EXIT: Once<ExitMethod> = Once::new();

/// Records how to stop the machine (from the command line).
pub fn set_exit_method(m: ExitMethod) {
    EXIT.call_once(|| m);
}

/// The last line the hypervisor prints; emulators without an exit status
/// (Bochs) are judged by it.
pub const STOP_OK: &str = "(XEN) machine stop: success";
/// The same on failure.
pub const STOP_FAILED: &str = "(XEN) machine stop: FAILURE";

/// Stops the machine, reporting `ok` where the platform can carry it.
pub fn stop(ok: bool) -> ! {
    crate::println!("{}", if ok { STOP_OK } else { STOP_FAILED });
    console::drain();
    exit(ok)
}

/// Ends the run without printing anything (the console may be unusable:
/// a fault inside the fatal report itself).
pub fn exit(ok: bool) -> ! {
    match EXIT.get() {
        Some(ExitMethod::IsaDebugExit(port)) => {
            let code = if ok { EXIT_SUCCESS } else { EXIT_FAILURE };
            // SAFETY: the operator named this port as QEMU's isa-debug-exit on
            // the command line; writing it ends the emulator. On a machine
            // without the device the write goes nowhere and we halt below.
            unsafe { x86::io::outl(*port, code) };
        }
        Some(ExitMethod::BochsShutdown) => {
            for b in b"Shutdown" {
                // SAFETY: the operator asked for Bochs' shutdown port 0x8900
                // on the command line; on other machines it is unused.
                unsafe { x86::io::outb(0x8900, *b) };
            }
        }
        Some(ExitMethod::Halt) | None => {}
    }
    halt_forever()
}

/// Disables interrupts and halts this CPU for good.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: cli and hlt only stop this CPU; nothing is left half-done
        // because nothing runs after this point.
        unsafe {
            core::arch::asm!("cli", "hlt", options(nomem, nostack));
        }
    }
}
