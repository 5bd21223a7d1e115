//! Pages shared with the hypervisor (shared_info, the registered
//! vcpu_info), the 2-level event-channel upcall handler, and pvclock.
//!
//! Both sides write these pages, so they are only touched through atomics
//! built over raw pointers, never through Rust references to their
//! contents.

use core::cell::UnsafeCell;
use core::ptr::null_mut;
use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicU32, AtomicU64, Ordering, fence};

use xen_abi::VcpuTimeInfo;

/// A 4 KiB page of guest RAM in .bss whose frame the hypervisor may take
/// over (shared_info, vcpu_info, grant frames).
#[repr(C, align(4096))]
pub struct Page(UnsafeCell<[u8; 4096]>);

// SAFETY: the contents are only reached through raw pointers with
// volatile or atomic accesses (see `Page::ptr`).
unsafe impl Sync for Page {}

impl Page {
    /// A zeroed page (lands in .bss).
    pub const fn new() -> Self {
        Self(UnsafeCell::new([0; 4096]))
    }

    /// Its address, identity-mapped: virtual = guest-physical.
    pub fn ptr(&self) -> *mut u8 {
        self.0.get().cast()
    }

    /// Its guest frame number.
    pub fn gfn(&self) -> u64 {
        self.ptr() as u64 >> 12
    }

    /// Fills the page with `byte`.
    pub fn fill(&self, byte: u8) {
        for i in 0..4096 {
            // SAFETY: inside the page; volatile because the frame may be
            // the hypervisor's.
            unsafe { self.ptr().add(i).write_volatile(byte) };
        }
    }

    /// Reads byte `i` (< 4096).
    pub fn byte(&self, i: usize) -> u8 {
        assert!(i < 4096);
        // SAFETY: inside the page (checked).
        unsafe { self.ptr().add(i).read_volatile() }
    }
}

/// The shared info page once mapped.
static SHARED_INFO: AtomicPtr<u8> = AtomicPtr::new(null_mut());
/// This vCPU's vcpu_info (in shared_info, or where it was registered).
static VCPU_INFO: AtomicPtr<u8> = AtomicPtr::new(null_mut());
/// Upcalls taken.
pub static UPCALLS: AtomicU64 = AtomicU64::new(0);
/// Ports the handler found pending (2-level: 64 words of 64).
static SEEN: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];

/// Offsets in shared_info and vcpu_info (xen.h).
const EVTCHN_PENDING: usize = 2048;
const EVTCHN_MASK: usize = 2560;
const VI_PENDING_SEL: usize = 8;
const VI_TIME: usize = 32;

/// A u64 of a shared page.
///
/// # Safety
/// `p + off` must be 8-byte aligned inside a page that stays mapped.
unsafe fn u64_at<'a>(p: *mut u8, off: usize) -> &'a AtomicU64 {
    // SAFETY: per the contract; atomics make concurrent hypervisor writes fine.
    unsafe { AtomicU64::from_ptr(p.add(off).cast()) }
}

/// Records where shared_info is mapped (and vcpu_info slot 0 with it).
///
/// # Safety
/// `p` must be the mapped shared info page, for good.
pub unsafe fn set_shared_info(p: *mut u8) {
    SHARED_INFO.store(p, Ordering::SeqCst);
    VCPU_INFO.store(p, Ordering::SeqCst);
}

/// Records where vcpu_info now lives.
///
/// # Safety
/// `p` must be 64 bytes the hypervisor uses as this vCPU's vcpu_info, for good.
pub unsafe fn set_vcpu_info(p: *mut u8) {
    VCPU_INFO.store(p, Ordering::SeqCst);
}

/// The shared info page, if mapped.
pub fn shared_info() -> Option<*mut u8> {
    let p = SHARED_INFO.load(Ordering::SeqCst);
    (!p.is_null()).then_some(p)
}

/// This vCPU's vcpu_info, if known.
pub fn vcpu_info() -> Option<*mut u8> {
    let p = VCPU_INFO.load(Ordering::SeqCst);
    (!p.is_null()).then_some(p)
}

/// `evtchn_upcall_pending` of the vcpu_info at `vi`.
pub fn upcall_pending_at(vi: *mut u8) -> &'static AtomicU8 {
    // SAFETY: `vi` comes from `vcpu_info`/`shared_info` or a registered
    // page: a mapped vcpu_info.
    unsafe { AtomicU8::from_ptr(vi) }
}

/// `evtchn_pending_sel` of the vcpu_info at `vi`.
pub fn pending_sel_at(vi: *mut u8) -> &'static AtomicU64 {
    // SAFETY: as for `upcall_pending_at`; offset 8 is aligned.
    unsafe { u64_at(vi, VI_PENDING_SEL) }
}

fn word(base: usize, port: u32) -> Option<(&'static AtomicU64, u64)> {
    let si = shared_info()?;
    if port >= 4096 {
        return None;
    }
    // SAFETY: the bitmaps are inside the mapped shared info page.
    let w = unsafe { u64_at(si, base + (port as usize / 64) * 8) };
    Some((w, 1u64 << (port % 64)))
}

