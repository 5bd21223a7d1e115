//! A vCPU's initial architectural state, as both backends take it (what a
//! PVH boot or `VCPUOP_initialise` sets). Segment attributes use the packed
//! 12-bit form (the VMCB's); arch-vmx widens them to VMX access rights.

/// A segment register's initial value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentInit {
    /// The selector.
    pub selector: u16,
    /// The base.
    pub base: u64,
    /// The limit in bytes.
    pub limit: u32,
    /// Packed 12-bit attributes (type, S, DPL, P, AVL, L, D/B, G).
    pub attrib: u16,
}

/// A descriptor table register's initial value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableInit {
    /// The base.
    pub base: u64,
    /// The limit.
    pub limit: u16,
}

/// A vCPU's initial architectural state (what a PVH boot or
/// `VCPUOP_initialise` sets); everything not named starts at zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct VcpuInit {
    pub rip: u64,
    /// RAX to R15 (the PVH boot sets RBX only).
    pub gprs: hv_core::arch::Gprs,
    pub rflags: u64,
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub cs: SegmentInit,
    pub ds: SegmentInit,
    pub es: SegmentInit,
    pub fs: SegmentInit,
    pub gs: SegmentInit,
    pub ss: SegmentInit,
    pub tr: SegmentInit,
    pub ldtr: SegmentInit,
    pub gdtr: TableInit,
    pub idtr: TableInit,
    pub dr6: u64,
    pub dr7: u64,
}

impl VcpuInit {
    /// The PVH entry state: 32-bit protected mode, paging off, flat 4 GiB
    /// segments, EBX = the `hvm_start_info` address.
    pub fn pvh(entry: u32, start_info: u32) -> Self {
        let flat = |selector, attrib| SegmentInit {
            selector,
            base: 0,
            limit: 0xFFFF_FFFF,
            attrib,
        };
        VcpuInit {
            rip: u64::from(entry),
            gprs: hv_core::arch::Gprs {
                rbx: u64::from(start_info),
                ..Default::default()
            },
            rflags: 0x2,
            cr0: 0x11, // PE | ET
            cs: flat(0x10, 0xC9B),
            ds: flat(0x18, 0xC93),
            es: flat(0x18, 0xC93),
            fs: flat(0x18, 0xC93),
            gs: flat(0x18, 0xC93),
            ss: flat(0x18, 0xC93),
            tr: SegmentInit {
                selector: 0x20,
                base: 0,
                limit: 0x67,
                attrib: 0x8B,
            },
            dr6: 0xFFFF_0FF0,
            dr7: 0x400,
            ..Default::default()
        }
    }

