//! The Virtual-Machine Control Structure: field encodings, typed by width
//! and access, and the [`Vmcs`] trait through which the backend reads and
//! writes them (SDM vol. 3, chapter 25 and appendix B).
//!
//! A field's encoding carries its width (bits 14:13) and type (bits 11:10:
//! control, read-only data, guest state, host state). Every constant below
//! is built by a `const fn` that checks both against the Rust type it gets,
//! so a field put in the wrong group is a build error. Read-only fields
//! ([`Ro32`], [`Ro64`], [`RoN`]) have no write accessor.
//!
//! The hardware implementation is [`crate::vcpu`]'s `CurrentVmcs`
//! (VMREAD/VMWRITE on the current VMCS); the tests use a map.

/// Width bits of an encoding (14:13).
const fn width(enc: u32) -> u32 {
    (enc >> 13) & 3
}

/// Type bits of an encoding (11:10): 1 is read-only data.
const fn kind(enc: u32) -> u32 {
    (enc >> 10) & 3
}

const W16: u32 = 0;
const W64: u32 = 1;
const W32: u32 = 2;
const WNAT: u32 = 3;
const RO: u32 = 1;

macro_rules! field_type {
    ($(#[$m:meta])* $name:ident, $w:expr, $ro:expr) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct $name(pub u32);
        impl $name {
            /// The field with encoding `enc`; fails to build for a field of
            /// another width or access.
            pub const fn new(enc: u32) -> Self {
                assert!(width(enc) == $w, "VMCS field width does not match");
                assert!((kind(enc) == RO) == $ro, "VMCS field access does not match");
                Self(enc)
            }
        }
    };
}

field_type!(
    /// A writable 16-bit field.
    F16, W16, false
);
field_type!(
    /// A writable 32-bit field.
    F32, W32, false
);
field_type!(
    /// A writable 64-bit field.
    F64, W64, false
);
field_type!(
    /// A writable natural-width field.
    FN, WNAT, false
);
field_type!(
    /// A read-only 32-bit field.
    Ro32, W32, true
);
field_type!(
    /// A read-only 64-bit field.
    Ro64, W64, true
);
field_type!(
    /// A read-only natural-width field.
    RoN, WNAT, true
);

/// Raw access to one VMCS.
pub trait Vmcs {
    /// VMREAD of `enc`.
    fn read_raw(&self, enc: u32) -> u64;
    /// VMWRITE of `enc`.
    fn write_raw(&mut self, enc: u32, value: u64);

    /// Reads a 16-bit field.
    fn get16(&self, f: F16) -> u16 {
        self.read_raw(f.0) as u16
    }
    /// Writes a 16-bit field.
    fn set16(&mut self, f: F16, v: u16) {
        self.write_raw(f.0, u64::from(v))
    }
    /// Reads a 32-bit field.
    fn get32(&self, f: F32) -> u32 {
        self.read_raw(f.0) as u32
    }
    /// Writes a 32-bit field.
    fn set32(&mut self, f: F32, v: u32) {
        self.write_raw(f.0, u64::from(v))
    }
    /// Reads a 64-bit field.
    fn get64(&self, f: F64) -> u64 {
        self.read_raw(f.0)
    }
    /// Writes a 64-bit field.
    fn set64(&mut self, f: F64, v: u64) {
        self.write_raw(f.0, v)
    }
    /// Reads a natural-width field.
    fn getn(&self, f: FN) -> u64 {
        self.read_raw(f.0)
    }
    /// Writes a natural-width field.
    fn setn(&mut self, f: FN, v: u64) {
        self.write_raw(f.0, v)
    }
    /// Reads a read-only 32-bit field.
    fn ro32(&self, f: Ro32) -> u32 {
        self.read_raw(f.0) as u32
    }
    /// Reads a read-only 64-bit field.
    fn ro64(&self, f: Ro64) -> u64 {
        self.read_raw(f.0)
    }
    /// Reads a read-only natural-width field.
    fn ron(&self, f: RoN) -> u64 {
        self.read_raw(f.0)
    }
}

/// Control fields (SDM appendix B).
pub mod ctrl {
    use super::*;
    /// Virtual-processor identifier.
    pub const VPID: F16 = F16::new(0x0000);
    /// I/O bitmap A (ports 0-0x7FFF).
    pub const IO_BITMAP_A: F64 = F64::new(0x2000);
    /// I/O bitmap B (ports 0x8000-0xFFFF).
    pub const IO_BITMAP_B: F64 = F64::new(0x2002);
    /// MSR bitmaps.
    pub const MSR_BITMAP: F64 = F64::new(0x2004);
    /// VM-exit MSR-store address.
    pub const EXIT_MSR_STORE_ADDR: F64 = F64::new(0x2006);
    /// VM-exit MSR-load address.
    pub const EXIT_MSR_LOAD_ADDR: F64 = F64::new(0x2008);
    /// VM-entry MSR-load address.
    pub const ENTRY_MSR_LOAD_ADDR: F64 = F64::new(0x200A);
    /// TSC offset.
    pub const TSC_OFFSET: F64 = F64::new(0x2010);
    /// EPT pointer.
    pub const EPT_POINTER: F64 = F64::new(0x201A);
    /// Pin-based VM-execution controls.
    pub const PIN: F32 = F32::new(0x4000);
    /// Primary processor-based VM-execution controls.
    pub const PROC: F32 = F32::new(0x4002);
    /// Exception bitmap.
    pub const EXCEPTION_BITMAP: F32 = F32::new(0x4004);
    /// Page-fault error-code mask.
    pub const PF_ERROR_MASK: F32 = F32::new(0x4006);
    /// Page-fault error-code match.
    pub const PF_ERROR_MATCH: F32 = F32::new(0x4008);
    /// CR3-target count.
    pub const CR3_TARGET_COUNT: F32 = F32::new(0x400A);
    /// VM-exit controls.
    pub const EXIT: F32 = F32::new(0x400C);
    /// VM-exit MSR-store count.
    pub const EXIT_MSR_STORE_COUNT: F32 = F32::new(0x400E);
    /// VM-exit MSR-load count.
    pub const EXIT_MSR_LOAD_COUNT: F32 = F32::new(0x4010);
    /// VM-entry controls.
    pub const ENTRY: F32 = F32::new(0x4012);
    /// VM-entry MSR-load count.
    pub const ENTRY_MSR_LOAD_COUNT: F32 = F32::new(0x4014);
    /// VM-entry interruption-information field.
    pub const ENTRY_INTR_INFO: F32 = F32::new(0x4016);
    /// VM-entry exception error code.
    pub const ENTRY_EXCEPTION_ERROR_CODE: F32 = F32::new(0x4018);
    /// VM-entry instruction length.
    pub const ENTRY_INSTRUCTION_LEN: F32 = F32::new(0x401A);
    /// Secondary processor-based VM-execution controls.
    pub const PROC2: F32 = F32::new(0x401E);
    /// CR0 guest/host mask.
    pub const CR0_MASK: FN = FN::new(0x6000);
    /// CR4 guest/host mask.
    pub const CR4_MASK: FN = FN::new(0x6002);
    /// CR0 read shadow.
    pub const CR0_READ_SHADOW: FN = FN::new(0x6004);
    /// CR4 read shadow.
    pub const CR4_READ_SHADOW: FN = FN::new(0x6006);
}

/// Read-only exit information.
pub mod info {
    use super::*;
    /// Guest-physical address (EPT violations and misconfigurations).
    pub const GUEST_PHYSICAL_ADDRESS: Ro64 = Ro64::new(0x2400);
    /// VM-instruction error.
    pub const VM_INSTRUCTION_ERROR: Ro32 = Ro32::new(0x4400);
    /// Exit reason.
    pub const EXIT_REASON: Ro32 = Ro32::new(0x4402);
    /// VM-exit interruption information.
    pub const EXIT_INTR_INFO: Ro32 = Ro32::new(0x4404);
    /// VM-exit interruption error code.
    pub const EXIT_INTR_ERROR_CODE: Ro32 = Ro32::new(0x4406);
    /// IDT-vectoring information.
    pub const IDT_VECTORING_INFO: Ro32 = Ro32::new(0x4408);
    /// IDT-vectoring error code.
    pub const IDT_VECTORING_ERROR_CODE: Ro32 = Ro32::new(0x440A);
    /// VM-exit instruction length.
    pub const EXIT_INSTRUCTION_LEN: Ro32 = Ro32::new(0x440C);
    /// VM-exit instruction information.
    pub const EXIT_INSTRUCTION_INFO: Ro32 = Ro32::new(0x440E);
    /// Exit qualification.
    pub const EXIT_QUALIFICATION: RoN = RoN::new(0x6400);
    /// Guest-linear address.
    pub const GUEST_LINEAR_ADDRESS: RoN = RoN::new(0x640A);
}

/// One guest segment register's four fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegFields {
    /// Selector.
    pub selector: F16,
    /// Limit.
    pub limit: F32,
    /// Access rights.
    pub ar: F32,
    /// Base.
    pub base: FN,
}

