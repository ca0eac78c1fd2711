//! Canvas state across instances: object ops fold in seq order in the transaction that logs them, so a
//! client joining at any moment, applying what follows its welcome to `welcome.objects`, ends in the same
//! state as a client that was there from the start. Invalid ops are refused and not logged.

#[macro_use]
mod helpers;

use std::collections::BTreeMap;

use helpers::{Client, Seen, Store};
use serde_json::{json, Map, Value};

/// The contract's fold, written independently of the server's. Other types (presence) leave it alone.
fn apply(state: &mut BTreeMap<String, Value>, kind: &str, data: &Value) {
    if !kind.starts_with("object-") {
        return;
    }
    let id = data["id"].as_str().expect("object ops carry an id").to_owned();
    match kind {
        "object-create" => drop(state.insert(id, data.clone())),
        "object-update" => {
            let object = state.get_mut(&id).expect("the server only relays updates of existing objects");
            let fields: &Map<String, Value> = data.as_object().unwrap();
            for (k, v) in fields {
                object[k] = v.clone();
            }
        }
        "object-delete" => drop(state.remove(&id).expect("the server only relays deletes of existing objects")),
        _ => {}
    }
}

fn welcome_state(client: &Client) -> BTreeMap<String, Value> {
    let objects = client.welcome["objects"].as_object().expect("a fresh welcome carries objects");
    objects.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Folds everything after the welcome up to `upto`; `own` resolves this client's acks to what it sent.
async fn follow(client: &mut Client, upto: u64, mut state: BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    let (seen, _) = client.read_through(upto).await;
    for (_, item) in seen {
        match item {
            Seen::Message { kind, data, .. } => apply(&mut state, &kind, &data),
            Seen::Ack { .. } => panic!("readers send nothing"),
        }
    }
    state
}

/// A writer doing `n` pseudo-random ops on ids o0..o7, one at a time; returns how many were acked, and the
/// client (still connected, so its leaving is not logged yet). It signals `halfway` after half of them.
async fn random_ops(
    mut client: Client,
    seed: u64,
    n: usize,
    halfway: tokio::sync::oneshot::Sender<()>,
) -> (u64, Client) {
    let mut x = seed;
    let mut acked = 0;
    let mut halfway = Some(halfway);
    for i in 0..n {
        if i == n / 2 {
            halfway.take().map(|h| h.send(()));
        }
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let id = format!("o{}", (x >> 33) % 8);
        let (kind, data) = match (x >> 40) % 10 {
            0..=3 => ("object-create", json!({"id": id, "kind": "rect", "x": i, "by": seed})),
            4..=7 => ("object-update", json!({"id": id, "x": i, "color": format!("c{}", x % 5)})),
            _ => ("object-delete", json!({"id": id})),
        };
        client.publish(kind, data, &format!("op{i}")).await;
        let reply = loop {
            let frame = client.recv().await;
            if frame["type"] == "ack" || frame["type"] == "error" {
                break frame;
            } // the other writer's ops, relayed
        };
        match reply["type"].as_str() {
            Some("ack") => acked += 1,
            Some("error") => assert!(reply["message"].as_str().unwrap().contains("does not exist"), "{reply}"),
            _ => panic!("unexpected reply {reply}"),
        }
    }
    (acked, client)
}

on_both_buses!(a_late_joiner_applying_what_follows_its_welcome_matches_a_client_there_from_the_start);
async fn a_late_joiner_applying_what_follows_its_welcome_matches_a_client_there_from_the_start(store: Store) {
    let file = &store;
    let (a, b) = (file.start(&[]).await, file.start(&[]).await);
    let mut early = a.connect("draw", "early").await;
    assert_eq!(early.welcome["objects"], json!({}), "a new canvas is empty");

    let (half_a, at_half) = tokio::sync::oneshot::channel();
    let (half_b, _) = tokio::sync::oneshot::channel();
    let writers = [
        tokio::spawn(random_ops(a.connect("draw", "wa").await, 1, 150, half_a)),
        tokio::spawn(random_ops(b.connect("draw", "wb").await, 2, 150, half_b)),
    ];
    at_half.await.unwrap();
    let mut middle = b.connect("draw", "middle").await; // joins while both are writing
    assert!(middle.seq() > 0, "the middle client joined a canvas with history");
    let mut connected = Vec::new();
    for w in writers {
        let (acked, client) = w.await.unwrap();
        assert!(acked > 0);
        connected.push(client);
    }
    let head = file.head("draw").await;
    let reference = follow(&mut early, head, BTreeMap::new()).await;
    let mid_state = welcome_state(&middle);
    let from_middle = follow(&mut middle, head, mid_state).await;
    assert_eq!(from_middle, reference, "welcome.objects at welcome.seq plus what followed == the full fold");

    let late = a.connect("draw", "late").await;
    assert_eq!(late.seq(), head + 1, "the head, then late's own user-connected");
    assert_eq!(welcome_state(&late), reference, "a quiet late joiner's objects are the current state");
    assert!(!reference.is_empty(), "the random ops left something on the canvas");
}

on_both_buses!(updates_and_deletes_of_missing_objects_are_refused_and_not_logged);
async fn updates_and_deletes_of_missing_objects_are_refused_and_not_logged(store: Store) {
    let file = &store;
    let a = file.start(&[]).await;
    let mut ann = a.connect("s", "ann").await;
    let mut bob = a.connect("s", "bob").await;
    ann.skip_presence(bob.seq()).await;
    for (kind, reference) in [("object-update", "u1"), ("object-delete", "d1")] {
        ann.publish(kind, json!({"id": "ghost", "x": 1}), reference).await;
        let reply = ann.recv().await;
        assert_eq!((reply["type"].as_str(), reply["code"].as_str()), (Some("error"), Some("invalid_frame")));
        assert_eq!(reply["ref"], reference);
        assert!(reply["message"].as_str().unwrap().contains("ghost"));
    }
    ann.publish("object-create", json!({"id": "real", "x": 1}), "c1").await;
    assert_eq!(ann.recv().await, json!({"type": "ack", "seq": 3, "ref": "c1"}), "refused ops took no seq");
    assert_eq!(bob.recv().await["seq"], 3, "others never saw the refused ops");
    assert_eq!(file.logged("s").await.iter().filter(|t| t.starts_with("object-")).count(), 1);
}

on_both_buses!(state_outlives_the_message_ttl_and_resumed_welcomes_omit_it);
async fn state_outlives_the_message_ttl_and_resumed_welcomes_omit_it(store: Store) {
    let file = &store;
    let a = file.start(&["--message-ttl", "1s", "--cleanup-interval", "100ms"]).await;
    let mut ann = a.connect("keep", "ann").await;
    ann.publish("object-create", json!({"id": "r1", "w": 3}), "c").await;
    ann.recv().await;
    ann.publish("object-update", json!({"id": "r1", "w": 4}), "u").await;
    ann.recv().await;
    let resumed = a.resume("keep", "bob", 1, &ann.epoch()).await;
    assert_eq!(resumed.welcome["resumed"], true);
    assert!(resumed.welcome.get("objects").is_none());
    helpers::eventually("cleanup to drop the expired object ops from the log", || async {
        file.logged("keep").await.iter().all(|t| !t.starts_with("object-"))
    })
    .await;
    let late = a.connect("keep", "cid").await;
    assert_eq!(late.welcome["objects"], json!({"r1": {"id": "r1", "w": 4}}), "state survives the TTL");
}

on_both_buses!(joiners_of_a_big_canvas_that_keeps_changing_get_the_state_at_exactly_their_welcome);
/// The same check on a state too big to read inline (so it is read whole, and on Redis scanned in chunks and
/// caught up with the log) while another instance keeps changing it: every joiner's welcome plus what
/// follows equals the full fold.
async fn joiners_of_a_big_canvas_that_keeps_changing_get_the_state_at_exactly_their_welcome(store: Store) {
    let (a, b) = (store.start(&["--rate-limit", "0"]).await, store.start(&[]).await);
    let mut early = a.connect("big", "early").await;
    let mut filler = a.connect("big", "filler").await;
    filler.create_objects("o", 3_000, 60).await;
    let (half, at_half) = tokio::sync::oneshot::channel();
    let writer = tokio::spawn(async move {
        let mut half = Some(half);
        let mut x: u64 = 7;
        for i in 0..300u64 {
            if i == 50 {
                half.take().map(|h| h.send(()));
            }
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let id = format!("o{}", (x >> 33) % 3_000);
            let (kind, data) = match i % 3 {
                0 => ("object-update", json!({"id": id, "v": i})),
                1 => ("object-create", json!({"id": format!("n{i}"), "v": i})),
                _ => ("object-delete", json!({"id": id})),
            };
            filler.publish(kind, data, &format!("w{i}")).await;
            while !matches!(filler.recv().await["type"].as_str(), Some("ack" | "error")) {}
        }
        filler
    });
    at_half.await.unwrap();
    let mut joiners = Vec::new();
    for n in 0..4 {
        joiners.push(b.connect("big", &format!("joiner{n}")).await);
    }
    let filler = writer.await.unwrap();
    let head = store.head("big").await;
    let reference = follow(&mut early, head, BTreeMap::new()).await;
    for mut joiner in joiners {
        let state = welcome_state(&joiner);
        assert_eq!(follow(&mut joiner, head, state).await, reference, "joined at seq {}", joiner.seq());
    }
    drop(filler);
}

on_both_buses!(an_op_staged_against_a_canvas_another_instance_moved_is_staged_again_and_counted);
/// Each instance's committer holds the canvas as it last committed it: an op staged there after another
/// instance committed is found stale by the store's head check, folded with what is new, staged again and
/// applied; `relay_commit_conflicts_total` counts it once.
async fn an_op_staged_against_a_canvas_another_instance_moved_is_staged_again_and_counted(store: Store) {
    let (a, b) = (store.start(&[]).await, store.start(&[]).await);
    let mut ann = a.connect("moved", "ann").await;
    let mut bob = b.connect("moved", "bob").await;
    ann.publish("object-create", json!({"id": "a", "n": 0}), "a0").await;
    acked(&mut ann, "a0").await;
    bob.publish("object-create", json!({"id": "b", "n": 0}), "b0").await;
    acked(&mut bob, "b0").await;
    let before = a.metric("relay_commit_conflicts_total").await;
    // Ann's instance last committed before Bob's create: its head check fails once.
    ann.publish("object-update", json!({"id": "b", "n": 1}), "a1").await;
    acked(&mut ann, "a1").await;
    assert_eq!(a.metric("relay_commit_conflicts_total").await - before, 1.0);
    let joiner = b.connect("moved", "cy").await;
    assert_eq!(joiner.welcome["objects"], json!({"a": {"id": "a", "n": 0}, "b": {"id": "b", "n": 1}}));
}

/// Waits for the answer to `reference`, which must be an ack.
async fn acked(client: &mut Client, reference: &str) {
    loop {
        let frame = client.recv().await;
        if frame["ref"] == reference {
            assert_eq!(frame["type"], "ack", "{frame}");
            return;
        }
    }
}
