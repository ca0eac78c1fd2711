//! Opening the shared file: the PRAGMAs every connection gets, and the numbered migrations applied at start.
//!
//! Migrations are the files of `migrations/`, compiled in, applied in order inside one `BEGIN IMMEDIATE`
//! transaction and tracked in `PRAGMA user_version`. Because the version is read inside the write
//! transaction, several processes starting at once on one file apply each migration exactly once.

use std::cell::Cell;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use deadpool_sqlite::rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::config::Synchronous;

/// One migration: SQL, and code that runs after it in the same transaction where SQL alone cannot do it.
struct Migration {
    sql: &'static str,
    then: Option<fn(&Connection) -> deadpool_sqlite::rusqlite::Result<()>>,
}

const fn sql(sql: &'static str) -> Migration {
    Migration { sql, then: None }
}

/// The migrations, in order. Append; never edit one that has shipped.
const MIGRATIONS: &[Migration] = &[
    sql(include_str!("../../../migrations/0001_initial.sql")),
    sql(include_str!("../../../migrations/0002_canvas_state.sql")),
    sql(include_str!("../../../migrations/0003_cursor_batches.sql")),
    sql(include_str!("../../../migrations/0004_presence_resets_users.sql")),
    sql(include_str!("../../../migrations/0005_peer_wakeups.sql")),
    sql(include_str!("../../../migrations/0006_big_canvases.sql")),
    sql(include_str!("../../../migrations/0007_removals.sql")),
    sql(include_str!("../../../migrations/0008_idempotency_keys.sql")),
    sql(include_str!("../../../migrations/0009_consumers.sql")),
    sql(include_str!("../../../migrations/0010_presence_state.sql")),
    Migration {
        sql: include_str!("../../../migrations/0011_snapshots.sql"),
        then: Some(super::migrate_11::objects_to_snapshots),
    },
    sql(include_str!("../../../migrations/0012_history.sql")),
];

/// Settings every connection to the file is opened with.
#[derive(Debug, Clone, Copy)]
pub struct ConnSettings {
    pub synchronous: Synchronous,
    pub busy_timeout: Duration,
    /// An in-memory database (`--bus memory`): SQLite's memdb VFS, which has no WAL (see `configure`).
    pub memory: bool,
}

/// The name of a private in-memory database: SQLite's memdb VFS shares a database whose name starts with
/// `/` between the connections of one process, for as long as one of them is open.
pub fn memory_uri(name: &str) -> String {
    format!("file:/canvas-relay-{name}?vfs=memdb")
}

thread_local! {
    /// The busy timeout of the instance whose statements this thread runs. SQLite's busy handler is a plain
    /// function pointer, with no context, called on the thread that runs the statement, so it reads its
    /// limit from here; every entry point that runs statements for an instance says it first
    /// ([`use_busy_timeout`]): the opening of the file, the writer and watcher threads as they start, and
    /// each read on the pool. Two instances in one process keep their own limits.
    static BUSY_TIMEOUT: Cell<Duration> = const { Cell::new(Duration::from_secs(5)) };
}

/// Sets the busy timeout for the statements this thread runs from now on (see `BUSY_TIMEOUT`).
pub fn use_busy_timeout(timeout: Duration) {
    BUSY_TIMEOUT.with(|limit| limit.set(timeout));
}

/// Waits for another process's write lock in short steps. SQLite's built-in handler sleeps 1, 2, 5, 10 ...
/// 100 ms between tries, which would add milliseconds to a commit that collides with another process's
/// 100 µs transaction; we retry every 50 µs for the first millisecond, then every 500 µs.
fn busy_handler(attempt: i32) -> bool {
    let attempt = attempt.max(0) as u64;
    let (step_us, waited_us) = if attempt < 20 { (50, attempt * 50) } else { (500, 1_000 + (attempt - 20) * 500) };
    if waited_us >= BUSY_TIMEOUT.with(Cell::get).as_micros() as u64 {
        return false;
    }
    std::thread::sleep(Duration::from_micros(step_us));
    true
}

