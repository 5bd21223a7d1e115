//! The block back end: one [`Vbd`] per disk, each with its own xenbus
//! state machine, serving `blkif` rings (`xen/include/public/io/blkif.h`)
//! as Linux's `xen-blkfront` drives them.
//!
//! # Handshake (what a toolstack plus Linux's blkback do)
//!
//! 1. [`Blkback::add_disk`] writes the front-end directory
//!    `/local/domain/<fe>/device/vbd/<devid>` (`backend`, `backend-id`,
//!    `state`=1, `virtual-device`, `device-type`=disk; owner the front
//!    end, readable by us) and the back-end directory
//!    `/local/domain/<be>/backend/vbd/<fe>/<devid>` (`frontend`,
//!    `frontend-id`, `online`, `mode`, `params`, the disk geometry
//!    `sectors`/`sector-size`/`physical-sector-size`/`info` and the
//!    features; owner us, readable by the front end), then goes
//!    `InitWait` (2).
//! 2. There are no watches: after every store pump, [`Blkback::sync`]
//!    reads each front end's `state` and moves the back end along. A front
//!    end at `Initialised` (or `Connected`) has written `ring-ref` (or
//!    `ring-page-order` + `ring-ref0..`), `event-channel` and `protocol`:
//!    the ring is mapped ([`BlkPlatform::map_ring`]), the port bound, and
//!    the back end goes `Connected` (4).
//! 3. A front end at `Closing` makes us `Closing`, at `Closed` (or gone)
//!    we drop the ring and go `Closed`; a front end back at
//!    `Initialising` after that finds us at `InitWait` again (Linux does
//!    this on resume and module reload).
//!
//! # Data path
//! Requests are copied whole out of the ring and validated on the copy
//! (see [`parse`]). A ring pass takes every queued request and serves them
//! together: data moves straight between the granted pages and the
//! disk's bytes ([`Storage::bytes`]), by grant copy ([`BlkPlatform::copy`],
//! the segments of every request of the pass in batches of at most
//! [`COPY_BATCH`]) or, with `feature-persistent` negotiated, through
//! grants mapped once and kept ([`PersistentGrants`]). Anything wrong with
//! a request gets
//! `BLKIF_RSP_ERROR` (unknown operations `BLKIF_RSP_EOPNOTSUPP`); a ring
//! whose indices are impossible stops that vbd (`Closing`) and no other.

// Xen's names for the xenbus states.
#![allow(non_upper_case_globals)]

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use pv_rings::{BackRing, RingError, SharedMem};
use xen_abi::io::blkif::*;
use xen_abi::io::xenbus::*;
use zerocopy::{FromBytes, IntoBytes};

use crate::xenbus::{self, Step, read_str, read_u32};
use crate::xenstore::{Errno, Platform, StoreService};

/// Most segments of an indirect request we accept (Linux blkback's
/// `MAX_INDIRECT_SEGMENTS`); written as `feature-max-indirect-segments`.
pub const MAX_INDIRECT_SEGMENTS: usize = 256;
/// Segments per indirect page (4096 / 8).
pub const SEGS_PER_INDIRECT_FRAME: usize = 512;
/// Largest ring we map: `max-ring-page-order` (16 pages, 512 slots).
pub const MAX_RING_PAGE_ORDER: u32 = 4;
/// Requests served per vbd per [`Blkback::pump`] before the others get a
/// turn (XSA-332: bounded work per notification).
pub const REQUESTS_PER_PUMP: u32 = 64;
/// Segments one grant-copy batch holds: the segments of every request
/// taken in one ring pass go into batches of at most this many, one
/// `GNTTABOP_copy` each (8 requests of 32 indirect segments, a 1 MiB
/// `O_DIRECT` block as blkfront splits it, fill one).
pub const COPY_BATCH: usize = 256;
/// Most persistent grants kept mapped per ring. blkfront's pool is up to
/// (32 + 1) x 32 = 1056 grants a ring; the ones it uses most (its free
/// list is last-in first-out) are kept, the rest are copied. Bounded so
/// that a few vbds stay under the hypervisor's maptrack limit (hv-core's
/// `MAX_MAPTRACK`, 1024 mappings per domain) with room for the rings and
/// store pages.
pub const MAX_PERSISTENT_GRANTS: usize = 320;
/// The guest page size.
const PAGE: usize = 4096;

/// A failed disk operation (answered `BLKIF_RSP_ERROR`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoError;

/// A disk as the back end sees it. Offsets and lengths are bytes, always
/// whole sectors of [`Storage::sector_size`] and inside the disk (the
/// back end checks before calling).
///
/// Two kinds: a disk in the service domain's memory (the boot module)
/// hands out its bytes ([`Storage::bytes`]) and grant copies and
/// persistent grants move data to and from them in place, with no bounce
/// buffer; a device (virtio-blk) answers `None` there and the back end
/// moves each request's data through a staging buffer with
/// [`Storage::read`] and [`Storage::write`].
pub trait Storage {
    /// Logical sector size in bytes (512 or 4096).
    fn sector_size(&self) -> u32;
    /// Size in logical sectors.
    fn sectors(&self) -> u64;
    /// Whether writes are refused.
    fn read_only(&self) -> bool;
    /// The disk's bytes (at least [`Storage::sectors`] whole sectors)
    /// when it lives in memory, `None` for a device. The back end writes
    /// them only for requests it accepted as writes (never on a read-only
    /// disk).
    fn bytes(&mut self) -> Option<&mut [u8]>;
    /// Reads `buf.len()` bytes at `offset`.
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), IoError>;
    /// Writes `buf` at `offset` (never called on a read-only disk).
    fn write(&mut self, offset: u64, buf: &[u8]) -> Result<(), IoError>;
    /// Makes earlier writes durable (`BLKIF_OP_FLUSH_DISKCACHE`).
    fn flush(&mut self) -> Result<(), IoError>;
    /// Whether [`Storage::discard`] works (`feature-discard` is offered
    /// only then, and never for a read-only disk).
    fn can_discard(&self) -> bool {
        true
    }
    /// Drops the contents of a range (reads of it may return anything).
    fn discard(&mut self, offset: u64, len: u64) -> Result<(), IoError>;
}

