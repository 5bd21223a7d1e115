//! The privileged instructions the backend uses: the ones shared with
//! arch-svm come from `arch-common`; the VMX instructions and the host
//! state readers are here, one small wrapper each. Every VMX instruction
//! reports VMfailInvalid (CF) or VMfailValid (ZF) as [`VmFail`].

pub use arch_common::instr::*;
use core::arch::asm;

/// How a VMX instruction failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmFail {
    /// VMfailInvalid: no current VMCS (or VMXON's own checks).
    Invalid,
    /// VMfailValid: the VM-instruction error field says why.
    Valid,
}

/// CF and ZF after a VMX instruction to a result.
fn outcome(cf: u8, zf: u8) -> Result<(), VmFail> {
    if cf != 0 {
        Err(VmFail::Invalid)
    } else if zf != 0 {
        Err(VmFail::Valid)
    } else {
        Ok(())
    }
}

/// VMXON with the region at `pa`.
///
/// # Safety
/// 1. CR4.VMXE is set, CR0/CR4 satisfy the fixed-bit MSRs, and
///    IA32_FEATURE_CONTROL allows VMX outside SMX.
/// 2. `pa` is a 4 KiB aligned frame holding the VMCS revision identifier,
///    owned by this CPU's VMX state for as long as VMX is on.
pub unsafe fn vmxon(pa: u64) -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: duties 1 and 2; VMXON reads the 64-bit operand in memory.
    unsafe {
        asm!("vmxon [{}]", "setc {}", "setz {}", in(reg) &pa, out(reg_byte) cf,
             out(reg_byte) zf, options(nostack))
    };
    outcome(cf, zf)
}

/// VMCLEAR of the VMCS at `pa`: writes it back to memory, not current and
/// not launched on this CPU any more.
///
/// # Safety
/// 1. VMX is on; `pa` is a VMCS frame the caller owns.
pub unsafe fn vmclear(pa: u64) -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: duty 1.
    unsafe {
        asm!("vmclear [{}]", "setc {}", "setz {}", in(reg) &pa, out(reg_byte) cf,
             out(reg_byte) zf, options(nostack))
    };
    outcome(cf, zf)
}

/// VMPTRLD: makes the VMCS at `pa` current on this CPU.
///
/// # Safety
/// 1. VMX is on; `pa` is a VMCS frame the caller owns, with the right
///    revision identifier, and not active on another CPU.
pub unsafe fn vmptrld(pa: u64) -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: duty 1.
    unsafe {
        asm!("vmptrld [{}]", "setc {}", "setz {}", in(reg) &pa, out(reg_byte) cf,
             out(reg_byte) zf, options(nostack))
    };
    outcome(cf, zf)
}

/// VMREAD of field `enc` of the current VMCS (0 if it fails).
///
/// # Safety
/// 1. VMX is on and a VMCS is current on this CPU.
pub unsafe fn vmread(enc: u32) -> u64 {
    let v: u64;
    // SAFETY: duty 1; a failing VMREAD leaves the destination alone, and it
    // was zeroed.
    unsafe {
        asm!("xor {v:e}, {v:e}", "vmread {v}, {e}", v = out(reg) v, e = in(reg) u64::from(enc),
             options(nostack, nomem))
    };
    v
}

/// VMWRITE of `value` to field `enc` of the current VMCS.
///
/// # Safety
/// 1. VMX is on and a VMCS is current on this CPU.
/// 2. The value is one the caller means for the guest or host: host-state
///    fields decide where the CPU goes at the next exit.
pub unsafe fn vmwrite(enc: u32, value: u64) -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: duties 1 and 2.
    unsafe {
        asm!("vmwrite {}, {}", "setc {}", "setz {}", in(reg) u64::from(enc), in(reg) value,
             out(reg_byte) cf, out(reg_byte) zf, options(nostack, nomem))
    };
    outcome(cf, zf)
}

