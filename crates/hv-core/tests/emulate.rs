//! Unbacked guest-physical accesses on the mock machine: the faulting
//! instruction is fetched through the guest's page tables, decoded and
//! completed against the null MMIO handler (reads all-ones, writes
//! dropped), or turned into the exception the hardware would raise.

use hv_core::arch::{Access, Event, VmExit};
use hv_core::domain::{DomainState, ShutdownReason};
use hv_core::emulate::{Emulation, MmioHandler, NullHandler, emulate_one};
use hv_core::mock::{MockNpt, MockPlatform, MockVcpu};
use hv_core::{DomId, DomainConfig, ExitAction, Gfn, Hypervisor};

/// Guest RAM: 4 MiB from 0.
const RAM: u64 = 4 << 20;
/// Where the test code goes (identity-mapped with 4 KiB pages).
const CODE: u64 = 0x10_0000;
/// An HPET probe address: no RAM, no device.
const HPET: u64 = 0xFED0_0000;
/// A 4 KiB page inside the first 2 MiB left out of the guest tables.
const HOLE_LA: u64 = 0x1F_0000;
/// Linear 2..3 GiB: a read-only 1 GiB page (unbacked behind it).
const RO_LA: u64 = 0x8000_0000;
/// Scratch RAM for string copies.
const DATA: u64 = 0x20_0000;

const CF: u64 = 1 << 0;
const PF: u64 = 1 << 2;
const AF: u64 = 1 << 4;
const ZF: u64 = 1 << 6;
const SF: u64 = 1 << 7;
const OF: u64 = 1 << 11;

struct T {
    hv: Hypervisor<MockPlatform>,
    d: DomId,
}

impl T {
    /// A domain with 4 MiB of RAM and four-level tables at 0x1000: the
    /// first 2 MiB by 4 KiB pages (but HOLE_LA), 2..4 MiB by a 2 MiB page,
    /// 2..3 GiB read-only and 3..4 GiB read-write by 1 GiB pages, all
    /// identity.
    fn new() -> Self {
        let mut hv = Hypervisor::new(MockPlatform::default());
        let d = hv
            .create_domain(
                DomainConfig {
                    domid: None,
                    name: "mmio".into(),
                    privileged: false,
                    vcpus: 1,
                    max_pages: RAM / 4096 + 64,
                },
                Box::new(MockNpt::default()),
            )
            .unwrap();
        hv.populate(d, Gfn(0), RAM / 4096).unwrap();
        let t = T { hv, d };
        let (p, rw, ps) = (1u64, 2u64, 0x80u64);
        t.put_u64(0x1000, 0x2000 | p | rw); // PML4[0]
        t.put_u64(0x2000, 0x3000 | p | rw); // PDPT[0] -> PD
        t.put_u64(0x2000 + 2 * 8, 0x8000_0000 | p | ps); // read-only
        t.put_u64(0x2000 + 3 * 8, 0xC000_0000 | p | rw | ps);
        t.put_u64(0x3000, 0x4000 | p | rw); // PD[0] -> PT
        t.put_u64(0x3000 + 8, 0x20_0000 | p | rw | ps);
        for i in 0..512u64 {
            if i << 12 != HOLE_LA {
                t.put_u64(0x4000 + i * 8, (i << 12) | p | rw);
            }
        }
        t
    }

    fn put_u64(&self, gpa: u64, v: u64) {
        self.put(gpa, &v.to_le_bytes());
    }

    fn put(&self, gpa: u64, b: &[u8]) {
        self.hv.guest_mem(self.d).unwrap().write(gpa, b).unwrap();
    }

    fn get(&self, gpa: u64, n: usize) -> Vec<u8> {
        let mut b = vec![0; n];
        self.hv
            .guest_mem(self.d)
            .unwrap()
            .read(gpa, &mut b)
            .unwrap();
        b
    }

