//! The guest's own descriptor tables and the code that needs them: a GDT
//! with ring-3 segments and a TSS (RSP0 for traps from ring 3), an IDT
//! whose 256 vectors all reach [`trap`], a ring-3 excursion that issues
//! one hypercall at CPL 3 and comes back through a DPL-3 `int` gate, and
//! the deliberate triple fault of `role=crash`.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering};

use xen_abi::guest::HypercallInsn;

/// Kernel code selector (the same as boot.rs uses).
pub const KERNEL_CS: u64 = 0x08;
/// Kernel data selector.
pub const KERNEL_DS: u64 = 0x10;
/// User data selector with RPL 3.
pub const USER_DS: u64 = 0x18 | 3;
/// User 64-bit code selector with RPL 3.
pub const USER_CS: u64 = 0x20 | 3;
/// The TSS selector.
const TSS_SEL: u16 = 0x28;

/// The event-channel upcall vector (`HVM_PARAM_CALLBACK_IRQ`).
pub const UPCALL_VECTOR: u8 = 0xF3;
/// The DPL-3 gate ring 3 uses to come back.
pub const RING3_RETURN_VECTOR: u8 = 0x80;
/// A ring-3 excursion ended by an exception returns this OR the vector.
pub const RING3_FAULT: u64 = 0xFA17_0000_0000_0000;

/// What the common trap stub saved, lowest address first.
#[repr(C)]
pub struct TrapFrame {
    r11: u64,
    r10: u64,
    r9: u64,
    r8: u64,
    rdi: u64,
    rsi: u64,
    rdx: u64,
    rcx: u64,
    rax: u64,
    vector: u64,
    error: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

/// A table only this CPU touches, before interrupts are on or from the
/// interrupt handlers it installs.
#[repr(C, align(16))]
struct Cell<T>(UnsafeCell<T>);
// SAFETY: the guest runs on one vCPU; each table is written once in
// `init` with interrupts off and afterwards only read by the CPU.
unsafe impl<T> Sync for Cell<T> {}

const TRAP_STACK_SIZE: usize = 16 * 1024;
const USER_STACK_SIZE: usize = 4096;

static GDT: Cell<[u64; 7]> = Cell(UnsafeCell::new([0; 7]));
static TSS: Cell<[u8; 104]> = Cell(UnsafeCell::new([0; 104]));
static IDT: Cell<[[u64; 2]; 256]> = Cell(UnsafeCell::new([[0; 2]; 256]));
static TRAP_STACK: Cell<[u8; TRAP_STACK_SIZE]> = Cell(UnsafeCell::new([0; TRAP_STACK_SIZE]));
static USER_STACK: Cell<[u8; USER_STACK_SIZE]> = Cell(UnsafeCell::new([0; USER_STACK_SIZE]));

/// Kernel RSP saved by `pvh_ring3_call` while ring 3 runs.
#[unsafe(no_mangle)]
static PVH_RING3_SAVED_RSP: AtomicU64 = AtomicU64::new(0);
/// Interrupts on vectors nobody asked for.
pub static SPURIOUS: AtomicU64 = AtomicU64::new(0);
/// Where an exception in a [`catch`] section resumes (0: none armed).
static CATCH_RESUME: AtomicU64 = AtomicU64::new(0);
/// The exception a [`catch`] section took: vector + 1 (0: none).
static CAUGHT_VECTOR: AtomicU64 = AtomicU64::new(0);
/// Its error code (0 for vectors without one).
static CAUGHT_ERROR: AtomicU64 = AtomicU64::new(0);
/// The RIP it was raised at.
static CAUGHT_RIP: AtomicU64 = AtomicU64::new(0);

/// An exception taken inside a [`catch`] section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caught {
    /// The vector.
    pub vector: u8,
    /// The error code (0 where the vector has none).
    pub error: u64,
    /// Where it was raised (the faulting instruction for a fault).
    pub rip: u64,
}

/// Runs one privileged instruction (`insn`, Intel syntax, with the given
/// operands) with exceptions caught: returns the exception it raised, if
/// any, and the instruction's address. The instruction must not touch the
/// stack.
macro_rules! catch {
    ($insn:literal, $($op:tt)*) => {{
        let at: u64;
        $crate::cpu::catch_arm();
        // SAFETY: the caller vouches for the instruction's effect; an
        // exception it raises resumes at label 3 (see `trap`), with the
        // registers the trap stub saved, and the section is disarmed on
        // both paths.
        unsafe {
            core::arch::asm!(
                "lea {at}, [rip + 2f]",
                "lea {res}, [rip + 3f]",
                "mov [{slot}], {res}",
                "2:",
                $insn,
                "3:",
                "mov qword ptr [{slot}], 0",
                at = out(reg) at,
                res = out(reg) _,
                slot = in(reg) $crate::cpu::catch_slot(),
                $($op)*
            );
        }
        ($crate::cpu::catch_result(), at)
    }};
}
pub(crate) use catch;

