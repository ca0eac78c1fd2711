//! What the server-side consumers (`crate::consumers`: the event stream and the webhook deliverer) ask of a
//! store, beside [`Store`](super::Store): the log of every canvas in commit order from an opaque position,
//! the webhook's durable delivery positions (a compare-and-set), and leases that keep one instance per shard
//! of canvases. Each store implements it with its own storage (`sqlite/consumer.rs`, `redis/consumer.rs`);
//! the delivery loops and their rules are written once above it.

use async_trait::async_trait;

use super::records::LogEntry;
use crate::protocol::CanvasId;
use crate::store::BusError;

/// A page of the log of every canvas after a position: each entry with its position.
#[derive(Debug, Clone, Default)]
pub struct LogPage {
    pub entries: Vec<(String, LogEntry)>,
    /// Set when entries after the position asked for were dropped (expired): the position the page goes on
    /// from, that of its first entry (or the head, when nothing after it is left).
    pub oldest: Option<String>,
}

/// How far the webhook has delivered one canvas: every message of `generation` up to `seq` was answered 2xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    pub generation: u64,
    pub seq: u64,
    /// The last seq of a batch being sent, recorded before its first attempt, so that whichever instance
    /// sends it again sends the same range under the same idempotency key.
    pub inflight: Option<u64>,
}

impl Position {
    /// Whether this position may be recorded over `stored`: a position never moves backwards (generation,
    /// then seq), and a batch's range fixed at a position stays fixed until that batch is delivered (so every
    /// repeat of it keeps its idempotency key). The webhook checks it against the position it expects the
    /// store to hold, and [`ConsumerStore::save_position`] writes only if the store holds exactly that, in
    /// the same atomic step as its lease check: a holder whose view is stale (its lease lapsed and another
    /// instance delivered meanwhile) is refused.
    pub fn may_replace(&self, stored: Option<Position>) -> bool {
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

/// What a [`ConsumerStore::save_position`] came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    /// The position is recorded.
    Recorded,
    /// The lease is not the holder's (any more): nothing is written, and the holder stops delivering.
    NotHolder,
    /// The store does not hold the position the holder expected: another instance delivered further while
    /// this one's view was stale. Nothing is written; read it again.
    Behind,
}

/// What a store does for the consumers. Positions are the store's own (SQLite: a row id; Redis: a stream
/// id), valid on every instance of one store.
#[async_trait]
pub trait ConsumerStore: Send + Sync + 'static {
    /// Whether `position` is one this store hands out (else the stream answers 400).
    fn is_position(&self, position: &str) -> bool;

    /// The position of the newest entry of the log (or of an empty log's start).
    async fn log_head(&self) -> Result<String, BusError>;

    /// Up to `limit` entries of every canvas after `after`, in commit order; `oldest` says when some after
    /// it were dropped.
    async fn log_after(&self, after: &str, limit: usize) -> Result<LogPage, BusError>;

    /// The webhook's delivered positions of these canvases, where they have one.
    async fn positions(&self, canvases: &[CanvasId]) -> Result<Vec<Option<Position>>, BusError>;

    /// Records `position` over `expected` (what the holder last read or recorded; `None`: nothing), if
    /// `holder` still holds `lease` and the store holds exactly `expected`, in one atomic step. Messages up
    /// to the new position are no longer kept for the webhook (they expire with `--message-ttl`).
    async fn save_position(
        &self,
        canvas: &CanvasId,
        lease: &str,
        holder: &str,
        expected: Option<Position>,
        position: Position,
    ) -> Result<Saved, BusError>;

    /// Takes or renews each lease in `names` for `holder`, for `ttl_ms` from now, where it is free, expired
    /// or already `holder`'s; returns which ones `holder` holds.
    async fn hold_leases(&self, holder: &str, names: &[String], ttl_ms: u64) -> Result<Vec<bool>, BusError>;

    /// Gives up those of `names` that `holder` holds.
    async fn release_leases(&self, holder: &str, names: &[String]) -> Result<(), BusError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(generation: u64, seq: u64, inflight: Option<u64>) -> Position {
        Position { generation, seq, inflight }
    }

    #[test]
    fn a_position_never_moves_backwards_and_a_fixed_batch_keeps_its_range() {
        let stored = Some(at(1, 3, Some(6)));
        for (position, may) in [
            (at(1, 3, Some(6)), true),
            (at(1, 3, Some(7)), false),
            (at(1, 3, None), false),
            (at(1, 6, None), true),
            (at(1, 2, None), false),
            (at(0, 9, None), false),
            (at(2, 0, None), true),
        ] {
            assert_eq!(position.may_replace(stored), may, "{position:?} over {stored:?}");
        }
        assert!(at(1, 3, None).may_replace(Some(at(1, 3, None))), "the same position again (a retried save)");
        assert!(at(1, 3, None).may_replace(None), "the first position");
    }
}
