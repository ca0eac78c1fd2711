//! The file's side of history (see `crate::store::history`): snapshots kept past the newest, with the commit
//! time of their seq and an optional name; the floor (`canvases.hist_seq`) below which a canvas's object ops
//! may go with the log; the reads of `?at=` and `GET …/versions`; naming, forking and thinning, each one
//! short write transaction on the writer's connection.

use deadpool_sqlite::rusqlite::{params, Connection, OptionalExtension, Result};

use super::commit::next_generation;
use super::jobs::Reply;
use super::reads::{self, RETIRED};
use super::unavailable;
use super::writer::SqliteWriter;
use crate::protocol::CanvasId;
use crate::store::history::{AtRead, Fork, HistoryDue, Named, Thinning, Version};

/// `Store::read_at`: call it inside a read transaction.
pub fn read_at(conn: &Connection, canvas: &CanvasId, at: u64) -> Result<AtRead> {
    let Some(head) = reads::head(conn, canvas)? else { return Ok(AtRead::default()) };
    let floor: i64 = conn
        .prepare_cached("SELECT hist_seq FROM canvases WHERE canvas_id = ?1")?
        .query_row([canvas.as_str()], |row| row.get(0))?;
    let floor = floor.max(0) as u64;
    let upto = at.min(head.seq);
    let snapshot = reads::snapshot(conn, canvas, head.generation, upto)?;
    let from = snapshot.as_ref().map_or(0, |s| s.seq);
    let complete = from >= floor || from == upto;
    let ops = match complete {
        true => reads::ops_after(conn, canvas, head.generation, from, upto)?,
        false => Vec::new(),
    };
    Ok(AtRead { head: Some(head), floor, snapshot, ops })
}

/// `Store::versions`: call it inside a read transaction.
pub fn versions(
    conn: &Connection,
    canvas: &CanvasId,
    generation: u64,
    before: u64,
    limit: usize,
) -> Result<Vec<Version>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, ts, name, length(json) FROM snapshots WHERE canvas_id = ?1 AND generation = ?2 AND seq < ?3
         ORDER BY seq DESC LIMIT ?4",
    )?;
    let before = before.min(i64::MAX as u64) as i64;
    let rows = stmt.query_map(params![canvas.as_str(), generation as i64, before, limit as i64], version_of)?;
    rows.collect()
}

fn version_of(row: &deadpool_sqlite::rusqlite::Row<'_>) -> Result<Version> {
    Ok(Version {
        seq: row.get::<_, i64>(0)? as u64,
        ts: row.get(1)?,
        name: row.get(2)?,
        bytes: row.get::<_, i64>(3)? as u64,
    })
}

/// The commit time of a seq: its entry's while the log keeps it, else the canvas's last commit's.
fn seq_ts(tx: &Connection, canvas: &CanvasId, generation: u64, seq: u64, now: i64) -> Result<i64> {
    let logged: Option<i64> = tx
        .prepare_cached("SELECT created_at FROM message_queue WHERE canvas_id = ?1 AND generation = ?2 AND seq = ?3")?
        .query_row(params![canvas.as_str(), generation as i64, seq as i64], |row| row.get(0))
        .optional()?;
    match logged {
        Some(ts) => Ok(ts),
        None => tx
            .prepare_cached("SELECT updated_at FROM canvases WHERE canvas_id = ?1")?
            .query_row([canvas.as_str()], |row| row.get(0))
            .optional()
            .map(|ts| ts.unwrap_or(now)),
    }
}

/// `WriterJob::PutSnapshot`: kept only if the canvas is still in that generation and has no newer one, with
/// the commit time of its seq. With history, older snapshots stay (thinning drops them); without
/// (`history_ms` 0), the unnamed older ones go and the floor moves up to it.
pub(in crate::store::sqlite) fn put_snapshot(
    tx: &Connection,
    canvas: &CanvasId,
    (generation, seq): (u64, u64),
    json: &[u8],
    now: i64,
    history_ms: i64,
) -> Result<bool> {
    let moved = tx
        .prepare_cached(
            "UPDATE canvases SET snap_seq = ?3 WHERE canvas_id = ?1 AND generation = ?2 AND snap_seq < ?3
             AND last_seq >= ?3",
        )?
        .execute(params![canvas.as_str(), generation as i64, seq as i64])?;
    if moved == 0 {
        return Ok(false);
    }
    let ts = seq_ts(tx, canvas, generation, seq, now)?;
    tx.prepare_cached(
        "INSERT INTO snapshots (canvas_id, generation, seq, created_at, ts, json) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (canvas_id, generation, seq) DO NOTHING",
    )?
    .execute(params![canvas.as_str(), generation as i64, seq as i64, now, ts, json])?;
    // Another generation's snapshots are no one's (a reset drops them; this is for a file older than that).
    tx.prepare_cached("DELETE FROM snapshots WHERE canvas_id = ?1 AND generation != ?2")?
        .execute(params![canvas.as_str(), generation as i64])?;
    if history_ms == 0 {
        tx.prepare_cached("DELETE FROM snapshots WHERE canvas_id = ?1 AND seq < ?2 AND name IS NULL")?
            .execute(params![canvas.as_str(), seq as i64])?;
        tx.prepare_cached("UPDATE canvases SET hist_seq = max(hist_seq, ?2) WHERE canvas_id = ?1")?
            .execute(params![canvas.as_str(), seq as i64])?;
        drop_retired(tx, canvas, generation)?;
    }
    Ok(true)
}

