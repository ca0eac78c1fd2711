//! The one writer of this process: a dedicated thread that owns the only write connection and runs the
//! committer there (`core::committer`: group commit, one `BEGIN IMMEDIATE` transaction per round), and
//! between rounds the store's own small writes ([`jobs`](super::jobs)): so a process never has two of its
//! own connections competing for the file's write lock.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use deadpool_sqlite::rusqlite::{params, Connection, Error as SqlError, TransactionBehavior};

use super::commit::{self, Stamp};
use super::doorbell::Doorbell;
use super::identity::FileIdentity;
use super::jobs::WriterJob;
use super::{describe, unavailable, Progress};
use crate::clock::now_ms;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::protocol::CanvasId;
use crate::store::records::AfterDelivery;
use crate::store::records::Batch;
use crate::store::{epoch, BusError, CanvasReader, Commit, ResetDone};

/// Fixed settings of the writer.
#[derive(Debug, Clone)]
pub struct WriterSettings {
    pub instance_id: String,
    pub listen: String,
    /// The file's random id: epochs are `{db_epoch}-{generation}`.
    pub db_epoch: String,
    pub ttl_ms: i64,
    /// How long an entry is kept at least (`purge_at`) until a webhook delivers it: `--webhook-retention`
    /// with a webhook, else the TTL.
    pub keep_ms: i64,
    /// `--history-retention` in ms (0: only what joins need is kept).
    pub history_ms: i64,
    /// How long after its last commit an empty canvas may be forgotten (a fork with no objects gets it).
    pub forget_after_ms: i64,
    /// Peers whose heartbeat is older than this are not rung, and count as gone.
    pub peer_timeout_ms: i64,
    /// Whether commits reach this process's rooms at once (`--local-broadcast`); if not, the watcher reads
    /// this process's own rows back like any other.
    pub local_broadcast: bool,
}

impl WriterSettings {
    /// The writer's settings for instance `instance_id`, listening on `listen`, on the file of `db_epoch`.
    pub fn new(config: &Config, instance_id: &str, listen: &str, db_epoch: &str) -> Self {
        WriterSettings {
            instance_id: instance_id.to_owned(),
            listen: listen.to_owned(),
            db_epoch: db_epoch.to_owned(),
            ttl_ms: config.message_ttl.as_millis() as i64,
            keep_ms: config.keep().as_millis() as i64,
            history_ms: config.history_retention.as_millis().min(i64::MAX as u128) as i64,
            forget_after_ms: config.forget_after().as_millis().min(i64::MAX as u128) as i64,
            peer_timeout_ms: config.presence_timeout.as_millis() as i64,
            local_broadcast: config.local_broadcast,
        }
    }
}

/// The write side of the shared file.
pub struct SqliteWriter {
    /// The process's only write connection.
    pub(super) conn: Connection,
    pub(super) progress: Arc<Progress>,
    pub(super) metrics: Metrics,
    pub(super) settings: WriterSettings,
    /// Rings the peers after commits they must deliver; `None` with `--peer-wakeup false`.
    pub(super) doorbell: Option<Doorbell>,
    /// The doorbells of live peers, refreshed with every heartbeat.
    pub(super) peers: Vec<SocketAddr>,
    /// The file this writer opened, checked before every commit; `None` for `--bus memory`.
    pub(super) file: Option<FileIdentity>,
    /// The read pool, for the committer's loads of canvases (off the writer's thread).
    pub(super) reads: super::PoolReads,
}

impl SqliteWriter {
    /// One write transaction, committed only while `--db` still names the file this writer opened; its
    /// outcome is what `/health` reports.
    pub(super) fn write<T>(&mut self, f: impl FnOnce(&Connection) -> Result<T, SqlError>) -> Result<T, SqlError> {
        let changes_before = self.conn.total_changes();
        let result = (|| {
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let value = f(&tx)?;
            self.file.as_ref().map_or(Ok(()), FileIdentity::ensure_same)?;
            tx.commit()?;
            Ok(value)
        })();
        match &result {
            // A transaction that changed no row wrote nothing to disk, so it proves nothing about a storage
            // error (a DELETE of no rows commits fine on a full or read-only disk).
            Ok(_) if self.conn.total_changes() > changes_before => self.progress.write_succeeded(),
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "a write to the database failed");
                self.progress.write_failed(now_ms(), &describe(error));
            }
        }
        result
    }

    /// Tells the other instances to read now (see `doorbell`).
    pub(super) fn ring_peers(&self) {
        if let Some(doorbell) = &self.doorbell {
            self.metrics.doorbells_rung.increment(doorbell.ring(&self.peers) as u64);
        }
    }
}

#[async_trait]
impl Commit for SqliteWriter {
    type Job = WriterJob;

