//! The network back end and its switch on a mock hypervisor: guest pages
//! on the heap, grants in a table, grant copies counted. Each front end
//! is simulated as Linux's netfront behaves: it writes its keys and goes
//! straight to Connected, posts rx buffers, sends packets on its tx ring.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use pv_rings::{FrontRing, HeapPage, RawMem, SharedMem};
use service_domain::blkback::{BlkPlatform, CopyDir, CopySeg, MapId};
use service_domain::netback::*;
use service_domain::switch::Mac;
use service_domain::{DomainInfo, Platform, StoreService};
use xen_abi::io::netif::*;
use zerocopy::{FromBytes, IntoBytes};

const ME: u16 = 1;

type Grant = (Box<[u8; 4096]>, bool);

#[derive(Default)]
struct World {
    grants: BTreeMap<(u16, u32), Grant>,
    /// (domain, gref) -> ring page.
    rings: BTreeMap<(u16, u32), &'static HeapPage>,
    mapped: BTreeMap<MapId, (u16, u32)>,
    next_map: MapId,
    bound: BTreeMap<u32, (u16, u32)>,
    next_port: u32,
    notified: Vec<u32>,
    copy_calls: u32,
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
        assert!(self.0.borrow_mut().bound.remove(&port).is_some());
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
        assert_eq!(grefs.len(), 1);
        let page = *w.rings.get(&(domid, grefs[0])).ok_or(xen_abi::EINVAL)?;
        w.next_map += 1;
        let id = w.next_map;
        w.mapped.insert(id, (domid, grefs[0]));
        Ok((page.mem(), id))
    }
    fn unmap_ring(&mut self, id: MapId) {
        assert!(self.0.borrow_mut().mapped.remove(&id).is_some());
    }
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
        w.copy_calls += 1;
        for (s, st) in segs.iter().zip(status.iter_mut()) {
            let (off, len) = (usize::from(s.offset), usize::from(s.len));
            assert!(off + len <= 4096, "copy past the guest page: {s:?}");
            let Some((page, ro)) = w.grants.get_mut(&(domid, s.gref)) else {
                *st = -1;
                continue;
            };
            let local = &mut buf[s.local..s.local + len];
            match s.dir {
                CopyDir::FromGuest => local.copy_from_slice(&page[off..off + len]),
                CopyDir::ToGuest if *ro => *st = -1,
                CopyDir::ToGuest => page[off..off + len].copy_from_slice(local),
            }
        }
        Ok(())
    }
}

type Nb = Netback<RawMem<'static>>;
/// A received packet: data, first slot's flags, GSO (type, size).
type Received = (Vec<u8>, u16, Option<(u8, u16)>);
type Tx = FrontRing<RawMem<'static>, NetifTxRequest, NetifTxResponse>;
type Rx = FrontRing<RawMem<'static>, NetifRxRequest, NetifRxResponse>;

/// One simulated netfront.
struct Front {
    dom: u16,
    tx: Tx,
    rx: Rx,
    /// Rx buffers posted so far, plus 1000.
    next_gref: u32,
}

struct Env {
    w: Mock,
    svc: StoreService<Mock>,
    nb: Nb,
}

fn mac(dom: u16) -> Mac {
    default_mac(dom, 0)
}

/// An Ethernet frame of `len` bytes from `src` to `dst`, payload patterned.
fn frame(dst: Mac, src: Mac, len: usize, seed: u8) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend((14..len).map(|i| (i * 7 + usize::from(seed) * 31) as u8));
    f
}

const BCAST: Mac = [0xff; 6];

impl Env {
    fn new() -> Self {
        let w = Mock::default();
        Self {
            svc: StoreService::new(w.clone()),
            nb: Netback::new(ME),
            w,
        }
    }

    fn read(&mut self, path: &str) -> Option<String> {
        self.svc
            .read(path)
            .ok()
            .map(|v| String::from_utf8(v).unwrap())
    }

    fn be(&mut self, fe: u16, key: &str) -> Option<String> {
        self.read(&format!("/local/domain/{ME}/backend/vif/{fe}/0/{key}"))
    }

    fn fe_write(&mut self, fe: u16, key: &str, v: &str) {
        self.svc
            .write_node(&format!("/local/domain/{fe}/device/vif/0/{key}"), v)
            .unwrap();
    }

    fn vif(&mut self, fe: u16) {
        self.nb.add_vif(&mut self.svc, fe, 0, mac(fe)).unwrap();
    }

    /// netfront's half: both rings, its keys, Connected; `split` uses two
    /// event channels.
    fn connect(&mut self, fe: u16, split: bool) -> Front {
        let tx: &'static HeapPage = Box::leak(Box::new(HeapPage::one()));
        let rx: &'static HeapPage = Box::leak(Box::new(HeapPage::one()));
        {
            let mut w = self.w.0.borrow_mut();
            w.rings.insert((fe, 1), tx);
            w.rings.insert((fe, 2), rx);
        }
        self.fe_write(fe, "tx-ring-ref", "1");
        self.fe_write(fe, "rx-ring-ref", "2");
        if split {
            self.fe_write(fe, "event-channel-tx", "7");
            self.fe_write(fe, "event-channel-rx", "8");
        } else {
            self.fe_write(fe, "event-channel", "7");
        }
        for k in [
            "request-rx-copy",
            "feature-rx-notify",
            "feature-sg",
            "feature-gso-tcpv4",
            "feature-gso-tcpv6",
        ] {
            // A test may have turned a feature off first.
            if self
                .read(&format!("/local/domain/{fe}/device/vif/0/{k}"))
                .is_none()
            {
                self.fe_write(fe, k, "1");
            }
        }
        self.fe_write(fe, "state", "4");
        self.nb.sync(&mut self.svc);
        Front {
            dom: fe,
            tx: FrontRing::init(tx.mem()).unwrap(),
            rx: FrontRing::init(rx.mem()).unwrap(),
            next_gref: 1000,
        }
    }

