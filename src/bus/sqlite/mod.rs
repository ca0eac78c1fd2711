//! The bus on one shared SQLite file (WAL): N processes commit into `message_queue`, each learns of the
//! others' commits through its watcher and reads from its own cursor.
//!
//! Threads: one writer (`writer/`, group commit, the only place seq is assigned) and one watcher
//! (`watcher.rs`) per process, each with its own connection; joins and health checks use the deadpool pool
//! on tokio's blocking threads. `maintenance.rs` schedules cleanup, heartbeats and watermarks as writer jobs.

mod consumer;
mod doorbell;
mod idempotency;
pub mod identity;
mod join;
mod listing;
pub mod maintenance;
pub mod objects;
pub mod presence;
mod progress;
pub mod queries;
pub mod schema;
mod signal;
mod store;
pub mod watcher;
pub mod writer;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use deadpool_sqlite::rusqlite::Connection;
use deadpool_sqlite::{Hook, HookError, Pool, Runtime, Timeouts};

use self::doorbell::Doorbell;
use self::identity::{FileIdentity, Found};
pub use self::progress::Progress;
use self::schema::ConnSettings;
use self::watcher::{RelayedHeads, Watcher};
use self::writer::{Job, Writer, WriterSettings};
use crate::bus::lanes::{self, LaneSenders, Lanes};
use crate::bus::workers::Workers;
use crate::bus::{BusError, Publish, Store, Unavailable};
use crate::clock::now_ms;
use crate::config::{BusKind, Config};
use crate::hub::Hub;
use crate::metrics::Metrics;

/// How long a read waits for a free pool connection before it fails with `unavailable` (a storm of joins
/// of big canvases can hold all of them for a while; nothing waits forever).
const POOL_WAIT: Duration = Duration::from_secs(5);

/// WAL size (in frames; 64 MiB at 4 KiB pages) past which a checkpoint restarts the WAL.
const RESTART_WAL_FRAMES: i64 = 16 * 1024;

/// Runs `PRAGMA wal_checkpoint(MODE)`; returns (busy, frames in the WAL). Another connection checkpointing at
/// the same moment is not an error: this one simply had nothing to do (busy = 1, frames = -1).
fn wal_checkpoint(conn: &Connection, mode: &str) -> deadpool_sqlite::rusqlite::Result<(i64, i64)> {
    match conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| Ok((r.get(0)?, r.get(1)?))) {
        Err(error) if error.sqlite_error_code() == Some(deadpool_sqlite::rusqlite::ErrorCode::DatabaseBusy) => {
            Ok((1, -1))
        }
        other => other,
    }
}

/// The file as opened at start, read on the blocking thread that opened it (whose statements wait
/// `--busy-timeout`): the writer's and the watcher's connections, the file's epoch, the log head, the heads
/// of the relayed tables, and the file's identity (`None` for `--bus memory`).
struct Opened {
    writer_conn: Connection,
    watcher_conn: Connection,
    db_epoch: String,
    head: i64,
    relayed: RelayedHeads,
    file: Option<FileIdentity>,
}

impl Opened {
    /// Opens (creating and migrating) the file at `path`, on a blocking thread.
    async fn at(path: PathBuf, settings: ConnSettings) -> anyhow::Result<Opened> {
        tokio::task::spawn_blocking(move || {
            let mut writer_conn = schema::open(&path, settings)?;
            schema::migrate(&mut writer_conn)?;
            let file = match settings.memory {
                true => None,
                false => Some(FileIdentity::of(&path).context("reading the database file's identity")?),
            };
            let watcher_conn = schema::open(&path, settings)?;
            let db_epoch = queries::db_epoch(&watcher_conn).context("reading the file's epoch")?;
            let head = queries::max_id(&watcher_conn).context("reading the log head")?;
            let relayed = RelayedHeads::read(&watcher_conn).context("reading the relayed tables' heads")?;
            Ok(Opened { writer_conn, watcher_conn, db_epoch, head, relayed, file })
        })
        .await
        .context("opening the database")?
    }
}

/// Where this instance's file is (`--db`, or a private in-memory one for `--bus memory`) and how every
/// connection to it is opened.
fn storage(config: &Config, instance_id: &str) -> (PathBuf, ConnSettings) {
    let memory = config.bus == BusKind::Memory;
    let settings = ConnSettings { synchronous: config.synchronous, busy_timeout: config.busy_timeout, memory };
    let path = match memory {
        true => PathBuf::from(schema::memory_uri(instance_id)),
        false => config.db.clone(),
    };
    (path, settings)
}

