//! The `hvm_op` hypercall and HVM parameters: `xen/include/public/hvm/hvm_op.h`
//! and `xen/include/public/hvm/params.h`.
//!
//! Includes helpers to build and decode the `HVM_PARAM_CALLBACK_IRQ` value,
//! which says how event-channel upcalls reach the guest.

use crate::Domid;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Set an HVM parameter, argument [`XenHvmParam`] (hvm_op.h `HVMOP_set_param`).
pub const HVMOP_set_param: u32 = 0;
/// Read an HVM parameter, argument [`XenHvmParam`] (hvm_op.h `HVMOP_get_param`).
pub const HVMOP_get_param: u32 = 1;
/// Set a PCI INTx line level, old interface (hvm_op.h `HVMOP_set_pci_intx_level`).
pub const HVMOP_set_pci_intx_level: u32 = 2;
/// Set an ISA IRQ level, old interface (hvm_op.h `HVMOP_set_isa_irq_level`).
pub const HVMOP_set_isa_irq_level: u32 = 3;
/// Route a PCI link, old interface (hvm_op.h `HVMOP_set_pci_link_route`).
pub const HVMOP_set_pci_link_route: u32 = 4;
/// Flush all vCPUs' TLBs (hvm_op.h `HVMOP_flush_tlbs`).
pub const HVMOP_flush_tlbs: u32 = 5;
/// A guest page table is about to be freed, argument [`XenHvmPagetableDying`]
/// (hvm_op.h `HVMOP_pagetable_dying`).
pub const HVMOP_pagetable_dying: u32 = 9;
/// Read the current system time, argument [`XenHvmGetTime`] (hvm_op.h `HVMOP_get_time`).
pub const HVMOP_get_time: u32 = 10;
/// Emit a trace record (hvm_op.h `HVMOP_xentrace`).
pub const HVMOP_xentrace: u32 = 11;
/// Set memory access rights, tools (hvm_op.h `HVMOP_set_mem_access`).
pub const HVMOP_set_mem_access: u32 = 12;
/// Read memory access rights, tools (hvm_op.h `HVMOP_get_mem_access`).
pub const HVMOP_get_mem_access: u32 = 13;
/// Query a page's memory type, argument [`XenHvmGetMemType`] (hvm_op.h `HVMOP_get_mem_type`).
pub const HVMOP_get_mem_type: u32 = 15;
/// Set a per-vCPU upcall vector, argument [`XenHvmEvtchnUpcallVector`]
/// (hvm_op.h `HVMOP_set_evtchn_upcall_vector`).
pub const HVMOP_set_evtchn_upcall_vector: u32 = 23;
/// Raise a guest-requested VM event (hvm_op.h `HVMOP_guest_request_vm_event`).
pub const HVMOP_guest_request_vm_event: u32 = 24;
/// Alternate p2m operations (hvm_op.h `HVMOP_altp2m`).
pub const HVMOP_altp2m: u32 = 25;

