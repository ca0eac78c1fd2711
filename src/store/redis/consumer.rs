//! The consumers' store on Redis (see `crate::store::consumer`). A position is an id of `relay:stream`, the
//! log of every canvas that `commit.lua` and `reset.lua` append to beside each canvas's own log (ids from
//! Redis's clock: commit order across canvases and instances). Cleanup trims it by the TTL from its front,
//! and the newest id trimmed is kept (`relay:stream:trimmed`): a reader from before it missed entries. The
//! webhook reads each canvas's own log, which keeps what it has not delivered (`trim_logs.lua`); its
//! positions are one hash per canvas and its leases plain keys on Redis's clock. Every read and write is
//! one command or script, atomic.

use async_trait::async_trait;
use redis::Value;
use serde_json::value::RawValue;

use super::entry::{array, field, pairs, string, text, uint};
use super::scripts::{HOLD_LEASES, LOG, RELEASE_LEASES, SAVE_POSITION};
use super::{keys, malformed, unavailable, RedisStore};
use crate::protocol::{null_value, CanvasId};
use crate::store::consumer::{ConsumerStore, LogPage, Position, Saved};
use crate::store::records::LogEntry;
use crate::store::BusError;

/// A stream id as Redis reads one: `MS` or `MS-SEQ`, each part digits that fit 64 bits (`MS` alone is
/// `MS-0`).
fn position(text: &str) -> Option<(u64, u64)> {
    let number =
        |part: &str| Some(part).filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))?.parse().ok();
    match text.split_once('-') {
        Some((ms, seq)) => Some((number(ms)?, number(seq)?)),
        None => Some((number(text)?, 0)),
    }
}

/// One entry of `relay:stream`: `[id, [field, value, ...]]` (see `log_everywhere` in `common.lua`).
fn parse_logged(value: &Value) -> Option<(String, LogEntry)> {
    let [id, fields] = array(value)? else { return None };
    let fields = pairs(fields)?;
    let number = |name: &str| field(&fields, name)?.parse::<u64>().ok();
    let seq = number("s")?;
    let data = RawValue::from_string(field(&fields, "d")?.to_owned()).unwrap_or_else(|_| null_value());
    let entry = LogEntry {
        canvas: CanvasId::parse(field(&fields, "canvas")?).ok()?,
        generation: number("g")?,
        seq,
        kind: field(&fields, "t")?.to_owned(),
        from: field(&fields, "f")?.to_owned(),
        data,
        ts: field(&fields, "ts")?.parse().ok()?,
        id: seq as i64,
        instance: String::new(),
        conn: None,
        reference: None,
        restore: false,
    };
    Some((string(id)?, entry))
}

/// `log.lua`'s reply `{ head, newest id trimmed, entries }` as a page after `after`: a gap when an entry
/// after it was trimmed (the newest trimmed is past it), the page then going on from its first entry, or
/// from the head when nothing after `after` is left.
fn log_page(reply: &Value, after: (u64, u64)) -> Option<(String, LogPage)> {
    let [head, trimmed, entries] = array(reply)? else { return None };
    let head = string(head)?;
    let entries: Vec<(String, LogEntry)> = array(entries)?
        .iter()
        .filter_map(|value| {
            let entry = parse_logged(value);
            if entry.is_none() {
                tracing::error!(?value, "an entry of relay:stream this relay did not write; skipped");
            }
            entry
        })
        .collect();
    let oldest = (after < position(text(trimmed)?)?)
        .then(|| entries.first().map_or_else(|| head.clone(), |(first, _)| first.clone()));
    Some((head, LogPage { entries, oldest }))
}

impl RedisStore {
    /// `log.lua` on the state connection (a page can be big): after `after` (`None`: the head alone).
    async fn read_stream(&self, after: Option<(u64, u64)>, limit: usize) -> Result<Value, BusError> {
        let after = after.map_or_else(String::new, |(ms, seq)| format!("{ms}-{seq}"));
        self.read_twice(|mut conn| {
            let after = &after;
            async move { LOG.arg(after).arg(limit).invoke_async(&mut conn).await }
        })
        .await
    }
}

