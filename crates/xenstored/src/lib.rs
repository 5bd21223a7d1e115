//! # xenstored: a Xen-compatible xenstore server
//!
//! This crate's job is the xenstore *server*: the hierarchical store that
//! Xen domains use to find their devices and to negotiate split drivers.
//! It speaks the wire protocol of `io/xs_wire.h` and behaves as C
//! xenstored 4.17 does where clients can tell: the same operations, error
//! names, path rules, permissions, watches (including `@introduceDomain`
//! and `@releaseDomain`), transactions and default quotas.
//!
//! The core is `no_std` + `alloc` and has no `unsafe`: it runs inside our
//! service domain. Transports are kept apart from the store:
//!
//! - [`Xenstored`] takes whole messages from numbered connections (each
//!   with its domain id) and queues whole replies and watch events per
//!   connection; [`DomainOps`] is how `INTRODUCE`/`RELEASE` reach the
//!   embedder (mapping a ring, binding an event channel).
//! - [`ring::RingConnection`] serves a domain's xenstore page through
//!   `pv-rings` (messages in pieces across the 1024-byte rings, the
//!   `connection`, `error` and `server_features` fields).
//! - With the `std` feature, [`socket`] serves a Unix socket, and the
//!   `xenstored` binary (`cargo run -p xenstored --features std -- --socket
//!   PATH`) is a host daemon that Debian's `xenstore-*` tools and Xen's own
//!   `test-xenstore` use through `XENSTORED_PATH=PATH`.
//!
//! ## Why a persistent tree
//!
//! A transaction must see a snapshot of the store, and Linux opens one for
//! every device state change, often with many domains at once. Copying the
//! store per transaction costs O(store) at each start; C xenstored instead
//! copies nodes lazily into a per-transaction area on first access. Here
//! every node sits behind an `Arc` and a change copies only the path from
//! the root to the changed node, and only where a snapshot still shares it
//! ([`tree`]). A snapshot is then one reference-count increment (O(1)), and
//! without open transactions changes happen in place. A transaction's
//! change is checked and answered at once but recorded, and made in its
//! snapshot only when a later request of the same transaction needs to see
//! it (at most O(depth) copies then; none for Linux's read-write-commit).
//! Commit checks, as C does, that every node the transaction read still has
//! the generation it had (else `EAGAIN`, nothing applied), then replays the
//! recorded changes on the global store, in place once the snapshot is gone.
//!
//! ## Bounded by design
//!
//! Everything a client sends is hostile. Messages over 4096 bytes end the
//! connection (as C does); each connection's unread replies are bounded
//! (the transport stops taking its requests, [`Xenstored::accepts_requests`])
//! and so are its queued watch events ([`Quotas::queued_events`], further
//! events are dropped and counted); unprivileged domains live within C
//! xenstored's quotas ([`Quotas`]). No input makes the server panic.
//!
//! ```
//! use xenstored::{NoTransport, Xenstored, wire};
//! use xen_abi::XsdSockmsg;
//!
//! let mut xs = Xenstored::new();
//! let conn = xs.connect_socket();
//! let msg = |kind, payload: &[u8]| {
//!     (XsdSockmsg { r#type: kind, req_id: 1, tx_id: 0, len: payload.len() as u32 }, payload.to_vec())
//! };
//! let (h, p) = msg(wire::XS_WRITE, b"/vm/name\0guest");
//! xs.handle(conn, &h, &p, &mut NoTransport);
//! let (h, p) = msg(wire::XS_READ, b"/vm/name\0");
//! xs.handle(conn, &h, &p, &mut NoTransport);
//! assert_eq!(&xs.next_output(conn).unwrap()[16..], b"OK\0");
//! assert_eq!(&xs.next_output(conn).unwrap()[16..], b"guest");
//! ```

#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod path;
pub mod perms;
pub mod ring;
pub mod server;
#[cfg(feature = "std")]
pub mod socket;
pub mod tree;
pub mod wire;

pub use server::{ConnId, DomainOps, NoTransport, Quotas, Xenstored};
pub use wire::XsError;
