//! VM exit handling: CPUID policy, MSRs, port I/O, HLT and the rest.

use alloc::vec::Vec;

use crate::arch::{ControlReg, Event, IoExit, VcpuBackend, VmExit, X86_EXC_GP};
use crate::domain::ShutdownReason;
use crate::guest_state::{self, CrState, GuestCpu};
use crate::guestmem::GuestMem;
use crate::hv::{ExitAction, Hypervisor};
use crate::platform::Platform;
use crate::types::DomId;
use crate::vlapic::{APIC_BASE_ADDR, ApicMode, Vlapic, WriteEffect};

/// The MSR through which a guest asks for the hypercall page
/// (CPUID base+2 EBX).
pub const XEN_HYPERCALL_MSR: u32 = 0x4000_0000;
/// Xen version reported by CPUID and `xen_version` (4.17).
pub const XEN_VERSION: (u32, u32) = (4, 17);
/// The debug console port (Bochs/QEMU `debugcon`).
pub const DEBUG_CONSOLE_PORT: u16 = 0xE9;
/// The guest ACPI sleep control register (see the image's guest_acpi).
pub const SLEEP_CONTROL_PORT: u16 = 0xB004;
/// PIT channel 2's data port.
const PIT_CH2_PORT: u16 = 0x42;
/// The PIT's mode/command port.
const PIT_CMD_PORT: u16 = 0x43;
/// The NMI status / speaker gate port (PIT channel 2's gate and OUT2).
const PIT_GATE_PORT: u16 = 0x61;
/// Most string-I/O iterations done per exit before the instruction is
/// re-executed (keeps one exit short).
pub const MAX_STRING_IO: u64 = 4096;

const EFER_MSR: u32 = 0xC000_0080;
const APIC_BASE_MSR: u32 = 0x1B;
const PAT_MSR: u32 = 0x277;

