//! The `vcpu_op` hypercall: `xen/include/public/vcpu.h`, and the HVM vCPU
//! start context of `xen/include/public/hvm/hvm_vcpu.h`.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Set the initial context of an offline vCPU; for HVM/PVH guests the
/// argument is a [`VcpuHvmContext`] (vcpu.h `VCPUOP_initialise`).
pub const VCPUOP_initialise: u32 = 0;
/// Bring an initialised vCPU up (vcpu.h `VCPUOP_up`).
pub const VCPUOP_up: u32 = 1;
/// Take a vCPU down (vcpu.h `VCPUOP_down`).
pub const VCPUOP_down: u32 = 2;
/// Returns 1 if the vCPU is up, else 0 (vcpu.h `VCPUOP_is_up`).
pub const VCPUOP_is_up: u32 = 3;
/// Copy out a [`VcpuRunstateInfo`] (vcpu.h `VCPUOP_get_runstate_info`).
pub const VCPUOP_get_runstate_info: u32 = 4;
/// Register where the hypervisor keeps a [`VcpuRunstateInfo`] up to date,
/// argument [`VcpuRegisterRunstateMemoryArea`] (vcpu.h `VCPUOP_register_runstate_memory_area`).
pub const VCPUOP_register_runstate_memory_area: u32 = 5;
/// Start a periodic timer, argument [`VcpuSetPeriodicTimer`] (vcpu.h `VCPUOP_set_periodic_timer`).
pub const VCPUOP_set_periodic_timer: u32 = 6;
/// Stop the periodic timer (vcpu.h `VCPUOP_stop_periodic_timer`).
pub const VCPUOP_stop_periodic_timer: u32 = 7;
/// Arm the one-shot timer, argument [`VcpuSetSingleshotTimer`] (vcpu.h `VCPUOP_set_singleshot_timer`).
pub const VCPUOP_set_singleshot_timer: u32 = 8;
/// Disarm the one-shot timer (vcpu.h `VCPUOP_stop_singleshot_timer`).
pub const VCPUOP_stop_singleshot_timer: u32 = 9;
/// Move the vCPU's `vcpu_info` to guest memory, argument
/// [`VcpuRegisterVcpuInfo`] (vcpu.h `VCPUOP_register_vcpu_info`).
pub const VCPUOP_register_vcpu_info: u32 = 10;
/// Send an NMI to a vCPU (vcpu.h `VCPUOP_send_nmi`).
pub const VCPUOP_send_nmi: u32 = 11;
/// Physical CPU id, argument [`VcpuGetPhysid`] (vcpu.h `VCPUOP_get_physid`).
pub const VCPUOP_get_physid: u32 = 12;
/// Register a second `vcpu_time_info` copy by virtual address, argument
/// [`VcpuRegisterTimeMemoryArea`] (vcpu.h `VCPUOP_register_vcpu_time_memory_area`).
pub const VCPUOP_register_vcpu_time_memory_area: u32 = 13;
/// Register the runstate area by guest-physical address (vcpu.h `VCPUOP_register_runstate_phys_area`).
pub const VCPUOP_register_runstate_phys_area: u32 = 14;
/// Register the time area by guest-physical address (vcpu.h `VCPUOP_register_vcpu_time_phys_area`).
pub const VCPUOP_register_vcpu_time_phys_area: u32 = 15;

/// Runstate: running on a physical CPU (vcpu.h `RUNSTATE_running`).
pub const RUNSTATE_running: i32 = 0;
/// Runstate: runnable, waiting for a CPU (vcpu.h `RUNSTATE_runnable`).
pub const RUNSTATE_runnable: i32 = 1;
/// Runstate: blocked (vcpu.h `RUNSTATE_blocked`).
pub const RUNSTATE_blocked: i32 = 2;
/// Runstate: offline (vcpu.h `RUNSTATE_offline`).
pub const RUNSTATE_offline: i32 = 3;
/// Set in `state_entry_time` while the hypervisor updates the record
/// (vcpu.h `XEN_RUNSTATE_UPDATE`).
pub const XEN_RUNSTATE_UPDATE: u64 = 1 << 63;
/// One-shot timer flag: fail with `-ETIME` if the deadline has passed
/// (vcpu.h `VCPU_SSHOTTMR_future`).
pub const VCPU_SSHOTTMR_future: u32 = 1 << 0;

