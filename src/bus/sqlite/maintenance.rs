//! The periodic upkeep of the shared file, as one tokio task: TTL cleanup in small batches, forgetting dead
//! instances, this instance's heartbeat, delivery watermarks and cursor batches (all queued as writer jobs),
//! expiring the presence of dead instances (every heartbeat), WAL checkpoints (on a pool connection, off
//! the commit path), and noticing that the database file was replaced (every heartbeat). It does no SQL
//! itself.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::{interval, MissedTickBehavior};

use super::identity::Found;
use super::writer::Job;
use super::SqliteBus;
use crate::clock::now_ms;
use crate::config::Config;
use crate::cursors::CursorBuffer;
use crate::hub::Hub;

/// Dead instances are forgotten (with their watermarks) after this many presence timeouts.
const FORGET_AFTER_TIMEOUTS: u32 = 60;

/// Runs until `stop` changes to true. Sends on `fatal` why the instance must stop, if it must.
pub async fn run(
    bus: SqliteBus,
    hub: Arc<Hub>,
    cursors: Arc<CursorBuffer>,
    config: Config,
    mut stop: watch::Receiver<bool>,
    fatal: oneshot::Sender<String>,
) {
    let mut fatal = Some(fatal);
    let mut cleanup = ticker(config.cleanup_interval);
    let mut heartbeat = ticker(config.heartbeat_interval);
    let mut watermarks = ticker(config.watermark_interval);
    let mut checkpoint = ticker(config.checkpoint_interval);
    let mut cursor_batch = ticker(config.cursor_batch);
    // Each instance checkpoints what it wrote: every commit to the file is some live instance's, so an
    // instance that wrote nothing since its last checkpoint has nothing to copy and skips the tick.
    let mut checkpointed_writes = None;
    loop {
        let job = tokio::select! {
            _ = stop.changed() => return,
            _ = heartbeat.tick() => {
                if bus.file_found() == Found::Other {
                    // The log position, epochs and presence of this process belong to the old file: only a
                    // fresh start can join the new one. (A deleted file only makes commits fail until the
                    // file is back; see `identity.rs`.)
                    let reason = format!(
                        "the database file {} was replaced by another file; stopping so that a restart opens it",
                        config.db.display()
                    );
                    if let Some(fatal) = fatal.take() {
                        let _ = fatal.send(reason);
                    }
                }
                if let Err(error) = bus.expire_dead_connections().await {
                    tracing::warn!(%error, "could not expire the connections of dead instances");
                }
                Job::Heartbeat
            }
            _ = cursor_batch.tick() => {
                let batches = cursors.take();
                if batches.is_empty() { continue }
                Job::Cursors(batches)
            }
            _ = watermarks.tick() => {
                let marks = hub.take_watermarks();
                if marks.is_empty() { continue }
                Job::Watermarks(marks)
            }
            _ = checkpoint.tick() => {
                let writes = bus.writes();
                if checkpointed_writes == Some(writes) { continue }
                match bus.checkpoint().await {
                    Ok(()) => checkpointed_writes = Some(writes),
                    Err(error) => tracing::warn!(%error, "WAL checkpoint failed"),
                }
                continue;
            }
            _ = cleanup.tick() => {
                clean_up(&bus, &config).await;
                continue;
            }
        };
        if bus.job(job).await.is_err() {
            return; // the writer has stopped
        }
    }
}

fn ticker(period: Duration) -> tokio::time::Interval {
    let mut ticker = interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker
}

/// Deletes expired rows one small batch (one short transaction) at a time until none are left, so the write
/// lock is never held for long and other writers interleave between batches.
async fn clean_up(bus: &SqliteBus, config: &Config) {
    let mut total = 0;
    loop {
        let (reply, deleted) = oneshot::channel();
        if bus.job(Job::Cleanup { limit: config.cleanup_batch, reply }).await.is_err() {
            return;
        }
        match deleted.await {
            Ok(Ok(n)) => {
                total += n;
                if n < config.cleanup_batch as usize {
                    break;
                }
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "cleanup batch failed; next round will retry");
                break;
            }
            Err(_) => return,
        }
    }
    if total > 0 {
        tracing::debug!(deleted = total, "expired messages deleted");
    }
    let forget_before = now_ms() - (config.presence_timeout * FORGET_AFTER_TIMEOUTS).as_millis() as i64;
    let _ = bus.job(Job::ForgetInstances { before_ms: forget_before }).await;
}