/// A disk held in memory: a `Vec<u8>` on the host, the boot module's
/// frames in the service domain.
pub struct MemDisk<B> {
    data: B,
    sector_size: u32,
    read_only: bool,
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> MemDisk<B> {
    /// A disk over `data` (its length rounded down to whole sectors);
    /// `None` unless `sector_size` is 512 or 4096.
    pub fn new(data: B, sector_size: u32, read_only: bool) -> Option<Self> {
        matches!(sector_size, 512 | 4096).then_some(Self {
            data,
            sector_size,
            read_only,
        })
    }

    /// The bytes.
    pub fn data(&self) -> &[u8] {
        self.data.as_ref()
    }

    fn range(&mut self, offset: u64, len: usize) -> Result<&mut [u8], IoError> {
        let start = usize::try_from(offset).map_err(|_| IoError)?;
        let end = start.checked_add(len).ok_or(IoError)?;
        self.data.as_mut().get_mut(start..end).ok_or(IoError)
    }
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> Storage for MemDisk<B> {
    fn sector_size(&self) -> u32 {
        self.sector_size
    }
    fn sectors(&self) -> u64 {
        self.data.as_ref().len() as u64 / u64::from(self.sector_size)
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn bytes(&mut self) -> Option<&mut [u8]> {
        Some(self.data.as_mut())
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        buf.copy_from_slice(self.range(offset, buf.len())?);
        Ok(())
    }
    fn write(&mut self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        if self.read_only {
            return Err(IoError);
        }
        self.range(offset, buf.len())?.copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), IoError> {
        Ok(())
    }
    fn discard(&mut self, offset: u64, len: u64) -> Result<(), IoError> {
        if self.read_only {
            return Err(IoError);
        }
        let len = usize::try_from(len).map_err(|_| IoError)?;
        self.range(offset, len)?.fill(0);
        Ok(())
    }
}

/// One grant copy between a page the front end granted and local memory
/// (the disk's bytes, or a buffer for indirect segment lists): `len`
/// bytes at `offset` in the page granted by `gref`, and at `local` in the
/// local memory. `offset + len` never passes the guest page (checked
/// before).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopySeg {
    /// The guest's grant.
    pub gref: u32,
    /// Offset in the granted page.
    pub offset: u16,
    /// Bytes (1..=4096).
    pub len: u16,
    /// Offset in the local memory.
    pub local: usize,
    /// Which way the data moves.
    pub dir: CopyDir,
}

/// Which way a [`CopySeg`] moves data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyDir {
    /// The guest's page to local memory (a write, indirect pages).
    FromGuest,
    /// Local memory to the guest's page (a read).
    ToGuest,
}

/// Handle of a mapped ring or persistent grant, given back to
/// [`BlkPlatform::unmap_ring`] / [`BlkPlatform::unmap_grants`].
pub type MapId = u32;

/// What the block back end needs of the hypervisor besides
/// [`Platform`]'s event channels.
pub trait BlkPlatform {
    /// Mapped pages (ring pages, contiguous; persistent grants, one page).
    type Ring: SharedMem;
    /// Maps the front end's ring pages `grefs` (granted by `domid`)
    /// contiguously, writable.
    fn map_ring(&mut self, domid: u16, grefs: &[u32]) -> Result<(Self::Ring, MapId), Errno>;
    /// Unmaps a ring (the caller dropped every use of it first).
    fn unmap_ring(&mut self, id: MapId);
    /// Maps one page `gref` of `domid`, writable, to keep (a persistent
    /// grant, `GNTTABOP_map_grant_ref`).
    fn map_grant(&mut self, domid: u16, gref: u32) -> Result<(Self::Ring, MapId), Errno>;
    /// Unmaps persistent grants (the caller dropped every use first).
    fn unmap_grants(&mut self, ids: &[MapId]);
    /// Grant copies (`GNTTABOP_copy`) between `domid`'s grants and
    /// `local`, as few hypercalls as possible (one for a batch of at most
    /// [`COPY_BATCH`] segments), in order; `status[k]` gets segment `k`'s
    /// `GNTST_*` (0: copied). `Err` if the hypercall failed as a whole:
    /// then no segment counts as copied.
    fn copy(
        &mut self,
        domid: u16,
        segs: &[CopySeg],
        local: &mut [u8],
        status: &mut [i16],
    ) -> Result<(), Errno>;
}

/// [`BlkPlatform::copy`] of `segs` to or from `local`, `Ok` only if
/// every segment was copied (for callers that fail them all together).
pub fn copy_all<P: BlkPlatform>(
    p: &mut P,
    domid: u16,
    segs: &[CopySeg],
    local: &mut [u8],
) -> Result<(), Errno> {
    let mut status = vec![0i16; segs.len()];
    p.copy(domid, segs, local, &mut status)?;
    match status.iter().find(|&&s| s != 0) {
        Some(&s) => Err(-i32::from(s)),
        None => Ok(()),
    }
}

/// A parsed, validated-for-shape request (copied out of the ring).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Read or write (or a flush carrying data, `flush` set), direct or
    /// indirect.
    Rw {
        /// The front end's id.
        id: u64,
        /// The operation to answer with.
        operation: u8,
        /// True for writes.
        write: bool,
        /// Flush after the write.
        flush: bool,
        /// Start, 512-byte sectors.
        sector: u64,
        /// Direct segments (empty for indirect ones, see `indirect`).
        segs: Vec<BlkifRequestSegment>,
        /// Indirect: the pages holding the segments, and their count.
        indirect: Option<(Vec<u32>, usize)>,
    },
    /// A flush without data.
    Flush {
        /// The front end's id.
        id: u64,
    },
    /// A discard.
    Discard {
        /// The front end's id.
        id: u64,
        /// Start, 512-byte sectors.
        sector: u64,
        /// Length, 512-byte sectors.
        nr_sectors: u64,
    },
    /// Answered at once with `status`.
    Bad {
        /// The front end's id.
        id: u64,
        /// The operation byte, echoed.
        operation: u8,
        /// `BLKIF_RSP_ERROR` or `BLKIF_RSP_EOPNOTSUPP`.
        status: i16,
    },
}

