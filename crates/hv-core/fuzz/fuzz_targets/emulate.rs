//! The MMIO instruction emulator against arbitrary instruction bytes,
//! registers and guest page tables.
//!
//! Each input builds a mock machine with one domain (2 MiB of RAM), fills
//! part of its memory with fuzz bytes (which may serve as page tables and
//! as data), puts fuzz instruction bytes at RIP (often in RAM, sometimes
//! anywhere) and runs the emulator through a nested-page-fault exit and
//! directly against a recording MMIO handler.
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
    Long { root: u8, la57: bool, wp: bool, nxe: bool },
    Pae { root: u16 },
    Legacy { root: u8, pse: bool },
    Raw { cr0: u64, cr3: u64, cr4: u64, efer: u64 },
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
        assert!((gpa & 0xFFF) as usize + len <= 4096, "MMIO access crosses a page");
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
        Paging::Long { root, la57, wp, nxe } => (
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
        Paging::Raw { cr0, cr3, cr4, efer } => (cr0, cr3, cr4, efer),
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
    let _ = hv.guest_mem(d).unwrap().write(cpu0.rip & 0xFFFF_FFFF, &input.code);
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
    let _ = hv.handle_exit(d, 0, &mut cpu, VmExit::NestedPageFault { gpa: input.gpa, access });
    assert_eq!(
        cpu.rflags & !ARITH,
        cpu0.rflags & !ARITH,
        "non-arithmetic RFLAGS changed"
    );
    assert!(cpu.injected.len() <= 1);
    assert_eq!(hv.platform.frames_in_use(), frames, "frames changed");
    hv.destroy_domain(d).unwrap();
});
