//! Turning SVM on, per CPU: the CPUID checks, VM_CR.SVMDIS, EFER.SVME (and
//! NXE, for NX in nested tables), CR4's FPU bits for guest FPU switching,
//! and VM_HSAVE_PA. Also the per-CPU area the VMRUN path finds again
//! through VM_HSAVE_PA.

use crate::asid::{AsidAllocator, AsidChoice, VcpuAsid};
use crate::instr;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use hv_core::types::Hfn;

/// EFER.
pub const MSR_EFER: u32 = 0xC000_0080;
/// VM_CR: SVM lock and disable.
pub const MSR_VM_CR: u32 = 0xC001_0114;
/// VM_HSAVE_PA: the host state-save page of VMRUN.
pub const MSR_VM_HSAVE_PA: u32 = 0xC001_0117;
/// EFER.NXE.
pub const EFER_NXE: u64 = 1 << 11;
/// EFER.SVME.
pub const EFER_SVME: u64 = 1 << 12;
/// EFER.LMA.
pub const EFER_LMA: u64 = 1 << 10;
/// VM_CR.SVMDIS.
pub const VM_CR_SVMDIS: u64 = 1 << 4;

pub use arch_common::fpu::FPU_AREA_SIZE;
use arch_common::fpu::{self, FpuFeatures};

/// Why SVM cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnableError {
    /// Not an AMD64 CPU with SVM (CPUID 8000_0001 ECX bit 2).
    NoSvm,
    /// The firmware disabled SVM (VM_CR.SVMDIS).
    DisabledByFirmware,
    /// No nested paging (CPUID 8000_000A EDX bit 0).
    NoNestedPaging,
    /// No NX (CPUID 8000_0001 EDX bit 20), needed for non-executable
    /// nested mappings.
    NoNx,
    /// The per-CPU area is not 4 KiB aligned.
    BadArea,
}

/// What this CPU's SVM offers (CPUID 8000_000A), and the FPU state the
/// backend switches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SvmFeatures {
    /// ASIDs including the host's (EBX).
    pub asids: u32,
    /// Nested paging (EDX 0).
    pub npt: bool,
    /// NRIP save: VMCB 0xC8 holds the next RIP (EDX 3).
    pub nrip: bool,
    /// VMCB clean bits (EDX 5).
    pub vmcb_clean: bool,
    /// TLB_CONTROL 3, flush one ASID (EDX 6).
    pub flush_by_asid: bool,
    /// Decode assists (EDX 7).
    pub decode_assists: bool,
    /// XSAVE usable (CPUID 1 ECX 26); else FXSAVE.
    pub xsave: bool,
    /// The XCR0 bits the backend switches (fit in [`FPU_AREA_SIZE`]).
    pub xcr0_mask: u64,
}

impl SvmFeatures {
    /// The FPU part, for `arch_common::fpu`.
    pub fn fpu(&self) -> FpuFeatures {
        FpuFeatures {
            xsave: self.xsave,
            xcr0_mask: self.xcr0_mask,
        }
    }
}

/// Reads the SVM features through `cpuid(leaf, subleaf)`; host-testable.
pub fn detect(cpuid: impl Fn(u32, u32) -> [u32; 4]) -> Result<SvmFeatures, EnableError> {
    let max_ext = cpuid(0x8000_0000, 0)[0];
    if max_ext < 0x8000_000A {
        return Err(EnableError::NoSvm);
    }
    let ext1 = cpuid(0x8000_0001, 0);
    if ext1[2] & (1 << 2) == 0 {
        return Err(EnableError::NoSvm);
    }
    if ext1[3] & (1 << 20) == 0 {
        return Err(EnableError::NoNx);
    }
    let [_, asids, _, edx] = cpuid(0x8000_000A, 0);
    let FpuFeatures { xsave, xcr0_mask } = fpu::detect(&cpuid);
    let f = SvmFeatures {
        asids,
        npt: edx & 1 != 0,
        nrip: edx & (1 << 3) != 0,
        vmcb_clean: edx & (1 << 5) != 0,
        flush_by_asid: edx & (1 << 6) != 0,
        decode_assists: edx & (1 << 7) != 0,
        xsave,
        xcr0_mask,
    };
    if !f.npt {
        return Err(EnableError::NoNestedPaging);
    }
    Ok(f)
}

