//! The Virtual Machine Control Block: one 4 KiB page per vCPU, a control
//! area (0x000-0x3FF) that says what to intercept and reports exits, and a
//! state-save area (0x400-) with the guest's registers.
//!
//! Layout per AMD64 APM vol. 2, appendix B (tables B-1 and B-2). Every field
//! offset is checked at compile time at the bottom of this file, so a
//! misplaced field is a build error rather than a guest that never starts.

use core::mem::{offset_of, size_of};

/// Intercept bits of the first general vector (VMCB offset 0x00C).
pub mod intercept1 {
    /// Physical INTR.
    pub const INTR: u32 = 1 << 0;
    /// Physical NMI.
    pub const NMI: u32 = 1 << 1;
    /// SMI.
    pub const SMI: u32 = 1 << 2;
    /// INIT.
    pub const INIT: u32 = 1 << 3;
    /// Virtual interrupt (V_IRQ taken).
    pub const VINTR: u32 = 1 << 4;
    /// RDTSC.
    pub const RDTSC: u32 = 1 << 14;
    /// RDPMC.
    pub const RDPMC: u32 = 1 << 15;
    /// CPUID.
    pub const CPUID: u32 = 1 << 18;
    /// RSM.
    pub const RSM: u32 = 1 << 19;
    /// INVD.
    pub const INVD: u32 = 1 << 22;
    /// PAUSE.
    pub const PAUSE: u32 = 1 << 23;
    /// HLT.
    pub const HLT: u32 = 1 << 24;
    /// INVLPGA.
    pub const INVLPGA: u32 = 1 << 26;
    /// IN/OUT/INS/OUTS, filtered by the I/O permission map.
    pub const IOIO_PROT: u32 = 1 << 27;
    /// RDMSR/WRMSR, filtered by the MSR permission map.
    pub const MSR_PROT: u32 = 1 << 28;
    /// Task switches.
    pub const TASK_SWITCH: u32 = 1 << 29;
    /// Shutdown (triple fault).
    pub const SHUTDOWN: u32 = 1 << 31;
}

/// Intercept bits of the second general vector (VMCB offset 0x010).
pub mod intercept2 {
    /// VMRUN (must be set, or VMRUN fails).
    pub const VMRUN: u32 = 1 << 0;
    /// VMMCALL.
    pub const VMMCALL: u32 = 1 << 1;
    /// VMLOAD.
    pub const VMLOAD: u32 = 1 << 2;
    /// VMSAVE.
    pub const VMSAVE: u32 = 1 << 3;
    /// STGI.
    pub const STGI: u32 = 1 << 4;
    /// CLGI.
    pub const CLGI: u32 = 1 << 5;
    /// SKINIT.
    pub const SKINIT: u32 = 1 << 6;
    /// RDTSCP.
    pub const RDTSCP: u32 = 1 << 7;
    /// ICEBP.
    pub const ICEBP: u32 = 1 << 8;
    /// WBINVD.
    pub const WBINVD: u32 = 1 << 9;
    /// MONITOR.
    pub const MONITOR: u32 = 1 << 10;
    /// MWAIT.
    pub const MWAIT: u32 = 1 << 11;
    /// XSETBV.
    pub const XSETBV: u32 = 1 << 13;
}

/// `vintr` (offset 0x060) fields: virtual interrupt control.
pub mod vintr {
    /// Virtual TPR, bits 7:0.
    pub const V_TPR_MASK: u64 = 0xFF;
    /// A virtual interrupt is pending.
    pub const V_IRQ: u64 = 1 << 8;
    /// Priority of the pending virtual interrupt, bits 19:16.
    pub const V_INTR_PRIO_SHIFT: u32 = 16;
    /// Ignore the virtual TPR for the pending virtual interrupt.
    pub const V_IGN_TPR: u64 = 1 << 20;
    /// Guest RFLAGS.IF masks only virtual interrupts; the host's IF (at
    /// VMRUN) masks physical ones.
    pub const V_INTR_MASKING: u64 = 1 << 24;
    /// Vector of the virtual interrupt, bits 39:32.
    pub const V_INTR_VECTOR_SHIFT: u32 = 32;
}

/// `interrupt_shadow` (offset 0x068): the guest is in an interrupt shadow
/// (after STI or MOV SS).
pub const INTERRUPT_SHADOW: u64 = 1 << 0;

