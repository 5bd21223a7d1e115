//! The figures of `cargo xtask bench` (issues 7 and 9), printed and written
//! to `target/figures.txt`; docs/figures.md explains each one.
//!
//! Under QEMU's `-icount shift=0` the virtual clock advances one nanosecond
//! per instruction executed and the TSC follows it (one tick per ns), so
//! TSC ticks read by a guest count instructions; the test guest checks this
//! against a loop of known length (`BENCH calibration`).
//!
//! - image size: the release ELF as built, and stripped (`objcopy
//!   --strip-all`); goal: under 512 KiB stripped.
//! - boot: the hypervisor by PVH `-kernel` with the test guest as its one
//!   module; the guest's first instruction reads the TSC (`BENCH
//!   first_tsc`): instructions from power-on (QEMU resets the TSC to 0 and
//!   our hypervisor gives guests no TSC offset). The firmware part (QEMU's
//!   SeaBIOS and PVH option ROM) is taken from the hypervisor's own entry
//!   TSC when it prints `hv_entry_tsc=N`, else estimated by booting the test
//!   guest directly on the same machine. Goal: under 2 million instructions
//!   from hypervisor entry to the first guest instruction.
//! - hypercall and event round trip: two test-guest domains from a GRUB
//!   ISO, `role=bench peer=2` and `role=bench-pong peer=1`.
//! - xenstore round trip: the service domain and a test guest with
//!   `role=xs-bench`, which times `XS_READ` of one node over its ring
//!   (request, notify, `SCHEDOP_poll` for the reply's event, read).
//! - Linux (when `cargo xtask linux` has cached the kernel): wall-clock time
//!   from starting QEMU to the `/init` marker, our hypervisor with Linux as
//!   a PVH domain against QEMU booting the same kernel and initramfs itself,
//!   alternating, [`LINUX_RUNS`] each, without icount. Goal: at most 1.5x.
//! - xenstore from Linux (issue 14): the service domain and one Linux
//!   whose `/init` runs `xenstore-read name` [`XS_READS`] times (a process
//!   each), then reads it ten times as often in one process, timed by
//!   `/proc/uptime`; and the time from the hypervisor's banner to Linux's
//!   first xenstore request (its xenbus probe), by the TSC the hypervisor
//!   and the service domain log. Under QEMU (`-icount shift=0`, one CPU)
//!   and Bochs VMX (one CPU), where TSC ticks count instructions; guest
//!   seconds become instructions by the TSC rate the hypervisor measured.
//! - Bochs (issue 8): the same bench domains, xenstore pair and boot, under Bochs
//!   on Intel VMX (`corei7_skylake_x`) and AMD SVM with NRIP save
//!   (`ryzen`), one CPU: there Bochs ticks its clock, and so the TSC, once
//!   per instruction executed (and per `rep` iteration). Then a table of
//!   the three machines side by side, in instructions. `--no-bochs` skips
//!   this part, `--bochs-only` does only this part (both read from the
//!   command line; with criterion, give `--figures-only` too).
//!   `--xenstore-only` measures only the xenstore figures, `--boot-only`
//!   only the QEMU boot figure.
//! - Block I/O from Linux (QEMU `-icount shift=0`, one CPU, alternating
//!   runs): Linux on our hypervisor booted from a Xen virtual disk (the
//!   service domain's blkback, once with grant copy and once with
//!   persistent grants: `blkback.feature_persistent=0/1` on the service
//!   domain's command line) against the same kernel and initramfs under
//!   bare QEMU booted from the same image as a virtio-blk disk
//!   (`-drive if=virtio,format=raw,cache=unsafe`). `/init`'s `pvhblkbench`
//!   writes [`BLK_MIB`] MiB to a file and reads as much of the device
//!   (`O_DIRECT`, 1 MiB blocks), then 1024 single-block (4 KiB) reads;
//!   under icount a guest nanosecond is one instruction, so the figures
//!   are instructions per MiB and per 4 KiB read, side by side.
//!   `--block-only` measures only these.
//! - Network between two Linux guests (issue 16): two Linux domains on the
//!   service domain's switch (as the e2e case `qemu-svm-linux-net`)
//!   against two bare QEMU Linux guests (the same kernel and initramfs,
//!   virtio-net) joined by QEMU's `-netdev socket`. Without icount,
//!   alternating, [`NET_RUNS`] each: the average of 20 pings and
//!   [`NET_MIB`] MiB over TCP with busybox `nc` (sha256 checked), plus
//!   the events netback sent per packet. Under `-icount shift=0`, one run
//!   each: [`NET_FLOOD`] pings (`ping -A`) at 56 and 1472 bytes, in
//!   instructions per packet (ours: the sender's elapsed guest time, the
//!   whole one-CPU machine; each guest's busy time, uptime less idle, is
//!   its own share; bare: the two guests' busy times).
//!   `--net-only` measures only these.

use crate::image::{
    self, LINUX_MARKER, Module, QEMU_EXIT_SUCCESS, RunOptions, STOP_OK, Vendor, build_image,
    build_test_guest, linux_files, linux_modules, linux_plan, service_module,
};
use crate::root;
use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// xenstore reads of the Linux figure.
const XS_READS: u32 = 1000;
/// Runs of each Linux boot (alternating ours and bare QEMU).
const LINUX_RUNS: usize = 3;
/// The image size goal (stripped).
const IMAGE_GOAL: u64 = 512 * 1024;
/// The boot goal: hypervisor entry to the first guest instruction.
const BOOT_GOAL: u64 = 2_000_000;
/// The Linux goal: ours over bare QEMU.
const LINUX_GOAL: f64 = 1.5;
/// What the hypervisor prints first (crates/hypervisor/src/main.rs).
const HV_BANNER: &str = "hypervisor 0.1.0 starting";
/// The Bochs CPU models of the side-by-side table, with their column names.
const BOCHS_CPUS: [(&str, &str); 2] = [
    ("corei7_skylake_x", "Bochs VMX"),
    ("ryzen", "Bochs SVM+NRIP"),
];
/// Host CPUs of the Bochs runs: with one, Bochs' clock is exactly one tick
/// per instruction (with two it advances by the mean of the CPUs' counts,
/// a halted CPU counting 16 per turn: not convertible).
const BOCHS_SMP: u32 = 1;
/// The longest a Bochs run may take (a loaded 2-core host).
pub(crate) const BOCHS_TIMEOUT: Duration = Duration::from_secs(1800);

/// One machine's column of the side-by-side table, in instructions.
#[derive(Default)]
struct Column {
    name: String,
    hypercall: Option<u64>,
    event: Option<u64>,
    boot: Option<u64>,
    xenstore: Option<u64>,
}

pub(crate) fn icount() -> Vec<String> {
    vec!["-icount".into(), "shift=0".into()]
}

/// `key=value` numbers of the first `BENCH <name> ...` line (`name` empty:
/// a line whose first word is already `key=value`), or of the `nth` such.
fn bench_line(serial: &str, name: &str, nth: usize) -> Option<Vec<(String, u64)>> {
    serial
        .lines()
        .filter_map(|l| l.split_once("BENCH ").map(|(_, rest)| rest))
        .filter(|rest| {
            let first = rest.split_whitespace().next().unwrap_or("");
            if name.is_empty() {
                first.contains('=')
            } else {
                first == name
            }
        })
        .nth(nth)
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|w| w.split_once('='))
                .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
                .collect()
        })
}

