//! One client's outbound queue, in two lanes. The hub's side ([`Outbox`]) pushes without ever waiting; the
//! session's side ([`Inbox`]) takes what is queued a flush at a time and writes it to the socket.
//!
//! - The **logged lane** holds what must arrive, in order: messages, acks, errors, pongs, resets, user
//!   messages. It is bounded by frames and by bytes; a push past either bound means the client reads too
//!   slowly, and it is cut with 4009 (it resumes to catch up). This is the one place that decides it.
//! - The **ephemeral lane** holds at most one frame per sending connection and kind for what only matters at
//!   its latest (cursors, presence states): a newer frame from the same sender replaces the one still
//!   waiting, so a flood of cursors costs a slow reader one pending frame per sender, never a backlog, and
//!   never a cut. Ephemeral
//!   events (reactions, "follow me") wait there too, in send order and never replaced; past the lane's bound
//!   they are dropped, never cut.
//!
//! A flush takes logged frames first (up to its budget), then the waiting ephemeral frames: a cursor never
//! sits in front of a logged frame, and waits behind at most one flush of them.
//!
//! One queue serves a whole socket. A multiplexed socket (`GET /ws`, v1.1) joins several canvases, each
//! through an [`Outbox`] handle that names its canvas (`for_canvas`, in `canvases.rs`): the hub's frames of
//! every canvas share the socket's bounds and order, replies (acks, errors) name their canvas, frames for a
//! canvas whose welcome is not written yet wait aside, and a removal through the API leaves one canvas
//! rather than closing the socket.
//!
//! `VecDeque`s behind a mutex rather than a tokio channel, for memory: an idle socket should hold almost
//! nothing, and these give their buffers back whenever the session drains them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

use crate::protocol::{CanvasId, ConnId, Cut};

mod canvases;
mod ephemeral;

pub use canvases::Kick;

/// A drained lane keeps a buffer this big; a larger one is released.
const KEEP_CAPACITY: usize = 8;
/// What one queued frame costs besides its text (the `Message`, its refcount and the queue slot), counted
/// against the byte bound so that many tiny frames cannot hide behind it.
const FRAME_OVERHEAD: usize = 64;
/// Most senders whose ephemeral frames wait at once, and most bytes they take; past either a frame is
/// dropped (the next one from that sender gets through once the reader drains).
const MAX_EPHEMERAL_SENDERS: usize = 1024;
const MAX_EPHEMERAL_BYTES: usize = 256 * 1024;

/// How big one client's logged lane may grow.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub frames: usize,
    pub bytes: usize,
    /// How many bytes of restore frames may ride (see [`Outbox::push_run`]): enough for a restore of the
    /// biggest state (`Bounds::riding_for`), so that back-to-back restores to a client that reads nothing
    /// still end in a cut.
    pub riding_bytes: usize,
}

impl Bounds {
    /// The riding allowance for canvases of at most `max_state` bytes: a restore's frames are its objects'
    /// texts and a few dozen bytes of frame per object, twice the state covers both.
    pub fn riding_for(max_state: usize) -> usize {
        max_state.saturating_mul(2)
    }
}

/// The sending side of one client's queue.
#[derive(Clone, Debug)]
pub struct Outbox {
    channel: Arc<Channel>,
    /// The canvas this handle's frames are for, on a multiplexed socket: replies name it, and a removal
    /// leaves only it. `None` on a single-canvas socket.
    canvas: Option<Arc<CanvasId>>,
}

/// The session's side of an [`Outbox`]. Dropping it closes the queue: pushes then report the client gone.
#[derive(Debug)]
pub struct Inbox {
    channel: Arc<Channel>,
}

/// What the two ends of one client's queue share.
#[derive(Debug)]
struct Channel {
    queue: Mutex<Queue>,
    bounds: Bounds,
    /// Woken when a frame is queued into an empty queue.
    ready: Notify,
    /// Woken when the client must be cut with 4009 (the reason is in `Queue::cut`).
    kicked: Notify,
}

