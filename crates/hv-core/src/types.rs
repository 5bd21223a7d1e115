//! Small value types shared by the whole core: ids, frame numbers, pages.

use core::fmt;

/// Bytes in a page (4 KiB on x86).
pub const PAGE_SIZE: usize = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;

/// A domain id (`domid_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomId(pub u16);

impl DomId {
    /// The domain a hypercall names when it means "the caller"
    /// (xen.h `DOMID_SELF`).
    pub const SELF: u16 = 0x7FF0;
    /// The first id reserved for special domains (xen.h `DOMID_FIRST_RESERVED`).
    pub const FIRST_RESERVED: u16 = 0x7FF0;
}

impl fmt::Display for DomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "d{}", self.0)
    }
}

/// A guest frame number: guest-physical address >> 12.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gfn(pub u64);

/// A host frame number: host-physical address >> 12 (Xen's `mfn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hfn(pub u64);

impl Gfn {
    /// The guest-physical address of the frame's first byte.
    pub const fn gpa(self) -> u64 {
        self.0 << PAGE_SHIFT
    }
    /// The frame holding guest-physical address `gpa`.
    pub const fn of(gpa: u64) -> Self {
        Gfn(gpa >> PAGE_SHIFT)
    }
}

impl Hfn {
    /// The host-physical address of the frame's first byte.
    pub const fn hpa(self) -> u64 {
        self.0 << PAGE_SHIFT
    }
}

/// A Xen error, carried as a positive errno (`EINVAL`, ...) and returned to
/// guests as its negation.
pub type XenResult<T> = Result<T, Errno>;

/// A positive Xen errno value; see `xen_abi::errno`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// `-EPERM`: not allowed.
    pub const EPERM: Errno = Errno(xen_abi::errno::EPERM);
    /// `-EACCES`: access refused (a wrong `domctl`/`sysctl` interface version).
    pub const EACCES: Errno = Errno(xen_abi::errno::EACCES);
    /// `-ENOENT`: no such object.
    pub const ENOENT: Errno = Errno(xen_abi::errno::ENOENT);
    /// `-ESRCH`: no such domain or vCPU.
    pub const ESRCH: Errno = Errno(xen_abi::errno::ESRCH);
    /// `-ENOMEM`: out of memory or quota.
    pub const ENOMEM: Errno = Errno(xen_abi::errno::ENOMEM);
    /// `-EFAULT`: a guest address was not accessible.
    pub const EFAULT: Errno = Errno(xen_abi::errno::EFAULT);
    /// `-EBUSY`: already in use.
    pub const EBUSY: Errno = Errno(xen_abi::errno::EBUSY);
    /// `-EEXIST`: already exists.
    pub const EEXIST: Errno = Errno(xen_abi::errno::EEXIST);
    /// `-EINVAL`: a bad argument.
    pub const EINVAL: Errno = Errno(xen_abi::errno::EINVAL);
    /// `-ENOSPC`: no free slot.
    pub const ENOSPC: Errno = Errno(xen_abi::errno::ENOSPC);
    /// `-ENOSYS`: not implemented.
    pub const ENOSYS: Errno = Errno(xen_abi::errno::ENOSYS);
    /// `-EOPNOTSUPP`: operation not supported for this object.
    pub const EOPNOTSUPP: Errno = Errno(xen_abi::errno::EOPNOTSUPP);
    /// `-EAGAIN`: try again.
    pub const EAGAIN: Errno = Errno(xen_abi::errno::EAGAIN);
    /// `-ETIME`: a timeout in the past.
    pub const ETIME: Errno = Errno(xen_abi::errno::ETIME);
    /// `-EOVERFLOW`: a value does not fit.
    pub const EOVERFLOW: Errno = Errno(xen_abi::errno::EOVERFLOW);
    /// `-EBADF`: bad handle.
    pub const EBADF: Errno = Errno(xen_abi::errno::EBADF);
    /// `-E2BIG`: too big.
    pub const E2BIG: Errno = Errno(xen_abi::errno::E2BIG);

    /// The value a hypercall returns in RAX for this error.
    pub const fn to_ret(self) -> u64 {
        (-(self.0 as i64)) as u64
    }
}
