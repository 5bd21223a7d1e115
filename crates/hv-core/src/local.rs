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
//! configuration-space port I/O (each domain has its own view), the
//! singleshot timer (`VCPUOP_{set,stop}_singleshot_timer`,
//! `set_timer_op`: the vCPU's own state and the timer heap, a leaf lock),
//! `xen_version`,
//! and `EVTCHNOP_send` on an IPI port whose target vCPU needs no wake-up
//! through the scheduler. Everything else is declined
//! before anything is changed, so the global path sees the exit as if the
//! local one had never looked at it.
//!
//! [`Hypervisor::hold`]: crate::hv::Hypervisor::hold

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cell::Cell;

use xen_abi::event_channel as ev;
use xen_abi::vcpu as vc;
use xen_abi::xen as x;

use crate::arch::{Event, VcpuBackend, VmExit};
use crate::domain::{Domain, DomainState, VcpuState};
use crate::evtchn::{ChanState, Target};
use crate::guestmem::GuestMem;
use crate::hv::{Cells, DomainCell, ExitAction};
use crate::hypercall::{Call, decode, set_result, set_timer_op_deadline, xen_version};
use crate::lockorder::OrderedMutex;
use crate::pagewalk::GuestVirt;
use crate::platform::{FrameAccess, Platform};
use crate::time::{TimeScale, TimerHeap};
use crate::types::{DomId, Errno, XenResult};
use crate::vcpu_op::{singleshot_arg, singleshot_in};

/// A CPU's handle on one domain's cell, for its domain-local exits.
pub struct LocalDomain<P> {
    d: DomId,
    cell: Arc<DomainCell>,
    platform: Arc<P>,
    scale: TimeScale,
    /// The timer heap (a leaf lock).
    timers: Arc<OrderedMutex<TimerHeap>>,
    /// The queue of woken vCPUs for the scheduler (a leaf lock).
    woken: Arc<OrderedMutex<Vec<(DomId, u32)>>>,
    /// The registry as it was when this handle was made, to find an
    /// interdomain peer's cell without taking the registry's lock under a
    /// domain's (a peer destroyed or rebuilt since is declined: its old
    /// cell stays empty).
    peers: Cells,
    /// Whether an exit handled here woke a vCPU since the last
    /// [`LocalDomain::take_woke`].
    woke: Cell<bool>,
}

impl<P: Platform> LocalDomain<P> {
    pub(crate) fn new(
        d: DomId,
        cell: Arc<DomainCell>,
        platform: Arc<P>,
        scale: TimeScale,
        timers: Arc<OrderedMutex<TimerHeap>>,
        woken: Arc<OrderedMutex<Vec<(DomId, u32)>>>,
        peers: Cells,
    ) -> Self {
        LocalDomain {
            d,
            cell,
            platform,
            scale,
            timers,
            woken,
            peers,
            woke: Cell::new(false),
        }
    }

    /// Whether the exits handled here since the last call woke a vCPU: the
    /// caller then hands the queue of woken vCPUs to the scheduler
    /// ([`crate::hv::Hypervisor::woken_queue`]), as the global path does
    /// after every exit.
    pub fn take_woke(&self) -> bool {
        self.woke.replace(false)
    }

    /// The machine.
    pub fn platform(&self) -> &P {
        &self.platform
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
                    let target = match send_target(dom, frames, &c)? {
                        Ok(t) => t,
                        Err(e) => {
                            if !crate::exits::skip_in(dom, frames, cpu, &exit) {
                                return None;
                            }
                            set_result(cpu, c.long, Err(e));
                            return Some(ExitAction::Resume);
                        }
                    };
                    let now = self.now();
                    let w = Wakes {
                        platform: &*self.platform,
                        now,
                        woken: &self.woken,
                        current: Some((self.d, v)),
                        pushed: Cell::new(false),
                    };
                    match target {
                        SendTarget::Nobody => {
                            if !crate::exits::skip_in(dom, frames, cpu, &exit) {
                                return None;
                            }
                        }
                        SendTarget::Own(port) => {
                            if dom.await_store {
                                return None;
                            }
                            if !crate::exits::skip_in(dom, frames, cpu, &exit) {
                                return None;
                            }
                            set_pending_in(dom, &w, port);
                        }
                        SendTarget::Peer(remote, rport) => {
                            // Never wait for a second domain's lock while
                            // holding one: the global path may be checking
                            // them out in id order, or the peer's CPU
                            // sending the other way.
                            let mut slot = self.peers.get(&remote.0)?.slot.try_lock()?;
                            let peer = slot.as_deref_mut()?;
                            if peer.await_store && peer.store.is_some_and(|s| s.port == rport) {
                                // Its introduction unpauses it: global.
                                return None;
                            }
                            if !crate::exits::skip_in(dom, frames, cpu, &exit) {
                                return None;
                            }
                            set_pending_in(peer, &w, rport);
                        }
                    }
                    if w.pushed.get() {
                        self.woke.set(true);
                    }
                    set_result(cpu, c.long, Ok(0));
                    Some(ExitAction::Resume)
                }
                x::__HYPERVISOR_vcpu_op => {
                    let [cmd, vcpu, arg, ..] = c.args;
                    let set = cmd == u64::from(vc::VCPUOP_set_singleshot_timer);
                    if !set && cmd != u64::from(vc::VCPUOP_stop_singleshot_timer) {
                        return None;
                    }
                    if !crate::exits::skip_in(dom, frames, cpu, &exit) {
                        return None;
                    }
                    // The global path's checks, in its order.
                    let ret = if vcpu >= dom.vcpus.len() as u64 {
                        Err(Errno::ENOENT)
                    } else if vcpu != u64::from(v) {
                        // Xen only lets a vCPU set its own singleshot timer.
                        Err(Errno::EINVAL)
                    } else if set {
                        let virt = GuestVirt {
                            mem: GuestMem::new(&dom.p2m, frames),
                            mode: c.mode,
                        };
                        singleshot_arg(&virt, &c, arg).map(|t| {
                            singleshot_in(dom, &self.timers, v, Some(t));
                            0
                        })
                    } else {
                        singleshot_in(dom, &self.timers, v, None);
                        Ok(0)
                    };
                    set_result(cpu, c.long, ret);
                    Some(ExitAction::Resume)
                }
                x::__HYPERVISOR_set_timer_op => {
                    if !crate::exits::skip_in(dom, frames, cpu, &exit) {
                        return None;
                    }
                    let t = set_timer_op_deadline(&c);
                    singleshot_in(dom, &self.timers, v, (t != 0).then_some(t));
                    set_result(cpu, c.long, Ok(0));
                    Some(ExitAction::Resume)
                }
                _ => None,
            }
        })
    }
}

