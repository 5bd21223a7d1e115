//! [`Platform`] over hypercalls: grant maps at free frames past our RAM,
//! interdomain event channels, `XEN_DOMCTL_getdomaininfo`, and the
//! pending bits of shared_info (2-level event channels).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt::Write;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use pv_rings::RawMem;
use service_domain::blkback::{BlkPlatform, CopyDir, CopySeg, MapId};
use service_domain::{DomainInfo, Platform};
use xen_abi::grant_table::{
    GNTCOPY_dest_gref, GNTCOPY_source_gref, GNTMAP_host_map, GNTST_bad_copy_arg,
    GNTTAB_RESERVED_XENSTORE, GnttabCopy, GnttabCopyPtr, GnttabUnmapGrantRef,
};
use xen_abi::guest::Hypercall;
use xen_abi::memory::{XENMAPSPACE_shared_info, XenAddToPhysmap};

use super::Console;

/// Offset of `evtchn_pending` in shared_info (xen.h, x86_64).
const EVTCHN_PENDING: usize = 2048;
/// Frames at or past 1 GiB are not in our identity map.
const MAP_LIMIT_GFN: u64 = 1 << 18;

#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// The frame shared_info replaces (it never holds a Rust value after).
static mut SHARED_INFO: Page = Page([0; 4096]);

pub struct XenPlatform {
    hc: Hypercall,
    /// Where shared_info is mapped (a static page: never null).
    shared_info: *mut u8,
    /// Free frames for grant maps: the next never used, and those given back.
    next_gfn: u64,
    free: Vec<u64>,
    /// Domain -> (frame, grant handle) of its mapped store page.
    maps: BTreeMap<u16, (u64, u32)>,
    /// Mapped block rings and persistent grants: their frames and grant
    /// handles.
    rings: BTreeMap<MapId, Vec<(u64, u32)>>,
    next_ring: MapId,
    /// The grant copies of one batch (kept to reuse the allocation), and
    /// the segment each is part of.
    copies: Vec<GnttabCopy>,
    copy_owner: Vec<usize>,
}

impl XenPlatform {
    /// Maps shared_info and starts handing out frames from `hole_gfn`.
    pub fn new(hc: Hypercall, hole_gfn: u64) -> Result<Self, xen_abi::Errno> {
        let page = core::ptr::addr_of_mut!(SHARED_INFO).cast::<u8>();
        let mut xatp = XenAddToPhysmap {
            domid: xen_abi::DOMID_SELF,
            size: 0,
            space: XENMAPSPACE_shared_info,
            idx: 0,
            gpfn: page as u64 >> 12,
        };
        // SAFETY: the frame is `SHARED_INFO`, which no Rust value lives in
        // and which is only reached through atomics from now on.
        unsafe { hc.add_to_physmap(&mut xatp) }?;
        SHARED_INFO_MAPPED.store(true, Ordering::Release);
        Ok(Self {
            hc,
            shared_info: page,
            next_gfn: hole_gfn.max(1),
            free: Vec::new(),
            maps: BTreeMap::new(),
            rings: BTreeMap::new(),
            next_ring: 0,
            copies: Vec::new(),
            copy_owner: Vec::new(),
        })
    }

    /// The hypercall entry.
    pub fn hc(&self) -> Hypercall {
        self.hc
    }

    fn pending_word(&self, port: u32) -> Option<(&AtomicU64, u64)> {
        if port >= 4096 {
            return None;
        }
        let off = EVTCHN_PENDING + (port as usize / 64) * 8;
        // SAFETY: shared_info is mapped for good; the word is 8-byte
        // aligned inside it and only accessed atomically (the hypervisor
        // sets bits, we clear them).
        let w = unsafe { AtomicU64::from_ptr(self.shared_info.add(off).cast()) };
        Some((w, 1u64 << (port % 64)))
    }

    /// Clears `port`'s pending bit; returns whether it was set.
    pub fn take_pending(&mut self, port: u32) -> bool {
        self.pending_word(port)
            .is_some_and(|(w, b)| w.fetch_and(!b, Ordering::SeqCst) & b != 0)
    }
}

