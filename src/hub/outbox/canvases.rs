//! The queue of a multiplexed socket (`GET /ws`, v1.1): one [`Outbox`] handle per joined canvas, all on
//! the socket's one channel, so the hub's frames of every canvas share its bounds (the slow-client rule
//! applies to the socket as a whole) and leave in the order they were queued.
//!
//! - A handle names its canvas: acks and errors queued through it say `"canvas"`.
//! - While a canvas is joining, frames queued for it wait aside ([`Inbox::hold`]): its room may deliver
//!   before the session has written its welcome, and nothing of a canvas may precede its welcome. Once the
//!   welcome (and replay) is written they join the queue ([`Inbox::release`]).
//! - A removal through the API ([`Cut::Removed`]) through a handle leaves only its canvas: the session hears
//!   of it from [`Inbox::kicked`] as [`Kick::Removed`] and sends `left` with code 4003.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio_tungstenite::tungstenite::Message;

use super::{Ephemeral, Inbox, Outbox, Queue, Slot, FRAME_OVERHEAD, MAX_EPHEMERAL_BYTES, MAX_EPHEMERAL_SENDERS};
use crate::protocol::{CanvasId, Cut};

/// What [`Inbox::kicked`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kick {
    /// The whole socket must close: 4009 for why, or 4003.
    Cut(Cut),
    /// A multiplexed socket was removed from these canvases through the API: it leaves them, and stays.
    Removed(Vec<CanvasId>),
}

impl Outbox {
    /// A handle on the same queue for `canvas` of a multiplexed socket.
    pub fn for_canvas(&self, canvas: CanvasId) -> Outbox {
        Outbox { channel: self.channel.clone(), canvas: Some(Arc::new(canvas)) }
    }

    /// Which socket this queue is: the same for every handle of one socket.
    pub fn socket(&self) -> usize {
        Arc::as_ptr(&self.channel) as usize
    }

    /// The canvas replies through this handle name (`None` on a single-canvas socket).
    pub fn canvas(&self) -> Option<&str> {
        self.canvas.as_deref().map(CanvasId::as_str)
    }

    /// Where this handle's frames wait, if its canvas is joining.
    pub(super) fn joining_at(&self, queue: &Queue) -> Option<usize> {
        let canvas = self.canvas.as_deref()?;
        queue.joining.iter().position(|joining| &joining.canvas == canvas)
    }

    /// Holds an ephemeral frame for a joining canvas, within a bound of its own (never the socket's: an
    /// ephemeral frame never cuts); dropped past it.
    pub(super) fn hold_ephemeral(&self, queue: &mut Queue, at: usize, frame: Message) -> Ephemeral {
        let cost = frame.len() + FRAME_OVERHEAD;
        let joining = &mut queue.joining[at];
        if joining.ephemeral.len() >= MAX_HELD_EPHEMERAL || joining.ephemeral_bytes + cost > MAX_HELD_EPHEMERAL_BYTES {
            return Ephemeral::Dropped;
        }
        joining.ephemeral_bytes += cost;
        joining.ephemeral.push_back(frame);
        Ephemeral::Queued
    }
}

/// Most ephemeral frames (cursors, presence states, events) held for one joining canvas, and their bytes.
const MAX_HELD_EPHEMERAL: usize = 256;
const MAX_HELD_EPHEMERAL_BYTES: usize = MAX_EPHEMERAL_BYTES / 4;

/// A canvas of a multiplexed socket whose welcome is not written yet, and what waits for it.
#[derive(Debug)]
pub(super) struct Joining {
    canvas: CanvasId,
    /// Logged frames, in order: counted in the socket's bounds, and cut it past them like any.
    logged: VecDeque<Message>,
    /// Ephemeral frames, in order, within a bound of their own: they join the ephemeral lane after the
    /// welcome (as events: none replaces another).
    ephemeral: VecDeque<Message>,
    ephemeral_bytes: usize,
}

impl Queue {
    pub(super) fn hold(&mut self, at: usize, frame: Message, cost: usize) {
        self.joining[at].logged.push_back(frame);
        self.held += 1;
        self.logged_bytes += cost;
    }

    /// Takes what is held for `canvas`, with the cost of its logged frames.
    fn take_held(&mut self, canvas: &CanvasId) -> Option<(Joining, usize)> {
        let at = self.joining.iter().position(|joining| &joining.canvas == canvas)?;
        let joining = self.joining.swap_remove(at);
        self.held -= joining.logged.len();
        let cost = joining.logged.iter().map(|frame| frame.len() + FRAME_OVERHEAD).sum();
        Some((joining, cost))
    }
}

impl Inbox {
    /// Completes when the whole socket must close, with the reason (unlike [`Inbox::kicked`], a removal from
    /// one canvas of a multiplexed socket does not count).
    pub async fn cut(&self) -> Cut {
        loop {
            let notified = self.channel.kicked.notified();
            if let Some(reason) = self.channel.queue().cut {
                return reason;
            }
            notified.await;
        }
    }

    /// From now on, frames for `canvas` wait until [`release`](Inbox::release): call before its join.
    pub fn hold(&self, canvas: &CanvasId) {
        let mut queue = self.channel.queue();
        if !queue.joining.iter().any(|joining| &joining.canvas == canvas) {
            let (logged, ephemeral) = (VecDeque::new(), VecDeque::new());
            queue.joining.push(Joining { canvas: canvas.clone(), logged, ephemeral, ephemeral_bytes: 0 });
        }
    }