    /// The state of a `VCPUOP_initialise` context that hv-core checked
    /// (`hv_core::vcpu_op::check_hvm_context`): the 32-bit mode's segments
    /// as given, the 64-bit mode's flat ones (Xen's: CS 0xA9B, data 0xC93,
    /// a busy 64-bit TSS of 0x67 bytes); FS and GS as DS, the descriptor
    /// tables and LDTR as after INIT.
    pub fn from_hvm_context(ctx: &xen_abi::vcpu::VcpuHvmContext) -> Self {
        use xen_abi::vcpu::VCPU_HVM_MODE_32B;
        let seg = |base: u32, limit: u32, attrib: u16| SegmentInit {
            selector: 0,
            base: u64::from(base),
            limit,
            attrib,
        };
        let mut init = VcpuInit {
            ldtr: SegmentInit {
                selector: 0,
                base: 0,
                limit: 0xFFFF,
                attrib: 0x82,
            },
            gdtr: TableInit {
                base: 0,
                limit: 0xFFFF,
            },
            idtr: TableInit {
                base: 0,
                limit: 0xFFFF,
            },
            dr6: 0xFFFF_0FF0,
            dr7: 0x400,
            ..Default::default()
        };
        if ctx.mode == VCPU_HVM_MODE_32B {
            let r = ctx.x86_32();
            init.gprs = hv_core::arch::Gprs {
                rax: r.eax.into(),
                rcx: r.ecx.into(),
                rdx: r.edx.into(),
                rbx: r.ebx.into(),
                rsp: r.esp.into(),
                rbp: r.ebp.into(),
                rsi: r.esi.into(),
                rdi: r.edi.into(),
                ..Default::default()
            };
            init.rip = r.eip.into();
            init.rflags = r.eflags.into();
            (init.cr0, init.cr3, init.cr4, init.efer) =
                (r.cr0.into(), r.cr3.into(), r.cr4.into(), r.efer);
            init.cs = seg(r.cs_base, r.cs_limit, r.cs_ar);
            init.ds = seg(r.ds_base, r.ds_limit, r.ds_ar);
            init.ss = seg(r.ss_base, r.ss_limit, r.ss_ar);
            init.es = seg(r.es_base, r.es_limit, r.es_ar);
            init.tr = seg(r.tr_base, r.tr_limit, r.tr_ar);
        } else {
            let r = ctx.x86_64();
            init.gprs = hv_core::arch::Gprs {
                rax: r.rax,
                rcx: r.rcx,
                rdx: r.rdx,
                rbx: r.rbx,
                rsp: r.rsp,
                rbp: r.rbp,
                rsi: r.rsi,
                rdi: r.rdi,
                ..Default::default()
            };
            init.rip = r.rip;
            init.rflags = r.rflags;
            (init.cr0, init.cr3, init.cr4, init.efer) = (r.cr0, r.cr3, r.cr4, r.efer);
            init.cs = seg(0, u32::MAX, 0xA9B);
            init.ds = seg(0, u32::MAX, 0xC93);
            init.ss = init.ds;
            init.es = init.ds;
            init.tr = seg(0, 0x67, 0x8B);
        }
        init.fs = init.ds;
        init.gs = init.ds;
        init
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xen_abi::vcpu::{VcpuHvmContext, VcpuHvmX86_32, VcpuHvmX86_64};

    #[test]
    fn sixty_four_bit_context_is_flat_long_mode() {
        let i = VcpuInit::from_hvm_context(&VcpuHvmContext::new_64(VcpuHvmX86_64 {
            rip: 0xFFFF_8000_0000_1000,
            rsp: 0x7000,
            rdi: 9,
            rflags: 0x202,
            cr0: 0x8000_0011,
            cr3: 0x5000,
            cr4: 0x20,
            efer: 0x500,
            ..Default::default()
        }));
        assert_eq!(
            (i.rip, i.gprs.rsp, i.gprs.rdi, i.rflags),
            (0xFFFF_8000_0000_1000, 0x7000, 9, 0x202)
        );
        assert_eq!(
            (i.cr0, i.cr3, i.cr4, i.efer),
            (0x8000_0011, 0x5000, 0x20, 0x500)
        );
        assert_eq!(
            (i.cs.attrib, i.ds.attrib, i.ss.attrib),
            (0xA9B, 0xC93, 0xC93)
        );
        assert_eq!((i.tr.attrib, i.tr.limit), (0x8B, 0x67));
        assert_eq!(i.fs, i.ds);
    }

    #[test]
    fn thirty_two_bit_context_keeps_its_segments() {
        let i = VcpuInit::from_hvm_context(&VcpuHvmContext::new_32(VcpuHvmX86_32 {
            eip: 0x1234,
            esp: 0x8000,
            ebx: 0xABCD,
            eflags: 0x2,
            cr0: 0x11,
            cs_base: 0x1_0000,
            cs_limit: 0xFFFF,
            cs_ar: 0x9B,
            ds_limit: 0xFFFF_FFFF,
            ds_ar: 0xC93,
            ss_limit: 0xFFFF_FFFF,
            ss_ar: 0xC93,
            tr_limit: 0x67,
            tr_ar: 0x8B,
            ..Default::default()
        }));
        assert_eq!((i.rip, i.gprs.rsp, i.gprs.rbx), (0x1234, 0x8000, 0xABCD));
        assert_eq!(
            (i.cs.base, i.cs.limit, i.cs.attrib),
            (0x1_0000, 0xFFFF, 0x9B)
        );
        assert_eq!(i.es.attrib, 0);
        assert_eq!((i.ldtr.attrib, i.gdtr.limit), (0x82, 0xFFFF));
    }
}
