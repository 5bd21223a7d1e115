//! Device assignment, configuration space: what each domain sees through
//! ports 0xCF8/0xCFC-0xCFF, driven as VM exits against the mock machine's
//! PCI functions.

use hv_core::arch::{IoExit, VmExit};
use hv_core::mock::{MockNpt, MockPciFunction, MockPlatform, MockVcpu};
use hv_core::pci::{self, Bdf, COMMAND_GUEST_BITS};
use hv_core::{DomId, DomainConfig, Errno, Hypervisor};

const NIC: Bdf = Bdf {
    bus: 0,
    dev: 3,
    func: 0,
};
const DISK: Bdf = Bdf {
    bus: 0,
    dev: 4,
    func: 0,
};
const BRIDGE: Bdf = Bdf {
    bus: 0,
    dev: 1,
    func: 0,
};

/// BAR0: 4 KiB of 32-bit memory at 0xFEB0_0000.
const BAR0: u32 = 0xFEB0_0000;
/// BAR1: 32 I/O ports at 0xC000.
const BAR1: u32 = 0xC001;
/// BAR2/3: 16 MiB of 64-bit prefetchable memory at 0x8_C000_0000.
const BAR2: u32 = 0xC000_000C;
const BAR3: u32 = 0x8;

/// The NIC: BARs as above, a capability list with a 64-bit MSI
/// capability at 0x40 (14 bytes) and a vendor capability at 0x50.
fn nic() -> MockPciFunction {
    let mut f = MockPciFunction::endpoint(NIC, 0x1AF4, 0x1000)
        .with_bar(0, BAR0, 0xFFFF_F000)
        .with_bar(1, BAR1, 0xFFFF_FFE0)
        .with_bar(2, BAR2, 0xFF00_0000)
        .with_bar(3, BAR3, 0xFFFF_FFFF);
    f.set_dword(0x04, 0x0010_0000); // status: capability list
    f.set_dword(0x34, 0x40);
    f.set_dword(0x40, 0x0080_5005); // MSI, next 0x50, 64-bit
    f.set_dword(0x50, 0x0000_0009); // vendor specific, last
    f
}

fn machine() -> MockPlatform {
    let m = MockPlatform::default();
    {
        let mut pci = m.pci.lock();
        pci.push(MockPciFunction::endpoint(
            Bdf {
                bus: 0,
                dev: 0,
                func: 0,
            },
            0x8086,
            0x29C0,
        ));
        pci.push(nic());
        pci.push(MockPciFunction::endpoint(DISK, 0x1AF4, 0x1001).with_bar(
            0,
            BAR0 + 0x1000,
            0xFFFF_F000,
        ));
        let mut bridge = MockPciFunction::endpoint(BRIDGE, 0x8086, 0x244E);
        bridge.set_dword(0x0C, 0x0001_0000); // header type 1
        pci.push(bridge);
    }
    m
}

struct Sim {
    hv: Hypervisor<MockPlatform>,
    cpu: MockVcpu,
}

impl Sim {
    fn new() -> Self {
        Sim {
            hv: Hypervisor::new(machine()),
            cpu: MockVcpu::flat64(),
        }
    }

    fn domain(&mut self, vcpus: u32) -> DomId {
        self.hv
            .create_domain(
                DomainConfig {
                    domid: None,
                    name: "t".into(),
                    privileged: false,
                    vcpus,
                    max_pages: 64,
                },
                Box::new(MockNpt::default()),
            )
            .unwrap()
    }

    fn io(&mut self, d: DomId, v: u32, port: u16, size: u8, write: bool) {
        self.hv.handle_exit(
            d,
            v,
            &mut self.cpu,
            VmExit::Io(IoExit {
                port,
                size,
                write,
                string: false,
                rep: false,
            }),
        );
    }

    fn outp(&mut self, d: DomId, port: u16, size: u8, val: u32) {
        self.outp_on(d, 0, port, size, val);
    }

    fn outp_on(&mut self, d: DomId, v: u32, port: u16, size: u8, val: u32) {
        self.cpu.gprs.rax = u64::from(val);
        self.io(d, v, port, size, true);
    }

