//! PCI device assignment, first layer: configuration space per domain.
//!
//! A host PCI function (`bus:device.function`, segment 0) is assigned to
//! at most one domain ([`Hypervisor::assign_pci`], from the launch plan's
//! `pci=` option). Configuration mechanism #1 is emulated per domain: a
//! dword write to port 0xCF8 sets the domain's address latch
//! ([`DomainPci::cf8`], one per domain as Xen's `pci_cf8`), and accesses of
//! 1, 2 or 4 bytes to 0xCFC-0xCFF read or write the register it selects.
//! A domain sees only the functions assigned to it: every other address
//! reads all-ones (vendor id 0xFFFF: no device) and writes to it are
//! dropped. Accesses to an assigned function reach the host's
//! configuration space through [`Platform::pci_config_read`] and
//! [`Platform::pci_config_write`], filtered:
//!
//! - **BARs are read-only, sizing only.** The hypervisor sizes each BAR
//!   once, when the function is assigned (with the host's decoding turned
//!   off for the probe). A guest's dword write with every address bit set
//!   makes the BAR read back its size mask (with its type bits), as
//!   hardware does; any other write ends the sizing and is dropped, so the
//!   BAR reads its real (host) address again. Writes never reach the
//!   host's BARs: a domain cannot move a BAR over memory it does not own.
//!   (Xen's vPCI lets a PVH hardware domain move BARs and remaps them; this
//!   hypervisor keeps firmware's placement, which the direct-mapped
//!   service domain can use as it is.)
//! - The expansion ROM BAR reads 0 (no ROM) and ignores writes.
//! - The command register takes only I/O space, memory space, bus master,
//!   parity and SERR reporting and INTx disable from the guest; the status
//!   register's write-1-to-clear bits pass through; cache line size and
//!   latency timer pass through; every other header register (identity,
//!   class, header type, BIST, capability pointer, interrupt line and pin)
//!   is read-only.
//! - Above the header (0x40-0xFF) reads pass through; writes pass through
//!   except into the MSI and MSI-X capabilities, which the hypervisor owns
//!   (a guest programming MSI addresses could send interrupts to any host
//!   vector).
//!
//! Only functions with a type-0 header (endpoints) can be assigned: a
//! bridge's bus numbers and windows would reach beyond the function.
//! Accesses that cross the dword at 0xCFC, a latch with the enable bit
//! clear or reserved bits 30:24 set (AMD's extended register number) are
//! not forwarded. Ports 0xCF8-0xCFB other than as a dword are not the
//! latch (0xCF9 is the host's reset control): they read all-ones and drop
//! writes, like every port nothing emulates.
//!
//! At assignment the function's memory BARs (firmware's placement) are
//! mapped into the assignee's p2m at guest-physical = host-physical,
//! uncached ([`P2mKind::Mmio`], refused if a page is taken), and the
//! assignee's `IN`/`OUT` to ports inside its I/O BARs reach the host
//! ([`Platform::io_port_read`]); every other domain gets the unbacked
//! behaviour for both (nothing mapped, all-ones).
//!
//! Not here yet: ECAM (MMCONFIG), MSI, and resetting a function when its
//! domain goes away.

use alloc::vec::Vec;
use core::fmt;

use crate::arch::P2mPerms;
use crate::domain::Domain;
use crate::hv::Hypervisor;
use crate::p2m::{P2mEntry, P2mKind};
use crate::platform::Platform;
use crate::types::{DomId, Errno, Gfn, Hfn, PAGE_SIZE, XenResult};

/// The configuration address port (mechanism #1).
pub const CONFIG_ADDRESS: u16 = 0xCF8;
/// The first configuration data port; 0xCFC-0xCFF select bytes of the dword.
pub const CONFIG_DATA: u16 = 0xCFC;
/// Most functions one domain may be assigned.
pub const MAX_FUNCTIONS: usize = 32;

