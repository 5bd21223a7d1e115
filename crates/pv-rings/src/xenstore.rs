//! The xenstore page (`io/xs_wire.h`) and a message framer.
//!
//! | offset | field             | written by |
//! |--------|-------------------|------------|
//! | 0      | `req[1024]`       | guest      |
//! | 1024   | `rsp[1024]`       | server     |
//! | 2048   | `req_cons`        | server     |
//! | 2052   | `req_prod`        | guest      |
//! | 2056   | `rsp_cons`        | guest      |
//! | 2060   | `rsp_prod`        | server     |
//! | 2064   | `server_features` | server     |
//! | 2068   | `connection`      | both (reconnection handshake) |
//! | 2072   | `error`           | server     |
//! | 2076   | `evtchn_port`     | (newer Xen) |
//!
//! A valid direction satisfies `prod - cons <= 1024`. A server that finds
//! an index violation sets `error` to [`XENSTORE_ERROR_RINGIDX`] and stops
//! serving the ring; a guest that sees a non-zero `error` stops too. Signal
//! the event channel after every index update.
//!
//! Offsets and constants come from `xen_abi`'s `XenstoreDomainInterface`.
//! Messages are a 16-byte [`XsdSockmsg`] header followed by `len` payload
//! bytes, at most [`XENSTORE_PAYLOAD_MAX`]. [`MessageReader`] and
//! [`MessageWriter`] assemble and emit them over the byte rings in bounded
//! steps.

use core::sync::atomic::Ordering::{Acquire, Release};

use zerocopy::{FromBytes, IntoBytes};

use crate::bytes::{ByteReader, ByteRingError, ByteRingLayout, ByteWriter};
use crate::mem::SharedMem;

use core::mem::offset_of;

pub use xen_abi::{
    XENSTORE_CONNECTED, XENSTORE_ERROR_COMM, XENSTORE_ERROR_NONE, XENSTORE_ERROR_PROTO,
    XENSTORE_ERROR_RINGIDX, XENSTORE_PAYLOAD_MAX, XENSTORE_RECONNECT,
    XENSTORE_SERVER_FEATURE_ERROR, XENSTORE_SERVER_FEATURE_RECONNECTION, XenstoreDomainInterface,
    XsdSockmsg,
};

/// Size of each xenstore data array.
pub const XENSTORE_RING_SIZE: u32 = xen_abi::XENSTORE_RING_SIZE as u32;
/// Offset of `req`.
pub const XS_REQ_OFFSET: usize = offset_of!(XenstoreDomainInterface, req);
/// Offset of `rsp`.
pub const XS_RSP_OFFSET: usize = offset_of!(XenstoreDomainInterface, rsp);
/// Offset of `req_cons`.
pub const XS_REQ_CONS_OFFSET: usize = offset_of!(XenstoreDomainInterface, req_cons);
/// Offset of `req_prod`.
pub const XS_REQ_PROD_OFFSET: usize = offset_of!(XenstoreDomainInterface, req_prod);
/// Offset of `rsp_cons`.
pub const XS_RSP_CONS_OFFSET: usize = offset_of!(XenstoreDomainInterface, rsp_cons);
/// Offset of `rsp_prod`.
pub const XS_RSP_PROD_OFFSET: usize = offset_of!(XenstoreDomainInterface, rsp_prod);
/// Offset of `server_features`.
pub const XS_SERVER_FEATURES_OFFSET: usize = offset_of!(XenstoreDomainInterface, server_features);
/// Offset of `connection`.
pub const XS_CONNECTION_OFFSET: usize = offset_of!(XenstoreDomainInterface, connection);
/// Offset of `error`.
pub const XS_ERROR_OFFSET: usize = offset_of!(XenstoreDomainInterface, error);
/// Offset of `evtchn_port`.
pub const XS_EVTCHN_PORT_OFFSET: usize = offset_of!(XenstoreDomainInterface, evtchn_port);

/// Layout of `req` (guest to server).
pub const XENSTORE_REQ: ByteRingLayout = ByteRingLayout {
    data: XS_REQ_OFFSET,
    len: XENSTORE_RING_SIZE,
    cons: XS_REQ_CONS_OFFSET,
    prod: XS_REQ_PROD_OFFSET,
};

/// Layout of `rsp` (server to guest).
pub const XENSTORE_RSP: ByteRingLayout = ByteRingLayout {
    data: XS_RSP_OFFSET,
    len: XENSTORE_RING_SIZE,
    cons: XS_RSP_CONS_OFFSET,
    prod: XS_RSP_PROD_OFFSET,
};

