//! Access to memory shared with a peer.
//!
//! The rings never form a Rust reference into shared memory: the peer may
//! write any byte at any time, so `&`/`&mut` to it would be undefined
//! behaviour. Every access goes through [`SharedMem`], whose operations are
//! all atomic: 32-bit index loads and stores with an explicit ordering, and
//! byte copies made of relaxed atomic loads or stores. The compiler may
//! neither split an index access nor repeat or merge a copy (no double fetch,
//! XSA-155), and a racing peer cannot make the copy undefined behaviour.
//!
//! [`RawMem`] is the production implementation over a raw pointer. The loom
//! models implement the same trait over loom's atomics, so the protocol code
//! they check is the code that runs.

use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering, fence};

/// Memory shared with a peer, seen as a byte array of [`len`](Self::len)
/// bytes.
///
/// Offsets passed by the rings are always in bounds and 32-bit accesses are
/// 4-byte aligned; an implementation must still check and panic (never cause
/// undefined behaviour) if handed a bad offset, since that is a bug in this
/// crate, not something a peer can cause.
///
/// # Concurrency
/// The peer writes concurrently. Each method is one or more atomic accesses;
/// nothing returned refers to the shared memory after the call.
pub trait SharedMem {
    /// Size in bytes.
    fn len(&self) -> usize;
    /// Whether the memory is empty (never true for a usable ring).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Atomic 32-bit load at a 4-byte aligned offset.
    fn load_u32(&self, offset: usize, order: Ordering) -> u32;
    /// Atomic 32-bit store at a 4-byte aligned offset.
    fn store_u32(&self, offset: usize, value: u32, order: Ordering);
    /// Relaxed atomic byte load.
    fn load_u8(&self, offset: usize) -> u8;
    /// Relaxed atomic byte store.
    fn store_u8(&self, offset: usize, value: u8);
    /// Copies `dst.len()` bytes from `offset` into private memory with relaxed
    /// atomic loads of `unit` bytes each (8 or 4, with `offset` and the
    /// length multiples of it; any other value means single bytes); each
    /// shared byte is read exactly once.
    ///
    /// This crate always accesses a given shared byte with the same width
    /// (ring entries with their ring's unit, byte-ring data with 1), so
    /// atomics of different sizes never overlap.
    fn read(&self, offset: usize, dst: &mut [u8], unit: usize);
    /// Copies `src` to `offset` with relaxed atomic stores of `unit` bytes
    /// each (as for [`read`](Self::read)).
    fn write(&self, offset: usize, src: &[u8], unit: usize);
    /// A full (sequentially consistent) fence: Xen's `mb()`.
    fn full_fence(&self);
}

impl<T: SharedMem + ?Sized> SharedMem for &T {
    fn len(&self) -> usize {
        (**self).len()
    }
    fn load_u32(&self, offset: usize, order: Ordering) -> u32 {
        (**self).load_u32(offset, order)
    }
    fn store_u32(&self, offset: usize, value: u32, order: Ordering) {
        (**self).store_u32(offset, value, order)
    }
    fn load_u8(&self, offset: usize) -> u8 {
        (**self).load_u8(offset)
    }
    fn store_u8(&self, offset: usize, value: u8) {
        (**self).store_u8(offset, value)
    }
    fn read(&self, offset: usize, dst: &mut [u8], unit: usize) {
        (**self).read(offset, dst, unit)
    }
    fn write(&self, offset: usize, src: &[u8], unit: usize) {
        (**self).write(offset, src, unit)
    }
    fn full_fence(&self) {
        (**self).full_fence()
    }
}

/// Why a raw region cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemError {
    /// The base address is not 8-byte aligned.
    Misaligned,
    /// The length is not a multiple of 8 or is zero.
    BadLength,
}

/// Shared memory given as a raw pointer and a length, valid for `'a`.
///
/// `Copy`, `Send` and `Sync`: the two ends of a ring in one address space (a
/// test, a same-host back end) can each hold a copy.
#[derive(Clone, Copy, Debug)]
pub struct RawMem<'a> {
    base: NonNull<u8>,
    len: usize,
    _life: PhantomData<&'a [AtomicU8]>,
}

// SAFETY: every access through `RawMem` is atomic, so using it from several
// threads at once is free of data races; the region's validity for `'a` is
// the constructor's contract.
unsafe impl Send for RawMem<'_> {}
// SAFETY: as for `Send`: shared use only performs atomic accesses.
unsafe impl Sync for RawMem<'_> {}

