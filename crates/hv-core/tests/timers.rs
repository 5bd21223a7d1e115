//! Time and timers on the mock machine: pvclock contents, singleshot and
//! periodic timers delivering VIRQ_TIMER, poll timeouts, hostile values.

use std::sync::atomic::Ordering::SeqCst;

use hv_core::arch::VmExit;
use hv_core::mock::{MockNpt, MockPlatform, MockVcpu};
use hv_core::platform::FrameAccess;
use hv_core::{DomId, DomainConfig, Gfn, Hypervisor};
use xen_abi::event_channel as ev;
use xen_abi::vcpu as vc;
use xen_abi::xen as x;

const ARG: u64 = 0x10_0000;

fn setup(vcpus: u32) -> (Hypervisor<MockPlatform>, DomId) {
    let mut hv = Hypervisor::new(MockPlatform::default());
    let d = hv
        .create_domain(
            DomainConfig {
                domid: None,
                name: "t".into(),
                privileged: false,
                vcpus,
                max_pages: 2048,
            },
            Box::new(MockNpt::default()),
        )
        .unwrap();
    hv.populate(d, Gfn(0), 1024).unwrap();
    (hv, d)
}

fn call(hv: &mut Hypervisor<MockPlatform>, d: DomId, v: u32, nr: u32, args: [u64; 5]) -> i64 {
    let mut cpu = MockVcpu::flat64();
    cpu.hypercall(nr as u64, args);
    hv.handle_exit(d, v, &mut cpu, VmExit::Hypercall);
    cpu.ret()
}

fn bind_timer(hv: &mut Hypervisor<MockPlatform>, d: DomId, v: u32) -> u32 {
    let mem = hv.guest_mem(d).unwrap();
    mem.write_obj(
        ARG,
        &ev::EvtchnBindVirq {
            virq: x::VIRQ_TIMER,
            vcpu: v,
            port: 0,
        },
    )
    .unwrap();
    assert_eq!(
        call(
            hv,
            d,
            v,
            x::__HYPERVISOR_event_channel_op,
            [ev::EVTCHNOP_bind_virq as u64, ARG, 0, 0, 0]
        ),
        0
    );
    hv.guest_mem(d)
        .unwrap()
        .read_obj::<ev::EvtchnBindVirq>(ARG)
        .unwrap()
        .port
}

fn pending(hv: &Hypervisor<MockPlatform>, d: DomId, port: u32) -> bool {
    let si = hv.domain(d).unwrap().shared_info;
    hv.platform.load_u64(si, 2048 + (port as usize / 64) * 8) & (1 << (port % 64)) != 0
}

fn clear(hv: &Hypervisor<MockPlatform>, d: DomId, port: u32) {
    let si = hv.domain(d).unwrap().shared_info;
    hv.platform
        .fetch_and_u64(si, 2048 + (port as usize / 64) * 8, !(1 << (port % 64)));
}

fn set_now(hv: &Hypervisor<MockPlatform>, t: u64) {
    hv.platform.now.store(t, SeqCst);
}

fn singleshot(hv: &mut Hypervisor<MockPlatform>, d: DomId, v: u32, t: u64, flags: u32) -> i64 {
    hv.guest_mem(d)
        .unwrap()
        .write_obj(
            ARG,
            &vc::VcpuSetSingleshotTimer {
                timeout_abs_ns: t,
                flags,
                pad: 0,
            },
        )
        .unwrap();
    call(
        hv,
        d,
        v,
        x::__HYPERVISOR_vcpu_op,
        [vc::VCPUOP_set_singleshot_timer as u64, v as u64, ARG, 0, 0],
    )
}

#[test]
fn pvclock_is_published_for_every_vcpu() {
    let (hv, d) = setup(3);
    let dom = hv.domain(d).unwrap();
    for v in 0..3 {
        let (h, o) = dom.vcpu_info[v].unwrap();
        let mut b = [0u8; 32];
        hv.platform.read(h, o + 32, &mut b);
        let t: x::VcpuTimeInfo = zerocopy::FromBytes::read_from_bytes(&b[..]).unwrap();
        assert_eq!(t.version & 1, 0, "even version: not mid-update");
        assert_ne!(t.version, 0);
        assert_eq!(
            t.flags & x::XEN_PVCLOCK_TSC_STABLE_BIT,
            x::XEN_PVCLOCK_TSC_STABLE_BIT
        );
        // The mock TSC counts nanoseconds: the guest's formula gives now.
        let tsc = hv.platform.now.load(SeqCst);
        assert_eq!(
            t.system_time + t.scale_delta(tsc - t.tsc_timestamp),
            hv.now()
        );
    }
    // Wallclock published with an even version.
    let si = dom.shared_info;
    assert_eq!(hv.platform.load_u32(si, 3072) & 1, 0);
}

