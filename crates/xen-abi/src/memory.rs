//! The `memory_op` hypercall: `xen/include/public/memory.h`, plus the e820
//! entry it returns and the constants of `hvm/e820.h`.

use crate::{Domid, XenPfn, XenUlong};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Give the domain more memory extents (memory.h `XENMEM_increase_reservation`).
pub const XENMEM_increase_reservation: u32 = 0;
/// Return memory extents to the hypervisor (memory.h `XENMEM_decrease_reservation`).
pub const XENMEM_decrease_reservation: u32 = 1;
/// Highest machine frame number (memory.h `XENMEM_maximum_ram_page`).
pub const XENMEM_maximum_ram_page: u32 = 2;
/// Current page count of a domain (memory.h `XENMEM_current_reservation`).
pub const XENMEM_current_reservation: u32 = 3;
/// Page limit of a domain (memory.h `XENMEM_maximum_reservation`).
pub const XENMEM_maximum_reservation: u32 = 4;
/// Machine-to-phys table frames (memory.h `XENMEM_machphys_mfn_list`).
pub const XENMEM_machphys_mfn_list: u32 = 5;
/// Populate guest frames with memory (memory.h `XENMEM_populate_physmap`).
pub const XENMEM_populate_physmap: u32 = 6;
/// Map a page of a given space at a guest frame, argument [`XenAddToPhysmap`]
/// (memory.h `XENMEM_add_to_physmap`).
pub const XENMEM_add_to_physmap: u32 = 7;
/// The domain's pseudo-physical memory map, argument [`XenMemoryMap`]
/// (memory.h `XENMEM_memory_map`).
pub const XENMEM_memory_map: u32 = 9;
/// The host's machine memory map (memory.h `XENMEM_machine_memory_map`).
pub const XENMEM_machine_memory_map: u32 = 10;
/// Exchange extents, argument [`XenMemoryExchange`] (memory.h `XENMEM_exchange`).
pub const XENMEM_exchange: u32 = 11;
/// Where the M2P table is mapped (memory.h `XENMEM_machphys_mapping`).
pub const XENMEM_machphys_mapping: u32 = 12;
/// Set a domain's memory map, toolstack (memory.h `XENMEM_set_memory_map`).
pub const XENMEM_set_memory_map: u32 = 13;
/// Highest guest frame in use (memory.h `XENMEM_maximum_gpfn`).
pub const XENMEM_maximum_gpfn: u32 = 14;
/// Unmap a guest frame, argument [`XenRemoveFromPhysmap`] (memory.h `XENMEM_remove_from_physmap`).
pub const XENMEM_remove_from_physmap: u32 = 15;
/// Set the populate-on-demand target (memory.h `XENMEM_set_pod_target`).
pub const XENMEM_set_pod_target: u32 = 16;
/// Read the populate-on-demand target (memory.h `XENMEM_get_pod_target`).
pub const XENMEM_get_pod_target: u32 = 17;
/// Pages freed by sharing (memory.h `XENMEM_get_sharing_freed_pages`).
pub const XENMEM_get_sharing_freed_pages: u32 = 18;
/// Pages shared (memory.h `XENMEM_get_sharing_shared_pages`).
pub const XENMEM_get_sharing_shared_pages: u32 = 19;
/// Memory paging, tools (memory.h `XENMEM_paging_op`).
pub const XENMEM_paging_op: u32 = 20;
/// Memory access control, tools (memory.h `XENMEM_access_op`).
pub const XENMEM_access_op: u32 = 21;
/// Memory sharing, tools (memory.h `XENMEM_sharing_op`).
pub const XENMEM_sharing_op: u32 = 22;
/// Batched add-to-physmap, argument [`XenAddToPhysmapBatch`]
/// (memory.h `XENMEM_add_to_physmap_batch`).
pub const XENMEM_add_to_physmap_batch: u32 = 23;
/// Claim pages for a domain (memory.h `XENMEM_claim_pages`).
pub const XENMEM_claim_pages: u32 = 24;
/// Compat M2P frames (memory.h `XENMEM_machphys_compat_mfn_list`).
pub const XENMEM_machphys_compat_mfn_list: u32 = 25;
/// vNUMA topology (memory.h `XENMEM_get_vnumainfo`).
pub const XENMEM_get_vnumainfo: u32 = 26;
/// Reserved device memory map (memory.h `XENMEM_reserved_device_memory_map`).
pub const XENMEM_reserved_device_memory_map: u32 = 27;
/// Map a resource of another domain (memory.h `XENMEM_acquire_resource`).
pub const XENMEM_acquire_resource: u32 = 28;

