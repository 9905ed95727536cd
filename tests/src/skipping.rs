//! Skipping a test (or part of one) this machine cannot run: a missing tool, no root, no
//! loop devices. Every skip of the suite goes through [`skip`] (or the [`skip!`](crate::skip!),
//! [`require_root!`](crate::require_root!) and [`require_programs!`](crate::require_programs!)
//! macros built on it), so one switch can forbid them all.
//!
//! Owns: the `SKIPPED (reason)` line and the `REVERB_TESTS_STRICT` knob ([`STRICT_VAR`]).
//!
//! Invariant: with `REVERB_TESTS_STRICT` set to anything but empty or `0`, a skip is a
//! failure (`SKIPPED in strict mode: reason`). CI runs as root with every tool installed and
//! sets it, so a suite that would silently test nothing there (no `mkfs.xfs`, no `strace`)
//! fails instead of passing.

use std::ffi::OsStr;

/// The environment variable that turns every skip into a failure.
pub const STRICT_VAR: &str = "REVERB_TESTS_STRICT";

/// What a skip does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipPolicy {
    /// Print `SKIPPED (reason)` on stderr; the test goes on without the part (or returns).
    Print,
    /// Panic: the test fails, naming the reason.
    Fail,
}

impl SkipPolicy {
    /// The policy for a value of [`STRICT_VAR`] (`None`: unset). Empty and `0` are off.
    pub fn from_value(value: Option<&OsStr>) -> SkipPolicy {
        match value {
            Some(v) if !v.is_empty() && v != "0" => SkipPolicy::Fail,
            _ => SkipPolicy::Print,
        }
    }

    /// The policy this process runs under.
    pub fn from_env() -> SkipPolicy {
        SkipPolicy::from_value(std::env::var_os(STRICT_VAR).as_deref())
    }

    /// Skips as this policy says: prints, or panics (in strict mode).
    #[track_caller]
    pub fn skip(self, reason: &str) {
        match self {
            SkipPolicy::Print => eprintln!("SKIPPED ({reason})"),
            SkipPolicy::Fail => {
                panic!("SKIPPED in strict mode: {reason} (unset {STRICT_VAR} to allow skips)")
            }
        }
    }
}

/// Skips a part of the calling test, saying why (`reason` names what is missing and what
/// is not tested); the caller leaves the part out, or returns ([`skip!`](crate::skip!) does
/// both). Panics instead when [`STRICT_VAR`] is set.
#[track_caller]
pub fn skip(reason: &str) {
    SkipPolicy::from_env().skip(reason);
}

/// `None` when every program is on PATH, else which are not (`setfacl, getfacl`).
pub fn missing_programs(programs: &[&str]) -> Option<String> {
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|p| !crate::have(p))
        .collect();
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// Skips the rest of the calling function (which returns `()`): `skip!("why: {what}")`
/// formats the reason like `format!`. See [`skip`](crate::skip()).
#[macro_export]
macro_rules! skip {
    ($($reason:tt)+) => {{
        $crate::skip(&format!($($reason)+));
        return;
    }};
}

/// Skips the rest of the calling function when not root.
#[macro_export]
macro_rules! require_root {
    ($why:expr) => {
        if !$crate::is_root() {
            $crate::skip!("needs root: {}", $why);
        }
    };
}

/// Skips the rest of the calling function when a program is not on PATH:
/// `require_programs!(["setfattr", "getfattr"], "baseline xattrs")`.
#[macro_export]
macro_rules! require_programs {
    ($programs:expr, $what:expr) => {
        if let Some(missing) = $crate::missing_programs(&$programs) {
            $crate::skip!("not installed: {missing}: {}", $what);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_empty_or_zero_value_allows_skips() {
        assert_eq!(SkipPolicy::from_value(None), SkipPolicy::Print);
        assert_eq!(
            SkipPolicy::from_value(Some(OsStr::new(""))),
            SkipPolicy::Print
        );
        assert_eq!(
            SkipPolicy::from_value(Some(OsStr::new("0"))),
            SkipPolicy::Print
        );
        for strict in ["1", "yes", "true"] {
            assert_eq!(
                SkipPolicy::from_value(Some(OsStr::new(strict))),
                SkipPolicy::Fail,
                "{strict}"
            );
        }
    }

    #[test]
    fn a_skip_prints_and_returns_when_not_strict() {
        SkipPolicy::Print.skip("mkfs.xfs is not installed: the XFS sweep");
    }

    #[test]
    #[should_panic(expected = "SKIPPED in strict mode: mkfs.xfs is not installed: the XFS sweep")]
    fn a_skip_fails_the_test_in_strict_mode() {
        SkipPolicy::Fail.skip("mkfs.xfs is not installed: the XFS sweep");
    }

    #[test]
    fn missing_programs_names_only_the_missing_ones() {
        assert_eq!(missing_programs(&["sh"]), None);
        assert_eq!(
            missing_programs(&["sh", "reverb-no-such-program-a", "reverb-no-such-program-b"]),
            Some("reverb-no-such-program-a, reverb-no-such-program-b".to_owned())
        );
    }
}
