//! Which domain gets the serial line's input, and the key sequence that
//! moves it: Ctrl-A three times in a row, as on Xen's console.

/// Ctrl-A.
pub const CTRL_A: u8 = 0x01;
/// How many Ctrl-A in a row switch the focus.
pub const SWITCH_PRESSES: u8 = 3;

/// What one input byte means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// Nothing yet (a Ctrl-A that may start the switch sequence).
    Pending,
    /// Give these bytes to the focused domain (held-back Ctrl-As first).
    Deliver {
        /// Ctrl-A bytes held back before `byte`.
        ctrl_a: u8,
        /// The byte itself.
        byte: u8,
    },
    /// Move the focus to the next domain.
    Switch,
}

/// The input state machine.
#[derive(Clone, Copy, Debug, Default)]
pub struct Focus {
    presses: u8,
}

impl Focus {
    /// No Ctrl-A seen yet.
    pub const fn new() -> Self {
        Focus { presses: 0 }
    }

    /// Feeds one byte from the serial line.
    pub fn feed(&mut self, byte: u8) -> Input {
        if byte == CTRL_A {
            self.presses += 1;
            if self.presses == SWITCH_PRESSES {
                self.presses = 0;
                return Input::Switch;
            }
            return Input::Pending;
        }
        let ctrl_a = core::mem::take(&mut self.presses);
        Input::Deliver { ctrl_a, byte }
    }
}

/// Where input goes before anyone switched, or when the focused domain is
/// gone: the first of `alive` (sorted ids) that is not a service domain
/// (whose console has nothing to type into), else the first of `alive`.
pub fn default_domain(alive: &[u16], service: &[u16]) -> Option<u16> {
    alive
        .iter()
        .copied()
        .find(|d| !service.contains(d))
        .or_else(|| alive.first().copied())
}

/// The domain after `current` among `alive` (sorted ids), wrapping around;
/// the first one when `current` is gone.
pub fn next_domain(alive: &[u16], current: Option<u16>) -> Option<u16> {
    let cur = current?;
    alive
        .iter()
        .copied()
        .find(|&d| d > cur)
        .or_else(|| alive.first().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_starts_on_the_first_guest() {
        assert_eq!(default_domain(&[1, 2, 3], &[1]), Some(2));
        assert_eq!(default_domain(&[1, 2, 3], &[]), Some(1));
        assert_eq!(default_domain(&[1], &[1]), Some(1));
        assert_eq!(default_domain(&[], &[1]), None);
    }

    #[test]
    fn three_ctrl_a_switch() {
        let mut f = Focus::default();
        assert_eq!(
            f.feed(b'l'),
            Input::Deliver {
                ctrl_a: 0,
                byte: b'l'
            }
        );
        assert_eq!(f.feed(CTRL_A), Input::Pending);
        assert_eq!(f.feed(CTRL_A), Input::Pending);
        assert_eq!(f.feed(CTRL_A), Input::Switch);
        assert_eq!(f.feed(CTRL_A), Input::Pending);
        assert_eq!(
            f.feed(b'x'),
            Input::Deliver {
                ctrl_a: 1,
                byte: b'x'
            }
        );
    }

    #[test]
    fn cycling() {
        assert_eq!(next_domain(&[1, 2, 5], Some(2)), Some(5));
        assert_eq!(next_domain(&[1, 2, 5], Some(5)), Some(1));
        assert_eq!(next_domain(&[1, 2, 5], Some(3)), Some(5));
        assert_eq!(next_domain(&[], Some(3)), None);
    }
}
