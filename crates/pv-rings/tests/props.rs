//! Property tests: random interleavings of front-end and back-end steps
//! against a simple queue model, starting at indices near the 2^32 wrap; a
//! hostile peer rewriting the page; byte rings against a byte queue.

use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::atomic::Ordering::Relaxed;

use proptest::prelude::*;
use pv_rings::bytes::{ByteReader, ByteRingLayout, ByteWriter};
use pv_rings::ring::*;
use pv_rings::{BackRing, FrontRing, HeapPage, RawMem, RingError, SharedMem};
use zerocopy::{FromBytes, Immutable, IntoBytes};

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable)]
struct Req {
    id: u64,
    val: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable)]
struct Rsp {
    id: u64,
    status: u64,
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: if cfg!(miri) { 3 } else { 256 },
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A ring of `slots` 16-byte slots inside `page`.
fn ring_mem(page: &HeapPage, slots: usize) -> RawMem<'_> {
    let len = RING_HEADER_SIZE + slots * 16;
    // SAFETY: a prefix of a live HeapPage that is only accessed atomically.
    unsafe { RawMem::new(NonNull::new(page.mem().as_ptr()).unwrap(), len) }.unwrap()
}

/// Sets the page up as `SHARED_RING_INIT` would have, had the ring started
/// at `start`: producers at `start`, events at `start + 1`.
fn init_at(mem: &RawMem<'_>, start: u32) {
    init_shared_ring(mem);
    mem.store_u32(REQ_PROD_OFFSET, start, Relaxed);
    mem.store_u32(RSP_PROD_OFFSET, start, Relaxed);
    mem.store_u32(REQ_EVENT_OFFSET, start.wrapping_add(1), Relaxed);
    mem.store_u32(RSP_EVENT_OFFSET, start.wrapping_add(1), Relaxed);
}

#[derive(Clone, Debug)]
enum Op {
    Put(u8),
    PushReq,
    PublishReq,
    BackTake(u8),
    BackPop,
    Respond(u8),
    PushRsp,
    FrontTake(u8),
    FrontPop,
    BackFinal,
    FrontFinal,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u8..6).prop_map(Op::Put),
        Just(Op::PushReq),
        Just(Op::PublishReq),
        (0u8..6).prop_map(Op::BackTake),
        Just(Op::BackPop),
        (1u8..6).prop_map(Op::Respond),
        Just(Op::PushRsp),
        (0u8..6).prop_map(Op::FrontTake),
        Just(Op::FrontPop),
        Just(Op::BackFinal),
        Just(Op::FrontFinal),
    ]
}

fn start_index() -> impl Strategy<Value = u32> {
    prop_oneof![(u32::MAX - 300..=u32::MAX), Just(0u32), any::<u32>(),]
}

/// The model: where each message is.
#[derive(Default)]
struct Model {
    next_id: u64,
    unpushed_reqs: VecDeque<u64>,
    published_reqs: VecDeque<u64>,
    unanswered: VecDeque<u64>,
    unpushed_rsps: VecDeque<u64>,
    published_rsps: VecDeque<u64>,
    /// The back end's last final check found nothing: it sleeps until
    /// notified.
    back_asleep: bool,
    front_asleep: bool,
}

