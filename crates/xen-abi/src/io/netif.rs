//! The network device ring protocol: `xen/include/public/io/netif.h`.

use crate::GrantRef;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Minimum number of slots a back end must accept per packet (netif.h `XEN_NETIF_NR_SLOTS_MIN`).
pub const XEN_NETIF_NR_SLOTS_MIN: u32 = 18;
/// Largest transmit packet (netif.h `XEN_NETIF_MAX_TX_SIZE`).
pub const XEN_NETIF_MAX_TX_SIZE: u32 = 0xFFFF;

/// Bit number of `NETTXF_csum_blank` (netif.h `_NETTXF_csum_blank`).
pub const _NETTXF_csum_blank: u16 = 0;
/// Tx flag: checksum still to be computed (netif.h `NETTXF_csum_blank`).
pub const NETTXF_csum_blank: u16 = 1 << _NETTXF_csum_blank;
/// Bit number of `NETTXF_data_validated` (netif.h `_NETTXF_data_validated`).
pub const _NETTXF_data_validated: u16 = 1;
/// Tx flag: checksum already validated (netif.h `NETTXF_data_validated`).
pub const NETTXF_data_validated: u16 = 1 << _NETTXF_data_validated;
/// Bit number of `NETTXF_more_data` (netif.h `_NETTXF_more_data`).
pub const _NETTXF_more_data: u16 = 2;
/// Tx flag: more slots of this packet follow (netif.h `NETTXF_more_data`).
pub const NETTXF_more_data: u16 = 1 << _NETTXF_more_data;
/// Bit number of `NETTXF_extra_info` (netif.h `_NETTXF_extra_info`).
pub const _NETTXF_extra_info: u16 = 3;
/// Tx flag: a [`NetifExtraInfo`] slot follows (netif.h `NETTXF_extra_info`).
pub const NETTXF_extra_info: u16 = 1 << _NETTXF_extra_info;

/// Bit number of `NETRXF_data_validated` (netif.h `_NETRXF_data_validated`).
pub const _NETRXF_data_validated: u16 = 0;
/// Rx flag: checksum validated (netif.h `NETRXF_data_validated`).
pub const NETRXF_data_validated: u16 = 1 << _NETRXF_data_validated;
/// Bit number of `NETRXF_csum_blank` (netif.h `_NETRXF_csum_blank`).
pub const _NETRXF_csum_blank: u16 = 1;
/// Rx flag: checksum blank (netif.h `NETRXF_csum_blank`).
pub const NETRXF_csum_blank: u16 = 1 << _NETRXF_csum_blank;
/// Bit number of `NETRXF_more_data` (netif.h `_NETRXF_more_data`).
pub const _NETRXF_more_data: u16 = 2;
/// Rx flag: more slots follow (netif.h `NETRXF_more_data`).
pub const NETRXF_more_data: u16 = 1 << _NETRXF_more_data;
/// Bit number of `NETRXF_extra_info` (netif.h `_NETRXF_extra_info`).
pub const _NETRXF_extra_info: u16 = 3;
/// Rx flag: an extra-info slot follows (netif.h `NETRXF_extra_info`).
pub const NETRXF_extra_info: u16 = 1 << _NETRXF_extra_info;
/// Bit number of `NETRXF_gso_prefix` (netif.h `_NETRXF_gso_prefix`).
pub const _NETRXF_gso_prefix: u16 = 4;
/// Rx flag: GSO prefix slot (netif.h `NETRXF_gso_prefix`).
pub const NETRXF_gso_prefix: u16 = 1 << _NETRXF_gso_prefix;