fn get(serial: &str, name: &str, nth: usize, key: &str) -> Option<u64> {
    if name.is_empty() {
        // `BENCH key=N` lines come from several sources (the hypervisor's
        // hv_entry_tsc, each domain's first_tsc): the nth that has `key`.
        return (0..)
            .map_while(|i| bench_line(serial, "", i))
            .filter_map(|l| l.into_iter().find(|(k, _)| k == key).map(|(_, v)| v))
            .nth(nth);
    }
    bench_line(serial, name, nth)?
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// The number after `key=` anywhere in the output (e.g. `hv_entry_tsc=`).
fn token(serial: &str, key: &str) -> Option<u64> {
    let at = serial.find(key)? + key.len();
    let digits: String = serial[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Appends a line to the report and prints it.
pub fn say(out: &mut String, line: String) {
    println!("{line}");
    out.push_str(&line);
    out.push('\n');
}

fn kib(n: u64) -> String {
    format!("{n} bytes ({:.1} KiB)", n as f64 / 1024.0)
}

fn met(ok: bool) -> &'static str {
    if ok { "goal met" } else { "goal NOT met" }
}

/// Thousands separators for instruction counts.
fn num(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The figures; the report goes to stdout and `target/figures.txt`. Fails
/// (after writing what it has) if a figure could not be measured.
/// `--no-bochs` and `--bochs-only` anywhere on xtask's command line skip
/// the Bochs part or everything else.
pub fn figures() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    let (qemu_part, bochs_part) = (!has("--bochs-only"), !has("--no-bochs"));
    let image = build_image()?;
    if has("--block-only") {
        let mut out = String::new();
        let mut missing = Vec::new();
        linux_block(&image, &mut out, &mut missing)?;
        return if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("figures not measured: {missing:?}"))
        };
    }
    if has("--devices-only") {
        let mut out = String::new();
        let mut missing = Vec::new();
        crate::devices::figures(&image, &mut out, &mut missing)?;
        return if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("figures not measured: {missing:?}"))
        };
    }
    if has("--net-only") {
        let mut out = String::new();
        let mut missing = Vec::new();
        linux_net(&image, &mut out, &mut missing)?;
        return if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("figures not measured: {missing:?}"))
        };
    }
    if has("--smp-only") {
        let guest = build_test_guest()?;
        let mut out = String::new();
        let mut missing = Vec::new();
        smp_rate(&image, &guest, &mut out, &mut missing)?;
        return if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("figures not measured: {missing:?}"))
        };
    }
    if has("--xenstore-only") {
        let mut out = String::new();
        let mut missing = Vec::new();
        for vendor in [Vendor::Amd, Vendor::Intel] {
            if (vendor == Vendor::Amd && qemu_part) || (vendor == Vendor::Intel && bochs_part) {
                linux_xenstore(&image, vendor, &mut out, &mut missing)?;
            }
        }
        return if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("figures not measured: {missing:?}"))
        };
    }
    let guest = build_test_guest()?;
    let mut out = String::new();
    let mut missing: Vec<String> = Vec::new();
    say(
        &mut out,
        "== figures (cargo xtask bench; docs/figures.md) ==".into(),
    );
    if has("--boot-only") {
        qemu_boot(&image, &guest, &mut out, &mut missing)?;
        return if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("figures not measured: {missing:?}"))
        };
    }
    if has("--xen-only") {
        let (_, first) = qemu_boot(&image, &guest, &mut out, &mut missing)?;
        let [hypercall, event, loopback, vcpu] =
            hypercall_and_event(&image, &guest, &mut out, &mut missing)?;
        let ours = crate::xen::Ours {
            hypercall,
            event,
            loopback,
            vcpu,
            power_on: first,
        };
        crate::xen::side_by_side(&guest, &ours, &mut out, &mut missing)?;
        return if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("figures not measured: {missing:?}"))
        };
    }

    let mut qemu = Column {
        name: "QEMU SVM".into(),
        ..Default::default()
    };
    if qemu_part {
        image_size(&image, &mut out)?;
        let first;
        (qemu.boot, first) = qemu_boot(&image, &guest, &mut out, &mut missing)?;
        let [hypercall, event, loopback, vcpu] =
            hypercall_and_event(&image, &guest, &mut out, &mut missing)?;
        (qemu.hypercall, qemu.event) = (hypercall, event);
        let ours = crate::xen::Ours {
            hypercall: qemu.hypercall,
            event: qemu.event,
            loopback,
            vcpu,
            power_on: first,
        };
        crate::xen::side_by_side(&guest, &ours, &mut out, &mut missing)?;
        qemu.xenstore = xenstore_qemu(&image, &guest, &mut out, &mut missing)?;
        let (kernel, initrd) = linux_files();
        if kernel.exists() && initrd.exists() {
            linux_comparison(&image, &mut out, &mut missing)?;
            linux_xenstore(&image, Vendor::Amd, &mut out, &mut missing)?;
            linux_block(&image, &mut out, &mut missing)?;
            linux_net(&image, &mut out, &mut missing)?;
        } else {
            say(
                &mut out,
                "linux: skipped (no target/linux/vmlinux: run `cargo xtask linux`)".into(),
            );
        }
    }
    if bochs_part {
        let (kernel, initrd) = linux_files();
        if kernel.exists() && initrd.exists() {
            linux_xenstore(&image, Vendor::Intel, &mut out, &mut missing)?;
        }
        let mut columns = vec![qemu];
        for (cpu, name) in BOCHS_CPUS {
            columns.push(bochs_column(
                &image,
                &guest,
                cpu,
                name,
                &mut out,
                &mut missing,
            )?);
        }
        side_by_side(&columns, &mut out);
    }

    let path = root().join("target/figures.txt");
    std::fs::write(&path, &out).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("figures: written to {}", path.display());
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("figures not measured: {missing:?}"))
    }
}

/// The QEMU boot figure: hypervisor entry to the first guest instruction,
/// in instructions, and power-on to the first guest instruction.
fn qemu_boot(
    image: &Path,
    guest: &Path,
    out: &mut String,
    missing: &mut Vec<String>,
) -> Result<(Option<u64>, Option<u64>), String> {
    // Boot: hypervisor by PVH -kernel, the test guest as its module.
    let boot_opts = RunOptions {
        modules: vec![Module::plain(guest.to_path_buf())],
        timeout: Some(Duration::from_secs(600)),
        extra_qemu_args: icount(),
        ..Default::default()
    };
    let run = image::boot_qemu(image, &boot_opts, false)?;
    let first = get(&run.serial, "", 0, "first_tsc");
    let hv_entry = token(&run.serial, "hv_entry_tsc=");
    // The firmware alone: the test guest booted directly on the same
    // machine (only needed when the hypervisor does not log its entry).
    let firmware = if hv_entry.is_none() {
        let bare_opts = RunOptions {
            debugcon: true,
            timeout: Some(Duration::from_secs(120)),
            extra_qemu_args: icount(),
            ..Default::default()
        };
        let bare = image::boot_qemu(guest, &bare_opts, false)?;
        get(&bare.serial, "", 0, "first_tsc")
    } else {
        None
    };
    say(
        out,
        format!(
            "boot (QEMU -icount shift=0, Multiboot -kernel, -m {} -smp {}, test guest as the one module):",
            boot_opts.mem_mib, boot_opts.smp
        ),
    );
    let Some(first) = first else {
        say(
            out,
            "  no `BENCH first_tsc` from the guest (boot failed?)".into(),
        );
        eprintln!("figures: boot run output:\n{}", run.serial);
        missing.push("boot to first guest instruction".into());
        return Ok((None, None));
    };
    say(
        out,
        format!(
            "  power-on to first guest instruction: {} instructions",
            num(first)
        ),
    );
    let (entry, how) = match (hv_entry, firmware) {
        (Some(e), _) => (e, "the hypervisor's hv_entry_tsc"),
        (None, Some(f)) => (
            f,
            "estimated: the test guest's own entry when QEMU boots it directly",
        ),
        (None, None) => {
            missing.push("the firmware's share of the boot".into());
            return Ok((None, Some(first)));
        }
    };
    let boot = first.saturating_sub(entry);
    say(
        out,
        format!(
            "  power-on to hypervisor entry: {} instructions ({how})",
            num(entry)
        ),
    );
    say(
        out,
        format!(
            "  hypervisor entry to first guest instruction: {} instructions (goal < {}: {})",
            num(boot),
            num(BOOT_GOAL),
            met(boot < BOOT_GOAL)
        ),
    );
    Ok((Some(boot), Some(first)))
}

fn image_size(image: &Path, out: &mut String) -> Result<(), String> {
    let elf = std::fs::metadata(image)
        .map_err(|e| format!("{}: {e}", image.display()))?
        .len();
    let stripped_path = root().join("target/image/hypervisor.stripped.elf");
    let st = Command::new("objcopy")
        .arg("--strip-all")
        .arg(image)
        .arg(&stripped_path)
        .status()
        .map_err(|e| format!("objcopy (apt-get install binutils): {e}"))?;
    if !st.success() {
        return Err(format!("objcopy --strip-all {} failed", image.display()));
    }
    let stripped = std::fs::metadata(&stripped_path)
        .map_err(|e| e.to_string())?
        .len();
    say(
        out,
        format!("image: ELF {}, stripped {}", kib(elf), kib(stripped)),
    );
    say(
        out,
        format!(
            "  stripped goal < 512 KiB (Xen 4.17: 2.5 MB): {}",
            met(stripped < IMAGE_GOAL)
        ),
    );
    Ok(())
}

/// The two bench domains of the hypercall and event figures (32 MiB, one
/// vCPU each, d1 two: it starts the second for the figure between two
/// vCPUs after its hypercall and loopback figures).
fn bench_modules(guest: &Path) -> Vec<Module> {
    let m = |vcpus: u32, cmd: &str| Module {
        path: guest.to_path_buf(),
        cmdline: format!("kernel mem=32M vcpus={vcpus} -- {cmd}"),
    };
    vec![m(2, "role=bench peer=2"), m(1, "role=bench-pong peer=1")]
}

/// `xen_version` calls each domain times for the SMP figure: about a second
/// of host time under TCG, so that the two domains' loops overlap.
const SMP_CALLS: u64 = 100_000;

