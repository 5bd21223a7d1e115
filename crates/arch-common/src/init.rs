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
    pub rbx: u64,
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
            rbx: u64::from(start_info),
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
}
