//! # arch-vmx: the Intel VMX backend
//!
//! Implements hv-core's [`VcpuBackend`](hv_core::arch::VcpuBackend) and
//! [`NestedPaging`](hv_core::arch::NestedPaging) with Intel VT-x: VMXON,
//! the VMCS, EPT with VPIDs, unrestricted guest (PVH starts in 32-bit
//! protected mode with paging off), the MSR and I/O bitmaps, the
//! VMLAUNCH path, exit decoding and event injection. Instruction lengths
//! come from the VM-exit instruction-length field.
//!
//! Hardware is touched in a few places only, each `unsafe` with its duties:
//! [`enable::enable`] (feature control, CR0/CR4, VMXON), [`entry`]
//! (VMLAUNCH/VMRESUME), [`vcpu::VmxVcpu::new`] and
//! [`vcpu::PermissionMaps::init`] (frames the caller hands over) and the
//! private `instr` wrappers. Everything else is plain code, tested on the
//! host with `cargo test -p arch-vmx` (a map stands in for the VMCS).
//!
//! ## Modules (mirroring arch-svm file for file)
//! | arch-vmx | arch-svm | job |
//! |---|---|---|
//! | [`vmcs`] | `vmcb` | the control structure, typed fields |
//! | [`enable`](mod@enable) | `enable` | CPUID, capabilities, turning it on, per-CPU area |
//! | [`vcpu`] | `vcpu` | initial state, the run step, `VcpuBackend` |
//! | [`entry`] | `entry` | the VM-entry assembly |
//! | [`exit`] | `exit` | exit reason to [`VmExit`](hv_core::arch::VmExit) |
//! | [`intr`] | `intr` | event injection and re-injection |
//! | [`msrbitmap`], [`iobitmap`] | `msrpm`, `iopm` | the permission maps |
//! | [`ept`] | `npt` | second-level entry format, `NestedPaging` |
//! | (VPIDs in [`vcpu`]) | `asid` | TLB tags |
//! | (VM-exit instruction length) | `insn` | instruction lengths |
//!
//! ## Shared with arch-svm
//! - The page-table engine (levels, 2 MiB pages and their splitting, the
//!   software walk, deferred freeing) is hv-core's [`hv_core::pagetable`]:
//!   EPT and NPT differ only in their `EntryFormat`.
//! - The `unsafe` parts both backends need are in `arch-common`: the
//!   privileged instruction wrappers (`instr`), the guest FPU/XCR0/DR
//!   switch (`fpu`), table memory over the identity map
//!   ([`ept::IdentityTables`], `tables`), and the plain data both take
//!   (`init::VcpuInit`, `event` rules).
//!
//! ## How the hypervisor uses it
//! 1. On every CPU: [`enable::enable`] with two contiguous frames.
//! 2. Once: [`vcpu::PermissionMaps::init`] with 1 + 2 contiguous frames.
//! 3. Per domain: [`ept::Ept`] over [`ept::IdentityTables`].
//! 4. Per vCPU: [`vcpu::VmxVcpu::new`] with a VMCS frame, the maps, the
//!    domain's `Ept::root()` and `Ept::epoch()`, and the initial state.

#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]

extern crate alloc;

pub mod enable;
pub mod entry;
pub mod ept;
pub mod exit;
mod instr;
pub mod intr;
pub mod iobitmap;
pub mod msrbitmap;
pub mod vcpu;
pub mod vmcs;

pub use enable::{VmxCpu, VmxFeatures, enable, this_cpu};
pub use ept::{Ept, IdentityTables, TlbEpoch};
pub use vcpu::{PermissionMaps, VcpuInit, VmxVcpu};
