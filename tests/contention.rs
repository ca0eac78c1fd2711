//! Write contention: four instances writing flat out into one file. SQLite lets one process write at a time;
//! the relay's busy handling must keep that invisible: no `SQLITE_BUSY` / "database is locked" reaches a
//! client (as an `unavailable` error) or the log, and every acked message is in the file exactly once.

mod helpers;

use std::path::Path;

use helpers::SharedFile;
use serde_json::Value;
use tokio::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_instances_writing_flat_out_never_surface_a_busy_file() {
    let file = SharedFile::new();
    let mut instances = Vec::new();
    for _ in 0..4 {
        instances.push(file.start(&["--rate-limit", "0"]).await);
    }
    let targets: Vec<String> = instances.iter().map(|i| i.addr.to_string()).collect();
    let load_test = Path::new(env!("CARGO_BIN_EXE_canvas-relay")).with_file_name("load-test");
    assert!(load_test.exists(), "build the workspace first (cargo build --workspace): {}", load_test.display());
    let output = Command::new(load_test)
        .args(["throughput", "--targets", &targets.join(","), "--senders", "8", "--window", "32"])
        .args(["--duration", "3s", "--prefix", "busy", "--json"])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "load-test failed: {}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    println!("4 instances flat out: {report}");
    assert_eq!((report["errors"].as_u64(), report["gaps"].as_u64()), (Some(0), Some(0)), "{report}");
    let acked = report["acked"].as_i64().unwrap();
    assert!(acked > 0 && report["sent"].as_i64() == Some(acked), "every message sent was acked: {report}");
    let logged = "SELECT count(*) FROM message_queue WHERE canvas_id LIKE 'busy%' \
                  AND message_type NOT IN ('user-connected', 'user-disconnected')";
    assert_eq!(file.count(logged), acked, "the file holds every acked message, once");
    let per_canvas_gapless =
        "SELECT count(*) = 0 FROM (SELECT canvas_id, max(seq) - min(seq) + 1 AS span, count(*) AS n \
                              FROM message_queue GROUP BY canvas_id) WHERE span != n";
    assert_eq!(file.count(per_canvas_gapless), 1, "each canvas's seqs are consecutive");
    for (i, instance) in instances.iter().enumerate() {
        let log = instance.log_text();
        for sign in ["locked", "SQLITE_BUSY", "commit failed", "ERROR"] {
            assert!(!log.contains(sign), "instance {i} logged {sign:?}:\n{log}");
        }
    }
}
