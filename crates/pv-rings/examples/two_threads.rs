//! A front end and a back end in two threads over one shared page, with
//! blkif's request and response types from `xen-abi`.
//!
//! Thread parking stands in for an event channel: `unpark` is "send an
//! event" (it sets a pending token, as an event channel sets its pending
//! bit), `park` is "block until an event is pending". Each side follows
//! Xen's discipline: push and notify only when the ring says so; before
//! sleeping, run the final check and sleep only if it finds nothing.
//!
//! Run with `cargo run --release -p pv-rings --example two_threads`.

use std::thread;
use std::time::Instant;

use pv_rings::{BackRing, FrontRing, HeapPage};
use xen_abi::{BLKIF_OP_READ, BLKIF_RSP_OKAY, BlkifRequest, BlkifResponse};

const MESSAGES: u64 = 1_000_000;

fn main() {
    let page = HeapPage::one();
    // The front end initialises the shared page before sharing it.
    let mut front = FrontRing::<_, BlkifRequest, BlkifResponse>::init(page.mem()).unwrap();
    let started = Instant::now();
    let mut events_to_back = 0u64;
    let mut events_to_front = 0u64;

    thread::scope(|s| {
        let front_thread = thread::current();
        let page = &page;
        let events_to_front = &mut events_to_front;
        let back = s.spawn(move || {
            let mut back = BackRing::<_, BlkifRequest, BlkifResponse>::new(page.mem()).unwrap();
            let mut served = 0u64;
            while served < MESSAGES {
                // Consume a batch, answer each request, publish once.
                while let Some(req) = back.pop_request().expect("front end broke the ring") {
                    // Validate the private copy only.
                    let status = if req.operation == BLKIF_OP_READ && req.nr_segments <= 11 {
                        BLKIF_RSP_OKAY
                    } else {
                        -1
                    };
                    let rsp = BlkifResponse {
                        id: req.id,
                        operation: req.operation,
                        status,
                        ..Default::default()
                    };
                    back.put_response(&rsp).unwrap();
                    served += 1;
                }
                if back.push_responses() {
                    *events_to_front += 1;
                    front_thread.unpark();
                }
                if served < MESSAGES && !back.final_check_for_requests().unwrap() {
                    thread::park();
                }
            }
        });
        let back_thread = back.thread().clone();

        let (mut sent, mut done) = (0u64, 0u64);
        while done < MESSAGES {
            while sent < MESSAGES && !front.is_full() {
                let req = BlkifRequest {
                    operation: BLKIF_OP_READ,
                    nr_segments: 1,
                    id: sent,
                    sector_number: sent * 8,
                    ..Default::default()
                };
                front.put_request(&req).unwrap();
                sent += 1;
            }
            if front.push_requests() {
                events_to_back += 1;
                back_thread.unpark();
            }
            while let Some(rsp) = front.pop_response().expect("back end broke the ring") {
                assert_eq!(rsp.id, done);
                assert_eq!(rsp.status, BLKIF_RSP_OKAY);
                done += 1;
            }
            let can_send = sent < MESSAGES && !front.is_full();
            if done < MESSAGES && !can_send && !front.final_check_for_responses().unwrap() {
                thread::park();
            }
        }
        back.join().unwrap();
    });

    let elapsed = started.elapsed();
    println!(
        "{MESSAGES} blkif requests and responses over a {}-slot ring in {elapsed:?} \
         ({:.1} ns per message); events: {events_to_back} to the back end, \
         {events_to_front} to the front end",
        front.size(),
        elapsed.as_nanos() as f64 / MESSAGES as f64,
    );
}
