//! The periodic upkeep of the Redis bus, as one tokio task: this instance's heartbeat (which also checks
//! that Redis kept its writes), expiring the presence of dead instances, retrying disconnects Redis did not
//! take, and relaying cursor batches. Expiry of old messages needs no task: `publish.lua` trims each stream
//! as it appends, and an idle canvas's stream expires whole (PEXPIRE of the TTL).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use redis::Value;
use tokio::sync::watch;
use tokio::time::{interval, MissedTickBehavior};
use uuid::Uuid;

use super::entry::{array, pairs};
use super::scripts::{FORGET, HEARTBEAT, ROTATE};
use super::shared::Leaving;
use super::entry::{items, string, uint};
use super::{keys, unavailable, RedisBus};
use crate::bus::{BusError, Publish};
use crate::config::Config;
use crate::cursors::CursorBuffer;
use crate::protocol::{CanvasId, UserId};

/// How long a canvas's cursor stream outlives its last batch.
const CURSOR_STREAM_TTL_MS: u64 = 60_000;

/// Runs until `stop` changes to true.
pub async fn run(bus: RedisBus, cursors: Arc<CursorBuffer>, config: Config, mut stop: watch::Receiver<bool>) {
    let mut heartbeat = interval(config.heartbeat_interval);
    let mut cursor_batch = interval(config.cursor_batch);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    cursor_batch.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = heartbeat.tick() => {
                if let Err(error) = bus.heartbeat().await {
                    tracing::warn!(%error, "Redis heartbeat failed");
                }
            }
            _ = cursor_batch.tick() => {
                let batches = cursors.take();
                if batches.is_empty() {
                    continue;
                }
                let mut pipe = redis::pipe();
                for batch in &batches {
                    let key = keys::cursors(&batch.canvas);
                    pipe.cmd("XADD").arg(&key).arg("MAXLEN").arg("~").arg(64).arg("*")
                        .arg("i").arg(&bus.inner.instance_id).arg("d").arg(&batch.frames).ignore();
                    pipe.pexpire(&key, CURSOR_STREAM_TTL_MS as i64).ignore();
                }
                if let Err(error) = pipe.exec_async(&mut bus.conn()).await {
                    tracing::debug!(%error, "cursor batch not sent (cursors are best effort)");
                }
            }
        }
    }
}

impl RedisBus {
    /// Records this instance as alive and checks that Redis kept every write this instance saw: a write
    /// count below what it saw before sending means Redis restarted from an older snapshot (or lost its AOF
    /// tail), so seqs would be handed out again; the store gets a new epoch and every client reloads. Then
    /// expires the connections of dead instances and retries disconnects Redis did not take.
    pub(super) async fn heartbeat(&self) -> Result<(), BusError> {
        let shared = &self.inner.shared;
        let seen_before = shared.writes_seen.load(Ordering::Acquire);
        let reply: Value = HEARTBEAT
            .arg(&self.inner.instance_id)
            .arg(Self::candidate())
            .arg(self.inner.dead_after_ms)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let malformed = || BusError::Unavailable("Redis: unexpected heartbeat reply".into());
        let [epoch, writes, dead] = items::<3>(&reply).ok_or_else(malformed)?;
        let (Some(mut epoch), Some(writes)) = (string(epoch), uint(writes)) else {
            return Err(malformed());
        };
        if writes < seen_before {
            tracing::error!(writes, seen_before, "Redis lost writes this instance saw (restarted from an older \
                snapshot?): starting a new store epoch so that no client trusts a reused seq");
            epoch = ROTATE
                .arg(&epoch)
                .arg(Uuid::new_v4().to_string())
                .invoke_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            shared.writes_seen.store(writes, Ordering::Release);
        }
        shared.observe_epoch(&epoch, &self.inner.hub);
        shared.saw_writes(writes);
        let dead: Vec<String> = array(dead).unwrap_or_default().iter().filter_map(string).collect();
        for instance in dead.iter().filter(|i| **i != self.inner.instance_id) {
            self.expire_instance(instance).await?;
        }
        for leaving in shared.take_leaving() {
            let Leaving { canvas, user, name, conn } = leaving;
            self.publish(Publish::presence(false, canvas, user, name, conn, None)).await?;
        }
        Ok(())
    }

    /// Publishes the disconnect of every connection a dead instance left; it is forgotten once none are
    /// left. Several survivors may do this at once: the script logs each disconnect once.
    async fn expire_instance(&self, instance: &str) -> Result<(), BusError> {
        let reply: Value = FORGET.arg(instance).invoke_async(&mut self.conn()).await.map_err(unavailable)?;
        let conns = pairs(&reply).unwrap_or_default();
        if !conns.is_empty() {
            tracing::info!(instance, connections = conns.len(), "expiring connections of a dead instance");
        }
        for (conn, place) in conns {
            let mut parts = place.splitn(3, '\n');
            let (Some(canvas), Some(user), Some(name)) = (parts.next(), parts.next(), parts.next()) else { continue };
            let (Ok(conn), Ok(canvas), Ok(user)) = (Uuid::parse_str(conn), CanvasId::parse(canvas), UserId::parse(user)) else {
                continue;
            };
            let name = super::entry::optional(name).map(str::to_owned);
            self.publish(Publish::presence(false, canvas, user, name, conn, None)).await?;
        }
        Ok(())
    }
}
