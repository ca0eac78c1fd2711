//! The store on Redis (`--bus redis://HOST:PORT/DB`, key layout 4), for instances on several hosts. It only
//! stores: the fold that decides what a commit writes is `crate::core`'s, the same as on SQLite.
//!
//! - **Commits: one small script per round** (`commit.rs`, `lua/commit.lua`). Per canvas: the head's `rev`
//!   checked (or nothing, for an append of plain messages), claimed idempotency keys checked, entries
//!   appended to the canvas's log (`relay:{C}:log`, entry id `(generation + 1)-seq`; object ops also to its
//!   ops stream `relay:{C}:ops`), the connection rows and the head the fold computed written, and a marker
//!   of the batch; a canvas whose head moved is answered with the ops since, the fold stages it again and
//!   only those canvases go again. Batches are numbered per instance: one sent again after its reply was
//!   lost is answered as it was, never applied twice; one for a store epoch that is not the store's is
//!   not applied at all.
//! - **State: a snapshot plus the log after it** (`reads.rs`). A snapshot is one blob under a key of its own
//!   (a compare-and-set at its seq keeps it: `Store::put_snapshot`); a read is one script (head,
//!   connections, the snapshot's key, the ops after it) and one GET of the blob. No script reads a whole
//!   state, so Redis is never held for long.
//! - **History** (`history.rs`): older snapshots stay indexed by seq with their time, size and name, and
//!   the ops stream keeps the object ops back to the history's floor; reads at a seq, naming, forks and
//!   thinning are each one script (the blobs beside them, as above).
//! - **Delivery without polling.** Each process blocks in one XREAD over the logs of the canvases it has
//!   clients on (`reader.rs`), from where each room has delivered.
//! - **Upkeep** (`upkeep.rs`): heartbeats (which also catch a Redis that lost writes: a new store epoch,
//!   every client reloads), and cleanup (logs trimmed by the TTL, the log of every canvas too, idle canvases
//!   forgotten), each a bounded script called while it comes back full.
//! - **Consumers** (`consumer.rs`): the log of every canvas (`relay:stream`) for the event stream, the
//!   webhook's positions and leases.
//! - **Upgrading** (`migrate.rs`): a store of layouts 1 to 3 is brought to layout 4 at start.

mod batch;
mod commit;
mod consumer;
mod entry;
mod history;
mod keys;
mod link;
mod migrate;
mod posts;
mod reader;
mod reads;
mod scripts;
mod store;
#[cfg(test)]
mod testing;
mod upkeep;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Client;
use serde::Serialize;
use tokio_util::sync::{CancellationToken, DropGuard};

use self::commit::RedisWriter;
use self::link::Link;
use self::reader::Reader;
use crate::config::Config;
use crate::core::committer::{Setup, Started};
use crate::core::Opened;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::store::workers::Workers;
use crate::store::{BusError, StoreError, Unavailable};

/// How long one Redis command may take before it counts as a failure.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a read of a canvas may take: a snapshot is megabytes, and a storm of joins reads at once.
const STATE_READ_TIMEOUT: Duration = Duration::from_secs(30);

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

/// The Redis store of one process. Cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

/// Fixed settings of the store, from the config.
#[derive(Debug, Clone, Copy)]
struct Settings {
    /// `--message-ttl`: what clients see of the log; idempotency keys live as long.
    ttl_ms: i64,
    /// `--webhook-retention` with a webhook (0 without): undelivered entries are kept that long.
    retention_ms: i64,
    /// `--presence-timeout`: instances silent for longer are not live.
    presence_timeout_ms: i64,
    /// `--cleanup-batch`: what one cleanup script looks at, at most.
    cleanup_batch: u32,
    /// `--history-retention` (0: no history): whether a new snapshot leaves the older ones for thinning.
    history_ms: i64,
    /// How long after its last commit a canvas with neither objects nor connections may be forgotten, as
    /// the fold's rules say (`Config::forget_after`): what an empty fork and a layout-3 canvas that was
    /// expiring get.
    forget_after_ms: i64,
}

