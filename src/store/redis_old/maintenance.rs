//! The periodic upkeep of the Redis bus: this instance's heartbeat, which also checks that Redis kept its
//! writes, expires the presence of dead instances, retries disconnects Redis did not take, registers again
//! this instance's connections after a late heartbeat, and stops the instance if its publisher or reader
//! task ended. Cursor batches are sent by the bus for every store (`Store::send_cursors`). Expiry of old messages
//! needs no task: `publish.lua` trims each stream as it appends, and an idle canvas's stream expires whole
//! (the TTL after its newest entry, or the webhook's retention while the webhook has not delivered it).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Instant;

use redis::Value;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::entry::{array, pairs};
use super::entry::{items, string, uint};
use super::link::Leaving;
use super::scripts::{FORGET, HEARTBEAT, ROTATE};
use super::{unavailable, RedisBus};
use crate::bus::{BusError, PresenceChange, Publish, Store, Unavailable};
use crate::config::Config;
use crate::periodic::ticker;
use crate::protocol::{CanvasId, UserId};

/// Runs until `stop` is cancelled. Sends on `fatal` why the instance cannot go on, if it cannot.
pub async fn run(bus: RedisBus, config: Config, stop: CancellationToken, fatal: oneshot::Sender<String>) {
    heartbeats(&bus, &config, stop, fatal).await;
}

async fn heartbeats(bus: &RedisBus, config: &Config, stop: CancellationToken, fatal: oneshot::Sender<String>) {
    let mut fatal = Some(fatal);
    let mut ticks = ticker(config.heartbeat_interval);
    let mut last_beat = Instant::now();
    // Others expire an instance silent for the presence timeout less one heartbeat: half of that is late
    // enough to say so in the log.
    let late_after = config.presence_timeout.saturating_sub(config.heartbeat_interval) / 2;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if let Some(worker) = bus.stopped_worker() {
            if let Some(fatal) = fatal.take() {
                let _ = fatal
                    .send(format!("the {worker} task stopped unexpectedly; stopping so that a restart brings it back"));
            }
            continue;
        }
        match bus.heartbeat().await {
            Ok(()) => {
                let since_last = last_beat.elapsed();
                last_beat = Instant::now();
                if since_last > late_after {
                    tracing::warn!(
                        ?since_last,
                        "a heartbeat was late: others may have expired this instance's connections"
                    );
                }
                // Only after a heartbeat that went through: it checked the store's epoch, so the connections
                // restored are of the log the store holds (after a store that lost its data, none are).
                if let Err(error) = bus.restore_presence().await {
                    tracing::warn!(%error, "could not check this instance's presence");
                }
            }
            Err(error) => tracing::warn!(%error, "Redis heartbeat failed"),
        }
    }
}

impl RedisBus {
    /// Records this instance as alive and checks that Redis kept every write this instance saw: a write
    /// count below what it saw before sending means Redis restarted from an older snapshot (or lost its AOF
    /// tail), so seqs would be handed out again; the store gets a new epoch and every client reloads. Then
    /// expires the connections of dead instances and retries disconnects Redis did not take.
    pub(super) async fn heartbeat(&self) -> Result<(), BusError> {
        let link = &self.inner.link;
        let seen_before = link.writes_seen.load(Ordering::Acquire);
        let reply: Value = HEARTBEAT
            .arg(&self.inner.instance_id)
            .arg(Self::candidate())
            .arg(self.inner.dead_after_ms)
            .arg(self.inner.ttl_ms)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let malformed = || BusError::from(Unavailable::UnexpectedReply("a heartbeat"));
        let [epoch, writes, dead, live] = items::<4>(&reply).ok_or_else(malformed)?;
        let (Some(mut epoch), Some(writes)) = (string(epoch), uint(writes)) else {
            return Err(malformed());
        };
        if writes < seen_before {
            tracing::error!(
                writes,
                seen_before,
                "Redis lost writes this instance saw (restarted from an older \
                snapshot?): starting a new store epoch so that no client trusts a reused seq"
            );
            epoch = ROTATE
                .arg(&epoch)
                .arg(Uuid::new_v4().to_string())
                .invoke_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            link.writes_seen.store(writes, Ordering::Release);
        }
        link.observe_epoch(&epoch, &self.inner.hub);
        link.saw_writes(writes);
        let dead: Vec<String> = array(dead).unwrap_or_default().iter().filter_map(string).collect();
        self.inner.metrics.peer_instances.set(uint(live).unwrap_or(1).saturating_sub(1) as f64);
        for instance in dead.iter().filter(|i| **i != self.inner.instance_id) {
            self.expire_instance(instance).await?;
        }
        for leaving in link.take_leaving() {
            let Leaving { canvas, user, name, conn } = leaving;
            self.publish(Publish::presence(PresenceChange::Disconnect, canvas, user, name, conn, None), false).await?;
        }
        Ok(())
    }

    /// Registers again every local connection that is missing from Redis ([`crate::bus::register_again`]).
    async fn restore_presence(&self) -> Result<(), BusError> {
        // Every heartbeat, one count: the list is read only when entries are missing.
        let (_, local) = self.inner.hub.counts();
        let count: u64 = redis::cmd("HLEN")
            .arg(format!("relay:i:{}:conns", self.inner.instance_id))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if count >= local as u64 {
            return Ok(());
        }
        let registered: Vec<String> = redis::cmd("HKEYS")
            .arg(format!("relay:i:{}:conns", self.inner.instance_id))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let registered: HashSet<Uuid> = registered.iter().filter_map(|conn| conn.parse().ok()).collect();
        crate::bus::register_again(&self.inner.hub, &registered, |publish, urgent| self.publish(publish, urgent)).await
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
            let (Ok(conn), Ok(canvas), Ok(user)) =
                (Uuid::parse_str(conn), CanvasId::parse(canvas), UserId::parse(user))
            else {
                continue;
            };
            let name = super::entry::optional(name).map(str::to_owned);
            self.publish(Publish::expiry(canvas, user, name, conn, self.inner.dead_after_ms), true).await?;
        }
        Ok(())
    }
}
