//! The guest memory plan: where RAM, the kernel, the boot structures, the
//! modules, the special pages and the ACPI tables go.
//!
//! The layout follows Xen's for a PVH domU (see `docs/memory-plan.md`):
//!
//! - RAM from 0 up to [`LOW_RAM_TOP`] at most; RAM beyond that goes above
//!   4 GiB, leaving a hole for the ACPI tables, the special pages and MMIO.
//! - ACPI tables at [`ACPI_BASE`] (reported as NVS), their RSDP copied to
//!   [`RSDP_PADDR`] in a reserved page below 1 MiB.
//! - Special pages at PFNs [`SPECIAL_PFN_FIRST`]`..=`[`SPECIAL_PFN_LAST`]
//!   (console [`CONSOLE_PFN`], xenstore [`XENSTORE_PFN`]), reserved.
//! - The kernel at its `p_paddr`, or moved per its PHYS32_RELOC note when
//!   that place is not free RAM.
//! - `hvm_start_info`, the command lines, the module list and the memory
//!   map first-fit in free RAM from 1 MiB, below 1 GiB; each module
//!   first-fit from 1 MiB, page-aligned, below 4 GiB.

use alloc::vec::Vec;
use core::fmt;

use xen_abi::start_info::{
    HvmMemmapTableEntry, HvmModlistEntry, HvmStartInfo, SIF_INITDOMAIN, SIF_PRIVILEGED,
    XEN_HVM_MEMMAP_TYPE_NVS, XEN_HVM_MEMMAP_TYPE_RAM, XEN_HVM_MEMMAP_TYPE_RESERVED,
};

use crate::elf::{PvhImage, Reloc, Segment};
use crate::{GuestConfig, Module};

/// Guest page size.
pub const PAGE_SIZE: u64 = 0x1000;
/// Where the ACPI tables go (Xen's `ACPI_INFO_PHYSICAL_ADDRESS` for PVH).
pub const ACPI_BASE: u64 = 0xfc00_0000;
/// RAM below 4 GiB ends here at most; the rest goes above 4 GiB.
pub const LOW_RAM_TOP: u64 = ACPI_BASE;
/// First special page (Xen's `X86_HVM_END_SPECIAL_REGION - 8`).
pub const SPECIAL_PFN_FIRST: u64 = 0xfeff8;
/// Last special page (Xen's `X86_HVM_END_SPECIAL_REGION - 1`).
pub const SPECIAL_PFN_LAST: u64 = 0xfefff;
/// The xenstore ring page (`HVM_PARAM_STORE_PFN`).
pub const XENSTORE_PFN: u64 = 0xfeffc;
/// The console ring page (`HVM_PARAM_CONSOLE_PFN`).
pub const CONSOLE_PFN: u64 = 0xfefff;
/// Where the RSDP is copied when ACPI tables are given (Xen's place for
/// PVH guests: the last 64 bytes below 1 MiB).
pub const RSDP_PADDR: u64 = 0xf_ffc0;
/// Where RAM resumes above the hole below 4 GiB.
pub const HIGH_RAM_BASE: u64 = 1 << 32;
/// Boot structures and modules are placed at or above this address
/// (below it: the real-mode area Linux keeps for itself).
pub const BOOT_FLOOR: u64 = 0x10_0000;
/// `hvm_start_info`, command lines, module list and memory map end at or
/// below this (Linux 6.1 maps only the first 1 GiB early).
pub const BOOT_INFO_LIMIT: u64 = 1 << 30;
/// Modules end at or below this.
pub const MODULE_LIMIT: u64 = 1 << 32;
/// Least RAM accepted.
pub const MIN_RAM: u64 = 2 << 20;
/// Most RAM accepted (a 46-bit guest-physical space).
pub const MAX_RAM: u64 = 1 << 46;
/// Most modules accepted.
pub const MAX_MODULES: usize = 256;

const RSDP_V1_LEN: usize = 20;
const RSDP_V2_LEN: usize = 36;

