//! Two threads, busy-polling, request plus response per message:
//! - `stream16`: 16-byte requests and responses, one page (128 slots);
//! - `stream112`: blkif requests (112 bytes) and responses (16), one page
//!   (32 slots);
//! - `roundtrip16`: one request in flight at a time.
//!
//! Each case also runs over `rtrb` used as two queues (requests and
//! responses) of the same capacity, and with Xen's own `io/ring.h` macros
//! (`C ring.h`: `benches/c/ring_h.c`, both ends in C, built by build.rs
//! from the system's Xen headers, Debian's `libxen-dev`; left out, with a
//! note, where they are missing). Criterion's time per iteration is the
//! time per message: each iteration count is run as that many messages
//! (`iter_custom`). Threads are pinned to two different cores when the
//! machine allows it.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pv_rings::{BackRing, FrontRing, HeapPage, RawMem};
use xen_abi::{BlkifRequest, BlkifResponse};
use zerocopy::{FromBytes, Immutable, IntoBytes};

#[repr(C)]
#[derive(Clone, Copy, Default, FromBytes, IntoBytes, Immutable)]
struct Msg16 {
    id: u64,
    val: u64,
}

/// A message type the benchmark can build and answer.
trait Message: FromBytes + IntoBytes + Immutable + Copy + Send + 'static {
    type Rsp: FromBytes + IntoBytes + Immutable + Copy + Send + 'static;
    fn make(id: u64) -> Self;
    fn answer(&self) -> Self::Rsp;
    fn rsp_id(r: &Self::Rsp) -> u64;
}

impl Message for Msg16 {
    type Rsp = Msg16;
    fn make(id: u64) -> Self {
        Msg16 { id, val: id ^ 0x55 }
    }
    fn answer(&self) -> Msg16 {
        Msg16 {
            id: self.id,
            val: self.val + 1,
        }
    }
    fn rsp_id(r: &Msg16) -> u64 {
        r.id
    }
}

impl Message for BlkifRequest {
    type Rsp = BlkifResponse;
    fn make(id: u64) -> Self {
        BlkifRequest {
            operation: 0,
            nr_segments: 1,
            id,
            sector_number: id,
            ..Default::default()
        }
    }
    fn answer(&self) -> BlkifResponse {
        BlkifResponse {
            id: self.id,
            operation: self.operation,
            ..Default::default()
        }
    }
    fn rsp_id(r: &BlkifResponse) -> u64 {
        r.id
    }
}

/// The cores available at start-up (read before any thread is pinned: a
/// pinned thread's children inherit its one-core mask).
static CORES: std::sync::OnceLock<Vec<core_affinity::CoreId>> = std::sync::OnceLock::new();

fn pin(core: usize) {
    let ids = CORES.get_or_init(|| core_affinity::get_core_ids().unwrap_or_default());
    if ids.len() >= 2 {
        core_affinity::set_for_current(ids[core % ids.len()]);
    }
}

/// The shared page outlives every thread that uses it.
fn leaked_page() -> RawMem<'static> {
    Box::leak(Box::new(HeapPage::one())).mem()
}

/// Back end thread: answers every request until told to stop.
fn spawn_ring_back<Q: Message>(
    mem: RawMem<'static>,
    stop: Arc<AtomicBool>,
    notify_check: bool,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        pin(1);
        let mut back = BackRing::<_, Q, Q::Rsp>::new(mem).unwrap();
        loop {
            // One read of req_prod per batch: answer what it showed, then
            // publish, before looking again.
            let n = back.unconsumed_requests().unwrap();
            for _ in 0..n {
                let req = back.pop_request().unwrap().unwrap();
                back.put_response(&req.answer()).unwrap();
            }
            if n > 0 {
                if notify_check {
                    let _ = back.push_responses();
                } else {
                    back.publish_responses();
                }
            } else if stop.load(Ordering::Relaxed) {
                break;
            } else {
                std::hint::spin_loop();
            }
        }
    })
}