/// Issue 18's QEMU figure: the aggregate `xen_version` rate of two
/// independent domains on `-smp 2`, each calling in a loop on its own CPU,
/// against one domain alone (goal >= 1.7x). No icount (it forces one
/// thread): TSC ticks follow host time. On multi-threaded TCG, where the
/// two CPUs run in parallel (QEMU's `cpu_clear_ignne` race can reset the
/// host, docs/architecture.md section 10; a run that resets is reported),
/// and on single-threaded TCG as the control, where they cannot.
fn smp_rate(
    image: &Path,
    guest: &Path,
    out: &mut String,
    missing: &mut Vec<String>,
) -> Result<(), String> {
    let module = || Module {
        path: guest.to_path_buf(),
        cmdline: format!("kernel mem=32M vcpus=1 -- role=bench calls={SMP_CALLS}"),
    };
    let run = |domains: usize, mttcg: bool| -> Result<Option<Vec<u64>>, String> {
        let o = RunOptions {
            modules: (0..domains).map(|_| module()).collect(),
            mem_mib: 512,
            smp: 2,
            mttcg,
            timeout: Some(Duration::from_secs(900)),
            ..Default::default()
        };
        let r = image::boot_qemu(image, &o, false)?;
        let means: Vec<u64> = (0..domains)
            .filter_map(|i| get(&r.serial, "hypercall", i, "mean_ticks"))
            .collect();
        if means.len() != domains {
            eprintln!("figures: SMP run output:\n{}", r.serial);
            return Ok(None);
        }
        Ok(Some(means))
    };
    say(
        out,
        format!(
            "SMP: aggregate hypercall rate (QEMU -smp 2, no icount, {SMP_CALLS} xen_version calls per domain, each domain 1 vCPU; two runs of each, alternating; TSC ticks per call):"
        ),
    );
    for (mttcg, what) in [(true, "multi-threaded TCG"), (false, "single-threaded TCG")] {
        let (mut alone, mut pair) = (Vec::new(), Vec::new());
        for _ in 0..2 {
            match run(1, mttcg)? {
                Some(m) => alone.push(m[0] as f64),
                None => missing.push(format!("SMP rate, one domain, {what}")),
            }
            match run(2, mttcg)? {
                Some(m) => pair.push(m.iter().map(|&t| 1.0 / t as f64).sum::<f64>()),
                None => missing.push(format!("SMP rate, two domains, {what}")),
            }
        }
        if alone.is_empty() || pair.is_empty() {
            say(out, format!("  {what}: not measured"));
            continue;
        }
        let one = 1.0 / mean(&alone);
        let two = mean(&pair);
        let goal = if mttcg {
            format!(" (goal >= 1.7x: {})", met(two / one >= 1.7))
        } else {
            String::new()
        };
        say(
            out,
            format!(
                "  {what}: one domain alone {:.0} ticks per call; two domains together {:.0} calls per million ticks against {:.0}: {:.2}x{goal}",
                mean(&alone),
                two * 1e6,
                one * 1e6,
                two / one
            ),
        );
    }
    Ok(())
}

/// The QEMU hypercall and event figures, in instructions: hypercall round
/// trip, event send and deliver to the other domain, and event send and
/// deliver within d1 over a loopback channel.
fn hypercall_and_event(
    image: &Path,
    guest: &Path,
    out: &mut String,
    missing: &mut Vec<String>,
) -> Result<[Option<u64>; 4], String> {
    let o = RunOptions {
        modules: bench_modules(guest),
        mem_mib: 512,
        timeout: Some(Duration::from_secs(900)),
        extra_qemu_args: icount(),
        ..Default::default()
    };
    let run = image::boot_qemu(image, &o, false)?;
    say(
        out,
        "hypercall and event (QEMU -icount shift=0, -smp 2, d1 role=bench peer=2, d2 role=bench-pong peer=1):"
            .into(),
    );
    let figures = bench_report(&run.serial, "", out, missing);
    let passed = ["(d1) VERDICT: PASS", "(d2) VERDICT: PASS"]
        .iter()
        .all(|v| run.serial.contains(v));
    if !passed || run.status != Some(QEMU_EXIT_SUCCESS) {
        say(
            out,
            format!(
                "  warning: the bench domains did not both pass and power off (status {:?})",
                run.status
            ),
        );
        eprintln!("figures: bench run output:\n{}", run.serial);
    }
    let loopback = get(&run.serial, "loopback", 0, "send_deliver_insns");
    if let Some(l) = loopback {
        say(
            out,
            format!(
                "  event sent and delivered within d1 (loopback channel, one vCPU): {} instructions",
                num(l)
            ),
        );
    }
    let vcpu = get(&run.serial, "vcpu", 0, "send_deliver_insns");
    match vcpu {
        Some(v) => say(
            out,
            format!(
                "  event sent to d1's other vCPU and delivered (half a round trip, SCHEDOP_poll wake-up): {} instructions",
                num(v)
            ),
        ),
        None => missing.push("event between two vCPUs".into()),
    }
    Ok([figures.hypercall, figures.event, loopback, vcpu])
}

/// The xenstore figure's domains: the service domain (d1) and one test
/// guest timing `XS_READ` round trips over its ring (d2, `role=xs-bench`).
fn xenstore_modules(guest: &Path) -> Result<Vec<Module>, String> {
    Ok(vec![
        service_module("")?,
        Module {
            path: guest.to_path_buf(),
            cmdline: "kernel name=xs-bench mem=32M vcpus=1 -- role=xs-bench".into(),
        },
    ])
}

/// Reports the `BENCH xenstore` line of an `xs-bench` run.
fn xenstore_report(
    s: &str,
    what: &str,
    out: &mut String,
    missing: &mut Vec<String>,
) -> Option<u64> {
    if let (Some(i), Some(t)) = (
        get(s, "calibration", 0, "insns"),
        get(s, "calibration", 0, "tsc_ticks"),
    ) {
        say(
            out,
            format!(
                "  calibration: {} instructions took {} TSC ticks ({:.4} ticks/instruction)",
                num(i),
                num(t),
                t as f64 / i as f64
            ),
        );
    }
    let passed = s.contains("(d2) CHECK xenstore_bench: PASS");
    match (
        get(s, "xenstore", 0, "roundtrip_insns"),
        get(s, "xenstore", 0, "roundtrip_ticks"),
        get(s, "xenstore", 0, "n"),
    ) {
        (Some(i), Some(t), Some(n)) if passed => {
            say(
                out,
                format!(
                    "  xenstore XS_READ round trip over the ring to the service domain (mean of {n}): {} instructions ({} ticks)",
                    num(i),
                    num(t)
                ),
            );
            Some(i)
        }
        _ => {
            say(
                out,
                "  no xenstore figure (the xs-bench domain failed?)".into(),
            );
            eprintln!("figures: xs-bench run output:\n{s}");
            missing.push(format!("xenstore round trip{what}"));
            None
        }
    }
}

/// The QEMU xenstore figure, in instructions per `XS_READ` round trip.
fn xenstore_qemu(
    image: &Path,
    guest: &Path,
    out: &mut String,
    missing: &mut Vec<String>,
) -> Result<Option<u64>, String> {
    let o = RunOptions {
        modules: xenstore_modules(guest)?,
        mem_mib: 512,
        timeout: Some(Duration::from_secs(900)),
        extra_qemu_args: icount(),
        ..Default::default()
    };
    let run = image::boot_qemu(image, &o, false)?;
    say(
        out,
        "xenstore (QEMU -icount shift=0, -smp 2, d1 the service domain, d2 role=xs-bench):".into(),
    );
    let v = xenstore_report(&run.serial, "", out, missing);
    if run.status != Some(QEMU_EXIT_SUCCESS) {
        say(
            out,
            format!(
                "  warning: the machine did not stop cleanly (status {:?})",
                run.status
            ),
        );
    }
    Ok(v)
}

/// What the bench domains printed, in instructions.
struct BenchFigures {
    hypercall: Option<u64>,
    event: Option<u64>,
    /// The first calibration: (instructions, TSC ticks).
    calibration: Option<(u64, u64)>,
}

