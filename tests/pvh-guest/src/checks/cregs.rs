//! Guest state checks: writes of values the CPU model does not allow
//! raise the exception the hardware (and Xen) raise at the instruction,
//! and the kernel handles it and goes on; nothing is loaded.
//!
//! - `cr4_unoffered_gp`: CR4 bits CPUID does not offer (UMIP, PKE, LA57,
//!   VMXE, OSXSAVE, whichever are absent; Xen's `hvm_cr4_guest_valid_bits`)
//!   give `#GP(0)` at the `MOV CR4`; a legal write still works.
//! - `cr0_invalid_gp`: CR0.NW without CD and a bit in 63:32 give `#GP(0)`.
//! - `efer_unoffered_gp`: a reserved EFER bit, SVME (SVM is not offered)
//!   and clearing LME with paging on give `#GP(0)` at the `WRMSR`.
//! - `xcr0_invalid`: with XSAVE offered, XCR0 without x87, AVX without
//!   SSE and XCR1 give `#GP(0)` at `XSETBV`; without it (the policy today),
//!   `XSETBV` is `#UD` and setting CR4.OSXSAVE `#GP(0)`.

use super::*;
use crate::cpu::{Caught, catch};

pub(super) const X86_GP: u8 = 13;
const X86_UD: u8 = 6;
const EFER: u32 = 0xC000_0080;

fn cpuid_sub(leaf: u32, sub: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, sub);
    [r.eax, r.ebx, r.ecx, r.edx]
}

fn read_cr0() -> u64 {
    let v: u64;
    // SAFETY: reading CR0 at CPL 0 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr0", out(reg) v, options(nomem, nostack)) };
    v
}

fn read_cr4() -> u64 {
    let v: u64;
    // SAFETY: reading CR4 at CPL 0 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr4", out(reg) v, options(nomem, nostack)) };
    v
}

fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: EFER exists on every 64-bit CPU; reading it changes nothing.
    unsafe {
        core::arch::asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// `RDMSR` with exceptions caught: the value (0 after a fault).
pub(super) fn rdmsr_catch(msr: u32) -> (Option<Caught>, u64, u64) {
    let (lo, hi): (u32, u32);
    let (c, at) = catch!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi);
    (c, at, (u64::from(hi) << 32) | u64::from(lo))
}

fn write_cr0(v: u64) -> (Option<Caught>, u64) {
    catch!("mov cr0, {v}", v = in(reg) v)
}

fn write_cr4(v: u64) -> (Option<Caught>, u64) {
    catch!("mov cr4, {v}", v = in(reg) v)
}

pub(super) fn wrmsr(msr: u32, v: u64) -> (Option<Caught>, u64) {
    catch!("wrmsr", in("ecx") msr, in("eax") v as u32, in("edx") (v >> 32) as u32)
}

fn xsetbv(index: u32, v: u64) -> (Option<Caught>, u64) {
    catch!("xsetbv", in("ecx") index, in("eax") v as u32, in("edx") (v >> 32) as u32)
}

/// `r` must be exception `vector` (error code 0 for `#GP`) raised at
/// `at`, the instruction itself (RIP not advanced).
pub(super) fn expect(what: fmt::Arguments, r: (Option<Caught>, u64), vector: u8) -> Outcome {
    let (c, at) = r;
    match c {
        Some(c) if c.vector == vector && c.error == 0 && c.rip == at => Ok(()),
        Some(c) => fail!(
            "{what}: exception {} error {:#x} at {:#x}, want {vector} at {at:#x}",
            c.vector,
            c.error,
            c.rip
        ),
        None => fail!("{what}: no exception, want {vector}"),
    }
}

pub(super) fn check_cr4_unoffered_gp(r: &mut Report<impl Write>) -> Outcome {
    let c1 = cpuid(1);
    let c7 = cpuid_sub(7, 0);
    let before = read_cr4();
    let mut tried = 0;
    for (name, bit, offered) in [
        ("UMIP", 1u64 << 11, c7[2] & (1 << 2) != 0),
        ("PKE", 1 << 22, c7[2] & (1 << 3) != 0),
        ("LA57", 1 << 12, c7[2] & (1 << 16) != 0),
        ("VMXE", 1 << 13, c1[2] & (1 << 5) != 0),
        ("OSXSAVE", 1 << 18, c1[2] & (1 << 26) != 0),
    ] {
        if offered {
            continue;
        }
        r.note(format_args!("CR4.{name} not offered: expecting #GP"));
        expect(format_args!("CR4.{name}"), write_cr4(before | bit), X86_GP)?;
        let now = read_cr4();
        if now != before {
            fail!("CR4.{name}: CR4 {before:#x} became {now:#x}");
        }
        tried += 1;
    }
    if tried == 0 {
        fail!("every candidate CR4 bit is offered");
    }
    // A legal write (the same value) completes and moves on.
    if let (Some(c), _) = write_cr4(before) {
        fail!("rewriting CR4 {before:#x}: exception {}", c.vector);
    }
    Ok(())
}

