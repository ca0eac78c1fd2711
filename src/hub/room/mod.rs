//! One canvas served by this process: its subscribers and the delivery cursor that decides what each receives
//! and in which order.
//!
//! Both paths into a room go through [`RoomState::offer`]: the writer after its own commit (local short-circuit)
//! and the watcher with rows other processes committed. The room fans out only the next seq; a seq that
//! arrives early waits in `pending` until the ones before it are read. Order therefore holds by construction,
//! whoever delivers first, and nothing is delivered twice.
//!
//! A canvas reset (DELETE through the API) starts a new generation: its `reset` marker (seq 0) is the first
//! row of the new generation, and the room, its subscribers and expected acks all carry the generation they
//! are in, so a new generation's seq 1 is never mistaken for the old one's.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use tokio_tungstenite::tungstenite::Message;

use super::Outbox;
use crate::metrics::Metrics;
use crate::protocol::{ack_frame, CanvasId, ConnId, UserId};

/// Most offers, and bytes of them, an unstarted room keeps while its first join reads the snapshot.
const MAX_EARLY: usize = 100_000;
const MAX_EARLY_BYTES: usize = 64 << 20;

/// Where the ack of a seq goes: the connection on this process that sent it.
#[derive(Debug, Clone)]
pub struct AckTo {
    pub conn: ConnId,
    pub reference: Option<String>,
}

/// One committed logged message, ready to fan out; seq 0 is a generation's `reset` marker.
#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: u64,
    /// The canvas generation it was logged in (bumped by each reset).
    pub generation: u64,
    /// The row's `message_queue.id`, which orders all commits of the file.
    pub id: i64,
    /// The frame every other connection receives, serialized once.
    pub frame: Message,
    /// An object op of a restore: a run of them counts as one entry of a client's queue.
    pub restore: bool,
}

/// A subscriber of one room.
#[derive(Debug)]
pub struct Subscriber {
    pub conn: ConnId,
    pub user: UserId,
    /// The display name it connected with: what presence shows, should it have to be registered again.
    pub name: Option<String>,
    /// When it opened: its place in presence, kept should it have to be registered again.
    pub opened: u64,
    /// The generation its welcome was in.
    pub generation: u64,
    /// The seq its welcome (and replay) ended at: it receives only seqs after this.
    pub start_after: u64,
    pub outbox: Outbox,
}

/// One canvas served by this process.
pub struct Room {
    /// Which canvas, for logs and watermarks.
    pub canvas: CanvasId,
    state: Mutex<RoomState>,
}

/// What a room knows; reached only through [`Room::lock`].
pub struct RoomState {
    /// Set when the last subscriber left and the room was removed from the hub; a join that finds a closed
    /// room retries with a fresh one.
    closed: bool,
    /// Set once the first joiner's snapshot fixed `delivered`. Until then offers are kept in `early`, in
    /// arrival order, and judged once the start is known: the join reads its snapshot without this room's
    /// lock, so whatever is committed meanwhile must not be lost.
    started: bool,
    /// Offers that arrived before the start, by (generation, seq) (the writer and the watcher may both
    /// offer one), with whether one was read back from storage.
    early: BTreeMap<(u64, u64), (Entry, bool)>,
    /// Bytes of the frames in `early`.
    early_bytes: usize,
    /// The canvas generation being delivered.
    generation: u64,
    /// The last seq fanned out to subscribers.
    delivered: u64,
    /// The `message_queue.id` of that seq: what this instance has processed for the canvas.
    delivered_id: i64,
    /// Whether `delivered_id` moved since the watermark was last saved.
    watermark_dirty: bool,
    /// Committed seqs that arrived before a lower seq was read (a local commit ahead of other processes' rows).
    pending: BTreeMap<u64, Entry>,
    /// (generation, seq) committed by this process whose sender gets an ack instead of the message.
    acks: HashMap<(u64, u64), AckTo>,
    subscribers: Vec<Subscriber>,
    /// The latest presence state (v1.1) of each local subscriber that set one: what a joiner here is told
    /// at once, without waiting for the batch to reach the store.
    presence: HashMap<ConnId, Box<serde_json::value::RawValue>>,
}

