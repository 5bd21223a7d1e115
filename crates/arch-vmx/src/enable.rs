//! Turning VMX on, per CPU: the CPUID check, IA32_FEATURE_CONTROL, the
//! capability MSRs and the control values computed from them, CR0/CR4
//! fixed bits, CR4.VMXE, CR4's FPU bits for guest FPU switching, and
//! VMXON. Also the per-CPU area the VM-entry path finds again.
//!
//! The capability MSRs are read only after CPUID.1:ECX.VMX said they
//! exist, and each optional one only when another says so (SDM appendix
//! A): the secondary controls (0x48B) when the primary controls allow
//! "activate secondary controls", EPT/VPID capabilities (0x48C) when EPT
//! or VPID may be enabled, the TRUE controls (0x48D-0x490) when
//! IA32_VMX_BASIC bit 55 is set. The computation itself is pure
//! ([`Capabilities::features`]) and tested with Bochs-like values.

use crate::instr;
use crate::vmcs::{entry_ctl, exit_ctl, pin, proc, proc2};
use arch_common::fpu::{self, FpuFeatures};
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use hv_core::types::Hfn;

/// IA32_FEATURE_CONTROL.
pub const MSR_FEATURE_CONTROL: u32 = 0x3A;
/// IA32_VMX_BASIC.
pub const MSR_VMX_BASIC: u32 = 0x480;
/// IA32_VMX_PINBASED_CTLS.
pub const MSR_VMX_PINBASED_CTLS: u32 = 0x481;
/// IA32_VMX_PROCBASED_CTLS.
pub const MSR_VMX_PROCBASED_CTLS: u32 = 0x482;
/// IA32_VMX_EXIT_CTLS.
pub const MSR_VMX_EXIT_CTLS: u32 = 0x483;
/// IA32_VMX_ENTRY_CTLS.
pub const MSR_VMX_ENTRY_CTLS: u32 = 0x484;
/// IA32_VMX_CR0_FIXED0.
pub const MSR_VMX_CR0_FIXED0: u32 = 0x486;
/// IA32_VMX_CR0_FIXED1.
pub const MSR_VMX_CR0_FIXED1: u32 = 0x487;
/// IA32_VMX_CR4_FIXED0.
pub const MSR_VMX_CR4_FIXED0: u32 = 0x488;
/// IA32_VMX_CR4_FIXED1.
pub const MSR_VMX_CR4_FIXED1: u32 = 0x489;
/// IA32_VMX_PROCBASED_CTLS2.
pub const MSR_VMX_PROCBASED_CTLS2: u32 = 0x48B;
/// IA32_VMX_EPT_VPID_CAP.
pub const MSR_VMX_EPT_VPID_CAP: u32 = 0x48C;
/// IA32_VMX_TRUE_PINBASED_CTLS.
pub const MSR_VMX_TRUE_PINBASED_CTLS: u32 = 0x48D;
/// IA32_VMX_TRUE_PROCBASED_CTLS.
pub const MSR_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48E;
/// IA32_VMX_TRUE_EXIT_CTLS.
pub const MSR_VMX_TRUE_EXIT_CTLS: u32 = 0x48F;
/// IA32_VMX_TRUE_ENTRY_CTLS.
pub const MSR_VMX_TRUE_ENTRY_CTLS: u32 = 0x490;
/// IA32_EFER.
pub const MSR_EFER: u32 = 0xC000_0080;
/// IA32_PAT.
pub const MSR_PAT: u32 = 0x277;

/// IA32_FEATURE_CONTROL: locked.
pub const FC_LOCK: u64 = 1 << 0;
/// IA32_FEATURE_CONTROL: VMX allowed outside SMX.
pub const FC_VMX_OUTSIDE_SMX: u64 = 1 << 2;
/// CR4.VMXE.
pub const CR4_VMXE: u64 = 1 << 13;
/// CR0.PE.
pub const CR0_PE: u64 = 1 << 0;
/// CR0.PG.
pub const CR0_PG: u64 = 1 << 31;
/// EFER.LME.
pub const EFER_LME: u64 = 1 << 8;
/// EFER.LMA.
pub const EFER_LMA: u64 = 1 << 10;