pub(crate) fn handle<P: Platform>(
    hv: &mut Hypervisor<P>,
    d: DomId,
    v: u32,
    cpu: &mut dyn VcpuBackend,
    exit: VmExit,
) -> ExitAction {
    match exit {
        VmExit::Hypercall => crate::hypercall::entry(hv, d, v, cpu),
        VmExit::Cpuid => {
            let g = cpu.gprs();
            let (leaf, sub) = (g.rax as u32, g.rcx as u32);
            let mut r = cpuid(hv, d, v, leaf, sub);
            // The bits that follow the vCPU's own state: OSXSAVE is its
            // CR4.OSXSAVE, leaf 0xD EBX the save area size of its XCR0.
            if leaf == 1 && r[2] & (1 << 26) != 0 {
                let on = cpu.control(ControlReg::Cr4) & guest_state::cr4::OSXSAVE != 0;
                r[2] = (r[2] & !(1 << 27)) | if on { 1 << 27 } else { 0 };
            }
            if leaf == 0xD && sub <= 1 && xcr0_offer(hv) != 0 {
                r[1] = xsave_size(hv, cpu.control(ControlReg::Xcr0));
            }
            let g = cpu.gprs_mut();
            g.rax = r[0] as u64;
            g.rbx = r[1] as u64;
            g.rcx = r[2] as u64;
            g.rdx = r[3] as u64;
            skip(hv, d, cpu, &exit)
        }
        VmExit::MsrRead { msr } => match rdmsr(hv, d, v, cpu, msr) {
            Some(val) => {
                let g = cpu.gprs_mut();
                g.rax = val & 0xFFFF_FFFF;
                g.rdx = val >> 32;
                skip(hv, d, cpu, &exit)
            }
            None => gp(cpu),
        },
        VmExit::MsrWrite { msr, value } => {
            if wrmsr(hv, d, v, cpu, msr, value) {
                skip(hv, d, cpu, &exit)
            } else {
                gp(cpu)
            }
        }
        VmExit::Io(io) => {
            let done = port_io(hv, d, cpu, io);
            if done {
                skip(hv, d, cpu, &exit)
            } else {
                ExitAction::Resume
            }
        }
        VmExit::Hlt => {
            let a = skip(hv, d, cpu, &exit);
            if a != ExitAction::Resume {
                return a;
            }
            // handle_exit turns Block into Resume when something is pending.
            ExitAction::Block
        }
        VmExit::ExternalInterrupt | VmExit::TimerExpired => ExitAction::Resume,
        VmExit::InterruptWindow => {
            cpu.set_interrupt_window(false);
            ExitAction::Resume
        }
        VmExit::Exception { vector, error_code } => {
            // Only #MC and the like are intercepted: give them back.
            cpu.inject(Event::Exception { vector, error_code });
            ExitAction::Resume
        }
        VmExit::Xsetbv => {
            let g = cpu.gprs();
            let (idx, val) = (g.rcx as u32, (g.rdx << 32) | (g.rax & 0xFFFF_FFFF));
            let features = guest_cpu(hv, d, v);
            match guest_state::check_xcr0(&cr_state(cpu), &features, idx, val) {
                Ok(x) => {
                    cpu.set_control(ControlReg::Xcr0, x);
                    skip(hv, d, cpu, &exit)
                }
                Err(e) => {
                    cpu.inject(e);
                    ExitAction::Resume
                }
            }
        }
        VmExit::Init | VmExit::Sipi { .. } => ExitAction::Resume,
        VmExit::Shutdown => {
            let pcpu = hv
                .domain(d)
                .and_then(|x| x.vcpus.get(v as usize))
                .map_or(u32::MAX, |x| x.pcpu);
            log::warn!(
                "{}v{}: triple fault at rip {:#x} (on CPU{})",
                d,
                v,
                cpu.rip(),
                pcpu
            );
            let g = cpu.gprs();
            log::debug!(
                "{}v{}: rsp {:#x} rsi {:#x} rdi {:#x} rcx {:#x} cr2 {:#x}",
                d,
                v,
                g.rsp,
                g.rsi,
                g.rdi,
                g.rcx,
                cpu.control(ControlReg::Cr2)
            );
            hv.crash(d, "triple fault");
            ExitAction::Dead
        }
        VmExit::NestedPageFault { gpa, access } if !access.present && hv.is_lazy(d, gpa) => {
            // The first touch of lazily zeroed RAM (p2m.rs): zero and map
            // it, then let the guest retry.
            match hv.lazy_fault(d, gpa) {
                Ok(_) => ExitAction::Resume,
                Err(_) => {
                    hv.crash(d, "no memory for nested page tables");
                    ExitAction::Dead
                }
            }
        }
        // Mapped since the fault (two vCPUs touched a lazy block at once):
        // retry.
        VmExit::NestedPageFault { gpa, access } if !access.present && hv.npt_maps(d, gpa) => {
            ExitAction::Resume
        }
        VmExit::NestedPageFault { gpa, access } if access.present => {
            // A permission fault on a mapped frame (a write to a read-only
            // grant mapping, say): nothing to emulate.
            log::warn!(
                "{}v{}: nested page fault at {:#x} ({:?}), rip {:#x}",
                d,
                v,
                gpa,
                access,
                cpu.rip()
            );
            hv.crash(d, "permission fault on mapped guest-physical memory");
            ExitAction::Dead
        }
        VmExit::NestedPageFault { gpa, access } if access.exec => {
            // Code in a hole: there is no instruction to emulate.
            log::warn!(
                "{}v{}: instruction fetch from unbacked {:#x}, rip {:#x}",
                d,
                v,
                gpa,
                cpu.rip()
            );
            hv.crash(d, "instruction fetch from unbacked guest-physical memory");
            ExitAction::Dead
        }
        VmExit::NestedPageFault { gpa, .. } => unbacked_access(hv, d, v, cpu, gpa),
        VmExit::CrAccess {
            cr: 0 | 4,
            write: true,
            gpr,
        } => cr_write(hv, d, v, cpu, exit, gpr),
        VmExit::CrAccess { .. } => {
            hv.crash(d, "unexpected control register intercept");
            ExitAction::Dead
        }
        VmExit::EntryFailed { code } => {
            log::warn!("{}v{}: VM entry failed ({:#x})", d, v, code);
            hv.crash(d, "VM entry failed");
            ExitAction::Dead
        }
        VmExit::Unhandled { code } => {
            log::warn!(
                "{}v{}: unhandled exit {:#x} at rip {:#x}",
                d,
                v,
                code,
                cpu.rip()
            );
            hv.crash(d, "unhandled exit");
            ExitAction::Dead
        }
    }
}

