//! The block back end on a mock hypervisor: guest pages on the heap,
//! grants in a table, grant copies recorded. The front end is simulated
//! as Linux's blkfront behaves: it writes its keys to the store, drives a
//! `FrontRing` and reads responses.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use pv_rings::{FrontRing, HeapPage, RawMem, SharedMem};
use service_domain::blkback::*;
use service_domain::{DomainInfo, Platform, StoreService};
use xen_abi::io::blkif::*;
use zerocopy::IntoBytes;

const ME: u16 = 1;
const XVDA: u32 = 51712;

/// A granted page and whether the grant is read-only.
type Grant = (&'static HeapPage, bool);

#[derive(Default)]
struct World {
    /// (domain, gref) -> page, read-only grant.
    grants: BTreeMap<(u16, u32), Grant>,
    /// (domain, first gref) -> ring pages.
    rings: BTreeMap<(u16, u32), (&'static HeapPage, usize)>,
    mapped: BTreeMap<MapId, (u16, u32)>,
    next_map: MapId,
    bound: BTreeMap<u32, (u16, u32)>,
    next_port: u32,
    notified: Vec<u32>,
    /// (calls, segments) of grant copies.
    copy_calls: u32,
    copy_segs: u32,
    /// Persistent grants mapped: id -> (domain, gref); maps made, unmaps.
    pmapped: BTreeMap<MapId, (u16, u32)>,
    pmaps: u32,
    punmaps: u32,
    log: Vec<String>,
}

#[derive(Clone, Default)]
struct Mock(Rc<RefCell<World>>);

impl Platform for Mock {
    type Mem = RawMem<'static>;
    fn map_store(&mut self, _: u16) -> Result<Self::Mem, i32> {
        Err(xen_abi::EINVAL)
    }
    fn unmap_store(&mut self, _: u16) {}
    fn bind(&mut self, domid: u16, remote: u32) -> Result<u32, i32> {
        let mut w = self.0.borrow_mut();
        if remote == 0 || remote > 100 {
            return Err(xen_abi::EINVAL);
        }
        w.next_port += 1;
        let p = w.next_port;
        w.bound.insert(p, (domid, remote));
        Ok(p)
    }
    fn unbind(&mut self, port: u32) {
        self.0.borrow_mut().bound.remove(&port);
    }
    fn notify(&mut self, port: u32) {
        self.0.borrow_mut().notified.push(port);
    }
    fn domain_info(&mut self, _: u16) -> Result<Option<DomainInfo>, i32> {
        Ok(None)
    }
    fn log(&mut self, line: core::fmt::Arguments<'_>) {
        self.0.borrow_mut().log.push(line.to_string());
    }
}

impl BlkPlatform for Mock {
    type Ring = RawMem<'static>;
    fn map_ring(&mut self, domid: u16, grefs: &[u32]) -> Result<(Self::Ring, MapId), i32> {
        let mut w = self.0.borrow_mut();
        let (page, n) = *w.rings.get(&(domid, grefs[0])).ok_or(xen_abi::EINVAL)?;
        if n != grefs.len() {
            return Err(xen_abi::EINVAL);
        }
        w.next_map += 1;
        let id = w.next_map;
        w.mapped.insert(id, (domid, grefs[0]));
        Ok((page.mem(), id))
    }
    fn unmap_ring(&mut self, id: MapId) {
        assert!(self.0.borrow_mut().mapped.remove(&id).is_some());
    }
    fn map_grant(&mut self, domid: u16, gref: u32) -> Result<(Self::Ring, MapId), i32> {
        let mut w = self.0.borrow_mut();
        // A writable map of a read-only grant fails, as on Xen.
        let page = match w.grants.get(&(domid, gref)) {
            Some(&(page, false)) => page,
            _ => return Err(xen_abi::EINVAL),
        };
        w.next_map += 1;
        let id = w.next_map;
        w.pmapped.insert(id, (domid, gref));
        w.pmaps += 1;
        Ok((page.mem(), id))
    }
    fn unmap_grants(&mut self, ids: &[MapId]) {
        let mut w = self.0.borrow_mut();
        for id in ids {
            assert!(w.pmapped.remove(id).is_some(), "unmap of {id}: not mapped");
            w.punmaps += 1;
        }
    }
    fn copy(
        &mut self,
        domid: u16,
        segs: &[CopySeg],
        local: &mut [u8],
        status: &mut [i16],
    ) -> Result<(), i32> {
        let mut w = self.0.borrow_mut();
        assert!(segs.len() <= COPY_BATCH, "batch of {}", segs.len());
        assert_eq!(segs.len(), status.len());
        w.copy_calls += 1;
        w.copy_segs += segs.len() as u32;
        for (s, st) in segs.iter().zip(status.iter_mut()) {
            let (off, len) = (usize::from(s.offset), usize::from(s.len));
            assert!(off + len <= 4096, "copy past the guest page: {s:?}");
            let Some(&(page, ro)) = w.grants.get(&(domid, s.gref)) else {
                *st = -1;
                continue;
            };
            let local = &mut local[s.local..s.local + len];
            match s.dir {
                CopyDir::FromGuest => page.mem().read(off, local, 1),
                CopyDir::ToGuest if ro => *st = -1,
                CopyDir::ToGuest => page.mem().write(off, local, 1),
            }
        }
        Ok(())
    }
}

/// What a device disk was asked to do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum DevOp {
    Read(u64, usize),
    Write(u64, usize),
    Flush,
}

/// A disk for the tests: the boot module's kind (bytes in memory, moved
/// in place) or, with `dev` set, a device's (no [`Storage::bytes`]: the
/// back end reads and writes through [`Storage::read`]/[`Storage::write`],
/// recorded in `dev` with the flushes).
struct TestDisk {
    mem: MemDisk<Vec<u8>>,
    dev: Option<Rc<RefCell<Vec<DevOp>>>>,
}

impl TestDisk {
    fn mem(d: MemDisk<Vec<u8>>) -> Self {
        Self { mem: d, dev: None }
    }
    fn data(&self) -> &[u8] {
        self.mem.data()
    }
}

impl Storage for TestDisk {
    fn sector_size(&self) -> u32 {
        self.mem.sector_size()
    }
    fn sectors(&self) -> u64 {
        self.mem.sectors()
    }
    fn read_only(&self) -> bool {
        self.mem.read_only()
    }
    fn bytes(&mut self) -> Option<&mut [u8]> {
        match self.dev {
            Some(_) => None,
            None => self.mem.bytes(),
        }
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        if let Some(d) = &self.dev {
            d.borrow_mut().push(DevOp::Read(offset, buf.len()));
        }
        self.mem.read(offset, buf)
    }
    fn write(&mut self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        if let Some(d) = &self.dev {
            d.borrow_mut().push(DevOp::Write(offset, buf.len()));
        }
        self.mem.write(offset, buf)
    }
    fn flush(&mut self) -> Result<(), IoError> {
        if let Some(d) = &self.dev {
            d.borrow_mut().push(DevOp::Flush);
        }
        self.mem.flush()
    }
    fn can_discard(&self) -> bool {
        self.dev.is_none()
    }
    fn discard(&mut self, offset: u64, len: u64) -> Result<(), IoError> {
        self.mem.discard(offset, len)
    }
}

type Bb = Blkback<TestDisk, RawMem<'static>>;
type Front = FrontRing<RawMem<'static>, BlkifRequest, BlkifResponse>;

struct Env {
    w: Mock,
    svc: StoreService<Mock>,
    bb: Bb,
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i * 7 + usize::from(seed) * 13 + i / 511) as u8)
        .collect()
}

