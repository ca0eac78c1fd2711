//! Presence across instances: `user-connected` / `user-disconnected` for a user's first and last connection
//! to a canvas, counted over every instance; `welcome.presence`; the users API; and a SIGKILLed instance's
//! users expired by the survivors, each exactly once.

#[macro_use]
mod helpers;

use helpers::{Client, Store};
use serde_json::{json, Value};

const KEY: &str = "presence-key";

/// The next logged frame, skipping cursors and the like.
async fn next_logged(client: &mut Client) -> Value {
    loop {
        let frame = client.recv().await;
        if frame["seq"].is_u64() {
            return frame;
        }
    }
}

on_both_buses!(two_tabs_of_one_user_on_two_instances_are_one_user_with_two_connections);
async fn two_tabs_of_one_user_on_two_instances_are_one_user_with_two_connections(store: Store) {
    let file = &store;
    let (a, b) = (file.start(&["--api-key", KEY]).await, file.start(&["--api-key", KEY]).await);
    let mut bob = b.connect("p", "bob").await;
    assert_eq!(bob.welcome["presence"], json!([{"user": "bob", "connections": 1}]), "the welcome includes oneself");

    let tab1 = a.connect_path("/ws/p?user=ann&name=Ann").await.unwrap();
    let joined = next_logged(&mut bob).await;
    assert_eq!((joined["type"].as_str(), joined["from"].as_str()), (Some("user-connected"), Some("ann")));
    assert_eq!(joined["data"], json!({"user": "ann", "name": "Ann"}));
    assert_eq!(joined["seq"].as_u64(), Some(tab1.seq()), "the joiner's welcome seq includes its own arrival");

    let tab2 = b.connect_path("/ws/p?user=ann&name=Ann").await.unwrap();
    assert_eq!(tab2.seq(), tab1.seq(), "a second tab logs nothing");
    let presence = json!([{"user": "ann", "name": "Ann", "connections": 2}, {"user": "bob", "connections": 1}]);
    assert_eq!(tab2.welcome["presence"], presence);
    let (_, state) = a.api("GET", "/api/v1/canvases/p", Some(KEY), json!(null)).await;
    assert_eq!(state["presence"], presence, "the API agrees, from either instance");

    let (_, user) = b.api("GET", "/api/v1/users/ann", Some(KEY), json!(null)).await;
    assert_eq!(user, json!({"user": "ann", "connected": true, "connections": 2, "canvases": ["p"]}));
    let (_, users) = b.api("GET", "/api/v1/users", Some(KEY), json!(null)).await;
    let listed: Vec<(&str, u64)> = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["user"].as_str().unwrap(), u["connections"].as_u64().unwrap()))
        .collect();
    assert_eq!(listed, [("ann", 2), ("bob", 1)]);

    tab1.close().await;
    // Closing one of two tabs logs nothing: the next logged frame bob sees is his own ack.
    bob.publish("note", json!("after tab1"), "n1").await;
    assert_eq!(next_logged(&mut bob).await["type"], "ack");
    tab2.close().await;
    let left = next_logged(&mut bob).await;
    assert_eq!(
        (left["type"].as_str(), left["data"].clone()),
        (Some("user-disconnected"), json!({"user": "ann", "name": "Ann"}))
    );
    let (_, user) = a.api("GET", "/api/v1/users/ann", Some(KEY), json!(null)).await;
    assert_eq!(user, json!({"user": "ann", "connected": false, "connections": 0, "canvases": []}));
}

on_both_buses!(a_killed_instances_users_are_expired_by_the_survivors_exactly_once);
async fn a_killed_instances_users_are_expired_by_the_survivors_exactly_once(store: Store) {
    let file = &store;
    let fast = ["--presence-timeout", "1500ms", "--heartbeat-interval", "100ms"];
    let mut a = file.start(&fast).await;
    let (b, c) = (file.start(&fast).await, file.start(&fast).await);
    let mut bob = b.connect("k", "bob").await;
    let mut cid = c.connect("k", "cid").await;
    let _ann = a.connect("k", "ann").await;
    let _ann_elsewhere = a.connect("other", "ann").await;
    let _dan = a.connect("k", "dan").await;
    let mut dan_on_c = c.connect("k", "dan").await; // dan stays: one tab survives
    bob.skip_presence(dan_on_c.seq()).await;
    cid.skip_presence(dan_on_c.seq()).await;

    a.kill().await;
    // Within the presence timeout, every surviving client sees ann leave k (dan keeps his tab on c).
    for client in [&mut bob, &mut cid, &mut dan_on_c] {
        let frame = next_logged(client).await;
        assert_eq!((frame["type"].as_str(), frame["data"]["user"].as_str()), (Some("user-disconnected"), Some("ann")));
    }
    // Let both survivors run their expiry a few more times, then mark the stream: no second disconnect
    // may come before the mark, on any client.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    dan_on_c.publish("note", json!("mark"), "m").await;
    assert_eq!(next_logged(&mut dan_on_c).await["type"], "ack");
    for client in [&mut bob, &mut cid] {
        assert_eq!(next_logged(client).await["data"], "mark", "one disconnect, then the mark");
    }
    let logged = [file.logged("k").await, file.logged("other").await].concat();
    let disconnects = logged.iter().filter(|t| *t == "user-disconnected").count();
    assert_eq!(disconnects, 2, "ann on k and ann on other, each once");
    assert_eq!(file.connections().await, 3, "bob, cid and dan's tab on c remain");
}

