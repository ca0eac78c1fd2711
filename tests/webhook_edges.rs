//! Webhooks at their edges, on both buses, against the signature-checking receiver of `helpers::receiver`:
//! a reset is a batch of its own between the epochs; 410 Gone stops delivery and says so; a receiver slow
//! on one canvas times out there (`--webhook-timeout`) and never holds up another; messages that expired
//! before delivery (past `--webhook-retention`) are a gap batch; a lag past `--webhook-lag-warning` is a
//! warning on `/health`; the metrics count what happened.

#[macro_use]
mod helpers;

use std::time::Duration;

use helpers::receiver::{Answer, Receiver};
use helpers::{eventually, Instance, Store};
use serde_json::{json, Value};

const KEY: &str = "webhook-key";

/// Starts an instance delivering to `receiver`, with the API key and `extra` flags.
async fn start(store: &Store, receiver: &Receiver, extra: &[&str]) -> Instance {
    let args = receiver.relay_args(&[&["--api-key", KEY][..], extra].concat());
    store.start(&args.iter().map(String::as_str).collect::<Vec<_>>()).await
}

async fn post(instance: &Instance, canvas: &str, kind: &str, data: Value) -> u64 {
    let path = format!("/api/v1/canvases/{canvas}/messages");
    let (status, body) = instance.api("POST", &path, Some(KEY), json!({"type": kind, "data": data})).await;
    assert_eq!(status, 201, "{body}");
    body["seq"].as_u64().unwrap()
}

async fn health(instance: &Instance) -> Value {
    serde_json::from_str(&instance.get("/health").await.1).unwrap()
}

fn delivered_seqs(receiver: &Receiver, canvas: &str) -> Vec<u64> {
    receiver.delivered(canvas).iter().map(|m| m["seq"].as_u64().unwrap()).collect()
}

/// Messages, a DELETE of the canvas, more messages: the receiver gets the old epoch's batches, then
/// `{"reset":true}` with the new epoch and no messages under `<canvas>:<new epoch>:0-0`, then the new
/// epoch's messages from seq 1.
async fn a_reset_is_a_batch_between_the_epochs(store: Store) {
    let receiver = Receiver::start().await;
    let a = start(&store, &receiver, &[]).await;
    for i in 0..3 {
        post(&a, "r", "comment", json!({"i": i})).await;
    }
    eventually("the first epoch to be delivered", || async { delivered_seqs(&receiver, "r") == [1, 2, 3] }).await;
    let (status, reset) = a.api("DELETE", "/api/v1/canvases/r", Some(KEY), Value::Null).await;
    assert_eq!(status, 200, "{reset}");
    let epoch = reset["epoch"].as_str().unwrap().to_owned();
    post(&a, "r", "comment", json!({"i": "after"})).await;
    post(&a, "r", "comment", json!({"i": "after, again"})).await;
    eventually("the reset and the new epoch to be delivered", || async {
        receiver.accepted_batches("r").last().is_some_and(|d| d.epoch() == epoch && d.seqs().last() == Some(&2))
    })
    .await;
    let batches = receiver.accepted_batches("r");
    let at = batches.iter().position(|d| d.is_reset()).expect("a reset batch");
    assert!(batches[..at].iter().all(|d| d.epoch() != epoch && !d.is_reset()), "{batches:?}");
    let reset_batch = &batches[at];
    assert_eq!((reset_batch.epoch(), reset_batch.messages()), (epoch.as_str(), &[][..]));
    assert_eq!(reset_batch.key.as_deref(), Some(format!("r:{epoch}:0-0").as_str()));
    let after: Vec<u64> = batches[at + 1..].iter().flat_map(|d| d.seqs()).collect();
    assert_eq!(after, [1, 2]);
    assert!(batches[at + 1..].iter().all(|d| d.epoch() == epoch));
    assert_eq!(receiver.violations("r"), Vec::<String>::new());
}

/// A receiver that answers 410 Gone is not asked again: the log has an error, `/health` a warning and
/// `webhook.gone`, and later messages send nothing (clients and the API still work).
async fn gone_stops_delivery_with_an_error(store: Store) {
    let receiver = Receiver::start().await;
    receiver.answer(Answer::Status(410));
    let a = start(&store, &receiver, &[]).await;
    post(&a, "g", "comment", json!({"text": "first"})).await;
    eventually("/health to report the receiver gone", || async {
        let health = health(&a).await;
        health["webhook"]["gone"] == true
            && health["status"] == "warning"
            && health["reasons"].to_string().contains("410")
    })
    .await;
    assert!(a.log_text().contains("ERROR") && a.log_text().contains("410"), "{}", a.log_text());
    let asked = receiver.deliveries().len();
    assert_eq!(asked, 1, "one request, answered 410, and no retry");
    receiver.answer(Answer::Ok);
    post(&a, "g", "comment", json!({"text": "second"})).await;
    post(&a, "other", "comment", json!({"text": "another canvas"})).await;
    // An absence can only be watched for a while: well past the linger and the retry backoff.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.deliveries().len(), asked, "nothing is sent after a 410");
    assert_eq!(health(&a).await["webhook"]["gone"], true);
}