impl Model {
    fn in_flight(&self) -> usize {
        self.unpushed_reqs.len()
            + self.published_reqs.len()
            + self.unanswered.len()
            + self.unpushed_rsps.len()
            + self.published_rsps.len()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn ring_matches_queue_model(
        slots in prop_oneof![Just(1usize), Just(2), Just(4), Just(8), Just(128)],
        start in start_index(),
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        let page = HeapPage::one();
        let mem = ring_mem(&page, slots);
        init_at(&mem, start);
        let mut f = FrontRing::<_, Req, Rsp>::attach(mem, start).unwrap();
        let mut b = BackRing::<_, Req, Rsp>::attach(mem, start).unwrap();
        prop_assert_eq!(f.size() as usize, slots);
        let mut m = Model { back_asleep: true, front_asleep: true, ..Model::default() };

        for op in ops {
            match op {
                Op::Put(k) => for _ in 0..k {
                    let id = m.next_id;
                    let r = f.put_request(&Req { id, val: !id });
                    if m.in_flight() < slots {
                        prop_assert_eq!(r, Ok(()));
                        m.unpushed_reqs.push_back(id);
                        m.next_id += 1;
                    } else {
                        prop_assert_eq!(r, Err(RingError::Full));
                    }
                },
                Op::PushReq => {
                    let had_new = !m.unpushed_reqs.is_empty();
                    let notify = f.push_requests();
                    prop_assert_eq!(notify, had_new && m.back_asleep);
                    if notify { m.back_asleep = false; }
                    m.published_reqs.extend(m.unpushed_reqs.drain(..));
                }
                Op::PublishReq => {
                    // Publishing without the check passes the back end's
                    // event index silently: the owed wake-up is gone.
                    if !m.unpushed_reqs.is_empty() { m.back_asleep = false; }
                    f.publish_requests();
                    m.published_reqs.extend(m.unpushed_reqs.drain(..));
                }
                Op::BackTake(max) => {
                    let got: Vec<Req> = b.take_requests(max as u32).unwrap().collect();
                    let want = m.published_reqs.len().min(max as usize);
                    prop_assert_eq!(got.len(), want);
                    for r in got {
                        let id = m.published_reqs.pop_front().unwrap();
                        prop_assert_eq!(r, Req { id, val: !id });
                        m.unanswered.push_back(id);
                    }
                }
                Op::BackPop => {
                    let got = b.pop_request().unwrap();
                    match m.published_reqs.pop_front() {
                        Some(id) => {
                            prop_assert_eq!(got, Some(Req { id, val: !id }));
                            m.unanswered.push_back(id);
                        }
                        None => prop_assert_eq!(got, None),
                    }
                }
                Op::Respond(k) => for _ in 0..k {
                    match m.unanswered.front().copied() {
                        Some(id) => {
                            prop_assert_eq!(b.put_response(&Rsp { id, status: id * 3 }), Ok(()));
                            m.unanswered.pop_front();
                            m.unpushed_rsps.push_back(id);
                        }
                        None => prop_assert_eq!(
                            b.put_response(&Rsp { id: 0, status: 0 }),
                            Err(RingError::NoRequestToAnswer)
                        ),
                    }
                },
                Op::PushRsp => {
                    let had_new = !m.unpushed_rsps.is_empty();
                    let notify = b.push_responses();
                    prop_assert_eq!(notify, had_new && m.front_asleep);
                    if notify { m.front_asleep = false; }
                    m.published_rsps.extend(m.unpushed_rsps.drain(..));
                }
                Op::FrontTake(max) => {
                    let got: Vec<Rsp> = f.take_responses(max as u32).unwrap().collect();
                    prop_assert_eq!(got.len(), m.published_rsps.len().min(max as usize));
                    for r in got {
                        let id = m.published_rsps.pop_front().unwrap();
                        prop_assert_eq!(r, Rsp { id, status: id * 3 });
                    }
                }
                Op::FrontPop => {
                    let got = f.pop_response().unwrap();
                    match m.published_rsps.pop_front() {
                        Some(id) => prop_assert_eq!(got, Some(Rsp { id, status: id * 3 })),
                        None => prop_assert_eq!(got, None),
                    }
                }
                Op::BackFinal => {
                    let work = b.final_check_for_requests().unwrap();
                    prop_assert_eq!(work, !m.published_reqs.is_empty());
                    if !work { m.back_asleep = true; }
                }
                Op::FrontFinal => {
                    let work = f.final_check_for_responses().unwrap();
                    prop_assert_eq!(work, !m.published_rsps.is_empty());
                    if !work { m.front_asleep = true; }
                }
            }
            prop_assert_eq!(f.free_requests() as usize, slots - m.in_flight());
            prop_assert_eq!(b.request_cons_overflow(), m.unanswered.len() == slots);
            prop_assert_eq!(f.req_prod_pvt(), start.wrapping_add(m.next_id as u32));
        }
    }

    /// A front end that writes anything anywhere in the page between the
    /// back end's steps: the back end never panics, never yields more than
    /// the ring holds per call, and once it reports a fault it stays
    /// stopped.
    #[test]
    fn hostile_front_cannot_hurt_the_back_end(
        start in start_index(),
        steps in proptest::collection::vec(
            (any::<u32>(), 0usize..4096, any::<u64>(), 0u8..4, 0u8..20), 1..60),
    ) {
        let page = HeapPage::one();
        let mem = page.mem();
        init_at(&mem, start);
        let mut b = BackRing::<_, Req, Rsp>::attach(mem, start).unwrap();
        let mut broken = None;
        for (prod_delta, off, junk, what, max) in steps {
            match what {
                0 => mem.store_u32(REQ_PROD_OFFSET, start.wrapping_add(prod_delta % 300), Relaxed),
                1 => mem.store_u32(REQ_PROD_OFFSET, prod_delta, Relaxed),
                // Entries are accessed as 8-byte words, the header as 4-byte ones.
                2 if off >= 64 => mem.write(off & !7, &junk.to_ne_bytes(), 8),
                2 => mem.store_u32(off & !3, junk as u32, Relaxed),
                _ => mem.store_u32(RSP_EVENT_OFFSET, prod_delta, Relaxed),
            }
            let res = b.take_requests(max as u32).map(|it| it.count());
            match (res, broken) {
                (Ok(n), None) => {
                    prop_assert!(n <= max as usize && n <= 128);
                    for _ in 0..n {
                        prop_assert_eq!(b.put_response(&Rsp { id: 1, status: 2 }), Ok(()));
                    }
                    let _ = b.push_responses();
                }
                (Err(RingError::Broken(f)), None) => broken = Some(f),
                (Err(e), Some(f)) => prop_assert_eq!(e, RingError::Broken(f)),
                (r, _) => prop_assert!(false, "unexpected {:?}", r.map(|_| ())),
            }
            prop_assert!(b.req_cons().wrapping_sub(b.rsp_prod_pvt()) <= 128);
        }
    }

    /// Byte rings against a byte queue, with both indices starting near the
    /// wrap, and a ring length of 8 or 1024.
    #[test]
    fn byte_ring_matches_queue(
        start in start_index(),
        len in prop_oneof![Just(8u32), Just(1024)],
        ops in proptest::collection::vec((any::<bool>(), 0usize..1500), 1..100),
    ) {
        let page = HeapPage::one();
        let layout = ByteRingLayout { data: 0, len, cons: 2048, prod: 2052 };
        page.mem().store_u32(2048, start, Relaxed);
        page.mem().store_u32(2052, start, Relaxed);
        let mut w = ByteWriter::attach(page.mem(), layout).unwrap();
        let mut r = ByteReader::attach(page.mem(), layout).unwrap();
        let mut model: VecDeque<u8> = VecDeque::new();
        let mut counter = 0u8;
        for (write, n) in ops {
            if write {
                let data: Vec<u8> = (0..n).map(|_| { counter = counter.wrapping_add(1); counter }).collect();
                let done = w.write(&data).unwrap();
                prop_assert_eq!(done, n.min(len as usize - model.len()));
                model.extend(&data[..done]);
                // Bytes not written are offered again next time.
                counter = counter.wrapping_sub((n - done) as u8);
            } else {
                let mut buf = vec![0u8; n];
                let done = r.read(&mut buf).unwrap();
                prop_assert_eq!(done, n.min(model.len()));
                let want: Vec<u8> = model.drain(..done).collect();
                prop_assert_eq!(&buf[..done], &want[..]);
            }
            prop_assert_eq!(w.space().unwrap() as usize, len as usize - model.len());
        }
    }
}
