//! Request/response rings, byte-compatible with Xen's `io/ring.h`.
//!
//! # Layout
//! The shared area (one or more pages) starts with a 64-byte header:
//!
//! | offset | field       | written by |
//! |--------|-------------|------------|
//! | 0      | `req_prod`  | front end  |
//! | 4      | `req_event` | back end   |
//! | 8      | `rsp_prod`  | back end   |
//! | 12     | `rsp_event` | front end  |
//! | 16..64 | private / padding (netif uses byte 16) | front end at init |
//!
//! Entries follow at offset 64. Each slot holds a request or a response (a C
//! union), so its size is the larger of the two; the number of slots is
//! `(bytes - 64) / entry_size` rounded down to a power of two
//! ([`ring_size`]).
//!
//! # Indices
//! Indices are free-running `u32`s that wrap at 2^32; all arithmetic here is
//! wrapping; the slot of index `i` is `i & (size - 1)`. Each end keeps private
//! indices: the front `req_prod_pvt` and `rsp_cons`, the back `rsp_prod_pvt`
//! and `req_cons`. The page holds only the producers and the event indices.
//!
//! # Concurrency
//! - A producer writes entries, then publishes its producer index with a
//!   release store (Xen's write barrier). The consumer loads the producer
//!   index with acquire before copying entries.
//! - Push-and-check-notify: publish, **full fence**, load the peer's event
//!   index; notify iff it lies in `(old, new]`.
//! - Final check before sleeping: store `event = cons + 1`, **full fence**,
//!   reload the producer. The two full fences pair (store then load on each
//!   side), which is what prevents lost wake-ups; release/acquire alone would
//!   not.
//! - A consumer frees slots by producing into them: the front learns that
//!   request slots are free from `rsp_prod`, so there is no consumer index in
//!   the page.
//!
//! # Hostile peers
//! The peer's producer index is read once per batch and checked before use:
//! a front end may not claim more than `size` requests beyond the responses
//! produced (request-prod overflow), a back end may not claim more than
//! `size` responses beyond `rsp_cons` (response-prod overflow), and neither
//! may move backwards. A violation puts the ring in a broken state: every
//! later call fails with [`RingError::Broken`] and does no shared-memory
//! access. Entries are copied whole into private memory; the caller validates
//! only the copy.

use core::marker::PhantomData;
use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::mem::SharedMem;

/// Size of the shared ring header; entries start here.
pub const RING_HEADER_SIZE: usize = 64;
/// Offset of `req_prod`.
pub const REQ_PROD_OFFSET: usize = 0;
/// Offset of `req_event`.
pub const REQ_EVENT_OFFSET: usize = 4;
/// Offset of `rsp_prod`.
pub const RSP_PROD_OFFSET: usize = 8;
/// Offset of `rsp_event`.
pub const RSP_EVENT_OFFSET: usize = 12;
/// Offset of the private bytes (netif's smart-poll flag) and padding.
pub const RING_PVT_OFFSET: usize = 16;

/// Number of slots of a ring of `bytes` bytes with entries of `entry_size`
/// bytes: `(bytes - 64) / entry_size` rounded down to a power of two, or 0 if
/// not even one entry fits.
pub const fn ring_size(bytes: usize, entry_size: usize) -> u32 {
    if entry_size == 0 || bytes < RING_HEADER_SIZE + entry_size {
        return 0;
    }
    let n = (bytes - RING_HEADER_SIZE) / entry_size;
    let pow = 1usize << (usize::BITS - 1 - n.leading_zeros());
    // Indices are u32: more than 2^31 slots would break the wrap arithmetic.
    if pow > (1 << 31) { 1 << 31 } else { pow as u32 }
}

/// The slot size for a request type and a response type: the larger size.
pub const fn entry_size<Req, Rsp>() -> usize {
    let a = core::mem::size_of::<Req>();
    let b = core::mem::size_of::<Rsp>();
    if a > b { a } else { b }
}

/// Xen's notification decision: notify iff `event` lies in `(old, new]`,
/// computed with wrapping arithmetic.
#[inline(always)]
pub const fn need_notify(old: u32, new: u32, event: u32) -> bool {
    new.wrapping_sub(event) < new.wrapping_sub(old)
}

