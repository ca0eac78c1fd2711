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

use super::entry::{array, encode_optional, int, text};
use super::link::{Leaving, Link};
use super::scripts::PUBLISH;
use crate::bus::committed::{self, Logged, Outcome};
use crate::bus::lanes::{Lanes, Round};
use crate::bus::{refuse_all, BusError, Origin, PresenceChange, Publish, Unavailable};
use crate::clock::now_ms;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::object_ops::{self, ObjectOp, Refusal};
use crate::protocol::to_json;

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
            .arg(self.link.epoch().unwrap_or_default());
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

/// Adds one publish's arguments (see the header of `publish.lua`), or says why it cannot be sent, adding
/// nothing.
fn encode(publish: &Publish, invocation: &mut redis::ScriptInvocation<'_>) -> Result<(), Refusal> {
    let (op, conn, reference, name) = match &publish.origin {
        Origin::Presence { change, conn, name, .. } => {
            let (op, dead_after) = match change {
                PresenceChange::Connect => ("connect", String::new()),
                PresenceChange::Disconnect => ("disconnect", String::new()),
                PresenceChange::Expire { dead_after_ms } => ("expire", dead_after_ms.to_string()),
            };
            (op, conn.to_string(), dead_after, encode_optional(name.as_deref()))
        }
        Origin::Socket { conn, reference, .. } => {
            ("log", conn.to_string(), encode_optional(reference.as_deref()), String::new())
        }
        Origin::Caller(_) => ("log", String::new(), String::new(), String::new()),
    };
    let (op, id) = match &publish.object {
        Some(ObjectOp::Create { id, .. }) => ("create", id.as_str()),
        Some(ObjectOp::Update { id, .. }) => ("update", id.as_str()),
        Some(ObjectOp::Delete { id }) => ("delete", id.as_str()),
        None => (op, ""),
    };
    // The op's top-level fields, each name as JSON and each value as the exact JSON text it arrived as: an
    // update's as the protocol read them; a create's read here, because this store keeps each object as a
    // hash of its fields (the protocol reads only the id of a create). Deletes have none.
    let data = publish.data.get();
    let create_fields;
    let fields = match &publish.object {
        Some(ObjectOp::Create { id }) => {
            // The protocol checked that the data is a JSON object; should that ever not hold, the create is
            // refused rather than stored with no fields.
            let unreadable =
                |error: serde_json::Error| Refusal::Unreadable { id: id.clone(), reason: error.to_string() };
            create_fields = object_ops::fields(data).map_err(unreadable)?;
            &create_fields[..]
        }
        Some(op) => op.fields(),
        None => &[],
    };
    invocation
        .arg(op)
        .arg(publish.canvas.as_str())
        .arg(publish.kind.as_str())
        .arg(publish.from.as_str())
        .arg(publish.data.get())
        .arg(conn)
        .arg(reference)
        .arg(name)
        .arg(id)
        .arg(to_json(&id).len())
        .arg(fields.len())
        .arg(publish.idempotency_key.as_ref().map_or("", |key| key.as_str()));
    for field in fields {
        invocation.arg(to_json(&field.name(data))).arg(field.value(data));
    }
    Ok(())
}

/// What `publish.lua` answered for a batch.
#[derive(Debug)]
enum Reply {
    /// Applied in the store of this epoch: one outcome per publish.
    Applied { epoch: String, writes: u64, now: i64, outcomes: Vec<Outcome> },
    /// Not applied: the store has this epoch, not the one the batch was for.
    OtherEpoch(String),
}

