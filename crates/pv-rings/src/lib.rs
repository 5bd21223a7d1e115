//! # pv-rings: Xen-compatible shared rings
//!
//! This crate implements the two kinds of rings Xen guests and back ends use
//! over shared pages, byte-compatible with Xen's public headers:
//!
//! - [`ring`]: request/response rings (`io/ring.h`), used by blkif, netif
//!   and most split drivers: a 64-byte header, power-of-two slots, a
//!   [`FrontRing`] and a [`BackRing`] with their private indices, Xen's
//!   notification rules (push-and-check-notify, final check before sleeping)
//!   and its overflow guards.
//! - [`bytes`]: byte-stream rings, with the [`console`] page and the
//!   [`xenstore`] page (both directions, both ends, `error`/`connection`
//!   fields) and a xenstore message framer.
//!
//! It is `no_std` and allocation-free; the `std` feature adds [`HeapPage`],
//! an owned page-aligned buffer for tests and same-host use.
//!
//! ## Shared memory
//! Memory is reached only through the [`SharedMem`] trait: atomic index
//! loads and stores, relaxed atomic byte copies, and full fences. No
//! reference into shared memory is ever created or returned; entries are
//! copied whole into private values ([`zerocopy`] types, so any bytes are a
//! valid value), and the caller validates the copy. [`RawMem`] is the
//! implementation over a raw pointer; its `unsafe` constructor states the
//! contract.
//!
//! ## Hostile peers
//! The peer's indices are read once per batch and checked. Indices that
//! jump, wrap or run backwards, or that claim more entries than the ring
//! holds, stop the ring: every call then returns an error, and no call can
//! panic, access out of bounds or loop more than the ring size.
//!
//! ## Example
//! ```
//! use pv_rings::{BackRing, FrontRing, HeapPage};
//! use zerocopy::{FromBytes, Immutable, IntoBytes};
//!
//! #[repr(C)]
//! #[derive(Clone, Copy, Debug, PartialEq, FromBytes, IntoBytes, Immutable)]
//! struct Req { id: u64, op: u64 }
//! #[repr(C)]
//! #[derive(Clone, Copy, Debug, PartialEq, FromBytes, IntoBytes, Immutable)]
//! struct Rsp { id: u64, status: i64 }
//!
//! let page = HeapPage::one();
//! let mut front = FrontRing::<_, Req, Rsp>::init(page.mem()).unwrap();
//! let mut back = BackRing::<_, Req, Rsp>::new(page.mem()).unwrap();
//! assert_eq!(front.size(), 128);
//!
//! front.put_request(&Req { id: 7, op: 1 }).unwrap();
//! let notify = front.push_requests();
//! assert!(notify); // the back end's req_event starts at 1
//!
//! let req = back.pop_request().unwrap().unwrap();
//! back.put_response(&Rsp { id: req.id, status: 0 }).unwrap();
//! let _ = back.push_responses();
//! assert_eq!(front.pop_response().unwrap(), Some(Rsp { id: 7, status: 0 }));
//! ```

#![no_std]
#![deny(missing_docs)]

#[cfg(feature = "std")]
extern crate std;

pub mod bytes;
pub mod console;
pub mod mem;
pub mod ring;
pub mod xenstore;

#[cfg(feature = "std")]
pub use mem::HeapPage;
pub use mem::{MemError, RawMem, SharedMem};
pub use ring::{
    BackRing, Fault, FrontRing, LayoutError, RingError, entry_size, need_notify, ring_size,
};
