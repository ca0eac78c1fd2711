//! The one publisher task of this process: takes whatever publishes are waiting (group commit), commits them
//! in one `publish.lua` call (seqs, stream appends, object fold and presence, atomically on the Redis side),
//! and only then lets them out: acks and local delivery through the hub, results to API callers. As with
//! the SQLite writer, an ack means Redis applied the message (see the README on what Redis persistence
//! makes of that).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use redis::aio::ConnectionManager;
use redis::Value;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use super::entry::{array, encode_optional, int, order, text};
use super::scripts::PUBLISH;
use super::shared::{Leaving, Shared};
use crate::bus::{refuse_all, BusError, Origin, Publish};
use crate::clock::now_ms;
use crate::hub::{Entry, Hub};
use crate::metrics::Metrics;
use crate::protocol::{logged_frame, ErrorCode};
use crate::state::{self, ObjectOp};

/// Work for the publisher.
#[derive(Debug)]
pub enum Request {
    Publish(Publish),
    /// Answered once everything queued before it is committed or refused.
    Barrier(oneshot::Sender<()>),
    /// Refuse whatever is still queued, then stop.
    Stop(oneshot::Sender<()>),
}

pub struct Publisher {
    pub conn: ConnectionManager,
    pub hub: Arc<Hub>,
    pub shared: Arc<Shared>,
    pub metrics: Metrics,
    pub instance_id: String,
    pub ttl_ms: i64,
    pub max_batch: usize,
    pub local_broadcast: bool,
}

/// What the script did with one publish.
enum Outcome {
    Logged { seq: u64, generation: u64 },
    /// Refused by the canvas state (an update or delete of a missing object).
    Refused,
    /// A presence change that is not the user's first or last connection: recorded, nothing logged.
    Unlogged,
}

impl Publisher {
    pub async fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        while let Some(first) = requests.recv().await {
            let mut batch = Vec::new();
            let mut next = Some(first);
            while let Some(request) = next.take() {
                match request {
                    Request::Publish(publish) => batch.push(publish),
                    Request::Barrier(done) => {
                        self.commit(std::mem::take(&mut batch)).await;
                        let _ = done.send(());
                    }
                    Request::Stop(done) => {
                        self.commit(batch).await;
                        requests.close();
                        let mut late = Vec::new();
                        while let Ok(request) = requests.try_recv() {
                            match request {
                                Request::Publish(publish) => late.push(publish),
                                Request::Barrier(done) | Request::Stop(done) => drop(done.send(())),
                            }
                        }
                        refuse_all(late, BusError::ShuttingDown);
                        let _ = done.send(());
                        return;
                    }
                }
                if batch.len() < self.max_batch {
                    next = requests.try_recv().ok();
                }
            }
            self.metrics.writer_queue_depth.set(requests.len() as f64);
            self.commit(batch).await;
        }
    }

    async fn commit(&mut self, batch: Vec<Publish>) {
        if batch.is_empty() {
            return;
        }
        let started = Instant::now();
        let mut invocation = PUBLISH.prepare_invoke();
        invocation.arg(self.ttl_ms).arg(&self.instance_id).arg(Uuid::new_v4().to_string());
        for publish in &batch {
            encode(publish, &mut invocation);
        }
        let reply = invocation.invoke_async::<Value>(&mut self.conn).await;
        match reply.map_err(|e| e.to_string()).and_then(|reply| parse(&reply, batch.len()).ok_or_else(|| format!("unexpected reply {reply:?}"))) {
            Ok((epoch, writes, now, outcomes)) => {
                self.shared.observe_epoch(&epoch, &self.hub);
                self.shared.saw_writes(writes);
                self.shared.last_error.clear();
                self.metrics.commits.increment(1);
                let logged = outcomes.iter().filter(|o| matches!(o, Outcome::Logged { .. })).count();
                self.metrics.messages_committed.increment(logged as u64);
                self.metrics.commit_batch_size.record(batch.len() as f64);
                self.metrics.commit_seconds.record(started.elapsed().as_secs_f64());
                self.deliver(batch, outcomes, now);
            }
            Err(error) => {
                self.metrics.commit_errors.increment(1);
                tracing::error!(%error, messages = batch.len(), "Redis commit failed; senders get `unavailable`");
                let message = format!("Redis: {error}");
                self.shared.last_error.set(now_ms(), &message);
                for publish in &batch {
                    if let (Origin::Presence { conn, name, .. }, false) = (&publish.origin, publish.is_connect()) {
                        let (canvas, user) = (publish.canvas.clone(), publish.from.clone());
                        self.shared.retry_later(Leaving { canvas, user, name: name.clone(), conn: *conn });
                    }
                }
                refuse_all(batch, BusError::Unavailable(message));
            }
        }
    }

    /// After the commit: answer each publisher and deliver to local rooms at once (local short-circuit). The
    /// stream reader reads the same entries too; whichever path reaches a room first delivers, and the ack
    /// goes to the sender either way.
    fn deliver(&self, batch: Vec<Publish>, outcomes: Vec<Outcome>, now: i64) {
        for (publish, outcome) in batch.into_iter().zip(outcomes) {
            let (seq, generation) = match outcome {
                Outcome::Logged { seq, generation } => (seq, generation),
                Outcome::Refused => {
                    let id = ObjectOp::of(&publish.kind, &publish.data).map(|op| op.id().to_owned()).unwrap_or_default();
                    publish.refuse(BusError::Refused(state::missing(&id)), ErrorCode::InvalidFrame);
                    continue;
                }
                Outcome::Unlogged => {
                    publish.origin.committed(None);
                    continue;
                }
            };
            let ack = publish.origin.committed(Some(seq));
            if !self.local_broadcast {
                continue;
            }
            let Some(room) = self.hub.room(&publish.canvas) else { continue };
            let (kind, canvas, from) = (publish.kind.as_str(), publish.canvas.as_str(), publish.from.as_str());
            let frame = Message::text(logged_frame(kind, seq, canvas, from, &publish.data, now));
            let mut state = room.lock();
            if let Some(ack) = ack {
                state.expect_ack_unless_delivered(generation, seq, ack);
            }
            state.offer(Entry { seq, generation, id: order(generation, seq), frame }, &self.metrics);
        }
    }
}

