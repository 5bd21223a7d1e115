//! Grants between two domains, after the ping-pong of `role=ping` and
//! `role=pong` (issue 7: "a grant shared and copied between two domains",
//! "a foreign frame cannot be mapped without a grant").
//!
//! Protocol (grant table v1, by convention, no xenstore):
//!
//! 1. Pong, after its checks and before it answers the first ping, maps
//!    grant frame 0 (if `grant_self` has not), fills [`SHARED_PAGE`] with
//!    [`pattern`] and writes three entries: [`SHARED_GREF`] grants that
//!    page to ping, [`UNGRANTED_GREF`] stays invalid (no flags), and
//!    [`SELF_GREF`] grants the page to pong itself, not to ping.
//! 2. Ping runs the ping-pong. Its end means pong got past step 1, so ping
//!    then runs `grant_shared` (map [`SHARED_GREF`] at a free frame, read
//!    the pattern, write [`REPLY`], unmap), `grant_copy` (`GNTTABOP_copy`
//!    from the grant into its own frame and back) and
//!    `hostile_map_without_grant` (the other two refs and
//!    `XENMAPSPACE_gmfn_foreign` must all be refused, nothing mapped).
//! 3. Ping sends one more event ("done") on the ping-pong port; pong checks
//!    the reply in its page and that no use of the grant is left
//!    (`GTF_reading`/`GTF_writing` clear), revokes its entries, and answers
//!    ("ack"); ping then closes the port.
//!
//! Every wait is bounded (`await_port`). Both domains run this same kernel,
//! so [`SHARED_PAGE`] has the same frame number in both: ping knows which
//! of pong's frames to try through `XENMAPSPACE_gmfn_foreign`.

use super::*;

/// The grant of [`SHARED_PAGE`] to ping (next to `grant_self`'s ref 8).
pub const SHARED_GREF: u32 = GREF + 1;
/// A ref pong never grants (flags 0).
pub const UNGRANTED_GREF: u32 = GREF + 2;
/// A ref pong grants to itself, not to ping.
pub const SELF_GREF: u32 = GREF + 3;
/// What ping writes at offset 0 of the mapped page (then its domid).
pub const REPLY: [u8; 16] = *b"reply from ping!";
/// Where ping's copy-back lands in pong's page, and how long it is.
const COPY_OFF: usize = 2048;
const COPY_LEN: usize = 64;
/// Bytes at the start of the page that `grant_shared` may change.
const REPLY_AREA: usize = 64;
/// How long pong waits for ping's "done" after the ping-pong, and ping for
/// the "ack" (ping's grant checks take a handful of hypercalls).
const DONE_WAIT_NS: u64 = 60_000_000_000;
const ACK_WAIT_NS: u64 = 10_000_000_000;

/// Pong's page granted to ping (same frame number in both domains).
static SHARED_PAGE: Page = Page::new();
/// Ping's own frames for `GNTTABOP_copy`.
static COPY_IN_PAGE: Page = Page::new();
static COPY_OUT_PAGE: Page = Page::new();
static COPY_BACK_PAGE: Page = Page::new();

/// Byte `i` of pong's page as pong fills it (its domid in it, so ping
/// knows whose page it sees).
pub fn pattern(owner: u16, i: usize) -> u8 {
    (i * 13 + 5 + usize::from(owner) * 31) as u8
}

/// Byte `i` of ping's copy-back message.
fn message(i: usize) -> u8 {
    0xC0 ^ (i as u8)
}

