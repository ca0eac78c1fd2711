//! History (issue 29, PROTOCOL v1.2 "History"): the exact state at any kept seq on any instance, versions
//! (automatic snapshots and named ones), restore as one commit every client converges through, fork, the
//! edges' codes, `--history-retention 0`, and history through a SIGKILL. On both stores.

#[macro_use]
mod helpers;

use std::collections::BTreeMap;

use helpers::{eventually, Client, Instance, Seen, Store};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const KEY: &str = "history-key";
const SECRET: &str = "history-secret";

/// A canvas's objects as the tests follow them: id → object.
type State = BTreeMap<String, Value>;

/// Sends one object op and waits for its ack; returns its seq.
async fn op(client: &mut Client, kind: &str, data: Value) -> u64 {
    client.publish(kind, data, "op").await;
    loop {
        let frame = client.recv().await;
        if frame["ref"] == "op" {
            assert_eq!(frame["type"], "ack", "{frame}");
            return frame["seq"].as_u64().unwrap_or_else(|| panic!("an ack without a seq: {frame}"));
        }
    }
}

/// Applies an op to a followed state, as the relay's fold does.
fn apply(state: &mut State, kind: &str, data: &Value) {
    let Some(id) = data["id"].as_str().map(str::to_owned) else { return }; // not an object op
    match kind {
        "object-create" => drop(state.insert(id, data.clone())),
        "object-update" => {
            let object = state.get_mut(&id).unwrap().as_object_mut().unwrap();
            for (field, value) in data.as_object().unwrap() {
                object.insert(field.clone(), value.clone());
            }
        }
        "object-delete" => drop(state.remove(&id)),
        _ => {}
    }
}

/// A seeded run of creates, updates and deletes; returns the state after each seq (index = seq) up to the
/// last op's.
async fn edit(client: &mut Client, ops: usize) -> Vec<State> {
    let mut states = vec![State::new()];
    let mut state = State::new();
    for n in 0..ops {
        let (kind, data) = match n % 5 {
            0..=2 => ("object-create", json!({"id": format!("o{}", n % 17), "n": n})),
            3 if !state.is_empty() => {
                ("object-update", json!({"id": state.keys().nth(n % state.len()).unwrap(), "u": n}))
            }
            _ if !state.is_empty() => ("object-delete", json!({"id": state.keys().nth(n % state.len()).unwrap()})),
            _ => ("object-create", json!({"id": format!("x{n}")})),
        };
        let seq = op(client, kind, data.clone()).await;
        states.resize(seq as usize, state.clone()); // what came between (presence) left the objects
        apply(&mut state, kind, &data);
        states.push(state.clone());
    }
    states
}

async fn at(instance: &Instance, canvas: &str, seq: u64) -> (u16, Value) {
    instance.api("GET", &format!("/api/v1/canvases/{canvas}?at={seq}"), Some(KEY), Value::Null).await
}

fn objects(body: &Value) -> State {
    body["objects"].as_object().unwrap().iter().map(|(id, object)| (id.clone(), object.clone())).collect()
}

async fn versions(instance: &Instance, canvas: &str) -> Vec<Value> {
    let (status, body) =
        instance.api("GET", &format!("/api/v1/canvases/{canvas}/versions"), Some(KEY), Value::Null).await;
    assert_eq!(status, 200, "{body}");
    body["versions"].as_array().unwrap().clone()
}

