//! Per-CPU descriptor tables: the GDT, the TSS with separate stacks for NMI,
//! double fault and machine check, and the IDT whose exception stubs report
//! the fault and stop the machine.
//!
//! A fault in the hypervisor is a hypervisor bug (guests run under SVM/VMX
//! and their faults arrive as exits), so every exception is fatal here: the
//! report names the vector, error code, RIP, RSP and CR2, which is what one
//! needs to find the line with `addr2line -e target/image/hypervisor.elf`.
//! `fatal.rs` stops the other CPUs first and prints the report as whole
//! lines. The one exception that is not a fault is the NMI another CPU's
//! fatal path sends: it parks this CPU.

use core::mem::size_of;

/// Kernel code selector (64-bit).
pub const KERNEL_CS: u16 = 0x08;
/// Kernel data selector.
pub const KERNEL_DS: u16 = 0x10;
/// TSS selector (a 16-byte system descriptor at GDT slots 3 and 4).
pub const TSS_SEL: u16 = 0x18;

/// IST slot (1-based, as the IDT encodes it) for NMIs.
const IST_NMI: u8 = 1;
/// IST slot for double faults.
const IST_DF: u8 = 2;
/// IST slot for machine checks.
const IST_MC: u8 = 3;
/// Size of each IST stack.
pub const IST_STACK_SIZE: usize = 16 * 1024;

/// The 64-bit task-state segment.
#[repr(C, packed(4))]
#[derive(Default)]
pub struct Tss {
    _reserved0: u32,
    /// Stack pointers for privilege levels 0-2 (unused: we run in ring 0).
    pub rsp: [u64; 3],
    _reserved1: u64,
    /// Interrupt stack table, IST1..IST7.
    pub ist: [u64; 7],
    _reserved2: u64,
    _reserved3: u16,
    /// Offset of the I/O permission bitmap: past the limit, so none.
    pub iomap_base: u16,
}
const _: () = assert!(size_of::<Tss>() == 0x68);

/// Everything one CPU's descriptor tables need, kept together so that the
/// addresses stay valid for as long as the CPU runs (they are `'static`).
///
/// The GDT comes first, so the GDTR base of a CPU is the address of its
/// `CpuTables`: [`this_cpu`] finds the CPU's index from it (checked by
/// `magic`) without an MSR or the APIC.
#[repr(C, align(16))]
pub struct CpuTables {
    gdt: [u64; 5],
    magic: u64,
    index: core::sync::atomic::AtomicU32,
    tss: Tss,
    ist: [IstStack; 3],
}

/// Marks a loaded [`CpuTables`].
const TABLES_MAGIC: u64 = 0x5441_424C_4553_4350; // "PCSELBAT"

#[repr(C, align(16))]
struct IstStack([u8; IST_STACK_SIZE]);

impl CpuTables {
    /// Empty tables, to be filled by [`CpuTables::load`].
    pub const fn new() -> Self {
        Self {
            gdt: [0; 5],
            magic: 0,
            index: core::sync::atomic::AtomicU32::new(0),
            tss: Tss {
                _reserved0: 0,
                rsp: [0; 3],
                _reserved1: 0,
                ist: [0; 7],
                _reserved2: 0,
                _reserved3: 0,
                iomap_base: size_of::<Tss>() as u16,
            },
            ist: [const { IstStack([0; IST_STACK_SIZE]) }; 3],
        }
    }

