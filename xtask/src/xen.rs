//! Differential runs against Xen 4.17 (issue 19): our PVH test guest as
//! Xen's PVH dom0, under the same QEMU as our own e2e cases.
//!
//! Xen comes from Debian's `xen-hypervisor-4.17-amd64`:
//! `boot/xen-4.17-amd64.gz`, gunzipped, is a Multiboot ELF that QEMU's
//! `-kernel` boots; the first `-initrd` module (file name, then the
//! command line Xen hands on) becomes the PVH dom0. `.ci/run` unpacks it
//! into `target/xen-hypervisor/` and gunzips it to `target/xen/xen.elf`;
//! `XEN_ELF` names another file.
//!
//! Xen halts (dom0 powered off) or stops (dom0 crashed, `noreboot`) without
//! ending QEMU: the run ends when Xen prints `Hardware Dom0 ...`, or at the
//! timeout. What differs between the test guest's verdicts on Xen and on us
//! is written down in docs/xen-differences.md.

use crate::root;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Xen's command line: serial console, PVH dom0 without an IOMMU (QEMU's
/// default machine has none), no reboot on a crash, every guest message.
const XEN_CMDLINE: &str = "console=com1 dom0=pvh dom0-iommu=none noreboot guest_loglvl=all";

/// The test guest's options on Xen: `skip=cr0-nw` leaves out the one write
/// that crashes the domain on Xen 4.17 (docs/xen-differences.md).
pub const XEN_GUEST_ARGS: &str = "skip=cr0-nw";

/// Machine memory: under 1 GiB, so that dom0's memory map ends below the
/// first GiB the test guest maps and leaves a hole there, as our domains'
/// maps do (with more, dom0's RAM covers the whole first GiB and
/// `grant_self` / `unbacked_mmio` find no unbacked frame to use).
const XEN_MEM_MIB: u32 = 512;

/// What Xen prints when dom0 halts, shuts down or crashes.
const DOM0_END: &str = "(XEN) Hardware Dom0 ";

/// The test guest's checks, in order: on Xen every one must pass.
pub const CHECKS: [&str; 25] = [
    "start_info",
    "xen_cpuid",
    "console_io",
    "xen_version",
    "memory_map",
    "shared_info",
    "register_vcpu_info",
    "upcall_self_event",
    "expand_array",
    "hostile_efault",
    "hostile_enosys",
    "hostile_ring3_eperm",
    "singleshot_timer",
    "timer_while_spinning",
    "block_timer_wakeup",
    "block_woken_by_event",
    "poll_timeout",
    "pvclock_monotonic",
    "grant_self",
    "unbacked_mmio",
    "cr4_unoffered_gp",
    "cr0_invalid_gp",
    "efer_unoffered_gp",
    "xcr0_invalid",
    "apic_modes",
];

/// Xen's hypervisor ELF: `XEN_ELF`, else `target/xen/xen.elf` (`.ci/run`),
/// else `/opt/xen/xen.elf`.
pub fn xen_elf() -> Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = std::env::var_os("XEN_ELF")
        .map(PathBuf::from)
        .into_iter()
        .chain([root().join("target/xen/xen.elf"), "/opt/xen/xen.elf".into()])
        .collect();
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or(format!(
            "no Xen 4.17 hypervisor ELF (tried {candidates:?}): `apt-get download \
         xen-hypervisor-4.17-amd64`, `dpkg -x` it and gunzip boot/xen-4.17-amd64.gz \
         to target/xen/xen.elf (.ci/run does)"
        ))
}

/// One Xen run: the serial output, and whether dom0's end was seen (else
/// the timeout struck).
pub struct XenRun {
    /// The serial output without Xen's `console_timestamps` stamps.
    pub serial: String,
    /// The serial output as it came.
    pub raw: String,
    pub ended: bool,
    pub elapsed: Duration,
}

/// Boots Xen with `guest` (and its `args`) as PVH dom0 on one host CPU,
/// with `extra` QEMU arguments; stops QEMU once dom0 has ended.
pub fn boot_xen(
    xen: &Path,
    guest: &Path,
    args: &str,
    extra: &[String],
    timeout: Duration,
) -> Result<XenRun, String> {
    boot_xen_with(xen, XEN_CMDLINE, 1, guest, args, extra, timeout)
}