/// `intercept_cr` bit: writes to CR0 (MOV, CLTS, LMSW; exit 0x10).
pub const CR_WRITE_CR0: u32 = 1 << 16;
/// `intercept_cr` bit: writes to CR4 (exit 0x14).
pub const CR_WRITE_CR4: u32 = 1 << 20;

/// `np_enable` (offset 0x090) bit 0: nested paging on.
pub const NP_ENABLE: u64 = 1 << 0;

/// `tlb_control` values (offset 0x05C).
pub mod tlb_control {
    /// Flush nothing.
    pub const NONE: u8 = 0;
    /// Flush every ASID's entries (always supported).
    pub const FLUSH_ALL: u8 = 1;
    /// Flush this guest's ASID (needs CPUID 8000_000A EDX bit 6).
    pub const FLUSH_ASID: u8 = 3;
}

/// One segment register as the VMCB stores it (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// The selector.
    pub selector: u16,
    /// Packed attributes: descriptor bits 47:40 in 7:0 and 55:52 in 11:8
    /// (type, S, DPL, P, AVL, L, D/B, G).
    pub attrib: u16,
    /// The limit, expanded to bytes.
    pub limit: u32,
    /// The base.
    pub base: u64,
}

/// The control area, offsets 0x000-0x3FF.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ControlArea {
    /// 0x000: CR reads (bits 15:0) and writes (31:16) to intercept.
    pub intercept_cr: u32,
    /// 0x004: DR reads (15:0) and writes (31:16) to intercept.
    pub intercept_dr: u32,
    /// 0x008: exception vectors to intercept, one bit each.
    pub intercept_exceptions: u32,
    /// 0x00C: see [`intercept1`].
    pub intercept1: u32,
    /// 0x010: see [`intercept2`].
    pub intercept2: u32,
    /// 0x014: third intercept vector (INVLPGB, ...).
    pub intercept3: u32,
    _reserved_018: [u8; 0x3C - 0x18],
    /// 0x03C: PAUSE filter threshold.
    pub pause_filter_threshold: u16,
    /// 0x03E: PAUSE filter count.
    pub pause_filter_count: u16,
    /// 0x040: physical address of the I/O permission map (12 KiB).
    pub iopm_base_pa: u64,
    /// 0x048: physical address of the MSR permission map (8 KiB).
    pub msrpm_base_pa: u64,
    /// 0x050: added to the TSC the guest reads.
    pub tsc_offset: u64,
    /// 0x058: the guest's ASID (never 0, which is the host's).
    pub guest_asid: u32,
    /// 0x05C: see [`tlb_control`].
    pub tlb_control: u8,
    _reserved_05d: [u8; 3],
    /// 0x060: see [`vintr`].
    pub vintr: u64,
    /// 0x068: see [`INTERRUPT_SHADOW`].
    pub interrupt_shadow: u64,
    /// 0x070: the exit code.
    pub exitcode: u64,
    /// 0x078: exit information 1.
    pub exitinfo1: u64,
    /// 0x080: exit information 2.
    pub exitinfo2: u64,
    /// 0x088: an event whose delivery the exit interrupted (EVENTINJ format).
    pub exitintinfo: u64,
    /// 0x090: see [`NP_ENABLE`].
    pub np_enable: u64,
    /// 0x098: AVIC APIC BAR.
    pub avic_apic_bar: u64,
    /// 0x0A0: guest physical address of the GHCB (SEV-ES).
    pub ghcb_pa: u64,
    /// 0x0A8: an event to inject at the next VMRUN.
    pub event_inj: u64,
    /// 0x0B0: nested page table root (nCR3).
    pub n_cr3: u64,
    /// 0x0B8: LBR virtualization (bit 0), virtual VMSAVE/VMLOAD (bit 1).
    pub virt_ext: u64,
    /// 0x0C0: VMCB clean bits (state the CPU may keep cached).
    pub vmcb_clean: u32,
    _reserved_0c4: u32,
    /// 0x0C8: next sequential RIP (with NRIP save).
    pub nrip: u64,
    /// 0x0D0: how many instruction bytes were fetched (decode assists).
    pub insn_len: u8,
    /// 0x0D1: the fetched instruction bytes.
    pub insn_bytes: [u8; 15],
    /// 0x0E0: AVIC backing page.
    pub avic_backing_page: u64,
    _reserved_0e8: u64,
    /// 0x0F0: AVIC logical table.
    pub avic_logical_table: u64,
    /// 0x0F8: AVIC physical table.
    pub avic_physical_table: u64,
    _reserved_100: u64,
    /// 0x108: VMSA pointer (SEV-ES).
    pub vmsa_pa: u64,
    _reserved_110: [u8; 0x3E0 - 0x110],
    /// 0x3E0: reserved for the host's use.
    pub host_reserved: [u8; 0x20],
}