/// Version of the altp2m sub-interface (hvm_op.h `HVMOP_ALTP2M_INTERFACE_VERSION`).
pub const HVMOP_ALTP2M_INTERFACE_VERSION: u32 = 1;
/// Altp2m sub-op: read the domain state (hvm_op.h `HVMOP_altp2m_get_domain_state`).
pub const HVMOP_altp2m_get_domain_state: u32 = 1;
/// Altp2m sub-op: set the domain state (hvm_op.h `HVMOP_altp2m_set_domain_state`).
pub const HVMOP_altp2m_set_domain_state: u32 = 2;
/// Altp2m sub-op: enable #VE notification (hvm_op.h `HVMOP_altp2m_vcpu_enable_notify`).
pub const HVMOP_altp2m_vcpu_enable_notify: u32 = 3;
/// Altp2m sub-op: create a view (hvm_op.h `HVMOP_altp2m_create_p2m`).
pub const HVMOP_altp2m_create_p2m: u32 = 4;
/// Altp2m sub-op: destroy a view (hvm_op.h `HVMOP_altp2m_destroy_p2m`).
pub const HVMOP_altp2m_destroy_p2m: u32 = 5;
/// Altp2m sub-op: switch all vCPUs to a view (hvm_op.h `HVMOP_altp2m_switch_p2m`).
pub const HVMOP_altp2m_switch_p2m: u32 = 6;
/// Altp2m sub-op: set access in a view (hvm_op.h `HVMOP_altp2m_set_mem_access`).
pub const HVMOP_altp2m_set_mem_access: u32 = 7;
/// Altp2m sub-op: change a frame in a view (hvm_op.h `HVMOP_altp2m_change_gfn`).
pub const HVMOP_altp2m_change_gfn: u32 = 8;
/// Altp2m sub-op: set access on a list (hvm_op.h `HVMOP_altp2m_set_mem_access_multi`).
pub const HVMOP_altp2m_set_mem_access_multi: u32 = 9;
/// Altp2m sub-op: set suppress-#VE (hvm_op.h `HVMOP_altp2m_set_suppress_ve`).
pub const HVMOP_altp2m_set_suppress_ve: u32 = 10;
/// Altp2m sub-op: get suppress-#VE (hvm_op.h `HVMOP_altp2m_get_suppress_ve`).
pub const HVMOP_altp2m_get_suppress_ve: u32 = 11;
/// Altp2m sub-op: get access in a view (hvm_op.h `HVMOP_altp2m_get_mem_access`).
pub const HVMOP_altp2m_get_mem_access: u32 = 12;
/// Altp2m sub-op: disable #VE notification (hvm_op.h `HVMOP_altp2m_vcpu_disable_notify`).
pub const HVMOP_altp2m_vcpu_disable_notify: u32 = 13;
/// Altp2m sub-op: current view index (hvm_op.h `HVMOP_altp2m_get_p2m_idx`).
pub const HVMOP_altp2m_get_p2m_idx: u32 = 14;
/// Altp2m sub-op: set suppress-#VE on a range (hvm_op.h `HVMOP_altp2m_set_suppress_ve_multi`).
pub const HVMOP_altp2m_set_suppress_ve_multi: u32 = 15;
/// Altp2m sub-op: set view visibility (hvm_op.h `HVMOP_altp2m_set_visibility`).
pub const HVMOP_altp2m_set_visibility: u32 = 16;

/// Memory type: ordinary RAM (hvm_op.h `HVMMEM_ram_rw`).
pub const HVMMEM_ram_rw: u16 = 0;
/// Memory type: read-only RAM (hvm_op.h `HVMMEM_ram_ro`).
pub const HVMMEM_ram_ro: u16 = 1;
/// Memory type: emulated MMIO (hvm_op.h `HVMMEM_mmio_dm`).
pub const HVMMEM_mmio_dm: u16 = 2;
/// Memory type: placeholder, no longer settable (hvm_op.h `HVMMEM_unused`).
pub const HVMMEM_unused: u16 = 3;
/// Memory type: claimed by an ioreq server (hvm_op.h `HVMMEM_ioreq_server`).
pub const HVMMEM_ioreq_server: u16 = 4;

/// A memory type (hvm_op.h `hvmmem_type_t`), built only by
/// [`HvmmemType::try_from`] from the integer field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum HvmmemType {
    /// `HVMMEM_ram_rw`.
    RamRw = HVMMEM_ram_rw,
    /// `HVMMEM_ram_ro`.
    RamRo = HVMMEM_ram_ro,
    /// `HVMMEM_mmio_dm`.
    MmioDm = HVMMEM_mmio_dm,
    /// `HVMMEM_unused`.
    Unused = HVMMEM_unused,
    /// `HVMMEM_ioreq_server`.
    IoreqServer = HVMMEM_ioreq_server,
}

impl TryFrom<u16> for HvmmemType {
    type Error = u16;
    /// Checked conversion; an unknown value is returned as the error.
    fn try_from(v: u16) -> Result<Self, u16> {
        Ok(match v {
            HVMMEM_ram_rw => Self::RamRw,
            HVMMEM_ram_ro => Self::RamRo,
            HVMMEM_mmio_dm => Self::MmioDm,
            HVMMEM_unused => Self::Unused,
            HVMMEM_ioreq_server => Self::IoreqServer,
            other => return Err(other),
        })
    }
}

impl From<HvmmemType> for u16 {
    fn from(t: HvmmemType) -> u16 {
        t as u16
    }
}

