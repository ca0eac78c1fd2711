//! The local side of delivery: which canvases this process serves (`Hub`), who is subscribed to each and in
//! which order they receive (`room`), and the bounded queue of each client (`outbox`), where the slow-client
//! policy lives. The hub owns no I/O: it never touches the database or a socket, only bounded queues.
//!
//! Locks: `Hub::rooms` then a room's state, never the other way round; the joins in flight (`joins`) with
//! no other held. All are `std::sync::Mutex` held for short, non-blocking sections (no `.await`, no I/O).
//! A join reads its snapshot with no lock held and only then places the subscriber (see `core::join`).

mod joins;
mod outbox;
mod room;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_tungstenite::tungstenite::Message;

use crate::cursors::CursorBuffer;
use crate::metrics::Metrics;
use crate::protocol::{null_value, presence_frame, CanvasId, ConnId, Cut, UserId};

pub use joins::JoinTicket;
pub use outbox::{outbox, Bounds, Inbox, Kick, Outbox};
pub use room::{AckTo, Entry, Room, RoomState, Settled, Subscriber};

/// Who a user message is for, as the relayed rows and stream entries name it: a user id, or `*` (never a
/// user id) for every connection of every canvas (`POST /api/v1/broadcast`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    User(UserId),
    Everyone,
}

/// How [`Recipient::Everyone`] is written where a user id would be.
pub const EVERYONE: &str = "*";

impl Recipient {
    pub fn as_str(&self) -> &str {
        match self {
            Recipient::User(user) => user.as_str(),
            Recipient::Everyone => EVERYONE,
        }
    }
}

/// A connection on a canvas: what presence registers, what a leave removes, what survivors expire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub canvas: CanvasId,
    pub conn: ConnId,
    pub user: UserId,
    /// The display name it connected with.
    pub name: Option<String>,
    /// When it opened (see [`crate::clock::opened_now`]): kept when it is registered again.
    pub opened: u64,
}

/// Every room of this process.
#[derive(Default)]
pub struct Hub {
    /// Canvases with at least one local subscriber. Held only to find, insert or remove a room.
    rooms: Mutex<HashMap<CanvasId, Arc<Room>>>,
    /// Cursors, presence states and events for the other instances, until the next batch: the hub fills
    /// it when a connection is gone (its presence becomes `null`), sessions with what their clients send.
    cursors: Arc<CursorBuffer>,
    /// Joins not yet placed in their room, for a removal through the API to refuse (see `joins`).
    joins: Arc<joins::Joins>,
}

/// A canvas watermark to persist: how far this instance has delivered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    pub canvas: CanvasId,
    pub last_id: i64,
    pub last_seq: u64,
}

impl Hub {
    pub fn new() -> Self {
        Hub::default()
    }

    fn rooms(&self) -> MutexGuard<'_, HashMap<CanvasId, Arc<Room>>> {
        self.rooms.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What goes to the other instances in the next cursor batch.
    pub fn cursors(&self) -> &Arc<CursorBuffer> {
        &self.cursors
    }

    /// Connection `conn` of `user` is gone from `canvas` (closed, or expired with its instance): every
    /// other connection of the canvas, here at once and elsewhere in the next batch, gets its presence
    /// (v1.1) as `null`. Called once per connection, by the instance whose store commit removed it.
    pub fn connection_gone(&self, canvas: &CanvasId, conn: ConnId, user: &UserId, now: i64, metrics: &Metrics) {
        let frame = presence_frame(canvas.as_str(), user.as_str(), &conn.to_string(), &null_value(), now);
        if let Some(room) = self.room(canvas) {
            let missed = room.lock().broadcast_presence(conn, &Message::text(frame.clone()), metrics);
            metrics.ephemeral_missed(canvas, missed);
        }
        self.cursors.record_presence(canvas, conn, frame, "null".to_owned());
    }

    /// The room of a canvas, if this process serves it.
    pub fn room(&self, canvas: &CanvasId) -> Option<Arc<Room>> {
        self.rooms().get(canvas).cloned()
    }