/// Why a ring cannot be set up over the given memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// Fewer bytes than the header plus one entry.
    TooSmall,
    /// A request or response type has size zero.
    ZeroSizedEntry,
}

/// A protocol violation by the peer. Once seen, the ring stays broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The front end's `req_prod` is more than `size` beyond the back end's
    /// `rsp_prod_pvt` (Xen's `RING_REQUEST_PROD_OVERFLOW`: a bad front end).
    RequestProdOverflow {
        /// The value read.
        req_prod: u32,
        /// The back end's private response producer.
        rsp_prod_pvt: u32,
    },
    /// The back end's `rsp_prod` is more than `size` beyond `rsp_cons`
    /// (Xen's `RING_RESPONSE_PROD_OVERFLOW`: a bad back end).
    ResponseProdOverflow {
        /// The value read.
        rsp_prod: u32,
        /// The front end's private response consumer.
        rsp_cons: u32,
    },
    /// The peer's producer index moved backwards.
    ProducerWentBackwards {
        /// The value seen before.
        seen: u32,
        /// The value read now.
        now: u32,
    },
}

/// Errors of ring operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// No free slot for a request (front end).
    Full,
    /// Every consumed request already has a response (back end): a response
    /// now would overwrite a request not yet consumed.
    NoRequestToAnswer,
    /// The peer broke the protocol; the ring is stopped.
    Broken(Fault),
}

/// The width of the atomic accesses to entries: 8 or 4 if it divides the
/// entry, request and response sizes, else 1. Slot offsets are multiples of
/// it, and every access to a slot uses it, so atomics of different sizes
/// never overlap.
const fn copy_unit<Req, Rsp>() -> usize {
    let sizes =
        entry_size::<Req, Rsp>() | core::mem::size_of::<Req>() | core::mem::size_of::<Rsp>();
    if sizes.is_multiple_of(8) {
        8
    } else if sizes.is_multiple_of(4) {
        4
    } else {
        1
    }
}

/// Geometry shared by both ends. Entry size and copy width are constants of
/// the entry types, so the compiler folds them.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    size: u32,
}

impl Geometry {
    fn new<Req, Rsp>(len: usize) -> Result<Self, LayoutError> {
        if core::mem::size_of::<Req>() == 0 || core::mem::size_of::<Rsp>() == 0 {
            return Err(LayoutError::ZeroSizedEntry);
        }
        let size = ring_size(len, entry_size::<Req, Rsp>());
        if size == 0 {
            return Err(LayoutError::TooSmall);
        }
        Ok(Self { size })
    }

    /// Byte offset of the slot of index `idx`; always within the ring.
    #[inline(always)]
    fn slot<Req, Rsp>(&self, idx: u32) -> usize {
        RING_HEADER_SIZE + (idx & (self.size - 1)) as usize * entry_size::<Req, Rsp>()
    }
}

#[inline(always)]
fn read_entry<T: FromBytes + IntoBytes, Req, Rsp, M: SharedMem>(
    mem: &M,
    geo: &Geometry,
    idx: u32,
) -> T {
    let mut v = T::new_zeroed();
    mem.read(
        geo.slot::<Req, Rsp>(idx),
        v.as_mut_bytes(),
        copy_unit::<Req, Rsp>(),
    );
    v
}

#[inline(always)]
fn write_entry<T: IntoBytes + Immutable, Req, Rsp, M: SharedMem>(
    mem: &M,
    geo: &Geometry,
    idx: u32,
    v: &T,
) {
    mem.write(
        geo.slot::<Req, Rsp>(idx),
        v.as_bytes(),
        copy_unit::<Req, Rsp>(),
    );
}

/// Initialises the shared header as Xen's `SHARED_RING_INIT` does: producers
/// 0, event indices 1, private bytes and padding zeroed. Only the front end
/// does this, before advertising the ring.
pub fn init_shared_ring<M: SharedMem>(mem: &M) {
    mem.store_u32(REQ_PROD_OFFSET, 0, Relaxed);
    mem.store_u32(RSP_PROD_OFFSET, 0, Relaxed);
    mem.store_u32(REQ_EVENT_OFFSET, 1, Relaxed);
    mem.store_u32(RSP_EVENT_OFFSET, 1, Relaxed);
    mem.write(RING_PVT_OFFSET, &[0; RING_HEADER_SIZE - RING_PVT_OFFSET], 4);
    mem.full_fence();
}

