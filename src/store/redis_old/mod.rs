//! The bus on Redis Streams (`--bus redis://HOST:PORT/DB`), for instances on several hosts. The contract is
//! the SQLite bus's, kept the same way:
//!
//! - **Seq, log, TTL, state, presence: one script.** `publish.lua` assigns each canvas's next seq, appends to
//!   the canvas's stream (entry id = generation + 1, seq), trims entries past the TTL, folds object ops and
//!   records presence, atomically: two instances can never take the same seq or fold out of order.
//! - **Delivery without polling.** Each process blocks in one XREAD over the streams of the canvases it
//!   has clients on (`reader.rs`), from where each room has delivered; its own commits reach its clients at
//!   once (`publisher.rs`), and rooms order both paths as on SQLite.
//! - **Joins and resume.** `snapshot.lua` reads head, state version, presence and the resume check
//!   atomically; a big state is read beside it with one HGETALL of the canvas's `objects` hash (each object's
//!   whole JSON text), never object by object. The join itself is `bus::join`'s, as on SQLite.
//! - **Redis down.** Commits fail with `unavailable` (no ack), `/health` is critical, the connection
//!   manager and the reader reconnect with backoff, and rooms read on from where they were.
//! - **Redis lost data.** The store's epoch (`relay:epoch`) is part of every canvas epoch. A Redis that
//!   comes back empty gets a new one; one that comes back from an older snapshot is caught by its write
//!   count going backwards and given a new one (`maintenance.rs`). Either way every client is cut and
//!   reloads rather than trust reused seqs.
//! - **Consumers** (`consumer.rs`). Every logged message and reset marker is also appended, by the same
//!   script, to one stream of every canvas (`relay:stream`, ids from Redis's clock, so in commit order),
//!   trimmed by the TTL (`relay:stream:trimmed`: the newest id dropped); its ids are the event stream's
//!   positions. With a webhook, a canvas's own stream keeps what the webhook has not delivered
//!   (`relay:{C}:webhook`) for up to `--webhook-retention`; leases are `relay:lease:<name>`. These keys are
//!   only added: no key of layout 3 changes meaning, so the layout stays 3 and nothing is converted. An older
//!   binary would neither append to `relay:stream` nor keep undelivered messages, though: as across layouts,
//!   run one version of the relay against a Redis.

mod batch;
mod consumer;
mod entry;
mod keys;
mod link;
pub mod maintenance;
mod publisher;
mod reader;
mod scripts;
mod state;
mod store;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Client, Value};
use serde::Serialize;
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

use self::entry::{stream_id, LogEntry};
use self::link::Link;
use self::publisher::{Job, Publisher};
use self::reader::Reader;
use crate::bus::lanes::{self, LaneSenders};
use crate::bus::workers::Workers;
use crate::bus::{BusError, Unavailable};
use crate::config::Config;
use crate::hub::Hub;
use crate::metrics::Metrics;

/// How long one Redis command may take before it counts as a failure.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a read of a canvas may take: a big state is megabytes, and a storm of joins reads it at once.
const STATE_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The key layout this binary writes (`relay:format`); see [`RedisBus::migrate`].
const FORMAT: u32 = 3;

/// What `/health` reports about Redis.
#[derive(Debug, Clone, Serialize)]
pub struct RedisFigures {
    /// Round trip of the health read just now (ms).
    pub redis_ping_ms: f64,
    /// The store's epoch (part of every canvas epoch).
    pub store_epoch: Option<String>,
    /// Instances with a heartbeat within the presence timeout, this one included.
    pub live_instances: i64,
}

/// A connection manager whose commands time out after `response_timeout`. A command waits for the
/// manager's reconnection attempt, so the attempt is short (two retries, 50 then 100 ms): while Redis is
/// down a commit fails within ~150 ms and its senders get `unavailable` instead of waiting for an ack; the
/// next command (at the latest the next heartbeat) tries again.
async fn connect(client: &Client, response_timeout: Duration) -> anyhow::Result<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(RESPONSE_TIMEOUT))
        .set_response_timeout(Some(response_timeout))
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(1))
        .set_number_of_retries(2);
    tokio::time::timeout(RESPONSE_TIMEOUT * 2, client.get_connection_manager_with_config(config))
        .await
        .context("connecting to Redis timed out")?
        .context("connecting to Redis")
}

