//! Grant tables: per-domain state and the logic behind `grant_table_op`.
//!
//! # Model
//!
//! - Each domain has a [`GrantTable`]: shared frames (v1: 512 entries of 8
//!   bytes per frame, v2: 256 of 16), status frames for v2 (2048 `u16` per
//!   frame), the active entries (grants in use, with pin counts) and the
//!   maptrack (the grants this domain has mapped from others). The frames are
//!   owned by the hypervisor (never counted in `tot_pages`) and appear in the
//!   guest's p2m only where `XENMEM_add_to_physmap` placed them, as
//!   [`P2mKind::GrantTable`] (status frames carry
//!   `XENMAPIDX_grant_table_status` in the index). The table starts with
//!   [`INITIAL_FRAMES`] frame (allocated on first use) and grows to at most
//!   [`MAX_FRAMES`].
//! - Grants in use are pinned: the first pin of a reference reads the
//!   granting guest's entry once, checks it and sets `GTF_reading` (and
//!   `GTF_writing`) by compare-and-swap on the 32-bit flags+domid word (v1;
//!   in the status word for v2), retried [`CMPXCHG_RETRIES`] times against a
//!   guest racing the update. Later pins trust the active entry (its grantee
//!   and frame are fixed while pinned). The flags are cleared when the last
//!   writer / last pin goes. Copies pin transiently, for one copy.
//! - The granted frame is looked up in the granter's p2m (RAM or special
//!   pages only) and pinned in the granter ([`Domain::pin`]), so a granter
//!   releasing the frame while it is mapped (`decrease_reservation`) only
//!   makes it a zombie: the mapper never sees a freed frame. The last unpin
//!   frees such a zombie.
//! - Mappings go into the mapper's p2m at `host_addr >> 12` as
//!   [`P2mKind::Foreign`], never freed by the mapper.
//!
//! # Death
//!
//! Destroying a mapper releases every mapping it holds (clearing the
//! granter's flags). Destroying a granter whose frames are still mapped by
//! others **defers freeing those frames**: each such frame leaves the dying
//! domain (it is taken out of its p2m and zombie list so the teardown does
//! not free it) and becomes an orphan shared by the maptrack entries that
//! map it; the last unmap (or the last mapper's death) frees it. The mappers'
//! p2m entries stay valid the whole time, as in Xen, where the mapping's page
//! reference keeps the frame alive.

use alloc::sync::Arc;
use alloc::vec::Vec;
use hashbrown::HashMap;

use xen_abi::grant_table as g;

use crate::arch::P2mPerms;
use crate::domain::Domain;
use crate::hv::Hypervisor;
use crate::p2m::{P2mEntry, P2mKind};
use crate::platform::{FrameAccess, Platform};
use crate::types::{DomId, Errno, Gfn, Hfn, PAGE_SIZE, XenResult};

/// Frames a table has when first used.
pub const INITIAL_FRAMES: u32 = 1;
/// The most shared frames a table may grow to (Xen's default
/// `max_grant_frames`).
pub const MAX_FRAMES: u32 = 64;
/// The most grants one domain may have mapped at once.
pub const MAX_MAPTRACK: u32 = 1024;
/// Compare-and-swap attempts on a guest's entry before giving up.
pub const CMPXCHG_RETRIES: u32 = 5;
/// v1 entries per frame.
pub const ENTRIES_PER_FRAME_V1: u32 = (PAGE_SIZE / 8) as u32;
/// v2 entries per frame.
pub const ENTRIES_PER_FRAME_V2: u32 = (PAGE_SIZE / 16) as u32;
/// v2 status words per frame.
pub const STATUS_PER_FRAME: u32 = (PAGE_SIZE / 2) as u32;
/// Bit of a [`P2mKind::GrantTable`] index marking a status frame.
pub const STATUS_FRAME_BIT: u32 = 1 << 31;
/// Largest pin count of one kind (Xen refuses at 0x80 per byte counter).
const PIN_MAX: u32 = 0x7F_FFFF;

/// A status code (`GNTST_*`).
pub type Status = i16;

/// One table frame: the host frame and where the guest placed it.
#[derive(Clone, Copy, Debug)]
struct TableFrame {
    hfn: Hfn,
    gfn: Option<Gfn>,
}

/// How a grant is pinned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pin {
    /// A read-only host mapping.
    MapRead,
    /// A writable host mapping.
    MapWrite,
    /// A copy reading the frame.
    CopyRead,
    /// A copy writing the frame.
    CopyWrite,
}

impl Pin {
    fn writes(self) -> bool {
        matches!(self, Pin::MapWrite | Pin::CopyWrite)
    }
}

/// A grant in use (Xen's active entry).
#[derive(Clone, Copy, Debug)]
pub struct Active {
    /// The domain the grant is used by.
    pub grantee: DomId,
    /// The granted frame, as the granter's guest frame.
    pub gfn: Gfn,
    /// The host frame behind it when first pinned.
    pub hfn: Hfn,
    /// First granted byte (v2 sub-page grants; else 0).
    pub start: u16,
    /// Granted bytes (v2 sub-page grants; else a page).
    pub len: u16,
    /// Pin counts: read maps, write maps, read copies, write copies.
    pub pins: [u32; 4],
}

impl Active {
    fn writers(&self) -> u32 {
        self.pins[1] + self.pins[3]
    }
    fn total(&self) -> u32 {
        self.pins.iter().sum()
    }
    fn sub_page(&self) -> bool {
        self.start != 0 || self.len as usize != PAGE_SIZE
    }
}

fn pin_index(p: Pin) -> usize {
    match p {
        Pin::MapRead => 0,
        Pin::MapWrite => 1,
        Pin::CopyRead => 2,
        Pin::CopyWrite => 3,
    }
}

/// A frame of a destroyed granter kept alive by the mappings of it; freed
/// by whoever drops the last reference.
#[derive(Debug)]
struct Orphan(Hfn);

