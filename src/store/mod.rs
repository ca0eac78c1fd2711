//! The storage behind the relay, as narrow as the relay can make it: each store (the SQLite file in
//! `sqlite/`, also `--bus memory`; Redis in `redis/`) stores and reads, and decides nothing about a canvas.
//! Every rule (what an op does, presence, idempotency, the size limit, when a snapshot is due, what is
//! retained for whom) is in `crate::core`, written once.
//!
//! Two faces:
//! - [`Commit`], the write side one committer per process drives: apply a batch of staged canvases, each
//!   atomically under a check of its head ([`records::Batch`]), read a canvas whole for the fold, reset one.
//! - [`Store`], shared by everything else: reads of canvases and logs, snapshots, connections, instances,
//!   the ephemeral channel between instances (cursors, user messages, removals), and the consumers'
//!   positions and leases.
//!
//! Each store also brings other instances' commits and ephemeral posts to this process's hub on its own
//! (the SQLite watcher, the Redis stream reader): that is where it differs most, and it needs no trait.

pub mod records;

use async_trait::async_trait;
use bytes::Bytes;

use self::records::{Batch, ConnRow, Head, LogEntry};
use crate::bus::BusError;
use crate::hub::{ConnId, Recipient};
use crate::protocol::{CanvasId, UserId};

/// A canvas's epoch as clients see it: the store's epoch (a fresh file, a Redis that lost its data) and the
/// canvas's generation (a reset). The one place it is written.
pub fn epoch(store_epoch: &str, generation: u64) -> String {
    format!("{store_epoch}-{generation}")
}

/// A canvas read at one point of its log.
#[derive(Debug, Clone, Default)]
pub struct CanvasRead {
    /// `None` for a canvas nothing was ever committed to.
    pub head: Option<Head>,
    pub conns: Vec<ConnRow>,
    /// The newest snapshot at or below the head, unless the reader said it has the state already.
    pub snapshot: Option<SnapshotRead>,
    /// The object ops after the snapshot (or after the state the reader has) up to the head, in seq order.
    pub ops: Vec<LogEntry>,
}

/// A snapshot of a canvas's objects, as [`crate::core::fold::Objects::to_json`] wrote it.
#[derive(Debug, Clone)]
pub struct SnapshotRead {
    pub seq: u64,
    pub json: Bytes,
}

/// Whose connections to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Whose {
    Everyone,
    User(UserId),
    /// An instance's: what survivors expire when it dies, what it registers again after a late heartbeat.
    Instance(String),
}

/// What one instance posts for the others on the ephemeral channel: relayed once, at most, within the TTL.
#[derive(Debug, Clone)]
pub enum Post {
    /// Cursor, presence-state and event batches (see `crate::cursors`).
    Cursors(Vec<crate::cursors::CursorBatch>),
    /// A frame for every connection of a user, or of everyone.
    ToUser { to: Recipient, frame: String },
    /// Closes the user's connections to the canvas (4003); until `blocked_until` (unix ms, 0: none) its new
    /// ones are refused. A block only ever lengthens.
    Removal { canvas: CanvasId, user: UserId, blocked_until: i64 },
}

/// A live instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    /// Its last heartbeat (unix ms, the store's clock).
    pub heartbeat_at: i64,
    /// Where its doorbell rings (SQLite's peer wake-ups), if it has one.
    pub doorbell: Option<String>,
}

/// A canvas's reset as its store committed it.
#[derive(Debug, Clone)]
pub struct ResetDone {
    pub generation: u64,
    /// The canvas's new epoch.
    pub epoch: String,
    /// The reset marker's place in the store's commit order.
    pub id: i64,
}

/// The write side of a store, driven by this process's one committer (`crate::core::committer`).
#[async_trait]
pub trait Commit: Send + 'static {
    /// The store's own writes that must run in its committer's turn (the SQLite file's: one write
    /// connection per process).
    type Job: Send + std::fmt::Debug + 'static;

    /// Applies a batch (see [`Batch`]); returns the commit's time (unix ms, the store's clock). An error
    /// means nothing of the batch was applied, except [`Unavailable::Unresolved`](crate::bus::Unavailable):
    /// the store could not tell (no reply came); the committer commits the same batch again.
    async fn commit(&mut self, batch: &mut dyn Batch) -> Result<i64, BusError>;

    /// A canvas whole, for the committer's fold.
    async fn read_canvas(&mut self, canvas: &CanvasId) -> Result<CanvasRead, BusError>;

    /// Starts the canvas's next generation at seq 0 (its log and snapshots dropped for readers, presence
    /// kept), with its reset marker.
    async fn reset(&mut self, canvas: &CanvasId) -> Result<ResetDone, BusError>;

    /// Runs one of the store's own jobs.
    async fn run(&mut self, job: Self::Job);

    /// After a commit's local delivery (the SQLite watcher skips this process's own rows, and its peers'
    /// doorbells ring).
    fn delivered(&mut self, _delivered: crate::bus::committed::Delivered) {}
}

/// Everything but the committer's writes. Cheap to share as `Arc<dyn Store>`.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The store's epoch (part of every canvas epoch), once known.
    fn store_epoch(&self) -> String;

    /// A canvas at one point of its log. With `have` (generation, seq), a caller that holds the objects at
    /// that seq gets the ops after it instead of a snapshot, when the log still has them.
    async fn read_canvas(&self, canvas: &CanvasId, have: Option<(u64, u64)>) -> Result<CanvasRead, BusError>;

    /// The entries of `generation` with `after < seq <= upto`, at most `limit`, in seq order, including
    /// entries past the TTL that are still kept (readers that show the log filter them).
    async fn read_log(
        &self,
        canvas: &CanvasId,
        generation: u64,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<LogEntry>, BusError>;

    /// Canvases in id order after `after`, at most `limit`, with their heads.
    async fn heads(&self, after: Option<&CanvasId>, limit: usize) -> Result<Vec<(CanvasId, Head)>, BusError>;

    /// Keeps a snapshot of a canvas's objects at (`generation`, `seq`) if it is newer than the newest kept
    /// of that generation; returns whether it did.
    async fn put_snapshot(&self, canvas: &CanvasId, generation: u64, seq: u64, json: Bytes) -> Result<bool, BusError>;

    /// Connections across instances, with their canvases.
    async fn connections(&self, whose: Whose) -> Result<Vec<(CanvasId, ConnRow)>, BusError>;

    /// Keeps connections' presence states (JSON text; `None` for a connection that is gone), for joiners.
    async fn save_states(&self, states: Vec<(CanvasId, ConnId, Option<String>)>) -> Result<(), BusError>;

    /// Records this instance alive now; returns every instance with a heartbeat within `--presence-timeout`.
    async fn heartbeat(&self) -> Result<Vec<Instance>, BusError>;

    /// Posts on the ephemeral channel.
    async fn post(&self, post: Post) -> Result<(), BusError>;

    /// Until when `user` is blocked from `canvas` (unix ms), if it is.
    async fn blocked(&self, canvas: &CanvasId, user: &UserId) -> Result<Option<i64>, BusError>;
}
