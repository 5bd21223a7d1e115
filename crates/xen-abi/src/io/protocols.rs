//! ABI names written to the `protocol` xenstore key: `xen/include/public/io/protocols.h`.
//!
//! A front end states the ABI its ring entries use; a back end must then
//! read them in that layout (e.g. [`crate::Blkif32Request`] for x86_32).

/// 32-bit x86 layout (protocols.h `XEN_IO_PROTO_ABI_X86_32`).
pub const XEN_IO_PROTO_ABI_X86_32: &str = "x86_32-abi";
/// 64-bit x86 layout (protocols.h `XEN_IO_PROTO_ABI_X86_64`).
pub const XEN_IO_PROTO_ABI_X86_64: &str = "x86_64-abi";
/// Arm layout (protocols.h `XEN_IO_PROTO_ABI_ARM`).
pub const XEN_IO_PROTO_ABI_ARM: &str = "arm-abi";
/// The layout of the architecture this crate describes (protocols.h
/// `XEN_IO_PROTO_ABI_NATIVE`, x86_64).
pub const XEN_IO_PROTO_ABI_NATIVE: &str = XEN_IO_PROTO_ABI_X86_64;

/// A ring ABI named by a `protocol` key. Built only by [`XenIoProto::parse`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XenIoProto {
    /// `XEN_IO_PROTO_ABI_X86_32`.
    X86_32,
    /// `XEN_IO_PROTO_ABI_X86_64`.
    X86_64,
    /// `XEN_IO_PROTO_ABI_ARM`.
    Arm,
}

impl XenIoProto {
    /// Parses a `protocol` value read from xenstore. An empty or absent key
    /// means the native ABI, which the caller decides; unknown names are
    /// `None`.
    pub fn parse(value: &[u8]) -> Option<Self> {
        match value {
            b"x86_32-abi" => Some(Self::X86_32),
            b"x86_64-abi" => Some(Self::X86_64),
            b"arm-abi" => Some(Self::Arm),
            _ => None,
        }
    }

    /// The protocols.h name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::X86_32 => XEN_IO_PROTO_ABI_X86_32,
            Self::X86_64 => XEN_IO_PROTO_ABI_X86_64,
            Self::Arm => XEN_IO_PROTO_ABI_ARM,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trip_and_reject() {
        for p in [XenIoProto::X86_32, XenIoProto::X86_64, XenIoProto::Arm] {
            assert_eq!(XenIoProto::parse(p.name().as_bytes()), Some(p));
        }
        assert_eq!(XenIoProto::parse(b""), None);
        assert_eq!(XenIoProto::parse(b"x86_64-abi\0"), None);
        assert_eq!(XenIoProto::parse(b"X86_64-ABI"), None);
        assert_eq!(XenIoProto::parse(&[0xff; 10]), None);
    }
}
