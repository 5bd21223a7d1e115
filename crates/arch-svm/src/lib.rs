//! # arch-svm: the AMD SVM backend
//!
//! Implements hv-core's [`VcpuBackend`](hv_core::arch::VcpuBackend) and
//! [`NestedPaging`](hv_core::arch::NestedPaging) with AMD's Secure Virtual
//! Machine extension: the VMCB, MSR and I/O permission maps, nested page
//! tables with per-CPU ASIDs, the VMRUN path, exit decoding, event
//! injection and, for CPUs without NRIP save (QEMU TCG), an instruction
//! length decoder.
//!
//! Hardware is touched in a few places only, each `unsafe` with its duties:
//! [`enable::enable`] (EFER.SVME, VM_HSAVE_PA), [`entry`] (VMRUN),
//! [`vcpu::SvmVcpu::new`] and [`vcpu::PermissionMaps::init`] (frames the
//! caller hands over). Everything else is plain code, tested on the host
//! with `cargo test -p arch-svm`.
//!
//! ## Shared with arch-vmx
//! - The page-table engine (levels, 2 MiB pages and their splitting, the
//!   software walk, deferred freeing) is hv-core's [`hv_core::pagetable`]:
//!   NPT and EPT differ only in their `EntryFormat`.
//! - The `unsafe` parts both backends need are in `arch-common`: the
//!   privileged instruction wrappers (`instr`), the guest FPU/XCR0/DR
//!   switch (`fpu`) and table memory over the identity map
//!   ([`npt::IdentityTables`], `tables`).
//!
//! ## Modules (arch-vmx mirrors them file for file)
//! - [`vmcb`]: the VMCB layout, offsets checked at compile time.
//! - [`enable`]: CPUID checks, turning SVM on, the per-CPU area.
//! - [`vcpu`]: initial state, the run step, `VcpuBackend`.
//! - [`entry`]: the VMRUN assembly.
//! - [`exit`]: exit code to [`VmExit`](hv_core::arch::VmExit).
//! - [`intr`]: event injection, re-injection, double faults.
//! - [`insn`]: instruction lengths without NRIP save.
//! - [`msrpm`], [`iopm`]: the permission maps.
//! - [`npt`]: the AMD entry format for hv-core's page-table engine, and
//!   `NestedPaging`.
//! - [`asid`]: per-CPU ASID allocation.
//!
//! ## How the hypervisor uses it
//! 1. On every CPU: [`enable::enable`] with three contiguous frames.
//! 2. Once: [`vcpu::PermissionMaps::init`] with 2 + 3 contiguous frames.
//! 3. Per domain: [`npt::Npt`] over [`npt::IdentityTables`].
//! 4. Per vCPU: [`vcpu::SvmVcpu::new`] with a VMCB frame, the maps, the
//!    domain's `Npt::root()` and `Npt::epoch()`, and the initial state.

#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]

extern crate alloc;

pub mod asid;
pub mod enable;
pub mod entry;
pub mod exit;
pub mod insn;
mod instr;
pub mod intr;
pub mod iopm;
pub mod msrpm;
pub mod npt;
pub mod vcpu;
pub mod vmcb;

pub use enable::{SvmCpu, SvmFeatures, enable, this_cpu};
pub use npt::{IdentityTables, Npt, TlbEpoch};
pub use vcpu::{PermissionMaps, SvmVcpu, VcpuInit};