/// A guest-physical range `[start, end)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GpaRange {
    /// First address.
    pub start: u64,
    /// One past the last address (`end >= start`).
    pub end: u64,
}

impl GpaRange {
    /// `[start, start + len)`, or `None` if it wraps.
    pub fn new(start: u64, len: u64) -> Option<Self> {
        Some(Self {
            start,
            end: start.checked_add(len)?,
        })
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// Whether the two ranges share a byte.
    pub fn overlaps(&self, other: &GpaRange) -> bool {
        self.start < other.end && other.start < self.end && !self.is_empty() && !other.is_empty()
    }

    /// Whether `other` lies entirely inside `self`.
    pub fn contains_range(&self, other: &GpaRange) -> bool {
        self.start <= other.start && other.end <= self.end
    }

    /// Rounded outward to whole pages (saturating at the top).
    pub fn page_rounded(&self) -> GpaRange {
        GpaRange {
            start: self.start & !(PAGE_SIZE - 1),
            end: align_up(self.end, PAGE_SIZE).unwrap_or(!(PAGE_SIZE - 1)),
        }
    }
}

impl fmt::Display for GpaRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}, {:#x})", self.start, self.end)
    }
}

/// A region the loader places, for error messages and overlap checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    /// A kernel segment (program header index).
    Segment(usize),
    /// `hvm_start_info`.
    StartInfo,
    /// The kernel command line.
    Cmdline,
    /// The module list.
    ModList,
    /// The memory map.
    MemMap,
    /// Module `i`'s data.
    Module(usize),
    /// Module `i`'s command line.
    ModuleCmdline(usize),
    /// The special pages (console, xenstore, ...).
    SpecialPages,
    /// The ACPI tables.
    Acpi,
    /// The page holding the RSDP copy.
    RsdpPage,
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Region::Segment(i) => write!(f, "kernel segment {i}"),
            Region::StartInfo => f.write_str("hvm_start_info"),
            Region::Cmdline => f.write_str("command line"),
            Region::ModList => f.write_str("module list"),
            Region::MemMap => f.write_str("memory map"),
            Region::Module(i) => write!(f, "module {i}"),
            Region::ModuleCmdline(i) => write!(f, "module {i} command line"),
            Region::SpecialPages => f.write_str("special pages"),
            Region::Acpi => f.write_str("ACPI tables"),
            Region::RsdpPage => f.write_str("RSDP page"),
        }
    }
}

/// Why no plan fits the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// Less RAM than [`MIN_RAM`].
    TooLittleMemory(u64),
    /// More RAM than [`MAX_RAM`].
    TooMuchMemory(u64),
    /// The kernel's place is not free RAM and it has no PHYS32_RELOC note.
    KernelDoesNotFit(GpaRange),
    /// The kernel may move, but no free RAM satisfies its PHYS32_RELOC note.
    NoRoomToRelocate {
        /// The kernel's span as linked.
        linked: GpaRange,
        /// Its relocation constraints.
        reloc: Reloc,
    },
    /// No free RAM for a region under its address limit.
    NoRoom {
        /// The region.
        region: Region,
        /// Its size in bytes.
        size: u64,
        /// The address it must end at or below.
        limit: u64,
    },
    /// A command line holds a NUL byte (module index, or `None` for the
    /// kernel's).
    CmdlineHasNul(Option<usize>),
    /// More than [`MAX_MODULES`] modules.
    TooManyModules(usize),
    /// ACPI tables too large for the room between [`ACPI_BASE`] and the
    /// special pages.
    AcpiTooLarge(usize),
    /// The RSDP address does not point to an RSDP inside the ACPI tables.
    BadRsdp(u64),
    /// The direct-mapped RAM range is not page-aligned, is empty, or is
    /// not between the low RAM's end and [`ACPI_BASE`].
    BadDirectRam(GpaRange),
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PlanError::TooLittleMemory(m) => {
                write!(f, "{m:#x} bytes of RAM: at least {MIN_RAM:#x} needed")
            }
            PlanError::TooMuchMemory(m) => {
                write!(f, "{m:#x} bytes of RAM: at most {MAX_RAM:#x} supported")
            }
            PlanError::KernelDoesNotFit(r) => write!(
                f,
                "kernel at {r} is not inside free RAM and has no PHYS32_RELOC note to move it"
            ),
            PlanError::NoRoomToRelocate { linked, reloc } => write!(
                f,
                "kernel at {linked} must move, but no free RAM is {:#x}-aligned within [{:#x}, {:#x}]",
                reloc.align, reloc.min, reloc.max
            ),
            PlanError::NoRoom {
                region,
                size,
                limit,
            } => write!(
                f,
                "no free RAM for the {region} ({size:#x} bytes) below {limit:#x}"
            ),
            PlanError::CmdlineHasNul(None) => f.write_str("kernel command line contains NUL"),
            PlanError::CmdlineHasNul(Some(i)) => write!(f, "module {i} command line contains NUL"),
            PlanError::TooManyModules(n) => {
                write!(f, "{n} modules: at most {MAX_MODULES} supported")
            }
            PlanError::AcpiTooLarge(n) => write!(f, "ACPI tables of {n:#x} bytes do not fit"),
            PlanError::BadRsdp(a) => write!(f, "no RSDP at {a:#x} inside the ACPI tables"),
            PlanError::BadDirectRam(r) => write!(
                f,
                "direct-mapped RAM {:#x}-{:#x} is not page-aligned between the low RAM and the ACPI tables",
                r.start, r.end
            ),
        }
    }
}

