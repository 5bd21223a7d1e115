//! Instruction emulation for guest accesses to unbacked guest-physical
//! memory, as Xen completes them (`hvm_hap_nested_page_fault` ->
//! `handle_mmio` -> `hvm_emulate_one` with the null MMIO handler).
//!
//! A nested page fault at an address with no frame behind it (Xen's
//! `p2m_mmio_dm`: never populated, or given back) does not kill the
//! domain. The faulting instruction is read at the guest's RIP through the
//! guest's own page tables, decoded with `iced-x86` and performed: every
//! memory operand is translated again; where a frame is behind it the
//! access goes to RAM, otherwise to an [`MmioHandler`]. Without a device
//! model that is [`NullHandler`] (Xen's `null_handler`): reads give
//! all-ones of the access size, writes are dropped. Registers and the
//! arithmetic flags are written back as the instruction would, RIP moves
//! past it, and the guest continues.
//!
//! Emulated (64-bit mode and 32-bit protected mode, flat segments):
//! - `MOV` loads and stores of 1, 2, 4 and 8 bytes, including the
//!   immediate (`C6`/`C7`) and `moffs` (`A0`-`A3`) forms;
//! - `MOVZX`, `MOVSX`, `MOVSXD` loads;
//! - `ADD`, `SUB`, `ADC`, `SBB`, `AND`, `OR`, `XOR` with a memory source
//!   or destination (`LOCK` allowed), `CMP` and `TEST` with a memory
//!   operand, `INC`, `DEC`, `NEG`, `NOT` of memory, all setting CF, PF,
//!   AF, ZF, SF and OF as the hardware does (AF 0 for the logic ops);
//! - `XCHG` and `CMPXCHG` with memory;
//! - `MOVS`, `STOS` and `LODS` of 1 to 8 bytes, with or without `REP`
//!   (at most [`crate::exits::MAX_STRING_IO`] iterations per exit, then
//!   the instruction is re-executed with the registers moved on), 64- or
//!   32-bit addressing.
//!
//! Not emulated (the domain is crashed with a reason, nothing injected):
//! real mode and virtual-8086 mode, FS/GS-relative operands (no segment
//! bases in the backend interface), 16-bit string addressing, every other
//! instruction (`BT*`, `PUSH`/`POP` of memory, `SCAS`/`CMPS`, `XADD`,
//! SSE/AVX moves: VEX, EVEX and XOP are not even decoded), and
//! undecodable bytes.
//!
//! Faults while emulating are delivered as the hardware would: a failed
//! walk of the guest page tables for the instruction fetch or for a memory
//! operand is `#PF` with CR2 and an error code (P from a second walk, W,
//! U for CPL 3, I/D for fetches when EFER.NXE), a non-canonical 64-bit
//! address is `#GP(0)`. The walker does not check the U/S and NX bits (see
//! [`crate::pagewalk`]); the hardware checked them on the original access.

use iced_x86::{
    Decoder, DecoderError, DecoderOptions, Instruction, MemorySize, Mnemonic, OpKind, Register,
};

use crate::arch::{ControlReg, Event, VcpuBackend, X86_EXC_GP};
use crate::guestmem::GuestMem;
use crate::pagewalk::{GuestVirt, PagingMode};
use crate::types::PAGE_SIZE;

/// `#PF`.
pub const X86_EXC_PF: u8 = 14;
/// The longest x86 instruction.
const MAX_INSN_LEN: usize = 15;

const CR0_PE: u64 = 1 << 0;
const CR0_TS: u64 = 1 << 3;
const CR4_LA57: u64 = 1 << 12;
const EFER_NXE: u64 = 1 << 11;
const RFLAGS_CF: u64 = 1 << 0;
const RFLAGS_PF: u64 = 1 << 2;
const RFLAGS_AF: u64 = 1 << 4;
const RFLAGS_ZF: u64 = 1 << 6;
const RFLAGS_SF: u64 = 1 << 7;
const RFLAGS_DF: u64 = 1 << 10;
const RFLAGS_OF: u64 = 1 << 11;
const RFLAGS_VM: u64 = 1 << 17;
const ARITH_FLAGS: u64 = RFLAGS_CF | RFLAGS_PF | RFLAGS_AF | RFLAGS_ZF | RFLAGS_SF | RFLAGS_OF;

const PFEC_PRESENT: u32 = 1 << 0;
const PFEC_WRITE: u32 = 1 << 1;
const PFEC_USER: u32 = 1 << 2;
const PFEC_INSN_FETCH: u32 = 1 << 4;

