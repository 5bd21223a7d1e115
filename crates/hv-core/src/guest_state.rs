//! Checks on guest writes to CR0, CR4, EFER and XCR0 against the CPU
//! model the guest is offered (its CPUID), as Xen's `hvm_set_cr0`,
//! `hvm_set_cr4`, `hvm_set_efer` and `handle_xsetbv` make them and as the
//! hardware does.
//!
//! Each check is a pure function of the written value, the vCPU's current
//! control state ([`CrState`]) and the features the guest sees
//! ([`GuestCpu`], read from the guest's CPUID leaves). An illegal value is
//! an [`Event`] (`#GP(0)`, or `#UD` for `XSETBV` without CR4.OSXSAVE) to
//! inject at the faulting instruction, whose RIP is not advanced; a legal
//! one gives the values to load. Nothing a guest writes through these
//! paths can then leave the vCPU in a state the hardware refuses at VM
//! entry.

use crate::arch::{Event, X86_EXC_GP, X86_EXC_UD};

/// CR0 bits.
pub mod cr0 {
    /// Protection enable.
    pub const PE: u64 = 1 << 0;
    /// Monitor coprocessor.
    pub const MP: u64 = 1 << 1;
    /// x87 emulation.
    pub const EM: u64 = 1 << 2;
    /// Task switched.
    pub const TS: u64 = 1 << 3;
    /// Extension type (always 1).
    pub const ET: u64 = 1 << 4;
    /// Numeric error.
    pub const NE: u64 = 1 << 5;
    /// Write protect.
    pub const WP: u64 = 1 << 16;
    /// Alignment mask.
    pub const AM: u64 = 1 << 18;
    /// Not write-through.
    pub const NW: u64 = 1 << 29;
    /// Cache disable.
    pub const CD: u64 = 1 << 30;
    /// Paging.
    pub const PG: u64 = 1 << 31;
    /// Every bit the architecture defines.
    pub const KNOWN: u64 = PE | MP | EM | TS | ET | NE | WP | AM | NW | CD | PG;
}

/// CR4 bits.
pub mod cr4 {
    /// Virtual-8086 mode extensions.
    pub const VME: u64 = 1 << 0;
    /// Protected-mode virtual interrupts.
    pub const PVI: u64 = 1 << 1;
    /// RDTSC at CPL 0 only.
    pub const TSD: u64 = 1 << 2;
    /// Debugging extensions.
    pub const DE: u64 = 1 << 3;
    /// 4 MiB pages.
    pub const PSE: u64 = 1 << 4;
    /// PAE paging.
    pub const PAE: u64 = 1 << 5;
    /// Machine check enable.
    pub const MCE: u64 = 1 << 6;
    /// Global pages.
    pub const PGE: u64 = 1 << 7;
    /// RDPMC at any CPL.
    pub const PCE: u64 = 1 << 8;
    /// FXSAVE/FXRSTOR and SSE.
    pub const OSFXSR: u64 = 1 << 9;
    /// Unmasked SIMD exceptions.
    pub const OSXMMEXCPT: u64 = 1 << 10;
    /// User-mode instruction prevention.
    pub const UMIP: u64 = 1 << 11;
    /// 5-level paging.
    pub const LA57: u64 = 1 << 12;
    /// VMX enable.
    pub const VMXE: u64 = 1 << 13;
    /// SMX enable.
    pub const SMXE: u64 = 1 << 14;
    /// RDFSBASE and friends.
    pub const FSGSBASE: u64 = 1 << 16;
    /// Process-context identifiers.
    pub const PCIDE: u64 = 1 << 17;
    /// XSAVE and XSETBV.
    pub const OSXSAVE: u64 = 1 << 18;
    /// Supervisor-mode execution prevention.
    pub const SMEP: u64 = 1 << 20;
    /// Supervisor-mode access prevention.
    pub const SMAP: u64 = 1 << 21;
    /// Protection keys for user pages.
    pub const PKE: u64 = 1 << 22;
    /// Control-flow enforcement.
    pub const CET: u64 = 1 << 23;
    /// Protection keys for supervisor pages.
    pub const PKS: u64 = 1 << 24;
}

