//! The hypervisor state: every domain, and the entry points the per-CPU
//! loop calls (exits, upcall injection, timers).
//!
//! Two ways in (docs/architecture.md §10, the lock map): the image wraps
//! one [`Hypervisor`] in its global lock, and while a CPU holds it every
//! domain is checked out of its [`DomainCell`] ([`Hypervisor::hold`]), so
//! the methods here work on `&mut self` as single-threaded code. Between
//! two holds the domains are back in their cells, and each CPU handles the
//! exits that touch only its domain under that cell's lock alone
//! ([`crate::local`]). Guest execution happens outside every lock.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::arch::{NestedPaging, P2mPerms, VcpuBackend, VmExit};
use crate::domain::{Caps, Domain, DomainState, ShutdownReason, VcpuState};
use crate::evtchn::ChanState;
use crate::guestmem::GuestMem;
use crate::lockorder::{Held, LockClass, OrderedMutex};
use crate::p2m::{BLOCK_FRAMES, BlockMask, P2m, P2mEntry, P2mKind, frames_in};
use crate::pagewalk::{GuestVirt, PagingMode};
use crate::platform::Platform;
use crate::time::{TimeScale, TimerEntry, TimerHeap, TimerKind};
use crate::tlb::{GuestModeClock, Stamp};
use crate::types::{DomId, Errno, Gfn, Hfn, PAGE_SIZE, XenResult};

/// What the per-CPU loop does after an exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitAction {
    /// Enter the same vCPU again.
    Resume,
    /// Give the CPU to someone else, the vCPU stays runnable.
    Yield,
    /// The vCPU is blocked until an event or timeout.
    Block,
    /// The domain is gone (shut down or crashed): stop running it.
    Dead,
}

/// How to build a domain.
#[derive(Clone, Debug)]
pub struct DomainConfig {
    /// The id to use (the builder's plan), or `None` for the next free one.
    pub domid: Option<u16>,
    /// A name for logs.
    pub name: String,
    /// Control domain.
    pub privileged: bool,
    /// vCPUs.
    pub vcpus: u32,
    /// Maximum frames the domain may own.
    pub max_pages: u64,
}

/// How a secondary vCPU starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuStart {
    /// By INIT-SIPI-SIPI: real mode at `vector << 12`, CS = `vector << 8`.
    Sipi(u8),
    /// By `VCPUOP_up` after `VCPUOP_initialise`: the state of this
    /// context (checked as Xen's `arch_set_info_hvm_guest` does, see
    /// [`crate::vcpu_op`]).
    Context(xen_abi::vcpu::VcpuHvmContext),
}

/// The hypervisor core.
pub struct Hypervisor<P: Platform> {
    /// The machine.
    pub platform: Arc<P>,
    /// Every domain, while this hypervisor is held ([`Hypervisor::hold`]):
    /// checked out of its [`DomainCell`].
    pub(crate) domains: BTreeMap<u16, Box<Domain>>,
    /// Every domain's own lock, by id: the registry, read-mostly (written
    /// when a domain is created or destroyed, with every domain held).
    cells: Arc<spin::RwLock<Cells>>,
    /// Whether the domains are checked out into `domains`.
    held: bool,
    next_domid: u16,
    /// Set by hypercall handlers that block, yield or kill.
    pub(crate) action: ExitAction,
    /// Set by a handler that wants the call re-executed (continuation).
    pub(crate) restart: bool,
    /// vCPUs woken (Blocked or Polling to Runnable) for the scheduler: a
    /// leaf lock, also pushed to by the domain-local path.
    pub(crate) woken: Arc<OrderedMutex<Vec<(DomId, u32)>>>,
    /// The vCPU whose exit is being handled.
    current: Option<(DomId, u32)>,
    /// Every pending timer.
    /// Every pending timer: a leaf lock, also taken by the domain-local
    /// path (singleshot timers) under a domain's lock.
    pub(crate) timers: Arc<OrderedMutex<TimerHeap>>,
    /// The TSC to system-time scale published in pvclock.
    pub scale: TimeScale,
    /// Secondary vCPUs started (INIT-SIPI-SIPI or `VCPUOP_up`), for the
    /// image to create their backends.
    pub(crate) starts: Vec<(DomId, u32, VcpuStart)>,
    /// When each vCPU's APIC timer is due, to drop stale heap entries.
    lapic_due: BTreeMap<(u16, u32), u64>,
    /// Domains created, shut down or destroyed since the xenstore domain
    /// last asked (`XEN_DOMCTL_get_domain_state` with `DOMID_INVALID`).
    pub(crate) changed: BTreeSet<u16>,
    /// The next [`Domain::unique_id`].
    next_unique: u64,
    /// Which CPUs are in guest mode (the image's run loop reports entries
    /// and exits): what a TLB shootdown waits for ([`crate::tlb`]).
    pub tlb: Arc<GuestModeClock>,
    /// Frames and destroyed domains waiting for their shootdown.
    pub(crate) retire: Retire,
}

/// Frames and destroyed domains (with their nested tables) waiting until
/// no CPU can still reach them through its TLB ([`crate::tlb`]).
#[derive(Default)]
pub(crate) struct Retire {
    /// Given back since the last [`Hypervisor::settle`]: no stamp yet.
    frames: Vec<Hfn>,
    domains: Vec<Domain>,
    /// Stamped, oldest first.
    pending: VecDeque<(Stamp, Vec<Hfn>, Vec<Domain>)>,
}

impl Retire {
    /// A frame the tables no longer map (or are about to stop mapping
    /// before the next settle): freed after the shootdown.
    pub(crate) fn frame(&mut self, hfn: Hfn) {
        self.frames.push(hfn);
    }

    /// Frames waiting, stamped or not.
    pub(crate) fn waiting(&self) -> usize {
        self.frames.len() + self.pending.iter().map(|p| p.1.len()).sum::<usize>()
    }
}

