//! The xenstore wire protocol: `xen/include/public/io/xs_wire.h`.
//!
//! Each message is an [`XsdSockmsg`] header followed by `len` payload bytes
//! (at most [`XENSTORE_PAYLOAD_MAX`]), carried over the two byte rings of
//! the [`XenstoreDomainInterface`] page.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Message type: control (xs_wire.h `XS_CONTROL`, formerly `XS_DEBUG`).
pub const XS_CONTROL: u32 = 0;
/// Alias of `XS_CONTROL` (xs_wire.h `XS_DEBUG`).
pub const XS_DEBUG: u32 = XS_CONTROL;
/// List a directory (xs_wire.h `XS_DIRECTORY`).
pub const XS_DIRECTORY: u32 = 1;
/// Read a node (xs_wire.h `XS_READ`).
pub const XS_READ: u32 = 2;
/// Read permissions (xs_wire.h `XS_GET_PERMS`).
pub const XS_GET_PERMS: u32 = 3;
/// Add a watch (xs_wire.h `XS_WATCH`).
pub const XS_WATCH: u32 = 4;
/// Remove a watch (xs_wire.h `XS_UNWATCH`).
pub const XS_UNWATCH: u32 = 5;
/// Start a transaction (xs_wire.h `XS_TRANSACTION_START`).
pub const XS_TRANSACTION_START: u32 = 6;
/// End a transaction (xs_wire.h `XS_TRANSACTION_END`).
pub const XS_TRANSACTION_END: u32 = 7;
/// Introduce a domain (xs_wire.h `XS_INTRODUCE`).
pub const XS_INTRODUCE: u32 = 8;
/// Release a domain (xs_wire.h `XS_RELEASE`).
pub const XS_RELEASE: u32 = 9;
/// Get a domain's home path (xs_wire.h `XS_GET_DOMAIN_PATH`).
pub const XS_GET_DOMAIN_PATH: u32 = 10;
/// Write a node (xs_wire.h `XS_WRITE`).
pub const XS_WRITE: u32 = 11;
/// Create a directory (xs_wire.h `XS_MKDIR`).
pub const XS_MKDIR: u32 = 12;
/// Remove a node (xs_wire.h `XS_RM`).
pub const XS_RM: u32 = 13;
/// Set permissions (xs_wire.h `XS_SET_PERMS`).
pub const XS_SET_PERMS: u32 = 14;
/// Watch fired, server to client (xs_wire.h `XS_WATCH_EVENT`).
pub const XS_WATCH_EVENT: u32 = 15;
/// Error reply (xs_wire.h `XS_ERROR`).
pub const XS_ERROR: u32 = 16;
/// Is a domain introduced (xs_wire.h `XS_IS_DOMAIN_INTRODUCED`).
pub const XS_IS_DOMAIN_INTRODUCED: u32 = 17;
/// Resume a domain (xs_wire.h `XS_RESUME`).
pub const XS_RESUME: u32 = 18;
/// Set a domain's target (xs_wire.h `XS_SET_TARGET`).
pub const XS_SET_TARGET: u32 = 19;
/// Reset all watches (xs_wire.h `XS_RESET_WATCHES`; 20 is unused).
pub const XS_RESET_WATCHES: u32 = XS_SET_TARGET + 2;
/// List a large directory in parts (xs_wire.h `XS_DIRECTORY_PART`).
pub const XS_DIRECTORY_PART: u32 = 22;
/// Read a server feature (xs_wire.h `XS_GET_FEATURE`).
pub const XS_GET_FEATURE: u32 = 23;
/// Set a server feature (xs_wire.h `XS_SET_FEATURE`).
pub const XS_SET_FEATURE: u32 = 24;
/// Read a quota (xs_wire.h `XS_GET_QUOTA`).
pub const XS_GET_QUOTA: u32 = 25;
/// Set a quota (xs_wire.h `XS_SET_QUOTA`).
pub const XS_SET_QUOTA: u32 = 26;
/// Number of message types (xs_wire.h `XS_TYPE_COUNT`).
pub const XS_TYPE_COUNT: u32 = 27;
/// Guaranteed invalid type (xs_wire.h `XS_INVALID`).
pub const XS_INVALID: u32 = 0xffff;

