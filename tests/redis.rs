//! What only the Redis bus has to show (the protocol scenarios run on both buses in their own files): a
//! Redis restart during traffic loses no acknowledged message and no client sees a gap; a Redis that comes
//! back without its data, or from an older snapshot, gives every canvas a new epoch and every client
//! reloads instead of trusting seqs that will be reused; a batch whose reply was lost is logged once; cleanup
//! trims the log by the TTL and keeps object ops back to the newest snapshot. `commit.lua`'s own guarantees,
//! checked by running it without a relay, are in `redis_scripts.rs`; upgrades from earlier key layouts in
//! `redis_layouts.rs`.

#[macro_use]
mod helpers;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use helpers::{eventually, Client, Instance, LossyProxy, RedisServer, WAIT};
use serde_json::{json, Value};

const FAST: [&str; 4] = ["--heartbeat-interval", "100ms", "--presence-timeout", "1s"];

/// What the senders of a test have been answered so far, all of them together: the test waits on these
/// instead of guessing how long the traffic takes.
#[derive(Default)]
struct Tally {
    acked: AtomicUsize,
    refused: AtomicUsize,
}

/// Sends `count` notes one at a time, each until acked (an `unavailable` error means: not logged, send
/// again), counting each answer in `tally`. Checks that every seq after the welcome arrives once, in order.
/// Returns (n, acked seq) and the client's view, seq → frame.
async fn send_until_acked(
    mut client: Client,
    me: usize,
    count: usize,
    tally: Arc<Tally>,
) -> (Vec<(usize, u64)>, BTreeMap<u64, Value>, Client) {
    let mut next = client.seq() + 1;
    let (mut acked, mut view, mut attempt) = (Vec::new(), BTreeMap::new(), 0);
    for n in 0..count {
        loop {
            attempt += 1;
            let reference = format!("{me}-{attempt}");
            client.publish("note", json!({"client": me, "n": n}), &reference).await;
            let outcome = loop {
                let frame = client.recv().await;
                if let Some(seq) = frame["seq"].as_u64() {
                    assert_eq!(seq, next, "client {me}: gap or reorder at {frame}");
                    next += 1;
                    view.insert(seq, frame.clone());
                }
                if frame["ref"] == reference.as_str() {
                    break frame;
                }
            };
            match outcome["type"].as_str() {
                Some("ack") => {
                    acked.push((n, outcome["seq"].as_u64().unwrap()));
                    tally.acked.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                _ => {
                    assert_eq!(outcome["code"], "unavailable", "{outcome}");
                    tally.refused.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await; // a steady stream, not a burst
    }
    (acked, view, client)
}

async fn health(instance: &Instance) -> u16 {
    instance.get("/health").await.0
}

async fn wait_for_health(instance: &Instance, status: u16) {
    tokio::time::timeout(WAIT, async {
        while health(instance).await != status {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("/health never answered {status}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_during_traffic_loses_no_acked_message_and_no_client_sees_a_gap() {
    let Some(mut redis) = RedisServer::start(true).await else { return };
    let (a, b) =
        (Instance::start_on_redis(&redis.url(), &FAST).await, Instance::start_on_redis(&redis.url(), &FAST).await);
    let mut clients = Vec::new();
    for (i, instance) in [&a, &a, &b, &b].into_iter().enumerate() {
        clients.push(instance.connect("live", &format!("user{i}")).await);
    }
    let last_join = clients.last().unwrap().seq();
    for client in &mut clients {
        client.skip_presence(last_join).await;
    }
    const COUNT: usize = 100;
    let tally = Arc::new(Tally::default());
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, c)| tokio::spawn(send_until_acked(c, i, COUNT, tally.clone())))
        .collect();

    // The restart falls within the traffic: some messages acked before it, some sends refused during it.
    let (acked, refused) = (&tally.acked, &tally.refused);
    eventually("some messages acked before the restart", || async { acked.load(Ordering::SeqCst) >= 20 }).await;
    redis.kill().await;
    wait_for_health(&a, 503).await;
    wait_for_health(&b, 503).await;
    eventually("a send refused while Redis is down", || async { refused.load(Ordering::SeqCst) > 0 }).await;
    redis.restart().await;
    wait_for_health(&a, 200).await;
    wait_for_health(&b, 200).await;

    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("client task"));
    }
    // Every client reads on to the last seq anyone was acked, so all views cover the same range.
    let head = results.iter().flat_map(|(acked, _, _)| acked.iter().map(|(_, seq)| *seq)).max().unwrap();
    let mut views = Vec::new();
    for (i, (acked, mut view, mut client)) in results.into_iter().enumerate() {
        assert_eq!(acked.len(), COUNT, "client {i} got every message acked in the end");
        let from = view.keys().last().copied().unwrap_or(client.seq());
        client.welcome["seq"] = from.into();
        let (seen, _) = client.read_through(head).await;
        for (seq, _) in seen {
            view.insert(seq, json!({"seen": true}));
        }
        views.push((i, acked, view));
    }
    // The log after the restart holds every acked message at its acked seq.
    let stored: BTreeMap<u64, Value> = redis
        .log("live")
        .await
        .iter()
        .map(|e| (e.get::<u64>("s").unwrap(), serde_json::from_str(&e.get::<String>("d").unwrap()).unwrap()))
        .collect();
    for (i, acked, view) in &views {
        for (n, seq) in acked {
            assert_eq!(
                stored.get(seq),
                Some(&json!({"client": i, "n": n})),
                "acked message lost or moved at seq {seq}"
            );
        }
        assert_eq!(view.keys().next_back(), Some(&head), "client {i} followed to the head");
        assert_eq!(view.len() as u64, head - last_join, "client {i} saw every seq after its joins once");
    }
}

/// Redis restarted without persistence: empty, so a new store epoch. Clients are cut (4009), their resume
/// fails on the epoch, and they reload from a fresh canvas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_lost_its_data_means_a_new_epoch_and_every_client_reloads() {
    let Some(mut redis) = RedisServer::start(false).await else { return };
    let a = Instance::start_on_redis(&redis.url(), &FAST).await;
    let mut ann = a.connect("gone", "ann").await;
    ann.publish("object-create", json!({"id": "o1"}), "c").await;
    assert_eq!(ann.recv().await["type"], "ack");
    let (epoch, seq) = (ann.epoch(), 2);
    redis.restart().await;
    let (code, _) = ann.recv_until_close().await;
    assert_eq!(code, Some(4009), "cut once the instance saw the new store epoch");
    let back = a.resume("gone", "ann", seq, &epoch).await;
    assert_eq!(back.welcome["resumed"], false);
    assert_ne!(back.epoch(), epoch);
    assert_eq!((back.seq(), &back.welcome["objects"]), (1, &json!({})), "a fresh log and state: reload");
}

/// Redis restarted from an older snapshot: same store epoch, but its write count went back. Seqs the
/// clients have seen would be handed out again, so the store gets a new epoch and every client reloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restored_from_an_older_snapshot_is_caught_and_every_client_reloads() {
    let Some(mut redis) = RedisServer::start(false).await else { return };
    let a = Instance::start_on_redis(&redis.url(), &FAST).await;
    let mut ann = a.connect("old", "ann").await;
    ann.publish("note", json!(1), "1").await;
    assert_eq!(ann.recv().await["seq"], 2);
    let () = redis::cmd("SAVE").query_async(&mut redis.connection().await).await.unwrap();
    for n in 2..5 {
        ann.publish("note", json!(n), "n").await;
        assert_eq!(ann.recv().await["seq"], n + 1);
    }
    let epoch = ann.epoch();
    redis.restart().await; // loads the snapshot taken at seq 2
    let (code, _) = ann.recv_until_close().await;
    assert_eq!(code, Some(4009));
    let back = a.resume("old", "ann", 5, &epoch).await;
    assert_eq!(back.welcome["resumed"], false, "seqs 3..=5 are gone: no resume");
    assert_ne!(back.epoch(), epoch, "a new store epoch, so seq 3 of the old one is never taken for the new 3");
    assert!(a.log_text().contains("Redis lost writes"), "{}", a.log_text());
}

/// Cleanup trims a canvas's log by the TTL as it grows (nothing within the TTL goes: resume and the API
/// still see it), while the object ops its state is folded from are kept back to its newest snapshot
/// whatever the TTL: an instance that never saw them gives a joiner the whole state. Once the canvas has
/// been quiet for a TTL, cleanup snapshots it and the ops it covers go too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_trimmed_by_the_ttl_and_object_ops_are_kept_back_to_the_newest_snapshot() {
    const TTL_MS: i64 = 1000;
    let Some(redis) = RedisServer::start(true).await else { return };
    // Without history (kept, the ops go back to its floor instead: tests/history.rs).
    let args = ["--message-ttl", "1s", "--cleanup-interval", "100ms", "--history-retention", "0"];
    let a = Instance::start_on_redis(&redis.url(), &args).await;
    let mut ann = a.connect("trim", "ann").await;
    ann.publish("object-create", json!({"id": "o1"}), "c").await;
    assert_eq!(ann.recv().await["seq"], 2);
    let (mut seq, mut seen) = (2, BTreeMap::new()); // seen: every entry's ts, kept after it is trimmed
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let kept = stamps(&redis, "trim").await;
        let now = redis_now(&redis).await; // after the read: nothing within the TTL of it was trimmed before
        seen.extend(kept.clone());
        let within: Vec<u64> = seen.iter().filter(|(_, ts)| **ts > now - TTL_MS).map(|(s, _)| *s).collect();
        assert!(within.iter().all(|s| kept.contains_key(s)), "an entry within the TTL was trimmed: {seen:?}, {kept:?}");
        if !kept.contains_key(&2) && kept.contains_key(&seq) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "seq 2 never trimmed with younger entries kept: {seen:?}");
        // The pace of a busy canvas (ten appends a TTL), not a wait for anything.
        tokio::time::sleep(Duration::from_millis(100)).await;
        seq += 1;
        ann.publish("note", json!(seq), "n").await;
        assert_eq!(ann.recv().await["seq"], seq);
    }
    assert_eq!(ops(&redis, "trim").await, [2], "the create left the log, not the ops stream");
    let b = Instance::start_on_redis(&redis.url(), &args).await;
    let bob = b.connect("trim", "bob").await;
    assert_eq!(bob.welcome["objects"], json!({"o1": {"id": "o1"}}), "the state outlives the log");
    eventually("the quiet canvas snapshotted and its ops gone", || async { ops(&redis, "trim").await.is_empty() })
        .await;
    let mut conn = redis.connection().await;
    let (snap, key): (u64, String) =
        redis::cmd("HMGET").arg("relay:{trim}:head").arg("snap").arg("snapkey").query_async(&mut conn).await.unwrap();
    assert!(snap >= 2, "a snapshot past the create, at {snap}");
    let blob: String = redis::cmd("GET").arg(key).query_async(&mut conn).await.unwrap();
    assert_eq!(blob, r#"{"o1":{"id":"o1"}}"#);
    let c = Instance::start_on_redis(&redis.url(), &args).await;
    assert_eq!(c.connect("trim", "carl").await.welcome["objects"], json!({"o1": {"id": "o1"}}), "from the snapshot");
}

