//! End-to-end cases for real devices under the service domain (issue 17),
//! on QEMU (AMD SVM), with the options of `cargo xtask run --linux`:
//!
//! - `qemu-svm-linux-disk-file`: a disk file on QEMU's virtio-blk
//!   (`--disk-file`), assigned to the service domain, is the Linux
//!   domain's `xvda` and its root. Boot 1 writes `/keep` (a known hash,
//!   [`KEEP_SHA256`]) and the whole machine powers off; boot 2, a new QEMU
//!   on the same file, reads the same hash. `/init` appends a line per
//!   boot to `/pvh-boots`. On the host afterwards: `e2fsck -fn` finds the
//!   file system clean, and `debugfs` reads two lines from `/pvh-boots` and
//!   `/keep`'s bytes with that hash.
//! - `qemu-svm-linux-uplink`: a virtio-net device on QEMU's user network
//!   (`--net user,hostfwd=...`) is the service domain's switch's uplink; a
//!   Linux domain's busybox `httpd` (`pvhhttpd`) serves 4 MiB that the
//!   host fetches through `hostfwd` on 127.0.0.1 ([`crate::uplink`]), hash
//!   checked against the one the guest printed; before that it pings QEMU's
//!   gateway 10.0.2.2 through the uplink.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{
    Ctx, DIRECTMAP_MIB, Module, PassThrough, QEMU_EXIT_SUCCESS, RunOptions, Vendor,
    attach_disk_file, attach_uplink, boot_case, linux_files, linux_plan_with, selected, target_dir,
};
use crate::linux::KEEP_SHA256;
use crate::uplink;

/// The case names, in the order they run.
pub(super) const CASES: &[&str] = &["qemu-svm-linux-disk-file", "qemu-svm-linux-uplink"];

/// Runs the cases `filter` selects.
pub(super) fn run(ctx: &mut Ctx, image: &Path, filter: Option<&str>) -> Result<(), String> {
    if !CASES.iter().any(|c| selected(filter, c)) {
        return Ok(());
    }
    let (kernel, initrd) = linux_files();
    let root = crate::linux::root_image_path();
    if !kernel.exists() || !initrd.exists() || !root.exists() {
        if std::env::var("PVH_REQUIRE_LINUX").is_ok_and(|v| v == "1") {
            return Err("PVH_REQUIRE_LINUX=1 but no cached kernel: run `cargo xtask linux`".into());
        }
        eprintln!("e2e: device cases skipped (run `cargo xtask linux` first)");
        return Ok(());
    }
    if selected(filter, CASES[0]) {
        disk_file(ctx, image)?;
    }
    if selected(filter, CASES[1]) {
        uplink_case(ctx, image)?;
    }
    Ok(())
}

/// One Linux domain (256 MiB, 1 vCPU) and the service domain with
/// `devices`, `words` for `/init`.
fn options(words: &str, devices: PassThrough) -> Result<RunOptions, String> {
    let modules: Vec<Module> =
        linux_plan_with(1, 256, 1, true, words, &[], false, devices.uplink, devices)?;
    Ok(RunOptions {
        modules,
        mem_mib: 512 + DIRECTMAP_MIB,
        smp: 1,
        timeout: Some(Duration::from_secs(600)),
        ..Default::default()
    })
}

fn disk_file(ctx: &mut Ctx, image: &Path) -> Result<(), String> {
    let name = CASES[0];
    let path = target_dir().join("e2e-disk-file.img");
    // A new disk each time: boot 1 must find no /keep and no /pvh-boots.
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", path.display())),
    }
    let start = Instant::now();
    let mut serial = String::new();
    let mut missing = Vec::new();
    for boot in 1..=2 {
        let mut o = options(
            "pvhkeep",
            PassThrough {
                disk: true,
                uplink: false,
            },
        )?;
        attach_disk_file(&mut o, &path)?;
        let out = boot_case(ctx, image, &mut o, name)?;
        if out.status != Some(QEMU_EXIT_SUCCESS) {
            missing.push(format!("boot {boot}: the success exit status"));
        }
        serial.push_str(&format!("\n=== {name}: boot {boot} (a new QEMU) ===\n"));
        serial.push_str(&out.serial);
    }
    // The file on the host, after both machines are gone.
    let fsck = Command::new(tool("e2fsck"))
        .arg("-fn")
        .arg(&path)
        .output()
        .map_err(|e| format!("e2fsck (apt-get install e2fsprogs): {e}"))?;
    serial.push_str(&format!(
        "\n=== host: e2fsck -fn: {} ===\n{}",
        fsck.status,
        String::from_utf8_lossy(&fsck.stdout)
    ));
    if !fsck.status.success() {
        missing.push(format!("e2fsck -fn on the disk file: {}", fsck.status));
    }
    let boots = debugfs_cat(&path, "/pvh-boots")?;
    let text = String::from_utf8_lossy(&boots).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    serial.push_str(&format!(
        "\n=== host: /pvh-boots ===\n{}\n",
        lines.join("\n")
    ));
    if lines.len() != 2 || !lines.iter().all(|l| l.starts_with("boot ")) {
        missing.push(format!("two boot lines in /pvh-boots, not {lines:?}"));
    }
    let keep = uplink::sha256(&debugfs_cat(&path, "/keep")?)?;
    if keep != KEEP_SHA256 {
        missing.push(format!("/keep on the host hashes to {keep}"));
    }
    eprintln!(
        "e2e: {name} ran in {:.1} s (two machines)",
        start.elapsed().as_secs_f64()
    );
    let written = format!("(d2) PVH-LINUX-INIT: /keep written: sha256 {KEEP_SHA256}");
    let read = format!("(d2) PVH-LINUX-INIT: /keep reads back: sha256 {KEEP_SHA256}");
    let expect = [
        "(d1) service-domain: DMA region ",
        "(d1) service-domain: 00:04.0: virtio-blk, 32 MiB",
        "(d1) service-domain: d2 xvda: virtio-blk, 32 MiB",
        "(d2) PVH-LINUX-INIT: switching root to /dev/xvda",
        "(d2) PVH-LINUX-INIT: /pvh-boots: 1 lines",
        &written,
        "(d2) PVH-LINUX-INIT: fsck.ext4 -fn /dev/xvda: clean",
        "all domains shut down (cleanly)",
        "=== qemu-svm-linux-disk-file: boot 2 (a new QEMU) ===",
        "(d2) PVH-LINUX-INIT: /pvh-boots: 2 lines",
        &read,
    ];
    ctx.record(
        name,
        Vendor::Amd,
        &expect,
        super::Outcome {
            serial,
            status: Some(QEMU_EXIT_SUCCESS),
        },
        missing,
    );
    Ok(())
}