on_both_buses!(the_state_at_every_kept_seq_is_exact_on_any_instance_and_past_the_head_is_seq_ahead);
async fn the_state_at_every_kept_seq_is_exact_on_any_instance_and_past_the_head_is_seq_ahead(store: Store) {
    let a = store.start(&["--api-key", KEY, "--snapshot-every", "7"]).await;
    let b = store.start(&["--api-key", KEY]).await;
    let mut ann = a.connect("hist", "ann").await;
    let states = edit(&mut ann, 60).await;
    let head = states.len() as u64 - 1;
    eventually("snapshots every 7 ops", || async { versions(&a, "hist").await.len() >= 5 }).await;
    for seq in 0..=head {
        let (status, body) = at(&b, "hist", seq).await;
        assert_eq!(status, 200, "at {seq}: {body}");
        assert_eq!(body["seq"], seq);
        assert_eq!(objects(&body), states[seq as usize], "the state after seq {seq}");
    }
    let (status, body) = at(&a, "hist", head + 1).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("seq_ahead")), "{body}");
    let (status, _) = at(&a, "hist", 0).await;
    assert_eq!(status, 200, "the epoch's start is kept");
    let listed = versions(&b, "hist").await;
    let seqs: Vec<u64> = listed.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|pair| pair[0] > pair[1]), "newest first: {seqs:?}");
    assert!(listed.iter().all(|v| v["name"].is_null() && v["bytes"].as_u64() > Some(2) && v["ts"].as_i64() > Some(0)));
    let (status, page) = b.api("GET", "/api/v1/canvases/hist/versions?limit=2", Some(KEY), Value::Null).await;
    assert_eq!((status, page["versions"].as_array().unwrap().len()), (200, 2));
    let next = page["next"].as_u64().expect("a full page has a next");
    let path = format!("/api/v1/canvases/hist/versions?limit=2&before={next}");
    let (_, rest) = b.api("GET", &path, Some(KEY), Value::Null).await;
    assert_eq!(rest["versions"][0]["seq"].as_u64(), Some(seqs[2]), "the next page goes on where it stopped");
}

on_both_buses!(with_no_history_retention_only_what_joins_need_is_kept_and_named_versions_stay);
async fn with_no_history_retention_only_what_joins_need_is_kept_and_named_versions_stay(store: Store) {
    let args = ["--api-key", KEY, "--snapshot-every", "5", "--history-retention", "0", "--cleanup-interval", "100ms"];
    let a = store.start(&args).await;
    let mut ann = a.connect("zero", "ann").await;
    let first = edit(&mut ann, 8).await;
    let head = first.len() as u64 - 1;
    let (status, named) = a.api("POST", "/api/v1/canvases/zero/versions", Some(KEY), json!({"name": "draft"})).await;
    assert_eq!((status, named["seq"].as_u64()), (201, Some(head)), "the head's state: {named}");
    let (status, renamed) = a.api("POST", "/api/v1/canvases/zero/versions", Some(KEY), json!({"name": "first"})).await;
    assert_eq!((status, renamed), (201, json!({"seq": head, "name": "first"})), "naming the same seq renames it");
    for n in 0..20 {
        op(&mut ann, "object-create", json!({"id": format!("later{n}")})).await;
    }
    eventually("one automatic snapshot besides the named one", || async {
        let listed = versions(&a, "zero").await;
        listed.len() == 2 && listed[0]["seq"].as_u64() > Some(head) && listed[1]["name"] == "first"
    })
    .await;
    let newest = versions(&a, "zero").await[0]["seq"].as_u64().unwrap();
    let (status, body) = at(&a, "zero", head).await;
    assert_eq!(
        (status, objects(&body)),
        (200, first[head as usize].clone()),
        "a named version is kept whatever the retention"
    );
    let (status, body) = at(&a, "zero", head + 1).await;
    assert_eq!((status, body["code"].as_str()), (410, Some("history_expired")), "{body}");
    let (status, _) = at(&a, "zero", newest).await;
    assert_eq!(status, 200, "from the newest snapshot on, every seq");
    let path = &format!("/api/v1/canvases/zero/versions/{head}");
    assert_eq!(a.http("DELETE", path, None, "").await.0, 401, "unnaming needs the API key");
    assert_eq!(a.http("DELETE", path, Some(KEY), "").await.0, 204);
    assert_eq!(a.http("DELETE", path, Some(KEY), "").await.0, 404, "no named version there any more");
}

