//! The guest's FPU/SSE/AVX state and debug address registers, switched
//! around every VM entry by both backends (neither VMRUN nor VMLAUNCH
//! switches them), and the rules a guest XCR0 must follow.
//!
//! The hypervisor itself never uses the FPU or SIMD registers (the
//! `x86_64-unknown-none` target does not), so only the guest's state is
//! saved and restored: the host's is whatever the last guest left.

use crate::instr;
use alloc::boxed::Box;

/// Bytes of each vCPU's FPU save area.
pub const FPU_AREA_SIZE: usize = 4096;

/// CR4.OSFXSR.
const CR4_OSFXSR: u64 = 1 << 9;
/// CR4.OSXMMEXCPT.
const CR4_OSXMMEXCPT: u64 = 1 << 10;
/// CR4.OSXSAVE.
const CR4_OSXSAVE: u64 = 1 << 18;

/// Offset of XSTATE_BV in the XSAVE header.
const XSTATE_BV: usize = 512;

/// How this CPU saves FPU state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FpuFeatures {
    /// XSAVE usable (CPUID 1 ECX 26); else FXSAVE.
    pub xsave: bool,
    /// The XCR0 bits the backend switches (their state fits in
    /// [`FPU_AREA_SIZE`]).
    pub xcr0_mask: u64,
}

/// Reads the FPU features through `cpuid(leaf, subleaf)`; host-testable.
pub fn detect(cpuid: impl Fn(u32, u32) -> [u32; 4]) -> FpuFeatures {
    let xsave = cpuid(1, 0)[2] & (1 << 26) != 0;
    let mut xcr0_mask = 0;
    if xsave {
        let [lo, _, max_size, hi] = cpuid(0xD, 0);
        let supported = (u64::from(hi) << 32) | u64::from(lo);
        // Everything if it fits, else x87 | SSE | AVX (832 bytes).
        xcr0_mask = if max_size as usize <= FPU_AREA_SIZE {
            supported
        } else {
            supported & 0x7
        };
    }
    FpuFeatures { xsave, xcr0_mask }
}

/// Sets CR4.OSFXSR/OSXMMEXCPT (and OSXSAVE with `f.xsave`) on the calling
/// CPU, which the switch needs.
///
/// # Safety
/// 1. `f` came from [`detect`] on this CPU (the bits are supported).
pub unsafe fn enable_host(f: FpuFeatures) {
    let mut cr4 = instr::read_cr4() | CR4_OSFXSR | CR4_OSXMMEXCPT;
    if f.xsave {
        cr4 |= CR4_OSXSAVE;
    }
    // SAFETY: only the FPU-enabling bits are added, each supported (FXSR
    // is architectural in long mode, XSAVE by duty 1); paging is unchanged.
    unsafe { instr::write_cr4(cr4) };
}

/// Whether `v` is an XCR0 a guest may have with the switched bits `mask`:
/// x87 set, nothing outside the mask, AVX with SSE, AVX-512 all or none
/// and with AVX.
pub fn valid_xcr0(v: u64, mask: u64) -> bool {
    let avx512 = 0xE0;
    v & 1 != 0
        && v & !mask == 0
        && (v & 4 == 0 || v & 2 != 0)
        && (v & avx512 == 0 || (v & avx512 == avx512 && v & 4 != 0))
}

/// An XSAVE or FXSAVE image.
#[repr(C, align(64))]
struct FpuArea([u8; FPU_AREA_SIZE]);

/// One vCPU's FPU state, XCR0 and DR0-DR3.
pub struct GuestFpu {
    area: Box<FpuArea>,
    xcr0: u64,
    dr: [u64; 4],
    features: FpuFeatures,
    /// The host's DR0-DR3 while the guest's are loaded.
    host_dr: [u64; 4],
}

impl GuestFpu {
    /// The reset state: FCW 0x37F, MXCSR 0x1F80, XCR0 = x87.
    pub fn new(features: FpuFeatures) -> Self {
        let mut a = Box::new(FpuArea([0; FPU_AREA_SIZE]));
        a.0[0..2].copy_from_slice(&0x037Fu16.to_le_bytes()); // FCW
        a.0[24..28].copy_from_slice(&0x1F80u32.to_le_bytes()); // MXCSR
        Self {
            area: a,
            xcr0: 1,
            dr: [0; 4],
            features,
            host_dr: [0; 4],
        }
    }

    /// The guest's XCR0.
    pub fn xcr0(&self) -> u64 {
        self.xcr0
    }

