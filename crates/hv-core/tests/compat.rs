//! 32-bit guests (Xen's compat ABI) on the mock machine: each converted
//! hypercall is made from a vCPU in 32-bit mode with the compat layouts,
//! with garbage in the upper halves of the argument registers (ignored, as
//! Xen truncates them), and the result is checked in guest memory.

use hv_core::arch::VmExit;
use hv_core::domain::VcpuState;
use hv_core::mock::{MockNpt, MockPlatform, MockVcpu};
use hv_core::p2m::P2mKind;
use hv_core::platform::FrameAccess;
use hv_core::{DomId, DomainConfig, ExitAction, Gfn, Hypervisor};
use xen_abi::compat as cm;
use xen_abi::event_channel as ev;
use xen_abi::grant_table as g;
use xen_abi::memory as m;
use xen_abi::xen as x;

const EFAULT: i64 = -14;
const EINVAL: i64 = -22;

const ARG: u64 = 0x10_0000;
const BUF: u64 = 0x20_0000;
/// Upper halves a 32-bit guest may leave in its registers.
const JUNK: u64 = 0xDEAD_BEEF_0000_0000;
/// Bytes a test expects the hypervisor not to touch.
const SENTINEL: u64 = 0x5A5A_5A5A_5A5A_5A5A;

struct Sim {
    hv: Hypervisor<MockPlatform>,
    d: DomId,
}

impl Sim {
    /// A domain with 4 MiB of RAM from 0 and `vcpus` vCPUs.
    fn new(vcpus: u32) -> Self {
        let mut hv = Hypervisor::new(MockPlatform::default());
        let d = hv
            .create_domain(
                DomainConfig {
                    domid: None,
                    name: "t32".into(),
                    privileged: false,
                    vcpus,
                    max_pages: 1024 + 64,
                },
                Box::new(MockNpt::default()),
            )
            .unwrap();
        hv.populate(d, Gfn(0), 1024).unwrap();
        hv.domain_mut(d).unwrap().memory_map = vec![m::E820Entry {
            addr: 0,
            size: 4 << 20,
            r#type: 1,
        }];
        Sim { hv, d }
    }

    fn write<T: zerocopy::IntoBytes + zerocopy::Immutable>(&self, gpa: u64, v: &T) {
        self.hv
            .guest_mem(self.d)
            .unwrap()
            .write_obj(gpa, v)
            .unwrap();
    }

    fn read<T: zerocopy::FromBytes + zerocopy::IntoBytes>(&self, gpa: u64) -> T {
        self.hv.guest_mem(self.d).unwrap().read_obj(gpa).unwrap()
    }

    /// Hypercall `nr` from vCPU 0 in 32-bit mode (EBX, ECX, EDX, ESI, EDI),
    /// upper register halves full of junk. Returns EAX sign-extended.
    /// `XENMEM_add_to_physmap` of grant frame `idx` at `gpfn`, from a
    /// 32-bit caller (the 4-byte `idx` and `gpfn`): the return value.
    fn add_grant_frame32(&mut self, idx: u32, gpfn: u32) -> i64 {
        self.write(
            ARG,
            &cm::CompatAddToPhysmap {
                domid: DomId::SELF,
                size: 0,
                space: m::XENMAPSPACE_grant_table,
                idx,
                gpfn,
            },
        );
        self.call32(
            x::__HYPERVISOR_memory_op,
            [m::XENMEM_add_to_physmap as u64, ARG, 0, 0, 0],
        )
        .0
    }

    fn call32(&mut self, nr: u32, args: [u64; 5]) -> (i64, ExitAction) {
        let mut cpu = MockVcpu::flat64();
        self.call32_on(&mut cpu, nr, args)
    }

    fn call32_on(&mut self, cpu: &mut MockVcpu, nr: u32, args: [u64; 5]) -> (i64, ExitAction) {
        cpu.long = false;
        cpu.gprs.rax = nr as u64 | JUNK;
        let [a, b, c, d, e] = args.map(|v| v | JUNK);
        [
            cpu.gprs.rbx,
            cpu.gprs.rcx,
            cpu.gprs.rdx,
            cpu.gprs.rsi,
            cpu.gprs.rdi,
        ] = [a, b, c, d, e];
        let act = self.hv.handle_exit(self.d, 0, cpu, VmExit::Hypercall);
        assert_eq!(cpu.gprs.rax >> 32, 0, "EAX only");
        (cpu.gprs.rax as u32 as i32 as i64, act)
    }

