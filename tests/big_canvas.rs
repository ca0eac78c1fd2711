//! Big canvases: a welcome carries any state up to `--max-canvas-state`, whatever its size against the
//! socket's buffers; an op that would take the state past the limit is refused with `canvas_full` (413
//! through the API) and nothing is logged; a storm of joiners shares one serialized state; and a join that
//! reads a big state holds up no writer.

#[macro_use]
mod helpers;

use std::time::Duration;

use futures_util::future::join_all;
use helpers::{Client, SharedFile, Store, WAIT};
use serde_json::json;

/// Checks that a welcome carries exactly the `count` objects `create_objects` made.
fn assert_exact_state(client: &Client, prefix: &str, count: usize, pad: usize) {
    let objects = client.welcome["objects"].as_object().expect("a fresh welcome carries objects");
    assert_eq!(objects.len(), count);
    for n in [0, count / 2, count - 1] {
        let object = &objects[&format!("{prefix}{n}")];
        assert_eq!((object["n"].as_u64(), object["pad"].as_str().map(str::len)), (Some(n as u64), Some(pad)));
    }
}

on_both_buses!(a_canvas_far_past_a_sockets_write_buffer_is_joined_with_its_exact_state);
async fn a_canvas_far_past_a_sockets_write_buffer_is_joined_with_its_exact_state(store: Store) {
    // 5,000 objects of ~200 bytes: about 1 MB of welcome, where a welcome over ~272 KB used to drop the
    // connection without a close frame (the socket's write buffer was capped).
    let a = store.start(&["--rate-limit", "0"]).await;
    let b = store.start(&[]).await;
    let mut ann = a.connect("board", "ann").await;
    let head = ann.create_objects("o", 5_000, 150).await;
    for instance in [&a, &b] {
        let late = instance.connect("board", "late").await;
        assert_exact_state(&late, "o", 5_000, 150);
        assert!(late.seq() > head, "the welcome is at or after the last object op (its own join is logged)");
        late.close().await;
    }
}

on_both_buses!(an_op_past_the_state_limit_is_canvas_full_and_nothing_is_logged);
async fn an_op_past_the_state_limit_is_canvas_full_and_nothing_is_logged(store: Store) {
    let a = store.start(&["--max-canvas-state", "2048", "--api-key", "k"]).await;
    let mut ann = a.connect("small", "ann").await;
    let big = "x".repeat(400);
    let mut created = 0;
    let refusal = loop {
        ann.publish("object-create", json!({"id": format!("o{created}"), "pad": big}), &format!("r{created}")).await;
        let frame = ann.recv().await;
        if frame["type"] != "ack" {
            break frame;
        }
        created += 1;
    };
    assert_eq!((refusal["type"].as_str(), refusal["code"].as_str()), (Some("error"), Some("canvas_full")), "{refusal}");
    assert_eq!(refusal["ref"], format!("r{created}"), "the refusal names the op");
    assert!((3..=5).contains(&created), "about 2048 / 420 objects fit: {created}");
    let head = store.head("small").await;
    let logged = store.logged("small").await;
    assert_eq!(logged.iter().filter(|t| *t == "object-create").count(), created, "the refused op was not logged");

    let body = json!({"type": "object-create", "data": {"id": "api", "pad": big}});
    let (status, answer) = a.api("POST", "/api/v1/canvases/small/messages", Some("k"), body.clone()).await;
    assert_eq!(status, 413, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("--max-canvas-state"), "{answer}");
    assert_eq!(store.head("small").await, head, "no seq taken by refusals");

    // Shrinking is always allowed, and frees room for more.
    ann.publish("object-update", json!({"id": "o0", "pad": ""}), "shrink").await;
    assert_eq!(ann.recv().await["type"], "ack");
    ann.publish("object-delete", json!({"id": "o1"}), "delete").await;
    assert_eq!(ann.recv().await["type"], "ack");
    let (status, _) = a.api("POST", "/api/v1/canvases/small/messages", Some("k"), body).await;
    assert_eq!(status, 201);
    let state = a.connect("small", "bob").await;
    let objects = state.welcome["objects"].as_object().unwrap();
    assert!(objects.contains_key("api") && !objects.contains_key("o1"));
    assert_eq!(objects["o0"]["pad"], "");
}