    /// `in` of `size` bytes; checks the rest of RAX is kept.
    fn inp(&mut self, d: DomId, port: u16, size: u8) -> u32 {
        self.inp_on(d, 0, port, size)
    }

    fn inp_on(&mut self, d: DomId, v: u32, port: u16, size: u8) -> u32 {
        let junk = 0x5A5A_5A5A_5A5A_5A5A_u64;
        self.cpu.gprs.rax = junk;
        self.io(d, v, port, size, false);
        let mask = if size >= 4 {
            0xFFFF_FFFF
        } else {
            (1u64 << (8 * size)) - 1
        };
        assert_eq!(
            self.cpu.gprs.rax & !mask,
            junk & !mask,
            "bytes beyond the access kept"
        );
        (self.cpu.gprs.rax & mask) as u32
    }

    fn select(&mut self, d: DomId, bdf: Bdf, reg: u8) {
        let a = 0x8000_0000
            | u32::from(bdf.bus) << 16
            | u32::from(bdf.dev) << 11
            | u32::from(bdf.func) << 8
            | u32::from(reg & 0xFC);
        self.outp(d, 0xCF8, 4, a);
    }

    fn cfg_read(&mut self, d: DomId, bdf: Bdf, reg: u8, size: u8) -> u32 {
        self.select(d, bdf, reg);
        self.inp(d, 0xCFC + u16::from(reg & 3), size)
    }

    fn cfg_write(&mut self, d: DomId, bdf: Bdf, reg: u8, size: u8, val: u32) {
        self.select(d, bdf, reg);
        self.outp(d, 0xCFC + u16::from(reg & 3), size, val);
    }

    fn host(&self, bdf: Bdf) -> MockPciFunction {
        self.hv
            .platform
            .pci
            .lock()
            .iter()
            .find(|f| f.bdf == bdf)
            .unwrap()
            .clone()
    }

    /// Host configuration writes since the last call.
    fn take_host_writes(&self) -> Vec<(Bdf, u8, u8, u32)> {
        core::mem::take(&mut *self.hv.platform.pci_writes.lock())
    }
}

#[test]
fn functions_parse_as_lspci_writes_them() {
    let b = |bus, dev, func| Some(Bdf { bus, dev, func });
    assert_eq!(Bdf::parse("00:03.0"), b(0, 3, 0));
    assert_eq!(Bdf::parse("0000:00:1f.7"), b(0, 0x1F, 7));
    assert_eq!(Bdf::parse("ff:1F.1"), b(0xFF, 0x1F, 1));
    for bad in [
        "",
        "00:03",
        "03.0",
        "00:20.0",
        "00:03.8",
        "0001:00:03.0",
        "00000:00:03.0",
        "x0:03.0",
        "00:03.0.1",
        "0:0:0:03.0",
        "00:+3.0",
        "00:03.00",
        "100:03.0",
        "00:03.",
    ] {
        assert_eq!(Bdf::parse(bad), None, "{bad}");
    }
    assert_eq!(Bdf::parse("00:1f.7").unwrap().devfn(), 0xFF);
    assert_eq!(Bdf::parse("00:03.0").unwrap().to_string(), "00:03.0");
    assert_eq!(pci::parse_list("00:03.0,00:04.0"), Some(vec![NIC, DISK]));
    assert_eq!(pci::parse_list("00:03.0,00:03.0"), None, "twice");
    assert_eq!(pci::parse_list("00:03.0,"), None);
}

#[test]
fn an_unassigned_domain_sees_no_device_anywhere() {
    let mut s = Sim::new();
    let d = s.domain(1);
    let owner = s.domain(1);
    s.hv.assign_pci(owner, NIC).unwrap();
    s.take_host_writes();
    for bus in 0..=255u8 {
        for dev in 0..32 {
            for func in 0..8 {
                let bdf = Bdf { bus, dev, func };
                assert_eq!(s.cfg_read(d, bdf, 0, 4), 0xFFFF_FFFF, "{bdf}");
            }
        }
    }
    // Every register and size of the functions the host does have.
    for bdf in [NIC, DISK, BRIDGE] {
        for reg in (0..=255u8).step_by(1) {
            for size in [1u8, 2, 4] {
                if u32::from(reg & 3) + u32::from(size) > 4 {
                    continue;
                }
                let all = if size == 4 {
                    u32::MAX
                } else {
                    (1 << (8 * size)) - 1
                };
                assert_eq!(s.cfg_read(d, bdf, reg, size), all, "{bdf} {reg:#x}/{size}");
                s.cfg_write(d, bdf, reg, size, 0);
            }
        }
    }
    assert_eq!(s.take_host_writes(), [], "nothing reached the host");
    assert_eq!(s.host(NIC).config, nic().config);
}

