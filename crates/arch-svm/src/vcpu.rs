//! One vCPU on SVM: its VMCB, the initial state, the run loop step, and
//! hv-core's [`VcpuBackend`].
//!
//! Unsafe at the edge: [`SvmVcpu::new`] and [`PermissionMaps::init`] take
//! host frames and promise they are ours; [`VcpuBackend::run`] is the one
//! place that enters the guest. Everything else reads and writes the VMCB
//! as a plain struct.

use crate::asid::VcpuAsid;
use crate::enable::{self, EFER_LMA, EFER_SVME, SvmFeatures};

/// EFER.LME.
const EFER_LME: u64 = 1 << 8;
/// CR0.PG.
const CR0_PG: u64 = 1 << 31;
use crate::entry::{self, GuestRegs};
use crate::exit::{self, RawExit};
use crate::insn::{self, Expected, MAX_INSN_LEN};
use crate::intr;
use crate::iopm::{IOPM_SIZE, IoPermissionMap};
use crate::msrpm::{MSRPM_SIZE, MsrPermissionMap};
use crate::npt::TlbEpoch;
use crate::vmcb::{self, Segment, Vmcb, intercept1 as i1, intercept2 as i2, vintr};
use alloc::boxed::Box;
use arch_common::fpu::GuestFpu;
use core::ptr::NonNull;
use hv_core::arch::{ControlReg, Event, Gprs, VcpuBackend, VmExit};
use hv_core::types::Hfn;

/// [`VmExit::EntryFailed`] code when SVM is not enabled on the running CPU.
pub const NOT_ENABLED: u64 = 0xFFFF_FFFF_FFFF_FFFE;

/// The power-on PAT (WB, WT, UC-, UC twice), the guest's initial G_PAT.
pub const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;

/// RFLAGS.IF.
const RFLAGS_IF: u64 = 1 << 9;
/// Packed segment attribute L (64-bit code).
const ATTR_L: u16 = 1 << 9;

pub use arch_common::init::{SegmentInit, TableInit, VcpuInit};

fn seg(s: &SegmentInit) -> Segment {
    Segment {
        selector: s.selector,
        attrib: s.attrib & 0xFFF,
        limit: s.limit,
        base: s.base,
    }
}

/// The shared MSR and I/O permission maps (constant, one set for every
/// vCPU).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PermissionMaps {
    msrpm_pa: u64,
    iopm_pa: u64,
}

impl PermissionMaps {
    /// Fills the maps: every port exits, every MSR exits except
    /// [`crate::msrpm::PASSTHROUGH`].
    ///
    /// # Safety
    /// 1. `msrpm` starts 2 and `iopm` 3 contiguous identity-mapped host
    ///    frames, owned by the maps and never freed while a vCPU uses them.
    pub unsafe fn init(msrpm: Hfn, iopm: Hfn) -> Self {
        // SAFETY: duty 1: the frames are ours, identity-mapped, large
        // enough and page-aligned; no other reference to them exists.
        let (m, i) = unsafe {
            (
                &mut *(msrpm.hpa() as *mut [u8; MSRPM_SIZE]),
                &mut *(iopm.hpa() as *mut [u8; IOPM_SIZE]),
            )
        };
        MsrPermissionMap::init(m);
        IoPermissionMap::init(i);
        Self {
            msrpm_pa: msrpm.hpa(),
            iopm_pa: iopm.hpa(),
        }
    }
}

/// Fills a VMCB for a new vCPU: intercepts, maps, nested paging, state.
pub fn setup_vmcb(v: &mut Vmcb, init: &VcpuInit, maps: &PermissionMaps, npt_root: u64) {
    *v = Vmcb::zeroed();
    let c = &mut v.control;
    c.intercept_exceptions = 1 << 18; // #MC
    // Writes to CR0 and CR4 (MOV, and for CR0 also CLTS and LMSW): hv-core
    // checks them against the guest's CPU model, as Xen does. SVM has no
    // guest/host masks, and VMRUN would refuse an illegal value with
    // VMEXIT_INVALID instead of the #GP the guest expects. Reads stay
    // with the guest (the VMCB holds its own values).
    c.intercept_cr = vmcb::CR_WRITE_CR0 | vmcb::CR_WRITE_CR4;
    c.intercept1 = i1::INTR
        | i1::NMI
        | i1::SMI
        | i1::INIT
        | i1::CPUID
        | i1::HLT
        | i1::INVD
        | i1::INVLPGA
        | i1::IOIO_PROT
        | i1::MSR_PROT
        | i1::RSM
        | i1::SHUTDOWN;
    c.intercept2 = i2::VMRUN
        | i2::VMMCALL
        | i2::VMLOAD
        | i2::VMSAVE
        | i2::STGI
        | i2::CLGI
        | i2::SKINIT
        | i2::MONITOR
        | i2::MWAIT
        | i2::XSETBV;
    c.iopm_base_pa = maps.iopm_pa;
    c.msrpm_base_pa = maps.msrpm_pa;
    c.vintr = vintr::V_INTR_MASKING;
    c.np_enable = vmcb::NP_ENABLE;
    c.n_cr3 = npt_root;
    let s = &mut v.save;
    s.es = seg(&init.es);
    s.cs = seg(&init.cs);
    s.ss = seg(&init.ss);
    s.ds = seg(&init.ds);
    s.fs = seg(&init.fs);
    s.gs = seg(&init.gs);
    s.tr = seg(&init.tr);
    s.ldtr = seg(&init.ldtr);
    s.gdtr = Segment {
        base: init.gdtr.base,
        limit: u32::from(init.gdtr.limit),
        ..Segment::default()
    };
    s.idtr = Segment {
        base: init.idtr.base,
        limit: u32::from(init.idtr.limit),
        ..Segment::default()
    };
    s.cpl = ((init.ss.attrib >> 5) & 3) as u8;
    s.efer = init.efer | EFER_SVME;
    s.cr0 = init.cr0;
    s.cr3 = init.cr3;
    s.cr4 = init.cr4;
    s.dr6 = init.dr6;
    s.dr7 = init.dr7;
    s.rflags = init.rflags | 0x2;
    s.rip = init.rip;
    s.g_pat = PAT_DEFAULT;
}