    /// The room of a canvas, created (not yet started) if absent or closed. The caller must lock it and
    /// check `is_closed` before subscribing.
    pub fn room_for_join(&self, canvas: &CanvasId) -> Arc<Room> {
        let mut rooms = self.rooms();
        if let Some(room) = rooms.get(canvas).filter(|room| !room.lock().is_closed()) {
            return room.clone();
        }
        let room = Arc::new(Room::new(canvas.clone()));
        rooms.insert(canvas.clone(), room.clone());
        room
    }

    /// Removes a connection from its room, and the room from the hub when it was the last one. The rooms
    /// lock is not held while this waits for the room's: every lookup (the writer's among them) would wait
    /// behind the room's fan-out too.
    pub fn leave(&self, canvas: &CanvasId, conn: ConnId) {
        let Some(room) = self.room(canvas) else { return };
        if room.lock().unsubscribe(conn) {
            let mut rooms = self.rooms();
            // Only the closed room itself: a join may have put a fresh one in its place meanwhile.
            if rooms.get(canvas).is_some_and(|current| Arc::ptr_eq(current, &room)) {
                rooms.remove(canvas);
            }
        }
    }

    /// A join that created `room` and failed before starting it: the room is closed and removed, unless a
    /// joiner started it meanwhile (a joiner still reading its snapshot for it will find it closed and retry).
    pub fn abandon(&self, canvas: &CanvasId, room: &Arc<Room>) {
        if !room.lock().close_if_unstarted() {
            return;
        }
        let mut rooms = self.rooms();
        if rooms.get(canvas).is_some_and(|current| Arc::ptr_eq(current, room)) {
            rooms.remove(canvas);
        }
    }

    /// Every local connection with what presence needs to register it again: (canvas, connection, user,
    /// name). For an instance whose connections were expired by others while its heartbeat was late.
    pub fn members(&self) -> Vec<Member> {
        let rooms: Vec<Arc<Room>> = self.rooms().values().cloned().collect();
        let mut members = Vec::new();
        for room in rooms {
            let state = room.lock();
            members.extend(state.members().map(|(conn, user, name, opened)| Member {
                canvas: room.canvas.clone(),
                conn,
                user: user.clone(),
                name: name.map(str::to_owned),
                opened,
            }));
        }
        members
    }

    /// Cuts every local connection (4009) and forgets every room, because the log they follow is gone (the
    /// storage lost data: see the Redis bus's epoch). Each client resumes, which fails on the epoch, and
    /// reloads. Returns how many connections were cut.
    pub fn drop_all_rooms(&self) -> usize {
        let rooms: Vec<Arc<Room>> = self.rooms().drain().map(|(_, room)| room).collect();
        rooms.iter().map(|room| room.lock().close_and_cut_all()).sum()
    }

    /// Every room this process serves, to read for.
    pub fn all_rooms(&self) -> Vec<Arc<Room>> {
        self.rooms().values().cloned().collect()
    }

    /// Whether this process serves no canvas at all.
    pub fn is_empty(&self) -> bool {
        self.rooms().is_empty()
    }

    /// Whether this process serves no canvas and joins none: nothing it reads from the store concerns it.
    pub fn is_idle(&self) -> bool {
        self.joins.is_empty() && self.is_empty()
    }

    /// Counts a join of `user` to `canvas` in flight, from before it reads the block until it is placed:
    /// a removal meanwhile gets its placement refused (see `joins`).
    pub fn start_join(&self, canvas: &CanvasId, user: &UserId, conn: ConnId) -> JoinTicket {
        self.joins.start(canvas, user, conn)
    }

    /// How many canvases and connections this process serves.
    pub fn counts(&self) -> (usize, usize) {
        let rooms: Vec<Arc<Room>> = self.rooms().values().cloned().collect();
        let connections = rooms.iter().map(|r| r.lock().subscriber_count()).sum();
        (rooms.len(), connections)
    }

    /// Queues a frame for every local socket of `user` (every socket for [`EVERYONE`]), whatever canvases
    /// it is on: once per socket, so a multiplexed socket on several canvases gets it once. Returns how many.
    pub fn send_to_user(&self, user: &str, frame: &Message) -> usize {
        let rooms: Vec<Arc<Room>> = self.rooms().values().cloned().collect();
        let mut reached = std::collections::HashSet::new();
        rooms.iter().map(|room| room.lock().send_to_user(user, frame, &mut reached)).sum()
    }

