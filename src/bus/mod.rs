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
use crate::protocol::{CanvasId, MsgType, Resume, UserId};

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
}

/// A connection asking to join a canvas.
#[derive(Debug)]
pub struct JoinRequest {
    pub canvas: CanvasId,
    pub conn: ConnId,
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
