//! A logged message on its way to the store ([`Publish`]), who waits for its outcome ([`Origin`]), and how
//! that outcome is told: an ack through the sender's room, an error frame, a caller's reply.

use serde_json::value::RawValue;
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tokio_tungstenite::tungstenite::Message;

use super::fold::Objects;
use super::{BusError, Unavailable};
use crate::hub::{Member, Outbox};
use crate::object_ops::ObjectOp;
use crate::protocol::{
    duplicate_ack_frame, error_frame_in, null_value, presence_data, CanvasId, ConnId, FrameError, IdempotencyKey,
    LoggedMessage, MsgType, UserId,
};

/// A logged message on its way to the writer.
#[derive(Debug)]
pub struct Publish {
    pub canvas: CanvasId,
    pub kind: MsgType,
    /// The message's `data`, stored and relayed as the JSON text it arrived as.
    pub data: Box<RawValue>,
    /// The sending user, relayed as `from`.
    pub from: UserId,
    /// The object op it performs, if it is one (read from `data` once, when the frame was checked).
    pub object: Option<ObjectOp>,
    /// Logged at most once per user, canvas and epoch within the TTL (see `Outcome::Duplicate`).
    pub idempotency_key: Option<IdempotencyKey>,
    pub origin: Origin,
}

/// Who waits for a publish's outcome.
#[derive(Debug)]
pub enum Origin {
    /// A client socket on this process: gets its ack through its room, in seq order, or an `unavailable`
    /// error frame in its outbox if the commit failed.
    /// `in_flight` is one of the connection's `--max-in-flight` permits, given back when the publish is
    /// answered (or dropped): a connection with none left stops reading its socket.
    Socket { conn: ConnId, reference: Option<String>, outbox: Outbox, in_flight: OwnedSemaphorePermit },
    /// A caller awaiting the committed seq (the HTTP API).
    Caller(oneshot::Sender<Result<Committed, BusError>>),
    /// A restore (the HTTP API): the object ops that turn the canvas, as it stands when this commits, into
    /// `target` are logged as user `server`, in one commit of consecutive seqs.
    /// `target` was read in `generation`: a canvas reset since is not restored.
    Restore { target: Box<Objects>, generation: u64, reply: oneshot::Sender<Result<Restored, BusError>> },
    /// A connection opening (`user-connected`) or closing (`user-disconnected`): registered in or removed from
    /// the shared connection list in the same transaction, and logged only when it is the user's first or
    /// last connection to the canvas across instances. `done`, if any, learns when that is committed.
    Presence {
        change: PresenceChange,
        conn: ConnId,
        name: Option<String>,
        /// When the connection opened: its place in presence.
        opened: u64,
        done: Option<oneshot::Sender<Result<(), BusError>>>,
    },
}

/// What an API caller learns of its committed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    pub seq: u64,
    /// Its idempotency key was seen: nothing was logged, and `seq` is the original message's.
    pub duplicate: bool,
}

/// What a restore's caller learns: the head after it, and how many ops it logged (0: nothing differed, and
/// `seq` is the head it found).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    pub seq: u64,
    pub ops: u64,
}

/// What a presence publish does to its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceChange {
    /// Registers it (`user-connected` when it is the user's first).
    Connect,
    /// Removes it (`user-disconnected` when it was the user's last).
    Disconnect,
    /// A survivor's removal of a dead instance's connection: applied only if its instance is still silent
    /// for `dead_after_ms` when the removal commits (it may have come back meanwhile).
    Expire { dead_after_ms: i64 },
}

/// Why [`Bus::try_publish`] did not queue a publish.
#[derive(Debug)]
pub enum TryPublish {
    /// The queue is full: here it is back, to wait for room (boxed: this is the slow path, and it keeps
    /// `Result<(), TryPublish>` small on the fast one).
    Full(Box<Publish>),
    /// The bus is stopping.
    Closed,
}

impl Publish {
    /// A socket's publish given back (the queue was full) as the message it was, to send again when there
    /// is room; its in-flight permit is released.
    pub fn into_message(self, reference: Option<String>) -> LoggedMessage {
        let (kind, data, object, idempotency_key) = (self.kind, self.data, self.object, self.idempotency_key);
        LoggedMessage { kind, data, reference, object, idempotency_key }
    }

    /// A logged message from `from` on its way to `canvas`.
    pub fn message(canvas: CanvasId, message: LoggedMessage, from: UserId, origin: Origin) -> Self {
        let LoggedMessage { kind, data, object, idempotency_key, .. } = message;
        Publish { canvas, kind, data, from, object, idempotency_key, origin }
    }

