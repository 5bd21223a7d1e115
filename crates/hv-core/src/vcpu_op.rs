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
        vc::VCPUOP_initialise => {
            // The same 128 bytes for 32- and 64-bit callers.
            let ctx: vc::VcpuHvmContext = read_arg(hv, c, arg)?;
            let features = crate::guest_state::GuestCpu::from_cpuid(|leaf, sub| {
                crate::exits::cpuid(hv, c.d, v, leaf, sub)
            });
            let ctx = check_hvm_context(&ctx, &features)?;
            let dom = hv.domain_mut(c.d).ok_or(Errno::ESRCH)?;
            let vc = &mut dom.vcpus[v as usize];
            // Xen: once a vCPU has state (running, or initialised and not
            // yet up), `-EEXIST`.
            if vc.state != VcpuState::Offline || vc.initialised.is_some() {
                return Err(Errno::EEXIST);
            }
            vc.initialised = Some(ctx);
            Ok(0)
        }
        vc::VCPUOP_up => {
            let dom = hv.domain_mut(c.d).ok_or(Errno::ESRCH)?;
            let vc = &mut dom.vcpus[v as usize];
            if vc.state != VcpuState::Offline {
                // Up already: nothing to do (Xen's test_and_clear of
                // `_VPF_down` finds it clear).
                return Ok(0);
            }
            let ctx = vc.initialised.take().ok_or(Errno::EINVAL)?;
            hv.starts.push((c.d, v, crate::hv::VcpuStart::Context(ctx)));
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
            let virt = hv.guest_virt(c.d, c.mode).ok_or(Errno::ESRCH)?;
            let deadline = singleshot_arg(&virt, c, arg)?;
            set_singleshot(hv, c.d, v, Some(deadline));
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

/// `X86_EFLAGS_ALL`: every architecturally defined RFLAGS bit.
const EFLAGS_ALL: u64 = 0x003F_7FD5;

/// Checks a `VCPUOP_initialise` context as Xen's `arch_set_info_hvm_guest`
/// does (segments, EIP within CS, DPLs, EFER.LMA only with LME; for the
/// 64-bit mode a canonical RIP, paging, PAE and LME; CR4 and EFER bits the
/// guest's CPUID offers), and also refuses what would only fail at VM entry
/// (CR0 bits 63:32, PG without PE, NW without CD, long-mode paging without
/// PAE): Xen lets those through to a failed entry and a dead domain. Returns
/// the context to start from: RFLAGS reduced to its defined bits, EFER.LMA
/// set where LME and PG are (Xen sets it with LME alone, paging or not).
pub fn check_hvm_context(
    ctx: &vc::VcpuHvmContext,
    cpu: &crate::guest_state::GuestCpu,
) -> XenResult<vc::VcpuHvmContext> {
    const PE: u64 = 1;
    const NW: u64 = 1 << 29;
    const CD: u64 = 1 << 30;
    const PG: u64 = 1 << 31;
    const PAE: u64 = 1 << 5;
    const LME: u64 = 1 << 8;
    const LMA: u64 = 1 << 10;
    if ctx.pad != 0 {
        return Err(Errno::EINVAL);
    }
    let (cr0, cr4, mut efer, out) = match ctx.mode {
        vc::VCPU_HVM_MODE_32B => {
            let mut r = ctx.x86_32();
            if r.pad1 != 0 || r.pad2 != [0; 3] {
                return Err(Errno::EINVAL);
            }
            let cs = check_segment(Seg::Cs, &mut r.cs_ar)?;
            let ds = check_segment(Seg::Data, &mut r.ds_ar)?;
            let ss = check_segment(Seg::Ss, &mut r.ss_ar)?;
            let es = check_segment(Seg::Data, &mut r.es_ar)?;
            check_segment(Seg::Tr, &mut r.tr_ar)?;
            let limit = if r.cs_ar & (1 << 11) != 0 {
                (r.cs_limit << 12) | 0xFFF
            } else {
                r.cs_limit
            };
            let dpl = |ar: u16| (ar >> 5) & 3;
            let present = |ar: u16| ar & 0x80 != 0;
            if r.eip > limit
                || dpl(ss) != dpl(cs)
                || (present(ds) && dpl(ds) > dpl(cs))
                || (present(es) && dpl(es) > dpl(cs))
                || (r.efer & LMA != 0 && r.efer & LME == 0)
            {
                return Err(Errno::EINVAL);
            }
            r.eflags = ((u64::from(r.eflags) & EFLAGS_ALL) | 2) as u32;
            let out = vc::VcpuHvmContext::new_32(r);
            (u64::from(r.cr0), u64::from(r.cr4), r.efer, out)
        }
        vc::VCPU_HVM_MODE_64B => {
            let mut r = ctx.x86_64();
            let canonical = ((r.rip as i64) << 16 >> 16) as u64 == r.rip;
            if !canonical || r.cr0 & PG == 0 || r.cr4 & PAE == 0 || r.efer & LME == 0 {
                return Err(Errno::EINVAL);
            }
            r.rflags = (r.rflags & EFLAGS_ALL) | 2;
            let out = vc::VcpuHvmContext::new_64(r);
            (r.cr0, r.cr4, r.efer, out)
        }
        _ => return Err(Errno::EINVAL),
    };
    if cr4 & !cpu.cr4_valid() != 0 || efer & !cpu.efer_valid() != 0 {
        return Err(Errno::EINVAL);
    }
    if cr0 >> 32 != 0
        || (cr0 & PG != 0 && cr0 & PE == 0)
        || (cr0 & NW != 0 && cr0 & CD == 0)
        || (efer & LME != 0 && cr0 & PG != 0 && cr4 & PAE == 0)
    {
        return Err(Errno::EINVAL);
    }
    efer &= !LMA;
    if efer & LME != 0 && cr0 & PG != 0 {
        efer |= LMA;
    }
    let mut out = out;
    match out.mode {
        vc::VCPU_HVM_MODE_32B => {
            let mut r = out.x86_32();
            r.efer = efer;
            out = vc::VcpuHvmContext::new_32(r);
        }
        _ => {
            let mut r = out.x86_64();
            r.efer = efer;
            out = vc::VcpuHvmContext::new_64(r);
        }
    }
    Ok(out)
}

/// Which segment register [`check_segment`] looks at.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seg {
    Cs,
    Ss,
    /// DS or ES.
    Data,
    Tr,
}

