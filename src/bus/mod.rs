//! The message bus: what the connection and HTTP layers ask of shared storage, in their terms. A logged
//! message is published and committed (seq assigned, ack after commit), a connection joins a canvas (welcome
//! position, resume replay), and committed messages reach every process's [`crate::hub::Hub`].
//!
//! Two buses implement it: the shared SQLite file ([`sqlite::SqliteBus`], also `--bus memory`) and Redis
//! Streams ([`redis::RedisBus`]). [`Bus`] is chosen once at start; sessions, routes and the hub only ever
//! call it, so the protocol, connection and fan-out code is the same whichever stores the log.

pub mod redis;
pub mod sqlite;
pub mod views;

use std::sync::Arc;

use serde_json::value::RawValue;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::config::{BusKind, Config};
use crate::cursors::CursorBuffer;
use crate::hub::{AckTo, ConnId, Hub, Outbox};
use crate::metrics::Metrics;
use crate::protocol::{error_frame, presence_data, CanvasId, ErrorCode, FrameError, MsgType, Resume, UserId};

pub use redis::RedisBus;
pub use sqlite::SqliteBus;
pub use views::{BusFigures, CanvasLog, CanvasState, Present, UserPresence};

/// The bus of this process. Cheap to clone.
#[derive(Clone)]
pub enum Bus {
    /// `--bus sqlite` (the default) and `--bus memory`.
    Sqlite(SqliteBus),
    /// `--bus redis://...`.
    Redis(RedisBus),
}

/// Calls the same method on whichever bus this is.
macro_rules! on_bus {
    ($bus:expr, $inner:ident => $call:expr) => {
        match $bus {
            Bus::Sqlite($inner) => $call,
            Bus::Redis($inner) => $call,
        }
    };
}

impl Bus {
    /// Opens the bus `--bus` names and starts its threads or tasks.
    pub async fn open(config: &Config, instance_id: &str, listen: &str, hub: Arc<Hub>, metrics: Metrics) -> anyhow::Result<Bus> {
        Ok(match &config.bus {
            BusKind::Sqlite | BusKind::Memory => Bus::Sqlite(SqliteBus::open(config, instance_id, listen, hub, metrics).await?),
            BusKind::Redis(url) => Bus::Redis(RedisBus::open(url.expose(), config, instance_id, hub, metrics).await?),
        })
    }

    /// Starts the bus's periodic upkeep (heartbeats, expiring dead instances' presence, cursor batches, and
    /// whatever its storage needs), until `stop` turns true. It sends on `fatal` why the instance cannot go
    /// on, if it cannot.
    pub fn maintain(
        &self,
        hub: Arc<Hub>,
        cursors: Arc<CursorBuffer>,
        config: Config,
        stop: watch::Receiver<bool>,
        fatal: oneshot::Sender<String>,
    ) -> JoinHandle<()> {
        match self {
            Bus::Sqlite(bus) => tokio::spawn(sqlite::maintenance::run(bus.clone(), hub, cursors, config, stop, fatal)),
            Bus::Redis(bus) => tokio::spawn(redis::maintenance::run(bus.clone(), cursors, config, stop)),
        }
    }

    /// Queues a logged message (or presence change) for commit. Waits when the writer queue is full.
    pub async fn publish(&self, publish: Publish) -> Result<(), BusError> {
        on_bus!(self, bus => bus.publish(publish).await)
    }

    /// Registers a connection in presence (logging `user-connected` if it is the user's first on the canvas),
    /// then subscribes it and says where its stream starts. The registration commits first, so the
    /// welcome's seq and presence include it; a join that fails after it leaves again.
    pub async fn join(&self, request: JoinRequest) -> Result<Joined, BusError> {
        let (canvas, conn, user, name) = (request.canvas.clone(), request.conn, request.user.clone(), request.name.clone());
        let (done, registered) = oneshot::channel();
        self.publish(Publish::presence(true, canvas.clone(), user.clone(), name.clone(), conn, Some(done))).await?;
        registered.await.map_err(|_| BusError::ShuttingDown)??;
        let result = on_bus!(self, bus => bus.subscribe(request).await);
        if result.is_err() {
            self.leave(canvas, conn, user, name).await;
        }
        result
    }

