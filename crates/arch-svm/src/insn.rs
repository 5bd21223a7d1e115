//! Instruction lengths for the exits that need RIP advanced, for CPUs
//! without NRIP save (QEMU TCG): a decoder of exactly the instructions that
//! can cause those exits, with their legacy prefixes and REX.
//!
//! Anything else decodes to `None`: the caller then cannot skip the
//! instruction and hv-core injects `#GP` or crashes the domain.

/// The longest x86 instruction.
pub const MAX_INSN_LEN: usize = 15;

/// Which instruction an exit expects at RIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// `CPUID` (0F A2).
    Cpuid,
    /// `VMMCALL` (0F 01 D9) or `VMCALL` (0F 01 C1).
    Hypercall,
    /// `HLT` (F4).
    Hlt,
    /// `RDMSR` (0F 32).
    Rdmsr,
    /// `WRMSR` (0F 30).
    Wrmsr,
    /// `XSETBV` (0F 01 D1).
    Xsetbv,
    /// `IN`/`OUT`/`INS`/`OUTS` in any form.
    Io,
    /// `MOV CRn, reg` (0F 22 /r).
    MovToCr,
}

impl Expected {
    /// The length of the prefix-free encoding, for when the bytes cannot be
    /// read (only these exact instructions cause these exits).
    pub const fn plain_len(self) -> Option<u8> {
        match self {
            Expected::Cpuid | Expected::Rdmsr | Expected::Wrmsr => Some(2),
            Expected::Hypercall | Expected::Xsetbv | Expected::MovToCr => Some(3),
            Expected::Hlt => Some(1),
            Expected::Io => None,
        }
    }
}

fn is_legacy_prefix(b: u8) -> bool {
    matches!(
        b,
        0x66 | 0x67 | 0xF0 | 0xF2 | 0xF3 | 0x2E | 0x36 | 0x3E | 0x26 | 0x64 | 0x65
    )
}

