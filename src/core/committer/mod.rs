//! The one committer of this process, written once for every store: it takes what waits in its two lanes
//! (`lanes.rs`: group commit, the urgent lane first), has the fold stage each canvas's publishes against the
//! canvas as it holds it (`round.rs`, `canvases.rs`), has the store apply them ([`Commit`]), then answers
//! every publisher and delivers what was logged to this process's rooms (`core::delivery`). It is the only
//! place a seq is given out for, and the only writer of a canvas's state.
//!
//! It runs where its store wants it: on the SQLite writer's own thread (whose store blocks on the file), or
//! as a task (Redis).
//!
//! A batch a store could not answer for (Redis gave no reply: it may or may not have applied it) is kept
//! and committed again, unchanged, before anything else; until then new rounds are refused with
//! `unavailable`, so nothing overtakes it.

mod canvases;
mod loads;
mod round;
mod setup;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

pub use self::canvases::{Canvases, SnapshotPolicy};
use self::loads::Loads;
use self::round::Round;
pub use self::setup::{Handle, Setup, Started};
use super::delivery;
use super::fold::canvas::{Canvas, Rules};
use super::fold::objects::Objects;
use super::lanes::{Lanes, Taken};
use super::upkeep::Leaving;
use super::{refuse_all, BusError, Origin, PresenceChange, Publish, Unavailable};
use crate::hub::{Entry, Hub, Member};
use crate::metrics::Metrics;
use crate::protocol::{reset_frame, CanvasId};
use crate::store::records::Expect;
use crate::store::Commit;

/// Backoff between tries of a batch whose reply never came: from the first to the last, doubling.
const RESEND: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(1));

/// A held canvas with object ops after its newest snapshot and none for this long is snapshotted at its head
/// ([`Canvases::quiet`]): a burst of edits ends with a snapshot, and the joins after it fold nothing.
const QUIET: Duration = Duration::from_secs(1);

/// What waits in the committer's lanes besides publishes.
#[derive(Debug)]
pub enum Job<J> {
    /// Starts a canvas's next epoch (`DELETE /api/v1/canvases/{canvas}`); replies with it.
    Reset { canvas: CanvasId, reply: oneshot::Sender<Result<String, BusError>> },
    /// Answered once everything queued before it is committed (or refused).
    Barrier(oneshot::Sender<()>),
    /// Refuse whatever is still queued, then stop.
    Stop(oneshot::Sender<()>),
    /// One of the store's own writes.
    Store(J),
}

/// A canvas's objects to snapshot, at (generation, seq).
#[derive(Debug)]
pub struct SnapshotDue {
    pub canvas: CanvasId,
    pub generation: u64,
    pub seq: u64,
    pub objects: Objects,
}

/// Fixed settings of the committer.
#[derive(Debug, Clone)]
pub struct Settings {
    pub rules: Rules,
    /// `--max-batch`: publishes committed together at most.
    pub max_batch: usize,
    /// Whether a commit's messages go to this process's rooms at once (else its store's reader brings them).
    pub local_broadcast: bool,
}

/// The committer, over a store's write side `W`.
pub struct Committer<W: Commit> {
    writer: W,
    canvases: Canvases,
    hub: Arc<Hub>,
    metrics: Metrics,
    settings: Settings,
    /// Where due snapshots go: a task that serializes and stores them, off this loop.
    snapshots: mpsc::Sender<SnapshotDue>,
    /// Where disconnects the store did not take go, for the next heartbeat to try again.
    leaving: Arc<Leaving>,
    /// Canvases being read for the fold, and the publishes waiting for them.
    loads: Loads,
    /// The next round's number.
    next_round: u64,
    /// A round its store could not answer for, committed again until it does, and when.
    unresolved: Option<(Round, Instant, Duration)>,
}

impl<W: Commit> Committer<W> {
    /// The committer over `writer`, with what `setup` made from the config (its lanes are the caller's).
    pub(super) fn new(writer: W, setup: Setup) -> Self {
        let Setup { hub, metrics, settings, canvases, snapshots, leaving, runtime, queue } = setup;
        let loads = Loads::new(writer.reader(), runtime, queue);
        Committer {
            writer,
            canvases,
            hub,
            metrics,
            settings,
            snapshots,
            leaving,
            loads,
            next_round: 1,
            unresolved: None,
        }
    }