on_both_buses!(an_instance_whose_users_were_expired_while_it_stalled_registers_them_again);
async fn an_instance_whose_users_were_expired_while_it_stalled_registers_them_again(store: Store) {
    let fast = ["--presence-timeout", "1s", "--heartbeat-interval", "100ms", "--api-key", KEY];
    let (a, b) = (store.start(&fast).await, store.start(&fast).await);
    let mut bob = b.connect("stall", "bob").await;
    let ann = a.connect_path("/ws/stall?user=ann&name=Ann").await.unwrap();
    bob.skip_presence(ann.seq()).await;
    // A stops for longer than the presence timeout: b takes it for dead and expires ann.
    a.signal("STOP");
    let left = next_logged(&mut bob).await;
    assert_eq!((left["type"].as_str(), left["from"].as_str()), (Some("user-disconnected"), Some("ann")));
    a.signal("CONT");
    // A's next heartbeat is late: it finds ann's connection gone and registers it again.
    let back = next_logged(&mut bob).await;
    assert_eq!(
        (back["type"].as_str(), back["data"].clone()),
        (Some("user-connected"), json!({"user": "ann", "name": "Ann"}))
    );
    let (_, user) = b.api("GET", "/api/v1/users/ann", Some(KEY), json!(null)).await;
    assert_eq!(user["connections"], 1, "{user}");
    assert!(a.log_text().contains("registering them again"), "{}", a.log_text());
    // Ann's connection is the same one and still works (it saw itself leave and come back, in order).
    let mut ann = ann;
    ann.publish("note", json!("still here"), "n").await;
    let seen: Vec<Value> =
        [next_logged(&mut ann).await, next_logged(&mut ann).await, next_logged(&mut ann).await].into();
    let kinds: Vec<&str> = seen.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["user-disconnected", "user-connected", "ack"]);
}

on_both_buses!(heartbeats_and_expiry_keep_up_under_a_flat_out_load);
/// Under flat-out publishing that keeps the writer's queue full, with cleanup deleting thousands of expired
/// rows a round in small batches, no live user is expired: heartbeats and expiry do not wait behind
/// publishes, cleanup or checkpoints. (They used to: each cleanup batch and each heartbeat waited its turn
/// behind the whole queue, and the heartbeat also waited for the cleanup round.)
/// `RELAY_STARVATION_SECS` sets how long (default 15; the recorded run is 60 with `load-test`).
async fn heartbeats_and_expiry_keep_up_under_a_flat_out_load(store: Store) {
    let seconds: u64 = std::env::var("RELAY_STARVATION_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(15);
    let args = [
        "--presence-timeout",
        "3s",
        "--rate-limit",
        "0",
        "--message-ttl",
        "2s",
        "--cleanup-interval",
        "200ms",
        "--cleanup-batch",
        "100",
        "--api-key",
        KEY,
    ];
    let (a, b) = (store.start(&args).await, store.start(&args).await);
    // The watchers keep reading until the load ends: reading answers the server's pings, and a client silent
    // for three ping intervals (60 s by default) is rightly dropped.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let watchers: Vec<_> = [a.connect("watched", "ann").await, b.connect("watched", "bob").await]
        .into_iter()
        .map(|mut client| {
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                use futures_util::StreamExt;
                loop {
                    tokio::select! {
                        _ = stopped.changed() => return client,
                        frame = client.ws.next() => assert!(matches!(frame, Some(Ok(_))), "a watcher was dropped: {frame:?}"),
                    }
                }
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    let senders: Vec<_> = (0..8)
        .map(|n| {
            let url = [&a, &b][n % 2].url(&format!("/ws/load-{n}?user=sender{n}"));
            tokio::spawn(async move {
                use futures_util::{SinkExt, StreamExt};
                let client = Client::connect_url(url).await.unwrap();
                let (mut sink, mut stream) = client.ws.split();
                let mut in_flight = 0;
                let mut acked = 0u64;
                while std::time::Instant::now() < deadline || in_flight > 0 {
                    while in_flight < 2048 && std::time::Instant::now() < deadline {
                        let frame = json!({"type": "note", "data": {"pad": "x".repeat(64)}, "ref": "r"});
                        sink.send(tokio_tungstenite::tungstenite::Message::text(frame.to_string())).await.unwrap();
                        in_flight += 1;
                    }
                    let Some(Ok(frame)) = stream.next().await else { panic!("sender {n} was cut") };
                    if frame.to_text().unwrap_or("").contains("\"ack\"") {
                        in_flight -= 1;
                        acked += 1;
                    }
                }
                acked
            })
        })
        .collect();
    let mut acked = 0;
    for sender in senders {
        acked += sender.await.unwrap();
    }
    assert!(acked > 0);
    stop.send(true).unwrap();
    let mut watching = Vec::new();
    for watcher in watchers {
        watching.push(watcher.await.unwrap());
    }
    let (_, users) = a.api("GET", "/api/v1/users", Some(KEY), json!(null)).await;
    let present: Vec<&str> = users["users"].as_array().unwrap().iter().filter_map(|u| u["user"].as_str()).collect();
    assert!(present.contains(&"ann") && present.contains(&"bob"), "{present:?} after {acked} messages");
    let logged = store.logged("watched").await;
    assert!(!logged.contains(&"user-disconnected".to_owned()), "a live user was expired: {logged:?}");
    drop(watching);
}
