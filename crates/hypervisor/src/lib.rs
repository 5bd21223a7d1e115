//! # hypervisor: the bootable image's hardware-independent logic
//!
//! The image itself is the `hypervisor` binary (`src/main.rs` and the
//! hardware modules beside it), built for `x86_64-unknown-none` by
//! `cargo xtask image`. This library holds the parts of it that are pure
//! logic, so that they are unit-tested on the host: the command-line
//! options, the vendor-neutral model of what the boot loader handed over,
//! the frame allocator, the launch plan, the guests' ACPI tables and the
//! page-table entry arithmetic of the guard pages.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod bootinfo;
pub mod builder;
pub mod cmdline;
pub mod focus;
pub mod guest_acpi;
pub mod launch;
pub mod mm;
pub mod pte;
