//! The service (xenstore) domain's hypervisor side in simulation: a
//! domain's xenstore connection made at build time, capabilities checked
//! on every call, `domctl`/`sysctl` domain information and
//! `VIRQ_DOM_EXC`, against a hostile domain that tries each power.

use hv_core::arch::VmExit;
use hv_core::domain::{Caps, ShutdownReason};
use hv_core::mock::{MockNpt, MockPlatform, MockVcpu};
use hv_core::p2m::P2mKind;
use hv_core::{DomId, DomainConfig, Gfn, Hypervisor};
use xen_abi::domctl as dc;
use xen_abi::event_channel as ev;
use xen_abi::grant_table as g;
use xen_abi::hvm as h;
use xen_abi::xen as x;
use zerocopy::{FromBytes, Immutable, IntoBytes};

const EPERM: i64 = -1;
const ENOENT: i64 = -2;
const ESRCH: i64 = -3;
const EACCES: i64 = -13;
const EFAULT: i64 = -14;
const EBUSY: i64 = -16;
const EINVAL: i64 = -22;
const ENOSYS: i64 = -38;

/// Argument area (guest-physical, inside RAM).
const ARG: u64 = 0x10_0000;
/// A second argument area (buffers).
const BUF: u64 = 0x20_0000;
/// The xenstore page, as the builder places it.
const STORE_GFN: u64 = 0xfeffc;
/// Where the server maps grants (a hole).
const MAP_GFN: u64 = 0x2000;

struct Sim {
    hv: Hypervisor<MockPlatform>,
}

impl Sim {
    fn new() -> Self {
        Sim {
            hv: Hypervisor::new(MockPlatform::default()),
        }
    }

    /// A domain with 4 MiB of RAM from 0, the special store page, and `caps`.
    fn domain(&mut self, caps: Caps) -> DomId {
        let d = self
            .hv
            .create_domain(
                DomainConfig {
                    domid: None,
                    name: "t".into(),
                    privileged: false,
                    vcpus: 1,
                    max_pages: 1024 + 64,
                },
                Box::new(MockNpt::default()),
            )
            .unwrap();
        self.hv.populate(d, Gfn(0), 1024).unwrap();
        self.hv
            .populate_one(d, Gfn(STORE_GFN), P2mKind::Special)
            .unwrap();
        self.hv.set_caps(d, caps).unwrap();
        d
    }

    fn write<T: IntoBytes + Immutable + ?Sized>(&self, d: DomId, gpa: u64, v: &T) {
        self.hv
            .guest_mem(d)
            .unwrap()
            .write(gpa, v.as_bytes())
            .unwrap();
    }

    fn read<T: FromBytes + IntoBytes>(&self, d: DomId, gpa: u64) -> T {
        self.hv.guest_mem(d).unwrap().read_obj(gpa).unwrap()
    }

    fn call(&mut self, d: DomId, nr: u32, args: [u64; 5]) -> i64 {
        let mut cpu = MockVcpu::flat64();
        cpu.hypercall(nr as u64, args);
        self.hv.handle_exit(d, 0, &mut cpu, VmExit::Hypercall);
        assert_ne!(cpu.rip, 0, "no continuation expected");
        cpu.ret()
    }

    /// A hypercall `nr(sub, ARG)` with `arg` at ARG; returns RAX and the
    /// argument as the hypervisor left it.
    fn op<T: IntoBytes + FromBytes + Immutable>(
        &mut self,
        d: DomId,
        nr: u32,
        sub: u32,
        arg: &T,
    ) -> (i64, T) {
        self.write(d, ARG, arg);
        let r = self.call(d, nr, [sub as u64, ARG, 1, 0, 0]);
        (r, self.read(d, ARG))
    }

    fn get_param(&mut self, d: DomId, index: u32) -> (i64, u64) {
        let p = h::XenHvmParam {
            domid: DomId::SELF,
            pad: 0,
            index,
            value: 0xdead,
        };
        let (r, p) = self.op(d, x::__HYPERVISOR_hvm_op, h::HVMOP_get_param, &p);
        (r, p.value)
    }

