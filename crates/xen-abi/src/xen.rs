//! The core of Xen's public ABI: `xen/include/public/xen.h`, with the x86
//! parts from `arch-x86/xen.h` and `arch-x86/xen-x86_64.h`.
//!
//! Hypercall numbers, reserved domain ids, virtual IRQs, the console
//! hypercall's commands, and the shared-info page with its per-vCPU
//! `vcpu_info` and pvclock `vcpu_time_info`.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A domain id (xen.h `domid_t`).
pub type Domid = u16;
/// A guest page frame number (arch-x86/xen.h `xen_pfn_t`, 64-bit on x86_64).
pub type XenPfn = u64;
/// Xen's native unsigned word (arch-x86/xen.h `xen_ulong_t`).
pub type XenUlong = u64;

// ---------------------------------------------------------------------------
// Hypercall numbers (xen.h `__HYPERVISOR_*`). The number goes in RAX.
// ---------------------------------------------------------------------------

/// PV trap table (xen.h `__HYPERVISOR_set_trap_table`).
pub const __HYPERVISOR_set_trap_table: u32 = 0;
/// PV page-table updates (xen.h `__HYPERVISOR_mmu_update`).
pub const __HYPERVISOR_mmu_update: u32 = 1;
/// PV GDT (xen.h `__HYPERVISOR_set_gdt`).
pub const __HYPERVISOR_set_gdt: u32 = 2;
/// PV kernel stack switch (xen.h `__HYPERVISOR_stack_switch`).
pub const __HYPERVISOR_stack_switch: u32 = 3;
/// PV callbacks (xen.h `__HYPERVISOR_set_callbacks`).
pub const __HYPERVISOR_set_callbacks: u32 = 4;
/// PV lazy FPU switch (xen.h `__HYPERVISOR_fpu_taskswitch`).
pub const __HYPERVISOR_fpu_taskswitch: u32 = 5;
/// Old scheduler operation, kept for compatibility (xen.h `__HYPERVISOR_sched_op_compat`).
pub const __HYPERVISOR_sched_op_compat: u32 = 6;
/// Platform operation, dom0 only (xen.h `__HYPERVISOR_platform_op`).
pub const __HYPERVISOR_platform_op: u32 = 7;
/// Set a debug register (xen.h `__HYPERVISOR_set_debugreg`).
pub const __HYPERVISOR_set_debugreg: u32 = 8;
/// Read a debug register (xen.h `__HYPERVISOR_get_debugreg`).
pub const __HYPERVISOR_get_debugreg: u32 = 9;
/// PV descriptor update (xen.h `__HYPERVISOR_update_descriptor`).
pub const __HYPERVISOR_update_descriptor: u32 = 10;
/// Memory reservation and physmap operations, `XENMEM_*` (xen.h `__HYPERVISOR_memory_op`).
pub const __HYPERVISOR_memory_op: u32 = 12;
/// Batch of hypercalls (xen.h `__HYPERVISOR_multicall`).
pub const __HYPERVISOR_multicall: u32 = 13;
/// PV single mapping update (xen.h `__HYPERVISOR_update_va_mapping`).
pub const __HYPERVISOR_update_va_mapping: u32 = 14;
/// One-shot timer, old interface (xen.h `__HYPERVISOR_set_timer_op`).
pub const __HYPERVISOR_set_timer_op: u32 = 15;
/// Old event channel operation (xen.h `__HYPERVISOR_event_channel_op_compat`).
pub const __HYPERVISOR_event_channel_op_compat: u32 = 16;
/// Version and feature queries, `XENVER_*` (xen.h `__HYPERVISOR_xen_version`).
pub const __HYPERVISOR_xen_version: u32 = 17;
/// Hypervisor console, `CONSOLEIO_*` (xen.h `__HYPERVISOR_console_io`).
pub const __HYPERVISOR_console_io: u32 = 18;
/// Old physical device operation (xen.h `__HYPERVISOR_physdev_op_compat`).
pub const __HYPERVISOR_physdev_op_compat: u32 = 19;
/// Grant table operations, `GNTTABOP_*` (xen.h `__HYPERVISOR_grant_table_op`).
pub const __HYPERVISOR_grant_table_op: u32 = 20;
/// VM assists (xen.h `__HYPERVISOR_vm_assist`).
pub const __HYPERVISOR_vm_assist: u32 = 21;
/// PV mapping update in another domain (xen.h `__HYPERVISOR_update_va_mapping_otherdomain`).
pub const __HYPERVISOR_update_va_mapping_otherdomain: u32 = 22;
/// PV return from exception (xen.h `__HYPERVISOR_iret`).
pub const __HYPERVISOR_iret: u32 = 23;
/// Per-vCPU operations, `VCPUOP_*` (xen.h `__HYPERVISOR_vcpu_op`).
pub const __HYPERVISOR_vcpu_op: u32 = 24;
/// PV FS/GS base (xen.h `__HYPERVISOR_set_segment_base`).
pub const __HYPERVISOR_set_segment_base: u32 = 25;
/// PV extended MMU operations (xen.h `__HYPERVISOR_mmuext_op`).
pub const __HYPERVISOR_mmuext_op: u32 = 26;
/// Security module operations (xen.h `__HYPERVISOR_xsm_op`).
pub const __HYPERVISOR_xsm_op: u32 = 27;
/// NMI callback registration (xen.h `__HYPERVISOR_nmi_op`).
pub const __HYPERVISOR_nmi_op: u32 = 28;
/// Scheduler operations, `SCHEDOP_*` (xen.h `__HYPERVISOR_sched_op`).
pub const __HYPERVISOR_sched_op: u32 = 29;
/// PV callback registration (xen.h `__HYPERVISOR_callback_op`).
pub const __HYPERVISOR_callback_op: u32 = 30;
/// Profiling, dropped in Xen 4.22 (xen.h `__HYPERVISOR_xenoprof_op`).
pub const __HYPERVISOR_xenoprof_op: u32 = 31;
/// Event channel operations, `EVTCHNOP_*` (xen.h `__HYPERVISOR_event_channel_op`).
pub const __HYPERVISOR_event_channel_op: u32 = 32;
/// Physical device operations (xen.h `__HYPERVISOR_physdev_op`).
pub const __HYPERVISOR_physdev_op: u32 = 33;
/// HVM operations, `HVMOP_*` (xen.h `__HYPERVISOR_hvm_op`).
pub const __HYPERVISOR_hvm_op: u32 = 34;
/// System control, toolstack only (xen.h `__HYPERVISOR_sysctl`).
pub const __HYPERVISOR_sysctl: u32 = 35;
/// Domain control, toolstack only (xen.h `__HYPERVISOR_domctl`).
pub const __HYPERVISOR_domctl: u32 = 36;
/// Kexec (xen.h `__HYPERVISOR_kexec_op`).
pub const __HYPERVISOR_kexec_op: u32 = 37;
/// Transcendent memory, removed (xen.h `__HYPERVISOR_tmem_op`).
pub const __HYPERVISOR_tmem_op: u32 = 38;
/// Argo inter-domain messaging (xen.h `__HYPERVISOR_argo_op`).
pub const __HYPERVISOR_argo_op: u32 = 39;
/// Performance monitoring (xen.h `__HYPERVISOR_xenpmu_op`).
pub const __HYPERVISOR_xenpmu_op: u32 = 40;
/// Device model operations (xen.h `__HYPERVISOR_dm_op`).
pub const __HYPERVISOR_dm_op: u32 = 41;
/// Hypervisor file system (xen.h `__HYPERVISOR_hypfs_op`).
pub const __HYPERVISOR_hypfs_op: u32 = 42;
/// Architecture-specific hypercall 0; machine-check on x86 (xen.h `__HYPERVISOR_arch_0`).
pub const __HYPERVISOR_arch_0: u32 = 48;
/// Architecture-specific hypercall 1; `paging_domctl_cont` on x86 (xen.h `__HYPERVISOR_arch_1`).
pub const __HYPERVISOR_arch_1: u32 = 49;
/// Architecture-specific hypercall 2 (xen.h `__HYPERVISOR_arch_2`).
pub const __HYPERVISOR_arch_2: u32 = 50;
/// Architecture-specific hypercall 3 (xen.h `__HYPERVISOR_arch_3`).
pub const __HYPERVISOR_arch_3: u32 = 51;
/// Architecture-specific hypercall 4 (xen.h `__HYPERVISOR_arch_4`).
pub const __HYPERVISOR_arch_4: u32 = 52;
/// Architecture-specific hypercall 5 (xen.h `__HYPERVISOR_arch_5`).
pub const __HYPERVISOR_arch_5: u32 = 53;
/// Architecture-specific hypercall 6 (xen.h `__HYPERVISOR_arch_6`).
pub const __HYPERVISOR_arch_6: u32 = 54;
/// Architecture-specific hypercall 7 (xen.h `__HYPERVISOR_arch_7`).
pub const __HYPERVISOR_arch_7: u32 = 55;