impl Env {
    fn new() -> Self {
        let w = Mock::default();
        Self {
            svc: StoreService::new(w.clone()),
            bb: Blkback::new(ME),
            w,
        }
    }

    fn disk(&mut self, fe: u16, bytes: usize, ss: u32, ro: bool) {
        let d = TestDisk::mem(MemDisk::new(pattern(bytes, 1), ss, ro).unwrap());
        self.bb
            .add_disk(&mut self.svc, fe, XVDA, d, "disk.img")
            .unwrap();
    }

    fn read(&mut self, path: &str) -> Option<String> {
        self.svc
            .read(path)
            .ok()
            .map(|v| String::from_utf8(v).unwrap())
    }

    fn be(&mut self, fe: u16, key: &str) -> Option<String> {
        self.read(&format!("/local/domain/{ME}/backend/vbd/{fe}/{XVDA}/{key}"))
    }

    fn fe_write(&mut self, fe: u16, key: &str, v: &str) {
        self.svc
            .write_node(&format!("/local/domain/{fe}/device/vbd/{XVDA}/{key}"), v)
            .unwrap();
    }

    /// The front end's half of the handshake: a ring of 2^order pages
    /// granted as `gref0..`, its keys, then Initialised.
    fn connect(&mut self, fe: u16, order: Option<u32>, gref0: u32) -> Front {
        let pages = 1usize << order.unwrap_or(0);
        let page: &'static HeapPage = Box::leak(Box::new(HeapPage::new(pages)));
        self.w
            .0
            .borrow_mut()
            .rings
            .insert((fe, gref0), (page, pages));
        match order {
            None => self.fe_write(fe, "ring-ref", &gref0.to_string()),
            Some(o) => {
                self.fe_write(fe, "ring-page-order", &o.to_string());
                for n in 0..pages as u32 {
                    self.fe_write(fe, &format!("ring-ref{n}"), &(gref0 + n).to_string());
                }
            }
        }
        self.fe_write(fe, "event-channel", "9");
        self.fe_write(fe, "protocol", "x86_64-abi");
        self.fe_write(fe, "state", "3");
        self.bb.sync(&mut self.svc);
        FrontRing::init(page.mem()).unwrap()
    }

    fn grant(&mut self, fe: u16, gref: u32, data: &[u8], ro: bool) {
        let p: &'static HeapPage = Box::leak(Box::new(HeapPage::one()));
        p.mem().write(0, data, 1);
        self.w.0.borrow_mut().grants.insert((fe, gref), (p, ro));
    }

    fn page(&self, fe: u16, gref: u32) -> Vec<u8> {
        let mut v = vec![0u8; 4096];
        self.w.0.borrow().grants[&(fe, gref)]
            .0
            .mem()
            .read(0, &mut v, 1);
        v
    }

    /// Submits requests and returns the responses.
    fn submit(&mut self, f: &mut Front, reqs: &[BlkifRequest]) -> Vec<BlkifResponse> {
        for r in reqs {
            f.put_request(r).unwrap();
        }
        let _ = f.push_requests();
        while self.bb.pump(&mut self.svc) {}
        let mut out = Vec::new();
        while let Some(r) = f.pop_response().unwrap() {
            out.push(r);
        }
        out
    }

    fn one(&mut self, f: &mut Front, r: BlkifRequest) -> i16 {
        let rsp = self.submit(f, &[r]);
        assert_eq!(rsp.len(), 1);
        assert_eq!(rsp[0].id, r.id);
        rsp[0].status
    }

    fn disk_bytes(&self, i: usize) -> Vec<u8> {
        self.bb.vbds()[i].disk().data().to_vec()
    }
}

fn seg(gref: u32, first: u8, last: u8) -> BlkifRequestSegment {
    BlkifRequestSegment {
        gref,
        first_sect: first,
        last_sect: last,
        pad: [0; 2],
    }
}

fn rw(op: u8, id: u64, sector: u64, segs: &[BlkifRequestSegment]) -> BlkifRequest {
    let mut r = BlkifRequest {
        operation: op,
        nr_segments: segs.len() as u8,
        handle: XVDA as u16,
        id,
        sector_number: sector,
        ..Default::default()
    };
    r.seg[..segs.len()].copy_from_slice(segs);
    r
}

#[test]
fn xvd_numbers() {
    assert_eq!(xvd(0), 51712);
    assert_eq!(xvd(1), 51728);
    assert_eq!(xvd(16), (1 << 28) | (16 << 8));
}

#[test]
fn handshake_writes_both_directories_with_owners() {
    let mut e = Env::new();
    e.disk(2, 1 << 20, 512, false);
    let b = format!("/local/domain/{ME}/backend/vbd/2/{XVDA}");
    let f = format!("/local/domain/2/device/vbd/{XVDA}");
    assert_eq!(e.be(2, "state").as_deref(), Some("2"));
    assert_eq!(e.be(2, "frontend"), Some(f.clone()));
    assert_eq!(e.be(2, "frontend-id").as_deref(), Some("2"));
    assert_eq!(e.be(2, "online").as_deref(), Some("1"));
    assert_eq!(e.be(2, "sectors").as_deref(), Some("2048"));
    assert_eq!(e.be(2, "sector-size").as_deref(), Some("512"));
    assert_eq!(e.be(2, "physical-sector-size").as_deref(), Some("512"));
    assert_eq!(e.be(2, "info").as_deref(), Some("0"));
    assert_eq!(e.be(2, "mode").as_deref(), Some("w"));
    assert_eq!(e.be(2, "feature-flush-cache").as_deref(), Some("1"));
    assert_eq!(e.be(2, "feature-discard").as_deref(), Some("1"));
    assert_eq!(
        e.be(2, "feature-max-indirect-segments").as_deref(),
        Some("256")
    );
    assert_eq!(e.be(2, "max-ring-page-order").as_deref(), Some("4"));
    assert_eq!(e.read(&format!("{f}/backend")), Some(b.clone()));
    assert_eq!(e.read(&format!("{f}/backend-id")).as_deref(), Some("1"));
    assert_eq!(e.read(&format!("{f}/state")).as_deref(), Some("1"));
    assert_eq!(
        e.read(&format!("{f}/virtual-device")).as_deref(),
        Some("51712")
    );
    assert_eq!(e.read(&format!("{f}/device-type")).as_deref(), Some("disk"));
    assert_eq!(e.svc.get_perms(&b).unwrap(), ["n1", "r2"]);
    assert_eq!(
        e.svc.get_perms(&format!("{b}/sectors")).unwrap(),
        ["n1", "r2"]
    );
    assert_eq!(e.svc.get_perms(&f).unwrap(), ["n2", "r1"]);
    assert_eq!(
        e.svc.get_perms(&format!("{f}/state")).unwrap(),
        ["n2", "r1"]
    );
    // The same device twice is refused.
    let d = TestDisk::mem(MemDisk::new(vec![0; 4096], 512, false).unwrap());
    assert_eq!(
        e.bb.add_disk(&mut e.svc, 2, XVDA, d, "x"),
        Err(xen_abi::EEXIST)
    );
}

