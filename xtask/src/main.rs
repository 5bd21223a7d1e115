//! # xtask: the project's automation
//!
//! `cargo xtask <command>` (the alias lives in `.cargo/config.toml`) is the
//! interface that users and CI rely on:
//!
//! - `test`: every check the project has (format, lints, host tests, the
//!   `no_std` builds for `x86_64-unknown-none`, and the slower proofs).
//! - `run`: build the image, boot it in an emulator and show the guests'
//!   console.
//! - `image`, `linux`, `bench`: see `cargo xtask help`.
//!
//! Each command is a list of steps; every step prints what it runs, and the
//! first failing step stops the command with a non-zero exit status.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

mod devices;
mod figures;
mod image;
mod linux;
mod steps;
mod uplink;
mod xen;

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  test [--quick]     run every check: fmt, clippy, host tests, no_std builds,
                     and the proofs (Miri, loom, bounded fuzzing);
                     --quick skips the proofs
  e2e [NAME]         run the end-to-end boots alone (QEMU and Bochs), or those matching NAME
  stress [NAME] --runs N [--smp N]
                     boot the e2e cases matching NAME N times each (no repeat
                     of a run that reset); every failure is reported with its
                     serial and QEMU -d logs (target/stress/); --smp overrides
                     the host CPUs of the QEMU cases
  miri               run the Miri suite alone (nightly toolchain)
  loom               run the loom models alone
  fuzz [--runs N] [--seconds S]
                     run each fuzz target for N inputs or S seconds (20000, 90)
  bench [--figures-only|--no-figures]
                     run the criterion benchmarks, then the system figures
                     (image size, hypercall, event, boot under -icount,
                     the same against Xen 4.17, Linux vs bare QEMU):
                     target/figures.txt, docs/figures.md; --xen-only: the
                     Xen side-by-side table alone; --boot-only: the QEMU
                     boot figure alone; --block-only: the block figures
                     alone; --net-only: the network figures alone (two
                     Linux domains against two bare QEMUs joined by
                     -netdev socket); --smp-only: the aggregate
                     hypercall rate of two domains on -smp 2 against one;
                     --devices-only: virtio devices under the service
                     domain (disk file, user-network uplink) against bare
                     QEMU
  run [options]      build the image, boot it in QEMU (AMD SVM) with the
                     console live; exits 0 only on a clean stop. Options:
                     --vendor amd|intel, --cmdline S (hypervisor options),
                     --mem MiB, --smp N, --module FILE, --timeout SECS, --gdb,
                     --bochs-cpu MODEL (Intel runs; e.g. ryzen for SVM),
                     --service (start the service domain first: xenstore
                     for every domain); with --linux (QEMU only):
                     --disk-file PATH (PATH on virtio-blk at 00:04.0,
                     assigned to the service domain, is the Linux's xvda;
                     created from root.ext4 if missing), --net
                     user[,hostfwd=...] (virtio-net at 00:05.0 on QEMU's
                     user network as the switch's uplink; the Linux is
                     10.0.2.15/24, gateway 10.0.2.2)
  image [--vendor V] build the bootable image: target/image/hypervisor.elf
  linux [--force]    fetch Debian's PVH Linux kernel (apt, network) and build
                     a busybox initramfs: target/linux/vmlinux and
                     target/linux/initramfs.cpio; cached, --force refetches
  help               this text
";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let result = match cmd.as_str() {
        "test" => steps::test(&rest),
        "miri" => steps::miri(),
        "loom" => steps::loom(),
        "fuzz" => steps::fuzz(&rest),
        "bench" => steps::bench(&rest),
        "run" => image::run_cmd(&rest),
        "e2e" => image::e2e_cmd(&rest),
        "stress" => image::stress_cmd(&rest),
        "image" => image::image(&rest),
        "linux" => linux::linux(&rest),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command `{other}`\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the parent of this crate's directory).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// The `cargo` that invoked us, so that the toolchain file is honoured.
pub fn cargo() -> Command {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut c = Command::new(cargo);
    c.current_dir(root());
    c
}

/// Runs a command, echoing it first; an error names the command that failed.
pub fn run(mut cmd: Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    eprintln!("\n==> {shown}");
    let status = cmd
        .status()
        .map_err(|e| format!("could not start {shown}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed: {status}"))
    }
}
