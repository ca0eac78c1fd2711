//! The file's own writes besides commits, each one short write transaction on the writer's connection, run
//! between the committer's rounds: heartbeats, the ephemeral channel (cursor batches, user messages,
//! removals), presence states, snapshots, cleanup, watermarks, and the consumers' leases and positions.

use deadpool_sqlite::rusqlite::{params, Connection, Error as SqlError};
use tokio::sync::oneshot;

use super::consumer_jobs::{self, ConsumerJob};
use super::history::{self, HistoryJob};
use super::queries;
use super::reads::RETIRED;
use super::unavailable;
use super::writer::SqliteWriter;
use crate::clock::now_ms;
use crate::hub::Watermark;
use crate::protocol::{CanvasId, ConnId};
use crate::store::{BusError, Instance, Post};

/// The `purge_at` of a row cleanup does not delete by time (history's, see `retire`).
pub(super) const NEVER: i64 = i64::MAX;

/// How long a cursor batch is kept: long enough for every watcher to read it, short enough to stay small.
const CURSOR_TTL_MS: i64 = 10_000;

/// A reply to whoever queued a job.
pub(super) type Reply<T> = oneshot::Sender<Result<T, BusError>>;

/// The file's own writes.
#[derive(Debug)]
pub enum WriterJob {
    /// Records this instance as alive now, refreshes the peers to ring, and replies with the live instances.
    Heartbeat(Reply<Vec<Instance>>),
    /// Writes a post for the other instances' watchers.
    Post(Post, Reply<()>),
    /// Keeps connections' presence states for joiners (JSON text; `None`: the connection is gone).
    SaveStates(Vec<(CanvasId, ConnId, Option<String>)>, Reply<()>),
    /// Keeps a snapshot if it is newer than the canvas's newest of its generation; replies whether it did.
    PutSnapshot { canvas: CanvasId, generation: u64, seq: u64, json: bytes::Bytes, reply: Reply<bool> },
    /// History's writes (`history.rs`).
    History(HistoryJob),
    /// Deletes up to `limit` rows of each kind that nobody needs any more; replies how many went.
    CleanUp { limit: u32, forget_instances_before: i64, reply: Reply<usize> },
    /// Saves how far this instance has delivered each canvas.
    Watermarks(Vec<Watermark>),
    /// A write of the server-side consumers (leases, delivered positions).
    Consumer(ConsumerJob),
    /// Removes this instance from the instances table (a clean stop).
    Deregister,
}

impl WriterJob {
    /// Whether it goes ahead of the queued messages: a late heartbeat gets this instance's users expired by
    /// the others, a late lease renewal loses the lease (and a release goes in the same lane, so that it is
    /// never overtaken by a later renewal of the same lease), and cursors must never wait behind logged
    /// messages.
    pub fn is_urgent(&self) -> bool {
        matches!(self, WriterJob::Heartbeat(_) | WriterJob::Post(Post::Cursors(_), _) | WriterJob::SaveStates(..))
            || matches!(self, WriterJob::Consumer(job) if job.is_urgent())
    }
}

impl SqliteWriter {
    /// Runs one job in its own write transaction and answers it.
    pub(super) fn run_job(&mut self, job: WriterJob) {
        let now = now_ms();
        match job {
            WriterJob::Heartbeat(reply) => {
                let instances = self.heartbeat(now);
                let _ = reply.send(instances.map_err(|error| unavailable(error).into()));
            }
            WriterJob::Post(post, reply) => {
                let (instance, ttl) = (self.settings.instance_id.clone(), self.settings.ttl_ms);
                let posted = self.write(|tx| post_for_others(tx, &instance, &post, now, ttl));
                if posted.is_ok() {
                    self.ring_peers();
                }
                let _ = reply.send(posted.map_err(|error| unavailable(error).into()));
            }
            WriterJob::SaveStates(states, reply) => {
                let saved = self.write(|tx| save_states(tx, &states));
                let _ = reply.send(saved.map_err(|error| unavailable(error).into()));
            }
            WriterJob::PutSnapshot { canvas, generation, seq, json, reply } => {
                let history_ms = self.settings.history_ms;
                let put =
                    self.write(|tx| history::put_snapshot(tx, &canvas, (generation, seq), &json, now, history_ms));
                let _ = reply.send(put.map_err(|error| unavailable(error).into()));
            }
            WriterJob::History(job) => self.run_history(job, now),
            WriterJob::CleanUp { limit, forget_instances_before, reply } => {
                let cleaned = self.write(|tx| clean_up(tx, limit, now, forget_instances_before));
                if let Ok(n) = cleaned {
                    self.metrics.cleanup_deleted.increment(n as u64);
                }
                let _ = reply.send(cleaned.map_err(|error| unavailable(error).into()));
            }
            WriterJob::Watermarks(marks) => {
                let id = self.settings.instance_id.clone();
                let _ = self.write(|tx| save_watermarks(tx, &id, &marks, now));
            }
            WriterJob::Consumer(job) => consumer_jobs::run(self, job, now),
            WriterJob::Deregister => {
                let id = self.settings.instance_id.clone();
                if let Err(error) =
                    self.write(|tx| tx.execute("DELETE FROM instances WHERE instance_id = ?1", [id]).map(drop))
                {
                    tracing::warn!(%error, "could not deregister this instance");
                }
            }
        }
    }