#[test]
fn an_assigned_domain_sees_its_function_and_sizes_bars_without_moving_them() {
    let mut s = Sim::new();
    let d = s.domain(1);
    s.hv.assign_pci(d, NIC).unwrap();
    // The probe restored every BAR and the command register.
    assert_eq!(s.host(NIC).config, nic().config);
    s.take_host_writes();

    assert_eq!(s.cfg_read(d, NIC, 0, 4), 0x1000_1AF4);
    assert_eq!(s.cfg_read(d, NIC, 0, 2), 0x1AF4);
    assert_eq!(s.cfg_read(d, NIC, 2, 2), 0x1000);
    assert_eq!(s.cfg_read(d, NIC, 0x0B, 1), 0x02, "class");
    // Its other functions and neighbours are not there.
    assert_eq!(s.cfg_read(d, Bdf { func: 1, ..NIC }, 0, 4), u32::MAX);
    assert_eq!(s.cfg_read(d, DISK, 0, 4), u32::MAX);

    // BARs read the host's addresses.
    let bars = [BAR0, BAR1, BAR2, BAR3, 0, 0];
    for (i, v) in bars.iter().enumerate() {
        assert_eq!(s.cfg_read(d, NIC, 0x10 + 4 * i as u8, 4), *v, "BAR{i}");
    }
    // Sizing, as Linux's __pci_read_base does it, BAR by BAR.
    let sized = [0xFFFF_F000, 0xFFFF_FFE1, 0xFF00_000C, 0xFFFF_FFFF, 0, 0];
    for i in 0..6u8 {
        let reg = 0x10 + 4 * i;
        let orig = s.cfg_read(d, NIC, reg, 4);
        s.cfg_write(d, NIC, reg, 4, u32::MAX);
        assert_eq!(
            s.cfg_read(d, NIC, reg, 4),
            sized[usize::from(i)],
            "BAR{i} size"
        );
        // Bytes of the sizing value too.
        assert_eq!(
            s.cfg_read(d, NIC, reg + 3, 1),
            sized[usize::from(i)] >> 24,
            "BAR{i} top byte"
        );
        s.cfg_write(d, NIC, reg, 4, orig);
        assert_eq!(s.cfg_read(d, NIC, reg, 4), orig, "BAR{i} restored");
    }
    // Moving a BAR: dropped; it reads its real address.
    s.cfg_write(d, NIC, 0x10, 4, 0x1234_5000);
    assert_eq!(s.cfg_read(d, NIC, 0x10, 4), BAR0);
    s.cfg_write(d, NIC, 0x1C, 4, 0);
    assert_eq!(s.cfg_read(d, NIC, 0x1C, 4), BAR3);
    // Sizing is one dword write (as every OS does it): bytes of all-ones
    // one at a time leave the address as it is, and any other write ends
    // the sizing.
    for b in 0..4 {
        s.cfg_write(d, NIC, 0x10 + b, 1, 0xFF);
        assert_eq!(s.cfg_read(d, NIC, 0x10, 4), BAR0);
    }
    s.cfg_write(d, NIC, 0x10, 4, u32::MAX);
    s.cfg_write(d, NIC, 0x12, 2, 0xFFFF);
    assert_eq!(s.cfg_read(d, NIC, 0x10, 4), BAR0);
    // The type bits of the sizing write do not matter.
    s.cfg_write(d, NIC, 0x14, 4, 0xFFFF_FFFC);
    assert_eq!(s.cfg_read(d, NIC, 0x14, 4), 0xFFFF_FFE1);
    s.cfg_write(d, NIC, 0x14, 4, 0xFFFF_FFF0);
    assert_eq!(s.cfg_read(d, NIC, 0x14, 4), BAR1, "not all address bits");
    // No ROM.
    s.cfg_write(d, NIC, 0x30, 4, 0xFFFF_F800);
    assert_eq!(s.cfg_read(d, NIC, 0x30, 4), 0);

    assert!(
        s.take_host_writes()
            .iter()
            .all(|w| !(0x10..0x34).contains(&w.1)),
        "no BAR write reached the host"
    );
    assert_eq!(
        s.host(NIC).config,
        nic().config,
        "host BARs where firmware put them"
    );
}

