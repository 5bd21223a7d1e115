//! Guest writes to CR0, CR4, EFER and XCR0 on the mock machine: checked
//! against the CPU model the guest's CPUID offers; illegal values raise
//! `#GP(0)` (or `#UD`) at the instruction, RIP unmoved, nothing loaded;
//! legal ones are loaded and the instruction skipped. Without the source
//! register in the exit (SVM without DecodeAssists, `CLTS`, `LMSW`) the
//! instruction is decoded at RIP.

use hv_core::arch::{Event, VmExit};
use hv_core::domain::{DomainState, ShutdownReason};
use hv_core::guest_state::{GP0, UD, cr0, cr4, efer};
use hv_core::mock::{MockNpt, MockPlatform, MockVcpu};
use hv_core::{DomId, DomainConfig, ExitAction, Gfn, Hypervisor};

/// Guest RAM: 4 MiB from 0.
const RAM: u64 = 4 << 20;
/// Where the test code goes.
const CODE: u64 = 0x10_0000;

struct T {
    hv: Hypervisor<MockPlatform>,
    d: DomId,
}

impl T {
    /// A domain on a machine lacking the CPUID bits `clear`, with
    /// identity page tables at 0x1000 (2 MiB pages over the first GiB).
    fn new(clear: &[(u32, usize, u32)]) -> Self {
        let mut platform = MockPlatform::default();
        platform.cpuid_clear = clear.to_vec();
        let mut hv = Hypervisor::new(platform);
        let d = hv
            .create_domain(
                DomainConfig {
                    domid: None,
                    name: "cr".into(),
                    privileged: false,
                    vcpus: 1,
                    max_pages: RAM / 4096 + 64,
                },
                Box::new(MockNpt::default()),
            )
            .unwrap();
        hv.populate(d, Gfn(0), RAM / 4096).unwrap();
        let t = T { hv, d };
        t.put(0x1000, &(0x2000u64 | 3).to_le_bytes());
        t.put(0x2000, &(0x3000u64 | 3).to_le_bytes());
        for i in 0..512u64 {
            t.put(0x3000 + i * 8, &((i << 21) | 0x83).to_le_bytes());
        }
        t
    }

    fn put(&self, gpa: u64, b: &[u8]) {
        self.hv.guest_mem(self.d).unwrap().write(gpa, b).unwrap();
    }

    /// 64-bit kernel code with paging (PE, PG, WP, ET; PAE; LME, LMA).
    fn cpu64(&self) -> MockVcpu {
        let mut c = MockVcpu::flat64();
        c.ctl = [
            cr0::PE | cr0::ET | cr0::WP | cr0::PG,
            0,
            0x1000,
            cr4::PAE,
            efer::LME | efer::LMA,
            1,
        ];
        c.rip = CODE;
        c
    }

    /// 32-bit protected mode without paging (the PVH entry state).
    fn cpu32(&self) -> MockVcpu {
        let mut c = MockVcpu::flat64();
        c.long = false;
        c.ctl = [cr0::PE | cr0::ET, 0, 0x1000, 0, 0, 1];
        c.rip = CODE;
        c
    }

    fn exit(&mut self, cpu: &mut MockVcpu, e: VmExit) -> ExitAction {
        self.hv.handle_exit(self.d, 0, cpu, e)
    }

    /// A CR write exit with the source register reported (`gpr`) or not.
    fn cr(&mut self, cpu: &mut MockVcpu, cr: u8, gpr: Option<u8>) -> ExitAction {
        self.exit(
            cpu,
            VmExit::CrAccess {
                cr,
                write: true,
                gpr,
            },
        )
    }

    fn crashed(&self) -> bool {
        self.hv.domain(self.d).unwrap().state == DomainState::Shutdown(ShutdownReason::Crash)
    }
}

/// CPUID.7.0:ECX.UMIP.
const NO_UMIP: (u32, usize, u32) = (7, 2, 1 << 2);
/// CPUID.7.0:EBX.SMEP.
const NO_SMEP: (u32, usize, u32) = (7, 1, 1 << 7);
/// CPUID.1:ECX.XSAVE.
const NO_XSAVE: (u32, usize, u32) = (1, 2, 1 << 26);
/// CPUID.80000001:EDX.NX.
const NO_NX: (u32, usize, u32) = (0x8000_0001, 3, 1 << 20);

