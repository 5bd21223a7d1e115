//! The network back end: one [`Vif`] per virtual interface, each with
//! its own xenbus state machine, serving `netif` rings
//! (`xen/include/public/io/netif.h`) as Linux 6.1's `xen-netfront` drives
//! them, and joining every vif to one [`Switch`].
//!
//! # Handshake
//!
//! 1. [`Netback::add_vif`] writes the front-end directory
//!    `/local/domain/<fe>/device/vif/<handle>` (`backend`, `backend-id`,
//!    `state`=1, `handle`, `mac`; owner the front end, readable by us) and
//!    the back-end directory `/local/domain/<be>/backend/vif/<fe>/<handle>`
//!    (`frontend`, `frontend-id`, `online`, `handle`, `mac` and the
//!    features: `feature-rx-copy`=1, which netfront requires,
//!    `feature-rx-flip`=0, `feature-sg`, `feature-gso-tcpv4`/`-tcpv6`,
//!    and `feature-split-event-channels` only when asked to
//!    ([`Netback::set_split_event_channels`]: one channel for both rings
//!    lets a pass's tx completions and received packets share one
//!    event), then goes `InitWait` (2).
//! 2. [`Netback::sync`] reads each front end's `state` after every store
//!    pump. netfront writes `tx-ring-ref`, `rx-ring-ref`, `event-channel`
//!    (or `event-channel-tx` + `event-channel-rx`), `request-rx-copy`=1,
//!    `feature-rx-notify`=1 and its features, then goes straight to
//!    `Connected`: we map both rings, bind the port(s) and go `Connected`.
//!    A front end without `request-rx-copy` or `feature-rx-notify` is
//!    refused (as Linux netback refuses it): `error` is written and we go
//!    `Closing`.
//! 3. `Closing`/`Closed` and a front end back at `Initialising` work as
//!    in [`crate::blkback`]: a reconnecting front end finds us at
//!    `InitWait` again.
//!
//! # Data path
//!
//! Transmit: [`take_packet`] reads one packet's slots off the tx ring
//! (first slot, GSO/multicast extras, `NETTXF_more_data` fragments) and
//! checks them; the packets of one pass are copied out with one batched
//! grant copy ([`copy_all`] over [`BlkPlatform::copy`]; on failure, packet by packet to
//! find the bad grant), answered slot by slot (`NETIF_RSP_NULL` for
//! extras), checksummed when the front end left the checksum blank
//! ([`complete_checksum`], not for GSO packets, which keep the flag) and
//! handed to the switch. A packet whose shape is wrong (a slot past its
//! page, a size that does not add up, too many slots) is answered
//! `NETIF_RSP_ERROR`; a ring that cannot be parsed at all (a packet cut
//! short or longer than the ring, an unknown extra, impossible indices)
//! disconnects that vif and no other.
//!
//! Receive: each vif has a bounded queue ([`RX_QUEUE`]; a full queue
//! drops). A packet goes out when the front end has posted enough buffers
//! for it (one page each, plus one slot for a GSO extra; otherwise
//! `req_event` is set so that its next buffers raise an event); the data
//! is copied into the granted pages with one grant copy per pass and
//! answered in the request's slot, netfront's order: first data slot,
//! extra, the other data slots.
//!
//! Both rings suppress notifications: requests are taken until the ring
//! is empty and `RING_FINAL_CHECK_FOR_REQUESTS` finds none, responses
//! raise an event only when the front end's `rsp_event` asks for it, and
//! the events of a pass go out at its end, one per port (a front end
//! with one event channel gets one for both rings).
//!
//! Fairness: [`Netback::pump`] serves the vifs' tx rings in turn from a
//! rotating start, at most [`TX_BUDGET`] packets each per pass, so a
//! flooding domain costs the others at most its budget per pass.

// Xen's names for the xenbus states and netif flags.
#![allow(non_upper_case_globals)]

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use pv_rings::{BackRing, RingError, SharedMem};
use xen_abi::io::netif::*;
use xen_abi::io::xenbus::*;
use zerocopy::{FromBytes, IntoBytes};

use crate::blkback::{BlkPlatform, CopyDir, CopySeg, MapId, copy_all};
use crate::switch::{Forward, MAC_TABLE_SIZE, Mac, Switch};
use crate::uplink::{Uplink, UplinkStats, segment_gso};
use crate::xenbus::{self, Step, read_u32};
use crate::xenstore::{Errno, Platform, StoreService};

/// The switch port of the uplink ([`Netback::set_uplink`]); the vifs are
/// ports 0, 1, .. in order.
pub const UPLINK_PORT: u32 = u32::MAX;
/// Packets taken from one vif's tx ring per [`Netback::pump`] pass (and
/// frames from the uplink).
pub const TX_BUDGET: usize = 64;
/// Packets queued for one vif's rx ring at most (more are dropped).
pub const RX_QUEUE: usize = 256;
/// Of which one source vif may hold at most this many: a flooding domain
/// cannot crowd the others out of a queue.
pub const RX_QUEUE_PER_SOURCE: usize = RX_QUEUE / 2;
/// Bytes queued for one vif at most (and half of it from one source):
/// the service domain's heap is small and GSO packets reach 64 KiB.
pub const RX_QUEUE_BYTES: usize = 1 << 20;
/// Bytes taken from one tx ring per pass at most (besides [`TX_BUDGET`]).
pub const TX_BATCH_BYTES: usize = 256 << 10;
/// Packets delivered to one vif per pass.
pub const RX_BUDGET: usize = 64;
/// Data slots of one packet, at most (netif.h `XEN_NETIF_NR_SLOTS_MIN`;
/// netfront drops received packets of more).
pub const MAX_SLOTS: usize = XEN_NETIF_NR_SLOTS_MIN as usize;
/// Extras after one first slot, at most.
const MAX_EXTRAS: usize = XEN_NETIF_EXTRA_TYPE_MAX as usize - 1;
const PAGE: usize = 4096;
const ETH_HLEN: usize = 14;

