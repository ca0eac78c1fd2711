//! The message bus: what the connection and HTTP layers ask of shared storage, in their terms. A logged
//! message is published and committed (seq assigned, ack after commit), a connection joins a canvas (welcome
//! position, resume replay), and committed messages reach every process's [`crate::hub::Hub`].
//!
//! Two stores implement [`Store`] (`store.rs`), the contract beneath it: the shared SQLite file
//! ([`sqlite::SqliteBus`], also `--bus memory`) and Redis Streams ([`redis::RedisBus`]). The store is chosen
//! once at start; sessions, routes and the hub only ever call [`Bus`], and what is the same whichever store
//! (joins, after-commit delivery, cursor batching) is written here once.

pub mod committed;
pub mod consumer;
mod error;
pub mod join;
pub mod lanes;
pub mod last_error;
pub mod publish;
pub mod redis;
pub mod sqlite;
pub mod state_cache;
mod store;
pub mod views;
pub mod workers;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::config::{BusKind, Config};
use crate::cursors::CursorBuffer;
use crate::hub::{ConnId, Hub, Recipient};
use crate::metrics::Metrics;
use crate::periodic::every;
use crate::protocol::{CanvasId, Resume, UserId};

pub use error::{BusError, Unavailable};
pub use join::{JoinRequest, Joined, ReadObjects, Replay, Snapshot};
pub use publish::{refuse_all, Committed, Origin, PresenceChange, Publish, TryPublish};
pub use redis::RedisBus;
pub use sqlite::SqliteBus;
pub use state_cache::StateCache;
pub use store::Store;
pub use views::{BusFigures, CanvasLog, CanvasPage, CanvasState, CanvasSummary, Peer, Present, UserPresence};

/// The bus of this process: the store `--bus` chose, and what every store shares. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    store: Arc<dyn Store>,
    common: Arc<Common>,
}

/// What the bus keeps whatever the store.
struct Common {
    hub: Arc<Hub>,
    metrics: Metrics,
    /// Big canvas states, serialized once per version and shared by joiners.
    states: StateCache,
    /// How long a publish or a join's registration may wait for the store (`--publish-timeout`).
    publish_timeout: Duration,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").finish_non_exhaustive()
    }
}

impl Bus {
    /// Opens the bus `--bus` names and starts its threads or tasks.
    pub async fn open(
        config: &Config,
        instance_id: &str,
        listen: &str,
        hub: Arc<Hub>,
        metrics: Metrics,
    ) -> anyhow::Result<Bus> {
        let store: Arc<dyn Store> = match &config.bus {
            BusKind::Sqlite | BusKind::Memory => {
                Arc::new(SqliteBus::open(config, instance_id, listen, hub.clone(), metrics.clone()).await?)
            }
            BusKind::Redis(url) => {
                Arc::new(RedisBus::open(url.expose(), config, instance_id, hub.clone(), metrics.clone()).await?)
            }
        };
        // Two of the biggest states fit, and at least 256 MiB: enough for the canvases joined right now.
        let budget = config.max_canvas_state.saturating_mul(2).max(256 << 20);
        let common = Common { hub, metrics, states: StateCache::new(budget), publish_timeout: config.publish_timeout };
        Ok(Bus { store, common: Arc::new(common) })
    }

    /// Starts the bus's periodic upkeep until `stop` is cancelled: this instance's coalesced cursors go to
    /// the other instances every `--cursor-batch`, and the store keeps itself (heartbeats, expiring dead
    /// instances' presence, whatever its storage needs). It sends on `fatal` why the instance cannot go on,
    /// if it cannot.
    pub fn maintain(
        &self,
        cursors: Arc<CursorBuffer>,
        config: Config,
        stop: CancellationToken,
        fatal: oneshot::Sender<String>,
    ) -> JoinHandle<()> {
        let upkeep = self.store.maintain(config.clone(), stop.clone(), fatal);
        let store = self.store.clone();
        tokio::spawn(async move {
            let (store, cursors) = (&store, &cursors);
            every(config.cursor_batch, stop, move || async move {
                let batches = cursors.take();
                if !batches.is_empty() {
                    store.send_cursors(batches).await;
                }
            })
            .await;
            let _ = upkeep.await;
        })
    }