/// EFER bits.
pub mod efer {
    /// SYSCALL/SYSRET.
    pub const SCE: u64 = 1 << 0;
    /// Long mode enable.
    pub const LME: u64 = 1 << 8;
    /// Long mode active (read-only for the guest).
    pub const LMA: u64 = 1 << 10;
    /// No-execute pages.
    pub const NXE: u64 = 1 << 11;
    /// SVM enable.
    pub const SVME: u64 = 1 << 12;
    /// Fast FXSAVE/FXRSTOR.
    pub const FFXSR: u64 = 1 << 14;
}

/// XCR0 components.
pub mod xcr0 {
    /// x87 state (must be set).
    pub const X87: u64 = 1 << 0;
    /// SSE state.
    pub const SSE: u64 = 1 << 1;
    /// AVX (YMM upper halves).
    pub const AVX: u64 = 1 << 2;
    /// MPX bound registers.
    pub const BNDREGS: u64 = 1 << 3;
    /// MPX configuration.
    pub const BNDCSR: u64 = 1 << 4;
    /// AVX-512: opmask, ZMM upper halves, ZMM16-31.
    pub const AVX512: u64 = 0x7 << 5;
}

/// The features the guest is offered that decide which control bits it
/// may set (from its CPUID, see [`GuestCpu::from_cpuid`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct GuestCpu {
    pub vme: bool,
    pub de: bool,
    pub pse: bool,
    pub tsc: bool,
    pub pae: bool,
    pub mce: bool,
    pub pge: bool,
    pub mca: bool,
    pub fxsr: bool,
    pub sse: bool,
    pub vmx: bool,
    pub pcid: bool,
    pub xsave: bool,
    pub fsgsbase: bool,
    pub smep: bool,
    pub smap: bool,
    pub umip: bool,
    pub pku: bool,
    pub cet: bool,
    pub pks: bool,
    pub syscall: bool,
    pub nx: bool,
    pub ffxsr: bool,
    pub lm: bool,
    pub svm: bool,
    /// The XCR0 components CPUID leaf 0xD offers.
    pub xcr0: u64,
}

fn bit(r: u32, n: u32) -> bool {
    r & (1 << n) != 0
}

impl GuestCpu {
    /// Reads the features from the guest's CPUID (`cpuid(leaf, subleaf)`
    /// as the guest would see it).
    pub fn from_cpuid(cpuid: impl Fn(u32, u32) -> [u32; 4]) -> Self {
        let max = cpuid(0, 0)[0];
        let max_ext = cpuid(0x8000_0000, 0)[0];
        let leaf = |l: u32, s: u32| {
            let top = if l >= 0x8000_0000 { max_ext } else { max };
            if l <= top { cpuid(l, s) } else { [0; 4] }
        };
        let [_, _, c1, d1] = leaf(1, 0);
        let [_, b7, c7, d7] = leaf(7, 0);
        let [_, _, ce, de] = leaf(0x8000_0001, 0);
        let xsave = bit(c1, 26);
        let xcr0 = if xsave {
            let [a, _, _, d] = leaf(0xD, 0);
            (u64::from(d) << 32) | u64::from(a)
        } else {
            0
        };
        Self {
            vme: bit(d1, 1),
            de: bit(d1, 2),
            pse: bit(d1, 3),
            tsc: bit(d1, 4),
            pae: bit(d1, 6),
            mce: bit(d1, 7),
            pge: bit(d1, 13),
            mca: bit(d1, 14),
            fxsr: bit(d1, 24),
            sse: bit(d1, 25),
            vmx: bit(c1, 5),
            pcid: bit(c1, 17),
            xsave,
            fsgsbase: bit(b7, 0),
            smep: bit(b7, 7),
            smap: bit(b7, 20),
            umip: bit(c7, 2),
            pku: bit(c7, 3),
            cet: bit(c7, 7) || bit(d7, 20),
            pks: bit(c7, 31),
            syscall: bit(de, 11),
            nx: bit(de, 20),
            ffxsr: bit(de, 25),
            lm: bit(de, 29),
            svm: bit(ce, 2),
            xcr0,
        }
    }