/// Every hypercall number defined by xen.h with its name, in numeric order.
/// Useful for dispatch tables and coverage reports.
pub const HYPERCALLS: &[(u32, &str)] = &[
    (__HYPERVISOR_set_trap_table, "set_trap_table"),
    (__HYPERVISOR_mmu_update, "mmu_update"),
    (__HYPERVISOR_set_gdt, "set_gdt"),
    (__HYPERVISOR_stack_switch, "stack_switch"),
    (__HYPERVISOR_set_callbacks, "set_callbacks"),
    (__HYPERVISOR_fpu_taskswitch, "fpu_taskswitch"),
    (__HYPERVISOR_sched_op_compat, "sched_op_compat"),
    (__HYPERVISOR_platform_op, "platform_op"),
    (__HYPERVISOR_set_debugreg, "set_debugreg"),
    (__HYPERVISOR_get_debugreg, "get_debugreg"),
    (__HYPERVISOR_update_descriptor, "update_descriptor"),
    (__HYPERVISOR_memory_op, "memory_op"),
    (__HYPERVISOR_multicall, "multicall"),
    (__HYPERVISOR_update_va_mapping, "update_va_mapping"),
    (__HYPERVISOR_set_timer_op, "set_timer_op"),
    (
        __HYPERVISOR_event_channel_op_compat,
        "event_channel_op_compat",
    ),
    (__HYPERVISOR_xen_version, "xen_version"),
    (__HYPERVISOR_console_io, "console_io"),
    (__HYPERVISOR_physdev_op_compat, "physdev_op_compat"),
    (__HYPERVISOR_grant_table_op, "grant_table_op"),
    (__HYPERVISOR_vm_assist, "vm_assist"),
    (
        __HYPERVISOR_update_va_mapping_otherdomain,
        "update_va_mapping_otherdomain",
    ),
    (__HYPERVISOR_iret, "iret"),
    (__HYPERVISOR_vcpu_op, "vcpu_op"),
    (__HYPERVISOR_set_segment_base, "set_segment_base"),
    (__HYPERVISOR_mmuext_op, "mmuext_op"),
    (__HYPERVISOR_xsm_op, "xsm_op"),
    (__HYPERVISOR_nmi_op, "nmi_op"),
    (__HYPERVISOR_sched_op, "sched_op"),
    (__HYPERVISOR_callback_op, "callback_op"),
    (__HYPERVISOR_xenoprof_op, "xenoprof_op"),
    (__HYPERVISOR_event_channel_op, "event_channel_op"),
    (__HYPERVISOR_physdev_op, "physdev_op"),
    (__HYPERVISOR_hvm_op, "hvm_op"),
    (__HYPERVISOR_sysctl, "sysctl"),
    (__HYPERVISOR_domctl, "domctl"),
    (__HYPERVISOR_kexec_op, "kexec_op"),
    (__HYPERVISOR_tmem_op, "tmem_op"),
    (__HYPERVISOR_argo_op, "argo_op"),
    (__HYPERVISOR_xenpmu_op, "xenpmu_op"),
    (__HYPERVISOR_dm_op, "dm_op"),
    (__HYPERVISOR_hypfs_op, "hypfs_op"),
    (__HYPERVISOR_arch_0, "arch_0"),
    (__HYPERVISOR_arch_1, "arch_1"),
    (__HYPERVISOR_arch_2, "arch_2"),
    (__HYPERVISOR_arch_3, "arch_3"),
    (__HYPERVISOR_arch_4, "arch_4"),
    (__HYPERVISOR_arch_5, "arch_5"),
    (__HYPERVISOR_arch_6, "arch_6"),
    (__HYPERVISOR_arch_7, "arch_7"),
];

