//! The canvas app in real headless Chromium: runs `tests/browser/two-pages.mjs` (node + playwright-core) against
//! this build's binary. Two pages on two instances sharing one file draw, move, see each other's cursors and
//! presence, and one survives its instance being SIGKILLed and restarted with a resume and identical state.
//! `scripts/test.sh` installs Chromium, node and playwright-core; without them this test fails and says so.

use std::path::Path;
use std::process::Command;

#[test]
fn two_pages_on_two_instances_share_one_canvas_through_a_crash() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        dir.join("node_modules/playwright-core").is_dir() && Path::new(&chromium).exists(),
        "the browser test needs Chromium at {chromium} and playwright-core: run scripts/test.sh, or \
         `apt-get install chromium nodejs npm && npm ci --prefix tests/browser`"
    );
    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    let output = Command::new("node")
        .arg("two-pages.mjs")
        .current_dir(&dir)
        .env("RELAY_BIN", env!("CARGO_BIN_EXE_canvas-relay"))
        .env("CHROMIUM", &chromium)
        .env("SCREENSHOTS", &screenshots)
        .output()
        .expect("node is required for the browser test (apt-get install nodejs)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the browser test failed:\n{stdout}\n{stderr}");
    println!("{stdout}");
}
