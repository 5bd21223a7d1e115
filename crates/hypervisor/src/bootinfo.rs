//! What the boot loader handed over, in one vendor- and loader-neutral form.
//!
//! The PVH and Multiboot (v1) paths read the loader's tables through a
//! physical-memory reader, so the same code runs on the host in tests over a
//! fake memory. (The Multiboot2 path is converted in the binary with the
//! `multiboot2` crate.) Capacities are fixed because this runs before the
//! heap exists; what does not fit is counted, not silently dropped.

use xen_abi::{
    HvmMemmapTableEntry, HvmModlistEntry, HvmStartInfo, XEN_HVM_MEMMAP_TYPE_ACPI,
    XEN_HVM_MEMMAP_TYPE_NVS, XEN_HVM_MEMMAP_TYPE_RAM, XEN_HVM_START_MAGIC_VALUE,
};
use zerocopy::FromBytes;

/// Most memory-map entries kept.
pub const MAX_REGIONS: usize = 128;
/// Most boot modules kept.
pub const MAX_MODULES: usize = 16;
/// Longest command line kept, in bytes.
pub const MAX_CMDLINE: usize = 1024;

/// The kind of a physical memory region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// Usable RAM.
    Ram,
    /// ACPI tables (reclaimable once read).
    Acpi,
    /// ACPI non-volatile storage.
    Nvs,
    /// Anything else: never use.
    Reserved,
}

impl RegionKind {
    /// Maps an e820/`XEN_HVM_MEMMAP_TYPE_*` value; unknown values are reserved.
    pub fn from_e820(t: u32) -> Self {
        match t {
            XEN_HVM_MEMMAP_TYPE_RAM => Self::Ram,
            XEN_HVM_MEMMAP_TYPE_ACPI => Self::Acpi,
            XEN_HVM_MEMMAP_TYPE_NVS => Self::Nvs,
            _ => Self::Reserved,
        }
    }
}

/// A physical memory region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// First byte.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// What it is.
    pub kind: RegionKind,
}

/// A text of bounded length copied out of loader memory.
#[derive(Clone, Copy)]
pub struct Text {
    buf: [u8; MAX_CMDLINE],
    len: usize,
}

impl Text {
    /// The empty text.
    pub const EMPTY: Self = Self {
        buf: [0; MAX_CMDLINE],
        len: 0,
    };

    /// The text, with invalid UTF-8 cut at the first bad byte.
    pub fn as_str(&self) -> &str {
        let b = &self.buf[..self.len];
        match core::str::from_utf8(b) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(&b[..e.valid_up_to()]).unwrap_or(""),
        }
    }

    /// The text without its first word and the blanks around it: a
    /// Multiboot loader other than GRUB 2 puts the image's (or module's)
    /// file name first, and Xen's `cmdline_cook` drops it the same way.
    pub fn without_first_word(&self) -> Self {
        let s = self.as_str().trim_start_matches(' ');
        let rest = s.find(' ').map_or("", |i| s[i..].trim_start_matches(' '));
        Self::from_bytes(rest.as_bytes())
    }

    /// Builds a text from bytes, stopping at NUL or at [`MAX_CMDLINE`].
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut t = Self::EMPTY;
        for &b in bytes.iter().take(MAX_CMDLINE) {
            if b == 0 {
                break;
            }
            t.buf[t.len] = b;
            t.len += 1;
        }
        t
    }
}

impl core::fmt::Debug for Text {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A boot module (a guest kernel, an initrd, ...).
#[derive(Clone, Copy, Debug)]
pub struct Module {
    /// Physical address of the first byte.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// The module's own command line.
    pub cmdline: Text,
}

/// Which protocol the loader used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Xen PVH (`hvm_start_info`).
    Pvh,
    /// Multiboot2.
    Multiboot2,
    /// Multiboot (v1), as QEMU's `-kernel` gives it.
    Multiboot,
}

/// Everything the loader told us.
#[derive(Clone, Debug)]
pub struct BootInfo {
    /// The protocol it came by.
    pub protocol: Protocol,
    /// The hypervisor's command line.
    pub cmdline: Text,
    /// Memory map entries (the first [`MAX_REGIONS`]).
    pub regions: [Option<Region>; MAX_REGIONS],
    /// Entries that did not fit.
    pub regions_dropped: usize,
    /// Boot modules (the first [`MAX_MODULES`]).
    pub modules: [Option<Module>; MAX_MODULES],
    /// Modules that did not fit.
    pub modules_dropped: usize,
    /// Physical address of the ACPI RSDP, if the loader gave one.
    pub rsdp: Option<u64>,
}