    fn grant(&mut self, fe: u16, gref: u32, data: &[u8], ro: bool) {
        let mut p = Box::new([0u8; 4096]);
        p[..data.len()].copy_from_slice(data);
        self.w.0.borrow_mut().grants.insert((fe, gref), (p, ro));
    }

    fn page(&self, fe: u16, gref: u32) -> Vec<u8> {
        self.w.0.borrow().grants[&(fe, gref)].0.to_vec()
    }

    /// Posts `n` rx buffers (fresh writable grants).
    fn post_rx(&mut self, f: &mut Front, n: usize) -> bool {
        for _ in 0..n {
            // Ids cycle through 0..256, and id k is always gref 1000 + k
            // (what `received` maps back).
            let g = 1000 + (f.next_gref - 1000) % 256;
            f.next_gref += 1;
            self.grant(f.dom, g, &[], false);
            f.rx.put_request(&NetifRxRequest {
                id: (g - 1000) as u16,
                pad: 0,
                gref: g,
            })
            .unwrap();
        }
        f.rx.push_requests()
    }

    /// Puts a packet on `f`'s tx ring in page-sized slots (gref base
    /// 100 + 20 * id), with an optional GSO extra; does not push.
    fn queue_tx(&mut self, f: &mut Front, id: u16, data: &[u8], flags: u16, gso: Option<Gso>) {
        let chunks: Vec<&[u8]> = data.chunks(4096).collect();
        for (k, c) in chunks.iter().enumerate() {
            let gref = 100 + 20 * u32::from(id) + k as u32;
            self.grant(f.dom, gref, c, true);
            let mut fl = if k + 1 < chunks.len() {
                NETTXF_more_data
            } else {
                0
            };
            if k == 0 {
                fl |= flags;
                if gso.is_some() {
                    fl |= NETTXF_extra_info;
                }
            }
            f.tx.put_request(&NetifTxRequest {
                gref,
                offset: 0,
                flags: fl,
                id: id + k as u16,
                size: if k == 0 { data.len() } else { c.len() } as u16,
            })
            .unwrap();
            if k == 0
                && let Some(g) = gso
            {
                let mut e = [0u8; 12];
                e[0] = XEN_NETIF_EXTRA_TYPE_GSO;
                e[2..4].copy_from_slice(&g.size.to_le_bytes());
                e[4] = g.kind;
                f.tx.put_request(&NetifTxRequest::read_from_bytes(&e).unwrap())
                    .unwrap();
            }
        }
    }

    fn pump(&mut self) {
        let mut n = 0;
        while self.nb.pump(&mut self.svc) {
            n += 1;
            assert!(n < 1000, "pump never settles");
        }
    }

    fn tx_responses(&mut self, f: &mut Front) -> Vec<NetifTxResponse> {
        let mut out = Vec::new();
        while let Some(r) = f.tx.pop_response().unwrap() {
            out.push(r);
        }
        out
    }

