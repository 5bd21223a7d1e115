//! The `sched_op` hypercall: `xen/include/public/sched.h`.

use crate::{Domid, EvtchnPort};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Give up the CPU (sched.h `SCHEDOP_yield`).
pub const SCHEDOP_yield: u32 = 0;
/// Block until an event arrives (sched.h `SCHEDOP_block`).
pub const SCHEDOP_block: u32 = 1;
/// Stop the domain, argument [`SchedShutdown`] (sched.h `SCHEDOP_shutdown`).
pub const SCHEDOP_shutdown: u32 = 2;
/// Wait for one of a set of ports, argument [`SchedPoll`] (sched.h `SCHEDOP_poll`).
pub const SCHEDOP_poll: u32 = 3;
/// Shut another domain down, argument [`SchedRemoteShutdown`] (sched.h `SCHEDOP_remote_shutdown`).
pub const SCHEDOP_remote_shutdown: u32 = 4;
/// Record a shutdown reason without stopping, argument [`SchedShutdown`]
/// (sched.h `SCHEDOP_shutdown_code`).
pub const SCHEDOP_shutdown_code: u32 = 5;
/// Set up or kick a watchdog, argument [`SchedWatchdog`] (sched.h `SCHEDOP_watchdog`).
pub const SCHEDOP_watchdog: u32 = 6;
/// Pin to a physical CPU, hardware domain only, argument [`SchedPinOverride`]
/// (sched.h `SCHEDOP_pin_override`).
pub const SCHEDOP_pin_override: u32 = 7;

/// Shutdown reason: power off (sched.h `SHUTDOWN_poweroff`).
pub const SHUTDOWN_poweroff: u32 = 0;
/// Shutdown reason: reboot (sched.h `SHUTDOWN_reboot`).
pub const SHUTDOWN_reboot: u32 = 1;
/// Shutdown reason: suspend (sched.h `SHUTDOWN_suspend`).
pub const SHUTDOWN_suspend: u32 = 2;
/// Shutdown reason: crash (sched.h `SHUTDOWN_crash`).
pub const SHUTDOWN_crash: u32 = 3;
/// Shutdown reason: watchdog expired (sched.h `SHUTDOWN_watchdog`).
pub const SHUTDOWN_watchdog: u32 = 4;
/// Shutdown reason: soft reset (sched.h `SHUTDOWN_soft_reset`).
pub const SHUTDOWN_soft_reset: u32 = 5;
/// Highest defined shutdown reason (sched.h `SHUTDOWN_MAX`).
pub const SHUTDOWN_MAX: u32 = 5;

/// A shutdown reason decoded from the integer a guest passed (sched.h
/// `SHUTDOWN_*`). Built only by [`ShutdownReason::try_from`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ShutdownReason {
    /// `SHUTDOWN_poweroff`.
    Poweroff = SHUTDOWN_poweroff,
    /// `SHUTDOWN_reboot`.
    Reboot = SHUTDOWN_reboot,
    /// `SHUTDOWN_suspend`.
    Suspend = SHUTDOWN_suspend,
    /// `SHUTDOWN_crash`.
    Crash = SHUTDOWN_crash,
    /// `SHUTDOWN_watchdog`.
    Watchdog = SHUTDOWN_watchdog,
    /// `SHUTDOWN_soft_reset`.
    SoftReset = SHUTDOWN_soft_reset,
}

impl TryFrom<u32> for ShutdownReason {
    type Error = u32;
    /// Checked conversion; an unknown value is returned as the error.
    fn try_from(v: u32) -> Result<Self, u32> {
        Ok(match v {
            SHUTDOWN_poweroff => Self::Poweroff,
            SHUTDOWN_reboot => Self::Reboot,
            SHUTDOWN_suspend => Self::Suspend,
            SHUTDOWN_crash => Self::Crash,
            SHUTDOWN_watchdog => Self::Watchdog,
            SHUTDOWN_soft_reset => Self::SoftReset,
            other => return Err(other),
        })
    }
}

impl From<ShutdownReason> for u32 {
    fn from(r: ShutdownReason) -> u32 {
        r as u32
    }
}

/// Argument of `SCHEDOP_shutdown` and `SCHEDOP_shutdown_code`
/// (sched.h `struct sched_shutdown`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct SchedShutdown {
    /// `SHUTDOWN_*` (kept as an integer; see [`ShutdownReason`]).
    pub reason: u32,
}
crate::assert_layout!(SchedShutdown, 4, { reason: 0 });

/// Argument of `SCHEDOP_poll` (sched.h `struct sched_poll`, 24 bytes).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct SchedPoll {
    /// Guest address of an array of [`EvtchnPort`].
    pub ports: u64,
    /// Number of ports in the array.
    pub nr_ports: u32,
    /// Padding.
    pub pad: u32,
    /// Absolute system-time deadline in ns, 0 for none.
    pub timeout: u64,
}
crate::assert_layout!(SchedPoll, 24, { ports: 0, nr_ports: 8, pad: 12, timeout: 16 });

/// Argument of `SCHEDOP_remote_shutdown` (sched.h `struct sched_remote_shutdown`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct SchedRemoteShutdown {
    /// Domain to shut down.
    pub domain_id: Domid,
    /// Padding.
    pub pad: u16,
    /// `SHUTDOWN_*`.
    pub reason: u32,
}
crate::assert_layout!(SchedRemoteShutdown, 8, { domain_id: 0, pad: 2, reason: 4 });

/// Argument of `SCHEDOP_watchdog` (sched.h `struct sched_watchdog`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct SchedWatchdog {
    /// Watchdog id; 0 allocates a new one.
    pub id: u32,
    /// Timeout in seconds; 0 destroys the watchdog.
    pub timeout: u32,
}
crate::assert_layout!(SchedWatchdog, 8, { id: 0, timeout: 4 });

/// Argument of `SCHEDOP_pin_override` (sched.h `struct sched_pin_override`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct SchedPinOverride {
    /// Physical CPU, or negative to end the override.
    pub pcpu: i32,
}
crate::assert_layout!(SchedPinOverride, 4, { pcpu: 0 });

const _: () = assert!(core::mem::size_of::<EvtchnPort>() == 4);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_reasons_checked() {
        for v in 0..=SHUTDOWN_MAX {
            let r = ShutdownReason::try_from(v).unwrap();
            assert_eq!(u32::from(r), v);
        }
        assert_eq!(ShutdownReason::try_from(SHUTDOWN_MAX + 1), Err(6));
        assert_eq!(ShutdownReason::try_from(u32::MAX), Err(u32::MAX));
    }

    #[test]
    fn shutdown_arg_from_guest_bytes() {
        let s = SchedShutdown::read_from_bytes(&[3u8, 0, 0, 0][..]).unwrap();
        assert_eq!(
            ShutdownReason::try_from(s.reason),
            Ok(ShutdownReason::Crash)
        );
        let s = SchedShutdown::read_from_bytes(&[0xffu8, 0, 0, 0][..]).unwrap();
        assert_eq!(ShutdownReason::try_from(s.reason), Err(0xff));
        assert!(SchedShutdown::read_from_bytes(&[0u8; 3][..]).is_err());
    }

    #[test]
    fn poll_layout_bytes() {
        let p = SchedPoll {
            ports: 0x1000,
            nr_ports: 2,
            pad: 0,
            timeout: 7,
        };
        let b = p.as_bytes();
        assert_eq!(&b[8..12], &2u32.to_le_bytes());
        assert_eq!(&b[16..24], &7u64.to_le_bytes());
    }
}