/// The read pool: joins, replays, the API's reads and health checks, each on a tokio blocking thread.
fn read_pool(path: PathBuf, settings: ConnSettings) -> anyhow::Result<Pool> {
    deadpool_sqlite::Config::new(path)
        .builder(Runtime::Tokio1)
        .context("configuring the read pool")?
        .max_size(4)
        .timeouts(Timeouts { wait: Some(POOL_WAIT), create: Some(POOL_WAIT), recycle: Some(POOL_WAIT) })
        .post_create(Hook::async_fn(move |conn, _| {
            Box::pin(async move {
                conn.interact(move |conn| schema::configure(conn, settings))
                    .await
                    .map_err(|e| HookError::message(e.to_string()))?
                    .map_err(HookError::Backend)
            })
        }))
        .build()
        .context("building the read pool")
}

/// Starts the writer, the watcher and (with peer wake-ups) the doorbell, each on a thread of its own; the
/// writer's and the watcher's statements wait `busy_timeout` at most for another process's lock.
fn start_threads(
    busy_timeout: Duration,
    writer: Writer,
    lanes: Lanes<Job>,
    watcher: Watcher,
    doorbell: Option<&Doorbell>,
    progress: &Arc<Progress>,
    metrics: &Metrics,
) -> std::io::Result<Workers> {
    let workers = Workers::default();
    let thread = |name: &str| std::thread::Builder::new().name(name.into());
    let writer = move || {
        schema::use_busy_timeout(busy_timeout);
        writer.run(lanes)
    };
    let watcher = move || {
        schema::use_busy_timeout(busy_timeout);
        watcher.run()
    };
    workers.thread("writer", thread("relay-writer").spawn(writer)?);
    workers.thread("watcher", thread("relay-watcher").spawn(watcher)?);
    if let Some(doorbell) = doorbell {
        workers.helper_thread("doorbell", doorbell.listen(progress.clone(), metrics.doorbells_received.clone())?);
    }
    Ok(workers)
}

/// The SQLite bus of one process. Cheap to clone.
#[derive(Clone)]
pub struct SqliteBus {
    inner: Arc<Inner>,
}

struct Inner {
    /// Read connections for joins and health checks.
    pool: Pool,
    /// How long a statement waits for another process's write lock (`--busy-timeout`).
    busy_timeout: Duration,
    /// The writer's two lanes: the queue of messages and the urgent lane (see `bus/lanes.rs`).
    writer: LaneSenders<Job>,
    progress: Arc<Progress>,
    hub: Arc<Hub>,
    /// The file's random id, part of every epoch.
    db_epoch: String,
    ttl_ms: i64,
    max_resume: u64,
    /// `--bus memory`: readers block the writer (no WAL), which changes a join's lock order.
    memory: bool,
    doorbell: Option<Doorbell>,
    presence_timeout_ms: i64,
    /// An instance silent for longer than this is dead: the presence timeout less one heartbeat interval, so
    /// a survivor checking every heartbeat interval expires it within the presence timeout of its death.
    dead_after_ms: i64,
    instance_id: String,
    /// The writer, watcher and doorbell threads.
    workers: Workers,
    /// The file opened, to tell whether it was replaced; `None` for `--bus memory`.
    file: Option<FileIdentity>,
}

impl SqliteBus {
    /// Opens (creating and migrating) the shared file and starts the writer and watcher threads.
    pub async fn open(
        config: &Config,
        instance_id: &str,
        listen: &str,
        hub: Arc<Hub>,
        metrics: Metrics,
    ) -> anyhow::Result<Self> {
        let (path, settings) = storage(config, instance_id);
        let memory = settings.memory;
        let Opened { writer_conn, watcher_conn, db_epoch, head, relayed, file } =
            Opened::at(path.clone(), settings).await?;
        let pool = read_pool(path, settings)?;

        let progress = Arc::new(Progress::default());
        progress.advance_cursor(head);
        progress.polled(now_ms());
        let (writer_tx, writer_rx) = lanes::lanes(config.writer_queue);
        // A private in-memory file has no peers to ring.
        let doorbell = match config.peer_wakeup && !memory {
            true => Some(Doorbell::bind().context("binding the peer wake-up socket on 127.0.0.1")?),
            false => None,
        };
        let writer = Writer::new(
            writer_conn,
            hub.clone(),
            progress.clone(),
            metrics.clone(),
            WriterSettings::new(config, instance_id, listen, &db_epoch),
            doorbell.clone(),
            file.clone(),
        );
        let watcher = Watcher::new(
            watcher_conn,
            hub.clone(),
            progress.clone(),
            metrics.clone(),
            config,
            instance_id.to_owned(),
            relayed,
        );
        let workers =
            start_threads(settings.busy_timeout, writer, writer_rx, watcher, doorbell.as_ref(), &progress, &metrics)?;
        let bus = SqliteBus {
            inner: Arc::new(Inner {
                pool,
                writer: writer_tx,
                progress,
                hub,
                db_epoch,
                ttl_ms: config.message_ttl.as_millis() as i64,
                max_resume: config.max_resume,
                memory,
                presence_timeout_ms: config.presence_timeout.as_millis() as i64,
                dead_after_ms: config.presence_timeout.saturating_sub(config.heartbeat_interval).as_millis() as i64,
                instance_id: instance_id.to_owned(),
                busy_timeout: settings.busy_timeout,
                doorbell,
                workers,
                file,
            }),
        };
        // Registered (committed) before the instance announces itself, so peers count it from the start.
        bus.job(Job::Heartbeat(None)).await?;
        bus.flush().await?;
        Ok(bus)
    }