/// A device behind guest-physical addresses (Xen's `hvm_io_handler`).
pub trait MmioHandler {
    /// Reads `buf.len()` bytes at `gpa`.
    fn read(&mut self, gpa: u64, buf: &mut [u8]);
    /// Writes `data` at `gpa`.
    fn write(&mut self, gpa: u64, data: &[u8]);
}

/// Nothing there: reads give all-ones, writes are dropped (Xen's
/// `null_handler`).
#[derive(Clone, Copy, Debug, Default)]
pub struct NullHandler;

impl MmioHandler for NullHandler {
    fn read(&mut self, _gpa: u64, buf: &mut [u8]) {
        buf.fill(0xFF);
    }
    fn write(&mut self, _gpa: u64, _data: &[u8]) {}
}

/// How an emulation ended (Xen's `X86EMUL_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emulation {
    /// Done: registers written, RIP advanced (`X86EMUL_OKAY`).
    Okay,
    /// A `REP` string instruction made progress but is not finished: RIP
    /// stays, the guest re-executes it (`X86EMUL_RETRY`).
    Retry,
    /// An exception was injected instead; RIP stays at the instruction
    /// (`X86EMUL_EXCEPTION`).
    Exception(Event),
    /// The instruction or mode is not emulated (`X86EMUL_UNHANDLEABLE`):
    /// the caller crashes the domain with this reason.
    Unhandleable(&'static str),
}

/// A fault met while emulating.
enum Fault {
    /// An exception for the guest, with the CR2 value a `#PF` loads.
    Exc(Event, u64),
    /// Not emulated.
    Unhandleable(&'static str),
}

type Res<T> = Result<T, Fault>;

/// What the emulator needs from the machine: guest memory, the paging
/// mode, the MMIO handler and the access rights of the vCPU.
struct Ctx<'a, 'h> {
    virt: GuestVirt<'a>,
    mmio: &'h mut dyn MmioHandler,
    long: bool,
    user: bool,
    nxe: bool,
}

impl Ctx<'_, '_> {
    fn mem(&self) -> &GuestMem<'_> {
        &self.virt.mem
    }

    /// The `#PF` (or `#GP` for a non-canonical address) for an access to
    /// linear address `la` whose translation failed.
    fn fault(&self, la: u64, write: bool, fetch: bool) -> Fault {
        if self.long {
            let bits = if self.virt.mode.cr4 & CR4_LA57 != 0 {
                56
            } else {
                47
            };
            let top = (la as i64) >> bits;
            if top != 0 && top != -1 {
                return Fault::Exc(
                    Event::Exception {
                        vector: X86_EXC_GP,
                        error_code: Some(0),
                    },
                    0,
                );
            }
        }
        let mut ec = 0;
        // A failed write whose read translation works hit a read-only
        // entry: a protection fault.
        if write && self.virt.to_gpa(la, false).is_ok() {
            ec |= PFEC_PRESENT;
        }
        if write {
            ec |= PFEC_WRITE;
        }
        if self.user {
            ec |= PFEC_USER;
        }
        if fetch && self.nxe {
            ec |= PFEC_INSN_FETCH;
        }
        Fault::Exc(
            Event::Exception {
                vector: X86_EXC_PF,
                error_code: Some(ec),
            },
            la,
        )
    }

    fn linear(&self, la: u64) -> u64 {
        if self.long { la } else { la & 0xFFFF_FFFF }
    }

    /// Translates the (at most two) pages of an access of `len <= 8` bytes
    /// at `la`: `(gpa, length)` per piece. Nothing is accessed until every
    /// piece translates, so a fault leaves memory untouched.
    fn pieces(&self, la: u64, len: usize, write: bool) -> Res<([(u64, usize); 2], usize)> {
        let mut out = [(0u64, 0usize); 2];
        let mut n = 0;
        let mut done = 0;
        while done < len {
            let at = self.linear(la.wrapping_add(done as u64));
            let room = PAGE_SIZE - (at as usize & (PAGE_SIZE - 1));
            let chunk = room.min(len - done);
            let gpa = self
                .virt
                .to_gpa(at, write)
                .map_err(|_| self.fault(at, write, false))?;
            if n == out.len() {
                return Err(Fault::Unhandleable("access spans more than two pages"));
            }
            out[n] = (gpa, chunk);
            n += 1;
            done += chunk;
        }
        Ok((out, n))
    }

