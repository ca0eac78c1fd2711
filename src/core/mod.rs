//! The delivery core: everything that is the same whichever store holds the canvases, written once. The
//! connection and HTTP layers ask it, through [`Bus`], to publish logged messages (seq assigned, ack after
//! commit), to join canvases (welcome position, resume replay), and to read canvases and logs; committed
//! messages reach every process's [`crate::hub::Hub`].
//!
//! - `fold/`: every rule that needs a canvas's state at commit time (object ops, presence, idempotency,
//!   the size limit), and `committer/`: the one loop that stages publishes with it and has the store apply
//!   them (`lanes.rs` its two inbound lanes, `delivery.rs` what happens after a commit, `publish.rs` a
//!   publish and who waits for it).
//! - `join.rs` (joins), `reads.rs` (the API's reads), `state_cache.rs` (states serialized once per version),
//!   `snapshots.rs` (when and how a canvas's state is written as a snapshot), `upkeep.rs` (heartbeats, dead
//!   instances' presence, cleanup).
//!
//! The store (`crate::store`) only stores: the SQLite file (also `--bus memory`) or Redis, chosen once at
//! start.

pub mod committer;
pub mod delivery;
pub mod fold;
pub mod history;
pub mod join;
pub mod lanes;
pub mod publish;
mod reads;
mod snapshots;
pub mod state_cache;
pub(crate) mod upkeep;
pub mod views;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use self::committer::Handle;
use self::upkeep::Leaving;
use crate::config::{BusKind, Config};
use crate::cursors::CursorBuffer;
use crate::hub::{Hub, Member, Recipient};
use crate::metrics::Metrics;
use crate::protocol::{CanvasId, UserId};
use crate::store::consumer::ConsumerStore;
use crate::store::figures::BusFigures;
use crate::store::redis::RedisStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{Post, Store, Whose};

pub use crate::store::{BusError, Unavailable};
pub use join::{JoinRequest, Joined, Replay};
pub use publish::{refuse_all, Committed, Origin, PresenceChange, Publish, Restored, TryPublish};
pub use state_cache::StateCache;
pub use views::Present;

/// What an opened store gives the bus.
pub struct Opened {
    pub store: Arc<dyn Store>,
    pub consumers: Arc<dyn ConsumerStore>,
    /// The store's committer (started by the store, where its writes must run).
    pub committer: Box<dyn Handle>,
}

/// The bus of this process: its store and its committer, and what every store shares. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    consumers: Arc<dyn ConsumerStore>,
    /// The committer's lanes.
    committer: Box<dyn Handle>,
    hub: Arc<Hub>,
    metrics: Metrics,
    /// Big canvas states, serialized once per version and shared by joiners.
    states: StateCache,
    /// How long a publish or a join's registration may wait for the store (`--publish-timeout`).
    publish_timeout: Duration,
    /// `--message-ttl` in ms: what clients see of the log.
    ttl_ms: i64,
    /// `--max-resume`.
    max_resume: u64,
    /// Disconnects the store did not take, tried again at every heartbeat.
    leaving: Arc<Leaving>,
    /// Serializes and stores the snapshots the committer finds due, off its loop.
    snapshots: JoinHandle<()>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").finish_non_exhaustive()
    }
}

impl Bus {
    /// Opens the store `--bus` names and starts its committer, its readers, and the snapshot writer.
    pub async fn open(
        config: &Config,
        instance_id: &str,
        listen: &str,
        hub: Arc<Hub>,
        metrics: Metrics,
    ) -> anyhow::Result<Bus> {
        let (due, snapshots_due) = mpsc::channel(snapshots::QUEUE);
        let leaving = Arc::new(Leaving::default());
        let setup = committer::Setup::new(config, instance_id, hub.clone(), metrics.clone(), due, leaving.clone());
        let Opened { store, consumers, committer } = match &config.bus {
            BusKind::Sqlite | BusKind::Memory => SqliteStore::open(config, instance_id, listen, setup).await?,
            BusKind::Redis(url) => RedisStore::open(url.expose(), config, instance_id, setup).await?,
        };
        let snapshots = tokio::spawn(snapshots::write(store.clone(), snapshots_due, metrics.clone()));
        Ok(Bus {
            inner: Arc::new(Inner {
                store,
                consumers,
                committer,
                hub,
                metrics,
                states: StateCache::new(config.state_budget()),
                publish_timeout: config.publish_timeout,
                ttl_ms: config.message_ttl.as_millis() as i64,
                max_resume: config.max_resume,
                leaving,
                snapshots,
            }),
        })
    }

    /// Starts the bus's periodic upkeep until `stop` is cancelled: this instance's coalesced cursors go to
    /// the other instances every `--cursor-batch`, and heartbeats, dead instances' presence and cleanup run
    /// on their own clocks (see `upkeep.rs`). It sends on `fatal` why the instance cannot go on, if it
    /// cannot.
    pub fn maintain(
        &self,
        cursors: Arc<CursorBuffer>,
        config: Config,
        stop: CancellationToken,
        fatal: oneshot::Sender<String>,
    ) -> JoinHandle<()> {
        tokio::spawn(upkeep::run(self.clone(), cursors, config, stop, fatal))
    }

