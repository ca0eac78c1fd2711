//! The canvas app in real headless Chromium: runs the scripts in `tests/browser/` (node + playwright-core) against
//! this build's binary. `two-pages.mjs`: two pages on two instances sharing one file draw, move, see each other's
//! cursors and presence, and one survives its instance being SIGKILLed and restarted with a resume and identical
//! state. `history.mjs`: a version named in the history panel, the slider dragged back to it showing exactly that
//! state read-only, and a restore that both pages, on two instances, converge on.
//! `scripts/test.sh` installs Chromium, node and playwright-core; without them these tests fail and say so.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

/// One script at a time: each runs a browser and two relays, and its step deadlines assume it has the machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `node <script>` in tests/browser and fails with its output unless it exits 0.
fn run_script(script: &str) {
    // A script that failed (a panic while holding it) says nothing about the next one: go on.
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        dir.join("node_modules/playwright-core").is_dir() && Path::new(&chromium).exists(),
        "the browser test needs Chromium at {chromium} and playwright-core: run scripts/test.sh, or \
         `apt-get install chromium nodejs npm && npm ci --prefix tests/browser`"
    );
    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    let output = Command::new("node")
        .arg(script)
        .current_dir(&dir)
        .env("RELAY_BIN", env!("CARGO_BIN_EXE_canvas-relay"))
        .env("CHROMIUM", &chromium)
        .env("SCREENSHOTS", &screenshots)
        .output()
        .expect("node is required for the browser test (apt-get install nodejs)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the browser test {script} failed:\n{stdout}\n{stderr}");
    println!("{stdout}");
}

#[test]
fn two_pages_on_two_instances_share_one_canvas_through_a_crash() {
    run_script("two-pages.mjs");
}

#[test]
fn the_history_panel_shows_a_named_version_and_restores_it_on_two_instances() {
    run_script("history.mjs");
}
