//! A generic 4-level x86-64 page-table engine for second-level translation
//! (guest-physical to host-physical): 4 KiB and 2 MiB mappings, splitting of
//! 2 MiB mappings, a software walk, and freeing of every table frame.
//!
//! Both vendor backends use it: AMD nested page tables (`arch-svm`'s
//! `npt.rs`) and Intel EPT (`arch-vmx`'s `ept.rs`) differ only in their
//! [`EntryFormat`]. Two small traits keep it reusable and host-testable:
//! - [`EntryFormat`] says how entries encode presence, permissions, large
//!   pages and addresses;
//! - [`PageTableMemory`] reads and writes entries of table frames by host
//!   physical address and allocates and frees table frames. The hypervisor
//!   implements it over the identity map (`arch-common`'s
//!   `IdentityTables`); the tests over a `HashMap` ([`MockTables`]).
//!
//! This module touches no hardware and has no `unsafe`.
//!
//! # Concurrency
//! The hardware walks the tables while a guest runs. Every entry is written
//! with one 64-bit store, a new table is filled completely before the entry
//! that points to it is written, and a table that is taken out of the tree
//! is not freed at once but queued until [`PageTable::flush_done`]: the
//! caller first makes sure no CPU still caches it (TLB flush of the ASID or
//! EPTP). Only one thread changes a given tree (`&mut self`).

use crate::arch::{NptError, P2mPerms};
use crate::types::{Gfn, Hfn};
use alloc::vec::Vec;

/// Entries per table.
pub const ENTRIES: usize = 512;
/// Guest frames a 4-level tree can map: 2^36 (48-bit guest-physical).
pub const GFN_LIMIT: u64 = 1 << 36;
/// Frames per 2 MiB mapping.
pub const LARGE_FRAMES: u64 = 512;

/// How one paging structure format encodes its entries.
pub trait EntryFormat {
    /// Bits of an entry that hold the host-physical address (4 KiB aligned).
    const ADDR_MASK: u64;
    /// An entry pointing to a lower-level table at `table_hpa`, granting
    /// every permission (the leaf decides).
    fn table(table_hpa: u64) -> u64;
    /// A leaf mapping `hpa`; `large` for a 2 MiB leaf at level 2.
    fn leaf(hpa: u64, perms: P2mPerms, large: bool) -> u64;
    /// Whether the entry maps or points to anything.
    fn present(entry: u64) -> bool;
    /// Whether a present level-2 entry is a 2 MiB leaf.
    fn large(entry: u64) -> bool;
    /// The permissions of a present leaf.
    fn perms(entry: u64) -> P2mPerms;
    /// The host-physical address an entry holds.
    fn addr(entry: u64) -> u64 {
        entry & Self::ADDR_MASK
    }
}

/// Storage of table frames, addressed by host-physical address.
pub trait PageTableMemory {
    /// A fresh table frame (contents need not be zero), or `None`.
    fn alloc_table(&mut self) -> Option<u64>;
    /// Returns a table frame that is no longer referenced.
    fn free_table(&mut self, hpa: u64);
    /// Entry `index` of the table at `table`.
    fn read(&self, table: u64, index: usize) -> u64;
    /// Writes entry `index` of the table at `table` with one 64-bit store.
    fn write(&mut self, table: u64, index: usize, entry: u64);
}

/// What a software walk finds for a guest frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The host frame backing the guest frame.
    pub hfn: Hfn,
    /// Its permissions.
    pub perms: P2mPerms,
    /// Whether it comes from a 2 MiB mapping.
    pub large: bool,
}

/// One second-level page-table tree.
pub struct PageTable<F: EntryFormat, M: PageTableMemory> {
    mem: M,
    root: u64,
    /// Tables unlinked from the tree, freed after the next flush.
    retired: Vec<u64>,
    /// Tables currently allocated (the root included).
    tables: usize,
    /// Most tables the tree may hold at once ([`PageTable::set_table_limit`]).
    limit: usize,
    _format: core::marker::PhantomData<F>,
}

