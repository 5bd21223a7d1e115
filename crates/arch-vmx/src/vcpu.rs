//! One vCPU on VMX: its VMCS, the initial state, the run step, and
//! hv-core's [`VcpuBackend`].
//!
//! Unsafe at the edge: [`VmxVcpu::new`] and [`PermissionMaps::init`] take
//! host frames and promise they are ours; [`VcpuBackend::run`] is the one
//! place that enters the guest. Everything else works on a software copy
//! of the guest state ([`GuestState`]) and on the [`Vmcs`] trait, so it is
//! tested on the host with a map standing in for the VMCS.
//!
//! # VMCS life cycle
//! A VMCS that is active on one CPU must be VMCLEARed there before another
//! CPU may load it, and the hypervisor moves vCPUs between CPUs freely. So
//! each run loads the VMCS (VMPTRLD), writes the state that may have
//! changed, enters with VMLAUNCH, reads the exit, and VMCLEARs it again:
//! the VMCS is never left active, and hv-core's calls between runs (which
//! may come from another CPU) read and write the software copy. (Keeping
//! it loaded and using VMRESUME needs a "release" step on the old CPU;
//! left for later.)
//!
//! # Control registers
//! Unrestricted guest lets the guest run with paging and protection off
//! (PVH starts in 32-bit protected mode without paging). As in Xen, the
//! hypervisor owns every CR0 and CR4 bit: the guest/host masks cover all
//! of them, so every guest write exits, and the read shadows show the
//! guest's own values. hv-core checks each write against the CPU model
//! the guest is offered (`hv_core::guest_state`) and loads it through
//! [`VcpuBackend::set_control`]; the hardware value adds what VMX fixes
//! (CR0.NE, CR4.VMXE) and drops what the CPU cannot run with.

use crate::enable::{self, CR0_PE, CR0_PG, CR4_VMXE, EFER_LMA, EFER_LME, VmxFeatures};
use crate::entry::{self, EntryOutcome, GuestRegs};
use crate::ept::{self, TlbEpoch};
use crate::exit::{self, RawExit};
use crate::instr;
use crate::intr;
use crate::iobitmap::{IO_BITMAP_SIZE, IoBitmaps};
use crate::msrbitmap::{MSR_BITMAP_SIZE, MsrBitmap, SWITCHED};
use crate::vmcs::{
    self, AR_L, SegFields, Vmcs, ctrl, entry_ctl, guest, host, info,
    interruptibility as intr_state, proc, proc2,
};
use arch_common::fpu::GuestFpu;
pub use arch_common::init::{SegmentInit, TableInit, VcpuInit};
use core::sync::atomic::{AtomicU32, Ordering};
use hv_core::arch::{ControlReg, Event, Gprs, VcpuBackend, VmExit};
use hv_core::types::Hfn;

/// [`VmExit::EntryFailed`] code when VMX is not enabled on the running CPU.
pub const NOT_ENABLED: u64 = 0xFFFF_FFFF_FFFF_FFFE;
/// [`VmExit::EntryFailed`] code when VMPTRLD refused the VMCS.
pub const VMPTRLD_FAILED: u64 = 0xFFFF_FFFF_FFFF_FFFD;
/// [`VmExit::EntryFailed`] code for VMfailInvalid of VMLAUNCH.
pub const LAUNCH_FAIL_INVALID: u64 = 0xFFFF_FFFF_FFFF_FFFC;
/// [`VmExit::EntryFailed`] codes for VMfailValid of VMLAUNCH: this plus
/// the VM-instruction error number (SDM 31.4).
pub const LAUNCH_FAIL_VALID: u64 = 0x1_0000_0000;

/// The power-on PAT (WB, WT, UC-, UC twice), the guest's initial PAT.
pub const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;

/// RFLAGS.IF.
const RFLAGS_IF: u64 = 1 << 9;
/// CR4.PAE.
#[cfg(test)]
const CR4_PAE: u64 = 1 << 5;
/// #MC, the one exception intercepted (as on SVM).
const EXC_MC: u32 = 1 << 18;

/// The shared MSR bitmap and I/O bitmaps (constant, one set for every
/// vCPU).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PermissionMaps {
    msr_bitmap_pa: u64,
    io_bitmap_pa: u64,
}

impl PermissionMaps {
    /// Fills the maps: every port exits, every MSR exits except
    /// [`crate::msrbitmap::PASSTHROUGH`].
    ///
    /// # Safety
    /// 1. `msr` is 1 and `io` starts 2 contiguous identity-mapped host
    ///    frames, owned by the maps and never freed while a vCPU uses them.
    pub unsafe fn init(msr: Hfn, io: Hfn) -> Self {
        // SAFETY: duty 1: the frames are ours, identity-mapped, large
        // enough and page-aligned; no other reference to them exists.
        let (m, i) = unsafe {
            (
                &mut *(msr.hpa() as *mut [u8; MSR_BITMAP_SIZE]),
                &mut *(io.hpa() as *mut [u8; IO_BITMAP_SIZE]),
            )
        };
        MsrBitmap::init(m);
        IoBitmaps::init(i);
        Self {
            msr_bitmap_pa: msr.hpa(),
            io_bitmap_pa: io.hpa(),
        }
    }
}

/// The guest state the backend keeps in software between runs (the rest
/// stays in the VMCS). CR0 and CR4 are the guest's view (the read shadows);
/// the VMCS holds them with the fixed bits forced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct GuestState {
    pub rip: u64,
    pub rflags: u64,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub cs_ar: u32,
    pub cs_base: u64,
    /// PAE paging's PDPTEs (loaded at entry, saved at exit).
    pub pdptes: [u64; 4],
    pub ss_ar: u32,
    pub interruptibility: u32,
}

/// CR0 and CR4 guest/host masks and fixed values from the features.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrPolicy {
    /// CR0 bits forced to 1 (NE; PE and PG are free with unrestricted
    /// guest).
    pub cr0_set: u64,
    /// CR0 bits forced to 0.
    pub cr0_clear: u64,
    /// CR4 bits forced to 1 (VMXE).
    pub cr4_set: u64,
    /// CR4 bits forced to 0.
    pub cr4_clear: u64,
}

impl CrPolicy {
    /// From the fixed-bit MSRs.
    pub fn new(f: &VmxFeatures) -> Self {
        let (c0, c1) = f.cr0_fixed;
        let (r0, r1) = f.cr4_fixed;
        Self {
            cr0_set: c0 & !(CR0_PE | CR0_PG) & 0xFFFF_FFFF,
            cr0_clear: !c1 & 0xFFFF_FFFF,
            cr4_set: r0 | CR4_VMXE,
            cr4_clear: !r1 & 0xFFFF_FFFF & !CR4_VMXE,
        }
    }
    /// The CR0 guest/host mask: every bit (each write exits).
    pub fn cr0_mask(&self) -> u64 {
        u64::MAX
    }
    /// The CR4 guest/host mask: every bit (each write exits).
    pub fn cr4_mask(&self) -> u64 {
        u64::MAX
    }
    /// The CR0 the hardware runs with for a guest view `v`.
    pub fn cr0_real(&self, v: u64) -> u64 {
        (v | self.cr0_set) & !self.cr0_clear
    }
    /// The CR4 the hardware runs with for a guest view `v`.
    pub fn cr4_real(&self, v: u64) -> u64 {
        (v | self.cr4_set) & !self.cr4_clear
    }
    /// The guest's view of CR0 from the hardware value and the shadow.
    pub fn cr0_view(&self, real: u64, shadow: u64) -> u64 {
        let m = self.cr0_mask();
        (real & !m) | (shadow & m)
    }
    /// The guest's view of CR4 from the hardware value and the shadow.
    pub fn cr4_view(&self, real: u64, shadow: u64) -> u64 {
        let m = self.cr4_mask();
        (real & !m) | (shadow & m)
    }
}

