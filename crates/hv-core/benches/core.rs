//! Hot paths of hv-core on the mock machine:
//!
//! - `hypercall/xen_version`: a `VMCALL` exit for `xen_version(XENVER_version)`
//!   through `Hypervisor::handle_exit`: decode, dispatch, RAX, RIP skip.
//! - `evtchn_2l/*`: `EVTCHNOP_send` on a bound IPI port with the 2-level ABI
//!   and its delivery (`prepare_entry` injecting the upcall vector).
//! - `evtchn_fifo/*`: the same with the FIFO ABI (control block and one
//!   event array page registered).
//! - `evtchn_fifo_131072/*`: FIFO with every port bound, sending on port 1
//!   and on port 131000: the cost must not depend on the port (O(1)).
//!
//! Each event case has three rows:
//! - `send+deliver+ack`: the `EVTCHNOP_send` hypercall exit (the 4-byte
//!   argument copied from guest memory), `prepare_entry` injecting the
//!   upcall, then the guest's acknowledgement done through the mock's
//!   `FrameAccess` so the next iteration starts from the same state
//!   (2-level: clear the pending bit, the selector bit and the upcall flag;
//!   FIFO: clear the event word, READY and the queue head, and the upcall
//!   flag). The ack is INSIDE this measurement.
//! - `ack`: the acknowledgement alone, so send+deliver = the difference.
//! - `direct_send+deliver+ack`: the same without the hypercall exit (the
//!   hypervisor-internal `evtchn_op::send`, as a backend or a VIRQ would).
//!
//! Every case runs on two platforms:
//! - `mock`: hv-core's `MockPlatform`. Caveat: each guest-memory access
//!   takes a spin lock and a hash lookup of the frame, which the real
//!   platform (identity-mapped frames) does not; these numbers are an upper
//!   bound for the hypervisor's own work.
//! - `flat`: [`FlatPlatform`] below, frames in a vector indexed by frame
//!   number with plain atomics, no lock and no hash: closer to the real
//!   platform's cost of a guest-memory access.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use hv_core::arch::{Event, VmExit};
use hv_core::mock::{MockNpt, MockPlatform, MockVcpu};
use hv_core::platform::{FrameAccess, Platform};
use hv_core::types::Hfn;
use hv_core::{DomId, DomainConfig, ExitAction, Gfn, Hypervisor};
use xen_abi::event_channel as ev;
use xen_abi::xen as x;

/// Guest-physical argument area.
const ARG: u64 = 0x10_0000;
/// The FIFO control block (gfn 8) and first event array page (gfn 9).
const CONTROL_GFN: u64 = 8;
const ARRAY_GFN: u64 = 9;
/// Further array pages for the 131072-port case.
const MORE_ARRAY_GFN: u64 = 0x100;
const VECTOR: u8 = 0xF3;
/// Offsets in shared_info and vcpu_info.
const SI_PENDING: usize = 2048;
const VI_PENDING_SEL: usize = 8;
/// The default FIFO priority.
const PRIO: usize = ev::EVTCHN_FIFO_PRIORITY_DEFAULT as usize;

/// A machine for the benchmarks; `reset` drops what the platform records
/// per event (the mock's list of kicks would grow without bound).
trait BenchPlatform: Platform + Sized {
    const NAME: &'static str;
    fn make() -> Self;
    fn reset(&self);
}

impl BenchPlatform for MockPlatform {
    const NAME: &'static str = "mock";
    fn make() -> Self {
        MockPlatform::default()
    }
    fn reset(&self) {
        self.kicks.lock().clear();
    }
}

type Frame = Box<[AtomicU64; 512]>;

/// Frames in a vector indexed by frame number (a bump allocator over a
/// fixed pool), accessed with plain atomics: no lock, no hash.
struct FlatPlatform {
    frames: Vec<Frame>,
    next: AtomicU64,
    kicks: AtomicU64,
}

/// Frames in the flat pool (8 MiB).
const FLAT_FRAMES: usize = 2048;