    /// What the event stream and the webhook read and record (the store, as the consumers see it).
    pub fn consumers(&self) -> Arc<dyn consumer::ConsumerStore> {
        self.store.clone()
    }

    /// This process's rooms.
    pub fn hub(&self) -> &Hub {
        &self.common.hub
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.common.metrics
    }

    pub(crate) fn state_cache(&self) -> &StateCache {
        &self.common.states
    }

    pub fn publish_timeout(&self) -> Duration {
        self.common.publish_timeout
    }

    /// Queues a logged message (or a connection's leaving) for commit, behind what is already queued. Waits
    /// when the queue is full.
    pub async fn publish(&self, publish: Publish) -> Result<(), BusError> {
        self.store.publish(publish, false).await
    }

    /// Queues a logged message if there is room now; gives it back if the queue is full.
    pub fn try_publish(&self, publish: Publish) -> Result<(), TryPublish> {
        self.store.try_publish(publish)
    }

    /// Queues a publish ahead of the queued messages: a join's registration and dead instances' expiry,
    /// which must not wait behind a backlog of messages (see the writer's two lanes).
    pub async fn publish_urgent(&self, publish: Publish) -> Result<(), BusError> {
        self.store.publish(publish, true).await
    }

    /// A canvas at its head: epoch, seq, state version, presence, the resume check and (as `read` says) its
    /// objects, all at one point of its log.
    pub async fn snapshot(
        &self,
        canvas: &CanvasId,
        resume: Option<&Resume>,
        read: ReadObjects,
    ) -> Result<Snapshot, BusError> {
        self.store.snapshot(canvas, resume, read).await
    }

    /// The frames of seqs `after + 1 ..= upto` of one generation of a canvas, in order; fewer when some expired.
    pub async fn replay_page(
        &self,
        canvas: &CanvasId,
        generation: u64,
        after: u64,
        upto: u64,
    ) -> Result<Vec<Message>, BusError> {
        self.store.replay_page(canvas, generation, after, upto).await
    }

    /// A room was just started by a join: the store's reader may need to include it.
    async fn room_started(&self, canvas: &CanvasId) {
        self.store.room_started(canvas).await;
    }

    /// A connection is gone: out of its room at once, out of presence (logging `user-disconnected` if it was
    /// the user's last on the canvas) when the writer gets to it: after the connection's own messages, or
    /// (`urgent`, for a join that never returned) right after its registration. If the writer has already
    /// stopped, or the storage does not take it, survivors (or a later retry) remove it.
    pub async fn leave(&self, canvas: CanvasId, conn: ConnId, user: UserId, name: Option<String>, urgent: bool) {
        self.hub().leave(&canvas, conn);
        let leave = Publish::presence(PresenceChange::Disconnect, canvas, user, name, conn, None);
        let _ = if urgent { self.publish_urgent(leave).await } else { self.publish(leave).await };
    }

    /// Returns once everything queued before the call is committed (or refused).
    pub async fn flush(&self) -> Result<(), BusError> {
        self.store.flush().await
    }

    /// Final stop, after every connection is gone.
    pub async fn close(&self) {
        self.store.close().await
    }

    /// The figures behind `/health`; an error means the storage cannot be reached.
    pub async fn figures(&self) -> Result<BusFigures, BusError> {
        self.store.figures().await
    }

    /// How long messages are kept, in ms.
    pub fn ttl_ms(&self) -> i64 {
        self.store.ttl_ms()
    }

    /// Retained messages of a canvas after `since`, at most `limit`, in seq order, with the canvas head.
    pub async fn messages(&self, canvas: CanvasId, since: u64, limit: u64) -> Result<CanvasLog, BusError> {
        self.store.messages(canvas, since, limit).await
    }

