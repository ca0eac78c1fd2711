//! The writer's maintenance jobs: TTL cleanup batches, forgetting dead instances, heartbeats, watermarks,
//! cursor batches for other instances, and the barrier shutdown uses. Each is one short write transaction on the writer's connection, run between
//! group commits, so a process never has two of its own connections competing for the write lock.

use deadpool_sqlite::rusqlite::{params, Connection, Error as SqlError, TransactionBehavior};
use tokio::sync::oneshot;

use super::{describe, Writer};
use crate::clock::now_ms;
use crate::cursors::CursorBatch;
use crate::hub::Watermark;

/// How long a cursor batch is kept: long enough for every watcher to read it, short enough to stay small.
const CURSOR_TTL_MS: i64 = 10_000;

/// Maintenance writes, run between group commits.
#[derive(Debug)]
pub enum Job {
    /// Deletes up to `limit` expired rows; replies with how many went.
    Cleanup { limit: u32, reply: oneshot::Sender<Result<usize, String>> },
    /// Deletes instances silent since `before_ms` with their watermarks, and expired cursor batches.
    ForgetInstances { before_ms: i64 },
    /// Writes one cursor batch per canvas for the other instances.
    Cursors(Vec<CursorBatch>),
    /// Records this instance as alive now.
    Heartbeat,
    /// Saves how far this instance has delivered each canvas.
    Watermarks(Vec<Watermark>),
    /// Replies once everything queued before it is committed.
    Barrier(oneshot::Sender<()>),
    /// Removes this instance from the instances table (clean shutdown), then stops the writer.
    Stop(oneshot::Sender<()>),
}

impl Writer {
    pub(super) fn run_job(&mut self, job: Job) {
        let now = now_ms();
        let result = match job {
            Job::Cleanup { limit, reply } => {
                let deleted = self.write(|tx| {
                    tx.prepare_cached(
                        "DELETE FROM message_queue WHERE id IN
                         (SELECT id FROM message_queue WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2)",
                    )?
                    .execute(params![now, limit])
                });
                if let Ok(n) = deleted {
                    self.metrics.cleanup_deleted.increment(n as u64);
                }
                let _ = reply.send(deleted.as_ref().map_err(describe).copied());
                deleted.map(drop)
            }
            Job::ForgetInstances { before_ms } => self.write(|tx| {
                tx.execute("DELETE FROM instances WHERE heartbeat_at < ?1", [before_ms])?;
                tx.execute("DELETE FROM cursor_batches WHERE expires_at <= ?1", [now])?;
                tx.execute(
                    "DELETE FROM canvas_watermarks
                     WHERE server_instance_id NOT IN (SELECT instance_id FROM instances)",
                    [],
                )
                .map(drop)
            }),
            Job::Cursors(batches) => {
                let id = self.settings.instance_id.clone();
                self.write(|tx| {
                    let mut insert = tx.prepare_cached(
                        "INSERT INTO cursor_batches (canvas_id, origin_instance, frames, expires_at)
                         VALUES (?1, ?2, ?3, ?4)",
                    )?;
                    for batch in &batches {
                        insert.execute(params![batch.canvas.as_str(), id, batch.frames, now + CURSOR_TTL_MS])?;
                    }
                    Ok(())
                })
            }
            Job::Heartbeat => {
                let (id, listen) = (self.settings.instance_id.clone(), self.settings.listen.clone());
                self.write(|tx| {
                    tx.prepare_cached(
                        "INSERT INTO instances (instance_id, pid, listen, started_at, heartbeat_at)
                         VALUES (?1, ?2, ?3, ?4, ?4)
                         ON CONFLICT (instance_id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
                    )?
                    .execute(params![id, std::process::id(), listen, now])
                    .map(drop)
                })
            }
            Job::Watermarks(marks) => {
                let id = self.settings.instance_id.clone();
                self.write(|tx| {
                    let mut upsert = tx.prepare_cached(
                        "INSERT INTO canvas_watermarks
                             (canvas_id, server_instance_id, last_processed_id, last_seq, updated_at)
                         VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (canvas_id, server_instance_id) DO UPDATE SET
                             last_processed_id = excluded.last_processed_id,
                             last_seq = excluded.last_seq, updated_at = excluded.updated_at",
                    )?;
                    for m in &marks {
                        upsert.execute(params![m.canvas.as_str(), id, m.last_id, m.last_seq as i64, now])?;
                    }
                    Ok(())
                })
            }
            Job::Barrier(done) => {
                let _ = done.send(());
                Ok(())
            }
            Job::Stop(_) => unreachable!("handled by run"),
        };
        match result {
            Ok(()) => self.shared.write_succeeded(),
            Err(error) => {
                tracing::warn!(%error, "maintenance write failed");
                self.shared.write_failed(now, &describe(&error));
            }
        }
    }

    /// One short write transaction.
    pub(super) fn write<T>(&mut self, f: impl FnOnce(&Connection) -> Result<T, SqlError>) -> Result<T, SqlError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = f(&tx)?;
        tx.commit()?;
        Ok(value)
    }
}
