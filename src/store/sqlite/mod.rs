//! The store on one shared SQLite file (WAL): N processes commit into `message_queue`, each learns of the
//! others' commits through its watcher and reads from its own cursor. `--bus memory` runs the same code on
//! SQLite's in-memory memdb VFS (one process, no file).
//!
//! Threads: one writer per process (`writer.rs`), on which the committer runs, with the only write
//! connection (every commit is one `BEGIN IMMEDIATE` transaction: `commit.rs`; the store's own writes are
//! jobs between commits: `jobs.rs`, `consumer_jobs.rs`); one watcher (`watcher.rs`) with its own
//! connection; and, with peer wake-ups, the doorbell (`doorbell.rs`). Reads (`reads.rs`, `queries.rs`) run on
//! the deadpool pool on tokio's blocking threads. `maintenance.rs` runs the file's own loops (WAL
//! checkpoints, watermarks).

mod commit;
mod consumer;
mod consumer_jobs;
mod doorbell;
pub(super) mod history;
pub mod identity;
mod jobs;
pub mod maintenance;
mod migrate_11;
mod progress;
pub mod queries;
mod reads;
mod refusal;
pub mod schema;
mod signal;
mod store;
pub mod watcher;
mod writer;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use deadpool_sqlite::rusqlite::Connection;
use deadpool_sqlite::{Hook, HookError, Pool, Runtime, Timeouts};
use tokio_util::sync::CancellationToken;

use self::doorbell::Doorbell;
use self::identity::FileIdentity;
use self::jobs::WriterJob;
pub use self::progress::Progress;
pub(crate) use self::refusal::{describe, unavailable};
use self::schema::ConnSettings;
use self::watcher::{RelayedHeads, Watcher};
use self::writer::{SqliteWriter, WriterSettings};
use crate::clock::now_ms;
use crate::config::{BusKind, Config};
use crate::core::committer::{self, Committer, Setup, Started};
use crate::core::lanes::{LaneSenders, Lanes};
use crate::core::Opened;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::protocol::CanvasId;
use crate::store::workers::Workers;
use crate::store::{BusError, CanvasRead, CanvasReader, StoreError, Unavailable, Want};

/// How long a read waits for a free pool connection before it fails with `unavailable` (a storm of joins
/// of big canvases can hold all of them for a while; nothing waits forever).
const POOL_WAIT: Duration = Duration::from_secs(5);

/// The file as opened at start, read on the blocking thread that opened it (whose statements wait
/// `--busy-timeout`): the writer's and the watcher's connections, the file's epoch, the log head, the heads
/// of the relayed tables, and the file's identity (`None` for `--bus memory`).
struct OpenedFile {
    writer_conn: Connection,
    watcher_conn: Connection,
    db_epoch: String,
    head: i64,
    relayed: RelayedHeads,
    file: Option<FileIdentity>,
}

