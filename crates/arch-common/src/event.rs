//! Exception rules both backends apply when injecting events (SDM vol. 3,
//! 6.15 "exception classes"; APM vol. 2, 8.2): which vectors push an error
//! code, and what two exceptions in a row become.

use hv_core::arch::Event;

/// `#DF`.
const DF: u8 = 8;
/// `#PF`.
const PF: u8 = 14;

/// Whether exception `vector` pushes an error code.
pub const fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

fn contributory(v: u8) -> bool {
    matches!(v, 0 | 10 | 11 | 12 | 13)
}

/// The exception to deliver when `second` is raised while `first` is being
/// delivered: `#DF` for contributory-after-contributory and for
/// page-fault-then-(contributory or page fault); otherwise the second one.
/// (A fault during `#DF` is a triple fault; the result is then `#DF` again
/// and the guest's IDT will shut it down.)
pub fn combine(first: u8, second: u8) -> Event {
    let double = first == DF
        || (contributory(first) && contributory(second))
        || (first == PF && (contributory(second) || second == PF));
    if double {
        Event::Exception {
            vector: DF,
            error_code: Some(0),
        }
    } else {
        Event::Exception {
            vector: second,
            error_code: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn double_faults() {
        let df = Event::Exception {
            vector: 8,
            error_code: Some(0),
        };
        assert_eq!(combine(13, 13), df);
        assert_eq!(combine(14, 14), df);
        assert_eq!(combine(14, 13), df);
        assert_eq!(combine(8, 6), df);
        assert_eq!(
            combine(13, 14),
            Event::Exception {
                vector: 14,
                error_code: None
            }
        );
        assert_eq!(
            combine(1, 13),
            Event::Exception {
                vector: 13,
                error_code: None
            }
        );
    }

    #[test]
    fn error_codes() {
        for v in [8, 10, 11, 12, 13, 14, 17, 21, 29, 30] {
            assert!(has_error_code(v));
        }
        for v in [0, 1, 2, 3, 4, 5, 6, 7, 9, 15, 16, 18, 19, 20] {
            assert!(!has_error_code(v));
        }
    }
}
