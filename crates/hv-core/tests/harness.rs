//! The simulation harness: domains on the mock machine, scripted guests
//! issuing hypercalls against real guest memory, checking results, memory
//! contents and delivered upcalls.

use hv_core::arch::{Event, VmExit};
use hv_core::domain::{DomainState, ShutdownReason, VcpuState};
use hv_core::mock::{MockNpt, MockPlatform, MockVcpu};
use hv_core::p2m::P2mKind;
use hv_core::{DomId, DomainConfig, ExitAction, Gfn, Hypervisor};
use xen_abi::event_channel as ev;
use xen_abi::xen as x;

const EFAULT: i64 = -14;
const EINVAL: i64 = -22;
const ENOSPC: i64 = -28;
const EOPNOTSUPP: i64 = -95;
const EPERM: i64 = -1;
const ENOSYS: i64 = -38;
const ENOENT: i64 = -2;
const ESRCH: i64 = -3;

/// Guest-physical scratch area for hypercall arguments.
const ARG: u64 = 0x10_0000;
const BUF: u64 = 0x20_0000;

struct Sim {
    hv: Hypervisor<MockPlatform>,
}

impl Sim {
    fn new() -> Self {
        Sim {
            hv: Hypervisor::new(MockPlatform::default()),
        }
    }

    /// A domain with `mib` MiB of RAM from 0 and `vcpus` vCPUs.
    fn domain(&mut self, mib: u64, vcpus: u32, privileged: bool) -> DomId {
        let pages = mib * 256;
        let d = self
            .hv
            .create_domain(
                DomainConfig {
                    domid: None,
                    name: "t".into(),
                    privileged,
                    vcpus,
                    max_pages: pages + 64,
                },
                Box::new(MockNpt::default()),
            )
            .unwrap();
        self.hv.populate(d, Gfn(0), pages).unwrap();
        self.hv.domain_mut(d).unwrap().memory_map = vec![xen_abi::memory::E820Entry {
            addr: 0,
            size: mib << 20,
            r#type: 1,
        }];
        d
    }

    fn write<T: zerocopy::IntoBytes + zerocopy::Immutable>(&self, d: DomId, gpa: u64, v: &T) {
        self.hv.guest_mem(d).unwrap().write_obj(gpa, v).unwrap();
    }

    fn read<T: zerocopy::FromBytes + zerocopy::IntoBytes>(&self, d: DomId, gpa: u64) -> T {
        self.hv.guest_mem(d).unwrap().read_obj(gpa).unwrap()
    }

    /// Runs hypercall `nr` on vCPU `v` of `d`; returns RAX and the action.
    fn call_on(
        &mut self,
        d: DomId,
        v: u32,
        cpu: &mut MockVcpu,
        nr: u32,
        args: [u64; 5],
    ) -> (i64, ExitAction) {
        cpu.hypercall(nr as u64, args);
        let a = self.hv.handle_exit(d, v, cpu, VmExit::Hypercall);
        (cpu.ret(), a)
    }

    fn call(&mut self, d: DomId, nr: u32, args: [u64; 5]) -> i64 {
        let mut cpu = MockVcpu::flat64();
        self.call_on(d, 0, &mut cpu, nr, args).0
    }

    fn evtchn<T: zerocopy::IntoBytes + zerocopy::Immutable + zerocopy::FromBytes>(
        &mut self,
        d: DomId,
        cmd: u32,
        a: &T,
    ) -> (i64, T) {
        self.write(d, ARG, a);
        let r = self.call(
            d,
            x::__HYPERVISOR_event_channel_op,
            [cmd as u64, ARG, 0, 0, 0],
        );
        (r, self.read(d, ARG))
    }

    /// `XENMEM_decrease_reservation` of single frames `gfns` of `d`.
    fn decrease_reservation(&mut self, d: DomId, gfns: &[u64]) -> i64 {
        use xen_abi::memory as m;
        let list: Vec<u8> = gfns.iter().flat_map(|g| g.to_le_bytes()).collect();
        self.hv.guest_mem(d).unwrap().write(BUF, &list).unwrap();
        self.write(
            d,
            ARG,
            &m::XenMemoryReservation {
                extent_start: BUF,
                nr_extents: gfns.len() as u64,
                extent_order: 0,
                mem_flags: 0,
                domid: DomId::SELF,
                pad: [0; 6],
            },
        );
        self.call(
            d,
            x::__HYPERVISOR_memory_op,
            [m::XENMEM_decrease_reservation as u64, ARG, 0, 0, 0],
        )
    }

    fn upcall_pending(&self, d: DomId, v: u32) -> bool {
        let dom = self.hv.domain(d).unwrap();
        let (h, o) = dom.vcpu_info[v as usize].unwrap();
        let mut b = [0u8; 1];
        hv_core::platform::FrameAccess::read(&*self.hv.platform, h, o, &mut b);
        b[0] != 0
    }

    fn clear_upcall(&self, d: DomId, v: u32) {
        let dom = self.hv.domain(d).unwrap();
        let (h, o) = dom.vcpu_info[v as usize].unwrap();
        hv_core::platform::FrameAccess::write(&*self.hv.platform, h, o, &[0]);
    }

    fn si_word(&self, d: DomId, off: usize) -> u64 {
        let dom = self.hv.domain(d).unwrap();
        hv_core::platform::FrameAccess::load_u64(&*self.hv.platform, dom.shared_info, off)
    }

    fn bind_ipi(&mut self, d: DomId, vcpu: u32) -> u32 {
        let (r, a) = self.evtchn(
            d,
            ev::EVTCHNOP_bind_ipi,
            &ev::EvtchnBindIpi { vcpu, port: 0 },
        );
        assert_eq!(r, 0);
        a.port
    }

    fn send(&mut self, d: DomId, port: u32) -> i64 {
        self.evtchn(d, ev::EVTCHNOP_send, &ev::EvtchnSend { port })
            .0
    }
}

#[test]
fn console_io_writes_lines_prefixed_by_domain() {
    let mut s = Sim::new();
    let d = s.domain(4, 1, false);
    s.hv.guest_mem(d)
        .unwrap()
        .write(BUF, b"hello\nwor")
        .unwrap();
    assert_eq!(s.call(d, x::__HYPERVISOR_console_io, [0, 9, BUF, 0, 0]), 0);
    s.hv.guest_mem(d).unwrap().write(BUF, b"ld\n").unwrap();
    assert_eq!(s.call(d, x::__HYPERVISOR_console_io, [0, 3, BUF, 0, 0]), 0);
    assert_eq!(s.hv.platform.console_of(d), ["hello", "world"]);
    // Bad pointer and unknown command.
    assert_eq!(
        s.call(d, x::__HYPERVISOR_console_io, [0, 4, 0x7000_0000, 0, 0]),
        EFAULT
    );
    assert_eq!(
        s.call(d, x::__HYPERVISOR_console_io, [9, 0, 0, 0, 0]),
        EINVAL
    );
    assert_eq!(
        s.call(d, x::__HYPERVISOR_console_io, [1, 4, BUF, 0, 0]),
        EPERM
    );
}

#[test]
fn long_console_write_is_a_continuation() {
    let mut s = Sim::new();
    let d = s.domain(4, 1, false);
    let text: Vec<u8> = (0..10_000)
        .map(|i| {
            if i % 100 == 99 {
                b'\n'
            } else {
                b'a' + (i % 26) as u8
            }
        })
        .collect();
    s.hv.guest_mem(d).unwrap().write(BUF, &text).unwrap();
    let mut cpu = MockVcpu::flat64();
    cpu.hypercall(
        x::__HYPERVISOR_console_io as u64,
        [0, text.len() as u64, BUF, 0, 0],
    );
    let mut exits = 0;
    loop {
        exits += 1;
        let rip = cpu.rip;
        s.hv.handle_exit(d, 0, &mut cpu, VmExit::Hypercall);
        if cpu.rip != rip {
            break;
        }
        assert!(exits < 10);
    }
    assert_eq!(exits, 3, "4096-byte chunks");
    assert_eq!(cpu.ret(), 0);
    assert_eq!(s.hv.platform.console_of(d).len(), 100);
}

