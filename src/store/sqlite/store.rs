//! The shared file as a [`Store`]: reads run in one transaction on a pool connection; writes are the
//! writer's jobs (`jobs.rs`), run between the committer's rounds.

use async_trait::async_trait;
use bytes::Bytes;

use super::history::{self, HistoryJob};
use super::jobs::WriterJob;
use super::{queries, reads, SqliteStore};
use crate::clock::now_ms;
use crate::protocol::{CanvasId, ConnId, UserId};
use crate::store::figures::{BusFigures, StoreFigures};
use crate::store::history::{AtRead, Fork, HistoryDue, Named, Thinning, Version};
use crate::store::records::{ConnRow, Head, LogEntry};
use crate::store::{epoch, BusError, CanvasRead, Instance, Post, Store, Want, Whose};

#[async_trait]
impl Store for SqliteStore {
    fn instance_id(&self) -> &str {
        &self.inner.instance_id
    }

    fn store_epoch(&self) -> String {
        self.inner.db_epoch.clone()
    }

    async fn read_canvas(&self, canvas: &CanvasId, want: Want) -> Result<CanvasRead, BusError> {
        crate::store::CanvasReader::read_canvas(&self.inner.reads, canvas, want).await
    }

    async fn read_log(
        &self,
        canvas: &CanvasId,
        generation: u64,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<LogEntry>, BusError> {
        let canvas = canvas.clone();
        self.read(move |conn| reads::log(conn, &canvas, generation, after, upto, limit)).await
    }

    async fn heads(&self, after: Option<&CanvasId>, limit: usize) -> Result<Vec<(CanvasId, Head)>, BusError> {
        let after = after.cloned();
        self.read(move |conn| reads::heads(conn, after.as_ref(), limit)).await
    }

    async fn put_snapshot(&self, canvas: &CanvasId, generation: u64, seq: u64, json: Bytes) -> Result<bool, BusError> {
        let canvas = canvas.clone();
        self.ask(|reply| WriterJob::PutSnapshot { canvas, generation, seq, json, reply }).await
    }

    async fn read_at(&self, canvas: &CanvasId, at: u64) -> Result<AtRead, BusError> {
        let canvas = canvas.clone();
        self.read(move |conn| {
            let tx = conn.transaction()?;
            history::read_at(&tx, &canvas, at)
        })
        .await
    }

    async fn versions(
        &self,
        canvas: &CanvasId,
        generation: u64,
        before: u64,
        limit: usize,
    ) -> Result<Vec<Version>, BusError> {
        let canvas = canvas.clone();
        self.read(move |conn| history::versions(conn, &canvas, generation, before, limit)).await
    }

    async fn name_version(
        &self,
        canvas: &CanvasId,
        generation: u64,
        seq: u64,
        name: &str,
        json: Bytes,
    ) -> Result<Named, BusError> {
        let (canvas, name, at) = (canvas.clone(), name.to_owned(), (generation, seq));
        self.ask(|reply| WriterJob::History(HistoryJob::Name { canvas, at, name, json, reply })).await
    }

    async fn unname_version(&self, canvas: &CanvasId, generation: u64, seq: u64) -> Result<bool, BusError> {
        let (canvas, at) = (canvas.clone(), (generation, seq));
        self.ask(|reply| WriterJob::History(HistoryJob::Unname { canvas, at, reply })).await
    }

    async fn fork(&self, to: &CanvasId, fork: Fork) -> Result<Option<String>, BusError> {
        let to = to.clone();
        let generation = self.ask(|reply| WriterJob::History(HistoryJob::Fork { to, fork, reply })).await?;
        Ok(generation.map(|generation| epoch(&self.inner.db_epoch, generation)))
    }

    async fn history_due(&self, before: i64, limit: usize) -> Result<Vec<HistoryDue>, BusError> {
        self.read(move |conn| {
            let tx = conn.transaction()?;
            history::history_due(&tx, before, limit)
        })
        .await
    }

    async fn thin(&self, canvas: &CanvasId, generation: u64, thinning: Thinning) -> Result<(), BusError> {
        let canvas = canvas.clone();
        self.ask(|reply| WriterJob::History(HistoryJob::Thin { canvas, generation, thinning, reply })).await
    }

    async fn stale(&self, before: i64, limit: usize) -> Result<Vec<CanvasId>, BusError> {
        self.read(move |conn| reads::stale(conn, before, limit)).await
    }

    async fn connections(&self, whose: Whose) -> Result<Vec<(CanvasId, ConnRow)>, BusError> {
        self.read(move |conn| reads::connections(conn, &whose)).await
    }

    async fn save_states(&self, states: Vec<(CanvasId, ConnId, Option<String>)>) -> Result<(), BusError> {
        self.ask(|reply| WriterJob::SaveStates(states, reply)).await
    }

    async fn heartbeat(&self) -> Result<Vec<Instance>, BusError> {
        self.ask(WriterJob::Heartbeat).await
    }

    async fn post(&self, post: Post) -> Result<(), BusError> {
        self.ask(|reply| WriterJob::Post(post, reply)).await
    }

    async fn blocked(&self, canvas: &CanvasId, user: &UserId) -> Result<Option<i64>, BusError> {
        let (canvas, user) = (canvas.clone(), user.clone());
        self.read(move |conn| reads::blocked_until(conn, &canvas, &user, now_ms())).await
    }

    /// One small batch (one short transaction) at a time until a batch comes back short, so the write lock
    /// is never held for long and other writers interleave between batches.
    async fn clean_up(&self) -> Result<usize, BusError> {
        let limit = self.inner.cleanup_batch;
        let forget_instances_before = now_ms() - self.inner.forget_instances_after_ms;
        let mut total = 0;
        loop {
            let deleted = self.ask(|reply| WriterJob::CleanUp { limit, forget_instances_before, reply }).await?;
            total += deleted;
            if deleted < limit as usize {
                return Ok(total);
            }
        }
    }

    async fn figures(&self) -> Result<BusFigures, BusError> {
        let now = now_ms();
        let live_after = now - self.inner.presence_timeout_ms;
        let progress = &self.inner.progress;
        let cursor = progress.cursor();
        let (file, unread_at) = self
            .read(move |conn| {
                Ok((queries::file_figures(conn, now, live_after)?, queries::first_unread_at(conn, cursor)?))
            })
            .await?;
        let head_id = file.head_id;
        let (last_error, last_error_age_ms) = progress.last_error.report(now);
        Ok(BusFigures {
            bus: if self.inner.memory { "memory" } else { "sqlite" },
            poll_lag_rows: (head_id - cursor).max(0),
            last_poll_age_ms: (now - progress.last_poll_ms.load(std::sync::atomic::Ordering::Acquire)).max(0),
            peer_instances: (file.live_instances - 1).max(0),
            oldest_unread_age_ms: unread_at.map(|at| (now - at).max(0)),
            writer_queue_depth: 0,
            writer_queue_capacity: 0,
            last_error,
            last_error_age_ms,
            cleanup_overdue_ms: Some(file.cleanup_overdue_ms),
            storage: StoreFigures::of(&file),
        })
    }

    fn fatal(&self) -> Option<String> {
        if let Some(worker) = self.inner.workers.stopped() {
            return Some(format!(
                "the {worker} thread stopped unexpectedly; stopping so that a restart brings it back"
            ));
        }
        // The log position, epochs and presence of this process belong to the old file: only a fresh start
        // can join the new one. (A deleted file only makes commits fail until the file is back.)
        let replaced = self.inner.file.as_ref().is_some_and(|file| file.check() == super::identity::Found::Other);
        replaced
            .then(|| "the database file was replaced by another file; stopping so that a restart opens it".to_owned())
    }

    /// Saves the watermarks and deregisters this instance: queued before the committer's stop, so they run
    /// before its write connection closes.
    async fn closing(&self) {
        let marks = self.inner.hub.take_watermarks();
        if !marks.is_empty() {
            let _ = self.job(WriterJob::Watermarks(marks)).await;
        }
        let _ = self.job(WriterJob::Deregister).await;
    }

    /// After the committer stopped: the watcher and the doorbell stop, the threads are joined, the pool
    /// closes, and a replaced file's stale `-wal` and `-shm` are removed.
    async fn close(&self) {
        self.inner.stop.cancel();
        self.inner.progress.signal.stop();
        if let Some(doorbell) = &self.inner.doorbell {
            doorbell.ring_self();
        }
        self.inner.workers.join_all().await;
        self.inner.reads.close();
        if let Some(file) = self.inner.file.as_ref().filter(|file| file.check() == super::identity::Found::Other) {
            file.remove_stale_companions();
        }
    }
}
