//! The consumers' store on Redis (see `crate::bus::consumer`). A position is an id of `relay:stream`, the
//! log of every canvas that `publish.lua` and `reset.lua` append to beside each canvas's own stream (ids from
//! Redis's clock: commit order across canvases and instances). It is trimmed by the TTL from its front, and
//! the newest id trimmed is kept (`relay:stream:trimmed`): a reader from before it missed entries. The
//! webhook reads each canvas's own stream, which keeps what it has not delivered (`settle_log` in
//! `common.lua`); its positions are one hash per canvas and its leases plain keys on Redis's clock. Every
//! read and write is one script, atomic.

use async_trait::async_trait;
use redis::Value;

use super::entry::{array, field, pairs, string, text, uint, LogEntry};
use super::scripts::{BACKLOG, CANVAS_TAIL, HOLD_LEASES, LOG, RELEASE_LEASES, SAVE_DELIVERED};
use super::{keys, malformed, unavailable, RedisBus};
use crate::bus::consumer::{Backlog, CanvasTail, ConsumerStore, Delivered, LogPage, Logged, Saved};
use crate::bus::BusError;
use crate::protocol::CanvasId;

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
fn parse_logged(value: &Value) -> Option<Logged> {
    let [id, fields] = array(value)? else { return None };
    let fields = pairs(fields)?;
    let number = |name: &str| field(&fields, name)?.parse::<u64>().ok();
    Some(Logged {
        position: string(id)?,
        canvas: field(&fields, "canvas")?.to_owned(),
        generation: number("g")?,
        seq: number("s")?,
        kind: field(&fields, "t")?.to_owned(),
        from: field(&fields, "f")?.to_owned(),
        data: field(&fields, "d")?.to_owned(),
        ts: field(&fields, "ts")?.parse().ok()?,
    })
}

/// `log.lua`'s reply `{ head, newest id trimmed, entries }` as a page after `after`: a gap when an entry
/// after it was trimmed (the newest trimmed is past it), the page then going on from its first entry, or
/// from the head when nothing after `after` is left.
fn log_page(reply: &Value, after: (u64, u64)) -> Option<(String, LogPage)> {
    let [head, trimmed, entries] = array(reply)? else { return None };
    let head = string(head)?;
    let entries: Vec<Logged> = array(entries)?
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
        .then(|| entries.first().map_or_else(|| head.clone(), |first| first.position.clone()));
    Some((head, LogPage { entries, oldest }))
}

/// A canvas's own stream entry as the webhook reads it (no position: it is read by seq).
fn canvas_logged(canvas: &CanvasId, entry: LogEntry) -> Logged {
    Logged {
        position: String::new(),
        canvas: canvas.as_str().to_owned(),
        generation: entry.generation,
        seq: entry.seq,
        kind: entry.kind,
        from: entry.from,
        data: entry.data,
        ts: entry.ts,
    }
}

/// `backlog.lua`'s reply `{ last looked at ('' at the end), id, generation, seq, ... }`.
fn parse_backlog(reply: &Value) -> Option<(Vec<Backlog>, Option<CanvasId>)> {
    let [last, rows @ ..] = array(reply)? else { return None };
    let due = rows
        .chunks_exact(3)
        .filter_map(|row| {
            let canvas = CanvasId::parse(text(&row[0])?).ok()?;
            Some(Backlog { canvas, generation: uint(&row[1])?, seq: uint(&row[2])? })
        })
        .collect();
    let last = Some(text(last)?).filter(|last| !last.is_empty()).and_then(|last| CanvasId::parse(last).ok());
    Some((due, last))
}

impl RedisBus {
    /// `log.lua` on the state connection (a page can be big): after `after` (`None`: the head alone).
    async fn read_log(&self, after: Option<(u64, u64)>, limit: usize) -> Result<Value, BusError> {
        let after = after.map_or_else(String::new, |(ms, seq)| format!("{ms}-{seq}"));
        self.read_twice(|mut conn| {
            let after = &after;
            async move { LOG.arg(after).arg(limit).invoke_async(&mut conn).await }
        })
        .await
    }
}

#[async_trait]
impl ConsumerStore for RedisBus {
    /// A stream id, as Redis takes one: `MS` or `MS-SEQ` (`0` is the start).
    fn is_position(&self, position: &str) -> bool {
        self::position(position).is_some()
    }