/// `WriterJob::NameVersion`.
pub(super) fn name_version(
    tx: &Connection,
    canvas: &CanvasId,
    (generation, seq): (u64, u64),
    name: &str,
    json: &[u8],
    now: i64,
) -> Result<Named> {
    let current: Option<i64> = tx
        .prepare_cached("SELECT generation FROM canvases WHERE canvas_id = ?1 AND last_seq >= ?2")?
        .query_row(params![canvas.as_str(), seq as i64], |row| row.get(0))
        .optional()?;
    if current != Some(generation as i64) {
        return Ok(Named::Moved);
    }
    let ts = seq_ts(tx, canvas, generation, seq, now)?;
    tx.prepare_cached(
        "INSERT INTO snapshots (canvas_id, generation, seq, created_at, ts, json, name)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (canvas_id, generation, seq) DO UPDATE SET name = excluded.name",
    )?
    .execute(params![canvas.as_str(), generation as i64, seq as i64, now, ts, json, name])?;
    tx.prepare_cached("UPDATE canvases SET snap_seq = max(snap_seq, ?2) WHERE canvas_id = ?1")?
        .execute(params![canvas.as_str(), seq as i64])?;
    Ok(Named::Done)
}

/// `WriterJob::UnnameVersion`.
pub(super) fn unname_version(tx: &Connection, canvas: &CanvasId, generation: u64, seq: u64) -> Result<bool> {
    let changed = tx
        .prepare_cached(
            "UPDATE snapshots SET name = NULL
             WHERE canvas_id = ?1 AND generation = ?2 AND seq = ?3 AND name IS NOT NULL",
        )?
        .execute(params![canvas.as_str(), generation as i64, seq as i64])?;
    Ok(changed > 0)
}

/// `WriterJob::Fork`: a new generation of `to` at seq 0 with the fork's snapshot, unless `to` has a seq, an
/// object or a connection. Returns the new generation.
pub(super) fn fork(tx: &Connection, to: &CanvasId, fork: &Fork, now: i64, forget_after: i64) -> Result<Option<u64>> {
    let taken: bool = tx
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM canvases WHERE canvas_id = ?1 AND (last_seq > 0 OR objects > 0))
                 OR EXISTS (SELECT 1 FROM connections WHERE canvas_id = ?1)",
        )?
        .query_row([to.as_str()], |row| row.get(0))?;
    if taken {
        return Ok(None);
    }
    let generation = next_generation(tx)?;
    // An empty fork may be forgotten like any empty canvas; one with objects is kept.
    let forget = (fork.objects == 0).then_some(forget_after);
    tx.prepare_cached(
        "INSERT INTO canvases (canvas_id, last_seq, generation, created_at, updated_at, gen_at, state_bytes, objects,
             forget_after, forget_at)
         VALUES (?1, 0, ?2, ?3, ?3, ?3, ?4, ?5, ?6, ?3 + ?6)
         ON CONFLICT (canvas_id) DO UPDATE SET generation = excluded.generation, last_seq = 0, rev = rev + 1,
             state_seq = 0, state_bytes = excluded.state_bytes, objects = excluded.objects, snap_seq = 0,
             pruned_seq = 0, hist_seq = 0, gen_at = excluded.gen_at, thinned_at = 0,
             updated_at = excluded.updated_at, forget_after = excluded.forget_after, forget_at = excluded.forget_at",
    )?
    .execute(params![to.as_str(), generation as i64, now, fork.bytes as i64, fork.objects as i64, forget])?;
    for table in ["snapshots", "idempotency_keys"] {
        tx.prepare_cached(&format!("DELETE FROM {table} WHERE canvas_id = ?1"))?.execute([to.as_str()])?;
    }
    tx.prepare_cached(
        "INSERT INTO snapshots (canvas_id, generation, seq, created_at, ts, json) VALUES (?1, ?2, 0, ?3, ?3, ?4)",
    )?
    .execute(params![to.as_str(), generation as i64, now, &fork.json[..]])?;
    Ok(Some(generation))
}

