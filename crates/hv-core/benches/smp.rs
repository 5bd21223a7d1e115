//! How hv-core scales with host CPUs, on the mock machine: independent
//! domains, one std thread per "physical CPU", each thread running its own
//! domain's vCPU, as the image's run loop does
//! (`crates/hypervisor/src/run.rs`).
//!
//! - `smp/<path>/xen_version/threads=N`: N threads, each issuing
//!   `xen_version(XENVER_version)` exits for its own domain; a criterion
//!   iteration is ONE hypercall of the whole machine (each thread does
//!   iters / N), so perfect scaling halves the time per iteration from 1
//!   to 2 threads.
//! - `smp/<path>/evtchn_send/threads=N`: the same with `EVTCHNOP_send` on a
//!   port bound to the domain itself (an IPI port: event state, upcall),
//!   which touches only that domain's state.
//!
//! `<path>` is `global` (every exit under the one `spin::Mutex<Hypervisor>`
//! with every domain checked out, the image's global path) or `local`
//! (the exit offered to the domain's own lock first, [`hv_core::local`],
//! as the image's run loop does; the global path only for what it
//! declines). The ratios of the rows are the scaling figures of
//! docs/figures.md.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use hv_core::arch::VmExit;
use hv_core::local::LocalDomain;
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

/// One exit of the kind `what` for `d` on `cpu`: on the domain's own lock
/// if `local` is given and takes it, else under the global lock.
fn exit(
    hv: &Hv,
    local: Option<&LocalDomain<MockPlatform>>,
    d: DomId,
    cpu: &mut MockVcpu,
    what: &str,
) {
    match what {
        "xen_version" => cpu.hypercall(x::__HYPERVISOR_xen_version as u64, [0; 5]),
        _ => cpu.hypercall(
            x::__HYPERVISOR_event_channel_op as u64,
            [u64::from(ev::EVTCHNOP_send), ARG, 0, 0, 0],
        ),
    }
    // The guest's acknowledgement is not modelled: a pending port stays
    // pending and a second send is the cheap path; every row sees the
    // same. Sends to the sender itself kick no CPU.
    if local
        .and_then(|l| l.handle_exit(0, cpu, VmExit::Hypercall))
        .is_none()
    {
        let mut h = hv.lock();
        h.hold();
        h.handle_exit(d, 0, cpu, VmExit::Hypercall);
        h.release();
    }
    black_box(cpu.ret());
}

/// Runs `total` exits of kind `what` split over `threads` threads, each on
/// its own domain, on the local path or not; returns the wall time of the
/// whole batch.
fn run(
    hv: &Arc<Hv>,
    doms: &[DomId],
    threads: usize,
    total: u64,
    what: &str,
    local: bool,
) -> Duration {
    let barrier = Arc::new(Barrier::new(threads + 1));
    let each = total.div_ceil(threads as u64);
    let handles: Vec<_> = doms[..threads]
        .iter()
        .map(|&d| {
            let (hv2, barrier, what) = (hv.clone(), barrier.clone(), what.to_string());
            let local = local.then(|| hv.lock().local(d).expect("exists"));
            std::thread::spawn(move || {
                let mut cpu = MockVcpu::flat64();
                barrier.wait();
                for _ in 0..each {
                    exit(&hv2, local.as_ref(), d, &mut cpu, &what);
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
    let doms: Vec<_> = (0..2)
        .map(|_| {
            let (d, port) = domain(&mut hv);
            // The argument of every send, written once by the "guest".
            let send = ev::EvtchnSend { port };
            hv.guest_mem(d)
                .unwrap()
                .write(ARG, send.as_bytes())
                .unwrap();
            d
        })
        .collect();
    hv.release();
    let hv = Arc::new(spin::Mutex::new(hv));
    let mut g = c.benchmark_group("smp");
    for path in ["global", "local"] {
        for what in ["xen_version", "evtchn_send"] {
            for threads in [1usize, 2] {
                g.bench_function(format!("{path}/{what}/threads={threads}"), |b| {
                    b.iter_custom(|iters| run(&hv, &doms, threads, iters, what, path == "local"))
                });
            }
        }
    }
    // Nothing woke anyone else.
    assert!(hv.lock().platform.kicks.lock().is_empty());
    g.finish();
}

criterion_group!(benches, smp);
criterion_main!(benches);