/// [`boot_xen`] with Xen's command line `cmdline` on `smp` host CPUs.
fn boot_xen_with(
    xen: &Path,
    cmdline: &str,
    smp: u32,
    guest: &Path,
    args: &str,
    extra: &[String],
    timeout: Duration,
) -> Result<XenRun, String> {
    let mut c = Command::new("qemu-system-x86_64");
    // Single-threaded TCG, as for our own runs: QEMU's multi-threaded TCG
    // races on the boot CPU's SVM flags (docs/architecture.md section 10).
    c.args(["-accel", "tcg,thread=single", "-cpu", "qemu64,+svm,+npt"])
        .args(["-m", &XEN_MEM_MIB.to_string(), "-smp", &smp.to_string()])
        .arg("-kernel")
        .arg(xen)
        .args(["-append", cmdline])
        // QEMU hands the module's whole string on; Xen skips the file name.
        .arg("-initrd")
        .arg(format!("{} {args}", guest.display()))
        .args(["-display", "none", "-no-reboot"])
        .args(["-serial", "stdio", "-debugcon", "null"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    eprintln!("\n==> {c:?}");
    let start = Instant::now();
    let mut child = c
        .spawn()
        .map_err(|e| format!("cannot start qemu-system-x86_64: {e}"))?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen2.lock().expect("reader").extend_from_slice(&buf[..n]);
        }
    });
    let ended = loop {
        let text = strip_stamps(&String::from_utf8_lossy(&seen.lock().expect("reader")));
        // The line after the marker completes the reason.
        if text
            .find(DOM0_END)
            .is_some_and(|i| text[i..].contains('\n'))
        {
            break true;
        }
        if child.try_wait().map_err(|e| e.to_string())?.is_some() {
            break false;
        }
        if start.elapsed() > timeout {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = start.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    let raw = String::from_utf8_lossy(&seen.lock().expect("reader")).into_owned();
    Ok(XenRun {
        serial: strip_stamps(&raw),
        raw,
        ended,
        elapsed,
    })
}

/// `text` without the stamps `console_timestamps=raw` puts after each
/// line's `(XEN)` or `(dN)` prefix (`[` 16 hex digits `] `).
fn strip_stamps(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let cut = line.split_once(") [").and_then(|(head, rest)| {
            let stamp = rest.get(..16)?;
            let is_prefix = head == "(XEN"
                || head
                    .strip_prefix("(d")
                    .is_some_and(|d| d.parse::<u16>().is_ok());
            (is_prefix
                && stamp.bytes().all(|b| b.is_ascii_hexdigit())
                && rest[16..].starts_with("] "))
            .then(|| (head.len() + 1, head.len() + 2 + 18))
        });
        match cut {
            Some((keep, skip)) => {
                out.push_str(&line[..keep]);
                out.push_str(&line[skip..]);
            }
            None => out.push_str(line),
        }
    }
    out
}

/// What is wrong with a Xen run of the test guest's checks and the `extra`
/// ones of its role (empty: every check passed, the verdict is a pass and
/// dom0 halted on its poweroff).
pub fn verdict_problems(run: &XenRun, extra: &[&str]) -> Vec<String> {
    let mut missing: Vec<String> = CHECKS
        .iter()
        .chain(extra)
        .map(|c| format!("(d0) CHECK {c}: PASS"))
        .filter(|l| !run.serial.contains(l.as_str()))
        .collect();
    let want = format!("(d0) VERDICT: PASS {n}/{n}", n = CHECKS.len() + extra.len());
    if !run.serial.contains(&want) {
        missing.push(want);
    }
    for l in run
        .serial
        .lines()
        .filter(|l| l.contains("CHECK ") && l.contains(": FAIL"))
    {
        missing.push(format!("no failure, but: {l}"));
    }
    if !run.serial.contains("(XEN) Hardware Dom0 halted") {
        missing.push(format!(
            "(XEN) Hardware Dom0 halted (dom0's poweroff; ended: {})",
            run.ended
        ));
    }
    missing
}

/// The e2e case names of this module.
pub const CASES: [&str; 2] = ["xen-qemu-pvh-guest", "xen-qemu-cr0-nw"];