/// A reservation call of 2 MiB extents gives one extent per exit: no exit
/// allocates or zeroes more than 512 frames (Xen preempts after each
/// extent).
#[test]
fn large_extents_are_a_continuation_each() {
    use xen_abi::memory as m;
    let mut s = Sim::new();
    let d = s.domain(16, 1, false);
    let before = s.hv.domain(d).unwrap().tot_pages;
    let list: Vec<u8> = [0x400u64, 0x600, 0x800]
        .iter()
        .flat_map(|g| g.to_le_bytes())
        .collect();
    s.hv.guest_mem(d).unwrap().write(BUF, &list).unwrap();
    s.write(
        d,
        ARG,
        &m::XenMemoryReservation {
            extent_start: BUF,
            nr_extents: 3,
            extent_order: 9,
            mem_flags: 0,
            domid: DomId::SELF,
            pad: [0; 6],
        },
    );
    let mut cpu = MockVcpu::flat64();
    cpu.hypercall(
        x::__HYPERVISOR_memory_op as u64,
        [m::XENMEM_decrease_reservation as u64, ARG, 0, 0, 0],
    );
    let mut exits = 0;
    loop {
        exits += 1;
        let rip = cpu.rip;
        let pages = s.hv.domain(d).unwrap().tot_pages;
        s.hv.handle_exit(d, 0, &mut cpu, VmExit::Hypercall);
        assert!(pages - s.hv.domain(d).unwrap().tot_pages <= 512);
        if cpu.rip != rip {
            break;
        }
        assert!(exits < 10);
    }
    assert_eq!(exits, 3, "one 2 MiB extent per exit");
    assert_eq!(cpu.ret(), 3);
    assert_eq!(s.hv.domain(d).unwrap().tot_pages, before - 1536);
}

#[test]
fn dispatch_refuses_ring3_and_unknown_calls() {
    let mut s = Sim::new();
    let d = s.domain(4, 1, false);
    let mut cpu = MockVcpu::flat64();
    cpu.cpl = 3;
    let (r, _) = s.call_on(d, 0, &mut cpu, x::__HYPERVISOR_xen_version, [0; 5]);
    assert_eq!(r, EPERM);
    assert_eq!(cpu.rip, 3, "the call is skipped");
    assert_eq!(s.call(d, 0xFFFF, [0; 5]), ENOSYS);
    assert_eq!(s.call(d, x::__HYPERVISOR_mmu_update, [0; 5]), ENOSYS);
    let mut cpu = MockVcpu::flat64();
    cpu.hypercall(u64::MAX, [0; 5]);
    s.hv.handle_exit(d, 0, &mut cpu, VmExit::Hypercall);
    assert_eq!(cpu.ret(), ENOSYS);
}

#[test]
fn thirty_two_bit_convention() {
    let mut s = Sim::new();
    let d = s.domain(4, 1, false);
    s.write(
        d,
        ARG,
        &xen_abi::version::XenFeatureInfo {
            submap_idx: 0,
            submap: 0,
        },
    );
    let mut cpu = MockVcpu::flat64();
    cpu.long = false;
    cpu.gprs.rax = x::__HYPERVISOR_xen_version as u64;
    cpu.gprs.rbx = xen_abi::version::XENVER_get_features as u64 | 0xFFFF_FFFF_0000_0000;
    cpu.gprs.rcx = ARG;
    s.hv.handle_exit(d, 0, &mut cpu, VmExit::Hypercall);
    assert_eq!(cpu.gprs.rax, 0);
    let fi: xen_abi::version::XenFeatureInfo = s.read(d, ARG);
    assert_ne!(fi.submap, 0);
    // Errors come back as 32-bit negatives.
    cpu.gprs.rax = 0xFFFF;
    s.hv.handle_exit(d, 0, &mut cpu, VmExit::Hypercall);
    assert_eq!(cpu.gprs.rax, (ENOSYS as u64) & 0xFFFF_FFFF);
}

#[test]
fn xen_version_and_features() {
    use xen_abi::features as f;
    let mut s = Sim::new();
    let d = s.domain(4, 1, false);
    assert_eq!(
        s.call(d, x::__HYPERVISOR_xen_version, [0, 0, 0, 0, 0]),
        (4 << 16) | 17
    );
    s.write(
        d,
        ARG,
        &xen_abi::version::XenFeatureInfo {
            submap_idx: 0,
            submap: 0,
        },
    );
    assert_eq!(s.call(d, x::__HYPERVISOR_xen_version, [6, ARG, 0, 0, 0]), 0);
    let fi: xen_abi::version::XenFeatureInfo = s.read(d, ARG);
    for bit in [
        f::XENFEAT_auto_translated_physmap,
        f::XENFEAT_hvm_callback_vector,
        f::XENFEAT_hvm_safe_pvclock,
    ] {
        assert!(fi.submap & (1 << bit) != 0, "feature {bit}");
    }
    assert_eq!(fi.submap & (1 << f::XENFEAT_dom0), 0);
    assert_eq!(
        s.call(d, x::__HYPERVISOR_xen_version, [6, 0x7000_0000, 0, 0, 0]),
        EFAULT
    );
    assert_eq!(
        s.call(d, x::__HYPERVISOR_xen_version, [7, 0, 0, 0, 0]),
        4096
    );
    assert_eq!(
        s.call(d, x::__HYPERVISOR_xen_version, [9, ARG, 0, 0, 0]),
        EPERM
    );
    assert_eq!(
        s.call(d, x::__HYPERVISOR_xen_version, [99, ARG, 0, 0, 0]),
        ENOSYS
    );
}

#[test]
fn memory_map_and_reservations() {
    use xen_abi::memory as m;
    let mut s = Sim::new();
    let d = s.domain(4, 1, false);
    s.write(
        d,
        ARG,
        &m::XenMemoryMap {
            nr_entries: 8,
            pad: 0,
            buffer: BUF,
        },
    );
    assert_eq!(
        s.call(
            d,
            x::__HYPERVISOR_memory_op,
            [m::XENMEM_memory_map as u64, ARG, 0, 0, 0]
        ),
        0
    );
    let mm: m::XenMemoryMap = s.read(d, ARG);
    assert_eq!(mm.nr_entries, 1);
    let e: m::E820Entry = s.read(d, BUF);
    assert_eq!({ e.size }, 4 << 20);
    s.write(
        d,
        ARG,
        &m::XenMemoryMap {
            nr_entries: 8,
            pad: 0,
            buffer: 0x7000_0000,
        },
    );
    assert_eq!(
        s.call(
            d,
            x::__HYPERVISOR_memory_op,
            [m::XENMEM_memory_map as u64, ARG, 0, 0, 0]
        ),
        EFAULT
    );

    // Give back two frames, then populate one above RAM.
    let before = s.hv.domain(d).unwrap().tot_pages;
    assert_eq!(s.decrease_reservation(d, &[0x300, 0x301]), 2);
    assert_eq!(s.hv.domain(d).unwrap().tot_pages, before - 2);
    assert!(s.hv.domain(d).unwrap().p2m.get(Gfn(0x300)).is_none());
    s.hv.guest_mem(d)
        .unwrap()
        .write(BUF, &0x5000u64.to_le_bytes())
        .unwrap();
    s.write(
        d,
        ARG,
        &m::XenMemoryReservation {
            extent_start: BUF,
            nr_extents: 1,
            extent_order: 0,
            mem_flags: 0,
            domid: DomId::SELF,
            pad: [0; 6],
        },
    );
    assert_eq!(
        s.call(
            d,
            x::__HYPERVISOR_memory_op,
            [m::XENMEM_populate_physmap as u64, ARG, 0, 0, 0]
        ),
        1
    );
    assert_eq!(
        s.hv.domain(d).unwrap().p2m.get(Gfn(0x5000)).unwrap().kind,
        P2mKind::Ram
    );
    // Quota: max_pages is RAM + 64; asking for 100 more stops at the limit.
    let list: Vec<u8> = (0..100u64)
        .flat_map(|i| (0x6000 + i).to_le_bytes())
        .collect();
    s.hv.guest_mem(d).unwrap().write(BUF, &list).unwrap();
    s.write(
        d,
        ARG,
        &m::XenMemoryReservation {
            extent_start: BUF,
            nr_extents: 100,
            extent_order: 0,
            mem_flags: 0,
            domid: DomId::SELF,
            pad: [0; 6],
        },
    );
    assert_eq!(
        s.call(
            d,
            x::__HYPERVISOR_memory_op,
            [m::XENMEM_populate_physmap as u64, ARG, 0, 0, 0]
        ),
        65
    );
    // Another domain's memory is out of reach.
    s.write(
        d,
        ARG,
        &m::XenMemoryReservation {
            extent_start: BUF,
            nr_extents: 1,
            extent_order: 0,
            mem_flags: 0,
            domid: 5,
            pad: [0; 6],
        },
    );
    assert_eq!(
        s.call(
            d,
            x::__HYPERVISOR_memory_op,
            [m::XENMEM_populate_physmap as u64, ARG, 0, 0, 0]
        ),
        EPERM
    );
    // Over-large order.
    s.write(
        d,
        ARG,
        &m::XenMemoryReservation {
            extent_start: BUF,
            nr_extents: 1,
            extent_order: 20,
            mem_flags: 0,
            domid: DomId::SELF,
            pad: [0; 6],
        },
    );
    assert_eq!(
        s.call(
            d,
            x::__HYPERVISOR_memory_op,
            [m::XENMEM_populate_physmap as u64, ARG, 0, 0, 0]
        ),
        EINVAL
    );
}