/// Xen's default MAC for `handle` of domain `domid`: the `00:16:3e`
/// prefix (Xen's OUI), then the handle and the domain id.
pub fn default_mac(domid: u16, handle: u32) -> Mac {
    let d = domid.to_be_bytes();
    [0x00, 0x16, 0x3e, (handle & 0x7f) as u8, d[0], d[1]]
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(m: &Mac) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// Parses `aa:bb:cc:dd:ee:ff` (a unicast address).
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut m {
        let p = parts.next()?;
        if p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    (parts.next().is_none() && m[0] & 1 == 0).then_some(m)
}

/// GSO information of a packet (from a `XEN_NETIF_EXTRA_TYPE_GSO` extra).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gso {
    /// `XEN_NETIF_GSO_TYPE_TCPV4` or `_TCPV6`.
    pub kind: u8,
    /// Segment size (MSS), not 0.
    pub size: u16,
}

/// A packet in flight through the switch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// The Ethernet frame.
    pub data: Vec<u8>,
    /// The checksum is still to be filled in (GSO packets only: the
    /// others are completed on transmit).
    pub csum_blank: bool,
    /// The checksum is known good.
    pub data_validated: bool,
    /// Segmentation offload.
    pub gso: Option<Gso>,
}

/// One transmit packet as read off the ring.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxPacket {
    /// The responses owed, in ring order: the request id and whether the
    /// slot was an extra (answered `NETIF_RSP_NULL`).
    pub slots: Vec<(u16, bool)>,
    /// Where the data is; `local` counts from the packet's start.
    pub segs: Vec<CopySeg>,
    /// Bytes.
    pub len: usize,
    /// The first slot's flags.
    pub flags: u16,
    /// From a GSO extra.
    pub gso: Option<Gso>,
    /// Why the packet is refused (answered `NETIF_RSP_ERROR`).
    pub bad: Option<&'static str>,
}

/// A ring that cannot be parsed: the vif is disconnected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxFatal {
    /// The ring's indices are impossible.
    Ring(RingError),
    /// The packet's slots are malformed beyond answering.
    Protocol(&'static str),
}

impl From<RingError> for TxFatal {
    fn from(e: RingError) -> Self {
        Self::Ring(e)
    }
}

/// Reads the next packet off a tx ring: `Ok(None)` if none is published.
/// Every slot consumed is listed in the packet's `slots`, so every one
/// gets its response. Never panics, whatever the ring holds; consumes at
/// most the ring's size of slots.
pub fn take_packet<M: SharedMem>(
    ring: &mut BackRing<M, NetifTxRequest, NetifTxResponse>,
) -> Result<Option<TxPacket>, TxFatal> {
    let Some(first) = ring.pop_request()? else {
        return Ok(None);
    };
    let limit = ring.size() as usize;
    let mut p = TxPacket {
        flags: first.flags,
        ..TxPacket::default()
    };
    p.slots.push((first.id, false));
    let cut = TxFatal::Protocol("packet cut short");
    if first.flags & NETTXF_extra_info != 0 {
        loop {
            if p.slots.len() > MAX_EXTRAS {
                return Err(TxFatal::Protocol("too many extras"));
            }
            let raw = ring.pop_request()?.ok_or(cut)?;
            p.slots.push((0, true));
            let e = NetifExtraInfo::read_from_prefix(raw.as_bytes())
                .map(|(e, _)| e)
                .map_err(|_| TxFatal::Protocol("extra"))?;
            match e.r#type {
                XEN_NETIF_EXTRA_TYPE_GSO => {
                    let g = e.gso();
                    if g.size == 0
                        || !matches!(
                            g.r#type,
                            XEN_NETIF_GSO_TYPE_TCPV4 | XEN_NETIF_GSO_TYPE_TCPV6
                        )
                    {
                        p.bad = Some("bad GSO extra");
                    } else {
                        p.gso = Some(Gso {
                            kind: g.r#type,
                            size: g.size,
                        });
                    }
                }
                XEN_NETIF_EXTRA_TYPE_MCAST_ADD | XEN_NETIF_EXTRA_TYPE_MCAST_DEL => {}
                _ => return Err(TxFatal::Protocol("unknown extra type")),
            }
            if e.flags & XEN_NETIF_EXTRA_FLAG_MORE == 0 {
                break;
            }
        }
    }
    let mut data = vec![first];
    let mut last = first;
    while last.flags & NETTXF_more_data != 0 {
        if p.slots.len() >= limit {
            return Err(TxFatal::Protocol("packet longer than the ring"));
        }
        last = ring.pop_request()?.ok_or(cut)?;
        p.slots.push((last.id, false));
        data.push(last);
    }
    if p.bad.is_none() {
        p.bad = check_slots(&data, &mut p);
    }
    if p.bad.is_some() {
        p.segs.clear();
        p.len = 0;
    }
    Ok(Some(p))
}

/// Checks the data slots of a packet and fills in its copy segments.
fn check_slots(data: &[NetifTxRequest], p: &mut TxPacket) -> Option<&'static str> {
    if data.len() > MAX_SLOTS {
        return Some("too many slots");
    }
    if data[1..].iter().any(|r| r.flags & NETTXF_extra_info != 0) {
        return Some("extra info on a later slot");
    }
    let total = usize::from(data[0].size);
    let rest: usize = data[1..].iter().map(|r| usize::from(r.size)).sum();
    if total < ETH_HLEN || rest >= total {
        return Some("sizes do not add up");
    }
    let mut local = 0;
    for (k, r) in data.iter().enumerate() {
        let len = if k == 0 {
            total - rest
        } else {
            usize::from(r.size)
        };
        if usize::from(r.offset) + len > PAGE {
            return Some("slot past its page");
        }
        if len == 0 {
            continue;
        }
        p.segs.push(CopySeg {
            gref: r.gref,
            offset: r.offset,
            len: len as u16,
            local,
            dir: CopyDir::FromGuest,
        });
        local += len;
    }
    p.len = local;
    None
}

