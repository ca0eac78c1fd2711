//! The watcher's reads of the shared file (new rows after its cursor, the relayed tables) and what
//! `/health` reads, as plain functions over a connection. Reads of canvases are in `reads.rs`.
//!
//! The watcher filters expired rows itself (`expires_at > now`), so what a client is sent never depends on
//! whether the cleanup task has run yet.

use deadpool_sqlite::rusqlite::{params, Connection, OptionalExtension, Result};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Message;

use crate::hub::Entry;
use crate::protocol::{logged_frame, null_value, reset_frame};
use crate::store::Instance;

/// The file's random id, written by the first migration.
pub fn db_epoch(conn: &Connection) -> Result<String> {
    conn.query_row("SELECT value FROM meta WHERE key = 'db_epoch'", [], |row| row.get(0))
}

/// One row of `message_queue`.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub id: i64,
    pub canvas: String,
    pub seq: u64,
    pub kind: String,
    pub payload: String,
    pub sender: String,
    pub created_at: i64,
    pub generation: u64,
    /// The instance that committed it.
    pub origin: String,
    /// An object op of a restore (see `LogEntry::restore`).
    pub restore: bool,
}

impl StoredMessage {
    fn from_row(row: &deadpool_sqlite::rusqlite::Row<'_>) -> Result<Self> {
        Ok(StoredMessage {
            id: row.get(0)?,
            canvas: row.get(1)?,
            seq: row.get::<_, i64>(2)? as u64,
            kind: row.get(3)?,
            payload: row.get(4)?,
            sender: row.get(5)?,
            created_at: row.get(6)?,
            generation: row.get::<_, i64>(7)? as u64,
            origin: row.get(8)?,
            restore: super::reads::is_restore(row.get(9)?),
        })
    }

    /// The frame other connections receive for this row.
    pub fn frame(&self) -> Message {
        if self.seq == 0 {
            // A generation's reset marker; its data is {"epoch": ...}.
            let epoch = serde_json::from_str::<serde_json::Value>(&self.payload)
                .ok()
                .and_then(|data| data.get("epoch")?.as_str().map(str::to_owned))
                .unwrap_or_default();
            return Message::text(reset_frame(&self.canvas, &epoch));
        }
        let data = match RawValue::from_string(self.payload.clone()) {
            Ok(data) => data,
            Err(error) => {
                // Only this relay writes the file, after validating the JSON; a bad payload means someone
                // edited the file. Relay the seq with null data rather than leave a gap in every stream.
                tracing::error!(id = self.id, %error, "stored payload is not JSON; relaying null");
                null_value()
            }
        };
        Message::text(logged_frame(&self.kind, self.seq, &self.canvas, &self.sender, &data, self.created_at))
    }

    pub fn entry(&self) -> Entry {
        Entry { seq: self.seq, generation: self.generation, id: self.id, frame: self.frame(), restore: self.restore }
    }
}

const COLUMNS: &str = "id, canvas_id, seq, message_type, payload, sender, created_at, generation, origin_instance, op";

/// Live rows committed after `after_id`, in commit order, at most `limit`: what the watcher reads. One range
/// scan of the primary key, whatever the number of canvases.
///
/// Limits are written into the SQL rather than bound: SQLite's planner reads a bound `LIMIT ?`, so a statement
/// with one is prepared again on every run (it showed as 13 % of the watcher's CPU in a profile).
pub fn rows_after(conn: &Connection, after_id: i64, now_ms: i64, limit: u32) -> Result<Vec<StoredMessage>> {
    let mut stmt = conn.prepare_cached(&rows_after_sql(limit))?;
    let rows = stmt.query_map(params![after_id, now_ms], StoredMessage::from_row)?;
    rows.collect()
}

fn rows_after_sql(limit: u32) -> String {
    format!("SELECT {COLUMNS} FROM message_queue WHERE id > ?1 AND expires_at > ?2 ORDER BY id LIMIT {limit}")
}

/// Rows an instance writes for the others to relay and forget, each `(id, key, text)`: cursor batches (keyed
/// by canvas, the text a JSON array of frames) and user messages (keyed by user, the text one frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relayed {
    CursorBatches,
    UserMessages,
    /// Users removed from a canvas: (id, canvas, user).
    Removals,
}

impl Relayed {
    /// The rows after an id, written by others and still live, `limit` at most (see `rows_after`).
    fn rows_sql(self, limit: u32) -> String {
        format!("{} LIMIT {limit}", self.sql().0)
    }

    /// (the rows after an id, written by others and still live, without a limit; the highest id)
    fn sql(self) -> (&'static str, &'static str) {
        match self {
            Relayed::CursorBatches => (
                "SELECT id, canvas_id, frames FROM cursor_batches
                 WHERE id > ?1 AND origin_instance != ?2 AND expires_at > ?3 ORDER BY id",
                "SELECT coalesce(max(id), 0) FROM cursor_batches",
            ),
            Relayed::UserMessages => (
                "SELECT id, user_id, frame FROM user_messages
                 WHERE id > ?1 AND origin_instance != ?2 AND expires_at > ?3 ORDER BY id",
                "SELECT coalesce(max(id), 0) FROM user_messages",
            ),
            Relayed::Removals => (
                "SELECT id, canvas_id, user_id FROM removals
                 WHERE id > ?1 AND origin_instance != ?2 AND expires_at > ?3 ORDER BY id",
                "SELECT coalesce(max(id), 0) FROM removals",
            ),
        }
    }
}

