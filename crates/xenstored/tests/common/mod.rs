//! A small synchronous client over the server core, for the tests.
#![allow(dead_code)]

use xen_abi::XsdSockmsg;
use xenstored::wire::*;
use xenstored::{ConnId, NoTransport, Xenstored};

/// A reply or event as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub kind: u32,
    pub req_id: u32,
    pub tx_id: u32,
    pub payload: Vec<u8>,
}

pub fn parse(bytes: &[u8]) -> Msg {
    assert!(bytes.len() >= HEADER_SIZE);
    let mut h = [0u8; HEADER_SIZE];
    h.copy_from_slice(&bytes[..HEADER_SIZE]);
    let hdr = decode_header(&h);
    assert_eq!(hdr.len as usize, bytes.len() - HEADER_SIZE);
    assert!(hdr.len as usize <= XENSTORE_PAYLOAD_MAX);
    Msg {
        kind: hdr.r#type,
        req_id: hdr.req_id,
        tx_id: hdr.tx_id,
        payload: bytes[HEADER_SIZE..].to_vec(),
    }
}

pub struct Client<'a> {
    pub xs: &'a mut Xenstored,
    pub conn: ConnId,
    pub events: Vec<(String, String)>,
    next_req: u32,
}

pub type R = Result<Vec<u8>, XsError>;

impl<'a> Client<'a> {
    pub fn new(xs: &'a mut Xenstored, conn: ConnId) -> Self {
        Self {
            xs,
            conn,
            events: Vec::new(),
            next_req: 100,
        }
    }

    /// Sends one request and returns its reply; events queued before and
    /// after the reply are collected in `self.events`.
    pub fn req(&mut self, kind: u32, tx: u32, payload: &[u8]) -> R {
        self.next_req += 1;
        let hdr = XsdSockmsg {
            r#type: kind,
            req_id: self.next_req,
            tx_id: tx,
            len: payload.len() as u32,
        };
        self.xs.handle(self.conn, &hdr, payload, &mut NoTransport);
        let mut reply = None;
        while let Some(bytes) = self.xs.next_output(self.conn) {
            let m = parse(&bytes);
            if m.kind == XS_WATCH_EVENT {
                assert_eq!((m.req_id, m.tx_id), (0, 0));
                self.events.push(split_event(&m.payload));
            } else {
                assert!(reply.is_none(), "two replies to one request");
                assert_eq!(m.req_id, self.next_req);
                assert_eq!(m.tx_id, tx);
                reply = Some(m);
            }
        }
        let m = reply.expect("no reply");
        if m.kind == XS_ERROR {
            assert_eq!(m.payload.last(), Some(&0));
            Err(XsError::from_name(&m.payload).expect("unknown error name"))
        } else {
            assert_eq!(m.kind, kind);
            Ok(m.payload)
        }
    }

    pub fn read(&mut self, tx: u32, path: &str) -> R {
        self.req(XS_READ, tx, &z(path))
    }
    pub fn write(&mut self, tx: u32, path: &str, value: &[u8]) -> R {
        let mut p = z(path);
        p.extend_from_slice(value);
        self.req(XS_WRITE, tx, &p)
    }
    pub fn mkdir(&mut self, tx: u32, path: &str) -> R {
        self.req(XS_MKDIR, tx, &z(path))
    }
    pub fn rm(&mut self, tx: u32, path: &str) -> R {
        self.req(XS_RM, tx, &z(path))
    }
    pub fn dir(&mut self, tx: u32, path: &str) -> Result<Vec<String>, XsError> {
        self.req(XS_DIRECTORY, tx, &z(path)).map(|p| strings(&p))
    }
    pub fn get_perms(&mut self, tx: u32, path: &str) -> Result<Vec<String>, XsError> {
        self.req(XS_GET_PERMS, tx, &z(path)).map(|p| strings(&p))
    }
    pub fn set_perms(&mut self, tx: u32, path: &str, perms: &[&str]) -> R {
        let mut p = z(path);
        for q in perms {
            p.extend(z(q));
        }
        self.req(XS_SET_PERMS, tx, &p)
    }
    pub fn watch(&mut self, path: &str, token: &str) -> R {
        let mut p = z(path);
        p.extend(z(token));
        self.req(XS_WATCH, 0, &p)
    }
    pub fn unwatch(&mut self, path: &str, token: &str) -> R {
        let mut p = z(path);
        p.extend(z(token));
        self.req(XS_UNWATCH, 0, &p)
    }
    pub fn start(&mut self) -> Result<u32, XsError> {
        let r = self.req(XS_TRANSACTION_START, 0, b"\0")?;
        assert_eq!(r.last(), Some(&0));
        Ok(std::str::from_utf8(&r[..r.len() - 1])
            .unwrap()
            .parse()
            .unwrap())
    }
    pub fn end(&mut self, tx: u32, commit: bool) -> R {
        self.req(XS_TRANSACTION_END, tx, if commit { b"T\0" } else { b"F\0" })
    }
    pub fn take_events(&mut self) -> Vec<(String, String)> {
        while let Some(bytes) = self.xs.next_output(self.conn) {
            let m = parse(&bytes);
            assert_eq!(m.kind, XS_WATCH_EVENT);
            self.events.push(split_event(&m.payload));
        }
        std::mem::take(&mut self.events)
    }
}

pub fn z(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

pub fn strings(p: &[u8]) -> Vec<String> {
    let mut v: Vec<String> = p
        .split(|&b| b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    // A NUL-terminated list leaves one empty piece at the end.
    assert_eq!(v.pop().as_deref(), Some(""), "list not NUL-terminated");
    v
}

fn split_event(p: &[u8]) -> (String, String) {
    let s = strings(p);
    assert_eq!(s.len(), 2, "event payload {p:?}");
    (s[0].clone(), s[1].clone())
}

pub const OK: &[u8] = b"OK\0";
