//! The consumers' store on the shared file (see `crate::bus::consumer`). A position is a `message_queue`
//! row id: rows are inserted under the file's one write lock, so ids follow commit order across every
//! process, and AUTOINCREMENT never reuses one. Reads run on a pool connection in one transaction; leases
//! and positions are writer jobs (`writer/consumer.rs`).

use async_trait::async_trait;
use deadpool_sqlite::rusqlite::{params, Connection, OptionalExtension, Result, Row};
use tokio::sync::oneshot;

use super::writer::{ConsumerJob, Job};
use super::{queries, SqliteBus};
use crate::bus::consumer::{Backlog, CanvasTail, ConsumerStore, Delivered, LogPage, Logged, Saved};
use crate::bus::BusError;
use crate::protocol::CanvasId;

const COLUMNS: &str = "id, canvas_id, generation, seq, message_type, sender, payload, created_at";

#[async_trait]
impl ConsumerStore for SqliteBus {
    fn is_position(&self, position: &str) -> bool {
        !position.is_empty()
            && position.len() <= 19
            && position.bytes().all(|b| b.is_ascii_digit())
            && position.parse::<i64>().is_ok()
    }

    fn epoch_of(&self, generation: u64) -> String {
        queries::epoch(&self.inner.db_epoch, generation as i64)
    }

    async fn log_head(&self) -> Result<String, BusError> {
        self.read(|conn| head(conn).map(|id| id.to_string())).await
    }

    async fn log_after(&self, after: &str, limit: usize) -> Result<LogPage, BusError> {
        let after: i64 = after.parse().unwrap_or(0);
        self.read(move |conn| {
            let tx = conn.transaction()?;
            let pruned: i64 = tx
                .prepare_cached("SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'pruned_id'")?
                .query_row([], |row| row.get(0))
                .optional()?
                .unwrap_or(0);
            // Cleanup deletes by purge_at, not by id (rows a webhook has not delivered stay longer), so rows
            // below the highest id deleted may still be there, among others that are gone: a position
            // below it goes on from after it, with a gap.
            let entries = tx
                .prepare_cached(&format!("SELECT {COLUMNS} FROM message_queue WHERE id > ?1 ORDER BY id LIMIT ?2"))?
                .query_map(params![after.max(pruned), limit as i64], logged)?
                .collect::<Result<Vec<_>>>()?;
            let oldest = match entries.first() {
                _ if after >= pruned => None,
                Some(first) => Some(first.position.clone()),
                None => Some(head(&tx)?.to_string()),
            };
            Ok(LogPage { entries, oldest })
        })
        .await
    }

    async fn canvas_tail(
        &self,
        canvas: &CanvasId,
        generation: u64,
        after: u64,
        limit: usize,
    ) -> Result<CanvasTail, BusError> {
        let canvas = canvas.clone();
        self.read(move |conn| {
            let tx = conn.transaction()?;
            let (head_generation, seq): (i64, i64) = tx
                .prepare_cached("SELECT generation, last_seq FROM canvases WHERE canvas_id = ?1")?
                .query_row([canvas.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?
                .unwrap_or((0, 0));
            let mut entries = Vec::new();
            if head_generation as u64 == generation {
                entries = tx
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM message_queue
                         WHERE canvas_id = ?1 AND seq > ?2 AND generation = ?3 ORDER BY seq LIMIT ?4"
                    ))?
                    .query_map(params![canvas.as_str(), after as i64, generation as i64, limit as i64], logged)?
                    .map(|entry| entry.map(|e| Logged { position: String::new(), ..e }))
                    .collect::<Result<Vec<_>>>()?;
            }
            Ok(CanvasTail { generation: head_generation as u64, seq: seq as u64, entries })
        })
        .await
    }

