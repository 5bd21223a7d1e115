//! Figures for real devices under the service domain (issue 17), in one
//! run each, ours beside bare QEMU (`cargo xtask bench --devices-only`):
//!
//! - **HTTP from a guest to the host**: a Linux guest's busybox `httpd`
//!   serves 4 MiB (`/init`'s `pvhhttpd`) that a client on the host
//!   ([`crate::uplink`]) fetches through QEMU's `hostfwd` on 127.0.0.1.
//!   Ours: the guest's xen-netfront, the service domain's switch and its
//!   virtio-net uplink (`cargo xtask run --linux --net user`). Bare: the
//!   same kernel and initramfs under QEMU with virtio-net on the user
//!   network. Host time of the GET, QEMU TCG without icount (the user
//!   network's timers are host time).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::image::linux_files;
use crate::uplink::{self, Fetched};

/// How long one guest may take from QEMU's start to the end of the fetch.
const DEADLINE: Duration = Duration::from_secs(900);

/// One bare QEMU run of `pvhhttpd`: the guest's console and the fetch.
pub fn http_bare() -> Result<(String, Fetched), String> {
    let (kernel, initrd) = linux_files();
    let port = uplink::free_port()?;
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-accel", "tcg", "-m", "512", "-smp", "1"])
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initrd)
        .args([
            "-append",
            "console=ttyS0 pvhip=10.0.2.15/24 pvhgw=10.0.2.2 pvhhttpd",
            "-nographic",
            "-no-reboot",
        ])
        .args(["-netdev", &uplink::user_netdev("n0", port)])
        .args(["-device", "virtio-net-pci,netdev=n0"]);
    http_run(c, port)
}

/// Runs `c` (a QEMU whose guest serves `pvhhttpd` at 127.0.0.1:`port`)
/// while the host fetches; QEMU is killed at the deadline.
pub fn http_run(mut c: Command, port: u16) -> Result<(String, Fetched), String> {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    eprintln!("\n==> {c:?}");
    let deadline = Instant::now() + DEADLINE;
    let child = c.spawn().map_err(|e| format!("cannot start QEMU: {e}"))?;
    let pid = child.id();
    let waiter = std::thread::spawn(move || child.wait_with_output());
    let fetched = uplink::fetch_blob(port, deadline);
    // The guest powers off after /cgi-bin/done; a failed fetch leaves it
    // waiting, so QEMU is stopped here (the waiter then returns).
    let stop_at = Instant::now() + Duration::from_secs(if fetched.is_ok() { 300 } else { 0 });
    while !waiter.is_finished() && Instant::now() < stop_at {
        std::thread::sleep(Duration::from_millis(200));
    }
    if !waiter.is_finished() {
        let _ = Command::new("kill").arg(pid.to_string()).status();
    }
    let out = waiter
        .join()
        .map_err(|_| "the QEMU waiter panicked".to_string())?
        .map_err(|e| format!("QEMU: {e}"))?;
    let serial = String::from_utf8_lossy(&out.stdout).into_owned();
    match fetched {
        Ok(f) => Ok((serial, f)),
        Err(e) => Err(format!("{e}\n--- console ---\n{serial}")),
    }
}

/// The HTTP figure line for one fetch.
pub fn rate(f: &Fetched) -> f64 {
    f.bytes as f64 / f.secs / f64::from(1u32 << 20)
}

/// Checks the fetched hash against the one the guest printed.
pub fn check_hash(serial: &str, f: &Fetched) -> Result<(), String> {
    match uplink::served_sha256(serial) {
        Some(h) if h == f.sha256 => Ok(()),
        Some(h) => Err(format!("fetched sha256 {}, the guest served {h}", f.sha256)),
        None => Err("the guest printed no /blob hash".into()),
    }
}

/// `--devices-only`: the figures of the module doc.
pub fn figures(_image: &Path, out: &mut String, missing: &mut Vec<String>) -> Result<(), String> {
    // The kernel, the initramfs and its /init up to date.
    crate::linux::linux(&[])?;
    match http_bare() {
        Ok((serial, f)) => {
            check_hash(&serial, &f)?;
            crate::figures::say(
                out,
                format!(
                    "HTTP guest -> host, 4 MiB, bare QEMU (virtio-net, user network): {:.2} s, {:.2} MiB/s",
                    f.secs,
                    rate(&f)
                ),
            );
        }
        Err(e) => {
            eprintln!("figures: bare HTTP: {e}");
            missing.push("HTTP bare QEMU".into());
        }
    }
    Ok(())
}
