//! The JavaScript SDK (`clients/js`, `@canvas-relay/client`) against this build's binary: runs its `npm test`
//! (`tsc --noEmit` over the JSDoc-typed sources and the hand-written `.d.ts`, then `node --test`), whose
//! scenarios start real instances on a shared SQLite file and on a Redis bus: concurrent edits through a
//! SIGKILL, a viewer refused, two canvases on one socket, presence and ephemeral events across instances,
//! reset and reload past the TTL, the packed tarball, throwing listeners, a canvas of 30,000 objects left
//! before its welcome and opened again, frames at the relay's size limit and one byte over. `scripts/test.sh` installs node,
//! redis-server and the package's dev dependencies (`npm ci --prefix clients/js`); without them this test
//! fails and says so.

use std::path::Path;
use std::process::Command;

#[test]
fn the_js_client_passes_its_suite_against_this_build() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/js");
    assert!(
        dir.join("node_modules/ws").is_dir(),
        "the JS client's tests need its dev dependencies: run `npm ci --prefix clients/js` (scripts/test.sh does)"
    );
    let output = Command::new("npm")
        .arg("test")
        .current_dir(&dir)
        .env("RELAY_BIN", env!("CARGO_BIN_EXE_canvas-relay"))
        .output()
        .expect("npm is required for the JS client's tests (apt-get install nodejs npm)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the JS client's tests failed:\n{stdout}\n{stderr}");
    println!("{stdout}");
}