#[test]
fn header_writes_are_filtered() {
    let mut s = Sim::new();
    let d = s.domain(1);
    s.hv.assign_pci(d, NIC).unwrap();
    s.take_host_writes();
    // Command: only the guest's bits; status is write-1-to-clear, so
    // a write of the command word alone writes no status bits.
    s.cfg_write(d, NIC, 0x04, 2, 0xFFFF);
    assert_eq!(
        s.host(NIC).dword(0x04) & 0xFFFF,
        u32::from(COMMAND_GUEST_BITS)
    );
    assert_eq!(
        s.take_host_writes(),
        [(NIC, 0x04, 2, u32::from(COMMAND_GUEST_BITS))]
    );
    s.cfg_write(d, NIC, 0x05, 1, 0x00);
    assert_eq!(s.host(NIC).dword(0x04) & 0xFFFF, 0x0047, "high byte alone");
    s.cfg_write(d, NIC, 0x06, 2, 0x8000);
    assert_eq!(s.take_host_writes().last(), Some(&(NIC, 0x06, 2, 0x8000)));
    // Identity, class, header type, BIST, capability pointer, interrupt
    // line and pin: read-only.
    for reg in [0x00u8, 0x08, 0x0E, 0x0F, 0x28, 0x2C, 0x34, 0x3C] {
        s.cfg_write(d, NIC, reg, 1, 0x42);
    }
    assert_eq!(s.take_host_writes(), []);
    // Cache line size and latency timer go through, not header type/BIST.
    s.cfg_write(d, NIC, 0x0C, 4, 0xFFFF_4010);
    assert_eq!(
        s.take_host_writes(),
        [(NIC, 0x0C, 1, 0x10), (NIC, 0x0D, 1, 0x40)]
    );
    // The MSI capability (0x40-0x4D) is the hypervisor's; the vendor one is not.
    s.cfg_write(d, NIC, 0x44, 4, 0xFEE0_0000);
    s.cfg_write(d, NIC, 0x42, 2, 0x0001);
    assert_eq!(s.take_host_writes(), []);
    s.cfg_write(d, NIC, 0x54, 4, 0x1234_5678);
    assert_eq!(s.take_host_writes(), [(NIC, 0x54, 4, 0x1234_5678)]);
    // A dword straddling the capability's end: only the bytes after it.
    s.cfg_write(d, NIC, 0x4C, 4, 0xAABB_CCDD);
    assert_eq!(
        s.take_host_writes(),
        [(NIC, 0x4E, 1, 0xBB), (NIC, 0x4F, 1, 0xAA)]
    );
    assert_eq!(s.cfg_read(d, NIC, 0x54, 4), 0x1234_5678, "reads go through");
    assert_eq!(s.cfg_read(d, NIC, 0x40, 2), 0x5005);
}

