//! Redis as a [`Store`]: reads are scripts or stream ranges (`reads.rs`), snapshots a blob and a
//! compare-and-set, posts and presence states the ephemeral channel (`posts.rs`), heartbeats and cleanup
//! the upkeep (`upkeep.rs`). The writes of commits are the committer's (`commit.rs`).

use async_trait::async_trait;
use bytes::Bytes;

use super::history::nonce;
use super::reads::SNAPSHOT_GRACE_MS;
use super::scripts::SNAPSHOT;
use super::{keys, unavailable, RedisStore};
use crate::protocol::{CanvasId, ConnId, UserId};
use crate::store::figures::BusFigures;
use crate::store::history::{AtRead, Fork, HistoryDue, Named, Thinning, Version};
use crate::store::records::{ConnRow, Head, LogEntry};
use crate::store::{BusError, CanvasRead, CanvasReader, Instance, Post, Store, Want, Whose};

#[async_trait]
impl CanvasReader for RedisStore {
    async fn read_canvas(&self, canvas: &CanvasId, want: Want) -> Result<CanvasRead, BusError> {
        self.read_canvas_now(canvas, want).await
    }
}

#[async_trait]
impl Store for RedisStore {
    fn instance_id(&self) -> &str {
        &self.inner.instance_id
    }

    fn store_epoch(&self) -> String {
        self.inner.link.epoch().unwrap_or_default()
    }

    async fn read_canvas(&self, canvas: &CanvasId, want: Want) -> Result<CanvasRead, BusError> {
        self.read_canvas_now(canvas, want).await
    }

    async fn read_log(
        &self,
        canvas: &CanvasId,
        generation: u64,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<LogEntry>, BusError> {
        self.log_range(canvas, generation, after, upto, limit).await
    }

    async fn heads(&self, after: Option<&CanvasId>, limit: usize) -> Result<Vec<(CanvasId, Head)>, BusError> {
        self.head_page(after, limit).await
    }

    /// The blob to a key of its own first (a plain SET: no script holds Redis while megabytes go in),
    /// expiring unless `snapshot.lua` then keeps it: only if it is newer than the newest of its generation
    /// and at or below the head. With history, the older ones stay for thinning.
    async fn put_snapshot(&self, canvas: &CanvasId, generation: u64, seq: u64, json: Bytes) -> Result<bool, BusError> {
        let key = keys::snapshot(canvas, generation, seq, &nonce());
        self.unclaimed_snapshot(&key, &json).await?;
        let kept: i64 = SNAPSHOT
            .arg(canvas.as_str())
            .arg(generation)
            .arg(seq)
            .arg(&key)
            .arg(SNAPSHOT_GRACE_MS)
            .arg(if self.inner.settings.history_ms > 0 { "1" } else { "0" })
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(kept == 1)
    }

    async fn read_at(&self, canvas: &CanvasId, at: u64) -> Result<AtRead, BusError> {
        self.history_read_at(canvas, at).await
    }

    async fn versions(
        &self,
        canvas: &CanvasId,
        generation: u64,
        before: u64,
        limit: usize,
    ) -> Result<Vec<Version>, BusError> {
        self.history_versions(canvas, generation, before, limit).await
    }

    async fn name_version(
        &self,
        canvas: &CanvasId,
        generation: u64,
        seq: u64,
        name: &str,
        json: Bytes,
    ) -> Result<Named, BusError> {
        self.history_name(canvas, (generation, seq), name, json).await
    }

    async fn unname_version(&self, canvas: &CanvasId, generation: u64, seq: u64) -> Result<bool, BusError> {
        self.history_unname(canvas, (generation, seq)).await
    }

    async fn fork(&self, to: &CanvasId, fork: Fork) -> Result<Option<String>, BusError> {
        self.history_fork(to, fork).await
    }

    async fn history_due(&self, before: i64, limit: usize) -> Result<Vec<HistoryDue>, BusError> {
        RedisStore::history_due(self, before, limit).await
    }

    async fn thin(&self, canvas: &CanvasId, generation: u64, thinning: Thinning) -> Result<(), BusError> {
        self.history_thin(canvas, generation, thinning).await
    }

    async fn stale(&self, before: i64, limit: usize) -> Result<Vec<CanvasId>, BusError> {
        self.stale_canvases(before, limit).await
    }

    async fn connections(&self, whose: Whose) -> Result<Vec<(CanvasId, ConnRow)>, BusError> {
        self.connection_rows(whose).await
    }

    async fn save_states(&self, states: Vec<(CanvasId, ConnId, Option<String>)>) -> Result<(), BusError> {
        self.keep_states(states).await
    }

    async fn heartbeat(&self) -> Result<Vec<Instance>, BusError> {
        self.beat().await
    }

    async fn post(&self, post: Post) -> Result<(), BusError> {
        self.send_post(post).await
    }

    /// Ends the reader's blocked XREAD so that its next one includes the canvas.
    async fn room_started(&self, canvas: &CanvasId) {
        let wake = redis::cmd("XADD")
            .arg(keys::wake(&self.inner.instance_id))
            .arg("MAXLEN")
            .arg(1)
            .arg("*")
            .arg("w")
            .arg(canvas.as_str())
            .exec_async(&mut self.conn())
            .await;
        if let Err(error) = wake {
            // The reader then picks the canvas up when its read times out (or reconnects).
            tracing::warn!(%error, "could not wake the stream reader");
        }
    }

    /// Until when (unix ms, this host's clock) the block key has left to live, if it lives.
    async fn blocked(&self, canvas: &CanvasId, user: &UserId) -> Result<Option<i64>, BusError> {
        let left: i64 = redis::cmd("PTTL")
            .arg(keys::block(canvas, user))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok((left > 0).then(|| crate::clock::now_ms() + left))
    }

    async fn clean_up(&self) -> Result<usize, BusError> {
        self.clean().await
    }

    async fn figures(&self) -> Result<BusFigures, BusError> {
        self.health_figures().await
    }

    fn fatal(&self) -> Option<String> {
        self.inner.workers.stopped().map(|worker| {
            format!("the Redis {worker} task stopped unexpectedly; stopping so that a restart brings it back")
        })
    }

    /// After the committer stopped: the reader stops, and this instance is marked as gone (heartbeat 0) so
    /// that survivors expire any connection whose disconnect Redis never took.
    async fn close(&self) {
        self.inner.stop_reader.cancel();
        self.inner.workers.join_all().await;
        let mut pipe = redis::pipe();
        pipe.hset(keys::INSTANCES, &self.inner.instance_id, 0).ignore();
        pipe.del(keys::wake(&self.inner.instance_id)).ignore();
        if let Err(error) = pipe.exec_async(&mut self.conn()).await {
            tracing::warn!(%error, "could not deregister this instance from Redis");
        }
    }
}