/// Argument of `HVMOP_set_param`/`HVMOP_get_param`
/// (hvm_op.h `struct xen_hvm_param`, 16 bytes).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct XenHvmParam {
    /// Target domain (`DOMID_SELF` from a guest).
    pub domid: Domid,
    /// Padding.
    pub pad: u16,
    /// `HVM_PARAM_*` index.
    pub index: u32,
    /// Value to set, or the value read.
    pub value: u64,
}
crate::assert_layout!(XenHvmParam, 16, { domid: 0, pad: 2, index: 4, value: 8 });

/// Argument of `HVMOP_pagetable_dying` (hvm_op.h `struct xen_hvm_pagetable_dying`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct XenHvmPagetableDying {
    /// Domain.
    pub domid: Domid,
    /// Padding.
    pub pad: [u16; 3],
    /// Guest physical address of the top-level page table.
    pub gpa: u64,
}
crate::assert_layout!(XenHvmPagetableDying, 16, { domid: 0, pad: 2, gpa: 8 });

/// Argument of `HVMOP_get_time` (hvm_op.h `struct xen_hvm_get_time`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct XenHvmGetTime {
    /// Out: system time in ns.
    pub now: u64,
}
crate::assert_layout!(XenHvmGetTime, 8, { now: 0 });

/// Argument of `HVMOP_get_mem_type` (hvm_op.h `struct xen_hvm_get_mem_type`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct XenHvmGetMemType {
    /// Domain.
    pub domid: Domid,
    /// Out: `HVMMEM_*` (kept as an integer).
    pub mem_type: u16,
    /// Padding.
    pub pad: [u16; 2],
    /// Guest frame to query.
    pub pfn: u64,
}
crate::assert_layout!(XenHvmGetMemType, 16, { domid: 0, mem_type: 2, pad: 4, pfn: 8 });

/// Argument of `HVMOP_set_evtchn_upcall_vector`
/// (hvm_op.h `struct xen_hvm_evtchn_upcall_vector`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct XenHvmEvtchnUpcallVector {
    /// vCPU id.
    pub vcpu: u32,
    /// IDT vector.
    pub vector: u8,
    /// Padding.
    pub pad: [u8; 3],
}
crate::assert_layout!(XenHvmEvtchnUpcallVector, 8, { vcpu: 0, vector: 4, pad: 5 });

// ---------------------------------------------------------------------------
// HVM parameters (params.h `HVM_PARAM_*`).
// ---------------------------------------------------------------------------

