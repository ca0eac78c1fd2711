//! What happens after a store commits a batch, whichever store it is: each publish's outcome goes to whoever
//! waits (the sender's ack through its room, an error frame, an API caller's seq, a presence waiter), and
//! each logged message is offered to this process's room of its canvas at once (the local short-circuit),
//! without waiting for the store's reader to bring it back. Written once; the stores only say what became
//! of each publish ([`Outcome`]).

use std::sync::Arc;
use std::time::Instant;

use tokio_tungstenite::tungstenite::Message;

use super::fold::canvas::Made;
use super::{BusError, Origin, PresenceChange, Publish, Restored};
use crate::hub::{Entry, Hub, Room};
use crate::metrics::Metrics;
use crate::object_ops::Refusal;
use crate::protocol::{logged_frame, CanvasId};
pub use crate::store::records::AfterDelivery;

/// What a store did with one publish of a batch.
#[derive(Debug, Clone)]
pub enum Outcome {
    Logged(Logged),
    /// Refused by the canvas state: an update or delete of a missing object, or past `--max-canvas-state`.
    Refused(Refusal),
    /// A presence change that logged nothing: not the user's first or last connection (`changed`), or one
    /// that changed nothing (the connection was registered already, or removed already: by a survivor that
    /// took its instance for dead, or the other way round).
    Unlogged {
        changed: bool,
    },
    /// Its idempotency key was logged before, at `seq`, by the same user on the same canvas and epoch
    /// within the TTL: nothing logged.
    Duplicate {
        seq: u64,
    },
    /// A restore: the ops it logged (none when nothing differed), and the head after it.
    Restored {
        seq: u64,
        made: Vec<(Logged, Made)>,
    },
}

/// Where one logged publish landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Logged {
    pub seq: u64,
    pub generation: u64,
    /// Its place in the store's commit order across canvases (the SQLite row id; the seq on Redis, whose
    /// reader follows each canvas's stream on its own).
    pub id: i64,
}

impl Outcome {
    pub fn logged(&self) -> Option<&Logged> {
        match self {
            Outcome::Logged(logged) => Some(logged),
            _ => None,
        }
    }
}

/// Counts a committed batch in the metrics.
pub fn record(metrics: &Metrics, outcomes: &[Result<Outcome, BusError>], started: Instant) {
    metrics.commits.increment(1);
    let logged = outcomes.iter().filter(|o| o.as_ref().is_ok_and(|o| o.logged().is_some())).count();
    metrics.messages_committed.increment(logged as u64);
    metrics.commit_batch_size.record(outcomes.len() as f64);
    metrics.commit_seconds.record(started.elapsed().as_secs_f64());
}

/// Answers every publisher of a committed batch (stamped `now`) and, with `local_broadcast`, offers each
/// logged message to this process's room of its canvas. Acks were registered when the store placed the
/// batch (`committer::round`).
pub fn deliver(
    hub: &Hub,
    metrics: &Metrics,
    batch: Vec<Publish>,
    outcomes: Vec<Result<Outcome, BusError>>,
    now: i64,
    local_broadcast: bool,
) -> AfterDelivery {
    let mut delivered = AfterDelivery::default();
    // Each canvas's messages, in commit order, offered to its room together once the batch is answered.
    let mut runs: Vec<(Arc<Room>, Vec<Entry>)> = Vec::new();
    for (publish, outcome) in batch.into_iter().zip(outcomes) {
        let logged = match outcome {
            Err(error) => {
                publish.refuse(error);
                continue;
            }
            Ok(Outcome::Logged(logged)) => logged,
            Ok(Outcome::Refused(refusal)) => {
                publish.refuse(BusError::Refused(refusal));
                continue;
            }
            Ok(Outcome::Unlogged { changed }) => {
                if changed {
                    connection_gone(hub, metrics, &publish, now);
                }
                publish.origin.committed(None);
                continue;
            }
            Ok(Outcome::Duplicate { seq }) => {
                metrics.duplicates.increment(1);
                publish.origin.duplicate(seq);
                continue;
            }
            Ok(Outcome::Restored { seq, made }) => {
                let ops = made.len() as u64;
                let entries = restored(&publish.canvas, made, now, &mut delivered);
                if let Origin::Restore { reply, .. } = publish.origin {
                    let _ = reply.send(Ok(Restored { seq, ops }));
                }
                match hub.room(&publish.canvas).filter(|_| local_broadcast) {
                    Some(room) if !entries.is_empty() => add_to_run(&mut runs, room, entries),
                    _ => {}
                }
                continue;
            }
        };
        connection_gone(hub, metrics, &publish, now);
        let ids = delivered.ids.get_or_insert((logged.id, logged.id));
        ids.1 = logged.id;
        let Publish { canvas, kind, data, from, origin, .. } = publish;
        origin.committed(Some(logged.seq));
        if !local_broadcast {
            continue;
        }
        let Some(room) = hub.room(&canvas) else { continue };
        let frame = logged_frame(kind.as_str(), logged.seq, canvas.as_str(), from.as_str(), &data, now);
        let (seq, generation, id, frame) = (logged.seq, logged.generation, logged.id, Message::text(frame));
        let entry = Entry { seq, generation, id, frame, restore: false };
        add_to_run(&mut runs, room, vec![entry]);
    }
    for (room, entries) in runs {
        let mut state = room.lock();
        let offered = state.offer_all(entries, metrics);
        delivered.read_back |= offered.unseen_generation;
        if offered.unseen_generation || state.has_pending() {
            drop(state);
            push_once(&mut delivered.waiting, room.canvas.clone());
        }
    }
    delivered
}