/// The Redis bus of one process. Cheap to clone.
#[derive(Clone)]
pub struct RedisBus {
    inner: Arc<Inner>,
}

struct Inner {
    /// Commands and scripts; reconnects by itself with backoff.
    conn: ConnectionManager,
    /// Reads of canvases for joins, replays and the API, apart from `conn`: a slow read of a big state
    /// (megabytes) never holds up a commit's reply or times it out.
    state_conn: ConnectionManager,
    /// The publisher's two lanes: the queue of messages and the urgent lane (see `bus/lanes.rs`).
    publisher: LaneSenders<Job>,
    link: Arc<Link>,
    hub: Arc<Hub>,
    metrics: Metrics,
    instance_id: String,
    ttl_ms: i64,
    /// How long messages the webhook has not delivered are kept (ms; 0: no webhook, the TTL alone).
    retention_ms: i64,
    max_resume: u64,
    /// An instance silent for longer than this is dead (as on SQLite: presence timeout less a heartbeat).
    dead_after_ms: i64,
    presence_timeout_ms: i64,
    stop_reader: CancellationToken,
    /// Stops the reader when the bus is dropped without `close` too.
    _reader_stops_on_drop: DropGuard,
    /// The publisher and reader tasks.
    workers: Workers,
}

impl RedisBus {
    /// Connects (failing if Redis cannot be reached at start), registers this instance and starts the
    /// publisher and the stream reader.
    pub async fn open(
        url: &str,
        config: &Config,
        instance_id: &str,
        hub: Arc<Hub>,
        metrics: Metrics,
    ) -> anyhow::Result<Self> {
        let client = Client::open(url).context("parsing the Redis URL")?;
        let conn = connect(&client, RESPONSE_TIMEOUT).await?;
        let state_conn = connect(&client, STATE_READ_TIMEOUT).await?;
        Self::migrate(&mut conn.clone()).await?;
        let link = Arc::new(Link::default());
        let (publisher_tx, publisher_rx) = lanes::lanes(config.writer_queue);
        let stop_reader = CancellationToken::new();
        let retention_ms = config.consumers.retention().map_or(0, |r| r.as_millis().max(1) as i64);
        let publisher = Publisher {
            conn: conn.clone(),
            hub: hub.clone(),
            link: link.clone(),
            metrics: metrics.clone(),
            instance_id: instance_id.to_owned(),
            ttl_ms: config.message_ttl.as_millis() as i64,
            retention_ms,
            max_batch: config.max_batch,
            max_canvas_state: config.max_canvas_state,
            local_broadcast: config.local_broadcast,
            // Batch numbers are unique to this process: the instance id is new at every start.
            next_batch: 1,
            unresolved: None,
        };
        let reader = Reader {
            client,
            hub: hub.clone(),
            link: link.clone(),
            metrics: metrics.clone(),
            instance_id: instance_id.to_owned(),
            ttl_ms: config.message_ttl.as_millis() as i64,
        };
        let bus = RedisBus {
            inner: Arc::new(Inner {
                conn,
                state_conn,
                publisher: publisher_tx,
                link,
                hub,
                metrics,
                instance_id: instance_id.to_owned(),
                ttl_ms: config.message_ttl.as_millis() as i64,
                retention_ms,
                max_resume: config.max_resume,
                dead_after_ms: config.presence_timeout.saturating_sub(config.heartbeat_interval).as_millis() as i64,
                presence_timeout_ms: config.presence_timeout.as_millis() as i64,
                _reader_stops_on_drop: stop_reader.clone().drop_guard(),
                stop_reader,
                workers: Workers::default(),
            }),
        };
        // Registered before the instance announces itself, so peers count it from the start.
        bus.heartbeat().await.map_err(|e| anyhow::anyhow!("registering with Redis: {e}"))?;
        bus.inner.workers.task("publisher", tokio::spawn(publisher.run(publisher_rx)));
        bus.inner.workers.task("stream reader", tokio::spawn(reader.run(bus.inner.stop_reader.clone())));
        Ok(bus)
    }

