//! A raw xenstore client over the ring page (`role=xs-client`,
//! `role=xs-hostile`, `role=xs-bench`), no heap: `pv-rings`' xenstore
//! ring types and framer, `xen-abi`'s `XsdSockmsg`.
//!
//! The page and port come from `HVM_PARAM_STORE_PFN`/`STORE_EVTCHN`. The
//! page (frame 0xfeffc under our hypervisor) lies above the GiB the boot
//! code maps, so [`boot::map_gib`](crate::boot::map_gib) maps its GiB.
//! As Linux does (services.md §2), a page whose `connection` is not
//! `XENSTORE_CONNECTED` means "wait for the event": the server attaches,
//! sets `connection` = 0, then signals.
//!
//! - `role=xs-client [wait=A,B,..] [xsname=N]`: before its checks it
//!   offers an unbound port to each domain of `wait=` (the hostile ones);
//!   after them it waits until each has signalled that the server cut it
//!   off (`xenstore_hostile_cut_off`), so its own xenstore work comes after
//!   theirs, deterministically. Then the privileged calls of the service
//!   domain, tried against the first of them (`unpriv_*`), and its
//!   xenstore checks (`xenstore_connect`, `xenstore_read_name`,
//!   `xenstore_read_domid`, `xenstore_write_read`, `xenstore_watch`);
//!   finally it signals every hostile domain that it may stop.
//! - `role=xs-hostile kind=K [peer=N]`: connects, breaks the protocol
//!   (kind `indices`, `oversize` or `garbage`), notifies, and checks that
//!   the server set the page's `error` (`xenstore_hostile`); then signals
//!   domain N (the client) over the port it offers and waits for its
//!   answer (`xenstore_hostile_signal`).
//! - `role=xs-bench`: after the checks, [`BENCH_READS`] timed `XS_READ`
//!   round trips (check `xenstore_bench`).

use core::ptr::NonNull;
use core::sync::atomic::Ordering;

use pv_rings::xenstore::{
    MessageReader, MessageWriter, XENSTORE_CONNECTED, XENSTORE_ERROR_NONE, XENSTORE_ERROR_PROTO,
    XENSTORE_ERROR_RINGIDX, XENSTORE_RING_SIZE, XENSTORE_SERVER_FEATURE_ERROR, XS_REQ_CONS_OFFSET,
    XS_REQ_PROD_OFFSET, XenstoreFront,
};
use pv_rings::{RawMem, SharedMem};
use zerocopy::IntoBytes;

use super::*;

mod netpeer;
pub(super) use netpeer::net_peer;

/// The most hostile domains a client waits for.
pub const MAX_WAIT: usize = 4;
/// How long the client waits for the hostile domains' signals, and they
/// for its answer (system time; Bochs is slow).
const HANDSHAKE_NS: u64 = 300_000_000_000;
/// How long one xenstore request or the connection may take.
const REQUEST_NS: u64 = 30_000_000_000;
/// `XS_READ` round trips timed by `role=xs-bench`.
pub const BENCH_READS: u64 = 1000;
/// Untimed round trips first.
const BENCH_WARMUP: u64 = 10;
/// Payload bytes a reply may carry into our buffers.
const REPLY_MAX: usize = 128;

/// What the xenstore roles set up before the checks run.
pub struct Early {
    /// `HVM_PARAM_STORE_EVTCHN`.
    store_port: Result<u32, Errno>,
    /// `role=blk-hostile`, `role=net-hostile`: the port offered to the
    /// block or network back end.
    blk_port: Option<(u16, Result<u32, Errno>)>,
    /// The ports offered to each `wait=` domain (client only).
    offers: [Option<(u16, Result<u32, Errno>)>; MAX_WAIT],
}

/// Reads the store port and (client) offers a port to each domain it
/// waits for; all of them are masked once shared_info is mapped, so that
/// the upcall handler leaves them to `SCHEDOP_poll`.
pub(super) fn early(ctx: &mut Ctx, opts: &Options) -> Early {
    let store_port = ctx
        .hc
        .hvm_get_param(HVM_PARAM_STORE_EVTCHN)
        .map(|p| p as u32);
    if let Ok(p) = store_port {
        ctx.mask_early(p);
    }
    let mut offers = [None; MAX_WAIT];
    if opts.role == Role::XsClient {
        for (slot, &d) in offers.iter_mut().zip(&opts.wait[..opts.nwait]) {
            let r = ctx.hc.evtchn_alloc_unbound(d);
            if let Ok(p) = r {
                ctx.mask_early(p);
            }
            *slot = Some((d, r));
        }
    }
    let mut blk_port = None;
    if matches!(
        opts.role,
        Role::BlkHostile | Role::NetHostile | Role::NetPeer
    ) {
        let be = opts.peer.unwrap_or(1);
        let r = ctx.hc.evtchn_alloc_unbound(be);
        if let Ok(p) = r {
            ctx.mask_early(p);
        }
        blk_port = Some((be, r));
    }
    Early {
        store_port,
        blk_port,
        offers,
    }
}

/// Waits until `port` is pending (clears it) or system time passes
/// `deadline`; true if it came.
fn wait_port(ctx: &Ctx, port: u32, deadline: u64) -> Result<bool, Why> {
    loop {
        if events::is_pending(port) {
            events::clear_pending(port);
            return Ok(true);
        }
        let Some(now) = now_ns(ctx) else {
            fail!("no system time");
        };
        if now >= deadline {
            return Ok(false);
        }
        if let Err(e) = ctx.hc.sched_poll(&[port], deadline) {
            fail!("SCHEDOP_poll: {e}");
        }
    }
}

fn deadline(ctx: &Ctx, ns: u64) -> Result<u64, Why> {
    match now_ns(ctx) {
        Some(t) => Ok(t + ns),
        None => fail!("no system time"),
    }
}

/// The store page, mapped.
struct Store {
    mem: RawMem<'static>,
    port: u32,
}

/// Maps the store page and waits until the server has connected it.
fn connect(ctx: &mut Ctx, early: &Early) -> Result<Store, Why> {
    let port = match early.store_port {
        Ok(0) => fail!("HVM_PARAM_STORE_EVTCHN is 0: no xenstore"),
        Ok(p) => p,
        Err(e) => fail!("HVMOP_get_param(STORE_EVTCHN): {e}"),
    };
    let pfn = match ctx.hc.hvm_get_param(HVM_PARAM_STORE_PFN) {
        Ok(p) => p,
        Err(e) => fail!("HVMOP_get_param(STORE_PFN): {e}"),
    };
    // 0: no xenstore; ~0: late init (a toolstack allocates it later),
    // which our hypervisor never does; beyond 512 GiB: not mappable here.
    if pfn == 0 || pfn >= 1 << 27 {
        fail!("HVM_PARAM_STORE_PFN {pfn:#x}: no page we can map");
    }
    let gib = (pfn >> 18) as usize;
    if gib != 0 {
        crate::boot::map_gib(gib);
    }
    let Some(base) = NonNull::new((pfn << 12) as *mut u8) else {
        fail!("store page at 0");
    };
    // SAFETY: the page at `pfn` is the xenstore page the hypervisor gave
    // this domain, identity-mapped above (or in GiB 0) for the rest of the
    // run; no Rust reference to it exists, and every access goes through
    // this `RawMem`'s atomics (the server is the only other party).
    let mem = match unsafe { RawMem::new(base, 4096) } {
        Ok(m) => m,
        Err(e) => fail!("RawMem: {e:?}"),
    };
    let until = deadline(ctx, REQUEST_NS)?;
    loop {
        let c = mem.load_u32(pv_rings::xenstore::XS_CONNECTION_OFFSET, Ordering::Acquire);
        if c == XENSTORE_CONNECTED {
            break;
        }
        if !wait_port(ctx, port, until)? {
            fail!("connection stays {c} (not CONNECTED) for 30 s");
        }
    }
    Ok(Store { mem, port })
}