impl<'a> RawMem<'a> {
    /// Views `len` bytes at `base` as shared memory.
    ///
    /// # Safety
    /// 1. `base..base + len` is valid for reads and writes for all of `'a`
    ///    (mapped, not freed or unmapped before `'a` ends).
    /// 2. During `'a`, no Rust reference to any byte of the region exists, and
    ///    every other access to it (by this program) is atomic: only atomics,
    ///    another `RawMem`, or a peer outside the Rust abstract machine (another
    ///    domain, the hypervisor, a device) touch it.
    ///
    /// Xen shares whole pages, so real uses pass a page-aligned base; this
    /// constructor itself only needs 8-byte alignment and a length that is a
    /// multiple of 8, and checks both.
    pub unsafe fn new(base: NonNull<u8>, len: usize) -> Result<Self, MemError> {
        if !(base.as_ptr() as usize).is_multiple_of(8) {
            return Err(MemError::Misaligned);
        }
        if len == 0 || !len.is_multiple_of(8) {
            return Err(MemError::BadLength);
        }
        Ok(Self {
            base,
            len,
            _life: PhantomData,
        })
    }

    /// The base pointer.
    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    #[inline(always)]
    fn check(&self, offset: usize, size: usize) {
        let end = offset.checked_add(size);
        assert!(
            matches!(end, Some(e) if e <= self.len),
            "pv-rings: shared access out of bounds"
        );
    }

    /// For word copies, the width divides both the offset and the length,
    /// so every word access is aligned (the base is 8-byte aligned). Any
    /// other `unit` copies bytes, which needs no alignment.
    #[inline(always)]
    fn check_words(offset: usize, len: usize, mask: usize) {
        // A constant mask, not `%` by a variable: a division here would cost
        // more than the copy.
        assert!((offset | len) & mask == 0, "pv-rings: misaligned copy");
    }

    #[inline(always)]
    fn at(&self, offset: usize) -> *mut u8 {
        // `check` was called by every caller; `wrapping_add` keeps this
        // function itself free of preconditions.
        self.base.as_ptr().wrapping_add(offset)
    }
}