/// Command register bits a guest may change: I/O space, memory space, bus
/// master, parity error response, SERR# enable, INTx disable.
pub const COMMAND_GUEST_BITS: u16 =
    (1 << 0) | (1 << 1) | (1 << 2) | (1 << 6) | (1 << 8) | (1 << 10);

const REG_VENDOR: u8 = 0x00;
const REG_COMMAND: u8 = 0x04;
const REG_STATUS: u8 = 0x06;
const REG_HEADER_TYPE: u8 = 0x0E;
const REG_BAR0: u8 = 0x10;
const REG_ROM: u8 = 0x30;
const REG_CAP_PTR: u8 = 0x34;
const REG_INTERRUPT_LINE: u8 = 0x3C;
const REG_INTERRUPT_PIN: u8 = 0x3D;
/// Largest memory BAR mapped (one p2m entry per page): a larger one
/// refuses the assignment (`-E2BIG`).
pub const MAX_BAR_MAPPED: u64 = 1 << 30;
/// Guest-physical pages a BAR may not cover: the local APIC's page
/// (0xfee00000, emulated for every domain) and the special pages
/// (0xfeffc000-0xfeffffff, the console and xenstore rings).
const RESERVED_GPA: [(u64, u64); 2] = [(0xFEE0_0000, 0xFEE0_1000), (0xFEFF_C000, 0xFF00_0000)];
const STATUS_CAP_LIST: u16 = 1 << 4;
const CAP_MSI: u8 = 0x05;
const CAP_MSIX: u8 = 0x11;

/// A PCI function on segment 0: bus, device (0-31), function (0-7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf {
    /// Bus.
    pub bus: u8,
    /// Device, 0-31.
    pub dev: u8,
    /// Function, 0-7.
    pub func: u8,
}

impl Bdf {
    /// The function, if `dev` and `func` are in range.
    pub fn new(bus: u8, dev: u8, func: u8) -> Option<Bdf> {
        (dev < 32 && func < 8).then_some(Bdf { bus, dev, func })
    }

    /// Device and function as one byte (Xen's `devfn`).
    pub fn devfn(self) -> u8 {
        (self.dev << 3) | self.func
    }

    /// Parses `BB:DD.F` or `SSSS:BB:DD.F` (hexadecimal bus, device and
    /// segment, as `lspci` and Xen's `pci=` write them; the segment must be
    /// 0, the only one mechanism #1 reaches).
    pub fn parse(s: &str) -> Option<Bdf> {
        let hex = |t: &str, max: usize| {
            (!t.is_empty() && t.len() <= max && t.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| u32::from_str_radix(t, 16).ok())
                .flatten()
        };
        let (rest, func) = s.rsplit_once('.')?;
        let mut parts = rest.rsplit(':');
        let dev = hex(parts.next()?, 2)?;
        let bus = hex(parts.next()?, 2)?;
        if let Some(seg) = parts.next()
            && hex(seg, 4)? != 0
        {
            return None;
        }
        if parts.next().is_some() {
            return None;
        }
        let func = if func.len() == 1 {
            hex(func, 1)?
        } else {
            return None;
        };
        Bdf::new(bus as u8, u8::try_from(dev).ok()?, u8::try_from(func).ok()?)
    }

    /// The function a configuration address (0xCF8 format) selects.
    pub fn from_cf8(cf8: u32) -> Bdf {
        Bdf {
            bus: (cf8 >> 16) as u8,
            dev: ((cf8 >> 11) & 0x1F) as u8,
            func: ((cf8 >> 8) & 7) as u8,
        }
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.dev, self.func)
    }
}

/// Parses a comma-separated list of functions (`pci=00:03.0,00:04.0`);
/// `None` if any is malformed or a function appears twice.
pub fn parse_list(s: &str) -> Option<Vec<Bdf>> {
    let mut out: Vec<Bdf> = Vec::new();
    for t in s.split(',') {
        let b = Bdf::parse(t)?;
        if out.contains(&b) || out.len() >= MAX_FUNCTIONS {
            return None;
        }
        out.push(b);
    }
    Some(out)
}

