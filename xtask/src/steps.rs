//! The commands' steps.

use crate::{cargo, root, run};
use std::process::Command;

/// Crates that must build for bare metal, each with the feature sets to try.
const NO_STD_CRATES: &[(&str, &[&str])] = &[
    ("xen-abi", &["", "guest"]),
    ("pv-rings", &[""]),
    ("hv-core", &[""]),
    ("guest-loader", &[""]),
    ("arch-svm", &[""]),
    ("arch-common", &[""]),
    ("arch-vmx", &[""]),
    ("xenstored", &[""]),
    ("service-domain", &[""]),
];

/// Crates whose default features need `std`: their bare-metal builds use
/// `--no-default-features`.
const STD_BY_DEFAULT: &[&str] = &["xenstored"];

/// The bare-metal target.
const TARGET: &str = "x86_64-unknown-none";

/// Crates whose test suites also run under Miri.
const MIRI_CRATES: &[&str] = &["xen-abi", "pv-rings", "xenstored"];

/// `(crate, test target)` pairs that hold loom models, run with `--cfg loom`.
const LOOM_TESTS: &[(&str, &str)] = &[("pv-rings", "loom"), ("hv-core", "loom_tlb")];

/// Directories (relative to the root) holding a `cargo fuzz` project.
const FUZZ_DIRS: &[&str] = &[
    "crates/pv-rings/fuzz",
    "crates/guest-loader/fuzz",
    "crates/hv-core/fuzz",
    "crates/xenstored/fuzz",
    "crates/service-domain/fuzz",
];

/// Crates with criterion benchmarks.
const BENCH_CRATES: &[&str] = &["pv-rings", "guest-loader", "hv-core", "xenstored"];

pub fn test(args: &[&str]) -> Result<(), String> {
    let mut quick = false;
    for a in args {
        match *a {
            "--quick" => quick = true,
            other => return Err(format!("test: unknown option `{other}`")),
        }
    }

    let mut c = cargo();
    c.args(["fmt", "--all", "--check"]);
    run(c)?;

    let mut c = cargo();
    c.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    run(c)?;

    let mut c = cargo();
    c.args(["test", "--workspace"]);
    run(c)?;

    no_std_builds()?;
    abi_headers()?;
    crate::image::e2e()?;

    if !quick {
        miri()?;
        loom()?;
        fuzz(&[])?;
    }
    eprintln!("\nxtask test: all steps passed");
    Ok(())
}

fn no_std_builds() -> Result<(), String> {
    for (krate, feature_sets) in NO_STD_CRATES {
        for features in *feature_sets {
            let mut c = cargo();
            c.args(["build", "--target", TARGET, "-p", krate]);
            if STD_BY_DEFAULT.contains(krate) {
                c.arg("--no-default-features");
            }
            if !features.is_empty() {
                c.args(["--features", features]);
            }
            run(c)?;
            let mut c = cargo();
            c.args(["clippy", "--target", TARGET, "-p", krate]);
            if STD_BY_DEFAULT.contains(krate) {
                c.arg("--no-default-features");
            }
            if !features.is_empty() {
                c.args(["--features", features]);
            }
            c.args(["--", "-D", "warnings"]);
            run(c)?;
        }
    }
    // The 32-bit test guest, on its own target (see image::build_test_guest32).
    crate::image::build_test_guest32()?;
    let mut c = cargo();
    c.args([
        "clippy",
        "--target",
        crate::image::GUEST32_TARGET,
        "-p",
        "pvh-test-guest32",
        "--",
        "-D",
        "warnings",
    ]);
    c.env(
        "CARGO_TARGET_I686_UNKNOWN_LINUX_GNU_RUSTFLAGS",
        crate::image::GUEST32_RUSTFLAGS,
    );
    run(c)?;
    let mut c = cargo();
    c.args([
        "clippy",
        "--target",
        TARGET,
        "-p",
        "hypervisor",
        "--",
        "-D",
        "warnings",
    ]);
    run(c)
}

/// Xen's public headers as Debian installs them (package libxen-dev).
const XEN_HEADERS: &str = "/usr/include/xen";

