//! Who is in a room and who is owed an ack: a subscriber joins after its welcome and leaves (the room closes
//! when the last one does), a local sender's seq waits for its ack, and a room that ends cuts everyone. The
//! order of delivery is `mod.rs`'s; what breaks it (resets, holes) `breaks.rs`'s.

use std::collections::BTreeMap;

use super::{AckTo, RoomState, Subscriber};
use crate::protocol::{ConnId, Cut};

impl RoomState {
    /// Adds a subscriber that has already been sent everything up to its `start_after`.
    pub fn subscribe(&mut self, subscriber: Subscriber) {
        self.subscribers.push(subscriber);
    }

    /// Records that `seq` of `generation` (not yet committed) was sent by a local connection: it gets the ack
    /// when the seq is delivered, whichever path delivers it.
    pub fn expect_ack(&mut self, generation: u64, seq: u64, ack: AckTo) {
        self.acks.insert((generation, seq), ack);
    }

    /// [`expect_ack`](Self::expect_ack) for a seq that may reach the room by two paths (the Redis bus's
    /// publish reply and its stream reader): registered only while the seq is still to be delivered, so the
    /// later of the two leaves nothing behind.
    pub fn expect_ack_unless_delivered(&mut self, generation: u64, seq: u64, ack: AckTo) {
        let delivered = generation < self.generation || (generation == self.generation && seq <= self.delivered);
        if !delivered {
            self.expect_ack(generation, seq, ack);
        }
    }

    /// Forgets an expected ack whose commit failed.
    pub fn forget_ack(&mut self, generation: u64, seq: u64) {
        self.acks.remove(&(generation, seq));
    }

    /// Ends the room: every subscriber is cut with 4009 (it resumes, and reloads if its epoch is gone).
    pub(in crate::hub) fn close_and_cut_all(&mut self) -> usize {
        let cut = self.subscribers.len();
        for sub in self.subscribers.drain(..) {
            sub.outbox.kick(Cut::Epoch);
        }
        self.closed = true;
        cut
    }

    /// Closes a room nobody started (its first join failed); returns whether it did.
    pub(in crate::hub) fn close_if_unstarted(&mut self) -> bool {
        if self.started || !self.subscribers.is_empty() {
            return false;
        }
        self.early = BTreeMap::new();
        self.early_bytes = 0;
        self.closed = true;
        true
    }

    /// Removes a connection; returns whether the room is now empty, in which case it is closed.
    pub(in crate::hub) fn unsubscribe(&mut self, conn: ConnId) -> bool {
        let before = self.subscribers.len();
        self.subscribers.retain(|s| s.conn != conn);
        self.presence.remove(&conn);
        // Only a leave that emptied the room closes it: an empty room may be one a join is about to start.
        if self.subscribers.len() < before && self.subscribers.is_empty() {
            self.closed = true;
        }
        self.closed
    }

    pub(in crate::hub) fn subscriber_count(&self) -> usize {
        self.subscribers.len()
    }
}