/// `xen-qemu-pvh-guest`: the test guest as Xen 4.17's PVH dom0 under
/// QEMU's SVM model; every check must pass, as on us. Returns the serial
/// output and what was missing.
pub fn pvh_guest_case(guest: &Path) -> Result<(String, Vec<String>), String> {
    let xen = xen_elf()?;
    // dom0 with two vCPUs on two host CPUs: the guest starts the second
    // by VCPUOP_initialise/up (`vcpu_up`), as it does on us.
    let run = boot_xen_with(
        &xen,
        &format!("{XEN_CMDLINE} dom0_max_vcpus=2"),
        2,
        guest,
        XEN_GUEST_ARGS,
        &[],
        Duration::from_secs(300),
    )?;
    eprintln!(
        "e2e: xen-qemu-pvh-guest: Xen run took {:.1} s",
        run.elapsed.as_secs_f64()
    );
    let missing = verdict_problems(&run, &["vcpu_up"]);
    Ok((run.serial, missing))
}

/// `xen-qemu-cr0-nw`: the difference where Xen is the wrong side, kept in
/// view: without `skip=cr0-nw`, `MOV CR0` with NW set and CD clear reaches
/// Xen 4.17's VMCB and dom0 dies on the failed VMRUN (we raise `#GP(0)`, as
/// the APM specifies). Every check before it still passes. Should a later
/// Xen refuse the write, this case fails and docs/xen-differences.md needs
/// its row updated.
pub fn cr0_nw_case(guest: &Path) -> Result<(String, Vec<String>), String> {
    let xen = xen_elf()?;
    let run = boot_xen(&xen, guest, "", &[], Duration::from_secs(300))?;
    let before = CHECKS
        .iter()
        .take_while(|c| **c != "cr0_invalid_gp")
        .map(|c| format!("(d0) CHECK {c}: PASS"));
    let mut missing: Vec<String> = before
        .chain([
            "(XEN) d0v0 Unexpected vmexit: reason 0xffffffff".to_string(),
            "(XEN) Hardware Dom0 crashed".to_string(),
        ])
        .filter(|l| !run.serial.contains(l.as_str()))
        .collect();
    if run.serial.contains("CHECK cr0_invalid_gp") {
        missing.push("no cr0_invalid_gp verdict (the domain dies at the write)".into());
    }
    Ok((run.serial, missing))
}

/// The Xen column of `cargo xtask bench`, in instructions.
pub struct XenFigures {
    pub hypercall: Option<u64>,
    pub loopback: Option<u64>,
    /// Event sent to the other vCPU of dom0 and delivered (half a round
    /// trip, `-smp 2`, `dom0_max_vcpus=2`).
    pub vcpu: Option<u64>,
    /// dom0's first instruction by its TSC, which Xen starts at 0 when it
    /// creates vCPU 0 (`hvm_vcpu_initialise`): not a power-on figure.
    pub first_tsc: Option<u64>,
    /// Power-on to dom0's first instruction, from Xen's raw TSC stamp on
    /// the guest's `BENCH first_tsc` line (see [`power_on`]).
    pub power_on: Option<u64>,
    /// The longest stretch between two console lines before it: Xen's
    /// wait for the CMOS clock's next second.
    pub rtc_wait: Option<u64>,
    pub serial: String,
}

