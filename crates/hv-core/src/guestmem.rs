//! Safe access to a domain's memory by guest-physical address.
//!
//! [`GuestMem`] translates through the p2m and reaches host frames through
//! the platform's [`FrameAccess`]. Copies may cross pages; any hole or
//! read-only frame on the way gives `-EFAULT`. Atomic operations work on
//! naturally aligned words, which therefore never cross a page.

use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::p2m::{P2m, P2mEntry, P2mKind};
use crate::platform::FrameAccess;
use crate::types::{Errno, Gfn, Hfn, PAGE_SIZE, XenResult};

/// A view of one domain's guest-physical memory.
#[derive(Clone, Copy)]
pub struct GuestMem<'a> {
    p2m: &'a P2m,
    frames: &'a dyn FrameAccess,
}

impl<'a> GuestMem<'a> {
    /// A view of the memory described by `p2m`.
    pub fn new(p2m: &'a P2m, frames: &'a dyn FrameAccess) -> Self {
        GuestMem { p2m, frames }
    }

    /// The frame access underneath.
    pub fn frames(&self) -> &'a dyn FrameAccess {
        self.frames
    }

    fn entry(&self, gpa: u64, write: bool) -> XenResult<P2mEntry> {
        let e = self
            .p2m
            .get_scrubbed(Gfn::of(gpa), self.frames)
            .ok_or(Errno::EFAULT)?;
        // A device's registers are the guest's to touch, never the
        // hypervisor's on its behalf.
        if (write && !e.perms.write) || e.kind == P2mKind::Mmio {
            return Err(Errno::EFAULT);
        }
        Ok(e)
    }

    /// The host frame and offset behind `gpa` for an aligned access of
    /// `size` bytes.
    fn word(&self, gpa: u64, size: u64, write: bool) -> XenResult<(Hfn, usize)> {
        if !gpa.is_multiple_of(size) {
            return Err(Errno::EINVAL);
        }
        let e = self.entry(gpa, write)?;
        Ok((e.hfn, (gpa as usize) & (PAGE_SIZE - 1)))
    }

    /// Walks `len` bytes from `gpa` page by page.
    fn chunks(
        &self,
        gpa: u64,
        len: usize,
        write: bool,
        mut f: impl FnMut(Hfn, usize, core::ops::Range<usize>),
    ) -> XenResult<()> {
        let end = gpa.checked_add(len as u64).ok_or(Errno::EFAULT)?;
        // Check the whole range first so a failed copy writes nothing.
        let mut page = gpa & !(PAGE_SIZE as u64 - 1);
        while page < end {
            self.entry(page, write)?;
            page += PAGE_SIZE as u64;
        }
        let mut done = 0usize;
        while done < len {
            let at = gpa + done as u64;
            let off = (at as usize) & (PAGE_SIZE - 1);
            let n = (PAGE_SIZE - off).min(len - done);
            let e = self.entry(at, write)?;
            f(e.hfn, off, done..done + n);
            done += n;
        }
        Ok(())
    }

    /// Whether a frame (RAM, a special page, a grant mapping) is behind
    /// `gpa`; everything else is unbacked (Xen's `p2m_mmio_dm`).
    pub fn is_backed(&self, gpa: u64) -> bool {
        self.p2m.contains(Gfn::of(gpa))
    }

    /// Copies guest memory at `gpa` into `buf`.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> XenResult<()> {
        let frames = self.frames;
        self.chunks(gpa, buf.len(), false, |hfn, off, r| {
            frames.read(hfn, off, &mut buf[r])
        })
    }

    /// Copies `data` into guest memory at `gpa`.
    pub fn write(&self, gpa: u64, data: &[u8]) -> XenResult<()> {
        let frames = self.frames;
        self.chunks(gpa, data.len(), true, |hfn, off, r| {
            frames.write(hfn, off, &data[r])
        })
    }

    /// Zeroes `len` bytes of guest memory at `gpa`.
    pub fn zero(&self, gpa: u64, len: usize) -> XenResult<()> {
        let frames = self.frames;
        self.chunks(gpa, len, true, |hfn, off, r| frames.zero(hfn, off, r.len()))
    }

    /// Reads a plain-old-data value (an ABI struct) at `gpa`.
    pub fn read_obj<T: FromBytes + IntoBytes>(&self, gpa: u64) -> XenResult<T> {
        let mut v = T::new_zeroed();
        self.read(gpa, v.as_mut_bytes())?;
        Ok(v)
    }

    /// Writes a plain-old-data value at `gpa`.
    pub fn write_obj<T: IntoBytes + Immutable>(&self, gpa: u64, v: &T) -> XenResult<()> {
        self.write(gpa, v.as_bytes())
    }

    /// Atomic compare-and-exchange of an aligned 32-bit guest word; returns
    /// the value found.
    pub fn cmpxchg_u32(&self, gpa: u64, old: u32, new: u32) -> XenResult<u32> {
        let (h, o) = self.word(gpa, 4, true)?;
        Ok(self.frames.cmpxchg_u32(h, o, old, new))
    }

    /// Atomic compare-and-exchange of an aligned 64-bit guest word.
    pub fn cmpxchg_u64(&self, gpa: u64, old: u64, new: u64) -> XenResult<u64> {
        let (h, o) = self.word(gpa, 8, true)?;
        Ok(self.frames.cmpxchg_u64(h, o, old, new))
    }

    /// Atomic OR into an aligned 64-bit guest word; returns the old value.
    pub fn fetch_or_u64(&self, gpa: u64, bits: u64) -> XenResult<u64> {
        let (h, o) = self.word(gpa, 8, true)?;
        Ok(self.frames.fetch_or_u64(h, o, bits))
    }

    /// Atomic AND into an aligned 64-bit guest word; returns the old value.
    pub fn fetch_and_u64(&self, gpa: u64, bits: u64) -> XenResult<u64> {
        let (h, o) = self.word(gpa, 8, true)?;
        Ok(self.frames.fetch_and_u64(h, o, bits))
    }

    /// Atomic OR into an aligned 32-bit guest word; returns the old value.
    pub fn fetch_or_u32(&self, gpa: u64, bits: u32) -> XenResult<u32> {
        let (h, o) = self.word(gpa, 4, true)?;
        Ok(self.frames.fetch_or_u32(h, o, bits))
    }

    /// Atomic AND into an aligned 32-bit guest word; returns the old value.
    pub fn fetch_and_u32(&self, gpa: u64, bits: u32) -> XenResult<u32> {
        let (h, o) = self.word(gpa, 4, true)?;
        Ok(self.frames.fetch_and_u32(h, o, bits))
    }

    /// Atomic read of an aligned 32-bit guest word.
    pub fn load_u32(&self, gpa: u64) -> XenResult<u32> {
        let (h, o) = self.word(gpa, 4, false)?;
        Ok(self.frames.load_u32(h, o))
    }

    /// Atomic read of an aligned 64-bit guest word.
    pub fn load_u64(&self, gpa: u64) -> XenResult<u64> {
        let (h, o) = self.word(gpa, 8, false)?;
        Ok(self.frames.load_u64(h, o))
    }

    /// Atomic write of one guest byte.
    pub fn store_u8(&self, gpa: u64, v: u8) -> XenResult<()> {
        let (h, o) = self.word(gpa, 1, true)?;
        self.frames.store_u8(h, o, v);
        Ok(())
    }
}
