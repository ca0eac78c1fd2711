//! `--bus memory`: one process, no file, the same protocol. The scenarios of the other test files that need
//! only one instance, run again on a memory bus: ordering with concurrent writers, acks, resume, canvas
//! state for late joiners, presence, resets and user messages.

mod helpers;

use helpers::{Instance, Seen, SharedFile};
use serde_json::json;

const KEY: &str = "memory-key";

/// A memory instance, given a --db path that must never be created.
async fn start(file: &SharedFile) -> Instance {
    file.start(&["--bus", "memory", "--api-key", KEY, "--rate-limit", "0"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_get_one_gap_free_order_and_their_acks() {
    let file = SharedFile::new();
    let a = start(&file).await;
    let mut clients = Vec::new();
    for i in 0..4 {
        clients.push(a.connect("order", &format!("user{i}")).await);
    }
    for client in &mut clients {
        client.skip_presence(4).await;
    }
    let per_client = 100u64;
    let total = 4 + 4 * per_client;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                for n in 0..per_client {
                    client.publish("stroke", json!({"n": n}), &format!("r{n}")).await;
                }
                let (seen, _) = client.read_through(total).await;
                seen
            })
        })
        .collect();
    for task in tasks {
        // read_through checked every seq after the presence arrived, in order, exactly once.
        let seen = task.await.unwrap();
        let acks = seen.iter().filter(|(_, s)| matches!(s, Seen::Ack { .. })).count() as u64;
        assert_eq!((seen.len() as u64, acks), (4 * per_client, per_client));
    }
    assert!(!file.db.exists(), "memory mode writes no file");
}

#[tokio::test]
async fn resume_state_presence_reset_and_user_messages_work_as_on_a_file() {
    let file = SharedFile::new();
    let a = start(&file).await;
    let mut ann = a.connect_path("/ws/m?user=ann&name=Ann").await.unwrap();
    ann.publish("object-create", json!({"id": "o1", "w": 1}), "c").await;
    ann.publish("object-update", json!({"id": "o1", "w": 2}), "u").await;
    assert_eq!(ann.recv().await["seq"], 2);
    assert_eq!(ann.recv().await["seq"], 3);

    let mut late = a.connect("m", "bob").await;
    assert_eq!(late.welcome["objects"], json!({"o1": {"id": "o1", "w": 2}}));
    assert_eq!(
        late.welcome["presence"],
        json!([{"user": "ann", "name": "Ann", "connections": 1}, {"user": "bob", "connections": 1}])
    );
    let mut resumed = a.resume("m", "cid", 1, &ann.epoch()).await;
    assert_eq!(resumed.welcome["resumed"], true);
    let (replay, _) = resumed.read_through(5).await;
    let kinds: Vec<&str> = replay.iter().map(|(_, s)| s.kind()).collect();
    assert_eq!(kinds, ["object-create", "object-update", "user-connected", "user-connected"]);

    let (status, sent) =
        a.api("POST", "/api/v1/users/ann/messages", Some(KEY), json!({"type": "notice", "data": 1})).await;
    assert_eq!((status, sent), (202, json!({"connections": 1})));
    for arrival in ["bob", "cid"] {
        assert_eq!(ann.recv().await["data"]["user"], arrival);
    }
    assert_eq!(ann.recv().await["to"], "ann");

    let (status, reset) = a.api("DELETE", "/api/v1/canvases/m", Some(KEY), json!(null)).await;
    assert_eq!(status, 200);
    assert_eq!(late.read_through(5).await.0.len(), 1, "cid's arrival");
    assert_eq!(late.recv().await, json!({"type": "reset", "canvas": "m", "epoch": reset["epoch"], "seq": 0}));
    late.close().await;
    assert_eq!(resumed.recv().await["type"], "reset");
    // (late's presence state going null, an ephemeral frame, may come before or after.)
    let left = resumed.recv_skipping("presence").await;
    assert_eq!(
        (left["seq"].as_u64(), left["type"].as_str()),
        (Some(1), Some("user-disconnected")),
        "the new epoch's seq 1"
    );
    assert!(!file.db.exists(), "memory mode writes no file");
}
