//! `memory_op`: the memory map, reservations and `add_to_physmap`.
//!
//! A 32-bit caller passes the compat layouts ([`xen_abi::compat`]): 4-byte
//! handles, `xen_ulong_t` and `xen_pfn_t`, so its extent arrays hold 4-byte
//! frame numbers (Xen's `compat_memory_op`).

use xen_abi::compat as cm;
use xen_abi::memory as m;

use crate::arch::P2mPerms;
use crate::hv::Hypervisor;
use crate::hypercall::{Call, read_arg, target_domain, write_arg};
use crate::p2m::{P2mEntry, P2mKind};
use crate::platform::Platform;
use crate::types::{DomId, Errno, Gfn, XenResult};

/// Low bits of the `memory_op` command; the rest is the start extent of a
/// continued call (memory.h `MEMOP_CMD_MASK`, `MEMOP_EXTENT_SHIFT`).
pub const MEMOP_CMD_MASK: u64 = (1 << 6) - 1;
/// See [`MEMOP_CMD_MASK`].
pub const MEMOP_EXTENT_SHIFT: u32 = 6;
/// Frames populated or released per exit before a continuation: 512
/// single frames, or one 2 MiB extent (Xen checks for preemption after
/// each extent; a whole call of 512 2 MiB extents would allocate and zero
/// 1 GiB under the lock in one exit).
pub const FRAMES_PER_EXIT: u64 = 512;
/// Largest extent order accepted (2 MiB).
pub const MAX_EXTENT_ORDER: u32 = 9;

pub(crate) fn memory_op<P: Platform>(hv: &mut Hypervisor<P>, c: &mut Call) -> XenResult<u64> {
    let [cmd, arg, ..] = c.args;
    let op = (cmd & MEMOP_CMD_MASK) as u32;
    let start = cmd >> MEMOP_EXTENT_SHIFT;
    if start != 0
        && !matches!(
            op,
            m::XENMEM_increase_reservation
                | m::XENMEM_decrease_reservation
                | m::XENMEM_populate_physmap
        )
    {
        return Err(Errno::ENOSYS);
    }
    match op {
        m::XENMEM_memory_map => {
            let a: m::XenMemoryMap = if c.long {
                read_arg(hv, c, arg)?
            } else {
                let a: cm::CompatMemoryMap = read_arg(hv, c, arg)?;
                m::XenMemoryMap {
                    nr_entries: a.nr_entries,
                    pad: 0,
                    buffer: a.buffer.into(),
                }
            };
            let dom = hv.domain(c.d).ok_or(Errno::ESRCH)?;
            if dom.memory_map.is_empty() {
                return Err(Errno::ENOSYS);
            }
            let n = (a.nr_entries as usize).min(dom.memory_map.len());
            let map = dom.memory_map[..n].to_vec();
            let virt = hv.guest_virt(c.d, c.mode).ok_or(Errno::ESRCH)?;
            for (i, e) in map.iter().enumerate() {
                virt.write_obj(a.buffer.wrapping_add(i as u64 * 20), e)?;
            }
            // nr_entries is at offset 0 in both layouts.
            write_arg(hv, c, arg, &(n as u32))?;
            Ok(0)
        }
        m::XENMEM_maximum_ram_page | m::XENMEM_maximum_gpfn => {
            let dom = hv.domain(c.d).ok_or(Errno::ESRCH)?;
            Ok(dom.p2m.max_gfn().map_or(0, |g| g.0))
        }
        m::XENMEM_current_reservation | m::XENMEM_maximum_reservation => {
            let mut b = [0u8; 2];
            hv.guest_virt(c.d, c.mode)
                .ok_or(Errno::ESRCH)?
                .read(arg, &mut b)?;
            let t = target_domain(hv, c, u16::from_le_bytes(b))?;
            let dom = hv.domain(t).ok_or(Errno::ESRCH)?;
            Ok(if op == m::XENMEM_current_reservation {
                dom.tot_pages
            } else {
                dom.max_pages
            })
        }
        m::XENMEM_add_to_physmap => {
            let a: m::XenAddToPhysmap = if c.long {
                read_arg(hv, c, arg)?
            } else {
                let a: cm::CompatAddToPhysmap = read_arg(hv, c, arg)?;
                m::XenAddToPhysmap {
                    domid: a.domid,
                    size: a.size,
                    space: a.space,
                    idx: a.idx.into(),
                    gpfn: a.gpfn.into(),
                }
            };
            let t = target_domain(hv, c, a.domid)?;
            add_to_physmap(hv, t, a.space, a.idx, a.gpfn)?;
            Ok(0)
        }
        m::XENMEM_populate_physmap
        | m::XENMEM_decrease_reservation
        | m::XENMEM_increase_reservation => reservation(hv, c, op, start, arg),
        _ => Err(Errno::ENOSYS),
    }
}

