//! # guest-loader: PVH guest images to guest memory
//!
//! This crate turns a PVH guest kernel (an ELF32 or ELF64 image with Xen
//! notes), its modules and its command line into guest-physical memory
//! contents, an `hvm_start_info` (version 1, with module list and memory
//! map) and an initial vCPU state, per Xen's PVH boot ABI. It touches no
//! hardware: it writes only through the [`GuestMemory`] trait, so it runs in
//! the hypervisor and in host tests alike.
//!
//! Everything in the image is hostile: parsing never panics, every address
//! sum is checked, nothing is written outside the planned regions, and each
//! failure is a [`LoadError`] saying what was wrong and where.
//!
//! - [`parse`] inspects an image (entry point, segments, notes) for logs.
//! - [`plan`] decides where everything goes ([`MemoryPlan`]) without
//!   writing, so the hypervisor can back the memory first.
//! - [`load`] plans and writes, and returns the plan with the
//!   [`InitialVcpuState`].
//!
//! Modules: [`elf`] (image parsing), [`layout`] (the memory plan, see
//! `docs/memory-plan.md`), [`memory`] (the guest-memory trait), [`vcpu`]
//! (the entry state).

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod elf;
pub mod layout;
pub mod memory;
pub mod vcpu;

use core::fmt;

use zerocopy::IntoBytes;

pub use elf::{ElfClass, ElfError, NoteError, PvhImage, Reloc, Segment, XenNotes};
pub use layout::{GpaRange, MemoryPlan, PlacedModule, PlanError, Region};
pub use memory::{GuestMemory, MemError, VecGuestMemory};
pub use vcpu::{DescriptorTable, InitialVcpuState, SegmentState};

/// A boot module (module 0 is Linux's initrd).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Module<'a> {
    /// The module's bytes.
    pub data: &'a [u8],
    /// Its command line, if any (no NUL bytes).
    pub cmdline: Option<&'a str>,
}

/// ACPI tables built by the caller, to be placed at
/// [`layout::ACPI_BASE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcpiBlob<'a> {
    /// The tables as they must appear at [`layout::ACPI_BASE`].
    pub tables: &'a [u8],
    /// Guest-physical address of the RSDP inside `tables`. The loader
    /// also copies it to [`layout::RSDP_PADDR`] and publishes that copy,
    /// as Xen does.
    pub rsdp_paddr: u64,
}

/// What the guest gets besides its kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestConfig<'a> {
    /// RAM in bytes (rounded down to whole pages).
    pub mem_bytes: u64,
    /// The kernel command line (no NUL bytes).
    pub cmdline: &'a str,
    /// Boot modules, in order.
    pub modules: &'a [Module<'a>],
    /// ACPI tables, if the guest gets any.
    pub acpi: Option<AcpiBlob<'a>>,
    /// A privileged (initial) domain: sets `SIF_PRIVILEGED | SIF_INITDOMAIN`.
    pub privileged: bool,
    /// RAM the hypervisor backs itself outside the guest's ordinary RAM
    /// (a direct-mapped region, guest-physical = host-physical): listed
    /// in the memory map as RAM, never used for placing anything, not in
    /// [`MemoryPlan::backing`]. Page-aligned, above the low RAM and below
    /// [`layout::ACPI_BASE`], or the plan is refused.
    pub direct_ram: Option<GpaRange>,
}

/// Why a guest could not be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// The image is not a well-formed x86 ELF file.
    Elf(ElfError),
    /// The image's Xen notes do not make it a bootable PVH kernel.
    Note(NoteError),
    /// The configuration and the image do not fit the guest's memory.
    Plan(PlanError),
    /// The guest memory is smaller than the plan needs.
    MemoryTooSmall {
        /// The range that is not covered.
        needed: GpaRange,
        /// The memory's size.
        size: u64,
    },
    /// Writing a region failed.
    Memory {
        /// What was being written.
        region: Region,
        /// The memory's answer.
        source: MemError,
    },
}

impl LoadError {
    /// Whether the image is rejected as not a PVH kernel (no PHYS32_ENTRY).
    pub fn is_not_pvh(&self) -> bool {
        matches!(self, LoadError::Note(NoteError::NotPvh))
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Elf(e) => write!(f, "bad guest image: {e}"),
            LoadError::Note(e) => write!(f, "bad guest image: {e}"),
            LoadError::Plan(e) => write!(f, "guest does not fit: {e}"),
            LoadError::MemoryTooSmall { needed, size } => {
                write!(f, "guest memory of {size:#x} bytes does not back {needed}")
            }
            LoadError::Memory { region, source } => write!(f, "writing the {region}: {source}"),
        }
    }
}

impl core::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            LoadError::Elf(e) => Some(e),
            LoadError::Note(e) => Some(e),
            LoadError::Plan(e) => Some(e),
            LoadError::MemoryTooSmall { .. } => None,
            LoadError::Memory { source, .. } => Some(source),
        }
    }
}

impl From<ElfError> for LoadError {
    fn from(e: ElfError) -> Self {
        LoadError::Elf(e)
    }
}

impl From<NoteError> for LoadError {
    fn from(e: NoteError) -> Self {
        LoadError::Note(e)
    }
}

impl From<PlanError> for LoadError {
    fn from(e: PlanError) -> Self {
        LoadError::Plan(e)
    }
}

impl From<elf::ParseError> for LoadError {
    fn from(e: elf::ParseError) -> Self {
        match e {
            elf::ParseError::Elf(e) => LoadError::Elf(e),
            elf::ParseError::Note(e) => LoadError::Note(e),
        }
    }
}