/// Time accounting of a vCPU (vcpu.h `struct vcpu_runstate_info`, 48 bytes).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct VcpuRunstateInfo {
    /// Current `RUNSTATE_*` (kept as an integer).
    pub state: i32,
    /// Padding.
    pub pad: u32,
    /// System time when `state` was entered; top bit is `XEN_RUNSTATE_UPDATE`.
    pub state_entry_time: u64,
    /// Nanoseconds spent in each runstate.
    pub time: [u64; 4],
}
crate::assert_layout!(VcpuRunstateInfo, 48, { state: 0, pad: 4, state_entry_time: 8, time: 16 });

/// Argument of `VCPUOP_register_runstate_memory_area`
/// (vcpu.h `struct vcpu_register_runstate_memory_area`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct VcpuRegisterRunstateMemoryArea {
    /// Guest virtual address of a [`VcpuRunstateInfo`] (union `addr`).
    pub addr: u64,
}
crate::assert_layout!(VcpuRegisterRunstateMemoryArea, 8, { addr: 0 });

/// Argument of `VCPUOP_register_vcpu_time_memory_area`
/// (vcpu.h `struct vcpu_register_time_memory_area`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct VcpuRegisterTimeMemoryArea {
    /// Guest virtual address of a `vcpu_time_info` (union `addr`).
    pub addr: u64,
}
crate::assert_layout!(VcpuRegisterTimeMemoryArea, 8, { addr: 0 });

/// Argument of `VCPUOP_set_periodic_timer` (vcpu.h `struct vcpu_set_periodic_timer`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct VcpuSetPeriodicTimer {
    /// Period in ns.
    pub period_ns: u64,
}
crate::assert_layout!(VcpuSetPeriodicTimer, 8, { period_ns: 0 });

/// Argument of `VCPUOP_set_singleshot_timer` (vcpu.h `struct vcpu_set_singleshot_timer`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct VcpuSetSingleshotTimer {
    /// Absolute deadline in system time (ns).
    pub timeout_abs_ns: u64,
    /// `VCPU_SSHOTTMR_*` flags.
    pub flags: u32,
    /// Padding.
    pub pad: u32,
}
crate::assert_layout!(VcpuSetSingleshotTimer, 16, { timeout_abs_ns: 0, flags: 8, pad: 12 });

/// Argument of `VCPUOP_register_vcpu_info` (vcpu.h `struct vcpu_register_vcpu_info`).
/// The 64-byte `vcpu_info` at `mfn`/`offset` must not cross a page.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct VcpuRegisterVcpuInfo {
    /// Guest frame holding the new `vcpu_info`.
    pub mfn: u64,
    /// Offset within that frame.
    pub offset: u32,
    /// Reserved, zero.
    pub rsvd: u32,
}
crate::assert_layout!(VcpuRegisterVcpuInfo, 16, { mfn: 0, offset: 8, rsvd: 12 });

impl VcpuRegisterVcpuInfo {
    /// Whether a `vcpu_info` of `size` bytes at `offset` stays inside one
    /// page of `page_size` bytes. Total on any input.
    pub fn fits_in_page(&self, size: u32, page_size: u32) -> bool {
        self.offset
            .checked_add(size)
            .is_some_and(|end| end <= page_size)
    }
}

/// Argument of `VCPUOP_get_physid` (vcpu.h `struct vcpu_get_physid`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct VcpuGetPhysid {
    /// Low 32 bits: APIC id; high 32 bits: ACPI id.
    pub phys_id: u64,
}
crate::assert_layout!(VcpuGetPhysid, 8, { phys_id: 0 });

/// [`VcpuHvmContext::mode`]: start in 32-bit protected mode (hvm_vcpu.h `VCPU_HVM_MODE_32B`).
pub const VCPU_HVM_MODE_32B: u32 = 0;
/// [`VcpuHvmContext::mode`]: start in 64-bit mode (hvm_vcpu.h `VCPU_HVM_MODE_64B`).
pub const VCPU_HVM_MODE_64B: u32 = 1;

