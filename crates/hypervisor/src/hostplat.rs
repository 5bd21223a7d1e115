//! hv-core's platform on real hardware: host frames through the identity
//! map, the TSC clock, IPIs through the local APIC, the serial console.

use core::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering::SeqCst};

use hv_core::pci::Bdf;
use hv_core::platform::{FrameAccess, Platform};
use hv_core::{DomId, Hfn, PAGE_SIZE};

use crate::boot::IDENTITY_MAPPED;
use crate::memory::FRAMES;
use crate::platform::LocalApic;

/// The vector that kicks a CPU out of a guest or out of idle.
pub const KICK_VECTOR: u8 = 0xF0;
/// The local APIC timer's vector (time slices and timeouts).
pub const TIMER_VECTOR: u8 = 0xEF;
/// Most CPUs the hypervisor drives.
pub const MAX_CPUS: usize = 64;

/// APIC id of each CPU index (index 0 is the boot CPU); `u32::MAX`: none.
static APIC_IDS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(u32::MAX) }; MAX_CPUS];

/// Records that CPU `index` has APIC id `apic_id`.
pub fn register_cpu(index: u32, apic_id: u32) {
    if let Some(slot) = APIC_IDS.get(index as usize) {
        slot.store(apic_id, SeqCst);
    }
}

/// The index of the calling CPU (0 if unknown).
pub fn current_cpu(apic: &LocalApic) -> u32 {
    let id = apic.id();
    APIC_IDS
        .iter()
        .position(|a| a.load(SeqCst) == id)
        .unwrap_or(0) as u32
}

/// hv-core's view of the machine.
pub struct HostPlatform {
    /// The local APIC (same mode on every CPU).
    pub apic: LocalApic,
}

fn frame_ptr(hfn: Hfn, offset: usize, len: usize) -> *mut u8 {
    let hpa = hfn.hpa();
    // hv-core passes only frames it got from `alloc_frame` (below 4 GiB)
    // and ranges inside one page; anything else is a hypervisor bug.
    assert!(hpa + PAGE_SIZE as u64 <= IDENTITY_MAPPED && offset + len <= PAGE_SIZE);
    (hpa as usize + offset) as *mut u8
}

macro_rules! atomic_at {
    ($ty:ty, $hfn:expr, $off:expr) => {{
        let p = frame_ptr($hfn, $off, size_of::<$ty>());
        assert!((p as usize).is_multiple_of(size_of::<$ty>()));
        // SAFETY: the address is an identity-mapped, naturally aligned word
        // of a host frame that stays allocated while hv-core uses it; guest
        // and hypervisor touch guest-shared words only atomically (the
        // guest with locked instructions), so an atomic view is sound.
        unsafe { <$ty>::from_ptr(p.cast()) }
    }};
}

