//! The consumers' store on the shared file (see `crate::store::consumer`). A position is a `message_queue`
//! row id: rows are inserted under the file's one write lock, so ids follow commit order across every
//! process, and AUTOINCREMENT never reuses one. Reads run on a pool connection in one transaction; leases
//! and positions are writer jobs (`consumer_jobs.rs`).

use async_trait::async_trait;
use deadpool_sqlite::rusqlite::{params, Connection, OptionalExtension, Result, Row};
use tokio::sync::oneshot;

use super::consumer_jobs::ConsumerJob;
use super::jobs::WriterJob;
use super::reads::{self, RETIRED};
use super::SqliteStore;
use crate::protocol::CanvasId;
use crate::store::consumer::{ConsumerStore, LogPage, Position, Saved};
use crate::store::BusError;

const COLUMNS: &str = "id, canvas_id, generation, seq, message_type, sender, payload, created_at, origin_instance, op";

#[async_trait]
impl ConsumerStore for SqliteStore {
    fn is_position(&self, position: &str) -> bool {
        !position.is_empty()
            && position.len() <= 19
            && position.bytes().all(|b| b.is_ascii_digit())
            && position.parse::<i64>().is_ok()
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
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM message_queue WHERE id > ?1 AND op <= {RETIRED} ORDER BY id LIMIT ?2"
                ))?
                .query_map(params![after.max(pruned), limit as i64], |row| {
                    let entry = reads::entry_of(row)?;
                    Ok((entry.id.to_string(), entry))
                })?
                .collect::<Result<Vec<_>>>()?;
            let oldest = match entries.first() {
                _ if after >= pruned => None,
                Some((first, _)) => Some(first.clone()),
                None => Some(head(&tx)?.to_string()),
            };
            Ok(LogPage { entries, oldest })
        })
        .await
    }

    async fn positions(&self, canvases: &[CanvasId]) -> Result<Vec<Option<Position>>, BusError> {
        let canvases = canvases.to_vec();
        self.read(move |conn| {
            let mut read =
                conn.prepare_cached("SELECT generation, seq, inflight FROM webhook_positions WHERE canvas_id = ?1")?;
            canvases.iter().map(|canvas| read.query_row([canvas.as_str()], position_of).optional()).collect()
        })
        .await
    }

    async fn save_position(
        &self,
        canvas: &CanvasId,
        lease: &str,
        holder: &str,
        expected: Option<Position>,
        position: Position,
    ) -> Result<Saved, BusError> {
        let (reply, saved) = oneshot::channel();
        let (canvas, lease, holder) = (canvas.clone(), lease.to_owned(), holder.to_owned());
        let job = ConsumerJob::SavePosition { canvas, lease, holder, expected, position, reply };
        self.job(WriterJob::Consumer(job)).await?;
        saved.await.map_err(|_| BusError::ShuttingDown)?
    }

    async fn hold_leases(&self, holder: &str, names: &[String], ttl_ms: u64) -> Result<Vec<bool>, BusError> {
        let (reply, held) = oneshot::channel();
        let (holder, names) = (holder.to_owned(), names.to_vec());
        self.job(WriterJob::Consumer(ConsumerJob::HoldLeases { holder, names, ttl_ms, reply })).await?;
        held.await.map_err(|_| BusError::ShuttingDown)?
    }

    /// Waits for the commit: a caller that asks for the lease again afterwards must not have its renewal
    /// deleted by a release still queued behind it.
    async fn release_leases(&self, holder: &str, names: &[String]) -> Result<(), BusError> {
        let (reply, released) = oneshot::channel();
        let (holder, names) = (holder.to_owned(), names.to_vec());
        self.job(WriterJob::Consumer(ConsumerJob::ReleaseLeases { holder, names, reply })).await?;
        released.await.map_err(|_| BusError::ShuttingDown)?
    }
}

/// A `webhook_positions` row.
pub(super) fn position_of(row: &Row<'_>) -> Result<Position> {
    Ok(Position {
        generation: row.get::<_, i64>(0)? as u64,
        seq: row.get::<_, i64>(1)? as u64,
        inflight: row.get::<_, Option<i64>>(2)?.map(|s| s as u64),
    })
}

/// The largest row id ever given (rows deleted since included), 0 for an empty log.
fn head(conn: &Connection) -> Result<i64> {
    conn.prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'message_queue'")?
        .query_row([], |row| row.get(0))
        .optional()
        .map(Option::unwrap_or_default)
}