/// One mapping held by a domain (a maptrack entry).
#[derive(Clone, Debug)]
pub struct MapEntry {
    /// The granting domain.
    pub granter: DomId,
    /// The grant reference.
    pub gref: u32,
    /// Where it is mapped in the mapper.
    pub gfn: Gfn,
    /// The frame mapped.
    pub hfn: Hfn,
    /// Mapped read-only.
    pub readonly: bool,
    orphan: Option<Arc<Orphan>>,
}

impl MapEntry {
    /// Whether the granter is gone and the frame is kept by the mappings.
    pub fn orphaned(&self) -> bool {
        self.orphan.is_some()
    }
}

/// A domain's grant table and maptrack.
pub struct GrantTable {
    version: u32,
    shared: Vec<TableFrame>,
    status: Vec<TableFrame>,
    max_frames: u32,
    /// Active entries indexed by reference (grown on demand).
    active: Vec<Option<Active>>,
    nr_active: usize,
    maptrack: Vec<Option<MapEntry>>,
    free_handles: Vec<u32>,
    maptrack_limit: u32,
}

impl Default for GrantTable {
    fn default() -> Self {
        Self::new()
    }
}

impl GrantTable {
    /// An empty v1 table (frames come on first use).
    pub fn new() -> Self {
        GrantTable {
            version: 1,
            shared: Vec::new(),
            status: Vec::new(),
            max_frames: MAX_FRAMES,
            active: Vec::new(),
            nr_active: 0,
            maptrack: Vec::new(),
            free_handles: Vec::new(),
            maptrack_limit: MAX_MAPTRACK,
        }
    }

    /// The table version (1 or 2).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Shared frames.
    pub fn nr_frames(&self) -> u32 {
        self.shared.len() as u32
    }

    /// Status frames (v2).
    pub fn nr_status_frames(&self) -> u32 {
        self.status.len() as u32
    }

    /// The most shared frames.
    pub fn max_frames(&self) -> u32 {
        self.max_frames
    }

    /// Sets the most shared frames (a toolstack limit; not below the
    /// current size).
    pub fn set_max_frames(&mut self, n: u32) {
        self.max_frames = n.max(self.nr_frames());
    }

    /// Sets the maptrack limit.
    pub fn set_maptrack_limit(&mut self, n: u32) {
        self.maptrack_limit = n;
    }

    /// Grant entries.
    pub fn nr_entries(&self) -> u32 {
        let per = if self.version == 2 {
            ENTRIES_PER_FRAME_V2
        } else {
            ENTRIES_PER_FRAME_V1
        };
        self.nr_frames() * per
    }

    /// The host frame of shared frame `i`.
    pub fn shared_hfn(&self, i: u32) -> Option<Hfn> {
        self.shared.get(i as usize).map(|f| f.hfn)
    }

    /// The host frame of status frame `i`.
    pub fn status_hfn(&self, i: u32) -> Option<Hfn> {
        self.status.get(i as usize).map(|f| f.hfn)
    }

    /// The active entry of `gref`, if the grant is in use.
    pub fn active(&self, gref: u32) -> Option<&Active> {
        self.active.get(gref as usize)?.as_ref()
    }

    /// Grants in use.
    pub fn nr_active(&self) -> usize {
        self.nr_active
    }

    /// Mappings this domain holds.
    pub fn nr_mappings(&self) -> usize {
        self.maptrack.len() - self.free_handles.len()
    }

    /// The mapping behind `handle`.
    pub fn mapping(&self, handle: u32) -> Option<&MapEntry> {
        self.maptrack.get(handle as usize)?.as_ref()
    }

    /// Where the header (v1: whole entry) of `gref` lives.
    fn entry_loc(&self, gref: u32) -> Option<(Hfn, usize)> {
        if gref >= self.nr_entries() {
            return None;
        }
        let (per, size) = if self.version == 2 {
            (ENTRIES_PER_FRAME_V2, 16)
        } else {
            (ENTRIES_PER_FRAME_V1, 8)
        };
        let f = self.shared.get((gref / per) as usize)?;
        Some((f.hfn, (gref % per) as usize * size))
    }

    /// Where the v2 status word of `gref` lives: the aligned 32-bit word
    /// holding it and the shift of the 16 bits within.
    fn status_loc(&self, gref: u32) -> Option<(Hfn, usize, u32)> {
        let f = self.status.get((gref / STATUS_PER_FRAME) as usize)?;
        let off = (gref % STATUS_PER_FRAME) as usize * 2;
        Some((f.hfn, off & !3, ((off & 3) * 8) as u32))
    }

    /// Where the `GTF_reading`/`GTF_writing` bits of `gref` live, as an
    /// aligned 32-bit word and a shift.
    fn flags_loc(&self, gref: u32) -> Option<(Hfn, usize, u32)> {
        if self.version == 2 {
            self.status_loc(gref)
        } else {
            self.entry_loc(gref).map(|(h, o)| (h, o, 0))
        }
    }

    fn set_active(&mut self, gref: u32, a: Option<Active>) {
        let i = gref as usize;
        if i >= self.active.len() {
            if a.is_none() {
                return;
            }
            self.active.resize(i + 1, None);
        }
        match (self.active[i].is_some(), a.is_some()) {
            (false, true) => self.nr_active += 1,
            (true, false) => self.nr_active -= 1,
            _ => {}
        }
        self.active[i] = a;
    }

    fn alloc_handle(&mut self) -> Option<u32> {
        if let Some(h) = self.free_handles.pop() {
            return Some(h);
        }
        if self.maptrack.len() as u32 >= self.maptrack_limit {
            return None;
        }
        self.maptrack.push(None);
        Some(self.maptrack.len() as u32 - 1)
    }

    fn free_handle(&mut self, h: u32) {
        if let Some(slot) = self.maptrack.get_mut(h as usize)
            && slot.take().is_some()
        {
            self.free_handles.push(h);
        }
    }
}

/// Drops one pin of host frame `hfn` held by the grant code in `dom`; a
/// zombie no longer pinned is freed.
pub(crate) fn unpin_frame(retire: &mut crate::hv::Retire, dom: &mut Domain, hfn: Hfn) {
    if let Some(n) = dom.pinned.get_mut(&hfn.0) {
        *n -= 1;
        if *n == 0 {
            dom.pinned.remove(&hfn.0);
        }
    }
    if !dom.is_pinned(hfn)
        && let Some(i) = dom.zombies.iter().position(|&z| z == hfn)
    {
        dom.zombies.swap_remove(i);
        retire.frame(hfn);
    }
}

