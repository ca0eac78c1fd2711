//! What the server-side consumers (`crate::consumers`: the event stream and the webhook deliverer) ask of a
//! store, beside [`Store`](super::Store): the log of every canvas in commit order from an opaque position, a
//! canvas's retained log after a seq, durable delivery positions, and leases that keep one instance per
//! shard of canvases. Each store implements it with its own storage (`sqlite/consumer.rs`,
//! `redis/consumer.rs`); the delivery loops above it are written once.

use async_trait::async_trait;

use super::BusError;
use crate::protocol::CanvasId;

/// One entry of the log as consumers read it: a logged message, or a canvas's reset marker (`kind`
/// `reset`, seq 0, the first entry of a new generation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// Where it is in the log of every canvas (opaque; empty when read through [`ConsumerStore::canvas_tail`]).
    pub position: String,
    pub canvas: String,
    pub generation: u64,
    pub seq: u64,
    pub kind: String,
    pub from: String,
    /// The message's `data` as JSON text.
    pub data: String,
    /// Unix ms when committed.
    pub ts: i64,
}

impl Logged {
    pub fn is_reset(&self) -> bool {
        self.seq == 0 && self.kind == "reset"
    }
}

/// A page of the log of every canvas after a position.
#[derive(Debug, Clone, Default)]
pub struct LogPage {
    pub entries: Vec<Logged>,
    /// Set when entries after the position asked for were dropped (expired): the position the page goes on
    /// from, that of its first entry (or the head, when nothing after it is left).
    pub oldest: Option<String>,
}

/// A canvas's retained log after a seq, with its head read at the same point.
#[derive(Debug, Clone, Default)]
pub struct CanvasTail {
    /// The head: the canvas's current generation and last seq.
    pub generation: u64,
    pub seq: u64,
    /// Retained messages of `generation` after the seq asked for, in seq order (none when the generation
    /// asked for is not the head's). Rows past `--message-ttl` but kept for a consumer are included.
    pub entries: Vec<Logged>,
}

/// How far the webhook has delivered one canvas: every message of `generation` up to `seq` was answered 2xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Delivered {
    pub generation: u64,
    pub seq: u64,
    /// The last seq of a batch being sent, recorded before its first attempt, so that whichever instance
    /// sends it again sends the same range under the same idempotency key.
    pub inflight: Option<u64>,
}

impl Delivered {
    /// Whether this position may be recorded over `stored`: a position never moves backwards (generation,
    /// then seq), and a batch's range fixed at a position stays fixed until that batch is delivered (so every
    /// repeat of it keeps its idempotency key). A holder whose view is stale (its lease lapsed and another
    /// instance delivered meanwhile) is refused both ways. Each store applies this rule in the same atomic
    /// step as its lease check (SQLite: the writer's transaction; Redis: `save_delivered.lua`).
    pub fn may_replace(&self, stored: Option<Delivered>) -> bool {
        let Some(stored) = stored else { return true };
        match (self.generation, self.seq).cmp(&(stored.generation, stored.seq)) {
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Equal => match stored.inflight {
                Some(last) if last > stored.seq => self.inflight == Some(last),
                _ => true,
            },
        }
    }
}

/// What a [`ConsumerStore::save_delivered`] came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    /// The position is recorded.
    Recorded,
    /// The lease is not the holder's (any more): nothing is written, and the holder stops delivering.
    NotHolder,
    /// The store holds a position this one may not replace (see [`Delivered::may_replace`]): another
    /// instance delivered further while this one's view was stale. Nothing is written; read it again.
    Behind,
}

/// A canvas whose head is past its delivered position (or which was never delivered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backlog {
    pub canvas: CanvasId,
    pub generation: u64,
    pub seq: u64,
}

/// What a store does for the consumers. Positions are the store's own (SQLite: a row id; Redis: a stream
/// id), valid on every instance of one store.
#[async_trait]
pub trait ConsumerStore: Send + Sync + 'static {
    /// Whether `position` is one this store hands out (else the stream answers 400).
    fn is_position(&self, position: &str) -> bool;

    /// The epoch clients see for a generation of a canvas.
    fn epoch_of(&self, generation: u64) -> String;

    /// The position of the newest entry of the log (or of an empty log's start).
    async fn log_head(&self) -> Result<String, BusError>;

    /// Up to `limit` entries of every canvas after `after`, in commit order; `oldest` says when some after
    /// it were dropped.
    async fn log_after(&self, after: &str, limit: usize) -> Result<LogPage, BusError>;

    /// A canvas's head and up to `limit` retained messages of `generation` after `after`.
    async fn canvas_tail(
        &self,
        canvas: &CanvasId,
        generation: u64,
        after: u64,
        limit: usize,
    ) -> Result<CanvasTail, BusError>;

    /// Canvases in id order after `after`, at most `limit` of them looked at, whose head is past their
    /// delivered position; the second value is the last canvas looked at (`None`: the end).
    async fn backlog(
        &self,
        after: Option<CanvasId>,
        limit: usize,
    ) -> Result<(Vec<Backlog>, Option<CanvasId>), BusError>;

    /// The webhook's delivered position of a canvas, if it has one.
    async fn delivered(&self, canvas: &CanvasId) -> Result<Option<Delivered>, BusError>;

    /// Records the delivered position, if `holder` still holds `lease` and the position may replace the
    /// stored one ([`Delivered::may_replace`]), both checked in one atomic step with the write. Messages up
    /// to the new position are no longer kept for the webhook (they expire with `--message-ttl`).
    async fn save_delivered(
        &self,
        canvas: &CanvasId,
        lease: &str,
        holder: &str,
        delivered: Delivered,
    ) -> Result<Saved, BusError>;

    /// Takes or renews each lease in `names` for `holder`, for `ttl_ms` from now, where it is free, expired
    /// or already `holder`'s; returns which ones `holder` holds.
    async fn hold_leases(&self, holder: &str, names: &[String], ttl_ms: u64) -> Result<Vec<bool>, BusError>;

    /// Gives up those of `names` that `holder` holds.
    async fn release_leases(&self, holder: &str, names: &[String]) -> Result<(), BusError>;
}