    /// A connection's presence change: registered (`done` learns when that is committed), removed, or
    /// expired by a survivor of its instance.
    pub fn presence(
        change: PresenceChange,
        member: Member,
        done: Option<oneshot::Sender<Result<(), BusError>>>,
    ) -> Self {
        let kind = MsgType::reserved(match change {
            PresenceChange::Connect => "user-connected",
            PresenceChange::Disconnect | PresenceChange::Expire { .. } => "user-disconnected",
        });
        let Member { canvas, conn, user, name, opened } = member;
        let data = presence_data(user.as_str(), name.as_deref());
        let origin = Origin::Presence { change, conn, name, opened, done };
        Publish { canvas, kind, data, from: user, object: None, idempotency_key: None, origin }
    }

    /// A restore of `canvas` to `target`, read in `generation` (see [`Origin::Restore`]).
    pub fn restore(
        canvas: CanvasId,
        (target, generation): (Objects, u64),
        reply: oneshot::Sender<Result<Restored, BusError>>,
    ) -> Self {
        // Never logged itself (the ops it makes are): its type and data only carry it to the fold.
        let kind = MsgType::parse("restore").expect("a valid type");
        let (data, from) = (null_value(), UserId::server());
        let origin = Origin::Restore { target: Box::new(target), generation, reply };
        Publish { canvas, kind, data, from, object: None, idempotency_key: None, origin }
    }

    /// A connection's removal from presence, nobody waiting.
    pub fn leaving(member: Member, change: PresenceChange) -> Self {
        Publish::presence(change, member, None)
    }

    /// Whether staging it needs the canvas's objects (an object op, a restore), not only its head.
    pub fn needs_objects(&self) -> bool {
        self.object.is_some() || matches!(self.origin, Origin::Restore { .. })
    }

    /// Whether this registers a connection (as opposed to removing one or logging a message).
    pub fn is_connect(&self) -> bool {
        matches!(self.origin, Origin::Presence { change: PresenceChange::Connect, .. })
    }

    /// Tells the publisher its message was not logged: an error frame with the error's code for a socket,
    /// the error for an API caller or a presence change's waiter.
    pub fn refuse(self, error: BusError) {
        let code = error.code();
        match self.origin {
            Origin::Caller(reply) => drop(reply.send(Err(error))),
            Origin::Restore { reply, .. } => drop(reply.send(Err(error))),
            Origin::Presence { done, .. } => {
                if let Some(done) = done {
                    let _ = done.send(Err(error));
                }
            }
            Origin::Socket { reference, outbox, .. } => {
                let message = error.to_string();
                let error = FrameError { code, message, reference };
                outbox.push(Message::text(error_frame_in(&error, outbox.canvas())));
            }
        }
    }
}

impl Origin {
    /// Tells whoever waits that the publish is committed, logged at `seq` or (a presence change that was not
    /// the user's first or last) recorded without a seq. A socket's ack goes out through its room instead,
    /// at its seq's place in the stream (registered when the store placed it: `core::committer::round`).
    pub fn committed(self, seq: Option<u64>) {
        match self {
            Origin::Caller(reply) => {
                // A message is always logged or refused; only presence changes go unlogged.
                let committed = seq.map(|seq| Committed { seq, duplicate: false });
                let _ = reply.send(committed.ok_or_else(|| BusError::from(Unavailable::NotLogged)));
            }
            Origin::Presence { done, .. } => {
                if let Some(done) = done {
                    let _ = done.send(Ok(()));
                }
            }
            Origin::Socket { .. } | Origin::Restore { .. } => {}
        }
    }

    /// Tells whoever waits that the publish repeated an idempotency key already logged at `seq`: nothing
    /// new was logged. A socket gets its ack at once, not at the seq's place in the stream: that seq was
    /// logged earlier (it reaches this connection, if at all, as the original message).
    pub fn duplicate(self, seq: u64) {
        match self {
            Origin::Caller(reply) => drop(reply.send(Ok(Committed { seq, duplicate: true }))),
            Origin::Socket { reference, outbox, .. } => {
                outbox.push(Message::text(duplicate_ack_frame(seq, reference.as_deref(), outbox.canvas())));
            }
            Origin::Presence { .. } | Origin::Restore { .. } => {} // they carry no key
        }
    }
}

/// Tells every publisher of a batch that it was not committed (`unavailable`).
pub fn refuse_all(batch: Vec<Publish>, error: BusError) {
    for publish in batch {
        publish.refuse(error.clone());
    }
}
