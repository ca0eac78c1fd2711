//! The consumers' writes (see `crate::store::consumer`): leases of the webhook's shards, and a canvas's
//! delivered position, recorded only while the lease is held and never backwards (the lease check, the
//! comparison with the stored position and the write are one transaction). Each is one short write
//! transaction run between group commits, like the other jobs.

use deadpool_sqlite::rusqlite::{params, Connection, Error as SqlError, OptionalExtension};
use tokio::sync::oneshot;

use super::unavailable;
use super::writer::SqliteWriter;
use crate::protocol::CanvasId;
use crate::store::consumer::{Position, Saved};
use crate::store::BusError;

/// A consumer's write.
#[derive(Debug)]
pub enum ConsumerJob {
    /// Takes or renews each named lease for `holder` until `now + ttl_ms`; replies which it holds.
    HoldLeases { holder: String, names: Vec<String>, ttl_ms: u64, reply: oneshot::Sender<Result<Vec<bool>, BusError>> },
    /// Gives up those of the named leases `holder` holds; replies once that is committed.
    ReleaseLeases { holder: String, names: Vec<String>, reply: oneshot::Sender<Result<(), BusError>> },
    /// Records a canvas's delivered position over `expected`, if `holder` holds `lease` and the file holds
    /// exactly `expected`; replies what came of it.
    SavePosition {
        canvas: CanvasId,
        lease: String,
        holder: String,
        expected: Option<Position>,
        position: Position,
        reply: oneshot::Sender<Result<Saved, BusError>>,
    },
}

impl ConsumerJob {
    /// Leases go ahead of the queued messages: a late renewal loses the lease, and a release goes in the
    /// same lane so that it is never overtaken by a later renewal of the same lease.
    pub fn is_urgent(&self) -> bool {
        matches!(self, ConsumerJob::HoldLeases { .. } | ConsumerJob::ReleaseLeases { .. })
    }
}

/// Runs one consumer write in its own transaction and answers it.
pub(super) fn run(writer: &mut SqliteWriter, job: ConsumerJob, now: i64) {
    match job {
        ConsumerJob::HoldLeases { holder, names, ttl_ms, reply } => {
            let held = writer.write(|tx| hold_leases(tx, &holder, &names, now, now + ttl_ms as i64));
            let _ = reply.send(held.map_err(|e| unavailable(e).into()));
        }
        ConsumerJob::ReleaseLeases { holder, names, reply } => {
            let released = writer.write(|tx| {
                let mut release = tx.prepare_cached("DELETE FROM leases WHERE name = ?1 AND holder = ?2")?;
                names.iter().try_for_each(|name| release.execute(params![name, holder]).map(drop))
            });
            let _ = reply.send(released.map_err(|e| unavailable(e).into()));
        }
        ConsumerJob::SavePosition { canvas, lease, holder, expected, position, reply } => {
            let saved = writer.write(|tx| save_position(tx, &canvas, (&lease, &holder), expected, position, now));
            let _ = reply.send(saved.map_err(|e| unavailable(e).into()));
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

/// The position over `expected`, if the lease is still `holder`'s and the file holds exactly `expected`:
/// a compare-and-set (the rule of what may replace what is the webhook's). The rows delivered since the
/// last position are no longer kept past their TTL (`purge_at` back to `expires_at`).
fn save_position(
    tx: &Connection,
    canvas: &CanvasId,
    (lease, holder): (&str, &str),
    expected: Option<Position>,
    position: Position,
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
    let stored = tx
        .prepare_cached("SELECT generation, seq, inflight FROM webhook_positions WHERE canvas_id = ?1")?
        .query_row([canvas.as_str()], super::consumer::position_of)
        .optional()?;
    if stored != expected {
        return Ok(Saved::Behind);
    }
    let (generation, seq) = (position.generation as i64, position.seq as i64);
    let from = match stored {
        Some(stored) if stored.generation == position.generation => stored.seq as i64,
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
    .execute(params![canvas.as_str(), generation, seq, position.inflight.map(|s| s as i64), now])?;
    Ok(Saved::Recorded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Synchronous;
    use crate::store::sqlite::schema::{self, ConnSettings};
    use std::time::Duration;

    fn at(generation: u64, seq: u64, inflight: Option<u64>) -> Position {
        Position { generation, seq, inflight }
    }

    fn stored(conn: &Connection) -> Position {
        conn.query_row("SELECT generation, seq, inflight FROM webhook_positions WHERE canvas_id = 'c'", [], |r| {
            Ok(at(
                r.get::<_, i64>(0)? as u64,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, Option<i64>>(2)?.map(|p| p as u64),
            ))
        })
        .unwrap()
    }

    /// A save writes only over the position the file holds: a holder whose view is stale is refused and
    /// writes nothing, whatever it would have written.
    #[test]
    fn a_position_is_saved_only_over_the_one_the_file_holds_and_only_by_the_leaseholder() {
        let dir = tempfile::tempdir().unwrap();
        let settings =
            ConnSettings { synchronous: Synchronous::Normal, busy_timeout: Duration::from_secs(1), memory: false };
        let mut conn = schema::open(&dir.path().join("c.db"), settings).unwrap();
        schema::migrate(&mut conn).unwrap();
        let names = ["webhook:3".to_owned()];
        assert_eq!(hold_leases(&conn, "a", &names, 0, 10_000).unwrap(), [true]);
        let canvas = CanvasId::parse("c").unwrap();
        let save = |holder: &str, expected, position, now| {
            save_position(&conn, &canvas, ("webhook:3", holder), expected, position, now).unwrap()
        };
        for (expected, position, outcome) in [
            (None, at(1, 3, None), Saved::Recorded),
            (Some(at(1, 3, None)), at(1, 3, Some(6)), Saved::Recorded),
            (Some(at(1, 3, None)), at(1, 7, None), Saved::Behind),
            (None, at(1, 9, None), Saved::Behind),
            (Some(at(1, 3, Some(6))), at(1, 6, None), Saved::Recorded),
        ] {
            assert_eq!(save("a", expected, position, 1), outcome, "saving {position:?} over {expected:?}");
        }
        assert_eq!(stored(&conn), at(1, 6, None), "nothing refused was written");
        assert_eq!(save("b", Some(at(1, 6, None)), at(1, 9, None), 1), Saved::NotHolder);
        assert_eq!(save("a", Some(at(1, 6, None)), at(1, 9, None), 10_000), Saved::NotHolder, "a lease past its end");
        assert_eq!(stored(&conn), at(1, 6, None));
    }
}
