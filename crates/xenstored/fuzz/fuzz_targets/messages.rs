//! Requests from four connections (a socket client, domain 0, and the
//! unprivileged domains 1, 2 and 3) under small quotas, so the quota paths
//! are reached. The input is a sequence of steps:
//!
//! - selector byte: bits 0-1 the connection, bits 2-3 zero = drain every
//!   connection's output after the step, bit 4 sends the request even if
//!   the transport would hold it back;
//! - message type byte: one of the protocol's requests (or, rarely, the
//!   raw byte);
//! - transaction byte: 0 (none, half the time) or a small transaction id;
//! - payload: a count byte, then that many tokens, each a piece from a
//!   dictionary of paths, names, permissions and NULs, or one raw byte.
//!
//! After every step: each connection's output parses (16-byte header,
//! `len` equal to the payload's, at most 4096), no drain returns more
//! watch events than `queued_events`, and no unprivileged request takes a
//! domain past its node quota.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xenstored::wire::{self, XsdSockmsg};
use xenstored::{ConnId, NoTransport, Quotas, Xenstored};

const KINDS: &[u32] = &[
    wire::XS_READ,
    wire::XS_WRITE,
    wire::XS_MKDIR,
    wire::XS_RM,
    wire::XS_DIRECTORY,
    wire::XS_DIRECTORY_PART,
    wire::XS_GET_PERMS,
    wire::XS_SET_PERMS,
    wire::XS_WATCH,
    wire::XS_UNWATCH,
    wire::XS_TRANSACTION_START,
    wire::XS_TRANSACTION_END,
    wire::XS_GET_DOMAIN_PATH,
    wire::XS_INTRODUCE,
    wire::XS_RELEASE,
    wire::XS_IS_DOMAIN_INTRODUCED,
    wire::XS_RESUME,
    wire::XS_SET_TARGET,
    wire::XS_RESET_WATCHES,
    // The ones most worth repeating.
    wire::XS_WRITE,
    wire::XS_WRITE,
    wire::XS_MKDIR,
    wire::XS_TRANSACTION_START,
    wire::XS_TRANSACTION_END,
    wire::XS_WATCH,
];

const TOKENS: &[&[u8]] = &[
    b"\0",
    b"\0",
    b"\0",
    b"/",
    b"/local/domain/1",
    b"/local/domain/2",
    b"/local/domain/3",
    b"/local/domain/0",
    b"/local/domain",
    b"/tool",
    b"/a",
    b"/b",
    b"/a/b",
    b"x",
    b"y",
    b"/x",
    b"/y",
    b"data",
    b"@introduceDomain",
    b"@releaseDomain",
    b"n0",
    b"r1",
    b"w2",
    b"b3",
    b"n1",
    b"b0",
    b"n2",
    b"n3",
    b"T",
    b"F",
    b"0",
    b"1",
    b"2",
    b"3",
    b"4",
    b"tok",
    b"//",
    b"\xff",
    b"01234567890123456789012345678901234567890123456789012345678901234567890123456789",
    &[b'z'; 250],
];

fn quotas() -> Quotas {
    Quotas {
        nodes_per_domain: 6,
        watches_per_domain: 3,
        transactions_per_conn: 2,
        nodes_per_transaction: 8,
        perms_per_node: 3,
        node_size: 160,
        outstanding_requests: 4,
        outstanding_requests_privileged: 6,
        queued_events: 5,
    }
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
}

/// Drains `conn` and checks every message; returns the watch events seen.
fn drain(xs: &mut Xenstored, conn: ConnId) -> usize {
    let mut events = 0;
    while let Some(m) = xs.next_output(conn) {
        assert!(m.len() >= wire::HEADER_SIZE, "short message {m:?}");
        let hdr = wire::decode_header(m[..wire::HEADER_SIZE].try_into().unwrap());
        assert_eq!(hdr.len as usize, m.len() - wire::HEADER_SIZE, "bad len");
        assert!(hdr.len as usize <= wire::XENSTORE_PAYLOAD_MAX, "too long");
        if hdr.r#type == wire::XS_WATCH_EVENT {
            events += 1;
        }
    }
    events
}

fuzz_target!(|data: &[u8]| {
    let q = quotas();
    let mut xs = Xenstored::with_quotas(q.clone());
    let sock = xs.connect_socket();
    let mut conns: Vec<(ConnId, u32)> = vec![(sock, 0)];
    for d in 1..=3 {
        conns.push((xs.introduce_domain(d), d));
    }
    for &(c, _) in &conns {
        drain(&mut xs, c);
    }
    let mut dropped = [0u64; 4];
    let mut input = Input(data);
    let mut req_id = 0u32;
    while let Some(sel) = input.byte() {
        let Some(kind) = input.byte() else { break };
        let Some(tx) = input.byte() else { break };
        let Some(count) = input.byte() else { break };
        let kind = if kind >= 250 {
            u32::from(kind) - 250 + 20 // 20-25, some unsupported
        } else {
            KINDS[kind as usize % KINDS.len()]
        };
        let tx_id = if tx < 128 { 0 } else { u32::from(tx % 6) };
        let mut payload = Vec::new();
        for _ in 0..count % 64 {
            let Some(t) = input.byte() else { break };
            if t < 200 {
                payload.extend_from_slice(TOKENS[t as usize % TOKENS.len()]);
            } else {
                let Some(raw) = input.byte() else { break };
                payload.push(raw);
            }
        }
        payload.truncate(wire::XENSTORE_PAYLOAD_MAX);
        let (conn, domid) = conns[(sel & 3) as usize];
        if sel & 0x10 == 0 && !xs.accepts_requests(conn) {
            // A transport would wait for the client to read first.
            drain(&mut xs, conn);
        }
        let before: Vec<u32> = (1..=3).map(|d| xs.entries_of(d)).collect();
        req_id = req_id.wrapping_add(1);
        let hdr = XsdSockmsg {
            r#type: kind,
            req_id,
            tx_id,
            len: payload.len() as u32,
        };
        xs.handle(conn, &hdr, &payload, &mut NoTransport);
        if domid != 0 {
            for d in 1..=3u32 {
                let now = xs.entries_of(d);
                let was = before[d as usize - 1];
                assert!(
                    now as usize <= q.nodes_per_domain || now <= was,
                    "domain {domid}'s request took domain {d} from {was} to {now} nodes"
                );
            }
        }
        for (i, &(c, _)) in conns.iter().enumerate() {
            let d = xs.dropped_events(c);
            assert!(d >= dropped[i], "dropped events went down");
            dropped[i] = d;
        }
        if sel & 0x0c == 0 {
            for &(c, _) in &conns {
                let events = drain(&mut xs, c);
                assert!(
                    events <= q.queued_events,
                    "{events} events queued for connection {c}"
                );
            }
        }
    }
    for &(c, _) in &conns {
        let events = drain(&mut xs, c);
        assert!(events <= q.queued_events, "{events} events queued for {c}");
    }
});
