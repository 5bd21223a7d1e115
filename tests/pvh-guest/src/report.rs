//! The report format that `cargo xtask test` reads:
//!
//! ```text
//! CHECK <name>: PASS
//! CHECK <name>: FAIL <why>
//! VERDICT: PASS <passed>/<total>
//! ```
//!
//! A missing verdict is a failure too (the guest died or hung).

use core::fmt::{self, Write};

/// The verdict line when every check passed (followed by the counts).
pub const VERDICT_PASS: &str = "VERDICT: PASS";
/// The verdict line when a check failed or the guest panicked.
pub const VERDICT_FAIL: &str = "VERDICT: FAIL";

/// Collects check results and prints them as they come.
pub struct Report<W: Write> {
    out: W,
    passed: u32,
    total: u32,
}

#[cfg_attr(not(target_os = "none"), allow(dead_code))]
impl<W: Write> Report<W> {
    /// A report printing to `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            passed: 0,
            total: 0,
        }
    }

    /// Records one check: `Ok(())` passes, `Err(why)` fails with a reason.
    pub fn check(&mut self, name: &str, result: Result<(), fmt::Arguments<'_>>) {
        self.total += 1;
        let _ = match result {
            Ok(()) => {
                self.passed += 1;
                writeln!(self.out, "CHECK {name}: PASS")
            }
            Err(why) => writeln!(self.out, "CHECK {name}: FAIL {why}"),
        };
    }

    /// Prints the verdict; true if every check passed.
    pub fn verdict(&mut self) -> bool {
        let ok = self.total > 0 && self.passed == self.total;
        let line = if ok { VERDICT_PASS } else { VERDICT_FAIL };
        let _ = writeln!(self.out, "{line} {}/{}", self.passed, self.total);
        ok
    }

    /// Free-form output.
    pub fn note(&mut self, args: fmt::Arguments<'_>) {
        let _ = writeln!(self.out, "{args}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_pass_gives_pass_verdict() {
        let mut r = Report::new(String::new());
        r.check("a", Ok(()));
        r.check("b", Ok(()));
        assert!(r.verdict());
        assert_eq!(r.out, "CHECK a: PASS\nCHECK b: PASS\nVERDICT: PASS 2/2\n");
    }

    #[test]
    fn one_failure_fails_the_verdict() {
        let mut r = Report::new(String::new());
        r.check("a", Ok(()));
        r.check("b", Err(format_args!("got {}", 3)));
        assert!(!r.verdict());
        assert_eq!(
            r.out,
            "CHECK a: PASS\nCHECK b: FAIL got 3\nVERDICT: FAIL 1/2\n"
        );
    }

    #[test]
    fn no_checks_is_not_a_pass() {
        let mut r = Report::new(String::new());
        assert!(!r.verdict());
    }
}
