//! Frames a room sends outside the log's order: ephemeral ones (cursors, and other instances' cursor
//! batches), which go to each receiver's coalescing lane, and user messages; and the room's members as presence would register them.

use std::collections::HashSet;

use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Message;

use super::{Room, RoomState};
use crate::cursors::{parse_batch, ParsedBatch};
use crate::hub::outbox::Ephemeral;
use crate::metrics::Metrics;
use crate::protocol::{ConnId, Cut, UserId};

impl Room {
    /// Delivers a cursor batch another instance wrote (`crate::cursors`) to this room, whichever store
    /// carried it: each sender's cursor goes to every other subscriber's ephemeral lane, where it replaces
    /// any earlier one of that sender still waiting. Lossy by design: the next batch carries a newer cursor.
    pub fn relay_batch(&self, frames: &str, metrics: &Metrics) {
        let ParsedBatch { cursors, events, presence } = parse_batch(frames);
        let state = self.lock();
        let mut missed: u64 = cursors
            .into_iter()
            .map(|(from, frame)| state.broadcast_ephemeral(from, &Message::text(frame.get()), metrics))
            .sum();
        missed += events
            .into_iter()
            .map(|(from, frame)| state.broadcast_event(from, &Message::text(frame.get()), metrics))
            .sum::<u64>();
        missed += presence
            .into_iter()
            .map(|(from, frame)| state.broadcast_presence(from, &Message::text(frame.get()), metrics))
            .sum::<u64>();
        drop(state);
        metrics.ephemeral_missed(&self.canvas, missed);
    }
}

impl RoomState {
    /// Queues `sender`'s ephemeral frame (a cursor) for everyone but the sender, on their ephemeral lane:
    /// never blocks, never cuts. A frame of the same sender still waiting for a slow reader is replaced.
    /// Returns how many receivers had one replaced or dropped (the metric of the caller's canvas).
    pub fn broadcast_ephemeral(&self, sender: ConnId, frame: &Message, metrics: &Metrics) -> u64 {
        let (mut queued, mut missed) = (0, 0);
        for sub in self.subscribers.iter().filter(|s| s.conn != sender) {
            match sub.outbox.push_ephemeral(sender, frame.clone()) {
                Ephemeral::Queued => queued += 1,
                Ephemeral::Coalesced | Ephemeral::Dropped => missed += 1,
            }
        }
        metrics.deliveries.increment(queued);
        missed
    }

    /// Queues an ephemeral event for every subscriber but its sender, behind what waits in their ephemeral
    /// lanes (never replacing anything); returns how many missed it (their lane was full).
    pub fn broadcast_event(&self, sender: ConnId, frame: &Message, metrics: &Metrics) -> u64 {
        let (mut queued, mut missed) = (0, 0);
        for sub in self.subscribers.iter().filter(|s| s.conn != sender) {
            match sub.outbox.push_event(frame.clone()) {
                Ephemeral::Queued => queued += 1,
                Ephemeral::Coalesced | Ephemeral::Dropped => missed += 1,
            }
        }
        metrics.deliveries.increment(queued);
        missed
    }

    /// Queues `sender`'s presence frame (v1.1) for everyone but the sender, on their ephemeral lane, where it
    /// replaces the sender's state still waiting; returns how many receivers had one replaced or dropped.
    pub fn broadcast_presence(&self, sender: ConnId, frame: &Message, metrics: &Metrics) -> u64 {
        let (mut queued, mut missed) = (0, 0);
        for sub in self.subscribers.iter().filter(|s| s.conn != sender) {
            match sub.outbox.push_presence(sender, frame.clone()) {
                Ephemeral::Queued => queued += 1,
                Ephemeral::Coalesced | Ephemeral::Dropped => missed += 1,
            }
        }
        metrics.deliveries.increment(queued);
        missed
    }

    /// Keeps a local subscriber's latest presence state, for the welcome of the next joiner here.
    pub fn set_presence(&mut self, conn: ConnId, data: Box<RawValue>) {
        if self.subscribers.iter().any(|s| s.conn == conn) {
            self.presence.insert(conn, data);
        }
    }

    /// The local subscribers, each with its presence state if it set one: (connection, user, name, state).
    pub fn peers(&self) -> impl Iterator<Item = (ConnId, &UserId, Option<&str>, Option<&RawValue>)> {
        self.subscribers.iter().map(|s| (s.conn, &s.user, s.name.as_deref(), self.presence.get(&s.conn).map(|d| &**d)))
    }

    /// Every subscriber, as presence would register it: (connection, user, name, when it opened).
    pub fn members(&self) -> impl Iterator<Item = (ConnId, &UserId, Option<&str>, u64)> {
        self.subscribers.iter().map(|s| (s.conn, &s.user, s.name.as_deref(), s.opened))
    }

    /// Tells every subscriber of `user` to close, for `reason`; returns how many.
    pub fn kick_user(&self, user: &str, reason: Cut) -> usize {
        let subscribers = self.subscribers.iter().filter(|s| s.user.as_str() == user);
        subscribers.map(|sub| sub.outbox.kick(reason)).count()
    }

    /// Queues a frame for every subscriber who is `user` (every subscriber for `hub::EVERYONE`) whose socket
    /// is not in `reached` yet, and adds their sockets to it; returns how many. An overflowing queue cuts its
    /// client (4009) like any other frame would.
    pub fn send_to_user(&self, user: &str, frame: &Message, reached: &mut HashSet<usize>) -> usize {
        let mut sent = 0;
        let everyone = user == crate::hub::EVERYONE;
        for sub in self.subscribers.iter().filter(|s| everyone || s.user.as_str() == user) {
            if reached.insert(sub.outbox.socket()) {
                sent += usize::from(sub.outbox.push(frame.clone()));
            }
        }
        sent
    }
}
