//! `physdev_op` and pirqs: an assigned PCI function's INTx interrupt as an
//! event channel, through Xen's own interfaces.
//!
//! A domain maps the GSI of a function assigned to it to a pirq
//! (`PHYSDEVOP_map_pirq`, `MAP_PIRQ_TYPE_GSI`), binds the pirq to a port
//! (`EVTCHNOP_bind_pirq`) and, for a level-triggered GSI, acknowledges each
//! event with `PHYSDEVOP_eoi` once its device no longer asserts the line.
//! The hypervisor owns the host IOAPIC ([`Platform::ioapic_route`],
//! [`Platform::ioapic_mask`]): mapping programs the pin masked, with the
//! hypervisor's fixed vector for that GSI; binding unmasks it. When the
//! interrupt comes, the image masks a level-triggered pin and acknowledges
//! the local APIC, and [`Hypervisor::gsi_fired`] raises the bound port in
//! the owning domain; `PHYSDEVOP_eoi` unmasks the pin again. Closing the
//! port masks the pin; unmapping or destroying the domain masks and frees
//! it.
//!
//! Which GSIs a domain may map: the interrupt line register (0x3C, read
//! at assignment) of each function assigned to it with an interrupt pin,
//! through the MADT's interrupt source overrides
//! ([`Platform::irq_route`]: ISA IRQ -> GSI, trigger, polarity). The
//! domain passes `index` = that GSI; where the MADT maps the ISA IRQ to
//! the same GSI number (QEMU's i440fx: IRQs 5, 9, 10 and 11, level, active
//! high) that is the interrupt line value it reads from configuration
//! space. Any other GSI: `-EPERM`. A GSI belongs to one domain at a time
//! (`-EBUSY` for a second).
//!
//! Xen 4.17's rules where they apply (`physdev_map_pirq`,
//! `allocate_and_map_gsi_pirq`, `allocate_pirq`, `get_free_pirq`): only the
//! caller itself (`DOMID_SELF` or its id; else `-EPERM`); types other than
//! GSI `-EINVAL` (MSI is not offered); `index` outside 0..[`NR_GSIS`]
//! `-EINVAL`; `pirq` < 0 takes the GSI's existing pirq or the first free
//! one from 16 up, a given `pirq` must be below [`NR_PIRQS`] (`-EINVAL`)
//! and must not be mapped to another GSI, nor the GSI to another pirq
//! (`-EEXIST`).

use alloc::collections::BTreeMap;

use xen_abi::physdev as ph;

use crate::evtchn::ChanState;
use crate::hv::Hypervisor;
use crate::hypercall::{Call, read_arg, write_arg};
use crate::platform::Platform;
use crate::types::{DomId, Errno, XenResult};

/// Pirqs a domain may use: 0..NR_PIRQS.
pub const NR_PIRQS: u32 = 256;
/// GSIs `PHYSDEVOP_map_pirq` accepts as `index`.
pub const NR_GSIS: u32 = 256;
/// First pirq handed out for a GSI when the caller asks for any
/// (Xen's `get_free_pirq`: above the legacy IRQs).
const FIRST_FREE_PIRQ: u32 = 16;

/// One mapped pirq.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pirq {
    /// The host GSI behind it.
    pub gsi: u32,
    /// Level-triggered (needs an EOI).
    pub level: bool,
    /// The port bound to it (`EVTCHNOP_bind_pirq`).
    pub port: Option<u32>,
    /// A level interrupt was delivered and the pin stays masked until the
    /// domain's `PHYSDEVOP_eoi`.
    pub awaiting_eoi: bool,
}

/// A domain's pirqs, by number.
pub type Pirqs = BTreeMap<u32, Pirq>;

impl<P: Platform> Hypervisor<P> {
    /// Which domain and pirq own host `gsi`.
    fn gsi_owner(&self, gsi: u32) -> Option<(DomId, u32)> {
        self.domains.iter().find_map(|(&id, dom)| {
            dom.pci
                .pirqs
                .iter()
                .find(|(_, p)| p.gsi == gsi)
                .map(|(&n, _)| (DomId(id), n))
        })
    }