#[test]
fn cr4_bits_the_cpu_model_lacks_fault_at_the_instruction() {
    for (clear, bit) in [(NO_UMIP, cr4::UMIP), (NO_SMEP, cr4::SMEP)] {
        // Reported register (VMX, DecodeAssists).
        let mut t = T::new(&[clear]);
        let mut cpu = t.cpu64();
        cpu.gprs.rax = cr4::PAE | bit;
        assert_eq!(t.cr(&mut cpu, 4, Some(0)), ExitAction::Resume);
        assert_eq!(cpu.injected, vec![GP0], "{bit:#x}");
        assert_eq!(cpu.rip, CODE);
        assert_eq!(cpu.ctl[3], cr4::PAE);
        // Decoded: mov cr4, rax.
        let mut cpu = t.cpu64();
        cpu.gprs.rax = cr4::PAE | bit;
        t.put(CODE, &[0x0F, 0x22, 0xE0]);
        assert_eq!(t.cr(&mut cpu, 4, None), ExitAction::Resume);
        assert_eq!(cpu.injected, vec![GP0]);
        assert_eq!(cpu.rip, CODE);
        assert_eq!(cpu.ctl[3], cr4::PAE);
        assert!(!t.crashed());
        // Offered: loaded, skipped.
        let mut t = T::new(&[]);
        let mut cpu = t.cpu64();
        cpu.gprs.rax = cr4::PAE | bit;
        assert_eq!(t.cr(&mut cpu, 4, Some(0)), ExitAction::Resume);
        assert!(cpu.injected.is_empty());
        assert_eq!(cpu.ctl[3], cr4::PAE | bit);
        assert_eq!(cpu.rip, CODE + 3);
        let mut cpu = t.cpu64();
        cpu.gprs.r9 = cr4::PAE | bit;
        t.put(CODE, &[0x41, 0x0F, 0x22, 0xE1]); // mov cr4, r9
        assert_eq!(t.cr(&mut cpu, 4, None), ExitAction::Resume);
        assert!(cpu.injected.is_empty());
        assert_eq!(cpu.ctl[3], cr4::PAE | bit);
        assert_eq!(cpu.rip, CODE + 4);
    }
}

#[test]
fn cr4_bits_never_offered() {
    // LA57, VMXE (the policy hides VMX), PKE (it hides PKU), OSXSAVE on
    // a host without XSAVE.
    for bit in [cr4::LA57, cr4::VMXE, cr4::OSXSAVE, cr4::PKE, 1 << 15] {
        let mut t = T::new(&[NO_XSAVE]);
        let mut cpu = t.cpu64();
        cpu.gprs.rcx = cr4::PAE | bit;
        assert_eq!(t.cr(&mut cpu, 4, Some(1)), ExitAction::Resume);
        assert_eq!(cpu.injected, vec![GP0], "{bit:#x}");
        assert_eq!(cpu.ctl[3], cr4::PAE);
    }
}

#[test]
fn entering_long_mode_by_decoded_cr0_write_sets_lma() {
    let mut t = T::new(&[]);
    let mut cpu = t.cpu32();
    cpu.ctl[3] = cr4::PAE;
    cpu.ctl[4] = efer::LME;
    cpu.gprs.rax = 0xFFFF_FFFF_0000_0000 | cr0::PE | cr0::PG | cr0::ET;
    t.put(CODE, &[0x0F, 0x22, 0xC0]); // mov cr0, eax
    assert_eq!(t.cr(&mut cpu, 0, None), ExitAction::Resume);
    assert!(cpu.injected.is_empty());
    assert_eq!(cpu.ctl[0], cr0::PE | cr0::PG | cr0::ET);
    assert_eq!(cpu.ctl[4], efer::LME | efer::LMA);
    assert_eq!(cpu.rip, CODE + 3);
    // Without PAE: #GP, nothing changes.
    let mut cpu = t.cpu32();
    cpu.ctl[4] = efer::LME;
    cpu.gprs.rax = cr0::PE | cr0::PG;
    assert_eq!(t.cr(&mut cpu, 0, None), ExitAction::Resume);
    assert_eq!(cpu.injected, vec![GP0]);
    assert_eq!(cpu.ctl[0], cr0::PE | cr0::ET);
    assert_eq!(cpu.ctl[4], efer::LME);
    assert_eq!(cpu.rip, CODE);
}