fn bench_ring_stream<Q: Message>(c: &mut Criterion, group: &str, kind: ring_h::Kind) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    let mut cap = 0;
    for notify_check in [true, false] {
        cap = ring_stream::<Q>(&mut g, notify_check);
        ring_h::stream(&mut g, kind, notify_check);
    }
    bench_rtrb_stream::<Q>(&mut g, cap);
    g.finish();
}

/// The `io/ring.h` side (benches/c/ring_h.c), both ends in C.
#[cfg(xen_ring_h)]
mod ring_h {
    use super::*;
    use std::ffi::c_void;
    use std::sync::atomic::AtomicI32;

    unsafe extern "C" {
        fn ringh_m16_front(page: *mut c_void) -> *mut c_void;
        fn ringh_m16_size(front: *mut c_void) -> u32;
        fn ringh_m16_back(page: *mut c_void, stop: *const i32, notify_check: i32);
        fn ringh_m16_stream(front: *mut c_void, iters: u64, notify_check: i32) -> u64;
        fn ringh_m16_roundtrip(front: *mut c_void, iters: u64, notify_check: i32) -> u64;
        fn ringh_blk_front(page: *mut c_void) -> *mut c_void;
        fn ringh_blk_size(front: *mut c_void) -> u32;
        fn ringh_blk_back(page: *mut c_void, stop: *const i32, notify_check: i32);
        fn ringh_blk_stream(front: *mut c_void, iters: u64, notify_check: i32) -> u64;
    }

    /// Which ring of the C side.
    #[derive(Clone, Copy)]
    pub enum Kind {
        Msg16,
        Blkif,
    }

    /// A zeroed page that outlives every thread using it.
    fn page() -> usize {
        let layout = std::alloc::Layout::from_size_align(4096, 4096).unwrap();
        // SAFETY: a non-zero size; the page is leaked on purpose.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!p.is_null());
        p as usize
    }

    /// Runs `body` with the C back end answering on another thread.
    fn with_back(kind: Kind, notify_check: bool, body: impl FnOnce(*mut c_void)) {
        let page = page();
        // SAFETY: a fresh zeroed page; the front (malloc'd) is leaked.
        let front = unsafe {
            match kind {
                Kind::Msg16 => ringh_m16_front(page as *mut c_void),
                Kind::Blkif => ringh_blk_front(page as *mut c_void),
            }
        };
        assert!(!front.is_null());
        let stop: &'static AtomicI32 = Box::leak(Box::new(AtomicI32::new(0)));
        let back = thread::spawn(move || {
            pin(1);
            let nc = i32::from(notify_check);
            // SAFETY: the page and the flag live for ever; the back end
            // only reads the flag.
            unsafe {
                match kind {
                    Kind::Msg16 => ringh_m16_back(page as *mut c_void, stop.as_ptr(), nc),
                    Kind::Blkif => ringh_blk_back(page as *mut c_void, stop.as_ptr(), nc),
                }
            }
        });
        pin(0);
        body(front);
        stop.store(1, Ordering::SeqCst);
        back.join().unwrap();
    }

    pub fn stream(
        g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        kind: Kind,
        notify_check: bool,
    ) {
        with_back(kind, notify_check, |front| {
            // SAFETY: `front` came from the matching init.
            let size = unsafe {
                match kind {
                    Kind::Msg16 => ringh_m16_size(front),
                    Kind::Blkif => ringh_blk_size(front),
                }
            };
            let name = if notify_check {
                "push+check"
            } else {
                "publish"
            };
            g.bench_function(format!("C ring.h {name} ({size} slots)"), |b| {
                b.iter_custom(|iters| {
                    let nc = i32::from(notify_check);
                    let start = Instant::now();
                    // SAFETY: as above; the back end answers every request.
                    let sum = unsafe {
                        match kind {
                            Kind::Msg16 => ringh_m16_stream(front, iters, nc),
                            Kind::Blkif => ringh_blk_stream(front, iters, nc),
                        }
                    };
                    black_box(sum);
                    start.elapsed()
                })
            });
        });
    }