/// `e2fsck`/`debugfs` from the PATH or /sbin (Debian's root-only
/// directories are not always on a user's PATH).
fn tool(name: &str) -> String {
    ["/sbin", "/usr/sbin"]
        .iter()
        .map(|d| format!("{d}/{name}"))
        .find(|p| Path::new(p).exists())
        .unwrap_or_else(|| name.to_string())
}

/// A file's bytes from an ext4 image, by `debugfs -R "cat PATH"`.
fn debugfs_cat(image: &Path, file: &str) -> Result<Vec<u8>, String> {
    let out = Command::new(tool("debugfs"))
        .arg("-R")
        .arg(format!("cat {file}"))
        .arg(image)
        .output()
        .map_err(|e| format!("debugfs (apt-get install e2fsprogs): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "debugfs cat {file}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out.stdout)
}

fn uplink_case(ctx: &mut Ctx, image: &Path) -> Result<(), String> {
    let name = CASES[1];
    let port = uplink::free_port()?;
    let mut o = options(
        "pvhping=10.0.2.2 pvhhttpd",
        PassThrough {
            disk: false,
            uplink: true,
        },
    )?;
    attach_uplink(
        &mut o,
        &format!(",hostfwd=tcp:127.0.0.1:{port}-10.0.2.15:80"),
    );
    let start = Instant::now();
    let deadline = start + Duration::from_secs(540);
    let client = std::thread::spawn(move || uplink::fetch_blob(port, deadline));
    let out = boot_case(ctx, image, &mut o, name)?;
    let fetched = client
        .join()
        .map_err(|_| "the HTTP client thread panicked".to_string())?;
    if std::env::var_os("PVH_SERIAL").is_some() {
        eprintln!("--- console ---\n{}", out.serial);
    }
    let mut missing = Vec::new();
    if out.status != Some(QEMU_EXIT_SUCCESS) {
        missing.push("the success exit status".to_string());
    }
    match &fetched {
        Ok(f) => {
            eprintln!(
                "e2e: {name}: fetched {} bytes in {:.2} s ({:.2} MiB/s) through hostfwd 127.0.0.1:{port}",
                f.bytes,
                f.secs,
                f.bytes as f64 / f.secs / f64::from(1u32 << 20)
            );
            match uplink::served_sha256(&out.serial) {
                Some(h) if h == f.sha256 => {}
                other => missing.push(format!(
                    "the host fetched sha256 {}, the guest served {other:?}",
                    f.sha256
                )),
            }
        }
        Err(e) => missing.push(format!("the host's fetch: {e}")),
    }
    eprintln!("e2e: {name} ran in {:.1} s", start.elapsed().as_secs_f64());
    ctx.record(
        name,
        Vendor::Amd,
        &[
            "(d1) service-domain: DMA region ",
            "(d1) service-domain: 00:05.0: virtio-net ",
            "(d1) service-domain: 00:05.0: interrupt: pirq ",
            "(d2) PVH-LINUX-NET: eth0 00:16:3e:00:00:02 10.0.2.15/24",
            "(d2) PVH-LINUX-NET: default route via 10.0.2.2",
            "(d2) PVH-LINUX-NET: ping 10.0.2.2 ok",
            "(d2) PVH-LINUX-NET: httpd on port 80 serves /blob: 4194304 bytes, sha256 ",
            "(d2) PVH-LINUX-NET: httpd: /cgi-bin/done requested",
            "d2: shutdown (Poweroff)",
            "(d1) service-domain: netback: uplink: ",
            "all domains shut down (cleanly)",
        ],
        out,
        missing,
    );
    Ok(())
}