    fn si(&self) -> hv_core::Hfn {
        self.hv.domain(self.d).unwrap().shared_info
    }

    /// Sets the callback vector from 32-bit mode: latches the 32-bit
    /// shared-info layout, as on Xen.
    fn latch32(&mut self) {
        self.write(
            ARG,
            &xen_abi::hvm::XenHvmParam {
                domid: DomId::SELF,
                pad: 0,
                index: xen_abi::hvm::HVM_PARAM_CALLBACK_IRQ,
                value: (2 << 56) | 0xF3,
            },
        );
        let r = self.call32(
            x::__HYPERVISOR_hvm_op,
            [xen_abi::hvm::HVMOP_set_param as u64, ARG, 0, 0, 0],
        );
        assert_eq!(r.0, 0);
        assert!(self.hv.domain(self.d).unwrap().has_32bit_shinfo);
    }

    fn bind_ipi(&mut self) -> u32 {
        self.write(ARG, &ev::EvtchnBindIpi { vcpu: 0, port: 0 });
        let r = self.call32(
            x::__HYPERVISOR_event_channel_op,
            [ev::EVTCHNOP_bind_ipi as u64, ARG, 0, 0, 0],
        );
        assert_eq!(r.0, 0);
        self.read::<ev::EvtchnBindIpi>(ARG).port
    }

    fn send(&mut self, port: u32) -> i64 {
        self.write(ARG, &ev::EvtchnSend { port });
        self.call32(
            x::__HYPERVISOR_event_channel_op,
            [ev::EVTCHNOP_send as u64, ARG, 0, 0, 0],
        )
        .0
    }
}