/// A reply copied out of the ring.
struct Reply {
    kind: u32,
    len: usize,
    buf: [u8; REPLY_MAX],
}

impl Reply {
    fn payload(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The client's end: requests one at a time, replies matched by `req_id`,
/// watch events counted.
struct Client {
    front: XenstoreFront<RawMem<'static>>,
    reader: MessageReader,
    writer: MessageWriter,
    port: u32,
    next_id: u32,
    /// Watch events seen.
    events: u32,
    /// The last event's payload (`path\0token\0`).
    event: [u8; 64],
    event_len: usize,
}

impl Client {
    fn new(store: &Store) -> Result<Self, Why> {
        let front = match XenstoreFront::attach(store.mem) {
            Ok(f) => f,
            Err(e) => fail!("the ring page's indices are invalid: {e:?}"),
        };
        Ok(Self {
            front,
            reader: MessageReader::new(),
            writer: MessageWriter::new(),
            port: store.port,
            next_id: 1,
            events: 0,
            event: [0; 64],
            event_len: 0,
        })
    }

    /// Moves bytes both ways once; notifies the server if indices moved.
    /// Returns the reply to `want`, if it came.
    fn step(&mut self, ctx: &Ctx, want: u32) -> Result<Option<Reply>, Why> {
        let before = (self.front.req.prod(), self.front.rsp.cons());
        if let Err(e) = self.writer.flush(&mut self.front.req) {
            fail!("request ring: {e:?}");
        }
        let mut got = None;
        loop {
            let (h, p) = match self.reader.poll(&mut self.front.rsp) {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => fail!("response ring: {e:?}"),
            };
            if h.r#type == XS_WATCH_EVENT {
                self.events += 1;
                let n = p.len().min(self.event.len());
                self.event[..n].copy_from_slice(&p[..n]);
                self.event_len = n;
            } else if h.req_id == want {
                let mut r = Reply {
                    kind: h.r#type,
                    len: p.len().min(REPLY_MAX),
                    buf: [0; REPLY_MAX],
                };
                r.buf[..r.len].copy_from_slice(&p[..r.len]);
                got = Some(r);
            }
        }
        if before != (self.front.req.prod(), self.front.rsp.cons())
            && let Err(e) = ctx.hc.evtchn_send(self.port)
        {
            fail!("EVTCHNOP_send({}): {e}", self.port);
        }
        Ok(got)
    }

    /// Sends one request (`parts` concatenated) and waits for its reply.
    fn request(&mut self, ctx: &Ctx, kind: u32, parts: &[&[u8]]) -> Result<Reply, Why> {
        let mut payload = [0u8; 256];
        let mut len = 0;
        for p in parts {
            if len + p.len() > payload.len() {
                fail!("request too long");
            }
            payload[len..len + p.len()].copy_from_slice(p);
            len += p.len();
        }
        let id = self.next_id;
        self.next_id += 1;
        let hdr = XsdSockmsg {
            r#type: kind,
            req_id: id,
            tx_id: 0,
            len: 0,
        };
        if let Err(e) = self.writer.start(hdr, &payload[..len]) {
            fail!("framer: {e:?}");
        }
        let until = deadline(ctx, REQUEST_NS)?;
        loop {
            // Cleared before looking at the ring: an answer written after
            // the look leaves the port pending, and the poll returns.
            events::clear_pending(self.port);
            if let Some(r) = self.step(ctx, id)?
                && !self.writer.busy()
            {
                return Ok(r);
            }
            let e = self.front.error();
            if e != XENSTORE_ERROR_NONE {
                fail!("the server set error {e}");
            }
            if !wait_port(ctx, self.port, until)? {
                fail!("no reply to request type {kind} within 30 s");
            }
        }
    }

    /// Waits until at least `n` watch events have come.
    fn await_events(&mut self, ctx: &Ctx, n: u32) -> Result<(), Why> {
        let until = deadline(ctx, REQUEST_NS)?;
        loop {
            events::clear_pending(self.port);
            self.step(ctx, 0)?;
            if self.events >= n {
                return Ok(());
            }
            if !wait_port(ctx, self.port, until)? {
                fail!("{} watch events within 30 s, want {n}", self.events);
            }
        }
    }
}

/// A reply that must be `kind` with `payload`.
fn expect_reply(what: &str, r: &Reply, kind: u32, payload: &[u8]) -> Outcome {
    if r.kind == XS_ERROR {
        let name = core::str::from_utf8(r.payload()).unwrap_or("?");
        fail!("{what}: error {}", name.trim_end_matches('\0'));
    }
    if r.kind != kind || r.payload() != payload {
        fail!(
            "{what}: type {} payload {:?}, want type {kind} {:?}",
            r.kind,
            core::str::from_utf8(r.payload()).unwrap_or("?"),
            core::str::from_utf8(payload).unwrap_or("?")
        );
    }
    Ok(())
}

/// A decimal number without allocation.
struct Dec {
    buf: [u8; 20],
    start: usize,
}

impl Dec {
    fn new(mut v: u64) -> Self {
        let mut d = Self {
            buf: [0; 20],
            start: 20,
        };
        loop {
            d.start -= 1;
            d.buf[d.start] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                return d;
            }
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

fn check_connect(ctx: &mut Ctx, early: &Early) -> Result<Store, Why> {
    let store = connect(ctx, early)?;
    let f = store.mem.load_u32(
        pv_rings::xenstore::XS_SERVER_FEATURES_OFFSET,
        Ordering::Acquire,
    );
    if f & XENSTORE_SERVER_FEATURE_ERROR == 0 {
        fail!("server_features {f:#x} lack the error field (2)");
    }
    let e = store
        .mem
        .load_u32(pv_rings::xenstore::XS_ERROR_OFFSET, Ordering::Acquire);
    if e != XENSTORE_ERROR_NONE {
        fail!("error field {e} on a fresh connection");
    }
    Ok(store)
}

/// `role=xs-client`.
pub(super) fn client<W: Write>(r: &mut Report<W>, ctx: &mut Ctx, opts: &Options, early: &Early) {
    let waited = early.offers.iter().flatten().count();
    if waited > 0 {
        let o = await_hostile(r, ctx, early);
        record(r, "xenstore_hostile_cut_off", o);
        if let Some((target, _)) = early.offers[0] {
            unprivileged(r, ctx, target, early);
        }
    }
    let o = check_connect(ctx, early);
    let store = match o {
        Ok(s) => {
            record(r, "xenstore_connect", Ok(()));
            Some(s)
        }
        Err(w) => {
            record(r, "xenstore_connect", Err(w));
            None
        }
    };
    let mut client = store.as_ref().map(Client::new);
    let mut run = |r: &mut Report<W>, name: &str, f: &dyn Fn(&mut Client) -> Outcome| {
        let o = match client.as_mut() {
            Some(Ok(c)) => f(c),
            Some(Err(w)) => Err(why(format_args!("{w}"))),
            None => Err(why(format_args!("not connected"))),
        };
        record(r, name, o);
    };
    let c: &Ctx = ctx;
    run(r, "xenstore_read_name", &|cl| {
        let rep = cl.request(c, XS_READ, &[b"name\0"])?;
        match opts.xsname {
            Some(n) => expect_reply("READ name", &rep, XS_READ, n.as_bytes()),
            None if rep.kind == XS_READ && rep.len > 0 => Ok(()),
            None => fail!("READ name: type {} length {}", rep.kind, rep.len),
        }
    });
    run(r, "xenstore_read_domid", &|cl| {
        let Some(domid) = c.domid else {
            fail!("own domid unknown");
        };
        let rep = cl.request(c, XS_READ, &[b"domid\0"])?;
        expect_reply("READ domid", &rep, XS_READ, Dec::new(domid.into()).bytes())
    });
    run(r, "xenstore_write_read", &|cl| {
        let v = Dec::new(c.domid.unwrap_or(0).into());
        let rep = cl.request(c, XS_WRITE, &[b"data/x\0", b"value-", v.bytes()])?;
        expect_reply("WRITE data/x", &rep, XS_WRITE, b"OK\0")?;
        let rep = cl.request(c, XS_READ, &[b"data/x\0"])?;
        let mut want = [0u8; 32];
        want[..6].copy_from_slice(b"value-");
        want[6..6 + v.bytes().len()].copy_from_slice(v.bytes());
        expect_reply("READ data/x", &rep, XS_READ, &want[..6 + v.bytes().len()])?;
        // A missing node is an error reply, and the ring goes on.
        let rep = cl.request(c, XS_READ, &[b"data/missing\0"])?;
        if rep.kind != XS_ERROR || rep.payload() != b"ENOENT\0" {
            fail!("READ data/missing: type {}, want ERROR ENOENT", rep.kind);
        }
        Ok(())
    });
    run(r, "xenstore_watch", &|cl| {
        let before = cl.events;
        let rep = cl.request(c, XS_WATCH, &[b"data/x\0", b"tok\0"])?;
        expect_reply("WATCH data/x", &rep, XS_WATCH, b"OK\0")?;
        // The event a new watch always fires, then one for a write.
        cl.await_events(c, before + 1)?;
        let rep = cl.request(c, XS_WRITE, &[b"data/x\0", b"changed"])?;
        expect_reply("WRITE data/x", &rep, XS_WRITE, b"OK\0")?;
        cl.await_events(c, before + 2)?;
        let ev = &cl.event[..cl.event_len];
        if ev != b"data/x\0tok\0" {
            fail!(
                "watch event {:?}, want \"data/x\\0tok\\0\"",
                core::str::from_utf8(ev).unwrap_or("?")
            );
        }
        let rep = cl.request(c, XS_UNWATCH, &[b"data/x\0", b"tok\0"])?;
        expect_reply("UNWATCH data/x", &rep, XS_UNWATCH, b"OK\0")
    });
    // The hostile domains may stop now.
    for (d, p) in early.offers.iter().flatten() {
        if let Ok(p) = p {
            let _ = ctx.hc.evtchn_send(*p);
            r.note(format_args!("xs-client: released d{d}"));
        }
    }
}

/// Waits for the signal of every hostile domain (sent once the server
/// has cut it off).
fn await_hostile<W: Write>(r: &mut Report<W>, ctx: &mut Ctx, early: &Early) -> Outcome {
    let until = deadline(ctx, HANDSHAKE_NS)?;
    for (d, p) in early.offers.iter().flatten() {
        let port = match p {
            Ok(p) => *p,
            Err(e) => fail!("EVTCHNOP_alloc_unbound(remote d{d}): {e}"),
        };
        if !wait_port(ctx, port, until)? {
            fail!("no signal from d{d} on port {port}");
        }
        r.note(format_args!("xs-client: d{d} reports it was cut off"));
    }
    Ok(())
}

/// The privileged calls the service domain makes, from this unprivileged
/// domain, against domain `target` (alive: it waits for our release).
/// Each answer is Xen's.
fn unprivileged<W: Write>(r: &mut Report<W>, ctx: &mut Ctx, target: u16, early: &Early) {
    let hc = ctx.hc;
    // Xen 4.17 `xsm_domctl`: getdomaininfo is XSM_XS_PRIV, -EPERM for a
    // domain that is neither the xenstore nor the control domain (also
    // about itself).
    let o = (|| -> Outcome {
        for d in [target, ctx.domid.unwrap_or(target)] {
            match hc.getdomaininfo(d) {
                Err(e) if e.get() == EPERM => {}
                Err(e) => fail!("getdomaininfo(d{d}): {e}, want EPERM"),
                Ok(i) => fail!("getdomaininfo(d{d}) answered (flags {:#x})", i.flags),
            }
        }
        Ok(())
    })();
    record(r, "unpriv_getdomaininfo", o);
    // Xen 4.17 `xsm_sysctl`: XSM_PRIV, -EPERM.
    let o = (|| -> Outcome {
        let mut buf = [XenDomctlGetdomaininfo::default(); 4];
        match hc.getdomaininfolist(0, &mut buf) {
            Err(e) if e.get() == EPERM => {}
            Err(e) => fail!("getdomaininfolist: {e}, want EPERM"),
            Ok(n) => fail!("getdomaininfolist answered {n} domains"),
        }
        if buf.iter().any(|i| i.domain != 0 || i.flags != 0) {
            fail!("the refused call wrote our buffer");
        }
        Ok(())
    })();
    record(r, "unpriv_getdomaininfolist", o);
    // VIRQ_DOM_EXC is a global VIRQ: Xen 4.17 let any domain bind it (and
    // never raised it there); since 4.21 (`evtchn_bind_virq`, "don't allow
    // binding a global virq from any domain") a domain that is not its
    // handler gets -EBUSY, which our hypervisor answers too.
    let o = match hc.evtchn_bind_virq(VIRQ_DOM_EXC, 0) {
        Err(e) if e.get() == EBUSY => Ok(()),
        Err(e) => Err(why(format_args!(
            "bind_virq(VIRQ_DOM_EXC): {e}, want EBUSY"
        ))),
        Ok(p) => {
            let _ = hc.evtchn_close(p);
            Err(why(format_args!("bind_virq(VIRQ_DOM_EXC) gave port {p}")))
        }
    };
    record(r, "unpriv_bind_virq_dom_exc", o);
    // The target's grant 1 names the service domain: Xen refuses an entry
    // that does not name the mapper with GNTST_general_error
    // (`_set_status_v1`), not -EPERM.
    let o = (|| -> Outcome {
        let Some(gfn) = ctx.hole_gfn else {
            fail!("no free frame to map at");
        };
        let mut map = [GnttabMapGrantRef {
            host_addr: gfn << 12,
            flags: GNTMAP_host_map,
            r#ref: GNTTAB_RESERVED_XENSTORE,
            dom: target,
            ..Default::default()
        }];
        // SAFETY: the target frame is a hole (no RAM, no Rust value): a
        // wrong success only adds a p2m entry there, which is undone below.
        if let Err(e) = unsafe { hc.grant_table_op(&mut map) } {
            fail!("GNTTABOP_map_grant_ref: {e}");
        }
        if map[0].status == GNTST_okay {
            let mut un = [GnttabUnmapGrantRef {
                host_addr: gfn << 12,
                handle: map[0].handle,
                ..Default::default()
            }];
            // SAFETY: removes the mapping just made; nothing uses the frame.
            let _ = unsafe { hc.grant_table_op(&mut un) };
            fail!("mapped d{target}'s xenstore grant");
        }
        if map[0].status != GNTST_general_error {
            fail!(
                "map of d{target}'s grant 1: status {}, want GNTST_general_error (-1)",
                map[0].status
            );
        }
        Ok(())
    })();
    record(r, "unpriv_map_store_grant", o);
    // Xen 4.17 `evtchn_bind_interdomain`: a remote port that is not
    // unbound toward the caller is -EINVAL (the store port is, or was,
    // unbound toward the service domain). Every domain's store port is the
    // first its builder allocates: the same number as ours.
    let o = match early.store_port {
        Ok(port) if port != 0 => match hc.evtchn_bind_interdomain(target, port) {
            Err(e) if e.get() == EINVAL => Ok(()),
            Err(e) => Err(why(format_args!(
                "bind_interdomain(d{target}, {port}): {e}, want EINVAL"
            ))),
            Ok(p) => {
                let _ = hc.evtchn_close(p);
                Err(why(format_args!(
                    "bound d{target}'s store port {port} as our port {p}"
                )))
            }
        },
        _ => Err(why(format_args!("no store port of our own to go by"))),
    };
    record(r, "unpriv_bind_store_port", o);
}

/// A small deterministic generator (xorshift32) for the garbage.
struct XorShift(u32);

impl XorShift {
    fn next(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
}

/// Garbage messages with small payloads the server answers before the
/// bad header.
const GARBAGE_MESSAGES: u32 = 3;

/// Writes `bytes` into the request ring and notifies.
fn put(ctx: &Ctx, front: &mut XenstoreFront<RawMem<'static>>, port: u32, bytes: &[u8]) -> Outcome {
    match front.req.write(bytes) {
        Ok(n) if n == bytes.len() => {}
        Ok(n) => fail!("only {n} of {} bytes fit the ring", bytes.len()),
        Err(e) => fail!("request ring: {e:?}"),
    }
    if let Err(e) = ctx.hc.evtchn_send(port) {
        fail!("EVTCHNOP_send({port}): {e}");
    }
    Ok(())
}

/// Breaks the protocol as `kind` says; returns the `error` the server
/// must set.
fn corrupt<W: Write>(r: &mut Report<W>, ctx: &Ctx, store: &Store, kind: &str) -> Result<u32, Why> {
    let mut front = match XenstoreFront::attach(store.mem) {
        Ok(f) => f,
        Err(e) => fail!("ring page: {e:?}"),
    };
    match kind {
        "indices" => {
            // The producer far past the ring: prod - cons > 1024.
            let cons = store.mem.load_u32(XS_REQ_CONS_OFFSET, Ordering::Acquire);
            let prod = cons.wrapping_add(16 * XENSTORE_RING_SIZE);
            store
                .mem
                .store_u32(XS_REQ_PROD_OFFSET, prod, Ordering::Release);
            r.note(format_args!("xs-hostile: req_cons {cons}, req_prod {prod}"));
            if let Err(e) = ctx.hc.evtchn_send(store.port) {
                fail!("EVTCHNOP_send({}): {e}", store.port);
            }
            Ok(XENSTORE_ERROR_RINGIDX)
        }
        "oversize" => {
            let hdr = XsdSockmsg {
                r#type: XS_WRITE,
                req_id: 1,
                tx_id: 0,
                len: 5000,
            };
            r.note(format_args!(
                "xs-hostile: a WRITE header claiming 5000 payload bytes (max {XENSTORE_PAYLOAD_MAX})"
            ));
            put(ctx, &mut front, store.port, hdr.as_bytes())?;
            Ok(XENSTORE_ERROR_PROTO)
        }
        "garbage" => {
            let mut rng = XorShift(0x9E37_79B9);
            let mut buf = [0u8; 512];
            let mut len = 0;
            for i in 0..GARBAGE_MESSAGES {
                let n = (rng.next() % 48) as usize;
                let hdr = XsdSockmsg {
                    r#type: rng.next() % (XS_TYPE_COUNT + 4),
                    req_id: 0x4000 + i,
                    tx_id: 0,
                    len: n as u32,
                };
                buf[len..len + 16].copy_from_slice(hdr.as_bytes());
                len += 16;
                for b in &mut buf[len..len + n] {
                    *b = rng.next() as u8;
                }
                len += n;
            }
            // Then sixteen random bytes as a header; its length word gets
            // the top bit so that it is certainly over the limit.
            for b in &mut buf[len..len + 16] {
                *b = rng.next() as u8;
            }
            buf[len + 15] |= 0x80;
            len += 16;
            r.note(format_args!(
                "xs-hostile: {GARBAGE_MESSAGES} random messages, then a random header ({len} bytes)"
            ));
            put(ctx, &mut front, store.port, &buf[..len])?;
            Ok(XENSTORE_ERROR_PROTO)
        }
        _ => fail!("unknown kind `{kind}` (indices, oversize, garbage)"),
    }
}

/// After `garbage`: the server answered each random message (matched by
/// `req_id`) before it refused the bad header.
fn garbage_answered(store: &Store) -> Outcome {
    let mut front = match XenstoreFront::attach(store.mem) {
        Ok(f) => f,
        Err(e) => fail!("ring page: {e:?}"),
    };
    let mut reader = MessageReader::new();
    let mut want = 0x4000;
    loop {
        match reader.poll(&mut front.rsp) {
            Ok(Some((h, _))) => {
                if h.r#type == XS_WATCH_EVENT {
                    continue;
                }
                if h.req_id != want {
                    fail!("reply req_id {:#x}, want {want:#x}", h.req_id);
                }
                want += 1;
            }
            Ok(None) => break,
            Err(e) => fail!("response ring: {e:?}"),
        }
    }
    if want != 0x4000 + GARBAGE_MESSAGES {
        fail!(
            "{} replies to {GARBAGE_MESSAGES} garbage messages",
            want - 0x4000
        );
    }
    Ok(())
}

fn hostile_ring<W: Write>(
    r: &mut Report<W>,
    ctx: &mut Ctx,
    opts: &Options,
    early: &Early,
) -> Outcome {
    let store = connect(ctx, early)?;
    let want = corrupt(r, ctx, &store, opts.kind)?;
    let until = deadline(ctx, REQUEST_NS)?;
    let err = loop {
        events::clear_pending(store.port);
        let e = store
            .mem
            .load_u32(pv_rings::xenstore::XS_ERROR_OFFSET, Ordering::Acquire);
        if e != XENSTORE_ERROR_NONE {
            break e;
        }
        if !wait_port(ctx, store.port, until)? {
            fail!("the server set no error within 30 s");
        }
    };
    r.note(format_args!("xs-hostile: the server set error {err}"));
    if err != want {
        fail!("error {err}, want {want}");
    }
    if opts.kind == "garbage" {
        garbage_answered(&store)?;
    }
    // An event storm at the cut-off ring changes nothing, and the
    // hypervisor goes on answering.
    for _ in 0..100 {
        if let Err(e) = ctx.hc.evtchn_send(store.port) {
            fail!("EVTCHNOP_send({}) after the cut: {e}", store.port);
        }
    }
    if let Err(e) = ctx.hc.xen_version() {
        fail!("XENVER_version after the cut: {e}");
    }
    let e = store
        .mem
        .load_u32(pv_rings::xenstore::XS_ERROR_OFFSET, Ordering::Acquire);
    if e != want {
        fail!("error changed to {e} after the cut");
    }
    Ok(())
}

/// Tells the client (domain `peer`, which offered us a port) that we were
/// cut off, then waits for its answer.
fn hostile_signal<W: Write>(r: &mut Report<W>, ctx: &mut Ctx, peer: u16) -> Outcome {
    let until = deadline(ctx, HANDSHAKE_NS)?;
    let mut bound = None;
    'scan: loop {
        for p in 1..=PING_SCAN_PORTS {
            if let Ok(local) = ctx.hc.evtchn_bind_interdomain(peer, p) {
                bound = Some(local);
                break 'scan;
            }
        }
        if now_ns(ctx).is_none_or(|t| t >= until) {
            break;
        }
        let _ = ctx.hc.sched_yield();
    }
    let Some(port) = bound else {
        fail!("d{peer} offers no unbound port to us among ports 1..={PING_SCAN_PORTS}");
    };
    events::mask(port);
    events::clear_pending(port);
    if let Err(e) = ctx.hc.evtchn_send(port) {
        fail!("EVTCHNOP_send({port}): {e}");
    }
    r.note(format_args!("xs-hostile: told d{peer} on port {port}"));
    if !wait_port(ctx, port, until)? {
        fail!("no answer from d{peer}");
    }
    let _ = ctx.hc.evtchn_close(port);
    Ok(())
}

/// `role=xs-hostile`.
pub(super) fn hostile<W: Write>(r: &mut Report<W>, ctx: &mut Ctx, opts: &Options, early: &Early) {
    let o = hostile_ring(r, ctx, opts, early);
    record(r, "xenstore_hostile", o);
    if let Some(peer) = opts.peer {
        let o = hostile_signal(r, ctx, peer);
        record(r, "xenstore_hostile_signal", o);
    }
}

/// `role=xs-bench`: [`BENCH_READS`] `XS_READ` round trips of one node:
/// request, notify, wait for the reply's event (`SCHEDOP_poll`), read it.
pub(super) fn bench<W: Write>(r: &mut Report<W>, ctx: &mut Ctx, early: &Early) -> Outcome {
    let store = check_connect(ctx, early)?;
    let mut cl = Client::new(&store)?;
    let rep = cl.request(ctx, XS_WRITE, &[b"data/bench\0", b"0123456789"])?;
    expect_reply("WRITE data/bench", &rep, XS_WRITE, b"OK\0")?;
    // Let the other domains finish and sleep (as `role=bench` does).
    if let Some(now) = now_ns(ctx) {
        let _ = ctx.hc.sched_poll(&[store.port], now + 200_000_000);
    }
    let calib = super::bench::calibrate();
    r.note(format_args!(
        "BENCH calibration insns={} tsc_ticks={calib}",
        2 * super::bench::CALIB_ITERS
    ));
    let mut t0 = 0;
    for i in 0..BENCH_WARMUP + BENCH_READS {
        if i == BENCH_WARMUP {
            t0 = events::rdtsc();
        }
        let rep = cl.request(ctx, XS_READ, &[b"data/bench\0"])?;
        if rep.kind != XS_READ || rep.payload() != b"0123456789" {
            fail!("READ {i}: type {} length {}", rep.kind, rep.len);
        }
    }
    let total = events::rdtsc() - t0;
    let calib2 = super::bench::calibrate();
    r.note(format_args!(
        "BENCH calibration insns={} tsc_ticks={calib2}",
        2 * super::bench::CALIB_ITERS
    ));
    r.note(format_args!(
        "BENCH xenstore n={BENCH_READS} roundtrip_ticks={} roundtrip_insns={}",
        total / BENCH_READS,
        super::bench::insns(total, calib) / BENCH_READS
    ));
    Ok(())
}

/// The ring page and the data page of `role=blk-hostile`.
static BLK_RING: Page = Page::new();
static BLK_DATA: Page = Page::new();
/// Grant refs of `role=blk-hostile`: the ring, the data page, a page
/// granted to another domain, and one never granted.
const BLK_RING_GREF: u32 = 40;
const BLK_DATA_GREF: u32 = 41;
const BLK_FOREIGN_GREF: u32 = 42;
const BLK_UNGRANTED_GREF: u32 = 43;
/// The vbd (`xvda`).
const BLK_VBD: &str = "device/vbd/51712";

type BlkFront = pv_rings::FrontRing<RawMem<'static>, xen_abi::BlkifRequest, xen_abi::BlkifResponse>;

/// Reads a node as a string (into `buf`), `None` if missing.
fn read_node<'b>(
    cl: &mut Client,
    ctx: &Ctx,
    parts: &[&[u8]],
    buf: &'b mut [u8; REPLY_MAX],
) -> Result<Option<&'b str>, Why> {
    let rep = cl.request(ctx, XS_READ, parts)?;
    if rep.kind != XS_READ {
        return Ok(None);
    }
    buf[..rep.len].copy_from_slice(rep.payload());
    Ok(core::str::from_utf8(&buf[..rep.len]).ok())
}

