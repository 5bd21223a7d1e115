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
//! (see [`parse`]); data moves with grant copy ([`BlkPlatform::copy`]),
//! all the segments of a request in one call, through a bounce buffer,
//! to and from a [`Storage`]. Anything wrong with a request gets
//! `BLKIF_RSP_ERROR` (unknown operations `BLKIF_RSP_EOPNOTSUPP`); a ring
//! whose indices are impossible stops that vbd (`Closing`) and no other.

// Xen's names for the xenbus states.
#![allow(non_upper_case_globals)]

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
/// The guest page size.
const PAGE: usize = 4096;

/// A failed disk operation (answered `BLKIF_RSP_ERROR`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoError;

/// A disk as the back end sees it. Offsets and lengths are bytes, always
/// whole sectors of [`Storage::sector_size`] and inside the disk (the
/// back end checks before calling).
pub trait Storage {
    /// Logical sector size in bytes (512 or 4096).
    fn sector_size(&self) -> u32;
    /// Size in logical sectors.
    fn sectors(&self) -> u64;
    /// Whether writes are refused.
    fn read_only(&self) -> bool;
    /// Reads `buf.len()` bytes at `offset`.
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), IoError>;
    /// Writes `buf` at `offset`.
    fn write(&mut self, offset: u64, buf: &[u8]) -> Result<(), IoError>;
    /// Makes earlier writes durable.
    fn flush(&mut self) -> Result<(), IoError>;
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

/// One grant copy between a guest page and the bounce buffer: `len`
/// bytes at `offset` in the page granted by `gref`, and at `local` in the
/// buffer. `offset + len` never passes the guest page (checked before).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopySeg {
    /// The guest's grant.
    pub gref: u32,
    /// Offset in the granted page.
    pub offset: u16,
    /// Bytes (1..=4096).
    pub len: u16,
    /// Offset in the local buffer.
    pub local: usize,
}

/// Which way a batch of [`CopySeg`]s moves data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyDir {
    /// Guest pages to the buffer (a write, indirect pages).
    FromGuest,
    /// The buffer to guest pages (a read).
    ToGuest,
}

/// Handle of a mapped ring, given back to [`BlkPlatform::unmap_ring`].
pub type MapId = u32;

/// What the block back end needs of the hypervisor besides
/// [`Platform`]'s event channels.
pub trait BlkPlatform {
    /// The mapped ring pages, contiguous.
    type Ring: SharedMem;
    /// Maps the front end's ring pages `grefs` (granted by `domid`)
    /// contiguously, writable.
    fn map_ring(&mut self, domid: u16, grefs: &[u32]) -> Result<(Self::Ring, MapId), Errno>;
    /// Unmaps a ring (the caller dropped every use of it first).
    fn unmap_ring(&mut self, id: MapId);
    /// Grant copies (`GNTTABOP_copy`), as few hypercalls as possible;
    /// `Ok` only if every segment was copied.
    fn copy(
        &mut self,
        domid: u16,
        dir: CopyDir,
        segs: &[CopySeg],
        buf: &mut [u8],
    ) -> Result<(), Errno>;
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
}