/// Why boot information could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootInfoError {
    /// `hvm_start_info.magic` is wrong.
    BadMagic(u32),
    /// A table the loader pointed to could not be read.
    Unreadable(u64),
    /// A table entry (at this address) contradicts itself or another one:
    /// a module that ends before it starts or shares bytes with another,
    /// a memory-map entry shorter than its fields, a table too long.
    Malformed(u64),
}

/// The magic a Multiboot (v1) loader leaves in EAX.
pub const MULTIBOOT_BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;

// Multiboot (v1) information: the `flags` bits that say which fields are
// valid, and the fields' offsets (the Multiboot specification 0.6.96, 3.3).
const MULTIBOOT_INFO_MEMORY: u32 = 1 << 0;
const MULTIBOOT_INFO_CMDLINE: u32 = 1 << 2;
const MULTIBOOT_INFO_MODS: u32 = 1 << 3;
const MULTIBOOT_INFO_MEM_MAP: u32 = 1 << 6;
const MULTIBOOT_INFO_BOOT_LOADER_NAME: u32 = 1 << 9;
/// Bytes of the information structure read: up to `boot_loader_name`.
const MULTIBOOT_INFO_SIZE: usize = 68;
/// Bytes of a module entry (`mod_start`, `mod_end`, `cmdline`, pad).
const MULTIBOOT_MOD_SIZE: u64 = 16;
/// Bytes of a memory-map entry after its `size` field (`addr`, `len`, `type`).
const MULTIBOOT_MMAP_ENTRY: u32 = 20;
/// Longest memory map accepted, in bytes: room for 2048 entries of the
/// usual size, far more than any firmware gives.
const MULTIBOOT_MMAP_MAX: u32 = 2048 * 24;

fn le32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

impl BootInfo {
    /// An empty record for `protocol`.
    pub fn new(protocol: Protocol) -> Self {
        Self {
            protocol,
            cmdline: Text::EMPTY,
            regions: [None; MAX_REGIONS],
            regions_dropped: 0,
            modules: [None; MAX_MODULES],
            modules_dropped: 0,
            rsdp: None,
        }
    }

    /// Adds a memory-map entry, counting it as dropped when full.
    pub fn push_region(&mut self, r: Region) {
        match self.regions.iter_mut().find(|s| s.is_none()) {
            Some(slot) => *slot = Some(r),
            None => self.regions_dropped += 1,
        }
    }

    /// Adds a module, counting it as dropped when full.
    pub fn push_module(&mut self, m: Module) {
        match self.modules.iter_mut().find(|s| s.is_none()) {
            Some(slot) => *slot = Some(m),
            None => self.modules_dropped += 1,
        }
    }

    /// The memory map entries.
    pub fn regions(&self) -> impl Iterator<Item = &Region> {
        self.regions.iter().flatten()
    }

    /// The modules.
    pub fn modules(&self) -> impl Iterator<Item = &Module> {
        self.modules.iter().flatten()
    }

