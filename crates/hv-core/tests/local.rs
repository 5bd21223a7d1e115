//! Domain-local exits ([`hv_core::local`]): with the hypervisor released,
//! a CPU handles `xen_version` and IPI sends under its domain's own lock
//! with the same results as the global path; everything it cannot finish
//! alone it declines before changing anything; while the global path holds
//! the domains, it declines everything. Several threads, each on its own
//! domain, run local exits while another keeps taking the global path,
//! and every event is accounted for at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hv_core::arch::VmExit;
use hv_core::domain::VcpuState;
use hv_core::mock::{MockNpt, MockPlatform, MockVcpu};
use hv_core::platform::FrameAccess;
use hv_core::{DomId, DomainConfig, ExitAction, Gfn, Hypervisor};
use xen_abi::event_channel as ev;
use xen_abi::xen as x;
use zerocopy::IntoBytes;

const ARG: u64 = 0x10_0000;
/// shared_info's 2-level pending words.
const SI_PENDING: usize = 2048;

/// A domain with RAM, `vcpus` vCPUs, and an IPI port bound to `ipi_to`
/// (made by the global path, which also accounts the vCPU as running).
fn domain(hv: &mut Hypervisor<MockPlatform>, vcpus: u32, ipi_to: u32) -> (DomId, u32) {
    let d = hv
        .create_domain(
            DomainConfig {
                domid: None,
                name: "local".into(),
                privileged: false,
                vcpus,
                max_pages: 512 + 64,
            },
            Box::new(MockNpt::default()),
        )
        .unwrap();
    hv.populate(d, Gfn(0), 512).unwrap();
    for v in 1..vcpus {
        hv.vcpu_up(d, v).unwrap();
    }
    let bind = ev::EvtchnBindIpi {
        vcpu: ipi_to,
        port: 0,
    };
    hv.guest_mem(d)
        .unwrap()
        .write(ARG, bind.as_bytes())
        .unwrap();
    let mut cpu = MockVcpu::flat64();
    cpu.hypercall(
        x::__HYPERVISOR_event_channel_op as u64,
        [u64::from(ev::EVTCHNOP_bind_ipi), ARG, 0, 0, 0],
    );
    assert_eq!(
        hv.handle_exit(d, 0, &mut cpu, VmExit::Hypercall),
        ExitAction::Resume
    );
    assert_eq!(cpu.ret(), 0);
    let mut port = [0u8; 4];
    hv.guest_mem(d).unwrap().read(ARG + 4, &mut port).unwrap();
    (d, u32::from_le_bytes(port))
}

fn send_call(cpu: &mut MockVcpu, at: u64) {
    cpu.hypercall(
        x::__HYPERVISOR_event_channel_op as u64,
        [u64::from(ev::EVTCHNOP_send), at, 0, 0, 0],
    );
}

fn write_send(hv: &Hypervisor<MockPlatform>, d: DomId, port: u32) {
    let send = ev::EvtchnSend { port };
    hv.guest_mem(d)
        .unwrap()
        .write(ARG, send.as_bytes())
        .unwrap();
}

fn pending_word(hv: &Hypervisor<MockPlatform>, d: DomId) -> u64 {
    let si = hv.domain(d).unwrap().shared_info;
    hv.platform.load_u64(si, SI_PENDING)
}

/// vCPU 0's `evtchn_upcall_pending`.
fn upcall_flag(hv: &Hypervisor<MockPlatform>, d: DomId) -> bool {
    let (h, o) = hv.domain(d).unwrap().vcpu_info[0].unwrap();
    hv.platform.load_u64(h, o) & 0xFF != 0
}

#[test]
fn xen_version_is_answered_locally_as_globally() {
    let mut hv = Hypervisor::new(MockPlatform::default());
    let (d, _) = domain(&mut hv, 1, 0);
    let mut global = MockVcpu::flat64();
    global.hypercall(x::__HYPERVISOR_xen_version as u64, [0; 5]);
    hv.handle_exit(d, 0, &mut global, VmExit::Hypercall);

    hv.release();
    let local = hv.local(d).unwrap();
    let mut cpu = MockVcpu::flat64();
    cpu.hypercall(x::__HYPERVISOR_xen_version as u64, [0; 5]);
    assert_eq!(
        local.handle_exit(0, &mut cpu, VmExit::Hypercall),
        Some(ExitAction::Resume)
    );
    assert_eq!(cpu.ret(), 0x0004_0011);
    assert_eq!(cpu.ret(), global.ret());
    assert_eq!(cpu.rip, 3, "past the VMCALL");
    // An unknown sub-op gets the global path's answer too.
    cpu.hypercall(x::__HYPERVISOR_xen_version as u64, [99, 0, 0, 0, 0]);
    local.handle_exit(0, &mut cpu, VmExit::Hypercall).unwrap();
    assert_eq!(cpu.ret(), -38);
}