#[derive(Debug, Default)]
struct Queue {
    logged: VecDeque<Message>,
    /// Bytes of `logged`, overhead included.
    logged_bytes: usize,
    /// The latest waiting cursor of each sender (`Some(sender)`), in the order the senders first queued one,
    /// and events (`None`), in the order they came.
    ephemeral: VecDeque<(Slot, Message)>,
    /// Bytes of `ephemeral`, overhead included.
    ephemeral_bytes: usize,
    /// Why the client is being cut, once it is; the first reason wins.
    cut: Option<Cut>,
    /// Canvases of a multiplexed socket whose welcome is not written yet, each with the frames queued for
    /// it meanwhile (they go out after it). The bytes of their logged frames count in `logged_bytes`.
    joining: Vec<canvases::Joining>,
    /// How many logged frames wait in `joining`, counted against the frame bound with `logged`.
    held: usize,
    /// Frames of `logged` and `joining` (and their bytes) that ride on the frame before them and count
    /// against no bound: a restore's after its first (see [`Outbox::push_run`]).
    riding: usize,
    riding_bytes: usize,
    /// Whether the last logged frame queued was a restore's.
    in_restore: bool,
    /// Canvases the API removed this multiplexed socket from, not yet left.
    removed: Vec<CanvasId>,
    /// The session is gone.
    closed: bool,
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.logged.is_empty() && self.ephemeral.is_empty()
    }

    /// After frames left the queue (written or dropped): what rides is at most what is left (so once a
    /// restore's first frame is written, what is left of it rides whole).
    fn settle_riding(&mut self) {
        self.riding = self.riding.min(self.logged.len() + self.held);
        self.riding_bytes = self.riding_bytes.min(self.logged_bytes);
    }
}

/// A two-lane queue for one client.
pub fn outbox(bounds: Bounds) -> (Outbox, Inbox) {
    let channel = Arc::new(Channel {
        queue: Mutex::new(Queue::default()),
        bounds: Bounds { frames: bounds.frames.max(1), bytes: bounds.bytes.max(1), ..bounds },
        ready: Notify::new(),
        kicked: Notify::new(),
    });
    (Outbox { channel: channel.clone(), canvas: None }, Inbox { channel })
}

/// What an ephemeral frame waits as: the latest cursor or presence state of a sending connection (a newer
/// one of the same slot replaces it), or an event (never replaced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Cursor(ConnId),
    Presence(ConnId),
    Event,
}

/// What became of an ephemeral frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ephemeral {
    /// Waiting to be written.
    Queued,
    /// It replaced an older frame of the same sender that had not been written yet.
    Coalesced,
    /// Not kept: the client is gone, or too many senders are waiting.
    Dropped,
}

impl Channel {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        // Every section below leaves the queue consistent between statements: carrying on after a panic
        // elsewhere is safer than poisoning every later push.
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn kick(&self, queue: &mut Queue, reason: Cut) {
        if queue.cut.is_none() {
            queue.cut = Some(reason);
        }
        self.kicked.notify_one();
    }
}

impl Outbox {
    /// Queues a frame on the logged lane without waiting. Past either bound the client is too slow: it is
    /// cut (4009) and `false` is returned so the caller drops it from its room. `false` also when the client
    /// is gone.
    pub fn push(&self, frame: Message) -> bool {
        self.push_all(std::iter::once(frame)).is_some()
    }

    /// Queues frames on the logged lane, in order, as [`push`](Outbox::push) would one by one, under one
    /// lock and with one wake-up of the session: a batch of a canvas's commits reaches the socket as one
    /// flush rather than a flush per frame. Returns how many were queued, or `None` if the client was cut
    /// (past a bound: those before it stay queued, as they would have been) or is gone.
    pub fn push_all(&self, frames: impl IntoIterator<Item = Message>) -> Option<usize> {
        self.push_run(frames.into_iter().map(|frame| (frame, false)))
    }

    /// Queues frames as [`push_all`](Outbox::push_all) does, each marked whether it is a restore's: a
    /// restore's frames count as one entry of the queue (each after the first rides on the one before it:
    /// queued whatever the bounds, and counted against none until written), so that no client is cut for
    /// the size of a restore, however its frames reach the queue, while what follows is bounded as ever.
    pub fn push_run(&self, frames: impl IntoIterator<Item = (Message, bool)>) -> Option<usize> {
        let mut queue = self.channel.queue();
        if queue.closed || queue.cut.is_some() {
            return None;
        }
        let (was_empty, joining, bounds) = (queue.is_empty(), self.joining_at(&queue), self.channel.bounds);
        let mut queued = 0;
        for (frame, restore) in frames {
            let cost = frame.len() + FRAME_OVERHEAD;
            let after_restore = std::mem::replace(&mut queue.in_restore, restore);
            let rides = restore && after_restore && queue.riding_bytes + cost <= bounds.riding_bytes;
            let (frames_counted, bytes_counted) =
                (queue.logged.len() + queue.held - queue.riding, queue.logged_bytes - queue.riding_bytes);
            if rides {
                queue.riding += 1;
                queue.riding_bytes += cost;
            } else if frames_counted >= bounds.frames || bytes_counted + cost > bounds.bytes {
                self.channel.kick(&mut queue, Cut::Slow);
                drop(queue);
                self.wake_if(was_empty && joining.is_none() && queued > 0);
                return None;
            }
            match joining {
                Some(at) => queue.hold(at, frame, cost),
                None => {
                    queue.logged.push_back(frame);
                    queue.logged_bytes += cost;
                }
            }
            queued += 1;
        }
        drop(queue);
        self.wake_if(was_empty && joining.is_none() && queued > 0);
        Some(queued)
    }