/// Grows `d`'s table to `nr` shared frames (and the status frames v2
/// needs). Fails with `EINVAL` beyond the maximum, `ENOMEM` without frames
/// (keeping what was added).
pub fn grow<P: Platform>(hv: &mut Hypervisor<P>, d: DomId, nr: u32) -> XenResult<()> {
    let dom = hv.domains.get_mut(&d.0).ok_or(Errno::ESRCH)?;
    let gt = &mut dom.gnttab;
    if nr > gt.max_frames {
        return Err(Errno::EINVAL);
    }
    while gt.nr_frames() < nr {
        let hfn = hv.platform.alloc_frame().ok_or(Errno::ENOMEM)?;
        gt.shared.push(TableFrame { hfn, gfn: None });
    }
    if gt.version == 2 {
        let want = status_frames_for(gt.nr_frames());
        while gt.nr_status_frames() < want {
            let hfn = hv.platform.alloc_frame().ok_or(Errno::ENOMEM)?;
            gt.status.push(TableFrame { hfn, gfn: None });
        }
    }
    Ok(())
}

/// Writes entry `gref` of `d`'s table as a builder does (Xen's
/// `gnttab_seed_entry`): `flags`, `domid` and `frame` of a v1 entry (the
/// table is v1 until the guest changes it, and Xen keeps the reserved
/// entries across a version change). Grows the table to hold `gref`.
pub fn seed_entry<P: Platform>(
    hv: &mut Hypervisor<P>,
    d: DomId,
    gref: u32,
    flags: u16,
    domid: DomId,
    frame: u32,
) -> XenResult<()> {
    ensure_init(hv, d)?;
    let dom = hv.domains.get(&d.0).ok_or(Errno::ESRCH)?;
    if dom.gnttab.version != 1 {
        return Err(Errno::EINVAL);
    }
    let (hfn, off) = dom.gnttab.entry_loc(gref).ok_or(Errno::EINVAL)?;
    let mut e = [0u8; 8];
    e[0..2].copy_from_slice(&flags.to_le_bytes());
    e[2..4].copy_from_slice(&domid.0.to_le_bytes());
    e[4..8].copy_from_slice(&frame.to_le_bytes());
    hv.platform.write(hfn, off, &e);
    Ok(())
}

/// Status frames needed for `nr` v2 shared frames.
pub fn status_frames_for(nr: u32) -> u32 {
    (nr * ENTRIES_PER_FRAME_V2).div_ceil(STATUS_PER_FRAME)
}

/// Gives `d` its initial frame if it has none yet.
pub fn ensure_init<P: Platform>(hv: &mut Hypervisor<P>, d: DomId) -> XenResult<()> {
    let dom = hv.domains.get(&d.0).ok_or(Errno::ESRCH)?;
    if dom.gnttab.nr_frames() < INITIAL_FRAMES {
        grow(hv, d, INITIAL_FRAMES)?;
    }
    Ok(())
}

/// Where table frame `i` (a status frame if `status`) of `d` is in its p2m,
/// if it is still there.
pub fn frame_gfn(dom: &Domain, status: bool, i: u32) -> Option<Gfn> {
    let list = if status {
        &dom.gnttab.status
    } else {
        &dom.gnttab.shared
    };
    let f = list.get(i as usize)?;
    let gfn = f.gfn?;
    let idx = if status { i | STATUS_FRAME_BIT } else { i };
    dom.p2m
        .get(gfn)
        .filter(|e| e.hfn == f.hfn && e.kind == P2mKind::GrantTable(idx))
        .map(|_| gfn)
}

/// `XENMEM_add_to_physmap` with `XENMAPSPACE_grant_table`: places shared
/// frame `idx` (status frame with `XENMAPIDX_grant_table_status`, v2) at
/// `gfn`, growing the table as needed. What was at `gfn` goes (RAM is
/// freed); the frame leaves its previous place.
pub fn add_to_physmap<P: Platform>(
    hv: &mut Hypervisor<P>,
    d: DomId,
    idx: u64,
    gfn: Gfn,
) -> XenResult<()> {
    use xen_abi::memory::XENMAPIDX_grant_table_status as STATUS_IDX;
    if gfn.0 >= 1 << 40 {
        return Err(Errno::EINVAL);
    }
    ensure_init(hv, d)?;
    let gt = &hv.domains.get(&d.0).ok_or(Errno::ESRCH)?.gnttab;
    let (version, nr, nr_status, max) = (
        gt.version,
        gt.nr_frames() as u64,
        gt.nr_status_frames() as u64,
        gt.max_frames as u64,
    );
    let status = version == 2 && idx & STATUS_IDX != 0;
    let i = if status { idx & !STATUS_IDX } else { idx };
    if status {
        // Enough shared frames that status frame `i` exists.
        let need = (i + 1).saturating_mul((STATUS_PER_FRAME / ENTRIES_PER_FRAME_V2) as u64);
        if i >= nr_status && need <= max {
            let _ = grow(hv, d, need as u32);
        }
    } else if i >= nr && i < max {
        let _ = grow(hv, d, i as u32 + 1);
    }
    let dom = hv.domains.get(&d.0).ok_or(Errno::ESRCH)?;
    let list = if status {
        &dom.gnttab.status
    } else {
        &dom.gnttab.shared
    };
    let i = i as u32;
    let Some(frame) = list.get(i as usize).copied() else {
        return Err(Errno::EINVAL);
    };
    let kind = P2mKind::GrantTable(if status { i | STATUS_FRAME_BIT } else { i });
    let old = frame_gfn(dom, status, i);
    // What is at the target goes.
    match dom.p2m.kind(gfn) {
        None => {}
        Some(k) if k == kind && old == Some(gfn) => return Ok(()),
        Some(P2mKind::Foreign { .. }) => return Err(Errno::EBUSY),
        Some(P2mKind::GrantTable(j)) => {
            // Another table frame: unhooked from this slot.
            let dom = hv.domains.get_mut(&d.0).ok_or(Errno::ESRCH)?;
            dom.p2m.remove(gfn);
            let (list, j) = if j & STATUS_FRAME_BIT != 0 {
                (&mut dom.gnttab.status, j & !STATUS_FRAME_BIT)
            } else {
                (&mut dom.gnttab.shared, j)
            };
            if let Some(f) = list.get_mut(j as usize) {
                f.gfn = None;
            }
        }
        Some(_) => hv.release_gfn(d, gfn)?,
    }
    let dom = hv.domains.get_mut(&d.0).ok_or(Errno::ESRCH)?;
    if let Some(o) = old {
        dom.p2m.remove(o);
    }
    let entry = P2mEntry {
        hfn: frame.hfn,
        kind,
        perms: P2mPerms::RW,
    };
    let list = if status {
        &mut dom.gnttab.status
    } else {
        &mut dom.gnttab.shared
    };
    list[i as usize].gfn = None;
    dom.p2m.set(gfn, entry).map_err(|_| Errno::ENOMEM)?;
    let list = if status {
        &mut dom.gnttab.status
    } else {
        &mut dom.gnttab.shared
    };
    list[i as usize].gfn = Some(gfn);
    dom.p2m.flush();
    Ok(())
}