#[test]
fn memory_map_in_the_32bit_layout() {
    let mut s = Sim::new(1);
    s.write(
        ARG,
        &cm::CompatMemoryMap {
            nr_entries: 8,
            buffer: BUF as u32,
        },
    );
    // Where a 64-bit reader would look for the buffer address.
    s.write(ARG + 8, &SENTINEL);
    let r = s.call32(
        x::__HYPERVISOR_memory_op,
        [m::XENMEM_memory_map as u64, ARG, 0, 0, 0],
    );
    assert_eq!(r.0, 0);
    let a: cm::CompatMemoryMap = s.read(ARG);
    assert_eq!(({ a.nr_entries }, { a.buffer }), (1, BUF as u32));
    assert_eq!(s.read::<u64>(ARG + 8), SENTINEL);
    let e: m::E820Entry = s.read(BUF);
    assert_eq!((e.addr, e.size, e.r#type), (0, 4 << 20, 1));
}

#[test]
fn add_to_physmap_of_shared_info_from_32bit_mode() {
    let mut s = Sim::new(1);
    s.write(
        ARG,
        &cm::CompatAddToPhysmap {
            domid: DomId::SELF,
            size: 0,
            space: m::XENMAPSPACE_shared_info,
            idx: 0,
            gpfn: 0x300,
        },
    );
    // A 64-bit reader would take idx from bytes 8..16 (non-zero: -EINVAL).
    s.write(ARG + 16, &SENTINEL);
    let r = s.call32(
        x::__HYPERVISOR_memory_op,
        [m::XENMEM_add_to_physmap as u64, ARG, 0, 0, 0],
    );
    assert_eq!(r.0, 0);
    let dom = s.hv.domain(s.d).unwrap();
    let e = dom.p2m.get(Gfn(0x300)).unwrap();
    assert_eq!((e.kind, e.hfn), (P2mKind::SharedInfo, dom.shared_info));
    // A grant frame by index, gpfn in the 4-byte field.
    assert_eq!(s.add_grant_frame32(0, 0x301), 0);
    let e = s.hv.domain(s.d).unwrap().p2m.get(Gfn(0x301)).unwrap();
    assert_ne!(e.kind, P2mKind::Ram);
}

#[test]
fn reservation_extents_are_4_byte_frame_numbers() {
    let mut s = Sim::new(1);
    let tot = s.hv.domain(s.d).unwrap().tot_pages;
    // Two extents: frames 0x310 and 0x311, 4 bytes each, then 0x312.
    s.write(BUF, &[0x310u32, 0x311, 0x312]);
    s.write(
        ARG,
        &cm::CompatMemoryReservation {
            extent_start: BUF as u32,
            nr_extents: 2,
            extent_order: 0,
            mem_flags: 0,
            domid: DomId::SELF,
            pad: 0,
        },
    );
    let r = s.call32(
        x::__HYPERVISOR_memory_op,
        [m::XENMEM_decrease_reservation as u64, ARG, 0, 0, 0],
    );
    assert_eq!(r.0, 2);
    let dom = s.hv.domain(s.d).unwrap();
    assert!(dom.p2m.get(Gfn(0x310)).is_none());
    assert!(dom.p2m.get(Gfn(0x311)).is_none());
    assert!(dom.p2m.get(Gfn(0x312)).is_some());
    assert_eq!(dom.tot_pages, tot - 2);
    // And back.
    let r = s.call32(
        x::__HYPERVISOR_memory_op,
        [m::XENMEM_populate_physmap as u64, ARG, 0, 0, 0],
    );
    assert_eq!(r.0, 2);
    assert!(s.hv.domain(s.d).unwrap().p2m.get(Gfn(0x311)).is_some());
    assert_eq!(s.hv.domain(s.d).unwrap().tot_pages, tot);
    // A count whose continuation would not fit the 32-bit command: nothing
    // done (Xen returns the start extent, 0).
    s.write(
        ARG,
        &cm::CompatMemoryReservation {
            extent_start: BUF as u32,
            nr_extents: (u32::MAX >> 6) + 1,
            extent_order: 0,
            mem_flags: 0,
            domid: DomId::SELF,
            pad: 0,
        },
    );
    let r = s.call32(
        x::__HYPERVISOR_memory_op,
        [m::XENMEM_decrease_reservation as u64, ARG, 0, 0, 0],
    );
    assert_eq!(r.0, 0);
    assert!(s.hv.domain(s.d).unwrap().p2m.get(Gfn(0x310)).is_some());
}

#[test]
fn grant_setup_table_lists_4_byte_frames() {
    let mut s = Sim::new(1);
    // Place grant frames 0 and 1 at 0x301 and 0x302.
    for (idx, gpfn) in [(0, 0x301), (1, 0x302)] {
        assert_eq!(s.add_grant_frame32(idx, gpfn), 0);
    }
    let setup = |nr_frames| cm::CompatGnttabSetupTable {
        dom: DomId::SELF,
        pad0: 0,
        nr_frames,
        status: 99,
        pad1: 0,
        frame_list: BUF as u32,
    };
    s.write(BUF, &[SENTINEL; 2]);
    s.write(ARG, &setup(2));
    let r = s.call32(
        x::__HYPERVISOR_grant_table_op,
        [g::GNTTABOP_setup_table as u64, ARG, 1, 0, 0],
    );
    assert_eq!(r.0, 0);
    let a: cm::CompatGnttabSetupTable = s.read(ARG);
    assert_eq!({ a.status }, g::GNTST_okay);
    assert_eq!(s.read::<[u32; 2]>(BUF), [0x301, 0x302]);
    // Exactly two 4-byte entries written.
    assert_eq!(s.read::<u64>(BUF + 8), SENTINEL);
    // A third frame, not placed: its !0 does not fit 4 bytes, as on Xen.
    s.write(ARG, &setup(3));
    let r = s.call32(
        x::__HYPERVISOR_grant_table_op,
        [g::GNTTABOP_setup_table as u64, ARG, 1, 0, 0],
    );
    assert_eq!(r.0, 0);
    let a: cm::CompatGnttabSetupTable = s.read(ARG);
    assert_eq!({ a.status }, g::GNTST_address_too_big);
    // query_size has one layout for both.
    s.write(
        ARG,
        &g::GnttabQuerySize {
            dom: DomId::SELF,
            ..Default::default()
        },
    );
    let r = s.call32(
        x::__HYPERVISOR_grant_table_op,
        [g::GNTTABOP_query_size as u64, ARG, 1, 0, 0],
    );
    assert_eq!(r.0, 0);
    let q: g::GnttabQuerySize = s.read(ARG);
    assert_eq!((q.nr_frames, q.status), (3, g::GNTST_okay));
}

#[test]
fn grant_copy_in_the_32bit_layout() {
    let mut s = Sim::new(1);
    s.write(0x30_000, b"compat copy ok!!");
    let copy = cm::CompatGnttabCopy {
        source: cm::CompatGnttabCopyPtr {
            u: 0x30,
            domid: DomId::SELF,
            offset: 0,
        },
        dest: cm::CompatGnttabCopyPtr {
            u: 0x31,
            domid: DomId::SELF,
            offset: 8,
        },
        len: 16,
        flags: 0,
        status: 99,
        pad: 0,
    };
    // Two of them back to back: 24 bytes apart.
    s.write(ARG, &[copy, copy]);
    let r = s.call32(
        x::__HYPERVISOR_grant_table_op,
        [g::GNTTABOP_copy as u64, ARG, 2, 0, 0],
    );
    assert_eq!(r.0, 0);
    let done: [cm::CompatGnttabCopy; 2] = s.read(ARG);
    assert_eq!(
        ({ done[0].status }, { done[1].status }),
        (g::GNTST_okay, g::GNTST_okay)
    );
    assert_eq!(&s.read::<[u8; 16]>(0x31_008), b"compat copy ok!!");
}

#[test]
fn sched_poll_reads_the_16_byte_layout() {
    let mut s = Sim::new(1);
    // An unbound port: -EINVAL once the port array is found at its 4-byte
    // handle (a 64-bit reader would see a huge address: -EFAULT).
    s.write(BUF, &77u32);
    s.write(
        ARG,
        &cm::CompatSchedPoll {
            ports: BUF as u32,
            nr_ports: 1,
            timeout: 0,
        },
    );
    let r = s.call32(
        x::__HYPERVISOR_sched_op,
        [xen_abi::sched::SCHEDOP_poll as u64, ARG, 0, 0, 0],
    );
    assert_eq!(r.0, EINVAL);
    // A real port, not pending, deadline in the future: the vCPU polls.
    let port = s.bind_ipi();
    s.write(BUF, &port);
    s.write(
        ARG,
        &cm::CompatSchedPoll {
            ports: BUF as u32,
            nr_ports: 1,
            timeout: s.hv.now() + 1_000_000_000,
        },
    );
    let r = s.call32(
        x::__HYPERVISOR_sched_op,
        [xen_abi::sched::SCHEDOP_poll as u64, ARG, 0, 0, 0],
    );
    assert_eq!(r, (0, ExitAction::Block));
    let vc = &s.hv.domain(s.d).unwrap().vcpus[0];
    assert_eq!(vc.state, VcpuState::Polling);
    assert_eq!(vc.poll_ports, [port]);
}

#[test]
fn singleshot_timer_argument_is_12_bytes() {
    let mut s = Sim::new(1);
    // The last 12 bytes of RAM: a 16-byte read would run off its end.
    let at = (4 << 20) - 12;
    let deadline = s.hv.now() + 5_000_000;
    s.write(
        at,
        &cm::CompatVcpuSetSingleshotTimer {
            timeout_abs_ns: deadline,
            flags: xen_abi::vcpu::VCPU_SSHOTTMR_future,
        },
    );
    let r = s.call32(
        x::__HYPERVISOR_vcpu_op,
        [
            xen_abi::vcpu::VCPUOP_set_singleshot_timer as u64,
            0,
            at,
            0,
            0,
        ],
    );
    assert_eq!(r.0, 0);
    assert_eq!(
        s.hv.domain(s.d).unwrap().vcpus[0].singleshot,
        Some(deadline)
    );
    // A struct across the end of RAM still faults.
    let r = s.call32(
        x::__HYPERVISOR_vcpu_op,
        [
            xen_abi::vcpu::VCPUOP_set_singleshot_timer as u64,
            0,
            at + 4,
            0,
            0,
        ],
    );
    assert_eq!(r.0, EFAULT);
}

#[test]
fn runstate_in_the_32bit_layout() {
    let mut s = Sim::new(1);
    s.latch32();
    // get_runstate_info: 44 bytes, state_entry_time at 4.
    s.write(ARG + 40, &SENTINEL);
    let r = s.call32(
        x::__HYPERVISOR_vcpu_op,
        [xen_abi::vcpu::VCPUOP_get_runstate_info as u64, 0, ARG, 0, 0],
    );
    assert_eq!(r.0, 0);
    let info: cm::CompatVcpuRunstateInfo = s.read(ARG);
    let native = s.hv.domain(s.d).unwrap().vcpus[0].runstate;
    assert_eq!({ info.state }, native.state);
    assert_eq!({ info.state_entry_time }, native.state_entry_time);
    assert_eq!(s.read::<u32>(ARG + 44), (SENTINEL >> 32) as u32);
    // A registered area: the 4-byte handle (the union's upper half is
    // ignored) and the area written in the 32-bit layout.
    s.write(ARG, &(BUF | 0xFFFF_FFFF_0000_0000));
    s.write(BUF + 40, &SENTINEL);
    let r = s.call32(
        x::__HYPERVISOR_vcpu_op,
        [
            xen_abi::vcpu::VCPUOP_register_runstate_memory_area as u64,
            0,
            ARG,
            0,
            0,
        ],
    );
    assert_eq!(r.0, 0);
    assert_eq!(s.hv.domain(s.d).unwrap().vcpus[0].runstate_area, Some(BUF));
    s.hv.platform
        .now
        .fetch_add(1000, std::sync::atomic::Ordering::SeqCst);
    s.hv.set_runstate(s.d, 0, xen_abi::vcpu::RUNSTATE_blocked);
    let area: cm::CompatVcpuRunstateInfo = s.read(BUF);
    let native = s.hv.domain(s.d).unwrap().vcpus[0].runstate;
    assert_eq!({ area.state }, xen_abi::vcpu::RUNSTATE_blocked);
    assert_eq!({ area.state_entry_time }, native.state_entry_time);
    assert_eq!({ area.time }, native.time);
    assert_eq!(s.read::<u32>(BUF + 44), (SENTINEL >> 32) as u32);
}

#[test]
fn events_use_32bit_words_once_latched() {
    let mut s = Sim::new(1);
    s.latch32();
    // Wallclock rewritten at the 32-bit offsets (wc_version even at 2304).
    assert_eq!(s.hv.platform.load_u32(s.si(), 2304), 2);
    // Ports 1..=33: port 33 is bit 1 of 32-bit word 1.
    let mut port = 0;
    while port < 33 {
        port = s.bind_ipi();
    }
    assert_eq!(port, 33);
    assert_eq!(s.send(port), 0);
    let si = s.si();
    assert_eq!(s.hv.platform.load_u32(si, 2048 + 4), 1 << 1);
    // vcpu_info[0]: upcall pending, selector bit 1 in the 4 bytes at 4.
    let mut vi = [0u8; 16];
    s.hv.platform.read(si, 0, &mut vi);
    assert_eq!(vi[0], 1);
    assert_eq!(u32::from_le_bytes(vi[4..8].try_into().unwrap()), 1 << 1);
    assert_eq!(u64::from_le_bytes(vi[8..16].try_into().unwrap()), 0);
    // Masked at the 32-bit mask array (2176): pending, no upcall.
    s.hv.platform.write(si, 0, &[0u8; 8]);
    s.hv.platform.write(si, 2048 + 4, &0u32.to_le_bytes());
    s.hv.platform.fetch_or_u32(si, 2176 + 4, 1 << 1);
    assert_eq!(s.send(port), 0);
    assert_eq!(s.hv.platform.load_u32(si, 2048 + 4), 1 << 1);
    s.hv.platform.read(si, 0, &mut vi);
    assert_eq!(vi[0], 0);
    // Unmask: delivered.
    s.write(ARG, &ev::EvtchnUnmask { port });
    let r = s.call32(
        x::__HYPERVISOR_event_channel_op,
        [ev::EVTCHNOP_unmask as u64, ARG, 0, 0, 0],
    );
    assert_eq!(r.0, 0);
    s.hv.platform.read(si, 0, &mut vi);
    assert_eq!(vi[0], 1);
    assert_eq!(s.hv.platform.load_u32(si, 2176 + 4), 0);
}

#[test]
fn a_64bit_latch_keeps_the_native_layout() {
    let mut s = Sim::new(1);
    s.write(
        ARG,
        &xen_abi::hvm::XenHvmParam {
            domid: DomId::SELF,
            pad: 0,
            index: xen_abi::hvm::HVM_PARAM_CALLBACK_IRQ,
            value: (2 << 56) | 0xF3,
        },
    );
    let mut cpu = MockVcpu::flat64();
    cpu.hypercall(
        x::__HYPERVISOR_hvm_op as u64,
        [xen_abi::hvm::HVMOP_set_param as u64, ARG, 0, 0, 0],
    );
    s.hv.handle_exit(s.d, 0, &mut cpu, VmExit::Hypercall);
    assert_eq!(cpu.ret(), 0);
    assert!(!s.hv.domain(s.d).unwrap().has_32bit_shinfo);
    assert_eq!(s.hv.platform.load_u32(s.si(), 3072), 2);
}

#[test]
fn platform_parameters_is_4_bytes() {
    let mut s = Sim::new(1);
    s.write(ARG, &SENTINEL);
    let r = s.call32(
        x::__HYPERVISOR_xen_version,
        [
            xen_abi::version::XENVER_platform_parameters as u64,
            ARG,
            0,
            0,
            0,
        ],
    );
    assert_eq!(r.0, 0);
    // virt_start 0 (not PV), upper 4 bytes untouched.
    assert_eq!(s.read::<u64>(ARG), SENTINEL & 0xFFFF_FFFF_0000_0000);
}

#[test]
fn console_write_from_32bit_mode() {
    let mut s = Sim::new(1);
    s.write(BUF, b"hello from i386\n");
    let r = s.call32(
        x::__HYPERVISOR_console_io,
        [x::CONSOLEIO_write as u64, 16, BUF, 0, 0],
    );
    assert_eq!(r.0, 0);
    assert_eq!(s.hv.platform.console_of(s.d), ["hello from i386"]);
}

#[test]
fn hostile_32bit_handles_fault_cleanly() {
    let mut s = Sim::new(1);
    // Handles into the hole above RAM (and at the top of the 32-bit space).
    for buffer in [8 << 20, 0xFFFF_FFF0u32] {
        s.write(
            ARG,
            &cm::CompatMemoryMap {
                nr_entries: 4,
                buffer,
            },
        );
        let r = s.call32(
            x::__HYPERVISOR_memory_op,
            [m::XENMEM_memory_map as u64, ARG, 0, 0, 0],
        );
        assert_eq!(r.0, EFAULT);
    }
    // The argument struct itself in the hole.
    let r = s.call32(
        x::__HYPERVISOR_memory_op,
        [m::XENMEM_add_to_physmap as u64, 0xFFFF_FFF8, 0, 0, 0],
    );
    assert_eq!(r.0, EFAULT);
    // A frame list in the hole: the status says so, the call succeeds.
    assert_eq!(s.add_grant_frame32(0, 0x301), 0);
    s.write(
        ARG,
        &cm::CompatGnttabSetupTable {
            dom: DomId::SELF,
            pad0: 0,
            nr_frames: 1,
            status: 99,
            pad1: 0,
            frame_list: 8 << 20,
        },
    );
    let r = s.call32(
        x::__HYPERVISOR_grant_table_op,
        [g::GNTTABOP_setup_table as u64, ARG, 1, 0, 0],
    );
    assert_eq!(r.0, 0);
    let a: cm::CompatGnttabSetupTable = s.read(ARG);
    assert_eq!({ a.status }, g::GNTST_bad_virt_addr);
    // Reservation extents in the hole: nothing done, nothing lost.
    let tot = s.hv.domain(s.d).unwrap().tot_pages;
    s.write(
        ARG,
        &cm::CompatMemoryReservation {
            extent_start: 8 << 20,
            nr_extents: 3,
            extent_order: 0,
            mem_flags: 0,
            domid: DomId::SELF,
            pad: 0,
        },
    );
    let r = s.call32(
        x::__HYPERVISOR_memory_op,
        [m::XENMEM_decrease_reservation as u64, ARG, 0, 0, 0],
    );
    assert_eq!(r.0, 0);
    assert_eq!(s.hv.domain(s.d).unwrap().tot_pages, tot);
}

#[test]
fn grant_status_frames_through_a_4_byte_handle() {
    let mut s = Sim::new(1);
    s.write(ARG, &g::GnttabSetVersion { version: 2 });
    let r = s.call32(
        x::__HYPERVISOR_grant_table_op,
        [g::GNTTABOP_set_version as u64, ARG, 1, 0, 0],
    );
    assert_eq!(r.0, 0);
    // Status frame 0 placed at 0x303.
    assert_eq!(
        s.add_grant_frame32(m::XENMAPIDX_grant_table_status as u32, 0x303),
        0
    );
    s.write(BUF, &[SENTINEL; 2]);
    s.write(
        ARG,
        &cm::CompatGnttabGetStatusFrames {
            nr_frames: 1,
            dom: DomId::SELF,
            status: 99,
            frame_list: BUF as u32,
        },
    );
    // Where a 64-bit reader would find its handle.
    s.write(ARG + 12, &0xFFFF_FFFFu32);
    let r = s.call32(
        x::__HYPERVISOR_grant_table_op,
        [g::GNTTABOP_get_status_frames as u64, ARG, 1, 0, 0],
    );
    assert_eq!(r.0, 0);
    let a: cm::CompatGnttabGetStatusFrames = s.read(ARG);
    assert_eq!({ a.status }, g::GNTST_okay);
    // The list stays uint64_t for 32-bit callers.
    assert_eq!(s.read::<[u64; 2]>(BUF), [0x303, SENTINEL]);
}

#[test]
fn register_vcpu_info_marks_the_4_byte_selector() {
    let mut s = Sim::new(1);
    s.latch32();
    // A pending event on port 1 before the move.
    let port = s.bind_ipi();
    assert_eq!(s.send(port), 0);
    s.write(BUF, &[SENTINEL; 8]);
    s.write(
        ARG,
        &xen_abi::vcpu::VcpuRegisterVcpuInfo {
            mfn: BUF >> 12,
            offset: 64,
            rsvd: 0,
        },
    );
    let r = s.call32(
        x::__HYPERVISOR_vcpu_op,
        [
            xen_abi::vcpu::VCPUOP_register_vcpu_info as u64,
            0,
            ARG,
            0,
            0,
        ],
    );
    assert_eq!(r.0, 0);
    let vi: [u8; 16] = s.read(BUF + 64);
    assert_eq!(vi[0], 1, "upcall pending");
    assert_eq!(u32::from_le_bytes(vi[4..8].try_into().unwrap()), u32::MAX);
    // The 32-bit layout's arch.cr2/pad are not a selector: copied, not set.
    assert_eq!(u64::from_le_bytes(vi[8..16].try_into().unwrap()), 0);
    // Later events select in the new place, by 32-bit words.
    s.write(BUF + 64 + 4, &0u32);
    let si = s.si();
    s.hv.platform.write(si, 2048, &0u32.to_le_bytes());
    assert_eq!(s.send(port), 0);
    assert_eq!(s.read::<u32>(BUF + 64 + 4), 1);
}

#[test]
fn the_hypercall_page_latches_the_layout_too() {
    let mut s = Sim::new(1);
    // Installed from 32-bit mode: 32-bit shared state (Xen's
    // hvm_init_hypercall_page), wallclock at 2304.
    let mut cpu = MockVcpu::flat64();
    cpu.long = false;
    let wr = |s: &mut Sim, cpu: &mut MockVcpu| {
        s.hv.handle_exit(
            s.d,
            0,
            cpu,
            VmExit::MsrWrite {
                msr: 0x4000_0000,
                value: 0x7000,
            },
        )
    };
    assert_eq!(wr(&mut s, &mut cpu), ExitAction::Resume);
    assert!(s.hv.domain(s.d).unwrap().has_32bit_shinfo);
    assert_eq!(s.hv.platform.load_u32(s.si(), 2304), 2);
    // Again from 64-bit mode: back to the native layout.
    cpu.long = true;
    assert_eq!(wr(&mut s, &mut cpu), ExitAction::Resume);
    assert!(!s.hv.domain(s.d).unwrap().has_32bit_shinfo);
}

#[test]
fn runstate_registration_reads_4_bytes_and_answers_in_the_callers_layout() {
    let mut s = Sim::new(1);
    // Not latched: the domain's shared state is still 64-bit, but the
    // first copy is in the 32-bit caller's layout (as Xen's compat_vcpu_op).
    let at = (4 << 20) - 4; // the handle in the last 4 bytes of RAM
    s.write(at, &(BUF as u32));
    s.write(BUF + 40, &SENTINEL);
    let r = s.call32(
        x::__HYPERVISOR_vcpu_op,
        [
            xen_abi::vcpu::VCPUOP_register_runstate_memory_area as u64,
            0,
            at,
            0,
            0,
        ],
    );
    assert_eq!(r.0, 0);
    let native = s.hv.domain(s.d).unwrap().vcpus[0].runstate;
    let area: cm::CompatVcpuRunstateInfo = s.read(BUF);
    assert_eq!({ area.state_entry_time }, native.state_entry_time);
    assert_eq!(s.read::<u32>(BUF + 44), (SENTINEL >> 32) as u32);
}
