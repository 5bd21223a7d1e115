//! `apic_modes`: the local APIC moves between its modes as the SDM allows
//! (IA32_APIC_BASE, MSR 0x1B). From xAPIC mode (Xen's start) it first goes
//! to x2APIC (legal, same ID). Then: x2APIC to xAPIC directly is `#GP`, x2APIC
//! to disabled is fine (and the x2APIC MSRs are then `#GP`), disabled to
//! x2APIC is `#GP`, disabled to xAPIC is fine, and in xAPIC mode the ID
//! register at 0xFEE00020 holds the same ID in bits 31:24 (the version at
//! 0xFEE00030 too) while the x2APIC MSRs are `#GP`; xAPIC to x2APIC brings
//! the MSRs back. The kernel ends in the mode it started in with the
//! registers it had (SVR, TPR, LVT timer) written back.

use super::cregs::{X86_GP, expect, rdmsr_catch, wrmsr};
use super::*;

const APIC_BASE: u32 = 0x1B;
const EN: u64 = 1 << 11;
const EXTD: u64 = 1 << 10;
const BSP: u64 = 1 << 8;
const X2_ID: u32 = 0x802;
const X2_VERSION: u32 = 0x803;
const X2_TPR: u32 = 0x808;
const X2_SVR: u32 = 0x80F;
const X2_LVT_TIMER: u32 = 0x832;
const XAPIC: u64 = 0xFEE0_0000;

fn read(msr: u32) -> Result<u64, Why> {
    match rdmsr_catch(msr) {
        (None, _, v) => Ok(v),
        (Some(c), _, _) => Err(why(format_args!("rdmsr {msr:#x}: exception {}", c.vector))),
    }
}

fn write(msr: u32, v: u64) -> Outcome {
    match wrmsr(msr, v) {
        (None, _) => Ok(()),
        (Some(c), _) => fail!("wrmsr {msr:#x} {v:#x}: exception {}", c.vector),
    }
}

fn mmio32(at: u64) -> u32 {
    // SAFETY: the xAPIC page is identity-mapped (map_gib(3)); a read of
    // an APIC register has no side effect.
    unsafe { (at as *const u32).read_volatile() }
}

fn mmio32_write(at: u64, v: u32) {
    // SAFETY: as for `mmio32`; the caller writes back a value the
    // register held.
    unsafe { (at as *mut u32).write_volatile(v) }
}

/// Register `msr` (x2APIC numbering) in the current mode: the MSR in
/// x2APIC mode, else the xAPIC page at offset (msr - 0x800) * 16.
fn get(x2: bool, msr: u32) -> Result<u64, Why> {
    if x2 {
        read(msr)
    } else {
        Ok(u64::from(mmio32(XAPIC + u64::from(msr - 0x800) * 16)))
    }
}

fn set(x2: bool, msr: u32, v: u64) -> Outcome {
    if x2 {
        write(msr, v)
    } else {
        mmio32_write(XAPIC + u64::from(msr - 0x800) * 16, v as u32);
        Ok(())
    }
}

/// The APIC ID in the current mode (xAPIC: bits 31:24 of the register).
fn apic_id(x2: bool) -> Result<u64, Why> {
    Ok(if x2 {
        read(X2_ID)?
    } else {
        get(false, X2_ID)? >> 24
    })
}

pub(super) fn check_apic_modes(r: &mut Report<impl Write>) -> Outcome {
    let base = read(APIC_BASE)?;
    let (addr, bsp) = (base & !0xFFF, base & BSP);
    let start_x2 = match base & (EN | EXTD) {
        m if m == EN | EXTD => true,
        EN => false,
        _ => fail!("IA32_APIC_BASE {base:#x}: the APIC is not enabled at start"),
    };
    crate::boot::map_gib((XAPIC >> 30) as usize);
    let id = apic_id(start_x2)?;
    let version = get(start_x2, X2_VERSION)?;
    let mut saved = [(X2_SVR, 0), (X2_TPR, 0), (X2_LVT_TIMER, 0)];
    for (msr, v) in saved.iter_mut() {
        *v = get(start_x2, *msr)?;
    }
    r.note(format_args!(
        "APIC base {base:#x} ({}), ID {id}, version {version:#x}",
        if start_x2 { "x2APIC" } else { "xAPIC" }
    ));
    let res = (|| {
        if !start_x2 {
            // xAPIC -> x2APIC is legal and keeps the ID.
            write(APIC_BASE, addr | bsp | EN | EXTD)?;
            let x2id = read(X2_ID)?;
            if x2id != id {
                fail!("x2APIC ID {x2id} after xAPIC ID {id}");
            }
        }
        expect(
            format_args!("x2APIC -> xAPIC"),
            wrmsr(APIC_BASE, addr | bsp | EN),
            X86_GP,
        )?;
        expect(
            format_args!("EXTD without EN"),
            wrmsr(APIC_BASE, addr | bsp | EXTD),
            X86_GP,
        )?;
        write(APIC_BASE, addr | bsp)?;
        let (c, at, _) = rdmsr_catch(X2_ID);
        expect(format_args!("x2APIC ID while disabled"), (c, at), X86_GP)?;
        expect(
            format_args!("disabled -> x2APIC"),
            wrmsr(APIC_BASE, addr | bsp | EN | EXTD),
            X86_GP,
        )?;
        write(APIC_BASE, addr | bsp | EN)?;
        let now = read(APIC_BASE)?;
        if now != addr | bsp | EN {
            fail!("IA32_APIC_BASE in xAPIC mode reads {now:#x}");
        }
        let xid = mmio32(XAPIC + 0x20);
        let xver = mmio32(XAPIC + 0x30);
        r.note(format_args!(
            "xAPIC ID register {xid:#x}, version {xver:#x}"
        ));
        if u64::from(xid >> 24) != id & 0xFF || xid & 0x00FF_FFFF != 0 {
            fail!("xAPIC ID register {xid:#x}, want {id} in bits 31:24");
        }
        if u64::from(xver) != version {
            fail!("xAPIC version {xver:#x}, want {version:#x}");
        }
        let (c, at, _) = rdmsr_catch(X2_ID);
        expect(format_args!("x2APIC ID in xAPIC mode"), (c, at), X86_GP)?;
        Ok(())
    })();
    // Back to the mode we started in, whatever happened.
    let cur = read(APIC_BASE)?;
    if start_x2 {
        if cur & EN == 0 {
            write(APIC_BASE, addr | bsp | EN)?;
        }
        if cur & EXTD == 0 {
            write(APIC_BASE, addr | bsp | EN | EXTD)?;
        }
    } else if cur & EXTD != 0 {
        write(APIC_BASE, addr | bsp)?;
        write(APIC_BASE, addr | bsp | EN)?;
    } else if cur & EN == 0 {
        write(APIC_BASE, addr | bsp | EN)?;
    }
    for (msr, v) in saved {
        set(start_x2, msr, v)?;
    }
    res?;
    let back = apic_id(start_x2)?;
    if back != id {
        fail!("APIC ID {back} after the round trip, want {id}");
    }
    Ok(())
}
