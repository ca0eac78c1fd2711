//! What a room does where the log does not simply go on in order: a reset marker starts a new generation, a
//! generation whose marker expired unread, and a hole that can no longer fill (rows that expired before this
//! process read them). Each either moves the room on or cuts the subscribers who would otherwise see a gap.

use super::{Entry, RoomState, Settled};
use crate::metrics::Metrics;
use crate::protocol::Cut;

impl RoomState {
    /// Called by the watcher after it has read every row up to `read_up_to_id`. A pending seq whose row id is
    /// at or below that can only be waiting for rows that no longer exist, so the hole is skipped and the
    /// subscribers (who would otherwise see a gap) are cut with 4009 to resume.
    pub fn settle(&mut self, read_up_to_id: i64, metrics: &Metrics) -> Settled {
        let Some((&first, entry)) = self.pending.first_key_value() else { return Settled::Ok };
        if !self.started {
            return Settled::Ok;
        }
        if entry.id > read_up_to_id {
            return Settled::Ok;
        }
        let from = self.delivered + 1;
        for sub in self.subscribers.drain(..) {
            sub.outbox.kick(Cut::Gap);
        }
        metrics.gaps_skipped.increment(1);
        self.delivered = first - 1;
        self.acks.retain(|(_, seq), _| *seq >= first);
        let to = first - 1;
        let entry = self.pending.remove(&first).expect("first key exists");
        self.offer(entry, metrics);
        Settled::GapSkipped { from, to }
    }

    /// A new generation begins (the canvas was reset): subscribers still in an older one get the marker's
    /// `reset` frame and start over at seq 0; subscribers who joined in the new generation already started
    /// from its state. Acks of older generations are dropped: their messages were deleted by the reset.
    pub(super) fn reset(&mut self, marker: Entry) -> usize {
        self.generation = marker.generation;
        self.delivered = 0;
        self.delivered_id = marker.id;
        self.watermark_dirty = true;
        self.pending.clear();
        let generation = self.generation;
        self.acks.retain(|(g, _), _| *g >= generation);
        let mut sent = 0;
        self.subscribers.retain_mut(|sub| {
            if sub.generation >= generation {
                return true;
            }
            sub.generation = generation;
            sub.start_after = 0;
            sent += 1;
            sub.outbox.push(marker.frame.clone())
        });
        sent
    }

    /// Called by the watcher with a row of a newer generation whose reset marker it never saw (the marker
    /// expired before this process read it): subscribers of older generations are cut with 4009 (their resume
    /// fails on the epoch, so they reload) and the room continues in the new generation.
    pub fn skip_lost_reset(&mut self, entry: Entry, metrics: &Metrics) {
        let generation = entry.generation;
        self.subscribers.retain(|sub| {
            if sub.generation < generation {
                sub.outbox.kick(Cut::Epoch);
            }
            sub.generation >= generation
        });
        self.generation = generation;
        self.delivered = entry.seq - 1;
        self.pending.clear();
        self.acks.retain(|(g, _), _| *g >= generation);
        metrics.gaps_skipped.increment(1);
        self.offer(entry, metrics);
    }
}