#[test]
fn read_write_flush_discard_round_trip() {
    let mut e = Env::new();
    e.disk(2, 1 << 20, 512, false);
    let mut f = e.connect(2, None, 10);
    assert_eq!(e.be(2, "state").as_deref(), Some("4"));
    assert_eq!(e.bb.ports().len(), 1);
    // Write 1.5 pages at sector 100: a whole page and sectors 2-5 of another.
    let data = pattern(4096, 9);
    e.grant(2, 100, &data, true);
    e.grant(2, 101, &data, true);
    let s = e.one(
        &mut f,
        rw(BLKIF_OP_WRITE, 1, 100, &[seg(100, 0, 7), seg(101, 2, 5)]),
    );
    assert_eq!(s, BLKIF_RSP_OKAY);
    let disk = e.disk_bytes(0);
    assert_eq!(&disk[100 * 512..108 * 512], &data[..]);
    assert_eq!(&disk[108 * 512..112 * 512], &data[1024..3072]);
    assert_eq!(
        &disk[112 * 512..113 * 512],
        &pattern(1 << 20, 1)[112 * 512..113 * 512]
    );
    // All the segments of a request in one copy call.
    assert_eq!(
        (e.w.0.borrow().copy_calls, e.w.0.borrow().copy_segs),
        (1, 2)
    );
    // Read it back into fresh pages, at other offsets.
    e.grant(2, 200, &[], false);
    e.grant(2, 201, &[], false);
    let s = e.one(
        &mut f,
        rw(BLKIF_OP_READ, 2, 104, &[seg(200, 1, 7), seg(201, 0, 0)]),
    );
    assert_eq!(s, BLKIF_RSP_OKAY);
    assert_eq!(&e.page(2, 200)[512..4096], &disk[104 * 512..111 * 512]);
    assert_eq!(&e.page(2, 200)[..512], &[0; 512]);
    assert_eq!(&e.page(2, 201)[..512], &disk[111 * 512..112 * 512]);
    // Flush with and without data.
    let s = e.one(&mut f, rw(BLKIF_OP_FLUSH_DISKCACHE, 3, 0, &[]));
    assert_eq!(s, BLKIF_RSP_OKAY);
    let s = e.one(
        &mut f,
        rw(BLKIF_OP_FLUSH_DISKCACHE, 4, 0, &[seg(100, 0, 0)]),
    );
    assert_eq!(s, BLKIF_RSP_OKAY);
    assert_eq!(&e.disk_bytes(0)[..512], &data[..512]);
    // Discard zeroes (our MemDisk) the range.
    let mut d = BlkifRequestDiscard {
        operation: BLKIF_OP_DISCARD,
        id: 5,
        sector_number: 100,
        nr_sectors: 8,
        ..Default::default()
    };
    let mut r = BlkifRequest::default();
    r.as_mut_bytes()[..32].copy_from_slice(d.as_bytes());
    assert_eq!(e.one(&mut f, r), BLKIF_RSP_OKAY);
    assert_eq!(&e.disk_bytes(0)[100 * 512..108 * 512], &[0; 4096]);
    d.sector_number = 2047;
    d.nr_sectors = 2;
    r.as_mut_bytes()[..32].copy_from_slice(d.as_bytes());
    assert_eq!(e.one(&mut f, r), BLKIF_RSP_ERROR);
    let st = e.bb.vbds()[0].stats;
    assert_eq!((st.ok, st.errors, st.connects), (5, 1, 1));
}

#[test]
fn read_only_disk_refuses_writes() {
    let mut e = Env::new();
    e.disk(2, 64 * 1024, 512, true);
    assert_eq!(e.be(2, "mode").as_deref(), Some("r"));
    assert_eq!(e.be(2, "info").as_deref(), Some("4"));
    assert_eq!(e.be(2, "feature-discard"), None);
    let mut f = e.connect(2, None, 10);
    e.grant(2, 100, &[0xAA; 4096], false);
    let before = e.disk_bytes(0);
    let s = e.one(&mut f, rw(BLKIF_OP_WRITE, 1, 0, &[seg(100, 0, 7)]));
    assert_eq!(s, BLKIF_RSP_ERROR);
    let s = e.one(
        &mut f,
        rw(BLKIF_OP_FLUSH_DISKCACHE, 2, 0, &[seg(100, 0, 7)]),
    );
    assert_eq!(s, BLKIF_RSP_ERROR);
    assert_eq!(e.disk_bytes(0), before);
    let s = e.one(&mut f, rw(BLKIF_OP_READ, 3, 8, &[seg(100, 0, 7)]));
    assert_eq!(s, BLKIF_RSP_OKAY);
    assert_eq!(&e.page(2, 100)[..], &before[4096..8192]);
    let r = BlkifRequest {
        operation: BLKIF_OP_DISCARD,
        id: 4,
        ..Default::default()
    };
    assert_eq!(e.one(&mut f, r), BLKIF_RSP_EOPNOTSUPP);
}