#[test]
fn singleshot_timers_fire_in_order_with_virq() {
    let (mut hv, d) = setup(2);
    let p0 = bind_timer(&mut hv, d, 0);
    let p1 = bind_timer(&mut hv, d, 1);
    let t0 = hv.now();
    assert_eq!(singleshot(&mut hv, d, 0, t0 + 2_000_000, 0), 0);
    assert_eq!(singleshot(&mut hv, d, 1, t0 + 1_000_000, 0), 0);
    assert_eq!(hv.tick(t0 + 999_999), Some(t0 + 1_000_000));
    assert!(!pending(&hv, d, p1));
    set_now(&hv, t0 + 1_000_000);
    assert_eq!(hv.tick(t0 + 1_000_000), Some(t0 + 2_000_000));
    assert!(pending(&hv, d, p1) && !pending(&hv, d, p0), "vCPU 1 first");
    hv.tick(t0 + 2_000_500);
    assert!(pending(&hv, d, p0));
    assert_eq!(hv.tick(u64::MAX), None, "singleshot: nothing left");
}

#[test]
fn singleshot_restarts_stop_and_hostile_values() {
    let (mut hv, d) = setup(2);
    let p = bind_timer(&mut hv, d, 0);
    let t0 = hv.now();
    // Reprogramming replaces the old deadline; the stale heap entry is
    // ignored when it surfaces.
    assert_eq!(singleshot(&mut hv, d, 0, t0 + 1000, 0), 0);
    assert_eq!(singleshot(&mut hv, d, 0, t0 + 5000, 0), 0);
    hv.tick(t0 + 1000);
    assert!(!pending(&hv, d, p));
    hv.tick(t0 + 5000);
    assert!(pending(&hv, d, p));
    clear(&hv, d, p);
    // Stop.
    assert_eq!(singleshot(&mut hv, d, 0, t0 + 9000, 0), 0);
    assert_eq!(
        call(
            &mut hv,
            d,
            0,
            x::__HYPERVISOR_vcpu_op,
            [vc::VCPUOP_stop_singleshot_timer as u64, 0, 0, 0, 0]
        ),
        0
    );
    hv.tick(t0 + 10_000);
    assert!(!pending(&hv, d, p));
    // In the past: fires now, with or without VCPU_SSHOTTMR_future (Xen
    // ignores the flag since 4.18; Debian's 4.17 too).
    for flags in [vc::VCPU_SSHOTTMR_future, 0] {
        assert_eq!(singleshot(&mut hv, d, 0, t0 - 1, flags), 0);
        hv.tick(t0);
        assert!(pending(&hv, d, p));
        clear(&hv, d, p);
    }
    // Far future: accepted, never fires in any reasonable time.
    assert_eq!(singleshot(&mut hv, d, 0, u64::MAX, 0), 0);
    hv.tick(t0 + 1_000_000_000_000);
    assert!(!pending(&hv, d, p));
    // Another vCPU's singleshot timer and bad pointers.
    assert_eq!(singleshot(&mut hv, d, 0, t0, 0), 0);
    assert_eq!(
        call(
            &mut hv,
            d,
            1,
            x::__HYPERVISOR_vcpu_op,
            [vc::VCPUOP_set_singleshot_timer as u64, 0, ARG, 0, 0]
        ),
        -22
    );
    assert_eq!(
        call(
            &mut hv,
            d,
            0,
            x::__HYPERVISOR_vcpu_op,
            [vc::VCPUOP_set_singleshot_timer as u64, 0, 0x7000_0000, 0, 0]
        ),
        -14
    );
    assert_eq!(
        call(
            &mut hv,
            d,
            0,
            x::__HYPERVISOR_vcpu_op,
            [vc::VCPUOP_set_singleshot_timer as u64, 7, ARG, 0, 0]
        ),
        -2
    );
}

