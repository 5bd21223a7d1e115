//! The privileged instructions both backends use, one small wrapper each.
//! Every wrapper is `unsafe` with the duties its caller takes on; none is
//! callable from guest-controlled paths without the checks named there.

use core::arch::asm;

/// CPUID leaf `leaf`, subleaf `sub`: `[eax, ebx, ecx, edx]`.
pub fn cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, sub);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// Reads an MSR.
///
/// # Safety
/// 1. `msr` exists on this CPU (else `#GP` in the hypervisor).
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: duty 1; RDMSR has no memory effects.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes an MSR.
///
/// # Safety
/// 1. `msr` exists and accepts `value` (else `#GP`).
/// 2. The write does not break the hypervisor's own execution (EFER, the
///    segment bases, ...): the caller knows what the MSR controls.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: duties 1 and 2.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack))
    };
}

/// Reads CR4.
pub fn read_cr4() -> u64 {
    let v: u64;
    // SAFETY: reading CR4 has no side effects (ring 0 is where we run).
    unsafe { asm!("mov {}, cr4", out(reg) v, options(nomem, nostack)) };
    v
}

/// Writes CR4.
///
/// # Safety
/// 1. `value` is valid for this CPU and keeps paging as it is (PAE, PGE
///    and friends unchanged).
pub unsafe fn write_cr4(value: u64) {
    // SAFETY: duty 1.
    unsafe { asm!("mov cr4, {}", in(reg) value, options(nostack)) };
}

/// Reads XCR0.
///
/// # Safety
/// 1. CR4.OSXSAVE is set.
pub unsafe fn xgetbv0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: duty 1.
    unsafe { asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes XCR0.
///
/// # Safety
/// 1. CR4.OSXSAVE is set and `value` is a valid XCR0 for this CPU (x87
///    set, supported bits only, AVX with SSE, AVX-512 bits together).
pub unsafe fn xsetbv0(value: u64) {
    // SAFETY: duty 1.
    unsafe {
        asm!("xsetbv", in("ecx") 0, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack))
    };
}

/// Saves the extended states in `mask` (and XCR0) to `area`.
///
/// # Safety
/// 1. CR4.OSXSAVE is set.
/// 2. `area` is 64-byte aligned, writable, and as large as CPUID 0xD
///    reports for the current XCR0.
pub unsafe fn xsave(area: *mut u8, mask: u64) {
    // SAFETY: duties 1 and 2.
    unsafe {
        asm!("xsave64 [{}]", in(reg) area, in("eax") mask as u32, in("edx") (mask >> 32) as u32,
             options(nostack))
    };
}

/// Restores the extended states in `mask` (and XCR0) from `area`.
///
/// # Safety
/// 1. As for [`xsave`]; 2. `area` holds a valid XSAVE image (a zeroed
///    header restores the initial state; MXCSR must have no reserved bits).
pub unsafe fn xrstor(area: *const u8, mask: u64) {
    // SAFETY: duties 1 and 2.
    unsafe {
        asm!("xrstor64 [{}]", in(reg) area, in("eax") mask as u32, in("edx") (mask >> 32) as u32,
             options(nostack, readonly))
    };
}

/// Saves x87/SSE state to `area`.
///
/// # Safety
/// 1. `area` is 16-byte aligned and 512 bytes long, writable.
pub unsafe fn fxsave(area: *mut u8) {
    // SAFETY: duty 1.
    unsafe { asm!("fxsave64 [{}]", in(reg) area, options(nostack)) };
}

/// Restores x87/SSE state from `area`.
///
/// # Safety
/// 1. `area` is 16-byte aligned, 512 bytes, a valid image (MXCSR without
///    reserved bits).
pub unsafe fn fxrstor(area: *const u8) {
    // SAFETY: duty 1.
    unsafe { asm!("fxrstor64 [{}]", in(reg) area, options(nostack, readonly)) };
}

/// Reads DR0-DR3.
pub fn read_dr03() -> [u64; 4] {
    let (a, b, c, d): (u64, u64, u64, u64);
    // SAFETY: reading debug registers in ring 0 has no side effects.
    unsafe {
        asm!("mov {}, dr0", "mov {}, dr1", "mov {}, dr2", "mov {}, dr3",
             out(reg) a, out(reg) b, out(reg) c, out(reg) d, options(nomem, nostack))
    };
    [a, b, c, d]
}

/// Writes DR0-DR3. The hypervisor uses no hardware breakpoints, and its
/// DR7 has them all disabled (after #VMEXIT DR7 is reset), so any values
/// are harmless to it.
pub fn write_dr03(v: [u64; 4]) {
    // SAFETY: with all breakpoints disabled in the host's DR7 the address
    // registers have no effect on the hypervisor.
    unsafe {
        asm!("mov dr0, {}", "mov dr1, {}", "mov dr2, {}", "mov dr3, {}",
             in(reg) v[0], in(reg) v[1], in(reg) v[2], in(reg) v[3], options(nomem, nostack))
    };
}