/// [`XenPlatform::take_pending`] for code that has no platform at hand
/// (a device driver waiting for its interrupt); false before shared_info
/// is mapped.
pub fn take_pending_port(port: u32) -> bool {
    if port >= 4096 || !SHARED_INFO_MAPPED.load(Ordering::Acquire) {
        return false;
    }
    let page = core::ptr::addr_of_mut!(SHARED_INFO).cast::<u8>();
    let off = EVTCHN_PENDING + (port as usize / 64) * 8;
    let b = 1u64 << (port % 64);
    // SAFETY: shared_info is mapped for good at `SHARED_INFO` (the flag
    // says so); the word is 8-byte aligned inside it and only accessed
    // atomically, as in `pending_word`.
    let w = unsafe { AtomicU64::from_ptr(page.add(off).cast()) };
    w.fetch_and(!b, Ordering::SeqCst) & b != 0
}

/// Set once shared_info is mapped at `SHARED_INFO`.
static SHARED_INFO_MAPPED: core::sync::atomic::AtomicBool =
    core::sync::atomic::AtomicBool::new(false);

impl XenPlatform {
    fn take_gfn(&mut self) -> Option<u64> {
        if let Some(g) = self.free.pop() {
            return Some(g);
        }
        (self.next_gfn < MAP_LIMIT_GFN).then(|| {
            self.next_gfn += 1;
            self.next_gfn - 1
        })
    }
}

impl XenPlatform {
    /// Maps one grant of `domid` at frame `gfn`; the grant handle.
    fn map_at(&mut self, domid: u16, gref: u32, gfn: u64) -> Result<u32, i32> {
        // SAFETY: `gfn` is a hole past our RAM (the memory map's end): no
        // Rust value lives there; the mapping is only used through
        // `RawMem` (atomics).
        match unsafe {
            self.hc
                .gnttab_map_grant_ref(domid, gref, gfn << 12, GNTMAP_host_map)
        } {
            Ok(m) if m.status == 0 => Ok(m.handle),
            Ok(m) => Err(-i32::from(m.status)),
            Err(e) => Err(errno(e)),
        }
    }

    fn unmap_frames(&mut self, frames: Vec<(u64, u32)>) {
        for (gfn, handle) in frames {
            // SAFETY: the back end dropped the ring on these frames first.
            if let Ok(0) = unsafe { self.hc.gnttab_unmap_grant_ref(gfn << 12, handle) } {
                self.free.push(gfn);
            }
        }
    }
}

impl BlkPlatform for XenPlatform {
    type Ring = RawMem<'static>;

    fn map_ring(&mut self, domid: u16, grefs: &[u32]) -> Result<(Self::Ring, MapId), i32> {
        let n = grefs.len() as u64;
        // One page may reuse a freed frame; more need fresh contiguous ones.
        let first = if n == 1 {
            self.take_gfn().ok_or(xen_abi::ENOMEM)?
        } else {
            if self.next_gfn + n > MAP_LIMIT_GFN {
                return Err(xen_abi::ENOMEM);
            }
            self.next_gfn += n;
            self.next_gfn - n
        };
        let mut frames = Vec::new();
        for (k, &gref) in grefs.iter().enumerate() {
            let gfn = first + k as u64;
            match self.map_at(domid, gref, gfn) {
                Ok(h) => frames.push((gfn, h)),
                Err(e) => {
                    self.unmap_frames(frames);
                    for g in gfn..first + n {
                        self.free.push(g);
                    }
                    return Err(e);
                }
            }
        }
        let base = NonNull::new((first << 12) as *mut u8).ok_or(xen_abi::EINVAL)?;
        // SAFETY: the grants are mapped at consecutive frames from `base`
        // (identity-mapped, below 1 GiB) until `unmap_ring`, which the
        // back end calls only after dropping the ring; every access is
        // atomic.
        let mem = match unsafe { RawMem::new(base, grefs.len() * 4096) } {
            Ok(m) => m,
            Err(_) => {
                self.unmap_frames(frames);
                return Err(xen_abi::EINVAL);
            }
        };
        self.next_ring = self.next_ring.wrapping_add(1);
        self.rings.insert(self.next_ring, frames);
        Ok((mem, self.next_ring))
    }

    fn unmap_ring(&mut self, id: MapId) {
        if let Some(frames) = self.rings.remove(&id) {
            self.unmap_frames(frames);
        }
    }

