//! Reads of the Redis store: a canvas at one point of its log (`read_canvas.lua`, then one GET of its
//! snapshot's blob), log ranges (one XRANGE), pages of heads, and connections across canvases (the indexes
//! by instance and by user). They return what is stored; expiry for clients is the reader's to judge (every
//! entry carries its commit time).

use bytes::Bytes;
use redis::Value;

use super::entry::{array, conn_rows, head, indexed_conn, log_entries, string, text, uint};
use super::keys;
use super::scripts::{HEADS, READ_CANVAS, STALE};
use super::{malformed, unavailable, RedisStore};
use crate::protocol::CanvasId;
use crate::store::records::{ConnRow, Head, LogEntry};
use crate::store::{BusError, CanvasRead, SnapshotRead, Unavailable, Want, Whose};

/// How many times a read of a canvas starts over when a newer snapshot replaced the one it found (the old
/// one stays readable for a while after, so once is nearly always enough), or a thinning dropped it.
pub(super) const SNAPSHOT_TRIES: usize = 5;

/// How long a replaced snapshot stays readable: a reader that found its key just before reads it still.
pub(super) const SNAPSHOT_GRACE_MS: u64 = 30_000;

/// Connections read per command from an index of connections.
const INDEX_CHUNK: usize = 1000;

/// The largest `up_to` (or seq) a script is given: Lua's numbers are doubles, exact up to 2^53.
pub(super) const MAX_UP_TO: u64 = 1 << 53;

/// A canvas read by `read_canvas.lua`, and the snapshot's seq and key when the objects are wanted.
type ScriptRead = (CanvasRead, Option<(u64, String)>);

impl RedisStore {
    /// A canvas at one point of its log, with the objects `want` asks for: the script, then the snapshot's
    /// blob by its key (read again from the start if a newer snapshot replaced it meanwhile).
    pub(super) async fn read_canvas_now(&self, canvas: &CanvasId, want: Want) -> Result<CanvasRead, BusError> {
        let (unless_generation, unless_version) = match want.unless {
            Some((generation, version)) => (generation.to_string(), version.to_string()),
            None => (String::new(), String::new()),
        };
        let up_to = (want.up_to as u64).min(MAX_UP_TO);
        for _ in 0..SNAPSHOT_TRIES {
            let reply: Value = self
                .read_twice(|mut conn| {
                    let mut invocation = READ_CANVAS.prepare_invoke();
                    invocation.arg(canvas.as_str()).arg(&unless_generation).arg(&unless_version).arg(up_to);
                    async move { invocation.invoke_async(&mut conn).await }
                })
                .await?;
            let (mut read, snapshot) = parse_read(canvas, &reply).ok_or_else(|| malformed("a canvas read"))?;
            let Some((seq, key)) = snapshot else { return Ok(read) };
            if let Some(snapshot) = self.snapshot_blob(seq, &key).await? {
                read.snapshot = Some(snapshot);
                return Ok(read);
            }
        }
        tracing::warn!(%canvas, "the canvas's snapshot kept being replaced while it was read");
        Err(Unavailable::JoinRaced.into())
    }

    /// The blob of the snapshot at `seq` a script named, by its key: `None` when it went in between (a
    /// replaced one past its grace, a thinned one).
    pub(super) async fn snapshot_blob(&self, seq: u64, key: &str) -> Result<Option<SnapshotRead>, BusError> {
        let blob: Option<Vec<u8>> =
            self.read_twice(|mut conn| async move { redis::cmd("GET").arg(key).query_async(&mut conn).await }).await?;
        Ok(blob.map(|blob| SnapshotRead { seq, json: Bytes::from(blob) }))
    }