impl FrameAccess for HostPlatform {
    fn read(&self, hfn: Hfn, offset: usize, buf: &mut [u8]) {
        let p = frame_ptr(hfn, offset, buf.len());
        // SAFETY: [p, p + len) lies in one identity-mapped host frame; a
        // guest may write it concurrently, which is a race in its own data
        // that cannot break the hypervisor: we copy bytes and never form a
        // reference to guest memory.
        unsafe { core::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), buf.len()) }
    }
    fn write(&self, hfn: Hfn, offset: usize, data: &[u8]) {
        let p = frame_ptr(hfn, offset, data.len());
        // SAFETY: as in `read`.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) }
    }
    fn zero(&self, hfn: Hfn, offset: usize, len: usize) {
        let p = frame_ptr(hfn, offset, len);
        // SAFETY: as in `read`.
        unsafe { core::ptr::write_bytes(p, 0, len) }
    }
    fn cmpxchg_u32(&self, hfn: Hfn, offset: usize, old: u32, new: u32) -> u32 {
        match atomic_at!(AtomicU32, hfn, offset).compare_exchange(old, new, SeqCst, SeqCst) {
            Ok(v) | Err(v) => v,
        }
    }
    fn cmpxchg_u64(&self, hfn: Hfn, offset: usize, old: u64, new: u64) -> u64 {
        match atomic_at!(AtomicU64, hfn, offset).compare_exchange(old, new, SeqCst, SeqCst) {
            Ok(v) | Err(v) => v,
        }
    }
    fn fetch_or_u64(&self, hfn: Hfn, offset: usize, bits: u64) -> u64 {
        atomic_at!(AtomicU64, hfn, offset).fetch_or(bits, SeqCst)
    }
    fn fetch_and_u64(&self, hfn: Hfn, offset: usize, bits: u64) -> u64 {
        atomic_at!(AtomicU64, hfn, offset).fetch_and(bits, SeqCst)
    }
    fn fetch_or_u32(&self, hfn: Hfn, offset: usize, bits: u32) -> u32 {
        atomic_at!(AtomicU32, hfn, offset).fetch_or(bits, SeqCst)
    }
    fn fetch_and_u32(&self, hfn: Hfn, offset: usize, bits: u32) -> u32 {
        atomic_at!(AtomicU32, hfn, offset).fetch_and(bits, SeqCst)
    }
    fn load_u32(&self, hfn: Hfn, offset: usize) -> u32 {
        atomic_at!(AtomicU32, hfn, offset).load(SeqCst)
    }
    fn load_u64(&self, hfn: Hfn, offset: usize) -> u64 {
        atomic_at!(AtomicU64, hfn, offset).load(SeqCst)
    }
    fn store_u8(&self, hfn: Hfn, offset: usize, value: u8) {
        atomic_at!(AtomicU8, hfn, offset).store(value, SeqCst)
    }
    fn copy(&self, src: Hfn, src_off: usize, dst: Hfn, dst_off: usize, len: usize) {
        let s = frame_ptr(src, src_off, len);
        let d = frame_ptr(dst, dst_off, len);
        // SAFETY: both ranges lie inside identity-mapped host frames that
        // hv-core holds (checked by frame_ptr); `copy` allows overlap.
        unsafe { core::ptr::copy(s, d, len) }
    }
}

/// One zeroed frame below 4 GiB from the frame allocator.
pub fn alloc_zeroed_frame() -> Option<Hfn> {
    let hpa = FRAMES
        .lock()
        .alloc(PAGE_SIZE as u64, PAGE_SIZE as u64, IDENTITY_MAPPED)
        .ok()?;
    // SAFETY: the frame was just taken from the allocator, so nothing else
    // uses it, and it is identity-mapped.
    unsafe { core::ptr::write_bytes(hpa as *mut u8, 0, PAGE_SIZE) };
    Some(Hfn(hpa >> 12))
}

/// Gives a frame back to the allocator.
pub fn free_frame(hfn: Hfn) {
    if let Err(e) = FRAMES.lock().dealloc(hfn.hpa(), PAGE_SIZE as u64) {
        log::error!("freeing frame {:#x}: {:?}", hfn.hpa(), e);
    }
}