    /// What the event stream and the webhook read and record.
    pub fn consumers(&self) -> Arc<dyn ConsumerStore> {
        self.inner.consumers.clone()
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// This process's rooms.
    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub(crate) fn state_cache(&self) -> &StateCache {
        &self.inner.states
    }

    pub fn publish_timeout(&self) -> Duration {
        self.inner.publish_timeout
    }

    /// How long messages are kept for clients, in ms.
    pub fn ttl_ms(&self) -> i64 {
        self.inner.ttl_ms
    }

    /// Queues a logged message (or a connection's leaving) for commit, behind what is already queued. Waits
    /// when the queue is full.
    pub async fn publish(&self, publish: Publish) -> Result<(), BusError> {
        self.inner.committer.publish(publish, false).await
    }

    /// Queues a logged message if there is room now; gives it back if the queue is full.
    pub fn try_publish(&self, publish: Publish) -> Result<(), TryPublish> {
        self.inner.committer.try_publish(publish)
    }

    /// Queues a publish ahead of the queued messages: a join's registration and dead instances' expiry,
    /// which must not wait behind a backlog of messages (see the committer's two lanes).
    pub async fn publish_urgent(&self, publish: Publish) -> Result<(), BusError> {
        self.inner.committer.publish(publish, true).await
    }

    /// A connection is gone: out of its room at once, out of presence (logging `user-disconnected` if it was
    /// the user's last on the canvas) when the committer gets to it: after the connection's own messages,
    /// or (`urgent`, for a join that never returned) right after its registration. If the committer has
    /// already stopped, survivors remove it; if the store does not take it, the next heartbeat tries again.
    pub async fn leave(&self, member: Member, urgent: bool) {
        self.hub().leave(&member.canvas, member.conn);
        let leave = Publish::leaving(member, PresenceChange::Disconnect);
        let _ = if urgent { self.publish_urgent(leave).await } else { self.publish(leave).await };
    }

    /// Returns once everything queued before the call is committed (or refused).
    pub async fn flush(&self) -> Result<(), BusError> {
        self.inner.committer.flush().await
    }

    /// Final stop, after every connection is gone: the committer refuses what is still queued and stops,
    /// then the store.
    pub async fn close(&self) {
        self.inner.store.closing().await;
        self.inner.committer.stop().await;
        self.inner.snapshots.abort();
        self.inner.store.close().await;
    }

    /// The figures behind `/health`; an error means the storage cannot be reached.
    pub async fn figures(&self) -> Result<BusFigures, BusError> {
        let mut figures = self.inner.store.figures().await?;
        figures.writer_queue_depth = self.inner.committer.depth();
        figures.writer_queue_capacity = self.inner.committer.capacity();
        Ok(figures)
    }

    /// Drops a canvas's log and state; it starts a new epoch at seq 0. Returns the new epoch.
    pub async fn reset(&self, canvas: CanvasId) -> Result<String, BusError> {
        let epoch = self.inner.committer.reset(canvas.clone()).await?;
        self.state_cache().forget(&canvas);
        Ok(epoch)
    }

    /// Sends a frame to every connection of a user, or of everyone, on every instance: the store carries it
    /// to the other instances, then this one's connections get it here (not on a store's thread: a
    /// broadcast reaches every local socket). Returns how many connections the user has across instances;
    /// for everyone, how many this instance has.
    pub async fn send_to(&self, to: Recipient, frame: String) -> Result<u64, BusError> {
        self.inner.store.post(Post::ToUser { to: to.clone(), frame: frame.clone() }).await?;
        let here = self.hub().send_to_user(to.as_str(), &Message::text(frame)) as u64;
        match to {
            Recipient::Everyone => Ok(here),
            Recipient::User(user) => Ok(self.inner.store.connections(Whose::User(user)).await?.len() as u64),
        }
    }

    /// Closes every connection of `user` to `canvas` on every instance (4003), and with `block` refuses its
    /// new ones there for that long; returns how many connections it had on the canvas (counted before the
    /// removal: once posted, the other instances close theirs and their rows go at once).
    pub async fn remove_user(&self, canvas: CanvasId, user: UserId, block: Option<Duration>) -> Result<u64, BusError> {
        let blocked_until = block
            .map_or(0, |block| crate::clock::now_ms().saturating_add(block.as_millis().min(i64::MAX as u128) as i64));
        let had = self.inner.store.connections(Whose::User(user.clone())).await?;
        let had = had.iter().filter(|(c, _)| c == &canvas).count() as u64;
        let post = Post::Removal { canvas: canvas.clone(), user: user.clone(), blocked_until };
        self.inner.store.post(post).await?;
        self.hub().remove_user(&canvas, user.as_str());
        Ok(had)
    }

    /// How much longer `user` is blocked from `canvas`, if it is.
    pub async fn blocked(&self, canvas: &CanvasId, user: &UserId) -> Result<Option<Duration>, BusError> {
        let until = self.inner.store.blocked(canvas, user).await?;
        let left = until.map(|until| until - crate::clock::now_ms()).filter(|left| *left > 0);
        Ok(left.map(|left| Duration::from_millis(left as u64)))
    }
}