impl FlatPlatform {
    #[inline]
    fn fr(&self, hfn: Hfn) -> &[AtomicU64; 512] {
        &self.frames[hfn.0 as usize]
    }
    #[inline]
    fn bytes(&self, hfn: Hfn, off: usize, len: usize, mut f: impl FnMut(&AtomicU64, u32, usize)) {
        assert!(off + len <= 4096);
        let fr = self.fr(hfn);
        for i in off..off + len {
            f(&fr[i / 8], (i % 8) as u32 * 8, i - off);
        }
    }
}

impl BenchPlatform for FlatPlatform {
    const NAME: &'static str = "flat";
    fn make() -> Self {
        FlatPlatform {
            frames: (0..FLAT_FRAMES)
                .map(|_| Box::new([const { AtomicU64::new(0) }; 512]))
                .collect(),
            next: AtomicU64::new(1),
            kicks: AtomicU64::new(0),
        }
    }
    fn reset(&self) {}
}

impl FrameAccess for FlatPlatform {
    fn read(&self, hfn: Hfn, offset: usize, buf: &mut [u8]) {
        self.bytes(hfn, offset, buf.len(), |w, sh, i| {
            buf[i] = (w.load(SeqCst) >> sh) as u8
        });
    }
    fn write(&self, hfn: Hfn, offset: usize, data: &[u8]) {
        self.bytes(hfn, offset, data.len(), |w, sh, i| {
            let m = 0xFFu64 << sh;
            let v = (data[i] as u64) << sh;
            let _ = w.fetch_update(SeqCst, SeqCst, |x| Some((x & !m) | v));
        });
    }
    fn zero(&self, hfn: Hfn, offset: usize, len: usize) {
        self.bytes(hfn, offset, len, |w, sh, _| {
            w.fetch_and(!(0xFFu64 << sh), SeqCst);
        });
    }
    fn cmpxchg_u32(&self, hfn: Hfn, offset: usize, old: u32, new: u32) -> u32 {
        let sh = (offset % 8) * 8;
        let m = 0xFFFF_FFFFu64 << sh;
        let mut found = 0;
        let _ = self.fr(hfn)[offset / 8].fetch_update(SeqCst, SeqCst, |x| {
            found = ((x & m) >> sh) as u32;
            (found == old).then_some((x & !m) | ((new as u64) << sh))
        });
        found
    }
    fn cmpxchg_u64(&self, hfn: Hfn, offset: usize, old: u64, new: u64) -> u64 {
        match self.fr(hfn)[offset / 8].compare_exchange(old, new, SeqCst, SeqCst) {
            Ok(v) | Err(v) => v,
        }
    }
    fn fetch_or_u64(&self, hfn: Hfn, offset: usize, bits: u64) -> u64 {
        self.fr(hfn)[offset / 8].fetch_or(bits, SeqCst)
    }
    fn fetch_and_u64(&self, hfn: Hfn, offset: usize, bits: u64) -> u64 {
        self.fr(hfn)[offset / 8].fetch_and(bits, SeqCst)
    }
    fn fetch_or_u32(&self, hfn: Hfn, offset: usize, bits: u32) -> u32 {
        let sh = (offset % 8) * 8;
        (self.fr(hfn)[offset / 8].fetch_or((bits as u64) << sh, SeqCst) >> sh) as u32
    }
    fn fetch_and_u32(&self, hfn: Hfn, offset: usize, bits: u32) -> u32 {
        let sh = (offset % 8) * 8;
        let mask = !(0xFFFF_FFFFu64 << sh) | ((bits as u64) << sh);
        (self.fr(hfn)[offset / 8].fetch_and(mask, SeqCst) >> sh) as u32
    }
    fn load_u32(&self, hfn: Hfn, offset: usize) -> u32 {
        (self.fr(hfn)[offset / 8].load(SeqCst) >> ((offset % 8) * 8)) as u32
    }
    fn load_u64(&self, hfn: Hfn, offset: usize) -> u64 {
        self.fr(hfn)[offset / 8].load(SeqCst)
    }
    fn store_u8(&self, hfn: Hfn, offset: usize, value: u8) {
        self.write(hfn, offset, &[value]);
    }
}