    fn map(&mut self, mapper: DomId, granter: DomId, gref: u32) -> i16 {
        let m = g::GnttabMapGrantRef {
            host_addr: MAP_GFN << 12,
            flags: g::GNTMAP_host_map,
            r#ref: gref,
            dom: granter.0,
            ..Default::default()
        };
        let (r, m) = self.op(
            mapper,
            x::__HYPERVISOR_grant_table_op,
            g::GNTTABOP_map_grant_ref,
            &m,
        );
        assert_eq!(r, 0);
        m.status
    }

    fn bind_interdomain(&mut self, d: DomId, remote: DomId, port: u32) -> (i64, u32) {
        let a = ev::EvtchnBindInterdomain {
            remote_dom: remote.0,
            pad: 0,
            remote_port: port,
            local_port: 0,
        };
        let (r, a) = self.op(
            d,
            x::__HYPERVISOR_event_channel_op,
            ev::EVTCHNOP_bind_interdomain,
            &a,
        );
        (r, a.local_port)
    }

    fn bind_virq(&mut self, d: DomId, virq: u32) -> (i64, u32) {
        let a = ev::EvtchnBindVirq {
            virq,
            vcpu: 0,
            port: 0,
        };
        let (r, a) = self.op(
            d,
            x::__HYPERVISOR_event_channel_op,
            ev::EVTCHNOP_bind_virq,
            &a,
        );
        (r, a.port)
    }

    /// `domctl` with `op` at ARG; returns RAX and the struct after.
    fn domctl(&mut self, d: DomId, op: &dc::XenDomctl) -> (i64, dc::XenDomctl) {
        self.write(d, ARG, op);
        let r = self.call(d, x::__HYPERVISOR_domctl, [ARG, 0, 0, 0, 0]);
        (r, self.read(d, ARG))
    }

    fn sysctl(&mut self, d: DomId, op: &dc::XenSysctl) -> (i64, dc::XenSysctl) {
        self.write(d, ARG, op);
        let r = self.call(d, x::__HYPERVISOR_sysctl, [ARG, 0, 0, 0, 0]);
        (r, self.read(d, ARG))
    }

    fn info(&mut self, caller: DomId, of: u16) -> (i64, dc::XenDomctlGetdomaininfo, u16) {
        let op = dc::XenDomctl::with(
            dc::XEN_DOMCTL_getdomaininfo,
            of,
            &dc::XenDomctlGetdomaininfo::default(),
        );
        let (r, op) = self.domctl(caller, &op);
        (r, op.arg(), op.domain)
    }

    fn state(&mut self, caller: DomId, of: u16) -> (i64, dc::XenDomctlGetDomainState, u16) {
        let op = dc::XenDomctl::with(
            dc::XEN_DOMCTL_get_domain_state,
            of,
            &dc::XenDomctlGetDomainState::default(),
        );
        let (r, op) = self.domctl(caller, &op);
        (r, op.arg(), op.domain)
    }

    /// Whether `port` of `d` is pending (2-level bitmap in shared_info).
    fn pending(&self, d: DomId, port: u32) -> bool {
        let dom = self.hv.domain(d).unwrap();
        let off = 2048 + (port as usize / 64) * 8;
        let w = hv_core::platform::FrameAccess::load_u64(&*self.hv.platform, dom.shared_info, off);
        w & (1 << (port % 64)) != 0
    }

    fn clear_pending(&self, d: DomId, port: u32) {
        let dom = self.hv.domain(d).unwrap();
        let off = 2048 + (port as usize / 64) * 8;
        let w = hv_core::platform::FrameAccess::load_u64(&*self.hv.platform, dom.shared_info, off);
        let w = w & !(1u64 << (port % 64));
        hv_core::platform::FrameAccess::write(
            &*self.hv.platform,
            dom.shared_info,
            off,
            &w.to_le_bytes(),
        );
    }
}

/// The service domain S, a guest G with a store served by S, and an
/// intruder I with no powers.
fn setup() -> (Sim, DomId, DomId, DomId, u32) {
    let mut s = Sim::new();
    let svc = s.domain(Caps::XENSTORE.union(Caps::DOMCTL_INFO));
    let guest = s.domain(Caps::NONE);
    let intruder = s.domain(Caps::NONE);
    let port = s.hv.setup_store(guest, Gfn(STORE_GFN), svc).unwrap();
    (s, svc, guest, intruder, port)
}

