//! The consumers' writes (see `crate::bus::consumer`): leases of the webhook's shards, and a canvas's
//! delivered position, recorded only while the lease is held and never backwards (the lease check, the
//! comparison with the stored position and the write are one transaction). Each is one short write
//! transaction run between group commits, like the other jobs.

use deadpool_sqlite::rusqlite::{params, Connection, Error as SqlError, OptionalExtension};
use tokio::sync::oneshot;

use super::{unavailable, Writer};
use crate::bus::consumer::{Delivered, Saved};
use crate::bus::BusError;
use crate::protocol::CanvasId;

/// A consumer's write.
#[derive(Debug)]
pub enum ConsumerJob {
    /// Takes or renews each named lease for `holder` until `now + ttl_ms`; replies which it holds.
    HoldLeases { holder: String, names: Vec<String>, ttl_ms: u64, reply: oneshot::Sender<Result<Vec<bool>, BusError>> },
    /// Gives up those of the named leases `holder` holds; replies once that is committed.
    ReleaseLeases { holder: String, names: Vec<String>, reply: oneshot::Sender<Result<(), BusError>> },
    /// Records a canvas's delivered position if `holder` holds `lease` and it may replace the stored one;
    /// replies what came of it.
    SaveDelivered {
        canvas: CanvasId,
        lease: String,
        holder: String,
        delivered: Delivered,
        reply: oneshot::Sender<Result<Saved, BusError>>,
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

/// The position, if the lease is still `holder`'s and the position may replace the stored one (see
/// [`Delivered::may_replace`]); the rows delivered since the last position are no longer kept past their
/// TTL (`purge_at` back to `expires_at`).
fn save_delivered(
    tx: &Connection,
    canvas: &CanvasId,
    lease: &str,
    holder: &str,
    delivered: Delivered,
    now: i64,
) -> Result<Saved, SqlError> {
    let held = tx
        .prepare_cached("SELECT 1 FROM leases WHERE name = ?1 AND holder = ?2 AND expires_at > ?3")?
        .query_row(params![lease, holder, now], |_| Ok(()))
        .optional()?
        .is_some();
    if !held {
        return Ok(Saved::NotHolder);
    }
    let before = tx
        .prepare_cached("SELECT generation, seq, inflight FROM webhook_positions WHERE canvas_id = ?1")?
        .query_row([canvas.as_str()], |row| {
            Ok(Delivered {
                generation: row.get::<_, i64>(0)? as u64,
                seq: row.get::<_, i64>(1)? as u64,
                inflight: row.get::<_, Option<i64>>(2)?.map(|s| s as u64),
            })
        })
        .optional()?;
    if !delivered.may_replace(before) {
        return Ok(Saved::Behind);
    }
    let (generation, seq) = (delivered.generation as i64, delivered.seq as i64);
    let from = match before {
        Some(before) if before.generation == delivered.generation => before.seq as i64,
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
    Ok(Saved::Recorded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::sqlite::schema::{self, ConnSettings};
    use crate::config::Synchronous;
    use std::time::Duration;

    fn at(generation: u64, seq: u64, inflight: Option<u64>) -> Delivered {
        Delivered { generation, seq, inflight }
    }

    fn stored(conn: &Connection) -> Delivered {
        conn.query_row("SELECT generation, seq, inflight FROM webhook_positions WHERE canvas_id = 'c'", [], |r| {
            Ok(at(
                r.get::<_, i64>(0)? as u64,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, Option<i64>>(2)?.map(|p| p as u64),
            ))
        })
        .unwrap()
    }

    #[test]
    fn a_position_never_moves_backwards_and_a_fixed_batch_keeps_its_range() {
        let dir = tempfile::tempdir().unwrap();
        let settings =
            ConnSettings { synchronous: Synchronous::Normal, busy_timeout: Duration::from_secs(1), memory: false };
        let mut conn = schema::open(&dir.path().join("c.db"), settings).unwrap();
        schema::migrate(&mut conn).unwrap();
        let names = ["webhook:3".to_owned()];
        assert_eq!(hold_leases(&conn, "a", &names, 0, 10_000).unwrap(), [true]);
        let canvas = CanvasId::parse("c").unwrap();
        let save = |delivered| save_delivered(&conn, &canvas, "webhook:3", "a", delivered, 1).unwrap();
        for (delivered, outcome) in [
            (at(1, 3, None), Saved::Recorded),
            (at(1, 3, Some(6)), Saved::Recorded),
            (at(1, 3, Some(7)), Saved::Behind),
            (at(1, 3, None), Saved::Behind),
            (at(1, 6, None), Saved::Recorded),
            (at(1, 3, Some(7)), Saved::Behind),
            (at(1, 5, None), Saved::Behind),
            (at(0, 9, None), Saved::Behind),
        ] {
            assert_eq!(save(delivered), outcome, "saving {delivered:?}");
        }
        assert_eq!(stored(&conn), at(1, 6, None), "nothing refused was written");
        assert_eq!(save(at(1, 6, None)), Saved::Recorded, "the same position again (a retried save) is fine");
        assert_eq!(save(at(2, 0, None)), Saved::Recorded, "a new generation starts over");
        assert_eq!(stored(&conn), at(2, 0, None));
        let other = save_delivered(&conn, &canvas, "webhook:3", "b", at(2, 9, None), 1).unwrap();
        assert_eq!(other, Saved::NotHolder);
        let expired = save_delivered(&conn, &canvas, "webhook:3", "a", at(2, 9, None), 10_000).unwrap();
        assert_eq!(expired, Saved::NotHolder, "a lease past its end is nobody's");
        assert_eq!(stored(&conn), at(2, 0, None));
    }
}