/// Writes one guest segment register from its initial value.
fn set_seg<V: Vmcs>(v: &mut V, f: SegFields, s: &SegmentInit) {
    v.set16(f.selector, s.selector);
    v.setn(f.base, s.base);
    v.set32(f.limit, s.limit);
    v.set32(f.ar, vmcs::access_rights(s.attrib));
}

/// Everything a new VMCS needs: controls, bitmaps, EPT, VPID, masks and
/// the initial guest state. Host state and the fields [`VmxVcpu`] keeps in
/// software are written at every entry.
pub fn setup_vmcs<V: Vmcs>(
    v: &mut V,
    init: &VcpuInit,
    maps: &PermissionMaps,
    eptp: u64,
    vpid: u16,
    f: &VmxFeatures,
) {
    let cr = CrPolicy::new(f);
    v.set32(ctrl::PIN, f.pin);
    v.set32(ctrl::PROC, f.proc);
    v.set32(ctrl::PROC2, f.proc2);
    v.set32(ctrl::EXIT, f.exit);
    v.set32(ctrl::ENTRY, f.entry);
    v.set32(ctrl::EXCEPTION_BITMAP, EXC_MC);
    v.set32(ctrl::PF_ERROR_MASK, 0);
    v.set32(ctrl::PF_ERROR_MATCH, 0);
    v.set32(ctrl::CR3_TARGET_COUNT, 0);
    v.set32(ctrl::EXIT_MSR_STORE_COUNT, 0);
    v.set32(ctrl::EXIT_MSR_LOAD_COUNT, 0);
    v.set32(ctrl::ENTRY_MSR_LOAD_COUNT, 0);
    v.set32(ctrl::ENTRY_INTR_INFO, 0);
    v.set64(ctrl::IO_BITMAP_A, maps.io_bitmap_pa);
    v.set64(ctrl::IO_BITMAP_B, maps.io_bitmap_pa + 4096);
    v.set64(ctrl::MSR_BITMAP, maps.msr_bitmap_pa);
    v.set64(ctrl::TSC_OFFSET, 0);
    v.set64(ctrl::EPT_POINTER, eptp);
    if f.proc2 & proc2::VPID != 0 {
        v.set16(ctrl::VPID, vpid);
    }
    v.setn(ctrl::CR0_MASK, cr.cr0_mask());
    v.setn(ctrl::CR4_MASK, cr.cr4_mask());

    set_seg(v, guest::ES, &init.es);
    set_seg(v, guest::CS, &init.cs);
    set_seg(v, guest::SS, &init.ss);
    set_seg(v, guest::DS, &init.ds);
    set_seg(v, guest::FS, &init.fs);
    set_seg(v, guest::GS, &init.gs);
    set_seg(v, guest::LDTR, &init.ldtr);
    set_seg(v, guest::TR, &init.tr);
    v.setn(guest::GDTR_BASE, init.gdtr.base);
    v.set32(guest::GDTR_LIMIT, u32::from(init.gdtr.limit));
    v.setn(guest::IDTR_BASE, init.idtr.base);
    v.set32(guest::IDTR_LIMIT, u32::from(init.idtr.limit));
    v.setn(guest::DR7, init.dr7);
    v.set64(guest::IA32_DEBUGCTL, 0);
    v.set64(guest::IA32_PAT, PAT_DEFAULT);
    v.set32(guest::SYSENTER_CS, 0);
    v.setn(guest::SYSENTER_ESP, 0);
    v.setn(guest::SYSENTER_EIP, 0);
    v.set32(guest::ACTIVITY_STATE, 0);
    v.setn(guest::PENDING_DBG_EXCEPTIONS, 0);
    v.set64(guest::VMCS_LINK_POINTER, u64::MAX);
}

/// The host state this CPU runs with now, for the host-state area.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct HostState {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    /// ES, CS, SS, DS, FS, GS, TR.
    pub selectors: [u16; 7],
    pub fs_base: u64,
    pub gs_base: u64,
    pub tr_base: u64,
    pub gdtr_base: u64,
    pub idtr_base: u64,
    pub sysenter: (u32, u64, u64),
    pub efer: u64,
    pub pat: u64,
}

impl HostState {
    /// Reads the calling CPU's state.
    fn current() -> Self {
        let selectors = instr::selectors();
        let (gdtr_base, gdtr_limit) = instr::sgdt();
        let (idtr_base, _) = instr::sidt();
        let tr = usize::from(selectors[6] & !7);
        let tr_base = if tr != 0 && tr + 15 <= usize::from(gdtr_limit) {
            // SAFETY: the GDT is the hypervisor's own, identity-mapped and
            // live while the CPU runs; TR's 16-byte system descriptor lies
            // within its limit (checked); nobody writes it concurrently.
            let (lo, hi) = unsafe {
                let p = (gdtr_base as usize + tr) as *const u64;
                (p.read_unaligned(), p.add(1).read_unaligned())
            };
            ((lo >> 16) & 0xFF_FFFF) | (((lo >> 56) & 0xFF) << 24) | ((hi & 0xFFFF_FFFF) << 32)
        } else {
            0
        };
        // SAFETY: these architectural MSRs exist on every 64-bit CPU with
        // VMX; reading them has no side effects.
        let (fs_base, gs_base, sysenter, efer, pat) = unsafe {
            (
                instr::rdmsr(0xC000_0100),
                instr::rdmsr(0xC000_0101),
                (
                    instr::rdmsr(0x174) as u32,
                    instr::rdmsr(0x175),
                    instr::rdmsr(0x176),
                ),
                instr::rdmsr(enable::MSR_EFER),
                instr::rdmsr(enable::MSR_PAT),
            )
        };
        Self {
            cr0: instr::read_cr0(),
            cr3: instr::read_cr3(),
            cr4: instr::read_cr4(),
            selectors,
            fs_base,
            gs_base,
            tr_base,
            gdtr_base,
            idtr_base,
            sysenter,
            efer,
            pat,
        }
    }