#[test]
fn sector_size_4096() {
    let mut e = Env::new();
    e.disk(2, 1 << 20, 4096, false);
    assert_eq!(e.be(2, "sector-size").as_deref(), Some("4096"));
    // `sectors` is always in 512-byte units.
    assert_eq!(e.be(2, "sectors").as_deref(), Some("2048"));
    let mut f = e.connect(2, None, 10);
    e.grant(2, 100, &[], false);
    // Whole 4 KiB sectors work; a start or a length off the 4 KiB grid not.
    assert_eq!(
        e.one(&mut f, rw(BLKIF_OP_READ, 1, 8, &[seg(100, 0, 7)])),
        BLKIF_RSP_OKAY
    );
    assert_eq!(&e.page(2, 100)[..], &e.disk_bytes(0)[4096..8192]);
    assert_eq!(
        e.one(&mut f, rw(BLKIF_OP_READ, 2, 1, &[seg(100, 0, 7)])),
        BLKIF_RSP_ERROR
    );
    assert_eq!(
        e.one(&mut f, rw(BLKIF_OP_READ, 3, 8, &[seg(100, 0, 3)])),
        BLKIF_RSP_ERROR
    );
    assert_eq!(
        e.one(&mut f, rw(BLKIF_OP_READ, 4, 2040, &[seg(100, 0, 7)])),
        BLKIF_RSP_OKAY
    );
    assert_eq!(
        e.one(&mut f, rw(BLKIF_OP_READ, 5, 2048, &[seg(100, 0, 7)])),
        BLKIF_RSP_ERROR
    );
}

#[test]
fn hostile_requests_get_errors_and_service_goes_on() {
    let mut e = Env::new();
    e.disk(2, 1 << 20, 512, false);
    let mut f = e.connect(2, None, 10);
    e.grant(2, 100, &[], false);
    e.grant(2, 101, &[1; 4096], true);
    let good = rw(BLKIF_OP_READ, 99, 0, &[seg(100, 0, 7)]);
    let mut over = rw(BLKIF_OP_READ, 1, 0, &[seg(100, 0, 7)]);
    over.nr_segments = 12;
    let mut max = over;
    max.nr_segments = 255;
    max.id = 2;
    let cases: Vec<(BlkifRequest, i16)> = vec![
        (over, BLKIF_RSP_ERROR),
        (max, BLKIF_RSP_ERROR),
        (rw(BLKIF_OP_READ, 3, 0, &[]), BLKIF_RSP_ERROR),
        (rw(BLKIF_OP_WRITE, 4, 0, &[]), BLKIF_RSP_ERROR),
        (rw(BLKIF_OP_READ, 5, 0, &[seg(100, 4, 3)]), BLKIF_RSP_ERROR),
        (rw(BLKIF_OP_READ, 6, 0, &[seg(100, 0, 8)]), BLKIF_RSP_ERROR),
        (
            rw(BLKIF_OP_READ, 7, 0, &[seg(100, 255, 255)]),
            BLKIF_RSP_ERROR,
        ),
        (
            rw(BLKIF_OP_READ, 8, 2041, &[seg(100, 0, 7)]),
            BLKIF_RSP_ERROR,
        ),
        (
            rw(BLKIF_OP_READ, 9, u64::MAX, &[seg(100, 0, 7)]),
            BLKIF_RSP_ERROR,
        ),
        (
            rw(BLKIF_OP_READ, 10, u64::MAX / 512, &[seg(100, 0, 0)]),
            BLKIF_RSP_ERROR,
        ),
        (
            rw(BLKIF_OP_READ, 11, 0, &[seg(12345, 0, 7)]),
            BLKIF_RSP_ERROR,
        ),
        // A read into a page granted read-only.
        (rw(BLKIF_OP_READ, 12, 0, &[seg(101, 0, 7)]), BLKIF_RSP_ERROR),
        (
            rw(BLKIF_OP_WRITE_BARRIER, 13, 0, &[seg(100, 0, 7)]),
            BLKIF_RSP_EOPNOTSUPP,
        ),
        (rw(BLKIF_OP_RESERVED_1, 14, 0, &[]), BLKIF_RSP_EOPNOTSUPP),
        (rw(200, 15, 0, &[]), BLKIF_RSP_EOPNOTSUPP),
        // The same id twice: each is answered.
        (rw(BLKIF_OP_READ, 16, 0, &[seg(100, 0, 7)]), BLKIF_RSP_OKAY),
        (rw(BLKIF_OP_READ, 16, 8, &[seg(100, 0, 7)]), BLKIF_RSP_OKAY),
    ];
    let reqs: Vec<BlkifRequest> = cases.iter().map(|c| c.0).collect();
    let rsp = e.submit(&mut f, &reqs);
    assert_eq!(rsp.len(), cases.len());
    for (r, (q, want)) in rsp.iter().zip(&cases) {
        assert_eq!(
            (r.id, r.operation, r.status),
            (q.id, q.operation, *want),
            "{q:?}"
        );
        assert_eq!((r.pad0, r.pad1), (0, 0));
    }
    assert_eq!(e.one(&mut f, good), BLKIF_RSP_OKAY);
    assert_eq!(e.be(2, "state").as_deref(), Some("4"));
}

fn indirect(op: u8, id: u64, sector: u64, n: u16, pages: &[u32]) -> BlkifRequest {
    let mut ind = BlkifRequestIndirect {
        operation: BLKIF_OP_INDIRECT,
        indirect_op: op,
        nr_segments: n,
        id,
        sector_number: sector,
        handle: XVDA as u16,
        ..Default::default()
    };
    ind.indirect_grefs[..pages.len()].copy_from_slice(pages);
    let mut r = BlkifRequest::default();
    r.as_mut_bytes()[..64].copy_from_slice(ind.as_bytes());
    r
}

#[test]
fn indirect_segments() {
    let mut e = Env::new();
    e.disk(2, 4 << 20, 512, false);
    let mut f = e.connect(2, None, 10);
    // 40 segments of whole pages, listed in one indirect page.
    let mut list = Vec::new();
    for k in 0..40u32 {
        e.grant(2, 1000 + k, &pattern(4096, k as u8), true);
        list.extend_from_slice(seg(1000 + k, 0, 7).as_bytes());
    }
    e.grant(2, 500, &list, true);
    let rsp = e.submit(&mut f, &[indirect(BLKIF_OP_WRITE, 1, 16, 40, &[500])]);
    // The response names the real operation (blkfront checks it).
    assert_eq!(
        (rsp.len(), rsp[0].id, rsp[0].operation, rsp[0].status),
        (1, 1, BLKIF_OP_WRITE, BLKIF_RSP_OKAY)
    );
    let disk = e.disk_bytes(0);
    for k in 0..40usize {
        let at = 16 * 512 + k * 4096;
        assert_eq!(
            &disk[at..at + 4096],
            &pattern(4096, k as u8)[..],
            "segment {k}"
        );
    }
    // One copy call for the list and one for the data.
    assert_eq!(e.w.0.borrow().copy_calls, 2);
    // Read two back through an indirect request.
    let mut list = Vec::new();
    for k in 0..2u32 {
        e.grant(2, 2000 + k, &[], false);
        list.extend_from_slice(seg(2000 + k, 0, 7).as_bytes());
    }
    e.grant(2, 501, &list, true);
    assert_eq!(
        e.one(&mut f, indirect(BLKIF_OP_READ, 2, 16 + 8 * 5, 2, &[501])),
        BLKIF_RSP_OKAY
    );
    assert_eq!(e.page(2, 2000), pattern(4096, 5));
    assert_eq!(e.page(2, 2001), pattern(4096, 6));
    // Hostile: too many segments, zero, a bad listed segment, a bad op,
    // a list page that is not granted.
    assert_eq!(
        e.one(&mut f, indirect(BLKIF_OP_READ, 3, 0, 257, &[501])),
        BLKIF_RSP_ERROR
    );
    assert_eq!(
        e.one(&mut f, indirect(BLKIF_OP_READ, 4, 0, 0, &[501])),
        BLKIF_RSP_ERROR
    );
    let mut bad = list.clone();
    bad[5] = 9; // last_sect of the first segment
    e.grant(2, 502, &bad, true);
    assert_eq!(
        e.one(&mut f, indirect(BLKIF_OP_READ, 5, 0, 2, &[502])),
        BLKIF_RSP_ERROR
    );
    assert_eq!(
        e.one(&mut f, indirect(BLKIF_OP_FLUSH_DISKCACHE, 6, 0, 2, &[501])),
        BLKIF_RSP_ERROR
    );
    assert_eq!(
        e.one(&mut f, indirect(BLKIF_OP_READ, 7, 0, 2, &[777])),
        BLKIF_RSP_ERROR
    );
}