const fn seg(n: u32) -> SegFields {
    SegFields {
        selector: F16::new(0x0800 + 2 * n),
        limit: F32::new(0x4800 + 2 * n),
        ar: F32::new(0x4814 + 2 * n),
        base: FN::new(0x6806 + 2 * n),
    }
}

/// Guest-state fields.
pub mod guest {
    use super::*;
    /// ES.
    pub const ES: SegFields = seg(0);
    /// CS.
    pub const CS: SegFields = seg(1);
    /// SS.
    pub const SS: SegFields = seg(2);
    /// DS.
    pub const DS: SegFields = seg(3);
    /// FS.
    pub const FS: SegFields = seg(4);
    /// GS.
    pub const GS: SegFields = seg(5);
    /// LDTR.
    pub const LDTR: SegFields = seg(6);
    /// TR.
    pub const TR: SegFields = seg(7);
    /// VMCS link pointer (all ones: none).
    pub const VMCS_LINK_POINTER: F64 = F64::new(0x2800);
    /// IA32_DEBUGCTL.
    pub const IA32_DEBUGCTL: F64 = F64::new(0x2802);
    /// IA32_PAT.
    pub const IA32_PAT: F64 = F64::new(0x2804);
    /// IA32_EFER.
    pub const IA32_EFER: F64 = F64::new(0x2806);
    /// PDPTE0 (PAE paging with EPT).
    pub const PDPTE0: F64 = F64::new(0x280A);
    /// PDPTE0-3 (PAE paging with EPT).
    pub const PDPTES: [F64; 4] = [
        F64::new(0x280A),
        F64::new(0x280C),
        F64::new(0x280E),
        F64::new(0x2810),
    ];
    /// GDTR limit.
    pub const GDTR_LIMIT: F32 = F32::new(0x4810);
    /// IDTR limit.
    pub const IDTR_LIMIT: F32 = F32::new(0x4812);
    /// Interruptibility state.
    pub const INTERRUPTIBILITY: F32 = F32::new(0x4824);
    /// Activity state.
    pub const ACTIVITY_STATE: F32 = F32::new(0x4826);
    /// IA32_SYSENTER_CS.
    pub const SYSENTER_CS: F32 = F32::new(0x482A);
    /// CR0.
    pub const CR0: FN = FN::new(0x6800);
    /// CR3.
    pub const CR3: FN = FN::new(0x6802);
    /// CR4.
    pub const CR4: FN = FN::new(0x6804);
    /// GDTR base.
    pub const GDTR_BASE: FN = FN::new(0x6816);
    /// IDTR base.
    pub const IDTR_BASE: FN = FN::new(0x6818);
    /// DR7.
    pub const DR7: FN = FN::new(0x681A);
    /// RSP.
    pub const RSP: FN = FN::new(0x681C);
    /// RIP.
    pub const RIP: FN = FN::new(0x681E);
    /// RFLAGS.
    pub const RFLAGS: FN = FN::new(0x6820);
    /// Pending debug exceptions.
    pub const PENDING_DBG_EXCEPTIONS: FN = FN::new(0x6822);
    /// IA32_SYSENTER_ESP.
    pub const SYSENTER_ESP: FN = FN::new(0x6824);
    /// IA32_SYSENTER_EIP.
    pub const SYSENTER_EIP: FN = FN::new(0x6826);
}

