//! Domains and their vCPUs.

use alloc::string::String;
use alloc::vec::Vec;
use hashbrown::HashMap;

use crate::evtchn::{EvtchnDomain, VcpuInfoLoc};
use crate::p2m::P2m;
use crate::types::{DomId, Gfn, Hfn};

/// Number of HVM params a domain keeps (`HVM_NR_PARAMS` is 39 in Xen 4.17).
pub const HVM_NR_PARAMS: usize = 40;

/// Why a domain shut down (sched.h `SHUTDOWN_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownReason {
    /// `SHUTDOWN_poweroff`.
    Poweroff,
    /// `SHUTDOWN_reboot`.
    Reboot,
    /// `SHUTDOWN_suspend`.
    Suspend,
    /// `SHUTDOWN_crash`: the guest crashed or was killed for misbehaving.
    Crash,
    /// `SHUTDOWN_watchdog`.
    Watchdog,
    /// `SHUTDOWN_soft_reset`.
    SoftReset,
}

impl ShutdownReason {
    /// From the ABI code.
    pub fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            0 => Self::Poweroff,
            1 => Self::Reboot,
            2 => Self::Suspend,
            3 => Self::Crash,
            4 => Self::Watchdog,
            5 => Self::SoftReset,
            _ => return None,
        })
    }
}

/// A domain's life-cycle state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainState {
    /// Built, vCPUs may run.
    Running,
    /// Paused by the toolstack: no vCPU runs.
    Paused,
    /// Shut down; waiting to be destroyed.
    Shutdown(ShutdownReason),
}

/// What a domain may do beyond acting on itself: a small set of powers
/// the launch plan grants per domain, checked by hv-core on each call
/// (`-EPERM` otherwise). The control domain ([`Domain::privileged`]) holds
/// every power; these let a service domain hold only the ones it needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caps(u32);

impl Caps {
    /// No power.
    pub const NONE: Caps = Caps(0);
    /// May act as the xenstore domain (Xen's `XEN_DOMCTL_CDF_xs_domain`):
    /// use any domain's `GNTTAB_RESERVED_XENSTORE` grant when it names this
    /// domain, bind a domain's xenstore port, bind `VIRQ_DOM_EXC` and ask
    /// `XEN_DOMCTL_get_domain_state` for changed domains.
    pub const XENSTORE: Caps = Caps(1 << 0);
    /// May read any domain's information: `XEN_DOMCTL_getdomaininfo`,
    /// `XEN_DOMCTL_get_domain_state`, `XEN_SYSCTL_getdomaininfolist`
    /// (Xen's `XSM_XS_PRIV` checks).
    pub const DOMCTL_INFO: Caps = Caps(1 << 1);

    /// Both sets together.
    pub const fn union(self, o: Caps) -> Caps {
        Caps(self.0 | o.0)
    }

    /// Whether every power of `o` is in this set.
    pub const fn contains(self, o: Caps) -> bool {
        self.0 & o.0 == o.0
    }
}

/// A domain's xenstore connection as the builder set it up (Xen's
/// dom0less "enhanced" domains): the ring page, its port, and the
/// domain that serves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreInfo {
    /// The ring page (`HVM_PARAM_STORE_PFN`).
    pub gfn: Gfn,
    /// The domain's end of the channel (`HVM_PARAM_STORE_EVTCHN`), unbound
    /// toward `server` until the server binds it.
    pub port: u32,
    /// The xenstore domain.
    pub server: DomId,
}

/// A vCPU's scheduling state as hv-core sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuState {
    /// Not started (secondary vCPUs until brought up).
    Offline,
    /// Wants a physical CPU.
    Runnable,
    /// Waiting for an event (`SCHEDOP_block`, `HLT`).
    Blocked,
    /// Waiting for one of some ports or a timeout (`SCHEDOP_poll`).
    Polling,
}

