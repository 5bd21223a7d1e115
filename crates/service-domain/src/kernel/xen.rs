//! [`Platform`] over hypercalls: grant maps at free frames past our RAM,
//! interdomain event channels, `XEN_DOMCTL_getdomaininfo`, and the
//! pending bits of shared_info (2-level event channels).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt::Write;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use pv_rings::RawMem;
use service_domain::{DomainInfo, Platform};
use xen_abi::grant_table::{GNTMAP_host_map, GNTTAB_RESERVED_XENSTORE};
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
        Ok(Self {
            hc,
            shared_info: page,
            next_gfn: hole_gfn.max(1),
            free: Vec::new(),
            maps: BTreeMap::new(),
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
        match self.hc.getdomaininfo(domid) {
            // 4.17 answers for the first domain at or past the one asked.
            Ok(i) if i.domain != domid => Ok(None),
            Ok(i) => Ok(Some(DomainInfo {
                tot_pages: i.tot_pages,
                max_pages: i.max_pages,
                vcpus: i.max_vcpu_id.wrapping_add(1),
                shutdown: i.flags & xen_abi::domctl::XEN_DOMINF_shutdown != 0,
                dying: i.flags & xen_abi::domctl::XEN_DOMINF_dying != 0,
            })),
            Err(e) if e.get() == xen_abi::ESRCH => Ok(None),
            Err(e) => Err(errno(e)),
        }
    }

    fn log(&mut self, line: core::fmt::Arguments<'_>) {
        let _ = writeln!(Console(self.hc), "service-domain: {line}");
    }
}