/// One page, written by the hardware only.
#[repr(C, align(4096))]
struct HwPage([AtomicU64; 512]);

/// The software part of the per-CPU area.
#[repr(C)]
struct CpuState {
    /// The CPU's number, as the hypervisor counts.
    index: AtomicU32,
    asid_next: AtomicU32,
    asid_max: AtomicU32,
    asid_generation: AtomicU64,
    /// Whether VMRUN runs with the host's IF set (physical interrupts then
    /// cause INTR exits; the hypervisor must take them between runs).
    host_interrupts: AtomicBool,
    features: SvmFeatures,
}

/// Per-CPU SVM state: three contiguous, identity-mapped pages. Page 0 is
/// VM_HSAVE_PA (the hardware's), page 1 receives the host's VMSAVE state
/// around each run, page 2 holds this CPU's ASID allocator and features.
#[repr(C, align(4096))]
pub struct SvmCpu {
    hsave: HwPage,
    host_save: HwPage,
    state: CpuState,
}

/// Pages of an [`SvmCpu`] area.
pub const CPU_AREA_PAGES: usize = 3;
const _: () = assert!(core::mem::size_of::<SvmCpu>() == CPU_AREA_PAGES * 4096);

impl SvmCpu {
    /// Physical address of the page VMSAVE/VMLOAD use for host state.
    pub fn host_save_pa(&self) -> u64 {
        &self.host_save as *const HwPage as u64
    }

    /// The features found when SVM was enabled on this CPU.
    pub fn features(&self) -> SvmFeatures {
        self.state.features
    }

    /// The CPU's number given to [`enable`].
    pub fn index(&self) -> u32 {
        self.state.index.load(Ordering::Relaxed)
    }

    /// Whether VMRUN runs with host interrupts enabled.
    pub fn host_interrupts(&self) -> bool {
        self.state.host_interrupts.load(Ordering::Relaxed)
    }

    /// Lets physical interrupts arriving during a run end it with an INTR
    /// exit (VMRUN with the host's IF set). Only once the hypervisor has
    /// interrupt handlers and takes pending interrupts between runs: an
    /// interrupt left pending makes every later run exit at once.
    pub fn set_host_interrupts(&self, on: bool) {
        self.state.host_interrupts.store(on, Ordering::Relaxed);
    }

    /// Chooses the ASID for `vcpu` entering here (see [`AsidAllocator`]).
    /// Only the owning CPU calls this, with interrupts off.
    pub fn choose_asid(&self, vcpu: &mut VcpuAsid, fresh: bool) -> AsidChoice {
        let s = &self.state;
        let mut a = AsidAllocator::from_parts(
            s.asid_next.load(Ordering::Relaxed),
            s.asid_max.load(Ordering::Relaxed),
            s.asid_generation.load(Ordering::Relaxed),
        );
        let c = a.choose(vcpu, self.index(), fresh);
        let (next, _, generation) = a.parts();
        s.asid_next.store(next, Ordering::Relaxed);
        s.asid_generation.store(generation, Ordering::Relaxed);
        c
    }
}