    /// Reads `size` bytes at linear `la`, from RAM or the MMIO handler.
    fn read(&mut self, la: u64, size: usize) -> Res<u64> {
        let (pieces, n) = self.pieces(la, size, false)?;
        let mut b = [0u8; 8];
        let mut off = 0;
        for &(gpa, len) in &pieces[..n] {
            let buf = &mut b[off..off + len];
            if self.mem().is_backed(gpa) {
                if self.mem().read(gpa, buf).is_err() {
                    buf.fill(0xFF);
                }
            } else {
                self.mmio.read(gpa, buf);
            }
            off += len;
        }
        Ok(u64::from_le_bytes(b) & mask(size))
    }

    /// Writes the low `size` bytes of `val` at linear `la`. Writes to
    /// read-only frames are dropped, as Xen drops writes to `p2m_ram_ro`.
    fn write(&mut self, la: u64, size: usize, val: u64) -> Res<()> {
        let (pieces, n) = self.pieces(la, size, true)?;
        let b = val.to_le_bytes();
        let mut off = 0;
        for &(gpa, len) in &pieces[..n] {
            let data = &b[off..off + len];
            if self.mem().is_backed(gpa) {
                let _ = self.mem().write(gpa, data);
            } else {
                self.mmio.write(gpa, data);
            }
            off += len;
        }
        Ok(())
    }
}

/// The all-ones value of `size` bytes.
fn mask(size: usize) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (size * 8)) - 1
    }
}

/// A general-purpose register by iced's name: (x86 number, size in bytes,
/// high byte AH..BH).
fn gpr(r: Register) -> Option<(u8, usize, bool)> {
    let n = r as u32;
    let (al, ah, spl, ax, eax, rax) = (
        Register::AL as u32,
        Register::AH as u32,
        Register::SPL as u32,
        Register::AX as u32,
        Register::EAX as u32,
        Register::RAX as u32,
    );
    Some(match n {
        _ if (al..ah).contains(&n) => ((n - al) as u8, 1, false),
        _ if (ah..spl).contains(&n) => ((n - ah) as u8, 1, true),
        _ if (spl..ax).contains(&n) => ((n - spl + 4) as u8, 1, false),
        _ if (ax..eax).contains(&n) => ((n - ax) as u8, 2, false),
        _ if (eax..rax).contains(&n) => ((n - eax) as u8, 4, false),
        _ if (rax..rax + 16).contains(&n) => ((n - rax) as u8, 8, false),
        _ => return None,
    })
}

fn get_reg(cpu: &dyn VcpuBackend, r: Register) -> Res<u64> {
    let (n, size, high) = gpr(r).ok_or(Fault::Unhandleable("operand is not a general register"))?;
    let v = cpu.gprs().get(n);
    Ok(if high {
        (v >> 8) & 0xFF
    } else {
        v & mask(size)
    })
}

/// Writes register `r` as an instruction does: 8- and 16-bit writes merge,
/// 32-bit writes zero-extend, 64-bit writes replace.
fn set_reg(cpu: &mut dyn VcpuBackend, r: Register, val: u64) -> Res<()> {
    let (n, size, high) = gpr(r).ok_or(Fault::Unhandleable("operand is not a general register"))?;
    let g = cpu.gprs_mut();
    let old = g.get(n);
    let new = match (size, high) {
        (1, true) => (old & !0xFF00) | ((val & 0xFF) << 8),
        (1 | 2, _) => (old & !mask(size)) | (val & mask(size)),
        (4, _) => val & 0xFFFF_FFFF,
        _ => val,
    };
    g.set(n, new);
    Ok(())
}

/// The access size of the memory operand.
fn mem_size(insn: &Instruction) -> Res<usize> {
    Ok(match insn.memory_size() {
        MemorySize::UInt8 | MemorySize::Int8 => 1,
        MemorySize::UInt16 | MemorySize::Int16 => 2,
        MemorySize::UInt32 | MemorySize::Int32 => 4,
        MemorySize::UInt64 | MemorySize::Int64 => 8,
        _ => return Err(Fault::Unhandleable("memory operand of an unsupported size")),
    })
}

