//! What failed in the storage itself: the SQLite file or its read pool, a Redis server. Each failure keeps
//! the store's own error as its source, for logs and for code that needs to tell failures apart; what a
//! client is told (`unavailable` frames, 503 bodies) is its display, with no paths and no keys. Why a
//! request could not be served for other reasons (a timeout, a new epoch, a reply of the wrong shape) is
//! `core::Unavailable`'s.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use deadpool_sqlite::rusqlite;

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
    use crate::core::BusError;

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