/// The front end of a request/response ring: produces requests, consumes
/// responses.
///
/// `Req` and `Rsp` are plain-data types (`zerocopy` traits), e.g.
/// `xen_abi`'s `BlkifRequest`/`BlkifResponse`. They are copied whole between
/// private memory and the ring.
pub struct FrontRing<M, Req, Rsp> {
    mem: M,
    geo: Geometry,
    req_prod_pvt: u32,
    req_prod_pub: u32,
    rsp_cons: u32,
    rsp_prod_seen: u32,
    fault: Option<Fault>,
    _types: PhantomData<fn(Req) -> Rsp>,
}

impl<M, Req, Rsp> FrontRing<M, Req, Rsp>
where
    M: SharedMem,
    Req: FromBytes + IntoBytes + Immutable,
    Rsp: FromBytes + IntoBytes + Immutable,
{
    /// Initialises the shared header (`SHARED_RING_INIT`) and attaches at
    /// index 0 (`FRONT_RING_INIT`).
    pub fn init(mem: M) -> Result<Self, LayoutError> {
        let ring = Self::attach(mem, 0)?;
        init_shared_ring(&ring.mem);
        Ok(ring)
    }

    /// Attaches to a ring whose indices all stand at `start`
    /// (`FRONT_RING_ATTACH`); the shared header is not touched.
    pub fn attach(mem: M, start: u32) -> Result<Self, LayoutError> {
        let geo = Geometry::new::<Req, Rsp>(mem.len())?;
        Ok(Self {
            mem,
            geo,
            req_prod_pvt: start,
            req_prod_pub: start,
            rsp_cons: start,
            rsp_prod_seen: start,
            fault: None,
            _types: PhantomData,
        })
    }

    /// Number of slots.
    pub fn size(&self) -> u32 {
        self.geo.size
    }

    /// The shared memory.
    pub fn mem(&self) -> &M {
        &self.mem
    }

    /// The private request producer (`req_prod_pvt`).
    pub fn req_prod_pvt(&self) -> u32 {
        self.req_prod_pvt
    }

    /// The private response consumer (`rsp_cons`).
    pub fn rsp_cons(&self) -> u32 {
        self.rsp_cons
    }

    /// The fault that broke the ring, if any.
    pub fn fault(&self) -> Option<Fault> {
        self.fault
    }

    /// Free request slots: `size - (req_prod_pvt - rsp_cons)`.
    pub fn free_requests(&self) -> u32 {
        self.geo.size - self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }

    /// No free request slot.
    pub fn is_full(&self) -> bool {
        self.free_requests() == 0
    }

    /// Copies `req` into the next request slot; it becomes visible to the
    /// back end at the next [`push_requests`](Self::push_requests).
    #[inline(always)]
    pub fn put_request(&mut self, req: &Req) -> Result<(), RingError> {
        if let Some(f) = self.fault {
            return Err(RingError::Broken(f));
        }
        if self.is_full() {
            return Err(RingError::Full);
        }
        write_entry::<_, Req, Rsp, _>(&self.mem, &self.geo, self.req_prod_pvt, req);
        self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
        Ok(())
    }

    /// Publishes the requests put so far and reports whether the back end
    /// must be notified (`RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`).
    #[must_use = "the back end may be asleep: send an event when this is true"]
    #[inline]
    pub fn push_requests(&mut self) -> bool {
        if self.fault.is_some() {
            return false;
        }
        let old = self.req_prod_pub;
        let new = self.req_prod_pvt;
        self.mem.store_u32(REQ_PROD_OFFSET, new, Release);
        self.req_prod_pub = new;
        self.mem.full_fence();
        let event = self.mem.load_u32(REQ_EVENT_OFFSET, Relaxed);
        need_notify(old, new, event)
    }

    /// Publishes the requests put so far without the notification check
    /// (`RING_PUSH_REQUESTS`), for a back end known to be polling.
    #[inline]
    pub fn publish_requests(&mut self) {
        if self.fault.is_some() {
            return;
        }
        self.mem
            .store_u32(REQ_PROD_OFFSET, self.req_prod_pvt, Release);
        self.req_prod_pub = self.req_prod_pvt;
    }

    fn fail(&mut self, f: Fault) -> RingError {
        self.fault = Some(f);
        RingError::Broken(f)
    }

    /// Reads `rsp_prod` once, validates it and returns the number of
    /// unconsumed responses.
    #[inline]
    fn refresh(&mut self) -> Result<u32, RingError> {
        let prod = self.mem.load_u32(RSP_PROD_OFFSET, Acquire);
        let ahead = prod.wrapping_sub(self.rsp_cons);
        if ahead > self.geo.size {
            return Err(self.fail(Fault::ResponseProdOverflow {
                rsp_prod: prod,
                rsp_cons: self.rsp_cons,
            }));
        }
        if ahead < self.rsp_prod_seen.wrapping_sub(self.rsp_cons) {
            return Err(self.fail(Fault::ProducerWentBackwards {
                seen: self.rsp_prod_seen,
                now: prod,
            }));
        }
        self.rsp_prod_seen = prod;
        Ok(ahead)
    }

    /// Number of responses ready to consume (reads `rsp_prod`).
    pub fn unconsumed_responses(&mut self) -> Result<u32, RingError> {
        if let Some(f) = self.fault {
            return Err(RingError::Broken(f));
        }
        self.refresh()
    }

    /// Copies out the next response, if one is published. `rsp_prod` is read
    /// only when the responses seen at the last read are used up.
    #[inline(always)]
    pub fn pop_response(&mut self) -> Result<Option<Rsp>, RingError> {
        if let Some(f) = self.fault {
            return Err(RingError::Broken(f));
        }
        if self.rsp_cons == self.rsp_prod_seen && self.refresh()? == 0 {
            return Ok(None);
        }
        let rsp = read_entry::<_, Req, Rsp, _>(&self.mem, &self.geo, self.rsp_cons);
        self.rsp_cons = self.rsp_cons.wrapping_add(1);
        Ok(Some(rsp))
    }

    /// Reads `rsp_prod` once and returns an iterator over at most `max`
    /// published responses; each one is copied out when the iterator yields
    /// it, and consumed (its slot freed for a request) at that moment.
    pub fn take_responses(&mut self, max: u32) -> Result<Responses<'_, M, Req, Rsp>, RingError> {
        let avail = self.unconsumed_responses()?;
        Ok(Responses {
            left: avail.min(max),
            ring: self,
        })
    }

    /// Xen's `RING_FINAL_CHECK_FOR_RESPONSES`: returns true if responses are
    /// pending; otherwise asks the back end for an event at the next response
    /// (`rsp_event = rsp_cons + 1`), issues a full fence and checks again.
    /// Sleep (wait for the event) only when this returns false.
    pub fn final_check_for_responses(&mut self) -> Result<bool, RingError> {
        if self.unconsumed_responses()? > 0 {
            return Ok(true);
        }
        self.mem
            .store_u32(RSP_EVENT_OFFSET, self.rsp_cons.wrapping_add(1), Relaxed);
        self.mem.full_fence();
        Ok(self.refresh()? > 0)
    }
}