#[test]
fn a_domain_with_a_store_publishes_it() {
    let (mut s, svc, guest, intruder, port) = setup();
    assert_ne!(port, 0);
    assert_eq!(s.get_param(guest, h::HVM_PARAM_STORE_PFN), (0, STORE_GFN));
    assert_eq!(
        s.get_param(guest, h::HVM_PARAM_STORE_EVTCHN),
        (0, port as u64)
    );
    // connection = XENSTORE_RECONNECT: Linux waits for the server.
    let conn: u32 = s.read(guest, (STORE_GFN << 12) + 2068);
    assert_eq!(conn, 1);
    // evtchn_port names the port for the server.
    let named: u32 = s.read(guest, (STORE_GFN << 12) + 2076);
    assert_eq!(named, port);
    let prod: u32 = s.read(guest, (STORE_GFN << 12) + 2052);
    assert_eq!(prod, 0);
    // Without a store (the old setup) both stay 0.
    assert_eq!(s.get_param(intruder, h::HVM_PARAM_STORE_PFN), (0, 0));
    assert_eq!(s.get_param(intruder, h::HVM_PARAM_STORE_EVTCHN), (0, 0));
    // The guest may not move its store.
    let p = h::XenHvmParam {
        domid: DomId::SELF,
        pad: 0,
        index: h::HVM_PARAM_STORE_PFN,
        value: 5,
    };
    let (r, _) = s.op(guest, x::__HYPERVISOR_hvm_op, h::HVMOP_set_param, &p);
    assert_eq!(r, EPERM);
    // The port waits unbound for the server.
    let st = ev::EvtchnStatus {
        dom: DomId::SELF,
        port,
        ..Default::default()
    };
    let (r, st) = s.op(
        guest,
        x::__HYPERVISOR_event_channel_op,
        ev::EVTCHNOP_status,
        &st,
    );
    assert_eq!(
        (r, st.status, st.u[0]),
        (0, ev::EVTCHNSTAT_unbound, svc.0 as u32)
    );
    // Twice is refused; so is a domain serving itself.
    assert!(s.hv.setup_store(guest, Gfn(STORE_GFN), svc).is_err());
    assert!(s.hv.setup_store(svc, Gfn(STORE_GFN), svc).is_err());
}

#[test]
fn only_the_xenstore_domain_maps_grant_1() {
    let (mut s, svc, guest, intruder, _) = setup();
    // The intruder is refused as Xen refuses an entry not naming it
    // (`GNTST_general_error`), and also with a forged entry naming it.
    assert_eq!(s.map(intruder, guest, 1), g::GNTST_general_error);
    // Grant 1 names the server and the store page.
    assert_eq!(s.map(svc, guest, 1), g::GNTST_okay);
    let conn: u32 = s.read(svc, (MAP_GFN << 12) + 2068);
    assert_eq!(conn, 1);
    // What the server writes the guest sees.
    s.write(svc, (MAP_GFN << 12) + 2068, &0u32);
    let conn: u32 = s.read(guest, (STORE_GFN << 12) + 2068);
    assert_eq!(conn, 0);
    // A second xenstore-capable domain not named in the entry is refused.
    let other = s.domain(Caps::XENSTORE);
    assert_ne!(s.map(other, guest, 1), g::GNTST_okay);
    // The guest's entry, forged by the guest to name the intruder, still
    // does not let the intruder in: the reserved reference needs the power.
    let hfn = s.hv.domain(guest).unwrap().gnttab.shared_hfn(0).unwrap();
    let mut e = [0u8; 8];
    e[0..2].copy_from_slice(&g::GTF_permit_access.to_le_bytes());
    e[2..4].copy_from_slice(&intruder.0.to_le_bytes());
    e[4..8].copy_from_slice(&(0x300u32).to_le_bytes());
    hv_core::platform::FrameAccess::write(&*s.hv.platform, hfn, 8, &e);
    assert_eq!(s.map(intruder, guest, 1), g::GNTST_permission_denied);
    // The same entry as an ordinary reference works.
    hv_core::platform::FrameAccess::write(&*s.hv.platform, hfn, 16, &e);
    assert_eq!(s.map(intruder, guest, 2), g::GNTST_okay);
}

