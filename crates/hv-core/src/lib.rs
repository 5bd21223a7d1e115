//! # hv-core: the vendor-neutral core of the hypervisor
//!
//! hv-core holds everything about running Xen PVH domains that does not
//! depend on the CPU vendor or touch hardware: domains and vCPUs, the p2m,
//! guest memory access, hypercall dispatch, event channels, and the handling
//! of VM exits. Hardware access happens behind traits defined here:
//!
//! - [`arch::VcpuBackend`] and [`arch::NestedPaging`], implemented by the
//!   vendor backends (`arch-svm`, `arch-vmx`);
//! - [`platform::Platform`] (frames, time, IPIs, console, host PCI
//!   configuration space), implemented by
//!   the hypervisor image and, in the tests, by a mock machine.
//!
//! So all of it runs and is tested on the host with `cargo test`.

#![cfg_attr(not(any(test, feature = "mock")), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod arch;
pub mod console;
pub mod domain;
pub mod domctl;
pub mod emulate;
pub mod evtchn;
pub mod evtchn_op;
pub mod exits;
pub mod gnttab;
pub mod gnttab_op;
pub mod guest_state;
pub mod guestmem;
pub mod hv;
pub mod hvm_op;
pub mod hypercall;
pub mod local;
pub mod lockorder;
pub mod memory_op;
#[cfg(any(test, feature = "mock"))]
pub mod mock;
pub mod p2m;
pub mod pagetable;
pub mod pagewalk;
pub mod pci;
pub mod physdev;
pub mod pit;
pub mod platform;
pub mod sched;
pub mod store;
pub mod time;
pub mod tlb;
pub mod types;
pub mod vcpu_op;
pub mod vlapic;

pub use hv::{DomainConfig, ExitAction, Hypervisor, VcpuStart};
pub use types::{DomId, Errno, Gfn, Hfn, PAGE_SIZE, XenResult};
