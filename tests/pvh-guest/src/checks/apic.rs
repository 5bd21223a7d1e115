//! `apic_modes`: the local APIC moves between its modes as the SDM allows
//! (IA32_APIC_BASE, MSR 0x1B): x2APIC to xAPIC directly is `#GP`, x2APIC
//! to disabled is fine (and the x2APIC MSRs are then `#GP`), disabled to
//! x2APIC is `#GP`, disabled to xAPIC is fine, and in xAPIC mode the ID
//! register at 0xFEE00020 holds the same ID in bits 31:24 (the version at
//! 0xFEE00030 too) while the x2APIC MSRs are `#GP`; xAPIC to x2APIC brings
//! the MSRs back. The kernel ends in x2APIC mode with the registers it
//! had (SVR, TPR, LVT timer) written back.

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

pub(super) fn check_apic_modes(r: &mut Report<impl Write>) -> Outcome {
    let base = read(APIC_BASE)?;
    if base & (EN | EXTD) != EN | EXTD {
        fail!("IA32_APIC_BASE {base:#x}: not in x2APIC mode at start");
    }
    let id = read(X2_ID)?;
    let version = read(X2_VERSION)?;
    let saved = [
        (X2_SVR, read(X2_SVR)?),
        (X2_TPR, read(X2_TPR)?),
        (X2_LVT_TIMER, read(X2_LVT_TIMER)?),
    ];
    let addr = base & !0xFFF;
    let bsp = base & BSP;
    r.note(format_args!(
        "APIC base {base:#x}, x2APIC ID {id}, version {version:#x}"
    ));
    let res = (|| {
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
        crate::boot::map_gib((XAPIC >> 30) as usize);
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
    // Back to x2APIC whatever happened (through disabled if needed).
    let cur = read(APIC_BASE)?;
    if cur & EN == 0 {
        write(APIC_BASE, addr | bsp | EN)?;
    }
    if cur & EXTD == 0 {
        write(APIC_BASE, addr | bsp | EN | EXTD)?;
    }
    for (msr, v) in saved {
        write(msr, v)?;
    }
    res?;
    let back = read(X2_ID)?;
    if back != id {
        fail!("x2APIC ID {back} after the round trip, want {id}");
    }
    Ok(())
}