    /// A 64-bit vCPU with paging on (CR0.WP, EFER.NXE) at CODE.
    fn cpu64(&self) -> MockVcpu {
        let mut c = MockVcpu::flat64();
        c.ctl = [0x8001_0011, 0, 0x1000, 0x20, 0xD00, 1];
        c.rip = CODE;
        c
    }

    /// A 32-bit protected-mode vCPU, paging off, at CODE.
    fn cpu32(&self) -> MockVcpu {
        let mut c = MockVcpu::flat64();
        c.long = false;
        c.ctl = [0x11, 0, 0, 0, 0, 1];
        c.rip = CODE;
        c
    }

    /// Puts `code` at RIP and delivers a nested page fault at `gpa`.
    fn npf(&mut self, cpu: &mut MockVcpu, code: &[u8], gpa: u64, write: bool) -> ExitAction {
        self.put(cpu.rip, code);
        let access = Access {
            read: !write,
            write,
            ..Default::default()
        };
        self.hv
            .handle_exit(self.d, 0, cpu, VmExit::NestedPageFault { gpa, access })
    }

    fn crashed(&self) -> bool {
        self.hv.domain(self.d).unwrap().state == DomainState::Shutdown(ShutdownReason::Crash)
    }
}

/// Records MMIO accesses.
#[derive(Default)]
struct Recorder {
    reads: Vec<(u64, usize)>,
    writes: Vec<(u64, Vec<u8>)>,
}

impl MmioHandler for Recorder {
    fn read(&mut self, gpa: u64, buf: &mut [u8]) {
        self.reads.push((gpa, buf.len()));
        buf.fill(0xFF);
    }
    fn write(&mut self, gpa: u64, data: &[u8]) {
        self.writes.push((gpa, data.to_vec()));
    }
}

const RAX0: u64 = 0x1122_3344_5566_7788;

/// Loads of every size: 32-bit zero-extends, 8/16-bit merge, 64-bit
/// replaces; RIP moves by the instruction's length.
#[test]
fn loads_give_all_ones_with_x86_register_semantics() {
    let cases: &[(&[u8], u64)] = &[
        (&[0x8B, 0x03], 0xFFFF_FFFF),                       // mov eax,[rbx]
        (&[0x8A, 0x03], 0x1122_3344_5566_77FF),             // mov al,[rbx]
        (&[0x8A, 0x23], 0x1122_3344_5566_FF88),             // mov ah,[rbx]
        (&[0x66, 0x8B, 0x03], 0x1122_3344_5566_FFFF),       // mov ax,[rbx]
        (&[0x48, 0x8B, 0x03], u64::MAX),                    // mov rax,[rbx]
        (&[0x0F, 0xB6, 0x03], 0xFF),                        // movzx eax,byte [rbx]
        (&[0x0F, 0xB7, 0x03], 0xFFFF),                      // movzx eax,word [rbx]
        (&[0x48, 0x0F, 0xBF, 0x03], u64::MAX),              // movsx rax,word [rbx]
        (&[0x0F, 0xBE, 0x03], 0xFFFF_FFFF),                 // movsx eax,byte [rbx]
        (&[0x66, 0x0F, 0xBE, 0x03], 0x1122_3344_5566_FFFF), // movsx ax,byte [rbx]
        (&[0x48, 0x63, 0x03], u64::MAX),                    // movsxd rax,dword [rbx]
        (&[0x23, 0x03], 0x5566_7788),                       // and eax,[rbx]
        (&[0x48, 0x87, 0x03], u64::MAX),                    // xchg [rbx],rax
    ];
    for (code, want) in cases {
        let mut t = T::new();
        let mut cpu = t.cpu64();
        cpu.gprs.rax = RAX0;
        cpu.gprs.rbx = HPET;
        assert_eq!(t.npf(&mut cpu, code, HPET, false), ExitAction::Resume);
        assert_eq!(cpu.gprs.rax, *want, "{code:x?}");
        assert_eq!(cpu.rip, CODE + code.len() as u64, "{code:x?}");
        assert!(cpu.injected.is_empty(), "{code:x?}");
        assert_eq!(cpu.gprs.rbx, HPET);
        assert!(!t.crashed());
    }
}