/// Waits until the back end's `state` reads `want`.
fn await_backend_state(cl: &mut Client, ctx: &Ctx, backend: &[u8], want: &str) -> Outcome {
    let until = deadline(ctx, REQUEST_NS)?;
    loop {
        let mut b = [0u8; REPLY_MAX];
        let st = read_node(cl, ctx, &[backend, b"/state\0"], &mut b)?;
        if st == Some(want) {
            return Ok(());
        }
        if now_ns(ctx).is_some_and(|t| t >= until) {
            fail!("back end state {st:?}, want {want} (30 s)");
        }
        let soon = deadline(ctx, 5_000_000)?;
        let _ = ctx.hc.sched_poll(&[cl.port], soon);
        events::clear_pending(cl.port);
    }
}

/// Sends `reqs`, signals the back end and waits for as many responses.
fn blk_submit(
    ctx: &Ctx,
    front: &mut BlkFront,
    port: u32,
    reqs: &[xen_abi::BlkifRequest],
    out: &mut [xen_abi::BlkifResponse],
) -> Outcome {
    for q in reqs {
        if let Err(e) = front.put_request(q) {
            fail!("put_request: {e:?}");
        }
    }
    let _ = front.push_requests();
    if let Err(e) = ctx.hc.evtchn_send(port) {
        fail!("EVTCHNOP_send({port}): {e}");
    }
    let until = deadline(ctx, REQUEST_NS)?;
    let mut n = 0;
    while n < reqs.len() {
        events::clear_pending(port);
        match front.pop_response() {
            Ok(Some(r)) => {
                out[n] = r;
                n += 1;
                continue;
            }
            Ok(None) => {}
            Err(e) => fail!("response ring: {e:?}"),
        }
        // rsp_event = rsp_cons + 1 before sleeping, else the back end
        // notifies only the first response.
        match front.final_check_for_responses() {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => fail!("response ring: {e:?}"),
        }
        if !wait_port(ctx, port, until)? {
            fail!("{n} of {} responses within 30 s", reqs.len());
        }
    }
    Ok(())
}

