//! The MMIO instruction emulator against arbitrary instruction bytes,
//! registers and guest page tables.
//!
//! Each input builds a mock machine with one domain (2 MiB of RAM), fills
//! part of its memory with fuzz bytes (which may serve as page tables and
//! as data), puts fuzz instruction bytes at RIP (often in RAM, sometimes
//! anywhere) and runs the emulator through a nested-page-fault exit and
//! directly against a recording MMIO handler.
//!
//! Then, against a model: a MOV/MOVZX/MOVSX/MOVSXD load or MOV store
//! encoded from fuzz fields (prefixes, REX bits, ModRM register and base,
//! 8-bit displacement) at an unbacked address in 64-bit mode must give
//! the register value the model computes from x86's rules (8/16-bit
//! destinations merge, AH..BH without REX, 32-bit zero-extends, sign or
//! zero extension), change no other register, write exactly the model's
//! bytes for a store, and move RIP by the encoded length.
//!
//! Checked: nothing panics (including the mock's frame assertions); every
//! MMIO access is 1 to 8 bytes at an address with no frame behind it, and
//! never crosses a page; on `Okay` RIP moved by 1 to 15 bytes (the
//! instruction's length, wrapped to 32 bits outside 64-bit mode) and
//! nothing was injected; on `Retry` and `Unhandleable` RIP did not move and
//! nothing was injected; on `Exception` RIP did not move and exactly one
//! `#GP(0)` or `#PF` was injected, the latter with CR2 set; RFLAGS bits
//! other than CF, PF, AF, ZF, SF and OF never change; no frame is
//! allocated or freed.
#![no_main]

use arbitrary::Arbitrary;
use hv_core::arch::{Access, Event, Gprs, VmExit};
use hv_core::emulate::{Emulation, MmioHandler, emulate_one};
use hv_core::mock::{MockNpt, MockPlatform, MockVcpu};
use hv_core::{DomainConfig, Gfn, Hypervisor};
use libfuzzer_sys::fuzz_target;