#[test]
fn shared_info_placement_replaces_ram() {
    use xen_abi::memory as m;
    let mut s = Sim::new();
    let d = s.domain(4, 2, false);
    let pages = s.hv.domain(d).unwrap().tot_pages;
    s.write(
        d,
        ARG,
        &m::XenAddToPhysmap {
            domid: DomId::SELF,
            size: 0,
            space: m::XENMAPSPACE_shared_info,
            idx: 0,
            gpfn: 0x3FF,
        },
    );
    assert_eq!(
        s.call(
            d,
            x::__HYPERVISOR_memory_op,
            [m::XENMEM_add_to_physmap as u64, ARG, 0, 0, 0]
        ),
        0
    );
    let dom = s.hv.domain(d).unwrap();
    assert_eq!(dom.tot_pages, pages - 1);
    let e = dom.p2m.get(Gfn(0x3FF)).unwrap();
    assert_eq!((e.kind, e.hfn), (P2mKind::SharedInfo, dom.shared_info));
    // The guest now sees vcpu_info[1] through its mapping.
    let port = s.bind_ipi(d, 1);
    assert_eq!(s.send(d, port), 0);
    let pending: u8 = s.read(d, 0x3FF000 + 64);
    assert_eq!(pending, 1);
    // Bad space / index / domain.
    s.write(
        d,
        ARG,
        &m::XenAddToPhysmap {
            domid: DomId::SELF,
            size: 0,
            space: 77,
            idx: 0,
            gpfn: 0x3FF,
        },
    );
    assert_eq!(
        s.call(
            d,
            x::__HYPERVISOR_memory_op,
            [m::XENMEM_add_to_physmap as u64, ARG, 0, 0, 0]
        ),
        EINVAL
    );
    s.write(
        d,
        ARG,
        &m::XenAddToPhysmap {
            domid: DomId::SELF,
            size: 0,
            space: 0,
            idx: 1,
            gpfn: 0x3FF,
        },
    );
    assert_eq!(
        s.call(
            d,
            x::__HYPERVISOR_memory_op,
            [m::XENMEM_add_to_physmap as u64, ARG, 0, 0, 0]
        ),
        EINVAL
    );
    s.write(
        d,
        ARG,
        &m::XenAddToPhysmap {
            domid: 3,
            size: 0,
            space: 0,
            idx: 0,
            gpfn: 0x3FF,
        },
    );
    assert_eq!(
        s.call(
            d,
            x::__HYPERVISOR_memory_op,
            [m::XENMEM_add_to_physmap as u64, ARG, 0, 0, 0]
        ),
        EPERM
    );
}

#[test]
fn hvm_params_and_callback_upcall() {
    use xen_abi::hvm as h;
    let mut s = Sim::new();
    let d = s.domain(4, 1, false);
    let set = |s: &mut Sim, index: u32, value: u64| {
        s.write(
            d,
            ARG,
            &h::XenHvmParam {
                domid: DomId::SELF,
                pad: 0,
                index,
                value,
            },
        );
        s.call(
            d,
            x::__HYPERVISOR_hvm_op,
            [h::HVMOP_set_param as u64, ARG, 0, 0, 0],
        )
    };
    assert_eq!(set(&mut s, h::HVM_PARAM_CALLBACK_IRQ, (2 << 56) | 0xF3), 0);
    assert_eq!(
        set(&mut s, h::HVM_PARAM_CALLBACK_IRQ, 5),
        EINVAL,
        "GSI delivery needs an IOAPIC"
    );
    assert_eq!(set(&mut s, h::HVM_PARAM_CONSOLE_PFN, 5), EPERM);
    assert_eq!(set(&mut s, 1000, 5), EINVAL);
    s.write(
        d,
        ARG,
        &h::XenHvmParam {
            domid: DomId::SELF,
            pad: 0,
            index: h::HVM_PARAM_CALLBACK_IRQ,
            value: 0,
        },
    );
    assert_eq!(
        s.call(
            d,
            x::__HYPERVISOR_hvm_op,
            [h::HVMOP_get_param as u64, ARG, 0, 0, 0]
        ),
        0
    );
    let p: h::XenHvmParam = s.read(d, ARG);
    assert_eq!(p.value, (2 << 56) | 0xF3);
    // Xenstore absent: the param reads 0.
    s.write(
        d,
        ARG,
        &h::XenHvmParam {
            domid: DomId::SELF,
            pad: 0,
            index: h::HVM_PARAM_STORE_PFN,
            value: 9,
        },
    );
    assert_eq!(
        s.call(
            d,
            x::__HYPERVISOR_hvm_op,
            [h::HVMOP_get_param as u64, ARG, 0, 0, 0]
        ),
        0
    );
    assert_eq!(s.read::<h::XenHvmParam>(d, ARG).value, 0);

    // An IPI to ourselves raises the upcall and the vector is injected.
    let port = s.bind_ipi(d, 0);
    let mut cpu = MockVcpu::flat64();
    s.hv.prepare_entry(d, 0, &mut cpu);
    assert!(cpu.injected.is_empty());
    assert_eq!(s.send(d, port), 0);
    assert!(s.upcall_pending(d, 0));
    cpu.rflags = 0x2; // interrupts off: ask for a window
    s.hv.prepare_entry(d, 0, &mut cpu);
    assert!(cpu.injected.is_empty() && cpu.window);
    cpu.rflags = 0x202;
    assert_eq!(
        s.hv.handle_exit(d, 0, &mut cpu, VmExit::InterruptWindow),
        ExitAction::Resume
    );
    s.hv.prepare_entry(d, 0, &mut cpu);
    assert_eq!(cpu.injected, [Event::Interrupt(0xF3)]);
}