/// The state-save area, VMCB offsets 0x400-0xFFF (offsets below are from
/// the start of the VMCB).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StateSaveArea {
    /// 0x400.
    pub es: Segment,
    /// 0x410.
    pub cs: Segment,
    /// 0x420.
    pub ss: Segment,
    /// 0x430.
    pub ds: Segment,
    /// 0x440 (VMLOAD/VMSAVE).
    pub fs: Segment,
    /// 0x450 (VMLOAD/VMSAVE).
    pub gs: Segment,
    /// 0x460: only base and limit are used.
    pub gdtr: Segment,
    /// 0x470 (VMLOAD/VMSAVE).
    pub ldtr: Segment,
    /// 0x480: only base and limit are used.
    pub idtr: Segment,
    /// 0x490 (VMLOAD/VMSAVE).
    pub tr: Segment,
    _reserved_4a0: [u8; 0x4CB - 0x4A0],
    /// 0x4CB: current privilege level.
    pub cpl: u8,
    _reserved_4cc: u32,
    /// 0x4D0: EFER (SVME must stay set).
    pub efer: u64,
    _reserved_4d8: [u8; 0x548 - 0x4D8],
    /// 0x548.
    pub cr4: u64,
    /// 0x550.
    pub cr3: u64,
    /// 0x558.
    pub cr0: u64,
    /// 0x560.
    pub dr7: u64,
    /// 0x568.
    pub dr6: u64,
    /// 0x570.
    pub rflags: u64,
    /// 0x578.
    pub rip: u64,
    _reserved_580: [u8; 0x5D8 - 0x580],
    /// 0x5D8.
    pub rsp: u64,
    /// 0x5E0: supervisor shadow stack (CET).
    pub s_cet: u64,
    /// 0x5E8: shadow stack pointer (CET).
    pub ssp: u64,
    /// 0x5F0: interrupt SSP table address (CET).
    pub isst_addr: u64,
    /// 0x5F8.
    pub rax: u64,
    /// 0x600 (VMLOAD/VMSAVE).
    pub star: u64,
    /// 0x608 (VMLOAD/VMSAVE).
    pub lstar: u64,
    /// 0x610 (VMLOAD/VMSAVE).
    pub cstar: u64,
    /// 0x618 (VMLOAD/VMSAVE).
    pub sfmask: u64,
    /// 0x620 (VMLOAD/VMSAVE).
    pub kernel_gs_base: u64,
    /// 0x628 (VMLOAD/VMSAVE).
    pub sysenter_cs: u64,
    /// 0x630 (VMLOAD/VMSAVE).
    pub sysenter_esp: u64,
    /// 0x638 (VMLOAD/VMSAVE).
    pub sysenter_eip: u64,
    /// 0x640.
    pub cr2: u64,
    _reserved_648: [u8; 0x668 - 0x648],
    /// 0x668: the guest PAT (with nested paging).
    pub g_pat: u64,
    /// 0x670: DEBUGCTL (LBR virtualization).
    pub dbgctl: u64,
    /// 0x678.
    pub br_from: u64,
    /// 0x680.
    pub br_to: u64,
    /// 0x688.
    pub last_excp_from: u64,
    /// 0x690.
    pub last_excp_to: u64,
    _reserved_698: [u8; 0x1000 - 0x698],
}

/// A whole VMCB: one page, page-aligned.
#[repr(C, align(4096))]
#[derive(Clone, Copy, Debug)]
pub struct Vmcb {
    /// 0x000-0x3FF.
    pub control: ControlArea,
    /// 0x400-0xFFF.
    pub save: StateSaveArea,
}

