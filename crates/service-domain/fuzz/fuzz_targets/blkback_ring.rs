//! The block back end's request handling with arbitrary ring contents:
//! a connected vbd over a heap ring, requests of any bytes (and, when the
//! input says so, a producer index of any value), grants 0-3 present
//! (1 read-only, 2 holding input bytes as an indirect segment list).
//! Checks: nothing panics; while the indices are honest every request is
//! answered, in order, with its id and a known status; a dishonest index
//! closes the vbd and nothing else happens.

#![no_main]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use libfuzzer_sys::fuzz_target;
use pv_rings::{FrontRing, HeapPage, RawMem, SharedMem};
use service_domain::blkback::*;
use service_domain::{DomainInfo, Platform, StoreService};
use xen_abi::io::blkif::*;
use zerocopy::{FromBytes, IntoBytes};

#[derive(Default)]
struct World {
    ring: Option<&'static HeapPage>,
    grants: BTreeMap<u32, (Vec<u8>, bool)>,
}

#[derive(Clone, Default)]
struct Mock(Rc<RefCell<World>>);

impl Platform for Mock {
    type Mem = RawMem<'static>;
    fn map_store(&mut self, _: u16) -> Result<Self::Mem, i32> {
        Err(xen_abi::EINVAL)
    }
    fn unmap_store(&mut self, _: u16) {}
    fn bind(&mut self, _: u16, _: u32) -> Result<u32, i32> {
        Ok(7)
    }
    fn unbind(&mut self, _: u32) {}
    fn notify(&mut self, _: u32) {}
    fn domain_info(&mut self, _: u16) -> Result<Option<DomainInfo>, i32> {
        Ok(None)
    }
    fn log(&mut self, _: core::fmt::Arguments<'_>) {}
}

impl BlkPlatform for Mock {
    type Ring = RawMem<'static>;
    fn map_ring(&mut self, _: u16, _: &[u32]) -> Result<(Self::Ring, MapId), i32> {
        Ok((self.0.borrow().ring.unwrap().mem(), 1))
    }
    fn unmap_ring(&mut self, _: MapId) {}
    fn map_grant(&mut self, _: u16, _: u32) -> Result<(Self::Ring, MapId), i32> {
        Err(xen_abi::EINVAL)
    }
    fn unmap_grants(&mut self, _: &[MapId]) {}
    fn copy(
        &mut self,
        _: u16,
        segs: &[CopySeg],
        buf: &mut [u8],
        status: &mut [i16],
    ) -> Result<(), i32> {
        assert!(segs.len() <= COPY_BATCH, "batch past COPY_BATCH");
        let mut w = self.0.borrow_mut();
        for (s, st) in segs.iter().zip(status.iter_mut()) {
            let (off, len) = (usize::from(s.offset), usize::from(s.len));
            assert!(off + len <= 4096, "copy past the guest page");
            let local = &mut buf[s.local..s.local + len];
            let Some((page, ro)) = w.grants.get_mut(&s.gref) else {
                *st = -1;
                continue;
            };
            match s.dir {
                CopyDir::FromGuest => local.copy_from_slice(&page[off..off + len]),
                CopyDir::ToGuest if *ro => *st = -1,
                CopyDir::ToGuest => page[off..off + len].copy_from_slice(local),
            }
        }
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let w = Mock::default();
    // One ring page for every input, cleared (kept reachable from a
    // static: no leak to report).
    static PAGE: std::sync::OnceLock<&'static HeapPage> = std::sync::OnceLock::new();
    let page: &'static HeapPage = PAGE.get_or_init(|| Box::leak(Box::new(HeapPage::one())));
    page.mem().write(0, &[0u8; 4096], 8);
    {
        let mut g = w.0.borrow_mut();
        g.ring = Some(page);
        for r in 0..4u32 {
            g.grants.insert(r, (vec![r as u8; 4096], r == 1));
        }
        let list = &mut g.grants.get_mut(&2).unwrap().0;
        let n = rest.len().min(4096);
        list[..n].copy_from_slice(&rest[..n]);
    }
    let mut svc = StoreService::new(w.clone());
    let mut bb: Blkback<MemDisk<Vec<u8>>, RawMem<'static>> = Blkback::new(0);
    let ss = if flags & 1 != 0 { 4096 } else { 512 };
    let disk = MemDisk::new(vec![0u8; 64 * 1024], ss, flags & 2 != 0).unwrap();
    bb.add_disk(&mut svc, 1, 51712, disk, "fuzz").unwrap();
    let fe = "/local/domain/1/device/vbd/51712";
    svc.write_node(&format!("{fe}/ring-ref"), "5").unwrap();
    svc.write_node(&format!("{fe}/event-channel"), "3").unwrap();
    svc.write_node(&format!("{fe}/state"), "3").unwrap();
    bb.sync(&mut svc);
    assert_eq!(bb.vbds()[0].state(), 4);
    let mut front: FrontRing<RawMem<'static>, BlkifRequest, BlkifResponse> =
        FrontRing::init(page.mem()).unwrap();
    let mut lied = false;
    while let Some((&n, tail)) = rest.split_first() {
        rest = tail;
        if n == 0xff {
            // A producer index of any value.
            let Some(v) = rest.get(..4) else { break };
            page.mem().store_u32(
                0,
                u32::from_le_bytes(v.try_into().unwrap()),
                Ordering::Release,
            );
            lied = true;
            while bb.pump(&mut svc) {}
            break;
        }
        let n = usize::from(n % 33).min(front.free_requests() as usize);
        let mut sent = Vec::new();
        for _ in 0..n {
            let mut raw = [0u8; 112];
            let k = rest.len().min(112);
            raw[..k].copy_from_slice(&rest[..k]);
            rest = &rest[k..];
            let r = BlkifRequest::read_from_bytes(&raw[..]).unwrap();
            front.put_request(&r).unwrap();
            sent.push(r);
        }
        let _ = front.push_requests();
        while bb.pump(&mut svc) {}
        for q in &sent {
            let r = front
                .pop_response()
                .unwrap()
                .expect("a request was not answered");
            assert_eq!(r.id, q.id);
            assert!([BLKIF_RSP_OKAY, BLKIF_RSP_ERROR, BLKIF_RSP_EOPNOTSUPP].contains(&r.status));
            assert_eq!(r.as_bytes()[9], 0);
            assert_eq!(&r.as_bytes()[12..], &[0; 4]);
        }
        assert_eq!(front.pop_response().unwrap(), None);
    }
    if !lied {
        assert_eq!(bb.vbds()[0].state(), 4);
    }
});
