//! The xenstore service on a mock hypervisor: pages on the heap, ports
//! recorded. A guest side speaks the ring as Linux's xenbus does.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::atomic::Ordering;

use pv_rings::xenstore::*;
use pv_rings::{HeapPage, RawMem, SharedMem};
use service_domain::xenstore::EVTCHN_PORT_OFFSET;
use service_domain::{DomainInfo, Platform, StoreService};
use xen_abi::XsdSockmsg;
use xenstored::wire::*;

/// What the mock hypervisor knows; shared with the test.
#[derive(Default)]
struct World {
    pages: BTreeMap<u16, &'static HeapPage>,
    info: BTreeMap<u16, Option<DomainInfo>>,
    bound: BTreeMap<u32, (u16, u32)>,
    notified: Vec<u32>,
    mapped: BTreeSet<u16>,
    log: Vec<String>,
    next_port: u32,
}

#[derive(Clone, Default)]
struct Mock(Rc<RefCell<World>>);

impl Platform for Mock {
    type Mem = RawMem<'static>;
    fn map_store(&mut self, domid: u16) -> Result<Self::Mem, i32> {
        let mut w = self.0.borrow_mut();
        let page = *w.pages.get(&domid).ok_or(xen_abi::EINVAL)?;
        w.mapped.insert(domid);
        Ok(page.mem())
    }
    fn unmap_store(&mut self, domid: u16) {
        self.0.borrow_mut().mapped.remove(&domid);
    }
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
    fn domain_info(&mut self, domid: u16) -> Result<Option<DomainInfo>, i32> {
        Ok(self.0.borrow().info.get(&domid).copied().flatten())
    }
    fn log(&mut self, line: core::fmt::Arguments<'_>) {
        self.0.borrow_mut().log.push(line.to_string());
    }
}

fn info(pages: u64, vcpus: u32) -> DomainInfo {
    DomainInfo {
        tot_pages: pages,
        max_pages: pages,
        vcpus,
        shutdown: false,
        reboot: false,
        dying: false,
        unique_id: 1,
    }
}

/// A domain's store page as the hypervisor leaves it: connection =
/// RECONNECT, evtchn_port = its port.
fn new_domain(w: &Mock, domid: u16, port: u32, pages: u64, vcpus: u32) -> &'static HeapPage {
    let page: &'static HeapPage = Box::leak(Box::new(HeapPage::one()));
    let m = page.mem();
    m.store_u32(XS_CONNECTION_OFFSET, XENSTORE_RECONNECT, Ordering::Release);
    m.store_u32(EVTCHN_PORT_OFFSET, port, Ordering::Release);
    let mut w = w.0.borrow_mut();
    w.pages.insert(domid, page);
    w.info.insert(domid, Some(info(pages, vcpus)));
    page
}

/// The guest's end: whole requests in, whole messages out, pumping the
/// service in between (as the event channel would).
struct Front {
    ring: XenstoreFront<RawMem<'static>>,
    reader: MessageReader,
    writer: MessageWriter,
    events: Vec<(String, String)>,
}

impl Front {
    fn new(page: &'static HeapPage) -> Self {
        Self {
            ring: XenstoreFront::attach(page.mem()).unwrap(),
            reader: MessageReader::new(),
            writer: MessageWriter::new(),
            events: Vec::new(),
        }
    }