/// `XENMEM_add_to_physmap` for one frame.
pub fn add_to_physmap<P: Platform>(
    hv: &mut Hypervisor<P>,
    d: DomId,
    space: u32,
    idx: u64,
    gpfn: u64,
) -> XenResult<()> {
    let gfn = Gfn(gpfn);
    match space {
        m::XENMAPSPACE_shared_info => {
            if idx != 0 {
                return Err(Errno::EINVAL);
            }
            let dom = hv.domain(d).ok_or(Errno::ESRCH)?;
            if gpfn >= (1 << 40) {
                return Err(Errno::EINVAL);
            }
            let si = dom.shared_info;
            let old_gfn = dom.shared_info_gfn;
            if let Some(old) = old_gfn
                && old != gfn
            {
                hv.release_gfn(d, old)?;
            }
            // Whatever was at the target frame goes (Xen frees it too).
            if hv.domain(d).is_some_and(|x| x.p2m.contains(gfn)) {
                hv.release_gfn(d, gfn)?;
            }
            let dom = hv.domain_mut(d).ok_or(Errno::ESRCH)?;
            dom.p2m
                .set(
                    gfn,
                    P2mEntry {
                        hfn: si,
                        kind: P2mKind::SharedInfo,
                        perms: P2mPerms::RW,
                    },
                )
                .map_err(|_| Errno::ENOMEM)?;
            dom.p2m.flush();
            dom.shared_info_gfn = Some(gfn);
            Ok(())
        }
        m::XENMAPSPACE_grant_table => crate::gnttab::add_to_physmap(hv, d, idx, gfn),
        _ => Err(Errno::EINVAL),
    }
}

fn reservation<P: Platform>(
    hv: &mut Hypervisor<P>,
    c: &mut Call,
    op: u32,
    start: u64,
    arg: u64,
) -> XenResult<u64> {
    let a: m::XenMemoryReservation = if c.long {
        read_arg(hv, c, arg)?
    } else {
        let a: cm::CompatMemoryReservation = read_arg(hv, c, arg)?;
        // The continuation must fit the 32-bit command (Xen returns the
        // extents done so far, none).
        if a.nr_extents > u32::MAX >> MEMOP_EXTENT_SHIFT {
            return Ok(start);
        }
        m::XenMemoryReservation {
            extent_start: a.extent_start.into(),
            nr_extents: a.nr_extents.into(),
            extent_order: a.extent_order,
            mem_flags: a.mem_flags,
            domid: a.domid,
            pad: [0; 6],
        }
    };
    // Frame numbers in the extent array: 8 bytes, or 4 for 32-bit callers.
    let pfn_size: u64 = if c.long { 8 } else { 4 };
    let t = target_domain(hv, c, a.domid)?;
    if a.extent_order > MAX_EXTENT_ORDER {
        return Err(Errno::EINVAL);
    }
    if start > a.nr_extents {
        return Err(Errno::EINVAL);
    }
    // Translated guests get nothing from increase_reservation.
    if op == m::XENMEM_increase_reservation {
        return Ok(start);
    }
    let frames = 1u64 << a.extent_order;
    let end = a.nr_extents.min(start + (FRAMES_PER_EXIT / frames).max(1));
    let mut i = start;
    while i < end {
        let mut b = [0u8; 8];
        let la = a.extent_start.wrapping_add(i * pfn_size);
        if hv
            .guest_virt(c.d, c.mode)
            .ok_or(Errno::ESRCH)?
            .read(la, &mut b[..pfn_size as usize])
            .is_err()
        {
            break;
        }
        let gpfn = u64::from_le_bytes(b);
        if gpfn & (frames - 1) != 0 || gpfn >= (1 << 40) {
            break;
        }
        let ok = if op == m::XENMEM_populate_physmap {
            (0..frames).all(|k| hv.populate(t, Gfn(gpfn + k), 1).is_ok())
        } else {
            (0..frames).all(|k| {
                let owned = hv
                    .domain(t)
                    .and_then(|d| d.p2m.kind(Gfn(gpfn + k)))
                    .is_some_and(|k| k == P2mKind::Ram);
                owned && hv.release_gfn(t, Gfn(gpfn + k)).is_ok()
            })
        };
        if let Some(dom) = hv.domain_mut(t) {
            dom.p2m.flush();
        }
        if !ok {
            break;
        }
        i += 1;
    }
    if i == end && end < a.nr_extents {
        c.args[0] = (c.args[0] & MEMOP_CMD_MASK) | (end << MEMOP_EXTENT_SHIFT);
        hv.restart = true;
    }
    Ok(i)
}
