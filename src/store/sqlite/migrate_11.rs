//! The code of migration 11 (`migrations/0011_snapshots.sql`): each canvas's objects (`canvas_objects`)
//! become one snapshot at its head, written exactly as the fold writes one (objects in id order, each
//! object's text as stored), and the head gets the counts the fold keeps from now on. Then
//! `canvas_objects` goes.

use deadpool_sqlite::rusqlite::{params, Connection, Result};

use crate::clock::now_ms;
use crate::object_ops::JsonObject;

/// How long an empty canvas of a file migrated at rest may stay before it is forgotten (the fold sets this
/// from the TTL at its next commit).
const FORGET_AFTER_MS: i64 = 120_000;

pub fn objects_to_snapshots(tx: &Connection) -> Result<()> {
    let canvases: Vec<(String, i64, i64)> = tx
        .prepare("SELECT canvas_id, generation, last_seq FROM canvases")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
        .collect::<Result<_>>()?;
    let mut objects_of =
        tx.prepare("SELECT object_id, data FROM canvas_objects WHERE canvas_id = ?1 ORDER BY object_id")?;
    for (canvas, generation, seq) in canvases {
        let mut json = JsonObject::with_capacity(0);
        let mut count = 0i64;
        let mut rows = objects_of.query([&canvas])?;
        while let Some(row) = rows.next()? {
            json.push(row.get_ref(0)?.as_str()?, row.get_ref(1)?.as_bytes()?);
            count += 1;
        }
        if count > 0 {
            tx.execute(
                "INSERT INTO snapshots (canvas_id, generation, seq, created_at, json) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![canvas, generation, seq, now_ms(), &json.finish()[..]],
            )?;
        }
        tx.execute(
            "UPDATE canvases SET rev = 1, objects = ?2, snap_seq = CASE WHEN ?2 > 0 THEN last_seq ELSE 0 END,
                 connections = (SELECT count(*) FROM connections k WHERE k.canvas_id = ?1),
                 users = (SELECT count(DISTINCT user_id) FROM connections k WHERE k.canvas_id = ?1)
             WHERE canvas_id = ?1",
            params![canvas, count],
        )?;
    }
    tx.execute(
        "UPDATE canvases SET forget_after = ?1, forget_at = updated_at + ?1 WHERE objects = 0 AND connections = 0",
        [FORGET_AFTER_MS],
    )?;
    // When each connection opened, in microseconds.
    tx.execute_batch("UPDATE connections SET opened = connected_at * 1000; DROP TABLE canvas_objects;")
}
