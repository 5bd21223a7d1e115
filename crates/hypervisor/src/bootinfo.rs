//! What the boot loader handed over, in one vendor- and loader-neutral form.
//!
//! The PVH path reads `hvm_start_info` and the tables it points to through a
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
}
