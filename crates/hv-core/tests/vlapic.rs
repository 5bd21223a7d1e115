//! The emulated local APIC through MSR exits: identity, IPIs,
//! INIT-SIPI-SIPI starting a secondary vCPU, interrupt injection and EOI;
//! IA32_APIC_BASE mode changes and the xAPIC page through the emulator.

use hv_core::arch::{Event, VmExit};
use hv_core::domain::VcpuState;
use hv_core::mock::{MockNpt, MockPlatform, MockVcpu};
use hv_core::{DomId, DomainConfig, ExitAction, Gfn, Hypervisor};

fn setup() -> (Hypervisor<MockPlatform>, DomId) {
    let mut hv = Hypervisor::new(MockPlatform::default());
    let d = hv
        .create_domain(
            DomainConfig {
                domid: None,
                name: "t".into(),
                privileged: false,
                vcpus: 3,
                max_pages: 512,
            },
            Box::new(MockNpt::default()),
        )
        .unwrap();
    hv.populate(d, Gfn(0), 256).unwrap();
    (hv, d)
}

fn wrmsr(
    hv: &mut Hypervisor<MockPlatform>,
    d: DomId,
    v: u32,
    cpu: &mut MockVcpu,
    msr: u32,
    value: u64,
) {
    hv.handle_exit(d, v, cpu, VmExit::MsrWrite { msr, value });
}

fn rdmsr(hv: &mut Hypervisor<MockPlatform>, d: DomId, v: u32, cpu: &mut MockVcpu, msr: u32) -> u64 {
    hv.handle_exit(d, v, cpu, VmExit::MsrRead { msr });
    (cpu.gprs.rdx << 32) | cpu.gprs.rax
}

#[test]
fn identity_registers() {
    let (mut hv, d) = setup();
    let mut cpu = MockVcpu::flat64();
    assert_eq!(
        rdmsr(&mut hv, d, 2, &mut cpu, 0x802),
        4,
        "x2APIC id = 2 x vCPU"
    );
    assert_eq!(rdmsr(&mut hv, d, 0, &mut cpu, 0x803) & 0xFF, 0x14);
    assert!(cpu.injected.is_empty());
    rdmsr(&mut hv, d, 0, &mut cpu, 0x80B);
    assert!(
        matches!(
            cpu.injected.last(),
            Some(Event::Exception { vector: 13, .. })
        ),
        "EOI is write-only"
    );
    wrmsr(&mut hv, d, 0, &mut cpu, 0x802, 9);
    assert_eq!(cpu.injected.len(), 2, "ID is read-only");
    // Leaving x2APIC mode is refused.
    wrmsr(&mut hv, d, 0, &mut cpu, 0x1B, 0xFEE0_0900);
    assert_eq!(cpu.injected.len(), 3);
}

#[test]
fn init_sipi_starts_an_offline_vcpu() {
    let (mut hv, d) = setup();
    let mut cpu = MockVcpu::flat64();
    // SIPI without INIT does nothing.
    wrmsr(&mut hv, d, 0, &mut cpu, 0x830, (2u64 << 32) | 0x600 | 0x9A);
    assert!(hv.take_vcpu_starts().is_empty());
    wrmsr(&mut hv, d, 0, &mut cpu, 0x830, (2u64 << 32) | 0x4500);
    wrmsr(&mut hv, d, 0, &mut cpu, 0x830, (2u64 << 32) | 0x4600 | 0x9A);
    wrmsr(&mut hv, d, 0, &mut cpu, 0x830, (2u64 << 32) | 0x4600 | 0x9A);
    assert_eq!(
        hv.take_vcpu_starts(),
        [(d, 1, hv_core::VcpuStart::Sipi(0x9A))],
        "the second SIPI is ignored"
    );
    assert_eq!(hv.domain(d).unwrap().vcpus[1].state, VcpuState::Offline);
    hv.vcpu_up(d, 1).unwrap();
    assert!(hv.vcpu_runnable(d, 1));
    // A running vCPU ignores INIT-SIPI.
    wrmsr(&mut hv, d, 0, &mut cpu, 0x830, (2u64 << 32) | 0x4500);
    wrmsr(&mut hv, d, 0, &mut cpu, 0x830, (2u64 << 32) | 0x4600 | 0x9A);
    assert!(hv.take_vcpu_starts().is_empty());
    assert!(cpu.injected.is_empty());
}

