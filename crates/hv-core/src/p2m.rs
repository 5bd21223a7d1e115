//! The p2m: what each guest frame of a domain is backed by.
//!
//! Every change goes to both the software map (consulted by hypercalls that
//! touch guest memory) and the hardware nested page tables, so the two never
//! disagree, with one exception: the frames of a *lazy block*.
//!
//! A domain's RAM is given in 2 MiB blocks of host frames that are not
//! zeroed yet ([`P2m::add_lazy`]; host RAM holds whatever it held before:
//! firmware, another domain, the hypervisor). A lazy block is one record,
//! not 512 entries (a domain's build costs nothing per frame); its frames
//! are the domain's ([`P2m::contains`], [`P2m::kind`], [`P2m::iter`],
//! [`P2m::drain`] see them) and count against its allocation, but neither
//! the guest nor the hypervisor reaches one before it is zeroed:
//! - the nested tables map a lazy frame only after it is zeroed: the
//!   guest's first touch of the block is a nested page fault, and
//!   [`P2m::lazy_fault`] zeroes the block's frames and maps them, the whole
//!   block with one 2 MiB entry when it is still whole (populate on demand,
//!   with the frames set aside up front: a fault never allocates, so a
//!   guest can neither exhaust host memory nor fail this way);
//! - [`P2m::get`] answers `None` for a frame not zeroed yet, and
//!   [`P2m::get_scrubbed`], which hypervisor accesses use, zeroes the one
//!   frame first (the frame stays unmapped until the guest touches it or
//!   [`P2m::map_zeroed`]);
//! - replacing or removing a lazy frame's entry drops it from the block
//!   (a removed frame goes back to the host unzeroed, where every
//!   allocation zeroes or scrubs lazily again).

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::cell::Cell;
use hashbrown::HashMap;

use crate::arch::{NestedPaging, NptError, P2mPerms};
use crate::platform::FrameAccess;
use crate::types::{DomId, Gfn, Hfn, PAGE_SIZE};

/// The host frames a domain's nested page tables may take, by libxl's
/// default paging pool for an HVM guest (`libxl_get_required_shadow_memory`:
/// 4 KiB x (256 per vCPU + 2 per MiB of memory)), and never fewer than 512.
/// Dense memory needs about one table per 2 MiB; the rest covers grant
/// maps, MMIO and sparse layouts with room to spare. A guest that maps
/// pages at scattered frame numbers gets `-ENOMEM` past it, as on Xen when
/// its pool is used up.
pub fn table_limit(vcpus: u32, max_pages: u64) -> usize {
    let mib = max_pages / 256;
    let frames = 256u64
        .saturating_mul(u64::from(vcpus))
        .saturating_add(mib.saturating_mul(2));
    usize::try_from(frames.max(512)).unwrap_or(usize::MAX)
}

/// Frames in a 2 MiB block.
pub const BLOCK_FRAMES: u64 = 512;

/// Which frames of a 2 MiB block: bit `i` for frame `i`.
pub type BlockMask = [u64; 8];

/// Every frame of a block.
pub const FULL_BLOCK: BlockMask = [u64::MAX; 8];

fn bit(mask: &BlockMask, i: u64) -> bool {
    mask[(i / 64) as usize] & (1 << (i % 64)) != 0
}

fn clear(mask: &mut BlockMask, i: u64) {
    mask[(i / 64) as usize] &= !(1 << (i % 64));
}

/// The frames of `mask`, in order (a few instructions per frame, none per
/// frame not in it).
pub fn frames_in(mask: &BlockMask) -> impl Iterator<Item = u64> + '_ {
    mask.iter().enumerate().flat_map(|(w, &word)| {
        let mut left = word;
        core::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            let b = u64::from(left.trailing_zeros());
            left &= left - 1;
            Some(w as u64 * 64 + b)
        })
    })
}