/// A xenstore message type (xs_wire.h `enum xsd_sockmsg_type`). Built only
/// by [`XsdSockmsgType::try_from`]; the unused value 20, `XS_TYPE_COUNT`
/// and `XS_INVALID` are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum XsdSockmsgType {
    /// `XS_CONTROL`.
    Control = XS_CONTROL,
    /// `XS_DIRECTORY`.
    Directory = XS_DIRECTORY,
    /// `XS_READ`.
    Read = XS_READ,
    /// `XS_GET_PERMS`.
    GetPerms = XS_GET_PERMS,
    /// `XS_WATCH`.
    Watch = XS_WATCH,
    /// `XS_UNWATCH`.
    Unwatch = XS_UNWATCH,
    /// `XS_TRANSACTION_START`.
    TransactionStart = XS_TRANSACTION_START,
    /// `XS_TRANSACTION_END`.
    TransactionEnd = XS_TRANSACTION_END,
    /// `XS_INTRODUCE`.
    Introduce = XS_INTRODUCE,
    /// `XS_RELEASE`.
    Release = XS_RELEASE,
    /// `XS_GET_DOMAIN_PATH`.
    GetDomainPath = XS_GET_DOMAIN_PATH,
    /// `XS_WRITE`.
    Write = XS_WRITE,
    /// `XS_MKDIR`.
    Mkdir = XS_MKDIR,
    /// `XS_RM`.
    Rm = XS_RM,
    /// `XS_SET_PERMS`.
    SetPerms = XS_SET_PERMS,
    /// `XS_WATCH_EVENT`.
    WatchEvent = XS_WATCH_EVENT,
    /// `XS_ERROR`.
    Error = XS_ERROR,
    /// `XS_IS_DOMAIN_INTRODUCED`.
    IsDomainIntroduced = XS_IS_DOMAIN_INTRODUCED,
    /// `XS_RESUME`.
    Resume = XS_RESUME,
    /// `XS_SET_TARGET`.
    SetTarget = XS_SET_TARGET,
    /// `XS_RESET_WATCHES`.
    ResetWatches = XS_RESET_WATCHES,
    /// `XS_DIRECTORY_PART`.
    DirectoryPart = XS_DIRECTORY_PART,
    /// `XS_GET_FEATURE`.
    GetFeature = XS_GET_FEATURE,
    /// `XS_SET_FEATURE`.
    SetFeature = XS_SET_FEATURE,
    /// `XS_GET_QUOTA`.
    GetQuota = XS_GET_QUOTA,
    /// `XS_SET_QUOTA`.
    SetQuota = XS_SET_QUOTA,
}

impl TryFrom<u32> for XsdSockmsgType {
    type Error = u32;
    /// Checked conversion; an unknown value is returned as the error.
    fn try_from(v: u32) -> Result<Self, u32> {
        use XsdSockmsgType::*;
        Ok(match v {
            XS_CONTROL => Control,
            XS_DIRECTORY => Directory,
            XS_READ => Read,
            XS_GET_PERMS => GetPerms,
            XS_WATCH => Watch,
            XS_UNWATCH => Unwatch,
            XS_TRANSACTION_START => TransactionStart,
            XS_TRANSACTION_END => TransactionEnd,
            XS_INTRODUCE => Introduce,
            XS_RELEASE => Release,
            XS_GET_DOMAIN_PATH => GetDomainPath,
            XS_WRITE => Write,
            XS_MKDIR => Mkdir,
            XS_RM => Rm,
            XS_SET_PERMS => SetPerms,
            XS_WATCH_EVENT => WatchEvent,
            XS_ERROR => Error,
            XS_IS_DOMAIN_INTRODUCED => IsDomainIntroduced,
            XS_RESUME => Resume,
            XS_SET_TARGET => SetTarget,
            XS_RESET_WATCHES => ResetWatches,
            XS_DIRECTORY_PART => DirectoryPart,
            XS_GET_FEATURE => GetFeature,
            XS_SET_FEATURE => SetFeature,
            XS_GET_QUOTA => GetQuota,
            XS_SET_QUOTA => SetQuota,
            other => return Err(other),
        })
    }
}

