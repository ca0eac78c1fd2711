//! Every knob of the relay: a clap flag with an `RELAY_*` environment twin, a default that works on one
//! laptop, and a sentence of `--help`. Nothing else in the crate reads the environment or the command line.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

mod bus;
pub mod consumers;
pub mod open_files;
mod profile;
mod secret;
mod validate;
mod webhook_url;

pub use bus::{BusKind, RedisUrl};
pub use consumers::{ConsumerConfig, Webhook};
pub use profile::{Profile, Tuning};
pub use secret::Secret;
pub use webhook_url::WebhookUrl;

/// The command line. Parse it with [`Cli::parse_resolved`] (or [`Cli::try_parse_resolved_from`]), not the derived
/// `Cli::parse`: only those give the knobs of `--profile` the profile's values.
#[derive(Debug, Parser)]
#[command(
    name = "canvas-relay",
    version,
    about = "Realtime relay for collaborative canvas apps: \
    several processes share one SQLite file as their message bus."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one relay instance. Start several on the same --db to share canvases between them.
    Serve(Config),
}

impl Cli {
    /// Parses the process's arguments and `RELAY_*` variables, then applies `--profile` to every knob left at
    /// its default. On a bad flag it prints clap's message and exits, as `Cli::parse` does.
    pub fn parse_resolved() -> Cli {
        Cli::try_parse_resolved_from(std::env::args_os()).unwrap_or_else(|error| error.exit())
    }

