//! Running domains: the boot CPU builds them from the boot modules, then
//! every CPU runs vCPUs on AMD SVM or Intel VMX (whichever the CPU has,
//! [`Vendor`]) until all domains have shut down.
//!
//! One lock guards hv-core (`HV`); guests run outside it. Each vCPU's
//! backend sits in a slot that one CPU at a time takes out to run it. The
//! local APIC timer ends a time slice (10 ms) and wakes idle CPUs for
//! timeouts; kicks (IPIs) end a run or an idle wait early.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt::Write as _;
use core::sync::atomic::{
    AtomicBool, AtomicU64,
    Ordering::{Acquire, Relaxed, SeqCst},
};

use arch_svm::npt::IdentityTables;
use arch_svm::{Npt, SvmCpu, SvmVcpu, VcpuInit};
use arch_vmx::{Ept, VmxCpu, VmxVcpu};
use hv_core::VcpuStart;
use hv_core::arch::{NestedPaging, VcpuBackend, VmExit};
use hv_core::domain::{DomainState, ShutdownReason};
use hv_core::lockorder::{Held, LockClass, OrderedMutex};
use hv_core::pagetable::TlbEpoch;
use hv_core::sched::{Scheduler, VcpuKey};
use hv_core::{DomId, ExitAction, Hfn, Hypervisor};
use hypervisor::bootinfo::BootInfo;
use hypervisor::builder;
use hypervisor::launch;
use spin::{Mutex, Once};

use crate::boot::IDENTITY_MAPPED;
use crate::hostplat::MAX_CPUS;
use crate::hostplat::{self, HostFrames, HostPlatform, TIMER_VECTOR};
use crate::memory::FRAMES;
use crate::platform::{self, HOST_APIC, LocalApic};

/// The time slice.
const SLICE_NS: u64 = 10_000_000;

/// hv-core, shared by every CPU.
static HV: Once<HvLock> = Once::new();

/// hv-core's lock. While a CPU holds it (an [`HvGuard`]) its console output
/// is queued and written out when it lets go (`console::enter_quiet`): no
/// UART write happens under the lock.
struct HvLock(Mutex<Hypervisor<HostPlatform>>);

impl HvLock {
    fn lock(&self) -> HvGuard<'_> {
        let held = Held::take(LockClass::Global);
        let mut g = self.0.lock();
        crate::console::enter_quiet();
        // Every domain out of its cell: the global path may touch any.
        g.hold();
        HvGuard(Some(g), held)
    }
}

/// hv-core, held.
struct HvGuard<'a>(
    Option<spin::MutexGuard<'a, Hypervisor<HostPlatform>>>,
    /// The lock-order record (`hv_core::lockorder`), dropped last.
    #[allow(dead_code)]
    Held,
);

impl core::ops::Deref for HvGuard<'_> {
    type Target = Hypervisor<HostPlatform>;
    fn deref(&self) -> &Self::Target {
        self.0.as_deref().expect("held until dropped")
    }
}

impl core::ops::DerefMut for HvGuard<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.0.as_deref_mut().expect("held until dropped")
    }
}

impl Drop for HvGuard<'_> {
    fn drop(&mut self) {
        // The domains back into their cells, the lock, then the UART.
        if let Some(g) = self.0.as_mut() {
            g.release();
        }
        drop(self.0.take());
        crate::console::leave_quiet();
    }
}
/// The vCPUs that have a backend.
static SLOTS: Once<Vec<Slot>> = Once::new();
/// The MSR and I/O permission maps, shared by every vCPU.
static MAPS: Once<Maps> = Once::new();
/// Whether domain-local exits are on (`local=`, on by default).
static LOCAL_ON: AtomicBool = AtomicBool::new(true);
/// Set when the domains are built and the CPUs may start running them.
static GO: AtomicBool = AtomicBool::new(false);
/// hv-core's credit scheduler. Taken inside the `HV` lock, or alone (to
/// hand it the vCPUs a domain-local exit woke); never the other way round.
static SCHED: Once<OrderedMutex<Scheduler>> = Once::new();
/// The boot CPU's backend (every CPU has the same features).
static BOOT_CPU: Once<Cpu> = Once::new();
/// Every domain's plan and modules, to build it again on reboot.
static RELAUNCH: Once<Vec<Relaunch>> = Once::new();
/// Xen's default vCPU weight.
const DEFAULT_WEIGHT: u16 = 256;
/// VM exits handled, and of those the ones handled under their domain's
/// lock alone (`hv_core::local`), per CPU: each CPU counts on its own
/// cache lines, summed when the machine stops.
static EXITS: [ExitCount; MAX_CPUS] = [const { ExitCount::new() }; MAX_CPUS];

/// One CPU's exit counts.
#[repr(align(128))]
struct ExitCount {
    all: AtomicU64,
    local: AtomicU64,
}

impl ExitCount {
    const fn new() -> Self {
        ExitCount {
            all: AtomicU64::new(0),
            local: AtomicU64::new(0),
        }
    }