/// The registry of domain cells, by id.
pub(crate) type Cells = BTreeMap<u16, Arc<DomainCell>>;

/// One domain's own lock. While no CPU holds the whole hypervisor, the
/// domain's state lives here and a CPU running one of its vCPUs handles
/// the exits that touch only this domain under this lock alone
/// ([`crate::local`]). The global path checks every domain out of its
/// cell ([`Hypervisor::hold`]) and back ([`Hypervisor::release`]).
///
/// Aligned to its own cache lines, so that two CPUs running two domains
/// never share one.
#[repr(align(128))]
pub struct DomainCell {
    pub(crate) slot: OrderedMutex<Option<Box<Domain>>>,
}

impl Default for DomainCell {
    fn default() -> Self {
        DomainCell {
            slot: OrderedMutex::new(LockClass::Domain, None),
        }
    }
}

impl DomainCell {
    /// Runs `f` on the domain if it is in its cell (not checked out by the
    /// global path, not destroyed); `None` otherwise.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Domain) -> Option<R>) -> Option<R> {
        let mut slot = self.slot.lock();
        f(slot.as_deref_mut()?)
    }
}

impl<P: Platform> Hypervisor<P> {
    /// A hypervisor with no domains.
    pub fn new(platform: P) -> Self {
        let scale = TimeScale::for_hz(platform.tsc_hz());
        Hypervisor {
            current: None,
            starts: Vec::new(),
            lapic_due: BTreeMap::new(),
            changed: BTreeSet::new(),
            next_unique: 1,
            tlb: Arc::new(GuestModeClock::default()),
            retire: Retire::default(),
            scale,
            timers: Arc::new(OrderedMutex::new(LockClass::Leaf, TimerHeap::default())),
            platform: Arc::new(platform),
            domains: BTreeMap::new(),
            cells: Arc::new(spin::RwLock::new(BTreeMap::new())),
            held: true,
            next_domid: 0,
            action: ExitAction::Resume,
            restart: false,
            woken: Arc::new(OrderedMutex::new(LockClass::Leaf, Vec::new())),
        }
    }

    /// Creates a domain (ids count up from 0, the first is the usual dom0).
    pub fn create_domain(
        &mut self,
        cfg: DomainConfig,
        npt: Box<dyn NestedPaging>,
    ) -> XenResult<DomId> {
        if cfg.vcpus == 0 || cfg.vcpus > 128 {
            return Err(Errno::EINVAL);
        }
        let id = match cfg.domid {
            Some(id) if id >= DomId::FIRST_RESERVED => return Err(Errno::EINVAL),
            Some(id) if self.domains.contains_key(&id) => return Err(Errno::EEXIST),
            Some(id) => id,
            None => {
                while self.domains.contains_key(&self.next_domid) {
                    self.next_domid += 1;
                }
                if self.next_domid >= DomId::FIRST_RESERVED {
                    return Err(Errno::ENOSPC);
                }
                self.next_domid
            }
        };
        let si = self.platform.alloc_frame().ok_or(Errno::ENOMEM)?;
        let id = DomId(id);
        self.next_domid = self.next_domid.max(id.0 + 1);
        let mut npt = npt;
        npt.set_table_limit(crate::p2m::table_limit(cfg.vcpus, cfg.max_pages));
        let mut d = Domain::new(id, cfg.name, cfg.privileged, cfg.vcpus, P2m::new(npt), si);
        d.max_pages = cfg.max_pages;
        d.unique_id = self.next_unique;
        self.next_unique += 1;
        debug_assert!(self.held, "domains are built with the hypervisor held");
        let _registry = Held::take(LockClass::Registry);
        self.cells
            .write()
            .insert(id.0, Arc::new(DomainCell::default()));
        self.domains.insert(id.0, Box::new(d));
        self.write_wallclock(id);
        for v in 0..cfg.vcpus {
            self.update_vcpu_time(id, v);
        }
        self.domain_changed(id);
        Ok(id)
    }

    /// Checks every domain out of its cell, in ascending id order (the lock
    /// order, see docs/architecture.md "Locks"), waiting for any CPU that is
    /// handling a domain-local exit. Everything but [`crate::local`] needs
    /// the hypervisor held; a new hypervisor is.
    pub fn hold(&mut self) {
        if self.held {
            return;
        }
        let _registry = Held::take(LockClass::Registry);
        for (&id, cell) in self.cells.read().iter() {
            if let Some(dom) = cell.slot.lock().take() {
                self.domains.insert(id, dom);
            }
        }
        self.held = true;
    }

    /// Puts every domain back into its cell: CPUs may now handle their
    /// domain-local exits without the global lock.
    pub fn release(&mut self) {
        if !self.held {
            return;
        }
        let _registry = Held::take(LockClass::Registry);
        for (id, dom) in core::mem::take(&mut self.domains) {
            if let Some(cell) = self.cells.read().get(&id) {
                *cell.slot.lock() = Some(dom);
            }
        }
        self.held = false;
    }

    /// Whether the domains are checked out ([`Hypervisor::hold`]).
    pub fn is_held(&self) -> bool {
        self.held
    }

    /// What a CPU needs to handle `d`'s domain-local exits without the
    /// global lock ([`crate::local::LocalDomain`]).
    pub fn local(&self, d: DomId) -> Option<crate::local::LocalDomain<P>> {
        Some(crate::local::LocalDomain::new(
            d,
            self.cells.read().get(&d.0)?.clone(),
            self.platform.clone(),
            self.scale,
            self.timers.clone(),
            self.woken.clone(),
            self.cells.read().clone(),
        ))
    }

    /// Grants `d` the powers `caps` (the launch plan's roles).
    pub fn set_caps(&mut self, d: DomId, caps: Caps) -> XenResult<()> {
        self.domains.get_mut(&d.0).ok_or(Errno::ESRCH)?.caps = caps;
        Ok(())
    }

