//! The wire format (`io/xs_wire.h`): error names, whole messages, and a
//! decoder that cuts a byte stream into messages.

use alloc::vec::Vec;
use core::fmt;

use zerocopy::{FromBytes, IntoBytes};

pub use xen_abi::io::xs_wire::*;
pub use xen_abi::{XENSTORE_ABS_PATH_MAX, XENSTORE_PAYLOAD_MAX, XENSTORE_REL_PATH_MAX};

/// Size of the message header.
pub const HEADER_SIZE: usize = core::mem::size_of::<XsdSockmsg>();

/// A xenstore error, carried by value as Xen's errno and on the wire by
/// name (`XS_ERROR` with `"<NAME>\0"`). Only the names of xs_wire.h's
/// `xsd_errors` table exist.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct XsError(i32);

impl XsError {
    /// Invalid argument, path or message.
    pub const EINVAL: Self = Self(xen_abi::EINVAL);
    /// Permission denied (or a privileged request from an unprivileged domain).
    pub const EACCES: Self = Self(xen_abi::EACCES);
    /// A watch with this path and token exists.
    pub const EEXIST: Self = Self(xen_abi::EEXIST);
    /// Is a directory.
    pub const EISDIR: Self = Self(xen_abi::EISDIR);
    /// No such node, transaction or watch.
    pub const ENOENT: Self = Self(xen_abi::ENOENT);
    /// Out of memory (or a failed transaction).
    pub const ENOMEM: Self = Self(xen_abi::ENOMEM);
    /// A quota is exhausted.
    pub const ENOSPC: Self = Self(xen_abi::ENOSPC);
    /// I/O error.
    pub const EIO: Self = Self(xen_abi::EIO);
    /// Directory not empty.
    pub const ENOTEMPTY: Self = Self(xen_abi::ENOTEMPTY);
    /// Unknown or unsupported message type.
    pub const ENOSYS: Self = Self(xen_abi::ENOSYS);
    /// Read-only.
    pub const EROFS: Self = Self(xen_abi::EROFS);
    /// A transaction is already open on this request.
    pub const EBUSY: Self = Self(xen_abi::EBUSY);
    /// The transaction conflicted: retry it.
    pub const EAGAIN: Self = Self(xen_abi::EAGAIN);
    /// Already connected.
    pub const EISCONN: Self = Self(xen_abi::EISCONN);
    /// A reply would exceed the payload limit, or too many watches.
    pub const E2BIG: Self = Self(xen_abi::E2BIG);
    /// Operation not permitted (an unprivileged owner change).
    pub const EPERM: Self = Self(xen_abi::EPERM);

    /// The error with this errno value, if xs_wire.h names it.
    pub fn from_errno(errno: i32) -> Option<Self> {
        XSD_ERRORS
            .iter()
            .find(|(e, _)| *e == errno)
            .map(|&(e, _)| Self(e))
    }

    /// The error named by an `XS_ERROR` payload (with or without its NUL).
    pub fn from_name(payload: &[u8]) -> Option<Self> {
        xen_abi::io::xs_wire::xsd_error_from_name(payload).map(Self)
    }

    /// Xen's errno value (positive).
    pub const fn errno(self) -> i32 {
        self.0
    }

    /// The name sent on the wire, e.g. `"ENOENT"`.
    pub fn name(self) -> &'static str {
        XSD_ERRORS
            .iter()
            .find(|(e, _)| *e == self.0)
            .map(|&(_, n)| n)
            .unwrap_or("EINVAL")
    }
}

impl fmt::Debug for XsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for XsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Builds a whole message (header and payload) as bytes. The payload must
/// not exceed [`XENSTORE_PAYLOAD_MAX`]; callers guarantee it.
pub fn encode(kind: u32, req_id: u32, tx_id: u32, payload: &[u8]) -> Vec<u8> {
    let hdr = XsdSockmsg {
        r#type: kind,
        req_id,
        tx_id,
        len: payload.len() as u32,
    };
    let mut out = Vec::with_capacity(HEADER_SIZE + payload.len());
    out.extend_from_slice(hdr.as_bytes());
    out.extend_from_slice(payload);
    out
}

/// Parses a header from exactly [`HEADER_SIZE`] bytes.
pub fn decode_header(bytes: &[u8; HEADER_SIZE]) -> XsdSockmsg {
    XsdSockmsg::read_from_bytes(bytes).unwrap_or_default()
}

