//! Redis as a [`Store`]: publishes go to the publisher task (`publisher.rs`, one `publish.lua` call per
//! batch), reads are scripts or stream ranges on their own connections, and the stream reader (`reader.rs`)
//! brings other instances' commits in. Snapshots are read in `state.rs`.

use std::sync::atomic::Ordering;
use std::time::Instant;

use async_trait::async_trait;
use redis::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::entry::{array, items, stream_id, string, text, uint, LogEntry};
use super::publisher::Job;
use super::scripts::{CANVASES, MESSAGES, PRESENCE_STATES, REMOVE_USER, RESET, TO_USER, USERS};
use super::{keys, maintenance, malformed, unavailable, RedisBus, RedisFigures};
use crate::bus::views::StorageFigures;
use crate::bus::{
    BusError, BusFigures, CanvasLog, CanvasPage, CanvasSummary, Publish, ReadObjects, Snapshot, Store, TryPublish,
    UserPresence,
};
use crate::clock::now_ms;
use crate::config::Config;
use crate::cursors::CursorBatch;
use crate::hub::Recipient;
use crate::protocol::{CanvasId, Resume, UserId};

/// How long a canvas's cursor stream outlives its last batch.
const CURSOR_STREAM_TTL_MS: u64 = 60_000;

#[async_trait]
impl Store for RedisBus {
    /// Queues a logged message for the publisher, on its queue or (`urgent`) ahead of it. Waits when that
    /// lane is full (back-pressure).
    async fn publish(&self, publish: Publish, urgent: bool) -> Result<(), BusError> {
        self.inner.publisher.publish(publish, urgent).await
    }

    /// Queues a logged message if the publisher's queue has room now; gives it back if not.
    fn try_publish(&self, publish: Publish) -> Result<(), TryPublish> {
        self.inner.publisher.try_publish(publish)
    }

    /// Returns once everything queued before the call is committed or refused.
    async fn flush(&self) -> Result<(), BusError> {
        let (done, committed) = oneshot::channel();
        self.inner.publisher.job(Job::Barrier(done), false).await?;
        committed.await.map_err(|_| BusError::ShuttingDown)
    }

    /// The figures behind `/health`; an error when Redis does not answer.
    async fn figures(&self) -> Result<BusFigures, BusError> {
        let started = Instant::now();
        let (beats, (secs, micros)): (Vec<i64>, (i64, i64)) = redis::pipe()
            .hvals(keys::INSTANCES)
            .cmd("TIME")
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let ping = started.elapsed();
        let redis_now = secs * 1000 + micros / 1000;
        let live_after = redis_now - self.inner.presence_timeout_ms;
        let live_instances = beats.iter().filter(|beat| **beat > live_after).count() as i64;
        let oldest_unread = self.oldest_unread().await?;
        let now = now_ms();
        let link = &self.inner.link;
        let (last_error, last_error_age_ms) = link.last_error.report(now);
        Ok(BusFigures {
            bus: "redis",
            storage: StorageFigures::Redis(RedisFigures {
                redis_ping_ms: ping.as_secs_f64() * 1000.0,
                store_epoch: link.epoch(),
                live_instances,
            }),
            writer_queue_depth: self.inner.publisher.queue_depth(),
            writer_queue_capacity: self.inner.publisher.queue_capacity(),
            poll_lag_rows: 0,
            last_poll_age_ms: (now - link.last_read_ms.load(Ordering::Acquire)).max(0),
            peer_instances: (live_instances - 1).max(0),
            oldest_unread_age_ms: oldest_unread.map(|ts| (redis_now - ts).max(0)),
            last_error,
            last_error_age_ms,
        })
    }

    /// How long messages are kept, in ms.
    fn ttl_ms(&self) -> i64 {
        self.inner.ttl_ms
    }

