//! The ring transport: a domain's xenstore page (`pv-rings`' xenstore
//! ring), messages in pieces across the 1024-byte rings, the `connection`
//! and `error` fields and `server_features`.

use pv_rings::SharedMem;
use pv_rings::xenstore::{
    MessageReader, MessageWriter, XENSTORE_CONNECTED, XENSTORE_ERROR_PROTO, XENSTORE_ERROR_RINGIDX,
    XENSTORE_SERVER_FEATURE_ERROR, XenstoreBack, XenstoreError, XsdSockmsg,
};

use crate::server::{ConnId, DomainOps, Xenstored};
use crate::wire::{HEADER_SIZE, decode_header};

/// Requests taken from one ring per [`RingConnection::pump`], so that one
/// busy domain cannot starve the others.
pub const REQUESTS_PER_PUMP: usize = 8;

/// The features this server offers on the page: the `error` field.
pub const SERVER_FEATURES: u32 = XENSTORE_SERVER_FEATURE_ERROR;

/// One domain's ring, bound to a server connection.
pub struct RingConnection<M> {
    ring: XenstoreBack<M>,
    reader: MessageReader,
    writer: MessageWriter,
    conn: ConnId,
    dead: Option<XenstoreError>,
}

/// What a pump did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pumped {
    /// Ring indices moved: signal the domain's event channel.
    pub notify: bool,
    /// Requests left unread (the per-pump budget ran out, or the client
    /// has too many unread replies): pump again later.
    pub more: bool,
}

impl<M: SharedMem + Clone> RingConnection<M> {
    /// Attaches to a domain's page for connection `conn`: advertises the
    /// server features and marks the ring connected. Signal the domain
    /// afterwards (Linux waits for that event when `connection` was 1).
    pub fn attach(mem: M, conn: ConnId) -> Result<Self, XenstoreError> {
        let ring = XenstoreBack::attach(mem)?;
        ring.set_server_features(SERVER_FEATURES);
        ring.set_connection(XENSTORE_CONNECTED);
        Ok(Self {
            ring,
            reader: MessageReader::new(),
            writer: MessageWriter::new(),
            conn,
            dead: None,
        })
    }

    /// The server connection.
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// Why the ring stopped, if it did (the domain broke the protocol; the
    /// page's `error` field says so too). Disconnect it from the server.
    pub fn fault(&self) -> Option<XenstoreError> {
        self.dead
    }

    /// Moves requests in and replies and events out, within a fixed
    /// budget. A protocol violation stops this ring for good (and only
    /// this ring): the error is returned and kept.
    pub fn pump(
        &mut self,
        xs: &mut Xenstored,
        ops: &mut dyn DomainOps,
    ) -> Result<Pumped, XenstoreError> {
        if let Some(e) = self.dead {
            return Err(e);
        }
        let r = self.pump_inner(xs, ops);
        if let Err(e) = r {
            match e {
                XenstoreError::PayloadTooLong(_) => self.ring.set_error(XENSTORE_ERROR_PROTO),
                XenstoreError::Ring(_) => self.ring.set_error(XENSTORE_ERROR_RINGIDX),
                _ => {}
            }
            self.dead = Some(e);
        }
        r
    }

    fn pump_inner(
        &mut self,
        xs: &mut Xenstored,
        ops: &mut dyn DomainOps,
    ) -> Result<Pumped, XenstoreError> {
        let mut out = Pumped::default();
        let before = (self.ring.req.cons(), self.ring.rsp.prod());
        let mut taken = 0;
        loop {
            self.flush(xs)?;
            if taken == REQUESTS_PER_PUMP || !xs.accepts_requests(self.conn) {
                out.more = self.ring.req.available()? > 0;
                break;
            }
            match self.reader.poll(&mut self.ring.req)? {
                Some((hdr, payload)) => {
                    xs.handle(self.conn, &hdr, payload, ops);
                    taken += 1;
                }
                None => break,
            }
        }
        self.flush(xs)?;
        out.notify = before != (self.ring.req.cons(), self.ring.rsp.prod());
        Ok(out)
    }

    fn flush(&mut self, xs: &mut Xenstored) -> Result<(), XenstoreError> {
        loop {
            if !self.writer.flush(&mut self.ring.rsp)? {
                return Ok(());
            }
            let Some(msg) = xs.next_output(self.conn) else {
                return Ok(());
            };
            let mut h = [0u8; HEADER_SIZE];
            h.copy_from_slice(&msg[..HEADER_SIZE]);
            let hdr: XsdSockmsg = decode_header(&h);
            self.writer.start(hdr, &msg[HEADER_SIZE..])?;
        }
    }
}
