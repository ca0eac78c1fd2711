//! The ephemeral lane of a client's queue: each sender's latest cursor and presence state (a newer one
//! replaces the one still waiting) and events in the order they came, bounded on their own; never a cut.

use tokio_tungstenite::tungstenite::Message;

use super::{Ephemeral, Outbox, Slot, FRAME_OVERHEAD, MAX_EPHEMERAL_BYTES, MAX_EPHEMERAL_SENDERS};
use crate::protocol::ConnId;

impl Outbox {
    /// Queues `sender`'s latest cursor, replacing the one of that sender still waiting. Never cuts.
    pub fn push_ephemeral(&self, sender: ConnId, frame: Message) -> Ephemeral {
        self.push_latest(Slot::Cursor(sender), frame)
    }

    /// Queues `sender`'s latest presence state (v1.1), replacing the one of that sender still waiting (but
    /// not its cursor). Never cuts.
    pub fn push_presence(&self, sender: ConnId, frame: Message) -> Ephemeral {
        self.push_latest(Slot::Presence(sender), frame)
    }

    fn push_latest(&self, slot: Slot, frame: Message) -> Ephemeral {
        let mut queue = self.channel.queue();
        if queue.closed || queue.cut.is_some() {
            return Ephemeral::Dropped;
        }
        if let Some(at) = self.joining_at(&queue) {
            return self.hold_ephemeral(&mut queue, at, frame);
        }
        let cost = frame.len() + FRAME_OVERHEAD;
        if let Some(at) = queue.ephemeral.iter().position(|(waiting, _)| *waiting == slot) {
            let old = queue.ephemeral[at].1.len() + FRAME_OVERHEAD;
            if queue.ephemeral_bytes - old + cost > MAX_EPHEMERAL_BYTES {
                return Ephemeral::Dropped;
            }
            queue.ephemeral_bytes = queue.ephemeral_bytes - old + cost;
            queue.ephemeral[at].1 = frame;
            return Ephemeral::Coalesced;
        }
        if queue.ephemeral.len() >= MAX_EPHEMERAL_SENDERS || queue.ephemeral_bytes + cost > MAX_EPHEMERAL_BYTES {
            return Ephemeral::Dropped;
        }
        let was_empty = queue.is_empty();
        queue.ephemeral_bytes += cost;
        queue.ephemeral.push_back((slot, frame));
        drop(queue);
        if was_empty {
            self.channel.ready.notify_one();
        }
        Ephemeral::Queued
    }

    /// Queues an ephemeral event behind those waiting (none is replaced); dropped past the lane's bounds.
    /// Never cuts.
    pub fn push_event(&self, frame: Message) -> Ephemeral {
        let mut queue = self.channel.queue();
        let cost = frame.len() + FRAME_OVERHEAD;
        let full = queue.ephemeral.len() >= MAX_EPHEMERAL_SENDERS || queue.ephemeral_bytes + cost > MAX_EPHEMERAL_BYTES;
        if queue.closed || queue.cut.is_some() || full {
            return Ephemeral::Dropped;
        }
        if let Some(at) = self.joining_at(&queue) {
            return self.hold_ephemeral(&mut queue, at, frame);
        }
        let was_empty = queue.is_empty();
        queue.ephemeral_bytes += cost;
        queue.ephemeral.push_back((Slot::Event, frame));
        drop(queue);
        if was_empty {
            self.channel.ready.notify_one();
        }
        Ephemeral::Queued
    }
}