    fn call(
        &mut self,
        svc: &mut StoreService<Mock>,
        kind: u32,
        tx: u32,
        payload: &[u8],
    ) -> Result<Vec<u8>, XsError> {
        let hdr = XsdSockmsg {
            r#type: kind,
            req_id: 9,
            tx_id: tx,
            len: 0,
        };
        self.writer.start(hdr, payload).unwrap();
        for _ in 0..50 {
            self.writer.flush(&mut self.ring.req).unwrap();
            svc.pump();
            while let Some((h, p)) = self.reader.poll(&mut self.ring.rsp).unwrap() {
                if h.r#type == XS_WATCH_EVENT {
                    let s: Vec<String> = p
                        .split(|&b| b == 0)
                        .map(|x| String::from_utf8_lossy(x).into_owned())
                        .collect();
                    self.events.push((s[0].clone(), s[1].clone()));
                    continue;
                }
                let p = p.to_vec();
                return if h.r#type == XS_ERROR {
                    Err(XsError::from_name(&p).unwrap())
                } else {
                    Ok(p)
                };
            }
        }
        panic!("no reply");
    }

    fn read(&mut self, svc: &mut StoreService<Mock>, path: &str) -> Result<String, XsError> {
        let mut p = path.as_bytes().to_vec();
        p.push(0);
        self.call(svc, XS_READ, 0, &p)
            .map(|v| String::from_utf8(v).unwrap())
    }

    fn write(&mut self, svc: &mut StoreService<Mock>, path: &str, v: &str) -> Result<(), XsError> {
        let mut p = path.as_bytes().to_vec();
        p.push(0);
        p.extend_from_slice(v.as_bytes());
        self.call(svc, XS_WRITE, 0, &p).map(drop)
    }

    fn watch(&mut self, svc: &mut StoreService<Mock>, path: &str, token: &str) {
        let p = format!("{path}\0{token}\0");
        assert_eq!(self.call(svc, XS_WATCH, 0, p.as_bytes()).unwrap(), b"OK\0");
        // The immediate event follows the reply.
        svc.pump();
        self.drain();
        assert_eq!(self.events.pop(), Some((path.into(), token.into())));
    }

    fn drain(&mut self) {
        while let Some((h, p)) = self.reader.poll(&mut self.ring.rsp).unwrap() {
            assert_eq!(h.r#type, XS_WATCH_EVENT);
            let s: Vec<String> = p
                .split(|&b| b == 0)
                .map(|x| String::from_utf8_lossy(x).into_owned())
                .collect();
            self.events.push((s[0].clone(), s[1].clone()));
        }
    }
}

#[test]
fn a_domain_is_connected_and_finds_what_a_toolstack_writes() {
    let world = Mock::default();
    let page = new_domain(&world, 1, 5, 65536, 2);
    let mut svc = StoreService::new(world.clone());
    svc.add_domain(1, "linux").unwrap();
    // Bound to the port the page named; connection set before the signal.
    let port = *world.0.borrow().bound.keys().next().unwrap();
    assert_eq!(world.0.borrow().bound[&port], (1, 5));
    assert_eq!(world.0.borrow().notified, [port]);
    let m = page.mem();
    assert_eq!(
        m.load_u32(XS_CONNECTION_OFFSET, Ordering::Acquire),
        XENSTORE_CONNECTED
    );
    assert_eq!(svc.ports(), [port]);

    let mut g = Front::new(page);
    // What Linux reads at xenbus init, relative to its home.
    assert_eq!(g.read(&mut svc, "name").unwrap(), "linux");
    assert_eq!(g.read(&mut svc, "domid").unwrap(), "1");
    // 65536 pages of 4 KiB: the balloon's target equals what it has.
    assert_eq!(g.read(&mut svc, "memory/target").unwrap(), "262144");
    assert_eq!(g.read(&mut svc, "memory/static-max").unwrap(), "262144");
    assert_eq!(g.read(&mut svc, "cpu/0/availability").unwrap(), "online");
    assert_eq!(g.read(&mut svc, "cpu/1/availability").unwrap(), "online");
    assert_eq!(g.read(&mut svc, "cpu/2/availability"), Err(XsError::ENOENT));
    assert_eq!(
        g.read(&mut svc, "control/platform-feature-xs_reset_watches")
            .unwrap(),
        "1"
    );
    // The domain owns its nodes: it may write its control and data.
    g.write(&mut svc, "control/feature-poweroff", "1").unwrap();
    g.write(&mut svc, "data/x", "y").unwrap();
    assert_eq!(svc.read("/local/domain/1/data/x").unwrap(), b"y");
}

#[test]
fn domains_see_each_other_only_through_permissions_and_watches() {
    let world = Mock::default();
    let p1 = new_domain(&world, 1, 5, 1024, 1);
    let p2 = new_domain(&world, 2, 7, 1024, 1);
    let mut svc = StoreService::new(world.clone());
    svc.add_domain(1, "a").unwrap();
    svc.add_domain(2, "b").unwrap();
    let (mut a, mut b) = (Front::new(p1), Front::new(p2));
    // Domain 2 cannot read domain 1's nodes (owner 1, default none).
    assert_eq!(
        b.read(&mut svc, "/local/domain/1/name"),
        Err(XsError::EACCES)
    );
    // Domain 1 opens a node to 2; 2 watches it and sees 1's write.
    a.write(&mut svc, "data/shared", "0").unwrap();
    let mut perms = b"/local/domain/1/data/shared\0".to_vec();
    perms.extend(b"n1\0r2\0");
    a.call(&mut svc, XS_SET_PERMS, 0, &perms).unwrap();
    b.watch(&mut svc, "/local/domain/1/data/shared", "w");
    b.events.clear();
    a.write(&mut svc, "data/shared", "hello").unwrap();
    b.drain();
    assert_eq!(
        b.events,
        [("/local/domain/1/data/shared".into(), "w".into())]
    );
    assert_eq!(
        b.read(&mut svc, "/local/domain/1/data/shared").unwrap(),
        "hello"
    );
}