/// What a vbd offers (the features it advertised).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// `feature-flush-cache`.
    pub flush: bool,
    /// `feature-discard`.
    pub discard: bool,
    /// `feature-max-indirect-segments` (0: none).
    pub max_indirect: usize,
}

/// Checks a request's shape (operation, segment count, segment sector
/// ranges) against what was offered; the disk range is checked when it
/// is served. Never panics, whatever the bytes.
pub fn parse(raw: &BlkifRequest, f: &Features) -> Request {
    let id = raw.id;
    let bad = |status| Request::Bad {
        id,
        operation: raw.operation,
        status,
    };
    let segs_ok = |segs: &[BlkifRequestSegment]| segs.iter().all(|s| s.byte_len().is_some());
    match BlkifOp::try_from(raw.operation) {
        Ok(op @ (BlkifOp::Read | BlkifOp::Write | BlkifOp::FlushDiskcache)) => {
            if op == BlkifOp::FlushDiskcache && !f.flush {
                return bad(BLKIF_RSP_EOPNOTSUPP);
            }
            let Some(segs) = raw.segments() else {
                return bad(BLKIF_RSP_ERROR);
            };
            if segs.is_empty() {
                return if op == BlkifOp::FlushDiskcache {
                    Request::Flush { id }
                } else {
                    bad(BLKIF_RSP_ERROR)
                };
            }
            if !segs_ok(segs) {
                return bad(BLKIF_RSP_ERROR);
            }
            Request::Rw {
                id,
                operation: raw.operation,
                write: op != BlkifOp::Read,
                flush: op == BlkifOp::FlushDiskcache,
                sector: raw.sector_number,
                segs: segs.to_vec(),
                indirect: None,
            }
        }
        Ok(BlkifOp::Discard) => {
            if !f.discard {
                return bad(BLKIF_RSP_EOPNOTSUPP);
            }
            let d = BlkifRequestDiscard::read_from_prefix(raw.as_bytes())
                .map(|(d, _)| d)
                .unwrap_or_default();
            Request::Discard {
                id,
                sector: d.sector_number,
                nr_sectors: d.nr_sectors,
            }
        }
        Ok(BlkifOp::Indirect) => {
            if f.max_indirect == 0 {
                return bad(BLKIF_RSP_EOPNOTSUPP);
            }
            let r = BlkifRequestIndirect::read_from_prefix(raw.as_bytes())
                .map(|(r, _)| r)
                .unwrap_or_default();
            // The response carries the real operation: blkfront checks it
            // against `indirect_op` ("response has wrong operation").
            let bad = |status| Request::Bad {
                id,
                operation: r.indirect_op,
                status,
            };
            let write = match r.indirect_op {
                BLKIF_OP_READ => false,
                BLKIF_OP_WRITE => true,
                _ => return bad(BLKIF_RSP_ERROR),
            };
            let n = usize::from(r.nr_segments);
            if n == 0 || n > f.max_indirect {
                return bad(BLKIF_RSP_ERROR);
            }
            let pages = n.div_ceil(SEGS_PER_INDIRECT_FRAME);
            if pages > BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST {
                return bad(BLKIF_RSP_ERROR);
            }
            Request::Rw {
                id,
                operation: r.indirect_op,
                write,
                flush: false,
                sector: r.sector_number,
                segs: Vec::new(),
                indirect: Some((r.indirect_grefs[..pages].to_vec(), n)),
            }
        }
        Ok(BlkifOp::WriteBarrier) | Err(_) => bad(BLKIF_RSP_EOPNOTSUPP),
    }
}

/// Counters of one vbd.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VbdStats {
    /// Requests answered `BLKIF_RSP_OKAY`.
    pub ok: u64,
    /// Requests answered with an error status.
    pub errors: u64,
    /// Connections made (1 + reconnects).
    pub connects: u32,
    /// `GNTTABOP_copy` batches issued (hypercalls, before the
    /// hypervisor's own continuations).
    pub copy_calls: u64,
    /// Segments moved by grant copy.
    pub copy_segs: u64,
    /// Segments moved through persistent grants (no hypercall).
    pub persistent_segs: u64,
    /// Persistent grants mapped.
    pub persistent_maps: u64,
}

/// The persistent grants of one ring (`feature-persistent`): pages the
/// front end keeps granted and reuses, each mapped on first use and kept
/// until the ring disconnects, at most `limit` of them. Segments of other
/// grants (past the limit, or whose map the hypervisor refused) move by
/// grant copy.
pub struct PersistentGrants<R> {
    grants: BTreeMap<u32, (R, MapId)>,
    limit: usize,
    /// A map failed in this ring pass: map no more until the next
    /// (bounds the hypercalls a front end of bad grants costs us).
    refused: bool,
}

impl<R: SharedMem> PersistentGrants<R> {
    /// No grants yet, at most `limit`.
    pub fn new(limit: usize) -> Self {
        Self {
            grants: BTreeMap::new(),
            limit,
            refused: false,
        }
    }

    /// Grants mapped.
    pub fn len(&self) -> usize {
        self.grants.len()
    }

    /// Whether none is mapped.
    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    /// Whether `gref` is mapped.
    pub fn contains(&self, gref: u32) -> bool {
        self.grants.contains_key(&gref)
    }

    /// A new ring pass: mapping may be tried again.
    pub fn new_pass(&mut self) {
        self.refused = false;
    }

    /// The page of `gref` (of `domid`), mapped now if it is new and there
    /// is room; `None`: copy this segment. `mapped` is set when a new map
    /// was made.
    pub fn get<P: BlkPlatform<Ring = R>>(
        &mut self,
        p: &mut P,
        domid: u16,
        gref: u32,
        mapped: &mut bool,
    ) -> Option<&R> {
        if !self.grants.contains_key(&gref) {
            if self.refused || self.grants.len() >= self.limit {
                return None;
            }
            match p.map_grant(domid, gref) {
                Ok((mem, id)) if mem.len() >= PAGE => {
                    self.grants.insert(gref, (mem, id));
                    *mapped = true;
                }
                Ok((mem, id)) => {
                    drop(mem);
                    p.unmap_grants(&[id]);
                    self.refused = true;
                    return None;
                }
                Err(_) => {
                    self.refused = true;
                    return None;
                }
            }
        }
        self.grants.get(&gref).map(|(m, _)| m)
    }

