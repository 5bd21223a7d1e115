//! Physical memory: the free ranges left after the boot memory map, the
//! image, the modules and the loader's tables are taken out, and a
//! first-fit allocator over them that hands out aligned runs of frames.
//!
//! This is pure bookkeeping over numbers (no memory is touched), so it is
//! tested on the host. The binary feeds it the boot map and uses it for the
//! heap, page tables, VMCBs and guest memory.

use crate::bootinfo::{BootInfo, RegionKind};

/// Size of a frame.
pub const PAGE_SIZE: u64 = 4096;
/// The most disjoint free ranges tracked.
pub const MAX_RANGES: usize = 256;

/// A half-open physical range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl Range {
    /// `[start, start + len)`, or None if it wraps.
    pub fn new(start: u64, len: u64) -> Option<Self> {
        Some(Self {
            start,
            end: start.checked_add(len)?,
        })
    }

    fn is_empty(&self) -> bool {
        self.start >= self.end
    }
}

/// Why an operation on the frame allocator failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmError {
    /// No free run of the requested size and alignment.
    OutOfMemory,
    /// The range table is full; the memory in question is lost (counted).
    TooFragmented,
    /// Size zero, alignment not a power of two or not page-granular.
    BadRequest,
    /// Freeing memory that is (partly) free already.
    DoubleFree,
}

/// Free physical memory as sorted, disjoint, page-aligned ranges.
pub struct FrameAllocator {
    ranges: [Range; MAX_RANGES],
    len: usize,
    /// Bytes lost because the table was full.
    pub lost: u64,
    /// Bytes free now.
    pub free: u64,
}

impl Default for FrameAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameAllocator {
    /// An allocator with no memory.
    pub const fn new() -> Self {
        Self {
            ranges: [Range { start: 0, end: 0 }; MAX_RANGES],
            len: 0,
            lost: 0,
            free: 0,
        }
    }

    /// Builds the allocator from the boot map's RAM, minus `reserved` (the
    /// image, modules, loader tables, anything else in use) and minus the
    /// first MiB (firmware, and the AP start-up trampoline).
    pub fn from_boot(info: &BootInfo, reserved: &[Range]) -> Self {
        let mut a = Self::new();
        for r in info.regions().filter(|r| r.kind == RegionKind::Ram) {
            if let Some(r) = Range::new(r.start, r.len) {
                a.add(r);
            }
        }
        a.remove(Range {
            start: 0,
            end: 0x10_0000,
        });
        for r in reserved {
            a.remove(*r);
        }
        a
    }

    /// The free ranges.
    pub fn ranges(&self) -> &[Range] {
        &self.ranges[..self.len]
    }

    /// Adds a range of free memory (shrunk inward to page boundaries),
    /// merging with neighbours. Overlap with memory already free is ignored.
    pub fn add(&mut self, r: Range) {
        let start = align_up(r.start, PAGE_SIZE).unwrap_or(u64::MAX);
        let end = r.end & !(PAGE_SIZE - 1);
        if start >= end {
            return;
        }
        // Remove any overlap first so the accounting stays exact.
        self.remove(Range { start, end });
        let _ = self.insert(Range { start, end });
    }

    /// Takes `r` out of the free memory (for regions found to be in use).
    pub fn remove(&mut self, r: Range) {
        let start = r.start & !(PAGE_SIZE - 1);
        let end = align_up(r.end, PAGE_SIZE).unwrap_or(!(PAGE_SIZE - 1));
        let mut i = 0;
        while i < self.len {
            let cur = self.ranges[i];
            if cur.end <= start || cur.start >= end {
                i += 1;
                continue;
            }
            let left = Range {
                start: cur.start,
                end: start.max(cur.start),
            };
            let right = Range {
                start: end.min(cur.end),
                end: cur.end,
            };
            self.free -= cur.end - cur.start;
            self.delete(i);
            if !left.is_empty() {
                let _ = self.insert(left);
            }
            if !right.is_empty() {
                let _ = self.insert(right);
            }
            i = 0;
        }
    }

