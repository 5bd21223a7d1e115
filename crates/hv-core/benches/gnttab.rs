//! Grant-table hot paths, on two machines:
//!
//! - `mock`: hv-core's [`MockPlatform`] (a spin lock and a hash lookup per
//!   frame access);
//! - `flat`: frames in a vector indexed by frame number, bulk copies done a
//!   64-bit word at a time with relaxed atomics (plain moves): closer to the
//!   real platform's identity-mapped frames.
//!
//! Rows (domain `b` maps or copies a grant of domain `a`):
//! - `map+unmap/hypercall`: two `VMCALL` exits through
//!   `Hypervisor::handle_exit`, `GNTTABOP_map_grant_ref` then
//!   `GNTTABOP_unmap_grant_ref`, one entry each (argument copies, decode,
//!   the entry's compare-and-swap, p2m and nested-table updates, flushes,
//!   status write-back, RIP skip).
//! - `map+unmap/direct`: the same pair without the exits
//!   (`gnttab::map_grant` + `gnttab::unmap_grant`).
//! - `copy4k/hypercall` and `copy4k/direct`: `GNTTABOP_copy` of 4 KiB from
//!   a grant of `a` to a frame of `b`, with and without the exit.
//! - `memcpy4k`: a plain 4 KiB `copy_from_slice`, the reference for the
//!   copy rows.
//! - `frames4k`: the platform's `FrameAccess::read` + `write` of 4 KiB
//!   through a bounce buffer, what a copy costs the platform alone.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use hv_core::arch::VmExit;
use hv_core::mock::{MockNpt, MockPlatform, MockVcpu};
use hv_core::platform::{FrameAccess, Platform};
use hv_core::types::Hfn;
use hv_core::{DomId, DomainConfig, Gfn, Hypervisor};
use xen_abi::grant_table as g;
use xen_abi::xen as x;
use zerocopy::IntoBytes;

const ARG: u64 = 0x10_0000;
const TABLE_GFN: u64 = 0x1000;
const DATA_GFN: u64 = 0x300;
const DEST_GFN: u64 = 0x200;
const MAP_GFN: u64 = 0x2000;

trait BenchPlatform: Platform + Sized {
    const NAME: &'static str;
    fn make() -> Self;
}

impl BenchPlatform for MockPlatform {
    const NAME: &'static str = "mock";
    fn make() -> Self {
        MockPlatform::default()
    }
}

/// Frames in a vector, bump-allocated, never reused.
struct FlatPlatform {
    frames: Vec<Box<[AtomicU64; 512]>>,
    next: AtomicU64,
}

impl BenchPlatform for FlatPlatform {
    const NAME: &'static str = "flat";
    fn make() -> Self {
        FlatPlatform {
            frames: (0..4096)
                .map(|_| Box::new([const { AtomicU64::new(0) }; 512]))
                .collect(),
            next: AtomicU64::new(1),
        }
    }
}

impl FlatPlatform {
    #[inline]
    fn fr(&self, hfn: Hfn) -> &[AtomicU64; 512] {
        &self.frames[hfn.0 as usize]
    }
}

