//! Page-table entry arithmetic for the hypervisor's own tables (x86-64
//! long-mode format), kept pure so it is tested on the host; the image's
//! `paging.rs` applies it.

/// Present.
pub const P: u64 = 1 << 0;
/// Writable.
pub const W: u64 = 1 << 1;
/// Page size: a 2 MiB leaf in a page directory.
pub const PS: u64 = 1 << 7;
/// PAT bit of a 2 MiB leaf (bit 12); a 4 KiB entry has it at bit 7.
const PAT_LARGE: u64 = 1 << 12;
/// PAT bit of a 4 KiB entry.
const PAT_4K: u64 = 1 << 7;
/// No-execute.
const NX: u64 = 1 << 63;
/// Address bits of an entry pointing to a table or a 4 KiB page.
pub const ADDR: u64 = 0x000F_FFFF_FFFF_F000;
/// Address bits of a 2 MiB leaf.
const ADDR_2M: u64 = 0x000F_FFFF_FFE0_0000;
/// Flag bits a split keeps: P, W, U, PWT, PCD, A, D and G (not PS).
const FLAGS: u64 = 0x17F & !PS;

/// Entry `i` (0..512) of the page table that maps the same frames, with the
/// same attributes, as the 2 MiB leaf `pde`.
pub fn split_2m(pde: u64, i: u64) -> u64 {
    debug_assert!(i < 512 && pde & PS != 0);
    let mut flags = (pde & FLAGS) | (pde & NX);
    if pde & PAT_LARGE != 0 {
        flags |= PAT_4K;
    }
    ((pde & ADDR_2M) + i * 4096) | flags
}

/// Index of `va` in the table at `level` (1 = page table, 4 = PML4).
pub fn index(va: u64, level: u32) -> u64 {
    (va >> (12 + 9 * (level - 1))) & 0x1FF
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_frames_and_attributes() {
        // boot.rs's leaf: present, writable, 2 MiB, at 6 MiB.
        let pde = 0x0060_0000 | 0x83;
        assert_eq!(split_2m(pde, 0), 0x0060_0000 | P | W);
        assert_eq!(split_2m(pde, 511), 0x007F_F000 | P | W);
        // Accessed/dirty, PCD, NX and the PAT bit move over; PS does not.
        let pde = 0x0020_0000 | 0x83 | 0x60 | 0x10 | (1 << 12) | (1 << 63);
        let e = split_2m(pde, 2);
        assert_eq!(e & ADDR, 0x0020_2000);
        assert_eq!(e & 0xFF, P | W | 0x60 | 0x10 | (1 << 7));
        assert_ne!(e & (1 << 63), 0);
        assert_eq!(
            e & (1 << 12),
            0,
            "bit 12 of a 4 KiB entry is an address bit"
        );
    }

    #[test]
    fn indices() {
        let va = 0x0000_7F12_3456_7000u64;
        assert_eq!(index(va, 4), (va >> 39) & 0x1FF);
        assert_eq!(index(va, 3), (va >> 30) & 0x1FF);
        assert_eq!(index(va, 2), (va >> 21) & 0x1FF);
        assert_eq!(index(va, 1), (va >> 12) & 0x1FF);
        assert_eq!(index(0x1AB000, 1), 0x1AB);
    }
}
