//! Grant tables: `xen/include/public/grant_table.h`.
//!
//! Grant entries (v1 and v2) live in pages shared between a granting guest
//! and the hypervisor; `grant_table_op` argument structs carry requests to
//! map, copy and query grants. Status fields stay `i16` with `GNTST_*`
//! values.

use crate::{Domid, XenPfn};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A grant reference: index into a grant table (grant_table.h `grant_ref_t`).
pub type GrantRef = u32;
/// A handle for a mapped grant (grant_table.h `grant_handle_t`).
pub type GrantHandle = u32;
/// A v2 status word (grant_table.h `grant_status_t`).
pub type GrantStatus = u16;

/// Entries reserved at the start of a table (grant_table.h `GNTTAB_NR_RESERVED_ENTRIES`).
pub const GNTTAB_NR_RESERVED_ENTRIES: u32 = 8;
/// Reserved entry for the console ring (grant_table.h `GNTTAB_RESERVED_CONSOLE`).
pub const GNTTAB_RESERVED_CONSOLE: u32 = 0;
/// Reserved entry for the xenstore ring (grant_table.h `GNTTAB_RESERVED_XENSTORE`).
pub const GNTTAB_RESERVED_XENSTORE: u32 = 1;

// Grant entry flags (grant_table.h `GTF_*`), in `flags` of the entry header.

/// Entry type: unused (grant_table.h `GTF_invalid`).
pub const GTF_invalid: u16 = 0;
/// Entry type: access to a frame is granted (grant_table.h `GTF_permit_access`).
pub const GTF_permit_access: u16 = 1;
/// Entry type: a frame may be transferred in (grant_table.h `GTF_accept_transfer`).
pub const GTF_accept_transfer: u16 = 2;
/// Entry type: transitive grant, v2 only (grant_table.h `GTF_transitive`).
pub const GTF_transitive: u16 = 3;
/// Mask of the entry type (grant_table.h `GTF_type_mask`).
pub const GTF_type_mask: u16 = 3;
/// Bit number of `GTF_readonly` (grant_table.h `_GTF_readonly`).
pub const _GTF_readonly: u16 = 2;
/// The grantee may only read (grant_table.h `GTF_readonly`).
pub const GTF_readonly: u16 = 1 << _GTF_readonly;
/// Bit number of `GTF_reading` (grant_table.h `_GTF_reading`).
pub const _GTF_reading: u16 = 3;
/// Set by the hypervisor while the grant is mapped or copied for reading (grant_table.h `GTF_reading`).
pub const GTF_reading: u16 = 1 << _GTF_reading;
/// Bit number of `GTF_writing` (grant_table.h `_GTF_writing`).
pub const _GTF_writing: u16 = 4;
/// Set by the hypervisor while the grant is mapped or copied for writing (grant_table.h `GTF_writing`).
pub const GTF_writing: u16 = 1 << _GTF_writing;
/// Bit number of `GTF_PWT` (grant_table.h `_GTF_PWT`).
pub const _GTF_PWT: u16 = 5;
/// Map with write-through caching (grant_table.h `GTF_PWT`).
pub const GTF_PWT: u16 = 1 << _GTF_PWT;
/// Bit number of `GTF_PCD` (grant_table.h `_GTF_PCD`).
pub const _GTF_PCD: u16 = 6;
/// Map uncached (grant_table.h `GTF_PCD`).
pub const GTF_PCD: u16 = 1 << _GTF_PCD;
/// Bit number of `GTF_PAT` (grant_table.h `_GTF_PAT`).
pub const _GTF_PAT: u16 = 7;
/// PAT bit for the mapping (grant_table.h `GTF_PAT`).
pub const GTF_PAT: u16 = 1 << _GTF_PAT;
/// Bit number of `GTF_sub_page` (grant_table.h `_GTF_sub_page`).
pub const _GTF_sub_page: u16 = 8;
/// v2: only part of the page is granted (grant_table.h `GTF_sub_page`).
pub const GTF_sub_page: u16 = 1 << _GTF_sub_page;
/// Bit number of `GTF_transfer_committed` (grant_table.h `_GTF_transfer_committed`).
pub const _GTF_transfer_committed: u16 = 2;
/// Transfer: the hypervisor committed to it (grant_table.h `GTF_transfer_committed`).
pub const GTF_transfer_committed: u16 = 1 << _GTF_transfer_committed;
/// Bit number of `GTF_transfer_completed` (grant_table.h `_GTF_transfer_completed`).
pub const _GTF_transfer_completed: u16 = 3;
/// Transfer: the frame field is valid (grant_table.h `GTF_transfer_completed`).
pub const GTF_transfer_completed: u16 = 1 << _GTF_transfer_completed;

