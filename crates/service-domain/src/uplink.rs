//! The switch's port to the outside world: an [`Uplink`] takes and gives
//! plain Ethernet frames (a virtio-net device in the service domain, a
//! fake in the tests), so [`crate::netback`] does not care what is behind
//! it.
//!
//! Front ends send TCP segmentation offload packets (GSO, up to 64 KiB)
//! through the switch; an uplink that takes only frames of its MTU gets
//! them cut into segments first ([`segment_gso`]), checksums filled in,
//! as Linux's software GSO does.

use alloc::vec::Vec;

use xen_abi::io::netif::{XEN_NETIF_GSO_TYPE_TCPV4, XEN_NETIF_GSO_TYPE_TCPV6};

use crate::netback::{Gso, complete_checksum};

/// A port of the switch that leads outside.
pub trait Uplink {
    /// Sends one Ethernet frame (no offloads: checksums complete, at most
    /// the link's MTU). False if the device dropped it.
    fn send(&mut self, frame: &[u8]) -> bool;
    /// Takes the next frame received, if any.
    fn recv(&mut self) -> Option<Vec<u8>>;
}

/// Counters of the uplink port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UplinkStats {
    /// Frames sent out (after segmentation).
    pub tx_frames: u64,
    /// Frames the device refused, or packets that could not be segmented.
    pub tx_dropped: u64,
    /// Frames received from outside.
    pub rx_frames: u64,
}

/// Most segments one GSO packet is cut into; a packet that would need
/// more (a made-up tiny MSS) is dropped rather than cost thousands of
/// frames.
pub const MAX_GSO_SEGS: usize = 128;

const ETH_HLEN: usize = 14;

/// Cuts a TCPv4 or TCPv6 GSO packet into frames of at most `gso.size`
/// payload bytes each: headers copied, IP lengths (and the IPv4 ID and
/// header checksum) and the TCP sequence number adjusted, FIN and PSH
/// only on the last segment and CWR only on the first, TCP checksums
/// computed. `None` for anything else (VLAN tags, IPv6 extension headers,
/// a header that does not add up, more than [`MAX_GSO_SEGS`] segments).
pub fn segment_gso(f: &[u8], gso: Gso) -> Option<Vec<Vec<u8>>> {
    let mss = usize::from(gso.size);
    if mss == 0 {
        return None;
    }
    let ethertype = u16::from_be_bytes([*f.get(12)?, *f.get(13)?]);
    let (v4, iphl, ip_end) = match (ethertype, gso.kind) {
        (0x0800, XEN_NETIF_GSO_TYPE_TCPV4) => {
            let vihl = *f.get(ETH_HLEN)?;
            let ihl = usize::from(vihl & 0xf) * 4;
            let tot = usize::from(u16::from_be_bytes([
                *f.get(ETH_HLEN + 2)?,
                *f.get(ETH_HLEN + 3)?,
            ]));
            if vihl >> 4 != 4 || ihl < 20 || *f.get(ETH_HLEN + 9)? != 6 || tot < ihl {
                return None;
            }
            (true, ihl, ETH_HLEN + tot)
        }
        (0x86dd, XEN_NETIF_GSO_TYPE_TCPV6) => {
            let plen = usize::from(u16::from_be_bytes([
                *f.get(ETH_HLEN + 4)?,
                *f.get(ETH_HLEN + 5)?,
            ]));
            if *f.get(ETH_HLEN)? >> 4 != 6 || *f.get(ETH_HLEN + 6)? != 6 {
                return None;
            }
            (false, 40, ETH_HLEN + 40 + plen)
        }
        _ => return None,
    };
    let tcp = ETH_HLEN + iphl;
    let thl = usize::from(*f.get(tcp + 12)? >> 4) * 4;
    let hdr = tcp + thl;
    if thl < 20 || hdr > ip_end || ip_end > f.len() {
        return None;
    }
    let payload = &f[hdr..ip_end];
    let n = payload.len().div_ceil(mss).max(1);
    if n > MAX_GSO_SEGS {
        return None;
    }
    let seq = u32::from_be_bytes(f[tcp + 4..tcp + 8].try_into().ok()?);
    let id = u16::from_be_bytes([f[ETH_HLEN + 4], f[ETH_HLEN + 5]]);
    let mut out = Vec::with_capacity(n);
    for (k, chunk) in payload.chunks(mss).enumerate() {
        let mut s = Vec::with_capacity(hdr + chunk.len());
        s.extend_from_slice(&f[..hdr]);
        s.extend_from_slice(chunk);
        let l3 = iphl + thl + chunk.len();
        if v4 {
            s[ETH_HLEN + 2..ETH_HLEN + 4].copy_from_slice(&(l3 as u16).to_be_bytes());
            s[ETH_HLEN + 4..ETH_HLEN + 6].copy_from_slice(&id.wrapping_add(k as u16).to_be_bytes());
            s[ETH_HLEN + 10] = 0;
            s[ETH_HLEN + 11] = 0;
            let c = ip_checksum(&s[ETH_HLEN..ETH_HLEN + iphl]);
            s[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&c.to_be_bytes());
        } else {
            s[ETH_HLEN + 4..ETH_HLEN + 6]
                .copy_from_slice(&((thl + chunk.len()) as u16).to_be_bytes());
        }
        let sq = seq.wrapping_add((k * mss) as u32);
        s[tcp + 4..tcp + 8].copy_from_slice(&sq.to_be_bytes());
        // FIN 0x01 and PSH 0x08 on the last segment only, CWR 0x80 on
        // the first only.
        if k + 1 < n {
            s[tcp + 13] &= !0x09;
        }
        if k > 0 {
            s[tcp + 13] &= !0x80;
        }
        if !complete_checksum(&mut s) {
            return None;
        }
        out.push(s);
    }
    if out.is_empty() {
        // A GSO packet without payload: the headers alone.
        let mut s = f[..ip_end].to_vec();
        if !complete_checksum(&mut s) {
            return None;
        }
        out.push(s);
    }
    Some(out)
}