/// Index of `gfn` in the table at `level` (4 = root ... 1 = leaves).
fn index(gfn: u64, level: u32) -> usize {
    ((gfn >> (9 * (level - 1))) & 0x1FF) as usize
}

impl<F: EntryFormat, M: PageTableMemory> PageTable<F, M> {
    /// An empty tree with a fresh root.
    pub fn new(mut mem: M) -> Result<Self, NptError> {
        let root = mem.alloc_table().ok_or(NptError::NoMemory)?;
        let mut pt = Self {
            mem,
            root,
            retired: Vec::new(),
            tables: 1,
            limit: usize::MAX,
            _format: core::marker::PhantomData,
        };
        pt.clear(root);
        Ok(pt)
    }

    /// Host-physical address of the root table.
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Table frames in use, including those waiting for a flush.
    pub fn table_frames(&self) -> usize {
        self.tables
    }

    /// Caps the table frames the tree may hold (the root included): past
    /// it, a change that needs a new table fails with `NoMemory`, as Xen's
    /// per-domain paging pool runs dry. Without it a guest that maps a page
    /// at scattered frame numbers (say shared_info, moved again and again)
    /// would take a host frame for a table each time, without end.
    pub fn set_table_limit(&mut self, frames: usize) {
        self.limit = frames;
    }

    /// The table memory (for tests and statistics).
    pub fn memory(&self) -> &M {
        &self.mem
    }

    fn clear(&mut self, table: u64) {
        for i in 0..ENTRIES {
            self.mem.write(table, i, 0);
        }
    }

    fn check(gfn: Gfn, hfn: Hfn) -> Result<(), NptError> {
        let addr_ok = hfn.0 < (1 << 52) && (hfn.hpa() & !F::ADDR_MASK) == 0;
        if gfn.0 >= GFN_LIMIT || !addr_ok {
            return Err(NptError::OutOfRange);
        }
        Ok(())
    }

    fn new_table(&mut self) -> Result<u64, NptError> {
        if self.tables >= self.limit {
            return Err(NptError::NoMemory);
        }
        let t = self.mem.alloc_table().ok_or(NptError::NoMemory)?;
        self.tables += 1;
        self.clear(t);
        Ok(t)
    }

    /// The table at `level` - 1 under entry `idx` of `table`, created (or
    /// split from a 2 MiB leaf when `level == 2`) if needed.
    fn descend(&mut self, table: u64, idx: usize, level: u32) -> Result<u64, NptError> {
        let e = self.mem.read(table, idx);
        if F::present(e) && !(level == 2 && F::large(e)) {
            return Ok(F::addr(e));
        }
        let t = self.new_table()?;
        if F::present(e) {
            // Split a 2 MiB leaf: fill the new table first, then link it.
            let (base, perms) = (F::addr(e), F::perms(e));
            for i in 0..ENTRIES {
                self.mem
                    .write(t, i, F::leaf(base + ((i as u64) << 12), perms, false));
            }
        }
        self.mem.write(table, idx, F::table(t));
        Ok(t)
    }

    /// Walks to the level-`stop` table holding `gfn`, creating tables.
    fn walk_create(&mut self, gfn: u64, stop: u32) -> Result<u64, NptError> {
        let mut table = self.root;
        for level in (stop + 1..=4).rev() {
            table = self.descend(table, index(gfn, level), level)?;
        }
        Ok(table)
    }

    /// Maps one 4 KiB guest frame, replacing any mapping (a 2 MiB mapping
    /// around it is split first).
    pub fn map(&mut self, gfn: Gfn, hfn: Hfn, perms: P2mPerms) -> Result<(), NptError> {
        Self::check(gfn, hfn)?;
        let l1 = self.walk_create(gfn.0, 1)?;
        self.mem
            .write(l1, index(gfn.0, 1), F::leaf(hfn.hpa(), perms, false));
        Ok(())
    }

