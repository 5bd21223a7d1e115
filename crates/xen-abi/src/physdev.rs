//! The `physdev_op` hypercall: `xen/include/public/physdev.h`, the
//! sub-ops a PVH driver domain uses for the devices assigned to it
//! (interrupts as pirqs, end of interrupt, reporting PCI functions).
//!
//! The definitions only: which sub-ops the hypervisor implements is in
//! `docs/abi-coverage.md`.

use crate::Domid;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Acknowledge a pirq, argument [`PhysdevEoi`] (physdev.h `PHYSDEVOP_eoi`).
pub const PHYSDEVOP_eoi: u32 = 12;
/// Register a page of pirq EOI bits, old layout, argument
/// [`PhysdevPirqEoiGmfn`] (physdev.h `PHYSDEVOP_pirq_eoi_gmfn_v1`).
pub const PHYSDEVOP_pirq_eoi_gmfn_v1: u32 = 17;
/// Register a page of pirq EOI bits, argument [`PhysdevPirqEoiGmfn`]
/// (physdev.h `PHYSDEVOP_pirq_eoi_gmfn_v2`).
pub const PHYSDEVOP_pirq_eoi_gmfn_v2: u32 = 28;
/// Whether a pirq needs an EOI or is shared, argument
/// [`PhysdevIrqStatusQuery`] (physdev.h `PHYSDEVOP_irq_status_query`).
pub const PHYSDEVOP_irq_status_query: u32 = 5;
/// Set the I/O privilege level, PV only, argument [`PhysdevSetIopl`]
/// (physdev.h `PHYSDEVOP_set_iopl`).
pub const PHYSDEVOP_set_iopl: u32 = 6;
/// Install an I/O bitmap, PV only (physdev.h `PHYSDEVOP_set_iobitmap`).
pub const PHYSDEVOP_set_iobitmap: u32 = 7;
/// Read an IOAPIC register, hardware domain (physdev.h `PHYSDEVOP_apic_read`).
pub const PHYSDEVOP_apic_read: u32 = 8;
/// Write an IOAPIC register, hardware domain (physdev.h `PHYSDEVOP_apic_write`).
pub const PHYSDEVOP_apic_write: u32 = 9;
/// Allocate a vector, obsolete (physdev.h `PHYSDEVOP_alloc_irq_vector`).
pub const PHYSDEVOP_alloc_irq_vector: u32 = 10;
/// Free a vector, obsolete (physdev.h `PHYSDEVOP_free_irq_vector`).
pub const PHYSDEVOP_free_irq_vector: u32 = 11;
/// Map a GSI or an MSI to a pirq of a domain, argument [`PhysdevMapPirq`]
/// (physdev.h `PHYSDEVOP_map_pirq`).
pub const PHYSDEVOP_map_pirq: u32 = 13;
/// Undo `PHYSDEVOP_map_pirq`, argument [`PhysdevUnmapPirq`] (physdev.h
/// `PHYSDEVOP_unmap_pirq`).
pub const PHYSDEVOP_unmap_pirq: u32 = 14;
/// Report a PCI function, old form, argument [`PhysdevManagePci`]
/// (physdev.h `PHYSDEVOP_manage_pci_add`).
pub const PHYSDEVOP_manage_pci_add: u32 = 15;
/// Withdraw a PCI function, old form, argument [`PhysdevManagePci`]
/// (physdev.h `PHYSDEVOP_manage_pci_remove`).
pub const PHYSDEVOP_manage_pci_remove: u32 = 16;
/// Restore a function's MSI state, argument [`PhysdevRestoreMsi`]
/// (physdev.h `PHYSDEVOP_restore_msi`).
pub const PHYSDEVOP_restore_msi: u32 = 19;
/// Report a PCI function with its physical function (physdev.h
/// `PHYSDEVOP_manage_pci_add_ext`).
pub const PHYSDEVOP_manage_pci_add_ext: u32 = 20;
/// Set a GSI's trigger mode and polarity, argument [`PhysdevSetupGsi`]
/// (physdev.h `PHYSDEVOP_setup_gsi`).
pub const PHYSDEVOP_setup_gsi: u32 = 21;
/// Allocate a free pirq, argument [`PhysdevGetFreePirq`] (physdev.h
/// `PHYSDEVOP_get_free_pirq`).
pub const PHYSDEVOP_get_free_pirq: u32 = 23;
/// Report an MMCONFIG area, argument [`PhysdevPciMmcfgReserved`]
/// (physdev.h `PHYSDEVOP_pci_mmcfg_reserved`).
pub const PHYSDEVOP_pci_mmcfg_reserved: u32 = 24;
/// Report a PCI function, argument [`PhysdevPciDeviceAdd`] (physdev.h
/// `PHYSDEVOP_pci_device_add`).
pub const PHYSDEVOP_pci_device_add: u32 = 25;
/// Withdraw a PCI function, argument [`PhysdevPciDevice`] (physdev.h
/// `PHYSDEVOP_pci_device_remove`).
pub const PHYSDEVOP_pci_device_remove: u32 = 26;
/// Restore a function's MSI state, argument [`PhysdevPciDevice`]
/// (physdev.h `PHYSDEVOP_restore_msi_ext`).
pub const PHYSDEVOP_restore_msi_ext: u32 = 27;
/// Debug port reset notification (physdev.h `PHYSDEVOP_dbgp_op`).
pub const PHYSDEVOP_dbgp_op: u32 = 29;
/// Prepare a function's MSI-X table, argument [`PhysdevPciDevice`]
/// (physdev.h `PHYSDEVOP_prepare_msix`).
pub const PHYSDEVOP_prepare_msix: u32 = 30;
/// Release a function's MSI-X table, argument [`PhysdevPciDevice`]
/// (physdev.h `PHYSDEVOP_release_msix`).
pub const PHYSDEVOP_release_msix: u32 = 31;