impl FrameAccess for FlatPlatform {
    fn copy(&self, src: Hfn, src_off: usize, dst: Hfn, dst_off: usize, len: usize) {
        if src_off.is_multiple_of(8) && dst_off.is_multiple_of(8) && len.is_multiple_of(8) {
            // Word by word, as the real platform's memmove would.
            let (s, d) = (self.fr(src), self.fr(dst));
            for k in 0..len / 8 {
                d[dst_off / 8 + k].store(s[src_off / 8 + k].load(Relaxed), Relaxed);
            }
            return;
        }
        let mut buf = [0u8; 4096];
        self.read(src, src_off, &mut buf[..len]);
        self.write(dst, dst_off, &buf[..len]);
    }
    fn read(&self, hfn: Hfn, offset: usize, buf: &mut [u8]) {
        let fr = self.fr(hfn);
        if offset.is_multiple_of(8) && buf.len().is_multiple_of(8) {
            // Whole words: fixed-size moves.
            for (k, c) in buf.chunks_exact_mut(8).enumerate() {
                c.copy_from_slice(&fr[offset / 8 + k].load(Relaxed).to_le_bytes());
            }
            return;
        }
        let mut i = 0;
        while i < buf.len() {
            let at = offset + i;
            let (w, sh) = (at / 8, at % 8);
            let v = fr[w].load(Relaxed).to_le_bytes();
            let n = (8 - sh).min(buf.len() - i);
            buf[i..i + n].copy_from_slice(&v[sh..sh + n]);
            i += n;
        }
    }
    fn write(&self, hfn: Hfn, offset: usize, data: &[u8]) {
        let fr = self.fr(hfn);
        if offset.is_multiple_of(8) && data.len().is_multiple_of(8) {
            for (k, c) in data.chunks_exact(8).enumerate() {
                fr[offset / 8 + k].store(u64::from_le_bytes(c.try_into().unwrap()), Relaxed);
            }
            return;
        }
        let mut i = 0;
        while i < data.len() {
            let at = offset + i;
            let (w, sh) = (at / 8, at % 8);
            let n = (8 - sh).min(data.len() - i);
            if n == 8 {
                let v = u64::from_le_bytes(data[i..i + 8].try_into().unwrap());
                fr[w].store(v, Relaxed);
            } else {
                let mut b = [0u8; 8];
                b[sh..sh + n].copy_from_slice(&data[i..i + n]);
                let m = if n == 8 {
                    !0
                } else {
                    ((1u64 << (n * 8)) - 1) << (sh * 8)
                };
                let v = u64::from_le_bytes(b);
                let _ = fr[w].fetch_update(SeqCst, SeqCst, |x| Some((x & !m) | v));
            }
            i += n;
        }
    }
    fn zero(&self, hfn: Hfn, offset: usize, len: usize) {
        self.write(hfn, offset, &vec![0; len]);
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
        ((h as usize) < self.frames.len()).then_some(Hfn(h))
    }
    fn free_frame(&self, _hfn: Hfn) {}
    fn now_ns(&self) -> u64 {
        0
    }
    fn kick_cpu(&self, _pcpu: u32) {}
    fn console_write(&self, _domid: DomId, _text: &[u8]) {}
    fn cpuid(&self, _leaf: u32, _subleaf: u32) -> [u32; 4] {
        [0; 4]
    }
}

struct Sim<P: Platform> {
    hv: Hypervisor<P>,
    a: DomId,
    b: DomId,
    cpu: MockVcpu,
}

const MAP_AT: u64 = ARG;
const UNMAP_AT: u64 = ARG + 64;
const COPY_AT: u64 = ARG + 128;

impl<P: BenchPlatform> Sim<P> {
    fn new() -> Self {
        let mut hv = Hypervisor::new(P::make());
        let mut dom = || {
            let d = hv
                .create_domain(
                    DomainConfig {
                        domid: None,
                        name: "bench".into(),
                        privileged: false,
                        vcpus: 1,
                        max_pages: 2048,
                    },
                    Box::new(MockNpt::default()),
                )
                .unwrap();
            hv.populate(d, Gfn(0), 1024).unwrap();
            d
        };
        let (a, b) = (dom(), dom());
        hv_core::memory_op::add_to_physmap(
            &mut hv,
            a,
            xen_abi::memory::XENMAPSPACE_grant_table,
            0,
            TABLE_GFN,
        )
        .unwrap();
        let mem = hv.guest_mem(a).unwrap();
        for (r, flags) in [
            (8u64, g::GTF_permit_access),
            (9, g::GTF_permit_access | g::GTF_readonly),
        ] {
            let e = g::GrantEntryV1 {
                flags,
                domid: b.0,
                frame: DATA_GFN as u32,
            };
            mem.write_obj((TABLE_GFN << 12) + r * 8, &e).unwrap();
        }
        let mem = hv.guest_mem(b).unwrap();
        let map = g::GnttabMapGrantRef {
            host_addr: MAP_GFN << 12,
            flags: g::GNTMAP_host_map,
            r#ref: 8,
            dom: a.0,
            ..Default::default()
        };
        mem.write_obj(MAP_AT, &map).unwrap();
        let unmap = g::GnttabUnmapGrantRef {
            host_addr: MAP_GFN << 12,
            handle: 0,
            ..Default::default()
        };
        mem.write_obj(UNMAP_AT, &unmap).unwrap();
        let copy = g::GnttabCopy {
            source: g::GnttabCopyPtr {
                u: 9,
                domid: a.0,
                offset: 0,
                pad: 0,
            },
            dest: g::GnttabCopyPtr {
                u: DEST_GFN,
                domid: DomId::SELF,
                offset: 0,
                pad: 0,
            },
            len: 4096,
            flags: g::GNTCOPY_source_gref,
            ..Default::default()
        };
        mem.write(COPY_AT, copy.as_bytes()).unwrap();
        let mut s = Sim {
            hv,
            a,
            b,
            cpu: MockVcpu::flat64(),
        };
        // Check the rows do what they claim once.
        s.map_unmap_hypercall();
        let m: g::GnttabMapGrantRef = s.hv.guest_mem(b).unwrap().read_obj(MAP_AT).unwrap();
        let u: g::GnttabUnmapGrantRef = s.hv.guest_mem(b).unwrap().read_obj(UNMAP_AT).unwrap();
        assert_eq!((m.status, m.handle, u.status), (0, 0, 0));
        s.copy_hypercall();
        let c: g::GnttabCopy = s.hv.guest_mem(b).unwrap().read_obj(COPY_AT).unwrap();
        assert_eq!(c.status, 0);
        s
    }