/// The length of the instruction in `bytes` (fetched at CS.base + RIP; may
/// be shorter than 15 bytes near the end of readable memory) if it is the
/// `expected` one; `long_mode` is true in 64-bit code, where 40-4F are REX
/// prefixes (they are `INC`/`DEC` elsewhere).
pub fn length(bytes: &[u8], expected: Expected, long_mode: bool) -> Option<u8> {
    let mut i = 0;
    while i < bytes.len() && is_legacy_prefix(bytes[i]) {
        i += 1;
    }
    // REX must come last, right before the opcode.
    if long_mode && i < bytes.len() && bytes[i] & 0xF0 == 0x40 {
        i += 1;
    }
    let op = bytes.get(i..)?;
    let n = match (expected, op) {
        (Expected::Cpuid, [0x0F, 0xA2, ..]) => 2,
        (Expected::Rdmsr, [0x0F, 0x32, ..]) => 2,
        (Expected::Wrmsr, [0x0F, 0x30, ..]) => 2,
        (Expected::Hypercall, [0x0F, 0x01, 0xD9 | 0xC1, ..]) => 3,
        (Expected::Xsetbv, [0x0F, 0x01, 0xD1, ..]) => 3,
        (Expected::Hlt, [0xF4, ..]) => 1,
        // The ModRM byte always names a register (mod is ignored).
        (Expected::MovToCr, [0x0F, 0x22, _, ..]) => 3,
        (Expected::Io, [0xE4..=0xE7, _, ..]) => 2,
        (Expected::Io, [0xEC..=0xEF | 0x6C..=0x6F, ..]) => 1,
        _ => return None,
    };
    let len = i + n;
    (len <= MAX_INSN_LEN).then_some(len as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Expected::*;

    #[test]
    fn plain_encodings() {
        assert_eq!(length(&[0x0F, 0xA2], Cpuid, true), Some(2));
        assert_eq!(length(&[0x0F, 0x01, 0xD9], Hypercall, true), Some(3));
        assert_eq!(length(&[0x0F, 0x01, 0xC1], Hypercall, false), Some(3));
        assert_eq!(length(&[0xF4, 0x90], Hlt, true), Some(1));
        assert_eq!(length(&[0x0F, 0x32], Rdmsr, true), Some(2));
        assert_eq!(length(&[0x0F, 0x30], Wrmsr, true), Some(2));
        assert_eq!(length(&[0x0F, 0x01, 0xD1], Xsetbv, true), Some(3));
        assert_eq!(length(&[0x0F, 0x22, 0xE0], MovToCr, true), Some(3));
        // mov cr4, r9 (REX.B).
        assert_eq!(length(&[0x41, 0x0F, 0x22, 0xE1], MovToCr, true), Some(4));
        assert_eq!(length(&[0x0F, 0x20, 0xE0], MovToCr, true), None);
        for op in [0xE4, 0xE5, 0xE6, 0xE7] {
            assert_eq!(length(&[op, 0x80], Io, true), Some(2));
        }
        for op in [0xEC, 0xED, 0xEE, 0xEF, 0x6C, 0x6D, 0x6E, 0x6F] {
            assert_eq!(length(&[op], Io, true), Some(1));
        }
    }

    #[test]
    fn prefixes_and_rex() {
        // 66 ED: in ax, dx.
        assert_eq!(length(&[0x66, 0xED], Io, false), Some(2));
        // F3 66 6F: rep outsw.
        assert_eq!(length(&[0xF3, 0x66, 0x6F], Io, true), Some(3));
        // 2E F3 67 6C: cs rep insb with 32-bit addressing.
        assert_eq!(length(&[0x2E, 0xF3, 0x67, 0x6C], Io, true), Some(4));
        // F3 48 6D in long mode: REX.W is a prefix.
        assert_eq!(length(&[0xF3, 0x48, 0x6D], Io, true), Some(3));
        // 48 outside long mode is DEC EAX: not an I/O instruction.
        assert_eq!(length(&[0x48, 0x6D], Io, false), None);
        // 66 0F A2: a prefixed CPUID.
        assert_eq!(length(&[0x66, 0x0F, 0xA2], Cpuid, true), Some(3));
        // 64 E6 70 with an immediate.
        assert_eq!(length(&[0x64, 0xE6, 0x70], Io, true), Some(3));
        // F0 with segment overrides then REX.
        assert_eq!(
            length(&[0xF0, 0x65, 0x41, 0x0F, 0x30], Wrmsr, true),
            Some(5)
        );
    }

    #[test]
    fn rejects_everything_else() {
        assert_eq!(length(&[0x0F, 0xA2], Hlt, true), None);
        assert_eq!(length(&[0x0F, 0x01, 0xDA], Hypercall, true), None);
        assert_eq!(length(&[0x90], Io, true), None);
        assert_eq!(length(&[], Cpuid, true), None);
        assert_eq!(length(&[0x0F], Cpuid, true), None);
        assert_eq!(length(&[0xE4], Io, true), None); // missing immediate
        // REX not last.
        assert_eq!(length(&[0x48, 0x66, 0xED], Io, true), None);
        // Too long: 14 prefixes + a 2-byte opcode.
        let mut long = [0x66u8; 16];
        long[14] = 0x0F;
        long[15] = 0xA2;
        assert_eq!(length(&long, Cpuid, true), None);
        let mut ok = [0x66u8; 15];
        ok[13] = 0x0F;
        ok[14] = 0xA2;
        assert_eq!(length(&ok, Cpuid, true), Some(15));
    }

    #[test]
    fn plain_lengths() {
        assert_eq!(Cpuid.plain_len(), Some(2));
        assert_eq!(Hypercall.plain_len(), Some(3));
        assert_eq!(Hlt.plain_len(), Some(1));
        assert_eq!(Xsetbv.plain_len(), Some(3));
        assert_eq!(Io.plain_len(), None);
    }
}
