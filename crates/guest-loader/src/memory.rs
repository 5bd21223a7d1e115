//! The narrow guest-memory interface the loader writes through, and a
//! `Vec`-backed implementation for tests, benches and tools.
//!
//! The trait only reads, writes and zeroes guest-physical bytes; it never
//! manages memory. The hypervisor implements it over a domain's frames; host
//! code uses [`VecGuestMemory`].

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;

/// Why a guest-memory access failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemError {
    /// Part of `[gpa, gpa + len)` is not backed by guest memory (or the
    /// range wraps around the 64-bit address space). Nothing was written.
    OutOfBounds {
        /// First guest-physical address of the access.
        gpa: u64,
        /// Length of the access in bytes.
        len: u64,
    },
}

impl fmt::Display for MemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MemError::OutOfBounds { gpa, len } => write!(
                f,
                "guest-physical range {gpa:#x}+{len:#x} is not backed by guest memory"
            ),
        }
    }
}

impl core::error::Error for MemError {}

/// Guest-physical memory as the loader sees it.
///
/// Implementations must check every access: an access that is not entirely
/// backed fails with [`MemError::OutOfBounds`] before writing anything.
/// The loader checks its own plan first, so such a failure means the
/// memory does not back a region the plan needs (see
/// [`MemoryPlan::backing`](crate::MemoryPlan::backing)).
pub trait GuestMemory {
    /// One past the highest guest-physical address this memory may back.
    /// Addresses below it may still be holes; accesses there fail.
    fn size(&self) -> u64;

    /// Copies `data` to guest-physical address `gpa`.
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError>;

    /// Sets `len` bytes from `gpa` to zero.
    fn zero(&mut self, gpa: u64, len: u64) -> Result<(), MemError>;

    /// Copies guest-physical bytes from `gpa` into `buf` (for checks and
    /// tests; the loader itself never reads guest memory).
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError>;
}

/// Size of one sparse [`VecGuestMemory`] chunk above the dense part: 2 MiB.
pub const CHUNK_SIZE: u64 = 2 << 20;

/// Most bytes of the dense (one contiguous buffer) part of a
/// [`VecGuestMemory`]: the first 1 GiB, where kernels, boot structures and
/// modules go.
pub const DENSE_MAX: u64 = 1 << 30;

/// Heap-backed guest memory for tests, benches and tools: addresses
/// `0..size` are all backed. The first [`DENSE_MAX`] bytes are one
/// zero-allocated buffer (allocated on the first write there; the host OS
/// commits only the pages touched), so a kernel segment is one `memcpy`;
/// above it, 2 MiB chunks are allocated as they are written, so a layout
/// reaching past 4 GiB costs only what is written. Unwritten bytes read as
/// zero.
#[derive(Clone, Debug, Default)]
pub struct VecGuestMemory {
    size: u64,
    dense: Vec<u8>,
    chunks: BTreeMap<u64, Box<[u8]>>,
}

/// The part of an access below the dense limit and the part above it.
struct Split {
    /// `(offset in dense, length)`.
    dense: Option<(usize, usize)>,
    /// `(gpa, length, offset into the access)`.
    sparse: Option<(u64, u64, usize)>,
}

impl VecGuestMemory {
    /// Memory backing guest-physical addresses `0..size`, all zero.
    pub fn new(size: u64) -> Self {
        Self {
            size,
            dense: Vec::new(),
            chunks: BTreeMap::new(),
        }
    }

    /// Memory large enough for every region of a guest with `mem_bytes` of
    /// RAM: RAM, ACPI region and special pages (see
    /// [`MemoryPlan::backing`](crate::MemoryPlan::backing)).
    pub fn for_ram(mem_bytes: u64) -> Self {
        Self::new(crate::layout::backing_top(mem_bytes))
    }

    /// Heap bytes reserved: the dense part once written, plus the written
    /// chunks.
    pub fn allocated(&self) -> u64 {
        (self.chunks.len() as u64)
            .saturating_mul(CHUNK_SIZE)
            .saturating_add(self.dense.len() as u64)
    }

    fn dense_len(&self) -> u64 {
        self.size.min(DENSE_MAX)
    }

    /// Checks `[gpa, gpa + len)` against the size and splits it at the
    /// dense limit.
    fn split(&self, gpa: u64, len: u64) -> Result<Split, MemError> {
        let end = match gpa.checked_add(len) {
            Some(end) if end <= self.size => end,
            _ => return Err(MemError::OutOfBounds { gpa, len }),
        };
        let limit = self.dense_len();
        // Below `limit` (at most 1 GiB), so the casts are lossless.
        let dense =
            (gpa < limit && len > 0).then(|| (gpa as usize, (end.min(limit) - gpa) as usize));
        let sparse = (end > limit && len > 0).then(|| {
            let from = gpa.max(limit);
            (from, end - from, (from - gpa) as usize)
        });
        Ok(Split { dense, sparse })
    }

    fn dense_mut(&mut self) -> &mut [u8] {
        if self.dense.is_empty() {
            // Zero-allocated: the OS maps pages only when touched.
            self.dense = alloc::vec![0u8; self.dense_len() as usize];
        }
        &mut self.dense
    }