    /// Unmaps every grant (the ring is going away).
    pub fn release<P: BlkPlatform<Ring = R>>(&mut self, p: &mut P) {
        let grants = core::mem::take(&mut self.grants);
        let ids: Vec<MapId> = grants.into_values().map(|(_, id)| id).collect();
        if !ids.is_empty() {
            p.unmap_grants(&ids);
        }
    }
}

struct Conn<R> {
    ring: BackRing<R, BlkifRequest, BlkifResponse>,
    map: MapId,
    port: u32,
    /// With `feature-persistent` negotiated.
    persistent: Option<PersistentGrants<R>>,
}

/// One request taken in a ring pass, waiting for its response.
#[derive(Clone, Copy, Debug)]
struct Pending {
    id: u64,
    operation: u8,
    status: i16,
    /// A flush after its data (FLUSH_DISKCACHE with segments).
    flush: bool,
    /// Its indirect segment list in [`Work::ind`]: (offset, count).
    ind: Option<(usize, usize)>,
}

/// The buffers of one ring pass, kept between passes (no allocation on
/// the data path once they have grown).
#[derive(Default)]
struct Work {
    reqs: Vec<Request>,
    pending: Vec<Pending>,
    /// The grant-copy batch, and which request each segment is for.
    batch: Vec<CopySeg>,
    owner: Vec<usize>,
    status: Vec<i16>,
    /// The indirect segment lists of the pass.
    ind: Vec<u8>,
    /// One request's segments.
    segs: Vec<BlkifRequestSegment>,
    /// The data of the pass, for a disk that is a device (no
    /// [`Storage::bytes`]): each request's range in turn, emptied once
    /// it passes [`STAGE_MAX`] and nothing queued refers to it.
    stage: Vec<u8>,
}

/// Bytes the staging buffer grows to before it is emptied (a request is
/// at most 256 x 4 KiB = 1 MiB).
const STAGE_MAX: usize = 4 << 20;

/// Where the data of disk requests lives: the disk's bytes, or the
/// staging buffer for a device.
fn local_mem<'a, S: Storage>(disk: &'a mut S, stage: &'a mut [u8]) -> &'a mut [u8] {
    match disk.bytes() {
        Some(b) => b,
        None => stage,
    }
}

/// The bytes `segs` cover, if every one is well-formed.
fn seg_total(segs: &[BlkifRequestSegment]) -> Option<u64> {
    segs.iter()
        .try_fold(0u64, |t, s| Some(t + u64::from(s.byte_len()?)))
}

/// One virtual block device: a disk, the domain it is given to and its
/// xenbus state.
pub struct Vbd<S, R> {
    fe: u16,
    devid: u32,
    disk: S,
    features: Features,
    state: u32,
    conn: Option<Conn<R>>,
    /// Offered to a live domain (false between [`Blkback::domain_gone`]
    /// and [`Blkback::domain_back`]).
    offered: bool,
    /// Disk name for `params`.
    name: String,
    /// Statistics.
    pub stats: VbdStats,
}

impl<S: Storage, R: SharedMem> Vbd<S, R> {
    /// The front-end domain.
    pub fn frontend(&self) -> u16 {
        self.fe
    }
    /// The device number (`virtual-device`).
    pub fn devid(&self) -> u32 {
        self.devid
    }
    /// The back end's xenbus state.
    pub fn state(&self) -> u32 {
        self.state
    }
    /// Whether it is offered to a live front-end domain.
    pub fn offered(&self) -> bool {
        self.offered
    }
    /// The disk.
    pub fn disk(&self) -> &S {
        &self.disk
    }
    /// Our port, while connected.
    pub fn port(&self) -> Option<u32> {
        self.conn.as_ref().map(|c| c.port)
    }
}

/// The block back end: every vbd of the service domain.
pub struct Blkback<S, R> {
    me: u16,
    vbds: Vec<Vbd<S, R>>,
    work: Work,
    /// Offer `feature-persistent`.
    persistent: bool,
}

/// The xenbus device number of `xvd<letter>` (`xvda` = 51712).
pub fn xvd(disk: u32) -> u32 {
    if disk < 16 {
        (202 << 8) | (disk << 4)
    } else {
        (1 << 28) | (disk << 8)
    }
}

fn fe_dir(fe: u16, devid: u32) -> String {
    format!("/local/domain/{fe}/device/vbd/{devid}")
}

fn be_dir(me: u16, fe: u16, devid: u32) -> String {
    format!("/local/domain/{me}/backend/vbd/{fe}/{devid}")
}

impl<S: Storage, R: SharedMem> Blkback<S, R> {
    /// A back end living in domain `me` (the `backend-id` front ends
    /// grant their pages to).
    pub fn new(me: u16) -> Self {
        Self {
            me,
            vbds: Vec::new(),
            work: Work::default(),
            persistent: true,
        }
    }

    /// Whether vbds offered from now on advertise `feature-persistent`
    /// (front ends that also offer it then get persistent grants). On by
    /// default: under icount they cost half the instructions per MiB
    /// written and 0.75x per MiB read of grant copy, and in guest time on a
    /// quiet host they moved 2.9x (writes) and 3x (reads) the MiB/s of
    /// grant copy (docs/figures.md).
    pub fn set_persistent(&mut self, on: bool) {
        self.persistent = on;
    }

    /// The vbds.
    pub fn vbds(&self) -> &[Vbd<S, R>] {
        &self.vbds
    }

    /// Our ports, one per connected vbd (what to wait on).
    pub fn ports(&self) -> Vec<u32> {
        self.vbds.iter().filter_map(|v| v.port()).collect()
    }