struct Conn<R> {
    ring: BackRing<R, BlkifRequest, BlkifResponse>,
    map: MapId,
    port: u32,
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
    bounce: Vec<u8>,
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
            bounce: Vec::new(),
        }
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
            discard: !disk.read_only(),
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
            ("feature-persistent", String::from("0")),
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
            let Conn { ring, map, port } = c;
            drop(ring);
            Platform::unbind(svc.platform(), port);
            svc.platform().unmap_ring(map);
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
        let v = &mut self.vbds[i];
        v.conn = Some(Conn { ring, map, port });
        v.stats.connects += 1;
        svc.platform().log(format_args!(
            "blkback: d{fe} vbd {devid} connected ({} ring pages, port {port})",
            grefs.len()
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
        let Self { vbds, bounce, .. } = self;
        let v = &mut vbds[i];
        let Some(conn) = v.conn.as_mut() else {
            return Ok(false);
        };
        let mut served = 0;
        let mut notify = false;
        loop {
            while served < REQUESTS_PER_PUMP {
                let Some(raw) = conn.ring.pop_request()? else {
                    break;
                };
                served += 1;
                let req = parse(&raw, &v.features);
                let rsp = serve(p, v.fe, &mut v.disk, bounce, req);
                if rsp.status == BLKIF_RSP_OKAY {
                    v.stats.ok += 1;
                } else {
                    v.stats.errors += 1;
                }
                conn.ring.put_response(&rsp)?;
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

/// Serves one request; every path ends in a response.
fn serve<P: BlkPlatform, S: Storage>(
    p: &mut P,
    fe: u16,
    disk: &mut S,
    bounce: &mut Vec<u8>,
    req: Request,
) -> BlkifResponse {
    match req {
        Request::Bad {
            id,
            operation,
            status,
        } => response(id, operation, status),
        Request::Flush { id } => {
            let st = if disk.flush().is_ok() {
                BLKIF_RSP_OKAY
            } else {
                BLKIF_RSP_ERROR
            };
            response(id, BLKIF_OP_FLUSH_DISKCACHE, st)
        }
        Request::Discard {
            id,
            sector,
            nr_sectors,
        } => {
            let st = match disk_range(disk, sector, nr_sectors) {
                Some((off, len)) if !disk.read_only() && disk.discard(off, len).is_ok() => {
                    BLKIF_RSP_OKAY
                }
                _ => BLKIF_RSP_ERROR,
            };
            response(id, BLKIF_OP_DISCARD, st)
        }
        Request::Rw {
            id,
            operation,
            write,
            flush,
            sector,
            segs,
            indirect,
        } => {
            let st = if write && disk.read_only() {
                BLKIF_RSP_ERROR
            } else {
                match rw(p, fe, disk, bounce, write, sector, segs, indirect) {
                    Ok(()) if flush && disk.flush().is_err() => BLKIF_RSP_ERROR,
                    Ok(()) => BLKIF_RSP_OKAY,
                    Err(IoError) => BLKIF_RSP_ERROR,
                }
            };
            response(id, operation, st)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn rw<P: BlkPlatform, S: Storage>(
    p: &mut P,
    fe: u16,
    disk: &mut S,
    bounce: &mut Vec<u8>,
    write: bool,
    sector: u64,
    mut segs: Vec<BlkifRequestSegment>,
    indirect: Option<(Vec<u32>, usize)>,
) -> Result<(), IoError> {
    if let Some((pages, n)) = indirect {
        // The segment pages, copied (never mapped: the guest could change
        // them under us).
        let bytes = n * 8;
        bounce.resize(bytes.max(bounce.len()), 0);
        let copies: Vec<CopySeg> = pages
            .iter()
            .enumerate()
            .map(|(k, &gref)| CopySeg {
                gref,
                offset: 0,
                len: (bytes - k * PAGE).min(PAGE) as u16,
                local: k * PAGE,
            })
            .collect();
        p.copy(fe, CopyDir::FromGuest, &copies, &mut bounce[..bytes])
            .map_err(|_| IoError)?;
        segs = bounce[..bytes]
            .chunks_exact(8)
            .map(|c| BlkifRequestSegment::read_from_bytes(c).unwrap_or_default())
            .collect();
        if segs.iter().any(|s| s.byte_len().is_none()) {
            return Err(IoError);
        }
    }
    let mut copies = Vec::with_capacity(segs.len());
    let mut total = 0usize;
    for s in &segs {
        let len = s.byte_len().ok_or(IoError)? as usize;
        copies.push(CopySeg {
            gref: s.gref,
            offset: u16::from(s.first_sect) * 512,
            len: len as u16,
            local: total,
        });
        total += len;
    }
    let (off, len) = disk_range(disk, sector, total as u64 / 512).ok_or(IoError)?;
    debug_assert_eq!(len as usize, total);
    if bounce.len() < total {
        bounce.resize(total, 0);
    }
    let buf = &mut bounce[..total];
    if write {
        p.copy(fe, CopyDir::FromGuest, &copies, buf)
            .map_err(|_| IoError)?;
        disk.write(off, buf)
    } else {
        disk.read(off, buf)?;
        p.copy(fe, CopyDir::ToGuest, &copies, buf)
            .map_err(|_| IoError)
    }
}
