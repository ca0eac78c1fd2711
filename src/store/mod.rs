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
//!
//! What the core and the stores both use is here, so that imports run one way, core to store: the plain
//! records they hand each other (`records.rs`), the errors (`error.rs`), the figures behind `/health`
//! (`figures.rs`, `last_error.rs`) and the watch on the stores' threads (`workers.rs`).

pub mod history;
pub mod records;

use async_trait::async_trait;
use bytes::Bytes;

pub mod consumer;
mod error;
pub mod figures;
pub mod last_error;
pub mod redis;
pub mod sqlite;
pub mod workers;

use std::sync::Arc;

use self::figures::BusFigures;
use self::history::{AtRead, Fork, HistoryDue, Named, Thinning, Version};
use self::records::{AfterDelivery, Batch, ConnRow, Head, LogEntry};
use crate::hub::Recipient;
use crate::protocol::{CanvasId, ConnId, UserId};

pub use self::error::{BusError, StoreError, Unavailable};

/// A canvas's epoch as clients see it: the store's epoch (a fresh file, a Redis that lost its data) and the
/// canvas's generation (a reset). The one place it is written.
pub fn epoch(store_epoch: &str, generation: u64) -> String {
    format!("{store_epoch}-{generation}")
}

/// Which objects a reader of a canvas wants: the store reads the snapshot and ops only as it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    /// Not when the head is at this (generation, version): the reader has those objects.
    pub unless: Option<(u64, u64)>,
    /// Not when the state is bigger than this many bytes (the head's `bytes` + 1).
    pub up_to: usize,
}

impl Want {
    /// Every object, whatever the size.
    pub fn all() -> Want {
        Want { unless: None, up_to: usize::MAX }
    }

    /// The head and connections only.
    pub fn head() -> Want {
        Want { unless: None, up_to: 0 }
    }

    /// Whether a store whose head is `head` reads no objects for this.
    pub fn skips(&self, head: &Head) -> bool {
        self.unless == Some((head.generation, head.version)) || head.bytes + 1 > self.up_to as u64
    }
}

/// A canvas read at one point of its log.
#[derive(Debug, Clone, Default)]
pub struct CanvasRead {
    /// `None` for a canvas nothing was ever committed to.
    pub head: Option<Head>,
    pub conns: Vec<ConnRow>,
    /// The newest snapshot at or below the head, unless the reader wants no objects (see [`Want`]).
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
    /// An instance's: what it registers again after a late heartbeat.
    Instance(String),
    /// Those of instances silent since this time (unix ms), or gone: what survivors expire.
    SilentSince(i64),
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
    /// means nothing of the batch was applied, except [`Unavailable::Unresolved`]:
    /// the store could not tell (no reply came); the committer commits the same batch again.
    async fn commit(&mut self, batch: &mut dyn Batch) -> Result<i64, BusError>;

    /// What reads a canvas whole for the committer's fold, off its loop (a canvas it does not hold is
    /// loaded while it goes on committing the others).
    fn reader(&self) -> Arc<dyn CanvasReader>;

    /// Starts the canvas's next generation at seq 0 (its log and snapshots dropped for readers, presence
    /// kept), with its reset marker.
    async fn reset(&mut self, canvas: &CanvasId) -> Result<ResetDone, BusError>;

    /// Runs one of the store's own jobs.
    async fn run(&mut self, job: Self::Job);

    /// After a commit's local delivery (the SQLite watcher skips this process's own rows, and its peers'
    /// doorbells ring).
    fn delivered(&mut self, _delivered: AfterDelivery) {}
}

/// Reads a canvas at its head: what the committer loads a canvas it does not hold with, on a task of its
/// own. The fold's commit is guarded, so a read that another commit overtakes costs a refold, never a
/// wrong state.
#[async_trait]
pub trait CanvasReader: Send + Sync + 'static {
    async fn read_canvas(&self, canvas: &CanvasId, want: Want) -> Result<CanvasRead, BusError>;
}

