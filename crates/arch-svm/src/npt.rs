//! AMD nested page tables: hv-core's page-table engine
//! ([`hv_core::pagetable`], shared with arch-vmx's EPT) with the long-mode
//! entry format, over identity-mapped host frames (`arch-common`'s
//! [`IdentityTables`]), behind hv-core's [`NestedPaging`].
//!
//! NPT entries are ordinary long-mode entries. Guest accesses count as user
//! accesses in the nested walk, so U/S is set at every level; NX needs the
//! host's EFER.NXE, which [`crate::enable`] sets.

use alloc::sync::Arc;
pub use arch_common::tables::{FrameSource, IdentityTables};
use core::sync::atomic::{AtomicU64, Ordering};
use hv_core::arch::{NestedPaging, NptError, P2mPerms};
use hv_core::pagetable::{EntryFormat, PageTable, PageTableMemory, Translation};
use hv_core::types::{Gfn, Hfn};

const P: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const PS: u64 = 1 << 7;
const NX: u64 = 1 << 63;

/// The long-mode entry format as NPT uses it.
pub struct NptFormat;

impl EntryFormat for NptFormat {
    const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

    fn table(table_hpa: u64) -> u64 {
        table_hpa | P | RW | US
    }

    fn leaf(hpa: u64, perms: P2mPerms, large: bool) -> u64 {
        let mut e = hpa | P | US;
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
        }
    }
}

/// A counter that a domain's nested tables bump on every flush; each vCPU
/// compares it at entry and takes a fresh ASID when it moved.
#[derive(Clone, Debug, Default)]
pub struct TlbEpoch(Arc<AtomicU64>);

impl TlbEpoch {
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    fn bump(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

/// One domain's nested page tables.
pub struct Npt<M: PageTableMemory> {
    pt: PageTable<NptFormat, M>,
    epoch: TlbEpoch,
}

impl<M: PageTableMemory> Npt<M> {
    /// Empty tables.
    pub fn new(mem: M) -> Result<Self, NptError> {
        Ok(Self {
            pt: PageTable::new(mem)?,
            epoch: TlbEpoch::default(),
        })
    }

    /// The epoch the domain's vCPUs watch (give it to each `SvmVcpu`).
    pub fn epoch(&self) -> TlbEpoch {
        self.epoch.clone()
    }

    /// Maps a 2 MiB region (both frame numbers 512-aligned). Replacing a
    /// table of 4 KiB mappings frees it at the next [`NestedPaging::flush`],
    /// which is only safe while no vCPU of the domain runs (building the
    /// domain, or paused).
    pub fn map_large(&mut self, gfn: Gfn, hfn: Hfn, perms: P2mPerms) -> Result<(), NptError> {
        self.pt.map_large(gfn, hfn, perms)
    }

    /// Software walk of the tables.
    pub fn lookup(&self, gfn: Gfn) -> Option<Translation> {
        self.pt.lookup(gfn)
    }

    /// Table frames in use.
    pub fn table_frames(&self) -> usize {
        self.pt.table_frames()
    }
}

impl<M: PageTableMemory + Send> NestedPaging for Npt<M> {
    fn map(&mut self, gfn: Gfn, hfn: Hfn, perms: P2mPerms) -> Result<(), NptError> {
        self.pt.map(gfn, hfn, perms)
    }

    fn unmap(&mut self, gfn: Gfn) {
        self.pt.unmap(gfn)
    }

    /// Bumps the epoch: every vCPU of the domain takes a fresh (clean) ASID
    /// at its next VMRUN. A vCPU running right now keeps stale translations
    /// until it exits, so hv-core kicks the CPUs running the domain.
    fn flush(&mut self) {
        self.epoch.bump();
        self.pt.flush_done();
    }

    fn root(&self) -> u64 {
        self.pt.root()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hv_core::pagetable::MockTables;

    #[test]
    fn entries_have_the_npt_bits() {
        let mut mem = MockTables::default();
        let mut npt = Npt::new(&mut mem).unwrap();
        npt.map(Gfn(0), Hfn(0xABC), P2mPerms::RO).unwrap();
        let root = npt.root();
        let mut t = root;
        for _ in 0..3 {
            let e = npt.pt.memory().read(t, 0);
            assert_eq!(e & 0xFFF, P | RW | US);
            assert_eq!(e & NX, 0);
            t = e & NptFormat::ADDR_MASK;
        }
        let leaf = npt.pt.memory().read(t, 0);
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