/// Builds the address-width part of `mem_flags` (memory.h `XENMEMF_address_bits`).
pub const fn XENMEMF_address_bits(bits: u32) -> u32 {
    bits
}
/// Reads the address-width part of `mem_flags` (memory.h `XENMEMF_get_address_bits`).
pub const fn XENMEMF_get_address_bits(flags: u32) -> u32 {
    flags & 0xff
}
/// Builds the NUMA-node part of `mem_flags` (memory.h `XENMEMF_node`).
pub const fn XENMEMF_node(node: u32) -> u32 {
    node.wrapping_add(1) << 8
}
/// Reads the NUMA-node part of `mem_flags` (memory.h `XENMEMF_get_node`).
pub const fn XENMEMF_get_node(flags: u32) -> u32 {
    ((flags >> 8).wrapping_sub(1)) & 0xff
}
/// Populate on demand (memory.h `XENMEMF_populate_on_demand`).
pub const XENMEMF_populate_on_demand: u32 = 1 << 16;
/// The NUMA node is a requirement, not a hint (memory.h `XENMEMF_exact_node_request`).
pub const XENMEMF_exact_node_request: u32 = 1 << 17;
/// The node is a virtual NUMA node (memory.h `XENMEMF_vnode`).
pub const XENMEMF_vnode: u32 = 1 << 18;

/// `mem_flags` asking for an exact NUMA node (memory.h `XENMEMF_exact_node`).
pub const fn XENMEMF_exact_node(node: u32) -> u32 {
    XENMEMF_node(node) | XENMEMF_exact_node_request
}