/// Live `kind` rows after `after_id` written by instances other than `own`, in id order, at most `limit`.
pub fn relayed_after(
    conn: &Connection,
    kind: Relayed,
    after_id: i64,
    own: &str,
    now_ms: i64,
    limit: u32,
) -> Result<Vec<(i64, String, String)>> {
    let mut stmt = conn.prepare_cached(&kind.rows_sql(limit))?;
    let rows = stmt.query_map(params![after_id, own, now_ms], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    rows.collect()
}

/// The highest `kind` row id (0 when none): where a watcher starts, or skips to.
pub fn max_relayed_id(conn: &Connection, kind: Relayed) -> Result<i64> {
    conn.prepare_cached(kind.sql().1)?.query_row([], |row| row.get(0))
}

/// The highest row id ever assigned (0 for an empty file): where a new watcher starts.
pub fn max_id(conn: &Connection) -> Result<i64> {
    conn.prepare_cached("SELECT coalesce(max(id), 0) FROM message_queue")?.query_row([], |row| row.get(0))
}

/// Every instance with a heartbeat since `alive_since_ms`, this one included.
pub fn live_instances(conn: &Connection, alive_since_ms: i64) -> Result<Vec<Instance>> {
    let mut stmt =
        conn.prepare_cached("SELECT instance_id, heartbeat_at, wake_addr FROM instances WHERE heartbeat_at >= ?1")?;
    let rows = stmt.query_map(params![alive_since_ms], |row| {
        Ok(Instance { id: row.get(0)?, heartbeat_at: row.get(1)?, doorbell: row.get(2)? })
    })?;
    rows.collect()
}

/// What `/health` reports about the shared file.
#[derive(Debug, Clone, Serialize)]
pub struct FileFigures {
    /// Rows in message_queue, expired or not.
    pub queue_rows: i64,
    /// Age of the oldest row, in ms (0 when empty); past the TTL when rows are kept for the webhook.
    pub oldest_row_age_ms: i64,
    /// How long the first row cleanup should delete has been due, in ms (0 when none is): how far cleanup
    /// is behind. Reported on its own (`BusFigures::cleanup_overdue_ms`), not among the file's figures.
    #[serde(skip)]
    pub cleanup_overdue_ms: i64,
    /// The highest row id: the head the watchers read up to.
    pub head_id: i64,
    /// Instances with a heartbeat within the presence timeout, this one included.
    pub live_instances: i64,
}

/// When the first row after `after_id` was committed (unix ms), if there is one: the oldest commit a watcher
/// at that cursor has not read.
pub fn first_unread_at(conn: &Connection, after_id: i64) -> Result<Option<i64>> {
    conn.prepare_cached("SELECT created_at FROM message_queue WHERE id > ?1 ORDER BY id LIMIT 1")?
        .query_row([after_id], |row| row.get(0))
        .optional()
}

pub fn file_figures(conn: &Connection, now_ms: i64, live_after_ms: i64) -> Result<FileFigures> {
    let (queue_rows, oldest, head_id): (i64, Option<i64>, i64) = conn
        .prepare_cached("SELECT count(*), min(created_at), coalesce(max(id), 0) FROM message_queue")?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
    let first_due: Option<i64> =
        conn.prepare_cached("SELECT min(purge_at) FROM message_queue")?.query_row([], |row| row.get(0))?;
    let live_instances = conn
        .prepare_cached("SELECT count(*) FROM instances WHERE heartbeat_at > ?1")?
        .query_row([live_after_ms], |row| row.get(0))?;
    Ok(FileFigures {
        queue_rows,
        oldest_row_age_ms: oldest.map_or(0, |t| (now_ms - t).max(0)),
        cleanup_overdue_ms: first_due.map_or(0, |t| (now_ms - t).max(0)),
        head_id,
        live_instances,
    })
}

#[cfg(test)]
mod tests {
    use deadpool_sqlite::rusqlite::StatementStatus;

    use super::*;
    use crate::config::Synchronous;
    use crate::store::sqlite::schema::{self, ConnSettings};

    /// SQLite prepares a statement again on every run when a bound parameter feeds its planner (a bound
    /// `LIMIT ?` does). The watcher runs these thousands of times a second: each must be prepared once.
    #[test]
    fn the_watchers_queries_are_prepared_once() {
        let dir = tempfile::tempdir().unwrap();
        let settings = ConnSettings {
            synchronous: Synchronous::Normal,
            busy_timeout: std::time::Duration::from_secs(1),
            memory: false,
        };
        let mut writer = schema::open(&dir.path().join("q.db"), settings).unwrap();
        schema::migrate(&mut writer).unwrap();
        let watcher = schema::open(&dir.path().join("q.db"), settings).unwrap();
        for n in 1..=5 {
            writer
                .execute(
                    "INSERT INTO message_queue (canvas_id, seq, message_type, payload, sender, origin_instance,
                     created_at, expires_at) VALUES ('c', ?1, 't', '{}', 'u', 'i', 0, 9999999999999)",
                    [n],
                )
                .unwrap();
            assert_eq!(rows_after(&watcher, n - 1, n, 1000).unwrap().len(), 1);
            for kind in [Relayed::CursorBatches, Relayed::UserMessages] {
                relayed_after(&watcher, kind, n, "me", n, 1000).unwrap();
            }
        }
        let mut sqls = vec![rows_after_sql(1000)];
        sqls.extend([Relayed::CursorBatches, Relayed::UserMessages].map(|kind| kind.rows_sql(1000)));
        for sql in sqls {
            let stmt = watcher.prepare_cached(&sql).unwrap();
            assert_eq!(stmt.get_status(StatementStatus::RePrepare), 0, "prepared again on a run: {sql}");
        }
    }
}