#[test]
fn odd_sizes_and_offsets() {
    let mut s = Sim::new();
    let d = s.domain(1);
    s.hv.assign_pci(d, NIC).unwrap();
    s.select(d, NIC, 0);
    // Each byte and word of the dword.
    assert_eq!(
        [0, 1, 2, 3].map(|i| s.inp(d, 0xCFC + i, 1)),
        [0xF4, 0x1A, 0x00, 0x10]
    );
    assert_eq!(s.inp(d, 0xCFE, 2), 0x1000);
    assert_eq!(s.inp(d, 0xCFD, 2), 0x001A, "unaligned inside the dword");
    // Crossing the dword, or a size the hardware has not: nothing.
    assert_eq!(s.inp(d, 0xCFD, 4), u32::MAX);
    assert_eq!(s.inp(d, 0xCFE, 4), u32::MAX);
    assert_eq!(s.inp(d, 0xCFC, 3), 0xFF_FFFF);
    // The low two bits of the latch do not select bytes.
    s.outp(d, 0xCF8, 4, 0x8000_1803);
    assert_eq!(s.inp(d, 0xCF8, 4), 0x8000_1800);
    assert_eq!(s.inp(d, 0xCFC, 4), 0x1000_1AF4);
    // The latch is a dword register: other accesses to 0xCF8-0xCFB are
    // not it (0xCF9 is the host's reset control) and go nowhere.
    s.take_host_writes();
    s.outp(d, 0xCF9, 1, 0x06);
    s.outp(d, 0xCF8, 2, 0);
    s.outp(d, 0xCFA, 2, 0);
    assert_eq!(s.inp(d, 0xCF8, 4), 0x8000_1800);
    assert_eq!(s.inp(d, 0xCF9, 1), 0xFF);
    assert_eq!(s.inp(d, 0xCF8, 2), 0xFFFF);
    // Enable bit clear, or reserved bits 30:24 (AMD's extended registers).
    s.outp(d, 0xCF8, 4, 0x0000_1800);
    assert_eq!(s.inp(d, 0xCFC, 4), u32::MAX);
    s.outp(d, 0xCFC, 4, 0xFFFF);
    s.outp(d, 0xCF8, 4, 0x8100_1804);
    assert_eq!(s.inp(d, 0xCFC, 4), u32::MAX);
    s.outp(d, 0xCFC, 2, 0xFFFF);
    assert_eq!(s.take_host_writes(), []);
    // Unaligned writes reach the host a byte at a time.
    s.cfg_write(d, NIC, 0x55, 2, 0xBEEF);
    assert_eq!(
        s.take_host_writes(),
        [(NIC, 0x55, 1, 0xEF), (NIC, 0x56, 1, 0xBE)]
    );
    assert_eq!(s.cfg_read(d, NIC, 0x54, 4), 0x00BE_EF00);
}

#[test]
fn a_domain_cannot_reach_another_domains_function() {
    let mut s = Sim::new();
    let a = s.domain(1);
    let b = s.domain(1);
    s.hv.assign_pci(a, NIC).unwrap();
    s.hv.assign_pci(b, DISK).unwrap();
    assert_eq!(s.cfg_read(a, NIC, 0, 4), 0x1000_1AF4);
    assert_eq!(s.cfg_read(b, DISK, 0, 4), 0x1001_1AF4);
    assert_eq!(s.cfg_read(a, DISK, 0, 4), u32::MAX);
    assert_eq!(s.cfg_read(b, NIC, 0, 4), u32::MAX);
    assert_eq!(s.cfg_read(b, NIC, 0x10, 4), u32::MAX);
    s.take_host_writes();
    s.cfg_write(b, NIC, 0x04, 2, 0x7);
    s.cfg_write(b, NIC, 0x54, 4, 0x1);
    assert_eq!(s.take_host_writes(), []);
    // One owner per function; absent functions and bridges refused.
    assert_eq!(s.hv.assign_pci(b, NIC), Err(Errno::EBUSY));
    assert_eq!(s.hv.assign_pci(a, NIC), Err(Errno::EBUSY));
    assert_eq!(
        s.hv.assign_pci(
            a,
            Bdf {
                bus: 7,
                dev: 0,
                func: 0
            }
        ),
        Err(Errno(xen_abi::errno::ENODEV))
    );
    assert_eq!(s.hv.assign_pci(a, BRIDGE), Err(Errno::EINVAL));
    assert_eq!(s.hv.assign_pci(DomId(99), BRIDGE), Err(Errno::ESRCH));
    // A destroyed domain's functions are free again.
    s.hv.destroy_domain(a).unwrap();
    let c = s.domain(1);
    s.hv.assign_pci(c, NIC).unwrap();
    assert_eq!(s.cfg_read(c, NIC, 0, 4), 0x1000_1AF4);
    assert_eq!(
        s.hv.domain(c).unwrap().pci.functions().collect::<Vec<_>>(),
        [NIC]
    );
}

