//! Two real processes on one SQLite file: concurrent writers on both, every client's stream gap-free, in
//! order and identical in content across instances; acks; local delivery on and off; health and metrics.

#[macro_use]
mod helpers;

use std::collections::BTreeMap;

use helpers::{Client, Seen, SharedFile, Store};
use serde_json::{json, Value};

const PER_CLIENT: usize = 150;

/// Each client sends PER_CLIENT messages without waiting; every client must then see every seq after the
/// clients' presence exactly once, in order, with its own messages as acks carrying their refs in send order, and all clients must
/// agree on what each seq holds.
async fn concurrent_writers_agree(store: Store, args_b: &[&str]) {
    let file = &store;
    let a = file.start(&[]).await;
    let b = file.start(args_b).await;
    let mut clients = Vec::new();
    for (i, instance) in [&a, &a, &b, &b].into_iter().enumerate() {
        clients.push(instance.connect("order", &format!("user{i}")).await);
    }
    let joined: Vec<u64> = clients.iter().map(Client::seq).collect();
    assert_eq!(joined, [1, 2, 3, 4], "each join logged one user-connected, and each welcome includes its own");
    for client in &mut clients {
        client.skip_presence(4).await;
    }
    let total = 4 + (clients.len() * PER_CLIENT) as u64;

    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut client)| {
            tokio::spawn(async move {
                for n in 0..PER_CLIENT {
                    client.publish("stroke", json!({"client": i, "n": n}), &format!("r{n}")).await;
                }
                let (seen, _) = client.read_through(total).await;
                (i, seen)
            })
        })
        .collect();

    let mut views: Vec<BTreeMap<u64, (String, Value)>> = Vec::new();
    for task in tasks {
        let (i, seen) = task.await.expect("client task");
        let mut own = 0;
        let mut view = BTreeMap::new();
        for (seq, item) in seen {
            let (from, data) = match item {
                Seen::Ack { reference } => {
                    assert_eq!(reference, Some(format!("r{own}")), "acks come in send order with their refs");
                    own += 1;
                    (format!("user{i}"), json!({"client": i, "n": own - 1}))
                }
                Seen::Message { kind, from, data } => {
                    assert_eq!(kind, "stroke");
                    assert_ne!(from, format!("user{i}"), "own messages arrive as acks, not as messages");
                    (from, data)
                }
            };
            view.insert(seq, (from, data));
        }
        assert_eq!(own, PER_CLIENT, "client {i} got an ack for every message");
        views.push(view);
    }
    for view in &views[1..] {
        assert_eq!(view, &views[0], "every client sees the same content at every seq");
    }
    // Per-sender order is preserved inside the canvas order.
    for i in 0..4 {
        let ns: Vec<u64> =
            views[0].values().filter(|(_, d)| d["client"] == i).map(|(_, d)| d["n"].as_u64().unwrap()).collect();
        assert_eq!(ns, (0..PER_CLIENT as u64).collect::<Vec<_>>());
    }
    let logged = file.logged("order").await;
    assert_eq!(logged.iter().filter(|t| *t == "stroke").count(), 4 * PER_CLIENT, "stored once each");
    // (Leaving clients log user-disconnected after it.)
    assert_eq!(
        logged.iter().rposition(|t| t == "stroke"),
        Some(total as usize - 1),
        "the last stroke is at seq {total}"
    );
}

on_both_buses!(concurrent_writers_on_two_instances_see_one_gap_free_order);
async fn concurrent_writers_on_two_instances_see_one_gap_free_order(store: Store) {
    concurrent_writers_agree(store, &[]).await;
}

on_both_buses!(without_local_broadcast_the_watcher_delivers_and_acks_in_order);
/// Without the local short-circuit, the watcher (SQLite) or the stream reader (Redis) delivers everything.
async fn without_local_broadcast_the_watcher_delivers_and_acks_in_order(store: Store) {
    concurrent_writers_agree(store, &["--local-broadcast", "false"]).await;
}

