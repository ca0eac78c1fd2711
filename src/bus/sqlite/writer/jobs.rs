//! The writer's jobs besides group commits: canvas resets and user messages (for the HTTP API), TTL cleanup
//! batches, forgetting dead instances, heartbeats, watermarks, cursor batches for other instances, and the
//! barrier shutdown uses. Each is one short write transaction on the writer's connection, run between group
//! commits, so a process never has two of its own connections competing for the write lock.

use deadpool_sqlite::rusqlite::{params, Connection, Error as SqlError, TransactionBehavior};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

use super::{describe, same_file, unavailable, Writer};
use crate::bus::sqlite::{presence, queries};
use crate::bus::BusError;
use crate::clock::now_ms;
use crate::cursors::CursorBatch;
use crate::hub::{Entry, Recipient, Watermark};
use crate::protocol::{reset_frame, CanvasId, UserId};

/// How long a cursor batch is kept: long enough for every watcher to read it, short enough to stay small.
const CURSOR_TTL_MS: i64 = 10_000;

/// Maintenance writes, run between group commits.
#[derive(Debug)]
pub enum Job {
    /// Drops a canvas's log and state and starts its next generation (epoch) at seq 0; replies with the new
    /// epoch.
    Reset { canvas: CanvasId, reply: oneshot::Sender<Result<String, BusError>> },
    /// Hands `frame` for every connection of a user, or of everyone, to the other instances through
    /// `user_messages` (`*` for everyone). Replies with how many connections the user has across instances.
    SendTo { to: Recipient, frame: String, reply: oneshot::Sender<Result<u64, BusError>> },
    /// Closes every connection of `user` to `canvas` with 4003: at once this process's, through `removals`
    /// the others'; with `block_ms`, the same row refuses the user's new connections until then. Replies
    /// with how many connections the user had on the canvas across instances.
    RemoveUser { canvas: CanvasId, user: UserId, block_ms: Option<u64>, reply: oneshot::Sender<Result<u64, BusError>> },
    /// Deletes up to `limit` expired rows; replies with how many went.
    Cleanup { limit: u32, reply: oneshot::Sender<Result<usize, String>> },
    /// Deletes up to `limit` canvases that hold nothing: no objects, no connection, and no message since
    /// `idle_before` (so every row of theirs has expired). A canvas created again gets a new epoch (see
    /// `next_generation`). Without this, anyone could fill the file by connecting to ever new names.
    DropIdleCanvases { idle_before: i64, limit: u32, reply: oneshot::Sender<Result<usize, String>> },
    /// Deletes instances silent since `before_ms` with their watermarks, and expired cursor batches.
    ForgetInstances { before_ms: i64 },
    /// Writes one cursor batch per canvas for the other instances.
    Cursors(Vec<CursorBatch>),
    /// Records this instance as alive now (and refreshes the peers to ring); `done` learns whether it committed.
    Heartbeat(Option<oneshot::Sender<bool>>),
    /// Saves how far this instance has delivered each canvas.
    Watermarks(Vec<Watermark>),
    /// A write of the server-side consumers (leases, delivered positions).
    Consumer(super::ConsumerJob),
    /// Replies once everything queued before it is committed.
    Barrier(oneshot::Sender<()>),
    /// Removes this instance from the instances table (clean shutdown), then stops the writer.
    Stop(oneshot::Sender<()>),
}

impl Job {
    /// Whether it goes ahead of the queued messages: a late heartbeat gets this instance's users expired by
    /// the others, a late lease renewal loses the lease (and a release goes in the same lane, so that it is
    /// never overtaken by a later renewal of the same lease), and cursors must never wait behind logged
    /// messages.
    pub fn is_urgent(&self) -> bool {
        use super::ConsumerJob::{HoldLeases, ReleaseLeases};
        matches!(self, Job::Heartbeat(_) | Job::Cursors(_) | Job::Consumer(HoldLeases { .. } | ReleaseLeases { .. }))
    }