/// `Store::history_due`: call it inside a read transaction.
pub fn history_due(conn: &Connection, before: i64, limit: usize) -> Result<Vec<HistoryDue>> {
    let due: Vec<(String, i64, i64, i64)> = conn
        .prepare_cached(
            "SELECT canvas_id, generation, hist_seq, gen_at FROM canvases
             WHERE hist_seq < snap_seq AND thinned_at < ?1 ORDER BY thinned_at LIMIT ?2",
        )?
        .query_map(params![before, limit as i64], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))?
        .collect::<Result<_>>()?;
    let mut canvases = Vec::with_capacity(due.len());
    for (canvas, generation, floor, started) in due {
        let Ok(canvas) = CanvasId::parse(&canvas) else { continue };
        let mut versions = versions(conn, &canvas, generation as u64, u64::MAX, usize::MAX)?;
        versions.reverse();
        canvases.push(HistoryDue { canvas, generation: generation as u64, floor: floor as u64, started, versions });
    }
    Ok(canvases)
}

/// `WriterJob::Thin`: only in the generation thinned, never the newest snapshot nor a named one.
pub(in crate::store::sqlite) fn thin(
    tx: &Connection,
    canvas: &CanvasId,
    generation: u64,
    thinning: &Thinning,
    now: i64,
) -> Result<()> {
    let mut drop = tx.prepare_cached(
        "DELETE FROM snapshots WHERE canvas_id = ?1 AND generation = ?2 AND seq = ?3 AND name IS NULL
           AND seq < (SELECT snap_seq FROM canvases WHERE canvas_id = ?1)",
    )?;
    for seq in &thinning.drop {
        drop.execute(params![canvas.as_str(), generation as i64, *seq as i64])?;
    }
    tx.prepare_cached(
        "UPDATE canvases SET hist_seq = min(max(hist_seq, ?3), snap_seq), thinned_at = ?4
         WHERE canvas_id = ?1 AND generation = ?2",
    )?
    .execute(params![canvas.as_str(), generation as i64, thinning.floor as i64, now])?;
    drop_retired(tx, canvas, generation)
}

/// Deletes the object ops kept only for history (see `jobs::retire`) that the floor has passed: no state
/// kept needs them. Like any deletion of object ops it raises `pruned_seq`, so that a fold that knew the
/// canvas before them reads it whole (`commit.rs`). (`op > 0` names the index of object ops.)
fn drop_retired(tx: &Connection, canvas: &CanvasId, generation: u64) -> Result<()> {
    let dropped: Option<i64> = tx
        .prepare_cached(&format!(
            "DELETE FROM message_queue WHERE canvas_id = ?1 AND generation = ?2 AND op > 0 AND op > {RETIRED}
               AND seq <= (SELECT hist_seq FROM canvases WHERE canvas_id = ?1)
             RETURNING seq"
        ))?
        .query_map(params![canvas.as_str(), generation as i64], |row| row.get::<_, i64>(0))?
        .try_fold(None, |max: Option<i64>, seq| seq.map(|seq| max.max(Some(seq))))?;
    if let Some(seq) = dropped {
        tx.prepare_cached("UPDATE canvases SET pruned_seq = max(pruned_seq, ?2) WHERE canvas_id = ?1")?
            .execute(params![canvas.as_str(), seq])?;
    }
    Ok(())
}

/// History's writes, run by the writer like its other jobs.
#[derive(Debug)]
pub enum HistoryJob {
    Name { canvas: CanvasId, at: (u64, u64), name: String, json: bytes::Bytes, reply: Reply<Named> },
    Unname { canvas: CanvasId, at: (u64, u64), reply: Reply<bool> },
    Fork { to: CanvasId, fork: Fork, reply: Reply<Option<u64>> },
    Thin { canvas: CanvasId, generation: u64, thinning: Thinning, reply: Reply<()> },
}

impl SqliteWriter {
    /// Runs one of history's writes in its own transaction and answers it.
    pub(super) fn run_history(&mut self, job: HistoryJob, now: i64) {
        fn answer<T>(reply: Reply<T>, result: Result<T>) {
            let _ = reply.send(result.map_err(|error| unavailable(error).into()));
        }
        match job {
            HistoryJob::Name { canvas, at, name, json, reply } => {
                answer(reply, self.write(|tx| name_version(tx, &canvas, at, &name, &json, now)))
            }
            HistoryJob::Unname { canvas, at: (generation, seq), reply } => {
                answer(reply, self.write(|tx| unname_version(tx, &canvas, generation, seq)))
            }
            HistoryJob::Fork { to, fork, reply } => {
                let forget_after = self.settings.forget_after_ms;
                let forked = self.write(|tx| self::fork(tx, &to, &fork, now, forget_after));
                if forked.is_ok() {
                    self.ring_peers();
                }
                answer(reply, forked)
            }
            HistoryJob::Thin { canvas, generation, thinning, reply } => {
                answer(reply, self.write(|tx| thin(tx, &canvas, generation, &thinning, now)))
            }
        }
    }
}
