//! `domctl` and `sysctl`: the domain-information subset a xenstore
//! (service) domain needs, answered from hv-core's domain table.
//!
//! - `XEN_DOMCTL_getdomaininfo` (5): Xen 4.17's rule, the first domain
//!   whose id is at least the one asked for (its id comes back in
//!   `domain`); `-ESRCH` past the last, `-EINVAL` for a reserved id.
//! - `XEN_DOMCTL_get_domain_state` (90, stable: interface version 0): one
//!   domain's state, or with `DOMID_INVALID` the next domain created, shut
//!   down or destroyed since the last such call (`-ENOENT` when none; a
//!   destroyed domain reads as state 0). Only the domain that bound
//!   `VIRQ_DOM_EXC` may ask for changes (`-EACCES`), as in Xen.
//! - `XEN_SYSCTL_getdomaininfolist` (6): the same records for the domains
//!   from `first_domain` on, at most `max_domains`.
//!
//! As in Xen, a wrong `interface_version` is `-EACCES` (checked first);
//! a caller without [`Caps::DOMCTL_INFO`] gets `-EPERM` (Xen's
//! `XSM_XS_PRIV`), and so does an unprivileged caller of any other
//! command; the control domain gets `-ENOSYS` for commands not handled.
//!
//! Differences from Xen, on purpose: `shared_info_frame` is the GFN where
//! the guest placed shared_info (0 if nowhere), not a host frame; the
//! shutdown reason is in the flags only once the domain has shut down
//! (Xen 4.17 shifts its `SHUTDOWN_CODE_INVALID` in otherwise); `handle`
//! is zero (no toolstack gives a UUID).

use xen_abi::domctl as dc;
use xen_abi::domctl::{XenDomctl, XenDomctlGetDomainState, XenDomctlGetdomaininfo, XenSysctl};

use crate::domain::{Caps, Domain, DomainState, ShutdownReason, VcpuState};
use crate::hv::Hypervisor;
use crate::hypercall::{Call, read_arg, write_arg};
use crate::platform::Platform;
use crate::types::{DomId, Errno, XenResult};

/// Guest-physical address width reported (4-level nested paging).
pub const GPADDR_BITS: u8 = 48;

/// The `SHUTDOWN_*` code of a reason.
fn shutdown_code(r: ShutdownReason) -> u32 {
    match r {
        ShutdownReason::Poweroff => 0,
        ShutdownReason::Reboot => 1,
        ShutdownReason::Suspend => 2,
        ShutdownReason::Crash => 3,
        ShutdownReason::Watchdog => 4,
        ShutdownReason::SoftReset => 5,
    }
}

/// Xen's `getdomaininfo`: the record of `dom`.
pub fn domain_info(dom: &Domain) -> XenDomctlGetdomaininfo {
    let mut busy = dc::XEN_DOMINF_blocked;
    let mut online = 0u32;
    let mut cpu_time = 0u64;
    for v in &dom.vcpus {
        cpu_time =
            cpu_time.saturating_add(v.runstate.time[xen_abi::vcpu::RUNSTATE_running as usize]);
        if v.state == VcpuState::Offline {
            continue;
        }
        online += 1;
        if !matches!(v.state, VcpuState::Blocked | VcpuState::Polling) {
            busy &= !dc::XEN_DOMINF_blocked;
        }
        if v.runstate.state == xen_abi::vcpu::RUNSTATE_running {
            busy |= dc::XEN_DOMINF_running;
        }
    }
    let mut flags = if online > 0 { busy } else { 0 };
    flags |= dc::XEN_DOMINF_hvm_guest | dc::XEN_DOMINF_hap;
    match dom.state {
        DomainState::Running => {}
        DomainState::Paused => flags |= dc::XEN_DOMINF_paused,
        DomainState::Shutdown(r) => {
            flags |= dc::XEN_DOMINF_shutdown
                | (shutdown_code(r) & dc::XEN_DOMINF_shutdownmask) << dc::XEN_DOMINF_shutdownshift
        }
    }
    if dom.caps.contains(Caps::XENSTORE) {
        flags |= dc::XEN_DOMINF_xs_domain;
    }
    XenDomctlGetdomaininfo {
        domain: dom.id.0,
        flags,
        tot_pages: dom.tot_pages,
        max_pages: dom.max_pages,
        shared_info_frame: dom.shared_info_gfn.map_or(0, |g| g.0),
        cpu_time,
        nr_online_vcpus: online,
        max_vcpu_id: (dom.vcpus.len() as u32)
            .checked_sub(1)
            .unwrap_or(dc::XEN_INVALID_MAX_VCPU_ID),
        gpaddr_bits: GPADDR_BITS,
        arch_config: dc::XenArchDomainconfig {
            emulation_flags: dc::XEN_X86_EMU_LAPIC,
            misc_flags: 0,
        },
        ..Default::default()
    }
}

