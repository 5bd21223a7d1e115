//! Intel extended page tables: hv-core's page-table engine
//! ([`hv_core::pagetable`], shared with arch-svm's NPT) with the EPT entry
//! format (SDM vol. 3, 29.3.2), over identity-mapped host frames
//! (`arch-common`'s [`IdentityTables`]), behind hv-core's [`NestedPaging`].
//!
//! EPT entries have separate read, write and execute bits and, in leaves,
//! the memory type. Guest RAM is write-back with the guest's PAT honoured
//! (IPAT clear); a device's memory (`P2mPerms::uncached`, an assigned
//! function's BARs) is UC.

pub use arch_common::tables::{FrameSource, IdentityTables};
use hv_core::arch::P2mPerms;
pub use hv_core::pagetable::TlbEpoch;
use hv_core::pagetable::{EntryFormat, NestedTables};

/// Read.
pub const R: u64 = 1 << 0;
/// Write.
pub const W: u64 = 1 << 1;
/// Execute (supervisor and user: mode-based execute control is off).
pub const X: u64 = 1 << 2;
/// Memory type, bits 5:3 of a leaf.
pub const MT_SHIFT: u32 = 3;
/// Write-back memory type.
pub const MT_WB: u64 = 6;
/// Uncacheable memory type (a device's registers).
pub const MT_UC: u64 = 0;
/// Large page (2 MiB at level 2).
pub const LARGE: u64 = 1 << 7;

/// EPTP memory type write-back (bits 2:0).
pub const EPTP_WB: u64 = 6;
/// EPTP page-walk length minus one (bits 5:3): 4 levels.
pub const EPTP_WALK_4: u64 = 3 << 3;

/// The EPT pointer for a tree rooted at `root` (emulators.md: PML4 | 0x1E).
pub const fn eptp(root: u64) -> u64 {
    root | EPTP_WALK_4 | EPTP_WB
}

/// The EPT entry format.
pub struct EptFormat;

impl EntryFormat for EptFormat {
    const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

    fn table(table_hpa: u64) -> u64 {
        table_hpa | R | W | X
    }

    fn leaf(hpa: u64, perms: P2mPerms, large: bool) -> u64 {
        let mt = if perms.uncached { MT_UC } else { MT_WB };
        let mut e = hpa | R | (mt << MT_SHIFT);
        if perms.write {
            e |= W;
        }
        if perms.exec {
            e |= X;
        }
        if large {
            e |= LARGE;
        }
        e
    }

    fn present(entry: u64) -> bool {
        entry & (R | W | X) != 0
    }

    fn large(entry: u64) -> bool {
        entry & LARGE != 0
    }

    fn perms(entry: u64) -> P2mPerms {
        P2mPerms {
            write: entry & W != 0,
            exec: entry & X != 0,
            uncached: (entry >> MT_SHIFT) & 7 == MT_UC,
        }
    }
}

/// One domain's extended page tables: hv-core's shared engine in the EPT
/// entry format, with the TLB epoch its vCPUs watch (INVEPT when it
/// moves). The vCPU makes the EPTP of the root with [`eptp`].
pub type Ept<M> = NestedTables<EptFormat, M>;

#[cfg(test)]
mod tests {
    use super::*;
    use hv_core::arch::NestedPaging;
    use hv_core::pagetable::{MockTables, PageTableMemory, Translation};
    use hv_core::types::{Gfn, Hfn};

    #[test]
    fn device_memory_is_uncached() {
        let e = EptFormat::leaf(0xFEB0_0000, P2mPerms::MMIO, false);
        assert_eq!(e, 0xFEB0_0000 | R | W | (MT_UC << MT_SHIFT));
        assert_eq!(EptFormat::perms(e), P2mPerms::MMIO);
        assert!(!EptFormat::perms(EptFormat::leaf(0, P2mPerms::RW, false)).uncached);
    }

    #[test]
    fn entries_have_the_ept_bits() {
        let mut mem = MockTables::default();
        let mut ept = Ept::new(&mut mem).unwrap();
        ept.map(Gfn(0), Hfn(0xABC), P2mPerms::RO).unwrap();
        let mut t = ept.root();
        for _ in 0..3 {
            let e = ept.memory().read(t, 0);
            assert_eq!(e & 0xFFF, R | W | X);
            t = e & EptFormat::ADDR_MASK;
        }
        assert_eq!(ept.memory().read(t, 0), 0xABC000 | R | (6 << 3));
        ept.map(Gfn(1), Hfn(0xABD), P2mPerms::RWX).unwrap();
        assert_eq!(ept.memory().read(t, 1), 0xABD000 | R | W | X | 0x30);
        ept.map(Gfn(2), Hfn(0xABE), P2mPerms::RW).unwrap();
        assert_eq!(ept.memory().read(t, 2), 0xABE000 | R | W | 0x30);
        ept.map_large(Gfn(0x200), Hfn(0x400), P2mPerms::RWX)
            .unwrap();
        assert_eq!(
            ept.lookup(Gfn(0x3FF)),
            Some(Translation {
                hfn: Hfn(0x5FF),
                perms: P2mPerms::RWX,
                large: true
            })
        );
        let l2 = ept
            .memory()
            .read(ept.memory().read(ept.root(), 0) & !0xFFF, 0)
            & !0xFFF;
        assert_eq!(
            ept.memory().read(l2, 1),
            0x40_0000 | R | W | X | 0x30 | LARGE
        );
    }

    #[test]
    fn eptp_and_flush() {
        assert_eq!(eptp(0x1234_5000), 0x1234_501E);
        let mut mem = MockTables::default();
        let mut ept = Ept::new(&mut mem).unwrap();
        ept.map(Gfn(0x205), Hfn(0x77), P2mPerms::RO).unwrap();
        ept.map_large(Gfn(0x200), Hfn(0x6_0000), P2mPerms::RW)
            .unwrap();
        assert_eq!(ept.table_frames(), 4);
        let e = ept.epoch();
        ept.flush();
        assert_eq!(e.get(), 1);
        assert_eq!(ept.table_frames(), 3);
        ept.unmap(Gfn(0x201));
        assert_eq!(ept.lookup(Gfn(0x201)), None);
        assert!(ept.lookup(Gfn(0x202)).is_some());
        drop(ept);
        assert!(mem.tables.is_empty());
    }
}