on_both_buses!(a_restore_converges_every_client_on_two_instances_while_another_keeps_editing);
async fn a_restore_converges_every_client_on_two_instances_while_another_keeps_editing(store: Store) {
    let (a, b) = (store.start(&["--api-key", KEY]).await, store.start(&["--api-key", KEY]).await);
    let mut ann = a.connect("board", "ann").await;
    let states = edit(&mut ann, 40).await;
    let (_, named) = a.api("POST", "/api/v1/canvases/board/versions", Some(KEY), json!({"name": "before"})).await;
    let before = named["seq"].as_u64().unwrap();
    let target = states[before as usize].clone();
    // A bad bulk edit: everything deleted, some new objects.
    for id in target.keys() {
        op(&mut ann, "object-delete", json!({"id": id})).await;
    }
    ann.create_objects("junk", 50, 10).await;
    // Two clients that only watch, one per instance, and Bob, who keeps editing objects of his own while
    // the restore goes in.
    let watchers = [a.connect("board", "wes").await, b.connect("board", "wil").await];
    let mut bob = b.connect("board", "bob").await;
    let editing = tokio::spawn(async move {
        for n in 0..30 {
            op(&mut bob, "object-create", json!({"id": format!("bob{n}")})).await;
        }
        bob
    });
    let (status, restored) = b.api("POST", "/api/v1/canvases/board/restore", Some(KEY), json!({"seq": before})).await;
    assert_eq!(status, 200, "{restored}");
    let (head, ops) = (restored["seq"].as_u64().unwrap(), restored["ops"].as_u64().unwrap());
    assert!(ops >= target.len() as u64 + 50, "every object brought back and every junk one deleted: {restored}");
    editing.await.unwrap().close().await;
    // Right after the restore, the state is the named one plus whatever Bob made before it.
    let (_, after) = at(&a, "board", head).await;
    let mut after = objects(&after);
    after.retain(|id, _| !id.starts_with("bob"));
    assert_eq!(after, target, "the state at the restore's last seq");
    let path = format!("/api/v1/canvases/board/messages?since={}&limit=1000", head - ops);
    let (_, log) = a.api("GET", &path, Some(KEY), Value::Null).await;
    let restore_ops = &log["messages"].as_array().unwrap()[..ops as usize];
    assert!(restore_ops.iter().all(|m| m["from"] == "server"), "the restore's ops are consecutive seqs");
    let (_, now) = a.api("GET", "/api/v1/canvases/board", Some(KEY), Value::Null).await;
    let (final_head, expected) = (now["seq"].as_u64().unwrap(), objects(&now));
    for mut watcher in watchers {
        let mut state = objects(&watcher.welcome);
        let (seen, _) = watcher.read_through(final_head).await;
        for (_, seen) in seen {
            if let Seen::Message { kind, data, .. } = seen {
                apply(&mut state, &kind, &data);
            }
        }
        assert_eq!(state, expected, "every client converges on the restored board");
        watcher.close().await;
    }
    let (_, on_b) = b.api("GET", "/api/v1/canvases/board", Some(KEY), Value::Null).await;
    assert_eq!(objects(&on_b), expected);
    // The watchers' leaving moved the head, not the objects.
    let (status, again) = b.api("POST", "/api/v1/canvases/board/restore", Some(KEY), json!({"seq": final_head})).await;
    assert_eq!((status, again["ops"].as_u64()), (200, Some(0)), "nothing differs: nothing logged: {again}");
    let (_, now) = a.api("GET", "/api/v1/canvases/board", Some(KEY), Value::Null).await;
    assert_eq!(again["seq"], now["seq"], "the head it found");
}