/// The name of a hypercall number (without the `__HYPERVISOR_` prefix), or
/// `None` if xen.h defines no hypercall with that number.
pub fn hypercall_name(nr: u64) -> Option<&'static str> {
    HYPERCALLS
        .iter()
        .find(|(n, _)| u64::from(*n) == nr)
        .map(|(_, name)| *name)
}

// ---------------------------------------------------------------------------
// Virtual IRQs (xen.h `VIRQ_*`), bound with `EVTCHNOP_bind_virq`.
// ---------------------------------------------------------------------------

/// Per-vCPU timer tick or timeout (xen.h `VIRQ_TIMER`).
pub const VIRQ_TIMER: u32 = 0;
/// Per-vCPU request to dump debug information (xen.h `VIRQ_DEBUG`).
pub const VIRQ_DEBUG: u32 = 1;
/// Bytes received on the emergency console (xen.h `VIRQ_CONSOLE`).
pub const VIRQ_CONSOLE: u32 = 2;
/// An exceptional event for some domain (xen.h `VIRQ_DOM_EXC`).
pub const VIRQ_DOM_EXC: u32 = 3;
/// Trace buffer has records (xen.h `VIRQ_TBUF`).
pub const VIRQ_TBUF: u32 = 4;
/// A domain paused for debugging (xen.h `VIRQ_DEBUGGER`).
pub const VIRQ_DEBUGGER: u32 = 6;
/// Profiling sample available (xen.h `VIRQ_XENOPROF`).
pub const VIRQ_XENOPROF: u32 = 7;
/// Bytes received on the console ring (xen.h `VIRQ_CON_RING`).
pub const VIRQ_CON_RING: u32 = 8;
/// Physical CPU state changed (xen.h `VIRQ_PCPU_STATE`).
pub const VIRQ_PCPU_STATE: u32 = 9;
/// A memory event occurred (xen.h `VIRQ_MEM_EVENT`).
pub const VIRQ_MEM_EVENT: u32 = 10;
/// Argo message notification (xen.h `VIRQ_ARGO`).
pub const VIRQ_ARGO: u32 = 11;
/// Hypervisor heap is low (xen.h `VIRQ_ENOMEM`).
pub const VIRQ_ENOMEM: u32 = 12;
/// Performance counter interrupt (xen.h `VIRQ_XENPMU`).
pub const VIRQ_XENPMU: u32 = 13;
/// Architecture-specific virtual IRQ 0 (xen.h `VIRQ_ARCH_0`).
pub const VIRQ_ARCH_0: u32 = 16;
/// Architecture-specific virtual IRQ 1 (xen.h `VIRQ_ARCH_1`).
pub const VIRQ_ARCH_1: u32 = 17;
/// Architecture-specific virtual IRQ 2 (xen.h `VIRQ_ARCH_2`).
pub const VIRQ_ARCH_2: u32 = 18;
/// Architecture-specific virtual IRQ 3 (xen.h `VIRQ_ARCH_3`).
pub const VIRQ_ARCH_3: u32 = 19;
/// Architecture-specific virtual IRQ 4 (xen.h `VIRQ_ARCH_4`).
pub const VIRQ_ARCH_4: u32 = 20;
/// Architecture-specific virtual IRQ 5 (xen.h `VIRQ_ARCH_5`).
pub const VIRQ_ARCH_5: u32 = 21;
/// Architecture-specific virtual IRQ 6 (xen.h `VIRQ_ARCH_6`).
pub const VIRQ_ARCH_6: u32 = 22;
/// Architecture-specific virtual IRQ 7 (xen.h `VIRQ_ARCH_7`).
pub const VIRQ_ARCH_7: u32 = 23;
/// Number of virtual IRQ numbers; valid VIRQs are below this (xen.h `NR_VIRQS`).
pub const NR_VIRQS: u32 = 24;

