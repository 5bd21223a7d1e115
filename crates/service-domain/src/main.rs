//! # The service domain's kernel
//!
//! A `no_std` PVH kernel: the hypervisor (or any Xen) enters it at the
//! `XEN_ELFNOTE_PHYS32_ENTRY` note in 32-bit protected mode with EBX =
//! `hvm_start_info`. It goes to long mode on an identity map of the first
//! GiB, reads its command line (`domains=ID:NAME,...`, added by the
//! hypervisor's launch plan), and runs the services of the library
//! ([`service_domain`]) over hypercalls (`kernel/xen.rs`): a small
//! event loop that blocks in `SCHEDOP_poll` on its ports and
//! `VIRQ_DOM_EXC` when there is nothing to do. Its console is the
//! hypervisor's (`CONSOLEIO_write`).
//!
//! Built for `x86_64-unknown-none` only; on the host it is an empty
//! program (the logic is in the library and its tests).

#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod kernel;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the service domain runs under a hypervisor: see `cargo xtask run --service`");
    std::process::exit(2);
}
