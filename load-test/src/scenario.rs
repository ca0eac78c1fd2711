//! The scenarios: who connects where, at what pace, and how the results add up.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::client::{self, Pace, Spec, Tally};
use crate::report::Report;
use crate::Common;

/// How long after sending stops clients may take to receive the rest.
const DRAIN: Duration = Duration::from_secs(10);

pub async fn latency(common: &Common, rate: u32, clients: usize, canvases: usize) -> anyhow::Result<Report> {
    anyhow::ensure!(rate > 0 && clients > 0 && canvases > 0, "rate, clients and canvases must be above zero");
    let period = Duration::from_secs_f64(clients as f64 / rate as f64);
    let specs = (0..clients)
        .map(|i| Spec {
            target: common.targets[i % common.targets.len()].clone(),
            instance: i % common.targets.len(),
            // Consecutive clients alternate targets, so each canvas has clients on every instance.
            canvas: format!("{}-lat-{}", common.prefix, (i / common.targets.len()) % canvases),
            user: format!("u{i}"),
            pace: Pace::Every(period),
            payload: common.payload,
        })
        .collect();
    let title = format!("latency: {rate} msg/s, {clients} clients on {canvases} canvases over {} instances", common.targets.len());
    run(title, common.duration, specs).await
}

pub async fn throughput(common: &Common, senders: usize, rate_per_sender: u32, window: usize) -> anyhow::Result<Report> {
    anyhow::ensure!(senders > 0, "senders must be above zero");
    let pace = if window == 0 {
        anyhow::ensure!(rate_per_sender > 0, "rate-per-sender must be above zero");
        Pace::Every(Duration::from_secs_f64(1.0 / rate_per_sender as f64))
    } else {
        Pace::Window(window)
    };
    let specs = (0..senders)
        .map(|i| Spec {
            target: common.targets[i % common.targets.len()].clone(),
            instance: i % common.targets.len(),
            canvas: format!("{}-tp-{i}", common.prefix),
            user: format!("s{i}"),
            pace,
            payload: common.payload,
        })
        .collect();
    let mode = if window == 0 { format!("{rate_per_sender} msg/s each") } else { format!("flat out, window {window}") };
    let title = format!("throughput: {senders} senders ({mode}) over {} instances", common.targets.len());
    run(title, common.duration, specs).await
}

/// Connects everyone first (so nobody misses the start), then runs all clients to the end.
async fn run(title: String, duration: Duration, specs: Vec<Spec>) -> anyhow::Result<Report> {
    let mut connected = Vec::with_capacity(specs.len());
    for spec in specs {
        let (ws, seq) = client::connect(&spec).await?;
        connected.push((spec, ws, seq));
    }
    let started = Instant::now();
    let stop_sending = started + duration;
    let drain_until = stop_sending + DRAIN;
    let tasks: Vec<_> = connected
        .into_iter()
        .map(|(spec, ws, seq)| {
            let canvas = spec.canvas.clone();
            (canvas, tokio::spawn(client::run(spec, ws, seq, stop_sending, drain_until)))
        })
        .collect();
    let mut tallies: Vec<(String, Tally)> = Vec::new();
    for (canvas, task) in tasks {
        tallies.push((canvas, task.await??));
    }
    let elapsed = started.elapsed().min(duration);
    // A client that ends below the highest seq seen on its canvas lost the rest.
    let mut head: HashMap<&str, u64> = HashMap::new();
    for (canvas, tally) in &tallies {
        let seq = head.entry(canvas.as_str()).or_default();
        *seq = (*seq).max(tally.last_seq);
    }
    let lost = tallies.iter().map(|(canvas, t)| head[canvas.as_str()] - t.last_seq).sum();
    Ok(Report::new(title, elapsed, tallies.into_iter().map(|(_, t)| t).collect(), lost))
}

/// Opens `count` idle sockets, waits for the relay to settle, and reports its RSS growth per socket.
pub async fn connections(args: &crate::ConnectionsArgs) -> anyhow::Result<()> {
    let before = rss_kib(args.pid)?;
    let mut sockets = Vec::with_capacity(args.count);
    for i in 0..args.count {
        let spec = Spec {
            target: args.target.clone(),
            instance: 0,
            canvas: format!("idle-{}", i % args.canvases.max(1)),
            user: format!("u{i}"),
            pace: Pace::Every(Duration::from_secs(3600)),
            payload: 0,
        };
        let (ws, _) = client::connect(&spec).await.map_err(|e| anyhow::anyhow!("socket {i}: {e} (raise ulimit -n?)"))?;
        sockets.push(ws);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(args.pid)?;
    let per_socket = (after.saturating_sub(before)) as f64 / args.count as f64;
    let report = serde_json::json!({
        "scenario": "connections", "sockets": args.count, "canvases": args.canvases,
        "rss_before_kib": before, "rss_after_kib": after, "kib_per_socket": per_socket,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "connections: {} idle sockets on {} canvases\n  relay RSS {} KiB -> {} KiB: {:.1} KiB per socket",
            args.count, args.canvases, before, after, per_socket
        );
    }
    drop(sockets);
    Ok(())
}

/// Resident memory of a process, from /proc/PID/status.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))?;
    Ok(line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0))
}