/// How event upcalls are delivered; see [`HvmCallbackVia`]
/// (params.h `HVM_PARAM_CALLBACK_IRQ`).
pub const HVM_PARAM_CALLBACK_IRQ: u32 = 0;
/// Xenstore ring frame (params.h `HVM_PARAM_STORE_PFN`).
pub const HVM_PARAM_STORE_PFN: u32 = 1;
/// Xenstore event channel (params.h `HVM_PARAM_STORE_EVTCHN`).
pub const HVM_PARAM_STORE_EVTCHN: u32 = 2;
/// PAE enabled, tools (params.h `HVM_PARAM_PAE_ENABLED`).
pub const HVM_PARAM_PAE_ENABLED: u32 = 4;
/// Synchronous ioreq page frame (params.h `HVM_PARAM_IOREQ_PFN`).
pub const HVM_PARAM_IOREQ_PFN: u32 = 5;
/// Buffered ioreq page frame (params.h `HVM_PARAM_BUFIOREQ_PFN`).
pub const HVM_PARAM_BUFIOREQ_PFN: u32 = 6;
/// Viridian enlightenments, `HVMPV_*` (params.h `HVM_PARAM_VIRIDIAN`).
pub const HVM_PARAM_VIRIDIAN: u32 = 9;
/// Timer mode, `HVMPTM_*` (params.h `HVM_PARAM_TIMER_MODE`).
pub const HVM_PARAM_TIMER_MODE: u32 = 10;
/// HPET emulated (params.h `HVM_PARAM_HPET_ENABLED`).
pub const HVM_PARAM_HPET_ENABLED: u32 = 11;
/// Identity page table for unpaged real mode (params.h `HVM_PARAM_IDENT_PT`).
pub const HVM_PARAM_IDENT_PT: u32 = 12;
/// Device model domain, tools (params.h `HVM_PARAM_DM_DOMAIN`).
pub const HVM_PARAM_DM_DOMAIN: u32 = 13;
/// ACPI sleep state (params.h `HVM_PARAM_ACPI_S_STATE`).
pub const HVM_PARAM_ACPI_S_STATE: u32 = 14;
/// TSS for virtual 8086 mode (params.h `HVM_PARAM_VM86_TSS`).
pub const HVM_PARAM_VM86_TSS: u32 = 15;
/// Virtual platform timer alignment (params.h `HVM_PARAM_VPT_ALIGN`).
pub const HVM_PARAM_VPT_ALIGN: u32 = 16;
/// PV console ring frame (params.h `HVM_PARAM_CONSOLE_PFN`).
pub const HVM_PARAM_CONSOLE_PFN: u32 = 17;
/// PV console event channel (params.h `HVM_PARAM_CONSOLE_EVTCHN`).
pub const HVM_PARAM_CONSOLE_EVTCHN: u32 = 18;
/// Location of the ACPI PM I/O ports (params.h `HVM_PARAM_ACPI_IOPORTS_LOCATION`).
pub const HVM_PARAM_ACPI_IOPORTS_LOCATION: u32 = 19;
/// Memory event on CR0 writes, tools (params.h `HVM_PARAM_MEMORY_EVENT_CR0`).
pub const HVM_PARAM_MEMORY_EVENT_CR0: u32 = 20;
/// Memory event on CR3 writes, tools (params.h `HVM_PARAM_MEMORY_EVENT_CR3`).
pub const HVM_PARAM_MEMORY_EVENT_CR3: u32 = 21;
/// Memory event on CR4 writes, tools (params.h `HVM_PARAM_MEMORY_EVENT_CR4`).
pub const HVM_PARAM_MEMORY_EVENT_CR4: u32 = 22;
/// Memory event on INT3, tools (params.h `HVM_PARAM_MEMORY_EVENT_INT3`).
pub const HVM_PARAM_MEMORY_EVENT_INT3: u32 = 23;
/// Nested virtualisation, tools (params.h `HVM_PARAM_NESTEDHVM`).
pub const HVM_PARAM_NESTEDHVM: u32 = 24;
/// Memory event on single step, tools (params.h `HVM_PARAM_MEMORY_EVENT_SINGLE_STEP`).
pub const HVM_PARAM_MEMORY_EVENT_SINGLE_STEP: u32 = 25;
/// Buffered ioreq event channel, tools (params.h `HVM_PARAM_BUFIOREQ_EVTCHN`).
pub const HVM_PARAM_BUFIOREQ_EVTCHN: u32 = 26;
/// Paging ring frame (params.h `HVM_PARAM_PAGING_RING_PFN`).
pub const HVM_PARAM_PAGING_RING_PFN: u32 = 27;
/// Monitor ring frame (params.h `HVM_PARAM_MONITOR_RING_PFN`).
pub const HVM_PARAM_MONITOR_RING_PFN: u32 = 28;
/// Sharing ring frame (params.h `HVM_PARAM_SHARING_RING_PFN`).
pub const HVM_PARAM_SHARING_RING_PFN: u32 = 29;
/// Memory event on MSR writes, tools (params.h `HVM_PARAM_MEMORY_EVENT_MSR`).
pub const HVM_PARAM_MEMORY_EVENT_MSR: u32 = 30;
/// What to do on a triple fault, `SHUTDOWN_*` (params.h `HVM_PARAM_TRIPLE_FAULT_REASON`).
pub const HVM_PARAM_TRIPLE_FAULT_REASON: u32 = 31;
/// First ioreq server frame (params.h `HVM_PARAM_IOREQ_SERVER_PFN`).
pub const HVM_PARAM_IOREQ_SERVER_PFN: u32 = 32;
/// Number of ioreq server frames (params.h `HVM_PARAM_NR_IOREQ_SERVER_PAGES`).
pub const HVM_PARAM_NR_IOREQ_SERVER_PAGES: u32 = 33;
/// Address of the VM generation id (params.h `HVM_PARAM_VM_GENERATION_ID_ADDR`).
pub const HVM_PARAM_VM_GENERATION_ID_ADDR: u32 = 34;
/// Alternate p2m mode, `XEN_ALTP2M_*` (params.h `HVM_PARAM_ALTP2M`).
pub const HVM_PARAM_ALTP2M: u32 = 35;
/// Width of the x87 FIP/FDP (params.h `HVM_PARAM_X87_FIP_WIDTH`).
pub const HVM_PARAM_X87_FIP_WIDTH: u32 = 36;
/// Sized TSS for virtual 8086 mode (params.h `HVM_PARAM_VM86_TSS_SIZED`).
pub const HVM_PARAM_VM86_TSS_SIZED: u32 = 37;
/// Machine-check capabilities, `XEN_HVM_MCA_CAP_*` (params.h `HVM_PARAM_MCA_CAP`).
pub const HVM_PARAM_MCA_CAP: u32 = 38;
/// Number of HVM parameters; valid indices are below this (params.h `HVM_NR_PARAMS`).
pub const HVM_NR_PARAMS: u32 = 39;