#[test]
fn ipi_send_is_local_and_sets_what_the_global_path_sets() {
    let mut a = Hypervisor::new(MockPlatform::default());
    let mut b = Hypervisor::new(MockPlatform::default());
    let (da, pa) = domain(&mut a, 1, 0);
    let (db, pb) = domain(&mut b, 1, 0);
    assert_eq!((da, pa), (db, pb));

    write_send(&a, da, pa);
    let mut cpu = MockVcpu::flat64();
    send_call(&mut cpu, ARG);
    a.handle_exit(da, 0, &mut cpu, VmExit::Hypercall);
    assert_eq!(cpu.ret(), 0);

    write_send(&b, db, pb);
    b.release();
    let local = b.local(db).unwrap();
    let mut lcpu = MockVcpu::flat64();
    send_call(&mut lcpu, ARG);
    assert_eq!(
        local.handle_exit(0, &mut lcpu, VmExit::Hypercall),
        Some(ExitAction::Resume)
    );
    assert_eq!(lcpu.ret(), 0);
    assert_eq!(lcpu.rip, cpu.rip);
    b.hold();
    assert_ne!(pending_word(&b, db) & (1 << pb), 0, "the port is pending");
    assert_eq!(pending_word(&a, da), pending_word(&b, db));
    assert!(upcall_flag(&b, db));
    assert_eq!(upcall_flag(&a, da), upcall_flag(&b, db));
    // The entry injects the upcall on the local path as on the global one.
    b.domain_mut(db).unwrap().hvm_params[xen_abi::hvm::HVM_PARAM_CALLBACK_IRQ as usize] =
        xen_abi::hvm::hvm_callback_vector(0xF3);
    b.release();
    let mut entry = MockVcpu::flat64();
    assert!(local.prepare_entry(0, &mut entry));
    assert_eq!(entry.injected, vec![hv_core::arch::Event::Interrupt(0xF3)]);
}

#[test]
fn bad_ports_get_the_global_answer_locally() {
    let mut hv = Hypervisor::new(MockPlatform::default());
    let (d, _) = domain(&mut hv, 1, 0);
    write_send(&hv, d, 4000);
    hv.release();
    let local = hv.local(d).unwrap();
    let mut cpu = MockVcpu::flat64();
    send_call(&mut cpu, ARG);
    assert_eq!(
        local.handle_exit(0, &mut cpu, VmExit::Hypercall),
        Some(ExitAction::Resume)
    );
    assert_eq!(cpu.ret(), -22, "EINVAL");
    // An argument outside the guest's memory: EFAULT, as globally.
    send_call(&mut cpu, 0x7000_0000);
    local.handle_exit(0, &mut cpu, VmExit::Hypercall).unwrap();
    assert_eq!(cpu.ret(), -14);
}

#[test]
fn a_sleeping_target_is_woken_locally_for_the_scheduler() {
    let mut hv = Hypervisor::new(MockPlatform::default());
    // vCPU 1 is the IPI's target, and it is blocked.
    let (d, port) = domain(&mut hv, 2, 1);
    hv.domain_mut(d).unwrap().vcpus[1].state = VcpuState::Blocked;
    hv.domain_mut(d).unwrap().vcpus[1].pcpu = 5;
    write_send(&hv, d, port);
    hv.release();
    let local = hv.local(d).unwrap();
    let queue = hv.woken_queue();
    let mut cpu = MockVcpu::flat64();
    send_call(&mut cpu, ARG);
    assert!(!local.take_woke());
    assert_eq!(
        local.handle_exit(0, &mut cpu, VmExit::Hypercall),
        Some(ExitAction::Resume)
    );
    assert_eq!(cpu.ret(), 0);
    assert!(local.take_woke(), "the caller must drain the queue");
    assert!(!local.take_woke());
    assert_eq!(*queue.lock(), vec![(d, 1)]);
    assert_eq!(*hv.platform.kicks.lock(), vec![5]);
    hv.hold();
    assert_ne!(pending_word(&hv, d) & (1 << port), 0);
    let vc = &hv.domain(d).unwrap().vcpus[1];
    assert_eq!(vc.state, VcpuState::Runnable);
    assert_eq!(vc.runstate.state, xen_abi::vcpu::RUNSTATE_runnable);
    // The global path drains the same queue.
    assert_eq!(hv.take_woken(), vec![(d, 1)]);
    assert!(queue.lock().is_empty());
}

