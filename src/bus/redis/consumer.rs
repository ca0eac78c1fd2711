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
use crate::bus::consumer::{Backlog, CanvasTail, ConsumerStore, Delivered, LogPage, Logged};
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

    /// `save_delivered.lua`: the lease checked, the position written and the canvas's log settled, at once.
    async fn save_delivered(
        &self,
        canvas: &CanvasId,
        lease: &str,
        holder: &str,
        delivered: Delivered,
    ) -> Result<bool, BusError> {
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
        Ok(saved == 1)
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
mod tests {
    use super::*;
    use crate::bus::redis::entry::bulk;

    /// An entry of `relay:stream` as `log_everywhere` writes it.
    fn global(id: &str, canvas: &str, seq: u64) -> Value {
        let seq = seq.to_string();
        let fields = ["ts", "1700", "canvas", canvas, "g", "3", "s", &seq, "t", "note", "f", "ann", "d", "{}"];
        Value::Array(vec![bulk(id), Value::Array(fields.iter().map(|f| bulk(f)).collect())])
    }

    fn reply(head: &str, trimmed: &str, entries: Vec<Value>) -> Value {
        Value::Array(vec![bulk(head), bulk(trimmed), Value::Array(entries)])
    }

    #[test]
    fn positions_are_stream_ids_as_redis_reads_them() {
        assert_eq!(position("0"), Some((0, 0)));
        assert_eq!(position("1733400000000-7"), Some((1_733_400_000_000, 7)));
        assert_eq!(position("18446744073709551615-18446744073709551615"), Some((u64::MAX, u64::MAX)));
        for bad in ["", "-", "1-", "-1", "1-2-3", "+", "$", "1.5", " 1", "1-x", "18446744073709551616"] {
            assert_eq!(position(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn an_entry_of_the_log_of_every_canvas_reads_back() {
        let entry = parse_logged(&global("1700-2", "c1", 5)).unwrap();
        assert_eq!(
            (entry.position.as_str(), entry.canvas.as_str(), entry.generation, entry.seq),
            ("1700-2", "c1", 3, 5)
        );
        assert_eq!(
            (entry.kind.as_str(), entry.from.as_str(), entry.data.as_str(), entry.ts),
            ("note", "ann", "{}", 1700)
        );
        assert!(!entry.is_reset());
        assert!(parse_logged(&Value::Array(vec![bulk("1-0"), Value::Array(vec![])])).is_none());
    }

    #[test]
    fn a_reader_before_the_newest_trimmed_id_has_a_gap_and_no_other_does() {
        let entries = || vec![global("200-0", "c1", 2), global("200-1", "c2", 1)];
        let (head, page) = log_page(&reply("200-1", "150-3", entries()), (100, 0)).unwrap();
        assert_eq!(head, "200-1");
        assert_eq!(page.oldest.as_deref(), Some("200-0"), "the gap goes on from the first entry left");
        assert_eq!(page.entries.len(), 2);
        let (_, page) = log_page(&reply("200-1", "150-3", entries()), (150, 3)).unwrap();
        assert_eq!(page.oldest, None, "a reader at the newest trimmed id missed nothing");
        let (_, page) = log_page(&reply("200-1", "150-3", vec![]), (150, 2)).unwrap();
        assert_eq!(page.oldest.as_deref(), Some("200-1"), "nothing left after it: on from the head");
        let (_, page) = log_page(&reply("0-0", "0-0", vec![]), (0, 0)).unwrap();
        assert_eq!(page.oldest, None, "an empty log has no gap");
        assert!(log_page(&Value::Nil, (0, 0)).is_none());
    }

    #[test]
    fn a_backlog_page_lists_the_canvases_due_and_where_it_stopped() {
        let reply = Value::Array(["c9", "c1", "4", "12", "c3", "2", "0"].map(bulk).to_vec());
        let (due, last) = parse_backlog(&reply).unwrap();
        assert_eq!(
            due,
            [("c1", 4, 12), ("c3", 2, 0)].map(|(c, generation, seq)| Backlog {
                canvas: CanvasId::parse(c).unwrap(),
                generation,
                seq
            })
        );
        assert_eq!(last.as_ref().map(CanvasId::as_str), Some("c9"));
        let (due, last) = parse_backlog(&Value::Array(vec![bulk("")])).unwrap();
        assert!(due.is_empty() && last.is_none(), "the end");
    }
}