#[test]
fn multi_page_ring() {
    let mut e = Env::new();
    e.disk(2, 1 << 20, 512, false);
    let mut f = e.connect(2, Some(2), 40);
    assert_eq!(e.be(2, "state").as_deref(), Some("4"));
    assert_eq!(f.size(), 128);
    e.grant(2, 100, &[], false);
    // More requests than one pump serves: all get answered.
    let reqs: Vec<BlkifRequest> = (0..100)
        .map(|i| rw(BLKIF_OP_READ, i, i * 8, &[seg(100, 0, 7)]))
        .collect();
    let rsp = e.submit(&mut f, &reqs);
    assert_eq!(rsp.len(), 100);
    assert!(rsp.iter().all(|r| r.status == BLKIF_RSP_OKAY));
    assert_eq!(&e.page(2, 100)[..], &e.disk_bytes(0)[99 * 4096..100 * 4096]);
    // A ring-page-order past what we offer is refused.
    let mut e = Env::new();
    e.disk(3, 1 << 20, 512, false);
    e.fe_write(3, "ring-page-order", "5");
    e.fe_write(3, "event-channel", "9");
    e.fe_write(3, "state", "3");
    e.bb.sync(&mut e.svc);
    assert_eq!(e.be(3, "state").as_deref(), Some("5"));
    assert!(e.be(3, "error").is_some());
}

#[test]
fn bad_ring_indices_disconnect_that_vbd_only() {
    let mut e = Env::new();
    e.disk(2, 1 << 20, 512, false);
    e.bb.add_disk(
        &mut e.svc,
        3,
        XVDA,
        TestDisk::mem(MemDisk::new(vec![0; 1 << 20], 512, false).unwrap()),
        "other.img",
    )
    .unwrap();
    let f2 = e.connect(2, None, 10);
    let mut f3 = e.connect(3, None, 10);
    assert_eq!(e.bb.ports().len(), 2);
    // Domain 2 claims 33 requests on a 32-slot ring.
    f2.mem()
        .store_u32(0, 33, std::sync::atomic::Ordering::Release);
    e.bb.pump(&mut e.svc);
    assert_eq!(e.be(2, "state").as_deref(), Some("5"));
    assert_eq!(e.bb.ports().len(), 1);
    assert_eq!(e.w.0.borrow().mapped.len(), 1);
    assert!(e.w.0.borrow().log.iter().any(|l| l.contains("ring broken")));
    e.grant(3, 100, &[], false);
    assert_eq!(
        e.one(&mut f3, rw(BLKIF_OP_READ, 1, 0, &[seg(100, 0, 7)])),
        BLKIF_RSP_OKAY
    );
    assert_eq!(e.be(3, "state").as_deref(), Some("4"));
}

#[test]
fn front_end_reconnects() {
    let mut e = Env::new();
    e.disk(2, 1 << 20, 512, false);
    let _f = e.connect(2, None, 10);
    let port = e.bb.ports()[0];
    e.fe_write(2, "state", "5");
    e.bb.sync(&mut e.svc);
    assert_eq!(e.be(2, "state").as_deref(), Some("5"));
    assert!(e.bb.ports().is_empty());
    assert!(!e.w.0.borrow().bound.contains_key(&port));
    assert!(e.w.0.borrow().mapped.is_empty());
    e.fe_write(2, "state", "6");
    e.bb.sync(&mut e.svc);
    assert_eq!(e.be(2, "state").as_deref(), Some("6"));
    // Initialised while we are Closed is ignored until Initialising.
    e.fe_write(2, "state", "3");
    e.bb.sync(&mut e.svc);
    assert_eq!(e.be(2, "state").as_deref(), Some("6"));
    e.fe_write(2, "state", "1");
    e.bb.sync(&mut e.svc);
    assert_eq!(e.be(2, "state").as_deref(), Some("2"));
    let mut f = e.connect(2, None, 20);
    assert_eq!(e.be(2, "state").as_deref(), Some("4"));
    e.grant(2, 100, &[], false);
    assert_eq!(
        e.one(&mut f, rw(BLKIF_OP_READ, 1, 0, &[seg(100, 0, 7)])),
        BLKIF_RSP_OKAY
    );
    assert_eq!(e.bb.vbds()[0].stats.connects, 2);
    // A front end that vanishes (its directory removed) closes us.
    e.svc
        .rm(&format!("/local/domain/2/device/vbd/{XVDA}"))
        .unwrap();
    e.bb.sync(&mut e.svc);
    assert_eq!(e.be(2, "state").as_deref(), Some("6"));
    assert!(e.w.0.borrow().mapped.is_empty());
}

#[test]
fn connect_failures_close_the_vbd() {
    for (proto, ring_ok, port) in [
        ("x86_32-abi", true, "9"),
        ("x86_64-abi", false, "9"),
        ("x86_64-abi", true, "0"),
    ] {
        let mut e = Env::new();
        e.disk(2, 1 << 20, 512, false);
        if ring_ok {
            let page: &'static HeapPage = Box::leak(Box::new(HeapPage::one()));
            e.w.0.borrow_mut().rings.insert((2, 10), (page, 1));
        }
        e.fe_write(2, "ring-ref", "10");
        e.fe_write(2, "event-channel", port);
        e.fe_write(2, "protocol", proto);
        e.fe_write(2, "state", "3");
        e.bb.sync(&mut e.svc);
        assert_eq!(
            e.be(2, "state").as_deref(),
            Some("5"),
            "{proto} {ring_ok} {port}"
        );
        assert!(e.be(2, "error").is_some());
        assert!(e.w.0.borrow().mapped.is_empty());
        assert!(e.w.0.borrow().bound.is_empty());
    }
}