const RAM_PAGES: u64 = 512;
/// Guest-physical area pre-filled with fuzz bytes (page tables, data).
const AREA: u64 = 0x10_0000;
const AREA_LEN: usize = 16 * 4096;
const ARITH: u64 = 0x8D5;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Paging {
    Flat,
    Long {
        root: u8,
        la57: bool,
        wp: bool,
        nxe: bool,
    },
    Pae {
        root: u16,
    },
    Legacy {
        root: u8,
        pse: bool,
    },
    Raw {
        cr0: u64,
        cr3: u64,
        cr4: u64,
        efer: u64,
    },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Addr {
    /// In the fuzz-filled area.
    Area(u16),
    /// Anything.
    Raw(u64),
    /// An unbacked MMIO-looking address.
    Hole(u16),
}

impl Addr {
    fn get(self) -> u64 {
        match self {
            Addr::Area(o) => AREA + o as u64,
            Addr::Raw(a) => a,
            Addr::Hole(o) => 0xFED0_0000 + o as u64,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    fill: Vec<u8>,
    code: [u8; 15],
    rip: Addr,
    regs: [u64; 16],
    /// Registers replaced by addresses, biased toward useful ones.
    addr_regs: [(u8, Addr); 3],
    rflags: u64,
    long: bool,
    cpl3: bool,
    paging: Paging,
    gpa: u64,
    write: bool,
    model: Option<ModelMov>,
}

/// A MOV-family instruction with a `[base + disp8]` operand.
#[derive(Arbitrary, Debug, Clone, Copy)]
struct ModelMov {
    op: u8,
    reg: u8,
    base: u8,
    disp: i8,
    rex: bool,
    rex_w: bool,
    opsize: bool,
    regs: [u64; 16],
}

/// Recording handler for the model phase.
#[derive(Default)]
struct Rec {
    reads: Vec<(u64, usize)>,
    writes: Vec<(u64, Vec<u8>)>,
}

impl MmioHandler for Rec {
    fn read(&mut self, gpa: u64, buf: &mut [u8]) {
        self.reads.push((gpa, buf.len()));
        buf.fill(0xFF);
    }
    fn write(&mut self, gpa: u64, data: &[u8]) {
        self.writes.push((gpa, data.to_vec()));
    }
}

const HPET: u64 = 0xFED0_0000;

/// Encodes `m`, runs it on a flat 64-bit vCPU and compares with the model.
fn model(hv: &Hypervisor<MockPlatform>, d: hv_core::DomId, m: ModelMov) {
    // (opcode bytes, store, source size or None for the operand size,
    // extension: 0 none, 1 zero, 2 sign)
    const OPS: [(&[u8], bool, Option<usize>, u8); 11] = [
        (&[0x8A], false, Some(1), 0),
        (&[0x8B], false, None, 0),
        (&[0x88], true, Some(1), 0),
        (&[0x89], true, None, 0),
        (&[0x0F, 0xB6], false, Some(1), 1),
        (&[0x0F, 0xB7], false, Some(2), 1),
        (&[0x0F, 0xBE], false, Some(1), 2),
        (&[0x0F, 0xBF], false, Some(2), 2),
        (&[0x63], false, Some(4), 2),
        (&[0xC6], true, Some(1), 0),
        (&[0xC7], true, None, 0),
    ];
    const BASES: [u8; 14] = [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15];
    let (opc, store, src, ext) = OPS[m.op as usize % OPS.len()];
    let imm_form = opc[0] == 0xC6 || opc[0] == 0xC7;
    let reg = if imm_form { 0 } else { m.reg & 15 };
    let base = BASES[m.base as usize % BASES.len()];
    let rex = m.rex || m.rex_w || reg >= 8 || base >= 8;
    let opsize = m.opsize && !m.rex_w;
    // Operand size of the register side.
    let osize = if m.rex_w {
        8
    } else if opsize {
        2
    } else {
        4
    };
    let size = src.unwrap_or(osize);
    // MOVSXD only with REX.W (without it, a plain move whose 16-bit form
    // differs between vendors).
    if opc[0] == 0x63 && !m.rex_w {
        return;
    }
    let mut code = Vec::new();
    if opsize {
        code.push(0x66);
    }
    if rex {
        code.push(0x40 | (u8::from(m.rex_w) << 3) | ((reg >> 3) << 2) | (base >> 3));
    }
    code.extend_from_slice(opc);
    code.push(0x40 | ((reg & 7) << 3) | (base & 7));
    code.push(m.disp as u8);
    let imm: u64 = 0x8899_AABB_CCDD_EEFF;
    if imm_form {
        let n = if opc[0] == 0xC6 { 1 } else { size.min(4) };
        code.extend_from_slice(&imm.to_le_bytes()[..n]);
    }
    let rip = 0x10_0000u64;
    hv.guest_mem(d).unwrap().write(rip, &code).unwrap();

    let mut cpu = MockVcpu::flat64();
    cpu.rip = rip;
    for (i, v) in m.regs.iter().enumerate() {
        cpu.gprs.set(i as u8, *v);
    }
    let addr = HPET + 0x100;
    cpu.gprs.set(base, addr.wrapping_sub(m.disp as i64 as u64));
    let before = cpu.gprs;
    let mut rec = Rec::default();
    let r = emulate_one(&mut cpu, hv.guest_mem(d).unwrap(), &mut rec);
    assert_eq!(r, Emulation::Okay, "{code:x?}");
    assert_eq!(cpu.rip, rip + code.len() as u64, "{code:x?}");
    // AH..BH: an 8-bit register operand (not a MOVZX/MOVSX destination)
    // without REX.
    let high = !rex && ext == 0 && size == 1 && (4..8).contains(&reg);
    let reg_val = |g: &Gprs| -> u64 {
        let v = g.get(if high { reg - 4 } else { reg });
        if high { (v >> 8) & 0xFF } else { v }
    };
    let mut want = before;
    if store {
        let v = if imm_form && opc[0] == 0xC7 && size == 8 {
            // C7 with REX.W: imm32 sign-extended.
            imm as u32 as i32 as i64 as u64
        } else if imm_form {
            imm
        } else {
            reg_val(&before)
        };
        assert!(rec.reads.is_empty(), "{code:x?}: store read MMIO");
        assert_eq!(
            rec.writes,
            vec![(addr, v.to_le_bytes()[..size].to_vec())],
            "{code:x?}"
        );
    } else {
        assert_eq!(rec.reads, vec![(addr, size)], "{code:x?}");
        assert!(rec.writes.is_empty());
        let loaded: u64 = if size == 8 {
            u64::MAX
        } else {
            (1 << (8 * size)) - 1
        };
        // Extend to the destination size.
        let dsize = if ext == 0 { size } else { osize };
        let value = match ext {
            1 => loaded,
            2 => u64::MAX,
            _ => loaded,
        };
        let old = before.get(if high { reg - 4 } else { reg });
        let new = match dsize {
            1 if high => (old & !0xFF00) | ((value & 0xFF) << 8),
            1 => (old & !0xFF) | (value & 0xFF),
            2 => (old & !0xFFFF) | (value & 0xFFFF),
            4 => value & 0xFFFF_FFFF,
            _ => value,
        };
        want.set(if high { reg - 4 } else { reg }, new);
    }
    assert_eq!(cpu.gprs, want, "{code:x?}");
    assert!(cpu.injected.is_empty());
}

struct Check<'a> {
    ram: Option<&'a dyn Fn(u64) -> bool>,
}

impl MmioHandler for Check<'_> {
    fn read(&mut self, gpa: u64, buf: &mut [u8]) {
        self.check(gpa, buf.len());
        buf.fill(0xFF);
    }
    fn write(&mut self, gpa: u64, data: &[u8]) {
        self.check(gpa, data.len());
    }
}

impl Check<'_> {
    fn check(&self, gpa: u64, len: usize) {
        assert!((1..=8).contains(&len), "MMIO access of {len} bytes");
        assert!(
            (gpa & 0xFFF) as usize + len <= 4096,
            "MMIO access crosses a page"
        );
        if let Some(ram) = self.ram {
            assert!(!ram(gpa), "MMIO access at {gpa:#x}, which is RAM");
        }
    }
}