    /// Reads PVH boot information at `paddr`. `read(addr, buf)` fills `buf`
    /// from physical memory and returns false if it cannot.
    pub fn from_pvh(
        paddr: u64,
        mut read: impl FnMut(u64, &mut [u8]) -> bool,
    ) -> Result<Self, BootInfoError> {
        let mut raw = [0u8; core::mem::size_of::<HvmStartInfo>()];
        if !read(paddr, &mut raw) {
            return Err(BootInfoError::Unreadable(paddr));
        }
        let si =
            HvmStartInfo::read_from_bytes(&raw).map_err(|_| BootInfoError::Unreadable(paddr))?;
        if si.magic != XEN_HVM_START_MAGIC_VALUE {
            return Err(BootInfoError::BadMagic(si.magic));
        }
        let mut info = Self::new(Protocol::Pvh);
        info.cmdline = read_text(si.cmdline_paddr, &mut read);
        info.rsdp = (si.rsdp_paddr != 0).then_some(si.rsdp_paddr);

        let n = u64::from(si.nr_modules);
        let keep = n.min(MAX_MODULES as u64);
        info.modules_dropped = (n - keep) as usize;
        for i in 0..keep {
            let at = entry_addr(si.modlist_paddr, i, 32)?;
            let mut raw = [0u8; core::mem::size_of::<HvmModlistEntry>()];
            if !read(at, &mut raw) {
                return Err(BootInfoError::Unreadable(at));
            }
            let m = HvmModlistEntry::read_from_bytes(&raw)
                .map_err(|_| BootInfoError::Unreadable(at))?;
            info.push_module(Module {
                start: m.paddr,
                len: m.size,
                cmdline: read_text(m.cmdline_paddr, &mut read),
            });
        }

        if si.version >= 1 {
            let n = u64::from(si.memmap_entries);
            let keep = n.min(MAX_REGIONS as u64);
            info.regions_dropped = (n - keep) as usize;
            for i in 0..keep {
                let at = entry_addr(si.memmap_paddr, i, 24)?;
                let mut raw = [0u8; core::mem::size_of::<HvmMemmapTableEntry>()];
                if !read(at, &mut raw) {
                    return Err(BootInfoError::Unreadable(at));
                }
                let e = HvmMemmapTableEntry::read_from_bytes(&raw)
                    .map_err(|_| BootInfoError::Unreadable(at))?;
                info.push_region(Region {
                    start: e.addr,
                    len: e.size,
                    kind: RegionKind::from_e820(e.r#type),
                });
            }
        }
        Ok(info)
    }
}

impl BootInfo {
    /// Reads Multiboot (v1) boot information at `paddr` (the loader left
    /// [`MULTIBOOT_BOOTLOADER_MAGIC`] in EAX, checked by the entry code).
    /// `read` as for [`BootInfo::from_pvh`].
    ///
    /// The fields `flags` marks as valid are used: the command line, the
    /// modules with their strings, the memory map (else the two sizes of
    /// `mem_lower`/`mem_upper`), the loader's name. Unless that name starts
    /// with "GRUB 2", the first word of the command line and of every
    /// module string is the file's name and is dropped, as Xen does
    /// (QEMU's `-kernel` passes `IMAGE CMDLINE` and `FILE ARGS`). The RSDP
    /// is not part of Multiboot (v1): the caller scans the BIOS areas.
    pub fn from_multiboot1(
        paddr: u64,
        mut read: impl FnMut(u64, &mut [u8]) -> bool,
    ) -> Result<Self, BootInfoError> {
        let mut mbi = [0u8; MULTIBOOT_INFO_SIZE];
        if !read(paddr, &mut mbi) {
            return Err(BootInfoError::Unreadable(paddr));
        }
        let flags = le32(&mbi, 0);
        let mut info = Self::new(Protocol::Multiboot);
        let name = if flags & MULTIBOOT_INFO_BOOT_LOADER_NAME != 0 {
            read_text(u64::from(le32(&mbi, 64)), &mut read)
        } else {
            Text::EMPTY
        };
        let grub2 = name.as_str().starts_with("GRUB 2");
        let cook = |t: Text| if grub2 { t } else { t.without_first_word() };
        if flags & MULTIBOOT_INFO_CMDLINE != 0 {
            info.cmdline = cook(read_text(u64::from(le32(&mbi, 16)), &mut read));
        }

        if flags & MULTIBOOT_INFO_MODS != 0 {
            let n = u64::from(le32(&mbi, 20));
            let base = u64::from(le32(&mbi, 24));
            let keep = n.min(MAX_MODULES as u64);
            info.modules_dropped = (n - keep) as usize;
            for i in 0..keep {
                let at = entry_addr(base, i, MULTIBOOT_MOD_SIZE)?;
                let mut raw = [0u8; MULTIBOOT_MOD_SIZE as usize];
                if !read(at, &mut raw) {
                    return Err(BootInfoError::Unreadable(at));
                }
                let (start, end) = (u64::from(le32(&raw, 0)), u64::from(le32(&raw, 4)));
                if end < start {
                    return Err(BootInfoError::Malformed(at));
                }
                let overlaps = info
                    .modules()
                    .any(|m| start < m.start.saturating_add(m.len) && m.start < end);
                if overlaps {
                    return Err(BootInfoError::Malformed(at));
                }
                info.push_module(Module {
                    start,
                    len: end - start,
                    cmdline: cook(read_text(u64::from(le32(&raw, 8)), &mut read)),
                });
            }
        }

        if flags & MULTIBOOT_INFO_MEM_MAP != 0 {
            let len = le32(&mbi, 44);
            let base = u64::from(le32(&mbi, 48));
            if len > MULTIBOOT_MMAP_MAX {
                return Err(BootInfoError::Malformed(paddr + 44));
            }
            // Each entry is `size` (of the rest) and then at least `addr`,
            // `len`, `type`; the next starts `size + 4` bytes on. The walk
            // ends inside `len` bytes, every step at least 24 bytes long.
            let mut off = 0u32;
            while off < len {
                let at = base + u64::from(off);
                let mut raw = [0u8; 4 + MULTIBOOT_MMAP_ENTRY as usize];
                if len - off < 4 + MULTIBOOT_MMAP_ENTRY {
                    return Err(BootInfoError::Malformed(at));
                }
                if !read(at, &mut raw) {
                    return Err(BootInfoError::Unreadable(at));
                }
                let size = le32(&raw, 0);
                if size < MULTIBOOT_MMAP_ENTRY || size > len - off - 4 {
                    return Err(BootInfoError::Malformed(at));
                }
                info.push_region(Region {
                    start: le64(&raw, 4),
                    len: le64(&raw, 12),
                    kind: RegionKind::from_e820(le32(&raw, 20)),
                });
                off += size + 4;
            }
        } else if flags & MULTIBOOT_INFO_MEMORY != 0 {
            // Only the sizes (KiB) of the memory below 640 KiB and above
            // 1 MiB (up to the first hole).
            let lower = u64::from(le32(&mbi, 4)) << 10;
            let upper = u64::from(le32(&mbi, 8)) << 10;
            info.push_region(Region {
                start: 0,
                len: lower,
                kind: RegionKind::Ram,
            });
            info.push_region(Region {
                start: 0x10_0000,
                len: upper,
                kind: RegionKind::Ram,
            });
        }
        Ok(info)
    }
}

fn entry_addr(base: u64, index: u64, size: u64) -> Result<u64, BootInfoError> {
    index
        .checked_mul(size)
        .and_then(|off| base.checked_add(off))
        .ok_or(BootInfoError::Unreadable(base))
}

/// Reads a NUL-terminated string of at most [`MAX_CMDLINE`] bytes; 0 or an
/// unreadable address gives the empty text.
fn read_text(paddr: u64, read: &mut impl FnMut(u64, &mut [u8]) -> bool) -> Text {
    if paddr == 0 {
        return Text::EMPTY;
    }
    let mut buf = [0u8; MAX_CMDLINE];
    // Read in small pieces so that a string near the end of memory is found.
    let mut got = 0;
    while got < MAX_CMDLINE {
        let n = (MAX_CMDLINE - got).min(64);
        let Some(at) = paddr.checked_add(got as u64) else {
            break;
        };
        if !read(at, &mut buf[got..got + n]) {
            break;
        }
        let nul = buf[got..got + n].contains(&0);
        got += n;
        if nul {
            break;
        }
    }
    Text::from_bytes(&buf[..got])
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    /// A fake physical memory of 64 KiB.
    struct Mem(Vec<u8>);

    impl Mem {
        fn put(&mut self, at: u64, b: &[u8]) {
            self.0[at as usize..at as usize + b.len()].copy_from_slice(b);
        }
        fn reader(&self) -> impl FnMut(u64, &mut [u8]) -> bool + '_ {
            |at, buf| {
                let Some(end) = (at as usize).checked_add(buf.len()) else {
                    return false;
                };
                match self.0.get(at as usize..end) {
                    Some(src) => {
                        buf.copy_from_slice(src);
                        true
                    }
                    None => false,
                }
            }
        }
    }

