//! The contract between the bus and the storage behind it. The SQLite file (also `--bus memory`) and Redis
//! Streams each implement [`Store`]; everything above it is written once: sessions and joins (`join.rs`),
//! what happens after a commit (`committed.rs`: acks, refusals, local delivery), cursor batching
//! (`crate::cursors`), the HTTP API. A third store is one more implementation of this trait and one more arm
//! in `Bus::open`.
//!
//! What a store must do itself: assign each canvas's seqs in one atomic commit per batch (group commit,
//! with an urgent lane ahead of the queue) and report each publish's [`Outcome`](super::committed::Outcome);
//! bring other instances' commits to this process's rooms in seq order; read a canvas at one point of its
//! log; keep presence and heartbeats; and relay cursor batches and user messages between instances.

use async_trait::async_trait;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::consumer::ConsumerStore;
use super::{BusError, BusFigures, CanvasLog, CanvasPage, Publish, ReadObjects, Snapshot, TryPublish, UserPresence};
use crate::config::Config;
use crate::cursors::CursorBatch;
use crate::hub::Recipient;
use crate::protocol::{CanvasId, Resume, UserId};

/// A storage the bus runs on. Cheap to share: the bus holds it as `Arc<dyn Store>`.
#[async_trait]
pub trait Store: ConsumerStore {
    /// Queues a publish for commit, on the queue or (`urgent`: a join's registration, a dead instance's
    /// expiry) ahead of it. Waits while that lane is full (back-pressure). The outcome reaches the publish's
    /// [`Origin`](super::Origin) once committed or refused, through `committed::deliver`.
    async fn publish(&self, publish: Publish, urgent: bool) -> Result<(), BusError>;

    /// Queues a publish if the queue has room now; gives it back if not.
    fn try_publish(&self, publish: Publish) -> Result<(), TryPublish>;

    /// Returns once everything queued before the call is committed (or refused).
    async fn flush(&self) -> Result<(), BusError>;

    /// A canvas at its head: epoch, seq, state version, presence, the resume check and (as `read` says) its
    /// objects, all at one point of its log.
    async fn snapshot(
        &self,
        canvas: &CanvasId,
        resume: Option<&Resume>,
        read: ReadObjects,
    ) -> Result<Snapshot, BusError>;

    /// The frames of seqs `after + 1 ..= upto` of one generation of a canvas, in order; fewer when some
    /// expired.
    async fn replay_page(
        &self,
        canvas: &CanvasId,
        generation: u64,
        after: u64,
        upto: u64,
    ) -> Result<Vec<Message>, BusError>;

    /// Retained messages of a canvas after `since`, at most `limit`, in seq order, with the canvas head.
    async fn messages(&self, canvas: CanvasId, since: u64, limit: u64) -> Result<CanvasLog, BusError>;

    /// Canvases in id order after `after`, at most `limit`; with `active`, only those with a connection on
    /// some instance.
    async fn canvases(&self, after: Option<CanvasId>, limit: u32, active: bool) -> Result<CanvasPage, BusError>;

    /// Connected users across instances (all, or only `user`), with their connections and canvases.
    async fn users(&self, only: Option<UserId>) -> Result<Vec<UserPresence>, BusError>;

    /// Drops a canvas's log and state; it starts a new epoch at seq 0, whose reset marker every instance's
    /// room of the canvas receives. Returns the new epoch.
    async fn reset(&self, canvas: CanvasId) -> Result<String, BusError>;

    /// Hands a frame for every connection of a user (or of everyone) to the other instances, which deliver it
    /// to theirs (the bus delivers it to this one's). Returns how many connections the user has across
    /// instances (anything for everyone: the bus counts its own).
    async fn send_to(&self, to: Recipient, frame: String) -> Result<u64, BusError>;

    /// Closes every connection of `user` to `canvas`, on every instance, with 4003; with `block_ms`, refuses
    /// the user's new connections to the canvas on every instance for that long. Returns how many connections
    /// the user had on the canvas across instances.
    async fn remove_user(&self, canvas: CanvasId, user: UserId, block_ms: Option<u64>) -> Result<u64, BusError>;

    /// How much longer (ms) `user` is blocked from `canvas`, if it is.
    async fn blocked(&self, canvas: &CanvasId, user: &UserId) -> Result<Option<u64>, BusError>;

    /// Hands this instance's coalesced cursors to the other instances. Best effort: a batch lost is
    /// replaced by the next one.
    async fn send_cursors(&self, batches: Vec<CursorBatch>);

    /// A room was just started by a join: a store whose reader follows canvases one by one may need to
    /// include it now.
    async fn room_started(&self, _canvas: &CanvasId) {}

    /// The figures behind `/health`; an error means the storage cannot be reached.
    async fn figures(&self) -> Result<BusFigures, BusError>;

    /// How long messages are kept, in ms.
    fn ttl_ms(&self) -> i64;

    /// Starts the store's own periodic upkeep (heartbeats, expiring dead instances' presence, cleanup),
    /// until `stop` is cancelled. It sends on `fatal` why the instance cannot go on, if it cannot.
    fn maintain(&self, config: Config, stop: CancellationToken, fatal: oneshot::Sender<String>) -> JoinHandle<()>;

    /// Final stop, after every connection is gone: what is queued is refused, the store's threads or tasks
    /// end.
    async fn close(&self);
}