/// The linear address of the `OpKind::Memory` operand (flat segments).
fn mem_linear(cpu: &dyn VcpuBackend, insn: &Instruction, long: bool) -> Res<u64> {
    if matches!(insn.memory_segment(), Register::FS | Register::GS) {
        return Err(Fault::Unhandleable("FS/GS-relative operand"));
    }
    let mut amask = if long { u64::MAX } else { 0xFFFF_FFFF };
    let mut ea = insn.memory_displacement64();
    let base = insn.memory_base();
    // RIP-relative: iced already folded the next RIP into the displacement.
    if base == Register::EIP {
        amask = 0xFFFF_FFFF;
    } else if base != Register::RIP && base != Register::None {
        let (n, size, _) = gpr(base).ok_or(Fault::Unhandleable("unsupported base register"))?;
        amask = mask(size).min(amask);
        ea = ea.wrapping_add(cpu.gprs().get(n));
    }
    let index = insn.memory_index();
    if index != Register::None {
        let (n, size, _) = gpr(index).ok_or(Fault::Unhandleable("unsupported index register"))?;
        amask = mask(size).min(amask);
        let scale = u64::from(insn.memory_index_scale());
        ea = ea.wrapping_add(cpu.gprs().get(n).wrapping_mul(scale));
    }
    Ok(ea & amask)
}

fn parity(v: u64) -> bool {
    (v as u8).count_ones().is_multiple_of(2)
}

/// The arithmetic the emulator does, with the flags it leaves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Alu {
    Add,
    Sub,
    Adc,
    Sbb,
    And,
    Or,
    Xor,
}

/// `a op b` on `size` bytes (with carry-in `carry` for ADC and SBB): the
/// result and the six arithmetic flags.
fn alu(op: Alu, a: u64, b: u64, size: usize, carry: bool) -> (u64, u64) {
    let m = mask(size);
    let sign = 1u64 << (size * 8 - 1);
    let (a, b) = (a & m, b & m);
    let c = u64::from(carry);
    let (r, cf, of, af) = match op {
        Alu::Adc => {
            let full = u128::from(a) + u128::from(b) + u128::from(c);
            let r = (full as u64) & m;
            (
                r,
                full > u128::from(m),
                (a ^ r) & (b ^ r) & sign != 0,
                (a ^ b ^ r) & 0x10 != 0,
            )
        }
        Alu::Sbb => {
            let r = a.wrapping_sub(b).wrapping_sub(c) & m;
            (
                r,
                u128::from(a) < u128::from(b) + u128::from(c),
                (a ^ b) & (a ^ r) & sign != 0,
                (a ^ b ^ r) & 0x10 != 0,
            )
        }

        Alu::Add => {
            let r = a.wrapping_add(b) & m;
            (
                r,
                r < a,
                (a ^ r) & (b ^ r) & sign != 0,
                (a ^ b ^ r) & 0x10 != 0,
            )
        }
        Alu::Sub => {
            let r = a.wrapping_sub(b) & m;
            (
                r,
                a < b,
                (a ^ b) & (a ^ r) & sign != 0,
                (a ^ b ^ r) & 0x10 != 0,
            )
        }
        Alu::And => (a & b, false, false, false),
        Alu::Or => (a | b, false, false, false),
        Alu::Xor => (a ^ b, false, false, false),
    };
    let mut f = 0;
    for (set, bit) in [
        (cf, RFLAGS_CF),
        (parity(r), RFLAGS_PF),
        (af, RFLAGS_AF),
        (r == 0, RFLAGS_ZF),
        (r & sign != 0, RFLAGS_SF),
        (of, RFLAGS_OF),
    ] {
        if set {
            f |= bit;
        }
    }
    (r, f)
}

/// Emulates the instruction at the vCPU's RIP against guest memory `mem`
/// and `mmio` for what is not backed. On [`Emulation::Okay`] the vCPU's
/// registers, flags and RIP are updated; on [`Emulation::Exception`] the
/// event is already injected (with CR2 for `#PF`).
pub fn emulate_one(
    cpu: &mut dyn VcpuBackend,
    mem: GuestMem<'_>,
    mmio: &mut dyn MmioHandler,
) -> Emulation {
    let Some(mut cx) = context(cpu, mem, mmio) else {
        return Emulation::Unhandleable("MMIO emulation in real or virtual-8086 mode");
    };
    let r = run(cpu, &mut cx);
    finish(cpu, r)
}

/// Fetches the instruction at RIP: up to 15 bytes, stopping at the first
/// page that does not translate (its linear address is returned too).
fn fetch(
    cpu: &dyn VcpuBackend,
    cx: &Ctx<'_, '_>,
    cs_base: u64,
    buf: &mut [u8; MAX_INSN_LEN],
) -> (usize, Option<u64>) {
    let rip = cx.linear(cs_base.wrapping_add(cpu.rip()));
    let mut n = 0;
    while n < buf.len() {
        let at = cx.linear(rip.wrapping_add(n as u64));
        let room = PAGE_SIZE - (at as usize & (PAGE_SIZE - 1));
        let chunk = room.min(buf.len() - n);
        let Ok(gpa) = cx.virt.to_gpa(at, false) else {
            return (n, Some(at));
        };
        // Code in a hole (or an unbacked page) cannot be fetched either.
        if cx.mem().read(gpa, &mut buf[n..n + chunk]).is_err() {
            return (n, None);
        }
        n += chunk;
    }
    (n, None)
}

