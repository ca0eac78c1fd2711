//! The HTTP API's canvas routes: the key, publishing through the same writer and fan-out as clients,
//! reading the log and the state, and the JSON errors.

#[macro_use]
mod helpers;

use helpers::{SharedFile, Store};
use serde_json::json;

const KEY: &str = "test-key-123";

#[tokio::test]
async fn without_a_configured_key_the_api_is_off_with_a_403_saying_how_to_enable_it() {
    let file = SharedFile::new();
    let a = file.start(&[]).await;
    let (status, body) = a.api("GET", "/api/v1/canvases/c1", Some("anything"), json!(null)).await;
    assert_eq!(status, 403);
    assert!(body["error"].as_str().unwrap().contains("--api-key"), "{body}");
}

#[tokio::test]
async fn a_missing_or_wrong_key_is_401() {
    let file = SharedFile::new();
    let a = file.start(&["--api-key", KEY]).await;
    for key in [None, Some("wrong"), Some("test-key-12")] {
        let (status, body) = a.api("GET", "/api/v1/canvases/c1", key, json!(null)).await;
        assert_eq!(status, 401, "{key:?}");
        assert!(body["error"].is_string());
    }
    let (status, _) = a.api("POST", "/api/v1/canvases/c1/messages", Some("wrong"), json!({"type": "x"})).await;
    assert_eq!(status, 401);
}

on_both_buses!(a_server_publish_is_committed_sequenced_and_relayed_on_every_instance);
async fn a_server_publish_is_committed_sequenced_and_relayed_on_every_instance(store: Store) {
    let file = &store;
    let (a, b) = (file.start(&["--api-key", KEY]).await, file.start(&["--api-key", KEY]).await);
    let mut on_a = a.connect("c1", "ann").await;
    let mut on_b = b.connect("c1", "bob").await;
    // Presence logged seqs 1 and 2 (ann, then bob connected); ann sees bob arrive.
    assert_eq!((on_b.seq(), on_a.recv().await["type"].as_str()), (2, Some("user-connected")));
    let body = json!({"type": "object-create", "data": {"id": "o1", "x": 1}});
    let (status, reply) = a.api("POST", "/api/v1/canvases/c1/messages", Some(KEY), body).await;
    assert_eq!((status, reply), (201, json!({"seq": 3})));
    on_a.publish("note", json!("from a client"), "r").await;
    assert_eq!(on_a.recv().await["from"], "server");
    assert_eq!(on_a.recv().await, json!({"type": "ack", "seq": 4, "ref": "r"}));
    let first = on_b.recv().await;
    assert_eq!(
        (first["seq"].as_u64(), first["from"].as_str(), first["type"].as_str()),
        (Some(3), Some("server"), Some("object-create"))
    );
    assert_eq!(on_b.recv().await["seq"], 4);

    let (status, state) = b.api("GET", "/api/v1/canvases/c1", Some(KEY), json!(null)).await;
    assert_eq!(status, 200);
    assert_eq!((state["seq"].as_u64(), state["epoch"].as_str()), (Some(4), Some(on_a.epoch().as_str())));
    assert_eq!(state["objects"], json!({"o1": {"id": "o1", "x": 1}}));
    let presence = json!([{"user": "ann", "connections": 1}, {"user": "bob", "connections": 1}]);
    assert_eq!(state["presence"], presence);
}

