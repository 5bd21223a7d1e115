//! Clients we did not write, against our daemon: Debian's `xenstore-utils`
//! and Xen's own `test-xenstore` (from `xen-utils-4.17`), through
//! `XENSTORED_PATH`.
//!
//! Where the tools live: `XENSTORE_UTILS_BIN` (default `/usr/bin`) and
//! `XEN_TEST_XENSTORE` (default: `target/xen-utils/usr/lib/xen-4.17/bin/
//! test-xenstore`, where `.ci/run` unpacks the package, else Debian's
//! installed path). `LD_LIBRARY_PATH` is extended with the unpacked
//! package's libraries. Missing tools skip the tests, unless
//! `XENSTORED_REQUIRE_CLIENTS=1` (CI) makes that a failure. (Not under
//! Miri, which cannot start processes.)
#![cfg(not(miri))]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn required() -> bool {
    std::env::var("XENSTORED_REQUIRE_CLIENTS").is_ok_and(|v| v == "1")
}

fn unpacked() -> PathBuf {
    root().join("target/xen-utils")
}

fn utils_bin() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("XENSTORE_UTILS_BIN").map(PathBuf::from),
        Some(PathBuf::from("/usr/bin")),
        Some(unpacked().join("usr/bin")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|d| d.join("xenstore-read").exists())
}

fn test_xenstore() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("XEN_TEST_XENSTORE").map(PathBuf::from),
        Some(unpacked().join("usr/lib/xen-4.17/bin/test-xenstore")),
        Some(PathBuf::from("/usr/lib/xen-4.17/bin/test-xenstore")),
    ];
    candidates.into_iter().flatten().find(|p| p.exists())
}

fn skip(what: &str) {
    assert!(
        !required(),
        "{what} not found (XENSTORED_REQUIRE_CLIENTS=1): apt-get install xenstore-utils, \
         and unpack xen-utils-4.17 into target/xen-utils"
    );
    eprintln!("SKIPPED: {what} not found");
}

/// Our daemon on a fresh socket; killed when dropped.
struct Daemon {
    child: Child,
    socket: PathBuf,
    _dir: TempDir,
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Daemon {
    fn start(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("xenstored-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("socket");
        let child = Command::new(env!("CARGO_BIN_EXE_xenstored"))
            .arg("--socket")
            .arg(&socket)
            .stdin(Stdio::null())
            .spawn()
            .expect("start xenstored");
        // The socket appears once the daemon listens.
        let t = Instant::now();
        while !socket.exists() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "daemon did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Self {
            child,
            socket,
            _dir: TempDir(dir),
        }
    }

    fn cmd(&self, prog: &Path) -> Command {
        let mut c = Command::new(prog);
        c.env("XENSTORED_PATH", &self.socket);
        let mut libs = unpacked().join("usr/lib/x86_64-linux-gnu").into_os_string();
        if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
            libs.push(":");
            libs.push(old);
        }
        c.env("LD_LIBRARY_PATH", libs);
        c
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(d: &Daemon, bin: &Path, tool: &str, args: &[&str]) -> Output {
    d.cmd(&bin.join(tool))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e}"))
}

fn ok(d: &Daemon, bin: &Path, tool: &str, args: &[&str]) -> String {
    let out = run(d, bin, tool, args);
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn xenstore_utils() {
    let Some(bin) = utils_bin() else {
        return skip("xenstore-utils");
    };
    let d = Daemon::start("utils");
    ok(
        &d,
        &bin,
        "xenstore-write",
        &["/vm/name", "guest", "/vm/uuid", "1234"],
    );
    assert_eq!(ok(&d, &bin, "xenstore-read", &["/vm/name"]), "guest\n");
    assert_eq!(
        ok(&d, &bin, "xenstore-read", &["/vm/name", "/vm/uuid"]),
        "guest\n1234\n"
    );
    // A missing key: the tool's own error, exit 1.
    let out = run(&d, &bin, "xenstore-read", &["/vm/missing"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("couldn't read path /vm/missing"));
    // Relative paths resolve under /local/domain/0 for socket clients.
    ok(&d, &bin, "xenstore-write", &["rel", "r"]);
    assert_eq!(
        ok(&d, &bin, "xenstore-read", &["/local/domain/0/rel"]),
        "r\n"
    );
    assert_eq!(ok(&d, &bin, "xenstore-list", &["/vm"]), "name\nuuid\n");
    assert_eq!(
        ok(&d, &bin, "xenstore-ls", &["/vm"]),
        "name = \"guest\"\nuuid = \"1234\"\n"
    );
    ok(&d, &bin, "xenstore-exists", &["/vm/uuid"]);
    assert!(
        !run(&d, &bin, "xenstore-exists", &["/vm/nope"])
            .status
            .success()
    );
    ok(&d, &bin, "xenstore-chmod", &["/vm/uuid", "n3", "r4"]);
    let ls = ok(&d, &bin, "xenstore-ls", &["-p", "/vm"]);
    assert!(ls.contains("(n3,r4)"), "{ls}");
    ok(&d, &bin, "xenstore-rm", &["/vm/uuid"]);
    assert!(
        !run(&d, &bin, "xenstore-exists", &["/vm/uuid"])
            .status
            .success()
    );
    assert_eq!(ok(&d, &bin, "xenstore-list", &["/vm"]), "name\n");
    // A watch: the immediate event, then one per change.
    let mut w = d
        .cmd(&bin.join("xenstore-watch"))
        .args(["-n", "3", "/vm"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Changes until the watcher has seen enough (it may register late).
    let t = Instant::now();
    let mut i = 0;
    while w.try_wait().unwrap().is_none() {
        assert!(t.elapsed() < Duration::from_secs(30), "watch never ended");
        ok(&d, &bin, "xenstore-write", &["/vm/name", &format!("v{i}")]);
        i += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = w.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0], "/vm");
    assert!(lines[1..].iter().all(|l| l == "/vm/name"), "{lines:?}");
}

#[test]
fn xen_test_xenstore_passes() {
    let Some(prog) = test_xenstore() else {
        return skip("test-xenstore (xen-utils-4.17)");
    };
    let d = Daemon::start("suite");
    let out = d.cmd(&prog).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "test-xenstore failed: {}\n{text}",
        out.status
    );
    // Every test of the suite ran and reported its time.
    for name in [
        "read 1",
        "read 2000",
        "write 1",
        "write 2000",
        "dir",
        "rm node",
        "rm dir",
        "ta empty",
        "ta empty x",
        "ta rmw",
        "ta rmw x",
        "ta err",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(name) && l.contains(" ns")),
            "`{name}` missing from:\n{text}"
        );
    }
    // Its own iteration count too (-i 20).
    let out = d.cmd(&prog).args(["-i", "20"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