/// Timer mode: delay ticks missed while descheduled (params.h `HVMPTM_delay_for_missed_ticks`).
pub const HVMPTM_delay_for_missed_ticks: u64 = 0;
/// Timer mode: do not delay missed ticks (params.h `HVMPTM_no_delay_for_missed_ticks`).
pub const HVMPTM_no_delay_for_missed_ticks: u64 = 1;
/// Timer mode: drop missed ticks (params.h `HVMPTM_no_missed_ticks_pending`).
pub const HVMPTM_no_missed_ticks_pending: u64 = 2;
/// Timer mode: deliver one tick for all missed ones (params.h `HVMPTM_one_missed_tick_pending`).
pub const HVMPTM_one_missed_tick_pending: u64 = 3;
/// Altp2m mode: disabled (params.h `XEN_ALTP2M_disabled`).
pub const XEN_ALTP2M_disabled: u64 = 0;
/// Altp2m mode: mixed (params.h `XEN_ALTP2M_mixed`).
pub const XEN_ALTP2M_mixed: u64 = 1;
/// Altp2m mode: external (params.h `XEN_ALTP2M_external`).
pub const XEN_ALTP2M_external: u64 = 2;
/// Altp2m mode: limited (params.h `XEN_ALTP2M_limited`).
pub const XEN_ALTP2M_limited: u64 = 3;
/// MCA capability: local machine checks (params.h `XEN_HVM_MCA_CAP_LMCE`).
pub const XEN_HVM_MCA_CAP_LMCE: u64 = 1 << 0;
/// All MCA capability bits (params.h `XEN_HVM_MCA_CAP_MASK`).
pub const XEN_HVM_MCA_CAP_MASK: u64 = XEN_HVM_MCA_CAP_LMCE;

// ---------------------------------------------------------------------------
// The callback-irq value.
// ---------------------------------------------------------------------------

/// Bits 63:56 of `HVM_PARAM_CALLBACK_IRQ` hold the delivery type
/// (params.h `HVM_PARAM_CALLBACK_IRQ_TYPE_MASK`).
pub const HVM_PARAM_CALLBACK_IRQ_TYPE_MASK: u64 = 0xFF00_0000_0000_0000;
/// Delivery type: a GSI in bits 55:0 (params.h `HVM_PARAM_CALLBACK_TYPE_GSI`).
pub const HVM_PARAM_CALLBACK_TYPE_GSI: u8 = 0;
/// Delivery type: a PCI INTx line (params.h `HVM_PARAM_CALLBACK_TYPE_PCI_INTX`).
pub const HVM_PARAM_CALLBACK_TYPE_PCI_INTX: u8 = 1;
/// Delivery type: an IDT vector in bits 7:0, needs
/// `XENFEAT_hvm_callback_vector` (params.h `HVM_PARAM_CALLBACK_TYPE_VECTOR`).
pub const HVM_PARAM_CALLBACK_TYPE_VECTOR: u8 = 2;

const CALLBACK_TYPE_SHIFT: u32 = 56;
const CALLBACK_PAYLOAD_MASK: u64 = (1 << CALLBACK_TYPE_SHIFT) - 1;
/// Bits of a PCI INTx payload that params.h assigns a meaning to.
const PCI_INTX_DEFINED: u64 = (0xFFFF << 32) | (0xFFFF << 16) | (0xFF << 8) | 0x3;

