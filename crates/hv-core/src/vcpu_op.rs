//! `vcpu_op`: vcpu_info placement, runstate areas, vCPU state queries.
//!
//! 32-bit callers: the runstate area's address is a 4-byte handle, the
//! singleshot timer argument is 12 bytes, and runstate info is returned in
//! the compat layout (`state_entry_time` at 4). The registered runstate
//! area is written in the layout of the domain's shared state
//! (`has_32bit_shinfo`), as Xen does.

use xen_abi::compat as cm;
use xen_abi::vcpu as vc;

use crate::domain::VcpuState;
use crate::hv::Hypervisor;
use crate::hypercall::{Call, read_arg, write_arg};
use crate::p2m::P2mKind;
use crate::platform::Platform;
use crate::time::{MIN_PERIOD_NS, TimerKind};
use crate::types::{DomId, Errno, Gfn, PAGE_SIZE, XenResult};

/// Size of `struct vcpu_info`.
pub const VCPU_INFO_SIZE: usize = 64;

pub(crate) fn vcpu_op<P: Platform>(hv: &mut Hypervisor<P>, c: &mut Call) -> XenResult<u64> {
    let [cmd, vcpu, arg, ..] = c.args;
    let nr = hv.domain(c.d).ok_or(Errno::ESRCH)?.vcpus.len() as u64;
    if vcpu >= nr {
        return Err(Errno::ENOENT);
    }
    let v = vcpu as u32;
    match cmd as u32 {
        vc::VCPUOP_register_vcpu_info => {
            let a: vc::VcpuRegisterVcpuInfo = read_arg(hv, c, arg)?;
            register_vcpu_info(hv, c, v, Gfn(a.mfn), a.offset as usize)
        }
        vc::VCPUOP_register_runstate_memory_area => {
            // A 32-bit caller passes only the 4-byte handle of the union
            // (Xen's compat_vcpu_op reads just that).
            let addr = if c.long {
                read_arg::<P, vc::VcpuRegisterRunstateMemoryArea>(hv, c, arg)?.addr
            } else {
                read_arg::<P, u32>(hv, c, arg)?.into()
            };
            let dom = hv.domain_mut(c.d).ok_or(Errno::ESRCH)?;
            let vc = &mut dom.vcpus[v as usize];
            vc.runstate_area = (addr != 0).then_some(addr);
            vc.runstate_mode = c.mode;
            let info = vc.runstate;
            // The first copy is in the caller's layout, later updates in
            // the domain's (`publish_runstate`), as Xen does. A bad address
            // is not an error here: Xen updates lazily.
            if addr != 0 {
                let _ = if c.long {
                    write_arg(hv, c, addr, &info)
                } else {
                    write_arg(hv, c, addr, &compat_runstate(&info))
                };
            }
            Ok(0)
        }
        vc::VCPUOP_get_runstate_info => {
            let info = runstate(hv, c.d, v);
            if c.long {
                write_arg(hv, c, arg, &info)?;
            } else {
                write_arg(hv, c, arg, &compat_runstate(&info))?;
            }
            Ok(0)
        }
        vc::VCPUOP_is_up => {
            let dom = hv.domain(c.d).ok_or(Errno::ESRCH)?;
            Ok((dom.vcpus[v as usize].state != VcpuState::Offline) as u64)
        }
        vc::VCPUOP_set_singleshot_timer => {
            if v != c.v {
                // Xen only lets a vCPU set its own singleshot timer.
                return Err(Errno::EINVAL);
            }
            let a: vc::VcpuSetSingleshotTimer = if c.long {
                read_arg(hv, c, arg)?
            } else {
                let a: cm::CompatVcpuSetSingleshotTimer = read_arg(hv, c, arg)?;
                vc::VcpuSetSingleshotTimer {
                    timeout_abs_ns: a.timeout_abs_ns,
                    flags: a.flags,
                    pad: 0,
                }
            };
            // `VCPU_SSHOTTMR_future` is ignored, as in Xen since 4.18 (and
            // Debian's 4.17): a deadline in the past fires at once.
            set_singleshot(hv, c.d, v, Some(a.timeout_abs_ns));
            Ok(0)
        }
        vc::VCPUOP_stop_singleshot_timer => {
            if v != c.v {
                return Err(Errno::EINVAL);
            }
            set_singleshot(hv, c.d, v, None);
            Ok(0)
        }
        vc::VCPUOP_set_periodic_timer => {
            let a: vc::VcpuSetPeriodicTimer = read_arg(hv, c, arg)?;
            if a.period_ns < MIN_PERIOD_NS || a.period_ns > MAX_TIMER_NS {
                return Err(Errno::EINVAL);
            }
            let next = hv.now().saturating_add(a.period_ns);
            let dom = hv.domain_mut(c.d).ok_or(Errno::ESRCH)?;
            dom.vcpus[v as usize].periodic = Some((a.period_ns, next));
            hv.arm_timer(c.d, v, next, TimerKind::Periodic);
            Ok(0)
        }
        // Returning 0 here makes Linux choose the Xen clock event device.
        vc::VCPUOP_stop_periodic_timer => {
            let dom = hv.domain_mut(c.d).ok_or(Errno::ESRCH)?;
            dom.vcpus[v as usize].periodic = None;
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// Timers further away than this are refused (about 146 years, Xen's
/// `STIME_DELTA_MAX` is 2^62 ns).
pub const MAX_TIMER_NS: u64 = 1 << 62;

/// Sets (or with `None` stops) vCPU `v`'s singleshot timer. A deadline in
/// the past fires at the next tick.
pub fn set_singleshot<P: Platform>(
    hv: &mut Hypervisor<P>,
    d: DomId,
    v: u32,
    deadline: Option<u64>,
) {
    let Some(vc) = hv.domain_mut(d).and_then(|x| x.vcpus.get_mut(v as usize)) else {
        return;
    };
    vc.singleshot = deadline;
    if let Some(t) = deadline {
        hv.arm_timer(d, v, t, TimerKind::Singleshot);
    }
}

/// Runstate info in the 32-bit layout.
fn compat_runstate(r: &vc::VcpuRunstateInfo) -> cm::CompatVcpuRunstateInfo {
    cm::CompatVcpuRunstateInfo {
        state: r.state,
        state_entry_time: r.state_entry_time,
        time: r.time,
    }
}

fn runstate<P: Platform>(
    hv: &Hypervisor<P>,
    d: crate::types::DomId,
    v: u32,
) -> vc::VcpuRunstateInfo {
    hv.domain(d)
        .map(|x| x.vcpus[v as usize].runstate)
        .unwrap_or_default()
}

/// `XEN_RUNSTATE_UPDATE`: set in `state_entry_time` while the area is
/// being written (with `VMASST_TYPE_runstate_update_flag`).
pub const XEN_RUNSTATE_UPDATE: u64 = 1 << 63;

impl<P: Platform> Hypervisor<P> {
    /// Moves vCPU `v` to runstate `state` at the current time, accounting
    /// the time spent in the previous one, and publishes it.
    pub fn set_runstate(&mut self, d: crate::types::DomId, v: u32, state: i32) {
        let now = self.now();
        let Some(vc) = self.domain_mut(d).and_then(|x| x.vcpus.get_mut(v as usize)) else {
            return;
        };
        let r = &mut vc.runstate;
        if r.state == state {
            return;
        }
        if let Some(t) = usize::try_from(r.state)
            .ok()
            .and_then(|i| r.time.get_mut(i))
        {
            *t = t.saturating_add(now.saturating_sub(r.state_entry_time));
        }
        r.state = state;
        r.state_entry_time = now;
        self.publish_runstate(d, v);
    }

    /// The runstate a vCPU that is not running is in.
    pub fn idle_runstate(&self, d: crate::types::DomId, v: u32) -> i32 {
        match self
            .domain(d)
            .and_then(|x| x.vcpus.get(v as usize))
            .map(|x| x.state)
        {
            Some(VcpuState::Runnable) => vc::RUNSTATE_runnable,
            Some(VcpuState::Blocked | VcpuState::Polling) => vc::RUNSTATE_blocked,
            _ => vc::RUNSTATE_offline,
        }
    }

    /// Copies vCPU `v`'s runstate into its registered area, with the
    /// update flag protocol when the guest asked for it.
    pub(crate) fn publish_runstate(&mut self, d: crate::types::DomId, v: u32) {
        let Some(dom) = self.domain(d) else { return };
        let flag = dom.vm_assist & (1 << xen_abi::xen::VMASST_TYPE_runstate_update_flag) != 0;
        let compat = dom.has_32bit_shinfo;
        let Some(vc) = dom.vcpus.get(v as usize) else {
            return;
        };
        let (Some(la), mode, info) = (vc.runstate_area, vc.runstate_mode, vc.runstate) else {
            return;
        };
        let Some(virt) = self.guest_virt(d, mode) else {
            return;
        };
        // state_entry_time is at offset 8 (4 in the 32-bit layout).
        let entry_time = if compat { 4 } else { 8 };
        if flag {
            let marked = info.state_entry_time | XEN_RUNSTATE_UPDATE;
            let _ = virt.write(la.wrapping_add(entry_time), &marked.to_le_bytes());
        }
        let _ = if compat {
            virt.write_obj(la, &compat_runstate(&info))
        } else {
            virt.write_obj(la, &info)
        };
    }
}

fn register_vcpu_info<P: Platform>(
    hv: &mut Hypervisor<P>,
    c: &Call,
    v: u32,
    gfn: Gfn,
    offset: usize,
) -> XenResult<u64> {
    if offset > PAGE_SIZE - VCPU_INFO_SIZE || !offset.is_multiple_of(8) {
        return Err(Errno::EINVAL);
    }
    let dom = hv.domain(c.d).ok_or(Errno::ESRCH)?;
    if dom.vcpus[v as usize].vcpu_info_registered {
        return Err(Errno::EINVAL);
    }
    let e = dom
        .p2m
        .get_scrubbed(gfn, &hv.platform)
        .ok_or(Errno::EINVAL)?;
    if e.kind != P2mKind::Ram || !e.perms.write {
        return Err(Errno::EINVAL);
    }
    // Move the current contents, then mark everything pending so nothing
    // raised meanwhile is lost (as Xen does).
    let mut buf = [0u8; VCPU_INFO_SIZE];
    if let Some((h, o)) = dom.vcpu_info[v as usize] {
        hv.platform.read(h, o, &mut buf);
    }
    buf[0] = 1;
    if dom.has_32bit_shinfo {
        buf[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    } else {
        buf[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    }
    hv.platform.write(e.hfn, offset, &buf);
    let dom = hv.domain_mut(c.d).ok_or(Errno::ESRCH)?;
    dom.pin(e.hfn);
    dom.vcpu_info[v as usize] = Some((e.hfn, offset));
    dom.vcpus[v as usize].vcpu_info_registered = true;
    hv.update_vcpu_time(c.d, v);
    Ok(0)
}