    /// Calls `f(chunk index, offset in chunk, length, offset into the
    /// access)` for each chunk piece of the checked sparse range.
    fn pieces(gpa: u64, len: u64, mut f: impl FnMut(u64, usize, usize, usize)) {
        let mut done = 0u64;
        while done < len {
            // No overflow: gpa + len was checked against size.
            let at = gpa + done;
            let index = at / CHUNK_SIZE;
            let off = at % CHUNK_SIZE;
            let n = (CHUNK_SIZE - off).min(len - done);
            // Chunk offsets and piece lengths are below CHUNK_SIZE, and
            // `done` is below a slice length when a slice is accessed.
            f(index, off as usize, n as usize, done as usize);
            done += n;
        }
    }
}

fn new_chunk() -> Box<[u8]> {
    alloc::vec![0u8; CHUNK_SIZE as usize].into_boxed_slice()
}

impl GuestMemory for VecGuestMemory {
    fn size(&self) -> u64 {
        self.size
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        let split = self.split(gpa, data.len() as u64)?;
        if let Some((off, n)) = split.dense {
            self.dense_mut()[off..off + n].copy_from_slice(&data[..n]);
        }
        if let Some((from, len, skip)) = split.sparse {
            let chunks = &mut self.chunks;
            Self::pieces(from, len, |index, off, n, done| {
                let chunk = chunks.entry(index).or_insert_with(new_chunk);
                let src = skip + done;
                chunk[off..off + n].copy_from_slice(&data[src..src + n]);
            });
        }
        Ok(())
    }

    fn zero(&mut self, gpa: u64, len: u64) -> Result<(), MemError> {
        let split = self.split(gpa, len)?;
        if let Some((off, n)) = split.dense {
            // Unallocated means zero.
            if let Some(d) = self.dense.get_mut(off..off + n) {
                d.fill(0);
            }
        }
        if let Some((from, len, _)) = split.sparse {
            let chunks = &mut self.chunks;
            Self::pieces(from, len, |index, off, n, _| {
                // An unwritten chunk is already zero.
                if let Some(chunk) = chunks.get_mut(&index) {
                    chunk[off..off + n].fill(0);
                }
            });
        }
        Ok(())
    }

    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let split = self.split(gpa, buf.len() as u64)?;
        if let Some((off, n)) = split.dense {
            match self.dense.get(off..off + n) {
                Some(d) => buf[..n].copy_from_slice(d),
                None => buf[..n].fill(0),
            }
        }
        if let Some((from, len, skip)) = split.sparse {
            Self::pieces(from, len, |index, off, n, done| {
                let out = &mut buf[skip + done..skip + done + n];
                match self.chunks.get(&index) {
                    Some(chunk) => out.copy_from_slice(&chunk[off..off + n]),
                    None => out.fill(0),
                }
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_across_the_dense_limit_and_chunks_read_back() {
        let mut m = VecGuestMemory::new(DENSE_MAX + 3 * CHUNK_SIZE);
        let data: Vec<u8> = (0..3 * CHUNK_SIZE as u32)
            .map(|i| (i % 251) as u8)
            .collect();
        for at in [DENSE_MAX - 1234, DENSE_MAX + CHUNK_SIZE - 77, 5] {
            m.write(at, &data[..5000]).unwrap();
            let mut back = alloc::vec![0u8; 5000];
            m.read(at, &mut back).unwrap();
            assert_eq!(back, data[..5000]);
            m.zero(at + 10, 100).unwrap();
            m.read(at, &mut back).unwrap();
            assert!(back[10..110].iter().all(|&b| b == 0));
            assert_eq!(back[110..], data[110..5000]);
        }
        assert_eq!(m.allocated(), DENSE_MAX + 2 * CHUNK_SIZE);
        let at = DENSE_MAX - 100;
        m.write(at, &data[..2 * CHUNK_SIZE as usize]).unwrap();
        let mut back = alloc::vec![0u8; 2 * CHUNK_SIZE as usize];
        m.read(at, &mut back).unwrap();
        assert_eq!(back, data[..2 * CHUNK_SIZE as usize]);
    }

    #[test]
    fn small_memory_is_all_dense() {
        let mut m = VecGuestMemory::new(0x3000);
        m.write(0x2ff0, &[9; 16]).unwrap();
        assert_eq!(m.allocated(), 0x3000);
        let mut b = [0u8; 32];
        m.read(0x2fe0, &mut b).unwrap();
        assert_eq!(b[..16], [0; 16]);
        assert_eq!(b[16..], [9; 16]);
    }

    #[test]
    fn out_of_bounds_and_wrap_rejected_without_effect() {
        let mut m = VecGuestMemory::new(0x1000);
        assert_eq!(
            m.write(0xfff, &[1, 2]),
            Err(MemError::OutOfBounds { gpa: 0xfff, len: 2 })
        );
        assert!(m.zero(u64::MAX, 2).is_err());
        assert!(m.read(u64::MAX - 1, &mut [0u8; 4]).is_err());
        assert_eq!(m.allocated(), 0);
        m.write(0xfff, &[7]).unwrap();
        m.write(0x1000, &[]).unwrap();
    }

    #[test]
    fn unwritten_reads_zero_and_zeroing_allocates_nothing() {
        let mut m = VecGuestMemory::new(1 << 40);
        m.zero(1 << 35, 64 << 20).unwrap();
        m.zero(0, 64 << 20).unwrap();
        assert_eq!(m.allocated(), 0);
        let mut b = [0xffu8; 16];
        m.read((1 << 40) - 16, &mut b).unwrap();
        assert_eq!(b, [0; 16]);
    }
}