/// Enables SVM on the calling CPU and returns its per-CPU area. `index`
/// must differ between CPUs (ASIDs are tracked per CPU by it). Leaves
/// CR4.OSFXSR/OSXMMEXCPT (and OSXSAVE when available) set; the hypervisor
/// itself must not use the FPU or SIMD registers (the `x86_64-unknown-none`
/// target does not), since only the guest's state is switched.
///
/// # Safety
/// 1. `area` is the first of [`CPU_AREA_PAGES`] contiguous host frames,
///    identity-mapped (host-virtual == host-physical), owned by this CPU's
///    SVM state for as long as the machine runs (never freed).
/// 2. Called once per CPU, on that CPU, with interrupts disabled, before
///    any vCPU runs there.
pub unsafe fn enable(area: Hfn, index: u32) -> Result<&'static SvmCpu, EnableError> {
    let features = detect(instr::cpuid)?;
    // SAFETY: VM_CR exists on every CPU with SVM (checked by `detect`).
    if unsafe { instr::rdmsr(MSR_VM_CR) } & VM_CR_SVMDIS != 0 {
        return Err(EnableError::DisabledByFirmware);
    }
    let pa = area.hpa();
    if pa == 0 {
        return Err(EnableError::BadArea);
    }
    let ptr = pa as *mut SvmCpu;
    let state = CpuState {
        index: AtomicU32::new(index),
        asid_next: AtomicU32::new(0),
        asid_max: AtomicU32::new(0),
        asid_generation: AtomicU64::new(0),
        host_interrupts: AtomicBool::new(false),
        features,
    };
    let (next, max, generation) = AsidAllocator::new(features.asids).parts();
    state.asid_next.store(next, Ordering::Relaxed);
    state.asid_max.store(max, Ordering::Relaxed);
    state.asid_generation.store(generation, Ordering::Relaxed);
    // SAFETY: duty 1: the three pages are ours and identity-mapped, so the
    // address is a valid, aligned (Hfn) pointer to an `SvmCpu`; zero is a
    // valid value for the hardware pages (atomics), and the state is
    // written whole before anything reads it.
    unsafe {
        core::ptr::write_bytes(ptr.cast::<u8>(), 0, 2 * 4096);
        core::ptr::addr_of_mut!((*ptr).state).write(state);
    }
    // SAFETY: EFER exists in long mode; SVME is allowed (SVM present, not
    // disabled) and NXE is supported (checked by `detect`); neither changes
    // how the hypervisor runs.
    unsafe {
        let efer = instr::rdmsr(MSR_EFER);
        instr::wrmsr(MSR_EFER, efer | EFER_SVME | EFER_NXE);
    }
    // SAFETY: the features were just detected on this CPU.
    unsafe { fpu::enable_host(features.fpu()) };
    // SAFETY: SVME is set; the page is 4 KiB aligned and ours (duty 1).
    unsafe { instr::wrmsr(MSR_VM_HSAVE_PA, pa) };
    log::info!(
        "svm: cpu {index} enabled: {} ASIDs, nrip {}, decode assists {}, xcr0 mask {:#x}",
        features.asids,
        features.nrip,
        features.decode_assists,
        features.xcr0_mask
    );
    // SAFETY: duty 1: the area lives forever and is now initialised.
    Ok(unsafe { &*ptr })
}

/// The calling CPU's area, found through VM_HSAVE_PA, or `None` before
/// [`enable`] ran here.
pub fn this_cpu() -> Option<&'static SvmCpu> {
    // SAFETY: VM_HSAVE_PA exists on SVM CPUs; this is only reached from
    // the VMRUN path, which runs after `enable` or on an SVM CPU anyway.
    let pa = unsafe { instr::rdmsr(MSR_VM_HSAVE_PA) };
    if pa == 0 {
        return None;
    }
    // SAFETY: only `enable` writes VM_HSAVE_PA, with the address of an
    // initialised, identity-mapped `SvmCpu` that lives forever.
    Some(unsafe { &*(pa as *const SvmCpu) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(svm: bool, nx: bool, edx_a: u32, max_xsave: u32) -> impl Fn(u32, u32) -> [u32; 4] {
        move |leaf, _| match leaf {
            0x8000_0000 => [0x8000_001F, 0, 0, 0],
            0x8000_0001 => [0, 0, u32::from(svm) << 2, u32::from(nx) << 20],
            0x8000_000A => [1, 16, 0, edx_a],
            1 => [0, 0, 1 << 26, 0],
            0xD => [0xE7, 0, max_xsave, 0],
            _ => [0; 4],
        }
    }

    #[test]
    fn qemu_like_cpu() {
        let f = detect(cpu(true, true, 1, 832)).unwrap();
        assert_eq!(f.asids, 16);
        assert!(f.npt && !f.nrip && !f.decode_assists && f.xsave);
        assert_eq!(f.xcr0_mask, 0xE7);
    }

    #[test]
    fn bochs_ryzen_like_cpu_has_nrip() {
        let f = detect(cpu(true, true, 0b1000_1001, 832)).unwrap();
        assert!(f.nrip && f.decode_assists);
    }

    #[test]
    fn refusals() {
        assert_eq!(detect(cpu(false, true, 1, 0)), Err(EnableError::NoSvm));
        assert_eq!(detect(cpu(true, false, 1, 0)), Err(EnableError::NoNx));
        assert_eq!(
            detect(cpu(true, true, 0, 0)),
            Err(EnableError::NoNestedPaging)
        );
        let f = detect(cpu(true, true, 1, 10_000)).unwrap();
        assert_eq!(f.xcr0_mask, 0x7);
    }
}
