//! A mock machine for host tests, fuzzing and benchmarks: frames on the
//! heap, a virtual clock, captured console output and kicks, software
//! nested page tables and a scripted vCPU backend.
//!
//! Enabled by the `mock` feature (and in hv-core's own unit tests).

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};

use hashbrown::HashMap;
use spin::Mutex;

use crate::arch::{ControlReg, Event, Gprs, NestedPaging, NptError, P2mPerms, VcpuBackend, VmExit};
use crate::pci::Bdf;
use crate::platform::{FrameAccess, GsiRoute, Platform};
use crate::types::{DomId, Gfn, Hfn, PAGE_SIZE};

type Frame = Box<[AtomicU64; PAGE_SIZE / 8]>;

/// The frame store's shards: CPUs touching different domains' frames
/// (the SMP bench and tests) do not meet on one lock or cache line.
const SHARDS: usize = 64;

/// One shard of the frame store, on cache lines of its own.
#[repr(align(128))]
#[derive(Default)]
struct Shard(Mutex<HashMap<u64, Frame>>);

fn new_frame() -> Frame {
    Box::new([const { AtomicU64::new(0) }; PAGE_SIZE / 8])
}

/// What a fresh frame of [`Platform::alloc_block`] holds: host RAM is
/// not zero at power-on.
pub const STALE_WORD: u64 = 0xDEAD_BEEF_5CA1_AB1E;

/// The calling host thread's CPU number for the lock-order check: the
/// lowest free one, given back when the thread ends (past
/// `lockorder::MAX_CPUS` live threads, unchecked).
fn thread_cpu() -> usize {
    static FREE: Mutex<Vec<usize>> = Mutex::new(Vec::new());
    static NEXT: AtomicU64 = AtomicU64::new(0);
    struct Cpu(usize);
    impl Drop for Cpu {
        fn drop(&mut self) {
            FREE.lock().push(self.0);
        }
    }
    std::thread_local! {
        static CPU: Cpu = Cpu(FREE.lock().pop().unwrap_or_else(|| NEXT.fetch_add(1, SeqCst) as usize));
    }
    CPU.with(|c| c.0)
}

/// The mock machine.
pub struct MockPlatform {
    frames: Vec<Shard>,
    /// Frames allocated (in every shard).
    in_use: AtomicU64,
    /// Freed frames with their contents, when `recycle` is set.
    graveyard: Mutex<HashMap<u64, Frame>>,
    /// Keep freed frames' contents and hand them out again from
    /// `alloc_block` (as real memory does), instead of fresh frames.
    pub recycle: AtomicBool,
    next: AtomicU64,
    limit: AtomicU64,
    /// Virtual system time in nanoseconds.
    pub now: AtomicU64,
    /// Console lines written, with their domain.
    pub console: Mutex<Vec<(DomId, Vec<u8>)>>,
    /// Physical CPUs kicked, in order.
    pub kicks: Mutex<Vec<u32>>,
    /// Frames freed, in order.
    pub freed: Mutex<Vec<Hfn>>,
    /// Whether CPUID leaf 0 says AMD.
    pub amd: bool,
    /// CPUID bits the machine lacks: (leaf, register 0-3 for EAX-EDX,
    /// mask), cleared from every answer of that leaf.
    pub cpuid_clear: Vec<(u32, usize, u32)>,
    /// The host's PCI functions.
    pub pci: Mutex<Vec<MockPciFunction>>,
    /// Every configuration write that reached the host: (function,
    /// register, size, value).
    pub pci_writes: Mutex<Vec<(Bdf, u8, u8, u32)>>,
    /// Every host I/O port access: (port, size, `Some(value)` for a write,
    /// `None` for a read). Reads answer the port number.
    pub io: Mutex<Vec<(u16, u8, Option<u32>)>>,
    /// MADT interrupt source overrides: (ISA IRQ, route).
    pub irq_overrides: Mutex<Vec<(u8, GsiRoute)>>,
    /// Every IOAPIC operation, in order.
    pub ioapic: Mutex<Vec<IoapicOp>>,
}

/// An IOAPIC operation the mock recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoapicOp {
    /// [`Platform::ioapic_route`].
    Route {
        /// The pin.
        gsi: u32,
        /// Level-triggered.
        level: bool,
        /// Active low.
        active_low: bool,
    },
    /// [`Platform::ioapic_mask`].
    Mask {
        /// The pin.
        gsi: u32,
        /// Masked (else unmasked).
        masked: bool,
    },
}

