//! A thousand canvases with something to deliver and a receiver that hangs, on both buses: the instance
//! keeps at most `--webhook-concurrency` (16) requests in flight and a bounded number of canvas tasks (the
//! others wait their turn, as `/health` shows), so its open files stay bounded (`/proc/PID/fd`, under an
//! open-file limit the unbounded deliverer would exhaust) and new WebSockets are still accepted; once the
//! receiver answers again, every canvas is delivered, each under one key.

#[macro_use]
mod helpers;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use helpers::receiver::{Answer, Delivery, Receiver};
use helpers::{eventually, Instance, Store};
use serde_json::{json, Value};

const KEY: &str = "webhook-key";
const CANVASES: usize = 1000;
/// `--webhook-concurrency`'s default.
const REQUESTS: usize = 16;
/// Live canvas tasks per request slot (`consumers/webhook/turns.rs`).
const TASKS: usize = 4 * REQUESTS;
/// The instance's soft open-file limit: a connection per canvas would not fit under it.
const OPEN_FILES: u32 = 512;
/// Descriptors the instance may open beyond those it had at start, besides its requests: the tests' own
/// HTTP connections to it, its store connections opened under load (the SQLite read pool), a WebSocket.
const SLACK: usize = 64;

fn open_files(instance: &Instance) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", instance.pid())).expect("the instance's /proc/PID/fd").count()
}

/// The most requests the receiver had in flight at once.
fn most_in_flight(deliveries: &[Delivery]) -> usize {
    let at = |t: Instant| deliveries.iter().filter(|d| d.started <= t && d.ended.is_none_or(|e| e > t)).count();
    deliveries.iter().map(|d| at(d.started)).max().unwrap_or(0)
}

async fn health(instance: &Instance) -> Value {
    serde_json::from_str(&instance.get("/health").await.1).unwrap()
}

/// Logs one message on each of `canvases`, eight at a time; checks the instance's open files after every
/// hundred.
async fn post_to_each(instance: &Arc<Instance>, canvases: &[String], bound: usize) {
    for chunk in canvases.chunks(100) {
        let mut posts = tokio::task::JoinSet::new();
        for lane in chunk.chunks(chunk.len().div_ceil(8)) {
            let (instance, lane) = (instance.clone(), lane.to_vec());
            posts.spawn(async move {
                for canvas in lane {
                    let path = format!("/api/v1/canvases/{canvas}/messages");
                    let data = json!({"type": "comment", "data": {"on": canvas}});
                    let (status, body) = instance.api("POST", &path, Some(KEY), data).await;
                    assert_eq!(status, 201, "{canvas}: {body}");
                }
            });
        }
        while let Some(done) = posts.join_next().await {
            done.expect("a poster");
        }
        let open = open_files(instance);
        assert!(open <= bound, "{open} files open, more than {bound}, after posting to {}", chunk[0]);
    }
}

async fn a_hanging_receiver_holds_bounded_connections_and_tasks(store: Store) {
    let mut receiver = Receiver::start().await;
    receiver.answer(Answer::Slow(Duration::from_secs(3600)));
    // Leases and requests that outlast the test's hang: no attempt times out and is retried meanwhile.
    let flags = ["--api-key", KEY, "--webhook-timeout", "60s", "--presence-timeout", "60s"];
    let args = receiver.relay_args(&flags);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let a = Arc::new(store.start_with_open_file_limit(OPEN_FILES, &args).await);
    eventually("the instance to hold every shard", || async { health(&a).await["webhook"]["shards"] == 16 }).await;
    let bound = open_files(&a) + REQUESTS + SLACK;
    let canvases: Vec<String> = (0..CANVASES).map(|i| format!("many-{i}")).collect();
    post_to_each(&a, &canvases, bound).await;

    eventually("every canvas to have a task or wait for one", || async {
        let webhook = &health(&a).await["webhook"];
        let (delivering, waiting) = (webhook["canvases_delivering"].as_u64(), webhook["canvases_waiting"].as_u64());
        delivering.zip(waiting).is_some_and(|(d, w)| d as usize <= TASKS && (d + w) as usize == CANVASES)
    })
    .await;
    eventually("the requests to be in flight", || async { receiver.deliveries().len() >= REQUESTS }).await;
    let mut late = a.connect("late-comer", "u1").await;
    late.publish("comment", json!({"text": "still served"}), "r1").await;
    let ack = loop {
        let frame = late.recv().await;
        if frame["type"] == "ack" {
            break frame;
        }
    };
    assert_eq!(ack["ref"], "r1", "a new WebSocket is served while the receiver hangs");
    let open = open_files(&a);
    assert!(open <= bound, "{open} files open, more than {bound}");
    let hung = receiver.deliveries();
    assert_eq!(most_in_flight(&hung), REQUESTS, "requests in flight at once, across canvases");

    receiver.go_down().await;
    receiver.answer(Answer::Ok);
    receiver.come_up().await;
    eventually("every canvas to be delivered", || async {
        let accepted: BTreeSet<String> =
            receiver.deliveries().into_iter().filter(Delivery::accepted).map(|d| d.canvas).collect();
        canvases.iter().all(|c| accepted.contains(c))
    })
    .await;
    let mut keys: BTreeMap<String, BTreeSet<Option<String>>> = BTreeMap::new();
    for delivery in receiver.deliveries().into_iter().filter(|d| d.canvas.starts_with("many-")) {
        assert_eq!(delivery.seqs(), [1], "{}: {}", delivery.canvas, delivery.body);
        assert!(delivery.signature_ok, "{}", delivery.canvas);
        keys.entry(delivery.canvas).or_default().insert(delivery.key);
    }
    let rekeyed: Vec<_> = keys.iter().filter(|(_, keys)| keys.len() != 1).collect();
    assert!(rekeyed.is_empty(), "canvases sent under more than one key: {rekeyed:?}");
}

on_both_buses!(a_hanging_receiver_holds_bounded_connections_and_tasks);