/// Reports the `BENCH calibration`, `hypercall` and `event` lines of a
/// bench run; `what` names the machine in `missing`.
fn bench_report(s: &str, what: &str, out: &mut String, missing: &mut Vec<String>) -> BenchFigures {
    let calib = [0, 1].map(|i| {
        (
            get(s, "calibration", i, "insns"),
            get(s, "calibration", i, "tsc_ticks"),
        )
    });
    for (insns, ticks) in calib.iter() {
        if let (Some(i), Some(t)) = (insns, ticks) {
            say(
                out,
                format!(
                    "  calibration: {} instructions took {} TSC ticks ({:.4} ticks/instruction)",
                    num(*i),
                    num(*t),
                    *t as f64 / *i as f64
                ),
            );
        }
    }
    let calibration = match calib[0] {
        (Some(i), Some(t)) => Some((i, t)),
        _ => None,
    };
    let hypercall = match (
        get(s, "hypercall", 0, "mean_insns"),
        get(s, "hypercall", 0, "mean_ticks"),
        get(s, "hypercall", 0, "min_ticks"),
        get(s, "hypercall", 0, "n"),
    ) {
        (Some(i), Some(t), Some(min), Some(n)) => {
            say(
                out,
                format!(
                    "  hypercall round trip (xen_version(XENVER_version), mean of {n}): {} instructions ({} ticks; fastest single call {} ticks)",
                    num(i),
                    num(t),
                    num(min)
                ),
            );
            Some(i)
        }
        _ => {
            missing.push(format!("hypercall round trip{what}"));
            None
        }
    };
    let event = match (
        get(s, "event", 0, "roundtrip_insns"),
        get(s, "event", 0, "send_deliver_insns"),
        get(s, "event", 0, "n"),
    ) {
        (Some(rt), Some(half), Some(n)) => {
            say(
                out,
                format!(
                    "  event round trip to d2 and back (mean of {n}): {} instructions",
                    num(rt)
                ),
            );
            say(
                out,
                format!(
                    "  event sent to another domain and delivered (half): {} instructions",
                    num(half)
                ),
            );
            Some(half)
        }
        _ => {
            missing.push(format!("event send+deliver{what}"));
            None
        }
    };
    BenchFigures {
        hypercall,
        event,
        calibration,
    }
}

/// The Bochs figures on one CPU model: the bench domains, then the boot of
/// the test guest as the one module, each from a GRUB ISO on one CPU.
fn bochs_column(
    image: &Path,
    guest: &Path,
    cpu: &str,
    name: &str,
    out: &mut String,
    missing: &mut Vec<String>,
) -> Result<Column, String> {
    let what = format!(" ({name})");
    let mut col = Column {
        name: name.into(),
        ..Default::default()
    };
    let o = RunOptions {
        vendor: Vendor::Intel,
        bochs_cpu: cpu.into(),
        smp: BOCHS_SMP,
        modules: bench_modules(guest),
        mem_mib: 512,
        timeout: Some(BOCHS_TIMEOUT),
        ..Default::default()
    };
    let started = Instant::now();
    let run = image::boot_bochs(image, &o, false)?;
    say(
        out,
        format!(
            "hypercall and event ({name}: Bochs `cpu: model={cpu}, count={BOCHS_SMP}`, GRUB, d1 role=bench peer=2, d2 role=bench-pong peer=1; {:.0} s):",
            started.elapsed().as_secs_f64()
        ),
    );
    let figures = bench_report(&run.serial, &what, out, missing);
    (col.hypercall, col.event) = (figures.hypercall, figures.event);
    let passed = ["(d1) VERDICT: PASS", "(d2) VERDICT: PASS", STOP_OK]
        .iter()
        .all(|v| run.serial.contains(v));
    if !passed {
        say(
            out,
            "  warning: the bench domains did not both pass and power off".into(),
        );
        eprintln!("figures: {name} bench run output:\n{}", run.serial);
    }

    let o = RunOptions {
        vendor: Vendor::Intel,
        bochs_cpu: cpu.into(),
        smp: BOCHS_SMP,
        modules: xenstore_modules(guest)?,
        mem_mib: 512,
        timeout: Some(BOCHS_TIMEOUT),
        ..Default::default()
    };
    let started = Instant::now();
    let run = image::boot_bochs(image, &o, false)?;
    say(
        out,
        format!(
            "xenstore ({name}: Bochs `cpu: model={cpu}, count={BOCHS_SMP}`, GRUB, d1 the service domain, d2 role=xs-bench; {:.0} s):",
            started.elapsed().as_secs_f64()
        ),
    );
    col.xenstore = xenstore_report(&run.serial, &what, out, missing);

    let o = RunOptions {
        vendor: Vendor::Intel,
        bochs_cpu: cpu.into(),
        smp: BOCHS_SMP,
        modules: vec![Module::plain(guest.to_path_buf())],
        timeout: Some(BOCHS_TIMEOUT),
        ..Default::default()
    };
    let started = Instant::now();
    let run = image::boot_bochs(image, &o, false)?;
    say(
        out,
        format!(
            "boot ({name}: Bochs `cpu: model={cpu}, count={BOCHS_SMP}`, GRUB, -m {}, test guest as the one module; {:.0} s):",
            o.mem_mib,
            started.elapsed().as_secs_f64()
        ),
    );
    match (
        token(&run.serial, "hv_entry_tsc="),
        get(&run.serial, "", 0, "first_tsc"),
    ) {
        (Some(entry), Some(first)) => {
            let ticks = first.saturating_sub(entry);
            // Ticks to instructions by the bench run's calibration.
            let (insns, how) = match figures.calibration {
                Some((i, t)) => (
                    (u128::from(ticks) * u128::from(i) / u128::from(t.max(1))) as u64,
                    "by the bench run's calibration",
                ),
                None => (ticks, "1 tick per instruction, uncalibrated"),
            };
            say(
                out,
                format!(
                    "  power-on (BIOS, GRUB) to hypervisor entry: {} ticks",
                    num(entry)
                ),
            );
            say(
                out,
                format!(
                    "  hypervisor entry to first guest instruction: {} instructions ({} ticks, {how}; goal < {}: {})",
                    num(insns),
                    num(ticks),
                    num(BOOT_GOAL),
                    met(insns < BOOT_GOAL)
                ),
            );
            col.boot = Some(insns);
        }
        _ => {
            say(
                out,
                "  no `hv_entry_tsc` and `BENCH first_tsc` (boot failed?)".into(),
            );
            eprintln!("figures: {name} boot run output:\n{}", run.serial);
            missing.push(format!("boot to first guest instruction{what}"));
        }
    }
    Ok(col)
}

/// The side-by-side table: one row per figure, one column per machine.
fn side_by_side(columns: &[Column], out: &mut String) {
    say(
        out,
        format!("side by side, instructions (QEMU: -smp 2, no NRIP save; Bochs: {BOCHS_SMP} CPU):"),
    );
    let cell = |v: Option<u64>| v.map_or("-".to_string(), num);
    let rows = [
        (
            "hypercall round trip",
            columns.iter().map(|c| c.hypercall).collect::<Vec<_>>(),
        ),
        (
            "event send + deliver",
            columns.iter().map(|c| c.event).collect(),
        ),
        (
            "hypervisor entry to first guest insn",
            columns.iter().map(|c| c.boot).collect(),
        ),
        (
            "xenstore XS_READ round trip",
            columns.iter().map(|c| c.xenstore).collect(),
        ),
    ];
    let mut head = format!("  {:<38}", "figure");
    for c in columns {
        let _ = write!(head, " {:>16}", c.name);
    }
    say(out, head);
    for (label, values) in rows {
        let mut line = format!("  {label:<38}");
        for v in values {
            let _ = write!(line, " {:>16}", cell(v));
        }
        say(out, line);
    }
}

/// One timed boot: when the patterns first appeared, measured from just
/// before QEMU starts.
pub(crate) struct Timed {
    /// Per pattern: seconds until it first appeared.
    seen: Vec<Option<f64>>,
    /// Seconds until QEMU exited (or was killed).
    total: f64,
    status: Option<i32>,
    pub serial: String,
}

/// Runs `c` (stdout piped), timestamping the first appearance of each
/// pattern; kills QEMU `grace` after the last pattern or at `timeout`.
pub(crate) fn timed(
    mut c: Command,
    patterns: &[&str],
    timeout: Duration,
    grace: Duration,
) -> Result<Timed, String> {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    eprintln!("\n==> {c:?}");
    let start = Instant::now();
    let mut child = c
        .spawn()
        .map_err(|e| format!("cannot start qemu-system-x86_64: {e}"))?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let pats: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let mut all: Vec<u8> = Vec::new();
        let mut seen: Vec<Option<f64>> = vec![None; pats.len()];
        let mut buf = [0u8; 4096];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let from = all.len();
                    all.extend_from_slice(&buf[..n]);
                    let now = start.elapsed().as_secs_f64();
                    for (p, s) in pats.iter().zip(seen.iter_mut()) {
                        if s.is_none() {
                            let lo = from.saturating_sub(p.len());
                            if all[lo..].windows(p.len()).any(|w| w == p.as_bytes()) {
                                *s = Some(now);
                            }
                        }
                    }
                    if seen.iter().all(Option::is_some) {
                        let _ = tx.send(());
                    }
                }
            }
        }
        (all, seen)
    });
    let mut all_seen_at: Option<Instant> = None;
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break s.code();
        }
        if all_seen_at.is_none() && rx.try_recv().is_ok() {
            all_seen_at = Some(Instant::now());
        }
        let late = all_seen_at.is_some_and(|t| t.elapsed() > grace);
        if late || start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let total = start.elapsed().as_secs_f64();
    let (all, seen) = reader.join().unwrap_or_default();
    Ok(Timed {
        seen,
        total,
        status,
        serial: String::from_utf8_lossy(&all).into_owned(),
    })
}

