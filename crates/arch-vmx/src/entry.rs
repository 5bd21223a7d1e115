//! The VM-entry path: one assembly routine and its one declaration.
//!
//! `vmx_run_asm(regs, launched) -> status` (System V ABI):
//! 1. saves the host's callee-saved registers and `regs` on the stack;
//! 2. writes HOST_RSP (this stack pointer) and HOST_RIP (the exit label
//!    below) into the current VMCS, so the exit lands back in this routine
//!    with its frame intact;
//! 3. loads every guest GPR but RSP from `regs` (RSP, RIP and RFLAGS are in
//!    the VMCS) and runs `vmresume` when `launched` is non-zero, else
//!    `vmlaunch`;
//! 4. if the instruction fails (no exit happens), returns 1 for
//!    VMfailInvalid (CF) or 2 for VMfailValid (ZF; the VM-instruction error
//!    field says why), after restoring the callee-saved registers;
//! 5. at the exit the CPU has loaded the host state of the VMCS: RSP points
//!    at the saved `regs`, RFLAGS is 0x2 (interrupts off); the guest's GPRs
//!    are stored to `regs`, the callee-saved registers restored, and 0
//!    returned.
//!
//! CR0/CR3/CR4, segment registers and bases, GDTR/IDTR (their limits become
//! 0xFFFF), TR, EFER, PAT and SYSENTER come from the host-state area, which
//! [`crate::vcpu`] fills before each entry. The FPU, DR0-DR3, CR2 and the
//! SYSCALL MSRs are switched by the caller.

/// The guest GPRs the routine loads and stores, in x86 encoding order
/// (RSP is in the VMCS; its slot is unused here).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GuestRegs {
    /// Registers 0 (RAX) to 15 (R15).
    pub r: [u64; 16],
}

unsafe extern "sysv64" {
    /// Runs the guest once; see the module doc.
    fn vmx_run_asm(regs: *mut GuestRegs, launched: u64) -> u64;
}

core::arch::global_asm!(
    r#"
    .pushsection .text.vmx_run, "ax"
    .global vmx_run_asm
    .balign 16
vmx_run_asm:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    push rdi                /* [rsp]: regs, where HOST_RSP points */

    mov rax, 0x6C14         /* HOST_RSP */
    vmwrite rax, rsp
    mov rax, 0x6C16         /* HOST_RIP */
    lea rdx, [rip + vmx_run_exit]
    vmwrite rax, rdx

    test rsi, rsi           /* ZF = !launched; the movs keep it */
    mov rax, [rdi + 0*8]
    mov rcx, [rdi + 1*8]
    mov rdx, [rdi + 2*8]
    mov rbx, [rdi + 3*8]
    mov rbp, [rdi + 5*8]
    mov rsi, [rdi + 6*8]
    mov r8,  [rdi + 8*8]
    mov r9,  [rdi + 9*8]
    mov r10, [rdi + 10*8]
    mov r11, [rdi + 11*8]
    mov r12, [rdi + 12*8]
    mov r13, [rdi + 13*8]
    mov r14, [rdi + 14*8]
    mov r15, [rdi + 15*8]
    mov rdi, [rdi + 7*8]
    jnz 2f
    vmlaunch
    jmp 3f
2:
    vmresume
3:
    /* No exit: the instruction failed. CF: invalid, ZF: valid. */
    mov eax, 1
    jc 4f
    mov eax, 2
4:
    add rsp, 8
    jmp 5f

vmx_run_exit:
    push rdi                /* guest RDI; [rsp + 8]: regs */
    mov rdi, [rsp + 8]
    mov [rdi + 0*8], rax
    mov [rdi + 1*8], rcx
    mov [rdi + 2*8], rdx
    mov [rdi + 3*8], rbx
    mov [rdi + 5*8], rbp
    mov [rdi + 6*8], rsi
    mov [rdi + 8*8], r8
    mov [rdi + 9*8], r9
    mov [rdi + 10*8], r10
    mov [rdi + 11*8], r11
    mov [rdi + 12*8], r12
    mov [rdi + 13*8], r13
    mov [rdi + 14*8], r14
    mov [rdi + 15*8], r15
    pop rax
    mov [rdi + 7*8], rax
    add rsp, 8
    xor eax, eax
5:
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

/// How a VM entry ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryOutcome {
    /// The guest ran and exited; the exit fields are valid.
    Exited,
    /// VMLAUNCH/VMRESUME failed with VMfailInvalid (no current VMCS).
    FailInvalid,
    /// VMLAUNCH/VMRESUME failed with VMfailValid (see the VM-instruction
    /// error field).
    FailValid,
}

/// Enters the guest of the current VMCS until the next exit.
///
/// # Safety
/// 1. VMX is on in this CPU and the vCPU's VMCS is current, launched
///    exactly when `launched` says so.
/// 2. The VMCS's host-state area describes this CPU as it is now (CR0/3/4,
///    selectors, bases, EFER, PAT), with the exit control "host
///    address-space size" set; HOST_RSP and HOST_RIP are written here.
/// 3. The guest state, controls, bitmaps and EPT are valid host memory
///    owned by the vCPU, and no other CPU runs this VMCS.
/// 4. Interrupts are disabled (IF = 0); the exit leaves them disabled.
pub unsafe fn vmx_run(regs: &mut GuestRegs, launched: bool) -> EntryOutcome {
    // SAFETY: duties 1-4; `regs` is a valid, exclusive GuestRegs for the
    // routine's loads and stores; the routine preserves every callee-saved
    // register and the stack.
    match unsafe { vmx_run_asm(regs, u64::from(launched)) } {
        0 => EntryOutcome::Exited,
        1 => EntryOutcome::FailInvalid,
        _ => EntryOutcome::FailValid,
    }
}