/// A vCPU.
#[derive(Clone, Debug)]
pub struct Vcpu {
    /// The vCPU id within its domain.
    pub id: u32,
    /// Scheduling state.
    pub state: VcpuState,
    /// Whether `vcpu_info` was moved by `register_vcpu_info`.
    pub vcpu_info_registered: bool,
    /// Guest address of the runstate area (linear), if registered.
    pub runstate_area: Option<u64>,
    /// The paging the runstate area's address was registered under.
    pub runstate_mode: crate::pagewalk::PagingMode,
    /// Time accounting: the current runstate and the time in each.
    pub runstate: xen_abi::vcpu::VcpuRunstateInfo,
    /// The per-vCPU upcall vector (`HVMOP_set_evtchn_upcall_vector`).
    pub upcall_vector: Option<u8>,
    /// Ports polled by `SCHEDOP_poll`.
    pub poll_ports: Vec<u32>,
    /// Absolute system time at which a polling vCPU wakes.
    pub wake_at: Option<u64>,
    /// The singleshot timer's deadline.
    pub singleshot: Option<u64>,
    /// The periodic timer: (period, next deadline).
    pub periodic: Option<(u64, u64)>,
    /// The physical CPU it last ran on.
    pub pcpu: u32,
    /// VIRQ ports bound to this vCPU (per-vCPU VIRQs), index = VIRQ.
    pub virq: [u32; xen_abi::xen::NR_VIRQS as usize],
    /// The emulated local APIC.
    pub vlapic: crate::vlapic::Vlapic,
    /// The state `VCPUOP_initialise` gave this offline vCPU, for
    /// `VCPUOP_up` to start it in (Xen's `is_initialised`).
    pub initialised: Option<xen_abi::vcpu::VcpuHvmContext>,
}

impl Vcpu {
    fn new(id: u32) -> Self {
        Vcpu {
            id,
            state: if id == 0 {
                VcpuState::Runnable
            } else {
                VcpuState::Offline
            },
            vcpu_info_registered: false,
            runstate_area: None,
            runstate_mode: crate::pagewalk::PagingMode::FLAT,
            runstate: xen_abi::vcpu::VcpuRunstateInfo {
                state: if id == 0 {
                    xen_abi::vcpu::RUNSTATE_runnable
                } else {
                    xen_abi::vcpu::RUNSTATE_offline
                },
                ..Default::default()
            },
            upcall_vector: None,
            poll_ports: Vec::new(),
            wake_at: None,
            singleshot: None,
            periodic: None,
            pcpu: 0,
            virq: [0; xen_abi::xen::NR_VIRQS as usize],
            vlapic: crate::vlapic::Vlapic::new(id),
            initialised: None,
        }
    }
}

