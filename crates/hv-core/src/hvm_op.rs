//! `hvm_op`: HVM params, the upcall vector, time.

use xen_abi::hvm as h;

use crate::domain::HVM_NR_PARAMS;
use crate::hv::Hypervisor;
use crate::hypercall::{Call, read_arg, target_domain, write_arg};
use crate::platform::Platform;
use crate::types::{Errno, XenResult};

pub(crate) fn hvm_op<P: Platform>(hv: &mut Hypervisor<P>, c: &mut Call) -> XenResult<u64> {
    let [op, arg, ..] = c.args;
    match op as u32 {
        h::HVMOP_set_param | h::HVMOP_get_param => {
            let mut a: h::XenHvmParam = read_arg(hv, c, arg)?;
            let t = target_domain(hv, c, a.domid)?;
            let idx = a.index as usize;
            if idx >= HVM_NR_PARAMS {
                return Err(Errno::EINVAL);
            }
            let privileged = hv.domain(c.d).is_some_and(|d| d.privileged);
            if op as u32 == h::HVMOP_get_param {
                let dom = hv.domain(t).ok_or(Errno::ESRCH)?;
                a.value = dom.hvm_params[idx];
                write_arg(hv, c, arg, &a)?;
                return Ok(0);
            }
            match a.index {
                h::HVM_PARAM_CALLBACK_IRQ => {
                    match h::HvmCallbackVia::decode(a.value) {
                        Ok(h::HvmCallbackVia::Vector(v)) if v >= 0x10 => {}
                        _ if a.value == 0 => {}
                        // GSI and PCI INTx need an emulated interrupt
                        // controller, which PVH domains do not have.
                        _ => return Err(Errno::EINVAL),
                    }
                }
                // Set up by the domain builder (the toolstack).
                h::HVM_PARAM_STORE_PFN
                | h::HVM_PARAM_STORE_EVTCHN
                | h::HVM_PARAM_CONSOLE_PFN
                | h::HVM_PARAM_CONSOLE_EVTCHN
                    if !privileged =>
                {
                    return Err(Errno::EPERM);
                }
                _ if !privileged => return Err(Errno::EPERM),
                _ => {}
            }
            hv.domain_mut(t).ok_or(Errno::ESRCH)?.hvm_params[idx] = a.value;
            if a.index == h::HVM_PARAM_CALLBACK_IRQ && t == c.d {
                // Among the first things PV drivers do: the guest's mode
                // now decides the layout of its shared state (as Xen).
                hv.latch_shinfo_size(t, c.long);
            }
            Ok(0)
        }
        h::HVMOP_set_evtchn_upcall_vector => {
            let a: h::XenHvmEvtchnUpcallVector = read_arg(hv, c, arg)?;
            if a.vector < 0x10 {
                return Err(Errno::EINVAL);
            }
            let dom = hv.domain_mut(c.d).ok_or(Errno::ESRCH)?;
            let v = dom.vcpus.get_mut(a.vcpu as usize).ok_or(Errno::ENOENT)?;
            v.upcall_vector = Some(a.vector);
            Ok(0)
        }
        h::HVMOP_get_time => {
            let a = h::XenHvmGetTime {
                now: hv.platform.now_ns(),
            };
            write_arg(hv, c, arg, &a)?;
            Ok(0)
        }
        // Only meaningful with shadow paging; Xen answers -ENOSYS too.
        h::HVMOP_pagetable_dying => Err(Errno::ENOSYS),
        _ => Err(Errno::ENOSYS),
    }
}
