//! The `contention` scenario (issue 28): several instances commit object ops to one canvas at once, the
//! case nginx's hash keeps rare. Each of --clients clients (alternating targets) creates an object of its
//! own, then updates it flat out for --duration, keeping --window ops unacked. Every guarded commit that
//! found the canvas moved by another instance is staged again by the relay and counted in its
//! `relay_commit_conflicts_total`; this reports those (read from each target's /metrics before and
//! after), the ops acked per second, and every error frame by code: an op is never lost to a conflict.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::client::Socket;
use crate::fill::Answer;
use crate::scenario::metric;
use crate::welcome;
use crate::Common;

#[derive(Args, Clone)]
pub struct ContentionArgs {
    #[command(flatten)]
    pub common: Common,
    /// Clients on the canvas, alternating targets, each with an object of its own.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Ops each client keeps unacked.
    #[arg(long, default_value_t = 32)]
    pub window: usize,
}

/// After the last send, this long without a frame means the relay stalled.
const STALL: Duration = Duration::from_secs(30);

/// What one client did.
#[derive(Default)]
struct Sent {
    sent: u64,
    acked: u64,
    /// Error frames by code.
    errors: BTreeMap<String, u64>,
    /// Why it stopped early, if it did.
    failed: Option<String>,
}

/// Runs the scenario and prints its report.
pub async fn contention(args: &ContentionArgs) -> anyhow::Result<()> {
    let targets = &args.common.targets;
    let canvas = format!("{}-contention", args.common.prefix);
    let mut sockets = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let joined = welcome::open(&targets[i % targets.len()], &canvas, &format!("w{i}")).await;
        sockets.push(joined.map_err(|e| anyhow::anyhow!("client {i} could not join: {e}"))?.socket);
    }
    let conflicts_before = conflicts(targets).await?;
    let started = Instant::now();
    let until = started + args.common.duration;
    // Spawned now, all of them (a lazy iterator would start each only after the one before it ended).
    let clients: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, socket)| tokio::spawn(client(socket, i, args.window, until)))
        .collect();
    let mut total = Sent::default();
    let mut per_client = Vec::with_capacity(args.clients);
    for client in clients {
        let sent = client.await?;
        per_client.push(sent.acked);
        total.sent += sent.sent;
        total.acked += sent.acked;
        for (code, n) in sent.errors {
            *total.errors.entry(code).or_default() += n;
        }
        total.failed = total.failed.or(sent.failed);
    }
    let seconds = started.elapsed().as_secs_f64();
    let conflicts_after = conflicts(targets).await?;
    let per_target: Vec<f64> = conflicts_after.iter().zip(&conflicts_before).map(|(a, b)| a - b).collect();
    let conflicts: f64 = per_target.iter().sum();
    let report = json!({
        "scenario": "contention",
        "targets": targets,
        "clients": args.clients,
        "window": args.window,
        "seconds": seconds,
        "sent": total.sent,
        "acked": total.acked,
        "acked_per_second": total.acked as f64 / seconds,
        "acked_per_client": per_client,
        "errors": total.errors,
        "failed": total.failed,
        "conflicts": conflicts,
        "conflicts_per_target": per_target,
        "conflicts_per_1000_acked": if total.acked > 0 { conflicts * 1000.0 / total.acked as f64 } else { 0.0 },
    });
    match args.common.json {
        true => println!("{}", serde_json::to_string_pretty(&report)?),
        false => println!(
            "contention: {} clients on {} targets, one canvas, {:.1} s\n  acked {} of {} ops ({:.0}/s), errors {:?}{}\n  conflicts {} ({:.1} per 1,000 acked ops; per target {:?})",
            args.clients,
            targets.len(),
            seconds,
            total.acked,
            total.sent,
            total.acked as f64 / seconds,
            report["errors"],
            total.failed.as_deref().map(|f| format!(", stopped: {f}")).unwrap_or_default(),
            conflicts,
            report["conflicts_per_1000_acked"].as_f64().unwrap_or(0.0),
            per_target,
        ),
    }
    Ok(())
}

/// `relay_commit_conflicts_total` of each target.
async fn conflicts(targets: &[String]) -> anyhow::Result<Vec<f64>> {
    let mut counts = Vec::with_capacity(targets.len());
    for target in targets {
        counts.push(metric(target, "relay_commit_conflicts_total").await?);
    }
    Ok(counts)
}

/// Creates object `c-<i>`, then updates it until `until` with `window` ops unacked, and waits for every answer.
async fn client(mut socket: Socket, i: usize, window: usize, until: Instant) -> Sent {
    let mut sent = Sent::default();
    let mut in_flight = 0usize;
    let mut n = 0u64;
    loop {
        let sending = Instant::now() < until;
        while sending && in_flight < window.max(1) {
            let frame = match n {
                0 => json!({"type": "object-create", "ref": "0", "data": {"id": format!("c-{i}"), "n": 0}}),
                _ => json!({"type": "object-update", "ref": n.to_string(), "data": {"id": format!("c-{i}"), "n": n}}),
            };
            if let Err(error) = socket.feed(Message::text(frame.to_string())).await {
                sent.failed = Some(format!("client {i}: sending failed: {error}"));
                return sent;
            }
            n += 1;
            sent.sent += 1;
            in_flight += 1;
            if n == 1 {
                break; // the create is answered before the first update goes
            }
        }
        if let Err(error) = socket.flush().await {
            sent.failed = Some(format!("client {i}: sending failed: {error}"));
            return sent;
        }
        if in_flight == 0 && !sending {
            let _ = socket.close(None).await;
            return sent;
        }
        let text = match tokio::time::timeout(STALL, socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => text,
            Ok(Some(Ok(_))) => continue,
            other => {
                let why = match other {
                    Err(_) => format!("no answer for {} s", STALL.as_secs()),
                    Ok(Some(Err(error))) => error.to_string(),
                    _ => "connection ended".into(),
                };
                sent.failed = Some(format!("client {i}: {why} with {in_flight} ops unanswered"));
                return sent;
            }
        };
        let Ok(answer) = serde_json::from_str::<Answer>(&text) else { continue };
        if answer.reference.is_none() {
            continue; // others' ops and presence
        }
        match answer.kind.as_str() {
            "ack" => sent.acked += 1,
            "error" => *sent.errors.entry(answer.code.unwrap_or_default()).or_default() += 1,
            _ => continue,
        }
        in_flight -= 1;
    }
}
