//! Byte-stream rings: one data array with a consumer and a producer index,
//! as used by the console and xenstore pages.
//!
//! # Concurrency
//! The producer copies bytes in, then publishes `prod` with a release store;
//! the consumer loads `prod` with acquire, copies bytes out, then releases
//! the space by a release store of `cons` (its reads are ordered before the
//! store). Each end writes only its own index and keeps a private copy of it;
//! data bytes are copied with byte-wide atomics; the peer's index is read
//! once per call and validated: the ring never holds
//! more than its length (`prod - cons <= len`) and the peer's index never
//! runs backwards. A violation stops the end for good ([`ByteRingError`]).
//! These protocols have no event indices: signal the peer after every call
//! that moved data.

use core::sync::atomic::Ordering::{Acquire, Release};

use crate::mem::SharedMem;

/// Where one direction of a byte ring lives in the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRingLayout {
    /// Offset of the data array.
    pub data: usize,
    /// Length of the data array; a power of two. Indices are masked with
    /// this length (the array actually indexed).
    pub len: u32,
    /// Offset of the consumer index.
    pub cons: usize,
    /// Offset of the producer index.
    pub prod: usize,
}

impl ByteRingLayout {
    /// Checks that the layout fits `mem_len` bytes: power-of-two length, the
    /// array and both (aligned) indices in bounds.
    pub fn fits(&self, mem_len: usize) -> bool {
        self.len.is_power_of_two()
            && self
                .data
                .checked_add(self.len as usize)
                .is_some_and(|e| e <= mem_len)
            && self.cons.is_multiple_of(4)
            && self.prod.is_multiple_of(4)
            && self.cons.checked_add(4).is_some_and(|e| e <= mem_len)
            && self.prod.checked_add(4).is_some_and(|e| e <= mem_len)
    }
}

/// A protocol violation seen on a byte ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteRingError {
    /// The layout does not fit the memory.
    BadLayout,
    /// `prod - cons` exceeds the ring length.
    Overflow {
        /// Producer index read or held.
        prod: u32,
        /// Consumer index read or held.
        cons: u32,
    },
    /// The peer's index moved backwards.
    WentBackwards {
        /// The value seen before.
        seen: u32,
        /// The value read now.
        now: u32,
    },
}

/// Copies `src` into the ring data starting at index `idx`, wrapping.
fn copy_in<M: SharedMem>(mem: &M, l: &ByteRingLayout, idx: u32, src: &[u8]) {
    let start = (idx & (l.len - 1)) as usize;
    let first = src.len().min(l.len as usize - start);
    mem.write(l.data + start, &src[..first], 1);
    mem.write(l.data, &src[first..], 1);
}

/// Copies ring data starting at index `idx` into `dst`, wrapping.
fn copy_out<M: SharedMem>(mem: &M, l: &ByteRingLayout, idx: u32, dst: &mut [u8]) {
    let start = (idx & (l.len - 1)) as usize;
    let first = dst.len().min(l.len as usize - start);
    let (a, b) = dst.split_at_mut(first);
    mem.read(l.data + start, a, 1);
    mem.read(l.data, b, 1);
}

/// Producer end of one direction.
#[derive(Debug)]
pub struct ByteWriter<M> {
    mem: M,
    layout: ByteRingLayout,
    prod: u32,
    cons_seen: u32,
    fault: Option<ByteRingError>,
}

impl<M: SharedMem> ByteWriter<M> {
    /// Attaches to the ring, taking both indices from the page once and
    /// validating them.
    pub fn attach(mem: M, layout: ByteRingLayout) -> Result<Self, ByteRingError> {
        if !layout.fits(mem.len()) {
            return Err(ByteRingError::BadLayout);
        }
        let prod = mem.load_u32(layout.prod, Acquire);
        let cons = mem.load_u32(layout.cons, Acquire);
        if prod.wrapping_sub(cons) > layout.len {
            return Err(ByteRingError::Overflow { prod, cons });
        }
        Ok(Self {
            mem,
            layout,
            prod,
            cons_seen: cons,
            fault: None,
        })
    }

    /// The fault that stopped this end, if any.
    pub fn fault(&self) -> Option<ByteRingError> {
        self.fault
    }

    /// The private producer index.
    pub fn prod(&self) -> u32 {
        self.prod
    }

    /// The shared memory.
    pub fn mem(&self) -> &M {
        &self.mem
    }

    fn fail(&mut self, e: ByteRingError) -> ByteRingError {
        self.fault = Some(e);
        e
    }