/// Reads guest instruction bytes for the length decoder on CPUs without
/// NRIP save. hv-core (or the hypervisor) implements it with a guest page
/// walk.
pub trait InsnFetch: Send {
    /// Copies up to `buf.len()` bytes at guest-linear address `linear` (as
    /// the guest sees it through `cr0`/`cr3`/`cr4`/`efer`) into `buf`;
    /// returns how many bytes were readable.
    fn fetch(&self, linear: u64, regs: &FetchRegs, buf: &mut [u8]) -> usize;
}

/// The paging state a fetch needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct FetchRegs {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub cpl: u8,
}

/// Reads guest code bytes at a linear address (see
/// `VcpuBackend::skip_instruction_fetching`).
type CodeFetch<'a> = &'a mut dyn FnMut(u64, &mut [u8]) -> usize;

/// One vCPU run with SVM.
pub struct SvmVcpu {
    vmcb: NonNull<Vmcb>,
    vmcb_pa: u64,
    gprs: Gprs,
    fpu: GuestFpu,
    asid: VcpuAsid,
    epoch: TlbEpoch,
    seen_epoch: u64,
    force_fresh_asid: bool,
    features: SvmFeatures,
    fetch: Option<Box<dyn InsnFetch>>,
    /// An NMI that an exception pushed out of EVENTINJ, or an interrupt
    /// that found another one pending.
    deferred: Option<u64>,
    /// The vector handed to the CPU as a virtual interrupt (V_IRQ), not
    /// yet taken by the guest. External interrupts are never injected
    /// through EVENTINJ; see [`SvmVcpu::post_interrupt`].
    virq: Option<u8>,
    /// The guest set EFER.LME while its paging is off: kept out of the
    /// VMCB until CR0.PG comes on (see [`SvmVcpu::load_efer`]).
    lme_held: bool,
    /// The exit whose instruction may still be skipped.
    skippable: Option<RawExit>,
}

// SAFETY: the VMCB frame behind the pointer is owned by this vCPU alone
// (duty 1 of `new`), so moving the vCPU to another thread moves that
// ownership with it; every other field is Send.
unsafe impl Send for SvmVcpu {}

impl SvmVcpu {
    /// A vCPU in the state `init`, using the VMCB frame `vmcb`, the shared
    /// permission `maps`, the domain's nested tables (`npt_root`, `epoch`)
    /// and the CPU `features` (all CPUs alike; from `enable`).
    ///
    /// # Safety
    /// 1. `vmcb` is an identity-mapped host frame owned by this vCPU alone
    ///    until the vCPU is dropped (then the caller frees it).
    /// 2. `maps` and the tables under `npt_root` stay valid while the vCPU
    ///    can run.
    pub unsafe fn new(
        vmcb: Hfn,
        maps: &PermissionMaps,
        npt_root: u64,
        epoch: TlbEpoch,
        features: SvmFeatures,
        init: &VcpuInit,
    ) -> Self {
        let ptr = NonNull::new(vmcb.hpa() as *mut Vmcb).expect("VMCB at frame 0");
        let seen_epoch = epoch.get();
        let mut v = Self {
            vmcb: ptr,
            vmcb_pa: vmcb.hpa(),
            gprs: init.gprs,
            fpu: GuestFpu::new(features.fpu()),
            asid: VcpuAsid::default(),
            epoch,
            seen_epoch,
            force_fresh_asid: true,
            features,
            fetch: None,
            deferred: None,
            virq: None,
            lme_held: false,
            skippable: None,
        };
        setup_vmcb(v.vmcb_mut(), init, maps, npt_root);
        v
    }

    /// The VMCB.
    pub fn vmcb(&self) -> &Vmcb {
        // SAFETY: duty 1 of `new`: the frame is ours, identity-mapped and
        // holds a VMCB; `&self` rules out a concurrent `&mut`.
        unsafe { self.vmcb.as_ref() }
    }

    /// The VMCB, writable (for the hypervisor's own adjustments).
    pub fn vmcb_mut(&mut self) -> &mut Vmcb {
        // SAFETY: as in `vmcb`, with `&mut self` for exclusivity.
        unsafe { self.vmcb.as_mut() }
    }

    /// The VMCB's frame, to free after the vCPU is dropped.
    pub fn vmcb_frame(&self) -> Hfn {
        Hfn(self.vmcb_pa >> 12)
    }

    /// Sets how instruction bytes are read on CPUs without NRIP save.
    pub fn set_fetcher(&mut self, fetch: Box<dyn InsnFetch>) {
        self.fetch = Some(fetch);
    }

    /// Whether external interrupts go to the CPU as virtual interrupts
    /// ([`Self::post_interrupt`]) rather than through EVENTINJ (as Xen
    /// and KVM inject them). Both are correct on hardware; each is broken
    /// in one of the emulators we test on, so the choice follows the one
    /// CPU feature that tells them apart:
    ///
    /// - QEMU's TCG (7.2 to 10.x at least, no NRIP save) delivers an
    ///   EVENTINJ external interrupt inside VMRUN but leaves the vector
    ///   behind as its pending exception number; an exit request (its
    ///   round-robin kick, an I/O event, another vCPU's IPI) before the
    ///   guest's next exception or #VMEXIT delivers the vector a second
    ///   time, as an exception, whatever RFLAGS.IF says
    ///   (docs/architecture.md, "A vector delivered twice").
    /// - Bochs (2.7 and later, NRIP save) re-evaluates its virtual
    ///   interrupt mask at VMRUN before it marks itself in guest mode, so a
    ///   V_IRQ posted while the guest's RFLAGS.IF is set waits until the
    ///   guest clears and sets IF again.
    ///
    /// CPUs without NRIP save (QEMU's TCG; AMD family 10h hardware, where
    /// virtual interrupts work as the APM says) post; the others use
    /// EVENTINJ.
    fn posts_interrupts(&self) -> bool {
        !self.features.nrip
    }

    /// Hands external interrupt `vector` to the CPU as a virtual interrupt
    /// (V_IRQ with V_IGN_TPR, no VINTR intercept): the CPU delivers it
    /// at the guest's first instruction boundary with RFLAGS.IF set and no
    /// interrupt shadow, and clears V_IRQ when it does. Used where
    /// [`Self::posts_interrupts`].
    fn post_interrupt(&mut self, vector: u8) {
        self.virq = Some(vector);
        let c = &mut self.vmcb_mut().control;
        c.vintr &= !(vintr::V_IRQ
            | (0xF << vintr::V_INTR_PRIO_SHIFT)
            | vintr::V_IGN_TPR
            | (0xFF << vintr::V_INTR_VECTOR_SHIFT));
        c.vintr |= vintr::V_IRQ
            | (0xF << vintr::V_INTR_PRIO_SHIFT)
            | vintr::V_IGN_TPR
            | (u64::from(vector) << vintr::V_INTR_VECTOR_SHIFT);
        c.intercept1 &= !i1::VINTR;
    }

