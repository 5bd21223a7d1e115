//! The kernel: PVH entry, IDT, hypercalls and the checks.

use core::cell::UnsafeCell;
use core::fmt::Write;
use core::sync::atomic::{AtomicU32, Ordering};

use xen_abi::compat as cm;
use xen_abi::event_channel as ev;
use xen_abi::grant_table as g;
use xen_abi::memory as m;
use xen_abi::xen as x;
use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::report::{Report, VERDICT_FAIL};

const STACK_SIZE: usize = 64 * 1024;
/// The event-channel callback vector.
const UPCALL_VECTOR: u8 = 0xF3;
const DOMID_SELF: u16 = 0x7FF0;

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

    .section .rodata.gdt32, "a"
    .balign 16
gdt32:
    .quad 0
    .quad 0x00CF9A000000FFFF              /* 0x08: code, 32-bit */
    .quad 0x00CF92000000FFFF              /* 0x10: data */
gdt32_end:
    .balign 4
    .word 0
gdt32_ptr:
    .word gdt32_end - gdt32 - 1
    .long gdt32

    .section .text.pvh, "ax"
    .global pvh_start
pvh_start:
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
    lgdt [gdt32_ptr]
    push 0x08
    .byte 0x68                            /* push imm32 */
    .long pvh32_reload_cs
    retf
pvh32_reload_cs:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    /* SSE for what the compiler emits: CR0.EM off, MP on; CR4.OSFXSR and
       OSXMMEXCPT on. */
    mov eax, cr0
    and eax, ~(1 << 2)
    or eax, 1 << 1
    mov cr0, eax
    mov eax, cr4
    or eax, (1 << 9) | (1 << 10)
    mov cr4, eax
    /* The i386 System V ABI wants ESP 16-byte aligned at each call. */
    sub esp, 12
    push esi
    call {main}
3:  hlt
    jmp 3b

    /* The event upcall: save everything, run the Rust handler, return. */
    .global pvh32_upcall_stub
pvh32_upcall_stub:
    pushad
    mov ebp, esp
    and esp, -16
    cld
    call {upcall}
    mov esp, ebp
    popad
    iretd

    /* Any other vector but an exception: report it and stop. */
    .global pvh32_fault_stub
pvh32_fault_stub:
    and esp, -16
    cld
    call {fault}
4:  hlt
    jmp 4b

    /* Exceptions (vectors 0-31): one 16-byte stub each pushes a zero
       error code where the CPU pushes none, then the vector; the common
       part saves the registers and hands the frame to `exception`, which
       may change the EIP to return to. */
    .balign 16
    .global pvh32_exc_stubs
pvh32_exc_stubs:
    .set pvh32_vec, 0
    .rept 32
    .balign 16
    .if (pvh32_vec == 8) || ((pvh32_vec >= 10) && (pvh32_vec <= 14)) || (pvh32_vec == 17) || (pvh32_vec == 21) || (pvh32_vec == 29) || (pvh32_vec == 30)
    .else
    push 0
    .endif
    push pvh32_vec
    jmp pvh32_exc_common
    .set pvh32_vec, pvh32_vec + 1
    .endr

pvh32_exc_common:
    pushad
    mov eax, esp
    mov ebp, esp
    and esp, -16
    sub esp, 12
    push eax
    cld
    call {exception}
    mov esp, ebp
    popad
    add esp, 8
    iretd
    "#,
    stack = sym STACK,
    stack_size = const STACK_SIZE,
    main = sym guest_main,
    upcall = sym upcall,
    fault = sym fault,
    exception = sym exception,
);

unsafe extern "C" {
    fn pvh32_upcall_stub();
    fn pvh32_fault_stub();
    /// 32 stubs of 16 bytes, one per exception vector (above).
    fn pvh32_exc_stubs();
}

/// What `pvh32_exc_common` saved, lowest address first: PUSHAD's
/// registers, the vector, the error code and the CPU's frame (no stack
/// switch: the guest runs at CPL 0 only).
#[repr(C)]
struct ExcFrame {
    edi: u32,
    esi: u32,
    ebp: u32,
    esp: u32,
    ebx: u32,
    edx: u32,
    ecx: u32,
    eax: u32,
    vector: u32,
    error: u32,
    eip: u32,
    cs: u32,
    eflags: u32,
}

/// Where an exception in a [`catch`] section resumes (0: none armed).
static CATCH_RESUME: AtomicU32 = AtomicU32::new(0);
/// The exception a [`catch`] section took: vector + 1 (0: none).
static CAUGHT_VECTOR: AtomicU32 = AtomicU32::new(0);
/// Its error code (0 for vectors without one).
static CAUGHT_ERROR: AtomicU32 = AtomicU32::new(0);
/// The EIP it was raised at.
static CAUGHT_EIP: AtomicU32 = AtomicU32::new(0);

/// An exception taken inside a [`catch`] section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Caught {
    vector: u8,
    error: u32,
    /// Where it was raised (the faulting instruction for a fault).
    eip: u32,
}