/// Our hypervisor with Linux as a PVH domain (d1), booted as `cargo xtask
/// run --linux` and the e2e do: QEMU's Multiboot `-kernel`, the kernel and
/// initramfs as `-initrd` modules (no GRUB, no CD-ROM). Patterns: the
/// hypervisor's banner, the `/init` marker.
fn ours(image: &Path) -> Result<Timed, String> {
    let o = RunOptions {
        modules: linux_modules("linux", 256, 1, ""),
        mem_mib: 512,
        ..Default::default()
    };
    let initrd = image::multiboot_initrd(&o.modules)?;
    let mut c = Command::new("qemu-system-x86_64");
    c.args([
        "-accel",
        image::qemu_accel(o.mttcg),
        "-cpu",
        "qemu64,+svm,+npt",
    ])
    .args(["-m", &o.mem_mib.to_string(), "-smp", &o.smp.to_string()])
    .args(["-display", "none", "-no-reboot"])
    .args(["-serial", "stdio", "-debugcon", "null"])
    .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
    .arg("-kernel")
    .arg(image)
    .args(["-append", "exit=isa-debug-exit", "-initrd", &initrd]);
    timed(
        c,
        &[HV_BANNER, LINUX_MARKER],
        Duration::from_secs(900),
        Duration::from_secs(60),
    )
}

/// QEMU booting the same kernel and initramfs itself in PVH mode, as issue
/// 9 words it.
fn bare_linux() -> Result<Timed, String> {
    let (kernel, initrd) = linux_files();
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-accel", "tcg", "-m", "512", "-kernel"])
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0", "-nographic"]);
    timed(
        c,
        &["Linux version", LINUX_MARKER],
        Duration::from_secs(900),
        Duration::from_secs(60),
    )
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn linux_comparison(
    image: &Path,
    out: &mut String,
    missing: &mut Vec<String>,
) -> Result<(), String> {
    say(
        out,
        format!(
            "linux: seconds from starting QEMU (TCG, no icount) to `{LINUX_MARKER}`, alternating, {LINUX_RUNS} runs each:"
        ),
    );
    let mut ours_t = Vec::new();
    let mut ours_from_banner = Vec::new();
    let mut bare_t = Vec::new();
    for i in 1..=LINUX_RUNS {
        let o = ours(image)?;
        match o.seen[1] {
            Some(t) => {
                ours_t.push(t);
                if let Some(b) = o.seen[0] {
                    ours_from_banner.push(t - b);
                }
                say(
                    out,
                    format!(
                        "  run {i} ours: {t:.2} s (hypervisor banner at {}, QEMU gone at {:.2} s, status {:?})",
                        o.seen[0].map_or("-".into(), |b| format!("{b:.2} s")),
                        o.total,
                        o.status
                    ),
                );
            }
            None => {
                say(
                    out,
                    format!("  run {i} ours: no marker (status {:?})", o.status),
                );
                eprintln!("figures: our Linux run output:\n{}", o.serial);
            }
        }
        let b = bare_linux()?;
        match b.seen[1] {
            Some(t) => {
                bare_t.push(t);
                say(
                    out,
                    format!(
                        "  run {i} bare QEMU: {t:.2} s (`Linux version` at {}, QEMU gone at {:.2} s, status {:?})",
                        b.seen[0].map_or("-".into(), |v| format!("{v:.2} s")),
                        b.total,
                        b.status
                    ),
                );
            }
            None => {
                say(
                    out,
                    format!("  run {i} bare QEMU: no marker (status {:?})", b.status),
                );
                eprintln!("figures: bare Linux run output:\n{}", b.serial);
            }
        }
    }
    if ours_t.is_empty() || bare_t.is_empty() {
        missing.push("the Linux comparison".into());
        return Ok(());
    }
    let (mo, mb) = (mean(&ours_t), mean(&bare_t));
    let ratio = mo / mb;
    let mut line = String::new();
    let _ = write!(
        line,
        "  mean: ours {mo:.2} s, bare QEMU {mb:.2} s: ratio {ratio:.2}x (goal <= {LINUX_GOAL}x: {})",
        met(ratio <= LINUX_GOAL)
    );
    say(out, line);
    if !ours_from_banner.is_empty() {
        // SeaBIOS and QEMU's Multiboot option ROM copying the 66 MB
        // kernel in through fw_cfg come before our banner, as bare QEMU's
        // PVH option ROM does for its kernel.
        let mf = mean(&ours_from_banner);
        say(
            out,
            format!(
                "  ours from the hypervisor's banner to the marker (no SeaBIOS, no module loading): mean {mf:.2} s, {:.2}x bare QEMU",
                mf / mb
            ),
        );
    }
    Ok(())
}

/// The xenstore figures from Linux (see the module doc), on QEMU (AMD,
/// icount) or Bochs (Intel VMX).
fn linux_xenstore(
    image: &Path,
    vendor: Vendor,
    out: &mut String,
    missing: &mut Vec<String>,
) -> Result<(), String> {
    let machine = match vendor {
        Vendor::Amd => "QEMU -icount shift=0, -smp 1",
        Vendor::Intel => "Bochs corei7_skylake_x, 1 CPU",
    };
    let o = RunOptions {
        vendor,
        smp: 1,
        modules: linux_plan(
            1,
            256,
            1,
            true,
            &format!("pvhxsbench={XS_READS}"),
            &[],
            false,
            false,
        )?,
        mem_mib: 512,
        timeout: Some(BOCHS_TIMEOUT),
        extra_qemu_args: if vendor == Vendor::Amd {
            icount()
        } else {
            Vec::new()
        },
        ..Default::default()
    };
    let started = Instant::now();
    let serial = match vendor {
        Vendor::Amd => image::boot_qemu(image, &o, false)?.serial,
        Vendor::Intel => image::boot_bochs(image, &o, false)?.serial,
    };
    say(
        out,
        format!(
            "xenstore from Linux ({machine}; service domain d1, Linux d2; {:.0} s):",
            started.elapsed().as_secs_f64()
        ),
    );
    let what = format!("xenstore from Linux ({machine})");
    let Some(xs) = XsBench::parse(&serial) else {
        say(
            out,
            "  no xsbench line, TSC rate or timestamps (run failed?)".into(),
        );
        eprintln!("figures: {what} run output:\n{serial}");
        missing.push(what);
        return Ok(());
    };
    let per = |secs: f64, n: u32| (secs * xs.tsc_hz / f64::from(n)) as u64;
    say(
        out,
        format!(
            "  xenstore-read, one process per read: {} instructions per read ({} reads in {:.2} guest s)",
            num(per(xs.processes, xs.n)),
            xs.n,
            xs.processes
        ),
    );
    say(
        out,
        format!(
            "  xenstore-read, {} reads in one process: {} instructions per read ({:.2} guest s)",
            xs.n_one,
            num(per(xs.one_process, xs.n_one)),
            xs.one_process
        ),
    );
    say(
        out,
        format!(
            "  hypervisor banner to Linux's first xenstore request (xenbus probe): {} instructions",
            num(xs.probe_tsc.saturating_sub(xs.entry_tsc))
        ),
    );
    Ok(())
}

/// MiB each way in the block figures.
pub(crate) const BLK_MIB: u32 = 64;
/// Runs of each side in the block figures (alternating).
const BLK_RUNS: usize = 2;
/// Size of the disk the block figures use (the root image, grown so that
/// [`BLK_MIB`] MiB fit as a file).
const BLK_DISK_MIB: u64 = 160;

/// A fresh copy of `target/linux/root.ext4` grown to [`BLK_DISK_MIB`]
/// MiB (`resize2fs`), at `target/bench-root.ext4`.
pub(crate) fn blk_disk() -> Result<std::path::PathBuf, String> {
    let src = crate::linux::root_image_path();
    let dst = root().join("target/bench-root.ext4");
    std::fs::copy(&src, &dst).map_err(|e| format!("{}: {e}", src.display()))?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&dst)
        .and_then(|f| f.set_len(BLK_DISK_MIB << 20))
        .map_err(|e| format!("{}: {e}", dst.display()))?;
    let resize = ["/sbin/resize2fs", "/usr/sbin/resize2fs", "resize2fs"]
        .into_iter()
        .find(|p| !p.starts_with('/') || Path::new(p).exists())
        .unwrap_or("resize2fs");
    let st = Command::new(resize)
        .arg("-f")
        .arg(&dst)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("{resize} (apt-get install e2fsprogs): {e}"))?;
    if !st.success() {
        return Err(format!("{resize} {}: {st}", dst.display()));
    }
    Ok(dst)
}

/// What `/init`'s `pvhblkbench` measured (guest seconds).
#[derive(Debug, PartialEq)]
pub(crate) struct BlkBench {
    pub write: f64,
    pub read: f64,
    pub read4k: f64,
    /// 256 reads of 4 KiB at random blocks (a `dd` each).
    pub rand4k: Option<f64>,
}

