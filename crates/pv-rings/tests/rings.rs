//! Layouts, notification decisions, overflow guards and hostile-peer
//! behaviour, checked against the facts of Xen's `io/ring.h`, `io/console.h`
//! and `io/xs_wire.h`. Runs under Miri too (rings over a heap page).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex};

use pv_rings::bytes::{ByteReader, ByteRingError, ByteWriter};
use pv_rings::console::*;
use pv_rings::ring::*;
use pv_rings::xenstore::*;
use pv_rings::{BackRing, Fault, FrontRing, HeapPage, RingError, SharedMem};
use zerocopy::{FromBytes, Immutable, IntoBytes};

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable)]
struct Req16 {
    id: u64,
    val: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable)]
struct Rsp16 {
    id: u64,
    status: u64,
}

/// Same size as a blkif request (112 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable)]
struct Req112 {
    id: u64,
    rest: [u8; 104],
}

/// netif tx request / response sizes (12 and 4 bytes).
#[repr(C)]
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable)]
struct NetTxReq([u8; 12]);
#[repr(C)]
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable)]
struct NetTxRsp([u8; 4]);
#[repr(C)]
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable)]
struct NetRx([u8; 8]);

type Front<'a> = FrontRing<pv_rings::RawMem<'a>, Req16, Rsp16>;
type Back<'a> = BackRing<pv_rings::RawMem<'a>, Req16, Rsp16>;

fn pair(page: &HeapPage) -> (Front<'_>, Back<'_>) {
    let f = FrontRing::init(page.mem()).unwrap();
    let b = BackRing::new(page.mem()).unwrap();
    (f, b)
}

fn peek(page: &HeapPage, off: usize) -> u32 {
    page.mem().load_u32(off, Relaxed)
}

fn poke(page: &HeapPage, off: usize, v: u32) {
    page.mem().store_u32(off, v, Relaxed)
}

#[test]
fn ring_sizes_match_xen() {
    assert_eq!(ring_size(4096, 112), 32, "blkif, one page");
    assert_eq!(ring_size(4096, 16), 128);
    assert_eq!(ring_size(4096, entry_size::<NetTxReq, NetTxRsp>()), 256);
    assert_eq!(ring_size(4096, entry_size::<NetRx, NetRx>()), 256);
    assert_eq!(ring_size(16 * 4096, 112), 512, "blkif ring-page-order 4");
    assert_eq!(entry_size::<NetTxReq, NetTxRsp>(), 12);
    assert_eq!(ring_size(64 + 111, 112), 0);
    assert_eq!(ring_size(64 + 112, 112), 1);
    assert_eq!(ring_size(4096, 0), 0);
    let page = HeapPage::one();
    assert_eq!(
        FrontRing::<_, Req112, Rsp16>::init(page.mem())
            .unwrap()
            .size(),
        32
    );
    let big = HeapPage::new(16);
    assert_eq!(
        BackRing::<_, Req112, Rsp16>::new(big.mem()).unwrap().size(),
        512
    );
}

#[test]
fn init_writes_the_header_like_shared_ring_init() {
    let page = HeapPage::one();
    page.mem().write(0, &[0xAA; 64], 4);
    page.mem().write(64, &[0xAA; 4096 - 64], 8);
    let _f: Front<'_> = FrontRing::init(page.mem()).unwrap();
    assert_eq!(peek(&page, REQ_PROD_OFFSET), 0);
    assert_eq!(peek(&page, RSP_PROD_OFFSET), 0);
    assert_eq!(peek(&page, REQ_EVENT_OFFSET), 1, "events start at 1");
    assert_eq!(peek(&page, RSP_EVENT_OFFSET), 1, "events start at 1");
    let mut hdr = [0u8; 48];
    page.mem().read(RING_PVT_OFFSET, &mut hdr, 4);
    assert_eq!(hdr, [0; 48], "private bytes and padding zeroed");
    let mut first = [0u8; 8];
    page.mem().read(RING_HEADER_SIZE, &mut first, 8);
    assert_eq!(first, [0xAA; 8], "entries are not touched by init");
}