// ---------------------------------------------------------------------------
// Reserved domain ids (xen.h `DOMID_*`).
// ---------------------------------------------------------------------------

/// First domain id that names no real domain (xen.h `DOMID_FIRST_RESERVED`).
pub const DOMID_FIRST_RESERVED: Domid = 0x7FF0;
/// The calling domain (xen.h `DOMID_SELF`).
pub const DOMID_SELF: Domid = 0x7FF0;
/// I/O pseudo-domain: owner of MMIO pages (xen.h `DOMID_IO`).
pub const DOMID_IO: Domid = 0x7FF1;
/// The hypervisor itself (xen.h `DOMID_XEN`).
pub const DOMID_XEN: Domid = 0x7FF2;
/// Copy-on-write pseudo-domain for shared pages (xen.h `DOMID_COW`).
pub const DOMID_COW: Domid = 0x7FF3;
/// An invalid domain id (xen.h `DOMID_INVALID`).
pub const DOMID_INVALID: Domid = 0x7FF4;
/// Any domain, for unbound ports (xen.h `DOMID_ANY`).
pub const DOMID_ANY: Domid = 0x7FF5;
/// The idle domain (xen.h `DOMID_IDLE`).
pub const DOMID_IDLE: Domid = 0x7FFF;
/// Mask of the significant bits of a domain id (xen.h `DOMID_MASK`).
pub const DOMID_MASK: Domid = 0x7FFF;