    /// Records that `d` was created, shut down or destroyed, and raises
    /// `VIRQ_DOM_EXC` in every other domain that bound it (only a domain
    /// with [`Caps::XENSTORE`] may), as Xen's `domain_changed_state` and
    /// `send_global_virq(VIRQ_DOM_EXC)` do.
    pub(crate) fn domain_changed(&mut self, d: DomId) {
        self.changed.insert(d.0);
        let virq = xen_abi::xen::VIRQ_DOM_EXC;
        let watchers: Vec<DomId> = self
            .domains
            .values()
            .filter(|x| x.id != d && x.vcpus.first().is_some_and(|v| v.virq[virq as usize] != 0))
            .map(|x| x.id)
            .collect();
        for w in watchers {
            self.send_virq(w, virq, 0);
        }
    }

    /// System time: nanoseconds since boot, exactly as guests compute it
    /// from the TSC through pvclock.
    pub fn now(&self) -> u64 {
        self.scale.apply(self.platform.tsc())
    }

    /// Publishes vCPU `v`'s `vcpu_time_info`: system time is the scaled
    /// TSC itself (timestamp 0), so every vCPU reads the same clock and it
    /// never needs re-publishing; the version goes odd during the update.
    pub fn update_vcpu_time(&mut self, d: DomId, v: u32) {
        let Some(Some((h, o))) = self
            .domains
            .get(&d.0)
            .and_then(|x| x.vcpu_info.get(v as usize))
            .copied()
        else {
            return;
        };
        let t = o + 32;
        let mut ver = [0u8; 4];
        self.platform.read(h, t, &mut ver);
        let ver = u32::from_le_bytes(ver);
        let odd = (ver | 1).wrapping_add(if ver & 1 == 0 { 0 } else { 2 });
        self.platform.write(h, t, &odd.to_le_bytes());
        let info = xen_abi::xen::VcpuTimeInfo {
            version: odd,
            pad0: 0,
            tsc_timestamp: 0,
            system_time: 0,
            tsc_to_system_mul: self.scale.mul,
            tsc_shift: self.scale.shift,
            flags: xen_abi::xen::XEN_PVCLOCK_TSC_STABLE_BIT,
            pad1: [0; 2],
        };
        use zerocopy::IntoBytes;
        self.platform.write(h, t + 4, &info.as_bytes()[4..]);
        self.platform
            .write(h, t, &odd.wrapping_add(1).to_le_bytes());
    }

    /// Writes the wallclock at system time 0 into `d`'s shared_info, in
    /// the domain's shared_info layout.
    fn write_wallclock(&mut self, d: DomId) {
        let Some((si, compat)) = self
            .domains
            .get(&d.0)
            .map(|x| (x.shared_info, x.has_32bit_shinfo))
        else {
            return;
        };
        let (sec, nsec) = self.platform.wallclock_at_boot();
        // x86_64: wc_version @3072 (odd while updating), wc_sec @3076,
        // wc_nsec @3080, wc_sec_hi @3084; x86_32: @2304, @2308, @2312 and
        // wc_sec_hi in arch_shared_info @2340.
        let (ver, sec_hi) = if compat { (2304, 2340) } else { (3072, 3084) };
        self.platform.write(si, ver, &1u32.to_le_bytes());
        self.platform
            .write(si, ver + 4, &(sec as u32).to_le_bytes());
        self.platform.write(si, ver + 8, &nsec.to_le_bytes());
        self.platform
            .write(si, sec_hi, &((sec >> 32) as u32).to_le_bytes());
        self.platform.write(si, ver, &2u32.to_le_bytes());
    }

    /// Latches the layout of `d`'s shared state from the calling vCPU's
    /// mode (Xen's `hvm_latch_shinfo_size`, at the hypercall page MSR write
    /// and at `HVM_PARAM_CALLBACK_IRQ`): 32-bit unless `long`. The
    /// wallclock is written again in the layout now in force.
    pub(crate) fn latch_shinfo_size(&mut self, d: DomId, long: bool) {
        let Some(dom) = self.domains.get_mut(&d.0) else {
            return;
        };
        dom.has_32bit_shinfo = !long;
        self.write_wallclock(d);
    }

    /// Arms a timer of vCPU `v` (the vCPU's own fields say which are live).
    pub(crate) fn arm_timer(&mut self, d: DomId, v: u32, deadline: u64, kind: TimerKind) {
        self.timers.lock().insert(TimerEntry {
            deadline,
            dom: d,
            vcpu: v,
            kind,
        });
    }

    /// A domain by id.
    pub fn domain(&self, d: DomId) -> Option<&Domain> {
        self.domains.get(&d.0).map(|b| &**b)
    }

    /// A domain by id, writable.
    pub fn domain_mut(&mut self, d: DomId) -> Option<&mut Domain> {
        self.domains.get_mut(&d.0).map(|b| &mut **b)
    }

    /// Ids of every domain.
    pub fn domain_ids(&self) -> Vec<DomId> {
        self.domains.keys().map(|&k| DomId(k)).collect()
    }

    /// Gives `count` frames of RAM to `d` starting at `gfn`.
    pub fn populate(&mut self, d: DomId, gfn: Gfn, count: u64) -> XenResult<()> {
        for i in 0..count {
            let g = Gfn(gfn.0.checked_add(i).ok_or(Errno::EINVAL)?);
            self.populate_one(d, g, P2mKind::Ram)?;
        }
        Ok(())
    }