#[test]
fn only_the_xenstore_domain_binds_the_store_port() {
    let (mut s, svc, guest, intruder, port) = setup();
    assert_eq!(s.bind_interdomain(intruder, guest, port).0, EINVAL);
    // A store served by a domain without the power cannot be bound.
    let weak = s.domain(Caps::NONE);
    let g2 = s.domain(Caps::NONE);
    let p2 = s.hv.setup_store(g2, Gfn(STORE_GFN), weak).unwrap();
    assert_eq!(s.bind_interdomain(weak, g2, p2).0, EPERM);
    let (r, local) = s.bind_interdomain(svc, guest, port);
    assert_eq!(r, 0);
    assert_ne!(local, 0);
    // Bound: the guest's notifications reach the server.
    s.clear_pending(svc, local);
    let send = ev::EvtchnSend { port };
    assert_eq!(
        s.op(
            guest,
            x::__HYPERVISOR_event_channel_op,
            ev::EVTCHNOP_send,
            &send
        )
        .0,
        0
    );
    assert!(s.pending(svc, local));
}

#[test]
fn getdomaininfo_answers_from_the_domain_table() {
    let (mut s, svc, guest, intruder, _) = setup();
    let (r, i, dom) = s.info(svc, guest.0);
    assert_eq!((r, dom, i.domain), (0, guest.0, guest.0));
    let d = s.hv.domain(guest).unwrap();
    assert_eq!((i.tot_pages, i.max_pages), (d.tot_pages, d.max_pages));
    assert_eq!(i.tot_pages, 1025);
    assert_eq!((i.nr_online_vcpus, i.max_vcpu_id), (1, 0));
    assert_eq!(
        i.flags & (dc::XEN_DOMINF_hvm_guest | dc::XEN_DOMINF_hap | dc::XEN_DOMINF_xs_domain),
        dc::XEN_DOMINF_hvm_guest | dc::XEN_DOMINF_hap
    );
    assert_eq!(
        i.flags & (dc::XEN_DOMINF_shutdown | dc::XEN_DOMINF_dying),
        0
    );
    assert_eq!(i.arch_config.emulation_flags, dc::XEN_X86_EMU_LAPIC);
    // The service domain is marked as the xenstore domain.
    let (_, i, _) = s.info(svc, svc.0);
    assert_ne!(i.flags & dc::XEN_DOMINF_xs_domain, 0);
    // 4.17: the first domain at or after the id; none past the last.
    let (r, _, dom) = s.info(svc, intruder.0 + 1);
    assert_eq!(r, ESRCH, "{dom}");
    s.hv.destroy_domain(guest).unwrap();
    let (r, i, dom) = s.info(svc, guest.0);
    assert_eq!((r, dom, i.domain), (0, intruder.0, intruder.0));
    assert_eq!(s.info(svc, x::DOMID_SELF).0, EINVAL);
    // Shut down, with the reason.
    s.hv.shutdown(intruder, ShutdownReason::Crash);
    let (_, i, _) = s.info(svc, intruder.0);
    assert_ne!(i.flags & dc::XEN_DOMINF_shutdown, 0);
    assert_eq!((i.flags >> dc::XEN_DOMINF_shutdownshift) & 0xff, 3);
}

#[test]
fn domctl_interface_version_and_unknown_commands() {
    let (mut s, svc, guest, _, _) = setup();
    let mut op = dc::XenDomctl::with(dc::XEN_DOMCTL_getdomaininfo, guest.0, &0u64);
    op.interface_version = 0x14;
    assert_eq!(s.domctl(svc, &op).0, EACCES);
    // The stable command wants version 0.
    let mut op = dc::XenDomctl::with(dc::XEN_DOMCTL_get_domain_state, guest.0, &0u64);
    op.interface_version = dc::XEN_DOMCTL_INTERFACE_VERSION;
    assert_eq!(s.domctl(svc, &op).0, EACCES);
    // Other commands: not for a service domain.
    let op = dc::XenDomctl::with(1, guest.0, &0u64);
    assert_eq!(s.domctl(svc, &op).0, EPERM);
    // A bad pointer.
    assert_eq!(
        s.call(svc, x::__HYPERVISOR_domctl, [0x4000_0000, 0, 0, 0, 0]),
        EFAULT
    );
    // The control domain gets ENOSYS for what is not implemented.
    let ctl =
        s.hv.create_domain(
            DomainConfig {
                domid: None,
                name: "ctl".into(),
                privileged: true,
                vcpus: 1,
                max_pages: 1100,
            },
            Box::new(MockNpt::default()),
        )
        .unwrap();
    s.hv.populate(ctl, Gfn(0), 1024).unwrap();
    assert_eq!(s.domctl(ctl, &op).0, ENOSYS);
    assert_eq!(s.info(ctl, guest.0).0, 0);
}

