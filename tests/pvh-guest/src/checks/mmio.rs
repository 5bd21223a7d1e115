//! `unbacked_mmio`: loads and stores at guest-physical addresses with no
//! RAM and no device behind them complete as on Xen (the null MMIO
//! handler): reads give all-ones of the access size, writes are dropped,
//! and the kernel goes on.
//!
//! Two places: 0xFED00000, where a kernel probes for an HPET (GiB 3,
//! mapped for the check with [`boot::map_gib`](crate::boot::map_gib)), and
//! the last page of the identity-mapped first GiB, past every memory map
//! entry (the top of the guest's RAM hole). The forms: MOV loads of 1, 2,
//! 4 and 8 bytes (with the old register contents around an 8-bit load
//! kept, as x86 merges), MOVZX, a store, `CMP` with memory (its flags) and
//! `REP STOSD`.

use super::*;

/// The HPET's usual base.
const HPET: u64 = 0xFED0_0000;
/// The last page of the first GiB.
const TOP_HOLE: u64 = MAPPED - 4096;

pub(super) fn check_unbacked_mmio(ctx: &mut Ctx) -> Outcome {
    let mut buf = [E820Entry::default(); MAX_MAP];
    let n = match ctx.hc.memory_map(&mut buf) {
        Ok(n) => n,
        Err(e) => fail!("XENMEM_memory_map: {e}"),
    };
    for (what, at) in [("HPET", HPET), ("top of the RAM hole", TOP_HOLE)] {
        if let Some(e) = buf[..n]
            .iter()
            .find(|e| e.addr <= at && e.end().is_none_or(|end| end > at))
        {
            let base = e.addr;
            fail!("{what} {at:#x} is in a memory map entry at {base:#x}");
        }
    }
    crate::boot::map_gib((HPET >> 30) as usize);
    for at in [HPET, TOP_HOLE] {
        probe(at)?;
    }
    Ok(())
}

fn probe(at: u64) -> Outcome {
    let p = at as *mut u8;
    // SAFETY: `at` is identity-mapped (the boot map or map_gib) and no
    // memory map entry covers it: there is nothing behind it that an
    // access could change. Volatile, so each access happens as written.
    let (b, w, d, q) = unsafe {
        (
            p.add(0xF0).read_volatile(),
            p.add(0x10).cast::<u16>().read_volatile(),
            p.cast::<u32>().read_volatile(),
            p.add(8).cast::<u64>().read_volatile(),
        )
    };
    if (b, w, d, q) != (0xFF, 0xFFFF, 0xFFFF_FFFF, u64::MAX) {
        fail!("{at:#x}: read {b:#x}/{w:#x}/{d:#x}/{q:#x}, want all-ones");
    }
    // A store is dropped: the next load gives all-ones again.
    // SAFETY: as above.
    let d = unsafe {
        p.add(0x20).cast::<u32>().write_volatile(0x1234_5678);
        p.add(0x20).cast::<u32>().read_volatile()
    };
    if d != 0xFFFF_FFFF {
        fail!("{at:#x}: read {d:#x} after a store, want all-ones");
    }
    // Register semantics: an 8-bit load keeps the rest of RAX, MOVZX
    // clears it; CMP with memory sets ZF for all-ones == -1.
    let (merged, zx, eq): (u64, u64, u8);
    // SAFETY: loads and a compare at `at`, as above; only the named
    // registers change.
    unsafe {
        core::arch::asm!(
            "mov rax, 0x1122334455667700",
            "mov al, byte ptr [{a}]",
            "mov {m}, rax",
            "mov rcx, -1",
            "movzx ecx, word ptr [{a} + 2]",
            "mov {z}, rcx",
            "cmp dword ptr [{a} + 4], -1",
            "sete {e}",
            a = in(reg) at,
            m = out(reg) merged,
            z = out(reg) zx,
            e = out(reg_byte) eq,
            out("rax") _,
            out("rcx") _,
            options(nostack)
        );
    }
    if (merged, zx, eq) != (0x1122_3344_5566_77FF, 0xFFFF, 1) {
        fail!("{at:#x}: mov al {merged:#x}, movzx {zx:#x}, cmp/sete {eq}");
    }
    // REP STOSD: four stores dropped, RDI and RCX moved on.
    let (rdi, rcx): (u64, u64);
    // SAFETY: stores to `at`, as above; DF is clear (the ABI).
    unsafe {
        core::arch::asm!(
            "rep stosd",
            inout("rdi") at + 0x40 => rdi,
            inout("rcx") 4u64 => rcx,
            in("eax") 0xDEAD_BEEFu32,
            options(nostack)
        );
    }
    // SAFETY: as above.
    let d = unsafe { p.add(0x44).cast::<u32>().read_volatile() };
    if (rdi, rcx, d) != (at + 0x50, 0, 0xFFFF_FFFF) {
        fail!("{at:#x}: rep stosd left rdi {rdi:#x} rcx {rcx}, then read {d:#x}");
    }
    Ok(())
}