/// Paging sub-op: nominate a page (memory.h `XENMEM_paging_op_nominate`).
pub const XENMEM_paging_op_nominate: u8 = 0;
/// Paging sub-op: evict a page (memory.h `XENMEM_paging_op_evict`).
pub const XENMEM_paging_op_evict: u8 = 1;
/// Paging sub-op: prepare a page (memory.h `XENMEM_paging_op_prep`).
pub const XENMEM_paging_op_prep: u8 = 2;
/// Access sub-op: set access (memory.h `XENMEM_access_op_set_access`).
pub const XENMEM_access_op_set_access: u8 = 0;
/// Access sub-op: get access (memory.h `XENMEM_access_op_get_access`).
pub const XENMEM_access_op_get_access: u8 = 1;
/// Access sub-op: set access on a list (memory.h `XENMEM_access_op_set_access_multi`).
pub const XENMEM_access_op_set_access_multi: u8 = 4;
/// Sharing sub-op: nominate a frame (memory.h `XENMEM_sharing_op_nominate_gfn`).
pub const XENMEM_sharing_op_nominate_gfn: u8 = 0;
/// Sharing sub-op: nominate a grant (memory.h `XENMEM_sharing_op_nominate_gref`).
pub const XENMEM_sharing_op_nominate_gref: u8 = 1;
/// Sharing sub-op: share (memory.h `XENMEM_sharing_op_share`).
pub const XENMEM_sharing_op_share: u8 = 2;
/// Sharing sub-op: debug a frame (memory.h `XENMEM_sharing_op_debug_gfn`).
pub const XENMEM_sharing_op_debug_gfn: u8 = 3;
/// Sharing sub-op: debug a machine frame (memory.h `XENMEM_sharing_op_debug_mfn`).
pub const XENMEM_sharing_op_debug_mfn: u8 = 4;
/// Sharing sub-op: debug a grant (memory.h `XENMEM_sharing_op_debug_gref`).
pub const XENMEM_sharing_op_debug_gref: u8 = 5;
/// Sharing sub-op: add to physmap (memory.h `XENMEM_sharing_op_add_physmap`).
pub const XENMEM_sharing_op_add_physmap: u8 = 6;
/// Sharing sub-op: audit (memory.h `XENMEM_sharing_op_audit`).
pub const XENMEM_sharing_op_audit: u8 = 7;
/// Sharing sub-op: share a range (memory.h `XENMEM_sharing_op_range_share`).
pub const XENMEM_sharing_op_range_share: u8 = 8;
/// Sharing sub-op: fork a domain (memory.h `XENMEM_sharing_op_fork`).
pub const XENMEM_sharing_op_fork: u8 = 9;
/// Sharing sub-op: reset a fork (memory.h `XENMEM_sharing_op_fork_reset`).
pub const XENMEM_sharing_op_fork_reset: u8 = 10;
/// Sharing error: bad source handle (memory.h `XENMEM_SHARING_OP_S_HANDLE_INVALID`).
pub const XENMEM_SHARING_OP_S_HANDLE_INVALID: i32 = -10;
/// Sharing error: bad client handle (memory.h `XENMEM_SHARING_OP_C_HANDLE_INVALID`).
pub const XENMEM_SHARING_OP_C_HANDLE_INVALID: i32 = -9;
/// Sharing field flag: the value is a grant reference (memory.h `XENMEM_SHARING_OP_FIELD_IS_GREF_FLAG`).
pub const XENMEM_SHARING_OP_FIELD_IS_GREF_FLAG: u64 = 1 << 62;
/// Fork flag: allow IOMMU (memory.h `XENMEM_FORK_WITH_IOMMU_ALLOWED`).
pub const XENMEM_FORK_WITH_IOMMU_ALLOWED: u16 = 1 << 0;
/// Fork flag: block interrupts (memory.h `XENMEM_FORK_BLOCK_INTERRUPTS`).
pub const XENMEM_FORK_BLOCK_INTERRUPTS: u16 = 1 << 1;
/// Fork reset flag: reset vCPU state (memory.h `XENMEM_FORK_RESET_STATE`).
pub const XENMEM_FORK_RESET_STATE: u16 = 1 << 2;
/// Fork reset flag: reset memory (memory.h `XENMEM_FORK_RESET_MEMORY`).
pub const XENMEM_FORK_RESET_MEMORY: u16 = 1 << 3;
/// Reserved device memory map: all devices (memory.h `XENMEM_RDM_ALL`).
pub const XENMEM_RDM_ALL: u32 = 1;
/// Resource type: ioreq server pages (memory.h `XENMEM_resource_ioreq_server`).
pub const XENMEM_resource_ioreq_server: u16 = 0;
/// Resource type: grant table frames (memory.h `XENMEM_resource_grant_table`).
pub const XENMEM_resource_grant_table: u16 = 1;
/// Resource type: vmtrace buffer (memory.h `XENMEM_resource_vmtrace_buf`).
pub const XENMEM_resource_vmtrace_buf: u16 = 2;
/// Grant table resource id: shared frames (memory.h `XENMEM_resource_grant_table_id_shared`).
pub const XENMEM_resource_grant_table_id_shared: u32 = 0;
/// Grant table resource id: status frames (memory.h `XENMEM_resource_grant_table_id_status`).
pub const XENMEM_resource_grant_table_id_status: u32 = 1;
/// Ioreq server frame: buffered ioreq page (memory.h `XENMEM_resource_ioreq_server_frame_bufioreq`).
pub const XENMEM_resource_ioreq_server_frame_bufioreq: u64 = 0;
/// Ioreq server frame `n` of synchronous ioreq pages (memory.h `XENMEM_resource_ioreq_server_frame_ioreq`).
pub const fn XENMEM_resource_ioreq_server_frame_ioreq(n: u64) -> u64 {
    n.wrapping_add(1)
}