    /// Gives `disk` to domain `fe` as device `devid` (step 1 of the
    /// module doc); `name` goes to `params`.
    pub fn add_disk<P: Platform>(
        &mut self,
        svc: &mut StoreService<P>,
        fe: u16,
        devid: u32,
        disk: S,
        name: &str,
    ) -> Result<(), Errno> {
        if self.vbds.iter().any(|v| v.fe == fe && v.devid == devid) {
            return Err(xen_abi::EEXIST);
        }
        let features = Features {
            flush: true,
            discard: !disk.read_only() && disk.can_discard(),
            max_indirect: MAX_INDIRECT_SEGMENTS,
        };
        self.vbds.push(Vbd {
            fe,
            devid,
            disk,
            features,
            state: XenbusStateClosed,
            conn: None,
            offered: false,
            name: String::from(name),
            stats: VbdStats::default(),
        });
        let i = self.vbds.len() - 1;
        if let Err(e) = self.offer(svc, i) {
            self.vbds.pop();
            let _ = svc.rm(&be_dir(self.me, fe, devid));
            return Err(e);
        }
        Ok(())
    }

    /// Writes vbd `i`'s directories (front and back) and goes `InitWait`.
    fn offer<P: Platform>(&mut self, svc: &mut StoreService<P>, i: usize) -> Result<(), Errno> {
        let me = self.me;
        let v = &self.vbds[i];
        let (fe, devid) = (v.fe, v.devid);
        let fdir = fe_dir(fe, devid);
        let bdir = be_dir(me, fe, devid);
        let ss = v.disk.sector_size();
        let ro = v.disk.read_only();
        let info = if ro { VDISK_READONLY } else { 0 };
        let e = |_| xen_abi::EIO;
        // Owners first, so every child inherits the right permissions.
        svc.mkdir(&bdir).map_err(e)?;
        svc.set_perms(&bdir, &[&format!("n{me}"), &format!("r{fe}")])
            .map_err(e)?;
        let mut nodes: Vec<(&str, String)> = vec![
            ("frontend", fdir.clone()),
            ("frontend-id", format!("{fe}")),
            ("online", String::from("1")),
            ("params", v.name.clone()),
            ("type", String::from("phy")),
            ("mode", String::from(if ro { "r" } else { "w" })),
            (
                "sectors",
                format!("{}", v.disk.sectors() * u64::from(ss / 512)),
            ),
            ("sector-size", format!("{ss}")),
            ("physical-sector-size", format!("{ss}")),
            ("info", format!("{info}")),
            ("feature-flush-cache", String::from("1")),
            ("feature-barrier", String::from("0")),
            (
                "feature-persistent",
                String::from(if self.persistent { "1" } else { "0" }),
            ),
            (
                "feature-max-indirect-segments",
                format!("{}", v.features.max_indirect),
            ),
            ("max-ring-page-order", format!("{MAX_RING_PAGE_ORDER}")),
        ];
        if v.features.discard {
            nodes.push(("feature-discard", String::from("1")));
            nodes.push(("discard-granularity", format!("{ss}")));
            nodes.push(("discard-alignment", String::from("0")));
            nodes.push(("discard-secure", String::from("0")));
        }
        for (k, v) in &nodes {
            svc.write_node(&format!("{bdir}/{k}"), v).map_err(e)?;
        }
        svc.write_node(&format!("{bdir}/state"), "1").map_err(e)?;
        svc.mkdir(&fdir).map_err(e)?;
        svc.set_perms(&fdir, &[&format!("n{fe}"), &format!("r{me}")])
            .map_err(e)?;
        for (k, v) in [
            ("backend", bdir.clone()),
            ("backend-id", format!("{me}")),
            ("virtual-device", format!("{devid}")),
            ("device-type", String::from("disk")),
            ("state", String::from("1")),
        ] {
            svc.write_node(&format!("{fdir}/{k}"), &v).map_err(e)?;
        }
        svc.write_node(&format!("{bdir}/state"), "2").map_err(e)?;
        let v = &mut self.vbds[i];
        v.state = XenbusStateInitWait;
        v.offered = true;
        svc.platform().log(format_args!(
            "blkback: d{fe} vbd {devid} ({}) offered",
            v.name
        ));
        Ok(())
    }

    /// Domain `fe` is gone (the store released it): each of its vbds is
    /// disconnected (ring unmapped, port closed) and its back-end
    /// directory removed; the disks stay, for a new domain under the same
    /// id ([`Self::domain_back`]), as Xen keeps a rebooting guest's disks.
    pub fn domain_gone<P: Platform + BlkPlatform<Ring = R>>(
        &mut self,
        svc: &mut StoreService<P>,
        fe: u16,
    ) {
        for i in 0..self.vbds.len() {
            if self.vbds[i].fe != fe || !self.vbds[i].offered {
                continue;
            }
            self.disconnect(svc, i);
            let v = &mut self.vbds[i];
            v.offered = false;
            v.state = XenbusStateClosed;
            let _ = svc.rm(&be_dir(self.me, fe, v.devid));
            let devid = v.devid;
            svc.platform().log(format_args!(
                "blkback: d{fe} vbd {devid}: domain gone; disk kept"
            ));
        }
        let _ = svc.rm(&format!("/local/domain/{}/backend/vbd/{fe}", self.me));
    }

    /// A new domain under id `fe` (one that rebooted): offers it the vbds
    /// kept for that id.
    pub fn domain_back<P: Platform>(&mut self, svc: &mut StoreService<P>, fe: u16) {
        for i in 0..self.vbds.len() {
            if self.vbds[i].fe != fe || self.vbds[i].offered {
                continue;
            }
            if let Err(e) = self.offer(svc, i) {
                let devid = self.vbds[i].devid;
                svc.platform().log(format_args!(
                    "blkback: d{fe} vbd {devid}: offer failed: {e}"
                ));
            }
        }
    }

    /// Moves every vbd along after its front end's `state` (step 2-3 of
    /// the module doc); call after each store pump. Returns whether a
    /// state was written (the store then has watch events to deliver).
    pub fn sync<P: Platform + BlkPlatform<Ring = R>>(&mut self, svc: &mut StoreService<P>) -> bool {
        let mut wrote = false;
        for i in 0..self.vbds.len() {
            if self.vbds[i].offered {
                wrote |= self.sync_one(svc, i);
            }
        }
        wrote
    }