/// `--webhook-timeout 500ms` and a receiver that takes 5 s for canvas `slow`: every attempt there times out
/// and is retried, while `fast` is delivered in full meanwhile; once `slow` is answered at once it catches
/// up. The timeouts are counted by status.
async fn a_slow_canvas_times_out_and_never_holds_up_another(store: Store) {
    let receiver = Receiver::start().await;
    receiver.answer_for("slow", Answer::Slow(Duration::from_secs(5)));
    let a = start(&store, &receiver, &["--webhook-timeout", "500ms"]).await;
    for i in 0..20 {
        post(&a, "slow", "comment", json!({"i": i})).await;
        post(&a, "fast", "comment", json!({"i": i})).await;
    }
    let all: Vec<u64> = (1..=20).collect();
    eventually("fast to be delivered while slow times out", || async { delivered_seqs(&receiver, "fast") == all })
        .await;
    assert_eq!(receiver.violations("fast"), Vec::<String>::new());
    assert!(delivered_seqs(&receiver, "slow").is_empty(), "every slow attempt timed out");
    eventually("timeouts to be counted", || async {
        a.metric(r#"relay_webhook_failures_total{status="timeout"}"#).await >= 1.0
    })
    .await;
    receiver.answer_for("slow", Answer::Ok);
    eventually("slow to catch up", || async { delivered_seqs(&receiver, "slow") == all }).await;
    let first: Vec<u64> = receiver.first_deliveries("slow").iter().flat_map(|d| d.seqs()).collect();
    assert!(first.windows(2).all(|w| w[0] < w[1]), "{first:?}");
    assert!(a.metric("relay_webhook_messages_total").await >= 40.0);
}

/// Messages that expired before delivery: the receiver is down, and the instance that fixed the batch
/// 1-5 (holding it in memory, retrying) is SIGKILLed; while no instance delivers, another one's cleanup
/// drops the rows past the TTL and `--webhook-retention` (3 s, longer than the dead instance's leases
/// last). Restarted, the deliverer finds its recorded
/// range gone: that batch is the gap alone, `"gap":{"after":0,"next":6}` under the key it was first tried
/// with, and seq 6 follows.
async fn messages_expired_before_delivery_are_a_gap_batch(store: Store) {
    let mut receiver = Receiver::start().await;
    receiver.go_down().await;
    let short = ["--message-ttl", "1s", "--cleanup-interval", "100ms", "--heartbeat-interval", "200ms"];
    // A linger far longer than five posts take: the first batch is 1-5 (with the default 50 ms, a loaded
    // machine could fix 1-3 before 4 and 5 are committed).
    let long = ["--webhook-retention", "3s", "--presence-timeout", "2s", "--webhook-linger", "1s"];
    let flags = [&short[..], &long].concat();
    let mut a = start(&store, &receiver, &flags).await;
    for i in 0..5 {
        // Objects, so that the canvas is not idle and cleanup keeps its head while its rows go.
        post(&a, "lost", "object-create", json!({"id": format!("o{i}")})).await;
    }
    eventually("the batch to be fixed", || async {
        a.metric("relay_webhook_failures_total{status=\"connect\"}").await >= 1.0
    })
    .await;
    assert_eq!(store.webhook_position("lost").await.and_then(|(_, _, fixed)| fixed), Some(5), "the batch 1-5");
    a.kill().await;
    let cleaner = store.start(&[&["--api-key", KEY][..], &short].concat()).await;
    eventually("cleanup to drop the undelivered rows", || async { store.logged("lost").await.is_empty() }).await;
    drop(cleaner);
    receiver.come_up().await;
    let a = start(&store, &receiver, &flags).await;
    assert_eq!(post(&a, "lost", "comment", json!({"i": "after"})).await, 6);
    eventually("the gap and seq 6", || async { delivered_seqs(&receiver, "lost") == [6] }).await;
    let batches = receiver.accepted_batches("lost");
    assert_eq!(batches[0].body["gap"], json!({"after": 0, "next": 6}), "{}", batches[0].body);
    assert!(batches[1..].iter().all(|d| d.body.get("gap").is_none()), "{batches:?}");
    assert_eq!(receiver.violations("lost"), Vec::<String>::new());
}

/// `--webhook-lag-warning 5` and a receiver that is down: six undelivered messages make `/health` warn
/// of the lag, `/metrics` carry it; once the receiver is back the warning goes, the lag is 0, and the
/// delivery latency has been recorded.
async fn a_lag_past_the_warning_is_on_health_and_metrics(store: Store) {
    let mut receiver = Receiver::start().await;
    receiver.go_down().await;
    let a = start(&store, &receiver, &["--webhook-lag-warning", "5"]).await;
    for i in 0..6 {
        post(&a, "behind", "comment", json!({"i": i})).await;
    }
    // /metrics first: a scrape alone must see the lag (not only after a /health request).
    eventually("/metrics to carry the lag", || async { a.metric("relay_webhook_lag_messages").await == 6.0 }).await;
    eventually("/health to warn of the lag", || async {
        let health = health(&a).await;
        health["status"] == "warning"
            && health["reasons"].to_string().contains("webhook lag: 6 messages")
            && health["webhook"]["lag_messages"] == 6
            && health["webhook"]["last_failure"].as_str().is_some_and(|f| f.contains("connect"))
    })
    .await;
    receiver.come_up().await;
    eventually("the lag to clear", || async {
        let health = health(&a).await;
        health["status"] == "healthy" && health["webhook"]["lag_messages"] == 0
    })
    .await;
    assert_eq!(delivered_seqs(&receiver, "behind"), (1..=6).collect::<Vec<_>>());
    assert!(a.metric("relay_webhook_delivery_seconds_count").await >= 1.0);
    assert_eq!(a.metric("relay_webhook_lag_messages").await, 0.0);
}

on_both_buses!(
    a_reset_is_a_batch_between_the_epochs,
    gone_stops_delivery_with_an_error,
    a_slow_canvas_times_out_and_never_holds_up_another,
    messages_expired_before_delivery_are_a_gap_batch,
    a_lag_past_the_warning_is_on_health_and_metrics,
);
