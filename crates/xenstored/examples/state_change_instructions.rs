//! A load-independent figure: instructions per Linux-style state change
//! (TRANSACTION_START, READ `state`, WRITE `state`, TRANSACTION_END) on a
//! store of 65 domains. Run it under callgrind with two iteration counts and
//! divide the difference (docs/figures.md):
//!
//!     cargo build --release -p xenstored --example state_change_instructions
//!     valgrind --tool=callgrind target/release/examples/state_change_instructions 1000
//!     valgrind --tool=callgrind target/release/examples/state_change_instructions 11000
//!
//! The client side (building requests, reading replies) is counted too.

use xen_abi::XsdSockmsg;
use xenstored::{NoTransport, Xenstored, wire};
fn req(xs: &mut Xenstored, c: u32, kind: u32, tx: u32, p: &[u8]) -> Vec<u8> {
    let h = XsdSockmsg {
        r#type: kind,
        req_id: 1,
        tx_id: tx,
        len: p.len() as u32,
    };
    xs.handle(c, &h, p, &mut NoTransport);
    let mut last = Vec::new();
    while let Some(m) = xs.next_output(c) {
        last = m;
    }
    last
}
fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let mut xs = Xenstored::new();
    let s = xs.connect_socket();
    for d in 1..=65u32 {
        for k in [
            "name",
            "domid",
            "device/vbd/51712/state",
            "device/vbd/51712/backend",
            "device/vbd/51712/ring-ref",
            "control/shutdown",
        ] {
            let mut p = format!("/local/domain/{d}/{k}").into_bytes();
            p.push(0);
            p.extend(b"1");
            req(&mut xs, s, wire::XS_WRITE, 0, &p);
        }
        xs.introduce_domain(d);
    }
    let c = xs.domain_conn(1).unwrap();
    let path = b"/local/domain/1/device/vbd/51712/state\0";
    let mut w = path.to_vec();
    w.extend(b"4");
    for _ in 0..n {
        let id = req(&mut xs, c, wire::XS_TRANSACTION_START, 0, b"\0");
        let tx: u32 = std::str::from_utf8(&id[16..id.len() - 1])
            .unwrap()
            .parse()
            .unwrap();
        req(&mut xs, c, wire::XS_READ, tx, path);
        req(&mut xs, c, wire::XS_WRITE, tx, &w);
        req(&mut xs, c, wire::XS_TRANSACTION_END, tx, b"T\0");
    }
}