/// `PhysdevIrqStatusQuery::flags`: the pirq needs `PHYSDEVOP_eoi`
/// (physdev.h `XENIRQSTAT_needs_eoi`).
pub const XENIRQSTAT_needs_eoi: u32 = 1 << 0;
/// `PhysdevIrqStatusQuery::flags`: the pirq is shared (physdev.h
/// `XENIRQSTAT_shared`).
pub const XENIRQSTAT_shared: u32 = 1 << 1;

/// `PhysdevMapPirq::type`: an MSI or MSI-X vector (physdev.h `MAP_PIRQ_TYPE_MSI`).
pub const MAP_PIRQ_TYPE_MSI: i32 = 0x0;
/// `PhysdevMapPirq::type`: a GSI (an IOAPIC pin) (physdev.h `MAP_PIRQ_TYPE_GSI`).
pub const MAP_PIRQ_TYPE_GSI: i32 = 0x1;
/// `PhysdevMapPirq::type`: unknown (physdev.h `MAP_PIRQ_TYPE_UNKNOWN`).
pub const MAP_PIRQ_TYPE_UNKNOWN: i32 = 0x2;
/// `PhysdevMapPirq::type`: an MSI with the segment in `bus`'s high 16 bits
/// (physdev.h `MAP_PIRQ_TYPE_MSI_SEG`).
pub const MAP_PIRQ_TYPE_MSI_SEG: i32 = 0x3;
/// `PhysdevMapPirq::type`: several MSI vectors at once (physdev.h
/// `MAP_PIRQ_TYPE_MULTI_MSI`).
pub const MAP_PIRQ_TYPE_MULTI_MSI: i32 = 0x4;

