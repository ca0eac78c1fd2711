//! Reads of the shared file, as plain functions over a connection (inside the caller's transaction when it
//! needs them at one point of the log): heads, the state of a canvas (its newest snapshot and the object
//! ops after it), log ranges, connections, blocks. They return what is stored; expiry for clients is the
//! reader's to judge (every entry carries its commit time).

use std::sync::Arc;

use deadpool_sqlite::rusqlite::{params, Connection, OptionalExtension, Result, Row};
use serde_json::value::RawValue;

use crate::protocol::{null_value, CanvasId, UserId};
use crate::store::records::Conn;
use crate::store::records::{ConnRow, Head, LogEntry};
use crate::store::{CanvasRead, SnapshotRead, Want, Whose};

const HEAD_COLUMNS: &str = "generation, last_seq, rev, state_seq, state_bytes, objects, connections, users";

fn head_of(row: &Row<'_>, at: usize) -> Result<Head> {
    let n = |i: usize| row.get::<_, i64>(at + i).map(|v| v.max(0) as u64);
    Ok(Head {
        generation: n(0)?,
        seq: n(1)?,
        rev: n(2)?,
        version: n(3)?,
        bytes: n(4)?,
        objects: n(5)?,
        connections: n(6)?,
        users: n(7)?,
    })
}

/// A canvas's head; `None` for a canvas nothing was committed to.
pub fn head(conn: &Connection, canvas: &CanvasId) -> Result<Option<Head>> {
    conn.prepare_cached(&format!("SELECT {HEAD_COLUMNS} FROM canvases WHERE canvas_id = ?1"))?
        .query_row([canvas.as_str()], |row| head_of(row, 0))
        .optional()
}

/// Canvases in id order after `after`, at most `limit`, with their heads.
pub fn heads(conn: &Connection, after: Option<&CanvasId>, limit: usize) -> Result<Vec<(CanvasId, Head)>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT canvas_id, {HEAD_COLUMNS} FROM canvases WHERE canvas_id > ?1 ORDER BY canvas_id LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![after.map_or("", CanvasId::as_str), limit as i64], |row| {
        Ok((row.get::<_, String>(0)?, head_of(row, 1)?))
    })?;
    let mut heads = Vec::new();
    for row in rows {
        let (canvas, head) = row?;
        // Rows are written only by this relay, from validated ids.
        if let Ok(canvas) = CanvasId::parse(&canvas) {
            heads.push((canvas, head));
        }
    }
    Ok(heads)
}

/// The seq up to which cleanup may have dropped a canvas's object ops (0: none dropped).
pub fn pruned_seq(conn: &Connection, canvas: &CanvasId) -> Result<u64> {
    conn.prepare_cached("SELECT pruned_seq FROM canvases WHERE canvas_id = ?1")?
        .query_row([canvas.as_str()], |r| r.get::<_, i64>(0))
        .optional()
        .map(|seq| seq.unwrap_or(0).max(0) as u64)
}

/// The newest snapshot of a canvas's generation at or below `upto`.
pub fn snapshot(conn: &Connection, canvas: &CanvasId, generation: u64, upto: u64) -> Result<Option<SnapshotRead>> {
    conn.prepare_cached(
        "SELECT seq, json FROM snapshots WHERE canvas_id = ?1 AND generation = ?2 AND seq <= ?3
         ORDER BY seq DESC LIMIT 1",
    )?
    .query_row(params![canvas.as_str(), generation as i64, upto as i64], |row| {
        let json = bytes::Bytes::copy_from_slice(row.get_ref(1)?.as_bytes()?);
        Ok(SnapshotRead { seq: row.get::<_, i64>(0)? as u64, json })
    })
    .optional()
}

const LOG_COLUMNS: &str =
    "id, canvas_id, generation, seq, message_type, sender, payload, created_at, origin_instance, op";

