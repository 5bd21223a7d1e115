//! The domain builder: turns a launch plan and its modules into an hv-core
//! domain with memory, a loaded PVH kernel, its boot structures and the
//! boot vCPU's initial state. Pure logic over hv-core's platform traits, so
//! it is tested on the host with hv-core's mock machine.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use guest_loader::layout::{ACPI_BASE, LOW_RAM_TOP};
use guest_loader::{
    AcpiBlob, GpaRange, GuestConfig, GuestMemory, InitialVcpuState, LoadError, MemError, Module,
};
use hv_core::arch::NestedPaging;
use hv_core::domain::Caps;
use hv_core::guestmem::GuestMem;
use hv_core::p2m::{BLOCK_FRAMES, BlockMask, P2mKind, mask_range};
use hv_core::platform::Platform;
use hv_core::{DomId, DomainConfig, Errno, Gfn, Hypervisor};

use crate::guest_acpi;
use crate::launch::DomainPlan;

/// Frames a domain may own beyond its RAM: special pages, ACPI tables,
/// and room for the guest to place a few pages of its own.
pub const EXTRA_PAGES: u64 = 256;

/// Why a domain could not be built.
#[derive(Debug)]
pub enum BuildError {
    /// hv-core refused (out of memory, bad vCPU count, ...).
    Core(Errno),
    /// The kernel could not be loaded.
    Load(LoadError),
    /// The ACPI tables could not be built.
    Acpi(guest_acpi::AcpiBuildError),
    /// No direct-mapped region could be had (`directmap=`).
    DirectMap(Errno),
    /// The direct-mapped region the host could give lies where the domain
    /// has other things (its RAM, ACPI tables, special pages, local APIC).
    DirectMapPlace(GpaRange),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Core(e) => write!(f, "hypervisor error {}", e.0),
            BuildError::Load(e) => write!(f, "cannot load the kernel: {e}"),
            BuildError::Acpi(e) => write!(f, "cannot build ACPI tables: {e:?}"),
            BuildError::DirectMap(e) => {
                write!(f, "no direct-mapped region (hypervisor error {})", e.0)
            }
            BuildError::DirectMapPlace(r) => write!(
                f,
                "the direct-mapped region the host has free, {:#x}-{:#x}, overlaps the domain's other memory",
                r.start, r.end
            ),
        }
    }
}

impl From<Errno> for BuildError {
    fn from(e: Errno) -> Self {
        BuildError::Core(e)
    }
}

/// A built domain.
#[derive(Debug)]
pub struct Built {
    /// Its id.
    pub domid: DomId,
    /// The boot vCPU's registers.
    pub vcpu0: InitialVcpuState,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Where the loader put things (for logs).
    pub entry: u32,
}

/// Writes through hv-core's guest memory for the loader.
struct LoaderMem<'a> {
    mem: GuestMem<'a>,
    size: u64,
}

impl GuestMemory for LoaderMem<'_> {
    fn size(&self) -> u64 {
        self.size
    }
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        self.mem
            .write(gpa, data)
            .map_err(|_| MemError::OutOfBounds {
                gpa,
                len: data.len() as u64,
            })
    }
    fn zero(&mut self, gpa: u64, len: u64) -> Result<(), MemError> {
        let n = usize::try_from(len).map_err(|_| MemError::OutOfBounds { gpa, len })?;
        self.mem
            .zero(gpa, n)
            .map_err(|_| MemError::OutOfBounds { gpa, len })
    }
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.mem.read(gpa, buf).map_err(|_| MemError::OutOfBounds {
            gpa,
            len: buf.len() as u64,
        })
    }
}

/// What the rest of the plan means for one domain.
#[derive(Clone, Copy, Debug, Default)]
pub struct BuildOptions<'a> {
    /// The service domain, if the plan has one: every other domain gets a
    /// xenstore connection it serves.
    pub store_server: Option<u16>,
    /// Appended to the guest command line (the service domain's
    /// `domains=` list).
    pub extra_cmdline: &'a str,
}