/// Sets `GTF_reading` (and `GTF_writing` unless `readonly`) for a use of
/// `gref` by `grantee` (Xen's `_set_status`). `pinned`: the grant is
/// already active (its type and grantee were checked then). `mapflag`:
/// a mapping, for which sub-page grants do not qualify.
fn set_status(
    frames: &dyn FrameAccess,
    gt: &GrantTable,
    gref: u32,
    grantee: DomId,
    readonly: bool,
    mapflag: bool,
    pinned: bool,
) -> Result<(), Status> {
    let (hfn, off) = gt.entry_loc(gref).ok_or(g::GNTST_bad_gntref)?;
    let mask = g::GTF_type_mask | if mapflag { g::GTF_sub_page } else { 0 };
    let bad = |flags: u16, domid: u16| {
        !pinned && ((flags & mask) != g::GTF_permit_access || domid != grantee.0)
    };
    let mut want = g::GTF_reading;
    if !readonly {
        want |= g::GTF_writing;
    }
    if gt.version == 1 {
        // One read of the flags+domid word; decide on that copy; CAS.
        let mut cur = frames.load_u32(hfn, off);
        for _ in 0..CMPXCHG_RETRIES {
            let (flags, domid) = (cur as u16, (cur >> 16) as u16);
            if bad(flags, domid) || (!readonly && flags & g::GTF_readonly != 0) {
                return Err(g::GNTST_general_error);
            }
            let new = cur | want as u32;
            let prev = frames.cmpxchg_u32(hfn, off, cur, new);
            if prev == cur {
                return Ok(());
            }
            cur = prev;
        }
        // The guest keeps changing the entry under us.
        return Err(g::GNTST_general_error);
    }
    // v2: the bits go to the status word; check, set, check again.
    let (sh, soff, sshift) = gt.status_loc(gref).ok_or(g::GNTST_bad_gntref)?;
    let hdr = frames.load_u32(hfn, off);
    let (flags, domid) = (hdr as u16, (hdr >> 16) as u16);
    if bad(flags, domid) || (!readonly && flags & g::GTF_readonly != 0) {
        return Err(g::GNTST_general_error);
    }
    frames.fetch_or_u32(sh, soff, (want as u32) << sshift);
    let hdr = frames.load_u32(hfn, off);
    let (flags, domid) = (hdr as u16, (hdr >> 16) as u16);
    if bad(flags, domid) || (!readonly && flags & g::GTF_readonly != 0) {
        // Undo what this call added: a pinned grant keeps GTF_reading.
        let clear = if pinned { g::GTF_writing } else { want };
        frames.fetch_and_u32(sh, soff, !((clear as u32) << sshift));
        return Err(g::GNTST_general_error);
    }
    Ok(())
}

/// Clears `bits` of `gref`'s flags (v1 entry or v2 status word).
fn clear_flags(frames: &dyn FrameAccess, gt: &GrantTable, gref: u32, bits: u16) {
    if let Some((h, o, sh)) = gt.flags_loc(gref) {
        frames.fetch_and_u32(h, o, !((bits as u32) << sh));
    }
}

/// Reads the frame (and sub-page range) granted by `gref` after a
/// successful [`set_status`].
fn granted_frame(frames: &dyn FrameAccess, gt: &GrantTable, gref: u32) -> (u64, u16, u16) {
    let Some((h, o)) = gt.entry_loc(gref) else {
        return (u64::MAX, 0, 0);
    };
    if gt.version == 1 {
        return (frames.load_u32(h, o + 4) as u64, 0, PAGE_SIZE as u16);
    }
    let flags = frames.load_u32(h, o) as u16;
    let frame = frames.load_u64(h, o + 8);
    if flags & g::GTF_sub_page != 0 {
        let w = frames.load_u32(h, o + 4);
        let (start, len) = (w as u16, (w >> 16) as u16);
        if start as usize + len as usize > PAGE_SIZE {
            return (frame, 0, 0);
        }
        (frame, start, len)
    } else {
        (frame, 0, PAGE_SIZE as u16)
    }
}