#[test]
fn getdomaininfolist_lists_from_first_domain() {
    let (mut s, svc, guest, intruder, _) = setup();
    let l = dc::XenSysctlGetdomaininfolist {
        first_domain: guest.0,
        max_domains: 8,
        buffer: BUF,
        ..Default::default()
    };
    let (r, op) = s.sysctl(
        svc,
        &dc::XenSysctl::with(dc::XEN_SYSCTL_getdomaininfolist, &l),
    );
    assert_eq!(r, 0);
    assert_eq!(op.arg::<dc::XenSysctlGetdomaininfolist>().num_domains, 2);
    let a: dc::XenDomctlGetdomaininfo = s.read(svc, BUF);
    let b: dc::XenDomctlGetdomaininfo = s.read(svc, BUF + 112);
    assert_eq!((a.domain, b.domain), (guest.0, intruder.0));
    let l = dc::XenSysctlGetdomaininfolist {
        max_domains: 1,
        ..l
    };
    let (_, op) = s.sysctl(
        svc,
        &dc::XenSysctl::with(dc::XEN_SYSCTL_getdomaininfolist, &l),
    );
    assert_eq!(op.arg::<dc::XenSysctlGetdomaininfolist>().num_domains, 1);
    // A buffer the caller does not have: EFAULT.
    let l = dc::XenSysctlGetdomaininfolist {
        buffer: 0x4000_0000,
        max_domains: 8,
        ..l
    };
    assert_eq!(
        s.sysctl(
            svc,
            &dc::XenSysctl::with(dc::XEN_SYSCTL_getdomaininfolist, &l)
        )
        .0,
        EFAULT
    );
    let mut op = dc::XenSysctl::with(dc::XEN_SYSCTL_getdomaininfolist, &l);
    op.interface_version = 0;
    assert_eq!(s.sysctl(svc, &op).0, EACCES);
}

#[test]
fn dom_exc_fires_and_get_domain_state_reports_changes() {
    let (mut s, svc, guest, intruder, _) = setup();
    // Changes before the server listens are not lost, but only the
    // VIRQ_DOM_EXC handler may collect them.
    assert_eq!(s.state(svc, x::DOMID_INVALID).0, EACCES);
    let (r, port) = s.bind_virq(svc, x::VIRQ_DOM_EXC);
    assert_eq!(r, 0);
    // Drain the creations.
    let mut seen = vec![];
    loop {
        let (r, st, dom) = s.state(svc, x::DOMID_INVALID);
        if r == ENOENT {
            break;
        }
        assert_eq!(r, 0);
        assert_ne!(st.state & dc::XEN_DOMCTL_GETDOMSTATE_STATE_EXIST, 0);
        seen.push(dom);
    }
    assert_eq!(seen, vec![svc.0, guest.0, intruder.0]);
    // A shutdown raises the VIRQ and is reported.
    s.clear_pending(svc, port);
    s.hv.shutdown(guest, ShutdownReason::Poweroff);
    assert!(s.pending(svc, port));
    let (r, st, dom) = s.state(svc, x::DOMID_INVALID);
    assert_eq!((r, dom), (0, guest.0));
    assert_eq!(
        st.state,
        dc::XEN_DOMCTL_GETDOMSTATE_STATE_EXIST | dc::XEN_DOMCTL_GETDOMSTATE_STATE_SHUTDOWN
    );
    // Destruction too; a gone domain reads as state 0.
    s.clear_pending(svc, port);
    s.hv.destroy_domain(guest).unwrap();
    assert!(s.pending(svc, port));
    let (r, st, dom) = s.state(svc, x::DOMID_INVALID);
    assert_eq!((r, dom, st.state), (0, guest.0, 0));
    assert_eq!(s.state(svc, x::DOMID_INVALID).0, ENOENT);
    // And a creation.
    s.clear_pending(svc, port);
    let d = s.domain(Caps::NONE);
    assert!(s.pending(svc, port));
    // One domain's state on demand: caps and a unique id.
    let (r, st, _) = s.state(svc, svc.0);
    assert_eq!(r, 0);
    assert_eq!(st.caps, dc::XEN_DOMCTL_GETDOMSTATE_CAP_XENSTORE);
    let (_, st2, _) = s.state(svc, d.0);
    assert_ne!(st.unique_id, st2.unique_id);
    assert_eq!(s.state(svc, guest.0).0, ESRCH);
    // Non-zero padding is refused.
    let op = dc::XenDomctl::with(
        dc::XEN_DOMCTL_get_domain_state,
        d.0,
        &dc::XenDomctlGetDomainState {
            pad0: 1,
            ..Default::default()
        },
    );
    assert_eq!(s.domctl(svc, &op).0, EINVAL);
    let _ = intruder;
}

