//! Bytes of heap per stored node: what a store of 100,000 nodes
//! (`/local/domain/N/device/vbd/M/key`, 8-16 byte values), built through
//! `Xenstored::handle`, holds by `Xenstored::heap_bytes` (every buffer and
//! `Arc` allocation of the tree, without the allocator's own overhead).
//!
//!     cargo run --release -p xenstored --example node_memory

use xen_abi::XsdSockmsg;
use xenstored::{NoTransport, Xenstored, wire};

const NODES: usize = 100_000;

fn main() {
    let mut xs = Xenstored::new();
    let conn = xs.connect_socket();
    let mut payload = Vec::with_capacity(128);
    let mut values = 0usize;
    // Four nodes exist or are made first (/, /tool, /local, /local/domain);
    // each domain adds 3 (N, device, vbd), each vbd M 1 + 10 keys.
    let mut count = 4;
    'fill: for d in 1usize.. {
        count += 3;
        for m in 0..100 {
            if count >= NODES {
                break 'fill;
            }
            count += 11;
            for k in 0..10 {
                payload.clear();
                payload.extend_from_slice(
                    format!("/local/domain/{d}/device/vbd/{m}/key-{k}").as_bytes(),
                );
                payload.push(0);
                // 8..=16 bytes.
                let len = 8 + (d + m + k) % 9;
                let value = format!("{:0>len$}", d * 1000 + m * 10 + k);
                values += value.len();
                payload.extend_from_slice(value.as_bytes());
                let hdr = XsdSockmsg {
                    r#type: wire::XS_WRITE,
                    req_id: 1,
                    tx_id: 0,
                    len: payload.len() as u32,
                };
                xs.handle(conn, &hdr, &payload, &mut NoTransport);
                while let Some(m) = xs.next_output(conn) {
                    assert_eq!(&m[wire::HEADER_SIZE..], b"OK\0");
                }
            }
        }
    }
    drop(payload);
    let live = xs.heap_bytes();
    let nodes = xs.node_count();
    assert_eq!(nodes, count);
    println!("nodes:              {nodes}");
    println!("heap held:          {live} bytes");
    println!(
        "bytes per node:     {:.1} (of which value bytes {:.1})",
        live as f64 / nodes as f64,
        values as f64 / nodes as f64
    );
    println!(
        "(Node struct: {} bytes; child slot (name, sequence, node): {} bytes)",
        std::mem::size_of::<xenstored::tree::Node>(),
        std::mem::size_of::<xenstored::tree::Child>()
    );
    drop(xs);
}