/// Add-to-physmap space: the shared info page (memory.h `XENMAPSPACE_shared_info`).
pub const XENMAPSPACE_shared_info: u32 = 0;
/// Add-to-physmap space: a grant table frame (memory.h `XENMAPSPACE_grant_table`).
pub const XENMAPSPACE_grant_table: u32 = 1;
/// Add-to-physmap space: move a guest frame (memory.h `XENMAPSPACE_gmfn`).
pub const XENMAPSPACE_gmfn: u32 = 2;
/// Add-to-physmap space: move a range of guest frames (memory.h `XENMAPSPACE_gmfn_range`).
pub const XENMAPSPACE_gmfn_range: u32 = 3;
/// Add-to-physmap space: a frame of another domain, batch only
/// (memory.h `XENMAPSPACE_gmfn_foreign`).
pub const XENMAPSPACE_gmfn_foreign: u32 = 4;
/// Add-to-physmap space: device MMIO, Arm only (memory.h `XENMAPSPACE_dev_mmio`).
pub const XENMAPSPACE_dev_mmio: u32 = 5;
/// In `idx` with `XENMAPSPACE_grant_table`: map a status frame (grant v2)
/// rather than a shared frame (memory.h `XENMAPIDX_grant_table_status`).
pub const XENMAPIDX_grant_table_status: u64 = 0x8000_0000;

/// Argument of increase/decrease reservation and populate physmap
/// (memory.h `struct xen_memory_reservation`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct XenMemoryReservation {
    /// Guest address of an array of frame numbers (a guest handle).
    pub extent_start: u64,
    /// Number of extents.
    pub nr_extents: XenUlong,
    /// Each extent is 2^`extent_order` pages.
    pub extent_order: u32,
    /// `XENMEMF_*` flags.
    pub mem_flags: u32,
    /// Target domain; unprivileged callers may only name `DOMID_SELF`.
    pub domid: Domid,
    /// Padding.
    pub pad: [u8; 6],
}
crate::assert_layout!(XenMemoryReservation, 32, {
    extent_start: 0, nr_extents: 8, extent_order: 16, mem_flags: 20, domid: 24, pad: 26,
});

/// Argument of `XENMEM_exchange` (memory.h `struct xen_memory_exchange`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct XenMemoryExchange {
    /// Extents given up.
    pub r#in: XenMemoryReservation,
    /// Extents received.
    pub out: XenMemoryReservation,
    /// Out: input extents exchanged so far; must be 0 on the first call.
    pub nr_exchanged: XenUlong,
}
crate::assert_layout!(XenMemoryExchange, 72, { r#in: 0, out: 32, nr_exchanged: 64 });

/// Argument naming a domain (memory.h `struct xen_memory_domain`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct XenMemoryDomain {
    /// The domain.
    pub domid: Domid,
}
crate::assert_layout!(XenMemoryDomain, 2, { domid: 0 });

/// Argument of `XENMEM_machphys_mfn_list` (memory.h `struct xen_machphys_mfn_list`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct XenMachphysMfnList {
    /// Size of the array at `extent_start`.
    pub max_extents: u32,
    /// Padding.
    pub pad0: u32,
    /// Guest address of the array to fill.
    pub extent_start: u64,
    /// Out: entries written.
    pub nr_extents: u32,
    /// Padding.
    pub pad1: u32,
}
crate::assert_layout!(XenMachphysMfnList, 24, {
    max_extents: 0, pad0: 4, extent_start: 8, nr_extents: 16, pad1: 20,
});

/// Result of `XENMEM_machphys_mapping` (memory.h `struct xen_machphys_mapping`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct XenMachphysMapping {
    /// Start of the M2P mapping.
    pub v_start: XenUlong,
    /// End of the M2P mapping.
    pub v_end: XenUlong,
    /// Highest MFN the mapping covers.
    pub max_mfn: XenUlong,
}
crate::assert_layout!(XenMachphysMapping, 24, { v_start: 0, v_end: 8, max_mfn: 16 });

/// Argument of `XENMEM_add_to_physmap` (memory.h `struct xen_add_to_physmap`,
/// 24 bytes).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct XenAddToPhysmap {
    /// Domain whose physmap changes.
    pub domid: Domid,
    /// Number of pages, for `XENMAPSPACE_gmfn_range` only.
    pub size: u16,
    /// `XENMAPSPACE_*` (kept as an integer).
    pub space: u32,
    /// Index within the space (e.g. grant frame number).
    pub idx: XenUlong,
    /// Guest frame where the page appears.
    pub gpfn: XenPfn,
}
crate::assert_layout!(XenAddToPhysmap, 24, { domid: 0, size: 2, space: 4, idx: 8, gpfn: 16 });