/// Fetches and decodes the instruction at RIP; a fetch that fails on the
/// guest's page tables is the `#PF` the hardware would raise.
/// `bitness` is the code size (16 in real mode), `cs_base` the base the
/// fetch adds to RIP (0 for the flat code the MMIO path assumes).
fn decode_at_rip(
    cpu: &dyn VcpuBackend,
    cx: &Ctx<'_, '_>,
    bitness: u32,
    cs_base: u64,
) -> Res<Instruction> {
    let mut bytes = [0u8; MAX_INSN_LEN];
    let (n, fetch_fault) = fetch(cpu, cx, cs_base, &mut bytes);
    let rip = if bitness == 16 {
        cpu.rip() & 0xFFFF
    } else {
        cx.linear(cpu.rip())
    };
    let mut dec = Decoder::with_ip(bitness, &bytes[..n], rip, DecoderOptions::NONE);
    let insn = dec.decode();
    if insn.is_invalid() {
        return match (dec.last_error(), fetch_fault) {
            (DecoderError::NoMoreBytes, Some(la)) => Err(cx.fault(la, false, true)),
            (DecoderError::NoMoreBytes, None) => {
                Err(Fault::Unhandleable("instruction bytes not in guest memory"))
            }
            _ => Err(Fault::Unhandleable("undecodable instruction")),
        };
    }
    Ok(insn)
}

/// Sets up the emulation context for the vCPU's current mode (`None` in
/// real and virtual-8086 mode, which are not emulated).
fn context<'a, 'h>(
    cpu: &dyn VcpuBackend,
    mem: GuestMem<'a>,
    mmio: &'h mut dyn MmioHandler,
) -> Option<Ctx<'a, 'h>> {
    let mode = PagingMode {
        cr0: cpu.control(ControlReg::Cr0),
        cr3: cpu.control(ControlReg::Cr3),
        cr4: cpu.control(ControlReg::Cr4),
        efer: cpu.control(ControlReg::Efer),
    };
    let long = cpu.in_64bit_mode();
    if !long && (mode.cr0 & CR0_PE == 0 || cpu.rflags() & RFLAGS_VM != 0) {
        return None;
    }
    Some(Ctx {
        virt: GuestVirt { mem, mode },
        mmio,
        long,
        user: cpu.cpl() == 3,
        nxe: mode.efer & EFER_NXE != 0,
    })
}

/// Ends an emulation: a fault becomes the injected exception (with CR2
/// for `#PF`) or the reason the domain dies.
fn finish(cpu: &mut dyn VcpuBackend, r: Res<Emulation>) -> Emulation {
    match r {
        Ok(done) => done,
        Err(Fault::Unhandleable(why)) => Emulation::Unhandleable(why),
        Err(Fault::Exc(e, cr2)) => {
            if let Event::Exception {
                vector: X86_EXC_PF, ..
            } = e
            {
                cpu.set_control(ControlReg::Cr2, cr2);
            }
            cpu.inject(e);
            Emulation::Exception(e)
        }
    }
}

/// Checks and loads a control-register write (`cpu`, register number,
/// value), or returns the exception the instruction raises.
pub type CrApply<'a> = dyn FnMut(&mut dyn VcpuBackend, u8, u64) -> Result<(), Event> + 'a;

