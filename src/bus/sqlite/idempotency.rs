//! Idempotency keys in the shared file (`idempotency_keys`), read and written inside the writer's
//! transaction: the check and the insert are one atomic step, so two instances racing on one key log it
//! once (their transactions are serialized by the file's write lock).

use deadpool_sqlite::rusqlite::{params, Connection, OptionalExtension, Result};

use crate::bus::Publish;

/// The seq `publish`'s idempotency key was logged at by its user on its canvas, in `generation`, if it has a
/// key and that is not expired at `now`.
pub fn repeat_of(conn: &Connection, publish: &Publish, generation: u64, now: i64) -> Result<Option<u64>> {
    let Some(key) = &publish.idempotency_key else { return Ok(None) };
    conn.prepare_cached(
        "SELECT seq FROM idempotency_keys
         WHERE canvas_id = ?1 AND user_id = ?2 AND key = ?3 AND generation = ?4 AND expires_at > ?5",
    )?
    .query_row(params![publish.canvas.as_str(), publish.from.as_str(), key.as_str(), generation as i64, now], |r| {
        r.get(0)
    })
    .optional()
}

/// Records that `publish`'s key (if it has one) was logged at (`generation`, `seq`), until `expires_at`.
pub fn remember(conn: &Connection, publish: &Publish, (generation, seq): (u64, u64), expires_at: i64) -> Result<()> {
    let Some(key) = &publish.idempotency_key else { return Ok(()) };
    let (canvas, user) = (publish.canvas.as_str(), publish.from.as_str());
    conn.prepare_cached(
        "INSERT INTO idempotency_keys (canvas_id, user_id, key, generation, seq, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (canvas_id, user_id, key) DO UPDATE
         SET generation = excluded.generation, seq = excluded.seq, expires_at = excluded.expires_at",
    )?
    .execute(params![canvas, user, key.as_str(), generation as i64, seq as i64, expires_at])
    .map(drop)
}