impl BlkBench {
    pub fn parse(serial: &str) -> Option<Self> {
        let line = serial
            .lines()
            .find(|l| l.contains("PVH-LINUX-INIT: blkbench n="))?;
        let span = |w: &str| -> Option<f64> {
            let (a, b) = w.split_once("..")?;
            Some(b.parse::<f64>().ok()? - a.parse::<f64>().ok()?)
        };
        let field = |key: &str| {
            line.split_ascii_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(span)
        };
        let read4k = line
            .split_once("read4k=1024 ")
            .and_then(|(_, r)| r.split_ascii_whitespace().next())
            .and_then(span)?;
        let rand4k = line
            .split_once("rand4k=256 ")
            .and_then(|(_, r)| r.split_ascii_whitespace().next())
            .and_then(span);
        Some(Self {
            write: field("write=")?,
            read: field("read=")?,
            read4k,
            rand4k,
        })
    }
}

/// One of a [`BlkBench`]'s spans.
type BlkField = fn(&BlkBench) -> f64;

/// The block figures (see the module doc): under icount (instructions)
/// and without (guest seconds, close to wall time).
fn linux_block(image: &Path, out: &mut String, missing: &mut Vec<String>) -> Result<(), String> {
    for icounted in [true, false] {
        linux_block_runs(image, icounted, out, missing)?;
    }
    Ok(())
}

fn linux_block_runs(
    image: &Path,
    icounted: bool,
    out: &mut String,
    missing: &mut Vec<String>,
) -> Result<(), String> {
    let words = format!("pvhblkbench={BLK_MIB}");
    let clock = if icounted { icount() } else { Vec::new() };
    // Ours twice, grant copy and persistent grants (the service domain's
    // `blkback.feature_persistent=`), then bare QEMU.
    let mut ours: [Vec<BlkBench>; 2] = [Vec::new(), Vec::new()];
    let mut counters: [Option<String>; 2] = [None, None];
    let mut bare = Vec::new();
    for run in 1..=BLK_RUNS {
        for (v, persistent) in [false, true].into_iter().enumerate() {
            let disk = blk_disk()?;
            let mut modules = linux_plan(1, 256, 1, true, &words, &[disk.as_path()], false, false)?;
            modules[0].cmdline.push_str(&format!(
                " blkback.feature_persistent={}",
                u8::from(persistent)
            ));
            let o = RunOptions {
                smp: 1,
                modules,
                mem_mib: 512 + 2 * BLK_DISK_MIB as u32,
                timeout: Some(BOCHS_TIMEOUT),
                extra_qemu_args: clock.clone(),
                ..Default::default()
            };
            let serial = image::boot_qemu(image, &o, false)?.serial;
            match BlkBench::parse(&serial) {
                Some(b) => ours[v].push(b),
                None => eprintln!("figures: block run {run} (ours) output:\n{serial}"),
            }
            if let Some(l) = serial
                .lines()
                .find(|l| l.contains("service-domain: blkback: d2 vbd") && l.contains("requests ("))
            {
                counters[v] = Some(l.trim().to_string());
            }
        }
        let disk = blk_disk()?;
        let (kernel, initrd) = linux_files();
        let mut c = Command::new("qemu-system-x86_64");
        c.args(["-accel", "tcg", "-m", "512", "-smp", "1"])
            .args(&clock)
            .arg("-kernel")
            .arg(kernel)
            .arg("-initrd")
            .arg(initrd)
            .args(["-append", &format!("console=ttyS0 {words}"), "-nographic"])
            .arg("-drive")
            .arg(format!(
                "file={},if=virtio,format=raw,cache=unsafe",
                disk.display()
            ));
        let t = timed(
            c,
            &["PVH-LINUX-INIT: blkbench n="],
            BOCHS_TIMEOUT,
            Duration::from_secs(5),
        )?;
        match BlkBench::parse(&t.serial) {
            Some(b) => bare.push(b),
            None => eprintln!("figures: block run {run} (bare QEMU) output:\n{}", t.serial),
        }
    }
    say(
        out,
        format!(
            "block I/O from Linux ({}, 1 CPU; {BLK_MIB} MiB each way, O_DIRECT, 1 MiB blocks; 1024 reads of 4 KiB; {BLK_RUNS} runs each, alternating; /proc/uptime, 10 ms steps):",
            if icounted {
                "QEMU -icount shift=0: instructions; QEMU's virtio device model costs the guest none, our back end runs in a domain"
            } else {
                "QEMU TCG without icount: guest seconds, close to wall time"
            }
        ),
    );
    if ours.iter().any(|o| o.is_empty()) || bare.is_empty() {
        say(out, "  no blkbench line (run failed?)".into());
        missing.push("the block figures".into());
        return Ok(());
    }
    let m = |v: &[BlkBench], f: fn(&BlkBench) -> f64| mean(&v.iter().map(f).collect::<Vec<_>>());
    let rows: [(&str, BlkField, f64); 3] = [
        ("sequential write", |b| b.write, f64::from(BLK_MIB)),
        ("sequential read", |b| b.read, f64::from(BLK_MIB)),
        ("4 KiB reads", |b| b.read4k, 1024.0),
    ];
    for (v, path) in ["grant copy", "persistent grants"].into_iter().enumerate() {
        say(out, format!("  ours with {path}:"));
        for (what, f, n) in rows {
            let (o, b) = (m(&ours[v], f), m(&bare, f));
            let ratio = b / o.max(1e-9);
            let goal = if what.starts_with("sequential") {
                format!(" (goal >= 0.5x: {})", met(ratio >= 0.5))
            } else {
                String::new()
            };
            let unit = if what.starts_with("sequential") {
                "per MiB"
            } else {
                "per request"
            };
            let line = if icounted {
                format!(
                    "    {what}: ours {} instructions {unit}, bare QEMU virtio-blk {}: ours at {ratio:.2}x bare QEMU's speed{goal}",
                    num((o * 1e9 / n) as u64),
                    num((b * 1e9 / n) as u64)
                )
            } else if what.starts_with("sequential") {
                format!(
                    "    {what}: ours {:.0} MiB/s ({o:.2} s), bare QEMU virtio-blk {:.0} MiB/s ({b:.2} s): ours at {ratio:.2}x bare QEMU's speed{goal}",
                    n / o.max(1e-9),
                    n / b.max(1e-9)
                )
            } else {
                format!(
                    "    {what}: ours {:.0} us {unit}, bare QEMU virtio-blk {:.0} us: ours at {ratio:.2}x bare QEMU's speed",
                    o * 1e6 / n,
                    b * 1e6 / n
                )
            };
            say(out, line);
        }
        if let Some(c) = &counters[v] {
            say(out, format!("    last run's counters: {c}"));
        }
    }
    Ok(())
}

/// MiB of the network figures' TCP transfer.
const NET_MIB: u32 = 16;
/// Runs of each side in the network figures without icount (alternating).
const NET_RUNS: usize = 2;
/// Pings of each size in the icount floods.
const NET_FLOOD: u32 = 20_000;
/// The ping sizes of the floods: 64 bytes of ICMP (an 84-byte IP packet)
/// and a 1500-byte IP packet.
const NET_SIZES: [u32; 2] = [56, 1472];
/// The TCP port of the bare pair's `-netdev socket`.
const NET_PORT: u16 = 47012;

/// One `PVH-LINUX-NET: flood` line.
#[derive(Debug, PartialEq)]
struct Flood {
    size: u32,
    role: String,
    /// Seconds.
    elapsed: f64,
    idle: f64,
    steal: f64,
}

impl Flood {
    /// Seconds the guest itself ran: elapsed less idle. Not less steal:
    /// Linux counts the wait of a woken vCPU for its CPU (runnable, in
    /// the idle task) as idle and as steal alike, and our scheduler does
    /// not preempt a running vCPU for a woken one (only at the end of its
    /// slice), so the steal of a busy guest is small.
    fn busy(&self) -> f64 {
        self.elapsed - self.idle
    }
}

/// What one run of the network figures printed: the sender (10.0.0.3)'s
/// view, and netback's counters on ours.
#[derive(Debug, Default, PartialEq)]
struct NetRun {
    /// Average ping round trip, ms.
    rtt: Option<f64>,
    /// Seconds to send [`NET_MIB`] MiB.
    nc: Option<f64>,
    /// The receiver found the sha256 the sender sent.
    hash_ok: bool,
    /// Each flood line: size, role, and seconds elapsed, idle and stolen
    /// (runnable while other domains ran; 0 under bare QEMU).
    floods: Vec<Flood>,
    /// Packets through the vifs (tx + rx) and events netback sent.
    packets: u64,
    events: u64,
}