/// Grant frame 0, mapped at `GRANT_TABLE_PAGE` once (as `grant_self` does).
pub(super) fn table(ctx: &mut Ctx) -> Result<*mut u8, Why> {
    if !ctx.gnttab_ready {
        let q = match ctx.hc.gnttab_query_size() {
            Ok(q) => q,
            Err(e) => fail!("GNTTABOP_query_size: {e}"),
        };
        if q.status != GNTST_okay {
            fail!("GNTTABOP_query_size status {}", q.status);
        }
        let mut xatp = XenAddToPhysmap {
            domid: DOMID_SELF,
            size: 0,
            space: XENMAPSPACE_grant_table,
            idx: 0,
            gpfn: GRANT_TABLE_PAGE.gfn(),
        };
        // SAFETY: `GRANT_TABLE_PAGE` holds no Rust value and is only
        // touched with volatile accesses.
        if let Err(e) = unsafe { ctx.hc.add_to_physmap(&mut xatp) } {
            fail!("XENMEM_add_to_physmap(grant_table 0): {e}");
        }
        ctx.gnttab_ready = true;
    }
    Ok(GRANT_TABLE_PAGE.ptr())
}

/// Writes v1 entry `gref`: domid and frame first, then the flags that
/// publish it.
pub(super) fn put_entry(table: *mut u8, gref: u32, domid: u16, frame: u64, flags: u16) {
    let off = gref as usize * 8;
    assert!(off + 8 <= 4096);
    // SAFETY: entry `gref` lies inside the grant frame (checked); u16 and
    // u32 fields at aligned offsets; volatile, the hypervisor reads it.
    unsafe {
        let e = table.add(off);
        e.cast::<u16>().write_volatile(GTF_invalid);
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        e.add(2).cast::<u16>().write_volatile(domid);
        e.add(4).cast::<u32>().write_volatile(frame as u32);
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        e.cast::<u16>().write_volatile(flags);
    }
}

/// The flags of v1 entry `gref`.
fn entry_flags(table: *mut u8, gref: u32) -> u16 {
    let off = gref as usize * 8;
    assert!(off + 8 <= 4096);
    // SAFETY: as for `put_entry`.
    unsafe { table.add(off).cast::<u16>().read_volatile() }
}

/// Pong, step 1: fills the page and writes the three entries.
pub fn offer<W: Write>(r: &mut Report<W>, ctx: &mut Ctx, peer: u16) -> Outcome {
    let Some(me) = ctx.domid else {
        fail!("own domid unknown (CPUID base+4)");
    };
    let t = table(ctx)?;
    let page = &SHARED_PAGE;
    for i in 0..4096 {
        // SAFETY: inside the page, which holds no Rust value.
        unsafe { page.ptr().add(i).write_volatile(pattern(me, i)) };
    }
    put_entry(t, SHARED_GREF, peer, page.gfn(), GTF_permit_access);
    put_entry(t, UNGRANTED_GREF, 0, 0, GTF_invalid);
    put_entry(t, SELF_GREF, me, page.gfn(), GTF_permit_access);
    r.note(format_args!(
        "pong: gfn {:#x} granted to d{peer} as ref {SHARED_GREF} (ref {UNGRANTED_GREF} invalid, ref {SELF_GREF} granted to d{me})",
        page.gfn()
    ));
    Ok(())
}