/// Cross-checks xen-abi's layouts and constants against Xen's own C headers
/// (compiled with gcc, x86_64 and -m32). Debian ships an older Xen than the
/// crate follows, so structs and names it lacks are skipped, not failed.
pub fn abi_headers() -> Result<(), String> {
    if !std::path::Path::new(XEN_HEADERS).join("xen.h").exists() {
        return Err(format!(
            "{XEN_HEADERS}/xen.h is missing: apt-get install libxen-dev gcc-multilib"
        ));
    }
    let mut c = Command::new("python3");
    c.arg(root().join("crates/xen-abi/tools/check_layouts.py"))
        .args(["--allow-missing", XEN_HEADERS]);
    run(c)
}

/// A `cargo` run through rustup's proxy on the nightly toolchain.
fn nightly_cargo() -> Command {
    let mut c = Command::new("cargo");
    c.arg("+nightly");
    c.current_dir(root());
    c.env_remove("RUSTUP_TOOLCHAIN");
    c.env_remove("CARGO");
    c
}

pub fn miri() -> Result<(), String> {
    for krate in MIRI_CRATES {
        let mut c = nightly_cargo();
        c.args(["miri", "test", "-p", krate]);
        c.env("CARGO_TARGET_DIR", root().join("target/miri"));
        run(c)?;
    }
    Ok(())
}

pub fn loom() -> Result<(), String> {
    for (krate, test) in LOOM_TESTS {
        let mut c = cargo();
        c.args(["test", "--release", "-p", krate, "--test", test]);
        c.env("RUSTFLAGS", "--cfg loom");
        c.env("CARGO_TARGET_DIR", root().join("target/loom"));
        run(c)?;
    }
    Ok(())
}

pub fn fuzz(args: &[&str]) -> Result<(), String> {
    let mut runs: u64 = 20_000;
    // Each target stops at `runs` inputs or after this many seconds,
    // whichever comes first: the slow targets (a whole hypervisor per
    // input) keep CI's time bounded.
    let mut seconds: u64 = 90;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--runs" => {
                runs = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("fuzz: --runs takes a number")?;
            }
            "--seconds" => {
                seconds = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("fuzz: --seconds takes a number")?;
            }
            other => return Err(format!("fuzz: unknown option `{other}`")),
        }
    }
    for dir in FUZZ_DIRS {
        let dir = root().join(dir);
        let out = nightly_cargo()
            .current_dir(&dir)
            .args(["fuzz", "list"])
            .output()
            .map_err(|e| {
                format!("cargo fuzz list: {e} (install with `cargo install cargo-fuzz`)")
            })?;
        if !out.status.success() {
            return Err(format!(
                "cargo fuzz list in {} failed: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        for target in String::from_utf8_lossy(&out.stdout).lines() {
            let mut c = nightly_cargo();
            c.current_dir(&dir);
            c.args([
                "fuzz",
                "run",
                target,
                "--",
                &format!("-runs={runs}"),
                &format!("-max_total_time={seconds}"),
            ]);
            run(c)?;
        }
    }
    Ok(())
}

/// `cargo xtask bench [--figures-only | --no-figures] [criterion args]`:
/// the criterion benchmarks, then the whole-system figures
/// (`crate::figures`, docs/figures.md).
pub fn bench(args: &[&str]) -> Result<(), String> {
    let figures_only = args.contains(&"--figures-only");
    let no_figures = args.contains(&"--no-figures");
    let args: Vec<&str> = args
        .iter()
        .copied()
        .filter(|a| {
            !matches!(
                *a,
                "--figures-only"
                    | "--no-figures"
                    | "--no-bochs"
                    | "--bochs-only"
                    | "--xenstore-only"
                    | "--xen-only"
                    | "--boot-only"
                    | "--block-only"
                    | "--net-only"
                    | "--smp-only"
                    | "--devices-only"
            )
        })
        .collect();
    if !figures_only {
        for krate in BENCH_CRATES {
            let mut c = cargo();
            c.args(["bench", "-p", krate]);
            if !args.is_empty() {
                c.arg("--");
                c.args(&args);
            }
            run(c)?;
        }
    }
    if no_figures {
        return Ok(());
    }
    crate::figures::figures()
}
