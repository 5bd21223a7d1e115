//! From the loader's 32-bit entry to Rust in long mode.
//!
//! Three ways in, all in 32-bit protected mode with paging off:
//! - **Multiboot (v1)** (`qemu -kernel`, as QEMU boots Xen): the header
//!   below names `mb1_entry`; EAX holds the magic 0x2BADB002 and EBX the
//!   Multiboot information. QEMU's `-kernel` tries a Linux bzImage, then
//!   Multiboot (a header in the file's first 8 KiB), and only then the PVH
//!   note, so with this header QEMU always picks Multiboot. It refuses a
//!   64-bit ELF as a Multiboot ELF, so the header sets flag bit 16 (the
//!   "a.out kludge"): QEMU then copies the file flat from the header's load
//!   address to `load_end_addr` and clears up to `bss_end_addr`, which needs
//!   the ELF's file offsets to follow its addresses (`cargo xtask image`
//!   checks that).
//! - **Xen PVH** (Xen itself, any PVH loader; QEMU's `-kernel` only for an
//!   image whose Multiboot magic was wiped, see `xtask/src/image.rs`): the
//!   ELF note `XEN_ELFNOTE_PHYS32_ENTRY` names `pvh_entry`; EBX holds the
//!   physical address of `hvm_start_info`.
//! - **Multiboot2** (GRUB): the header below and the ELF entry `mb2_entry`;
//!   EAX holds the magic 0x36d76289 and EBX the boot information.
//!
//! The common path then, in this order: zeroes .bss (page tables and the boot
//! stack live there), checks that the CPU has long mode, identity-maps the
//! first 4 GiB with 2 MiB pages, enables PAE, sets EFER.LME, turns paging on,
//! loads a 64-bit GDT and far-returns into 64-bit code, which calls
//! [`crate::hv_entry`] with the boot protocol and the info pointer.
//!
//! Register contract across the path: EDI carries the boot protocol
//! ([`BOOT_PVH`], [`BOOT_MULTIBOOT2`] or [`BOOT_MULTIBOOT1`]), ESI the info
//! pointer; both are
//! zero-extended before the call. Nothing else survives.

/// `hv_entry`'s first argument when the loader used the PVH entry.
pub const BOOT_PVH: u32 = 1;
/// `hv_entry`'s first argument when the loader used Multiboot2.
pub const BOOT_MULTIBOOT2: u32 = 2;
/// `hv_entry`'s first argument when the loader used Multiboot (v1).
pub const BOOT_MULTIBOOT1: u32 = 3;

/// The part of physical memory that the boot page tables identity-map.
pub const IDENTITY_MAPPED: u64 = 4 << 30;

/// Size of the boot CPU's stack.
pub const BOOT_STACK_SIZE: usize = 256 * 1024;