/// Runs one instruction (`insn`, Intel syntax, with the given operands)
/// with exceptions caught: returns the exception it raised, if any, and
/// the instruction's address. The instruction must not touch the stack.
macro_rules! catch {
    ($insn:literal, $($op:tt)*) => {{
        let at: u32;
        CAUGHT_VECTOR.store(0, Ordering::SeqCst);
        // SAFETY: the caller vouches for the instruction's effect; an
        // exception it raises resumes at label 3 (see `exception`) with
        // the registers the stub saved, and the section is disarmed on
        // both paths.
        unsafe {
            core::arch::asm!(
                "lea {at}, [3f]",
                "mov dword ptr [{slot}], {at}",
                "lea {at}, [2f]",
                "2:",
                $insn,
                "3:",
                "mov dword ptr [{slot}], 0",
                at = out(reg) at,
                slot = sym CATCH_RESUME,
                $($op)*
            );
        }
        (caught(), at)
    }};
}

/// The exception the last [`catch`] section took.
fn caught() -> Option<Caught> {
    let v = CAUGHT_VECTOR.load(Ordering::SeqCst);
    (v != 0).then(|| Caught {
        vector: (v - 1) as u8,
        error: CAUGHT_ERROR.load(Ordering::SeqCst),
        eip: CAUGHT_EIP.load(Ordering::SeqCst),
    })
}

/// Every exception lands here, interrupts off: inside a [`catch`]
/// section it is recorded and the section resumes after the
/// instruction; anywhere else it is reported and the guest stops.
extern "C" fn exception(f: &mut ExcFrame) {
    let resume = CATCH_RESUME.swap(0, Ordering::SeqCst);
    if resume != 0 {
        CAUGHT_ERROR.store(f.error, Ordering::SeqCst);
        CAUGHT_EIP.store(f.eip, Ordering::SeqCst);
        CAUGHT_VECTOR.store(f.vector + 1, Ordering::SeqCst);
        f.eip = resume;
        return;
    }
    let _ = writeln!(
        DebugCon,
        "GUEST FAULT: exception {} error {:#x} at eip {:#x} (cs {:#x} eflags {:#x} eax {:#x} ebx {:#x} ecx {:#x} edx {:#x} esi {:#x} edi {:#x} ebp {:#x})",
        f.vector, f.error, f.eip, f.cs, f.eflags, f.eax, f.ebx, f.ecx, f.edx, f.esi, f.edi, f.ebp
    );
    let _ = writeln!(DebugCon, "{VERDICT_FAIL}");
    stop(false, HYPERCALL_PAGE.read_u32(0) != 0)
}

/// Memory shared with the hypervisor or the CPU, reached through raw
/// pointers only.
#[repr(C, align(4096))]
struct Page(UnsafeCell<[u8; 4096]>);

// SAFETY: the contents are only reached through raw pointers with volatile
// accesses or atomics (see `Page::ptr`).
unsafe impl Sync for Page {}

impl Page {
    const fn new() -> Self {
        Self(UnsafeCell::new([0; 4096]))
    }
    /// Its address (paging is off: linear = guest-physical).
    fn ptr(&self) -> *mut u8 {
        self.0.get().cast()
    }
    fn addr(&self) -> u32 {
        self.ptr() as u32
    }
    fn gfn(&self) -> u32 {
        self.addr() >> 12
    }
    fn read_u32(&self, off: usize) -> u32 {
        assert!(off + 4 <= 4096);
        // SAFETY: inside the page; volatile because the hypervisor writes it.
        unsafe { self.ptr().add(off).cast::<u32>().read_volatile() }
    }
    fn write_u32(&self, off: usize, v: u32) {
        assert!(off + 4 <= 4096);
        // SAFETY: inside the page.
        unsafe { self.ptr().add(off).cast::<u32>().write_volatile(v) }
    }
    /// The u32 at `off` as an atomic (shared with the hypervisor).
    fn atomic(&self, off: usize) -> &AtomicU32 {
        assert!(off + 4 <= 4096 && off.is_multiple_of(4));
        // SAFETY: aligned, inside a page that lives for the program.
        unsafe { AtomicU32::from_ptr(self.ptr().add(off).cast()) }
    }
    /// Writes `v` at `off`.
    fn put<T: IntoBytes + Immutable>(&self, off: usize, v: &T) {
        let b = v.as_bytes();
        assert!(off + b.len() <= 4096);
        for (i, byte) in b.iter().enumerate() {
            // SAFETY: inside the page (checked).
            unsafe { self.ptr().add(off + i).write_volatile(*byte) };
        }
    }
    /// Reads a `T` at `off`.
    fn get<T: FromBytes + IntoBytes>(&self, off: usize) -> T {
        let mut v = T::new_zeroed();
        let b = v.as_mut_bytes();
        assert!(off + b.len() <= 4096);
        for (i, byte) in b.iter_mut().enumerate() {
            // SAFETY: inside the page (checked).
            *byte = unsafe { self.ptr().add(off + i).read_volatile() };
        }
        v
    }
}

static STACK: Page16 = Page16(UnsafeCell::new([0; STACK_SIZE]));
#[repr(C, align(16))]
struct Page16(UnsafeCell<[u8; STACK_SIZE]>);
// SAFETY: only the CPU uses it, as the stack.
unsafe impl Sync for Page16 {}

static HYPERCALL_PAGE: Page = Page::new();
static SHARED_INFO: Page = Page::new();
static GRANT_FRAME: Page = Page::new();
/// Scratch for hypercall arguments and results.
static ARGS: Page = Page::new();
static BUF_A: Page = Page::new();
static BUF_B: Page = Page::new();
/// Given back and populated again.
static BALLOON: Page = Page::new();
static IDT: Idt = Idt(UnsafeCell::new([0; 256]));
#[repr(C, align(8))]
struct Idt(UnsafeCell<[u64; 256]>);
// SAFETY: written once before `lidt`, with interrupts off.
unsafe impl Sync for Idt {}