/// The mock's IOAPIC has 24 pins.
pub const MOCK_IOAPIC_PINS: u32 = 24;

/// A host PCI function's configuration space: bytes and, per dword, the
/// bits a write changes (the rest are read-only).
#[derive(Clone, Debug)]
pub struct MockPciFunction {
    /// Where it is.
    pub bdf: Bdf,
    /// The 256 bytes of configuration space.
    pub config: [u8; 256],
    /// Writable bits of each dword.
    pub writable: [u32; 64],
}

impl MockPciFunction {
    /// An endpoint (header type 0) with these IDs, no BARs, a writable
    /// command register, cache line size, latency timer and interrupt
    /// line, and a writable device-specific area (0x40-0xFF).
    pub fn endpoint(bdf: Bdf, vendor: u16, device: u16) -> Self {
        let mut f = MockPciFunction {
            bdf,
            config: [0; 256],
            writable: [0; 64],
        };
        f.set_dword(0x00, u32::from(vendor) | (u32::from(device) << 16));
        f.set_dword(0x08, 0x0200_0000); // network controller
        f.writable[1] = 0x0000_FFFF;
        f.writable[3] = 0x0000_FFFF;
        f.writable[15] = 0x0000_00FF;
        for w in &mut f.writable[16..] {
            *w = u32::MAX;
        }
        f
    }

    /// Sets BAR register `i` to `value` with `writable` address bits (a
    /// BAR of size S has `!(S - 1)` writable, type bits excluded).
    pub fn with_bar(mut self, i: usize, value: u32, writable: u32) -> Self {
        self.set_dword(0x10 + 4 * i as u8, value);
        self.writable[4 + i] = writable;
        self
    }

    /// A dword of configuration space.
    pub fn dword(&self, reg: u8) -> u32 {
        let r = usize::from(reg & !3);
        u32::from_le_bytes(self.config[r..r + 4].try_into().unwrap())
    }

    /// Sets a dword regardless of what is writable.
    pub fn set_dword(&mut self, reg: u8, v: u32) {
        let r = usize::from(reg & !3);
        self.config[r..r + 4].copy_from_slice(&v.to_le_bytes());
    }
}

impl Default for MockPlatform {
    fn default() -> Self {
        Self::new(1 << 20)
    }
}

impl MockPlatform {
    /// A machine that can hand out `limit` frames.
    pub fn new(limit: u64) -> Self {
        // Each host thread is a CPU of its own for the lock-order check.
        crate::lockorder::set_cpu_source(thread_cpu);
        MockPlatform {
            frames: (0..SHARDS).map(|_| Shard::default()).collect(),
            in_use: AtomicU64::new(0),
            graveyard: Mutex::new(HashMap::new()),
            recycle: AtomicBool::new(false),
            next: AtomicU64::new(0x100),
            limit: AtomicU64::new(limit),
            now: AtomicU64::new(1_000_000),
            console: Mutex::new(Vec::new()),
            kicks: Mutex::new(Vec::new()),
            freed: Mutex::new(Vec::new()),
            amd: true,
            cpuid_clear: Vec::new(),
            pci: Mutex::new(Vec::new()),
            pci_writes: Mutex::new(Vec::new()),
            io: Mutex::new(Vec::new()),
            irq_overrides: Mutex::new(Vec::new()),
            ioapic: Mutex::new(Vec::new()),
        }
    }

    /// Frames currently allocated.
    pub fn frames_in_use(&self) -> usize {
        self.in_use.load(SeqCst) as usize
    }

