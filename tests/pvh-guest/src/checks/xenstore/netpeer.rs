//! `role=net-peer ip=A.B.C.D [peer=B]`: an honest raw netif front end, a
//! second end for Linux on the service domain's switch where a second
//! Linux domain would take too long (Bochs). It connects as netfront does
//! (one event channel, `request-rx-copy`, `feature-rx-notify`, no SG or
//! GSO, so every received packet fits one page), takes its MAC from its
//! `mac` key, keeps [`RX_BUFS`] receive buffers posted, and answers ARP
//! requests and ICMP echo requests for its address. It writes
//! `data/done` once connected (the service domain's `shutdown-when`
//! waits for the other domains) and serves until `control/shutdown` says
//! otherwise, then reports what it answered (check `net_peer`: at least
//! one ARP and one echo request answered, no bad responses).

use super::*;

/// Receive buffers kept posted.
const RX_BUFS: usize = 4;
static RX_PAGES: [Page; RX_BUFS] = [const { Page::new() }; RX_BUFS];
/// The page our frames go out of (one at a time: each is answered before
/// the next is written).
static TX_PAGE: Page = Page::new();
static TX_RING: Page = Page::new();
static RX_RING: Page = Page::new();
const TX_RING_GREF: u32 = 60;
const RX_RING_GREF: u32 = 61;
const TX_PAGE_GREF: u32 = 62;
/// The receive buffers' refs: RX_GREF0 + index (the request's id).
const RX_GREF0: u32 = 64;
/// How often `control/shutdown` is read while serving.
const SHUTDOWN_POLL_NS: u64 = 250_000_000;
/// How long it serves at most (system time; Bochs boots Linux slowly).
const SERVE_NS: u64 = 900_000_000_000;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;

/// What it answered.
#[derive(Default)]
struct Counts {
    frames: u32,
    arp: u32,
    echo: u32,
    other: u32,
    /// Receive responses with an error status or flags we did not ask for.
    bad: u32,
}

pub(in crate::checks) fn net_peer<W: Write>(
    r: &mut Report<W>,
    ctx: &mut Ctx,
    early: &Early,
    ip: Option<[u8; 4]>,
) {
    let o = net_peer_run(r, ctx, early, ip);
    if o.is_err() {
        record(r, "net_peer", o);
    }
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut m {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(m)
}

fn net_peer_run<W: Write>(
    r: &mut Report<W>,
    ctx: &mut Ctx,
    early: &Early,
    ip: Option<[u8; 4]>,
) -> Outcome {
    let Some(ip) = ip else {
        fail!("no ip=A.B.C.D");
    };
    let (be, port) = match early.blk_port {
        Some((be, Ok(p))) => (be, p),
        Some((be, Err(e))) => fail!("EVTCHNOP_alloc_unbound(remote d{be}): {e}"),
        None => fail!("no port"),
    };
    let store = check_connect(ctx, early)?;
    let mut cl = Client::new(&store)?;
    let c: &Ctx = ctx;
    let mut bbuf = [0u8; REPLY_MAX];
    let Some(backend) = read_node(&mut cl, c, &[NET_VIF.as_bytes(), b"/backend\0"], &mut bbuf)?
    else {
        fail!("no {NET_VIF}/backend");
    };
    let mut backend_z = [0u8; REPLY_MAX + 1];
    backend_z[..backend.len()].copy_from_slice(backend.as_bytes());
    let backend = &backend_z[..backend.len()];
    let table = grants::table(ctx)?;
    grants::put_entry(table, TX_RING_GREF, be, TX_RING.gfn(), GTF_permit_access);
    grants::put_entry(table, RX_RING_GREF, be, RX_RING.gfn(), GTF_permit_access);
    grants::put_entry(table, TX_PAGE_GREF, be, TX_PAGE.gfn(), GTF_permit_access);
    for (i, p) in RX_PAGES.iter().enumerate() {
        grants::put_entry(table, RX_GREF0 + i as u32, be, p.gfn(), GTF_permit_access);
    }
    let mut tx: NetTx = match pv_rings::FrontRing::init(ring_mem(&TX_RING)?) {
        Ok(f) => f,
        Err(e) => fail!("tx ring: {e:?}"),
    };
    let mut rx: NetRx = match pv_rings::FrontRing::init(ring_mem(&RX_RING)?) {
        Ok(f) => f,
        Err(e) => fail!("rx ring: {e:?}"),
    };
    for i in 0..RX_BUFS as u16 {
        let req = NetifRxRequest {
            id: i,
            pad: 0,
            gref: RX_GREF0 + u32::from(i),
        };
        if let Err(e) = rx.put_request(&req) {
            fail!("rx put_request: {e:?}");
        }
    }
    let _ = rx.push_requests();
    let c: &Ctx = ctx;
    let vif = NET_VIF.as_bytes();
    let tx_ref = Dec::new(TX_RING_GREF.into());
    let rx_ref = Dec::new(RX_RING_GREF.into());
    let evtchn = Dec::new(port.into());
    let mut mac = [0u8; 6];
    let o = (|| -> Outcome {
        await_backend_state(&mut cl, c, backend, "2")?;
        let mut mbuf = [0u8; REPLY_MAX];
        let m = read_node(&mut cl, c, &[vif, b"/mac\0"], &mut mbuf)?;
        match m.and_then(parse_mac) {
            Some(v) => mac = v,
            None => fail!("mac {m:?}"),
        }
        for (k, v) in [
            (&b"/tx-ring-ref\0"[..], tx_ref.bytes()),
            (b"/rx-ring-ref\0", rx_ref.bytes()),
            (b"/event-channel\0", evtchn.bytes()),
            (b"/request-rx-copy\0", b"1"),
            (b"/feature-rx-notify\0", b"1"),
            (b"/state\0", b"4"),
        ] {
            let rep = cl.request(c, XS_WRITE, &[vif, k, v])?;
            expect_reply("WRITE", &rep, XS_WRITE, b"OK\0")?;
        }
        await_backend_state(&mut cl, c, backend, "4")?;
        let rep = cl.request(c, XS_WRITE, &[b"data/done\0", b"1"])?;
        expect_reply("WRITE data/done", &rep, XS_WRITE, b"OK\0")
    })();
    let ok = o.is_ok();
    record(r, "net_peer_connect", o);
    if !ok {
        return Ok(());
    }
    r.note(format_args!(
        "net-peer: {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} {}.{}.{}.{} serving",
        mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], ip[0], ip[1], ip[2], ip[3]
    ));
    let mut n = Counts::default();
    let o = serve(c, &mut cl, &mut tx, &mut rx, port, mac, ip, &mut n);
    r.note(format_args!(
        "net-peer: {} frames: answered {} ARP and {} echo requests, {} other, {} bad",
        n.frames, n.arp, n.echo, n.other, n.bad
    ));
    let o = o.and_then(|()| {
        if n.arp == 0 || n.echo == 0 || n.bad != 0 {
            fail!("{} ARP, {} echo answered, {} bad", n.arp, n.echo, n.bad);
        }
        Ok(())
    });
    record(r, "net_peer", o);
    Ok(())
}

