//! The initial vCPU state of a PVH guest, arch-neutral: the arch backends
//! (VMX, SVM) translate it into a VMCS or VMCB.
//!
//! The PVH boot ABI (Xen's `docs/misc/pvh.pandoc`): 32-bit protected mode
//! with paging off, flat 4 GiB code and data segments, a 32-bit TSS, EBX
//! holding the guest-physical address of `hvm_start_info`, everything else
//! left for the guest to set up (stack, GDT, IDT).

/// A segment register as loaded on entry (base, limit, attributes in the
/// VMX/SVM packed form: bits 0-7 type/S/DPL/P, bits 8-11 AVL/L/D/G, i.e.
/// VMCB-style 12-bit attributes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentState {
    /// Selector (0 for the PVH entry: the guest has no GDT yet).
    pub selector: u16,
    /// Base address.
    pub base: u64,
    /// Limit in bytes (already scaled by the granularity bit).
    pub limit: u32,
    /// Packed attributes: type (0-3), S (4), DPL (5-6), P (7), AVL (8),
    /// L (9), D/B (10), G (11).
    pub attributes: u16,
}

/// A descriptor table register (GDTR or IDTR).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DescriptorTable {
    /// Base address.
    pub base: u64,
    /// Limit in bytes.
    pub limit: u16,
}

/// The registers a vCPU starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitialVcpuState {
    /// Instruction pointer.
    pub rip: u64,
    /// Stack pointer.
    pub rsp: u64,
    /// Flags register.
    pub rflags: u64,
    /// RAX.
    pub rax: u64,
    /// RBX (PVH: the `hvm_start_info` address).
    pub rbx: u64,
    /// RCX.
    pub rcx: u64,
    /// RDX.
    pub rdx: u64,
    /// RSI.
    pub rsi: u64,
    /// RDI.
    pub rdi: u64,
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER MSR.
    pub efer: u64,
    /// CS.
    pub cs: SegmentState,
    /// DS.
    pub ds: SegmentState,
    /// ES.
    pub es: SegmentState,
    /// FS.
    pub fs: SegmentState,
    /// GS.
    pub gs: SegmentState,
    /// SS.
    pub ss: SegmentState,
    /// Task register.
    pub tr: SegmentState,
    /// LDT register.
    pub ldtr: SegmentState,
    /// GDT register.
    pub gdtr: DescriptorTable,
    /// IDT register.
    pub idtr: DescriptorTable,
    /// DR6.
    pub dr6: u64,
    /// DR7.
    pub dr7: u64,
}

/// CR0.PE: protected mode.
pub const CR0_PE: u64 = 1 << 0;
/// CR0.ET: extension type (always 1 on modern CPUs).
pub const CR0_ET: u64 = 1 << 4;
/// RFLAGS bit 1, always set.
pub const RFLAGS_FIXED: u64 = 1 << 1;
/// DR6 value after reset.
pub const DR6_INIT: u64 = 0xffff_0ff0;
/// DR7 value after reset.
pub const DR7_INIT: u64 = 0x400;

/// Flat 32-bit code: execute/read, accessed (type 0xB), S, DPL 0, P, D, G.
pub const ATTR_CODE32: u16 = 0xc9b;
/// Flat data: read/write, accessed (type 0x3), S, DPL 0, P, D/B, G.
pub const ATTR_DATA32: u16 = 0xc93;
/// 32-bit busy TSS (type 0xB), P.
pub const ATTR_TSS32_BUSY: u16 = 0x8b;
/// LDT (type 0x2), P. With limit 0 and selector 0 the LDT holds nothing;
/// Xen loads the LDTR of a PVH vCPU this way (present, so that VMX's entry
/// checks on an LDTR marked usable pass), and SVM takes it as is.
pub const ATTR_LDT: u16 = 0x82;
/// Limit of the flat segments.
pub const FLAT_LIMIT: u32 = 0xffff_ffff;
/// Limit of the TSS (its 104-byte base structure).
pub const TSS_LIMIT: u32 = 0x67;

