//! `grant_table_op(cmd, uop, count)`: the hypercall, on top of
//! [`crate::gnttab`].
//!
//! Batched operations (map, unmap, unmap_and_replace, copy, swap) take
//! `count` argument structs at `uop`, report a `GNTST_*` status in each and
//! return 0; a fault on an argument returns `-EFAULT` with the earlier
//! entries done. More than [`OPS_PER_EXIT`] entries continue over several
//! exits (the call is re-executed with `uop` advanced and `count`
//! reduced, as Xen's continuation does). Single-struct operations
//! (setup_table, query_size, get_status_frames) need `count == 1`.
//!
//! A 32-bit caller passes the compat layouts where they differ
//! ([`xen_abi::compat`]): setup_table (4-byte frame numbers), copy and
//! get_status_frames; the other structs are the same for both.
//!
//! Differences from Xen on x86, on purpose: `GNTTABOP_transfer`,
//! `GNTTABOP_dump_table` and `GNTTABOP_cache_flush` are `-ENOSYS` (transfer
//! is for PV guests; cache_flush is Arm-only in current Xen); transitive
//! grants (v2) are refused as a bad entry.

use zerocopy::IntoBytes;

use xen_abi::compat as cm;
use xen_abi::grant_table as g;

use crate::gnttab::{self, Status};
use crate::hv::Hypervisor;
use crate::hypercall::{Call, read_arg, write_arg};
use crate::platform::Platform;
use crate::types::{DomId, Errno, XenResult};

/// `cmd` bits above this carry a continuation argument (grant_table.h
/// `GNTTABOP_CONTINUATION_ARG_SHIFT`); only cache_flush uses them.
pub const GNTTABOP_CONTINUATION_ARG_SHIFT: u32 = 12;
/// The command part of `cmd`.
pub const GNTTABOP_CMD_MASK: u32 = (1 << GNTTABOP_CONTINUATION_ARG_SHIFT) - 1;
/// Entries handled per exit before a continuation.
pub const OPS_PER_EXIT: u32 = 128;
/// Copies handled per exit (each up to a page).
pub const COPIES_PER_EXIT: u32 = 32;