/// EPT/VPID capability bits (SDM A.10).
pub mod ept_cap {
    /// Page-walk length 4.
    pub const WALK_4: u64 = 1 << 6;
    /// Write-back paging structures.
    pub const WB: u64 = 1 << 14;
    /// 2 MiB EPT pages.
    pub const PAGE_2M: u64 = 1 << 16;
    /// INVEPT.
    pub const INVEPT: u64 = 1 << 20;
    /// INVEPT single-context.
    pub const INVEPT_SINGLE: u64 = 1 << 25;
    /// INVEPT all-context.
    pub const INVEPT_ALL: u64 = 1 << 26;
    /// INVVPID.
    pub const INVVPID: u64 = 1 << 32;
    /// INVVPID single-context.
    pub const INVVPID_SINGLE: u64 = 1 << 41;
    /// INVVPID all-context.
    pub const INVVPID_ALL: u64 = 1 << 42;
}

/// Why VMX cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnableError {
    /// CPUID.1:ECX.VMX (bit 5) is clear.
    NoVmx,
    /// IA32_FEATURE_CONTROL is locked without VMX outside SMX.
    DisabledByFirmware,
    /// A control this backend needs cannot be set (the register and the
    /// missing bits).
    MissingControl(&'static str, u32),
    /// A control this backend cannot live with must be set.
    ForcedControl(&'static str, u32),
    /// EPT lacks a 4-level walk, write-back tables or INVEPT.
    EptUnsuitable,
    /// The per-CPU area is unusable (frame 0) or the table is full.
    BadArea,
    /// VMXON failed.
    VmxonFailed,
}

/// The raw capability MSRs (zero where not read).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Capabilities {
    pub basic: u64,
    pub pin: u64,
    pub proc: u64,
    pub proc2: u64,
    pub exit: u64,
    pub entry: u64,
    pub ept_vpid: u64,
    pub cr0_fixed0: u64,
    pub cr0_fixed1: u64,
    pub cr4_fixed0: u64,
    pub cr4_fixed1: u64,
}

/// What this CPU's VMX offers and the control values the backend uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmxFeatures {
    /// The VMCS revision identifier (IA32_VMX_BASIC 30:0).
    pub revision: u32,
    /// Pin-based controls.
    pub pin: u32,
    /// Primary processor-based controls (without interrupt-window exiting).
    pub proc: u32,
    /// Secondary processor-based controls.
    pub proc2: u32,
    /// VM-exit controls.
    pub exit: u32,
    /// VM-entry controls (without IA-32e mode guest).
    pub entry: u32,
    /// CR0 bits fixed to 1 / allowed to be 1 in VMX operation.
    pub cr0_fixed: (u64, u64),
    /// CR4 bits fixed to 1 / allowed to be 1 in VMX operation.
    pub cr4_fixed: (u64, u64),
    /// VPIDs in use.
    pub vpid: bool,
    /// EPT 2 MiB pages.
    pub ept_2m: bool,
    /// INVEPT single-context (else all-context).
    pub invept_single: bool,
    /// INVVPID single-context (else all-context).
    pub invvpid_single: bool,
    /// How guest FPU state is switched.
    pub fpu: FpuFeatures,
}

/// `(want | allowed-0) & allowed-1` of a capability MSR (allowed-0 in bits
/// 31:0: bits that must be 1; allowed-1 in 63:32: bits that may be 1),
/// or the `required` bits that cannot be set.
pub fn adjust(cap: u64, want: u32, required: u32) -> Result<u32, u32> {
    let (must, may) = (cap as u32, (cap >> 32) as u32);
    let missing = required & !may;
    if missing != 0 {
        return Err(missing);
    }
    Ok((want | must) & may)
}

/// Whether the allowed-1 half of `cap` has `bit`.
fn allowed(cap: u64, bit: u32) -> bool {
    (cap >> 32) as u32 & bit != 0
}