impl OpenedFile {
    /// Opens (creating and migrating) the file at `path`, on a blocking thread.
    async fn at(path: PathBuf, settings: ConnSettings) -> anyhow::Result<OpenedFile> {
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
            Ok(OpenedFile { writer_conn, watcher_conn, db_epoch, head, relayed, file })
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

/// The read pool and how long its statements wait for another process's write lock (`--busy-timeout`):
/// what the store's reads and the committer's loads of canvases share.
#[derive(Clone)]
pub(super) struct PoolReads {
    pool: Pool,
    busy_timeout: Duration,
}

impl PoolReads {
    pub fn new(pool: Pool, busy_timeout: Duration) -> Self {
        PoolReads { pool, busy_timeout }
    }

    /// Runs `f` on a pool connection, on a blocking thread.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> deadpool_sqlite::rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, BusError> {
        let conn = self.pool.get().await.map_err(StoreError::from)?;
        let busy_timeout = self.busy_timeout;
        conn.interact(move |conn| {
            schema::use_busy_timeout(busy_timeout);
            f(conn)
        })
        .await
        .map_err(|_| Unavailable::ReadLost)?
        .map_err(|error| {
            tracing::warn!(%error, "a read of the database failed");
            unavailable(error).into()
        })
    }

    pub fn close(&self) {
        self.pool.close();
    }
}

#[async_trait::async_trait]
impl CanvasReader for PoolReads {
    async fn read_canvas(&self, canvas: &CanvasId, want: Want) -> Result<CanvasRead, BusError> {
        let canvas = canvas.clone();
        self.run(move |conn| {
            let tx = conn.transaction()?;
            reads::canvas(&tx, &canvas, want)
        })
        .await
    }
}

/// Starts the writer (running the committer), the watcher and (with peer wake-ups) the doorbell, each on a
/// thread of its own; their statements wait `busy_timeout` at most for another process's lock. The writer
/// runs the committer's loop on a small current-thread runtime of its own: its store blocks on the file, as
/// that thread is for.
fn start_threads(
    busy_timeout: Duration,
    (committer, lanes): (Committer<SqliteWriter>, Lanes<committer::Job<WriterJob>>),
    watcher: Watcher,
    doorbell: Option<&Doorbell>,
    progress: &Arc<Progress>,
    metrics: &Metrics,
) -> std::io::Result<Workers> {
    let workers = Workers::default();
    let thread = |name: &str| std::thread::Builder::new().name(name.into());
    let writer = move || {
        schema::use_busy_timeout(busy_timeout);
        match tokio::runtime::Builder::new_current_thread().enable_time().build() {
            Ok(runtime) => runtime.block_on(committer.run(lanes)),
            // The writer ends at once, which stops the instance (see `core/workers.rs`).
            Err(error) => tracing::error!(%error, "the writer could not build its runtime"),
        }
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

/// The SQLite store of one process. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Read connections for joins, the API, health checks and the committer's loads.
    reads: PoolReads,
    /// The committer's lanes, where this store's own writes go as jobs (one write connection per process).
    writer: LaneSenders<committer::Job<WriterJob>>,
    progress: Arc<Progress>,
    hub: Arc<Hub>,
    /// The file's random id, part of every epoch.
    db_epoch: String,
    /// `--bus memory`: readers block the writer (no WAL), and there is no file to check or checkpoint.
    memory: bool,
    doorbell: Option<Doorbell>,
    presence_timeout_ms: i64,
    /// Instances silent for this long are forgotten (with their watermarks).
    forget_instances_after_ms: i64,
    /// `--cleanup-batch`: rows deleted per cleanup transaction.
    cleanup_batch: u32,
    instance_id: String,
    /// The writer, watcher and doorbell threads.
    workers: Workers,
    /// The file opened, to tell whether it was replaced; `None` for `--bus memory`.
    file: Option<FileIdentity>,
    /// Stops the file's own loops (`maintenance.rs`).
    stop: CancellationToken,
}

/// Dead instances are forgotten (with their watermarks) after this many presence timeouts.
const FORGET_AFTER_TIMEOUTS: i64 = 60;

impl SqliteStore {
    /// Opens (creating and migrating) the shared file, starts the writer with the committer `setup` makes,
    /// the watcher and the file's own loops, and registers this instance.
    pub async fn open(config: &Config, instance_id: &str, listen: &str, setup: Setup) -> anyhow::Result<Opened> {
        let (path, settings) = storage(config, instance_id);
        let memory = settings.memory;
        let OpenedFile { writer_conn, watcher_conn, db_epoch, head, relayed, file } =
            OpenedFile::at(path.clone(), settings).await?;
        let reads = PoolReads::new(read_pool(path, settings)?, settings.busy_timeout);
        let (hub, metrics) = (setup.hub().clone(), setup.metrics().clone());

        let progress = Arc::new(Progress::default());
        progress.advance_cursor(head);
        progress.polled(now_ms());
        // A private in-memory file has no peers to ring.
        let doorbell = match config.peer_wakeup && !memory {
            true => Some(Doorbell::bind().context("binding the peer wake-up socket on 127.0.0.1")?),
            false => None,
        };
        let writer = SqliteWriter {
            conn: writer_conn,
            progress: progress.clone(),
            metrics: metrics.clone(),
            settings: WriterSettings::new(config, instance_id, listen, &db_epoch),
            doorbell: doorbell.clone(),
            peers: Vec::new(),
            file: file.clone(),
            reads: reads.clone(),
        };
        let Started { committer, lanes, senders } = setup.start(writer);
        let watcher = Watcher::new(
            watcher_conn,
            hub.clone(),
            progress.clone(),
            metrics.clone(),
            config,
            instance_id.to_owned(),
            relayed,
        );
        let threads = (committer, lanes);
        let workers = start_threads(settings.busy_timeout, threads, watcher, doorbell.as_ref(), &progress, &metrics)?;
        let store = SqliteStore {
            inner: Arc::new(Inner {
                reads,
                writer: senders.clone(),
                progress,
                hub,
                db_epoch,
                memory,
                doorbell,
                presence_timeout_ms: config.presence_timeout.as_millis() as i64,
                forget_instances_after_ms: config.presence_timeout.as_millis() as i64 * FORGET_AFTER_TIMEOUTS,
                cleanup_batch: config.cleanup_batch,
                instance_id: instance_id.to_owned(),
                workers,
                file,
                stop: CancellationToken::new(),
            }),
        };
        // Registered (committed) before the instance announces itself, so peers count it from the start.
        crate::store::Store::heartbeat(&store).await?;
        tokio::spawn(maintenance::run(store.clone(), config.clone(), store.inner.stop.clone()));
        let store = Arc::new(store);
        Ok(Opened { store: store.clone(), consumers: store, committer: Box::new(senders) })
    }

    /// Queues one of the file's own writes: the ones that must not wait behind messages (heartbeats, cursor
    /// batches, leases) on the urgent lane, the others behind what is queued.
    async fn job(&self, job: WriterJob) -> Result<(), BusError> {
        let urgent = job.is_urgent();
        self.inner.writer.job(committer::Job::Store(job), urgent).await
    }

    /// Queues a job and waits for its reply.
    async fn ask<T>(&self, job: impl FnOnce(jobs::Reply<T>) -> WriterJob) -> Result<T, BusError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.job(job(reply)).await?;
        answer.await.map_err(|_| BusError::ShuttingDown)?
    }

    /// Runs a read on a pool connection.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> deadpool_sqlite::rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, BusError> {
        self.inner.reads.run(f).await
    }

    /// How many transactions this process's writer has committed (a checkpoint is due only after one).
    pub fn writes(&self) -> u64 {
        self.inner.progress.writes.load(Ordering::Relaxed)
    }
}