pub(crate) fn grant_table_op<P: Platform>(hv: &mut Hypervisor<P>, c: &mut Call) -> XenResult<u64> {
    let [cmd, uop, count, ..] = c.args;
    let (cmd, count) = (cmd as u32, count as u32);
    if (count as i32) < 0 {
        return Err(Errno::EINVAL);
    }
    let op = cmd & GNTTABOP_CMD_MASK;
    if op != g::GNTTABOP_cache_flush && cmd >> GNTTABOP_CONTINUATION_ARG_SHIFT != 0 {
        return Err(Errno::EINVAL);
    }
    match op {
        g::GNTTABOP_map_grant_ref => batch(
            hv,
            c,
            uop,
            count,
            OPS_PER_EXIT,
            |hv, d, a: &mut g::GnttabMapGrantRef| {
                let granter = if a.dom == DomId::SELF {
                    d
                } else {
                    DomId(a.dom)
                };
                let (st, h) = gnttab::map_grant(hv, d, a.host_addr, a.flags, granter, a.r#ref);
                a.status = st;
                if st == g::GNTST_okay {
                    a.handle = h;
                }
                0..32
            },
        ),
        g::GNTTABOP_unmap_grant_ref => batch(
            hv,
            c,
            uop,
            count,
            OPS_PER_EXIT,
            |hv, d, a: &mut g::GnttabUnmapGrantRef| {
                a.status = gnttab::unmap_grant(hv, d, a.host_addr, a.handle);
                20..22
            },
        ),
        g::GNTTABOP_unmap_and_replace => batch(
            hv,
            c,
            uop,
            count,
            OPS_PER_EXIT,
            |hv, d, a: &mut g::GnttabUnmapAndReplace| {
                // Translated guests cannot replace (Xen's
                // replace_grant_p2m_mapping): only new_addr 0, a plain unmap.
                a.status = if a.new_addr != 0 {
                    g::GNTST_general_error
                } else {
                    gnttab::unmap_grant(hv, d, a.host_addr, a.handle)
                };
                20..22
            },
        ),
        g::GNTTABOP_copy if c.long => batch(
            hv,
            c,
            uop,
            count,
            COPIES_PER_EXIT,
            |hv, d, a: &mut g::GnttabCopy| {
                a.status = gnttab::copy_one(hv, d, a);
                36..38
            },
        ),
        g::GNTTABOP_copy => batch(
            hv,
            c,
            uop,
            count,
            COPIES_PER_EXIT,
            |hv, d, a: &mut cm::CompatGnttabCopy| {
                let ptr = |p: cm::CompatGnttabCopyPtr| g::GnttabCopyPtr {
                    u: p.u.into(),
                    domid: p.domid,
                    offset: p.offset,
                    pad: 0,
                };
                let native = g::GnttabCopy {
                    source: ptr(a.source),
                    dest: ptr(a.dest),
                    len: a.len,
                    flags: a.flags,
                    status: 0,
                    pad: 0,
                };
                a.status = gnttab::copy_one(hv, d, &native);
                20..22
            },
        ),
        g::GNTTABOP_swap_grant_ref => {
            gnttab::ensure_init(hv, c.d)?;
            batch(
                hv,
                c,
                uop,
                count,
                OPS_PER_EXIT,
                |hv, d, a: &mut g::GnttabSwapGrantRef| {
                    a.status = gnttab::swap_refs(hv, d, a.ref_a, a.ref_b);
                    8..10
                },
            )
        }
        g::GNTTABOP_setup_table => {
            if count != 1 {
                return Err(Errno::EINVAL);
            }
            // The status is at 8 in both layouts.
            let (dom, nr_frames, frame_list) = if c.long {
                let a: g::GnttabSetupTable = read_arg(hv, c, uop)?;
                (a.dom, a.nr_frames, a.frame_list)
            } else {
                let a: cm::CompatGnttabSetupTable = read_arg(hv, c, uop)?;
                (a.dom, a.nr_frames, a.frame_list.into())
            };
            let status = match resolve(hv, c, dom) {
                Err(st) => st,
                Ok(t) => match gnttab::setup_table(hv, t, nr_frames) {
                    Err(st) => st,
                    Ok(list) => {
                        let virt = hv.guest_virt(c.d, c.mode).ok_or(Errno::ESRCH)?;
                        let mut st = g::GNTST_okay;
                        for (i, gfn) in list.iter().enumerate() {
                            let r = if c.long {
                                let la = frame_list.wrapping_add(i as u64 * 8);
                                virt.write(la, &gfn.to_le_bytes())
                            } else if let Ok(gfn) = u32::try_from(*gfn) {
                                let la = frame_list.wrapping_add(i as u64 * 4);
                                virt.write(la, &gfn.to_le_bytes())
                            } else {
                                // A 32-bit xen_pfn_t cannot hold it (nor
                                // the !0 of a frame not placed yet): Xen's
                                // compat layer stops there.
                                st = g::GNTST_address_too_big;
                                break;
                            };
                            if r.is_err() {
                                st = g::GNTST_bad_virt_addr;
                                if !c.long {
                                    break;
                                }
                            }
                        }
                        st
                    }
                },
            };
            hv.guest_virt(c.d, c.mode)
                .ok_or(Errno::ESRCH)?
                .write(uop.wrapping_add(8), &status.to_le_bytes())?;
            Ok(0)
        }
        g::GNTTABOP_query_size => {
            if count != 1 {
                return Err(Errno::EINVAL);
            }
            let mut a: g::GnttabQuerySize = read_arg(hv, c, uop)?;
            match resolve(hv, c, a.dom) {
                Err(st) => a.status = st,
                Ok(t) => {
                    gnttab::ensure_init(hv, t)?;
                    let gt = &hv.domain(t).ok_or(Errno::ESRCH)?.gnttab;
                    a.nr_frames = gt.nr_frames();
                    a.max_nr_frames = gt.max_frames();
                    a.status = g::GNTST_okay;
                }
            }
            write_arg(hv, c, uop, &a)?;
            Ok(0)
        }
        g::GNTTABOP_set_version => {
            let mut a: g::GnttabSetVersion = read_arg(hv, c, uop)?;
            let r = gnttab::set_version(hv, c.d, a.version);
            a.version = hv.domain(c.d).ok_or(Errno::ESRCH)?.gnttab.version();
            write_arg(hv, c, uop, &a)?;
            r.map(|()| 0)
        }
        g::GNTTABOP_get_status_frames => {
            if count != 1 {
                return Err(Errno::EINVAL);
            }
            // Only the handle's width differs for 32-bit callers.
            let mut a: g::GnttabGetStatusFrames = if c.long {
                read_arg(hv, c, uop)?
            } else {
                let a: cm::CompatGnttabGetStatusFrames = read_arg(hv, c, uop)?;
                g::GnttabGetStatusFrames {
                    nr_frames: a.nr_frames,
                    dom: a.dom,
                    status: a.status,
                    frame_list: a.frame_list.into(),
                }
            };
            a.status = match resolve(hv, c, a.dom) {
                Err(st) => st,
                Ok(t) => {
                    let dom = hv.domain(t).ok_or(Errno::ESRCH)?;
                    match gnttab::status_frames(dom, a.nr_frames) {
                        Err(st) => st,
                        Ok(list) => {
                            let virt = hv.guest_virt(c.d, c.mode).ok_or(Errno::ESRCH)?;
                            let mut st = g::GNTST_okay;
                            for (i, gfn) in list.iter().enumerate() {
                                let la = a.frame_list.wrapping_add(i as u64 * 8);
                                if virt.write(la, &gfn.to_le_bytes()).is_err() {
                                    st = g::GNTST_bad_virt_addr;
                                }
                            }
                            st
                        }
                    }
                }
            };
            write_field(hv, c, uop, &a, 6..8)?;
            Ok(0)
        }
        g::GNTTABOP_get_version => {
            let mut a: g::GnttabGetVersion = read_arg(hv, c, uop)?;
            let t = match resolve(hv, c, a.dom) {
                Ok(t) => t,
                Err(g::GNTST_bad_domain) => return Err(Errno::ESRCH),
                Err(_) => return Err(Errno::EPERM),
            };
            a.version = hv.domain(t).ok_or(Errno::ESRCH)?.gnttab.version();
            write_field(hv, c, uop, &a, 4..8)?;
            Ok(0)
        }
        // PV only (transfer), removed (dump_table), Arm only (cache_flush).
        _ => Err(Errno::ENOSYS),
    }
}

/// The domain a `dom` field names: the caller (or `DOMID_SELF`), or any
/// domain for the privileged.
fn resolve<P: Platform>(hv: &Hypervisor<P>, c: &Call, domid: u16) -> Result<DomId, Status> {
    if domid == DomId::SELF || domid == c.d.0 {
        return Ok(c.d);
    }
    if hv.domain(DomId(domid)).is_none() {
        return Err(g::GNTST_bad_domain);
    }
    if !hv.domain(c.d).is_some_and(|d| d.privileged) {
        return Err(g::GNTST_permission_denied);
    }
    Ok(DomId(domid))
}

/// Writes bytes `r` of `a` back to the argument at `la`.
fn write_field<P: Platform, T: IntoBytes + zerocopy::Immutable>(
    hv: &Hypervisor<P>,
    c: &Call,
    la: u64,
    a: &T,
    r: core::ops::Range<usize>,
) -> XenResult<()> {
    hv.guest_virt(c.d, c.mode)
        .ok_or(Errno::ESRCH)?
        .write(la.wrapping_add(r.start as u64), &a.as_bytes()[r])
}

/// Runs `f` on up to `limit` of the `count` structs at `uop`, writing back
/// the bytes it returns; continues the call when more remain.
fn batch<
    P: Platform,
    T: zerocopy::FromBytes + IntoBytes + zerocopy::Immutable + zerocopy::KnownLayout,
>(
    hv: &mut Hypervisor<P>,
    c: &mut Call,
    uop: u64,
    count: u32,
    limit: u32,
    mut f: impl FnMut(&mut Hypervisor<P>, DomId, &mut T) -> core::ops::Range<usize>,
) -> XenResult<u64> {
    let size = core::mem::size_of::<T>() as u64;
    let n = count.min(limit);
    let mut res = Ok(0);
    for i in 0..n as u64 {
        let la = uop.wrapping_add(i * size);
        let mut a: T = match read_arg(hv, c, la) {
            Ok(a) => a,
            Err(e) => {
                res = Err(e);
                break;
            }
        };
        let r = f(hv, c.d, &mut a);
        if let Err(e) = write_field(hv, c, la, &a, r) {
            res = Err(e);
            break;
        }
    }
    if let Some(dom) = hv.domain_mut(c.d) {
        dom.p2m.flush();
    }
    if res.is_ok() && count > n {
        c.args[1] = uop.wrapping_add(n as u64 * size);
        c.args[2] = (count - n) as u64;
        hv.restart = true;
    }
    res
}
