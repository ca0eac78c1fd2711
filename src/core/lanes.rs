//! The two inbound lanes of a store's committer (the SQLite writer thread, the Redis publisher task), and
//! how a round's batch is taken from them: group commit, written once for every store.
//!
//! The **queue** takes logged messages, leaves and the jobs that must follow them in order (barriers, and
//! on SQLite resets, user messages and cleanup); under a flat-out sender it holds thousands of messages.
//! The **urgent** lane takes what must not wait behind that backlog: joins' presence registrations, dead
//! instances' expiry, and on SQLite this instance's heartbeat and cursor batches. Each round takes
//! everything urgent first, then up to `--max-batch` publishes in all from the queue; a lone message is
//! committed at once, nothing waits for more to arrive.

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::{refuse_all, BusError, Publish, TryPublish};

/// Urgent requests waiting at most: a join storm's registrations and the periodic jobs fit many times over.
const URGENT_CAPACITY: usize = 4096;

/// What waits in a lane: a publish, or one of the store's own jobs (`J`). Publishes are nearly all of it,
/// so they are not boxed to make the rare job smaller.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Request<J> {
    Publish(Publish),
    Job(J),
}

/// The sending side, held by the store. Cheap to clone.
#[derive(Debug)]
pub struct LaneSenders<J> {
    urgent: mpsc::Sender<Request<J>>,
    queue: mpsc::Sender<Request<J>>,
    queue_capacity: usize,
}

impl<J> Clone for LaneSenders<J> {
    fn clone(&self) -> Self {
        LaneSenders { urgent: self.urgent.clone(), queue: self.queue.clone(), queue_capacity: self.queue_capacity }
    }
}

/// The committer's receiving side.
#[derive(Debug)]
pub struct Lanes<J> {
    urgent: mpsc::Receiver<Request<J>>,
    queue: mpsc::Receiver<Request<J>>,
}

/// What one round takes from the lanes: the publishes to commit together, then the jobs that came with
/// them, to run after the commit in arrival order.
#[derive(Debug)]
pub struct Taken<J> {
    pub publishes: Vec<Publish>,
    pub jobs: Vec<J>,
}

/// Both lanes; the queue holds `queue` requests (`--writer-queue`).
pub fn lanes<J>(queue: usize) -> (LaneSenders<J>, Lanes<J>) {
    let (urgent_tx, urgent) = mpsc::channel(URGENT_CAPACITY);
    let (queue_tx, queue_rx) = mpsc::channel(queue);
    (LaneSenders { urgent: urgent_tx, queue: queue_tx, queue_capacity: queue }, Lanes { urgent, queue: queue_rx })
}

impl<J> LaneSenders<J> {
    fn lane(&self, urgent: bool) -> &mpsc::Sender<Request<J>> {
        if urgent {
            &self.urgent
        } else {
            &self.queue
        }
    }

    /// Queues a publish on one lane; waits while that lane is full (back-pressure).
    pub async fn publish(&self, publish: Publish, urgent: bool) -> Result<(), BusError> {
        self.lane(urgent).send(Request::Publish(publish)).await.map_err(|_| BusError::ShuttingDown)
    }

    /// Queues a job on one lane; waits while that lane is full.
    pub async fn job(&self, job: J, urgent: bool) -> Result<(), BusError> {
        self.lane(urgent).send(Request::Job(job)).await.map_err(|_| BusError::ShuttingDown)
    }

    /// Queues a publish on the queue if it has room now; gives it back if not.
    pub fn try_publish(&self, publish: Publish) -> Result<(), TryPublish> {
        match self.queue.try_send(Request::Publish(publish)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(Request::Publish(publish))) => Err(TryPublish::Full(Box::new(publish))),
            Err(_) => Err(TryPublish::Closed),
        }
    }

    /// Requests waiting in the queue (the urgent lane is never deep).
    pub fn queue_depth(&self) -> usize {
        self.queue_capacity - self.queue.capacity()
    }

    /// How many requests the queue holds at most.
    pub fn queue_capacity(&self) -> usize {
        self.queue_capacity
    }
}