/// A loaded guest: where everything went and how its boot vCPU starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedGuest {
    /// Where everything went.
    pub plan: MemoryPlan,
    /// The boot vCPU's registers.
    pub vcpu: InitialVcpuState,
}

/// Inspects an image without placing it: class, entry point, segments,
/// Xen notes. Fails as [`load`] would on a malformed or non-PVH image.
pub fn parse(image: &[u8]) -> Result<PvhImage<'_>, LoadError> {
    Ok(elf::parse_image(image)?)
}

/// Decides where the kernel, the boot structures, the modules and the
/// ACPI tables go, writing nothing.
pub fn plan(image: &PvhImage<'_>, cfg: &GuestConfig<'_>) -> Result<MemoryPlan, LoadError> {
    Ok(layout::plan(image, cfg)?)
}

/// Loads a PVH guest: parses `image`, plans its memory and writes the
/// kernel segments (zeroing their bss), the special pages (zeroed), the
/// ACPI tables and RSDP copy, the modules, the command lines, the module
/// list, the memory map and `hvm_start_info` into `mem`.
///
/// RAM the plan does not use is left as it is: the hypervisor hands the
/// guest zeroed RAM.
pub fn load<M: GuestMemory + ?Sized>(
    image: &[u8],
    cfg: &GuestConfig<'_>,
    mem: &mut M,
) -> Result<LoadedGuest, LoadError> {
    let image = parse(image)?;
    let plan = plan(&image, cfg)?;
    write(&image, cfg, &plan, mem)?;
    // Both below 4 GiB: the plan keeps the kernel and start_info there.
    let start_info = u32::try_from(plan.start_info.start).map_err(|_| {
        LoadError::Plan(PlanError::NoRoom {
            region: Region::StartInfo,
            size: plan.start_info.len(),
            limit: layout::BOOT_INFO_LIMIT,
        })
    })?;
    let vcpu = InitialVcpuState::pvh(plan.entry, start_info);
    Ok(LoadedGuest { plan, vcpu })
}

fn at<M: GuestMemory + ?Sized>(
    mem: &mut M,
    region: Region,
    gpa: u64,
    data: &[u8],
) -> Result<(), LoadError> {
    mem.write(gpa, data)
        .map_err(|source| LoadError::Memory { region, source })
}

/// Writes what `plan` says into `mem`.
fn write<M: GuestMemory + ?Sized>(
    image: &PvhImage<'_>,
    cfg: &GuestConfig<'_>,
    plan: &MemoryPlan,
    mem: &mut M,
) -> Result<(), LoadError> {
    let size = mem.size();
    for r in plan.backing() {
        if r.end > size {
            return Err(LoadError::MemoryTooSmall { needed: r, size });
        }
    }
    for seg in &plan.segments {
        let region = Region::Segment(seg.index);
        at(mem, region, seg.paddr, image.segment_bytes(seg))?;
        // filesz <= memsz and paddr + memsz checked by the parser.
        mem.zero(seg.paddr + seg.filesz, seg.memsz - seg.filesz)
            .map_err(|source| LoadError::Memory { region, source })?;
    }
    let special = plan.special_pages;
    mem.zero(special.start, special.len())
        .map_err(|source| LoadError::Memory {
            region: Region::SpecialPages,
            source,
        })?;
    if let (Some(blob), Some(range)) = (&cfg.acpi, plan.acpi) {
        at(mem, Region::Acpi, range.start, blob.tables)?;
        let tail = (blob.tables.len() as u64)..range.len();
        mem.zero(
            range.start.saturating_add(tail.start),
            tail.end.saturating_sub(tail.start),
        )
        .map_err(|source| LoadError::Memory {
            region: Region::Acpi,
            source,
        })?;
        // Checked by the planner: an RSDP of this length lies there.
        let off = blob
            .rsdp_paddr
            .checked_sub(layout::ACPI_BASE)
            .and_then(|o| usize::try_from(o).ok())
            .unwrap_or(usize::MAX);
        let rsdp = blob.tables.get(off..).unwrap_or_default();
        let len = if rsdp.get(15).is_some_and(|rev| *rev >= 2) {
            36
        } else {
            20
        };
        at(
            mem,
            Region::RsdpPage,
            plan.rsdp_paddr,
            rsdp.get(..len).unwrap_or_default(),
        )?;
    }
    for (i, (m, placed)) in cfg.modules.iter().zip(&plan.modules).enumerate() {
        at(mem, Region::Module(i), placed.range.start, m.data)?;
        if let (Some(c), Some(r)) = (m.cmdline, placed.cmdline) {
            write_string(mem, Region::ModuleCmdline(i), r.start, c)?;
        }
    }
    write_string(mem, Region::Cmdline, plan.cmdline.start, cfg.cmdline)?;
    if let Some(r) = plan.modlist {
        at(
            mem,
            Region::ModList,
            r.start,
            plan.modlist_entries().as_bytes(),
        )?;
    }
    at(
        mem,
        Region::MemMap,
        plan.memmap.start,
        plan.memmap_entries.as_bytes(),
    )?;
    at(
        mem,
        Region::StartInfo,
        plan.start_info.start,
        plan.start_info().as_bytes(),
    )
}

fn write_string<M: GuestMemory + ?Sized>(
    mem: &mut M,
    region: Region,
    gpa: u64,
    s: &str,
) -> Result<(), LoadError> {
    at(mem, region, gpa, s.as_bytes())?;
    // No overflow: the planner reserved len + 1 bytes there.
    at(mem, region, gpa + s.len() as u64, &[0])
}
