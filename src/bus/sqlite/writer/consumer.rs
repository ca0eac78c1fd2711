//! The consumers' writes (see `crate::bus::consumer`): leases of the webhook's shards, and a canvas's
//! delivered position, recorded only while the lease is held. Each is one short write transaction run
//! between group commits, like the other jobs.

use deadpool_sqlite::rusqlite::{params, Connection, Error as SqlError, OptionalExtension};
use tokio::sync::oneshot;

use super::{unavailable, Writer};
use crate::bus::consumer::Delivered;
use crate::bus::BusError;
use crate::protocol::CanvasId;

/// A consumer's write.
#[derive(Debug)]
pub enum ConsumerJob {
    /// Takes or renews each named lease for `holder` until `now + ttl_ms`; replies which it holds.
    HoldLeases { holder: String, names: Vec<String>, ttl_ms: u64, reply: oneshot::Sender<Result<Vec<bool>, BusError>> },
    /// Gives up those of the named leases `holder` holds; replies once that is committed.
    ReleaseLeases { holder: String, names: Vec<String>, reply: oneshot::Sender<Result<(), BusError>> },
    /// Records a canvas's delivered position if `holder` holds `lease`; replies whether it did.
    SaveDelivered {
        canvas: CanvasId,
        lease: String,
        holder: String,
        delivered: Delivered,
        reply: oneshot::Sender<Result<bool, BusError>>,
    },
}

impl Writer {
    pub(super) fn run_consumer_job(&mut self, job: ConsumerJob, now: i64) -> Result<(), SqlError> {
        match job {
            ConsumerJob::HoldLeases { holder, names, ttl_ms, reply } => {
                let held = self.write(|tx| hold_leases(tx, &holder, &names, now, now + ttl_ms as i64));
                let _ = reply.send(held.as_ref().map(Clone::clone).map_err(|e| unavailable(e).into()));
                held.map(drop)
            }
            ConsumerJob::ReleaseLeases { holder, names, reply } => {
                let released = self.write(|tx| {
                    let mut release = tx.prepare_cached("DELETE FROM leases WHERE name = ?1 AND holder = ?2")?;
                    names.iter().try_for_each(|name| release.execute(params![name, holder]).map(drop))
                });
                let _ = reply.send(released.as_ref().map(|_| ()).map_err(|e| unavailable(e).into()));
                released
            }
            ConsumerJob::SaveDelivered { canvas, lease, holder, delivered, reply } => {
                let saved = self.write(|tx| save_delivered(tx, &canvas, &lease, &holder, delivered, now));
                let _ = reply.send(saved.as_ref().copied().map_err(|e| unavailable(e).into()));
                saved.map(drop)
            }
        }
    }
}

fn hold_leases(tx: &Connection, holder: &str, names: &[String], now: i64, until: i64) -> Result<Vec<bool>, SqlError> {
    let mut take = tx.prepare_cached(
        "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
         WHERE leases.holder = excluded.holder OR leases.expires_at <= ?4",
    )?;
    let mut holder_of = tx.prepare_cached("SELECT holder FROM leases WHERE name = ?1")?;
    names
        .iter()
        .map(|name| {
            take.execute(params![name, holder, until, now])?;
            Ok(holder_of.query_row([name], |row| row.get::<_, String>(0))? == holder)
        })
        .collect()
}

/// The position, if the lease is still `holder`'s; the rows delivered since the last position are no
/// longer kept past their TTL (`purge_at` back to `expires_at`).
fn save_delivered(
    tx: &Connection,
    canvas: &CanvasId,
    lease: &str,
    holder: &str,
    delivered: Delivered,
    now: i64,
) -> Result<bool, SqlError> {
    let held = tx
        .prepare_cached("SELECT 1 FROM leases WHERE name = ?1 AND holder = ?2 AND expires_at > ?3")?
        .query_row(params![lease, holder, now], |_| Ok(()))
        .optional()?
        .is_some();
    if !held {
        return Ok(false);
    }
    let before: Option<(i64, i64)> = tx
        .prepare_cached("SELECT generation, seq FROM webhook_positions WHERE canvas_id = ?1")?
        .query_row([canvas.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let (generation, seq) = (delivered.generation as i64, delivered.seq as i64);
    let from = match before {
        Some((g, s)) if g == generation => s,
        _ => 0,
    };
    if seq > from {
        tx.prepare_cached(
            "UPDATE message_queue SET purge_at = expires_at
             WHERE canvas_id = ?1 AND seq > ?2 AND seq <= ?3 AND generation = ?4",
        )?
        .execute(params![canvas.as_str(), from, seq, generation])?;
    }
    tx.prepare_cached(
        "INSERT INTO webhook_positions (canvas_id, generation, seq, inflight, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (canvas_id) DO UPDATE SET generation = excluded.generation, seq = excluded.seq,
             inflight = excluded.inflight, updated_at = excluded.updated_at",
    )?
    .execute(params![canvas.as_str(), generation, seq, delivered.inflight.map(|s| s as i64), now])?;
    Ok(true)
}
