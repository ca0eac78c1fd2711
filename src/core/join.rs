//! Joining a canvas, the same on every store: register the connection in presence, read the
//! canvas with no lock held, then place the subscriber in its room under the room's lock for a moment.
//!
//! No lock a writer needs is held while storage is read. The room is created (unstarted) before the
//! read, so it keeps every commit offered meanwhile; placing the subscriber then decides where its
//! stream starts:
//! - after the view's head, when the room has delivered less than that (what the room delivers up to
//!   the head, the subscriber skips: its welcome covers it);
//! - after what the room has delivered, when that is more: the seqs between the view and that point are
//!   read back from the log and sent after the welcome, before anything live ([`Replay`]).
//!
//! Either way the client sees every seq after its welcome exactly once, in order. The canvas state in the
//! welcome (the store's newest snapshot with the ops after it, folded: see `reads.rs`) comes from the
//! [`StateCache`](super::StateCache) when a joiner already serialized the same version.
//!
//! A user the API blocked from the canvas is refused before anything else. A removal of the user from the
//! canvas that reaches this process while the join is under way (after it read "not blocked") refuses its
//! placement: the join is counted in the hub from before that read ([`JoinTicket`]), so no join slips past
//! a removal into its room (`hub::joins`).

use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;

use super::reads::View;
use super::state_cache::INLINE_LIMIT;
use super::views::peers_json;
use super::{Bus, BusError, PresenceChange, Publish, Unavailable};
use crate::hub::{Hub, JoinTicket, Member, Outbox, Room, Subscriber};
use crate::protocol::{CanvasId, ConnId, Resume, UserId};
use crate::store::Want;

/// How many times a join reads the canvas again when the room moved under it (closed, or reset past it).
const MAX_ATTEMPTS: usize = 20;

/// A placement: joined, `None` to read the canvas again, or refused.
type Placement = Result<Option<Joined>, BusError>;

/// A connection asking to join a canvas.
#[derive(Debug)]
pub struct JoinRequest {
    pub canvas: CanvasId,
    pub conn: ConnId,
    pub user: UserId,
    /// The display name shown in presence.
    pub name: Option<String>,
    /// `since` + `epoch` from the query string, when the client is resuming.
    pub resume: Option<Resume>,
    /// Where live messages after the welcome go.
    pub outbox: Outbox,
}

impl JoinRequest {
    /// The connection as presence registers it, opened now.
    fn member(&self) -> Member {
        let (canvas, user, name) = (self.canvas.clone(), self.user.clone(), self.name.clone());
        Member { canvas, conn: self.conn, user, name, opened: crate::clock::opened_now() }
    }
}

/// Seqs a new subscriber is sent after its welcome and before anything live, read back from the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replay {
    pub generation: u64,
    pub after: u64,
    pub upto: u64,
}

/// Where a joined connection's stream starts.
#[derive(Debug)]
pub struct Joined {
    pub epoch: String,
    /// The welcome's `seq`: the client next receives `seq + 1`.
    pub seq: u64,
    pub resumed: bool,
    /// Frames after `seq` to send before anything live (the resume's replay, and what the room delivered
    /// while the view was read).
    pub replay: Option<Replay>,
    /// The canvas state at exactly `seq` (only when not resumed), shared with other joiners.
    pub objects: Option<Bytes>,
    /// Who is on the canvas at `seq`, as the welcome's JSON array.
    pub presence: Box<RawValue>,
    /// Every other live connection of the canvas with its presence state, as the welcome's JSON array.
    pub peers: Box<RawValue>,
    /// This connection's place in presence; leaving (or dropping it) takes it out.
    pub membership: Membership,
}

/// A connection registered in presence. Whoever holds it must [`leave`](Membership::leave); if it is dropped
/// instead (the client hung up during the upgrade, the join was cancelled, the session panicked), the leave
/// is spawned, so a connection row never outlives its connection.
#[derive(Debug)]
pub struct Membership {
    bus: Option<Bus>,
    /// The join returned: the connection may have sent messages, and its leave must come after them (the
    /// committer's queue). Before that, it leaves on the urgent lane, after its registration.
    joined: bool,
    pub member: Member,
}

impl Membership {
    /// Leaves the room and presence now.
    pub async fn leave(mut self) {
        if let Some(bus) = self.bus.take() {
            bus.leave(self.member.clone(), false).await;
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let Some(bus) = self.bus.take() else { return };
        let (member, urgent) = (self.member.clone(), !self.joined);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(async move { bus.leave(member, urgent).await })),
            // No runtime left (the process is exiting): survivors expire the row with this instance.
            Err(_) => {
                tracing::debug!(conn = %self.member.conn, "connection dropped without a runtime to leave presence")
            }
        }
    }
}

/// The room a join reads the canvas for. A join that ends without a subscriber in it (failed, or dropped:
/// the client hung up, or left the canvas before its welcome) abandons it, so that a room it created is not
/// left behind unstarted, keeping every commit offered to it; a room started or subscribed to stays.
struct RoomForJoin<'a> {
    hub: &'a Hub,
    canvas: &'a CanvasId,
    room: Arc<Room>,
}

impl Drop for RoomForJoin<'_> {
    fn drop(&mut self) {
        self.hub.abandon(self.canvas, &self.room);
    }
}