impl NetRun {
    fn parse(serial: &str) -> Self {
        let mut r = NetRun::default();
        let span = |w: &str| -> Option<f64> {
            let (a, b) = w.split_once("..")?;
            Some(b.parse::<f64>().ok()? - a.parse::<f64>().ok()?)
        };
        for l in serial.lines() {
            let words: Vec<&str> = l.split_ascii_whitespace().collect();
            let after = |key: &str| -> Option<&str> {
                let i = words.iter().position(|w| *w == key)?;
                words.get(i + 1).copied()
            };
            if l.contains("PVH-LINUX-NET: ping 10.0.0.2 rtt min/avg/max") {
                r.rtt = after("min/avg/max")
                    .and_then(|v| v.split('/').nth(1))
                    .and_then(|v| v.parse().ok());
            } else if l.contains("PVH-LINUX-NET: nc sent") {
                r.nc = after("in").and_then(span);
            } else if l.contains("PVH-LINUX-NET: nc received") && l.contains("sha256 matches") {
                r.hash_ok = true;
            } else if l.contains("PVH-LINUX-NET: flood s=") {
                let field = |k: &str| words.iter().find_map(|w| w.strip_prefix(k));
                if let (Some(size), Some(role), Some(elapsed), Some(idle), Some(steal)) = (
                    field("s=").and_then(|v| v.parse().ok()),
                    field("role="),
                    field("uptime=").and_then(span),
                    field("idle=").and_then(span),
                    field("steal=").and_then(span),
                ) {
                    r.floods.push(Flood {
                        size,
                        role: role.to_string(),
                        elapsed,
                        idle,
                        steal: steal / 100.0,
                    });
                }
            } else if l.contains("service-domain: netback: d") && l.contains("events sent") {
                let n = |k: &str| after(k).and_then(|v| v.parse::<u64>().ok());
                let tx = n("tx");
                let ev = after("sent").and_then(|v| v.parse::<u64>().ok());
                let ev_rx = words
                    .iter()
                    .rposition(|w| *w == "+")
                    .and_then(|i| words.get(i + 1))
                    .and_then(|v| v.parse::<u64>().ok());
                if let (Some(tx), Some(rx), Some(ev), Some(ev_rx)) = (tx, n("rx"), ev, ev_rx) {
                    r.packets += tx + rx;
                    r.events += ev + ev_rx;
                }
            }
        }
        r
    }

    /// The flood of `size` by `role`.
    fn flood(&self, size: u32, role: &str) -> Option<&Flood> {
        self.floods
            .iter()
            .find(|f| f.size == size && f.role == role)
    }
}

/// Two Linux domains on our hypervisor with the service domain's switch,
/// as the e2e case `qemu-svm-linux-net`: d3 sends, d2 receives.
fn net_ours(image: &Path, words: &str, icounted: bool) -> Result<String, String> {
    let o = RunOptions {
        smp: if icounted { 1 } else { 2 },
        modules: linux_plan(2, 160, 1, true, words, &[], false, true)?,
        mem_mib: 2 * 160 + 256,
        timeout: Some(BOCHS_TIMEOUT),
        extra_qemu_args: if icounted { icount() } else { Vec::new() },
        ..Default::default()
    };
    Ok(image::boot_qemu(image, &o, false)?.serial)
}

/// Two bare QEMU Linux guests (the same kernel and initramfs, QEMU's own
/// `-kernel`) joined by `-netdev socket`: 10.0.0.2 listens and receives,
/// 10.0.0.3 connects and sends. Both serial logs, concatenated.
fn net_bare(words: &str, icounted: bool) -> Result<String, String> {
    let (kernel, initrd) = linux_files();
    let side = |id: u32| {
        let (role, peer, net) = if id == 2 {
            (
                "recv",
                3,
                format!("socket,id=n0,listen=127.0.0.1:{NET_PORT}"),
            )
        } else {
            (
                "send",
                2,
                format!("socket,id=n0,connect=127.0.0.1:{NET_PORT}"),
            )
        };
        let mut c = Command::new("qemu-system-x86_64");
        c.args(["-accel", "tcg", "-m", "512", "-smp", "1"])
            .args(if icounted { icount() } else { Vec::new() })
            .arg("-kernel")
            .arg(&kernel)
            .arg("-initrd")
            .arg(&initrd)
            .args([
                "-append",
                &format!(
                    "console=ttyS0 pvhip=10.0.0.{id}/24 pvhping=10.0.0.{peer} pvhncrole={role} {words}"
                ),
                "-nographic",
            ])
            .args(["-netdev", &net])
            .args([
                "-device",
                &format!("virtio-net-pci,netdev=n0,mac=52:54:00:00:00:0{id}"),
            ]);
        c
    };
    let done = |flood: bool| -> &'static str {
        if flood {
            "PVH-LINUX-NET: flood s=1472"
        } else {
            "PVH-LINUX-NET: nc "
        }
    };
    let flood = words.contains("pvhflood=");
    let (rx, tx) = (side(2), side(3));
    let listener = std::thread::spawn(move || {
        timed(rx, &[done(flood)], BOCHS_TIMEOUT, Duration::from_secs(5))
    });
    // The listener binds its port before its guest runs.
    std::thread::sleep(Duration::from_secs(2));
    let sender = timed(tx, &[done(flood)], BOCHS_TIMEOUT, Duration::from_secs(5))?;
    let receiver = listener
        .join()
        .map_err(|_| "the bare listener thread panicked".to_string())??;
    Ok(format!("{}\n{}", receiver.serial, sender.serial))
}

/// The network figures (see the module doc): without icount, ours and
/// bare alternating, [`NET_RUNS`] each; then one icount run of each with
/// the ping floods.
fn linux_net(image: &Path, out: &mut String, missing: &mut Vec<String>) -> Result<(), String> {
    let words = format!("pvhnc={NET_MIB}");
    let mut ours = Vec::new();
    let mut bare = Vec::new();
    for run in 1..=NET_RUNS {
        let s = net_ours(image, &words, false)?;
        let r = NetRun::parse(&s);
        if r.rtt.is_none() || r.nc.is_none() || !r.hash_ok {
            eprintln!("figures: network run {run} (ours) output:\n{s}");
        }
        ours.push(r);
        let s = net_bare(&words, false)?;
        let r = NetRun::parse(&s);
        if r.rtt.is_none() || r.nc.is_none() || !r.hash_ok {
            eprintln!("figures: network run {run} (bare QEMU) output:\n{s}");
        }
        bare.push(r);
    }
    say(
        out,
        format!(
            "network between two Linux guests (QEMU TCG without icount; ours: two domains on the service domain's switch, -smp 2 single-threaded TCG; bare: two QEMUs, virtio-net, -netdev socket; {NET_RUNS} runs each, alternating; sender 10.0.0.3, /proc/uptime 10 ms steps):"
        ),
    );
    let show = |v: Option<f64>, unit: &str| v.map_or("-".to_string(), |v| format!("{v:.2}{unit}"));
    for (i, (o, b)) in ours.iter().zip(&bare).enumerate() {
        say(
            out,
            format!(
                "  run {}: ping avg ours {} bare {}; {NET_MIB} MiB ours {} ({}) bare {} ({}); events ours {} / {} packets through the vifs",
                i + 1,
                show(o.rtt, " ms"),
                show(b.rtt, " ms"),
                show(o.nc, " s"),
                if o.hash_ok {
                    "sha256 ok"
                } else {
                    "sha256 NOT ok"
                },
                show(b.nc, " s"),
                if b.hash_ok {
                    "sha256 ok"
                } else {
                    "sha256 NOT ok"
                },
                o.events,
                o.packets
            ),
        );
    }
    let avg = |v: &[NetRun], f: fn(&NetRun) -> Option<f64>| -> Option<f64> {
        let x: Vec<f64> = v.iter().filter_map(f).collect();
        (x.len() == v.len()).then(|| mean(&x))
    };
    let (or, br) = (avg(&ours, |r| r.rtt), avg(&bare, |r| r.rtt));
    let (on, bn) = (avg(&ours, |r| r.nc), avg(&bare, |r| r.nc));
    let ok = ours.iter().chain(&bare).all(|r| r.hash_ok);
    match (or, br, on, bn, ok) {
        (Some(or), Some(br), Some(on), Some(bn), true) => {
            say(
                out,
                format!(
                    "  ping round trip (average of 20): ours {or:.2} ms, bare QEMU {br:.2} ms: ours/bare {:.2}x",
                    or / br
                ),
            );
            let mibs = |t: f64| f64::from(NET_MIB) / t.max(1e-9);
            say(
                out,
                format!(
                    "  {NET_MIB} MiB over TCP: ours {on:.2} s ({:.1} MiB/s), bare QEMU {bn:.2} s ({:.1} MiB/s): ours/bare time {:.2}x",
                    mibs(on),
                    mibs(bn),
                    on / bn
                ),
            );
        }
        _ => missing.push("the network figures (no icount)".into()),
    }
    let (p, e): (u64, u64) = ours
        .iter()
        .fold((0, 0), |(p, e), r| (p + r.packets, e + r.events));
    if p > 0 {
        say(
            out,
            format!(
                "  events per packet at load (ours, netback to the front ends, both vifs, the whole run): {e} / {p} = {:.2} (goal < 0.125: {})",
                e as f64 / p as f64,
                met((e as f64) < p as f64 / 8.0)
            ),
        );
    } else {
        missing.push("netback's counters".into());
    }

    // Under icount: the floods.
    let words = format!("pvhnc={NET_MIB} pvhflood={NET_FLOOD}");
    let s = net_ours(image, &words, true)?;
    let o = NetRun::parse(&s);
    if o.floods.len() != 2 * NET_SIZES.len() {
        eprintln!("figures: network icount run (ours) output:\n{s}");
    }
    let s = net_bare(&words, true)?;
    let b = NetRun::parse(&s);
    if b.floods.len() != 2 * NET_SIZES.len() {
        eprintln!("figures: network icount run (bare QEMU) output:\n{s}");
    }
    say(
        out,
        format!(
            "network under QEMU -icount shift=0 (ours -smp 1: a guest ns is an instruction of the whole machine; busy time, uptime less idle, is a guest's own instructions; bare: two QEMUs, QEMU's virtio and socket cost none): {NET_FLOOD} pings (ping -A) of each size, a round trip = 2 packets:"
        ),
    );
    let n = f64::from(NET_FLOOD);
    for size in NET_SIZES {
        let per = |secs: f64| num((secs * 1e9 / n / 2.0).round() as u64);
        match (
            o.flood(size, "send"),
            o.flood(size, "recv"),
            b.flood(size, "send"),
            b.flood(size, "recv"),
        ) {
            (Some(os), Some(or), Some(bs), Some(br)) => {
                let ot = os.elapsed;
                let (ob_s, ob_r) = (os.busy(), or.busy());
                let bare_busy = bs.busy() + br.busy();
                say(
                    out,
                    format!(
                        "  ping -s {size} ({} bytes of IP): ours {} instructions per packet (sender {} + receiver {} + service domain and hypervisor {}), bare QEMU {} (sender {} + receiver {}): ours/bare {:.2}x; the two Linux guests alone: ours/bare {:.2}x",
                        size + 28,
                        per(ot),
                        per(ob_s),
                        per(ob_r),
                        per((ot - ob_s - ob_r).max(0.0)),
                        per(bare_busy),
                        per(bs.busy()),
                        per(br.busy()),
                        ot / bare_busy.max(1e-9),
                        (ob_s + ob_r) / bare_busy.max(1e-9)
                    ),
                );
            }
            _ => missing.push(format!("the icount flood of ping -s {size}")),
        }
    }
    let steal: Vec<String> = NET_SIZES
        .iter()
        .flat_map(|&size| ["send", "recv"].map(|role| (size, role)))
        .filter_map(|(size, role)| {
            let f = o.flood(size, role)?;
            Some(format!(
                "-s {size} {role} {}",
                num((f.steal * 1e9 / n / 2.0).round() as u64)
            ))
        })
        .collect();
    say(
        out,
        format!(
            "  ours, the steal time the guests report (runnable, not running; per packet): {}; not subtracted: it overlaps their idle time",
            steal.join(", ")
        ),
    );
    if o.packets > 0 {
        say(
            out,
            format!(
                "  events per packet (ours, the icount run: {NET_MIB} MiB, then the floods): {} / {} = {:.2}",
                o.events,
                o.packets,
                o.events as f64 / o.packets as f64
            ),
        );
    }
    Ok(())
}