/// Iterator over a batch of responses, from [`FrontRing::take_responses`].
pub struct Responses<'r, M, Req, Rsp> {
    ring: &'r mut FrontRing<M, Req, Rsp>,
    left: u32,
}

impl<M, Req, Rsp> Iterator for Responses<'_, M, Req, Rsp>
where
    M: SharedMem,
    Req: FromBytes + IntoBytes + Immutable,
    Rsp: FromBytes + IntoBytes + Immutable,
{
    type Item = Rsp;

    #[inline(always)]
    fn next(&mut self) -> Option<Rsp> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let r = &mut *self.ring;
        let rsp = read_entry::<_, Req, Rsp, _>(&r.mem, &r.geo, r.rsp_cons);
        r.rsp_cons = r.rsp_cons.wrapping_add(1);
        Some(rsp)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

/// The back end of a request/response ring: consumes requests, produces
/// responses.
pub struct BackRing<M, Req, Rsp> {
    mem: M,
    geo: Geometry,
    rsp_prod_pvt: u32,
    rsp_prod_pub: u32,
    req_cons: u32,
    req_prod_seen: u32,
    fault: Option<Fault>,
    _types: PhantomData<fn(Req) -> Rsp>,
}

impl<M, Req, Rsp> BackRing<M, Req, Rsp>
where
    M: SharedMem,
    Req: FromBytes + IntoBytes + Immutable,
    Rsp: FromBytes + IntoBytes + Immutable,
{
    /// Attaches at index 0 (`BACK_RING_INIT`), to a ring the front end
    /// initialised. The shared header is not touched.
    pub fn new(mem: M) -> Result<Self, LayoutError> {
        Self::attach(mem, 0)
    }

    /// Attaches with both private indices at `start` (`BACK_RING_ATTACH`).
    pub fn attach(mem: M, start: u32) -> Result<Self, LayoutError> {
        let geo = Geometry::new::<Req, Rsp>(mem.len())?;
        Ok(Self {
            mem,
            geo,
            rsp_prod_pvt: start,
            rsp_prod_pub: start,
            req_cons: start,
            req_prod_seen: start,
            fault: None,
            _types: PhantomData,
        })
    }

    /// Number of slots.
    pub fn size(&self) -> u32 {
        self.geo.size
    }

    /// The shared memory.
    pub fn mem(&self) -> &M {
        &self.mem
    }

    /// The private request consumer (`req_cons`).
    pub fn req_cons(&self) -> u32 {
        self.req_cons
    }

    /// The private response producer (`rsp_prod_pvt`).
    pub fn rsp_prod_pvt(&self) -> u32 {
        self.rsp_prod_pvt
    }

    /// The fault that broke the ring, if any.
    pub fn fault(&self) -> Option<Fault> {
        self.fault
    }

    /// Xen's `RING_REQUEST_CONS_OVERFLOW`: `size` requests are consumed and
    /// unanswered, so no further request may be consumed before a response.
    pub fn request_cons_overflow(&self) -> bool {
        self.req_cons.wrapping_sub(self.rsp_prod_pvt) >= self.geo.size
    }

    fn fail(&mut self, f: Fault) -> RingError {
        self.fault = Some(f);
        RingError::Broken(f)
    }

    /// Reads `req_prod` once, validates it and returns the number of
    /// requests that may be consumed: Xen's
    /// `min(req_prod - req_cons, size - (req_cons - rsp_prod_pvt))`.
    #[inline]
    fn refresh(&mut self) -> Result<u32, RingError> {
        let prod = self.mem.load_u32(REQ_PROD_OFFSET, Acquire);
        let ahead = prod.wrapping_sub(self.rsp_prod_pvt);
        if ahead > self.geo.size {
            return Err(self.fail(Fault::RequestProdOverflow {
                req_prod: prod,
                rsp_prod_pvt: self.rsp_prod_pvt,
            }));
        }
        if ahead < self.req_prod_seen.wrapping_sub(self.rsp_prod_pvt) {
            return Err(self.fail(Fault::ProducerWentBackwards {
                seen: self.req_prod_seen,
                now: prod,
            }));
        }
        self.req_prod_seen = prod;
        let unconsumed = prod.wrapping_sub(self.req_cons);
        let room = self.geo.size - self.req_cons.wrapping_sub(self.rsp_prod_pvt);
        Ok(unconsumed.min(room))
    }

    /// Number of requests ready to consume (reads `req_prod`).
    pub fn unconsumed_requests(&mut self) -> Result<u32, RingError> {
        if let Some(f) = self.fault {
            return Err(RingError::Broken(f));
        }
        self.refresh()
    }

    /// Copies out the next request, if one is published. `req_prod` is read
    /// only when the requests seen at the last read are used up.
    #[inline(always)]
    pub fn pop_request(&mut self) -> Result<Option<Req>, RingError> {
        if let Some(f) = self.fault {
            return Err(RingError::Broken(f));
        }
        if self.req_cons == self.req_prod_seen && self.refresh()? == 0 {
            return Ok(None);
        }
        let req = read_entry::<_, Req, Rsp, _>(&self.mem, &self.geo, self.req_cons);
        self.req_cons = self.req_cons.wrapping_add(1);
        Ok(Some(req))
    }

    /// Reads `req_prod` once and returns an iterator over at most `max`
    /// published requests, each copied out as it is yielded.
    pub fn take_requests(&mut self, max: u32) -> Result<Requests<'_, M, Req, Rsp>, RingError> {
        let avail = self.unconsumed_requests()?;
        Ok(Requests {
            left: avail.min(max),
            ring: self,
        })
    }

    /// Copies `rsp` into the next response slot; it becomes visible at the
    /// next [`push_responses`](Self::push_responses). Fails when every
    /// consumed request already has its response.
    #[inline(always)]
    pub fn put_response(&mut self, rsp: &Rsp) -> Result<(), RingError> {
        if let Some(f) = self.fault {
            return Err(RingError::Broken(f));
        }
        if self.rsp_prod_pvt == self.req_cons {
            return Err(RingError::NoRequestToAnswer);
        }
        write_entry::<_, Req, Rsp, _>(&self.mem, &self.geo, self.rsp_prod_pvt, rsp);
        self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
        Ok(())
    }

    /// Publishes the responses put so far and reports whether the front end
    /// must be notified (`RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`).
    #[must_use = "the front end may be asleep: send an event when this is true"]
    #[inline]
    pub fn push_responses(&mut self) -> bool {
        if self.fault.is_some() {
            return false;
        }
        let old = self.rsp_prod_pub;
        let new = self.rsp_prod_pvt;
        self.mem.store_u32(RSP_PROD_OFFSET, new, Release);
        self.rsp_prod_pub = new;
        self.mem.full_fence();
        let event = self.mem.load_u32(RSP_EVENT_OFFSET, Relaxed);
        need_notify(old, new, event)
    }

    /// Publishes the responses without the notification check
    /// (`RING_PUSH_RESPONSES`), for a front end known to be polling.
    #[inline]
    pub fn publish_responses(&mut self) {
        if self.fault.is_some() {
            return;
        }
        self.mem
            .store_u32(RSP_PROD_OFFSET, self.rsp_prod_pvt, Release);
        self.rsp_prod_pub = self.rsp_prod_pvt;
    }

    /// Xen's `RING_FINAL_CHECK_FOR_REQUESTS`: true if requests are pending;
    /// otherwise sets `req_event = req_cons + 1`, issues a full fence and
    /// checks again. Sleep only when this returns false.
    pub fn final_check_for_requests(&mut self) -> Result<bool, RingError> {
        if self.unconsumed_requests()? > 0 {
            return Ok(true);
        }
        self.mem
            .store_u32(REQ_EVENT_OFFSET, self.req_cons.wrapping_add(1), Relaxed);
        self.mem.full_fence();
        Ok(self.refresh()? > 0)
    }
}

