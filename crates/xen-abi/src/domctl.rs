//! The pieces of `domctl` and `sysctl` a xenstore (service) domain needs:
//! `xen/include/public/domctl.h` and `sysctl.h` (Xen 4.17, interface
//! version 0x15), plus the stable `XEN_DOMCTL_get_domain_state` of later
//! Xen (interface version 0).
//!
//! Both hypercalls take one pointer to a command struct: a header (command
//! number, interface version, and for `domctl` the target domain) followed
//! by a 128-byte union of per-command arguments. The union is kept as raw
//! words here; [`XenDomctl::arg`]/[`XenDomctl::set_arg`] (and the `sysctl`
//! twins) read and write one member.

use crate::{Domid, XenDomainHandle};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// The `domctl` interface version of Xen 4.17 (domctl.h
/// `XEN_DOMCTL_INTERFACE_VERSION`). Stable commands use 0 instead.
pub const XEN_DOMCTL_INTERFACE_VERSION: u32 = 0x15;
/// The `sysctl` interface version of Xen 4.17 (sysctl.h
/// `XEN_SYSCTL_INTERFACE_VERSION`).
pub const XEN_SYSCTL_INTERFACE_VERSION: u32 = 0x15;

/// Information about one domain, argument [`XenDomctlGetdomaininfo`]
/// (domctl.h `XEN_DOMCTL_getdomaininfo`).
pub const XEN_DOMCTL_getdomaininfo: u32 = 5;
/// A domain's state, or the next domain whose state changed (stable,
/// interface version 0), argument [`XenDomctlGetDomainState`] (domctl.h
/// `XEN_DOMCTL_get_domain_state`, Xen 4.21).
pub const XEN_DOMCTL_get_domain_state: u32 = 90;
/// Information about several domains, argument
/// [`XenSysctlGetdomaininfolist`] (sysctl.h `XEN_SYSCTL_getdomaininfolist`).
pub const XEN_SYSCTL_getdomaininfolist: u32 = 6;

/// Bit number of [`XEN_DOMINF_dying`] (domctl.h `_XEN_DOMINF_dying`).
pub const _XEN_DOMINF_dying: u32 = 0;
/// The domain is scheduled to die (domctl.h `XEN_DOMINF_dying`).
pub const XEN_DOMINF_dying: u32 = 1 << _XEN_DOMINF_dying;
/// Bit number of [`XEN_DOMINF_hvm_guest`] (domctl.h `_XEN_DOMINF_hvm_guest`).
pub const _XEN_DOMINF_hvm_guest: u32 = 1;
/// An HVM (or PVH) guest (domctl.h `XEN_DOMINF_hvm_guest`).
pub const XEN_DOMINF_hvm_guest: u32 = 1 << _XEN_DOMINF_hvm_guest;
/// Bit number of [`XEN_DOMINF_shutdown`] (domctl.h `_XEN_DOMINF_shutdown`).
pub const _XEN_DOMINF_shutdown: u32 = 2;
/// The guest has shut down; the reason is in the shutdown field
/// (domctl.h `XEN_DOMINF_shutdown`).
pub const XEN_DOMINF_shutdown: u32 = 1 << _XEN_DOMINF_shutdown;
/// Bit number of [`XEN_DOMINF_paused`] (domctl.h `_XEN_DOMINF_paused`).
pub const _XEN_DOMINF_paused: u32 = 3;
/// Paused by the toolstack (domctl.h `XEN_DOMINF_paused`).
pub const XEN_DOMINF_paused: u32 = 1 << _XEN_DOMINF_paused;
/// Bit number of [`XEN_DOMINF_blocked`] (domctl.h `_XEN_DOMINF_blocked`).
pub const _XEN_DOMINF_blocked: u32 = 4;
/// Every online vCPU is blocked (domctl.h `XEN_DOMINF_blocked`).
pub const XEN_DOMINF_blocked: u32 = 1 << _XEN_DOMINF_blocked;
/// Bit number of [`XEN_DOMINF_running`] (domctl.h `_XEN_DOMINF_running`).
pub const _XEN_DOMINF_running: u32 = 5;
/// Some vCPU is on a CPU now (domctl.h `XEN_DOMINF_running`).
pub const XEN_DOMINF_running: u32 = 1 << _XEN_DOMINF_running;
/// Bit number of [`XEN_DOMINF_debugged`] (domctl.h `_XEN_DOMINF_debugged`).
pub const _XEN_DOMINF_debugged: u32 = 6;
/// Being debugged (domctl.h `XEN_DOMINF_debugged`).
pub const XEN_DOMINF_debugged: u32 = 1 << _XEN_DOMINF_debugged;
/// Bit number of [`XEN_DOMINF_xs_domain`] (domctl.h `_XEN_DOMINF_xs_domain`).
pub const _XEN_DOMINF_xs_domain: u32 = 7;
/// The xenstore domain (domctl.h `XEN_DOMINF_xs_domain`).
pub const XEN_DOMINF_xs_domain: u32 = 1 << _XEN_DOMINF_xs_domain;
/// Bit number of [`XEN_DOMINF_hap`] (domctl.h `_XEN_DOMINF_hap`).
pub const _XEN_DOMINF_hap: u32 = 8;
/// Hardware-assisted paging (domctl.h `XEN_DOMINF_hap`).
pub const XEN_DOMINF_hap: u32 = 1 << _XEN_DOMINF_hap;
/// Mask of the shutdown reason after the shift (domctl.h
/// `XEN_DOMINF_shutdownmask`).
pub const XEN_DOMINF_shutdownmask: u32 = 255;
/// Where the shutdown reason sits in the flags (domctl.h
/// `XEN_DOMINF_shutdownshift`).
pub const XEN_DOMINF_shutdownshift: u32 = 16;
/// `max_vcpu_id` of a domain without vCPUs (domctl.h
/// `XEN_INVALID_MAX_VCPU_ID`).
pub const XEN_INVALID_MAX_VCPU_ID: u32 = u32::MAX;

