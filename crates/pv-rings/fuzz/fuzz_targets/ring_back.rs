//! A back end facing an adversarial front end that rewrites the shared page
//! between every step: indices, event fields and entries. The back end must
//! never panic, never yield more requests than the ring holds, and stay
//! stopped once it reports a fault.
#![no_main]

use std::sync::atomic::Ordering::Relaxed;

use libfuzzer_sys::fuzz_target;
use pv_rings::ring::{REQ_PROD_OFFSET, init_shared_ring};
use pv_rings::{BackRing, HeapPage, RingError, SharedMem};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// blkif-sized request, 16-byte response: 32 slots in a page.
#[repr(C)]
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable)]
struct Req {
    id: u64,
    body: [u8; 104],
}

#[repr(C)]
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable)]
struct Rsp {
    id: u64,
    status: u64,
}

fuzz_target!(|data: &[u8]| {
    let page = HeapPage::one();
    let mem = page.mem();
    init_shared_ring(&mem);
    let mut start = [0u8; 4];
    let (head, mut rest) = data.split_at(data.len().min(4));
    start[..head.len()].copy_from_slice(head);
    let start = u32::from_le_bytes(start);
    mem.store_u32(REQ_PROD_OFFSET, start, Relaxed);
    let mut back = BackRing::<_, Req, Rsp>::attach(mem, start).unwrap();
    let size = back.size();
    let mut fault = None;

    while rest.len() >= 8 {
        let (step, tail) = rest.split_at(8);
        rest = tail;
        // The front end's move: a 32-bit value at an aligned offset.
        let off = (u16::from_le_bytes([step[0], step[1]]) as usize % 1024) * 4;
        let val = u32::from_le_bytes([step[2], step[3], step[4], step[5]]);
        match step[6] % 4 {
            // Mostly plausible producer moves, so the ring gets exercised.
            0 => mem.store_u32(
                REQ_PROD_OFFSET,
                back.req_cons().wrapping_add(val % 40),
                Relaxed,
            ),
            _ => mem.store_u32(off, val, Relaxed),
        }
        // The back end's move.
        let res = match step[7] % 4 {
            0 => back
                .take_requests(u32::from(step[7] >> 2))
                .map(|it| it.map(|r| r.id).fold(0usize, |n, _| n + 1)),
            1 => back.pop_request().map(|r| usize::from(r.is_some())),
            2 => back.final_check_for_requests().map(|_| 0),
            _ => back.unconsumed_requests().map(|n| {
                assert!(n <= size);
                0
            }),
        };
        match (res, fault) {
            (Ok(n), None) => {
                assert!(n as u32 <= size);
                for i in 0..n {
                    back.put_response(&Rsp {
                        id: i as u64,
                        status: 0,
                    })
                    .unwrap();
                }
                let _ = back.push_responses();
                assert_eq!(
                    back.put_response(&Rsp { id: 0, status: 0 }),
                    Err(RingError::NoRequestToAnswer)
                );
            }
            (Err(RingError::Broken(f)), None) => fault = Some(f),
            (Err(e), Some(f)) => assert_eq!(e, RingError::Broken(f)),
            (r, f) => panic!("unexpected {:?} with fault {:?}", r.map(|_| ()), f),
        }
        assert!(back.req_cons().wrapping_sub(back.rsp_prod_pvt()) <= size);
    }
});