/// A xorshift generator: deterministic "random" ring contents.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn arbitrary_requests_are_all_answered() {
    let mut e = Env::new();
    e.disk(2, 256 * 1024, 512, false);
    let mut f = e.connect(2, None, 10);
    for g in 0..4 {
        e.grant(2, g, &[], g % 2 == 1);
    }
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut ok = 0;
    for round in 0..200 {
        let n = 1 + (rng.next() % 32) as usize;
        let reqs: Vec<BlkifRequest> = (0..n)
            .map(|i| {
                let mut r = BlkifRequest::default();
                for b in r.as_mut_bytes().chunks_mut(8) {
                    let v = rng.next().to_le_bytes();
                    b.copy_from_slice(&v[..b.len()]);
                }
                // Mostly plausible: small ops, grants 0-3, sectors in range.
                if rng.next().is_multiple_of(2) {
                    r.operation %= 7;
                    r.nr_segments %= 13;
                    r.sector_number %= 600;
                    for s in &mut r.seg {
                        s.gref %= 5;
                        s.first_sect %= 9;
                        s.last_sect %= 9;
                    }
                }
                r.id = (round * 100 + i) as u64;
                r
            })
            .collect();
        let rsp = e.submit(&mut f, &reqs);
        assert_eq!(rsp.len(), n);
        for (r, q) in rsp.iter().zip(&reqs) {
            // Indirect requests are answered with their real operation.
            let op = if q.operation == BLKIF_OP_INDIRECT {
                q.as_bytes()[1]
            } else {
                q.operation
            };
            assert_eq!((r.id, r.operation), (q.id, op));
            assert!([BLKIF_RSP_OKAY, BLKIF_RSP_ERROR, BLKIF_RSP_EOPNOTSUPP].contains(&r.status));
            ok += usize::from(r.status == BLKIF_RSP_OKAY);
        }
    }
    assert!(ok > 0, "no request succeeded: the generator is useless");
    assert_eq!(e.be(2, "state").as_deref(), Some("4"));
}

#[test]
fn a_rebooted_domain_gets_the_same_disk_again() {
    let mut e = Env::new();
    e.disk(2, 1 << 20, 512, false);
    e.disk(3, 1 << 20, 512, false);
    let mut f = e.connect(2, None, 10);
    let _g = e.connect(3, None, 50);
    // d2 writes sector 8, then its domain goes (a reboot: the store
    // released it).
    e.grant(2, 100, &pattern(512, 9), false);
    assert_eq!(
        e.one(&mut f, rw(BLKIF_OP_WRITE, 1, 8, &[seg(100, 0, 0)])),
        BLKIF_RSP_OKAY
    );
    let port3 = e.bb.vbds()[1].port().unwrap();
    e.bb.domain_gone(&mut e.svc, 2);
    assert!(!e.bb.vbds()[0].offered());
    assert_eq!(e.bb.vbds()[0].port(), None);
    assert_eq!(e.be(2, "state"), None, "back-end directory removed");
    assert_eq!(e.read(&format!("/local/domain/{ME}/backend/vbd/2")), None);
    // Only d2's ring and port went; d3 stays connected.
    assert_eq!(e.w.0.borrow().mapped.len(), 1);
    assert_eq!(e.bb.ports(), [port3]);
    // Syncing while d2 is gone writes nothing for it.
    e.bb.sync(&mut e.svc);
    assert_eq!(e.be(2, "state"), None);
    // The new d2 finds its vbd offered again, connects and reads back
    // what the old one wrote.
    e.bb.domain_back(&mut e.svc, 2);
    assert_eq!(e.be(2, "state").as_deref(), Some("2"));
    assert_eq!(
        e.read(&format!("/local/domain/2/device/vbd/{XVDA}/backend-id"))
            .as_deref(),
        Some(ME.to_string().as_str())
    );
    let mut f = e.connect(2, None, 30);
    assert_eq!(e.be(2, "state").as_deref(), Some("4"));
    e.grant(2, 101, &[], false);
    assert_eq!(
        e.one(&mut f, rw(BLKIF_OP_READ, 2, 8, &[seg(101, 0, 0)])),
        BLKIF_RSP_OKAY
    );
    assert_eq!(e.page(2, 101)[..512], pattern(512, 9)[..]);
    assert_eq!(e.bb.vbds()[0].stats.connects, 2);
    // A second domain_back changes nothing.
    e.bb.domain_back(&mut e.svc, 2);
    assert_eq!(e.be(2, "state").as_deref(), Some("4"));
}

/// Eight requests queued together (one ring pass): their segments go in
/// one grant-copy call, straight to and from the disk's bytes.
#[test]
fn one_copy_call_for_a_ring_pass() {
    let mut e = Env::new();
    e.disk(2, 4 << 20, 512, false);
    let mut f = e.connect(2, None, 10);
    let mut reqs = Vec::new();
    for r in 0..8u32 {
        let segs: Vec<_> = (0..4u32)
            .map(|k| {
                let g = 100 + r * 4 + k;
                e.grant(2, g, &pattern(4096, g as u8), true);
                seg(g, 0, 7)
            })
            .collect();
        reqs.push(rw(BLKIF_OP_WRITE, u64::from(r), u64::from(r) * 32, &segs));
    }
    let rsp = e.submit(&mut f, &reqs);
    assert_eq!(rsp.len(), 8);
    for (r, x) in rsp.iter().enumerate() {
        assert_eq!((x.id, x.status), (r as u64, BLKIF_RSP_OKAY));
    }
    assert_eq!(
        (e.w.0.borrow().copy_calls, e.w.0.borrow().copy_segs),
        (1, 32)
    );
    let disk = e.disk_bytes(0);
    for g in 0..32usize {
        assert_eq!(
            &disk[g * 4096..(g + 1) * 4096],
            &pattern(4096, (100 + g) as u8)[..]
        );
    }
    let v = &e.bb.vbds()[0].stats;
    assert_eq!((v.copy_calls, v.copy_segs, v.persistent_segs), (1, 32, 0));
}

/// More segments in a pass than a batch holds: batches of at most
/// COPY_BATCH (the mock asserts it), the indirect lists in one more.
#[test]
fn batches_are_bounded() {
    let mut e = Env::new();
    e.disk(2, 16 << 20, 512, false);
    let mut f = e.connect(2, Some(1), 10);
    let mut reqs = Vec::new();
    for r in 0..8u32 {
        let mut list = Vec::new();
        for k in 0..40u32 {
            let g = 1000 + r * 40 + k;
            e.grant(2, g, &pattern(4096, g as u8), true);
            list.extend_from_slice(seg(g, 0, 7).as_bytes());
        }
        e.grant(2, 500 + r, &list, true);
        reqs.push(indirect(
            BLKIF_OP_WRITE,
            u64::from(r),
            u64::from(r) * 40 * 8,
            40,
            &[500 + r],
        ));
    }
    let rsp = e.submit(&mut f, &reqs);
    assert!(rsp.iter().all(|x| x.status == BLKIF_RSP_OKAY));
    // 8 list pages in one call, 320 data segments in two.
    assert_eq!(
        (e.w.0.borrow().copy_calls, e.w.0.borrow().copy_segs),
        (3, 328)
    );
    let disk = e.disk_bytes(0);
    for g in 0..320usize {
        assert_eq!(
            &disk[g * 4096..(g + 1) * 4096],
            &pattern(4096, (1000 + g) as u8)[..],
            "page {g}"
        );
    }
}