/// Adds one publish's arguments (see the header of `publish.lua`).
fn encode(publish: &Publish, invocation: &mut redis::ScriptInvocation<'_>) {
    let object = ObjectOp::of(&publish.kind, &publish.data);
    let (op, conn, reference, name) = match &publish.origin {
        Origin::Presence { conn, name, .. } => {
            let op = if publish.is_connect() { "connect" } else { "disconnect" };
            (op, conn.to_string(), String::new(), encode_optional(name.as_deref()))
        }
        Origin::Socket { conn, reference, .. } => ("log", conn.to_string(), encode_optional(reference.as_deref()), String::new()),
        Origin::Caller(_) => ("log", String::new(), String::new(), String::new()),
    };
    let (op, id) = match &object {
        Some(ObjectOp::Create { id }) => ("create", id.as_str()),
        Some(ObjectOp::Update { id }) => ("update", id.as_str()),
        Some(ObjectOp::Delete { id }) => ("delete", id.as_str()),
        None => (op, ""),
    };
    // An object's top-level fields, each as the exact JSON text it arrived as (a later duplicate key wins,
    // as in the SQLite fold). Deletes need none.
    let fields: BTreeMap<String, &RawValue> = match op {
        "create" | "update" => serde_json::from_str(publish.data.get()).unwrap_or_default(),
        _ => BTreeMap::new(),
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
        .arg(fields.len());
    for (field, value) in fields {
        invocation.arg(field).arg(value.get());
    }
}

/// `{ epoch, writes, now, seq, generation, ... }`.
fn parse(reply: &Value, expected: usize) -> Option<(String, u64, i64, Vec<Outcome>)> {
    let items = array(reply)?;
    let [epoch, writes, now, results @ ..] = items else { return None };
    if results.len() != expected * 2 {
        return None;
    }
    let outcomes = results
        .chunks_exact(2)
        .map(|pair| {
            Some(match int(&pair[0])? {
                -1 => Outcome::Refused,
                0 => Outcome::Unlogged,
                seq => Outcome::Logged { seq: seq as u64, generation: int(&pair[1])? as u64 },
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some((text(epoch)?.to_owned(), int(writes)? as u64, int(now)?, outcomes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn a_reply_maps_to_one_outcome_per_publish_or_to_nothing() {
        let reply = Value::Array(vec![
            bulk("store"),
            Value::Int(9),
            Value::Int(1700),
            Value::Int(12),
            Value::Int(3),
            Value::Int(-1),
            Value::Int(0),
            Value::Int(0),
            Value::Int(0),
        ]);
        let (epoch, writes, now, outcomes) = parse(&reply, 3).unwrap();
        assert_eq!((epoch.as_str(), writes, now), ("store", 9, 1700));
        assert!(matches!(outcomes[0], Outcome::Logged { seq: 12, generation: 3 }));
        assert!(matches!(outcomes[1], Outcome::Refused));
        assert!(matches!(outcomes[2], Outcome::Unlogged));
        assert!(parse(&reply, 2).is_none(), "a reply for another batch size is refused, not misread");
        assert!(parse(&Value::Nil, 0).is_none());
    }
}
