//! The SQLite file as a [`Store`]: publishes and the API's writes go to the writer thread (`writer/`), reads
//! run in one transaction on a pool connection, and the watcher brings other processes' commits in.

use std::sync::atomic::Ordering;

use async_trait::async_trait;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::identity::Found;
use super::writer::Job;
use super::{join, listing, maintenance, presence, queries, SqliteBus};
use crate::bus::views::StorageFigures;
use crate::bus::{
    BusError, BusFigures, CanvasLog, CanvasPage, Publish, ReadObjects, Snapshot, Store, TryPublish, UserPresence,
};
use crate::clock::now_ms;
use crate::config::Config;
use crate::cursors::CursorBatch;
use crate::hub::Recipient;
use crate::protocol::{CanvasId, Resume, UserId};

#[async_trait]
impl Store for SqliteBus {
    /// Queues a logged message for the writer, on its queue or (`urgent`) ahead of it. Waits when that lane
    /// is full (back-pressure).
    async fn publish(&self, publish: Publish, urgent: bool) -> Result<(), BusError> {
        self.inner.writer.publish(publish, urgent).await
    }

    /// Queues a logged message if the writer's queue has room now.
    fn try_publish(&self, publish: Publish) -> Result<(), TryPublish> {
        self.inner.writer.try_publish(publish)
    }

    /// Returns once everything queued before the call is committed.
    async fn flush(&self) -> Result<(), BusError> {
        let (done, committed) = oneshot::channel();
        self.job(Job::Barrier(done)).await?;
        committed.await.map_err(|_| BusError::ShuttingDown)
    }

    /// A canvas at its head, read in one transaction on a pool connection (see `join.rs`).
    async fn snapshot(
        &self,
        canvas: &CanvasId,
        resume: Option<&Resume>,
        read: ReadObjects,
    ) -> Result<Snapshot, BusError> {
        let (inner, canvas, resume) = (self.inner.clone(), canvas.clone(), resume.cloned());
        self.read(move |conn| join::snapshot(conn, &inner.db_epoch, inner.max_resume, &canvas, resume.as_ref(), &read))
            .await
    }

    /// The frames of seqs `after + 1 ..= upto` of one generation of a canvas (fewer when some expired).
    async fn replay_page(
        &self,
        canvas: &CanvasId,
        generation: u64,
        after: u64,
        upto: u64,
    ) -> Result<Vec<Message>, BusError> {
        let canvas = canvas.clone();
        self.read(move |conn| join::replay_page(conn, &canvas, generation, after, upto)).await
    }

    /// The figures behind `/health`.
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
            last_poll_age_ms: (now - progress.last_poll_ms.load(Ordering::Acquire)).max(0),
            peer_instances: (file.live_instances - 1).max(0),
            oldest_unread_age_ms: unread_at.map(|at| (now - at).max(0)),
            writer_queue_depth: self.inner.writer.queue_depth(),
            writer_queue_capacity: self.inner.writer.queue_capacity(),
            last_error,
            last_error_age_ms,
            storage: StorageFigures::File(file),
        })
    }

    /// How long messages are kept, in ms.
    fn ttl_ms(&self) -> i64 {
        self.inner.ttl_ms
    }

    /// Final stop, after every connection is gone: saves watermarks, deregisters this instance, stops the
    /// writer (refusing anything that arrived too late) and the watcher, and waits for both threads.
    async fn close(&self) {
        let marks = self.inner.hub.take_watermarks();
        if !marks.is_empty() {
            let _ = self.job(Job::Watermarks(marks)).await;
        }
        let (done, stopped) = oneshot::channel();
        if self.job(Job::Stop(done)).await.is_ok() {
            let _ = stopped.await;
        }
        self.inner.progress.signal.stop();
        if let Some(doorbell) = &self.inner.doorbell {
            doorbell.ring_self();
        }
        self.inner.workers.join_all().await;
        self.inner.pool.close();
        if let Some(file) = self.inner.file.as_ref().filter(|file| file.check() == Found::Other) {
            file.remove_stale_companions();
        }
    }

    /// Retained messages of a canvas after `since`, at most `limit`, in seq order, with the canvas head.
    async fn messages(&self, canvas: CanvasId, since: u64, limit: u64) -> Result<CanvasLog, BusError> {
        let db_epoch = self.inner.db_epoch.clone();
        self.read(move |conn| {
            let snapshot = conn.transaction()?;
            let head = queries::head(&snapshot, &db_epoch, &canvas)?;
            let upto = head.last_seq.min(since.saturating_add(limit));
            let rows = queries::canvas_rows(&snapshot, &canvas, since, upto, now_ms())?;
            let messages = rows.iter().map(|row| row.frame().into_text().map(|t| t.to_string()).unwrap_or_default());
            Ok(CanvasLog { epoch: head.epoch, seq: head.last_seq, messages: messages.collect() })
        })
        .await
    }

    async fn canvases(&self, after: Option<CanvasId>, limit: u32, active: bool) -> Result<CanvasPage, BusError> {
        let db_epoch = self.inner.db_epoch.clone();
        self.read(move |conn| listing::canvases(conn, &db_epoch, after.as_ref(), limit, active)).await
    }

    /// Connected users across instances (all, or only `user`), with their connections and canvases.
    async fn users(&self, only: Option<UserId>) -> Result<Vec<UserPresence>, BusError> {
        self.read(move |conn| presence::users(conn, only.as_ref())).await
    }

    /// Resets a canvas (see `Job::Reset`); returns its new epoch.
    async fn reset(&self, canvas: CanvasId) -> Result<String, BusError> {
        let (reply, done) = oneshot::channel();
        self.job(Job::Reset { canvas, reply }).await?;
        done.await.map_err(|_| BusError::ShuttingDown)?
    }

    /// A frame for a user's (or everyone's) connections on the other instances (see `Job::SendTo`).
    async fn send_to(&self, to: Recipient, frame: String) -> Result<u64, BusError> {
        let (reply, done) = oneshot::channel();
        self.job(Job::SendTo { to, frame, reply }).await?;
        done.await.map_err(|_| BusError::ShuttingDown)?
    }

    /// Removes a user from a canvas everywhere (see `Job::RemoveUser`).
    async fn remove_user(&self, canvas: CanvasId, user: UserId, block_ms: Option<u64>) -> Result<u64, BusError> {
        let (reply, done) = oneshot::channel();
        self.job(Job::RemoveUser { canvas, user, block_ms, reply }).await?;
        done.await.map_err(|_| BusError::ShuttingDown)?
    }

    async fn blocked(&self, canvas: &CanvasId, user: &UserId) -> Result<Option<u64>, BusError> {
        let (canvas, user) = (canvas.clone(), user.clone());
        self.read(move |conn| queries::blocked_until(conn, &canvas, &user, now_ms())).await.map(|until| {
            let left = until - now_ms();
            (left > 0).then_some(left as u64)
        })
    }

    /// Cursor batches are rows of their own table, written on the writer's urgent lane: they never wait
    /// behind logged messages. Each watcher relays the others' rows.
    async fn send_cursors(&self, batches: Vec<CursorBatch>) {
        let _ = self.job(Job::Cursors(batches)).await;
    }

    fn maintain(&self, config: Config, stop: CancellationToken, fatal: oneshot::Sender<String>) -> JoinHandle<()> {
        tokio::spawn(maintenance::run(self.clone(), self.inner.hub.clone(), config, stop, fatal))
    }
}
