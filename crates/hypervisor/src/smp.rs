//! Starting the application processors (APs).
//!
//! An AP wakes from INIT-SIPI-SIPI in real mode at `vector << 12`. We copy a
//! small position-independent trampoline to [`TRAMPOLINE`] (below 1 MiB; the
//! frame allocator never hands out the first MiB). The trampoline loads the
//! boot GDT, enables PAE, loads the boot CR3, sets EFER.LME, turns on PE and
//! PG together and far-jumps into `ap_long_entry` in the image, which takes
//! its stack from [`AP_STACK_TOP`] and calls [`ap_entry`] with its CPU index.
//!
//! APs are started one at a time: the BSP publishes the stack and index,
//! sends the IPIs, and waits (with a timeout) for the AP to say it is up, so
//! the shared hand-over variables are never used by two APs at once.

use crate::cpu::CpuTables;
use crate::platform::{self, ICR_INIT, ICR_STARTUP, LocalApic};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Physical address the trampoline runs at (SIPI vector 0x08).
pub const TRAMPOLINE: u64 = 0x8000;
/// Stack size for each AP.
const AP_STACK_SIZE: usize = 64 * 1024;

/// Hand-over: the top of the stack for the AP being started.
#[unsafe(no_mangle)]
static AP_STACK_TOP: AtomicU64 = AtomicU64::new(0);
/// Hand-over: the index of the AP being started.
#[unsafe(no_mangle)]
static AP_CPU_INDEX: AtomicU32 = AtomicU32::new(0);
/// Set by the AP once it runs Rust code on its own stack.
static AP_STARTED: AtomicU32 = AtomicU32::new(0);
/// CPUs online, the boot CPU included.
pub static CPUS_ONLINE: AtomicU32 = AtomicU32::new(1);
/// The xAPIC base for APs (x2APIC ignores it).
static LAPIC_BASE: AtomicU64 = AtomicU64::new(0);

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
    mov rsp, qword ptr [rip + AP_STACK_TOP]
    mov edi, dword ptr [rip + AP_CPU_INDEX]
    xor ebp, ebp
    call {entry}
2:  cli
    hlt
    jmp 2b
    "#,
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

/// Starts every AP in `apic_ids` (the boot CPU's id excluded by the caller).
/// Returns how many came up.
pub fn start_aps(bsp: &LocalApic, lapic_base: u64, apic_ids: &[u32]) -> u32 {
    LAPIC_BASE.store(lapic_base, Ordering::Relaxed);
    let len = trampoline_len();
    if cr3_slot_offset() != 16 || len > 4096 {
        log::error!("AP trampoline layout is broken: not starting APs");
        return 0;
    }
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
    let mut started = 0;
    for (i, &id) in apic_ids.iter().enumerate() {
        let index = i as u32 + 1;
        // Built on the heap directly (a zeroed allocation), never on a stack.
        let stack = alloc::vec![0u8; AP_STACK_SIZE].leak();
        let top = (stack.as_ptr_range().end as u64) & !0xf;
        AP_STACK_TOP.store(top, Ordering::SeqCst);
        AP_CPU_INDEX.store(index, Ordering::SeqCst);
        AP_STARTED.store(0, Ordering::SeqCst);
        let vector = (TRAMPOLINE >> 12) as u32;
        bsp.send_ipi(id, ICR_INIT);
        // The 10 ms INIT wait and 200 us SIPI wait of the MP spec are for
        // CPUs older than any x86-64 one (Linux skips them on family 6+
        // Intel and family 0xF+ AMD); a short pause is enough.
        platform::delay_us(INIT_WAIT_US);
        for _ in 0..2 {
            bsp.send_ipi(id, ICR_STARTUP | vector);
            platform::delay_us(SIPI_WAIT_US);
            if AP_STARTED.load(Ordering::SeqCst) != 0 {
                break;
            }
        }
        // Give it up to 100 ms to reach Rust, sleeping between looks (in
        // an emulator the AP shares the host thread: spinning would only
        // slow it down).
        let deadline = platform::now_ns() + 100_000_000;
        while AP_STARTED.load(Ordering::SeqCst) == 0 && platform::now_ns() < deadline {
            bsp.arm_timer(crate::hostplat::TIMER_VECTOR, 20_000);
            // SAFETY: the IDT handles the timer vector (it only sends EOI);
            // STI's shadow covers HLT, so the timer cannot be missed.
            unsafe { core::arch::asm!("sti", "hlt", "cli", options(nomem, nostack)) };
        }
        if AP_STARTED.load(Ordering::SeqCst) != 0 {
            started += 1;
        } else {
            log::warn!("CPU{index} (APIC id {id}) did not start");
        }
    }
    started
}

/// The first Rust code on an AP, on its own stack.
extern "C" fn ap_entry(index: u32) -> ! {
    CpuTables::new_boxed().load();
    let apic = LocalApic::enable(LAPIC_BASE.load(Ordering::Relaxed));
    CPUS_ONLINE.fetch_add(1, Ordering::SeqCst);
    AP_STARTED.store(1, Ordering::SeqCst);
    log::info!("CPU{index} online (APIC id {})", apic.id());
    crate::run::ap_main(index, apic)
}