#[test]
fn base_index_displacement_and_r8_r15() {
    let t = T::new();
    let mut cpu = t.cpu64();
    // mov r9d,[rbx+rcx*4+0x10]
    cpu.gprs.rbx = HPET;
    cpu.gprs.rcx = 0x40;
    cpu.gprs.r9 = RAX0;
    let mut rec = Recorder::default();
    t.put(CODE, &[0x44, 0x8B, 0x4C, 0x8B, 0x10]);
    let mem = t.hv.guest_mem(t.d).unwrap();
    assert_eq!(emulate_one(&mut cpu, mem, &mut rec), Emulation::Okay);
    assert_eq!(cpu.gprs.r9, 0xFFFF_FFFF);
    assert_eq!(rec.reads, vec![(HPET + 0x110, 4)]);
    assert_eq!(cpu.rip, CODE + 5);
}

#[test]
fn stores_are_dropped_and_leave_registers_alone() {
    let cases: &[(&[u8], Vec<u8>)] = &[
        // mov dword [rbx],0x12345678
        (
            &[0xC7, 0x03, 0x78, 0x56, 0x34, 0x12],
            vec![0x78, 0x56, 0x34, 0x12],
        ),
        // mov [rbx],al / ax / rax
        (&[0x88, 0x03], vec![0x88]),
        (&[0x66, 0x89, 0x03], vec![0x88, 0x77]),
        (&[0x48, 0x89, 0x03], RAX0.to_le_bytes().to_vec()),
        // mov qword [rbx],-2 (imm32 sign-extended)
        (
            &[0x48, 0xC7, 0x03, 0xFE, 0xFF, 0xFF, 0xFF],
            (-2i64).to_le_bytes().to_vec(),
        ),
        // or dword [rbx],4: all-ones read, all-ones written back
        (&[0x83, 0x0B, 0x04], vec![0xFF; 4]),
        // and byte [rbx],0x0F
        (&[0x80, 0x23, 0x0F], vec![0x0F]),
    ];
    for (code, bytes) in cases {
        let mut t = T::new();
        let mut cpu = t.cpu64();
        cpu.gprs.rax = RAX0;
        cpu.gprs.rbx = HPET + 0xF0;
        let before = cpu.gprs;
        t.put(CODE, code);
        let mut rec = Recorder::default();
        let mem = t.hv.guest_mem(t.d).unwrap();
        assert_eq!(
            emulate_one(&mut cpu, mem, &mut rec),
            Emulation::Okay,
            "{code:x?}"
        );
        assert_eq!(rec.writes, vec![(HPET + 0xF0, bytes.clone())], "{code:x?}");
        assert_eq!(cpu.gprs, before, "{code:x?}");
        assert_eq!(cpu.rip, CODE + code.len() as u64);
        // And through the exit path with the null handler.
        let mut cpu = t.cpu64();
        cpu.gprs = before;
        assert_eq!(t.npf(&mut cpu, code, HPET + 0xF0, true), ExitAction::Resume);
        assert_eq!(cpu.gprs, before);
        assert_eq!(cpu.rip, CODE + code.len() as u64);
    }
}