    /// The calling CPU's counts (the last slot for an unknown CPU).
    fn mine(me: u32) -> &'static ExitCount {
        &EXITS[(me as usize).min(MAX_CPUS - 1)]
    }
}
/// The exits that took the global path, by kind ([`exit_kind`]), and
/// their hypercalls by number (the last counts every number past 63): the
/// serialization left, printed when the machine stops.
static GLOBAL_EXITS: [AtomicU64; EXIT_KINDS.len()] =
    [const { AtomicU64::new(0) }; EXIT_KINDS.len()];
static GLOBAL_HYPERCALLS: [AtomicU64; 65] = [const { AtomicU64::new(0) }; 65];

const EXIT_KINDS: [&str; 12] = [
    "hypercall",
    "cpuid",
    "rdmsr",
    "wrmsr",
    "io",
    "npf",
    "hlt",
    "intr",
    "window",
    "cr",
    "exception",
    "other",
];

/// The index of `exit`'s kind in [`EXIT_KINDS`].
fn exit_kind(exit: &VmExit) -> usize {
    match exit {
        VmExit::Hypercall => 0,
        VmExit::Cpuid => 1,
        VmExit::MsrRead { .. } => 2,
        VmExit::MsrWrite { .. } => 3,
        VmExit::Io(_) => 4,
        VmExit::NestedPageFault { .. } => 5,
        VmExit::Hlt => 6,
        VmExit::ExternalInterrupt | VmExit::TimerExpired => 7,
        VmExit::InterruptWindow => 8,
        VmExit::CrAccess { .. } => 9,
        VmExit::Exception { .. } => 10,
        _ => 11,
    }
}

/// One vCPU and its backend.
struct Slot {
    d: DomId,
    v: u32,
    /// The domain's nested tables (root and epoch), for backends created
    /// later (SIPI); new ones when the domain is built again.
    tables: Mutex<(u64, TlbEpoch)>,
    /// `None` while it runs somewhere, or before the vCPU was started.
    backend: Mutex<Option<Box<dyn VcpuBackend + Send>>>,
}

fn key(d: DomId, v: u32) -> VcpuKey {
    VcpuKey { dom: d, vcpu: v }
}

/// The virtualization extension of this machine's CPUs (all alike).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Vendor {
    /// AMD SVM with nested paging.
    Svm,
    /// Intel VMX with EPT and unrestricted guest.
    Vmx,
}

impl Vendor {
    /// Which backend the calling CPU supports, if any.
    fn detect() -> Option<Self> {
        let cpuid = |l, s| {
            let r = core::arch::x86_64::__cpuid_count(l, s);
            [r.eax, r.ebx, r.ecx, r.edx]
        };
        if arch_svm::enable::detect(cpuid).is_ok() {
            Some(Vendor::Svm)
        } else if arch_vmx::enable::has_vmx(cpuid) {
            Some(Vendor::Vmx)
        } else {
            None
        }
    }
}

