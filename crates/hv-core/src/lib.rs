//! # hv-core: the vendor-neutral core of the hypervisor
//!
//! hv-core will hold everything about running Xen PVH domains that does not
//! depend on the CPU vendor or touch hardware: domains and vCPUs, the p2m,
//! hypercall dispatch, event channels, grant tables, scheduling, time and
//! timers. Hardware access happens behind traits that the arch backends
//! (`arch-svm`, `arch-vmx`) and the platform implement, so that all of this
//! runs and is tested on the host with `cargo test`.
//!
//! Status: the crate is a placeholder until issues 5 and 6 fill it.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