    fn sample() -> Mem {
        let mut m = Mem(vec![0; 0x10000]);
        let si = HvmStartInfo {
            magic: XEN_HVM_START_MAGIC_VALUE,
            version: 1,
            nr_modules: 2,
            modlist_paddr: 0x2000,
            cmdline_paddr: 0x1000,
            memmap_paddr: 0x3000,
            memmap_entries: 2,
            rsdp_paddr: 0xe0000,
            ..Default::default()
        };
        m.put(0x100, si.as_bytes());
        m.put(0x1000, b"loglvl=debug exit=isa-debug-exit\0");
        let mods = [
            HvmModlistEntry {
                paddr: 0x20_0000,
                size: 4096,
                cmdline_paddr: 0x1800,
                reserved: 0,
            },
            HvmModlistEntry {
                paddr: 0x30_0000,
                size: 10,
                cmdline_paddr: 0,
                reserved: 0,
            },
        ];
        m.put(0x2000, mods.as_bytes());
        m.put(0x1800, b"dom=1 kernel\0");
        let map = [
            HvmMemmapTableEntry {
                addr: 0,
                size: 0x9fc00,
                r#type: 1,
                reserved: 0,
            },
            HvmMemmapTableEntry {
                addr: 0xf0000,
                size: 0x10000,
                r#type: 99,
                reserved: 0,
            },
        ];
        m.put(0x3000, map.as_bytes());
        m
    }

