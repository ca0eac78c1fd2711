//! Ephemeral events (v1.1): a custom type sent with `"ephemeral":true` reaches every other connection of
//! the canvas on every instance, in send order, with no seq and no ack; it is never logged, so it is in
//! neither `GET .../messages` nor a resume. Object ops cannot be ephemeral; `--ephemeral-rate-limit` applies.

#[macro_use]
mod helpers;

use helpers::{Client, SharedFile, Store};
use serde_json::{json, Value};

const KEY: &str = "ephemeral-key";

fn event(n: u64) -> Value {
    json!({"type": "reaction", "data": {"n": n}, "ephemeral": true})
}

/// The next `count` reactions `client` receives (other frames skipped).
async fn reactions(client: &mut Client, count: usize) -> Vec<Value> {
    let mut got = Vec::new();
    while got.len() < count {
        let frame = client.recv().await;
        if frame["type"] == "reaction" {
            got.push(frame);
        }
    }
    got
}

on_both_buses!(an_event_reaches_every_other_connection_in_send_order_and_is_never_logged);
async fn an_event_reaches_every_other_connection_in_send_order_and_is_never_logged(store: Store) {
    let (a, b) = (store.start(&["--api-key", KEY]).await, store.start(&["--api-key", KEY]).await);
    let mut ann = a.connect("c1", "ann").await;
    let mut carol = a.connect("c1", "carol").await;
    let mut bob = b.connect("c1", "bob").await;
    let before = bob.seq();
    for n in 0..20 {
        ann.send(event(n)).await;
    }
    for (who, client) in [("carol, on the same instance", &mut carol), ("bob, on the other", &mut bob)] {
        let got = reactions(client, 20).await;
        let order: Vec<u64> = got.iter().map(|e| e["data"]["n"].as_u64().unwrap()).collect();
        assert_eq!(order, (0..20).collect::<Vec<_>>(), "{who}: every event, in send order");
        let first = &got[0];
        assert_eq!((first["from"].as_str(), first["canvas"].as_str()), (Some("ann"), Some("c1")), "{first}");
        assert_eq!(first["connection"], ann.welcome["connection"]);
        assert_eq!(first["ephemeral"], true);
        assert!(first.get("seq").is_none() && first["ts"].is_i64(), "{first}");
    }
    ann.send(json!({"type": "ping"})).await;
    loop {
        let frame = ann.recv().await;
        assert_ne!(frame["type"], "reaction", "the sender does not get its own events back");
        assert_ne!(frame["type"], "ack", "events are not acked");
        if frame["type"] == "pong" {
            break;
        }
    }

    assert!(!store.logged("c1").await.iter().any(|kind| kind == "reaction"), "not in the log");
    let (_, page) = b.api("GET", "/api/v1/canvases/c1/messages", Some(KEY), json!(null)).await;
    assert!(!page["messages"].as_array().unwrap().iter().any(|m| m["type"] == "reaction"), "{page}");
    let mut back = a.resume("c1", "bob", before, &bob.epoch()).await;
    assert_eq!(back.welcome["resumed"], true);
    ann.publish("note", json!("after"), "r").await;
    loop {
        let frame = back.recv().await;
        assert_ne!(frame["type"], "reaction", "not replayed on resume");
        if frame["type"] == "note" {
            break;
        }
    }
}

#[tokio::test]
async fn object_ops_cannot_be_ephemeral_viewers_may_send_events_and_the_rate_limit_applies() {
    let file = SharedFile::new();
    let a = file.start(&["--ephemeral-rate-limit", "5"]).await;
    let mut ann = a.connect("c1", "ann").await;
    let mut vic = a.connect_path("/ws/c1?user=vic&role=viewer").await.unwrap();

    ann.send(json!({"type": "object-create", "data": {"id": "o1"}, "ref": "op", "ephemeral": true})).await;
    assert_eq!(answer(&mut ann, "op").await["code"], "invalid_frame");
    ann.send(json!({"type": "welcome", "data": 1, "ref": "w", "ephemeral": true})).await;
    assert_eq!(answer(&mut ann, "w").await["code"], "unknown_type", "a reserved type stays reserved");

    vic.send(event(1)).await;
    let from_viewer = reactions(&mut ann, 1).await;
    assert_eq!(from_viewer[0]["from"], "vic", "a viewer may send ephemeral events");

    // A burst of 20 against a limit of 5 a second: the excess is refused (with its ref), the connection
    // stays open, and only what passed is relayed.
    for n in 0..20 {
        vic.send(json!({"type": "reaction", "data": {"n": n}, "ref": format!("e{n}"), "ephemeral": true})).await;
    }
    vic.send(json!({"type": "ping"})).await;
    let mut refused = Vec::new();
    loop {
        let frame = vic.recv().await;
        if frame["type"] == "pong" {
            break;
        }
        if frame["code"] == "rate_limited" {
            refused.push(frame["ref"].as_str().unwrap().trim_start_matches('e').parse::<u64>().unwrap());
        }
    }
    assert!(!refused.is_empty(), "a burst past the limit is refused in part");
    let passed: Vec<u64> = (0..20).filter(|n| !refused.contains(n)).collect();
    let relayed = reactions(&mut ann, passed.len()).await;
    assert_eq!(relayed.iter().map(|e| e["data"]["n"].as_u64().unwrap()).collect::<Vec<_>>(), passed);
}

/// The next frame of `client` that answers `reference`.
async fn answer(client: &mut Client, reference: &str) -> Value {
    loop {
        let frame = client.recv().await;
        if frame["ref"] == reference {
            return frame;
        }
    }
}