impl Platform for FlatPlatform {
    fn alloc_frame(&self) -> Option<Hfn> {
        let h = self.next.fetch_add(1, SeqCst);
        ((h as usize) < FLAT_FRAMES).then_some(Hfn(h))
    }
    fn free_frame(&self, _hfn: Hfn) {}
    fn now_ns(&self) -> u64 {
        1_000_000
    }
    fn kick_cpu(&self, _pcpu: u32) {
        self.kicks.fetch_add(1, SeqCst);
    }
    fn console_write(&self, _domid: DomId, _text: &[u8]) {}
    fn cpuid(&self, _leaf: u32, _subleaf: u32) -> [u32; 4] {
        [0; 4]
    }
}

struct Sim<P: BenchPlatform> {
    hv: Hypervisor<P>,
    d: DomId,
    cpu: MockVcpu,
}

impl<P: BenchPlatform> Sim<P> {
    /// One unprivileged domain, 4 MiB of RAM, one vCPU, an upcall vector.
    fn new() -> Self {
        let mut hv = Hypervisor::new(P::make());
        let d = hv
            .create_domain(
                DomainConfig {
                    domid: None,
                    name: "bench".into(),
                    privileged: false,
                    vcpus: 1,
                    max_pages: 1024 + 64,
                },
                Box::new(MockNpt::default()),
            )
            .unwrap();
        hv.populate(d, Gfn(0), 1024).unwrap();
        hv.domain_mut(d).unwrap().vcpus[0].upcall_vector = Some(VECTOR);
        Sim {
            hv,
            d,
            cpu: MockVcpu::flat64(),
        }
    }

    fn call(&mut self, nr: u32, args: [u64; 5]) -> i64 {
        self.cpu.hypercall(nr as u64, args);
        let a = self
            .hv
            .handle_exit(self.d, 0, &mut self.cpu, VmExit::Hypercall);
        assert_eq!(a, ExitAction::Resume);
        self.cpu.ret()
    }

    fn evtchn<T: zerocopy::IntoBytes + zerocopy::Immutable + zerocopy::FromBytes>(
        &mut self,
        cmd: u32,
        a: &T,
    ) -> T {
        self.hv
            .guest_mem(self.d)
            .unwrap()
            .write_obj(ARG, a)
            .unwrap();
        let r = self.call(x::__HYPERVISOR_event_channel_op, [cmd as u64, ARG, 0, 0, 0]);
        assert_eq!(r, 0, "EVTCHNOP {cmd}");
        self.hv.guest_mem(self.d).unwrap().read_obj(ARG).unwrap()
    }

    fn bind_ipi(&mut self) -> u32 {
        self.evtchn(
            ev::EVTCHNOP_bind_ipi,
            &ev::EvtchnBindIpi { vcpu: 0, port: 0 },
        )
        .port
    }

    /// Switches to FIFO with one array page.
    fn fifo(&mut self) {
        self.evtchn(
            ev::EVTCHNOP_init_control,
            &ev::EvtchnInitControl {
                control_gfn: CONTROL_GFN,
                offset: 0,
                vcpu: 0,
                link_bits: 0,
                _pad: [0; 7],
            },
        );
        self.evtchn(
            ev::EVTCHNOP_expand_array,
            &ev::EvtchnExpandArray {
                array_gfn: ARRAY_GFN,
            },
        );
    }

    fn hfn(&self, gfn: u64) -> Hfn {
        self.hv
            .domain(self.d)
            .unwrap()
            .p2m
            .get(Gfn(gfn))
            .unwrap()
            .hfn
    }

    fn vcpu_info(&self) -> (Hfn, usize) {
        self.hv.domain(self.d).unwrap().vcpu_info[0].unwrap()
    }

    /// Prepares the guest's `EVTCHNOP_send(port)` argument at ARG.
    fn send_arg(&mut self, port: u32) {
        self.hv
            .guest_mem(self.d)
            .unwrap()
            .write_obj(ARG, &ev::EvtchnSend { port })
            .unwrap();
    }

    /// The `EVTCHNOP_send` exit (argument already at ARG), then the entry.
    #[inline]
    fn send_and_deliver(&mut self) {
        let c = &mut self.cpu;
        c.gprs.rax = x::__HYPERVISOR_event_channel_op as u64;
        c.gprs.rdi = ev::EVTCHNOP_send as u64;
        c.gprs.rsi = ARG;
        let a = self.hv.handle_exit(self.d, 0, c, VmExit::Hypercall);
        debug_assert_eq!(a, ExitAction::Resume);
        self.hv.prepare_entry(self.d, 0, c);
    }