    /// Runs until a `Stop` job or until every sender is gone. A round whose store could not answer is
    /// tried again when its backoff is up, before anything else; then canvases loaded, then the lanes.
    pub async fn run(mut self, mut lanes: Lanes<Job<W::Job>>) {
        let mut quiet = tokio::time::interval(QUIET);
        quiet.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let retry_at = self.unresolved.as_ref().map(|(_, at, _)| tokio::time::Instant::from_std(*at));
            let taken = tokio::select! {
                biased;
                () = tokio::time::sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now)), if retry_at.is_some() => {
                    self.resolve().await;
                    continue;
                }
                finished = self.loads.next(), if self.loads.pending() => {
                    self.loaded(finished).await;
                    continue;
                }
                _ = quiet.tick() => {
                    for (canvas, state) in self.canvases.quiet(Instant::now(), QUIET) {
                        self.queue_snapshot(canvas, state);
                    }
                    continue;
                }
                taken = lanes.next_round(self.settings.max_batch), if !self.loads.full() => taken,
            };
            let Some(Taken { publishes, jobs }) = taken else {
                return refuse_all(self.loads.drain(), BusError::ShuttingDown);
            };
            self.metrics.writer_queue_depth.set(lanes.depth() as f64);
            if !publishes.is_empty() {
                self.commit(publishes).await;
            }
            let mut jobs = jobs.into_iter();
            while let Some(job) = jobs.next() {
                if let Job::Stop(done) = job {
                    self.stop(&mut lanes, jobs.collect()).await;
                    let _ = done.send(());
                    return;
                }
                self.run_job(job).await;
            }
        }
    }

    /// Whether the committer holds the canvas, with its objects if `with_objects`.
    #[cfg(test)]
    pub(crate) fn holds(&self, canvas: &CanvasId, with_objects: bool) -> bool {
        self.canvases.holds(canvas, with_objects)
    }

    /// The store's write side (tests reach the file through it).
    #[cfg(test)]
    pub(crate) fn writer_mut(&mut self) -> &mut W {
        &mut self.writer
    }

    async fn run_job(&mut self, job: Job<W::Job>) {
        match job {
            Job::Reset { canvas, reply } => {
                // What was queued for the canvas before the reset is committed before it: a round the store
                // has not answered, and what waits for the canvas's load.
                self.resolve().await;
                if self.unresolved.is_some() {
                    return drop(reply.send(Err(Unavailable::Unresolved.into())));
                }
                while self.loads.is_loading(&canvas) {
                    let finished = self.loads.next().await;
                    self.loaded(finished).await;
                }
                let _ = reply.send(self.reset(&canvas).await);
            }
            Job::Barrier(done) => {
                self.finish_loads().await;
                let _ = done.send(());
            }
            Job::Stop(done) => drop(done.send(())),
            Job::Store(job) => self.writer.run(job).await,
        }
    }

    /// Commits one round: the fold stages it, the store applies it, everyone involved is told.
    pub(crate) async fn commit(&mut self, publishes: Vec<Publish>) {
        if self.unresolved.is_some() {
            self.resolve().await;
        }
        if self.unresolved.is_some() {
            self.metrics.commit_errors.increment(1);
            return refuse_all(publishes, Unavailable::Unresolved.into());
        }
        let publishes = self.hold_for_loads(publishes);
        if publishes.is_empty() {
            return;
        }
        let mut round = Round::new(self.next_round, publishes, self.settings.rules.clone(), self.hub.clone());
        self.next_round += 1;
        let canvases = &mut self.canvases;
        round.stage(|canvas| canvases.get(canvas));
        self.apply(round, Instant::now()).await;
    }

    /// Has the store apply a staged round, then tells everyone.
    async fn apply(&mut self, mut round: Round, started: Instant) {
        match self.writer.commit(&mut round).await {
            Ok(now) => self.answer(round, now, started),
            Err(BusError::Unavailable(Unavailable::Unresolved)) => {
                tracing::warn!(
                    messages = round.publishes.len(),
                    "no answer to a batch the store may have applied; trying it again"
                );
                for group in &round.groups {
                    self.canvases.forget(&group.canvas);
                }
                self.unresolved = Some((round, Instant::now() + RESEND.0, RESEND.0));
            }
            Err(error) => {
                round.forget_acks();
                self.refuse(round, error);
            }
        }
    }

    /// Commits the unresolved round again; its publishers hear once the store answers.
    async fn resolve(&mut self) {
        let Some((mut round, _, backoff)) = self.unresolved.take() else { return };
        match self.writer.commit(&mut round).await {
            Ok(now) => {
                tracing::info!(messages = round.publishes.len(), "the store answered a batch tried again");
                self.answer(round, now, Instant::now());
            }
            Err(BusError::Unavailable(Unavailable::Unresolved)) => {
                let backoff = (backoff * 2).min(RESEND.1);
                self.unresolved = Some((round, Instant::now() + backoff, backoff));
            }
            Err(error) => {
                round.forget_acks();
                self.refuse(round, error);
            }
        }
    }

    /// A round the store applied (all of it, or all but canvases it could not read or that kept moving):
    /// the canvases as it left them are held, publishers are answered, local rooms get what was logged, and
    /// due snapshots are handed on.
    fn answer(&mut self, round: Round, now: i64, started: Instant) {
        for group in &round.groups {
            let Some(placed) = &group.placed else {
                self.canvases.forget(&group.canvas); // broken, or refused whole: read again when needed
                continue;
            };
            if group.staging.expect == Expect::Append {
                self.canvases.appended(&group.canvas, &placed.head);
                continue;
            }
            let mut after = group.staging.after.clone();
            after.head = placed.head;
            let staging = &group.staging;
            let made: u64 = staging.made.iter().map(|(_, made)| made.data.get().len() as u64).sum();
            let ops = staging.entries.iter().filter(|(_, changes)| *changes);
            let ops = ops.filter(|(i, _)| !matches!(round.publishes[group.at[*i]].origin, Origin::Restore { .. }));
            let ops: Vec<usize> = ops.map(|(i, _)| group.at[*i]).collect();
            let bytes = made + ops.iter().map(|&at| round.publishes[at].data.get().len() as u64).sum::<u64>();
            let count = (ops.len() + staging.made.len()) as u64;
            if let Some(due) = self.canvases.after_commit(&group.canvas, after, count, bytes) {
                self.queue_snapshot(group.canvas.clone(), due);
            }
        }
        let outcomes = round.outcomes();
        for (publish, outcome) in round.publishes.iter().zip(&outcomes) {
            if outcome.is_err() {
                self.leave_later(publish);
            }
        }
        delivery::record(&self.metrics, &outcomes, started);
        self.metrics.commit_conflicts.increment(round.conflicts());
        let delivered =
            delivery::deliver(&self.hub, &self.metrics, round.publishes, outcomes, now, self.settings.local_broadcast);
        self.writer.delivered(delivered);
    }

    /// Hands a canvas's objects at its head to the snapshot writer; when its queue is full, the canvas's next
    /// commit (or its quiet) asks again.
    fn queue_snapshot(&mut self, canvas: CanvasId, state: Canvas) {
        let due = SnapshotDue {
            canvas: canvas.clone(),
            generation: state.head.generation,
            seq: state.head.seq,
            objects: state.objects,
        };
        match self.snapshots.try_send(due) {
            Ok(()) => self.canvases.snapshot_queued(&canvas),
            Err(_) => tracing::debug!(%canvas, "snapshot queue full; asked again later"),
        }
    }

    /// A round the store did not apply: `unavailable` (or the error) to its publishers; its disconnects are
    /// tried again at the next heartbeat, so presence keeps no connection that is gone.
    fn refuse(&mut self, round: Round, error: BusError) {
        self.metrics.commit_errors.increment(1);
        tracing::error!(%error, messages = round.publishes.len(), "a commit failed; senders get `unavailable`");
        for group in &round.groups {
            self.canvases.forget(&group.canvas);
        }
        for publish in &round.publishes {
            self.leave_later(publish);
        }
        refuse_all(round.publishes, error);
    }

    /// A disconnect the store did not take goes to the next heartbeat, to be tried again: presence keeps
    /// no connection that is gone.
    fn leave_later(&self, publish: &Publish) {
        if let Origin::Presence { change: PresenceChange::Disconnect, conn, name, opened, .. } = &publish.origin {
            let (canvas, user, name) = (publish.canvas.clone(), publish.from.clone(), name.clone());
            self.leaving.later(Member { canvas, conn: *conn, user, name, opened: *opened });
        }
    }

    /// `Job::Reset`: the canvas's next generation, its marker delivered to the local room; the new epoch.
    async fn reset(&mut self, canvas: &CanvasId) -> Result<String, BusError> {
        self.canvases.forget(canvas);
        let reset = self.writer.reset(canvas).await?;
        if self.settings.local_broadcast {
            if let Some(room) = self.hub.room(canvas) {
                let frame = tokio_tungstenite::tungstenite::Message::text(reset_frame(canvas.as_str(), &reset.epoch));
                let entry = Entry { seq: 0, generation: reset.generation, id: reset.id, frame, restore: false };
                room.lock().offer(entry, &self.metrics);
            }
        }
        self.writer.delivered(delivery::AfterDelivery { ids: Some((reset.id, reset.id)), ..Default::default() });
        Ok(reset.epoch)
    }

    /// Clean stop: a round still unresolved gets one last try; whatever is still queued is refused (the
    /// server is going away); the barriers and stops among the jobs left (`later`: the ones behind the stop
    /// in its own round) are answered, and the store's own jobs still run.
    async fn stop(&mut self, lanes: &mut Lanes<Job<W::Job>>, later: Vec<Job<W::Job>>) {
        self.resolve().await;
        if let Some((round, ..)) = self.unresolved.take() {
            tracing::warn!(messages = round.publishes.len(), "stopping with a batch the store never answered");
        }
        let waited = self.loads.drain();
        waited.iter().for_each(|publish| self.leave_later(publish));
        refuse_all(waited, BusError::ShuttingDown);
        for job in later.into_iter().chain(lanes.close()) {
            match job {
                Job::Barrier(done) | Job::Stop(done) => drop(done.send(())),
                Job::Reset { reply, .. } => drop(reply.send(Err(BusError::ShuttingDown))),
                Job::Store(job) => self.writer.run(job).await,
            }
        }
    }
}
