//! # xen-abi: Xen's public ABI for x86_64
//!
//! Placeholder; being written.

#![no_std]