#[test]
fn entries_live_at_64_with_stride_and_mask() {
    let page = HeapPage::one();
    let mut f = FrontRing::<_, Req112, Rsp16>::init(page.mem()).unwrap();
    let mut b = BackRing::<_, Req112, Rsp16>::new(page.mem()).unwrap();
    for i in 0..40u64 {
        let r = Req112 {
            id: 0x1000 + i,
            rest: [i as u8; 104],
        };
        f.put_request(&r).unwrap();
        let _ = f.push_requests();
        let slot = (i % 32) as usize;
        let mut raw = [0u8; 8];
        page.mem().read(64 + slot * 112, &mut raw, 8);
        assert_eq!(
            u64::from_ne_bytes(raw),
            0x1000 + i,
            "index {i} in slot {slot}"
        );
        let got = b.pop_request().unwrap().unwrap();
        assert_eq!(got, r);
        b.put_response(&Rsp16 { id: i, status: 9 }).unwrap();
        let _ = b.push_responses();
        // The response overwrites the start of the same slot.
        page.mem().read(64 + slot * 112, &mut raw, 8);
        assert_eq!(u64::from_ne_bytes(raw), i);
        assert_eq!(f.pop_response().unwrap(), Some(Rsp16 { id: i, status: 9 }));
    }
    assert_eq!(peek(&page, REQ_PROD_OFFSET), 40);
    assert_eq!(peek(&page, RSP_PROD_OFFSET), 40);
}

#[test]
fn notify_iff_event_in_old_new() {
    assert!(need_notify(0, 1, 1));
    assert!(!need_notify(0, 1, 2));
    assert!(!need_notify(1, 1, 1), "nothing new, no event");
    assert!(need_notify(3, 8, 4));
    assert!(need_notify(3, 8, 8));
    assert!(!need_notify(3, 8, 3), "event == old is not in (old, new]");
    assert!(!need_notify(3, 8, 9));
    // Across the wrap at 2^32.
    let old = u32::MAX - 1;
    assert!(need_notify(old, 1, u32::MAX));
    assert!(need_notify(old, 1, 0));
    assert!(need_notify(old, 1, 1));
    assert!(!need_notify(old, 1, old));
    assert!(!need_notify(old, 1, 2));
}

#[test]
fn push_notifies_only_when_the_peer_asked() {
    let page = HeapPage::one();
    let (mut f, mut b) = pair(&page);
    f.put_request(&Req16 { id: 1, val: 0 }).unwrap();
    assert!(f.push_requests(), "req_event starts at 1");
    f.put_request(&Req16 { id: 2, val: 0 }).unwrap();
    assert!(!f.push_requests(), "event 1 not in (1, 2]");
    assert_eq!(b.pop_request().unwrap().unwrap().id, 1);
    assert_eq!(b.pop_request().unwrap().unwrap().id, 2);
    assert!(!b.final_check_for_requests().unwrap());
    assert_eq!(peek(&page, REQ_EVENT_OFFSET), 3, "req_event = req_cons + 1");
    for id in 3..6 {
        f.put_request(&Req16 { id, val: 0 }).unwrap();
    }
    assert!(f.push_requests(), "event 3 in (2, 5]");

    // Responses: the front asks with its final check.
    assert!(!f.final_check_for_responses().unwrap());
    assert_eq!(peek(&page, RSP_EVENT_OFFSET), 1);
    b.put_response(&Rsp16 { id: 1, status: 0 }).unwrap();
    assert!(b.push_responses(), "rsp_event 1 in (0, 1]");
    b.put_response(&Rsp16 { id: 2, status: 0 }).unwrap();
    assert!(!b.push_responses());
    // An empty push never notifies.
    assert!(!b.push_responses());
}

#[test]
fn check_for_requests_waits_for_a_batch() {
    let page = HeapPage::one();
    let (mut f, mut b) = pair(&page);
    for id in 1..3 {
        f.put_request(&Req16 { id, val: 0 }).unwrap();
    }
    let _ = f.push_requests();
    assert!(b.check_for_requests(2).unwrap());
    assert!(!b.check_for_requests(3).unwrap());
    assert_eq!(
        peek(&page, REQ_EVENT_OFFSET),
        3,
        "req_event = req_cons + needed, not req_cons + 1"
    );
    f.put_request(&Req16 { id: 3, val: 0 }).unwrap();
    assert!(
        f.push_requests(),
        "the request completing the batch raises it"
    );
    assert!(b.check_for_requests(3).unwrap());
    b.pop_request().unwrap();
    assert!(!b.check_for_requests(4).unwrap());
    assert_eq!(peek(&page, REQ_EVENT_OFFSET), 5);
    for id in 4..6 {
        f.put_request(&Req16 { id, val: 0 }).unwrap();
        assert_eq!(f.push_requests(), id == 5, "no event before the 4th");
    }
}