impl Capabilities {
    /// Reads the capability MSRs through `rdmsr`, each only when the
    /// architecture says it exists (CPUID.1:ECX.VMX must have been checked).
    pub fn read(rdmsr: impl Fn(u32) -> u64) -> Self {
        let basic = rdmsr(MSR_VMX_BASIC);
        let truectl = basic & (1 << 55) != 0;
        let pick = |t, l| rdmsr(if truectl { t } else { l });
        let proc = pick(MSR_VMX_TRUE_PROCBASED_CTLS, MSR_VMX_PROCBASED_CTLS);
        let proc2 = if allowed(proc, proc::SECONDARY) {
            rdmsr(MSR_VMX_PROCBASED_CTLS2)
        } else {
            0
        };
        let ept_vpid = if allowed(proc2, proc2::EPT | proc2::VPID) {
            rdmsr(MSR_VMX_EPT_VPID_CAP)
        } else {
            0
        };
        Self {
            basic,
            pin: pick(MSR_VMX_TRUE_PINBASED_CTLS, MSR_VMX_PINBASED_CTLS),
            proc,
            proc2,
            exit: pick(MSR_VMX_TRUE_EXIT_CTLS, MSR_VMX_EXIT_CTLS),
            entry: pick(MSR_VMX_TRUE_ENTRY_CTLS, MSR_VMX_ENTRY_CTLS),
            ept_vpid,
            cr0_fixed0: rdmsr(MSR_VMX_CR0_FIXED0),
            cr0_fixed1: rdmsr(MSR_VMX_CR0_FIXED1),
            cr4_fixed0: rdmsr(MSR_VMX_CR4_FIXED0),
            cr4_fixed1: rdmsr(MSR_VMX_CR4_FIXED1),
        }
    }

    /// The control values: what the backend needs (error if impossible),
    /// what it would like (if allowed), and nothing it cannot handle.
    pub fn features(&self, fpu: FpuFeatures) -> Result<VmxFeatures, EnableError> {
        use EnableError::{ForcedControl, MissingControl};
        let pin_need = pin::EXT_INTR_EXITING | pin::NMI_EXITING;
        let pin = adjust(self.pin, pin_need, pin_need).map_err(|m| MissingControl("pin", m))?;

        let proc_need = proc::HLT_EXITING
            | proc::USE_IO_BITMAPS
            | proc::USE_MSR_BITMAPS
            | proc::MWAIT_EXITING
            | proc::MONITOR_EXITING
            | proc::SECONDARY;
        let proc = adjust(self.proc, proc_need, proc_need | proc::INTR_WINDOW_EXITING)
            .map_err(|m| MissingControl("proc", m))?;
        // Exits this backend does not handle must be clearable.
        let unwanted = proc::CR3_LOAD_EXITING
            | proc::CR3_STORE_EXITING
            | proc::CR8_LOAD_EXITING
            | proc::CR8_STORE_EXITING
            | proc::MOV_DR_EXITING
            | proc::INVLPG_EXITING
            | proc::RDTSC_EXITING
            | proc::RDPMC_EXITING
            | proc::INTR_WINDOW_EXITING;
        if proc & unwanted != 0 {
            return Err(ForcedControl("proc", proc & unwanted));
        }

        let proc2_need = proc2::EPT | proc2::UNRESTRICTED_GUEST;
        let proc2_want = proc2_need | proc2::VPID | proc2::RDTSCP | proc2::INVPCID;
        let mut proc2 =
            adjust(self.proc2, proc2_want, proc2_need).map_err(|m| MissingControl("proc2", m))?;
        if proc2 & (proc2::DESC_TABLE_EXITING | proc2::WBINVD_EXITING) != 0 {
            return Err(ForcedControl("proc2", proc2));
        }

        let c = self.ept_vpid;
        let ept_ok = c & ept_cap::WALK_4 != 0
            && c & ept_cap::WB != 0
            && c & ept_cap::INVEPT != 0
            && c & (ept_cap::INVEPT_SINGLE | ept_cap::INVEPT_ALL) != 0;
        if !ept_ok {
            return Err(EnableError::EptUnsuitable);
        }
        let vpid_ok =
            c & ept_cap::INVVPID != 0 && c & (ept_cap::INVVPID_SINGLE | ept_cap::INVVPID_ALL) != 0;
        if !vpid_ok {
            proc2 &= !proc2::VPID;
        }

        let exit_need = exit_ctl::HOST_ADDR_SPACE_SIZE
            | exit_ctl::SAVE_EFER
            | exit_ctl::LOAD_EFER
            | exit_ctl::SAVE_PAT
            | exit_ctl::LOAD_PAT
            | exit_ctl::SAVE_DEBUG;
        let exit =
            adjust(self.exit, exit_need, exit_need).map_err(|m| MissingControl("exit", m))?;
        if exit & exit_ctl::ACK_INTR_ON_EXIT != 0 {
            return Err(ForcedControl("exit", exit_ctl::ACK_INTR_ON_EXIT));
        }

        let entry_need = entry_ctl::LOAD_EFER | entry_ctl::LOAD_PAT | entry_ctl::LOAD_DEBUG;
        let entry = adjust(
            self.entry,
            entry_need,
            entry_need | entry_ctl::IA32E_MODE_GUEST,
        )
        .map_err(|m| MissingControl("entry", m))?;
        let entry = entry & !entry_ctl::IA32E_MODE_GUEST;

        Ok(VmxFeatures {
            revision: (self.basic & 0x7FFF_FFFF) as u32,
            pin,
            proc,
            proc2,
            exit,
            entry,
            cr0_fixed: (self.cr0_fixed0, self.cr0_fixed1),
            cr4_fixed: (self.cr4_fixed0, self.cr4_fixed1),
            vpid: proc2 & proc2::VPID != 0,
            ept_2m: c & ept_cap::PAGE_2M != 0,
            invept_single: c & ept_cap::INVEPT_SINGLE != 0,
            invvpid_single: c & ept_cap::INVVPID_SINGLE != 0,
            fpu,
        })
    }
}

