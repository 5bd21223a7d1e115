//! The checks that touch the (virtual) hardware from 32-bit protected
//! mode with paging off: unbacked guest-physical memory, the local APIC's
//! modes and the control-register checks; the exceptions they expect are
//! caught by [`catch`] sections.

// Failure reasons are formatted into a fixed buffer: this kernel has no
// heap to box them, and they only travel one call up.
#![allow(
    clippy::result_large_err,
    reason = "no heap; the reason buffer lives on the stack"
)]

use super::*;

const X86_GP: u8 = 13;

/// `r` must be `#GP(0)` raised at `at`, the instruction itself (EIP not
/// advanced).
fn expect_gp(what: core::fmt::Arguments<'_>, r: (Option<Caught>, u32)) -> Result<(), Msg> {
    let (c, at) = r;
    match c {
        Some(c) if c.vector == X86_GP && c.error == 0 && c.eip == at => Ok(()),
        Some(c) => fail!(
            "{what}: exception {} error {:#x} at {:#x}, want #GP(0) at {at:#x}",
            c.vector,
            c.error,
            c.eip
        ),
        None => fail!("{what}: no exception, want #GP(0)"),
    }
}

fn rdmsr(msr: u32) -> (Option<Caught>, u32, u64) {
    let (lo, hi): (u32, u32);
    let (c, at) = catch!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi);
    (c, at, (u64::from(hi) << 32) | u64::from(lo))
}

fn wrmsr(msr: u32, v: u64) -> (Option<Caught>, u32) {
    catch!("wrmsr", in("ecx") msr, in("eax") v as u32, in("edx") (v >> 32) as u32)
}

fn write_cr0(v: u32) -> (Option<Caught>, u32) {
    catch!("mov cr0, {v}", v = in(reg) v)
}

fn write_cr4(v: u32) -> (Option<Caught>, u32) {
    catch!("mov cr4, {v}", v = in(reg) v)
}

fn read_cr0() -> u32 {
    let v: u32;
    // SAFETY: reading CR0 at CPL 0 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr0", out(reg) v, options(nomem, nostack)) };
    v
}

fn read_cr4() -> u32 {
    let v: u32;
    // SAFETY: reading CR4 at CPL 0 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr4", out(reg) v, options(nomem, nostack)) };
    v
}

fn cpuid_sub(leaf: u32, sub: u32) -> [u32; 4] {
    let r = core::arch::x86::__cpuid_count(leaf, sub);
    [r.eax, r.ebx, r.ecx, r.edx]
}

// ---------------------------------------------------------------------
// unbacked_mmio

/// The HPET's usual base.
const HPET: u32 = 0xFED0_0000;
/// The last page of the first GiB (above the guest's RAM).
const TOP_HOLE: u32 = 0x3FFF_F000;

/// Loads and stores at guest-physical addresses with no RAM and no device
/// behind them (0xFED00000, the top of the first GiB; paging is off, so
/// these are the linear addresses too) complete as on Xen: reads give
/// all-ones of the access size, writes are dropped, and the guest goes
/// on. The forms: MOV loads of 1, 2 and 4 bytes, the 32-bit moffs form
/// (`A1`, an absolute address), an 8-bit load merged into EAX, MOVZX,
/// CMP (its flags), a store, `LOCK OR`, `REP STOSD` and `REP MOVSD` from
/// the hole into RAM.
pub(super) fn unbacked_mmio(r: &mut Report<DebugCon>) {
    done(r, "unbacked_mmio", unbacked_mmio_inner());
}