/// Runs `f` on `conn` with no busy waiting: a lock another connection holds fails at once with
/// SQLITE_BUSY instead of being waited for. For work that holds the write lock while it waits for readers
/// (a RESTART checkpoint), so that a long read (a big join's) never makes every writer wait behind it.
pub fn without_waiting<T>(conn: &Connection, f: impl FnOnce(&Connection) -> T) -> deadpool_sqlite::rusqlite::Result<T> {
    conn.busy_timeout(Duration::ZERO)?;
    let result = f(conn);
    conn.busy_handler(Some(busy_handler))?;
    Ok(result)
}

/// Opens a connection to the shared file with the relay's PRAGMAs.
pub fn open(path: &Path, settings: ConnSettings) -> anyhow::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let opened =
        Connection::open_with_flags(path, flags).with_context(|| format!("opening {}", path.display())).and_then(
            |conn| configure(&conn, settings).map(|()| conn).with_context(|| format!("configuring {}", path.display())),
        );
    // SQLite says only "unable to open database file" when it cannot create the -wal or -shm file.
    match (opened, settings.memory) {
        (Err(error), false) => Err(match unwritable(path) {
            Some(why) => error.context(why),
            None => error,
        }),
        (opened, _) => opened,
    }
}

/// Why the relay cannot write at `path`, if that is what is wrong: it writes the file and, in WAL mode,
/// `-wal` and `-shm` files beside it. Probes by opening the file for appending (nothing is written) and by
/// creating and removing a file in its directory.
fn unwritable(path: &Path) -> Option<String> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let probe = dir.join(".canvas-relay-write-probe");
    let failed = match path.exists() {
        true => std::fs::OpenOptions::new().append(true).open(path).err(),
        false => None,
    };
    let failed = failed.or_else(|| std::fs::File::create(&probe).err());
    let _ = std::fs::remove_file(&probe);
    let why = match failed?.kind() {
        std::io::ErrorKind::ReadOnlyFilesystem => "the file system is read-only",
        std::io::ErrorKind::PermissionDenied => "no permission to write there",
        _ => return None,
    };
    Some(format!(
        "{} is not writable ({why}): the relay writes it and its -wal and -shm files beside it",
        path.display()
    ))
}

/// The PRAGMAs of every connection (the writer's, the watcher's and the pool's).
pub fn configure(conn: &Connection, settings: ConnSettings) -> deadpool_sqlite::rusqlite::Result<()> {
    use_busy_timeout(settings.busy_timeout);
    conn.busy_handler(Some(busy_handler))?;
    conn.set_prepared_statement_cache_capacity(64);
    if settings.memory {
        // memdb keeps its rollback journal in memory and has no WAL: readers hold off the writer's commit
        // for the length of their read (`join_blocking` orders its locks for this), and there is nothing to
        // checkpoint or sync.
        return Ok(());
    }
    let mode = enable_wal(conn, settings.busy_timeout)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(deadpool_sqlite::rusqlite::Error::InvalidParameterName(format!(
            "journal_mode is {mode}, WAL is required (is the file on a network file system?)"
        )));
    }
    let synchronous = match settings.synchronous {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    // wal_autocheckpoint = 0: SQLite would otherwise checkpoint inside whichever connection commits past
    // 1000 WAL pages, i.e. our writer, stalling commits for the copy and the database fsync (the p99 of
    // acks showed it). `maintenance::checkpoint` runs them on a pool connection instead.
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {synchronous};
         PRAGMA temp_store = MEMORY;
         PRAGMA wal_autocheckpoint = 0;
         PRAGMA journal_size_limit = 67108864;"
    ))?;
    Ok(())
}