    /// Host interrupt `gsi` arrived (the image masked a level-triggered
    /// pin and acknowledged the local APIC): raises the bound port of the
    /// domain that mapped it. A level pin stays masked until that domain's
    /// `PHYSDEVOP_eoi` (or, not bound yet, its `EVTCHNOP_bind_pirq`); a GSI
    /// nobody maps any more is masked.
    pub fn gsi_fired(&mut self, gsi: u32) {
        let Some((d, n)) = self.gsi_owner(gsi) else {
            self.platform.ioapic_mask(gsi, true);
            return;
        };
        let Some(p) = self
            .domains
            .get_mut(&d.0)
            .and_then(|dom| dom.pci.pirqs.get_mut(&n))
        else {
            return;
        };
        if p.level {
            p.awaiting_eoi = true;
        }
        if let Some(port) = p.port {
            self.evtchn_set_pending(d, port);
        }
    }

    /// The GSI, trigger and polarity of an interrupt line of a function
    /// assigned to `d` that reaches `gsi`, if any.
    fn assigned_gsi(&self, d: DomId, gsi: u32) -> Option<crate::platform::GsiRoute> {
        let dom = self.domains.get(&d.0)?;
        dom.pci
            .assigned()
            .filter(|f| f.irq.1 != 0)
            .filter_map(|f| self.platform.irq_route(f.irq.0))
            .find(|r| r.gsi == gsi)
    }

    /// `PHYSDEVOP_map_pirq` for a GSI: the pirq.
    pub fn map_pirq(&mut self, d: DomId, gsi: i32, want: i32) -> XenResult<u32> {
        let gsi = u32::try_from(gsi)
            .ok()
            .filter(|&g| g < NR_GSIS)
            .ok_or(Errno::EINVAL)?;
        if want >= NR_PIRQS as i32 {
            return Err(Errno::EINVAL);
        }
        let route = self.assigned_gsi(d, gsi).ok_or(Errno::EPERM)?;
        match self.gsi_owner(gsi) {
            Some((o, n)) if o == d => {
                return if want < 0 || want as u32 == n {
                    Ok(n)
                } else {
                    Err(Errno::EEXIST)
                };
            }
            Some(_) => return Err(Errno::EBUSY),
            None => {}
        }
        let dom = self.domains.get(&d.0).ok_or(Errno::ESRCH)?;
        let n = if want < 0 {
            (FIRST_FREE_PIRQ..NR_PIRQS)
                .find(|n| !dom.pci.pirqs.contains_key(n))
                .ok_or(Errno::ENOSPC)?
        } else if dom.pci.pirqs.contains_key(&(want as u32)) {
            return Err(Errno::EEXIST);
        } else {
            want as u32
        };
        if !self
            .platform
            .ioapic_route(route.gsi, route.level, route.active_low)
        {
            return Err(Errno::EINVAL);
        }
        let dom = self.domains.get_mut(&d.0).ok_or(Errno::ESRCH)?;
        dom.pci.pirqs.insert(
            n,
            Pirq {
                gsi,
                level: route.level,
                port: None,
                awaiting_eoi: false,
            },
        );
        Ok(n)
    }

    /// `PHYSDEVOP_unmap_pirq`: masks the pin and forgets the pirq; a port
    /// bound to it stays allocated but never fires.
    pub fn unmap_pirq(&mut self, d: DomId, n: i32) -> XenResult<()> {
        let dom = self.domains.get_mut(&d.0).ok_or(Errno::ESRCH)?;
        let n = u32::try_from(n).map_err(|_| Errno::EINVAL)?;
        let p = dom.pci.pirqs.remove(&n).ok_or(Errno::EINVAL)?;
        self.platform.ioapic_mask(p.gsi, true);
        Ok(())
    }

    /// `PHYSDEVOP_eoi`: unmasks a level pin that delivered (and is bound).
    pub fn pirq_eoi(&mut self, d: DomId, n: u32) -> XenResult<()> {
        let dom = self.domains.get_mut(&d.0).ok_or(Errno::ESRCH)?;
        let p = dom.pci.pirqs.get_mut(&n).ok_or(Errno::EINVAL)?;
        if p.awaiting_eoi {
            p.awaiting_eoi = false;
            if p.port.is_some() {
                let gsi = p.gsi;
                self.platform.ioapic_mask(gsi, false);
            }
        }
        Ok(())
    }