    /// The packets `f` received: (data, first slot flags, gso).
    fn received(&mut self, f: &mut Front) -> Vec<Received> {
        let mut rsps = Vec::new();
        let mut grefs = Vec::new();
        while let Some(r) = f.rx.pop_response().unwrap() {
            rsps.push(r);
        }
        // Each response answers the request in its slot: the gref posted
        // there (ids are gref % 256 here).
        for r in &rsps {
            grefs.push(1000 + u32::from(r.id));
        }
        let mut out = Vec::new();
        let mut k = 0;
        while k < rsps.len() {
            let first = rsps[k];
            assert!(first.status >= 0, "rx error {first:?}");
            let mut data = self.page(f.dom, grefs[k])[..first.status as usize].to_vec();
            let mut gso = None;
            let mut more = first.flags & NETRXF_more_data != 0;
            k += 1;
            if first.flags & NETRXF_extra_info != 0 {
                let e = NetifExtraInfo::read_from_bytes(rsps[k].as_bytes()).unwrap();
                assert_eq!(e.r#type, XEN_NETIF_EXTRA_TYPE_GSO);
                gso = Some((e.gso().r#type, e.gso().size));
                k += 1;
            }
            while more {
                let r = rsps[k];
                data.extend_from_slice(&self.page(f.dom, grefs[k])[..r.status as usize]);
                more = r.flags & NETRXF_more_data != 0;
                k += 1;
            }
            out.push((data, first.flags, gso));
        }
        out
    }
}

#[test]
fn handshake_keys_and_refusals() {
    let mut e = Env::new();
    e.vif(2);
    let f = "/local/domain/2/device/vif/0";
    assert_eq!(e.be(2, "state").as_deref(), Some("2"));
    assert_eq!(e.be(2, "feature-rx-copy").as_deref(), Some("1"));
    assert_eq!(e.be(2, "feature-sg").as_deref(), Some("1"));
    assert_eq!(e.be(2, "feature-gso-tcpv4").as_deref(), Some("1"));
    assert_eq!(e.be(2, "mac").as_deref(), Some("00:16:3e:00:00:02"));
    assert_eq!(e.be(2, "frontend").as_deref(), Some(f));
    assert_eq!(
        e.read(&format!("{f}/mac")).as_deref(),
        Some("00:16:3e:00:00:02")
    );
    assert_eq!(
        e.read(&format!("{f}/backend")).as_deref(),
        Some("/local/domain/1/backend/vif/2/0")
    );
    assert_eq!(e.read(&format!("{f}/state")).as_deref(), Some("1"));
    assert_eq!(e.svc.get_perms(f).unwrap(), ["n2", "r1"]);
    assert_eq!(
        e.svc.get_perms("/local/domain/1/backend/vif/2/0").unwrap(),
        ["n1", "r2"]
    );
    assert_eq!(e.nb.add_vif(&mut e.svc, 2, 0, mac(2)), Err(xen_abi::EEXIST));
    // Without request-rx-copy: refused, as Linux netback refuses it.
    e.vif(3);
    let tx: &'static HeapPage = Box::leak(Box::new(HeapPage::one()));
    e.w.0.borrow_mut().rings.insert((3, 1), tx);
    e.w.0.borrow_mut().rings.insert((3, 2), tx);
    for (k, v) in [
        ("tx-ring-ref", "1"),
        ("rx-ring-ref", "2"),
        ("event-channel", "7"),
        ("feature-rx-notify", "1"),
        ("state", "4"),
    ] {
        e.svc
            .write_node(&format!("/local/domain/3/device/vif/0/{k}"), v)
            .unwrap();
    }
    e.nb.sync(&mut e.svc);
    assert_eq!(e.be(3, "state").as_deref(), Some("5"));
    assert_eq!(
        e.be(3, "error").as_deref(),
        Some("request-rx-copy is mandatory")
    );
    assert!(e.w.0.borrow().mapped.is_empty() && e.w.0.borrow().bound.is_empty());
}

#[test]
fn broadcast_then_unicast_between_two_domains() {
    let mut e = Env::new();
    e.vif(2);
    e.vif(3);
    let mut a = e.connect(2, false);
    let mut b = e.connect(3, true);
    assert_eq!(e.be(2, "state").as_deref(), Some("4"));
    assert_eq!(e.be(3, "state").as_deref(), Some("4"));
    assert_eq!(e.nb.ports().len(), 3, "one port for d2, two for d3");
    e.post_rx(&mut a, 64);
    e.post_rx(&mut b, 64);
    // An ARP-like broadcast from a reaches b.
    let f1 = frame(BCAST, mac(2), 60, 1);
    e.queue_tx(&mut a, 0, &f1, 0, None);
    assert!(a.tx.push_requests(), "req_event starts at 1");
    e.pump();
    let rsp = e.tx_responses(&mut a);
    assert_eq!(rsp, [NetifTxResponse { id: 0, status: 0 }]);
    let got = e.received(&mut b);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, f1);
    assert!(e.received(&mut a).is_empty(), "not back to the sender");
    // b answers by unicast: a gets it, the switch learnt a's port.
    let f2 = frame(mac(2), mac(3), 1514, 2);
    e.queue_tx(&mut b, 5, &f2, NETTXF_data_validated, None);
    let _ = b.tx.push_requests();
    e.pump();
    assert_eq!(
        e.tx_responses(&mut b),
        [NetifTxResponse { id: 5, status: 0 }]
    );
    let got = e.received(&mut a);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, f2);
    assert_eq!(got[0].1 & NETRXF_data_validated, NETRXF_data_validated);
    assert_eq!(e.nb.switch().lookup(&mac(2)), Some(0));
    assert_eq!(e.nb.switch().lookup(&mac(3)), Some(1));
    let s = e.nb.vifs()[0].stats;
    assert_eq!((s.tx_packets, s.rx_packets, s.connects), (1, 1, 1));
    // Events went out on b's rx port (its second port), not its tx port,
    // for the packet it received.
    assert!(e.w.0.borrow().notified.contains(&3));
}

#[test]
fn scatter_gather_and_gso_pass_through() {
    let mut e = Env::new();
    e.vif(2);
    e.vif(3);
    let mut a = e.connect(2, false);
    let mut b = e.connect(3, false);
    e.post_rx(&mut b, 64);
    // A 9000-byte TCPv4 GSO packet in 3 slots with its extra.
    let big = frame(mac(3), mac(2), 9000, 3);
    let gso = Gso {
        kind: XEN_NETIF_GSO_TYPE_TCPV4,
        size: 1448,
    };
    e.queue_tx(
        &mut a,
        10,
        &big,
        NETTXF_csum_blank | NETTXF_data_validated,
        Some(gso),
    );
    let _ = a.tx.push_requests();
    let calls = e.w.0.borrow().copy_calls;
    e.pump();
    let r = e.tx_responses(&mut a);
    assert_eq!(
        r.iter().map(|r| (r.id, r.status)).collect::<Vec<_>>(),
        [(10, 0), (0, NETIF_RSP_NULL), (11, 0), (12, 0)],
        "every slot answered, the extra with NULL"
    );
    let got = e.received(&mut b);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, big);
    assert_eq!(got[0].2, Some((XEN_NETIF_GSO_TYPE_TCPV4, 1448)));
    assert_eq!(
        got[0].1 & (NETRXF_csum_blank | NETRXF_extra_info),
        NETRXF_csum_blank | NETRXF_extra_info
    );
    // One copy out of a, one into b.
    assert_eq!(e.w.0.borrow().copy_calls - calls, 2);
}