    /// Zeroed tables on the heap, for an application processor; they live
    /// as long as the machine.
    pub fn new_boxed() -> &'static mut Self {
        let b = alloc::boxed::Box::<Self>::new_zeroed();
        // SAFETY: every field of CpuTables is an integer or an array of
        // integers, for which all-zero bytes are a valid value.
        alloc::boxed::Box::leak(unsafe { b.assume_init() })
    }

    /// Records the CPU index these tables belong to ([`NO_INDEX`] for an
    /// AP that has not been given one).
    pub fn set_index(&self, index: u32) {
        self.index
            .store(index, core::sync::atomic::Ordering::SeqCst);
    }

    /// Fills the GDT and TSS and loads GDTR, the segment registers, TR and
    /// the shared IDT on the calling CPU.
    pub fn load(&'static mut self) -> &'static Self {
        self.magic = TABLES_MAGIC;
        self.tss.iomap_base = size_of::<Tss>() as u16;
        for (i, slot) in [IST_NMI, IST_DF, IST_MC].iter().enumerate() {
            let top = self.ist[i].0.as_ptr_range().end as u64;
            self.tss.ist[usize::from(*slot) - 1] = top;
        }
        let tss_base = &self.tss as *const Tss as u64;
        let limit = (size_of::<Tss>() - 1) as u64;
        self.gdt = [
            0,
            0x00AF_9A00_0000_FFFF, // 64-bit code, DPL 0
            0x00CF_9200_0000_FFFF, // data, DPL 0
            // 64-bit available TSS (type 9), present
            (limit & 0xFFFF)
                | ((tss_base & 0xFF_FFFF) << 16)
                | (0x89 << 40)
                | (((limit >> 16) & 0xF) << 48)
                | (((tss_base >> 24) & 0xFF) << 56),
            tss_base >> 32,
        ];
        let gdtr = DescriptorPointer {
            limit: (size_of::<[u64; 5]>() - 1) as u16,
            base: self.gdt.as_ptr() as u64,
        };
        let idtr = DescriptorPointer {
            limit: IDT_LIMIT,
            base: idt_base(),
        };
        // SAFETY: the GDT, TSS and IDT are 'static (self is &'static mut, IDT
        // is a static) so the registers never point at freed memory. The new
        // GDT has the same code and data selectors as the boot GDT, so the
        // reloads below keep the CPU running on valid descriptors; the far
        // return reloads CS; the TSS descriptor is fresh (not busy) so `ltr`
        // accepts it.
        unsafe {
            core::arch::asm!(
                "lgdt [{gdtr}]",
                "push {cs}",
                "lea {tmp}, [rip + 2f]",
                "push {tmp}",
                "retfq",
                "2:",
                "mov ds, {ds:x}",
                "mov es, {ds:x}",
                "mov ss, {ds:x}",
                "ltr {tss:x}",
                "lidt [{idtr}]",
                gdtr = in(reg) &gdtr,
                idtr = in(reg) &idtr,
                cs = const KERNEL_CS as u64,
                ds = in(reg) KERNEL_DS as u64,
                tss = in(reg) TSS_SEL as u64,
                tmp = out(reg) _,
            );
        }
        self
    }
}

#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

/// One IDT gate, as the CPU reads it.
#[repr(C)]
#[derive(Clone, Copy)]
struct Gate {
    offset_lo: u16,
    selector: u16,
    ist: u8,
    flags: u8,
    offset_mid: u16,
    offset_hi: u32,
    _reserved: u32,
}
const _: () = assert!(size_of::<Gate>() == 16);

type Idt = [Gate; 256];

static IDT: spin::Once<Idt> = spin::Once::new();

/// The IDTR limit of the (one, shared) IDT.
pub const IDT_LIMIT: u16 = (size_of::<Idt>() - 1) as u16;

/// The address of the IDT, built on first use (by the boot CPU).
pub fn idt_base() -> u64 {
    IDT.call_once(build_idt).as_ptr() as u64
}

/// The index of an AP that has its tables but no CPU index (yet, or ever:
/// one the boot CPU gave up on).
pub const NO_INDEX: u32 = u32::MAX - 1;

/// The calling CPU's index (0 for the boot CPU, [`NO_INDEX`] for an AP
/// without one), read from the [`CpuTables`] its GDTR points at; 0 before
/// the CPU loaded its tables (the boot GDT). Never faults: no MSR, no APIC
/// access.
pub fn this_cpu() -> u32 {
    let mut gdtr = DescriptorPointer { limit: 0, base: 0 };
    // SAFETY: SGDT stores the 10-byte GDTR into `gdtr`, which is exactly
    // that size (packed); nothing else is touched.
    unsafe {
        core::arch::asm!("sgdt [{}]", in(reg) &raw mut gdtr, options(nostack, preserves_flags))
    };
    let base = gdtr.base;
    let end = base.saturating_add(size_of::<CpuTables>() as u64);
    if base == 0 || end > crate::boot::IDENTITY_MAPPED || !base.is_multiple_of(16) {
        return 0;
    }
    let t = base as *const CpuTables;
    // SAFETY: the range lies in the identity map (checked), so reading it
    // cannot fault; the GDTR base is either a loaded CpuTables (whose
    // `magic` never changes after `load`; `index` is atomic) or the boot
    // GDT, whose following bytes then fail the magic check.
    unsafe {
        if core::ptr::read_volatile(&raw const (*t).magic) == TABLES_MAGIC {
            (*t).index.load(core::sync::atomic::Ordering::SeqCst)
        } else {
            0
        }
    }
}