impl core::error::Error for PlanError {}

/// Where one module went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlacedModule {
    /// The module's bytes (page-aligned start; `len()` is the module size).
    pub range: GpaRange,
    /// Its NUL-terminated command line, if it has one.
    pub cmdline: Option<GpaRange>,
}

/// Where everything goes: the loader's answer, for the hypervisor to back
/// memory and publish HVM params (console and xenstore PFNs, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    /// RAM size asked for, rounded down to whole pages.
    pub mem_bytes: u64,
    /// RAM ranges: `[0, low end)` and, for large guests, `[4 GiB, ...)`.
    pub ram: Vec<GpaRange>,
    /// The kernel's span (first segment start to last segment end), after
    /// any relocation.
    pub kernel: GpaRange,
    /// The kernel's span as linked (equal to `kernel` unless moved).
    pub kernel_linked: GpaRange,
    /// The loadable segments at their final addresses.
    pub segments: Vec<Segment>,
    /// The PVH entry point (moved with the kernel).
    pub entry: u32,
    /// `hvm_start_info` (56 bytes, page-aligned).
    pub start_info: GpaRange,
    /// The kernel command line, NUL included.
    pub cmdline: GpaRange,
    /// The module list, if there are modules.
    pub modlist: Option<GpaRange>,
    /// Each module, in order (module 0 is Linux's initrd).
    pub modules: Vec<PlacedModule>,
    /// The memory map table.
    pub memmap: GpaRange,
    /// The memory map entries written there, sorted by address.
    pub memmap_entries: Vec<HvmMemmapTableEntry>,
    /// The special pages ([`SPECIAL_PFN_FIRST`]..=[`SPECIAL_PFN_LAST`]).
    pub special_pages: GpaRange,
    /// The console ring page (`HVM_PARAM_CONSOLE_PFN`).
    pub console_pfn: u64,
    /// The xenstore ring page (`HVM_PARAM_STORE_PFN`).
    pub xenstore_pfn: u64,
    /// The ACPI tables, page-rounded, if given.
    pub acpi: Option<GpaRange>,
    /// The page holding the RSDP copy, if ACPI tables are given.
    pub rsdp_page: Option<GpaRange>,
    /// The RSDP address published in `hvm_start_info` (0 without ACPI).
    pub rsdp_paddr: u64,
    /// `hvm_start_info.flags`.
    pub start_info_flags: u32,
}

