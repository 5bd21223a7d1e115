//! # pvh-test-guest32: a 32-bit PVH test kernel
//!
//! Built for `i686-unknown-linux-gnu` as a freestanding `no_std` ELF (see
//! `cargo xtask e2e pvh32`), it stays in 32-bit protected mode with paging
//! off, where the PVH entry leaves it, so every hypercall it makes is a
//! 32-bit one: arguments in EBX, ECX, EDX, result in EAX, and Xen's compat
//! layouts ([`xen_abi::compat`]) for every struct that differs. It runs
//! the checks below and prints the report of the 64-bit test guest
//! (`CHECK name: PASS|FAIL why`, `VERDICT: ...`) on port 0xE9, then powers
//! itself off with `SCHEDOP_shutdown` (a crash when a check failed).
//! Exceptions (vectors 0-31) reach one handler with the vector, error
//! code and EIP; inside a `catch!` section (one instruction) it records
//! them and resumes after the instruction, anywhere else it reports them
//! and stops. `skip=cr0-nw` on the command line leaves out the CR0.NW
//! write of `cr0_invalid_gp`, as for the 64-bit guest on Xen 4.17.
//!
//! | check | what |
//! |---|---|
//! | `xen_cpuid` | the Xen CPUID leaves; the hypercall page installed through their MSR |
//! | `console_io` | `CONSOLEIO_write` of a line |
//! | `xen_version` | version 4.x; `XENVER_platform_parameters` writes 4 bytes (0) |
//! | `memory_map` | `XENMEM_memory_map` with the 8-byte compat struct: RAM under our image |
//! | `shared_info` | `XENMEM_add_to_physmap` (16-byte compat struct) maps shared_info; setting the callback vector latches the 32-bit layout: the wallclock is at 2304 |
//! | `upcall_self_event` | an IPI port past 32 to ourselves raises vector 0xF3; the handler finds it through the 4-byte selector at vcpu_info+4 and 32-bit pending words |
//! | `expand_array` | `EVTCHNOP_expand_array` of a RAM frame before `EVTCHNOP_init_control`: `-EOPNOTSUPP` (Xen's `evtchn_fifo_expand_array`); the 2-level events after it still arrive |
//! | `grant_table` | grant frame 0 placed by `add_to_physmap`; `GNTTABOP_setup_table` lists it as one 4-byte frame; `query_size` |
//! | `grant_copy` | `GNTTABOP_copy` of two 24-byte compat entries between our own frames |
//! | `reservation` | a page given back (then reads all-ones) and populated again with 4-byte extents |
//! | `runstate` | `VCPUOP_get_runstate_info` (44 bytes) and a registered runstate area in the 32-bit layout |
//! | `poll` | `SCHEDOP_poll` (16-byte compat struct) returns at once on a pending port |
//! | `singleshot_timer` | `VCPUOP_set_singleshot_timer` (12 bytes, the last of our RAM, where a 16-byte read faults): 0 |
//! | `timer_virq` | `set_timer_op` (deadline split over EBX/ECX) in the past fires VIRQ_TIMER at once, delivered in the 32-bit layout |
//! | `hostile_handles` | a handle into the hole above RAM: `-EFAULT`; an unknown hypercall: `-ENOSYS` |
//! | `unbacked_mmio` | at 0xFED00000 (HPET) and 0x3FFFF000 (top of the first GiB), outside every memory map entry: 1-, 2- and 4-byte loads give all-ones, a store is dropped, `MOV AL` merges, `MOVZX`, `LOCK OR`, `CMP` (ZF), `REP STOSD`, `REP MOVSD` into RAM, and the 32-bit moffs load (`A1`) |
//! | `cr4_unoffered_gp` | setting an unoffered CR4 bit (UMIP, PKE, LA57, VMXE, OSXSAVE, whichever are absent) and CR4.PCIDE outside long mode raise `#GP(0)` at the `MOV CR4`, CR4 unchanged |
//! | `cr0_invalid_gp` | CR0.PG without PE and CR0.NW without CD raise `#GP(0)` at the `MOV CR0`, CR0 unchanged |
//! | `apic_modes` | IA32_APIC_BASE: xAPIC -> x2APIC -> disabled -> xAPIC works, x2APIC -> xAPIC, EXTD without EN and disabled -> x2APIC are `#GP`; the xAPIC ID and version at 0xFEE00020/30 (MMIO) match the x2APIC MSRs, which are `#GP` while disabled or in xAPIC mode; back to the start mode |
//!
//! Not covered here (the 64-bit guest's checks that need long mode, its
//! own page tables or other domains): ring 3, pvclock monotonicity,
//! blocking wake-ups, EFER and XCR0 checks, xenstore, interdomain grants.

#![cfg_attr(target_arch = "x86", no_std, no_main)]

#[path = "../../pvh-guest/src/report.rs"]
mod report;

#[cfg(target_arch = "x86")]
mod guest;

#[cfg(not(target_arch = "x86"))]
fn main() {
    eprintln!("the 32-bit PVH test guest runs under a hypervisor: see `cargo xtask e2e pvh32`");
    std::process::exit(2);
}