#[test]
fn two_level_masking_and_unmask() {
    let mut s = Sim::new();
    let d = s.domain(4, 1, false);
    let port = s.bind_ipi(d, 0);
    // Mask it in shared_info (offset 2560), send: pending but no upcall.
    let si = s.hv.domain(d).unwrap().shared_info;
    hv_core::platform::FrameAccess::fetch_or_u64(&*s.hv.platform, si, 2560, 1 << port);
    assert_eq!(s.send(d, port), 0);
    assert_eq!(s.si_word(d, 2048) & (1 << port), 1 << port);
    assert!(!s.upcall_pending(d, 0));
    let (r, _) = s.evtchn(d, ev::EVTCHNOP_unmask, &ev::EvtchnUnmask { port });
    assert_eq!(r, 0);
    assert!(s.upcall_pending(d, 0));
    assert_eq!(s.si_word(d, 2560) & (1 << port), 0);
    // pending_sel bit 0 is set in vcpu_info[0].
    assert_eq!(s.si_word(d, 8) & 1, 1);
    // Unknown ports.
    assert_eq!(s.send(d, 999), EINVAL);
    assert_eq!(
        s.evtchn(d, ev::EVTCHNOP_unmask, &ev::EvtchnUnmask { port: 999 })
            .0,
        EINVAL
    );
    assert_eq!(
        s.evtchn(d, ev::EVTCHNOP_close, &ev::EvtchnClose { port: 0 })
            .0,
        EINVAL
    );
}

#[test]
fn interdomain_ping_pong_and_teardown() {
    let mut s = Sim::new();
    let frames_at_start = s.hv.platform.frames_in_use();
    let d0 = s.domain(4, 1, true);
    let d1 = s.domain(4, 1, false);
    let (r, a) = s.evtchn(
        d0,
        ev::EVTCHNOP_alloc_unbound,
        &ev::EvtchnAllocUnbound {
            dom: DomId::SELF,
            remote_dom: d1.0,
            port: 0,
        },
    );
    assert_eq!(r, 0);
    let p0 = a.port;
    // A third party cannot bind it.
    let d2 = s.domain(4, 1, false);
    let (r, _) = s.evtchn(
        d2,
        ev::EVTCHNOP_bind_interdomain,
        &ev::EvtchnBindInterdomain {
            remote_dom: d0.0,
            pad: 0,
            remote_port: p0,
            local_port: 0,
        },
    );
    assert_eq!(r, EINVAL);
    let (r, b) = s.evtchn(
        d1,
        ev::EVTCHNOP_bind_interdomain,
        &ev::EvtchnBindInterdomain {
            remote_dom: d0.0,
            pad: 0,
            remote_port: p0,
            local_port: 0,
        },
    );
    assert_eq!(r, 0);
    let p1 = b.local_port;
    // Binding raised the new port (as Xen does): acknowledge it.
    assert!(s.upcall_pending(d1, 0));
    assert_eq!(s.si_word(d1, 2048) & (1 << p1), 1 << p1);
    s.clear_upcall(d1, 0);
    let si1 = s.hv.domain(d1).unwrap().shared_info;
    hv_core::platform::FrameAccess::fetch_and_u64(&*s.hv.platform, si1, 2048, 0);
    hv_core::platform::FrameAccess::fetch_and_u64(&*s.hv.platform, si1, 8, 0);
    for _ in 0..3 {
        assert_eq!(s.send(d1, p1), 0);
        assert!(s.upcall_pending(d0, 0));
        s.clear_upcall(d0, 0);
        // The guest acknowledges by clearing the pending bit.
        let si = s.hv.domain(d0).unwrap().shared_info;
        hv_core::platform::FrameAccess::fetch_and_u64(&*s.hv.platform, si, 2048, !(1 << p0));
        hv_core::platform::FrameAccess::fetch_and_u64(&*s.hv.platform, si, 8, 0);
        assert_eq!(s.send(d0, p0), 0);
        assert!(s.upcall_pending(d1, 0));
        s.clear_upcall(d1, 0);
        let si1 = s.hv.domain(d1).unwrap().shared_info;
        hv_core::platform::FrameAccess::fetch_and_u64(&*s.hv.platform, si1, 2048, !(1 << p1));
        hv_core::platform::FrameAccess::fetch_and_u64(&*s.hv.platform, si1, 8, 0);
    }
    // Status from both sides.
    let (r, st) = s.evtchn(
        d0,
        ev::EVTCHNOP_status,
        &ev::EvtchnStatus {
            dom: DomId::SELF,
            port: p0,
            ..Default::default()
        },
    );
    assert_eq!(
        (r, st.status, st.u),
        (0, ev::EVTCHNSTAT_interdomain, [d1.0 as u32, p1])
    );
    // d2 may not query d0.
    let (r, _) = s.evtchn(
        d2,
        ev::EVTCHNOP_status,
        &ev::EvtchnStatus {
            dom: d0.0,
            port: p0,
            ..Default::default()
        },
    );
    assert_eq!(r, EPERM);
    // Destroying d1 leaves d0's port unbound, and every frame comes back.
    s.hv.destroy_domain(d1).unwrap();
    let (_, st) = s.evtchn(
        d0,
        ev::EVTCHNOP_status,
        &ev::EvtchnStatus {
            dom: DomId::SELF,
            port: p0,
            ..Default::default()
        },
    );
    assert_eq!(st.status, ev::EVTCHNSTAT_unbound);
    assert_eq!(
        s.send(d0, p0),
        0,
        "sending on an unbound port is silently dropped"
    );
    s.hv.destroy_domain(d0).unwrap();
    s.hv.destroy_domain(d2).unwrap();
    assert_eq!(s.hv.platform.frames_in_use(), frames_at_start);
    assert!(s.hv.domain_ids().is_empty());
}

#[test]
fn virq_binding_rules() {
    let mut s = Sim::new();
    let d = s.domain(4, 2, false);
    let bind = |s: &mut Sim, virq, vcpu| {
        s.evtchn(
            d,
            ev::EVTCHNOP_bind_virq,
            &ev::EvtchnBindVirq {
                virq,
                vcpu,
                port: 0,
            },
        )
    };
    let (r, a) = bind(&mut s, x::VIRQ_TIMER, 1);
    assert_eq!(r, 0);
    assert_eq!(bind(&mut s, x::VIRQ_TIMER, 1).0, -17, "EEXIST");
    assert_eq!(
        bind(&mut s, x::VIRQ_CONSOLE, 1).0,
        EINVAL,
        "global VIRQs bind on vCPU 0"
    );
    assert_eq!(bind(&mut s, 99, 0).0, EINVAL);
    assert_eq!(bind(&mut s, x::VIRQ_TIMER, 7).0, ENOENT);
    s.clear_upcall(d, 1);
    s.hv.send_virq(d, x::VIRQ_TIMER, 1);
    assert!(s.upcall_pending(d, 1));
    assert!(!s.upcall_pending(d, 0));
    // A VIRQ port cannot be sent on by the guest.
    assert_eq!(s.send(d, a.port), EINVAL);
    assert_eq!(
        s.evtchn(d, ev::EVTCHNOP_close, &ev::EvtchnClose { port: a.port })
            .0,
        0
    );
    assert_eq!(bind(&mut s, x::VIRQ_TIMER, 1).0, 0);
}

/// Sets up FIFO for vCPU 0 with the control block at 0x8000 and one array
/// page at 0x9000.
fn fifo(s: &mut Sim, d: DomId) {
    let (r, a) = s.evtchn(
        d,
        ev::EVTCHNOP_init_control,
        &ev::EvtchnInitControl {
            control_gfn: 8,
            offset: 0,
            vcpu: 0,
            link_bits: 0,
            _pad: [0; 7],
        },
    );
    assert_eq!(r, 0);
    assert_eq!(a.link_bits, 17);
    assert_eq!(
        s.evtchn(
            d,
            ev::EVTCHNOP_expand_array,
            &ev::EvtchnExpandArray { array_gfn: 9 }
        )
        .0,
        0
    );
}