    async fn backlog(
        &self,
        after: Option<CanvasId>,
        limit: usize,
    ) -> Result<(Vec<Backlog>, Option<CanvasId>), BusError> {
        let after = after.map(|c| c.as_str().to_owned()).unwrap_or_default();
        self.read(move |conn| {
            let rows = conn
                .prepare_cached(
                    "SELECT c.canvas_id, c.generation, c.last_seq, p.generation, p.seq
                     FROM canvases c LEFT JOIN webhook_positions p ON p.canvas_id = c.canvas_id
                     WHERE c.canvas_id > ?1 ORDER BY c.canvas_id LIMIT ?2",
                )?
                .query_map(params![after, limit as i64], |row| {
                    let head: (String, i64, i64) = (row.get(0)?, row.get(1)?, row.get(2)?);
                    let delivered: (Option<i64>, Option<i64>) = (row.get(3)?, row.get(4)?);
                    Ok((head, delivered))
                })?
                .collect::<Result<Vec<_>>>()?;
            let last = (rows.len() == limit).then(|| rows.last().map(|((c, ..), _)| c.clone())).flatten();
            let pending = rows
                .into_iter()
                .filter(|((_, generation, seq), delivered)| match delivered {
                    (Some(g), Some(s)) => g != generation || s < seq,
                    _ => *seq > 0,
                })
                .filter_map(|((canvas, generation, seq), _)| {
                    let canvas = CanvasId::parse(&canvas).ok()?;
                    Some(Backlog { canvas, generation: generation as u64, seq: seq as u64 })
                })
                .collect();
            Ok((pending, last.and_then(|c| CanvasId::parse(&c).ok())))
        })
        .await
    }

    async fn delivered(&self, canvas: &CanvasId) -> Result<Option<Delivered>, BusError> {
        let canvas = canvas.clone();
        self.read(move |conn| {
            conn.prepare_cached("SELECT generation, seq, inflight FROM webhook_positions WHERE canvas_id = ?1")?
                .query_row([canvas.as_str()], |row| {
                    Ok(Delivered {
                        generation: row.get::<_, i64>(0)? as u64,
                        seq: row.get::<_, i64>(1)? as u64,
                        inflight: row.get::<_, Option<i64>>(2)?.map(|s| s as u64),
                    })
                })
                .optional()
        })
        .await
    }

    async fn save_delivered(
        &self,
        canvas: &CanvasId,
        lease: &str,
        holder: &str,
        delivered: Delivered,
    ) -> Result<Saved, BusError> {
        let (reply, saved) = oneshot::channel();
        let (canvas, lease, holder) = (canvas.clone(), lease.to_owned(), holder.to_owned());
        self.job(Job::Consumer(ConsumerJob::SaveDelivered { canvas, lease, holder, delivered, reply })).await?;
        saved.await.map_err(|_| BusError::ShuttingDown)?
    }

    async fn hold_leases(&self, holder: &str, names: &[String], ttl_ms: u64) -> Result<Vec<bool>, BusError> {
        let (reply, held) = oneshot::channel();
        let (holder, names) = (holder.to_owned(), names.to_vec());
        self.job(Job::Consumer(ConsumerJob::HoldLeases { holder, names, ttl_ms, reply })).await?;
        held.await.map_err(|_| BusError::ShuttingDown)?
    }

    /// Waits for the commit: a caller that asks for the lease again afterwards must not have its renewal
    /// deleted by a release still queued behind it.
    async fn release_leases(&self, holder: &str, names: &[String]) -> Result<(), BusError> {
        let (reply, released) = oneshot::channel();
        let (holder, names) = (holder.to_owned(), names.to_vec());
        self.job(Job::Consumer(ConsumerJob::ReleaseLeases { holder, names, reply })).await?;
        released.await.map_err(|_| BusError::ShuttingDown)?
    }
}

/// The largest row id ever given (rows deleted since included), 0 for an empty log.
fn head(conn: &Connection) -> Result<i64> {
    conn.prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'message_queue'")?
        .query_row([], |row| row.get(0))
        .optional()
        .map(Option::unwrap_or_default)
}

fn logged(row: &Row<'_>) -> Result<Logged> {
    Ok(Logged {
        position: row.get::<_, i64>(0)?.to_string(),
        canvas: row.get(1)?,
        generation: row.get::<_, i64>(2)? as u64,
        seq: row.get::<_, i64>(3)? as u64,
        kind: row.get(4)?,
        from: row.get(5)?,
        data: row.get(6)?,
        ts: row.get(7)?,
    })
}