on_both_buses!(a_message_reaches_the_other_instance_and_the_sender_gets_its_ack);
async fn a_message_reaches_the_other_instance_and_the_sender_gets_its_ack(store: Store) {
    let file = &store;
    let (a, b) = (file.start(&[]).await, file.start(&[]).await);
    let mut sender = a.connect("c1", "ann").await;
    let mut local = a.connect("c1", "bob").await;
    let mut remote = b.connect("c1", "cid").await;
    sender.skip_presence(3).await;
    local.skip_presence(3).await;
    sender.publish("object-create", json!({"id": "o1", "kind": "rect"}), "c-17").await;
    let ack = sender.recv().await;
    assert_eq!(ack, json!({"type": "ack", "seq": 4, "ref": "c-17"}));
    for client in [&mut local, &mut remote] {
        let msg = client.recv().await;
        assert_eq!(msg["type"], "object-create");
        assert_eq!(
            (msg["seq"].as_u64(), msg["canvas"].as_str(), msg["from"].as_str()),
            (Some(4), Some("c1"), Some("ann"))
        );
        assert_eq!(msg["data"], json!({"id": "o1", "kind": "rect"}));
        assert!(msg["ts"].as_i64().unwrap() > 1_600_000_000_000, "ts is unix ms");
    }
    let welcome = b.connect("c1", "dan").await.welcome;
    assert_eq!(
        (welcome["seq"].as_u64(), welcome["resumed"].as_bool()),
        (Some(5), Some(false)),
        "after dan's user-connected"
    );
    assert_eq!(welcome["epoch"], sender.epoch(), "one canvas, one epoch, whichever instance");
    assert_ne!(welcome["instance"], sender.welcome["instance"]);
}

/// With polling all but off (one check a minute), messages still reach the other instance at once: the
/// writer rings the peer's doorbell after each commit. Run with `--peer-wakeup false` no instance has a
/// doorbell to learn, and this test fails on the helpers' timeout.
#[tokio::test]
async fn a_rung_peer_delivers_without_waiting_for_its_poll() {
    let file = SharedFile::new();
    let args = ["--poll-interval", "60s", "--idle-poll-interval", "60s", "--heartbeat-interval", "100ms"];
    let (a, b) = (file.start(&args).await, file.start(&args).await);
    // Both registered before `start` returned; the sender learns the other's doorbell at its next heartbeat,
    // which sets `relay_peer_instances` to the doorbells it now rings.
    assert_eq!(file.count("SELECT count(*) FROM instances"), 2);
    helpers::eventually("a to know b's doorbell", || async { a.metric("relay_peer_instances").await == 1.0 }).await;
    let mut remote = b.connect("c1", "bob").await;
    let mut sender = a.connect("c1", "ann").await;
    sender.publish("stroke", json!({"n": 1}), "r1").await;
    let mut got = Vec::new();
    while got.len() < 2 {
        let frame = remote.recv().await;
        got.push((frame["type"].as_str().unwrap().to_owned(), frame["seq"].as_u64().unwrap()));
    }
    assert_eq!(got, [("user-connected".to_owned(), 2), ("stroke".to_owned(), 3)]);
}

on_both_buses!(canvases_are_independent_sequences);
async fn canvases_are_independent_sequences(store: Store) {
    let file = &store;
    let a = file.start(&[]).await;
    let mut one = a.connect("one", "u").await;
    let mut two = a.connect("two", "u").await;
    for seq in 2..=4 {
        one.publish("x", json!(1), "r").await;
        assert_eq!(one.recv().await["seq"], seq, "after u's user-connected at seq 1");
    }
    two.publish("x", json!(1), "r").await;
    assert_eq!(two.recv().await["seq"], 2, "canvas two has its own user-connected at 1, then this");
}

on_both_buses!(ping_cursor_and_pong);
async fn ping_cursor_and_pong(store: Store) {
    let file = &store;
    let a = file.start(&[]).await;
    let mut ann = a.connect("c", "ann").await;
    let mut bob = a.connect("c", "bob").await;
    ann.skip_presence(bob.seq()).await;
    ann.send(json!({"type": "ping"})).await;
    assert_eq!(ann.recv().await, json!({"type": "pong"}));
    ann.send(json!({"type": "cursor", "data": {"x": 10.5, "y": 20}})).await;
    let cursor = bob.recv().await;
    assert_eq!((cursor["type"].as_str(), cursor["from"].as_str()), (Some("cursor"), Some("ann")));
    assert_eq!(cursor["data"], json!({"x": 10.5, "y": 20}));
    assert!(cursor.get("seq").is_none(), "cursors are not logged");
}