    #[test]
    fn reads_everything_pvh_gives() {
        let m = sample();
        let info = BootInfo::from_pvh(0x100, m.reader()).unwrap();
        assert_eq!(info.protocol, Protocol::Pvh);
        assert_eq!(info.cmdline.as_str(), "loglvl=debug exit=isa-debug-exit");
        assert_eq!(info.rsdp, Some(0xe0000));
        let mods: Vec<_> = info.modules().collect();
        assert_eq!(mods.len(), 2);
        assert_eq!((mods[0].start, mods[0].len), (0x20_0000, 4096));
        assert_eq!(mods[0].cmdline.as_str(), "dom=1 kernel");
        assert_eq!(mods[1].cmdline.as_str(), "");
        let regions: Vec<_> = info.regions().collect();
        assert_eq!(regions[0].kind, RegionKind::Ram);
        assert_eq!(regions[0].len, 0x9fc00);
        assert_eq!(regions[1].kind, RegionKind::Reserved);
    }

    #[test]
    fn bad_magic_is_refused() {
        let mut m = sample();
        m.put(0x100, &0xdead_beefu32.to_le_bytes());
        assert_eq!(
            BootInfo::from_pvh(0x100, m.reader()).unwrap_err(),
            BootInfoError::BadMagic(0xdead_beef)
        );
    }

    #[test]
    fn tables_outside_memory_are_errors_not_panics() {
        let mut m = sample();
        // modlist pointing past the end of memory
        m.put(0x100 + 16, &0xffff_ffff_ffff_fff0u64.to_le_bytes());
        assert!(matches!(
            BootInfo::from_pvh(0x100, m.reader()),
            Err(BootInfoError::Unreadable(_))
        ));
        assert!(BootInfo::from_pvh(0xffff_ffff_ffff_fff0, m.reader()).is_err());
    }

    #[test]
    fn unterminated_cmdline_is_bounded() {
        let mut m = sample();
        m.put(0x1000, &[b'a'; 3000]);
        let info = BootInfo::from_pvh(0x100, m.reader()).unwrap();
        assert_eq!(info.cmdline.as_str().len(), MAX_CMDLINE);
    }

    #[test]
    fn too_many_regions_are_counted() {
        let mut m = sample();
        m.put(0x100 + 48, &200u32.to_le_bytes());
        let info = BootInfo::from_pvh(0x100, m.reader()).unwrap();
        assert_eq!(info.regions().count(), MAX_REGIONS);
        assert_eq!(info.regions_dropped, 200 - MAX_REGIONS);
    }

    /// Multiboot (v1) information as QEMU 7.2's `-kernel` lays it out: the
    /// e820 map at 0x9000, the information at 0x9500, strings and module
    /// entries elsewhere.
    fn mb1_sample() -> Mem {
        let mut m = Mem(vec![0; 0x10000]);
        let mut mbi = [0u8; 88];
        let flags: u32 = 1 | 2 | 4 | 8 | 64 | 512;
        mbi[0..4].copy_from_slice(&flags.to_le_bytes());
        mbi[4..8].copy_from_slice(&639u32.to_le_bytes());
        mbi[8..12].copy_from_slice(&(255u32 << 10).to_le_bytes());
        mbi[16..20].copy_from_slice(&0x1000u32.to_le_bytes());
        mbi[20..24].copy_from_slice(&2u32.to_le_bytes());
        mbi[24..28].copy_from_slice(&0x2000u32.to_le_bytes());
        mbi[44..48].copy_from_slice(&(3 * 24u32).to_le_bytes());
        mbi[48..52].copy_from_slice(&0x9000u32.to_le_bytes());
        mbi[64..68].copy_from_slice(&0x1f00u32.to_le_bytes());
        m.put(0x9500, &mbi);
        m.put(0x1f00, b"qemu\0");
        m.put(
            0x1000,
            b"/work/target/image/hypervisor.elf exit=isa-debug-exit loglvl=debug\0",
        );
        let mods: [[u32; 4]; 2] = [
            [0x20_0000, 0x20_1000, 0x1800, 0],
            [0x30_0000, 0x30_000a, 0x1900, 0],
        ];
        for (i, e) in mods.iter().enumerate() {
            for (j, w) in e.iter().enumerate() {
                m.put(0x2000 + 16 * i as u64 + 4 * j as u64, &w.to_le_bytes());
            }
        }
        m.put(
            0x1800,
            b"/tmp/guest kernel mem=32M -- vif=1,mac=00:16:3e:00:00:01\0",
        );
        m.put(0x1900, b"/tmp/initrd\0");
        let map: [(u64, u64, u32); 3] = [
            (0, 0x9fc00, 1),
            (0xf0000, 0x10000, 2),
            (0x10_0000, 0xff0_0000, 1),
        ];
        for (i, (addr, len, t)) in map.iter().enumerate() {
            let at = 0x9000 + 24 * i as u64;
            m.put(at, &20u32.to_le_bytes());
            m.put(at + 4, &addr.to_le_bytes());
            m.put(at + 12, &len.to_le_bytes());
            m.put(at + 20, &t.to_le_bytes());
        }
        m
    }

