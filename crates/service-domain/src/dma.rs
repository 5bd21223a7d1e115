//! The page allocator of the direct-mapped region (`directmap=` on the
//! command line): the only memory a device may be given for DMA, since
//! there is no IOMMU and guest-physical equals host-physical only there.
//! The kernel's virtio `Hal` hands out runs of pages from it (queues, and
//! bounce buffers for data that lives elsewhere); the bookkeeping is
//! here, safe and host-tested, as page numbers relative to the region.

use alloc::vec;
use alloc::vec::Vec;

/// Contiguous runs of pages, first fit, one bit per page.
#[derive(Clone, Debug)]
pub struct PageAlloc {
    used: Vec<u64>,
    pages: usize,
}

impl PageAlloc {
    /// A region of `pages` pages, all free.
    pub fn new(pages: usize) -> Self {
        Self {
            used: vec![0; pages.div_ceil(64)],
            pages,
        }
    }

    /// Pages in the region.
    pub fn pages(&self) -> usize {
        self.pages
    }

    fn is_used(&self, p: usize) -> bool {
        self.used[p / 64] & (1 << (p % 64)) != 0
    }

    fn set(&mut self, first: usize, n: usize, used: bool) {
        for p in first..first + n {
            if used {
                self.used[p / 64] |= 1 << (p % 64);
            } else {
                self.used[p / 64] &= !(1 << (p % 64));
            }
        }
    }

    /// Takes `n` contiguous free pages (at least 1): the first one's index.
    pub fn alloc(&mut self, n: usize) -> Option<usize> {
        let n = n.max(1);
        let mut run = 0;
        for p in 0..self.pages {
            if self.is_used(p) {
                run = 0;
            } else {
                run += 1;
                if run == n {
                    let first = p + 1 - n;
                    self.set(first, n, true);
                    return Some(first);
                }
            }
        }
        None
    }

    /// Gives back `n` pages from `first`; false (nothing changed) if any
    /// of them is outside the region or not allocated.
    pub fn free(&mut self, first: usize, n: usize) -> bool {
        let n = n.max(1);
        let Some(end) = first.checked_add(n).filter(|&e| e <= self.pages) else {
            return false;
        };
        if !(first..end).all(|p| self.is_used(p)) {
            return false;
        }
        self.set(first, n, false);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fit_runs_and_frees() {
        let mut a = PageAlloc::new(130);
        assert_eq!(a.alloc(1), Some(0));
        assert_eq!(a.alloc(64), Some(1));
        assert_eq!(a.alloc(3), Some(65));
        assert!(a.free(1, 64));
        assert!(!a.free(1, 64), "twice");
        assert_eq!(a.alloc(2), Some(1), "the hole is reused");
        assert_eq!(a.alloc(62), Some(3));
        assert_eq!(a.alloc(63), None, "62 left at the end");
        assert_eq!(a.alloc(62), Some(68));
        assert_eq!(a.alloc(1), None);
        assert!(!a.free(129, 2), "past the end");
        assert!(!a.free(usize::MAX, 2));
        assert!(a.free(0, 0), "a run of 0 counts as 1");
        assert_eq!(a.alloc(0), Some(0));
    }
}