    /// The shard that holds frame `h`: a multiplicative (Fibonacci) hash,
    /// so that frames at the same offset of different blocks spread out.
    fn shard(&self, h: u64) -> &Mutex<HashMap<u64, Frame>> {
        let i = h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SHARDS.trailing_zeros());
        &self.frames[i as usize].0
    }

    /// Counts `n` more frames in use, unless that passes the limit.
    fn reserve(&self, n: u64) -> bool {
        let limit = self.limit.load(SeqCst);
        self.in_use
            .fetch_update(SeqCst, SeqCst, |u| (u + n <= limit).then_some(u + n))
            .is_ok()
    }

    /// Console output of `d` as text lines.
    pub fn console_of(&self, d: DomId) -> Vec<alloc::string::String> {
        self.console
            .lock()
            .iter()
            .filter(|(x, _)| *x == d)
            .map(|(_, l)| alloc::string::String::from_utf8_lossy(l).into_owned())
            .collect()
    }

    fn with<R>(&self, hfn: Hfn, f: impl FnOnce(&[AtomicU64; PAGE_SIZE / 8]) -> R) -> R {
        let frames = self.shard(hfn.0).lock();
        let fr = frames
            .get(&hfn.0)
            .expect("access to a frame that is not allocated");
        f(fr)
    }

    /// Runs `f` on each 64-bit word that bytes `offset..offset + len` of
    /// the frame touch, with the byte shift in the word and the range of
    /// the caller's buffer it covers (one lock for the whole access).
    fn word_op(
        &self,
        hfn: Hfn,
        offset: usize,
        len: usize,
        mut f: impl FnMut(&AtomicU64, usize, core::ops::Range<usize>),
    ) {
        assert!(offset + len <= PAGE_SIZE, "frame access out of bounds");
        self.with(hfn, |fr| {
            let mut i = 0;
            while i < len {
                let at = offset + i;
                let sh = at % 8;
                let n = (8 - sh).min(len - i);
                f(&fr[at / 8], sh, i..i + n);
                i += n;
            }
        })
    }
}

impl FrameAccess for MockPlatform {
    fn read(&self, hfn: Hfn, offset: usize, buf: &mut [u8]) {
        // One atomic load per word touched.
        self.word_op(hfn, offset, buf.len(), |w, sh, r| {
            let n = r.len();
            buf[r].copy_from_slice(&w.load(SeqCst).to_le_bytes()[sh..sh + n]);
        });
    }
    fn write(&self, hfn: Hfn, offset: usize, data: &[u8]) {
        // Whole words are stored, partial ones merged atomically.
        self.word_op(hfn, offset, data.len(), |w, sh, r| {
            let n = r.len();
            let mut b = [0u8; 8];
            b[sh..sh + n].copy_from_slice(&data[r]);
            let v = u64::from_le_bytes(b);
            if n == 8 {
                w.store(v, SeqCst);
            } else {
                let m = (u64::MAX >> (64 - 8 * n)) << (8 * sh);
                let _ = w.fetch_update(SeqCst, SeqCst, |x| Some((x & !m) | v));
            }
        });
    }
    fn zero(&self, hfn: Hfn, offset: usize, len: usize) {
        self.word_op(hfn, offset, len, |w, sh, r| {
            let n = r.len();
            let m = if n == 8 {
                u64::MAX
            } else {
                (u64::MAX >> (64 - 8 * n)) << (8 * sh)
            };
            w.fetch_and(!m, SeqCst);
        });
    }
    fn cmpxchg_u32(&self, hfn: Hfn, offset: usize, old: u32, new: u32) -> u32 {
        assert!(offset.is_multiple_of(4));
        let sh = (offset % 8) * 8;
        let m = 0xFFFF_FFFFu64 << sh;
        self.with(hfn, |fr| {
            let w = &fr[offset / 8];
            let mut found = 0;
            let _ = w.fetch_update(SeqCst, SeqCst, |x| {
                found = ((x & m) >> sh) as u32;
                (found == old).then_some((x & !m) | ((new as u64) << sh))
            });
            found
        })
    }
    fn cmpxchg_u64(&self, hfn: Hfn, offset: usize, old: u64, new: u64) -> u64 {
        assert!(offset.is_multiple_of(8));
        self.with(hfn, |fr| {
            match fr[offset / 8].compare_exchange(old, new, SeqCst, SeqCst) {
                Ok(v) | Err(v) => v,
            }
        })
    }
    fn fetch_or_u64(&self, hfn: Hfn, offset: usize, bits: u64) -> u64 {
        assert!(offset.is_multiple_of(8));
        self.with(hfn, |fr| fr[offset / 8].fetch_or(bits, SeqCst))
    }
    fn fetch_and_u64(&self, hfn: Hfn, offset: usize, bits: u64) -> u64 {
        assert!(offset.is_multiple_of(8));
        self.with(hfn, |fr| fr[offset / 8].fetch_and(bits, SeqCst))
    }
    fn fetch_or_u32(&self, hfn: Hfn, offset: usize, bits: u32) -> u32 {
        assert!(offset.is_multiple_of(4));
        let sh = (offset % 8) * 8;
        self.with(hfn, |fr| {
            (fr[offset / 8].fetch_or((bits as u64) << sh, SeqCst) >> sh) as u32
        })
    }
    fn fetch_and_u32(&self, hfn: Hfn, offset: usize, bits: u32) -> u32 {
        assert!(offset.is_multiple_of(4));
        let sh = (offset % 8) * 8;
        let mask = !(0xFFFF_FFFFu64 << sh) | ((bits as u64) << sh);
        self.with(hfn, |fr| {
            (fr[offset / 8].fetch_and(mask, SeqCst) >> sh) as u32
        })
    }
    fn load_u32(&self, hfn: Hfn, offset: usize) -> u32 {
        assert!(offset.is_multiple_of(4));
        self.with(hfn, |fr| {
            (fr[offset / 8].load(SeqCst) >> ((offset % 8) * 8)) as u32
        })
    }
    fn load_u64(&self, hfn: Hfn, offset: usize) -> u64 {
        assert!(offset.is_multiple_of(8));
        self.with(hfn, |fr| fr[offset / 8].load(SeqCst))
    }
    fn store_u8(&self, hfn: Hfn, offset: usize, value: u8) {
        self.write(hfn, offset, &[value]);
    }
}