fn unbacked_mmio_inner() -> Result<(), Msg> {
    ARGS.put(
        0,
        &cm::CompatMemoryMap {
            nr_entries: 16,
            buffer: BUF_A.addr(),
        },
    );
    let ret = memory_op(m::XENMEM_memory_map, ARGS.addr());
    let n = ARGS.get::<cm::CompatMemoryMap>(0).nr_entries as usize;
    if ret != 0 || n == 0 {
        return fail!("XENMEM_memory_map: {ret}, {n} entries");
    }
    for at in [HPET, TOP_HOLE] {
        for i in 0..n.min(16) {
            let e: m::E820Entry = BUF_A.get(i * 20);
            let (addr, size) = (e.addr, e.size);
            if addr <= u64::from(at) && u64::from(at) < addr + size {
                return fail!("{at:#x} is in a memory map entry at {addr:#x}");
            }
        }
    }
    for at in [HPET, TOP_HOLE] {
        probe(at)?;
    }
    // The absolute (moffs) form, at the HPET.
    let moffs: u32;
    // SAFETY: a load from the unbacked HPET address (checked above).
    unsafe {
        core::arch::asm!("mov eax, dword ptr [0xFED00010]", out("eax") moffs, options(nostack))
    };
    if moffs != u32::MAX {
        return fail!("moffs load from 0xfed00010: {moffs:#x}, want all-ones");
    }
    Ok(())
}