impl From<XsdSockmsgType> for u32 {
    fn from(t: XsdSockmsgType) -> u32 {
        t as u32
    }
}

/// Watch event payload field: the path (xs_wire.h `XS_WATCH_PATH`).
pub const XS_WATCH_PATH: u32 = 0;
/// Watch event payload field: the token (xs_wire.h `XS_WATCH_TOKEN`).
pub const XS_WATCH_TOKEN: u32 = 1;

/// Error names an `XS_ERROR` reply may carry, with their errno values
/// (xs_wire.h `xsd_errors`), in the header's order.
pub const XSD_ERRORS: &[(i32, &str)] = &[
    (crate::EINVAL, "EINVAL"),
    (crate::EACCES, "EACCES"),
    (crate::EEXIST, "EEXIST"),
    (crate::EISDIR, "EISDIR"),
    (crate::ENOENT, "ENOENT"),
    (crate::ENOMEM, "ENOMEM"),
    (crate::ENOSPC, "ENOSPC"),
    (crate::EIO, "EIO"),
    (crate::ENOTEMPTY, "ENOTEMPTY"),
    (crate::ENOSYS, "ENOSYS"),
    (crate::EROFS, "EROFS"),
    (crate::EBUSY, "EBUSY"),
    (crate::EAGAIN, "EAGAIN"),
    (crate::EISCONN, "EISCONN"),
    (crate::E2BIG, "E2BIG"),
    (crate::EPERM, "EPERM"),
];

/// Maps the payload of an `XS_ERROR` reply (an error name, optionally
/// NUL-terminated) to its errno value; unknown names are `None`.
pub fn xsd_error_from_name(payload: &[u8]) -> Option<i32> {
    let name = match payload {
        [rest @ .., 0] => rest,
        p => p,
    };
    XSD_ERRORS
        .iter()
        .find(|(_, n)| n.as_bytes() == name)
        .map(|(e, _)| *e)
}