impl Vmcb {
    /// An all-zero VMCB (every intercept off, every register 0).
    pub const fn zeroed() -> Self {
        // All fields are integers or integer arrays, so zero is valid; built
        // field by field to stay free of unsafe.
        const SEG: Segment = Segment {
            selector: 0,
            attrib: 0,
            limit: 0,
            base: 0,
        };
        Vmcb {
            control: ControlArea {
                intercept_cr: 0,
                intercept_dr: 0,
                intercept_exceptions: 0,
                intercept1: 0,
                intercept2: 0,
                intercept3: 0,
                _reserved_018: [0; 0x3C - 0x18],
                pause_filter_threshold: 0,
                pause_filter_count: 0,
                iopm_base_pa: 0,
                msrpm_base_pa: 0,
                tsc_offset: 0,
                guest_asid: 0,
                tlb_control: 0,
                _reserved_05d: [0; 3],
                vintr: 0,
                interrupt_shadow: 0,
                exitcode: 0,
                exitinfo1: 0,
                exitinfo2: 0,
                exitintinfo: 0,
                np_enable: 0,
                avic_apic_bar: 0,
                ghcb_pa: 0,
                event_inj: 0,
                n_cr3: 0,
                virt_ext: 0,
                vmcb_clean: 0,
                _reserved_0c4: 0,
                nrip: 0,
                insn_len: 0,
                insn_bytes: [0; 15],
                avic_backing_page: 0,
                _reserved_0e8: 0,
                avic_logical_table: 0,
                avic_physical_table: 0,
                _reserved_100: 0,
                vmsa_pa: 0,
                _reserved_110: [0; 0x3E0 - 0x110],
                host_reserved: [0; 0x20],
            },
            save: StateSaveArea {
                es: SEG,
                cs: SEG,
                ss: SEG,
                ds: SEG,
                fs: SEG,
                gs: SEG,
                gdtr: SEG,
                ldtr: SEG,
                idtr: SEG,
                tr: SEG,
                _reserved_4a0: [0; 0x4CB - 0x4A0],
                cpl: 0,
                _reserved_4cc: 0,
                efer: 0,
                _reserved_4d8: [0; 0x548 - 0x4D8],
                cr4: 0,
                cr3: 0,
                cr0: 0,
                dr7: 0,
                dr6: 0,
                rflags: 0,
                rip: 0,
                _reserved_580: [0; 0x5D8 - 0x580],
                rsp: 0,
                s_cet: 0,
                ssp: 0,
                isst_addr: 0,
                rax: 0,
                star: 0,
                lstar: 0,
                cstar: 0,
                sfmask: 0,
                kernel_gs_base: 0,
                sysenter_cs: 0,
                sysenter_esp: 0,
                sysenter_eip: 0,
                cr2: 0,
                _reserved_648: [0; 0x668 - 0x648],
                g_pat: 0,
                dbgctl: 0,
                br_from: 0,
                br_to: 0,
                last_excp_from: 0,
                last_excp_to: 0,
                _reserved_698: [0; 0x1000 - 0x698],
            },
        }
    }
}

/// Checks a field offset at compile time.
macro_rules! at {
    ($t:ty, $f:ident, $off:expr) => {
        const _: () = assert!(offset_of!($t, $f) == $off);
    };
}

const _: () = assert!(size_of::<Segment>() == 16);
const _: () = assert!(size_of::<ControlArea>() == 0x400);
const _: () = assert!(size_of::<StateSaveArea>() == 0xC00);
const _: () = assert!(size_of::<Vmcb>() == 0x1000);
at!(Vmcb, control, 0);
at!(Vmcb, save, 0x400);
at!(Segment, selector, 0);
at!(Segment, attrib, 2);
at!(Segment, limit, 4);
at!(Segment, base, 8);

