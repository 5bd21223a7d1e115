//! Xen's error numbers: `xen/include/public/errno.h`.
//!
//! Hypercalls return `-errno` in RAX. Xen's values equal Linux's. The
//! constants are plain `i32`s, as in the header; [`Errno`] is a checked
//! wrapper for results.

/// Operation not permitted (errno.h `EPERM`).
pub const EPERM: i32 = 1;
/// No such entry (errno.h `ENOENT`).
pub const ENOENT: i32 = 2;
/// No such domain or process (errno.h `ESRCH`).
pub const ESRCH: i32 = 3;
/// Interrupted; hypervisor-internal, never returned to a guest (errno.h `EINTR`).
pub const EINTR: i32 = 4;
/// Input/output error (errno.h `EIO`).
pub const EIO: i32 = 5;
/// No such device or address (errno.h `ENXIO`).
pub const ENXIO: i32 = 6;
/// Argument list too long (errno.h `E2BIG`).
pub const E2BIG: i32 = 7;
/// Bad executable format (errno.h `ENOEXEC`).
pub const ENOEXEC: i32 = 8;
/// Bad handle (errno.h `EBADF`).
pub const EBADF: i32 = 9;
/// No child (errno.h `ECHILD`).
pub const ECHILD: i32 = 10;
/// Try again (errno.h `EAGAIN`).
pub const EAGAIN: i32 = 11;
/// Would block (same value as `EAGAIN`) (errno.h `EWOULDBLOCK`).
pub const EWOULDBLOCK: i32 = 11;
/// Out of memory (errno.h `ENOMEM`).
pub const ENOMEM: i32 = 12;
/// Access denied (errno.h `EACCES`).
pub const EACCES: i32 = 13;
/// Bad address (errno.h `EFAULT`).
pub const EFAULT: i32 = 14;
/// Busy (errno.h `EBUSY`).
pub const EBUSY: i32 = 16;
/// Already exists (errno.h `EEXIST`).
pub const EEXIST: i32 = 17;
/// Cross-device link (errno.h `EXDEV`).
pub const EXDEV: i32 = 18;
/// No such device (errno.h `ENODEV`).
pub const ENODEV: i32 = 19;
/// Not a directory (errno.h `ENOTDIR`).
pub const ENOTDIR: i32 = 20;
/// Is a directory (errno.h `EISDIR`).
pub const EISDIR: i32 = 21;
/// Invalid argument (errno.h `EINVAL`).
pub const EINVAL: i32 = 22;
/// Too many open files in the system (errno.h `ENFILE`).
pub const ENFILE: i32 = 23;
/// Too many open files (errno.h `EMFILE`).
pub const EMFILE: i32 = 24;
/// No space left (errno.h `ENOSPC`).
pub const ENOSPC: i32 = 28;
/// Read-only (errno.h `EROFS`).
pub const EROFS: i32 = 30;
/// Too many links (errno.h `EMLINK`).
pub const EMLINK: i32 = 31;
/// Argument out of domain (errno.h `EDOM`).
pub const EDOM: i32 = 33;
/// Result out of range (errno.h `ERANGE`).
pub const ERANGE: i32 = 34;
/// Deadlock would occur (errno.h `EDEADLK`).
pub const EDEADLK: i32 = 35;
/// Deadlock would occur (same value as `EDEADLK`) (errno.h `EDEADLOCK`).
pub const EDEADLOCK: i32 = 35;
/// Name too long (errno.h `ENAMETOOLONG`).
pub const ENAMETOOLONG: i32 = 36;
/// No locks available (errno.h `ENOLCK`).
pub const ENOLCK: i32 = 37;
/// Not implemented (errno.h `ENOSYS`).
pub const ENOSYS: i32 = 38;
/// Not empty (errno.h `ENOTEMPTY`).
pub const ENOTEMPTY: i32 = 39;
/// No data (errno.h `ENODATA`).
pub const ENODATA: i32 = 61;
/// Timer expired (errno.h `ETIME`).
pub const ETIME: i32 = 62;
/// Bad message (errno.h `EBADMSG`).
pub const EBADMSG: i32 = 74;
/// Value too large for its type (errno.h `EOVERFLOW`).
pub const EOVERFLOW: i32 = 75;
/// Illegal byte sequence (errno.h `EILSEQ`).
pub const EILSEQ: i32 = 84;
/// Restart the call; hypervisor-internal, never returned to a guest (errno.h `ERESTART`).
pub const ERESTART: i32 = 85;
/// Not a socket (errno.h `ENOTSOCK`).
pub const ENOTSOCK: i32 = 88;
/// Message too large (errno.h `EMSGSIZE`).
pub const EMSGSIZE: i32 = 90;
/// Operation not supported (errno.h `EOPNOTSUPP`).
pub const EOPNOTSUPP: i32 = 95;
/// Address in use (errno.h `EADDRINUSE`).
pub const EADDRINUSE: i32 = 98;
/// Address not available (errno.h `EADDRNOTAVAIL`).
pub const EADDRNOTAVAIL: i32 = 99;
/// No buffer space (errno.h `ENOBUFS`).
pub const ENOBUFS: i32 = 105;
/// Already connected (errno.h `EISCONN`).
pub const EISCONN: i32 = 106;
/// Not connected (errno.h `ENOTCONN`).
pub const ENOTCONN: i32 = 107;
/// Timed out (errno.h `ETIMEDOUT`).
pub const ETIMEDOUT: i32 = 110;
/// Connection refused (errno.h `ECONNREFUSED`).
pub const ECONNREFUSED: i32 = 111;

