//! The ring transport, with a guest front end on `pv-rings`: messages
//! larger than the 1024-byte rings go in pieces both ways, watch events
//! arrive on the ring, and a domain that breaks the protocol is cut off
//! alone.

mod common;

use common::parse;
use pv_rings::HeapPage;
use pv_rings::xenstore::*;
use xen_abi::XsdSockmsg;
use xenstored::ring::{REQUESTS_PER_PUMP, RingConnection, SERVER_FEATURES};
use xenstored::wire::*;
use xenstored::{NoTransport, Xenstored};

/// The guest side: writes whole requests in pieces, reads whole messages.
struct Guest<M> {
    ring: XenstoreFront<M>,
    reader: MessageReader,
    writer: MessageWriter,
}

impl<M: pv_rings::SharedMem + Clone> Guest<M> {
    fn new(mem: M) -> Self {
        Self {
            ring: XenstoreFront::attach(mem).unwrap(),
            reader: MessageReader::new(),
            writer: MessageWriter::new(),
        }
    }

    /// Sends a request, pumping the server until it is all on the ring,
    /// then until its reply is back; returns the messages received.
    fn call<N: pv_rings::SharedMem + Clone>(
        &mut self,
        srv: &mut RingConnection<N>,
        xs: &mut Xenstored,
        kind: u32,
        payload: &[u8],
    ) -> Vec<(u32, Vec<u8>)> {
        let hdr = XsdSockmsg {
            r#type: kind,
            req_id: 7,
            tx_id: 0,
            len: 0,
        };
        self.writer.start(hdr, payload).unwrap();
        let mut got = Vec::new();
        for _ in 0..100 {
            self.writer.flush(&mut self.ring.req).unwrap();
            srv.pump(xs, &mut NoTransport).unwrap();
            while let Some((h, p)) = self.reader.poll(&mut self.ring.rsp).unwrap() {
                got.push((h.r#type, p.to_vec()));
            }
            if got.iter().any(|(k, _)| *k != XS_WATCH_EVENT) {
                return got;
            }
        }
        panic!("no reply");
    }
}

#[test]
fn large_messages_cross_the_small_rings_in_pieces() {
    let page = HeapPage::one();
    let mut xs = Xenstored::new();
    let conn = xs.introduce_domain(1);
    let mut srv = RingConnection::attach(page.mem(), conn).unwrap();
    let mut g = Guest::new(page.mem());
    assert_eq!(g.ring.connection(), XENSTORE_CONNECTED);
    assert_eq!(g.ring.server_features(), SERVER_FEATURES);
    // A 2000-byte value (what the node-size quota allows a domain): two
    // ring-fulls each way.
    let value: Vec<u8> = (0..2000u32).map(|i| (i % 251) as u8).collect();
    let mut req = b"data/big\0".to_vec();
    req.extend_from_slice(&value);
    // Domain 1 may write its own home (made by dom0 first).
    let d0 = xs.connect_socket();
    for (t, p) in [
        (XS_MKDIR, &b"/local/domain/1\0"[..]),
        (XS_SET_PERMS, &b"/local/domain/1\0n1\0"[..]),
    ] {
        let h = XsdSockmsg {
            r#type: t,
            req_id: 0,
            tx_id: 0,
            len: p.len() as u32,
        };
        xs.handle(d0, &h, p, &mut NoTransport);
    }
    let r = g.call(&mut srv, &mut xs, XS_WRITE, &req);
    assert_eq!(r, [(XS_WRITE, b"OK\0".to_vec())]);
    let r = g.call(&mut srv, &mut xs, XS_READ, b"data/big\0");
    assert_eq!(r, [(XS_READ, value)]);
    // A watch: reply, then the immediate event, both on the ring.
    let r = g.call(&mut srv, &mut xs, XS_WATCH, b"data\0tok\0");
    assert_eq!(r[0], (XS_WATCH, b"OK\0".to_vec()));
    let mut events = r[1..].to_vec();
    srv.pump(&mut xs, &mut NoTransport).unwrap();
    while let Some((h, p)) = g.reader.poll(&mut g.ring.rsp).unwrap() {
        events.push((h.r#type, p.to_vec()));
    }
    assert_eq!(events, [(XS_WATCH_EVENT, b"data\0tok\0".to_vec())]);
    assert_eq!(g.ring.error(), XENSTORE_ERROR_NONE);
}

#[test]
fn a_domain_that_breaks_the_protocol_is_cut_off_alone() {
    let bad_page = HeapPage::one();
    let good_page = HeapPage::one();
    let mut xs = Xenstored::new();
    let bad_conn = xs.introduce_domain(1);
    let good_conn = xs.introduce_domain(2);
    let mut bad = RingConnection::attach(bad_page.mem(), bad_conn).unwrap();
    let mut good = RingConnection::attach(good_page.mem(), good_conn).unwrap();
    // A header announcing 5000 bytes.
    let mut g = Guest::new(bad_page.mem());
    let hdr = encode(XS_WRITE, 1, 0, b"");
    let mut hdr = hdr;
    hdr[12..16].copy_from_slice(&5000u32.to_le_bytes());
    g.ring.req.write(&hdr).unwrap();
    assert!(bad.pump(&mut xs, &mut NoTransport).is_err());
    assert!(bad.fault().is_some());
    assert_eq!(g.ring.error(), XENSTORE_ERROR_PROTO);
    // Pumping again does nothing more.
    assert!(bad.pump(&mut xs, &mut NoTransport).is_err());
    xs.disconnect(bad_conn);
    // The other domain is served as before.
    let mut g2 = Guest::new(good_page.mem());
    let r = g2.call(&mut good, &mut xs, XS_GET_DOMAIN_PATH, b"2\0");
    assert_eq!(r, [(XS_GET_DOMAIN_PATH, b"/local/domain/2\0".to_vec())]);

    // Indices out of range (prod - cons > 1024): error field RINGIDX.
    let page3 = HeapPage::one();
    let c3 = xs.introduce_domain(3);
    let mut srv3 = RingConnection::attach(page3.mem(), c3).unwrap();
    let mem = page3.mem();
    pv_rings::SharedMem::store_u32(
        &mem,
        XS_REQ_PROD_OFFSET,
        5000,
        core::sync::atomic::Ordering::Release,
    );
    assert!(srv3.pump(&mut xs, &mut NoTransport).is_err());
    assert_eq!(
        pv_rings::SharedMem::load_u32(&mem, XS_ERROR_OFFSET, core::sync::atomic::Ordering::Acquire),
        XENSTORE_ERROR_RINGIDX
    );
}

#[test]
fn one_pump_serves_a_bounded_number_of_requests() {
    let page = HeapPage::one();
    let mut xs = Xenstored::new();
    let conn = xs.introduce_domain(1);
    let mut srv = RingConnection::attach(page.mem(), conn).unwrap();
    let mut g = Guest::new(page.mem());
    // Fill the request ring with small requests (26 bytes each).
    let one = encode(XS_GET_DOMAIN_PATH, 0, 0, b"1\0");
    let mut n = 0;
    while g.ring.req.write(&one).unwrap() == one.len() {
        n += 1;
    }
    assert!(n > REQUESTS_PER_PUMP);
    let p = srv.pump(&mut xs, &mut NoTransport).unwrap();
    assert!(p.notify);
    assert!(p.more);
    let mut replies = 0;
    let mut reader = MessageReader::new();
    while let Some((h, _)) = reader.poll(&mut g.ring.rsp).unwrap() {
        assert_eq!(h.r#type, XS_GET_DOMAIN_PATH);
        replies += 1;
    }
    assert_eq!(replies, REQUESTS_PER_PUMP);
    let _ = parse;
}
