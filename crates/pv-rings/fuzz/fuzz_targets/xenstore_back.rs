//! A xenstore server end facing a guest that rewrites the page between
//! every step. The server must never panic, never move more bytes than a
//! message per step, and stop (with `error` set) on a bad index.
#![no_main]

use std::sync::atomic::Ordering::Relaxed;

use libfuzzer_sys::fuzz_target;
use pv_rings::xenstore::{MessageReader, MessageWriter, XenstoreBack, XsdSockmsg};
use pv_rings::{HeapPage, SharedMem};

fuzz_target!(|data: &[u8]| {
    let page = HeapPage::one();
    let mem = page.mem();
    let Ok(mut back) = XenstoreBack::attach(mem) else {
        return;
    };
    let mut reader = MessageReader::new();
    let mut writer = MessageWriter::new();
    let mut stopped = false;
    for step in data.chunks_exact(8) {
        let off = (u16::from_le_bytes([step[0], step[1]]) as usize % 1024) * 4;
        let val = u32::from_le_bytes([step[2], step[3], step[4], step[5]]);
        if step[6] & 1 == 0 {
            // Guest writes a word somewhere (data or indices).
            mem.store_u32(off % 2080, val, Relaxed);
        } else {
            // Guest bumps req_prod a little, as a real producer would.
            let prod = mem.load_u32(2052, Relaxed);
            mem.store_u32(2052, prod.wrapping_add(val % 64), Relaxed);
        }
        if step[7] & 1 == 0 {
            match reader.poll(&mut back.req) {
                Ok(Some((hdr, payload))) => {
                    assert!(payload.len() <= 4096);
                    assert_eq!(payload.len(), hdr.len as usize);
                    if !writer.busy() {
                        let _ = writer.start(
                            XsdSockmsg { len: 0, ..hdr },
                            &payload[..payload.len().min(64)],
                        );
                    }
                }
                Ok(None) => {}
                Err(_) => stopped = true,
            }
        } else if writer.flush(&mut back.rsp).is_err() {
            stopped = true;
        }
        if stopped {
            break;
        }
    }
});
