//! The per-request path of the xenstore server: `Xenstored::handle` plus
//! draining the connection's output (`next_output`), as a transport does.
//!
//! - `read`, `write`, `directory`: one request on a socket connection
//!   (domain 0) against a store laid out like a host's (65 domains, each
//!   with `name`, `domid`, `memory/target`, `control/shutdown` and a
//!   `device/vbd/51712` front end); `directory` lists a node with 10
//!   children.
//! - `state change`: what Linux's `xenbus_switch_state` sends from the
//!   front end domain: TRANSACTION_START, READ `.../state`, WRITE
//!   `.../state`, TRANSACTION_END "T". Alone, and while 64 other domains
//!   each hold an open transaction that has read some of their nodes (so
//!   their snapshots are alive and writes must copy the shared path).
//! - `transaction start`: TRANSACTION_START alone on stores of 1,000 and
//!   100,000 nodes (a snapshot is one reference count: O(1)).
//!
//! Criterion's time per iteration is the time per request (or per state
//! change); `Throughput::Elements(1)` makes it report requests per second.
//! Bytes per stored node are measured by `examples/node_memory.rs`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use xen_abi::XsdSockmsg;
use xenstored::{ConnId, NoTransport, Xenstored, wire};

/// Domains in the host-like store.
const DOMAINS: u32 = 65;
/// The front end whose state the state-change benchmarks switch.
const FRONT: u32 = 1;

fn hdr(kind: u32, tx_id: u32, payload: &[u8]) -> XsdSockmsg {
    XsdSockmsg {
        r#type: kind,
        req_id: 7,
        tx_id,
        len: payload.len() as u32,
    }
}

/// One request through the real path: handle, then drain every queued
/// message; returns the reply's payload (the last reply queued).
fn request(xs: &mut Xenstored, conn: ConnId, kind: u32, tx_id: u32, payload: &[u8]) -> Vec<u8> {
    xs.handle(conn, &hdr(kind, tx_id, payload), payload, &mut NoTransport);
    let mut reply = Vec::new();
    while let Some(m) = xs.next_output(conn) {
        reply = m;
    }
    reply.split_off(wire::HEADER_SIZE)
}

/// The same, for setup: the request must succeed.
fn must(xs: &mut Xenstored, conn: ConnId, kind: u32, tx_id: u32, payload: &[u8]) -> Vec<u8> {
    xs.handle(conn, &hdr(kind, tx_id, payload), payload, &mut NoTransport);
    let m = xs.next_output(conn).expect("a reply");
    while xs.next_output(conn).is_some() {}
    let h = wire::decode_header(m[..wire::HEADER_SIZE].try_into().unwrap());
    let body = m[wire::HEADER_SIZE..].to_vec();
    assert_ne!(
        h.r#type,
        wire::XS_ERROR,
        "request {kind} {:?}: {}",
        String::from_utf8_lossy(payload),
        String::from_utf8_lossy(&body)
    );
    body
}

fn write(xs: &mut Xenstored, conn: ConnId, path: &str, value: &str) {
    let mut p = path.as_bytes().to_vec();
    p.push(0);
    p.extend_from_slice(value.as_bytes());
    must(xs, conn, wire::XS_WRITE, 0, &p);
}