    /// [`Cli::parse_resolved`] on `args` (the first is the program's name); the `RELAY_*` variables still count.
    pub fn try_parse_resolved_from<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = Cli::command().try_get_matches_from(args)?;
        let mut cli = Cli::from_arg_matches(&matches).map_err(|error| error.format(&mut Cli::command()))?;
        let Command::Serve(config) = &mut cli.command;
        if let Some(serve) = matches.subcommand_matches("serve") {
            profile::apply(config, serve);
        }
        Ok(cli)
    }
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// SQLite's `synchronous` setting for the shared file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Synchronous {
    /// Commits survive a killed process; the last commits may be lost if the machine loses power.
    Normal,
    /// Commits also survive power loss, at the cost of an fsync per commit batch.
    Full,
}

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port (the bound address is logged as "listening on ADDR").
    #[arg(long, env = "RELAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Threads serving sockets and HTTP (tokio workers); one per core by default. With several instances on
    /// one host, give each cores ÷ instances (the cluster and benchmark scripts do): workers beyond the cores
    /// only add wake-ups between threads, which cost latency.
    #[arg(long, env = "RELAY_WORKER_THREADS")]
    pub worker_threads: Option<usize>,

    /// Bearer key for the HTTP API (/api/v1/...). Without it the API answers 403.
    #[arg(long, env = "RELAY_API_KEY", hide_env_values = true)]
    pub api_key: Option<Secret>,

    /// HS256 secret for client tokens: with it, connections need `token` (a JWT whose `sub` is the user).
    /// Without it the `user` query parameter is trusted as given: for trusted networks only.
    #[arg(long, env = "RELAY_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// Browser origins allowed to open WebSockets, comma-separated (e.g. `https://app.example.com`): an
    /// upgrade whose `Origin` is neither listed nor this server's own gets 403, which stops other sites from
    /// connecting as a visitor (cross-site WebSocket hijacking). Unset: any origin. Clients that send no
    /// `Origin` (not browsers) are unaffected.
    #[arg(long, env = "RELAY_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,

    /// The SQLite file all instances share; created and migrated on start.
    #[arg(long, env = "RELAY_DB", default_value = "./relay.db")]
    pub db: PathBuf,

    /// `sqlite`: share --db with other instances on this host. `memory`: one process, no file, state lost at
    /// exit. `redis://HOST:PORT/DB`: share a Redis server with instances on any host (Redis Streams).
    // `hide_env_values`: the URL may hold a password, which `--help` would otherwise print.
    #[arg(long, env = "RELAY_BUS", hide_env_values = true, default_value = "sqlite", value_parser = bus::BusParser)]
    pub bus: BusKind,

    /// Tuning profile: sets the poll intervals, backoff, batch sizes, cursor batch and checkpoint interval
    /// together (flags given explicitly win).
    #[arg(long, env = "RELAY_PROFILE", value_enum, default_value_t = Profile::Balanced, long_help = profile::long_help())]
    pub profile: Profile,

    /// How often the watcher checks for other processes' commits while canvases are active (e.g. 1ms, 250us).
    /// --profile sets it unless given.
    #[arg(long, env = "RELAY_POLL_INTERVAL", default_value = "1ms", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,

    /// The slowest the watcher backs off to after a quiet spell or with no local clients; --profile sets it
    /// unless given.
    #[arg(long, env = "RELAY_IDLE_POLL_INTERVAL", default_value = "20ms", value_parser = humantime::parse_duration)]
    pub idle_poll_interval: Duration,

    /// How long without traffic (messages, cursors, user messages) before the watcher backs off from --poll-interval.
    /// --profile sets it unless given.
    #[arg(long, env = "RELAY_BACKOFF_AFTER", default_value = "2s", value_parser = humantime::parse_duration)]
    pub backoff_after: Duration,

    /// How long logged messages stay in the file, and so how far back a client can resume.
    #[arg(long, env = "RELAY_MESSAGE_TTL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub message_ttl: Duration,

    /// How often expired messages are deleted (in batches of --cleanup-batch rows).
    #[arg(long, env = "RELAY_CLEANUP_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub cleanup_interval: Duration,

    /// Rows deleted per cleanup transaction: small, so the write lock is never held for long.
    #[arg(long, env = "RELAY_CLEANUP_BATCH", default_value_t = 1000)]
    pub cleanup_batch: u32,

    /// How often committed WAL pages are copied back into the database file (keeps the -wal file bounded).
    /// Frequent small checkpoints flush little at a time (a large flush stalls commits on ext4) and usually let
    /// the WAL start over on its own. --profile sets it unless given.
    #[arg(long, env = "RELAY_CHECKPOINT_INTERVAL", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub checkpoint_interval: Duration,

    /// Most rows the watcher reads in one query; it reads again at once while a batch comes back full.
    /// --profile sets it unless given.
    #[arg(long, env = "RELAY_MAX_MESSAGES_PER_POLL", default_value_t = 1000)]
    pub max_messages_per_poll: u32,

    /// Deliver this process's messages to its own clients right after commit (true), or only through the
    /// watcher like everyone else's (false; slower, for testing the cross-process path with one process).
    #[arg(long, env = "RELAY_LOCAL_BROADCAST", default_value_t = true, action = clap::ArgAction::Set)]
    pub local_broadcast: bool,

    /// Ring other instances' doorbells (loopback UDP) after each commit so they read at once, and listen for
    /// theirs; polling stays on as the fallback. Turn off when instances cannot reach each other's loopback.
    #[arg(long, env = "RELAY_PEER_WAKEUP", default_value_t = true, action = clap::ArgAction::Set)]
    pub peer_wakeup: bool,

    /// Most WebSocket connections this instance holds; past it, an upgrade request gets HTTP 503.
    #[arg(long, env = "RELAY_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Most WebSocket connections one user may hold on this instance; past it, HTTP 429.
    #[arg(long, env = "RELAY_MAX_CONNECTIONS_PER_USER", default_value_t = 100)]
    pub max_connections_per_user: usize,

    /// How long a client may take to send its HTTP request headers before the connection is closed
    /// (slowloris protection).
    #[arg(long, env = "RELAY_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,

    /// Largest WebSocket frame or message a client may send, in bytes; larger ones close the socket with 1009.
    #[arg(long, env = "RELAY_MAX_FRAME_SIZE", default_value_t = 64 * 1024)]
    pub max_frame_size: usize,

    /// Frames queued for one client before it counts as too slow and is closed with 4009 (it can resume).
    #[arg(long, env = "RELAY_CLIENT_QUEUE", default_value_t = 1024)]
    pub client_queue: usize,

    /// Messages waiting for the writer before publishers wait (back-pressure).
    #[arg(long, env = "RELAY_WRITER_QUEUE", default_value_t = 16 * 1024)]
    pub writer_queue: usize,

    /// Most messages committed in one transaction (group commit takes whatever is waiting, up to this).
    /// --profile sets it unless given.
    #[arg(long, env = "RELAY_MAX_BATCH", default_value_t = 2000)]
    pub max_batch: usize,

    /// How long a write waits for another process's write lock before the client gets `unavailable`.
    #[arg(long, env = "RELAY_BUSY_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub busy_timeout: Duration,

    /// SQLite durability: normal survives killed processes; full also survives power loss.
    #[arg(long, env = "RELAY_SYNCHRONOUS", value_enum, default_value_t = Synchronous::Normal)]
    pub synchronous: Synchronous,

    /// Most messages replayed on resume; a client further behind gets `resumed:false` and reloads.
    #[arg(long, env = "RELAY_MAX_RESUME", default_value_t = 10_000)]
    pub max_resume: u64,

    /// How often this instance's heartbeat is written to the instances table.
    #[arg(long, env = "RELAY_HEARTBEAT_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,

    /// An instance whose heartbeat is older than this counts as dead.
    #[arg(long, env = "RELAY_PRESENCE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub presence_timeout: Duration,

    /// How often per-canvas delivery watermarks are saved to canvas_watermarks.
    #[arg(long, env = "RELAY_WATERMARK_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub watermark_interval: Duration,

    /// Logged messages per second one connection may send (0 = no limit); over it they are refused with
    /// `rate_limited`. Cursors are not counted (they are coalesced instead).
    #[arg(long, env = "RELAY_RATE_LIMIT", default_value_t = 200)]
    pub rate_limit: u32,

    /// Messages a connection may send at once above the rate; refusing this many in a row without one
    /// accepted message closes it with 4008.
    #[arg(long, env = "RELAY_RATE_BURST", default_value_t = 400)]
    pub rate_burst: u32,

    /// How often each instance sends its users' latest cursors to the other instances (one row per canvas).
    /// --profile sets it unless given.
    #[arg(long, env = "RELAY_CURSOR_BATCH", default_value = "25ms", value_parser = humantime::parse_duration)]
    pub cursor_batch: Duration,

    /// How often the server pings each client; a client silent for three intervals is dropped.
    #[arg(long, env = "RELAY_PING_INTERVAL", default_value = "20s", value_parser = humantime::parse_duration)]
    pub ping_interval: Duration,

    /// How long a write to one client may block before that client is dropped.
    #[arg(long, env = "RELAY_WRITE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub write_timeout: Duration,

    /// How long shutdown waits for clients to take their last frames before closing anyway.
    #[arg(long, env = "RELAY_SHUTDOWN_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,

    /// Largest state of one canvas, in bytes of the JSON of `welcome.objects`: an object op that would pass it
    /// is refused with `canvas_full` (at least 1024).
    #[arg(long, env = "RELAY_MAX_CANVAS_STATE", value_name = "BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_canvas_state: usize,

    /// A canvas's state is its newest snapshot plus the object ops after it: a snapshot is written every
    /// this many object ops (at least 1) once their data is also a quarter of the state's size (a growing
    /// canvas is not written out whole every few ops), and when a canvas with ops after its snapshot has
    /// been quiet for a second.
    #[arg(long, env = "RELAY_SNAPSHOT_EVERY", value_name = "N", default_value_t = 1000)]
    pub snapshot_every: u64,

    /// ... or once the data of the object ops since the newest snapshot passes this many bytes (at least
    /// 1024): a join then reads at most about this much besides the snapshot, and a canvas of big ops is
    /// snapshotted sooner.
    #[arg(long, env = "RELAY_SNAPSHOT_BYTES", value_name = "BYTES", default_value_t = 4 * 1024 * 1024)]
    pub snapshot_bytes: usize,

    /// How long a canvas's history is kept (`?at=`, versions, restore and fork: PROTOCOL v1.2 "History"):
    /// snapshots, thinned as they age (all of the last hour, one an hour for a day, then one a day), and the
    /// object ops between them, whatever --message-ttl. `0` keeps only what joins need (the newest
    /// snapshot and the ops after it). Named versions are kept until deleted.
    #[arg(long, env = "RELAY_HISTORY_RETENTION", value_name = "DURATION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub history_retention: Duration,

    /// Largest presence state one connection may set (bytes of its JSON, v1.1); a bigger one gets
    /// `too_large` and the state stays as it was.
    #[arg(long, env = "RELAY_MAX_PRESENCE_BYTES", value_name = "BYTES", default_value_t = 4096)]
    pub max_presence_bytes: usize,

    /// Cursors (and presence states) per second one connection relays (0 = no limit): the excess is coalesced, the latest delivered at
    /// the next slot, never refused.
    #[arg(long, env = "RELAY_MAX_CURSOR_RATE", value_name = "N", default_value_t = 60)]
    pub max_cursor_rate: u32,

    /// Ephemeral events per second one connection may send (0 = no limit), in bursts of as many: past it an
    /// event is refused with `rate_limited`, and the connection stays open.
    #[arg(long, env = "RELAY_EPHEMERAL_RATE_LIMIT", value_name = "N", default_value_t = 30)]
    pub ephemeral_rate_limit: u32,

    /// How long a publish (socket message, API publish, or a join's presence registration) may wait for the
    /// store before it gets `unavailable` / HTTP 503.
    #[arg(long, env = "RELAY_PUBLISH_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub publish_timeout: Duration,

    /// Bytes of logged frames queued for one client before it counts as too slow and is closed with 4009
    /// (--client-queue still bounds the frames; at least 64 KiB).
    #[arg(long, env = "RELAY_CLIENT_QUEUE_BYTES", value_name = "BYTES", default_value_t = 4 * 1024 * 1024)]
    pub client_queue_bytes: usize,

    /// Canvases one multiplexed socket (`GET /ws`) may have joined at once; a join past it is refused with
    /// `too_many_canvases`.
    #[arg(long, env = "RELAY_MAX_CANVASES_PER_CONNECTION", value_name = "N", default_value_t = 100)]
    pub max_canvases_per_connection: usize,

    /// Publishes of one connection waiting for the store; past it the session stops reading that socket (TCP
    /// back-pressure) until some are committed (1 to --client-queue / 2, so all their acks fit its queue).
    #[arg(long, env = "RELAY_MAX_IN_FLIGHT", value_name = "N", default_value_t = 256)]
    pub max_in_flight: usize,

    /// Log line format on stderr (the level comes from RUST_LOG, default info).
    #[arg(long, env = "RELAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// The webhook and the event stream.
    #[command(flatten)]
    pub consumers: ConsumerConfig,
}