/// `PhysdevPciMmcfgReserved::flags`: the area is reserved (physdev.h
/// `XEN_PCI_MMCFG_RESERVED`).
pub const XEN_PCI_MMCFG_RESERVED: u32 = 0x1;
/// `PhysdevPciDeviceAdd::flags`: an ARI extended function (physdev.h `XEN_PCI_DEV_EXTFN`).
pub const XEN_PCI_DEV_EXTFN: u32 = 0x1;
/// `PhysdevPciDeviceAdd::flags`: an SR-IOV virtual function (physdev.h `XEN_PCI_DEV_VIRTFN`).
pub const XEN_PCI_DEV_VIRTFN: u32 = 0x2;
/// `PhysdevPciDeviceAdd::flags`: `optarr[0]` is the proximity domain
/// (physdev.h `XEN_PCI_DEV_PXM`).
pub const XEN_PCI_DEV_PXM: u32 = 0x4;

macro_rules! physdev_struct {
    ($(#[$doc:meta])* $name:ident, $size:expr, { $($(#[$fdoc:meta])* $field:ident : $ty:ty = $off:expr),* $(,)? }) => {
        $(#[$doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
        pub struct $name {
            $($(#[$fdoc])* pub $field: $ty,)*
        }
        crate::assert_layout!($name, $size, { $($field: $off),* });
    };
}

physdev_struct!(
    /// Argument of `PHYSDEVOP_eoi` (physdev.h `struct physdev_eoi`).
    PhysdevEoi, 4, {
        /// The pirq.
        irq: u32 = 0,
    }
);

physdev_struct!(
    /// Argument of `PHYSDEVOP_pirq_eoi_gmfn_v1`/`_v2` (physdev.h
    /// `struct physdev_pirq_eoi_gmfn`; 4 bytes for 32-bit guests,
    /// [`crate::CompatPhysdevPirqEoiGmfn`]).
    PhysdevPirqEoiGmfn, 8, {
        /// The guest frame holding one bit per pirq.
        gmfn: u64 = 0,
    }
);

physdev_struct!(
    /// Argument of `PHYSDEVOP_irq_status_query` (physdev.h `struct
    /// physdev_irq_status_query`).
    PhysdevIrqStatusQuery, 8, {
        /// In: the pirq.
        irq: u32 = 0,
        /// Out: `XENIRQSTAT_*`.
        flags: u32 = 4,
    }
);

physdev_struct!(
    /// Argument of `PHYSDEVOP_set_iopl` (physdev.h `struct physdev_set_iopl`).
    PhysdevSetIopl, 4, {
        /// The I/O privilege level, 0 to 3.
        iopl: u32 = 0,
    }
);

physdev_struct!(
    /// Argument of `PHYSDEVOP_map_pirq` (physdev.h `struct
    /// physdev_map_pirq`; 36 bytes for 32-bit guests,
    /// [`crate::CompatPhysdevMapPirq`]).
    PhysdevMapPirq, 40, {
        /// The domain the pirq is for (`DOMID_SELF` allowed).
        domid: Domid = 0,
        /// Padding.
        pad0: u16 = 2,
        /// `MAP_PIRQ_TYPE_*`.
        r#type: i32 = 4,
        /// The GSI, or the MSI-X entry (ignored for `MAP_PIRQ_TYPE_MULTI_MSI`).
        index: i32 = 8,
        /// In or out: the pirq (negative in: any free one).
        pirq: i32 = 12,
        /// The function's bus (segment in the high 16 bits for
        /// `MAP_PIRQ_TYPE_MSI_SEG` and `MAP_PIRQ_TYPE_MULTI_MSI`).
        bus: i32 = 16,
        /// The function's device and function number.
        devfn: i32 = 20,
        /// MSI-X entry number (in and out for `MAP_PIRQ_TYPE_MULTI_MSI`: the
        /// vector count).
        entry_nr: i32 = 24,
        /// Padding.
        pad1: u32 = 28,
        /// The MSI-X table's address.
        table_base: u64 = 32,
    }
);

physdev_struct!(
    /// Argument of `PHYSDEVOP_unmap_pirq` (physdev.h `struct physdev_unmap_pirq`).
    PhysdevUnmapPirq, 8, {
        /// The domain (`DOMID_SELF` allowed).
        domid: Domid = 0,
        /// Padding.
        pad: u16 = 2,
        /// The pirq.
        pirq: i32 = 4,
    }
);

physdev_struct!(
    /// Argument of `PHYSDEVOP_manage_pci_add`/`_remove` (physdev.h `struct
    /// physdev_manage_pci`).
    PhysdevManagePci, 2, {
        /// Bus.
        bus: u8 = 0,
        /// Device (bits 7:3) and function (bits 2:0).
        devfn: u8 = 1,
    }
);

physdev_struct!(
    /// Argument of `PHYSDEVOP_restore_msi` (physdev.h `struct physdev_restore_msi`).
    PhysdevRestoreMsi, 2, {
        /// Bus.
        bus: u8 = 0,
        /// Device (bits 7:3) and function (bits 2:0).
        devfn: u8 = 1,
    }
);

physdev_struct!(
    /// Argument of `PHYSDEVOP_setup_gsi` (physdev.h `struct physdev_setup_gsi`).
    PhysdevSetupGsi, 8, {
        /// The GSI.
        gsi: i32 = 0,
        /// Edge (0) or level (1).
        triggering: u8 = 4,
        /// Active high (0) or low (1).
        polarity: u8 = 5,
        /// Padding.
        pad: u16 = 6,
    }
);

physdev_struct!(
    /// Argument of `PHYSDEVOP_get_free_pirq` (physdev.h `struct physdev_get_free_pirq`).
    PhysdevGetFreePirq, 8, {
        /// In: `MAP_PIRQ_TYPE_*`.
        r#type: i32 = 0,
        /// Out: the pirq.
        pirq: u32 = 4,
    }
);

physdev_struct!(
    /// Argument of `PHYSDEVOP_pci_mmcfg_reserved` (physdev.h `struct
    /// physdev_pci_mmcfg_reserved`; the same for 32-bit guests, as
    /// `uint64_t` comes first).
    PhysdevPciMmcfgReserved, 16, {
        /// The area's physical address.
        address: u64 = 0,
        /// PCI segment.
        segment: u16 = 8,
        /// First bus.
        start_bus: u8 = 10,
        /// Last bus.
        end_bus: u8 = 11,
        /// `XEN_PCI_MMCFG_RESERVED`.
        flags: u32 = 12,
    }
);

physdev_struct!(
    /// Argument of `PHYSDEVOP_pci_device_add` (physdev.h `struct
    /// physdev_pci_device_add`), without its flexible `optarr` (at offset
    /// 12, the size: `optarr[0]` is the proximity domain with
    /// `XEN_PCI_DEV_PXM`).
    PhysdevPciDeviceAdd, 12, {
        /// PCI segment.
        seg: u16 = 0,
        /// Bus.
        bus: u8 = 2,
        /// Device (bits 7:3) and function (bits 2:0).
        devfn: u8 = 3,
        /// `XEN_PCI_DEV_*`.
        flags: u32 = 4,
        /// The physical function's bus (`XEN_PCI_DEV_VIRTFN`), C `physfn.bus`.
        physfn_bus: u8 = 8,
        /// The physical function's devfn, C `physfn.devfn`.
        physfn_devfn: u8 = 9,
        /// Padding.
        pad: u16 = 10,
    }
);

physdev_struct!(
    /// Argument of `PHYSDEVOP_pci_device_remove`, `_restore_msi_ext`,
    /// `_prepare_msix`, `_release_msix` (physdev.h `struct physdev_pci_device`).
    PhysdevPciDevice, 4, {
        /// PCI segment.
        seg: u16 = 0,
        /// Bus.
        bus: u8 = 2,
        /// Device (bits 7:3) and function (bits 2:0).
        devfn: u8 = 3,
    }
);
