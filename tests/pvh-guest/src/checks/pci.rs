//! Device assignment seen from inside (`role=pci-owner`, `role=pci-probe`,
//! issue 17): what configuration space, a BAR and the pirq calls give a
//! domain that was assigned a PCI function, and one that was not.
//!
//! `role=pci-owner dev=DD bar=ADDR io=PORT` (the function `00:DD.0`,
//! assigned to it): sees the function (vendor 0x1af4) and nothing else of
//! bus 0 (`pci_owner_config`); its virtio common configuration is in the
//! memory BAR at ADDR, which it reads through the identity map and its
//! legacy I/O BAR at PORT, both answering real registers
//! (`pci_owner_bars`); it maps the GSI of its interrupt line, binds it,
//! queries it and acknowledges it (`pci_owner_pirq`).
//!
//! `role=pci-probe dev=DD bar=ADDR io=PORT gsi=G`: every function of bus 0
//! reads vendor 0xFFFF (`pci_probe_config`); setting bus master and the
//! decoders of 00:DD.0 leaves it reading all-ones (`pci_probe_command`);
//! the owner's BAR reads all-ones and drops writes, its ports read
//! all-ones (`pci_probe_bars`); `PHYSDEVOP_map_pirq` of the device's GSI is
//! `-EPERM`, and no pirq can be bound or acknowledged (`pci_probe_pirq`).

use super::*;

/// What the PCI roles are told on their command lines.
#[derive(Default, Clone, Copy)]
pub struct PciOptions {
    /// `dev=DD`: the device number of the function on bus 0 (hex).
    pub dev: u8,
    /// `bar=ADDR`: the memory BAR holding the virtio common configuration.
    pub bar: u64,
    /// `io=PORT`: the function's I/O BAR.
    pub io: u16,
    /// `gsi=G`: the function's GSI (the probe cannot read it).
    pub gsi: i32,
}

fn outl(port: u16, v: u32) {
    // SAFETY: a port write; the hypervisor decides what it reaches.
    unsafe { core::arch::asm!("out dx, eax", in("dx") port, in("eax") v, options(nomem, nostack)) };
}

fn inl(port: u16) -> u32 {
    let v: u32;
    // SAFETY: a port read, as above.
    unsafe { core::arch::asm!("in eax, dx", in("dx") port, out("eax") v, options(nomem, nostack)) };
    v
}

fn cfg_addr(dev: u8, func: u8, reg: u8) -> u32 {
    0x8000_0000 | (u32::from(dev) << 11) | (u32::from(func) << 8) | u32::from(reg & 0xFC)
}

fn cfg_read(dev: u8, func: u8, reg: u8) -> u32 {
    outl(0xCF8, cfg_addr(dev, func, reg));
    inl(0xCFC)
}

fn cfg_write(dev: u8, func: u8, reg: u8, v: u32) {
    outl(0xCF8, cfg_addr(dev, func, reg));
    outl(0xCFC, v);
}

/// The functions of bus 0 with a vendor id, as (device, function, vendor).
fn scan(found: &mut [(u8, u8, u16); 8]) -> usize {
    let mut n = 0;
    for dev in 0..32u8 {
        for func in 0..8u8 {
            let vendor = cfg_read(dev, func, 0) as u16;
            if vendor != 0xFFFF && n < found.len() {
                found[n] = (dev, func, vendor);
                n += 1;
            }
        }
    }
    n
}

fn physdev(ctx: &Ctx, cmd: u32, arg: *mut u8) -> i64 {
    // SAFETY: `arg` points at the live argument struct of `cmd`.
    unsafe {
        ctx.hc.call(
            xen::__HYPERVISOR_physdev_op,
            [u64::from(cmd), arg as u64, 0, 0, 0],
        )
    }
}

fn map_pirq(ctx: &Ctx, gsi: i32) -> (i64, i32) {
    let mut a = PhysdevMapPirq {
        domid: xen::DOMID_SELF,
        r#type: MAP_PIRQ_TYPE_GSI,
        index: gsi,
        pirq: -1,
        ..Default::default()
    };
    let r = physdev(ctx, PHYSDEVOP_map_pirq, (&raw mut a).cast());
    (r, a.pirq)
}