    /// Allocates `size` bytes (a multiple of the page size) aligned to
    /// `align` (a power of two, at least a page), below `limit`. Takes from
    /// the top of the highest fitting range so that low memory, which some
    /// devices and trampolines need, lasts longest.
    pub fn alloc(&mut self, size: u64, align: u64, limit: u64) -> Result<u64, MmError> {
        if size == 0
            || !size.is_multiple_of(PAGE_SIZE)
            || !align.is_power_of_two()
            || align < PAGE_SIZE
        {
            return Err(MmError::BadRequest);
        }
        for i in (0..self.len).rev() {
            let r = self.ranges[i];
            let top = r.end.min(limit);
            let Some(start) = top.checked_sub(size).map(|s| s & !(align - 1)) else {
                continue;
            };
            if start < r.start || start.checked_add(size).is_none_or(|e| e > top) {
                continue;
            }
            let taken = Range {
                start,
                end: start + size,
            };
            // Splitting may need one more slot; check before changing anything.
            let needs_slot = taken.start > r.start && taken.end < r.end;
            if needs_slot && self.len == MAX_RANGES {
                return Err(MmError::TooFragmented);
            }
            // The usual case takes the range's top (or all of it): shrink
            // or drop that one entry rather than the general removal, which
            // scans every range and inserts the rest again (about 250
            // instructions a frame of a domain's build).
            if taken.end == r.end {
                if taken.start == r.start {
                    self.delete(i);
                } else {
                    self.ranges[i].end = taken.start;
                }
                self.free -= size;
                return Ok(start);
            }
            self.remove(taken);
            return Ok(start);
        }
        Err(MmError::OutOfMemory)
    }

    /// Returns `[addr, addr + size)` to the free memory.
    pub fn dealloc(&mut self, addr: u64, size: u64) -> Result<(), MmError> {
        let r = Range::new(addr, size).ok_or(MmError::BadRequest)?;
        if size == 0 || !addr.is_multiple_of(PAGE_SIZE) || !size.is_multiple_of(PAGE_SIZE) {
            return Err(MmError::BadRequest);
        }
        if self
            .ranges()
            .iter()
            .any(|f| f.start < r.end && r.start < f.end)
        {
            return Err(MmError::DoubleFree);
        }
        self.insert(r)
    }

    /// Inserts a range known not to overlap, merging with neighbours.
    fn insert(&mut self, r: Range) -> Result<(), MmError> {
        let pos = self.ranges[..self.len].partition_point(|x| x.start < r.start);
        let merge_left = pos > 0 && self.ranges[pos - 1].end == r.start;
        let merge_right = pos < self.len && self.ranges[pos].start == r.end;
        self.free += r.end - r.start;
        match (merge_left, merge_right) {
            (true, true) => {
                self.ranges[pos - 1].end = self.ranges[pos].end;
                self.delete(pos);
            }
            (true, false) => self.ranges[pos - 1].end = r.end,
            (false, true) => self.ranges[pos].start = r.start,
            (false, false) => {
                if self.len == MAX_RANGES {
                    self.free -= r.end - r.start;
                    self.lost += r.end - r.start;
                    return Err(MmError::TooFragmented);
                }
                self.ranges.copy_within(pos..self.len, pos + 1);
                self.ranges[pos] = r;
                self.len += 1;
            }
        }
        Ok(())
    }

    fn delete(&mut self, i: usize) {
        self.ranges.copy_within(i + 1..self.len, i);
        self.len -= 1;
    }
}