#[test]
fn checksum_blank_packets_are_completed() {
    let mut e = Env::new();
    e.vif(2);
    e.vif(3);
    let mut a = e.connect(2, false);
    let mut b = e.connect(3, false);
    e.post_rx(&mut b, 8);
    let mut f = frame(mac(3), mac(2), 14, 0);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&[
        0x45, 0, 0, 32, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ]);
    f.extend_from_slice(&[0, 1, 0, 2, 0, 12, 0x12, 0x34, 1, 2, 3, 4]);
    e.queue_tx(
        &mut a,
        0,
        &f,
        NETTXF_csum_blank | NETTXF_data_validated,
        None,
    );
    let _ = a.tx.push_requests();
    e.pump();
    let got = e.received(&mut b);
    assert_eq!(&got[0].0[40..42], &[0xe7, 0xca], "UDP checksum filled in");
    assert_eq!(got[0].1 & NETRXF_csum_blank, 0);
}

#[test]
fn bad_packets_are_refused_and_the_others_flow() {
    let mut e = Env::new();
    e.vif(2);
    e.vif(3);
    let mut a = e.connect(2, false);
    let mut b = e.connect(3, false);
    e.post_rx(&mut b, 64);
    let good = frame(mac(3), mac(2), 100, 4);
    // A slot past its page.
    e.grant(2, 50, &good, true);
    a.tx.put_request(&NetifTxRequest {
        gref: 50,
        offset: 4000,
        flags: 0,
        id: 1,
        size: 200,
    })
    .unwrap();
    // A bad grant.
    a.tx.put_request(&NetifTxRequest {
        gref: 9999,
        offset: 0,
        flags: 0,
        id: 2,
        size: 100,
    })
    .unwrap();
    // Sizes that do not add up (a later slot larger than the packet).
    a.tx.put_request(&NetifTxRequest {
        gref: 50,
        offset: 0,
        flags: NETTXF_more_data,
        id: 3,
        size: 20,
    })
    .unwrap();
    a.tx.put_request(&NetifTxRequest {
        gref: 50,
        offset: 0,
        flags: 0,
        id: 4,
        size: 30,
    })
    .unwrap();
    // A bad GSO extra (size 0).
    e.queue_tx(
        &mut a,
        5,
        &good,
        0,
        Some(Gso {
            kind: XEN_NETIF_GSO_TYPE_TCPV4,
            size: 0,
        }),
    );
    // A runt.
    e.queue_tx(&mut a, 7, &good[..10], 0, None);
    // And a good one.
    e.queue_tx(&mut a, 8, &good, 0, None);
    let _ = a.tx.push_requests();
    e.pump();
    let r = e.tx_responses(&mut a);
    assert_eq!(
        r.iter().map(|r| (r.id, r.status)).collect::<Vec<_>>(),
        [
            (1, -1),
            (2, -1),
            (3, -1),
            (4, -1),
            (5, -1),
            (0, NETIF_RSP_NULL),
            (7, -1),
            (8, 0)
        ]
    );
    let got = e.received(&mut b);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, good);
    assert_eq!(e.nb.vifs()[0].stats.tx_errors, 5);
    assert_eq!(e.be(2, "state").as_deref(), Some("4"), "still connected");
}

#[test]
fn broken_ring_disconnects_only_that_vif() {
    let mut e = Env::new();
    e.vif(2);
    e.vif(3);
    e.vif(4);
    let mut a = e.connect(2, false);
    let mut b = e.connect(3, false);
    let mut c = e.connect(4, false);
    e.post_rx(&mut c, 64);
    // a: more_data on its last published slot (a packet cut short).
    e.grant(2, 50, &[0; 64], true);
    a.tx.put_request(&NetifTxRequest {
        gref: 50,
        offset: 0,
        flags: NETTXF_more_data,
        id: 1,
        size: 64,
    })
    .unwrap();
    let _ = a.tx.push_requests();
    let f = frame(mac(4), mac(3), 80, 5);
    e.queue_tx(&mut b, 0, &f, 0, None);
    let _ = b.tx.push_requests();
    e.pump();
    assert_eq!(e.be(2, "state").as_deref(), Some("5"), "a is cut off");
    assert!(!e.nb.vifs()[0].connected());
    assert_eq!(e.received(&mut c)[0].0, f, "b still reaches c");
    // An index past the ring (req_prod 1000 ahead).
    b.tx.mem()
        .store_u32(0, 1000, std::sync::atomic::Ordering::Release);
    e.pump();
    assert_eq!(e.be(3, "state").as_deref(), Some("5"));
    assert_eq!(e.be(4, "state").as_deref(), Some("4"));
    assert_eq!(e.nb.ports().len(), 1);
    assert!(e.w.0.borrow().log.iter().any(|l| l.contains("cut short")));
}