/// An access to guest-physical memory with nothing behind it: the
/// instruction is emulated against the null MMIO handler, as Xen's
/// `hvm_hap_nested_page_fault` does for `p2m_mmio_dm` (see
/// [`crate::emulate`]).
fn unbacked_access<P: Platform>(
    hv: &mut Hypervisor<P>,
    d: DomId,
    v: u32,
    cpu: &mut dyn VcpuBackend,
    gpa: u64,
) -> ExitAction {
    use crate::emulate::{Emulation, NullHandler, emulate_one};
    let rip = cpu.rip();
    // The xAPIC page, while this vCPU's APIC is in xAPIC mode: its
    // registers (a copy, written back after the instruction).
    let now = hv.now();
    let mut xapic = hv
        .domain(d)
        .and_then(|x| x.vcpus.get(v as usize))
        .filter(|vc| vc.vlapic.mode() == ApicMode::XApic)
        .filter(|_| gpa & !0xFFF == APIC_BASE_ADDR)
        .map(|vc| XapicPage {
            lapic: vc.vlapic.clone(),
            now,
            effects: Vec::new(),
        });
    let Some(mem) = hv.guest_mem(d) else {
        return ExitAction::Dead;
    };
    let done = match &mut xapic {
        Some(page) => emulate_one(cpu, mem, page),
        None => emulate_one(cpu, mem, &mut NullHandler),
    };
    if let Some(page) = xapic {
        if let Some(vc) = hv.domain_mut(d).and_then(|x| x.vcpus.get_mut(v as usize)) {
            vc.vlapic = page.lapic;
        }
        for e in page.effects {
            match e {
                WriteEffect::None => {}
                WriteEffect::SendIcr(icr) => hv.send_icr(d, v, icr),
                WriteEffect::Timer(ns) => hv.lapic_timer(d, v, ns),
            }
        }
    }
    match done {
        Emulation::Okay | Emulation::Retry => ExitAction::Resume,
        Emulation::Exception(e) => {
            log::debug!(
                "{}v{}: unbacked access at {:#x}, rip {:#x}: {:?} for the guest",
                d,
                v,
                gpa,
                rip,
                e
            );
            ExitAction::Resume
        }
        Emulation::Unhandleable(why) => {
            log::warn!(
                "{}v{}: unbacked access at {:#x}, rip {:#x}: {}",
                d,
                v,
                gpa,
                rip,
                why
            );
            hv.crash(d, why);
            ExitAction::Dead
        }
    }
}

/// The features the guest's CPUID offers, which decide the control bits
/// it may set.
fn guest_cpu<P: Platform>(hv: &Hypervisor<P>, d: DomId, v: u32) -> GuestCpu {
    GuestCpu::from_cpuid(|leaf, sub| cpuid(hv, d, v, leaf, sub))
}

/// The control state the checks of [`guest_state`] depend on.
fn cr_state(cpu: &dyn VcpuBackend) -> CrState {
    CrState {
        cr0: cpu.control(ControlReg::Cr0),
        cr3: cpu.control(ControlReg::Cr3),
        cr4: cpu.control(ControlReg::Cr4),
        efer: cpu.control(ControlReg::Efer),
        code64: cpu.in_64bit_mode(),
        cpl: cpu.cpl(),
    }
}

/// Checks a write of `value` to CR0 or CR4 (`n`) and loads it, or
/// returns the exception the instruction raises instead. When the write
/// leaves PAE paging on outside long mode, the four PDPTEs at CR3 are read
/// from guest memory `mem` (a present one with reserved bits set is
/// `#GP(0)`, as on hardware) and handed to the backend.
fn apply_cr_write(
    cpu: &mut dyn VcpuBackend,
    mem: GuestMem<'_>,
    features: &GuestCpu,
    n: u8,
    value: u64,
) -> Result<(), Event> {
    let s = cr_state(cpu);
    // Other control registers are not intercepted for writing; a write
    // the hardware reported anyway is refused as reserved.
    let (cr0_write, cr4_write) = match n {
        0 => (Some(guest_state::check_cr0(&s, value)?), None),
        4 => (None, Some(guest_state::check_cr4(&s, features, value)?)),
        _ => return Err(guest_state::GP0),
    };
    let cr0 = cr0_write.map_or(s.cr0, |w| w.cr0);
    let cr4 = cr4_write.unwrap_or(s.cr4);
    let pae_paging = cr0 & guest_state::cr0::PG != 0 && cr4 & guest_state::cr4::PAE != 0;
    let pdptes = if pae_paging && s.efer & guest_state::efer::LME == 0 {
        let mut e = [0u64; 4];
        for (i, pdpte) in e.iter_mut().enumerate() {
            let at = (s.cr3 & 0xFFFF_FFE0) + 8 * i as u64;
            *pdpte = mem.read_obj::<u64>(at).map_err(|_| guest_state::GP0)?;
        }
        Some(guest_state::check_pdptes(e)?)
    } else {
        None
    };
    if let Some(w) = cr0_write {
        // CR0 first: a backend that derives LMA from CR0.PG and EFER.LME
        // (VMX) then agrees with the EFER loaded after it.
        cpu.set_control(ControlReg::Cr0, w.cr0);
        if w.efer != s.efer {
            cpu.set_control(ControlReg::Efer, w.efer);
        }
    }
    if let Some(v) = cr4_write {
        cpu.set_control(ControlReg::Cr4, v);
    }
    if let Some(e) = pdptes {
        cpu.set_pdptes(e);
    }
    Ok(())
}