/// Pins grant `gref` of `granter` for `grantee` (Xen's map and
/// acquire-for-copy): checks, sets the in-use flags, resolves the frame.
/// Returns the active entry.
pub fn acquire<P: Platform>(
    hv: &mut Hypervisor<P>,
    granter: DomId,
    gref: u32,
    grantee: DomId,
    pin: Pin,
) -> Result<Active, Status> {
    // The xenstore ring's reserved reference is for the xenstore domain
    // only, whatever the guest wrote in the entry. An entry that does not
    // name the caller gets Xen's answer for any such entry
    // (`GNTST_general_error`, `_set_status_v1`/`_v2`); one the guest
    // forged to name it is refused for want of the power.
    if gref == g::GNTTAB_RESERVED_XENSTORE
        && granter != grantee
        && !hv
            .domains
            .get(&grantee.0)
            .is_some_and(|x| x.may(crate::domain::Caps::XENSTORE))
    {
        let named = hv
            .domains
            .get(&granter.0)
            .and_then(|d| d.gnttab.entry_loc(gref))
            // v1 and v2 headers alike: flags u16 @0, domid u16 @2.
            .is_some_and(|(h, o)| (hv.platform.load_u32(h, o) >> 16) as u16 == grantee.0);
        return Err(if named {
            g::GNTST_permission_denied
        } else {
            g::GNTST_general_error
        });
    }
    let frames: &dyn FrameAccess = &*hv.platform;
    let dom = hv.domains.get_mut(&granter.0).ok_or(g::GNTST_bad_domain)?;
    let gt = &dom.gnttab;
    if gref >= gt.nr_entries() {
        return Err(g::GNTST_bad_gntref);
    }
    let mapflag = matches!(pin, Pin::MapRead | Pin::MapWrite);
    let readonly = !pin.writes();
    let act = gt.active(gref).copied();
    if let Some(a) = act
        && (a.grantee != grantee || a.pins[pin_index(pin)] >= PIN_MAX || (mapflag && a.sub_page()))
    {
        return Err(g::GNTST_general_error);
    }
    let need = match act {
        None => true,
        Some(a) => !readonly && a.writers() == 0,
    };
    if need {
        set_status(frames, gt, gref, grantee, readonly, mapflag, act.is_some())?;
    }
    let mut a = match act {
        Some(a) => a,
        None => {
            let (frame, start, len) = granted_frame(frames, gt, gref);
            let e = dom.p2m.get_scrubbed(Gfn(frame), frames);
            let ok = len != 0
                && e.is_some_and(|e| {
                    matches!(e.kind, P2mKind::Ram | P2mKind::Special) && (readonly || e.perms.write)
                });
            let Some(e) = e.filter(|_| ok) else {
                clear_flags(frames, gt, gref, g::GTF_reading | g::GTF_writing);
                return Err(g::GNTST_bad_page);
            };
            dom.pin(e.hfn);
            Active {
                grantee,
                gfn: Gfn(frame),
                hfn: e.hfn,
                start,
                len,
                pins: [0; 4],
            }
        }
    };
    a.pins[pin_index(pin)] += 1;
    dom.gnttab.set_active(gref, Some(a));
    Ok(a)
}

/// Drops one `pin` of `gref` of `granter`: clears `GTF_writing` with the
/// last writer and `GTF_reading` with the last pin, which also unpins the
/// frame.
pub fn release<P: Platform>(hv: &mut Hypervisor<P>, granter: DomId, gref: u32, pin: Pin) {
    let Some(dom) = hv.domains.get_mut(&granter.0) else {
        return;
    };
    let Some(a) = dom
        .gnttab
        .active
        .get_mut(gref as usize)
        .and_then(|a| a.as_mut())
    else {
        return;
    };
    let k = pin_index(pin);
    if a.pins[k] == 0 {
        return;
    }
    a.pins[k] -= 1;
    let a = *a;
    let mut clear = 0;
    if a.writers() == 0 {
        clear |= g::GTF_writing;
    }
    if a.total() == 0 {
        clear |= g::GTF_reading;
        dom.gnttab.set_active(gref, None);
    }
    clear_flags(&*hv.platform, &dom.gnttab, gref, clear);
    if a.total() == 0 {
        unpin_frame(&mut hv.retire, dom, a.hfn);
    }
}

/// Maps grant `gref` of `granter` into `mapper`'s p2m at `host_addr`
/// (`GNTTABOP_map_grant_ref` for one entry). Returns the status and handle.
pub fn map_grant<P: Platform>(
    hv: &mut Hypervisor<P>,
    mapper: DomId,
    host_addr: u64,
    flags: u32,
    granter: DomId,
    gref: u32,
) -> (Status, u32) {
    if flags & (g::GNTMAP_device_map | g::GNTMAP_host_map) == 0 {
        return (g::GNTST_bad_gntref, 0);
    }
    // Translated guests: no device, user-mode or PTE mappings.
    if flags & (g::GNTMAP_device_map | g::GNTMAP_application_map | g::GNTMAP_contains_pte) != 0 {
        return (g::GNTST_general_error, 0);
    }
    if !hv.domains.contains_key(&granter.0) {
        return (g::GNTST_bad_domain, 0);
    }
    let Some(me) = hv.domains.get_mut(&mapper.0) else {
        return (g::GNTST_bad_domain, 0);
    };
    let Some(handle) = me.gnttab.alloc_handle() else {
        return (g::GNTST_no_space, 0);
    };
    let readonly = flags & g::GNTMAP_readonly != 0;
    let pin = if readonly {
        Pin::MapRead
    } else {
        Pin::MapWrite
    };
    let a = match acquire(hv, granter, gref, mapper, pin) {
        Ok(a) => a,
        Err(st) => {
            if let Some(me) = hv.domains.get_mut(&mapper.0) {
                me.gnttab.free_handle_unused(handle);
            }
            return (st, 0);
        }
    };
    let gfn = Gfn::of(host_addr);
    let st = place(hv, mapper, gfn, granter, a.hfn, readonly);
    let Some(me) = hv.domains.get_mut(&mapper.0) else {
        return (g::GNTST_general_error, 0);
    };
    if st != g::GNTST_okay {
        me.gnttab.free_handle_unused(handle);
        release(hv, granter, gref, pin);
        return (st, 0);
    }
    me.gnttab.maptrack[handle as usize] = Some(MapEntry {
        granter,
        gref,
        gfn,
        hfn: a.hfn,
        readonly,
        orphan: None,
    });
    // Xen's p2m_add_page: a frame a domain owns shows at one gfn of its own
    // p2m only. Mapping its own grant at another gfn moves the frame: the
    // old gfn becomes a hole and stays one after the unmap (the guest may
    // populate it again). The frame, pinned by the mapping, is kept as a
    // zombie and freed when the mapping goes.
    if granter == mapper && a.gfn != gfn {
        let at_source = me
            .p2m
            .get(a.gfn)
            .is_some_and(|e| e.hfn == a.hfn && matches!(e.kind, P2mKind::Ram | P2mKind::Special));
        if at_source {
            let _ = hv.release_gfn(mapper, a.gfn);
        }
    }
    (g::GNTST_okay, handle)
}