/// 32-bit start state of an HVM vCPU (hvm_vcpu.h `struct vcpu_hvm_x86_32`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct VcpuHvmX86_32 {
    /// Initial `eax`.
    pub eax: u32,
    /// Initial `ecx`.
    pub ecx: u32,
    /// Initial `edx`.
    pub edx: u32,
    /// Initial `ebx`.
    pub ebx: u32,
    /// Initial `esp`.
    pub esp: u32,
    /// Initial `ebp`.
    pub ebp: u32,
    /// Initial `esi`.
    pub esi: u32,
    /// Initial `edi`.
    pub edi: u32,
    /// Initial `eip`.
    pub eip: u32,
    /// Initial `eflags`.
    pub eflags: u32,
    /// Initial `cr0`.
    pub cr0: u32,
    /// Initial `cr3`.
    pub cr3: u32,
    /// Initial `cr4`.
    pub cr4: u32,
    /// Padding.
    pub pad1: u32,
    /// Initial `efer`.
    pub efer: u64,
    /// CS segment base.
    pub cs_base: u32,
    /// DS segment base.
    pub ds_base: u32,
    /// SS segment base.
    pub ss_base: u32,
    /// ES segment base.
    pub es_base: u32,
    /// TR segment base.
    pub tr_base: u32,
    /// CS segment limit.
    pub cs_limit: u32,
    /// DS segment limit.
    pub ds_limit: u32,
    /// SS segment limit.
    pub ss_limit: u32,
    /// ES segment limit.
    pub es_limit: u32,
    /// TR segment limit.
    pub tr_limit: u32,
    /// CS segment attributes: descriptor bits 40-47 in bits 0-7, bits 52-55 in bits 8-11.
    pub cs_ar: u16,
    /// DS segment attributes: descriptor bits 40-47 in bits 0-7, bits 52-55 in bits 8-11.
    pub ds_ar: u16,
    /// SS segment attributes: descriptor bits 40-47 in bits 0-7, bits 52-55 in bits 8-11.
    pub ss_ar: u16,
    /// ES segment attributes: descriptor bits 40-47 in bits 0-7, bits 52-55 in bits 8-11.
    pub es_ar: u16,
    /// TR segment attributes: descriptor bits 40-47 in bits 0-7, bits 52-55 in bits 8-11.
    pub tr_ar: u16,
    /// Padding.
    pub pad2: [u16; 3],
}
crate::assert_layout!(VcpuHvmX86_32, 120, {
    eax: 0, ecx: 4, edx: 8, ebx: 12, esp: 16, ebp: 20, esi: 24, edi: 28, eip: 32,
    eflags: 36, cr0: 40, cr3: 44, cr4: 48, pad1: 52, efer: 56, cs_base: 64, ds_base: 68,
    ss_base: 72, es_base: 76, tr_base: 80, cs_limit: 84, ds_limit: 88, ss_limit: 92,
    es_limit: 96, tr_limit: 100, cs_ar: 104, ds_ar: 106, ss_ar: 108, es_ar: 110, tr_ar: 112,
    pad2: 114,
});

/// 64-bit start state of an HVM vCPU (hvm_vcpu.h `struct vcpu_hvm_x86_64`).
/// Segments are flat; CS is 64-bit code.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct VcpuHvmX86_64 {
    /// Initial `rax`.
    pub rax: u64,
    /// Initial `rcx`.
    pub rcx: u64,
    /// Initial `rdx`.
    pub rdx: u64,
    /// Initial `rbx`.
    pub rbx: u64,
    /// Initial `rsp`.
    pub rsp: u64,
    /// Initial `rbp`.
    pub rbp: u64,
    /// Initial `rsi`.
    pub rsi: u64,
    /// Initial `rdi`.
    pub rdi: u64,
    /// Initial `rip`.
    pub rip: u64,
    /// Initial `rflags`.
    pub rflags: u64,
    /// Initial `cr0`.
    pub cr0: u64,
    /// Initial `cr3`.
    pub cr3: u64,
    /// Initial `cr4`.
    pub cr4: u64,
    /// Initial `efer`.
    pub efer: u64,
}
crate::assert_layout!(VcpuHvmX86_64, 112, {
    rax: 0, rcx: 8, rdx: 16, rbx: 24, rsp: 32, rbp: 40, rsi: 48, rdi: 56, rip: 64,
    rflags: 72, cr0: 80, cr3: 88, cr4: 96, efer: 104,
});

