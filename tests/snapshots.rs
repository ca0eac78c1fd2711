//! Snapshots (issue 28): a canvas's state is its newest snapshot plus the object ops after it. One is written
//! every `--snapshot-every` object ops (once they are also a quarter of the state), and a canvas quiet for a
//! second with ops after its snapshot gets one at its head; either way a joiner anywhere gets the exact state.

#[macro_use]
mod helpers;

use helpers::{eventually, Client, Store};
use serde_json::json;

/// Creates objects `<prefix>0..count` one at a time, each acked before the next goes (one commit each).
async fn create_one_by_one(client: &mut Client, prefix: &str, count: usize) {
    for n in 0..count {
        client.publish("object-create", json!({"id": format!("{prefix}{n}"), "n": n}), &format!("c{n}")).await;
        loop {
            let frame = client.recv().await;
            if frame["ref"] == format!("c{n}") {
                assert_eq!(frame["type"], "ack", "{frame}");
                break;
            }
        }
    }
}

on_both_buses!(a_snapshot_is_written_every_so_many_object_ops_and_joiners_get_the_exact_state);
async fn a_snapshot_is_written_every_so_many_object_ops_and_joiners_get_the_exact_state(store: Store) {
    let a = store.start(&["--snapshot-every", "10"]).await;
    let b = store.start(&[]).await;
    let mut ann = a.connect("snaps", "ann").await;
    create_one_by_one(&mut ann, "o", 30).await;
    // Due after the 10th, 20th and 30th op; the 30th leaves no op after the snapshot: nothing quiet to write.
    let written = || async { a.metric("relay_snapshots_written_total").await };
    eventually("three snapshots", || async { written().await >= 3.0 }).await;
    assert_eq!(written().await, 3.0);
    let joiner = b.connect("snaps", "bob").await;
    let objects = joiner.welcome["objects"].as_object().unwrap();
    assert_eq!(objects.len(), 30);
    assert_eq!(objects["o29"]["n"], 29);
}

on_both_buses!(a_canvas_quiet_after_a_burst_of_edits_is_snapshotted_at_its_head);
async fn a_canvas_quiet_after_a_burst_of_edits_is_snapshotted_at_its_head(store: Store) {
    // 25 ops are far from --snapshot-every (1,000): only the quiet writes one.
    let a = store.start(&[]).await;
    let b = store.start(&[]).await;
    let mut ann = a.connect("quiet", "ann").await;
    ann.create_objects("o", 25, 10).await;
    eventually("a snapshot of the quiet canvas", || async { a.metric("relay_snapshots_written_total").await >= 1.0 })
        .await;
    assert_eq!(a.metric("relay_snapshots_written_total").await, 1.0, "one, at the head");
    ann.publish("object-delete", json!({"id": "o3"}), "d").await;
    while ann.recv().await["ref"] != "d" {}
    let joiner = b.connect("quiet", "bob").await;
    let objects = joiner.welcome["objects"].as_object().unwrap();
    assert!(objects.len() == 24 && !objects.contains_key("o3"), "the snapshot plus the op after it");
}
