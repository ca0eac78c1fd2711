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