#[test]
fn fifo_queues_link_in_order() {
    let mut s = Sim::new();
    let d = s.domain(4, 1, false);
    fifo(&mut s, d);
    let p1 = s.bind_ipi(d, 0);
    let p2 = s.bind_ipi(d, 0);
    s.clear_upcall(d, 0);
    assert_eq!(s.send(d, p1), 0);
    let w1: u32 = s.read(d, 0x9000 + p1 as u64 * 4);
    assert_eq!(w1 & 0xE000_0000, 0xA000_0000, "PENDING|LINKED");
    let ready: u32 = s.read(d, 0x8000);
    assert_eq!(ready, 1 << 7, "default priority 7");
    let head: u32 = s.read(d, 0x8000 + 8 + 7 * 4);
    assert_eq!(head, p1);
    assert!(s.upcall_pending(d, 0));
    assert_eq!(s.send(d, p2), 0);
    let w1: u32 = s.read(d, 0x9000 + p1 as u64 * 4);
    assert_eq!(w1 & 0x1_FFFF, p2, "p1 links to p2");
    // Sending again while linked changes nothing.
    assert_eq!(s.send(d, p2), 0);
    let w2: u32 = s.read(d, 0x9000 + p2 as u64 * 4);
    assert_eq!(w2 & 0x1_FFFF, 0);
}

#[test]
fn fifo_masked_and_racing_guest() {
    let mut s = Sim::new();
    let d = s.domain(4, 1, false);
    fifo(&mut s, d);
    let p1 = s.bind_ipi(d, 0);
    let p2 = s.bind_ipi(d, 0);
    // Masked: pending, not linked.
    s.write(d, 0x9000 + p1 as u64 * 4, &(1u32 << 30));
    assert_eq!(s.send(d, p1), 0);
    let w: u32 = s.read(d, 0x9000 + p1 as u64 * 4);
    assert_eq!(w, (1 << 31) | (1 << 30));
    // Unmask through the hypercall links it.
    assert_eq!(
        s.evtchn(d, ev::EVTCHNOP_unmask, &ev::EvtchnUnmask { port: p1 })
            .0,
        0
    );
    let w: u32 = s.read(d, 0x9000 + p1 as u64 * 4);
    assert_eq!(w & (1 << 29), 1 << 29);
    // The guest consumes p1 (clears LINKED) before p2 arrives: p2 must
    // become the head, not a link from a dead tail.
    s.write(d, 0x9000 + p1 as u64 * 4, &0u32);
    s.write(d, 0x8000 + 8 + 7 * 4, &0u32);
    assert_eq!(s.send(d, p2), 0);
    let head: u32 = s.read(d, 0x8000 + 8 + 7 * 4);
    assert_eq!(head, p2);
    // Priority changes and their limits.
    assert_eq!(
        s.evtchn(
            d,
            ev::EVTCHNOP_set_priority,
            &ev::EvtchnSetPriority {
                port: p1,
                priority: 2
            }
        )
        .0,
        0
    );
    assert_eq!(
        s.evtchn(
            d,
            ev::EVTCHNOP_set_priority,
            &ev::EvtchnSetPriority {
                port: p1,
                priority: 16
            }
        )
        .0,
        EINVAL
    );
    s.write(d, 0x8000, &0u32);
    s.write(d, 0x9000 + p1 as u64 * 4, &0u32);
    assert_eq!(s.send(d, p1), 0);
    let ready: u32 = s.read(d, 0x8000);
    assert_eq!(ready, 1 << 2);
}

/// Setting FIFO up on pages, giving the pages back and resetting, round
/// after round, holds no host frame: the reset unpins them (Xen's
/// evtchn_fifo_destroy), and the given-back ones are freed.
#[test]
fn fifo_reset_unpins_its_pages() {
    let mut s = Sim::new();
    let d = s.domain(4, 1, false);
    let baseline = s.hv.platform.frames_in_use();
    for round in 0..40u64 {
        let (control, array) = (0x300 + 2 * round, 0x301 + 2 * round);
        let (r, _) = s.evtchn(
            d,
            ev::EVTCHNOP_init_control,
            &ev::EvtchnInitControl {
                control_gfn: control,
                offset: 0,
                vcpu: 0,
                link_bits: 0,
                _pad: [0; 7],
            },
        );
        assert_eq!(r, 0, "round {round}: init_control");
        let (r, _) = s.evtchn(
            d,
            ev::EVTCHNOP_expand_array,
            &ev::EvtchnExpandArray { array_gfn: array },
        );
        assert_eq!(r, 0, "round {round}: expand_array");
        // Both pages back to the hypervisor while FIFO holds them.
        assert_eq!(s.decrease_reservation(d, &[control, array]), 2);
        assert_eq!(s.hv.domain(d).unwrap().zombies.len(), 2, "pinned meanwhile");
        let (r, _) = s.evtchn(d, ev::EVTCHNOP_reset, &ev::EvtchnReset { dom: DomId::SELF });
        assert_eq!(r, 0);
        let dom = s.hv.domain(d).unwrap();
        assert!(dom.zombies.is_empty(), "round {round}: {:?}", dom.zombies);
        assert!(dom.pinned.is_empty(), "round {round}: {:?}", dom.pinned);
    }
    // The 80 pages given back are gone from the host's count too.
    assert_eq!(s.hv.platform.frames_in_use(), baseline - 80);
}

#[test]
fn fifo_setup_rejects_bad_input() {
    let mut s = Sim::new();
    let d = s.domain(4, 1, false);
    let init = |s: &mut Sim, gfn, offset, vcpu| {
        s.evtchn(
            d,
            ev::EVTCHNOP_init_control,
            &ev::EvtchnInitControl {
                control_gfn: gfn,
                offset,
                vcpu,
                link_bits: 0,
                _pad: [0; 7],
            },
        )
        .0
    };
    assert_eq!(init(&mut s, 8, 4093, 0), EINVAL, "crosses the page");
    assert_eq!(init(&mut s, 8, 4, 0), EINVAL, "misaligned");
    assert_eq!(init(&mut s, 0x99999, 0, 0), EINVAL, "not RAM");
    assert_eq!(init(&mut s, 8, 0, 5), ENOENT, "no such vCPU");
    assert_eq!(
        s.evtchn(
            d,
            ev::EVTCHNOP_expand_array,
            &ev::EvtchnExpandArray { array_gfn: 9 }
        )
        .0,
        EOPNOTSUPP,
        "before init_control (Xen's evtchn_fifo_expand_array)"
    );
    assert_eq!(
        s.evtchn(
            d,
            ev::EVTCHNOP_expand_array,
            &ev::EvtchnExpandArray { array_gfn: 0x99999 }
        )
        .0,
        EOPNOTSUPP,
        "checked before the page"
    );
    assert_eq!(init(&mut s, 8, 0, 0), 0);
    assert_eq!(init(&mut s, 8, 0, 0), EINVAL, "twice");
    // Give the control block page back: it stays allocated (pinned)
    // until the domain dies, and nothing dangles.
    let frames = s.hv.platform.frames_in_use();
    s.hv.guest_mem(d)
        .unwrap()
        .write(BUF, &8u64.to_le_bytes())
        .unwrap();
    s.write(
        d,
        ARG,
        &xen_abi::memory::XenMemoryReservation {
            extent_start: BUF,
            nr_extents: 1,
            extent_order: 0,
            mem_flags: 0,
            domid: DomId::SELF,
            pad: [0; 6],
        },
    );
    assert_eq!(s.call(d, x::__HYPERVISOR_memory_op, [1, ARG, 0, 0, 0]), 1);
    assert_eq!(s.hv.platform.frames_in_use(), frames);
    let p = s.bind_ipi(d, 0);
    s.expand_ok(d);
    assert_eq!(s.send(d, p), 0);
    s.hv.destroy_domain(d).unwrap();
}

impl Sim {
    fn expand_ok(&mut self, d: DomId) {
        assert_eq!(
            self.evtchn(
                d,
                ev::EVTCHNOP_expand_array,
                &ev::EvtchnExpandArray { array_gfn: 9 }
            )
            .0,
            0
        );
    }
}