#[test]
fn test_and_cmp_set_flags_as_the_hardware_does() {
    // (code, flags in, flags out)
    let cases: &[(&[u8], u64)] = &[
        // test dword [rbx],1: 1 -> odd parity, not zero
        (&[0xF7, 0x03, 0x01, 0, 0, 0], 0),
        // cmp dword [rbx],-1: equal
        (&[0x83, 0x3B, 0xFF], ZF | PF),
        // cmp byte [rbx],0: 0xFF - 0 = 0xFF, negative, even parity
        (&[0x80, 0x3B, 0x00], SF | PF),
        // cmp eax,[rbx] with eax = 0x55667788: borrow, 0x55667789 has
        // odd parity, a borrow from bit 4
        (&[0x3B, 0x03], CF | AF),
        // test al,[rbx]... is TEST r/m8,r8: test [rbx],al with al = 0x88
        (&[0x84, 0x03], SF | PF),
        // add dword [rbx],1: 0xFFFFFFFF + 1 = 0, carry
        (&[0x83, 0x03, 0x01], CF | ZF | PF | AF),
    ];
    for (code, want) in cases {
        let mut t = T::new();
        let mut cpu = t.cpu64();
        cpu.gprs.rax = RAX0;
        cpu.gprs.rbx = HPET;
        // Every arithmetic flag set before, IF and bit 1 must survive.
        cpu.rflags = 0x202 | CF | PF | AF | ZF | SF | OF;
        assert_eq!(t.npf(&mut cpu, code, HPET, false), ExitAction::Resume);
        assert_eq!(cpu.rflags, 0x202 | want, "{code:x?}: {:#x}", cpu.rflags);
        assert_eq!(cpu.gprs.rax, RAX0, "{code:x?}");
        assert_eq!(cpu.rip, CODE + code.len() as u64);
    }
}

#[test]
fn thirty_two_bit_protected_mode() {
    let mut t = T::new();
    let mut cpu = t.cpu32();
    cpu.gprs.rax = 0x1234;
    // mov eax,[0xFED00000] (moffs)
    assert_eq!(
        t.npf(&mut cpu, &[0xA1, 0x00, 0x00, 0xD0, 0xFE], HPET, false),
        ExitAction::Resume
    );
    assert_eq!(cpu.gprs.rax, 0xFFFF_FFFF);
    assert_eq!(cpu.rip, CODE + 5);
    // mov cx,[ebx+4]: 16-bit merge
    cpu.gprs.rbx = HPET;
    cpu.gprs.rcx = 0xAAAA_0000;
    let at = cpu.rip;
    assert_eq!(
        t.npf(&mut cpu, &[0x66, 0x8B, 0x4B, 0x04], HPET + 4, false),
        ExitAction::Resume
    );
    assert_eq!(cpu.gprs.rcx, 0xAAAA_FFFF);
    assert_eq!(cpu.rip, at + 4);
    // The 32-bit decoder: 0x48 is DEC EAX there, not REX.W; not emulated.
    let mut cpu = t.cpu32();
    assert_eq!(
        t.npf(&mut cpu, &[0x48, 0x8B, 0x03], HPET, false),
        ExitAction::Dead
    );
    assert!(t.crashed());
}

#[test]
fn ram_operands_go_to_ram() {
    // Another vCPU may have populated the page since the fault.
    let mut t = T::new();
    t.put(DATA, &0x1234_5678u32.to_le_bytes());
    let mut cpu = t.cpu64();
    cpu.gprs.rbx = DATA;
    assert_eq!(
        t.npf(&mut cpu, &[0x8B, 0x03], HPET, false),
        ExitAction::Resume
    );
    assert_eq!(cpu.gprs.rax, 0x1234_5678);
}