    /// `evtchn_op::send` from inside the hypervisor, then the entry.
    #[inline]
    fn direct_send_and_deliver(&mut self, port: u32) {
        hv_core::evtchn_op::send(&mut self.hv, self.d, port).unwrap();
        self.hv.prepare_entry(self.d, 0, &mut self.cpu);
    }

    /// Checks that one send delivered exactly one upcall and that the ack
    /// left nothing pending.
    fn check_delivery(&mut self, send: impl Fn(&mut Self), ack: impl Fn(&mut Self)) {
        self.cpu.injected.clear();
        send(self);
        assert_eq!(self.cpu.ret(), 0);
        assert_eq!(self.cpu.injected, [Event::Interrupt(VECTOR)]);
        ack(self);
        self.cpu.injected.clear();
        self.hv.prepare_entry(self.d, 0, &mut self.cpu);
        assert!(self.cpu.injected.is_empty(), "ack left the upcall raised");
        send(self);
        assert_eq!(self.cpu.injected, [Event::Interrupt(VECTOR)]);
        ack(self);
    }
}

/// The guest's 2-level acknowledgement of `port` on vCPU 0, plus clearing
/// the mock's record of injected events and kicks (it would grow).
struct Ack2l {
    si: Hfn,
    vi: (Hfn, usize),
    word: usize,
    bit: u64,
}

impl Ack2l {
    fn new<P: BenchPlatform>(s: &Sim<P>, port: u32) -> Self {
        Ack2l {
            si: s.hv.domain(s.d).unwrap().shared_info,
            vi: s.vcpu_info(),
            word: port as usize / 64,
            bit: 1 << (port % 64),
        }
    }

    #[inline]
    fn run<P: BenchPlatform>(&self, s: &mut Sim<P>) {
        let p = &s.hv.platform;
        p.store_u8(self.vi.0, self.vi.1, 0);
        p.fetch_and_u64(self.vi.0, self.vi.1 + VI_PENDING_SEL, !(1u64 << self.word));
        p.fetch_and_u64(self.si, SI_PENDING + self.word * 8, !self.bit);
        p.reset();
        s.cpu.injected.clear();
    }
}

/// The guest's FIFO acknowledgement of `port`: event word, READY, head.
struct AckFifo {
    word: (Hfn, usize),
    control: Hfn,
    vi: (Hfn, usize),
}

impl AckFifo {
    fn new<P: BenchPlatform>(s: &Sim<P>, port: u32, array_gfn: u64) -> Self {
        AckFifo {
            word: (s.hfn(array_gfn), (port as usize % 1024) * 4),
            control: s.hfn(CONTROL_GFN),
            vi: s.vcpu_info(),
        }
    }

    #[inline]
    fn run<P: BenchPlatform>(&self, s: &mut Sim<P>) {
        let p = &s.hv.platform;
        p.store_u8(self.vi.0, self.vi.1, 0);
        p.fetch_and_u32(self.word.0, self.word.1, 0);
        p.fetch_and_u32(self.control, 0, !(1u32 << PRIO));
        p.fetch_and_u32(self.control, 8 + PRIO * 4, 0);
        p.reset();
        s.cpu.injected.clear();
    }
}

fn hypercall<P: BenchPlatform>(c: &mut Criterion) {
    let mut s = Sim::<P>::new();
    let v = s.call(x::__HYPERVISOR_xen_version, [0, 0, 0, 0, 0]);
    assert_eq!(v, (4 << 16) | 17);
    let d = s.d;
    let mut cpu = MockVcpu::flat64();
    cpu.hypercall(x::__HYPERVISOR_xen_version as u64, [0; 5]);
    c.bench_function(&format!("{}/hypercall/xen_version", P::NAME), |b| {
        b.iter(|| {
            cpu.gprs.rax = x::__HYPERVISOR_xen_version as u64;
            black_box(s.hv.handle_exit(d, 0, &mut cpu, VmExit::Hypercall));
        })
    });
    black_box(cpu.gprs.rax);
}