    fn op(&mut self, cmd: u32, at: u64) {
        self.cpu.hypercall(
            x::__HYPERVISOR_grant_table_op as u64,
            [cmd as u64, at, 1, 0, 0],
        );
        self.hv
            .handle_exit(self.b, 0, &mut self.cpu, VmExit::Hypercall);
        debug_assert_eq!(self.cpu.ret(), 0);
    }

    fn map_unmap_hypercall(&mut self) {
        self.op(g::GNTTABOP_map_grant_ref, MAP_AT);
        self.op(g::GNTTABOP_unmap_grant_ref, UNMAP_AT);
    }

    fn map_unmap_direct(&mut self) {
        let (st, h) = hv_core::gnttab::map_grant(
            &mut self.hv,
            self.b,
            MAP_GFN << 12,
            g::GNTMAP_host_map,
            self.a,
            8,
        );
        debug_assert_eq!(st, 0);
        let st = hv_core::gnttab::unmap_grant(&mut self.hv, self.b, MAP_GFN << 12, h);
        debug_assert_eq!(st, 0);
        black_box(st);
    }

    fn copy_hypercall(&mut self) {
        self.op(g::GNTTABOP_copy, COPY_AT);
    }
}

fn grant<P: BenchPlatform>(c: &mut Criterion) {
    let mut s = Sim::<P>::new();
    let mut grp = c.benchmark_group(format!("gnttab/{}", P::NAME));
    grp.bench_function("map+unmap/hypercall", |bn| {
        bn.iter(|| s.map_unmap_hypercall())
    });
    grp.bench_function("map+unmap/direct", |bn| bn.iter(|| s.map_unmap_direct()));
    grp.bench_function("copy4k/hypercall", |bn| bn.iter(|| s.copy_hypercall()));
    let op = g::GnttabCopy {
        source: g::GnttabCopyPtr {
            u: 9,
            domid: s.a.0,
            offset: 0,
            pad: 0,
        },
        dest: g::GnttabCopyPtr {
            u: DEST_GFN,
            domid: DomId::SELF,
            offset: 0,
            pad: 0,
        },
        len: 4096,
        flags: g::GNTCOPY_source_gref,
        ..Default::default()
    };
    grp.bench_function("copy4k/direct", |bn| {
        bn.iter(|| black_box(hv_core::gnttab::copy_one(&mut s.hv, s.b, black_box(&op))))
    });
    let (src, dst) = {
        let d = |dom, gfn| s.hv.domain(dom).unwrap().p2m.get(Gfn(gfn)).unwrap().hfn;
        (d(s.a, DATA_GFN), d(s.b, DEST_GFN))
    };
    grp.bench_function("frames4k", |bn| {
        let mut buf = [0u8; 4096];
        bn.iter(|| {
            s.hv.platform.read(src, 0, &mut buf);
            s.hv.platform.write(dst, 0, black_box(&buf));
        })
    });
    grp.finish();
}

fn memcpy(c: &mut Criterion) {
    let src = vec![0x5Au8; 4096];
    let mut dst = vec![0u8; 4096];
    c.bench_function("gnttab/memcpy4k", |bn| {
        bn.iter(|| {
            dst.copy_from_slice(black_box(&src));
            black_box(&mut dst);
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = memcpy, grant::<MockPlatform>, grant::<FlatPlatform>
}
criterion_main!(benches);