/// The domain exists (domctl.h `XEN_DOMCTL_GETDOMSTATE_STATE_EXIST`).
pub const XEN_DOMCTL_GETDOMSTATE_STATE_EXIST: u16 = 0x0001;
/// Its shutdown has finished (domctl.h `XEN_DOMCTL_GETDOMSTATE_STATE_SHUTDOWN`).
pub const XEN_DOMCTL_GETDOMSTATE_STATE_SHUTDOWN: u16 = 0x0002;
/// It is dying (domctl.h `XEN_DOMCTL_GETDOMSTATE_STATE_DYING`).
pub const XEN_DOMCTL_GETDOMSTATE_STATE_DYING: u16 = 0x0004;
/// It is dead (domctl.h `XEN_DOMCTL_GETDOMSTATE_STATE_DEAD`).
pub const XEN_DOMCTL_GETDOMSTATE_STATE_DEAD: u16 = 0x0008;
/// The control domain (domctl.h `XEN_DOMCTL_GETDOMSTATE_CAP_CONTROL`).
pub const XEN_DOMCTL_GETDOMSTATE_CAP_CONTROL: u16 = 0x0001;
/// The hardware domain (domctl.h `XEN_DOMCTL_GETDOMSTATE_CAP_HARDWARE`).
pub const XEN_DOMCTL_GETDOMSTATE_CAP_HARDWARE: u16 = 0x0002;
/// The xenstore domain (domctl.h `XEN_DOMCTL_GETDOMSTATE_CAP_XENSTORE`).
pub const XEN_DOMCTL_GETDOMSTATE_CAP_XENSTORE: u16 = 0x0004;

/// Bit number of [`XEN_X86_EMU_LAPIC`] (arch-x86/xen.h `_XEN_X86_EMU_LAPIC`).
pub const _XEN_X86_EMU_LAPIC: u32 = 0;
/// The local APIC is emulated: what a PVH domain has (arch-x86/xen.h
/// `XEN_X86_EMU_LAPIC`).
pub const XEN_X86_EMU_LAPIC: u32 = 1 << _XEN_X86_EMU_LAPIC;

/// x86 domain configuration (arch-x86/xen.h `struct xen_arch_domainconfig`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct XenArchDomainconfig {
    /// `XEN_X86_EMU_*`: what Xen emulates for the domain.
    pub emulation_flags: u32,
    /// `XEN_X86_*` miscellaneous flags (4.17: `XEN_X86_MSR_RELAXED`).
    pub misc_flags: u32,
}
crate::assert_layout!(XenArchDomainconfig, 8, { emulation_flags: 0, misc_flags: 4 });