impl SharedMem for RawMem<'_> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.len
    }

    #[inline(always)]
    fn load_u32(&self, offset: usize, order: Ordering) -> u32 {
        self.check(offset, 4);
        assert!(offset.is_multiple_of(4), "pv-rings: misaligned index");
        // SAFETY: in bounds (checked) and 4-byte aligned (base 8-aligned,
        // offset checked); valid for 'a and only accessed atomically, by the
        // constructor's contract (1, 2).
        unsafe { AtomicU32::from_ptr(self.at(offset).cast()) }.load(order)
    }

    #[inline(always)]
    fn store_u32(&self, offset: usize, value: u32, order: Ordering) {
        self.check(offset, 4);
        assert!(offset.is_multiple_of(4), "pv-rings: misaligned index");
        // SAFETY: as in `load_u32`.
        unsafe { AtomicU32::from_ptr(self.at(offset).cast()) }.store(value, order)
    }

    #[inline(always)]
    fn load_u8(&self, offset: usize) -> u8 {
        self.check(offset, 1);
        // SAFETY: in bounds (checked); bytes need no alignment; contract 1, 2.
        unsafe { AtomicU8::from_ptr(self.at(offset)) }.load(Ordering::Relaxed)
    }

    #[inline(always)]
    fn store_u8(&self, offset: usize, value: u8) {
        self.check(offset, 1);
        // SAFETY: as in `load_u8`.
        unsafe { AtomicU8::from_ptr(self.at(offset)) }.store(value, Ordering::Relaxed)
    }

    #[inline(always)]
    fn read(&self, offset: usize, dst: &mut [u8], unit: usize) {
        self.check(offset, dst.len());
        let p = self.at(offset);
        match unit {
            8 => {
                Self::check_words(offset, dst.len(), 7);
                let d = dst.as_mut_ptr();
                for i in 0..dst.len() / 8 {
                    // SAFETY: p + 8i .. p + 8i + 8 lies in the checked range
                    // and is 8-byte aligned (base 8-aligned, offset a
                    // multiple of 8); contract 1, 2.
                    let a = unsafe { AtomicU64::from_ptr(p.add(8 * i).cast()) };
                    let v = a.load(Ordering::Relaxed);
                    // SAFETY: d + 8i .. d + 8i + 8 lies in `dst` (i < len / 8),
                    // private memory we hold exclusively; unaligned write.
                    unsafe { d.add(8 * i).cast::<u64>().write_unaligned(v) };
                }
            }
            4 => {
                Self::check_words(offset, dst.len(), 3);
                for (i, d) in dst.chunks_exact_mut(4).enumerate() {
                    // SAFETY: as above with 4-byte words.
                    let a = unsafe { AtomicU32::from_ptr(p.add(4 * i).cast()) };
                    d.copy_from_slice(&a.load(Ordering::Relaxed).to_ne_bytes());
                }
            }
            _ => {
                for (i, d) in dst.iter_mut().enumerate() {
                    // SAFETY: p + i lies in the checked range; contract 1, 2.
                    *d = unsafe { AtomicU8::from_ptr(p.add(i)) }.load(Ordering::Relaxed);
                }
            }
        }
    }

    #[inline(always)]
    fn write(&self, offset: usize, src: &[u8], unit: usize) {
        self.check(offset, src.len());
        let p = self.at(offset);
        match unit {
            8 => {
                Self::check_words(offset, src.len(), 7);
                let s = src.as_ptr();
                for i in 0..src.len() / 8 {
                    // SAFETY: s + 8i .. s + 8i + 8 lies in `src` (i < len / 8);
                    // unaligned read of private memory.
                    let v = unsafe { s.add(8 * i).cast::<u64>().read_unaligned() };
                    // SAFETY: p + 8i .. p + 8i + 8 lies in the checked range
                    // and is 8-byte aligned; contract 1, 2.
                    let a = unsafe { AtomicU64::from_ptr(p.add(8 * i).cast()) };
                    a.store(v, Ordering::Relaxed);
                }
            }
            4 => {
                Self::check_words(offset, src.len(), 3);
                for (i, s) in src.chunks_exact(4).enumerate() {
                    let mut b = [0u8; 4];
                    b.copy_from_slice(s);
                    // SAFETY: as above with 4-byte words.
                    let a = unsafe { AtomicU32::from_ptr(p.add(4 * i).cast()) };
                    a.store(u32::from_ne_bytes(b), Ordering::Relaxed);
                }
            }
            _ => {
                for (i, s) in src.iter().enumerate() {
                    // SAFETY: p + i lies in the checked range; contract 1, 2.
                    unsafe { AtomicU8::from_ptr(p.add(i)) }.store(*s, Ordering::Relaxed);
                }
            }
        }
    }

    #[inline(always)]
    fn full_fence(&self) {
        fence(Ordering::SeqCst);
    }
}

/// An owned, zeroed, page-aligned heap buffer to put a ring in (tests,
/// same-host back ends, examples). Needs the `std` feature.
#[cfg(feature = "std")]
pub struct HeapPage {
    ptr: NonNull<u8>,
    layout: std::alloc::Layout,
}

#[cfg(feature = "std")]
// SAFETY: the buffer is owned; `HeapPage` only hands out `RawMem`, whose
// accesses are atomic.
unsafe impl Send for HeapPage {}
#[cfg(feature = "std")]
// SAFETY: shared use only goes through `RawMem` (atomic accesses).
unsafe impl Sync for HeapPage {}

#[cfg(feature = "std")]
impl HeapPage {
    /// Page size.
    pub const PAGE_SIZE: usize = 4096;

    /// Allocates `pages` zeroed 4 KiB pages (at least one).
    pub fn new(pages: usize) -> Self {
        let size = pages.max(1).saturating_mul(Self::PAGE_SIZE);
        let layout = std::alloc::Layout::from_size_align(size, Self::PAGE_SIZE)
            .expect("HeapPage: size overflows");
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        Self { ptr, layout }
    }

    /// One zeroed page.
    pub fn one() -> Self {
        Self::new(1)
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.layout.size()
    }

    /// Never empty.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The buffer as shared memory, for as long as the page is borrowed.
    pub fn mem(&self) -> RawMem<'_> {
        // SAFETY: (1) the allocation lives as long as `self` is borrowed and
        // is `len()` bytes; (2) `HeapPage` never creates references to its
        // bytes, all access goes through `RawMem`. Alignment and length are
        // multiples of 4096.
        unsafe { RawMem::new(self.ptr, self.len()) }.expect("HeapPage is page-aligned")
    }
}

#[cfg(feature = "std")]
impl Drop for HeapPage {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}