#[test]
fn final_check_sees_work_published_before_it() {
    let page = HeapPage::one();
    let (mut f, mut b) = pair(&page);
    assert!(!b.final_check_for_requests().unwrap());
    f.put_request(&Req16 { id: 1, val: 0 }).unwrap();
    assert!(f.push_requests(), "the back end asked for event 1");
    assert!(b.final_check_for_requests().unwrap());
    assert_eq!(b.unconsumed_requests().unwrap(), 1);
}

#[test]
fn request_prod_overflow_breaks_the_back_end() {
    let page = HeapPage::one();
    let (_f, mut b) = pair(&page);
    // Exactly `size` outstanding requests is legal.
    poke(&page, REQ_PROD_OFFSET, 128);
    assert_eq!(b.unconsumed_requests().unwrap(), 128);
    poke(&page, REQ_PROD_OFFSET, 129);
    let e = b.unconsumed_requests().unwrap_err();
    assert_eq!(
        e,
        RingError::Broken(Fault::RequestProdOverflow {
            req_prod: 129,
            rsp_prod_pvt: 0
        })
    );
    // Broken for good, even if the index is put back.
    poke(&page, REQ_PROD_OFFSET, 1);
    assert_eq!(b.pop_request(), Err(e));
    assert_eq!(b.put_response(&Rsp16 { id: 0, status: 0 }), Err(e));
    assert!(!b.push_responses());
    assert_eq!(
        b.fault(),
        Some(Fault::RequestProdOverflow {
            req_prod: 129,
            rsp_prod_pvt: 0
        })
    );
}

#[test]
fn request_prod_overflow_is_relative_to_rsp_prod_pvt() {
    let page = HeapPage::one();
    let (mut f, mut b) = pair(&page);
    for id in 0..100 {
        f.put_request(&Req16 { id, val: 0 }).unwrap();
    }
    let _ = f.push_requests();
    for _ in 0..100 {
        b.pop_request().unwrap().unwrap();
        b.put_response(&Rsp16 { id: 0, status: 0 }).unwrap();
    }
    let _ = b.push_responses();
    // rsp_prod_pvt = 100: req_prod may be up to 228.
    poke(&page, REQ_PROD_OFFSET, 228);
    assert_eq!(b.unconsumed_requests().unwrap(), 128);
    poke(&page, REQ_PROD_OFFSET, 229);
    assert!(matches!(
        b.unconsumed_requests(),
        Err(RingError::Broken(Fault::RequestProdOverflow { .. }))
    ));
}

#[test]
fn request_cons_overflow_stops_consumption() {
    let page = HeapPage::one();
    let (mut f, mut b) = pair(&page);
    for id in 0..128 {
        f.put_request(&Req16 { id, val: 0 }).unwrap();
    }
    assert_eq!(
        f.put_request(&Req16 { id: 0, val: 0 }),
        Err(RingError::Full)
    );
    assert!(f.is_full());
    let _ = f.push_requests();
    let got: Vec<u64> = b.take_requests(u32::MAX).unwrap().map(|r| r.id).collect();
    assert_eq!(got, (0..128).collect::<Vec<_>>());
    assert!(b.request_cons_overflow(), "size requests unanswered");
    assert_eq!(b.unconsumed_requests().unwrap(), 0);
    assert_eq!(b.pop_request().unwrap(), None);
    b.put_response(&Rsp16 { id: 0, status: 0 }).unwrap();
    assert!(!b.request_cons_overflow());
}

#[test]
fn response_prod_overflow_breaks_the_front_end() {
    let page = HeapPage::one();
    let (mut f, _b) = pair(&page);
    poke(&page, RSP_PROD_OFFSET, 128);
    assert_eq!(f.unconsumed_responses().unwrap(), 128);
    poke(&page, RSP_PROD_OFFSET, 129);
    let e = f.unconsumed_responses().unwrap_err();
    assert_eq!(
        e,
        RingError::Broken(Fault::ResponseProdOverflow {
            rsp_prod: 129,
            rsp_cons: 0
        })
    );
    assert_eq!(f.put_request(&Req16 { id: 0, val: 0 }), Err(e));
    assert!(!f.push_requests());
    assert_eq!(f.final_check_for_responses(), Err(e));
}