    /// [`Self::post_interrupt`], or (another vector still pending) keeps
    /// `vector` for the entry after the pending one is taken.
    fn post_or_defer(&mut self, vector: u8) {
        match self.virq {
            None => self.post_interrupt(vector),
            Some(v) if v == vector => {}
            Some(_) => {
                let e = intr::encode(Event::Interrupt(vector));
                if self.deferred.replace(e).is_some() {
                    log::warn!("svm: dropping a deferred event");
                }
            }
        }
    }

    /// Puts the guest's EFER `value` in the VMCB, except EFER.LME while
    /// the guest's paging is off. LME does nothing until CR0.PG is set,
    /// and every CR0 write exits (hv-core checks it and loads CR0 and
    /// EFER together), so the guest cannot tell: [`VcpuBackend::control`]
    /// reports the bit it set. Why: QEMU's #VMEXIT (7.2 to 10.x) loads the
    /// host's CR0 while the guest's EFER and CR4 are still in place, takes
    /// PG with LME and no PAE for a long-mode entry it cannot do, skips
    /// the write, and leaves the host running with paging off, a host
    /// crash that any guest could cause with `wrmsr` (32-bit protected
    /// mode, EFER.LME set, CR4.PAE clear). Hardware and Bochs load CR0
    /// after EFER; there this costs nothing.
    fn load_efer(&mut self, value: u64) {
        let paging = self.vmcb().save.cr0 & CR0_PG != 0;
        self.lme_held = value & EFER_LME != 0 && !paging;
        let hw = if self.lme_held {
            value & !EFER_LME
        } else {
            value
        };
        self.vmcb_mut().save.efer = hw | EFER_SVME;
    }

    /// The raw exit information of the last exit.
    pub fn last_raw_exit(&self) -> RawExit {
        let c = &self.vmcb().control;
        RawExit {
            code: c.exitcode,
            info1: c.exitinfo1,
            info2: c.exitinfo2,
        }
    }

    /// Bookkeeping after #VMEXIT, separate from the hardware step so that
    /// it can be tested: re-injection, window, decode.
    fn after_exit(&mut self) -> VmExit {
        let raw = self.last_raw_exit();
        let c = &mut self.vmcb_mut().control;
        c.tlb_control = vmcb::tlb_control::NONE;
        let (intinfo, vintr_now) = (c.exitintinfo, c.vintr);
        // The CPU clears V_IRQ when the guest takes the virtual interrupt.
        if self.virq.is_some() && vintr_now & vintr::V_IRQ == 0 {
            self.virq = None;
        }
        // An event whose delivery the exit interrupted goes in again (an
        // external interrupt as a virtual one where interrupts are posted).
        if intr::needs_reinjection(intinfo) {
            match intr::decode(intinfo) {
                Some(Event::Interrupt(v)) if self.posts_interrupts() => self.post_or_defer(v),
                _ => self.vmcb_mut().control.event_inj = intinfo & !0x7FFF_F000,
            }
        } else if self.vmcb().control.event_inj & intr::VALID == 0
            && let Some(d) = self.deferred.take()
        {
            match intr::decode(d) {
                Some(Event::Interrupt(v)) if self.posts_interrupts() => self.post_or_defer(v),
                _ => self.vmcb_mut().control.event_inj = d,
            }
        }
        let exit = exit::decode(&raw, &self.gprs);
        if exit == VmExit::InterruptWindow {
            self.set_interrupt_window(false);
        }
        self.skippable = Some(raw);
        exit
    }

    fn expected(exit: &VmExit) -> Option<Expected> {
        Some(match exit {
            VmExit::Cpuid => Expected::Cpuid,
            VmExit::Hypercall => Expected::Hypercall,
            VmExit::Hlt => Expected::Hlt,
            VmExit::MsrRead { .. } => Expected::Rdmsr,
            VmExit::MsrWrite { .. } => Expected::Wrmsr,
            VmExit::Xsetbv => Expected::Xsetbv,
            VmExit::Io(_) => Expected::Io,
            VmExit::CrAccess {
                write: true,
                gpr: Some(_),
                ..
            } => Expected::MovToCr,
            _ => return None,
        })
    }

    /// The next RIP from the instruction bytes (fetcher) or, when they
    /// cannot be read, the plain encoding's length.
    fn decoded_next_rip(&self, expected: Expected, with: Option<CodeFetch<'_>>) -> Option<u64> {
        let s = &self.vmcb().save;
        let rip = s.rip;
        let long = self.in_64bit_mode();
        if let Some(fetch) = with {
            let mut buf = [0u8; MAX_INSN_LEN];
            let n = fetch(s.cs.base.wrapping_add(rip), &mut buf).min(MAX_INSN_LEN);
            let len = if n == 0 {
                expected.plain_len()?
            } else {
                insn::length(&buf[..n], expected, long)?
            };
            return Some(rip.wrapping_add(u64::from(len)));
        }
        let len = match &self.fetch {
            Some(f) => {
                let regs = FetchRegs {
                    cr0: s.cr0,
                    cr3: s.cr3,
                    cr4: s.cr4,
                    efer: s.efer,
                    cpl: s.cpl,
                };
                let mut buf = [0u8; MAX_INSN_LEN];
                let linear = s.cs.base.wrapping_add(rip);
                let n = f.fetch(linear, &regs, &mut buf).min(MAX_INSN_LEN);
                if n == 0 {
                    expected.plain_len()?
                } else {
                    insn::length(&buf[..n], expected, long)?
                }
            }
            None => expected.plain_len()?,
        };
        Some(rip.wrapping_add(u64::from(len)))
    }

