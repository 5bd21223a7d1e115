//! Embedding the server as a service domain does: a domain's xenstore
//! page (here a heap page; in a domain, the page mapped through the
//! domain's grant 1), a connection for the domain, and a pump after every
//! event. The "guest" side writes a request with `pv-rings` and reads the
//! reply, as Linux's xenbus does.
//!
//!     cargo run -p xenstored --example ring_server

use pv_rings::HeapPage;
use pv_rings::xenstore::{MessageReader, MessageWriter, XenstoreFront};
use xen_abi::XsdSockmsg;
use xenstored::ring::RingConnection;
use xenstored::{NoTransport, Xenstored, wire};

fn main() {
    let page = HeapPage::one();
    let mut xs = Xenstored::new();

    // What a toolstack does first, as domain 0: the domain's home, owned
    // by it, and its name.
    let dom0 = xs.connect_socket();
    for (kind, payload) in [
        (wire::XS_MKDIR, &b"/local/domain/5\0"[..]),
        (wire::XS_SET_PERMS, &b"/local/domain/5\0n5\0"[..]),
        (wire::XS_WRITE, &b"/local/domain/5/name\0guest"[..]),
    ] {
        let hdr = XsdSockmsg {
            r#type: kind,
            req_id: 0,
            tx_id: 0,
            len: payload.len() as u32,
        };
        xs.handle(dom0, &hdr, payload, &mut NoTransport);
        let reply = xs.next_output(dom0).expect("a reply");
        assert_eq!(&reply[wire::HEADER_SIZE..], b"OK\0");
    }

    // The service's side: domain 5 is introduced and its page attached
    // (this sets `connection` to CONNECTED; then signal the domain).
    let conn = xs.introduce_domain(5);
    let mut ring = RingConnection::attach(page.mem(), conn).expect("a fresh page");

    // The guest's side: its name (relative paths are under its home), a
    // write and a read back, and a node it may not read.
    let mut front = XenstoreFront::attach(page.mem()).expect("a fresh page");
    let mut writer = MessageWriter::new();
    let mut reader = MessageReader::new();
    for (kind, payload) in [
        (wire::XS_READ, &b"name\0"[..]),
        (wire::XS_WRITE, &b"data/greeting\0hello"[..]),
        (wire::XS_READ, &b"data/greeting\0"[..]),
        (wire::XS_READ, &b"/local/domain/0\0"[..]),
    ] {
        let hdr = XsdSockmsg {
            r#type: kind,
            req_id: 1,
            tx_id: 0,
            len: 0,
        };
        writer.start(hdr, payload).expect("idle writer");
        writer.flush(&mut front.req).expect("ring ok");
        // The event channel fired: the server pumps the ring.
        let pumped = ring
            .pump(&mut xs, &mut NoTransport)
            .expect("well-behaved guest");
        assert!(pumped.notify, "the server signals after moving the indices");
        let (h, p) = reader
            .poll(&mut front.rsp)
            .expect("ring ok")
            .expect("a whole reply");
        let what = if h.r#type == wire::XS_ERROR {
            "error"
        } else {
            "reply"
        };
        println!(
            "{} {:?} -> {what} {:?}",
            kind,
            String::from_utf8_lossy(payload),
            String::from_utf8_lossy(p)
        );
    }
}