/// A guest write to CR0 or CR4 (intercepted on both vendors): checked
/// against the CPU model the guest is offered, as Xen's `hvm_set_cr0` and
/// `hvm_set_cr4` check it; an illegal value raises `#GP(0)` at the
/// instruction. With the source register reported (VMX, SVM with
/// DecodeAssists) the value is read from it; otherwise the instruction is
/// decoded (see [`crate::emulate::emulate_cr_write`]).
fn cr_write<P: Platform>(
    hv: &mut Hypervisor<P>,
    d: DomId,
    v: u32,
    cpu: &mut dyn VcpuBackend,
    exit: VmExit,
    gpr: Option<u8>,
) -> ExitAction {
    let VmExit::CrAccess { cr, .. } = exit else {
        return ExitAction::Resume;
    };
    let features = guest_cpu(hv, d, v);
    let Some(mem) = hv.guest_mem(d) else {
        return ExitAction::Dead;
    };
    if let Some(r) = gpr {
        let mut value = cpu.gprs().get(r);
        if !cpu.in_64bit_mode() {
            value &= 0xFFFF_FFFF;
        }
        return match apply_cr_write(cpu, mem, &features, cr, value) {
            Ok(()) => skip(hv, d, cpu, &exit),
            Err(e) => {
                cpu.inject(e);
                ExitAction::Resume
            }
        };
    }
    use crate::emulate::{Emulation, emulate_cr_write};
    let rip = cpu.rip();
    let mut apply =
        |c: &mut dyn VcpuBackend, n: u8, value: u64| apply_cr_write(c, mem, &features, n, value);
    match emulate_cr_write(cpu, mem, cr, &mut apply) {
        Emulation::Okay | Emulation::Retry | Emulation::Exception(_) => ExitAction::Resume,
        Emulation::Unhandleable(why) => {
            log::warn!("{}v{}: CR{} write at rip {:#x}: {}", d, v, cr, rip, why);
            hv.crash(d, why);
            ExitAction::Dead
        }
    }
}

/// The xAPIC page as an MMIO device for the instruction emulator: a copy
/// of one vCPU's APIC and the effects of its writes, for the caller to
/// apply once the instruction is done.
struct XapicPage {
    lapic: Vlapic,
    now: u64,
    effects: Vec<WriteEffect>,
}

impl crate::emulate::MmioHandler for XapicPage {
    fn read(&mut self, gpa: u64, buf: &mut [u8]) {
        let off = (gpa & 0xFFF) as u32;
        let v = self.lapic.mmio_read(off, buf.len() as u32, self.now);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = v.checked_shr(8 * i as u32).unwrap_or(0) as u8;
        }
    }

    fn write(&mut self, gpa: u64, data: &[u8]) {
        let off = (gpa & 0xFFF) as u32;
        let mut v = 0u32;
        for (i, b) in data.iter().enumerate().take(4) {
            v |= u32::from(*b) << (8 * i);
        }
        let e = self.lapic.mmio_write(off, data.len() as u32, v, self.now);
        self.effects.push(e);
    }
}

fn gp(cpu: &mut dyn VcpuBackend) -> ExitAction {
    cpu.inject(Event::Exception {
        vector: X86_EXC_GP,
        error_code: Some(0),
    });
    ExitAction::Resume
}

/// Skips the exiting instruction or crashes the domain when its length is
/// unknown.
pub(crate) fn skip<P: Platform>(
    hv: &mut Hypervisor<P>,
    d: DomId,
    cpu: &mut dyn VcpuBackend,
    exit: &VmExit,
) -> ExitAction {
    let ok = match hv.domains.get(&d.0) {
        Some(dom) => skip_in(dom, &*hv.platform, cpu, exit),
        None => false,
    };
    if ok {
        ExitAction::Resume
    } else {
        hv.crash(d, "cannot decode the exiting instruction");
        ExitAction::Dead
    }
}

