//! Canvas state in the shared file (`canvas_objects`): planning and applying one object op inside the
//! writer's transaction (with what it does to the state's size), and reading a canvas's objects as the JSON
//! a welcome carries.

use bytes::Bytes;
use deadpool_sqlite::rusqlite::{params, Connection, OptionalExtension, Result};
use serde_json::value::RawValue;

use crate::object_ops::{self, JsonObject, ObjectOp, Refusal};
use crate::protocol::CanvasId;

/// What an accepted object op will do, before it is done: the writer checks the size first.
#[derive(Debug)]
pub struct Change {
    /// How the state's byte count moves (see [`JsonObject::member_bytes`]).
    pub delta: i64,
    write: Write,
}

#[derive(Debug)]
enum Write {
    /// The object's new JSON text (an update's merged text; `None`: the op's data as it arrived).
    Set(Option<String>),
    Remove,
}

/// Works out `op` with `data` against the canvas's state. `Ok(Err(refusal))` when the op is refused (update
/// or delete of a missing object): the caller must then not log the message.
pub fn plan(conn: &Connection, canvas: &CanvasId, op: &ObjectOp, data: &RawValue) -> Result<Result<Change, Refusal>> {
    let stored: Option<String> = conn
        .prepare_cached("SELECT data FROM canvas_objects WHERE canvas_id = ?1 AND object_id = ?2")?
        .query_row(params![canvas.as_str(), op.id()], |r| r.get(0))
        .optional()?;
    let id = op.id();
    let before = stored.as_ref().map_or(0, |stored| JsonObject::member_bytes(id, stored.len()));
    Ok(match (op, stored) {
        (ObjectOp::Create { .. }, _) => {
            Ok(Change { delta: JsonObject::member_bytes(id, data.get().len()) - before, write: Write::Set(None) })
        }
        (ObjectOp::Update { fields, .. }, Some(stored)) => match object_ops::merge(&stored, fields, data.get()) {
            Ok(merged) => Ok(Change {
                delta: JsonObject::member_bytes(id, merged.len()) - before,
                write: Write::Set(Some(merged)),
            }),
            Err(error) => Err(Refusal::Unmergeable { id: id.to_owned(), reason: error.to_string() }),
        },
        (ObjectOp::Delete { .. }, Some(_)) => Ok(Change { delta: -before, write: Write::Remove }),
        (ObjectOp::Update { .. } | ObjectOp::Delete { .. }, None) => Err(Refusal::Missing { id: id.to_owned() }),
    })
}

/// Applies a planned change.
pub fn apply(conn: &Connection, canvas: &CanvasId, op: &ObjectOp, data: &RawValue, change: Change) -> Result<()> {
    let (canvas, id) = (canvas.as_str(), op.id());
    match change.write {
        Write::Set(text) => {
            conn.prepare_cached(
                "INSERT INTO canvas_objects (canvas_id, object_id, data) VALUES (?1, ?2, ?3)
                 ON CONFLICT (canvas_id, object_id) DO UPDATE SET data = excluded.data",
            )?
            .execute(params![canvas, id, text.as_deref().unwrap_or(data.get())])?;
        }
        Write::Remove => {
            conn.prepare_cached("DELETE FROM canvas_objects WHERE canvas_id = ?1 AND object_id = ?2")?
                .execute(params![canvas, id])?;
        }
    }
    Ok(())
}

/// Plans and applies `op` at once, as the writer does (it checks the planned size against the limit in
/// between); returns how the state's byte count moved, or why the op was refused. For the fold's fuzz test.
#[cfg(test)]
pub fn fold(conn: &Connection, canvas: &CanvasId, op: &ObjectOp, data: &RawValue) -> Result<Result<i64, Refusal>> {
    Ok(match plan(conn, canvas, op, data)? {
        Ok(change) => {
            let delta = change.delta;
            apply(conn, canvas, op, data, change)?;
            Ok(delta)
        }
        Err(refusal) => Err(refusal),
    })
}

/// The canvas's objects as one JSON object, `{"id": object, ...}` in id order, at the caller's snapshot.
/// `size_hint` (the canvas's state bytes) sizes the buffer once.
pub fn objects_json(conn: &Connection, canvas: &CanvasId, size_hint: usize) -> Result<Bytes> {
    let mut stmt =
        conn.prepare_cached("SELECT object_id, data FROM canvas_objects WHERE canvas_id = ?1 ORDER BY object_id")?;
    let mut rows = stmt.query([canvas.as_str()])?;
    let mut json = JsonObject::with_capacity(size_hint);
    while let Some(row) = rows.next()? {
        json.push(row.get_ref(0)?.as_str()?, row.get_ref(1)?.as_bytes()?);
    }
    Ok(json.finish())
}