/// Sets frames `lo..hi` (at most 512) of `mask`.
pub fn mask_range(mask: &mut BlockMask, lo: u64, hi: u64) {
    let hi = hi.min(BLOCK_FRAMES);
    for (w, word) in mask.iter_mut().enumerate() {
        let (start, end) = (w as u64 * 64, w as u64 * 64 + 64);
        let (a, b) = (lo.max(start), hi.min(end));
        if a < b {
            let n = b - a;
            let bits = if n == 64 {
                u64::MAX
            } else {
                ((1u64 << n) - 1) << (a - start)
            };
            *word |= bits;
        }
    }
}

/// A 2 MiB block of guest frames backed by one 2 MiB-aligned run of host
/// frames (frame `i` of the block by host frame `hfn + i`) that the nested
/// tables do not map yet.
struct LazyBlock {
    /// First guest frame (512-aligned).
    gfn: u64,
    /// First host frame of the run (512-aligned).
    hfn: u64,
    /// Frames still holding the host's old data. Cleared through `&self`
    /// by [`P2m::get_scrubbed`], which zeroes the frame first.
    unzeroed: Cell<BlockMask>,
    /// Frames of the block not in the nested tables yet.
    unmapped: BlockMask,
    /// All 512 frames, none replaced or removed since: one 2 MiB entry.
    whole: bool,
}

/// What a guest frame holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum P2mKind {
    /// Ordinary RAM owned by the domain.
    Ram,
    /// A special page owned by the domain (console ring, xenstore ring).
    Special,
    /// The domain's shared_info page, placed by `add_to_physmap`.
    SharedInfo,
    /// A grant-table frame of the domain, placed by `add_to_physmap`.
    GrantTable(u32),
    /// A frame of another domain mapped through a grant.
    Foreign {
        /// The granting domain.
        owner: DomId,
    },
    /// A page of an assigned PCI function's memory BAR, mapped at
    /// guest-physical = host-physical, uncached. Not RAM: not counted in
    /// the domain's pages, never freed, and no hypercall reads, writes,
    /// grants or copies it.
    Mmio,
}

impl P2mKind {
    /// Whether the frame belongs to this domain (and is freed with it).
    pub fn owned(self) -> bool {
        matches!(self, P2mKind::Ram | P2mKind::Special)
    }
}

/// One p2m entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct P2mEntry {
    /// The backing host frame.
    pub hfn: Hfn,
    /// What the frame is.
    pub kind: P2mKind,
    /// The guest's permissions.
    pub perms: P2mPerms,
}

/// A domain's guest-physical to host-physical map.
pub struct P2m {
    entries: HashMap<u64, P2mEntry>,
    npt: Box<dyn NestedPaging>,
    dirty: bool,
    /// Lazy blocks, sorted by guest frame.
    lazy: Vec<LazyBlock>,
}

impl P2m {
    /// An empty map over the given nested page tables.
    pub fn new(npt: Box<dyn NestedPaging>) -> Self {
        P2m {
            entries: HashMap::new(),
            npt,
            dirty: false,
            lazy: Vec::new(),
        }
    }

    /// The lazy block holding frame `gfn` (not mapped yet) and the frame's
    /// index in it.
    #[inline]
    fn lazy_at(&self, gfn: u64) -> Option<(usize, u64)> {
        if self.lazy.is_empty() {
            return None;
        }
        let block = gfn & !(BLOCK_FRAMES - 1);
        let i = self.lazy.binary_search_by_key(&block, |b| b.gfn).ok()?;
        let k = gfn % BLOCK_FRAMES;
        bit(&self.lazy[i].unmapped, k).then_some((i, k))
    }

    fn lazy_entry(&self, i: usize, k: u64) -> P2mEntry {
        P2mEntry {
            hfn: Hfn(self.lazy[i].hfn + k),
            kind: P2mKind::Ram,
            perms: P2mPerms::RWX,
        }
    }

    /// What is mapped at `gfn` (a lazy frame too), without its frame.
    #[inline]
    pub fn kind(&self, gfn: Gfn) -> Option<P2mKind> {
        match self.entries.get(&gfn.0) {
            Some(e) => Some(e.kind),
            None => self.lazy_at(gfn.0).map(|_| P2mKind::Ram),
        }
    }