#[test]
fn register_vcpu_info_moves_delivery() {
    use xen_abi::vcpu as vc;
    let mut s = Sim::new();
    let d = s.domain(4, 2, false);
    s.write(
        d,
        ARG,
        &vc::VcpuRegisterVcpuInfo {
            mfn: 0x50,
            offset: 64,
            rsvd: 0,
        },
    );
    assert_eq!(
        s.call(
            d,
            x::__HYPERVISOR_vcpu_op,
            [vc::VCPUOP_register_vcpu_info as u64, 1, ARG, 0, 0]
        ),
        0
    );
    assert_eq!(
        s.call(
            d,
            x::__HYPERVISOR_vcpu_op,
            [vc::VCPUOP_register_vcpu_info as u64, 1, ARG, 0, 0]
        ),
        EINVAL
    );
    s.write(d, 0x50040u64, &[0u8; 16]);
    let port = s.bind_ipi(d, 1);
    s.send(d, port);
    let pending: u8 = s.read(d, 0x50040);
    assert_eq!(pending, 1);
    // Bad arguments.
    for (mfn, offset) in [(0x51u64, 4040u32), (0x51, 3), (0x99999, 0)] {
        s.write(
            d,
            ARG,
            &vc::VcpuRegisterVcpuInfo {
                mfn,
                offset,
                rsvd: 0,
            },
        );
        assert_eq!(
            s.call(
                d,
                x::__HYPERVISOR_vcpu_op,
                [vc::VCPUOP_register_vcpu_info as u64, 0, ARG, 0, 0]
            ),
            EINVAL
        );
    }
    assert_eq!(
        s.call(
            d,
            x::__HYPERVISOR_vcpu_op,
            [vc::VCPUOP_register_vcpu_info as u64, 9, ARG, 0, 0]
        ),
        ENOENT
    );
    assert_eq!(
        s.call(
            d,
            x::__HYPERVISOR_vcpu_op,
            [vc::VCPUOP_stop_periodic_timer as u64, 0, 0, 0, 0]
        ),
        0
    );
    s.write(d, ARG, &vc::VcpuRegisterRunstateMemoryArea { addr: BUF });
    assert_eq!(
        s.call(
            d,
            x::__HYPERVISOR_vcpu_op,
            [
                vc::VCPUOP_register_runstate_memory_area as u64,
                0,
                ARG,
                0,
                0
            ]
        ),
        0
    );
    let rs: vc::VcpuRunstateInfo = s.read(d, BUF);
    assert_eq!(rs.state, vc::RUNSTATE_running);
    assert_eq!(
        s.call(
            d,
            x::__HYPERVISOR_vcpu_op,
            [vc::VCPUOP_is_up as u64, 1, 0, 0, 0]
        ),
        0
    );
}

#[test]
fn sched_block_poll_and_shutdown() {
    use xen_abi::sched as sc;
    let mut s = Sim::new();
    let d = s.domain(4, 1, false);
    let port = s.bind_ipi(d, 0);
    s.clear_upcall(d, 0);
    let mut cpu = MockVcpu::flat64();
    let (_, a) = s.call_on(
        d,
        0,
        &mut cpu,
        x::__HYPERVISOR_sched_op,
        [sc::SCHEDOP_block as u64, 0, 0, 0, 0],
    );
    assert_eq!(a, ExitAction::Block);
    assert_eq!(s.hv.domain(d).unwrap().vcpus[0].state, VcpuState::Blocked);
    s.send(d, port);
    assert!(s.hv.vcpu_runnable(d, 0), "an event wakes a blocked vCPU");
    // Blocking with an event pending returns at once.
    let (_, a) = s.call_on(
        d,
        0,
        &mut cpu,
        x::__HYPERVISOR_sched_op,
        [sc::SCHEDOP_block as u64, 0, 0, 0, 0],
    );
    assert_eq!(a, ExitAction::Resume);
    // HLT behaves the same.
    assert_eq!(
        s.hv.handle_exit(d, 0, &mut cpu, VmExit::Hlt),
        ExitAction::Resume
    );
    s.clear_upcall(d, 0);
    assert_eq!(
        s.hv.handle_exit(d, 0, &mut cpu, VmExit::Hlt),
        ExitAction::Block
    );
    s.hv.tick(u64::MAX);
    s.send(d, port);

    // Poll with a timeout; the pending bit is cleared first.
    let si = s.hv.domain(d).unwrap().shared_info;
    hv_core::platform::FrameAccess::fetch_and_u64(&*s.hv.platform, si, 2048, 0);
    s.hv.guest_mem(d)
        .unwrap()
        .write(BUF, &port.to_le_bytes())
        .unwrap();
    let now = hv_core::platform::Platform::now_ns(&*s.hv.platform);
    s.write(
        d,
        ARG,
        &sc::SchedPoll {
            ports: BUF,
            nr_ports: 1,
            pad: 0,
            timeout: now + 1000,
        },
    );
    let (r, a) = s.call_on(
        d,
        0,
        &mut cpu,
        x::__HYPERVISOR_sched_op,
        [sc::SCHEDOP_poll as u64, ARG, 0, 0, 0],
    );
    assert_eq!((r, a), (0, ExitAction::Block));
    assert_eq!(s.hv.domain(d).unwrap().vcpus[0].state, VcpuState::Polling);
    assert_eq!(s.hv.tick(now + 999), Some(now + 1000));
    assert!(!s.hv.vcpu_runnable(d, 0));
    s.hv.tick(now + 1000);
    assert!(s.hv.vcpu_runnable(d, 0), "the timeout wakes it");
    // Bad polls.
    s.write(
        d,
        ARG,
        &sc::SchedPoll {
            ports: BUF,
            nr_ports: 10_000,
            pad: 0,
            timeout: 0,
        },
    );
    assert_eq!(
        s.call(
            d,
            x::__HYPERVISOR_sched_op,
            [sc::SCHEDOP_poll as u64, ARG, 0, 0, 0]
        ),
        EINVAL
    );
    s.write(
        d,
        ARG,
        &sc::SchedPoll {
            ports: 0x7000_0000,
            nr_ports: 1,
            pad: 0,
            timeout: 0,
        },
    );
    assert_eq!(
        s.call(
            d,
            x::__HYPERVISOR_sched_op,
            [sc::SCHEDOP_poll as u64, ARG, 0, 0, 0]
        ),
        EFAULT
    );

    // Shutdown with a bad reason, then poweroff.
    s.write(d, ARG, &sc::SchedShutdown { reason: 99 });
    assert_eq!(
        s.call(
            d,
            x::__HYPERVISOR_sched_op,
            [sc::SCHEDOP_shutdown as u64, ARG, 0, 0, 0]
        ),
        EINVAL
    );
    s.write(d, ARG, &sc::SchedShutdown { reason: 0 });
    let (_, a) = s.call_on(
        d,
        0,
        &mut cpu,
        x::__HYPERVISOR_sched_op,
        [sc::SCHEDOP_shutdown as u64, ARG, 0, 0, 0],
    );
    assert_eq!(a, ExitAction::Dead);
    assert_eq!(
        s.hv.domain(d).unwrap().state,
        DomainState::Shutdown(ShutdownReason::Poweroff)
    );
    assert_eq!(
        s.hv.handle_exit(d, 0, &mut cpu, VmExit::Cpuid),
        ExitAction::Dead
    );
}