/// Message header (xs_wire.h `struct xsd_sockmsg`, 16 bytes).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct XsdSockmsg {
    /// `XS_*` (kept as an integer; see [`XsdSockmsgType`]).
    pub r#type: u32,
    /// Request id, echoed in the reply.
    pub req_id: u32,
    /// Transaction id, 0 for none.
    pub tx_id: u32,
    /// Payload length in bytes.
    pub len: u32,
}
crate::assert_layout!(XsdSockmsg, 16, { r#type: 0, req_id: 4, tx_id: 8, len: 12 });

/// Why a message header is unacceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XsdSockmsgError {
    /// Unknown message type (the value is returned).
    UnknownType(u32),
    /// Payload longer than [`XENSTORE_PAYLOAD_MAX`].
    TooLong(u32),
}

impl XsdSockmsg {
    /// Checks a header read from a peer: known type and bounded length.
    pub fn check(&self) -> Result<XsdSockmsgType, XsdSockmsgError> {
        let ty = XsdSockmsgType::try_from(self.r#type).map_err(XsdSockmsgError::UnknownType)?;
        if self.len as usize > XENSTORE_PAYLOAD_MAX {
            return Err(XsdSockmsgError::TooLong(self.len));
        }
        Ok(ty)
    }
}

/// A xenstore ring index, free-running (xs_wire.h `XENSTORE_RING_IDX`).
pub type XenstoreRingIdx = u32;
/// Size of each xenstore byte ring (xs_wire.h `XENSTORE_RING_SIZE`).
pub const XENSTORE_RING_SIZE: usize = 1024;

/// Masks a free-running index into a xenstore ring (xs_wire.h `MASK_XENSTORE_IDX`).
pub const fn MASK_XENSTORE_IDX(idx: XenstoreRingIdx) -> usize {
    idx as usize & (XENSTORE_RING_SIZE - 1)
}

/// Largest message payload (xs_wire.h `XENSTORE_PAYLOAD_MAX`).
pub const XENSTORE_PAYLOAD_MAX: usize = 4096;
/// Longest absolute path (xs_wire.h `XENSTORE_ABS_PATH_MAX`).
pub const XENSTORE_ABS_PATH_MAX: usize = 3072;
/// Longest relative path (xs_wire.h `XENSTORE_REL_PATH_MAX`).
pub const XENSTORE_REL_PATH_MAX: usize = 2048;
/// Server feature: reconnection via `connection` (xs_wire.h `XENSTORE_SERVER_FEATURE_RECONNECTION`).
pub const XENSTORE_SERVER_FEATURE_RECONNECTION: u32 = 1;
/// Server feature: the `error` field (xs_wire.h `XENSTORE_SERVER_FEATURE_ERROR`).
pub const XENSTORE_SERVER_FEATURE_ERROR: u32 = 2;
/// Server feature: watch depth (xs_wire.h `XENSTORE_SERVER_FEATURE_WATCHDEPTH`).
pub const XENSTORE_SERVER_FEATURE_WATCHDEPTH: u32 = 4;
/// Server feature: `DOMID_ANY` in permissions (xs_wire.h `XENSTORE_SERVER_FEATURE_DOMID_ANY`).
pub const XENSTORE_SERVER_FEATURE_DOMID_ANY: u32 = 8;
/// `connection`: connected (xs_wire.h `XENSTORE_CONNECTED`).
pub const XENSTORE_CONNECTED: u32 = 0;
/// `connection`: the guest asks for a reconnect (xs_wire.h `XENSTORE_RECONNECT`).
pub const XENSTORE_RECONNECT: u32 = 1;
/// `error`: none (xs_wire.h `XENSTORE_ERROR_NONE`).
pub const XENSTORE_ERROR_NONE: u32 = 0;
/// `error`: communication problem (xs_wire.h `XENSTORE_ERROR_COMM`).
pub const XENSTORE_ERROR_COMM: u32 = 1;
/// `error`: invalid ring index (xs_wire.h `XENSTORE_ERROR_RINGIDX`).
pub const XENSTORE_ERROR_RINGIDX: u32 = 2;
/// `error`: protocol violation (xs_wire.h `XENSTORE_ERROR_PROTO`).
pub const XENSTORE_ERROR_PROTO: u32 = 3;

/// The xenstore ring page (xs_wire.h `struct xenstore_domain_interface`).
///
/// # Concurrency
/// The guest writes `req[]`, `req_prod` and `rsp_cons`; the server writes
/// `rsp[]`, `rsp_prod`, `req_cons`, `server_features` and `error`. Both may
/// write `connection`. A valid state has `prod - cons <= 1024` on each ring.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct XenstoreDomainInterface {
    /// Requests, guest to server.
    pub req: [u8; XENSTORE_RING_SIZE],
    /// Replies and watch events, server to guest.
    pub rsp: [u8; XENSTORE_RING_SIZE],
    /// Request consumer index (server).
    pub req_cons: XenstoreRingIdx,
    /// Request producer index (guest).
    pub req_prod: XenstoreRingIdx,
    /// Reply consumer index (guest).
    pub rsp_cons: XenstoreRingIdx,
    /// Reply producer index (server).
    pub rsp_prod: XenstoreRingIdx,
    /// `XENSTORE_SERVER_FEATURE_*`.
    pub server_features: u32,
    /// `XENSTORE_CONNECTED` or `XENSTORE_RECONNECT`.
    pub connection: u32,
    /// `XENSTORE_ERROR_*`.
    pub error: u32,
    /// Event channel port of the ring (newer Xen).
    pub evtchn_port: u32,
}
crate::assert_layout!(XenstoreDomainInterface, 2080, {
    req: 0, rsp: 1024, req_cons: 2048, req_prod: 2052, rsp_cons: 2056, rsp_prod: 2060,
    server_features: 2064, connection: 2068, error: 2072, evtchn_port: 2076,
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_types_checked() {
        for v in 0..XS_TYPE_COUNT {
            match XsdSockmsgType::try_from(v) {
                Ok(t) => assert_eq!(u32::from(t), v),
                Err(e) => assert_eq!((v, e), (20, 20), "only 20 is a hole"),
            }
        }
        assert_eq!(XsdSockmsgType::try_from(XS_TYPE_COUNT), Err(27));
        assert_eq!(XsdSockmsgType::try_from(XS_INVALID), Err(0xffff));
        assert_eq!(XsdSockmsgType::try_from(u32::MAX), Err(u32::MAX));
    }

    #[test]
    fn header_from_ring_bytes() {
        let mut raw = [0u8; 16 + 4];
        raw[0..4].copy_from_slice(&XS_READ.to_le_bytes());
        raw[4..8].copy_from_slice(&9u32.to_le_bytes());
        raw[12..16].copy_from_slice(&4u32.to_le_bytes());
        raw[16..20].copy_from_slice(b"name");
        let (hdr, payload) = XsdSockmsg::read_from_prefix(&raw[..]).unwrap();
        assert_eq!(hdr.check(), Ok(XsdSockmsgType::Read));
        assert_eq!((hdr.req_id, payload), (9, &b"name"[..]));
        assert!(XsdSockmsg::read_from_prefix(&raw[..15]).is_err());
        // A misaligned view is refused, a copy is not.
        #[repr(C, align(4))]
        struct Aligned([u8; 20]);
        let aligned = Aligned(raw);
        assert!(XsdSockmsg::ref_from_prefix(&aligned.0[..]).is_ok());
        assert!(XsdSockmsg::ref_from_prefix(&aligned.0[1..]).is_err());
        assert!(XsdSockmsg::read_from_prefix(&aligned.0[1..]).is_ok());
    }

    #[test]
    fn header_check_rejects_hostile_values() {
        let bad_type = XsdSockmsg {
            r#type: 20,
            req_id: 0,
            tx_id: 0,
            len: 0,
        };
        assert_eq!(bad_type.check(), Err(XsdSockmsgError::UnknownType(20)));
        let long = XsdSockmsg {
            r#type: XS_WRITE,
            req_id: 0,
            tx_id: 0,
            len: 4097,
        };
        assert_eq!(long.check(), Err(XsdSockmsgError::TooLong(4097)));
        let huge = XsdSockmsg {
            len: u32::MAX,
            ..long
        };
        assert_eq!(huge.check(), Err(XsdSockmsgError::TooLong(u32::MAX)));
        let max = XsdSockmsg { len: 4096, ..long };
        assert_eq!(max.check(), Ok(XsdSockmsgType::Write));
    }

    #[test]
    fn error_names() {
        assert_eq!(xsd_error_from_name(b"ENOENT\0"), Some(crate::ENOENT));
        assert_eq!(xsd_error_from_name(b"EPERM"), Some(crate::EPERM));
        assert_eq!(xsd_error_from_name(b"ENOENT\0\0"), None);
        assert_eq!(xsd_error_from_name(b""), None);
        assert_eq!(xsd_error_from_name(b"EFAULT"), None, "not in xsd_errors");
    }

    #[test]
    fn ring_mask() {
        assert_eq!(MASK_XENSTORE_IDX(1024), 0);
        assert_eq!(MASK_XENSTORE_IDX(u32::MAX), 1023);
    }
}
