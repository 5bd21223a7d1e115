//! # hypervisor: the bootable image
//!
//! This binary will be the hypervisor itself: entered from a Xen PVH note or
//! Multiboot2, it brings up the machine and runs hv-core on the SVM or VMX
//! backend. It only means something when built for `x86_64-unknown-none`
//! (`cargo xtask image`); a host build is a placeholder that says so.
//!
//! Status: nothing boots yet (issue 7).

#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {
        core::hint::spin_loop();
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the hypervisor runs on bare metal: build it with `cargo xtask image`");
    std::process::exit(2);
}
