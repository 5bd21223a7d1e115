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
//! - **Block I/O on a virtio-backed `xvda`**: `/init`'s `pvhblkbench`
//!   (sequential write and read, 4 KiB reads in a row and at random
//!   blocks) on a disk file that the service domain drives through
//!   virtio-blk and serves as `xvda`, against the same kernel under bare
//!   QEMU with a copy of the same file on virtio-blk. Under
//!   `-icount shift=0` (instructions) and without (guest seconds).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::figures::{BLK_MIB, BOCHS_TIMEOUT, BlkBench, blk_disk, icount, say, timed};
use crate::image::{
    self, DIRECTMAP_MIB, PassThrough, RunOptions, attach_disk_file, attach_uplink, linux_files,
    linux_plan_with,
};
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

/// One bare QEMU run of `pvhblkbench` on a fresh copy of the bench disk
/// (virtio-blk, QEMU's default cache mode as `--disk-file`).
fn block_bare(icounted: bool) -> Result<Option<BlkBench>, String> {
    let disk = blk_disk()?;
    let (kernel, initrd) = linux_files();
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-accel", "tcg", "-m", "512", "-smp", "1"])
        .args(if icounted { icount() } else { Vec::new() })
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args([
            "-append",
            &format!("console=ttyS0 pvhblkbench={BLK_MIB}"),
            "-nographic",
        ])
        .arg("-drive")
        .arg(format!("file={},if=none,id=d0,format=raw", disk.display()))
        .args(["-device", "virtio-blk-pci,drive=d0"]);
    let t = timed(
        c,
        &["PVH-LINUX-INIT: blkbench n="],
        BOCHS_TIMEOUT,
        Duration::from_secs(5),
    )?;
    let b = BlkBench::parse(&t.serial);
    if b.is_none() {
        eprintln!("figures: block (bare QEMU) output:\n{}", t.serial);
    }
    Ok(b)
}

/// One run of ours: `pvhblkbench` from the Linux domain, its `xvda` the
/// bench disk on virtio-blk driven by the service domain (as
/// `cargo xtask run --linux --disk-file`).
fn block_ours(image: &Path, icounted: bool) -> Result<Option<BlkBench>, String> {
    let disk = blk_disk()?;
    let devices = PassThrough {
        disk: true,
        uplink: false,
    };
    let mut o = RunOptions {
        smp: 1,
        modules: linux_plan_with(
            1,
            256,
            1,
            true,
            &format!("pvhblkbench={BLK_MIB}"),
            &[],
            false,
            false,
            devices,
        )?,
        mem_mib: 512 + DIRECTMAP_MIB,
        timeout: Some(BOCHS_TIMEOUT),
        extra_qemu_args: if icounted { icount() } else { Vec::new() },
        ..Default::default()
    };
    attach_disk_file(&mut o, &disk)?;
    let serial = image::boot_qemu(image, &o, false)?.serial;
    let b = BlkBench::parse(&serial);
    if b.is_none() {
        eprintln!("figures: block (ours, virtio-blk) output:\n{serial}");
    }
    Ok(b)
}

/// One run of ours: the Linux domain's `pvhhttpd` behind the service
/// domain's switch and virtio-net uplink (as `cargo xtask run --linux
/// --net user,hostfwd=...`), fetched by the host.
pub fn http_ours(image: &Path) -> Result<(String, Fetched), String> {
    let port = uplink::free_port()?;
    let devices = PassThrough {
        disk: false,
        uplink: true,
    };
    let mut o = RunOptions {
        smp: 1,
        modules: linux_plan_with(1, 256, 1, true, "pvhhttpd", &[], false, true, devices)?,
        mem_mib: 512 + DIRECTMAP_MIB,
        timeout: Some(DEADLINE),
        ..Default::default()
    };
    attach_uplink(
        &mut o,
        &format!(",hostfwd=tcp:127.0.0.1:{port}-10.0.2.15:80"),
    );
    let image = image.to_path_buf();
    let machine = std::thread::spawn(move || image::boot_qemu(&image, &o, false));
    let fetched = uplink::fetch_blob(port, Instant::now() + DEADLINE);
    let serial = machine
        .join()
        .map_err(|_| "the QEMU thread panicked".to_string())??
        .serial;
    if std::env::var_os("PVH_SERIAL").is_some() {
        eprintln!("--- console ---\n{serial}");
    }
    match fetched {
        Ok(f) => Ok((serial, f)),
        Err(e) => Err(format!("{e}\n--- console ---\n{serial}")),
    }
}