#[test]
fn front_end_reconnects() {
    let mut e = Env::new();
    e.vif(2);
    e.vif(3);
    let _a = e.connect(2, false);
    let mut b = e.connect(3, false);
    for (st, be) in [("5", "5"), ("6", "6"), ("1", "2")] {
        e.fe_write(2, "state", st);
        e.nb.sync(&mut e.svc);
        assert_eq!(e.be(2, "state").as_deref(), Some(be));
    }
    assert!(e.w.0.borrow().mapped.len() == 2, "a's rings unmapped");
    let mut a = e.connect(2, false);
    assert_eq!(e.be(2, "state").as_deref(), Some("4"));
    assert_eq!(e.nb.vifs()[0].stats.connects, 2);
    e.post_rx(&mut b, 8);
    let f = frame(BCAST, mac(2), 60, 6);
    e.queue_tx(&mut a, 0, &f, 0, None);
    let _ = a.tx.push_requests();
    e.pump();
    assert_eq!(e.received(&mut b)[0].0, f);
}

#[test]
fn rx_waits_for_buffers_and_asks_for_an_event() {
    let mut e = Env::new();
    e.vif(2);
    e.vif(3);
    let mut a = e.connect(2, false);
    let mut b = e.connect(3, false);
    // b posted nothing: a's 3-page packet waits in b's queue.
    let f = frame(mac(3), mac(2), 9000, 7);
    e.queue_tx(&mut a, 0, &f, 0, None);
    e.queue_tx(&mut a, 3, &frame(BCAST, mac(2), 60, 1), 0, None);
    let _ = a.tx.push_requests();
    e.pump();
    assert_eq!(e.nb.vifs()[1].queued(), 2);
    // Two buffers are not enough for 3 pages; the third raises the event.
    assert!(!e.post_rx(&mut b, 2), "req_event asks for 3 at once");
    e.pump();
    assert_eq!(e.nb.vifs()[1].queued(), 2);
    assert!(e.post_rx(&mut b, 1), "the third buffer raises the event");
    e.pump();
    assert_eq!(e.nb.vifs()[1].queued(), 1);
    e.post_rx(&mut b, 1);
    e.pump();
    let got = e.received(&mut b);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, f);
}

#[test]
fn full_rx_queue_drops() {
    let mut e = Env::new();
    e.vif(2);
    e.vif(3);
    let mut a = e.connect(2, false);
    let _b = e.connect(3, false);
    // b never posts a buffer: a sends 3 x 200 broadcasts; a's share of
    // b's queue fills, the rest is dropped, and a's ring keeps moving.
    for round in 0..3 {
        for k in 0..200u16 {
            e.queue_tx(&mut a, k, &frame(BCAST, mac(2), 60, k as u8), 0, None);
        }
        let _ = a.tx.push_requests();
        e.pump();
        assert_eq!(e.tx_responses(&mut a).len(), 200, "round {round}");
    }
    let v = &e.nb.vifs()[1];
    assert_eq!(v.queued(), RX_QUEUE_PER_SOURCE);
    assert_eq!(v.stats.rx_dropped, 600 - RX_QUEUE_PER_SOURCE as u64);
}

#[test]
fn a_flooding_domain_cannot_starve_the_others() {
    let mut e = Env::new();
    for d in 2..=4 {
        e.vif(d);
    }
    let mut a = e.connect(2, false);
    let mut b = e.connect(3, false);
    let mut c = e.connect(4, false);
    // a fills its ring with 250 broadcasts; b sends c one packet; c has
    // posted no buffer yet.
    for k in 0..250u16 {
        e.queue_tx(&mut a, k, &frame(BCAST, mac(2), 60, k as u8), 0, None);
    }
    let _ = a.tx.push_requests();
    let f = frame(mac(4), mac(3), 70, 9);
    e.queue_tx(&mut b, 0, &f, 0, None);
    let _ = b.tx.push_requests();
    // One pass: a gets its budget, b its packet through.
    assert!(e.nb.pump(&mut e.svc), "a has more");
    assert_eq!(e.tx_responses(&mut a).len(), TX_BUDGET);
    assert_eq!(e.tx_responses(&mut b).len(), 1);
    e.pump();
    assert_eq!(e.tx_responses(&mut a).len(), 250 - TX_BUDGET);
    // a's flood holds only its share of c's queue: b's packet is in it.
    let v = &e.nb.vifs()[2];
    assert_eq!(v.queued(), RX_QUEUE_PER_SOURCE + 1);
    assert_eq!(v.stats.rx_dropped, (250 - RX_QUEUE_PER_SOURCE) as u64);
    // c posts buffers: within two passes (RX_BUDGET each) b's packet is
    // there.
    e.post_rx(&mut c, 200);
    assert!(e.nb.pump(&mut e.svc));
    e.nb.pump(&mut e.svc);
    let got = e.received(&mut c);
    assert!(got.iter().any(|p| p.0 == f), "b's packet arrived");
}

