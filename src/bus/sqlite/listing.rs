//! `GET /api/v1/canvases` on the shared file: canvases in id order with their head and what is on them,
//! counted across instances (the `connections` table is every instance's).

use deadpool_sqlite::rusqlite::{params, Connection, Result};

use super::queries;
use crate::bus::{CanvasPage, CanvasSummary};
use crate::protocol::CanvasId;

/// At most `limit` canvases after `after` (all with `None`), only those with a connection if `active`.
/// `next` is the last one listed when the page is full (there may be more), else `None`.
pub fn canvases(
    conn: &Connection,
    db_epoch: &str,
    after: Option<&CanvasId>,
    limit: u32,
    active: bool,
) -> Result<CanvasPage> {
    let mut stmt = conn.prepare_cached(
        "SELECT c.canvas_id, c.last_seq, c.generation,
                (SELECT count(*) FROM connections k WHERE k.canvas_id = c.canvas_id),
                (SELECT count(DISTINCT user_id) FROM connections k WHERE k.canvas_id = c.canvas_id),
                (SELECT count(*) FROM canvas_objects o WHERE o.canvas_id = c.canvas_id)
         FROM canvases c
         WHERE c.canvas_id > ?1
           AND (?2 = 0 OR EXISTS (SELECT 1 FROM connections k WHERE k.canvas_id = c.canvas_id))
         ORDER BY c.canvas_id LIMIT ?3",
    )?;
    let after = after.map_or("", CanvasId::as_str);
    let rows = stmt.query_map(params![after, active, limit], |r| {
        Ok(CanvasSummary {
            canvas: r.get(0)?,
            seq: r.get::<_, i64>(1)? as u64,
            epoch: queries::epoch(db_epoch, r.get(2)?),
            connections: r.get::<_, i64>(3)? as u64,
            users: r.get::<_, i64>(4)? as u64,
            objects: r.get::<_, i64>(5)? as u64,
        })
    })?;
    let canvases = rows.collect::<Result<Vec<_>>>()?;
    let next = (canvases.len() == limit as usize).then(|| canvases.last().map(|c| c.canvas.clone())).flatten();
    Ok(CanvasPage { canvases, next })
}
