//! Starting the application processors (APs).
//!
//! An AP wakes from INIT-SIPI-SIPI in real mode at `vector << 12`. We copy a
//! small position-independent trampoline to [`TRAMPOLINE`] (below 1 MiB; the
//! frame allocator never hands out the first MiB). The trampoline clears
//! CR0.CD/NW (an AP leaves reset with caches disabled), loads the boot GDT,
//! enables PAE, loads the boot CR3, sets EFER.LME, turns on PE and PG
//! together and far-jumps into `ap_long_entry` in the image.
//!
//! **Hand-over.** Every AP has its own slot in [`AP_SLOTS`], keyed by its
//! APIC id, which `ap_long_entry` reads from CPUID (leaf 0xB, else leaf 1)
//! and looks up. So no variable is shared between two APs: an AP that
//! comes up after the boot CPU gave up on it still finds its own slot, its
//! own stack and tables, and never another AP's. The boot CPU fills every
//! slot before it starts the first AP: a stack of [`AP_STACK_SIZE`] bytes
//! with an unmapped 4 KiB guard page below it (`paging::unmap_4k` splits
//! the 2 MiB boot mapping; done while no AP runs, so no other TLB needs a
//! flush), and the AP's `CpuTables` (GDT, TSS, IST stacks).
//!
//! **Order on the AP.** `ap_long_entry` loads the IDT (an IDTR built on the
//! AP's new stack) before it calls any Rust code, so anything that faults
//! from then on gets the exception report; [`ap_entry`] then loads its own
//! GDT/TSS, claims its slot (`WAITING` -> `ONLINE`) and only then enables
//! its APIC, prints and allocates. Until `ltr`, the NMI/#DF/#MC gates' IST
//! stacks are not set up (a few instructions).
//!
//! **Time-outs.** The boot CPU waits 100 ms for each AP to claim its slot,
//! then marks it `ABANDONED` with the same compare-and-swap; a late AP
//! that loses that race parks itself (`cli; hlt`) on its own stack without
//! touching shared state. CPU indices are dense: an AP takes its index only
//! once it is `ONLINE`.

use crate::boot::IDENTITY_MAPPED;
use crate::cpu::CpuTables;
use crate::hostplat::MAX_CPUS;
use crate::memory::FRAMES;
use crate::platform::{self, ICR_INIT, ICR_STARTUP, LocalApic};
use core::mem::offset_of;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Physical address the trampoline runs at (SIPI vector 0x08).
pub const TRAMPOLINE: u64 = 0x8000;
/// Stack size for each AP (the guard page comes on top).
const AP_STACK_SIZE: u64 = 64 * 1024;
/// The unmapped page below each AP stack.
const GUARD_SIZE: u64 = 4096;

/// A slot nobody uses (its APIC id matches no CPU).
const NO_CPU: u32 = u32::MAX;
/// Slot states.
const FREE: u32 = 0;
/// Filled by the boot CPU; the AP may claim it.
const WAITING: u32 = 1;
/// Claimed by its AP, which is running.
const ONLINE: u32 = 2;
/// The boot CPU gave up waiting; a late AP parks.
const ABANDONED: u32 = 3;

/// One AP's hand-over, found by the AP through its APIC id.
///
/// # Concurrency
/// The boot CPU writes `stack_top`, `tables` and `state` = `WAITING`, then
/// publishes the slot by storing `apic_id` (release); the AP reads
/// `apic_id` and `stack_top` in `ap_long_entry` (the SIPI orders them after
/// the publication) and `tables` after claiming. `state` moves once, by
/// compare-and-swap, from `WAITING` to `ONLINE` (the AP) or `ABANDONED`
/// (the boot CPU), whichever comes first. `index` is written by the AP.
#[repr(C)]
pub struct ApSlot {
    apic_id: AtomicU32,
    state: AtomicU32,
    stack_top: AtomicU64,
    tables: AtomicU64,
    index: AtomicU32,
}