    /// Writes the host-state area (all but RSP and RIP, which the entry
    /// routine writes). Selectors lose RPL and TI, as VM entry requires.
    pub fn write<V: Vmcs>(&self, v: &mut V) {
        let [es, cs, ss, ds, fs, gs, tr] = self.selectors.map(|s| s & !7);
        v.setn(host::CR0, self.cr0);
        v.setn(host::CR3, self.cr3);
        v.setn(host::CR4, self.cr4);
        v.set16(host::ES, es);
        v.set16(host::CS, cs);
        v.set16(host::SS, ss);
        v.set16(host::DS, ds);
        v.set16(host::FS, fs);
        v.set16(host::GS, gs);
        v.set16(host::TR, tr);
        v.setn(host::FS_BASE, self.fs_base);
        v.setn(host::GS_BASE, self.gs_base);
        v.setn(host::TR_BASE, self.tr_base);
        v.setn(host::GDTR_BASE, self.gdtr_base);
        v.setn(host::IDTR_BASE, self.idtr_base);
        v.set32(host::SYSENTER_CS, self.sysenter.0);
        v.setn(host::SYSENTER_ESP, self.sysenter.1);
        v.setn(host::SYSENTER_EIP, self.sysenter.2);
        v.set64(host::IA32_EFER, self.efer);
        v.set64(host::IA32_PAT, self.pat);
    }
}

/// The current VMCS of this CPU, through VMREAD/VMWRITE.
struct CurrentVmcs(());

impl CurrentVmcs {
    /// # Safety
    /// 1. VMX is on and the vCPU's VMCS is current on this CPU for as long
    ///    as the value lives.
    unsafe fn new() -> Self {
        Self(())
    }
}

impl Vmcs for CurrentVmcs {
    fn read_raw(&self, enc: u32) -> u64 {
        // SAFETY: duty 1 of `new`.
        unsafe { instr::vmread(enc) }
    }
    fn write_raw(&mut self, enc: u32, value: u64) {
        // SAFETY: duty 1 of `new`; the values come from this module, which
        // builds the host state from the running CPU and the guest state
        // from what the guest or hv-core set (VM entry checks the rest).
        if unsafe { instr::vmwrite(enc, value) }.is_err() {
            log::warn!("vmx: VMWRITE {enc:#x} <- {value:#x} failed");
        }
    }
}

/// VPIDs handed out so far (0 is the host's).
static NEXT_VPID: AtomicU32 = AtomicU32::new(1);

fn alloc_vpid() -> u16 {
    let n = NEXT_VPID.fetch_add(1, Ordering::Relaxed);
    if n >= 0xFFFF {
        log::warn!("vmx: VPIDs wrapped; vCPUs share TLB tags (flushes keep it correct)");
    }
    (1 + (n - 1) % 0xFFFE) as u16
}

/// One vCPU run with VMX.
pub struct VmxVcpu {
    vmcs_pa: u64,
    gprs: Gprs,
    g: GuestState,
    cr: CrPolicy,
    fpu: GuestFpu,
    /// The guest's STAR, LSTAR, CSTAR, SFMASK, KERNEL_GS_BASE.
    msrs: [u64; 5],
    features: VmxFeatures,
    maps: PermissionMaps,
    eptp: u64,
    vpid: u16,
    /// The initial state, until the first run writes the whole VMCS.
    pending_setup: Option<VcpuInit>,
    epoch: TlbEpoch,
    seen_epoch: u64,
    /// The CPU of the last run.
    last_cpu: Option<u32>,
    /// hv-core changed CR0/CR3/CR4: flush the VPID's translations.
    flush_vpid: bool,
    /// Primary processor-based controls (interrupt-window exiting varies).
    proc: u32,
    /// The event for the next entry (packed, see [`intr`]).
    event: u64,
    /// An interrupt or NMI that an exception pushed out of the event slot.
    deferred: Option<u64>,
    /// The last exit and its instruction length.
    last: (RawExit, u32),
    /// The exit whose instruction may still be skipped.
    skippable: Option<(RawExit, u32)>,
}

// SAFETY: the VMCS frame behind `vmcs_pa` is owned by this vCPU alone
// (duty 1 of `new`) and never left active on a CPU between runs, so
// moving the vCPU to another thread moves that ownership with it; every
// other field is Send.
unsafe impl Send for VmxVcpu {}

impl VmxVcpu {
    /// A vCPU in the state `init`, using the VMCS frame `vmcs`, the shared
    /// permission `maps`, the domain's EPT (`ept_root`, `epoch`) and the
    /// CPU `features` (all CPUs alike; from `enable`).
    ///
    /// # Safety
    /// 1. `vmcs` is an identity-mapped host frame owned by this vCPU alone
    ///    until the vCPU is dropped (then the caller frees it).
    /// 2. `maps` and the tables under `ept_root` stay valid while the vCPU
    ///    can run.
    pub unsafe fn new(
        vmcs: Hfn,
        maps: &PermissionMaps,
        ept_root: u64,
        epoch: TlbEpoch,
        features: VmxFeatures,
        init: &VcpuInit,
    ) -> Self {
        assert!(vmcs.0 != 0, "VMCS at frame 0");
        // SAFETY: duty 1: the frame is ours; the first word of a VMCS
        // region holds the revision identifier (bit 31 clear: not a shadow
        // VMCS), written before the first VMCLEAR/VMPTRLD.
        unsafe { (vmcs.hpa() as *mut u32).write_volatile(features.revision) };
        Self::with_frame(vmcs.hpa(), maps, ept_root, epoch, features, init)
    }

    fn with_frame(
        vmcs_pa: u64,
        maps: &PermissionMaps,
        ept_root: u64,
        epoch: TlbEpoch,
        features: VmxFeatures,
        init: &VcpuInit,
    ) -> Self {
        let seen_epoch = epoch.get();
        let cr = CrPolicy::new(&features);
        let mut efer = init.efer;
        if init.cr0 & CR0_PG == 0 {
            efer &= !EFER_LMA;
        }
        Self {
            vmcs_pa,
            gprs: init.gprs,
            g: GuestState {
                rip: init.rip,
                rflags: init.rflags | 0x2,
                cr0: init.cr0,
                cr2: 0,
                cr3: init.cr3,
                cr4: init.cr4,
                efer,
                cs_ar: vmcs::access_rights(init.cs.attrib),
                cs_base: init.cs.base,
                pdptes: [0; 4],
                ss_ar: vmcs::access_rights(init.ss.attrib),
                interruptibility: 0,
            },
            cr,
            fpu: GuestFpu::new(features.fpu),
            msrs: [0; 5],
            features,
            maps: *maps,
            eptp: ept::eptp(ept_root),
            vpid: if features.vpid { alloc_vpid() } else { 0 },
            pending_setup: Some(*init),
            epoch,
            seen_epoch,
            last_cpu: None,
            flush_vpid: false,
            proc: features.proc,
            event: 0,
            deferred: None,
            last: (RawExit::default(), 0),
            skippable: None,
        }
    }

    /// The VMCS's frame, to free after the vCPU is dropped.
    pub fn vmcs_frame(&self) -> Hfn {
        Hfn(self.vmcs_pa >> 12)
    }

    /// The guest state kept in software.
    pub fn guest_state(&self) -> &GuestState {
        &self.g
    }

    /// The raw exit information of the last exit and its instruction
    /// length.
    pub fn last_raw_exit(&self) -> (RawExit, u32) {
        self.last
    }