    fn set_state<P: Platform>(&mut self, svc: &mut StoreService<P>, i: usize, state: u32) -> bool {
        let v = &mut self.vbds[i];
        if v.state == state {
            return false;
        }
        v.state = state;
        let path = format!("{}/state", be_dir(self.me, v.fe, v.devid));
        let _ = svc.write_node(&path, &format!("{state}"));
        true
    }

    fn disconnect<P: Platform + BlkPlatform<Ring = R>>(
        &mut self,
        svc: &mut StoreService<P>,
        i: usize,
    ) {
        if let Some(c) = self.vbds[i].conn.take() {
            let Conn {
                ring,
                map,
                port,
                persistent,
            } = c;
            drop(ring);
            Platform::unbind(svc.platform(), port);
            svc.platform().unmap_ring(map);
            if let Some(mut pg) = persistent {
                pg.release(svc.platform());
            }
        }
    }

    fn sync_one<P: Platform + BlkPlatform<Ring = R>>(
        &mut self,
        svc: &mut StoreService<P>,
        i: usize,
    ) -> bool {
        let (fe, devid, state) = {
            let v = &self.vbds[i];
            (v.fe, v.devid, v.state)
        };
        let fdir = fe_dir(fe, devid);
        let fstate = read_u32(svc, &format!("{fdir}/state")).unwrap_or(XenbusStateUnknown);
        match xenbus::step(fstate, state) {
            Step::Reoffer => {
                svc.platform().log(format_args!(
                    "blkback: d{fe} vbd {devid}: front end reconnecting"
                ));
                self.set_state(svc, i, XenbusStateInitWait)
            }
            Step::Connect => match self.connect(svc, i) {
                Ok(()) => self.set_state(svc, i, XenbusStateConnected),
                Err(why) => {
                    svc.platform()
                        .log(format_args!("blkback: d{fe} vbd {devid}: {why}"));
                    let bdir = be_dir(self.me, fe, devid);
                    let _ = svc.write_node(&format!("{bdir}/error"), why);
                    self.set_state(svc, i, XenbusStateClosing)
                }
            },
            Step::Close => {
                self.disconnect(svc, i);
                self.set_state(svc, i, XenbusStateClosing)
            }
            Step::Closed => {
                self.disconnect(svc, i);
                self.set_state(svc, i, XenbusStateClosed)
            }
            Step::Stay => false,
        }
    }

    fn connect<P: Platform + BlkPlatform<Ring = R>>(
        &mut self,
        svc: &mut StoreService<P>,
        i: usize,
    ) -> Result<(), &'static str> {
        let (fe, devid) = (self.vbds[i].fe, self.vbds[i].devid);
        let fdir = fe_dir(fe, devid);
        match read_str(svc, &format!("{fdir}/protocol")).as_deref() {
            None | Some("x86_64-abi") => {}
            Some(_) => return Err("protocol not supported (x86_64-abi only)"),
        }
        let grefs: Vec<u32> = match read_u32(svc, &format!("{fdir}/ring-page-order")) {
            None => vec![read_u32(svc, &format!("{fdir}/ring-ref")).ok_or("no ring-ref")?],
            Some(o) if o <= MAX_RING_PAGE_ORDER => {
                let mut g = Vec::new();
                for n in 0..1u32 << o {
                    g.push(
                        read_u32(svc, &format!("{fdir}/ring-ref{n}")).ok_or("missing ring-refN")?,
                    );
                }
                g
            }
            Some(_) => return Err("ring-page-order too large"),
        };
        let remote = read_u32(svc, &format!("{fdir}/event-channel")).ok_or("no event-channel")?;
        let (mem, map) = svc
            .platform()
            .map_ring(fe, &grefs)
            .map_err(|_| "mapping the ring failed")?;
        let ring = match BackRing::new(mem) {
            Ok(r) => r,
            Err(_) => {
                svc.platform().unmap_ring(map);
                return Err("ring too small");
            }
        };
        let port = match Platform::bind(svc.platform(), fe, remote) {
            Ok(p) => p,
            Err(_) => {
                drop(ring);
                svc.platform().unmap_ring(map);
                return Err("binding event-channel failed");
            }
        };
        let persistent = self.persistent
            && read_u32(svc, &format!("{fdir}/feature-persistent")) == Some(1)
            && read_str(
                svc,
                &format!("{}/feature-persistent", be_dir(self.me, fe, devid)),
            )
            .as_deref()
                == Some("1");
        let v = &mut self.vbds[i];
        v.conn = Some(Conn {
            ring,
            map,
            port,
            persistent: persistent.then(|| PersistentGrants::new(MAX_PERSISTENT_GRANTS)),
        });
        v.stats.connects += 1;
        svc.platform().log(format_args!(
            "blkback: d{fe} vbd {devid} connected ({} ring pages, port {port}, {})",
            grefs.len(),
            if persistent {
                "persistent grants"
            } else {
                "grant copy"
            }
        ));
        Ok(())
    }

    /// Serves every connected ring (at most [`REQUESTS_PER_PUMP`]
    /// requests each); returns true if requests are left for the next
    /// call.
    pub fn pump<P: Platform + BlkPlatform<Ring = R>>(&mut self, svc: &mut StoreService<P>) -> bool {
        let mut more = false;
        for i in 0..self.vbds.len() {
            match self.pump_one(svc.platform(), i) {
                Ok(m) => more |= m,
                Err(e) => {
                    let v = &self.vbds[i];
                    let (fe, devid) = (v.fe, v.devid);
                    svc.platform().log(format_args!(
                        "blkback: d{fe} vbd {devid}: ring broken ({e:?}); disconnected"
                    ));
                    self.disconnect(svc, i);
                    self.set_state(svc, i, XenbusStateClosing);
                }
            }
        }
        more
    }

    fn pump_one<P: Platform + BlkPlatform<Ring = R>>(
        &mut self,
        p: &mut P,
        i: usize,
    ) -> Result<bool, RingError> {
        let Self { vbds, work, .. } = self;
        let Vbd {
            fe,
            disk,
            features,
            conn,
            stats,
            ..
        } = &mut vbds[i];
        let Some(conn) = conn.as_mut() else {
            return Ok(false);
        };
        let mut served = 0;
        let mut notify = false;
        loop {
            // One ring pass: take what the front end queued, serve it all
            // (the copies of every request batched), answer in order.
            work.reqs.clear();
            while served < REQUESTS_PER_PUMP {
                let Some(raw) = conn.ring.pop_request()? else {
                    break;
                };
                served += 1;
                work.reqs.push(parse(&raw, features));
            }
            if !work.reqs.is_empty() {
                serve_pass(p, *fe, disk, conn.persistent.as_mut(), work, stats);
                for q in &work.pending {
                    if q.status == BLKIF_RSP_OKAY {
                        stats.ok += 1;
                    } else {
                        stats.errors += 1;
                    }
                    conn.ring
                        .put_response(&response(q.id, q.operation, q.status))?;
                }
            }
            notify |= conn.ring.push_responses();
            if served >= REQUESTS_PER_PUMP {
                break;
            }
            if !conn.ring.final_check_for_requests()? {
                break;
            }
        }
        if notify {
            Platform::notify(p, conn.port);
        }
        Ok(served >= REQUESTS_PER_PUMP)
    }
}