// ---------------------------------------------------------------------------
// console_io (xen.h `CONSOLEIO_*`).
// ---------------------------------------------------------------------------

/// `console_io` command: write `count` bytes from a buffer (xen.h `CONSOLEIO_write`).
pub const CONSOLEIO_write: u32 = 0;
/// `console_io` command: read up to `count` bytes (xen.h `CONSOLEIO_read`).
pub const CONSOLEIO_read: u32 = 1;

// ---------------------------------------------------------------------------
// vm_assist (xen.h `VMASST_*`).
// ---------------------------------------------------------------------------

/// `vm_assist` command: enable an assist (xen.h `VMASST_CMD_enable`).
pub const VMASST_CMD_enable: u32 = 0;
/// `vm_assist` command: disable an assist (xen.h `VMASST_CMD_disable`).
pub const VMASST_CMD_disable: u32 = 1;
/// Assist: 4 GiB segment emulation (xen.h `VMASST_TYPE_4gb_segments`).
pub const VMASST_TYPE_4gb_segments: u32 = 0;
/// Assist: notify on 4 GiB segment fixups (xen.h `VMASST_TYPE_4gb_segments_notify`).
pub const VMASST_TYPE_4gb_segments_notify: u32 = 1;
/// Assist: writable page tables (xen.h `VMASST_TYPE_writable_pagetables`).
pub const VMASST_TYPE_writable_pagetables: u32 = 2;
/// Assist: PAE CR3 above 4 GiB (xen.h `VMASST_TYPE_pae_extended_cr3`).
pub const VMASST_TYPE_pae_extended_cr3: u32 = 3;
/// Assist: architectural IOPL (xen.h `VMASST_TYPE_architectural_iopl`).
pub const VMASST_TYPE_architectural_iopl: u32 = 4;
/// Assist: runstate update flag (xen.h `VMASST_TYPE_runstate_update_flag`).
pub const VMASST_TYPE_runstate_update_flag: u32 = 5;
/// Assist: strict M2P (xen.h `VMASST_TYPE_m2p_strict`).
pub const VMASST_TYPE_m2p_strict: u32 = 32;

// ---------------------------------------------------------------------------
// Shared info page.
// ---------------------------------------------------------------------------

/// Number of `vcpu_info` slots in the shared info page
/// (arch-x86/xen.h `XEN_LEGACY_MAX_VCPUS`).
pub const XEN_LEGACY_MAX_VCPUS: usize = 32;

/// pvclock flag: the TSC is stable across vCPUs (xen.h `XEN_PVCLOCK_TSC_STABLE_BIT`).
pub const XEN_PVCLOCK_TSC_STABLE_BIT: u8 = 1 << 0;
/// pvclock flag: the guest was stopped (xen.h `XEN_PVCLOCK_GUEST_STOPPED`).
pub const XEN_PVCLOCK_GUEST_STOPPED: u8 = 1 << 1;

/// Per-vCPU pvclock parameters (xen.h `struct vcpu_time_info`, 32 bytes).
///
/// System time in ns = `system_time` + (((tsc - `tsc_timestamp`) shifted by
/// `tsc_shift`) * `tsc_to_system_mul`) >> 32. `version` is odd while the
/// hypervisor updates the fields.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct VcpuTimeInfo {
    /// Update counter, odd during an update.
    pub version: u32,
    /// Padding.
    pub pad0: u32,
    /// TSC value at the last update.
    pub tsc_timestamp: u64,
    /// Nanoseconds since boot at the last update.
    pub system_time: u64,
    /// 32.32 fixed-point multiplier from shifted TSC ticks to ns.
    pub tsc_to_system_mul: u32,
    /// Binary shift applied to TSC deltas (negative: right shift).
    pub tsc_shift: i8,
    /// `XEN_PVCLOCK_*` flags.
    pub flags: u8,
    /// Padding.
    pub pad1: [u8; 2],
}
crate::assert_layout!(VcpuTimeInfo, 32, {
    version: 0, pad0: 4, tsc_timestamp: 8, system_time: 16,
    tsc_to_system_mul: 24, tsc_shift: 28, flags: 29, pad1: 30,
});