impl MemoryPlan {
    /// Every placed region, with what it is. Pairwise disjoint.
    pub fn regions(&self) -> Vec<(Region, GpaRange)> {
        let mut v = Vec::new();
        for s in &self.segments {
            v.push((
                Region::Segment(s.index),
                GpaRange {
                    start: s.paddr,
                    end: s.end(),
                },
            ));
        }
        v.push((Region::StartInfo, self.start_info));
        v.push((Region::Cmdline, self.cmdline));
        if let Some(r) = self.modlist {
            v.push((Region::ModList, r));
        }
        v.push((Region::MemMap, self.memmap));
        for (i, m) in self.modules.iter().enumerate() {
            v.push((Region::Module(i), m.range));
            if let Some(c) = m.cmdline {
                v.push((Region::ModuleCmdline(i), c));
            }
        }
        v.push((Region::SpecialPages, self.special_pages));
        if let Some(r) = self.acpi {
            v.push((Region::Acpi, r));
        }
        if let Some(r) = self.rsdp_page {
            v.push((Region::RsdpPage, r));
        }
        v
    }

    /// The ranges guest memory must back for the loader and the guest: the
    /// RAM, the ACPI tables and the special pages.
    pub fn backing(&self) -> Vec<GpaRange> {
        let mut v = self.ram.clone();
        v.extend(self.acpi);
        v.push(self.special_pages);
        v
    }

    /// The `hvm_start_info` this plan describes.
    pub fn start_info(&self) -> HvmStartInfo {
        HvmStartInfo {
            magic: xen_abi::start_info::XEN_HVM_START_MAGIC_VALUE,
            version: 1,
            flags: self.start_info_flags,
            // At most MAX_MODULES.
            nr_modules: self.modules.len() as u32,
            modlist_paddr: self.modlist.map_or(0, |r| r.start),
            cmdline_paddr: self.cmdline.start,
            rsdp_paddr: self.rsdp_paddr,
            memmap_paddr: self.memmap.start,
            // A handful of entries.
            memmap_entries: self.memmap_entries.len() as u32,
            reserved: 0,
        }
    }

    /// The module list entries this plan describes.
    pub fn modlist_entries(&self) -> Vec<HvmModlistEntry> {
        self.modules
            .iter()
            .map(|m| HvmModlistEntry {
                paddr: m.range.start,
                size: m.range.len(),
                cmdline_paddr: m.cmdline.map_or(0, |c| c.start),
                reserved: 0,
            })
            .collect()
    }
}

pub(crate) fn align_up(x: u64, align: u64) -> Option<u64> {
    debug_assert!(align.is_power_of_two());
    x.checked_add(align - 1).map(|v| v & !(align - 1))
}

/// The special pages as a range.
pub const fn special_pages() -> GpaRange {
    GpaRange {
        start: SPECIAL_PFN_FIRST * PAGE_SIZE,
        end: (SPECIAL_PFN_LAST + 1) * PAGE_SIZE,
    }
}

/// RAM ranges for `mem_bytes` (page-aligned, checked by the caller).
fn ram_ranges(mem_bytes: u64) -> Vec<GpaRange> {
    let low = mem_bytes.min(LOW_RAM_TOP);
    let mut v = alloc::vec![GpaRange { start: 0, end: low }];
    if mem_bytes > LOW_RAM_TOP {
        // No overflow: mem_bytes <= MAX_RAM.
        v.push(GpaRange {
            start: HIGH_RAM_BASE,
            end: HIGH_RAM_BASE + (mem_bytes - LOW_RAM_TOP),
        });
    }
    v
}

/// One past the highest address a guest with `mem_bytes` of RAM needs
/// backed (RAM, ACPI region, special pages), saturating.
pub fn backing_top(mem_bytes: u64) -> u64 {
    let ram_top = if mem_bytes > LOW_RAM_TOP {
        HIGH_RAM_BASE.saturating_add(mem_bytes - LOW_RAM_TOP)
    } else {
        mem_bytes
    };
    ram_top.max(special_pages().end)
}

/// Free guest-physical ranges, sorted and disjoint.
struct Free(Vec<GpaRange>);

impl Free {
    fn contains(&self, r: &GpaRange) -> bool {
        self.0.iter().any(|f| f.contains_range(r))
    }