/// Whether CPUID.1:ECX says VMX.
pub fn has_vmx(cpuid: impl Fn(u32, u32) -> [u32; 4]) -> bool {
    cpuid(1, 0)[2] & (1 << 5) != 0
}

/// The IA32_FEATURE_CONTROL value to write, if any: `Ok(None)` when it is
/// locked with VMX allowed, `Ok(Some(v))` when it is unlocked (set VMX
/// outside SMX and lock), an error when locked without VMX.
pub fn feature_control(current: u64) -> Result<Option<u64>, EnableError> {
    if current & FC_LOCK != 0 {
        if current & FC_VMX_OUTSIDE_SMX == 0 {
            return Err(EnableError::DisabledByFirmware);
        }
        return Ok(None);
    }
    Ok(Some(current | FC_LOCK | FC_VMX_OUTSIDE_SMX))
}

/// One page, written by the hardware only (VMXON region).
#[repr(C, align(4096))]
struct HwPage([u32; 1024]);

/// Per-CPU VMX state: two contiguous, identity-mapped pages. Page 0 is the
/// VMXON region, page 1 holds the features and this CPU's index.
#[repr(C, align(4096))]
pub struct VmxCpu {
    vmxon: HwPage,
    index: u32,
    features: VmxFeatures,
}

/// Pages of a [`VmxCpu`] area.
pub const CPU_AREA_PAGES: usize = 2;
const _: () = assert!(core::mem::size_of::<VmxCpu>() == CPU_AREA_PAGES * 4096);

impl VmxCpu {
    /// The features found when VMX was enabled on this CPU.
    pub fn features(&self) -> VmxFeatures {
        self.features
    }

    /// The CPU's number given to [`enable`].
    pub fn index(&self) -> u32 {
        self.index
    }
}

/// Most CPUs [`this_cpu`] can find.
pub const MAX_CPUS: usize = 256;
/// APIC id + 1 of each registered CPU (0: free).
static KEYS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// The area of each registered CPU.
static AREAS: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];

/// The calling CPU's APIC id (x2APIC id from leaf 0xB when present).
fn apic_id() -> u32 {
    if instr::cpuid(0, 0)[0] >= 0xB {
        let r = instr::cpuid(0xB, 0);
        if r[1] != 0 {
            return r[3];
        }
    }
    instr::cpuid(1, 0)[1] >> 24
}

