//! Redis's side of history (see `crate::store::history`; the keys are described at the end of
//! `lua/common.lua`): a canvas's snapshots kept past the newest, indexed by seq with the commit time of
//! their seq, their size and an optional name, and the floor its ops stream is kept back to. Every read and
//! write of it is one script; a snapshot's blob goes to a key of its own with a plain SET beside the script
//! (no script holds Redis while megabytes go in) and is read with one GET after it, as joins read theirs
//! (`reads.rs`). What to keep as snapshots age is the core's (`core::history`); this only keeps and drops.

use bytes::Bytes;
use redis::Value;

use super::entry::{array, head, int, log_entries, optional, stream_id, string, text, uint};
use super::keys;
use super::reads::{MAX_UP_TO, SNAPSHOT_TRIES};
use super::scripts::{FORK, HISTORY_DUE, NAME_VERSION, READ_AT, THIN, UNNAME_VERSION, VERSIONS};
use super::{malformed, unavailable, RedisStore};
use crate::protocol::CanvasId;
use crate::store::history::{AtRead, Fork, HistoryDue, Named, Thinning, Version};
use crate::store::{epoch, BusError, SnapshotRead, Unavailable};

/// How long a snapshot's blob written before the script that keeps it lives if this instance dies in
/// between.
pub(super) const UNCLAIMED_SNAPSHOT_MS: u64 = 60_000;

/// The largest page a script is asked for (Redis reads a LIMIT's count as a signed 64-bit number).
const MAX_LIMIT: usize = i64::MAX as usize;

impl RedisStore {
    /// Writes a snapshot's blob to `key` with an expiry, for a script to keep (or delete).
    pub(super) async fn unclaimed_snapshot(&self, key: &str, json: &[u8]) -> Result<(), BusError> {
        redis::cmd("SET")
            .arg(key)
            .arg(json)
            .arg("PX")
            .arg(UNCLAIMED_SNAPSHOT_MS)
            .query_async(&mut self.inner.state_conn.clone())
            .await
            .map_err(unavailable)
    }

    /// `read_at.lua` says where the state is; then one MULTI reads the ops after the snapshot, its blob,
    /// and the head's generation and floor again: read again from the start if a thinning (or a reset)
    /// came in between.
    pub(super) async fn history_read_at(&self, canvas: &CanvasId, at: u64) -> Result<AtRead, BusError> {
        let at = at.min(MAX_UP_TO);
        for _ in 0..SNAPSHOT_TRIES {
            let reply: Value = self
                .read_twice(|mut conn| {
                    let mut invocation = READ_AT.prepare_invoke();
                    invocation.arg(canvas.as_str()).arg(at);
                    async move { invocation.invoke_async(&mut conn).await }
                })
                .await?;
            let (mut read, place) = parse_at(&reply).ok_or_else(|| malformed("a read at a seq"))?;
            let Some(place) = place else { return Ok(read) };
            let generation = read.head.map_or(0, |head| head.generation);
            let mut pipe = redis::pipe();
            pipe.atomic();
            if place.read_ops {
                let (from, upto) = (stream_id(generation, place.from + 1), stream_id(generation, place.upto));
                pipe.cmd("XRANGE").arg(keys::ops(canvas)).arg(from).arg(upto);
            }
            if !place.key.is_empty() {
                pipe.cmd("GET").arg(&place.key);
            }
            pipe.cmd("HMGET").arg(keys::head(canvas)).arg("gen").arg("hfrom").arg("snap");
            let replies: Vec<Value> = self
                .read_twice(|mut conn| {
                    let pipe = &pipe;
                    async move { pipe.query_async(&mut conn).await }
                })
                .await?;
            let mut replies = replies.iter();
            if place.read_ops {
                read.ops = log_entries(canvas, replies.next().ok_or_else(|| malformed("a read at a seq"))?);
            }
            let blob = match place.key.is_empty() {
                true => None,
                false => match replies.next() {
                    Some(Value::BulkString(blob)) => Some(Bytes::from(blob.clone())),
                    _ => continue, // thinned meanwhile
                },
            };
            let now = replies.next().and_then(array).ok_or_else(|| malformed("a head"))?;
            let number = |i: usize| now.get(i).and_then(|value| text(value)?.parse::<u64>().ok());
            let floor = number(1).or(number(2)).unwrap_or(0);
            if number(0) != Some(generation) || (place.read_ops && floor > place.from) {
                continue; // a reset, or the floor passed the snapshot the ops were read after: some may be gone
            }
            read.snapshot = blob.map(|json| SnapshotRead { seq: place.from, json });
            return Ok(read);
        }
        tracing::warn!(%canvas, at, "the snapshot of a read at a seq kept going while it was read");
        Err(Unavailable::JoinRaced.into())
    }

    /// `versions.lua`.
    pub(super) async fn history_versions(
        &self,
        canvas: &CanvasId,
        generation: u64,
        before: u64,
        limit: usize,
    ) -> Result<Vec<Version>, BusError> {
        if limit == 0 || before == 0 {
            return Ok(Vec::new());
        }
        let reply: Value = VERSIONS
            .arg(canvas.as_str())
            .arg(generation)
            .arg(before.min(MAX_UP_TO))
            .arg(limit.min(MAX_LIMIT))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        versions(&reply).ok_or_else(|| malformed("a page of versions"))
    }