/// Argument of `XENMEM_add_to_physmap_batch`
/// (memory.h `struct xen_add_to_physmap_batch`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct XenAddToPhysmapBatch {
    /// Domain whose physmap changes.
    pub domid: Domid,
    /// `XENMAPSPACE_*`.
    pub space: u16,
    /// Number of entries in the three arrays.
    pub size: u16,
    /// Foreign domain for `XENMAPSPACE_gmfn_foreign`, else zero (union `u`).
    pub foreign_domid: Domid,
    /// Guest address of the index array.
    pub idxs: u64,
    /// Guest address of the guest frame array.
    pub gpfns: u64,
    /// Guest address of the per-entry error array (`int`).
    pub errs: u64,
}
crate::assert_layout!(XenAddToPhysmapBatch, 32, {
    domid: 0, space: 2, size: 4, foreign_domid: 6, idxs: 8, gpfns: 16, errs: 24,
});

/// Argument of `XENMEM_remove_from_physmap` (memory.h `struct xen_remove_from_physmap`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct XenRemoveFromPhysmap {
    /// Domain whose physmap changes.
    pub domid: Domid,
    /// Padding.
    pub pad: [u8; 6],
    /// Guest frame to unmap.
    pub gpfn: XenPfn,
}
crate::assert_layout!(XenRemoveFromPhysmap, 16, { domid: 0, pad: 2, gpfn: 8 });

/// Argument of `XENMEM_memory_map` (memory.h `struct xen_memory_map`): a
/// buffer of [`E820Entry`] values.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct XenMemoryMap {
    /// In: capacity of `buffer` in entries; out: entries written.
    pub nr_entries: u32,
    /// Padding.
    pub pad: u32,
    /// Guest address of the entry buffer.
    pub buffer: u64,
}
crate::assert_layout!(XenMemoryMap, 16, { nr_entries: 0, pad: 4, buffer: 8 });

/// Argument of `XENMEM_set_memory_map` (memory.h `struct xen_foreign_memory_map`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct XenForeignMemoryMap {
    /// Target domain.
    pub domid: Domid,
    /// Padding.
    pub pad: [u8; 6],
    /// The map.
    pub map: XenMemoryMap,
}
crate::assert_layout!(XenForeignMemoryMap, 24, { domid: 0, pad: 2, map: 8 });

/// Argument of `XENMEM_{set,get}_pod_target` (memory.h `struct xen_pod_target`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct XenPodTarget {
    /// In: target pages.
    pub target_pages: u64,
    /// Out: total pages.
    pub tot_pages: u64,
    /// Out: pages in the PoD cache.
    pub pod_cache_pages: u64,
    /// Out: outstanding PoD entries.
    pub pod_entries: u64,
    /// Target domain.
    pub domid: Domid,
    /// Padding.
    pub pad: [u8; 6],
}
crate::assert_layout!(XenPodTarget, 40, {
    target_pages: 0, tot_pages: 8, pod_cache_pages: 16, pod_entries: 24, domid: 32, pad: 34,
});