/// The hand-over slots, one per possible AP.
static AP_SLOTS: [ApSlot; MAX_CPUS] = [const {
    ApSlot {
        apic_id: AtomicU32::new(NO_CPU),
        state: AtomicU32::new(FREE),
        stack_top: AtomicU64::new(0),
        tables: AtomicU64::new(0),
        index: AtomicU32::new(0),
    }
}; MAX_CPUS];
/// The IDT's base, for `ap_long_entry` (written before any AP starts).
static AP_IDT_BASE: AtomicU64 = AtomicU64::new(0);
/// The next CPU index an AP takes once online.
static NEXT_INDEX: AtomicU32 = AtomicU32::new(1);
/// CPUs online, the boot CPU included.
pub static CPUS_ONLINE: AtomicU32 = AtomicU32::new(1);
/// The xAPIC base for APs (x2APIC ignores it).
static LAPIC_BASE: AtomicU64 = AtomicU64::new(0);
/// `selftest=ap-stack`: the APIC id of the AP that overflows its stack on
/// purpose once online ([`NO_CPU`]: none).
static OVERFLOW_AP: AtomicU32 = AtomicU32::new(NO_CPU);
/// Set by [`overflow_last_ap_stack`], read by `start_aps`.
static OVERFLOW_WANTED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// CPUs running: the boot CPU and every AP that claimed its slot (exact as
/// soon as an AP runs Rust code, unlike [`CPUS_ONLINE`], which the boot
/// CPU counts after it sees the claim).
pub fn cpus_running() -> u32 {
    1 + AP_SLOTS
        .iter()
        .filter(|s| s.state.load(Ordering::SeqCst) == ONLINE)
        .count() as u32
}

/// `selftest=ap-stack`: the last AP started runs off the bottom of its
/// stack into the guard page once online (a double fault on that AP).
pub fn overflow_last_ap_stack() {
    OVERFLOW_WANTED.store(true, Ordering::SeqCst);
}

core::arch::global_asm!(
    r#"
    .section .rodata.ap_trampoline, "a"
    .global ap_trampoline_start, ap_trampoline_end
    .code16
ap_trampoline_start:
    jmp 3f
    /* Data at fixed offsets: real-mode code addresses it as DS:offset. */
    .balign 8
ap_gdt_ptr:                               /* offset 8 */
    .word 23
    .long ap_gdt
    .word 0
    .global ap_cr3
ap_cr3:                                   /* offset 16 */
    .long 0
    .long 0
3:  cli
    cld
    mov ax, cs
    mov ds, ax
    /* lgdt with a 32-bit base: operand-size prefix */
    .byte 0x66
    lgdt [8]
    mov eax, cr4
    or eax, 1 << 5                        /* PAE */
    mov cr4, eax
    mov eax, dword ptr [16]
    mov cr3, eax
    mov ecx, 0xC0000080                   /* EFER */
    rdmsr
    or eax, 1 << 8                        /* LME */
    wrmsr
    mov eax, cr0
    and eax, 0x9FFFFFFF                   /* caches on: clear CD (30), NW (29) */
    or eax, 0x80010001                    /* PG | WP | PE */
    mov cr0, eax
    /* far jump to 64-bit code: jmp dword 0x08:ap_long_entry */
    .byte 0x66, 0xea
    .long ap_long_entry
    .word 0x08
ap_trampoline_end:

    .section .rodata.ap_gdt, "a"
    .balign 16
ap_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF
    .quad 0x00CF92000000FFFF

    .section .text.ap_entry, "ax"
    .code64
ap_long_entry:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    /* This CPU's APIC id: CPUID 0xB's x2APIC id when the leaf exists,
       else the initial APIC id in CPUID 1 EBX[31:24]. */
    xor eax, eax
    cpuid
    mov r8d, eax
    mov eax, 1
    cpuid
    shr ebx, 24
    mov r9d, ebx
    cmp r8d, 0xB
    jb 4f
    mov eax, 0xB
    xor ecx, ecx
    cpuid
    test ebx, ebx
    jz 4f
    mov r9d, edx
4:  /* Find our slot. */
    lea rsi, [rip + {slots}]
    mov ecx, {max_cpus}
5:  cmp dword ptr [rsi + {off_id}], r9d
    je 6f
    add rsi, {slot_size}
    dec ecx
    jnz 5b
    jmp 9f                                /* no slot: not ours to run */
6:  mov rsp, qword ptr [rsi + {off_stack}]
    test rsp, rsp
    jz 9f
    mov rax, qword ptr [rip + {idt_base}]
    test rax, rax
    jz 9f
    /* The IDT first: an IDTR (limit, base) on the new stack. */
    sub rsp, 16
    mov word ptr [rsp + 6], {idt_limit}
    mov qword ptr [rsp + 8], rax
    lidt [rsp + 6]
    add rsp, 16
    mov rdi, rsi
    xor ebp, ebp
    call {entry}
9:  cli
    hlt
    jmp 9b
    "#,
    slots = sym AP_SLOTS,
    max_cpus = const MAX_CPUS,
    slot_size = const core::mem::size_of::<ApSlot>(),
    off_id = const offset_of!(ApSlot, apic_id),
    off_stack = const offset_of!(ApSlot, stack_top),
    idt_base = sym AP_IDT_BASE,
    idt_limit = const crate::cpu::IDT_LIMIT,
    entry = sym ap_entry,
);