fn vcpu(input: &Input) -> MockVcpu {
    let mut c = MockVcpu::flat64();
    c.long = input.long;
    c.cpl = if input.cpl3 { 3 } else { 0 };
    let (cr0, cr3, cr4, efer) = match input.paging {
        Paging::Flat => (0x11, 0, 0, 0),
        Paging::Long {
            root,
            la57,
            wp,
            nxe,
        } => (
            0x8000_0011 | if wp { 1 << 16 } else { 0 },
            AREA + (root as u64 % 16) * 4096,
            0x20 | if la57 { 1 << 12 } else { 0 },
            0x500 | if nxe { 1 << 11 } else { 0 },
        ),
        Paging::Pae { root } => (0x8001_0011, AREA + (root as u64 & 0xFFE0), 0x20, 0),
        Paging::Legacy { root, pse } => (
            0x8001_0011,
            AREA + (root as u64 % 16) * 4096,
            if pse { 0x10 } else { 0 },
            0,
        ),
        Paging::Raw {
            cr0,
            cr3,
            cr4,
            efer,
        } => (cr0, cr3, cr4, efer),
    };
    c.ctl = [cr0, 0, cr3, cr4, efer, 1];
    let mut g = Gprs::default();
    for (i, v) in input.regs.iter().enumerate() {
        g.set(i as u8, *v);
    }
    for (r, a) in input.addr_regs {
        g.set(r, a.get());
    }
    c.gprs = g;
    c.rflags = (input.rflags & !(1 << 17)) | 2;
    c.rip = input.rip.get();
    c
}

fn check_outcome(before: &MockVcpu, after: &MockVcpu, r: Emulation) {
    let rmask = if before.long { u64::MAX } else { 0xFFFF_FFFF };
    assert_eq!(
        before.rflags & !ARITH,
        after.rflags & !ARITH,
        "non-arithmetic RFLAGS changed"
    );
    match r {
        Emulation::Okay => {
            let len = after.rip.wrapping_sub(before.rip & rmask) & rmask;
            assert!((1..=15).contains(&len), "RIP moved by {len:#x}");
            assert!(after.injected.is_empty());
        }
        Emulation::Retry | Emulation::Unhandleable(_) => {
            assert_eq!(after.rip, before.rip);
            assert!(after.injected.is_empty());
        }
        Emulation::Exception(e) => {
            assert_eq!(after.rip, before.rip);
            assert_eq!(after.injected, vec![e]);
            match e {
                Event::Exception {
                    vector: 13,
                    error_code: Some(0),
                } => {}
                Event::Exception {
                    vector: 14,
                    error_code: Some(ec),
                } => {
                    assert_eq!(ec & !0x17, 0, "#PF error code {ec:#x}");
                    assert_eq!(ec & 4 != 0, before.cpl == 3);
                }
                other => panic!("unexpected event {other:?}"),
            }
        }
    }
}

fuzz_target!(|input: Input| {
    let mut hv = Hypervisor::new(MockPlatform::new(4 * RAM_PAGES));
    let d = hv
        .create_domain(
            DomainConfig {
                domid: None,
                name: "fuzz".into(),
                privileged: false,
                vcpus: 1,
                max_pages: RAM_PAGES + 16,
            },
            Box::new(MockNpt::default()),
        )
        .unwrap();
    hv.populate(d, Gfn(0), RAM_PAGES).unwrap();
    let fill = &input.fill[..input.fill.len().min(AREA_LEN)];
    hv.guest_mem(d).unwrap().write(AREA, fill).unwrap();
    let cpu0 = vcpu(&input);
    // The code at RIP: by physical address when RIP is in RAM (as paging
    // may map it elsewhere, the fuzz tables decide what is fetched).
    let _ = hv
        .guest_mem(d)
        .unwrap()
        .write(cpu0.rip & 0xFFFF_FFFF, &input.code);
    let frames = hv.platform.frames_in_use();

    // Directly, with the checking handler.
    let mut cpu = cpu0.clone();
    {
        let mem = hv.guest_mem(d).unwrap();
        let ram = |gpa: u64| mem.is_backed(gpa);
        let mut h = Check { ram: Some(&ram) };
        let r = emulate_one(&mut cpu, mem, &mut h);
        check_outcome(&cpu0, &cpu, r);
    }

    // Through the exit path with the null handler.
    let mut cpu = cpu0.clone();
    let access = Access {
        read: !input.write,
        write: input.write,
        ..Default::default()
    };
    let _ = hv.handle_exit(
        d,
        0,
        &mut cpu,
        VmExit::NestedPageFault {
            gpa: input.gpa,
            access,
        },
    );
    assert_eq!(
        cpu.rflags & !ARITH,
        cpu0.rflags & !ARITH,
        "non-arithmetic RFLAGS changed"
    );
    assert!(cpu.injected.len() <= 1);
    assert_eq!(hv.platform.frames_in_use(), frames, "frames changed");
    if let Some(m) = input.model {
        model(&hv, d, m);
    }
    hv.destroy_domain(d).unwrap();
});
