//! The network back end's transmit parsing with arbitrary ring contents:
//! two connected vifs over heap rings (d1's tx ring fuzzed, d2 receiving
//! with buffers posted), tx requests of any bytes in batches (and, when
//! the input says so, a producer index of any value), grants 0-3 of d1
//! present (3 absent: a bad grant).
//! Checks: nothing panics; while d1's vif stays connected every request
//! is answered, in order, data slots with their id and OKAY or ERROR,
//! extra slots with NULL; a ring that cannot be parsed closes d1's vif
//! and nothing else (d2 stays connected, its rx responses stay sane).

#![no_main]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use libfuzzer_sys::fuzz_target;
use pv_rings::{FrontRing, HeapPage, RawMem, SharedMem};
use service_domain::blkback::{BlkPlatform, CopyDir, CopySeg, MapId};
use service_domain::netback::*;
use service_domain::{DomainInfo, Platform, StoreService};
use xen_abi::io::netif::*;
use zerocopy::FromBytes;

#[derive(Default)]
struct World {
    /// (domain, ring gref) -> page.
    rings: BTreeMap<(u16, u32), &'static HeapPage>,
    grants: BTreeMap<(u16, u32), Vec<u8>>,
}

#[derive(Clone, Default)]
struct Mock(Rc<RefCell<World>>);