#[test]
fn cr0_rules_reach_the_guest() {
    let mut t = T::new(&[]);
    // NW without CD.
    let mut cpu = t.cpu64();
    cpu.gprs.rdx = cpu.ctl[0] | cr0::NW;
    assert_eq!(t.cr(&mut cpu, 0, Some(2)), ExitAction::Resume);
    assert_eq!(cpu.injected, vec![GP0]);
    // Paging off in 64-bit code.
    let mut cpu = t.cpu64();
    cpu.gprs.rdx = cr0::PE;
    assert_eq!(t.cr(&mut cpu, 0, Some(2)), ExitAction::Resume);
    assert_eq!(cpu.injected, vec![GP0]);
    assert_eq!(cpu.ctl[0] & cr0::PG, cr0::PG);
}

#[test]
fn clts_and_lmsw_are_decoded() {
    let mut t = T::new(&[]);
    let mut cpu = t.cpu64();
    cpu.ctl[0] |= cr0::TS;
    t.put(CODE, &[0x0F, 0x06]); // clts
    assert_eq!(t.cr(&mut cpu, 0, None), ExitAction::Resume);
    assert_eq!(cpu.ctl[0] & cr0::TS, 0);
    assert_eq!(cpu.rip, CODE + 2);
    // lmsw ax: sets MP and TS, cannot clear PE.
    let mut cpu = t.cpu64();
    cpu.gprs.rax = 0xA;
    t.put(CODE, &[0x0F, 0x01, 0xF0]);
    assert_eq!(t.cr(&mut cpu, 0, None), ExitAction::Resume);
    assert!(cpu.injected.is_empty());
    assert_eq!(
        cpu.ctl[0],
        cr0::PE | cr0::MP | cr0::TS | cr0::ET | cr0::WP | cr0::PG
    );
    assert_eq!(cpu.rip, CODE + 3);
    // lmsw [rbx] with a word from memory.
    let mut cpu = t.cpu64();
    cpu.gprs.rbx = 0x20_0000;
    t.put(0x20_0000, &[0x02, 0x00]);
    t.put(CODE, &[0x0F, 0x01, 0x33]);
    assert_eq!(t.cr(&mut cpu, 0, None), ExitAction::Resume);
    assert_eq!(cpu.ctl[0] & 0xF, cr0::PE | cr0::MP);
    assert_eq!(cpu.rip, CODE + 3);
}

#[test]
fn undecodable_cr_write_crashes_only_the_domain() {
    let mut t = T::new(&[]);
    let mut cpu = t.cpu64();
    // Not a CR4 write at RIP (a NOP): nothing to emulate.
    t.put(CODE, &[0x90, 0x90, 0x90]);
    assert_eq!(t.cr(&mut cpu, 4, None), ExitAction::Dead);
    assert!(t.crashed());
}

#[test]
fn efer_writes_follow_cpuid() {
    let wrmsr = |value| VmExit::MsrWrite {
        msr: 0xC000_0080,
        value,
    };
    let mut t = T::new(&[NO_NX]);
    let mut cpu = t.cpu64();
    // NXE without NX, SVME (never offered), a reserved bit.
    for v in [efer::NXE, efer::SVME, 1 << 2] {
        cpu.injected.clear();
        assert_eq!(t.exit(&mut cpu, wrmsr(efer::LME | v)), ExitAction::Resume);
        assert_eq!(cpu.injected, vec![GP0], "{v:#x}");
        assert_eq!(cpu.ctl[4], efer::LME | efer::LMA);
        assert_eq!(cpu.rip, CODE);
    }
    // SCE is offered; the written LMA (clear here) is ignored.
    cpu.injected.clear();
    assert_eq!(
        t.exit(&mut cpu, wrmsr(efer::LME | efer::SCE)),
        ExitAction::Resume
    );
    assert!(cpu.injected.is_empty());
    assert_eq!(cpu.ctl[4], efer::LME | efer::LMA | efer::SCE);
    // LME cannot go while paging is on.
    assert_eq!(t.exit(&mut cpu, wrmsr(efer::SCE)), ExitAction::Resume);
    assert_eq!(cpu.injected, vec![GP0]);
}