    /// Gives `d` one frame at `gfn` of the given kind (RAM or special).
    pub fn populate_one(&mut self, d: DomId, gfn: Gfn, kind: P2mKind) -> XenResult<Hfn> {
        let dom = self.domains.get_mut(&d.0).ok_or(Errno::ESRCH)?;
        if dom.tot_pages >= dom.max_pages {
            return Err(Errno::ENOMEM);
        }
        if dom.p2m.contains(gfn) {
            return Err(Errno::EEXIST);
        }
        let h = self.platform.alloc_frame().ok_or(Errno::ENOMEM)?;
        let e = P2mEntry {
            hfn: h,
            kind,
            perms: P2mPerms::RWX,
        };
        if dom.p2m.set(gfn, e).is_err() {
            self.platform.free_frame(h);
            return Err(Errno::ENOMEM);
        }
        dom.tot_pages += 1;
        Ok(h)
    }

    /// Gives `d` the RAM frames `mask` of the 2 MiB block at `gfn`
    /// (512-aligned), none of them mapped yet: one run of host frames that
    /// is zeroed and mapped on first touch (the p2m's lazy blocks), or, when
    /// the host has no free 2 MiB run, zeroed single frames now. The frames
    /// count against the domain's allocation at once.
    pub fn populate_block(&mut self, d: DomId, gfn: Gfn, mask: BlockMask) -> XenResult<()> {
        if !gfn.0.is_multiple_of(BLOCK_FRAMES) || gfn.0.checked_add(BLOCK_FRAMES).is_none() {
            return Err(Errno::EINVAL);
        }
        let dom = self.domains.get_mut(&d.0).ok_or(Errno::ESRCH)?;
        let count: u64 = mask.iter().map(|w| u64::from(w.count_ones())).sum();
        if dom.tot_pages.saturating_add(count) > dom.max_pages {
            return Err(Errno::ENOMEM);
        }
        if count == 0 {
            return Ok(());
        }
        if dom.p2m.overlaps(gfn, &mask) {
            return Err(Errno::EEXIST);
        }
        let Some(h) = self.platform.alloc_block() else {
            for i in frames_in(&mask) {
                self.populate_one(d, Gfn(gfn.0 + i), P2mKind::Ram)?;
            }
            return Ok(());
        };
        let unwanted = mask.map(|w| !w);
        for i in frames_in(&unwanted) {
            self.platform.free_frame(Hfn(h.0 + i));
        }
        let dom = self.domains.get_mut(&d.0).ok_or(Errno::ESRCH)?;
        dom.p2m.add_lazy(gfn, h, mask);
        dom.tot_pages += count;
        Ok(())
    }

    /// Gives `d` a direct-mapped RAM region of `blocks` 2 MiB blocks: one
    /// contiguous run of host frames below 4 GiB, zeroed now and mapped at
    /// guest-physical = host-physical, so a device the domain programs
    /// with its own addresses reaches them without an IOMMU. Counted in
    /// the domain's pages and freed with it like other RAM. Answers the
    /// first frame. `-EINVAL` for no blocks, `-ENOMEM` beyond the domain's
    /// allocation or without such a run, `-EEXIST` if the domain maps
    /// anything at those addresses already (the run is given back).
    pub fn populate_direct(&mut self, d: DomId, blocks: u64) -> XenResult<Gfn> {
        let frames = blocks.checked_mul(BLOCK_FRAMES).ok_or(Errno::EINVAL)?;
        if blocks == 0 {
            return Err(Errno::EINVAL);
        }
        let dom = self.domains.get(&d.0).ok_or(Errno::ESRCH)?;
        if dom.tot_pages.saturating_add(frames) > dom.max_pages {
            return Err(Errno::ENOMEM);
        }
        let h = self
            .platform
            .alloc_contiguous(blocks)
            .ok_or(Errno::ENOMEM)?;
        let give_back = |p: &P| {
            for i in 0..frames {
                p.free_frame(Hfn(h.0 + i));
            }
        };
        if !h.0.is_multiple_of(BLOCK_FRAMES)
            || (h.0..h.0 + frames).any(|g| dom.p2m.contains(Gfn(g)))
        {
            give_back(&self.platform);
            return Err(Errno::EEXIST);
        }
        for i in 0..frames {
            self.platform.zero(Hfn(h.0 + i), 0, PAGE_SIZE);
        }
        let dom = self.domains.get_mut(&d.0).ok_or(Errno::ESRCH)?;
        for b in 0..blocks {
            let at = h.0 + b * BLOCK_FRAMES;
            if dom
                .p2m
                .set_block(Gfn(at), Hfn(at), P2mKind::Ram, P2mPerms::RWX)
                .is_err()
            {
                // The blocks mapped so far are the domain's now (counted
                // below); the rest goes back.
                dom.tot_pages += b * BLOCK_FRAMES;
                for i in b * BLOCK_FRAMES..frames {
                    self.platform.free_frame(Hfn(h.0 + i));
                }
                return Err(Errno::ENOMEM);
            }
        }
        dom.tot_pages += frames;
        Ok(Gfn(h.0))
    }

    /// Whether `gpa` is a lazy frame of `d` the nested tables do not map
    /// yet (its first touch faults).
    pub fn is_lazy(&self, d: DomId, gpa: u64) -> bool {
        self.domains
            .get(&d.0)
            .is_some_and(|x| x.p2m.is_lazy(Gfn::of(gpa)))
    }

    /// Whether `d`'s nested tables map `gpa` now: a not-present fault on
    /// it is stale (another vCPU's first touch of the same lazy block
    /// mapped it while this one waited for the lock).
    pub fn npt_maps(&self, d: DomId, gpa: u64) -> bool {
        self.domains
            .get(&d.0)
            .is_some_and(|x| x.p2m.npt_maps(Gfn::of(gpa)))
    }

    /// A nested page fault of `d` at `gpa` (the frame not present): true
    /// if it was a lazy frame's first touch, now zeroed and mapped, so the
    /// guest just retries the access. `Err` if the nested tables could not
    /// take the mapping (out of table frames).
    pub fn lazy_fault(&mut self, d: DomId, gpa: u64) -> XenResult<bool> {
        let dom = self.domains.get_mut(&d.0).ok_or(Errno::ESRCH)?;
        dom.p2m
            .lazy_fault(Gfn::of(gpa), &*self.platform)
            .map_err(|_| Errno::ENOMEM)
    }