    fn put32(m: &mut Mem, at: u64, v: u32) {
        m.put(at, &v.to_le_bytes());
    }

    #[test]
    fn reads_everything_qemus_multiboot_gives() {
        let m = mb1_sample();
        let info = BootInfo::from_multiboot1(0x9500, m.reader()).unwrap();
        assert_eq!(info.protocol, Protocol::Multiboot);
        // The image's file name, first, is dropped as Xen drops it.
        assert_eq!(info.cmdline.as_str(), "exit=isa-debug-exit loglvl=debug");
        assert_eq!(info.rsdp, None);
        let mods: Vec<_> = info.modules().collect();
        assert_eq!(mods.len(), 2);
        assert_eq!((mods[0].start, mods[0].len), (0x20_0000, 0x1000));
        assert_eq!(
            mods[0].cmdline.as_str(),
            "kernel mem=32M -- vif=1,mac=00:16:3e:00:00:01"
        );
        assert_eq!((mods[1].start, mods[1].len), (0x30_0000, 10));
        assert_eq!(mods[1].cmdline.as_str(), "");
        let regions: Vec<_> = info.regions().copied().collect();
        assert_eq!(
            regions,
            [
                Region {
                    start: 0,
                    len: 0x9fc00,
                    kind: RegionKind::Ram
                },
                Region {
                    start: 0xf0000,
                    len: 0x10000,
                    kind: RegionKind::Reserved
                },
                Region {
                    start: 0x10_0000,
                    len: 0xff0_0000,
                    kind: RegionKind::Ram
                },
            ]
        );
    }

    #[test]
    fn grub2_strings_keep_their_first_word() {
        let mut m = mb1_sample();
        m.put(0x1f00, b"GRUB 2.06\0");
        let info = BootInfo::from_multiboot1(0x9500, m.reader()).unwrap();
        assert_eq!(
            info.cmdline.as_str(),
            "/work/target/image/hypervisor.elf exit=isa-debug-exit loglvl=debug"
        );
        assert_eq!(
            info.modules().next().unwrap().cmdline.as_str(),
            "/tmp/guest kernel mem=32M -- vif=1,mac=00:16:3e:00:00:01"
        );
    }

    #[test]
    fn fields_without_their_flag_are_ignored() {
        let mut m = mb1_sample();
        // Only the two memory sizes are valid.
        put32(&mut m, 0x9500, 1);
        let info = BootInfo::from_multiboot1(0x9500, m.reader()).unwrap();
        assert_eq!(info.cmdline.as_str(), "");
        assert_eq!(info.modules().count(), 0);
        let regions: Vec<_> = info.regions().map(|r| (r.start, r.len)).collect();
        assert_eq!(regions, [(0, 639 << 10), (0x10_0000, 255 << 20)]);
    }

    #[test]
    fn first_word_dropping_edges() {
        let t = |s: &str| Text::from_bytes(s.as_bytes()).without_first_word();
        assert_eq!(t("").as_str(), "");
        assert_eq!(t("file").as_str(), "");
        assert_eq!(t("file ").as_str(), "");
        assert_eq!(t("  file   a  b ").as_str(), "a  b ");
    }

