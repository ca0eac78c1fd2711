//! Why the bus could not do what was asked, typed: each maps to one error code here (and, through it, to
//! one HTTP status in `http/api.rs`). The texts are safe to show to a client: no paths, no keys.

use std::time::Duration;

use crate::object_ops::Refusal;
use crate::protocol::{CanvasId, ErrorCode, UserId};
use crate::store::StoreError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    #[error("storage unavailable: {0}")]
    Unavailable(#[from] Unavailable),
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The message was refused by the canvas state (e.g. an update of an object that does not exist);
    /// nothing was logged.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// A join of a user the API blocked from the canvas (`DELETE .../users/{user}?block=S`).
    #[error("user {user} is blocked from canvas {canvas} for {} s more", .left.as_secs() + 1)]
    Blocked { canvas: CanvasId, user: UserId, left: Duration },
    /// A join under way when the API removed its user from the canvas: refused like a connection closed.
    #[error("user {user} was removed from canvas {canvas} while joining it")]
    Removed { canvas: CanvasId, user: UserId },
}

impl From<StoreError> for BusError {
    fn from(error: StoreError) -> Self {
        BusError::Unavailable(error.into())
    }
}

impl BusError {
    /// The error code a client's socket gets for it.
    pub fn code(&self) -> ErrorCode {
        match self {
            BusError::Refused(Refusal::CanvasFull { .. }) => ErrorCode::CanvasFull,
            BusError::Refused(Refusal::Missing { .. } | Refusal::Unmergeable { .. } | Refusal::Unreadable { .. }) => {
                ErrorCode::InvalidFrame
            }
            BusError::Unavailable(_) | BusError::ShuttingDown => ErrorCode::Unavailable,
            BusError::Blocked { .. } | BusError::Removed { .. } => ErrorCode::Forbidden,
        }
    }
}

/// Why the store could not take or serve a request just now. A client gets `unavailable` (an API caller
/// 503) for every one of them and may retry; the reason is the message.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unavailable {
    /// The storage itself failed (the SQLite file, a Redis server); its error is kept as the source.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A reply of a shape this relay's scripts never send.
    #[error("Redis: unexpected reply to {0}")]
    UnexpectedReply(&'static str),
    /// Redis has not answered an earlier batch that it may have applied; nothing may overtake it.
    #[error("Redis has not answered an earlier batch yet")]
    Unresolved,
    /// The store lost its data and started a new epoch; the batch was meant for the old one.
    #[error("the store has a new epoch (it lost data); nothing was logged")]
    NewEpoch,
    /// The store did not answer within `--publish-timeout` (what was sent may still be logged).
    #[error("the store did not answer within --publish-timeout; the message may still be logged")]
    Timeout,
    /// A join kept finding the canvas changed between reading its state and entering its room.
    #[error("the canvas kept changing while joining: retry")]
    JoinRaced,
    /// A commit kept finding the canvas moved under it (other instances committing to it all the time).
    #[error("the canvas kept changing while this was committed: retry")]
    KeptMoving,
    /// The store answered "recorded" for a message that must have a seq.
    #[error("the message was not logged")]
    NotLogged,
    /// What the store holds is not what this relay writes.
    #[error("{0}")]
    Corrupt(&'static str),
    /// A task reading the store ended without an answer.
    #[error("a read of the store ended without an answer")]
    ReadLost,
}
