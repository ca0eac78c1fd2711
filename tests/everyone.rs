//! "Everyone" (v1.1): `POST /api/v1/broadcast` reaches every connection of every canvas on every instance,
//! not logged and not replayed.

#[macro_use]
mod helpers;

use helpers::{SharedFile, Store};
use serde_json::json;

const KEY: &str = "everyone-key";

on_both_buses!(a_broadcast_reaches_every_connection_of_every_canvas_on_every_instance_and_is_not_logged);
async fn a_broadcast_reaches_every_connection_of_every_canvas_on_every_instance_and_is_not_logged(store: Store) {
    let (a, b) = (store.start(&["--api-key", KEY]).await, store.start(&["--api-key", KEY]).await);
    let mut clients = vec![
        a.connect("c1", "ann").await,
        a.connect("c2", "bob").await,
        b.connect("c1", "carol").await,
        b.connect("c3", "dave").await,
    ];
    let body = json!({"type": "maintenance", "data": {"in_minutes": 5}});
    let (status, reply) = a.api("POST", "/api/v1/broadcast", Some(KEY), body).await;
    assert_eq!((status, reply), (202, json!({"connections": 2})), "counted on the instance that took it");
    for client in &mut clients {
        let frame = loop {
            let frame = client.recv().await;
            if frame["type"] == "maintenance" {
                break frame;
            }
        };
        assert_eq!((frame["from"].as_str(), frame["to"].as_str()), (Some("server"), Some("*")), "{frame}");
        assert_eq!(frame["data"], json!({"in_minutes": 5}));
        assert!(frame.get("seq").is_none(), "not logged: {frame}");
    }
    for canvas in ["c1", "c2", "c3"] {
        assert!(!store.logged(canvas).await.iter().any(|kind| kind == "maintenance"), "{canvas}: not in the log");
    }
}

#[tokio::test]
async fn a_bad_broadcast_gets_a_json_error() {
    let file = SharedFile::new();
    let a = file.start(&["--api-key", KEY]).await;
    for body in ["{", r#"{"data":1}"#, r#"{"type":"welcome","data":1}"#, r#"{"type":"Bad Type"}"#] {
        let (status, reply) = a.http("POST", "/api/v1/broadcast", Some(KEY), body).await;
        assert_eq!(status, 400, "{body}: {reply}");
        assert!(serde_json::from_str::<serde_json::Value>(&reply).unwrap()["error"].is_string());
    }
    let (status, _) = a.http("POST", "/api/v1/broadcast", Some("wrong"), r#"{"type":"x"}"#).await;
    assert_eq!(status, 401);
    let (status, reply) = a.api("POST", "/api/v1/broadcast", Some(KEY), json!({"type": "x"})).await;
    assert_eq!((status, reply), (202, json!({"connections": 0})), "nobody connected");
}

on_both_buses!(canvases_are_listed_in_id_order_page_by_page_with_counts_across_instances);
async fn canvases_are_listed_in_id_order_page_by_page_with_counts_across_instances(store: Store) {
    let (a, b) = (store.start(&["--api-key", KEY]).await, store.start(&["--api-key", KEY]).await);
    // c1: ann twice (one on each instance) and bob, one object; c2: nobody now, two objects; c3: carol;
    // c4 and c5: written to through the API only.
    let ann_a = a.connect("c1", "ann").await;
    let _ann_b = b.connect("c1", "ann").await;
    let _bob = b.connect("c1", "bob").await;
    let _carol = a.connect("c3", "carol").await;
    let publish = |canvas: &'static str, body: serde_json::Value| {
        let a = &a;
        async move {
            let path = format!("/api/v1/canvases/{canvas}/messages");
            assert_eq!(a.api("POST", &path, Some(KEY), body).await.0, 201);
        }
    };
    publish("c1", json!({"type": "object-create", "data": {"id": "o1"}})).await;
    publish("c2", json!({"type": "object-create", "data": {"id": "o1"}})).await;
    publish("c2", json!({"type": "object-create", "data": {"id": "o2"}})).await;
    publish("c4", json!({"type": "note", "data": 1})).await;
    publish("c5", json!({"type": "note", "data": 1})).await;

    let mut listed = Vec::new();
    let mut after = String::new();
    loop {
        let path = format!("/api/v1/canvases?limit=2{after}");
        let (status, page) = b.api("GET", &path, Some(KEY), json!(null)).await;
        assert_eq!(status, 200, "{page}");
        listed.extend(page["canvases"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => break,
        }
    }
    let ids: Vec<&str> = listed.iter().map(|c| c["canvas"].as_str().unwrap()).collect();
    assert_eq!(ids, ["c1", "c2", "c3", "c4", "c5"], "every canvas once, in id order, across pages");
    assert_eq!(
        listed[0],
        json!({"canvas": "c1", "seq": 3, "epoch": ann_a.epoch(), "connections": 3, "users": 2, "objects": 1}),
        "c1: ann's and bob's user-connected, then the create; ann connected twice, bob once"
    );
    assert_eq!((listed[1]["objects"].as_u64(), listed[1]["connections"].as_u64()), (Some(2), Some(0)));

    let (_, active) = a.api("GET", "/api/v1/canvases?active=true", Some(KEY), json!(null)).await;
    let ids: Vec<&str> = active["canvases"].as_array().unwrap().iter().map(|c| c["canvas"].as_str().unwrap()).collect();
    assert_eq!((ids, &active["next"]), (vec!["c1", "c3"], &json!(null)), "only canvases with a connection");

    for bad in ["limit=0", "limit=1001", "limit=x", "after=bad%20id", "active=yes"] {
        let (status, reply) = a.api("GET", &format!("/api/v1/canvases?{bad}"), Some(KEY), json!(null)).await;
        assert_eq!(status, 400, "{bad}: {reply}");
        assert!(reply["error"].is_string());
    }
}