unsafe extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
    static ap_cr3: u8;
}

/// Offset of `ap_cr3` in the trampoline; the real-mode code reads it at 16.
fn cr3_slot_offset() -> usize {
    (&raw const ap_cr3 as usize) - (&raw const ap_trampoline_start as usize)
}

fn trampoline_len() -> usize {
    (&raw const ap_trampoline_end as usize) - (&raw const ap_trampoline_start as usize)
}

/// Pause after INIT (microseconds).
const INIT_WAIT_US: u64 = 10;
/// Pause after each SIPI before checking the AP (microseconds).
const SIPI_WAIT_US: u64 = 10;
/// How long the boot CPU waits for an AP to claim its slot.
const AP_TIMEOUT_NS: u64 = 100_000_000;

/// A stack for an AP with an unmapped guard page below it; returns its
/// (16-byte aligned) top. Never freed: even an AP that came up too late
/// runs (parks) on it.
fn ap_stack() -> Option<u64> {
    let base = FRAMES
        .lock()
        .alloc(GUARD_SIZE + AP_STACK_SIZE, 4096, IDENTITY_MAPPED)
        .ok()?;
    // SAFETY: no AP runs yet (start_aps fills every slot before the first
    // SIPI), so no other CPU holds a translation of this region; the guard
    // page is ours (just allocated) and nothing will use it.
    if let Err(e) = unsafe { crate::paging::unmap_4k(base) } {
        log::warn!("AP stack at {base:#x}: no guard page ({e:?})");
    }
    Some(base + GUARD_SIZE + AP_STACK_SIZE)
}