    /// Maps 512 guest frames from `gfn` to 512 host frames from `hfn` with
    /// one 2 MiB leaf. Both must be 2 MiB aligned. A table of 4 KiB
    /// mappings in that range is replaced (and freed after the next flush).
    pub fn map_large(&mut self, gfn: Gfn, hfn: Hfn, perms: P2mPerms) -> Result<(), NptError> {
        Self::check(gfn, hfn)?;
        if !gfn.0.is_multiple_of(LARGE_FRAMES) || !hfn.0.is_multiple_of(LARGE_FRAMES) {
            return Err(NptError::OutOfRange);
        }
        let l2 = self.walk_create(gfn.0, 2)?;
        let idx = index(gfn.0, 2);
        let old = self.mem.read(l2, idx);
        self.mem.write(l2, idx, F::leaf(hfn.hpa(), perms, true));
        if F::present(old) && !F::large(old) {
            self.retire(F::addr(old), 1);
        }
        Ok(())
    }

    /// Removes the mapping of `gfn`. A 2 MiB mapping around it is split so
    /// the other 511 frames stay mapped; if no frame is left for the split,
    /// the whole 2 MiB mapping goes (taking away more is safe, keeping the
    /// frame mapped is not).
    pub fn unmap(&mut self, gfn: Gfn) {
        if gfn.0 >= GFN_LIMIT {
            return;
        }
        let mut table = self.root;
        for level in (2..=4).rev() {
            let idx = index(gfn.0, level);
            let e = self.mem.read(table, idx);
            if !F::present(e) {
                return;
            }
            if level == 2 && F::large(e) {
                match self.descend(table, idx, level) {
                    Ok(t) => table = t,
                    Err(_) => {
                        log::warn!(
                            "p2m tables: no frame to split 2M at gfn {:#x}; unmapping all",
                            gfn.0
                        );
                        self.mem.write(table, idx, 0);
                        return;
                    }
                }
            } else {
                table = F::addr(e);
            }
        }
        self.mem.write(table, index(gfn.0, 1), 0);
    }

    /// Software walk: what `gfn` maps to.
    pub fn lookup(&self, gfn: Gfn) -> Option<Translation> {
        if gfn.0 >= GFN_LIMIT {
            return None;
        }
        let mut table = self.root;
        for level in (1..=4).rev() {
            let e = self.mem.read(table, index(gfn.0, level));
            if !F::present(e) {
                return None;
            }
            if level == 1 || (level == 2 && F::large(e)) {
                let offset = if level == 2 { gfn.0 % LARGE_FRAMES } else { 0 };
                return Some(Translation {
                    hfn: Hfn((F::addr(e) >> 12) + offset),
                    perms: F::perms(e),
                    large: level == 2,
                });
            }
            table = F::addr(e);
        }
        None
    }

    /// Queues the tree under `table` (a table at `level`) for freeing.
    fn retire(&mut self, table: u64, level: u32) {
        if level > 1 {
            for i in 0..ENTRIES {
                let e = self.mem.read(table, i);
                if F::present(e) && !(level == 2 && F::large(e)) {
                    self.retire(F::addr(e), level - 1);
                }
            }
        }
        self.retired.push(table);
    }

    /// Frees the tables unlinked since the last call. Call after every CPU
    /// has flushed the translations of this tree.
    pub fn flush_done(&mut self) {
        for t in core::mem::take(&mut self.retired) {
            self.mem.free_table(t);
            self.tables -= 1;
        }
    }

    /// Whether unlinked tables wait for a flush.
    pub fn has_retired(&self) -> bool {
        !self.retired.is_empty()
    }

    /// Frees every table, the root included (what dropping the tree does).
    /// No CPU may use the tree any more.
    pub fn destroy(self) {}

    fn release(&mut self) {
        let root = self.root;
        self.retire(root, 4);
        self.flush_done();
    }
}

impl<F: EntryFormat, M: PageTableMemory> Drop for PageTable<F, M> {
    fn drop(&mut self) {
        self.release();
    }
}

/// A counter that a domain's nested tables bump on every flush; each vCPU
/// compares it at entry and drops cached translations when it moved (a
/// fresh ASID on SVM, INVEPT on VMX).
#[derive(Clone, Debug, Default)]
pub struct TlbEpoch(alloc::sync::Arc<core::sync::atomic::AtomicU64>);

