//! The shared file's own periodic work, apart from the bus's upkeep (`core/upkeep.rs`) and off the commit
//! path: WAL checkpoints (on a pool connection) and this instance's delivery watermarks (a writer job).

use std::time::Duration;

use deadpool_sqlite::rusqlite::Connection;
use tokio_util::sync::CancellationToken;

use super::jobs::WriterJob;
use super::{schema, SqliteStore};
use crate::config::Config;
use crate::periodic::{every, ticker};
use crate::store::BusError;

/// WAL size (in frames; 64 MiB at 4 KiB pages) past which a checkpoint restarts the WAL.
const RESTART_WAL_FRAMES: i64 = 16 * 1024;

/// Runs until `stop` is cancelled.
pub async fn run(store: SqliteStore, config: Config, stop: CancellationToken) {
    if store.inner.memory {
        return; // memdb has no WAL, and no peer reads watermarks of a private database
    }
    let store = &store;
    tokio::join!(
        checkpoints(store, config.checkpoint_interval, stop.clone()),
        every(config.watermark_interval, stop, move || async move {
            let marks = store.inner.hub.take_watermarks();
            if !marks.is_empty() {
                let _ = store.job(WriterJob::Watermarks(marks)).await;
            }
        }),
    );
}

/// Checkpoints what this instance wrote. Every commit to the file is some live instance's, so an instance
/// that wrote nothing since its last checkpoint has nothing to copy and skips the tick.
async fn checkpoints(store: &SqliteStore, period: Duration, stop: CancellationToken) {
    let mut ticks = ticker(period);
    let mut checkpointed_writes = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let writes = store.writes();
        if checkpointed_writes == Some(writes) {
            continue;
        }
        match checkpoint(store).await {
            Ok(()) => checkpointed_writes = Some(writes),
            Err(error) => tracing::warn!(%error, "WAL checkpoint failed"),
        }
    }
}

/// Keeps the -wal file bounded, off the commit path (on a pool connection). A PASSIVE checkpoint copies
/// committed frames into the database file without blocking anyone, but under continuous commits the WAL
/// is never fully copied at the moment a writer begins, so SQLite never starts it over and it grows.
/// When it passes `RESTART_WAL_FRAMES`, a RESTART checkpoint holds the write lock just long enough to
/// copy the frames since the last passive one, so the next commit writes from the start of the file again
/// (and `journal_size_limit` trims it). It does not wait: a reader still on an older snapshot (a join
/// reading a big state), or another process checkpointing, makes it a no-op until the next tick, rather
/// than hold every writer behind that read.
async fn checkpoint(store: &SqliteStore) -> Result<(), BusError> {
    store
        .read(|conn| {
            let (_, frames) = wal_checkpoint(conn, "PASSIVE")?;
            if frames >= RESTART_WAL_FRAMES {
                // RESTART holds the write lock while it waits for readers: never behind a long read.
                let started = std::time::Instant::now();
                let (busy, frames_after) = schema::without_waiting(conn, |conn| wal_checkpoint(conn, "RESTART"))??;
                tracing::debug!(frames, busy, frames_after, took = ?started.elapsed(), "WAL restart checkpoint");
            }
            Ok(())
        })
        .await
}

/// Runs `PRAGMA wal_checkpoint(MODE)`; returns (busy, frames in the WAL). Another connection checkpointing at
/// the same moment is not an error: this one simply had nothing to do (busy = 1, frames = -1).
fn wal_checkpoint(conn: &Connection, mode: &str) -> deadpool_sqlite::rusqlite::Result<(i64, i64)> {
    match conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| Ok((r.get(0)?, r.get(1)?))) {
        Err(error) if error.sqlite_error_code() == Some(deadpool_sqlite::rusqlite::ErrorCode::DatabaseBusy) => {
            Ok((1, -1))
        }
        other => other,
    }
}
