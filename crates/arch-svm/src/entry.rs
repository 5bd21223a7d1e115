//! The VMRUN path: one assembly routine and its one declaration.
//!
//! `svm_run(vmcb_pa, regs, host_save_pa, host_if)` (System V ABI):
//! 1. saves the host's callee-saved registers and its three arguments;
//! 2. `clgi`: no interrupt, NMI or SMI reaches the host until step 8;
//! 3. `vmsave` the host's FS/GS/TR/LDTR hidden state, KERNEL_GS_BASE,
//!    STAR/LSTAR/CSTAR/SFMASK and SYSENTER MSRs to `host_save_pa` (VMRUN
//!    and #VMEXIT do not switch them), then `vmload` the guest's from the
//!    VMCB;
//! 4. if `host_if` is non-zero, `sti` (GIF is still 0, so nothing is taken
//!    now; VMRUN records IF = 1 and physical interrupts then end the run);
//! 5. loads the guest's RBX, RCX, RDX, RSI, RDI, RBP, R8-R15 from `regs`
//!    (RAX and RSP live in the VMCB) and runs `vmrun rax`;
//! 6. at #VMEXIT the CPU has restored the host's RAX (= `vmcb_pa`), RSP and
//!    RIP; the other GPRs hold the guest's and are stored to `regs`;
//! 7. `vmsave` the guest's state to its VMCB, `vmload` the host's back;
//! 8. `cli`, `stgi`, restores the callee-saved registers and returns.
//!
//! The host's segment registers, GDTR/IDTR, CR0/CR3/CR4, EFER, RFLAGS come
//! back through VM_HSAVE_PA. The FPU and DR0-DR3 are switched by the caller.

/// The guest GPRs the routine loads and stores, in x86 encoding order
/// (RAX and RSP are in the VMCB; their slots are unused here).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GuestRegs {
    /// Registers 0 (RAX) to 15 (R15).
    pub r: [u64; 16],
}

unsafe extern "sysv64" {
    /// Runs the guest once; see the module doc.
    fn svm_run_asm(vmcb_pa: u64, regs: *mut GuestRegs, host_save_pa: u64, host_if: u64);
}

core::arch::global_asm!(
    r#"
    .pushsection .text.svm_run, "ax"
    .global svm_run_asm
    .balign 16
svm_run_asm:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    push rsi                /* [rsp + 16]: regs */
    push rdx                /* [rsp + 8]: host_save_pa */
    push rdi                /* [rsp]: vmcb_pa */

    clgi
    mov rax, rdx
    vmsave rax
    mov rax, rdi
    vmload rax
    test rcx, rcx
    jz 2f
    sti
2:
    mov rbx, [rsi + 3*8]
    mov rcx, [rsi + 1*8]
    mov rdx, [rsi + 2*8]
    mov rbp, [rsi + 5*8]
    mov rdi, [rsi + 7*8]
    mov r8,  [rsi + 8*8]
    mov r9,  [rsi + 9*8]
    mov r10, [rsi + 10*8]
    mov r11, [rsi + 11*8]
    mov r12, [rsi + 12*8]
    mov r13, [rsi + 13*8]
    mov r14, [rsi + 14*8]
    mov r15, [rsi + 15*8]
    mov rsi, [rsi + 6*8]

    vmrun rax

    mov rax, [rsp + 16]
    mov [rax + 1*8], rcx
    mov [rax + 2*8], rdx
    mov [rax + 3*8], rbx
    mov [rax + 5*8], rbp
    mov [rax + 6*8], rsi
    mov [rax + 7*8], rdi
    mov [rax + 8*8], r8
    mov [rax + 9*8], r9
    mov [rax + 10*8], r10
    mov [rax + 11*8], r11
    mov [rax + 12*8], r12
    mov [rax + 13*8], r13
    mov [rax + 14*8], r14
    mov [rax + 15*8], r15

    mov rax, [rsp]
    vmsave rax
    mov rax, [rsp + 8]
    vmload rax
    cli
    stgi

    add rsp, 24
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
    .popsection
    "#
);

/// Runs the guest whose VMCB is at `vmcb_pa` until the next #VMEXIT.
///
/// # Safety
/// 1. SVM is enabled on this CPU ([`crate::enable::enable`]), so
///    VM_HSAVE_PA is valid and `host_save_pa` is this CPU's host-save page.
/// 2. `vmcb_pa` is the identity-mapped physical address of a VMCB that
///    passes VMRUN's checks or fails them cleanly (VMEXIT_INVALID), whose
///    permission maps and nested tables are valid host memory, and which no
///    other CPU runs now.
/// 3. Interrupts are disabled (IF = 0) on entry; if `host_if` is set, the
///    host can take the interrupts that end a run (they stay pending).
pub unsafe fn svm_run(vmcb_pa: u64, regs: &mut GuestRegs, host_save_pa: u64, host_if: bool) {
    // SAFETY: duties 1-3; `regs` is a valid, exclusive GuestRegs for the
    // routine's loads and stores; the routine preserves every callee-saved
    // register and the stack, and returns with GIF = 1 and IF = 0.
    unsafe { svm_run_asm(vmcb_pa, regs, host_save_pa, u64::from(host_if)) }
}
