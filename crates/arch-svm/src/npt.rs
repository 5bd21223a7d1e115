//! AMD nested page tables: the [`pt`](crate::pt) engine with the long-mode
//! entry format, over identity-mapped host frames, behind hv-core's
//! [`NestedPaging`].
//!
//! NPT entries are ordinary long-mode entries. Guest accesses count as user
//! accesses in the nested walk, so U/S is set at every level; NX needs the
//! host's EFER.NXE, which [`crate::enable`] sets.

use crate::pt::{EntryFormat, PageTable, PageTableMemory, Translation};
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};
use hv_core::arch::{NestedPaging, NptError, P2mPerms};
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

/// Where table frames come from: single zeroed or not host frames. The
/// hypervisor implements it over its frame allocator.
pub trait FrameSource: Send {
    /// One host frame, or `None` when memory is exhausted.
    fn alloc_frame(&self) -> Option<Hfn>;
    /// Gives back a frame from [`FrameSource::alloc_frame`].
    fn free_frame(&self, hfn: Hfn);
}

/// Table memory over identity-mapped host frames (host-virtual address ==
/// host-physical address), the hypervisor's memory model below 4 GiB.
pub struct IdentityTables<S: FrameSource> {
    source: S,
}

impl<S: FrameSource> IdentityTables<S> {
    /// Table memory whose frames come from `source`.
    ///
    /// # Safety
    /// 1. Every frame `source` hands out is identity-mapped, writable, and
    ///    owned by this object alone until it is given back.
    pub unsafe fn new(source: S) -> Self {
        Self { source }
    }

    fn slot(table: u64, index: usize) -> *mut u64 {
        assert!(index < crate::pt::ENTRIES && table & 0xFFF == 0);
        (table as usize + index * 8) as *mut u64
    }
}

impl<S: FrameSource> PageTableMemory for IdentityTables<S> {
    fn alloc_table(&mut self) -> Option<u64> {
        self.source.alloc_frame().map(Hfn::hpa)
    }

    fn free_table(&mut self, hpa: u64) {
        self.source.free_frame(Hfn(hpa >> 12));
    }

    fn read(&self, table: u64, index: usize) -> u64 {
        // SAFETY: `table` is a frame from `alloc_table` (the engine only
        // passes its own tables), identity-mapped and owned by us (duty 1 of
        // `new`); the slot is in bounds and 8-aligned (asserted).
        unsafe { core::ptr::read_volatile(Self::slot(table, index)) }
    }

    fn write(&mut self, table: u64, index: usize, entry: u64) {
        // SAFETY: as in `read`; one aligned 64-bit store, so a concurrent
        // hardware walk sees the old or the new entry, never a mix.
        unsafe { core::ptr::write_volatile(Self::slot(table, index), entry) }
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
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Table memory in a hash map, counting frames.
    #[derive(Default)]
    pub struct MockTables {
        pub tables: HashMap<u64, [u64; 512]>,
        next: u64,
        pub limit: Option<usize>,
        pub allocs: usize,
        pub frees: usize,
    }

    impl PageTableMemory for MockTables {
        fn alloc_table(&mut self) -> Option<u64> {
            if self.limit.is_some_and(|l| self.tables.len() >= l) {
                return None;
            }
            self.next += 1;
            let hpa = 0x10_0000_0000 + (self.next << 12);
            // Garbage, to prove the engine clears new tables.
            self.tables.insert(hpa, [0xDEAD_BEEF; 512]);
            self.allocs += 1;
            Some(hpa)
        }
        fn free_table(&mut self, hpa: u64) {
            assert!(self.tables.remove(&hpa).is_some(), "double free {hpa:#x}");
            self.frees += 1;
        }
        fn read(&self, table: u64, index: usize) -> u64 {
            self.tables[&table][index]
        }
        fn write(&mut self, table: u64, index: usize, entry: u64) {
            self.tables.get_mut(&table).expect("unknown table")[index] = entry;
        }
    }

    fn tr(hfn: u64, perms: P2mPerms, large: bool) -> Option<Translation> {
        Some(Translation {
            hfn: Hfn(hfn),
            perms,
            large,
        })
    }

    #[test]
    fn map_lookup_unmap_4k() {
        let mut mem = MockTables::default();
        let mut npt = Npt::new(&mut mem).unwrap();
        npt.map(Gfn(0x1234), Hfn(0x5678), P2mPerms::RWX).unwrap();
        npt.map(Gfn(0x1235), Hfn(0x9999), P2mPerms::RO).unwrap();
        assert_eq!(npt.lookup(Gfn(0x1234)), tr(0x5678, P2mPerms::RWX, false));
        assert_eq!(npt.lookup(Gfn(0x1235)), tr(0x9999, P2mPerms::RO, false));
        assert_eq!(npt.lookup(Gfn(0x1236)), None);
        assert_eq!(npt.table_frames(), 4);
        // Remap replaces.
        npt.map(Gfn(0x1234), Hfn(0x1), P2mPerms::RW).unwrap();
        assert_eq!(npt.lookup(Gfn(0x1234)), tr(0x1, P2mPerms::RW, false));
        npt.unmap(Gfn(0x1234));
        assert_eq!(npt.lookup(Gfn(0x1234)), None);
        assert_eq!(npt.lookup(Gfn(0x1235)), tr(0x9999, P2mPerms::RO, false));
        npt.unmap(Gfn(0x7777_7777)); // never mapped: no effect
        drop(npt);
        assert!(mem.tables.is_empty());
        assert_eq!(mem.allocs, mem.frees);
    }

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
    }

