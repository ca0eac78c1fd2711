//! Canvas state in the shared file (`canvas_objects`): folding one object op inside the writer's
//! transaction, and reading a canvas's objects inside a join's snapshot.

use deadpool_sqlite::rusqlite::{params, Connection, OptionalExtension, Result};
use serde_json::value::RawValue;

use crate::protocol::CanvasId;
use crate::state::{self, ObjectOp};

/// Applies `op` with `data` to the canvas's state. `Ok(Err(reason))` when the op is refused (update or
/// delete of a missing object): the caller must then not log the message.
pub fn fold(conn: &Connection, canvas: &CanvasId, op: &ObjectOp, data: &RawValue) -> Result<Result<(), String>> {
    let canvas = canvas.as_str();
    match op {
        ObjectOp::Create { id } => {
            conn.prepare_cached(
                "INSERT INTO canvas_objects (canvas_id, object_id, data) VALUES (?1, ?2, ?3)
                 ON CONFLICT (canvas_id, object_id) DO UPDATE SET data = excluded.data",
            )?
            .execute(params![canvas, id, data.get()])?;
        }
        ObjectOp::Update { id } => {
            let stored: Option<String> = conn
                .prepare_cached("SELECT data FROM canvas_objects WHERE canvas_id = ?1 AND object_id = ?2")?
                .query_row(params![canvas, id], |r| r.get(0))
                .optional()?;
            let Some(stored) = stored else { return Ok(Err(state::missing(id))) };
            let merged = match state::merge(&stored, data) {
                Ok(merged) => merged,
                Err(error) => return Ok(Err(format!("object {id:?} could not be updated: {error}"))),
            };
            conn.prepare_cached("UPDATE canvas_objects SET data = ?3 WHERE canvas_id = ?1 AND object_id = ?2")?
                .execute(params![canvas, id, merged])?;
        }
        ObjectOp::Delete { id } => {
            let removed = conn
                .prepare_cached("DELETE FROM canvas_objects WHERE canvas_id = ?1 AND object_id = ?2")?
                .execute(params![canvas, id])?;
            if removed == 0 {
                return Ok(Err(state::missing(id)));
            }
        }
    }
    Ok(Ok(()))
}

/// The canvas's objects as one JSON object text, `{"id": object, ...}`, at the caller's snapshot.
pub fn objects_json(conn: &Connection, canvas: &CanvasId) -> Result<String> {
    let mut stmt = conn.prepare_cached("SELECT object_id, data FROM canvas_objects WHERE canvas_id = ?1 ORDER BY object_id")?;
    let mut rows = stmt.query([canvas.as_str()])?;
    let mut json = String::from("{");
    while let Some(row) = rows.next()? {
        if json.len() > 1 {
            json.push(',');
        }
        let id: String = row.get(0)?;
        json.push_str(&serde_json::to_string(&id).unwrap_or_default());
        json.push(':');
        json.push_str(row.get_ref(1)?.as_str()?);
    }
    json.push('}');
    Ok(json)
}
