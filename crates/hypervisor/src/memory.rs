//! The hypervisor's memory: the frame allocator fed from the boot map and
//! the heap (the global allocator) carved out of it.

use crate::boot::IDENTITY_MAPPED;
use hypervisor::bootinfo::BootInfo;
use hypervisor::mm::{FrameAllocator, MmError, PAGE_SIZE, Range};
use linked_list_allocator::LockedHeap;
use spin::Mutex;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Free physical frames.
pub static FRAMES: Mutex<FrameAllocator> = Mutex::new(FrameAllocator::new());

unsafe extern "C" {
    /// First byte of the image (link.ld).
    static __image_start: u8;
    /// One past the image's last byte, .bss included (link.ld).
    static __image_end: u8;
}

/// Heap size: an eighth of free memory, between 4 and 64 MiB.
fn heap_size(free: u64) -> u64 {
    (free / 8).clamp(4 << 20, 64 << 20) & !(PAGE_SIZE - 1)
}

/// Builds the frame allocator and the heap.
pub fn init(boot: &BootInfo) -> Result<(), &'static str> {
    let image = Range {
        start: &raw const __image_start as u64,
        end: &raw const __image_end as u64,
    };
    let mut reserved = [image; 1 + hypervisor::bootinfo::MAX_MODULES];
    for (slot, m) in reserved[1..].iter_mut().zip(boot.modules()) {
        *slot = Range::new(m.start, m.len).ok_or("a module wraps around memory")?;
    }
    let mut frames = FrameAllocator::from_boot(boot, &reserved);
    let size = heap_size(frames.free);
    let base = frames
        .alloc(size, 2 << 20, IDENTITY_MAPPED)
        .or_else(|_| frames.alloc(size, PAGE_SIZE, IDENTITY_MAPPED))
        .map_err(|e: MmError| match e {
            MmError::OutOfMemory => "not enough memory for the heap",
            _ => "cannot carve out the heap",
        })?;
    // SAFETY: [base, base + size) was just taken from the free frames, so
    // nothing else uses it; it lies below IDENTITY_MAPPED, so the address is
    // valid as a pointer; the heap is initialised once (this runs once on the
    // boot CPU before any allocation).
    unsafe { HEAP.lock().init(base as *mut u8, size as usize) };
    log::info!(
        "memory: image {:#x}-{:#x}, heap {} MiB at {:#x}, {} MiB free in {} ranges",
        image.start,
        image.end,
        size >> 20,
        base,
        frames.free >> 20,
        frames.ranges().len()
    );
    *FRAMES.lock() = frames;
    Ok(())
}