fn align_up(x: u64, a: u64) -> Option<u64> {
    Some(x.checked_add(a - 1)? & !(a - 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootinfo::{Protocol, Region};

    fn boot(regions: &[(u64, u64, RegionKind)]) -> BootInfo {
        let mut b = BootInfo::new(Protocol::Pvh);
        for &(start, len, kind) in regions {
            b.push_region(Region { start, len, kind });
        }
        b
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn boot_map_minus_reservations() {
        let b = boot(&[
            (0, 0x9fc00, RegionKind::Ram),
            (0xf0000, 0x10000, RegionKind::Reserved),
            (MIB, 127 * MIB, RegionKind::Ram),
        ]);
        let image = Range::new(MIB, 0x2_3456).unwrap();
        let module = Range::new(64 * MIB, 10).unwrap();
        let a = FrameAllocator::from_boot(&b, &[image, module]);
        assert_eq!(
            a.ranges(),
            &[
                Range {
                    start: MIB + 0x2_4000,
                    end: 64 * MIB
                },
                Range {
                    start: 64 * MIB + PAGE_SIZE,
                    end: 128 * MIB
                },
            ]
        );
        assert_eq!(a.free, 128 * MIB - MIB - 0x2_4000 - PAGE_SIZE);
    }

    #[test]
    fn alloc_is_aligned_inside_free_memory_and_never_repeats() {
        let b = boot(&[(MIB, 63 * MIB, RegionKind::Ram)]);
        let mut a = FrameAllocator::from_boot(&b, &[]);
        let big = a.alloc(2 * MIB, 2 * MIB, u64::MAX).unwrap();
        assert_eq!(big % (2 * MIB), 0);
        let mut seen = vec![(big, big + 2 * MIB)];
        for _ in 0..100 {
            let p = a.alloc(PAGE_SIZE, PAGE_SIZE, u64::MAX).unwrap();
            assert!(p >= MIB && p + PAGE_SIZE <= 64 * MIB);
            assert!(seen.iter().all(|&(s, e)| p + PAGE_SIZE <= s || p >= e));
            seen.push((p, p + PAGE_SIZE));
        }
        assert_eq!(a.free, 63 * MIB - 2 * MIB - 100 * PAGE_SIZE);
    }

    #[test]
    fn taking_a_range_top_or_whole_keeps_the_list_exact() {
        let b = boot(&[
            (MIB, PAGE_SIZE, RegionKind::Ram),
            (8 * MIB, MIB, RegionKind::Ram),
        ]);
        let mut a = FrameAllocator::from_boot(&b, &[]);
        // The top page of the highest range.
        assert_eq!(
            a.alloc(PAGE_SIZE, PAGE_SIZE, u64::MAX),
            Ok(9 * MIB - PAGE_SIZE)
        );
        assert_eq!(
            a.ranges(),
            &[
                Range {
                    start: MIB,
                    end: MIB + PAGE_SIZE
                },
                Range {
                    start: 8 * MIB,
                    end: 9 * MIB - PAGE_SIZE
                }
            ]
        );
        // All that is left of it, then the lone page below.
        assert_eq!(a.alloc(MIB - PAGE_SIZE, PAGE_SIZE, u64::MAX), Ok(8 * MIB));
        assert_eq!(
            a.ranges(),
            &[Range {
                start: MIB,
                end: MIB + PAGE_SIZE
            }]
        );
        assert_eq!(a.free, PAGE_SIZE);
        assert_eq!(a.alloc(PAGE_SIZE, PAGE_SIZE, u64::MAX), Ok(MIB));
        assert_eq!(a.ranges(), &[]);
        assert_eq!(a.free, 0);
        assert_eq!(
            a.alloc(PAGE_SIZE, PAGE_SIZE, u64::MAX),
            Err(MmError::OutOfMemory)
        );
        // Everything comes back as one list again.
        a.dealloc(MIB, PAGE_SIZE).unwrap();
        a.dealloc(8 * MIB, MIB).unwrap();
        assert_eq!(a.free, MIB + PAGE_SIZE);
        assert_eq!(a.ranges().len(), 2);
    }

    #[test]
    fn limit_is_honoured_and_exhaustion_reported() {
        let b = boot(&[(MIB, MIB, RegionKind::Ram), (8 * MIB, MIB, RegionKind::Ram)]);
        let mut a = FrameAllocator::from_boot(&b, &[]);
        let p = a.alloc(PAGE_SIZE, PAGE_SIZE, 2 * MIB).unwrap();
        assert!(p < 2 * MIB);
        assert_eq!(
            a.alloc(2 * MIB, PAGE_SIZE, u64::MAX),
            Err(MmError::OutOfMemory)
        );
        assert_eq!(a.alloc(0, PAGE_SIZE, u64::MAX), Err(MmError::BadRequest));
        assert_eq!(a.alloc(PAGE_SIZE, 3, u64::MAX), Err(MmError::BadRequest));
    }

    #[test]
    fn free_merges_and_double_free_is_caught() {
        let b = boot(&[(MIB, MIB, RegionKind::Ram)]);
        let mut a = FrameAllocator::from_boot(&b, &[]);
        let x = a.alloc(PAGE_SIZE, PAGE_SIZE, u64::MAX).unwrap();
        let y = a.alloc(PAGE_SIZE, PAGE_SIZE, u64::MAX).unwrap();
        a.dealloc(x, PAGE_SIZE).unwrap();
        assert_eq!(a.dealloc(x, PAGE_SIZE), Err(MmError::DoubleFree));
        a.dealloc(y, PAGE_SIZE).unwrap();
        assert_eq!(
            a.ranges(),
            &[Range {
                start: MIB,
                end: 2 * MIB
            }]
        );
        assert_eq!(a.free, MIB);
    }

    #[test]
    fn fragmentation_is_bounded_and_counted() {
        let b = boot(&[(MIB, 4 * MAX_RANGES as u64 * PAGE_SIZE, RegionKind::Ram)]);
        let mut a = FrameAllocator::from_boot(&b, &[]);
        let mut pages = Vec::new();
        while let Ok(p) = a.alloc(PAGE_SIZE, PAGE_SIZE, u64::MAX) {
            pages.push(p);
        }
        // Free every other page: more holes than the table holds.
        let mut errors = 0;
        for p in pages.iter().step_by(2) {
            if a.dealloc(*p, PAGE_SIZE) == Err(MmError::TooFragmented) {
                errors += 1;
            }
        }
        assert_eq!(a.ranges().len(), MAX_RANGES);
        assert!(errors > 0);
        assert_eq!(a.lost, errors * PAGE_SIZE);
    }
}