/// What a BAR register is, found by sizing it at assignment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum BarKind {
    /// Not implemented (reads 0).
    #[default]
    None,
    /// An I/O BAR (type bits 1:0).
    Io,
    /// A 32-bit memory BAR, or the low half of a 64-bit one (type bits 3:0).
    Mem,
    /// The high half of a 64-bit memory BAR (all 32 bits address).
    MemHigh,
}

/// One BAR register as the guest sees it.
#[derive(Clone, Copy, Debug, Default)]
struct Bar {
    kind: BarKind,
    /// The read-back of an all-ones write: the size mask, type bits included.
    sized: u32,
    /// Whether the guest's last write was a sizing write.
    sizing: bool,
}

impl Bar {
    /// The bits that hold the address.
    fn addr_bits(&self) -> u32 {
        match self.kind {
            BarKind::None => 0,
            BarKind::Io => !0x3,
            BarKind::Mem => !0xF,
            BarKind::MemHigh => !0,
        }
    }
}

/// A host function assigned to a domain, with its virtualised registers.
#[derive(Clone, Debug)]
pub struct AssignedFunction {
    /// The host function.
    pub bdf: Bdf,
    bars: [Bar; 6],
    /// Byte ranges `[start, end)` of the MSI and MSI-X capabilities.
    owned: Vec<(u16, u16)>,
    /// Its memory BARs as firmware placed them: (host-physical address,
    /// size in bytes), address not 0.
    pub mem: Vec<(u64, u64)>,
    /// Its I/O BARs: (first port, number of ports), port not 0.
    pub io: Vec<(u16, u32)>,
    /// The interrupt line register (firmware's IRQ number) and pin (1-4
    /// for INTA-INTD, 0 for none), read at assignment.
    pub irq: (u8, u8),
}

/// A domain's view of PCI configuration space.
#[derive(Clone, Debug, Default)]
pub struct DomainPci {
    /// The configuration address latch (port 0xCF8), one per domain.
    pub cf8: u32,
    functions: Vec<AssignedFunction>,
    /// Its pirqs (`PHYSDEVOP_map_pirq`), see [`crate::physdev`].
    pub pirqs: crate::physdev::Pirqs,
}

impl DomainPci {
    /// The functions assigned to the domain.
    pub fn functions(&self) -> impl Iterator<Item = Bdf> + '_ {
        self.functions.iter().map(|f| f.bdf)
    }

    /// Whether `bdf` is assigned to the domain.
    pub fn has(&self, bdf: Bdf) -> bool {
        self.functions.iter().any(|f| f.bdf == bdf)
    }

    /// The assigned functions with what was found at assignment.
    pub fn assigned(&self) -> impl Iterator<Item = &AssignedFunction> + '_ {
        self.functions.iter()
    }

    /// Whether ports `port..port + size` lie inside one I/O BAR of an
    /// assigned function.
    pub fn io_port_assigned(&self, port: u16, size: u8) -> bool {
        let (lo, hi) = (u32::from(port), u32::from(port) + u32::from(size));
        self.functions.iter().any(|f| {
            f.io.iter()
                .any(|&(b, n)| lo >= u32::from(b) && hi <= u32::from(b) + n)
        })
    }
}

fn ones(size: u8) -> u32 {
    if size >= 4 {
        u32::MAX
    } else {
        (1u32 << (8 * u32::from(size))) - 1
    }
}