/// Emulates a write to a control register that the hardware reported
/// without its value (SVM without DecodeAssists; `CLTS` and `LMSW` on
/// either vendor): decodes `MOV CRn, reg`, `CLTS` or `LMSW r/m16` at
/// CS.base + RIP (in real mode too, where an AP's SIPI trampoline turns on
/// protection; protected-mode code is taken as 32-bit),
/// computes the value written (`CLTS` clears CR0.TS; `LMSW` loads
/// CR0[3:0] but cannot clear PE) and hands it to `apply(cpu, n, value)`,
/// which checks and loads it or returns the exception to raise; an
/// instruction that writes another control register than `expected` (the
/// code changed under the exit) is not emulated. On
/// [`Emulation::Okay`] RIP has moved past the instruction; on
/// [`Emulation::Exception`] the event is injected and RIP stays.
pub fn emulate_cr_write(
    cpu: &mut dyn VcpuBackend,
    mem: GuestMem<'_>,
    expected: u8,
    apply: &mut CrApply<'_>,
) -> Emulation {
    let mut null = NullHandler;
    let mode = PagingMode {
        cr0: cpu.control(ControlReg::Cr0),
        cr3: cpu.control(ControlReg::Cr3),
        cr4: cpu.control(ControlReg::Cr4),
        efer: cpu.control(ControlReg::Efer),
    };
    if cpu.rflags() & RFLAGS_VM != 0 {
        return Emulation::Unhandleable("control register write in virtual-8086 mode");
    }
    let long = cpu.in_64bit_mode();
    // Real mode (an AP's SIPI trampoline turning on protection) runs
    // 16-bit code at CS.base + IP; protected mode is taken as 32-bit.
    let (bitness, cs_base) = if long {
        (64, 0)
    } else if mode.cr0 & CR0_PE == 0 {
        (16, cpu.cs_base())
    } else {
        (32, cpu.cs_base())
    };
    let mut cx = Ctx {
        virt: GuestVirt { mem, mode },
        mmio: &mut null,
        long,
        user: cpu.cpl() == 3,
        nxe: mode.efer & EFER_NXE != 0,
    };
    let r = (|| {
        let insn = decode_at_rip(cpu, &cx, bitness, cs_base)?;
        let cr0 = cpu.control(ControlReg::Cr0);
        let (n, value) = match insn.mnemonic() {
            Mnemonic::Mov if insn.op0_kind() == OpKind::Register => {
                let dst = insn.op0_register() as u32;
                let (c0, c15) = (Register::CR0 as u32, Register::CR15 as u32);
                if !(c0..=c15).contains(&dst) || insn.op1_kind() != OpKind::Register {
                    return Err(Fault::Unhandleable("not a control register write"));
                }
                ((dst - c0) as u8, get_reg(cpu, insn.op1_register())?)
            }
            Mnemonic::Clts => (0, cr0 & !CR0_TS),
            Mnemonic::Lmsw => {
                let src = match insn.op0_kind() {
                    OpKind::Register => get_reg(cpu, insn.op0_register())?,
                    OpKind::Memory => {
                        let la = mem_linear(cpu, &insn, cx.long)?;
                        cx.read(la, 2)?
                    }
                    _ => return Err(Fault::Unhandleable("LMSW operand")),
                };
                (0, (cr0 & !0xF) | (src & 0xF) | (cr0 & CR0_PE))
            }
            _ => return Err(Fault::Unhandleable("not a control register write")),
        };
        if n != expected {
            return Err(Fault::Unhandleable(
                "the instruction writes another control register than the exit's",
            ));
        }
        match apply(cpu, n, value) {
            Ok(()) => {
                let next = insn.next_ip();
                cpu.set_rip(if bitness == 16 {
                    next & 0xFFFF
                } else {
                    cx.linear(next)
                });
                Ok(Emulation::Okay)
            }
            Err(e) => Err(Fault::Exc(e, 0)),
        }
    })();
    finish(cpu, r)
}

fn run(cpu: &mut dyn VcpuBackend, cx: &mut Ctx<'_, '_>) -> Res<Emulation> {
    let bitness = if cx.long { 64 } else { 32 };
    let insn = decode_at_rip(cpu, cx, bitness, 0)?;
    let r = execute(cpu, cx, &insn);
    match r {
        Ok(Emulation::Okay) => {
            cpu.set_rip(cx.linear(insn.next_ip()));
            Ok(Emulation::Okay)
        }
        other => other,
    }
}