/// Builds the domain `plan` describes from `kernel` (and `ramdisk`), with
/// no service domain.
pub fn build<P: Platform>(
    hv: &mut Hypervisor<P>,
    plan: &DomainPlan<'_>,
    kernel: &[u8],
    ramdisk: Option<&[u8]>,
    npt: Box<dyn NestedPaging>,
) -> Result<Built, BuildError> {
    build_with(hv, plan, &BuildOptions::default(), kernel, ramdisk, npt)
}

/// Builds the domain `plan` describes, as [`build`], under `opts`: the
/// service domain gets its powers (`Caps::XENSTORE`, `Caps::DOMCTL_INFO`)
/// and the extra command line; the others a xenstore connection served by
/// `opts.store_server` (page at `XENSTORE_PFN` 0xfeffc).
pub fn build_with<P: Platform>(
    hv: &mut Hypervisor<P>,
    plan: &DomainPlan<'_>,
    opts: &BuildOptions<'_>,
    kernel: &[u8],
    ramdisk: Option<&[u8]>,
    npt: Box<dyn NestedPaging>,
) -> Result<Built, BuildError> {
    let cmdline = match (plan.cmdline, opts.extra_cmdline) {
        (c, "") => String::from(c),
        ("", e) => String::from(e),
        (c, e) => alloc::format!("{c} {e}"),
    };
    let acpi = guest_acpi::build(plan.vcpus).map_err(BuildError::Acpi)?;
    let modules: Vec<Module<'_>> = ramdisk
        .map(|data| Module {
            data,
            cmdline: None,
        })
        .into_iter()
        .collect();
    let mut cfg = GuestConfig {
        mem_bytes: plan.mem,
        cmdline: &cmdline,
        modules: &modules,
        acpi: Some(AcpiBlob {
            tables: &acpi.bytes,
            rsdp_paddr: acpi.rsdp,
        }),
        privileged: plan.privileged,
        direct_ram: None,
    };
    let image = guest_loader::parse(kernel).map_err(BuildError::Load)?;
    let mplan = guest_loader::plan(&image, &cfg).map_err(BuildError::Load)?;
    let backing = mplan.backing();
    let pages: u64 = backing.iter().map(|r| r.len() >> 12).sum();
    let name = if plan.name.is_empty() {
        alloc::format!("d{}", plan.domid)
    } else {
        String::from(plan.name)
    };
    let d = hv.create_domain(
        DomainConfig {
            domid: Some(plan.domid),
            name,
            privileged: plan.privileged,
            vcpus: plan.vcpus,
            max_pages: pages + EXTRA_PAGES + (plan.directmap >> 12),
        },
        npt,
    )?;
    let store = opts.store_server.filter(|&s| s != plan.domid).map(DomId);
    let caps = if plan.service {
        hv.set_caps(d, Caps::XENSTORE.union(Caps::DOMCTL_INFO))
            .map_err(BuildError::from)
    } else {
        Ok(())
    };
    // The direct-mapped region first: its address goes on the command
    // line, which the loader then places.
    let direct = caps.and_then(|()| direct_map(hv, d, plan));
    let direct_cmdline;
    let result = match direct {
        Ok(Some(r)) => {
            direct_cmdline = match cmdline.as_str() {
                "" => alloc::format!("directmap={:#x}:{:#x}", r.start, r.len()),
                c => alloc::format!("{c} directmap={:#x}:{:#x}", r.start, r.len()),
            };
            cfg.cmdline = &direct_cmdline;
            cfg.direct_ram = Some(r);
            guest_loader::plan(&image, &cfg)
                .map_err(BuildError::Load)
                .and_then(|mplan| fill(hv, d, &backing, &mplan, kernel, &cfg, store))
        }
        Ok(None) => fill(hv, d, &backing, &mplan, kernel, &cfg, store),
        Err(e) => Err(e),
    };
    match result {
        Ok(vcpu0) => Ok(Built {
            domid: d,
            vcpu0,
            vcpus: plan.vcpus,
            entry: mplan.entry,
        }),
        Err(e) => {
            let _ = hv.destroy_domain(d);
            Err(e)
        }
    }
}