    /// Writes what may have changed since the last run: the whole setup
    /// on the first run, then the software-kept guest state, controls and
    /// the event to inject.
    fn load<V: Vmcs>(&mut self, v: &mut V) {
        if let Some(init) = self.pending_setup.take() {
            setup_vmcs(v, &init, &self.maps, self.eptp, self.vpid, &self.features);
        }
        let g = &self.g;
        v.setn(guest::RIP, g.rip);
        v.setn(guest::RSP, self.gprs.rsp);
        v.setn(guest::RFLAGS, g.rflags | 0x2);
        v.setn(guest::CR0, self.cr.cr0_real(g.cr0));
        v.setn(ctrl::CR0_READ_SHADOW, g.cr0);
        v.setn(guest::CR3, g.cr3);
        v.setn(guest::CR4, self.cr.cr4_real(g.cr4));
        v.setn(ctrl::CR4_READ_SHADOW, g.cr4);
        v.set64(guest::IA32_EFER, g.efer);
        for (f, e) in guest::PDPTES.iter().zip(g.pdptes) {
            v.set64(*f, e);
        }
        let mut entry = self.features.entry;
        if g.efer & EFER_LMA != 0 {
            entry |= entry_ctl::IA32E_MODE_GUEST;
        }
        v.set32(ctrl::ENTRY, entry);
        v.set32(ctrl::PROC, self.proc);
        v.set32(guest::INTERRUPTIBILITY, g.interruptibility);
        v.set32(ctrl::ENTRY_INTR_INFO, intr::info(self.event));
        v.set32(
            ctrl::ENTRY_EXCEPTION_ERROR_CODE,
            intr::error_code(self.event),
        );
        v.set32(ctrl::ENTRY_INSTRUCTION_LEN, 0);
    }

    /// Reads the exit and the state kept in software; separate from the
    /// hardware step so that it can be tested: re-injection, window,
    /// decode. `None` when the exit was handled here and the guest should
    /// go on (none is, today).
    fn store<V: Vmcs>(&mut self, v: &V) -> Option<VmExit> {
        let raw = RawExit {
            reason: v.ro32(info::EXIT_REASON),
            qualification: v.ron(info::EXIT_QUALIFICATION),
            intr_info: v.ro32(info::EXIT_INTR_INFO),
            intr_error: v.ro32(info::EXIT_INTR_ERROR_CODE),
            gpa: v.ro64(info::GUEST_PHYSICAL_ADDRESS),
        };
        let len = v.ro32(info::EXIT_INSTRUCTION_LEN);
        self.last = (raw, len);
        let g = &mut self.g;
        g.rip = v.getn(guest::RIP);
        self.gprs.rsp = v.getn(guest::RSP);
        g.rflags = v.getn(guest::RFLAGS);
        g.cr0 = self
            .cr
            .cr0_view(v.getn(guest::CR0), v.getn(ctrl::CR0_READ_SHADOW));
        g.cr3 = v.getn(guest::CR3);
        g.cr4 = self
            .cr
            .cr4_view(v.getn(guest::CR4), v.getn(ctrl::CR4_READ_SHADOW));
        g.efer = v.get64(guest::IA32_EFER);
        g.cs_ar = v.get32(guest::CS.ar);
        g.cs_base = v.getn(guest::CS.base);
        for (f, e) in guest::PDPTES.iter().zip(g.pdptes.iter_mut()) {
            *e = v.get64(*f);
        }
        g.ss_ar = v.get32(guest::SS.ar);
        g.interruptibility = v.get32(guest::INTERRUPTIBILITY);
        Some(self.after_exit(
            raw,
            len,
            intr::pack(
                v.ro32(info::IDT_VECTORING_INFO),
                v.ro32(info::IDT_VECTORING_ERROR_CODE),
            ),
        ))
    }

    /// Bookkeeping common to every exit: the event slot (VM exits clear
    /// it; an event whose delivery the exit interrupted goes in again),
    /// the interrupt window, the decode.
    fn after_exit(&mut self, raw: RawExit, len: u32, idt: u64) -> VmExit {
        self.event = 0;
        if intr::needs_reinjection(idt) {
            self.event = idt & !0x7FFF_F000;
        } else if let Some(d) = self.deferred.take() {
            self.event = d;
        }
        let exit = exit::decode(&raw, &self.gprs);
        if exit == VmExit::InterruptWindow {
            self.set_interrupt_window(false);
        }
        self.skippable = Some((raw, len));
        exit
    }

    /// Moves RIP past the exiting instruction and ends an STI/MOV SS
    /// shadow.
    fn advance(&mut self) {
        let Some((_, len)) = self.skippable.take() else {
            return;
        };
        let mut next = self.g.rip.wrapping_add(u64::from(len));
        if !self.in_64bit_mode() {
            next &= 0xFFFF_FFFF;
        }
        self.g.rip = next;
        self.g.interruptibility &= !(intr_state::STI | intr_state::MOV_SS);
    }

    /// Invalidations this entry needs on this CPU.
    fn flushes(&mut self, cpu: u32) -> (bool, bool) {
        let epoch = self.epoch.get();
        let moved = self.last_cpu != Some(cpu);
        let ept = moved || epoch != self.seen_epoch;
        self.seen_epoch = epoch;
        self.last_cpu = Some(cpu);
        let vpid = !ept && core::mem::take(&mut self.flush_vpid) && self.vpid != 0;
        if ept {
            self.flush_vpid = false;
        }
        (ept, vpid)
    }