/// Clears the record of the last caught exception.
pub fn catch_arm() {
    CAUGHT_VECTOR.store(0, Ordering::SeqCst);
}

/// The resume slot a [`catch`] section fills.
pub fn catch_slot() -> *mut u64 {
    CATCH_RESUME.as_ptr()
}

/// The exception the last [`catch`] section took.
pub fn catch_result() -> Option<Caught> {
    let v = CAUGHT_VECTOR.load(Ordering::SeqCst);
    (v != 0).then(|| Caught {
        vector: (v - 1) as u8,
        error: CAUGHT_ERROR.load(Ordering::SeqCst),
        rip: CAUGHT_RIP.load(Ordering::SeqCst),
    })
}

#[repr(C, packed)]
struct DescPtr {
    limit: u16,
    base: u64,
}

unsafe extern "C" {
    /// 256 stubs of 16 bytes, one per vector (below).
    fn pvh_trap_stubs();
    /// Issues hypercall `nr` from ring 3 (VMMCALL if `vmmcall` is non-zero,
    /// else VMCALL), returns RAX as ring 3 saw it (or `RING3_FAULT|vector`).
    fn pvh_ring3_call(vmmcall: u64, nr: u64, user_stack_top: u64) -> u64;
    /// Where [`trap`] sends a CPU coming back from ring 3.
    fn pvh_ring3_resume();
}

fn gate(handler: u64, dpl: u64) -> [u64; 2] {
    let lo = (handler & 0xFFFF)
        | (KERNEL_CS << 16)
        | ((0x8E | (dpl << 5)) << 40)
        | (((handler >> 16) & 0xFFFF) << 48);
    [lo, handler >> 32]
}

/// Loads the GDT (kernel and user segments, TSS), TR and the IDT.
/// Call once, with interrupts off, before anything can trap.
pub fn init() {
    let tss = TSS.0.get() as u64;
    let trap_top = TRAP_STACK.0.get() as u64 + TRAP_STACK_SIZE as u64;
    let tss_lo = 103
        | ((tss & 0xFFFF) << 16)
        | (((tss >> 16) & 0xFF) << 32)
        | (0x89 << 40)
        | (((tss >> 24) & 0xFF) << 56);
    // SAFETY: called once on the only vCPU with interrupts off; nothing
    // else holds references into these tables.
    unsafe {
        let t = &mut *TSS.0.get();
        t[4..12].copy_from_slice(&trap_top.to_le_bytes());
        t[102..104].copy_from_slice(&104u16.to_le_bytes());
        *GDT.0.get() = [
            0,
            0x00AF_9A00_0000_FFFF, // kernel code, 64-bit
            0x00CF_9200_0000_FFFF, // kernel data
            0x00CF_F200_0000_FFFF, // user data, DPL 3
            0x00AF_FA00_0000_FFFF, // user code, 64-bit, DPL 3
            tss_lo,
            tss >> 32,
        ];
        let idt = &mut *IDT.0.get();
        let stubs = pvh_trap_stubs as *const () as u64;
        for (v, e) in idt.iter_mut().enumerate() {
            let dpl = if v == RING3_RETURN_VECTOR as usize {
                3
            } else {
                0
            };
            *e = gate(stubs + 16 * v as u64, dpl);
        }
    }
    load_tables();
    // SAFETY: the TSS descriptor is valid and not busy (loaded once, here).
    unsafe {
        core::arch::asm!("ltr {sel:x}", sel = in(reg) TSS_SEL, options(nostack));
    }
}

/// Loads the GDT and IDT that [`init`] filled, CS 0x08 by a far return,
/// data 0x10 (the boot selectors keep their meaning).
fn load_tables() {
    let gdtr = DescPtr {
        limit: (7 * 8 - 1) as u16,
        base: GDT.0.get() as u64,
    };
    let idtr = DescPtr {
        limit: (256 * 16 - 1) as u16,
        base: IDT.0.get() as u64,
    };
    // SAFETY: the GDT keeps the boot selectors 0x08/0x10 with the same
    // meaning; the far return reloads CS; every IDT gate points at a stub.
    unsafe {
        core::arch::asm!(
            "lgdt [{g}]",
            "push 0x08",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov {sel:e}, 0x10",
            "mov ds, {sel:x}",
            "mov es, {sel:x}",
            "mov ss, {sel:x}",
            "lidt [{i}]",
            g = in(reg) &gdtr,
            i = in(reg) &idtr,
            tmp = out(reg) _,
            sel = out(reg) _,
        );
    }
}

/// On a secondary vCPU started by `VCPUOP_initialise` (CS and the other
/// selectors 0, no GDT or IDT): loads the boot vCPU's GDT and IDT, CS
/// 0x08 and data 0x10. No TR: the TSS is the boot vCPU's (busy), and a
/// secondary vCPU never leaves ring 0. Interrupts stay off.
pub fn init_ap() {
    load_tables();
}