    /// Removes `r` from the free ranges.
    fn take(&mut self, r: GpaRange) {
        if r.is_empty() {
            return;
        }
        let mut out = Vec::with_capacity(self.0.len() + 1);
        for f in self.0.drain(..) {
            if !f.overlaps(&r) {
                out.push(f);
                continue;
            }
            if f.start < r.start {
                out.push(GpaRange {
                    start: f.start,
                    end: r.start,
                });
            }
            if r.end < f.end {
                out.push(GpaRange {
                    start: r.end,
                    end: f.end,
                });
            }
        }
        self.0 = out;
    }

    /// First fit: the lowest `align`-aligned address at or above
    /// [`BOOT_FLOOR`] where `size` bytes fit, ending at or below `limit`.
    /// Takes the page-rounded range.
    fn alloc(
        &mut self,
        region: Region,
        size: u64,
        align: u64,
        limit: u64,
    ) -> Result<u64, PlanError> {
        let no_room = PlanError::NoRoom {
            region,
            size,
            limit,
        };
        let found = self.0.iter().find_map(|f| {
            let start = align_up(f.start.max(BOOT_FLOOR), align)?;
            let end = start.checked_add(size)?;
            (end <= f.end && end <= limit).then_some(start)
        });
        let start = found.ok_or(no_room)?;
        // Checked in find_map.
        let range = GpaRange {
            start,
            end: start + size,
        };
        // Whole pages, so no two regions share one: a zero-sized module still
        // gets a page of its own.
        let taken = GpaRange {
            start,
            end: align_up(range.end.max(start + 1), PAGE_SIZE).unwrap_or(u64::MAX),
        };
        self.take(taken);
        Ok(start)
    }
}

/// Places the segments at `base` (the span start moving there), or `None`
/// if an address overflows or leaves the 32-bit space.
fn moved(segments: &[Segment], from: u64, to: u64) -> Option<Vec<Segment>> {
    segments
        .iter()
        .map(|s| {
            let paddr = s.paddr.checked_sub(from)?.checked_add(to)?;
            let end = paddr.checked_add(s.memsz)?;
            (end <= HIGH_RAM_BASE).then_some(Segment { paddr, ..*s })
        })
        .collect()
}

fn fits(free: &Free, segments: &[Segment]) -> bool {
    segments.iter().all(|s| {
        free.contains(&GpaRange {
            start: s.paddr,
            end: s.end(),
        })
    })
}

/// Chooses the kernel's place: as linked if free, else per its reloc note.
fn place_kernel(image: &PvhImage<'_>, free: &Free) -> Result<(Vec<Segment>, u64), PlanError> {
    let (start, end) = image.span();
    let linked = GpaRange { start, end };
    if fits(free, &image.segments) {
        return Ok((image.segments.clone(), start));
    }
    let Some(reloc) = image.notes.reloc else {
        return Err(PlanError::KernelDoesNotFit(linked));
    };
    for f in &free.0 {
        let Some(base) = align_up(f.start.max(reloc.min), reloc.align) else {
            break;
        };
        let Some(last) = base
            .checked_add(linked.len())
            .and_then(|e| e.checked_sub(1))
        else {
            break;
        };
        if last > reloc.max {
            break;
        }
        if let Some(segs) = moved(&image.segments, start, base)
            && fits(free, &segs)
        {
            return Ok((segs, base));
        }
    }
    Err(PlanError::NoRoomToRelocate { linked, reloc })
}

fn check_cmdline(s: &str, who: Option<usize>) -> Result<(), PlanError> {
    if s.as_bytes().contains(&0) {
        Err(PlanError::CmdlineHasNul(who))
    } else {
        Ok(())
    }
}

