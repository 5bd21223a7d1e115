//! # arch-vmx: the Intel VMX backend
//!
//! This crate will implement hv-core's per-CPU virtualization traits with
//! Intel VT-x: VMXON, the VMCS, EPT, VPID, MSR and I/O bitmaps, the VM
//! entry/exit path and exit decoding. It mirrors `arch-svm` module for module.
//!
//! Status: empty until the VMX issue (8) fills it.

#![cfg_attr(not(test), no_std)]