/// A version 1 grant entry (grant_table.h `struct grant_entry_v1`, 8 bytes).
///
/// # Concurrency
/// The granting guest writes `domid` and `frame`, then `flags` last; the
/// hypervisor sets `GTF_reading`/`GTF_writing` in `flags` with atomic
/// compare-and-swap while the grant is in use.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct GrantEntryV1 {
    /// `GTF_*` type and flags.
    pub flags: u16,
    /// Domain being granted access.
    pub domid: Domid,
    /// Frame granted (or, for transfers, the frame received).
    pub frame: u32,
}
crate::assert_layout!(GrantEntryV1, 8, { flags: 0, domid: 2, frame: 4 });

/// The common header of v2 entries (grant_table.h `struct grant_entry_header`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct GrantEntryHeader {
    /// `GTF_*` type and flags.
    pub flags: u16,
    /// Domain being granted access.
    pub domid: Domid,
}
crate::assert_layout!(GrantEntryHeader, 4, { flags: 0, domid: 2 });

/// A version 2 grant entry (grant_table.h `union grant_entry_v2`, 16 bytes).
/// The C union is kept as a header and raw words; read the body with
/// [`GrantEntryV2::full_page`], [`GrantEntryV2::sub_page`] or
/// [`GrantEntryV2::transitive`] according to the header's type and flags.
#[repr(C, align(8))]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct GrantEntryV2 {
    /// Type, flags and grantee.
    pub hdr: GrantEntryHeader,
    /// The rest of the union.
    pub body: [u32; 3],
}
crate::assert_layout!(GrantEntryV2, 16, { hdr: 0, body: 4 });

/// The full-page member of `grant_entry_v2` (grant_table.h `full_page`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct GrantEntryV2FullPage {
    /// Header.
    pub hdr: GrantEntryHeader,
    /// Padding.
    pub pad0: u32,
    /// Frame granted.
    pub frame: u64,
}
crate::assert_layout!(GrantEntryV2FullPage, 16, { hdr: 0, pad0: 4, frame: 8 });

/// The sub-page member of `grant_entry_v2` (grant_table.h `sub_page`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct GrantEntryV2SubPage {
    /// Header.
    pub hdr: GrantEntryHeader,
    /// Offset of the granted bytes in the page.
    pub page_off: u16,
    /// Number of granted bytes.
    pub length: u16,
    /// Frame granted.
    pub frame: u64,
}
crate::assert_layout!(GrantEntryV2SubPage, 16, { hdr: 0, page_off: 4, length: 6, frame: 8 });

/// The transitive member of `grant_entry_v2` (grant_table.h `transitive`),
/// padded to the union's 16 bytes.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct GrantEntryV2Transitive {
    /// Header.
    pub hdr: GrantEntryHeader,
    /// Domain whose grant is passed on.
    pub trans_domid: Domid,
    /// Padding.
    pub pad0: u16,
    /// Reference in that domain's table.
    pub gref: GrantRef,
    /// Rest of the union.
    pub pad1: u32,
}
crate::assert_layout!(GrantEntryV2Transitive, 16, {
    hdr: 0, trans_domid: 4, pad0: 6, gref: 8, pad1: 12,
});

impl GrantEntryV2 {
    /// The entry read as a full-page grant.
    pub fn full_page(&self) -> GrantEntryV2FullPage {
        zerocopy::transmute!(*self)
    }
    /// The entry read as a sub-page grant.
    pub fn sub_page(&self) -> GrantEntryV2SubPage {
        zerocopy::transmute!(*self)
    }
    /// The entry read as a transitive grant.
    pub fn transitive(&self) -> GrantEntryV2Transitive {
        zerocopy::transmute!(*self)
    }
}