/// Moves the guest past the exiting instruction, reading it from `dom`'s
/// memory if the backend must decode it; false if it cannot be read.
pub(crate) fn skip_in(
    dom: &crate::domain::Domain,
    frames: &dyn crate::platform::FrameAccess,
    cpu: &mut dyn VcpuBackend,
    exit: &VmExit,
) -> bool {
    let mode = crate::hv::paging_mode(cpu);
    // The reader is only called by backends that must decode (SVM without
    // NRIP).
    cpu.skip_instruction_fetching(exit, &mut |la, buf| {
        let virt = crate::pagewalk::GuestVirt {
            mem: GuestMem::new(&dom.p2m, frames),
            mode,
        };
        // One translation per page: the instruction may cross into a page
        // that is not mapped, and then only the first part counts.
        let mut n = 0;
        while n < buf.len() {
            let at = la.wrapping_add(n as u64);
            let room = (crate::types::PAGE_SIZE as u64 - (at & 0xFFF)) as usize;
            let chunk = room.min(buf.len() - n);
            let Ok(gpa) = virt.to_gpa(at, false) else {
                break;
            };
            if virt.mem.read(gpa, &mut buf[n..n + chunk]).is_err() {
                break;
            }
            n += chunk;
        }
        n
    })
}

/// The host vendor, from CPUID leaf 0.
pub(crate) fn host_is_amd<P: Platform>(hv: &Hypervisor<P>) -> bool {
    let r = hv.platform.cpuid(0, 0);
    // "AuthenticAMD" / "HygonGenuine": EBX "Auth" / "Hygo".
    r[1] == 0x6874_7541 || r[1] == 0x6f67_7948
}

/// The guest's CPUID: the host's with virtualization hidden and the
/// hypervisor bit set, plus the Xen leaves at 0x40000000.
pub fn cpuid<P: Platform>(hv: &Hypervisor<P>, d: DomId, v: u32, leaf: u32, sub: u32) -> [u32; 4] {
    use xen_abi::cpuid as x;
    let base = x::XEN_CPUID_FIRST_LEAF;
    if (base..base + 0x1_0000).contains(&leaf) {
        let (maj, min) = XEN_VERSION;
        return match leaf - base {
            0 => [
                base + x::XEN_CPUID_MAX_NUM_LEAVES,
                x::XEN_CPUID_SIGNATURE_EBX,
                x::XEN_CPUID_SIGNATURE_ECX,
                x::XEN_CPUID_SIGNATURE_EDX,
            ],
            1 => [(maj << 16) | min, 0, 0, 0],
            2 => [1, XEN_HYPERCALL_MSR, 0, 0],
            4 => [
                x::XEN_HVM_CPUID_X2APIC_VIRT
                    | x::XEN_HVM_CPUID_VCPU_ID_PRESENT
                    | x::XEN_HVM_CPUID_DOMID_PRESENT,
                v,
                d.0 as u32,
                0,
            ],
            _ => [0; 4],
        };
    }
    let mut r = hv.platform.cpuid(leaf, sub);
    match leaf {
        1 => {
            // ECX: hide VMX (5), SMX (6), MONITOR (3), TSC deadline (24),
            // XSAVE/OSXSAVE (26, 27) and AVX (28) (but see below); show
            // the emulated x2APIC (21) and the hypervisor bit (31).
            r[2] &=
                !((1 << 3) | (1 << 5) | (1 << 6) | (1 << 24) | (1 << 26) | (1 << 27) | (1 << 28));
            // XSAVE comes back when the host can give x87 and SSE state
            // through it (see `xcr0_offer`), with AVX when its state is
            // offered too. OSXSAVE is the guest's CR4 bit (`handle`).
            let offer = xcr0_offer(hv);
            if offer != 0 {
                r[2] |= 1 << 26;
                if offer & 4 != 0 {
                    r[2] |= 1 << 28;
                }
            }
            // ECX: also DTES64 (2), DS-CPL (4), EST (7), TM2 (8) and PDCM
            // (15): their MSRs (debug store, P-states, thermal, perf
            // capabilities) are not emulated, so a guest that trusted the
            // bits would take #GP or crash (as Xen hides them from HVM).
            r[2] &= !((1 << 2) | (1 << 4) | (1 << 7) | (1 << 8) | (1 << 15));
            r[2] |= (1 << 21) | (1 << 31);
            // EDX: the same for DS (21), ACPI thermal control (22), TM (29)
            // and PBE (31); the APIC (9) is there.
            r[3] &= !((1 << 21) | (1 << 22) | (1 << 29) | (1 << 31));
            r[3] |= 1 << 9;
            // EBX[31:24]: initial APIC id = 2 x vCPU, as the MADT says.
            r[1] = (r[1] & 0x00FF_FFFF) | ((v * 2) << 24);
        }
        5 | 6 | 0xA => r = [0; 4],
        0xD => r = xsave_leaf(hv, sub, xcr0_offer(hv)),
        7 if sub == 0 => {
            // EBX: hide TSC_ADJUST (1, an MSR we do not emulate), AVX2 (5)
            // and AVX-512 (16..), which need XSAVE state.
            r[1] &= !((1 << 1) | (1 << 5) | 0xFFFF_0000);
            // ECX: LA57 (16) stays host-only; RDPID (22) needs TSC_AUX;
            // PKU (3) and OSPKE (4): PKRU is XSAVE state that is not
            // switched per vCPU, so one guest's protection keys would
            // reach the next guest on the CPU (and CR4.PKE is then
            // refused by the guest-state checks).
            r[2] &= !((1 << 3) | (1 << 4) | (1 << 16) | (1 << 22));
        }
        0x8000_0001 => {
            // ECX: hide SVM (2). EDX: hide RDTSCP (27), whose TSC_AUX is
            // not switched per guest.
            r[2] &= !(1 << 2);
            r[3] &= !(1 << 27);
        }
        // SVM features; SME/SEV (whose status MSR 0xC0010131 is not
        // emulated: Linux reads it when this leaf reports SME or SEV and
        // dies of the #GP that early).
        0x8000_000A | 0x8000_001F => r = [0; 4],
        _ => {}
    }
    r
}

