//! # xen-abi: Xen's public ABI for x86_64, as Rust definitions
//!
//! This crate mirrors Xen's public headers (`xen/include/public/`) for the
//! x86_64 ABI as PVH guests and their hypervisor see it: hypercall numbers,
//! errno values, ELF notes, `hvm_start_info`, shared and vCPU info, memory,
//! HVM, vCPU, scheduler, event channel, grant table and console operations,
//! the CPUID leaves, and the `io/` protocols. It holds definitions, not
//! policy: any kernel, hypervisor or tool can use it.
//!
//! ## Conventions
//! - A Xen C struct `foo_bar` is the Rust type `FooBar`, `#[repr(C)]`, with
//!   compile-time assertions of its size and of every field's offset against
//!   Xen's x86_64 layout. Constants keep their Xen names. Everything is
//!   reachable at the crate root (`xen_abi::HvmStartInfo`).
//! - Guests and peers write these structs, so conversion from bytes is safe
//!   and total: every struct derives `zerocopy`'s `FromBytes`, so any bytes
//!   are a valid value. Fields that Xen defines as enumerations stay
//!   integers; checked conversions return `Option`/`Result`. Nothing turns
//!   foreign bytes into a Rust enum, a `bool` or a reference.
//! - The `guest` feature adds hypercall entry for guest kernels.

#![no_std]
#![deny(missing_docs)]
// Xen's constant names are kept verbatim (`HVMOP_set_param`, `__HYPERVISOR_vcpu_op`),
// as are its function-like macros (`XENMEMF_node`).
#![allow(non_upper_case_globals, non_snake_case)]

/// Asserts at compile time the size of a struct and the offset of each named
/// field, against Xen's x86_64 layout.
///
/// ```
/// # use xen_abi::assert_layout;
/// #[repr(C)]
/// struct Pair { a: u32, b: u64 }
/// assert_layout!(Pair, 16, { a: 0, b: 8 });
/// ```
#[macro_export]
macro_rules! assert_layout {
    ($ty:ty, $size:expr, { $($field:ident : $off:expr),* $(,)? }) => {
        const _: () = {
            assert!(::core::mem::size_of::<$ty>() == $size, "size differs from Xen's");
            $(assert!(::core::mem::offset_of!($ty, $field) == $off, "field offset differs from Xen's");)*
        };
    };
}

pub mod cpuid;
pub mod elfnote;
pub mod errno;
pub mod event_channel;
pub mod features;
pub mod grant_table;
#[cfg(all(feature = "guest", target_arch = "x86_64"))]
pub mod guest;
pub mod hvm;
pub mod io;
pub mod memory;
pub mod sched;
pub mod start_info;
pub mod vcpu;
pub mod version;
pub mod xen;

pub use cpuid::*;
pub use elfnote::*;
pub use errno::*;
pub use event_channel::*;
pub use features::*;
pub use grant_table::*;
#[cfg(all(feature = "guest", target_arch = "x86_64"))]
pub use guest::*;
pub use hvm::*;
pub use io::*;
pub use memory::*;
pub use sched::*;
pub use start_info::*;
pub use vcpu::*;
pub use version::*;
pub use xen::*;