/// Size of [`XsdSockmsg`].
pub const XSD_SOCKMSG_SIZE: usize = core::mem::size_of::<XsdSockmsg>();

/// The guest's end of the xenstore page.
#[derive(Debug)]
pub struct XenstoreFront<M> {
    /// Requests to the server.
    pub req: ByteWriter<M>,
    /// Responses and watch events from the server.
    pub rsp: ByteReader<M>,
}

/// Why a xenstore end stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XenstoreError {
    /// An index was invalid.
    Ring(ByteRingError),
    /// The server reported this `error` value.
    Server(u32),
    /// A message header announced a payload over [`XENSTORE_PAYLOAD_MAX`].
    PayloadTooLong(u32),
    /// A message is already being sent.
    Busy,
}

impl From<ByteRingError> for XenstoreError {
    fn from(e: ByteRingError) -> Self {
        Self::Ring(e)
    }
}

impl<M: SharedMem + Clone> XenstoreFront<M> {
    /// Attaches to a xenstore page (indices taken from the page).
    pub fn attach(mem: M) -> Result<Self, XenstoreError> {
        Ok(Self {
            req: ByteWriter::attach(mem.clone(), XENSTORE_REQ)?,
            rsp: ByteReader::attach(mem, XENSTORE_RSP)?,
        })
    }

    /// The server's `error` field (read once).
    pub fn error(&self) -> u32 {
        self.req.mem().load_u32(XS_ERROR_OFFSET, Acquire)
    }

    /// `server_features` (read once).
    pub fn server_features(&self) -> u32 {
        self.req.mem().load_u32(XS_SERVER_FEATURES_OFFSET, Acquire)
    }

    /// `connection` (read once).
    pub fn connection(&self) -> u32 {
        self.req.mem().load_u32(XS_CONNECTION_OFFSET, Acquire)
    }

    /// Asks the server to reset the connection (`connection = RECONNECT`),
    /// when it advertises the feature.
    pub fn request_reconnect(&self) {
        self.req
            .mem()
            .store_u32(XS_CONNECTION_OFFSET, XENSTORE_RECONNECT, Release);
    }

    /// Fails if the server reported an error.
    pub fn check_error(&self) -> Result<(), XenstoreError> {
        match self.error() {
            XENSTORE_ERROR_NONE => Ok(()),
            e => Err(XenstoreError::Server(e)),
        }
    }
}

/// The server's end of the xenstore page.
#[derive(Debug)]
pub struct XenstoreBack<M> {
    /// Requests from the guest.
    pub req: ByteReader<M>,
    /// Responses to the guest.
    pub rsp: ByteWriter<M>,
}

impl<M: SharedMem + Clone> XenstoreBack<M> {
    /// Attaches to a xenstore page (indices taken from the page). An invalid
    /// page sets `error` to [`XENSTORE_ERROR_RINGIDX`].
    pub fn attach(mem: M) -> Result<Self, XenstoreError> {
        let req = ByteReader::attach(mem.clone(), XENSTORE_REQ);
        let rsp = ByteWriter::attach(mem.clone(), XENSTORE_RSP);
        match (req, rsp) {
            (Ok(req), Ok(rsp)) => Ok(Self { req, rsp }),
            (Err(e), _) | (_, Err(e)) => {
                if e != ByteRingError::BadLayout {
                    mem.store_u32(XS_ERROR_OFFSET, XENSTORE_ERROR_RINGIDX, Release);
                }
                Err(e.into())
            }
        }
    }

    /// Advertises features (`server_features`).
    pub fn set_server_features(&self, features: u32) {
        self.rsp
            .mem()
            .store_u32(XS_SERVER_FEATURES_OFFSET, features, Release);
    }

    /// `connection` as the guest left it (read once).
    pub fn connection(&self) -> u32 {
        self.rsp.mem().load_u32(XS_CONNECTION_OFFSET, Acquire)
    }

    /// Sets `connection`.
    pub fn set_connection(&self, value: u32) {
        self.rsp
            .mem()
            .store_u32(XS_CONNECTION_OFFSET, value, Release);
    }

    /// Reports an error to the guest through `error`.
    pub fn set_error(&self, value: u32) {
        self.rsp.mem().store_u32(XS_ERROR_OFFSET, value, Release);
    }

    /// Reads request bytes; on an index violation sets `error` to
    /// [`XENSTORE_ERROR_RINGIDX`].
    pub fn read(&mut self, dst: &mut [u8]) -> Result<usize, XenstoreError> {
        self.req.read(dst).map_err(|e| {
            self.set_error(XENSTORE_ERROR_RINGIDX);
            e.into()
        })
    }