/// Pong, step 3: waits for "done", checks the page, revokes, acks.
/// `port` is the ping-pong port if the ping-pong passed.
pub fn pong_side<W: Write>(
    r: &mut Report<W>,
    ctx: &mut Ctx,
    peer: u16,
    port: Option<u32>,
    shared: Outcome,
) -> Outcome {
    shared?;
    let Some(port) = port else {
        fail!("no ping-pong with d{peer}: nothing orders the grant checks");
    };
    let t = table(ctx)?;
    let done = await_port(ctx, port, DONE_WAIT_NS);
    settle(ctx);
    let done = done?;
    // Whatever happened, the grants end here, and ping is told.
    let flags = entry_flags(t, SHARED_GREF);
    for gref in [SHARED_GREF, UNGRANTED_GREF, SELF_GREF] {
        put_entry(t, gref, 0, 0, GTF_invalid);
    }
    let page = &SHARED_PAGE;
    let reply_ok = REPLY.iter().enumerate().all(|(i, &b)| page.byte(i) == b);
    let from = page.byte(REPLY.len());
    let copied = (0..COPY_LEN).all(|i| page.byte(COPY_OFF + i) == message(i));
    let intact = (REPLY_AREA..4096)
        .filter(|i| !(COPY_OFF..COPY_OFF + COPY_LEN).contains(i))
        .all(|i| Some(page.byte(i)) == ctx.domid.map(|me| pattern(me, i)));
    if done && let Err(e) = ctx.hc.evtchn_send(port) {
        fail!("EVTCHNOP_send({port}) (ack): {e}");
    }
    if !done {
        fail!("no \"done\" from d{peer} within 60 s of the ping-pong");
    }
    r.note(format_args!(
        "pong: reply {reply_ok} from d{from}, copy-back {copied}, rest intact {intact}, flags {flags:#x}"
    ));
    if !reply_ok {
        fail!("d{peer}'s reply is not in the granted page");
    }
    if u16::from(from) != peer {
        fail!("the reply names d{from}, want d{peer}");
    }
    if !intact {
        fail!("bytes past the reply and the copy-back changed");
    }
    if flags & (GTF_reading | GTF_writing) != 0 {
        fail!("entry {SHARED_GREF} still in use after d{peer} finished (flags {flags:#x})");
    }
    Ok(())
}

/// Ping, steps 2 and 3: the three checks, then "done" and the ack.
pub fn ping_side<W: Write>(r: &mut Report<W>, ctx: &mut Ctx, peer: u16, pinged: bool) {
    let ready = || -> Outcome {
        if !pinged {
            fail!("needs the ping-pong with d{peer} (it orders the grants)");
        }
        Ok(())
    };
    let o = ready().and_then(|()| grant_shared(r, ctx, peer));
    record(r, "grant_shared", o);
    let o = ready().and_then(|()| grant_copy(r, ctx, peer));
    record(r, "grant_copy", o);
    let o = ready().and_then(|()| hostile_map_without_grant(r, ctx, peer));
    record(r, "hostile_map_without_grant", o);
    let Some(port) = ctx.peer_port.take() else {
        return;
    };
    if let Err(e) = ctx.hc.evtchn_send(port) {
        r.note(format_args!("ping: EVTCHNOP_send({port}) (done): {e}"));
    } else {
        let acked = await_port(ctx, port, ACK_WAIT_NS);
        settle(ctx);
        match acked {
            Ok(true) => r.note(format_args!("ping: d{peer} acknowledged the grant checks")),
            Ok(false) => r.note(format_args!("ping: no ack from d{peer} within 10 s")),
            Err(e) => r.note(format_args!("ping: waiting for the ack: {e}")),
        }
    }
    let _ = ctx.hc.evtchn_close(port);
}

/// The second free frame past the memory map (`grant_self` uses the first).
fn map_target(ctx: &Ctx) -> Result<u64, Why> {
    match ctx.hole_gfn {
        Some(g) => Ok(g + 1),
        None => fail!("no free frames below 1 GiB to map at"),
    }
}