#[test]
fn a_hostile_domain_gets_eperm_for_every_power() {
    let (mut s, _svc, guest, intruder, port) = setup();
    // domctl and sysctl.
    assert_eq!(s.info(intruder, guest.0).0, EPERM);
    assert_eq!(s.info(intruder, intruder.0).0, EPERM);
    assert_eq!(s.state(intruder, guest.0).0, EPERM);
    assert_eq!(s.state(intruder, x::DOMID_INVALID).0, EPERM);
    for cmd in [1u32, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 34, 1000] {
        let op = dc::XenDomctl::with(cmd, guest.0, &0u64);
        assert_eq!(s.domctl(intruder, &op).0, EPERM, "domctl {cmd}");
    }
    let l = dc::XenSysctlGetdomaininfolist {
        max_domains: 8,
        buffer: BUF,
        ..Default::default()
    };
    for cmd in [dc::XEN_SYSCTL_getdomaininfolist, 1, 2, 3, 4, 5, 7, 8] {
        let op = dc::XenSysctl::with(cmd, &l);
        assert_eq!(s.sysctl(intruder, &op).0, EPERM, "sysctl {cmd}");
    }
    // VIRQ_DOM_EXC: -EBUSY, as from Xen 4.21 (not its global handler).
    assert_eq!(s.bind_virq(intruder, x::VIRQ_DOM_EXC).0, EBUSY);
    // The guest's store: its grant (Xen's answer for an entry naming
    // another domain) and its port (not unbound for the intruder).
    assert_eq!(s.map(intruder, guest, 1), g::GNTST_general_error);
    assert_eq!(s.bind_interdomain(intruder, guest, port).0, EINVAL);
    // Another domain's params.
    let p = h::XenHvmParam {
        domid: guest.0,
        pad: 0,
        index: h::HVM_PARAM_STORE_PFN,
        value: 0,
    };
    assert_eq!(
        s.op(intruder, x::__HYPERVISOR_hvm_op, h::HVMOP_get_param, &p)
            .0,
        EPERM
    );
    // Its own state is untouched by all this.
    assert!(s.hv.domain(intruder).unwrap().is_alive());
}

#[test]
fn a_domain_paused_until_introduced_runs_after_the_servers_first_event() {
    use hv_core::domain::DomainState;
    let (mut s, svc, guest, intruder, port) = setup();
    // Only a domain with a store can wait for one.
    assert!(s.hv.pause_until_introduced(intruder).is_err());
    s.hv.pause_until_introduced(guest).unwrap();
    assert_eq!(s.hv.domain(guest).unwrap().state, DomainState::Paused);
    assert!(!s.hv.vcpu_runnable(guest, 0));
    // Binding is not yet introducing: still paused.
    let (r, local) = s.bind_interdomain(svc, guest, port);
    assert_eq!(r, 0);
    assert_eq!(s.hv.domain(guest).unwrap().state, DomainState::Paused);
    let _ = s.hv.take_woken();
    // The server's first event on the channel unpauses it, and the event
    // is delivered.
    let send = ev::EvtchnSend { port: local };
    assert_eq!(
        s.op(
            svc,
            x::__HYPERVISOR_event_channel_op,
            ev::EVTCHNOP_send,
            &send
        )
        .0,
        0
    );
    assert_eq!(s.hv.domain(guest).unwrap().state, DomainState::Running);
    assert!(!s.hv.domain(guest).unwrap().await_store);
    assert!(s.hv.take_woken().contains(&(guest, 0)));
    assert!(s.pending(guest, port));
}