impl From<GrantEntryV2FullPage> for GrantEntryV2 {
    fn from(e: GrantEntryV2FullPage) -> Self {
        zerocopy::transmute!(e)
    }
}
impl From<GrantEntryV2SubPage> for GrantEntryV2 {
    fn from(e: GrantEntryV2SubPage) -> Self {
        zerocopy::transmute!(e)
    }
}
impl From<GrantEntryV2Transitive> for GrantEntryV2 {
    fn from(e: GrantEntryV2Transitive) -> Self {
        zerocopy::transmute!(e)
    }
}

// ---------------------------------------------------------------------------
// grant_table_op commands (grant_table.h `GNTTABOP_*`).
// ---------------------------------------------------------------------------

/// Map granted frames, argument [`GnttabMapGrantRef`] (grant_table.h `GNTTABOP_map_grant_ref`).
pub const GNTTABOP_map_grant_ref: u32 = 0;
/// Unmap, argument [`GnttabUnmapGrantRef`] (grant_table.h `GNTTABOP_unmap_grant_ref`).
pub const GNTTABOP_unmap_grant_ref: u32 = 1;
/// Size the table and list its frames, argument [`GnttabSetupTable`]
/// (grant_table.h `GNTTABOP_setup_table`).
pub const GNTTABOP_setup_table: u32 = 2;
/// Dump the table to the console, argument [`GnttabDumpTable`] (grant_table.h `GNTTABOP_dump_table`).
pub const GNTTABOP_dump_table: u32 = 3;
/// Transfer frames, argument [`GnttabTransfer`] (grant_table.h `GNTTABOP_transfer`).
pub const GNTTABOP_transfer: u32 = 4;
/// Copy between grants and frames, argument [`GnttabCopy`] (grant_table.h `GNTTABOP_copy`).
pub const GNTTABOP_copy: u32 = 5;
/// Current and maximum table size, argument [`GnttabQuerySize`] (grant_table.h `GNTTABOP_query_size`).
pub const GNTTABOP_query_size: u32 = 6;
/// Unmap and replace with another mapping, argument [`GnttabUnmapAndReplace`]
/// (grant_table.h `GNTTABOP_unmap_and_replace`).
pub const GNTTABOP_unmap_and_replace: u32 = 7;
/// Select entry format 1 or 2, argument [`GnttabSetVersion`] (grant_table.h `GNTTABOP_set_version`).
pub const GNTTABOP_set_version: u32 = 8;
/// List v2 status frames, argument [`GnttabGetStatusFrames`]
/// (grant_table.h `GNTTABOP_get_status_frames`).
pub const GNTTABOP_get_status_frames: u32 = 9;
/// Read the entry format in use, argument [`GnttabGetVersion`] (grant_table.h `GNTTABOP_get_version`).
pub const GNTTABOP_get_version: u32 = 10;
/// Swap two entries, argument [`GnttabSwapGrantRef`] (grant_table.h `GNTTABOP_swap_grant_ref`).
pub const GNTTABOP_swap_grant_ref: u32 = 11;
/// Cache maintenance on grants, argument [`GnttabCacheFlush`] (grant_table.h `GNTTABOP_cache_flush`).
pub const GNTTABOP_cache_flush: u32 = 12;

/// Bit number of `GNTMAP_device_map` (grant_table.h `_GNTMAP_device_map`).
pub const _GNTMAP_device_map: u32 = 0;
/// Map for device access (grant_table.h `GNTMAP_device_map`).
pub const GNTMAP_device_map: u32 = 1 << _GNTMAP_device_map;
/// Bit number of `GNTMAP_host_map` (grant_table.h `_GNTMAP_host_map`).
pub const _GNTMAP_host_map: u32 = 1;
/// Map for CPU access at `host_addr` (grant_table.h `GNTMAP_host_map`).
pub const GNTMAP_host_map: u32 = 1 << _GNTMAP_host_map;
/// Bit number of `GNTMAP_readonly` (grant_table.h `_GNTMAP_readonly`).
pub const _GNTMAP_readonly: u32 = 2;
/// Map read-only (grant_table.h `GNTMAP_readonly`).
pub const GNTMAP_readonly: u32 = 1 << _GNTMAP_readonly;
/// Bit number of `GNTMAP_application_map` (grant_table.h `_GNTMAP_application_map`).
pub const _GNTMAP_application_map: u32 = 3;
/// Map accessible from user mode, PV (grant_table.h `GNTMAP_application_map`).
pub const GNTMAP_application_map: u32 = 1 << _GNTMAP_application_map;
/// Bit number of `GNTMAP_contains_pte` (grant_table.h `_GNTMAP_contains_pte`).
pub const _GNTMAP_contains_pte: u32 = 4;
/// `host_addr` is the address of a PTE, PV (grant_table.h `GNTMAP_contains_pte`).
pub const GNTMAP_contains_pte: u32 = 1 << _GNTMAP_contains_pte;
/// First of the bits the guest may use freely (grant_table.h `_GNTMAP_guest_avail0`).
pub const _GNTMAP_guest_avail0: u32 = 16;
/// Mask of the guest-available bits (grant_table.h `GNTMAP_guest_avail_mask`).
pub const GNTMAP_guest_avail_mask: u32 = u32::MAX << _GNTMAP_guest_avail0;