#[test]
fn producers_running_backwards_break_the_ring() {
    let page = HeapPage::one();
    let (_f, mut b) = pair(&page);
    poke(&page, REQ_PROD_OFFSET, 5);
    assert!(b.pop_request().unwrap().is_some());
    poke(&page, REQ_PROD_OFFSET, 3);
    // Four requests seen before are still consumed from the private copy of
    // the index; the next read of req_prod detects the regression.
    for _ in 0..4 {
        assert!(b.pop_request().unwrap().is_some());
    }
    assert_eq!(
        b.pop_request(),
        Err(RingError::Broken(Fault::ProducerWentBackwards {
            seen: 5,
            now: 3
        }))
    );

    let page = HeapPage::one();
    let (mut f, _b) = pair(&page);
    poke(&page, RSP_PROD_OFFSET, 2);
    assert_eq!(f.unconsumed_responses().unwrap(), 2);
    poke(&page, RSP_PROD_OFFSET, 1);
    assert_eq!(
        f.unconsumed_responses(),
        Err(RingError::Broken(Fault::ProducerWentBackwards {
            seen: 2,
            now: 1
        }))
    );
}

#[test]
fn peer_index_is_read_once_per_batch() {
    let page = HeapPage::one();
    let (mut f, mut b) = pair(&page);
    for id in 0..4 {
        f.put_request(&Req16 { id, val: 0 }).unwrap();
    }
    let _ = f.push_requests();
    assert_eq!(b.pop_request().unwrap().unwrap().id, 0);
    // A lying front end raises req_prod past the limit mid-batch: the batch
    // seen before is finished from the private copy, then the lie is caught.
    poke(&page, REQ_PROD_OFFSET, 1000);
    for id in 1..4 {
        assert_eq!(b.pop_request().unwrap().unwrap().id, id);
    }
    assert!(matches!(b.pop_request(), Err(RingError::Broken(_))));
}

#[test]
fn batches_are_bounded_by_max() {
    let page = HeapPage::one();
    let (mut f, mut b) = pair(&page);
    for id in 0..10 {
        f.put_request(&Req16 { id, val: id * 2 }).unwrap();
    }
    assert_eq!(
        peek(&page, REQ_PROD_OFFSET),
        0,
        "nothing visible before push"
    );
    assert_eq!(b.unconsumed_requests().unwrap(), 0);
    f.publish_requests();
    let first: Vec<u64> = b.take_requests(4).unwrap().map(|r| r.id).collect();
    assert_eq!(first, vec![0, 1, 2, 3]);
    for id in first {
        b.put_response(&Rsp16 { id, status: 1 }).unwrap();
    }
    let rest: Vec<u64> = b.take_requests(100).unwrap().map(|r| r.id).collect();
    assert_eq!(rest, (4..10).collect::<Vec<_>>());
    for id in rest {
        b.put_response(&Rsp16 { id, status: 1 }).unwrap();
    }
    assert_eq!(
        b.put_response(&Rsp16 { id: 0, status: 0 }),
        Err(RingError::NoRequestToAnswer)
    );
    b.publish_responses();
    let ids: Vec<u64> = f.take_responses(3).unwrap().map(|r| r.id).collect();
    assert_eq!(ids, vec![0, 1, 2]);
    assert_eq!(f.unconsumed_responses().unwrap(), 7);
    assert_eq!(f.free_requests(), 128 - 7);
}

#[test]
fn indices_wrap_around_2_pow_32() {
    let page = HeapPage::one();
    let start = u32::MAX - 5;
    pv_rings::ring::init_shared_ring(&page.mem());
    poke(&page, REQ_PROD_OFFSET, start);
    poke(&page, RSP_PROD_OFFSET, start);
    let mut f: Front<'_> = FrontRing::attach(page.mem(), start).unwrap();
    let mut b: Back<'_> = BackRing::attach(page.mem(), start).unwrap();
    let mut next = 0;
    for round in 0..5u64 {
        for _ in 0..100 {
            f.put_request(&Req16 {
                id: next,
                val: round,
            })
            .unwrap();
            next += 1;
        }
        let _ = f.push_requests();
        let reqs: Vec<Req16> = b.take_requests(u32::MAX).unwrap().collect();
        assert_eq!(reqs.len(), 100);
        for r in &reqs {
            b.put_response(&Rsp16 {
                id: r.id,
                status: round,
            })
            .unwrap();
        }
        let _ = b.push_responses();
        let rsps: Vec<Rsp16> = f.take_responses(u32::MAX).unwrap().collect();
        let want: Vec<u64> = reqs.iter().map(|r| r.id).collect();
        assert_eq!(rsps.iter().map(|r| r.id).collect::<Vec<_>>(), want);
    }
    assert_eq!(f.req_prod_pvt(), start.wrapping_add(500));
    assert!(f.req_prod_pvt() < start, "wrapped");
    assert_eq!(peek(&page, RSP_PROD_OFFSET), start.wrapping_add(500));
}