/// Fills in the TCP or UDP checksum of an IPv4 or IPv6 frame whose front
/// end left it blank (`NETTXF_csum_blank`), computed from scratch.
/// Returns false (the frame unchanged) for anything else or a frame too
/// short for its headers.
pub fn complete_checksum(f: &mut [u8]) -> bool {
    let Some(&[t0, t1]) = f.get(12..14) else {
        return false;
    };
    let (proto, l4, pseudo) = match u16::from_be_bytes([t0, t1]) {
        0x0800 => {
            let Some(&vihl) = f.get(ETH_HLEN) else {
                return false;
            };
            let ihl = usize::from(vihl & 0xf) * 4;
            let Some(ip) = f.get(ETH_HLEN..ETH_HLEN + 20) else {
                return false;
            };
            let tot = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            if vihl >> 4 != 4 || ihl < 20 || tot < ihl || ETH_HLEN + tot > f.len() {
                return false;
            }
            // Fragments other than the first carry no L4 header.
            if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
                return false;
            }
            let proto = ip[9];
            let len = tot - ihl;
            let mut s = sum(0, &ip[12..20]);
            s += u32::from(proto) + len as u32;
            (proto, ETH_HLEN + ihl..ETH_HLEN + tot, s)
        }
        0x86dd => {
            let Some(ip) = f.get(ETH_HLEN..ETH_HLEN + 40) else {
                return false;
            };
            let len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            let start = ETH_HLEN + 40;
            if start + len > f.len() {
                return false;
            }
            let proto = ip[6];
            let mut s = sum(0, &ip[8..40]);
            s += u32::from(proto) + len as u32;
            (proto, start..start + len, s)
        }
        _ => return false,
    };
    let at = match proto {
        6 => 16,
        17 => 6,
        _ => return false,
    };
    let Some(seg) = f.get_mut(l4) else {
        return false;
    };
    if seg.len() < at + 2 {
        return false;
    }
    seg[at] = 0;
    seg[at + 1] = 0;
    let mut c = !fold(sum(pseudo, seg));
    if proto == 17 && c == 0 {
        c = 0xffff;
    }
    seg[at..at + 2].copy_from_slice(&c.to_be_bytes());
    true
}

fn sum(mut s: u32, b: &[u8]) -> u32 {
    let mut it = b.chunks_exact(2);
    for w in &mut it {
        s = fold_once(s + u32::from(u16::from_be_bytes([w[0], w[1]])));
    }
    if let [x] = it.remainder() {
        s = fold_once(s + (u32::from(*x) << 8));
    }
    s
}

fn fold_once(s: u32) -> u32 {
    (s & 0xffff) + (s >> 16)
}

fn fold(s: u32) -> u16 {
    fold_once(fold_once(s)) as u16
}

/// Counters of one vif.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VifStats {
    /// Packets sent by the front end and accepted.
    pub tx_packets: u64,
    /// Packets sent by the front end and refused (`NETIF_RSP_ERROR`).
    pub tx_errors: u64,
    /// Packets delivered to the front end.
    pub rx_packets: u64,
    /// Packets for the front end dropped (queue full, too big, copy
    /// failed, an offload it did not ask for).
    pub rx_dropped: u64,
    /// Events sent for tx responses.
    pub tx_events: u64,
    /// Events sent for rx responses.
    pub rx_events: u64,
    /// Connections made (1 + reconnects).
    pub connects: u32,
}

struct Conn<R> {
    tx: BackRing<R, NetifTxRequest, NetifTxResponse>,
    rx: BackRing<R, NetifRxRequest, NetifRxResponse>,
    maps: [MapId; 2],
    /// Tx and rx ports (the same one without split event channels).
    ports: [u32; 2],
    /// What the front end takes on rx.
    sg: bool,
    gso4: bool,
    gso6: bool,
}

/// One virtual network interface.
pub struct Vif<R> {
    fe: u16,
    handle: u32,
    mac: Mac,
    state: u32,
    conn: Option<Conn<R>>,
    /// Offered to a live domain (false between [`Netback::domain_gone`]
    /// and [`Netback::domain_back`]).
    offered: bool,
    /// Packets waiting for rx buffers, with the vif they came from.
    rxq: VecDeque<(u32, Packet)>,
    /// Packets and bytes of them each source vif holds (indexed by vif).
    rxq_from: Vec<(u16, u32)>,
    /// Bytes queued.
    rxq_bytes: usize,
    /// Statistics.
    pub stats: VifStats,
}

impl<R> Vif<R> {
    /// The front-end domain.
    pub fn frontend(&self) -> u16 {
        self.fe
    }
    /// The interface number (`handle`).
    pub fn handle(&self) -> u32 {
        self.handle
    }
    /// Its MAC address.
    pub fn mac(&self) -> Mac {
        self.mac
    }
    /// The back end's xenbus state.
    pub fn state(&self) -> u32 {
        self.state
    }
    /// Packets waiting for rx buffers.
    pub fn queued(&self) -> usize {
        self.rxq.len()
    }
    /// Whether its rings are mapped.
    pub fn connected(&self) -> bool {
        self.conn.is_some()
    }
}

/// The network back end: every vif and the switch joining them.
pub struct Netback<R> {
    me: u16,
    vifs: Vec<Vif<R>>,
    switch: Switch,
    /// Where the next pass starts (round robin).
    next: usize,
    bounce: Vec<u8>,
    /// Ports to notify at the end of the pass: a front end with one event
    /// channel for both rings gets one event for both.
    kick: Vec<u32>,
    /// Whether vifs offered from now on get `feature-split-event-channels`.
    split_events: bool,
    /// The port to the outside, if any.
    uplink: Option<Box<dyn Uplink>>,
    up_stats: UplinkStats,
}

fn fe_dir(fe: u16, handle: u32) -> String {
    format!("/local/domain/{fe}/device/vif/{handle}")
}

fn be_dir(me: u16, fe: u16, handle: u32) -> String {
    format!("/local/domain/{me}/backend/vif/{fe}/{handle}")
}

impl<R: SharedMem> Netback<R> {
    /// A back end living in domain `me`.
    pub fn new(me: u16) -> Self {
        Self {
            me,
            vifs: Vec::new(),
            switch: Switch::new(MAC_TABLE_SIZE),
            next: 0,
            bounce: Vec::new(),
            kick: Vec::new(),
            split_events: false,
            uplink: None,
            up_stats: UplinkStats::default(),
        }
    }

    /// Joins `up` to the switch as its port to the outside
    /// ([`UPLINK_PORT`]): frames for addresses the switch has not seen on
    /// a vif (and broadcasts) go out there, frames from it reach the vif
    /// that owns their destination.
    pub fn set_uplink(&mut self, up: Box<dyn Uplink>) {
        self.uplink = Some(up);
    }