/// Argument of `VCPUOP_initialise` for HVM and PVH guests
/// (hvm_vcpu.h `struct vcpu_hvm_context`, 128 bytes). The C union
/// `cpu_regs` is kept as raw words; read it with
/// [`VcpuHvmContext::x86_32`]/[`VcpuHvmContext::x86_64`] according to `mode`.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct VcpuHvmContext {
    /// `VCPU_HVM_MODE_*` (kept as an integer).
    pub mode: u32,
    /// Padding.
    pub pad: u32,
    /// The union of [`VcpuHvmX86_32`] and [`VcpuHvmX86_64`].
    pub cpu_regs: [u64; 15],
}
crate::assert_layout!(VcpuHvmContext, 128, { mode: 0, pad: 4, cpu_regs: 8 });

impl VcpuHvmContext {
    /// The registers read as the 32-bit layout (whatever `mode` says).
    pub fn x86_32(&self) -> VcpuHvmX86_32 {
        zerocopy::transmute!(self.cpu_regs)
    }
    /// The registers read as the 64-bit layout (whatever `mode` says).
    pub fn x86_64(&self) -> VcpuHvmX86_64 {
        // The 64-bit layout is the first 112 of the union's 120 bytes.
        let mut words = [0u64; 14];
        words.copy_from_slice(&self.cpu_regs[..14]);
        zerocopy::transmute!(words)
    }
    /// A context starting in 32-bit mode.
    pub fn new_32(regs: VcpuHvmX86_32) -> Self {
        Self {
            mode: VCPU_HVM_MODE_32B,
            pad: 0,
            cpu_regs: zerocopy::transmute!(regs),
        }
    }
    /// A context starting in 64-bit mode.
    pub fn new_64(regs: VcpuHvmX86_64) -> Self {
        let mut cpu_regs = [0u64; 15];
        let words: [u64; 14] = zerocopy::transmute!(regs);
        cpu_regs[..14].copy_from_slice(&words);
        Self {
            mode: VCPU_HVM_MODE_64B,
            pad: 0,
            cpu_regs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hvm_context_views() {
        let regs = VcpuHvmX86_64 {
            rip: 0x1000,
            rbx: 0x2000,
            efer: 0x500,
            ..Default::default()
        };
        let ctx = VcpuHvmContext::new_64(regs);
        assert_eq!(ctx.x86_64(), regs);
        let bytes = ctx.as_bytes();
        assert_eq!(&bytes[0..4], &1u32.to_le_bytes());
        assert_eq!(&bytes[8 + 64..8 + 72], &0x1000u64.to_le_bytes());
        let back = VcpuHvmContext::read_from_bytes(bytes).unwrap();
        assert_eq!(back, ctx);

        let r32 = VcpuHvmX86_32 {
            eip: 0x10_0000,
            cs_ar: 0xc9b,
            tr_limit: 0x67,
            ..Default::default()
        };
        let ctx = VcpuHvmContext::new_32(r32);
        assert_eq!(ctx.mode, VCPU_HVM_MODE_32B);
        assert_eq!(ctx.x86_32(), r32);
        assert_eq!(&ctx.as_bytes()[8 + 104..8 + 106], &0xc9bu16.to_le_bytes());
    }

    #[test]
    fn hvm_context_from_short_or_misaligned_bytes() {
        let buf = [0xAAu8; 129];
        assert!(VcpuHvmContext::read_from_bytes(&buf[..127]).is_err());
        // Any 128 bytes are a valid value, even at an odd address (copied).
        let ctx = VcpuHvmContext::read_from_bytes(&buf[1..]).unwrap();
        assert_eq!(ctx.mode, 0xAAAA_AAAA);
    }

    #[test]
    fn vcpu_info_page_check() {
        let r = VcpuRegisterVcpuInfo {
            mfn: 5,
            offset: 4096 - 64,
            rsvd: 0,
        };
        assert!(r.fits_in_page(64, 4096));
        let r = VcpuRegisterVcpuInfo {
            offset: 4096 - 63,
            ..r
        };
        assert!(!r.fits_in_page(64, 4096));
        let r = VcpuRegisterVcpuInfo {
            offset: u32::MAX,
            ..r
        };
        assert!(!r.fits_in_page(64, 4096));
    }
}