/// A domain.
pub struct Domain {
    /// Its id.
    pub id: DomId,
    /// A name for logs.
    pub name: String,
    /// The control domain may act on others (and holds every [`Caps`]).
    pub privileged: bool,
    /// Powers beyond its own domain (see [`Caps`]).
    pub caps: Caps,
    /// A number no other domain of this boot has (for
    /// `XEN_DOMCTL_get_domain_state`).
    pub unique_id: u64,
    /// Paused until its xenstore server first signals the store channel
    /// ([`crate::Hypervisor::pause_until_introduced`]).
    pub await_store: bool,
    /// Its xenstore connection, if the builder gave it one.
    pub store: Option<StoreInfo>,
    /// Life-cycle state.
    pub state: DomainState,
    /// Guest-physical memory.
    pub p2m: P2m,
    /// Frames owned (RAM and special pages).
    pub tot_pages: u64,
    /// The most frames it may own.
    pub max_pages: u64,
    /// Its vCPUs.
    pub vcpus: Vec<Vcpu>,
    /// Where each vCPU's `vcpu_info` lives now (index = vCPU id): in
    /// shared_info for the first 32 until registered elsewhere.
    pub vcpu_info: Vec<VcpuInfoLoc>,
    /// The shared_info frame (owned by the hypervisor, mapped on request).
    pub shared_info: Hfn,
    /// Where the guest placed shared_info.
    pub shared_info_gfn: Option<Gfn>,
    /// shared_info, vcpu_info and runstate areas are in the 32-bit layout
    /// (Xen's `has_32bit_shinfo`), latched from the guest's mode when it
    /// installs the hypercall page and when it sets `HVM_PARAM_CALLBACK_IRQ`.
    pub has_32bit_shinfo: bool,
    /// HVM params.
    pub hvm_params: [u64; HVM_NR_PARAMS],
    /// Event channels.
    pub evtchn: EvtchnDomain,
    /// VM assists enabled (`vm_assist`).
    pub vm_assist: u64,
    /// The guest's memory map, for `XENMEM_memory_map`.
    pub memory_map: Vec<xen_abi::memory::E820Entry>,
    /// Pending console output, flushed per line.
    pub console_line: Vec<u8>,
    /// The PV console ring served by the hypervisor, if set up.
    pub console: Option<crate::console::ConsoleBackend>,
    /// The emulated PIT channel 2 (TSC calibration).
    pub pit: crate::pit::Pit,
    /// Its view of PCI configuration space and the host functions
    /// assigned to it ([`crate::pci`]).
    pub pci: crate::pci::DomainPci,
    /// Guest frames whose host frame the hypervisor holds (vcpu_info,
    /// FIFO pages), with a count: never freed while pinned.
    pub pinned: HashMap<u64, u32>,
    /// Host frames released by the guest while pinned, freed at teardown.
    pub zombies: Vec<Hfn>,
    /// Grant table and maptrack.
    pub gnttab: crate::gnttab::GrantTable,
}

impl Domain {
    /// A new domain with `nr_vcpus` vCPUs, no memory yet.
    pub fn new(
        id: DomId,
        name: String,
        privileged: bool,
        nr_vcpus: u32,
        p2m: P2m,
        shared_info: Hfn,
    ) -> Self {
        Domain {
            id,
            name,
            privileged,
            caps: Caps::NONE,
            unique_id: 0,
            await_store: false,
            store: None,
            state: DomainState::Running,
            p2m,
            tot_pages: 0,
            max_pages: 0,
            vcpus: (0..nr_vcpus).map(Vcpu::new).collect(),
            vcpu_info: (0..nr_vcpus)
                .map(|i| {
                    (i < xen_abi::xen::XEN_LEGACY_MAX_VCPUS as u32)
                        .then_some((shared_info, i as usize * 64))
                })
                .collect(),
            shared_info,
            shared_info_gfn: None,
            has_32bit_shinfo: false,
            hvm_params: [0; HVM_NR_PARAMS],
            evtchn: EvtchnDomain::default(),
            vm_assist: 0,
            memory_map: Vec::new(),
            console_line: Vec::new(),
            console: None,
            pit: crate::pit::Pit::default(),
            pci: crate::pci::DomainPci::default(),
            pinned: HashMap::new(),
            zombies: Vec::new(),
            gnttab: crate::gnttab::GrantTable::new(),
        }
    }

    /// Whether the domain holds `cap` (the control domain holds all).
    pub fn may(&self, cap: Caps) -> bool {
        self.privileged || self.caps.contains(cap)
    }

    /// Whether the domain is still alive (not shut down).
    pub fn is_alive(&self) -> bool {
        !matches!(self.state, DomainState::Shutdown(_))
    }

    /// Pins the host frame behind `hfn`.
    pub fn pin(&mut self, hfn: Hfn) {
        *self.pinned.entry(hfn.0).or_insert(0) += 1;
    }

    /// Whether `hfn` is pinned.
    pub fn is_pinned(&self, hfn: Hfn) -> bool {
        self.pinned.contains_key(&hfn.0)
    }
}