    /// Whether any frame of `mask` in the 2 MiB block at `gfn`
    /// (512-aligned) is mapped (lazy or not).
    pub fn overlaps(&self, gfn: Gfn, mask: &BlockMask) -> bool {
        if let Ok(i) = self.lazy.binary_search_by_key(&gfn.0, |b| b.gfn)
            && self.lazy[i]
                .unmapped
                .iter()
                .zip(mask)
                .any(|(a, b)| a & b != 0)
        {
            return true;
        }
        !self.entries.is_empty() && frames_in(mask).any(|k| self.entries.contains_key(&(gfn.0 + k)))
    }

    /// Whether anything is mapped at `gfn` (a lazy frame too).
    #[inline]
    pub fn contains(&self, gfn: Gfn) -> bool {
        self.entries.contains_key(&gfn.0) || self.lazy_at(gfn.0).is_some()
    }

    /// Looks up a guest frame, zeroing it first if it is a lazy frame that
    /// still holds old data: what every access to the frame's contents by
    /// the hypervisor (or by another domain, through a grant) goes through.
    /// Not inlined: inlined into its many callers it grew the hypercall
    /// paths by about 130 instructions a call (QEMU icount), called it
    /// costs a handful.
    #[inline(never)]
    pub fn get_scrubbed(&self, gfn: Gfn, frames: &dyn FrameAccess) -> Option<P2mEntry> {
        if let Some(e) = self.entries.get(&gfn.0) {
            return Some(*e);
        }
        let (i, k) = self.lazy_at(gfn.0)?;
        let b = &self.lazy[i];
        let mut m = b.unzeroed.get();
        if bit(&m, k) {
            frames.zero(Hfn(b.hfn + k), 0, PAGE_SIZE);
            clear(&mut m, k);
            b.unzeroed.set(m);
        }
        Some(self.lazy_entry(i, k))
    }

    /// Adds the lazy block at `gfn` (512-aligned): the frames in `mask`,
    /// backed by the host run from `hfn` (512-aligned, contents not zeroed),
    /// as RAM the nested tables map only once zeroed. The caller has
    /// checked that none of them is mapped. Costs nothing per frame: the
    /// frames get their entries when the guest first touches the block.
    pub fn add_lazy(&mut self, gfn: Gfn, hfn: Hfn, mask: BlockMask) {
        debug_assert!(gfn.0.is_multiple_of(BLOCK_FRAMES) && hfn.0.is_multiple_of(BLOCK_FRAMES));
        let block = LazyBlock {
            gfn: gfn.0,
            hfn: hfn.0,
            unzeroed: Cell::new(mask),
            unmapped: mask,
            whole: mask == FULL_BLOCK,
        };
        match self.lazy.binary_search_by_key(&gfn.0, |b| b.gfn) {
            Ok(i) => self.lazy[i] = block,
            Err(i) => self.lazy.insert(i, block),
        }
    }

    /// A nested page fault at `gfn`: if it lies in a lazy block, zeroes
    /// what is left of the block's old data and maps its frames (one 2 MiB
    /// entry for a whole block), and answers true; false for any other
    /// frame. Never allocates a frame of guest memory; the nested tables
    /// may need table frames, which can fail (then the block stays lazy).
    pub fn lazy_fault(&mut self, gfn: Gfn, frames: &dyn FrameAccess) -> Result<bool, NptError> {
        let Some((i, _)) = self.lazy_at(gfn.0) else {
            return Ok(false);
        };
        let b = &self.lazy[i];
        let unzeroed = b.unzeroed.get();
        for k in frames_in(&unzeroed) {
            frames.zero(Hfn(b.hfn + k), 0, PAGE_SIZE);
        }
        b.unzeroed.set([0; 8]);
        // Mapping frames that were not present needs no TLB flush: no
        // processor caches a not-present translation (an EPT violation
        // also invalidates what it might hold for the address).
        if b.whole {
            self.npt.map_large(Gfn(b.gfn), Hfn(b.hfn), P2mPerms::RWX)?;
        } else {
            for k in frames_in(&b.unmapped) {
                self.npt
                    .map(Gfn(b.gfn + k), Hfn(b.hfn + k), P2mPerms::RWX)?;
            }
        }
        let b = self.lazy.remove(i);
        self.entries.reserve(BLOCK_FRAMES as usize);
        for k in frames_in(&b.unmapped) {
            self.entries.insert(
                b.gfn + k,
                P2mEntry {
                    hfn: Hfn(b.hfn + k),
                    kind: P2mKind::Ram,
                    perms: P2mPerms::RWX,
                },
            );
        }
        Ok(true)
    }