/// Result of `XEN_DOMCTL_getdomaininfo`, one entry of
/// `XEN_SYSCTL_getdomaininfolist` (domctl.h `struct xen_domctl_getdomaininfo`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct XenDomctlGetdomaininfo {
    /// The domain (also echoed in the header's `domain`).
    pub domain: Domid,
    /// Padding.
    pub pad1: u16,
    /// `XEN_DOMINF_*`, and the shutdown reason at
    /// [`XEN_DOMINF_shutdownshift`].
    pub flags: u32,
    /// Frames the domain owns.
    pub tot_pages: u64,
    /// The most frames it may own.
    pub max_pages: u64,
    /// Frames claimed but not yet allocated.
    pub outstanding_pages: u64,
    /// Frames shared by memory sharing.
    pub shr_pages: u64,
    /// Frames paged out.
    pub paged_pages: u64,
    /// The frame of shared_info.
    pub shared_info_frame: u64,
    /// Nanoseconds its vCPUs ran.
    pub cpu_time: u64,
    /// vCPUs online.
    pub nr_online_vcpus: u32,
    /// Highest vCPU id ([`XEN_INVALID_MAX_VCPU_ID`] for none).
    pub max_vcpu_id: u32,
    /// XSM security id.
    pub ssidref: u32,
    /// The toolstack's handle (a UUID).
    pub handle: XenDomainHandle,
    /// The CPU pool.
    pub cpupool: u32,
    /// Guest-physical address width.
    pub gpaddr_bits: u8,
    /// Padding.
    pub pad2: [u8; 7],
    /// Architecture configuration.
    pub arch_config: XenArchDomainconfig,
}
crate::assert_layout!(XenDomctlGetdomaininfo, 112, {
    domain: 0, pad1: 2, flags: 4, tot_pages: 8, max_pages: 16, outstanding_pages: 24,
    shr_pages: 32, paged_pages: 40, shared_info_frame: 48, cpu_time: 56,
    nr_online_vcpus: 64, max_vcpu_id: 68, ssidref: 72, handle: 76, cpupool: 92,
    gpaddr_bits: 96, pad2: 97, arch_config: 104,
});

/// Argument of `XEN_DOMCTL_get_domain_state` (domctl.h
/// `struct xen_domctl_get_domain_state`, Xen 4.21; not in 4.17's headers).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct XenDomctlGetDomainState {
    /// `XEN_DOMCTL_GETDOMSTATE_STATE_*`; 0 for a domain that is gone.
    pub state: u16,
    /// `XEN_DOMCTL_GETDOMSTATE_CAP_*`.
    pub caps: u16,
    /// Must be 0 on input, returned as 0.
    pub pad0: u32,
    /// A number no other domain of this boot had.
    pub unique_id: u64,
}
crate::assert_layout!(XenDomctlGetDomainState, 16, { state: 0, caps: 2, pad0: 4, unique_id: 8 });

/// The `domctl` argument (domctl.h `struct xen_domctl`): a header and a
/// 128-byte union of per-command arguments, kept as words.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct XenDomctl {
    /// `XEN_DOMCTL_*`.
    pub cmd: u32,
    /// [`XEN_DOMCTL_INTERFACE_VERSION`], or 0 for stable commands.
    pub interface_version: u32,
    /// The target domain (in and out for some commands).
    pub domain: Domid,
    /// Padding (domctl.h `_pad`).
    pub _pad: [u16; 3],
    /// The union `u`.
    pub u: [u64; 16],
}
crate::assert_layout!(XenDomctl, 144, { cmd: 0, interface_version: 4, domain: 8, _pad: 10, u: 16 });

impl Default for XenDomctl {
    fn default() -> Self {
        Self::new_zeroed()
    }
}

/// The `sysctl` argument (sysctl.h `struct xen_sysctl`): a header and a
/// 128-byte union of per-command arguments, kept as words.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct XenSysctl {
    /// `XEN_SYSCTL_*`.
    pub cmd: u32,
    /// [`XEN_SYSCTL_INTERFACE_VERSION`].
    pub interface_version: u32,
    /// The union `u`.
    pub u: [u64; 16],
}
crate::assert_layout!(XenSysctl, 136, { cmd: 0, interface_version: 4, u: 8 });

impl Default for XenSysctl {
    fn default() -> Self {
        Self::new_zeroed()
    }
}

/// Argument of `XEN_SYSCTL_getdomaininfolist` (sysctl.h
/// `struct xen_sysctl_getdomaininfolist`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct XenSysctlGetdomaininfolist {
    /// The lowest domain id wanted.
    pub first_domain: Domid,
    /// Padding.
    pub pad: u16,
    /// Room in `buffer`, in entries.
    pub max_domains: u32,
    /// Guest address of an array of [`XenDomctlGetdomaininfo`].
    pub buffer: u64,
    /// Out: entries written.
    pub num_domains: u32,
    /// Padding.
    pub pad2: u32,
}
crate::assert_layout!(XenSysctlGetdomaininfolist, 24, {
    first_domain: 0, max_domains: 4, buffer: 8, num_domains: 16,
});

