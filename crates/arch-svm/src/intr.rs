//! Event injection (EVENTINJ, VMCB 0x0A8, and the same format in
//! EXITINTINFO, 0x088) (APM vol. 2, 15.20). The rules for combining two
//! exceptions are vendor-neutral: `arch_common::event`.

pub use arch_common::event::combine;
use arch_common::event::has_error_code;
use hv_core::arch::Event;

/// The vector, bits 7:0.
pub const VECTOR_MASK: u64 = 0xFF;
/// The type, bits 10:8.
pub const TYPE_SHIFT: u32 = 8;
/// Type: external interrupt.
pub const TYPE_INTR: u64 = 0;
/// Type: NMI.
pub const TYPE_NMI: u64 = 2;
/// Type: exception.
pub const TYPE_EXCEPTION: u64 = 3;
/// Type: software interrupt (INTn).
pub const TYPE_SOFT: u64 = 4;
/// The error code is valid (bit 11).
pub const EV: u64 = 1 << 11;
/// The event is valid (bit 31).
pub const VALID: u64 = 1 << 31;

/// The EVENTINJ encoding of `event`.
pub fn encode(event: Event) -> u64 {
    match event {
        Event::Interrupt(v) => VALID | (TYPE_INTR << TYPE_SHIFT) | u64::from(v),
        Event::Nmi => VALID | (TYPE_NMI << TYPE_SHIFT) | 2,
        Event::Exception { vector, error_code } => {
            let mut e = VALID | (TYPE_EXCEPTION << TYPE_SHIFT) | u64::from(vector);
            if has_error_code(vector) {
                e |= EV | (u64::from(error_code.unwrap_or(0)) << 32);
            }
            e
        }
    }
}

/// The event an EVENTINJ/EXITINTINFO value holds, if valid; software
/// interrupts (which restart from the instruction) decode to `None`.
pub fn decode(raw: u64) -> Option<Event> {
    if raw & VALID == 0 {
        return None;
    }
    let vector = (raw & VECTOR_MASK) as u8;
    match (raw >> TYPE_SHIFT) & 7 {
        TYPE_INTR => Some(Event::Interrupt(vector)),
        TYPE_NMI => Some(Event::Nmi),
        TYPE_EXCEPTION => Some(Event::Exception {
            vector,
            error_code: (raw & EV != 0).then_some((raw >> 32) as u32),
        }),
        _ => None,
    }
}

/// Whether an exception that EXITINTINFO reports must be injected again:
/// every valid event except software interrupts and `#BP`/`#OF` (the
/// instruction raising them runs again and raises them again).
pub fn needs_reinjection(raw: u64) -> bool {
    match decode(raw) {
        None => false,
        Some(Event::Exception { vector: 3 | 4, .. }) => false,
        Some(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        assert_eq!(encode(Event::Interrupt(0x30)), 0x8000_0030);
        assert_eq!(encode(Event::Nmi), 0x8000_0202);
        assert_eq!(
            encode(Event::Exception {
                vector: 6,
                error_code: None
            }),
            0x8000_0306
        );
        assert_eq!(
            encode(Event::Exception {
                vector: 13,
                error_code: Some(0x10)
            }),
            0x0000_0010_8000_0B0D
        );
        // #GP without an error code still pushes one (0).
        assert_eq!(
            encode(Event::Exception {
                vector: 13,
                error_code: None
            }),
            0x8000_0B0D
        );
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
            assert_eq!(decode(encode(e)), Some(e));
            assert!(needs_reinjection(encode(e)));
        }
        assert_eq!(decode(0x30), None);
        assert!(!needs_reinjection(0x30));
        assert!(!needs_reinjection(0x8000_0480)); // INT 0x80
        assert!(!needs_reinjection(0x8000_0303)); // #BP
    }
}