/// Builds the memory map: RAM minus the reserved ranges, plus those.
fn memmap(ram: &[GpaRange], reserved: &[(GpaRange, u32)]) -> Vec<HvmMemmapTableEntry> {
    let mut free = Free(ram.to_vec());
    for (r, _) in reserved {
        free.take(*r);
    }
    let entry = |r: &GpaRange, ty| HvmMemmapTableEntry {
        addr: r.start,
        size: r.len(),
        r#type: ty,
        reserved: 0,
    };
    let mut v: Vec<_> = free
        .0
        .iter()
        .filter(|r| !r.is_empty())
        .map(|r| entry(r, XEN_HVM_MEMMAP_TYPE_RAM))
        .chain(reserved.iter().map(|(r, ty)| entry(r, *ty)))
        .collect();
    v.sort_unstable_by_key(|e| e.addr);
    v
}

/// Checks the ACPI blob; returns the tables' range and the RSDP length.
fn check_acpi(tables: &[u8], rsdp_paddr: u64) -> Result<(GpaRange, usize), PlanError> {
    let too_large = PlanError::AcpiTooLarge(tables.len());
    let len = u64::try_from(tables.len()).map_err(|_| too_large)?;
    let range = GpaRange::new(ACPI_BASE, len)
        .ok_or(too_large)?
        .page_rounded();
    if range.end > special_pages().start {
        return Err(too_large);
    }
    let bad = PlanError::BadRsdp(rsdp_paddr);
    let off = rsdp_paddr
        .checked_sub(ACPI_BASE)
        .and_then(|o| usize::try_from(o).ok())
        .ok_or(bad)?;
    let rsdp = tables.get(off..).ok_or(bad)?;
    if !rsdp.starts_with(b"RSD PTR ") {
        return Err(bad);
    }
    let rsdp_len = match rsdp.get(15) {
        Some(rev) if *rev >= 2 => RSDP_V2_LEN,
        Some(_) => RSDP_V1_LEN,
        None => return Err(bad),
    };
    if rsdp.len() < rsdp_len {
        return Err(bad);
    }
    Ok((range, rsdp_len))
}