#[test]
fn notifications_are_suppressed_under_load() {
    let mut e = Env::new();
    e.vif(2);
    e.vif(3);
    let mut a = e.connect(2, false);
    let mut b = e.connect(3, false);
    e.post_rx(&mut b, 250);
    // 200 packets pushed one at a time, served in passes of whatever
    // arrived: the front end was asked for an event only when the back
    // end had gone idle.
    let mut kicks = 0;
    for k in 0..200u16 {
        e.queue_tx(&mut a, k, &frame(mac(3), mac(2), 60, k as u8), 0, None);
        kicks += u32::from(a.tx.push_requests());
        if k % 50 == 49 {
            e.pump();
        }
    }
    assert_eq!(kicks, 4, "one event per batch, not per packet");
    assert_eq!(e.nb.vifs()[1].stats.rx_packets, 200);
    // Responses: the front end did not ask (rsp_event stays at 1), so
    // one event.
    assert!(e.nb.vifs()[0].stats.tx_events <= 1);
}

#[test]
fn extras_slot_counts_and_offloads_the_receiver_did_not_ask_for() {
    let mut e = Env::new();
    e.vif(2);
    e.vif(3);
    let mut a = e.connect(2, false);
    // b asks for no GSO.
    e.fe_write(3, "feature-gso-tcpv4", "0");
    e.fe_write(3, "feature-gso-tcpv6", "0");
    let mut b = e.connect(3, false);
    e.post_rx(&mut b, 64);
    let f = frame(mac(3), mac(2), 200, 1);
    e.grant(2, 60, &f, true);
    // A multicast-add extra (accepted, ignored) before a good packet.
    a.tx.put_request(&NetifTxRequest {
        gref: 60,
        offset: 0,
        flags: NETTXF_extra_info,
        id: 1,
        size: 200,
    })
    .unwrap();
    let mut x = [0u8; 12];
    x[0] = XEN_NETIF_EXTRA_TYPE_MCAST_ADD;
    x[2..8].copy_from_slice(&[1, 0, 0x5e, 0, 0, 1]);
    a.tx.put_request(&NetifTxRequest::read_from_bytes(&x).unwrap())
        .unwrap();
    // 19 data slots (more than XEN_NETIF_NR_SLOTS_MIN): refused.
    for k in 0..19u16 {
        a.tx.put_request(&NetifTxRequest {
            gref: 60,
            offset: 0,
            flags: if k < 18 { NETTXF_more_data } else { 0 },
            id: 10 + k,
            size: if k == 0 { 19 * 20 } else { 20 },
        })
        .unwrap();
    }
    // A TCPv4 GSO packet: b did not ask for GSO, so it is dropped there.
    e.queue_tx(
        &mut a,
        40,
        &frame(mac(3), mac(2), 3000, 2),
        NETTXF_csum_blank,
        Some(Gso {
            kind: XEN_NETIF_GSO_TYPE_TCPV4,
            size: 1448,
        }),
    );
    let _ = a.tx.push_requests();
    e.pump();
    let r = e.tx_responses(&mut a);
    assert_eq!((r[0].id, r[0].status), (1, NETIF_RSP_OKAY));
    assert_eq!(r[1].status, NETIF_RSP_NULL);
    assert!(r[2..21].iter().all(|r| r.status == NETIF_RSP_ERROR));
    assert_eq!(r[21..].len(), 2, "GSO packet and its extra answered");
    assert_eq!((r[21].id, r[21].status), (40, NETIF_RSP_OKAY));
    let got = e.received(&mut b);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, f);
    assert_eq!(e.nb.vifs()[1].stats.rx_dropped, 1);
}

#[test]
fn an_unknown_extra_type_disconnects() {
    let mut e = Env::new();
    e.vif(2);
    let mut a = e.connect(2, false);
    e.grant(2, 60, &frame(BCAST, mac(2), 60, 0), true);
    a.tx.put_request(&NetifTxRequest {
        gref: 60,
        offset: 0,
        flags: NETTXF_extra_info,
        id: 1,
        size: 60,
    })
    .unwrap();
    let mut x = [0u8; 12];
    x[0] = 9;
    a.tx.put_request(&NetifTxRequest::read_from_bytes(&x).unwrap())
        .unwrap();
    let _ = a.tx.push_requests();
    e.pump();
    assert_eq!(e.be(2, "state").as_deref(), Some("5"));
    assert!(e.w.0.borrow().mapped.is_empty() && e.w.0.borrow().bound.is_empty());
}