impl<J> Lanes<J> {
    /// Waits for the next request, then takes every urgent one and up to `max_batch` publishes in all.
    /// `None` once every sender is gone. Cancel-safe: its only wait is for the first request.
    pub async fn next_round(&mut self, max_batch: usize) -> Option<Taken<J>> {
        let first = tokio::select! {
            biased;
            Some(request) = self.urgent.recv() => request,
            Some(request) = self.queue.recv() => request,
            else => return None,
        };
        let mut round = Taken { publishes: Vec::new(), jobs: Vec::new() };
        round.add(first);
        while let Ok(request) = self.urgent.try_recv() {
            round.add(request);
        }
        while round.publishes.len() < max_batch {
            let Ok(request) = self.queue.try_recv() else { break };
            round.add(request);
        }
        Some(round)
    }

    /// Requests waiting in both lanes.
    pub fn depth(&self) -> usize {
        self.urgent.len() + self.queue.len()
    }

    /// Closes both lanes (the store is stopping): every publish still waiting is refused with
    /// `ShuttingDown`; the jobs still waiting are returned, urgent first, for the store to answer.
    pub fn close(&mut self) -> Vec<J> {
        self.urgent.close();
        self.queue.close();
        let mut left = Taken { publishes: Vec::new(), jobs: Vec::new() };
        while let Ok(request) = self.urgent.try_recv().or_else(|_| self.queue.try_recv()) {
            left.add(request);
        }
        refuse_all(left.publishes, BusError::ShuttingDown);
        left.jobs
    }
}

impl<J> Taken<J> {
    fn add(&mut self, request: Request<J>) {
        match request {
            Request::Publish(publish) => self.publishes.push(publish),
            Request::Job(job) => self.jobs.push(job),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;
    use tokio::sync::oneshot;

    use super::*;
    use crate::core::Origin;
    use crate::protocol::{CanvasId, LoggedMessage, UserId};

    /// A publish to `canvas`, and where its outcome arrives.
    fn publish(canvas: &str) -> (Publish, oneshot::Receiver<Result<crate::core::Committed, BusError>>) {
        let message = LoggedMessage::new("note", RawValue::from_string("1".into()).unwrap(), None).unwrap();
        let (reply, outcome) = oneshot::channel();
        let (canvas, from) = (CanvasId::parse(canvas).unwrap(), UserId::parse("u").unwrap());
        (Publish::message(canvas, message, from, Origin::Caller(reply)), outcome)
    }

    fn canvases<'a>(round: &'a Taken<&'static str>) -> Vec<&'a str> {
        round.publishes.iter().map(|p| p.canvas.as_str()).collect()
    }

    #[tokio::test]
    async fn a_round_takes_every_urgent_request_first_then_queued_publishes_up_to_the_limit() {
        let (senders, mut lanes) = lanes::<&'static str>(64);
        for i in 0..7 {
            senders.publish(publish(&format!("c{i}")).0, false).await.unwrap();
        }
        senders.job("heartbeat", true).await.unwrap();
        senders.publish(publish("urgent").0, true).await.unwrap();
        assert_eq!(senders.queue_depth(), 7);
        let round = lanes.next_round(3).await.unwrap();
        assert_eq!(canvases(&round), ["urgent", "c0", "c1"], "the urgent lane first, then the queue up to the limit");
        assert_eq!(round.jobs, ["heartbeat"]);
        let sizes = [lanes.next_round(3).await.unwrap(), lanes.next_round(3).await.unwrap()].map(|r| r.publishes.len());
        assert_eq!(sizes, [3, 2]);
        assert_eq!(lanes.depth(), 0);
        drop(senders);
        assert!(lanes.next_round(3).await.is_none(), "every sender gone: the committer stops");
    }

    #[tokio::test]
    async fn a_full_queue_gives_the_publish_back_and_closing_refuses_what_waits() {
        let (senders, mut lanes) = lanes::<&'static str>(1);
        let (first, mut refused) = publish("a");
        senders.try_publish(first).unwrap();
        let Err(TryPublish::Full(back)) = senders.try_publish(publish("b").0) else { panic!("the queue is full") };
        assert_eq!(back.canvas.as_str(), "b", "the same publish comes back, to wait for room");
        senders.job("barrier", true).await.unwrap();
        assert_eq!(lanes.close(), ["barrier"], "jobs go back to the store to answer");
        assert!(matches!(refused.try_recv().unwrap(), Err(BusError::ShuttingDown)), "a queued publish is refused");
        assert!(matches!(senders.try_publish(publish("c").0), Err(TryPublish::Closed)));
        assert!(senders.publish(publish("d").0, true).await.is_err());
    }
}