pub(super) fn check_cr0_invalid_gp<W: Write>(r: &mut Report<W>, skip_nw: bool) -> Outcome {
    let before = read_cr0();
    const NW: u64 = 1 << 29;
    const CD: u64 = 1 << 30;
    if skip_nw {
        // Xen 4.17 on SVM lets this value reach the VMCB and the domain
        // dies on the failed VMRUN (docs/xen-differences.md).
        r.note(format_args!(
            "CR0.NW without CD: left out (skip=cr0-nw on the command line)"
        ));
    } else {
        expect(
            format_args!("CR0.NW without CD"),
            write_cr0((before | NW) & !CD),
            X86_GP,
        )?;
    }
    expect(
        format_args!("CR0 bit 32"),
        write_cr0(before | (1 << 32)),
        X86_GP,
    )?;
    let now = read_cr0();
    if now != before {
        fail!("CR0 {before:#x} became {now:#x}");
    }
    if let (Some(c), _) = write_cr0(before) {
        fail!("rewriting CR0 {before:#x}: exception {}", c.vector);
    }
    Ok(())
}

pub(super) fn check_efer_unoffered_gp() -> Outcome {
    let before = rdmsr(EFER);
    let svm = cpuid(0x8000_0001)[2] & (1 << 2) != 0;
    expect(
        format_args!("EFER bit 2"),
        wrmsr(EFER, before | (1 << 2)),
        X86_GP,
    )?;
    if !svm {
        expect(
            format_args!("EFER.SVME"),
            wrmsr(EFER, before | (1 << 12)),
            X86_GP,
        )?;
    }
    // LME cannot change while paging is on.
    expect(
        format_args!("clearing EFER.LME with paging on"),
        wrmsr(EFER, before & !(1 << 8)),
        X86_GP,
    )?;
    let now = rdmsr(EFER);
    if now != before {
        fail!("EFER {before:#x} became {now:#x}");
    }
    if let (Some(c), _) = wrmsr(EFER, before) {
        fail!("rewriting EFER {before:#x}: exception {}", c.vector);
    }
    Ok(())
}

pub(super) fn check_xcr0_invalid(r: &mut Report<impl Write>) -> Outcome {
    const OSXSAVE: u64 = 1 << 18;
    let xsave = cpuid(1)[2] & (1 << 26) != 0;
    let cr4 = read_cr4();
    if !xsave {
        r.note(format_args!("XSAVE not offered: XSETBV must be #UD"));
        expect(format_args!("XSETBV without OSXSAVE"), xsetbv(0, 1), X86_UD)?;
        expect(
            format_args!("CR4.OSXSAVE without XSAVE"),
            write_cr4(cr4 | OSXSAVE),
            X86_GP,
        )?;
        return Ok(());
    }
    let offered = {
        let d = cpuid_sub(0xD, 0);
        (u64::from(d[3]) << 32) | u64::from(d[0])
    };
    r.note(format_args!("XSAVE offered, XCR0 components {offered:#x}"));
    if let (Some(c), _) = write_cr4(cr4 | OSXSAVE) {
        fail!("setting CR4.OSXSAVE: exception {}", c.vector);
    }
    let mut res = (|| {
        expect(format_args!("XCR0 = 0"), xsetbv(0, 0), X86_GP)?;
        expect(format_args!("XCR0 = SSE only"), xsetbv(0, 2), X86_GP)?;
        expect(format_args!("XCR0 AVX without SSE"), xsetbv(0, 5), X86_GP)?;
        expect(format_args!("XCR1"), xsetbv(1, 1), X86_GP)?;
        expect(
            format_args!("XCR0 with an unoffered component"),
            xsetbv(0, 1 | (1 << 62)),
            X86_GP,
        )?;
        if let (Some(c), _) = xsetbv(0, 1) {
            fail!("XCR0 = x87: exception {}", c.vector);
        }
        Ok(())
    })();
    if let (Some(c), _) = write_cr4(cr4)
        && res.is_ok()
    {
        res = Err(why(format_args!("restoring CR4: exception {}", c.vector)));
    }
    res
}