    /// Whether an uplink is joined.
    pub fn uplink_attached(&self) -> bool {
        self.uplink.is_some()
    }

    /// The uplink's counters.
    pub fn uplink_stats(&self) -> UplinkStats {
        self.up_stats
    }

    /// Whether vifs offered from now on offer `feature-split-event-channels`
    /// (off by default): with it netfront binds one channel per ring, so
    /// a pass that both completes a front end's transmissions and
    /// delivers packets to it sends two events where one channel takes
    /// one. A front end that writes `event-channel-tx`/`-rx` anyway is
    /// served either way.
    pub fn set_split_event_channels(&mut self, on: bool) {
        self.split_events = on;
    }

    /// The vifs.
    pub fn vifs(&self) -> &[Vif<R>] {
        &self.vifs
    }

    /// The switch.
    pub fn switch(&self) -> &Switch {
        &self.switch
    }

    /// Our ports (what to wait on).
    pub fn ports(&self) -> Vec<u32> {
        let mut v = Vec::new();
        for c in self.vifs.iter().filter_map(|v| v.conn.as_ref()) {
            v.push(c.ports[0]);
            if c.ports[1] != c.ports[0] {
                v.push(c.ports[1]);
            }
        }
        v
    }

    /// Offers domain `fe` the interface `handle` with address `mac` (step
    /// 1 of the module doc).
    pub fn add_vif<P: Platform>(
        &mut self,
        svc: &mut StoreService<P>,
        fe: u16,
        handle: u32,
        mac: Mac,
    ) -> Result<(), Errno> {
        if self.vifs.iter().any(|v| v.fe == fe && v.handle == handle) {
            return Err(xen_abi::EEXIST);
        }
        self.vifs.push(Vif {
            fe,
            handle,
            mac,
            state: XenbusStateClosed,
            conn: None,
            offered: false,
            rxq: VecDeque::new(),
            rxq_from: Vec::new(),
            rxq_bytes: 0,
            stats: VifStats::default(),
        });
        let i = self.vifs.len() - 1;
        if let Err(e) = self.offer(svc, i) {
            self.vifs.pop();
            let _ = svc.rm(&be_dir(self.me, fe, handle));
            return Err(e);
        }
        Ok(())
    }

    /// Writes vif `i`'s directories (front and back) and goes `InitWait`.
    fn offer<P: Platform>(&mut self, svc: &mut StoreService<P>, i: usize) -> Result<(), Errno> {
        let me = self.me;
        let (fe, handle, mac) = (self.vifs[i].fe, self.vifs[i].handle, self.vifs[i].mac);
        let fdir = fe_dir(fe, handle);
        let bdir = be_dir(me, fe, handle);
        let mac_s = format_mac(&mac);
        let e = |_| xen_abi::EIO;
        svc.mkdir(&bdir).map_err(e)?;
        svc.set_perms(&bdir, &[&format!("n{me}"), &format!("r{fe}")])
            .map_err(e)?;
        for (k, v) in [
            ("frontend", fdir.as_str()),
            ("frontend-id", &format!("{fe}")),
            ("online", "1"),
            ("handle", &format!("{handle}")),
            ("mac", &mac_s),
            ("type", "vif"),
            ("feature-rx-copy", "1"),
            ("feature-rx-flip", "0"),
            ("feature-sg", "1"),
            ("feature-gso-tcpv4", "1"),
            ("feature-gso-tcpv6", "1"),
            ("feature-ipv6-csum-offload", "1"),
            ("state", "1"),
        ] {
            svc.write_node(&format!("{bdir}/{k}"), v).map_err(e)?;
        }
        if self.split_events {
            svc.write_node(&format!("{bdir}/feature-split-event-channels"), "1")
                .map_err(e)?;
        }
        svc.mkdir(&fdir).map_err(e)?;
        svc.set_perms(&fdir, &[&format!("n{fe}"), &format!("r{me}")])
            .map_err(e)?;
        for (k, v) in [
            ("backend", bdir.as_str()),
            ("backend-id", &format!("{me}")),
            ("handle", &format!("{handle}")),
            ("mac", &mac_s),
            ("state", "1"),
        ] {
            svc.write_node(&format!("{fdir}/{k}"), v).map_err(e)?;
        }
        svc.write_node(&format!("{bdir}/state"), "2").map_err(e)?;
        let v = &mut self.vifs[i];
        v.state = XenbusStateInitWait;
        v.offered = true;
        svc.platform().log(format_args!(
            "netback: d{fe} vif {handle} ({mac_s}) offered"
        ));
        Ok(())
    }

    /// Domain `fe` is gone (the store released it): each of its vifs is
    /// disconnected (queued packets dropped, learnt addresses forgotten)
    /// and its back-end directory removed; the vif stays, for a new domain
    /// under the same id ([`Self::domain_back`]).
    pub fn domain_gone<P: Platform + BlkPlatform<Ring = R>>(
        &mut self,
        svc: &mut StoreService<P>,
        fe: u16,
    ) {
        for i in 0..self.vifs.len() {
            if self.vifs[i].fe != fe || !self.vifs[i].offered {
                continue;
            }
            self.disconnect(svc, i);
            let v = &mut self.vifs[i];
            v.offered = false;
            v.state = XenbusStateClosed;
            let handle = v.handle;
            let _ = svc.rm(&be_dir(self.me, fe, handle));
            svc.platform()
                .log(format_args!("netback: d{fe} vif {handle}: domain gone"));
        }
        let _ = svc.rm(&format!("/local/domain/{}/backend/vif/{fe}", self.me));
    }

    /// A new domain under id `fe` (one that rebooted): offers it the vifs
    /// kept for that id.
    pub fn domain_back<P: Platform>(&mut self, svc: &mut StoreService<P>, fe: u16) {
        for i in 0..self.vifs.len() {
            if self.vifs[i].fe != fe || self.vifs[i].offered {
                continue;
            }
            if let Err(e) = self.offer(svc, i) {
                let handle = self.vifs[i].handle;
                svc.platform().log(format_args!(
                    "netback: d{fe} vif {handle}: offer failed: {e}"
                ));
            }
        }
    }