on_both_buses!(a_restore_bigger_than_a_clients_queue_cuts_no_client);
async fn a_restore_bigger_than_a_clients_queue_cuts_no_client(store: Store) {
    let args = [
        "--api-key",
        KEY,
        "--client-queue",
        "64",
        "--max-in-flight",
        "32",
        "--client-queue-bytes",
        "65536",
        "--max-frame-size",
        "16384",
        "--rate-limit",
        "0",
    ];
    let (a, b) = (store.start(&args).await, store.start(&args).await);
    let mut ann = a.connect("big", "ann").await;
    let head = ann.create_objects("o", 2000, 20).await;
    let mut watchers = [a.connect("big", "wes").await, b.connect("big", "wil").await];
    let (status, restored) = a.api("POST", "/api/v1/canvases/big/restore", Some(KEY), json!({"seq": 0})).await;
    assert_eq!((status, restored["ops"].as_u64()), (200, Some(2000)), "every object deleted: {restored}");
    let end = restored["seq"].as_u64().unwrap();
    assert!(end > head + 2000);
    // Ann sends on meanwhile: what follows a restore is bounded as ever, and fits.
    op(&mut ann, "object-create", json!({"id": "after"})).await;
    for watcher in &mut watchers {
        let (seen, _) = watcher.read_through(end + 1).await;
        let deletes = seen.iter().filter(|(_, seen)| seen.kind() == "object-delete").count();
        assert_eq!(deletes, 2000, "every frame of the restore, none cut");
    }
}

on_both_buses!(a_fork_of_a_fork_starts_at_seq_0_with_the_state_at_its_seq_and_a_taken_name_is_refused);
async fn a_fork_of_a_fork_starts_at_seq_0_with_the_state_at_its_seq_and_a_taken_name_is_refused(store: Store) {
    let (a, b) = (store.start(&["--api-key", KEY]).await, store.start(&["--api-key", KEY]).await);
    let mut ann = a.connect("origin", "ann").await;
    let states = edit(&mut ann, 30).await;
    let fork = |from: &'static str, body: Value| {
        let b = &b;
        async move { b.api("POST", &format!("/api/v1/canvases/{from}/fork"), Some(KEY), body).await }
    };
    let (status, forked) = fork("origin", json!({"to": "copy", "at": 12})).await;
    assert_eq!((status, forked["canvas"].as_str(), forked["seq"].as_u64()), (201, Some("copy"), Some(0)), "{forked}");
    let epoch = forked["epoch"].as_str().unwrap().to_owned();
    let joiner = a.connect("copy", "cat").await;
    // Its first seq is the joiner's own `user-connected`.
    assert_eq!((joiner.welcome["seq"].as_u64(), joiner.welcome["epoch"].as_str()), (Some(1), Some(epoch.as_str())));
    assert_eq!(objects(&joiner.welcome), states[12], "the state at seq 12, as the fork's first snapshot");
    let (_, zero) = at(&b, "copy", 0).await;
    assert_eq!(objects(&zero), states[12], "its history starts there");
    let (status, twice) = fork("copy", json!({"to": "copy2"})).await;
    assert_eq!(status, 201, "a fork of a fork, at its head: {twice}");
    let (_, copy2) = a.api("GET", "/api/v1/canvases/copy2", Some(KEY), Value::Null).await;
    assert_eq!((objects(&copy2), copy2["seq"].as_u64()), (states[12].clone(), Some(0)));
    assert_ne!(twice["epoch"], forked["epoch"], "every fork a new epoch");
    for (to, why) in [("origin", "a canvas with seqs"), ("copy", "a canvas with a connection and objects")] {
        let (status, body) = fork("copy2", json!({"to": to})).await;
        assert_eq!((status, body["code"].as_str()), (409, Some("canvas_exists")), "{why}: {body}");
    }
    let (status, body) = fork("origin", json!({"to": "late", "at": states.len()})).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("seq_ahead")), "{body}");
    let (_, late) = b.api("GET", "/api/v1/canvases/late", Some(KEY), Value::Null).await;
    assert_eq!((late["seq"].as_u64(), objects(&late)), (Some(0), State::new()), "a refused fork creates nothing");
    let (status, body) = b.api("POST", "/api/v1/canvases/origin/fork", None, json!({"to": "nokey"})).await;
    assert_eq!(status, 401, "a fork needs the API key: {body}");
}