/// In one pass: a write, a request with a bad grant, a read of what the
/// write wrote, a discard, a read of the discarded range. Each request
/// gets its own status and sees the ones before it.
#[test]
fn one_pass_keeps_order_and_fails_requests_alone() {
    let mut e = Env::new();
    e.disk(2, 1 << 20, 512, false);
    let mut f = e.connect(2, None, 10);
    let data = pattern(4096, 42);
    e.grant(2, 100, &data, true);
    e.grant(2, 200, &[], false);
    e.grant(2, 201, &[], false);
    e.grant(2, 202, &[0xee; 4096], false);
    let mut d = BlkifRequestDiscard {
        operation: BLKIF_OP_DISCARD,
        id: 4,
        sector_number: 8,
        nr_sectors: 8,
        ..Default::default()
    };
    d.handle = XVDA as u16;
    let mut disc = BlkifRequest::default();
    disc.as_mut_bytes()[..32].copy_from_slice(d.as_bytes());
    let rsp = e.submit(
        &mut f,
        &[
            rw(BLKIF_OP_WRITE, 1, 8, &[seg(100, 0, 7)]),
            rw(BLKIF_OP_READ, 2, 0, &[seg(200, 0, 7), seg(999, 0, 7)]),
            rw(BLKIF_OP_READ, 3, 8, &[seg(201, 0, 7)]),
            disc,
            rw(BLKIF_OP_READ, 5, 8, &[seg(202, 0, 7)]),
        ],
    );
    let st: Vec<_> = rsp.iter().map(|r| (r.id, r.status)).collect();
    assert_eq!(
        st,
        [
            (1, BLKIF_RSP_OKAY),
            (2, BLKIF_RSP_ERROR),
            (3, BLKIF_RSP_OKAY),
            (4, BLKIF_RSP_OKAY),
            (5, BLKIF_RSP_OKAY)
        ]
    );
    assert_eq!(e.page(2, 201), data);
    assert_eq!(e.page(2, 202), vec![0; 4096]);
}

fn persistent_env(front_offers: bool) -> (Env, Front) {
    let mut e = Env::new();
    e.bb.set_persistent(true);
    e.disk(2, 4 << 20, 512, false);
    assert_eq!(e.be(2, "feature-persistent").as_deref(), Some("1"));
    if front_offers {
        e.fe_write(2, "feature-persistent", "1");
    }
    let f = e.connect(2, None, 10);
    (e, f)
}

#[test]
fn persistent_grants_only_when_both_ends_offer_them() {
    // Switched off (on by default).
    let mut e = Env::new();
    e.bb.set_persistent(false);
    e.disk(2, 1 << 20, 512, false);
    assert_eq!(e.be(2, "feature-persistent").as_deref(), Some("0"));
    e.fe_write(2, "feature-persistent", "1");
    let mut f = e.connect(2, None, 10);
    e.grant(2, 100, &[], false);
    assert_eq!(
        e.one(&mut f, rw(BLKIF_OP_READ, 1, 0, &[seg(100, 0, 7)])),
        BLKIF_RSP_OKAY
    );
    assert_eq!((e.w.0.borrow().pmaps, e.w.0.borrow().copy_calls), (0, 1));
    // Offered, but the front end does not.
    let (mut e, mut f) = persistent_env(false);
    assert!(e.w.0.borrow().log.iter().any(|l| l.contains("grant copy")));
    e.grant(2, 100, &[], false);
    assert_eq!(
        e.one(&mut f, rw(BLKIF_OP_READ, 1, 0, &[seg(100, 0, 7)])),
        BLKIF_RSP_OKAY
    );
    assert_eq!((e.w.0.borrow().pmaps, e.w.0.borrow().copy_calls), (0, 1));
}

#[test]
fn persistent_grants_are_mapped_once_and_reused() {
    let (mut e, mut f) = persistent_env(true);
    assert!(
        e.w.0
            .borrow()
            .log
            .iter()
            .any(|l| l.contains("persistent grants"))
    );
    let data = pattern(4096, 3);
    e.grant(2, 100, &data, false);
    e.grant(2, 101, &[], false);
    assert_eq!(
        e.one(
            &mut f,
            rw(BLKIF_OP_WRITE, 1, 16, &[seg(100, 0, 7), seg(101, 0, 3)])
        ),
        BLKIF_RSP_OKAY
    );
    assert_eq!(&e.disk_bytes(0)[16 * 512..24 * 512], &data[..]);
    assert_eq!(&e.disk_bytes(0)[24 * 512..28 * 512], &[0u8; 2048][..]);
    // The same grants again, for a read: no new map, no copy.
    assert_eq!(
        e.one(
            &mut f,
            rw(BLKIF_OP_READ, 2, 20, &[seg(100, 0, 3), seg(101, 4, 7)])
        ),
        BLKIF_RSP_OKAY
    );
    assert_eq!(&e.page(2, 100)[..2048], &data[2048..]);
    assert_eq!(&e.page(2, 101)[2048..], &[0u8; 2048][..]);
    let w = e.w.0.borrow();
    assert_eq!((w.pmaps, w.pmapped.len(), w.copy_calls), (2, 2, 0));
    drop(w);
    let s = e.bb.vbds()[0].stats;
    assert_eq!(
        (s.persistent_maps, s.persistent_segs, s.copy_segs),
        (2, 4, 0)
    );
    // A read-only grant cannot be mapped writable: copied instead, and
    // a bad grant fails its request alone.
    e.grant(2, 300, &data, true);
    let rsp = e.submit(
        &mut f,
        &[
            rw(BLKIF_OP_WRITE, 3, 40, &[seg(300, 0, 7)]),
            rw(BLKIF_OP_WRITE, 4, 48, &[seg(999, 0, 7)]),
            rw(BLKIF_OP_READ, 5, 40, &[seg(101, 0, 7)]),
        ],
    );
    let st: Vec<_> = rsp.iter().map(|r| (r.id, r.status)).collect();
    assert_eq!(
        st,
        [
            (3, BLKIF_RSP_OKAY),
            (4, BLKIF_RSP_ERROR),
            (5, BLKIF_RSP_OKAY)
        ]
    );
    assert_eq!(e.page(2, 101), data);
    assert_eq!(e.w.0.borrow().pmapped.len(), 2);
}