    /// Advances RIP past the exiting instruction: NRIP, IOIO's EXITINFO2,
    /// or the decoded length (bytes from `fetch`, else the installed
    /// fetcher, else the plain encoding).
    fn skip_with(&mut self, exit: &VmExit, fetch: Option<CodeFetch<'_>>) -> bool {
        let Some(expected) = Self::expected(exit) else {
            return false;
        };
        let Some(raw) = self.skippable else {
            return false;
        };
        let nrip = self.vmcb().control.nrip;
        let next = if self.features.nrip && nrip != 0 {
            Some(nrip)
        } else if expected == Expected::Io && raw.code == exit::code::IOIO && raw.info2 != 0 {
            // IOIO exits hold the next RIP in EXITINFO2 even without NRIP.
            Some(raw.info2)
        } else {
            self.decoded_next_rip(expected, fetch)
        };
        let Some(mut next) = next else {
            return false;
        };
        if !self.in_64bit_mode() {
            next &= 0xFFFF_FFFF;
        }
        let v = self.vmcb_mut();
        v.save.rip = next;
        // The instruction completed: an STI/MOV SS shadow is over.
        v.control.interrupt_shadow &= !vmcb::INTERRUPT_SHADOW;
        self.skippable = None;
        true
    }

    /// Loads the guest's FPU state and DR0-DR3, runs, saves them again.
    fn hw_run(&mut self, cpu: &enable::SvmCpu) {
        let mut regs = GuestRegs::default();
        let g = &self.gprs;
        regs.r = [
            g.rax, g.rcx, g.rdx, g.rbx, g.rsp, g.rbp, g.rsi, g.rdi, g.r8, g.r9, g.r10, g.r11,
            g.r12, g.r13, g.r14, g.r15,
        ];
        // SAFETY: `enable` ran `fpu::enable_host` on this CPU (`cpu` came
        // from `this_cpu`); `save` follows right after the run.
        unsafe { self.fpu.load() };
        // SAFETY: SVM is enabled here (`cpu` came from `this_cpu`); the
        // VMCB is ours (duty 1 of `new`) and its maps and nested tables
        // valid (duty 2); the hypervisor runs with interrupts off.
        unsafe {
            entry::svm_run(
                self.vmcb_pa,
                &mut regs,
                cpu.host_save_pa(),
                cpu.host_interrupts(),
            )
        };
        // SAFETY: `load` ran before the run.
        unsafe { self.fpu.save() };
        let [
            _,
            rcx,
            rdx,
            rbx,
            _,
            rbp,
            rsi,
            rdi,
            r8,
            r9,
            r10,
            r11,
            r12,
            r13,
            r14,
            r15,
        ] = regs.r;
        let (rax, rsp) = (self.vmcb().save.rax, self.vmcb().save.rsp);
        self.gprs = Gprs {
            rax,
            rcx,
            rdx,
            rbx,
            rsp,
            rbp,
            rsi,
            rdi,
            r8,
            r9,
            r10,
            r11,
            r12,
            r13,
            r14,
            r15,
        };
    }
}

impl VcpuBackend for SvmVcpu {
    fn control_frame(&self) -> Option<Hfn> {
        Some(self.vmcb_frame())
    }

    fn run(&mut self) -> VmExit {
        let Some(cpu) = enable::this_cpu() else {
            return VmExit::EntryFailed { code: NOT_ENABLED };
        };
        let epoch = self.epoch.get();
        let fresh = core::mem::take(&mut self.force_fresh_asid) || epoch != self.seen_epoch;
        self.seen_epoch = epoch;
        let mut asid = self.asid;
        let choice = cpu.choose_asid(&mut asid, fresh);
        self.asid = asid;
        let (rax, rsp) = (self.gprs.rax, self.gprs.rsp);
        let v = self.vmcb_mut();
        v.control.guest_asid = choice.asid;
        v.control.tlb_control = if choice.flush_all {
            vmcb::tlb_control::FLUSH_ALL
        } else {
            vmcb::tlb_control::NONE
        };
        v.control.vmcb_clean = 0;
        v.save.rax = rax;
        v.save.rsp = rsp;
        self.skippable = None;
        self.hw_run(cpu);
        self.after_exit()
    }

    fn gprs(&self) -> &Gprs {
        &self.gprs
    }

    fn gprs_mut(&mut self) -> &mut Gprs {
        &mut self.gprs
    }

    fn rip(&self) -> u64 {
        self.vmcb().save.rip
    }

    fn set_rip(&mut self, rip: u64) {
        self.vmcb_mut().save.rip = rip;
    }

    fn rflags(&self) -> u64 {
        self.vmcb().save.rflags
    }

    fn set_rflags(&mut self, rflags: u64) {
        // Bit 1 is reserved and always set.
        self.vmcb_mut().save.rflags = rflags | 0x2;
    }

    fn cpl(&self) -> u8 {
        self.vmcb().save.cpl & 3
    }

    fn in_64bit_mode(&self) -> bool {
        let s = &self.vmcb().save;
        s.efer & EFER_LMA != 0 && s.cs.attrib & ATTR_L != 0
    }

    fn cs_base(&self) -> u64 {
        self.vmcb().save.cs.base
    }

    fn control(&self, reg: ControlReg) -> u64 {
        let s = &self.vmcb().save;
        match reg {
            ControlReg::Cr0 => s.cr0,
            ControlReg::Cr2 => s.cr2,
            ControlReg::Cr3 => s.cr3,
            ControlReg::Cr4 => s.cr4,
            // SVME is the host's business; the guest sees it clear, and
            // sees the LME it set while paging is off (`load_efer`).
            ControlReg::Efer => (s.efer & !EFER_SVME) | if self.lme_held { EFER_LME } else { 0 },
            ControlReg::Xcr0 => self.fpu.xcr0(),
        }
    }

    fn set_control(&mut self, reg: ControlReg, value: u64) {
        match reg {
            ControlReg::Cr2 => self.vmcb_mut().save.cr2 = value,
            ControlReg::Cr0 | ControlReg::Cr3 | ControlReg::Cr4 => {
                let s = &mut self.vmcb_mut().save;
                match reg {
                    ControlReg::Cr0 => s.cr0 = value,
                    ControlReg::Cr3 => s.cr3 = value,
                    _ => s.cr4 = value,
                }
                // The guest's translations changed behind its back.
                self.force_fresh_asid = true;
                if reg == ControlReg::Cr0 {
                    // A held EFER.LME goes in with CR0.PG (and out again
                    // when paging goes off).
                    let efer = self.control(ControlReg::Efer);
                    self.load_efer(efer);
                }
            }
            ControlReg::Efer => self.load_efer(value),
            ControlReg::Xcr0 => {
                if !self.fpu.set_xcr0(value) {
                    log::warn!("svm: refusing invalid guest XCR0 {value:#x}");
                }
            }
        }
    }