    /// A canvas's head, objects and presence, read at one point of its log.
    pub async fn canvas(&self, canvas: CanvasId) -> Result<CanvasState, BusError> {
        let snapshot = self.snapshot(&canvas, None, ReadObjects::always()).await?;
        let objects = snapshot.objects.unwrap_or_else(|| Bytes::from_static(b"{}"));
        Ok(CanvasState { epoch: snapshot.epoch, seq: snapshot.seq, objects, presence: snapshot.presence })
    }

    /// Canvases in id order after `after`, at most `limit`, only those with a connection if `active`.
    pub async fn canvases(&self, after: Option<CanvasId>, limit: u32, active: bool) -> Result<CanvasPage, BusError> {
        self.store.canvases(after, limit, active).await
    }

    /// Connected users across instances (all, or only `user`), with their connections and canvases.
    pub async fn users(&self, only: Option<UserId>) -> Result<Vec<UserPresence>, BusError> {
        self.store.users(only).await
    }

    /// Drops a canvas's log and state; it starts a new epoch at seq 0. Returns the new epoch.
    pub async fn reset(&self, canvas: CanvasId) -> Result<String, BusError> {
        let epoch = self.store.reset(canvas.clone()).await?;
        self.state_cache().forget(&canvas);
        Ok(epoch)
    }

    /// Sends a frame to every connection of a user, or of everyone, on every instance: the store carries it
    /// to the other instances, then this one's connections get it here (not on a store's thread: a
    /// broadcast reaches every local socket). Returns how many connections the user has across instances;
    /// for everyone, how many this instance has.
    pub async fn send_to(&self, to: Recipient, frame: String) -> Result<u64, BusError> {
        let across = self.store.send_to(to.clone(), frame.clone()).await?;
        let here = self.common.hub.send_to_user(to.as_str(), &Message::text(frame)) as u64;
        Ok(if to == Recipient::Everyone { here } else { across })
    }

    /// Closes every connection of `user` to `canvas` on every instance (4003), and with `block` refuses its
    /// new ones there for that long; returns how many connections it had on the canvas.
    pub async fn remove_user(&self, canvas: CanvasId, user: UserId, block: Option<Duration>) -> Result<u64, BusError> {
        let block_ms = block.map(|block| block.as_millis().min(u64::MAX as u128) as u64);
        self.store.remove_user(canvas, user, block_ms).await
    }

    /// How much longer `user` is blocked from `canvas`, if it is.
    pub async fn blocked(&self, canvas: &CanvasId, user: &UserId) -> Result<Option<Duration>, BusError> {
        Ok(self.store.blocked(canvas, user).await?.map(Duration::from_millis))
    }
}

/// Registers again this instance's connections that the store lost (survivors took the instance for dead
/// while its heartbeat was late), through `publish` (the store's own, `urgent` as its second argument):
/// `user-connected` is logged where it is the user's first again. A connection that left while its
/// registration was on its way is removed again once that commits.
pub async fn register_again<F, Fut>(
    hub: &Hub,
    registered: &std::collections::HashSet<ConnId>,
    publish: F,
) -> Result<(), BusError>
where
    F: Fn(Publish, bool) -> Fut,
    Fut: std::future::Future<Output = Result<(), BusError>>,
{
    let missing: Vec<_> = hub.members().into_iter().filter(|(_, conn, _, _)| !registered.contains(conn)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    tracing::warn!(
        connections = missing.len(),
        "this instance's connections were expired by others; registering them again"
    );
    let mut waits = Vec::new();
    for (canvas, conn, user, name) in &missing {
        let (done, committed) = oneshot::channel();
        publish(
            Publish::presence(PresenceChange::Connect, canvas.clone(), user.clone(), name.clone(), *conn, Some(done)),
            true,
        )
        .await?;
        waits.push(committed);
    }
    for committed in waits {
        let _ = committed.await;
    }
    let still_here: std::collections::HashSet<ConnId> = hub.members().into_iter().map(|(_, conn, _, _)| conn).collect();
    for (canvas, conn, user, name) in missing.into_iter().filter(|(_, conn, _, _)| !still_here.contains(conn)) {
        publish(Publish::presence(PresenceChange::Disconnect, canvas, user, name, conn, None), false).await?;
    }
    Ok(())
}
