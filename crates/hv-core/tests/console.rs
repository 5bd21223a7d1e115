//! The PV console back end: output through the ring and event channel,
//! input into the ring, hostile indices.

use hv_core::arch::VmExit;
use hv_core::mock::{MockNpt, MockPlatform, MockVcpu};
use hv_core::{DomId, DomainConfig, Gfn, Hypervisor};
use xen_abi::event_channel as ev;
use xen_abi::xen as x;

const RING: u64 = 0x80;

fn setup() -> (Hypervisor<MockPlatform>, DomId, u32) {
    let mut hv = Hypervisor::new(MockPlatform::default());
    let d = hv
        .create_domain(
            DomainConfig {
                domid: None,
                name: "t".into(),
                privileged: false,
                vcpus: 1,
                max_pages: 512,
            },
            Box::new(MockNpt::default()),
        )
        .unwrap();
    hv.populate(d, Gfn(0), 256).unwrap();
    let port = hv.setup_console(d, Gfn(RING)).unwrap();
    (hv, d, port)
}

fn send(hv: &mut Hypervisor<MockPlatform>, d: DomId, port: u32) -> i64 {
    hv.guest_mem(d)
        .unwrap()
        .write_obj(0x1000, &ev::EvtchnSend { port })
        .unwrap();
    let mut cpu = MockVcpu::flat64();
    cpu.hypercall(
        x::__HYPERVISOR_event_channel_op as u64,
        [ev::EVTCHNOP_send as u64, 0x1000, 0, 0, 0],
    );
    hv.handle_exit(d, 0, &mut cpu, VmExit::Hypercall);
    cpu.ret()
}

fn guest_write(hv: &Hypervisor<MockPlatform>, d: DomId, text: &[u8]) {
    let mem = hv.guest_mem(d).unwrap();
    let base = RING << 12;
    let prod = mem.load_u32(base + 3084).unwrap();
    for (i, b) in text.iter().enumerate() {
        let at = (prod as usize + i) % 2048;
        mem.write(base + 1024 + at as u64, &[*b]).unwrap();
    }
    mem.write(base + 3084, &(prod + text.len() as u32).to_le_bytes())
        .unwrap();
}

#[test]
fn params_and_output() {
    let (mut hv, d, port) = setup();
    let dom = hv.domain(d).unwrap();
    assert_eq!(
        dom.hvm_params[xen_abi::hvm::HVM_PARAM_CONSOLE_PFN as usize],
        RING
    );
    assert_eq!(
        dom.hvm_params[xen_abi::hvm::HVM_PARAM_CONSOLE_EVTCHN as usize],
        port as u64
    );
    guest_write(&hv, d, b"Linux version 6.1\nhalf");
    assert_eq!(send(&mut hv, d, port), 0);
    assert_eq!(hv.platform.console_of(d), ["Linux version 6.1"]);
    // Wrapping around the 2048-byte buffer many times.
    for i in 0..100 {
        guest_write(&hv, d, format!(" line {i}\n").as_bytes());
        send(&mut hv, d, port);
    }
    let lines = hv.platform.console_of(d);
    assert_eq!(lines[1], "half line 0");
    assert_eq!(lines.last().unwrap(), " line 99");
    // The back end consumed everything.
    let mem = hv.guest_mem(d).unwrap();
    assert_eq!(
        mem.load_u32((RING << 12) + 3080).unwrap(),
        mem.load_u32((RING << 12) + 3084).unwrap()
    );
}

#[test]
fn hostile_indices_are_dropped() {
    let (mut hv, d, port) = setup();
    let mem = hv.guest_mem(d).unwrap();
    mem.write((RING << 12) + 3084, &0x7FFF_FFFFu32.to_le_bytes())
        .unwrap();
    assert_eq!(send(&mut hv, d, port), 0);
    assert!(hv.platform.console_of(d).is_empty());
    // The ring works again afterwards.
    guest_write(&hv, d, b"ok\n");
    send(&mut hv, d, port);
    assert_eq!(hv.platform.console_of(d), ["ok"]);
}

#[test]
fn input_fills_the_in_ring() {
    let (mut hv, d, _port) = setup();
    assert_eq!(hv.console_input(d, b"ls\n"), 3);
    let mem = hv.guest_mem(d).unwrap();
    let mut b = [0u8; 3];
    mem.read(RING << 12, &mut b).unwrap();
    assert_eq!(&b, b"ls\n");
    assert_eq!(mem.load_u32((RING << 12) + 3076).unwrap(), 3);
    // Full ring: only what fits.
    assert_eq!(hv.console_input(d, &[b'x'; 2000]), 1021);
    assert_eq!(hv.console_input(d, b"y"), 0);
    assert_eq!(hv.console_input(DomId(9), b"y"), 0);
}