/// A CPU with its backend turned on.
#[derive(Clone, Copy)]
enum Cpu {
    Svm(&'static SvmCpu),
    Vmx(&'static VmxCpu),
}

impl Cpu {
    /// Lets host interrupts end guest runs. VMX always exits on them
    /// (external-interrupt exiting); SVM needs the host's IF set at VMRUN.
    fn take_host_interrupts(&self) {
        if let Cpu::Svm(c) = self {
            c.set_host_interrupts(true);
        }
    }
}

/// The shared permission maps of the backend in use.
enum Maps {
    Svm(arch_svm::PermissionMaps),
    Vmx(arch_vmx::PermissionMaps),
}

/// Contiguous, zeroed, identity-mapped frames for hardware structures
/// that live as long as the machine.
fn frames(n: u64) -> Option<Hfn> {
    let hpa = FRAMES.lock().alloc(n * 4096, 4096, IDENTITY_MAPPED).ok()?;
    // SAFETY: just taken from the allocator (nothing else uses them) and
    // identity-mapped.
    unsafe { core::ptr::write_bytes(hpa as *mut u8, 0, (n * 4096) as usize) };
    Some(Hfn(hpa >> 12))
}

/// Turns SVM or VMX on for the calling CPU.
fn enable_cpu(index: u32) -> Option<Cpu> {
    let Some(vendor) = Vendor::detect() else {
        log::error!("CPU{index}: neither AMD SVM (with NPT) nor Intel VMX");
        return None;
    };
    let pages = match vendor {
        Vendor::Svm => arch_svm::enable::CPU_AREA_PAGES,
        Vendor::Vmx => arch_vmx::enable::CPU_AREA_PAGES,
    };
    let area = frames(pages as u64)?;
    let r = match vendor {
        // SAFETY: the area is fresh, contiguous, identity-mapped and never
        // freed; this runs once per CPU on that CPU with interrupts
        // disabled.
        Vendor::Svm => unsafe { arch_svm::enable(area, index) }
            .map(Cpu::Svm)
            .map_err(|e| log::error!("CPU{index}: cannot enable SVM: {e:?}")),
        // SAFETY: as for SVM.
        Vendor::Vmx => unsafe { arch_vmx::enable(area, index) }
            .map(Cpu::Vmx)
            .map_err(|e| log::error!("CPU{index}: cannot enable VMX: {e:?}")),
    };
    r.ok()
}

/// Reads a boot module through the identity map.
fn module_bytes(boot: &BootInfo, i: usize) -> Option<&'static [u8]> {
    let m = boot.modules().nth(i)?;
    let end = m.start.checked_add(m.len)?;
    if end > IDENTITY_MAPPED || m.start == 0 {
        return None;
    }
    // SAFETY: the module lies in the identity map and the frame allocator
    // never hands out module memory (memory::init reserved it); nothing
    // writes it, so a shared slice for the machine's lifetime is sound.
    Some(unsafe { core::slice::from_raw_parts(m.start as *const u8, m.len as usize) })
}

/// Builds every domain and runs them on the boot CPU (and the APs).
pub fn start(boot: &BootInfo, apic: LocalApic, local_exits: bool) -> ! {
    LOCAL_ON.store(local_exits, SeqCst);
    if !local_exits {
        log::info!("local=off: every exit takes the global path");
    }
    platform::mask_legacy_pic();
    HOST_APIC.call_once(|| apic);
    hostplat::register_cpu(0, apic.id());
    let Some(cpu) = enable_cpu(0) else {
        crate::machine::stop(false)
    };
    BOOT_CPU.call_once(|| cpu);
    let maps = match cpu {
        Cpu::Svm(c) => {
            log::info!("SVM enabled: {:?}", c.features());
            let (Some(msrpm), Some(iopm)) = (frames(2), frames(3)) else {
                log::error!("no memory for the permission maps");
                crate::machine::stop(false)
            };
            // SAFETY: fresh contiguous identity-mapped frames, never freed.
            Maps::Svm(unsafe { arch_svm::PermissionMaps::init(msrpm, iopm) })
        }
        Cpu::Vmx(c) => {
            let f = c.features();
            log::info!(
                "VMX enabled: EPT, unrestricted guest, VPID {}, INVEPT single {}",
                f.vpid,
                f.invept_single
            );
            let (Some(msr), Some(io)) = (frames(1), frames(2)) else {
                log::error!("no memory for the permission maps");
                crate::machine::stop(false)
            };
            // SAFETY: fresh contiguous identity-mapped frames, never freed.
            Maps::Vmx(unsafe { arch_vmx::PermissionMaps::init(msr, io) })
        }
    };
    MAPS.call_once(|| maps);

    // The plan lives as long as the machine: a domain that reboots is
    // built again from it (`on_reboot=restart`).
    let cmdlines: &'static [&'static str] = Vec::leak(
        boot.modules()
            .map(|m| &*alloc::string::String::leak(m.cmdline.as_str().into()))
            .collect(),
    );
    let plans = match launch::plan(cmdlines) {
        Ok(p) => p,
        Err(e) => {
            log::error!("launch plan: {e}");
            crate::machine::stop(false)
        }
    };
    // The lock-order check (debug builds) names CPUs by their index.
    hv_core::lockorder::set_cpu_source(|| crate::cpu::this_cpu() as usize);
    HV.call_once(|| HvLock(Mutex::new(Hypervisor::new(HostPlatform { apic }))));
    // With a service domain, the others get a xenstore connection it
    // serves, and it gets the list of domains on its command line.
    let store_server = plans.service();
    let mut domain_list = alloc::string::String::new();
    if store_server.is_some() {
        let _ = plans.write_domain_list(&mut domain_list);
    }
    let domain_list: &'static str = alloc::string::String::leak(domain_list);
    let mut slots = Vec::new();
    let mut relaunch = Vec::new();
    for p in plans.iter() {
        let Some(kernel) = module_bytes(boot, p.kernel) else {
            log::error!("d{}: kernel module {} is unreadable", p.domid, p.kernel);
            crate::machine::stop(false)
        };
        let r = Relaunch {
            plan: p.clone(),
            kernel,
            ramdisk: p.ramdisk.and_then(|i| module_bytes(boot, i)),
            store_server,
            extra_cmdline: if p.service { domain_list } else { "" },
        };
        let d = {
            let mut hv = HV.get().expect("set above").lock();
            build_domain(&mut hv, cpu, &r)
        };
        let d = match d {
            Ok(d) => d,
            Err(e) => {
                log::error!("d{}: {e}", p.domid);
                crate::machine::stop(false)
            }
        };
        for v in 0..d.vcpus {
            slots.push(Slot {
                d: d.domid,
                v,
                tables: Mutex::new((d.root, d.epoch.clone())),
                backend: Mutex::new(None),
            });
        }
        let first = slots.len() - d.vcpus as usize;
        *slots[first].backend.lock() = Some(d.vcpu0);
        relaunch.push(r);
    }
    RELAUNCH.call_once(|| relaunch);
    if slots.is_empty() {
        log::error!("no domains to run");
        crate::machine::stop(false)
    }
    let mut sched = Scheduler::new(crate::smp::CPUS_ONLINE.load(SeqCst));
    {
        let hv = HV.get().expect("set above").lock();
        let now = hv.now();
        for sl in &slots {
            sched.add_vcpu(key(sl.d, sl.v), DEFAULT_WEIGHT, None);
            if sl.v == 0 {
                sched.wake(key(sl.d, sl.v), now);
            }
        }
    }
    SCHED.call_once(|| OrderedMutex::new(LockClass::Scheduler, sched));
    SLOTS.call_once(|| slots);
    cpu.take_host_interrupts();
    GO.store(true, SeqCst);
    let online = crate::smp::CPUS_ONLINE.load(SeqCst);
    let hv = HV.get().expect("set above");
    for p in 1..online {
        hv_core::platform::Platform::kick_cpu(&*hv.lock().platform, p);
    }
    cpu_loop(0, &apic)
}