#[test]
fn what_needs_more_than_the_domain_is_declined_untouched() {
    let mut hv = Hypervisor::new(MockPlatform::default());
    let (d, _) = domain(&mut hv, 1, 0);
    hv.release();
    let local = hv.local(d).unwrap();
    let mut cpu = MockVcpu::flat64();
    let before = cpu.clone();
    // CPUID, scheduling, memory: the global path's.
    assert_eq!(local.handle_exit(0, &mut cpu, VmExit::Cpuid), None);
    for nr in [x::__HYPERVISOR_sched_op, x::__HYPERVISOR_memory_op] {
        cpu.hypercall(nr as u64, [0; 5]);
        let before = cpu.clone();
        assert_eq!(local.handle_exit(0, &mut cpu, VmExit::Hypercall), None);
        assert_eq!((cpu.rip, cpu.gprs.rax), (before.rip, before.gprs.rax));
    }
    assert_eq!(cpu.rip, before.rip);
}

/// Binds an interdomain channel between `a` and `b` (global path);
/// returns (a's port, b's port).
fn bind_interdomain(hv: &mut Hypervisor<MockPlatform>, a: DomId, b: DomId) -> (u32, u32) {
    let mut cpu = MockVcpu::flat64();
    let alloc = ev::EvtchnAllocUnbound {
        dom: DomId::SELF,
        remote_dom: b.0,
        port: 0,
    };
    hv.guest_mem(a)
        .unwrap()
        .write(ARG + 64, alloc.as_bytes())
        .unwrap();
    cpu.hypercall(
        x::__HYPERVISOR_event_channel_op as u64,
        [u64::from(ev::EVTCHNOP_alloc_unbound), ARG + 64, 0, 0, 0],
    );
    hv.handle_exit(a, 0, &mut cpu, VmExit::Hypercall);
    assert_eq!(cpu.ret(), 0);
    let pa: ev::EvtchnAllocUnbound = hv.guest_mem(a).unwrap().read_obj(ARG + 64).unwrap();
    let bind = ev::EvtchnBindInterdomain {
        remote_dom: a.0,
        pad: 0,
        remote_port: pa.port,
        local_port: 0,
    };
    hv.guest_mem(b)
        .unwrap()
        .write(ARG + 64, bind.as_bytes())
        .unwrap();
    cpu.hypercall(
        x::__HYPERVISOR_event_channel_op as u64,
        [u64::from(ev::EVTCHNOP_bind_interdomain), ARG + 64, 0, 0, 0],
    );
    hv.handle_exit(b, 0, &mut cpu, VmExit::Hypercall);
    assert_eq!(cpu.ret(), 0);
    let pb: ev::EvtchnBindInterdomain = hv.guest_mem(b).unwrap().read_obj(ARG + 64).unwrap();
    (pa.port, pb.local_port)
}

