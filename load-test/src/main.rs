//! `load-test`: drives canvas-relay instances with many real WebSocket clients speaking the wire contract,
//! checks every client's seq stream for gaps, and reports counts and latency percentiles.
//!
//! Bounded by construction: every scenario runs for `--duration` plus a short drain (`join`: for its fill and
//! its joins, each under a timeout), with a fixed number of clients, and only against loopback targets.

mod client;
mod contention;
mod events;
mod fill;
mod flood;
mod history;
mod join;
mod judge;
mod ledger;
mod publish;
mod receiver;
mod report;
mod rss;
mod scenario;
mod sse;
mod stream;
mod webhook;
mod welcome;

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use contention::ContentionArgs;
use history::HistoryArgs;

#[derive(Parser)]
#[command(name = "load-test", about = "Measure canvas-relay through real WebSockets")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// End-to-end latency at a fixed total rate: clients spread over the targets and canvases; each message's
    /// send time travels in its payload, so every delivery is timed (same host clock).
    Latency {
        #[command(flatten)]
        common: Common,
        /// Total logged messages per second, spread evenly over the clients.
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        /// Clients, assigned round-robin to targets.
        #[arg(long, default_value_t = 50)]
        clients: usize,
        /// Canvases the clients are spread over (each message reaches the others on its canvas).
        #[arg(long, default_value_t = 10)]
        canvases: usize,
    },
    /// Logged messages per second into the shared file. With --window 0, the PRD's paced test (each sender at
    /// --rate-per-sender, P95 ack latency); otherwise flat out, each sender keeping --window messages in flight.
    Throughput {
        #[command(flatten)]
        common: Common,
        /// Senders, each on its own canvas, assigned round-robin to targets.
        #[arg(long, default_value_t = 10)]
        senders: usize,
        /// Paced mode: messages per second per sender.
        #[arg(long, default_value_t = 100)]
        rate_per_sender: u32,
        /// Flat-out mode: messages in flight per sender (0 = paced mode).
        #[arg(long, default_value_t = 0)]
        window: usize,
    },
    /// One canvas, many receivers: --senders send flat out (--window in flight each) and every message
    /// reaches all --receivers, spread over the targets. Reports deliveries per second.
    Fanout {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 200)]
        receivers: usize,
        #[arg(long, default_value_t = 2)]
        senders: usize,
        #[arg(long, default_value_t = 32)]
        window: usize,
    },
    /// --canvases canvases with one silent client each, spread over the targets: each relay's CPU (from
    /// /proc of --pids) and watcher polls per second (from its /metrics) while nothing happens. The PRD's
    /// polling test is `--canvases 50 --duration 60s`.
    Idle(IdleArgs),
    /// Opens --count idle WebSockets to one relay and reports its resident memory per socket
    /// (VmRSS of --pid before and after). Raise `ulimit -n` for large counts.
    Connections(ConnectionsArgs),
    /// Joining a big canvas: fills one canvas with --objects objects, then times --joins lone joins and a
    /// storm of --storm simultaneous ones (to the whole welcome, object count checked), with latency load
    /// on another canvas throughout and, given --pids, each relay's RSS peak. --duration is not used: the
    /// background load lasts as long as the joins do.
    Join(JoinArgs),
    /// Cursors must never crowd out logged messages: one client floods cursors for --duration, another
    /// sends a logged note every --every, and a slow reader reports how late the notes reach it, whether
    /// it was cut, and whether the latest cursor reached it.
    Flood(FloodArgs),
    /// Ephemeral events (v1.1): --clients connections on one canvas, spread over the targets, each send an
    /// ephemeral event --rate times a second; every client reads everything. Reports deliveries per second,
    /// end-to-end latency (same instance and cross-instance), and what was missed or out of order.
    Events(EventsArgs),
    /// Webhook delivery (issue 17): this tool is the receiver on --receiver (the relays' --webhook-url points
    /// there) and publishes --rate logged messages a second over --canvases canvases, alternating targets.
    /// Checks each signature, then reports the lag (commit ts, ack and send to receipt), batches per second
    /// and their size, delivered against acked after a drain (missing ones named), and repeated keys.
    Webhook(WebhookArgs),
    /// The event stream GET /api/v1/stream (issue 17): --readers readers on the first target while --rate
    /// messages a second (or a burst of --messages) go over --canvases canvases. Reports events per second
    /// per reader, commit-to-event lag, and every seq once per canvas in order. With --backlog N: N
    /// messages first, then one reader from since=0, timed until it drained them.
    Stream(StreamArgs),
    /// Several instances commit object ops to one canvas at once (issue 28): --clients clients, alternating
    /// targets, each update its own object flat out; reports ops acked per second, error frames, and the
    /// guarded commits the relays had to stage again (`relay_commit_conflicts_total`, per target).
    Contention(ContentionArgs),
    /// History (issue 29): fills one canvas with --objects objects and changes --changed of them, then times
    /// --reads `?at=` reads spread over the whole history, and a restore of the state before the changes
    /// until --watchers clients (alternating targets) have all received it.
    History(HistoryArgs),
}