on_both_buses!(history_survives_a_sigkill_and_a_reset_starts_an_empty_one);
async fn history_survives_a_sigkill_and_a_reset_starts_an_empty_one(store: Store) {
    let args = ["--api-key", KEY, "--snapshot-every", "4"];
    let mut a = store.start(&args).await;
    let mut ann = a.connect("lasting", "ann").await;
    let states = edit(&mut ann, 25).await;
    a.api("POST", "/api/v1/canvases/lasting/versions", Some(KEY), json!({"name": "kept"})).await;
    let listed = versions(&a, "lasting").await;
    a.kill().await;
    let b = store.start(&args).await;
    assert_eq!(versions(&b, "lasting").await, listed, "the versions, as they were");
    for seq in [0, 5, 13, 25] {
        let (status, body) = at(&b, "lasting", seq).await;
        assert_eq!((status, objects(&body)), (200, states[seq as usize].clone()), "at {seq} after a SIGKILL");
    }
    let (status, _) = b.api("DELETE", "/api/v1/canvases/lasting", Some(KEY), Value::Null).await;
    assert_eq!(status, 200);
    assert!(versions(&b, "lasting").await.is_empty(), "a reset starts an empty history");
    let (status, body) = at(&b, "lasting", 5).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("seq_ahead")), "the new epoch is at seq 0: {body}");
}

fn token(user: &str, role: &str) -> String {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    let claims = json!({"sub": user, "exp": exp, "canvases": {"guarded": role}});
    encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

on_both_buses!(an_editor_token_may_use_history_on_its_canvas_a_viewer_may_not);
async fn an_editor_token_may_use_history_on_its_canvas_a_viewer_may_not(store: Store) {
    let a = store.start(&["--api-key", KEY, "--jwt-secret", SECRET]).await;
    let (editor, viewer) = (token("ann", "editor"), token("vic", "viewer"));
    let mut ann = a.connect_path(&format!("/ws/guarded?token={editor}")).await.unwrap();
    op(&mut ann, "object-create", json!({"id": "a"})).await;
    let get = |token: Option<String>, path: &'static str| {
        let a = &a;
        async move { a.api("GET", path, token.as_deref(), Value::Null).await.0 }
    };
    assert_eq!(get(Some(editor.clone()), "/api/v1/canvases/guarded?at=1").await, 200);
    assert_eq!(get(Some(editor.clone()), "/api/v1/canvases/guarded/versions").await, 200);
    assert_eq!(get(Some(viewer), "/api/v1/canvases/guarded?at=1").await, 403);
    assert_eq!(get(None, "/api/v1/canvases/guarded?at=1").await, 401);
    assert_eq!(get(Some(editor.clone()), "/api/v1/canvases/guarded").await, 401, "the current state stays the API's");
    let (status, _) = a.api("POST", "/api/v1/canvases/guarded/restore", Some(&editor), json!({"seq": 0})).await;
    assert_eq!(status, 200, "an editor may restore");
    let (status, _) = a.api("POST", "/api/v1/canvases/guarded/fork", Some(&editor), json!({"to": "mine"})).await;
    assert_eq!(status, 401, "but not fork");
}

on_both_buses!(history_outlives_the_message_ttl_while_the_log_follows_it);
async fn history_outlives_the_message_ttl_while_the_log_follows_it(store: Store) {
    let args = ["--api-key", KEY, "--message-ttl", "1s", "--cleanup-interval", "100ms", "--snapshot-every", "6"];
    let a = store.start(&args).await;
    let mut ann = a.connect("aging", "ann").await;
    let states = edit(&mut ann, 30).await;
    ann.close().await;
    eventually("cleanup to drop the expired log", || async { store.logged("aging").await.is_empty() }).await;
    let (_, log) = a.api("GET", "/api/v1/canvases/aging/messages?since=0", Some(KEY), Value::Null).await;
    assert_eq!(log["messages"], json!([]), "clients see the log as the TTL leaves it");
    let b = store.start(&args).await;
    for seq in 0..states.len() as u64 {
        let (status, body) = at(&b, "aging", seq).await;
        assert_eq!((status, objects(&body)), (200, states[seq as usize].clone()), "at {seq}, past the TTL");
    }
}
