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
//! queries it and acknowledges it (`pci_owner_pirq`). Direct-mapped
//! (` directmap=0xBASE:0xSIZE` on its command line), it then reads sector
//! 0 of the disk with a legacy virtio-blk request whose queue and buffers
//! are in that region: the device's DMA lands there, its level INTx comes
//! as an event on the pirq's port, and it acknowledges the device and the
//! pirq (`pci_owner_dma_irq`).
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
    /// `directmap=0xBASE:0xSIZE` (the hypervisor appends it for a
    /// direct-mapped domain).
    pub directmap: Option<(u64, u64)>,
}

/// What the owner's disk holds at sector 0 (written by the xtask).
pub const DISK_MARK: &[u8] = b"pvh pci-isolation disk";

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
    let op = (|| -> Result<(u32, u32), Why> {
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
        Ok((pirq as u32, port))
    })();
    let bound = op.as_ref().ok().copied();
    record(r, "pci_owner_pirq", op.map(|_| ()));
    if let (Some((pirq, port)), Some(dm)) = (bound, o.directmap) {
        let od = dma_read(r, ctx, o, dm, pirq, port);
        record(r, "pci_owner_dma_irq", od);
    }
}

/// A legacy virtio-blk read of sector 0 into the direct-mapped region
/// (the device's DMA reaches the addresses the domain gives it), completed
/// by its INTx as an event on the pirq's port, acknowledged at the device
/// (ISR read) and with `PHYSDEVOP_eoi`.
fn dma_read<W: Write>(
    r: &mut Report<W>,
    ctx: &Ctx,
    o: &PciOptions,
    (base, size): (u64, u64),
    pirq: u32,
    port: u32,
) -> Outcome {
    r.note(format_args!(
        "pci-owner: virtio-blk queue and buffers in the direct-mapped region {base:#x}+{size:#x}"
    ));
    if base % 4096 != 0 || size < 0x10000 || base + size > MAPPED {
        fail!("direct-mapped region {base:#x}+{size:#x} unusable here");
    }
    let io = o.io;
    let out8 = |p: u16, v: u8| {
        // SAFETY: a port write to the assigned function's I/O BAR.
        unsafe { core::arch::asm!("out dx, al", in("dx") p, in("al") v, options(nomem, nostack)) }
    };
    let in8 = |p: u16| {
        let v: u8;
        // SAFETY: a port read, as above.
        unsafe { core::arch::asm!("in al, dx", in("dx") p, out("al") v, options(nomem, nostack)) };
        v
    };
    let out16 = |p: u16, v: u16| {
        // SAFETY: as above.
        unsafe { core::arch::asm!("out dx, ax", in("dx") p, in("ax") v, options(nomem, nostack)) }
    };
    let in16 = |p: u16| {
        let v: u16;
        // SAFETY: as above.
        unsafe { core::arch::asm!("in ax, dx", in("dx") p, out("ax") v, options(nomem, nostack)) };
        v
    };
    let w = |at: u64, bytes: &[u8]| {
        // SAFETY: callers write inside [base, base + size): RAM of ours
        // (listed in the memory map, identity-mapped in the first GiB),
        // used by nothing else in this kernel.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), at as *mut u8, bytes.len()) }
    };
    let rd16 = |at: u64| {
        // SAFETY: as for `w`, a 2-aligned read inside the region.
        unsafe { (at as *const u16).read_volatile() }
    };
    events::mask(port);
    events::clear_pending(port);
    // Reset, ACKNOWLEDGE | DRIVER, no features, queue 0 at `base`.
    out8(io + 0x12, 0);
    out8(io + 0x12, 1 | 2);
    outl(io + 0x04, 0);
    out16(io + 0x0E, 0);
    let n = u64::from(in16(io + 0x0C));
    if n == 0 || n > 1024 {
        fail!("queue 0 has {n} entries");
    }
    let avail = base + 16 * n;
    let used = (avail + 6 + 2 * n).next_multiple_of(4096);
    let buf = (used + 6 + 8 * n).next_multiple_of(4096);
    if buf + 0x1000 > base + size {
        fail!("a {n}-entry queue does not fit the region");
    }
    outl(io + 0x08, (base >> 12) as u32);
    out8(io + 0x12, 1 | 2 | 4);
    // Header (IN, sector 0), 512 bytes of data, one status byte.
    let (hdr, data, status) = (buf, buf + 0x100, buf + 0x400);
    w(hdr, &[0u8; 16]);
    w(status, &[0xFF]);
    let desc = |i: u64, addr: u64, len: u32, flags: u16, next: u16| {
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..].copy_from_slice(&next.to_le_bytes());
        w(base + 16 * i, &d);
    };
    desc(0, hdr, 16, 1, 1);
    desc(1, data, 512, 1 | 2, 2);
    desc(2, status, 1, 2, 0);
    w(avail + 4, &0u16.to_le_bytes());
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
    w(avail + 2, &1u16.to_le_bytes());
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
    out16(io + 0x10, 0);
    // The interrupt as an event on the port (masked: the upcall handler
    // leaves it to SCHEDOP_poll).
    let _ = ctx.hc.sched_poll(&[port], 2_000_000_000);
    if !events::is_pending(port) {
        fail!("no event on port {port} (used index {})", rd16(used + 2));
    }
    let isr = in8(io + 0x13);
    events::clear_pending(port);
    if isr & 1 == 0 {
        fail!("the device's ISR reads {isr:#x}, want the queue bit");
    }
    let re = eoi(ctx, pirq);
    if re != 0 {
        fail!("eoi({pirq}): {re}");
    }
    if rd16(used + 2) != 1 {
        fail!("used index {}, want 1", rd16(used + 2));
    }
    // SAFETY: bytes of the region, as above.
    let (st, got) = unsafe {
        (
            (status as *const u8).read_volatile(),
            core::slice::from_raw_parts(data as *const u8, DISK_MARK.len()),
        )
    };
    if st != 0 || got != DISK_MARK {
        fail!("status {st}, sector 0 starts {:x?}", &got[..8]);
    }
    // Quiet again: reset the device.
    out8(io + 0x12, 0);
    Ok(())
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