fn execute(cpu: &mut dyn VcpuBackend, cx: &mut Ctx<'_, '_>, insn: &Instruction) -> Res<Emulation> {
    let m = insn.mnemonic();
    match m {
        // (SSE2's MOVSD shares the mnemonic: the string form is the one
        // whose destination is ES:rDI.)
        Mnemonic::Movsb | Mnemonic::Movsw | Mnemonic::Movsd | Mnemonic::Movsq
            if is_string_dest(insn.op0_kind()) =>
        {
            return string_op(cpu, cx, insn, Str::Movs);
        }
        Mnemonic::Stosb | Mnemonic::Stosw | Mnemonic::Stosd | Mnemonic::Stosq
            if is_string_dest(insn.op0_kind()) =>
        {
            return string_op(cpu, cx, insn, Str::Stos);
        }
        Mnemonic::Lodsb | Mnemonic::Lodsw | Mnemonic::Lodsd | Mnemonic::Lodsq
            if insn.op0_kind() == OpKind::Register =>
        {
            return string_op(cpu, cx, insn, Str::Lods);
        }
        Mnemonic::Inc | Mnemonic::Dec | Mnemonic::Not | Mnemonic::Neg
            if insn.op_count() == 1 && insn.op0_kind() == OpKind::Memory =>
        {
            let size = mem_size(insn)?;
            let la = mem_linear(cpu, insn, cx.long)?;
            let a = cx.read(la, size)?;
            let old = cpu.rflags();
            let (r, flags) = match m {
                // INC and DEC leave CF alone.
                Mnemonic::Inc => {
                    let (r, f) = alu(Alu::Add, a, 1, size, false);
                    (r, (f & !RFLAGS_CF) | (old & RFLAGS_CF))
                }
                Mnemonic::Dec => {
                    let (r, f) = alu(Alu::Sub, a, 1, size, false);
                    (r, (f & !RFLAGS_CF) | (old & RFLAGS_CF))
                }
                // NEG is 0 - x: CF set unless x is 0.
                Mnemonic::Neg => alu(Alu::Sub, 0, a, size, false),
                // NOT changes no flag.
                _ => (!a & mask(size), old & ARITH_FLAGS),
            };
            cx.write(la, size, r)?;
            cpu.set_rflags((old & !ARITH_FLAGS) | flags);
            return Ok(Emulation::Okay);
        }
        _ => {}
    }
    if insn.op_count() != 2 {
        return Err(Fault::Unhandleable(
            "instruction not emulated at an unbacked address",
        ));
    }
    let (k0, k1) = (insn.op0_kind(), insn.op1_kind());
    let size = mem_size(insn)?;
    let src_value = |cpu: &dyn VcpuBackend, k: OpKind, i: u32| -> Res<u64> {
        match k {
            OpKind::Register => get_reg(cpu, insn.op_register(i)),
            OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64 => Ok(insn.immediate(i)),
            _ => Err(Fault::Unhandleable("unsupported operand kind")),
        }
    };
    match m {
        Mnemonic::Mov => match (k0, k1) {
            (OpKind::Memory, _) => {
                let v = src_value(cpu, k1, 1)?;
                let la = mem_linear(cpu, insn, cx.long)?;
                cx.write(la, size, v)?;
            }
            (OpKind::Register, OpKind::Memory) => {
                let la = mem_linear(cpu, insn, cx.long)?;
                let v = cx.read(la, size)?;
                set_reg(cpu, insn.op0_register(), v)?;
            }
            _ => return Err(Fault::Unhandleable("MOV without a memory operand")),
        },
        Mnemonic::Movzx | Mnemonic::Movsx | Mnemonic::Movsxd
            if (k0, k1) == (OpKind::Register, OpKind::Memory) =>
        {
            let la = mem_linear(cpu, insn, cx.long)?;
            let v = cx.read(la, size)?;
            let v = if m == Mnemonic::Movzx {
                v
            } else {
                // Sign-extend from the access size.
                let sh = 64 - 8 * size as u32;
                (((v << sh) as i64) >> sh) as u64
            };
            set_reg(cpu, insn.op0_register(), v)?;
        }
        Mnemonic::Xchg => {
            let reg = match (k0, k1) {
                (OpKind::Memory, OpKind::Register) => insn.op1_register(),
                (OpKind::Register, OpKind::Memory) => insn.op0_register(),
                _ => return Err(Fault::Unhandleable("XCHG without a memory operand")),
            };
            let la = mem_linear(cpu, insn, cx.long)?;
            let old = cx.read(la, size)?;
            cx.write(la, size, get_reg(cpu, reg)?)?;
            set_reg(cpu, reg, old)?;
        }
        Mnemonic::Cmpxchg => {
            if (k0, k1) != (OpKind::Memory, OpKind::Register) {
                return Err(Fault::Unhandleable("CMPXCHG without a memory operand"));
            }
            let acc = [Register::AL, Register::AX, Register::EAX, Register::RAX]
                [size.trailing_zeros() as usize & 3];
            let la = mem_linear(cpu, insn, cx.long)?;
            let old = cx.read(la, size)?;
            let a = get_reg(cpu, acc)?;
            let (_, flags) = alu(Alu::Sub, a, old, size, false);
            if a == old {
                cx.write(la, size, get_reg(cpu, insn.op1_register())?)?;
            } else {
                // The locked cycle writes the old value back; the
                // accumulator takes it.
                cx.write(la, size, old)?;
                set_reg(cpu, acc, old)?;
            }
            cpu.set_rflags((cpu.rflags() & !ARITH_FLAGS) | flags);
        }
        Mnemonic::Add
        | Mnemonic::Sub
        | Mnemonic::Adc
        | Mnemonic::Sbb
        | Mnemonic::And
        | Mnemonic::Or
        | Mnemonic::Xor
        | Mnemonic::Cmp
        | Mnemonic::Test => {
            let op = match m {
                Mnemonic::Add => Alu::Add,
                Mnemonic::Sub | Mnemonic::Cmp => Alu::Sub,
                Mnemonic::Adc => Alu::Adc,
                Mnemonic::Sbb => Alu::Sbb,
                Mnemonic::And | Mnemonic::Test => Alu::And,
                Mnemonic::Or => Alu::Or,
                _ => Alu::Xor,
            };
            let carry = cpu.rflags() & RFLAGS_CF != 0;
            let store = !matches!(m, Mnemonic::Cmp | Mnemonic::Test);
            let la = mem_linear(cpu, insn, cx.long)?;
            let flags = match (k0, k1) {
                (OpKind::Memory, _) => {
                    let b = src_value(cpu, k1, 1)?;
                    let a = cx.read(la, size)?;
                    let (r, f) = alu(op, a, b, size, carry);
                    if store {
                        cx.write(la, size, r)?;
                    }
                    f
                }
                (OpKind::Register, OpKind::Memory) => {
                    let a = get_reg(cpu, insn.op0_register())?;
                    let b = cx.read(la, size)?;
                    let (r, f) = alu(op, a, b, size, carry);
                    if store {
                        set_reg(cpu, insn.op0_register(), r)?;
                    }
                    f
                }
                _ => {
                    return Err(Fault::Unhandleable(
                        "ALU instruction without a memory operand",
                    ));
                }
            };
            cpu.set_rflags((cpu.rflags() & !ARITH_FLAGS) | flags);
        }
        _ => {
            return Err(Fault::Unhandleable(
                "instruction not emulated at an unbacked address",
            ));
        }
    }
    Ok(Emulation::Okay)
}