/// Starts every AP in `apic_ids` (the boot CPU's id excluded by the caller).
/// Returns how many came up.
pub fn start_aps(bsp: &LocalApic, lapic_base: u64, apic_ids: &[u32]) -> u32 {
    LAPIC_BASE.store(lapic_base, Ordering::Relaxed);
    let len = trampoline_len();
    if cr3_slot_offset() != 16 || len > 4096 {
        log::error!("AP trampoline layout is broken: not starting APs");
        return 0;
    }
    if apic_ids.len() > MAX_CPUS - 1 {
        log::warn!(
            "{} CPUs found; starting the first {}",
            apic_ids.len() + 1,
            MAX_CPUS
        );
    }
    AP_IDT_BASE.store(crate::cpu::idt_base(), Ordering::SeqCst);
    let cr3: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack)) };
    // SAFETY: [TRAMPOLINE, TRAMPOLINE + len) is below 1 MiB, identity-mapped
    // and never handed out by the frame allocator (it reserves the first MiB);
    // no AP runs yet, so nothing executes from it while we write. The CR3
    // slot's offset was checked above, and the boot page tables live below
    // 4 GiB so CR3 fits in 32 bits.
    unsafe {
        core::ptr::copy_nonoverlapping(&raw const ap_trampoline_start, TRAMPOLINE as *mut u8, len);
        core::ptr::write_unaligned(
            (TRAMPOLINE as usize + cr3_slot_offset()) as *mut u32,
            cr3 as u32,
        );
    }
    // Every slot is filled before the first AP starts: the guard pages
    // change the shared page tables, which must happen while only this CPU
    // uses them.
    let mut slots = alloc::vec::Vec::new();
    for (slot, &id) in AP_SLOTS.iter().zip(apic_ids).take(MAX_CPUS - 1) {
        let Some(top) = ap_stack() else {
            log::warn!("no memory for the stack of APIC id {id}: not started");
            continue;
        };
        let tables = CpuTables::new_boxed();
        tables.set_index(crate::cpu::NO_INDEX);
        let tables = tables as *mut CpuTables as u64;
        slot.stack_top.store(top, Ordering::Relaxed);
        slot.tables.store(tables, Ordering::Relaxed);
        slot.state.store(WAITING, Ordering::Relaxed);
        slot.apic_id.store(id, Ordering::Release);
        slots.push(slot);
    }
    if OVERFLOW_WANTED.load(Ordering::SeqCst)
        && let Some(last) = slots.last()
    {
        OVERFLOW_AP.store(last.apic_id.load(Ordering::Relaxed), Ordering::SeqCst);
    }
    let mut started = 0;
    let vector = (TRAMPOLINE >> 12) as u32;
    for slot in slots {
        let id = slot.apic_id.load(Ordering::Relaxed);
        // A timer deadline 20 us away while the AP leaves INIT: under
        // QEMU's icount the virtual clock jumped to the next timer deadline
        // while the AP started, which with no timer of ours armed was the
        // firmware's PIT tick, tens of milliseconds away (43.7 million of
        // the 70.5 million instructions from hypervisor entry to the first
        // guest; reprogramming the PIT moved the jump, this timer removes
        // it: docs/figures.md). The interrupt stays pending (IF is clear)
        // until the wait below or the run loop takes it; its handler only
        // acknowledges it.
        bsp.arm_timer(crate::hostplat::TIMER_VECTOR, 20_000);
        bsp.send_ipi(id, ICR_INIT);
        // The 10 ms INIT wait and 200 us SIPI wait of the MP spec are for
        // CPUs older than any x86-64 one (Linux skips them on family 6+
        // Intel and family 0xF+ AMD); a short pause is enough.
        platform::delay_us(INIT_WAIT_US);
        for _ in 0..2 {
            bsp.send_ipi(id, ICR_STARTUP | vector);
            platform::delay_us(SIPI_WAIT_US);
            if slot.state.load(Ordering::SeqCst) != WAITING {
                break;
            }
        }
        // Give it up to 100 ms to claim its slot, sleeping between looks
        // (in an emulator the AP shares the host thread: spinning would
        // only slow it down).
        let deadline = platform::now_ns() + AP_TIMEOUT_NS;
        while slot.state.load(Ordering::SeqCst) == WAITING && platform::now_ns() < deadline {
            bsp.arm_timer(crate::hostplat::TIMER_VECTOR, 20_000);
            // SAFETY: the IDT handles the timer vector (it only sends EOI);
            // STI's shadow covers HLT, so the timer cannot be missed.
            unsafe { core::arch::asm!("sti", "hlt", "cli", options(nomem, nostack)) };
        }
        match slot
            .state
            .compare_exchange(WAITING, ABANDONED, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => log::warn!("AP with APIC id {id} did not start; its slot is abandoned"),
            Err(_) => {
                started += 1;
                CPUS_ONLINE.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    started
}

/// The first Rust code on an AP, on its own stack, with the IDT loaded.
extern "C" fn ap_entry(slot: &'static ApSlot) -> ! {
    let tables = slot.tables.load(Ordering::Acquire) as *mut CpuTables;
    // SAFETY: the boot CPU allocated these tables for this slot alone
    // (leaked, so 'static) before publishing it, and only the AP whose
    // APIC id the slot names, this one, ever uses them.
    let tables = unsafe { &mut *tables };
    // Our own GDT and TSS first, claimed or not: an AP that parks below
    // must still take NMIs (the stop of fatal.rs) on a valid IST stack.
    let tables = tables.load();
    if slot
        .state
        .compare_exchange(WAITING, ONLINE, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        // The boot CPU gave up on us and goes on without this CPU: touch
        // nothing shared, stay parked on our own stack and tables.
        crate::machine::halt_forever()
    }
    let index = NEXT_INDEX.fetch_add(1, Ordering::SeqCst);
    slot.index.store(index, Ordering::Relaxed);
    tables.set_index(index);
    let apic = LocalApic::enable(LAPIC_BASE.load(Ordering::Relaxed));
    log::info!("CPU{index} online (APIC id {})", apic.id());
    if OVERFLOW_AP.load(Ordering::SeqCst) == slot.apic_id.load(Ordering::Relaxed) {
        let bottom = slot.stack_top.load(Ordering::Relaxed) - AP_STACK_SIZE;
        log::info!(
            "CPU{index}: selftest: overflowing the stack at {bottom:#x} into its guard page"
        );
        // SAFETY: a deliberate fault (selftest=ap-stack). The push below
        // the stack's bottom hits the unmapped guard page: #PF, whose frame
        // cannot be pushed either, so #DF on its IST stack, which reports
        // and stops the machine. Nothing returns here.
        unsafe {
            core::arch::asm!("mov rsp, {0}", "push 0", "ud2", in(reg) bottom, options(noreturn))
        }
    }
    crate::run::ap_main(index, apic)
}