    /// The CR4 bits the guest may set (Xen's `hvm_cr4_guest_valid_bits`
    /// without nested virtualization). LA57 is never offered.
    pub fn cr4_valid(&self) -> u64 {
        use cr4::*;
        let mut v = PCE;
        for (on, bits) in [
            (self.vme, VME | PVI),
            (self.tsc, TSD),
            (self.de, DE),
            (self.pse, PSE),
            (self.pae, PAE),
            (self.mce || self.mca, MCE),
            (self.pge, PGE),
            (self.fxsr, OSFXSR),
            (self.sse, OSXMMEXCPT),
            (self.umip, UMIP),
            (self.fsgsbase, FSGSBASE),
            (self.pcid, PCIDE),
            (self.xsave, OSXSAVE),
            (self.smep, SMEP),
            (self.smap, SMAP),
            (self.pku, PKE),
            (self.cet, CET),
            (self.pks, PKS),
        ] {
            if on {
                v |= bits;
            }
        }
        v
    }

    /// The EFER bits the guest may set (LMA is the processor's).
    pub fn efer_valid(&self) -> u64 {
        use efer::*;
        let mut v = LMA;
        for (on, b) in [
            (self.syscall, SCE),
            (self.lm, LME),
            (self.nx, NXE),
            (self.ffxsr, FFXSR),
        ] {
            if on {
                v |= b;
            }
        }
        v
    }
}

/// The vCPU's control state a check depends on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrState {
    /// CR0 as the guest sees it.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4 as the guest sees it.
    pub cr4: u64,
    /// EFER as the guest sees it.
    pub efer: u64,
    /// The vCPU runs 64-bit code (EFER.LMA and CS.L).
    pub code64: bool,
    /// The current privilege level.
    pub cpl: u8,
}

/// `#GP(0)`.
pub const GP0: Event = Event::Exception {
    vector: X86_EXC_GP,
    error_code: Some(0),
};

/// `#UD`.
pub const UD: Event = Event::Exception {
    vector: X86_EXC_UD,
    error_code: None,
};

/// A legal CR0 write: the CR0 and EFER to load (LMA follows CR0.PG with
/// EFER.LME).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cr0Write {
    /// The new CR0.
    pub cr0: u64,
    /// The new EFER.
    pub efer: u64,
}

/// A write of `value` to CR0 (`MOV CR0`, `LMSW`, `CLTS` after their own
/// merging). Bits 63:32 set, PG without PE, NW without CD, clearing WP
/// under CR4.CET, enabling paging with EFER.LME but without CR4.PAE,
/// disabling paging in 64-bit code or with CR4.PCIDE: `#GP(0)`. Other
/// undefined bits in 31:0 are ignored and ET reads as 1, as on hardware.
pub fn check_cr0(s: &CrState, value: u64) -> Result<Cr0Write, Event> {
    use cr0::*;
    if value >> 32 != 0 {
        return Err(GP0);
    }
    let v = (value & KNOWN) | ET;
    if v & PG != 0 && v & PE == 0 {
        return Err(GP0);
    }
    if v & NW != 0 && v & CD == 0 {
        return Err(GP0);
    }
    if v & WP == 0 && s.cr4 & cr4::CET != 0 {
        return Err(GP0);
    }
    let mut efer = s.efer;
    let was_paging = s.cr0 & PG != 0;
    if v & PG != 0 && !was_paging {
        if s.efer & efer::LME != 0 {
            if s.cr4 & cr4::PAE == 0 {
                return Err(GP0);
            }
            efer |= efer::LMA;
        }
    } else if v & PG == 0 && was_paging {
        if s.code64 || s.cr4 & cr4::PCIDE != 0 {
            return Err(GP0);
        }
        efer &= !efer::LMA;
    }
    Ok(Cr0Write { cr0: v, efer })
}

/// PAE paging's page-directory-pointer entries, as a `MOV CR0`/`MOV CR4`
/// that turns PAE paging on (outside long mode) loads them from CR3: a
/// present entry with a reserved bit set (1, 2, 5-8, or above bit 51) is
/// `#GP(0)`. Returns them unchanged otherwise.
pub fn check_pdptes(e: [u64; 4]) -> Result<[u64; 4], Event> {
    const RESERVED: u64 = (0x1E6) | !((1u64 << 52) - 1);
    if e.iter().any(|p| p & 1 != 0 && p & RESERVED != 0) {
        return Err(GP0);
    }
    Ok(e)
}

