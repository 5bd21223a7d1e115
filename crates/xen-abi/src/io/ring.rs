//! Layout of a shared request/response ring: `xen/include/public/io/ring.h`.
//!
//! A ring page starts with a 64-byte header of free-running `u32` indices,
//! followed by an array of entries, each the union of a request and a
//! response. The number of entries is the largest power of two that fits.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A free-running ring index, wrapping at 2^32 (ring.h `RING_IDX`).
pub type RingIdx = u32;

/// Offset of `req_prod` in the shared ring (ring.h `struct *_sring`).
pub const SRING_REQ_PROD_OFFSET: usize = 0;
/// Offset of `req_event` in the shared ring.
pub const SRING_REQ_EVENT_OFFSET: usize = 4;
/// Offset of `rsp_prod` in the shared ring.
pub const SRING_RSP_PROD_OFFSET: usize = 8;
/// Offset of `rsp_event` in the shared ring.
pub const SRING_RSP_EVENT_OFFSET: usize = 12;
/// Offset of the 4-byte private area (`pvt`, e.g. netif smartpoll).
pub const SRING_PVT_OFFSET: usize = 16;
/// Size of the header; entries start here (ring.h: 16 bytes of indices,
/// 4 private bytes, 44 bytes of padding).
pub const SRING_HEADER_SIZE: usize = 64;

/// The header of a shared ring page (ring.h `struct *_sring` without its
/// `ring[]`). Entries follow at offset 64.
///
/// # Concurrency
/// The front end writes `req_prod` and `rsp_event`; the back end writes
/// `rsp_prod` and `req_event`. The live header must be accessed with atomic
/// loads and stores, never through a Rust reference the peer can change
/// under.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct SringHeader {
    /// Requests produced by the front end.
    pub req_prod: RingIdx,
    /// Back end wants a notification when `req_prod` passes this.
    pub req_event: RingIdx,
    /// Responses produced by the back end.
    pub rsp_prod: RingIdx,
    /// Front end wants a notification when `rsp_prod` passes this.
    pub rsp_event: RingIdx,
    /// Protocol-private bytes (union `pvt`).
    pub pvt: [u8; 4],
    /// Padding.
    pub pad: [u8; 44],
}
crate::assert_layout!(SringHeader, SRING_HEADER_SIZE, {
    req_prod: SRING_REQ_PROD_OFFSET, req_event: SRING_REQ_EVENT_OFFSET,
    rsp_prod: SRING_RSP_PROD_OFFSET, rsp_event: SRING_RSP_EVENT_OFFSET,
    pvt: SRING_PVT_OFFSET, pad: 20,
});

impl SringHeader {
    /// The header a front end writes when it creates a ring (ring.h
    /// `SHARED_RING_INIT`): producers 0, event indices 1, padding zero.
    pub const fn new() -> Self {
        Self {
            req_prod: 0,
            req_event: 1,
            rsp_prod: 0,
            rsp_event: 1,
            pvt: [0; 4],
            pad: [0; 44],
        }
    }
}

impl Default for SringHeader {
    fn default() -> Self {
        Self::new()
    }
}

/// Number of entries of `entry_size` bytes in a ring of `ring_bytes` bytes
/// (ring.h `__RING_SIZE`): what fits after the header, rounded down to a
/// power of two. Zero when nothing fits or `entry_size` is 0.
pub const fn ring_size(ring_bytes: usize, entry_size: usize) -> usize {
    if entry_size == 0 || ring_bytes <= SRING_HEADER_SIZE {
        return 0;
    }
    let fits = (ring_bytes - SRING_HEADER_SIZE) / entry_size;
    if fits == 0 {
        0
    } else {
        1 << (usize::BITS - 1 - fits.leading_zeros())
    }
}

/// Size of a ring page in bytes, as the io/ headers assume (x86 `PAGE_SIZE`).
pub const XEN_PAGE_SIZE: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_xen() {
        assert_eq!(ring_size(XEN_PAGE_SIZE, 112), 32);
        assert_eq!(ring_size(XEN_PAGE_SIZE, 108), 32);
        assert_eq!(ring_size(XEN_PAGE_SIZE, 12), 256);
        assert_eq!(ring_size(XEN_PAGE_SIZE, 8), 256);
        assert_eq!(ring_size(XEN_PAGE_SIZE, 16), 128);
        assert_eq!(ring_size(16 * XEN_PAGE_SIZE, 112), 512);
        assert_eq!(ring_size(XEN_PAGE_SIZE, 0), 0);
        assert_eq!(ring_size(64, 8), 0);
        assert_eq!(ring_size(0, 8), 0);
        assert_eq!(ring_size(XEN_PAGE_SIZE, 5000), 0);
        assert_eq!(ring_size(usize::MAX, 1), 1 << (usize::BITS - 1));
    }

    #[test]
    fn header_init_bytes() {
        let h = SringHeader::new();
        let b = h.as_bytes();
        assert_eq!(&b[0..16], &[0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
        assert!(b[16..].iter().all(|&x| x == 0));
        let page = [0xffu8; XEN_PAGE_SIZE];
        let (hdr, entries) = SringHeader::read_from_prefix(&page[..]).unwrap();
        assert_eq!(hdr.req_prod, u32::MAX);
        assert_eq!(entries.len(), XEN_PAGE_SIZE - 64);
        assert!(SringHeader::read_from_prefix(&page[..63]).is_err());
    }
}
