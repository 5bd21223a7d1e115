//! Edits to the hypervisor's own page tables: unmapping single 4 KiB pages
//! (the guard pages below the AP stacks).
//!
//! `boot.rs` identity-maps the first 4 GiB with 2 MiB pages, and every CPU
//! runs on those same tables (the AP trampoline loads the boot CPU's CR3).
//! To unmap one 4 KiB page, its 2 MiB mapping is first split into a page
//! table of 512 4 KiB entries with the same frames and attributes
//! (`hypervisor::pte::split_2m`, host-tested), then the one entry is
//! cleared. Every other address keeps its translation.

use crate::boot::IDENTITY_MAPPED;
use crate::memory::FRAMES;
use hypervisor::pte::{self, ADDR, P, PS, W};

/// Why a page could not be unmapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnmapError {
    /// The address is not page-aligned or lies outside the identity map.
    BadAddress,
    /// A level of the walk is not present, or is a 1 GiB page (the boot
    /// tables have none).
    Unexpected,
    /// No frame for the new page table.
    NoMemory,
}

/// Unmaps the 4 KiB page at `va` (identity-mapped) from the page tables in
/// CR3, splitting its 2 MiB mapping if needed, and flushes this CPU's TLB.
///
/// # Safety
/// 1. No other CPU has run on these page tables yet (so none holds a stale
///    translation: only this CPU's TLB is flushed), and nobody else edits
///    them at the same time.
/// 2. Nothing uses the page at `va` from now on (it faults when touched).
pub unsafe fn unmap_4k(va: u64) -> Result<(), UnmapError> {
    if !va.is_multiple_of(4096) || va >= IDENTITY_MAPPED {
        return Err(UnmapError::BadAddress);
    }
    let cr3: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack)) };
    let entry_at = |table: u64, level: u32| (table & ADDR) + pte::index(va, level) * 8;
    let read = |at: u64| {
        // SAFETY: `at` is an entry of a present table; every table lives in
        // the identity map (boot.rs's, or a frame from FRAMES below 4 GiB),
        // so the address is a valid, aligned pointer.
        unsafe { core::ptr::read_volatile(at as *const u64) }
    };
    let pml4e = read(entry_at(cr3, 4));
    if pml4e & P == 0 {
        return Err(UnmapError::Unexpected);
    }
    let pdpte = read(entry_at(pml4e, 3));
    if pdpte & P == 0 || pdpte & PS != 0 {
        return Err(UnmapError::Unexpected);
    }
    let pde_at = entry_at(pdpte, 2);
    let pde = read(pde_at);
    if pde & P == 0 {
        return Err(UnmapError::Unexpected);
    }
    let table = if pde & PS != 0 {
        let table = FRAMES
            .lock()
            .alloc(4096, 4096, IDENTITY_MAPPED)
            .map_err(|_| UnmapError::NoMemory)?;
        for i in 0..512 {
            // SAFETY: the frame was just taken from the allocator (nothing
            // else uses it) and is identity-mapped; 512 entries fill it.
            unsafe {
                core::ptr::write_volatile((table as *mut u64).add(i), pte::split_2m(pde, i as u64))
            };
        }
        // SAFETY: duty 1: no other CPU walks this entry; the new table maps
        // exactly what the 2 MiB leaf mapped, so no translation changes.
        unsafe { core::ptr::write_volatile(pde_at as *mut u64, table | P | W) };
        table
    } else {
        pde & ADDR
    };
    // SAFETY: duty 2: nothing uses the page any more; duty 1: no other CPU
    // holds a translation for it. The entry is in a present page table.
    unsafe { core::ptr::write_volatile(entry_at(table, 1) as *mut u64, 0) };
    // SAFETY: reloading CR3 with its own value flushes this CPU's
    // non-global translations (the boot tables set no global bit): the old
    // 2 MiB entry and the unmapped page are gone.
    unsafe { core::arch::asm!("mov cr3, {}", in(reg) cr3, options(nostack)) };
    Ok(())
}