/// The Xen column (QEMU `-icount shift=0`, one CPU): the test guest as dom0
/// with `role=bench` and no peer (dom0 is the only domain).
pub fn bench_run(guest: &Path) -> Result<XenFigures, String> {
    let xen = xen_elf()?;
    let icount = [
        "-icount".into(),
        "shift=0".into(),
        // Xen's boot waits for the CMOS clock's next second
        // (`get_cmos_time`): on the virtual clock, from a whole
        // second, that wait is the same every run (see `power_on`).
        "-rtc".into(),
        "base=2026-01-01T00:00:00,clock=vm".into(),
    ];
    let run = boot_xen_with(
        &xen,
        &format!("{XEN_CMDLINE} console_timestamps=raw"),
        1,
        guest,
        &format!("{XEN_GUEST_ARGS} role=bench"),
        &icount,
        // About 15 s on an idle host.
        Duration::from_secs(300),
    )?;
    let problems = verdict_problems(&run, &["bench"]);
    if !problems.is_empty() {
        eprintln!("figures: the Xen bench run lacks {problems:?}");
    }
    // Events between two parties: dom0 with two vCPUs on two host CPUs
    // (the guest starts vCPU 1 by VCPUOP_initialise/up and times round
    // trips with it), a run of its own so that the figures above keep
    // their one-CPU machine.
    let two = boot_xen_with(
        &xen,
        &format!("{XEN_CMDLINE} dom0_max_vcpus=2"),
        2,
        guest,
        &format!("{XEN_GUEST_ARGS} role=bench"),
        &icount,
        Duration::from_secs(300),
    )?;
    let problems = verdict_problems(&two, &["bench", "vcpu_up"]);
    if !problems.is_empty() {
        eprintln!("figures: the Xen two-vCPU bench run lacks {problems:?}");
    }
    Ok(XenFigures {
        hypercall: bench_value(&run.serial, "hypercall", "mean_insns"),
        loopback: bench_value(&run.serial, "loopback", "send_deliver_insns"),
        vcpu: bench_value(&two.serial, "vcpu", "send_deliver_insns"),
        first_tsc: bench_value(&run.serial, "first_tsc", "first_tsc"),
        power_on: power_on(&run.raw),
        rtc_wait: longest_gap(&run.raw),
        serial: run.serial,
    })
}

/// Power-on to dom0's first instruction on Xen, in host TSC ticks (under
/// `-icount shift=0`: instructions). With `console_timestamps=raw` Xen
/// stamps each console line with its own TSC (QEMU's, which counts from
/// power-on) when the line is complete; the guest's
/// `BENCH first_tsc=F now_tsc=N` line says that N - F of its own ticks
/// passed from its first instruction to the line's writing. The stamp
/// minus that is the power-on figure, high by the cost of writing the
/// line's characters (one trapped `out` each: well under 1% here).
fn power_on(serial: &str) -> Option<u64> {
    let line = serial.lines().find(|l| l.contains("BENCH first_tsc="))?;
    let stamp = line.split_once('[')?.1.split_once(']')?.0;
    let stamp = u64::from_str_radix(stamp, 16).ok()?;
    let word = |key: &str| -> Option<u64> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|v| v.parse().ok())
    };
    let (first, now) = (word("first_tsc=")?, word("now_tsc=")?);
    stamp.checked_sub(now.checked_sub(first)?)
}

/// The longest stretch of TSC between two stamped console lines up to the
/// guest's `BENCH first_tsc` line. On Xen's boot under QEMU it is the wait
/// in `init_xen_time` → `get_cmos_time` for the CMOS clock's next second
/// (with `-rtc clock=vm` from a whole second it ends at exactly 10^9
/// virtual ns; with QEMU's default host-clock RTC it lasts 0 to 1 s of
/// real time, hundreds of millions of instructions, different every run).
/// Taking the whole stretch off Xen's figure also takes off whatever Xen
/// did in it besides waiting: Xen's figure then errs low, against us.
fn longest_gap(raw: &str) -> Option<u64> {
    let mut last = None;
    let mut longest = None;
    for line in raw.lines() {
        let Some(stamp) = line
            .split_once(") [")
            .and_then(|(_, r)| r.get(..16))
            .and_then(|h| u64::from_str_radix(h, 16).ok())
        else {
            continue;
        };
        if let Some(prev) = last {
            let gap = stamp.saturating_sub(prev);
            longest = Some(longest.map_or(gap, |l: u64| l.max(gap)));
        }
        last = Some(stamp);
        if line.contains("BENCH first_tsc=") {
            return longest;
        }
    }
    None
}

/// `key`'s number on the first `BENCH name ...` line (`BENCH key=N` when
/// `name` is the key itself).
fn bench_value(serial: &str, name: &str, key: &str) -> Option<u64> {
    let prefix = format!("{key}=");
    serial
        .lines()
        .filter_map(|l| l.split_once("BENCH ").map(|(_, r)| r))
        .find(|r| {
            r.split_whitespace()
                .next()
                .is_some_and(|w| w == name || w.starts_with(&prefix))
        })
        .and_then(|r| {
            r.split_whitespace()
                .find_map(|w| w.strip_prefix(prefix.as_str()))
                .and_then(|v| v.parse().ok())
        })
}

/// The goal of every row of the side-by-side table: ours at most half of
/// Xen's instructions.
const GOAL_RATIO: f64 = 0.5;

