//! Xenbus device states: `xen/include/public/io/xenbus.h`.
//!
//! Front and back ends publish their state as a decimal number in their
//! xenstore `state` node.

/// State: unknown, e.g. the node is missing (xenbus.h `XenbusStateUnknown`).
pub const XenbusStateUnknown: u32 = 0;
/// State: initialising (xenbus.h `XenbusStateInitialising`).
pub const XenbusStateInitialising: u32 = 1;
/// State: back end waiting for front-end details (xenbus.h `XenbusStateInitWait`).
pub const XenbusStateInitWait: u32 = 2;
/// State: front end published its details (xenbus.h `XenbusStateInitialised`).
pub const XenbusStateInitialised: u32 = 3;
/// State: connected (xenbus.h `XenbusStateConnected`).
pub const XenbusStateConnected: u32 = 4;
/// State: closing (xenbus.h `XenbusStateClosing`).
pub const XenbusStateClosing: u32 = 5;
/// State: closed (xenbus.h `XenbusStateClosed`).
pub const XenbusStateClosed: u32 = 6;
/// State: reconfiguring (xenbus.h `XenbusStateReconfiguring`).
pub const XenbusStateReconfiguring: u32 = 7;
/// State: reconfigured (xenbus.h `XenbusStateReconfigured`).
pub const XenbusStateReconfigured: u32 = 8;

/// A xenbus state (xenbus.h `enum xenbus_state`). Built only by checked
/// conversion from the integer or the xenstore text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum XenbusState {
    /// `XenbusStateUnknown`.
    Unknown = XenbusStateUnknown,
    /// `XenbusStateInitialising`.
    Initialising = XenbusStateInitialising,
    /// `XenbusStateInitWait`.
    InitWait = XenbusStateInitWait,
    /// `XenbusStateInitialised`.
    Initialised = XenbusStateInitialised,
    /// `XenbusStateConnected`.
    Connected = XenbusStateConnected,
    /// `XenbusStateClosing`.
    Closing = XenbusStateClosing,
    /// `XenbusStateClosed`.
    Closed = XenbusStateClosed,
    /// `XenbusStateReconfiguring`.
    Reconfiguring = XenbusStateReconfiguring,
    /// `XenbusStateReconfigured`.
    Reconfigured = XenbusStateReconfigured,
}

impl TryFrom<u32> for XenbusState {
    type Error = u32;
    /// Checked conversion; an unknown value is returned as the error.
    fn try_from(v: u32) -> Result<Self, u32> {
        Ok(match v {
            XenbusStateUnknown => Self::Unknown,
            XenbusStateInitialising => Self::Initialising,
            XenbusStateInitWait => Self::InitWait,
            XenbusStateInitialised => Self::Initialised,
            XenbusStateConnected => Self::Connected,
            XenbusStateClosing => Self::Closing,
            XenbusStateClosed => Self::Closed,
            XenbusStateReconfiguring => Self::Reconfiguring,
            XenbusStateReconfigured => Self::Reconfigured,
            other => return Err(other),
        })
    }
}

impl From<XenbusState> for u32 {
    fn from(s: XenbusState) -> u32 {
        s as u32
    }
}

impl XenbusState {
    /// Parses the decimal text of a xenstore `state` node (a single ASCII
    /// digit, optionally NUL-terminated). Anything else is `None`.
    pub fn parse(text: &[u8]) -> Option<Self> {
        let digits = match text {
            [rest @ .., 0] => rest,
            t => t,
        };
        match digits {
            [d @ b'0'..=b'9'] => Self::try_from(u32::from(d - b'0')).ok(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_conversion() {
        for v in 0..=8 {
            assert_eq!(u32::from(XenbusState::try_from(v).unwrap()), v);
        }
        assert_eq!(XenbusState::try_from(9), Err(9));
        assert_eq!(XenbusState::try_from(u32::MAX), Err(u32::MAX));
    }

    #[test]
    fn parse_text() {
        assert_eq!(XenbusState::parse(b"4"), Some(XenbusState::Connected));
        assert_eq!(XenbusState::parse(b"6\0"), Some(XenbusState::Closed));
        for bad in [&b""[..], b"9", b"10", b"04", b"-1", b" 4", b"\0", b"x"] {
            assert_eq!(XenbusState::parse(bad), None, "{bad:?}");
        }
    }
}