    /// Moves every vif along after its front end's `state`; call after
    /// each store pump. Returns whether a state was written.
    pub fn sync<P: Platform + BlkPlatform<Ring = R>>(&mut self, svc: &mut StoreService<P>) -> bool {
        let mut wrote = false;
        for i in 0..self.vifs.len() {
            if self.vifs[i].offered {
                wrote |= self.sync_one(svc, i);
            }
        }
        wrote
    }

    fn set_state<P: Platform>(&mut self, svc: &mut StoreService<P>, i: usize, state: u32) -> bool {
        let v = &mut self.vifs[i];
        if v.state == state {
            return false;
        }
        v.state = state;
        let path = format!("{}/state", be_dir(self.me, v.fe, v.handle));
        let _ = svc.write_node(&path, &format!("{state}"));
        true
    }

    fn disconnect<P: Platform + BlkPlatform<Ring = R>>(
        &mut self,
        svc: &mut StoreService<P>,
        i: usize,
    ) {
        self.vifs[i].rxq.clear();
        self.vifs[i].rxq_from.clear();
        self.vifs[i].rxq_bytes = 0;
        for v in &mut self.vifs {
            v.rxq.retain(|(src, _)| *src != i as u32);
            if let Some(n) = v.rxq_from.get_mut(from_slot(i as u32)) {
                v.rxq_bytes = v.rxq_bytes.saturating_sub(n.1 as usize);
                *n = (0, 0);
            }
        }
        self.switch.forget_port(i as u32);
        if let Some(c) = self.vifs[i].conn.take() {
            let v = &self.vifs[i];
            let s = v.stats;
            svc.platform().log(format_args!(
                "netback: d{} vif {} disconnected (tx {} packets, rx {})",
                v.fe, v.handle, s.tx_packets, s.rx_packets
            ));
            let Conn {
                tx,
                rx,
                maps,
                ports,
                ..
            } = c;
            drop(tx);
            drop(rx);
            Platform::unbind(svc.platform(), ports[0]);
            if ports[1] != ports[0] {
                Platform::unbind(svc.platform(), ports[1]);
            }
            for m in maps {
                svc.platform().unmap_ring(m);
            }
        }
    }

    fn sync_one<P: Platform + BlkPlatform<Ring = R>>(
        &mut self,
        svc: &mut StoreService<P>,
        i: usize,
    ) -> bool {
        let (fe, handle, state) = {
            let v = &self.vifs[i];
            (v.fe, v.handle, v.state)
        };
        let fdir = fe_dir(fe, handle);
        let fstate = read_u32(svc, &format!("{fdir}/state")).unwrap_or(XenbusStateUnknown);
        match xenbus::step(fstate, state) {
            Step::Reoffer => {
                svc.platform().log(format_args!(
                    "netback: d{fe} vif {handle}: front end reconnecting"
                ));
                self.set_state(svc, i, XenbusStateInitWait)
            }
            Step::Connect => match self.connect(svc, i) {
                Ok(()) => self.set_state(svc, i, XenbusStateConnected),
                Err(why) => {
                    svc.platform()
                        .log(format_args!("netback: d{fe} vif {handle}: {why}"));
                    let bdir = be_dir(self.me, fe, handle);
                    let _ = svc.write_node(&format!("{bdir}/error"), why);
                    self.set_state(svc, i, XenbusStateClosing)
                }
            },
            Step::Close => {
                self.disconnect(svc, i);
                self.set_state(svc, i, XenbusStateClosing)
            }
            Step::Closed => {
                self.disconnect(svc, i);
                self.set_state(svc, i, XenbusStateClosed)
            }
            Step::Stay => false,
        }
    }