#[test]
fn the_latch_is_per_domain() {
    let mut s = Sim::new();
    let a = s.domain(2);
    let b = s.domain(1);
    s.hv.assign_pci(a, NIC).unwrap();
    s.hv.assign_pci(b, DISK).unwrap();
    s.select(a, NIC, 0);
    s.select(b, DISK, 0x10);
    assert_eq!(s.inp(a, 0xCF8, 4), 0x8000_1800);
    assert_eq!(s.inp(b, 0xCF8, 4), 0x8000_2010);
    assert_eq!(
        s.inp(a, 0xCFC, 4),
        0x1000_1AF4,
        "b's latch did not move a's"
    );
    assert_eq!(s.inp(b, 0xCFC, 4), BAR0 + 0x1000);
    // A domain's vCPUs share it, as Xen's per-domain pci_cf8.
    s.outp_on(a, 1, 0xCF8, 4, 0x8000_1808);
    assert_eq!(s.inp_on(a, 0, 0xCFC, 1), 0x00);
    assert_eq!(
        s.inp_on(a, 0, 0xCFF, 1),
        0x02,
        "class, through vCPU 1's latch"
    );
    // A fresh domain starts with the latch clear.
    let c = s.domain(1);
    assert_eq!(s.inp(c, 0xCF8, 4), 0);
}

#[test]
fn hostile_accesses_never_panic_or_move_bars() {
    let mut s = Sim::new();
    let d = s.domain(1);
    s.hv.assign_pci(d, NIC).unwrap();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..50_000 {
        let r = next();
        let port = 0xCF8 + (r & 7) as u16;
        let size = [1u8, 2, 3, 4][(r >> 3) as usize & 3];
        // Mostly the NIC's latch, sometimes anything.
        let val = if r >> 60 == 0 {
            (r >> 8) as u32
        } else if port == 0xCF8 {
            0x8000_1800 | ((r >> 8) as u32 & 0xFC)
        } else {
            (r >> 16) as u32
        };
        if r >> 5 & 1 == 0 {
            s.outp(d, port, size, val);
        } else {
            s.inp(d, port, size);
        }
    }
    let host = s.host(NIC);
    for reg in (0x10..0x34).step_by(4) {
        assert_eq!(host.dword(reg), nic().dword(reg), "BAR at {reg:#x}");
    }
    assert_eq!(
        &host.config[0x40..0x4E],
        &nic().config[0x40..0x4E],
        "MSI untouched"
    );
    assert_eq!(host.dword(0), nic().dword(0));
}

#[test]
fn memory_bars_are_identity_mapped_uncached_for_the_assignee_only() {
    use hv_core::arch::P2mPerms;
    use hv_core::p2m::P2mKind;
    use hv_core::{Gfn, Hfn};
    let mut s = Sim::new();
    let a = s.domain(1);
    let b = s.domain(1);
    s.hv.assign_pci(a, NIC).unwrap();
    let dom = s.hv.domain(a).unwrap();
    let pages = 1 + 4096; // BAR0's page and BAR2's 16 MiB
    for g in [0xFEB00, 0x8C0000, 0x8C0FFF] {
        let e = dom.p2m.get(Gfn(g)).unwrap();
        assert_eq!(
            (e.hfn, e.kind, e.perms),
            (Hfn(g), P2mKind::Mmio, P2mPerms::MMIO)
        );
    }
    assert!(dom.p2m.get(Gfn(0x8C1000)).is_none());
    assert!(
        dom.p2m.get(Gfn(0xFEB01)).is_none(),
        "the disk's BAR is not the NIC's"
    );
    assert_eq!(dom.p2m.len(), pages);
    // Not RAM: not counted, and no hypercall path reaches it.
    assert_eq!(dom.tot_pages, 0);
    let mem = s.hv.guest_mem(a).unwrap();
    assert_eq!(mem.read(0xFEB0_0000, &mut [0u8; 4]), Err(Errno::EFAULT));
    assert_eq!(mem.write(0x8C_0000_0000, &[1]), Err(Errno::EFAULT));
    // Another domain has nothing there: unbacked MMIO.
    assert!(s.hv.domain(b).unwrap().p2m.is_empty());
    // Destroyed: nothing of it goes back to the frame allocator.
    s.hv.destroy_domain(a).unwrap();
    s.hv.settle();
    let freed = s.hv.platform.freed.lock();
    assert!(
        !freed
            .iter()
            .any(|h| h.0 == 0xFEB00 || (0x8C0000..0x8C1000).contains(&h.0))
    );
}