at!(ControlArea, intercept_cr, 0x000);
at!(ControlArea, intercept_dr, 0x004);
at!(ControlArea, intercept_exceptions, 0x008);
at!(ControlArea, intercept1, 0x00C);
at!(ControlArea, intercept2, 0x010);
at!(ControlArea, intercept3, 0x014);
at!(ControlArea, pause_filter_threshold, 0x03C);
at!(ControlArea, pause_filter_count, 0x03E);
at!(ControlArea, iopm_base_pa, 0x040);
at!(ControlArea, msrpm_base_pa, 0x048);
at!(ControlArea, tsc_offset, 0x050);
at!(ControlArea, guest_asid, 0x058);
at!(ControlArea, tlb_control, 0x05C);
at!(ControlArea, vintr, 0x060);
at!(ControlArea, interrupt_shadow, 0x068);
at!(ControlArea, exitcode, 0x070);
at!(ControlArea, exitinfo1, 0x078);
at!(ControlArea, exitinfo2, 0x080);
at!(ControlArea, exitintinfo, 0x088);
at!(ControlArea, np_enable, 0x090);
at!(ControlArea, avic_apic_bar, 0x098);
at!(ControlArea, ghcb_pa, 0x0A0);
at!(ControlArea, event_inj, 0x0A8);
at!(ControlArea, n_cr3, 0x0B0);
at!(ControlArea, virt_ext, 0x0B8);
at!(ControlArea, vmcb_clean, 0x0C0);
at!(ControlArea, nrip, 0x0C8);
at!(ControlArea, insn_len, 0x0D0);
at!(ControlArea, insn_bytes, 0x0D1);
at!(ControlArea, avic_backing_page, 0x0E0);
at!(ControlArea, avic_logical_table, 0x0F0);
at!(ControlArea, avic_physical_table, 0x0F8);
at!(ControlArea, vmsa_pa, 0x108);
at!(ControlArea, host_reserved, 0x3E0);

// State-save offsets relative to the area (VMCB offset - 0x400).
at!(StateSaveArea, es, 0x000);
at!(StateSaveArea, cs, 0x010);
at!(StateSaveArea, ss, 0x020);
at!(StateSaveArea, ds, 0x030);
at!(StateSaveArea, fs, 0x040);
at!(StateSaveArea, gs, 0x050);
at!(StateSaveArea, gdtr, 0x060);
at!(StateSaveArea, ldtr, 0x070);
at!(StateSaveArea, idtr, 0x080);
at!(StateSaveArea, tr, 0x090);
at!(StateSaveArea, cpl, 0x0CB);
at!(StateSaveArea, efer, 0x0D0);
at!(StateSaveArea, cr4, 0x148);
at!(StateSaveArea, cr3, 0x150);
at!(StateSaveArea, cr0, 0x158);
at!(StateSaveArea, dr7, 0x160);
at!(StateSaveArea, dr6, 0x168);
at!(StateSaveArea, rflags, 0x170);
at!(StateSaveArea, rip, 0x178);
at!(StateSaveArea, rsp, 0x1D8);
at!(StateSaveArea, s_cet, 0x1E0);
at!(StateSaveArea, ssp, 0x1E8);
at!(StateSaveArea, isst_addr, 0x1F0);
at!(StateSaveArea, rax, 0x1F8);
at!(StateSaveArea, star, 0x200);
at!(StateSaveArea, lstar, 0x208);
at!(StateSaveArea, cstar, 0x210);
at!(StateSaveArea, sfmask, 0x218);
at!(StateSaveArea, kernel_gs_base, 0x220);
at!(StateSaveArea, sysenter_cs, 0x228);
at!(StateSaveArea, sysenter_esp, 0x230);
at!(StateSaveArea, sysenter_eip, 0x238);
at!(StateSaveArea, cr2, 0x240);
at!(StateSaveArea, g_pat, 0x268);
at!(StateSaveArea, dbgctl, 0x270);
at!(StateSaveArea, br_from, 0x278);
at!(StateSaveArea, br_to, 0x280);
at!(StateSaveArea, last_excp_from, 0x288);
at!(StateSaveArea, last_excp_to, 0x290);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_offsets_match_the_apm() {
        // Spot checks of the absolute offsets named in the APM tables.
        assert_eq!(
            offset_of!(Vmcb, save) + offset_of!(StateSaveArea, cpl),
            0x4CB
        );
        assert_eq!(
            offset_of!(Vmcb, save) + offset_of!(StateSaveArea, cr4),
            0x548
        );
        assert_eq!(
            offset_of!(Vmcb, save) + offset_of!(StateSaveArea, rsp),
            0x5D8
        );
        assert_eq!(
            offset_of!(Vmcb, save) + offset_of!(StateSaveArea, rax),
            0x5F8
        );
        assert_eq!(
            offset_of!(Vmcb, save) + offset_of!(StateSaveArea, cr2),
            0x640
        );
        assert_eq!(
            offset_of!(Vmcb, save) + offset_of!(StateSaveArea, g_pat),
            0x668
        );
        assert_eq!(core::mem::align_of::<Vmcb>(), 4096);
    }

    #[test]
    fn zeroed_is_zero() {
        let v = Vmcb::zeroed();
        assert_eq!(v.control.exitcode, 0);
        assert_eq!(v.save.efer, 0);
    }
}