struct Inner {
    /// Commits, heartbeats and small reads; reconnects by itself with backoff.
    conn: ConnectionManager,
    /// Reads that can be big (snapshots, log pages), apart from `conn`: a slow read of a big state never
    /// holds up a commit's reply or times it out.
    state_conn: ConnectionManager,
    link: Arc<Link>,
    hub: Arc<Hub>,
    metrics: Metrics,
    instance_id: String,
    settings: Settings,
    /// Stops the stream reader.
    stop_reader: CancellationToken,
    /// Stops the reader when the store is dropped without `close` too.
    _reader_stops_on_drop: DropGuard,
    /// The committer and reader tasks.
    workers: Workers,
}

impl RedisStore {
    /// Connects (failing if Redis cannot be reached at start), brings the keys to layout 4, registers this
    /// instance, and starts the committer `setup` makes and the stream reader, each a task.
    pub async fn open(url: &str, config: &Config, instance_id: &str, setup: Setup) -> anyhow::Result<Opened> {
        let client = Client::open(url).context("parsing the Redis URL")?;
        let conn = connect(&client, RESPONSE_TIMEOUT).await?;
        let state_conn = connect(&client, STATE_READ_TIMEOUT).await?;
        let settings = Settings {
            ttl_ms: config.message_ttl.as_millis() as i64,
            retention_ms: config.consumers.retention().map_or(0, |r| r.as_millis().max(1) as i64),
            presence_timeout_ms: config.presence_timeout.as_millis() as i64,
            cleanup_batch: config.cleanup_batch,
            history_ms: config.history_retention.as_millis().min(i64::MAX as u128) as i64,
            forget_after_ms: config.forget_after().as_millis().min(i64::MAX as u128) as i64,
        };
        migrate::run(&mut conn.clone(), settings.forget_after_ms).await?;
        let (hub, metrics) = (setup.hub().clone(), setup.metrics().clone());
        let stop_reader = CancellationToken::new();
        let store = RedisStore {
            inner: Arc::new(Inner {
                conn,
                state_conn,
                link: Arc::new(Link::default()),
                hub: hub.clone(),
                metrics: metrics.clone(),
                instance_id: instance_id.to_owned(),
                settings,
                _reader_stops_on_drop: stop_reader.clone().drop_guard(),
                stop_reader,
                workers: Workers::default(),
            }),
        };
        // Registered before the instance announces itself, so peers count it from the start.
        crate::store::Store::heartbeat(&store).await.map_err(|e| anyhow::anyhow!("registering with Redis: {e}"))?;
        let Started { committer, lanes, senders } = setup.start(RedisWriter::new(store.clone()));
        store.inner.workers.task("committer", tokio::spawn(committer.run(lanes)));
        let link = store.inner.link.clone();
        let reader =
            Reader { client, hub, link, metrics, instance_id: instance_id.to_owned(), ttl_ms: settings.ttl_ms };
        let stop = store.inner.stop_reader.clone();
        store.inner.workers.task("stream reader", tokio::spawn(reader.run(stop)));
        let shared = Arc::new(store);
        Ok(Opened { store: shared.clone(), consumers: shared, committer: Box::new(senders) })
    }

    fn conn(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    /// Runs a read on the state connection, and once more if the first try found the connection broken: the
    /// state connection can sit idle through a Redis restart, and a read is safe to repeat.
    async fn read_twice<T, F, Fut>(&self, read: F) -> Result<T, BusError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match read(self.inner.state_conn.clone()).await {
            Err(error) if error.is_io_error() || error.is_connection_dropped() => {
                read(self.inner.state_conn.clone()).await.map_err(unavailable)
            }
            result => result.map_err(unavailable),
        }
    }

    /// A fresh id, offered to a script in case the store has no epoch yet (see `store_epoch` in the Lua).
    fn candidate() -> String {
        uuid::Uuid::new_v4().to_string()
    }
}

impl Settings {
    /// How long any entry is kept at most: the TTL, or the webhook's retention if longer.
    fn keep_ms(&self) -> i64 {
        self.ttl_ms.max(self.retention_ms)
    }
}

/// A reply of a shape this relay's scripts never send.
fn malformed(what: &'static str) -> BusError {
    Unavailable::UnexpectedReply(what).into()
}

/// A Redis failure as clients see it.
fn unavailable(error: redis::RedisError) -> BusError {
    StoreError::from(error).into()
}