impl VcpuTimeInfo {
    /// Scales a TSC delta to nanoseconds with this record's multiplier and
    /// shift, as the pvclock formula prescribes. Total: wraps instead of
    /// overflowing on any input.
    pub fn scale_delta(&self, tsc_delta: u64) -> u64 {
        let shifted = if self.tsc_shift >= 0 {
            tsc_delta.wrapping_shl(u32::from(self.tsc_shift.unsigned_abs()))
        } else {
            tsc_delta.wrapping_shr(u32::from(self.tsc_shift.unsigned_abs()))
        };
        let product = u128::from(shifted) * u128::from(self.tsc_to_system_mul);
        (product >> 32) as u64
    }
}

/// The x86_64 part of `vcpu_info` (xen-x86_64.h `struct arch_vcpu_info`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct ArchVcpuInfo {
    /// Faulting address of the last page fault (PV guests).
    pub cr2: u64,
    /// Padding to make `vcpu_info` 64 bytes.
    pub pad: u64,
}
crate::assert_layout!(ArchVcpuInfo, 16, { cr2: 0, pad: 8 });

/// Per-vCPU event and time state (xen.h `struct vcpu_info`, 64 bytes). It
/// lives in the shared info page, or where `VCPUOP_register_vcpu_info` put it.
///
/// # Concurrency
/// The hypervisor sets `evtchn_upcall_pending` and bits of
/// `evtchn_pending_sel`; the guest clears them. `evtchn_upcall_mask` is
/// written by the guest. Both sides write the same page: access it through
/// atomics or volatile copies, never through Rust references held across
/// updates.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct VcpuInfo {
    /// Non-zero when an event upcall is pending.
    pub evtchn_upcall_pending: u8,
    /// Non-zero masks upcalls (PV guests; HVM guests leave it zero).
    pub evtchn_upcall_mask: u8,
    /// Padding.
    pub pad: [u8; 6],
    /// 2-level events: which words of `evtchn_pending` have pending bits.
    pub evtchn_pending_sel: XenUlong,
    /// Architecture-specific state.
    pub arch: ArchVcpuInfo,
    /// pvclock parameters.
    pub time: VcpuTimeInfo,
}
crate::assert_layout!(VcpuInfo, 64, {
    evtchn_upcall_pending: 0, evtchn_upcall_mask: 1, pad: 2,
    evtchn_pending_sel: 8, arch: 16, time: 32,
});

/// The x86 part of `shared_info` (arch-x86/xen.h `struct arch_shared_info`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct ArchSharedInfo {
    /// Number of valid p2m entries (PV guests).
    pub max_pfn: u64,
    /// Frame of the p2m frame list list (PV guests).
    pub pfn_to_mfn_frame_list_list: XenPfn,
    /// NMI reason bits.
    pub nmi_reason: u64,
    /// CR3 of the address space holding the linear p2m list (PV guests).
    pub p2m_cr3: u64,
    /// Virtual address of the linear p2m list (PV guests).
    pub p2m_vaddr: u64,
    /// Generation count of the p2m mapping (PV guests).
    pub p2m_generation: u64,
}
crate::assert_layout!(ArchSharedInfo, 48, {
    max_pfn: 0, pfn_to_mfn_frame_list_list: 8, nmi_reason: 16,
    p2m_cr3: 24, p2m_vaddr: 32, p2m_generation: 40,
});

/// Words in each 2-level event bitmap of `shared_info`
/// (`sizeof(xen_ulong_t) * 8` in xen.h).
pub const EVTCHN_2L_WORDS: usize = 64;