    /// `WriterJob::Heartbeat`: this instance alive now; the doorbells of the live peers to ring after commits.
    fn heartbeat(&mut self, now: i64) -> Result<Vec<Instance>, SqlError> {
        let (id, listen) = (self.settings.instance_id.clone(), self.settings.listen.clone());
        let wake_addr = self.doorbell.as_ref().map(|d| d.addr().to_string());
        let alive_since = now - self.settings.peer_timeout_ms;
        let instances = self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO instances (instance_id, pid, listen, started_at, heartbeat_at, wake_addr)
                 VALUES (?1, ?2, ?3, ?4, ?4, ?5)
                 ON CONFLICT (instance_id) DO UPDATE
                 SET heartbeat_at = excluded.heartbeat_at, wake_addr = excluded.wake_addr",
            )?
            .execute(params![id, std::process::id(), listen, now, wake_addr])?;
            queries::live_instances(tx, alive_since)
        })?;
        self.peers = instances
            .iter()
            .filter(|instance| instance.id != id)
            .filter_map(|instance| instance.doorbell.as_deref()?.parse().ok())
            .collect();
        self.metrics.peer_instances.set(self.peers.len() as f64);
        Ok(instances)
    }
}

/// `WriterJob::Post`: a row for the other instances' watchers to relay.
fn post_for_others(tx: &Connection, instance: &str, post: &Post, now: i64, ttl_ms: i64) -> Result<(), SqlError> {
    match post {
        Post::Cursors(batches) => {
            let mut insert = tx.prepare_cached(
                "INSERT INTO cursor_batches (canvas_id, origin_instance, frames, expires_at) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for batch in batches {
                insert.execute(params![batch.canvas.as_str(), instance, batch.frames, now + CURSOR_TTL_MS])?;
            }
        }
        Post::ToUser { to, frame } => {
            tx.prepare_cached(
                "INSERT INTO user_messages (user_id, origin_instance, frame, expires_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![to.as_str(), instance, frame, now + ttl_ms])?;
        }
        Post::Removal { canvas, user, blocked_until } => {
            tx.prepare_cached(
                "INSERT INTO removals (canvas_id, user_id, origin_instance, blocked_until, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![canvas.as_str(), user.as_str(), instance, blocked_until, now + ttl_ms])?;
        }
    }
    Ok(())
}

/// `WriterJob::SaveStates`: a connection that is gone has no row, and its state goes nowhere.
fn save_states(tx: &Connection, states: &[(CanvasId, ConnId, Option<String>)]) -> Result<(), SqlError> {
    let mut update = tx.prepare_cached("UPDATE connections SET presence = ?2 WHERE conn_id = ?1")?;
    for (_, conn, state) in states {
        update.execute(params![conn.to_string(), state])?;
    }
    Ok(())
}

/// `WriterJob::CleanUp`: up to `limit` of each: expired entries that no reader needs (past their keep time, and
/// an object op only once it is below its history's floor), expired idempotency keys, canvases forgotten after their
/// time with nothing kept for a webhook, expired relayed rows; and instances silent since
/// `forget_instances_before` with their watermarks. The limits are part of the SQL: a bound LIMIT makes
/// SQLite prepare the statement every run.
pub(super) fn clean_up(tx: &Connection, limit: u32, now: i64, forget_instances_before: i64) -> Result<usize, SqlError> {
    let deleted = tx
        .prepare_cached(&format!(
            "DELETE FROM message_queue WHERE id IN
             (SELECT m.id FROM message_queue m JOIN canvases c ON c.canvas_id = m.canvas_id
              WHERE m.purge_at <= ?1 AND (m.op = 0 OR m.generation != c.generation OR m.seq <= c.hist_seq)
              ORDER BY m.purge_at LIMIT {limit})
             RETURNING id, canvas_id, generation, seq, op"
        ))?
        .query_map(params![now], |row| Ok((row.get::<_, i64>(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?)))?
        .collect::<Result<Vec<(i64, String, i64, i64, bool)>, _>>()?;
    // A fold that knew a canvas before the ops it is missing must read it whole (see `commit.rs`).
    let mut pruned = tx.prepare_cached(
        "UPDATE canvases SET pruned_seq = max(pruned_seq, ?3) WHERE canvas_id = ?1 AND generation = ?2",
    )?;
    for (_, canvas, generation, seq, _) in deleted.iter().filter(|(.., op)| *op) {
        pruned.execute(params![canvas, generation, seq])?;
    }
    let retired = retire(tx, limit, now)?;
    let ids: Vec<i64> = deleted.iter().map(|(id, ..)| *id).chain(retired).collect();
    let orphans = tx
        .prepare_cached(&format!(
            "DELETE FROM message_queue WHERE id IN
             (SELECT m.id FROM message_queue m WHERE m.purge_at <= ?1
              AND NOT EXISTS (SELECT 1 FROM canvases c WHERE c.canvas_id = m.canvas_id) LIMIT {limit})
             RETURNING id"
        ))?
        .query_map(params![now], |row| row.get::<_, i64>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    note_pruned(tx, ids.iter().chain(&orphans).copied().max())?;
    let keys = tx
        .prepare_cached(&format!(
            "DELETE FROM idempotency_keys WHERE (canvas_id, user_id, key) IN
             (SELECT canvas_id, user_id, key FROM idempotency_keys
              WHERE expires_at <= ?1 ORDER BY expires_at LIMIT {limit})"
        ))?
        .execute(params![now])?;
    let forgotten = forget_canvases(tx, limit, now)?;
    tx.execute("DELETE FROM instances WHERE heartbeat_at < ?1", [forget_instances_before])?;
    tx.execute("DELETE FROM cursor_batches WHERE expires_at <= ?1", [now])?;
    tx.execute("DELETE FROM user_messages WHERE expires_at <= ?1", [now])?;
    tx.execute("DELETE FROM removals WHERE expires_at <= ?1 AND blocked_until <= ?1", [now])?;
    tx.execute(
        "DELETE FROM canvas_watermarks WHERE server_instance_id NOT IN (SELECT instance_id FROM instances)",
        [],
    )?;
    Ok(ids.len() + orphans.len() + keys + forgotten)
}

/// Up to `limit` object ops past their keep time that history still keeps (above their canvas's floor):
/// gone for every reader of the log (the stream counts them dropped), kept for the fold's reads until the
/// floor passes them (`history.rs`). Out of the `purge_at` order for good, so that cleanup never scans
/// them again. Returns their ids.
fn retire(tx: &Connection, limit: u32, now: i64) -> Result<Vec<i64>, SqlError> {
    tx.prepare_cached(&format!(
        "UPDATE message_queue SET op = op + {RETIRED}, purge_at = {NEVER} WHERE id IN
         (SELECT m.id FROM message_queue m JOIN canvases c ON c.canvas_id = m.canvas_id
          WHERE m.purge_at <= ?1 AND m.op IN (1, 2) AND m.generation = c.generation AND m.seq > c.hist_seq
          ORDER BY m.purge_at LIMIT {limit})
         RETURNING id"
    ))?
    .query_map(params![now], |row| row.get::<_, i64>(0))?
    .collect()
}

/// Deletes up to `limit` canvases whose forget time has passed and that keep no row for a webhook, with
/// their rows, snapshots, watermarks and webhook position. A canvas created again gets a new generation.
fn forget_canvases(tx: &Connection, limit: u32, now: i64) -> Result<usize, SqlError> {
    let ids: Vec<String> = tx
        .prepare_cached(&format!(
            "SELECT c.canvas_id FROM canvases c WHERE c.forget_at <= ?1
               AND NOT EXISTS (SELECT 1 FROM connections k WHERE k.canvas_id = c.canvas_id)
               AND NOT EXISTS (SELECT 1 FROM message_queue m WHERE m.canvas_id = c.canvas_id AND m.purge_at > ?1)
               AND NOT EXISTS (SELECT 1 FROM snapshots s WHERE s.canvas_id = c.canvas_id AND s.name IS NOT NULL)
             LIMIT {limit}"
        ))?
        .query_map([now], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for id in &ids {
        let pruned = tx
            .prepare_cached("DELETE FROM message_queue WHERE canvas_id = ?1 RETURNING id")?
            .query_map([id], |row| row.get::<_, i64>(0))?
            .try_fold(None, |max: Option<i64>, id| id.map(|id| max.max(Some(id))))?;
        note_pruned(tx, pruned)?;
        for table in ["snapshots", "webhook_positions", "canvas_watermarks", "idempotency_keys", "canvases"] {
            tx.prepare_cached(&format!("DELETE FROM {table} WHERE canvas_id = ?1"))?.execute([id])?;
        }
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

/// `WriterJob::Watermarks`: how far this instance has delivered each canvas.
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