fn bind_pirq(ctx: &Ctx, pirq: u32) -> Result<u32, Errno> {
    let mut a = EvtchnBindPirq {
        pirq,
        flags: 0,
        port: 0,
    };
    // SAFETY: a live argument struct.
    unsafe { ctx.hc.event_channel_op(&mut a) }.map(|()| a.port)
}

fn eoi(ctx: &Ctx, pirq: u32) -> i64 {
    let mut a = PhysdevEoi { irq: pirq };
    physdev(ctx, PHYSDEVOP_eoi, (&raw mut a).cast())
}

/// Maps `at`'s GiB and reads the u32 there.
fn read_mmio(at: u64) -> u32 {
    crate::boot::map_gib((at >> 30) as usize);
    // SAFETY: the GiB of `at` is identity-mapped now; what is behind it is
    // the hypervisor's business (a BAR, or nothing).
    unsafe { (at as *const u32).read_volatile() }
}

fn write_mmio(at: u64, v: u32) {
    crate::boot::map_gib((at >> 30) as usize);
    // SAFETY: as in `read_mmio`.
    unsafe { (at as *mut u32).write_volatile(v) }
}

pub(super) fn owner<W: Write>(r: &mut Report<W>, ctx: &mut Ctx, o: &PciOptions) {
    let dev = o.dev;
    let oc = (|| {
        let mut found = [(0, 0, 0); 8];
        let n = scan(&mut found);
        if found[..n] != [(dev, 0, 0x1AF4)] {
            fail!(
                "bus 0 shows {:x?}, want only 00:{dev:02x}.0 vendor 0x1af4",
                &found[..n]
            );
        }
        Ok(())
    })();
    record(r, "pci_owner_config", oc);
    let ob = (|| {
        // The virtio capability for the common configuration (cfg_type 1):
        // which BAR and where in it.
        let mut at = cfg_read(dev, 0, 0x34) as u8 & 0xFC;
        let mut common = None;
        for _ in 0..48 {
            if at < 0x40 {
                break;
            }
            let head = cfg_read(dev, 0, at);
            if head as u8 == 0x09 && (head >> 24) as u8 == 1 {
                let bar = cfg_read(dev, 0, at + 4) as u8;
                let off = cfg_read(dev, 0, at + 8);
                common = Some((bar, off));
                break;
            }
            at = (head >> 8) as u8 & 0xFC;
        }
        let Some((bar, off)) = common else {
            fail!("no virtio common configuration capability");
        };
        let lo = cfg_read(dev, 0, 0x10 + 4 * bar);
        let mut base = u64::from(lo & !0xF);
        if (lo >> 1) & 3 == 2 {
            base |= u64::from(cfg_read(dev, 0, 0x14 + 4 * bar)) << 32;
        }
        r.note(format_args!(
            "pci-owner: common configuration in BAR{bar} at {base:#x} + {off:#x}"
        ));
        if base != o.bar {
            fail!(
                "BAR{bar} is at {base:#x}, the case says {:#x}: fix its bar=",
                o.bar
            );
        }
        // Turn on memory and I/O decoding (firmware did; it stays).
        let cmd = cfg_read(dev, 0, 4);
        cfg_write(dev, 0, 4, (cmd & 0xFFFF) | 0x7);
        if cfg_read(dev, 0, 4) & 0x7 != 0x7 {
            fail!("the command register did not take memory, I/O and bus master");
        }
        // device_feature_select = 1, device_feature: VIRTIO_F_VERSION_1 (bit 32).
        write_mmio(base + u64::from(off), 1);
        let f = read_mmio(base + u64::from(off) + 4);
        if f == u32::MAX || f & 1 == 0 {
            fail!("device_feature[1] reads {f:#x}, want VIRTIO_F_VERSION_1");
        }
        // The legacy I/O BAR: host features (not all-ones) at +0.
        let io_bar = cfg_read(dev, 0, 0x10);
        if io_bar & 1 == 0 || (io_bar & !3) as u16 != o.io {
            fail!(
                "BAR0 is {io_bar:#x}, the case says ports at {:#x}: fix its io=",
                o.io
            );
        }
        let hf = inl(o.io);
        if hf == u32::MAX {
            fail!("the legacy host features read all-ones");
        }
        Ok(())
    })();
    record(r, "pci_owner_bars", ob);
    let op = (|| {
        let line = cfg_read(dev, 0, 0x3C) as u8;
        // QEMU's MADT maps the PCI lines to the same GSI numbers.
        let (rc, pirq) = map_pirq(ctx, i32::from(line));
        if rc != 0 || pirq < 16 {
            fail!("map_pirq(GSI {line}): {rc}, pirq {pirq}");
        }
        let (again, same) = map_pirq(ctx, i32::from(line));
        if (again, same) != (0, pirq) {
            fail!("map_pirq again: {again}, pirq {same}, want 0 and {pirq}");
        }
        let port = match bind_pirq(ctx, pirq as u32) {
            Ok(p) => p,
            Err(e) => fail!("bind_pirq({pirq}): {e}"),
        };
        let mut q = PhysdevIrqStatusQuery {
            irq: pirq as u32,
            flags: 0,
        };
        let rq = physdev(ctx, PHYSDEVOP_irq_status_query, (&raw mut q).cast());
        if rq != 0 || q.flags & XENIRQSTAT_needs_eoi == 0 {
            fail!("irq_status_query({pirq}): {rq}, flags {:#x}", q.flags);
        }
        let re = eoi(ctx, pirq as u32);
        if re != 0 {
            fail!("eoi({pirq}): {re}");
        }
        r.note(format_args!(
            "pci-owner: line {line} -> pirq {pirq} -> port {port}"
        ));
        Ok(())
    })();
    record(r, "pci_owner_pirq", op);
}

