//! ELF note types a Xen guest image carries: `xen/include/public/elfnote.h`.
//!
//! The notes have owner name "Xen". A PVH loader needs
//! [`XEN_ELFNOTE_PHYS32_ENTRY`] (and, optionally, [`XEN_ELFNOTE_PHYS32_RELOC`]);
//! the others describe PV guests and crash dumps.

/// The note owner name, without its NUL terminator (elfnote.h: notes are
/// in the "Xen" namespace).
pub const XEN_ELFNOTE_NAME: &[u8] = b"Xen";

/// Free-form guest information string (elfnote.h `XEN_ELFNOTE_INFO`).
pub const XEN_ELFNOTE_INFO: u32 = 0;
/// PV virtual entry point (elfnote.h `XEN_ELFNOTE_ENTRY`).
pub const XEN_ELFNOTE_ENTRY: u32 = 1;
/// Virtual address of the hypercall page (elfnote.h `XEN_ELFNOTE_HYPERCALL_PAGE`).
pub const XEN_ELFNOTE_HYPERCALL_PAGE: u32 = 2;
/// PV virtual base address (elfnote.h `XEN_ELFNOTE_VIRT_BASE`).
pub const XEN_ELFNOTE_VIRT_BASE: u32 = 3;
/// PV physical address offset (elfnote.h `XEN_ELFNOTE_PADDR_OFFSET`).
pub const XEN_ELFNOTE_PADDR_OFFSET: u32 = 4;
/// Xen version the guest needs, e.g. "xen-3.0" (elfnote.h `XEN_ELFNOTE_XEN_VERSION`).
pub const XEN_ELFNOTE_XEN_VERSION: u32 = 5;
/// Guest operating system name (elfnote.h `XEN_ELFNOTE_GUEST_OS`).
pub const XEN_ELFNOTE_GUEST_OS: u32 = 6;
/// Guest version string (elfnote.h `XEN_ELFNOTE_GUEST_VERSION`).
pub const XEN_ELFNOTE_GUEST_VERSION: u32 = 7;
/// Loader name, e.g. "generic" (elfnote.h `XEN_ELFNOTE_LOADER`).
pub const XEN_ELFNOTE_LOADER: u32 = 8;
/// PAE support string (elfnote.h `XEN_ELFNOTE_PAE_MODE`).
pub const XEN_ELFNOTE_PAE_MODE: u32 = 9;
/// Feature string, '|'-separated (elfnote.h `XEN_ELFNOTE_FEATURES`).
pub const XEN_ELFNOTE_FEATURES: u32 = 10;
/// Load the symbol table, BSD style (elfnote.h `XEN_ELFNOTE_BSD_SYMTAB`).
pub const XEN_ELFNOTE_BSD_SYMTAB: u32 = 11;
/// Lowest hypervisor virtual address the guest tolerates (elfnote.h `XEN_ELFNOTE_HV_START_LOW`).
pub const XEN_ELFNOTE_HV_START_LOW: u32 = 12;
/// L1 MFN validity mask and value (elfnote.h `XEN_ELFNOTE_L1_MFN_VALID`).
pub const XEN_ELFNOTE_L1_MFN_VALID: u32 = 13;
/// The guest supports suspend cancellation (elfnote.h `XEN_ELFNOTE_SUSPEND_CANCEL`).
pub const XEN_ELFNOTE_SUSPEND_CANCEL: u32 = 14;
/// Virtual address of the initial p2m table (elfnote.h `XEN_ELFNOTE_INIT_P2M`).
pub const XEN_ELFNOTE_INIT_P2M: u32 = 15;
/// The guest accepts module addresses as PFNs (elfnote.h `XEN_ELFNOTE_MOD_START_PFN`).
pub const XEN_ELFNOTE_MOD_START_PFN: u32 = 16;
/// Bitmap of supported `XENFEAT_*` features (elfnote.h `XEN_ELFNOTE_SUPPORTED_FEATURES`).
pub const XEN_ELFNOTE_SUPPORTED_FEATURES: u32 = 17;
/// PVH 32-bit physical entry point; 4- or 8-byte value, low 32 bits used
/// (elfnote.h `XEN_ELFNOTE_PHYS32_ENTRY`).
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// PVH relocation: alignment, minimum and maximum physical load address
/// (elfnote.h `XEN_ELFNOTE_PHYS32_RELOC`).
pub const XEN_ELFNOTE_PHYS32_RELOC: u32 = 19;
/// The highest guest note type (elfnote.h `XEN_ELFNOTE_MAX`).
pub const XEN_ELFNOTE_MAX: u32 = XEN_ELFNOTE_PHYS32_RELOC;
/// Crash dump: crash information (elfnote.h `XEN_ELFNOTE_CRASH_INFO`).
pub const XEN_ELFNOTE_CRASH_INFO: u32 = 0x0100_0001;
/// Crash dump: register state (elfnote.h `XEN_ELFNOTE_CRASH_REGS`).
pub const XEN_ELFNOTE_CRASH_REGS: u32 = 0x0100_0002;
/// Dump core: empty note (elfnote.h `XEN_ELFNOTE_DUMPCORE_NONE`).
pub const XEN_ELFNOTE_DUMPCORE_NONE: u32 = 0x0200_0000;
/// Dump core: header (elfnote.h `XEN_ELFNOTE_DUMPCORE_HEADER`).
pub const XEN_ELFNOTE_DUMPCORE_HEADER: u32 = 0x0200_0001;
/// Dump core: Xen version (elfnote.h `XEN_ELFNOTE_DUMPCORE_XEN_VERSION`).
pub const XEN_ELFNOTE_DUMPCORE_XEN_VERSION: u32 = 0x0200_0002;
/// Dump core: format version (elfnote.h `XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION`).
pub const XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION: u32 = 0x0200_0003;

/// Default alignment of a relocatable PVH kernel when its
/// `XEN_ELFNOTE_PHYS32_RELOC` note gives none (elfnote.h: 2 MiB).
pub const XEN_ELFNOTE_PHYS32_RELOC_DEFAULT_ALIGN: u64 = 0x20_0000;

/// Reads the PVH entry point from the description of a
/// [`XEN_ELFNOTE_PHYS32_ENTRY`] note: a 4- or 8-byte little-endian value of
/// which the low 32 bits count. Any other length is `None`.
pub fn phys32_entry_from_desc(desc: &[u8]) -> Option<u32> {
    match *desc {
        [a, b, c, d] | [a, b, c, d, _, _, _, _] => Some(u32::from_le_bytes([a, b, c, d])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phys32_entry_accepts_4_and_8_bytes_only() {
        assert_eq!(
            phys32_entry_from_desc(&[0x50, 0x08, 0x00, 0x01]),
            Some(0x0100_0850)
        );
        assert_eq!(
            phys32_entry_from_desc(&[0x50, 0x08, 0x00, 0x01, 0xff, 0xff, 0xff, 0xff]),
            Some(0x0100_0850)
        );
        for len in [0usize, 1, 3, 5, 7, 9, 16] {
            assert_eq!(phys32_entry_from_desc(&[0u8; 16][..len]), None, "len {len}");
        }
    }
}