#[test]
fn too_small_memory_is_refused() {
    let page = HeapPage::one();
    let mem = page.mem();
    // SAFETY: a sub-range of a live HeapPage, accessed only atomically.
    let small =
        unsafe { pv_rings::RawMem::new(std::ptr::NonNull::new(mem.as_ptr()).unwrap(), 64 + 8) }
            .unwrap();
    assert_eq!(
        FrontRing::<_, Req16, Rsp16>::init(small).err(),
        Some(LayoutError::TooSmall)
    );
    #[repr(C)]
    #[derive(FromBytes, IntoBytes, Immutable)]
    struct Empty;
    assert_eq!(
        BackRing::<_, Empty, Rsp16>::new(page.mem()).err(),
        Some(LayoutError::ZeroSizedEntry)
    );
}

#[test]
fn raw_mem_rejects_misalignment() {
    let page = HeapPage::one();
    let p = page.mem().as_ptr();
    // SAFETY: within a live HeapPage; the constructor fails before any use.
    let r =
        unsafe { pv_rings::RawMem::new(std::ptr::NonNull::new(p.wrapping_add(4)).unwrap(), 64) };
    assert_eq!(r.err(), Some(pv_rings::MemError::Misaligned));
    // SAFETY: as above.
    let r = unsafe { pv_rings::RawMem::new(std::ptr::NonNull::new(p).unwrap(), 12) };
    assert_eq!(r.err(), Some(pv_rings::MemError::BadLength));
}

// ---- byte rings ----

#[test]
fn console_layout_and_masks() {
    let page = HeapPage::one();
    // Start both directions near the end of their own array, close to 2^32.
    let out_start = u32::MAX - 2047 + 2040; // & 2047 == 2040
    let in_start = 1020u32;
    poke(&page, CONS_OUT_CONS_OFFSET, out_start);
    poke(&page, CONS_OUT_PROD_OFFSET, out_start);
    poke(&page, CONS_IN_CONS_OFFSET, in_start);
    poke(&page, CONS_IN_PROD_OFFSET, in_start);
    let mut guest = ConsoleFront::attach(page.mem()).unwrap();
    let mut back = ConsoleBack::attach(page.mem()).unwrap();
    assert!(!guest.connected() || page.mem().load_u8(CONS_CONNECTION_OFFSET) == 0);
    back.set_connection(XENCONSOLE_DISCONNECTED);
    assert!(!guest.connected());
    back.set_connection(XENCONSOLE_CONNECTED);
    assert!(guest.connected());
    assert_eq!(page.mem().load_u8(3088), XENCONSOLE_CONNECTED);

    let msg: Vec<u8> = (0..16u8).collect();
    assert_eq!(guest.output.write(&msg).unwrap(), 16);
    assert_eq!(peek(&page, 3084), out_start.wrapping_add(16), "out_prod");
    let mut raw = [0u8; 8];
    page.mem().read(1024 + 2040, &mut raw, 1);
    assert_eq!(raw, [0, 1, 2, 3, 4, 5, 6, 7], "out masked with 2048");
    page.mem().read(1024, &mut raw, 1);
    assert_eq!(raw, [8, 9, 10, 11, 12, 13, 14, 15], "wrapped to out[0]");
    let mut got = [0u8; 32];
    assert_eq!(back.output.read(&mut got).unwrap(), 16);
    assert_eq!(&got[..16], &msg[..]);
    assert_eq!(peek(&page, 3080), out_start.wrapping_add(16), "out_cons");

    assert_eq!(back.input.write(b"hello, guest").unwrap(), 12);
    assert_eq!(peek(&page, 3076), in_start + 12, "in_prod");
    page.mem().read(1020, &mut raw[..4], 1);
    assert_eq!(&raw[..4], b"hell", "in masked with 1024");
    page.mem().read(0, &mut raw, 1);
    assert_eq!(&raw, b"o, guest");
    let mut got = [0u8; 5];
    assert_eq!(guest.input.read(&mut got).unwrap(), 5);
    assert_eq!(&got, b"hello");
    assert_eq!(peek(&page, 3072), in_start + 5, "in_cons");
}