/// Bit number of `GNTCOPY_source_gref` (grant_table.h `_GNTCOPY_source_gref`).
pub const _GNTCOPY_source_gref: u16 = 0;
/// The copy source is a grant reference (grant_table.h `GNTCOPY_source_gref`).
pub const GNTCOPY_source_gref: u16 = 1 << _GNTCOPY_source_gref;
/// Bit number of `GNTCOPY_dest_gref` (grant_table.h `_GNTCOPY_dest_gref`).
pub const _GNTCOPY_dest_gref: u16 = 1;
/// The copy destination is a grant reference (grant_table.h `GNTCOPY_dest_gref`).
pub const GNTCOPY_dest_gref: u16 = 1 << _GNTCOPY_dest_gref;

/// Cache flush: clean (grant_table.h `GNTTAB_CACHE_CLEAN`).
pub const GNTTAB_CACHE_CLEAN: u32 = 1 << 0;
/// Cache flush: invalidate (grant_table.h `GNTTAB_CACHE_INVAL`).
pub const GNTTAB_CACHE_INVAL: u32 = 1 << 1;
/// Cache flush: `a` holds a grant reference (grant_table.h `GNTTAB_CACHE_SOURCE_GREF`).
pub const GNTTAB_CACHE_SOURCE_GREF: u32 = 1 << 31;

/// Status: success (grant_table.h `GNTST_okay`).
pub const GNTST_okay: i16 = 0;
/// Status: unspecified error (grant_table.h `GNTST_general_error`).
pub const GNTST_general_error: i16 = -1;
/// Status: bad domain id (grant_table.h `GNTST_bad_domain`).
pub const GNTST_bad_domain: i16 = -2;
/// Status: bad grant reference (grant_table.h `GNTST_bad_gntref`).
pub const GNTST_bad_gntref: i16 = -3;
/// Status: bad mapping handle (grant_table.h `GNTST_bad_handle`).
pub const GNTST_bad_handle: i16 = -4;
/// Status: bad virtual address (grant_table.h `GNTST_bad_virt_addr`).
pub const GNTST_bad_virt_addr: i16 = -5;
/// Status: bad device address (grant_table.h `GNTST_bad_dev_addr`).
pub const GNTST_bad_dev_addr: i16 = -6;
/// Status: no IOMMU slot (grant_table.h `GNTST_no_device_space`).
pub const GNTST_no_device_space: i16 = -7;
/// Status: permission denied (grant_table.h `GNTST_permission_denied`).
pub const GNTST_permission_denied: i16 = -8;
/// Status: bad page (grant_table.h `GNTST_bad_page`).
pub const GNTST_bad_page: i16 = -9;
/// Status: copy crosses a page boundary (grant_table.h `GNTST_bad_copy_arg`).
pub const GNTST_bad_copy_arg: i16 = -10;
/// Status: address too wide (grant_table.h `GNTST_address_too_big`).
pub const GNTST_address_too_big: i16 = -11;
/// Status: try again (grant_table.h `GNTST_eagain`).
pub const GNTST_eagain: i16 = -12;
/// Status: out of space (grant_table.h `GNTST_no_space`).
pub const GNTST_no_space: i16 = -13;