/// Redis's clock (ms), which stamps entries and trims them.
async fn redis_now(redis: &RedisServer) -> i64 {
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut redis.connection().await).await.unwrap();
    secs * 1000 + micros / 1000
}

/// The seqs a canvas's ops stream holds.
async fn ops(redis: &RedisServer, canvas: &str) -> Vec<u64> {
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(format!("relay:{{{canvas}}}:ops"))
        .arg("-")
        .arg("+")
        .query_async(&mut redis.connection().await)
        .await
        .unwrap();
    entries.ids.iter().map(|entry| entry.get::<u64>("s").unwrap()).collect()
}

/// A canvas's log as stored: seq -> `ts` (Redis's clock when the entry was appended, in ms).
async fn stamps(redis: &RedisServer, canvas: &str) -> BTreeMap<u64, i64> {
    let field = |entry: &redis::streams::StreamId, name: &str| entry.get::<String>(name).unwrap().parse().unwrap();
    redis.log(canvas).await.iter().map(|entry| (field(entry, "s") as u64, field(entry, "ts"))).collect()
}

/// The reply to a batch is lost after Redis applied it (a timeout, a network cut). The batch is sent again
/// until Redis answers, and Redis answers with the first outcome (each canvas's part left a marker): a
/// plain message and an object op alike are acked once and logged once, with no gap after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_reply_was_lost_is_acked_once_and_logged_once() {
    let Some(redis) = RedisServer::start(true).await else { return };
    let proxy = LossyProxy::start(redis.port).await;
    let a = Instance::start_on_redis(&proxy.url(), &[]).await;
    let mut ann = a.connect("lost", "ann").await;
    let mut lost = 0;
    for (kind, data) in [("note", json!("CUT-HERE")), ("object-create", json!({"id": "o1", "m": "CUT-HERE"}))] {
        proxy.lose_reply_to("CUT-HERE");
        ann.publish(kind, data.clone(), "r1").await;
        let answer = loop {
            let frame = ann.recv().await;
            if frame["ref"] == "r1" {
                break frame;
            }
        };
        assert_eq!(answer["type"], "ack", "not `unavailable`: the {kind} was logged ({answer})");
        lost += 1;
        assert_eq!(proxy.wait_replies_lost(lost).await, lost, "the fault happened");
        ann.publish("note", json!("after"), "r2").await;
        let next = ann.recv().await;
        assert_eq!(
            (next["type"].as_str(), next["seq"].as_u64()),
            (Some("ack"), Some(answer["seq"].as_u64().unwrap() + 1)),
            "no second ack, no gap after the {kind}"
        );
        let cut = redis.log("lost").await.iter().filter(|e| e.get::<String>("d") == Some(data.to_string())).count();
        assert_eq!(cut, 1, "the {kind} logged once");
    }
}