#[test]
fn periodic_timer_and_limits() {
    let (mut hv, d) = setup(1);
    let p = bind_timer(&mut hv, d, 0);
    let t0 = hv.now();
    let set = |hv: &mut Hypervisor<MockPlatform>, period: u64| {
        hv.guest_mem(d)
            .unwrap()
            .write_obj(ARG, &vc::VcpuSetPeriodicTimer { period_ns: period })
            .unwrap();
        call(
            hv,
            d,
            0,
            x::__HYPERVISOR_vcpu_op,
            [vc::VCPUOP_set_periodic_timer as u64, 0, ARG, 0, 0],
        )
    };
    assert_eq!(set(&mut hv, 1000), -22, "below 1 ms");
    assert_eq!(set(&mut hv, u64::MAX), -22);
    assert_eq!(set(&mut hv, 1_000_000), 0);
    let mut fired = 0;
    for k in 1..=5u64 {
        hv.tick(t0 + k * 1_000_000);
        if pending(&hv, d, p) {
            fired += 1;
            clear(&hv, d, p);
        }
    }
    assert_eq!(fired, 5);
    // Missed periods are not replayed in a burst.
    hv.tick(t0 + 100_000_000);
    clear(&hv, d, p);
    hv.tick(t0 + 100_000_001);
    assert!(!pending(&hv, d, p));
    assert_eq!(
        call(
            &mut hv,
            d,
            0,
            x::__HYPERVISOR_vcpu_op,
            [vc::VCPUOP_stop_periodic_timer as u64, 0, 0, 0, 0]
        ),
        0
    );
    hv.tick(t0 + 200_000_000);
    assert!(!pending(&hv, d, p));
}

#[test]
fn set_timer_op_both_conventions() {
    let (mut hv, d) = setup(1);
    let p = bind_timer(&mut hv, d, 0);
    let t0 = hv.now();
    assert_eq!(
        call(
            &mut hv,
            d,
            0,
            x::__HYPERVISOR_set_timer_op,
            [t0 + 10, 0, 0, 0, 0]
        ),
        0
    );
    hv.tick(t0 + 10);
    assert!(pending(&hv, d, p));
    clear(&hv, d, p);
    // 32-bit: EBX low, ECX high.
    let deadline = (1u64 << 32) + 7;
    let mut cpu = MockVcpu::flat64();
    cpu.long = false;
    cpu.gprs.rax = x::__HYPERVISOR_set_timer_op as u64;
    cpu.gprs.rbx = 7;
    cpu.gprs.rcx = 1;
    hv.handle_exit(d, 0, &mut cpu, VmExit::Hypercall);
    assert_eq!(cpu.gprs.rax, 0);
    assert_eq!(hv.domain(d).unwrap().vcpus[0].singleshot, Some(deadline));
    // 0 stops it.
    assert_eq!(
        call(&mut hv, d, 0, x::__HYPERVISOR_set_timer_op, [0, 0, 0, 0, 0]),
        0
    );
    assert_eq!(hv.domain(d).unwrap().vcpus[0].singleshot, None);
}

#[test]
fn timer_wakes_a_blocked_vcpu() {
    let (mut hv, d) = setup(1);
    hv.guest_mem(d)
        .unwrap()
        .write_obj(
            ARG,
            &xen_abi::hvm::XenHvmParam {
                domid: DomId::SELF,
                pad: 0,
                index: 0,
                value: (2 << 56) | 0xF3,
            },
        )
        .unwrap();
    assert_eq!(
        call(&mut hv, d, 0, x::__HYPERVISOR_hvm_op, [0, ARG, 0, 0, 0]),
        0
    );
    bind_timer(&mut hv, d, 0);
    let t0 = hv.now();
    assert_eq!(singleshot(&mut hv, d, 0, t0 + 500, 0), 0);
    let (h, o) = hv.domain(d).unwrap().vcpu_info[0].unwrap();
    hv.platform.store_u8(h, o, 0);
    let mut cpu = MockVcpu::flat64();
    assert_eq!(
        hv.handle_exit(d, 0, &mut cpu, VmExit::Hlt),
        hv_core::ExitAction::Block
    );
    assert!(!hv.vcpu_runnable(d, 0));
    hv.tick(t0 + 500);
    assert!(hv.vcpu_runnable(d, 0));
    hv.prepare_entry(d, 0, &mut cpu);
    assert_eq!(cpu.injected, [hv_core::arch::Event::Interrupt(0xF3)]);
}

