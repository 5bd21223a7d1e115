//! The PVH boot ABI: `xen/include/public/arch-x86/hvm/start_info.h`.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Magic value of [`HvmStartInfo::magic`] ("xEn3" with the 0x80 bit of the
/// "E" set). `XEN_HVM_START_MAGIC_VALUE` in start_info.h.
pub const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;

/// Start-info flag: the domain is privileged (start_info.h `SIF_PRIVILEGED`).
pub const SIF_PRIVILEGED: u32 = 1 << 0;
/// Start-info flag: this is the initial domain (start_info.h `SIF_INITDOMAIN`).
pub const SIF_INITDOMAIN: u32 = 1 << 1;
/// Start-info flag: the modules are Multiboot modules (xen.h `SIF_MULTIBOOT_MOD`).
pub const SIF_MULTIBOOT_MOD: u32 = 1 << 2;
/// Start-info flag: module addresses are PFNs (xen.h `SIF_MOD_START_PFN`).
pub const SIF_MOD_START_PFN: u32 = 1 << 3;

/// Memory map entry type: usable RAM (start_info.h `XEN_HVM_MEMMAP_TYPE_RAM`).
pub const XEN_HVM_MEMMAP_TYPE_RAM: u32 = 1;
/// Memory map entry type: reserved (`XEN_HVM_MEMMAP_TYPE_RESERVED`).
pub const XEN_HVM_MEMMAP_TYPE_RESERVED: u32 = 2;
/// Memory map entry type: ACPI tables, reclaimable (`XEN_HVM_MEMMAP_TYPE_ACPI`).
pub const XEN_HVM_MEMMAP_TYPE_ACPI: u32 = 3;
/// Memory map entry type: ACPI non-volatile storage (`XEN_HVM_MEMMAP_TYPE_NVS`).
pub const XEN_HVM_MEMMAP_TYPE_NVS: u32 = 4;
/// Memory map entry type: unusable (`XEN_HVM_MEMMAP_TYPE_UNUSABLE`).
pub const XEN_HVM_MEMMAP_TYPE_UNUSABLE: u32 = 5;
/// Memory map entry type: disabled (`XEN_HVM_MEMMAP_TYPE_DISABLED`).
pub const XEN_HVM_MEMMAP_TYPE_DISABLED: u32 = 6;
/// Memory map entry type: persistent memory (`XEN_HVM_MEMMAP_TYPE_PMEM`).
pub const XEN_HVM_MEMMAP_TYPE_PMEM: u32 = 7;

/// The structure a PVH guest finds at EBX on entry
/// (start_info.h `struct hvm_start_info`, version 1). Addresses are
/// guest-physical; 0 means absent.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct HvmStartInfo {
    /// Must be [`XEN_HVM_START_MAGIC_VALUE`].
    pub magic: u32,
    /// Version of this structure: 0 or 1 (1 adds the memory map).
    pub version: u32,
    /// `SIF_*` flags.
    pub flags: u32,
    /// Number of entries at `modlist_paddr`.
    pub nr_modules: u32,
    /// Physical address of an array of [`HvmModlistEntry`].
    pub modlist_paddr: u64,
    /// Physical address of the NUL-terminated command line.
    pub cmdline_paddr: u64,
    /// Physical address of the ACPI RSDP.
    pub rsdp_paddr: u64,
    /// Physical address of an array of [`HvmMemmapTableEntry`] (version 1).
    pub memmap_paddr: u64,
    /// Number of entries at `memmap_paddr` (version 1).
    pub memmap_entries: u32,
    /// Must be zero.
    pub reserved: u32,
}
crate::assert_layout!(HvmStartInfo, 56, {
    magic: 0, version: 4, flags: 8, nr_modules: 12, modlist_paddr: 16,
    cmdline_paddr: 24, rsdp_paddr: 32, memmap_paddr: 40, memmap_entries: 48, reserved: 52,
});

/// One boot module (start_info.h `struct hvm_modlist_entry`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct HvmModlistEntry {
    /// Physical address of the module.
    pub paddr: u64,
    /// Size of the module in bytes.
    pub size: u64,
    /// Physical address of the module's NUL-terminated command line, or 0.
    pub cmdline_paddr: u64,
    /// Must be zero.
    pub reserved: u64,
}
crate::assert_layout!(HvmModlistEntry, 32, { paddr: 0, size: 8, cmdline_paddr: 16, reserved: 24 });

/// One memory map entry (start_info.h `struct hvm_memmap_table_entry`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct HvmMemmapTableEntry {
    /// Base physical address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
    /// One of the `XEN_HVM_MEMMAP_TYPE_*` values (kept as an integer).
    pub r#type: u32,
    /// Must be zero.
    pub reserved: u32,
}
crate::assert_layout!(HvmMemmapTableEntry, 24, { addr: 0, size: 8, r#type: 16, reserved: 20 });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_spells_xen3_with_high_bit() {
        let b = XEN_HVM_START_MAGIC_VALUE.to_le_bytes();
        assert_eq!(b, [b'x', b'E' | 0x80, b'n', b'3']);
    }

    #[test]
    fn start_info_from_guest_memory() {
        let info = HvmStartInfo {
            magic: XEN_HVM_START_MAGIC_VALUE,
            version: 1,
            flags: SIF_PRIVILEGED | SIF_INITDOMAIN,
            nr_modules: 1,
            modlist_paddr: 0x6000,
            cmdline_paddr: 0x7000,
            rsdp_paddr: 0xfffc0,
            memmap_paddr: 0x8000,
            memmap_entries: 3,
            reserved: 0,
        };
        let bytes = info.as_bytes();
        assert_eq!(&bytes[48..52], &3u32.to_le_bytes());
        assert_eq!(HvmStartInfo::read_from_bytes(bytes).unwrap(), info);
        assert!(HvmStartInfo::read_from_bytes(&bytes[..55]).is_err());
        let entry = HvmMemmapTableEntry {
            addr: 0,
            size: 0xa0000,
            r#type: XEN_HVM_MEMMAP_TYPE_RAM,
            reserved: 0,
        };
        let mut table = [0u8; 48];
        table[24..48].copy_from_slice(entry.as_bytes());
        let entries = <[HvmMemmapTableEntry; 2]>::read_from_bytes(&table[..]).unwrap();
        assert_eq!(entries[1], entry);
        assert_eq!(
            entries[0].r#type, 0,
            "type 0 is not a defined memmap type, kept as is"
        );
    }
}
