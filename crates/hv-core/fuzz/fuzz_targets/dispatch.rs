//! Hypercall dispatch and VM exit handling against adversarial guests.
//!
//! Each input builds a mock machine with two domains (d0 privileged, d1
//! not; 2 MiB of RAM and two vCPUs each), fills part of their memory with
//! fuzz bytes (the argument area, which may also serve as page tables),
//! then runs up to 32 steps: hypercalls with arbitrary numbers and
//! arguments (biased toward the implemented calls and toward addresses in
//! RAM), other VM exits, upcall injection, timer ticks, guest writes to its
//! own memory and domain destruction.
//!
//! Checked after every step: nothing panics (including the mock's
//! double-free and out-of-bounds assertions); a completed hypercall leaves
//! either a non-negative value or `-errno` with errno in 1..=133 in RAX
//! (32-bit callers: in EAX, upper half clear); injected upcalls use a
//! vector >= 0x10; every frame the machine handed out is accounted for
//! (shared_info + owned p2m entries + zombies of each live domain) and each
//! domain's `tot_pages` matches its owned p2m entries. At the end every
//! domain is destroyed and every frame must be back.
#![no_main]

use arbitrary::Arbitrary;
use hv_core::arch::{Event, IoExit, VmExit};
use hv_core::exits::cpuid;
use hv_core::guest_state::GuestCpu;
use hv_core::mock::{MockNpt, MockPlatform, MockVcpu};
use hv_core::{DomId, DomainConfig, ExitAction, Gfn, Hypervisor};
use libfuzzer_sys::fuzz_target;

/// RAM per domain: 2 MiB (more makes the setup dominate each run).
const RAM_PAGES: u64 = 512;
/// Guest-physical argument area, pre-filled with fuzz bytes.
const ARG: u64 = 0x10_0000;
/// Size of the pre-filled area.
const ARG_LEN: usize = 16 * 4096;
/// Frames the machine has: enough for both domains plus some growth,
/// small enough that populate_physmap storms stay cheap.
const MACHINE_FRAMES: u64 = 4 * RAM_PAGES;
const MAX_STEPS: usize = 32;

/// The hypercalls hv-core implements (set_timer_op, memory_op, xen_version,
/// console_io, grant_table_op, vm_assist, vcpu_op, sched_op,
/// event_channel_op, hvm_op).
const IMPLEMENTED: [u64; 10] = [15, 12, 17, 18, 20, 21, 24, 29, 32, 34];

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Nr {
    Known(u8),
    Raw(u64),
}