    /// Whether other instances have something to deliver once it committed.
    fn wakes_peers(&self) -> bool {
        matches!(self, Job::Reset { .. } | Job::SendTo { .. } | Job::RemoveUser { .. } | Job::Cursors(_))
    }
}

impl Writer {
    /// Runs one job in its own write transaction; a failed one is logged and reported to `/health`.
    pub(super) fn run_job(&mut self, job: Job) {
        let now = now_ms();
        let wakes_peers = job.wakes_peers();
        let changes_before = self.conn.total_changes();
        let result = match job {
            Job::Reset { canvas, reply } => self.reset(&canvas, reply, now),
            Job::SendTo { to, frame, reply } => self.send_to(&to, frame, reply, now),
            Job::RemoveUser { canvas, user, block_ms, reply } => self.remove_user(&canvas, &user, block_ms, reply, now),
            Job::Cleanup { limit, reply } => self.clean_up(limit, reply, now),
            Job::DropIdleCanvases { idle_before, limit, reply } => {
                let dropped = self.write(|tx| drop_idle_canvases(tx, idle_before, limit, now));
                if let Ok(n) = dropped {
                    self.metrics.canvases_dropped.increment(n as u64);
                }
                let _ = reply.send(dropped.as_ref().map_err(describe).copied());
                dropped.map(drop)
            }
            Job::ForgetInstances { before_ms } => self.write(|tx| forget_instances(tx, before_ms, now)),
            Job::Cursors(batches) => {
                let id = self.settings.instance_id.clone();
                self.write(|tx| write_cursor_batches(tx, &id, &batches, now))
            }
            Job::Heartbeat(done) => self.heartbeat(done, now),
            Job::Consumer(job) => self.run_consumer_job(job, now),
            Job::Watermarks(marks) => {
                let id = self.settings.instance_id.clone();
                self.write(|tx| save_watermarks(tx, &id, &marks, now))
            }
            Job::Barrier(done) => {
                // Not a write: says nothing about the file's health either way.
                let _ = done.send(());
                return;
            }
            Job::Stop(_) => unreachable!("handled by run"),
        };
        match result {
            Ok(()) => {
                // A transaction that changed no row wrote nothing to disk, so it proves nothing about a
                // storage error (a DELETE of no rows commits fine on a full or read-only disk).
                if self.conn.total_changes() > changes_before {
                    self.progress.write_succeeded();
                }
                if wakes_peers {
                    self.ring_peers();
                }
            }
            Err(error) => {
                tracing::warn!(%error, "maintenance write failed");
                self.progress.write_failed(now, &describe(&error));
            }
        }
    }

    /// `Job::Reset`: the new generation, its marker delivered locally, the new epoch to the caller.
    fn reset(
        &mut self,
        canvas: &CanvasId,
        reply: oneshot::Sender<Result<String, BusError>>,
        now: i64,
    ) -> Result<(), SqlError> {
        let settings = self.settings.clone();
        let result = self.write(|tx| reset(tx, canvas, &settings, now));
        if let Ok((generation, id)) = &result {
            self.deliver_reset(canvas, *generation, *id);
        }
        let epoch = match &result {
            Ok((generation, _)) => Ok(queries::epoch(&settings.db_epoch, *generation as i64)),
            Err(error) => Err(unavailable(error).into()),
        };
        let _ = reply.send(epoch);
        result.map(drop)
    }

