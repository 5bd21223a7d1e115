//! The PV console ring page: `xen/include/public/io/console.h`.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A console ring index, free-running (console.h `XENCONS_RING_IDX`).
pub type XenconsRingIdx = u32;

/// Size of the input ring (to the guest), bytes.
pub const XENCONS_IN_SIZE: usize = 1024;
/// Size of the output ring (from the guest), bytes.
pub const XENCONS_OUT_SIZE: usize = 2048;
/// `connection` value: connected (console.h `XENCONSOLE_CONNECTED`).
pub const XENCONSOLE_CONNECTED: u8 = 0;
/// `connection` value: the back end is gone (console.h `XENCONSOLE_DISCONNECTED`).
pub const XENCONSOLE_DISCONNECTED: u8 = 1;

/// The console page (console.h `struct xencons_interface`). `in` carries
/// bytes to the guest, `out` bytes from it; indices are masked with the
/// size of the array they index (console.h `MASK_XENCONS_IDX`).
///
/// # Concurrency
/// The guest writes `out[]`, `out_prod` and `in_cons`; the back end writes
/// `in[]`, `in_prod`, `out_cons` and `connection`. Access the live page with
/// atomics and volatile copies.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct XenconsInterface {
    /// Bytes from the back end to the guest.
    pub r#in: [u8; XENCONS_IN_SIZE],
    /// Bytes from the guest to the back end.
    pub out: [u8; XENCONS_OUT_SIZE],
    /// Input consumer index (guest).
    pub in_cons: XenconsRingIdx,
    /// Input producer index (back end).
    pub in_prod: XenconsRingIdx,
    /// Output consumer index (back end).
    pub out_cons: XenconsRingIdx,
    /// Output producer index (guest).
    pub out_prod: XenconsRingIdx,
    /// `XENCONSOLE_*` (newer Xen).
    pub connection: u8,
    /// Padding.
    pub pad: [u8; 3],
}
crate::assert_layout!(XenconsInterface, 3092, {
    r#in: 0, out: 1024, in_cons: 3072, in_prod: 3076, out_cons: 3080, out_prod: 3084,
    connection: 3088, pad: 3089,
});

/// Masks a free-running index into the input ring (console.h `MASK_XENCONS_IDX`).
pub const fn mask_xencons_in(idx: XenconsRingIdx) -> usize {
    idx as usize & (XENCONS_IN_SIZE - 1)
}

/// Masks a free-running index into the output ring (console.h `MASK_XENCONS_IDX`).
pub const fn mask_xencons_out(idx: XenconsRingIdx) -> usize {
    idx as usize & (XENCONS_OUT_SIZE - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn masks_use_each_array_size() {
        assert_eq!(mask_xencons_in(1024), 0);
        assert_eq!(mask_xencons_out(1024), 1024);
        assert_eq!(mask_xencons_out(u32::MAX), 2047);
        assert_eq!(mask_xencons_in(u32::MAX), 1023);
    }

    #[test]
    fn console_page_from_bytes() {
        let mut page = [0u8; 4096];
        page[3084..3088].copy_from_slice(&5u32.to_le_bytes());
        page[1024..1029].copy_from_slice(b"hello");
        let (c, _) = XenconsInterface::read_from_prefix(&page[..]).unwrap();
        assert_eq!(c.out_prod, 5);
        assert_eq!(&c.out[..5], b"hello");
        assert!(XenconsInterface::read_from_prefix(&page[..3091]).is_err());
        let z = XenconsInterface::new_zeroed();
        assert_eq!(z.connection, XENCONSOLE_CONNECTED);
    }
}