#[test]
fn a_vif_that_goes_away_takes_its_queued_packets_and_addresses() {
    let mut e = Env::new();
    for d in 2..=4 {
        e.vif(d);
    }
    let mut a = e.connect(2, false);
    let _b = e.connect(3, false);
    let mut c = e.connect(4, false);
    // a's broadcasts wait in b's queue (no buffers posted there).
    for k in 0..5u16 {
        e.queue_tx(&mut a, k, &frame(BCAST, mac(2), 60, k as u8), 0, None);
    }
    let _ = a.tx.push_requests();
    e.pump();
    assert_eq!(e.nb.vifs()[1].queued(), 5);
    assert_eq!(e.nb.switch().lookup(&mac(2)), Some(0));
    e.fe_write(2, "state", "5");
    e.nb.sync(&mut e.svc);
    assert_eq!(e.nb.vifs()[1].queued(), 0, "a's packets left b's queue");
    assert_eq!(e.nb.switch().lookup(&mac(2)), None);
    // c's unicast to a's old address is flooded, not lost to a dead port.
    e.post_rx(&mut c, 8);
    let f = frame(mac(2), mac(4), 60, 9);
    e.queue_tx(&mut c, 0, &f, 0, None);
    let _ = c.tx.push_requests();
    e.pump();
    assert_eq!(e.nb.vifs()[1].queued(), 1);
}

#[test]
fn one_event_channel_gets_one_event_per_pass() {
    let mut e = Env::new();
    e.vif(2);
    e.vif(3);
    let mut a = e.connect(2, false);
    let mut b = e.connect(3, false);
    e.post_rx(&mut a, 8);
    e.post_rx(&mut b, 8);
    // Both send in the same pass: each gets its tx completion and a
    // packet, on its one port.
    e.queue_tx(&mut a, 0, &frame(BCAST, mac(2), 60, 1), 0, None);
    e.queue_tx(&mut b, 0, &frame(BCAST, mac(3), 60, 2), 0, None);
    let _ = a.tx.push_requests();
    let _ = b.tx.push_requests();
    e.w.0.borrow_mut().notified.clear();
    assert!(!e.nb.pump(&mut e.svc));
    let mut n = e.w.0.borrow().notified.clone();
    n.sort();
    assert_eq!(n, [1, 2], "one event per front end");
    assert_eq!(e.received(&mut a).len(), 1);
    assert_eq!(e.received(&mut b).len(), 1);
    let s = e.nb.vifs()[0].stats;
    assert_eq!((s.tx_events, s.rx_events), (1, 0));
}

#[test]
fn split_event_channels_only_when_asked_and_then_two_events_a_pass() {
    let mut e = Env::new();
    e.vif(2);
    assert_eq!(e.be(2, "feature-split-event-channels"), None);
    e.nb.set_split_event_channels(true);
    e.vif(3);
    e.vif(4);
    assert_eq!(
        e.be(3, "feature-split-event-channels").as_deref(),
        Some("1")
    );
    // d3 on two channels, d4 on one: each sends a packet to the other in
    // the same pass, so each gets a tx completion and a packet.
    let mut b = e.connect(3, true);
    let mut c = e.connect(4, false);
    e.post_rx(&mut b, 8);
    e.post_rx(&mut c, 8);
    e.queue_tx(&mut b, 0, &frame(BCAST, mac(3), 60, 1), 0, None);
    e.queue_tx(&mut c, 0, &frame(BCAST, mac(4), 60, 2), 0, None);
    let _ = b.tx.push_requests();
    let _ = c.tx.push_requests();
    e.w.0.borrow_mut().notified.clear();
    assert!(!e.nb.pump(&mut e.svc));
    let n = e.w.0.borrow().notified.len();
    assert_eq!(n, 3, "two ports for d3, one for d4");
    let s = |i: usize| {
        let s = e.nb.vifs()[i].stats;
        (s.tx_events, s.rx_events)
    };
    assert_eq!((s(1), s(2)), ((1, 1), (1, 0)));
    assert_eq!(e.received(&mut b).len(), 1);
    assert_eq!(e.received(&mut c).len(), 1);
}

#[test]
fn a_rebooted_domain_gets_its_vif_again() {
    let mut e = Env::new();
    e.vif(2);
    e.vif(3);
    let mut a = e.connect(2, false);
    let mut b = e.connect(3, false);
    e.post_rx(&mut b, 8);
    let f = frame(BCAST, mac(2), 60, 1);
    e.queue_tx(&mut a, 0, &f, 0, None);
    let _ = a.tx.push_requests();
    e.pump();
    assert_eq!(e.received(&mut b).len(), 1);
    assert_eq!(e.nb.switch().lookup(&mac(2)), Some(0));
    // d2 goes: its rings and port go, the switch forgets it, its
    // directory is removed; d3 keeps its connection.
    e.nb.domain_gone(&mut e.svc, 2);
    assert!(!e.nb.vifs()[0].connected());
    assert_eq!(e.be(2, "state"), None);
    assert_eq!(e.nb.switch().lookup(&mac(2)), None);
    assert_eq!(e.w.0.borrow().mapped.len(), 2, "only d3's two rings");
    assert!(e.nb.vifs()[1].connected());
    e.nb.sync(&mut e.svc);
    assert_eq!(e.be(2, "state"), None, "nothing written while gone");
    // The new d2 is offered the same vif (same MAC) and talks to d3.
    e.nb.domain_back(&mut e.svc, 2);
    assert_eq!(e.be(2, "state").as_deref(), Some("2"));
    assert_eq!(
        e.read("/local/domain/2/device/vif/0/mac").as_deref(),
        Some(format_mac(&mac(2)).as_str())
    );
    let mut a = e.connect(2, false);
    assert_eq!(e.be(2, "state").as_deref(), Some("4"));
    let f = frame(BCAST, mac(2), 60, 2);
    e.queue_tx(&mut a, 0, &f, 0, None);
    let _ = a.tx.push_requests();
    e.pump();
    assert_eq!(e.received(&mut b)[0].0, f);
    assert_eq!(e.nb.vifs()[0].stats.connects, 2);
}

