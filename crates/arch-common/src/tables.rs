//! Page-table memory over identity-mapped host frames (host-virtual address
//! == host-physical address), the hypervisor's memory model below 4 GiB.
//! NPT (arch-svm) and EPT (arch-vmx) trees both sit on it.

use hv_core::pagetable::{ENTRIES, PageTableMemory};
use hv_core::types::Hfn;

/// Where table frames come from: single host frames. The hypervisor
/// implements it over its frame allocator.
pub trait FrameSource: Send {
    /// One host frame, or `None` when memory is exhausted.
    fn alloc_frame(&self) -> Option<Hfn>;
    /// Gives back a frame from [`FrameSource::alloc_frame`].
    fn free_frame(&self, hfn: Hfn);
}

/// Table memory over identity-mapped host frames.
pub struct IdentityTables<S: FrameSource> {
    source: S,
}

impl<S: FrameSource> IdentityTables<S> {
    /// Table memory whose frames come from `source`.
    ///
    /// # Safety
    /// 1. Every frame `source` hands out is identity-mapped, writable, and
    ///    owned by this object alone until it is given back.
    pub unsafe fn new(source: S) -> Self {
        Self { source }
    }

    fn slot(table: u64, index: usize) -> *mut u64 {
        assert!(index < ENTRIES && table & 0xFFF == 0);
        (table as usize + index * 8) as *mut u64
    }
}

impl<S: FrameSource> PageTableMemory for IdentityTables<S> {
    fn alloc_table(&mut self) -> Option<u64> {
        self.source.alloc_frame().map(Hfn::hpa)
    }

    fn free_table(&mut self, hpa: u64) {
        self.source.free_frame(Hfn(hpa >> 12));
    }

    fn read(&self, table: u64, index: usize) -> u64 {
        // SAFETY: `table` is a frame from `alloc_table` (the engine only
        // passes its own tables), identity-mapped and owned by us (duty 1 of
        // `new`); the slot is in bounds and 8-aligned (asserted).
        unsafe { core::ptr::read_volatile(Self::slot(table, index)) }
    }

    fn write(&mut self, table: u64, index: usize, entry: u64) {
        // SAFETY: as in `read`; one aligned 64-bit store, so a concurrent
        // hardware walk sees the old or the new entry, never a mix.
        unsafe { core::ptr::write_volatile(Self::slot(table, index), entry) }
    }
}