    /// Wakes the session, once the queue's lock is let go, when frames went into a queue it had emptied.
    fn wake_if(&self, became_ready: bool) {
        if became_ready {
            self.channel.ready.notify_one();
        }
    }

    /// Tells the session to close with 4009 now, for `reason` (4003 for [`Cut::Removed`], which on a
    /// multiplexed socket leaves only this handle's canvas).
    pub fn kick(&self, reason: Cut) {
        let mut queue = self.channel.queue();
        match (&self.canvas, reason) {
            (Some(canvas), Cut::Removed) => {
                queue.removed.push(CanvasId::clone(canvas));
                self.channel.kicked.notify_one();
            }
            _ => self.channel.kick(&mut queue, reason),
        }
    }
}

impl Inbox {
    /// Waits until something is queued (returns at once if something is).
    pub async fn ready(&self) {
        loop {
            // Created before the check: a push in between stores a permit, so this cannot miss it.
            let notified = self.channel.ready.notified();
            if !self.channel.queue().is_empty() {
                return;
            }
            notified.await;
        }
    }

    /// One flush's worth: logged frames in order, up to `max_frames` and (past the first) `max_bytes`, then
    /// waiting ephemeral frames within what is left of the bytes (at least one when no logged frame was
    /// taken). Draining a lane releases a buffer grown by a burst.
    pub fn take_flush(&self, max_frames: usize, max_bytes: usize) -> Vec<Message> {
        let mut queue = self.channel.queue();
        let mut frames = Vec::new();
        let mut bytes = 0;
        while frames.len() < max_frames && (frames.is_empty() || bytes < max_bytes) {
            let Some(frame) = queue.logged.pop_front() else { break };
            bytes += frame.len();
            queue.logged_bytes -= frame.len() + FRAME_OVERHEAD;
            frames.push(frame);
        }
        queue.settle_riding();
        while frames.is_empty() || bytes < max_bytes {
            let Some((_, frame)) = queue.ephemeral.pop_front() else { break };
            bytes += frame.len();
            queue.ephemeral_bytes -= frame.len() + FRAME_OVERHEAD;
            frames.push(frame);
        }
        shrink(&mut queue.logged);
        shrink(&mut queue.ephemeral);
        frames
    }

    /// Everything queued, logged lane first (shutdown writes it all before closing).
    pub fn take_all(&self) -> Vec<Message> {
        self.take_flush(usize::MAX, usize::MAX)
    }

    /// Completes when the client must be cut with 4009 (or 4003), with the reason, or when a multiplexed
    /// socket was removed from some of its canvases.
    pub async fn kicked(&self) -> Kick {
        loop {
            let notified = self.channel.kicked.notified();
            {
                let mut queue = self.channel.queue();
                if let Some(reason) = queue.cut {
                    return Kick::Cut(reason);
                }
                if !queue.removed.is_empty() {
                    return Kick::Removed(std::mem::take(&mut queue.removed));
                }
            }
            notified.await;
        }
    }
}

/// Gives back the buffer of a drained lane that a burst grew.
fn shrink<T>(lane: &mut VecDeque<T>) {
    if lane.is_empty() && lane.capacity() > KEEP_CAPACITY {
        *lane = VecDeque::new();
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let mut queue = self.channel.queue();
        queue.closed = true;
        queue.logged = VecDeque::new();
        queue.ephemeral = VecDeque::new();
        queue.ephemeral_bytes = 0;
        queue.joining = Vec::new();
        queue.held = 0;
        queue.settle_riding();
    }
}

#[cfg(test)]
mod tests;