/// Host-state fields: what the CPU loads at every VM exit.
pub mod host {
    use super::*;
    /// ES selector.
    pub const ES: F16 = F16::new(0x0C00);
    /// CS selector.
    pub const CS: F16 = F16::new(0x0C02);
    /// SS selector.
    pub const SS: F16 = F16::new(0x0C04);
    /// DS selector.
    pub const DS: F16 = F16::new(0x0C06);
    /// FS selector.
    pub const FS: F16 = F16::new(0x0C08);
    /// GS selector.
    pub const GS: F16 = F16::new(0x0C0A);
    /// TR selector.
    pub const TR: F16 = F16::new(0x0C0C);
    /// IA32_PAT.
    pub const IA32_PAT: F64 = F64::new(0x2C00);
    /// IA32_EFER.
    pub const IA32_EFER: F64 = F64::new(0x2C02);
    /// IA32_SYSENTER_CS.
    pub const SYSENTER_CS: F32 = F32::new(0x4C00);
    /// CR0.
    pub const CR0: FN = FN::new(0x6C00);
    /// CR3.
    pub const CR3: FN = FN::new(0x6C02);
    /// CR4.
    pub const CR4: FN = FN::new(0x6C04);
    /// FS base.
    pub const FS_BASE: FN = FN::new(0x6C06);
    /// GS base.
    pub const GS_BASE: FN = FN::new(0x6C08);
    /// TR base.
    pub const TR_BASE: FN = FN::new(0x6C0A);
    /// GDTR base.
    pub const GDTR_BASE: FN = FN::new(0x6C0C);
    /// IDTR base.
    pub const IDTR_BASE: FN = FN::new(0x6C0E);
    /// IA32_SYSENTER_ESP.
    pub const SYSENTER_ESP: FN = FN::new(0x6C10);
    /// IA32_SYSENTER_EIP.
    pub const SYSENTER_EIP: FN = FN::new(0x6C12);
    /// RSP (written by the entry routine itself).
    pub const RSP: FN = FN::new(0x6C14);
    /// RIP (the entry routine's exit label).
    pub const RIP: FN = FN::new(0x6C16);
}