/// The direct-mapped RAM of `plan` (`directmap=`), given to `d`: a run of
/// host frames at guest-physical = host-physical, which must lie between
/// the domain's low RAM and the ACPI tables (the special pages and the
/// local APIC are above those); refused otherwise.
fn direct_map<P: Platform>(
    hv: &mut Hypervisor<P>,
    d: DomId,
    plan: &DomainPlan<'_>,
) -> Result<Option<GpaRange>, BuildError> {
    if plan.directmap == 0 {
        return Ok(None);
    }
    const BLOCK: u64 = 2 << 20;
    let blocks = plan.directmap.div_ceil(BLOCK);
    let base = hv
        .populate_direct(d, blocks)
        .map_err(BuildError::DirectMap)?;
    let r = GpaRange {
        start: base.0 << 12,
        end: (base.0 << 12) + blocks * BLOCK,
    };
    let low_end = plan.mem.min(LOW_RAM_TOP).next_multiple_of(BLOCK);
    if r.start < low_end || r.end > ACPI_BASE {
        // destroy_domain gives the frames back.
        return Err(BuildError::DirectMapPlace(r));
    }
    Ok(Some(r))
}

fn fill<P: Platform>(
    hv: &mut Hypervisor<P>,
    d: DomId,
    backing: &[guest_loader::GpaRange],
    mplan: &guest_loader::MemoryPlan,
    kernel: &[u8],
    cfg: &GuestConfig<'_>,
    store: Option<DomId>,
) -> Result<InitialVcpuState, BuildError> {
    let special = mplan.special_pages;
    let mut top = 0;
    if let Some(dom) = hv.domain_mut(d) {
        let pages: u64 = backing.iter().map(|r| r.len() >> 12).sum();
        dom.p2m.reserve(usize::try_from(pages).unwrap_or(0));
    }
    // RAM and the ACPI tables by 2 MiB block: a run of host frames each,
    // zeroed and mapped on first touch (the loader's writes touch what it
    // loads). Ranges may overlap (the RSDP page inside RAM): the masks
    // merge them.
    let mut blocks: BTreeMap<u64, BlockMask> = BTreeMap::new();
    for r in backing.iter().filter(|r| **r != special) {
        let (mut g, end) = (r.start >> 12, r.end.div_ceil(4096));
        while g < end {
            let block = g & !(BLOCK_FRAMES - 1);
            let stop = end.min(block + BLOCK_FRAMES);
            mask_range(
                blocks.entry(block).or_insert([0; 8]),
                g - block,
                stop - block,
            );
            g = stop;
        }
        top = top.max(r.end);
    }
    for (&block, mask) in &blocks {
        hv.populate_block(d, Gfn(block), *mask)?;
    }
    // The special pages (console and xenstore rings) one frame each,
    // zeroed now.
    for g in special.start >> 12..special.end.div_ceil(4096) {
        if !hv.domain(d).ok_or(Errno::ESRCH)?.p2m.contains(Gfn(g)) {
            hv.populate_one(d, Gfn(g), P2mKind::Special)?;
        }
    }
    top = top.max(special.end);
    let loaded = {
        let mem = hv.guest_mem(d).ok_or(Errno::ESRCH)?;
        let mut lm = LoaderMem { mem, size: top };
        guest_loader::load(kernel, cfg, &mut lm).map_err(BuildError::Load)?
    };
    let dom = hv.domain_mut(d).ok_or(Errno::ESRCH)?;
    // What the loader wrote is zeroed already: map it now rather than at
    // the guest's first touch.
    dom.p2m.map_zeroed().map_err(|_| Errno::ENOMEM)?;
    dom.p2m.flush();
    dom.memory_map = loaded
        .plan
        .memmap_entries
        .iter()
        .map(|e| xen_abi::memory::E820Entry {
            addr: e.addr,
            size: e.size,
            r#type: e.r#type,
        })
        .collect();
    // The hypervisor serves the PV console. Without a service domain
    // there is no xenstore: its params stay 0, which guests read as "no PV
    // devices".
    hv.setup_console(d, Gfn(loaded.plan.console_pfn))?;
    if let Some(server) = store {
        hv.setup_store(d, Gfn(loaded.plan.xenstore_pfn), server)?;
    }
    Ok(loaded.vcpu)
}