    /// `Job::SendTo`: a row for the other instances if the user is connected there (always for everyone).
    fn send_to(
        &mut self,
        to: &Recipient,
        frame: String,
        reply: oneshot::Sender<Result<u64, BusError>>,
        now: i64,
    ) -> Result<(), SqlError> {
        let (id, expires_at) = (self.settings.instance_id.clone(), now + self.settings.ttl_ms);
        let counted = self.write(|tx| {
            let (all, elsewhere) = match to {
                Recipient::User(user) => presence::user_connection_counts(tx, user, &id)?,
                Recipient::Everyone => (0, 1),
            };
            if elsewhere > 0 {
                tx.prepare_cached(
                    "INSERT INTO user_messages (user_id, origin_instance, frame, expires_at) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![to.as_str(), id, frame, expires_at])?;
            }
            Ok(all)
        });
        let _ = reply.send(counted.as_ref().copied().map_err(|error| unavailable(error).into()));
        counted.map(drop)
    }

    /// `Job::RemoveUser`: the row for the other instances (and the block), then this process's connections.
    fn remove_user(
        &mut self,
        canvas: &CanvasId,
        user: &UserId,
        block_ms: Option<u64>,
        reply: oneshot::Sender<Result<u64, BusError>>,
        now: i64,
    ) -> Result<(), SqlError> {
        let (id, expires_at) = (self.settings.instance_id.clone(), now + self.settings.ttl_ms);
        let blocked_until = block_ms.map_or(0, |ms| now.saturating_add(ms.min(i64::MAX as u64) as i64));
        let counted = self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO removals (canvas_id, user_id, origin_instance, blocked_until, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![canvas.as_str(), user.as_str(), id, blocked_until, expires_at])?;
            presence::user_connections_on(tx, canvas, user)
        });
        if counted.is_ok() {
            self.hub.remove_user(canvas, user.as_str());
        }
        let _ = reply.send(counted.as_ref().copied().map_err(|error| unavailable(error).into()));
        counted.map(drop)
    }

    /// `Job::Cleanup`: up to `limit` expired rows, oldest first.
    fn clean_up(
        &mut self,
        limit: u32,
        reply: oneshot::Sender<Result<usize, String>>,
        now: i64,
    ) -> Result<(), SqlError> {
        let deleted = self.write(|tx| {
            // The limit is part of the SQL: a bound LIMIT makes SQLite prepare the statement every run.
            // purge_at, not expires_at: rows a webhook has not delivered yet stay (see migration 0009).
            let ids = tx
                .prepare_cached(&format!(
                    "DELETE FROM message_queue WHERE id IN
                     (SELECT id FROM message_queue WHERE purge_at <= ?1 ORDER BY purge_at LIMIT {limit})
                     RETURNING id"
                ))?
                .query_map(params![now], |row| row.get::<_, i64>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            note_pruned(tx, ids.iter().copied().max())?;
            let messages = ids.len();
            let keys = tx
                .prepare_cached(&format!(
                    "DELETE FROM idempotency_keys WHERE (canvas_id, user_id, key) IN
                     (SELECT canvas_id, user_id, key FROM idempotency_keys
                      WHERE expires_at <= ?1 ORDER BY expires_at LIMIT {limit})"
                ))?
                .execute(params![now])?;
            Ok(messages + keys)
        });
        if let Ok(n) = deleted {
            self.metrics.cleanup_deleted.increment(n as u64);
        }
        let _ = reply.send(deleted.as_ref().map_err(describe).copied());
        deleted.map(drop)
    }

    /// `Job::Heartbeat`: this instance alive now, and the doorbells of the live peers to ring after commits.
    fn heartbeat(&mut self, done: Option<oneshot::Sender<bool>>, now: i64) -> Result<(), SqlError> {
        let (id, listen) = (self.settings.instance_id.clone(), self.settings.listen.clone());
        let wake_addr = self.doorbell.as_ref().map(|d| d.addr().to_string());
        let alive_since = now - self.settings.peer_timeout_ms;
        let peers = self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO instances (instance_id, pid, listen, started_at, heartbeat_at, wake_addr)
                 VALUES (?1, ?2, ?3, ?4, ?4, ?5)
                 ON CONFLICT (instance_id) DO UPDATE
                 SET heartbeat_at = excluded.heartbeat_at, wake_addr = excluded.wake_addr",
            )?
            .execute(params![id, std::process::id(), listen, now, wake_addr])?;
            queries::peer_doorbells(tx, &id, alive_since)
        });
        if let Some(done) = done {
            let _ = done.send(peers.is_ok());
        }
        peers.map(|peers| {
            self.metrics.peer_instances.set(peers.len() as f64);
            self.peers = peers;
        })
    }

    /// After a reset committed: the marker goes to the local room (unless local delivery is off; then the
    /// watcher brings it), and the read cursor moves past it when nothing foreign is in between.
    fn deliver_reset(&self, canvas: &CanvasId, generation: u64, id: i64) {
        if self.settings.local_broadcast {
            if let Some(room) = self.hub.room(canvas) {
                let epoch = queries::epoch(&self.settings.db_epoch, generation as i64);
                let frame = Message::text(reset_frame(canvas.as_str(), &epoch));
                room.lock().offer(Entry { seq: 0, generation, id, frame }, &self.metrics);
            }
            self.progress.skip_own_rows(id, id);
        }
        self.progress.signal.poke();
    }

    /// One short write transaction.
    pub(super) fn write<T>(&mut self, f: impl FnOnce(&Connection) -> Result<T, SqlError>) -> Result<T, SqlError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = f(&tx)?;
        same_file(&self.file)?;
        tx.commit()?;
        Ok(value)
    }
}

