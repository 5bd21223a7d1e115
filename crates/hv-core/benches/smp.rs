//! How hv-core scales with host CPUs, on the mock machine: independent
//! domains, one std thread per "physical CPU", each thread running its own
//! domain's vCPU and taking hv-core's lock for every exit, as the image's
//! run loop does (`crates/hypervisor/src/run.rs`: one
//! `spin::Mutex<Hypervisor>` around `prepare_entry` and `handle_exit`).
//!
//! - `smp/xen_version/threads=N`: N threads, each issuing
//!   `xen_version(XENVER_version)` exits for its own domain; a criterion
//!   iteration is ONE hypercall of the whole machine (each thread does
//!   iters / N), so perfect scaling halves the time per iteration from 1
//!   to 2 threads.
//! - `smp/evtchn_send/threads=N`: the same with `EVTCHNOP_send` on a port
//!   bound to the domain itself (an IPI port: event state, upcall), which
//!   touches only that domain's state.
//!
//! The ratio of the two rows is the scaling figure of docs/figures.md; with
//! one lock around everything it measures what that lock costs.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use hv_core::arch::VmExit;
use hv_core::mock::{MockNpt, MockPlatform, MockVcpu};
use hv_core::{DomId, DomainConfig, Gfn, Hypervisor};
use xen_abi::event_channel as ev;
use xen_abi::xen as x;
use zerocopy::IntoBytes;

/// Guest-physical argument area.
const ARG: u64 = 0x10_0000;

type Hv = spin::Mutex<Hypervisor<MockPlatform>>;

/// A domain with 2 MiB of RAM and an IPI port bound to vCPU 0.
fn domain(hv: &mut Hypervisor<MockPlatform>) -> (DomId, u32) {
    let d = hv
        .create_domain(
            DomainConfig {
                domid: None,
                name: "smp".into(),
                privileged: false,
                vcpus: 1,
                max_pages: 512 + 64,
            },
            Box::new(MockNpt::default()),
        )
        .unwrap();
    hv.populate(d, Gfn(0), 512).unwrap();
    let mut cpu = MockVcpu::flat64();
    let bind = ev::EvtchnBindIpi { vcpu: 0, port: 0 };
    hv.guest_mem(d)
        .unwrap()
        .write(ARG, bind.as_bytes())
        .unwrap();
    cpu.hypercall(
        x::__HYPERVISOR_event_channel_op as u64,
        [u64::from(ev::EVTCHNOP_bind_ipi), ARG, 0, 0, 0],
    );
    hv.handle_exit(d, 0, &mut cpu, VmExit::Hypercall);
    assert_eq!(cpu.ret(), 0);
    let mut port = [0u8; 4];
    hv.guest_mem(d).unwrap().read(ARG + 4, &mut port).unwrap();
    (d, u32::from_le_bytes(port))
}

/// One exit of the kind `what` for `d` on `cpu`, under the lock.
fn exit(hv: &Hv, d: DomId, port: u32, cpu: &mut MockVcpu, what: &str) {
    let mut h = hv.lock();
    match what {
        "xen_version" => cpu.hypercall(x::__HYPERVISOR_xen_version as u64, [0; 5]),
        _ => {
            let send = ev::EvtchnSend { port };
            h.guest_mem(d).unwrap().write(ARG, send.as_bytes()).unwrap();
            cpu.hypercall(
                x::__HYPERVISOR_event_channel_op as u64,
                [u64::from(ev::EVTCHNOP_send), ARG, 0, 0, 0],
            );
        }
    }
    h.handle_exit(d, 0, cpu, VmExit::Hypercall);
    black_box(cpu.ret());
    // The guest's acknowledgement is not modelled: a pending port stays
    // pending and a second send is the cheap path; both thread counts
    // see the same.
    h.platform.kicks.lock().clear();
}

/// Runs `total` exits of kind `what` split over `threads` threads, each on
/// its own domain; returns the wall time of the whole batch.
fn run(hv: &Arc<Hv>, doms: &[(DomId, u32)], threads: usize, total: u64, what: &str) -> Duration {
    let barrier = Arc::new(Barrier::new(threads + 1));
    let each = total.div_ceil(threads as u64);
    let handles: Vec<_> = doms[..threads]
        .iter()
        .map(|&(d, port)| {
            let (hv, barrier, what) = (hv.clone(), barrier.clone(), what.to_string());
            std::thread::spawn(move || {
                let mut cpu = MockVcpu::flat64();
                barrier.wait();
                for _ in 0..each {
                    exit(&hv, d, port, &mut cpu, &what);
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for h in handles {
        h.join().unwrap();
    }
    start.elapsed()
}

fn smp(c: &mut Criterion) {
    let mut hv = Hypervisor::new(MockPlatform::default());
    let doms: Vec<_> = (0..2).map(|_| domain(&mut hv)).collect();
    let hv = Arc::new(spin::Mutex::new(hv));
    let mut g = c.benchmark_group("smp");
    for what in ["xen_version", "evtchn_send"] {
        for threads in [1usize, 2] {
            g.bench_function(format!("{what}/threads={threads}"), |b| {
                b.iter_custom(|iters| run(&hv, &doms, threads, iters, what))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, smp);
criterion_main!(benches);