/// Serves frames until `control/shutdown` is written.
#[allow(clippy::too_many_arguments)]
fn serve(
    c: &Ctx,
    cl: &mut Client,
    tx: &mut NetTx,
    rx: &mut NetRx,
    port: u32,
    mac: [u8; 6],
    ip: [u8; 4],
    n: &mut Counts,
) -> Outcome {
    let end = deadline(c, SERVE_NS)?;
    let mut next_poll = 0;
    loop {
        // Cleared before the rings are looked at: a response written after
        // the look leaves the port pending, and the poll returns at once.
        events::clear_pending(port);
        let rsp = match rx.pop_response() {
            Ok(v) => v,
            Err(e) => fail!("rx ring: {e:?}"),
        };
        if let Some(rsp) = rsp {
            n.frames += 1;
            let i = usize::from(rsp.id);
            let extra = NETRXF_more_data | NETRXF_extra_info;
            if i >= RX_BUFS
                || rsp.status < 0
                || rsp.flags & extra != 0
                || usize::from(rsp.offset) + rsp.status as usize > 4096
            {
                n.bad += 1;
            } else {
                let mut frame = [0u8; 1514];
                let len = (rsp.status as usize).min(frame.len());
                let src = RX_PAGES[i].ptr();
                for (k, b) in frame[..len].iter_mut().enumerate() {
                    // SAFETY: inside our page (offset + len <= 4096,
                    // checked above); volatile, the back end wrote it.
                    *b = unsafe { src.add(usize::from(rsp.offset) + k).read_volatile() };
                }
                let mut out = [0u8; 1514];
                match answer(&frame[..len], mac, ip, &mut out) {
                    Some((kind, m)) => {
                        send(c, tx, port, &out[..m])?;
                        match kind {
                            Answer::Arp => n.arp += 1,
                            Answer::Echo => n.echo += 1,
                        }
                    }
                    None => n.other += 1,
                }
            }
            // The buffer goes back (its id names the page again).
            let id = if i < RX_BUFS { rsp.id } else { 0 };
            let req = NetifRxRequest {
                id,
                pad: 0,
                gref: RX_GREF0 + u32::from(id),
            };
            if i < RX_BUFS {
                if let Err(e) = rx.put_request(&req) {
                    fail!("rx put_request: {e:?}");
                }
                if rx.push_requests()
                    && let Err(e) = c.hc.evtchn_send(port)
                {
                    fail!("EVTCHNOP_send: {e}");
                }
            }
            continue;
        }
        match rx.final_check_for_responses() {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => fail!("rx ring: {e:?}"),
        }
        let Some(now) = now_ns(c) else {
            fail!("no system time");
        };
        if now >= next_poll {
            let mut b = [0u8; REPLY_MAX];
            if read_node(cl, c, &[b"control/shutdown\0"], &mut b)?.is_some_and(|s| !s.is_empty()) {
                return Ok(());
            }
            next_poll = now + SHUTDOWN_POLL_NS;
        }
        if now >= end {
            fail!("not told to stop within 900 s");
        }
        wait_port(c, port, next_poll.min(end))?;
    }
}

