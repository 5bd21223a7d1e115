//! The I/O permission map: 12 KiB (three pages), one bit per port for ports
//! 0-0xFFFF plus the bits an access straddling 0xFFFF reaches. A set bit
//! makes `IN`/`OUT`/`INS`/`OUTS` touching that port exit with
//! `VMEXIT_IOIO` (APM vol. 2, 15.10). The hypervisor emulates every port,
//! so all bits are set.

/// Size of the map in bytes (three pages).
pub const IOPM_SIZE: usize = 12288;
/// Pages of the map.
pub const IOPM_PAGES: usize = IOPM_SIZE / 4096;

/// An I/O permission map held in memory the caller owns.
pub struct IoPermissionMap<'a> {
    bytes: &'a mut [u8; IOPM_SIZE],
}

impl<'a> IoPermissionMap<'a> {
    /// Wraps `bytes` and makes every port exit.
    pub fn init(bytes: &'a mut [u8; IOPM_SIZE]) -> Self {
        bytes.fill(0xFF);
        Self { bytes }
    }

    /// Sets whether accesses to `port` exit.
    pub fn set(&mut self, port: u16, exits: bool) {
        arch_common::bitmap::set_bit(self.bytes, usize::from(port), exits);
    }

    /// Whether an access of `size` bytes at `port` exits (any of its bytes'
    /// bits set, as the CPU checks it; the map's tail covers the wrap).
    pub fn exits(&self, port: u16, size: u8) -> bool {
        arch_common::bitmap::port_exits(self.bytes, port, size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_ports_exit_until_opened() {
        let mut bytes = Box::new([0u8; IOPM_SIZE]);
        let mut map = IoPermissionMap::init(&mut bytes);
        assert!(map.exits(0, 1) && map.exits(0x3F8, 1) && map.exits(0xFFFF, 4));
        map.set(0x80, false);
        assert!(!map.exits(0x80, 1));
        assert!(map.exits(0x7F, 2)); // straddles into a closed port
        assert!(map.exits(0x80, 2));
        assert!(bytes.iter().filter(|&&b| b != 0xFF).count() == 1);
    }
}