impl<M, Req, Rsp> BackRing<M, Req, Rsp>
where
    M: SharedMem,
    Req: FromBytes + IntoBytes + Immutable,
    Rsp: FromBytes + IntoBytes + Immutable,
{
    /// [`final_check_for_requests`](Self::final_check_for_requests) for a
    /// back end that needs `needed` requests at once (netback's receive
    /// ring: one buffer per slot of a packet): true if that many are
    /// ready; otherwise sets `req_event = req_cons + needed` (the request
    /// that completes the batch raises an event; Linux netback asks for
    /// one at the next request, `req_prod + 1`), fences and checks again.
    pub fn check_for_requests(&mut self, needed: u32) -> Result<bool, RingError> {
        if self.unconsumed_requests()? >= needed {
            return Ok(true);
        }
        self.mem.store_u32(
            REQ_EVENT_OFFSET,
            self.req_cons.wrapping_add(needed),
            Relaxed,
        );
        self.mem.full_fence();
        Ok(self.refresh()? >= needed)
    }
}

/// Iterator over a batch of requests, from [`BackRing::take_requests`].
pub struct Requests<'r, M, Req, Rsp> {
    ring: &'r mut BackRing<M, Req, Rsp>,
    left: u32,
}

impl<M, Req, Rsp> Iterator for Requests<'_, M, Req, Rsp>
where
    M: SharedMem,
    Req: FromBytes + IntoBytes + Immutable,
    Rsp: FromBytes + IntoBytes + Immutable,
{
    type Item = Req;

    #[inline(always)]
    fn next(&mut self) -> Option<Req> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let r = &mut *self.ring;
        let req = read_entry::<_, Req, Rsp, _>(&r.mem, &r.geo, r.req_cons);
        r.req_cons = r.req_cons.wrapping_add(1);
        Some(req)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}