/// Switches the file to WAL (a no-op once it is). On a fresh file several processes starting at once race for
/// the exclusive lock the switch needs, and SQLite answers SQLITE_BUSY without calling the busy handler there
/// (to avoid deadlock), so the switch is retried here, bounded by the busy timeout.
fn enable_wal(conn: &Connection, busy_timeout: Duration) -> deadpool_sqlite::rusqlite::Result<String> {
    let deadline = std::time::Instant::now() + busy_timeout;
    loop {
        // journal_mode returns a row, so it is queried rather than executed.
        match conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get::<_, String>(0)) {
            Err(error)
                if error.sqlite_error_code() == Some(deadpool_sqlite::rusqlite::ErrorCode::DatabaseBusy)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            result => return result,
        }
    }
}

/// Brings a fresh file to schema `version`, as a binary of that schema left it (to test what the next
/// migrations do to its data).
#[cfg(test)]
pub fn migrate_to(conn: &Connection, version: u32) -> anyhow::Result<()> {
    for migration in &MIGRATIONS[..version as usize] {
        conn.execute_batch(migration.sql)?;
        if let Some(then) = migration.then {
            then(conn)?;
        }
    }
    conn.pragma_update(None, "user_version", version)?;
    Ok(())
}

/// The settings tests open files with.
#[cfg(test)]
pub fn tests_settings() -> ConnSettings {
    ConnSettings { synchronous: Synchronous::Normal, busy_timeout: Duration::from_secs(5), memory: false }
}

/// Brings the file's schema up to date. Safe to run from several processes at once.
pub fn migrate(conn: &mut Connection) -> anyhow::Result<u32> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).context("locking the file to migrate")?;
    let current: u32 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    anyhow::ensure!(
        current as usize <= MIGRATIONS.len(),
        "the database is at schema version {current}, newer than this binary knows ({}): upgrade canvas-relay",
        MIGRATIONS.len()
    );
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(migration.sql).with_context(|| format!("applying migration {}", index + 1))?;
        if let Some(then) = migration.then {
            then(&tx).with_context(|| format!("applying migration {}", index + 1))?;
        }
    }
    let latest = MIGRATIONS.len() as u32;
    tx.pragma_update(None, "user_version", latest)?;
    tx.commit().context("committing migrations")?;
    Ok(latest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ConnSettings {
        ConnSettings { synchronous: Synchronous::Normal, busy_timeout: Duration::from_secs(5), memory: false }
    }

    fn schema_of(conn: &Connection) -> Vec<(String, String)> {
        let mut stmt = conn
            .prepare(
                "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY name",
            )
            .unwrap();
        let rows = stmt.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))).unwrap();
        // Compare statements without comments and whitespace differences (ALTER TABLE ADD COLUMN appends
        // ", column" on a new line, which normalizes to " , column").
        rows.map(|r| {
            let (name, sql) = r.unwrap();
            let sql = sql.lines().map(|l| l.split("--").next().unwrap_or("")).collect::<String>();
            (name, sql.split_whitespace().collect::<Vec<_>>().join(" ").replace(" ,", ","))
        })
        .collect()
    }

    #[test]
    fn migrations_build_exactly_schema_sql() {
        let dir = tempfile::tempdir().unwrap();
        let mut migrated = open(&dir.path().join("m.db"), settings()).unwrap();
        assert_eq!(migrate(&mut migrated).unwrap(), MIGRATIONS.len() as u32);
        let reference = open(&dir.path().join("s.db"), settings()).unwrap();
        reference.execute_batch(include_str!("../../../schema.sql")).unwrap();
        assert_eq!(schema_of(&migrated), schema_of(&reference));
        let version: u32 = reference.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, MIGRATIONS.len() as u32, "schema.sql declares the latest version");
    }

    #[test]
    fn migrating_twice_and_concurrently_applies_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || {
                    migrate(&mut open(&path, settings()).map_err(|e| format!("{e:#}")).unwrap()).unwrap()
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), MIGRATIONS.len() as u32);
        }
        let conn = open(&path, settings()).unwrap();
        let epochs: i64 = conn.query_row("SELECT count(*) FROM meta WHERE key = 'db_epoch'", [], |r| r.get(0)).unwrap();
        assert_eq!(epochs, 1);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open(&dir.path().join("n.db"), settings()).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        assert!(migrate(&mut conn).unwrap_err().to_string().contains("newer"));
    }
}
