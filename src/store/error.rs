//! Why a request to the bus could not be done, typed: each [`BusError`] maps to one error code here (and,
//! through it, to one HTTP status in `http/api.rs`), and every text is safe to show a client (no paths, no
//! keys). A failure of the storage itself ([`StoreError`]: the SQLite file or its pool, a Redis server)
//! keeps the store's own error as its source, for logs and for code that needs to tell failures apart.
//! The stores return these, and the core above them passes them on: they live here so that the arrow
//! runs one way, core to store.

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use deadpool_sqlite::rusqlite;

use crate::object_ops::Refusal;
use crate::protocol::{CanvasId, ErrorCode, UserId};

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
            BusError::Refused(
                Refusal::Missing { .. }
                | Refusal::Unmergeable { .. }
                | Refusal::Unreadable { .. }
                | Refusal::EpochChanged,
            ) => ErrorCode::InvalidFrame,
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

/// A failure of the storage itself. Cheap to clone: one failure can answer every publish of a batch.
#[derive(Debug, Clone)]
pub enum StoreError {
    /// The SQLite file failed: told as a description without paths (see `sqlite::describe`).
    Sqlite(Arc<rusqlite::Error>),
    /// No connection of the SQLite read pool could be had.
    SqlitePool(Arc<deadpool_sqlite::PoolError>),
    /// Redis answered with an error, or could not be reached.
    Redis(Arc<::redis::RedisError>),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Sqlite(error) => write!(f, "SQLite: {}", super::sqlite::describe(error)),
            StoreError::SqlitePool(error) => write!(f, "SQLite: no connection: {error}"),
            StoreError::Redis(error) => write!(f, "Redis: {error}"),
        }
    }
}

/// The source is the store's error itself (not the `Arc` around it), so it downcasts to its own type.
impl Error for StoreError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(match self {
            StoreError::Sqlite(error) => &**error,
            StoreError::SqlitePool(error) => &**error,
            StoreError::Redis(error) => &**error,
        })
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        StoreError::Sqlite(Arc::new(error))
    }
}

impl From<deadpool_sqlite::PoolError> for StoreError {
    fn from(error: deadpool_sqlite::PoolError) -> Self {
        StoreError::SqlitePool(Arc::new(error))
    }
}

impl From<::redis::RedisError> for StoreError {
    fn from(error: ::redis::RedisError) -> Self {
        StoreError::Redis(Arc::new(error))
    }
}

#[cfg(test)]
mod tests {
    use deadpool_sqlite::rusqlite::ffi;

    use super::*;

    fn disk_full() -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(ffi::Error::new(ffi::SQLITE_FULL), Some("/secret/path/relay.db".into()))
    }

    #[test]
    fn a_sqlite_failure_is_told_without_its_path_and_kept_as_the_source() {
        let error = BusError::from(StoreError::from(disk_full()));
        assert_eq!(error.to_string(), "storage unavailable: SQLite: the disk is full");
        let source = error.source().and_then(Error::source).expect("the SQLite error is the source");
        assert!(source.downcast_ref::<rusqlite::Error>().is_some(), "{source:?}");
    }

    #[test]
    fn a_redis_failure_is_told_as_redis_says_it_and_kept_as_the_source() {
        let redis = ::redis::RedisError::from((::redis::ErrorKind::Io, "connection refused"));
        let told = format!("Redis: {redis}");
        let error = BusError::from(StoreError::from(redis));
        assert_eq!(error.to_string(), format!("storage unavailable: {told}"));
        let source = error.source().and_then(Error::source).expect("the Redis error is the source");
        assert!(source.downcast_ref::<::redis::RedisError>().is_some(), "{source:?}");
    }
}