/// The platform's contract for configuration accesses.
fn check_pci_access(reg: u8, size: u8) {
    assert!(matches!(size, 1 | 2 | 4), "PCI access of {size} bytes");
    assert!(reg.is_multiple_of(size), "unaligned PCI access at {reg:#x}");
}

impl Platform for MockPlatform {
    fn pci_config_read(&self, bdf: Bdf, reg: u8, size: u8) -> u32 {
        check_pci_access(reg, size);
        let pci = self.pci.lock();
        let Some(f) = pci.iter().find(|f| f.bdf == bdf) else {
            return if size == 4 {
                u32::MAX
            } else {
                (1 << (8 * size)) - 1
            };
        };
        (0..size).fold(0, |v, i| {
            v | (u32::from(f.config[usize::from(reg + i)]) << (8 * i))
        })
    }
    fn pci_config_write(&self, bdf: Bdf, reg: u8, size: u8, value: u32) {
        check_pci_access(reg, size);
        self.pci_writes.lock().push((bdf, reg, size, value));
        let mut pci = self.pci.lock();
        let Some(f) = pci.iter_mut().find(|f| f.bdf == bdf) else {
            return;
        };
        for i in 0..size {
            let at = reg + i;
            let w = (f.writable[usize::from(at / 4)] >> (8 * (at % 4))) as u8;
            let old = f.config[usize::from(at)];
            let new = (value >> (8 * i)) as u8;
            f.config[usize::from(at)] = (old & !w) | (new & w);
        }
    }
    fn alloc_frame(&self) -> Option<Hfn> {
        if !self.reserve(1) {
            return None;
        }
        let h = self.next.fetch_add(1, SeqCst);
        self.shard(h).lock().insert(h, new_frame());
        Some(Hfn(h))
    }
    fn free_frame(&self, hfn: Hfn) {
        let fr = self.shard(hfn.0).lock().remove(&hfn.0);
        assert!(fr.is_some(), "double free of {hfn:?}");
        self.in_use.fetch_sub(1, SeqCst);
        if let Some(fr) = fr
            && self.recycle.load(SeqCst)
        {
            self.graveyard.lock().insert(hfn.0, fr);
        }
        self.freed.lock().push(hfn);
    }
    fn alloc_block(&self) -> Option<Hfn> {
        const N: u64 = crate::p2m::BLOCK_FRAMES;
        if !self.reserve(N) {
            return None;
        }
        if self.recycle.load(SeqCst) {
            // A whole freed block, old contents and all.
            let mut grave = self.graveyard.lock();
            let base = grave
                .keys()
                .map(|&h| h & !(N - 1))
                .find(|&b| (b..b + N).all(|h| grave.contains_key(&h)));
            if let Some(b) = base {
                for h in b..b + N {
                    let fr = grave.remove(&h).expect("checked");
                    self.shard(h).lock().insert(h, fr);
                }
                return Some(Hfn(b));
            }
        }
        let base = loop {
            let cur = self.next.load(SeqCst);
            let b = cur.next_multiple_of(N);
            if self
                .next
                .compare_exchange(cur, b + N, SeqCst, SeqCst)
                .is_ok()
            {
                break b;
            }
        };
        for h in base..base + N {
            let fr = new_frame();
            for w in fr.iter() {
                w.store(STALE_WORD, SeqCst);
            }
            self.shard(h).lock().insert(h, fr);
        }
        Some(Hfn(base))
    }
    fn io_port_read(&self, port: u16, size: u8) -> u32 {
        self.io.lock().push((port, size, None));
        u32::from(port)
            & if size >= 4 {
                u32::MAX
            } else {
                (1 << (8 * size)) - 1
            }
    }
    fn io_port_write(&self, port: u16, size: u8, value: u32) {
        self.io.lock().push((port, size, Some(value)));
    }
    fn irq_route(&self, line: u8) -> Option<GsiRoute> {
        if let Some(&(_, r)) = self.irq_overrides.lock().iter().find(|(i, _)| *i == line) {
            return Some(r);
        }
        GsiRoute::bus_default(line)
    }
    fn ioapic_route(&self, gsi: u32, level: bool, active_low: bool) -> bool {
        if gsi >= MOCK_IOAPIC_PINS {
            return false;
        }
        self.ioapic.lock().push(IoapicOp::Route {
            gsi,
            level,
            active_low,
        });
        true
    }
    fn ioapic_mask(&self, gsi: u32, masked: bool) {
        self.ioapic.lock().push(IoapicOp::Mask { gsi, masked });
    }
    fn alloc_contiguous(&self, blocks: u64) -> Option<Hfn> {
        let n = blocks.checked_mul(crate::p2m::BLOCK_FRAMES)?;
        if n == 0 || !self.reserve(n) {
            return None;
        }
        // At 1 GiB or above (below 4 GiB), as a host's free memory is
        // above a small domain's low RAM.
        let base = loop {
            let cur = self.next.load(SeqCst);
            let b = cur.max(1 << 18).next_multiple_of(crate::p2m::BLOCK_FRAMES);
            if b + n > 1 << 20 {
                self.in_use.fetch_sub(n, SeqCst);
                return None;
            }
            if self
                .next
                .compare_exchange(cur, b + n, SeqCst, SeqCst)
                .is_ok()
            {
                break b;
            }
        };
        for h in base..base + n {
            let fr = new_frame();
            for w in fr.iter() {
                w.store(STALE_WORD, SeqCst);
            }
            self.shard(h).lock().insert(h, fr);
        }
        Some(Hfn(base))
    }
    fn now_ns(&self) -> u64 {
        self.now.load(SeqCst)
    }
    fn kick_cpu(&self, pcpu: u32) {
        self.kicks.lock().push(pcpu);
    }
    fn console_write(&self, domid: DomId, text: &[u8]) {
        self.console.lock().push((domid, text.to_vec()));
    }
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        let mut r = match leaf {
            0 if self.amd => [0xD, 0x6874_7541, 0x444D_4163, 0x6974_6E65],
            0 => [0xD, 0x756E_6547, 0x6C65_746E, 0x4965_6E69],
            // Everything set, to see what the policy hides.
            1 | 7 | 0x8000_0001 => [0xFFFF_FFFF; 4],
            // x87, SSE, AVX (at 576, 256 bytes); XSAVEOPT.
            0xD => match subleaf {
                0 => [0x7, 832, 832, 0],
                1 => [0x1, 0, 0, 0],
                2 => [256, 576, 0, 0],
                _ => [0; 4],
            },
            0x8000_0000 => [0x8000_0008, 0, 0, 0],
            _ => [0; 4],
        };
        for &(l, reg, mask) in &self.cpuid_clear {
            if l == leaf {
                r[reg & 3] &= !mask;
            }
        }
        r
    }
}

