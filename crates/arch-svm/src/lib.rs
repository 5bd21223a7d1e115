//! # arch-svm: the AMD SVM backend
//!
//! This crate will implement hv-core's per-CPU virtualization traits with
//! AMD's Secure Virtual Machine extension: the VMCB, MSR and I/O permission
//! maps, nested page tables, ASIDs, the VMRUN path and exit decoding.
//!
//! Status: empty until the SVM boot issue (7) fills it.

#![cfg_attr(not(test), no_std)]
