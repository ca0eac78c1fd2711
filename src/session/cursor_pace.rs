//! One connection's cursors, paced to `--max-cursor-rate`: a cursor that comes sooner than the rate allows
//! is held (a newer one replaces it) and relayed when its slot comes, so the excess is coalesced, never
//! refused, and the latest cursor is always relayed. Relayed means: to this instance's other connections of
//! the canvas at once (their ephemeral lane), and into the next batch for the other instances. The same
//! pacing holds a connection's presence states (v1.1); on a multiplexed socket each canvas is paced on its own.

use std::time::Duration;

use futures_util::{Sink, Stream};
use serde_json::value::RawValue;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::Session;

use crate::clock::now_ms;
use crate::protocol::{cursor_frame, event_frame, presence_frame, CanvasId, ConnId, MsgType, UserId};
use crate::App;

/// The pacing state of one connection's cursors.
pub struct CursorPace {
    /// The least time between two relayed cursors; `None` without a limit.
    every: Option<Duration>,
    /// When the next cursor may go.
    next_at: Instant,
    /// The latest cursor that came too soon, waiting for `next_at`.
    held: Option<Box<RawValue>>,
}

impl CursorPace {
    pub fn new(per_second: u32) -> Self {
        let every = (per_second > 0).then(|| Duration::from_secs(1) / per_second);
        CursorPace { every, next_at: Instant::now(), held: None }
    }

    /// Whether a cursor is held for its slot.
    pub fn holding(&self) -> bool {
        self.held.is_some()
    }

    /// When the held cursor may go.
    pub fn release_at(&self) -> Instant {
        self.next_at
    }

    /// A cursor from the client at `now`: returned to relay now if its slot has come, else held in place of
    /// any held one. Either way it supersedes a held one: the session's loop may read this cursor before it
    /// gets to release the held one whose slot came, and that older cursor must then never go (after this
    /// one, it would be the last a reader sees, and replace this one in the batch for other instances).
    pub fn offer(&mut self, data: Box<RawValue>, now: Instant) -> Option<Box<RawValue>> {
        if self.every.is_some() && now < self.next_at {
            self.held = Some(data);
            return None;
        }
        self.held = None;
        self.take_slot(now);
        Some(data)
    }

    /// The held cursor, now that its slot has come.
    pub fn release(&mut self, now: Instant) -> Option<Box<RawValue>> {
        let data = self.held.take()?;
        self.take_slot(now);
        Some(data)
    }

    fn take_slot(&mut self, now: Instant) {
        if let Some(every) = self.every {
            self.next_at = now.max(self.next_at) + every;
        }
    }
}

/// Relays an ephemeral event of connection `conn` (v1.1): at once to the other local clients of the canvas,
/// behind what waits in their ephemeral lanes, and to other instances in the next cursor batch, in send
/// order. Never logged; dropped, not queued, where a lane or a batch is full.
pub fn relay_event(kind: &MsgType, data: &RawValue, app: &App, canvas: &CanvasId, user: &UserId, conn: ConnId) {
    let frame = event_frame(kind.as_str(), canvas.as_str(), user.as_str(), &conn.to_string(), data, now_ms());
    let mut missed = 0;
    if let Some(room) = app.hub.room(canvas) {
        missed += room.lock().broadcast_event(conn, &Message::text(frame.clone()), &app.metrics);
    }
    if !app.cursors.record_event(canvas, conn, frame) {
        missed += 1;
    }
    app.metrics.ephemeral_missed(canvas, missed);
}

/// Relays connection `conn`'s new presence state (v1.1): kept by its room for the welcomes of joiners here,
/// at once to the canvas's other local connections (replacing its state still waiting for a slow reader),
/// and to other instances in the next batch, which the store also keeps for joiners there.
pub fn relay_presence(data: &RawValue, app: &App, canvas: &CanvasId, user: &UserId, conn: ConnId) {
    let frame = presence_frame(canvas.as_str(), user.as_str(), &conn.to_string(), data, now_ms());
    if let Some(room) = app.hub.room(canvas) {
        let mut state = room.lock();
        state.set_presence(conn, data.to_owned());
        let missed = state.broadcast_presence(conn, &Message::text(frame.clone()), &app.metrics);
        drop(state);
        app.metrics.ephemeral_missed(canvas, missed);
    }
    app.cursors.record_presence(canvas, conn, frame, data.get().to_owned());
}