fn build_idt() -> Idt {
    let empty = Gate {
        offset_lo: 0,
        selector: 0,
        ist: 0,
        flags: 0,
        offset_mid: 0,
        offset_hi: 0,
        _reserved: 0,
    };
    let mut idt = [empty; 256];
    // `exception_stubs` is defined in the global_asm below: 32 stubs of
    // STUB_SIZE bytes each, laid out back to back.
    let base = &raw const exception_stubs as u64;
    for (vector, gate) in idt.iter_mut().enumerate().take(32) {
        let handler = base + (vector as u64) * STUB_SIZE;
        let ist = match vector {
            2 => IST_NMI,
            8 => IST_DF,
            18 => IST_MC,
            _ => 0,
        };
        *gate = Gate {
            offset_lo: handler as u16,
            selector: KERNEL_CS,
            ist,
            flags: 0x8E, // present, DPL 0, 64-bit interrupt gate
            offset_mid: (handler >> 16) as u16,
            offset_hi: (handler >> 32) as u32,
            _reserved: 0,
        };
    }
    // Host interrupts: the kick IPI, the APIC timer and the spurious vector.
    let irq = &raw const irq_stubs as u64;
    for (i, vector) in IRQ_VECTORS.iter().enumerate() {
        let handler = irq + (i as u64) * STUB_SIZE;
        idt[*vector as usize] = Gate {
            offset_lo: handler as u16,
            selector: KERNEL_CS,
            ist: 0,
            flags: 0x8E,
            offset_mid: (handler >> 16) as u16,
            offset_hi: (handler >> 32) as u32,
            _reserved: 0,
        };
    }
    idt
}

/// The host interrupt vectors, in the order of `irq_stubs`: the timer,
/// the kick, spurious, then one per pirq GSI (`ioapic::PIRQ_VECTOR_BASE`
/// + GSI, for `ioapic::PIRQ_PINS` GSIs).
const IRQ_VECTORS: [u8; 3 + crate::ioapic::PIRQ_PINS as usize] = {
    let mut v = [0u8; 3 + crate::ioapic::PIRQ_PINS as usize];
    v[0] = crate::hostplat::TIMER_VECTOR;
    v[1] = crate::hostplat::KICK_VECTOR;
    v[2] = 0xFF;
    let mut i = 0;
    while i < crate::ioapic::PIRQ_PINS as usize {
        v[3 + i] = crate::ioapic::PIRQ_VECTOR_BASE + i as u8;
        i += 1;
    }
    v
};

/// Counts host interrupts taken (timer and kicks), for statistics.
pub static IRQS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Handles a host interrupt: all they do is end a guest run or an idle
/// wait, so acknowledging is the whole job. The spurious vector gets no EOI.
/// `rsp_at_call` is the stack pointer `irq_common` called us with.
extern "C" fn irq_handler(vector: u64, rsp_at_call: u64) {
    assert!(
        rsp_at_call.is_multiple_of(16),
        "interrupt stub called Rust with RSP {rsp_at_call:#x}, not 16-byte aligned"
    );
    IRQS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    if let Some(gsi) = crate::ioapic::gsi_of_vector(vector) {
        // A device's line for a guest: masked if level-triggered, and
        // recorded for the run loop, before the EOI.
        crate::ioapic::on_interrupt(gsi);
    }
    if vector != 0xFF
        && let Some(apic) = crate::platform::HOST_APIC.get()
    {
        apic.eoi();
    }
}

unsafe extern "C" {
    /// The first of the interrupt stubs (global_asm below), one per entry of
    /// `IRQ_VECTORS`, STUB_SIZE apart.
    static irq_stubs: u8;
}

// Interrupt stubs: save the caller-saved registers (the handler is a normal
// Rust function), pass the vector, restore, return.
//
// Stack alignment (SysV: RSP = 0 mod 16 at the `call`, so 8 mod 16 on entry
// to the callee). In 64-bit mode the CPU aligns RSP down to 16 before it
// pushes its 40-byte frame (SS, RSP, RFLAGS, CS, RIP), so the stub starts
// at 8 mod 16; the vector push makes that 0 and the nine register pushes 8
// again: one slot short of an aligned call (what this code did before).
// `sub rsp, 8` pads the missing slot. The handler gets the RSP it was
// called with as its second argument and asserts the alignment (always,
// not only in debug builds: the image is built in release mode and the
// check is one test per interrupt), so a change to the pushes that breaks
// the count stops the machine with a report instead of misaligning Rust.
core::arch::global_asm!(
    r#"
    .section .text.irqs, "ax"
    .balign 16
    .global irq_stubs
irq_stubs:
    .balign 16
    push 0xEF
    jmp irq_common
    .balign 16
    push 0xF0
    jmp irq_common
    .balign 16
    push 0xFF
    jmp irq_common
    .irp v, 0x80,0x81,0x82,0x83,0x84,0x85,0x86,0x87,0x88,0x89,0x8a,0x8b,0x8c,0x8d,0x8e,0x8f,0x90,0x91,0x92,0x93,0x94,0x95,0x96,0x97
    .balign 16
    push \v
    jmp irq_common
    .endr

irq_common:
    push rax
    push rcx
    push rdx
    push rsi
    push rdi
    push r8
    push r9
    push r10
    push r11
    mov rdi, [rsp + 72]
    sub rsp, 8
    mov rsi, rsp
    call {handler}
    add rsp, 8
    pop r11
    pop r10
    pop r9
    pop r8
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rax
    add rsp, 8
    iretq
    "#,
    handler = sym irq_handler,
);