fn nul(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// A store like a host's: for each domain N in 1..=DOMAINS, what the
/// toolstack writes (owned by domain 0, readable by N) and a vbd front end
/// owned by N. Every domain is introduced. Returns the server and the
/// socket connection.
fn host_store() -> (Xenstored, ConnId) {
    let mut xs = Xenstored::new();
    let sock = xs.connect_socket();
    for d in 1..=DOMAINS {
        let home = format!("/local/domain/{d}");
        must(&mut xs, sock, wire::XS_MKDIR, 0, &nul(&home));
        let mut perms = nul(&home);
        perms.extend(nul("n0"));
        perms.extend(nul(&format!("r{d}")));
        must(&mut xs, sock, wire::XS_SET_PERMS, 0, &perms);
        write(&mut xs, sock, &format!("{home}/name"), &format!("guest{d}"));
        write(&mut xs, sock, &format!("{home}/domid"), &d.to_string());
        write(&mut xs, sock, &format!("{home}/memory/target"), "524288");
        write(&mut xs, sock, &format!("{home}/control/shutdown"), "");
        let dev = format!("{home}/device");
        must(&mut xs, sock, wire::XS_MKDIR, 0, &nul(&dev));
        let mut perms = nul(&dev);
        perms.extend(nul(&format!("n{d}")));
        perms.extend(nul("r0"));
        must(&mut xs, sock, wire::XS_SET_PERMS, 0, &perms);
        let vbd = format!("{dev}/vbd/51712");
        for (k, v) in [
            ("backend", format!("/local/domain/0/backend/vbd/{d}/51712")),
            ("backend-id", "0".into()),
            ("state", "1".into()),
            ("virtual-device", "51712".into()),
            ("device-type", "disk".into()),
            ("ring-ref", "8".into()),
            ("event-channel", "10".into()),
            ("protocol", "x86_64-abi".into()),
            ("multi-queue-num-queues", "1".into()),
            ("persistent", "1".into()),
        ] {
            write(&mut xs, sock, &format!("{vbd}/{k}"), &v);
        }
        xs.introduce_domain(d);
    }
    (xs, sock)
}

fn state_path(d: u32) -> String {
    format!("/local/domain/{d}/device/vbd/51712/state")
}

/// `xenbus_switch_state`: START, READ state, WRITE state, END "T".
fn state_change(xs: &mut Xenstored, conn: ConnId, path: &[u8], write: &[u8]) {
    let id = request(xs, conn, wire::XS_TRANSACTION_START, 0, b"\0");
    let tx = id
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .fold(0u32, |v, &b| v * 10 + u32::from(b - b'0'));
    black_box(request(xs, conn, wire::XS_READ, tx, path));
    black_box(request(xs, conn, wire::XS_WRITE, tx, write));
    let end = request(xs, conn, wire::XS_TRANSACTION_END, tx, b"T\0");
    debug_assert_eq!(end, b"OK\0");
}

fn bench_requests(c: &mut Criterion) {
    let (mut xs, sock) = host_store();
    let mut g = c.benchmark_group("request");
    g.throughput(Throughput::Elements(1));

    let read = nul(&state_path(32));
    assert_eq!(request(&mut xs, sock, wire::XS_READ, 0, &read), b"1");
    g.bench_function("read", |b| {
        b.iter(|| black_box(request(&mut xs, sock, wire::XS_READ, 0, black_box(&read))))
    });

    let mut write = nul(&state_path(32));
    write.extend_from_slice(b"4");
    g.bench_function("write", |b| {
        b.iter(|| black_box(request(&mut xs, sock, wire::XS_WRITE, 0, black_box(&write))))
    });

    let dir = nul("/local/domain/32/device/vbd/51712");
    assert_eq!(
        request(&mut xs, sock, wire::XS_DIRECTORY, 0, &dir)
            .iter()
            .filter(|&&b| b == 0)
            .count(),
        10
    );
    g.bench_function("directory (10 children)", |b| {
        b.iter(|| {
            black_box(request(
                &mut xs,
                sock,
                wire::XS_DIRECTORY,
                0,
                black_box(&dir),
            ))
        })
    });
    g.finish();
}

fn bench_state_change(c: &mut Criterion) {
    let mut g = c.benchmark_group("state change");
    g.throughput(Throughput::Elements(1));
    let path = nul(&state_path(FRONT));
    let mut write = path.clone();
    write.extend_from_slice(b"4");

    let (mut xs, _) = host_store();
    let front = xs.domain_conn(FRONT).unwrap();
    state_change(&mut xs, front, &path, &write);
    assert_eq!(request(&mut xs, front, wire::XS_READ, 0, &path), b"4");
    g.bench_function("alone", |b| {
        b.iter(|| state_change(&mut xs, front, &path, &write))
    });

    // 64 other domains each hold a transaction that has read their own
    // state and name: 64 snapshots of the store stay alive.
    let (mut xs, _) = host_store();
    let front = xs.domain_conn(FRONT).unwrap();
    for d in (1..=DOMAINS).filter(|&d| d != FRONT) {
        let conn = xs.domain_conn(d).unwrap();
        let id = must(&mut xs, conn, wire::XS_TRANSACTION_START, 0, b"\0");
        let tx: u32 = std::str::from_utf8(&id[..id.len() - 1])
            .unwrap()
            .parse()
            .unwrap();
        must(&mut xs, conn, wire::XS_READ, tx, &nul(&state_path(d)));
        must(&mut xs, conn, wire::XS_READ, tx, b"name\0");
    }
    state_change(&mut xs, front, &path, &write);
    assert_eq!(request(&mut xs, front, wire::XS_READ, 0, &path), b"4");
    g.bench_function("with 64 open transactions", |b| {
        b.iter(|| state_change(&mut xs, front, &path, &write))
    });
    g.finish();
}

/// A store of about `nodes` nodes: /local/domain/N/device/vbd/M/key.
fn store_of(nodes: usize) -> (Xenstored, ConnId) {
    let mut xs = Xenstored::new();
    let sock = xs.connect_socket();
    // `/`, `/tool`, `/local`, `/local/domain`; each domain adds its home,
    // `device` and `vbd`, each vbd M itself and 10 keys.
    let mut count = 4;
    'fill: for d in 0.. {
        count += 3;
        for m in 0..100 {
            if count >= nodes {
                break 'fill;
            }
            count += 11;
            for k in 0..10 {
                write(
                    &mut xs,
                    sock,
                    &format!("/local/domain/{d}/device/vbd/{m}/key{k}"),
                    "value-0123",
                );
            }
        }
    }
    assert_eq!(xs.node_count(), count);
    (xs, sock)
}

fn bench_start(c: &mut Criterion) {
    let mut g = c.benchmark_group("transaction start");
    g.throughput(Throughput::Elements(1));
    for nodes in [1_000, 100_000] {
        let (mut xs, sock) = store_of(nodes);
        let size = xs.node_count();
        // START alone is timed; the transactions are ended (untimed) in
        // batches so the connection's table stays small.
        g.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                let mut open = Vec::with_capacity(64);
                while left > 0 {
                    let batch = left.min(64);
                    let t = Instant::now();
                    for _ in 0..batch {
                        open.push(request(&mut xs, sock, wire::XS_TRANSACTION_START, 0, b"\0"));
                    }
                    total += t.elapsed();
                    for id in open.drain(..) {
                        let tx: u32 = std::str::from_utf8(&id[..id.len() - 1])
                            .unwrap()
                            .parse()
                            .unwrap();
                        request(&mut xs, sock, wire::XS_TRANSACTION_END, tx, b"F\0");
                    }
                    left -= batch;
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_requests, bench_state_change, bench_start
}
criterion_main!(benches);