impl Nr {
    fn get(self) -> u64 {
        match self {
            Nr::Known(i) => IMPLEMENTED[i as usize % IMPLEMENTED.len()],
            Nr::Raw(n) => n,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Arg {
    /// A sub-op number or small count.
    Small(u8),
    /// Inside the pre-filled argument area.
    ArgArea(u16),
    /// Anywhere in RAM.
    Ram(u32),
    /// Near the top of RAM (crossing into the hole).
    RamEnd(u8),
    Raw(u64),
}

impl Arg {
    fn get(self) -> u64 {
        match self {
            Arg::Small(v) => v as u64,
            Arg::ArgArea(o) => ARG + (o as u64 % ARG_LEN as u64),
            Arg::Ram(o) => o as u64 % (RAM_PAGES * 4096),
            Arg::RamEnd(o) => RAM_PAGES * 4096 - 1 - o as u64,
            Arg::Raw(v) => v,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Paging {
    /// Paging off (linear = physical).
    Flat,
    /// Long mode, 4-level tables rooted in the argument area.
    Long { root: u8, la57: bool, wp: bool },
    /// PAE paging, root in the argument area.
    Pae { root: u16 },
    /// 32-bit two-level paging, root in the argument area.
    Legacy { root: u8, pse: bool },
    /// Anything.
    Raw {
        cr0: u64,
        cr3: u64,
        cr4: u64,
        efer: u64,
    },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
struct Mode {
    cpl: u8,
    long: bool,
    paging: Paging,
    interrupts: bool,
}

impl Mode {
    fn vcpu(self) -> MockVcpu {
        let mut c = MockVcpu::flat64();
        // CPL 0 most of the time.
        c.cpl = if self.cpl >= 0xF0 { self.cpl & 3 } else { 0 };
        c.long = self.long;
        c.rflags = if self.interrupts { 0x202 } else { 0x2 };
        let (cr0, cr3, cr4, efer) = match self.paging {
            Paging::Flat => (0x11, 0, 0, 0),
            Paging::Long { root, la57, wp } => (
                0x8000_0011 | if wp { 1 << 16 } else { 0 },
                ARG + (root as u64 % 16) * 4096,
                0x20 | if la57 { 1 << 12 } else { 0 },
                0x500,
            ),
            Paging::Pae { root } => (0x8001_0011, ARG + (root as u64 & 0xFFE0), 0x20, 0),
            Paging::Legacy { root, pse } => (
                0x8001_0011,
                ARG + (root as u64 % 16) * 4096,
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
        c
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
struct Who {
    dom: u8,
    vcpu: u8,
}

impl Who {
    /// Mostly d0/d1 and vCPU 0/1, sometimes ids that do not exist.
    fn get(self) -> (DomId, u32) {
        let d = match self.dom % 8 {
            0..=3 => 0,
            4..=6 => 1,
            _ => self.dom as u16,
        };
        let v = if self.vcpu >= 0xF0 {
            self.vcpu as u32
        } else {
            (self.vcpu % 2) as u32
        };
        (DomId(d), v)
    }
}

#[derive(Arbitrary, Debug)]
enum Step {
    /// A hypercall with register arguments.
    Hypercall {
        who: Who,
        mode: Mode,
        nr: Nr,
        args: [Arg; 5],
    },
    /// A hypercall `nr(cmd, ARG + off, ...)` with the struct at ARG + off
    /// written first (most sub-ops take one struct pointer).
    Struct {
        who: Who,
        nr: Nr,
        cmd: u8,
        off: u8,
        words: [u32; 8],
        extra: [Arg; 3],
    },
    Cpuid {
        who: Who,
        leaf: u32,
        sub: u32,
    },
    MsrRead {
        who: Who,
        msr: Msr,
    },
    MsrWrite {
        who: Who,
        msr: Msr,
        value: u64,
    },
    Io {
        who: Who,
        mode: Mode,
        port: u16,
        size: u8,
        write: bool,
        string: bool,
        rep: bool,
        rax: u64,
        rcx: u16,
        rsi: Arg,
        rdi: Arg,
        down: bool,
    },
    Hlt {
        who: Who,
    },
    /// A write to CR0 or CR4 (`cr4`), with the register reported or
    /// decoded from `code` at RIP.
    ControlWrite {
        who: Who,
        mode: Mode,
        cr4: bool,
        gpr: Option<u8>,
        value: u64,
        code: [u8; 6],
    },
    /// `XSETBV` of `value` to XCR `index`, with CR4.OSXSAVE forced on or not.
    Xsetbv {
        who: Who,
        mode: Mode,
        osxsave: bool,
        index: u32,
        value: u64,
    },
    InterruptWindow {
        who: Who,
    },
    /// The guest writes its own memory (acks events, rewrites structures).
    Poke {
        dom: u8,
        at: Arg,
        data: Vec<u8>,
    },
    PrepareEntry {
        who: Who,
        interrupts: bool,
    },
    Tick {
        delta: u32,
    },
    VcpuUp {
        who: Who,
    },
    Destroy {
        dom: u8,
    },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Msr {
    Hypercall(u16),
    Known(u8),
    Raw(u32),
}

impl Msr {
    fn get(self) -> (u32, Option<u64>) {
        const KNOWN: [u32; 12] = [
            0xC000_0080,
            0x1B,
            0x277,
            0x17,
            0x1A0,
            0x2FF,
            0x200,
            0x1D9,
            0xC001_1029,
            0xFE,
            0x8B,
            0x4000_0001,
        ];
        match self {
            // The hypercall page MSR with a page in RAM.
            Msr::Hypercall(p) => (0x4000_0000, Some((p as u64 % (RAM_PAGES + 8)) << 12)),
            Msr::Known(i) => (KNOWN[i as usize % KNOWN.len()], None),
            Msr::Raw(m) => (m, None),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    fill: Vec<u8>,
    fill_d1: bool,
    steps: Vec<Step>,
}

fn domain(hv: &mut Hypervisor<MockPlatform>, privileged: bool) -> DomId {
    let d = hv
        .create_domain(
            DomainConfig {
                domid: None,
                name: if privileged { "d0" } else { "d1" }.into(),
                privileged,
                vcpus: 2,
                max_pages: RAM_PAGES + 256,
            },
            Box::new(MockNpt::default()),
        )
        .unwrap();
    hv.populate(d, Gfn(0), RAM_PAGES).unwrap();
    hv.domain_mut(d).unwrap().memory_map = vec![hv_core_e820(RAM_PAGES * 4096)];
    d
}

fn hv_core_e820(size: u64) -> xen_abi::memory::E820Entry {
    xen_abi::memory::E820Entry {
        addr: 0,
        size,
        r#type: 1,
    }
}

/// Frames the machine must have out for the live domains.
fn check_accounting(hv: &Hypervisor<MockPlatform>, base: usize) {
    let mut expect = base;
    for d in hv.domain_ids() {
        let dom = hv.domain(d).unwrap();
        let owned = dom.p2m.iter().filter(|(_, e)| e.kind.owned()).count();
        assert_eq!(dom.tot_pages, owned as u64, "{d}: tot_pages");
        assert!(dom.tot_pages <= dom.max_pages, "{d}: over its quota");
        expect += 1 + owned + dom.zombies.len();
    }
    assert_eq!(hv.platform.frames_in_use(), expect, "frames in use");
}

fn check_ret(cpu: &MockVcpu, nr: u64, cmd: u64) {
    let rax = cpu.gprs.rax;
    let r = if cpu.long {
        rax as i64
    } else {
        // (A CPL > 0 caller gets -EPERM in all of RAX, the others in EAX
        // only: see the report; the guest cannot see the upper half.)
        assert!(
            cpu.cpl != 0 || rax >> 32 == 0,
            "32-bit caller: RAX upper half set"
        );
        // XENMEM_maximum_ram_page / maximum_gpfn return a frame number,
        // which a 32-bit caller sees truncated (as in Xen).
        if nr == 12 && matches!(cmd & 0xFFFF_FFFF & 63, 2 | 14) {
            return;
        }
        rax as u32 as i32 as i64
    };
    if r < 0 {
        assert!(
            (-133..=-1).contains(&r),
            "hypercall {nr} cmd {cmd:#x}: RAX {rax:#x} is neither a value nor -errno"
        );
    }
}

struct Ctx {
    hv: Hypervisor<MockPlatform>,
}

impl Ctx {
    /// Runs a hypercall exit and re-executes it while it continues (the
    /// instruction pointer does not move), up to a bound.
    fn hypercall(&mut self, d: DomId, v: u32, cpu: &mut MockVcpu) {
        let nr = cpu.gprs.rax;
        let cmd = if cpu.long { cpu.gprs.rdi } else { cpu.gprs.rbx };
        for _ in 0..8 {
            let rip = cpu.rip;
            let a = self.hv.handle_exit(d, v, cpu, VmExit::Hypercall);
            if a == ExitAction::Dead {
                return;
            }
            if cpu.rip != rip {
                check_ret(cpu, nr, cmd);
                return;
            }
        }
    }

    fn exit(&mut self, who: Who, cpu: &mut MockVcpu, exit: VmExit) {
        let (d, v) = who.get();
        let _ = self.hv.handle_exit(d, v, cpu, exit);
    }
}

fn dom_of(b: u8) -> DomId {
    DomId((b % 3) as u16)
}

fuzz_target!(|input: Input| {
    let mut hv = Hypervisor::new(MockPlatform::new(MACHINE_FRAMES));
    let base = hv.platform.frames_in_use();
    let d0 = domain(&mut hv, true);
    let d1 = domain(&mut hv, false);
    let fill = &input.fill[..input.fill.len().min(ARG_LEN)];
    hv.guest_mem(d0).unwrap().write(ARG, fill).unwrap();
    if input.fill_d1 {
        hv.guest_mem(d1).unwrap().write(ARG, fill).unwrap();
    }
    let mut cx = Ctx { hv };
    check_accounting(&cx.hv, base);

    for step in input.steps.into_iter().take(MAX_STEPS) {
        match step {
            Step::Hypercall {
                who,
                mode,
                nr,
                args,
            } => {
                let (d, v) = who.get();
                let mut cpu = mode.vcpu();
                let a = args.map(Arg::get);
                if cpu.long {
                    cpu.hypercall(nr.get(), a);
                } else {
                    cpu.gprs.rax = nr.get();
                    [
                        cpu.gprs.rbx,
                        cpu.gprs.rcx,
                        cpu.gprs.rdx,
                        cpu.gprs.rsi,
                        cpu.gprs.rdi,
                    ] = a;
                }
                cx.hypercall(d, v, &mut cpu);
            }
            Step::Struct {
                who,
                nr,
                cmd,
                off,
                words,
                extra,
            } => {
                let (d, v) = who.get();
                let at = ARG + (off as u64) * 8;
                if let Some(m) = cx.hv.guest_mem(d) {
                    let mut b = [0u8; 32];
                    for (i, w) in words.iter().enumerate() {
                        b[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
                    }
                    let _ = m.write(at, &b);
                }
                let mut cpu = MockVcpu::flat64();
                let [e0, e1, e2] = extra.map(Arg::get);
                // vcpu_op takes (cmd, vcpu, arg).
                let args = if nr.get() == 24 {
                    [cmd as u64, e0 & 1, at, e1, e2]
                } else {
                    [cmd as u64, at, e0, e1, e2]
                };
                cpu.hypercall(nr.get(), args);
                cx.hypercall(d, v, &mut cpu);
            }
            Step::Cpuid { who, leaf, sub } => {
                let mut cpu = MockVcpu::flat64();
                cpu.gprs.rax = leaf as u64;
                cpu.gprs.rcx = sub as u64;
                cx.exit(who, &mut cpu, VmExit::Cpuid);
            }
            Step::MsrRead { who, msr } => {
                let mut cpu = MockVcpu::flat64();
                let (msr, _) = msr.get();
                cx.exit(who, &mut cpu, VmExit::MsrRead { msr });
                assert_eq!(cpu.gprs.rax >> 32, 0);
                assert_eq!(cpu.gprs.rdx >> 32, 0);
            }
            Step::MsrWrite { who, msr, value } => {
                let mut cpu = MockVcpu::flat64();
                let (msr, v) = msr.get();
                let value = v.unwrap_or(value);
                cx.exit(who, &mut cpu, VmExit::MsrWrite { msr, value });
            }
            Step::Io {
                who,
                mode,
                port,
                size,
                write,
                string,
                rep,
                rax,
                rcx,
                rsi,
                rdi,
                down,
            } => {
                let mut cpu = mode.vcpu();
                cpu.gprs.rax = rax;
                cpu.gprs.rcx = rcx as u64;
                cpu.gprs.rsi = rsi.get();
                cpu.gprs.rdi = rdi.get();
                if down {
                    cpu.rflags |= 1 << 10;
                }
                let io = IoExit {
                    port: if port >= 0xFF00 {
                        [0xE9, 0xB004][port as usize % 2]
                    } else {
                        port
                    },
                    size,
                    write,
                    string,
                    rep,
                };
                cx.exit(who, &mut cpu, VmExit::Io(io));
            }
            Step::Hlt { who } => {
                let mut cpu = MockVcpu::flat64();
                cx.exit(who, &mut cpu, VmExit::Hlt);
            }
            Step::ControlWrite {
                who,
                mode,
                cr4,
                gpr,
                value,
                code,
            } => {
                let (d, v) = who.get();
                let mut cpu = mode.vcpu();
                cpu.rip = ARG;
                if let Some(m) = cx.hv.guest_mem(d) {
                    let _ = m.write(ARG, &code);
                }
                let gpr = gpr.map(|g| g & 15);
                if let Some(g) = gpr {
                    cpu.gprs.set(g, value);
                } else {
                    cpu.gprs.rax = value;
                }
                let before = cpu.ctl;
                let cr = if cr4 { 4 } else { 0 };
                let exit = VmExit::CrAccess {
                    cr,
                    write: true,
                    gpr,
                };
                cx.exit(who, &mut cpu, exit);
                if cpu.injected.is_empty() && cpu.ctl != before {
                    // Accepted: nothing a VM entry would refuse.
                    let [cr0, _, _, cr4v, efer, _] = cpu.ctl;
                    if cr4 {
                        let features = GuestCpu::from_cpuid(|l, sl| cpuid(&cx.hv, d, v, l, sl));
                        assert_eq!(cr4v & !features.cr4_valid(), 0, "{cr4v:#x}");
                        assert!(efer & (1 << 10) == 0 || cr4v & (1 << 5) != 0);
                    } else {
                        assert_eq!(cr0 >> 32, 0, "{cr0:#x}");
                        assert!(cr0 & (1 << 31) == 0 || cr0 & 1 != 0, "PG without PE");
                        assert!(
                            cr0 & (1 << 29) == 0 || cr0 & (1 << 30) != 0,
                            "NW without CD"
                        );
                        if (cr0 ^ before[0]) & (1 << 31) != 0 {
                            let lme = efer & (1 << 8) != 0;
                            let lma = efer & (1 << 10) != 0;
                            assert_eq!(lma, lme && cr0 & (1 << 31) != 0);
                        }
                    }
                }
            }
            Step::Xsetbv {
                who,
                mode,
                osxsave,
                index,
                value,
            } => {
                let mut cpu = mode.vcpu();
                if osxsave {
                    cpu.ctl[3] |= 1 << 18;
                }
                cpu.gprs.rcx = u64::from(index);
                cpu.gprs.rax = value & 0xFFFF_FFFF;
                cpu.gprs.rdx = value >> 32;
                cx.exit(who, &mut cpu, VmExit::Xsetbv);
                // Only what the offered components (x87, SSE, AVX) allow.
                let x = cpu.ctl[5];
                assert!(
                    x & 1 != 0 && x & !7 == 0 && (x & 4 == 0 || x & 2 != 0),
                    "{x:#x}"
                );
            }
            Step::InterruptWindow { who } => {
                let mut cpu = MockVcpu::flat64();
                cx.exit(who, &mut cpu, VmExit::InterruptWindow);
                assert!(!cpu.window);
            }
            Step::Poke { dom, at, data } => {
                if let Some(m) = cx.hv.guest_mem(dom_of(dom)) {
                    let _ = m.write(at.get(), &data[..data.len().min(256)]);
                }
            }
            Step::PrepareEntry { who, interrupts } => {
                let (d, v) = who.get();
                let mut cpu = MockVcpu::flat64();
                if !interrupts {
                    cpu.rflags = 0x2;
                }
                cx.hv.prepare_entry(d, v, &mut cpu);
                for e in &cpu.injected {
                    assert!(
                        matches!(e, Event::Interrupt(vec) if *vec >= 0x10),
                        "bad upcall {e:?}"
                    );
                }
                assert!(interrupts || cpu.injected.is_empty());
            }
            Step::Tick { delta } => {
                let now = cx
                    .hv
                    .platform
                    .now
                    .fetch_add(delta as u64 * 1000, core::sync::atomic::Ordering::SeqCst);
                let _ = cx.hv.tick(now + delta as u64 * 1000);
                let _ = cx.hv.take_woken();
            }
            Step::VcpuUp { who } => {
                let (d, v) = who.get();
                let _ = cx.hv.vcpu_up(d, v);
            }
            Step::Destroy { dom } => {
                let _ = cx.hv.destroy_domain(dom_of(dom));
            }
        }
        check_accounting(&cx.hv, base);
    }

    for d in cx.hv.domain_ids() {
        cx.hv.destroy_domain(d).unwrap();
    }
    assert_eq!(
        cx.hv.platform.frames_in_use(),
        base,
        "frames leaked after destroying every domain"
    );
});
