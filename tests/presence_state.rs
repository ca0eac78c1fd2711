//! Presence state (v1.1): a connection's `presence` frame replaces its state and reaches every other
//! connection of the canvas on every instance, coalesced and never behind logged messages; a joiner's
//! `welcome.peers` lists every other live connection with its latest state, on any instance; when a
//! connection closes, or its instance dies and is expired, the others get its state as `null`, once.

#[macro_use]
mod helpers;

use helpers::{Client, Store};
use serde_json::{json, Value};

/// The next frame that is not a logged presence change (`user-connected` / `user-disconnected`).
async fn next_unlogged(client: &mut Client) -> Value {
    loop {
        let frame = client.recv().await;
        if !frame["type"].as_str().is_some_and(|kind| kind.starts_with("user-")) {
            return frame;
        }
    }
}

/// `welcome.peers` as (connection, user, data), sorted by connection.
fn peers(welcome: &Value) -> Vec<(String, String, Value)> {
    let mut peers: Vec<(String, String, Value)> = welcome["peers"]
        .as_array()
        .unwrap_or_else(|| panic!("welcome without peers: {welcome}"))
        .iter()
        .map(|peer| {
            (peer["connection"].as_str().unwrap().into(), peer["user"].as_str().unwrap().into(), peer["data"].clone())
        })
        .collect();
    peers.sort_by(|x, y| x.0.cmp(&y.0));
    peers
}

fn connection(client: &Client) -> String {
    client.welcome["connection"].as_str().unwrap().to_owned()
}

on_both_buses!(a_presence_state_reaches_everyone_and_every_joiner_and_becomes_null_once_when_gone);
async fn a_presence_state_reaches_everyone_and_every_joiner_and_becomes_null_once_when_gone(store: Store) {
    // A long batch interval: a joiner on the sender's own instance must not depend on it.
    let (a, b) = (store.start(&["--cursor-batch", "300ms"]).await, store.start(&["--cursor-batch", "300ms"]).await);
    let mut ann = a.connect_path("/ws/c1?user=ann&name=Ann").await.unwrap();
    assert_eq!(ann.welcome["peers"], json!([]), "nobody else yet");
    let mut bob = b.connect_path("/ws/c1?user=bob&role=viewer").await.unwrap();
    let ann_id = connection(&ann);
    assert_eq!(bob.welcome["peers"], json!([{"connection": ann_id, "user": "ann", "name": "Ann", "data": null}]));

    ann.send(json!({"type": "presence", "data": {"color": "#0af", "selection": ["r1"]}})).await;
    let seen = next_unlogged(&mut bob).await;
    assert_eq!(
        (seen["type"].as_str(), seen["canvas"].as_str(), seen["from"].as_str()),
        (Some("presence"), Some("c1"), Some("ann"))
    );
    assert_eq!((&seen["connection"], &seen["data"]), (&json!(ann_id), &json!({"color": "#0af", "selection": ["r1"]})));
    bob.send(json!({"type": "presence", "data": {"viewport": [0, 0, 10, 10]}})).await;
    let seen = next_unlogged(&mut ann).await;
    assert_eq!(
        (seen["from"].as_str(), &seen["data"]),
        (Some("bob"), &json!({"viewport": [0, 0, 10, 10]})),
        "a viewer too"
    );

    // A joiner on the other instance: the states the batches carried, kept by the store.
    let carol = b.connect("c1", "carol").await;
    let expected = |ann_data: Value| {
        let mut expected = vec![
            (ann_id.clone(), "ann".to_owned(), ann_data),
            (connection(&bob), "bob".to_owned(), json!({"viewport": [0, 0, 10, 10]})),
        ];
        expected.sort_by(|x, y| x.0.cmp(&y.0));
        expected
    };
    assert_eq!(peers(&carol.welcome), expected(json!({"color": "#0af", "selection": ["r1"]})));
    // A joiner on the sender's instance right after a change no batch has carried yet: its room knows.
    let mut ann_tab = a.connect("c1", "ann").await;
    ann.send(json!({"type": "presence", "data": {"color": "red"}})).await;
    assert_eq!(next_unlogged(&mut ann_tab).await["data"], json!({"color": "red"}));
    let dave = a.connect("c1", "dave").await;
    let mut dave_peers = peers(&dave.welcome);
    dave_peers.retain(|(conn, ..)| *conn == ann_id);
    assert_eq!(dave_peers, [(ann_id.clone(), "ann".to_owned(), json!({"color": "red"}))]);

    // Refused: not an object, too big. The state stays as it was.
    ann.send(json!({"type": "presence", "data": [1, 2]})).await;
    assert_eq!(next_unlogged(&mut ann).await["code"], "invalid_frame");
    ann.send(json!({"type": "presence", "data": {"pad": "x".repeat(5000)}})).await;
    assert_eq!(next_unlogged(&mut ann).await["code"], "too_large");

    ann.close().await;
    for (who, client) in [("bob, on the other instance", &mut bob), ("ann's other tab, on the same one", &mut ann_tab)]
    {
        let gone = loop {
            let frame = next_unlogged(client).await;
            if frame["type"] == "presence" && frame["connection"] == json!(ann_id) && frame["data"].is_null() {
                break frame;
            }
        };
        assert_eq!(gone["from"], "ann", "{who}: {gone}");
        client.send(json!({"type": "ping"})).await;
        let after = next_unlogged(client).await;
        assert_eq!(after["type"], "pong", "{who}: nothing of ann's after its null: {after}");
    }
    let eve = b.connect("c1", "eve").await;
    assert!(peers(&eve.welcome).iter().all(|(conn, ..)| *conn != ann_id), "a closed connection is no peer");
}

on_both_buses!(the_connections_of_a_dead_instance_become_null_once_for_the_survivors);
async fn the_connections_of_a_dead_instance_become_null_once_for_the_survivors(store: Store) {
    let fast = ["--presence-timeout", "1500ms", "--heartbeat-interval", "100ms"];
    let (mut a, b) = (store.start(&fast).await, store.start(&fast).await);
    let doomed = a.connect("c1", "ann").await;
    let mut bob = b.connect("c1", "bob").await;
    let doomed_id = connection(&doomed);
    assert_eq!(peers(&bob.welcome), [(doomed_id.clone(), "ann".to_owned(), Value::Null)]);
    a.kill().await;
    // The null and the logged leave come from the one commit that removed the connection, in either order.
    let (mut nulls, mut left) = (0, false);
    while nulls == 0 || !left {
        let frame = bob.recv().await;
        match frame["type"].as_str() {
            Some("presence") => {
                assert_eq!((&frame["connection"], &frame["data"]), (&json!(doomed_id), &Value::Null), "{frame}");
                nulls += 1;
            }
            Some("user-disconnected") => left = true,
            _ => {}
        }
    }
    let mut carol = b.connect("c1", "carol").await;
    assert_eq!(peers(&carol.welcome), [(connection(&bob), "bob".to_owned(), Value::Null)], "the dead one is gone");
    carol.send(json!({"type": "presence", "data": {"here": true}})).await;
    loop {
        let frame = next_unlogged(&mut bob).await;
        if frame["from"] == "carol" {
            break;
        }
        assert_ne!(frame["connection"], json!(doomed_id), "a second null: {frame}");
    }
    assert_eq!(nulls, 1, "once");
}