#[test]
fn byte_ring_fills_and_drains() {
    let page = HeapPage::one();
    let mut w = ByteWriter::attach(page.mem(), CONSOLE_OUT).unwrap();
    let mut r = ByteReader::attach(page.mem(), CONSOLE_OUT).unwrap();
    let data: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
    assert_eq!(w.write(&data).unwrap(), 2048, "bounded by the ring length");
    assert_eq!(w.space().unwrap(), 0);
    assert_eq!(w.write(&data).unwrap(), 0);
    let mut out = vec![0u8; 1000];
    assert_eq!(r.read(&mut out).unwrap(), 1000);
    assert_eq!(&out[..], &data[..1000]);
    assert_eq!(w.write(&data[2048..]).unwrap(), 952);
    let mut out = vec![0u8; 4000];
    assert_eq!(r.read(&mut out).unwrap(), 2000);
    assert_eq!(&out[..2000], &data[1000..]);
    assert_eq!(r.available().unwrap(), 0);
}

#[test]
fn byte_ring_rejects_bad_indices() {
    let page = HeapPage::one();
    poke(&page, CONS_OUT_PROD_OFFSET, 2049);
    assert_eq!(
        ByteReader::attach(page.mem(), CONSOLE_OUT).unwrap_err(),
        ByteRingError::Overflow {
            prod: 2049,
            cons: 0
        }
    );
    poke(&page, CONS_OUT_PROD_OFFSET, 2048);
    let mut r = ByteReader::attach(page.mem(), CONSOLE_OUT).unwrap();
    assert_eq!(r.available().unwrap(), 2048);
    poke(&page, CONS_OUT_PROD_OFFSET, 100);
    assert_eq!(
        r.available(),
        Err(ByteRingError::WentBackwards {
            seen: 2048,
            now: 100
        })
    );
    let mut buf = [0u8; 4];
    assert!(r.read(&mut buf).is_err(), "stopped for good");

    // Writer: the consumer may not pass the producer, nor run backwards.
    let page = HeapPage::one();
    let mut w = ByteWriter::attach(page.mem(), CONSOLE_IN).unwrap();
    assert_eq!(w.write(&[1; 10]).unwrap(), 10);
    poke(&page, CONS_IN_CONS_OFFSET, 11);
    assert!(matches!(w.write(&[1]), Err(ByteRingError::Overflow { .. })));
    let page = HeapPage::one();
    let mut w = ByteWriter::attach(page.mem(), CONSOLE_IN).unwrap();
    assert_eq!(w.write(&[1; 10]).unwrap(), 10);
    poke(&page, CONS_IN_CONS_OFFSET, 8);
    assert_eq!(w.space().unwrap(), 1024 - 2);
    poke(&page, CONS_IN_CONS_OFFSET, 4);
    assert_eq!(
        w.space(),
        Err(ByteRingError::WentBackwards { seen: 8, now: 4 })
    );
}

#[test]
fn xenstore_layout_and_fields() {
    let page = HeapPage::one();
    let back = XenstoreBack::attach(page.mem()).unwrap();
    let mut front = XenstoreFront::attach(page.mem()).unwrap();
    let mut back = back;
    back.set_server_features(XENSTORE_SERVER_FEATURE_RECONNECTION | XENSTORE_SERVER_FEATURE_ERROR);
    assert_eq!(peek(&page, 2064), 3);
    assert_eq!(front.server_features(), 3);
    front.request_reconnect();
    assert_eq!(peek(&page, 2068), XENSTORE_RECONNECT);
    assert_eq!(back.connection(), XENSTORE_RECONNECT);
    back.set_connection(XENSTORE_CONNECTED);
    assert_eq!(front.connection(), XENSTORE_CONNECTED);

    assert_eq!(front.req.write(b"abc").unwrap(), 3);
    assert_eq!(peek(&page, 2052), 3, "req_prod");
    let mut raw = [0u8; 3];
    page.mem().read(0, &mut raw, 1);
    assert_eq!(&raw, b"abc");
    let mut got = [0u8; 3];
    assert_eq!(back.read(&mut got).unwrap(), 3);
    assert_eq!(peek(&page, 2048), 3, "req_cons");
    assert_eq!(back.write(b"xy").unwrap(), 2);
    assert_eq!(peek(&page, 2060), 2, "rsp_prod");
    page.mem().read(1024, &mut raw[..2], 1);
    assert_eq!(&raw[..2], b"xy");
    assert_eq!(front.rsp.read(&mut got).unwrap(), 2);
    assert_eq!(peek(&page, 2056), 2, "rsp_cons");
    assert_eq!(front.check_error(), Ok(()));

    // A guest claiming more than 1024 bytes: the server flags RINGIDX.
    poke(&page, XS_REQ_PROD_OFFSET, 3 + 1025);
    assert!(matches!(
        back.read(&mut got),
        Err(XenstoreError::Ring(ByteRingError::Overflow { .. }))
    ));
    assert_eq!(peek(&page, 2072), XENSTORE_ERROR_RINGIDX);
    assert_eq!(
        front.check_error(),
        Err(XenstoreError::Server(XENSTORE_ERROR_RINGIDX))
    );
}

