//! When the writer cannot log a message: telling its publisher (an `unavailable` or refusal error frame for
//! a socket, the error for an API caller), describing storage errors without leaking paths, and refusing to
//! commit into a file that is no longer the shared one.

use deadpool_sqlite::rusqlite::Error as SqlError;
use tokio_tungstenite::tungstenite::Message;

use crate::bus::sqlite::identity::FileIdentity;
use crate::bus::{BusError, Origin, Publish};
use crate::protocol::{error_frame, ErrorCode, FrameError};

/// Refuses to commit into a file that is no longer the shared one (see `identity.rs`). A free function so
/// that it can run while the writer's connection is borrowed by the open transaction.
pub(super) fn same_file(file: &Option<FileIdentity>) -> Result<(), SqlError> {
    file.as_ref().map_or(Ok(()), FileIdentity::ensure_same)
}

/// Tells every publisher of a batch that it was not committed.
pub(super) fn refuse(batch: Vec<Publish>, error: BusError) {
    for publish in batch {
        refuse_one(publish, error.clone(), ErrorCode::Unavailable);
    }
}

/// Tells one publisher its message was not logged: an error frame for a socket, the error for a caller.
pub(super) fn refuse_one(publish: Publish, error: BusError, code: ErrorCode) {
    match publish.origin {
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

/// A short, client-safe description of a storage error (no paths).
pub(super) fn describe(error: &SqlError) -> String {
    if let SqlError::SqliteFailure(failure, _) = error {
        if failure.extended_code == deadpool_sqlite::rusqlite::ffi::SQLITE_READONLY_DBMOVED {
            return "the database file was deleted or replaced".into();
        }
    }
    match error.sqlite_error_code() {
        Some(deadpool_sqlite::rusqlite::ErrorCode::DatabaseBusy) => "the shared database stayed locked".into(),
        Some(deadpool_sqlite::rusqlite::ErrorCode::DiskFull) => "the disk is full".into(),
        Some(deadpool_sqlite::rusqlite::ErrorCode::ReadOnly) => "the database is read-only".into(),
        Some(code) => format!("database error ({code:?})"),
        None => "database error".into(),
    }
}
