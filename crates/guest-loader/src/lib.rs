//! # guest-loader: PVH guest images to guest memory
//!
//! This crate will turn a PVH guest kernel (ELF with Xen notes), its modules
//! and command line into guest-physical memory contents, an
//! `hvm_start_info` and an initial vCPU state, writing only through a
//! guest-memory trait so that it runs in the hypervisor and in host tests.
//!
//! Status: placeholder until issue 4 fills it.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
