//! The host's side of a guest's web server reached through QEMU's user
//! network (`hostfwd=tcp:127.0.0.1:PORT-GUEST:80`): a free port to forward,
//! and a plain HTTP/1.0 client that fetches `/blob` from the guest's busybox
//! `httpd` (`/init`'s `pvhhttpd`, xtask/src/linux.rs), times it, hashes it,
//! then asks for `/cgi-bin/done` so the guest goes on to power off.
//!
//! Used by the e2e case `qemu-svm-linux-uplink` and by the uplink figures of
//! `cargo xtask bench` (the same client against bare QEMU).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The size of `/blob` that `pvhhttpd` serves.
pub const BLOB_BYTES: usize = 4 << 20;

/// A TCP port on 127.0.0.1 that nobody listens on now (the kernel's pick
/// for port 0), for QEMU's `hostfwd`. Another process could take it before
/// QEMU binds it; QEMU then fails to start and says so.
pub fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("bind: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("local_addr: {e}"))
}

/// `-netdev` for QEMU's user network with the guest's port 80 at
/// 127.0.0.1:`port` (the guest is 10.0.2.15).
pub fn user_netdev(id: &str, port: u16) -> String {
    format!("user,id={id},hostfwd=tcp:127.0.0.1:{port}-10.0.2.15:80")
}

/// One GET: the body of a `200` answer, or why not.
pub fn http_get(port: u16, path: &str, timeout: Duration) -> Result<Vec<u8>, String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .and_then(|()| s.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("timeout: {e}"))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut all = Vec::new();
    s.read_to_end(&mut all)
        .map_err(|e| format!("receive: {e}"))?;
    // The header ends at an empty line; a CGI's own header lines (busybox
    // httpd passes them on) may end in a bare LF.
    let (end, blank) = [&b"\r\n\r\n"[..], b"\n\n", b"\n\r\n"]
        .iter()
        .filter_map(|p| Some((all.windows(p.len()).position(|w| w == *p)?, p.len())))
        .min()
        .ok_or_else(|| format!("no HTTP header in {} bytes", all.len()))?;
    let head = String::from_utf8_lossy(&all[..end]);
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("answer: {status}"));
    }
    Ok(all[end + blank..].to_vec())
}

/// Whether an HTTP server answers at 127.0.0.1:`port` (any status).
fn answers(port: u16) -> bool {
    match http_get(port, "/ready", Duration::from_secs(10)) {
        Ok(_) => true,
        Err(e) => e.starts_with("answer: HTTP/"),
    }
}

/// What [`fetch_blob`] got.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub bytes: usize,
    /// The successful GET of `/blob` alone, seconds of host time.
    pub secs: f64,
    pub sha256: String,
}

