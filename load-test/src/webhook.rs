//! The `webhook` scenario: what delivering every logged message to a webhook costs and whether it is whole.
//! The tool is the receiver (`receiver`, on `--receiver`, where the relays' `--webhook-url` points) and the
//! publishers (`publish`: `--rate` messages a second over `--canvases` canvases, alternating targets, for
//! `--duration`, once the instances have split the shards of canvases). After the last ack it waits up to `--drain` for every acked message to be delivered, then
//! reports the lag (commit `ts` to receipt, ms clock; ack to receipt and send to receipt, this process's µs
//! clock), batches per second and their mean size, delivered against acked with the missing ones named,
//! and repeated deliveries.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::ledger::{Canvases, Ledger};
use crate::publish::{self, Plan, Shape};
use crate::receiver::{Receiver, Tally};
use crate::report::percentiles;
use crate::WebhookArgs;

/// How many missing messages the report names.
const NAMED: usize = 10;

/// Runs the scenario and prints its report; an error only when the receiver cannot listen or a publisher
/// cannot join.
pub async fn webhook(args: &WebhookArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.rate > 0 && args.canvases > 0, "--rate and --canvases must be above zero");
    let canvases = Arc::new(Canvases::new(&args.common.prefix, "wh", args.canvases));
    let ledger = Arc::new(Ledger::new(args.canvases, true));
    let receiver = Receiver::start(&args.receiver, &args.secret, canvases.clone(), ledger.clone()).await?;
    let settled = settle(&args.common.targets).await?;
    let sockets = publish::connect(&args.common.targets, &canvases).await?;
    let start = Instant::now() + Duration::from_millis(200);
    let plan = Plan::Paced { rate: f64::from(args.rate), start, end: start + args.common.duration };
    let shape = Shape { payload: args.common.payload, keyed: args.common.idempotency_keys };
    let published = publish::run(sockets, plan, shape, ledger.clone()).await?;
    let drain_started = Instant::now();
    let drained = drain(&receiver, &ledger, args.drain).await;
    let acked = ledger.acked_seqs();
    let outcome = json!({
        "scenario": "webhook", "receiver": args.receiver, "canvases": args.canvases, "rate": args.rate,
        "instances": args.common.targets.len(), "seconds": args.common.duration.as_secs_f64(),
        "leases_settled_seconds": settled.as_secs_f64(),
        "published": {
            "sent": published.sent, "acked": published.acked, "errors": published.errors,
            "ack_ms": percentiles(&published.ack_us), "failed": published.failed,
        },
        "drain_seconds": drain_started.elapsed().as_secs_f64(), "drained": drained,
        "delivery": receiver.with(|tally| delivery(tally, &acked, &canvases)),
        "batches": receiver.with(|tally| batches(tally, start.into_std())),
        "lag": lag(&receiver, &ledger),
    });
    if args.common.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        print!("{}", human(&outcome));
    }
    Ok(())
}

/// The relay's shards of canvases (`consumers::webhook::leases::SHARDS`).
const SHARDS: u64 = 16;
/// The longest wait for the instances to split the shards.
const SETTLE: Duration = Duration::from_secs(60);

