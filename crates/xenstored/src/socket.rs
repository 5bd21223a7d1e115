//! The Unix-socket transport of the host daemon (`std` feature).
//!
//! Each client is a privileged domain-0 connection, as C xenstored treats
//! its socket clients. One thread reads each client's requests and one
//! writes its replies and events; the store sits behind a mutex, and a
//! condition variable wakes writers when output is queued. A reader stops
//! taking requests while its client has too many unread replies, so a
//! client that never reads cannot grow the daemon's memory.

use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::vec::Vec;

use crate::server::{ConnId, NoTransport, Xenstored};
use crate::wire::Decoder;

struct Shared {
    xs: Mutex<Xenstored>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Xenstored> {
        self.xs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Serves `listener` forever with a new, empty store.
pub fn serve(listener: UnixListener) -> io::Result<()> {
    serve_store(listener, Xenstored::new())
}

/// Serves `listener` forever with `xs`.
pub fn serve_store(listener: UnixListener, xs: Xenstored) -> io::Result<()> {
    let shared = Arc::new(Shared {
        xs: Mutex::new(xs),
        changed: Condvar::new(),
    });
    for stream in listener.incoming() {
        let stream = stream?;
        let conn = shared.lock().connect_socket();
        let reader = stream.try_clone()?;
        let s = shared.clone();
        thread::spawn(move || {
            let _ = read_loop(&s, conn, reader);
            s.lock().disconnect(conn);
            s.changed.notify_all();
        });
        let s = shared.clone();
        thread::spawn(move || {
            let _ = write_loop(&s, conn, stream);
        });
    }
    Ok(())
}

/// Binds `path` (removing a stale socket file first) and serves it.
pub fn bind_and_serve(path: &Path) -> io::Result<()> {
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    serve(UnixListener::bind(path)?)
}

fn read_loop(s: &Shared, conn: ConnId, mut stream: UnixStream) -> io::Result<()> {
    let mut decoder = Decoder::new();
    let mut buf = [0u8; 4096 + 16];
    loop {
        {
            let mut xs = s.lock();
            while xs.is_connected(conn) && !xs.accepts_requests(conn) {
                xs = s.changed.wait(xs).unwrap_or_else(PoisonError::into_inner);
            }
            if !xs.is_connected(conn) {
                return Ok(());
            }
        }
        let want = decoder.wanted().min(buf.len());
        let n = stream.read(&mut buf[..want])?;
        if n == 0 {
            return Ok(());
        }
        let mut off = 0;
        while off < n {
            let (used, done) = decoder
                .feed(&buf[off..n])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, std::format!("{e:?}")))?;
            off += used;
            if done && let Some((hdr, payload)) = decoder.take() {
                s.lock().handle(conn, &hdr, &payload, &mut NoTransport);
                s.changed.notify_all();
            }
        }
    }
}

fn write_loop(s: &Shared, conn: ConnId, mut stream: UnixStream) -> io::Result<()> {
    loop {
        let batch: Vec<Vec<u8>> = {
            let mut xs = s.lock();
            while xs.is_connected(conn) && !xs.has_output(conn) {
                xs = s.changed.wait(xs).unwrap_or_else(PoisonError::into_inner);
            }
            if !xs.is_connected(conn) {
                let _ = stream.shutdown(std::net::Shutdown::Both);
                return Ok(());
            }
            core::iter::from_fn(|| xs.next_output(conn))
                .take(64)
                .collect()
        };
        // Readers waiting for room may go on.
        s.changed.notify_all();
        for msg in batch {
            stream.write_all(&msg)?;
        }
    }
}