/// A decoded `HVM_PARAM_CALLBACK_IRQ` value (params.h). A Rust-side value:
/// it comes from [`HvmCallbackVia::decode`], never from raw bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HvmCallbackVia {
    /// Value 0: upcalls are not delivered as interrupts.
    Disabled,
    /// Assert this GSI (never 0, which would alias "disabled").
    Gsi(u64),
    /// Assert a PCI INTx line.
    PciIntx {
        /// PCI segment (bits 47:32).
        domain: u16,
        /// Bus (bits 31:16).
        bus: u16,
        /// Device and function (bits 15:8).
        devfn: u8,
        /// INTx pin 0-3 for INTA-INTD (bits 1:0).
        intx: u8,
    },
    /// Inject this IDT vector; no EOI is needed.
    Vector(u8),
}

/// Why a callback-irq value does not decode or encode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallbackIrqError {
    /// Bits 63:56 hold a type params.h does not define for x86.
    UnknownType(u8),
    /// A GSI of 0 was asked for; it would read back as "disabled".
    GsiZero,
    /// A GSI does not fit in bits 55:0.
    GsiTooLarge(u64),
    /// A PCI INTx pin above 3.
    BadIntxPin(u8),
}

impl HvmCallbackVia {
    /// Decodes a guest-written value the way params.h defines it. Bits a
    /// type does not use are ignored (Xen ignores them too); use
    /// [`HvmCallbackVia::has_undefined_bits`] to be stricter.
    pub const fn decode(val: u64) -> Result<Self, CallbackIrqError> {
        if val == 0 {
            return Ok(Self::Disabled);
        }
        let ty = (val >> CALLBACK_TYPE_SHIFT) as u8;
        let payload = val & CALLBACK_PAYLOAD_MASK;
        match ty {
            HVM_PARAM_CALLBACK_TYPE_GSI => Ok(Self::Gsi(payload)),
            HVM_PARAM_CALLBACK_TYPE_PCI_INTX => Ok(Self::PciIntx {
                domain: (payload >> 32) as u16,
                bus: (payload >> 16) as u16,
                devfn: (payload >> 8) as u8,
                intx: (payload & 3) as u8,
            }),
            HVM_PARAM_CALLBACK_TYPE_VECTOR => Ok(Self::Vector(payload as u8)),
            other => Err(CallbackIrqError::UnknownType(other)),
        }
    }

    /// Whether `val` sets payload bits its type leaves undefined (for
    /// example bits 55:8 of a vector value). Unknown types report `false`:
    /// [`HvmCallbackVia::decode`] already rejects them.
    pub const fn has_undefined_bits(val: u64) -> bool {
        let payload = val & CALLBACK_PAYLOAD_MASK;
        match (val >> CALLBACK_TYPE_SHIFT) as u8 {
            HVM_PARAM_CALLBACK_TYPE_PCI_INTX => payload & !PCI_INTX_DEFINED != 0,
            HVM_PARAM_CALLBACK_TYPE_VECTOR => payload & !0xFF != 0,
            _ => false,
        }
    }

    /// Builds the parameter value.
    pub const fn encode(self) -> Result<u64, CallbackIrqError> {
        match self {
            Self::Disabled => Ok(0),
            Self::Gsi(0) => Err(CallbackIrqError::GsiZero),
            Self::Gsi(gsi) if gsi > CALLBACK_PAYLOAD_MASK => {
                Err(CallbackIrqError::GsiTooLarge(gsi))
            }
            Self::Gsi(gsi) => Ok(gsi),
            Self::PciIntx { intx, .. } if intx > 3 => Err(CallbackIrqError::BadIntxPin(intx)),
            Self::PciIntx {
                domain,
                bus,
                devfn,
                intx,
            } => Ok(
                ((HVM_PARAM_CALLBACK_TYPE_PCI_INTX as u64) << CALLBACK_TYPE_SHIFT)
                    | ((domain as u64) << 32)
                    | ((bus as u64) << 16)
                    | ((devfn as u64) << 8)
                    | intx as u64,
            ),
            Self::Vector(v) => Ok(hvm_callback_vector(v)),
        }
    }
}