    /// Removes what is mapped at `gfn` in `d`, freeing an owned frame (or
    /// keeping it as a zombie while the hypervisor holds it).
    pub(crate) fn release_gfn(&mut self, d: DomId, gfn: Gfn) -> XenResult<()> {
        let dom = self.domains.get_mut(&d.0).ok_or(Errno::ESRCH)?;
        let e = dom.p2m.remove(gfn).ok_or(Errno::ENOENT)?;
        match e.kind {
            P2mKind::Ram | P2mKind::Special => {
                dom.tot_pages -= 1;
                if dom.is_pinned(e.hfn) {
                    dom.zombies.push(e.hfn);
                } else {
                    self.retire.frame(e.hfn);
                }
            }
            P2mKind::SharedInfo => dom.shared_info_gfn = None,
            P2mKind::GrantTable(_) | P2mKind::Foreign { .. } | P2mKind::Mmio => {}
        }
        Ok(())
    }

    /// Guest-physical memory of `d`.
    pub fn guest_mem(&self, d: DomId) -> Option<GuestMem<'_>> {
        let dom = self.domains.get(&d.0)?;
        Some(GuestMem::new(&dom.p2m, &*self.platform))
    }

    /// Guest-linear memory of `d` under `mode`.
    pub fn guest_virt(&self, d: DomId, mode: PagingMode) -> Option<GuestVirt<'_>> {
        Some(GuestVirt {
            mem: self.guest_mem(d)?,
            mode,
        })
    }

    /// Shuts `d` down with `reason`; its vCPUs stop at their next exit.
    pub fn shutdown(&mut self, d: DomId, reason: ShutdownReason) {
        let Some(dom) = self.domains.get_mut(&d.0) else {
            return;
        };
        if !dom.is_alive() {
            return;
        }
        log::info!("{}: shutdown ({:?})", d, reason);
        dom.state = DomainState::Shutdown(reason);
        let pcpus: Vec<u32> = dom.vcpus.iter().map(|v| v.pcpu).collect();
        for p in pcpus {
            self.platform.kick_cpu(p);
        }
        self.flush_console(d);
        // Tell the xenstore domain (VIRQ_DOM_EXC), as Xen does.
        self.domain_changed(d);
    }

    /// Pauses `d` (the toolstack's `pause`): its vCPUs leave their CPUs at
    /// their next exit and are not scheduled until [`Hypervisor::unpause`].
    pub fn pause(&mut self, d: DomId) -> XenResult<()> {
        let dom = self.domains.get_mut(&d.0).ok_or(Errno::ESRCH)?;
        match dom.state {
            DomainState::Running => dom.state = DomainState::Paused,
            DomainState::Paused => {}
            DomainState::Shutdown(_) => return Err(Errno::EINVAL),
        }
        let pcpus: Vec<u32> = dom.vcpus.iter().map(|v| v.pcpu).collect();
        for p in pcpus {
            self.platform.kick_cpu(p);
        }
        Ok(())
    }

    /// Pauses `d`, a domain with a xenstore connection, until its server
    /// first sends an event on the store channel: what a toolstack does by
    /// introducing a domain it built before unpausing it. The service
    /// domain signals the channel once it has mapped the ring and written
    /// the domain's nodes, so the guest's xenbus finds its store connected
    /// (Linux's late initialisation, racing a store that connects during
    /// `xenbus_init`, can wait forever). Used for a domain built again
    /// after a reboot.
    pub fn pause_until_introduced(&mut self, d: DomId) -> XenResult<()> {
        if self.domain(d).ok_or(Errno::ESRCH)?.store.is_none() {
            return Err(Errno::EINVAL);
        }
        self.pause(d)?;
        if let Some(dom) = self.domains.get_mut(&d.0) {
            dom.await_store = true;
        }
        Ok(())
    }

    /// Lets a paused `d` run again; its runnable vCPUs are reported as
    /// woken for the scheduler.
    pub fn unpause(&mut self, d: DomId) -> XenResult<()> {
        let dom = self.domains.get_mut(&d.0).ok_or(Errno::ESRCH)?;
        if dom.state != DomainState::Paused {
            return Err(Errno::EINVAL);
        }
        dom.state = DomainState::Running;
        let runnable: Vec<u32> = dom
            .vcpus
            .iter()
            .filter(|v| v.state == VcpuState::Runnable)
            .map(|v| v.id)
            .collect();
        self.woken
            .lock()
            .extend(runnable.into_iter().map(|v| (d, v)));
        Ok(())
    }

    /// Kills `d` because of something it did: a crash.
    pub fn crash(&mut self, d: DomId, why: &str) {
        log::warn!("{}: crashed: {}", d, why);
        self.shutdown(d, ShutdownReason::Crash);
    }

    /// Destroys `d`: closes its event channels (the peers see their ports
    /// go unbound), unmaps and frees every frame it owns.
    pub fn destroy_domain(&mut self, d: DomId) -> XenResult<()> {
        let ports: Vec<u32> = {
            let dom = self.domains.get(&d.0).ok_or(Errno::ESRCH)?;
            dom.evtchn.iter().map(|(p, _)| p).collect()
        };
        for p in ports {
            let _ = self.evtchn_close(d, p);
        }
        crate::gnttab::teardown(self, d);
        self.release_pirqs(d);
        self.quiesce_pci(d);
        let mut dom = self.domains.remove(&d.0).ok_or(Errno::ESRCH)?;
        // A CPU still holding the cell finds it empty and takes the global
        // path, which no longer knows the domain.
        let _registry = Held::take(LockClass::Registry);
        self.cells.write().remove(&d.0);
        for (_, e) in dom.p2m.drain() {
            if e.kind.owned() {
                self.retire.frame(e.hfn);
            }
        }
        for z in dom.zombies.drain(..) {
            self.retire.frame(z);
        }
        self.retire.frame(dom.shared_info);
        // Its nested tables too: another CPU may still be running one of
        // its vCPUs (a crash on one vCPU destroys the domain under the
        // others).
        self.retire.domains.push(*dom);
        self.timers.lock().remove_domain(d);
        log::info!("{}: destroyed", d);
        self.domain_changed(d);
        self.settle();
        Ok(())
    }

    /// Completes TLB shootdowns ([`crate::tlb`]): frames and domains given
    /// back since the last call are stamped (after every domain's pending
    /// nested-table flush) and the CPUs in guest mode kicked; whatever an
    /// earlier stamp held is freed once the stamp has passed. Called after
    /// every exit and tick; cheap when nothing waits.
    pub fn settle(&mut self) {
        if !self.retire.frames.is_empty() || !self.retire.domains.is_empty() {
            for dom in self.domains.values_mut() {
                dom.p2m.flush();
            }
            let stamp = self.tlb.stamp();
            for c in stamp.cpus() {
                self.platform.kick_cpu(c);
            }
            let frames = core::mem::take(&mut self.retire.frames);
            let domains = core::mem::take(&mut self.retire.domains);
            self.retire.pending.push_back((stamp, frames, domains));
        }
        while self
            .retire
            .pending
            .front()
            .is_some_and(|(s, _, _)| self.tlb.passed(s))
        {
            let Some((_, mut frames, domains)) = self.retire.pending.pop_front() else {
                break;
            };
            // In address order: a range allocator merges each frame with
            // the one before, where the p2m's (hash) order would leave a
            // freed domain's memory in fragments.
            frames.sort_unstable();
            for f in frames {
                self.platform.free_frame(f);
            }
            // Their nested tables go back to their allocator now.
            drop(domains);
        }
    }

    /// Returns once no CPU can use a translation of `d`'s nested tables
    /// from before the call (Xen's flush of the domain's dirty CPU mask
    /// before an unmap completes): flushes `d`'s tables, kicks the CPUs
    /// running its vCPUs and spins until each has left guest mode. Called
    /// with hv-core's lock held: a CPU counts its exit before it takes the
    /// lock, so the wait ends. Free when no other CPU runs `d`.
    pub fn shootdown_sync(&mut self, d: DomId) {
        if let Some(dom) = self.domains.get_mut(&d.0) {
            dom.p2m.flush();
        }
        let stamp = self.tlb.stamp_domain(d);
        if stamp.is_empty() {
            return;
        }
        for c in stamp.cpus() {
            self.platform.kick_cpu(c);
        }
        while !self.tlb.passed(&stamp) {
            core::hint::spin_loop();
        }
    }

    /// Frames given back by guests that wait for a TLB shootdown.
    pub fn frames_awaiting_shootdown(&self) -> usize {
        self.retire.waiting()
    }

    /// Whether vCPU `v` of `d` wants to run.
    pub fn vcpu_runnable(&self, d: DomId, v: u32) -> bool {
        self.domains.get(&d.0).is_some_and(|dom| {
            dom.state == DomainState::Running
                && dom
                    .vcpus
                    .get(v as usize)
                    .is_some_and(|x| x.state == VcpuState::Runnable)
        })
    }

    /// Records that vCPU `v` of `d` runs on `pcpu` (for kicks).
    pub fn set_vcpu_pcpu(&mut self, d: DomId, v: u32, pcpu: u32) {
        if let Some(x) = self
            .domains
            .get_mut(&d.0)
            .and_then(|dom| dom.vcpus.get_mut(v as usize))
        {
            x.pcpu = pcpu;
        }
    }

    /// Brings a secondary vCPU online (the toolstack or an INIT/SIPI).
    pub fn vcpu_up(&mut self, d: DomId, v: u32) -> XenResult<()> {
        let dom = self.domains.get_mut(&d.0).ok_or(Errno::ESRCH)?;
        let vc = dom.vcpus.get_mut(v as usize).ok_or(Errno::ENOENT)?;
        if vc.state == VcpuState::Offline {
            vc.state = VcpuState::Runnable;
        }
        Ok(())
    }

    /// Wakes a blocked or polling vCPU.
    pub(crate) fn wake(&mut self, d: DomId, v: u32) {
        let now = self.now();
        let w = crate::local::Wakes {
            platform: &*self.platform,
            now,
            woken: &self.woken,
            current: self.current,
            pushed: core::cell::Cell::new(false),
        };
        if let Some(dom) = self.domains.get_mut(&d.0) {
            crate::local::wake_in(dom, &w, v);
        }
    }

    /// Takes the list of vCPUs woken since the last call.
    pub fn take_woken(&mut self) -> Vec<(DomId, u32)> {
        core::mem::take(&mut *self.woken.lock())
    }

    /// Entries in the timer heap, live and stale (statistics, and tests
    /// that a guest cannot grow it).
    pub fn timer_entries(&self) -> usize {
        self.timers.lock().len()
    }

    /// The timer heap's earliest deadline, published with every change
    /// ([`crate::time::NO_TIMER`] when none): a run loop arms its host
    /// timer for it without the global lock.
    pub fn earliest_timer(&self) -> Arc<core::sync::atomic::AtomicU64> {
        self.timers.lock().earliest()
    }

    /// The queue of woken vCPUs itself, for a run loop that drains it
    /// without the global lock after a domain-local exit woke someone
    /// (lock order: the scheduler's lock, then this leaf).
    pub fn woken_queue(&self) -> Arc<OrderedMutex<Vec<(DomId, u32)>>> {
        self.woken.clone()
    }

    /// Fires every timer due at `now` (system time): VIRQ_TIMER for
    /// singleshot and periodic timers, wake-ups for poll timeouts. Returns
    /// the earliest deadline still pending.
    pub fn tick(&mut self, now: u64) -> Option<u64> {
        self.settle();
        loop {
            // The heap's lock only for the pop: firing arms timers again.
            let due = self.timers.lock().pop_due(now);
            let Some(e) = due else {
                break;
            };
            let Some(vc) = self
                .domains
                .get_mut(&e.dom.0)
                .and_then(|x| x.vcpus.get_mut(e.vcpu as usize))
            else {
                continue;
            };
            match e.kind {
                TimerKind::Singleshot => {
                    if vc.singleshot != Some(e.deadline) {
                        continue;
                    }
                    vc.singleshot = None;
                    self.send_virq(e.dom, xen_abi::xen::VIRQ_TIMER, e.vcpu);
                }
                TimerKind::Periodic => {
                    let Some((period, next)) = vc.periodic else {
                        continue;
                    };
                    if next != e.deadline {
                        continue;
                    }
                    // Missed periods are not replayed.
                    let mut n = next.saturating_add(period);
                    if n <= now {
                        n = now.saturating_add(period);
                    }
                    vc.periodic = Some((period, n));
                    self.arm_timer(e.dom, e.vcpu, n, TimerKind::Periodic);
                    self.send_virq(e.dom, xen_abi::xen::VIRQ_TIMER, e.vcpu);
                }
                TimerKind::PollTimeout => {
                    if vc.wake_at != Some(e.deadline) {
                        continue;
                    }
                    self.wake(e.dom, e.vcpu);
                }
                TimerKind::Lapic => {
                    if self.lapic_due.get(&(e.dom.0, e.vcpu)) != Some(&e.deadline) {
                        continue;
                    }
                    self.lapic_due.remove(&(e.dom.0, e.vcpu));
                    if let Some(again) = vc.vlapic.timer_fired(now) {
                        let t = now.saturating_add(again);
                        self.lapic_due.insert((e.dom.0, e.vcpu), t);
                        self.arm_timer(e.dom, e.vcpu, t, TimerKind::Lapic);
                    }
                    self.wake(e.dom, e.vcpu);
                }
            }
        }
        self.timers.lock().next_deadline()
    }

    /// (Re)arms or stops vCPU `v`'s APIC timer.
    pub(crate) fn lapic_timer(&mut self, d: DomId, v: u32, after_ns: Option<u64>) {
        match after_ns {
            Some(ns) => {
                let t = self.now().saturating_add(ns);
                self.lapic_due.insert((d.0, v), t);
                self.arm_timer(d, v, t, TimerKind::Lapic);
            }
            None => {
                self.lapic_due.remove(&(d.0, v));
            }
        }
    }

    /// Delivers an ICR write of vCPU `from` of `d` to its targets.
    pub(crate) fn send_icr(&mut self, d: DomId, from: u32, icr: u64) {
        use crate::vlapic::{Shorthand, decode_icr};
        let (vector, mode, sh, dest) = decode_icr(icr);
        let Some(dom) = self.domains.get(&d.0) else {
            return;
        };
        let targets: Vec<u32> = (0..dom.vcpus.len() as u32)
            .filter(|&t| match sh {
                Shorthand::None => dest == u32::MAX || dom.vcpus[t as usize].vlapic.id == dest,
                Shorthand::SelfOnly => t == from,
                Shorthand::AllIncludingSelf => true,
                Shorthand::AllExcludingSelf => t != from,
            })
            .collect();
        for t in targets {
            let Some(vc) = self
                .domains
                .get_mut(&d.0)
                .and_then(|x| x.vcpus.get_mut(t as usize))
            else {
                continue;
            };
            match mode {
                // Fixed and lowest priority.
                0 | 1 => {
                    vc.vlapic.accept(vector);
                    self.wake(d, t);
                }
                // NMI.
                4 => {
                    vc.vlapic.nmi_pending = true;
                    self.wake(d, t);
                }
                // INIT (level de-assert INITs carry the level bit clear).
                5 if (icr & (1 << 14) != 0 || icr & (1 << 15) == 0) => {
                    vc.vlapic.reset();
                }
                // Startup: only an offline vCPU after INIT starts.
                6 if vc.vlapic.init_received && vc.state == VcpuState::Offline => {
                    vc.vlapic.init_received = false;
                    self.starts.push((d, t, VcpuStart::Sipi(vector)));
                }
                _ => {}
            }
        }
    }

    /// Takes the secondary vCPUs that were started: the image creates
    /// their backends (see [`VcpuStart`]) and then calls
    /// [`Hypervisor::vcpu_up`].
    pub fn take_vcpu_starts(&mut self) -> Vec<(DomId, u32, VcpuStart)> {
        core::mem::take(&mut self.starts)
    }

    // ---- events ----

    /// Raises `port` of `d` (an event from the hypervisor or a peer).
    pub fn evtchn_set_pending(&mut self, d: DomId, port: u32) {
        let Some(dom) = self.domains.get_mut(&d.0) else {
            return;
        };
        if dom.await_store && dom.store.is_some_and(|s| s.port == port) {
            // Its server introduced it: run it, then deliver (once: the
            // flag is down now).
            dom.await_store = false;
            log::info!("{}: introduced by its xenstore domain; unpaused", d);
            let _ = self.unpause(d);
            return self.evtchn_set_pending(d, port);
        }
        let now = self.now();
        let w = crate::local::Wakes {
            platform: &*self.platform,
            now,
            woken: &self.woken,
            current: self.current,
            pushed: core::cell::Cell::new(false),
        };
        if let Some(dom) = self.domains.get_mut(&d.0) {
            crate::local::set_pending_in(dom, &w, port);
        }
    }

    /// Sends VIRQ `virq` of `d` to vCPU `vcpu` (global VIRQs use vCPU 0).
    pub fn send_virq(&mut self, d: DomId, virq: u32, vcpu: u32) {
        let port = self
            .domains
            .get(&d.0)
            .and_then(|dom| dom.vcpus.get(vcpu as usize))
            .and_then(|v| v.virq.get(virq as usize).copied())
            .unwrap_or(0);
        if port != 0 {
            self.evtchn_set_pending(d, port);
        }
    }

    /// Closes `port` of `d` (`EVTCHNOP_close`); an interdomain peer's port
    /// goes back to unbound, as in Xen.
    pub fn evtchn_close(&mut self, d: DomId, port: u32) -> XenResult<()> {
        let dom = self.domains.get_mut(&d.0).ok_or(Errno::ESRCH)?;
        let c = *dom.evtchn.get(port).ok_or(Errno::EINVAL)?;
        match c.state {
            ChanState::Virq(virq) => {
                if let Some(v) = dom.vcpus.get_mut(c.vcpu as usize)
                    && v.virq.get(virq as usize) == Some(&port)
                {
                    v.virq[virq as usize] = 0;
                }
            }
            ChanState::Pirq(n) => self.pirq_unbound(d, n, port),
            ChanState::Interdomain { remote, rport } => {
                if let Some(r) = self.domains.get_mut(&remote.0)
                    && let Some(rc) = r.evtchn.get_mut(rport)
                    && rc.state
                        == (ChanState::Interdomain {
                            remote: d,
                            rport: port,
                        })
                {
                    rc.state = ChanState::Unbound { remote: d };
                }
            }
            _ => {}
        }
        let dom = self.domains.get_mut(&d.0).ok_or(Errno::ESRCH)?;
        dom.evtchn.free(port);
        Ok(())
    }

    // ---- entry and exits ----

    /// Called before entering a vCPU: injects the event-channel upcall
    /// when `evtchn_upcall_pending` is set and a callback vector is
    /// configured, or asks for an interrupt window when the guest cannot
    /// take it now.
    pub fn prepare_entry(&mut self, d: DomId, v: u32, cpu: &mut dyn VcpuBackend) {
        if let Some(dom) = self.domains.get_mut(&d.0) {
            crate::local::prepare_entry(dom, &*self.platform, v, cpu);
        }
    }

    /// Whether vCPU `v`'s upcall flag is set.
    pub(crate) fn upcall_pending(&self, d: DomId, v: u32) -> bool {
        self.domains
            .get(&d.0)
            .is_some_and(|dom| crate::local::upcall_pending(dom, &*self.platform, v))
    }

    /// Handles one exit of vCPU `v` of domain `d`.
    pub fn handle_exit(
        &mut self,
        d: DomId,
        v: u32,
        cpu: &mut dyn VcpuBackend,
        exit: VmExit,
    ) -> ExitAction {
        let action = self.handle_exit_inner(d, v, cpu, exit);
        // Frames the exit gave back wait for their TLB shootdown.
        self.settle();
        action
    }

    fn handle_exit_inner(
        &mut self,
        d: DomId,
        v: u32,
        cpu: &mut dyn VcpuBackend,
        exit: VmExit,
    ) -> ExitAction {
        let alive = self
            .domains
            .get(&d.0)
            .is_some_and(|dom| dom.is_alive() && (v as usize) < dom.vcpus.len());
        if !alive {
            return ExitAction::Dead;
        }
        self.action = ExitAction::Resume;
        self.restart = false;
        self.current = Some((d, v));
        // A vCPU taking an exit was running, whoever scheduled it.
        if self
            .domains
            .get(&d.0)
            .is_some_and(|x| x.vcpus[v as usize].runstate.state != xen_abi::vcpu::RUNSTATE_running)
        {
            self.set_runstate(d, v, xen_abi::vcpu::RUNSTATE_running);
        }
        let action = crate::exits::handle(self, d, v, cpu, exit);
        self.current = None;
        let dead = self.domains.get(&d.0).is_none_or(|dom| !dom.is_alive());
        if dead {
            return ExitAction::Dead;
        }
        // A paused domain finishes the exit, then leaves the CPU.
        if action == ExitAction::Resume
            && self
                .domains
                .get(&d.0)
                .is_some_and(|dom| dom.state == DomainState::Paused)
        {
            return ExitAction::Yield;
        }
        if action == ExitAction::Block {
            // Never sleep with an event already waiting.
            if let Some(vc) = self
                .domains
                .get_mut(&d.0)
                .and_then(|x| x.vcpus.get_mut(v as usize))
                && vc.state == VcpuState::Runnable
            {
                vc.state = VcpuState::Blocked;
            }
            let lapic = self.domain(d).is_some_and(|x| {
                let vl = &x.vcpus[v as usize].vlapic;
                vl.nmi_pending || vl.pending_vector().is_some()
            });
            if (lapic || self.upcall_pending(d, v))
                && self
                    .domain(d)
                    .is_some_and(|x| x.vcpus[v as usize].state == VcpuState::Blocked)
            {
                self.wake(d, v);
                self.woken.lock().retain(|w| *w != (d, v));
                return ExitAction::Resume;
            }
        }
        action
    }
}

/// `Hfn` of shared_info etc. helpers for the mock and the image.
pub fn guest_mem_of<'a>(
    dom: &'a Domain,
    frames: &'a dyn crate::platform::FrameAccess,
) -> GuestMem<'a> {
    GuestMem::new(&dom.p2m, frames)
}

impl<P: Platform> Hypervisor<P> {
    /// The paging mode of a backend vCPU, for linear accesses.
    pub fn paging_mode(cpu: &dyn VcpuBackend) -> PagingMode {
        paging_mode(cpu)
    }
}

/// The paging mode of a backend vCPU, for linear accesses.
pub fn paging_mode(cpu: &dyn VcpuBackend) -> PagingMode {
    use crate::arch::ControlReg as C;
    PagingMode {
        cr0: cpu.control(C::Cr0),
        cr3: cpu.control(C::Cr3),
        cr4: cpu.control(C::Cr4),
        efer: cpu.control(C::Efer),
    }
}
