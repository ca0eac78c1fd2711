//! The scenarios: who connects where, at what pace, and how the results add up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use crate::client::{self, Pace, Spec, Stop, Tally};
use crate::report::Report;
use crate::rss::rss_kib;
use crate::Common;

/// How long after sending stops clients may take to receive the rest.
const DRAIN: Duration = Duration::from_secs(10);

/// A client spec on target `i % targets` (so consecutive clients alternate instances).
fn spec(common: &Common, i: usize, canvas: String, user: String, pace: Pace, progress: &Arc<AtomicU64>) -> Spec {
    Spec {
        target: common.targets[i % common.targets.len()].clone(),
        instance: i % common.targets.len(),
        canvas,
        user,
        pace,
        payload: common.payload,
        keyed: common.idempotency_keys,
        progress: progress.clone(),
    }
}

pub async fn latency(common: &Common, rate: u32, clients: usize, canvases: usize) -> anyhow::Result<Report> {
    anyhow::ensure!(rate > 0 && clients > 0 && canvases > 0, "rate, clients and canvases must be above zero");
    let period = Duration::from_secs_f64(clients as f64 / rate as f64);
    let progress = Arc::default();
    let specs = (0..clients)
        .map(|i| {
            // Consecutive clients alternate targets, so each canvas has clients on every instance.
            let canvas = format!("{}-lat-{}", common.prefix, (i / common.targets.len()) % canvases);
            spec(common, i, canvas, format!("u{i}"), Pace::Every(period), &progress)
        })
        .collect();
    let title = format!(
        "latency: {rate} msg/s, {clients} clients on {canvases} canvases over {} instances",
        common.targets.len()
    );
    run(title, common.duration, specs, progress).await
}

pub async fn throughput(
    common: &Common,
    senders: usize,
    rate_per_sender: u32,
    window: usize,
) -> anyhow::Result<Report> {
    anyhow::ensure!(senders > 0, "senders must be above zero");
    let pace = if window == 0 {
        anyhow::ensure!(rate_per_sender > 0, "rate-per-sender must be above zero");
        Pace::Every(Duration::from_secs_f64(1.0 / rate_per_sender as f64))
    } else {
        Pace::Window(window)
    };
    let progress = Arc::default();
    let specs = (0..senders)
        .map(|i| spec(common, i, format!("{}-tp-{i}", common.prefix), format!("s{i}"), pace, &progress))
        .collect();
    let mode = if window == 0 { format!("{rate_per_sender} msg/s each") } else { format!("flat out, window {window}") };
    let title = format!("throughput: {senders} senders ({mode}) over {} instances", common.targets.len());
    run(title, common.duration, specs, progress).await
}

/// One canvas, `receivers` listening clients spread over the targets, `senders` sending flat out with
/// `window` messages in flight each: how many deliveries a second the relays sustain.
pub async fn fanout(common: &Common, receivers: usize, senders: usize, window: usize) -> anyhow::Result<Report> {
    anyhow::ensure!(receivers > 0 && senders > 0 && window > 0, "receivers, senders and window must be above zero");
    let canvas = format!("{}-fan", common.prefix);
    let progress = Arc::default();
    let specs = (0..senders + receivers)
        .map(|i| {
            let (user, pace) =
                if i < senders { (format!("s{i}"), Pace::Window(window)) } else { (format!("r{i}"), Pace::Listen) };
            spec(common, i, canvas.clone(), user, pace, &progress)
        })
        .collect();
    let title = format!(
        "fanout: {senders} senders (window {window}) to {receivers} receivers on one canvas over {} instances",
        common.targets.len()
    );
    run(title, common.duration, specs, progress).await
}

/// Connects everyone first (so nobody misses the start), then runs all clients to the end.
async fn run(title: String, duration: Duration, specs: Vec<Spec>, progress: Arc<AtomicU64>) -> anyhow::Result<Report> {
    let connected = connect_all(specs).await?;
    let started = Instant::now();
    let stop_sending = started + duration;
    let bar = progress_bar(duration, progress);
    let tasks = spawn_all(connected, Stop::at(stop_sending, stop_sending + DRAIN));
    let tallies = collect(tasks).await?;
    bar.abort();
    Ok(add_up(title, started.elapsed().min(duration), tallies))
}

/// Latency load on its own canvas that runs until `finish`: what the traffic around another measurement
/// (`join`) sees meanwhile.
pub struct Background {
    /// The report's title.
    title: String,
    /// When sending began: the report's rate is over the time until `finish`.
    started: Instant,
    /// Sets the clients' stop times.
    stop: tokio::sync::watch::Sender<(Instant, Instant)>,
    /// The running clients, by canvas.
    tasks: Vec<(String, ClientTask)>,
}

