//! A webhook lease lost and got back, on both buses: instance A delivers a canvas, is stopped (SIGSTOP) for
//! longer than `--presence-timeout`, instance B takes the canvas's shard over and delivers more, then A comes
//! back and gets the shard back when B gives it up to share. A must go on from B's position, not from the
//! one it last saw: no seq ever reaches the receiver under two idempotency keys, and the position recorded
//! in the store never moves backwards.

#[macro_use]
mod helpers;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use helpers::receiver::{Answer, Receiver};
use helpers::{eventually, Instance, Store};
use serde_json::{json, Value};

const KEY: &str = "webhook-key";
/// Shards of canvases (`consumers/webhook/leases.rs`): fixed, the same in every process of a store.
const SHARDS: u32 = 16;

/// The shard of a canvas, as `leases::shard_of` computes it (FNV-1a of its id, stable across versions).
fn shard_of(canvas: &str) -> u32 {
    canvas.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ b as u32).wrapping_mul(0x0100_0193)) % SHARDS
}

async fn post(instance: &Instance, canvas: &str, i: u32) -> u64 {
    let path = format!("/api/v1/canvases/{canvas}/messages");
    let (status, body) = instance.api("POST", &path, Some(KEY), json!({"type": "comment", "data": {"i": i}})).await;
    assert_eq!(status, 201, "{body}");
    body["seq"].as_u64().unwrap()
}

async fn shards(instance: &Instance) -> Option<u64> {
    let (_, text) = instance.get("/health").await;
    serde_json::from_str::<Value>(&text).ok()?["webhook"]["shards"].as_u64()
}

fn delivered_seqs(receiver: &Receiver, canvas: &str) -> Vec<u64> {
    receiver.delivered(canvas).iter().map(|m| m["seq"].as_u64().unwrap()).collect()
}

/// SIGSTOPs `instance`, on SQLite at a moment it holds no write transaction (a process stopped inside one
/// would stall every other instance of the file, which is not the fault under test).
async fn stop_outside_a_write(instance: &Instance, store: &Store) {
    loop {
        instance.signal("STOP");
        let Some(file) = store.shared_file() else { return };
        let conn = file.open();
        conn.busy_timeout(Duration::from_millis(200)).unwrap();
        if conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK").is_ok() {
            return;
        }
        instance.signal("CONT");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A stored webhook position: (generation, seq, the last seq of the batch in flight).
type Position = (u64, u64, Option<u64>);

/// Records every change of `canvas`'s stored webhook position until `done` is set.
fn watch_position(store: Arc<Store>, canvas: &'static str, done: Arc<AtomicBool>) -> Arc<Mutex<Vec<Position>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while !done.load(Ordering::SeqCst) {
            if let Some(position) = store.webhook_position(canvas).await {
                let mut seen = record.lock().unwrap();
                if seen.last() != Some(&position) {
                    seen.push(position);
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    seen
}

/// The scenario: A alone delivers 1-3 and waits, caught up; A is stopped; B takes every shard and delivers
/// 4-6; A comes back, and B gives back the upper half of the shards (the canvas's among them) to A; 7 is
/// written. A's task for the canvas must deliver 7 alone, after B's position.
async fn a_lease_lost_and_regained_resumes_from_the_stored_position(store: Store) {
    let store = Arc::new(store);
    // A canvas of the shards B keeps giving back (it keeps the lowest half).
    let canvas: &'static str = (0..).map(|i| format!("gap-{i}")).find(|c| shard_of(c) >= SHARDS / 2).unwrap().leak();
    let receiver = Receiver::start().await;
    let flags = ["--api-key", KEY, "--heartbeat-interval", "200ms", "--presence-timeout", "2s"];
    let args = receiver.relay_args(&flags);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let a = store.start(&args).await;
    eventually("A to hold every shard", || async { shards(&a).await == Some(16) }).await;
    for i in 1..=3 {
        post(&a, canvas, i).await;
    }
    eventually("A to deliver 1-3", || async { delivered_seqs(&receiver, canvas) == [1, 2, 3] }).await;
    eventually("A to record 3", || async {
        store.webhook_position(canvas).await.is_some_and(|(_, seq, inflight)| seq == 3 && inflight.is_none())
    })
    .await;
    let done = Arc::new(AtomicBool::new(false));
    let positions = watch_position(store.clone(), canvas, done.clone());

    stop_outside_a_write(&a, &store).await;
    let b = store.start(&args).await;
    eventually("B to take every shard once A's leases ran out", || async { shards(&b).await == Some(16) }).await;
    for i in 4..=6 {
        post(&b, canvas, i).await;
    }
    eventually("B to deliver 4-6", || async { delivered_seqs(&receiver, canvas) == [1, 2, 3, 4, 5, 6] }).await;
    eventually("B to record 6", || async {
        store.webhook_position(canvas).await.is_some_and(|(_, seq, inflight)| seq == 6 && inflight.is_none())
    })
    .await;

    // Slow answers keep any position recorded before a request long enough for the watcher to see it.
    receiver.answer_for(canvas, Answer::Slow(Duration::from_millis(300)));
    a.signal("CONT");
    eventually("A and B to share the shards", || async { shards(&a).await == Some(8) && shards(&b).await == Some(8) })
        .await;
    post(&b, canvas, 7).await;
    eventually("7 to be delivered", || async {
        receiver.accepted_batches(canvas).iter().any(|d| d.seqs().contains(&7))
    })
    .await;
    eventually("7 to be recorded", || async {
        store.webhook_position(canvas).await.is_some_and(|(_, seq, inflight)| seq == 7 && inflight.is_none())
    })
    .await;
    done.store(true, Ordering::SeqCst);

    let positions = positions.lock().unwrap().clone();
    let backwards: Vec<_> = positions.windows(2).filter(|w| (w[1].0, w[1].1) < (w[0].0, w[0].1)).collect();
    assert!(backwards.is_empty(), "the stored position moved backwards: {positions:?}");
    assert_eq!(receiver.violations(canvas), Vec::<String>::new(), "no seq under two keys, no overlap");
    assert_eq!(delivered_seqs(&receiver, canvas), (1..=7).collect::<Vec<_>>());
    drop((a, b));
}

on_both_buses!(a_lease_lost_and_regained_resumes_from_the_stored_position);