core::arch::global_asm!(
    r#"
    /* ---- Multiboot (v1) header (in the file's first 8 KiB, 4-aligned) ---- */
    .section .multiboot1, "a"
    .balign 4
mb1_header:
    .long 0x1BADB002                      /* magic */
    .long 0x00010003                      /* flags: page-aligned modules, memory map, address fields */
    .long -(0x1BADB002 + 0x00010003)      /* checksum */
    .long mb1_header                      /* header_addr */
    .long __image_start                   /* load_addr: the file from here on, flat */
    .long __load_end                      /* load_end_addr: the end of .data */
    .long __bss_end                       /* bss_end_addr: the loader clears up to here */
    .long mb1_entry                       /* entry_addr */

    /* ---- Multiboot2 header (must be in the first 32 KiB, 8-aligned) ---- */
    .section .multiboot2, "a"
    .balign 8
mb2_header_start:
    .long 0xE85250D6                      /* magic */
    .long 0                               /* architecture: i386 protected mode */
    .long mb2_header_end - mb2_header_start
    .long -(0xE85250D6 + (mb2_header_end - mb2_header_start))
    .balign 8
    .word 0, 0                            /* end tag */
    .long 8
mb2_header_end:

    /* ---- Xen ELF note: PHYS32_ENTRY = pvh_entry (4 bytes) ---- */
    .section .note.Xen, "a", @note
    .balign 4
    .long 4                               /* namesz: "Xen\0" */
    .long 4                               /* descsz */
    .long 18                              /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .long pvh_entry
    .balign 4

    /* ---- the boot GDT: null, 64-bit code (0x08), data (0x10) ---- */
    .section .rodata.boot, "a"
    .balign 16
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF
    .quad 0x00CF92000000FFFF
boot_gdt_end:
    .balign 4
    .word 0
boot_gdt_ptr:                             /* operand of the 32-bit lgdt */
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt

    /* ---- 32-bit entries ---- */
    .section .boot.text, "ax"
    .code32
    .global pvh_entry
pvh_entry:
    cli
    cld
    mov edi, {boot_pvh}
    mov esi, ebx
    jmp 2f

    .global mb1_entry
mb1_entry:
    cli
    cld
    cmp eax, 0x2BADB002
    jne 9f
    mov edi, {boot_mb1}
    mov esi, ebx
    jmp 2f

    .global mb2_entry
mb2_entry:
    cli
    cld
    cmp eax, 0x36d76289
    jne 9f
    mov edi, {boot_mb2}
    mov esi, ebx

2:  /* zero .bss: page tables and the boot stack live there */
    mov ebx, edi
    mov edx, esi
    mov edi, offset __bss_start
    mov ecx, offset __bss_end
    sub ecx, edi
    shr ecx, 2
    xor eax, eax
    rep stosd
    mov edi, ebx
    mov esi, edx

    mov esp, offset {stack} + {stack_size}

    /* long mode available? CPUID 0x80000001 EDX bit 29 */
    mov eax, 0x80000000
    cpuid
    cmp eax, 0x80000001
    jb 9f
    mov eax, 0x80000001
    cpuid
    bt edx, 29
    jnc 9f

    /* PML4[0] -> PDPT; PDPT[0..4] -> four page directories */
    mov eax, offset {pdpt}
    or eax, 3
    mov dword ptr [{pml4}], eax
    xor ecx, ecx
3:  mov eax, ecx
    shl eax, 12
    add eax, offset {pd}
    or eax, 3
    mov dword ptr [{pdpt} + ecx * 8], eax
    inc ecx
    cmp ecx, 4
    jb 3b

    /* 2048 PDEs: ecx * 2 MiB, present | writable | large page */
    xor ecx, ecx
4:  mov eax, ecx
    shl eax, 21
    or eax, 0x83
    mov dword ptr [{pd} + ecx * 8], eax
    inc ecx
    cmp ecx, 2048
    jb 4b

    mov eax, cr4
    or eax, 1 << 5                        /* PAE */
    mov cr4, eax
    mov eax, offset {pml4}
    mov cr3, eax
    mov ecx, 0xC0000080                   /* EFER */
    rdmsr
    or eax, 1 << 8                        /* LME */
    wrmsr
    mov eax, cr0
    or eax, 0x80010001                    /* PG | WP | PE */
    mov cr0, eax

    lgdt [boot_gdt_ptr]
    push 0x08
    .byte 0x68                            /* push imm32 (the assembler picks imm16) */
    .long long_mode_entry
    retf

9:  /* no way to continue: no long mode or unknown loader */
    hlt
    jmp 9b

    .code64
long_mode_entry:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov edi, edi
    mov esi, esi
    mov rsp, offset {stack} + {stack_size}
    xor ebp, ebp
    call {entry}
6:  hlt
    jmp 6b
    "#,
    boot_pvh = const BOOT_PVH,
    boot_mb2 = const BOOT_MULTIBOOT2,
    boot_mb1 = const BOOT_MULTIBOOT1,
    stack = sym BOOT_STACK,
    stack_size = const BOOT_STACK_SIZE,
    pml4 = sym BOOT_PML4,
    pdpt = sym BOOT_PDPT,
    pd = sym BOOT_PD,
    entry = sym crate::hv_entry,
);

/// A 4 KiB-aligned page of page-table entries.
#[repr(C, align(4096))]
pub struct PageTable(pub [u64; 512]);

/// 16-byte aligned stack memory.
#[repr(C, align(16))]
pub struct Stack<const N: usize>(pub [u8; N]);

#[unsafe(link_section = ".bss.boot")]
static mut BOOT_PML4: PageTable = PageTable([0; 512]);
#[unsafe(link_section = ".bss.boot")]
static mut BOOT_PDPT: PageTable = PageTable([0; 512]);
#[unsafe(link_section = ".bss.boot")]
static mut BOOT_PD: [PageTable; 4] = [const { PageTable([0; 512]) }; 4];
#[unsafe(link_section = ".bss.boot")]
static mut BOOT_STACK: Stack<BOOT_STACK_SIZE> = Stack([0; BOOT_STACK_SIZE]);
