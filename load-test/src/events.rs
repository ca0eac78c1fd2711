//! The `events` scenario: what ephemeral events cost (v1.1). `--clients` connections on one canvas, spread
//! over the targets, each send an ephemeral `reaction` `--rate` times a second for `--duration`, stamped
//! with the send time; every client reads everything. Reports events sent, deliveries against a full
//! fan-out, deliveries per second, end-to-end latency (same instance and cross-instance apart) and events
//! that arrived out of their sender's order. Events may be dropped under pressure, by contract: the report
//! says how many, it does not fail on them.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{histogram, unix_us, Socket};
use crate::report::percentiles;
use crate::{welcome, EventsArgs};

/// How long clients keep reading after the last event is sent.
const AFTER: Duration = Duration::from_secs(2);

/// What one client saw and did.
struct Seen {
    sent: u64,
    received: u64,
    /// Events that came with a lower number than one already seen from their sender.
    out_of_order: u64,
    same_us: Histogram<u64>,
    cross_us: Histogram<u64>,
    failed: Option<String>,
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Value,
}

/// Runs the scenario and prints its report; an error only when a client cannot join.
pub async fn events(args: &EventsArgs) -> anyhow::Result<()> {
    let targets = &args.common.targets;
    anyhow::ensure!(args.clients >= 2, "--clients must be at least 2");
    anyhow::ensure!(args.rate > 0.0, "--rate must be above zero");
    let canvas = format!("{}-events", args.common.prefix);
    let mut sockets = Vec::with_capacity(args.clients);
    for index in 0..args.clients {
        let target = &targets[index % targets.len()];
        let joined = welcome::open(target, &canvas, &format!("e{index}")).await;
        sockets.push(joined.map(|j| j.socket).map_err(|e| anyhow::anyhow!("client {index} could not join: {e:?}"))?);
    }
    // Everyone is in before anyone sends, so a full fan-out is (clients - 1) deliveries per event.
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + args.common.duration;
    let tasks: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(index, socket)| {
            let (clients, targets, rate) = (args.clients, targets.len(), args.rate);
            tokio::spawn(client(socket, index, (clients, targets), rate, (start, end)))
        })
        .collect();
    let mut seen = Vec::with_capacity(tasks.len());
    for task in tasks {
        seen.push(task.await?);
    }
    let report = report(args, &canvas, &seen);
    if args.common.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", human(&report));
    }
    Ok(())
}

/// One client: sends its events on a steady tick from `start` to `end`, and reads until `end` + [`AFTER`].
async fn client(
    socket: Socket,
    index: usize,
    (clients, targets): (usize, usize),
    rate: f64,
    (start, end): (Instant, Instant),
) -> Seen {
    let (mut sink, mut stream) = socket.split();
    let reading = tokio::spawn(async move {
        let mut seen =
            Seen { sent: 0, received: 0, out_of_order: 0, same_us: histogram(), cross_us: histogram(), failed: None };
        let mut last = vec![None::<u64>; clients];
        while let Ok(Some(Ok(message))) = tokio::time::timeout_at(end + AFTER, stream.next()).await {
            let Message::Text(text) = message else { continue };
            let Ok(event) = serde_json::from_str::<Event>(&text) else { continue };
            if event.kind != "reaction" {
                continue;
            }
            let (Some(sender), Some(n), Some(t)) =
                (event.data["s"].as_u64(), event.data["n"].as_u64(), event.data["t"].as_u64())
            else {
                continue;
            };
            seen.received += 1;
            let latency = unix_us().saturating_sub(t).max(1);
            let sender = sender as usize;
            let lane = if sender % targets == index % targets { &mut seen.same_us } else { &mut seen.cross_us };
            let _ = lane.record(latency);
            if let Some(slot) = last.get_mut(sender) {
                if slot.is_some_and(|previous| n <= previous) {
                    seen.out_of_order += 1;
                }
                *slot = Some(n);
            }
        }
        (seen, stream)
    });
    tokio::time::sleep_until(start + Duration::from_secs_f64(index as f64 / clients as f64 / rate)).await;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let (mut sent, mut failed) = (0, None);
    while tick.tick().await < end {
        let frame = json!({"type": "reaction", "ephemeral": true, "data": {"s": index, "n": sent, "t": unix_us()}});
        if let Err(error) = sink.send(Message::text(frame.to_string())).await {
            failed = Some(error.to_string());
            break;
        }
        sent += 1;
    }
    let Ok((mut seen, stream)) = reading.await else {
        return Seen { sent, received: 0, out_of_order: 0, same_us: histogram(), cross_us: histogram(), failed };
    };
    seen.sent = sent;
    seen.failed = failed;
    if let Ok(socket) = stream.reunite(sink) {
        welcome::close(socket).await;
    }
    seen
}

fn report(args: &EventsArgs, canvas: &str, seen: &[Seen]) -> Value {
    let sent: u64 = seen.iter().map(|s| s.sent).sum();
    let received: u64 = seen.iter().map(|s| s.received).sum();
    let (mut same, mut cross) = (histogram(), histogram());
    for s in seen {
        same.add(&s.same_us).expect("same bounds");
        cross.add(&s.cross_us).expect("same bounds");
    }
    let seconds = args.common.duration.as_secs_f64();
    let expected = sent * (args.clients as u64 - 1);
    json!({
        "scenario": "events", "canvas": canvas, "clients": args.clients, "rate_per_client": args.rate,
        "seconds": seconds, "sent": sent, "deliveries": received, "full_fan_out": expected,
        "missed": expected.saturating_sub(received),
        "deliveries_per_second": received as f64 / seconds.max(1e-9),
        "out_of_order": seen.iter().map(|s| s.out_of_order).sum::<u64>(),
        "e2e_same_instance_ms": percentiles(&same),
        "e2e_cross_instance_ms": percentiles(&cross),
        "failed": seen.iter().filter_map(|s| s.failed.clone()).collect::<Vec<_>>(),
    })
}

fn human(report: &Value) -> String {
    let line = |name: &str| {
        let h = &report[name];
        format!("p50 {} ms, p99 {} ms, max {} ms ({} samples)", h["p50"], h["p99"], h["max"], h["count"])
    };
    format!(
        "events: {} clients × {}/s for {} s\n  sent {}, delivered {} of a full fan-out of {} ({} missed), {:.0} deliveries/s, {} out of order\n  end-to-end same instance: {}\n  end-to-end cross-instance: {}",
        report["clients"], report["rate_per_client"], report["seconds"], report["sent"], report["deliveries"],
        report["full_fan_out"], report["missed"], report["deliveries_per_second"].as_f64().unwrap_or(0.0),
        report["out_of_order"], line("e2e_same_instance_ms"), line("e2e_cross_instance_ms"),
    )
}