    pub fn roundtrip(
        g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        notify_check: bool,
    ) {
        with_back(Kind::Msg16, notify_check, |front| {
            let name = if notify_check {
                "push+check"
            } else {
                "publish"
            };
            g.bench_function(format!("C ring.h {name}"), |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    // SAFETY: as in `stream`.
                    black_box(unsafe {
                        ringh_m16_roundtrip(front, iters, i32::from(notify_check))
                    });
                    start.elapsed()
                })
            });
        });
    }
}

/// Without Xen's headers or a C compiler: the Rust cases alone.
#[cfg(not(xen_ring_h))]
mod ring_h {
    #[derive(Clone, Copy)]
    pub enum Kind {
        Msg16,
        Blkif,
    }

    pub fn stream(
        _: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        _: Kind,
        _: bool,
    ) {
        eprintln!("rings bench: no io/ring.h side (build.rs found no Xen headers or C compiler)");
    }

    pub fn roundtrip(
        _: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        _: bool,
    ) {
    }
}

/// Streams through a pv-rings ring; with `notify_check` each publication is
/// a push-and-check-notify (full fence), otherwise a plain release publish
/// (`RING_PUSH_*` without the check, for peers known to be polling).
fn ring_stream<Q: Message>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    notify_check: bool,
) -> usize {
    let mem = leaked_page();
    let mut front = FrontRing::<_, Q, Q::Rsp>::init(mem).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let back = spawn_ring_back::<Q>(mem, stop.clone(), notify_check);
    pin(0);
    let name = if notify_check {
        "push+check"
    } else {
        "publish"
    };
    g.bench_function(format!("pv-rings {name} ({} slots)", front.size()), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let (mut sent, mut done) = (0u64, 0u64);
            while done < iters {
                let mut k = 0;
                while sent < iters && !front.is_full() {
                    front.put_request(&Q::make(sent)).unwrap();
                    sent += 1;
                    k += 1;
                }
                if k > 0 {
                    if notify_check {
                        let _ = front.push_requests();
                    } else {
                        front.publish_requests();
                    }
                }
                let n = front.unconsumed_responses().unwrap();
                for _ in 0..n {
                    let rsp = front.pop_response().unwrap().unwrap();
                    black_box(Q::rsp_id(&rsp));
                }
                done += u64::from(n);
            }
            start.elapsed()
        })
    });
    stop.store(true, Ordering::Relaxed);
    back.join().unwrap();
    front.size() as usize
}

fn bench_rtrb_stream<Q: Message>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    cap: usize,
) {
    let (mut req_tx, mut req_rx) = rtrb::RingBuffer::<Q>::new(cap);
    let (mut rsp_tx, mut rsp_rx) = rtrb::RingBuffer::<Q::Rsp>::new(cap);
    let stop = Arc::new(AtomicBool::new(false));
    let back = {
        let stop = stop.clone();
        thread::spawn(move || {
            pin(1);
            loop {
                match req_rx.pop() {
                    Ok(req) => {
                        let mut rsp = req.answer();
                        while let Err(rtrb::PushError::Full(r)) = rsp_tx.push(rsp) {
                            rsp = r;
                            std::hint::spin_loop();
                        }
                    }
                    Err(_) if stop.load(Ordering::Relaxed) => break,
                    Err(_) => std::hint::spin_loop(),
                }
            }
        })
    };
    pin(0);
    g.bench_function(format!("rtrb ({cap} + {cap})"), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let (mut sent, mut done) = (0u64, 0u64);
            while done < iters {
                while sent < iters && req_tx.push(Q::make(sent)).is_ok() {
                    sent += 1;
                }
                while let Ok(rsp) = rsp_rx.pop() {
                    black_box(Q::rsp_id(&rsp));
                    done += 1;
                }
            }
            start.elapsed()
        })
    });
    stop.store(true, Ordering::Relaxed);
    back.join().unwrap();
}