fn is_string_dest(k: OpKind) -> bool {
    matches!(
        k,
        OpKind::MemoryESDI | OpKind::MemoryESEDI | OpKind::MemoryESRDI
    )
}

/// The string instructions emulated.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Str {
    Movs,
    Stos,
    Lods,
}

/// `MOVS`, `STOS` or `LODS`, with or without `REP`. The index and count
/// registers are written at the address size, so a 32-bit address size
/// zero-extends them as any 32-bit register write does.
fn string_op(
    cpu: &mut dyn VcpuBackend,
    cx: &mut Ctx<'_, '_>,
    insn: &Instruction,
    kind: Str,
) -> Res<Emulation> {
    if kind != Str::Stos && matches!(insn.memory_segment(), Register::FS | Register::GS) {
        return Err(Fault::Unhandleable("FS/GS-relative string source"));
    }
    let size = mem_size(insn)?;
    let index = if kind == Str::Lods {
        insn.op1_kind()
    } else {
        insn.op0_kind()
    };
    let amask = match index {
        OpKind::MemoryESRDI | OpKind::MemorySegRSI => u64::MAX,
        OpKind::MemoryESEDI | OpKind::MemorySegESI => 0xFFFF_FFFF,
        _ => return Err(Fault::Unhandleable("16-bit string addressing")),
    };
    let rep = insn.has_rep_prefix() || insn.has_repne_prefix();
    let count = if rep { cpu.gprs().rcx & amask } else { 1 };
    let n = count.min(crate::exits::MAX_STRING_IO);
    let down = cpu.rflags() & RFLAGS_DF != 0;
    let step = |r: u64| {
        let s = size as u64;
        (if down {
            r.wrapping_sub(s)
        } else {
            r.wrapping_add(s)
        }) & amask
    };
    for i in 0..n {
        let g = *cpu.gprs();
        match kind {
            Str::Movs => {
                let v = cx.read(g.rsi & amask, size)?;
                cx.write(g.rdi & amask, size, v)?;
            }
            Str::Stos => cx.write(g.rdi & amask, size, g.rax & mask(size))?,
            Str::Lods => {
                let v = cx.read(g.rsi & amask, size)?;
                set_reg(cpu, insn.op0_register(), v)?;
            }
        }
        let g = cpu.gprs_mut();
        if kind != Str::Lods {
            g.rdi = step(g.rdi);
        }
        if kind != Str::Stos {
            g.rsi = step(g.rsi);
        }
        if rep {
            g.rcx = (count - i - 1) & amask;
        }
    }
    Ok(if count > n {
        Emulation::Retry
    } else {
        Emulation::Okay
    })
}