#[test]
fn shutdown_requests_and_domain_death() {
    let world = Mock::default();
    let p1 = new_domain(&world, 1, 5, 1024, 1);
    new_domain(&world, 2, 6, 1024, 1);
    let mut svc = StoreService::new(world.clone());
    svc.add_domain(1, "a").unwrap();
    svc.add_domain(2, "b").unwrap();
    let mut g = Front::new(p1);
    // As Linux's shutdown watcher does.
    g.watch(&mut svc, "control/shutdown", "shutdown");
    g.events.clear();
    svc.request_shutdown(1, "poweroff").unwrap();
    g.drain();
    assert_eq!(g.events, [("control/shutdown".into(), "shutdown".into())]);
    assert_eq!(g.read(&mut svc, "control/shutdown").unwrap(), "poweroff");
    // The guest shuts down, then is destroyed.
    world.0.borrow_mut().info.insert(
        1,
        Some(DomainInfo {
            shutdown: true,
            ..info(1024, 1)
        }),
    );
    svc.domains_changed();
    assert_eq!(svc.domains(), [1, 2]);
    assert!(!svc.all_down());
    world.0.borrow_mut().info.insert(1, None);
    svc.domains_changed();
    assert_eq!(svc.domains(), [2]);
    assert_eq!(svc.read("/local/domain/1"), Err(XsError::ENOENT));
    assert!(!world.0.borrow().mapped.contains(&1));
    assert_eq!(world.0.borrow().bound.len(), 1);
}

#[test]
fn a_hostile_domain_is_cut_off_and_the_others_go_on() {
    let world = Mock::default();
    let bad = new_domain(&world, 1, 5, 1024, 1);
    let good = new_domain(&world, 2, 6, 1024, 1);
    let mut svc = StoreService::new(world.clone());
    svc.add_domain(1, "bad").unwrap();
    svc.add_domain(2, "good").unwrap();
    // A 5000-byte payload announced.
    let mut f = Front::new(bad);
    let mut hdr = encode(XS_WRITE, 1, 0, b"");
    hdr[12..16].copy_from_slice(&5000u32.to_le_bytes());
    f.ring.req.write(&hdr).unwrap();
    svc.pump();
    assert_eq!(
        bad.mem().load_u32(XS_ERROR_OFFSET, Ordering::Acquire),
        XENSTORE_ERROR_PROTO
    );
    assert_eq!(svc.ports().len(), 1);
    let mut g = Front::new(good);
    assert_eq!(g.read(&mut svc, "name").unwrap(), "good");
    // Indices past the ring from another domain: cut off too.
    let worse = new_domain(&world, 3, 8, 1024, 1);
    svc.add_domain(3, "worse").unwrap();
    worse
        .mem()
        .store_u32(XS_REQ_PROD_OFFSET, 99_999, Ordering::Release);
    svc.pump();
    assert_eq!(
        worse.mem().load_u32(XS_ERROR_OFFSET, Ordering::Acquire),
        XENSTORE_ERROR_RINGIDX
    );
    assert_eq!(g.read(&mut svc, "domid").unwrap(), "2");
    // Garbage: a bad port in the page, or no page at all, refuses only
    // that domain.
    let odd = new_domain(&world, 4, 0, 1024, 1);
    let _ = odd;
    assert!(svc.add_domain(4, "odd").is_err());
    assert!(svc.add_domain(9, "ghost").is_err());
    assert!(!world.0.borrow().mapped.contains(&4));
    assert_eq!(g.read(&mut svc, "name").unwrap(), "good");
}