#[test]
fn rep_stos_and_movs() {
    let mut t = T::new();
    let mut cpu = t.cpu64();
    // rep stosd to the HPET: four writes, RDI and RCX move on.
    cpu.gprs.rax = 0xAABB_CCDD;
    cpu.gprs.rcx = 4;
    cpu.gprs.rdi = HPET;
    let mut rec = Recorder::default();
    t.put(CODE, &[0xF3, 0xAB]);
    let mem = t.hv.guest_mem(t.d).unwrap();
    assert_eq!(emulate_one(&mut cpu, mem, &mut rec), Emulation::Okay);
    assert_eq!(rec.writes.len(), 4);
    assert_eq!(rec.writes[3], (HPET + 12, vec![0xDD, 0xCC, 0xBB, 0xAA]));
    assert_eq!(
        (cpu.gprs.rcx, cpu.gprs.rdi, cpu.rip),
        (0, HPET + 16, CODE + 2)
    );

    // rep movsb from the HPET into RAM: all-ones copied.
    let mut cpu = t.cpu64();
    cpu.gprs.rcx = 8;
    cpu.gprs.rsi = HPET;
    cpu.gprs.rdi = DATA;
    assert_eq!(
        t.npf(&mut cpu, &[0xF3, 0xA4], HPET, false),
        ExitAction::Resume
    );
    assert_eq!(
        t.get(DATA, 9),
        [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0]
    );
    assert_eq!((cpu.gprs.rcx, cpu.gprs.rsi), (0, HPET + 8));

    // Backwards (DF), one element without REP: movsw.
    let mut cpu = t.cpu64();
    cpu.rflags |= 1 << 10;
    cpu.gprs.rsi = DATA + 0x100;
    cpu.gprs.rdi = HPET + 2;
    cpu.gprs.rcx = 77;
    assert_eq!(
        t.npf(&mut cpu, &[0x66, 0xA5], HPET, true),
        ExitAction::Resume
    );
    assert_eq!(
        (cpu.gprs.rsi, cpu.gprs.rdi, cpu.gprs.rcx),
        (DATA + 0xFE, HPET, 77)
    );

    // A long REP is done in slices: RIP stays until RCX reaches 0.
    let mut cpu = t.cpu64();
    cpu.gprs.rcx = 5000;
    cpu.gprs.rdi = HPET;
    assert_eq!(
        t.npf(&mut cpu, &[0xF3, 0xAA], HPET, true),
        ExitAction::Resume
    );
    assert_eq!((cpu.rip, cpu.gprs.rcx), (CODE, 5000 - 4096));
    assert_eq!(
        t.npf(&mut cpu, &[0xF3, 0xAA], HPET, true),
        ExitAction::Resume
    );
    assert_eq!(
        (cpu.rip, cpu.gprs.rcx, cpu.gprs.rdi),
        (CODE + 2, 0, HPET + 5000)
    );
}

#[test]
fn fetch_fault_is_a_guest_page_fault() {
    let mut t = T::new();
    // RIP in the page left out of the tables.
    let mut cpu = t.cpu64();
    cpu.rip = HOLE_LA + 0x10;
    assert_eq!(
        t.hv.handle_exit(
            t.d,
            0,
            &mut cpu,
            VmExit::NestedPageFault {
                gpa: HPET,
                access: Access::default()
            }
        ),
        ExitAction::Resume
    );
    // Not present, instruction fetch (EFER.NXE), supervisor.
    assert_eq!(
        cpu.injected,
        vec![Event::Exception {
            vector: 14,
            error_code: Some(0x10)
        }]
    );
    assert_eq!(cpu.ctl[1], HOLE_LA + 0x10, "CR2");
    assert_eq!(cpu.rip, HOLE_LA + 0x10);
    assert!(!t.crashed());

    // An instruction crossing into the hole: CR2 is the hole's first byte.
    let mut cpu = t.cpu64();
    cpu.rip = HOLE_LA - 2;
    cpu.cpl = 3;
    assert_eq!(
        t.npf(&mut cpu, &[0x48, 0x8B], HPET, false),
        ExitAction::Resume
    );
    assert_eq!(
        cpu.injected,
        vec![Event::Exception {
            vector: 14,
            error_code: Some(0x14)
        }]
    );
    assert_eq!(cpu.ctl[1], HOLE_LA);
    assert_eq!(cpu.rip, HOLE_LA - 2);
}