/// Everything but the committer's writes. Cheap to share as `Arc<dyn Store>`.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// This instance, as the store knows it.
    fn instance_id(&self) -> &str;

    /// The store's epoch (part of every canvas epoch: see [`epoch`]).
    fn store_epoch(&self) -> String;

    /// A canvas at one point of its log, with the objects `want` asks for.
    async fn read_canvas(&self, canvas: &CanvasId, want: Want) -> Result<CanvasRead, BusError>;

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

    /// A canvas at seq `at` of its head's generation (see [`AtRead`]), read at one point of the log.
    async fn read_at(&self, canvas: &CanvasId, at: u64) -> Result<AtRead, BusError>;

    /// The kept snapshots of `generation` with a seq below `before`, newest first, at most `limit`.
    async fn versions(
        &self,
        canvas: &CanvasId,
        generation: u64,
        before: u64,
        limit: usize,
    ) -> Result<Vec<Version>, BusError>;

    /// Names the state at (`generation`, `seq`), whose objects are `json`: keeps it as a snapshot if there
    /// is none at that seq (the canvas's newest if it is newer), and gives it `name` (renaming it).
    async fn name_version(
        &self,
        canvas: &CanvasId,
        generation: u64,
        seq: u64,
        name: &str,
        json: Bytes,
    ) -> Result<Named, BusError>;

    /// Takes the name off the version at (`generation`, `seq`): it is then kept as an automatic snapshot
    /// would be. Returns whether there was a named version there.
    async fn unname_version(&self, canvas: &CanvasId, generation: u64, seq: u64) -> Result<bool, BusError>;

    /// Creates canvas `to` at seq 0 of a new generation with `fork` as its first snapshot, unless it has any
    /// seq, object or connection; returns the new generation's epoch, `None` when it exists.
    async fn fork(&self, to: &CanvasId, fork: Fork) -> Result<Option<String>, BusError>;

    /// Canvases whose history has more than the newest snapshot and was not thinned since `before` (unix
    /// ms), at most `limit`.
    async fn history_due(&self, before: i64, limit: usize) -> Result<Vec<HistoryDue>, BusError>;

    /// Drops the unnamed snapshots `thinning` names (never the newest) and raises the floor (the object
    /// ops below it may then go with the log); records the canvas as thinned now.
    async fn thin(&self, canvas: &CanvasId, generation: u64, thinning: Thinning) -> Result<(), BusError>;

    /// Canvases, at most `limit`, with object ops after their newest snapshot and no commit since `before`.
    async fn stale(&self, before: i64, limit: usize) -> Result<Vec<CanvasId>, BusError>;

    /// Connections across instances, with their canvases.
    async fn connections(&self, whose: Whose) -> Result<Vec<(CanvasId, ConnRow)>, BusError>;

    /// Keeps connections' presence states (JSON text; `None` for a connection that is gone), for joiners.
    async fn save_states(&self, states: Vec<(CanvasId, ConnId, Option<String>)>) -> Result<(), BusError>;

    /// Records this instance alive now; returns every instance with a heartbeat within `--presence-timeout`.
    async fn heartbeat(&self) -> Result<Vec<Instance>, BusError>;

    /// Posts on the ephemeral channel.
    async fn post(&self, post: Post) -> Result<(), BusError>;

    /// A room was just started by a join: a store whose reader follows canvases one by one may need to
    /// include it now.
    async fn room_started(&self, _canvas: &CanvasId) {}

    /// Until when `user` is blocked from `canvas` (unix ms), if it is.
    async fn blocked(&self, canvas: &CanvasId, user: &UserId) -> Result<Option<i64>, BusError>;

    /// Deletes what nobody needs any more (entries past their keep time, except object ops after the
    /// newest snapshot; expired keys and posts; canvases past their forget time); returns how much went.
    async fn clean_up(&self) -> Result<usize, BusError>;

    /// The figures behind `/health`; an error means the storage cannot be reached.
    async fn figures(&self) -> Result<BusFigures, BusError>;

    /// Why this instance cannot go on, if it cannot (a thread or task of the store ended; the SQLite file
    /// was replaced).
    fn fatal(&self) -> Option<String>;

    /// What the store writes before its committer stops (its committer is still there to run it).
    async fn closing(&self) {}

    /// Final stop, after the committer: the store's threads and tasks end.
    async fn close(&self);
}
