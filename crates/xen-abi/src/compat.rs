//! The 32-bit ("compat") layouts: what a guest running in 32-bit mode
//! passes to and reads from Xen (Xen's `xen/include/compat`, generated from
//! the public headers compiled for i386, and `xen/include/xlat.lst`).
//!
//! On x86_32, `unsigned long`, `xen_ulong_t`, `xen_pfn_t` and guest handles
//! are 4 bytes, and a `uint64_t` member is aligned to 4, not 8. A struct made
//! only of fixed-width members aligned on their size keeps the x86_64 layout;
//! those are listed by [`same_in_compat!`] and need no second definition.
//! Every other argument struct a PVH guest may pass has a `Compat*` type here
//! (`#[repr(C, packed(4))]`, the i386 alignment), named as Xen names it
//! (`struct compat_memory_reservation` is [`CompatMemoryReservation`]), with
//! its size and offsets asserted. `tools/check_layouts.py` checks both
//! groups against Xen's headers compiled with `gcc -m32`.
//!
//! A 32-bit guest's guest handles are 32-bit linear addresses, and the
//! frame arrays they point at hold 4-byte `xen_pfn_t` values.

use crate::{Domid, GrantRef, VcpuTimeInfo, XEN_LEGACY_MAX_VCPUS};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `xen_pfn_t` of a 32-bit guest.
pub type CompatPfn = u32;
/// `unsigned long` / `xen_ulong_t` of a 32-bit guest.
pub type CompatUlong = u32;
/// A guest handle of a 32-bit guest: a 32-bit linear address.
pub type CompatHandle = u32;

/// Lists argument structs whose layout is the same for 32- and 64-bit
/// guests (no `unsigned long`, `xen_pfn_t` or handle, no `uint64_t` after a
/// member that leaves it 4-aligned). The checker compiles their x86_64
/// assertions again with `gcc -m32`; in Rust it only names the types.
#[macro_export]
macro_rules! same_in_compat {
    ($($ty:ty),* $(,)?) => {
        const _: () = { $(let _ = ::core::mem::size_of::<$ty>();)* };
    };
}

same_in_compat!(
    crate::EvtchnAllocUnbound,
    crate::EvtchnBindInterdomain,
    crate::EvtchnBindVirq,
    crate::EvtchnBindPirq,
    crate::EvtchnBindIpi,
    crate::EvtchnClose,
    crate::EvtchnSend,
    crate::EvtchnBindVcpu,
    crate::EvtchnUnmask,
    crate::EvtchnReset,
    crate::EvtchnInitControl,
    crate::EvtchnExpandArray,
    crate::EvtchnSetPriority,
    crate::GnttabMapGrantRef,
    crate::GnttabUnmapGrantRef,
    crate::GnttabDumpTable,
    crate::GnttabQuerySize,
    crate::GnttabUnmapAndReplace,
    crate::GnttabSetVersion,
    crate::GnttabGetVersion,
    crate::GnttabSwapGrantRef,
    crate::GnttabCacheFlush,
    crate::SchedShutdown,
    crate::SchedRemoteShutdown,
    crate::SchedWatchdog,
    crate::VcpuRegisterRunstateMemoryArea,
    crate::VcpuRegisterTimeMemoryArea,
    crate::VcpuSetPeriodicTimer,
    crate::VcpuRegisterVcpuInfo,
    crate::VcpuGetPhysid,
    crate::VcpuTimeInfo,
    crate::XenFeatureInfo,
    crate::XenCompileInfo,
    crate::XenHvmParam,
    crate::XenHvmPagetableDying,
    crate::XenHvmGetTime,
    crate::XenHvmGetMemType,
    crate::XenMemoryDomain,
    crate::E820Entry,
    crate::GrantEntryV1,
    crate::PhysdevEoi,
    crate::PhysdevIrqStatusQuery,
    crate::PhysdevSetIopl,
    crate::PhysdevUnmapPirq,
    crate::PhysdevManagePci,
    crate::PhysdevRestoreMsi,
    crate::PhysdevSetupGsi,
    crate::PhysdevGetFreePirq,
    crate::PhysdevPciMmcfgReserved,
    crate::PhysdevPciDeviceAdd,
    crate::PhysdevPciDevice,
);

