//! The `xen_version` hypercall: `xen/include/public/version.h`.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Returns `major << 16 | minor` (version.h `XENVER_version`).
pub const XENVER_version: u32 = 0;
/// Fills a [`XenExtraversion`] (version.h `XENVER_extraversion`).
pub const XENVER_extraversion: u32 = 1;
/// Fills a [`XenCompileInfo`] (version.h `XENVER_compile_info`).
pub const XENVER_compile_info: u32 = 2;
/// Fills a [`XenCapabilitiesInfo`] (version.h `XENVER_capabilities`).
pub const XENVER_capabilities: u32 = 3;
/// Fills a [`XenChangesetInfo`] (version.h `XENVER_changeset`).
pub const XENVER_changeset: u32 = 4;
/// Fills a [`XenPlatformParameters`] (version.h `XENVER_platform_parameters`).
pub const XENVER_platform_parameters: u32 = 5;
/// Fills a [`XenFeatureInfo`] (version.h `XENVER_get_features`).
pub const XENVER_get_features: u32 = 6;
/// Returns the page size (version.h `XENVER_pagesize`).
pub const XENVER_pagesize: u32 = 7;
/// Fills the 16-byte domain handle (version.h `XENVER_guest_handle`).
pub const XENVER_guest_handle: u32 = 8;
/// Fills a [`XenCommandline`] (version.h `XENVER_commandline`).
pub const XENVER_commandline: u32 = 9;
/// Fills a [`XenVarbuf`] with the build id (version.h `XENVER_build_id`).
pub const XENVER_build_id: u32 = 10;
/// Variable-length extraversion (version.h `XENVER_extraversion2`).
pub const XENVER_extraversion2: u32 = 11;
/// Variable-length capabilities (version.h `XENVER_capabilities2`).
pub const XENVER_capabilities2: u32 = 12;
/// Variable-length changeset (version.h `XENVER_changeset2`).
pub const XENVER_changeset2: u32 = 13;
/// Variable-length command line (version.h `XENVER_commandline2`).
pub const XENVER_commandline2: u32 = 14;

/// Extra version string, NUL-padded (version.h `xen_extraversion_t`).
pub type XenExtraversion = [u8; 16];
/// Length of [`XenExtraversion`] (version.h `XEN_EXTRAVERSION_LEN`).
pub const XEN_EXTRAVERSION_LEN: usize = 16;
/// Capabilities string, e.g. "hvm-3.0-x86_64" (version.h `xen_capabilities_info_t`).
pub type XenCapabilitiesInfo = [u8; 1024];
/// Length of [`XenCapabilitiesInfo`] (version.h `XEN_CAPABILITIES_INFO_LEN`).
pub const XEN_CAPABILITIES_INFO_LEN: usize = 1024;
/// Changeset string (version.h `xen_changeset_info_t`).
pub type XenChangesetInfo = [u8; 64];
/// Length of [`XenChangesetInfo`] (version.h `XEN_CHANGESET_INFO_LEN`).
pub const XEN_CHANGESET_INFO_LEN: usize = 64;
/// Hypervisor command line (version.h `xen_commandline_t`).
pub type XenCommandline = [u8; 1024];
/// A domain's 16-byte handle, e.g. its UUID (xen.h `xen_domain_handle_t`).
pub type XenDomainHandle = [u8; 16];

/// Build information (version.h `struct xen_compile_info`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct XenCompileInfo {
    /// Compiler, NUL-padded.
    pub compiler: [u8; 64],
    /// Who built it.
    pub compile_by: [u8; 16],
    /// Build host domain.
    pub compile_domain: [u8; 32],
    /// Build date.
    pub compile_date: [u8; 32],
}
crate::assert_layout!(XenCompileInfo, 144, {
    compiler: 0, compile_by: 64, compile_domain: 80, compile_date: 112,
});

/// Platform parameters (version.h `struct xen_platform_parameters`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct XenPlatformParameters {
    /// Start of the hypervisor's virtual area (PV guests).
    pub virt_start: u64,
}
crate::assert_layout!(XenPlatformParameters, 8, { virt_start: 0 });

/// One 32-bit word of the `XENFEAT_*` bitmap (version.h `struct xen_feature_info`).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct XenFeatureInfo {
    /// In: which 32-bit word to return.
    pub submap_idx: u32,
    /// Out: the word; bit `n` is feature `32 * submap_idx + n`.
    pub submap: u32,
}
crate::assert_layout!(XenFeatureInfo, 8, { submap_idx: 0, submap: 4 });

/// Header of a variable-length answer (version.h `struct xen_varbuf` and
/// `struct xen_build_id`): `len` bytes of data follow it.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct XenVarbuf {
    /// In: size of the buffer after this header; out: bytes written.
    pub len: u32,
}
crate::assert_layout!(XenVarbuf, 4, { len: 0 });

/// Splits the `XENVER_version` result into (major, minor).
pub const fn xen_version_split(ret: u32) -> (u16, u16) {
    ((ret >> 16) as u16, ret as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_split() {
        assert_eq!(xen_version_split(0x0004_0013), (4, 19));
        assert_eq!(xen_version_split(u32::MAX), (0xffff, 0xffff));
    }

    #[test]
    fn feature_info_from_bytes() {
        let bytes = [1u8, 0, 0, 0, 0x04, 0x03, 0, 0];
        let fi = XenFeatureInfo::read_from_bytes(&bytes[..]).unwrap();
        assert_eq!(
            fi,
            XenFeatureInfo {
                submap_idx: 1,
                submap: 0x304
            }
        );
        assert!(XenFeatureInfo::read_from_bytes(&bytes[..7]).is_err());
        assert!(XenFeatureInfo::read_from_bytes(&[0u8; 9][..]).is_err());
    }
}
