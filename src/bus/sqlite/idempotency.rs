//! Idempotency keys in the shared file (`idempotency_keys`), read and written inside the writer's
//! transaction: the check and the insert are one atomic step, so two instances racing on one key log it
//! once (their transactions are serialized by the file's write lock).

use deadpool_sqlite::rusqlite::{params, Connection, OptionalExtension, Result};

use crate::protocol::{CanvasId, IdempotencyKey, UserId};

/// The seq `user` logged `key` at on `canvas`, in `generation`, if that is not expired at `now`.
pub fn seen(
    conn: &Connection,
    canvas: &CanvasId,
    generation: u64,
    user: &UserId,
    key: &IdempotencyKey,
    now: i64,
) -> Result<Option<u64>> {
    conn.prepare_cached(
        "SELECT seq FROM idempotency_keys
         WHERE canvas_id = ?1 AND user_id = ?2 AND key = ?3 AND generation = ?4 AND expires_at > ?5",
    )?
    .query_row(params![canvas.as_str(), user.as_str(), key.as_str(), generation as i64, now], |r| r.get(0))
    .optional()
}

/// Records that `user` logged `key` on `canvas` at (`generation`, `seq`), until `expires_at`.
pub fn remember(
    conn: &Connection,
    canvas: &CanvasId,
    (generation, seq): (u64, u64),
    user: &UserId,
    key: &IdempotencyKey,
    expires_at: i64,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO idempotency_keys (canvas_id, user_id, key, generation, seq, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (canvas_id, user_id, key) DO UPDATE
         SET generation = excluded.generation, seq = excluded.seq, expires_at = excluded.expires_at",
    )?
    .execute(params![canvas.as_str(), user.as_str(), key.as_str(), generation as i64, seq as i64, expires_at])
    .map(drop)
}