    fn skip_instruction(&mut self, exit: &VmExit) -> bool {
        self.skip_with(exit, None)
    }

    fn skip_instruction_fetching(
        &mut self,
        exit: &VmExit,
        fetch: &mut dyn FnMut(u64, &mut [u8]) -> usize,
    ) -> bool {
        self.skip_with(exit, Some(fetch))
    }

    fn inject(&mut self, event: Event) {
        if let Event::Interrupt(v) = event
            && self.posts_interrupts()
        {
            // An exception or NMI in EVENTINJ goes first; the virtual
            // interrupt waits for the guest to be interruptible after it.
            self.post_or_defer(v);
            return;
        }
        let new = intr::encode(event);
        let cur = self.vmcb().control.event_inj;
        let slot = match (intr::decode(cur), event) {
            (None, _) => new,
            (
                Some(Event::Exception { vector: first, .. }),
                Event::Exception {
                    vector: second,
                    error_code,
                },
            ) => match intr::combine(first, second) {
                Event::Exception { vector: 8, .. } => intr::encode(intr::combine(first, second)),
                _ => intr::encode(Event::Exception {
                    vector: second,
                    error_code,
                }),
            },
            // An exception goes first; the interrupt or NMI waits for the
            // next entry after this one.
            (Some(_), Event::Exception { .. }) => {
                if self.deferred.replace(cur).is_some() {
                    log::warn!("svm: dropping a deferred event");
                }
                new
            }
            (Some(_), _) => {
                if self.deferred.replace(new).is_some() {
                    log::warn!("svm: dropping a deferred event");
                }
                cur
            }
        };
        self.vmcb_mut().control.event_inj = slot;
    }

    fn interruptible(&self) -> bool {
        let v = self.vmcb();
        v.save.rflags & RFLAGS_IF != 0
            && v.control.interrupt_shadow & vmcb::INTERRUPT_SHADOW == 0
            && v.control.event_inj & intr::VALID == 0
            && self.deferred.is_none()
            && self.virq.is_none()
    }

