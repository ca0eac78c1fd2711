//! When the writer cannot log a message: describing storage errors without leaking paths, and refusing to
//! commit into a file that is no longer the shared one.

use deadpool_sqlite::rusqlite::Error as SqlError;

use crate::bus::sqlite::identity::FileIdentity;
use crate::bus::Unavailable;

/// Refuses to commit into a file that is no longer the shared one (see `identity.rs`). A free function so
/// that it can run while the writer's connection is borrowed by the open transaction.
pub(super) fn same_file(file: &Option<FileIdentity>) -> Result<(), SqlError> {
    file.as_ref().map_or(Ok(()), FileIdentity::ensure_same)
}

/// A storage error as its clients hear it.
pub(in crate::bus::sqlite) fn unavailable(error: &SqlError) -> Unavailable {
    Unavailable::Sqlite(describe(error))
}

/// A short, client-safe description of a storage error (no paths).
pub(super) fn describe(error: &SqlError) -> String {
    if let SqlError::SqliteFailure(failure, _) = error {
        if failure.extended_code == deadpool_sqlite::rusqlite::ffi::SQLITE_READONLY_DBMOVED {
            return "the database file was deleted or replaced".into();
        }
    }
    match error.sqlite_error_code() {
        Some(deadpool_sqlite::rusqlite::ErrorCode::DatabaseBusy) => "the progress database stayed locked".into(),
        Some(deadpool_sqlite::rusqlite::ErrorCode::DiskFull) => "the disk is full".into(),
        Some(deadpool_sqlite::rusqlite::ErrorCode::ReadOnly) => "the database is read-only".into(),
        Some(code) => format!("database error ({code:?})"),
        None => "database error".into(),
    }
}