#[test]
fn interdomain_sends_are_local_and_wake_the_peer() {
    let mut hv = Hypervisor::new(MockPlatform::default());
    let (a, _) = domain(&mut hv, 1, 0);
    let (b, _) = domain(&mut hv, 1, 0);
    let (pa, pb) = bind_interdomain(&mut hv, a, b);
    // a is asleep, polling its port (as a back end waits).
    {
        let vc = &mut hv.domain_mut(a).unwrap().vcpus[0];
        vc.state = VcpuState::Polling;
        vc.poll_ports = vec![pa];
    }
    write_send(&hv, b, pb);
    // Binding raised b's own port (as Xen does); start clean.
    let si = hv.domain(b).unwrap().shared_info;
    hv.platform.fetch_and_u64(si, SI_PENDING, 0);
    hv.release();
    let local = hv.local(b).unwrap();
    let mut cpu = MockVcpu::flat64();
    send_call(&mut cpu, ARG);
    assert_eq!(
        local.handle_exit(0, &mut cpu, VmExit::Hypercall),
        Some(ExitAction::Resume)
    );
    assert_eq!(cpu.ret(), 0);
    assert!(local.take_woke());
    hv.hold();
    assert_ne!(pending_word(&hv, a) & (1 << pa), 0, "the peer's port");
    assert_eq!(pending_word(&hv, b) & (1 << pb), 0, "not the sender's");
    let vc = &hv.domain(a).unwrap().vcpus[0];
    assert_eq!(vc.state, VcpuState::Runnable);
    assert!(vc.poll_ports.is_empty());
    assert_eq!(hv.take_woken(), vec![(a, 0)]);
    // A closed peer port: the send finds an unbound port, which is no
    // error and raises nothing.
    hv.evtchn_close(a, pa).unwrap();
    let si = hv.domain(a).unwrap().shared_info;
    hv.platform.fetch_and_u64(si, SI_PENDING, 0);
    hv.release();
    send_call(&mut cpu, ARG);
    assert_eq!(
        local.handle_exit(0, &mut cpu, VmExit::Hypercall),
        Some(ExitAction::Resume)
    );
    assert_eq!(cpu.ret(), 0);
    hv.hold();
    assert_eq!(pending_word(&hv, a), 0);
}

#[test]
fn a_held_or_destroyed_domain_is_declined() {
    let mut hv = Hypervisor::new(MockPlatform::default());
    let (d, _) = domain(&mut hv, 1, 0);
    let local = hv.local(d).unwrap();
    let mut cpu = MockVcpu::flat64();
    cpu.hypercall(x::__HYPERVISOR_xen_version as u64, [0; 5]);
    // Held: the global path has the domain.
    assert_eq!(local.handle_exit(0, &mut cpu, VmExit::Hypercall), None);
    assert!(!local.prepare_entry(0, &mut cpu));
    hv.release();
    assert!(local.handle_exit(0, &mut cpu, VmExit::Hypercall).is_some());
    hv.hold();
    hv.destroy_domain(d).unwrap();
    hv.release();
    assert_eq!(local.handle_exit(0, &mut cpu, VmExit::Hypercall), None);
    assert!(hv.local(d).is_none());
}

#[test]
fn a_paused_domain_and_user_mode_are_declined() {
    let mut hv = Hypervisor::new(MockPlatform::default());
    let (d, _) = domain(&mut hv, 1, 0);
    hv.pause(d).unwrap();
    hv.release();
    let local = hv.local(d).unwrap();
    let mut cpu = MockVcpu::flat64();
    cpu.hypercall(x::__HYPERVISOR_xen_version as u64, [0; 5]);
    assert_eq!(local.handle_exit(0, &mut cpu, VmExit::Hypercall), None);
    hv.hold();
    hv.unpause(d).unwrap();
    hv.release();
    cpu.cpl = 3;
    assert_eq!(local.handle_exit(0, &mut cpu, VmExit::Hypercall), None);
}