/// Relays one cursor: to the canvas's other local connections at once, to other instances in the next batch.
pub fn relay(data: &RawValue, app: &App, canvas: &CanvasId, user: &UserId, conn: ConnId) {
    let frame = cursor_frame(canvas.as_str(), user.as_str(), &conn.to_string(), data, now_ms());
    if let Some(room) = app.hub.room(canvas) {
        let missed = room.lock().broadcast_ephemeral(conn, &Message::text(frame.clone()), &app.metrics);
        app.metrics.ephemeral_missed(canvas, missed);
    }
    app.cursors.record(canvas, conn, frame);
}

impl<S> Session<S>
where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin + Send,
{
    /// When the first held cursor or presence state of any canvas may go.
    pub(super) fn cursor_release(&self) -> Option<tokio::time::Instant> {
        let paces = self.members.iter().flat_map(|member| [&member.cursors, &member.presence]);
        paces.filter(|pace| pace.holding()).map(|pace| pace.release_at()).min()
    }

    /// Relays every held cursor and presence state whose slot has come.
    pub(super) fn release_cursors(&mut self) {
        let now = tokio::time::Instant::now();
        for member in &mut self.members {
            if member.cursors.release_at() <= now {
                if let Some(data) = member.cursors.release(now) {
                    relay(&data, &self.app, member.canvas(), &self.user, member.conn());
                }
            }
            if member.presence.release_at() <= now {
                if let Some(data) = member.presence.release(now) {
                    relay_presence(&data, &self.app, member.canvas(), &self.user, member.conn());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(x: u32) -> Box<RawValue> {
        RawValue::from_string(format!(r#"{{"x":{x}}}"#)).unwrap()
    }

    /// The `x` of each cursor relayed, in relay order.
    fn xs(relayed: &[Box<RawValue>]) -> Vec<u64> {
        relayed
            .iter()
            .map(|data| serde_json::from_str::<serde_json::Value>(data.get()).unwrap()["x"].as_u64().unwrap())
            .collect()
    }

    #[test]
    fn a_flood_is_relayed_at_the_rate_in_order_and_its_latest_cursor_always_goes_last() {
        let mut pace = CursorPace::new(10);
        let start = Instant::now();
        let (mut now, mut relayed) = (start, Vec::new());
        // 400 cursors 1 to 37 ms apart, with a pause longer than a slot now and then. The session's loop takes
        // its ready branches in any order: where a held cursor's slot has come, the next cursor is read before
        // the release about every other time.
        for n in 0..400u32 {
            now += Duration::from_millis(if n % 11 == 10 { 130 } else { 1 + u64::from(n * 7919 % 37) });
            let release_first = n * 104_729 % 13 < 6;
            if release_first && pace.holding() && now >= pace.release_at() {
                relayed.extend(pace.release(now));
            }
            relayed.extend(pace.offer(cursor(n), now));
            if !release_first && pace.holding() && now >= pace.release_at() {
                relayed.extend(pace.release(now));
            }
        }
        relayed.extend(pace.release(now + Duration::from_secs(1)));
        let (xs, slots) = (xs(&relayed), (now - start).as_millis() / 100);
        assert!(xs.len() as u128 <= slots + 2, "{} relayed in {slots} slots: the rate, not the flood", xs.len());
        assert!(xs.windows(2).all(|w| w[0] < w[1]), "never an older cursor after a newer one: {xs:?}");
        assert_eq!(xs.last(), Some(&399), "the latest is never lost, and goes last");
        assert!(!pace.holding());
    }

    #[test]
    fn a_cursor_whose_slot_has_come_supersedes_the_held_one() {
        let mut pace = CursorPace::new(10);
        let start = Instant::now();
        assert!(pace.offer(cursor(1), start).is_some(), "the first goes at once");
        assert!(pace.offer(cursor(2), start + Duration::from_millis(10)).is_none(), "too soon: held");
        // Read before the loop released 2, whose slot has come: 3 goes, and 2 never does.
        let late = start + Duration::from_millis(150);
        assert_eq!(pace.offer(cursor(3), late).map(|data| data.get().to_owned()), Some(r#"{"x":3}"#.to_owned()));
        assert!(!pace.holding(), "nothing older is left to follow it");
        assert!(pace.release(start + Duration::from_secs(1)).is_none());
    }

    #[test]
    fn without_a_limit_every_cursor_goes_at_once() {
        let start = Instant::now();
        let mut pace = CursorPace::new(0);
        assert!((0..100).all(|x| pace.offer(cursor(x), start).is_some()));
        assert!(!pace.holding());
    }
}
