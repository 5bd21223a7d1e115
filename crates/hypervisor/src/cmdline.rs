//! The hypervisor's command line: space-separated `key=value` options, as
//! Xen's. Unknown options are reported and ignored, never fatal.

use log::LevelFilter;

/// How the machine stops when the hypervisor is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitMethod {
    /// Halt the CPUs (the default: safe on any machine).
    Halt,
    /// QEMU's `isa-debug-exit` device at the given I/O port: the emulator
    /// exits with status `(value << 1) | 1`.
    IsaDebugExit(u16),
    /// Bochs: writing `Shutdown` to I/O port 0x8900 ends the simulation.
    BochsShutdown,
}

/// A deliberate fault, to check the hypervisor's own fault reporting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelfTest {
    /// None (the default).
    None,
    /// Execute `ud2` after boot: the exception report must appear and the
    /// machine stop with a failure status.
    InvalidOpcode,
    /// `selftest=ap-stack`: the last AP to start overflows its stack into
    /// the guard page below it: a double fault on that AP, whose report must
    /// appear after the other CPUs are parked.
    ApStackOverflow,
}

/// The options the hypervisor understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// `loglvl=`: `none`, `error`, `warning`, `info`, `debug`, `all` (Xen's
    /// names) or the `log` crate's `warn`/`trace`.
    pub log_level: LevelFilter,
    /// `exit=`: `halt`, `isa-debug-exit[@port]` (port in hex, default 0xf4)
    /// or `bochs`.
    pub exit: ExitMethod,
    /// `selftest=ud` or `selftest=ap-stack`: see [`SelfTest`].
    pub selftest: SelfTest,
    /// `local=on|off`: whether CPUs handle domain-local exits under the
    /// domain's own lock (`hv_core::local`, the default) or take every
    /// exit on the global path (for comparisons and diagnosis).
    pub local_exits: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            log_level: LevelFilter::Info,
            exit: ExitMethod::Halt,
            selftest: SelfTest::None,
            local_exits: true,
        }
    }
}

/// An option that was not understood, kept for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unknown<'a>(pub &'a str);

impl Options {
    /// Parses `cmdline`, calling `unknown` for every word it does not
    /// understand (a bad value counts as not understood).
    pub fn parse<'a>(cmdline: &'a str, mut unknown: impl FnMut(Unknown<'a>)) -> Self {
        let mut opts = Self::default();
        for word in cmdline.split_ascii_whitespace() {
            let (key, value) = word.split_once('=').unwrap_or((word, ""));
            let ok = match key {
                "loglvl" => parse_level(value).map(|l| opts.log_level = l).is_some(),
                "exit" => parse_exit(value).map(|e| opts.exit = e).is_some(),
                "selftest" => match value {
                    "ud" => Some(SelfTest::InvalidOpcode),
                    "ap-stack" => Some(SelfTest::ApStackOverflow),
                    _ => None,
                }
                .map(|t| opts.selftest = t)
                .is_some(),
                "local" => match value {
                    "on" => Some(true),
                    "off" => Some(false),
                    _ => None,
                }
                .map(|on| opts.local_exits = on)
                .is_some(),
                _ => false,
            };
            if !ok {
                unknown(Unknown(word));
            }
        }
        opts
    }
}

fn parse_level(v: &str) -> Option<LevelFilter> {
    Some(match v {
        "none" => LevelFilter::Off,
        "error" => LevelFilter::Error,
        "warning" | "warn" => LevelFilter::Warn,
        "info" => LevelFilter::Info,
        "debug" => LevelFilter::Debug,
        "all" | "trace" => LevelFilter::Trace,
        _ => return None,
    })
}

fn parse_exit(v: &str) -> Option<ExitMethod> {
    match v.split_once('@') {
        None if v == "halt" => Some(ExitMethod::Halt),
        None if v == "isa-debug-exit" => Some(ExitMethod::IsaDebugExit(0xf4)),
        None if v == "bochs" => Some(ExitMethod::BochsShutdown),
        Some(("isa-debug-exit", port)) => {
            let hex = port.strip_prefix("0x").unwrap_or(port);
            u16::from_str_radix(hex, 16)
                .ok()
                .map(ExitMethod::IsaDebugExit)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> (Options, Vec<&str>) {
        let mut bad = Vec::new();
        let o = Options::parse(s, |Unknown(w)| bad.push(w));
        (o, bad)
    }

    #[test]
    fn empty_gives_defaults() {
        assert_eq!(parse("   "), (Options::default(), vec![]));
    }

    #[test]
    fn known_options() {
        let (o, bad) = parse("loglvl=debug  exit=isa-debug-exit@0x501 selftest=ud");
        assert!(bad.is_empty());
        assert_eq!(o.selftest, SelfTest::InvalidOpcode);
        assert_eq!(o.log_level, LevelFilter::Debug);
        assert_eq!(o.exit, ExitMethod::IsaDebugExit(0x501));
        assert_eq!(parse("exit=bochs").0.exit, ExitMethod::BochsShutdown);
        assert_eq!(
            parse("selftest=ap-stack").0.selftest,
            SelfTest::ApStackOverflow
        );
        let (o, _) = parse("exit=isa-debug-exit loglvl=none");
        assert_eq!(o.exit, ExitMethod::IsaDebugExit(0xf4));
        assert_eq!(o.log_level, LevelFilter::Off);
    }

    #[test]
    fn bad_values_are_reported_and_leave_defaults() {
        let (o, bad) =
            parse("loglvl=loud exit=isa-debug-exit@zz exit=reboot dom0_mem=1G loglvl selftest=x");
        assert_eq!(o, Options::default());
        assert_eq!(
            bad,
            [
                "loglvl=loud",
                "exit=isa-debug-exit@zz",
                "exit=reboot",
                "dom0_mem=1G",
                "loglvl",
                "selftest=x",
            ]
        );
    }

    #[test]
    fn local_exits_on_by_default_off_on_request() {
        assert!(parse("").0.local_exits);
        assert!(!parse("local=off").0.local_exits);
        assert!(parse("local=off local=on").0.local_exits);
        let (o, unknown) = parse("local=maybe");
        assert!(o.local_exits);
        assert_eq!(unknown, ["local=maybe"]);
    }

    #[test]
    fn later_options_win() {
        let (o, _) = parse("loglvl=error loglvl=all");
        assert_eq!(o.log_level, LevelFilter::Trace);
    }
}