    /// Queues a maintenance job: the ones that must not wait behind messages (heartbeats, cursor batches) on
    /// the urgent lane, the others behind what is queued.
    pub async fn job(&self, job: Job) -> Result<(), BusError> {
        let urgent = job.is_urgent();
        self.inner.writer.job(job, urgent).await
    }

    /// The writer, watcher or doorbell thread that has ended, if one has: the instance cannot go on.
    pub fn stopped_worker(&self) -> Option<&'static str> {
        self.inner.workers.stopped()
    }

    /// Disconnects, in presence, every connection of instances that stopped heartbeating (or stopped cleanly
    /// with connections left over). Several survivors may do this at once: each disconnect is logged once.
    pub async fn expire_dead_connections(&self) -> Result<usize, BusError> {
        let (own, dead_before) = (self.inner.instance_id.clone(), now_ms() - self.inner.dead_after_ms);
        let orphans = self.read(move |conn| presence::dead_connections(conn, &own, dead_before)).await?;
        for orphan in &orphans {
            let (canvas, user, name) = (orphan.canvas.clone(), orphan.user.clone(), orphan.name.clone());
            self.publish(Publish::expiry(canvas, user, name, orphan.conn, self.inner.dead_after_ms), true).await?;
        }
        if !orphans.is_empty() {
            tracing::info!(connections = orphans.len(), "expiring connections of instances that stopped heartbeating");
        }
        Ok(orphans.len())
    }

    /// Runs a read on a pool connection.
    pub(super) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> deadpool_sqlite::rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, BusError> {
        let conn = self.inner.pool.get().await.map_err(|e| Unavailable::Sqlite(format!("no connection: {e}")))?;
        let busy_timeout = self.inner.busy_timeout;
        conn.interact(move |conn| {
            schema::use_busy_timeout(busy_timeout);
            f(conn)
        })
        .await
        .map_err(|_| Unavailable::ReadLost)?
        .map_err(|e| writer::unavailable(&e).into())
    }

    /// What the database path names now: the opened file, nothing, or another file (see `identity.rs`).
    pub fn file_found(&self) -> Found {
        self.inner.file.as_ref().map_or(Found::Same, FileIdentity::check)
    }

    /// How many transactions this process's writer has committed; see [`SqliteBus::checkpoint`].
    pub fn writes(&self) -> u64 {
        self.inner.progress.writes.load(Ordering::Relaxed)
    }

    /// Keeps the -wal file bounded, off the commit path (on a pool connection). A PASSIVE checkpoint copies
    /// committed frames into the database file without blocking anyone, but under continuous commits the WAL
    /// is never fully copied at the moment a writer begins, so SQLite never starts it over and it grows.
    /// When it passes `RESTART_WAL_FRAMES`, a RESTART checkpoint holds the write lock just long enough to
    /// copy the frames since the last passive one, so the next commit writes from the start of the file again
    /// (and `journal_size_limit` trims it). It does not wait: a reader still on an older snapshot (a join
    /// reading a big state), or another process checkpointing, makes it a no-op until the next tick, rather
    /// than hold every writer behind that read.
    pub async fn checkpoint(&self) -> Result<(), BusError> {
        self.read(|conn| {
            let (_, frames) = wal_checkpoint(conn, "PASSIVE")?;
            if frames >= RESTART_WAL_FRAMES {
                // RESTART holds the write lock while it waits for readers: never behind a long read.
                let started = std::time::Instant::now();
                let (busy, frames_after) = schema::without_waiting(conn, |conn| wal_checkpoint(conn, "RESTART"))??;
                tracing::debug!(frames, busy, frames_after, took = ?started.elapsed(), "WAL restart checkpoint");
            }
            Ok(())
        })
        .await
    }
}