/// Pin-based VM-execution controls (SDM 25.6.1).
pub mod pin {
    /// External interrupts cause VM exits.
    pub const EXT_INTR_EXITING: u32 = 1 << 0;
    /// NMIs cause VM exits.
    pub const NMI_EXITING: u32 = 1 << 3;
    /// Virtual NMIs.
    pub const VIRTUAL_NMIS: u32 = 1 << 5;
    /// VMX-preemption timer.
    pub const PREEMPTION_TIMER: u32 = 1 << 6;
}

/// Primary processor-based VM-execution controls (SDM 25.6.2).
pub mod proc {
    /// Exit when the guest can take an interrupt.
    pub const INTR_WINDOW_EXITING: u32 = 1 << 2;
    /// TSC offsetting.
    pub const TSC_OFFSETTING: u32 = 1 << 3;
    /// HLT exits.
    pub const HLT_EXITING: u32 = 1 << 7;
    /// INVLPG exits.
    pub const INVLPG_EXITING: u32 = 1 << 9;
    /// MWAIT exits.
    pub const MWAIT_EXITING: u32 = 1 << 10;
    /// RDPMC exits.
    pub const RDPMC_EXITING: u32 = 1 << 11;
    /// RDTSC exits.
    pub const RDTSC_EXITING: u32 = 1 << 12;
    /// MOV to CR3 exits.
    pub const CR3_LOAD_EXITING: u32 = 1 << 15;
    /// MOV from CR3 exits.
    pub const CR3_STORE_EXITING: u32 = 1 << 16;
    /// MOV to CR8 exits.
    pub const CR8_LOAD_EXITING: u32 = 1 << 19;
    /// MOV from CR8 exits.
    pub const CR8_STORE_EXITING: u32 = 1 << 20;
    /// MOV DR exits.
    pub const MOV_DR_EXITING: u32 = 1 << 23;
    /// Every I/O instruction exits.
    pub const UNCOND_IO_EXITING: u32 = 1 << 24;
    /// I/O exits per the I/O bitmaps.
    pub const USE_IO_BITMAPS: u32 = 1 << 25;
    /// Monitor trap flag.
    pub const MONITOR_TRAP_FLAG: u32 = 1 << 27;
    /// MSR exits per the MSR bitmaps.
    pub const USE_MSR_BITMAPS: u32 = 1 << 28;
    /// MONITOR exits.
    pub const MONITOR_EXITING: u32 = 1 << 29;
    /// PAUSE exits.
    pub const PAUSE_EXITING: u32 = 1 << 30;
    /// The secondary controls apply.
    pub const SECONDARY: u32 = 1 << 31;
}

/// Secondary processor-based VM-execution controls (SDM 25.6.2).
pub mod proc2 {
    /// EPT.
    pub const EPT: u32 = 1 << 1;
    /// Descriptor-table exiting.
    pub const DESC_TABLE_EXITING: u32 = 1 << 2;
    /// RDTSCP does not #UD.
    pub const RDTSCP: u32 = 1 << 3;
    /// VPID.
    pub const VPID: u32 = 1 << 5;
    /// WBINVD exits.
    pub const WBINVD_EXITING: u32 = 1 << 6;
    /// Unrestricted guest (real mode and unpaged protected mode).
    pub const UNRESTRICTED_GUEST: u32 = 1 << 7;
    /// INVPCID does not #UD.
    pub const INVPCID: u32 = 1 << 12;
    /// XSAVES/XRSTORS do not #UD.
    pub const XSAVES: u32 = 1 << 20;
}