#[test]
fn operand_faults_are_guest_exceptions() {
    // (rbx, code, exception, CR2)
    let cases: &[(u64, &[u8], u8, Option<u32>)] = &[
        // Read of an unmapped linear page: #PF, not present.
        (HOLE_LA + 8, &[0x8B, 0x03], 14, Some(0)),
        // Write through a read-only entry with CR0.WP: #PF, P|W.
        (RO_LA, &[0x89, 0x03], 14, Some(3)),
        // Non-canonical: #GP(0).
        (0x0000_8000_0000_0000, &[0x8B, 0x03], 13, Some(0)),
    ];
    for &(rbx, code, vector, error_code) in cases {
        let mut t = T::new();
        let mut cpu = t.cpu64();
        cpu.gprs.rbx = rbx;
        cpu.gprs.rax = RAX0;
        assert_eq!(t.npf(&mut cpu, code, HPET, false), ExitAction::Resume);
        assert_eq!(cpu.injected, vec![Event::Exception { vector, error_code }]);
        assert_eq!(cpu.rip, CODE, "RIP stays at the faulting instruction");
        assert_eq!(cpu.gprs.rax, RAX0);
        if vector == 14 {
            assert_eq!(cpu.ctl[1], rbx, "CR2");
        }
    }
    // A write straddling into the hole writes nothing.
    let t = T::new();
    let mut cpu = t.cpu64();
    cpu.gprs.rbx = HOLE_LA - 2;
    cpu.gprs.rax = RAX0;
    let mut rec = Recorder::default();
    t.put(CODE, &[0x89, 0x03]);
    let mem = t.hv.guest_mem(t.d).unwrap();
    assert!(matches!(
        emulate_one(&mut cpu, mem, &mut rec),
        Emulation::Exception(_)
    ));
    assert_eq!(t.get(HOLE_LA - 2, 2), [0, 0]);
    assert_eq!(cpu.ctl[1], HOLE_LA);
}

#[test]
fn forms_not_emulated_crash_the_domain() {
    let cases: &[&[u8]] = &[
        &[0x0F, 0xBA, 0x23, 0x01], // bt dword [rbx],1
        &[0xFF, 0x33],             // push qword [rbx]
        &[0xA7],                   // cmpsd
        &[0x65, 0x8B, 0x03],       // mov eax,gs:[rbx]
        &[0x0F, 0x10, 0x03],       // movups xmm0,[rbx]
        &[0xC5, 0xF8, 0x10, 0x03], // vmovups xmm0,[rbx] (VEX not decoded)
        &[0x0F, 0x0B],             // ud2
        &[0xF2, 0x0F, 0x11, 0x03], // movsd [rbx],xmm0 (SSE2, not the string op)
    ];
    for code in cases {
        let mut t = T::new();
        let mut cpu = t.cpu64();
        cpu.gprs.rbx = HPET;
        cpu.gprs.rsi = HPET;
        assert_eq!(
            t.npf(&mut cpu, code, HPET, false),
            ExitAction::Dead,
            "{code:x?}"
        );
        assert!(t.crashed(), "{code:x?}");
        assert!(cpu.injected.is_empty());
    }
    // Real mode.
    let mut t = T::new();
    let mut cpu = t.cpu32();
    cpu.ctl[0] = 0x10;
    assert_eq!(
        t.npf(&mut cpu, &[0x8B, 0x03], HPET, false),
        ExitAction::Dead
    );
    // A fetch from a hole and a permission fault stay fatal.
    for access in [
        Access {
            exec: true,
            ..Default::default()
        },
        Access {
            write: true,
            present: true,
            ..Default::default()
        },
    ] {
        let mut t = T::new();
        let mut cpu = t.cpu64();
        assert_eq!(
            t.hv.handle_exit(
                t.d,
                0,
                &mut cpu,
                VmExit::NestedPageFault { gpa: HPET, access }
            ),
            ExitAction::Dead
        );
        assert!(t.crashed());
    }
}

#[test]
fn null_handler_reads_all_ones() {
    let mut b = [0u8; 3];
    NullHandler.read(HPET, &mut b);
    assert_eq!(b, [0xFF; 3]);
}

