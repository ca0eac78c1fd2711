//! What only the Redis bus has to show (the protocol scenarios run on both buses in their own files): a
//! Redis restart during traffic loses no acknowledged message and no client sees a gap; a Redis that comes
//! back without its data, or from an older snapshot, gives every canvas a new epoch and every client
//! reloads instead of trusting seqs that will be reused. `publish.lua`'s own guarantees, checked by running
//! it without a relay, are in `redis_scripts.rs`.

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

/// A busy canvas's stream never expires whole, so its front is trimmed as it grows: after each append the log
/// holds exactly the entries within the TTL of that append by Redis's clock (the one `publish.lua` trims
/// by), and the head stays. Notes are appended until the first ones were trimmed with younger ones kept.
#[tokio::test]
async fn entries_past_the_ttl_are_trimmed_from_a_stream_that_keeps_growing() {
    const TTL_MS: i64 = 1000;
    let Some(redis) = RedisServer::start(true).await else { return };
    let a = Instance::start_on_redis(&redis.url(), &["--message-ttl", "1s"]).await;
    let mut ann = a.connect("trim", "ann").await;
    let (mut seq, mut seen) = (1, BTreeMap::new()); // seen: every entry's ts, kept after it is trimmed
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let kept = stamps(&redis, "trim").await;
        seen.extend(kept.clone());
        let appended_at = *seen.get(&seq).unwrap_or_else(|| panic!("seq {seq} was gone as soon as it was appended"));
        let within: Vec<u64> = seen.iter().filter(|(_, ts)| **ts > appended_at - TTL_MS).map(|(s, _)| *s).collect();
        assert_eq!(kept.keys().copied().collect::<Vec<_>>(), within, "after seq {seq}; ts of each seq: {seen:?}");
        if !kept.contains_key(&1) && kept.len() > 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "seq 1 never trimmed with younger entries kept: {seen:?}");
        // The pace of a busy canvas (ten appends a TTL), not a wait for anything.
        tokio::time::sleep(Duration::from_millis(100)).await;
        seq += 1;
        ann.publish("note", json!(seq), "n").await;
        assert_eq!(ann.recv().await["seq"], seq);
    }
    let head: Option<u64> = redis::cmd("HGET")
        .arg("relay:{trim}:head")
        .arg("seq")
        .query_async(&mut redis.connection().await)
        .await
        .unwrap();
    assert_eq!(head, Some(seq), "the head stays");
}

/// A canvas's log as stored: seq -> `ts` (Redis's clock when the entry was appended, in ms).
async fn stamps(redis: &RedisServer, canvas: &str) -> BTreeMap<u64, i64> {
    let field = |entry: &redis::streams::StreamId, name: &str| entry.get::<String>(name).unwrap().parse().unwrap();
    redis.log(canvas).await.iter().map(|entry| (field(entry, "s") as u64, field(entry, "ts"))).collect()
}

/// The reply to a batch is lost after Redis applied it (a timeout, a network cut). The relay used to answer
/// `unavailable` and then ack the same message when its reader saw it, so a client that retried logged it
/// twice. Now the batch is sent again until Redis answers, and Redis answers with the first outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_reply_was_lost_is_acked_once_and_logged_once() {
    let Some(redis) = RedisServer::start(true).await else { return };
    let proxy = LossyProxy::start(redis.port).await;
    let a = Instance::start_on_redis(&proxy.url(), &[]).await;
    let mut ann = a.connect("lost", "ann").await;
    proxy.lose_reply_to("CUT-HERE");
    ann.publish("note", json!("CUT-HERE"), "r1").await;
    let answer = loop {
        let frame = ann.recv().await;
        if frame["ref"] == "r1" {
            break frame;
        }
    };
    assert_eq!(answer["type"], "ack", "not `unavailable`: the message was logged ({answer})");
    assert_eq!(proxy.wait_replies_lost(1).await, 1, "the fault happened");
    ann.publish("note", json!("after"), "r2").await;
    let next = ann.recv().await;
    assert_eq!(
        (next["type"].as_str(), next["seq"].as_u64()),
        (Some("ack"), Some(answer["seq"].as_u64().unwrap() + 1)),
        "no second ack, no gap"
    );
    let cut =
        redis.log("lost").await.iter().filter(|e| e.get::<String>("d").as_deref() == Some("\"CUT-HERE\"")).count();
    assert_eq!(cut, 1, "logged once");
}

/// A Redis written by the first Redis bus (objects as field hashes only, an `ids` set) is converted at start:
/// joiners get the same state, and updates merge into it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_the_first_layout_is_converted_at_start() {
    let Some(redis) = RedisServer::start(false).await else { return };
    let mut conn = redis.connection().await;
    let () = redis::pipe()
        .cmd("SET")
        .arg("relay:epoch")
        .arg("old-store")
        .ignore()
        .cmd("HSET")
        .arg("relay:{v1}:head")
        .arg("seq")
        .arg(3)
        .arg("gen")
        .arg(4)
        .ignore()
        .cmd("SADD")
        .arg("relay:{v1}:ids")
        .arg("o1")
        .arg("o/2")
        .ignore()
        .cmd("HSET")
        .arg("relay:{v1}:o:o1")
        .arg("id")
        .arg("\"o1\"")
        .arg("x")
        .arg("1.5e-300")
        .ignore()
        .cmd("HSET")
        .arg("relay:{v1}:o:o/2")
        .arg("id")
        .arg("\"o/2\"")
        .arg("tags")
        .arg("[]")
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    let a = Instance::start_on_redis(&redis.url(), &["--api-key", "k"]).await;
    let mut ann = a.connect("v1", "ann").await;
    assert_eq!(ann.epoch(), "old-store-4", "the epoch is kept: clients resume across the upgrade");
    let expected = json!({"o1": {"id": "o1", "x": 1.5e-300}, "o/2": {"id": "o/2", "tags": []}});
    assert_eq!(ann.welcome["objects"], expected);
    ann.publish("object-update", json!({"id": "o1", "y": 2}), "u").await;
    assert_eq!(ann.recv().await["type"], "ack");
    let bob = a.connect("v1", "bob").await;
    assert_eq!(bob.welcome["objects"]["o1"], json!({"id": "o1", "x": 1.5e-300, "y": 2}));
    let format: String = redis::cmd("GET").arg("relay:format").query_async(&mut conn).await.unwrap();
    assert_eq!(format, "3");
    // Layout 3's index of canvases holds the canvas from before it; an entry whose head is gone (an idle
    // canvas whose keys expired) is not listed, and leaves the index.
    let () = redis::cmd("ZADD").arg("relay:canvases").arg(0).arg("gone").query_async(&mut conn).await.unwrap();
    let (status, page) = a.api("GET", "/api/v1/canvases", Some("k"), json!(null)).await;
    assert_eq!(status, 200);
    let listed: Vec<&str> =
        page["canvases"].as_array().unwrap().iter().map(|c| c["canvas"].as_str().unwrap()).collect();
    assert_eq!(listed, ["v1"]);
    let score: Option<f64> =
        redis::cmd("ZSCORE").arg("relay:canvases").arg("gone").query_async(&mut conn).await.unwrap();
    assert_eq!(score, None);
}