impl GrantTable {
    /// Returns a handle taken by `alloc_handle` that was never filled.
    fn free_handle_unused(&mut self, h: u32) {
        if self.maptrack.get(h as usize).is_some_and(|s| s.is_none()) {
            if h as usize + 1 == self.maptrack.len() {
                self.maptrack.pop();
            } else {
                self.free_handles.push(h);
            }
        }
    }
}

/// Puts the foreign frame into the mapper's p2m at `gfn`: RAM there is
/// released; other special frames refuse.
fn place<P: Platform>(
    hv: &mut Hypervisor<P>,
    mapper: DomId,
    gfn: Gfn,
    owner: DomId,
    hfn: Hfn,
    readonly: bool,
) -> Status {
    let Some(me) = hv.domains.get(&mapper.0) else {
        return g::GNTST_general_error;
    };
    if gfn.0 >= 1 << 40 {
        return g::GNTST_general_error;
    }
    let ok = match me.p2m.kind(gfn) {
        None => true,
        Some(P2mKind::Ram | P2mKind::Special) => hv.release_gfn(mapper, gfn).is_ok(),
        Some(_) => false,
    };
    if !ok {
        return g::GNTST_general_error;
    }
    let Some(me) = hv.domains.get_mut(&mapper.0) else {
        return g::GNTST_general_error;
    };
    let e = P2mEntry {
        hfn,
        kind: P2mKind::Foreign { owner },
        perms: if readonly { P2mPerms::RO } else { P2mPerms::RW },
    };
    if me.p2m.set(gfn, e).is_err() {
        return g::GNTST_general_error;
    }
    g::GNTST_okay
}

/// Unmaps the mapping `handle` of `mapper` at `host_addr`
/// (`GNTTABOP_unmap_grant_ref` for one entry). The p2m change is flushed
/// before any frame can be freed.
pub fn unmap_grant<P: Platform>(
    hv: &mut Hypervisor<P>,
    mapper: DomId,
    host_addr: u64,
    handle: u32,
) -> Status {
    let Some(me) = hv.domains.get_mut(&mapper.0) else {
        return g::GNTST_bad_domain;
    };
    let Some(m) = me.gnttab.mapping(handle).cloned() else {
        return g::GNTST_bad_handle;
    };
    if host_addr == 0 {
        // Xen: no host address, no host mapping to undo.
        return g::GNTST_okay;
    }
    let gfn = Gfn::of(host_addr);
    let here = me.p2m.get(gfn);
    if !here.is_some_and(|e| e.hfn == m.hfn && e.kind == (P2mKind::Foreign { owner: m.granter })) {
        return g::GNTST_general_error;
    }
    me.p2m.remove(gfn);
    me.gnttab.free_handle(handle);
    drop_mapping(hv, mapper, m);
    g::GNTST_okay
}

/// Releases what a removed mapping held: the granter's pin, or its share
/// of an orphan frame. The mapper's p2m no longer maps it.
fn drop_mapping<P: Platform>(hv: &mut Hypervisor<P>, mapper: DomId, m: MapEntry) {
    match m.orphan {
        Some(o) => {
            if let Some(Orphan(hfn)) = Arc::into_inner(o) {
                if let Some(me) = hv.domains.get_mut(&mapper.0) {
                    me.p2m.flush();
                }
                hv.retire.frame(hfn);
            }
        }
        None => {
            let pin = if m.readonly {
                Pin::MapRead
            } else {
                Pin::MapWrite
            };
            // No CPU may still write through the mapping once the granter
            // sees the grant released (and may free a zombie frame on the
            // last unpin): as Xen, the unmap completes after the flush.
            hv.shootdown_sync(mapper);
            release(hv, m.granter, m.gref, pin);
        }
    }
}

/// One end of a copy, resolved.
#[derive(Clone, Copy)]
struct CopyEnd {
    hfn: Hfn,
    start: u16,
    len: u16,
    /// The grant pinned for the copy, to release.
    grant: Option<(DomId, u32, Pin)>,
}

fn claim<P: Platform>(
    hv: &mut Hypervisor<P>,
    caller: DomId,
    p: &g::GnttabCopyPtr,
    is_gref: bool,
    write: bool,
) -> Result<CopyEnd, Status> {
    if !is_gref && p.domid != DomId::SELF {
        return Err(g::GNTST_permission_denied);
    }
    let d = if p.domid == DomId::SELF {
        caller
    } else {
        DomId(p.domid)
    };
    let dom = hv.domains.get(&d.0).ok_or(g::GNTST_bad_domain)?;
    if is_gref {
        let pin = if write { Pin::CopyWrite } else { Pin::CopyRead };
        let a = acquire(hv, d, p.gref(), caller, pin)?;
        return Ok(CopyEnd {
            hfn: a.hfn,
            start: a.start,
            len: a.len,
            grant: Some((d, p.gref(), pin)),
        });
    }
    let e = dom
        .p2m
        .get_scrubbed(Gfn(p.gmfn()), &*hv.platform)
        .ok_or(g::GNTST_bad_page)?;
    if !matches!(e.kind, P2mKind::Ram | P2mKind::Special) || (write && !e.perms.write) {
        return Err(g::GNTST_bad_page);
    }
    Ok(CopyEnd {
        hfn: e.hfn,
        start: 0,
        len: PAGE_SIZE as u16,
        grant: None,
    })
}