    /// The entries of `generation` with `after < seq <= upto`, at most `limit`, in seq order: one XRANGE.
    pub(super) async fn log_range(
        &self,
        canvas: &CanvasId,
        generation: u64,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<LogEntry>, BusError> {
        let Some(from) = after.checked_add(1).filter(|from| *from <= upto && limit > 0) else { return Ok(Vec::new()) };
        let mut range = redis::cmd("XRANGE");
        range.arg(keys::log(canvas)).arg(super::entry::stream_id(generation, from));
        range.arg(super::entry::stream_id(generation, upto)).arg("COUNT").arg(limit);
        let reply: Value = self
            .read_twice(|mut conn| {
                let range = &range;
                async move { range.query_async(&mut conn).await }
            })
            .await?;
        Ok(log_entries(canvas, &reply))
    }

    /// `heads.lua`: canvases in id order after `after`, at most `limit`.
    pub(super) async fn head_page(
        &self,
        after: Option<&CanvasId>,
        limit: usize,
    ) -> Result<Vec<(CanvasId, Head)>, BusError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let reply: Value = HEADS
            .arg(after.map_or("", CanvasId::as_str))
            .arg(limit)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let items = array(&reply).ok_or_else(|| malformed("a page of canvases"))?;
        items
            .chunks_exact(2)
            .map(|row| Some((CanvasId::parse(text(&row[0])?).ok()?, head(&row[1])?)))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| malformed("a page of canvases"))
    }

    /// `stale.lua`: canvases with object ops after their newest snapshot, quiet since `before`.
    pub(super) async fn stale_canvases(&self, before: i64, limit: usize) -> Result<Vec<CanvasId>, BusError> {
        let ids: Vec<String> =
            STALE.arg(before).arg(limit).invoke_async(&mut self.conn()).await.map_err(unavailable)?;
        Ok(ids.iter().filter_map(|id| CanvasId::parse(id).ok()).collect())
    }

    /// Connections across canvases, from the indexes: everyone's (every instance's), a user's, an
    /// instance's, or those of instances silent since a time (0: stopped; an instance with connections is
    /// always in `relay:instances`: see `index_conn` in `common.lua`). Presence states are not read.
    pub(super) async fn connection_rows(&self, whose: Whose) -> Result<Vec<(CanvasId, ConnRow)>, BusError> {
        let indexes = match whose {
            Whose::User(user) => vec![keys::user_conns(&user)],
            Whose::Instance(instance) => vec![keys::instance_conns(&instance)],
            Whose::Everyone | Whose::SilentSince(_) => {
                let beats: Vec<(String, i64)> = redis::cmd("HGETALL")
                    .arg(keys::INSTANCES)
                    .query_async(&mut self.conn())
                    .await
                    .map_err(unavailable)?;
                let silent = |beat: i64| match whose {
                    Whose::SilentSince(before) => beat < before,
                    _ => true,
                };
                beats.iter().filter(|(_, beat)| silent(*beat)).map(|(id, _)| keys::instance_conns(id)).collect()
            }
        };
        let mut rows = Vec::new();
        for index in &indexes {
            rows.extend(self.index_rows(index).await?);
        }
        Ok(rows)
    }

    /// The connections of one index, read a chunk at a time (an instance's can be thousands): HSCAN, which
    /// may return a field twice, so each is kept once.
    async fn index_rows(&self, index: &str) -> Result<Vec<(CanvasId, ConnRow)>, BusError> {
        let (mut rows, mut seen, mut cursor) = (Vec::new(), std::collections::HashSet::new(), 0u64);
        loop {
            let (next, chunk): (u64, Vec<(String, String)>) = redis::cmd("HSCAN")
                .arg(index)
                .arg(cursor)
                .arg("COUNT")
                .arg(INDEX_CHUNK)
                .query_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            for (conn, value) in chunk {
                if let Some(row) = indexed_conn(&conn, &value).filter(|_| seen.insert(conn.clone())) {
                    rows.push(row);
                }
            }
            if next == 0 {
                return Ok(rows);
            }
            cursor = next;
        }
    }
}

/// `read_canvas.lua`'s reply (see its header).
fn parse_read(canvas: &CanvasId, reply: &Value) -> Option<ScriptRead> {
    let items = array(reply)?;
    let (kind, rest) = items.split_first()?;
    match (uint(kind)?, rest) {
        (0, [rows, states]) => Some((CanvasRead { conns: conn_rows(rows, states)?, ..CanvasRead::default() }, None)),
        (1, [head_reply, rows, states]) => {
            let read =
                CanvasRead { head: Some(head(head_reply)?), conns: conn_rows(rows, states)?, ..CanvasRead::default() };
            Some((read, None))
        }
        (2, [head_reply, rows, states, snapshot, key, ops]) => {
            let read = CanvasRead {
                head: Some(head(head_reply)?),
                conns: conn_rows(rows, states)?,
                snapshot: None,
                ops: log_entries(canvas, ops),
            };
            let key = string(key)?;
            let snapshot = (!key.is_empty()).then(|| uint(snapshot).map(|seq| (seq, key))).flatten();
            Some((read, snapshot))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redis::entry::bulk;

    #[test]
    fn a_canvas_read_says_whether_a_snapshot_is_to_be_fetched() {
        let canvas = CanvasId::parse("c").unwrap();
        let head = Value::Array([2, 7, 3, 6, 30, 1, 0, 0].map(Value::Int).to_vec());
        let empty = || Value::Array(vec![]);
        let none = Value::Array(vec![Value::Int(0), empty(), empty()]);
        let (read, snapshot) = parse_read(&canvas, &none).unwrap();
        assert!(read.head.is_none() && snapshot.is_none());
        let skipped = Value::Array(vec![Value::Int(1), head.clone(), empty(), empty()]);
        let (read, snapshot) = parse_read(&canvas, &skipped).unwrap();
        assert_eq!((read.head.unwrap().seq, snapshot), (7, None));
        let op = Value::Array(vec![
            bulk("3-7"),
            Value::Array(
                ["ts", "1", "s", "7", "t", "object-delete", "f", "u", "d", "{\"id\":\"a\"}"].map(bulk).to_vec(),
            ),
        ]);
        let whole = |key: &str| {
            Value::Array(vec![
                Value::Int(2),
                head.clone(),
                empty(),
                empty(),
                Value::Int(5),
                bulk(key),
                Value::Array(vec![op.clone()]),
            ])
        };
        let (read, snapshot) = parse_read(&canvas, &whole("relay:{c}:snap:2-5-x")).unwrap();
        assert_eq!(snapshot, Some((5, "relay:{c}:snap:2-5-x".to_owned())));
        assert_eq!(read.ops.iter().map(|op| op.seq).collect::<Vec<_>>(), [7]);
        let (_, snapshot) = parse_read(&canvas, &whole("")).unwrap();
        assert_eq!(snapshot, None, "no snapshot: the ops from the start");
        assert!(parse_read(&canvas, &Value::Array(vec![Value::Int(3)])).is_none());
    }
}