/// Extra info type: none (netif.h `XEN_NETIF_EXTRA_TYPE_NONE`).
pub const XEN_NETIF_EXTRA_TYPE_NONE: u8 = 0;
/// Extra info type: GSO (netif.h `XEN_NETIF_EXTRA_TYPE_GSO`).
pub const XEN_NETIF_EXTRA_TYPE_GSO: u8 = 1;
/// Extra info type: add multicast address (netif.h `XEN_NETIF_EXTRA_TYPE_MCAST_ADD`).
pub const XEN_NETIF_EXTRA_TYPE_MCAST_ADD: u8 = 2;
/// Extra info type: remove multicast address (netif.h `XEN_NETIF_EXTRA_TYPE_MCAST_DEL`).
pub const XEN_NETIF_EXTRA_TYPE_MCAST_DEL: u8 = 3;
/// Extra info type: hash (netif.h `XEN_NETIF_EXTRA_TYPE_HASH`).
pub const XEN_NETIF_EXTRA_TYPE_HASH: u8 = 4;
/// Number of extra info types (netif.h `XEN_NETIF_EXTRA_TYPE_MAX`).
pub const XEN_NETIF_EXTRA_TYPE_MAX: u8 = 5;
/// Bit number of `XEN_NETIF_EXTRA_FLAG_MORE` (netif.h `_XEN_NETIF_EXTRA_FLAG_MORE`).
pub const _XEN_NETIF_EXTRA_FLAG_MORE: u8 = 0;
/// Extra info flag: another extra slot follows (netif.h `XEN_NETIF_EXTRA_FLAG_MORE`).
pub const XEN_NETIF_EXTRA_FLAG_MORE: u8 = 1 << _XEN_NETIF_EXTRA_FLAG_MORE;
/// GSO type: none (netif.h `XEN_NETIF_GSO_TYPE_NONE`).
pub const XEN_NETIF_GSO_TYPE_NONE: u8 = 0;
/// GSO type: TCP over IPv4 (netif.h `XEN_NETIF_GSO_TYPE_TCPV4`).
pub const XEN_NETIF_GSO_TYPE_TCPV4: u8 = 1;
/// GSO type: TCP over IPv6 (netif.h `XEN_NETIF_GSO_TYPE_TCPV6`).
pub const XEN_NETIF_GSO_TYPE_TCPV6: u8 = 2;

/// Response status: dropped (netif.h `NETIF_RSP_DROPPED`).
pub const NETIF_RSP_DROPPED: i16 = -2;
/// Response status: error (netif.h `NETIF_RSP_ERROR`).
pub const NETIF_RSP_ERROR: i16 = -1;
/// Response status: success (netif.h `NETIF_RSP_OKAY`).
pub const NETIF_RSP_OKAY: i16 = 0;
/// Response status: no response, slot of an extra-info request (netif.h `NETIF_RSP_NULL`).
pub const NETIF_RSP_NULL: i16 = 1;

