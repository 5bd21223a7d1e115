//! Hypercall entry and dispatch, and the small hypercalls.
//!
//! 64-bit callers pass the number in RAX and arguments in RDI, RSI, RDX,
//! R10, R8; 32-bit callers use EAX and EBX, ECX, EDX, ESI, EDI. The result
//! goes back in RAX as a value or `-errno`. Calls from CPL > 0 get
//! `-EPERM`. A handler that has more work than one exit should do (a long
//! batch) updates its argument registers and asks for the instruction to be
//! re-executed (`Hypervisor::restart`), Xen's continuation.

use alloc::vec::Vec;

use xen_abi::xen as x;

use crate::arch::VcpuBackend;
use crate::domain::{Domain, ShutdownReason, VcpuState};
use crate::guestmem::GuestMem;
use crate::hv::{ExitAction, Hypervisor};
use crate::pagewalk::GuestVirt;
use crate::pagewalk::PagingMode;
use crate::platform::FrameAccess;
use crate::platform::Platform;
use crate::types::{DomId, Errno, XenResult};

/// One hypercall in progress.
#[derive(Clone, Copy, Debug)]
pub struct Call {
    /// The calling domain.
    pub d: DomId,
    /// The calling vCPU.
    pub v: u32,
    /// Its paging mode (arguments are linear addresses).
    pub mode: PagingMode,
    /// The five arguments.
    pub args: [u64; 5],
    /// The 64-bit register convention (else the 32-bit one).
    pub long: bool,
}

/// Longest console write handled per exit.
pub const CONSOLE_CHUNK: u64 = 4096;

/// Handles a `VMCALL`/`VMMCALL` exit.
pub(crate) fn entry<P: Platform>(
    hv: &mut Hypervisor<P>,
    d: DomId,
    v: u32,
    cpu: &mut dyn VcpuBackend,
) -> ExitAction {
    let exit = crate::arch::VmExit::Hypercall;
    if cpu.cpl() != 0 {
        let r = Errno::EPERM.to_ret();
        cpu.gprs_mut().rax = if cpu.in_64bit_mode() {
            r
        } else {
            r & 0xFFFF_FFFF
        };
        return crate::exits::skip(hv, d, cpu, &exit);
    }
    let (nr, mut call) = decode(d, v, cpu);
    let long = call.long;
    let ret = dispatch(hv, nr, &mut call);
    if hv.restart {
        // Continuation: same instruction again with the updated arguments.
        let gm = cpu.gprs_mut();
        if long {
            [gm.rdi, gm.rsi, gm.rdx, gm.r10, gm.r8] = call.args;
        } else {
            [gm.rbx, gm.rcx, gm.rdx, gm.rsi, gm.rdi] = call.args;
        }
        return hv.action;
    }
    set_result(cpu, long, ret);
    let a = crate::exits::skip(hv, d, cpu, &exit);
    if a != ExitAction::Resume {
        a
    } else {
        hv.action
    }
}

/// The hypercall number and the call, from the registers of the caller's
/// convention.
pub(crate) fn decode(d: DomId, v: u32, cpu: &dyn VcpuBackend) -> (u64, Call) {
    let long = cpu.in_64bit_mode();
    let g = *cpu.gprs();
    let (nr, args) = if long {
        (g.rax, [g.rdi, g.rsi, g.rdx, g.r10, g.r8])
    } else {
        let m = 0xFFFF_FFFF;
        (
            g.rax & m,
            [g.rbx & m, g.rcx & m, g.rdx & m, g.rsi & m, g.rdi & m],
        )
    };
    let call = Call {
        d,
        v,
        mode: crate::hv::paging_mode(cpu),
        args,
        long,
    };
    (nr, call)
}

/// Writes a hypercall's result to RAX in the caller's convention.
pub(crate) fn set_result(cpu: &mut dyn VcpuBackend, long: bool, ret: XenResult<u64>) {
    let rax = match ret {
        Ok(v) => v,
        Err(e) => e.to_ret(),
    };
    cpu.gprs_mut().rax = if long { rax } else { rax & 0xFFFF_FFFF };
}