#[async_trait]
impl ConsumerStore for RedisStore {
    /// A stream id, as Redis takes one: `MS` or `MS-SEQ` (`0` is the start).
    fn is_position(&self, position: &str) -> bool {
        self::position(position).is_some()
    }

    /// The last id `relay:stream` was given (entries trimmed since included); `0-0` before the first.
    async fn log_head(&self) -> Result<String, BusError> {
        let reply = self.read_stream(None, 0).await?;
        log_page(&reply, (0, 0)).map(|(head, _)| head).ok_or_else(|| malformed("a read of relay:stream"))
    }

    /// One XRANGE after `after` (exclusive) with the stream's head and newest id trimmed, in one script.
    async fn log_after(&self, after: &str, limit: usize) -> Result<LogPage, BusError> {
        // A position that is not one reads from the start, as on SQLite (the route refuses it before).
        let after = position(after).unwrap_or((0, 0));
        // Nothing comes after the largest id (and Redis refuses an exclusive range from it).
        let last = after == (u64::MAX, u64::MAX);
        let reply = self.read_stream((!last).then_some(after), limit).await?;
        let (_, page) = log_page(&reply, after).ok_or_else(|| malformed("a read of relay:stream"))?;
        Ok(page)
    }

    /// One HMGET of each canvas's `webhook` hash, in one round trip.
    async fn positions(&self, canvases: &[CanvasId]) -> Result<Vec<Option<Position>>, BusError> {
        if canvases.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for canvas in canvases {
            pipe.cmd("HMGET").arg(keys::webhook(canvas)).arg(&["g", "s", "p"][..]);
        }
        let replies: Vec<Value> = pipe.query_async(&mut self.conn()).await.map_err(unavailable)?;
        let position = |reply: &Value| -> Result<Option<Position>, BusError> {
            let Some([generation, seq, inflight]) = array(reply) else { return Err(malformed("a webhook position")) };
            if matches!(generation, Value::Nil) {
                return Ok(None);
            }
            let (Some(generation), Some(seq)) = (uint(generation), uint(seq)) else {
                return Err(malformed("a webhook position"));
            };
            Ok(Some(Position { generation, seq, inflight: uint(inflight) }))
        };
        replies.iter().map(position).collect()
    }

    /// `save_position.lua`: the lease checked, the stored position compared with `expected` and the position
    /// written, at once.
    async fn save_position(
        &self,
        canvas: &CanvasId,
        lease: &str,
        holder: &str,
        expected: Option<Position>,
        position: Position,
    ) -> Result<Saved, BusError> {
        let inflight = |at: &Position| at.inflight.map_or_else(String::new, |p| p.to_string());
        let mut invocation = SAVE_POSITION.prepare_invoke();
        invocation.arg(canvas.as_str()).arg(lease).arg(holder);
        match &expected {
            Some(at) => invocation.arg("1").arg(at.generation).arg(at.seq).arg(inflight(at)),
            None => invocation.arg("0").arg("").arg("").arg(""),
        };
        invocation.arg(position.generation).arg(position.seq).arg(inflight(&position));
        let saved: i64 = invocation.invoke_async(&mut self.conn()).await.map_err(unavailable)?;
        match saved {
            1 => Ok(Saved::Recorded),
            0 => Ok(Saved::NotHolder),
            -1 => Ok(Saved::Behind),
            _ => Err(malformed("a webhook position's save")),
        }
    }

    /// `hold_leases.lua`: every name in one script, on Redis's clock.
    async fn hold_leases(&self, holder: &str, names: &[String], ttl_ms: u64) -> Result<Vec<bool>, BusError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let held: Vec<i64> = HOLD_LEASES
            .arg(holder)
            .arg(ttl_ms.max(1))
            .arg(names)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if held.len() != names.len() {
            return Err(malformed("a lease renewal"));
        }
        Ok(held.into_iter().map(|held| held == 1).collect())
    }

    /// `release_leases.lua`: drops those of `names` that `holder` holds.
    async fn release_leases(&self, holder: &str, names: &[String]) -> Result<(), BusError> {
        if names.is_empty() {
            return Ok(());
        }
        let _dropped: i64 =
            RELEASE_LEASES.arg(holder).arg(names).invoke_async(&mut self.conn()).await.map_err(unavailable)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