/// One BIOS-style memory map entry as `XENMEM_memory_map` returns it: 20
/// bytes, packed (Xen's `struct e820entry`). The type values are those of
/// `XEN_HVM_MEMMAP_TYPE_*`.
#[repr(C, packed)]
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
pub struct E820Entry {
    /// Base physical address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
    /// Range type (kept as an integer).
    pub r#type: u32,
}
crate::assert_layout!(E820Entry, 20, { addr: 0, size: 8, r#type: 16 });

impl E820Entry {
    /// The exclusive end address, or `None` if it would pass 2^64.
    pub fn end(&self) -> Option<u64> {
        let (addr, size) = (self.addr, self.size);
        addr.checked_add(size)
    }
}

/// Guest page holding the HVM loader's e820 table (hvm/e820.h `HVM_E820_PAGE`).
pub const HVM_E820_PAGE: u64 = 0x0009_0000;
/// Offset of the entry count in that page (hvm/e820.h `HVM_E820_NR_OFFSET`).
pub const HVM_E820_NR_OFFSET: u64 = 0x0000_01E8;
/// Offset of the entries in that page (hvm/e820.h `HVM_E820_OFFSET`).
pub const HVM_E820_OFFSET: u64 = 0x0000_02D0;
/// End of RAM below 4 GiB in HVM guests (hvm/e820.h `HVM_BELOW_4G_RAM_END`).
pub const HVM_BELOW_4G_RAM_END: u64 = 0xF000_0000;
/// Start of the MMIO hole below 4 GiB (hvm/e820.h `HVM_BELOW_4G_MMIO_START`).
pub const HVM_BELOW_4G_MMIO_START: u64 = HVM_BELOW_4G_RAM_END;
/// Length of the MMIO hole below 4 GiB (hvm/e820.h `HVM_BELOW_4G_MMIO_LENGTH`).
pub const HVM_BELOW_4G_MMIO_LENGTH: u64 = (1 << 32) - HVM_BELOW_4G_MMIO_START;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e820_entries_parse_from_unaligned_packed_bytes() {
        let mut buf = [0u8; 1 + 40];
        // Two entries starting at an odd offset: packed, so alignment is 1.
        buf[1..9].copy_from_slice(&0x10_0000u64.to_le_bytes());
        buf[9..17].copy_from_slice(&0x20_0000u64.to_le_bytes());
        buf[17..21].copy_from_slice(&1u32.to_le_bytes());
        buf[21..29].copy_from_slice(&u64::MAX.to_le_bytes());
        buf[29..37].copy_from_slice(&1u64.to_le_bytes());
        buf[37..41].copy_from_slice(&2u32.to_le_bytes());
        let entries = <[E820Entry]>::ref_from_bytes(&buf[1..]).unwrap();
        assert_eq!(entries.len(), 2);
        let first = entries[0];
        assert_eq!({ first.addr }, 0x10_0000);
        assert_eq!(first.end(), Some(0x30_0000));
        assert_eq!({ entries[1].r#type }, 2);
        assert_eq!(entries[1].end(), None, "overflowing range is detected");
        // A partial entry is refused.
        assert!(<[E820Entry]>::ref_from_bytes(&buf[1..40]).is_err());
        assert!(E820Entry::read_from_bytes(&buf[1..20]).is_err());
    }

    #[test]
    fn add_to_physmap_round_trip() {
        let a = XenAddToPhysmap {
            domid: crate::DOMID_SELF,
            size: 0,
            space: XENMAPSPACE_shared_info,
            idx: 0,
            gpfn: 0xfeffe,
        };
        let bytes = a.as_bytes();
        assert_eq!(&bytes[0..2], &0x7ff0u16.to_le_bytes());
        assert_eq!(&bytes[16..24], &0xfeffeu64.to_le_bytes());
        assert_eq!(XenAddToPhysmap::read_from_bytes(bytes).unwrap(), a);
    }

    #[test]
    fn misaligned_reference_is_refused_but_copy_works() {
        #[repr(C, align(8))]
        struct Aligned([u8; 40]);
        let mut buf = Aligned([0u8; 40]);
        buf.0[1..3].copy_from_slice(&5u16.to_le_bytes());
        let misaligned = &buf.0[1..17];
        assert!(XenMemoryMap::ref_from_bytes(misaligned).is_err());
        assert!(XenMemoryMap::ref_from_prefix(&buf.0[1..]).is_err());
        let copy = XenMemoryMap::read_from_bytes(misaligned).unwrap();
        assert_eq!(copy.nr_entries, 5);
        assert!(XenMemoryMap::ref_from_bytes(&buf.0[0..16]).is_ok());
    }

    #[test]
    fn memflags_helpers() {
        let f = XENMEMF_address_bits(32) | XENMEMF_node(3) | XENMEMF_exact_node_request;
        assert_eq!(XENMEMF_get_address_bits(f), 32);
        assert_eq!(XENMEMF_get_node(f), 3);
        // No node given: the decode yields 0xff ("any").
        assert_eq!(XENMEMF_get_node(0), 0xff);
    }
}