    fn connect<P: Platform + BlkPlatform<Ring = R>>(
        &mut self,
        svc: &mut StoreService<P>,
        i: usize,
    ) -> Result<(), &'static str> {
        let (fe, handle) = (self.vifs[i].fe, self.vifs[i].handle);
        let fdir = fe_dir(fe, handle);
        let key = |svc: &mut StoreService<P>, k: &str| read_u32(svc, &format!("{fdir}/{k}"));
        if key(svc, "multi-queue-num-queues").is_some_and(|n| n > 1) {
            return Err("multiple queues not supported");
        }
        if key(svc, "request-rx-copy") != Some(1) {
            return Err("request-rx-copy is mandatory");
        }
        if key(svc, "feature-rx-notify") != Some(1) {
            return Err("feature-rx-notify is mandatory");
        }
        let tx_ref = key(svc, "tx-ring-ref").ok_or("no tx-ring-ref")?;
        let rx_ref = key(svc, "rx-ring-ref").ok_or("no rx-ring-ref")?;
        let remotes = match key(svc, "event-channel") {
            Some(p) => [p, p],
            None => [
                key(svc, "event-channel-tx").ok_or("no event-channel")?,
                key(svc, "event-channel-rx").ok_or("no event-channel-rx")?,
            ],
        };
        let sg = key(svc, "feature-sg") == Some(1);
        let gso4 = key(svc, "feature-gso-tcpv4") == Some(1);
        let gso6 = key(svc, "feature-gso-tcpv6") == Some(1);
        let p = svc.platform();
        let (tx_mem, tx_map) = p
            .map_ring(fe, &[tx_ref])
            .map_err(|_| "mapping tx-ring-ref failed")?;
        let (rx_mem, rx_map) = match p.map_ring(fe, &[rx_ref]) {
            Ok(m) => m,
            Err(_) => {
                drop(tx_mem);
                p.unmap_ring(tx_map);
                return Err("mapping rx-ring-ref failed");
            }
        };
        let undo = |p: &mut P, ports: &[u32]| {
            for &port in ports {
                Platform::unbind(p, port);
            }
            p.unmap_ring(tx_map);
            p.unmap_ring(rx_map);
        };
        let (tx, rx) = match (BackRing::new(tx_mem), BackRing::new(rx_mem)) {
            (Ok(t), Ok(r)) => (t, r),
            _ => {
                undo(p, &[]);
                return Err("ring too small");
            }
        };
        let tx_port = match Platform::bind(p, fe, remotes[0]) {
            Ok(port) => port,
            Err(_) => {
                drop((tx, rx));
                undo(p, &[]);
                return Err("binding event-channel failed");
            }
        };
        let rx_port = if remotes[1] == remotes[0] {
            tx_port
        } else {
            match Platform::bind(p, fe, remotes[1]) {
                Ok(port) => port,
                Err(_) => {
                    drop((tx, rx));
                    undo(p, &[tx_port]);
                    return Err("binding event-channel-rx failed");
                }
            }
        };
        let v = &mut self.vifs[i];
        v.conn = Some(Conn {
            tx,
            rx,
            maps: [tx_map, rx_map],
            ports: [tx_port, rx_port],
            sg,
            gso4,
            gso6,
        });
        v.stats.connects += 1;
        svc.platform().log(format_args!(
            "netback: d{fe} vif {handle} connected (ports {tx_port}/{rx_port})"
        ));
        Ok(())
    }

    /// One pass over every vif: tx rings in turn (at most [`TX_BUDGET`]
    /// packets each) through the switch, then every rx queue (at most
    /// [`RX_BUDGET`] packets each). Returns true if work is left for the
    /// next pass.
    pub fn pump<P: Platform + BlkPlatform<Ring = R>>(&mut self, svc: &mut StoreService<P>) -> bool {
        let n = self.vifs.len();
        if n == 0 {
            return false;
        }
        let mut more = false;
        let start = self.next % n;
        self.next = (start + 1) % n;
        for k in 0..n {
            let i = (start + k) % n;
            match self.tx_one(svc.platform(), i) {
                Ok(m) => more |= m,
                Err(e) => self.fatal(svc, i, e),
            }
        }
        more |= self.uplink_in();
        for i in 0..n {
            match self.rx_one(svc.platform(), i) {
                Ok(m) => more |= m,
                Err(e) => self.fatal(svc, i, TxFatal::Ring(e)),
            }
        }
        for port in self.kick.drain(..) {
            Platform::notify(svc.platform(), port);
        }
        more
    }

    /// Takes up to [`TX_BUDGET`] frames from the uplink through the
    /// switch; true if there may be more.
    fn uplink_in(&mut self) -> bool {
        let Some(up) = self.uplink.as_mut() else {
            return false;
        };
        for _ in 0..TX_BUDGET {
            let Some(data) = up.recv() else {
                return false;
            };
            self.up_stats.rx_frames += 1;
            let pkt = Packet {
                data,
                csum_blank: false,
                data_validated: false,
                gso: None,
            };
            match self.switch.forward(UPLINK_PORT, &pkt.data) {
                Forward::Drop => {}
                Forward::Port(d) => enqueue(&mut self.vifs, UPLINK_PORT, d as usize, pkt),
                Forward::Flood => {
                    for d in 0..self.vifs.len() {
                        if self.vifs[d].conn.is_some() {
                            enqueue(&mut self.vifs, UPLINK_PORT, d, pkt.clone());
                        }
                    }
                }
            }
        }
        true
    }

    fn fatal<P: Platform + BlkPlatform<Ring = R>>(
        &mut self,
        svc: &mut StoreService<P>,
        i: usize,
        e: TxFatal,
    ) {
        let (fe, handle) = (self.vifs[i].fe, self.vifs[i].handle);
        svc.platform().log(format_args!(
            "netback: d{fe} vif {handle}: {e:?}; disconnected"
        ));
        if let Some(c) = &self.vifs[i].conn {
            self.kick.retain(|p| !c.ports.contains(p));
        }
        self.disconnect(svc, i);
        self.set_state(svc, i, XenbusStateClosing);
    }

    /// Takes up to [`TX_BUDGET`] packets off vif `i`'s tx ring, copies,
    /// answers and switches them.
    fn tx_one<P: BlkPlatform + Platform>(&mut self, p: &mut P, i: usize) -> Result<bool, TxFatal> {
        let Self {
            vifs,
            bounce,
            switch,
            kick,
            uplink,
            up_stats,
            ..
        } = self;
        let fe = vifs[i].fe;
        let Some(conn) = vifs[i].conn.as_mut() else {
            return Ok(false);
        };
        let mut pkts = Vec::new();
        let mut bytes = 0;
        loop {
            while pkts.len() < TX_BUDGET && bytes < TX_BATCH_BYTES {
                match take_packet(&mut conn.tx)? {
                    Some(pk) => {
                        bytes += pk.len;
                        pkts.push(pk);
                    }
                    None => break,
                }
            }
            let full = pkts.len() >= TX_BUDGET || bytes >= TX_BATCH_BYTES;
            if full || !conn.tx.final_check_for_requests()? {
                break;
            }
        }
        if pkts.is_empty() {
            return Ok(false);
        }
        // One grant copy for the whole batch; packet by packet only if it
        // fails, to find the bad ones.
        let total: usize = pkts.iter().map(|pk| pk.len).sum();
        bounce.clear();
        bounce.resize(total, 0);
        let mut segs = Vec::new();
        let mut base = 0;
        for pk in &pkts {
            segs.extend(pk.segs.iter().map(|s| CopySeg {
                local: s.local + base,
                ..*s
            }));
            base += pk.len;
        }
        let mut ok = vec![true; pkts.len()];
        if copy_all(p, fe, &segs, bounce).is_err() {
            let mut base = 0;
            for (k, pk) in pkts.iter().enumerate() {
                let buf = &mut bounce[base..base + pk.len];
                ok[k] = copy_all(p, fe, &pk.segs, buf).is_ok();
                base += pk.len;
            }
        }
        let mut out = Vec::new();
        let (mut good_n, mut bad_n) = (0, 0);
        let mut base = 0;
        for (k, pk) in pkts.iter().enumerate() {
            let good = ok[k] && pk.bad.is_none();
            let status = if good {
                NETIF_RSP_OKAY
            } else {
                NETIF_RSP_ERROR
            };
            for &(id, extra) in &pk.slots {
                let rsp = if extra {
                    NetifTxResponse {
                        id: 0,
                        status: NETIF_RSP_NULL,
                    }
                } else {
                    NetifTxResponse { id, status }
                };
                conn.tx.put_response(&rsp)?;
            }
            if good {
                good_n += 1;
                let mut data = bounce[base..base + pk.len].to_vec();
                let mut csum_blank = pk.flags & NETTXF_csum_blank != 0;
                let mut data_validated = pk.flags & NETTXF_data_validated != 0;
                if csum_blank && pk.gso.is_none() && complete_checksum(&mut data) {
                    csum_blank = false;
                    data_validated = true;
                }
                out.push(Packet {
                    data,
                    csum_blank,
                    data_validated,
                    gso: pk.gso,
                });
            } else {
                bad_n += 1;
            }
            base += pk.len;
        }
        let event = conn.tx.push_responses();
        if event {
            kick.push(conn.ports[0]);
        }
        let st = &mut vifs[i].stats;
        st.tx_packets += good_n;
        st.tx_errors += bad_n;
        st.tx_events += u64::from(event);
        let full = pkts.len() >= TX_BUDGET || bytes >= TX_BATCH_BYTES;
        for pkt in out {
            let src = i as u32;
            match switch.forward(src, &pkt.data) {
                Forward::Drop => {}
                Forward::Port(UPLINK_PORT) => send_up(uplink, up_stats, &pkt),
                Forward::Port(d) => enqueue(vifs, src, d as usize, pkt),
                Forward::Flood => {
                    send_up(uplink, up_stats, &pkt);
                    for d in 0..vifs.len() {
                        if d != i && vifs[d].conn.is_some() {
                            enqueue(vifs, src, d, pkt.clone());
                        }
                    }
                }
            }
        }
        Ok(full)
    }

    /// Delivers vif `i`'s queued packets into the buffers its front end
    /// posted.
    fn rx_one<P: BlkPlatform + Platform>(
        &mut self,
        p: &mut P,
        i: usize,
    ) -> Result<bool, RingError> {
        let Self {
            vifs, bounce, kick, ..
        } = self;
        let v = &mut vifs[i];
        let Some(conn) = v.conn.as_mut() else {
            return Ok(false);
        };
        // The packets of this pass and their responses.
        let mut rsps: Vec<NetifRxResponse> = Vec::new();
        // Per packet: its first response, their count, its first segment.
        let mut pkt_rsps: Vec<(usize, usize, usize)> = Vec::new();
        let mut segs: Vec<CopySeg> = Vec::new();
        bounce.clear();
        let mut delivered = 0;
        while delivered < RX_BUDGET {
            let Some((_, pkt)) = v.rxq.front() else {
                break;
            };
            let chunks = pkt.data.len().div_ceil(PAGE).max(1);
            let gso = pkt.gso.filter(|g| match g.kind {
                XEN_NETIF_GSO_TYPE_TCPV4 => conn.gso4,
                _ => conn.gso6,
            });
            let unusable = (pkt.gso.is_some() && gso.is_none())
                || (chunks > 1 && !conn.sg)
                || chunks + usize::from(gso.is_some()) > MAX_SLOTS;
            if unusable {
                pop(&mut v.rxq, &mut v.rxq_from, &mut v.rxq_bytes);
                v.stats.rx_dropped += 1;
                continue;
            }
            let needed = chunks + usize::from(gso.is_some());
            if !conn.rx.check_for_requests(needed as u32)? {
                break;
            }
            let Some(pkt) = pop(&mut v.rxq, &mut v.rxq_from, &mut v.rxq_bytes) else {
                break;
            };
            let first_rsp = rsps.len();
            let first_seg = segs.len();
            let base = bounce.len();
            bounce.extend_from_slice(&pkt.data);
            let mut flags = 0;
            if pkt.csum_blank {
                flags |= NETRXF_csum_blank | NETRXF_data_validated;
            } else if pkt.data_validated {
                flags |= NETRXF_data_validated;
            }
            for c in 0..chunks {
                let req = conn.rx.pop_request()?.ok_or(RingError::NoRequestToAnswer)?;
                let len = (pkt.data.len() - c * PAGE).min(PAGE);
                segs.push(CopySeg {
                    gref: req.gref,
                    offset: 0,
                    len: len as u16,
                    local: base + c * PAGE,
                    dir: CopyDir::ToGuest,
                });
                let mut f = if c + 1 < chunks { NETRXF_more_data } else { 0 };
                if c == 0 {
                    f |= flags;
                    if gso.is_some() {
                        f |= NETRXF_extra_info;
                    }
                }
                rsps.push(NetifRxResponse {
                    id: req.id,
                    offset: 0,
                    flags: f,
                    status: len as i16,
                });
                if c == 0
                    && let Some(g) = gso
                {
                    // The extra takes the next slot (its buffer unused).
                    let _ = conn.rx.pop_request()?.ok_or(RingError::NoRequestToAnswer)?;
                    let gi = NetifExtraInfoGso {
                        size: g.size,
                        r#type: g.kind,
                        pad: 0,
                        features: 0,
                    };
                    let mut e = [0u8; 8];
                    e[0] = XEN_NETIF_EXTRA_TYPE_GSO;
                    e[2..8].copy_from_slice(gi.as_bytes());
                    rsps.push(NetifRxResponse::read_from_bytes(&e).unwrap_or_default());
                }
            }
            pkt_rsps.push((first_rsp, rsps.len() - first_rsp, first_seg));
            delivered += 1;
        }
        if pkt_rsps.is_empty() {
            return Ok(false);
        }
        let fe = v.fe;
        let mut failed = 0;
        if copy_all(p, fe, &segs, bounce).is_err() {
            for (k, &(r0, nr, s0)) in pkt_rsps.iter().enumerate() {
                let s1 = pkt_rsps.get(k + 1).map_or(segs.len(), |x| x.2);
                if copy_all(p, fe, &segs[s0..s1], bounce).is_err() {
                    // Every data slot of the packet says error (netfront
                    // drops it); the extra keeps its bytes.
                    let has_extra = rsps[r0].flags & NETRXF_extra_info != 0;
                    for (j, r) in rsps[r0..r0 + nr].iter_mut().enumerate() {
                        if !(has_extra && j == 1) {
                            r.status = NETIF_RSP_ERROR;
                        }
                    }
                    failed += 1;
                }
            }
        }
        v.stats.rx_packets += (delivered - failed) as u64;
        v.stats.rx_dropped += failed as u64;
        for r in &rsps {
            conn.rx.put_response(r)?;
        }
        if conn.rx.push_responses() && !kick.contains(&conn.ports[1]) {
            kick.push(conn.ports[1]);
            v.stats.rx_events += 1;
        }
        Ok(delivered >= RX_BUDGET && !v.rxq.is_empty())
    }
}