/// Runs one hypercall (`nr`, all arguments zero) at CPL 3 and returns RAX
/// as ring 3 saw it; `RING3_FAULT | vector` if ring 3 took an exception.
pub fn ring3_hypercall(insn: HypercallInsn, nr: u32) -> u64 {
    let top = USER_STACK.0.get() as u64 + USER_STACK_SIZE as u64;
    let vmmcall = u64::from(insn == HypercallInsn::Vmmcall);
    // SAFETY: `init` installed the user segments, the TSS with RSP0 and the
    // DPL-3 return gate; the identity map is user-accessible (boot.rs);
    // `pvh_ring3_call` follows the C ABI (callee-saved registers kept,
    // segment registers restored) and returns through `trap`.
    unsafe { pvh_ring3_call(vmmcall, u64::from(nr), top) }
}

/// Loads an empty IDT and raises an exception: the CPU cannot deliver it,
/// nor the double fault, and shuts down (triple fault).
pub fn triple_fault() -> ! {
    let idtr = DescPtr { limit: 0, base: 0 };
    // SAFETY: ending this vCPU is the point; nothing runs afterwards.
    unsafe { core::arch::asm!("cli", "lidt [{}]", "ud2", in(reg) &idtr, options(noreturn)) }
}

/// Every vector lands here with interrupts off.
extern "C" fn trap(f: &mut TrapFrame) {
    let vector = f.vector as u8;
    if f.cs & 3 == 3 {
        // Back from ring 3: resume `pvh_ring3_call` in ring 0.
        if vector != RING3_RETURN_VECTOR {
            f.rax = RING3_FAULT | u64::from(vector);
        }
        f.rip = pvh_ring3_resume as *const () as u64;
        f.cs = KERNEL_CS;
        f.ss = KERNEL_DS;
        f.rsp = PVH_RING3_SAVED_RSP.load(Ordering::SeqCst);
        f.rflags = 0x2;
        return;
    }
    if vector < 32 {
        let resume = CATCH_RESUME.swap(0, Ordering::SeqCst);
        if resume != 0 {
            CAUGHT_ERROR.store(f.error, Ordering::SeqCst);
            CAUGHT_RIP.store(f.rip, Ordering::SeqCst);
            CAUGHT_VECTOR.store(f.vector + 1, Ordering::SeqCst);
            f.rip = resume;
            return;
        }
    }
    match vector {
        UPCALL_VECTOR => crate::events::upcall(),
        v if v < 32 => panic!(
            "exception {v} error {:#x} at rip {:#x} (rax {:#x} rcx {:#x} rdx {:#x} rsi {:#x} rdi {:#x} r8 {:#x} r9 {:#x} r10 {:#x} r11 {:#x} rsp {:#x})",
            f.error, f.rip, f.rax, f.rcx, f.rdx, f.rsi, f.rdi, f.r8, f.r9, f.r10, f.r11, f.rsp
        ),
        _ => {
            SPURIOUS.fetch_add(1, Ordering::SeqCst);
        }
    }
}

core::arch::global_asm!(
    r#"
    .section .text.pvh_traps, "ax"
    .balign 16
    .global pvh_trap_stubs
pvh_trap_stubs:
    .set pvh_vec, 0
    .rept 256
    .balign 16
    .if (pvh_vec == 8) || ((pvh_vec >= 10) && (pvh_vec <= 14)) || (pvh_vec == 17) || (pvh_vec == 21) || (pvh_vec == 29) || (pvh_vec == 30)
    .else
    pushq $0
    .endif
    pushq $pvh_vec
    jmp pvh_trap_common
    .set pvh_vec, pvh_vec + 1
    .endr

pvh_trap_common:
    pushq %rax
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    movq %rsp, %rdi
    cld
    call {trap}
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rax
    addq $16, %rsp
    iretq
    "#,
    trap = sym trap,
    options(att_syntax)
);

core::arch::global_asm!(
    r#"
    .section .text.pvh_ring3, "ax"
    .global pvh_ring3_call
pvh_ring3_call:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    mov [rip + PVH_RING3_SAVED_RSP], rsp
    mov rbx, rdi
    mov rax, rsi
    push {user_ds}
    push rdx
    push 2
    push {user_cs}
    lea rcx, [rip + pvh_ring3_code]
    push rcx
    xor edi, edi
    xor esi, esi
    xor edx, edx
    xor r10d, r10d
    xor r8d, r8d
    iretq

pvh_ring3_code:
    test rbx, rbx
    jz 2f
    vmmcall
    jmp 3f
2:  vmcall
3:  int {ret_vec}
    ud2

    .global pvh_ring3_resume
pvh_ring3_resume:
    mov cx, {kernel_ds}
    mov ds, cx
    mov es, cx
    mov ss, cx
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret
    "#,
    user_ds = const USER_DS,
    user_cs = const USER_CS,
    kernel_ds = const KERNEL_DS,
    ret_vec = const RING3_RETURN_VECTOR,
);
