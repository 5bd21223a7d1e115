//! PVH entry: 32-bit protected mode, paging off, EBX = `hvm_start_info`.
//! Zeroes .bss, identity-maps the first GiB with 2 MiB pages, enters long
//! mode and calls `guest_main(start_info)` on the boot stack. The mappings
//! are user-accessible (U bit) so the ring-3 check can run our own code at
//! CPL 3; SMEP and SMAP stay off. The very first instruction reads the
//! TSC into [`first_tsc`] (for `cargo xtask bench`'s boot figure).

const STACK_SIZE: usize = 64 * 1024;

core::arch::global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 4
    .long 18                              /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .long pvh_start
    .balign 4

    .section .rodata.gdt, "a"
    .balign 16
guest_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF
    .quad 0x00CF92000000FFFF
guest_gdt_end:
    .balign 4
    .word 0
guest_gdt_ptr:
    .word guest_gdt_end - guest_gdt - 1
    .long guest_gdt

    .section .text.pvh, "ax"
    .code32
    .global pvh_start
pvh_start:
    rdtsc
    mov dword ptr [{first_tsc}], eax
    mov dword ptr [{first_tsc} + 4], edx
    cli
    cld
    mov esi, ebx
    mov edi, offset __bss_start
    mov ecx, offset __bss_end
    sub ecx, edi
    shr ecx, 2
    xor eax, eax
    rep stosd
    mov esp, offset {stack} + {stack_size}

    mov eax, offset {pdpt}
    or eax, 7
    mov dword ptr [{pml4}], eax
    mov eax, offset {pd}
    or eax, 7
    mov dword ptr [{pdpt}], eax
    xor ecx, ecx
2:  mov eax, ecx
    shl eax, 21
    or eax, 0x87
    mov dword ptr [{pd} + ecx * 8], eax
    inc ecx
    cmp ecx, 512
    jb 2b

    mov eax, cr4
    or eax, 1 << 5
    mov cr4, eax
    mov eax, offset {pml4}
    mov cr3, eax
    mov ecx, 0xC0000080
    rdmsr
    or eax, 1 << 8
    wrmsr
    mov eax, cr0
    or eax, 0x80000001
    mov cr0, eax
    lgdt [guest_gdt_ptr]
    push 0x08
    .byte 0x68
    .long guest_long_mode
    retf

    .code64
guest_long_mode:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov edi, esi
    mov rsp, offset {stack} + {stack_size}
    call {main}
3:  hlt
    jmp 3b
    "#,
    stack = sym STACK,
    stack_size = const STACK_SIZE,
    pml4 = sym PML4,
    pdpt = sym PDPT,
    pd = sym PD,
    main = sym crate::guest_main,
    first_tsc = sym FIRST_TSC,
);

/// The TSC at our first instruction (`pvh_start`), saved before anything
/// else runs. It lives in .data, which the zeroing of .bss leaves alone;
/// `u64::MAX` until written.
static mut FIRST_TSC: u64 = u64::MAX;

/// The TSC read by the guest's very first instruction. QEMU's TSC starts at
/// 0 at machine reset and our hypervisor gives guests no TSC offset, so
/// under `-icount shift=0` this counts the instructions (ns of virtual
/// time) from power-on to the guest's entry.
pub fn first_tsc() -> u64 {
    // SAFETY: written once by `pvh_start` before any Rust code runs; only
    // read afterwards, on the one vCPU.
    unsafe { core::ptr::addr_of!(FIRST_TSC).read_volatile() }
}

#[repr(C, align(4096))]
struct Table([u64; 512]);

#[repr(C, align(16))]
struct Stack([u8; STACK_SIZE]);

static mut PML4: Table = Table([0; 512]);
static mut PDPT: Table = Table([0; 512]);
static mut PD: Table = Table([0; 512]);
static mut STACK: Stack = Stack([0; STACK_SIZE]);

/// The page directory of [`map_gib`].
static mut PD_HIGH: Table = Table([0; 512]);

/// Identity-maps GiB number `gib` (1..=511: the boot code maps only GiB
/// 0) with 2 MiB pages, for a page the hypervisor placed high (the
/// xenstore page at frame 0xfeffc lies in GiB 3). One such GiB at a time:
/// a later call moves the window. Supervisor-only, write-back.
pub fn map_gib(gib: usize) {
    assert!((1..512).contains(&gib), "map_gib: GiB {gib}");
    let pd = core::ptr::addr_of_mut!(PD_HIGH).cast::<u64>();
    let pdpt = core::ptr::addr_of_mut!(PDPT).cast::<u64>();
    for i in 0..512u64 {
        // SAFETY: entry `i` < 512 of our own page directory, which no Rust
        // reference covers and only this function writes.
        unsafe {
            pd.add(i as usize)
                .write_volatile(((gib as u64) << 30) | (i << 21) | 0x83)
        };
    }
    // SAFETY: entry `gib` < 512 of the boot PDPT (written by `pvh_start`
    // before any Rust code ran; no reference to it exists); then CR3 is
    // reloaded so no stale translation of that GiB survives.
    unsafe {
        pdpt.add(gib).write_volatile(pd as u64 | 0x3);
        core::arch::asm!(
            "mov {t}, cr3",
            "mov cr3, {t}",
            t = out(reg) _,
            options(nostack)
        );
    }
}