/// Probes host function `bdf` for assignment: present, type-0 header;
/// sizes its BARs (decoding off meanwhile) and finds its MSI/MSI-X
/// capabilities.
fn probe<P: Platform>(p: &P, bdf: Bdf) -> XenResult<AssignedFunction> {
    let rd = |reg: u8, size: u8| p.pci_config_read(bdf, reg, size) & ones(size);
    if rd(REG_VENDOR, 2) == 0xFFFF {
        return Err(Errno(xen_abi::errno::ENODEV));
    }
    if rd(REG_HEADER_TYPE, 1) & 0x7F != 0 {
        return Err(Errno::EINVAL);
    }
    let command = rd(REG_COMMAND, 2);
    p.pci_config_write(bdf, REG_COMMAND, 2, command & !0x3);
    let mut bars = [Bar::default(); 6];
    let (mut mem, mut io) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < 6 {
        let reg = REG_BAR0 + 4 * i as u8;
        let size_reg = |reg: u8| {
            let orig = rd(reg, 4);
            p.pci_config_write(bdf, reg, 4, u32::MAX);
            let sized = rd(reg, 4);
            p.pci_config_write(bdf, reg, 4, orig);
            (orig, sized)
        };
        let (orig, sized) = size_reg(reg);
        if orig & 1 != 0 {
            if sized & !0x3 != 0 {
                // 16-bit port decoders leave the upper half 0.
                let mask = (sized & !0x3) | 0xFFFF_0000;
                io.push((orig as u16 & !0x3, (!mask).wrapping_add(1)));
                bars[i] = Bar {
                    kind: BarKind::Io,
                    sized: (sized & !0x3) | (orig & 0x3),
                    sizing: false,
                };
            }
        } else if (orig >> 1) & 3 == 2 && i < 5 {
            let (orig_high, high) = size_reg(reg + 4);
            if sized & !0xF != 0 || high != 0 {
                let addr = (u64::from(orig_high) << 32) | u64::from(orig & !0xF);
                let mask = (u64::from(high) << 32) | u64::from(sized & !0xF);
                mem.push((addr, (!mask).wrapping_add(1)));
                bars[i] = Bar {
                    kind: BarKind::Mem,
                    sized: (sized & !0xF) | (orig & 0xF),
                    sizing: false,
                };
                bars[i + 1] = Bar {
                    kind: BarKind::MemHigh,
                    sized: high,
                    sizing: false,
                };
            }
            i += 1;
        } else if sized & !0xF != 0 {
            mem.push((
                u64::from(orig & !0xF),
                u64::from((!(sized & !0xF)).wrapping_add(1)),
            ));
            bars[i] = Bar {
                kind: BarKind::Mem,
                sized: (sized & !0xF) | (orig & 0xF),
                sizing: false,
            };
        }
        i += 1;
    }
    p.pci_config_write(bdf, REG_COMMAND, 2, command);
    // The capability list, bounded (48 capabilities fit in 0x40-0xFF).
    let mut owned = Vec::new();
    if rd(REG_STATUS, 2) as u16 & STATUS_CAP_LIST != 0 {
        let mut at = rd(REG_CAP_PTR, 1) as u8 & 0xFC;
        for _ in 0..48 {
            if at < 0x40 {
                break;
            }
            let id = rd(at, 1) as u8;
            let len = match id {
                CAP_MSI => {
                    let ctrl = rd(at + 2, 2);
                    let addr64 = ctrl & (1 << 7) != 0;
                    let masking = ctrl & (1 << 8) != 0;
                    10 + if addr64 { 4 } else { 0 } + if masking { 10 } else { 0 }
                }
                CAP_MSIX => 12,
                _ => 0,
            };
            if len != 0 {
                let start = u16::from(at);
                owned.push((start, (start + len).min(0x100)));
            }
            at = rd(at + 1, 1) as u8 & 0xFC;
        }
    }
    // Firmware's placement only: a BAR at 0 was never placed.
    mem.retain(|&(a, n)| a != 0 && n != 0);
    io.retain(|&(a, n)| a != 0 && n != 0);
    let irq = (
        rd(REG_INTERRUPT_LINE, 1) as u8,
        rd(REG_INTERRUPT_PIN, 1) as u8,
    );
    Ok(AssignedFunction {
        bdf,
        bars,
        owned,
        mem,
        io,
        irq,
    })
}