    /// Closes this process's connections of `user` to `canvas` with 4003 (removed through the API), and
    /// refuses the placement of its joins in flight here; returns how many connections it closed. The joins
    /// are marked first: a placement after the close below then sees its mark.
    pub fn remove_user(&self, canvas: &CanvasId, user: &str) -> usize {
        self.joins.remove_user(canvas, user);
        self.room(canvas).map_or(0, |room| room.lock().kick_user(user, Cut::Removed))
    }

    /// The watermarks that moved since the last call.
    pub fn take_watermarks(&self) -> Vec<Watermark> {
        let rooms: Vec<Arc<Room>> = self.rooms().values().cloned().collect();
        rooms
            .iter()
            .filter_map(|room| {
                let (last_id, last_seq) = room.lock().take_watermark()?;
                Some(Watermark { canvas: room.canvas.clone(), last_id, last_seq })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn bounds(frames: usize) -> Bounds {
        Bounds { frames, bytes: 1 << 20, riding_bytes: 1 << 20 }
    }

    #[test]
    fn leaving_last_closes_and_removes_the_room() {
        let hub = Hub::new();
        let canvas = CanvasId::parse("c1").unwrap();
        let room = hub.room_for_join(&canvas);
        let conn = ConnId::new_v4();
        {
            let mut state = room.lock();
            state.start_at(0, 0, &Metrics::default());
            let user = UserId::parse("u1").unwrap();
            let outbox = outbox(bounds(16)).0;
            state.subscribe(Subscriber { conn, user, name: None, opened: 0, generation: 0, start_after: 0, outbox });
        }
        assert_eq!(hub.counts(), (1, 1));
        hub.leave(&canvas, conn);
        assert!(room.lock().is_closed());
        assert!(hub.room(&canvas).is_none());
    }

    /// A leave waits for its room's lock (to unsubscribe) without holding the rooms lock: every other
    /// lookup, the writer's among them (inside its write transaction), goes on meanwhile.
    #[test]
    fn a_leave_waiting_for_a_rooms_lock_holds_up_no_lookup() {
        let hub = Arc::new(Hub::new());
        let (busy, other) = (CanvasId::parse("busy").unwrap(), CanvasId::parse("other").unwrap());
        for canvas in [&busy, &other] {
            hub.room_for_join(canvas).lock().start_at(0, 0, &Metrics::default());
        }
        let room = hub.room(&busy).unwrap();
        let held = room.lock(); // as a long section on the room would
        let leaving = std::thread::spawn({
            let (hub, busy) = (hub.clone(), busy.clone());
            move || hub.leave(&busy, ConnId::new_v4())
        });
        std::thread::sleep(std::time::Duration::from_millis(50)); // the leave is now waiting for `held`
        let (found, done) = std::sync::mpsc::channel();
        std::thread::spawn({
            let hub = hub.clone();
            move || {
                let _ = found.send(hub.room(&other).is_some());
            }
        });
        let looked_up = done.recv_timeout(std::time::Duration::from_secs(10));
        drop(held);
        leaving.join().unwrap();
        assert_eq!(looked_up, Ok(true), "a lookup of another room did not wait for the leave");
    }

    #[test]
    fn a_user_message_reaches_every_connection_of_the_user_and_nobody_else() {
        let hub = Hub::new();
        let mut inboxes = Vec::new();
        for (canvas, user) in [("c1", "ann"), ("c2", "ann"), ("c2", "bob")] {
            let room = hub.room_for_join(&CanvasId::parse(canvas).unwrap());
            let (outbox, inbox) = outbox(bounds(4));
            let mut state = room.lock();
            state.start_at(0, 0, &Metrics::default());
            let user = UserId::parse(user).unwrap();
            state.subscribe(Subscriber {
                conn: ConnId::new_v4(),
                user,
                name: None,
                opened: 0,
                generation: 0,
                start_after: 0,
                outbox,
            });
            inboxes.push(inbox);
        }
        assert_eq!(hub.send_to_user("ann", &Message::text("hi")), 2);
        let received: Vec<bool> = inboxes.iter_mut().map(|i| !i.take_all().is_empty()).collect();
        assert_eq!(received, [true, true, false]);
    }
}