/// The XCR0 components guests are offered: x87, SSE and AVX, as far as the
/// host has them (CPUID leaf 0xD), or nothing (XSAVE hidden) without XSAVE
/// or x87 and SSE. The backends switch these (their 4096-byte area holds
/// them, see `arch_common::fpu`); AVX-512, PKRU and the rest stay hidden,
/// as their CPUID feature bits are.
pub(crate) fn xcr0_offer<P: Platform>(hv: &Hypervisor<P>) -> u64 {
    if hv.platform.cpuid(0, 0)[0] < 0xD || hv.platform.cpuid(1, 0)[2] & (1 << 26) == 0 {
        return 0;
    }
    let [lo, _, _, hi] = hv.platform.cpuid(0xD, 0);
    let offer = ((u64::from(hi) << 32) | u64::from(lo)) & 0x7;
    if offer & 0x3 == 0x3 { offer } else { 0 }
}

/// The XSAVE area size for components `xcr0` (standard format): the
/// legacy area and header (576 bytes), or the end of the AVX state.
fn xsave_size<P: Platform>(hv: &Hypervisor<P>, xcr0: u64) -> u32 {
    if xcr0 & 4 != 0 {
        let [size, offset, _, _] = hv.platform.cpuid(0xD, 2);
        offset + size
    } else {
        576
    }
}

/// CPUID leaf 0xD, subleaf `sub`, for the components `offer`: subleaf 0
/// lists them (EBX is set per vCPU by `handle`, ECX is the size of all of
/// them), subleaf 1 keeps XSAVEOPT, XSAVEC and XGETBV with ECX = 1 (no
/// XSAVES: no supervisor state) with the compacted size in EBX, subleaf 2
/// describes AVX; the rest is 0.
fn xsave_leaf<P: Platform>(hv: &Hypervisor<P>, sub: u32, offer: u64) -> [u32; 4] {
    if offer == 0 {
        return [0; 4];
    }
    match sub {
        0 => {
            let all = xsave_size(hv, offer);
            [offer as u32, all, all, (offer >> 32) as u32]
        }
        // EBX: the compacted (XSAVEC) size of XCR0's components, the same
        // as the standard one for these three (set per vCPU by `handle`).
        1 => [
            hv.platform.cpuid(0xD, 1)[0] & 0x7,
            xsave_size(hv, offer),
            0,
            0,
        ],
        2 if offer & 4 != 0 => {
            let r = hv.platform.cpuid(0xD, 2);
            [r[0], r[1], 0, 0]
        }
        _ => [0; 4],
    }
}

