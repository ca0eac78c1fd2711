//! The one publisher task of this process: takes whatever publishes are waiting (group commit; the urgent
//! lane first, as on SQLite), commits them in one `publish.lua` call (seqs, stream appends, object fold and
//! presence, atomically on the Redis side), and only then lets them out: acks and local delivery through
//! the hub, results to API callers. As with the SQLite writer, an ack means Redis applied the message (see
//! the README on what Redis persistence makes of that).
//!
//! **No answer is not "no".** A batch whose reply never came (a timeout, a dropped connection) may have
//! been applied. It stays *unresolved* and is sent again, unchanged, until Redis answers: batches are
//! numbered per instance and the script keeps the reply of the last one, so a second send is answered with
//! the first's outcome instead of logging anything twice. Its publishers wait for that answer; batches that
//! come meanwhile are refused with `unavailable` without being sent (so nothing overtakes the unresolved
//! one), as is a batch Redis answered with an error or that could not be sent at all.
//!
//! A batch is for the store epoch this process knew when it was built. If Redis has another by then (it came
//! back empty, or was rotated after a rollback), the script applies nothing and answers with the new epoch:
//! local clients are cut to reload and the batch is refused with `unavailable`, so a batch sent again is never
//! logged into a log its senders never saw (a publish still queued when the new epoch is learnt is not).

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::{ErrorKind, RedisError, Value};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::batch::{encode, parse, Reply};
use super::link::{Leaving, Link};
use super::scripts::PUBLISH;
use crate::bus::committed;
use crate::bus::lanes::{Lanes, Round};
use crate::bus::{refuse_all, BusError, Origin, Publish, Unavailable};
use crate::clock::now_ms;
use crate::hub::Hub;
use crate::metrics::Metrics;

/// Backoff between sends of a batch whose reply did not come: from the first to the last, doubling.
const RESEND: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(1));

/// The publisher's own work, beside publishes.
#[derive(Debug)]
pub enum Job {
    /// Answered once everything queued before it is committed or refused.
    Barrier(oneshot::Sender<()>),
    /// Refuse whatever is still queued, then stop.
    Stop(oneshot::Sender<()>),
}

pub struct Publisher {
    pub conn: ConnectionManager,
    pub hub: Arc<Hub>,
    pub link: Arc<Link>,
    pub metrics: Metrics,
    pub instance_id: String,
    pub ttl_ms: i64,
    /// How long the webhook's undelivered messages are kept (ms; 0: no webhook), for `publish.lua`'s trim.
    pub retention_ms: i64,
    pub max_batch: usize,
    pub max_canvas_state: usize,
    pub local_broadcast: bool,
    /// The number of this instance's next batch (see the module doc).
    pub next_batch: u64,
    /// A batch sent whose reply never came, sent again until Redis answers it.
    pub unresolved: Option<Unresolved>,
}

/// A batch Redis may or may not have applied.
pub struct Unresolved {
    invocation: redis::ScriptInvocation<'static>,
    batch: Vec<Publish>,
    started: Instant,
    /// When to send it again, and the wait after that.
    retry_at: tokio::time::Instant,
    backoff: Duration,
}