impl<P: Platform> Hypervisor<P> {
    /// Assigns host function `bdf` to domain `d`: `-EBUSY` if a domain
    /// (this one included) has it, `-ENODEV` if the host has no such
    /// function, `-EINVAL` for a bridge, `-E2BIG` beyond
    /// [`MAX_FUNCTIONS`] or for a memory BAR over [`MAX_BAR_MAPPED`],
    /// `-EEXIST` if a memory BAR would cover a page the domain maps
    /// already (see `map_bars`).
    pub fn assign_pci(&mut self, d: DomId, bdf: Bdf) -> XenResult<()> {
        if self.domains.values().any(|x| x.pci.has(bdf)) {
            return Err(Errno::EBUSY);
        }
        let n = self.domain(d).ok_or(Errno::ESRCH)?.pci.functions.len();
        if n >= MAX_FUNCTIONS {
            return Err(Errno::E2BIG);
        }
        let f = probe(&*self.platform, bdf)?;
        let dom = self.domain_mut(d).ok_or(Errno::ESRCH)?;
        map_bars(dom, &f)?;
        dom.pci.functions.push(f);
        Ok(())
    }

    /// Stops the functions assigned to `d` before its memory goes (domain
    /// destruction): bus mastering, memory and I/O decoding off in each
    /// one's command register. Without an IOMMU a device left running
    /// could write by DMA into frames already handed to other domains.
    /// The next owner's driver turns them on again.
    pub(crate) fn quiesce_pci(&self, d: DomId) {
        let Some(dom) = self.domain(d) else {
            return;
        };
        for f in dom.pci.assigned() {
            let command = self.platform.pci_config_read(f.bdf, REG_COMMAND, 2) & 0xFFFF;
            self.platform
                .pci_config_write(f.bdf, REG_COMMAND, 2, command & !COMMAND_STOP);
        }
    }
}

/// Command register bits [`Hypervisor::quiesce_pci`] clears: I/O space,
/// memory space, bus master.
pub const COMMAND_STOP: u32 = 0x7;

/// The pages of memory BAR `(addr, size)`: whole pages only (a BAR of
/// 4 KiB or more is page-aligned, as BARs are aligned to their size).
fn bar_pages(addr: u64, size: u64) -> Option<core::ops::Range<u64>> {
    let end = addr.checked_add(size)?;
    (size >= PAGE_SIZE as u64 && addr.is_multiple_of(PAGE_SIZE as u64) && end <= 1 << 52)
        .then_some(addr >> 12..end >> 12)
}

/// Maps `f`'s memory BARs into `dom`'s p2m at guest-physical =
/// host-physical, uncached ([`P2mKind::Mmio`]): all or none. `-EEXIST` if
/// a page is mapped already (RAM, a direct-mapped region, anything) or is
/// the local APIC's or a special page. A BAR smaller than a page is not
/// mapped (its page would hold other registers): the domain sees it as
/// unbacked.
fn map_bars(dom: &mut Domain, f: &AssignedFunction) -> XenResult<()> {
    if f.mem.iter().any(|&(_, n)| n > MAX_BAR_MAPPED) {
        return Err(Errno::E2BIG);
    }
    let ranges: Vec<_> = f.mem.iter().filter_map(|&(a, n)| bar_pages(a, n)).collect();
    for r in &ranges {
        let clash = |g: u64| {
            dom.p2m.contains(Gfn(g))
                || g >= 1 << 40
                || RESERVED_GPA
                    .iter()
                    .any(|&(lo, hi)| (lo >> 12..hi >> 12).contains(&g))
        };
        if r.clone().any(clash) {
            return Err(Errno::EEXIST);
        }
    }
    let mut done = Vec::new();
    for g in ranges.into_iter().flatten() {
        let e = P2mEntry {
            hfn: Hfn(g),
            kind: P2mKind::Mmio,
            perms: P2mPerms::MMIO,
        };
        if dom.p2m.set(Gfn(g), e).is_err() {
            for g in done {
                dom.p2m.remove(Gfn(g));
            }
            dom.p2m.flush();
            return Err(Errno::ENOMEM);
        }
        done.push(g);
    }
    dom.p2m.flush();
    Ok(())
}