impl Platform for HostPlatform {
    fn alloc_frame(&self) -> Option<Hfn> {
        alloc_zeroed_frame()
    }
    fn free_frame(&self, hfn: Hfn) {
        free_frame(hfn)
    }
    fn alloc_block(&self) -> Option<Hfn> {
        // Not zeroed: hv-core's p2m zeroes each frame before anyone sees it.
        const BLOCK: u64 = 2 << 20;
        let hpa = FRAMES.lock().alloc(BLOCK, BLOCK, IDENTITY_MAPPED).ok()?;
        Some(Hfn(hpa >> 12))
    }
    fn alloc_contiguous(&self, blocks: u64) -> Option<Hfn> {
        // Not zeroed: hv-core zeroes the run before mapping it. Below 1 GiB
        // where it fits (a run there never straddles 1 GiB, which the
        // service domain's grant hole below 1 GiB needs, docs/architecture.md
        // §13), else below 4 GiB (and the identity map), for 32-bit DMA.
        const BLOCK: u64 = 2 << 20;
        let size = blocks.checked_mul(BLOCK)?;
        let mut frames = FRAMES.lock();
        let hpa = [1 << 30, IDENTITY_MAPPED.min(1 << 32)]
            .into_iter()
            .find_map(|limit| frames.alloc(size, BLOCK, limit).ok())?;
        Some(Hfn(hpa >> 12))
    }
    fn now_ns(&self) -> u64 {
        crate::platform::now_ns()
    }
    fn kick_cpu(&self, pcpu: u32) {
        if pcpu == current_cpu(&self.apic) {
            return;
        }
        let Some(id) = APIC_IDS.get(pcpu as usize).map(|a| a.load(SeqCst)) else {
            return;
        };
        if id != u32::MAX {
            // Fixed delivery, edge, the kick vector.
            self.apic.send_ipi(id, u32::from(KICK_VECTOR));
        }
    }
    fn console_write(&self, domid: DomId, text: &[u8]) {
        let s = core::str::from_utf8(text).unwrap_or("<non-UTF-8 output>");
        crate::println!("(d{}) {}", domid.0, s);
    }
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
        [r.eax, r.ebx, r.ecx, r.edx]
    }
    fn tsc(&self) -> u64 {
        crate::platform::rdtsc()
    }
    fn tsc_hz(&self) -> u64 {
        crate::platform::tsc_hz()
    }
    fn pci_config_read(&self, bdf: Bdf, reg: u8, size: u8) -> u32 {
        let _g = PCI_CONFIG.lock();
        let data = select_config(bdf, reg);
        // SAFETY: configuration mechanism #1; the address port was just
        // set under PCI_CONFIG (no other CPU can change it in between),
        // and `data` is inside 0xCFC-0xCFF with `reg` a multiple of `size`
        // (hv-core's contract), so the access stays in the data dword.
        unsafe {
            match size {
                1 => u32::from(x86::io::inb(data)),
                2 => u32::from(x86::io::inw(data)),
                _ => x86::io::inl(data),
            }
        }
    }
    fn pci_config_write(&self, bdf: Bdf, reg: u8, size: u8, value: u32) {
        let _g = PCI_CONFIG.lock();
        let data = select_config(bdf, reg);
        // SAFETY: as in `pci_config_read`; hv-core writes only registers
        // of functions assigned to a domain, filtered (see hv_core::pci).
        unsafe {
            match size {
                1 => x86::io::outb(data, value as u8),
                2 => x86::io::outw(data, value as u16),
                _ => x86::io::outl(data, value),
            }
        }
    }
    fn irq_route(&self, line: u8) -> Option<hv_core::platform::GsiRoute> {
        crate::ioapic::irq_route(line)
    }
    fn ioapic_route(&self, gsi: u32, level: bool, active_low: bool) -> bool {
        crate::ioapic::route(gsi, level, active_low)
    }
    fn ioapic_mask(&self, gsi: u32, masked: bool) {
        crate::ioapic::mask(gsi, masked)
    }
    fn io_port_read(&self, port: u16, size: u8) -> u32 {
        // SAFETY: hv-core asks only for ports inside an I/O BAR of a PCI
        // function assigned to the domain doing the IN (hv_core::pci
        // `bar_port_read`): the device's own registers, which that domain
        // drives; no port of the host's own devices.
        unsafe {
            match size {
                1 => u32::from(x86::io::inb(port)),
                2 => u32::from(x86::io::inw(port)),
                _ => x86::io::inl(port),
            }
        }
    }
    fn io_port_write(&self, port: u16, size: u8, value: u32) {
        // SAFETY: as in `io_port_read`.
        unsafe {
            match size {
                1 => x86::io::outb(port, value as u8),
                2 => x86::io::outw(port, value as u16),
                _ => x86::io::outl(port, value),
            }
        }
    }
}

/// Serialises the two-step mechanism #1 sequence (address, then data)
/// between CPUs.
static PCI_CONFIG: spin::Mutex<()> = spin::Mutex::new(());

/// Writes the configuration address of `bdf`'s register `reg` (enable
/// bit set) to 0xCF8 and returns the data port of its bytes. Call with
/// `PCI_CONFIG` held.
fn select_config(bdf: Bdf, reg: u8) -> u16 {
    let addr = (1u32 << 31)
        | (u32::from(bdf.bus) << 16)
        | (u32::from(bdf.dev & 0x1F) << 11)
        | (u32::from(bdf.func & 7) << 8)
        | u32::from(reg & 0xFC);
    // SAFETY: 0xCF8 is the host bridge's configuration address register;
    // writing it has no effect beyond selecting the next data access.
    unsafe { x86::io::outl(hv_core::pci::CONFIG_ADDRESS, addr) };
    hv_core::pci::CONFIG_DATA + u16::from(reg & 3)
}

/// The frame source arch-svm's nested tables and VMCBs use.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostFrames;

impl arch_svm::npt::FrameSource for HostFrames {
    fn alloc_frame(&self) -> Option<Hfn> {
        alloc_zeroed_frame()
    }
    fn free_frame(&self, hfn: Hfn) {
        free_frame(hfn)
    }
}
