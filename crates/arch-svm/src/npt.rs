//! AMD nested page tables: hv-core's page-table engine
//! ([`hv_core::pagetable`], shared with arch-vmx's EPT) with the long-mode
//! entry format, over identity-mapped host frames (`arch-common`'s
//! [`IdentityTables`]), behind hv-core's [`NestedPaging`].
//!
//! NPT entries are ordinary long-mode entries. Guest accesses count as user
//! accesses in the nested walk, so U/S is set at every level; NX needs the
//! host's EFER.NXE, which [`crate::enable`] sets.

pub use arch_common::tables::{FrameSource, IdentityTables};
use hv_core::arch::P2mPerms;
pub use hv_core::pagetable::TlbEpoch;
use hv_core::pagetable::{EntryFormat, NestedTables};

const P: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const PS: u64 = 1 << 7;
const NX: u64 = 1 << 63;
const PWT: u64 = 1 << 3;
const PCD: u64 = 1 << 4;

/// The long-mode entry format as NPT uses it.
pub struct NptFormat;

impl EntryFormat for NptFormat {
    const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

    fn table(table_hpa: u64) -> u64 {
        table_hpa | P | RW | US
    }

    fn leaf(hpa: u64, perms: P2mPerms, large: bool) -> u64 {
        let mut e = hpa | P | US;
        if perms.uncached {
            // PAT index 3: UC in the host's PAT (power-on value, which
            // the hypervisor keeps), stronger than any guest type.
            e |= PCD | PWT;
        }
        if perms.write {
            e |= RW;
        }
        if !perms.exec {
            e |= NX;
        }
        if large {
            e |= PS;
        }
        e
    }

    fn present(entry: u64) -> bool {
        entry & P != 0
    }

    fn large(entry: u64) -> bool {
        entry & PS != 0
    }

    fn perms(entry: u64) -> P2mPerms {
        P2mPerms {
            write: entry & RW != 0,
            exec: entry & NX == 0,
            uncached: entry & PCD != 0,
        }
    }
}

/// One domain's nested page tables: hv-core's shared engine in the NPT
/// entry format, with the TLB epoch its vCPUs watch (a fresh ASID when it
/// moves).
pub type Npt<M> = NestedTables<NptFormat, M>;

#[cfg(test)]
mod tests {
    use super::*;
    use hv_core::arch::NestedPaging;
    use hv_core::pagetable::{MockTables, PageTableMemory, Translation};
    use hv_core::types::{Gfn, Hfn};

    #[test]
    fn entries_have_the_npt_bits() {
        let mut mem = MockTables::default();
        let mut npt = Npt::new(&mut mem).unwrap();
        npt.map(Gfn(0), Hfn(0xABC), P2mPerms::RO).unwrap();
        let root = npt.root();
        let mut t = root;
        for _ in 0..3 {
            let e = npt.memory().read(t, 0);
            assert_eq!(e & 0xFFF, P | RW | US);
            assert_eq!(e & NX, 0);
            t = e & NptFormat::ADDR_MASK;
        }
        let leaf = npt.memory().read(t, 0);
        assert_eq!(leaf, 0xABC000 | P | US | NX);
        npt.map_large(Gfn(0x200), Hfn(0x400), P2mPerms::RWX)
            .unwrap();
        assert_eq!(
            npt.lookup(Gfn(0x201)),
            Some(Translation {
                hfn: Hfn(0x401),
                perms: P2mPerms::RWX,
                large: true
            })
        );
    }

    #[test]
    fn device_memory_is_uncached() {
        use hv_core::pagetable::Translation;
        let mut mem = MockTables::default();
        let mut npt = Npt::new(&mut mem).unwrap();
        npt.map(Gfn(0xFEB00), Hfn(0xFEB00), P2mPerms::MMIO).unwrap();
        npt.map(Gfn(0xFEB01), Hfn(0x1234), P2mPerms::RW).unwrap();
        let t = |g| npt.lookup(Gfn(g)).unwrap();
        assert_eq!(
            t(0xFEB00),
            Translation {
                hfn: Hfn(0xFEB00),
                perms: P2mPerms::MMIO,
                large: false
            }
        );
        assert!(!t(0xFEB01).perms.uncached);
        assert_eq!(
            NptFormat::leaf(0x1000, P2mPerms::MMIO, false) & (PCD | PWT),
            PCD | PWT
        );
        assert_eq!(
            NptFormat::leaf(0x1000, P2mPerms::RWX, false) & (PCD | PWT),
            0
        );
    }

    #[test]
    fn flush_bumps_the_epoch_and_frees_retired_tables() {
        let mut mem = MockTables::default();
        let mut npt = Npt::new(&mut mem).unwrap();
        npt.map(Gfn(0x205), Hfn(0x77), P2mPerms::RO).unwrap();
        npt.map_large(Gfn(0x200), Hfn(0x6_0000), P2mPerms::RW)
            .unwrap();
        assert_eq!(npt.table_frames(), 4);
        let before = npt.epoch().get();
        npt.flush();
        assert_eq!(npt.epoch().get(), before + 1);
        assert_eq!(npt.table_frames(), 3);
        drop(npt);
        assert!(mem.tables.is_empty());
        assert_eq!(mem.allocs, mem.frees);
    }
}