    /// A connection is gone: out of its room at once, out of presence (logging `user-disconnected` if it was
    /// the user's last on the canvas) when the writer gets to it. If the writer has already stopped, or the
    /// storage does not take it, survivors (or a later retry) remove it.
    pub async fn leave(&self, canvas: CanvasId, conn: ConnId, user: UserId, name: Option<String>) {
        on_bus!(self, bus => bus.hub().leave(&canvas, conn));
        let _ = self.publish(Publish::presence(false, canvas, user, name, conn, None)).await;
    }

    /// Returns once everything queued before the call is committed (or refused).
    pub async fn flush(&self) -> Result<(), BusError> {
        on_bus!(self, bus => bus.flush().await)
    }

    /// Final stop, after every connection is gone.
    pub async fn close(&self) {
        on_bus!(self, bus => bus.close().await)
    }

    /// The figures behind `/health`; an error means the storage cannot be reached.
    pub async fn figures(&self) -> Result<BusFigures, BusError> {
        on_bus!(self, bus => bus.figures().await)
    }

    /// How long messages are kept, in ms.
    pub fn ttl_ms(&self) -> i64 {
        on_bus!(self, bus => bus.ttl_ms())
    }

    /// Retained messages of a canvas after `since`, at most `limit`, in seq order, with the canvas head.
    pub async fn messages(&self, canvas: CanvasId, since: u64, limit: u64) -> Result<CanvasLog, BusError> {
        on_bus!(self, bus => bus.messages(canvas, since, limit).await)
    }

    /// A canvas's head, objects and presence, read at one point of its log.
    pub async fn canvas(&self, canvas: CanvasId) -> Result<CanvasState, BusError> {
        on_bus!(self, bus => bus.canvas(canvas).await)
    }

    /// Connected users across instances (all, or only `user`), with their connections and canvases.
    pub async fn users(&self, only: Option<UserId>) -> Result<Vec<UserPresence>, BusError> {
        on_bus!(self, bus => bus.users(only).await)
    }

    /// Drops a canvas's log and state; it starts a new epoch at seq 0. Returns the new epoch.
    pub async fn reset(&self, canvas: CanvasId) -> Result<String, BusError> {
        on_bus!(self, bus => bus.reset(canvas).await)
    }

    /// Sends a frame to every connection of `user` on every instance; returns how many connections it has.
    pub async fn send_to_user(&self, user: UserId, frame: String) -> Result<u64, BusError> {
        on_bus!(self, bus => bus.send_to_user(user, frame).await)
    }
}

/// A logged message on its way to the writer.
#[derive(Debug)]
pub struct Publish {
    pub canvas: CanvasId,
    pub kind: MsgType,
    /// The message's `data`, stored and relayed as the JSON text it arrived as.
    pub data: Box<RawValue>,
    /// The sending user, relayed as `from`.
    pub from: UserId,
    pub origin: Origin,
}

/// Who waits for a publish's outcome.
#[derive(Debug)]
pub enum Origin {
    /// A client socket on this process: gets its ack through its room, in seq order, or an `unavailable`
    /// error frame in its outbox if the commit failed.
    Socket { conn: ConnId, reference: Option<String>, outbox: Outbox },
    /// A caller awaiting the committed seq (the HTTP API).
    Caller(oneshot::Sender<Result<u64, BusError>>),
    /// A connection opening (`user-connected`) or closing (`user-disconnected`): registered in or removed from
    /// the shared connection list in the same transaction, and logged only when it is the user's first or
    /// last connection to the canvas across instances. `done`, if any, learns when that is committed.
    Presence { conn: ConnId, name: Option<String>, done: Option<oneshot::Sender<Result<(), BusError>>> },
}