#[test]
fn xsetbv_without_osxsave_is_ud_and_bad_values_gp() {
    // A host without XSAVE: the guest gets none, CR4.OSXSAVE is refused,
    // XSETBV is #UD, and with OSXSAVE forced on every value is #GP.
    let mut t = T::new(&[NO_XSAVE]);
    let mut cpu = t.cpu64();
    cpu.gprs.rax = 1;
    assert_eq!(t.exit(&mut cpu, VmExit::Xsetbv), ExitAction::Resume);
    assert_eq!(cpu.injected, vec![UD]);
    let mut cpu = t.cpu64();
    cpu.ctl[3] |= cr4::OSXSAVE;
    for v in [0u64, 1, 3, 5, 7] {
        cpu.injected.clear();
        cpu.gprs.rax = v;
        assert_eq!(t.exit(&mut cpu, VmExit::Xsetbv), ExitAction::Resume);
        assert_eq!(
            cpu.injected,
            vec![Event::Exception {
                vector: 13,
                error_code: Some(0)
            }],
            "{v:#x}"
        );
        assert_eq!(cpu.ctl[5], 1);
    }
}

/// CPUID `leaf`.`sub` as the guest on `cpu` sees it.
fn guest_cpuid(t: &mut T, cpu: &mut MockVcpu, leaf: u32, sub: u32) -> [u32; 4] {
    cpu.gprs.rax = u64::from(leaf);
    cpu.gprs.rcx = u64::from(sub);
    t.exit(cpu, VmExit::Cpuid);
    let g = cpu.gprs;
    [g.rax as u32, g.rbx as u32, g.rcx as u32, g.rdx as u32]
}

#[test]
fn xsave_offered_with_x87_sse_avx() {
    let mut t = T::new(&[]);
    let mut cpu = t.cpu64();
    // Leaf 1: XSAVE and AVX; OSXSAVE follows the guest's CR4.
    let l1 = guest_cpuid(&mut t, &mut cpu, 1, 0);
    assert_eq!(l1[2] & (0x7 << 26), (1 << 26) | (1 << 28));
    // Leaf 0xD: x87 | SSE | AVX, 832 bytes for all, 576 for XCR0 = x87.
    assert_eq!(guest_cpuid(&mut t, &mut cpu, 0xD, 0), [0x7, 576, 832, 0]);
    assert_eq!(guest_cpuid(&mut t, &mut cpu, 0xD, 1), [0x1, 576, 0, 0]);
    assert_eq!(guest_cpuid(&mut t, &mut cpu, 0xD, 2), [256, 576, 0, 0]);
    // Set OSXSAVE (offered now), then XCR0.
    cpu.rip = CODE;
    cpu.gprs.rax = cr4::PAE | cr4::OSXSAVE;
    assert_eq!(t.cr(&mut cpu, 4, Some(0)), ExitAction::Resume);
    assert!(cpu.injected.is_empty());
    assert_ne!(guest_cpuid(&mut t, &mut cpu, 1, 0)[2] & (1 << 27), 0);
    for bad in [0u64, 2, 5, 1 | (1 << 9), 0xE7] {
        cpu.gprs.rax = bad;
        cpu.gprs.rcx = 0;
        cpu.gprs.rdx = 0;
        cpu.injected.clear();
        assert_eq!(t.exit(&mut cpu, VmExit::Xsetbv), ExitAction::Resume);
        assert_eq!(cpu.injected, vec![GP0], "{bad:#x}");
        assert_eq!(cpu.ctl[5], 1);
    }
    cpu.injected.clear();
    cpu.gprs.rax = 7;
    cpu.gprs.rcx = 0;
    cpu.gprs.rdx = 0;
    assert_eq!(t.exit(&mut cpu, VmExit::Xsetbv), ExitAction::Resume);
    assert!(cpu.injected.is_empty());
    assert_eq!(cpu.ctl[5], 7);
    assert_eq!(guest_cpuid(&mut t, &mut cpu, 0xD, 0)[1], 832);
    assert_eq!(guest_cpuid(&mut t, &mut cpu, 0xD, 1)[1], 832);
}

