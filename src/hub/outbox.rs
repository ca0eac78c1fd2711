//! One client's bounded outbound queue. The hub's side ([`Outbox`]) pushes without ever waiting; the session's
//! side ([`Inbox`]) awaits frames and writes them to the socket.
//!
//! A `VecDeque` behind a mutex rather than a tokio `mpsc` channel, for memory: an idle socket should hold
//! almost nothing, but a channel keeps the blocks it grew into during a burst (every join on a busy canvas
//! reaches every socket already there). This queue gives its buffer back whenever the session drains it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

/// A drained queue keeps a buffer this big; a larger one is released.
const KEEP_CAPACITY: usize = 8;

/// The sending side of one client's bounded outbound queue.
#[derive(Clone, Debug)]
pub struct Outbox {
    shared: Arc<Shared>,
}

/// The session's side of an [`Outbox`]. Dropping it closes the queue: pushes then report the client gone.
#[derive(Debug)]
pub struct Inbox {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    capacity: usize,
    /// Woken when a frame is queued into an empty queue.
    ready: Notify,
    /// Woken when the queue overflowed: the session closes the socket with 4009 at once.
    kicked: Notify,
}

#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<Message>,
    /// The session is gone.
    closed: bool,
}

/// A bounded outbound queue for one client.
pub fn outbox(capacity: usize) -> (Outbox, Inbox) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue::default()),
        capacity: capacity.max(1),
        ready: Notify::new(),
        kicked: Notify::new(),
    });
    (Outbox { shared: shared.clone() }, Inbox { shared })
}

/// What became of a pushed frame.
enum Pushed {
    Queued,
    Full,
    Closed,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn push(&self, frame: Message) -> Pushed {
        let mut queue = self.queue();
        if queue.closed {
            return Pushed::Closed;
        }
        if queue.frames.len() >= self.capacity {
            return Pushed::Full;
        }
        let was_empty = queue.frames.is_empty();
        queue.frames.push_back(frame);
        drop(queue);
        if was_empty {
            self.ready.notify_one();
        }
        Pushed::Queued
    }
}

impl Outbox {
    /// Queues a frame without waiting. A full queue means the client is too slow: it is told to close
    /// with 4009 and `false` is returned so the caller drops it from its room. This is the one place the
    /// slow-client policy lives.
    pub fn push(&self, frame: Message) -> bool {
        match self.shared.push(frame) {
            Pushed::Queued => true,
            Pushed::Full => {
                self.shared.kicked.notify_one();
                false
            }
            Pushed::Closed => false,
        }
    }

    /// Queues a frame that may be dropped (a cursor): a full queue just misses it, the client is not cut.
    pub fn push_lossy(&self, frame: Message) {
        self.shared.push(frame);
    }

    /// Tells the session to close with 4009 now.
    pub fn kick(&self) {
        self.shared.kicked.notify_one();
    }
}

impl Inbox {
    /// The next queued frame, waiting for one if the queue is empty.
    pub async fn recv(&self) -> Message {
        loop {
            if let Some(frame) = self.try_recv() {
                return frame;
            }
            // A push between `try_recv` and here stored a permit, so this cannot miss it.
            self.shared.ready.notified().await;
        }
    }

    /// The next queued frame, if any. Draining the queue releases a buffer grown by a burst.
    pub fn try_recv(&self) -> Option<Message> {
        let mut queue = self.shared.queue();
        let frame = queue.frames.pop_front();
        if queue.frames.is_empty() && queue.frames.capacity() > KEEP_CAPACITY {
            queue.frames = VecDeque::new();
        }
        frame
    }

    /// Completes when the hub asked for this client to be cut (its queue overflowed).
    pub async fn kicked(&self) {
        self.shared.kicked.notified().await
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let mut queue = self.shared.queue();
        queue.closed = true;
        queue.frames = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[test]
    fn a_full_queue_kicks_and_a_lossy_push_does_not() {
        let (outbox, inbox) = outbox(2);
        assert!(outbox.push(Message::text("1")));
        outbox.push_lossy(Message::text("2"));
        outbox.push_lossy(Message::text("dropped"));
        assert!(inbox.kicked().now_or_never().is_none(), "a lossy overflow does not cut the client");
        assert!(!outbox.push(Message::text("3")));
        assert!(inbox.kicked().now_or_never().is_some());
        assert_eq!(inbox.try_recv(), Some(Message::text("1")));
        assert_eq!(inbox.try_recv(), Some(Message::text("2")));
        assert_eq!(inbox.try_recv(), None);
    }

    #[test]
    fn draining_releases_the_buffer_a_burst_grew() {
        let (outbox, inbox) = outbox(1000);
        for i in 0..500 {
            assert!(outbox.push(Message::text(i.to_string())));
        }
        assert!(inbox.shared.queue().frames.capacity() >= 500);
        while inbox.try_recv().is_some() {}
        assert!(inbox.shared.queue().frames.capacity() <= KEEP_CAPACITY);
    }

    #[tokio::test]
    async fn recv_wakes_on_a_push_from_another_task() {
        let (outbox, inbox) = outbox(4);
        let pusher = tokio::spawn(async move {
            tokio::task::yield_now().await;
            outbox.push(Message::text("late"))
        });
        assert_eq!(inbox.recv().await, Message::text("late"));
        assert!(pusher.await.unwrap());
    }

    #[test]
    fn pushes_after_the_session_is_gone_report_it() {
        let (outbox, inbox) = outbox(4);
        drop(inbox);
        assert!(!outbox.push(Message::text("x")));
    }
}
