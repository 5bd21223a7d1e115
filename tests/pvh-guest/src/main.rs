//! # pvh-test-guest: our own PVH kernel for end-to-end tests
//!
//! A tiny `no_std` kernel that a PVH loader (our hypervisor, Xen, or QEMU's
//! `-kernel`) enters in 32-bit protected mode with EBX = `hvm_start_info`.
//! It switches to long mode on its own page tables, runs named checks and
//! prints one line per check and a final verdict (see [`report`]), which
//! `cargo xtask test` reads. Output goes to the debug console port 0xE9,
//! which both QEMU (`-debugcon`) and our hypervisor provide.
//!
//! The command line may carry `role=crash` (triple-fault on purpose after
//! the verdict, for tests that show a dying domain does not stop the
//! others) and `role=ping` / `role=pong` (an interdomain event-channel
//! ping-pong, then a page granted by pong, mapped and copied by ping).
//!
//! It only means something when built for `x86_64-unknown-none`; the host
//! build checks the report logic in unit tests.

#![cfg_attr(target_os = "none", no_std, no_main)]

mod report;

#[cfg(target_os = "none")]
mod boot;
#[cfg(target_os = "none")]
mod checks;
#[cfg(target_os = "none")]
mod console;
#[cfg(target_os = "none")]
mod cpu;
#[cfg(target_os = "none")]
mod events;

/// Entered from `boot.rs` in long mode with the first GiB identity-mapped.
#[cfg(target_os = "none")]
extern "C" fn guest_main(start_info: u64) -> ! {
    let mut r = report::Report::new(console::DebugCon);
    let opts = checks::run_all(&mut r, start_info);
    let passed = r.verdict();
    if opts.role == checks::Role::Crash {
        r.note(format_args!("pvh-test-guest: role=crash: triple fault now"));
        cpu::triple_fault();
    }
    console::stop(passed, opts.isa_debug_exit, opts.xen)
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    use core::fmt::Write;
    let _ = writeln!(console::DebugCon, "GUEST PANIC: {info}");
    let _ = writeln!(console::DebugCon, "{}", report::VERDICT_FAIL);
    console::stop(false, true, xen_abi::guest::find_xen_cpuid_base().is_some())
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the PVH test guest runs under a hypervisor: see `cargo xtask run`");
    std::process::exit(2);
}