fn two_level<P: BenchPlatform>(c: &mut Criterion) {
    let mut s = Sim::<P>::new();
    let port = s.bind_ipi();
    s.send_arg(port);
    let ack = Ack2l::new(&s, port);
    s.check_delivery(|s| s.send_and_deliver(), |s| ack.run(s));
    let mut g = c.benchmark_group(format!("{}/evtchn_2l", P::NAME));
    g.bench_function("send+deliver+ack", |b| {
        b.iter(|| {
            s.send_and_deliver();
            ack.run(&mut s);
        })
    });
    g.bench_function("direct_send+deliver+ack", |b| {
        b.iter(|| {
            s.direct_send_and_deliver(port);
            ack.run(&mut s);
        })
    });
    g.bench_function("ack", |b| b.iter(|| ack.run(&mut s)));
    g.finish();
}

fn fifo<P: BenchPlatform>(c: &mut Criterion) {
    let mut s = Sim::<P>::new();
    s.fifo();
    let port = s.bind_ipi();
    s.send_arg(port);
    let ack = AckFifo::new(&s, port, ARRAY_GFN);
    s.check_delivery(|s| s.send_and_deliver(), |s| ack.run(s));
    let mut g = c.benchmark_group(format!("{}/evtchn_fifo", P::NAME));
    g.bench_function("send+deliver+ack", |b| {
        b.iter(|| {
            s.send_and_deliver();
            ack.run(&mut s);
        })
    });
    g.bench_function("direct_send+deliver+ack", |b| {
        b.iter(|| {
            s.direct_send_and_deliver(port);
            ack.run(&mut s);
        })
    });
    g.bench_function("ack", |b| b.iter(|| ack.run(&mut s)));
    g.finish();
}

fn fifo_all_ports<P: BenchPlatform>(c: &mut Criterion) {
    let mut s = Sim::<P>::new();
    s.fifo();
    for i in 0..127 {
        s.evtchn(
            ev::EVTCHNOP_expand_array,
            &ev::EvtchnExpandArray {
                array_gfn: MORE_ARRAY_GFN + i,
            },
        );
    }
    // Bind IPIs through the hypercall until the allocator says ENOSPC.
    let t = Instant::now();
    let mut bound = 0u32;
    s.hv.guest_mem(s.d)
        .unwrap()
        .write_obj(ARG, &ev::EvtchnBindIpi { vcpu: 0, port: 0 })
        .unwrap();
    loop {
        let r = s.call(
            x::__HYPERVISOR_event_channel_op,
            [ev::EVTCHNOP_bind_ipi as u64, ARG, 0, 0, 0],
        );
        if r != 0 {
            assert_eq!(r, -(xen_abi::errno::ENOSPC as i64));
            break;
        }
        bound += 1;
    }
    let took = t.elapsed();
    assert_eq!(bound, 131_071, "ports 1..=131071");
    eprintln!(
        "{}/evtchn_fifo_131072: bound {bound} IPI ports through EVTCHNOP_bind_ipi in {:.1} ms ({:.0} ns each)",
        P::NAME,
        took.as_secs_f64() * 1e3,
        took.as_nanos() as f64 / bound as f64
    );
    let mut g = c.benchmark_group(format!("{}/evtchn_fifo_131072", P::NAME));
    for port in [1u32, 131_000] {
        let gfn = if port < 1024 {
            ARRAY_GFN
        } else {
            MORE_ARRAY_GFN + (port as u64 / 1024) - 1
        };
        let ack = AckFifo::new(&s, port, gfn);
        s.send_arg(port);
        s.check_delivery(|s| s.send_and_deliver(), |s| ack.run(s));
        g.bench_function(format!("send+deliver+ack/port{port}"), |b| {
            b.iter(|| {
                s.send_and_deliver();
                ack.run(&mut s);
            })
        });
        g.bench_function(format!("direct_send+deliver+ack/port{port}"), |b| {
            b.iter(|| {
                s.direct_send_and_deliver(port);
                ack.run(&mut s);
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = hypercall::<MockPlatform>, hypercall::<FlatPlatform>,
        two_level::<MockPlatform>, two_level::<FlatPlatform>,
        fifo::<MockPlatform>, fifo::<FlatPlatform>,
        fifo_all_ports::<MockPlatform>, fifo_all_ports::<FlatPlatform>
}
criterion_main!(benches);