enum Answer {
    Arp,
    Echo,
}

/// The answer to `f` (an ARP request for `ip`, or an ICMP echo request to
/// it) in `out`: its kind and length.
fn answer(f: &[u8], mac: [u8; 6], ip: [u8; 4], out: &mut [u8; 1514]) -> Option<(Answer, usize)> {
    if f.len() < 14 {
        return None;
    }
    let ethertype = u16::from_be_bytes([f[12], f[13]]);
    // Ethernet: to the sender, from us.
    out[..6].copy_from_slice(&f[6..12]);
    out[6..12].copy_from_slice(&mac);
    out[12..14].copy_from_slice(&f[12..14]);
    match ethertype {
        ETH_P_ARP => {
            let a = f.get(14..42)?;
            // Ethernet/IPv4, a request (1) for our address.
            if a[..8] != [0, 1, 8, 0, 6, 4, 0, 1] || a[24..28] != ip {
                return None;
            }
            let o = &mut out[14..42];
            o[..6].copy_from_slice(&[0, 1, 8, 0, 6, 4]);
            o[6..8].copy_from_slice(&[0, 2]);
            o[8..14].copy_from_slice(&mac);
            o[14..18].copy_from_slice(&ip);
            // The target: the requester (its hardware and IP address).
            o[18..28].copy_from_slice(&a[8..18]);
            out[42..60].fill(0);
            Some((Answer::Arp, 60))
        }
        ETH_P_IP => {
            let h = f.get(14..)?;
            let ihl = usize::from(h.first()? & 0xf) * 4;
            let total = usize::from(u16::from_be_bytes([*h.get(2)?, *h.get(3)?]));
            if h[0] >> 4 != 4 || ihl < 20 || total < ihl + 8 || total > h.len() {
                return None;
            }
            // ICMP (1) to us, not fragmented, an echo request (8, code 0).
            let frag = u16::from_be_bytes([h[6], h[7]]) & 0x3fff;
            if h[9] != 1 || h[16..20] != ip || frag != 0 || h[ihl] != 8 || h[ihl + 1] != 0 {
                return None;
            }
            let o = &mut out[14..14 + total];
            o.copy_from_slice(&h[..total]);
            o[8] = 64;
            o[10..12].fill(0);
            o[12..16].copy_from_slice(&h[16..20]);
            o[16..20].copy_from_slice(&h[12..16]);
            let s = checksum(&o[..ihl]);
            o[10..12].copy_from_slice(&s.to_be_bytes());
            o[ihl] = 0;
            o[ihl + 2..ihl + 4].fill(0);
            let s = checksum(&o[ihl..]);
            o[ihl + 2..ihl + 4].copy_from_slice(&s.to_be_bytes());
            let len = 14 + total;
            if len < 60 {
                out[len..60].fill(0);
            }
            Some((Answer::Echo, len.max(60)))
        }
        _ => None,
    }
}

/// The Internet checksum of `b`.
fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for w in b.chunks(2) {
        let hi = u32::from(w[0]) << 8;
        s += hi | u32::from(w.get(1).copied().unwrap_or(0));
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// Sends one frame from [`TX_PAGE`] and waits for its response (OKAY).
fn send(c: &Ctx, tx: &mut NetTx, port: u32, frame: &[u8]) -> Outcome {
    let data = TX_PAGE.ptr();
    for (i, b) in frame.iter().enumerate() {
        // SAFETY: our page, i < 1514; volatile (the back end's grant copy
        // reads it).
        unsafe { data.add(i).write_volatile(*b) };
    }
    let mut rsp = [NetifTxResponse::default(); 1];
    let req = tx_req(TX_PAGE_GREF, 0, 0, 1, frame.len() as u16);
    net_submit(c, tx, port, &[req], &mut rsp)?;
    if rsp[0].status != NETIF_RSP_OKAY {
        fail!("tx status {}", rsp[0].status);
    }
    Ok(())
}