    /// `EVTCHNOP_bind_pirq`: a port for pirq `n` on vCPU 0; unmasks the pin.
    pub fn bind_pirq(&mut self, d: DomId, n: u32) -> XenResult<u32> {
        let dom = self.domains.get_mut(&d.0).ok_or(Errno::ESRCH)?;
        if n >= NR_PIRQS {
            return Err(Errno::EINVAL);
        }
        let p = *dom.pci.pirqs.get(&n).ok_or(Errno::EINVAL)?;
        if p.port.is_some() {
            return Err(Errno::EEXIST);
        }
        let port = dom.evtchn.alloc(ChanState::Pirq(n), 0)?;
        if let Some(p) = dom.pci.pirqs.get_mut(&n) {
            p.port = Some(port);
            p.awaiting_eoi = false;
        }
        self.platform.ioapic_mask(p.gsi, false);
        Ok(port)
    }

    /// A port bound to pirq `n` of `d` was closed: the pin is masked until
    /// bound again.
    pub(crate) fn pirq_unbound(&mut self, d: DomId, n: u32, port: u32) {
        let Some(p) = self
            .domains
            .get_mut(&d.0)
            .and_then(|dom| dom.pci.pirqs.get_mut(&n))
        else {
            return;
        };
        if p.port == Some(port) {
            p.port = None;
            p.awaiting_eoi = false;
            let gsi = p.gsi;
            self.platform.ioapic_mask(gsi, true);
        }
    }

    /// Masks every pin `d` mapped and forgets its pirqs (its destruction).
    pub(crate) fn release_pirqs(&mut self, d: DomId) {
        let Some(dom) = self.domains.get_mut(&d.0) else {
            return;
        };
        for (_, p) in core::mem::take(&mut dom.pci.pirqs) {
            self.platform.ioapic_mask(p.gsi, true);
        }
    }
}

/// Whether `domid` names the caller (`DOMID_SELF` or its own id).
fn is_self(c: &Call, domid: u16) -> bool {
    domid == DomId::SELF || domid == c.d.0
}

pub(crate) fn physdev_op<P: Platform>(hv: &mut Hypervisor<P>, c: &mut Call) -> XenResult<u64> {
    let [cmd, arg, ..] = c.args;
    match cmd as u32 {
        ph::PHYSDEVOP_map_pirq => {
            let (domid, ty, index, want) = if c.long {
                let a: ph::PhysdevMapPirq = read_arg(hv, c, arg)?;
                (a.domid, a.r#type, a.index, a.pirq)
            } else {
                let a: xen_abi::compat::CompatPhysdevMapPirq = read_arg(hv, c, arg)?;
                (a.domid, a.r#type, a.index, a.pirq)
            };
            if !is_self(c, domid) {
                return Err(Errno::EPERM);
            }
            if ty != ph::MAP_PIRQ_TYPE_GSI {
                return Err(Errno::EINVAL);
            }
            let n = hv.map_pirq(c.d, index, want)?;
            // The pirq field is at offset 12 in both layouts.
            if let Err(e) = write_arg(hv, c, arg + 12, &(n as i32)) {
                let _ = hv.unmap_pirq(c.d, n as i32);
                return Err(e);
            }
            Ok(0)
        }
        ph::PHYSDEVOP_unmap_pirq => {
            let a: ph::PhysdevUnmapPirq = read_arg(hv, c, arg)?;
            if !is_self(c, a.domid) {
                return Err(Errno::EPERM);
            }
            hv.unmap_pirq(c.d, a.pirq)?;
            Ok(0)
        }
        ph::PHYSDEVOP_eoi => {
            let a: ph::PhysdevEoi = read_arg(hv, c, arg)?;
            hv.pirq_eoi(c.d, a.irq)?;
            Ok(0)
        }
        ph::PHYSDEVOP_irq_status_query => {
            let mut a: ph::PhysdevIrqStatusQuery = read_arg(hv, c, arg)?;
            let dom = hv.domain(c.d).ok_or(Errno::ESRCH)?;
            let p = dom.pci.pirqs.get(&a.irq).ok_or(Errno::EINVAL)?;
            a.flags = if p.level { ph::XENIRQSTAT_needs_eoi } else { 0 };
            write_arg(hv, c, arg, &a)?;
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}
