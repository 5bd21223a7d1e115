//! Bytes of heap per stored node: a counting global allocator measures
//! what a store of 100,000 nodes (`/local/domain/N/device/vbd/M/key`,
//! 8-16 byte values) holds once built through `Xenstored::handle`.
//!
//!     cargo run --release -p xenstored --example node_memory

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use xen_abi::XsdSockmsg;
use xenstored::{NoTransport, Xenstored, wire};

/// The system allocator, counting the bytes live and at most live.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = LIVE.fetch_add(n, Relaxed) + n;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees are `Counting`'s; the counters are
// atomics and never touch the allocated memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract (non-zero size),
        // which is `System.alloc`'s.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
            ALLOCS.fetch_add(1, Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, i.e. from `System`, with
        // `layout`, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
            ALLOCS.fetch_add(1, Relaxed);
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` was allocated by `System` with `layout` and
        // `new_size` is non-zero, as the caller guarantees.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const NODES: usize = 100_000;

fn main() {
    let before = LIVE.load(Relaxed);
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
    let live = LIVE.load(Relaxed) - before;
    let nodes = xs.node_count();
    assert_eq!(nodes, count);
    let allocs = ALLOCS.load(Relaxed);
    println!("nodes:              {nodes}");
    println!("heap held:          {live} bytes");
    println!(
        "bytes per node:     {:.1} (of which value bytes {:.1})",
        live as f64 / nodes as f64,
        values as f64 / nodes as f64
    );
    println!(
        "peak while building: {} bytes; {allocs} allocations",
        PEAK.load(Relaxed) - before
    );
    println!(
        "(Node struct: {} bytes; child slot (Arc<str>, Arc<Node>): {} bytes)",
        std::mem::size_of::<xenstored::tree::Node>(),
        std::mem::size_of::<(std::sync::Arc<str>, std::sync::Arc<xenstored::tree::Node>)>()
    );
    drop(xs);
}
