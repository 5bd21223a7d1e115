//! Two threads, busy-polling, request plus response per message:
//! - `stream16`: 16-byte requests and responses, one page (128 slots);
//! - `stream112`: blkif requests (112 bytes) and responses (16), one page
//!   (32 slots);
//! - `roundtrip16`: one request in flight at a time.
//!
//! Each case also runs over `rtrb` used as two queues (requests and
//! responses) of the same capacity. Criterion's time per iteration is the
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

fn bench_ring_stream<Q: Message>(c: &mut Criterion, group: &str) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    let mut cap = 0;
    for notify_check in [true, false] {
        cap = ring_stream::<Q>(&mut g, notify_check);
    }
    bench_rtrb_stream::<Q>(&mut g, cap);
    g.finish();
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
    bench_ring_stream::<Msg16>(c, "stream16");
    bench_ring_stream::<BlkifRequest>(c, "stream112");
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