/// Queues `pkt`, from vif `src`, for vif `d` (dropped if `d` is not
/// connected, its queue is full or `src`'s share of it is).
/// Sends a packet from a vif out of the uplink, cut into segments if it
/// is a GSO packet.
fn send_up(up: &mut Option<Box<dyn Uplink>>, st: &mut UplinkStats, pkt: &Packet) {
    let Some(up) = up.as_mut() else {
        return;
    };
    let mut one = |f: &[u8]| {
        if up.send(f) {
            st.tx_frames += 1;
        } else {
            st.tx_dropped += 1;
        }
    };
    match pkt.gso {
        None => one(&pkt.data),
        Some(g) => match segment_gso(&pkt.data, g) {
            Some(segs) => segs.iter().for_each(|s| one(s)),
            None => st.tx_dropped += 1,
        },
    }
}

/// The slot of `rxq_from` counting the packets of source port `src`: 0
/// for the uplink, vif `i` at `i + 1`.
fn from_slot(src: u32) -> usize {
    if src == UPLINK_PORT {
        0
    } else {
        src as usize + 1
    }
}

/// Queues `pkt` from port `src` (a vif's index or [`UPLINK_PORT`]) for
/// vif `d`, or drops it if that queue is full (or holds its share from
/// `src`).
fn enqueue<R>(vifs: &mut [Vif<R>], src: u32, d: usize, pkt: Packet) {
    let Some(v) = vifs.get_mut(d) else { return };
    let slot = from_slot(src);
    if v.rxq_from.len() <= slot {
        v.rxq_from.resize(slot + 1, (0, 0));
    }
    let len = pkt.data.len();
    let (n, b) = &mut v.rxq_from[slot];
    if v.conn.is_none()
        || v.rxq.len() >= RX_QUEUE
        || v.rxq_bytes + len > RX_QUEUE_BYTES
        || usize::from(*n) >= RX_QUEUE_PER_SOURCE
        || *b as usize + len > RX_QUEUE_BYTES / 2
    {
        v.stats.rx_dropped += 1;
        return;
    }
    *n += 1;
    *b += len as u32;
    v.rxq_bytes += len;
    v.rxq.push_back((src, pkt));
}