/// One row of `message_queue`.
pub fn entry_of(row: &Row<'_>) -> Result<LogEntry> {
    let canvas: String = row.get(1)?;
    let data = RawValue::from_string(row.get(6)?).unwrap_or_else(|error| {
        // Only this relay writes the file, after validating the JSON; a bad payload means someone edited
        // it. Relay the seq with null data rather than leave a gap in every stream.
        tracing::error!(%error, "stored payload is not JSON; relaying null");
        null_value()
    });
    Ok(LogEntry {
        id: row.get(0)?,
        canvas: CanvasId::parse(&canvas).unwrap_or_else(|_| CanvasId::parse("invalid").expect("a valid id")),
        generation: row.get::<_, i64>(2)? as u64,
        seq: row.get::<_, i64>(3)? as u64,
        kind: row.get(4)?,
        from: row.get(5)?,
        data,
        ts: row.get(7)?,
        instance: row.get(8)?,
        conn: None,
        reference: None,
        restore: is_restore(row.get(9)?),
    })
}

/// `message_queue.op`: 0 for a message that is no object op; 1 for an object op, 2 for one a restore logged;
/// 3 and 4 for those once past their keep time, kept only for history (below its floor they go): no
/// reader of the log sees them, only the fold's reads of object ops.
pub const RETIRED: i64 = 2;

/// Whether a row's `op` says a restore logged it.
pub fn is_restore(op: i64) -> bool {
    op > 0 && op % 2 == 0
}

/// The object ops of a canvas's generation with `after < seq <= upto`, in seq order (those kept only for
/// history too).
pub fn ops_after(
    conn: &Connection,
    canvas: &CanvasId,
    generation: u64,
    after: u64,
    upto: u64,
) -> Result<Vec<LogEntry>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {LOG_COLUMNS} FROM message_queue
         WHERE canvas_id = ?1 AND generation = ?2 AND seq > ?3 AND seq <= ?4 AND op > 0 ORDER BY seq"
    ))?;
    let rows = stmt.query_map(params![canvas.as_str(), generation as i64, after as i64, upto as i64], entry_of)?;
    rows.collect()
}

/// The entries of a canvas's generation with `after < seq <= upto`, at most `limit`, in seq order. Seqs
/// past `i64::MAX` (no canvas has them) select nothing.
pub fn log(
    conn: &Connection,
    canvas: &CanvasId,
    generation: u64,
    after: u64,
    upto: u64,
    limit: usize,
) -> Result<Vec<LogEntry>> {
    let (Ok(after), Ok(upto)) = (i64::try_from(after), i64::try_from(upto)) else { return Ok(Vec::new()) };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {LOG_COLUMNS} FROM message_queue
         WHERE canvas_id = ?1 AND generation = ?2 AND seq > ?3 AND seq <= ?4 AND op <= {RETIRED}
         ORDER BY seq LIMIT ?5"
    ))?;
    let rows = stmt.query_map(params![canvas.as_str(), generation as i64, after, upto, limit as i64], entry_of)?;
    rows.collect()
}

fn conn_row(row: &Row<'_>, at: usize) -> Result<Option<ConnRow>> {
    let (id, instance, user, name): (String, String, String, Option<String>) =
        (row.get(at)?, row.get(at + 1)?, row.get(at + 2)?, row.get(at + 3)?);
    let opened: i64 = row.get(at + 4)?;
    let state: Option<String> = row.get(at + 5)?;
    let Ok(conn) = id.parse() else {
        tracing::warn!(id, "skipping a malformed connections row");
        return Ok(None);
    };
    let row = Conn {
        user: Arc::from(user),
        name: name.map(Arc::from),
        instance: Arc::from(instance),
        opened: opened.max(0) as u64,
    };
    Ok(Some(ConnRow { conn, row, state: state.and_then(|text| RawValue::from_string(text).ok()) }))
}

const CONN_COLUMNS: &str = "conn_id, instance_id, user_id, name, opened, presence";