    /// Maps every lazy frame already zeroed (the ones the domain builder
    /// wrote: kernel, boot structures), so the guest does not fault on
    /// them; blocks with nothing left to map are done.
    pub fn map_zeroed(&mut self) -> Result<(), NptError> {
        let mut i = 0;
        while i < self.lazy.len() {
            let b = &self.lazy[i];
            let unzeroed = b.unzeroed.get();
            let mut ready_mask = [0u64; 8];
            for (w, r) in ready_mask.iter_mut().enumerate() {
                *r = b.unmapped[w] & !unzeroed[w];
            }
            if ready_mask == [0; 8] {
                i += 1;
                continue;
            }
            let ready: Vec<u64> = frames_in(&ready_mask).collect();
            if b.whole && ready.len() as u64 == BLOCK_FRAMES {
                self.npt.map_large(Gfn(b.gfn), Hfn(b.hfn), P2mPerms::RWX)?;
            } else {
                for &k in &ready {
                    self.npt
                        .map(Gfn(b.gfn + k), Hfn(b.hfn + k), P2mPerms::RWX)?;
                }
            }
            for &k in &ready {
                let e = self.lazy_entry(i, k);
                self.entries.insert(self.lazy[i].gfn + k, e);
            }
            let b = &mut self.lazy[i];
            for k in ready {
                clear(&mut b.unmapped, k);
                b.whole = false;
            }
            if b.unmapped == [0; 8] {
                self.lazy.remove(i);
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    /// Whether `gfn` is a lazy frame not mapped yet.
    pub fn is_lazy(&self, gfn: Gfn) -> bool {
        self.lazy_at(gfn.0).is_some()
    }

    /// Whether the nested tables map `gfn` now.
    pub fn npt_maps(&self, gfn: Gfn) -> bool {
        self.npt.is_mapped(gfn)
    }

    /// Frames still waiting for their first touch (lazy, unmapped).
    pub fn lazy_frames(&self) -> u64 {
        self.lazy
            .iter()
            .map(|b| {
                b.unmapped
                    .iter()
                    .map(|w| u64::from(w.count_ones()))
                    .sum::<u64>()
            })
            .sum()
    }

    /// Takes lazy frame `gfn` out of its block (its entry is replaced or
    /// removed), answering its entry.
    fn take_lazy(&mut self, gfn: u64) -> Option<P2mEntry> {
        let (i, k) = self.lazy_at(gfn)?;
        let e = self.lazy_entry(i, k);
        let b = &mut self.lazy[i];
        let mut m = b.unzeroed.get();
        clear(&mut m, k);
        b.unzeroed.set(m);
        clear(&mut b.unmapped, k);
        b.whole = false;
        if b.unmapped == [0; 8] {
            self.lazy.remove(i);
        }
        Some(e)
    }

    /// Makes room for `additional` more entries at once (a domain build
    /// knows how many frames it will map), instead of growing and
    /// rehashing step by step.
    pub fn reserve(&mut self, additional: usize) {
        self.entries.reserve(additional);
    }

    /// Looks up a guest frame; `None` also for a lazy frame that still
    /// holds old data (see [`P2m::get_scrubbed`], [`P2m::contains`]).
    #[inline]
    pub fn get(&self, gfn: Gfn) -> Option<P2mEntry> {
        if let Some(e) = self.entries.get(&gfn.0) {
            return Some(*e);
        }
        let (i, k) = self.lazy_at(gfn.0)?;
        (!bit(&self.lazy[i].unzeroed.get(), k)).then(|| self.lazy_entry(i, k))
    }

    /// Maps `gfn`, returning the entry it replaced.
    pub fn set(&mut self, gfn: Gfn, entry: P2mEntry) -> Result<Option<P2mEntry>, NptError> {
        self.npt.map(gfn, entry.hfn, entry.perms)?;
        self.dirty = true;
        let old = self.entries.insert(gfn.0, entry);
        Ok(old.or_else(|| self.take_lazy(gfn.0)))
    }

    /// Maps the 2 MiB block at `gfn` to the host run at `hfn` (both
    /// 512-aligned) with one large entry where the tables have them, as
    /// `kind`: a direct-mapped region's frames, already zeroed. The caller
    /// has checked that none of the block is mapped.
    pub fn set_block(
        &mut self,
        gfn: Gfn,
        hfn: Hfn,
        kind: P2mKind,
        perms: P2mPerms,
    ) -> Result<(), NptError> {
        debug_assert!(gfn.0.is_multiple_of(BLOCK_FRAMES) && hfn.0.is_multiple_of(BLOCK_FRAMES));
        self.npt.map_large(gfn, hfn, perms)?;
        self.dirty = true;
        self.entries.reserve(BLOCK_FRAMES as usize);
        for k in 0..BLOCK_FRAMES {
            self.entries.insert(
                gfn.0 + k,
                P2mEntry {
                    hfn: Hfn(hfn.0 + k),
                    kind,
                    perms,
                },
            );
        }
        Ok(())
    }

    /// Unmaps `gfn`, returning what was there.
    pub fn remove(&mut self, gfn: Gfn) -> Option<P2mEntry> {
        let old = self.entries.remove(&gfn.0);
        if old.is_some() {
            self.npt.unmap(gfn);
            self.dirty = true;
            return old;
        }
        // A lazy frame is not in the nested tables.
        self.take_lazy(gfn.0)
    }

    /// Flushes the nested TLBs if the map changed since the last flush.
    pub fn flush(&mut self) {
        if self.dirty {
            self.npt.flush();
            self.dirty = false;
        }
    }

    /// Number of mapped guest frames (lazy ones too).
    pub fn len(&self) -> usize {
        self.entries.len() + self.lazy_frames() as usize
    }

    /// Whether nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.lazy.is_empty()
    }

    /// The highest mapped guest frame.
    pub fn max_gfn(&self) -> Option<Gfn> {
        let lazy = self
            .lazy
            .last()
            .and_then(|b| frames_in(&b.unmapped).last().map(|k| b.gfn + k));
        self.entries.keys().copied().chain(lazy).max().map(Gfn)
    }

    /// Every entry, lazy frames included, in no particular order. The
    /// frame of a lazy entry may still hold old data: read guest memory
    /// through [`P2m::get_scrubbed`] (`GuestMem`), never from here.
    pub fn iter(&self) -> impl Iterator<Item = (Gfn, P2mEntry)> + '_ {
        let lazy = self.lazy.iter().enumerate().flat_map(move |(i, b)| {
            frames_in(&b.unmapped).map(move |k| (Gfn(b.gfn + k), self.lazy_entry(i, k)))
        });
        self.entries.iter().map(|(&g, &e)| (Gfn(g), e)).chain(lazy)
    }

    /// Removes every entry, lazy frames included, returning them (for
    /// teardown).
    pub fn drain(&mut self) -> alloc::vec::Vec<(Gfn, P2mEntry)> {
        let mut all: alloc::vec::Vec<_> = self.entries.drain().map(|(g, e)| (Gfn(g), e)).collect();
        for (g, _) in &all {
            self.npt.unmap(*g);
        }
        for (i, b) in self.lazy.iter().enumerate() {
            all.extend(frames_in(&b.unmapped).map(|k| (Gfn(b.gfn + k), self.lazy_entry(i, k))));
        }
        self.lazy.clear();
        self.npt.flush();
        all
    }

    /// The root of the hardware tables, for the backend.
    pub fn npt_root(&self) -> u64 {
        self.npt.root()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::{MockPlatform, STALE_WORD};
    use crate::platform::Platform;
    use alloc::sync::Arc;
    use spin::Mutex;

    /// Nested tables that record what is mapped, shared with the test.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<(HashMap<u64, u64>, u32)>>);

    impl NestedPaging for Seen {
        fn map(&mut self, gfn: Gfn, hfn: Hfn, _: P2mPerms) -> Result<(), NptError> {
            self.0.lock().0.insert(gfn.0, hfn.0);
            Ok(())
        }
        fn map_large(&mut self, gfn: Gfn, hfn: Hfn, _: P2mPerms) -> Result<(), NptError> {
            let mut s = self.0.lock();
            s.1 += 1;
            for i in 0..BLOCK_FRAMES {
                s.0.insert(gfn.0 + i, hfn.0 + i);
            }
            Ok(())
        }
        fn unmap(&mut self, gfn: Gfn) {
            self.0.lock().0.remove(&gfn.0);
        }
        fn flush(&mut self) {}
        fn root(&self) -> u64 {
            0
        }
    }

    fn word(p: &MockPlatform, h: u64, off: usize) -> u64 {
        let mut b = [0u8; 8];
        p.read(Hfn(h), off, &mut b);
        u64::from_le_bytes(b)
    }

    #[test]
    fn a_lazy_block_is_zeroed_before_anyone_sees_it_and_mapped_large() {
        let plat = MockPlatform::default();
        let seen = Seen::default();
        let mut p2m = P2m::new(Box::new(seen.clone()));
        let h = plat.alloc_block().unwrap();
        assert_eq!(word(&plat, h.0 + 7, 8), STALE_WORD);
        p2m.add_lazy(Gfn(0x400), h, FULL_BLOCK);
        assert!(seen.0.lock().0.is_empty(), "nothing mapped before zeroing");
        assert_eq!(p2m.lazy_frames(), 512);
        assert!(p2m.contains(Gfn(0x407)) && p2m.get(Gfn(0x407)).is_none());
        assert_eq!(p2m.kind(Gfn(0x407)), Some(P2mKind::Ram));
        // The hypervisor's access zeroes that one frame, maps nothing.
        let e = p2m.get_scrubbed(Gfn(0x407), &plat).unwrap();
        assert_eq!(e.hfn, Hfn(h.0 + 7));
        assert_eq!(word(&plat, h.0 + 7, 8), 0);
        assert_eq!(word(&plat, h.0 + 8, 8), STALE_WORD);
        assert!(p2m.get(Gfn(0x407)).is_some() && p2m.get(Gfn(0x408)).is_none());
        assert!(seen.0.lock().0.is_empty());
        // The guest's first touch: everything zeroed, one 2 MiB entry.
        assert!(p2m.is_lazy(Gfn(0x5FF)));
        assert!(!p2m.lazy_fault(Gfn(0x600), &plat).unwrap());
        assert!(p2m.lazy_fault(Gfn(0x5FF), &plat).unwrap());
        assert_eq!(seen.0.lock().1, 1);
        assert_eq!(seen.0.lock().0.len(), 512);
        for i in 0..BLOCK_FRAMES {
            assert_eq!(word(&plat, h.0 + i, 4088), 0);
        }
        assert_eq!(p2m.lazy_frames(), 0);
        assert!(!p2m.lazy_fault(Gfn(0x5FF), &plat).unwrap());
    }

    #[test]
    fn replaced_or_removed_frames_leave_the_block() {
        let plat = MockPlatform::default();
        let seen = Seen::default();
        let mut p2m = P2m::new(Box::new(seen.clone()));
        let h = plat.alloc_block().unwrap();
        let mut mask = FULL_BLOCK;
        mask[7] = 0; // frames 448..512 not RAM
        p2m.add_lazy(Gfn(0), h, mask);
        assert_eq!(p2m.lazy_frames(), 448);
        // The guest gives frame 3 back (decrease_reservation), maps
        // shared_info over frame 5.
        let old = p2m.remove(Gfn(3)).unwrap();
        assert_eq!(old.hfn, Hfn(h.0 + 3));
        let si = plat.alloc_frame().unwrap();
        let e = P2mEntry {
            hfn: si,
            kind: P2mKind::SharedInfo,
            perms: P2mPerms::RW,
        };
        p2m.set(Gfn(5), e).unwrap();
        // Frame 3 is someone else's now: the lazy path must not zero it.
        plat.write(Hfn(h.0 + 3), 0, &[0xAB; 8]);
        plat.write(si, 0, &[0xCD; 8]);
        assert!(p2m.lazy_fault(Gfn(100), &plat).unwrap());
        let s = seen.0.lock();
        assert_eq!(s.1, 0, "not whole any more: single entries");
        assert_eq!(s.0.len(), 446 + 1);
        assert_eq!(s.0.get(&5), Some(&si.0));
        assert!(!s.0.contains_key(&3) && !s.0.contains_key(&448));
        assert_eq!(word(&plat, h.0 + 3, 0), 0xABAB_ABAB_ABAB_ABAB);
        assert_eq!(word(&plat, si.0, 0), 0xCDCD_CDCD_CDCD_CDCD);
        assert_eq!(word(&plat, h.0 + 4, 0), 0);
    }

    #[test]
    fn frames_zeroed_for_the_loader_are_mapped_before_the_guest_runs() {
        let plat = MockPlatform::default();
        let seen = Seen::default();
        let mut p2m = P2m::new(Box::new(seen.clone()));
        let (a, b) = (plat.alloc_block().unwrap(), plat.alloc_block().unwrap());
        p2m.add_lazy(Gfn(0), a, FULL_BLOCK);
        p2m.add_lazy(Gfn(512), b, FULL_BLOCK);
        for g in 0..512 {
            p2m.get_scrubbed(Gfn(g), &plat).unwrap();
        }
        p2m.get_scrubbed(Gfn(600), &plat).unwrap();
        p2m.map_zeroed().unwrap();
        let s = seen.0.lock();
        assert_eq!(s.1, 1, "the wholly written block with one entry");
        assert_eq!(s.0.len(), 513);
        drop(s);
        assert_eq!(p2m.lazy_frames(), 511);
        assert!(p2m.is_lazy(Gfn(601)) && !p2m.is_lazy(Gfn(600)));
    }

    #[test]
    fn masks() {
        let mut m = [0u64; 8];
        mask_range(&mut m, 60, 130);
        mask_range(&mut m, 511, 600);
        let f: Vec<u64> = frames_in(&m).collect();
        assert_eq!(f.len(), 71);
        assert_eq!((f[0], f[69], f[70]), (60, 129, 511));
        mask_range(&mut m, 0, 512);
        assert_eq!(m, FULL_BLOCK);
        let mut p2m = P2m::new(Box::new(Seen::default()));
        p2m.add_lazy(Gfn(512), Hfn(1024), [0, 1, 0, 0, 0, 0, 0, 0]);
        assert!(p2m.overlaps(Gfn(512), &FULL_BLOCK));
        assert!(!p2m.overlaps(Gfn(512), &[1, 0, 0, 0, 0, 0, 0, 0]));
        assert!(!p2m.overlaps(Gfn(0), &FULL_BLOCK));
        assert_eq!(p2m.max_gfn(), Some(Gfn(512 + 64)));
        assert_eq!(p2m.len(), 1);
        assert_eq!(p2m.iter().count(), 1);
    }
}