#[derive(Args, Clone)]
pub struct WebhookArgs {
    #[command(flatten)]
    common: Common,
    /// Where this tool listens for webhook requests (loopback): the relays' --webhook-url must point here.
    #[arg(long, default_value = "127.0.0.1:9300")]
    receiver: String,
    /// The relays' --webhook-secret, to check X-Relay-Signature (a mismatch is answered 401 and counted).
    #[arg(long, default_value = "bench")]
    secret: String,
    /// Logged messages per second in all, spread evenly over the canvases (one publisher each).
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Canvases, canvas i published through target i % targets.
    #[arg(long, default_value_t = 100)]
    canvases: usize,
    /// Longest wait after the last ack for every acked message to be delivered.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    drain: Duration,
}

#[derive(Args, Clone)]
pub struct StreamArgs {
    #[command(flatten)]
    common: Common,
    /// Event-stream readers, all on the first target.
    #[arg(long, default_value_t = 1)]
    readers: usize,
    /// The relays' API key (their --api-key / RELAY_API_KEY), sent as `Authorization: Bearer`.
    #[arg(long)]
    api_key: Option<String>,
    /// Logged messages per second in all, over the canvases, for --duration.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Canvases, one publisher each, canvas i published through target i % targets.
    #[arg(long, default_value_t = 10)]
    canvases: usize,
    /// Instead of --rate for --duration: this many messages as fast as acks allow.
    #[arg(long, conflicts_with = "backlog")]
    messages: Option<u64>,
    /// Unacked messages per publisher for --messages and --backlog.
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Catch-up mode: publish this many first (as fast as acks allow), then open one reader with
    /// `?since=0` and time how fast it drains them.
    #[arg(long)]
    backlog: Option<u64>,
    /// Longest wait after the last ack for the readers to have every message.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    drain: Duration,
}

#[derive(Args, Clone)]
pub struct EventsArgs {
    #[command(flatten)]
    common: Common,
    /// Connections on the canvas, alternating targets.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Events each connection sends per second (the relay's --ephemeral-rate-limit defaults to 30).
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
}

#[derive(Args, Clone)]
pub struct JoinArgs {
    #[command(flatten)]
    common: Common,
    /// Objects the canvas is filled with.
    #[arg(long, default_value_t = 100_000)]
    objects: usize,
    /// About how many bytes of JSON each object is.
    #[arg(long, default_value_t = 100)]
    object_bytes: usize,
    /// Lone joins, one after another, alternating targets.
    #[arg(long, default_value_t = 5)]
    joins: usize,
    /// Joiners that start connecting at the same instant, spread over the targets.
    #[arg(long, default_value_t = 50)]
    storm: usize,
    /// Logged messages per second of latency load on another canvas while the scenario runs (0 = none).
    #[arg(long, default_value_t = 1000)]
    background_rate: u32,
    /// Clients of that load, alternating targets.
    #[arg(long, default_value_t = 10)]
    background_clients: usize,
    /// A pause between the fill and the first join, e.g. for a latency run in another process (see
    /// `ALONGSIDE` in scripts/bench-pair.sh) to cover the joins and not the fill.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pause: Duration,
    /// The relays' process ids, in the order of --targets, to sample their RSS every 10 ms (optional).
    #[arg(long, value_delimiter = ',')]
    pids: Vec<u32>,
}

#[derive(Args, Clone)]
pub struct FloodArgs {
    #[command(flatten)]
    common: Common,
    /// Where the slow reader connects: the flooder's instance (first target) or the other (second).
    #[arg(long, value_enum, default_value = "first")]
    reader_on: ReaderOn,
    /// Frames per second the slow reader reads at most.
    #[arg(long, default_value_t = 200)]
    reader_fps: u32,
    /// How often the publisher sends a logged message.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    every: Duration,
}