    /// One entry and exit on this CPU: load, invalidate, switch FPU, DRs,
    /// CR2 and SYSCALL MSRs, launch, read back, clear.
    fn hw_run(&mut self, cpu: &enable::VmxCpu) -> Option<VmExit> {
        // SAFETY: VMX is on here (`cpu` came from `this_cpu`); the VMCS
        // frame is ours, carries the revision (duty 1 of `new`) and is not
        // active anywhere (every run ends with VMCLEAR).
        if unsafe { instr::vmptrld(self.vmcs_pa) }.is_err() {
            return Some(VmExit::EntryFailed {
                code: VMPTRLD_FAILED,
            });
        }
        // SAFETY: the VMCS was just made current and stays so until the
        // VMCLEAR below.
        let mut v = unsafe { CurrentVmcs::new() };
        self.load(&mut v);
        HostState::current().write(&mut v);
        let (ept_flush, vpid_flush) = self.flushes(cpu.index());
        let f = self.features;
        if ept_flush {
            let kind = if f.invept_single { 1 } else { 2 };
            // SAFETY: VMX is on; `enable` checked INVEPT of one of the kinds.
            let _ = unsafe { instr::invept(kind, self.eptp) };
        }
        if vpid_flush {
            let kind = if f.invvpid_single { 1 } else { 2 };
            // SAFETY: VPIDs are on only when `enable` found INVVPID.
            let _ = unsafe { instr::invvpid(kind, self.vpid) };
        }
        let mut regs = GuestRegs::default();
        let g = &self.gprs;
        regs.r = [
            g.rax, g.rcx, g.rdx, g.rbx, g.rsp, g.rbp, g.rsi, g.rdi, g.r8, g.r9, g.r10, g.r11,
            g.r12, g.r13, g.r14, g.r15,
        ];
        // SAFETY: `enable` ran `fpu::enable_host` on this CPU; `save`
        // follows right after the run.
        unsafe { self.fpu.load() };
        instr::write_cr2(self.g.cr2);
        for (m, val) in SWITCHED.iter().zip(self.msrs) {
            // SAFETY: these MSRs exist on 64-bit CPUs; the host never uses
            // SYSCALL or SWAPGS, so the guest's values cannot disturb it;
            // each value was read back from the hardware (or is 0).
            unsafe { instr::wrmsr(*m, val) };
        }
        // SAFETY: duty 1 of `vmx_run`: VMX on, the VMCS current and
        // cleared (so VMLAUNCH); duty 2: the host state was just written
        // from this CPU; duty 3: guest state, bitmaps and EPT are ours
        // (duties of `new`); duty 4: the hypervisor runs with IF = 0.
        let outcome = unsafe { entry::vmx_run(&mut regs, false) };
        for (m, val) in SWITCHED.iter().zip(self.msrs.iter_mut()) {
            // SAFETY: as for the writes; reading has no side effects.
            *val = unsafe { instr::rdmsr(*m) };
        }
        self.g.cr2 = instr::read_cr2();
        // SAFETY: `load` ran before the run.
        unsafe { self.fpu.save() };
        let r = regs.r;
        let rsp = self.gprs.rsp;
        self.gprs = Gprs {
            rax: r[0],
            rcx: r[1],
            rdx: r[2],
            rbx: r[3],
            rsp,
            rbp: r[5],
            rsi: r[6],
            rdi: r[7],
            r8: r[8],
            r9: r[9],
            r10: r[10],
            r11: r[11],
            r12: r[12],
            r13: r[13],
            r14: r[14],
            r15: r[15],
        };
        let exit = match outcome {
            EntryOutcome::Exited => self.store(&v),
            EntryOutcome::FailInvalid => Some(VmExit::EntryFailed {
                code: LAUNCH_FAIL_INVALID,
            }),
            EntryOutcome::FailValid => {
                let err = v.ro32(info::VM_INSTRUCTION_ERROR);
                log::warn!("vmx: VMLAUNCH failed, VM-instruction error {err}");
                Some(VmExit::EntryFailed {
                    code: LAUNCH_FAIL_VALID | u64::from(err),
                })
            }
        };
        if let Some(VmExit::EntryFailed { code }) = exit {
            log::warn!(
                "vmx: entry failed {code:#x}: rip {:#x} cr0 {:#x} cr4 {:#x} efer {:#x} cs_ar {:#x} qual {:#x}",
                self.g.rip,
                self.g.cr0,
                self.g.cr4,
                self.g.efer,
                self.g.cs_ar,
                self.last.0.qualification
            );
        }
        // `v` is not used past this point: the VMCS stops being current.
        // SAFETY: VMX is on and the VMCS is ours; clearing writes it back
        // so that any CPU may load it next.
        let _ = unsafe { instr::vmclear(self.vmcs_pa) };
        exit
    }
}

impl VcpuBackend for VmxVcpu {
    fn control_frame(&self) -> Option<Hfn> {
        Some(self.vmcs_frame())
    }

    fn run(&mut self) -> VmExit {
        let Some(cpu) = enable::this_cpu() else {
            return VmExit::EntryFailed { code: NOT_ENABLED };
        };
        self.skippable = None;
        // Exits the backend would absorb do not count as exits for
        // hv-core (none today: CR0/CR4 writes go to hv-core's checks); a
        // bounded number of them in a row, then hv-core gets control back
        // (as an interrupt-free resume).
        for _ in 0..64 {
            if let Some(e) = self.hw_run(cpu) {
                return e;
            }
        }
        VmExit::ExternalInterrupt
    }

    fn gprs(&self) -> &Gprs {
        &self.gprs
    }

    fn gprs_mut(&mut self) -> &mut Gprs {
        &mut self.gprs
    }

    fn rip(&self) -> u64 {
        self.g.rip
    }

    fn set_rip(&mut self, rip: u64) {
        self.g.rip = rip;
    }

    fn rflags(&self) -> u64 {
        self.g.rflags
    }

    fn set_rflags(&mut self, rflags: u64) {
        self.g.rflags = rflags;
    }

    fn cpl(&self) -> u8 {
        ((self.g.ss_ar >> 5) & 3) as u8
    }

    fn in_64bit_mode(&self) -> bool {
        self.g.efer & EFER_LMA != 0 && self.g.cs_ar & AR_L != 0
    }

    fn cs_base(&self) -> u64 {
        self.g.cs_base
    }

    fn set_pdptes(&mut self, pdptes: [u64; 4]) {
        self.g.pdptes = pdptes;
    }

    fn control(&self, reg: ControlReg) -> u64 {
        match reg {
            ControlReg::Cr0 => self.g.cr0,
            ControlReg::Cr2 => self.g.cr2,
            ControlReg::Cr3 => self.g.cr3,
            ControlReg::Cr4 => self.g.cr4,
            ControlReg::Efer => self.g.efer,
            ControlReg::Xcr0 => self.fpu.xcr0(),
        }
    }

    fn set_control(&mut self, reg: ControlReg, value: u64) {
        match reg {
            ControlReg::Cr2 => self.g.cr2 = value,
            ControlReg::Cr0 | ControlReg::Cr3 | ControlReg::Cr4 => {
                match reg {
                    ControlReg::Cr0 => {
                        self.g.cr0 = value;
                        // LMA follows CR0.PG with EFER.LME, as on hardware.
                        if value & CR0_PG != 0 && self.g.efer & EFER_LME != 0 {
                            self.g.efer |= EFER_LMA;
                        } else {
                            self.g.efer &= !EFER_LMA;
                        }
                    }
                    ControlReg::Cr3 => self.g.cr3 = value,
                    _ => self.g.cr4 = value,
                }
                // The guest's translations changed behind its back.
                self.flush_vpid = true;
            }
            ControlReg::Efer => {
                // LMA follows LME and CR0.PG (VM entry checks it against
                // the IA-32e mode control, which follows LMA).
                let mut v = value & !EFER_LMA;
                if v & EFER_LME != 0 && self.g.cr0 & CR0_PG != 0 {
                    v |= EFER_LMA;
                }
                self.g.efer = v;
            }
            ControlReg::Xcr0 => {
                if !self.fpu.set_xcr0(value) {
                    log::warn!("vmx: refusing invalid guest XCR0 {value:#x}");
                }
            }
        }
    }

    fn skip_instruction(&mut self, exit: &VmExit) -> bool {
        let skippable = matches!(
            exit,
            VmExit::Cpuid
                | VmExit::Hypercall
                | VmExit::Hlt
                | VmExit::MsrRead { .. }
                | VmExit::MsrWrite { .. }
                | VmExit::Xsetbv
                | VmExit::Io(_)
                | VmExit::CrAccess { write: true, .. }
        );
        match self.skippable {
            Some((_, len)) if skippable && (1..=15).contains(&len) => {
                self.advance();
                true
            }
            _ => false,
        }
    }