fn blk_req(op: u8, id: u64, sector: u64, segs: &[(u32, u8, u8)]) -> xen_abi::BlkifRequest {
    let mut r = xen_abi::BlkifRequest {
        operation: op,
        nr_segments: segs.len() as u8,
        handle: 51712u32 as u16,
        id,
        sector_number: sector,
        ..Default::default()
    };
    for (s, &(gref, f, l)) in r.seg.iter_mut().zip(segs) {
        s.gref = gref;
        s.first_sect = f;
        s.last_sect = l;
    }
    r
}

/// `role=blk-hostile`: connects as blkfront does, writes and reads back a
/// page, sends bad requests (each must be answered with an error, the
/// ring going on), then claims more requests than the ring holds (the
/// back end must close the vbd: state 5).
pub(super) fn blk_hostile<W: Write>(r: &mut Report<W>, ctx: &mut Ctx, early: &Early) {
    let o = blk_hostile_run(r, ctx, early);
    if o.is_err() {
        record(r, "blk_hostile", o);
    }
}

fn blk_hostile_run<W: Write>(r: &mut Report<W>, ctx: &mut Ctx, early: &Early) -> Outcome {
    let (be, port) = match early.blk_port {
        Some((be, Ok(p))) => (be, p),
        Some((be, Err(e))) => fail!("EVTCHNOP_alloc_unbound(remote d{be}): {e}"),
        None => fail!("no port"),
    };
    let store = check_connect(ctx, early)?;
    let mut cl = Client::new(&store)?;
    let c: &Ctx = ctx;
    // The back end's directory, from our front-end node.
    let mut bbuf = [0u8; REPLY_MAX];
    let Some(backend) = read_node(&mut cl, c, &[BLK_VBD.as_bytes(), b"/backend\0"], &mut bbuf)?
    else {
        fail!("no {BLK_VBD}/backend");
    };
    let mut backend_z = [0u8; REPLY_MAX + 1];
    backend_z[..backend.len()].copy_from_slice(backend.as_bytes());
    let backend = &backend_z[..backend.len()];
    let connect = (|| -> Outcome {
        await_backend_state(&mut cl, c, backend, "2")?;
        Ok(())
    })();
    let connected = connect.is_ok();
    record(r, "blk_initwait", connect);
    if !connected {
        return Ok(());
    }
    let mut sbuf = [0u8; REPLY_MAX];
    let sectors: u64 = read_node(&mut cl, c, &[backend, b"/sectors\0"], &mut sbuf)?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // Grants: the ring and the data page to the back end, a page to
    // another domain; 43 stays invalid.
    let table = grants::table(ctx)?;
    grants::put_entry(table, BLK_RING_GREF, be, BLK_RING.gfn(), GTF_permit_access);
    grants::put_entry(table, BLK_DATA_GREF, be, BLK_DATA.gfn(), GTF_permit_access);
    grants::put_entry(
        table,
        BLK_FOREIGN_GREF,
        be + 100,
        BLK_DATA.gfn(),
        GTF_permit_access,
    );
    let Some(base) = NonNull::new(BLK_RING.ptr()) else {
        fail!("ring page at 0");
    };
    // SAFETY: `BLK_RING` holds no Rust value; from now on it is touched
    // only through this `RawMem` (atomics) and by the back end.
    let mem = match unsafe { RawMem::new(base, 4096) } {
        Ok(m) => m,
        Err(e) => fail!("RawMem: {e:?}"),
    };
    let mut front: BlkFront = match pv_rings::FrontRing::init(mem) {
        Ok(f) => f,
        Err(e) => fail!("ring: {e:?}"),
    };
    let c: &Ctx = ctx;
    let vbd = BLK_VBD.as_bytes();
    let ring_ref = Dec::new(BLK_RING_GREF.into());
    let evtchn = Dec::new(port.into());
    let o = (|| -> Outcome {
        for (k, v) in [
            (&b"/ring-ref\0"[..], ring_ref.bytes()),
            (b"/event-channel\0", evtchn.bytes()),
            (b"/protocol\0", b"x86_64-abi"),
            (b"/state\0", b"3"),
        ] {
            let rep = cl.request(c, XS_WRITE, &[vbd, k, v])?;
            expect_reply("WRITE", &rep, XS_WRITE, b"OK\0")?;
        }
        await_backend_state(&mut cl, c, backend, "4")?;
        let rep = cl.request(c, XS_WRITE, &[vbd, b"/state\0", b"4"])?;
        expect_reply("WRITE state", &rep, XS_WRITE, b"OK\0")
    })();
    let ok = o.is_ok();
    record(r, "blk_connect", o);
    if !ok {
        return Ok(());
    }
    let data = BLK_DATA.ptr();
    let o = (|| -> Outcome {
        if sectors < 16 {
            fail!("sectors {sectors}");
        }
        for i in 0..4096 {
            // SAFETY: our data page, byte `i` < 4096; volatile (the back
            // end's grant copies read and write it).
            unsafe { data.add(i).write_volatile((i * 7 + 3) as u8) };
        }
        let mut rsp = [xen_abi::BlkifResponse::default(); 2];
        let w = blk_req(BLKIF_OP_WRITE, 1, 8, &[(BLK_DATA_GREF, 0, 7)]);
        blk_submit(c, &mut front, port, &[w], &mut rsp)?;
        if (rsp[0].id, rsp[0].status) != (1, BLKIF_RSP_OKAY) {
            fail!("write: id {} status {}", rsp[0].id, rsp[0].status);
        }
        for i in 0..4096 {
            // SAFETY: as above.
            unsafe { data.add(i).write_volatile(0) };
        }
        let rd = blk_req(BLKIF_OP_READ, 2, 8, &[(BLK_DATA_GREF, 0, 7)]);
        blk_submit(c, &mut front, port, &[rd], &mut rsp)?;
        if (rsp[0].id, rsp[0].status) != (2, BLKIF_RSP_OKAY) {
            fail!("read: id {} status {}", rsp[0].id, rsp[0].status);
        }
        for i in 0..4096 {
            // SAFETY: as above.
            let b = unsafe { data.add(i).read_volatile() };
            if b != (i * 7 + 3) as u8 {
                fail!("read back byte {i}: {b:#x}");
            }
        }
        Ok(())
    })();
    record(r, "blk_write_read", o);
    let o = (|| -> Outcome {
        let mut over = blk_req(BLKIF_OP_READ, 10, 0, &[(BLK_DATA_GREF, 0, 7)]);
        over.nr_segments = 12;
        let cases: [(xen_abi::BlkifRequest, i16, &str); 9] = [
            (over, BLKIF_RSP_ERROR, "nr_segments 12"),
            (
                blk_req(BLKIF_OP_READ, 11, 0, &[(BLK_DATA_GREF, 5, 2)]),
                BLKIF_RSP_ERROR,
                "first_sect > last_sect",
            ),
            (
                blk_req(BLKIF_OP_READ, 12, 0, &[(BLK_DATA_GREF, 0, 8)]),
                BLKIF_RSP_ERROR,
                "last_sect 8",
            ),
            (
                blk_req(BLKIF_OP_READ, 13, sectors - 7, &[(BLK_DATA_GREF, 0, 7)]),
                BLKIF_RSP_ERROR,
                "past the disk",
            ),
            (
                blk_req(BLKIF_OP_READ, 14, 0, &[(BLK_UNGRANTED_GREF, 0, 7)]),
                BLKIF_RSP_ERROR,
                "ungranted ref",
            ),
            (
                blk_req(BLKIF_OP_READ, 15, 0, &[(BLK_FOREIGN_GREF, 0, 7)]),
                BLKIF_RSP_ERROR,
                "ref granted to another domain",
            ),
            (
                blk_req(BLKIF_OP_RESERVED_1, 16, 0, &[]),
                BLKIF_RSP_EOPNOTSUPP,
                "operation 4",
            ),
            (
                blk_req(BLKIF_OP_READ, 17, 0, &[(BLK_DATA_GREF, 0, 7)]),
                BLKIF_RSP_OKAY,
                "id 17",
            ),
            (
                blk_req(BLKIF_OP_READ, 17, 8, &[(BLK_DATA_GREF, 0, 7)]),
                BLKIF_RSP_OKAY,
                "id 17 again",
            ),
        ];
        let reqs = cases.map(|c| c.0);
        let mut rsp = [xen_abi::BlkifResponse::default(); 9];
        blk_submit(c, &mut front, port, &reqs, &mut rsp)?;
        for ((q, want, what), got) in cases.iter().zip(&rsp) {
            if (got.id, got.status) != (q.id, *want) {
                fail!(
                    "{what}: id {} status {}, want id {} status {want}",
                    got.id,
                    got.status,
                    q.id
                );
            }
        }
        Ok(())
    })();
    record(r, "blk_hostile_requests", o);
    let o = (|| -> Outcome {
        // 100 requests claimed on a 32-slot ring.
        let lie = front.req_prod_pvt().wrapping_add(100);
        mem.store_u32(0, lie, Ordering::Release);
        if let Err(e) = ctx.hc.evtchn_send(port) {
            fail!("EVTCHNOP_send: {e}");
        }
        await_backend_state(&mut cl, c, backend, "5")?;
        r.note(format_args!(
            "blk-hostile: the back end closed the vbd (state 5)"
        ));
        // The store still answers.
        let mut b = [0u8; REPLY_MAX];
        if read_node(&mut cl, c, &[b"name\0"], &mut b)?.is_none() {
            fail!("READ name after the ring was closed");
        }
        Ok(())
    })();
    record(r, "blk_hostile_ring", o);
    Ok(())
}