impl TlbEpoch {
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(core::sync::atomic::Ordering::Acquire)
    }

    /// Moves the epoch on.
    pub fn bump(&self) {
        self.0.fetch_add(1, core::sync::atomic::Ordering::AcqRel);
    }
}

/// One domain's nested page tables in the vendor's entry format `F` (NPT
/// or EPT): the shared engine plus the TLB epoch its vCPUs watch.
pub struct NestedTables<F: EntryFormat, M: PageTableMemory> {
    pt: PageTable<F, M>,
    epoch: TlbEpoch,
}

impl<F: EntryFormat, M: PageTableMemory> NestedTables<F, M> {
    /// Empty tables.
    pub fn new(mem: M) -> Result<Self, NptError> {
        Ok(Self {
            pt: PageTable::new(mem)?,
            epoch: TlbEpoch::default(),
        })
    }

    /// The epoch the domain's vCPUs watch (give it to each vCPU).
    pub fn epoch(&self) -> TlbEpoch {
        self.epoch.clone()
    }

    /// Maps a 2 MiB region (both frame numbers 512-aligned). Replacing a
    /// table of 4 KiB mappings frees it at the next flush, which is only
    /// safe while no vCPU of the domain runs (building it, or paused).
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

    /// The table memory (for tests that inspect entries).
    pub fn memory(&self) -> &M {
        self.pt.memory()
    }
}

impl<F: EntryFormat + Send, M: PageTableMemory + Send> crate::arch::NestedPaging
    for NestedTables<F, M>
{
    fn map(&mut self, gfn: Gfn, hfn: Hfn, perms: P2mPerms) -> Result<(), NptError> {
        self.pt.map(gfn, hfn, perms)
    }

    fn map_large(&mut self, gfn: Gfn, hfn: Hfn, perms: P2mPerms) -> Result<(), NptError> {
        self.pt.map_large(gfn, hfn, perms)
    }

    fn unmap(&mut self, gfn: Gfn) {
        self.pt.unmap(gfn)
    }

    fn is_mapped(&self, gfn: Gfn) -> bool {
        self.pt.lookup(gfn).is_some()
    }

    fn set_table_limit(&mut self, frames: usize) {
        self.pt.set_table_limit(frames)
    }

    /// Bumps the epoch: every vCPU of the domain drops its cached
    /// translations at its next entry. A vCPU running right now keeps them
    /// until it exits: frames it could still reach go back only after the
    /// TLB shootdown of `crate::tlb` (`Hypervisor::settle`,
    /// `Hypervisor::shootdown_sync`). Tables retired here are freed at
    /// once: they are retired only by `map_large` while no vCPU of the
    /// domain runs, and a destroyed domain's tables wait in the shootdown
    /// queue with the domain.
    fn flush(&mut self) {
        self.epoch.bump();
        self.pt.flush_done();
    }

    fn root(&self) -> u64 {
        self.pt.root()
    }
}

impl<M: PageTableMemory> PageTableMemory for &mut M {
    fn alloc_table(&mut self) -> Option<u64> {
        (**self).alloc_table()
    }
    fn free_table(&mut self, hpa: u64) {
        (**self).free_table(hpa)
    }
    fn read(&self, table: u64, index: usize) -> u64 {
        (**self).read(table, index)
    }
    fn write(&mut self, table: u64, index: usize, entry: u64) {
        (**self).write(table, index, entry)
    }
}

/// Table memory in a hash map, counting frames: for the backends' host
/// tests (with hv-core's `mock` feature).
#[cfg(any(test, feature = "mock"))]
#[derive(Default)]
pub struct MockTables {
    /// The tables by "host-physical" address.
    pub tables: hashbrown::HashMap<u64, [u64; ENTRIES]>,
    next: u64,
    /// Most tables that may exist at once (`None`: no limit).
    pub limit: Option<usize>,
    /// Tables allocated so far.
    pub allocs: usize,
    /// Tables freed so far.
    pub frees: usize,
}