/// Which target the flood's reader uses.
#[derive(Clone, Copy, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReaderOn {
    First,
    Second,
}

#[derive(Args, Clone)]
pub struct IdleArgs {
    /// Comma-separated relay addresses (host:port), loopback only.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:8080")]
    targets: Vec<String>,
    /// The relays' process ids, in the order of --targets.
    #[arg(long, value_delimiter = ',', required = true)]
    pids: Vec<u32>,
    #[arg(long, default_value_t = 1000)]
    canvases: usize,
    /// How long to measure.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// How long to wait after connecting before measuring (the watchers back off after --backoff-after).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    settle: Duration,
    #[arg(long, default_value = "load")]
    prefix: String,
    /// Print JSON instead of the human summary.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Clone)]
pub struct ConnectionsArgs {
    /// The relay to connect to (host:port), loopback only.
    #[arg(long, default_value = "127.0.0.1:8080")]
    target: String,
    /// The relay's process id, to read its resident memory from /proc.
    #[arg(long)]
    pid: u32,
    /// Idle WebSockets to open.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Canvases they are spread over.
    #[arg(long, default_value_t = 100)]
    canvases: usize,
    /// Each socket reads and drops what comes (and so answers pings, as a browser tab does) instead of
    /// leaving it unread: with more sockets than the relay pings in three --ping-interval while they open
    /// (19,000 take over a minute), unread ones are dropped as silent before their memory is read.
    #[arg(long)]
    read: bool,
    /// How long the sockets stay open after RSS is read (e.g. while a heap profiler looks at the relay).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    hold: Duration,
    /// Print JSON instead of the human summary.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Clone)]
pub struct Common {
    /// Comma-separated relay addresses (host:port), loopback only.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:8080")]
    targets: Vec<String>,
    /// How long to send.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Bytes of padding in each message's data.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Print one JSON object instead of the human summary.
    #[arg(long)]
    json: bool,
    /// Prefix for canvas names, so runs do not share canvases.
    #[arg(long, default_value = "load")]
    prefix: String,
    /// Give every logged message an `idempotency_key` (the relay then checks and records each one).
    #[arg(long)]
    idempotency_keys: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (common, report) = match cli.scenario {
        Scenario::Connections(args) => {
            check_target(&args.target)?;
            return scenario::connections(&args).await;
        }
        Scenario::Idle(args) => {
            args.targets.iter().try_for_each(|target| check_target(target))?;
            return scenario::idle(&args).await;
        }
        Scenario::Join(args) => {
            check_targets(&args.common)?;
            return join::join(&args).await;
        }
        Scenario::Flood(args) => {
            check_targets(&args.common)?;
            return flood::flood(&args).await;
        }
        Scenario::Events(args) => {
            check_targets(&args.common)?;
            return events::events(&args).await;
        }
        Scenario::Webhook(args) => {
            check_targets(&args.common)?;
            check_target(&args.receiver)?;
            return webhook::webhook(&args).await;
        }
        Scenario::History(args) => {
            check_targets(&args.common)?;
            return history::history(&args).await;
        }
        Scenario::Contention(args) => {
            check_targets(&args.common)?;
            return contention::contention(&args).await;
        }
        Scenario::Stream(args) => {
            check_targets(&args.common)?;
            return stream::stream(&args).await;
        }
        Scenario::Fanout { common, receivers, senders, window } => {
            check_targets(&common)?;
            let report = scenario::fanout(&common, receivers, senders, window).await?;
            (common, report)
        }
        Scenario::Latency { common, rate, clients, canvases } => {
            check_targets(&common)?;
            let report = scenario::latency(&common, rate, clients, canvases).await?;
            (common, report)
        }
        Scenario::Throughput { common, senders, rate_per_sender, window } => {
            check_targets(&common)?;
            let report = scenario::throughput(&common, senders, rate_per_sender, window).await?;
            (common, report)
        }
    };
    if common.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.human());
    }
    Ok(())
}

/// Load is only ever aimed at this machine.
fn check_targets(common: &Common) -> anyhow::Result<()> {
    common.targets.iter().try_for_each(|target| check_target(target))
}

fn check_target(target: &str) -> anyhow::Result<()> {
    let host = target.rsplit_once(':').map_or(target, |(h, _)| h);
    anyhow::ensure!(
        matches!(host, "127.0.0.1" | "localhost" | "[::1]"),
        "target {target} is not loopback: load-test only drives relays on this machine"
    );
    Ok(())
}
