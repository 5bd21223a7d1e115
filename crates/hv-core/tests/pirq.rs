//! Interrupts of assigned PCI functions as pirqs: `PHYSDEVOP_map_pirq`,
//! `EVTCHNOP_bind_pirq`, delivery of a host GSI to the bound port,
//! `PHYSDEVOP_eoi`, and what the mock's IOAPIC was told, against hostile
//! and unassigned callers.

use hv_core::arch::VmExit;
use hv_core::mock::{IoapicOp, MockNpt, MockPciFunction, MockPlatform, MockVcpu};
use hv_core::pci::Bdf;
use hv_core::platform::GsiRoute;
use hv_core::{DomId, DomainConfig, Gfn, Hypervisor};
use xen_abi::event_channel as ev;
use xen_abi::physdev as ph;
use xen_abi::xen as x;

const EPERM: i64 = -1;
const EINVAL: i64 = -22;
const EEXIST: i64 = -17;
const ENOSYS: i64 = -38;
const ARG: u64 = 0x1000;

const NIC: Bdf = Bdf {
    bus: 0,
    dev: 3,
    func: 0,
};
const DISK: Bdf = Bdf {
    bus: 0,
    dev: 4,
    func: 0,
};

fn function(bdf: Bdf, line: u8) -> MockPciFunction {
    let mut f = MockPciFunction::endpoint(bdf, 0x1AF4, 0x1001);
    f.set_dword(0x3C, u32::from(line) | (1 << 8)); // INTA
    f
}

struct Sim {
    hv: Hypervisor<MockPlatform>,
}

impl Sim {
    /// QEMU's i440fx: the NIC on line 11, the disk on line 10, both
    /// overridden to level, active high.
    fn new() -> Self {
        let m = MockPlatform::default();
        m.pci.lock().push(function(NIC, 11));
        m.pci.lock().push(function(DISK, 10));
        for irq in [10, 11] {
            m.irq_overrides.lock().push((
                irq,
                GsiRoute {
                    gsi: u32::from(irq),
                    level: true,
                    active_low: false,
                },
            ));
        }
        Sim {
            hv: Hypervisor::new(m),
        }
    }

    fn domain(&mut self) -> DomId {
        let d = self
            .hv
            .create_domain(
                DomainConfig {
                    domid: None,
                    name: "t".into(),
                    privileged: false,
                    vcpus: 1,
                    max_pages: 64,
                },
                Box::new(MockNpt::default()),
            )
            .unwrap();
        self.hv.populate(d, Gfn(0), 16).unwrap();
        d
    }

    fn call<T: zerocopy::IntoBytes + zerocopy::Immutable + zerocopy::FromBytes>(
        &mut self,
        d: DomId,
        nr: u32,
        cmd: u32,
        a: &T,
    ) -> (i64, T) {
        self.hv.guest_mem(d).unwrap().write_obj(ARG, a).unwrap();
        let mut cpu = MockVcpu::flat64();
        cpu.hypercall(nr as u64, [cmd as u64, ARG, 0, 0, 0]);
        self.hv.handle_exit(d, 0, &mut cpu, VmExit::Hypercall);
        (
            cpu.ret(),
            self.hv.guest_mem(d).unwrap().read_obj(ARG).unwrap(),
        )
    }

    fn map(&mut self, d: DomId, domid: u16, ty: i32, index: i32, pirq: i32) -> (i64, i32) {
        let a = ph::PhysdevMapPirq {
            domid,
            r#type: ty,
            index,
            pirq,
            ..Default::default()
        };
        let (r, a) = self.call(d, x::__HYPERVISOR_physdev_op, ph::PHYSDEVOP_map_pirq, &a);
        (r, a.pirq)
    }

    fn map_gsi(&mut self, d: DomId, gsi: i32) -> (i64, i32) {
        self.map(d, DomId::SELF, ph::MAP_PIRQ_TYPE_GSI, gsi, -1)
    }

    fn bind(&mut self, d: DomId, pirq: u32) -> (i64, u32) {
        let a = ev::EvtchnBindPirq {
            pirq,
            flags: 0,
            port: 0,
        };
        let (r, a) = self.call(
            d,
            x::__HYPERVISOR_event_channel_op,
            ev::EVTCHNOP_bind_pirq,
            &a,
        );
        (r, a.port)
    }