    /// Sets the guest's XCR0 if it is valid (see [`valid_xcr0`]); saved
    /// components outside it are dropped, since XRSTOR faults on an
    /// XSTATE_BV bit that XCR0 does not enable. Returns whether it was set.
    pub fn set_xcr0(&mut self, v: u64) -> bool {
        if !valid_xcr0(v, self.features.xcr0_mask) {
            return false;
        }
        self.xcr0 = v;
        let mut bv = [0u8; 8];
        bv.copy_from_slice(&self.area.0[XSTATE_BV..XSTATE_BV + 8]);
        let bv = u64::from_le_bytes(bv) & v;
        self.area.0[XSTATE_BV..XSTATE_BV + 8].copy_from_slice(&bv.to_le_bytes());
        true
    }

    /// XSTATE_BV of the saved image (for tests).
    pub fn xstate_bv(&self) -> u64 {
        let mut bv = [0u8; 8];
        bv.copy_from_slice(&self.area.0[XSTATE_BV..XSTATE_BV + 8]);
        u64::from_le_bytes(bv)
    }

    /// Sets XSTATE_BV of the saved image (for tests).
    pub fn set_xstate_bv(&mut self, bv: u64) {
        self.area.0[XSTATE_BV..XSTATE_BV + 8].copy_from_slice(&bv.to_le_bytes());
    }

    /// Loads the guest's FPU state, XCR0 and DR0-DR3 (right before entry).
    ///
    /// # Safety
    /// 1. [`enable_host`] ran on this CPU with the same features.
    /// 2. [`GuestFpu::save`] follows right after the guest exits, before
    ///    anything else runs on this CPU.
    pub unsafe fn load(&mut self) {
        self.host_dr = instr::read_dr03();
        instr::write_dr03(self.dr);
        let area = self.area.0.as_ptr();
        if self.features.xsave {
            // SAFETY: duty 1 set CR4.OSXSAVE; `xcr0` passed `valid_xcr0`
            // (or is the initial 1); the area is 64-aligned, FPU_AREA_SIZE
            // covers every bit of `xcr0_mask`, and it holds an image XSAVE
            // wrote or the initial one (zero header, valid MXCSR), with no
            // XSTATE_BV bit outside `xcr0` (`set_xcr0`).
            unsafe {
                if instr::xgetbv0() != self.xcr0 {
                    instr::xsetbv0(self.xcr0);
                }
                instr::xrstor(area, u64::MAX);
            }
        } else {
            // SAFETY: duty 1 set CR4.OSFXSR; the area is aligned, large
            // enough and a valid image (MXCSR 0x1F80 initially).
            unsafe { instr::fxrstor(area) };
        }
    }

    /// Saves the guest's FPU state and DR0-DR3 and puts the host's debug
    /// registers back (right after the exit).
    ///
    /// # Safety
    /// 1. [`GuestFpu::load`] ran before the entry this follows.
    pub unsafe fn save(&mut self) {
        let area = self.area.0.as_mut_ptr();
        if self.features.xsave {
            // SAFETY: as for the restore in `load`; XCR0 is still the
            // guest's (exits do not switch it).
            unsafe { instr::xsave(area, u64::MAX) };
        } else {
            // SAFETY: as for the restore in `load`.
            unsafe { instr::fxsave(area) };
        }
        self.dr = instr::read_dr03();
        instr::write_dr03(self.host_dr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection() {
        let cpu = |max: u32| {
            move |leaf, _| match leaf {
                1 => [0, 0, 1 << 26, 0],
                0xD => [0xE7, 0, max, 0],
                _ => [0; 4],
            }
        };
        assert_eq!(
            detect(cpu(832)),
            FpuFeatures {
                xsave: true,
                xcr0_mask: 0xE7
            }
        );
        assert_eq!(detect(cpu(10_000)).xcr0_mask, 0x7);
        assert_eq!(detect(|_, _| [0; 4]), FpuFeatures::default());
    }

    #[test]
    fn xcr0_rules() {
        let mut f = GuestFpu::new(FpuFeatures {
            xsave: true,
            xcr0_mask: 0x7,
        });
        assert_eq!(f.xcr0(), 1);
        assert!(f.set_xcr0(0x7));
        f.set_xstate_bv(0x7);
        assert!(f.set_xcr0(0x3));
        assert_eq!(f.xstate_bv(), 0x3);
        assert!(!f.set_xcr0(0x4)); // no x87
        assert!(!f.set_xcr0(0x5)); // AVX without SSE
        assert!(!f.set_xcr0(0xE7)); // beyond the mask
        assert_eq!(f.xcr0(), 0x3);
        assert!(valid_xcr0(0xE7, 0xE7));
        assert!(!valid_xcr0(0x67, 0xE7)); // AVX-512 partly
    }
}
