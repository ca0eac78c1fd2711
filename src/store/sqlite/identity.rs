//! Whether the database path still names the file this process opened. In WAL mode SQLite goes on writing
//! to a file that was deleted or replaced under it (its descriptors still work), so without this check an
//! instance would keep acking messages that no other instance, and no restarted one, can ever read. The
//! writer checks before every commit (one `stat`, about a microsecond, per transaction); maintenance
//! checks on every heartbeat whether a different database now sits at the path.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use deadpool_sqlite::rusqlite::{ffi, Error as SqlError};

/// The opened file, and its `-wal` and `-shm` companions, as (path, device, inode) when opened.
#[derive(Debug, Clone)]
pub struct FileIdentity {
    db: Id,
    /// SQLite does not checkpoint or delete the WAL of a file that moved, so after a replacement the old
    /// WAL stays at the path, where the next process to open the new file would read the old file's pages
    /// from it. Remembered so that exactly that WAL (not one restored with the new file) can be removed.
    companions: Vec<Id>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Id {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Id {
    fn of(path: PathBuf) -> std::io::Result<Id> {
        let meta = std::fs::metadata(&path)?;
        Ok(Id { path, dev: meta.dev(), ino: meta.ino() })
    }

    fn check(&self) -> Found {
        match std::fs::metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == (self.dev, self.ino) => Found::Same,
            Ok(_) => Found::Other,
            Err(_) => Found::Missing,
        }
    }
}

/// What the path names now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// The file this process opened (possibly moved away and back).
    Same,
    /// Nothing: the file was deleted or moved away.
    Missing,
    /// Another file: the database was replaced.
    Other,
}

impl FileIdentity {
    /// Reads the identity of the file at `path` and of its `-wal` and `-shm` files; call once the file is
    /// open in WAL mode and this process holds connections to it.
    pub fn of(path: &Path) -> std::io::Result<FileIdentity> {
        let companion = |suffix: &str| {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            Id::of(PathBuf::from(name)).ok()
        };
        let companions = ["-wal", "-shm"].iter().filter_map(|suffix| companion(suffix)).collect();
        Ok(FileIdentity { db: Id::of(path.to_owned())?, companions })
    }

    pub fn check(&self) -> Found {
        self.db.check()
    }

    /// `Ok` while the path names the opened file; else SQLite's own error for it, so the commit is rolled
    /// back and its senders get `unavailable`.
    pub fn ensure_same(&self) -> Result<(), SqlError> {
        match self.check() {
            Found::Same => Ok(()),
            _ => Err(SqlError::SqliteFailure(
                ffi::Error::new(ffi::SQLITE_READONLY_DBMOVED),
                Some("the database file was deleted or replaced".into()),
            )),
        }
    }

    /// After the file was replaced: removes the old file's `-wal` and `-shm` if they are still the ones
    /// this process opened, so that the new file is not read with the old file's pages.
    pub fn remove_stale_companions(&self) {
        for companion in self.companions.iter().filter(|c| c.check() == Found::Same) {
            match std::fs::remove_file(&companion.path) {
                Ok(()) => tracing::info!(path = %companion.path.display(), "removed the replaced file's companion"),
                Err(error) => {
                    tracing::warn!(%error, path = %companion.path.display(), "could not remove a stale companion")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleted_moved_back_and_replaced_files_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let (path, aside) = (dir.path().join("relay.db"), dir.path().join("aside.db"));
        std::fs::write(&path, b"one").unwrap();
        let identity = FileIdentity::of(&path).unwrap();
        assert_eq!(identity.check(), Found::Same);
        std::fs::rename(&path, &aside).unwrap();
        assert_eq!(identity.check(), Found::Missing);
        let error = identity.ensure_same().unwrap_err();
        assert_eq!(error.sqlite_error_code(), Some(deadpool_sqlite::rusqlite::ErrorCode::ReadOnly));
        std::fs::rename(&aside, &path).unwrap();
        assert_eq!(identity.check(), Found::Same);
        std::fs::write(&aside, b"two").unwrap();
        std::fs::rename(&aside, &path).unwrap();
        assert_eq!(identity.check(), Found::Other);
    }

    #[test]
    fn only_the_companions_this_process_opened_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.db");
        let (wal, shm) = (dir.path().join("relay.db-wal"), dir.path().join("relay.db-shm"));
        for file in [&path, &wal, &shm] {
            std::fs::write(file, b"old").unwrap();
        }
        let identity = FileIdentity::of(&path).unwrap();
        let restored = dir.path().join("restored-shm");
        std::fs::write(&restored, b"restored with the new file").unwrap();
        std::fs::rename(&restored, &shm).unwrap();
        identity.remove_stale_companions();
        assert!(!wal.exists(), "the old WAL goes");
        assert!(shm.exists(), "a companion that is not the one opened stays");
    }
}
