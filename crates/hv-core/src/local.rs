//! Domain-local exits: what a CPU handles under its domain's own lock
//! ([`DomainCell`]) without the global one.
//!
//! The hypervisor is split in two by owner (docs/architecture.md, "Locks"):
//! each domain's state sits in its own cell, and the global path
//! ([`Hypervisor::hold`]) checks every domain out to run the operations that
//! reach beyond one domain (other domains, the timer heap, the scheduler's
//! wake-ups, domain creation and destruction). A CPU running a vCPU of `d`
//! holds a [`LocalDomain`] for `d` and first offers each entry and exit to
//! it; only what it declines takes the global lock.
//!
//! What is local today: the entry (upcall and APIC interrupt injection),
//! external-interrupt, timer and interrupt-window exits, PCI
//! configuration-space port I/O (each domain has its own view),
//! `xen_version`,
//! and `EVTCHNOP_send` on an IPI port whose target vCPU needs no wake-up
//! through the scheduler. Everything else is declined
//! before anything is changed, so the global path sees the exit as if the
//! local one had never looked at it.
//!
//! [`Hypervisor::hold`]: crate::hv::Hypervisor::hold

use alloc::sync::Arc;

use xen_abi::event_channel as ev;
use xen_abi::xen as x;

use crate::arch::{Event, VcpuBackend, VmExit};
use crate::domain::{Domain, DomainState, VcpuState};
use crate::evtchn::{ChanState, Target};
use crate::guestmem::GuestMem;
use crate::hv::{DomainCell, ExitAction};
use crate::hypercall::{Call, decode, set_result, xen_version};
use crate::pagewalk::GuestVirt;
use crate::platform::{FrameAccess, Platform};
use crate::time::TimeScale;
use crate::types::{DomId, Errno, XenResult};

/// A CPU's handle on one domain's cell, for its domain-local exits.
pub struct LocalDomain<P> {
    d: DomId,
    cell: Arc<DomainCell>,
    platform: Arc<P>,
    scale: TimeScale,
}

impl<P: Platform> LocalDomain<P> {
    pub(crate) fn new(d: DomId, cell: Arc<DomainCell>, platform: Arc<P>, scale: TimeScale) -> Self {
        LocalDomain {
            d,
            cell,
            platform,
            scale,
        }
    }

    /// System time, as [`Hypervisor::now`](crate::hv::Hypervisor::now).
    pub fn now(&self) -> u64 {
        self.scale.apply(self.platform.tsc())
    }

    /// The domain.
    pub fn domid(&self) -> DomId {
        self.d
    }

    /// [`Hypervisor::prepare_entry`](crate::hv::Hypervisor::prepare_entry)
    /// under the domain's lock alone; false if the domain is checked out
    /// or gone (take the global path).
    pub fn prepare_entry(&self, v: u32, cpu: &mut dyn VcpuBackend) -> bool {
        self.cell
            .with(|dom| {
                prepare_entry(dom, &*self.platform, v, cpu);
                Some(())
            })
            .is_some()
    }

    /// Handles `exit` of vCPU `v` if it touches only this domain; `None`,
    /// with nothing changed, if it needs the global path.
    pub fn handle_exit(
        &self,
        v: u32,
        cpu: &mut dyn VcpuBackend,
        exit: VmExit,
    ) -> Option<ExitAction> {
        let frames: &dyn FrameAccess = &*self.platform;
        self.cell.with(|dom| {
            // What the global path checks first: a live, unpaused domain
            // and a vCPU already accounted as running.
            let vc = dom.vcpus.get(v as usize)?;
            if !dom.is_alive()
                || dom.state == DomainState::Paused
                || vc.runstate.state != xen_abi::vcpu::RUNSTATE_running
            {
                return None;
            }
            match exit {
                VmExit::Hypercall => {}
                // Nothing to do but enter again (the next entry injects
                // what is pending); the window is asked for anew there.
                VmExit::ExternalInterrupt | VmExit::TimerExpired => {
                    return Some(ExitAction::Resume);
                }
                VmExit::InterruptWindow => {
                    cpu.set_interrupt_window(false);
                    return Some(ExitAction::Resume);
                }
                // PCI configuration space (mechanism #1) is per domain.
                VmExit::Io(io) if crate::pci::is_config_port(io.port) && !io.string => {
                    if !crate::exits::skip_in(dom, frames, cpu, &exit) {
                        return None;
                    }
                    let size = io.size.clamp(1, 4);
                    if io.write {
                        let val = cpu.gprs().rax as u32;
                        crate::pci::config_write(dom, &*self.platform, io.port, size, val);
                    } else {
                        let v = crate::pci::config_read(dom, &*self.platform, io.port, size);
                        let mask = (1u64 << (8 * u32::from(size))) - 1;
                        let g = cpu.gprs_mut();
                        g.rax = (g.rax & !mask) | (u64::from(v) & mask);
                    }
                    return Some(ExitAction::Resume);
                }
                _ => return None,
            }
            if cpu.cpl() != 0 {
                return None;
            }
            let (nr, c) = decode(self.d, v, cpu);
            match u32::try_from(nr).ok()? {
                x::__HYPERVISOR_xen_version => {
                    if !crate::exits::skip_in(dom, frames, cpu, &exit) {
                        return None;
                    }
                    let ret = xen_version(dom, frames, &c);
                    set_result(cpu, c.long, ret);
                    Some(ExitAction::Resume)
                }
                x::__HYPERVISOR_event_channel_op if c.args[0] == u64::from(ev::EVTCHNOP_send) => {
                    let ret = match local_send(dom, frames, &c)? {
                        Ok(port) => {
                            if !crate::exits::skip_in(dom, frames, cpu, &exit) {
                                return None;
                            }
                            raise_ipi(dom, &*self.platform, port, v);
                            Ok(0)
                        }
                        Err(e) => {
                            if !crate::exits::skip_in(dom, frames, cpu, &exit) {
                                return None;
                            }
                            Err(e)
                        }
                    };
                    set_result(cpu, c.long, ret);
                    Some(ExitAction::Resume)
                }
                _ => None,
            }
        })
    }
}