/// The pages of `role=net-hostile`: tx ring, rx ring, packet data.
static NET_TX: Page = Page::new();
static NET_RX: Page = Page::new();
static NET_DATA: Page = Page::new();
/// Grant refs of `role=net-hostile`: the rings, the data page, a page
/// granted to another domain, and one never granted.
const NET_TX_GREF: u32 = 50;
const NET_RX_GREF: u32 = 51;
const NET_DATA_GREF: u32 = 52;
const NET_FOREIGN_GREF: u32 = 53;
const NET_UNGRANTED_GREF: u32 = 54;
const NET_VIF: &str = "device/vif/0";

type NetTx = pv_rings::FrontRing<RawMem<'static>, NetifTxRequest, NetifTxResponse>;
type NetRx = pv_rings::FrontRing<RawMem<'static>, NetifRxRequest, NetifRxResponse>;

fn tx_req(gref: u32, offset: u16, flags: u16, id: u16, size: u16) -> NetifTxRequest {
    NetifTxRequest {
        gref,
        offset,
        flags,
        id,
        size,
    }
}

/// Sends `reqs` on the tx ring, signals the back end and waits for as
/// many responses.
fn net_submit(
    ctx: &Ctx,
    front: &mut NetTx,
    port: u32,
    reqs: &[NetifTxRequest],
    out: &mut [NetifTxResponse],
) -> Outcome {
    for q in reqs {
        if let Err(e) = front.put_request(q) {
            fail!("put_request: {e:?}");
        }
    }
    let _ = front.push_requests();
    if let Err(e) = ctx.hc.evtchn_send(port) {
        fail!("EVTCHNOP_send({port}): {e}");
    }
    let until = deadline(ctx, REQUEST_NS)?;
    let mut n = 0;
    while n < reqs.len() {
        events::clear_pending(port);
        match front.pop_response() {
            Ok(Some(r)) => {
                out[n] = r;
                n += 1;
                continue;
            }
            Ok(None) => {}
            Err(e) => fail!("response ring: {e:?}"),
        }
        match front.final_check_for_responses() {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => fail!("response ring: {e:?}"),
        }
        if !wait_port(ctx, port, until)? {
            fail!("{n} of {} responses within 30 s", reqs.len());
        }
    }
    Ok(())
}