    fn inject(&mut self, event: Event) {
        let protected = self.g.cr0 & CR0_PE != 0;
        let new = intr::encode(event, protected);
        let cur = self.event;
        let slot = match (intr::decode(cur), event) {
            (None, _) => new,
            (
                Some(Event::Exception { vector: first, .. }),
                Event::Exception {
                    vector: second,
                    error_code,
                },
            ) => match intr::combine(first, second) {
                df @ Event::Exception { vector: 8, .. } => intr::encode(df, protected),
                _ => intr::encode(
                    Event::Exception {
                        vector: second,
                        error_code,
                    },
                    protected,
                ),
            },
            // An exception goes first; the interrupt waits for the next
            // entry after this one.
            (Some(_), Event::Exception { .. }) => {
                if self.deferred.replace(cur).is_some() {
                    log::warn!("vmx: dropping a deferred event");
                }
                new
            }
            (Some(_), _) => {
                if self.deferred.replace(new).is_some() {
                    log::warn!("vmx: dropping a deferred event");
                }
                cur
            }
        };
        self.event = slot;
    }

    fn interruptible(&self) -> bool {
        self.g.rflags & RFLAGS_IF != 0
            && self.g.interruptibility & (intr_state::STI | intr_state::MOV_SS) == 0
            && self.event & intr::VALID == 0
            && self.deferred.is_none()
    }