/// Bit number of `XEN_NETIF_CTRL_HASH_TYPE_IPV4` (netif.h `_XEN_NETIF_CTRL_HASH_TYPE_IPV4`).
pub const _XEN_NETIF_CTRL_HASH_TYPE_IPV4: u32 = 0;
/// Bit number of `XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP` (netif.h `_XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP`).
pub const _XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP: u32 = 1;
/// Bit number of `XEN_NETIF_CTRL_HASH_TYPE_IPV6` (netif.h `_XEN_NETIF_CTRL_HASH_TYPE_IPV6`).
pub const _XEN_NETIF_CTRL_HASH_TYPE_IPV6: u32 = 2;
/// Bit number of `XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP` (netif.h `_XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP`).
pub const _XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP: u32 = 3;
/// Control ring hash type bit: IPv4 (netif.h `XEN_NETIF_CTRL_HASH_TYPE_IPV4`).
pub const XEN_NETIF_CTRL_HASH_TYPE_IPV4: u32 = 1 << _XEN_NETIF_CTRL_HASH_TYPE_IPV4;
/// Control ring hash type bit: IPv4 + TCP (netif.h `XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP`).
pub const XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP: u32 = 1 << _XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP;
/// Control ring hash type bit: IPv6 (netif.h `XEN_NETIF_CTRL_HASH_TYPE_IPV6`).
pub const XEN_NETIF_CTRL_HASH_TYPE_IPV6: u32 = 1 << _XEN_NETIF_CTRL_HASH_TYPE_IPV6;
/// Control ring hash type bit: IPv6 + TCP (netif.h `XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP`).
pub const XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP: u32 = 1 << _XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP;
/// Hash algorithm: none (netif.h `XEN_NETIF_CTRL_HASH_ALGORITHM_NONE`).
pub const XEN_NETIF_CTRL_HASH_ALGORITHM_NONE: u32 = 0;
/// Hash algorithm: Toeplitz (netif.h `XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ`).
pub const XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ: u32 = 1;
/// Control request: invalid (netif.h `XEN_NETIF_CTRL_TYPE_INVALID`).
pub const XEN_NETIF_CTRL_TYPE_INVALID: u16 = 0;
/// Control request: get hash flags (netif.h `XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS`).
pub const XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS: u16 = 1;
/// Control request: set hash flags (netif.h `XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS`).
pub const XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS: u16 = 2;
/// Control request: set hash key (netif.h `XEN_NETIF_CTRL_TYPE_SET_HASH_KEY`).
pub const XEN_NETIF_CTRL_TYPE_SET_HASH_KEY: u16 = 3;
/// Control request: get hash mapping size (netif.h `XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE`).
pub const XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE: u16 = 4;
/// Control request: set hash mapping size (netif.h `XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE`).
pub const XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE: u16 = 5;
/// Control request: set hash mapping (netif.h `XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING`).
pub const XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING: u16 = 6;
/// Control request: set hash algorithm (netif.h `XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM`).
pub const XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM: u16 = 7;
/// Control request: get gref mapping size (netif.h `XEN_NETIF_CTRL_TYPE_GET_GREF_MAPPING_SIZE`).
pub const XEN_NETIF_CTRL_TYPE_GET_GREF_MAPPING_SIZE: u16 = 8;
/// Control request: add gref mappings (netif.h `XEN_NETIF_CTRL_TYPE_ADD_GREF_MAPPING`).
pub const XEN_NETIF_CTRL_TYPE_ADD_GREF_MAPPING: u16 = 9;
/// Control request: remove gref mappings (netif.h `XEN_NETIF_CTRL_TYPE_DEL_GREF_MAPPING`).
pub const XEN_NETIF_CTRL_TYPE_DEL_GREF_MAPPING: u16 = 10;
/// Control status: success (netif.h `XEN_NETIF_CTRL_STATUS_SUCCESS`).
pub const XEN_NETIF_CTRL_STATUS_SUCCESS: u32 = 0;
/// Control status: not supported (netif.h `XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED`).
pub const XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED: u32 = 1;
/// Control status: invalid parameter (netif.h `XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER`).
pub const XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER: u32 = 2;
/// Control status: buffer overflow (netif.h `XEN_NETIF_CTRL_STATUS_BUFFER_OVERFLOW`).
pub const XEN_NETIF_CTRL_STATUS_BUFFER_OVERFLOW: u32 = 3;
/// Bit number of `XEN_NETIF_CTRLF_GREF_readonly` (netif.h `_XEN_NETIF_CTRLF_GREF_readonly`).
pub const _XEN_NETIF_CTRLF_GREF_readonly: u16 = 0;
/// Gref mapping flag: read-only (netif.h `XEN_NETIF_CTRLF_GREF_readonly`).
pub const XEN_NETIF_CTRLF_GREF_readonly: u16 = 1 << _XEN_NETIF_CTRLF_GREF_readonly;