#[cfg(any(test, feature = "mock"))]
impl PageTableMemory for MockTables {
    fn alloc_table(&mut self) -> Option<u64> {
        if self.limit.is_some_and(|l| self.tables.len() >= l) {
            return None;
        }
        self.next += 1;
        let hpa = 0x10_0000_0000 + (self.next << 12);
        // Garbage, to prove the engine clears new tables.
        self.tables.insert(hpa, [0xDEAD_BEEF; ENTRIES]);
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

/// A made-up entry format for host tests: present 0, write 1, exec 2,
/// large 7.
#[cfg(any(test, feature = "mock"))]
pub struct MockFormat;

#[cfg(any(test, feature = "mock"))]
impl EntryFormat for MockFormat {
    const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;
    fn table(table_hpa: u64) -> u64 {
        table_hpa | 0b111
    }
    fn leaf(hpa: u64, perms: P2mPerms, large: bool) -> u64 {
        hpa | 1
            | (u64::from(perms.write) << 1)
            | (u64::from(perms.exec) << 2)
            | (u64::from(large) << 7)
    }
    fn present(entry: u64) -> bool {
        entry & 1 != 0
    }
    fn large(entry: u64) -> bool {
        entry & (1 << 7) != 0
    }
    fn perms(entry: u64) -> P2mPerms {
        P2mPerms {
            write: entry & 2 != 0,
            exec: entry & 4 != 0,
            uncached: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Pt<'a> = PageTable<MockFormat, &'a mut MockTables>;

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
        let mut pt = Pt::new(&mut mem).unwrap();
        pt.map(Gfn(0x1234), Hfn(0x5678), P2mPerms::RWX).unwrap();
        pt.map(Gfn(0x1235), Hfn(0x9999), P2mPerms::RO).unwrap();
        assert_eq!(pt.lookup(Gfn(0x1234)), tr(0x5678, P2mPerms::RWX, false));
        assert_eq!(pt.lookup(Gfn(0x1235)), tr(0x9999, P2mPerms::RO, false));
        assert_eq!(pt.lookup(Gfn(0x1236)), None);
        assert_eq!(pt.table_frames(), 4);
        // Remap replaces.
        pt.map(Gfn(0x1234), Hfn(0x1), P2mPerms::RW).unwrap();
        assert_eq!(pt.lookup(Gfn(0x1234)), tr(0x1, P2mPerms::RW, false));
        pt.unmap(Gfn(0x1234));
        assert_eq!(pt.lookup(Gfn(0x1234)), None);
        assert_eq!(pt.lookup(Gfn(0x1235)), tr(0x9999, P2mPerms::RO, false));
        pt.unmap(Gfn(0x7777_7777)); // never mapped: no effect
        drop(pt);
        assert!(mem.tables.is_empty());
        assert_eq!(mem.allocs, mem.frees);
    }

    #[test]
    fn large_pages_and_splitting() {
        let mut mem = MockTables::default();
        let mut pt = Pt::new(&mut mem).unwrap();
        pt.map_large(Gfn(0x200), Hfn(0x4_0000), P2mPerms::RWX)
            .unwrap();
        assert_eq!(pt.table_frames(), 3);
        assert_eq!(pt.lookup(Gfn(0x200)), tr(0x4_0000, P2mPerms::RWX, true));
        assert_eq!(pt.lookup(Gfn(0x3FF)), tr(0x4_01FF, P2mPerms::RWX, true));
        assert_eq!(pt.lookup(Gfn(0x400)), None);
        // Misaligned large maps are refused.
        assert_eq!(
            pt.map_large(Gfn(0x201), Hfn(0x4_0000), P2mPerms::RWX),
            Err(NptError::OutOfRange)
        );
        assert_eq!(
            pt.map_large(Gfn(0x400), Hfn(0x4_0001), P2mPerms::RWX),
            Err(NptError::OutOfRange)
        );
        // A 4 KiB map inside splits the 2 MiB mapping.
        pt.map(Gfn(0x205), Hfn(0x77), P2mPerms::RO).unwrap();
        assert_eq!(pt.table_frames(), 4);
        assert_eq!(pt.lookup(Gfn(0x205)), tr(0x77, P2mPerms::RO, false));
        assert_eq!(pt.lookup(Gfn(0x204)), tr(0x4_0004, P2mPerms::RWX, false));
        assert_eq!(pt.lookup(Gfn(0x3FF)), tr(0x4_01FF, P2mPerms::RWX, false));
        // Unmap inside another 2 MiB mapping splits too.
        pt.map_large(Gfn(0x400), Hfn(0x8_0000), P2mPerms::RW)
            .unwrap();
        pt.unmap(Gfn(0x410));
        assert_eq!(pt.lookup(Gfn(0x410)), None);
        assert_eq!(pt.lookup(Gfn(0x411)), tr(0x8_0011, P2mPerms::RW, false));
        assert_eq!(pt.table_frames(), 5);
        // A large map over a table of 4 KiB maps retires it until flush.
        pt.map_large(Gfn(0x200), Hfn(0x6_0000), P2mPerms::RW)
            .unwrap();
        assert_eq!(pt.lookup(Gfn(0x205)), tr(0x6_0005, P2mPerms::RW, true));
        assert_eq!(pt.table_frames(), 5);
        assert!(pt.has_retired());
        pt.flush_done();
        assert!(!pt.has_retired());
        assert_eq!(pt.table_frames(), 4);
        drop(pt);
        assert!(mem.tables.is_empty());
        assert_eq!(mem.allocs, mem.frees);
    }

    #[test]
    fn out_of_range() {
        let mut mem = MockTables::default();
        let mut pt = Pt::new(&mut mem).unwrap();
        let last = GFN_LIMIT - 1;
        pt.map(Gfn(last), Hfn(1), P2mPerms::RWX).unwrap();
        assert_eq!(pt.lookup(Gfn(last)), tr(1, P2mPerms::RWX, false));
        assert_eq!(
            pt.map(Gfn(GFN_LIMIT), Hfn(1), P2mPerms::RWX),
            Err(NptError::OutOfRange)
        );
        assert_eq!(
            pt.map(Gfn(1 << 40), Hfn(1), P2mPerms::RWX),
            Err(NptError::OutOfRange)
        );
        assert_eq!(
            pt.map(Gfn(0), Hfn(1 << 40), P2mPerms::RWX),
            Err(NptError::OutOfRange)
        );
        assert_eq!(pt.lookup(Gfn(1 << 40)), None);
        pt.unmap(Gfn(1 << 40));
    }

    #[test]
    fn out_of_memory_is_reported_and_nothing_leaks() {
        let mut mem = MockTables {
            limit: Some(3),
            ..Default::default()
        };
        let mut pt = Pt::new(&mut mem).unwrap();
        assert_eq!(
            pt.map(Gfn(0), Hfn(1), P2mPerms::RWX),
            Err(NptError::NoMemory)
        );
        assert_eq!(pt.lookup(Gfn(0)), None);
        drop(pt);
        assert!(mem.tables.is_empty());

        // Unmap inside a 2 MiB mapping with no frame to split: the whole
        // 2 MiB goes rather than leaving the frame mapped.
        let mut mem = MockTables {
            limit: Some(3),
            ..Default::default()
        };
        let mut pt = Pt::new(&mut mem).unwrap();
        pt.map_large(Gfn(0), Hfn(0x200), P2mPerms::RWX).unwrap();
        pt.unmap(Gfn(3));
        assert_eq!(pt.lookup(Gfn(3)), None);
        assert_eq!(pt.lookup(Gfn(4)), None);
        drop(pt);
        assert!(mem.tables.is_empty());
    }

    #[test]
    fn many_mappings_free_every_frame() {
        let mut mem = MockTables::default();
        let mut pt = Pt::new(&mut mem).unwrap();
        for i in 0..2000u64 {
            let gfn = i * 0x1_0001 % (1 << 30);
            pt.map(Gfn(gfn), Hfn(i), P2mPerms::RW).unwrap();
        }
        for i in 0..2000u64 {
            let gfn = i * 0x1_0001 % (1 << 30);
            assert_eq!(pt.lookup(Gfn(gfn)).unwrap().hfn, Hfn(i));
        }
        assert!(pt.table_frames() > 100);
        drop(pt);
        assert!(mem.tables.is_empty());
        assert_eq!(mem.allocs, mem.frees);
    }
}
