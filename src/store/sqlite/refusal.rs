//! When the file fails: describing storage errors to clients without leaking paths.

use deadpool_sqlite::rusqlite::Error as SqlError;

use crate::store::StoreError;

/// A storage error as its clients hear it (through its display), the error itself kept as the source.
pub(crate) fn unavailable(error: SqlError) -> StoreError {
    StoreError::from(error)
}

/// A short, client-safe description of a storage error (no paths).
pub(crate) fn describe(error: &SqlError) -> String {
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