#[test]
fn fixed_ipi_and_self_ipi_are_injected_by_priority_with_eoi() {
    let (mut hv, d) = setup();
    hv.vcpu_up(d, 1).unwrap();
    let mut c0 = MockVcpu::flat64();
    let mut c1 = MockVcpu::flat64();
    wrmsr(&mut hv, d, 1, &mut c1, 0x80F, 0x1FF);
    // vCPU 0 sends 0x40 to APIC id 2 (vCPU 1); vCPU 1 sends itself 0x61.
    wrmsr(&mut hv, d, 0, &mut c0, 0x830, (2u64 << 32) | 0x40);
    wrmsr(&mut hv, d, 1, &mut c1, 0x83F, 0x61);
    hv.prepare_entry(d, 1, &mut c1);
    assert_eq!(c1.injected, [Event::Interrupt(0x61)]);
    hv.prepare_entry(d, 1, &mut c1);
    assert_eq!(c1.injected.len(), 1, "0x40 waits below the in-service 0x61");
    wrmsr(&mut hv, d, 1, &mut c1, 0x80B, 0);
    hv.prepare_entry(d, 1, &mut c1);
    assert_eq!(c1.injected[1], Event::Interrupt(0x40));
    // With interrupts off, a window is requested instead.
    wrmsr(&mut hv, d, 1, &mut c1, 0x80B, 0);
    wrmsr(&mut hv, d, 1, &mut c1, 0x83F, 0x50);
    c1.rflags = 0x2;
    hv.prepare_entry(d, 1, &mut c1);
    assert!(c1.window);
    // A pending APIC interrupt keeps HLT from blocking.
    assert_eq!(
        hv.handle_exit(d, 1, &mut c1, VmExit::Hlt),
        ExitAction::Resume
    );
    // Broadcast NMI to all but self.
    wrmsr(&mut hv, d, 0, &mut c0, 0x830, (3 << 18) | 0x400);
    hv.prepare_entry(d, 1, &mut c1);
    assert_eq!(c1.injected.last(), Some(&Event::Nmi));
    assert!(c0.injected.iter().all(|e| *e != Event::Nmi));
}

#[test]
fn apic_timer_one_shot() {
    let (mut hv, d) = setup();
    let mut c0 = MockVcpu::flat64();
    wrmsr(&mut hv, d, 0, &mut c0, 0x80F, 0x1FF);
    wrmsr(&mut hv, d, 0, &mut c0, 0x83E, 0xB);
    wrmsr(&mut hv, d, 0, &mut c0, 0x832, 0xEC);
    let t0 = hv.now();
    wrmsr(&mut hv, d, 0, &mut c0, 0x838, 5000);
    assert!(rdmsr(&mut hv, d, 0, &mut c0, 0x839) <= 5000);
    hv.tick(t0 + 4999);
    hv.prepare_entry(d, 0, &mut c0);
    assert!(c0.injected.is_empty());
    hv.tick(t0 + 5000);
    hv.prepare_entry(d, 0, &mut c0);
    assert_eq!(c0.injected, [Event::Interrupt(0xEC)]);
    // Reprogramming to 0 stops it.
    wrmsr(&mut hv, d, 0, &mut c0, 0x838, 100);
    wrmsr(&mut hv, d, 0, &mut c0, 0x838, 0);
    wrmsr(&mut hv, d, 0, &mut c0, 0x80B, 0);
    hv.tick(t0 + 1_000_000);
    hv.prepare_entry(d, 0, &mut c0);
    assert_eq!(c0.injected.len(), 1);
}

/// A nested page fault for `code` (at RIP 0x1000) touching `gpa`.
fn mmio(
    hv: &mut Hypervisor<MockPlatform>,
    d: DomId,
    v: u32,
    cpu: &mut MockVcpu,
    code: &[u8],
    gpa: u64,
    write: bool,
) -> ExitAction {
    hv.guest_mem(d).unwrap().write(0x1000, code).unwrap();
    cpu.rip = 0x1000;
    let access = hv_core::arch::Access {
        read: !write,
        write,
        ..Default::default()
    };
    hv.handle_exit(d, v, cpu, VmExit::NestedPageFault { gpa, access })
}