macro_rules! net_struct {
    ($(#[$doc:meta])* $name:ident, $size:expr, { $($(#[$fdoc:meta])* $field:ident : $ty:ty = $off:expr),* $(,)? }) => {
        $(#[$doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
        pub struct $name {
            $($(#[$fdoc])* pub $field: $ty,)*
        }
        crate::assert_layout!($name, $size, { $($field: $off),* });
    };
}

net_struct!(
    /// A transmit request: one slot of a packet (netif.h `struct netif_tx_request`, 12 bytes).
    NetifTxRequest, 12, {
        /// Grant of the page holding the data.
        gref: GrantRef = 0,
        /// Offset of the data in the page.
        offset: u16 = 4,
        /// `NETTXF_*`.
        flags: u16 = 6,
        /// Echoed in the response.
        id: u16 = 8,
        /// First slot: whole packet size; later slots: this slot's bytes.
        size: u16 = 10,
    }
);
net_struct!(
    /// A transmit response (netif.h `struct netif_tx_response`, 4 bytes).
    NetifTxResponse, 4, {
        /// The request's `id`.
        id: u16 = 0,
        /// `NETIF_RSP_*`.
        status: i16 = 2,
    }
);
net_struct!(
    /// A receive request: a buffer offered to the back end (netif.h `struct netif_rx_request`, 8 bytes).
    NetifRxRequest, 8, {
        /// Echoed in the response.
        id: u16 = 0,
        /// Padding.
        pad: u16 = 2,
        /// Grant of the buffer page.
        gref: GrantRef = 4,
    }
);
net_struct!(
    /// A receive response (netif.h `struct netif_rx_response`, 8 bytes).
    NetifRxResponse, 8, {
        /// The request's `id`.
        id: u16 = 0,
        /// Offset of the data in the page.
        offset: u16 = 2,
        /// `NETRXF_*`.
        flags: u16 = 4,
        /// Negative: `NETIF_RSP_*` error; otherwise the byte count.
        status: i16 = 6,
    }
);
net_struct!(
    /// An extra-info slot (netif.h `struct netif_extra_info`, 8 bytes). The
    /// C union `u` is kept as raw half-words; read it with the accessors
    /// matching `type`.
    NetifExtraInfo, 8, {
        /// `XEN_NETIF_EXTRA_TYPE_*`.
        r#type: u8 = 0,
        /// `XEN_NETIF_EXTRA_FLAG_*`.
        flags: u8 = 1,
        /// The union of GSO, multicast and hash details.
        u: [u16; 3] = 2,
    }
);
net_struct!(
    /// The GSO member of `netif_extra_info` (netif.h `u.gso`).
    NetifExtraInfoGso, 6, {
        /// Maximum segment size.
        size: u16 = 0,
        /// `XEN_NETIF_GSO_TYPE_*`.
        r#type: u8 = 2,
        /// Padding.
        pad: u8 = 3,
        /// GSO features, zero.
        features: u16 = 4,
    }
);
net_struct!(
    /// A control ring request (netif.h `struct xen_netif_ctrl_request`, 16 bytes).
    XenNetifCtrlRequest, 16, {
        /// Echoed in the response.
        id: u16 = 0,
        /// `XEN_NETIF_CTRL_TYPE_*`.
        r#type: u16 = 2,
        /// Type-specific arguments.
        data: [u32; 3] = 4,
    }
);
net_struct!(
    /// A control ring response (netif.h `struct xen_netif_ctrl_response`, 12 bytes).
    XenNetifCtrlResponse, 12, {
        /// The request's `id`.
        id: u16 = 0,
        /// The request's type.
        r#type: u16 = 2,
        /// `XEN_NETIF_CTRL_STATUS_*`.
        status: u32 = 4,
        /// Type-specific result.
        data: u32 = 8,
    }
);
net_struct!(
    /// A grant mapping entry of the control ring (netif.h `struct xen_netif_gref`).
    XenNetifGref, 8, {
        /// Grant reference.
        r#ref: GrantRef = 0,
        /// `XEN_NETIF_CTRLF_GREF_*`.
        flags: u16 = 4,
        /// Status written by the back end.
        status: u16 = 6,
    }
);

impl NetifExtraInfo {
    /// The union read as GSO details.
    pub fn gso(&self) -> NetifExtraInfoGso {
        zerocopy::transmute!(self.u)
    }
    /// The union read as a multicast MAC address.
    pub fn mcast_addr(&self) -> [u8; 6] {
        zerocopy::transmute!(self.u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{XEN_PAGE_SIZE, ring_size};

    #[test]
    fn ring_sizes() {
        assert_eq!(ring_size(XEN_PAGE_SIZE, 12), 256, "tx");
        assert_eq!(ring_size(XEN_PAGE_SIZE, 8), 256, "rx");
        assert_eq!(ring_size(XEN_PAGE_SIZE, 16), 128, "ctrl");
    }

    #[test]
    fn tx_request_from_bytes() {
        let raw = [1u8, 0, 0, 0, 0x10, 0, 0x04, 0, 7, 0, 0xdc, 0x05];
        let tx = NetifTxRequest::read_from_bytes(&raw[..]).unwrap();
        assert_eq!(
            tx,
            NetifTxRequest {
                gref: 1,
                offset: 0x10,
                flags: NETTXF_more_data,
                id: 7,
                size: 1500
            }
        );
        assert_eq!(tx.as_bytes(), &raw);
        assert!(NetifTxRequest::read_from_bytes(&raw[..11]).is_err());
    }

    #[test]
    fn extra_info_union() {
        let raw = [
            XEN_NETIF_EXTRA_TYPE_GSO,
            0,
            0xb4,
            0x05,
            XEN_NETIF_GSO_TYPE_TCPV4,
            0,
            0,
            0,
        ];
        let e = NetifExtraInfo::read_from_bytes(&raw[..]).unwrap();
        let gso = e.gso();
        assert_eq!((gso.size, gso.r#type), (1460, XEN_NETIF_GSO_TYPE_TCPV4));
        let raw = [XEN_NETIF_EXTRA_TYPE_MCAST_ADD, 0, 1, 0, 0x5e, 0, 0, 1];
        let e = NetifExtraInfo::read_from_bytes(&raw[..]).unwrap();
        assert_eq!(e.mcast_addr(), [1, 0, 0x5e, 0, 0, 1]);
    }
}
