//! The MSR permission map: 8 KiB (two pages), two bits per MSR (read at the
//! even bit, write at the odd one) for three ranges of 8192 MSRs. A set bit
//! makes the access exit with `VMEXIT_MSR`; MSRs outside the ranges always
//! exit (APM vol. 2, 15.11).

/// Size of the map in bytes (two pages).
pub const MSRPM_SIZE: usize = 8192;
/// Pages of the map.
pub const MSRPM_PAGES: usize = MSRPM_SIZE / 4096;

/// MSRs the guest reads and writes directly. Each lives in the VMCB and is
/// switched by VMRUN/#VMEXIT or by VMLOAD/VMSAVE around the run, so the
/// guest only ever touches its own copy.
pub const PASSTHROUGH: &[u32] = arch_common::bitmap::PASSTHROUGH_MSRS;

/// Bit position (in the whole map) of `msr`'s read bit, or `None` for MSRs
/// outside the three ranges.
pub fn bit_of(msr: u32) -> Option<usize> {
    let (base, first) = match msr {
        0x0000_0000..=0x0000_1FFF => (0usize, 0u32),
        0xC000_0000..=0xC000_1FFF => (0x800 * 8, 0xC000_0000),
        0xC001_0000..=0xC001_1FFF => (0x1000 * 8, 0xC001_0000),
        _ => return None,
    };
    Some(base + 2 * (msr - first) as usize)
}

/// An MSR permission map held in memory the caller owns.
pub struct MsrPermissionMap<'a> {
    bytes: &'a mut [u8; MSRPM_SIZE],
}

impl<'a> MsrPermissionMap<'a> {
    /// Wraps `bytes` and makes every MSR exit, then lets [`PASSTHROUGH`] go.
    pub fn init(bytes: &'a mut [u8; MSRPM_SIZE]) -> Self {
        bytes.fill(0xFF);
        let mut map = Self { bytes };
        for &msr in PASSTHROUGH {
            map.set(msr, false, false);
        }
        map
    }

    /// Sets whether reads and writes of `msr` exit. MSRs outside the ranges
    /// always exit and are ignored here.
    pub fn set(&mut self, msr: u32, read_exits: bool, write_exits: bool) {
        let Some(bit) = bit_of(msr) else { return };
        for (b, on) in [(bit, read_exits), (bit + 1, write_exits)] {
            arch_common::bitmap::set_bit(self.bytes, b, on);
        }
    }

    /// Whether a read (`write == false`) or write of `msr` exits.
    pub fn exits(&self, msr: u32, write: bool) -> bool {
        match bit_of(msr) {
            None => true,
            Some(bit) => {
                let b = bit + usize::from(write);
                arch_common::bitmap::bit(self.bytes, b)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_positions_follow_the_apm() {
        assert_eq!(bit_of(0), Some(0));
        assert_eq!(bit_of(0x1FFF), Some(0x3FFE));
        assert_eq!(bit_of(0xC000_0080), Some(0x800 * 8 + 0x100));
        assert_eq!(bit_of(0xC001_0000), Some(0x1000 * 8));
        assert_eq!(bit_of(0x2000), None);
        assert_eq!(bit_of(0xC000_2000), None);
        assert_eq!(bit_of(0x4000_0000), None);
    }

    #[test]
    fn passthrough_set_and_everything_else_exits() {
        let mut bytes = Box::new([0u8; MSRPM_SIZE]);
        let map = MsrPermissionMap::init(&mut bytes);
        for &msr in PASSTHROUGH {
            assert!(!map.exits(msr, false), "{msr:#x}");
            assert!(!map.exits(msr, true), "{msr:#x}");
        }
        for msr in [
            0x10,
            0x1B,
            0xC000_0080,
            0xC000_0103,
            0xC001_0114,
            0x4000_0000,
        ] {
            assert!(map.exits(msr, false), "{msr:#x}");
            assert!(map.exits(msr, true), "{msr:#x}");
        }
        // The reserved last 2 KiB stay all ones.
        assert!(bytes[0x1800..].iter().all(|&b| b == 0xFF));
        // LSTAR: byte 0x800 + 0x82*2/8 = 0x820, bits 4 and 5 clear.
        assert_eq!(bytes[0x820] & 0x30, 0);
    }

    #[test]
    fn read_and_write_bits_are_separate() {
        let mut bytes = Box::new([0u8; MSRPM_SIZE]);
        let mut map = MsrPermissionMap::init(&mut bytes);
        map.set(0x10, false, true);
        assert!(!map.exits(0x10, false));
        assert!(map.exits(0x10, true));
        map.set(0x4000_0000, false, false); // outside the ranges: ignored
        assert!(map.exits(0x4000_0000, false));
    }
}