    /// `<store epoch>-<generation>`, as every canvas epoch of this store.
    fn epoch_of(&self, generation: u64) -> String {
        format!("{}-{generation}", self.inner.link.epoch().unwrap_or_default())
    }

    /// The last id `relay:stream` was given (entries trimmed since included); `0-0` before the first.
    async fn log_head(&self) -> Result<String, BusError> {
        let reply = self.read_log(None, 0).await?;
        log_page(&reply, (0, 0)).map(|(head, _)| head).ok_or_else(|| malformed("a read of relay:stream"))
    }

    /// One XRANGE after `after` (exclusive) with the stream's head and newest id trimmed, in one script.
    async fn log_after(&self, after: &str, limit: usize) -> Result<LogPage, BusError> {
        // A position that is not one reads from the start, as on SQLite (the route refuses it before).
        let after = position(after).unwrap_or((0, 0));
        // Nothing comes after the largest id (and Redis refuses an exclusive range from it).
        let last = after == (u64::MAX, u64::MAX);
        let reply = self.read_log((!last).then_some(after), limit).await?;
        let (_, page) = log_page(&reply, after).ok_or_else(|| malformed("a read of relay:stream"))?;
        Ok(page)
    }

    /// `canvas_tail.lua`: the head and the entries of `generation` after `after`, as the stream holds them.
    async fn canvas_tail(
        &self,
        canvas: &CanvasId,
        generation: u64,
        after: u64,
        limit: usize,
    ) -> Result<CanvasTail, BusError> {
        let reply: Value = self
            .read_twice(|mut conn| async move {
                CANVAS_TAIL.arg(canvas.as_str()).arg(generation).arg(after).arg(limit).invoke_async(&mut conn).await
            })
            .await?;
        let parse = || {
            let [head_generation, seq, entries] = array(&reply)? else { return None };
            let entries = LogEntry::parse_each(array(entries)?).into_iter().map(|e| canvas_logged(canvas, e));
            Some(CanvasTail { generation: uint(head_generation)?, seq: uint(seq)?, entries: entries.collect() })
        };
        parse().ok_or_else(|| malformed("a canvas's tail"))
    }

    /// `backlog.lua` over the index of canvases: `limit` canvases looked at per call.
    async fn backlog(
        &self,
        after: Option<CanvasId>,
        limit: usize,
    ) -> Result<(Vec<Backlog>, Option<CanvasId>), BusError> {
        if limit == 0 {
            return Ok((Vec::new(), after));
        }
        let reply: Value = BACKLOG
            .arg(after.as_ref().map_or("", CanvasId::as_str))
            .arg(limit)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        parse_backlog(&reply).ok_or_else(|| malformed("a webhook backlog"))
    }

    /// One HMGET of the canvas's `webhook` hash.
    async fn delivered(&self, canvas: &CanvasId) -> Result<Option<Delivered>, BusError> {
        let reply: Vec<Value> = redis::cmd("HMGET")
            .arg(keys::webhook(canvas))
            .arg(&["g", "s", "p"][..])
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let [generation, seq, inflight] = &reply[..] else { return Err(malformed("a webhook position")) };
        if matches!(generation, Value::Nil) {
            return Ok(None);
        }
        let (Some(generation), Some(seq)) = (uint(generation), uint(seq)) else {
            return Err(malformed("a webhook position"));
        };
        Ok(Some(Delivered { generation, seq, inflight: uint(inflight) }))
    }

    /// `save_delivered.lua`: the lease checked, the stored position compared, the position written and the
    /// canvas's log settled, at once.
    async fn save_delivered(
        &self,
        canvas: &CanvasId,
        lease: &str,
        holder: &str,
        delivered: Delivered,
    ) -> Result<Saved, BusError> {
        let saved: i64 = SAVE_DELIVERED
            .arg(canvas.as_str())
            .arg(lease)
            .arg(holder)
            .arg(delivered.generation)
            .arg(delivered.seq)
            .arg(delivered.inflight.map_or_else(String::new, |p| p.to_string()))
            .arg(self.inner.ttl_ms)
            .arg(self.inner.retention_ms)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
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

    /// `release_leases.lua`: drops those of `names` that hold `holder`.
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