/// One `GNTTABOP_copy` entry issued by `caller`.
pub fn copy_one<P: Platform>(hv: &mut Hypervisor<P>, caller: DomId, op: &g::GnttabCopy) -> Status {
    let src = match claim(
        hv,
        caller,
        &op.source,
        op.flags & g::GNTCOPY_source_gref != 0,
        false,
    ) {
        Ok(s) => s,
        Err(st) => return st,
    };
    let dst = match claim(
        hv,
        caller,
        &op.dest,
        op.flags & g::GNTCOPY_dest_gref != 0,
        true,
    ) {
        Ok(d) => d,
        Err(st) => {
            finish(hv, src);
            return st;
        }
    };
    let len = op.len as usize;
    let (so, doff) = (op.source.offset as usize, op.dest.offset as usize);
    let st = if so + len > PAGE_SIZE || doff + len > PAGE_SIZE {
        g::GNTST_bad_copy_arg
    } else if so < src.start as usize
        || so + len > src.start as usize + src.len as usize
        || doff < dst.start as usize
        || doff + len > dst.start as usize + dst.len as usize
    {
        g::GNTST_general_error
    } else {
        hv.platform.copy(src.hfn, so, dst.hfn, doff, len);
        g::GNTST_okay
    };
    finish(hv, dst);
    finish(hv, src);
    st
}

fn finish<P: Platform>(hv: &mut Hypervisor<P>, e: CopyEnd) {
    if let Some((d, r, pin)) = e.grant {
        release(hv, d, r, pin);
    }
}

/// `GNTTABOP_setup_table` for a translated domain: grows the table to
/// `nr` frames; the frame list gets where each frame is in the guest's
/// p2m (`!0` where not placed).
pub fn setup_table<P: Platform>(
    hv: &mut Hypervisor<P>,
    d: DomId,
    nr: u32,
) -> Result<Vec<u64>, Status> {
    let dom = hv.domains.get(&d.0).ok_or(g::GNTST_bad_domain)?;
    if nr > dom.gnttab.max_frames {
        return Err(g::GNTST_general_error);
    }
    ensure_init(hv, d).map_err(|_| g::GNTST_general_error)?;
    grow(hv, d, nr.max(hv.domains[&d.0].gnttab.nr_frames())).map_err(|_| g::GNTST_general_error)?;
    let dom = hv.domains.get(&d.0).ok_or(g::GNTST_bad_domain)?;
    Ok((0..nr)
        .map(|i| frame_gfn(dom, false, i).map_or(u64::MAX, |g| g.0))
        .collect())
}

/// The v2 status frames' places (`GNTTABOP_get_status_frames`).
pub fn status_frames(dom: &Domain, nr: u32) -> Result<Vec<u64>, Status> {
    if nr > dom.gnttab.nr_status_frames() {
        return Err(g::GNTST_general_error);
    }
    Ok((0..nr)
        .map(|i| frame_gfn(dom, true, i).map_or(u64::MAX, |g| g.0))
        .collect())
}

/// `GNTTABOP_set_version`: 1 or 2, only while no grant beyond the reserved
/// ones is in use; the reserved entries are carried over, the rest of the
/// table is cleared.
pub fn set_version<P: Platform>(hv: &mut Hypervisor<P>, d: DomId, version: u32) -> XenResult<()> {
    if version != 1 && version != 2 {
        return Err(Errno::EINVAL);
    }
    ensure_init(hv, d)?;
    let dom = hv.domains.get(&d.0).ok_or(Errno::ESRCH)?;
    let gt = &dom.gnttab;
    if gt.version == version {
        return Ok(());
    }
    if gt
        .active
        .iter()
        .skip(g::GNTTAB_NR_RESERVED_ENTRIES as usize)
        .any(|a| a.is_some())
    {
        return Err(Errno::EBUSY);
    }
    let frames: &dyn FrameAccess = &*hv.platform;
    // The reserved entries as (flags incl. reading/writing, domid, frame).
    let mut saved = [(0u16, 0u16, 0u64); g::GNTTAB_NR_RESERVED_ENTRIES as usize];
    for (r, s) in saved.iter_mut().enumerate() {
        let r = r as u32;
        let Some((h, o)) = gt.entry_loc(r) else {
            continue;
        };
        let w = frames.load_u32(h, o);
        let (flags, domid) = (w as u16, (w >> 16) as u16);
        if gt.version == 1 {
            *s = (flags, domid, frames.load_u32(h, o + 4) as u64);
        } else {
            match flags & g::GTF_type_mask {
                g::GTF_permit_access => {
                    let frame = frames.load_u64(h, o + 8);
                    if frame >> 32 != 0 {
                        return Err(Errno(xen_abi::errno::ERANGE));
                    }
                    let st = gt
                        .status_loc(r)
                        .map_or(0, |(sh, so, ss)| (frames.load_u32(sh, so) >> ss) as u16);
                    *s = (flags | st, domid, frame);
                }
                g::GTF_transitive => return Err(Errno(xen_abi::errno::ERANGE)),
                _ => {}
            }
        }
    }
    let nr = gt.nr_frames();
    if version == 2 {
        let dom = hv.domains.get_mut(&d.0).ok_or(Errno::ESRCH)?;
        dom.gnttab.version = 2;
        if let Err(e) = grow(hv, d, nr) {
            let dom = hv.domains.get_mut(&d.0).ok_or(Errno::ESRCH)?;
            dom.gnttab.version = 1;
            free_status_frames(hv, d);
            return Err(e);
        }
    } else {
        free_status_frames(hv, d);
        let dom = hv.domains.get_mut(&d.0).ok_or(Errno::ESRCH)?;
        dom.gnttab.version = 1;
    }
    let dom = hv.domains.get(&d.0).ok_or(Errno::ESRCH)?;
    let gt = &dom.gnttab;
    for f in &gt.shared {
        hv.platform.zero(f.hfn, 0, PAGE_SIZE);
    }
    for (r, &(flags, domid, frame)) in saved.iter().enumerate() {
        let r = r as u32;
        if flags == 0 {
            continue;
        }
        let Some((h, o)) = gt.entry_loc(r) else {
            continue;
        };
        if version == 1 {
            hv.platform.write(h, o + 4, &(frame as u32).to_le_bytes());
            let w = flags as u32 | (domid as u32) << 16;
            hv.platform.write(h, o, &w.to_le_bytes());
        } else {
            let inuse = flags & (g::GTF_reading | g::GTF_writing);
            if let Some((sh, so, ss)) = gt.status_loc(r) {
                hv.platform.fetch_or_u32(sh, so, (inuse as u32) << ss);
            }
            hv.platform.write(h, o + 8, &frame.to_le_bytes());
            let w = (flags & !inuse) as u32 | (domid as u32) << 16;
            hv.platform.write(h, o, &w.to_le_bytes());
        }
    }
    Ok(())
}