fn bench_roundtrip(c: &mut Criterion) {
    let mut g = c.benchmark_group("roundtrip16");
    for notify_check in [true, false] {
        let mem = leaked_page();
        let mut front = FrontRing::<_, Msg16, Msg16>::init(mem).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let back = spawn_ring_back::<Msg16>(mem, stop.clone(), notify_check);
        pin(0);
        let name = if notify_check {
            "push+check"
        } else {
            "publish"
        };
        g.bench_function(format!("pv-rings {name}"), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for i in 0..iters {
                    front.put_request(&Msg16::make(i)).unwrap();
                    if notify_check {
                        let _ = front.push_requests();
                    } else {
                        front.publish_requests();
                    }
                    loop {
                        if let Some(rsp) = front.pop_response().unwrap() {
                            black_box(rsp.id);
                            break;
                        }
                        std::hint::spin_loop();
                    }
                }
                start.elapsed()
            })
        });
        stop.store(true, Ordering::Relaxed);
        back.join().unwrap();
        ring_h::roundtrip(&mut g, notify_check);
    }

    let (mut req_tx, mut req_rx) = rtrb::RingBuffer::<Msg16>::new(128);
    let (mut rsp_tx, mut rsp_rx) = rtrb::RingBuffer::<Msg16>::new(128);
    let stop = Arc::new(AtomicBool::new(false));
    let back = {
        let stop = stop.clone();
        thread::spawn(move || {
            pin(1);
            loop {
                match req_rx.pop() {
                    Ok(req) => rsp_tx.push(req.answer()).unwrap(),
                    Err(_) if stop.load(Ordering::Relaxed) => break,
                    Err(_) => std::hint::spin_loop(),
                }
            }
        })
    };
    g.bench_function("rtrb", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for i in 0..iters {
                req_tx.push(Msg16::make(i)).unwrap();
                loop {
                    if let Ok(rsp) = rsp_rx.pop() {
                        black_box(rsp.id);
                        break;
                    }
                    std::hint::spin_loop();
                }
            }
            start.elapsed()
        })
    });
    stop.store(true, Ordering::Relaxed);
    back.join().unwrap();
    g.finish();
}

/// Both ends in one thread: the per-message instruction cost, without any
/// cache-line traffic between cores.
fn bench_one_thread(c: &mut Criterion) {
    let mem = leaked_page();
    let mut front = FrontRing::<_, Msg16, Msg16>::init(mem).unwrap();
    let mut back = BackRing::<_, Msg16, Msg16>::new(mem).unwrap();
    let mut g = c.benchmark_group("one_thread16");
    g.throughput(Throughput::Elements(1));
    g.bench_function("pv-rings (128 slots, batches of 128)", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let mut done = 0u64;
            while done < iters {
                for i in 0..128 {
                    front.put_request(&Msg16::make(done + i)).unwrap();
                }
                let _ = front.push_requests();
                while let Some(req) = back.pop_request().unwrap() {
                    back.put_response(&req.answer()).unwrap();
                }
                let _ = back.push_responses();
                while let Some(rsp) = front.pop_response().unwrap() {
                    black_box(rsp.id);
                }
                done += 128;
            }
            start.elapsed()
        })
    });
    g.finish();
}

fn streams(c: &mut Criterion) {
    CORES.get_or_init(|| core_affinity::get_core_ids().unwrap_or_default());
    bench_ring_stream::<Msg16>(c, "stream16", ring_h::Kind::Msg16);
    bench_ring_stream::<BlkifRequest>(c, "stream112", ring_h::Kind::Blkif);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = streams, bench_roundtrip, bench_one_thread
}
criterion_main!(benches);
