//! A socket client's raw byte stream: cut into messages by
//! `wire::Decoder` (fed in pieces whose sizes the input chooses) and
//! handled for a socket connection. Every reply must parse, and the
//! decoder must never take bytes past the end of the current message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xenstored::wire::{self, Decoder};
use xenstored::{NoTransport, Xenstored};

fuzz_target!(|data: &[u8]| {
    let Some((&piece, stream)) = data.split_first() else {
        return;
    };
    let piece = usize::from(piece % 32) + 1;
    let mut xs = Xenstored::new();
    let conn = xs.connect_socket();
    let mut dec = Decoder::new();
    // Bytes the decoder took since the last whole message.
    let mut in_msg = 0;
    for chunk in stream.chunks(piece) {
        let mut off = 0;
        while off < chunk.len() {
            assert!(dec.wanted() >= 1);
            let Ok((n, done)) = dec.feed(&chunk[off..]) else {
                // C xenstored drops the client: so does the transport.
                return;
            };
            assert!(n <= chunk.len() - off);
            // It stops early only at the end of a message.
            assert!(done || off + n == chunk.len(), "stopped inside a message");
            off += n;
            in_msg += n;
            if done {
                let (hdr, payload) = dec.take().expect("a complete message");
                assert_eq!(hdr.len as usize, payload.len());
                assert_eq!(
                    in_msg,
                    wire::HEADER_SIZE + payload.len(),
                    "took past a message"
                );
                in_msg = 0;
                assert!(payload.len() <= wire::XENSTORE_PAYLOAD_MAX);
                xs.handle(conn, &hdr, &payload, &mut NoTransport);
                while let Some(m) = xs.next_output(conn) {
                    let h = wire::decode_header(m[..wire::HEADER_SIZE].try_into().unwrap());
                    assert_eq!(h.len as usize, m.len() - wire::HEADER_SIZE);
                    assert!(h.len as usize <= wire::XENSTORE_PAYLOAD_MAX);
                }
            }
        }
    }
});
