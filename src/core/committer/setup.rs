//! How a store starts its committer ([`Setup`]: what the bus makes from the config, besides the store's
//! write side), and the bus's side of the committer's lanes whatever the store ([`Handle`]).

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use super::{Canvases, Committer, Job, Settings, SnapshotDue, SnapshotPolicy};
use crate::config::Config;
use crate::core::fold::canvas::Rules;
use crate::core::lanes::{self, LaneSenders, Lanes};
use crate::core::upkeep::Leaving;
use crate::core::{BusError, Publish, TryPublish};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::protocol::CanvasId;
use crate::store::Commit;

/// What a store needs to start its committer, besides its write side: made by the bus from the config.
pub struct Setup {
    pub(super) hub: Arc<Hub>,
    pub(super) metrics: Metrics,
    pub(super) settings: Settings,
    pub(super) canvases: Canvases,
    pub(super) snapshots: mpsc::Sender<SnapshotDue>,
    pub(super) leaving: Arc<Leaving>,
    /// `--writer-queue`: publishes the queue holds.
    pub(super) queue: usize,
    /// The process's runtime, where the committer's loads of canvases run.
    pub(super) runtime: tokio::runtime::Handle,
}

impl Setup {
    pub fn new(
        config: &Config,
        instance_id: &str,
        hub: Arc<Hub>,
        metrics: Metrics,
        snapshots: mpsc::Sender<SnapshotDue>,
        leaving: Arc<Leaving>,
    ) -> Setup {
        // An empty canvas is forgotten once its log is gone for clients and for the webhook.
        let (forget_after, with_history) = (config.forget_after(), config.forget_after_history());
        let rules = Rules {
            max_state: config.max_canvas_state,
            instance: Arc::from(instance_id),
            forget_after: forget_after.as_millis() as u64,
            forget_after_history: with_history.as_millis() as u64,
        };
        let settings = Settings { rules, max_batch: config.max_batch, local_broadcast: config.local_broadcast };
        let budget = config.state_budget() as u64;
        let policy = SnapshotPolicy { every_ops: config.snapshot_every, every_bytes: config.snapshot_bytes as u64 };
        let canvases = Canvases::new(budget, policy);
        let runtime = tokio::runtime::Handle::current();
        Setup { hub, metrics, settings, canvases, snapshots, leaving, queue: config.writer_queue, runtime }
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The committer over `writer`, the lanes it reads, and the handle the bus queues on.
    pub fn start<W: Commit>(self, writer: W) -> Started<W> {
        let (senders, lanes) = lanes::lanes(self.queue);
        let committer = Committer::new(writer, self);
        Started { committer, lanes, senders }
    }
}

/// A committer ready to run: the store runs it (on a task or a thread of its own) over its lanes, and
/// gives the bus the senders.
pub struct Started<W: Commit> {
    pub committer: Committer<W>,
    pub lanes: Lanes<Job<W::Job>>,
    pub senders: LaneSenders<Job<W::Job>>,
}

/// The bus's side of the committer's lanes, whatever the store.
#[async_trait]
pub trait Handle: Send + Sync {
    /// Queues a publish on one lane; waits while that lane is full (back-pressure).
    async fn publish(&self, publish: Publish, urgent: bool) -> Result<(), BusError>;
    /// Queues a publish if the queue has room now; gives it back if not.
    fn try_publish(&self, publish: Publish) -> Result<(), TryPublish>;
    /// Starts a canvas's next epoch; returns it.
    async fn reset(&self, canvas: CanvasId) -> Result<String, BusError>;
    /// Returns once everything queued before the call is committed (or refused).
    async fn flush(&self) -> Result<(), BusError>;
    /// Stops the committer: whatever is still queued is refused.
    async fn stop(&self);
    /// Publishes waiting in the queue, and how many fit.
    fn depth(&self) -> usize;
    fn capacity(&self) -> usize;
}

#[async_trait]
impl<J: Send + std::fmt::Debug + 'static> Handle for LaneSenders<Job<J>> {
    async fn publish(&self, publish: Publish, urgent: bool) -> Result<(), BusError> {
        LaneSenders::publish(self, publish, urgent).await
    }

    fn try_publish(&self, publish: Publish) -> Result<(), TryPublish> {
        LaneSenders::try_publish(self, publish)
    }

    async fn reset(&self, canvas: CanvasId) -> Result<String, BusError> {
        let (reply, epoch) = oneshot::channel();
        self.job(Job::Reset { canvas, reply }, false).await?;
        epoch.await.map_err(|_| BusError::ShuttingDown)?
    }

    async fn flush(&self) -> Result<(), BusError> {
        let (done, flushed) = oneshot::channel();
        self.job(Job::Barrier(done), false).await?;
        flushed.await.map_err(|_| BusError::ShuttingDown)
    }

    async fn stop(&self) {
        let (done, stopped) = oneshot::channel();
        if self.job(Job::Stop(done), false).await.is_ok() {
            let _ = stopped.await;
        }
    }

    fn depth(&self) -> usize {
        self.queue_depth()
    }

    fn capacity(&self) -> usize {
        self.queue_capacity()
    }
}