/// The reset transaction: bumps the canvas's generation (creating the canvas row if it had none, so even a
/// canvas nobody wrote to gets a new epoch), deletes its rows and objects, and logs the new generation's
/// `reset` marker at seq 0, which watchers relay as the `reset` frame. Returns (generation, marker row id).
fn reset(
    tx: &Connection,
    canvas: &CanvasId,
    settings: &super::WriterSettings,
    now: i64,
) -> Result<(u64, i64), SqlError> {
    let generation = super::next_generation(tx)? as i64;
    tx.prepare_cached(
        "INSERT INTO canvases (canvas_id, last_seq, generation, created_at, updated_at) VALUES (?1, 0, ?2, ?3, ?3)
         ON CONFLICT (canvas_id) DO UPDATE SET generation = excluded.generation, last_seq = 0,
             updated_at = excluded.updated_at, state_bytes = 0, state_seq = 0",
    )?
    .execute(params![canvas.as_str(), generation, now])?;
    // The old generation's rows expire for clients (at 0, so that no clock step makes them visible again,
    // their seqs now being the new generation's too); the event stream still reads them until their TTL
    // (it carries every logged message), and the webhook, whose next batch of the canvas is the reset,
    // stops holding them past it.
    tx.prepare_cached("UPDATE message_queue SET expires_at = 0, purge_at = expires_at WHERE canvas_id = ?1")?
        .execute(params![canvas.as_str()])?;
    tx.prepare_cached("DELETE FROM canvas_objects WHERE canvas_id = ?1")?.execute([canvas.as_str()])?;
    let epoch = queries::epoch(&settings.db_epoch, generation);
    let data = serde_json::json!({ "epoch": epoch }).to_string();
    tx.prepare_cached(super::INSERT_MESSAGE)?.execute(params![
        canvas.as_str(),
        0,
        "reset",
        data,
        "server",
        settings.instance_id,
        now,
        now + settings.ttl_ms,
        generation,
        now + settings.keep_ms,
    ])?;
    Ok((generation as u64, tx.last_insert_rowid()))
}