#[test]
fn apic_base_transitions_and_the_xapic_page() {
    let (mut hv, d) = setup();
    let mut cpu = MockVcpu::flat64();
    let gp = |c: &MockVcpu| matches!(c.injected.last(), Some(Event::Exception { vector: 13, .. }));
    // Firmware state: x2APIC, enabled, BSP on vCPU 0 only.
    assert_eq!(rdmsr(&mut hv, d, 0, &mut cpu, 0x1B), 0xFEE0_0D00);
    assert_eq!(rdmsr(&mut hv, d, 1, &mut cpu, 0x1B), 0xFEE0_0C00);
    // x2APIC -> xAPIC directly, EXTD without EN, another base: #GP.
    for bad in [0xFEE0_0800u64, 0xFEE0_0400, 0xFED0_0C00, 0xFEE0_0C01] {
        cpu.injected.clear();
        wrmsr(&mut hv, d, 1, &mut cpu, 0x1B, bad);
        assert!(gp(&cpu), "{bad:#x}");
        assert_eq!(rdmsr(&mut hv, d, 1, &mut cpu, 0x1B), 0xFEE0_0C00);
    }
    // x2APIC -> disabled: the MSRs are gone.
    cpu.injected.clear();
    wrmsr(&mut hv, d, 1, &mut cpu, 0x1B, 0xFEE0_0000);
    assert!(cpu.injected.is_empty());
    rdmsr(&mut hv, d, 1, &mut cpu, 0x802);
    assert!(gp(&cpu), "x2APIC MSR while disabled");
    // disabled -> x2APIC: #GP; disabled -> xAPIC: fine.
    cpu.injected.clear();
    wrmsr(&mut hv, d, 1, &mut cpu, 0x1B, 0xFEE0_0C00);
    assert!(gp(&cpu));
    cpu.injected.clear();
    wrmsr(&mut hv, d, 1, &mut cpu, 0x1B, 0xFEE0_0800);
    assert!(cpu.injected.is_empty());
    assert_eq!(rdmsr(&mut hv, d, 1, &mut cpu, 0x1B), 0xFEE0_0800);
    rdmsr(&mut hv, d, 1, &mut cpu, 0x802);
    assert!(gp(&cpu), "x2APIC MSR in xAPIC mode");
    // mov eax, [rbx]: the ID register through the page (ID 2 in 31:24),
    // then the version.
    cpu.injected.clear();
    cpu.gprs.rbx = 0xFEE0_0020;
    let code = [0x8B, 0x03];
    assert_eq!(
        mmio(&mut hv, d, 1, &mut cpu, &code, 0xFEE0_0020, false),
        ExitAction::Resume
    );
    assert_eq!(cpu.gprs.rax, 2 << 24);
    assert_eq!(cpu.rip, 0x1002);
    cpu.gprs.rbx = 0xFEE0_0030;
    mmio(&mut hv, d, 1, &mut cpu, &code, 0xFEE0_0030, false);
    assert_eq!(cpu.gprs.rax, 0x0005_0014);
    // mov [rbx], eax to SVR, read back.
    cpu.gprs.rbx = 0xFEE0_00F0;
    cpu.gprs.rax = 0x1FF;
    mmio(&mut hv, d, 1, &mut cpu, &[0x89, 0x03], 0xFEE0_00F0, true);
    cpu.gprs.rax = 0;
    mmio(&mut hv, d, 1, &mut cpu, &code, 0xFEE0_00F0, false);
    assert_eq!(cpu.gprs.rax, 0x1FF);
    // ICR high then low: a fixed IPI to APIC ID 0 (vCPU 0).
    cpu.gprs.rbx = 0xFEE0_0310;
    cpu.gprs.rax = 0;
    mmio(&mut hv, d, 1, &mut cpu, &[0x89, 0x03], 0xFEE0_0310, true);
    cpu.gprs.rbx = 0xFEE0_0300;
    cpu.gprs.rax = 0x45;
    mmio(&mut hv, d, 1, &mut cpu, &[0x89, 0x03], 0xFEE0_0300, true);
    assert!(cpu.injected.is_empty());
    // vCPU 0 (still x2APIC) has 0x45 in its IRR (vectors 64-95: 0x822).
    assert_eq!(rdmsr(&mut hv, d, 0, &mut cpu, 0x822) & (1 << 5), 1 << 5);
    // The page of an x2APIC vCPU is nothing: all-ones.
    cpu.gprs.rbx = 0xFEE0_0020;
    mmio(&mut hv, d, 0, &mut cpu, &code, 0xFEE0_0020, false);
    assert_eq!(cpu.gprs.rax, 0xFFFF_FFFF);
    // xAPIC -> x2APIC is legal; the ID is back as an MSR.
    wrmsr(&mut hv, d, 1, &mut cpu, 0x1B, 0xFEE0_0C00);
    assert!(cpu.injected.is_empty());
    assert_eq!(rdmsr(&mut hv, d, 1, &mut cpu, 0x802), 2);
}