/// Xen's `check_segment` on the packed 12-bit attributes `ar`, after
/// setting the accessed (busy for TR) bit of a present segment as Xen
/// does. Returns the attributes.
fn check_segment(seg: Seg, ar: &mut u16) -> XenResult<u16> {
    const S: u16 = 1 << 4;
    const P: u16 = 1 << 7;
    if *ar & 0xF000 != 0 {
        return Err(Errno::EINVAL);
    }
    if *ar == 0 {
        return if seg == Seg::Data {
            Ok(0)
        } else {
            Err(Errno::EINVAL)
        };
    }
    if *ar & P != 0 {
        *ar |= if seg == Seg::Tr { 2 } else { 1 };
    }
    let ty = *ar & 0xF;
    let ok = match seg {
        // A busy 32-bit TSS, not a code or data segment.
        Seg::Tr => *ar & S == 0 && ty == 0xB,
        _ if *ar & S == 0 => false,
        Seg::Cs => ty & 0x8 != 0,
        Seg::Ss => ty & 0x8 == 0 && ty & 0x2 != 0,
        Seg::Data => ty & 0x8 == 0 || ty & 0x2 != 0,
    };
    if !ok || *ar & P == 0 {
        return Err(Errno::EINVAL);
    }
    Ok(*ar)
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
    if let Some(dom) = hv.domains.get_mut(&d.0) {
        singleshot_in(dom, &hv.timers, v, deadline);
    }
}

/// [`set_singleshot`] on the domain itself and the timer heap (a leaf
/// lock), for the domain-local path too.
pub(crate) fn singleshot_in(
    dom: &mut crate::domain::Domain,
    timers: &crate::lockorder::OrderedMutex<crate::time::TimerHeap>,
    v: u32,
    deadline: Option<u64>,
) {
    let d = dom.id;
    let Some(vc) = dom.vcpus.get_mut(v as usize) else {
        return;
    };
    vc.singleshot = deadline;
    if let Some(deadline) = deadline {
        timers.lock().insert(crate::time::TimerEntry {
            deadline,
            dom: d,
            vcpu: v,
            kind: TimerKind::Singleshot,
        });
    }
}

/// The deadline of `VCPUOP_set_singleshot_timer`'s argument at `arg`, in
/// the caller's layout. `VCPU_SSHOTTMR_future` is ignored, as in Xen since
/// 4.18 (and Debian's 4.17): a deadline in the past fires at once.
pub(crate) fn singleshot_arg(
    virt: &crate::pagewalk::GuestVirt<'_>,
    c: &Call,
    arg: u64,
) -> XenResult<u64> {
    Ok(if c.long {
        let a: vc::VcpuSetSingleshotTimer = virt.read_obj(arg)?;
        a.timeout_abs_ns
    } else {
        let a: cm::CompatVcpuSetSingleshotTimer = virt.read_obj(arg)?;
        a.timeout_abs_ns
    })
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
        if let Some(dom) = self.domains.get_mut(&d.0) {
            set_runstate_in(dom, &*self.platform, now, v, state);
        }
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
}

/// [`Hypervisor::set_runstate`] on the domain itself, at time `now`.
pub(crate) fn set_runstate_in(
    dom: &mut crate::domain::Domain,
    frames: &dyn crate::platform::FrameAccess,
    now: u64,
    v: u32,
    state: i32,
) {
    let Some(vc) = dom.vcpus.get_mut(v as usize) else {
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
    publish_runstate_in(dom, frames, v);
}

/// Copies vCPU `v`'s runstate into its registered area, with the update
/// flag protocol when the guest asked for it.
pub(crate) fn publish_runstate_in(
    dom: &crate::domain::Domain,
    frames: &dyn crate::platform::FrameAccess,
    v: u32,
) {
    let flag = dom.vm_assist & (1 << xen_abi::xen::VMASST_TYPE_runstate_update_flag) != 0;
    let compat = dom.has_32bit_shinfo;
    let Some(vc) = dom.vcpus.get(v as usize) else {
        return;
    };
    let (Some(la), mode, info) = (vc.runstate_area, vc.runstate_mode, vc.runstate) else {
        return;
    };
    let virt = crate::pagewalk::GuestVirt {
        mem: crate::guestmem::GuestMem::new(&dom.p2m, frames),
        mode,
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
        .get_scrubbed(gfn, &*hv.platform)
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