/// The latency scenario's load (`rate` msg/s in all from `clients` clients alternating over the targets) on
/// one canvas, started now and running until `Background::finish`.
pub async fn background(common: &Common, rate: u32, clients: usize) -> anyhow::Result<Background> {
    anyhow::ensure!(rate > 0 && clients > 0, "background rate and clients must be above zero");
    let period = Duration::from_secs_f64(clients as f64 / rate as f64);
    let progress = Arc::default();
    let canvas = format!("{}-bg", common.prefix);
    let specs = (0..clients)
        .map(|i| spec(common, i, canvas.clone(), format!("bg{i}"), Pace::Every(period), &progress))
        .collect();
    let connected = connect_all(specs).await?;
    let (stop, until) = Stop::later();
    let title = format!(
        "background latency: {rate} msg/s, {clients} clients on one canvas over {} instances",
        common.targets.len()
    );
    Ok(Background { title, started: Instant::now(), stop, tasks: spawn_all(connected, until) })
}

impl Background {
    /// Stops sending now, lets the clients drain, and adds up what they saw.
    pub async fn finish(self) -> anyhow::Result<Report> {
        let now = Instant::now();
        // Every client holds a receiver, so the send cannot fail while any task runs.
        let _ = self.stop.send((now, now + DRAIN));
        let tallies = collect(self.tasks).await?;
        Ok(add_up(self.title, now.duration_since(self.started), tallies))
    }
}

type ClientTask = tokio::task::JoinHandle<anyhow::Result<(Tally, client::Socket)>>;

async fn connect_all(specs: Vec<Spec>) -> anyhow::Result<Vec<(Spec, client::Socket, u64)>> {
    let mut connected = Vec::with_capacity(specs.len());
    for spec in specs {
        let (ws, seq) = client::connect(&spec).await?;
        connected.push((spec, ws, seq));
    }
    Ok(connected)
}

fn spawn_all(connected: Vec<(Spec, client::Socket, u64)>, stop: Stop) -> Vec<(String, ClientTask)> {
    connected
        .into_iter()
        .map(|(spec, ws, seq)| {
            let canvas = spec.canvas.clone();
            (canvas, tokio::spawn(client::run(spec, ws, seq, stop.clone())))
        })
        .collect()
}

/// Waits for every client; their sockets close only once all are done (see `client::run`).
async fn collect(tasks: Vec<(String, ClientTask)>) -> anyhow::Result<Vec<(String, Tally)>> {
    let mut tallies = Vec::with_capacity(tasks.len());
    let mut sockets = Vec::with_capacity(tasks.len());
    for (canvas, task) in tasks {
        let (tally, socket) = task.await??;
        tallies.push((canvas, tally));
        sockets.push(socket);
    }
    Ok(tallies)
}

fn add_up(title: String, elapsed: Duration, tallies: Vec<(String, Tally)>) -> Report {
    // A client that ends below the highest seq seen on its canvas lost the rest.
    let mut head: HashMap<&str, u64> = HashMap::new();
    for (canvas, tally) in &tallies {
        let seq = head.entry(canvas.as_str()).or_default();
        *seq = (*seq).max(tally.last_seq);
    }
    let lost = tallies.iter().map(|(canvas, t)| head[canvas.as_str()] - t.last_seq).sum();
    Report::new(title, elapsed, tallies.into_iter().map(|(_, t)| t).collect(), lost)
}

/// A bar over the run's duration with the message count and rate, on stderr when it is a terminal
/// (indicatif draws nothing otherwise). Runs until the returned task is aborted.
fn progress_bar(duration: Duration, progress: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    let bar = ProgressBar::new(duration.as_secs().max(1));
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} s  {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    tokio::spawn(async move {
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut last = (started, 0);
        loop {
            tick.tick().await;
            let now = Instant::now();
            let count = progress.load(Ordering::Relaxed);
            let rate = (count - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-3);
            last = (now, count);
            bar.set_position(now.duration_since(started).as_secs().min(duration.as_secs()));
            bar.set_message(format!("{count} frames, {rate:.0}/s"));
            if now.duration_since(started) > duration + DRAIN {
                bar.finish_and_clear();
                return;
            }
        }
    })
}

/// Opens `count` idle sockets, waits for the relay to settle, and reports its RSS growth per socket.
pub async fn connections(args: &crate::ConnectionsArgs) -> anyhow::Result<()> {
    let before = rss_kib(args.pid)?;
    let target = std::slice::from_ref(&args.target);
    let sockets = open_idle(target, args.count, args.canvases, "idle", args.read).await?;
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
    tokio::time::sleep(args.hold).await;
    drop(sockets);
    Ok(())
}