on_both_buses!(health_and_metrics_report_the_figures);
async fn health_and_metrics_report_the_figures(store: Store) {
    let file = &store;
    let (a, _b) = (file.start(&[]).await, file.start(&[]).await);
    let mut client: Client = a.connect("h", "u").await;
    client.publish("x", json!(null), "r").await;
    client.recv().await;
    let (status, body) = a.get("/health").await;
    assert_eq!(status, 200, "{body}");
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["live_instances"], 2);
    assert_eq!(health["local_connections"], 1);
    for field in ["writer_queue_depth", "poll_lag_rows", "last_poll_age_ms", "message_ttl_ms"] {
        assert!(health[field].is_number(), "{field} in {health}");
    }
    match store.shared_file() {
        Some(_) => {
            assert_eq!(health["bus"], "sqlite");
            assert_eq!(health["queue_rows"], 2, "u's user-connected and its message");
            assert!(health["oldest_row_age_ms"].is_number());
        }
        None => {
            assert_eq!(health["bus"], "redis");
            assert!(health["redis_ping_ms"].is_number() && health["store_epoch"].is_string(), "{health}");
        }
    }
    let (status, metrics) = a.get("/metrics").await;
    assert_eq!(status, 200);
    for name in ["relay_commits_total", "relay_messages_in_total", "relay_deliveries_total", "relay_connections"] {
        assert!(metrics.contains(name), "{name} missing from /metrics:\n{metrics}");
    }
    let (status, body) = a.get("/nope").await;
    assert_eq!(status, 404);
    assert!(serde_json::from_str::<Value>(&body).unwrap()["error"].is_string());
}