    fn eoi(&mut self, d: DomId, pirq: u32) -> i64 {
        let a = ph::PhysdevEoi { irq: pirq };
        self.call(d, x::__HYPERVISOR_physdev_op, ph::PHYSDEVOP_eoi, &a)
            .0
    }

    /// Whether `port` is pending in `d`'s shared_info (2-level).
    fn pending(&self, d: DomId, port: u32) -> bool {
        let dom = self.hv.domain(d).unwrap();
        let off = 2048 + (port as usize / 64) * 8;
        let w = hv_core::platform::FrameAccess::load_u64(&*self.hv.platform, dom.shared_info, off);
        w & (1 << (port % 64)) != 0
    }

    fn ioapic(&self) -> Vec<IoapicOp> {
        core::mem::take(&mut *self.hv.platform.ioapic.lock())
    }
}

#[test]
fn the_assignee_maps_binds_receives_and_acknowledges_its_gsi() {
    let mut s = Sim::new();
    let a = s.domain();
    s.hv.assign_pci(a, NIC).unwrap();
    // Any pirq: the first free from 16, as Xen's get_free_pirq.
    assert_eq!(s.map_gsi(a, 11), (0, 16));
    assert_eq!(
        s.ioapic(),
        [IoapicOp::Route {
            gsi: 11,
            level: true,
            active_low: false
        }]
    );
    // Again: the same pirq; another wanted pirq for it: -EEXIST.
    assert_eq!(s.map_gsi(a, 11), (0, 16));
    assert_eq!(s.map(a, a.0, ph::MAP_PIRQ_TYPE_GSI, 11, 20).0, EEXIST);
    // Level-triggered: needs an EOI.
    let q = ph::PhysdevIrqStatusQuery { irq: 16, flags: 0 };
    let (r, q) = s.call(
        a,
        x::__HYPERVISOR_physdev_op,
        ph::PHYSDEVOP_irq_status_query,
        &q,
    );
    assert_eq!((r, q.flags), (0, ph::XENIRQSTAT_needs_eoi));
    // Bound: the pin is unmasked; the port says pirq 16.
    let (r, port) = s.bind(a, 16);
    assert_eq!(r, 0);
    assert_eq!(
        s.ioapic(),
        [IoapicOp::Mask {
            gsi: 11,
            masked: false
        }]
    );
    assert_eq!(s.bind(a, 16).0, EEXIST);
    let st = ev::EvtchnStatus {
        dom: DomId::SELF,
        port,
        ..Default::default()
    };
    let (r, st) = s.call(
        a,
        x::__HYPERVISOR_event_channel_op,
        ev::EVTCHNOP_status,
        &st,
    );
    assert_eq!((r, st.status, st.u[0]), (0, ev::EVTCHNSTAT_pirq, 16));
    // The interrupt: the port is raised; the pin stays masked (the image
    // masked it) until the EOI.
    assert!(!s.pending(a, port));
    s.hv.gsi_fired(11);
    assert!(s.pending(a, port));
    assert_eq!(s.ioapic(), []);
    assert_eq!(s.eoi(a, 16), 0);
    assert_eq!(
        s.ioapic(),
        [IoapicOp::Mask {
            gsi: 11,
            masked: false
        }]
    );
    // An EOI with nothing delivered changes nothing.
    assert_eq!(s.eoi(a, 16), 0);
    assert_eq!(s.ioapic(), []);
    // Closing the port masks the pin; unmapping masks and forgets it.
    let (r, _) = s.call(
        a,
        x::__HYPERVISOR_event_channel_op,
        ev::EVTCHNOP_close,
        &ev::EvtchnClose { port },
    );
    assert_eq!(r, 0);
    assert_eq!(
        s.ioapic(),
        [IoapicOp::Mask {
            gsi: 11,
            masked: true
        }]
    );
    let u = ph::PhysdevUnmapPirq {
        domid: DomId::SELF,
        pad: 0,
        pirq: 16,
    };
    assert_eq!(
        s.call(a, x::__HYPERVISOR_physdev_op, ph::PHYSDEVOP_unmap_pirq, &u)
            .0,
        0
    );
    assert_eq!(
        s.call(a, x::__HYPERVISOR_physdev_op, ph::PHYSDEVOP_unmap_pirq, &u)
            .0,
        EINVAL
    );
    assert_eq!(s.eoi(a, 16), EINVAL);
    // Mapped again with a chosen pirq.
    assert_eq!(
        s.map(a, DomId::SELF, ph::MAP_PIRQ_TYPE_GSI, 11, 40),
        (0, 40)
    );
}