/// A write of `value` to CR4: bits the guest's CPU does not offer (see
/// [`GuestCpu::cr4_valid`]), clearing PAE in long mode, CET without
/// CR0.WP, and setting PCIDE outside long mode or with CR3[11:0] not 0:
/// `#GP(0)`. Returns the CR4 to load.
pub fn check_cr4(s: &CrState, cpu: &GuestCpu, value: u64) -> Result<u64, Event> {
    use cr4::*;
    if value & !cpu.cr4_valid() != 0 {
        return Err(GP0);
    }
    let lma = s.efer & efer::LMA != 0;
    if lma && value & PAE == 0 {
        return Err(GP0);
    }
    if value & CET != 0 && s.cr0 & cr0::WP == 0 {
        return Err(GP0);
    }
    if value & PCIDE != 0 && s.cr4 & PCIDE == 0 && (!lma || s.cr3 & 0xFFF != 0) {
        return Err(GP0);
    }
    Ok(value)
}

/// A `WRMSR` of `value` to EFER: bits the guest's CPU does not offer (see
/// [`GuestCpu::efer_valid`]; SVME never, nested virtualization is not
/// offered) and a change of LME while paging is on: `#GP(0)`. The written
/// LMA is ignored (the processor's stays). Returns the EFER to load.
pub fn check_efer(s: &CrState, cpu: &GuestCpu, value: u64) -> Result<u64, Event> {
    use efer::*;
    if value & !cpu.efer_valid() != 0 {
        return Err(GP0);
    }
    if (value ^ s.efer) & LME != 0 && s.cr0 & cr0::PG != 0 {
        return Err(GP0);
    }
    Ok((value & !LMA) | (s.efer & LMA))
}