/// A read-modify-write case: code, RAX, CF in, RAX out, flags out, bytes
/// written.
type RmwCase = (&'static [u8], u64, bool, u64, u64, Vec<u8>);

#[test]
fn read_modify_write_forms() {
    let cases: &[RmwCase] = &[
        // inc dword [rbx]: wraps to 0, CF kept
        (
            &[0xFF, 0x03],
            RAX0,
            true,
            RAX0,
            CF | ZF | PF | AF,
            vec![0; 4],
        ),
        // dec byte [rbx]: 0xFE, CF kept clear
        (&[0xFE, 0x0B], RAX0, false, RAX0, SF, vec![0xFE]),
        // neg word [rbx]: 0 - 0xFFFF = 1, CF
        (&[0x66, 0xF7, 0x1B], RAX0, false, RAX0, CF | AF, vec![1, 0]),
        // not qword [rbx]: 0, no flag changes (CF stays set)
        (&[0x48, 0xF7, 0x13], RAX0, true, RAX0, CF, vec![0; 8]),
        // lock or dword [rbx],1
        (
            &[0xF0, 0x83, 0x0B, 0x01],
            RAX0,
            false,
            RAX0,
            SF | PF,
            vec![0xFF; 4],
        ),
        // cmpxchg [rbx],ecx with EAX = all-ones: equal, ECX stored, RAX kept
        (
            &[0x0F, 0xB1, 0x0B],
            0x1122_3344_FFFF_FFFF,
            false,
            0x1122_3344_FFFF_FFFF,
            ZF | PF,
            vec![0x78, 0x56, 0x34, 0x12],
        ),
        // cmpxchg [rbx],ecx with EAX = 5: not equal, EAX loaded
        (
            &[0x0F, 0xB1, 0x0B],
            0x1122_3344_0000_0005,
            false,
            0xFFFF_FFFF,
            CF | PF | AF,
            vec![0xFF; 4],
        ),
    ];
    for (code, rax, cf, rax_out, flags, bytes) in cases {
        let t = T::new();
        let mut cpu = t.cpu64();
        cpu.gprs.rax = *rax;
        cpu.gprs.rbx = HPET;
        cpu.gprs.rcx = 0x1234_5678;
        cpu.rflags = 0x202 | if *cf { CF } else { 0 };
        t.put(CODE, code);
        let mut rec = Recorder::default();
        let mem = t.hv.guest_mem(t.d).unwrap();
        assert_eq!(
            emulate_one(&mut cpu, mem, &mut rec),
            Emulation::Okay,
            "{code:x?}"
        );
        assert_eq!(cpu.gprs.rax, *rax_out, "{code:x?}");
        assert_eq!(cpu.rflags, 0x202 | flags, "{code:x?}: {:#x}", cpu.rflags);
        assert_eq!(rec.writes, vec![(HPET, bytes.clone())], "{code:x?}");
        assert_eq!(rec.reads.len(), 1, "{code:x?}");
        assert_eq!(cpu.rip, CODE + code.len() as u64);
    }
}

#[test]
fn adc_and_sbb_use_the_carry() {
    // (code, EAX in, RAX out, flags out), CF set before.
    let cases: &[(&[u8], u64, u64, u64)] = &[
        // adc eax,[rbx]: 1 + 0xFFFFFFFF + 1 = 1, carry
        (&[0x13, 0x03], 1, 1, CF | AF),
        // sbb eax,[rbx]: 0 - 0xFFFFFFFF - 1 = 0, borrow
        (&[0x1B, 0x03], 0, 0, CF | ZF | PF | AF),
    ];
    for (code, rax, want, flags) in cases {
        let mut t = T::new();
        let mut cpu = t.cpu64();
        cpu.gprs.rax = *rax;
        cpu.gprs.rbx = HPET;
        cpu.rflags = 0x202 | CF;
        assert_eq!(t.npf(&mut cpu, code, HPET, false), ExitAction::Resume);
        assert_eq!(cpu.gprs.rax, *want, "{code:x?}");
        assert_eq!(cpu.rflags, 0x202 | flags, "{code:x?}: {:#x}", cpu.rflags);
    }
}

#[test]
fn lods_and_32_bit_string_addressing() {
    // rep lodsd: EAX all-ones (zero-extended), RSI moved, three reads.
    let t = T::new();
    let mut cpu = t.cpu64();
    cpu.gprs.rax = RAX0;
    cpu.gprs.rcx = 3;
    cpu.gprs.rsi = HPET;
    let mut rec = Recorder::default();
    t.put(CODE, &[0xF3, 0xAD]);
    let mem = t.hv.guest_mem(t.d).unwrap();
    assert_eq!(emulate_one(&mut cpu, mem, &mut rec), Emulation::Okay);
    assert_eq!(
        (cpu.gprs.rax, cpu.gprs.rsi, cpu.gprs.rcx),
        (0xFFFF_FFFF, HPET + 12, 0)
    );
    assert_eq!(rec.reads, vec![(HPET, 4), (HPET + 4, 4), (HPET + 8, 4)]);

    // addr32 rep stosb in 64-bit mode: EDI/ECX count, and writing them
    // zero-extends RDI and RCX.
    let mut cpu = t.cpu64();
    cpu.gprs.rdi = 0xAAAA_BBBB_0000_0000 | HPET;
    cpu.gprs.rcx = 0xFFFF_FFFF_0000_0002;
    let mut rec = Recorder::default();
    t.put(CODE, &[0x67, 0xF3, 0xAA]);
    let mem = t.hv.guest_mem(t.d).unwrap();
    assert_eq!(emulate_one(&mut cpu, mem, &mut rec), Emulation::Okay);
    assert_eq!(rec.writes.len(), 2);
    assert_eq!(rec.writes[0].0, HPET);
    assert_eq!((cpu.gprs.rdi, cpu.gprs.rcx), (HPET + 2, 0));
}

/// Lazily zeroed RAM (p2m.rs): the first touch is a nested page fault that
/// maps the block and retries the access, never the MMIO path; a second
/// vCPU's fault on the block it mapped meanwhile is stale and retried too;
/// a hole stays a hole.
#[test]
fn first_touch_of_lazy_ram_maps_it_and_retries() {
    let mut t = T::new();
    const BLOCK: u64 = 0x40_0000; // gfn 0x400, above the 4 MiB of RAM
    t.hv.domain_mut(t.d).unwrap().max_pages += 512;
    t.hv.populate_block(t.d, Gfn(BLOCK >> 12), [u64::MAX; 8])
        .unwrap();
    assert!(t.hv.is_lazy(t.d, BLOCK + 0x1234));
    assert!(!t.hv.npt_maps(t.d, BLOCK + 0x1234));
    let mut cpu = t.cpu64();
    let rip = cpu.rip;
    let access = Access {
        write: true,
        ..Default::default()
    };
    let exit = VmExit::NestedPageFault {
        gpa: BLOCK + 0x1234,
        access,
    };
    assert_eq!(t.hv.handle_exit(t.d, 0, &mut cpu, exit), ExitAction::Resume);
    assert_eq!(cpu.rip, rip, "the access is retried, not emulated");
    assert!(!t.hv.is_lazy(t.d, BLOCK + 0x1F_F000));
    assert!(t.hv.npt_maps(t.d, BLOCK + 0x1F_F000));
    assert_eq!(t.get(BLOCK + 0x1F_F000, 8), vec![0; 8]);
    // Another vCPU's fault on the same block, handled after: stale.
    let exit = VmExit::NestedPageFault {
        gpa: BLOCK + 0x10_0000,
        access,
    };
    assert_eq!(t.hv.handle_exit(t.d, 0, &mut cpu, exit), ExitAction::Resume);
    assert_eq!(cpu.rip, rip);
    assert!(!t.crashed());
}