/// Our side of the table, in instructions, from the same guest binary
/// under the same QEMU (`-icount shift=0`).
pub struct Ours {
    /// `xen_version` round trip (the two-domain bench run).
    pub hypercall: Option<u64>,
    /// Event sent to the other domain and delivered (half its round trip).
    pub event: Option<u64>,
    /// Event sent and delivered within one domain (loopback channel).
    pub loopback: Option<u64>,
    /// Event sent to the domain's other vCPU and delivered (half a round
    /// trip through `SCHEDOP_poll`).
    pub vcpu: Option<u64>,
    /// Power-on to the guest's first instruction (PVH `-kernel`).
    pub power_on: Option<u64>,
}

/// Runs the Xen column (see [`bench_run`]) and writes the side-by-side
/// table against ours.
pub fn side_by_side(
    guest: &Path,
    ours: &Ours,
    out: &mut String,
    missing: &mut Vec<String>,
) -> Result<(), String> {
    let xen = bench_run(guest)?;
    let mut say = |l: String| {
        println!("{l}");
        out.push_str(&l);
        out.push('\n');
    };
    say(format!(
        "Xen 4.17 side by side (QEMU -icount shift=0 -smp 1 -m {XEN_MEM_MIB}, Xen by -kernel, \
         the test guest as PVH dom0 with `{XEN_GUEST_ARGS} role=bench`):"
    ));
    if xen.hypercall.is_none() || xen.loopback.is_none() {
        missing.push("Xen's hypercall or loopback event figure".into());
        eprintln!("figures: Xen run output:\n{}", xen.serial);
    }
    say("  | figure (instructions) | Xen 4.17 | ours | ours/Xen | goal |".into());
    say(row(
        "hypercall round trip",
        xen.hypercall,
        ours.hypercall,
        "",
    ));
    say(row(
        "event send + deliver, one domain (loopback channel)",
        xen.loopback,
        ours.loopback,
        "",
    ));
    say(row(
        "event send + deliver, to the domain's other vCPU (half a round trip, SCHEDOP_poll wake-up; Xen -smp 2)",
        xen.vcpu,
        ours.vcpu,
        "",
    ));
    say(row(
        "event send + deliver, to another domain",
        None,
        ours.event,
        "Xen: not run (dom0 is alone: no second domain without a toolstack)",
    ));
    let xen_boot = xen
        .power_on
        .zip(xen.rtc_wait)
        .map(|(p, w)| p.saturating_sub(w));
    say(row(
        "power-on to the guest's first instruction (Xen without its wait for the RTC's second)",
        xen_boot,
        ours.power_on,
        "",
    ));
    if let (Some(p), Some(w)) = (xen.power_on, xen.rtc_wait) {
        say(format!(
            "  Xen: power-on to dom0's first instruction {p} instructions, of which {w} between two \
             console lines around the wait for the CMOS clock's next second (taken off above)"
        ));
    }
    if let Some(f) = xen.first_tsc {
        say(format!(
            "  Xen: dom0's vCPU 0 creation (its TSC 0) to the guest's first instruction: {f} instructions"
        ));
    }
    Ok(())
}