/// Deletes up to `limit` canvases idle since `idle_before` that hold no objects, no connection and no row
/// kept for a webhook, with their (expired) rows, watermarks and webhook position. Returns how many went.
fn drop_idle_canvases(tx: &Connection, idle_before: i64, limit: u32, now: i64) -> Result<usize, SqlError> {
    // The limit is part of the SQL: a bound LIMIT makes SQLite prepare the statement every run.
    let ids: Vec<String> = tx
        .prepare_cached(&format!(
            "SELECT c.canvas_id FROM canvases c WHERE c.updated_at < ?1
               AND NOT EXISTS (SELECT 1 FROM canvas_objects o WHERE o.canvas_id = c.canvas_id)
               AND NOT EXISTS (SELECT 1 FROM connections k WHERE k.canvas_id = c.canvas_id)
               AND NOT EXISTS (SELECT 1 FROM message_queue m WHERE m.canvas_id = c.canvas_id AND m.purge_at > ?2)
             LIMIT {limit}"
        ))?
        .query_map([idle_before, now], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for id in &ids {
        let pruned = tx
            .prepare_cached("DELETE FROM message_queue WHERE canvas_id = ?1 RETURNING id")?
            .query_map([id], |row| row.get::<_, i64>(0))?
            .try_fold(None, |max: Option<i64>, id| id.map(|id| max.max(Some(id))))?;
        note_pruned(tx, pruned)?;
        tx.prepare_cached("DELETE FROM webhook_positions WHERE canvas_id = ?1")?.execute([id])?;
        tx.prepare_cached("DELETE FROM canvas_watermarks WHERE canvas_id = ?1")?.execute([id])?;
        tx.prepare_cached("DELETE FROM canvases WHERE canvas_id = ?1")?.execute([id])?;
    }
    Ok(ids.len())
}

/// Records that rows up to `id` were deleted (`meta.pruned_id`): an event stream reading from before it has a
/// gap.
fn note_pruned(tx: &Connection, id: Option<i64>) -> Result<(), SqlError> {
    let Some(id) = id else { return Ok(()) };
    tx.prepare_cached("UPDATE meta SET value = CAST(max(CAST(value AS INTEGER), ?1) AS TEXT) WHERE key = 'pruned_id'")?
        .execute([id])
        .map(drop)
}

/// `Job::ForgetInstances`: instances silent since `before_ms` with their watermarks, and expired cursor
/// batches and user messages.
fn forget_instances(tx: &Connection, before_ms: i64, now: i64) -> Result<(), SqlError> {
    tx.execute("DELETE FROM instances WHERE heartbeat_at < ?1", [before_ms])?;
    tx.execute("DELETE FROM cursor_batches WHERE expires_at <= ?1", [now])?;
    tx.execute("DELETE FROM user_messages WHERE expires_at <= ?1", [now])?;
    tx.execute("DELETE FROM removals WHERE expires_at <= ?1 AND blocked_until <= ?1", [now])?;
    tx.execute("DELETE FROM canvas_watermarks WHERE server_instance_id NOT IN (SELECT instance_id FROM instances)", [])
        .map(drop)
}

/// `Job::Cursors`: one row per canvas for the other instances' watchers.
fn write_cursor_batches(tx: &Connection, instance: &str, batches: &[CursorBatch], now: i64) -> Result<(), SqlError> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO cursor_batches (canvas_id, origin_instance, frames, expires_at) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for batch in batches {
        insert.execute(params![batch.canvas.as_str(), instance, batch.frames, now + CURSOR_TTL_MS])?;
        presence::save_states(tx, &batch.states)?;
    }
    Ok(())
}

/// `Job::Watermarks`: how far this instance has delivered each canvas.
fn save_watermarks(tx: &Connection, instance: &str, marks: &[Watermark], now: i64) -> Result<(), SqlError> {
    let mut upsert = tx.prepare_cached(
        "INSERT INTO canvas_watermarks (canvas_id, server_instance_id, last_processed_id, last_seq, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (canvas_id, server_instance_id) DO UPDATE SET
             last_processed_id = excluded.last_processed_id,
             last_seq = excluded.last_seq, updated_at = excluded.updated_at",
    )?;
    for m in marks {
        upsert.execute(params![m.canvas.as_str(), instance, m.last_id, m.last_seq as i64, now])?;
    }
    Ok(())
}