/// Bytes per exception stub (each is padded to this size).
const STUB_SIZE: u64 = 16;

unsafe extern "C" {
    /// The first of the 32 exception stubs (global_asm below).
    static exception_stubs: u8;
}

// Each stub pushes a zero error code when the CPU does not push one (so the
// frame is uniform), then the vector, and jumps to the common path, which
// saves the general registers and calls `exception_report` with a pointer to
// the saved frame. The report never returns.
core::arch::global_asm!(
    r#"
    .section .text.exceptions, "ax"
    .balign 16
    .global exception_stubs
exception_stubs:
    .altmacro
    .macro STUB v
        .balign 16
        .if (\v == 8) || (\v >= 10 && \v <= 14) || (\v == 17) || (\v == 21) || (\v == 29) || (\v == 30)
        .else
        push 0
        .endif
        push \v
        jmp exception_common
    .endm
    .set i, 0
    .rept 32
    STUB %i
    .set i, i + 1
    .endr

exception_common:
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    mov rdi, rsp
    and rsp, -16
    call {report}
2:  cli
    hlt
    jmp 2b
    "#,
    report = sym exception_report,
);

/// The frame the common exception path builds, lowest address first.
#[repr(C)]
pub struct ExceptionFrame {
    /// General registers in reverse push order.
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// The vector the stub pushed.
    pub vector: u64,
    /// The CPU's error code, or 0.
    pub error_code: u64,
    /// Pushed by the CPU.
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

const EXCEPTION_NAMES: [&str; 32] = [
    "#DE divide error",
    "#DB debug",
    "NMI",
    "#BP breakpoint",
    "#OF overflow",
    "#BR bound range",
    "#UD invalid opcode",
    "#NM device not available",
    "#DF double fault",
    "coprocessor segment overrun",
    "#TS invalid TSS",
    "#NP segment not present",
    "#SS stack fault",
    "#GP general protection",
    "#PF page fault",
    "reserved (15)",
    "#MF x87 floating point",
    "#AC alignment check",
    "#MC machine check",
    "#XM SIMD floating point",
    "#VE virtualization",
    "#CP control protection",
    "reserved (22)",
    "reserved (23)",
    "reserved (24)",
    "reserved (25)",
    "reserved (26)",
    "reserved (27)",
    "#HV hypervisor injection",
    "#VC VMM communication",
    "#SX security",
    "reserved (31)",
];

extern "C" fn exception_report(f: &ExceptionFrame) -> ! {
    // The NMI another CPU sends to stop this one (fatal.rs): park here, on
    // the NMI's IST stack, never returning (so NMIs stay blocked).
    if f.vector == 2 && crate::fatal::is_stop_nmi() {
        crate::fatal::park()
    }
    let cr2: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack)) };
    let name = EXCEPTION_NAMES
        .get(f.vector as usize)
        .copied()
        .unwrap_or("unknown");
    // Stops the other CPUs, then holds the console for the whole report.
    let mut c = crate::fatal::begin();
    c.line(format_args!(
        "(XEN) FATAL hypervisor exception {} ({name}) on CPU{}, error code {:#x}",
        f.vector,
        this_cpu(),
        f.error_code
    ));
    c.line(format_args!(
        "(XEN) rip {:#018x} cs {:#x} rflags {:#x} rsp {:#018x} ss {:#x} cr2 {:#x}",
        f.rip, f.cs, f.rflags, f.rsp, f.ss, cr2
    ));
    c.line(format_args!(
        "(XEN) rax {:#x} rbx {:#x} rcx {:#x} rdx {:#x} rsi {:#x} rdi {:#x} rbp {:#x}",
        f.rax, f.rbx, f.rcx, f.rdx, f.rsi, f.rdi, f.rbp
    ));
    c.line(format_args!(
        "(XEN) r8 {:#x} r9 {:#x} r10 {:#x} r11 {:#x} r12 {:#x} r13 {:#x} r14 {:#x} r15 {:#x}",
        f.r8, f.r9, f.r10, f.r11, f.r12, f.r13, f.r14, f.r15
    ));
    drop(c);
    crate::machine::stop(false)
}