#[test]
fn other_gsis_domains_and_types_are_refused() {
    let mut s = Sim::new();
    let a = s.domain();
    let b = s.domain();
    let c = s.domain();
    s.hv.assign_pci(a, NIC).unwrap();
    s.hv.assign_pci(b, DISK).unwrap();
    // Not a line of its functions: -EPERM, and nothing reaches the IOAPIC.
    assert_eq!(s.map_gsi(a, 10).0, EPERM);
    assert_eq!(s.map_gsi(a, 12).0, EPERM);
    assert_eq!(s.map_gsi(c, 11).0, EPERM);
    assert_eq!(s.map_gsi(c, 0).0, EPERM);
    // For another domain: -EPERM.
    assert_eq!(s.map(c, a.0, ph::MAP_PIRQ_TYPE_GSI, 11, -1).0, EPERM);
    assert_eq!(s.map(a, b.0, ph::MAP_PIRQ_TYPE_GSI, 10, -1).0, EPERM);
    // Not a GSI, out of range: -EINVAL.
    assert_eq!(
        s.map(a, DomId::SELF, ph::MAP_PIRQ_TYPE_MSI, 11, -1).0,
        EINVAL
    );
    assert_eq!(s.map(a, DomId::SELF, 77, 11, -1).0, EINVAL);
    assert_eq!(s.map_gsi(a, -1).0, EINVAL);
    assert_eq!(s.map_gsi(a, 1 << 20).0, EINVAL);
    assert_eq!(
        s.map(a, DomId::SELF, ph::MAP_PIRQ_TYPE_GSI, 11, 1 << 20).0,
        EINVAL
    );
    assert!(s.ioapic().is_empty());
    // Pirqs nobody mapped: nothing to bind, acknowledge or query.
    assert_eq!(s.bind(c, 16).0, EINVAL);
    assert_eq!(s.bind(c, u32::MAX).0, EINVAL);
    assert_eq!(s.eoi(c, 16), EINVAL);
    let q = ph::PhysdevIrqStatusQuery { irq: 16, flags: 0 };
    assert_eq!(
        s.call(
            c,
            x::__HYPERVISOR_physdev_op,
            ph::PHYSDEVOP_irq_status_query,
            &q
        )
        .0,
        EINVAL
    );
    // Another domain's pirq number is its own business.
    assert_eq!(s.map_gsi(a, 11), (0, 16));
    assert_eq!(s.bind(c, 16).0, EINVAL);
    let ops = [ph::PHYSDEVOP_set_iopl, ph::PHYSDEVOP_pci_device_add, 999];
    for op in ops {
        assert_eq!(
            s.call(c, x::__HYPERVISOR_physdev_op, op, &[0u8; 64]).0,
            ENOSYS
        );
    }
    // Its interrupt reaches only its owner.
    let (_, pa) = s.bind(a, 16);
    let (_, pc) = s.call(
        c,
        x::__HYPERVISOR_event_channel_op,
        ev::EVTCHNOP_bind_ipi,
        &ev::EvtchnBindIpi { vcpu: 0, port: 0 },
    );
    s.hv.gsi_fired(11);
    assert!(s.pending(a, pa));
    assert!(!s.pending(c, pc.port));
}

#[test]
fn a_destroyed_owner_s_pins_are_masked_and_free_again() {
    let mut s = Sim::new();
    let b = s.domain();
    s.hv.assign_pci(b, DISK).unwrap();
    assert_eq!(s.map_gsi(b, 10), (0, 16));
    assert_eq!(s.bind(b, 16).0, 0);
    s.ioapic();
    s.hv.destroy_domain(b).unwrap();
    assert!(s.ioapic().contains(&IoapicOp::Mask {
        gsi: 10,
        masked: true
    }));
    // An interrupt nobody owns is masked.
    s.hv.gsi_fired(10);
    assert_eq!(
        s.ioapic(),
        [IoapicOp::Mask {
            gsi: 10,
            masked: true
        }]
    );
    // The function goes to a new domain, which maps the GSI.
    let d = s.domain();
    s.hv.assign_pci(d, DISK).unwrap();
    assert_eq!(s.map_gsi(d, 10), (0, 16));
}