#[test]
fn xenstore_attach_flags_a_bad_page() {
    let page = HeapPage::one();
    poke(&page, XS_RSP_PROD_OFFSET, 5000);
    assert!(XenstoreBack::attach(page.mem()).is_err());
    assert_eq!(peek(&page, XS_ERROR_OFFSET), XENSTORE_ERROR_RINGIDX);
}

#[test]
fn xenstore_messages_round_trip_in_pieces() {
    let page = HeapPage::one();
    let mut front = XenstoreFront::attach(page.mem()).unwrap();
    let mut back = XenstoreBack::attach(page.mem()).unwrap();
    let mut w = MessageWriter::new();
    let mut r = MessageReader::new();
    for (i, len) in [0usize, 5, 1000, 1024, 4096, 17].into_iter().enumerate() {
        let payload: Vec<u8> = (0..len).map(|j| (j * 31 + i) as u8).collect();
        let hdr = XsdSockmsg {
            r#type: 2,
            req_id: i as u32,
            tx_id: 9,
            len: 0,
        };
        w.start(hdr, &payload).unwrap();
        assert_eq!(w.start(hdr, &payload), Err(XenstoreError::Busy));
        let mut steps = 0;
        let got = loop {
            steps += 1;
            assert!(steps < 20, "no progress");
            let done = w.flush(&mut front.req).unwrap();
            if let Some((h, p)) = r.poll(&mut back.req).unwrap() {
                assert!(done);
                break (h, p.to_vec());
            }
        };
        assert_eq!(
            got.0,
            XsdSockmsg {
                len: len as u32,
                ..hdr
            }
        );
        assert_eq!(got.1, payload);
    }
    assert!(matches!(
        w.start(XsdSockmsg::default(), &[0; 4097]),
        Err(XenstoreError::PayloadTooLong(4097))
    ));
}

#[test]
fn xenstore_oversized_payload_is_a_protocol_error() {
    let page = HeapPage::one();
    let mut front = XenstoreFront::attach(page.mem()).unwrap();
    let mut back = XenstoreBack::attach(page.mem()).unwrap();
    let hdr = XsdSockmsg {
        r#type: 1,
        req_id: 1,
        tx_id: 0,
        len: 4097,
    };
    front.req.write(hdr.as_bytes()).unwrap();
    let mut r = MessageReader::new();
    assert_eq!(
        r.poll(&mut back.req).err(),
        Some(XenstoreError::PayloadTooLong(4097))
    );
    assert!(r.poll(&mut back.req).is_err(), "stays stopped");
}

// ---- two threads ----

/// An event channel stand-in: a pending flag and a condition variable.
#[derive(Default)]
struct Event {
    pending: Mutex<bool>,
    cv: Condvar,
}

impl Event {
    fn notify(&self) {
        *self.pending.lock().unwrap() = true;
        self.cv.notify_one();
    }
    fn wait(&self) {
        let mut p = self.pending.lock().unwrap();
        while !*p {
            let (g, t) = self
                .cv
                .wait_timeout(p, std::time::Duration::from_secs(5))
                .unwrap();
            p = g;
            assert!(!t.timed_out(), "lost wake-up");
        }
        *p = false;
    }
}

