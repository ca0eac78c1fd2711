//! Webhooks through faults, against a real HTTP receiver that checks every signature (`helpers::receiver`),
//! on both buses: a receiver outage longer than the TTL is no gap; and a receiver that answers 500, then
//! disappears, then comes back slow, while one of two instances is SIGKILLed mid-delivery and restarted
//! and three canvases are written from both throughout, still ends with every acked message delivered,
//! first deliveries in seq order, never two requests for a canvas at once, every repeat under the same
//! key, and no filtered type. Resets, 410, a slow canvas and gaps are in `webhook_edges.rs`.

#[macro_use]
mod helpers;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use helpers::receiver::{Answer, Receiver};
use helpers::{eventually, try_http_with, Store};
use serde_json::{json, Value};

const KEY: &str = "webhook-key";

/// Every message `writer` logged: canvas -> seq -> type.
type Acked = Arc<Mutex<BTreeMap<String, BTreeMap<u64, String>>>>;

/// Logs one message through the API with an `Idempotency-Key`, on the first of `instances` that answers,
/// trying the next (and again, until one does) when one is down or restarting: the key makes a retry of a
/// commit whose answer was lost come back with the same seq. Returns the seq.
async fn post_until_acked(instances: &[SocketAddr], canvas: &str, kind: &str, data: &Value, key: &str) -> u64 {
    let path = format!("/api/v1/canvases/{canvas}/messages");
    let body = json!({"type": kind, "data": data}).to_string();
    let auth = format!("Bearer {KEY}");
    let headers = [("Authorization", auth.as_str()), ("Idempotency-Key", key)];
    for attempt in 0.. {
        let addr = instances[attempt % instances.len()];
        if let Some((status, text)) = try_http_with(addr, "POST", &path, &headers, &body).await {
            if status == 200 || status == 201 {
                let answer: Value = serde_json::from_str(&text).expect("a JSON answer");
                return answer["seq"].as_u64().expect("the answer has the seq");
            }
            assert!(status >= 500, "{canvas} {key}: {status} {text}");
        }
        assert!(attempt < 400, "{canvas} {key}: no instance took the message");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    unreachable!()
}

/// What a receiver that remembers keys ended up with for `canvas`: the seqs of its messages, in order.
fn delivered_seqs(receiver: &Receiver, canvas: &str) -> Vec<u64> {
    receiver.delivered(canvas).iter().map(|m| m["seq"].as_u64().unwrap()).collect()
}

/// The receiver is down from the start, for longer than `--message-ttl 1s`: the relay keeps every message
/// it has not delivered (clients stop seeing them after the TTL, as before; `/health` warns that they are
/// kept past it), and once the receiver is back it gets all of them, in order, with no gap. Delivered
/// rows then go at the next cleanup.
async fn an_outage_longer_than_the_ttl_is_no_gap(store: Store) {
    let mut receiver = Receiver::start().await;
    receiver.go_down().await;
    let args = receiver.relay_args(&["--api-key", KEY, "--message-ttl", "1s", "--cleanup-interval", "100ms"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let a = store.start(&args).await;
    let canvases = ["long-1", "long-2"];
    let mut written: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for i in 0..20 {
        let canvas = canvases[i % 2];
        let data = json!({"id": format!("o{i}"), "kind": "rect"});
        let seq = post_until_acked(&[a.addr], canvas, "object-create", &data, &format!("k{i}")).await;
        written.entry(canvas).or_default().push(seq);
    }
    // Polled by hand rather than with `eventually`, so that a timeout shows the last /health it saw.
    let deadline = tokio::time::Instant::now() + helpers::WAIT * 2;
    loop {
        let (_, text) = a.get("/health").await;
        let health: Value = serde_json::from_str(&text).unwrap();
        let reasons = health["reasons"].to_string();
        let warned = health["status"] == "warning"
            && reasons.contains("kept past the TTL")
            && health["webhook"]["oldest_undelivered_age_ms"].as_i64().is_some_and(|age| age > 1000)
            && health["webhook"]["lag_messages"] == 20;
        if warned {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for /health to warn of undelivered messages kept past the TTL; last: {health}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for canvas in canvases {
        let path = format!("/api/v1/canvases/{canvas}/messages");
        eventually("clients to stop seeing them after the TTL", || async {
            let (status, log) = a.api("GET", &path, Some(KEY), Value::Null).await;
            status == 200 && log["messages"] == json!([])
        })
        .await;
        assert_eq!(store.logged(canvas).await.len(), 10, "{canvas}: cleanup kept the undelivered rows");
    }

    receiver.come_up().await;
    for canvas in canvases {
        let want = written[canvas].clone();
        eventually("every message to reach the receiver", || async { delivered_seqs(&receiver, canvas) == want }).await;
        assert!(receiver.of(canvas).iter().all(|d| d.body.get("gap").is_none()), "{canvas}: no gap");
        assert_eq!(receiver.violations(canvas), Vec::<String>::new());
        let objects: Vec<Value> = receiver.delivered(canvas).iter().map(|m| m["data"].clone()).collect();
        assert!(objects.iter().all(|o| o["kind"] == "rect" && o["id"].is_string()), "{objects:?}");
    }
    for canvas in canvases {
        eventually("cleanup to drop the delivered rows", || async { store.logged(canvas).await.is_empty() }).await;
    }
}

/// The whole gauntlet, on two instances with `--webhook-types 'object-*,comment'`: three canvases written
/// from both instances throughout (object ops, comments and a filtered `note`), the receiver answering
/// 500, then gone until an attempt is refused, then back but slow; instance A SIGKILLed while a request is
/// in flight and restarted on its port. At the end every acked message of a delivered type reached the
/// receiver once, each 500 was followed by the same batch again, and the contract held for every request.
async fn deliveries_survive_500s_an_outage_and_a_sigkill(store: Store) {
    let mut receiver = Receiver::start().await;
    receiver.answer(Answer::Status(500));
    let common = ["--api-key", KEY, "--webhook-types", "object-*,comment", "--heartbeat-interval", "200ms"];
    let args = receiver.relay_args(&[&common[..], &["--presence-timeout", "2s", "--webhook-linger", "20ms"]].concat());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut a = store.start(&args).await;
    let b = store.start(&args).await;
    let instances = [a.addr, b.addr];
    let acked: Acked = Arc::default();

    let writing = tokio::spawn({
        let acked = acked.clone();
        async move {
            let kinds = ["object-create", "comment", "note", "object-update"];
            for i in 0..240usize {
                let canvas = format!("board-{}", i % 3);
                let kind = kinds[(i / 3) % kinds.len()];
                // Each canvas's writes run create, comment, note, update (of the object made 9 writes ago).
                let data = match kind {
                    "object-update" => json!({"id": format!("o{}", i - 9), "x": i}),
                    "object-create" => json!({"id": format!("o{i}"), "kind": "rect"}),
                    _ => json!({"text": format!("message {i}")}),
                };
                // Alternate instances; `post_until_acked` moves on to the other when one is down.
                let order = if i % 2 == 0 { instances } else { [instances[1], instances[0]] };
                let seq = post_until_acked(&order, &canvas, kind, &data, &format!("w{i}")).await;
                let previous = acked.lock().unwrap().entry(canvas).or_default().insert(seq, kind.to_owned());
                assert!(previous.is_none(), "two messages acked with one seq");
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    });

    eventually("500s to be answered", || async {
        receiver.deliveries().iter().filter(|d| d.status == Some(500)).count() >= 3
    })
    .await;
    receiver.go_down().await;
    // Down until the relay has met the outage: an attempt refused, on whichever instance delivers.
    let refused = r#"relay_webhook_failures_total{status="connect"}"#;
    eventually("an attempt refused while the receiver is down", || async {
        a.metric(refused).await + b.metric(refused).await >= 1.0
    })
    .await;
    receiver.answer(Answer::Slow(Duration::from_millis(300)));
    receiver.come_up().await;
    eventually("a request in flight", || async { receiver.deliveries().iter().any(|d| d.ended.is_none()) }).await;
    a.kill().await;
    // Not a wait for anything: A stays down a moment, so that writes fail over to B meanwhile.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let listen = a.addr.to_string();
    let restart_args: Vec<&str> = args.iter().copied().chain(["--listen", listen.as_str()]).collect();
    a = store.start(&restart_args).await;
    writing.await.expect("the writer finished");
    receiver.answer(Answer::Ok);

    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), 3);
    for (canvas, messages) in &acked {
        assert_eq!(store.head(canvas).await, messages.len() as u64, "{canvas}: the log holds each write once");
        let want: Vec<u64> = messages.iter().filter(|(_, kind)| kind.as_str() != "note").map(|(seq, _)| *seq).collect();
        eventually("every acked message of a delivered type to reach the receiver", || async {
            delivered_seqs(&receiver, canvas) == want
        })
        .await;
        let first: Vec<u64> = receiver.first_deliveries(canvas).iter().flat_map(|d| d.seqs()).collect();
        assert!(first.windows(2).all(|w| w[0] < w[1]), "{canvas}: first deliveries out of seq order: {first:?}");
        assert_eq!(receiver.violations(canvas), Vec::<String>::new(), "{canvas}");
        for message in receiver.delivered(canvas) {
            assert_eq!(message["type"], messages[&message["seq"].as_u64().unwrap()].as_str(), "{message}");
        }
    }
    let all = receiver.deliveries();
    assert!(all.iter().flat_map(|d| d.messages().to_vec()).all(|m| m["type"] != "note"), "a filtered type arrived");
    // What the relay did with each 500: the next request for that canvas is the same batch again, under the
    // same key (neither skipped, nor cut anew).
    let mut retried = 0;
    for canvas in acked.keys() {
        let requests = receiver.of(canvas);
        for pair in requests.windows(2).filter(|pair| pair[0].status == Some(500)) {
            let (failed, next) = (&pair[0], &pair[1]);
            assert_eq!((&next.key, next.seqs()), (&failed.key, failed.seqs()), "{canvas}: after a 500, another batch");
            retried += 1;
        }
        assert_ne!(requests.last().and_then(|d| d.status), Some(500), "{canvas}: a 500 never retried");
    }
    assert!(retried >= 3, "the 500s answered before the outage were retried: {retried}");
    drop((a, b));
}

/// Rebalancing under load: A delivers every shard to a receiver that takes a second per request (so requests
/// are always in flight) while eight canvases are written; B starts, A gives back half its shards, B
/// takes them. A shard is released only after its request in flight has ended, so no canvas ever has two
/// requests at once, and every message arrives; both instances end up delivering.
async fn shards_move_to_a_new_instance_without_overlap(store: Store) {
    let receiver = Receiver::start().await;
    receiver.answer(Answer::Slow(Duration::from_secs(1)));
    let args = receiver.relay_args(&["--api-key", KEY, "--heartbeat-interval", "200ms", "--presence-timeout", "2s"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let a = store.start(&args).await;
    let canvases: Vec<String> = (0..8).map(|i| format!("move-{i}")).collect();
    let mut written: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut b = None;
    for i in 0..160 {
        if i == 40 {
            b = Some(store.start(&args).await);
        }
        let canvas = &canvases[i % canvases.len()];
        let seq = post_until_acked(&[a.addr], canvas, "comment", &json!({"i": i}), &format!("m{i}")).await;
        written.entry(canvas.clone()).or_default().push(seq);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let b = b.unwrap();
    for (canvas, want) in &written {
        eventually("every message to arrive", || async { delivered_seqs(&receiver, canvas) == *want }).await;
        assert_eq!(receiver.violations(canvas), Vec::<String>::new(), "{canvas}");
    }
    for instance in [&a, &b] {
        eventually("each instance to hold half the shards", || async {
            let (_, text) = instance.get("/health").await;
            serde_json::from_str::<Value>(&text).unwrap()["webhook"]["shards"].as_u64() == Some(8)
        })
        .await;
    }
}

on_both_buses!(
    an_outage_longer_than_the_ttl_is_no_gap,
    deliveries_survive_500s_an_outage_and_a_sigkill,
    shards_move_to_a_new_instance_without_overlap,
);
