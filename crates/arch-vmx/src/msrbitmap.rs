//! The MSR bitmaps: one 4 KiB page, one bit per MSR for two ranges of
//! 8192 MSRs, reads in the first half and writes in the second. A set bit
//! makes `RDMSR`/`WRMSR` exit; MSRs outside the ranges always exit (SDM
//! vol. 3, 25.6.9). The counterpart of arch-svm's `msrpm`.

/// Size of the bitmaps in bytes (one page).
pub const MSR_BITMAP_SIZE: usize = 4096;

/// MSRs the guest reads and writes directly. Each is in the VMCS (switched
/// by VM entry and exit: SYSENTER, FS/GS base, PAT with the load/save
/// controls) or switched by the backend around each run (STAR, LSTAR,
/// CSTAR, SFMASK, KERNEL_GS_BASE: see `vcpu`), so the guest only ever
/// touches its own copy. The same list as arch-svm's.
pub const PASSTHROUGH: &[u32] = arch_common::bitmap::PASSTHROUGH_MSRS;

/// The MSRs the backend switches by hand (VMX leaves them alone).
pub const SWITCHED: [u32; 5] = [
    0xC000_0081,
    0xC000_0082,
    0xC000_0083,
    0xC000_0084,
    0xC000_0102,
];

/// Bit position (in the page) of `msr`'s read bit; its write bit is 2048
/// bytes further. `None` for MSRs outside the two ranges.
pub fn bit_of(msr: u32) -> Option<usize> {
    match msr {
        0x0000_0000..=0x0000_1FFF => Some(msr as usize),
        0xC000_0000..=0xC000_1FFF => Some(1024 * 8 + (msr - 0xC000_0000) as usize),
        _ => None,
    }
}

/// The bitmaps in memory the caller owns.
pub struct MsrBitmap<'a> {
    bytes: &'a mut [u8; MSR_BITMAP_SIZE],
}

impl<'a> MsrBitmap<'a> {
    /// Wraps `bytes` and makes every MSR exit, then lets [`PASSTHROUGH`] go.
    pub fn init(bytes: &'a mut [u8; MSR_BITMAP_SIZE]) -> Self {
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
        for (b, on) in [(bit, read_exits), (bit + 2048 * 8, write_exits)] {
            arch_common::bitmap::set_bit(self.bytes, b, on);
        }
    }

    /// Whether a read (`write == false`) or write of `msr` exits.
    pub fn exits(&self, msr: u32, write: bool) -> bool {
        match bit_of(msr) {
            None => true,
            Some(bit) => {
                let b = bit + if write { 2048 * 8 } else { 0 };
                arch_common::bitmap::bit(self.bytes, b)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_positions_follow_the_sdm() {
        assert_eq!(bit_of(0), Some(0));
        assert_eq!(bit_of(0x1FFF), Some(0x1FFF));
        assert_eq!(bit_of(0xC000_0080), Some(1024 * 8 + 0x80));
        assert_eq!(bit_of(0x2000), None);
        assert_eq!(bit_of(0xC001_0000), None);
        assert_eq!(bit_of(0x4000_0000), None);
    }

    #[test]
    fn passthrough_set_and_everything_else_exits() {
        let mut bytes = Box::new([0u8; MSR_BITMAP_SIZE]);
        let map = MsrBitmap::init(&mut bytes);
        for &msr in PASSTHROUGH {
            assert!(!map.exits(msr, false), "{msr:#x}");
            assert!(!map.exits(msr, true), "{msr:#x}");
        }
        for msr in [0x10, 0x1B, 0x3A, 0xC000_0080, 0xC000_0103, 0x4000_0000] {
            assert!(map.exits(msr, false), "{msr:#x}");
            assert!(map.exits(msr, true), "{msr:#x}");
        }
        // LSTAR: read bit in byte 1024 + 0x82/8 = 0x410 bit 2, write bit
        // in byte 0xC10.
        assert_eq!(bytes[0x410] & 4, 0);
        assert_eq!(bytes[0xC10] & 4, 0);
        for m in SWITCHED {
            assert!(PASSTHROUGH.contains(&m));
        }
    }

    #[test]
    fn read_and_write_bits_are_separate() {
        let mut bytes = Box::new([0u8; MSR_BITMAP_SIZE]);
        let mut map = MsrBitmap::init(&mut bytes);
        map.set(0x10, false, true);
        assert!(!map.exits(0x10, false));
        assert!(map.exits(0x10, true));
        map.set(0x4000_0000, false, false);
        assert!(map.exits(0x4000_0000, false));
    }
}