#[test]
fn cpuid_policy() {
    let mut s = Sim::new();
    let d = s.domain(4, 2, false);
    let mut cpu = MockVcpu::flat64();
    let q = |s: &mut Sim, cpu: &mut MockVcpu, leaf: u64| {
        cpu.gprs.rax = leaf;
        cpu.gprs.rcx = 0;
        s.hv.handle_exit(d, 1, cpu, VmExit::Cpuid);
        [
            cpu.gprs.rax as u32,
            cpu.gprs.rbx as u32,
            cpu.gprs.rcx as u32,
            cpu.gprs.rdx as u32,
        ]
    };
    let r = q(&mut s, &mut cpu, 0x4000_0000);
    let mut sig = Vec::new();
    for w in &r[1..] {
        sig.extend_from_slice(&w.to_le_bytes());
    }
    assert_eq!(&sig, b"XenVMMXenVMM");
    assert!(r[0] >= 0x4000_0002);
    assert_eq!(q(&mut s, &mut cpu, 0x4000_0001)[0], (4 << 16) | 17);
    assert_eq!(q(&mut s, &mut cpu, 0x4000_0002)[..2], [1, 0x4000_0000]);
    let hvm = q(&mut s, &mut cpu, 0x4000_0004);
    assert_eq!(hvm[0] & (1 << 6), 0, "no per-vCPU upcall vector flag");
    assert_eq!((hvm[1], hvm[2]), (1, d.0 as u32));
    let l1 = q(&mut s, &mut cpu, 1);
    assert!(l1[2] & (1 << 31) != 0, "hypervisor bit");
    assert_eq!(l1[2] & (1 << 5), 0, "VMX hidden");
    // Features whose MSRs are not emulated: DTES64, DS-CPL, EST, TM2,
    // PDCM; DS, ACPI, TM, PBE (the mock host has every bit set).
    assert_eq!(l1[2] & 0x8194, 0, "ECX {:#x}", l1[2]);
    assert_eq!(l1[3] & 0xA060_0000, 0, "EDX {:#x}", l1[3]);
    // SME/SEV: the leaf is empty.
    assert_eq!(q(&mut s, &mut cpu, 0x8000_001F), [0; 4]);
    // PKU and OSPKE: PKRU is not switched per vCPU.
    assert_eq!(q(&mut s, &mut cpu, 7)[2] & 0x18, 0);
    assert_eq!(l1[1] >> 24, 2, "APIC id 2 x vCPU");
    assert_eq!(
        q(&mut s, &mut cpu, 0x8000_0001)[2] & (1 << 2),
        0,
        "SVM hidden"
    );
    assert_eq!(cpu.rip, 3 * 8);
}

#[test]
fn hypercall_page_and_msrs() {
    let mut s = Sim::new();
    let d = s.domain(4, 1, false);
    let mut cpu = MockVcpu::flat64();
    assert_eq!(
        s.hv.handle_exit(
            d,
            0,
            &mut cpu,
            VmExit::MsrWrite {
                msr: 0x4000_0000,
                value: 0x7000
            }
        ),
        ExitAction::Resume
    );
    let stub: [u8; 32] = s.read(d, 0x7000 + 32 * 18);
    assert_eq!(
        &stub[..9],
        &[0xB8, 18, 0, 0, 0, 0x0F, 0x01, 0xD9, 0xC3],
        "mov eax, 18; vmmcall; ret"
    );
    assert!(cpu.injected.is_empty());
    // Page index 1 does not exist; unknown MSRs fault.
    s.hv.handle_exit(
        d,
        0,
        &mut cpu,
        VmExit::MsrWrite {
            msr: 0x4000_0000,
            value: 0x7001,
        },
    );
    s.hv.handle_exit(d, 0, &mut cpu, VmExit::MsrRead { msr: 0xDEAD });
    assert_eq!(cpu.injected.len(), 2);
    assert!(
        cpu.injected
            .iter()
            .all(|e| matches!(e, Event::Exception { vector: 13, .. }))
    );
    cpu.gprs.rcx = 0x1B;
    s.hv.handle_exit(d, 0, &mut cpu, VmExit::MsrRead { msr: 0x1B });
    assert_eq!(cpu.gprs.rax, 0xFEE0_0D00, "enabled, x2APIC mode, BSP");
    // Intel hosts get VMCALL.
    let mut intel = MockPlatform::default();
    intel.amd = false;
    let mut s = Sim {
        hv: Hypervisor::new(intel),
    };
    let d = s.domain(4, 1, false);
    s.hv.handle_exit(
        d,
        0,
        &mut cpu,
        VmExit::MsrWrite {
            msr: 0x4000_0000,
            value: 0x7000,
        },
    );
    let stub: [u8; 9] = s.read(d, 0x7000);
    assert_eq!(&stub[5..8], &[0x0F, 0x01, 0xC1]);
}

#[test]
fn port_io_debug_console_and_acpi_poweroff() {
    use hv_core::arch::IoExit;
    let mut s = Sim::new();
    let d = s.domain(4, 1, false);
    let mut cpu = MockVcpu::flat64();
    for b in b"hi\n" {
        cpu.gprs.rax = *b as u64;
        s.hv.handle_exit(
            d,
            0,
            &mut cpu,
            VmExit::Io(IoExit {
                port: 0xE9,
                size: 1,
                write: true,
                string: false,
                rep: false,
            }),
        );
    }
    assert_eq!(s.hv.platform.console_of(d), ["hi"]);
    cpu.gprs.rax = 0x1234_5678_0000_0000;
    s.hv.handle_exit(
        d,
        0,
        &mut cpu,
        VmExit::Io(IoExit {
            port: 0x61,
            size: 2,
            write: false,
            string: false,
            rep: false,
        }),
    );
    assert_eq!(
        cpu.gprs.rax, 0x1234_5678_0000_FFFF,
        "unhandled ports read all-ones"
    );
    // rep outsb of 3 bytes to 0xE9.
    s.hv.guest_mem(d).unwrap().write(BUF, b"ok\n").unwrap();
    cpu.gprs.rsi = BUF;
    cpu.gprs.rcx = 3;
    s.hv.handle_exit(
        d,
        0,
        &mut cpu,
        VmExit::Io(IoExit {
            port: 0xE9,
            size: 1,
            write: true,
            string: true,
            rep: true,
        }),
    );
    assert_eq!(s.hv.platform.console_of(d), ["hi", "ok"]);
    assert_eq!((cpu.gprs.rcx, cpu.gprs.rsi), (0, BUF + 3));
    // rep insw from a bad address faults instead of writing anywhere.
    cpu.gprs.rdi = 0x7000_0000;
    cpu.gprs.rcx = 2;
    s.hv.handle_exit(
        d,
        0,
        &mut cpu,
        VmExit::Io(IoExit {
            port: 0x80,
            size: 2,
            write: false,
            string: true,
            rep: true,
        }),
    );
    assert!(matches!(
        cpu.injected.last(),
        Some(Event::Exception { vector: 14, .. })
    ));
    // ACPI S5.
    cpu.gprs.rax = (5 << 2) | (1 << 5);
    let a = s.hv.handle_exit(
        d,
        0,
        &mut cpu,
        VmExit::Io(IoExit {
            port: 0xB004,
            size: 1,
            write: true,
            string: false,
            rep: false,
        }),
    );
    assert_eq!(a, ExitAction::Dead);
    assert_eq!(
        s.hv.domain(d).unwrap().state,
        DomainState::Shutdown(ShutdownReason::Poweroff)
    );
}

#[test]
fn bad_exits_crash_only_that_domain() {
    let mut s = Sim::new();
    let d0 = s.domain(4, 1, true);
    let d1 = s.domain(4, 1, false);
    let mut cpu = MockVcpu::flat64();
    assert_eq!(
        s.hv.handle_exit(d1, 0, &mut cpu, VmExit::Shutdown),
        ExitAction::Dead
    );
    assert_eq!(
        s.hv.domain(d1).unwrap().state,
        DomainState::Shutdown(ShutdownReason::Crash)
    );
    assert_eq!(s.hv.domain(d0).unwrap().state, DomainState::Running);
    let d2 = s.domain(4, 1, false);
    assert_eq!(
        s.hv.handle_exit(
            d2,
            0,
            &mut cpu,
            // A permission fault on a mapped frame is not emulated.
            VmExit::NestedPageFault {
                gpa: 0x1000,
                access: hv_core::arch::Access {
                    write: true,
                    present: true,
                    ..Default::default()
                }
            }
        ),
        ExitAction::Dead
    );
    let d3 = s.domain(4, 1, false);
    assert_eq!(
        s.hv.handle_exit(d3, 0, &mut cpu, VmExit::Unhandled { code: 0x1234 }),
        ExitAction::Dead
    );
    // Exits for a vCPU that does not exist are refused.
    assert_eq!(
        s.hv.handle_exit(d0, 9, &mut cpu, VmExit::Cpuid),
        ExitAction::Dead
    );
    assert_eq!(
        s.hv.handle_exit(DomId(77), 0, &mut cpu, VmExit::Cpuid),
        ExitAction::Dead
    );
    assert_eq!(
        s.call(d0, x::__HYPERVISOR_xen_version, [0; 5]),
        (4 << 16) | 17
    );
}