on_both_buses!(metrics_and_health_show_the_peers_their_wake_ups_and_the_delay_of_their_commits);
/// What the wake-up design asked `/metrics` and `/health` to show: live peers, doorbells rung and received
/// (SQLite; Redis wakes its readers itself), and how long after another instance's commit this one read it.
async fn metrics_and_health_show_the_peers_their_wake_ups_and_the_delay_of_their_commits(store: Store) {
    let args = ["--heartbeat-interval", "100ms"];
    let (a, b) = (store.start(&args).await, store.start(&args).await);
    let mut remote = b.connect("peers", "bob").await;
    let mut sender = a.connect("peers", "ann").await;
    // Each instance learns of the other (and of its doorbell) at a heartbeat: send until both count the other
    // as a peer, b has read one of a's commits and, on SQLite, a has rung b for one.
    let sqlite = store.shared_file().is_some();
    let caught_up = async {
        for n in 0.. {
            sender.publish("stroke", json!({"n": n}), &format!("r{n}")).await;
            while remote.recv().await["type"] != "stroke" {}
            let read = b.metric("relay_peer_delivery_seconds_count").await;
            let rung = a.metric("relay_doorbells_rung_total").await;
            let peers = [a.metric("relay_peer_instances").await, b.metric("relay_peer_instances").await];
            if read > 0.0 && (!sqlite || rung > 0.0) && peers == [1.0, 1.0] {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(helpers::WAIT, caught_up)
        .await
        .expect("both saw the other, b read a's commits (and a rang b)");
    for instance in [&a, &b] {
        let (_, health) = instance.get("/health").await;
        let health: Value = serde_json::from_str(&health).unwrap();
        assert_eq!(health["peer_instances"], 1, "{health}");
        assert!(health.as_object().unwrap().contains_key("oldest_unread_age_ms"), "{health}");
    }
    // Every delivery b read from a was timed, in the histogram's buckets.
    let (_, metrics) = b.get("/metrics").await;
    assert!(metrics.contains("relay_peer_delivery_seconds_bucket{le=\"0.001\"}"), "{metrics}");
    if sqlite {
        assert!(b.metric("relay_doorbells_received_total").await > 0.0, "b heard a's doorbell");
    }
}

/// The canvas app is compiled in: the page at `/`, its files under `/app/`, a JSON 404 for anything else there.
/// (What it does in a browser is `tests/browser.rs`.)
#[tokio::test]
async fn the_canvas_app_is_served_from_the_binary() {
    let file = SharedFile::new();
    let a = file.start(&[]).await;
    let (status, page) = a.get("/?canvas=team-1&name=Ann").await;
    assert_eq!(status, 200);
    assert!(page.contains(r#"<script type="module" src="/app/app.js">"#), "{page}");
    let files = [
        ("/app/app.js", "mountBoard"),
        ("/app/draw.js", "setPresence"),
        ("/app/page.js", "resumed"),
        ("/app/two.html", "/app/two.js"),
        ("/app/style.css", ".board"),
        // The JS client package's own modules, which the app imports.
        ("/app/sdk/index.js", "RelayClient"),
        ("/app/sdk/board.js", "idempotency_key"),
    ];
    for (path, marker) in files {
        let (status, body) = a.get(path).await;
        assert_eq!(status, 200, "{path}");
        assert!(body.contains(marker), "{path} without {marker}");
    }
    let (status, body) = a.get("/app/secret.env").await;
    assert_eq!(status, 404);
    assert!(serde_json::from_str::<Value>(&body).unwrap()["error"].as_str().unwrap().contains("secret.env"));
}

#[tokio::test]
async fn each_instance_persists_how_far_it_delivered_each_canvas() {
    let file = SharedFile::new();
    let (a, b) =
        (file.start(&["--watermark-interval", "50ms"]).await, file.start(&["--watermark-interval", "50ms"]).await);
    let mut writer = a.connect("wm", "ann").await;
    let mut reader = b.connect("wm", "bob").await;
    writer.skip_presence(2).await;
    for _ in 0..5 {
        writer.publish("note", json!(null), "r").await;
    }
    writer.read_through(7).await;
    reader.read_through(7).await;
    let instances = [&writer, &reader].map(|c| c.welcome["instance"].as_str().unwrap().to_owned());
    tokio::time::timeout(helpers::WAIT, async {
        loop {
            let done = instances.iter().all(|id| {
                let sql = format!(
                    "SELECT count(*) FROM canvas_watermarks
                     WHERE canvas_id = 'wm' AND server_instance_id = '{id}' AND last_seq = 7 AND last_processed_id > 0"
                );
                file.count(&sql) == 1
            });
            if done {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("both instances saved watermark seq 7 for the canvas");
}

on_both_buses!(cursors_cross_instances_in_coalesced_batches);
async fn cursors_cross_instances_in_coalesced_batches(store: Store) {
    let file = &store;
    let a = file.start(&["--cursor-batch", "100ms"]).await;
    let b = file.start(&["--cursor-batch", "100ms"]).await;
    let mut ann = a.connect("cur", "ann").await;
    let mut local = a.connect("cur", "lou").await;
    let mut remote = b.connect("cur", "bob").await;
    local.skip_presence(remote.seq()).await;

    let started = std::time::Instant::now();
    let sent = 500;
    for x in 0..sent {
        ann.send(json!({"type": "cursor", "data": {"x": x}})).await;
    }
    let elapsed = started.elapsed();
    // Each client, on this instance or the other, gets the cursors paced to --max-cursor-rate (60/s): the
    // excess coalesced, in order, and always the latest in the end.
    for (client, path) in [(&mut local, "same instance"), (&mut remote, "other instance")] {
        let mut seen = Vec::new();
        loop {
            let frame = client.recv().await;
            assert_eq!(
                (frame["type"].as_str(), frame["from"].as_str(), frame["canvas"].as_str()),
                (Some("cursor"), Some("ann"), Some("cur"))
            );
            assert_eq!(frame["connection"], ann.welcome["connection"], "cursors say which connection moved");
            seen.push(frame["data"]["x"].as_u64().unwrap());
            if seen.last() == Some(&(sent - 1)) {
                break;
            }
        }
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{path}: in the order sent: {seen:?}");
        assert!(seen.len() < sent as usize / 2, "{path}: coalesced, {} of {sent} relayed", seen.len());
    }
    // Rows are bounded by batch intervals, not by cursors sent: one per canvas per interval.
    if let Some(file) = store.shared_file() {
        let batches = file.count("SELECT count(*) FROM cursor_batches");
        let intervals = (elapsed.as_millis() / 100) as i64 + 2;
        assert!(batches <= intervals, "{batches} rows for {sent} cursors over {elapsed:?}");
    }
    assert!(file.logged("cur").await.iter().all(|t| t.starts_with("user-")), "cursors are never logged");
}

on_both_buses!(first_joiners_of_a_canvas_busy_elsewhere_see_every_seq_after_their_welcome);
/// Each join here is the first on its instance (a new room) while the other instance changes the canvas
/// without pause, so every join reads the whole state (a new version each time) while commits land:
/// whatever is committed while the joiner reads must reach it, gap-free.
async fn first_joiners_of_a_canvas_busy_elsewhere_see_every_seq_after_their_welcome(store: Store) {
    let a = store.start(&["--rate-limit", "0"]).await;
    let b = store.start(&[]).await;
    let mut writer = a.connect("busy", "writer").await;
    writer.create_objects("o", 5_000, 100).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = stop.clone();
    let writing = tokio::spawn(async move {
        let mut n = 0u64;
        while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
            writer.publish("object-update", json!({"id": "o0", "n": n}), "w").await;
            loop {
                if writer.recv().await["type"] == "ack" {
                    break;
                }
            }
            n += 1;
        }
        n
    });
    for round in 0..30 {
        let mut joiner = b.connect("busy", &format!("joiner{round}")).await;
        let upto = joiner.seq() + 20;
        joiner.read_through(upto).await; // panics on a gap or a cut
        joiner.close().await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(writing.await.unwrap() > 0);
}