/// Takes the next packet off a vif's queue.
fn pop(
    rxq: &mut VecDeque<(u32, Packet)>,
    from: &mut [(u16, u32)],
    bytes: &mut usize,
) -> Option<Packet> {
    let (src, pkt) = rxq.pop_front()?;
    let len = pkt.data.len();
    if let Some((n, b)) = from.get_mut(from_slot(src)) {
        *n = n.saturating_sub(1);
        *b = b.saturating_sub(len as u32);
    }
    *bytes = bytes.saturating_sub(len);
    Some(pkt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(default_mac(1, 0), [0, 0x16, 0x3e, 0, 0, 1]);
        assert_eq!(format_mac(&default_mac(258, 1)), "00:16:3e:01:01:02");
        assert_eq!(
            parse_mac("00:16:3e:0a:bb:cc"),
            Some([0, 0x16, 0x3e, 0xa, 0xbb, 0xcc])
        );
        for bad in [
            "",
            "+0:16:3e:0a:bb:cc",
            "00:16:3e:0a:bb",
            "00:16:3e:0a:bb:cc:dd",
            "01:00:5e:00:00:01",
            "0:16:3e:0a:bb:cc",
            "zz:16:3e:0a:bb:cc",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }

    /// A UDP/IPv4 frame with a known checksum (computed by hand below).
    #[test]
    fn checksums() {
        let mut f = vec![0u8; 14];
        f[12] = 0x08;
        // IPv4: 20 + 8 + 4 bytes, UDP 10.0.0.1:1 -> 10.0.0.2:2, data 1 2 3 4.
        f.extend_from_slice(&[
            0x45, 0, 0, 32, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        f.extend_from_slice(&[0, 1, 0, 2, 0, 12, 0xaa, 0xbb, 1, 2, 3, 4]);
        assert!(complete_checksum(&mut f));
        // Pseudo: 0a00+0001+0a00+0002+0011+000c = 0x1420; UDP: 1+2+c+0102+0304
        // = 0x0415 -> 0x1835; ~ = 0xe7ca.
        assert_eq!(&f[40..42], &[0xe7, 0xca]);
        // Checking: the sum over pseudo header and segment is 0xffff.
        let s = sum(0x1420, &f[34..]);
        assert_eq!(fold(s), 0xffff);
        // Too short, not IP, a later fragment: unchanged.
        let mut short = f[..40].to_vec();
        assert!(!complete_checksum(&mut short));
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(!complete_checksum(&mut arp));
        let mut frag = f.clone();
        frag[20] = 0x20;
        frag[21] = 1;
        assert!(!complete_checksum(&mut frag));
        assert!(!complete_checksum(&mut []));
    }

    /// TCP over IPv6: the checksum over the pseudo header and segment
    /// comes out 0xffff, whatever was in the field before.
    #[test]
    fn checksum_tcp_ipv6() {
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        let payload = 20 + 5;
        let mut ip = vec![0x60, 0, 0, 0, 0, payload as u8, 6, 64];
        ip.extend((0..16).map(|i| i as u8));
        ip.extend((0..16).map(|i| 0x80 | i as u8));
        f.extend_from_slice(&ip);
        let mut tcp = vec![0u8; 20];
        tcp[12] = 5 << 4;
        tcp[16] = 0xde;
        tcp[17] = 0xad;
        f.extend_from_slice(&tcp);
        f.extend_from_slice(b"hello");
        assert!(complete_checksum(&mut f));
        let mut s = sum(0, &f[22..54]);
        s += 6 + payload as u32;
        assert_eq!(fold(sum(s, &f[54..])), 0xffff);
        // Truncated: unchanged.
        let mut short = f[..60].to_vec();
        assert!(!complete_checksum(&mut short));
    }
}