impl InitialVcpuState {
    /// The PVH boot state: entry at `entry`, EBX = `start_info`.
    ///
    /// 32-bit protected mode, paging off (CR0 = PE|ET, CR4 = 0, EFER = 0),
    /// flat CS (0xC9B) and DS/ES/FS/GS/SS (0xC93) with base 0 and limit
    /// 4 GiB - 1, TR a busy 32-bit TSS at 0 with limit 0x67, LDTR empty
    /// (limit 0, attributes 0x82), RFLAGS = 0x2 (IF, TF, VM clear),
    /// DR6/DR7 at their reset values, all other registers 0.
    pub fn pvh(entry: u32, start_info: u32) -> Self {
        let flat = |attributes| SegmentState {
            selector: 0,
            base: 0,
            limit: FLAT_LIMIT,
            attributes,
        };
        let data = flat(ATTR_DATA32);
        Self {
            rip: entry.into(),
            rsp: 0,
            rflags: RFLAGS_FIXED,
            rax: 0,
            rbx: start_info.into(),
            rcx: 0,
            rdx: 0,
            rsi: 0,
            rdi: 0,
            cr0: CR0_PE | CR0_ET,
            cr3: 0,
            cr4: 0,
            efer: 0,
            cs: flat(ATTR_CODE32),
            ds: data,
            es: data,
            fs: data,
            gs: data,
            ss: data,
            tr: SegmentState {
                selector: 0,
                base: 0,
                limit: TSS_LIMIT,
                attributes: ATTR_TSS32_BUSY,
            },
            ldtr: SegmentState {
                selector: 0,
                base: 0,
                limit: 0,
                attributes: ATTR_LDT,
            },
            gdtr: DescriptorTable::default(),
            idtr: DescriptorTable::default(),
            dr6: DR6_INIT,
            dr7: DR7_INIT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvh_state_matches_the_abi() {
        let s = InitialVcpuState::pvh(0x0100_0850, 0x0010_0000);
        assert_eq!(s.rip, 0x0100_0850);
        assert_eq!(s.rbx, 0x0010_0000);
        assert_eq!(s.cr0, 0x11);
        assert_eq!((s.cr3, s.cr4, s.efer), (0, 0, 0));
        assert_eq!(s.rflags, 0x2);
        assert_eq!(
            s.rflags & (1 << 9 | 1 << 8 | 1 << 17),
            0,
            "IF, TF, VM clear"
        );
        assert_eq!(
            s.cs,
            SegmentState {
                selector: 0,
                base: 0,
                limit: 0xffff_ffff,
                attributes: 0xc9b
            }
        );
        for seg in [s.ds, s.es, s.fs, s.gs, s.ss] {
            assert_eq!(
                (seg.base, seg.limit, seg.attributes),
                (0, 0xffff_ffff, 0xc93)
            );
        }
        assert_eq!((s.tr.base, s.tr.limit, s.tr.attributes), (0, 0x67, 0x8b));
        assert_eq!((s.ldtr.limit, s.ldtr.attributes), (0, 0x82));
        assert_eq!((s.dr6, s.dr7), (0xffff_0ff0, 0x400));
        assert_eq!(
            (s.rax, s.rcx, s.rdx, s.rsi, s.rdi, s.rsp),
            (0, 0, 0, 0, 0, 0)
        );
    }

    #[test]
    fn attributes_decode_as_documented() {
        // type, S, DPL, P, L, D, G
        let decode = |a: u16| {
            (
                a & 0xf,
                (a >> 4) & 1,
                (a >> 5) & 3,
                (a >> 7) & 1,
                (a >> 9) & 1,
                (a >> 10) & 1,
                (a >> 11) & 1,
            )
        };
        assert_eq!(decode(ATTR_CODE32), (0xb, 1, 0, 1, 0, 1, 1));
        assert_eq!(decode(ATTR_DATA32), (0x3, 1, 0, 1, 0, 1, 1));
        assert_eq!(decode(ATTR_TSS32_BUSY), (0xb, 0, 0, 1, 0, 0, 0));
        assert_eq!(decode(ATTR_LDT), (0x2, 0, 0, 1, 0, 0, 0));
    }
}