/// `grant_shared`, ping's side: map pong's grant, read, reply, unmap.
fn grant_shared<W: Write>(r: &mut Report<W>, ctx: &mut Ctx, peer: u16) -> Outcome {
    let Some(me) = ctx.domid else {
        fail!("own domid unknown (CPUID base+4)");
    };
    let gfn = map_target(ctx)?;
    let addr = gfn << 12;
    // SAFETY: the frame is a p2m hole past the memory map: no Rust value
    // lives there; the identity map covers it, only volatile accesses.
    let m = match unsafe {
        ctx.hc
            .gnttab_map_grant_ref(peer, SHARED_GREF, addr, GNTMAP_host_map)
    } {
        Ok(m) => m,
        Err(e) => fail!("GNTTABOP_map_grant_ref: {e}"),
    };
    if m.status != GNTST_okay {
        fail!(
            "GNTTABOP_map_grant_ref(d{peer} ref {SHARED_GREF}) status {} ({})",
            m.status,
            gntst_message(m.status).unwrap_or("?")
        );
    }
    let dst = addr as *mut u8;
    let mut bad = None;
    for i in 0..4096 {
        // SAFETY: the grant backs the frame until the unmap below.
        let b = unsafe { dst.add(i).read_volatile() };
        if b != pattern(peer, i) {
            bad = Some((i, b));
            break;
        }
    }
    for (i, &b) in REPLY.iter().enumerate() {
        // SAFETY: as above; the grant is writable.
        unsafe { dst.add(i).write_volatile(b) };
    }
    // SAFETY: as above.
    unsafe { dst.add(REPLY.len()).write_volatile(me as u8) };
    // SAFETY: nothing uses the mapping past this point.
    let un = unsafe { ctx.hc.gnttab_unmap_grant_ref(addr, m.handle) };
    r.note(format_args!(
        "ping: mapped d{peer} ref {SHARED_GREF} at {addr:#x} (handle {}), replied, unmapped",
        m.handle
    ));
    if let Some((i, b)) = bad {
        fail!(
            "mapped byte {i} is {b:#x}, want {:#x} (d{peer}'s pattern)",
            pattern(peer, i)
        );
    }
    match un {
        Err(e) => fail!("GNTTABOP_unmap_grant_ref: {e}"),
        Ok(st) if st != GNTST_okay => fail!("GNTTABOP_unmap_grant_ref status {st}"),
        Ok(_) => {}
    }
    probe_hole(ctx, gfn, "after the unmap")
}

/// The frame at `gfn` is a hole again: console_io reading it faults.
fn probe_hole(ctx: &Ctx, gfn: u64, when: &str) -> Outcome {
    // SAFETY: console_io write only reads the buffer.
    let got = unsafe {
        ctx.hc.call(
            __HYPERVISOR_console_io,
            [u64::from(CONSOLEIO_write), 16, gfn << 12, 0, 0],
        )
    };
    if got == -i64::from(EFAULT) {
        return Ok(());
    }
    fail!("frame {gfn:#x} {when}: console_io reading it returned {got}, want -EFAULT (a hole)")
}

/// A copy of `len` bytes between two ends.
fn copy_op(src: GnttabCopyPtr, dst: GnttabCopyPtr, len: u16, flags: u16) -> GnttabCopy {
    GnttabCopy {
        source: src,
        dest: dst,
        len,
        flags,
        ..Default::default()
    }
}

/// An end naming grant `gref` of `dom`.
fn gref_end(dom: u16, gref: u32, offset: usize) -> GnttabCopyPtr {
    GnttabCopyPtr {
        u: u64::from(gref),
        domid: dom,
        offset: offset as u16,
        pad: 0,
    }
}

/// An end naming one of our own frames.
fn frame_end(page: &Page, offset: usize) -> GnttabCopyPtr {
    GnttabCopyPtr {
        u: page.gfn(),
        domid: DOMID_SELF,
        offset: offset as u16,
        pad: 0,
    }
}

fn status_name(st: i16) -> &'static str {
    gntst_message(st).unwrap_or("?")
}