    #[test]
    fn large_pages_and_splitting() {
        let mut mem = MockTables::default();
        let mut npt = Npt::new(&mut mem).unwrap();
        npt.map_large(Gfn(0x200), Hfn(0x4_0000), P2mPerms::RWX)
            .unwrap();
        assert_eq!(npt.table_frames(), 3);
        assert_eq!(npt.lookup(Gfn(0x200)), tr(0x4_0000, P2mPerms::RWX, true));
        assert_eq!(npt.lookup(Gfn(0x3FF)), tr(0x4_01FF, P2mPerms::RWX, true));
        assert_eq!(npt.lookup(Gfn(0x400)), None);
        // Misaligned large maps are refused.
        assert_eq!(
            npt.map_large(Gfn(0x201), Hfn(0x4_0000), P2mPerms::RWX),
            Err(NptError::OutOfRange)
        );
        assert_eq!(
            npt.map_large(Gfn(0x400), Hfn(0x4_0001), P2mPerms::RWX),
            Err(NptError::OutOfRange)
        );
        // A 4 KiB map inside splits the 2 MiB mapping.
        npt.map(Gfn(0x205), Hfn(0x77), P2mPerms::RO).unwrap();
        assert_eq!(npt.table_frames(), 4);
        assert_eq!(npt.lookup(Gfn(0x205)), tr(0x77, P2mPerms::RO, false));
        assert_eq!(npt.lookup(Gfn(0x204)), tr(0x4_0004, P2mPerms::RWX, false));
        assert_eq!(npt.lookup(Gfn(0x3FF)), tr(0x4_01FF, P2mPerms::RWX, false));
        // Unmap inside another 2 MiB mapping splits too.
        npt.map_large(Gfn(0x400), Hfn(0x8_0000), P2mPerms::RW)
            .unwrap();
        npt.unmap(Gfn(0x410));
        assert_eq!(npt.lookup(Gfn(0x410)), None);
        assert_eq!(npt.lookup(Gfn(0x411)), tr(0x8_0011, P2mPerms::RW, false));
        assert_eq!(npt.table_frames(), 5);
        // A large map over a table of 4 KiB maps retires it until flush.
        npt.map_large(Gfn(0x200), Hfn(0x6_0000), P2mPerms::RW)
            .unwrap();
        assert_eq!(npt.lookup(Gfn(0x205)), tr(0x6_0005, P2mPerms::RW, true));
        assert_eq!(npt.table_frames(), 5);
        let before = npt.epoch().get();
        npt.flush();
        assert_eq!(npt.epoch().get(), before + 1);
        assert_eq!(npt.table_frames(), 4);
        drop(npt);
        assert!(mem.tables.is_empty());
        assert_eq!(mem.allocs, mem.frees);
    }

    #[test]
    fn out_of_range() {
        let mut mem = MockTables::default();
        let mut npt = Npt::new(&mut mem).unwrap();
        let last = crate::pt::GFN_LIMIT - 1;
        npt.map(Gfn(last), Hfn(1), P2mPerms::RWX).unwrap();
        assert_eq!(npt.lookup(Gfn(last)), tr(1, P2mPerms::RWX, false));
        assert_eq!(
            npt.map(Gfn(crate::pt::GFN_LIMIT), Hfn(1), P2mPerms::RWX),
            Err(NptError::OutOfRange)
        );
        assert_eq!(
            npt.map(Gfn(1 << 40), Hfn(1), P2mPerms::RWX),
            Err(NptError::OutOfRange)
        );
        assert_eq!(
            npt.map(Gfn(0), Hfn(1 << 40), P2mPerms::RWX),
            Err(NptError::OutOfRange)
        );
        assert_eq!(npt.lookup(Gfn(1 << 40)), None);
        npt.unmap(Gfn(1 << 40));
    }

    #[test]
    fn out_of_memory_is_reported_and_nothing_leaks() {
        let mut mem = MockTables {
            limit: Some(3),
            ..Default::default()
        };
        let mut npt = Npt::new(&mut mem).unwrap();
        assert_eq!(
            npt.map(Gfn(0), Hfn(1), P2mPerms::RWX),
            Err(NptError::NoMemory)
        );
        assert_eq!(npt.lookup(Gfn(0)), None);
        drop(npt);
        assert!(mem.tables.is_empty());

        // Unmap inside a 2 MiB mapping with no frame to split: the whole
        // 2 MiB goes rather than leaving the frame mapped.
        let mut mem = MockTables {
            limit: Some(3),
            ..Default::default()
        };
        let mut npt = Npt::new(&mut mem).unwrap();
        npt.map_large(Gfn(0), Hfn(0x200), P2mPerms::RWX).unwrap();
        npt.unmap(Gfn(3));
        assert_eq!(npt.lookup(Gfn(3)), None);
        assert_eq!(npt.lookup(Gfn(4)), None);
        drop(npt);
        assert!(mem.tables.is_empty());
    }

    #[test]
    fn many_mappings_free_every_frame() {
        let mut mem = MockTables::default();
        let mut npt = Npt::new(&mut mem).unwrap();
        for i in 0..2000u64 {
            let gfn = i * 0x1_0001 % (1 << 30);
            npt.map(Gfn(gfn), Hfn(i), P2mPerms::RW).unwrap();
        }
        for i in 0..2000u64 {
            let gfn = i * 0x1_0001 % (1 << 30);
            assert_eq!(npt.lookup(Gfn(gfn)).unwrap().hfn, Hfn(i));
        }
        assert!(npt.table_frames() > 100);
        drop(npt);
        assert!(mem.tables.is_empty());
        assert_eq!(mem.allocs, mem.frees);
    }
}