#[test]
fn thousands_of_timers() {
    let (mut hv, d) = setup(128);
    let t0 = hv.now();
    for v in 0..128u32 {
        bind_timer(&mut hv, d, v);
    }
    // 128 vCPUs reprogramming 40 times each: 5120 heap entries, stale
    // ones dropped as they surface, each vCPU fires exactly once.
    for round in 0..40u64 {
        for v in 0..128u32 {
            let t = t0 + 1_000 + (v as u64 * 7919 + round * 104_729) % 1_000_000;
            assert_eq!(singleshot(&mut hv, d, v, t, 0), 0);
        }
    }
    hv.tick(t0 + 2_000_000);
    let fired = (0..128)
        .filter(|&v| hv.domain(d).unwrap().vcpus[v].singleshot.is_none())
        .count();
    assert_eq!(fired, 128);
    assert_eq!(hv.tick(t0 + 3_000_000), None);
}

#[test]
fn rearming_timers_cannot_grow_the_heap() {
    let (mut hv, d) = setup(2);
    let t0 = hv.now();
    bind_timer(&mut hv, d, 0);
    bind_timer(&mut hv, d, 1);
    assert_eq!(singleshot(&mut hv, d, 1, t0 + 5_000, 0), 0);
    // vCPU 0 re-arms a timer a day ahead 100,000 times (each a new
    // deadline, then the same one): the heap stays small.
    for i in 0..100_000u64 {
        let t = t0 + 86_400_000_000_000 + (i % 5000).min(4000);
        assert_eq!(singleshot(&mut hv, d, 0, t, 0), 0);
        assert!(hv.timer_entries() <= 200, "{} entries", hv.timer_entries());
    }
    // vCPU 1's timer fires on time, vCPU 0's is still armed.
    hv.tick(t0 + 5_000);
    assert!(hv.domain(d).unwrap().vcpus[1].singleshot.is_none());
    assert_eq!(
        hv.domain(d).unwrap().vcpus[0].singleshot,
        Some(t0 + 86_400_000_000_000 + 4000)
    );
}

#[test]
fn runstate_area_tracks_time_per_state() {
    let (mut hv, d) = setup(1);
    // Registered at a guest address (paging off: linear = physical),
    // with the update-flag assist.
    assert_eq!(
        call(&mut hv, d, 0, x::__HYPERVISOR_vm_assist, [0, 5, 0, 0, 0]),
        0
    );
    hv.guest_mem(d)
        .unwrap()
        .write_obj(ARG, &vc::VcpuRegisterRunstateMemoryArea { addr: 0x2000 })
        .unwrap();
    assert_eq!(
        call(
            &mut hv,
            d,
            0,
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
    let read = |hv: &Hypervisor<MockPlatform>| {
        hv.guest_mem(d)
            .unwrap()
            .read_obj::<vc::VcpuRunstateInfo>(0x2000)
            .unwrap()
    };
    let t0 = hv.now();
    hv.set_runstate(d, 0, vc::RUNSTATE_running);
    set_now(&hv, t0 + 1000);
    hv.set_runstate(d, 0, vc::RUNSTATE_blocked);
    set_now(&hv, t0 + 1500);
    hv.set_runstate(d, 0, vc::RUNSTATE_running);
    let r = read(&hv);
    assert_eq!(r.state, vc::RUNSTATE_running);
    assert_eq!(r.state_entry_time & (1 << 63), 0, "update flag cleared");
    assert_eq!(r.state_entry_time, t0 + 1500);
    assert_eq!(r.time[vc::RUNSTATE_running as usize], 1000);
    assert_eq!(r.time[vc::RUNSTATE_blocked as usize], 500);
    // VCPUOP_get_runstate_info returns the same.
    assert_eq!(
        call(
            &mut hv,
            d,
            0,
            x::__HYPERVISOR_vcpu_op,
            [vc::VCPUOP_get_runstate_info as u64, 0, ARG, 0, 0]
        ),
        0
    );
    assert_eq!(
        hv.guest_mem(d)
            .unwrap()
            .read_obj::<vc::VcpuRunstateInfo>(ARG)
            .unwrap(),
        r
    );
}