    /// The round in one `BEGIN IMMEDIATE` transaction (see `commit.rs`). Runs on the writer's thread: it
    /// blocks on the file, as this thread is for.
    async fn commit(&mut self, batch: &mut dyn Batch) -> Result<i64, BusError> {
        let now = now_ms();
        let settings = &self.settings;
        let stamp = Stamp { now, instance: &settings.instance_id, ttl_ms: settings.ttl_ms, keep_ms: settings.keep_ms };
        let file = &self.file;
        let result = (|| {
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let applied =
                commit::apply(&tx, batch, stamp).and_then(|()| file.as_ref().map_or(Ok(()), FileIdentity::ensure_same));
            if let Err(error) = applied {
                batch.failed(); // before the rollback: nothing placed may be taken for committed
                return Err(error);
            }
            tx.commit().inspect_err(|_| batch.failed())
        })();
        match result {
            Ok(()) => {
                self.progress.write_succeeded();
                Ok(now)
            }
            Err(error) => {
                self.progress.write_failed(now, &describe(&error));
                Err(unavailable(error).into())
            }
        }
    }

    fn reader(&self) -> Arc<dyn CanvasReader> {
        Arc::new(self.reads.clone())
    }

    /// Bumps the canvas's generation (creating its head if it had none, so even a canvas nobody wrote to
    /// gets a new epoch), keeps its connections, makes its old entries invisible to clients (at 0, so that
    /// no clock step shows them again; the event stream still reads them until their TTL, and the webhook,
    /// whose next batch of the canvas is the reset, stops holding them), drops its snapshots and idempotency
    /// keys, and logs the new generation's marker at seq 0.
    async fn reset(&mut self, canvas: &CanvasId) -> Result<ResetDone, BusError> {
        let now = now_ms();
        let settings = self.settings.clone();
        let done = self.write(|tx| {
            let generation = commit::next_generation(tx)?;
            let epoch = epoch(&settings.db_epoch, generation);
            tx.prepare_cached(
                "INSERT INTO canvases (canvas_id, last_seq, generation, created_at, updated_at, gen_at)
                 VALUES (?1, 0, ?2, ?3, ?3, ?3)
                 ON CONFLICT (canvas_id) DO UPDATE SET generation = excluded.generation, last_seq = 0,
                     rev = rev + 1, state_seq = 0, state_bytes = 0, objects = 0, snap_seq = 0, pruned_seq = 0,
                     hist_seq = 0, gen_at = excluded.updated_at, thinned_at = 0, updated_at = excluded.updated_at",
            )?
            .execute(params![canvas.as_str(), generation as i64, now])?;
            tx.prepare_cached("UPDATE message_queue SET expires_at = 0, purge_at = expires_at WHERE canvas_id = ?1")?
                .execute([canvas.as_str()])?;
            tx.prepare_cached("DELETE FROM snapshots WHERE canvas_id = ?1")?.execute([canvas.as_str()])?;
            tx.prepare_cached("DELETE FROM idempotency_keys WHERE canvas_id = ?1")?.execute([canvas.as_str()])?;
            let data = serde_json::json!({ "epoch": epoch }).to_string();
            tx.prepare_cached(
                "INSERT INTO message_queue (canvas_id, seq, message_type, payload, sender, origin_instance,
                     created_at, expires_at, generation, purge_at)
                 VALUES (?1, 0, 'reset', ?2, 'server', ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                canvas.as_str(),
                data,
                settings.instance_id,
                now,
                now + settings.ttl_ms,
                generation as i64,
                now + settings.keep_ms
            ])?;
            Ok(ResetDone { generation, epoch, id: tx.last_insert_rowid() })
        });
        let done = done.map_err(|error| BusError::from(unavailable(error)))?;
        self.ring_peers();
        Ok(done)
    }

    async fn run(&mut self, job: WriterJob) {
        self.run_job(job);
    }

    /// Moves the read cursor past this process's own rows when nothing foreign is between, wakes the watcher
    /// if a room waits on rows another process committed before ours, and rings the peers. The cursor moves
    /// only once every row of the batch has been offered: it promises that every row at or below it has
    /// been (the watcher's hole check relies on it). A row a room could not take (`read_back`) must be read
    /// back, so the cursor must not skip it.
    fn delivered(&mut self, delivered: AfterDelivery) {
        if !self.settings.local_broadcast {
            self.progress.signal.wake(delivered.waiting);
            if delivered.ids.is_some() {
                self.ring_peers();
            }
            return;
        }
        if let (Some((first, last)), false) = (delivered.ids, delivered.read_back) {
            self.progress.skip_own_rows(first, last);
        }
        if delivered.waiting.is_empty() {
            self.progress.signal.poke();
        } else {
            self.progress.signal.wake(delivered.waiting);
        }
        // After the local fan-out: on a busy host the woken peer can take this core, and the local clients
        // are the ones waiting for an ack.
        if delivered.ids.is_some() {
            self.ring_peers();
        }
    }
}