#[test]
fn real_mode_trampoline_writes_are_decoded_at_cs_base() {
    // An AP's SIPI trampoline at 0x99000: CS.base 0x99000, IP 0x30.
    let mut t = T::new(&[]);
    let mut cpu = t.cpu32();
    cpu.ctl[0] = cr0::ET;
    cpu.cs_base = 0x9_9000;
    cpu.rip = 0x30;
    cpu.gprs.rax = 0xFFFF_0000 | cr0::PE;
    t.put(0x9_9030, &[0x0F, 0x01, 0xF0]); // lmsw ax
    assert_eq!(t.cr(&mut cpu, 0, None), ExitAction::Resume);
    assert!(cpu.injected.is_empty());
    assert_eq!(cpu.ctl[0], cr0::PE | cr0::ET);
    assert_eq!(cpu.rip, 0x33);
    // mov cr0, eax in 16-bit code (no operand-size prefix needed).
    let mut cpu = t.cpu32();
    cpu.ctl[0] = cr0::ET;
    cpu.cs_base = 0x9_9000;
    cpu.rip = 0x40;
    cpu.gprs.rax = cr0::PE | cr0::ET;
    t.put(0x9_9040, &[0x0F, 0x22, 0xC0]);
    assert_eq!(t.cr(&mut cpu, 0, None), ExitAction::Resume);
    assert_eq!(cpu.ctl[0], cr0::PE | cr0::ET);
    assert_eq!(cpu.rip, 0x43);
    assert!(!t.crashed());
}

#[test]
fn legacy_pae_paging_loads_the_pdptes() {
    let mut t = T::new(&[]);
    // PDPT at 0x5000 (CR3 bits 4:0 ignored): two present entries.
    let pdpt = [0x6001u64, 0x7001, 0, 0];
    for (i, e) in pdpt.iter().enumerate() {
        t.put(0x5000 + 8 * i as u64, &e.to_le_bytes());
    }
    let mut cpu = t.cpu32();
    cpu.ctl[2] = 0x5008;
    cpu.ctl[3] = cr4::PAE;
    cpu.gprs.rax = cr0::PE | cr0::PG;
    assert_eq!(t.cr(&mut cpu, 0, Some(0)), ExitAction::Resume);
    assert!(cpu.injected.is_empty());
    assert_eq!(cpu.pdptes, Some(pdpt));
    assert_eq!(cpu.ctl[4] & efer::LMA, 0, "not long mode");
    // A present entry with a reserved bit: #GP, nothing loaded.
    t.put(0x5008, &(0x7001u64 | (1 << 5)).to_le_bytes());
    let mut cpu = t.cpu32();
    cpu.ctl[2] = 0x5000;
    cpu.ctl[3] = cr4::PAE;
    cpu.gprs.rax = cr0::PE | cr0::PG;
    assert_eq!(t.cr(&mut cpu, 0, Some(0)), ExitAction::Resume);
    assert_eq!(cpu.injected, vec![GP0]);
    assert_eq!(cpu.pdptes, None);
    assert_eq!(cpu.ctl[0] & cr0::PG, 0);
    // Long mode has no PDPTEs to load.
    let mut cpu = t.cpu32();
    cpu.ctl[3] = cr4::PAE;
    cpu.ctl[4] = efer::LME;
    cpu.gprs.rax = cr0::PE | cr0::PG;
    assert_eq!(t.cr(&mut cpu, 0, Some(0)), ExitAction::Resume);
    assert!(cpu.injected.is_empty());
    assert_eq!(cpu.pdptes, None);
}