/// What building a domain again needs: its plan and its modules.
struct Relaunch {
    plan: launch::DomainPlan<'static>,
    kernel: &'static [u8],
    ramdisk: Option<&'static [u8]>,
    store_server: Option<u16>,
    extra_cmdline: &'static str,
}

/// A built domain with its nested tables and its boot vCPU's backend.
struct Launched {
    domid: DomId,
    vcpus: u32,
    root: u64,
    epoch: TlbEpoch,
    vcpu0: Box<dyn VcpuBackend + Send>,
}

/// Builds the domain of `r` (nested tables, memory, kernel, boot vCPU).
fn build_domain(
    hv: &mut Hypervisor<HostPlatform>,
    cpu: Cpu,
    r: &Relaunch,
) -> Result<Launched, alloc::string::String> {
    use alloc::format;
    let p = &r.plan;
    let opts = builder::BuildOptions {
        store_server: r.store_server,
        extra_cmdline: r.extra_cmdline,
    };
    // The domain's nested tables (NPT or EPT) and what its vCPUs need
    // of them.
    let tables: Result<(Box<dyn NestedPaging>, TlbEpoch), _> = match cpu {
        // SAFETY: HostFrames hands out identity-mapped frames owned by
        // the tables until they give them back.
        Cpu::Svm(_) => Npt::new(unsafe { IdentityTables::new(HostFrames) })
            .map(|t| (t.epoch(), t))
            .map(|(e, t)| (Box::new(t) as Box<dyn NestedPaging>, e)),
        // SAFETY: as for the NPT above.
        Cpu::Vmx(_) => Ept::new(unsafe { arch_vmx::IdentityTables::new(HostFrames) })
            .map(|t| (t.epoch(), t))
            .map(|(e, t)| (Box::new(t) as Box<dyn NestedPaging>, e)),
    };
    let (tables, epoch) = tables.map_err(|e| format!("nested page tables: {e:?}"))?;
    let root = tables.root();
    let t0 = platform::rdtsc();
    let b = builder::build_with(hv, p, &opts, r.kernel, r.ramdisk, tables)
        .map_err(|e| format!("{e}"))?;
    log::debug!(
        "d{}: built in {} TSC ticks",
        p.domid,
        platform::rdtsc() - t0
    );
    log::info!(
        "d{}: {} MiB, {} vCPU(s), entry {:#x}, start_info {:#x}{}",
        b.domid.0,
        p.mem >> 20,
        b.vcpus,
        b.entry,
        b.vcpu0.rbx,
        match (p.privileged, p.service) {
            (true, true) => ", privileged, service",
            (true, false) => ", privileged",
            (false, true) => ", service",
            (false, false) => "",
        }
    );
    if p.directmap != 0
        && let Some(e) = hv.domain(b.domid).and_then(|dom| {
            dom.memory_map
                .iter()
                .find(|e| e.r#type == 1 && e.addr >= p.mem && e.size == p.directmap)
                .copied()
        })
    {
        log::info!(
            "d{}: direct-mapped RAM {:#x}-{:#x} (guest-physical = host-physical)",
            b.domid.0,
            { e.addr },
            e.addr + e.size
        );
    }
    // Device assignment (hv_core::pci): configuration space, memory BARs
    // identity-mapped, I/O BAR ports forwarded.
    for bdf in p.pci_functions() {
        if let Err(e) = hv.assign_pci(b.domid, bdf) {
            let _ = hv.destroy_domain(b.domid);
            return Err(format!("PCI function {bdf}: cannot assign it ({e:?})"));
        }
        if let Some(f) = hv
            .domain(b.domid)
            .and_then(|dom| dom.pci.assigned().find(|f| f.bdf == bdf))
        {
            log::info!(
                "d{}: PCI function {bdf} assigned: memory {:x?}, ports {:x?}, line {} pin {}",
                b.domid.0,
                f.mem,
                f.io,
                f.irq.0,
                f.irq.1
            );
        }
    }
    let init = vcpu_init(&b.vcpu0);
    let Some(vcpu0) = make_backend(root, &epoch, &init) else {
        let _ = hv.destroy_domain(b.domid);
        return Err("no memory for a VMCB/VMCS".into());
    };
    Ok(Launched {
        domid: b.domid,
        vcpus: b.vcpus,
        root,
        epoch,
        vcpu0,
    })
}

/// Whether `d` shut down to reboot and waits for the run loop: to be built
/// again (`on_reboot=restart`) or destroyed (`on_reboot=destroy`).
fn reboot_pending(hv: &Hypervisor<HostPlatform>, d: DomId) -> bool {
    hv.domain(d)
        .is_some_and(|dom| dom.state == DomainState::Shutdown(ShutdownReason::Reboot))
        && RELAUNCH
            .get()
            .is_some_and(|rl| rl.iter().any(|r| r.plan.domid == d.0))
}

/// Xen's `on_reboot`, done by the run loop as a toolstack would: a domain
/// that shut down to reboot, once none of its vCPUs is on a CPU, is
/// destroyed (so the service domain releases it) and, with
/// `on_reboot=restart`, built again from its modules under the same id (a
/// new `unique_id` tells the service domain it is a new domain). Both
/// happen under hv-core's lock, so nobody sees the id free in between.
/// Its slots get the new tables; vCPU 0 a new backend and a wake-up.
fn reboot_domains(
    hv: &mut Hypervisor<HostPlatform>,
    sched: &mut Scheduler,
    slots: &[Slot],
    now: u64,
) {
    let (Some(rl), Some(&cpu)) = (RELAUNCH.get(), BOOT_CPU.get()) else {
        return;
    };
    for r in rl {
        let d = DomId(r.plan.domid);
        if !reboot_pending(hv, d) {
            continue;
        }
        let on_cpu = hv.domain(d).is_some_and(|x| {
            x.vcpus
                .iter()
                .any(|v| v.runstate.state == xen_abi::vcpu::RUNSTATE_running)
        });
        if on_cpu {
            continue;
        }
        let _ = hv.destroy_domain(d);
        for sl in slots.iter().filter(|s| s.d == d) {
            // The old backends point at the old tables: gone with them,
            // their VMCB/VMCS frames back to the allocator (no CPU runs
            // them: all are home, and VMX cleared its VMCS after the run).
            if let Some(b) = sl.backend.lock().take()
                && let Some(f) = b.control_frame()
            {
                drop(b);
                hostplat::free_frame(f);
            }
        }
        if !r.plan.restarts() {
            log::info!("{d}: not restarted (on_reboot=destroy, or the service domain)");
            continue;
        }
        log::info!("{d}: rebooting (on_reboot=restart)");
        match build_domain(hv, cpu, r) {
            Ok(l) => {
                for sl in slots.iter().filter(|s| s.d == d) {
                    *sl.tables.lock() = (l.root, l.epoch.clone());
                }
                if let Some(sl) = slots.iter().find(|s| s.d == d && s.v == 0) {
                    *sl.backend.lock() = Some(l.vcpu0);
                }
                // With a store, it runs once the service domain has
                // introduced it (as a toolstack unpauses after
                // XS_INTRODUCE); hv-core then reports vCPU 0 woken.
                let introduced_later =
                    r.store_server.is_some() && hv.pause_until_introduced(d).is_ok();
                if !introduced_later && let Some(p) = sched.wake(key(d, 0), now) {
                    hv_core::platform::Platform::kick_cpu(&*hv.platform, p);
                }
            }
            Err(e) => log::error!("{d}: cannot restart: {e}"),
        }
    }
}

/// The backend registers for a loader-made initial state.
fn vcpu_init(s: &guest_loader::InitialVcpuState) -> VcpuInit {
    let seg = |x: guest_loader::SegmentState| arch_svm::vcpu::SegmentInit {
        selector: x.selector,
        base: x.base,
        limit: x.limit,
        attrib: x.attributes,
    };
    VcpuInit {
        rip: s.rip,
        gprs: hv_core::arch::Gprs {
            rbx: s.rbx,
            ..Default::default()
        },
        rflags: s.rflags,
        cr0: s.cr0,
        cr3: s.cr3,
        cr4: s.cr4,
        efer: s.efer,
        cs: seg(s.cs),
        ds: seg(s.ds),
        es: seg(s.es),
        fs: seg(s.fs),
        gs: seg(s.gs),
        ss: seg(s.ss),
        tr: seg(s.tr),
        ldtr: seg(s.ldtr),
        gdtr: arch_svm::vcpu::TableInit {
            base: s.gdtr.base,
            limit: s.gdtr.limit,
        },
        idtr: arch_svm::vcpu::TableInit {
            base: s.idtr.base,
            limit: s.idtr.limit,
        },
        dr6: s.dr6,
        dr7: s.dr7,
    }
}

/// A secondary vCPU started by a SIPI: real mode at `vector << 12`, as
/// after INIT (CS = vector << 8, IP = 0).
fn sipi_init(vector: u8) -> VcpuInit {
    let seg = |selector: u16, base: u64, attrib: u16| arch_svm::vcpu::SegmentInit {
        selector,
        base,
        limit: 0xFFFF,
        attrib,
    };
    let data = seg(0, 0, 0x93);
    VcpuInit {
        rip: 0,
        rflags: 0x2,
        cr0: 0x10, // ET
        cs: seg(u16::from(vector) << 8, u64::from(vector) << 12, 0x9B),
        ds: data,
        es: data,
        fs: data,
        gs: data,
        ss: data,
        tr: seg(0, 0, 0x8B),
        ldtr: seg(0, 0, 0x82),
        gdtr: arch_svm::vcpu::TableInit {
            base: 0,
            limit: 0xFFFF,
        },
        idtr: arch_svm::vcpu::TableInit {
            base: 0,
            limit: 0xFFFF,
        },
        dr6: 0xFFFF_0FF0,
        dr7: 0x400,
        ..VcpuInit::default()
    }
}

/// Creates a vCPU backend of this machine's vendor.
fn make_backend(
    root: u64,
    epoch: &TlbEpoch,
    init: &VcpuInit,
) -> Option<Box<dyn VcpuBackend + Send>> {
    let frame = frames(1)?;
    let cpu = *BOOT_CPU.get()?;
    let maps = MAPS.get()?;
    let vcpu: Box<dyn VcpuBackend + Send> = match (cpu, maps) {
        (Cpu::Svm(c), Maps::Svm(maps)) => {
            // SAFETY: the VMCB frame is fresh and owned by this vCPU; the
            // maps and the domain's tables live as long as the machine.
            Box::new(unsafe { SvmVcpu::new(frame, maps, root, epoch.clone(), c.features(), init) })
        }
        (Cpu::Vmx(c), Maps::Vmx(maps)) => {
            // SAFETY: as for SVM, with a VMCS frame.
            Box::new(unsafe { VmxVcpu::new(frame, maps, root, epoch.clone(), c.features(), init) })
        }
        _ => unreachable!("one vendor per machine"),
    };
    Some(vcpu)
}

/// Gives the scheduler the vCPUs hv-core woke, kicking the CPUs it names.
fn drain_wakes(hv: &mut Hypervisor<HostPlatform>, sched: &mut Scheduler, now: u64) {
    for (d, v) in hv.take_woken() {
        if let Some(p) = sched.wake(key(d, v), now) {
            hv_core::platform::Platform::kick_cpu(&*hv.platform, p);
        }
    }
}

/// Creates the backends of vCPUs that INIT-SIPI-SIPI started.
fn start_vcpus(hv: &mut Hypervisor<HostPlatform>, sched: &mut Scheduler, slots: &[Slot], now: u64) {
    for (d, v, start) in hv.take_vcpu_starts() {
        let Some(sl) = slots.iter().find(|s| s.d == d && s.v == v) else {
            continue;
        };
        let (root, epoch) = sl.tables.lock().clone();
        let init = match start {
            VcpuStart::Sipi(vector) => sipi_init(vector),
            VcpuStart::Context(ctx) => VcpuInit::from_hvm_context(&ctx),
        };
        match make_backend(root, &epoch, &init) {
            Some(b) => {
                *sl.backend.lock() = Some(b);
                let _ = hv.vcpu_up(d, v);
                log::info!("{}v{}: started at {:#x}", d, v, init.cs.base + init.rip);
                if let Some(p) = sched.wake(key(d, v), now) {
                    hv_core::platform::Platform::kick_cpu(&*hv.platform, p);
                }
            }
            None => hv.crash(d, "no memory for a secondary vCPU"),
        }
    }
}

/// The scheduler loop of an application processor.
pub fn ap_main(index: u32, apic: LocalApic) -> ! {
    hostplat::register_cpu(index, apic.id());
    let Some(cpu) = enable_cpu(index) else {
        crate::machine::halt_forever()
    };
    // Sleep (not spin) until the boot CPU has built the domains: it kicks
    // every CPU once GO is set; the timer bounds a missed kick.
    while !GO.load(SeqCst) {
        idle(&apic, SLICE_NS);
    }
    cpu.take_host_interrupts();
    cpu_loop(index, &apic)
}

/// Hands the device interrupts that arrived (GSIs, `ioapic::take_pending`)
/// to hv-core, which raises the bound pirq ports.
fn deliver_pirqs(hv: &mut Hypervisor<HostPlatform>) {
    let mut fired = crate::ioapic::take_pending();
    while fired != 0 {
        let gsi = fired.trailing_zeros();
        fired &= fired - 1;
        hv.gsi_fired(gsi);
    }
}

/// Takes pending host interrupts (the handlers only acknowledge them).
fn take_interrupts() {
    // SAFETY: the IDT has handlers for every vector the host enables (the
    // timer, the kick, spurious); they return with IF restored to 0 by the
    // `cli`. The `nop` gives the CPU one instruction boundary with IF=1.
    unsafe { core::arch::asm!("sti", "nop", "cli", options(nomem, nostack)) };
}

/// Arms this CPU's host timer for the end of a vCPU's slice or the
/// earliest guest timer (`earliest`, the timer heap's), whichever comes
/// first, and answers that time. One already past fires at once.
fn arm_slice_timer(apic: &LocalApic, now: u64, slice_end: u64, earliest: &AtomicU64) -> u64 {
    let at = slice_end.min(earliest.load(Acquire));
    apic.arm_timer(TIMER_VECTOR, at.saturating_sub(now).max(1_000));
    at
}

/// Sleeps until an interrupt (kick or timer).
fn idle(apic: &LocalApic, ns: u64) {
    apic.arm_timer(TIMER_VECTOR, ns);
    // SAFETY: `sti; hlt` waits for the next interrupt with no window in
    // which one could be missed (STI's shadow covers HLT); handlers exist.
    unsafe { core::arch::asm!("sti", "hlt", "cli", options(nomem, nostack)) };
}

fn cpu_loop(me: u32, apic: &LocalApic) -> ! {
    let slots = SLOTS.get().expect("set before GO");
    let hv = HV.get().expect("set before GO");
    let sched = SCHED.get().expect("set before GO");
    let (tlb, woken, earliest) = {
        let hv = hv.lock();
        (hv.tlb.clone(), hv.woken_queue(), hv.earliest_timer())
    };
    loop {
        let (now, pick, next_deadline, all_down) = {
            let mut hv = hv.lock();
            let mut sched = sched.lock();
            let now = hv.now();
            deliver_pirqs(&mut hv);
            let mut next = hv.tick(now);
            if me == 0 {
                crate::input::poll(&mut hv);
            }
            drain_wakes(&mut hv, &mut sched, now);
            reboot_domains(&mut hv, &mut sched, slots, now);
            // A domain about to reboot is not down yet.
            let all_down = hv
                .domain_ids()
                .iter()
                .all(|&d| hv.domain(d).is_none_or(|x| !x.is_alive()) && !reboot_pending(&hv, d));
            let mut pick = None;
            while let Some((k, slice)) = sched.pick(me, now) {
                let sl = slots.iter().position(|s| s.d == k.dom && s.v == k.vcpu);
                let backend = sl.and_then(|i| slots[i].backend.lock().take());
                match (sl, backend) {
                    (Some(i), Some(b)) if hv.vcpu_runnable(k.dom, k.vcpu) => {
                        hv.set_vcpu_pcpu(k.dom, k.vcpu, me);
                        hv.set_runstate(k.dom, k.vcpu, xen_abi::vcpu::RUNSTATE_running);
                        pick = Some((i, b, slice));
                        break;
                    }
                    (i, b) => {
                        // Not runnable after all (domain dead, never
                        // started): put it back and let it sleep.
                        if let (Some(i), Some(b)) = (i, b) {
                            *slots[i].backend.lock() = Some(b);
                        }
                        sched.descheduled(k, me, now, false);
                    }
                }
            }
            if let Some(t) = sched.next_event() {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
            (now, pick, next, all_down)
        };
        if all_down {
            finish(me);
        }
        let Some((i, mut vcpu, slice)) = pick else {
            let wait =
                next_deadline.map_or(SLICE_NS, |t| t.saturating_sub(now).clamp(1_000, SLICE_NS));
            idle(apic, wait);
            continue;
        };
        let s = &slots[i];
        let k = key(s.d, s.v);
        // The domain's own lock, for the exits that touch only it.
        let local = if LOCAL_ON.load(Relaxed) {
            hv.lock().local(s.d)
        } else {
            None
        };
        let slice = slice.clamp(100_000, SLICE_NS);
        let slice_end = now + slice;
        let mut armed = arm_slice_timer(apic, now, slice_end, &earliest);
        loop {
            if !local
                .as_ref()
                .is_some_and(|l| l.prepare_entry(s.v, vcpu.as_mut()))
            {
                hv.lock().prepare_entry(s.d, s.v, vcpu.as_mut());
            }
            // In guest mode from here until the exit, for TLB shootdowns
            // (hv_core::tlb): before the backend reads the domain's epoch.
            tlb.enter(me, s.d);
            let exit = vcpu.run();
            tlb.exit(me);
            ExitCount::mine(me).all.fetch_add(1, Relaxed);
            // Another CPU is stopping the machine. Its NMI parks us in the
            // handler; this catches an NMI the exit consumed (VMX).
            if crate::fatal::stopping() {
                crate::fatal::park()
            }
            if exit == VmExit::ExternalInterrupt {
                take_interrupts();
            }
            // The host timer fired (for the slice's end or a guest
            // timer): never resumed locally, and re-armed below before
            // the vCPU runs again. The TSC may say the slice has a few
            // microseconds left (the APIC timer and the TSC are calibrated
            // apart); a vCPU resumed with no host timer armed would stay
            // in guest mode for as long as the guest makes no exit (Linux
            // spinning for timer ticks in `try_to_generate_entropy` did,
            // until some device interrupt happened to come).
            let timer_out = exit == VmExit::ExternalInterrupt && apic.timer_expired();
            let local_action = local
                .as_ref()
                .and_then(|l| l.handle_exit(s.v, vcpu.as_mut(), exit));
            if let Some(l) = local.as_ref()
                && local_action == Some(ExitAction::Resume)
                && !timer_out
                && l.now() < slice_end
                && !crate::ioapic::pending()
            {
                ExitCount::mine(me).local.fetch_add(1, Relaxed);
                // Who it woke goes to the scheduler now, as after a global
                // exit (lock order: the scheduler, then the queue).
                if l.take_woke() {
                    let now = l.now();
                    let mut sched = sched.lock();
                    let queued = core::mem::take(&mut *woken.lock());
                    for (d, v) in queued {
                        if let Some(p) = sched.wake(key(d, v), now) {
                            hv_core::platform::Platform::kick_cpu(l.platform(), p);
                        }
                    }
                }
                // A timer this exit set (a singleshot timer) sooner than
                // the host timer is armed for.
                if earliest.load(Acquire) < armed {
                    armed = arm_slice_timer(apic, l.now(), slice_end, &earliest);
                }
                continue;
            }
            if local_action.is_none() {
                GLOBAL_EXITS[exit_kind(&exit)].fetch_add(1, Relaxed);
                if exit == VmExit::Hypercall {
                    let nr = (vcpu.gprs().rax & 0xFFFF_FFFF).min(64) as usize;
                    GLOBAL_HYPERCALLS[nr].fetch_add(1, Relaxed);
                }
            }
            if let Some(l) = local.as_ref() {
                // The global block below drains the queue anyway.
                l.take_woke();
            }
            let mut hv = hv.lock();
            deliver_pirqs(&mut hv);
            let action = match local_action {
                Some(a) => a,
                None => hv.handle_exit(s.d, s.v, vcpu.as_mut(), exit),
            };
            let now = hv.now();
            // Guest timers due in the middle of the slice fire now, not at
            // its end (the running vCPU's VIRQ_TIMER before its next entry).
            if earliest.load(Acquire) <= now {
                hv.tick(now);
            }
            let mut sched = sched.lock();
            start_vcpus(&mut hv, &mut sched, slots, now);
            let stop = match action {
                ExitAction::Resume if now < slice_end => None,
                ExitAction::Resume | ExitAction::Yield => Some(true),
                ExitAction::Block | ExitAction::Dead => Some(false),
            };
            if let Some(runnable) = stop {
                // The backend goes home before the scheduler can hand the
                // vCPU to another CPU.
                *s.backend.lock() = Some(vcpu);
                sched.descheduled(k, me, now, runnable);
                let st = hv.idle_runstate(s.d, s.v);
                hv.set_runstate(s.d, s.v, st);
                drain_wakes(&mut hv, &mut sched, now);
                break;
            }
            drain_wakes(&mut hv, &mut sched, now);
            if timer_out || earliest.load(Acquire) < armed {
                armed = arm_slice_timer(apic, now, slice_end, &earliest);
            }
        }
    }
}

/// Every domain has shut down: report and stop the machine (boot CPU), or
/// park (the others).
fn finish(me: u32) -> ! {
    if me != 0 {
        crate::machine::halt_forever()
    }
    let hv = HV.get().expect("set").lock();
    let mut clean = true;
    for d in hv.domain_ids() {
        if let Some(dom) = hv.domain(d) {
            let reason = match dom.state {
                DomainState::Shutdown(r) => r,
                _ => ShutdownReason::Crash,
            };
            clean &= reason == ShutdownReason::Poweroff;
            log::info!("{}: {:?}", d, reason);
        }
    }
    // Destroyed ones (on_reboot=destroy, a failed restart) did not power
    // off.
    for r in RELAUNCH.get().into_iter().flatten() {
        let d = DomId(r.plan.domid);
        if hv.domain(d).is_none() {
            clean = false;
            log::info!("{d}: destroyed");
        }
    }
    log::info!(
        "all domains shut down ({}): {} VM exits, {} of them domain-local",
        if clean { "cleanly" } else { "NOT cleanly" },
        EXITS.iter().map(|c| c.all.load(SeqCst)).sum::<u64>(),
        EXITS.iter().map(|c| c.local.load(SeqCst)).sum::<u64>()
    );
    let mut kinds = alloc::string::String::new();
    for (k, n) in EXIT_KINDS.iter().zip(&GLOBAL_EXITS) {
        let n = n.load(SeqCst);
        if n != 0 {
            let _ = write!(kinds, " {k} {n}");
        }
    }
    let mut calls = alloc::string::String::new();
    for (nr, n) in GLOBAL_HYPERCALLS.iter().enumerate() {
        let n = n.load(SeqCst);
        if n != 0 {
            let _ = write!(calls, " #{nr} {n}");
        }
    }
    log::info!("global-path exits:{kinds}; their hypercalls:{calls}");
    let (n, deliver, unmask, handled) = crate::ioapic::latency();
    let us = |t: u64| t.saturating_mul(1_000_000) / crate::platform::tsc_hz().max(1);
    log::info!(
        "device interrupts: {n}; mean from the interrupt to its delivery {} us, to the owner's EOI {} us (from delivery {} us)",
        us(deliver),
        us(unmask),
        us(handled)
    );
    log::info!(
        "delivery to EOI: histogram {:?} (upper bounds, us: {:?}, then more)",
        crate::ioapic::HIST
            .iter()
            .map(|h| h.load(SeqCst))
            .collect::<alloc::vec::Vec<_>>(),
        crate::ioapic::HIST_US
    );
    drop(hv);
    crate::machine::stop(clean)
}
