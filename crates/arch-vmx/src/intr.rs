//! Event injection: the VM-entry interruption-information field (0x4016)
//! and its error code (0x4018), and the same format in the IDT-vectoring
//! information (0x4408/0x440A) that an exit during event delivery leaves
//! (SDM vol. 3, 25.8.3 and 28.2.4). The rules for combining two exceptions
//! are vendor-neutral: `arch_common::event`.
//!
//! An event is kept as one `u64` like arch-svm's EVENTINJ: the
//! interruption information in bits 31:0 (vector 7:0, type 10:8, deliver
//! error code 11, valid 31) and the error code in 63:32.

use crate::exit::intr_type;
pub use arch_common::event::combine;
use hv_core::arch::Event;

/// The vector, bits 7:0.
pub const VECTOR_MASK: u64 = 0xFF;
/// The type, bits 10:8.
pub const TYPE_SHIFT: u32 = 8;
/// Deliver an error code (bit 11).
pub const EV: u64 = 1 << 11;
/// The event is valid (bit 31).
pub const VALID: u64 = 1 << 31;

/// Whether VM entry delivers an error code for hardware exception
/// `vector` (SDM 27.2.1.3: 8, 10-14 and 17 in protected mode; #CP is left
/// out, CET is not exposed).
pub const fn delivers_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17)
}

/// The packed encoding of `event`; `protected` is guest CR0.PE (real mode
/// pushes no error codes).
pub fn encode(event: Event, protected: bool) -> u64 {
    let t = |ty: u32| VALID | (u64::from(ty) << TYPE_SHIFT);
    match event {
        Event::Interrupt(v) => t(intr_type::EXTERNAL) | u64::from(v),
        Event::Nmi => t(intr_type::NMI) | 2,
        Event::Exception { vector, error_code } => {
            let mut e = t(intr_type::HW_EXCEPTION) | u64::from(vector);
            if protected && delivers_error_code(vector) {
                e |= EV | (u64::from(error_code.unwrap_or(0)) << 32);
            }
            e
        }
    }
}

/// The event a packed value holds, if valid; software interrupts and
/// exceptions (which restart from the instruction) decode to `None`.
pub fn decode(raw: u64) -> Option<Event> {
    if raw & VALID == 0 {
        return None;
    }
    let vector = (raw & VECTOR_MASK) as u8;
    match ((raw >> TYPE_SHIFT) & 7) as u32 {
        intr_type::EXTERNAL => Some(Event::Interrupt(vector)),
        intr_type::NMI => Some(Event::Nmi),
        intr_type::HW_EXCEPTION => Some(Event::Exception {
            vector,
            error_code: (raw & EV != 0).then_some((raw >> 32) as u32),
        }),
        _ => None,
    }
}

/// Packs IDT-vectoring information and its error code.
pub fn pack(info: u32, error: u32) -> u64 {
    u64::from(info) | (u64::from(error) << 32)
}

/// The VM-entry interruption-information value of a packed event.
pub fn info(raw: u64) -> u32 {
    raw as u32
}

/// The VM-entry exception error code of a packed event.
pub fn error_code(raw: u64) -> u32 {
    (raw >> 32) as u32
}

/// Whether an event that IDT-vectoring information reports must be
/// injected again: external interrupts, NMIs and hardware exceptions. The
/// software kinds (INT n, INT3, INTO, INT1) are not: RIP still points at
/// the instruction, which runs again.
pub fn needs_reinjection(raw: u64) -> bool {
    decode(raw).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        assert_eq!(encode(Event::Interrupt(0x30), true), 0x8000_0030);
        assert_eq!(encode(Event::Nmi, true), 0x8000_0202);
        assert_eq!(
            encode(
                Event::Exception {
                    vector: 6,
                    error_code: None
                },
                true
            ),
            0x8000_0306
        );
        assert_eq!(
            encode(
                Event::Exception {
                    vector: 13,
                    error_code: Some(0x10)
                },
                true
            ),
            0x0000_0010_8000_0B0D
        );
        // #GP without an error code still pushes one (0) in protected mode,
        // none in real mode.
        assert_eq!(
            encode(
                Event::Exception {
                    vector: 13,
                    error_code: None
                },
                true
            ),
            0x8000_0B0D
        );
        assert_eq!(
            encode(
                Event::Exception {
                    vector: 13,
                    error_code: Some(5)
                },
                false
            ),
            0x8000_030D
        );
        // #VC/#SX: no error code delivered by VM entry.
        assert_eq!(
            encode(
                Event::Exception {
                    vector: 30,
                    error_code: Some(1)
                },
                true
            ),
            0x8000_031E
        );
        let e = encode(
            Event::Exception {
                vector: 14,
                error_code: Some(6),
            },
            true,
        );
        assert_eq!((info(e), error_code(e)), (0x8000_0B0E, 6));
        assert_eq!(pack(0x8000_0B0E, 6), e);
    }

    #[test]
    fn round_trip_and_reinjection() {
        for e in [
            Event::Interrupt(0xEF),
            Event::Nmi,
            Event::Exception {
                vector: 14,
                error_code: Some(6),
            },
            Event::Exception {
                vector: 6,
                error_code: None,
            },
        ] {
            assert_eq!(decode(encode(e, true)), Some(e));
            assert!(needs_reinjection(encode(e, true)));
        }
        assert_eq!(decode(0x30), None);
        assert!(!needs_reinjection(0x30));
        assert!(!needs_reinjection(0x8000_0480)); // INT 0x80
        assert!(!needs_reinjection(0x8000_0603)); // INT3
        assert!(!needs_reinjection(0x8000_0501)); // INT1
    }
}