/// One figure of a [`BlkBench`] (the random reads are optional).
type Span = fn(&BlkBench) -> Option<f64>;

/// Runs of each, alternating.
const RUNS: usize = 3;

/// `--devices-only`: the figures of the module doc.
pub fn figures(image: &Path, out: &mut String, missing: &mut Vec<String>) -> Result<(), String> {
    // The kernel, the initramfs and its /init up to date.
    crate::linux::linux(&[])?;
    let mut ours = Vec::new();
    let mut bare = Vec::new();
    for run in 1..=RUNS {
        for (side, v) in [("ours", &mut ours), ("bare QEMU", &mut bare)] {
            let r = if side == "ours" {
                http_ours(image)
            } else {
                http_bare()
            };
            match r.and_then(|(serial, f)| check_hash(&serial, &f).map(|()| f)) {
                Ok(f) => v.push(f),
                Err(e) => eprintln!("figures: HTTP run {run} ({side}): {e}"),
            }
        }
    }
    say(
        out,
        format!(
            "HTTP from a Linux guest's busybox httpd to the host through QEMU's hostfwd (4 MiB, sha256 checked; QEMU TCG without icount, 1 CPU; host seconds of the GET; {RUNS} runs each, alternating; ours: xen-netfront, the service domain's switch and virtio-net uplink; bare: virtio-net):"
        ),
    );
    let show = |v: &[Fetched]| {
        v.iter()
            .map(|f| format!("{:.2} s ({:.1} MiB/s)", f.secs, rate(f)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    say(out, format!("  ours:      {}", show(&ours)));
    say(out, format!("  bare QEMU: {}", show(&bare)));
    if ours.is_empty() || bare.is_empty() {
        missing.push("the HTTP figures".into());
    } else {
        let median = |v: &[Fetched]| {
            let mut r: Vec<f64> = v.iter().map(rate).collect();
            r.sort_by(f64::total_cmp);
            r[r.len() / 2]
        };
        say(
            out,
            format!(
                "  median rate ours / bare: {:.2}x",
                median(&ours) / median(&bare)
            ),
        );
    }
    for icounted in [false, true] {
        let mut ours = Vec::new();
        let mut bare = Vec::new();
        for run in 1..=2 {
            match block_ours(image, icounted)? {
                Some(b) => ours.push(b),
                None => eprintln!("figures: block run {run} (ours) failed"),
            }
            match block_bare(icounted)? {
                Some(b) => bare.push(b),
                None => eprintln!("figures: block run {run} (bare) failed"),
            }
        }
        say(
            out,
            format!(
                "block I/O on a virtio-backed xvda ({}; {BLK_MIB} MiB each way O_DIRECT in 1 MiB blocks, 1024 4 KiB reads in a row, 256 at random blocks; 2 runs each, alternating; ours: blkfront -> blkback -> virtio-blk in the service domain; bare: the same file on virtio-blk):",
                if icounted {
                    "QEMU -icount shift=0: guest seconds are instructions"
                } else {
                    "QEMU TCG without icount: guest seconds"
                }
            ),
        );
        if ours.is_empty() || bare.is_empty() {
            say(out, "  no blkbench line (run failed?)".into());
            missing.push(format!("the block figures (icount: {icounted})"));
            continue;
        }
        let best = |v: &[BlkBench], f: Span| v.iter().filter_map(f).fold(f64::INFINITY, f64::min);
        let fields: [(&str, Span); 4] = [
            ("write", |b| Some(b.write)),
            ("read", |b| Some(b.read)),
            ("4 KiB in a row", |b| Some(b.read4k)),
            ("4 KiB random", |b| b.rand4k),
        ];
        for (name, f) in fields {
            let (o, b) = (best(&ours, f), best(&bare, f));
            say(
                out,
                format!(
                    "  {name:<15} ours {o:.2} s, bare {b:.2} s (best of each): ours at {:.2}x bare's speed",
                    b / o
                ),
            );
        }
    }
    Ok(())
}