fn ring_mem(page: &'static Page) -> Result<RawMem<'static>, Why> {
    let Some(base) = NonNull::new(page.ptr()) else {
        fail!("ring page at 0");
    };
    // SAFETY: the page holds no Rust value; from now on it is touched
    // only through this `RawMem` (atomics) and by the back end.
    match unsafe { RawMem::new(base, 4096) } {
        Ok(m) => Ok(m),
        Err(e) => fail!("RawMem: {e:?}"),
    }
}

/// `role=net-hostile`: connects as netfront does (both rings, one event
/// channel, request-rx-copy, feature-rx-notify, straight to Connected),
/// sends a good broadcast frame, then a batch of bad packets (each must
/// be answered with an error, the extra slot with NULL, the good packet
/// after them OKAY), never posts a receive buffer, and finally publishes
/// a packet cut short (the back end must close the vif: state 5).
pub(super) fn net_hostile<W: Write>(r: &mut Report<W>, ctx: &mut Ctx, early: &Early) {
    let o = net_hostile_run(r, ctx, early);
    if o.is_err() {
        record(r, "net_hostile", o);
    }
}

fn net_hostile_run<W: Write>(r: &mut Report<W>, ctx: &mut Ctx, early: &Early) -> Outcome {
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
    grants::put_entry(table, NET_TX_GREF, be, NET_TX.gfn(), GTF_permit_access);
    grants::put_entry(table, NET_RX_GREF, be, NET_RX.gfn(), GTF_permit_access);
    grants::put_entry(table, NET_DATA_GREF, be, NET_DATA.gfn(), GTF_permit_access);
    grants::put_entry(
        table,
        NET_FOREIGN_GREF,
        be + 100,
        NET_DATA.gfn(),
        GTF_permit_access,
    );
    let tx_mem = ring_mem(&NET_TX)?;
    let mut tx: NetTx = match pv_rings::FrontRing::init(tx_mem) {
        Ok(f) => f,
        Err(e) => fail!("tx ring: {e:?}"),
    };
    // The rx ring is initialised and never given a buffer.
    let _rx: NetRx = match pv_rings::FrontRing::init(ring_mem(&NET_RX)?) {
        Ok(f) => f,
        Err(e) => fail!("rx ring: {e:?}"),
    };
    let c: &Ctx = ctx;
    let vif = NET_VIF.as_bytes();
    let tx_ref = Dec::new(NET_TX_GREF.into());
    let rx_ref = Dec::new(NET_RX_GREF.into());
    let evtchn = Dec::new(port.into());
    let o = (|| -> Outcome {
        await_backend_state(&mut cl, c, backend, "2")?;
        let mut mbuf = [0u8; REPLY_MAX];
        let mac = read_node(&mut cl, c, &[vif, b"/mac\0"], &mut mbuf)?;
        if mac.is_none_or(|m| !m.starts_with("00:16:3e:")) {
            fail!("mac {mac:?}");
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
        await_backend_state(&mut cl, c, backend, "4")
    })();
    let ok = o.is_ok();
    record(r, "net_connect", o);
    if !ok {
        return Ok(());
    }
    // A 60-byte broadcast frame from 00:16:3e:00:00:<domid> (EtherType
    // 0x88b5, local experimental).
    let data = NET_DATA.ptr();
    let mut frame = [0u8; 60];
    frame[..6].copy_from_slice(&[0xff; 6]);
    frame[6..12].copy_from_slice(&[0, 0x16, 0x3e, 0, 0, 2]);
    frame[12..14].copy_from_slice(&[0x88, 0xb5]);
    for (i, b) in frame.iter().enumerate() {
        // SAFETY: our data page, byte `i` < 60; volatile (the back end's
        // grant copies read it).
        unsafe { data.add(i).write_volatile(*b) };
    }
    let o = (|| -> Outcome {
        let mut rsp = [NetifTxResponse::default(); 1];
        net_submit(
            c,
            &mut tx,
            port,
            &[tx_req(NET_DATA_GREF, 0, 0, 1, 60)],
            &mut rsp,
        )?;
        if (rsp[0].id, rsp[0].status) != (1, NETIF_RSP_OKAY) {
            fail!("good packet: id {} status {}", rsp[0].id, rsp[0].status);
        }
        Ok(())
    })();
    record(r, "net_tx_good", o);
    let o = (|| -> Outcome {
        // A GSO extra with MSS 0, as the slot after a first slot: type 1,
        // flags 0, size 0 in `gref`; TCPv4 in `offset`.
        let bad_gso = tx_req(u32::from(XEN_NETIF_EXTRA_TYPE_GSO), 1, 0, 0, 0);
        let cases: [(NetifTxRequest, i16, &str); 10] = [
            (
                tx_req(NET_DATA_GREF, 4000, 0, 2, 200),
                NETIF_RSP_ERROR,
                "past the page",
            ),
            (
                tx_req(NET_UNGRANTED_GREF, 0, 0, 3, 60),
                NETIF_RSP_ERROR,
                "ungranted ref",
            ),
            (
                tx_req(NET_FOREIGN_GREF, 0, 0, 4, 60),
                NETIF_RSP_ERROR,
                "ref granted to another domain",
            ),
            (
                tx_req(NET_DATA_GREF, 0, NETTXF_extra_info, 5, 60),
                NETIF_RSP_ERROR,
                "GSO MSS 0",
            ),
            (bad_gso, NETIF_RSP_NULL, "its extra slot"),
            (
                tx_req(NET_DATA_GREF, 0, 0, 6, 10),
                NETIF_RSP_ERROR,
                "a 10-byte runt",
            ),
            (
                tx_req(NET_DATA_GREF, 0, NETTXF_more_data, 7, 20),
                NETIF_RSP_ERROR,
                "sizes that do not add up",
            ),
            (
                tx_req(NET_DATA_GREF, 0, 0, 8, 30),
                NETIF_RSP_ERROR,
                "its second slot",
            ),
            (
                tx_req(NET_DATA_GREF, 0, NETTXF_csum_blank, 9, 60),
                NETIF_RSP_OKAY,
                "a good packet after them",
            ),
            (
                tx_req(NET_DATA_GREF, 0, 0, 9, 60),
                NETIF_RSP_OKAY,
                "the same id again",
            ),
        ];
        let reqs = cases.map(|c| c.0);
        let mut rsp = [NetifTxResponse::default(); 10];
        net_submit(c, &mut tx, port, &reqs, &mut rsp)?;
        for ((q, want, what), got) in cases.iter().zip(&rsp) {
            let id_ok = *want == NETIF_RSP_NULL || got.id == q.id;
            if !id_ok || got.status != *want {
                fail!(
                    "{what}: id {} status {}, want id {} status {want}",
                    got.id,
                    got.status,
                    q.id
                );
            }
        }
        Ok(())
    })();
    record(r, "net_tx_hostile", o);
    let o = (|| -> Outcome {
        // A packet whose last published slot says more data follows.
        let _ = tx.put_request(&tx_req(NET_DATA_GREF, 0, NETTXF_more_data, 10, 60));
        let _ = tx.push_requests();
        if let Err(e) = ctx.hc.evtchn_send(port) {
            fail!("EVTCHNOP_send: {e}");
        }
        await_backend_state(&mut cl, c, backend, "5")?;
        r.note(format_args!(
            "net-hostile: the back end closed the vif (state 5)"
        ));
        let mut b = [0u8; REPLY_MAX];
        if read_node(&mut cl, c, &[b"name\0"], &mut b)?.is_none() {
            fail!("READ name after the vif was closed");
        }
        Ok(())
    })();
    record(r, "net_hostile_ring", o);
    Ok(())
}