/// VM-exit controls (SDM 25.7.1).
pub mod exit_ctl {
    /// Save DR7 and IA32_DEBUGCTL.
    pub const SAVE_DEBUG: u32 = 1 << 2;
    /// The host runs in 64-bit mode after the exit.
    pub const HOST_ADDR_SPACE_SIZE: u32 = 1 << 9;
    /// Acknowledge the interrupt on exit.
    pub const ACK_INTR_ON_EXIT: u32 = 1 << 15;
    /// Save the guest's IA32_PAT.
    pub const SAVE_PAT: u32 = 1 << 18;
    /// Load the host's IA32_PAT.
    pub const LOAD_PAT: u32 = 1 << 19;
    /// Save the guest's IA32_EFER.
    pub const SAVE_EFER: u32 = 1 << 20;
    /// Load the host's IA32_EFER.
    pub const LOAD_EFER: u32 = 1 << 21;
}

/// VM-entry controls (SDM 25.8.1).
pub mod entry_ctl {
    /// Load DR7 and IA32_DEBUGCTL.
    pub const LOAD_DEBUG: u32 = 1 << 2;
    /// The guest is in IA-32e mode (must equal guest EFER.LMA).
    pub const IA32E_MODE_GUEST: u32 = 1 << 9;
    /// Load the guest's IA32_PAT.
    pub const LOAD_PAT: u32 = 1 << 14;
    /// Load the guest's IA32_EFER.
    pub const LOAD_EFER: u32 = 1 << 15;
}

/// Interruptibility-state bits (SDM 25.4.2).
pub mod interruptibility {
    /// Blocking by STI.
    pub const STI: u32 = 1 << 0;
    /// Blocking by MOV SS / POP SS.
    pub const MOV_SS: u32 = 1 << 1;
    /// Blocking by SMI.
    pub const SMI: u32 = 1 << 2;
    /// Blocking by NMI.
    pub const NMI: u32 = 1 << 3;
}

/// Converts packed 12-bit segment attributes (the VMCB's and
/// [`arch_common::init::SegmentInit`]'s form) to VMX access rights:
/// bits 7:0 stay, bits 11:8 move to 15:12; zero attributes are "unusable"
/// (bit 16).
pub const fn access_rights(attrib: u16) -> u32 {
    if attrib == 0 {
        return AR_UNUSABLE;
    }
    let a = attrib as u32;
    (a & 0xFF) | ((a & 0xF00) << 4)
}

/// Access-rights bit 16: the segment is unusable.
pub const AR_UNUSABLE: u32 = 1 << 16;
/// Access-rights bit 13: 64-bit code segment.
pub const AR_L: u32 = 1 << 13;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A VMCS in a map, for host tests.
    #[derive(Default, Debug)]
    pub struct MapVmcs(pub HashMap<u32, u64>);

    impl Vmcs for MapVmcs {
        fn read_raw(&self, enc: u32) -> u64 {
            self.0.get(&enc).copied().unwrap_or(0)
        }
        fn write_raw(&mut self, enc: u32, value: u64) {
            self.0.insert(enc, value);
        }
    }

    #[test]
    fn encodings_follow_appendix_b() {
        assert_eq!(guest::TR.selector.0, 0x080E);
        assert_eq!(guest::TR.ar.0, 0x4822);
        assert_eq!(guest::TR.base.0, 0x6814);
        assert_eq!(guest::LDTR.limit.0, 0x480C);
        assert_eq!(guest::CS.ar.0, 0x4816);
        assert_eq!(guest::ES.base.0, 0x6806);
    }

    #[test]
    fn access_rights_from_packed_attributes() {
        assert_eq!(access_rights(0xC9B), 0xC09B);
        assert_eq!(access_rights(0xC93), 0xC093);
        assert_eq!(access_rights(0xA9B), 0xA09B);
        assert_eq!(access_rights(0x8B), 0x8B);
        assert_eq!(access_rights(0), AR_UNUSABLE);
    }

    #[test]
    fn typed_accessors_truncate_to_width() {
        let mut v = MapVmcs::default();
        v.write_raw(guest::CS.selector.0, 0x1_0008);
        assert_eq!(v.get16(guest::CS.selector), 8);
        v.set32(ctrl::PIN, 0x16);
        assert_eq!(v.0[&0x4000], 0x16);
        assert_eq!(v.ro32(info::EXIT_REASON), 0);
    }
}
