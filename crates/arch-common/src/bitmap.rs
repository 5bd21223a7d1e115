//! What the exit bitmaps of both vendors share: bit access, and the MSRs
//! every backend lets the guest touch directly. The layouts (which bit is
//! which port or MSR) stay with each vendor: arch-svm's `iopm`/`msrpm`,
//! arch-vmx's `iobitmap`/`msrbitmap`.

/// MSRs the guest reads and writes directly on both vendors. Each is
/// switched per guest (by the hardware from the VMCB/VMCS, or by the
/// backend around each run), so the guest only ever touches its own copy.
pub const PASSTHROUGH_MSRS: &[u32] = &[
    0x174,       // SYSENTER_CS
    0x175,       // SYSENTER_ESP
    0x176,       // SYSENTER_EIP
    0x277,       // PAT
    0xC000_0081, // STAR
    0xC000_0082, // LSTAR
    0xC000_0083, // CSTAR
    0xC000_0084, // SFMASK
    0xC000_0100, // FS_BASE
    0xC000_0101, // GS_BASE
    0xC000_0102, // KERNEL_GS_BASE
];

/// Sets (`on`) or clears bit `b` of `bytes` (bit 0 is byte 0's lowest).
pub fn set_bit(bytes: &mut [u8], b: usize, on: bool) {
    let mask = 1u8 << (b % 8);
    if on {
        bytes[b / 8] |= mask;
    } else {
        bytes[b / 8] &= !mask;
    }
}

/// Whether bit `b` of `bytes` is set.
pub fn bit(bytes: &[u8], b: usize) -> bool {
    bytes[b / 8] & (1 << (b % 8)) != 0
}

/// Whether an access of `size` bytes at `port` exits under a one-bit-per-
/// port map: any of its ports' bits set, or wrapping past 0xFFFF.
pub fn port_exits(bytes: &[u8], port: u16, size: u8) -> bool {
    (0..usize::from(size)).any(|k| {
        let p = usize::from(port) + k;
        p / 8 >= bytes.len() || bit(bytes, p)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_and_ports() {
        let mut b = [0u8; 4];
        set_bit(&mut b, 9, true);
        assert_eq!(b, [0, 2, 0, 0]);
        assert!(bit(&b, 9) && !bit(&b, 8));
        assert!(port_exits(&b, 8, 2));
        assert!(!port_exits(&b, 10, 4));
        assert!(port_exits(&b, 30, 4), "past the map");
        set_bit(&mut b, 9, false);
        assert_eq!(b, [0; 4]);
    }
}
