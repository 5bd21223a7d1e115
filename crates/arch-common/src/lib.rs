//! # arch-common: what `arch-svm` and `arch-vmx` share that needs `unsafe`
//!
//! hv-core forbids `unsafe`, so the vendor-neutral parts of the backends
//! that touch hardware live here instead, once, rather than twice in
//! mirrored files (two copies of an `unsafe` block are two audits and two
//! chances to drift):
//!
//! - [`instr`]: the privileged instructions both use (CPUID, MSRs, CR4,
//!   XSAVE/FXSAVE, debug registers), one small `unsafe` wrapper each;
//! - [`fpu`]: the guest's FPU/SSE/AVX state and its switch around a VM
//!   entry, and the XCR0 rules;
//! - [`init`], [`event`]: plain data and rules both use (the initial vCPU
//!   state, exception classes), here so the two cannot drift apart;
//! - [`tables`]: page-table memory over identity-mapped host frames, the
//!   [`PageTableMemory`](hv_core::pagetable::PageTableMemory) that NPT and
//!   EPT trees use in the hypervisor.
//!
//! The page-table engine itself is safe code and lives in hv-core
//! ([`hv_core::pagetable`]).

#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]

extern crate alloc;

pub mod bitmap;
pub mod event;
pub mod fpu;
pub mod init;
pub mod instr;
pub mod tables;