/// `grant_copy`: pong's page into ours, a message back into it (with a
/// second, malformed op in the same batch that must fail alone), and the
/// page again to see the message landed.
fn grant_copy<W: Write>(r: &mut Report<W>, ctx: &mut Ctx, peer: u16) -> Outcome {
    let (a, b, c) = (&COPY_IN_PAGE, &COPY_OUT_PAGE, &COPY_BACK_PAGE);
    a.fill(0);
    c.fill(0);
    b.fill(0);
    for i in 0..COPY_LEN {
        // SAFETY: inside the page, which holds no Rust value.
        unsafe { b.ptr().add(COPY_OFF + i).write_volatile(message(i)) };
    }
    // 1: pong's page (through the grant) into `a`.
    let mut ops = [copy_op(
        gref_end(peer, SHARED_GREF, 0),
        frame_end(a, 0),
        4096,
        GNTCOPY_source_gref,
    )];
    // SAFETY: the destination is `COPY_IN_PAGE`, read only with volatile
    // accesses.
    if let Err(e) = unsafe { ctx.hc.gnttab_copy(&mut ops) } {
        fail!("GNTTABOP_copy (grant to frame): {e}");
    }
    if ops[0].status != GNTST_okay {
        fail!(
            "GNTTABOP_copy d{peer} ref {SHARED_GREF} -> gfn {:#x}: status {} ({})",
            a.gfn(),
            ops[0].status,
            status_name(ops[0].status)
        );
    }
    if let Some(i) = (REPLY_AREA..4096).find(|&i| a.byte(i) != pattern(peer, i)) {
        fail!(
            "copied byte {i} is {:#x}, want {:#x} (d{peer}'s pattern)",
            a.byte(i),
            pattern(peer, i)
        );
    }
    // 2: the message into pong's page; the second op crosses the page
    // end and must fail on its own.
    let mut ops = [
        copy_op(
            frame_end(b, COPY_OFF),
            gref_end(peer, SHARED_GREF, COPY_OFF),
            COPY_LEN as u16,
            GNTCOPY_dest_gref,
        ),
        copy_op(
            frame_end(b, 4096 - 8),
            gref_end(peer, SHARED_GREF, 4096 - 8),
            16,
            GNTCOPY_dest_gref,
        ),
    ];
    // SAFETY: both destinations are pong's granted page, not our memory.
    if let Err(e) = unsafe { ctx.hc.gnttab_copy(&mut ops) } {
        fail!("GNTTABOP_copy (frame to grant): {e}");
    }
    if ops[0].status != GNTST_okay {
        fail!(
            "GNTTABOP_copy gfn {:#x} -> d{peer} ref {SHARED_GREF}: status {} ({})",
            b.gfn(),
            ops[0].status,
            status_name(ops[0].status)
        );
    }
    let crossing = ops[1].status;
    if crossing == GNTST_okay {
        fail!("a copy across the page end (offset 4088, 16 bytes) succeeded");
    }
    // 3: pong's page again, into `c`.
    let mut ops = [copy_op(
        gref_end(peer, SHARED_GREF, 0),
        frame_end(c, 0),
        4096,
        GNTCOPY_source_gref,
    )];
    // SAFETY: the destination is `COPY_BACK_PAGE`, read only with volatile
    // accesses.
    if let Err(e) = unsafe { ctx.hc.gnttab_copy(&mut ops) } {
        fail!("GNTTABOP_copy (grant to frame, again): {e}");
    }
    if ops[0].status != GNTST_okay {
        fail!(
            "GNTTABOP_copy d{peer} ref {SHARED_GREF} -> gfn {:#x}: status {}",
            c.gfn(),
            ops[0].status
        );
    }
    if let Some(i) = (0..COPY_LEN).find(|&i| c.byte(COPY_OFF + i) != message(i)) {
        fail!("the copied-back message differs at byte {i} in d{peer}'s page");
    }
    if let Some(i) = (REPLY_AREA..COPY_OFF).find(|&i| c.byte(i) != pattern(peer, i)) {
        fail!("byte {i} of d{peer}'s page changed by the copy-back");
    }
    r.note(format_args!(
        "ping: copied d{peer} ref {SHARED_GREF} in, {COPY_LEN} bytes back at {COPY_OFF}, and in again; the page-crossing op: status {crossing} ({})",
        status_name(crossing)
    ));
    Ok(())
}

