//! The writer's two inbound lanes. The **queue** takes logged messages, leaves and the jobs that must follow
//! them in order (resets, user messages, cleanup, barriers); under a flat-out sender it holds thousands of
//! messages. The **urgent** lane takes what must not wait behind that backlog: this instance's heartbeat (a
//! late one makes the others expire its users), joins' presence registrations, dead instances' expiry and
//! cursor batches. Each round the writer takes everything urgent first, then up to a batch of the queue.
//!
//! The writer is an OS thread; it waits on both lanes through a small current-thread runtime of its own.

use tokio::sync::mpsc;

use super::{Job, WriteRequest};
use crate::bus::{BusError, Publish};

/// The writer's receiving side.
pub struct Lanes {
    urgent: mpsc::Receiver<WriteRequest>,
    queue: mpsc::Receiver<WriteRequest>,
    /// Waits on both receivers from this thread.
    runtime: tokio::runtime::Runtime,
}

/// The sending side, held by the bus.
#[derive(Clone)]
pub struct LaneSenders {
    urgent: mpsc::Sender<WriteRequest>,
    queue: mpsc::Sender<WriteRequest>,
    queue_capacity: usize,
}

/// Urgent requests waiting at most: a join storm's registrations and the periodic jobs fit many times over.
const URGENT_CAPACITY: usize = 4096;

/// Both lanes; `queue` holds `--writer-queue` requests.
pub fn lanes(queue: usize) -> std::io::Result<(LaneSenders, Lanes)> {
    let (urgent_tx, urgent) = mpsc::channel(URGENT_CAPACITY);
    let (queue_tx, queue_rx) = mpsc::channel(queue);
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let senders = LaneSenders { urgent: urgent_tx, queue: queue_tx, queue_capacity: queue };
    Ok((senders, Lanes { urgent, queue: queue_rx, runtime }))
}

impl LaneSenders {
    /// Queues a request on one lane; waits while that lane is full (back-pressure).
    pub async fn send(&self, request: WriteRequest, urgent: bool) -> Result<(), BusError> {
        let lane = if urgent { &self.urgent } else { &self.queue };
        lane.send(request).await.map_err(|_| BusError::ShuttingDown)
    }

    /// Queues a publish on the queue if it has room now; gives it back if not.
    pub fn try_send(&self, publish: Publish) -> Result<(), crate::bus::TryPublish> {
        use tokio::sync::mpsc::error::TrySendError;
        match self.queue.try_send(WriteRequest::Publish(publish)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(WriteRequest::Publish(publish))) => {
                Err(crate::bus::TryPublish::Full(Box::new(publish)))
            }
            Err(_) => Err(crate::bus::TryPublish::Closed),
        }
    }

    /// Requests waiting in the queue (the urgent lane is never deep).
    pub fn queue_depth(&self) -> usize {
        self.queue_capacity - self.queue.capacity()
    }
}

impl Lanes {
    /// Waits for the next request, then takes every urgent one and up to `max_batch` publishes in all (jobs
    /// ride along and run after the batch's commit). `None` once every sender is gone.
    pub fn next_batch(&mut self, max_batch: usize) -> Option<(Vec<Publish>, Vec<Job>)> {
        let (urgent, queue) = (&mut self.urgent, &mut self.queue);
        let first = self.runtime.block_on(async {
            tokio::select! {
                biased;
                Some(request) = urgent.recv() => Some(request),
                Some(request) = queue.recv() => Some(request),
                else => None,
            }
        })?;
        let mut batch = (Vec::new(), Vec::new());
        add(&mut batch, first);
        while let Ok(request) = self.urgent.try_recv() {
            add(&mut batch, request);
        }
        // A lone message commits at once: nothing waits for more to arrive.
        while batch.0.len() < max_batch {
            let Ok(request) = self.queue.try_recv() else { break };
            add(&mut batch, request);
        }
        Some(batch)
    }

    /// Requests waiting in both lanes.
    pub fn depth(&self) -> usize {
        self.urgent.len() + self.queue.len()
    }

    /// Closes both lanes and returns whatever was still waiting, urgent first.
    pub fn close(&mut self) -> Vec<WriteRequest> {
        self.urgent.close();
        self.queue.close();
        let mut left = Vec::new();
        while let Ok(request) = self.urgent.try_recv() {
            left.push(request);
        }
        while let Ok(request) = self.queue.try_recv() {
            left.push(request);
        }
        left
    }
}

fn add((publishes, jobs): &mut (Vec<Publish>, Vec<Job>), request: WriteRequest) {
    match request {
        WriteRequest::Publish(publish) => publishes.push(publish),
        WriteRequest::Job(job) => jobs.push(job),
    }
}