/// Two threads send IPIs on their own domains locally while a third keeps
/// checking every domain out and back (the global path) and raising a
/// third domain's port through it. Nothing deadlocks, no send is lost or
/// doubled: each local send either finished locally or was declined and
/// redone globally, and the counts add up.
#[test]
fn local_and_global_paths_interleave_without_loss() {
    const SENDS: u64 = 5_000;
    let mut hv = Hypervisor::new(MockPlatform::default());
    let doms: Vec<(DomId, u32)> = (0..3).map(|_| domain(&mut hv, 1, 0)).collect();
    for &(d, p) in &doms {
        write_send(&hv, d, p);
    }
    // The two workers also send to each other, both ways at once: the
    // second domain's lock is only ever tried.
    let (p01, p10) = bind_interdomain(&mut hv, doms[0].0, doms[1].0);
    for (d, p) in [(doms[0].0, p01), (doms[1].0, p10)] {
        let send = ev::EvtchnSend { port: p };
        hv.guest_mem(d)
            .unwrap()
            .write(ARG + 128, send.as_bytes())
            .unwrap();
    }
    hv.release();
    let locals: Vec<_> = doms[..2]
        .iter()
        .map(|&(d, _)| hv.local(d).unwrap())
        .collect();
    let hv = Arc::new(spin::Mutex::new(hv));
    let stop = Arc::new(AtomicBool::new(false));
    let global = {
        let (hv, stop, (d3, p3)) = (hv.clone(), stop.clone(), doms[2]);
        std::thread::spawn(move || {
            let mut n = 0u64;
            let mut cpu = MockVcpu::flat64();
            while !stop.load(Ordering::Relaxed) {
                let mut h = hv.lock();
                h.hold();
                // Acknowledge and send again: every send sets the bit anew.
                let si = h.domain(d3).unwrap().shared_info;
                h.platform.fetch_and_u64(si, SI_PENDING, !(1 << p3));
                send_call(&mut cpu, ARG);
                h.handle_exit(d3, 0, &mut cpu, VmExit::Hypercall);
                assert_eq!(cpu.ret(), 0);
                assert_ne!(h.platform.load_u64(si, SI_PENDING) & (1 << p3), 0);
                h.release();
                n += 1;
            }
            n
        })
    };
    let workers: Vec<_> = locals
        .into_iter()
        .zip(doms.clone())
        .map(|(local, (d, _))| {
            let hv = hv.clone();
            std::thread::spawn(move || {
                let mut cpu = MockVcpu::flat64();
                let (mut fast, mut slow) = (0u64, 0u64);
                for i in 0..SENDS {
                    // Every other send goes to the other worker's domain.
                    send_call(&mut cpu, if i % 2 == 0 { ARG } else { ARG + 128 });
                    let rip = cpu.rip;
                    match local.handle_exit(0, &mut cpu, VmExit::Hypercall) {
                        Some(a) => {
                            assert_eq!(a, ExitAction::Resume);
                            fast += 1;
                        }
                        None => {
                            assert_eq!(cpu.rip, rip, "declined exits are untouched");
                            let mut h = hv.lock();
                            h.hold();
                            h.handle_exit(d, 0, &mut cpu, VmExit::Hypercall);
                            h.release();
                            slow += 1;
                        }
                    }
                    assert_eq!(cpu.ret(), 0);
                    assert_eq!(cpu.rip, rip + 3, "each send completed once");
                }
                (fast, slow)
            })
        })
        .collect();
    let mut total = 0;
    for w in workers {
        let (fast, slow) = w.join().unwrap();
        assert!(fast > 0, "some sends were local");
        total += fast + slow;
    }
    stop.store(true, Ordering::Relaxed);
    let globals = global.join().unwrap();
    assert!(globals > 0);
    assert_eq!(total, 2 * SENDS);
    let mut h = hv.lock();
    h.hold();
    for &(d, p) in &doms[..2] {
        assert_ne!(pending_word(&h, d) & (1 << p), 0);
    }
    assert_ne!(pending_word(&h, doms[0].0) & (1 << p01), 0);
    assert_ne!(pending_word(&h, doms[1].0) & (1 << p10), 0);
}

/// Port I/O of `size` bytes at `port`, local or global.
fn config_io(
    hv: &mut Hypervisor<MockPlatform>,
    local: Option<&hv_core::local::LocalDomain<MockPlatform>>,
    d: DomId,
    port: u16,
    size: u8,
    write: Option<u32>,
) -> u64 {
    let mut cpu = MockVcpu::flat64();
    cpu.gprs.rax = write.map_or(0x1234_5678_9ABC_DEF0, u64::from);
    let exit = VmExit::Io(hv_core::arch::IoExit {
        port,
        size,
        write: write.is_some(),
        string: false,
        rep: false,
    });
    match local {
        Some(l) => assert_eq!(l.handle_exit(0, &mut cpu, exit), Some(ExitAction::Resume)),
        None => assert_eq!(hv.handle_exit(d, 0, &mut cpu, exit), ExitAction::Resume),
    }
    assert_eq!(cpu.rip, 3);
    cpu.gprs.rax
}

