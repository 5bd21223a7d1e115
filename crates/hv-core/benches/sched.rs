//! The scheduler's decision cost (`hv_core::sched`):
//!
//! - `sched/pick+descheduled/N`: one scheduling decision on a pCPU: the
//!   running vCPU's slice ends (`descheduled`, runnable: burn its credit,
//!   requeue it) and the pCPU picks the next one (`pick`: the best credit,
//!   credit resets and load balancing when due, the slice). N runnable
//!   vCPUs on 4 pCPUs, weights 64/128/256/512, every pCPU always busy; the
//!   pCPUs take turns and each has its own clock advancing by the slices
//!   it hands out, so credit resets and balancing passes happen at their
//!   natural rate.
//! - `sched/wake+block/4096`: a blocked vCPU is woken (placement, catch-up,
//!   kick decision, enqueue) and put back to sleep (dequeue), with 4096
//!   runnable vCPUs queued.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use hv_core::DomId;
use hv_core::sched::{Scheduler, VcpuKey};

const PCPUS: u32 = 4;

fn key(i: u32) -> VcpuKey {
    VcpuKey {
        dom: DomId((i / 64) as u16),
        vcpu: i % 64,
    }
}

/// `n` runnable vCPUs, each pCPU running one; returns the scheduler, what
/// runs where and the pCPU clocks.
fn setup(n: u32) -> (Scheduler, Vec<VcpuKey>, Vec<u64>) {
    let mut s = Scheduler::new(PCPUS);
    for i in 0..n {
        s.add_vcpu(key(i), [64, 128, 256, 512][i as usize % 4], None);
        s.wake(key(i), 0);
    }
    let mut cur = Vec::new();
    for p in 0..PCPUS {
        cur.push(s.pick(p, 0).expect("runnable vCPUs").0);
    }
    let mut clocks = vec![0; PCPUS as usize];
    // Warm up: a few rounds of every vCPU, so credits are spread.
    for r in 0..(4 * n as usize) {
        let p = r % PCPUS as usize;
        let (k, slice) = decide(&mut s, p as u32, cur[p], clocks[p]);
        cur[p] = k;
        clocks[p] += slice;
    }
    (s, cur, clocks)
}

#[inline]
fn decide(s: &mut Scheduler, p: u32, running: VcpuKey, now: u64) -> (VcpuKey, u64) {
    s.descheduled(running, p, now, true);
    s.pick(p, now).expect("runnable vCPUs")
}

fn decisions(c: &mut Criterion) {
    let mut g = c.benchmark_group("sched");
    for n in [64u32, 4096] {
        let (mut s, mut cur, mut clocks) = setup(n);
        let mut p = 0usize;
        g.bench_function(format!("pick+descheduled/{n}"), |b| {
            b.iter(|| {
                let (k, slice) = decide(&mut s, p as u32, cur[p], clocks[p]);
                cur[p] = k;
                clocks[p] += slice;
                p = (p + 1) % PCPUS as usize;
                black_box(slice)
            })
        });
    }
    let (mut s, _, clocks) = setup(4096);
    let sleeper = key(100_000);
    s.add_vcpu(sleeper, 256, None);
    let now = clocks[0];
    g.bench_function("wake+block/4096", |b| {
        b.iter(|| {
            let kick = s.wake(sleeper, now);
            s.sleep(sleeper);
            black_box(kick)
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = decisions
}
criterion_main!(benches);