#[test]
fn two_threads_with_events_lose_no_wakeup() {
    let n: u64 = if cfg!(miri) { 40 } else { 200_000 };
    let page = Arc::new(HeapPage::one());
    let to_back = Arc::new(Event::default());
    let to_front = Arc::new(Event::default());
    {
        let mem = page.mem();
        let _f: Front<'_> = FrontRing::init(mem).unwrap();
    }
    let back = {
        let page = page.clone();
        let to_back = to_back.clone();
        let to_front = to_front.clone();
        std::thread::spawn(move || {
            let mut b: Back<'_> = BackRing::new(page.mem()).unwrap();
            let mut done = 0;
            while done < n {
                let mut any = false;
                while let Some(req) = b.pop_request().unwrap() {
                    b.put_response(&Rsp16 {
                        id: req.id,
                        status: req.val + 1,
                    })
                    .unwrap();
                    any = true;
                    done += 1;
                }
                if any && b.push_responses() {
                    to_front.notify();
                }
                if done < n && !b.final_check_for_requests().unwrap() {
                    to_back.wait();
                }
            }
        })
    };
    let mut f: Front<'_> = FrontRing::attach(page.mem(), 0).unwrap();
    let (mut sent, mut got) = (0u64, 0u64);
    while got < n {
        let mut any = false;
        while sent < n
            && f.put_request(&Req16 {
                id: sent,
                val: sent * 3,
            })
            .is_ok()
        {
            sent += 1;
            any = true;
        }
        if any && f.push_requests() {
            to_back.notify();
        }
        while let Some(rsp) = f.pop_response().unwrap() {
            assert_eq!(
                rsp,
                Rsp16 {
                    id: got,
                    status: got * 3 + 1
                }
            );
            got += 1;
        }
        // Sleep only when nothing can be sent and no response is pending.
        let can_send = sent < n && !f.is_full();
        if got < n && !can_send && !f.final_check_for_responses().unwrap() {
            to_front.wait();
        }
    }
    back.join().unwrap();
}

// ---- xen-abi types plug in ----

#[test]
fn xen_abi_protocol_types_plug_in() {
    use xen_abi::{
        BlkifRequest, BlkifResponse, NetifRxRequest, NetifRxResponse, NetifTxRequest,
        NetifTxResponse,
    };
    let page = HeapPage::one();
    let mut f = FrontRing::<_, BlkifRequest, BlkifResponse>::init(page.mem()).unwrap();
    let mut b = BackRing::<_, BlkifRequest, BlkifResponse>::new(page.mem()).unwrap();
    assert_eq!(f.size(), 32, "blkif: 32 slots in a page");
    let mut req = BlkifRequest {
        operation: 1,
        nr_segments: 2,
        // The high half of id sits where the response's pad1 goes.
        id: 0xAAAA_AAAA_0000_FEED,
        sector_number: 77,
        ..Default::default()
    };
    req.seg[1].gref = 42;
    req.seg[1].last_sect = 7;
    f.put_request(&req).unwrap();
    let _ = f.push_requests();
    let got = b.pop_request().unwrap().unwrap();
    assert_eq!(got, req);
    b.put_response(&BlkifResponse {
        id: got.id,
        operation: got.operation,
        status: -2,
        ..Default::default()
    })
    .unwrap();
    let _ = b.push_responses();
    let rsp = f.pop_response().unwrap().unwrap();
    assert_eq!(
        (rsp.id, rsp.operation, rsp.status),
        (0xAAAA_AAAA_0000_FEED, 1, -2)
    );
    // The response's 16 bytes overwrote the start of slot 0, padding included.
    let mut raw = [0xFFu8; 16];
    page.mem().read(64, &mut raw, 8);
    assert_eq!(&raw[12..16], &[0; 4], "pad1 written as zeros");

    let tx = FrontRing::<_, NetifTxRequest, NetifTxResponse>::attach(page.mem(), 0).unwrap();
    assert_eq!(tx.size(), 256);
    let rx = BackRing::<_, NetifRxRequest, NetifRxResponse>::new(page.mem()).unwrap();
    assert_eq!(rx.size(), 256);
    let big = HeapPage::new(16);
    let f = FrontRing::<_, BlkifRequest, BlkifResponse>::attach(big.mem(), 0).unwrap();
    assert_eq!(f.size(), 512, "ring-page-order 4");
}

#[test]
fn page_offsets_agree_with_xen_abi() {
    use core::mem::offset_of;
    assert_eq!(
        offset_of!(xen_abi::XenconsInterface, out_prod),
        CONS_OUT_PROD_OFFSET
    );
    assert_eq!(CONS_OUT_PROD_OFFSET, 3084);
    assert_eq!(CONS_CONNECTION_OFFSET, 3088);
    assert_eq!((CONS_IN_LEN, CONS_OUT_LEN), (1024, 2048));
    assert_eq!(XS_EVTCHN_PORT_OFFSET, 2076);
    assert_eq!(XS_ERROR_OFFSET, 2072);
    assert_eq!(XSD_SOCKMSG_SIZE, 16);
}