    /// `canvas`'s welcome is written: what waited for it joins the queue, behind what is there (its
    /// ephemeral frames as far as the ephemeral lane has room).
    pub fn release(&self, canvas: &CanvasId) {
        let mut queue = self.channel.queue();
        let Some((joining, _)) = queue.take_held(canvas) else { return };
        let was_empty = queue.is_empty();
        queue.logged.extend(joining.logged);
        for frame in joining.ephemeral {
            let cost = frame.len() + FRAME_OVERHEAD;
            if queue.ephemeral.len() >= MAX_EPHEMERAL_SENDERS || queue.ephemeral_bytes + cost > MAX_EPHEMERAL_BYTES {
                break;
            }
            queue.ephemeral_bytes += cost;
            queue.ephemeral.push_back((Slot::Event, frame));
        }
        let now_empty = queue.is_empty();
        drop(queue);
        if was_empty && !now_empty {
            self.channel.ready.notify_one();
        }
    }

    /// `canvas`'s join failed: what waited for it is dropped.
    pub fn discard(&self, canvas: &CanvasId) {
        let mut queue = self.channel.queue();
        if let Some((_, cost)) = queue.take_held(canvas) {
            queue.logged_bytes -= cost;
            queue.settle_riding();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{outbox, Bounds};
    use super::*;
    use crate::protocol::ConnId;

    fn canvas(id: &str) -> CanvasId {
        CanvasId::parse(id).unwrap()
    }

    fn texts(frames: Vec<Message>) -> Vec<String> {
        frames.into_iter().map(|frame| frame.into_text().unwrap().to_string()).collect()
    }

    #[test]
    fn a_joining_canvas_waits_for_its_welcome_while_the_others_flow() {
        let (socket, inbox) = outbox(Bounds { frames: 16, bytes: 1 << 20, riding_bytes: 1 << 20 });
        let (c1, c2) = (socket.for_canvas(canvas("c1")), socket.for_canvas(canvas("c2")));
        inbox.hold(&canvas("c2"));
        assert!(c2.push(Message::text("c2-1")));
        assert_eq!(c2.push_ephemeral(ConnId::nil(), Message::text("c2-cursor")), Ephemeral::Queued);
        assert!(c1.push(Message::text("c1-1")));
        assert_eq!(texts(inbox.take_all()), ["c1-1"], "c2's frames wait for its welcome");
        inbox.release(&canvas("c2"));
        assert!(c2.push(Message::text("c2-2")));
        let flushed = texts(inbox.take_all());
        assert_eq!(flushed, ["c2-1", "c2-2", "c2-cursor"], "in order, logged frames before ephemeral ones as always");
        assert_eq!((c1.canvas(), socket.canvas()), (Some("c1"), None));
    }

    #[test]
    fn ephemeral_frames_held_for_a_joining_canvas_never_cut_the_socket() {
        let (socket, inbox) = outbox(Bounds { frames: 4, bytes: 1 << 20, riding_bytes: 1 << 20 });
        let c1 = socket.for_canvas(canvas("c1"));
        inbox.hold(&canvas("c1"));
        let held = (0..1000).filter(|_| c1.push_ephemeral(ConnId::nil(), Message::text("cursor")) == Ephemeral::Queued);
        assert_eq!(held.count(), MAX_HELD_EPHEMERAL, "bounded on their own, the rest dropped");
        assert!((0..4).all(|n| socket.push(Message::text(format!("logged {n}")))), "the socket's bound is untouched");
        assert_eq!(futures_util::FutureExt::now_or_never(inbox.kicked()), None);
        inbox.release(&canvas("c1"));
        assert_eq!(inbox.take_all().len(), 4 + MAX_HELD_EPHEMERAL);
    }

    #[test]
    fn held_frames_count_against_the_sockets_bounds_and_a_failed_join_drops_them() {
        let (socket, inbox) = outbox(Bounds { frames: 2, bytes: 1 << 20, riding_bytes: 1 << 20 });
        let c1 = socket.for_canvas(canvas("c1"));
        inbox.hold(&canvas("c1"));
        assert!(c1.push(Message::text("a")) && c1.push(Message::text("b")));
        inbox.discard(&canvas("c1"));
        assert!(socket.push(Message::text("c")) && socket.push(Message::text("d")), "room again once dropped");
        assert!(!socket.push(Message::text("e")), "past the socket's bound");
        let kicked = futures_util::FutureExt::now_or_never(inbox.kicked());
        assert_eq!(kicked, Some(Kick::Cut(Cut::Slow)));
    }

    #[test]
    fn a_removal_leaves_one_canvas_of_a_multiplexed_socket_and_closes_a_single_one() {
        let (socket, inbox) = outbox(Bounds { frames: 4, bytes: 1 << 20, riding_bytes: 1 << 20 });
        socket.for_canvas(canvas("c1")).kick(Cut::Removed);
        let kicked = futures_util::FutureExt::now_or_never(inbox.kicked());
        assert_eq!(kicked, Some(Kick::Removed(vec![canvas("c1")])));
        assert!(socket.push(Message::text("still open")));
        assert_eq!(futures_util::FutureExt::now_or_never(inbox.kicked()), None, "told once");
        socket.kick(Cut::Removed);
        assert_eq!(futures_util::FutureExt::now_or_never(inbox.kicked()), Some(Kick::Cut(Cut::Removed)));
    }
}