/// `XSETBV` of `value` to XCR `index`: `#UD` without CR4.OSXSAVE;
/// `#GP(0)` at CPL > 0, for any XCR but 0, for x87 clear, for components
/// CPUID leaf 0xD does not offer, AVX without SSE, AVX-512 partly or
/// without AVX, and only one of the two MPX components. Returns the XCR0
/// to load.
pub fn check_xcr0(s: &CrState, cpu: &GuestCpu, index: u32, value: u64) -> Result<u64, Event> {
    use xcr0::*;
    if s.cr4 & cr4::OSXSAVE == 0 {
        return Err(UD);
    }
    if s.cpl != 0 || index != 0 {
        return Err(GP0);
    }
    let bad = value & X87 == 0
        || value & !cpu.xcr0 != 0
        || (value & AVX != 0 && value & SSE == 0)
        || (value & AVX512 != 0 && (value & AVX512 != AVX512 || value & AVX == 0))
        || ((value & BNDREGS != 0) != (value & BNDCSR != 0));
    if bad { Err(GP0) } else { Ok(value) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every feature on, XCR0 x87 | SSE | AVX | AVX-512 | MPX.
    fn full() -> GuestCpu {
        GuestCpu {
            vme: true,
            de: true,
            pse: true,
            tsc: true,
            pae: true,
            mce: true,
            pge: true,
            mca: true,
            fxsr: true,
            sse: true,
            vmx: false,
            pcid: true,
            xsave: true,
            fsgsbase: true,
            smep: true,
            smap: true,
            umip: true,
            pku: true,
            cet: true,
            pks: true,
            syscall: true,
            nx: true,
            ffxsr: true,
            lm: true,
            svm: false,
            xcr0: 0xFF,
        }
    }

    /// 64-bit kernel code with paging: PE | PG | WP | ET, PAE, LME | LMA.
    fn long_mode() -> CrState {
        CrState {
            cr0: cr0::PE | cr0::PG | cr0::WP | cr0::ET,
            cr3: 0x1000,
            cr4: cr4::PAE,
            efer: efer::LME | efer::LMA,
            code64: true,
            cpl: 0,
        }
    }

    /// 32-bit protected mode without paging (the PVH entry state).
    fn flat32() -> CrState {
        CrState {
            cr0: cr0::PE | cr0::ET,
            cr3: 0,
            cr4: 0,
            efer: 0,
            code64: false,
            cpl: 0,
        }
    }

    #[test]
    fn cpuid_features() {
        let cpu = GuestCpu::from_cpuid(|leaf, sub| match (leaf, sub) {
            (0, _) => [0xD, 0, 0, 0],
            (0x8000_0000, _) => [0x8000_0008, 0, 0, 0],
            // VME, PAE, PGE, FXSR, SSE; XSAVE.
            (1, _) => [
                0,
                0,
                1 << 26,
                (1 << 1) | (1 << 6) | (1 << 13) | (1 << 24) | (1 << 25),
            ],
            // SMEP; UMIP.
            (7, 0) => [0, 1 << 7, 1 << 2, 0],
            (0xD, 0) => [0x7, 0, 0, 0],
            // SYSCALL, NX, LM.
            (0x8000_0001, _) => [0, 0, 0, (1 << 11) | (1 << 20) | (1 << 29)],
            _ => [0; 4],
        });
        assert!(cpu.vme && cpu.pae && cpu.pge && cpu.fxsr && cpu.sse && cpu.xsave);
        assert!(cpu.smep && cpu.umip && !cpu.pku && !cpu.smap && !cpu.pcid);
        assert!(cpu.syscall && cpu.nx && cpu.lm && !cpu.ffxsr && !cpu.svm);
        assert_eq!(cpu.xcr0, 0x7);
        use cr4::*;
        assert_eq!(
            cpu.cr4_valid(),
            PCE | VME | PVI | PAE | PGE | OSFXSR | OSXMMEXCPT | UMIP | OSXSAVE | SMEP
        );
        assert_eq!(
            cpu.efer_valid(),
            efer::SCE | efer::LME | efer::LMA | efer::NXE
        );
        // Without XSAVE leaf 0xD is not read.
        let no_xsave = GuestCpu::from_cpuid(|leaf, _| match leaf {
            0 => [0xD, 0, 0, 0],
            0xD => [0x7, 0, 0, 0],
            _ => [0; 4],
        });
        assert_eq!(no_xsave.xcr0, 0);
        // Leaves above the maximum are not read either.
        let low_max = GuestCpu::from_cpuid(|leaf, _| match leaf {
            0 => [1, 0, 0, 0],
            7 => [0, u32::MAX, u32::MAX, u32::MAX],
            _ => [0; 4],
        });
        assert!(!low_max.umip && !low_max.smep);
    }

    #[test]
    fn cr4_unoffered_bits_fault() {
        let s = long_mode();
        let all = full();
        // UMIP without CPUID's UMIP.
        let no_umip = GuestCpu { umip: false, ..all };
        let v = cr4::PAE | cr4::UMIP;
        assert_eq!(check_cr4(&s, &all, v), Ok(v));
        assert_eq!(check_cr4(&s, &no_umip, v), Err(GP0));
        // PKE without PKU.
        let no_pku = GuestCpu { pku: false, ..all };
        let v = cr4::PAE | cr4::PKE;
        assert_eq!(check_cr4(&s, &all, v), Ok(v));
        assert_eq!(check_cr4(&s, &no_pku, v), Err(GP0));
        // LA57, VMXE, SMXE and undefined bits never.
        for b in [cr4::LA57, cr4::VMXE, cr4::SMXE, 1 << 15, 1 << 26, 1 << 32] {
            assert_eq!(check_cr4(&s, &all, cr4::PAE | b), Err(GP0), "{b:#x}");
        }
        // OSXSAVE without XSAVE, OSFXSR without FXSR.
        let no_xsave = GuestCpu {
            xsave: false,
            ..all
        };
        assert_eq!(check_cr4(&s, &no_xsave, cr4::PAE | cr4::OSXSAVE), Err(GP0));
        let no_fxsr = GuestCpu { fxsr: false, ..all };
        assert_eq!(check_cr4(&s, &no_fxsr, cr4::PAE | cr4::OSFXSR), Err(GP0));
        // PCE always.
        let none = GuestCpu::default();
        assert_eq!(check_cr4(&flat32(), &none, cr4::PCE), Ok(cr4::PCE));
        assert_eq!(check_cr4(&flat32(), &none, cr4::PAE), Err(GP0));
    }

    #[test]
    fn cr4_state_rules() {
        let all = full();
        // Clearing PAE in long mode.
        assert_eq!(check_cr4(&long_mode(), &all, 0), Err(GP0));
        assert_eq!(check_cr4(&flat32(), &all, 0), Ok(0));
        // CET needs CR0.WP.
        let mut s = long_mode();
        let v = cr4::PAE | cr4::CET;
        assert_eq!(check_cr4(&s, &all, v), Ok(v));
        s.cr0 &= !cr0::WP;
        assert_eq!(check_cr4(&s, &all, v), Err(GP0));
        // PCIDE 0 -> 1 only in long mode with CR3[11:0] = 0.
        let v = cr4::PAE | cr4::PCIDE;
        assert_eq!(check_cr4(&long_mode(), &all, v), Ok(v));
        let mut s = long_mode();
        s.cr3 |= 5;
        assert_eq!(check_cr4(&s, &all, v), Err(GP0));
        assert_eq!(check_cr4(&flat32(), &all, cr4::PCIDE), Err(GP0));
        // Already set: PCID bits in CR3 do not matter.
        let mut s = long_mode();
        s.cr4 |= cr4::PCIDE;
        s.cr3 |= 5;
        assert_eq!(check_cr4(&s, &all, v), Ok(v));
    }

    #[test]
    fn cr0_rules() {
        use cr0::*;
        let s = flat32();
        // Undefined low bits are dropped and ET forced; high bits fault.
        assert_eq!(
            check_cr0(&s, PE | (1 << 7)),
            Ok(Cr0Write {
                cr0: PE | ET,
                efer: 0
            })
        );
        assert_eq!(check_cr0(&s, PE | (1 << 32)), Err(GP0));
        // PG without PE; NW without CD (and with it, fine).
        assert_eq!(check_cr0(&s, PG), Err(GP0));
        assert_eq!(check_cr0(&s, PE | NW), Err(GP0));
        assert!(check_cr0(&s, PE | NW | CD).is_ok());
        assert!(check_cr0(&s, PE | CD).is_ok());
        // Paging on with LME: needs PAE, then sets LMA.
        let mut s = flat32();
        s.efer = efer::LME;
        assert_eq!(check_cr0(&s, PE | PG), Err(GP0));
        s.cr4 = cr4::PAE;
        assert_eq!(
            check_cr0(&s, PE | PG),
            Ok(Cr0Write {
                cr0: PE | PG | ET,
                efer: efer::LME | efer::LMA
            })
        );
        // Paging off in 64-bit code: #GP; in compatibility mode it leaves
        // long mode (LMA clear); never with PCIDE.
        let s = long_mode();
        assert_eq!(check_cr0(&s, PE | WP), Err(GP0));
        let mut s = long_mode();
        s.code64 = false;
        assert_eq!(
            check_cr0(&s, PE),
            Ok(Cr0Write {
                cr0: PE | ET,
                efer: efer::LME
            })
        );
        s.cr4 |= cr4::PCIDE;
        assert_eq!(check_cr0(&s, PE), Err(GP0));
        // Clearing WP under CET.
        let mut s = long_mode();
        s.cr4 |= cr4::CET;
        assert_eq!(check_cr0(&s, PE | PG), Err(GP0));
        assert!(check_cr0(&s, PE | PG | WP).is_ok());
        // CLTS-like writes in long mode keep everything else.
        let s = long_mode();
        assert_eq!(
            check_cr0(&s, s.cr0 | TS),
            Ok(Cr0Write {
                cr0: s.cr0 | TS,
                efer: s.efer
            })
        );
    }

    #[test]
    fn pdpte_reserved_bits() {
        let ok = [0x1001, 0, 0x3001 | (1 << 63 >> 12), 0x4001];
        assert_eq!(check_pdptes(ok), Ok(ok));
        // Not present: anything goes.
        assert!(check_pdptes([0xFFFF_FFFF_FFFF_FFFE, 0, 0, 0]).is_ok());
        for bad in [1 << 1, 1 << 2, 1 << 5, 1 << 8, 1 << 52, 1 << 63] {
            assert_eq!(check_pdptes([0x1001 | bad, 0, 0, 0]), Err(GP0), "{bad:#x}");
        }
    }

    #[test]
    fn efer_rules() {
        use efer::*;
        let all = full();
        let s = flat32();
        assert_eq!(check_efer(&s, &all, SCE | LME | NXE), Ok(SCE | LME | NXE));
        // Unoffered or undefined bits.
        for b in [SVME, 1 << 1, 1 << 9, 1 << 13, 1 << 15, 1 << 63] {
            assert_eq!(check_efer(&s, &all, b), Err(GP0), "{b:#x}");
        }
        let no_nx = GuestCpu { nx: false, ..all };
        assert_eq!(check_efer(&s, &no_nx, NXE), Err(GP0));
        let no_sc = GuestCpu {
            syscall: false,
            ..all
        };
        assert_eq!(check_efer(&s, &no_sc, SCE), Err(GP0));
        let no_lm = GuestCpu { lm: false, ..all };
        assert_eq!(check_efer(&s, &no_lm, LME), Err(GP0));
        let no_ffxsr = GuestCpu {
            ffxsr: false,
            ..all
        };
        assert_eq!(check_efer(&s, &no_ffxsr, FFXSR), Err(GP0));
        assert_eq!(check_efer(&s, &all, FFXSR), Ok(FFXSR));
        // Written LMA is ignored: the processor's stays.
        assert_eq!(check_efer(&s, &all, LMA), Ok(0));
        let l = long_mode();
        assert_eq!(check_efer(&l, &all, LME | NXE), Ok(LME | LMA | NXE));
        // LME cannot change while paging is on.
        assert_eq!(check_efer(&l, &all, NXE), Err(GP0));
        let mut p = flat32();
        p.cr0 |= cr0::PG;
        assert_eq!(check_efer(&p, &all, LME), Err(GP0));
    }

    #[test]
    fn xcr0_rules() {
        use xcr0::*;
        let all = full();
        let mut s = long_mode();
        // No OSXSAVE: #UD, whatever the value.
        assert_eq!(check_xcr0(&s, &all, 0, X87), Err(UD));
        s.cr4 |= cr4::OSXSAVE;
        assert_eq!(check_xcr0(&s, &all, 0, X87 | SSE | AVX), Ok(0x7));
        assert_eq!(check_xcr0(&s, &all, 0, X87), Ok(1));
        // x87 clear, AVX without SSE, another XCR, CPL 3.
        assert_eq!(check_xcr0(&s, &all, 0, SSE), Err(GP0));
        assert_eq!(check_xcr0(&s, &all, 0, 0), Err(GP0));
        assert_eq!(check_xcr0(&s, &all, 0, X87 | AVX), Err(GP0));
        assert_eq!(check_xcr0(&s, &all, 1, X87), Err(GP0));
        let mut user = s;
        user.cpl = 3;
        assert_eq!(check_xcr0(&user, &all, 0, X87), Err(GP0));
        // AVX-512: all three with AVX, or none.
        assert_eq!(check_xcr0(&s, &all, 0, X87 | SSE | AVX | AVX512), Ok(0xE7));
        assert_eq!(
            check_xcr0(&s, &all, 0, X87 | SSE | AVX | (1 << 5)),
            Err(GP0)
        );
        assert_eq!(check_xcr0(&s, &all, 0, X87 | SSE | AVX512), Err(GP0));
        // MPX: both or none.
        assert_eq!(check_xcr0(&s, &all, 0, X87 | BNDREGS), Err(GP0));
        assert_eq!(check_xcr0(&s, &all, 0, X87 | BNDREGS | BNDCSR), Ok(0x19));
        // Components leaf 0xD does not offer.
        let small = GuestCpu { xcr0: 0x3, ..all };
        assert_eq!(check_xcr0(&s, &small, 0, X87 | SSE | AVX), Err(GP0));
        assert_eq!(check_xcr0(&s, &all, 0, X87 | (1 << 9)), Err(GP0));
        assert_eq!(check_xcr0(&s, &all, 0, X87 | (1 << 63)), Err(GP0));
    }
}