/// Whether `port`'s pending bit is set in shared_info.
pub fn is_pending(port: u32) -> bool {
    word(EVTCHN_PENDING, port).is_some_and(|(w, b)| w.load(Ordering::SeqCst) & b != 0)
}

/// Clears `port`'s pending bit.
pub fn clear_pending(port: u32) {
    if let Some((w, b)) = word(EVTCHN_PENDING, port) {
        w.fetch_and(!b, Ordering::SeqCst);
    }
}

/// Clears `port`'s mask bit (the guest owns the mask bitmap).
pub fn unmask(port: u32) {
    if let Some((w, b)) = word(EVTCHN_MASK, port) {
        w.fetch_and(!b, Ordering::SeqCst);
    }
}

/// Sets `port`'s mask bit: the upcall handler leaves it alone, while
/// `SCHEDOP_poll` still wakes on it.
pub fn mask(port: u32) {
    if let Some((w, b)) = word(EVTCHN_MASK, port) {
        w.fetch_or(b, Ordering::SeqCst);
    }
}

/// Whether the handler saw `port` since the last call (and forgets it).
pub fn take_seen(port: u32) -> bool {
    if port >= 4096 {
        return false;
    }
    let b = 1u64 << (port % 64);
    SEEN[port as usize / 64].fetch_and(!b, Ordering::SeqCst) & b != 0
}

/// Forgets every port seen so far.
pub fn forget_seen() {
    for w in &SEEN {
        w.store(0, Ordering::SeqCst);
    }
}

/// The upcall (vector 0xF3): clears `evtchn_upcall_pending`, takes the
/// selector and clears and records every pending, unmasked port it names.
pub fn upcall() {
    UPCALLS.fetch_add(1, Ordering::SeqCst);
    let Some(vi) = vcpu_info() else {
        return;
    };
    upcall_pending_at(vi).store(0, Ordering::SeqCst);
    let mut sel = pending_sel_at(vi).swap(0, Ordering::SeqCst);
    let Some(si) = shared_info() else {
        return;
    };
    while sel != 0 {
        let w = sel.trailing_zeros() as usize;
        sel &= sel - 1;
        // SAFETY: word `w` < 64 of both bitmaps, inside the mapped page.
        let (pend, mask) = unsafe {
            (
                u64_at(si, EVTCHN_PENDING + w * 8),
                u64_at(si, EVTCHN_MASK + w * 8),
            )
        };
        let bits = pend.load(Ordering::SeqCst) & !mask.load(Ordering::SeqCst);
        if bits != 0 {
            pend.fetch_and(!bits, Ordering::SeqCst);
            SEEN[w].fetch_or(bits, Ordering::SeqCst);
        }
    }
}

/// Reads the pvclock record of the vcpu_info at `vi` with the version
/// protocol (retry while odd or changed). `None` if it never settles.
pub fn read_time(vi: *mut u8) -> Option<VcpuTimeInfo> {
    // SAFETY: `vi` is a mapped vcpu_info; the record is at offset 32.
    let version = unsafe { AtomicU32::from_ptr(vi.add(VI_TIME).cast()) };
    for _ in 0..100_000 {
        let v1 = version.load(Ordering::Acquire);
        if v1 & 1 != 0 {
            core::hint::spin_loop();
            continue;
        }
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            // SAFETY: inside the 32-byte record.
            *b = unsafe { vi.add(VI_TIME + i).read_volatile() };
        }
        fence(Ordering::Acquire);
        if version.load(Ordering::Acquire) == v1 {
            return zerocopy::FromBytes::read_from_bytes(&bytes[..]).ok();
        }
    }
    None
}

/// The TSC.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC is available on every x86_64 CPU and CR4.TSD is clear.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// System time in ns from a pvclock record and the TSC now.
pub fn pvclock_ns(t: &VcpuTimeInfo) -> u64 {
    let delta = rdtsc().wrapping_sub(t.tsc_timestamp);
    t.system_time.wrapping_add(t.scale_delta(delta))
}

/// A published pvclock record (non-zero version and multiplier), if any.
pub fn published_time() -> Option<VcpuTimeInfo> {
    let t = read_time(vcpu_info()?)?;
    (t.version != 0 && t.tsc_to_system_mul != 0).then_some(t)
}

/// Enables interrupts, waits until `done` or `spins` rounds pass, and
/// disables them again. Returns whether `done` held.
pub fn wait_with_interrupts(mut done: impl FnMut() -> bool, spins: u64) -> bool {
    // SAFETY: the IDT handles every vector (cpu::init).
    unsafe { core::arch::asm!("sti", options(nostack)) };
    let mut ok = false;
    for _ in 0..spins {
        if done() {
            ok = true;
            break;
        }
        core::hint::spin_loop();
    }
    // SAFETY: masks interrupts again; always allowed at CPL 0.
    unsafe { core::arch::asm!("cli", options(nostack)) };
    ok || done()
}
