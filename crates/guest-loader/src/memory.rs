//! The narrow guest-memory interface the loader writes through, and a
//! `Vec`-backed implementation for tests, benches and tools.
//!
//! The trait only reads, writes and zeroes guest-physical bytes; it never
//! manages memory. The hypervisor implements it over a domain's frames; host
//! code uses [`VecGuestMemory`].

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
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

/// Size of one [`VecGuestMemory`] chunk: 2 MiB.
pub const CHUNK_SIZE: u64 = 2 << 20;

/// Heap-backed, sparse guest memory: addresses `0..size` are all backed,
/// but only 2 MiB chunks that were written hold an allocation, so a layout
/// reaching past 4 GiB costs only what is written. Unwritten bytes read as
/// zero.
#[derive(Clone, Debug, Default)]
pub struct VecGuestMemory {
    size: u64,
    chunks: BTreeMap<u64, Box<[u8]>>,
}

impl VecGuestMemory {
    /// Memory backing guest-physical addresses `0..size`, all zero.
    pub fn new(size: u64) -> Self {
        Self {
            size,
            chunks: BTreeMap::new(),
        }
    }

    /// Memory large enough for every region of a guest with `mem_bytes` of
    /// RAM: RAM, ACPI region and special pages (see
    /// [`MemoryPlan::backing`](crate::MemoryPlan::backing)).
    pub fn for_ram(mem_bytes: u64) -> Self {
        Self::new(crate::layout::backing_top(mem_bytes))
    }

    /// Bytes currently allocated (written chunks).
    pub fn allocated(&self) -> u64 {
        (self.chunks.len() as u64).saturating_mul(CHUNK_SIZE)
    }

    fn check(&self, gpa: u64, len: u64) -> Result<(), MemError> {
        match gpa.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(MemError::OutOfBounds { gpa, len }),
        }
    }

    /// Calls `f(chunk index, offset in chunk, length)` for each chunk piece
    /// of the checked range `[gpa, gpa + len)`, with the offset into the
    /// access.
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
        let len = data.len() as u64;
        self.check(gpa, len)?;
        let chunks = &mut self.chunks;
        Self::pieces(gpa, len, |index, off, n, done| {
            let chunk = chunks.entry(index).or_insert_with(new_chunk);
            chunk[off..off + n].copy_from_slice(&data[done..done + n]);
        });
        Ok(())
    }

    fn zero(&mut self, gpa: u64, len: u64) -> Result<(), MemError> {
        self.check(gpa, len)?;
        let chunks = &mut self.chunks;
        Self::pieces(gpa, len, |index, off, n, _| {
            // An unwritten chunk is already zero.
            if let Some(chunk) = chunks.get_mut(&index) {
                chunk[off..off + n].fill(0);
            }
        });
        Ok(())
    }

    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let len = buf.len() as u64;
        self.check(gpa, len)?;
        Self::pieces(gpa, len, |index, off, n, done| {
            let out = &mut buf[done..done + n];
            match self.chunks.get(&index) {
                Some(chunk) => out.copy_from_slice(&chunk[off..off + n]),
                None => out.fill(0),
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_across_chunks_read_back() {
        let mut m = VecGuestMemory::new(3 * CHUNK_SIZE);
        let data: alloc::vec::Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let at = CHUNK_SIZE - 1234;
        m.write(at, &data).unwrap();
        let mut back = alloc::vec![0u8; 5000];
        m.read(at, &mut back).unwrap();
        assert_eq!(back, data);
        assert_eq!(m.allocated(), 2 * CHUNK_SIZE);
        m.zero(at + 10, 100).unwrap();
        m.read(at, &mut back).unwrap();
        assert!(back[10..110].iter().all(|&b| b == 0));
        assert_eq!(back[110], data[110]);
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
        assert_eq!(m.allocated(), 0);
        let mut b = [0xffu8; 16];
        m.read((1 << 40) - 16, &mut b).unwrap();
        assert_eq!(b, [0; 16]);
    }
}
