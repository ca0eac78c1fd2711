//! Storage does not grow with names nobody uses: a canvas that holds no objects and no connection is
//! forgotten once its messages have expired, so connecting to ever new canvas names costs nothing lasting.
//! A forgotten canvas used again starts a new epoch: a client that saw it before reloads instead of taking
//! the new seqs for the old ones.

#[macro_use]
mod helpers;

use std::time::Duration;

use helpers::{Store, WAIT};
use serde_json::json;

on_both_buses!(canvases_used_only_by_connecting_are_forgotten_and_come_back_in_a_new_epoch);
async fn canvases_used_only_by_connecting_are_forgotten_and_come_back_in_a_new_epoch(store: Store) {
    let a = store.start(&["--message-ttl", "1s", "--cleanup-interval", "100ms"]).await;
    let mut keeper = a.connect("kept", "ann").await;
    keeper.publish("object-create", json!({"id": "o1"}), "c").await;
    assert_eq!(keeper.recv().await["type"], "ack");
    keeper.close().await; // objects keep a canvas, connection or not
    let first = a.connect("passing-0", "bob").await;
    let (old_epoch, old_seq) = (first.epoch(), first.seq());
    first.close().await;
    for n in 1..30 {
        a.connect(&format!("passing-{n}"), "bob").await.close().await;
    }
    tokio::time::timeout(WAIT, async {
        while store.canvases().await != 1 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("only the canvas with objects is kept");
    let kept = a.connect("kept", "ann").await;
    assert_eq!(kept.welcome["objects"], json!({"o1": {"id": "o1"}}), "the kept canvas keeps its state");

    let back = a.resume("passing-0", "bob", old_seq, &old_epoch).await;
    assert_eq!(back.welcome["resumed"], false, "the old log is gone");
    assert_ne!(back.epoch(), old_epoch, "a forgotten canvas never reuses an epoch");
}