fn response(id: u64, operation: u8, status: i16) -> BlkifResponse {
    BlkifResponse {
        id,
        operation,
        pad0: 0,
        status,
        pad1: 0,
    }
}

/// The disk byte range of `sectors` 512-byte sectors at `sector`, if it
/// is inside the disk and whole logical sectors.
fn disk_range<S: Storage>(disk: &S, sector: u64, sectors: u64) -> Option<(u64, u64)> {
    let ss = u64::from(disk.sector_size());
    let start = sector.checked_mul(512)?;
    let len = sectors.checked_mul(512)?;
    let end = start.checked_add(len)?;
    let size = disk.sectors().checked_mul(ss)?;
    (end <= size && start % ss == 0 && len % ss == 0).then_some((start, len))
}

/// Issues the grant-copy batch (one [`BlkPlatform::copy`]) between the
/// front end's grants and `local`; a segment that did not copy fails its
/// request.
#[allow(clippy::too_many_arguments)]
fn run_batch<P: BlkPlatform>(
    p: &mut P,
    fe: u16,
    local: &mut [u8],
    batch: &mut Vec<CopySeg>,
    owner: &mut Vec<usize>,
    status: &mut Vec<i16>,
    pending: &mut [Pending],
    stats: &mut VbdStats,
) {
    if batch.is_empty() {
        return;
    }
    status.clear();
    status.resize(batch.len(), 0);
    let whole = p.copy(fe, batch, local, status).is_ok();
    stats.copy_calls += 1;
    stats.copy_segs += batch.len() as u64;
    for (k, &q) in owner.iter().enumerate() {
        if (!whole || status[k] != 0)
            && let Some(q) = pending.get_mut(q)
        {
            q.status = BLKIF_RSP_ERROR;
        }
    }
    batch.clear();
    owner.clear();
}

/// Serves the requests of one ring pass (`w.reqs`), leaving one
/// [`Pending`] per request, in order, in `w.pending`. Data moves between
/// the granted pages and the disk's bytes directly: through persistent
/// grants when they are mapped (`pg`), otherwise by grant copy, the
/// segments of every request batched. Order is kept: the batch is issued
/// before anything else touches the disk (a flush, a discard, a
/// persistent-grant access), and the hypervisor copies a batch in order.
fn serve_pass<P: BlkPlatform, S: Storage>(
    p: &mut P,
    fe: u16,
    disk: &mut S,
    mut pg: Option<&mut PersistentGrants<P::Ring>>,
    w: &mut Work,
    stats: &mut VbdStats,
) {
    let Work {
        reqs,
        pending,
        batch,
        owner,
        status,
        ind,
        segs,
        stage,
    } = w;
    pending.clear();
    ind.clear();
    if let Some(pg) = pg.as_deref_mut() {
        pg.new_pass();
    }
    // 1. Every request's pending answer, and the indirect segment lists,
    // read once into our memory (never used in place: the front end could
    // change them under us), by one batch for the whole pass.
    for (k, req) in reqs.iter().enumerate() {
        let (id, operation, status, flush) = match req {
            Request::Bad {
                id,
                operation,
                status,
            } => (*id, *operation, *status, false),
            Request::Flush { id } => (*id, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_RSP_OKAY, false),
            Request::Discard { id, .. } => (*id, BLKIF_OP_DISCARD, BLKIF_RSP_OKAY, false),
            Request::Rw {
                id,
                operation,
                flush,
                ..
            } => (*id, *operation, BLKIF_RSP_OKAY, *flush),
        };
        let mut q = Pending {
            id,
            operation,
            status,
            flush,
            ind: None,
        };
        if let Request::Rw {
            indirect: Some((pages, n)),
            ..
        } = req
        {
            let bytes = n * 8;
            let at = ind.len();
            ind.resize(at + bytes, 0);
            q.ind = Some((at, *n));
            for (j, &gref) in pages.iter().enumerate() {
                let off = j * PAGE;
                let len = bytes.saturating_sub(off).min(PAGE);
                let mut mapped = false;
                let page = pg
                    .as_deref_mut()
                    .and_then(|g| g.get(p, fe, gref, &mut mapped));
                stats.persistent_maps += u64::from(mapped);
                match page {
                    Some(page) => page.read(0, &mut ind[at + off..at + off + len], 8),
                    None => {
                        batch.push(CopySeg {
                            gref,
                            offset: 0,
                            len: len as u16,
                            local: at + off,
                            dir: CopyDir::FromGuest,
                        });
                        owner.push(k);
                    }
                }
            }
        }
        pending.push(q);
    }
    run_batch(p, fe, ind, batch, owner, status, pending, stats);

    // 2. The data, in ring order.
    for (k, req) in reqs.iter().enumerate() {
        if pending[k].status != BLKIF_RSP_OKAY {
            continue;
        }
        let st = match req {
            Request::Bad { .. } => continue,
            Request::Flush { .. } => {
                let mem = local_mem(disk, stage);
                run_batch(p, fe, mem, batch, owner, status, pending, stats);
                disk.flush().is_ok()
            }
            Request::Discard {
                sector, nr_sectors, ..
            } => {
                let mem = local_mem(disk, stage);
                run_batch(p, fe, mem, batch, owner, status, pending, stats);
                match disk_range(disk, *sector, *nr_sectors) {
                    Some((off, len)) if !disk.read_only() => disk.discard(off, len).is_ok(),
                    _ => false,
                }
            }
            Request::Rw {
                write,
                sector,
                segs: direct,
                ..
            } => {
                if *write && disk.read_only() {
                    false
                } else {
                    segs.clear();
                    match pending[k].ind {
                        Some((at, n)) => {
                            segs.extend(ind[at..at + n * 8].chunks_exact(8).map(|c| {
                                BlkifRequestSegment::read_from_bytes(c).unwrap_or_default()
                            }))
                        }
                        None => segs.extend_from_slice(direct),
                    }
                    let range = seg_total(segs)
                        .and_then(|total| disk_range(disk, *sector, total / 512))
                        .and_then(|(start, len)| Some((start, usize::try_from(len).ok()?)));
                    match range {
                        None => false,
                        Some((start, len)) => {
                            if let Some(mem) = disk.bytes() {
                                usize::try_from(start).is_ok_and(|local| {
                                    queue_rw(
                                        p,
                                        fe,
                                        mem,
                                        local,
                                        pg.as_deref_mut(),
                                        *write,
                                        segs,
                                        k,
                                        batch,
                                        owner,
                                        status,
                                        pending,
                                        stats,
                                    )
                                })
                            } else {
                                staged_rw(
                                    p,
                                    fe,
                                    disk,
                                    stage,
                                    pg.as_deref_mut(),
                                    *write,
                                    (start, len),
                                    segs,
                                    k,
                                    batch,
                                    owner,
                                    status,
                                    pending,
                                    stats,
                                )
                            }
                        }
                    }
                }
            }
        };
        if !st {
            pending[k].status = BLKIF_RSP_ERROR;
        }
    }
    run_batch(
        p,
        fe,
        local_mem(disk, stage),
        batch,
        owner,
        status,
        pending,
        stats,
    );
    stage.clear();
    // 3. Flushes after their data (a device's writes went to it as each
    // request was served).
    for q in pending.iter_mut() {
        if q.flush && q.status == BLKIF_RSP_OKAY && disk.flush().is_err() {
            q.status = BLKIF_RSP_ERROR;
        }
    }
}