/// Every connection of a canvas.
pub fn conn_rows(conn: &Connection, canvas: &CanvasId) -> Result<Vec<ConnRow>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {CONN_COLUMNS} FROM connections WHERE canvas_id = ?1"))?;
    let rows = stmt.query_map([canvas.as_str()], |row| conn_row(row, 0))?;
    rows.filter_map(Result::transpose).collect()
}

/// Connections across canvases: everyone's, one user's, one instance's, or those of instances silent since
/// a time (or gone from the instances table: stopped, or forgotten).
pub fn connections(conn: &Connection, whose: &Whose) -> Result<Vec<(CanvasId, ConnRow)>> {
    let columns = "k.canvas_id, k.conn_id, k.instance_id, k.user_id, k.name, k.opened, k.presence";
    let (filter, value): (&str, Box<dyn deadpool_sqlite::rusqlite::ToSql>) = match whose {
        Whose::Everyone => ("?1 IS NULL", Box::new(Option::<i64>::None)),
        Whose::User(user) => ("k.user_id = ?1", Box::new(user.as_str().to_owned())),
        Whose::Instance(instance) => ("k.instance_id = ?1", Box::new(instance.clone())),
        Whose::SilentSince(before) => {
            ("k.instance_id NOT IN (SELECT instance_id FROM instances WHERE heartbeat_at >= ?1)", Box::new(*before))
        }
    };
    let mut stmt = conn.prepare_cached(&format!("SELECT {columns} FROM connections k WHERE {filter}"))?;
    let rows = stmt.query_map([value], |row| {
        let canvas: String = row.get(0)?;
        Ok(conn_row(row, 1)?.and_then(|found| Some((CanvasId::parse(&canvas).ok()?, found))))
    })?;
    Ok(rows.collect::<Result<Vec<_>>>()?.into_iter().flatten().collect())
}

/// A canvas at one point of its log, with the objects `want` asks for (its newest snapshot and the object
/// ops after it): call it inside a read transaction.
pub fn canvas(conn: &Connection, canvas: &CanvasId, want: Want) -> Result<CanvasRead> {
    let Some(head) = head(conn, canvas)? else {
        return Ok(CanvasRead { conns: conn_rows(conn, canvas)?, ..CanvasRead::default() });
    };
    let conns = conn_rows(conn, canvas)?;
    if want.skips(&head) {
        return Ok(CanvasRead { head: Some(head), conns, ..CanvasRead::default() });
    }
    let snapshot = snapshot(conn, canvas, head.generation, head.seq)?;
    let after = snapshot.as_ref().map_or(0, |s| s.seq);
    let ops = ops_after(conn, canvas, head.generation, after, head.seq)?;
    Ok(CanvasRead { head: Some(head), conns, snapshot, ops })
}

/// Canvases, at most `limit`, with object ops after their newest snapshot and no commit since `before`.
pub fn stale(conn: &Connection, before: i64, limit: usize) -> Result<Vec<CanvasId>> {
    let mut stmt =
        conn.prepare_cached("SELECT canvas_id FROM canvases WHERE state_seq > snap_seq AND updated_at < ?1 LIMIT ?2")?;
    let rows = stmt.query_map(params![before, limit as i64], |row| row.get::<_, String>(0))?;
    Ok(rows.collect::<Result<Vec<_>>>()?.into_iter().filter_map(|c| CanvasId::parse(&c).ok()).collect())
}

/// Until when (unix ms) `user` is blocked from `canvas`, if after `now`.
pub fn blocked_until(conn: &Connection, canvas: &CanvasId, user: &UserId, now: i64) -> Result<Option<i64>> {
    conn.prepare_cached(
        "SELECT max(blocked_until) FROM removals WHERE canvas_id = ?1 AND user_id = ?2 AND blocked_until > ?3",
    )?
    .query_row(params![canvas.as_str(), user.as_str(), now], |r| r.get(0))
}