/// Where each piece goes, with nothing written yet.
pub(crate) fn plan(image: &PvhImage<'_>, cfg: &GuestConfig<'_>) -> Result<MemoryPlan, PlanError> {
    let mem_bytes = cfg.mem_bytes & !(PAGE_SIZE - 1);
    if mem_bytes < MIN_RAM {
        return Err(PlanError::TooLittleMemory(cfg.mem_bytes));
    }
    if mem_bytes > MAX_RAM {
        return Err(PlanError::TooMuchMemory(cfg.mem_bytes));
    }
    if cfg.modules.len() > MAX_MODULES {
        return Err(PlanError::TooManyModules(cfg.modules.len()));
    }
    check_cmdline(cfg.cmdline, None)?;
    for (i, m) in cfg.modules.iter().enumerate() {
        check_cmdline(m.cmdline.unwrap_or(""), Some(i))?;
    }

    let ram = ram_ranges(mem_bytes);
    let mut listed = ram.clone();
    if let Some(d) = cfg.direct_ram {
        let low_end = ram[0].end;
        let aligned = d.start.is_multiple_of(PAGE_SIZE) && d.end.is_multiple_of(PAGE_SIZE);
        if !aligned || d.is_empty() || d.start < low_end || d.end > ACPI_BASE {
            return Err(PlanError::BadDirectRam(d));
        }
        listed.push(d);
        listed.sort_unstable();
    }
    let special = special_pages();
    let mut reserved = alloc::vec![(special, XEN_HVM_MEMMAP_TYPE_RESERVED)];
    let mut acpi = None;
    let mut rsdp_page = None;
    if let Some(blob) = &cfg.acpi {
        let (range, _) = check_acpi(blob.tables, blob.rsdp_paddr)?;
        let page = GpaRange {
            start: RSDP_PADDR & !(PAGE_SIZE - 1),
            end: align_up(RSDP_PADDR + 1, PAGE_SIZE).unwrap_or(RSDP_PADDR),
        };
        reserved.push((range, XEN_HVM_MEMMAP_TYPE_NVS));
        reserved.push((page, XEN_HVM_MEMMAP_TYPE_RESERVED));
        acpi = Some(range);
        rsdp_page = Some(page);
    }
    let memmap_entries = memmap(&listed, &reserved);

    let mut free = Free(ram.clone());
    for (r, _) in &reserved {
        free.take(*r);
    }
    let (segments, base) = place_kernel(image, &free)?;
    for s in &segments {
        free.take(
            GpaRange {
                start: s.paddr,
                end: s.end(),
            }
            .page_rounded(),
        );
    }
    let (linked_start, linked_end) = image.span();
    // Both in the 32-bit space: checked by the parser and by `moved`.
    let kernel = GpaRange {
        start: base,
        end: base + (linked_end - linked_start),
    };
    let entry = u64::from(image.entry) - linked_start + base;
    let entry = u32::try_from(entry).map_err(|_| PlanError::KernelDoesNotFit(kernel))?;

    // Small structures first (below 1 GiB), then modules (below 4 GiB).
    let start_info = free.alloc(
        Region::StartInfo,
        size_of::<HvmStartInfo>() as u64,
        PAGE_SIZE,
        BOOT_INFO_LIMIT,
    )?;
    let start_info = GpaRange {
        start: start_info,
        end: start_info + size_of::<HvmStartInfo>() as u64,
    };
    let memmap_size = (memmap_entries.len() * size_of::<HvmMemmapTableEntry>()) as u64;
    let memmap_at = free.alloc(Region::MemMap, memmap_size, 8, BOOT_INFO_LIMIT)?;
    let modlist = if cfg.modules.is_empty() {
        None
    } else {
        let size = (cfg.modules.len() * size_of::<HvmModlistEntry>()) as u64;
        let at = free.alloc(Region::ModList, size, 8, BOOT_INFO_LIMIT)?;
        Some(GpaRange {
            start: at,
            end: at + size,
        })
    };
    let cmdline = place_string(&mut free, Region::Cmdline, cfg.cmdline)?;
    let mut module_cmdlines = Vec::with_capacity(cfg.modules.len());
    for (i, m) in cfg.modules.iter().enumerate() {
        module_cmdlines.push(match m.cmdline {
            Some(c) => Some(place_string(&mut free, Region::ModuleCmdline(i), c)?),
            None => None,
        });
    }
    let mut modules = Vec::with_capacity(cfg.modules.len());
    for (i, (m, cmdline)) in cfg.modules.iter().zip(module_cmdlines).enumerate() {
        modules.push(PlacedModule {
            range: place_module(&mut free, i, m)?,
            cmdline,
        });
    }

    let mut flags = 0;
    if cfg.privileged {
        flags |= SIF_PRIVILEGED | SIF_INITDOMAIN;
    }
    Ok(MemoryPlan {
        mem_bytes,
        ram,
        kernel,
        kernel_linked: GpaRange {
            start: linked_start,
            end: linked_end,
        },
        segments,
        entry,
        start_info,
        cmdline,
        modlist,
        modules,
        memmap: GpaRange {
            start: memmap_at,
            end: memmap_at + memmap_size,
        },
        memmap_entries,
        special_pages: special,
        console_pfn: CONSOLE_PFN,
        xenstore_pfn: XENSTORE_PFN,
        acpi,
        rsdp_page,
        rsdp_paddr: if acpi.is_some() { RSDP_PADDR } else { 0 },
        start_info_flags: flags,
    })
}

fn place_string(free: &mut Free, region: Region, s: &str) -> Result<GpaRange, PlanError> {
    let size = (s.len() as u64).checked_add(1).ok_or(PlanError::NoRoom {
        region,
        size: u64::MAX,
        limit: BOOT_INFO_LIMIT,
    })?;
    let at = free.alloc(region, size, 8, BOOT_INFO_LIMIT)?;
    Ok(GpaRange {
        start: at,
        end: at + size,
    })
}

fn place_module(free: &mut Free, i: usize, m: &Module<'_>) -> Result<GpaRange, PlanError> {
    let size = m.data.len() as u64;
    let at = free.alloc(Region::Module(i), size, PAGE_SIZE, MODULE_LIMIT)?;
    Ok(GpaRange {
        start: at,
        end: at + size,
    })
}