#[test]
fn pci_config_ports_are_local_and_answer_as_globally() {
    use hv_core::mock::MockPciFunction;
    use hv_core::pci::Bdf;
    let disk = Bdf::new(0, 4, 0).unwrap();
    let mut hv = Hypervisor::new(MockPlatform::default());
    hv.platform
        .pci
        .lock()
        .push(MockPciFunction::endpoint(disk, 0x1AF4, 0x1001));
    let (owner, _) = domain(&mut hv, 1, 0);
    let (other, _) = domain(&mut hv, 1, 0);
    hv.assign_pci(owner, disk).unwrap();
    let cf8 = 0x8000_0000 | (4 << 11);
    // The global path's answers: the owner sees the function, the other
    // domain all-ones; a 2-byte read keeps RAX's other bytes.
    let mut want = Vec::new();
    for d in [owner, other] {
        config_io(&mut hv, None, d, 0xCF8, 4, Some(cf8));
        want.push(config_io(&mut hv, None, d, 0xCFC, 4, None));
        want.push(config_io(&mut hv, None, d, 0xCFE, 2, None));
        config_io(&mut hv, None, d, 0xCF8, 4, Some(0));
    }
    assert_eq!(
        want,
        [
            0x1234_5678_1001_1AF4,
            0x1234_5678_9ABC_1001,
            0x1234_5678_FFFF_FFFF,
            0x1234_5678_9ABC_FFFF
        ]
    );
    hv.release();
    let mut got = Vec::new();
    for d in [owner, other] {
        let l = hv.local(d).unwrap();
        config_io(&mut hv, Some(&l), d, 0xCF8, 4, Some(cf8));
        assert_eq!(config_io(&mut hv, Some(&l), d, 0xCF8, 4, None) as u32, cf8);
        got.push(config_io(&mut hv, Some(&l), d, 0xCFC, 4, None));
        got.push(config_io(&mut hv, Some(&l), d, 0xCFE, 2, None));
    }
    assert_eq!(got, want);
    // Each domain kept its own latch.
    hv.hold();
    assert_eq!(hv.domain(owner).unwrap().pci.cf8, cf8);
    assert_eq!(hv.domain(other).unwrap().pci.cf8, cf8);
}

#[test]
fn singleshot_timers_are_armed_locally_as_globally() {
    use xen_abi::vcpu as vc;
    let mut hv = Hypervisor::new(MockPlatform::default());
    let (d, _) = domain(&mut hv, 2, 0);
    let now = hv.now();
    let t = now + 5_000_000;
    let arg = vc::VcpuSetSingleshotTimer {
        timeout_abs_ns: t,
        flags: 0,
        pad: 0,
    };
    hv.guest_mem(d).unwrap().write(ARG, arg.as_bytes()).unwrap();
    hv.release();
    let local = hv.local(d).unwrap();
    let mut cpu = MockVcpu::flat64();
    let mut op = |cmd: u32, vcpu: u64| {
        cpu.hypercall(
            x::__HYPERVISOR_vcpu_op as u64,
            [cmd.into(), vcpu, ARG, 0, 0],
        );
        assert_eq!(
            local.handle_exit(0, &mut cpu, VmExit::Hypercall),
            Some(ExitAction::Resume)
        );
        cpu.ret()
    };
    // Another vCPU's timer: EINVAL; no such vCPU: ENOENT (Xen's codes).
    assert_eq!(op(vc::VCPUOP_set_singleshot_timer, 1), -22);
    assert_eq!(op(vc::VCPUOP_set_singleshot_timer, 2), -2);
    assert_eq!(op(vc::VCPUOP_set_singleshot_timer, 0), 0);
    hv.hold();
    assert_eq!(hv.domain(d).unwrap().vcpus[0].singleshot, Some(t));
    assert_eq!(hv.domain(d).unwrap().vcpus[1].singleshot, None);
    // The heap has it: the next deadline, and it fires (the vCPU's
    // singleshot is spent).
    assert_eq!(hv.tick(now), Some(t));
    hv.tick(t);
    assert_eq!(hv.domain(d).unwrap().vcpus[0].singleshot, None);
    // Stopped locally: a deadline left in the heap does not fire.
    hv.release();
    assert_eq!(op(vc::VCPUOP_set_singleshot_timer, 0), 0);
    assert_eq!(op(vc::VCPUOP_stop_singleshot_timer, 0), 0);
    hv.hold();
    assert_eq!(hv.domain(d).unwrap().vcpus[0].singleshot, None);
    // set_timer_op too (0 stops).
    hv.release();
    cpu.hypercall(x::__HYPERVISOR_set_timer_op as u64, [t + 1, 0, 0, 0, 0]);
    assert_eq!(
        local.handle_exit(0, &mut cpu, VmExit::Hypercall),
        Some(ExitAction::Resume)
    );
    assert_eq!(cpu.ret(), 0);
    hv.hold();
    assert_eq!(hv.domain(d).unwrap().vcpus[0].singleshot, Some(t + 1));
}