/// A read by `d` of host port `port` inside an I/O BAR of a function
/// assigned to it: the host's value; `None` for any other port.
pub(crate) fn bar_port_read<P: Platform>(
    hv: &Hypervisor<P>,
    d: DomId,
    port: u16,
    size: u8,
) -> Option<u32> {
    let dom = hv.domains.get(&d.0)?;
    (matches!(size, 1 | 2 | 4) && dom.pci.io_port_assigned(port, size))
        .then(|| hv.platform.io_port_read(port, size))
}

/// A write by `d` to host port `port`: forwarded, and true, if the port
/// lies inside an I/O BAR of a function assigned to it.
pub(crate) fn bar_port_write<P: Platform>(
    hv: &Hypervisor<P>,
    d: DomId,
    port: u16,
    size: u8,
    val: u32,
) -> bool {
    let ok = matches!(size, 1 | 2 | 4)
        && hv
            .domains
            .get(&d.0)
            .is_some_and(|dom| dom.pci.io_port_assigned(port, size));
    if ok {
        hv.platform.io_port_write(port, size, val);
    }
    ok
}

/// Whether `port` belongs to configuration mechanism #1.
pub(crate) fn is_config_port(port: u16) -> bool {
    (CONFIG_ADDRESS..CONFIG_DATA + 4).contains(&port)
}

/// The function and register a data-port access selects, if the access is
/// forwarded at all: latch enabled, no reserved bits, inside the dword.
fn target(cf8: u32, port: u16, size: u8) -> Option<(Bdf, u8)> {
    let byte = (port - CONFIG_DATA) as u8;
    if cf8 & (1 << 31) == 0 || cf8 & 0x7F00_0000 != 0 || byte + size > 4 {
        return None;
    }
    Some((Bdf::from_cf8(cf8), (cf8 as u8 & 0xFC) | byte))
}

/// A read of `size` bytes (1, 2 or 4) from configuration port `port`
/// (0xCF8-0xCFF) by domain `d`: the value, all-ones where nothing answers.
pub(crate) fn port_read<P: Platform>(hv: &mut Hypervisor<P>, d: DomId, port: u16, size: u8) -> u32 {
    let p = &*hv.platform;
    match hv.domains.get_mut(&d.0) {
        Some(dom) => config_read(dom, p, port, size),
        None => ones(size),
    }
}

/// [`port_read`] on the domain itself: its own latch and functions, and
/// the host's configuration space under the platform's own lock (a leaf),
/// so the domain-local path runs it too.
pub(crate) fn config_read<P: Platform>(dom: &mut Domain, p: &P, port: u16, size: u8) -> u32 {
    if !matches!(size, 1 | 2 | 4) {
        return ones(size);
    }
    if port == CONFIG_ADDRESS && size == 4 {
        return dom.pci.cf8;
    }
    if port < CONFIG_DATA {
        return ones(size);
    }
    let Some((bdf, reg)) = target(dom.pci.cf8, port, size) else {
        return ones(size);
    };
    let Some(f) = dom.pci.functions.iter_mut().find(|f| f.bdf == bdf) else {
        return ones(size);
    };
    if reg.is_multiple_of(size) {
        f.read(p, reg, size)
    } else {
        // Unaligned inside the dword: byte by byte (the platform's
        // contract is naturally aligned accesses).
        (0..size).fold(0, |v, i| v | (f.read(p, reg + i, 1) << (8 * i)))
    }
}

/// A write of `size` bytes of `val` to configuration port `port` by
/// domain `d`; dropped where nothing answers.
pub(crate) fn port_write<P: Platform>(
    hv: &mut Hypervisor<P>,
    d: DomId,
    port: u16,
    size: u8,
    val: u32,
) {
    let p = &*hv.platform;
    if let Some(dom) = hv.domains.get_mut(&d.0) {
        config_write(dom, p, port, size, val);
    }
}