    /// Writes response bytes; on an index violation sets `error` to
    /// [`XENSTORE_ERROR_RINGIDX`].
    pub fn write(&mut self, src: &[u8]) -> Result<usize, XenstoreError> {
        self.rsp.write(src).map_err(|e| {
            self.set_error(XENSTORE_ERROR_RINGIDX);
            e.into()
        })
    }
}

/// Assembles messages from a byte stream: header, then payload.
///
/// Each [`poll`](Self::poll) moves at most one message's worth of bytes
/// (16 + 4096), so the work per call is bounded.
pub struct MessageReader {
    header: [u8; XSD_SOCKMSG_SIZE],
    payload: [u8; XENSTORE_PAYLOAD_MAX],
    have: usize,
    done: bool,
    fault: Option<XenstoreError>,
}

impl Default for MessageReader {
    fn default() -> Self {
        Self::new()
    }
}

impl MessageReader {
    /// An empty reader.
    pub const fn new() -> Self {
        Self {
            header: [0; XSD_SOCKMSG_SIZE],
            payload: [0; XENSTORE_PAYLOAD_MAX],
            have: 0,
            done: false,
            fault: None,
        }
    }

    fn header(&self) -> XsdSockmsg {
        XsdSockmsg::read_from_bytes(&self.header).unwrap_or_default()
    }

    /// Reads what is available; returns a complete message (header and
    /// payload) when one is assembled. The message borrows the reader and is
    /// dropped before the next poll. An announced payload over 4096 bytes is
    /// a protocol error that stops the reader.
    pub fn poll<M: SharedMem>(
        &mut self,
        ring: &mut ByteReader<M>,
    ) -> Result<Option<(XsdSockmsg, &[u8])>, XenstoreError> {
        if let Some(e) = self.fault {
            return Err(e);
        }
        if self.done {
            self.done = false;
            self.have = 0;
        }
        if self.have < XSD_SOCKMSG_SIZE {
            let n = ring.read(&mut self.header[self.have..])?;
            self.have += n;
            if self.have < XSD_SOCKMSG_SIZE {
                return Ok(None);
            }
        }
        let hdr = self.header();
        let len = hdr.len as usize;
        if len > XENSTORE_PAYLOAD_MAX {
            let e = XenstoreError::PayloadTooLong(hdr.len);
            self.fault = Some(e);
            return Err(e);
        }
        let got = self.have - XSD_SOCKMSG_SIZE;
        if got < len {
            let n = ring.read(&mut self.payload[got..len])?;
            self.have += n;
            if self.have - XSD_SOCKMSG_SIZE < len {
                return Ok(None);
            }
        }
        self.done = true;
        Ok(Some((hdr, &self.payload[..len])))
    }
}

/// Emits one message at a time into a byte ring, in as many steps as the
/// ring's free space requires.
pub struct MessageWriter {
    buf: [u8; XSD_SOCKMSG_SIZE + XENSTORE_PAYLOAD_MAX],
    len: usize,
    sent: usize,
}

impl Default for MessageWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl MessageWriter {
    /// An idle writer.
    pub const fn new() -> Self {
        Self {
            buf: [0; XSD_SOCKMSG_SIZE + XENSTORE_PAYLOAD_MAX],
            len: 0,
            sent: 0,
        }
    }

    /// Whether a message is still being sent.
    pub fn busy(&self) -> bool {
        self.sent < self.len
    }

    /// Queues a message; its header's `len` is set from `payload`.
    pub fn start(&mut self, mut header: XsdSockmsg, payload: &[u8]) -> Result<(), XenstoreError> {
        if self.busy() {
            return Err(XenstoreError::Busy);
        }
        if payload.len() > XENSTORE_PAYLOAD_MAX {
            return Err(XenstoreError::PayloadTooLong(
                u32::try_from(payload.len()).unwrap_or(u32::MAX),
            ));
        }
        header.len = payload.len() as u32;
        self.buf[..XSD_SOCKMSG_SIZE].copy_from_slice(header.as_bytes());
        self.buf[XSD_SOCKMSG_SIZE..XSD_SOCKMSG_SIZE + payload.len()].copy_from_slice(payload);
        self.len = XSD_SOCKMSG_SIZE + payload.len();
        self.sent = 0;
        Ok(())
    }

    /// Writes what fits; returns true when the whole message is out. Signal
    /// the peer after a call that wrote bytes.
    pub fn flush<M: SharedMem>(&mut self, ring: &mut ByteWriter<M>) -> Result<bool, XenstoreError> {
        if self.busy() {
            let n = ring.write(&self.buf[self.sent..self.len])?;
            self.sent += n;
        }
        Ok(!self.busy())
    }
}