impl Platform for Mock {
    type Mem = RawMem<'static>;
    fn map_store(&mut self, _: u16) -> Result<Self::Mem, i32> {
        Err(xen_abi::EINVAL)
    }
    fn unmap_store(&mut self, _: u16) {}
    fn bind(&mut self, _: u16, remote: u32) -> Result<u32, i32> {
        Ok(remote)
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
    fn map_ring(&mut self, domid: u16, grefs: &[u32]) -> Result<(Self::Ring, MapId), i32> {
        let w = self.0.borrow();
        let page = w.rings.get(&(domid, grefs[0])).ok_or(xen_abi::EINVAL)?;
        Ok((page.mem(), grefs[0]))
    }
    fn unmap_ring(&mut self, _: MapId) {}
    fn map_grant(&mut self, _: u16, _: u32) -> Result<(Self::Ring, MapId), i32> {
        Err(xen_abi::EINVAL)
    }
    fn unmap_grants(&mut self, _: &[MapId]) {}
    fn copy(
        &mut self,
        domid: u16,
        segs: &[CopySeg],
        buf: &mut [u8],
        status: &mut [i16],
    ) -> Result<(), i32> {
        let mut w = self.0.borrow_mut();
        for (s, st) in segs.iter().zip(status.iter_mut()) {
            let (off, len) = (usize::from(s.offset), usize::from(s.len));
            assert!(off + len <= 4096, "copy past the guest page");
            let local = &mut buf[s.local..s.local + len];
            let Some(page) = w.grants.get_mut(&(domid, s.gref)) else {
                *st = -1;
                continue;
            };
            match s.dir {
                CopyDir::FromGuest => local.copy_from_slice(&page[off..off + len]),
                CopyDir::ToGuest => page[off..off + len].copy_from_slice(local),
            }
        }
        Ok(())
    }
}

fn page(slot: usize) -> &'static HeapPage {
    static PAGES: std::sync::OnceLock<Vec<&'static HeapPage>> = std::sync::OnceLock::new();
    let p = PAGES.get_or_init(|| {
        (0..4)
            .map(|_| &*Box::leak(Box::new(HeapPage::one())))
            .collect()
    })[slot];
    p.mem().write(0, &[0u8; 4096], 8);
    p
}

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let w = Mock::default();
    let (a_tx, a_rx, b_tx, b_rx) = (page(0), page(1), page(2), page(3));
    {
        let mut g = w.0.borrow_mut();
        g.rings.insert((1, 10), a_tx);
        g.rings.insert((1, 11), a_rx);
        g.rings.insert((2, 10), b_tx);
        g.rings.insert((2, 11), b_rx);
        for r in 0..3u32 {
            let mut p = vec![r as u8; 4096];
            let n = rest.len().min(64);
            p[..n].copy_from_slice(&rest[..n]);
            g.grants.insert((1, r), p);
        }
        for r in 100..356u32 {
            g.grants.insert((2, r), vec![0; 4096]);
        }
    }
    let mut svc = StoreService::new(w.clone());
    let mut nb: Netback<RawMem<'static>> = Netback::new(0);
    for fe in [1u16, 2] {
        nb.add_vif(&mut svc, fe, 0, default_mac(fe, 0)).unwrap();
        let d = format!("/local/domain/{fe}/device/vif/0");
        for (k, v) in [
            ("tx-ring-ref", "10"),
            ("rx-ring-ref", "11"),
            ("event-channel", "5"),
            ("request-rx-copy", "1"),
            ("feature-rx-notify", "1"),
            ("feature-sg", "1"),
            ("feature-gso-tcpv4", "1"),
            ("feature-gso-tcpv6", "1"),
            ("state", "4"),
        ] {
            svc.write_node(&format!("{d}/{k}"), v).unwrap();
        }
    }
    nb.sync(&mut svc);
    assert!(nb.vifs().iter().all(|v| v.state() == 4));
    let mut tx: FrontRing<RawMem<'static>, NetifTxRequest, NetifTxResponse> =
        FrontRing::init(a_tx.mem()).unwrap();
    let _a_rx: FrontRing<RawMem<'static>, NetifRxRequest, NetifRxResponse> =
        FrontRing::init(a_rx.mem()).unwrap();
    let _b_tx: FrontRing<RawMem<'static>, NetifTxRequest, NetifTxResponse> =
        FrontRing::init(b_tx.mem()).unwrap();
    let mut b: FrontRing<RawMem<'static>, NetifRxRequest, NetifRxResponse> =
        FrontRing::init(b_rx.mem()).unwrap();
    let mut posted = 0u32;
    while let Some((&n, tail)) = rest.split_first() {
        rest = tail;
        // d2 keeps its rx ring full of buffers (grefs 100..356).
        while b.free_requests() > 0 {
            let id = (posted % 256) as u16;
            b.put_request(&NetifRxRequest {
                id,
                pad: 0,
                gref: 100 + u32::from(id),
            })
            .unwrap();
            posted += 1;
        }
        let _ = b.push_requests();
        if n == 0xff {
            let Some(v) = rest.get(..4) else { break };
            a_tx.mem().store_u32(
                0,
                u32::from_le_bytes(v.try_into().unwrap()),
                Ordering::Release,
            );
            while nb.pump(&mut svc) {}
            break;
        }
        let n = usize::from(n % 40).min(tx.free_requests() as usize);
        let mut sent = Vec::new();
        for _ in 0..n {
            let mut raw = [0u8; 12];
            let k = rest.len().min(12);
            raw[..k].copy_from_slice(&rest[..k]);
            rest = &rest[k..];
            let r = NetifTxRequest::read_from_bytes(&raw[..]).unwrap();
            tx.put_request(&r).unwrap();
            sent.push(r);
        }
        let _ = tx.push_requests();
        while nb.pump(&mut svc) {}
        if nb.vifs()[0].state() != 4 {
            assert_eq!(nb.vifs()[0].state(), 5);
            break;
        }
        for q in &sent {
            let r = tx
                .pop_response()
                .unwrap()
                .expect("a request was not answered");
            match r.status {
                NETIF_RSP_NULL => {}
                NETIF_RSP_OKAY | NETIF_RSP_ERROR => assert_eq!(r.id, q.id),
                s => panic!("status {s}"),
            }
        }
        assert_eq!(tx.pop_response().unwrap(), None);
        // What d2 received is well formed.
        while let Some(r) = b.pop_response().unwrap() {
            assert!(r.status <= 4096, "{r:?}");
        }
    }
    assert_eq!(nb.vifs()[1].state(), 4, "d2 untouched");
});