/// Moves one read or write's data (request `k` of the pass) between the
/// granted pages and `mem` from `local` on (the disk's bytes, or the
/// staging buffer), or queues it in the batch; false if a segment is out
/// of shape or `mem` too short (checked by the caller, so never).
#[allow(clippy::too_many_arguments)]
fn queue_rw<P: BlkPlatform>(
    p: &mut P,
    fe: u16,
    mem: &mut [u8],
    mut local: usize,
    mut pg: Option<&mut PersistentGrants<P::Ring>>,
    write: bool,
    segs: &[BlkifRequestSegment],
    k: usize,
    batch: &mut Vec<CopySeg>,
    owner: &mut Vec<usize>,
    status: &mut Vec<i16>,
    pending: &mut [Pending],
    stats: &mut VbdStats,
) -> bool {
    let dir = if write {
        CopyDir::FromGuest
    } else {
        CopyDir::ToGuest
    };
    for s in segs {
        let Some(len) = s.byte_len() else {
            return false;
        };
        let len = len as usize;
        let offset = usize::from(s.first_sect) * 512;
        let mut mapped = false;
        let page = pg
            .as_deref_mut()
            .and_then(|g| g.get(p, fe, s.gref, &mut mapped));
        stats.persistent_maps += u64::from(mapped);
        if let Some(page) = page {
            // Copies queued before come first.
            if !batch.is_empty() {
                run_batch(p, fe, mem, batch, owner, status, pending, stats);
            }
            let Some(bytes) = mem.get_mut(local..local + len) else {
                return false;
            };
            if write {
                page.read(offset, bytes, 8);
            } else {
                page.write(offset, bytes, 8);
            }
            stats.persistent_segs += 1;
        } else {
            if batch.len() >= COPY_BATCH {
                run_batch(p, fe, mem, batch, owner, status, pending, stats);
            }
            batch.push(CopySeg {
                gref: s.gref,
                offset: offset as u16,
                len: len as u16,
                local,
                dir,
            });
            owner.push(k);
        }
        local += len;
    }
    true
}

/// One read or write on a device disk (request `k`, `len` bytes at disk
/// offset `start`), through the staging buffer: a read is read from the
/// device at once and its copies to the front end are queued; a write's
/// copies from the front end are issued at once (with what was queued
/// before) and it goes to the device before the next request is served,
/// so requests reach the device in ring order.
#[allow(clippy::too_many_arguments)]
fn staged_rw<P: BlkPlatform, S: Storage>(
    p: &mut P,
    fe: u16,
    disk: &mut S,
    stage: &mut Vec<u8>,
    pg: Option<&mut PersistentGrants<P::Ring>>,
    write: bool,
    (start, len): (u64, usize),
    segs: &[BlkifRequestSegment],
    k: usize,
    batch: &mut Vec<CopySeg>,
    owner: &mut Vec<usize>,
    status: &mut Vec<i16>,
    pending: &mut [Pending],
    stats: &mut VbdStats,
) -> bool {
    if stage.len().saturating_add(len) > STAGE_MAX {
        run_batch(p, fe, stage, batch, owner, status, pending, stats);
        stage.clear();
    }
    let at = stage.len();
    stage.resize(at + len, 0);
    if !write && disk.read(start, &mut stage[at..at + len]).is_err() {
        return false;
    }
    if !queue_rw(
        p, fe, stage, at, pg, write, segs, k, batch, owner, status, pending, stats,
    ) {
        return false;
    }
    if write {
        run_batch(p, fe, stage, batch, owner, status, pending, stats);
        if pending[k].status != BLKIF_RSP_OKAY {
            return false;
        }
        return disk.write(start, &stage[at..at + len]).is_ok();
    }
    true
}