/// INVEPT of `kind` (1: single context, 2: all contexts) for `eptp`.
///
/// # Safety
/// 1. VMX is on and the CPU supports INVEPT of this kind.
pub unsafe fn invept(kind: u64, eptp: u64) -> Result<(), VmFail> {
    let desc: [u64; 2] = [eptp, 0];
    let (cf, zf): (u8, u8);
    // SAFETY: duty 1; the descriptor is 16 bytes on our stack.
    unsafe {
        asm!("invept {}, [{}]", "setc {}", "setz {}", in(reg) kind, in(reg) &desc,
             out(reg_byte) cf, out(reg_byte) zf, options(nostack))
    };
    outcome(cf, zf)
}

/// INVVPID of `kind` (1: single context, 2: all contexts) for `vpid`.
///
/// # Safety
/// 1. VMX is on and the CPU supports INVVPID of this kind.
pub unsafe fn invvpid(kind: u64, vpid: u16) -> Result<(), VmFail> {
    let desc: [u64; 2] = [u64::from(vpid), 0];
    let (cf, zf): (u8, u8);
    // SAFETY: duty 1; the descriptor is 16 bytes on our stack.
    unsafe {
        asm!("invvpid {}, [{}]", "setc {}", "setz {}", in(reg) kind, in(reg) &desc,
             out(reg_byte) cf, out(reg_byte) zf, options(nostack))
    };
    outcome(cf, zf)
}

/// Reads CR0.
pub fn read_cr0() -> u64 {
    let v: u64;
    // SAFETY: reading CR0 has no side effects.
    unsafe { asm!("mov {}, cr0", out(reg) v, options(nomem, nostack)) };
    v
}

/// Writes CR0.
///
/// # Safety
/// 1. `value` keeps paging and protection as they are (only NE or
///    similar bits may change).
pub unsafe fn write_cr0(value: u64) {
    // SAFETY: duty 1.
    unsafe { asm!("mov cr0, {}", in(reg) value, options(nostack)) };
}

/// Reads CR3.
pub fn read_cr3() -> u64 {
    let v: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack)) };
    v
}

/// Reads CR2 (the guest's, right after an exit: VMX does not switch it).
pub fn read_cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack)) };
    v
}

/// Writes CR2. The hypervisor takes no page faults it recovers from, so
/// the value only matters to the guest.
pub fn write_cr2(v: u64) {
    // SAFETY: CR2 is only read by page-fault handlers; ours report and
    // stop, and the guest's value is what it had.
    unsafe { asm!("mov cr2, {}", in(reg) v, options(nomem, nostack)) };
}

/// A descriptor-table register as SGDT/SIDT store it.
#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
struct TableReg {
    limit: u16,
    base: u64,
}

/// GDTR: (base, limit).
pub fn sgdt() -> (u64, u16) {
    let mut t = TableReg::default();
    // SAFETY: SGDT stores 10 bytes into `t`.
    unsafe { asm!("sgdt [{}]", in(reg) &mut t, options(nostack)) };
    (t.base, t.limit)
}

/// IDTR: (base, limit).
pub fn sidt() -> (u64, u16) {
    let mut t = TableReg::default();
    // SAFETY: SIDT stores 10 bytes into `t`.
    unsafe { asm!("sidt [{}]", in(reg) &mut t, options(nostack)) };
    (t.base, t.limit)
}

/// The host's segment selectors: [ES, CS, SS, DS, FS, GS, TR].
pub fn selectors() -> [u16; 7] {
    let (es, cs, ss, ds, fs, gs, tr): (u16, u16, u16, u16, u16, u16, u16);
    // SAFETY: reading segment registers and TR has no side effects.
    unsafe {
        asm!("mov {0:x}, es", "mov {1:x}, cs", "mov {2:x}, ss", "mov {3:x}, ds",
             "mov {4:x}, fs", "mov {5:x}, gs", "str {6:x}",
             out(reg) es, out(reg) cs, out(reg) ss, out(reg) ds, out(reg) fs, out(reg) gs,
             out(reg) tr, options(nomem, nostack))
    };
    [es, cs, ss, ds, fs, gs, tr]
}