on_both_buses!(messages_page_through_the_retained_log_in_seq_order);
async fn messages_page_through_the_retained_log_in_seq_order(store: Store) {
    let file = &store;
    let a = file.start(&["--api-key", KEY]).await;
    for n in 1..=5 {
        let (status, _) =
            a.api("POST", "/api/v1/canvases/log/messages", Some(KEY), json!({"type": "note", "data": n})).await;
        assert_eq!(status, 201);
    }
    let (status, page) = a.api("GET", "/api/v1/canvases/log/messages?since=1&limit=2", Some(KEY), json!(null)).await;
    assert_eq!(status, 200);
    assert_eq!(page["seq"], 5);
    let seqs: Vec<_> = page["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [2, 3]);
    assert_eq!(page["messages"][0]["data"], 2);
    let (_, rest) = a.api("GET", "/api/v1/canvases/log/messages?since=3", Some(KEY), json!(null)).await;
    assert_eq!(rest["messages"].as_array().unwrap().len(), 2);
    let (_, empty) = a.api("GET", "/api/v1/canvases/never-written/messages", Some(KEY), json!(null)).await;
    assert_eq!((empty["seq"].as_u64(), empty["messages"].as_array().map(Vec::len)), (Some(0), Some(0)));
    // A `since` past i64::MAX once wrapped negative and returned the whole log, ignoring the limit.
    for since in [u64::MAX, 1 << 63] {
        let (status, page) =
            a.api("GET", &format!("/api/v1/canvases/log/messages?since={since}&limit=1"), Some(KEY), json!(null)).await;
        assert_eq!((status, page["messages"].as_array().map(Vec::len)), (200, Some(0)), "since={since}: {page}");
    }
}

on_both_buses!(bad_requests_get_json_errors_with_the_right_status);
async fn bad_requests_get_json_errors_with_the_right_status(store: Store) {
    let file = &store;
    let a = file.start(&["--api-key", KEY, "--max-frame-size", "2048"]).await;
    let cases = [
        ("POST", "/api/v1/canvases/c1/messages", "not json", 400),
        ("POST", "/api/v1/canvases/c1/messages", r#"{"data":1}"#, 400),
        ("POST", "/api/v1/canvases/c1/messages", r#"{"type":"ack"}"#, 400),
        ("POST", "/api/v1/canvases/c1/messages", r#"{"type":"object-create","data":{"x":1}}"#, 400),
        ("POST", "/api/v1/canvases/bad%20id/messages", r#"{"type":"x"}"#, 400),
        ("POST", "/api/v1/canvases/c1/messages", r#"{"type":"object-update","data":{"id":"ghost"}}"#, 409),
        ("GET", "/api/v1/canvases/c1/messages?since=-3", "", 400),
        ("DELETE", "/api/v1/canvases/bad%20id", "", 400),
        ("POST", "/api/v1/users/bad%2Fuser/messages", r#"{"type":"x"}"#, 400),
        ("POST", "/api/v1/users/u1/messages", r#"{"type":"welcome"}"#, 400),
        ("GET", "/api/v1/users/bad%20user", "", 400),
    ];
    for (method, path, body, expected) in cases {
        let (status, text) = a.http(method, path, Some(KEY), body).await;
        assert_eq!(status, expected, "{method} {path} {body}: {text}");
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(parsed["error"].as_str().is_some_and(|e| !e.is_empty()), "{text}");
    }
    let big = json!({"type": "note", "data": "x".repeat(4000)}).to_string();
    let (status, _) = a.http("POST", "/api/v1/canvases/c1/messages", Some(KEY), &big).await;
    assert_eq!(status, 413);
    let (_, log) = a.api("GET", "/api/v1/canvases/c1/messages", Some(KEY), json!(null)).await;
    assert_eq!(log["seq"], 0, "nothing bad was logged");
}

on_both_buses!(delete_resets_a_canvas_to_a_new_epoch_on_every_instance);
async fn delete_resets_a_canvas_to_a_new_epoch_on_every_instance(store: Store) {
    let file = &store;
    let (a, b) = (file.start(&["--api-key", KEY]).await, file.start(&["--api-key", KEY]).await);
    let mut ann = a.connect("wipe", "ann").await;
    let mut bob = b.connect("wipe", "bob").await;
    ann.skip_presence(bob.seq()).await;
    ann.publish("object-create", json!({"id": "o1"}), "c").await;
    assert_eq!(ann.recv().await["type"], "ack");
    assert_eq!(bob.recv().await["type"], "object-create");
    let old_epoch = ann.epoch();

    let (status, reset) = b.api("DELETE", "/api/v1/canvases/wipe", Some(KEY), json!(null)).await;
    assert_eq!(status, 200, "{reset}");
    let epoch = reset["epoch"].as_str().unwrap().to_owned();
    assert_ne!(epoch, old_epoch);
    assert_eq!(reset, json!({"canvas": "wipe", "epoch": epoch, "seq": 0}));
    // Published at once, possibly before ann's instance has read the reset: its seq 1 of the new epoch
    // must still come after the reset frame, as an ack.
    ann.publish("note", json!("first of the new epoch"), "n").await;
    let expected_reset = json!({"type": "reset", "canvas": "wipe", "epoch": epoch, "seq": 0});
    assert_eq!(ann.recv().await, expected_reset);
    assert_eq!(ann.recv().await, json!({"type": "ack", "seq": 1, "ref": "n"}));
    assert_eq!(bob.recv().await, expected_reset);
    let first = bob.recv().await;
    assert_eq!((first["seq"].as_u64(), first["data"].as_str()), (Some(1), Some("first of the new epoch")));

    let (_, state) = a.api("GET", "/api/v1/canvases/wipe", Some(KEY), json!(null)).await;
    assert_eq!((state["epoch"].as_str(), state["seq"].as_u64()), (Some(epoch.as_str()), Some(1)));
    assert_eq!(state["objects"], json!({}), "the objects went with the log");
    assert_eq!(state["presence"].as_array().map(Vec::len), Some(2), "presence is not reset");
    let (_, log) = a.api("GET", "/api/v1/canvases/wipe/messages", Some(KEY), json!(null)).await;
    assert_eq!(log["messages"].as_array().map(Vec::len), Some(1), "only the new epoch's message");

    let stale = a.resume("wipe", "cid", 3, &old_epoch).await;
    assert_eq!(
        (stale.welcome["resumed"].as_bool(), stale.epoch()),
        (Some(false), epoch.clone()),
        "the old epoch cannot resume"
    );
    let (status, again) = a.api("DELETE", "/api/v1/canvases/never-used", Some(KEY), json!(null)).await;
    assert_eq!((status, again["seq"].as_u64()), (200, Some(0)), "resetting an unused canvas is fine");
}

on_both_buses!(a_user_message_reaches_every_connection_of_the_user_on_every_instance);
async fn a_user_message_reaches_every_connection_of_the_user_on_every_instance(store: Store) {
    let file = &store;
    let (a, b) = (file.start(&["--api-key", KEY]).await, file.start(&["--api-key", KEY]).await);
    let mut tabs = [a.connect("c1", "ann").await, b.connect("c2", "ann").await, b.connect("c1", "ann").await];
    let mut bob = a.connect("c1", "bob").await;
    for tab in tabs.iter_mut() {
        let upto = if tab.welcome["canvas"] == "c1" { bob.seq() } else { tab.seq() };
        tab.skip_presence(upto).await;
    }
    let body = json!({"type": "notice", "data": {"text": "saved"}});
    let (status, reply) = b.api("POST", "/api/v1/users/ann/messages", Some(KEY), body).await;
    assert_eq!((status, reply), (202, json!({"connections": 3})));
    for tab in tabs.iter_mut() {
        let got = tab.recv().await;
        assert_eq!(
            (got["type"].as_str(), got["to"].as_str(), got["from"].as_str()),
            (Some("notice"), Some("ann"), Some("server"))
        );
        assert_eq!(got["data"], json!({"text": "saved"}));
        assert!(got.get("seq").is_none() && got["ts"].is_i64(), "not logged: no seq");
    }
    bob.send(json!({"type": "ping"})).await;
    assert_eq!(bob.recv().await, json!({"type": "pong"}), "bob got nothing");
    let (status, reply) = a.api("POST", "/api/v1/users/nobody/messages", Some(KEY), json!({"type": "notice"})).await;
    assert_eq!((status, reply), (202, json!({"connections": 0})));
}