on_both_buses!(a_storm_of_joiners_all_get_the_exact_state_serialized_once);
async fn a_storm_of_joiners_all_get_the_exact_state_serialized_once(store: Store) {
    let a = store.start(&["--rate-limit", "0"]).await;
    let mut ann = a.connect("storm", "ann").await;
    ann.create_objects("o", 2_000, 100).await; // ~250 KB: past the size a snapshot reads inline
    let joins = (0..20).map(|n| Client::connect_url(a.url(&format!("/ws/storm?user=s{n}"))));
    let joiners: Vec<Client> = join_all(joins).await.into_iter().map(|c| c.expect("joined")).collect();
    for joiner in &joiners {
        assert_exact_state(joiner, "o", 2_000, 100);
    }
    // Every joiner logged its user-connected (20 different seqs), yet the objects were read and
    // serialized once: their version did not change.
    let built = a.metric(r#"relay_join_states_total{source="built"}"#).await;
    let cached = a.metric(r#"relay_join_states_total{source="cache"}"#).await;
    assert_eq!(built, 1.0, "the state was read once for the storm");
    assert_eq!(cached, 19.0);
    // An object op makes a new version, read once again.
    ann.publish("object-update", json!({"id": "o7", "n": -7}), "u").await;
    loop {
        if ann.recv().await["type"] == "ack" {
            break;
        }
    }
    let after = a.connect("storm", "after").await;
    assert_eq!(after.welcome["objects"]["o7"]["n"], -7, "never a stale state");
    assert_eq!(a.metric(r#"relay_join_states_total{source="built"}"#).await, 2.0);
}

/// The review's chain, SQLite only: a join that read its snapshot under its room's lock made a leave of that
/// room wait with the hub's lock held, and the writer's ack registration wait for that inside `BEGIN
/// IMMEDIATE`, so every writer on the file stalled behind one slow join. The lock properties are pinned by
/// unit tests (`hub::tests::a_leave_waiting_for_a_rooms_lock_holds_up_no_lookup`,
/// `core::join::tests::a_snapshot_takes_no_room_lock`); this is the scenario end to end: a leave of the room
/// and a publish on another canvas, during a join that reads a 300,000-object state, all complete, and the
/// joiner gets the whole state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_reading_a_big_state_with_a_leave_and_a_publish_meanwhile() {
    let file = SharedFile::new();
    let a = file.start(&["--rate-limit", "0"]).await;
    let leaver = a.connect("huge", "leaver").await;
    // 300,000 objects written straight into the file, as a snapshot at the canvas's head: a state that
    // takes a while to read and serve.
    {
        let conn = file.open();
        conn.execute_batch(
            "BEGIN;
             WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 299999),
               o(id, data) AS (SELECT 'o' || i, json_object('id', 'o' || i, 'n', i, 'pad', 'abcdefghijklmnopqrstuvwxyz') FROM n)
             INSERT INTO snapshots (canvas_id, generation, seq, created_at, json)
                 SELECT 'huge', c.generation, c.last_seq, 0,
                        '{' || (SELECT group_concat(json_quote(id) || ':' || data, ',' ORDER BY id) FROM o) || '}'
                 FROM canvases c WHERE c.canvas_id = 'huge';
             UPDATE canvases SET state_bytes = (SELECT length(json) - 1 FROM snapshots WHERE canvas_id = 'huge'),
                 objects = 300000, state_seq = last_seq, snap_seq = last_seq, rev = rev + 1 WHERE canvas_id = 'huge';
             COMMIT;",
        )
        .unwrap();
    }
    let mut other = a.connect("elsewhere", "other").await;
    let url = a.url("/ws/huge?user=joiner");
    let joining = tokio::spawn(async move {
        let joined = Client::connect_url(url).await.expect("joined");
        joined.welcome["objects"].as_object().map(|o| o.len())
    });
    // A head start for the join, which nothing outside the process can see begin reading: if it has not
    // begun by the leave, this run checks less than it means to (it cannot fail for that).
    tokio::time::sleep(Duration::from_millis(20)).await;
    let leaving = tokio::spawn(leaver.close());
    other.publish("note", json!(1), "n").await;
    tokio::time::timeout(WAIT, async { while other.recv().await["type"] != "ack" {} }).await.expect("acked");
    leaving.await.unwrap();
    assert_eq!(joining.await.unwrap(), Some(300_000));
}