    fn map_grant(&mut self, domid: u16, gref: u32) -> Result<(Self::Ring, MapId), i32> {
        let gfn = self.take_gfn().ok_or(xen_abi::ENOMEM)?;
        let handle = match self.map_at(domid, gref, gfn) {
            Ok(h) => h,
            Err(e) => {
                self.free.push(gfn);
                return Err(e);
            }
        };
        let base = NonNull::new((gfn << 12) as *mut u8).ok_or(xen_abi::EINVAL)?;
        // SAFETY: the grant is mapped at `gfn` (identity-mapped, below
        // 1 GiB, a hole no Rust value lives in) until `unmap_grants`,
        // which the back end calls only after dropping this handle; every
        // access is atomic (`SharedMem`).
        let mem = match unsafe { RawMem::new(base, 4096) } {
            Ok(m) => m,
            Err(_) => {
                self.unmap_frames(alloc::vec![(gfn, handle)]);
                return Err(xen_abi::EINVAL);
            }
        };
        self.next_ring = self.next_ring.wrapping_add(1);
        self.rings
            .insert(self.next_ring, alloc::vec![(gfn, handle)]);
        Ok((mem, self.next_ring))
    }

    fn unmap_grants(&mut self, ids: &[MapId]) {
        let mut ops = Vec::new();
        for id in ids {
            if let Some(frames) = self.rings.remove(id) {
                ops.extend(frames.into_iter().map(|(gfn, handle)| GnttabUnmapGrantRef {
                    host_addr: gfn << 12,
                    dev_bus_addr: 0,
                    handle,
                    status: 0,
                    pad: 0,
                }));
            }
        }
        if ops.is_empty() {
            return;
        }
        // SAFETY: the back end dropped every use of these pages first.
        let r = unsafe { self.hc.grant_table_op(&mut ops) };
        for o in &ops {
            if r.is_ok() && o.status == 0 {
                self.free.push(o.host_addr >> 12);
            }
        }
    }

    fn copy(
        &mut self,
        domid: u16,
        segs: &[CopySeg],
        local: &mut [u8],
        status: &mut [i16],
    ) -> Result<(), i32> {
        let mut ops = core::mem::take(&mut self.copies);
        let mut owner = core::mem::take(&mut self.copy_owner);
        ops.clear();
        owner.clear();
        let base = local.as_mut_ptr() as u64;
        for (k, s) in segs.iter().enumerate() {
            let end = s.local.checked_add(usize::from(s.len));
            if end.is_none_or(|e| e > local.len())
                || usize::from(s.offset) + usize::from(s.len) > 4096
            {
                if let Some(st) = status.get_mut(k) {
                    *st = GNTST_bad_copy_arg;
                }
                continue;
            }
            // Our side may cross a frame boundary: split it there.
            let mut done = 0u16;
            while done < s.len {
                let at = base + (s.local + usize::from(done)) as u64;
                let in_frame = (4096 - (at & 0xfff)) as u16;
                let len = (s.len - done).min(in_frame);
                let guest = GnttabCopyPtr {
                    u: u64::from(s.gref),
                    domid,
                    offset: s.offset + done,
                    pad: 0,
                };
                let mine = GnttabCopyPtr {
                    u: at >> 12,
                    domid: xen_abi::DOMID_SELF,
                    offset: (at & 0xfff) as u16,
                    pad: 0,
                };
                let (source, dest, flags) = match s.dir {
                    CopyDir::FromGuest => (guest, mine, GNTCOPY_source_gref),
                    CopyDir::ToGuest => (mine, guest, GNTCOPY_dest_gref),
                };
                ops.push(GnttabCopy {
                    source,
                    dest,
                    len,
                    flags,
                    status: 0,
                    pad: 0,
                });
                owner.push(k);
                done += len;
            }
        }
        let r = if ops.is_empty() {
            Ok(())
        } else {
            // SAFETY: the destination frames are the guest's or `local`'s,
            // which we hold exclusively for the call (identity-mapped: the
            // disk's boot module or the heap).
            unsafe { self.hc.gnttab_copy(&mut ops) }
        };
        if r.is_ok() {
            for (o, &k) in ops.iter().zip(&owner) {
                if let Some(st) = status.get_mut(k)
                    && *st == 0
                {
                    *st = o.status;
                }
            }
        }
        self.copies = ops;
        self.copy_owner = owner;
        r.map_err(errno)
    }
}