/// Reads and checks everything [`enable`] needs, without changing the CPU.
pub fn detect() -> Result<VmxFeatures, EnableError> {
    if !has_vmx(instr::cpuid) {
        return Err(EnableError::NoVmx);
    }
    // SAFETY: the VMX capability MSRs exist when CPUID says VMX, and
    // `Capabilities::read` reads the optional ones only when they exist.
    let caps = Capabilities::read(|m| unsafe { instr::rdmsr(m) });
    caps.features(fpu::detect(instr::cpuid))
}

/// Enables VMX on the calling CPU (VMXON) and returns its per-CPU area.
/// `index` must differ between CPUs. Leaves CR4.VMXE, the CR0/CR4 fixed
/// bits, and CR4.OSFXSR/OSXMMEXCPT (and OSXSAVE) set; the hypervisor itself
/// must not use the FPU or SIMD registers, since only the guest's state is
/// switched.
///
/// # Safety
/// 1. `area` is the first of [`CPU_AREA_PAGES`] contiguous host frames,
///    identity-mapped (host-virtual == host-physical), owned by this CPU's
///    VMX state for as long as the machine runs (never freed).
/// 2. Called once per CPU, on that CPU, with interrupts disabled, before
///    any vCPU runs there.
pub unsafe fn enable(area: Hfn, index: u32) -> Result<&'static VmxCpu, EnableError> {
    if !has_vmx(instr::cpuid) {
        return Err(EnableError::NoVmx);
    }
    // SAFETY: IA32_FEATURE_CONTROL exists on every CPU with VMX.
    let fc = unsafe { instr::rdmsr(MSR_FEATURE_CONTROL) };
    if let Some(v) = feature_control(fc)? {
        // SAFETY: the register is unlocked; setting "VMX outside SMX" and
        // the lock bit is what firmware would have done.
        unsafe { instr::wrmsr(MSR_FEATURE_CONTROL, v) };
    }
    let features = detect()?;
    let pa = area.hpa();
    if pa == 0 {
        return Err(EnableError::BadArea);
    }
    let id = apic_id();
    let slot = (0..MAX_CPUS)
        .find(|&i| {
            KEYS[i]
                .compare_exchange(0, id + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        })
        .ok_or(EnableError::BadArea)?;
    let ptr = pa as *mut VmxCpu;
    // SAFETY: duty 1: the pages are ours and identity-mapped, so the
    // address is a valid, aligned pointer to a `VmxCpu`; the VMXON page is
    // zeroed and then gets the revision identifier, the state is written
    // whole before anything reads it.
    unsafe {
        core::ptr::write_bytes(ptr.cast::<u8>(), 0, 4096);
        (*ptr).vmxon.0[0] = features.revision;
        core::ptr::addr_of_mut!((*ptr).index).write(index);
        core::ptr::addr_of_mut!((*ptr).features).write(features);
    }
    // SAFETY: only the bits the fixed MSRs require (PE, NE, PG: already
    // set in long mode except possibly NE) are added.
    unsafe { instr::write_cr0(instr::read_cr0() | features.cr0_fixed.0) };
    // SAFETY: CR4.VMXE and the other required bits; paging unchanged.
    unsafe { instr::write_cr4(instr::read_cr4() | features.cr4_fixed.0 | CR4_VMXE) };
    // SAFETY: the FPU features were detected on this CPU.
    unsafe { fpu::enable_host(features.fpu) };
    // SAFETY: CR0/CR4 meet the fixed bits, VMX is allowed (feature
    // control), the region is ours and holds the revision (duty 1).
    if unsafe { instr::vmxon(pa) }.is_err() {
        KEYS[slot].store(0, Ordering::Release);
        return Err(EnableError::VmxonFailed);
    }
    AREAS[slot].store(pa as usize, Ordering::Release);
    log::info!(
        "vmx: cpu {index} enabled: pin {:#x} proc {:#x} proc2 {:#x} exit {:#x} entry {:#x}, vpid {}, xcr0 mask {:#x}",
        features.pin,
        features.proc,
        features.proc2,
        features.exit,
        features.entry,
        features.vpid,
        features.fpu.xcr0_mask
    );
    // SAFETY: duty 1: the area lives forever and is now initialised.
    Ok(unsafe { &*ptr })
}