#[test]
fn persistent_grants_indirect_pages_too() {
    let (mut e, mut f) = persistent_env(true);
    let mut list = Vec::new();
    for k in 0..20u32 {
        e.grant(2, 1000 + k, &pattern(4096, k as u8), false);
        list.extend_from_slice(seg(1000 + k, 0, 7).as_bytes());
    }
    e.grant(2, 500, &list, false);
    assert_eq!(
        e.one(&mut f, indirect(BLKIF_OP_WRITE, 1, 0, 20, &[500])),
        BLKIF_RSP_OKAY
    );
    let disk = e.disk_bytes(0);
    for k in 0..20usize {
        assert_eq!(&disk[k * 4096..(k + 1) * 4096], &pattern(4096, k as u8)[..]);
    }
    let w = e.w.0.borrow();
    assert_eq!((w.pmaps, w.copy_calls), (21, 0));
}

#[test]
fn persistent_grants_are_bounded_per_ring() {
    let (mut e, mut f) = persistent_env(true);
    let n = MAX_PERSISTENT_GRANTS as u32 + 10;
    for g in 0..n {
        e.grant(2, 1000 + g, &pattern(4096, g as u8), false);
    }
    for chunk in (0..n).collect::<Vec<_>>().chunks(11) {
        let segs: Vec<_> = chunk.iter().map(|&g| seg(1000 + g, 0, 7)).collect();
        let sector = u64::from(chunk[0]) * 8;
        assert_eq!(
            e.one(&mut f, rw(BLKIF_OP_WRITE, 1, sector, &segs)),
            BLKIF_RSP_OKAY
        );
    }
    let disk = e.disk_bytes(0);
    for g in 0..n as usize {
        assert_eq!(&disk[g * 4096..(g + 1) * 4096], &pattern(4096, g as u8)[..]);
    }
    let w = e.w.0.borrow();
    assert_eq!(w.pmapped.len(), MAX_PERSISTENT_GRANTS);
    assert_eq!(w.copy_segs, 10);
}

#[test]
fn persistent_grants_are_unmapped_on_disconnect() {
    let (mut e, mut f) = persistent_env(true);
    for g in 0..5 {
        e.grant(2, 100 + g, &[], false);
    }
    let segs: Vec<_> = (0..5).map(|g| seg(100 + g, 0, 7)).collect();
    assert_eq!(
        e.one(&mut f, rw(BLKIF_OP_READ, 1, 0, &segs)),
        BLKIF_RSP_OKAY
    );
    assert_eq!(e.w.0.borrow().pmapped.len(), 5);
    // The front end closes: every grant unmapped with the ring.
    e.fe_write(2, "state", "5");
    e.bb.sync(&mut e.svc);
    assert!(e.w.0.borrow().pmapped.is_empty());
    assert_eq!(e.w.0.borrow().punmaps, 5);
    // Reconnected, they are mapped afresh.
    e.fe_write(2, "state", "6");
    e.bb.sync(&mut e.svc);
    e.fe_write(2, "state", "1");
    e.bb.sync(&mut e.svc);
    let mut f = e.connect(2, None, 20);
    assert_eq!(
        e.one(&mut f, rw(BLKIF_OP_READ, 2, 0, &segs[..2])),
        BLKIF_RSP_OKAY
    );
    assert_eq!(e.w.0.borrow().pmapped.len(), 2);
    // The domain goes away: unmapped too.
    e.bb.domain_gone(&mut e.svc, 2);
    assert!(e.w.0.borrow().pmapped.is_empty());
    assert!(e.w.0.borrow().mapped.is_empty());
    assert_eq!(e.w.0.borrow().punmaps, 7);
}

/// A device disk (virtio-blk's kind): the back end moves data through
/// `read`/`write`, in ring order, and flushes reach the device after the
/// writes before them, by grant copy and by persistent grants alike.
#[test]
fn device_disk_sees_writes_then_flush_in_order() {
    for persistent in [false, true] {
        let mut e = Env::new();
        e.bb.set_persistent(persistent);
        let log = Rc::new(RefCell::new(Vec::new()));
        let d = TestDisk {
            mem: MemDisk::new(pattern(1 << 20, 1), 512, false).unwrap(),
            dev: Some(log.clone()),
        };
        e.bb.add_disk(&mut e.svc, 2, XVDA, d, "virtio-blk").unwrap();
        // A device that cannot discard is not offered discard.
        assert_eq!(e.be(2, "feature-discard"), None);
        assert_eq!(e.be(2, "feature-flush-cache").as_deref(), Some("1"));
        if persistent {
            e.fe_write(2, "feature-persistent", "1");
        }
        let mut f = e.connect(2, None, 10);
        let a = pattern(4096, 5);
        let b = pattern(4096, 6);
        e.grant(2, 100, &a, true);
        e.grant(2, 101, &b, true);
        e.grant(2, 200, &[], false);
        // One pass: a write, a read of what it wrote, a write carrying a
        // flush, a pure flush, a read off the disk's end.
        let rsp = e.submit(
            &mut f,
            &[
                rw(BLKIF_OP_WRITE, 1, 8, &[seg(100, 0, 7)]),
                rw(BLKIF_OP_READ, 2, 8, &[seg(200, 0, 7)]),
                rw(BLKIF_OP_FLUSH_DISKCACHE, 3, 16, &[seg(101, 0, 3)]),
                rw(BLKIF_OP_FLUSH_DISKCACHE, 4, 0, &[]),
                rw(BLKIF_OP_READ, 5, 2047, &[seg(200, 0, 1)]),
            ],
        );
        let got: Vec<_> = rsp.iter().map(|r| (r.id, r.status)).collect();
        assert_eq!(
            got,
            [
                (1, BLKIF_RSP_OKAY),
                (2, BLKIF_RSP_OKAY),
                (3, BLKIF_RSP_OKAY),
                (4, BLKIF_RSP_OKAY),
                (5, BLKIF_RSP_ERROR)
            ],
            "persistent {persistent}"
        );
        assert_eq!(e.page(2, 200), a, "the read saw the write before it");
        let disk = e.disk_bytes(0);
        assert_eq!(&disk[8 * 512..16 * 512], &a[..]);
        assert_eq!(&disk[16 * 512..20 * 512], &b[..2048]);
        // Every write reached the device before the flushes, in order.
        assert_eq!(
            *log.borrow(),
            [
                DevOp::Write(8 * 512, 4096),
                DevOp::Read(8 * 512, 4096),
                DevOp::Write(16 * 512, 2048),
                DevOp::Flush,
                DevOp::Flush,
            ],
            "persistent {persistent}"
        );
    }
}