/// Every error number errno.h defines, with its name, aliases excluded
/// (`EWOULDBLOCK`, `EDEADLOCK`), in numeric order.
pub const XEN_ERRNOS: &[(i32, &str)] = &[
    (EPERM, "EPERM"),
    (ENOENT, "ENOENT"),
    (ESRCH, "ESRCH"),
    (EINTR, "EINTR"),
    (EIO, "EIO"),
    (ENXIO, "ENXIO"),
    (E2BIG, "E2BIG"),
    (ENOEXEC, "ENOEXEC"),
    (EBADF, "EBADF"),
    (ECHILD, "ECHILD"),
    (EAGAIN, "EAGAIN"),
    (ENOMEM, "ENOMEM"),
    (EACCES, "EACCES"),
    (EFAULT, "EFAULT"),
    (EBUSY, "EBUSY"),
    (EEXIST, "EEXIST"),
    (EXDEV, "EXDEV"),
    (ENODEV, "ENODEV"),
    (ENOTDIR, "ENOTDIR"),
    (EISDIR, "EISDIR"),
    (EINVAL, "EINVAL"),
    (ENFILE, "ENFILE"),
    (EMFILE, "EMFILE"),
    (ENOSPC, "ENOSPC"),
    (EROFS, "EROFS"),
    (EMLINK, "EMLINK"),
    (EDOM, "EDOM"),
    (ERANGE, "ERANGE"),
    (EDEADLK, "EDEADLK"),
    (ENAMETOOLONG, "ENAMETOOLONG"),
    (ENOLCK, "ENOLCK"),
    (ENOSYS, "ENOSYS"),
    (ENOTEMPTY, "ENOTEMPTY"),
    (ENODATA, "ENODATA"),
    (ETIME, "ETIME"),
    (EBADMSG, "EBADMSG"),
    (EOVERFLOW, "EOVERFLOW"),
    (EILSEQ, "EILSEQ"),
    (ERESTART, "ERESTART"),
    (ENOTSOCK, "ENOTSOCK"),
    (EMSGSIZE, "EMSGSIZE"),
    (EOPNOTSUPP, "EOPNOTSUPP"),
    (EADDRINUSE, "EADDRINUSE"),
    (EADDRNOTAVAIL, "EADDRNOTAVAIL"),
    (ENOBUFS, "ENOBUFS"),
    (EISCONN, "EISCONN"),
    (ENOTCONN, "ENOTCONN"),
    (ETIMEDOUT, "ETIMEDOUT"),
    (ECONNREFUSED, "ECONNREFUSED"),
];

/// A Xen error number, as returned (negated) by a hypercall. Built only by
/// checked conversion: it always holds a value in `1..=4095`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Errno(i32);

impl Errno {
    /// Largest value Xen (like Linux) ever returns as `-errno`.
    pub const MAX: i32 = 4095;

    /// Wraps a positive error number; `None` outside `1..=4095`.
    pub const fn new(errno: i32) -> Option<Self> {
        if errno >= 1 && errno <= Self::MAX {
            Some(Self(errno))
        } else {
            None
        }
    }

    /// Splits a raw hypercall return value (RAX): values in `-4095..=-1`
    /// are errors, everything else is a success value.
    pub const fn from_ret(ret: i64) -> Result<u64, Self> {
        if ret < 0 && ret >= -(Self::MAX as i64) {
            Err(Self(-ret as i32))
        } else {
            Ok(ret as u64)
        }
    }

    /// The positive error number.
    pub const fn get(self) -> i32 {
        self.0
    }

    /// The value a hypervisor puts in RAX to report this error (`-errno`).
    pub const fn to_ret(self) -> i64 {
        -(self.0 as i64)
    }

    /// errno.h's name for this value, if it defines one.
    pub fn name(self) -> Option<&'static str> {
        XEN_ERRNOS
            .iter()
            .find(|(v, _)| *v == self.0)
            .map(|(_, n)| *n)
    }
}

impl core::fmt::Display for Errno {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({})", self.0),
            None => write!(f, "errno {}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_values_split_into_errors_and_results() {
        assert_eq!(Errno::from_ret(0), Ok(0));
        assert_eq!(Errno::from_ret(4096), Ok(4096));
        assert_eq!(Errno::from_ret(-22), Err(Errno::new(EINVAL).unwrap()));
        assert_eq!(Errno::from_ret(-4095).unwrap_err().get(), 4095);
        // Below the errno window: a (huge) success value, not an error.
        assert_eq!(Errno::from_ret(-4096), Ok((-4096i64) as u64));
        assert_eq!(Errno::from_ret(i64::MIN), Ok(1u64 << 63));
    }

    #[test]
    fn errno_round_trips_through_ret() {
        for &(v, _) in XEN_ERRNOS {
            let e = Errno::new(v).unwrap();
            assert_eq!(Errno::from_ret(e.to_ret()), Err(e));
        }
    }

    #[test]
    fn errno_rejects_out_of_range() {
        assert_eq!(Errno::new(0), None);
        assert_eq!(Errno::new(-1), None);
        assert_eq!(Errno::new(4096), None);
        assert_eq!(Errno::new(i32::MIN), None);
    }

    #[test]
    fn names_and_table() {
        assert_eq!(Errno::new(ENOSYS).unwrap().name(), Some("ENOSYS"));
        assert_eq!(Errno::new(15).unwrap().name(), None, "15 is not in errno.h");
        assert_eq!(EWOULDBLOCK, EAGAIN);
        assert_eq!(EDEADLOCK, EDEADLK);
        for pair in XEN_ERRNOS.windows(2) {
            assert!(pair[0].0 < pair[1].0);
        }
    }
}