#[test]
fn hypercall_arguments_through_guest_page_tables() {
    // Four-level tables mapping linear 0xFFFF_8000_0010_0000 to physical
    // 0x10_0000 (ARG), built in guest memory at 0x1000..0x4000.
    let mut s = Sim::new();
    let d = s.domain(4, 1, false);
    let la: u64 = 0xFFFF_8000_0010_0000;
    let idx = |l: u32| (la >> (12 + 9 * l)) & 0x1FF;
    s.write(d, 0x1000 + idx(3) * 8, &(0x2000u64 | 3));
    s.write(d, 0x2000 + idx(2) * 8, &(0x3000u64 | 3));
    s.write(d, 0x3000 + idx(1) * 8, &(0x4000u64 | 3));
    s.write(d, 0x4000 + idx(0) * 8, &(ARG | 3));
    let mut cpu = MockVcpu::flat64();
    cpu.ctl = [0x8001_0011, 0, 0x1000, 0x20, 0x500, 1];
    s.write(
        d,
        ARG,
        &xen_abi::version::XenFeatureInfo {
            submap_idx: 0,
            submap: 0,
        },
    );
    cpu.hypercall(x::__HYPERVISOR_xen_version as u64, [6, la, 0, 0, 0]);
    s.hv.handle_exit(d, 0, &mut cpu, VmExit::Hypercall);
    assert_eq!(cpu.ret(), 0);
    assert_ne!(s.read::<xen_abi::version::XenFeatureInfo>(d, ARG).submap, 0);
    // An unmapped or non-canonical linear address is -EFAULT.
    for bad in [la + 0x1000, 0x0000_8000_0000_0000] {
        cpu.hypercall(x::__HYPERVISOR_xen_version as u64, [6, bad, 0, 0, 0]);
        s.hv.handle_exit(d, 0, &mut cpu, VmExit::Hypercall);
        assert_eq!(cpu.ret(), EFAULT);
    }
    // A read-only leaf refuses writes when CR0.WP is set.
    s.write(d, 0x4000 + idx(0) * 8, &(ARG | 1));
    cpu.hypercall(x::__HYPERVISOR_xen_version as u64, [6, la, 0, 0, 0]);
    s.hv.handle_exit(d, 0, &mut cpu, VmExit::Hypercall);
    assert_eq!(cpu.ret(), EFAULT);
}

#[test]
fn no_such_domain_or_vcpu() {
    let mut s = Sim::new();
    let d = s.domain(4, 1, true);
    s.write(
        d,
        ARG,
        &xen_abi::hvm::XenHvmParam {
            domid: 300,
            pad: 0,
            index: 0,
            value: 0,
        },
    );
    assert_eq!(s.call(d, x::__HYPERVISOR_hvm_op, [1, ARG, 0, 0, 0]), ESRCH);
    assert_eq!(s.call(d, x::__HYPERVISOR_vcpu_op, [3, 1, 0, 0, 0]), ENOENT);
}

#[test]
fn fifo_holds_131072_ports() {
    use hv_core::evtchn::ChanState;
    let mut s = Sim::new();
    let d = s.domain(4, 1, false);
    fifo(&mut s, d);
    // 128 array pages cover every port (the first is at gfn 9).
    for gfn in 0x100..0x100 + 127 {
        assert_eq!(
            s.evtchn(
                d,
                ev::EVTCHNOP_expand_array,
                &ev::EvtchnExpandArray { array_gfn: gfn }
            )
            .0,
            0
        );
    }
    assert_eq!(
        s.evtchn(
            d,
            ev::EVTCHNOP_expand_array,
            &ev::EvtchnExpandArray { array_gfn: 0x200 }
        )
        .0,
        ENOSPC,
        "no 129th page (Xen's add_page_to_event_array)"
    );
    let evt = &mut s.hv.domain_mut(d).unwrap().evtchn;
    for p in 1..131_072u32 {
        assert_eq!(evt.alloc(ChanState::Ipi, 0), Ok(p));
    }
    assert_eq!(evt.alloc(ChanState::Ipi, 0), Err(hv_core::Errno::ENOSPC));
    assert_eq!(s.send(d, 131_071), 0);
    // Port 131071 is word 1023 of the last page (gfn 0x100 + 126).
    let w: u32 = s.read(d, ((0x100 + 126) << 12) + 1023 * 4);
    assert_eq!(w >> 29, 0b101, "PENDING|LINKED");
    // Freed ports are reused lowest first.
    assert_eq!(
        s.evtchn(d, ev::EVTCHNOP_close, &ev::EvtchnClose { port: 70_000 })
            .0,
        0
    );
    assert_eq!(
        s.evtchn(d, ev::EVTCHNOP_close, &ev::EvtchnClose { port: 5 })
            .0,
        0
    );
    assert_eq!(s.bind_ipi(d, 0), 5);
    assert_eq!(s.bind_ipi(d, 0), 70_000);
    // EVTCHNOP_reset closes them 4096 per exit, re-executed until none is
    // left (preemptible, as Xen's since XSA-344), then 2-level again.
    s.write(d, ARG, &ev::EvtchnReset { dom: DomId::SELF });
    let mut cpu = MockVcpu::flat64();
    cpu.hypercall(
        x::__HYPERVISOR_event_channel_op as u64,
        [ev::EVTCHNOP_reset as u64, ARG, 0, 0, 0],
    );
    let mut exits = 0;
    loop {
        exits += 1;
        let rip = cpu.rip;
        let open = s.hv.domain(d).unwrap().evtchn.iter().count();
        s.hv.handle_exit(d, 0, &mut cpu, VmExit::Hypercall);
        let now = s.hv.domain(d).unwrap().evtchn.iter().count();
        assert!(open - now <= 4096, "{} closed in one exit", open - now);
        if cpu.rip != rip {
            break;
        }
        assert!(exits < 100);
    }
    assert_eq!(cpu.ret(), 0);
    assert_eq!(exits, 32, "131071 ports, 4096 per exit");
    let dom = s.hv.domain(d).unwrap();
    assert_eq!(dom.evtchn.iter().count(), 0);
    assert!(dom.pinned.is_empty(), "FIFO pages unpinned");
}

#[test]
fn pause_and_unpause() {
    let mut s = Sim::new();
    let d = s.domain(4, 2, false);
    s.hv.vcpu_up(d, 1).unwrap();
    let mut cpu = MockVcpu::flat64();
    s.hv.pause(d).unwrap();
    assert!(!s.hv.vcpu_runnable(d, 0) && !s.hv.vcpu_runnable(d, 1));
    // An exit in flight is still handled, then the vCPU leaves the CPU.
    cpu.gprs.rax = 0x4000_0000;
    assert_eq!(
        s.hv.handle_exit(d, 0, &mut cpu, VmExit::Cpuid),
        ExitAction::Yield
    );
    assert_eq!(cpu.rip, 3);
    s.hv.take_woken();
    s.hv.unpause(d).unwrap();
    assert!(s.hv.vcpu_runnable(d, 0));
    assert_eq!(s.hv.take_woken(), [(d, 0), (d, 1)]);
    assert_eq!(s.hv.unpause(d), Err(hv_core::Errno::EINVAL));
    assert_eq!(s.hv.pause(DomId(99)), Err(hv_core::Errno::ESRCH));
    // A shut-down domain cannot be paused.
    s.hv.shutdown(d, ShutdownReason::Poweroff);
    assert_eq!(s.hv.pause(d), Err(hv_core::Errno::EINVAL));
}