/// The calling CPU's area, or `None` before [`enable`] ran here.
pub fn this_cpu() -> Option<&'static VmxCpu> {
    let key = apic_id() + 1;
    let i = KEYS.iter().position(|k| k.load(Ordering::Acquire) == key)?;
    let pa = AREAS[i].load(Ordering::Acquire);
    if pa == 0 {
        return None;
    }
    // SAFETY: only `enable` stores areas, each an initialised,
    // identity-mapped `VmxCpu` that lives forever.
    Some(unsafe { &*(pa as *const VmxCpu) })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Capability values like Bochs' corei7_skylake_x (TRUE controls).
    pub fn skylake() -> Capabilities {
        Capabilities {
            basic: (1 << 55) | (1 << 54) | (6 << 50) | (0x1000 << 32) | 0x2,
            pin: 0x0000_007F_0000_0016,
            proc: 0xFFF9_FFFE_0400_6172,
            proc2: 0x0000_1FFF_0000_0000,
            exit: 0x01FF_EFFF_0003_6DFB,
            entry: 0x0000_F3FF_0000_11FB,
            ept_vpid: 0x0000_0F01_0673_4141,
            cr0_fixed0: 0x8000_0021,
            cr0_fixed1: 0xFFFF_FFFF,
            cr4_fixed0: 0x2000,
            cr4_fixed1: 0x0037_27FF,
        }
    }

    fn fpu() -> FpuFeatures {
        FpuFeatures {
            xsave: true,
            xcr0_mask: 7,
        }
    }

    #[test]
    fn adjust_follows_allowed_bits() {
        // allowed-0 0b0001 (bit 0 must be 1), allowed-1 0b0111.
        let cap = (0b0111u64 << 32) | 0b0001;
        assert_eq!(adjust(cap, 0b0110, 0), Ok(0b0111));
        assert_eq!(adjust(cap, 0b1010, 0), Ok(0b0011));
        assert_eq!(adjust(cap, 0b1000, 0b1000), Err(0b1000));
    }

    #[test]
    fn skylake_controls() {
        let f = skylake().features(fpu()).unwrap();
        assert_eq!(f.revision, 2);
        assert_eq!(
            f.pin & (pin::EXT_INTR_EXITING | pin::NMI_EXITING),
            pin::EXT_INTR_EXITING | pin::NMI_EXITING
        );
        // allowed-0 of the TRUE pin controls (bits 1, 2, 4) are set.
        assert_eq!(f.pin & 0x16, 0x16);
        assert_ne!(f.proc & proc::HLT_EXITING, 0);
        assert_ne!(f.proc & proc::USE_IO_BITMAPS, 0);
        assert_ne!(f.proc & proc::USE_MSR_BITMAPS, 0);
        assert_ne!(f.proc & proc::SECONDARY, 0);
        assert_eq!(f.proc & proc::CR3_LOAD_EXITING, 0);
        assert_eq!(f.proc & proc::INTR_WINDOW_EXITING, 0);
        assert_ne!(f.proc2 & proc2::EPT, 0);
        assert_ne!(f.proc2 & proc2::UNRESTRICTED_GUEST, 0);
        assert_ne!(f.proc2 & proc2::VPID, 0);
        assert!(f.vpid && f.ept_2m && f.invept_single && f.invvpid_single);
        assert_ne!(f.exit & exit_ctl::HOST_ADDR_SPACE_SIZE, 0);
        assert_ne!(f.exit & exit_ctl::LOAD_EFER, 0);
        assert_eq!(f.exit & exit_ctl::ACK_INTR_ON_EXIT, 0);
        assert_ne!(f.entry & entry_ctl::LOAD_EFER, 0);
        assert_eq!(f.entry & entry_ctl::IA32E_MODE_GUEST, 0);
        assert_eq!(f.cr4_fixed.0, CR4_VMXE);
    }

    #[test]
    fn legacy_controls_forcing_cr3_exits_are_refused() {
        let mut c = skylake();
        c.proc |= u64::from(proc::CR3_LOAD_EXITING);
        assert!(matches!(
            c.features(fpu()),
            Err(EnableError::ForcedControl("proc", _))
        ));
    }

    #[test]
    fn missing_features_are_named() {
        let mut c = skylake();
        c.proc2 &= !(u64::from(proc2::UNRESTRICTED_GUEST) << 32);
        assert_eq!(
            c.features(fpu()),
            Err(EnableError::MissingControl(
                "proc2",
                proc2::UNRESTRICTED_GUEST
            ))
        );
        let mut c = skylake();
        c.ept_vpid &= !ept_cap::WB;
        assert_eq!(c.features(fpu()), Err(EnableError::EptUnsuitable));
        // No INVVPID: run without VPIDs.
        let mut c = skylake();
        c.ept_vpid &= !ept_cap::INVVPID;
        let f = c.features(fpu()).unwrap();
        assert!(!f.vpid);
        assert_eq!(f.proc2 & proc2::VPID, 0);
    }

    #[test]
    fn capability_msrs_are_read_only_when_they_exist() {
        use std::cell::RefCell;
        let read = RefCell::new(Vec::new());
        let c = skylake();
        let caps = Capabilities::read(|m| {
            read.borrow_mut().push(m);
            match m {
                MSR_VMX_BASIC => c.basic,
                MSR_VMX_TRUE_PROCBASED_CTLS => c.proc,
                MSR_VMX_PROCBASED_CTLS2 => c.proc2,
                MSR_VMX_EPT_VPID_CAP => c.ept_vpid,
                MSR_VMX_TRUE_PINBASED_CTLS => c.pin,
                MSR_VMX_TRUE_EXIT_CTLS => c.exit,
                MSR_VMX_TRUE_ENTRY_CTLS => c.entry,
                MSR_VMX_CR0_FIXED0 => c.cr0_fixed0,
                MSR_VMX_CR0_FIXED1 => c.cr0_fixed1,
                MSR_VMX_CR4_FIXED0 => c.cr4_fixed0,
                MSR_VMX_CR4_FIXED1 => c.cr4_fixed1,
                _ => panic!("read {m:#x}"),
            }
        });
        assert_eq!(caps, c);
        assert!(!read.borrow().contains(&MSR_VMX_PROCBASED_CTLS));
        // Without TRUE controls nor secondary controls: 0x48B/0x48C unread.
        let read = RefCell::new(Vec::new());
        let caps = Capabilities::read(|m| {
            read.borrow_mut().push(m);
            match m {
                MSR_VMX_BASIC => 1,
                MSR_VMX_PINBASED_CTLS => 0xFF_0000_0000,
                MSR_VMX_PROCBASED_CTLS => 0x7FFF_FFFF_0000_0000,
                _ => 0,
            }
        });
        assert_eq!(caps.proc2, 0);
        let r = read.borrow();
        assert!(!r.contains(&MSR_VMX_PROCBASED_CTLS2));
        assert!(!r.contains(&MSR_VMX_EPT_VPID_CAP));
        assert!(!r.iter().any(|m| (0x48D..=0x490).contains(m)));
        assert_eq!(
            caps.features(fpu()),
            Err(EnableError::MissingControl("proc", proc::SECONDARY))
        );
    }

    #[test]
    fn feature_control_rules() {
        assert_eq!(feature_control(0x5), Ok(None));
        assert_eq!(feature_control(0x1), Err(EnableError::DisabledByFirmware));
        assert_eq!(feature_control(0), Ok(Some(0x5)));
        assert_eq!(feature_control(0x2), Ok(Some(0x7)));
    }

    #[test]
    fn vmx_cpuid_bit() {
        assert!(has_vmx(|_, _| [0, 0, 1 << 5, 0]));
        assert!(!has_vmx(|_, _| [0, 0, !(1 << 5), 0]));
    }
}