    fn set_interrupt_window(&mut self, enable: bool) {
        let pending = self.virq.is_some();
        let c = &mut self.vmcb_mut().control;
        if pending {
            // V_IRQ carries a vector the guest has not taken: it is
            // delivered when the guest can take it, and the exit after
            // that gives the caller its next chance. No window.
            c.intercept1 &= !i1::VINTR;
            return;
        }
        let bits = vintr::V_IRQ | (0xF << vintr::V_INTR_PRIO_SHIFT) | vintr::V_IGN_TPR;
        if enable {
            c.vintr |= bits;
            c.intercept1 |= i1::VINTR;
        } else {
            c.vintr &= !bits;
            c.intercept1 &= !i1::VINTR;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hv_core::arch::IoExit;

    #[repr(C, align(4096))]
    struct Pages<const N: usize>([u8; N]);

    struct TestVcpu {
        vcpu: SvmVcpu,
        _vmcb: Box<Vmcb>,
        _maps: (Box<Pages<8192>>, Box<Pages<12288>>),
    }

    fn features(nrip: bool) -> SvmFeatures {
        SvmFeatures {
            asids: 16,
            npt: true,
            nrip,
            xsave: true,
            xcr0_mask: 0x7,
            ..SvmFeatures::default()
        }
    }

    fn vcpu_with(nrip: bool, init: &VcpuInit) -> TestVcpu {
        let mut vmcb = Box::new(Vmcb::zeroed());
        let mut m = Box::new(Pages([0; 8192]));
        let mut i = Box::new(Pages([0; 12288]));
        let hfn = |p: *mut u8| Hfn(p as u64 >> 12);
        // SAFETY: the boxes are page-aligned, large enough, exclusively
        // ours and outlive the vCPU (kept in TestVcpu); on the host the
        // "physical" address is the virtual one and is never given to
        // hardware (run is not called).
        let (maps, vcpu) = unsafe {
            let maps = PermissionMaps::init(hfn(m.0.as_mut_ptr()), hfn(i.0.as_mut_ptr()));
            let vcpu = SvmVcpu::new(
                hfn((&mut *vmcb as *mut Vmcb).cast()),
                &maps,
                0x1234_5000,
                TlbEpoch::default(),
                features(nrip),
                init,
            );
            (maps, vcpu)
        };
        let _ = maps;
        TestVcpu {
            vcpu,
            _vmcb: vmcb,
            _maps: (m, i),
        }
    }

    fn vcpu(nrip: bool) -> TestVcpu {
        vcpu_with(nrip, &VcpuInit::pvh(0x10_0000, 0x5000))
    }

    /// Pretends the hardware exited with `raw`.
    fn exit(t: &mut TestVcpu, raw: RawExit) -> VmExit {
        let c = &mut t.vcpu.vmcb_mut().control;
        c.exitcode = raw.code;
        c.exitinfo1 = raw.info1;
        c.exitinfo2 = raw.info2;
        t.vcpu.after_exit()
    }

    #[test]
    fn pvh_vmcb_setup() {
        let t = vcpu(false);
        let v = t.vcpu.vmcb();
        assert_eq!(v.save.cs.attrib, 0xC9B);
        assert_eq!(v.save.ss.attrib, 0xC93);
        assert_eq!(v.save.tr.attrib, 0x8B);
        assert_eq!(v.save.rip, 0x10_0000);
        assert_eq!(v.save.efer, EFER_SVME);
        assert_eq!(v.save.dr6, 0xFFFF_0FF0);
        assert_eq!(v.save.dr7, 0x400);
        assert_eq!(v.save.g_pat, PAT_DEFAULT);
        assert_eq!(v.save.cpl, 0);
        assert_eq!(v.control.np_enable, 1);
        assert_eq!(v.control.n_cr3, 0x1234_5000);
        assert_ne!(v.control.intercept2 & i2::VMRUN, 0);
        assert_ne!(v.control.intercept1 & i1::MSR_PROT, 0);
        assert_ne!(v.control.intercept1 & i1::IOIO_PROT, 0);
        // CR0 and CR4 writes exit (for hv-core's checks); no reads, no CR3.
        assert_eq!(v.control.intercept_cr, (1 << 16) | (1 << 20));
        assert_eq!(v.control.intercept_exceptions, 1 << 18);
        assert_ne!(v.control.vintr & vintr::V_INTR_MASKING, 0);
        assert_ne!(v.control.iopm_base_pa, 0);
        assert_eq!(t.vcpu.gprs().rbx, 0x5000);
        assert_eq!(t.vcpu.cpl(), 0);
        assert!(!t.vcpu.in_64bit_mode());
        assert_eq!(t.vcpu.control(ControlReg::Efer), 0);
        assert_eq!(t.vcpu.control(ControlReg::Xcr0), 1);
    }

    #[test]
    fn long_mode_detection() {
        let mut init = VcpuInit::pvh(0, 0);
        init.efer = 0x500;
        init.cs.attrib = 0xA9B;
        let t = vcpu_with(false, &init);
        assert!(t.vcpu.in_64bit_mode());
    }

    #[test]
    fn skip_with_nrip() {
        let mut t = vcpu(true);
        let e = exit(
            &mut t,
            RawExit {
                code: exit::code::CPUID,
                ..RawExit::default()
            },
        );
        assert_eq!(e, VmExit::Cpuid);
        t.vcpu.vmcb_mut().control.nrip = 0x10_0007;
        assert!(t.vcpu.skip_instruction(&e));
        assert_eq!(t.vcpu.rip(), 0x10_0007);
        // Only once per exit.
        assert!(!t.vcpu.skip_instruction(&e));
        assert_eq!(t.vcpu.rip(), 0x10_0007);
    }

    #[test]
    fn skip_without_nrip_uses_plain_lengths_and_ioio_info2() {
        let mut t = vcpu(false);
        let e = exit(
            &mut t,
            RawExit {
                code: exit::code::VMMCALL,
                ..RawExit::default()
            },
        );
        assert!(t.vcpu.skip_instruction(&e));
        assert_eq!(t.vcpu.rip(), 0x10_0003);
        let e = exit(
            &mut t,
            RawExit {
                code: exit::code::IOIO,
                info1: {
                    let mut i = exit::IoioInfo(0);
                    i.set_port(0x3F8);
                    i.set_sz8(true);
                    i.0
                },
                info2: 0x10_0010,
            },
        );
        assert!(matches!(e, VmExit::Io(IoExit { port: 0x3F8, .. })));
        assert!(t.vcpu.skip_instruction(&e));
        assert_eq!(t.vcpu.rip(), 0x10_0010);
        // Exits without an instruction to skip.
        let e = exit(
            &mut t,
            RawExit {
                code: exit::code::NPF,
                ..RawExit::default()
            },
        );
        assert!(!t.vcpu.skip_instruction(&e));
    }

    #[test]
    fn decode_assisted_cr_write_is_skipped_by_nrip_or_decoding() {
        // With DecodeAssists (bit 63: MOV CRn, GPR in 3:0) and NRIP.
        let mut t = vcpu(true);
        let raw = RawExit {
            code: exit::code::CR0_WRITE + 4,
            info1: (1 << 63) | 9,
            ..RawExit::default()
        };
        let e = exit(&mut t, raw);
        assert_eq!(
            e,
            VmExit::CrAccess {
                cr: 4,
                write: true,
                gpr: Some(9)
            }
        );
        t.vcpu.vmcb_mut().control.nrip = 0x10_0004;
        assert!(t.vcpu.skip_instruction(&e));
        assert_eq!(t.vcpu.rip(), 0x10_0004);
        // Without NRIP: the bytes give the length (32-bit code here: a
        // 66 prefix, mov cr4, ecx).
        let mut t = vcpu(false);
        t.vcpu
            .set_fetcher(Box::new(Bytes(&[0x66, 0x0F, 0x22, 0xE1])));
        let e = exit(&mut t, raw);
        assert!(t.vcpu.skip_instruction(&e));
        assert_eq!(t.vcpu.rip(), 0x10_0004);
        // Without DecodeAssists there is nothing for the backend to skip:
        // hv-core decodes the instruction and moves RIP itself.
        let mut t = vcpu(false);
        let e = exit(
            &mut t,
            RawExit {
                code: exit::code::CR0_WRITE,
                ..RawExit::default()
            },
        );
        assert!(!t.vcpu.skip_instruction(&e));
        assert_eq!(t.vcpu.rip(), 0x10_0000);
    }

    struct Bytes(&'static [u8]);
    impl InsnFetch for Bytes {
        fn fetch(&self, linear: u64, _: &FetchRegs, buf: &mut [u8]) -> usize {
            assert_eq!(linear, 0x10_0000);
            let n = self.0.len().min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            n
        }
    }

    #[test]
    fn skip_without_nrip_decodes_fetched_bytes() {
        let mut t = vcpu(false);
        t.vcpu.set_fetcher(Box::new(Bytes(&[0x66, 0x0F, 0xA2])));
        let e = exit(
            &mut t,
            RawExit {
                code: exit::code::CPUID,
                ..RawExit::default()
            },
        );
        assert!(t.vcpu.skip_instruction(&e));
        assert_eq!(t.vcpu.rip(), 0x10_0003);

        let mut t = vcpu(false);
        t.vcpu.set_fetcher(Box::new(Bytes(&[0x90])));
        let e = exit(
            &mut t,
            RawExit {
                code: exit::code::HLT,
                ..RawExit::default()
            },
        );
        assert!(!t.vcpu.skip_instruction(&e));
        assert_eq!(t.vcpu.rip(), 0x10_0000);
    }

    #[test]
    fn skip_with_hv_core_fetching_the_bytes() {
        // hv-core passes a reader of guest code: a VMMCALL with a segment
        // prefix is 4 bytes, and the reader sees CS.base+RIP.
        let mut t = vcpu(false);
        let e = exit(
            &mut t,
            RawExit {
                code: exit::code::VMMCALL,
                ..RawExit::default()
            },
        );
        let mut asked = 0;
        let mut fetch = |la: u64, buf: &mut [u8]| {
            asked = la;
            let code = [0x3E, 0x0F, 0x01, 0xD9];
            buf[..4].copy_from_slice(&code);
            4
        };
        assert!(t.vcpu.skip_instruction_fetching(&e, &mut fetch));
        assert_eq!(asked, 0x10_0000);
        assert_eq!(t.vcpu.rip(), 0x10_0004);
        // Unreadable code falls back to the plain length.
        let mut t = vcpu(false);
        let e = exit(
            &mut t,
            RawExit {
                code: exit::code::CPUID,
                ..RawExit::default()
            },
        );
        assert!(t.vcpu.skip_instruction_fetching(&e, &mut |_, _| 0));
        assert_eq!(t.vcpu.rip(), 0x10_0002);
    }

    #[test]
    fn skip_clears_the_interrupt_shadow() {
        let mut t = vcpu(false);
        let e = exit(
            &mut t,
            RawExit {
                code: exit::code::HLT,
                ..RawExit::default()
            },
        );
        t.vcpu.vmcb_mut().control.interrupt_shadow = 1;
        assert!(t.vcpu.skip_instruction(&e));
        assert_eq!(t.vcpu.vmcb().control.interrupt_shadow, 0);
    }

    #[test]
    fn injection_and_interruptibility() {
        let mut t = vcpu(false);
        assert!(!t.vcpu.interruptible()); // IF clear at PVH entry
        t.vcpu.vmcb_mut().save.rflags |= RFLAGS_IF;
        assert!(t.vcpu.interruptible());
        t.vcpu.vmcb_mut().control.interrupt_shadow = 1;
        assert!(!t.vcpu.interruptible());
        t.vcpu.vmcb_mut().control.interrupt_shadow = 0;
        t.vcpu.inject(Event::Interrupt(0x40));
        // An external interrupt goes to the CPU as a virtual interrupt,
        // never through EVENTINJ (QEMU TCG delivers that one twice).
        let c = &t.vcpu.vmcb().control;
        assert_eq!(c.event_inj, 0);
        assert_ne!(c.vintr & vintr::V_IRQ, 0);
        assert_ne!(c.vintr & vintr::V_IGN_TPR, 0);
        assert_eq!((c.vintr >> vintr::V_INTR_VECTOR_SHIFT) & 0xFF, 0x40);
        assert_eq!(c.intercept1 & i1::VINTR, 0);
        assert!(!t.vcpu.interruptible());
        // An exception goes in EVENTINJ; the interrupt stays posted and
        // the hardware delivers it after the exception.
        t.vcpu.inject(Event::Exception {
            vector: 13,
            error_code: Some(0),
        });
        assert_eq!(t.vcpu.vmcb().control.event_inj, 0x8000_0B0D);
        assert_ne!(t.vcpu.vmcb().control.vintr & vintr::V_IRQ, 0);
        // The hardware delivered the exception (EVENTINJ cleared), not
        // yet the interrupt: still pending, the caller may not add one.
        t.vcpu.vmcb_mut().control.event_inj = 0;
        let hlt = RawExit {
            code: exit::code::HLT,
            ..RawExit::default()
        };
        exit(&mut t, hlt);
        assert_eq!(t.vcpu.vmcb().control.event_inj, 0);
        assert!(!t.vcpu.interruptible());
        // Asking for a window leaves the posted vector alone.
        t.vcpu.set_interrupt_window(true);
        t.vcpu.set_interrupt_window(false);
        let c = &t.vcpu.vmcb().control;
        assert_ne!(c.vintr & vintr::V_IRQ, 0);
        assert_eq!((c.vintr >> vintr::V_INTR_VECTOR_SHIFT) & 0xFF, 0x40);
        assert_eq!(c.intercept1 & i1::VINTR, 0);
        // The guest took it (the CPU cleared V_IRQ): free again.
        t.vcpu.vmcb_mut().control.vintr &= !vintr::V_IRQ;
        exit(&mut t, hlt);
        assert!(t.vcpu.interruptible());
        // Two contributory exceptions make a #DF.
        t.vcpu.vmcb_mut().control.event_inj = 0;
        t.vcpu.inject(Event::Exception {
            vector: 13,
            error_code: Some(0),
        });
        t.vcpu.inject(Event::Exception {
            vector: 11,
            error_code: Some(8),
        });
        assert_eq!(t.vcpu.vmcb().control.event_inj, 0x8000_0B08);
    }

    #[test]
    fn exitintinfo_is_reinjected() {
        let mut t = vcpu(false);
        t.vcpu.vmcb_mut().control.exitintinfo = (6 << 32) | 0x8000_0B0E;
        let e = exit(
            &mut t,
            RawExit {
                code: exit::code::NPF,
                info1: 0,
                info2: 0x1000,
            },
        );
        assert!(matches!(e, VmExit::NestedPageFault { gpa: 0x1000, .. }));
        assert_eq!(t.vcpu.vmcb().control.event_inj, (6 << 32) | 0x8000_0B0E);
        // A software interrupt is not re-injected (INT n runs again).
        t.vcpu.vmcb_mut().control.event_inj = 0;
        t.vcpu.vmcb_mut().control.exitintinfo = 0x8000_0480;
        exit(
            &mut t,
            RawExit {
                code: exit::code::NPF,
                info1: 0,
                info2: 0x1000,
            },
        );
        assert_eq!(t.vcpu.vmcb().control.event_inj, 0);
        // An external interrupt cut short goes back as a virtual one.
        t.vcpu.vmcb_mut().control.exitintinfo = 0x8000_00F3;
        exit(
            &mut t,
            RawExit {
                code: exit::code::NPF,
                info1: 0,
                info2: 0x1000,
            },
        );
        let c = &t.vcpu.vmcb().control;
        assert_eq!(c.event_inj, 0);
        assert_ne!(c.vintr & vintr::V_IRQ, 0);
        assert_eq!((c.vintr >> vintr::V_INTR_VECTOR_SHIFT) & 0xFF, 0xF3);
    }

    #[test]
    fn eventinj_where_nrip_save() {
        // With NRIP save (Bochs, current hardware) interrupts go through
        // EVENTINJ, as Xen injects them.
        let mut t = vcpu(true);
        t.vcpu.vmcb_mut().save.rflags |= RFLAGS_IF;
        t.vcpu.inject(Event::Interrupt(0x40));
        assert_eq!(t.vcpu.vmcb().control.event_inj, 0x8000_0040);
        assert_eq!(t.vcpu.vmcb().control.vintr & vintr::V_IRQ, 0);
        assert!(!t.vcpu.interruptible());
        // An exception pushes the interrupt to the following entry.
        t.vcpu.inject(Event::Exception {
            vector: 13,
            error_code: Some(0),
        });
        assert_eq!(t.vcpu.vmcb().control.event_inj, 0x8000_0B0D);
        t.vcpu.vmcb_mut().control.event_inj = 0;
        let hlt = RawExit {
            code: exit::code::HLT,
            ..RawExit::default()
        };
        exit(&mut t, hlt);
        assert_eq!(t.vcpu.vmcb().control.event_inj, 0x8000_0040);
        // An interrupt cut short goes back in by EVENTINJ.
        t.vcpu.vmcb_mut().control.event_inj = 0;
        t.vcpu.vmcb_mut().control.exitintinfo = 0x8000_00F3;
        exit(&mut t, hlt);
        assert_eq!(t.vcpu.vmcb().control.event_inj, 0x8000_00F3);
        assert_eq!(t.vcpu.vmcb().control.vintr & vintr::V_IRQ, 0);
    }

    #[test]
    fn a_second_interrupt_waits_for_the_first() {
        let mut t = vcpu(false);
        t.vcpu.vmcb_mut().save.rflags |= RFLAGS_IF;
        t.vcpu.inject(Event::Interrupt(0x40));
        t.vcpu.inject(Event::Interrupt(0x50));
        let vec = |t: &TestVcpu| (t.vcpu.vmcb().control.vintr >> vintr::V_INTR_VECTOR_SHIFT) & 0xFF;
        assert_eq!(vec(&t), 0x40);
        let hlt = RawExit {
            code: exit::code::HLT,
            ..RawExit::default()
        };
        // Not taken yet: 0x50 keeps waiting.
        exit(&mut t, hlt);
        assert_eq!(vec(&t), 0x40);
        // Taken: 0x50 is posted.
        t.vcpu.vmcb_mut().control.vintr &= !vintr::V_IRQ;
        exit(&mut t, hlt);
        assert_ne!(t.vcpu.vmcb().control.vintr & vintr::V_IRQ, 0);
        assert_eq!(vec(&t), 0x50);
        assert!(!t.vcpu.interruptible());
        t.vcpu.vmcb_mut().control.vintr &= !vintr::V_IRQ;
        exit(&mut t, hlt);
        assert!(t.vcpu.interruptible());
    }

    #[test]
    fn interrupt_window() {
        let mut t = vcpu(false);
        t.vcpu.set_interrupt_window(true);
        let c = &t.vcpu.vmcb().control;
        assert_ne!(c.vintr & vintr::V_IRQ, 0);
        assert_ne!(c.vintr & vintr::V_IGN_TPR, 0);
        assert_eq!((c.vintr >> vintr::V_INTR_PRIO_SHIFT) & 0xF, 0xF);
        assert_ne!(c.intercept1 & i1::VINTR, 0);
        let e = exit(
            &mut t,
            RawExit {
                code: exit::code::VINTR,
                ..RawExit::default()
            },
        );
        assert_eq!(e, VmExit::InterruptWindow);
        let c = &t.vcpu.vmcb().control;
        assert_eq!(c.vintr & vintr::V_IRQ, 0);
        assert_eq!(c.intercept1 & i1::VINTR, 0);
        assert_ne!(c.vintr & vintr::V_INTR_MASKING, 0);
    }

    #[test]
    fn control_registers() {
        let mut t = vcpu(false);
        let hw = |t: &TestVcpu| t.vcpu.vmcb().save.efer;
        assert_eq!(t.vcpu.control(ControlReg::Cr0) & CR0_PG, 0);
        // EFER.LME set with paging off stays out of the VMCB (QEMU's
        // #VMEXIT would leave the host without paging); the guest reads
        // it back.
        t.vcpu.set_control(ControlReg::Efer, EFER_LME);
        assert_eq!(hw(&t), EFER_SVME);
        assert_eq!(t.vcpu.control(ControlReg::Efer), EFER_LME);
        // CR0.PG brings it in, whichever of CR0 and EFER comes first.
        t.vcpu.set_control(ControlReg::Cr0, 0x8000_0011);
        assert_eq!(hw(&t), EFER_LME | EFER_SVME);
        t.vcpu.set_control(ControlReg::Efer, 0x500);
        assert_eq!(hw(&t), 0x500 | EFER_SVME);
        assert_eq!(t.vcpu.control(ControlReg::Efer), 0x500);
        // Paging off again: out again.
        t.vcpu.set_control(ControlReg::Efer, EFER_LME);
        t.vcpu.set_control(ControlReg::Cr0, 0x11);
        assert_eq!(hw(&t), EFER_SVME);
        assert_eq!(t.vcpu.control(ControlReg::Efer), EFER_LME);
        t.vcpu.set_control(ControlReg::Efer, 0x500);
        assert_eq!(hw(&t), 0x400 | EFER_SVME);
        t.vcpu.set_control(ControlReg::Cr0, 0x8000_0011);
        assert_eq!(hw(&t), 0x500 | EFER_SVME);
        // Other bits go through as they are.
        t.vcpu.set_control(ControlReg::Efer, 0xD00);
        assert_eq!(hw(&t), 0xD00 | EFER_SVME);
        t.vcpu.set_control(ControlReg::Cr3, 0x9000);
        assert_eq!(t.vcpu.control(ControlReg::Cr3), 0x9000);
        t.vcpu.set_control(ControlReg::Xcr0, 0x7);
        assert_eq!(t.vcpu.control(ControlReg::Xcr0), 0x7);
        // A component saved under the old XCR0 is dropped when XCR0 shrinks.
        t.vcpu.fpu.set_xstate_bv(0x7);
        t.vcpu.set_control(ControlReg::Xcr0, 0x3);
        assert_eq!(t.vcpu.fpu.xstate_bv(), 0x3);
        t.vcpu.set_control(ControlReg::Xcr0, 0x4); // no x87
        t.vcpu.set_control(ControlReg::Xcr0, 0x5); // AVX without SSE
        t.vcpu.set_control(ControlReg::Xcr0, 0xE7); // beyond the mask
        assert_eq!(t.vcpu.control(ControlReg::Xcr0), 0x3);
    }

    #[test]
    fn msr_exit_reads_gprs() {
        let mut t = vcpu(false);
        t.vcpu.gprs_mut().rcx = 0xC000_0080;
        let e = exit(
            &mut t,
            RawExit {
                code: exit::code::MSR,
                ..RawExit::default()
            },
        );
        assert_eq!(e, VmExit::MsrRead { msr: 0xC000_0080 });
        assert!(t.vcpu.skip_instruction(&e));
        assert_eq!(t.vcpu.rip(), 0x10_0002);
    }
}