/// Upcalls taken.
static UPCALLS: AtomicU32 = AtomicU32::new(0);
/// Ports the handler found pending: 32 words of 32 (the 32-bit layout).
static SEEN: [AtomicU32; 32] = [const { AtomicU32::new(0) }; 32];
/// The end of the RAM entry holding our image (from `memory_map`).
static RAM_END: AtomicU32 = AtomicU32::new(0);
/// Whether shared_info is mapped (the handler reads it then).
static SHARED_MAPPED: AtomicU32 = AtomicU32::new(0);

/// 32-bit shared_info / vcpu_info offsets (Xen's compat layout).
const VI_PENDING_SEL: usize = 4;
const SI_PENDING: usize = 2048;
const SI_MASK: usize = 2176;
const SI_WC_VERSION: usize = 2304;

/// A check's failure message, formatted into a fixed buffer.
struct Msg {
    buf: [u8; 160],
    len: usize,
}

impl Msg {
    fn new(args: core::fmt::Arguments<'_>) -> Self {
        let mut m = Msg {
            buf: [0; 160],
            len: 0,
        };
        let _ = m.write_fmt(args);
        m
    }
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("(bad message)")
    }
}

impl Write for Msg {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for c in s.chars() {
            let mut b = [0; 4];
            let e = c.encode_utf8(&mut b);
            if self.len + e.len() > self.buf.len() {
                break;
            }
            self.buf[self.len..self.len + e.len()].copy_from_slice(e.as_bytes());
            self.len += e.len();
        }
        Ok(())
    }
}

macro_rules! fail {
    ($($t:tt)*) => {
        Err(Msg::new(format_args!($($t)*)))
    };
}

mod hw;

/// Records check `name`.
fn done(r: &mut Report<DebugCon>, name: &str, res: Result<(), Msg>) {
    match res {
        Ok(()) => r.check(name, Ok(())),
        Err(m) => r.check(name, Err(format_args!("{}", m.as_str()))),
    }
}

/// Output on port 0xE9.
struct DebugCon;

impl Write for DebugCon {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            // SAFETY: port 0xE9 is the debug console, nothing else.
            unsafe { core::arch::asm!("out 0xe9, al", in("al") b, options(nomem, nostack)) };
        }
        Ok(())
    }
}

/// A 32-bit hypercall through the hypercall page with up to three
/// arguments (EBX, ECX, EDX); returns EAX. Xen may clobber the argument
/// registers (debug builds poison them), so all are declared clobbered.
fn hypercall(nr: u32, a1: u32, a2: u32, a3: u32) -> i32 {
    let ret: u32;
    let entry = HYPERCALL_PAGE.addr() + nr * 32;
    // SAFETY: the hypercall page was installed (`xen_cpuid`) and holds one
    // 32-byte stub per hypercall; the stub returns with `ret`. ESI (LLVM's
    // base pointer on x86-32) is saved around it by hand; memory the
    // hypervisor writes is only read through volatile accesses.
    unsafe {
        core::arch::asm!(
            "push esi",
            "call eax",
            "pop esi",
            inout("eax") entry => ret,
            inout("ebx") a1 => _,
            inout("ecx") a2 => _,
            inout("edx") a3 => _,
            out("edi") _,
        );
    }
    ret as i32
}

fn memory_op(cmd: u32, arg: u32) -> i32 {
    hypercall(x::__HYPERVISOR_memory_op, cmd, arg, 0)
}

fn evtchn_op<T: IntoBytes + FromBytes + Immutable>(cmd: u32, a: &mut T) -> i32 {
    ARGS.put(0, a);
    let r = hypercall(x::__HYPERVISOR_event_channel_op, cmd, ARGS.addr(), 0);
    *a = ARGS.get(0);
    r
}

