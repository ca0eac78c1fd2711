//! The event stream's reader loop: the log of every canvas from a position, into a bounded buffer that the
//! HTTP body drains (`http/stream.rs` encodes it as Server-Sent Events). One loop per reader, reading the
//! store a page at a time: a reader far behind catches up at the store's read speed, one at the head waits
//! `POLL` between empty reads. A reader that lets its buffer stay full for `GRACE` is cut off (the buffer
//! drains, then the body ends): it reconnects with its last id and goes on from there, and no reader can make the relay hold
//! an unbounded backlog for it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::core::Bus;
use crate::metrics::Metrics;
use crate::store::consumer::ConsumerStore;
use crate::store::records::LogEntry;

/// How long a reader at the head waits before reading again.
const POLL: Duration = Duration::from_millis(5);
/// Entries read per page.
const PAGE: usize = 512;
/// How long a reader waits after a failed read before trying again.
const RETRY: Duration = Duration::from_millis(500);
/// How long a full buffer may stay full before its reader counts as too slow: a reader catching up drains
/// more slowly than the store is read and fills its buffer at every page, but makes room within this.
const GRACE: Duration = Duration::from_secs(1);

/// What a reader is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// A logged message, or a reset marker (`entry.is_reset()`), with the epoch of its generation.
    Entry { position: String, entry: LogEntry, epoch: String },
    /// Entries after `since` were dropped before this reader got them; it goes on from `oldest`.
    Gap { since: String, oldest: String },
}

/// Why a reader's loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The reader went away (its body was dropped).
    Gone,
    /// The buffer was full: the reader is too slow and resumes with its last id.
    TooSlow,
}

/// Feeds `events` with every entry after `since` until the reader goes away (its body ends, also when the
/// server stops: `http/stream.rs`) or falls a buffer behind.
pub async fn feed(bus: Bus, since: String, events: mpsc::Sender<StreamEvent>, metrics: Metrics) -> Ended {
    let store: Arc<dyn ConsumerStore> = bus.consumers();
    let mut position = since;
    loop {
        let wait = match store.log_after(&position, PAGE).await {
            Ok(page) => {
                // A position older than the retained log: at the start (an old `since`), or later for a
                // reader that fell a TTL behind while draining its buffer just fast enough not to be cut.
                if let Some(oldest) = page.oldest {
                    let gap = StreamEvent::Gap { since: position.clone(), oldest: oldest.clone() };
                    if let Err(ended) = offer(&events, gap).await {
                        return ended;
                    }
                    if page.entries.is_empty() {
                        position = oldest;
                    }
                }
                let full = page.entries.len() == PAGE;
                for (at, entry) in page.entries {
                    let epoch = bus.epoch_of(entry.generation);
                    let event = StreamEvent::Entry { position: at.clone(), entry, epoch };
                    if let Err(ended) = offer(&events, event).await {
                        return ended;
                    }
                    metrics.stream_events.increment(1);
                    position = at;
                }
                if full {
                    continue; // catching up: the next offer finds a reader that went away
                }
                POLL
            }
            Err(error) => {
                tracing::warn!(%error, "event stream: a read of the log failed; retrying");
                RETRY
            }
        };
        if events.is_closed() {
            return Ended::Gone;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = events.closed() => return Ended::Gone,
        }
    }
}

/// Buffers `event`; waits up to `GRACE` for room in a full buffer.
async fn offer(events: &mpsc::Sender<StreamEvent>, event: StreamEvent) -> Result<(), Ended> {
    match events.try_send(event) {
        Ok(()) => Ok(()),
        Err(TrySendError::Closed(_)) => Err(Ended::Gone),
        Err(TrySendError::Full(event)) => match tokio::time::timeout(GRACE, events.send(event)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Ended::Gone),
            Err(_) => Err(Ended::TooSlow),
        },
    }
}