/// Fetches `/blob` from 127.0.0.1:`port` until a whole one comes (the
/// guest's server starts long after QEMU forwards the port: until then
/// QEMU accepts and closes, or the answer is short), then `/cgi-bin/done`.
/// Gives up at `deadline`.
pub fn fetch_blob(port: u16, deadline: Instant) -> Result<Fetched, String> {
    let mut last = String::from("no attempt");
    while Instant::now() < deadline {
        // Not timed until the server answers at all (a 404 for
        // `/ready`): until then QEMU holds the connection while the guest
        // is not listening, and TCP's retries would be counted.
        if !answers(port) {
            last = "the server did not answer yet".into();
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        let t0 = Instant::now();
        match http_get(port, "/blob", Duration::from_secs(60)) {
            Ok(body) if body.len() == BLOB_BYTES => {
                let secs = t0.elapsed().as_secs_f64();
                let sha256 = sha256(&body)?;
                // The guest waits for this before it powers off.
                let mut told = http_get(port, "/cgi-bin/done", Duration::from_secs(30));
                for _ in 0..5 {
                    if told.is_ok() {
                        break;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                    told = http_get(port, "/cgi-bin/done", Duration::from_secs(30));
                }
                told.map_err(|e| format!("GET /cgi-bin/done: {e}"))?;
                return Ok(Fetched {
                    bytes: body.len(),
                    secs,
                    sha256,
                });
            }
            Ok(body) => last = format!("{} bytes, not {BLOB_BYTES}", body.len()),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(format!("GET /blob from 127.0.0.1:{port}: {last}"))
}

/// The sha256 of `data` in hex, by coreutils' `sha256sum`.
pub fn sha256(data: &[u8]) -> Result<String, String> {
    let mut c = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("sha256sum: {e}"))?;
    let mut stdin = c.stdin.take().ok_or("sha256sum: no stdin")?;
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = c
        .wait_with_output()
        .map_err(|e| format!("sha256sum: {e}"))?;
    writer
        .join()
        .map_err(|_| "sha256sum: writer panicked".to_string())?
        .map_err(|e| format!("sha256sum: {e}"))?;
    let s = String::from_utf8_lossy(&out.stdout);
    s.split_whitespace()
        .next()
        .map(str::to_string)
        .ok_or_else(|| "sha256sum printed nothing".to_string())
}

/// The sha256 that the guest printed for its `/blob`.
pub fn served_sha256(serial: &str) -> Option<&str> {
    let tag = "serves /blob: 4194304 bytes, sha256 ";
    let at = serial.find(tag)? + tag.len();
    serial[at..].split_whitespace().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_a_known_input() {
        // FIPS 180-2's "abc".
        assert_eq!(
            sha256(b"abc").unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn keep_hash_matches_what_init_writes() {
        let data: Vec<u8> = b"pvh-keep\n"
            .iter()
            .copied()
            .cycle()
            .take(1 << 20)
            .collect();
        assert_eq!(sha256(&data).unwrap(), crate::linux::KEEP_SHA256);
    }

    #[test]
    fn served_hash_is_read_off_the_console() {
        let s = "(d2) PVH-LINUX-NET: httpd on port 80 serves /blob: 4194304 bytes, sha256 abc123\r\nnext";
        assert_eq!(served_sha256(s), Some("abc123"));
        assert_eq!(served_sha256("nothing"), None);
    }

    /// The client against a server on this host: a whole answer, a short
    /// one (retried until the deadline), and the status line checked.
    #[test]
    fn client_fetches_and_checks_the_answer() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let serve = |status: &str, body: &[u8]| {
                let (mut s, _) = l.accept().unwrap();
                let mut req = [0u8; 512];
                let n = s.read(&mut req).unwrap();
                let line = String::from_utf8_lossy(&req[..n]).to_string();
                s.write_all(format!("HTTP/1.0 {status}\r\n\r\n").as_bytes())
                    .unwrap();
                s.write_all(body).unwrap();
                line
            };
            let probe = serve("404 Not Found", b"");
            let short = serve("200 OK", b"short");
            assert!(serve("404 Not Found", b"").starts_with("GET /ready "));
            let whole = serve("200 OK", &vec![7u8; BLOB_BYTES]);
            // A CGI's header, passed on with bare LFs.
            let done = serve("200 OK\r\nContent-Type: text/plain\n", b"bye");
            (probe, short, whole, done)
        });
        let got = fetch_blob(port, Instant::now() + Duration::from_secs(60)).unwrap();
        let (probe, short, whole, done) = server.join().unwrap();
        assert!(probe.starts_with("GET /ready HTTP/1.0"));
        assert!(short.starts_with("GET /blob HTTP/1.0"));
        assert!(whole.starts_with("GET /blob HTTP/1.0"));
        assert!(done.starts_with("GET /cgi-bin/done HTTP/1.0"));
        assert_eq!(got.bytes, BLOB_BYTES);
        assert_eq!(got.sha256, sha256(&vec![7u8; BLOB_BYTES]).unwrap());
        assert!(http_get(free_port().unwrap(), "/", Duration::from_secs(1)).is_err());
    }
}