/// Result of checking a room for a hole that can no longer be filled.
#[derive(Debug, PartialEq, Eq)]
pub enum Settled {
    Ok,
    /// Rows between `delivered` and the first pending seq are gone (expired before this process read them):
    /// subscribers were cut with 4009 so they resume and reload.
    GapSkipped {
        from: u64,
        to: u64,
    },
}

impl Room {
    pub(super) fn new(canvas: CanvasId) -> Self {
        Room { canvas, state: Mutex::new(RoomState::new()) }
    }

    pub fn lock(&self) -> MutexGuard<'_, RoomState> {
        // A panic while holding the lock would be a bug in this module; the state stays consistent between
        // statements, so carrying on is safer than poisoning every later delivery.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl RoomState {
    pub(super) fn new() -> Self {
        RoomState {
            closed: false,
            started: false,
            early: BTreeMap::new(),
            early_bytes: 0,
            generation: 0,
            delivered: 0,
            delivered_id: 0,
            watermark_dirty: false,
            pending: BTreeMap::new(),
            acks: HashMap::new(),
            subscribers: Vec::new(),
            presence: HashMap::new(),
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    pub fn is_started(&self) -> bool {
        self.started
    }

    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Fixes the cursor of a room that has just been created, from the joining snapshot's head, then takes
    /// in what was offered meanwhile (what the snapshot already covered is dropped as delivered). Returns
    /// whether it did (false: the room was already delivering).
    pub fn start_at(&mut self, last_seq: u64, generation: u64, metrics: &Metrics) -> bool {
        if self.started {
            return false;
        }
        self.started = true;
        self.delivered = last_seq;
        self.generation = generation;
        self.early_bytes = 0;
        for (entry, stored) in std::mem::take(&mut self.early).into_values() {
            match stored {
                true => drop(self.offer_stored(entry, metrics)),
                false => drop(self.offer(entry, metrics)),
            }
        }
        true
    }

    /// Keeps an offer made before the start. Past `MAX_EARLY` offers or `MAX_EARLY_BYTES` something is badly
    /// stuck: the room closes (no subscriber has it yet) and the join in progress retries with a fresh one.
    fn keep_early(&mut self, entry: Entry, stored: bool) {
        if self.closed {
            return;
        }
        if let Some((_, was_stored)) = self.early.get_mut(&(entry.generation, entry.seq)) {
            *was_stored |= stored;
            return;
        }
        if self.early.len() >= MAX_EARLY || self.early_bytes + entry.frame.len() > MAX_EARLY_BYTES {
            self.early = BTreeMap::new();
            self.early_bytes = 0;
            self.closed = true;
            return;
        }
        self.early_bytes += entry.frame.len();
        self.early.insert((entry.generation, entry.seq), (entry, stored));
    }

    /// Offers a committed message. Delivers it (and any pending successors) if it is the next seq, keeps it if
    /// it is early, drops it if it was already delivered. A newer generation starts with its reset marker;
    /// its other rows are dropped until the marker arrives (the watcher reads rows in commit order, so it
    /// always offers the marker first and then offers them again). Returns how many frames were queued.
    pub fn offer(&mut self, entry: Entry, metrics: &Metrics) -> usize {
        self.offer_all(std::iter::once(entry), metrics).sent
    }

    /// Offers committed messages of this canvas in commit order, each as [`offer`](Self::offer) would, but
    /// fans out what they deliver together: each subscriber's queue takes the whole run under one lock and
    /// its session is woken once for it (see `Outbox::push_all`), so a batch of commits leaves a socket in
    /// one flush. Says whether an entry belonged to a generation whose reset marker this room had not seen.
    pub fn offer_all(&mut self, entries: impl IntoIterator<Item = Entry>, metrics: &Metrics) -> Offered {
        let mut offered = Offered::default();
        if !self.started {
            entries.into_iter().for_each(|entry| self.keep_early(entry, false));
            return offered;
        }
        let mut ready = Vec::new();
        for entry in entries {
            offered.unseen_generation |= self.awaits_reset(&entry);
            if entry.generation < self.generation || (entry.generation > self.generation && entry.seq != 0) {
                continue;
            }
            if entry.generation > self.generation {
                // Everything of the old generation goes out before its subscribers' reset frame.
                offered.sent += self.fan_out(std::mem::take(&mut ready), metrics);
                offered.sent += self.reset(entry);
                continue;
            }
            self.accept(entry, &mut ready);
        }
        offered.sent += self.fan_out(ready, metrics);
        offered
    }

    /// Takes an entry of the current generation into `ready` if it is the next seq, with every pending seq
    /// that follows it; keeps it pending if it is early; drops it if it was delivered. `ready` is then
    /// delivered as far as the room's cursor goes: only [`fan_out`](Self::fan_out) is left to do.
    fn accept(&mut self, entry: Entry, ready: &mut Vec<(Entry, Option<AckTo>)>) {
        if entry.seq <= self.delivered {
            return;
        }
        if entry.seq > self.delivered + 1 {
            self.pending.insert(entry.seq, entry);
            return;
        }
        let mut next = Some(entry);
        while let Some(entry) = next {
            let ack = self.acks.remove(&(entry.generation, entry.seq));
            self.delivered = entry.seq;
            self.delivered_id = entry.id;
            self.watermark_dirty = true;
            ready.push((entry, ack));
            next = self.pending.first_key_value().is_some_and(|(seq, _)| *seq == self.delivered + 1).then(|| {
                let (_, entry) = self.pending.pop_first().expect("the first key exists");
                entry
            });
        }
    }

    /// Offers a message read back from storage, in the canvas's log order. Like [`offer`](Self::offer), except
    /// that a message of a newer generation that is not its reset marker means the marker was lost (it
    /// expired before this process read it): see [`skip_lost_reset`](Self::skip_lost_reset). Returns whether
    /// that happened.
    pub fn offer_stored(&mut self, entry: Entry, metrics: &Metrics) -> bool {
        if !self.started {
            self.keep_early(entry, true);
            return false;
        }
        if self.awaits_reset(&entry) {
            self.skip_lost_reset(entry, metrics);
            return true;
        }
        self.offer(entry, metrics);
        false
    }

    /// Whether `entry` belongs to a newer generation whose reset marker this started room has not had: offered
    /// live, it is dropped until the marker arrives; read back from storage, the marker was lost.
    pub fn awaits_reset(&self, entry: &Entry) -> bool {
        self.started && entry.generation > self.generation && entry.seq != 0
    }

    /// The watermark (row id, seq) if it moved since the last call.
    pub(super) fn take_watermark(&mut self) -> Option<(i64, u64)> {
        std::mem::take(&mut self.watermark_dirty).then_some((self.delivered_id, self.delivered))
    }

    /// Whether a seq is waiting for lower seqs to be read: the watcher should read now.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Queues delivered entries, in order, for every subscriber that has not seen them yet: a sender gets the
    /// ack of its own, the others the shared frame; each subscriber's queue takes them all at once.
    /// Subscribers whose queue overflowed are dropped from the room (their session closes 4009).
    fn fan_out(&mut self, ready: Vec<(Entry, Option<AckTo>)>, metrics: &Metrics) -> usize {
        if ready.is_empty() {
            return 0;
        }
        let mut sent = 0;
        self.subscribers.retain(|sub| {
            let frames =
                ready.iter().filter(|(entry, _)| entry.seq > sub.start_after && entry.generation == sub.generation);
            let frames = frames.map(|(entry, ack)| match ack {
                Some(ack) if ack.conn == sub.conn => {
                    (Message::text(ack_frame(entry.seq, ack.reference.as_deref(), sub.outbox.canvas())), false)
                }
                _ => (entry.frame.clone(), entry.restore),
            });
            // A full queue cuts the client (its session counts it); it leaves the room here.
            match sub.outbox.push_run(frames) {
                Some(queued) => {
                    sent += queued;
                    true
                }
                None => false,
            }
        });
        metrics.deliveries.increment(sent as u64);
        sent
    }
}

/// What [`RoomState::offer_all`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Offered {
    /// Frames queued.
    pub sent: usize,
    /// An entry belonged to a newer generation whose reset marker the room had not seen: it was dropped,
    /// and only reading the log back in commit order can deliver it (`offer_stored`).
    pub unseen_generation: bool,
}

mod breaks;
mod direct;
mod members;

#[cfg(test)]
mod tests;