/// Software nested page tables: a map, with counters.
#[derive(Default)]
pub struct MockNpt {
    /// The mappings.
    pub map: HashMap<u64, (Hfn, P2mPerms)>,
    /// Number of flushes.
    pub flushes: u64,
}

impl NestedPaging for MockNpt {
    fn map(&mut self, gfn: Gfn, hfn: Hfn, perms: P2mPerms) -> Result<(), NptError> {
        if gfn.0 >= 1 << 40 {
            return Err(NptError::OutOfRange);
        }
        self.map.insert(gfn.0, (hfn, perms));
        Ok(())
    }
    fn unmap(&mut self, gfn: Gfn) {
        self.map.remove(&gfn.0);
    }
    fn is_mapped(&self, gfn: Gfn) -> bool {
        self.map.contains_key(&gfn.0)
    }
    fn flush(&mut self) {
        self.flushes += 1;
    }
    fn root(&self) -> u64 {
        0
    }
}

/// A scripted vCPU: registers and control state in memory, events
/// recorded, every exiting instruction 3 bytes long.
#[derive(Clone, Debug, Default)]
pub struct MockVcpu {
    /// General registers.
    pub gprs: Gprs,
    /// RIP.
    pub rip: u64,
    /// RFLAGS.
    pub rflags: u64,
    /// CPL.
    pub cpl: u8,
    /// 64-bit mode.
    pub long: bool,
    /// CR0, CR2, CR3, CR4, EFER, XCR0.
    pub ctl: [u64; 6],
    /// Events injected, in order.
    pub injected: Vec<Event>,
    /// Whether an interrupt window is requested.
    pub window: bool,
    /// Exits the next `run` calls return.
    pub script: Vec<VmExit>,
    /// CS's base.
    pub cs_base: u64,
    /// The PDPTEs hv-core loaded last.
    pub pdptes: Option<[u64; 4]>,
}