/// Argument structs of `grant_table_op`, each paired with its command. The
/// hypercall takes an array of `count` of them.
pub trait GnttabOpArg: FromBytes + IntoBytes + Immutable + KnownLayout {
    /// The `GNTTABOP_*` command taking this argument.
    const CMD: u32;
}

macro_rules! gnttab_arg {
    ($(#[$doc:meta])* $name:ident = $cmd:ident, $size:expr, { $($(#[$fdoc:meta])* $field:ident : $ty:ty = $off:expr),* $(,)? }) => {
        $(#[$doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
        pub struct $name {
            $($(#[$fdoc])* pub $field: $ty,)*
        }
        crate::assert_layout!($name, $size, { $($field: $off),* });
        impl GnttabOpArg for $name {
            const CMD: u32 = $cmd;
        }
    };
}

gnttab_arg!(
    /// Argument of `GNTTABOP_map_grant_ref` (grant_table.h `struct gnttab_map_grant_ref`, 32 bytes).
    GnttabMapGrantRef = GNTTABOP_map_grant_ref, 32, {
        /// Where to map (guest address, or PTE address with `GNTMAP_contains_pte`).
        host_addr: u64 = 0,
        /// `GNTMAP_*`.
        flags: u32 = 8,
        /// Grant reference in the granting domain's table.
        r#ref: GrantRef = 12,
        /// Granting domain.
        dom: Domid = 16,
        /// Out: `GNTST_*`.
        status: i16 = 18,
        /// Out: handle for unmapping.
        handle: GrantHandle = 20,
        /// Out: bus address for device mappings.
        dev_bus_addr: u64 = 24,
    }
);
gnttab_arg!(
    /// Argument of `GNTTABOP_unmap_grant_ref` (grant_table.h `struct gnttab_unmap_grant_ref`).
    GnttabUnmapGrantRef = GNTTABOP_unmap_grant_ref, 24, {
        /// Address the grant was mapped at.
        host_addr: u64 = 0,
        /// Bus address of a device mapping.
        dev_bus_addr: u64 = 8,
        /// Handle from the map.
        handle: GrantHandle = 16,
        /// Out: `GNTST_*`.
        status: i16 = 20,
        /// Padding.
        pad: u16 = 22,
    }
);
gnttab_arg!(
    /// Argument of `GNTTABOP_setup_table` (grant_table.h `struct gnttab_setup_table`).
    GnttabSetupTable = GNTTABOP_setup_table, 24, {
        /// Domain (`DOMID_SELF`).
        dom: Domid = 0,
        /// Padding.
        pad0: u16 = 2,
        /// Number of frames wanted.
        nr_frames: u32 = 4,
        /// Out: `GNTST_*`.
        status: i16 = 8,
        /// Padding.
        pad1: [u16; 3] = 10,
        /// Guest address of an array of `nr_frames` frame numbers to fill.
        frame_list: u64 = 16,
    }
);
gnttab_arg!(
    /// Argument of `GNTTABOP_dump_table` (grant_table.h `struct gnttab_dump_table`).
    GnttabDumpTable = GNTTABOP_dump_table, 4, {
        /// Domain.
        dom: Domid = 0,
        /// Out: `GNTST_*`.
        status: i16 = 2,
    }
);
gnttab_arg!(
    /// Argument of `GNTTABOP_transfer` (grant_table.h `struct gnttab_transfer`).
    GnttabTransfer = GNTTABOP_transfer, 24, {
        /// Frame to give away.
        mfn: XenPfn = 0,
        /// Receiving domain.
        domid: Domid = 8,
        /// Padding.
        pad0: u16 = 10,
        /// Receiver's `GTF_accept_transfer` entry.
        r#ref: GrantRef = 12,
        /// Out: `GNTST_*`.
        status: i16 = 16,
        /// Padding.
        pad1: [u16; 3] = 18,
    }
);

/// One end of a grant copy (grant_table.h `struct gnttab_copy_ptr`). The C
/// union `u` holds a grant reference (with `GNTCOPY_*_gref`) or a frame.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct GnttabCopyPtr {
    /// Grant reference (low 32 bits) or guest frame number.
    pub u: u64,
    /// Domain owning the reference or frame.
    pub domid: Domid,
    /// Byte offset in the page.
    pub offset: u16,
    /// Padding.
    pub pad: u32,
}
crate::assert_layout!(GnttabCopyPtr, 16, { u: 0, domid: 8, offset: 10, pad: 12 });

impl GnttabCopyPtr {
    /// The union read as a grant reference (its low 32 bits on x86_64).
    pub fn gref(&self) -> GrantRef {
        self.u as u32
    }
    /// The union read as a frame number.
    pub fn gmfn(&self) -> XenPfn {
        self.u
    }
}

gnttab_arg!(
    /// Argument of `GNTTABOP_copy` (grant_table.h `struct gnttab_copy`, 40 bytes).
    GnttabCopy = GNTTABOP_copy, 40, {
        /// Source.
        source: GnttabCopyPtr = 0,
        /// Destination.
        dest: GnttabCopyPtr = 16,
        /// Bytes to copy; neither end may cross its page.
        len: u16 = 32,
        /// `GNTCOPY_*`.
        flags: u16 = 34,
        /// Out: `GNTST_*`.
        status: i16 = 36,
        /// Padding.
        pad: u16 = 38,
    }
);
gnttab_arg!(
    /// Argument of `GNTTABOP_query_size` (grant_table.h `struct gnttab_query_size`).
    GnttabQuerySize = GNTTABOP_query_size, 16, {
        /// Domain (`DOMID_SELF`).
        dom: Domid = 0,
        /// Padding.
        pad0: u16 = 2,
        /// Out: current frames.
        nr_frames: u32 = 4,
        /// Out: maximum frames.
        max_nr_frames: u32 = 8,
        /// Out: `GNTST_*`.
        status: i16 = 12,
        /// Padding.
        pad1: u16 = 14,
    }
);
gnttab_arg!(
    /// Argument of `GNTTABOP_unmap_and_replace` (grant_table.h `struct gnttab_unmap_and_replace`).
    GnttabUnmapAndReplace = GNTTABOP_unmap_and_replace, 24, {
        /// Address of the grant mapping.
        host_addr: u64 = 0,
        /// Address whose mapping replaces it.
        new_addr: u64 = 8,
        /// Handle from the map.
        handle: GrantHandle = 16,
        /// Out: `GNTST_*`.
        status: i16 = 20,
        /// Padding.
        pad: u16 = 22,
    }
);
gnttab_arg!(
    /// Argument of `GNTTABOP_set_version` (grant_table.h `struct gnttab_set_version`).
    GnttabSetVersion = GNTTABOP_set_version, 4, {
        /// In: 1 or 2; out: the version in use.
        version: u32 = 0,
    }
);
gnttab_arg!(
    /// Argument of `GNTTABOP_get_status_frames` (grant_table.h `struct gnttab_get_status_frames`).
    GnttabGetStatusFrames = GNTTABOP_get_status_frames, 16, {
        /// Number of frames to list.
        nr_frames: u32 = 0,
        /// Domain.
        dom: Domid = 4,
        /// Out: `GNTST_*`.
        status: i16 = 6,
        /// Guest address of a `u64` array to fill.
        frame_list: u64 = 8,
    }
);
gnttab_arg!(
    /// Argument of `GNTTABOP_get_version` (grant_table.h `struct gnttab_get_version`).
    GnttabGetVersion = GNTTABOP_get_version, 8, {
        /// Domain.
        dom: Domid = 0,
        /// Padding.
        pad: u16 = 2,
        /// Out: version.
        version: u32 = 4,
    }
);
gnttab_arg!(
    /// Argument of `GNTTABOP_swap_grant_ref` (grant_table.h `struct gnttab_swap_grant_ref`).
    GnttabSwapGrantRef = GNTTABOP_swap_grant_ref, 12, {
        /// First entry.
        ref_a: GrantRef = 0,
        /// Second entry.
        ref_b: GrantRef = 4,
        /// Out: `GNTST_*`.
        status: i16 = 8,
        /// Padding.
        pad: u16 = 10,
    }
);
gnttab_arg!(
    /// Argument of `GNTTABOP_cache_flush` (grant_table.h `struct gnttab_cache_flush`).
    GnttabCacheFlush = GNTTABOP_cache_flush, 16, {
        /// Union: device bus address, or grant reference with `GNTTAB_CACHE_SOURCE_GREF`.
        a: u64 = 0,
        /// Offset in the page.
        offset: u16 = 8,
        /// Length.
        length: u16 = 10,
        /// `GNTTAB_CACHE_*`.
        op: u32 = 12,
    }
);

/// grant_table.h's message for a `GNTST_*` status, or `None` for values it
/// does not define.
pub fn gntst_message(status: i16) -> Option<&'static str> {
    const MSGS: [&str; 14] = [
        "okay",
        "undefined error",
        "unrecognised domain id",
        "invalid grant reference",
        "invalid mapping handle",
        "invalid virtual address",
        "invalid device address",
        "no spare translation slot in the I/O MMU",
        "permission denied",
        "bad page",
        "copy arguments cross page boundary",
        "page address size too large",
        "operation not done; try again",
        "out of space",
    ];
    let idx = usize::try_from(i32::from(status).checked_neg()?).ok()?;
    MSGS.get(idx).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_views_round_trip() {
        let sub = GrantEntryV2SubPage {
            hdr: GrantEntryHeader {
                flags: GTF_permit_access | GTF_sub_page,
                domid: 3,
            },
            page_off: 512,
            length: 1024,
            frame: 0x1_0000_0000,
        };
        let e = GrantEntryV2::from(sub);
        assert_eq!(e.sub_page(), sub);
        assert_eq!(e.full_page().frame, 0x1_0000_0000);
        let t = GrantEntryV2Transitive {
            hdr: GrantEntryHeader {
                flags: GTF_transitive,
                domid: 1,
            },
            trans_domid: 9,
            pad0: 0,
            gref: 77,
            pad1: 0,
        };
        let e = GrantEntryV2::from(t);
        assert_eq!(e.transitive(), t);
        assert_eq!(e.hdr.flags & GTF_type_mask, GTF_transitive);
    }

    #[test]
    fn v1_table_page_from_bytes() {
        let mut page = [0u8; 4096];
        page[8..10].copy_from_slice(&(GTF_permit_access | GTF_readonly).to_le_bytes());
        page[10..12].copy_from_slice(&5u16.to_le_bytes());
        page[12..16].copy_from_slice(&0xabcdu32.to_le_bytes());
        let entries = <[GrantEntryV1; 512]>::read_from_bytes(&page[..]).unwrap();
        assert_eq!(
            entries[1],
            GrantEntryV1 {
                flags: 5,
                domid: 5,
                frame: 0xabcd
            }
        );
        assert!(<[GrantEntryV1; 512]>::read_from_bytes(&page[..4095]).is_err());
        // v2 entries need 8-byte alignment for a reference; copies do not.
        #[repr(C, align(8))]
        struct Page([u8; 4096]);
        let aligned = Page(page);
        let v2 = <[GrantEntryV2]>::ref_from_bytes(&aligned.0[..]).unwrap();
        assert_eq!(v2.len(), 256);
        assert_eq!(v2[0].body[1], 5 << 16 | 5);
        assert!(<[GrantEntryV2]>::ref_from_bytes(&aligned.0[4..4092]).is_err());
        let (copy, _) = GrantEntryV2::read_from_prefix(&aligned.0[4..]).unwrap();
        assert_eq!(copy.body[0], 5 << 16 | 5);
    }

    #[test]
    fn map_grant_ref_bytes() {
        let m = GnttabMapGrantRef {
            host_addr: 0x1000,
            flags: GNTMAP_host_map | GNTMAP_readonly,
            r#ref: 8,
            dom: 0,
            status: GNTST_bad_gntref,
            handle: 0,
            dev_bus_addr: 0,
        };
        let b = m.as_bytes();
        assert_eq!(&b[8..12], &6u32.to_le_bytes());
        assert_eq!(&b[18..20], &(-3i16).to_le_bytes());
        assert_eq!(GnttabMapGrantRef::read_from_bytes(b).unwrap(), m);
    }

    #[test]
    fn status_messages() {
        assert_eq!(gntst_message(GNTST_okay), Some("okay"));
        assert_eq!(gntst_message(GNTST_no_space), Some("out of space"));
        assert_eq!(gntst_message(-14), None);
        assert_eq!(gntst_message(1), None);
        assert_eq!(gntst_message(i16::MIN), None);
    }
}
