//! The I/O bitmaps: two 4 KiB pages, A for ports 0-0x7FFF and B for
//! 0x8000-0xFFFF, one bit per port. A set bit makes `IN`/`OUT`/`INS`/`OUTS`
//! touching that port exit (SDM vol. 3, 25.6.4). The hypervisor emulates
//! every port, so all bits are set. The counterpart of arch-svm's `iopm`.

/// Size of both bitmaps in bytes (two pages, A then B).
pub const IO_BITMAP_SIZE: usize = 8192;
/// Pages of the bitmaps.
pub const IO_BITMAP_PAGES: usize = IO_BITMAP_SIZE / 4096;

/// The bitmaps A and B, contiguous, in memory the caller owns.
pub struct IoBitmaps<'a> {
    bytes: &'a mut [u8; IO_BITMAP_SIZE],
}

impl<'a> IoBitmaps<'a> {
    /// Wraps `bytes` and makes every port exit.
    pub fn init(bytes: &'a mut [u8; IO_BITMAP_SIZE]) -> Self {
        bytes.fill(0xFF);
        Self { bytes }
    }

    /// Sets whether accesses to `port` exit.
    pub fn set(&mut self, port: u16, exits: bool) {
        arch_common::bitmap::set_bit(self.bytes, usize::from(port), exits);
    }

    /// Whether an access of `size` bytes at `port` exits: any of its
    /// bytes' bits set, or wrapping past 0xFFFF (which always exits).
    pub fn exits(&self, port: u16, size: u8) -> bool {
        arch_common::bitmap::port_exits(self.bytes, port, size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_ports_exit_until_opened() {
        let mut bytes = Box::new([0u8; IO_BITMAP_SIZE]);
        let mut map = IoBitmaps::init(&mut bytes);
        assert!(map.exits(0, 1) && map.exits(0x3F8, 1) && map.exits(0xFFFF, 1));
        map.set(0x80, false);
        assert!(!map.exits(0x80, 1));
        assert!(map.exits(0x7F, 2));
        map.set(0xFFFF, false);
        assert!(!map.exits(0xFFFF, 1));
        assert!(map.exits(0xFFFF, 2)); // wraps
        map.set(0x8000, false);
        // Port 0x8000 is bit 0 of bitmap B (byte 4096).
        assert_eq!(bytes[4096] & 1, 0);
    }
}