    /// Final stop, after every connection is gone: refuses what is still queued, stops the reader, and marks
    /// this instance as gone (heartbeat 0) so that survivors expire any connection whose disconnect Redis
    /// never took.
    async fn close(&self) {
        let (done, stopped) = oneshot::channel();
        if self.inner.publisher.job(Job::Stop(done), false).await.is_ok() {
            let _ = stopped.await;
        }
        self.inner.stop_reader.cancel();
        self.inner.workers.join_all().await;
        let mut pipe = redis::pipe();
        pipe.hset(keys::INSTANCES, &self.inner.instance_id, 0).ignore();
        pipe.del(keys::wake(&self.inner.instance_id)).ignore();
        if let Err(error) = pipe.exec_async(&mut self.conn()).await {
            tracing::warn!(%error, "could not deregister this instance from Redis");
        }
    }
    /// A canvas at its head, read atomically on the state connection. Objects small enough for the caller
    /// come back from the script; a caller that wants them whatever their size gets them from
    /// [`RedisBus::whole_state`], which never holds Redis for the whole state.
    async fn snapshot(
        &self,
        canvas: &CanvasId,
        resume: Option<&Resume>,
        read: ReadObjects,
    ) -> Result<Snapshot, BusError> {
        match read.up_to {
            usize::MAX => self.whole_state(canvas).await,
            _ => self.script_snapshot(canvas, resume, read).await,
        }
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

    /// The frames of seqs `after + 1 ..= upto` of one generation of a canvas, as its stream still holds them.
    async fn replay_page(
        &self,
        canvas: &CanvasId,
        generation: u64,
        after: u64,
        upto: u64,
    ) -> Result<Vec<Message>, BusError> {
        let mut range = redis::cmd("XRANGE");
        range.arg(keys::log(canvas)).arg(stream_id(generation, after + 1)).arg(stream_id(generation, upto));
        let reply: Value = self
            .read_twice(|mut conn| {
                let range = &range;
                async move { range.query_async(&mut conn).await }
            })
            .await?;
        let epoch = self.inner.link.epoch().unwrap_or_default();
        Ok(LogEntry::parse_all(&reply).iter().map(|e| e.frame(canvas.as_str(), &epoch)).collect())
    }

    /// Retained messages of a canvas after `since`, at most `limit`, in seq order, with the canvas head.
    async fn messages(&self, canvas: CanvasId, since: u64, limit: u64) -> Result<CanvasLog, BusError> {
        let reply: Value = MESSAGES
            .arg(canvas.as_str())
            .arg(Self::candidate())
            .arg(since)
            .arg(limit)
            .arg(self.inner.ttl_ms)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let [epoch, generation, seq, entries] = items::<4>(&reply).ok_or_else(|| malformed("a log read"))?;
        let (store_epoch, generation, seq) = (string(epoch), uint(generation), uint(seq));
        let (Some(store_epoch), Some(generation), Some(seq)) = (store_epoch, generation, seq) else {
            return Err(malformed("a log read"));
        };
        let messages = LogEntry::parse_all(entries)
            .iter()
            .map(|e| e.frame(canvas.as_str(), &store_epoch).into_text().map(|t| t.to_string()).unwrap_or_default())
            .collect();
        Ok(CanvasLog { epoch: format!("{store_epoch}-{generation}"), seq, messages })
    }

    /// One script over the index of canvases (`canvases.lua`): a page may be short of `limit` and still have
    /// a next, since the script looks at a bounded number of entries per call.
    async fn canvases(&self, after: Option<CanvasId>, limit: u32, active: bool) -> Result<CanvasPage, BusError> {
        let reply: Value = CANVASES
            .arg(after.as_ref().map_or("", CanvasId::as_str))
            .arg(limit)
            .arg(if active { "1" } else { "0" })
            .arg(RedisBus::candidate())
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let parse = || {
            let [epoch, next, rows @ ..] = array(&reply)? else { return None };
            let epoch = text(epoch)?;
            let canvases = rows
                .chunks_exact(6)
                .map(|row| {
                    Some(CanvasSummary {
                        canvas: string(&row[0])?,
                        seq: uint(&row[1])?,
                        epoch: format!("{epoch}-{}", uint(&row[2])?),
                        connections: uint(&row[3])?,
                        users: uint(&row[4])?,
                        objects: uint(&row[5])?,
                    })
                })
                .collect::<Option<Vec<_>>>()?;
            let next = Some(string(next)?).filter(|next| !next.is_empty());
            Some(CanvasPage { canvases, next })
        };
        parse().ok_or_else(|| malformed("a canvas listing"))
    }

    /// Connected users across instances (all, or only `user`), with their connections and canvases.
    async fn users(&self, only: Option<UserId>) -> Result<Vec<UserPresence>, BusError> {
        let reply: Value = USERS
            .arg(only.as_ref().map_or("", UserId::as_str))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let parse = || {
            let mut users = array(&reply)?
                .chunks_exact(3)
                .map(|user| {
                    let mut canvases: Vec<String> = array(&user[2])?.iter().filter_map(string).collect();
                    canvases.sort();
                    Some(UserPresence { user: string(&user[0])?, connections: uint(&user[1])?, canvases })
                })
                .collect::<Option<Vec<_>>>()?;
            users.sort_by(|a, b| a.user.cmp(&b.user));
            Some(users)
        };
        parse().ok_or_else(|| malformed("a users read"))
    }

    /// Resets a canvas: a new generation at seq 0, log and objects dropped. Every instance's readers see the
    /// reset marker and send connected clients `reset`. Returns the new epoch.
    async fn reset(&self, canvas: CanvasId) -> Result<String, BusError> {
        let reply: Value = RESET
            .arg(canvas.as_str())
            .arg(Self::candidate())
            .arg(self.inner.ttl_ms)
            .arg(&self.inner.instance_id)
            .arg(self.inner.retention_ms)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let [epoch, generation] = items::<2>(&reply).ok_or_else(|| malformed("a reset"))?;
        let (Some(epoch), Some(generation)) = (string(epoch), uint(generation)) else {
            return Err(malformed("a reset"));
        };
        self.inner.link.observe_epoch(&epoch, &self.inner.hub);
        Ok(format!("{epoch}-{generation}"))
    }

    /// A frame for a user's (or everyone's) connections on the other instances, through the shared
    /// user-message stream. Returns how many connections the user has across instances.
    async fn send_to(&self, to: Recipient, frame: String) -> Result<u64, BusError> {
        let connections: u64 = TO_USER
            .arg(to.as_str())
            .arg(&frame)
            .arg(&self.inner.instance_id)
            .arg(self.inner.ttl_ms)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(connections)
    }

    /// One script: the entry every other reader turns into closing the user's connections (4003), the
    /// block key, and the user's connection count; then this process's connections.
    async fn remove_user(&self, canvas: CanvasId, user: UserId, block_ms: Option<u64>) -> Result<u64, BusError> {
        let connections: u64 = REMOVE_USER
            .arg(canvas.as_str())
            .arg(user.as_str())
            .arg(&self.inner.instance_id)
            .arg(self.inner.ttl_ms)
            .arg(block_ms.unwrap_or(0))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        self.inner.hub.remove_user(&canvas, user.as_str());
        Ok(connections)
    }

    async fn blocked(&self, canvas: &CanvasId, user: &UserId) -> Result<Option<u64>, BusError> {
        let left: i64 = redis::cmd("PTTL")
            .arg(keys::block(canvas, user))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok((left > 0).then_some(left as u64))
    }

    /// One XADD per canvas to its cursor stream (capped, expiring), in one round trip; every instance with
    /// clients on the canvas reads it beside the log (`reader.rs`). The presence states the batches carry
    /// are kept first, for joiners' welcome.peers, so that whoever sees a state relayed finds it kept.
    async fn send_cursors(&self, batches: Vec<CursorBatch>) {
        // Every canvas's states in one script call.
        let states = batches.iter().flat_map(|batch| batch.states.iter().map(move |state| (&batch.canvas, state)));
        let mut script = PRESENCE_STATES.prepare_invoke();
        let mut any = false;
        for (canvas, (conn, data)) in states {
            script.arg(canvas.as_str()).arg(conn.to_string()).arg(data);
            any = true;
        }
        if any {
            if let Err(error) = script.invoke_async::<()>(&mut self.conn()).await {
                tracing::debug!(%error, "presence states not kept (a joiner sees the next one)");
            }
        }
        let mut pipe = redis::pipe();
        for batch in &batches {
            let key = keys::cursors(&batch.canvas);
            pipe.cmd("XADD")
                .arg(&key)
                .arg("MAXLEN")
                .arg("~")
                .arg(64)
                .arg("*")
                .arg("i")
                .arg(&self.inner.instance_id)
                .arg("d")
                .arg(&batch.frames)
                .ignore();
            pipe.pexpire(&key, CURSOR_STREAM_TTL_MS as i64).ignore();
        }
        if let Err(error) = pipe.exec_async(&mut self.conn()).await {
            tracing::debug!(%error, "cursor batch not sent (cursors are best effort)");
        }
    }

    fn maintain(&self, config: Config, stop: CancellationToken, fatal: oneshot::Sender<String>) -> JoinHandle<()> {
        tokio::spawn(maintenance::run(self.clone(), config, stop, fatal))
    }
}
