//! # pv-rings: Xen-compatible shared rings
//!
//! Placeholder; being written.

#![no_std]
