//! `vcpu_op`: vcpu_info placement, runstate areas, vCPU state queries.

use xen_abi::vcpu as vc;

use crate::domain::VcpuState;
use crate::hv::Hypervisor;
use crate::hypercall::{Call, read_arg, write_arg};
use crate::p2m::P2mKind;
use crate::platform::Platform;
use crate::types::{Errno, Gfn, PAGE_SIZE, XenResult};

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
            let a: vc::VcpuRegisterRunstateMemoryArea = read_arg(hv, c, arg)?;
            let dom = hv.domain_mut(c.d).ok_or(Errno::ESRCH)?;
            dom.vcpus[v as usize].runstate_area = (a.addr != 0).then_some(a.addr);
            if a.addr != 0 {
                let info = runstate(hv, c.d, v);
                // A bad address is not an error here: Xen updates lazily.
                let _ = write_arg(hv, c, a.addr, &info);
            }
            Ok(0)
        }
        vc::VCPUOP_get_runstate_info => {
            let info = runstate(hv, c.d, v);
            write_arg(hv, c, arg, &info)?;
            Ok(0)
        }
        vc::VCPUOP_is_up => {
            let dom = hv.domain(c.d).ok_or(Errno::ESRCH)?;
            Ok((dom.vcpus[v as usize].state != VcpuState::Offline) as u64)
        }
        // The Xen clock event device is chosen by this call returning 0.
        vc::VCPUOP_stop_periodic_timer | vc::VCPUOP_stop_singleshot_timer => Ok(0),
        _ => Err(Errno::ENOSYS),
    }
}

fn runstate<P: Platform>(
    hv: &Hypervisor<P>,
    d: crate::types::DomId,
    v: u32,
) -> vc::VcpuRunstateInfo {
    let st = hv
        .domain(d)
        .map_or(VcpuState::Offline, |x| x.vcpus[v as usize].state);
    vc::VcpuRunstateInfo {
        state: match st {
            VcpuState::Runnable => vc::RUNSTATE_running,
            VcpuState::Blocked | VcpuState::Polling => vc::RUNSTATE_blocked,
            VcpuState::Offline => vc::RUNSTATE_offline,
        },
        state_entry_time: hv.platform.now_ns(),
        ..Default::default()
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
    let e = dom.p2m.get(gfn).ok_or(Errno::EINVAL)?;
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
    buf[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    hv.platform.write(e.hfn, offset, &buf);
    let dom = hv.domain_mut(c.d).ok_or(Errno::ESRCH)?;
    dom.pin(e.hfn);
    dom.vcpu_info[v as usize] = Some((e.hfn, offset));
    dom.vcpus[v as usize].vcpu_info_registered = true;
    Ok(0)
}