fn rdmsr<P: Platform>(
    hv: &mut Hypervisor<P>,
    d: DomId,
    v: u32,
    cpu: &mut dyn VcpuBackend,
    msr: u32,
) -> Option<u64> {
    if (0x800..=0x8FF).contains(&msr) {
        let now = hv.now();
        let vc = hv.domain(d)?.vcpus.get(v as usize)?;
        // The x2APIC MSRs exist only in x2APIC mode.
        if vc.vlapic.mode() != ApicMode::X2Apic {
            return None;
        }
        return vc.vlapic.read(msr, now);
    }
    Some(match msr {
        EFER_MSR => cpu.control(ControlReg::Efer),
        APIC_BASE_MSR => hv
            .domain(d)?
            .vcpus
            .get(v as usize)?
            .vlapic
            .apic_base(v == 0),
        PAT_MSR => 0x0007_0406_0007_0406,
        // Platform id, microcode revision, feature control, MTRRs, MCG,
        // debug control, misc enables: a quiet machine.
        0x17
        | 0x8B
        | 0x3A
        | 0xFE
        | 0x2FF
        | 0x200..=0x21F
        | 0x250
        | 0x258
        | 0x259
        | 0x268..=0x26F => 0,
        0x179 | 0x17A | 0x1D9 | 0x140 => 0,
        0x1A0 => 1, // MISC_ENABLE: fast strings
        // HWCR, DE_CFG, SYSCFG, the C1E interrupt-pending register.
        0xC001_0015 | 0xC001_1029 | 0xC001_0010 | 0xC001_0055 => 0,
        _ => return None,
    })
}

fn wrmsr<P: Platform>(
    hv: &mut Hypervisor<P>,
    d: DomId,
    v: u32,
    cpu: &mut dyn VcpuBackend,
    msr: u32,
    value: u64,
) -> bool {
    if (0x800..=0x8FF).contains(&msr) {
        use crate::vlapic::WriteEffect;
        let now = hv.now();
        let Some(vc) = hv.domain_mut(d).and_then(|x| x.vcpus.get_mut(v as usize)) else {
            return false;
        };
        if vc.vlapic.mode() != ApicMode::X2Apic {
            return false;
        }
        return match vc.vlapic.write(msr, value, now) {
            Err(()) => false,
            Ok(WriteEffect::None) => true,
            Ok(WriteEffect::SendIcr(icr)) => {
                hv.send_icr(d, v, icr);
                true
            }
            Ok(WriteEffect::Timer(ns)) => {
                hv.lapic_timer(d, v, ns);
                true
            }
        };
    }
    match msr {
        // Mode changes as the SDM allows them (see Vlapic::set_apic_base).
        APIC_BASE_MSR => hv
            .domain_mut(d)
            .and_then(|x| x.vcpus.get_mut(v as usize))
            .is_some_and(|vc| vc.vlapic.set_apic_base(value).is_ok()),
        XEN_HYPERCALL_MSR => write_hypercall_page(hv, d, cpu, value),
        EFER_MSR => {
            // Checked against the guest's CPUID as Xen's hvm_set_efer does.
            let features = guest_cpu(hv, d, v);
            match guest_state::check_efer(&cr_state(cpu), &features, value) {
                Ok(e) => {
                    cpu.set_control(ControlReg::Efer, e);
                    true
                }
                Err(_) => false,
            }
        }
        PAT_MSR | 0x2FF | 0x200..=0x21F | 0x250 | 0x258 | 0x259 | 0x268..=0x26F => true,
        0x1D9 | 0x17A | 0x8B | 0x140 | 0xC001_1029 => true,
        _ => false,
    }
}

/// Fills the page at guest-physical `value & !0xFFF` with 32-byte stubs
/// `mov eax, nr; vmcall|vmmcall; ret`.
fn write_hypercall_page<P: Platform>(
    hv: &mut Hypervisor<P>,
    d: DomId,
    cpu: &mut dyn VcpuBackend,
    value: u64,
) -> bool {
    if value & 0xFFF != 0 {
        return false; // only page index 0 exists
    }
    // One of the first things a PV-aware guest does: its mode now decides
    // the layout of its shared state (Xen's hvm_init_hypercall_page).
    hv.latch_shinfo_size(d, cpu.in_64bit_mode());
    let amd = host_is_amd(hv);
    let mut page = [0xCCu8; 4096];
    for (nr, stub) in page.chunks_exact_mut(32).enumerate() {
        stub[0] = 0xB8;
        stub[1..5].copy_from_slice(&(nr as u32).to_le_bytes());
        stub[5..8].copy_from_slice(if amd {
            &[0x0F, 0x01, 0xD9]
        } else {
            &[0x0F, 0x01, 0xC1]
        });
        stub[8] = 0xC3;
    }
    let Some(mem) = hv.guest_mem(d) else {
        return false;
    };
    mem.write(value & !0xFFF, &page).is_ok()
}