/// Waits until the instances behind `targets` hold every shard between them, each its fair share: until
/// then a shard may have no deliverer for a heartbeat or two (instances that just started take them all,
/// then give back as they see each other), which is start-up, not the steady lag this measures.
async fn settle(targets: &[String]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let fair = SHARDS.div_ceil(targets.len() as u64);
    loop {
        let mut held = Vec::new();
        for target in targets {
            held.push(shards(target).await?);
        }
        if held.iter().sum::<u64>() == SHARDS && held.iter().all(|&n| n <= fair) {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(started.elapsed() < SETTLE, "the webhook's shards did not settle: {held:?} of {SHARDS}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `webhook.shards` of a relay's `/health` (an error when it has no webhook).
async fn shards(target: &str) -> anyhow::Result<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(target).await?;
    let request = format!("GET /health HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let health: Value = serde_json::from_str(body)?;
    let shards = health["webhook"]["shards"].as_u64();
    shards.ok_or_else(|| anyhow::anyhow!("{target} has no webhook (start it with --webhook-url)"))
}

/// Waits until every acked message has been delivered, or `longest`; whether all were.
async fn drain(receiver: &Receiver, ledger: &Ledger, longest: Duration) -> bool {
    let until = Instant::now() + longest;
    loop {
        let acked = ledger.acked_seqs();
        let all = receiver.with(|tally| missing(tally, &acked).next().is_none());
        if all {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The (canvas, seq) of every acked message not delivered.
fn missing<'a>(tally: &'a Tally, acked: &'a [Vec<u64>]) -> impl Iterator<Item = (usize, u64)> + 'a {
    acked.iter().enumerate().flat_map(move |(canvas, seqs)| {
        seqs.iter().filter(move |seq| !tally.delivered[canvas].contains(seq)).map(move |&seq| (canvas, seq))
    })
}

/// Delivered against acked: what is missing (the first few named), what came without an ack.
fn delivery(tally: &Tally, acked: &[Vec<u64>], canvases: &Canvases) -> Value {
    let delivered: usize = tally.delivered.iter().map(|seqs| seqs.len()).sum();
    let missing_count = missing(tally, acked).count();
    let named: Vec<String> =
        missing(tally, acked).take(NAMED).map(|(canvas, seq)| format!("{} seq {seq}", canvases.name(canvas))).collect();
    let acked_count: usize = acked.iter().map(Vec::len).sum();
    json!({
        "acked": acked_count, "delivered": delivered, "missing": missing_count, "missing_first": named,
        // A message whose ack the publisher never got (it gave up waiting) may still be delivered.
        "delivered_unacked": (delivered + missing_count).saturating_sub(acked_count),
    })
}

/// Requests and batches: rates, sizes, repeats and what the receiver refused.
fn batches(tally: &Tally, start: std::time::Instant) -> Value {
    // Over the run from the first send to the last batch: sending plus the delivery of its tail.
    let span = tally.last_batch.map_or(0.0, |last| last.saturating_duration_since(start).as_secs_f64());
    json!({
        "requests": tally.requests, "batches": tally.batches,
        "batches_per_second": tally.batches as f64 / span.max(1e-9),
        "messages": tally.messages,
        "mean_size": tally.messages as f64 / (tally.batches as f64).max(1.0),
        "duplicate_keys": tally.duplicate_keys, "redelivered_messages": tally.redelivered,
        "out_of_order": tally.out_of_order, "skipped_seqs": tally.skipped, "key_mismatch": tally.key_mismatch,
        "gaps": tally.gaps, "resets": tally.resets,
        "bad_signature": tally.bad_signature, "bad_body": tally.bad_body, "other_runs": tally.foreign,
    })
}

/// The three lags: commit `ts` (relay wall clock, ms) to receipt, ack to receipt and send to receipt (this
/// process, µs).
fn lag(receiver: &Receiver, ledger: &Ledger) -> Value {
    let pairing = ledger.pairing();
    receiver.with(|tally| {
        json!({
            "commit_to_receipt_ms": percentiles(&tally.commit_lag_us),
            "ack_to_receipt_ms": percentiles(&pairing.ack_to_receipt_us),
            "receipt_before_ack_ms": percentiles(&pairing.receipt_first_us),
            "send_to_receipt_ms": percentiles(&tally.send_lag_us),
        })
    })
}

/// The human summary, from the JSON report (one source for both).
fn human(o: &Value) -> String {
    let (p, d, b, l) = (&o["published"], &o["delivery"], &o["batches"], &o["lag"]);
    let num = |v: &Value| v.as_f64().unwrap_or(0.0);
    let line = |name: &str, h: &Value| {
        format!(
            "  {name:<24} p50 {:>8.3}  p99 {:>8.3}  max {:>8.3} ms  (n={})\n",
            num(&h["p50"]),
            num(&h["p99"]),
            num(&h["max"]),
            h["count"]
        )
    };
    let mut out = format!(
        "webhook: {} msg/s over {} canvases on {} instances for {:.1} s, receiver {} (shards settled in {:.1} s)\n",
        o["rate"],
        o["canvases"],
        o["instances"],
        num(&o["seconds"]),
        o["receiver"].as_str().unwrap_or(""),
        num(&o["leases_settled_seconds"])
    );
    out += &format!(
        "  published: sent {}, acked {}, errors {}; ack p50 {:.3} ms, p99 {:.3} ms\n",
        p["sent"],
        p["acked"],
        p["errors"],
        num(&p["ack_ms"]["p50"]),
        num(&p["ack_ms"]["p99"])
    );
    for failed in p["failed"].as_array().into_iter().flatten() {
        out += &format!("    publisher: {}\n", failed.as_str().unwrap_or(""));
    }
    let drained = if o["drained"] == true { "all in" } else { "gave up" };
    out += &format!(
        "  delivered {} of {} acked: missing {}, delivered without an ack {} (drain {:.2} s, {drained})\n",
        d["delivered"],
        d["acked"],
        d["missing"],
        d["delivered_unacked"],
        num(&o["drain_seconds"])
    );
    for named in d["missing_first"].as_array().into_iter().flatten() {
        out += &format!("    missing: {}\n", named.as_str().unwrap_or(""));
    }
    out += &format!(
        "  batches {} ({:.1}/s), mean size {:.1} messages; duplicate keys {} ({} messages again); out of order {}, skipped seqs {}, key mismatches {}, gaps {}, resets {}\n",
        b["batches"], num(&b["batches_per_second"]), num(&b["mean_size"]), b["duplicate_keys"],
        b["redelivered_messages"], b["out_of_order"], b["skipped_seqs"], b["key_mismatch"], b["gaps"], b["resets"],
    );
    out += &format!(
        "  requests {}: bad signature {}, bad body {}, other runs' canvases {}\n",
        b["requests"], b["bad_signature"], b["bad_body"], b["other_runs"]
    );
    out += &line("lag commit ts->receipt", &l["commit_to_receipt_ms"]);
    out += &line("lag ack->receipt", &l["ack_to_receipt_ms"]);
    if l["receipt_before_ack_ms"]["count"] != 0 {
        out += &line("receipt before ack by", &l["receipt_before_ack_ms"]);
    }
    out += &line("lag send->receipt", &l["send_to_receipt_ms"]);
    out
}