/// One row of the table: the ratio against the goal, or `why` there is none.
fn row(name: &str, xen: Option<u64>, ours: Option<u64>, why: &str) -> String {
    let n = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    let ratio = match (xen, ours) {
        (Some(x), Some(o)) if x > 0 => {
            let r = o as f64 / x as f64;
            let met = if r <= GOAL_RATIO { "met" } else { "not met" };
            format!("{r:.2}x ({met})")
        }
        _ if !why.is_empty() => why.to_string(),
        _ => "not measured".to_string(),
    };
    format!(
        "  | {name} | {} | {} | {ratio} | at most {GOAL_RATIO}x |",
        n(xen),
        n(ours)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(lines: &[String]) -> XenRun {
        XenRun {
            serial: lines.join("\n"),
            raw: String::new(),
            ended: true,
            elapsed: Duration::ZERO,
        }
    }

    fn passing() -> Vec<String> {
        let mut v: Vec<String> = CHECKS
            .iter()
            .map(|c| format!("(d0) CHECK {c}: PASS"))
            .collect();
        v.push(format!("(d0) VERDICT: PASS {n}/{n}", n = CHECKS.len()));
        v.push("(XEN) Hardware Dom0 halted: halting machine".into());
        v
    }

    #[test]
    fn every_check_passing_is_clean() {
        assert!(verdict_problems(&run(&passing()), &[]).is_empty());
    }

    #[test]
    fn a_failing_or_missing_check_is_reported() {
        let mut lines = passing();
        let i = CHECKS
            .iter()
            .position(|c| *c == "grant_self")
            .expect("listed");
        lines[i] = "(d0) CHECK grant_self: FAIL no free frame".into();
        let p = verdict_problems(&run(&lines), &[]);
        assert!(
            p.iter().any(|m| m == "(d0) CHECK grant_self: PASS"),
            "{p:?}"
        );
        assert!(p.iter().any(|m| m.contains("FAIL no free frame")), "{p:?}");
        // A crash before the end: the later checks and the halt are missing.
        let mut lines = passing();
        lines.truncate(19);
        lines.push("(XEN) Hardware Dom0 crashed: 'noreboot' set - not rebooting.".into());
        let p = verdict_problems(&run(&lines), &[]);
        assert!(
            p.iter().any(|m| m == "(d0) CHECK apic_modes: PASS"),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|m| m.starts_with("(XEN) Hardware Dom0 halted")),
            "{p:?}"
        );
    }

    #[test]
    fn stamps_are_stripped_after_xen_and_guest_prefixes_only() {
        let raw = "(XEN) [0000000015cfc0ac] Freed 656kB init memory\n\
                   (d0) [0000000015d2af2b] CHECK start_info: PASS\n\
                   (d12) [0000000015d2af2b] x\n\
                   (d0) [not a stamp] y\n\
                   plain [0000000015d2af2b] z";
        assert_eq!(
            strip_stamps(raw),
            "(XEN) Freed 656kB init memory\n(d0) CHECK start_info: PASS\n(d12) x\n\
             (d0) [not a stamp] y\nplain [0000000015d2af2b] z"
        );
    }

    #[test]
    fn the_longest_gap_is_taken_before_the_guest_line_only() {
        let raw = "(XEN) [0000000000000010] a\n(XEN) [0000000000000100] b\n\
                   (XEN) [0000000000000180] c\n(d0) [0000000000000200] BENCH first_tsc=1 now_tsc=2\n\
                   (XEN) [0000000000009000] later\n";
        assert_eq!(longest_gap(raw), Some(0xf0));
        assert_eq!(longest_gap("(XEN) [0000000000000010] a\n"), None);
    }

    #[test]
    fn bench_values_are_read_by_line_and_key() {
        let s = "(d0) BENCH first_tsc=22024454\n(d0) BENCH hypercall n=1000 mean_ticks=5945 \
                 mean_insns=5928 min_ticks=11696\n(d0) BENCH loopback n=1000 ports=3,4 \
                 send_deliver_ticks=9 send_deliver_insns=8";
        assert_eq!(bench_value(s, "first_tsc", "first_tsc"), Some(22024454));
        assert_eq!(bench_value(s, "hypercall", "mean_insns"), Some(5928));
        assert_eq!(bench_value(s, "loopback", "send_deliver_insns"), Some(8));
        assert_eq!(bench_value(s, "event", "send_deliver_insns"), None);
    }

    #[test]
    fn xen_power_on_is_the_stamp_less_the_guest_time_before_it() {
        let s = "(XEN) [0000000000000100] Freed 656kB init memory\n\
                 (d0) [0000000015d2af2b] BENCH first_tsc=22045929 now_tsc=22145929\n";
        assert_eq!(power_on(s), Some(0x15d2af2b - 100_000));
        // No stamp (console_timestamps not raw), or no now_tsc: no figure.
        assert_eq!(power_on("(d0) BENCH first_tsc=5 now_tsc=9"), None);
        assert_eq!(power_on("(d0) [10] BENCH first_tsc=5"), None);
    }

    #[test]
    fn a_role_check_is_counted_in_the_verdict() {
        let p = verdict_problems(&run(&passing()), &["bench"]);
        assert!(p.iter().any(|m| m == "(d0) CHECK bench: PASS"), "{p:?}");
        assert!(p.iter().any(|m| m == "(d0) VERDICT: PASS 26/26"), "{p:?}");
    }
}
