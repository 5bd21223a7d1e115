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
//! - The `guest` feature adds hypercall entry for guest kernels
//!   (`guest` module, x86_64 only).
//!
//! ## Modules, by Xen header
//! | module | mirrors |
//! |---|---|
//! | [`compat`] | the 32-bit guests' layouts (Xen's `include/compat`, `xlat.lst`) |
//! | [`xen`] | `xen.h`, `arch-x86/xen*.h`: hypercall numbers, `DOMID_*`, `VIRQ_*`, `CONSOLEIO_*`, shared and vCPU info |
//! | [`domctl`] | `domctl.h`, `sysctl.h`: the domain-information subset a xenstore domain uses |
//! | [`errno`] | `errno.h` |
//! | [`elfnote`] | `elfnote.h` |
//! | [`start_info`] | `arch-x86/hvm/start_info.h` |
//! | [`version`], [`features`] | `version.h` (`XENVER_*`), `features.h` (`XENFEAT_*`) |
//! | [`memory`] | `memory.h` (`XENMEM_*`), the e820 entry, `hvm/e820.h` |
//! | [`physdev`] | `physdev.h`: the `physdev_op` sub-ops and their arguments |
//! | [`hvm`] | `hvm/hvm_op.h`, `hvm/params.h`, callback-irq helpers |
//! | [`vcpu`] | `vcpu.h`, `hvm/hvm_vcpu.h` |
//! | [`sched`] | `sched.h` |
//! | [`event_channel`] | `event_channel.h`, 2-level and FIFO |
//! | [`grant_table`] | `grant_table.h` |
//! | [`cpuid`] | `arch-x86/cpuid.h` |
//! | [`io`] | `io/ring.h`, `io/console.h`, `io/xs_wire.h`, `io/xenbus.h`, `io/blkif.h`, `io/netif.h`, `io/protocols.h` |
//!
//! ## Example: reading what a guest wrote
//! ```
//! use xen_abi::{HvmCallbackVia, XenHvmParam, HVM_PARAM_CALLBACK_IRQ};
//! use zerocopy::FromBytes;
//!
//! // 16 bytes copied out of guest memory: HVMOP_set_param's argument.
//! let mut raw = [0u8; 16];
//! raw[0..2].copy_from_slice(&0x7ff0u16.to_le_bytes()); // DOMID_SELF
//! raw[8..16].copy_from_slice(&((2u64 << 56) | 0xf3).to_le_bytes());
//! let param = XenHvmParam::read_from_bytes(&raw).unwrap(); // any 16 bytes are valid
//! assert_eq!(param.index, HVM_PARAM_CALLBACK_IRQ);
//! assert_eq!(HvmCallbackVia::decode(param.value), Ok(HvmCallbackVia::Vector(0xf3)));
//! assert!(XenHvmParam::read_from_bytes(&raw[..15]).is_err()); // short input: an error, not a panic
//! ```

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

pub mod compat;
pub mod cpuid;
pub mod domctl;
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
pub mod physdev;
pub mod sched;
pub mod start_info;
pub mod vcpu;
pub mod version;
pub mod xen;

pub use compat::*;
pub use cpuid::*;
pub use domctl::*;
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
pub use physdev::*;
pub use sched::*;
pub use start_info::*;
pub use vcpu::*;
pub use version::*;
pub use xen::*;