/// Reads union member `T` from the start of `u`.
fn union_get<T: FromBytes>(u: &[u64; 16]) -> T {
    const { assert!(core::mem::size_of::<T>() <= 128) };
    // The union is 128 bytes and T is no larger: the prefix read succeeds.
    match T::read_from_prefix(u.as_bytes()) {
        Ok((v, _)) => v,
        Err(_) => T::new_zeroed(),
    }
}

/// Writes union member `T` at the start of `u`, zeroing the rest.
fn union_set<T: IntoBytes + Immutable>(u: &mut [u64; 16], v: &T) {
    const { assert!(core::mem::size_of::<T>() <= 128) };
    *u = [0; 16];
    let b = v.as_bytes();
    u.as_mut_bytes()[..b.len()].copy_from_slice(b);
}

impl XenDomctl {
    /// A command for `domain` with `arg` in the union and the interface
    /// version the command needs (0 for stable ones).
    pub fn with<T: IntoBytes + Immutable>(cmd: u32, domain: Domid, arg: &T) -> Self {
        let mut d = Self::new_zeroed();
        d.cmd = cmd;
        d.interface_version = if cmd == XEN_DOMCTL_get_domain_state {
            0
        } else {
            XEN_DOMCTL_INTERFACE_VERSION
        };
        d.domain = domain;
        union_set(&mut d.u, arg);
        d
    }

    /// The union read as member `T` (any bytes are a valid value).
    pub fn arg<T: FromBytes>(&self) -> T {
        union_get(&self.u)
    }

    /// Writes member `T` into the union (the rest is zeroed).
    pub fn set_arg<T: IntoBytes + Immutable>(&mut self, v: &T) {
        union_set(&mut self.u, v);
    }
}

impl XenSysctl {
    /// A command with `arg` in the union and [`XEN_SYSCTL_INTERFACE_VERSION`].
    pub fn with<T: IntoBytes + Immutable>(cmd: u32, arg: &T) -> Self {
        let mut s = Self::new_zeroed();
        s.cmd = cmd;
        s.interface_version = XEN_SYSCTL_INTERFACE_VERSION;
        union_set(&mut s.u, arg);
        s
    }

    /// The union read as member `T` (any bytes are a valid value).
    pub fn arg<T: FromBytes>(&self) -> T {
        union_get(&self.u)
    }

    /// Writes member `T` into the union (the rest is zeroed).
    pub fn set_arg<T: IntoBytes + Immutable>(&mut self, v: &T) {
        union_set(&mut self.u, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_round_trip() {
        let info = XenDomctlGetdomaininfo {
            domain: 3,
            flags: XEN_DOMINF_hvm_guest | XEN_DOMINF_blocked,
            tot_pages: 0x1234,
            handle: [7; 16],
            arch_config: XenArchDomainconfig {
                emulation_flags: XEN_X86_EMU_LAPIC,
                misc_flags: 0,
            },
            ..Default::default()
        };
        let mut d = XenDomctl::with(XEN_DOMCTL_getdomaininfo, 3, &info);
        assert_eq!(d.interface_version, XEN_DOMCTL_INTERFACE_VERSION);
        assert_eq!(d.arg::<XenDomctlGetdomaininfo>(), info);
        let b = d.as_bytes();
        assert_eq!(&b[8..10], &3u16.to_le_bytes());
        assert_eq!(&b[16..18], &3u16.to_le_bytes());
        assert_eq!(&b[24..32], &0x1234u64.to_le_bytes());
        d.set_arg(&XenDomctlGetDomainState::default());
        assert_eq!(d.arg::<XenDomctlGetdomaininfo>().tot_pages, 0);
        let s = XenDomctl::with(XEN_DOMCTL_get_domain_state, 0x7FF4, &d.u[0]);
        assert_eq!(s.interface_version, 0);
    }

    #[test]
    fn sysctl_header() {
        let l = XenSysctlGetdomaininfolist {
            first_domain: 1,
            max_domains: 4,
            buffer: 0x5000,
            ..Default::default()
        };
        let s = XenSysctl::with(XEN_SYSCTL_getdomaininfolist, &l);
        let b = s.as_bytes();
        assert_eq!(&b[0..4], &6u32.to_le_bytes());
        assert_eq!(&b[4..8], &0x15u32.to_le_bytes());
        assert_eq!(&b[16..24], &0x5000u64.to_le_bytes());
        assert_eq!(s.arg::<XenSysctlGetdomaininfolist>(), l);
        // Any bytes are a header.
        assert!(XenSysctl::read_from_bytes(&[0xffu8; 136][..]).is_ok());
        assert!(XenDomctl::read_from_bytes(&[0u8; 143][..]).is_err());
    }
}
