//! The message bus: what the connection and HTTP layers ask of shared storage, in their terms. A logged
//! message is published and committed (seq assigned, ack after commit), a connection joins a canvas (welcome
//! position, resume replay), and committed messages reach every process's [`crate::hub::Hub`].
//!
//! Today the only bus is the shared SQLite file ([`sqlite::SqliteBus`]). The types here are the seam the
//! in-memory and Redis buses (later issues) plug into, so sessions and routes never name SQLite.

pub mod sqlite;

use serde_json::value::RawValue;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

use crate::hub::{ConnId, Outbox};
use crate::protocol::{presence_data, CanvasId, MsgType, Resume, UserId};

pub use sqlite::SqliteBus;

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