#[test]
fn shutdown_when_every_domain_wrote_the_key() {
    let world = Mock::default();
    let (p1, p2, p3) = (
        new_domain(&world, 1, 5, 1024, 1),
        new_domain(&world, 2, 6, 1024, 1),
        new_domain(&world, 3, 7, 1024, 1),
    );
    let mut svc = StoreService::new(world.clone());
    for (d, n) in [(1, "a"), (2, "b"), (3, "c")] {
        svc.add_domain(d, n).unwrap();
    }
    svc.shutdown_when("data/done");
    let (mut a, mut b, mut c) = (Front::new(p1), Front::new(p2), Front::new(p3));
    a.write(&mut svc, "data/done", "1").unwrap();
    svc.orders();
    assert_eq!(a.read(&mut svc, "control/shutdown").unwrap(), "");
    // A domain that is cut off cannot write: it does not hold the others.
    c.ring.req.write(&[0xff; 16]).unwrap();
    let mut hdr = encode(XS_WRITE, 1, 0, b"");
    hdr[12..16].copy_from_slice(&5000u32.to_le_bytes());
    c.ring.req.write(&hdr).unwrap();
    svc.pump();
    assert_eq!(svc.ports().len(), 2);
    svc.orders();
    assert_eq!(b.read(&mut svc, "control/shutdown").unwrap(), "");
    b.write(&mut svc, "data/done", "1").unwrap();
    svc.orders();
    assert_eq!(a.read(&mut svc, "control/shutdown").unwrap(), "poweroff");
    assert_eq!(b.read(&mut svc, "control/shutdown").unwrap(), "poweroff");
    // Once: a domain that clears it (as Linux does) is not asked again.
    a.write(&mut svc, "control/shutdown", "").unwrap();
    svc.orders();
    assert_eq!(a.read(&mut svc, "control/shutdown").unwrap(), "");
    assert!(
        world
            .0
            .borrow()
            .log
            .iter()
            .any(|l| l.contains("asking d2 to power off"))
    );
    assert!(!world.0.borrow().log.iter().any(|l| l.contains("asking d3")));
}

#[test]
fn a_domain_that_reboots_is_released_and_connected_again() {
    use service_domain::DomainChange;
    let world = Mock::default();
    let old = new_domain(&world, 1, 5, 1024, 1);
    new_domain(&world, 2, 6, 1024, 1);
    let mut svc = StoreService::new(world.clone());
    svc.add_domain(1, "a").unwrap();
    svc.add_domain(2, "b").unwrap();
    let mut g = Front::new(old);
    g.call(&mut svc, XS_WRITE, 0, b"data/x\0old").unwrap();
    // It shuts down to reboot: not down (it comes back), nothing released.
    world.0.borrow_mut().info.insert(
        1,
        Some(DomainInfo {
            shutdown: true,
            reboot: true,
            ..info(1024, 1)
        }),
    );
    world.0.borrow_mut().info.insert(
        2,
        Some(DomainInfo {
            shutdown: true,
            ..info(1024, 1)
        }),
    );
    assert_eq!(svc.domains_changed(), []);
    assert!(!svc.all_down(), "a rebooting domain is not down");
    // The toolstack destroys it and builds it again under id 1: a new
    // unique id, a new page and port. Seen at once (both happened between
    // two looks).
    let new = new_domain(&world, 1, 7, 2048, 2);
    world
        .0
        .borrow_mut()
        .info
        .get_mut(&1)
        .unwrap()
        .as_mut()
        .unwrap()
        .unique_id = 2;
    let before = world.0.borrow().bound.clone();
    assert_eq!(
        svc.domains_changed(),
        [DomainChange::Released(1), DomainChange::Introduced(1)]
    );
    assert_eq!(svc.domains(), [1, 2]);
    let w = world.0.borrow();
    assert!(w.mapped.contains(&1));
    let ports: Vec<_> = w.bound.values().copied().collect();
    assert!(ports.contains(&(1, 7)) && !ports.contains(&(1, 5)));
    assert_eq!(w.bound.len(), before.len());
    drop(w);
    // The old domain's nodes went; the new one's are fresh.
    let mut h = Front::new(new);
    assert_eq!(h.read(&mut svc, "name").unwrap(), "a");
    assert_eq!(h.read(&mut svc, "memory/target").unwrap(), "8192");
    assert_eq!(h.read(&mut svc, "data/x"), Err(XsError::ENOENT));
    // Now d1 powers off: with d2 down too, the work is over.
    world
        .0
        .borrow_mut()
        .info
        .get_mut(&1)
        .unwrap()
        .as_mut()
        .unwrap()
        .shutdown = true;
    assert_eq!(svc.domains_changed(), []);
    assert!(svc.all_down());
    // Destroyed (on_reboot=destroy, say): released, never introduced.
    world.0.borrow_mut().info.insert(1, None);
    assert_eq!(svc.domains_changed(), [DomainChange::Released(1)]);
    assert_eq!(svc.domains(), [2]);
}