/// `hostile_map_without_grant`: refs not granted to us and
/// `XENMAPSPACE_gmfn_foreign` must not give us pong's frame.
fn hostile_map_without_grant<W: Write>(r: &mut Report<W>, ctx: &mut Ctx, peer: u16) -> Outcome {
    let Some(gfn) = ctx.hole_gfn else {
        fail!("no free frame below 1 GiB to try");
    };
    let addr = gfn << 12;
    probe_hole(ctx, gfn, "before")?;
    let mut seen = [0i16; 2];
    for (k, (gref, what)) in [
        (UNGRANTED_GREF, "an invalid entry"),
        (SELF_GREF, "an entry granted to its owner"),
    ]
    .into_iter()
    .enumerate()
    {
        // SAFETY: the frame is a hole; should the map wrongly succeed, it
        // is unmapped below before anything reads it.
        let m = match unsafe {
            ctx.hc
                .gnttab_map_grant_ref(peer, gref, addr, GNTMAP_host_map)
        } {
            Ok(m) => m,
            Err(e) => fail!("GNTTABOP_map_grant_ref(d{peer} ref {gref}): {e}"),
        };
        if m.status == GNTST_okay {
            // SAFETY: the mapping just made; nothing uses it.
            let _ = unsafe { ctx.hc.gnttab_unmap_grant_ref(addr, m.handle) };
            fail!("d{peer} ref {gref} ({what}) mapped without a grant to us");
        }
        if m.status > 0 {
            fail!("d{peer} ref {gref}: status {} is no GNTST error", m.status);
        }
        seen[k] = m.status;
        probe_hole(ctx, gfn, "after the refused map")?;
    }
    // A copy through the ungranted ref must fail too.
    let mut ops = [copy_op(
        gref_end(peer, UNGRANTED_GREF, 0),
        frame_end(&COPY_IN_PAGE, 0),
        16,
        GNTCOPY_source_gref,
    )];
    // SAFETY: the destination is `COPY_IN_PAGE` (volatile accesses only).
    if let Err(e) = unsafe { ctx.hc.gnttab_copy(&mut ops) } {
        fail!("GNTTABOP_copy from d{peer} ref {UNGRANTED_GREF}: {e}");
    }
    if ops[0].status == GNTST_okay {
        fail!("GNTTABOP_copy from d{peer}'s ungranted ref {UNGRANTED_GREF} succeeded");
    }
    // Pong's frame without any grant: add_to_physmap ...
    let foreign = SHARED_PAGE.gfn();
    let mut xatp = XenAddToPhysmap {
        domid: DOMID_SELF,
        size: 0,
        space: XENMAPSPACE_gmfn_foreign,
        idx: foreign,
        gpfn: gfn,
    };
    // SAFETY: the target frame is a hole (no Rust value there).
    let single = unsafe { ctx.hc.add_to_physmap(&mut xatp) };
    if single.is_ok() {
        fail!("XENMEM_add_to_physmap(gmfn_foreign, idx {foreign:#x}) succeeded");
    }
    probe_hole(ctx, gfn, "after add_to_physmap(gmfn_foreign)")?;
    // ... and add_to_physmap_batch naming pong.
    let mut errs = [0i32; 1];
    // SAFETY: as above.
    let batch = unsafe {
        ctx.hc.add_to_physmap_batch(
            DOMID_SELF,
            XENMAPSPACE_gmfn_foreign as u16,
            peer,
            &[foreign],
            &[gfn],
            &mut errs,
        )
    };
    if batch.is_ok() && errs[0] == 0 {
        fail!("XENMEM_add_to_physmap_batch(gmfn_foreign, d{peer} frame {foreign:#x}) succeeded");
    }
    probe_hole(ctx, gfn, "after add_to_physmap_batch(gmfn_foreign)")?;
    let show = |res: Result<(), Errno>| match res {
        Ok(()) => 0,
        Err(e) => -e.get(),
    };
    r.note(format_args!(
        "ping: refused: ref {UNGRANTED_GREF} status {}, ref {SELF_GREF} status {}, copy status {}, gmfn_foreign {}, batch {} (errs {})",
        seen[0],
        seen[1],
        ops[0].status,
        show(single),
        show(batch),
        errs[0]
    ));
    Ok(())
}
