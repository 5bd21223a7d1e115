//! What the block and network back ends share: the xenbus state rules of
//! a back end that follows its front end's `state` node, and reading
//! numbers out of the store.
//!
//! The rules (Linux's `xenbus` back-end drivers behave the same):
//! - a front end back at `Initialising` after we closed finds us at
//!   `InitWait` again (a reconnect: resume, module reload);
//! - a front end at `Initialised` or `Connected` while we wait
//!   (`InitWait`) has written its ring references: we connect;
//! - a front end at `Closing` takes us to `Closing`, and at `Closed` (or
//!   gone: no `state` node) to `Closed`, each after disconnecting.

// Xen's names for the xenbus states.
#![allow(non_upper_case_globals)]

use xen_abi::io::xenbus::*;

use crate::xenstore::{Platform, StoreService};

/// What a back end at state `back` does about its front end at `front`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing.
    Stay,
    /// The front end reconnects: go `InitWait`.
    Reoffer,
    /// Map the rings and bind the ports; `Connected` or, failing,
    /// `Closing`.
    Connect,
    /// Disconnect and go `Closing`.
    Close,
    /// Disconnect and go `Closed`.
    Closed,
}

/// The rule for `front` (its `state` node, [`XenbusStateUnknown`] when
/// absent or unreadable) and `back` (ours).
pub fn step(front: u32, back: u32) -> Step {
    match front {
        XenbusStateInitialising if back == XenbusStateClosed => Step::Reoffer,
        XenbusStateInitialised | XenbusStateConnected if back == XenbusStateInitWait => {
            Step::Connect
        }
        XenbusStateClosing if back != XenbusStateClosed => Step::Close,
        XenbusStateClosed | XenbusStateUnknown if back != XenbusStateClosed => Step::Closed,
        _ => Step::Stay,
    }
}

/// A node as text, if it exists and is UTF-8 enough.
pub fn read_str<P: Platform>(
    svc: &mut StoreService<P>,
    path: &str,
) -> Option<alloc::string::String> {
    svc.read(path)
        .ok()
        .map(|v| alloc::string::String::from_utf8_lossy(&v).into_owned())
}

/// A node as a decimal number.
pub fn read_u32<P: Platform>(svc: &mut StoreService<P>, path: &str) -> Option<u32> {
    read_str(svc, path)?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_back_end_follows_its_front_end() {
        use Step::*;
        let closed = XenbusStateClosed;
        let wait = XenbusStateInitWait;
        let conn = XenbusStateConnected;
        assert_eq!(step(XenbusStateInitialising, closed), Reoffer);
        assert_eq!(step(XenbusStateInitialising, wait), Stay);
        assert_eq!(step(XenbusStateInitialised, wait), Connect);
        assert_eq!(step(XenbusStateConnected, wait), Connect);
        assert_eq!(
            step(XenbusStateInitialised, closed),
            Stay,
            "not before Initialising"
        );
        assert_eq!(step(XenbusStateConnected, conn), Stay);
        assert_eq!(step(XenbusStateClosing, conn), Close);
        assert_eq!(step(XenbusStateClosing, closed), Stay);
        assert_eq!(step(XenbusStateClosed, conn), Closed);
        assert_eq!(step(XenbusStateUnknown, wait), Closed, "a front end gone");
        assert_eq!(step(XenbusStateClosed, closed), Stay);
    }
}