/// `canvases` canvases with one silent client each, spread over the targets, for `duration`: the relays'
/// CPU (from /proc of each pid) and watcher polls per second (from their /metrics).
pub async fn idle(args: &crate::IdleArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.pids.len() == args.targets.len(), "give one --pids entry per --targets entry, in order");
    let sockets =
        open_idle(&args.targets, args.canvases, args.canvases, &format!("{}-idle", args.prefix), false).await?;
    // Let the watchers back off (--backoff-after defaults to 2 s) before measuring.
    tokio::time::sleep(args.settle).await;
    let before: Vec<(u64, f64)> = read_all(args).await?;
    let started = Instant::now();
    let bar = progress_bar(args.duration, Arc::default());
    tokio::time::sleep(args.duration).await;
    bar.abort();
    let after: Vec<(u64, f64)> = read_all(args).await?;
    let seconds = started.elapsed().as_secs_f64();
    let instances: Vec<serde_json::Value> = args
        .targets
        .iter()
        .zip(before.iter().zip(&after))
        .map(|(target, ((cpu0, polls0), (cpu1, polls1)))| {
            let cpu_percent = (cpu1 - cpu0) as f64 / CLOCK_TICKS_PER_S / seconds * 100.0;
            serde_json::json!({"target": target, "cpu_percent_of_a_core": cpu_percent, "polls_per_s": (polls1 - polls0) / seconds})
        })
        .collect();
    let report = serde_json::json!({
        "scenario": "idle", "canvases": args.canvases, "seconds": seconds, "instances": instances,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("idle: {} canvases with one silent client each, {:.0} s", args.canvases, seconds);
        for i in &instances {
            println!(
                "  {}: CPU {:.2}% of a core, {:.0} polls/s",
                i["target"].as_str().unwrap_or(""),
                i["cpu_percent_of_a_core"].as_f64().unwrap_or(0.0),
                i["polls_per_s"].as_f64().unwrap_or(0.0)
            );
        }
    }
    drop(sockets);
    Ok(())
}

/// Linux reports process CPU time in USER_HZ ticks, 100 per second on every mainstream configuration.
const CLOCK_TICKS_PER_S: f64 = 100.0;

/// (CPU ticks, polls so far) of every relay of an idle run.
async fn read_all(args: &crate::IdleArgs) -> anyhow::Result<Vec<(u64, f64)>> {
    let mut out = Vec::new();
    for (pid, target) in args.pids.iter().zip(&args.targets) {
        out.push((cpu_ticks(*pid)?, metric(target, "relay_polls_total").await?));
    }
    Ok(out)
}

/// An idle client as a scenario holds it: its socket, left unread, or the task that reads and drops what
/// comes on it (stopped when this is dropped).
enum Held {
    Unread(#[allow(dead_code)] Box<client::Socket>),
    Reading(tokio::task::JoinHandle<()>),
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Held::Reading(task) = self {
            task.abort();
        }
    }
}

/// Opens `count` silent clients over `canvases` canvases, round-robin over the targets; with `read`, each
/// reads and drops what comes from the moment it is open.
async fn open_idle(
    targets: &[String],
    count: usize,
    canvases: usize,
    prefix: &str,
    read: bool,
) -> anyhow::Result<Vec<Held>> {
    let mut sockets = Vec::with_capacity(count);
    let progress = Arc::default();
    for i in 0..count {
        let spec = Spec {
            target: targets[i % targets.len()].clone(),
            instance: i % targets.len(),
            canvas: format!("{prefix}-{}", i % canvases.max(1)),
            user: format!("u{i}"),
            pace: Pace::Listen,
            payload: 0,
            keyed: false,
            progress: Arc::clone(&progress),
        };
        let (mut ws, _) =
            client::connect(&spec).await.map_err(|e| anyhow::anyhow!("socket {i}: {e} (raise ulimit -n?)"))?;
        sockets.push(match read {
            // Reading is what sends tungstenite's answers to the relay's pings.
            true => Held::Reading(tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} })),
            false => Held::Unread(Box::new(ws)),
        });
    }
    Ok(sockets)
}

/// User plus system CPU time of a process so far, in clock ticks (fields 14 and 15 of /proc/PID/stat,
/// counted after the parenthesised command name, which may contain spaces).
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| fields.get(n).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Ok(field(11) + field(12)) // utime and stime: the 14th and 15th fields overall
}

/// One counter from a relay's Prometheus /metrics (0 when absent), over a plain HTTP/1.1 request.
pub async fn metric(target: &str, name: &str) -> anyhow::Result<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(target).await?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    let value = body
        .lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with([' ', '{']))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok());
    Ok(value.unwrap_or(0.0))
}