/// The `HVM_PARAM_CALLBACK_IRQ` value that delivers upcalls as IDT vector
/// `vector` (type `HVM_PARAM_CALLBACK_TYPE_VECTOR`, params.h).
pub const fn hvm_callback_vector(vector: u8) -> u64 {
    ((HVM_PARAM_CALLBACK_TYPE_VECTOR as u64) << CALLBACK_TYPE_SHIFT) | vector as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_vector_value_decodes() {
        // What Linux writes for vector 0xf3.
        let val = (2u64 << 56) | 0xf3;
        assert_eq!(hvm_callback_vector(0xf3), val);
        assert_eq!(
            HvmCallbackVia::decode(val),
            Ok(HvmCallbackVia::Vector(0xf3))
        );
        assert!(!HvmCallbackVia::has_undefined_bits(val));
    }

    #[test]
    fn round_trips() {
        let vias = [
            HvmCallbackVia::Disabled,
            HvmCallbackVia::Gsi(28),
            HvmCallbackVia::Gsi(CALLBACK_PAYLOAD_MASK),
            HvmCallbackVia::PciIntx {
                domain: 0x1234,
                bus: 0xabcd,
                devfn: 0x18,
                intx: 3,
            },
            HvmCallbackVia::Vector(0),
            HvmCallbackVia::Vector(0xff),
        ];
        for via in vias {
            let val = via.encode().unwrap();
            assert_eq!(HvmCallbackVia::decode(val), Ok(via), "{val:#x}");
            assert!(!HvmCallbackVia::has_undefined_bits(val));
        }
    }

    #[test]
    fn pci_intx_bit_positions() {
        let val = HvmCallbackVia::PciIntx {
            domain: 1,
            bus: 2,
            devfn: 3,
            intx: 1,
        }
        .encode()
        .unwrap();
        assert_eq!(val, (1 << 56) | (1 << 32) | (2 << 16) | (3 << 8) | 1);
    }

    #[test]
    fn malformed_values() {
        for ty in 3u8..=255 {
            let val = (u64::from(ty) << 56) | 0xf3;
            assert_eq!(
                HvmCallbackVia::decode(val),
                Err(CallbackIrqError::UnknownType(ty))
            );
        }
        assert_eq!(
            HvmCallbackVia::decode(u64::MAX),
            Err(CallbackIrqError::UnknownType(0xff))
        );
        // Undefined bits are ignored by decode but reported.
        let sloppy = (2u64 << 56) | (1 << 40) | 0x20;
        assert_eq!(
            HvmCallbackVia::decode(sloppy),
            Ok(HvmCallbackVia::Vector(0x20))
        );
        assert!(HvmCallbackVia::has_undefined_bits(sloppy));
        let sloppy_intx = (1u64 << 56) | (1 << 50) | 0x4;
        assert!(HvmCallbackVia::has_undefined_bits(sloppy_intx));
        assert!(!HvmCallbackVia::has_undefined_bits(
            (1u64 << 56) | (0xffff << 32)
        ));
    }

    #[test]
    fn encode_refuses_unrepresentable() {
        assert_eq!(
            HvmCallbackVia::Gsi(0).encode(),
            Err(CallbackIrqError::GsiZero)
        );
        assert_eq!(
            HvmCallbackVia::Gsi(1 << 56).encode(),
            Err(CallbackIrqError::GsiTooLarge(1 << 56))
        );
        let bad = HvmCallbackVia::PciIntx {
            domain: 0,
            bus: 0,
            devfn: 0,
            intx: 4,
        };
        assert_eq!(bad.encode(), Err(CallbackIrqError::BadIntxPin(4)));
    }

    #[test]
    fn mem_type_checked() {
        for v in 0..=4u16 {
            assert_eq!(u16::from(HvmmemType::try_from(v).unwrap()), v);
        }
        assert_eq!(HvmmemType::try_from(5), Err(5));
        assert_eq!(HvmmemType::try_from(u16::MAX), Err(u16::MAX));
    }

    #[test]
    fn hvm_param_from_bytes() {
        let mut bytes = [0u8; 16];
        bytes[0..2].copy_from_slice(&0x7ff0u16.to_le_bytes());
        bytes[4..8].copy_from_slice(&HVM_PARAM_CONSOLE_PFN.to_le_bytes());
        bytes[8..16].copy_from_slice(&0xfefffu64.to_le_bytes());
        let p = XenHvmParam::read_from_bytes(&bytes[..]).unwrap();
        assert_eq!((p.domid, p.index, p.value), (0x7ff0, 17, 0xfefff));
        assert_eq!(p.as_bytes(), &bytes);
        assert!(XenHvmParam::read_from_bytes(&bytes[..15]).is_err());
        let (p2, rest) = XenHvmParam::read_from_prefix(&[0xffu8; 20][..]).unwrap();
        assert_eq!(p2.value, u64::MAX);
        assert_eq!(rest.len(), 4);
    }
}