/// Frees the v2 status frames, taking them out of the p2m.
fn free_status_frames<P: Platform>(hv: &mut Hypervisor<P>, d: DomId) {
    let Some(dom) = hv.domains.get_mut(&d.0) else {
        return;
    };
    let n = dom.gnttab.nr_status_frames();
    for i in 0..n {
        if let Some(gfn) = frame_gfn(dom, true, i) {
            dom.p2m.remove(gfn);
        }
    }
    dom.p2m.flush();
    for f in dom.gnttab.status.drain(..) {
        hv.retire.frame(f.hfn);
    }
}

/// `GNTTABOP_swap_grant_ref` for one pair of `d`'s own entries.
pub fn swap_refs<P: Platform>(hv: &mut Hypervisor<P>, d: DomId, a: u32, b: u32) -> Status {
    let Some(dom) = hv.domains.get(&d.0) else {
        return g::GNTST_bad_domain;
    };
    let gt = &dom.gnttab;
    let (Some(la), Some(lb)) = (gt.entry_loc(a), gt.entry_loc(b)) else {
        return g::GNTST_bad_gntref;
    };
    if gt.active(a).is_some() || gt.active(b).is_some() {
        return g::GNTST_eagain;
    }
    if a == b {
        return g::GNTST_okay;
    }
    let size = if gt.version == 2 { 16 } else { 8 };
    let (mut ea, mut eb) = ([0u8; 16], [0u8; 16]);
    let f = &*hv.platform;
    f.read(la.0, la.1, &mut ea[..size]);
    f.read(lb.0, lb.1, &mut eb[..size]);
    f.write(la.0, la.1, &eb[..size]);
    f.write(lb.0, lb.1, &ea[..size]);
    if gt.version == 2
        && let (Some(sa), Some(sb)) = (gt.status_loc(a), gt.status_loc(b))
    {
        let va = (f.load_u32(sa.0, sa.1) >> sa.2) as u16;
        let vb = (f.load_u32(sb.0, sb.1) >> sb.2) as u16;
        f.fetch_and_u32(sa.0, sa.1, !(0xFFFF << sa.2));
        f.fetch_or_u32(sa.0, sa.1, (vb as u32) << sa.2);
        f.fetch_and_u32(sb.0, sb.1, !(0xFFFF << sb.2));
        f.fetch_or_u32(sb.0, sb.1, (va as u32) << sb.2);
    }
    g::GNTST_okay
}

/// Releases everything `d` holds in grant tables; called by
/// `destroy_domain` before the domain's memory goes. Mappings `d` holds are
/// undone (the granters' flags cleared); frames of `d` still mapped by
/// others become orphans kept until their last mapping goes; the table
/// frames are freed.
pub fn teardown<P: Platform>(hv: &mut Hypervisor<P>, d: DomId) {
    let Some(dom) = hv.domains.get_mut(&d.0) else {
        return;
    };
    // 1. As mapper.
    let maps: Vec<MapEntry> = dom.gnttab.maptrack.drain(..).flatten().collect();
    dom.gnttab.free_handles.clear();
    for m in &maps {
        if dom
            .p2m
            .get(m.gfn)
            .is_some_and(|e| e.kind == (P2mKind::Foreign { owner: m.granter }))
        {
            dom.p2m.remove(m.gfn);
        }
    }
    dom.p2m.flush();
    for m in maps {
        drop_mapping(hv, d, m);
    }
    // 2. As granter: what others still map survives as orphans.
    let Some(dom) = hv.domains.get_mut(&d.0) else {
        return;
    };
    let active: Vec<(u32, Active)> = dom
        .gnttab
        .active
        .drain(..)
        .enumerate()
        .filter_map(|(r, a)| Some((r as u32, a?)))
        .collect();
    dom.gnttab.nr_active = 0;
    let mut orphans: HashMap<u64, Arc<Orphan>> = HashMap::new();
    for (_, a) in &active {
        if orphans.contains_key(&a.hfn.0) {
            continue;
        }
        orphans.insert(a.hfn.0, Arc::new(Orphan(a.hfn)));
        // Out of the dying domain's hands: neither its p2m nor its zombies
        // may free it now.
        if dom
            .p2m
            .get(a.gfn)
            .is_some_and(|e| e.hfn == a.hfn && e.kind.owned())
        {
            dom.p2m.remove(a.gfn);
            dom.tot_pages = dom.tot_pages.saturating_sub(1);
        }
        dom.zombies.retain(|&z| z != a.hfn);
        dom.pinned.remove(&a.hfn.0);
    }
    if !orphans.is_empty() {
        for (&id, other) in hv.domains.iter_mut() {
            if id == d.0 {
                continue;
            }
            for m in other.gnttab.maptrack.iter_mut().flatten() {
                if m.granter == d
                    && m.orphan.is_none()
                    && let Some(o) = orphans.get(&m.hfn.0)
                {
                    m.orphan = Some(o.clone());
                }
            }
        }
    }
    // Orphans no mapping took (transient pins only) are freed here.
    for (_, o) in orphans {
        if let Some(Orphan(hfn)) = Arc::into_inner(o) {
            hv.retire.frame(hfn);
        }
    }
    // 3. The table frames.
    let Some(dom) = hv.domains.get_mut(&d.0) else {
        return;
    };
    let mut placed: Vec<Gfn> = Vec::new();
    for (status, n) in [
        (false, dom.gnttab.nr_frames()),
        (true, dom.gnttab.nr_status_frames()),
    ] {
        placed.extend((0..n).filter_map(|i| frame_gfn(dom, status, i)));
    }
    for gfn in placed {
        dom.p2m.remove(gfn);
    }
    dom.p2m.flush();
    for f in dom
        .gnttab
        .shared
        .drain(..)
        .chain(dom.gnttab.status.drain(..))
    {
        hv.retire.frame(f.hfn);
    }
}