    /// The blob to a key of its own, then `name_version.lua`, which keeps it only if no snapshot is kept at
    /// that seq (naming that one instead).
    pub(super) async fn history_name(
        &self,
        canvas: &CanvasId,
        (generation, seq): (u64, u64),
        name: &str,
        json: Bytes,
    ) -> Result<Named, BusError> {
        let key = keys::snapshot(canvas, generation, seq, &nonce());
        self.unclaimed_snapshot(&key, &json).await?;
        let named: i64 = NAME_VERSION
            .arg(canvas.as_str())
            .arg(generation)
            .arg(seq.min(MAX_UP_TO))
            .arg(name)
            .arg(&key)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(match named {
            1 => Named::Done,
            _ => Named::Moved,
        })
    }

    /// `unname_version.lua`.
    pub(super) async fn history_unname(
        &self,
        canvas: &CanvasId,
        (generation, seq): (u64, u64),
    ) -> Result<bool, BusError> {
        let removed: i64 = UNNAME_VERSION
            .arg(canvas.as_str())
            .arg(generation)
            .arg(seq)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(removed == 1)
    }

    /// The blob to a key of its own, then `fork.lua`: the new generation's epoch, `None` when `to` exists.
    pub(super) async fn history_fork(&self, to: &CanvasId, fork: Fork) -> Result<Option<String>, BusError> {
        let key = keys::fork_snapshot(to, &nonce());
        self.unclaimed_snapshot(&key, &fork.json).await?;
        let reply: Value = FORK
            .arg(to.as_str())
            .arg(&key)
            .arg(fork.objects)
            .arg(fork.bytes)
            .arg(self.inner.settings.forget_after_ms)
            .arg(RedisStore::candidate())
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        match array(&reply).ok_or_else(|| malformed("a fork"))? {
            [] => Ok(None),
            [store_epoch, generation] => {
                let (Some(store_epoch), Some(generation)) = (string(store_epoch), uint(generation)) else {
                    return Err(malformed("a fork"));
                };
                let inner = &self.inner;
                inner.link.observe_epoch(&store_epoch, &inner.hub);
                Ok(Some(epoch(&store_epoch, generation)))
            }
            _ => Err(malformed("a fork")),
        }
    }

    /// `history_due.lua`.
    pub(super) async fn history_due(&self, before: i64, limit: usize) -> Result<Vec<HistoryDue>, BusError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let reply: Value = HISTORY_DUE
            .arg(before)
            .arg(limit.min(MAX_LIMIT))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let due = array(&reply).ok_or_else(|| malformed("canvases due for thinning"))?;
        let parsed = due.iter().filter_map(|value| {
            let canvas = history_due(value);
            if canvas.is_none() {
                tracing::error!(?value, "a canvas due for thinning this relay did not write; skipped");
            }
            canvas
        });
        Ok(parsed.collect())
    }

    /// `thin.lua`.
    pub(super) async fn history_thin(
        &self,
        canvas: &CanvasId,
        generation: u64,
        thinning: Thinning,
    ) -> Result<(), BusError> {
        let mut invocation = THIN.prepare_invoke();
        invocation.arg(canvas.as_str()).arg(generation).arg(thinning.floor.min(MAX_UP_TO));
        for seq in &thinning.drop {
            invocation.arg(*seq);
        }
        let _dropped: i64 = invocation.invoke_async(&mut self.conn()).await.map_err(unavailable)?;
        Ok(())
    }
}

/// A part of a snapshot's key no other write picks.
pub(super) fn nonce() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// Where `read_at.lua` found a state: the snapshot at or below the seq (`key` empty for none, `from` 0),
/// and whether the ops after it up to `upto` are to be read.
struct Place {
    from: u64,
    key: String,
    read_ops: bool,
    upto: u64,
}

/// `read_at.lua`'s reply: the read as far as the script goes, and where the rest is (`None`: no head).
fn parse_at(reply: &Value) -> Option<(AtRead, Option<Place>)> {
    match array(reply)? {
        [kind] if uint(kind)? == 0 => Some((AtRead::default(), None)),
        [kind, head_reply, floor, from, key, read_ops, upto] if uint(kind)? == 1 => {
            let read = AtRead { head: Some(head(head_reply)?), floor: uint(floor)?, ..AtRead::default() };
            let place =
                Place { from: uint(from)?, key: string(key)?, read_ops: uint(read_ops)? == 1, upto: uint(upto)? };
            Some((read, Some(place)))
        }
        _ => None,
    }
}

/// Versions as `versions_of` in `common.lua` writes them: seq, ts, bytes, encoded name.
fn versions(value: &Value) -> Option<Vec<Version>> {
    let items = array(value)?;
    if items.len() % 4 != 0 {
        return None;
    }
    items
        .chunks_exact(4)
        .map(|version| {
            Some(Version {
                seq: uint(&version[0])?,
                ts: int(&version[1])?,
                bytes: uint(&version[2])?,
                name: optional(text(&version[3])?).map(str::to_owned),
            })
        })
        .collect()
}

/// One canvas of `history_due.lua`'s reply: canvas, generation, floor, genat, versions.
fn history_due(value: &Value) -> Option<HistoryDue> {
    let [canvas, generation, floor, started, listed] = array(value)? else { return None };
    Some(HistoryDue {
        canvas: CanvasId::parse(text(canvas)?).ok()?,
        generation: uint(generation)?,
        floor: uint(floor)?,
        started: int(started)?,
        versions: versions(listed)?,
    })
}

#[cfg(test)]
mod tests;