/// The IPv4 header checksum of `h` (its checksum field zeroed).
fn ip_checksum(h: &[u8]) -> u16 {
    let mut s = 0u32;
    for w in h.chunks(2) {
        s += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 TCP frame with `payload` bytes, flags PSH|ACK|FIN|CWR.
    fn tcp4(payload: usize) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20 + payload];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[6..12].copy_from_slice(&[0, 0x16, 0x3e, 0, 0, 2]);
        f[12] = 0x08;
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
        f[18..20].copy_from_slice(&7u16.to_be_bytes());
        f[22] = 64;
        f[23] = 6;
        f[26..30].copy_from_slice(&[10, 0, 2, 15]);
        f[30..34].copy_from_slice(&[10, 0, 2, 2]);
        f[34..36].copy_from_slice(&80u16.to_be_bytes());
        f[36..38].copy_from_slice(&5555u16.to_be_bytes());
        f[38..42].copy_from_slice(&1000u32.to_be_bytes());
        f[46] = 0x50;
        f[47] = 0x80 | 0x10 | 0x08 | 0x01;
        for (i, b) in f[54..].iter_mut().enumerate() {
            *b = i as u8;
        }
        f
    }

    fn gso4(size: u16) -> Gso {
        Gso {
            kind: XEN_NETIF_GSO_TYPE_TCPV4,
            size,
        }
    }

    #[test]
    fn tcp4_segments_add_up() {
        let f = tcp4(3000);
        let segs = segment_gso(&f, gso4(1448)).unwrap();
        assert_eq!(segs.len(), 3);
        let mut data = Vec::new();
        for (k, s) in segs.iter().enumerate() {
            let plen = s.len() - 54;
            assert_eq!(plen, [1448, 1448, 104][k]);
            assert_eq!(u16::from_be_bytes([s[16], s[17]]) as usize, 40 + plen);
            assert_eq!(u16::from_be_bytes([s[18], s[19]]), 7 + k as u16);
            assert_eq!(
                u32::from_be_bytes(s[38..42].try_into().unwrap()),
                1000 + 1448 * k as u32
            );
            let flags = s[47];
            assert_eq!(flags & 0x09 != 0, k == 2, "FIN/PSH on the last only");
            assert_eq!(flags & 0x80 != 0, k == 0, "CWR on the first only");
            assert_eq!(ip_checksum(&s[14..34]), 0, "IP header checksum");
            // The TCP checksum verifies: recomputing gives the same.
            let mut c = s.clone();
            assert!(complete_checksum(&mut c));
            assert_eq!(&c, s);
            data.extend_from_slice(&s[54..]);
        }
        assert_eq!(data, &f[54..]);
    }

    #[test]
    fn refuses_what_it_cannot_cut() {
        let f = tcp4(3000);
        assert_eq!(segment_gso(&f, gso4(0)), None);
        assert_eq!(segment_gso(&f, gso4(8)), None, "too many segments");
        let v6 = Gso {
            kind: XEN_NETIF_GSO_TYPE_TCPV6,
            size: 1000,
        };
        assert_eq!(segment_gso(&f, v6), None, "kind and frame disagree");
        assert_eq!(segment_gso(&f[..40], gso4(1000)), None);
        let mut bad = f.clone();
        bad[16..18].copy_from_slice(&9000u16.to_be_bytes());
        assert_eq!(segment_gso(&bad, gso4(1000)), None, "length past the frame");
        let mut udp = f;
        udp[23] = 17;
        assert_eq!(segment_gso(&udp, gso4(1000)), None);
    }
}