/// The shared info page (xen.h `struct shared_info`, 3136 bytes on x86_64),
/// mapped by the guest with `XENMEM_add_to_physmap` space
/// `XENMAPSPACE_shared_info`.
///
/// # Concurrency
/// Written by both sides: the hypervisor sets pending bits and time, the
/// guest clears pending bits and sets masks. Use atomic or volatile access
/// to the real page; this struct is for layout and copies.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct SharedInfo {
    /// The legacy `vcpu_info` slots for vCPUs 0..32.
    pub vcpu_info: [VcpuInfo; XEN_LEGACY_MAX_VCPUS],
    /// 2-level event channels: pending bits, one per port.
    pub evtchn_pending: [XenUlong; EVTCHN_2L_WORDS],
    /// 2-level event channels: mask bits, one per port.
    pub evtchn_mask: [XenUlong; EVTCHN_2L_WORDS],
    /// Wall-clock update counter, odd during an update.
    pub wc_version: u32,
    /// Wall-clock seconds at system time 0 (low 32 bits).
    pub wc_sec: u32,
    /// Wall-clock nanoseconds at system time 0.
    pub wc_nsec: u32,
    /// Wall-clock seconds, high 32 bits.
    pub wc_sec_hi: u32,
    /// Architecture-specific state.
    pub arch: ArchSharedInfo,
}
crate::assert_layout!(SharedInfo, 3136, {
    vcpu_info: 0, evtchn_pending: 2048, evtchn_mask: 2560, wc_version: 3072,
    wc_sec: 3076, wc_nsec: 3080, wc_sec_hi: 3084, arch: 3088,
});

/// One PV page-table update request (xen.h `struct mmu_update`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct MmuUpdate {
    /// Machine address of the entry, low bits select `MMU_*` command.
    pub ptr: u64,
    /// New contents.
    pub val: u64,
}
crate::assert_layout!(MmuUpdate, 16, { ptr: 0, val: 8 });

/// One entry of a `multicall` batch (xen.h `struct multicall_entry`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct MulticallEntry {
    /// Hypercall number.
    pub op: XenUlong,
    /// Result written back by the hypervisor.
    pub result: XenUlong,
    /// Arguments (the hypervisor uses the first five).
    pub args: [XenUlong; 6],
}
crate::assert_layout!(MulticallEntry, 64, { op: 0, result: 8, args: 16 });

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn hypercall_names_are_unique_and_sorted() {
        for pair in HYPERCALLS.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{:?} then {:?}", pair[0], pair[1]);
        }
        assert_eq!(
            hypercall_name(u64::from(__HYPERVISOR_vcpu_op)),
            Some("vcpu_op")
        );
        assert_eq!(hypercall_name(11), None, "11 is unassigned");
        assert_eq!(hypercall_name(u64::MAX), None);
    }

    #[test]
    fn shared_info_fields_land_at_xen_offsets() {
        let mut si = SharedInfo::new_zeroed();
        si.vcpu_info[1].time.version = 0x0102_0304;
        si.wc_sec = 0xAABB_CCDD;
        si.evtchn_mask[0] = 1;
        let bytes = si.as_bytes();
        assert_eq!(&bytes[64 + 32..64 + 36], &0x0102_0304u32.to_le_bytes());
        assert_eq!(&bytes[3076..3080], &0xAABB_CCDDu32.to_le_bytes());
        assert_eq!(bytes[2560], 1);
        let back = SharedInfo::read_from_bytes(bytes).unwrap();
        assert_eq!(back, si);
    }

    #[test]
    fn shared_info_rejects_short_input() {
        let buf = [0u8; 3135];
        assert!(SharedInfo::read_from_bytes(&buf[..]).is_err());
        assert!(SharedInfo::read_from_prefix(&buf[..]).is_err());
    }

    #[test]
    fn pvclock_scaling() {
        let t = VcpuTimeInfo {
            tsc_to_system_mul: 1 << 31,
            tsc_shift: 1,
            ..Default::default()
        };
        // (1000 << 1) * 0.5 = 1000
        assert_eq!(t.scale_delta(1000), 1000);
        let t = VcpuTimeInfo {
            tsc_to_system_mul: 1 << 31,
            tsc_shift: -2,
            ..Default::default()
        };
        assert_eq!(t.scale_delta(1000), 125);
        // Hostile values never panic.
        let t = VcpuTimeInfo {
            tsc_to_system_mul: u32::MAX,
            tsc_shift: i8::MIN,
            ..Default::default()
        };
        let _ = t.scale_delta(u64::MAX);
        let t = VcpuTimeInfo {
            tsc_to_system_mul: u32::MAX,
            tsc_shift: i8::MAX,
            ..Default::default()
        };
        let _ = t.scale_delta(u64::MAX);
    }
}