#[test]
fn a_dead_owners_function_stops_bus_mastering() {
    let mut s = Sim::new();
    let a = s.domain(1);
    s.hv.assign_pci(a, NIC).unwrap();
    // The owner's driver turns on decoding and bus mastering.
    s.cfg_write(a, NIC, 0x04, 2, 0x0407);
    assert_eq!(s.host(NIC).config[4] & 0x7, 0x7);
    s.take_host_writes();
    s.hv.destroy_domain(a).unwrap();
    // Off before its memory went; INTx disable (bit 10) as it was.
    let writes = s.take_host_writes();
    assert!(
        writes.contains(&(NIC, 0x04, 2, 0x0400)),
        "command register writes: {writes:?}"
    );
    let host = s.host(NIC);
    assert_eq!(u16::from_le_bytes([host.config[4], host.config[5]]), 0x0400);
    // The next owner finds it stopped and turns it on again.
    let b = s.domain(1);
    s.hv.assign_pci(b, NIC).unwrap();
    s.cfg_write(b, NIC, 0x04, 2, 0x0007);
    assert_eq!(s.host(NIC).config[4] & 0x7, 0x7);
}

#[test]
fn a_bar_over_the_domains_memory_refuses_the_assignment() {
    use hv_core::Gfn;
    let mut s = Sim::new();
    let a = s.domain(1);
    s.hv.populate(a, Gfn(0x8C0800), 1).unwrap();
    assert_eq!(s.hv.assign_pci(a, NIC), Err(Errno::EEXIST));
    let dom = s.hv.domain(a).unwrap();
    assert!(dom.p2m.get(Gfn(0xFEB00)).is_none(), "all or nothing");
    assert_eq!(dom.pci.functions().count(), 0);
    // Free for another domain.
    let b = s.domain(1);
    s.hv.assign_pci(b, NIC).unwrap();
}

#[test]
fn io_bar_ports_reach_the_host_for_the_assignee_only() {
    let mut s = Sim::new();
    let a = s.domain(1);
    let b = s.domain(1);
    s.hv.assign_pci(a, NIC).unwrap();
    s.hv.platform.io.lock().clear();
    // BAR1: ports 0xC000-0xC01F. The mock host answers the port number.
    assert_eq!(s.inp(a, 0xC004, 4), 0xC004);
    assert_eq!(s.inp(a, 0xC01F, 1), 0x1F);
    s.outp(a, 0xC010, 2, 0xBEEF);
    assert_eq!(
        *s.hv.platform.io.lock(),
        [
            (0xC004, 4, None),
            (0xC01F, 1, None),
            (0xC010, 2, Some(0xBEEF))
        ]
    );
    s.hv.platform.io.lock().clear();
    // Past the BAR (even partly), and every port for another domain:
    // all-ones, nothing reaches the host.
    assert_eq!(s.inp(a, 0xC01E, 4), 0xFFFF_FFFF);
    assert_eq!(s.inp(a, 0xC020, 1), 0xFF);
    assert_eq!(s.inp(b, 0xC004, 4), 0xFFFF_FFFF);
    s.outp(b, 0xC010, 2, 0xBEEF);
    assert!(s.hv.platform.io.lock().is_empty());
}

#[test]
fn a_bar_too_large_to_map_refuses_the_assignment() {
    let big = Bdf {
        bus: 0,
        dev: 5,
        func: 0,
    };
    let mut s = Sim::new();
    s.hv.platform
        .pci
        .lock()
        .push(MockPciFunction::endpoint(big, 0x10DE, 0x1).with_bar(0, 0x8000_0000, 0x8000_0000));
    let a = s.domain(1);
    assert_eq!(s.hv.assign_pci(a, big), Err(Errno::E2BIG));
    assert!(s.hv.domain(a).unwrap().p2m.is_empty());
}