/// Port I/O. Returns whether the instruction completed (false: re-execute
/// it, a long string operation continues).
fn port_io<P: Platform>(
    hv: &mut Hypervisor<P>,
    d: DomId,
    cpu: &mut dyn VcpuBackend,
    io: IoExit,
) -> bool {
    let size = io.size.clamp(1, 4) as u64;
    if !io.string {
        if io.write {
            let val = cpu.gprs().rax;
            out(hv, d, io.port, size, val);
        } else {
            let mask = if size == 4 {
                0xFFFF_FFFF
            } else {
                (1u64 << (size * 8)) - 1
            };
            // Unhandled ports read all-ones.
            let v = input(hv, d, io.port, size).unwrap_or(mask);
            let g = cpu.gprs_mut();
            g.rax = (g.rax & !mask) | (v & mask);
        }
        return true;
    }
    // INS / OUTS: flat segments assumed (PVH guests run flat); 64-bit or
    // 32-bit addressing from the mode.
    let long = cpu.in_64bit_mode();
    let amask = if long { u64::MAX } else { 0xFFFF_FFFF };
    let count = if io.rep { cpu.gprs().rcx & amask } else { 1 };
    if count == 0 {
        return true;
    }
    let n = count.min(MAX_STRING_IO);
    let down = cpu.rflags() & (1 << 10) != 0;
    let mode = Hypervisor::<P>::paging_mode(cpu);
    let mut i = 0;
    while i < n {
        let g = *cpu.gprs();
        let step = |r: u64| if down { r.wrapping_sub(size) } else { r.wrapping_add(size) } & amask;
        if io.write {
            let mut b = [0u8; 4];
            let Some(virt) = hv.guest_virt(d, mode) else {
                return true;
            };
            if virt.read(g.rsi & amask, &mut b[..size as usize]).is_err() {
                cpu.inject(Event::Exception {
                    vector: 14,
                    error_code: Some(0),
                });
                return false;
            }
            out(hv, d, io.port, size, u32::from_le_bytes(b) as u64);
            cpu.gprs_mut().rsi = step(g.rsi);
        } else {
            let Some(virt) = hv.guest_virt(d, mode) else {
                return true;
            };
            if virt
                .write(g.rdi & amask, &[0xFF; 4][..size as usize])
                .is_err()
            {
                cpu.inject(Event::Exception {
                    vector: 14,
                    error_code: Some(2),
                });
                return false;
            }
            cpu.gprs_mut().rdi = step(g.rdi);
        }
        i += 1;
    }
    if io.rep {
        let left = count - n;
        let g = cpu.gprs_mut();
        g.rcx = (g.rcx & !amask) | left;
        return left == 0;
    }
    true
}

/// An emulated port's value, or `None` for all-ones.
fn input<P: Platform>(hv: &mut Hypervisor<P>, d: DomId, port: u16, size: u64) -> Option<u64> {
    if crate::pci::is_config_port(port) {
        return Some(u64::from(crate::pci::port_read(hv, d, port, size as u8)));
    }
    if let Some(v) = crate::pci::bar_port_read(hv, d, port, size as u8) {
        return Some(u64::from(v));
    }
    let now = hv.now();
    let pit = &mut hv.domain_mut(d)?.pit;
    match (port, size) {
        (PIT_CH2_PORT, 1) => Some(u64::from(pit.read(now))),
        (PIT_GATE_PORT, 1) => Some(u64::from(pit.port61(now))),
        _ => None,
    }
}

fn out<P: Platform>(hv: &mut Hypervisor<P>, d: DomId, port: u16, size: u64, val: u64) {
    if crate::pci::is_config_port(port) {
        crate::pci::port_write(hv, d, port, size as u8, val as u32);
        return;
    }
    if crate::pci::bar_port_write(hv, d, port, size as u8, val as u32) {
        return;
    }
    if size == 1 && matches!(port, PIT_CH2_PORT | PIT_CMD_PORT | PIT_GATE_PORT) {
        let now = hv.now();
        if let Some(dom) = hv.domain_mut(d) {
            match port {
                PIT_CH2_PORT => dom.pit.write(val as u8, now),
                PIT_CMD_PORT => dom.pit.command(val as u8, now),
                _ => dom.pit.set_port61(val as u8),
            }
        }
        return;
    }
    match port {
        DEBUG_CONSOLE_PORT => {
            let b = (val & 0xFF) as u8;
            crate::hypercall::console_put(hv, d, &[b]);
        }
        SLEEP_CONTROL_PORT
            if size == 1
            // SLP_EN (bit 5) with SLP_TYP (bits 2-4) = 5 (the DSDT's \_S5).
            && val & 0x20 != 0 && (val >> 2) & 7 == 5 =>
        {
            hv.shutdown(d, ShutdownReason::Poweroff);
        }
        _ => {}
    }
}