/// Where an `EVTCHNOP_send` goes.
enum SendTarget {
    /// An unbound port: nowhere (not an error).
    Nobody,
    /// A port of the sender's own domain (IPI, loopback).
    Own(u32),
    /// A port of another domain.
    Peer(DomId, u32),
}

/// Reads `EVTCHNOP_send`'s argument of call `c` and finds where the event
/// goes, without changing anything: `Some(Err(_))` for the argument errors
/// the global path answers the same way, `None` for what the global path
/// keeps (the console's port).
fn send_target(dom: &Domain, frames: &dyn FrameAccess, c: &Call) -> Option<XenResult<SendTarget>> {
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
    Some(Ok(match ch.state {
        ChanState::Interdomain { remote, .. } if remote == crate::console::DOMID_XEN => {
            return None;
        }
        ChanState::Interdomain { remote, rport } if remote == dom.id => SendTarget::Own(rport),
        ChanState::Interdomain { remote, rport } => SendTarget::Peer(remote, rport),
        ChanState::Ipi => SendTarget::Own(a.port),
        ChanState::Unbound { .. } => SendTarget::Nobody,
        _ => return Some(Err(Errno::EINVAL)),
    }))
}

/// What waking a vCPU needs besides its domain.
pub(crate) struct Wakes<'a> {
    /// To kick CPUs.
    pub platform: &'a dyn Platform,
    /// System time, for runstates.
    pub now: u64,
    /// The queue of woken vCPUs for the scheduler.
    pub woken: &'a OrderedMutex<Vec<(DomId, u32)>>,
    /// The vCPU whose exit is being handled.
    pub current: Option<(DomId, u32)>,
    /// Set when a vCPU was put on `woken`.
    pub pushed: Cell<bool>,
}

/// Wakes vCPU `v` of `dom` if it is blocked or polling (runnable, on the
/// queue for the scheduler, its CPU kicked); kicks the CPU of one that is
/// awake so that it sees its event, unless it is the caller itself.
pub(crate) fn wake_in(dom: &mut Domain, w: &Wakes<'_>, v: u32) {
    let d = dom.id;
    let Some(vc) = dom.vcpus.get_mut(v as usize) else {
        return;
    };
    let p = vc.pcpu;
    if matches!(vc.state, VcpuState::Blocked | VcpuState::Polling) {
        vc.state = VcpuState::Runnable;
        vc.poll_ports.clear();
        vc.wake_at = None;
        w.woken.lock().push((d, v));
        w.pushed.set(true);
        crate::vcpu_op::set_runstate_in(
            dom,
            w.platform,
            w.now,
            v,
            xen_abi::vcpu::RUNSTATE_runnable,
        );
        w.platform.kick_cpu(p);
    } else if w.current != Some((d, v)) {
        w.platform.kick_cpu(p);
    }
}

/// Raises `port` of `dom` and wakes whom it concerns: the vCPUs polling
/// it (even if masked) and the vCPU its upcall goes to.
pub(crate) fn set_pending_in(dom: &mut Domain, w: &Wakes<'_>, port: u32) {
    let t = Target {
        frames: w.platform,
        shared_info: dom.shared_info,
        vcpu_info: &dom.vcpu_info,
        compat: dom.has_32bit_shinfo,
    };
    let notify = dom.evtchn.set_pending(&t, port);
    let polling: Vec<u32> = dom
        .vcpus
        .iter()
        .filter(|vc| vc.state == VcpuState::Polling && vc.poll_ports.contains(&port))
        .map(|vc| vc.id)
        .collect();
    for v in polling {
        wake_in(dom, w, v);
    }
    if let Some(v) = notify {
        wake_in(dom, w, v);
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