/// Decides whether `EVTCHNOP_send` of call `c` is domain-local, without
/// changing anything: `Some(Ok(port))` for an IPI port whose event needs no
/// wake-up through the scheduler, `Some(Err(_))` for the argument errors
/// the global path would answer the same way, `None` otherwise.
fn local_send(dom: &Domain, frames: &dyn FrameAccess, c: &Call) -> Option<XenResult<u32>> {
    let virt = GuestVirt {
        mem: GuestMem::new(&dom.p2m, frames),
        mode: c.mode,
    };
    let a: ev::EvtchnSend = match virt.read_obj(c.args[1]) {
        Ok(a) => a,
        Err(e) => return Some(Err(e)),
    };
    let Some(ch) = dom.evtchn.get(a.port) else {
        return Some(Err(Errno::EINVAL));
    };
    if ch.state != ChanState::Ipi {
        return None;
    }
    // The store port of a domain waiting for its introduction is never an
    // IPI port, but the global path owns that rule: leave it there.
    if dom.await_store {
        return None;
    }
    // A blocked or polling vCPU is woken through the scheduler.
    let sleeping = |s: VcpuState| matches!(s, VcpuState::Blocked | VcpuState::Polling);
    if dom.vcpus.iter().any(|vc| vc.state == VcpuState::Polling)
        || dom
            .vcpus
            .get(ch.vcpu as usize)
            .is_none_or(|vc| sleeping(vc.state))
    {
        return None;
    }
    Some(Ok(a.port))
}

/// Raises IPI `port` of `dom` (checked by [`local_send`]) from vCPU
/// `from`: the event, and a kick of the target's CPU when it is another
/// vCPU, as the global path's wake does for a vCPU that is not asleep.
fn raise_ipi<P: Platform>(dom: &mut Domain, platform: &P, port: u32, from: u32) {
    let t = Target {
        frames: platform,
        shared_info: dom.shared_info,
        vcpu_info: &dom.vcpu_info,
        compat: dom.has_32bit_shinfo,
    };
    let notify = dom.evtchn.set_pending(&t, port);
    if let Some(n) = notify
        && n != from
        && let Some(vc) = dom.vcpus.get(n as usize)
    {
        platform.kick_cpu(vc.pcpu);
    }
}

/// Injects the event-channel upcall when `evtchn_upcall_pending` is set
/// and a callback vector is configured, or a pending APIC interrupt, or
/// asks for an interrupt window when the guest cannot take it now.
pub(crate) fn prepare_entry(
    dom: &mut Domain,
    frames: &dyn FrameAccess,
    v: u32,
    cpu: &mut dyn VcpuBackend,
) {
    let Some(vc) = dom.vcpus.get_mut(v as usize) else {
        return;
    };
    if vc.vlapic.nmi_pending {
        vc.vlapic.nmi_pending = false;
        cpu.inject(Event::Nmi);
        return;
    }
    let lapic = vc.vlapic.pending_vector();
    let upcall = upcall_vector(dom, v).filter(|_| upcall_pending(dom, frames, v));
    // The higher vector wins, as the APIC's priority classes would.
    let want = match (lapic, upcall) {
        (Some(a), Some(b)) if a > b => Some((a, true)),
        (_, Some(b)) => Some((b, false)),
        (Some(a), None) => Some((a, true)),
        (None, None) => None,
    };
    let Some((vector, from_lapic)) = want else {
        cpu.set_interrupt_window(false);
        return;
    };
    if cpu.interruptible() {
        cpu.inject(Event::Interrupt(vector));
        cpu.set_interrupt_window(false);
        if from_lapic && let Some(vc) = dom.vcpus.get_mut(v as usize) {
            vc.vlapic.acknowledge(vector);
        }
    } else {
        cpu.set_interrupt_window(true);
    }
}

/// The vector used for upcalls of vCPU `v`, if any.
pub(crate) fn upcall_vector(dom: &Domain, v: u32) -> Option<u8> {
    if let Some(vec) = dom.vcpus.get(v as usize).and_then(|x| x.upcall_vector) {
        return Some(vec);
    }
    let cb = dom.hvm_params[xen_abi::hvm::HVM_PARAM_CALLBACK_IRQ as usize];
    match xen_abi::hvm::HvmCallbackVia::decode(cb) {
        Ok(xen_abi::hvm::HvmCallbackVia::Vector(vec)) if vec >= 0x10 => Some(vec),
        _ => None,
    }
}

/// Whether vCPU `v`'s upcall flag is set.
pub(crate) fn upcall_pending(dom: &Domain, frames: &dyn FrameAccess, v: u32) -> bool {
    dom.vcpu_info
        .get(v as usize)
        .copied()
        .flatten()
        .is_some_and(|(h, o)| frames.load_u64(h, o) & 0xFF != 0)
}