fn cpuid(leaf: u32) -> [u32; 4] {
    let r = core::arch::x86::__cpuid(leaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// Entered from `pvh_start` with EBX's `hvm_start_info` address.
extern "C" fn guest_main(start_info: u32) -> ! {
    let mut r = Report::new(DebugCon);
    r.note(format_args!(
        "pvh-test-guest32: 32-bit protected mode, start_info at {start_info:#x}"
    ));
    init_idt();
    let skip_nw = cmdline_has(start_info, b"skip=cr0-nw");
    let ok = xen_cpuid(&mut r);
    if ok {
        run_checks(&mut r, skip_nw);
    }
    let passed = r.verdict();
    stop(passed, ok)
}

/// Whether the command line of the `hvm_start_info` at `start_info`
/// (magic 0x336ec578; the string's address at offset 24) has the word
/// `word`.
fn cmdline_has(start_info: u32, word: &[u8]) -> bool {
    let p = start_info as usize as *const u32;
    // SAFETY: EBX at entry points at the start_info the loader wrote in
    // our RAM (PVH boot ABI); paging is off.
    let (magic, cmdline) = unsafe { (p.read_volatile(), p.add(6).read_volatile()) };
    if magic != 0x336E_C578 || cmdline == 0 {
        return false;
    }
    let mut buf = [0u8; 256];
    let mut len = 0;
    while len < buf.len() {
        // SAFETY: the NUL-terminated command line the loader wrote in
        // our RAM; read no further than its NUL (or 256 bytes).
        let b = unsafe { (cmdline as usize as *const u8).add(len).read_volatile() };
        if b == 0 {
            break;
        }
        buf[len] = b;
        len += 1;
    }
    buf[..len].split(|&b| b == b' ').any(|w| w == word)
}

fn run_checks(r: &mut Report<DebugCon>, skip_nw: bool) {
    console_io(r);
    xen_version(r);
    memory_map(r);
    let port = shared_info(r).then(|| upcall_self_event(r)).flatten();
    expand_array(r);
    grant_table(r);
    grant_copy(r);
    reservation(r);
    runstate(r);
    poll(r, port);
    singleshot_timer(r);
    timer_virq(r);
    hostile(r);
    hw::unbacked_mmio(r);
    hw::cr4_unoffered_gp(r);
    hw::cr0_invalid_gp(r, skip_nw);
    hw::apic_modes(r);
}

fn stop(passed: bool, xen: bool) -> ! {
    if xen {
        let reason = if passed {
            xen_abi::sched::SHUTDOWN_poweroff
        } else {
            xen_abi::sched::SHUTDOWN_crash
        };
        ARGS.put(0, &reason);
        hypercall(
            x::__HYPERVISOR_sched_op,
            xen_abi::sched::SCHEDOP_shutdown,
            ARGS.addr(),
            0,
        );
    }
    loop {
        // SAFETY: stops this vCPU only.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

fn init_idt() {
    let gate = |handler: u32| -> u64 {
        (handler as u64 & 0xFFFF)
            | (0x08 << 16)
            | (0x8E << 40)
            | (((handler as u64 >> 16) & 0xFFFF) << 48)
    };
    // SAFETY: written once, interrupts off, before `lidt`.
    let idt = unsafe { &mut *IDT.0.get() };
    for (v, e) in idt.iter_mut().enumerate() {
        let h = if v == UPCALL_VECTOR as usize {
            pvh32_upcall_stub as *const () as u32
        } else if v < 32 {
            pvh32_exc_stubs as *const () as u32 + 16 * v as u32
        } else {
            pvh32_fault_stub as *const () as u32
        };
        *e = gate(h);
    }
    #[repr(C, packed)]
    struct DescPtr {
        limit: u16,
        base: u32,
    }
    let idtr = DescPtr {
        limit: (256 * 8 - 1) as u16,
        base: IDT.0.get() as u32,
    };
    // SAFETY: every gate points at a stub with code selector 0x08 of our GDT.
    unsafe { core::arch::asm!("lidt [{}]", in(reg) &idtr, options(nostack)) };
}

/// Any vector from 32 on but the upcall's: an interrupt nobody asked for.
extern "C" fn fault() -> ! {
    let _ = writeln!(DebugCon, "GUEST FAULT: unexpected interrupt");
    let _ = writeln!(DebugCon, "{VERDICT_FAIL}");
    stop(false, HYPERCALL_PAGE.read_u32(0) != 0)
}

/// The upcall: clear `evtchn_upcall_pending`, take the 4-byte selector,
/// and clear and record every pending unmasked port of the 32-bit words it
/// names.
extern "C" fn upcall() {
    UPCALLS.fetch_add(1, Ordering::SeqCst);
    if SHARED_MAPPED.load(Ordering::SeqCst) == 0 {
        return;
    }
    let si = &SHARED_INFO;
    // SAFETY: vcpu_info[0] is the first byte of the mapped shared_info.
    unsafe { si.ptr().write_volatile(0) };
    let mut sel = si.atomic(VI_PENDING_SEL).swap(0, Ordering::SeqCst);
    while sel != 0 {
        let w = sel.trailing_zeros() as usize;
        sel &= sel - 1;
        let pend = si.atomic(SI_PENDING + w * 4);
        let mask = si.atomic(SI_MASK + w * 4).load(Ordering::SeqCst);
        let bits = pend.load(Ordering::SeqCst) & !mask;
        if bits != 0 {
            pend.fetch_and(!bits, Ordering::SeqCst);
            SEEN[w].fetch_or(bits, Ordering::SeqCst);
        }
    }
}

fn xen_cpuid(r: &mut Report<DebugCon>) -> bool {
    let mut base = None;
    for leaf in (0x4000_0000u32..0x4001_0000).step_by(0x100) {
        let [eax, ebx, ecx, edx] = cpuid(leaf);
        if [ebx, ecx, edx] == [0x566e_6558, 0x65584d4d, 0x4d4d566e] && eax >= leaf + 2 {
            base = Some(leaf);
            break;
        }
    }
    let Some(base) = base else {
        done(r, "xen_cpuid", fail!("no XenVMMXenVMM signature"));
        return false;
    };
    let [_, msr, ..] = cpuid(base + 2);
    // SAFETY: the MSR is the one Xen's leaf names; the page is ours and
    // only ever read (volatile) afterwards.
    unsafe {
        core::arch::asm!("wrmsr", in("ecx") msr, in("eax") HYPERCALL_PAGE.addr(), in("edx") 0u32,
            options(nostack));
    }
    let filled = HYPERCALL_PAGE.read_u32(0) != 0;
    done(
        r,
        "xen_cpuid",
        if filled {
            Ok(())
        } else {
            fail!("the hypercall page stayed empty")
        },
    );
    filled
}

fn console_io(r: &mut Report<DebugCon>) {
    let line = b"pvh-test-guest32: hello through console_io\n";
    BUF_A.put(0, line);
    let ret = hypercall(
        x::__HYPERVISOR_console_io,
        x::CONSOLEIO_write,
        line.len() as u32,
        BUF_A.addr(),
    );
    done(
        r,
        "console_io",
        if ret == 0 {
            Ok(())
        } else {
            fail!("CONSOLEIO_write returned {ret}")
        },
    );
}

fn xen_version(r: &mut Report<DebugCon>) {
    use xen_abi::version as ver;
    let v = hypercall(x::__HYPERVISOR_xen_version, ver::XENVER_version, 0, 0);
    ARGS.put(0, &0x5A5A_5A5A_5A5A_5A5Au64);
    let p = hypercall(
        x::__HYPERVISOR_xen_version,
        ver::XENVER_platform_parameters,
        ARGS.addr(),
        0,
    );
    let params: u64 = ARGS.get(0);
    done(
        r,
        "xen_version",
        if v >> 16 != 4 {
            fail!("version {v:#x}")
        } else if p != 0 || params != 0x5A5A_5A5A_0000_0000 {
            fail!("platform_parameters: {p}, wrote {params:#x} (4 bytes of 0 expected)")
        } else {
            Ok(())
        },
    );
}

fn memory_map(r: &mut Report<DebugCon>) {
    ARGS.put(
        0,
        &cm::CompatMemoryMap {
            nr_entries: 16,
            buffer: BUF_A.addr(),
        },
    );
    let ret = memory_op(m::XENMEM_memory_map, ARGS.addr());
    let a: cm::CompatMemoryMap = ARGS.get(0);
    let n = a.nr_entries as usize;
    let image = BUF_A.addr() as u64;
    let covers = (0..n.min(16)).any(|i| {
        let e: m::E820Entry = BUF_A.get(i * 20);
        let ours = e.r#type == 1 /* E820_RAM */ && e.addr <= image && image < e.addr + e.size;
        if ours && let Ok(end) = u32::try_from(e.addr + e.size) {
            RAM_END.store(end, Ordering::SeqCst);
        }
        ours
    });
    done(
        r,
        "memory_map",
        if ret != 0 {
            fail!("XENMEM_memory_map returned {ret}")
        } else if !covers {
            fail!("{n} entries, none is RAM under our image")
        } else {
            Ok(())
        },
    );
}

/// Maps shared_info and sets the callback vector; true when both worked.
fn shared_info(r: &mut Report<DebugCon>) -> bool {
    ARGS.put(
        0,
        &cm::CompatAddToPhysmap {
            domid: DOMID_SELF,
            size: 0,
            space: m::XENMAPSPACE_shared_info,
            idx: 0,
            gpfn: SHARED_INFO.gfn(),
        },
    );
    let map = memory_op(m::XENMEM_add_to_physmap, ARGS.addr());
    if map != 0 {
        done(r, "shared_info", fail!("add_to_physmap returned {map}"));
        return false;
    }
    SHARED_MAPPED.store(1, Ordering::SeqCst);
    ARGS.put(
        0,
        &xen_abi::hvm::XenHvmParam {
            domid: DOMID_SELF,
            pad: 0,
            index: xen_abi::hvm::HVM_PARAM_CALLBACK_IRQ,
            value: (2 << 56) | UPCALL_VECTOR as u64,
        },
    );
    let set = hypercall(
        x::__HYPERVISOR_hvm_op,
        xen_abi::hvm::HVMOP_set_param,
        ARGS.addr(),
        0,
    );
    let wc = SHARED_INFO.read_u32(SI_WC_VERSION);
    done(
        r,
        "shared_info",
        if set != 0 {
            fail!("HVMOP_set_param(CALLBACK_IRQ) returned {set}")
        } else if wc == 0 || wc & 1 != 0 {
            fail!("wc_version at the 32-bit offset 2304 is {wc} (even, non-zero expected)")
        } else {
            Ok(())
        },
    );
    true
}

/// Binds IPI ports until one is past the first 32-bit word, sends to it
/// and waits for the upcall; returns that port.
fn upcall_self_event(r: &mut Report<DebugCon>) -> Option<u32> {
    let mut port = 0;
    while port < 33 {
        let mut a = ev::EvtchnBindIpi { vcpu: 0, port: 0 };
        let ret = evtchn_op(ev::EVTCHNOP_bind_ipi, &mut a);
        if ret != 0 {
            done(r, "upcall_self_event", fail!("bind_ipi returned {ret}"));
            return None;
        }
        port = a.port;
    }
    let before = UPCALLS.load(Ordering::SeqCst);
    let ret = evtchn_op(ev::EVTCHNOP_send, &mut ev::EvtchnSend { port });
    let (w, bit) = (port as usize / 32, 1u32 << (port % 32));
    let mut seen = false;
    // SAFETY: the IDT handles every vector.
    unsafe { core::arch::asm!("sti", options(nostack)) };
    for _ in 0..10_000_000 {
        if SEEN[w].load(Ordering::SeqCst) & bit != 0 {
            seen = true;
            break;
        }
        core::hint::spin_loop();
    }
    // SAFETY: masks interrupts again.
    unsafe { core::arch::asm!("cli", options(nostack)) };
    let upcalls = UPCALLS.load(Ordering::SeqCst) - before;
    done(
        r,
        "upcall_self_event",
        if ret != 0 {
            fail!("send returned {ret}")
        } else if !seen {
            fail!("port {port} not seen in 32-bit word {w} ({upcalls} upcalls)")
        } else {
            Ok(())
        },
    );
    seen.then_some(port)
}

/// `EVTCHNOP_expand_array` before `EVTCHNOP_init_control` (2-level
/// events, no FIFO control block), naming a good RAM frame: `-EOPNOTSUPP`,
/// Xen's answer (`evtchn_fifo_expand_array`, which checks for the FIFO
/// ABI before anything else). The 2-level events of the checks after it
/// still arrive.
fn expand_array(r: &mut Report<DebugCon>) {
    let mut a = ev::EvtchnExpandArray {
        array_gfn: u64::from(BUF_B.gfn()),
    };
    let ret = evtchn_op(ev::EVTCHNOP_expand_array, &mut a);
    done(
        r,
        "expand_array",
        if ret == -xen_abi::errno::EOPNOTSUPP {
            Ok(())
        } else {
            fail!(
                "EVTCHNOP_expand_array of frame {:#x} before init_control: {ret}, want -{} (-EOPNOTSUPP)",
                BUF_B.gfn(),
                xen_abi::errno::EOPNOTSUPP
            )
        },
    );
}

fn grant_table(r: &mut Report<DebugCon>) {
    ARGS.put(
        0,
        &cm::CompatAddToPhysmap {
            domid: DOMID_SELF,
            size: 0,
            space: m::XENMAPSPACE_grant_table,
            idx: 0,
            gpfn: GRANT_FRAME.gfn(),
        },
    );
    let map = memory_op(m::XENMEM_add_to_physmap, ARGS.addr());
    BUF_A.put(0, &[0x5A5A_5A5Au32; 2]);
    ARGS.put(
        0,
        &cm::CompatGnttabSetupTable {
            dom: DOMID_SELF,
            pad0: 0,
            nr_frames: 1,
            status: 99,
            pad1: 0,
            frame_list: BUF_A.addr(),
        },
    );
    let setup = hypercall(
        x::__HYPERVISOR_grant_table_op,
        g::GNTTABOP_setup_table,
        ARGS.addr(),
        1,
    );
    let st: cm::CompatGnttabSetupTable = ARGS.get(0);
    let frames: [u32; 2] = BUF_A.get(0);
    ARGS.put(
        0,
        &g::GnttabQuerySize {
            dom: DOMID_SELF,
            ..Default::default()
        },
    );
    let query = hypercall(
        x::__HYPERVISOR_grant_table_op,
        g::GNTTABOP_query_size,
        ARGS.addr(),
        1,
    );
    let q: g::GnttabQuerySize = ARGS.get(0);
    done(
        r,
        "grant_table",
        if map != 0 {
            fail!("add_to_physmap(grant_table) returned {map}")
        } else if setup != 0 || { st.status } != g::GNTST_okay {
            fail!("setup_table: {setup}, status {}", { st.status })
        } else if frames != [GRANT_FRAME.gfn(), 0x5A5A_5A5A] {
            fail!(
                "frame list {:#x} {:#x}, expected one 4-byte {:#x}",
                frames[0],
                frames[1],
                GRANT_FRAME.gfn()
            )
        } else if query != 0 || q.status != g::GNTST_okay || q.nr_frames < 1 {
            fail!("query_size: {query}, {} frames", q.nr_frames)
        } else {
            Ok(())
        },
    );
}

fn grant_copy(r: &mut Report<DebugCon>) {
    for i in 0..64 {
        BUF_A.put(i, &(i as u8 ^ 0xA5));
    }
    BUF_B.put(0, &[0u8; 128]);
    let copy = |src_off: u16, dst_off: u16| cm::CompatGnttabCopy {
        source: cm::CompatGnttabCopyPtr {
            u: BUF_A.gfn(),
            domid: DOMID_SELF,
            offset: src_off,
        },
        dest: cm::CompatGnttabCopyPtr {
            u: BUF_B.gfn(),
            domid: DOMID_SELF,
            offset: dst_off,
        },
        len: 32,
        flags: 0,
        status: 99,
        pad: 0,
    };
    ARGS.put(0, &[copy(0, 64), copy(32, 96)]);
    let ret = hypercall(
        x::__HYPERVISOR_grant_table_op,
        g::GNTTABOP_copy,
        ARGS.addr(),
        2,
    );
    let result: [cm::CompatGnttabCopy; 2] = ARGS.get(0);
    let copied: [u8; 64] = BUF_B.get(64);
    let want: [u8; 64] = core::array::from_fn(|i| i as u8 ^ 0xA5);
    done(
        r,
        "grant_copy",
        if ret != 0 || { result[0].status } != 0 || { result[1].status } != 0 {
            fail!("copy: {ret}, status {} {}", { result[0].status }, {
                result[1].status
            })
        } else if copied != want {
            fail!("the bytes did not arrive")
        } else {
            Ok(())
        },
    );
}

fn reservation(r: &mut Report<DebugCon>) {
    BALLOON.write_u32(0, 0x1234_5678);
    BUF_A.put(0, &[BALLOON.gfn(), 0x5A5A_5A5A]);
    let resv = cm::CompatMemoryReservation {
        extent_start: BUF_A.addr(),
        nr_extents: 1,
        extent_order: 0,
        mem_flags: 0,
        domid: DOMID_SELF,
        pad: 0,
    };
    ARGS.put(0, &resv);
    let down = memory_op(m::XENMEM_decrease_reservation, ARGS.addr());
    // Gone: a read of the hole is all-ones (Xen's null MMIO handler).
    let gone = BALLOON.read_u32(0);
    ARGS.put(0, &resv);
    let up = memory_op(m::XENMEM_populate_physmap, ARGS.addr());
    // Back (its contents are not defined: Xen may hand the same frame
    // back unscrubbed) and writable.
    BALLOON.write_u32(0, 0xCAFE_F00D);
    let back = BALLOON.read_u32(0);
    done(
        r,
        "reservation",
        if down != 1 || up != 1 {
            fail!("decrease: {down}, populate: {up} (1 each expected)")
        } else if gone != u32::MAX || back != 0xCAFE_F00D {
            fail!("page read {gone:#x} while out, {back:#x} after repopulation")
        } else {
            Ok(())
        },
    );
}

fn runstate(r: &mut Report<DebugCon>) {
    use xen_abi::vcpu as vc;
    BUF_A.put(40, &0x5A5A_5A5A_5A5A_5A5Au64);
    let get = hypercall(
        x::__HYPERVISOR_vcpu_op,
        vc::VCPUOP_get_runstate_info,
        0,
        BUF_A.addr(),
    );
    let info: cm::CompatVcpuRunstateInfo = BUF_A.get(0);
    let after = BUF_A.read_u32(44);
    // A registered area: written in the 32-bit layout (shared state is
    // 32-bit since the callback vector was set from this mode).
    BUF_B.put(0, &[0xFFu8; 48]);
    ARGS.put(0, &(BUF_B.addr() as u64));
    let reg = hypercall(
        x::__HYPERVISOR_vcpu_op,
        vc::VCPUOP_register_runstate_memory_area,
        0,
        ARGS.addr(),
    );
    let area: cm::CompatVcpuRunstateInfo = BUF_B.get(0);
    let area_after = BUF_B.read_u32(44);
    ARGS.put(0, &0u64);
    hypercall(
        x::__HYPERVISOR_vcpu_op,
        vc::VCPUOP_register_runstate_memory_area,
        0,
        ARGS.addr(),
    );
    done(
        r,
        "runstate",
        if get != 0 || { info.state } != vc::RUNSTATE_running || { info.time }[0] == 0 {
            fail!(
                "get_runstate_info: {get}, state {}, running {} ns",
                { info.state },
                { info.time }[0]
            )
        } else if after != 0x5A5A_5A5A {
            fail!("get_runstate_info wrote past 44 bytes")
        } else if reg != 0
            || { area.state } != vc::RUNSTATE_running
            || { area.state_entry_time } == 0
            || area_after != 0xFFFF_FFFF
        {
            fail!(
                "runstate area: {reg}, state {}, entry time {}",
                { area.state },
                { area.state_entry_time }
            )
        } else {
            Ok(())
        },
    );
}

fn poll(r: &mut Report<DebugCon>, port: Option<u32>) {
    let Some(port) = port else {
        done(r, "poll", fail!("no event channel to poll"));
        return;
    };
    // Pending (interrupts are off: the handler does not take it).
    let sent = evtchn_op(ev::EVTCHNOP_send, &mut ev::EvtchnSend { port });
    BUF_A.put(0, &port);
    ARGS.put(
        0,
        &cm::CompatSchedPoll {
            ports: BUF_A.addr(),
            nr_ports: 1,
            timeout: 0,
        },
    );
    let ret = hypercall(
        x::__HYPERVISOR_sched_op,
        xen_abi::sched::SCHEDOP_poll,
        ARGS.addr(),
        0,
    );
    let pending = SHARED_INFO.read_u32(SI_PENDING + (port as usize / 32) * 4) & (1 << (port % 32));
    SHARED_INFO
        .atomic(SI_PENDING + (port as usize / 32) * 4)
        .fetch_and(!(1 << (port % 32)), Ordering::SeqCst);
    done(
        r,
        "poll",
        if sent != 0 || ret != 0 || pending == 0 {
            fail!("send {sent}, poll {ret}, pending bit {pending:#x}")
        } else {
            Ok(())
        },
    );
}

fn singleshot_timer(r: &mut Report<DebugCon>) {
    use xen_abi::vcpu as vc;
    // The last 12 bytes of our RAM: the hole after them faults, so a
    // 16-byte (64-bit layout) read would fail with -EFAULT.
    let end = RAM_END.load(Ordering::SeqCst);
    if end < 0x20_0000 {
        done(r, "singleshot_timer", fail!("no RAM end from memory_map"));
        return;
    }
    let at = end - 12;
    // A deadline in the past: it fires at once (`VCPU_SSHOTTMR_future` is
    // ignored, as by Xen since 4.18 and Debian's 4.17); no VIRQ_TIMER is
    // bound, so nothing arrives.
    let arg = cm::CompatVcpuSetSingleshotTimer {
        timeout_abs_ns: 1,
        flags: vc::VCPU_SSHOTTMR_future,
    };
    for (i, b) in arg.as_bytes().iter().enumerate() {
        // SAFETY: free RAM at the top of the guest's low memory (nothing
        // is loaded there: docs/memory-plan.md); paging is off.
        unsafe { (at as usize as *mut u8).add(i).write_volatile(*b) };
    }
    let ret = hypercall(
        x::__HYPERVISOR_vcpu_op,
        vc::VCPUOP_set_singleshot_timer,
        0,
        at,
    );
    done(
        r,
        "singleshot_timer",
        if ret == 0 {
            Ok(())
        } else {
            fail!("set_singleshot_timer from the last 12 bytes of RAM gave {ret}")
        },
    );
}

/// Spins with interrupts on until `port` was seen by the upcall handler.
fn wait_for_port(port: u32) -> bool {
    let (w, bit) = (port as usize / 32, 1u32 << (port % 32));
    // SAFETY: the IDT handles every vector.
    unsafe { core::arch::asm!("sti", options(nostack)) };
    let mut seen = false;
    for _ in 0..10_000_000 {
        if SEEN[w].fetch_and(!bit, Ordering::SeqCst) & bit != 0 {
            seen = true;
            break;
        }
        core::hint::spin_loop();
    }
    // SAFETY: masks interrupts again.
    unsafe { core::arch::asm!("cli", options(nostack)) };
    seen
}

/// VIRQ_TIMER bound to a port; `set_timer_op` with a deadline in the past
/// (the 64-bit value split over EBX, low, and ECX, high) fires it at once.
fn timer_virq(r: &mut Report<DebugCon>) {
    let mut a = ev::EvtchnBindVirq {
        virq: x::VIRQ_TIMER,
        vcpu: 0,
        port: 0,
    };
    let bind = evtchn_op(ev::EVTCHNOP_bind_virq, &mut a);
    let set = hypercall(x::__HYPERVISOR_set_timer_op, 1, 0, 0);
    let seen = bind == 0 && set == 0 && wait_for_port(a.port);
    done(
        r,
        "timer_virq",
        if seen {
            Ok(())
        } else {
            fail!(
                "bind_virq {bind} (port {}), set_timer_op {set}, no event",
                a.port
            )
        },
    );
}

/// A handle into the hole above RAM gives -EFAULT; an unknown hypercall
/// -ENOSYS; both with the result in EAX.
fn hostile(r: &mut Report<DebugCon>) {
    let hole = RAM_END.load(Ordering::SeqCst).wrapping_add(0x10_0000);
    ARGS.put(
        0,
        &cm::CompatMemoryMap {
            nr_entries: 4,
            buffer: hole,
        },
    );
    let efault = memory_op(m::XENMEM_memory_map, ARGS.addr());
    let enosys = hypercall(60, 0, 0, 0);
    done(
        r,
        "hostile_handles",
        if efault == -14 && enosys == -38 {
            Ok(())
        } else {
            fail!("memory_map into the hole at {hole:#x}: {efault}; hypercall 60: {enosys}")
        },
    );
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let _ = writeln!(DebugCon, "GUEST PANIC: {info}");
    let _ = writeln!(DebugCon, "{VERDICT_FAIL}");
    stop(false, HYPERCALL_PAGE.read_u32(0) != 0)
}

// The C memory functions the compiler calls: the i686 Linux target's
// `compiler_builtins` leaves them to a libc, which a freestanding kernel
// does not have. String instructions keep the compiler from turning them
// back into calls to themselves.

/// `memcpy`.
///
/// # Safety
/// As C's: `n` bytes readable at `src`, writable at `dst`, no overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract; DF is clear (cld at entry, the ABI);
    // ESI (LLVM's base pointer) is swapped in and back.
    unsafe {
        core::arch::asm!("xchg esi, {s}", "rep movsb", "xchg esi, {s}", s = inout(reg) src => _,
            inout("ecx") n => _, inout("edi") dst => _, options(nostack, preserves_flags));
    }
    dst
}

/// `memmove`.
///
/// # Safety
/// As C's: `n` bytes readable at `src`, writable at `dst`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) <= (src as usize) || (dst as usize) >= (src as usize) + n {
        // SAFETY: a forward copy is right when dst is below src or apart.
        return unsafe { memcpy(dst, src, n) };
    }
    // SAFETY: the caller's contract; copies backwards (std, then cld).
    unsafe {
        core::arch::asm!("xchg esi, {s}", "std", "rep movsb", "cld", "xchg esi, {s}",
            s = inout(reg) src.add(n - 1) => _, inout("ecx") n => _,
            inout("edi") dst.add(n - 1) => _, options(nostack));
    }
    dst
}

/// `memset`.
///
/// # Safety
/// As C's: `n` bytes writable at `dst`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract.
    unsafe {
        core::arch::asm!("rep stosb", inout("ecx") n => _, inout("edi") dst => _,
            in("al") c as u8, options(nostack, preserves_flags));
    }
    dst
}

/// `memcmp`.
///
/// # Safety
/// As C's: `n` bytes readable at both.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: the caller's contract; volatile keeps this a loop.
        let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
        if x != y {
            return x as i32 - y as i32;
        }
    }
    0
}

/// `bcmp`.
///
/// # Safety
/// As C's: `n` bytes readable at both.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the same contract.
    unsafe { memcmp(a, b, n) }
}

/// The prebuilt `core` for this target names an unwinding personality;
/// with `panic=abort` nothing unwinds, so it is never called.
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}
