//! `event_channel_op`: every sub-op, on top of [`crate::evtchn`].

use xen_abi::event_channel as ev;
use xen_abi::xen::{NR_VIRQS, VIRQ_DEBUG, VIRQ_DOM_EXC, VIRQ_TIMER, VIRQ_XENOPROF, VIRQ_XENPMU};

use crate::domain::Caps;
use crate::evtchn::{ChanState, Target};
use crate::hv::Hypervisor;
use crate::hypercall::{Call, read_arg, target_domain, write_arg};
use crate::p2m::P2mKind;
use crate::platform::Platform;
use crate::types::{DomId, Errno, Gfn, Hfn, PAGE_SIZE, XenResult};

/// Size of `struct evtchn_fifo_control_block`.
const CONTROL_BLOCK_SIZE: usize = 72;

/// Whether `virq` is delivered per vCPU (the others are global and bound
/// on vCPU 0).
pub fn virq_is_per_vcpu(virq: u32) -> bool {
    matches!(virq, VIRQ_TIMER | VIRQ_DEBUG | VIRQ_XENOPROF | VIRQ_XENPMU)
}

pub(crate) fn event_channel_op<P: Platform>(
    hv: &mut Hypervisor<P>,
    c: &mut Call,
) -> XenResult<u64> {
    let [cmd, arg, ..] = c.args;
    match cmd as u32 {
        ev::EVTCHNOP_alloc_unbound => {
            let mut a: ev::EvtchnAllocUnbound = read_arg(hv, c, arg)?;
            let t = target_domain(hv, c, a.dom)?;
            let remote = if a.remote_dom == DomId::SELF {
                c.d
            } else {
                DomId(a.remote_dom)
            };
            let dom = hv.domain_mut(t).ok_or(Errno::ESRCH)?;
            let port = dom.evtchn.alloc(ChanState::Unbound { remote }, 0)?;
            a.port = port;
            if let Err(e) = write_arg(hv, c, arg, &a) {
                hv.domain_mut(t).map(|d| d.evtchn.free(port));
                return Err(e);
            }
            Ok(0)
        }
        ev::EVTCHNOP_bind_interdomain => {
            let mut a: ev::EvtchnBindInterdomain = read_arg(hv, c, arg)?;
            let rd = if a.remote_dom == DomId::SELF {
                c.d
            } else {
                DomId(a.remote_dom)
            };
            let rdom = hv.domain(rd).ok_or(Errno::ESRCH)?;
            let ok = rdom
                .evtchn
                .get(a.remote_port)
                .is_some_and(|ch| ch.state == ChanState::Unbound { remote: c.d });
            if !ok {
                return Err(Errno::EINVAL);
            }
            // A domain's xenstore port is for the xenstore domain only.
            let store_port = rdom.store.is_some_and(|st| st.port == a.remote_port);
            if store_port && !hv.domain(c.d).is_some_and(|me| me.may(Caps::XENSTORE)) {
                return Err(Errno::EPERM);
            }
            let me = hv.domain_mut(c.d).ok_or(Errno::ESRCH)?;
            let lport = me.evtchn.alloc(
                ChanState::Interdomain {
                    remote: rd,
                    rport: a.remote_port,
                },
                0,
            )?;
            let r = hv.domain_mut(rd).ok_or(Errno::ESRCH)?;
            if let Some(rc) = r.evtchn.get_mut(a.remote_port) {
                rc.state = ChanState::Interdomain {
                    remote: c.d,
                    rport: lport,
                };
            }
            a.local_port = lport;
            let _ = write_arg(hv, c, arg, &a);
            // Like Xen, raise the new port so the binder notices.
            hv.evtchn_set_pending(c.d, lport);
            Ok(0)
        }
        ev::EVTCHNOP_bind_virq => {
            let mut a: ev::EvtchnBindVirq = read_arg(hv, c, arg)?;
            if a.virq >= NR_VIRQS {
                return Err(Errno::EINVAL);
            }
            if !virq_is_per_vcpu(a.virq) && a.vcpu != 0 {
                return Err(Errno::EINVAL);
            }
            let dom = hv.domain_mut(c.d).ok_or(Errno::ESRCH)?;
            // Xen sends VIRQ_DOM_EXC to its global handler only: here, any
            // domain that may act as the xenstore domain. Others get
            // `-EBUSY`, as from Xen since 4.21 (`evtchn_bind_virq`: "don't
            // allow binding a global virq from any domain"); Xen 4.17
            // accepted the bind and never raised the port.
            if a.virq == VIRQ_DOM_EXC && !dom.may(Caps::XENSTORE) {
                return Err(Errno::EBUSY);
            }
            let vc = dom.vcpus.get(a.vcpu as usize).ok_or(Errno::ENOENT)?;
            if vc.virq[a.virq as usize] != 0 {
                return Err(Errno::EEXIST);
            }
            let port = dom.evtchn.alloc(ChanState::Virq(a.virq), a.vcpu)?;
            dom.vcpus[a.vcpu as usize].virq[a.virq as usize] = port;
            a.port = port;
            write_arg(hv, c, arg, &a)?;
            Ok(0)
        }
        ev::EVTCHNOP_bind_pirq => {
            let mut a: ev::EvtchnBindPirq = read_arg(hv, c, arg)?;
            let port = hv.bind_pirq(c.d, a.pirq)?;
            a.port = port;
            if let Err(e) = write_arg(hv, c, arg, &a) {
                let _ = hv.evtchn_close(c.d, port);
                return Err(e);
            }
            Ok(0)
        }
        ev::EVTCHNOP_bind_ipi => {
            let mut a: ev::EvtchnBindIpi = read_arg(hv, c, arg)?;
            let dom = hv.domain_mut(c.d).ok_or(Errno::ESRCH)?;
            if a.vcpu as usize >= dom.vcpus.len() {
                return Err(Errno::ENOENT);
            }
            a.port = dom.evtchn.alloc(ChanState::Ipi, a.vcpu)?;
            write_arg(hv, c, arg, &a)?;
            Ok(0)
        }
        ev::EVTCHNOP_bind_vcpu => {
            let a: ev::EvtchnBindVcpu = read_arg(hv, c, arg)?;
            let dom = hv.domain_mut(c.d).ok_or(Errno::ESRCH)?;
            if a.vcpu as usize >= dom.vcpus.len() {
                return Err(Errno::ENOENT);
            }
            let ch = dom.evtchn.get_mut(a.port).ok_or(Errno::EINVAL)?;
            match ch.state {
                ChanState::Virq(virq) if virq_is_per_vcpu(virq) => return Err(Errno::EINVAL),
                ChanState::Virq(virq) => {
                    // Global VIRQs follow the port.
                    let old = ch.vcpu as usize;
                    ch.vcpu = a.vcpu;
                    let port = a.port;
                    dom.vcpus[old].virq[virq as usize] = 0;
                    dom.vcpus[a.vcpu as usize].virq[virq as usize] = port;
                }
                ChanState::Unbound { .. } | ChanState::Interdomain { .. } | ChanState::Pirq(_) => {
                    ch.vcpu = a.vcpu
                }
                _ => return Err(Errno::EINVAL),
            }
            Ok(0)
        }
        ev::EVTCHNOP_send => {
            let a: ev::EvtchnSend = read_arg(hv, c, arg)?;
            send(hv, c.d, a.port)?;
            Ok(0)
        }
        ev::EVTCHNOP_close => {
            let a: ev::EvtchnClose = read_arg(hv, c, arg)?;
            hv.evtchn_close(c.d, a.port)?;
            Ok(0)
        }
        ev::EVTCHNOP_status => {
            let mut a: ev::EvtchnStatus = read_arg(hv, c, arg)?;
            let t = target_domain(hv, c, a.dom)?;
            let dom = hv.domain(t).ok_or(Errno::ESRCH)?;
            if a.port >= dom.evtchn.max_ports() {
                return Err(Errno::EINVAL);
            }
            a.u = [0; 2];
            a.vcpu = 0;
            match dom.evtchn.get(a.port) {
                None => a.status = ev::EVTCHNSTAT_closed,
                Some(ch) => {
                    a.vcpu = ch.vcpu;
                    match ch.state {
                        ChanState::Free => a.status = ev::EVTCHNSTAT_closed,
                        ChanState::Unbound { remote } => {
                            a.status = ev::EVTCHNSTAT_unbound;
                            a.u[0] = remote.0 as u32;
                        }
                        ChanState::Interdomain { remote, rport } => {
                            a.status = ev::EVTCHNSTAT_interdomain;
                            a.u = [remote.0 as u32, rport];
                        }
                        ChanState::Virq(v) => {
                            a.status = ev::EVTCHNSTAT_virq;
                            a.u[0] = v;
                        }
                        ChanState::Ipi => a.status = ev::EVTCHNSTAT_ipi,
                        ChanState::Pirq(n) => {
                            a.status = ev::EVTCHNSTAT_pirq;
                            a.u[0] = n;
                        }
                    }
                }
            }
            write_arg(hv, c, arg, &a)?;
            Ok(0)
        }
        ev::EVTCHNOP_unmask => {
            let a: ev::EvtchnUnmask = read_arg(hv, c, arg)?;
            let dom = hv.domains.get_mut(&c.d.0).ok_or(Errno::ESRCH)?;
            let t = Target {
                frames: &*hv.platform,
                shared_info: dom.shared_info,
                vcpu_info: &dom.vcpu_info,
                compat: dom.has_32bit_shinfo,
            };
            if let Some(v) = dom.evtchn.unmask(&t, a.port)? {
                hv.wake(c.d, v);
            }
            Ok(0)
        }
        ev::EVTCHNOP_reset => {
            let a: ev::EvtchnReset = read_arg(hv, c, arg)?;
            let t = target_domain(hv, c, a.dom)?;
            // In steps, the call re-executed until every port is closed
            // (Xen's reset is preemptible since XSA-344).
            if !reset(hv, t) {
                hv.restart = true;
            }
            Ok(0)
        }
        ev::EVTCHNOP_init_control => {
            let mut a: ev::EvtchnInitControl = read_arg(hv, c, arg)?;
            let off = a.offset as usize;
            if off > PAGE_SIZE - CONTROL_BLOCK_SIZE || !off.is_multiple_of(8) {
                return Err(Errno::EINVAL);
            }
            let hfn = ram_frame(hv, c.d, Gfn(a.control_gfn))?;
            let dom = hv.domain_mut(c.d).ok_or(Errno::ESRCH)?;
            let nr = dom.vcpus.len() as u32;
            dom.evtchn.init_control(a.vcpu, nr, (hfn, off))?;
            dom.pin(hfn);
            a.link_bits = ev::EVTCHN_FIFO_LINK_BITS as u8;
            let _ = write_arg(hv, c, arg, &a);
            Ok(0)
        }
        ev::EVTCHNOP_expand_array => {
            let a: ev::EvtchnExpandArray = read_arg(hv, c, arg)?;
            hv.domain(c.d).ok_or(Errno::ESRCH)?.evtchn.can_expand()?;
            let hfn = ram_frame(hv, c.d, Gfn(a.array_gfn))?;
            let dom = hv.domain_mut(c.d).ok_or(Errno::ESRCH)?;
            dom.evtchn.expand_array(hfn)?;
            dom.pin(hfn);
            Ok(0)
        }
        ev::EVTCHNOP_set_priority => {
            let a: ev::EvtchnSetPriority = read_arg(hv, c, arg)?;
            hv.domain_mut(c.d)
                .ok_or(Errno::ESRCH)?
                .evtchn
                .set_priority(a.port, a.priority)?;
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// A writable RAM frame of `d` at `gfn`, for structures the hypervisor
/// keeps using (it is pinned by the caller).
fn ram_frame<P: Platform>(hv: &Hypervisor<P>, d: DomId, gfn: Gfn) -> XenResult<Hfn> {
    let e = hv
        .domain(d)
        .ok_or(Errno::ESRCH)?
        .p2m
        .get(gfn)
        .ok_or(Errno::EINVAL)?;
    if e.kind != P2mKind::Ram || !e.perms.write {
        return Err(Errno::EINVAL);
    }
    Ok(e.hfn)
}

/// `EVTCHNOP_send` from `d` on `port`.
pub fn send<P: Platform>(hv: &mut Hypervisor<P>, d: DomId, port: u32) -> XenResult<()> {
    let ch = *hv
        .domain(d)
        .ok_or(Errno::ESRCH)?
        .evtchn
        .get(port)
        .ok_or(Errno::EINVAL)?;
    match ch.state {
        ChanState::Interdomain { remote, .. } if remote == crate::console::DOMID_XEN => {
            hv.console_kick(d)
        }
        ChanState::Interdomain { remote, rport } => hv.evtchn_set_pending(remote, rport),
        ChanState::Ipi => hv.evtchn_set_pending(d, port),
        ChanState::Unbound { .. } => {}
        _ => return Err(Errno::EINVAL),
    }
    Ok(())
}

/// Ports `EVTCHNOP_reset` closes per exit.
pub const RESET_PORTS_PER_EXIT: usize = 4096;

/// Closes up to [`RESET_PORTS_PER_EXIT`] ports of `d`; once none is left,
/// returns it to the 2-level ABI and answers true.
pub fn reset<P: Platform>(hv: &mut Hypervisor<P>, d: DomId) -> bool {
    let ports: alloc::vec::Vec<u32> = hv
        .domain(d)
        .map(|x| {
            x.evtchn
                .iter()
                .map(|(p, _)| p)
                .take(RESET_PORTS_PER_EXIT + 1)
                .collect()
        })
        .unwrap_or_default();
    if ports.len() > RESET_PORTS_PER_EXIT {
        for &p in &ports[..RESET_PORTS_PER_EXIT] {
            let _ = hv.evtchn_close(d, p);
        }
        return false;
    }
    for p in ports {
        let _ = hv.evtchn_close(d, p);
    }
    // The FIFO control blocks and array pages go back to the guest
    // unpinned (Xen's evtchn_fifo_destroy puts them): kept pinned, a guest
    // could set FIFO up, give the pages back and reset, over and over,
    // each round holding host frames until the domain dies.
    if let Some(dom) = hv.domains.get_mut(&d.0) {
        for hfn in dom.evtchn.pinned_frames() {
            crate::gnttab::unpin_frame(&mut hv.retire, dom, hfn);
        }
        dom.evtchn.reset_abi();
    }
    true
}