/// [`port_write`] on the domain itself (see [`config_read`]).
pub(crate) fn config_write<P: Platform>(dom: &mut Domain, p: &P, port: u16, size: u8, val: u32) {
    if !matches!(size, 1 | 2 | 4) {
        return;
    }
    if port == CONFIG_ADDRESS && size == 4 {
        dom.pci.cf8 = val & !0x3;
        return;
    }
    if port < CONFIG_DATA {
        return;
    }
    let Some((bdf, reg)) = target(dom.pci.cf8, port, size) else {
        return;
    };
    let Some(f) = dom.pci.functions.iter_mut().find(|f| f.bdf == bdf) else {
        return;
    };
    let val = val & ones(size);
    if reg.is_multiple_of(size) {
        f.write(p, reg, size, val);
    } else {
        for i in 0..size {
            f.write(p, reg + i, 1, (val >> (8 * i)) & 0xFF);
        }
    }
}

impl AssignedFunction {
    /// What the guest reads at `reg` (`size` bytes, naturally aligned).
    fn read<P: Platform>(&self, p: &P, reg: u8, size: u8) -> u32 {
        let dword = reg & !3;
        let shift = 8 * u32::from(reg & 3);
        let view = match dword {
            0x10..=0x24 => self.bar_view(p, usize::from((dword - REG_BAR0) / 4)),
            REG_ROM => 0,
            _ => return p.pci_config_read(self.bdf, reg, size) & ones(size),
        };
        (view >> shift) & ones(size)
    }

    fn bar_view<P: Platform>(&self, p: &P, i: usize) -> u32 {
        let bar = self.bars[i];
        match bar.kind {
            BarKind::None => 0,
            _ if bar.sizing => bar.sized,
            _ => p.pci_config_read(self.bdf, REG_BAR0 + 4 * i as u8, 4),
        }
    }

    /// A guest write of `size` bytes (naturally aligned) at `reg`.
    fn write<P: Platform>(&mut self, p: &P, reg: u8, size: u8, val: u32) {
        let dword = reg & !3;
        let shift = 8 * u32::from(reg & 3);
        // The written bytes, in the dword's coordinates.
        let mask = ones(size) << shift;
        let bits = (val << shift) & mask;
        match dword {
            REG_COMMAND => {
                if mask & 0xFFFF != 0 {
                    let cur = p.pci_config_read(self.bdf, REG_COMMAND, 2) & 0xFFFF;
                    let merged = (cur & !mask) | (bits & 0xFFFF);
                    let g = u32::from(COMMAND_GUEST_BITS);
                    let new = (cur & !g) | (merged & g);
                    p.pci_config_write(self.bdf, REG_COMMAND, 2, new);
                }
                if mask >> 16 != 0 {
                    // Write-1-to-clear: unwritten bytes are zeros.
                    p.pci_config_write(self.bdf, REG_STATUS, 2, bits >> 16);
                }
            }
            // Cache line size and latency timer, not header type or BIST.
            0x0C => {
                for b in 0..2u8 {
                    if mask & (0xFF << (8 * b)) != 0 {
                        p.pci_config_write(self.bdf, 0x0C + b, 1, (bits >> (8 * b)) & 0xFF);
                    }
                }
            }
            0x10..=0x24 => {
                let bar = &mut self.bars[usize::from((dword - REG_BAR0) / 4)];
                let addr = bar.addr_bits();
                bar.sizing = size == 4 && addr != 0 && val & addr == addr;
            }
            0x00..=0x3F => {}
            _ => self.write_device(p, reg, size, val),
        }
    }

    /// A write above the header: through, except the bytes of the MSI and
    /// MSI-X capabilities.
    fn write_device<P: Platform>(&self, p: &P, reg: u8, size: u8, val: u32) {
        let owned = |r: u16| self.owned.iter().any(|&(s, e)| (s..e).contains(&r));
        let first = u16::from(reg);
        let passing = (0..u16::from(size)).filter(|&i| !owned(first + i)).count();
        if passing == usize::from(size) {
            p.pci_config_write(self.bdf, reg, size, val);
        } else {
            for i in 0..size {
                if !owned(first + u16::from(i)) {
                    p.pci_config_write(self.bdf, reg + i, 1, (val >> (8 * i)) & 0xFF);
                }
            }
        }
    }
}
