//! Resume (`since` + `epoch`) across instances, and TTL expiry: what is resumable, what forces a reload, and
//! that seq survives the cleanup of every row.

#[macro_use]
mod helpers;

use std::time::Duration;

use helpers::{SharedFile, Store, WAIT};
use serde_json::json;

on_both_buses!(resume_on_another_instance_replays_then_goes_live);
async fn resume_on_another_instance_replays_then_goes_live(store: Store) {
    let file = &store;
    let (a, b) = (file.start(&[]).await, file.start(&[]).await);
    let mut writer = a.connect("r", "ann").await;
    // Seq 1 is ann's user-connected; notes n = 1..=5 are seqs 2..=6.
    for n in 1..=5 {
        writer.publish("note", json!({"n": n}), &format!("r{n}")).await;
        assert_eq!(writer.recv().await["seq"], n + 1);
    }
    let mut resumed = b.resume("r", "bob", 3, &writer.epoch()).await;
    assert_eq!(resumed.welcome["resumed"], true);
    assert_eq!(resumed.seq(), 3, "a resumed welcome starts at since");
    assert!(resumed.welcome.get("objects").is_none(), "objects are omitted when resumed");
    writer.publish("note", json!({"n": 6}), "r6").await;
    // Replay 4..=6 (n = 3..=5) and bob's own user-connected (7), then live 8 (n = 6): no gap, no repeat.
    let (seen, _) = resumed.read_through(8).await;
    let kinds: Vec<&str> = seen.iter().map(|(_, s)| s.kind()).collect();
    assert_eq!(kinds, ["note", "note", "note", "user-connected", "note"]);
    let ns: Vec<_> =
        seen.iter().filter(|(_, s)| s.kind() == "note").map(|(_, s)| s.data()["n"].as_u64().unwrap()).collect();
    assert_eq!(ns, [3, 4, 5, 6]);
}

on_both_buses!(resume_at_the_head_replays_only_its_own_arrival_and_goes_live);
async fn resume_at_the_head_replays_only_its_own_arrival_and_goes_live(store: Store) {
    let file = &store;
    let a = file.start(&[]).await;
    let mut writer = a.connect("h", "ann").await;
    writer.publish("note", json!(1), "r").await;
    assert_eq!(writer.recv().await["seq"], 2);
    let mut resumed = a.resume("h", "bob", 2, &writer.epoch()).await;
    assert_eq!((resumed.welcome["resumed"].as_bool(), resumed.seq()), (Some(true), 2));
    writer.publish("note", json!(2), "r").await;
    let replayed = resumed.recv().await;
    assert_eq!((replayed["seq"].as_u64(), replayed["type"].as_str()), (Some(3), Some("user-connected")));
    assert_eq!(resumed.recv().await["seq"], 4);
}

on_both_buses!(a_wrong_epoch_or_a_future_since_means_reload);
async fn a_wrong_epoch_or_a_future_since_means_reload(store: Store) {
    let file = &store;
    let a = file.start(&[]).await;
    let mut writer = a.connect("e", "ann").await;
    for _ in 0..3 {
        writer.publish("note", json!(null), "r").await;
        writer.recv().await;
    }
    // Seqs: 1 ann connected, 2..=4 notes, 5 bob connected (his second connection logs nothing).
    let stale = a.resume("e", "bob", 1, "some-other-epoch").await;
    assert_eq!((stale.welcome["resumed"].as_bool(), stale.seq()), (Some(false), 5));
    let future = a.resume("e", "bob", 99, &writer.epoch()).await;
    assert_eq!((future.welcome["resumed"].as_bool(), future.seq()), (Some(false), 5));
}

#[tokio::test]
async fn a_fresh_file_has_a_new_epoch() {
    let (one, two) = (SharedFile::new(), SharedFile::new());
    let (a, b) = (one.start(&[]).await, two.start(&[]).await);
    let (x, y) = (a.connect("c", "u").await, b.connect("c", "u").await);
    assert_ne!(x.epoch(), y.epoch());
}

on_both_buses!(expired_rows_force_a_reload_and_seq_survives_their_cleanup);
async fn expired_rows_force_a_reload_and_seq_survives_their_cleanup(store: Store) {
    let file = &store;
    // Cleanup rarely, so the reads' own expiry filter is what the resume sees first.
    let a = file.start(&["--message-ttl", "1s", "--cleanup-interval", "1h"]).await;
    let mut writer = a.connect("ttl", "ann").await;
    for _ in 0..3 {
        writer.publish("note", json!(null), "r").await;
        writer.recv().await;
    }
    // Time itself is the condition here: once 1.3 s have passed, every row is past the 1 s TTL.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    if store.shared_file().is_some() {
        // (On Redis the stream's own expiry is the cleanup: it is gone by now, whatever the flag says.)
        assert_eq!(file.logged("ttl").await.len(), 4, "cleanup has not run yet");
    }
    let late = a.resume("ttl", "bob", 0, &writer.epoch()).await;
    // Seqs: 1 ann connected, 2..=4 notes, 5 bob connected.
    assert_eq!((late.welcome["resumed"].as_bool(), late.seq()), (Some(false), 5), "expired rows are not replayed");
    drop(a);

    // Now with cleanup running: the rows go, the seq stays. (A long presence timeout keeps the killed
    // instance's connections, so presence logs nothing more here.)
    let a = file.start(&["--message-ttl", "1s", "--cleanup-interval", "100ms", "--presence-timeout", "1h"]).await;
    tokio::time::timeout(WAIT, async {
        while !file.logged("ttl").await.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("cleanup deleted the expired rows");
    let mut writer = a.connect("ttl", "ann").await;
    assert_eq!(writer.seq(), 5, "seq is kept in the canvas row, not the log");
    writer.publish("note", json!(null), "r").await;
    assert_eq!(writer.recv().await["seq"], 6, "seq is never reused, even after every row expired");
}