/// `{ epoch, writes, now, seq, generation, ... }`, one outcome per publish of `batch`, or `{ epoch }` alone
/// (`limit`: the `--max-canvas-state` the script checked against).
fn parse(reply: &Value, batch: &[Publish], limit: usize) -> Option<Reply> {
    let items = array(reply)?;
    let [epoch, writes, now, results @ ..] = items else {
        let [epoch] = items else { return None };
        return Some(Reply::OtherEpoch(text(epoch)?.to_owned()));
    };
    if results.len() != batch.len() * 2 {
        return None;
    }
    let outcomes = results
        .chunks_exact(2)
        .zip(batch)
        .map(|(pair, publish)| {
            Some(match int(&pair[0])? {
                -1 => {
                    let id = publish.object.as_ref().map_or("", ObjectOp::id).to_owned();
                    Outcome::Refused(Refusal::Missing { id })
                }
                -2 => Outcome::Refused(Refusal::CanvasFull { size: None, limit }),
                -3 => Outcome::Duplicate { seq: int(&pair[1])? as u64 },
                0 => Outcome::Unlogged,
                seq => Outcome::Logged(Logged { seq: seq as u64, generation: int(&pair[1])? as u64, id: seq }),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    let (epoch, writes, now) = (text(epoch)?.to_owned(), int(writes)? as u64, int(now)?);
    Some(Reply::Applied { epoch, writes, now, outcomes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::redis::entry::bulk;
    use crate::protocol::{CanvasId, LoggedMessage, UserId};

    /// A publish as the API makes one: checked by the protocol (object ops carry their id).
    fn publish(kind: &str, data: &str) -> Publish {
        let message =
            LoggedMessage::new(kind, serde_json::value::RawValue::from_string(data.into()).unwrap(), None).unwrap();
        let (canvas, from) = (CanvasId::parse("c").unwrap(), UserId::parse("u").unwrap());
        Publish::message(canvas, message, from, Origin::Caller(oneshot::channel().0))
    }

    #[test]
    fn a_reply_maps_to_one_outcome_per_publish_or_to_nothing() {
        let reply = Value::Array(
            [
                bulk("store"),
                Value::Int(9),
                Value::Int(1700),
                Value::Int(12),
                Value::Int(3),
                Value::Int(-1),
                Value::Int(0),
            ]
            .into_iter()
            .chain([Value::Int(-2), Value::Int(0), Value::Int(0), Value::Int(0)])
            .collect(),
        );
        let batch = [
            publish("note", "1"),
            publish("object-update", r#"{"id":"gone"}"#),
            publish("object-create", r#"{"id":"big"}"#),
            publish("note", "2"),
        ];
        let Some(Reply::Applied { epoch, writes, now, outcomes }) = parse(&reply, &batch, 64) else { panic!() };
        assert_eq!((epoch.as_str(), writes, now), ("store", 9, 1700));
        assert!(matches!(outcomes[0], Outcome::Logged(Logged { seq: 12, generation: 3, id: 12 })));
        assert!(matches!(&outcomes[1], Outcome::Refused(Refusal::Missing { id }) if id == "gone"));
        assert!(matches!(outcomes[2], Outcome::Refused(Refusal::CanvasFull { size: None, limit: 64 })));
        assert!(matches!(outcomes[3], Outcome::Unlogged));
        assert!(parse(&reply, &batch[..2], 64).is_none(), "a reply for another batch size is refused, not misread");
        assert!(parse(&Value::Nil, &[], 64).is_none());
        let duplicate =
            Value::Array([bulk("store"), Value::Int(9), Value::Int(1700), Value::Int(-3), Value::Int(7)].to_vec());
        let Some(Reply::Applied { outcomes, .. }) = parse(&duplicate, &batch[..1], 64) else { panic!() };
        assert!(matches!(outcomes[0], Outcome::Duplicate { seq: 7 }), "a repeated key: the original seq");
        let other = parse(&Value::Array(vec![bulk("new")]), &batch, 64);
        assert!(matches!(other, Some(Reply::OtherEpoch(epoch)) if epoch == "new"), "nothing applied: a new epoch");
    }

    #[test]
    fn a_replayed_reply_of_texts_reads_like_the_first() {
        let reply = Value::Array(["store", "9", "1700", "12", "3"].map(bulk).to_vec());
        let Some(Reply::Applied { writes, outcomes, .. }) = parse(&reply, &[publish("note", "1")], 64) else {
            panic!()
        };
        assert_eq!(writes, 9);
        assert!(matches!(outcomes[0], Outcome::Logged(Logged { seq: 12, generation: 3, id: 12 })));
    }
}