/// What [`linux_xenstore`] reads off the serial log.
#[derive(Debug, PartialEq)]
struct XsBench {
    /// Reads a process each, and reads in one process.
    n: u32,
    n_one: u32,
    /// Guest seconds for `n` reads, a process each, and in one process.
    processes: f64,
    one_process: f64,
    /// TSC ticks per second, as the hypervisor measured them.
    tsc_hz: f64,
    /// The hypervisor's entry and the first request of d2, in TSC ticks.
    entry_tsc: u64,
    probe_tsc: u64,
}

impl XsBench {
    fn parse(serial: &str) -> Option<Self> {
        let line = serial
            .lines()
            .find(|l| l.contains("PVH-LINUX-INIT: xsbench n="))?;
        let field = |key: &str| -> Option<&str> {
            line.split_ascii_whitespace()
                .find_map(|w| w.strip_prefix(key))
        };
        let span = |key: &str| -> Option<f64> {
            let (a, b) = field(key)?.split_once("..")?;
            Some(b.trim().parse::<f64>().ok()? - a.parse::<f64>().ok()?)
        };
        let mhz: f64 = serial
            .lines()
            .find_map(|l| l.split_once("TSC: ")?.1.trim_end().strip_suffix(" MHz"))?
            .trim()
            .parse()
            .ok()?;
        let probe_tsc = serial
            .lines()
            .find(|l| l.contains("xenstore: d2 sent its first request (tsc="))
            .and_then(|l| l.split_once("(tsc=")?.1.split_once(')')?.0.parse().ok())?;
        Some(XsBench {
            n: field("n=")?.parse().ok()?,
            n_one: field("one-process-n=")?.parse().ok()?,
            processes: span("processes=")?,
            one_process: span("one-process=")?,
            tsc_hz: mhz * 1e6,
            entry_tsc: token(serial, "hv_entry_tsc=")?,
            probe_tsc,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_block_bench() {
        let s = "x\r\n(d2) PVH-LINUX-INIT: blkbench n=64 MiB write=4.00..5.50 read=5.50..6.25 read4k=1024 6.25..6.75 (O_DIRECT, 1 MiB blocks)\r\n";
        assert_eq!(
            BlkBench::parse(s),
            Some(BlkBench {
                write: 1.5,
                read: 0.75,
                read4k: 0.5,
                rand4k: None,
            })
        );
        let s = "(d2) PVH-LINUX-INIT: blkbench n=64 MiB write=4.00..5.50 read=5.50..6.25 read4k=1024 6.25..6.75 rand4k=256 6.75..8.00 (O_DIRECT, 1 MiB blocks)";
        assert_eq!(BlkBench::parse(s).and_then(|b| b.rand4k), Some(1.25));
        assert_eq!(
            BlkBench::parse("PVH-LINUX-INIT: blkbench n=1 write=1..2"),
            None
        );
    }

    #[test]
    fn reads_the_network_runs() {
        let log = "(d3) PVH-LINUX-NET: ping 10.0.0.2 rtt min/avg/max 1.80/3.33/13.6 ms (20 pings)\r\n\
                   (d2) PVH-LINUX-NET: ping 10.0.0.3 rtt min/avg/max 9/9/9 ms (20 pings)\r\n\
                   (d3) PVH-LINUX-NET: nc sent 16 MiB to 10.0.0.2 in 4.50..5.25 s\r\n\
                   (d2) PVH-LINUX-NET: nc received 16 MiB from d3: sha256 matches\r\n\
                   (d3) PVH-LINUX-NET: flood s=56 n=1000 role=send uptime=10.00..12.50 idle=1.00..1.50 steal=100..125\r\n\
                   (d1) service-domain: netback: d2 vif 0: tx 244 packets (0 refused), rx 445 (0 dropped), events sent 100 tx + 42 rx\r\n\
                   (d1) service-domain: netback: d3 vif 0: tx 445 packets (0 refused), rx 244 (0 dropped), events sent 224 tx + 143 rx\r\n";
        let r = NetRun::parse(log);
        assert_eq!(r.rtt, Some(3.33));
        assert_eq!(r.nc, Some(0.75));
        assert!(r.hash_ok);
        let f = r.flood(56, "send").unwrap();
        assert_eq!(
            (f.elapsed, f.idle, f.steal, f.busy()),
            (2.5, 0.5, 0.25, 2.0)
        );
        assert_eq!(r.flood(56, "recv"), None);
        assert_eq!((r.packets, r.events), (2 * 689, 142 + 367));
        let bad = NetRun::parse("PVH-LINUX-NET: nc received sha256 1, 10.0.0.3 sent 2");
        assert!(!bad.hash_ok);
        assert_eq!(bad.rtt, None);
    }

    #[test]
    fn reads_the_xenstore_bench() {
        let log = "(XEN) [INFO] BENCH hv_entry_tsc=1000\r\n\
                   (XEN) [INFO] TSC: 1000.000 MHz\r\n\
                   (d1) service-domain: xenstore: d2 sent its first request (tsc=5000)\r\n\
                   (d2) PVH-LINUX-INIT: xsbench n=1000 processes=3.50..7.50 one-process-n=10000 one-process=7.50..7.75\r\n";
        let b = XsBench::parse(log).unwrap();
        assert_eq!((b.n, b.n_one), (1000, 10000));
        assert!((b.processes - 4.0).abs() < 1e-9);
        assert!((b.one_process - 0.25).abs() < 1e-9);
        assert_eq!((b.entry_tsc, b.probe_tsc), (1000, 5000));
        assert!((b.tsc_hz - 1e9).abs() < 1.0);
        assert!(XsBench::parse("(d2) PVH-LINUX-INIT: up").is_none());
    }
}
