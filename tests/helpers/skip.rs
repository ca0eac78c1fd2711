//! Skipping a test on purpose, never by accident or in silence. A skip switch (`RELAY_SKIP_REDIS_TESTS`,
//! `RELAY_SKIP_MOUNT_TESTS`) skips only when it is exactly `1`; any other value, empty included, runs the
//! test. Under CI (`CI` set to anything but empty, `0` or `false`) a skip is refused: the test fails and
//! says which variable to unset. A skip that is honoured writes a `SKIPPED` line straight to the process's
//! stderr, past the test harness's capture, so it shows in a plain `cargo test` run as well as with
//! `--nocapture` (a skipped test still counts as passed in cargo's summary; the line is how it is seen).
//!
//! What a missing program does without a skip (it fails the test) is each helper's own business.

use std::io::Write;

/// Whether `var` asks to skip `what` (e.g. "a Redis-bus test"). Panics under CI when it does.
pub fn skip_requested(var: &str, what: &str) -> bool {
    if std::env::var_os(var).is_none_or(|value| value != "1") {
        return false;
    }
    assert!(!under_ci(), "{var}=1 asks to skip {what}, but CI is set and CI runs every test: unset {var}");
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    // Straight to stderr, not `eprintln!`: the harness swallows what passing tests print with the macros.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {what} not run, because {var}=1");
    true
}

/// `CI` set as CI services set it (`true`, `1`, a name); empty, `0` and `false` are not CI.
fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| !matches!(value.trim().to_ascii_lowercase().as_str(), "" | "0" | "false"))
}