    #[test]
    fn module_ending_before_its_start_is_refused() {
        let mut m = mb1_sample();
        put32(&mut m, 0x2000 + 4, 0x1f_ffff);
        assert_eq!(
            BootInfo::from_multiboot1(0x9500, m.reader()).unwrap_err(),
            BootInfoError::Malformed(0x2000)
        );
    }

    #[test]
    fn overlapping_modules_are_refused() {
        let mut m = mb1_sample();
        // The second module starts inside the first.
        put32(&mut m, 0x2010, 0x20_0fff);
        assert_eq!(
            BootInfo::from_multiboot1(0x9500, m.reader()).unwrap_err(),
            BootInfoError::Malformed(0x2010)
        );
        // Touching is not overlapping.
        put32(&mut m, 0x2010, 0x20_1000);
        put32(&mut m, 0x2014, 0x20_2000);
        assert!(BootInfo::from_multiboot1(0x9500, m.reader()).is_ok());
    }

    #[test]
    fn memory_map_entries_that_do_not_fit_are_refused_not_looped_on() {
        // An entry whose size is 0 would make the walk stand still.
        let mut m = mb1_sample();
        put32(&mut m, 0x9000 + 24, 0);
        assert_eq!(
            BootInfo::from_multiboot1(0x9500, m.reader()).unwrap_err(),
            BootInfoError::Malformed(0x9000 + 24)
        );
        // One whose size runs past the map's length.
        let mut m = mb1_sample();
        put32(&mut m, 0x9000 + 48, 40);
        assert!(matches!(
            BootInfo::from_multiboot1(0x9500, m.reader()),
            Err(BootInfoError::Malformed(_))
        ));
        // A length that leaves a piece too short for an entry.
        let mut m = mb1_sample();
        put32(&mut m, 0x9500 + 44, 3 * 24 + 8);
        assert!(matches!(
            BootInfo::from_multiboot1(0x9500, m.reader()),
            Err(BootInfoError::Malformed(_))
        ));
        // A length past every real map.
        let mut m = mb1_sample();
        put32(&mut m, 0x9500 + 44, u32::MAX);
        assert!(matches!(
            BootInfo::from_multiboot1(0x9500, m.reader()),
            Err(BootInfoError::Malformed(_))
        ));
        // Larger entries (size 24) are walked by their size.
        let mut m = mb1_sample();
        put32(&mut m, 0x9500 + 44, 28 + 24);
        put32(&mut m, 0x9000, 24);
        m.put(0x9000 + 28, &[0; 24]);
        put32(&mut m, 0x9000 + 28, 20);
        m.put(0x9000 + 32, &0x10_0000u64.to_le_bytes());
        m.put(0x9000 + 40, &0x1000u64.to_le_bytes());
        put32(&mut m, 0x9000 + 48, 1);
        let info = BootInfo::from_multiboot1(0x9500, m.reader()).unwrap();
        let regions: Vec<_> = info.regions().map(|r| (r.start, r.len)).collect();
        assert_eq!(regions, [(0, 0x9fc00), (0x10_0000, 0x1000)]);
    }

    #[test]
    fn multiboot_tables_outside_memory_are_errors() {
        let m = mb1_sample();
        assert_eq!(
            BootInfo::from_multiboot1(0xffff_fff0, m.reader()).unwrap_err(),
            BootInfoError::Unreadable(0xffff_fff0)
        );
        let mut m = mb1_sample();
        put32(&mut m, 0x9500 + 24, 0xffff_fff8);
        assert!(matches!(
            BootInfo::from_multiboot1(0x9500, m.reader()),
            Err(BootInfoError::Unreadable(_))
        ));
        let mut m = mb1_sample();
        put32(&mut m, 0x9500 + 48, 0xffff_0000);
        assert_eq!(
            BootInfo::from_multiboot1(0x9500, m.reader()).unwrap_err(),
            BootInfoError::Unreadable(0xffff_0000)
        );
    }

    #[test]
    fn too_many_modules_are_counted() {
        let mut m = mb1_sample();
        put32(&mut m, 0x9500 + 20, 1000);
        // Entries past the first two are zero: empty modules at 0, which
        // touch but do not overlap.
        let info = BootInfo::from_multiboot1(0x9500, m.reader()).unwrap();
        assert_eq!(info.modules().count(), MAX_MODULES);
        assert_eq!(info.modules_dropped, 1000 - MAX_MODULES);
    }
}
