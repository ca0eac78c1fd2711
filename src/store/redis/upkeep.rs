//! The Redis store's side of the bus's upkeep (`core::upkeep` runs the loops): the heartbeat, which also
//! checks that Redis kept every write this instance saw; cleanup, each part a bounded script called while it
//! comes back full; and the figures behind `/health`.

use std::sync::atomic::Ordering;
use std::time::Instant;

use redis::{Script, Value};

use super::entry::{array, int, stream_id, string, uint};
use super::scripts::{FORGET, HEARTBEAT, ROTATE, TRIM_LOGS, TRIM_STREAM};
use super::{keys, malformed, unavailable, RedisFigures, RedisStore};
use crate::clock::now_ms;
use crate::store::figures::{BusFigures, StoreFigures};
use crate::store::{BusError, Instance};

impl RedisStore {
    /// Records this instance as alive and checks that Redis kept every write this instance saw: a write
    /// count below what it saw before means Redis restarted from an older snapshot (or lost its AOF tail),
    /// so seqs would be handed out again; the store gets a new epoch and every client reloads. Returns the
    /// live instances.
    pub(super) async fn beat(&self) -> Result<Vec<Instance>, BusError> {
        let (inner, link) = (&self.inner, &self.inner.link);
        let seen_before = link.writes_seen.load(Ordering::Acquire);
        let reply: Value = HEARTBEAT
            .arg(&inner.instance_id)
            .arg(Self::candidate())
            .arg(inner.settings.presence_timeout_ms)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let Some([epoch, writes, live]) = array(&reply).and_then(|items| <&[Value; 3]>::try_from(items).ok()) else {
            return Err(malformed("a heartbeat"));
        };
        let (Some(mut epoch), Some(writes), Some(live)) = (string(epoch), uint(writes), array(live)) else {
            return Err(malformed("a heartbeat"));
        };
        if writes < seen_before {
            tracing::error!(
                writes,
                seen_before,
                "Redis lost writes this instance saw (restarted from an older \
                snapshot?): starting a new store epoch so that no client trusts a reused seq"
            );
            epoch =
                ROTATE.arg(&epoch).arg(Self::candidate()).invoke_async(&mut self.conn()).await.map_err(unavailable)?;
            link.writes_seen.store(writes, Ordering::Release);
        }
        link.observe_epoch(&epoch, &inner.hub);
        link.saw_writes(writes);
        let instances: Vec<Instance> = live
            .chunks_exact(2)
            .filter_map(|beat| Some(Instance { id: string(&beat[0])?, heartbeat_at: int(&beat[1])?, doorbell: None }))
            .collect();
        inner.metrics.peer_instances.set(instances.len().saturating_sub(1) as f64);
        Ok(instances)
    }

    /// Trims the canvas logs that are due (the TTL; what the webhook has not delivered stays up to its
    /// retention), then the log of every canvas (the TTL), then forgets idle canvases past their forget
    /// time. Expired idempotency keys, blocks, cursor streams and batch markers expire by themselves. Object
    /// ops are kept back to the history's floor: the ops stream is trimmed where the floor moves
    /// (`snapshot.lua` without history, `thin.lua` as the core thins it).
    pub(super) async fn clean(&self) -> Result<usize, BusError> {
        let settings = self.inner.settings;
        let limit = settings.cleanup_batch as i64;
        let mut total = self.until_done(&TRIM_LOGS, &[settings.ttl_ms, settings.retention_ms, limit]).await?;
        total += self.until_done(&TRIM_STREAM, &[settings.ttl_ms, limit]).await?;
        total += self.until_done(&FORGET, &[settings.keep_ms(), limit]).await?;
        self.inner.metrics.cleanup_deleted.increment(total as u64);
        Ok(total)
    }

    /// Calls a cleanup script (which answers how much it did, and whether more may be due) until nothing
    /// more is; returns how much it did in all.
    async fn until_done(&self, script: &Script, args: &[i64]) -> Result<usize, BusError> {
        let mut total = 0;
        loop {
            let mut invocation = script.prepare_invoke();
            for arg in args {
                invocation.arg(*arg);
            }
            let reply: Vec<i64> = invocation.invoke_async(&mut self.conn()).await.map_err(unavailable)?;
            let [done, more] = reply[..] else { return Err(malformed("a cleanup step")) };
            total += done.max(0) as usize;
            if more == 0 {
                return Ok(total);
            }
        }
    }

    /// The figures behind `/health`; an error when Redis does not answer.
    pub(super) async fn health_figures(&self) -> Result<BusFigures, BusError> {
        let started = Instant::now();
        let (beats, (secs, micros)): (Vec<i64>, (i64, i64)) = redis::pipe()
            .hvals(keys::INSTANCES)
            .cmd("TIME")
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let ping = started.elapsed();
        let redis_now = secs * 1000 + micros / 1000;
        let live_after = redis_now - self.inner.settings.presence_timeout_ms;
        let live_instances = beats.iter().filter(|beat| **beat > live_after).count() as i64;
        let oldest_unread = self.oldest_unread().await?;
        let now = now_ms();
        let link = &self.inner.link;
        let (last_error, last_error_age_ms) = link.last_error.report(now);
        Ok(BusFigures {
            bus: "redis",
            storage: StoreFigures::of(&RedisFigures {
                redis_ping_ms: ping.as_secs_f64() * 1000.0,
                store_epoch: link.epoch(),
                live_instances,
            }),
            cleanup_overdue_ms: None,
            writer_queue_depth: 0,
            writer_queue_capacity: 0,
            poll_lag_rows: 0,
            last_poll_age_ms: (now - link.last_read_ms.load(Ordering::Acquire)).max(0),
            peer_instances: (live_instances - 1).max(0),
            oldest_unread_age_ms: oldest_unread.map(|ts| (redis_now - ts).max(0)),
            last_error,
            last_error_age_ms,
        })
    }

    /// When the oldest entry a local room has not delivered yet was committed (Redis's clock, ms): one
    /// XRANGE of one entry per local canvas (the first thousand), in one round trip.
    async fn oldest_unread(&self) -> Result<Option<i64>, BusError> {
        let rooms = self.inner.hub.all_rooms();
        let mut pipe = redis::pipe();
        let mut asked = 0;
        for room in rooms.iter().take(1000) {
            let (generation, delivered) = {
                let state = room.lock();
                if !state.is_started() {
                    continue; // its join is still placing it
                }
                (state.generation(), state.delivered())
            };
            pipe.cmd("XRANGE")
                .arg(keys::log(&room.canvas))
                .arg(format!("({}", stream_id(generation, delivered)))
                .arg("+")
                .arg("COUNT")
                .arg(1);
            asked += 1;
        }
        if asked == 0 {
            return Ok(None);
        }
        let replies: Vec<Value> = pipe.query_async(&mut self.conn()).await.map_err(unavailable)?;
        let first_ts = |reply: &Value| {
            let [entry] = array(reply)? else { return None };
            let [_, fields] = array(entry)? else { return None };
            let fields = array(fields)?;
            int(fields.get(1)?)
        };
        Ok(replies.iter().filter_map(first_ts).min())
    }
}