macro_rules! compat_struct {
    ($(#[$doc:meta])* $name:ident, $size:expr, { $($(#[$fdoc:meta])* $field:ident : $ty:ty = $off:expr),* $(,)? }) => {
        $(#[$doc])*
        #[repr(C, packed(4))]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
        pub struct $name {
            $($(#[$fdoc])* pub $field: $ty,)*
        }
        crate::assert_layout!($name, $size, { $($field: $off),* });
    };
}

compat_struct!(
    /// `struct compat_memory_reservation` (memory.h `xen_memory_reservation`, 20 bytes).
    CompatMemoryReservation, 20, {
        /// Guest address of an array of 4-byte frame numbers.
        extent_start: CompatHandle = 0,
        /// Number of extents.
        nr_extents: CompatUlong = 4,
        /// Each extent is 2^`extent_order` pages.
        extent_order: u32 = 8,
        /// `XENMEMF_*` flags.
        mem_flags: u32 = 12,
        /// Target domain.
        domid: Domid = 16,
        /// Padding.
        pad: u16 = 18,
    }
);
compat_struct!(
    /// `struct compat_memory_exchange` (memory.h `xen_memory_exchange`, 44 bytes).
    CompatMemoryExchange, 44, {
        /// Extents given up.
        r#in: CompatMemoryReservation = 0,
        /// Extents received.
        out: CompatMemoryReservation = 20,
        /// Out: input extents exchanged so far.
        nr_exchanged: CompatUlong = 40,
    }
);
compat_struct!(
    /// `struct compat_machphys_mfn_list` (memory.h `xen_machphys_mfn_list`, 12 bytes).
    CompatMachphysMfnList, 12, {
        /// Size of the array at `extent_start`.
        max_extents: u32 = 0,
        /// Guest address of the array to fill.
        extent_start: CompatHandle = 4,
        /// Out: entries written.
        nr_extents: u32 = 8,
    }
);
compat_struct!(
    /// `struct compat_machphys_mapping` (memory.h `xen_machphys_mapping`, 12 bytes).
    CompatMachphysMapping, 12, {
        /// Start of the M2P mapping.
        v_start: CompatUlong = 0,
        /// End of the M2P mapping.
        v_end: CompatUlong = 4,
        /// Highest MFN the mapping covers.
        max_mfn: CompatUlong = 8,
    }
);
compat_struct!(
    /// `struct compat_add_to_physmap` (memory.h `xen_add_to_physmap`, 16 bytes).
    CompatAddToPhysmap, 16, {
        /// Domain whose physmap changes.
        domid: Domid = 0,
        /// Number of pages, for `XENMAPSPACE_gmfn_range` only.
        size: u16 = 2,
        /// `XENMAPSPACE_*`.
        space: u32 = 4,
        /// Index within the space.
        idx: CompatUlong = 8,
        /// Guest frame where the page appears.
        gpfn: CompatPfn = 12,
    }
);
compat_struct!(
    /// `struct compat_add_to_physmap_batch` (memory.h `xen_add_to_physmap_batch`, 20 bytes).
    CompatAddToPhysmapBatch, 20, {
        /// Domain whose physmap changes.
        domid: Domid = 0,
        /// `XENMAPSPACE_*`.
        space: u16 = 2,
        /// Number of entries in the three arrays.
        size: u16 = 4,
        /// Foreign domain for `XENMAPSPACE_gmfn_foreign` (union `u`).
        foreign_domid: Domid = 6,
        /// Guest address of the 4-byte index array.
        idxs: CompatHandle = 8,
        /// Guest address of the 4-byte frame array.
        gpfns: CompatHandle = 12,
        /// Guest address of the `int` error array.
        errs: CompatHandle = 16,
    }
);
compat_struct!(
    /// `struct compat_remove_from_physmap` (memory.h `xen_remove_from_physmap`, 8 bytes).
    CompatRemoveFromPhysmap, 8, {
        /// Domain whose physmap changes.
        domid: Domid = 0,
        /// Padding.
        pad: u16 = 2,
        /// Guest frame to unmap.
        gpfn: CompatPfn = 4,
    }
);
compat_struct!(
    /// `struct compat_memory_map` (memory.h `xen_memory_map`, 8 bytes).
    CompatMemoryMap, 8, {
        /// In: capacity of `buffer` in entries; out: entries written.
        nr_entries: u32 = 0,
        /// Guest address of the [`crate::E820Entry`] buffer.
        buffer: CompatHandle = 4,
    }
);
compat_struct!(
    /// `struct compat_foreign_memory_map` (memory.h `xen_foreign_memory_map`, 12 bytes).
    CompatForeignMemoryMap, 12, {
        /// Domain.
        domid: Domid = 0,
        /// Padding.
        pad: u16 = 2,
        /// The map.
        map: CompatMemoryMap = 4,
    }
);
compat_struct!(
    /// `struct compat_pod_target` (memory.h `xen_pod_target`, 36 bytes).
    CompatPodTarget, 36, {
        /// Target pages.
        target_pages: u64 = 0,
        /// Out: pages in use.
        tot_pages: u64 = 8,
        /// Out: pages in the PoD cache.
        pod_cache_pages: u64 = 16,
        /// Out: PoD entries.
        pod_entries: u64 = 24,
        /// Domain.
        domid: Domid = 32,
        /// Padding.
        pad: u16 = 34,
    }
);
compat_struct!(
    /// `struct compat_platform_parameters` (version.h `xen_platform_parameters`, 4 bytes).
    CompatPlatformParameters, 4, {
        /// Start of the hypervisor's virtual range.
        virt_start: CompatUlong = 0,
    }
);
compat_struct!(
    /// `struct compat_gnttab_setup_table` (grant_table.h `gnttab_setup_table`, 16 bytes).
    CompatGnttabSetupTable, 16, {
        /// Domain (`DOMID_SELF`).
        dom: Domid = 0,
        /// Padding.
        pad0: u16 = 2,
        /// Number of frames wanted.
        nr_frames: u32 = 4,
        /// Out: `GNTST_*`.
        status: i16 = 8,
        /// Padding.
        pad1: u16 = 10,
        /// Guest address of an array of `nr_frames` 4-byte frame numbers.
        frame_list: CompatHandle = 12,
    }
);
compat_struct!(
    /// `struct compat_gnttab_transfer` (grant_table.h `gnttab_transfer`, 16 bytes).
    CompatGnttabTransfer, 16, {
        /// Frame to give away.
        mfn: CompatPfn = 0,
        /// Receiving domain.
        domid: Domid = 4,
        /// Padding.
        pad0: u16 = 6,
        /// Receiver's `GTF_accept_transfer` entry.
        r#ref: GrantRef = 8,
        /// Out: `GNTST_*`.
        status: i16 = 12,
        /// Padding.
        pad1: u16 = 14,
    }
);
compat_struct!(
    /// One end of a grant copy in the 32-bit layout (grant_table.h
    /// `gnttab_copy_ptr`, 8 bytes): the union `u` is a grant reference or
    /// a 4-byte frame number.
    CompatGnttabCopyPtr, 8, {
        /// Grant reference or guest frame number.
        u: u32 = 0,
        /// Domain owning the reference or frame.
        domid: Domid = 4,
        /// Byte offset in the page.
        offset: u16 = 6,
    }
);
compat_struct!(
    /// `struct compat_gnttab_copy` (grant_table.h `gnttab_copy`, 24 bytes).
    CompatGnttabCopy, 24, {
        /// Source.
        source: CompatGnttabCopyPtr = 0,
        /// Destination.
        dest: CompatGnttabCopyPtr = 8,
        /// Bytes to copy.
        len: u16 = 16,
        /// `GNTCOPY_*`.
        flags: u16 = 18,
        /// Out: `GNTST_*`.
        status: i16 = 20,
        /// Padding.
        pad: u16 = 22,
    }
);
compat_struct!(
    /// `struct compat_gnttab_get_status_frames` (grant_table.h
    /// `gnttab_get_status_frames`, 12 bytes).
    CompatGnttabGetStatusFrames, 12, {
        /// Number of frames to list.
        nr_frames: u32 = 0,
        /// Domain.
        dom: Domid = 4,
        /// Out: `GNTST_*`.
        status: i16 = 6,
        /// Guest address of a `uint64_t` array to fill.
        frame_list: CompatHandle = 8,
    }
);
compat_struct!(
    /// `struct compat_sched_poll` (sched.h `sched_poll`, 16 bytes).
    CompatSchedPoll, 16, {
        /// Guest address of an array of [`crate::EvtchnPort`].
        ports: CompatHandle = 0,
        /// Number of ports in the array.
        nr_ports: u32 = 4,
        /// Absolute system-time deadline in ns, 0 for none.
        timeout: u64 = 8,
    }
);
compat_struct!(
    /// `struct compat_vcpu_runstate_info` (vcpu.h `vcpu_runstate_info`, 44 bytes).
    CompatVcpuRunstateInfo, 44, {
        /// Current `RUNSTATE_*`.
        state: i32 = 0,
        /// System time when `state` was entered; top bit is `XEN_RUNSTATE_UPDATE`.
        state_entry_time: u64 = 4,
        /// Nanoseconds spent in each runstate.
        time: [u64; 4] = 12,
    }
);
compat_struct!(
    /// `struct compat_vcpu_set_singleshot_timer` (vcpu.h
    /// `vcpu_set_singleshot_timer`, 12 bytes).
    CompatVcpuSetSingleshotTimer, 12, {
        /// Absolute system time of the deadline, ns.
        timeout_abs_ns: u64 = 0,
        /// `VCPU_SSHOTTMR_*`.
        flags: u32 = 8,
    }
);
compat_struct!(
    /// `struct compat_arch_vcpu_info` (xen-x86_32.h `arch_vcpu_info`, 24
    /// bytes: padded so that `vcpu_info` stays 64 bytes).
    CompatArchVcpuInfo, 24, {
        /// Faulting address of the last page fault (PV guests).
        cr2: CompatUlong = 0,
        /// Padding.
        pad: [CompatUlong; 5] = 4,
    }
);
compat_struct!(
    /// `struct compat_vcpu_info` (xen.h `vcpu_info`, 64 bytes as on
    /// x86_64, but `evtchn_pending_sel` is 4 bytes at 4 and `time` is at 32).
    CompatVcpuInfo, 64, {
        /// Non-zero when an event upcall is pending.
        evtchn_upcall_pending: u8 = 0,
        /// Non-zero masks upcalls.
        evtchn_upcall_mask: u8 = 1,
        /// Padding.
        pad: u16 = 2,
        /// 2-level events: which 32-bit words of `evtchn_pending` have pending bits.
        evtchn_pending_sel: CompatUlong = 4,
        /// Architecture-specific state.
        arch: CompatArchVcpuInfo = 8,
        /// pvclock parameters (same layout as x86_64).
        time: VcpuTimeInfo = 32,
    }
);
compat_struct!(
    /// `struct compat_arch_shared_info` (arch-x86/xen.h `arch_shared_info`, 28 bytes).
    CompatArchSharedInfo, 28, {
        /// Number of valid p2m entries (PV guests).
        max_pfn: CompatUlong = 0,
        /// Frame of the p2m frame list list (PV guests).
        pfn_to_mfn_frame_list_list: CompatPfn = 4,
        /// NMI reason bits.
        nmi_reason: CompatUlong = 8,
        /// CR3 of the linear p2m list (PV guests).
        p2m_cr3: CompatUlong = 12,
        /// Virtual address of the linear p2m list (PV guests).
        p2m_vaddr: CompatUlong = 16,
        /// Generation count of the p2m mapping (PV guests).
        p2m_generation: CompatUlong = 20,
        /// Wall-clock seconds, high 32 bits (in `arch` on x86_32).
        wc_sec_hi: u32 = 24,
    }
);

/// Words in each 2-level event bitmap of a 32-bit shared info
/// (`sizeof(xen_ulong_t) * 8`: 1024 ports).
pub const COMPAT_EVTCHN_2L_WORDS: usize = 32;

/// `struct compat_shared_info` (xen.h `shared_info` for x86_32, 2344 bytes):
/// the shared info page of a domain that set it up from 32-bit mode.
#[repr(C, packed(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct CompatSharedInfo {
    /// The legacy `vcpu_info` slots for vCPUs 0..32.
    pub vcpu_info: [CompatVcpuInfo; XEN_LEGACY_MAX_VCPUS],
    /// 2-level event channels: pending bits, one per port.
    pub evtchn_pending: [CompatUlong; COMPAT_EVTCHN_2L_WORDS],
    /// 2-level event channels: mask bits, one per port.
    pub evtchn_mask: [CompatUlong; COMPAT_EVTCHN_2L_WORDS],
    /// Wall-clock update counter, odd during an update.
    pub wc_version: u32,
    /// Wall-clock seconds at system time 0 (low 32 bits).
    pub wc_sec: u32,
    /// Wall-clock nanoseconds at system time 0.
    pub wc_nsec: u32,
    /// Architecture-specific state.
    pub arch: CompatArchSharedInfo,
}
crate::assert_layout!(CompatSharedInfo, 2344, {
    vcpu_info: 0, evtchn_pending: 2048, evtchn_mask: 2176, wc_version: 2304,
    wc_sec: 2308, wc_nsec: 2312, arch: 2316,
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_32bit_add_to_physmap_reads_from_its_own_offsets() {
        let mut raw = [0u8; 16];
        raw[0..2].copy_from_slice(&0x7ff0u16.to_le_bytes());
        raw[4..8].copy_from_slice(&crate::XENMAPSPACE_shared_info.to_le_bytes());
        raw[8..12].copy_from_slice(&7u32.to_le_bytes());
        raw[12..16].copy_from_slice(&0xfeffu32.to_le_bytes());
        let a = CompatAddToPhysmap::read_from_bytes(&raw).unwrap();
        assert_eq!({ a.domid }, 0x7ff0);
        assert_eq!({ a.space }, crate::XENMAPSPACE_shared_info);
        assert_eq!({ a.idx }, 7);
        assert_eq!({ a.gpfn }, 0xfeff);
        assert!(CompatAddToPhysmap::read_from_bytes(&raw[..15]).is_err());
    }

    #[test]
    fn a_32bit_runstate_has_its_entry_time_at_4() {
        let r = CompatVcpuRunstateInfo {
            state: 1,
            state_entry_time: 0x1122_3344_5566_7788,
            time: [1, 2, 3, 4],
        };
        let b = r.as_bytes();
        assert_eq!(b.len(), 44);
        assert_eq!(&b[4..12], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(&b[36..44], &4u64.to_le_bytes());
    }
}

compat_struct!(
    /// `struct compat_physdev_map_pirq` (physdev.h `physdev_map_pirq`, 36
    /// bytes: `table_base` is 4-aligned).
    CompatPhysdevMapPirq, 36, {
        /// The domain the pirq is for (`DOMID_SELF` allowed).
        domid: Domid = 0,
        /// Padding.
        pad0: u16 = 2,
        /// `MAP_PIRQ_TYPE_*`.
        r#type: i32 = 4,
        /// The GSI, or the MSI-X entry.
        index: i32 = 8,
        /// In or out: the pirq.
        pirq: i32 = 12,
        /// The function's bus (segment in the high 16 bits for the `_SEG` types).
        bus: i32 = 16,
        /// The function's device and function number.
        devfn: i32 = 20,
        /// MSI-X entry number, or the vector count.
        entry_nr: i32 = 24,
        /// The MSI-X table's address.
        table_base: u64 = 28,
    }
);

compat_struct!(
    /// `struct compat_physdev_pirq_eoi_gmfn` (physdev.h
    /// `physdev_pirq_eoi_gmfn`, 4 bytes: `xen_pfn_t` is 32-bit).
    CompatPhysdevPirqEoiGmfn, 4, {
        /// The guest frame holding one bit per pirq.
        gmfn: CompatPfn = 0,
    }
);