impl MockVcpu {
    /// A vCPU in 64-bit mode with paging off for simplicity (linear =
    /// physical), interrupts enabled.
    pub fn flat64() -> Self {
        MockVcpu {
            long: true,
            rflags: 0x202,
            ctl: [0x11, 0, 0, 0, 0, 1],
            ..Default::default()
        }
    }

    /// Sets up a 64-bit hypercall.
    pub fn hypercall(&mut self, nr: u64, args: [u64; 5]) {
        self.gprs.rax = nr;
        [
            self.gprs.rdi,
            self.gprs.rsi,
            self.gprs.rdx,
            self.gprs.r10,
            self.gprs.r8,
        ] = args;
    }

    /// RAX as a signed hypercall result.
    pub fn ret(&self) -> i64 {
        self.gprs.rax as i64
    }
}

fn idx(r: ControlReg) -> usize {
    match r {
        ControlReg::Cr0 => 0,
        ControlReg::Cr2 => 1,
        ControlReg::Cr3 => 2,
        ControlReg::Cr4 => 3,
        ControlReg::Efer => 4,
        ControlReg::Xcr0 => 5,
    }
}

impl VcpuBackend for MockVcpu {
    fn run(&mut self) -> VmExit {
        if self.script.is_empty() {
            VmExit::Hlt
        } else {
            self.script.remove(0)
        }
    }
    fn gprs(&self) -> &Gprs {
        &self.gprs
    }
    fn gprs_mut(&mut self) -> &mut Gprs {
        &mut self.gprs
    }
    fn rip(&self) -> u64 {
        self.rip
    }
    fn set_rip(&mut self, rip: u64) {
        self.rip = rip;
    }
    fn rflags(&self) -> u64 {
        self.rflags
    }
    fn set_rflags(&mut self, rflags: u64) {
        self.rflags = rflags;
    }
    fn cpl(&self) -> u8 {
        self.cpl
    }
    fn in_64bit_mode(&self) -> bool {
        self.long
    }
    fn cs_base(&self) -> u64 {
        self.cs_base
    }
    fn set_pdptes(&mut self, pdptes: [u64; 4]) {
        self.pdptes = Some(pdptes);
    }
    fn control(&self, reg: ControlReg) -> u64 {
        self.ctl[idx(reg)]
    }
    fn set_control(&mut self, reg: ControlReg, value: u64) {
        self.ctl[idx(reg)] = value;
    }
    fn skip_instruction(&mut self, _exit: &VmExit) -> bool {
        self.rip += 3;
        true
    }
    fn inject(&mut self, event: Event) {
        self.injected.push(event);
    }
    fn interruptible(&self) -> bool {
        self.rflags & 0x200 != 0
    }
    fn set_interrupt_window(&mut self, enable: bool) {
        self.window = enable;
    }
}