impl Publish {
    /// The presence change of connection `conn` of `user` on `canvas`: connected, or disconnected.
    pub fn presence(
        connected: bool,
        canvas: CanvasId,
        user: UserId,
        name: Option<String>,
        conn: ConnId,
        done: Option<oneshot::Sender<Result<(), BusError>>>,
    ) -> Self {
        let kind = MsgType::reserved(if connected { "user-connected" } else { "user-disconnected" });
        let data = presence_data(user.as_str(), name.as_deref());
        Publish { canvas, kind, data, from: user, origin: Origin::Presence { conn, name, done } }
    }

    /// Whether this registers a connection (as opposed to removing one or logging a message).
    pub fn is_connect(&self) -> bool {
        matches!(self.origin, Origin::Presence { .. }) && self.kind.as_str() == "user-connected"
    }

    /// Tells the publisher its message was not logged: an error frame with `code` for a socket, the error
    /// for an API caller or a presence change's waiter.
    pub fn refuse(self, error: BusError, code: ErrorCode) {
        match self.origin {
            Origin::Caller(reply) => drop(reply.send(Err(error))),
            Origin::Presence { done, .. } => {
                if let Some(done) = done {
                    let _ = done.send(Err(error));
                }
            }
            Origin::Socket { reference, outbox, .. } => {
                let message = match error {
                    BusError::Refused(reason) => reason,
                    other => other.to_string(),
                };
                outbox.push(Message::text(error_frame(&FrameError { code, message, reference })));
            }
        }
    }
}

impl Origin {
    /// Tells whoever waits that the publish is committed, logged at `seq` or (a presence change that was not
    /// the user's first or last) recorded without a seq. Returns who gets the ack, for a socket's message:
    /// its ack goes out through the room, at its seq's place in the stream.
    pub fn committed(self, seq: Option<u64>) -> Option<AckTo> {
        match self {
            Origin::Caller(reply) => {
                let _ = reply.send(seq.ok_or_else(|| BusError::Refused("not logged".into())));
                None
            }
            Origin::Presence { done, .. } => {
                if let Some(done) = done {
                    let _ = done.send(Ok(()));
                }
                None
            }
            Origin::Socket { conn, reference, .. } => Some(AckTo { conn, reference }),
        }
    }
}

/// Tells every publisher of a batch that it was not committed (`unavailable`).
pub fn refuse_all(batch: Vec<Publish>, error: BusError) {
    for publish in batch {
        publish.refuse(error.clone(), ErrorCode::Unavailable);
    }
}

/// A connection asking to join a canvas.
#[derive(Debug)]
pub struct JoinRequest {
    pub canvas: CanvasId,
    pub conn: ConnId,
    pub user: UserId,
    /// The display name shown in presence.
    pub name: Option<String>,
    /// `since` + `epoch` from the query string, when the client is resuming.
    pub resume: Option<Resume>,
    /// Where live messages after the welcome go.
    pub outbox: Outbox,
}

/// Where a joined connection's stream starts.
#[derive(Debug)]
pub struct Joined {
    pub epoch: String,
    /// The welcome's `seq`: the client next receives `seq + 1`.
    pub seq: u64,
    pub resumed: bool,
    /// Frames after `seq` to send before anything live (only when resumed).
    pub replay: Vec<Message>,
    /// The canvas state at exactly `seq`, as a JSON object keyed by object id (only when not resumed).
    pub objects: Option<Box<RawValue>>,
    /// Who is on the canvas at `seq`, as the welcome's JSON array.
    pub presence: Box<RawValue>,
}

/// Why the bus could not do what was asked; the text is safe to show to a client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The message was refused by the canvas state (e.g. an update of an object that does not exist).
    #[error("{0}")]
    Refused(String),
}