    fn set_interrupt_window(&mut self, enable: bool) {
        if enable {
            self.proc |= proc::INTR_WINDOW_EXITING;
        } else {
            self.proc &= !proc::INTR_WINDOW_EXITING;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enable::tests::skylake;
    use crate::exit::{IoQualification, reason};
    use crate::vmcs::tests::MapVmcs;
    use arch_common::fpu::FpuFeatures;
    use hv_core::arch::IoExit;

    fn features() -> VmxFeatures {
        skylake()
            .features(FpuFeatures {
                xsave: true,
                xcr0_mask: 7,
            })
            .unwrap()
    }

    const MAPS: PermissionMaps = PermissionMaps {
        msr_bitmap_pa: 0x7000,
        io_bitmap_pa: 0x8000,
    };

    fn vcpu_with(init: &VcpuInit) -> VmxVcpu {
        VmxVcpu::with_frame(
            0x5000,
            &MAPS,
            0x1234_5000,
            TlbEpoch::default(),
            features(),
            init,
        )
    }

    fn vcpu() -> VmxVcpu {
        vcpu_with(&VcpuInit::pvh(0x10_0000, 0x5000))
    }

    /// Loads `t` into a fresh map VMCS, as the first run does.
    fn loaded(t: &mut VmxVcpu) -> MapVmcs {
        let mut v = MapVmcs::default();
        t.load(&mut v);
        v
    }

    /// Pretends the hardware exited with `reason`, `qual`, `len`.
    fn exit(t: &mut VmxVcpu, v: &mut MapVmcs, reason: u32, qual: u64, len: u32) -> Option<VmExit> {
        v.write_raw(info::EXIT_REASON.0, u64::from(reason));
        v.write_raw(info::EXIT_QUALIFICATION.0, qual);
        v.write_raw(info::EXIT_INSTRUCTION_LEN.0, u64::from(len));
        t.store(v)
    }

    #[test]
    fn pvh_vmcs_setup() {
        let mut t = vcpu();
        let v = loaded(&mut t);
        let f = features();
        assert_eq!(v.get32(guest::CS.ar), 0xC09B);
        assert_eq!(v.get32(guest::SS.ar), 0xC093);
        assert_eq!(v.get32(guest::TR.ar), 0x8B);
        assert_eq!(v.get32(guest::LDTR.ar), vmcs::AR_UNUSABLE);
        assert_eq!(v.get32(guest::CS.limit), 0xFFFF_FFFF);
        assert_eq!(v.get16(guest::CS.selector), 0x10);
        assert_eq!(v.getn(guest::RIP), 0x10_0000);
        assert_eq!(v.getn(guest::RFLAGS), 0x2);
        // Paging and protection as PVH wants, NE forced, shadow honest.
        assert_eq!(v.getn(guest::CR0), 0x31);
        assert_eq!(v.getn(ctrl::CR0_READ_SHADOW), 0x11);
        assert_eq!(v.getn(ctrl::CR0_MASK), u64::MAX);
        assert_eq!(v.getn(guest::CR4), CR4_VMXE);
        assert_eq!(v.getn(ctrl::CR4_READ_SHADOW), 0);
        assert_eq!(v.getn(ctrl::CR4_MASK), u64::MAX);
        assert_eq!(v.get64(guest::IA32_EFER), 0);
        assert_eq!(v.get32(ctrl::ENTRY) & entry_ctl::IA32E_MODE_GUEST, 0);
        assert_eq!(v.get32(ctrl::ENTRY), f.entry);
        assert_eq!(v.get64(guest::VMCS_LINK_POINTER), u64::MAX);
        assert_eq!(v.get64(ctrl::EPT_POINTER), 0x1234_501E);
        assert_eq!(v.get64(ctrl::MSR_BITMAP), 0x7000);
        assert_eq!(v.get64(ctrl::IO_BITMAP_A), 0x8000);
        assert_eq!(v.get64(ctrl::IO_BITMAP_B), 0x9000);
        assert_ne!(v.get16(ctrl::VPID), 0);
        assert_eq!(v.get32(ctrl::EXCEPTION_BITMAP), 1 << 18);
        assert_eq!(v.get32(ctrl::PIN), f.pin);
        assert_eq!(v.get32(ctrl::PROC2), f.proc2);
        assert_eq!(v.getn(guest::DR7), 0x400);
        assert_eq!(v.get64(guest::IA32_PAT), PAT_DEFAULT);
        assert_eq!(v.get32(ctrl::ENTRY_INTR_INFO), 0);
        assert_eq!(t.gprs().rbx, 0x5000);
        assert_eq!(t.cpl(), 0);
        assert!(!t.in_64bit_mode());
        assert_eq!(t.control(ControlReg::Cr0), 0x11);
        assert_eq!(t.control(ControlReg::Cr4), 0);
        assert_eq!(t.control(ControlReg::Xcr0), 1);
        // The setup happens once.
        let mut v2 = MapVmcs::default();
        t.load(&mut v2);
        assert!(!v2.0.contains_key(&ctrl::EPT_POINTER.0));
    }

    #[test]
    fn host_state_area() {
        let h = HostState {
            cr0: 0x8005_0033,
            cr3: 0x1000,
            cr4: 0x2020,
            selectors: [0x10, 0x08, 0x10, 0x10, 0, 0, 0x18],
            tr_base: 0xABC0,
            efer: 0xD01,
            ..HostState::default()
        };
        let mut v = MapVmcs::default();
        h.write(&mut v);
        assert_eq!(v.get16(host::CS), 0x08);
        assert_eq!(v.get16(host::TR), 0x18);
        assert_eq!(v.getn(host::TR_BASE), 0xABC0);
        assert_eq!(v.get64(host::IA32_EFER), 0xD01);
        // RPL/TI bits dropped.
        let h = HostState {
            selectors: [0x13, 0x0B, 0x13, 0x13, 0x17, 0, 0x1C],
            ..h
        };
        h.write(&mut v);
        assert_eq!(v.get16(host::SS), 0x10);
        assert_eq!(v.get16(host::CS), 0x08);
        assert_eq!(v.get16(host::FS), 0x10);
        assert_eq!(v.get16(host::TR), 0x18);
    }

    #[test]
    fn long_mode_from_the_hardware_and_from_hv_core() {
        let mut t = vcpu();
        let mut v = loaded(&mut t);
        // WRMSR EFER.LME through hv-core: LMA stays clear without paging.
        t.set_control(ControlReg::Efer, 0x100);
        assert_eq!(t.control(ControlReg::Efer), 0x100);
        // The guest's CR0 and CR4 (its writes exited and hv-core loaded
        // them: the shadows hold them); the hardware reports LMA and a
        // 64-bit CS later.
        v.setn(guest::CR0, 0x8000_0031);
        v.setn(ctrl::CR0_READ_SHADOW, 0x8000_0011);
        v.set64(guest::IA32_EFER, 0x500);
        v.set32(guest::CS.ar, 0xA09B);
        v.setn(guest::CR4, CR4_VMXE | CR4_PAE);
        v.setn(ctrl::CR4_READ_SHADOW, CR4_PAE);
        let e = exit(&mut t, &mut v, reason::CPUID, 0, 2);
        assert_eq!(e, Some(VmExit::Cpuid));
        assert_eq!(t.control(ControlReg::Cr0), 0x8000_0011);
        assert_eq!(t.control(ControlReg::Cr4), CR4_PAE);
        assert!(t.in_64bit_mode());
        t.load(&mut v);
        assert_ne!(v.get32(ctrl::ENTRY) & entry_ctl::IA32E_MODE_GUEST, 0);
        // hv-core writing EFER keeps LMA consistent with LME and PG.
        t.set_control(ControlReg::Efer, 0x100 | 0x800);
        assert_eq!(t.control(ControlReg::Efer), 0xD00);
        let mut init = VcpuInit::pvh(0, 0);
        init.efer = 0x500;
        init.cr0 = 0x8000_0011;
        init.cr4 = CR4_PAE;
        init.cs.attrib = 0xA9B;
        let mut t = vcpu_with(&init);
        let v = loaded(&mut t);
        assert!(t.in_64bit_mode());
        assert_ne!(v.get32(ctrl::ENTRY) & entry_ctl::IA32E_MODE_GUEST, 0);
    }

    #[test]
    fn skip_uses_the_exit_instruction_length() {
        let mut t = vcpu();
        let mut v = loaded(&mut t);
        let e = exit(&mut t, &mut v, reason::VMCALL, 0, 3).unwrap();
        assert_eq!(e, VmExit::Hypercall);
        assert!(t.skip_instruction(&e));
        assert_eq!(t.rip(), 0x10_0003);
        // Only once per exit.
        assert!(!t.skip_instruction(&e));
        t.load(&mut v);
        assert_eq!(v.getn(guest::RIP), 0x10_0003);
        let mut q = IoQualification(0);
        q.set_port(0x3F8);
        q.set_is_in(true);
        let e = exit(&mut t, &mut v, reason::IO, q.0, 1).unwrap();
        assert!(matches!(e, VmExit::Io(IoExit { port: 0x3F8, .. })));
        assert!(t.skip_instruction(&e));
        assert_eq!(t.rip(), 0x10_0004);
        // Exits without an instruction to skip.
        let e = exit(&mut t, &mut v, reason::EPT_VIOLATION, 1, 0).unwrap();
        assert!(!t.skip_instruction(&e));
        let e = exit(&mut t, &mut v, reason::EXTERNAL_INTERRUPT, 0, 0).unwrap();
        assert!(!t.skip_instruction(&e));
        // 32-bit code wraps at 4 GiB.
        v.setn(guest::RIP, 0xFFFF_FFFF);
        let e = exit(&mut t, &mut v, reason::CPUID, 0, 2).unwrap();
        assert!(t.skip_instruction(&e));
        assert_eq!(t.rip(), 1);
    }

    #[test]
    fn skip_clears_the_interrupt_shadow() {
        let mut t = vcpu();
        let mut v = loaded(&mut t);
        v.set32(guest::INTERRUPTIBILITY, intr_state::STI);
        let e = exit(&mut t, &mut v, reason::HLT, 0, 1).unwrap();
        assert!(t.skip_instruction(&e));
        t.load(&mut v);
        assert_eq!(v.get32(guest::INTERRUPTIBILITY), 0);
    }

    #[test]
    fn injection_and_interruptibility() {
        let mut t = vcpu();
        let mut v = loaded(&mut t);
        assert!(!t.interruptible()); // IF clear at PVH entry
        v.setn(guest::RFLAGS, 0x202);
        exit(&mut t, &mut v, reason::HLT, 0, 1);
        assert!(t.interruptible());
        v.set32(guest::INTERRUPTIBILITY, intr_state::MOV_SS);
        exit(&mut t, &mut v, reason::HLT, 0, 1);
        assert!(!t.interruptible());
        v.set32(guest::INTERRUPTIBILITY, 0);
        exit(&mut t, &mut v, reason::HLT, 0, 1);
        t.inject(Event::Interrupt(0x40));
        t.load(&mut v);
        assert_eq!(v.get32(ctrl::ENTRY_INTR_INFO), 0x8000_0040);
        assert!(!t.interruptible());
        // An exception pushes the interrupt to the following entry.
        t.inject(Event::Exception {
            vector: 13,
            error_code: Some(0),
        });
        t.load(&mut v);
        assert_eq!(v.get32(ctrl::ENTRY_INTR_INFO), 0x8000_0B0D);
        assert_eq!(v.get32(ctrl::ENTRY_EXCEPTION_ERROR_CODE), 0);
        // The hardware delivered the exception: the interrupt comes next.
        exit(&mut t, &mut v, reason::HLT, 0, 1);
        t.load(&mut v);
        assert_eq!(v.get32(ctrl::ENTRY_INTR_INFO), 0x8000_0040);
        // Two contributory exceptions make a #DF.
        exit(&mut t, &mut v, reason::HLT, 0, 1);
        t.inject(Event::Exception {
            vector: 13,
            error_code: Some(0),
        });
        t.inject(Event::Exception {
            vector: 11,
            error_code: Some(8),
        });
        t.load(&mut v);
        assert_eq!(v.get32(ctrl::ENTRY_INTR_INFO), 0x8000_0B08);
    }

    #[test]
    fn idt_vectoring_is_reinjected() {
        let mut t = vcpu();
        let mut v = loaded(&mut t);
        v.write_raw(info::IDT_VECTORING_INFO.0, 0x8000_0B0E);
        v.write_raw(info::IDT_VECTORING_ERROR_CODE.0, 6);
        v.write_raw(info::GUEST_PHYSICAL_ADDRESS.0, 0x1000);
        let e = exit(&mut t, &mut v, reason::EPT_VIOLATION, 2, 0);
        assert!(matches!(
            e,
            Some(VmExit::NestedPageFault { gpa: 0x1000, .. })
        ));
        t.load(&mut v);
        assert_eq!(v.get32(ctrl::ENTRY_INTR_INFO), 0x8000_0B0E);
        assert_eq!(v.get32(ctrl::ENTRY_EXCEPTION_ERROR_CODE), 6);
        // A software interrupt is not re-injected (INT n runs again).
        v.write_raw(info::IDT_VECTORING_INFO.0, 0x8000_0480);
        exit(&mut t, &mut v, reason::EPT_VIOLATION, 2, 0);
        t.load(&mut v);
        assert_eq!(v.get32(ctrl::ENTRY_INTR_INFO), 0);
    }

    #[test]
    fn interrupt_window() {
        let mut t = vcpu();
        let mut v = loaded(&mut t);
        t.set_interrupt_window(true);
        t.load(&mut v);
        assert_ne!(v.get32(ctrl::PROC) & proc::INTR_WINDOW_EXITING, 0);
        let e = exit(&mut t, &mut v, reason::INTERRUPT_WINDOW, 0, 0);
        assert_eq!(e, Some(VmExit::InterruptWindow));
        t.load(&mut v);
        assert_eq!(v.get32(ctrl::PROC) & proc::INTR_WINDOW_EXITING, 0);
        assert_eq!(v.get32(ctrl::PROC), features().proc);
    }

    #[test]
    fn cr_writes_exit_to_hv_core() {
        let mut t = vcpu();
        let mut v = loaded(&mut t);
        // Every CR0/CR4 bit is the hypervisor's.
        assert_eq!(v.getn(ctrl::CR0_MASK), u64::MAX);
        assert_eq!(v.getn(ctrl::CR4_MASK), u64::MAX);
        // mov cr4, rbx: hv-core gets it with the register; skippable.
        t.gprs_mut().rbx = CR4_PAE;
        let e = exit(&mut t, &mut v, reason::CR_ACCESS, 4 | (3 << 8), 3).unwrap();
        assert_eq!(
            e,
            VmExit::CrAccess {
                cr: 4,
                write: true,
                gpr: Some(3)
            }
        );
        t.set_control(ControlReg::Cr4, CR4_PAE);
        assert!(t.skip_instruction(&e));
        assert_eq!(t.rip(), 0x10_0003);
        t.load(&mut v);
        assert_eq!(v.getn(ctrl::CR4_READ_SHADOW), CR4_PAE);
        assert_eq!(v.getn(guest::CR4), CR4_PAE | CR4_VMXE);
        // CLTS (access type 2) has no register: hv-core decodes it.
        let e = exit(&mut t, &mut v, reason::CR_ACCESS, 2 << 4, 2).unwrap();
        assert_eq!(
            e,
            VmExit::CrAccess {
                cr: 0,
                write: true,
                gpr: None
            }
        );
        // Paging on with LME: LMA follows, as on hardware; and off again.
        let mut t = vcpu();
        t.set_control(ControlReg::Efer, 0x100);
        t.set_control(ControlReg::Cr4, CR4_PAE);
        t.set_control(ControlReg::Cr0, 0x8000_0011);
        assert_eq!(t.control(ControlReg::Efer), 0x500);
        let mut v = loaded(&mut t);
        assert_eq!(v.getn(guest::CR0), 0x8000_0031);
        assert_ne!(v.get32(ctrl::ENTRY) & entry_ctl::IA32E_MODE_GUEST, 0);
        t.set_control(ControlReg::Cr0, 0x11);
        assert_eq!(t.control(ControlReg::Efer), 0x100);
        t.load(&mut v);
        assert_eq!(v.get32(ctrl::ENTRY) & entry_ctl::IA32E_MODE_GUEST, 0);
    }

    #[test]
    fn pdptes_go_into_the_vmcs_and_come_back() {
        let mut t = vcpu();
        let mut v = loaded(&mut t);
        t.set_pdptes([0x1001, 0x2001, 0, 0x4001]);
        t.load(&mut v);
        assert_eq!(v.get64(guest::PDPTE0), 0x1001);
        assert_eq!(v.get64(guest::PDPTES[3]), 0x4001);
        // The CPU saves them at exit (PAE paging with EPT).
        v.set64(guest::PDPTES[1], 0x9001);
        exit(&mut t, &mut v, reason::CPUID, 0, 2);
        t.load(&mut v);
        assert_eq!(v.get64(guest::PDPTES[1]), 0x9001);
    }

    #[test]
    fn flushes_on_migration_epoch_and_cr_changes() {
        let mut t = vcpu();
        assert_eq!(t.flushes(0), (true, false)); // first run on CPU 0
        assert_eq!(t.flushes(0), (false, false));
        t.set_control(ControlReg::Cr3, 0x9000);
        assert_eq!(t.flushes(0), (false, true));
        assert_eq!(t.flushes(1), (true, false)); // moved
        t.epoch.bump();
        assert_eq!(t.flushes(1), (true, false));
        assert_eq!(t.flushes(1), (false, false));
    }

    #[test]
    fn control_registers() {
        let mut t = vcpu();
        t.set_control(ControlReg::Cr3, 0x9000);
        assert_eq!(t.control(ControlReg::Cr3), 0x9000);
        t.set_control(ControlReg::Cr2, 0x1234);
        assert_eq!(t.control(ControlReg::Cr2), 0x1234);
        t.set_control(ControlReg::Xcr0, 0x7);
        assert_eq!(t.control(ControlReg::Xcr0), 0x7);
        t.set_control(ControlReg::Xcr0, 0x4); // no x87: refused
        assert_eq!(t.control(ControlReg::Xcr0), 0x7);
    }

    #[test]
    fn msr_exit_reads_gprs() {
        let mut t = vcpu();
        let mut v = loaded(&mut t);
        t.gprs_mut().rcx = 0xC000_0080;
        let e = exit(&mut t, &mut v, reason::RDMSR, 0, 2).unwrap();
        assert_eq!(e, VmExit::MsrRead { msr: 0xC000_0080 });
        assert!(t.skip_instruction(&e));
        assert_eq!(t.rip(), 0x10_0002);
    }

    #[test]
    fn cr_policy_from_fixed_bits() {
        let c = CrPolicy::new(&features());
        assert_eq!(c.cr0_set, 0x20);
        assert_eq!(c.cr0_clear, 0);
        assert_eq!(c.cr0_real(0x8000_0011), 0x8000_0031);
        assert_eq!(c.cr0_view(0x8000_0031, 0x8000_0011), 0x8000_0011);
        assert_eq!(c.cr4_real(0x20), 0x2020);
        assert_eq!(c.cr4_view(0x2020, 0x20), 0x20);
        // Unsupported CR4 bits are masked (a write exits) but never forced.
        assert_ne!(c.cr4_clear & (1 << 12), 0);
        assert_eq!(c.cr4_real(0), CR4_VMXE);
    }
}