/// An uplink for the tests: frames sent are recorded, frames to receive
/// are queued by the test.
#[derive(Clone, Default)]
struct FakeUplink(Rc<RefCell<Frames>>);

/// The frames an uplink sent, and those waiting to be received.
type Frames = (Vec<Vec<u8>>, std::collections::VecDeque<Vec<u8>>);

impl service_domain::uplink::Uplink for FakeUplink {
    fn send(&mut self, frame: &[u8]) -> bool {
        self.0.borrow_mut().0.push(frame.to_vec());
        true
    }
    fn recv(&mut self) -> Option<Vec<u8>> {
        self.0.borrow_mut().1.pop_front()
    }
}

/// A TCPv4 frame of `payload` bytes from `src` to `dst`.
fn tcp4(dst: Mac, src: Mac, payload: usize) -> Vec<u8> {
    let mut f = vec![0u8; 54 + payload];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12] = 0x08;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&[10, 0, 2, 15]);
    f[30..34].copy_from_slice(&[10, 0, 2, 2]);
    f[46] = 0x50;
    f[47] = 0x18;
    for (i, b) in f[54..].iter_mut().enumerate() {
        *b = (i * 3) as u8;
    }
    f
}

#[test]
fn the_uplink_is_a_switch_port() {
    let mut e = Env::new();
    let up = FakeUplink::default();
    e.nb.set_uplink(Box::new(up.clone()));
    e.vif(2);
    e.vif(3);
    let mut a = e.connect(2, false);
    let mut b = e.connect(3, false);
    e.post_rx(&mut a, 64);
    e.post_rx(&mut b, 64);
    let gw: Mac = [0x52, 0x55, 0x0a, 0, 2, 2];
    // A broadcast from a floods: b and the uplink.
    let arp = frame(BCAST, mac(2), 60, 1);
    e.queue_tx(&mut a, 0, &arp, 0, None);
    let _ = a.tx.push_requests();
    e.pump();
    assert_eq!(e.received(&mut b).len(), 1);
    assert_eq!(up.0.borrow().0, [arp]);
    // A frame to an unknown address goes out of the uplink (and to b).
    let f1 = frame(gw, mac(2), 100, 2);
    e.queue_tx(&mut a, 1, &f1, 0, None);
    let _ = a.tx.push_requests();
    e.pump();
    assert_eq!(up.0.borrow().0.last(), Some(&f1));
    assert_eq!(e.received(&mut b).len(), 1, "unknown: flooded");
    // The gateway answers from outside: a (whose address the switch
    // learnt) gets it, b does not; the switch learns the gateway's port.
    let r1 = frame(mac(2), gw, 200, 3);
    up.0.borrow_mut().1.push_back(r1.clone());
    e.pump();
    let got = e.received(&mut a);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, r1);
    assert!(e.received(&mut b).is_empty());
    assert_eq!(e.nb.switch().lookup(&gw), Some(UPLINK_PORT));
    // Now a's frames for the gateway go to the uplink only.
    let sent = up.0.borrow().0.len();
    let f2 = frame(gw, mac(2), 300, 4);
    e.queue_tx(&mut a, 2, &f2, 0, None);
    let _ = a.tx.push_requests();
    e.pump();
    assert_eq!(up.0.borrow().0.len(), sent + 1);
    assert!(e.received(&mut b).is_empty());
    // A GSO packet to the gateway leaves as MSS-sized frames, each with
    // its checksum, carrying the same bytes.
    let big = tcp4(gw, mac(2), 4000);
    let gso = Gso {
        kind: XEN_NETIF_GSO_TYPE_TCPV4,
        size: 1448,
    };
    e.queue_tx(
        &mut a,
        3,
        &big,
        NETTXF_csum_blank | NETTXF_data_validated,
        Some(gso),
    );
    let _ = a.tx.push_requests();
    e.pump();
    let out: Vec<Vec<u8>> = up.0.borrow().0[sent + 1..].to_vec();
    assert_eq!(
        out.iter().map(|f| f.len()).collect::<Vec<_>>(),
        [54 + 1448, 54 + 1448, 54 + 1104]
    );
    let data: Vec<u8> = out.iter().flat_map(|f| f[54..].to_vec()).collect();
    assert_eq!(data, &big[54..]);
    for f in &out {
        let mut c = f.clone();
        assert!(complete_checksum(&mut c));
        assert_eq!(&c, f, "checksum already right");
    }
    // Broadcasts from outside reach every vif; frames from outside for
    // an address outside are dropped.
    up.0.borrow_mut().1.push_back(frame(BCAST, gw, 60, 5));
    up.0.borrow_mut().1.push_back(frame(gw, gw, 60, 6));
    e.pump();
    assert_eq!(e.received(&mut a).len(), 1);
    assert_eq!(e.received(&mut b).len(), 1);
    let s = e.nb.uplink_stats();
    assert_eq!((s.tx_frames, s.rx_frames, s.tx_dropped), (6, 3, 0));
}