impl Config {
    /// The defaults, as `canvas-relay serve` with no flags would run (with the `RELAY_*` variables that are
    /// set), on the given file.
    pub fn with_db(db: impl Into<PathBuf>) -> Config {
        let cli = Cli::try_parse_resolved_from(["canvas-relay", "serve"]).unwrap_or_else(|error| error.exit());
        let Command::Serve(mut config) = cli.command;
        config.db = db.into();
        config
    }

    /// How long a message is kept at least: `--message-ttl`, or `--webhook-retention` while a webhook may
    /// still have to deliver it, when that is longer.
    pub fn keep(&self) -> Duration {
        self.consumers.retention().unwrap_or_default().max(self.message_ttl)
    }

    /// How long after its last commit a canvas left with neither objects nor connections is forgotten: once
    /// its log has expired for clients and the webhook.
    pub fn forget_after(&self) -> Duration {
        self.message_ttl + self.keep()
    }

    /// ... or, for one that had objects in its epoch, once its history has expired too (a canvas emptied
    /// by a bad bulk delete can still be restored).
    pub fn forget_after_history(&self) -> Duration {
        self.forget_after().max(self.history_retention)
    }

    /// How many bytes of canvas states a process holds in memory at most (the committer's canvases, the
    /// joiners' serialized states): two of the biggest, and at least 256 MiB.
    pub fn state_budget(&self) -> usize {
        self.max_canvas_state.saturating_mul(2).max(256 << 20)
    }
}

#[cfg(test)]
mod tests;