/// Why a byte stream stopped being a valid message sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamError {
    /// A header announced more than [`XENSTORE_PAYLOAD_MAX`] bytes (C
    /// xenstored drops such a client).
    PayloadTooLong(u32),
}

/// Cuts a byte stream (a socket) into messages. Memory is bounded by one
/// header and one maximal payload.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
    fault: Option<StreamError>,
}

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many bytes the decoder wants next (at least 1), so a reader never
    /// takes more from the stream than one message.
    pub fn wanted(&self) -> usize {
        if self.buf.len() < HEADER_SIZE {
            return HEADER_SIZE - self.buf.len();
        }
        let len = self.header().len as usize;
        (HEADER_SIZE + len).saturating_sub(self.buf.len()).max(1)
    }

    fn header(&self) -> XsdSockmsg {
        let mut h = [0u8; HEADER_SIZE];
        h.copy_from_slice(&self.buf[..HEADER_SIZE]);
        decode_header(&h)
    }

    /// Feeds bytes; returns how many were consumed (never past the end of
    /// the current message) and whether a message is complete, which
    /// [`take`](Self::take) then returns.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(usize, bool), StreamError> {
        if let Some(e) = self.fault {
            return Err(e);
        }
        let mut used = 0;
        if self.buf.len() < HEADER_SIZE {
            let n = (HEADER_SIZE - self.buf.len()).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..n]);
            used += n;
            if self.buf.len() < HEADER_SIZE {
                return Ok((used, false));
            }
            let len = self.header().len;
            if len as usize > XENSTORE_PAYLOAD_MAX {
                let e = StreamError::PayloadTooLong(len);
                self.fault = Some(e);
                return Err(e);
            }
        }
        let total = HEADER_SIZE + self.header().len as usize;
        let n = (total - self.buf.len()).min(bytes.len() - used);
        self.buf.extend_from_slice(&bytes[used..used + n]);
        used += n;
        Ok((used, self.buf.len() == total))
    }

    /// The complete message, if [`feed`](Self::feed) said so; the decoder
    /// then starts on the next one.
    pub fn take(&mut self) -> Option<(XsdSockmsg, Vec<u8>)> {
        if self.buf.len() < HEADER_SIZE {
            return None;
        }
        let hdr = self.header();
        if self.buf.len() != HEADER_SIZE + hdr.len as usize {
            return None;
        }
        let payload = self.buf.split_off(HEADER_SIZE);
        self.buf.clear();
        Some((hdr, payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_round_trip() {
        for &(errno, name) in XSD_ERRORS {
            let e = XsError::from_errno(errno).unwrap();
            assert_eq!(e.name(), name);
            assert_eq!(XsError::from_name(name.as_bytes()), Some(e));
        }
        assert_eq!(XsError::from_errno(9999), None);
        assert_eq!(XsError::ENOENT.name(), "ENOENT");
        assert_eq!(XsError::E2BIG.errno(), 7);
    }

    #[test]
    fn decoder_splits_a_stream_at_any_boundary() {
        let mut stream = encode(XS_READ, 7, 0, b"/a\0");
        stream.extend(encode(XS_WRITE, 8, 3, b"/b\0xyz"));
        stream.extend(encode(XS_DIRECTORY, 9, 0, b""));
        for chunk in 1..stream.len() {
            let mut d = Decoder::new();
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                let mut off = 0;
                while off < piece.len() {
                    let (n, done) = d.feed(&piece[off..]).unwrap();
                    off += n;
                    if done {
                        got.push(d.take().unwrap());
                    }
                }
            }
            // A zero-length payload completes at the header.
            assert_eq!(got.len(), 3, "chunk {chunk}");
            assert_eq!(got[0].0.req_id, 7);
            assert_eq!(got[1].1, b"/b\0xyz");
            assert_eq!(got[1].0.tx_id, 3);
            assert_eq!(got[2].0.r#type, XS_DIRECTORY);
            assert!(got[2].1.is_empty());
        }
    }

    #[test]
    fn decoder_refuses_an_oversized_payload_for_good() {
        let mut d = Decoder::new();
        let mut hdr = encode(XS_WRITE, 0, 0, b"");
        hdr[12..16].copy_from_slice(&4097u32.to_le_bytes());
        assert_eq!(d.feed(&hdr), Err(StreamError::PayloadTooLong(4097)));
        assert!(d.feed(b"x").is_err());
    }
}