impl Publisher {
    /// Runs until a `Stop` job or until every sender is gone. Each round takes what waits in the urgent lane,
    /// then up to `--max-batch` publishes from the queue (see `bus/lanes.rs`), and commits them in one call.
    /// An unresolved batch is sent again when its backoff is up, before anything else.
    pub async fn run(mut self, mut lanes: Lanes<Job>) {
        loop {
            let retry_at = self.unresolved.as_ref().map(|u| u.retry_at);
            let round = tokio::select! {
                biased;
                () = tokio::time::sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now)), if retry_at.is_some() => {
                    self.resolve().await;
                    continue;
                }
                round = lanes.next_round(self.max_batch) => round,
            };
            let Some(Round { publishes, jobs }) = round else { return };
            self.metrics.writer_queue_depth.set(lanes.depth() as f64);
            self.commit(publishes).await;
            let mut jobs = jobs.into_iter();
            while let Some(job) = jobs.next() {
                match job {
                    Job::Barrier(done) => drop(done.send(())),
                    Job::Stop(done) => {
                        self.stop(&mut lanes).await;
                        // Whatever came in the same round after the stop is answered as if it had been
                        // drained: everything before it is committed.
                        for Job::Barrier(later) | Job::Stop(later) in jobs {
                            let _ = later.send(());
                        }
                        let _ = done.send(());
                        return;
                    }
                }
            }
        }
    }

    /// Refuses whatever is still queued (the server is going away). A batch still unresolved gets one last
    /// try; if Redis does not answer it, its senders hear nothing (as if this instance had been killed).
    async fn stop(&mut self, lanes: &mut Lanes<Job>) {
        self.resolve().await;
        if let Some(unresolved) = self.unresolved.take() {
            tracing::warn!(messages = unresolved.batch.len(), "stopping with a batch Redis never answered");
        }
        for job in lanes.close() {
            let (Job::Barrier(done) | Job::Stop(done)) = job;
            let _ = done.send(());
        }
    }

    async fn commit(&mut self, batch: Vec<Publish>) {
        if batch.is_empty() {
            return;
        }
        if self.unresolved.is_some() {
            self.resolve().await;
        }
        if self.unresolved.is_some() {
            return self.refuse(batch, Unavailable::Unresolved);
        }
        let number = self.next_batch;
        self.next_batch += 1;
        let mut invocation = PUBLISH.prepare_invoke();
        invocation
            .arg(self.ttl_ms)
            .arg(&self.instance_id)
            .arg(Uuid::new_v4().to_string())
            .arg(number)
            .arg(self.max_canvas_state)
            .arg(self.link.epoch().unwrap_or_default())
            .arg(self.retention_ms);
        let batch: Vec<Publish> = batch
            .into_iter()
            .filter_map(|publish| match encode(&publish, &mut invocation) {
                Ok(()) => Some(publish),
                // Not seen in practice (the protocol checked the data is an object); the refusal then
                // reaches its sender before the batch's earlier acks, which wait for Redis.
                Err(refusal) => {
                    publish.refuse(BusError::Refused(refusal));
                    None
                }
            })
            .collect();
        if batch.is_empty() {
            return;
        }
        let started = Instant::now();
        match invocation.invoke_async::<Value>(&mut self.conn).await {
            Ok(reply) => self.finish(batch, &reply, started),
            Err(error) if answered(&error) || error.is_connection_refusal() => {
                self.refuse(batch, Unavailable::Redis(error.to_string()))
            }
            Err(error) => {
                tracing::warn!(%error, messages = batch.len(), "no answer to a batch Redis may have applied; sending it again");
                self.link.last_error.set(now_ms(), &format!("Redis: {error}"));
                let retry_at = tokio::time::Instant::now() + RESEND.0;
                self.unresolved = Some(Unresolved { invocation, batch, started, retry_at, backoff: RESEND.0 });
            }
        }
    }

    /// Sends the unresolved batch again; its publishers hear the outcome once Redis answers.
    async fn resolve(&mut self) {
        let Some(mut unresolved) = self.unresolved.take() else { return };
        match unresolved.invocation.invoke_async::<Value>(&mut self.conn).await {
            Ok(reply) => {
                tracing::info!(messages = unresolved.batch.len(), "Redis answered a batch sent again");
                self.finish(unresolved.batch, &reply, unresolved.started);
            }
            Err(error) => {
                // Even an error reply proves nothing here (a script refused for want of memory is refused
                // before it could find its batch already applied): only a reply resolves it.
                self.link.last_error.set(now_ms(), &format!("Redis: {error}"));
                unresolved.backoff = (unresolved.backoff * 2).min(RESEND.1);
                unresolved.retry_at = tokio::time::Instant::now() + unresolved.backoff;
                self.unresolved = Some(unresolved);
            }
        }
    }

    /// A batch Redis answered: the reply's outcomes go to its publishers and local rooms; if the store had
    /// another epoch, nothing was applied, and the batch is refused once local clients are cut.
    fn finish(&mut self, batch: Vec<Publish>, reply: &Value, started: Instant) {
        let (epoch, writes, now, outcomes) = match parse(reply, &batch, self.max_canvas_state) {
            Some(Reply::Applied { epoch, writes, now, outcomes }) => (epoch, writes, now, outcomes),
            Some(Reply::OtherEpoch(epoch)) => {
                self.link.observe_epoch(&epoch, &self.hub);
                return self.refuse(batch, Unavailable::NewEpoch);
            }
            None => {
                tracing::error!(?reply, "publish.lua answered in a shape it never sends");
                return self.refuse(batch, Unavailable::UnexpectedReply("a batch"));
            }
        };
        self.link.observe_epoch(&epoch, &self.hub);
        self.link.saw_writes(writes);
        self.link.last_error.clear();
        committed::record(&self.metrics, &outcomes, started);
        // The stream reader may have delivered some of these seqs already: then it acked them from the entry.
        committed::expect_acks(&self.hub, &batch, &outcomes);
        committed::deliver(&self.hub, &self.metrics, batch, outcomes, now, self.local_broadcast);
    }

    /// A batch Redis did not apply: `unavailable` to its publishers; its disconnects are retried later.
    fn refuse(&mut self, batch: Vec<Publish>, reason: Unavailable) {
        self.metrics.commit_errors.increment(1);
        tracing::error!(%reason, messages = batch.len(), "Redis did not take a batch; senders get `unavailable`");
        self.link.last_error.set(now_ms(), &reason.to_string());
        for publish in &batch {
            if let (Origin::Presence { conn, name, .. }, false) = (&publish.origin, publish.is_connect()) {
                let (canvas, user) = (publish.canvas.clone(), publish.from.clone());
                self.link.retry_later(Leaving { canvas, user, name: name.clone(), conn: *conn });
            }
        }
        refuse_all(batch, BusError::Unavailable(reason));
    }
}

/// Whether Redis itself answered with this error (nothing was applied: the script checks its arguments
/// before writing and is refused whole when Redis is out of memory), as opposed to no answer at all.
fn answered(error: &RedisError) -> bool {
    matches!(error.kind(), ErrorKind::Server(_) | ErrorKind::Extension)
}