/// Decodes and runs hypercall `nr`.
pub fn dispatch<P: Platform>(hv: &mut Hypervisor<P>, nr: u64, c: &mut Call) -> XenResult<u64> {
    let Ok(nr) = u32::try_from(nr) else {
        return Err(Errno::ENOSYS);
    };
    match nr {
        x::__HYPERVISOR_console_io => console_io(hv, c),
        x::__HYPERVISOR_xen_version => {
            let dom = hv.domains.get(&c.d.0).ok_or(Errno::ESRCH)?;
            xen_version(dom, &*hv.platform, c)
        }
        x::__HYPERVISOR_vm_assist => vm_assist(hv, c),
        x::__HYPERVISOR_sched_op => sched_op(hv, c),
        x::__HYPERVISOR_memory_op => crate::memory_op::memory_op(hv, c),
        x::__HYPERVISOR_hvm_op => crate::hvm_op::hvm_op(hv, c),
        x::__HYPERVISOR_vcpu_op => crate::vcpu_op::vcpu_op(hv, c),
        x::__HYPERVISOR_event_channel_op => crate::evtchn_op::event_channel_op(hv, c),
        x::__HYPERVISOR_grant_table_op => crate::gnttab_op::grant_table_op(hv, c),
        x::__HYPERVISOR_domctl => crate::domctl::domctl(hv, c),
        x::__HYPERVISOR_physdev_op => crate::physdev::physdev_op(hv, c),
        x::__HYPERVISOR_sysctl => crate::domctl::sysctl(hv, c),
        x::__HYPERVISOR_set_timer_op => {
            let deadline = set_timer_op_deadline(c);
            crate::vcpu_op::set_singleshot(hv, c.d, c.v, (deadline != 0).then_some(deadline));
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// `set_timer_op`'s deadline (0 stops the timer): 64-bit callers pass it
/// in one register; 32-bit callers split it over EBX (low) and ECX (high).
pub(crate) fn set_timer_op_deadline(c: &Call) -> u64 {
    if c.long {
        c.args[0]
    } else {
        c.args[0] | (c.args[1] << 32)
    }
}

/// Resolves a `domid_t` argument: `DOMID_SELF` or the caller's own id, or
/// any domain for the privileged.
pub(crate) fn target_domain<P: Platform>(
    hv: &Hypervisor<P>,
    c: &Call,
    domid: u16,
) -> XenResult<DomId> {
    if domid == DomId::SELF || domid == c.d.0 {
        return Ok(c.d);
    }
    let me = hv.domain(c.d).ok_or(Errno::ESRCH)?;
    if !me.privileged {
        return Err(Errno::EPERM);
    }
    if hv.domain(DomId(domid)).is_none() {
        return Err(Errno::ESRCH);
    }
    Ok(DomId(domid))
}

/// Reads a struct argument at linear address `la`.
pub(crate) fn read_arg<P: Platform, T: zerocopy::FromBytes + zerocopy::IntoBytes>(
    hv: &Hypervisor<P>,
    c: &Call,
    la: u64,
) -> XenResult<T> {
    hv.guest_virt(c.d, c.mode).ok_or(Errno::ESRCH)?.read_obj(la)
}

/// Writes a struct argument back to linear address `la`.
pub(crate) fn write_arg<P: Platform, T: zerocopy::IntoBytes + zerocopy::Immutable>(
    hv: &Hypervisor<P>,
    c: &Call,
    la: u64,
    v: &T,
) -> XenResult<()> {
    hv.guest_virt(c.d, c.mode)
        .ok_or(Errno::ESRCH)?
        .write_obj(la, v)
}

/// Appends guest console output; complete lines go to the platform.
pub(crate) fn console_put<P: Platform>(hv: &mut Hypervisor<P>, d: DomId, bytes: &[u8]) {
    let Some(dom) = hv.domains.get_mut(&d.0) else {
        return;
    };
    for &b in bytes {
        if b == b'\n' || dom.console_line.len() >= 256 {
            let line = core::mem::take(&mut dom.console_line);
            hv.platform.console_write(d, &line);
            if b == b'\n' {
                continue;
            }
        }
        if b != b'\r' {
            dom.console_line.push(b);
        }
    }
}

impl<P: Platform> Hypervisor<P> {
    /// Emits a partial console line of `d` (at shutdown).
    pub fn flush_console(&mut self, d: DomId) {
        if let Some(dom) = self.domains.get_mut(&d.0)
            && !dom.console_line.is_empty()
        {
            let line = core::mem::take(&mut dom.console_line);
            self.platform.console_write(d, &line);
        }
    }
}

fn console_io<P: Platform>(hv: &mut Hypervisor<P>, c: &mut Call) -> XenResult<u64> {
    let [cmd, count, buf, ..] = c.args;
    match cmd as u32 {
        x::CONSOLEIO_write => {
            let n = count.min(CONSOLE_CHUNK);
            let mut data = alloc::vec![0u8; n as usize];
            hv.guest_virt(c.d, c.mode)
                .ok_or(Errno::ESRCH)?
                .read(buf, &mut data)?;
            console_put(hv, c.d, &data);
            if count > n {
                c.args[1] = count - n;
                c.args[2] = buf.wrapping_add(n);
                hv.restart = true;
            }
            Ok(0)
        }
        // No console input yet: nothing to read.
        x::CONSOLEIO_read => {
            if hv.domain(c.d).is_some_and(|d| d.privileged) {
                Ok(0)
            } else {
                Err(Errno::EPERM)
            }
        }
        _ => Err(Errno::EINVAL),
    }
}

/// The XENFEAT bits a PVH domain sees.
pub fn features(privileged: bool) -> u32 {
    use xen_abi::features as f;
    let mut m = (1 << f::XENFEAT_writable_page_tables)
        | (1 << f::XENFEAT_auto_translated_physmap)
        | (1 << f::XENFEAT_hvm_callback_vector)
        | (1 << f::XENFEAT_hvm_safe_pvclock)
        | (1 << f::XENFEAT_linux_rsdp_unrestricted);
    if privileged {
        m |= 1 << f::XENFEAT_dom0;
    }
    m
}

/// `xen_version`: reads only the caller's own domain, so the domain-local
/// path ([`crate::local`]) runs it too.
pub(crate) fn xen_version(dom: &Domain, frames: &dyn FrameAccess, c: &Call) -> XenResult<u64> {
    use xen_abi::version as ver;
    let [cmd, arg, ..] = c.args;
    let (maj, min) = crate::exits::XEN_VERSION;
    let privileged = dom.privileged;
    let virt = GuestVirt {
        mem: GuestMem::new(&dom.p2m, frames),
        mode: c.mode,
    };
    let put = |s: &[u8], len: usize| -> XenResult<u64> {
        let mut b = alloc::vec![0u8; len];
        let n = s.len().min(len - 1);
        b[..n].copy_from_slice(&s[..n]);
        virt.write(arg, &b)?;
        Ok(0)
    };
    match cmd as u32 {
        ver::XENVER_version => Ok(((maj << 16) | min) as u64),
        ver::XENVER_extraversion => put(b".0-rust", 16),
        ver::XENVER_capabilities => put(b"hvm-3.0-x86_64 hvm-3.0-x86_32 hvm-3.0-x86_32p", 1024),
        ver::XENVER_changeset => put(b"unavailable", 64),
        ver::XENVER_compile_info => {
            // compiler[64], compile_by[16], compile_domain[32], compile_date[32]
            let mut b = [0u8; 144];
            b[..5].copy_from_slice(b"rustc");
            virt.write(arg, &b)?;
            Ok(0)
        }
        ver::XENVER_platform_parameters => {
            // An `unsigned long`: 8 bytes, or 4 for 32-bit callers, which
            // get 0 when not PV (Xen's compat_platform_parameters).
            if c.long {
                virt.write_obj(arg, &0xFFFF_8000_0000_0000u64)?;
            } else {
                virt.write_obj(arg, &0u32)?;
            }
            Ok(0)
        }
        ver::XENVER_get_features => {
            let mut fi: xen_abi::version::XenFeatureInfo = virt.read_obj(arg)?;
            fi.submap = if fi.submap_idx == 0 {
                features(privileged)
            } else {
                0
            };
            virt.write_obj(arg, &fi)?;
            Ok(0)
        }
        ver::XENVER_pagesize => Ok(4096),
        ver::XENVER_guest_handle => put(b"", 16),
        ver::XENVER_commandline => {
            if !privileged {
                return Err(Errno::EPERM);
            }
            put(b"", 1024)
        }
        _ => Err(Errno::ENOSYS),
    }
}

fn vm_assist<P: Platform>(hv: &mut Hypervisor<P>, c: &mut Call) -> XenResult<u64> {
    let [cmd, ty, ..] = c.args;
    // HVM domains may only use the runstate update flag.
    if ty != x::VMASST_TYPE_runstate_update_flag as u64 {
        return Err(Errno::EINVAL);
    }
    let dom = hv.domain_mut(c.d).ok_or(Errno::ESRCH)?;
    match cmd as u32 {
        x::VMASST_CMD_enable => dom.vm_assist |= 1 << ty,
        x::VMASST_CMD_disable => dom.vm_assist &= !(1 << ty),
        _ => return Err(Errno::ENOSYS),
    }
    Ok(0)
}

/// Most ports one `SCHEDOP_poll` may wait on (Xen's limit is the domain's
/// port count; a small bound keeps the wake-up check cheap).
pub const MAX_POLL_PORTS: u32 = 128;

fn sched_op<P: Platform>(hv: &mut Hypervisor<P>, c: &mut Call) -> XenResult<u64> {
    use xen_abi::sched as s;
    let [cmd, arg, ..] = c.args;
    match cmd as u32 {
        s::SCHEDOP_yield => {
            hv.action = ExitAction::Yield;
            Ok(0)
        }
        s::SCHEDOP_block => {
            hv.action = ExitAction::Block;
            Ok(0)
        }
        s::SCHEDOP_shutdown => {
            let a: s::SchedShutdown = read_arg(hv, c, arg)?;
            let reason = ShutdownReason::from_code(a.reason).ok_or(Errno::EINVAL)?;
            hv.shutdown(c.d, reason);
            hv.action = ExitAction::Dead;
            Ok(0)
        }
        s::SCHEDOP_shutdown_code => {
            let _a: s::SchedShutdown = read_arg(hv, c, arg)?;
            Ok(0)
        }
        s::SCHEDOP_remote_shutdown => {
            let a: s::SchedRemoteShutdown = read_arg(hv, c, arg)?;
            if !hv.domain(c.d).is_some_and(|d| d.privileged) {
                return Err(Errno::EPERM);
            }
            let reason = ShutdownReason::from_code(a.reason).ok_or(Errno::EINVAL)?;
            let t = DomId(a.domain_id);
            if hv.domain(t).is_none() {
                return Err(Errno::ESRCH);
            }
            hv.shutdown(t, reason);
            if t == c.d {
                hv.action = ExitAction::Dead;
            }
            Ok(0)
        }
        s::SCHEDOP_poll => {
            let a: s::SchedPoll = if c.long {
                read_arg(hv, c, arg)?
            } else {
                let a: xen_abi::compat::CompatSchedPoll = read_arg(hv, c, arg)?;
                s::SchedPoll {
                    ports: a.ports.into(),
                    nr_ports: a.nr_ports,
                    pad: 0,
                    timeout: a.timeout,
                }
            };
            if a.nr_ports > MAX_POLL_PORTS {
                return Err(Errno::EINVAL);
            }
            let mut ports = Vec::with_capacity(a.nr_ports as usize);
            let virt = hv.guest_virt(c.d, c.mode).ok_or(Errno::ESRCH)?;
            for i in 0..a.nr_ports as u64 {
                let mut b = [0u8; 4];
                virt.read(a.ports.wrapping_add(i * 4), &mut b)?;
                ports.push(u32::from_le_bytes(b));
            }
            let now = hv.now();
            let dom = hv.domain(c.d).ok_or(Errno::ESRCH)?;
            let t = crate::evtchn::Target {
                frames: &*hv.platform,
                shared_info: dom.shared_info,
                vcpu_info: &dom.vcpu_info,
                compat: dom.has_32bit_shinfo,
            };
            for &p in &ports {
                if dom.evtchn.get(p).is_none() {
                    return Err(Errno::EINVAL);
                }
                if dom.evtchn.is_pending(&t, p) {
                    return Ok(0);
                }
            }
            if a.timeout != 0 && a.timeout <= now {
                return Ok(0);
            }
            let vc = hv
                .domain_mut(c.d)
                .and_then(|d| d.vcpus.get_mut(c.v as usize))
                .ok_or(Errno::ESRCH)?;
            vc.state = VcpuState::Polling;
            vc.poll_ports = ports;
            vc.wake_at = (a.timeout != 0).then_some(a.timeout);
            if a.timeout != 0 {
                hv.arm_timer(c.d, c.v, a.timeout, crate::time::TimerKind::PollTimeout);
            }
            hv.action = ExitAction::Block;
            Ok(0)
        }
        s::SCHEDOP_watchdog | s::SCHEDOP_pin_override => Err(Errno::ENOSYS),
        _ => Err(Errno::ENOSYS),
    }
}