impl Bus {
    /// Registers a connection in presence (logging `user-connected` if it is the user's first on the
    /// canvas), then reads the canvas and subscribes the connection. The registration commits first, so the
    /// welcome's seq and presence include it; a join that fails or is dropped after it leaves again. A user
    /// blocked from the canvas is refused (`BusError::Blocked`), and so is one removed from it while this
    /// ran (`BusError::Removed`).
    pub async fn join(&self, request: JoinRequest) -> Result<Joined, BusError> {
        // Counted before the block is read: a removal committed after the read finds this join in flight.
        let ticket = self.hub().start_join(&request.canvas, &request.user, request.conn);
        if let Some(left) = self.blocked(&request.canvas, &request.user).await? {
            return Err(BusError::Blocked { canvas: request.canvas, user: request.user, left });
        }
        let member = request.member();
        let mut membership = Membership { bus: Some(self.clone()), joined: false, member: member.clone() };
        let (done, registered) = tokio::sync::oneshot::channel();
        self.publish_urgent(Publish::presence(PresenceChange::Connect, member.clone(), Some(done))).await?;
        match tokio::time::timeout(self.publish_timeout(), registered).await {
            Ok(Ok(registered)) => registered?,
            Ok(Err(_)) => return Err(BusError::ShuttingDown),
            Err(_) => return Err(Unavailable::Timeout.into()),
        }
        let registered_at = std::time::Instant::now();
        for _ in 0..MAX_ATTEMPTS {
            // The room first: from now on it keeps whatever is committed for the canvas, so nothing falls
            // between what the read saw and what the room delivers.
            let room = RoomForJoin {
                hub: self.hub(),
                canvas: &request.canvas,
                room: self.hub().room_for_join(&request.canvas),
            };
            let view = self.view_with_state(&request, registered_at).await?;
            // A removal meanwhile refuses the join; the room guard abandons a room it created and left unstarted.
            if let Some(joined) = self.place(&room.room, &request, &member, &ticket, view).await? {
                membership.joined = true;
                return Ok(Joined { membership, ..joined });
            }
        }
        Err(Unavailable::JoinRaced.into())
    }

    /// The canvas for the joiner, with the objects: read with it when small, else from the cache when the
    /// canvas is at a cached version, else read whole by one joiner for all the others waiting.
    /// `registered_at`: when the joiner's registration had committed; any read after includes it.
    async fn view_with_state(
        &self,
        request: &JoinRequest,
        registered_at: std::time::Instant,
    ) -> Result<View, BusError> {
        let (canvas, cache, metrics) = (&request.canvas, self.state_cache(), self.metrics());
        let unless = cache.key(canvas).map(|key| (key.generation, key.version));
        let want = Want { unless, up_to: INLINE_LIMIT };
        let mut view = self.view(canvas, request.resume.as_ref(), want).await?;
        if view.resumed {
            return Ok(view);
        }
        if view.objects.is_some() {
            metrics.join_state_inline.increment(1);
            return Ok(view);
        }
        if let Some(objects) = cache.get(canvas, &view.key()) {
            metrics.join_state_cached.increment(1);
            view.objects = Some(objects);
            return Ok(view);
        }
        // A big state nobody cached at this version: one joiner reads it, the others wait and share it.
        let building = cache.build_lock(canvas);
        let _building = building.lock().await;
        if let Some(objects) = cache.get(canvas, &view.key()) {
            metrics.join_state_cached.increment(1);
            view.objects = Some(objects);
            return Ok(view);
        }
        if let Some(built) = cache.read_since(canvas, registered_at) {
            metrics.join_state_cached.increment(1);
            return Ok(built);
        }
        metrics.join_state_built.increment(1);
        let read_at = std::time::Instant::now();
        let full = self.view(canvas, None, Want::all()).await?;
        if full.objects.as_ref().is_some_and(|objects| objects.len() > INLINE_LIMIT) {
            cache.insert(canvas, full.clone(), read_at);
        }
        Ok(full)
    }

    /// Subscribes the joiner under its room's lock; `None` to read the view again (the room closed
    /// meanwhile, or delivered a reset past the view). A join the API removed its user from meanwhile
    /// is refused: checked under the lock, so a removal that closes the room's subscribers after this has
    /// the joiner among them, and one before it has marked the ticket (`hub::joins`).
    async fn place(
        &self,
        room: &Room,
        request: &JoinRequest,
        member: &Member,
        ticket: &JoinTicket,
        mut view: View,
    ) -> Placement {
        let (start_after, created, peers) = {
            let mut state = room.lock();
            if state.is_closed() {
                return Ok(None);
            }
            if ticket.removed() {
                return Err(BusError::Removed { canvas: request.canvas.clone(), user: request.user.clone() });
            }
            let created = state.start_at(view.seq, view.generation, self.metrics());
            if state.generation() > view.generation {
                return Ok(None);
            }
            let start_after = match state.generation() == view.generation {
                true => state.delivered().max(view.seq),
                false => view.seq, // the room has yet to deliver the reset: it starts over at 0
            };
            state.subscribe(Subscriber {
                conn: request.conn,
                user: request.user.clone(),
                name: request.name.clone(),
                opened: member.opened,
                generation: view.generation,
                start_after,
                outbox: request.outbox.clone(),
            });
            let peers = peers_json(std::mem::take(&mut view.peers), &state, request.conn);
            (start_after, created, peers)
        };
        if created {
            self.store().room_started(&request.canvas).await;
        }
        let seq = match (view.resumed, &request.resume) {
            (true, Some(resume)) => resume.since,
            _ => view.seq,
        };
        let replay =
            (start_after > seq).then_some(Replay { generation: view.generation, after: seq, upto: start_after });
        let objects = if view.resumed { None } else { view.objects };
        Ok(Some(Joined {
            epoch: view.epoch,
            seq,
            resumed: view.resumed,
            replay,
            objects,
            presence: view.presence,
            peers,
            membership: Membership { bus: None, joined: true, member: member.clone() },
        }))
    }
}

#[cfg(test)]
mod tests;