/// The `XEN_DOMCTL_get_domain_state` record of `dom` (zero when gone).
pub fn domain_state(dom: Option<&Domain>) -> XenDomctlGetDomainState {
    let Some(dom) = dom else {
        return XenDomctlGetDomainState::default();
    };
    let mut state = dc::XEN_DOMCTL_GETDOMSTATE_STATE_EXIST;
    if matches!(dom.state, DomainState::Shutdown(_)) {
        state |= dc::XEN_DOMCTL_GETDOMSTATE_STATE_SHUTDOWN;
    }
    let mut caps = 0;
    if dom.privileged {
        caps |= dc::XEN_DOMCTL_GETDOMSTATE_CAP_CONTROL;
    }
    if dom.caps.contains(Caps::XENSTORE) {
        caps |= dc::XEN_DOMCTL_GETDOMSTATE_CAP_XENSTORE;
    }
    XenDomctlGetDomainState {
        state,
        caps,
        pad0: 0,
        unique_id: dom.unique_id,
    }
}

fn caller<'a, P: Platform>(hv: &'a Hypervisor<P>, c: &Call) -> XenResult<&'a Domain> {
    hv.domain(c.d).ok_or(Errno::ESRCH)
}

/// `__HYPERVISOR_domctl(struct xen_domctl *)`.
pub(crate) fn domctl<P: Platform>(hv: &mut Hypervisor<P>, c: &mut Call) -> XenResult<u64> {
    let la = c.args[0];
    let mut op: XenDomctl = read_arg(hv, c, la)?;
    let want = if op.cmd == dc::XEN_DOMCTL_get_domain_state {
        0
    } else {
        dc::XEN_DOMCTL_INTERFACE_VERSION
    };
    if op.interface_version != want {
        return Err(Errno::EACCES);
    }
    let me = caller(hv, c)?;
    match op.cmd {
        dc::XEN_DOMCTL_getdomaininfo => {
            if !me.may(Caps::DOMCTL_INFO) {
                return Err(Errno::EPERM);
            }
            if op.domain >= DomId::FIRST_RESERVED {
                return Err(Errno::EINVAL);
            }
            let info = hv
                .domains
                .range(op.domain..)
                .next()
                .map(|(_, d)| domain_info(d))
                .ok_or(Errno::ESRCH)?;
            op.domain = info.domain;
            op.set_arg(&info);
        }
        dc::XEN_DOMCTL_get_domain_state => {
            if !me.may(Caps::DOMCTL_INFO) {
                return Err(Errno::EPERM);
            }
            if op.arg::<XenDomctlGetDomainState>().pad0 != 0 {
                return Err(Errno::EINVAL);
            }
            let st = if op.domain == xen_abi::xen::DOMID_INVALID {
                let handler = me
                    .vcpus
                    .first()
                    .is_some_and(|v| v.virq[xen_abi::xen::VIRQ_DOM_EXC as usize] != 0);
                if !handler {
                    return Err(Errno::EACCES);
                }
                let id = hv.changed.pop_first().ok_or(Errno::ENOENT)?;
                op.domain = id;
                domain_state(hv.domain(DomId(id)))
            } else {
                domain_state(Some(hv.domain(DomId(op.domain)).ok_or(Errno::ESRCH)?))
            };
            op.set_arg(&st);
        }
        _ if !me.privileged => return Err(Errno::EPERM),
        _ => return Err(Errno::ENOSYS),
    }
    write_arg(hv, c, la, &op)?;
    Ok(0)
}

/// `__HYPERVISOR_sysctl(struct xen_sysctl *)`.
pub(crate) fn sysctl<P: Platform>(hv: &mut Hypervisor<P>, c: &mut Call) -> XenResult<u64> {
    let la = c.args[0];
    let mut op: XenSysctl = read_arg(hv, c, la)?;
    if op.interface_version != dc::XEN_SYSCTL_INTERFACE_VERSION {
        return Err(Errno::EACCES);
    }
    let me = caller(hv, c)?;
    match op.cmd {
        dc::XEN_SYSCTL_getdomaininfolist => {
            if !me.may(Caps::DOMCTL_INFO) {
                return Err(Errno::EPERM);
            }
            let mut a: dc::XenSysctlGetdomaininfolist = op.arg();
            let infos: alloc::vec::Vec<XenDomctlGetdomaininfo> = hv
                .domains
                .range(a.first_domain..)
                .take(a.max_domains as usize)
                .map(|(_, d)| domain_info(d))
                .collect();
            let virt = hv.guest_virt(c.d, c.mode).ok_or(Errno::ESRCH)?;
            let size = core::mem::size_of::<XenDomctlGetdomaininfo>() as u64;
            for (i, info) in infos.iter().enumerate() {
                let at = a.buffer.wrapping_add(i as u64 * size);
                virt.write_obj(at, info)?;
            }
            a.num_domains = infos.len() as u32;
            op.set_arg(&a);
        }
        _ if !me.privileged => return Err(Errno::EPERM),
        _ => return Err(Errno::ENOSYS),
    }
    write_arg(hv, c, la, &op)?;
    Ok(0)
}