    /// Brings the keys to this binary's layout (`relay:format`), one canvas at a time (`migrate.lua`). Layout
    /// 1 (the first Redis bus) kept objects as field hashes only: each canvas gets its `objects` hash, state
    /// size and version. Layout 3 added the index of canvases that `GET /api/v1/canvases` pages through.
    /// Instances of another layout must not run against the same Redis: stop them all, then start this one.
    async fn migrate(conn: &mut ConnectionManager) -> anyhow::Result<()> {
        let format: Option<u32> =
            redis::cmd("GET").arg(keys::FORMAT).query_async(conn).await.context("reading the key layout")?;
        match format {
            Some(FORMAT) => return Ok(()),
            Some(newer) if newer > FORMAT => anyhow::bail!(
                "Redis holds key layout {newer}, newer than this binary knows ({FORMAT}): upgrade canvas-relay"
            ),
            _ => {}
        }
        let mut heads: Vec<String> = Vec::new();
        let mut iter: redis::AsyncIter<String> = conn.scan_match("relay:{*}:head").await.context("listing canvases")?;
        while let Some(key) = iter.next_item().await {
            heads.push(key.context("listing canvases")?);
        }
        drop(iter);
        let mut converted = 0;
        for head in &heads {
            let Some(canvas) = head.strip_prefix("relay:{").and_then(|k| k.strip_suffix("}:head")) else { continue };
            let objects: u64 = scripts::MIGRATE.arg(canvas).invoke_async(conn).await.context("converting a canvas")?;
            converted += objects;
        }
        let () = redis::cmd("SET")
            .arg(keys::FORMAT)
            .arg(FORMAT)
            .query_async(conn)
            .await
            .context("recording the key layout")?;
        if !heads.is_empty() {
            tracing::info!(canvases = heads.len(), objects = converted, "Redis keys converted to layout {FORMAT}");
        }
        Ok(())
    }

    fn conn(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    fn state_conn(&self) -> ConnectionManager {
        self.inner.state_conn.clone()
    }

    /// A fresh id, offered to a script in case the store has no epoch yet (see `store_epoch` in the Lua).
    fn candidate() -> String {
        Uuid::new_v4().to_string()
    }

    /// The publisher or reader task that has ended, if one has: the instance cannot go on.
    pub fn stopped_worker(&self) -> Option<&'static str> {
        self.inner.workers.stopped()
    }

    /// When the oldest entry a local room has not delivered yet was committed (Redis's clock, ms): one
    /// XRANGE of one entry per local canvas (the first thousand), in one round trip.
    async fn oldest_unread(&self) -> Result<Option<i64>, BusError> {
        let rooms = self.inner.hub.all_rooms();
        let mut pipe = redis::pipe();
        let mut asked = 0;
        for room in rooms.iter().take(1000) {
            let (generation, delivered) = {
                let state = room.lock();
                if !state.is_started() {
                    continue; // its join is still placing it
                }
                (state.generation(), state.delivered())
            };
            pipe.cmd("XRANGE")
                .arg(keys::log(&room.canvas))
                .arg(format!("({}", stream_id(generation, delivered)))
                .arg("+")
                .arg("COUNT")
                .arg(1);
            asked += 1;
        }
        if asked == 0 {
            return Ok(None);
        }
        let replies: Vec<Value> = pipe.query_async(&mut self.conn()).await.map_err(unavailable)?;
        Ok(replies.iter().filter_map(|reply| LogEntry::parse_all(reply).first().map(|entry| entry.ts)).min())
    }
}

/// A reply of a shape this relay's scripts never send.
fn malformed(what: &'static str) -> BusError {
    Unavailable::UnexpectedReply(what).into()
}

/// A Redis failure as clients see it.
fn unavailable(error: redis::RedisError) -> BusError {
    Unavailable::Redis(error.to_string()).into()
}