    /// Reads the consumer once and returns the free space.
    fn refresh(&mut self) -> Result<u32, ByteRingError> {
        if let Some(e) = self.fault {
            return Err(e);
        }
        let cons = self.mem.load_u32(self.layout.cons, Acquire);
        let used = self.prod.wrapping_sub(cons);
        if used > self.layout.len {
            return Err(self.fail(ByteRingError::Overflow {
                prod: self.prod,
                cons,
            }));
        }
        if cons.wrapping_sub(self.cons_seen) > self.prod.wrapping_sub(self.cons_seen) {
            return Err(self.fail(ByteRingError::WentBackwards {
                seen: self.cons_seen,
                now: cons,
            }));
        }
        self.cons_seen = cons;
        Ok(self.layout.len - used)
    }

    /// Free space in bytes (reads the consumer index).
    pub fn space(&mut self) -> Result<u32, ByteRingError> {
        self.refresh()
    }

    /// Copies as much of `src` as fits and publishes it; returns the number
    /// of bytes written (0 if full). Signal the peer when it is non-zero.
    pub fn write(&mut self, src: &[u8]) -> Result<usize, ByteRingError> {
        let free = self.refresh()? as usize;
        let n = free.min(src.len());
        if n == 0 {
            return Ok(0);
        }
        copy_in(&self.mem, &self.layout, self.prod, &src[..n]);
        // n <= len <= 2^31, so it fits in u32.
        self.prod = self.prod.wrapping_add(n as u32);
        self.mem.store_u32(self.layout.prod, self.prod, Release);
        Ok(n)
    }
}

/// Consumer end of one direction.
#[derive(Debug)]
pub struct ByteReader<M> {
    mem: M,
    layout: ByteRingLayout,
    cons: u32,
    prod_seen: u32,
    fault: Option<ByteRingError>,
}

impl<M: SharedMem> ByteReader<M> {
    /// Attaches to the ring, taking both indices from the page once and
    /// validating them.
    pub fn attach(mem: M, layout: ByteRingLayout) -> Result<Self, ByteRingError> {
        if !layout.fits(mem.len()) {
            return Err(ByteRingError::BadLayout);
        }
        let prod = mem.load_u32(layout.prod, Acquire);
        let cons = mem.load_u32(layout.cons, Acquire);
        if prod.wrapping_sub(cons) > layout.len {
            return Err(ByteRingError::Overflow { prod, cons });
        }
        Ok(Self {
            mem,
            layout,
            cons,
            prod_seen: cons,
            fault: None,
        })
    }

    /// The fault that stopped this end, if any.
    pub fn fault(&self) -> Option<ByteRingError> {
        self.fault
    }

    /// The private consumer index.
    pub fn cons(&self) -> u32 {
        self.cons
    }

    /// The shared memory.
    pub fn mem(&self) -> &M {
        &self.mem
    }

    fn fail(&mut self, e: ByteRingError) -> ByteRingError {
        self.fault = Some(e);
        e
    }

    /// Reads the producer once and returns the bytes available.
    fn refresh(&mut self) -> Result<u32, ByteRingError> {
        if let Some(e) = self.fault {
            return Err(e);
        }
        let prod = self.mem.load_u32(self.layout.prod, Acquire);
        let avail = prod.wrapping_sub(self.cons);
        if avail > self.layout.len {
            return Err(self.fail(ByteRingError::Overflow {
                prod,
                cons: self.cons,
            }));
        }
        if avail < self.prod_seen.wrapping_sub(self.cons) {
            return Err(self.fail(ByteRingError::WentBackwards {
                seen: self.prod_seen,
                now: prod,
            }));
        }
        self.prod_seen = prod;
        Ok(avail)
    }

    /// Bytes available (reads the producer index).
    pub fn available(&mut self) -> Result<u32, ByteRingError> {
        self.refresh()
    }

    /// Copies up to `dst.len()` available bytes out and frees their space;
    /// returns the number of bytes read (0 if empty). Signal the peer when it
    /// is non-zero.
    pub fn read(&mut self, dst: &mut [u8]) -> Result<usize, ByteRingError> {
        let avail = self.refresh()? as usize;
        let n = avail.min(dst.len());
        if n == 0 {
            return Ok(0);
        }
        copy_out(&self.mem, &self.layout, self.cons, &mut dst[..n]);
        self.cons = self.cons.wrapping_add(n as u32);
        self.mem.store_u32(self.layout.cons, self.cons, Release);
        Ok(n)
    }
}