fn probe(at: u32) -> Result<(), Msg> {
    let p = at as usize as *mut u8;
    // SAFETY: paging is off and no memory map entry covers `at`: there is
    // nothing behind it that an access could change. Volatile, so each
    // access happens as written.
    let (b, w, d) = unsafe {
        (
            p.add(0xF0).read_volatile(),
            p.add(0x10).cast::<u16>().read_volatile(),
            p.cast::<u32>().read_volatile(),
        )
    };
    if (b, w, d) != (0xFF, 0xFFFF, 0xFFFF_FFFF) {
        return fail!("{at:#x}: read {b:#x}/{w:#x}/{d:#x}, want all-ones");
    }
    // A store is dropped: the next load gives all-ones again.
    // SAFETY: as above.
    let d = unsafe {
        p.add(0x20).cast::<u32>().write_volatile(0x1234_5678);
        p.add(0x20).cast::<u32>().read_volatile()
    };
    if d != 0xFFFF_FFFF {
        return fail!("{at:#x}: read {d:#x} after a store, want all-ones");
    }
    // Register semantics: an 8-bit load keeps the rest of EAX, MOVZX
    // clears the upper half; CMP with memory sets ZF for all-ones == -1;
    // LOCK OR (a `volatile |=`) is dropped like a store.
    let (merged, zx, eq): (u32, u32, u8);
    // SAFETY: loads, a compare and a locked OR at `at`, as above; only the
    // named registers change.
    unsafe {
        core::arch::asm!(
            "mov eax, 0x11223300",
            "mov al, byte ptr [{a}]",
            "mov ecx, -1",
            "movzx ecx, word ptr [{a} + 2]",
            "lock or dword ptr [{a} + 4], 1",
            "cmp dword ptr [{a} + 4], -1",
            "sete {e}",
            a = in(reg) at,
            e = out(reg_byte) eq,
            out("eax") merged,
            out("ecx") zx,
            options(nostack)
        );
    }
    if (merged, zx, eq) != (0x1122_33FF, 0xFFFF, 1) {
        return fail!("{at:#x}: mov al {merged:#x}, movzx {zx:#x}, lock or + cmp/sete {eq}");
    }
    // REP STOSD: four stores dropped, EDI and ECX moved on.
    let (edi, ecx): (u32, u32);
    // SAFETY: stores to `at`, as above; DF is clear (cld at entry).
    unsafe {
        core::arch::asm!(
            "rep stosd",
            inout("edi") at + 0x40 => edi,
            inout("ecx") 4u32 => ecx,
            in("eax") 0xDEAD_BEEFu32,
            options(nostack)
        );
    }
    // SAFETY: as above.
    let d = unsafe { p.add(0x44).cast::<u32>().read_volatile() };
    if (edi, ecx, d) != (at + 0x50, 0, 0xFFFF_FFFF) {
        return fail!("{at:#x}: rep stosd left edi {edi:#x} ecx {ecx}, then read {d:#x}");
    }
    // REP MOVSD from the hole into RAM (memcpy_fromio): all-ones arrive,
    // ESI, EDI and ECX move on.
    BUF_B.put(0, &[0u32; 5]);
    let (src, dst, left): (u32, u32, u32);
    // SAFETY: reads at `at` (as above) and writes 16 bytes of BUF_B; ESI
    // (LLVM's base pointer) is swapped in and back; DF is clear.
    unsafe {
        core::arch::asm!(
            "xchg esi, {s}",
            "rep movsd",
            "xchg esi, {s}",
            s = inout(reg) at + 0x60 => src,
            inout("edi") BUF_B.addr() => dst,
            inout("ecx") 4u32 => left,
            options(nostack)
        );
    }
    let copied: [u32; 5] = BUF_B.get(0);
    if (src, dst, left) != (at + 0x70, BUF_B.addr() + 16, 0)
        || copied != [u32::MAX, u32::MAX, u32::MAX, u32::MAX, 0]
    {
        return fail!(
            "{at:#x}: rep movsd left esi {src:#x} edi {dst:#x} ecx {left}, copied {:#x} {:#x} {:#x} {:#x} {:#x}",
            copied[0],
            copied[1],
            copied[2],
            copied[3],
            copied[4]
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------
// cr4_unoffered_gp, cr0_invalid_gp

/// Setting a CR4 bit CPUID does not offer (UMIP, PKE, LA57, VMXE,
/// OSXSAVE, whichever are absent; Xen's `hvm_cr4_guest_valid_bits`), or
/// CR4.PCIDE outside long mode (offered or not), raises `#GP(0)` at the
/// `MOV CR4`; CR4 stays as it was and a legal write still works.
pub(super) fn cr4_unoffered_gp(r: &mut Report<DebugCon>) {
    let res = cr4_inner(r);
    done(r, "cr4_unoffered_gp", res);
}

fn cr4_inner(r: &mut Report<DebugCon>) -> Result<(), Msg> {
    let c1 = cpuid(1);
    let c7 = if cpuid(0)[0] >= 7 {
        cpuid_sub(7, 0)
    } else {
        [0; 4]
    };
    let before = read_cr4();
    let mut tried = 0;
    for (name, bit, offered) in [
        ("UMIP", 1u32 << 11, c7[2] & (1 << 2) != 0),
        ("PKE", 1 << 22, c7[2] & (1 << 3) != 0),
        ("LA57", 1 << 12, c7[2] & (1 << 16) != 0),
        ("VMXE", 1 << 13, c1[2] & (1 << 5) != 0),
        ("OSXSAVE", 1 << 18, c1[2] & (1 << 26) != 0),
    ] {
        if offered {
            continue;
        }
        r.note(format_args!("CR4.{name} not offered: expecting #GP"));
        expect_gp(format_args!("CR4.{name}"), write_cr4(before | bit))?;
        let now = read_cr4();
        if now != before {
            return fail!("CR4.{name}: CR4 {before:#x} became {now:#x}");
        }
        tried += 1;
    }
    if tried == 0 {
        return fail!("every candidate CR4 bit is offered");
    }
    // PCIDE can only be set in long mode (SDM "Process-Context
    // Identifiers"), whatever CPUID says.
    expect_gp(
        format_args!("CR4.PCIDE outside long mode"),
        write_cr4(before | (1 << 17)),
    )?;
    let now = read_cr4();
    if now != before {
        return fail!("CR4.PCIDE: CR4 {before:#x} became {now:#x}");
    }
    if let (Some(c), _) = write_cr4(before) {
        return fail!("rewriting CR4 {before:#x}: exception {}", c.vector);
    }
    Ok(())
}

/// Illegal CR0 values raise `#GP(0)` at the `MOV CR0`: PG without PE, PG
/// with EFER.LME but without CR4.PAE (a 32-bit kernel's failed switch to
/// long mode; EFER.LME itself is legal with paging off and reads back),
/// and NW without CD (left out with `skip=cr0-nw` on the command line, as
/// the 64-bit guest does on Xen 4.17, whose SVM side lets that value reach
/// the VMCB: docs/xen-differences.md). CR0 and EFER stay as they were.
///
/// The LME case once took the whole machine down under QEMU, whose SVM
/// #VMEXIT loads the host's CR0 while the guest's EFER and CR4 are still
/// in place and then leaves the host without paging; the SVM backend now
/// keeps LME out of the VMCB while the guest's paging is off
/// (`SvmVcpu::load_efer`).
pub(super) fn cr0_invalid_gp(r: &mut Report<DebugCon>, skip_nw: bool) {
    let res = cr0_inner(r, skip_nw);
    done(r, "cr0_invalid_gp", res);
}

fn cr0_inner(r: &mut Report<DebugCon>, skip_nw: bool) -> Result<(), Msg> {
    const PE: u32 = 1;
    const NW: u32 = 1 << 29;
    const CD: u32 = 1 << 30;
    const PG: u32 = 1 << 31;
    let before = read_cr0();
    if before & (PG | NW) != 0 || before & PE == 0 {
        return fail!("CR0 {before:#x} at the start: protected mode without paging expected");
    }
    expect_gp(
        format_args!("CR0.PG without PE"),
        write_cr0((before | PG) & !PE),
    )?;
    const EFER: u32 = 0xC000_0080;
    const LME: u64 = 1 << 8;
    let efer = match rdmsr(EFER) {
        (None, _, v) => v,
        (Some(c), _, _) => return fail!("rdmsr EFER: exception {}", c.vector),
    };
    if efer & LME != 0 {
        return fail!("EFER {efer:#x} at the start: LME set");
    }
    if let (Some(c), _) = wrmsr(EFER, efer | LME) {
        return fail!("EFER.LME with paging off: exception {}", c.vector);
    }
    let lme = rdmsr(EFER);
    let gp = expect_gp(
        format_args!("CR0.PG with EFER.LME and without CR4.PAE"),
        write_cr0(before | PG),
    );
    let restored = wrmsr(EFER, efer);
    if lme.0.is_some() || lme.2 != efer | LME {
        return fail!("EFER read {:#x} after setting LME on {efer:#x}", lme.2);
    }
    gp?;
    if let (Some(c), _) = restored {
        return fail!("clearing EFER.LME: exception {}", c.vector);
    }
    if skip_nw {
        r.note(format_args!(
            "CR0.NW without CD: left out (skip=cr0-nw on the command line)"
        ));
    } else {
        expect_gp(
            format_args!("CR0.NW without CD"),
            write_cr0((before | NW) & !CD),
        )?;
    }
    let now = read_cr0();
    if now != before {
        return fail!("CR0 {before:#x} became {now:#x}");
    }
    if let (Some(c), _) = write_cr0(before) {
        return fail!("rewriting CR0 {before:#x}: exception {}", c.vector);
    }
    Ok(())
}

// ---------------------------------------------------------------------
// apic_modes

const APIC_BASE: u32 = 0x1B;
const EN: u64 = 1 << 11;
const EXTD: u64 = 1 << 10;
const BSP: u64 = 1 << 8;
const X2_ID: u32 = 0x802;
const X2_VERSION: u32 = 0x803;
const X2_TPR: u32 = 0x808;
const X2_SVR: u32 = 0x80F;
const X2_LVT_TIMER: u32 = 0x832;
const XAPIC: u32 = 0xFEE0_0000;

fn read(msr: u32) -> Result<u64, Msg> {
    match rdmsr(msr) {
        (None, _, v) => Ok(v),
        (Some(c), _, _) => fail!("rdmsr {msr:#x}: exception {}", c.vector),
    }
}

fn write(msr: u32, v: u64) -> Result<(), Msg> {
    match wrmsr(msr, v) {
        (None, _) => Ok(()),
        (Some(c), _) => fail!("wrmsr {msr:#x} {v:#x}: exception {}", c.vector),
    }
}

/// Register `msr` (x2APIC numbering) in the current mode: the MSR in
/// x2APIC mode, else the xAPIC page at offset (msr - 0x800) * 16.
fn get(x2: bool, msr: u32) -> Result<u64, Msg> {
    if x2 {
        read(msr)
    } else {
        let at = XAPIC + (msr - 0x800) * 16;
        // SAFETY: paging is off; the xAPIC page is the local APIC's; a
        // read of these registers has no side effect.
        Ok(u64::from(unsafe {
            (at as usize as *const u32).read_volatile()
        }))
    }
}

fn set(x2: bool, msr: u32, v: u64) -> Result<(), Msg> {
    if x2 {
        write(msr, v)
    } else {
        let at = XAPIC + (msr - 0x800) * 16;
        // SAFETY: as for `get`; the caller writes back a value the
        // register held.
        unsafe { (at as usize as *mut u32).write_volatile(v as u32) };
        Ok(())
    }
}

/// The APIC ID in the current mode (xAPIC: bits 31:24 of the register).
fn apic_id(x2: bool) -> Result<u64, Msg> {
    Ok(if x2 {
        read(X2_ID)?
    } else {
        get(false, X2_ID)? >> 24
    })
}

/// The local APIC moves between its modes as the SDM allows
/// (IA32_APIC_BASE, MSR 0x1B), as the 64-bit guest's `apic_modes`: from
/// xAPIC mode it first goes to x2APIC (same ID); x2APIC -> xAPIC and EXTD
/// without EN are `#GP`; x2APIC -> disabled works and the x2APIC MSRs are
/// then `#GP`; disabled -> x2APIC is `#GP`; disabled -> xAPIC works, and
/// in xAPIC mode the ID at 0xFEE00020 (bits 31:24) and the version at
/// 0xFEE00030 match the x2APIC ones while the x2APIC MSRs are `#GP`. The
/// guest ends in the mode it started in with SVR, TPR and the LVT timer
/// written back.
pub(super) fn apic_modes(r: &mut Report<DebugCon>) {
    let res = apic_inner(r);
    done(r, "apic_modes", res);
}

fn apic_inner(r: &mut Report<DebugCon>) -> Result<(), Msg> {
    let base = read(APIC_BASE)?;
    let (addr, bsp) = (base & !0xFFF, base & BSP);
    let start_x2 = match base & (EN | EXTD) {
        m if m == EN | EXTD => true,
        EN => false,
        _ => return fail!("IA32_APIC_BASE {base:#x}: the APIC is not enabled at start"),
    };
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
            write(APIC_BASE, addr | bsp | EN | EXTD)?;
            let x2id = read(X2_ID)?;
            if x2id != id {
                return fail!("x2APIC ID {x2id} after xAPIC ID {id}");
            }
        }
        expect_gp(
            format_args!("x2APIC -> xAPIC"),
            wrmsr(APIC_BASE, addr | bsp | EN),
        )?;
        expect_gp(
            format_args!("EXTD without EN"),
            wrmsr(APIC_BASE, addr | bsp | EXTD),
        )?;
        write(APIC_BASE, addr | bsp)?;
        let (c, at, _) = rdmsr(X2_ID);
        expect_gp(format_args!("x2APIC ID while disabled"), (c, at))?;
        expect_gp(
            format_args!("disabled -> x2APIC"),
            wrmsr(APIC_BASE, addr | bsp | EN | EXTD),
        )?;
        write(APIC_BASE, addr | bsp | EN)?;
        let now = read(APIC_BASE)?;
        if now != addr | bsp | EN {
            return fail!("IA32_APIC_BASE in xAPIC mode reads {now:#x}");
        }
        let xid = get(false, X2_ID)? as u32;
        let xver = get(false, X2_VERSION)?;
        r.note(format_args!(
            "xAPIC ID register {xid:#x}, version {xver:#x}"
        ));
        if u64::from(xid >> 24) != id & 0xFF || xid & 0x00FF_FFFF != 0 {
            return fail!("xAPIC ID register {xid:#x}, want {id} in bits 31:24");
        }
        if xver != version {
            return fail!("xAPIC version {xver:#x}, want {version:#x}");
        }
        let (c, at, _) = rdmsr(X2_ID);
        expect_gp(format_args!("x2APIC ID in xAPIC mode"), (c, at))?;
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
        return fail!("APIC ID {back} after the round trip, want {id}");
    }
    Ok(())
}