pub(super) fn probe<W: Write>(r: &mut Report<W>, ctx: &mut Ctx, o: &PciOptions) {
    let oc = (|| {
        let mut found = [(0, 0, 0); 8];
        let n = scan(&mut found);
        if n != 0 {
            fail!("bus 0 shows {:x?}, want no function at all", &found[..n]);
        }
        Ok(())
    })();
    record(r, "pci_probe_config", oc);
    let ocmd = (|| {
        cfg_write(o.dev, 0, 4, 0x7);
        let v = cfg_read(o.dev, 0, 4);
        if v != u32::MAX {
            fail!(
                "00:{:02x}.0 command/status reads {v:#x} after a write",
                o.dev
            );
        }
        Ok(())
    })();
    record(r, "pci_probe_command", ocmd);
    let ob = (|| {
        for at in [o.bar, o.bar + 4, o.bar + 0x1000] {
            let v = read_mmio(at);
            if v != u32::MAX {
                fail!("the owner's BAR at {at:#x} reads {v:#x}");
            }
        }
        write_mmio(o.bar, 1);
        let v = read_mmio(o.bar);
        if v != u32::MAX {
            fail!("the owner's BAR at {:#x} reads {v:#x} after a write", o.bar);
        }
        for port in [o.io, o.io + 4, o.io + 0x10] {
            let v = inl(port);
            if v != u32::MAX {
                fail!("the owner's port {port:#x} reads {v:#x}");
            }
        }
        Ok(())
    })();
    record(r, "pci_probe_bars", ob);
    let op = (|| {
        let (rc, _) = map_pirq(ctx, o.gsi);
        if rc != -1 {
            fail!("map_pirq(GSI {}): {rc}, want -EPERM", o.gsi);
        }
        for pirq in [16, o.gsi as u32, 0] {
            if let Ok(p) = bind_pirq(ctx, pirq) {
                fail!("bind_pirq({pirq}) gave port {p}");
            }
            let re = eoi(ctx, pirq);
            if re != -22 {
                fail!("eoi({pirq}): {re}, want -EINVAL");
            }
        }
        Ok(())
    })();
    record(r, "pci_probe_pirq", op);
}
