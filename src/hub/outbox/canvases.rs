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

use super::{Cut, Ephemeral, Inbox, Outbox, Queue, FRAME_OVERHEAD, MAX_EPHEMERAL_BYTES};
use crate::protocol::CanvasId;

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
        queue.joining.iter().position(|(joining, _)| joining == canvas)
    }

    /// Holds an ephemeral frame for a joining canvas, within the frame bound; dropped past it (ephemeral
    /// frames never cut).
    pub(super) fn hold_ephemeral(&self, queue: &mut Queue, at: usize, frame: Message) -> Ephemeral {
        let cost = frame.len() + FRAME_OVERHEAD;
        let full = queue.logged.len() + queue.held >= self.channel.bounds.frames;
        if full || queue.logged_bytes + cost > self.channel.bounds.bytes || cost > MAX_EPHEMERAL_BYTES {
            return Ephemeral::Dropped;
        }
        queue.hold(at, frame, cost);
        Ephemeral::Queued
    }
}

impl Queue {
    pub(super) fn hold(&mut self, at: usize, frame: Message, cost: usize) {
        self.joining[at].1.push_back(frame);
        self.held += 1;
        self.logged_bytes += cost;
    }

    /// Takes the frames held for `canvas`, with their cost.
    fn take_held(&mut self, canvas: &CanvasId) -> (VecDeque<Message>, usize) {
        let Some(at) = self.joining.iter().position(|(joining, _)| joining == canvas) else {
            return (VecDeque::new(), 0);
        };
        let (_, frames) = self.joining.swap_remove(at);
        self.held -= frames.len();
        let cost = frames.iter().map(|frame| frame.len() + FRAME_OVERHEAD).sum();
        (frames, cost)
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
        if !queue.joining.iter().any(|(joining, _)| joining == canvas) {
            queue.joining.push((canvas.clone(), VecDeque::new()));
        }
    }

    /// `canvas`'s welcome is written: what waited for it joins the queue, behind what is there.
    pub fn release(&self, canvas: &CanvasId) {
        let mut queue = self.channel.queue();
        let (frames, _) = queue.take_held(canvas);
        if frames.is_empty() {
            return;
        }
        let was_empty = queue.is_empty();
        queue.logged.extend(frames);
        drop(queue);
        if was_empty {
            self.channel.ready.notify_one();
        }
    }

    /// `canvas`'s join failed: what waited for it is dropped.
    pub fn discard(&self, canvas: &CanvasId) {
        let mut queue = self.channel.queue();
        let (_, cost) = queue.take_held(canvas);
        queue.logged_bytes -= cost;
    }
}

#[cfg(test)]
mod tests {
    use super::super::{outbox, Bounds};
    use super::*;
    use crate::hub::ConnId;

    fn canvas(id: &str) -> CanvasId {
        CanvasId::parse(id).unwrap()
    }

    fn texts(frames: Vec<Message>) -> Vec<String> {
        frames.into_iter().map(|frame| frame.into_text().unwrap().to_string()).collect()
    }

    #[test]
    fn a_joining_canvas_waits_for_its_welcome_while_the_others_flow() {
        let (socket, inbox) = outbox(Bounds { frames: 16, bytes: 1 << 20 });
        let (c1, c2) = (socket.for_canvas(canvas("c1")), socket.for_canvas(canvas("c2")));
        inbox.hold(&canvas("c2"));
        assert!(c2.push(Message::text("c2-1")));
        assert_eq!(c2.push_ephemeral(ConnId::nil(), Message::text("c2-cursor")), Ephemeral::Queued);
        assert!(c1.push(Message::text("c1-1")));
        assert_eq!(texts(inbox.take_all()), ["c1-1"], "c2's frames wait for its welcome");
        inbox.release(&canvas("c2"));
        assert!(c2.push(Message::text("c2-2")));
        assert_eq!(texts(inbox.take_all()), ["c2-1", "c2-cursor", "c2-2"], "in the order they came");
        assert_eq!((c1.canvas(), socket.canvas()), (Some("c1"), None));
    }

    #[test]
    fn held_frames_count_against_the_sockets_bounds_and_a_failed_join_drops_them() {
        let (socket, inbox) = outbox(Bounds { frames: 2, bytes: 1 << 20 });
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
        let (socket, inbox) = outbox(Bounds { frames: 4, bytes: 1 << 20 });
        socket.for_canvas(canvas("c1")).kick(Cut::Removed);
        let kicked = futures_util::FutureExt::now_or_never(inbox.kicked());
        assert_eq!(kicked, Some(Kick::Removed(vec![canvas("c1")])));
        assert!(socket.push(Message::text("still open")));
        assert_eq!(futures_util::FutureExt::now_or_never(inbox.kicked()), None, "told once");
        socket.kick(Cut::Removed);
        assert_eq!(futures_util::FutureExt::now_or_never(inbox.kicked()), Some(Kick::Cut(Cut::Removed)));
    }
}