/// Adds entries to their room's run, in commit order.
fn add_to_run(runs: &mut Vec<(Arc<Room>, Vec<Entry>)>, room: Arc<Room>, entries: Vec<Entry>) {
    match runs.iter_mut().find(|(run, _)| Arc::ptr_eq(run, &room)) {
        Some((_, run)) => run.extend(entries),
        None => runs.push((room, entries)),
    }
}

/// The room entries of the ops a restore logged.
fn restored(canvas: &CanvasId, made: Vec<(Logged, Made)>, now: i64, delivered: &mut AfterDelivery) -> Vec<Entry> {
    if let (Some((first, _)), Some((last, _))) = (made.first(), made.last()) {
        let ids = delivered.ids.get_or_insert((first.id, first.id));
        ids.1 = last.id;
    }
    let canvas = canvas.as_str();
    made.into_iter()
        .map(|(logged, made)| {
            let frame = logged_frame(made.kind, logged.seq, canvas, "server", &made.data, now);
            let (seq, generation, id, frame) = (logged.seq, logged.generation, logged.id, Message::text(frame));
            Entry { seq, generation, id, frame, restore: true }
        })
        .collect()
}

/// A committed presence change that removed a connection: the others hear its presence state is `null`
/// (v1.1). Only the commit that removed the row gets here, so they hear it once.
fn connection_gone(hub: &Hub, metrics: &Metrics, publish: &Publish, now: i64) {
    if let Origin::Presence { change: PresenceChange::Disconnect | PresenceChange::Expire { .. }, conn, .. } =
        &publish.origin
    {
        hub.connection_gone(&publish.canvas, *conn, &publish.from, now, metrics);
    }
}

fn push_once(canvases: &mut Vec<CanvasId>, canvas: CanvasId) {
    if !canvases.contains(&canvas) {
        canvases.push(canvas);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Wake, Waker};

    use futures_util::future::BoxFuture;
    use serde_json::value::RawValue;
    use tokio::sync::oneshot;
    use uuid::Uuid;

    use super::*;
    use crate::hub::{outbox, Bounds, Inbox, Subscriber};
    use crate::protocol::{MsgType, UserId};

    /// A session that takes its queue the moment it is woken, as one on another core may: each wake-up
    /// is one flush, of what the queue held then.
    struct Eager {
        inbox: Inbox,
        /// Its `ready()` while it waits for the next frame.
        waiting: Mutex<Option<BoxFuture<'static, ()>>>,
        /// How many frames each wake-up found.
        flushes: Mutex<Vec<usize>>,
    }

    impl Eager {
        fn watch(inbox: Inbox) -> Arc<Eager> {
            let eager = Arc::new(Eager { inbox, waiting: Mutex::new(None), flushes: Mutex::new(Vec::new()) });
            eager.wait();
            eager
        }

        /// Waits for the queue's next frame, with this as the waker.
        fn wait(self: &Arc<Self>) {
            let this = self.clone();
            let mut ready: BoxFuture<'static, ()> = Box::pin(async move { this.inbox.ready().await });
            let waker = Waker::from(self.clone());
            assert!(ready.as_mut().poll(&mut Context::from_waker(&waker)).is_pending(), "an empty queue");
            *self.waiting.lock().unwrap() = Some(ready);
        }
    }

    impl Wake for Eager {
        fn wake(self: Arc<Self>) {
            drop(self.waiting.lock().unwrap().take());
            let found = self.inbox.take_all().len();
            self.flushes.lock().unwrap().push(found);
            self.wait();
        }
    }

    fn note(canvas: &CanvasId) -> (Publish, oneshot::Receiver<Result<super::super::Committed, BusError>>) {
        let (reply, answer) = oneshot::channel();
        let publish = Publish {
            canvas: canvas.clone(),
            kind: MsgType::parse("note").unwrap(),
            data: RawValue::from_string("{}".into()).unwrap(),
            from: UserId::parse("u1").unwrap(),
            object: None,
            idempotency_key: None,
            origin: Origin::Caller(reply),
        };
        (publish, answer)
    }

    /// A commit's messages of one canvas reach each of its sockets as one flush: a session woken by the
    /// first is not woken again for each of the others (a write and a wake-up per frame under fan-out).
    #[test]
    fn a_batch_of_commits_reaches_a_waiting_session_in_one_wake_up() {
        let (hub, metrics, canvas) = (Hub::new(), Metrics::default(), CanvasId::parse("c1").unwrap());
        let (outbox, inbox) = outbox(Bounds { frames: 64, bytes: 1 << 20, riding_bytes: 1 << 20 });
        let room = hub.room_for_join(&canvas);
        room.lock().start_at(0, 0, &metrics);
        let user = UserId::parse("u2").unwrap();
        room.lock().subscribe(Subscriber {
            conn: Uuid::new_v4(),
            user,
            name: None,
            opened: 0,
            generation: 0,
            start_after: 0,
            outbox,
        });
        let session = Eager::watch(inbox);
        let (mut batch, mut outcomes, mut answers) = (Vec::new(), Vec::new(), Vec::new());
        for seq in 1..=3 {
            let (publish, answer) = note(&canvas);
            batch.push(publish);
            outcomes.push(Ok(Outcome::Logged(Logged { seq, generation: 0, id: seq as i64 })));
            answers.push(answer);
        }
        deliver(&hub, &metrics, batch, outcomes, 0, true);
        assert_eq!(*session.flushes.lock().unwrap(), [3], "one wake-up, one flush of the three");
        assert!(answers.iter_mut().all(|answer| answer.try_recv().is_ok_and(|r| r.is_ok())), "every caller answered");
        drop(session.waiting.lock().unwrap().take()); // its future holds the session: let both go
    }
}