fn errno(e: xen_abi::Errno) -> i32 {
    e.get()
}

impl Platform for XenPlatform {
    type Mem = RawMem<'static>;

    fn timestamp(&mut self) -> Option<u64> {
        // SAFETY: rdtsc reads the time-stamp counter; no memory is touched.
        Some(unsafe { core::arch::x86_64::_rdtsc() })
    }

    fn map_store(&mut self, domid: u16) -> Result<Self::Mem, i32> {
        let gfn = self.take_gfn().ok_or(xen_abi::ENOMEM)?;
        let addr = gfn << 12;
        // SAFETY: `gfn` is a hole past our RAM (the memory map's end): no
        // Rust value lives there; the mapping is only used through
        // `RawMem` (atomics).
        let m = unsafe {
            self.hc
                .gnttab_map_grant_ref(domid, GNTTAB_RESERVED_XENSTORE, addr, GNTMAP_host_map)
        };
        match m {
            Ok(m) if m.status == 0 => {
                self.maps.insert(domid, (gfn, m.handle));
                let base = NonNull::new(addr as *mut u8).ok_or(xen_abi::EINVAL)?;
                // SAFETY: the grant is mapped at `addr` (identity-mapped,
                // below 1 GiB) until `unmap_store`, which the service calls
                // only after dropping the ring; every access is atomic.
                unsafe { RawMem::new(base, 4096) }.map_err(|_| xen_abi::EINVAL)
            }
            Ok(m) => {
                self.free.push(gfn);
                Err(-i32::from(m.status))
            }
            Err(e) => {
                self.free.push(gfn);
                Err(errno(e))
            }
        }
    }

    fn unmap_store(&mut self, domid: u16) {
        if let Some((gfn, handle)) = self.maps.remove(&domid) {
            // SAFETY: the service dropped the ring on this page first.
            if let Ok(0) = unsafe { self.hc.gnttab_unmap_grant_ref(gfn << 12, handle) } {
                self.free.push(gfn);
            }
        }
    }

    fn bind(&mut self, domid: u16, remote: u32) -> Result<u32, i32> {
        self.hc
            .evtchn_bind_interdomain(domid, remote)
            .map_err(errno)
    }

    fn unbind(&mut self, port: u32) {
        let _ = self.hc.evtchn_close(port);
    }

    fn notify(&mut self, port: u32) {
        let _ = self.hc.evtchn_send(port);
    }

    fn domain_info(&mut self, domid: u16) -> Result<Option<DomainInfo>, i32> {
        use xen_abi::domctl::{
            XEN_DOMINF_dying, XEN_DOMINF_shutdown, XEN_DOMINF_shutdownmask,
            XEN_DOMINF_shutdownshift,
        };
        // The unique id before and after the record: the same on both
        // sides, the record is of that domain (a reboot in between would
        // pair the new id with the old state).
        let unique = |hc: &Hypercall| match hc.get_domain_state(domid) {
            Ok((_, st)) => st.unique_id,
            // Xen before 4.21 has no get_domain_state: no ids.
            Err(_) => 0,
        };
        for _ in 0..4 {
            let before = unique(&self.hc);
            let i = match self.hc.getdomaininfo(domid) {
                // 4.17 answers for the first domain at or past the one asked.
                Ok(i) if i.domain != domid => return Ok(None),
                Ok(i) => i,
                Err(e) if e.get() == xen_abi::ESRCH => return Ok(None),
                Err(e) => return Err(errno(e)),
            };
            if unique(&self.hc) != before {
                continue;
            }
            let shutdown = i.flags & XEN_DOMINF_shutdown != 0;
            let code = i.flags >> XEN_DOMINF_shutdownshift & XEN_DOMINF_shutdownmask;
            return Ok(Some(DomainInfo {
                tot_pages: i.tot_pages,
                max_pages: i.max_pages,
                vcpus: i.max_vcpu_id.wrapping_add(1),
                shutdown,
                reboot: shutdown && code == xen_abi::sched::SHUTDOWN_reboot,
                dying: i.flags & XEN_DOMINF_dying != 0,
                unique_id: before,
            }));
        }
        Err(xen_abi::EAGAIN)
    }

    fn log(&mut self, line: core::fmt::Arguments<'_>) {
        let _ = writeln!(Console(self.hc), "service-domain: {line}");
    }
}
