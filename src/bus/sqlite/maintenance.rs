//! The periodic upkeep of the shared file, as independent loops so that none waits for another: the
//! heartbeat (with dead instances' expiry, restoring this instance's presence after a late heartbeat, and
//! the checks that stop a broken instance), watermarks, WAL checkpoints (on a pool connection, off the
//! commit path) and cleanup (expired rows, then idle empty canvases, in small batches). Cursor batches are
//! sent by the bus for every store (`Store::send_cursors`). Writes are writer jobs; heartbeats take the
//! writer's urgent lane, so neither a publish backlog nor a long cleanup can make this instance look dead
//! to the others. It does no SQL itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::identity::Found;
use super::writer::Job;
use super::SqliteBus;
use crate::bus::Store;
use crate::clock::now_ms;
use crate::config::Config;
use crate::hub::Hub;
use crate::periodic::{every, ticker};

/// Dead instances are forgotten (with their watermarks) after this many presence timeouts.
const FORGET_AFTER_TIMEOUTS: u32 = 60;

/// Runs until `stop` is cancelled. Sends on `fatal` why the instance must stop, if it must.
pub async fn run(
    bus: SqliteBus,
    hub: Arc<Hub>,
    config: Config,
    stop: CancellationToken,
    fatal: oneshot::Sender<String>,
) {
    let (bus, hub, config) = (&bus, &hub, &config);
    tokio::join!(
        heartbeats(bus, hub, config, stop.clone(), fatal),
        every(config.watermark_interval, stop.clone(), move || async move {
            let marks = hub.take_watermarks();
            if !marks.is_empty() {
                let _ = bus.job(Job::Watermarks(marks)).await;
            }
        }),
        checkpoints(bus, config.checkpoint_interval, stop.clone()),
        every(config.cleanup_interval, stop, move || clean_up(bus, config)),
    );
}

/// This instance's heartbeat, and what is checked with it: a writer, watcher or doorbell thread that ended,
/// or a database file replaced under the instance, stops it (`fatal`); connections of dead instances are
/// expired; and after a heartbeat late enough that others may have expired this instance's connections,
/// those are registered again.
async fn heartbeats(
    bus: &SqliteBus,
    hub: &Hub,
    config: &Config,
    stop: CancellationToken,
    fatal: oneshot::Sender<String>,
) {
    let mut fatal = Some(fatal);
    let mut ticks = ticker(config.heartbeat_interval);
    let mut last_beat = Instant::now();
    // Others expire an instance silent for the presence timeout less one heartbeat: half of that is late
    // enough to say so in the log.
    let late_after = config.presence_timeout.saturating_sub(config.heartbeat_interval) / 2;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if let Some(reason) = stop_reason(bus, config) {
            if let Some(fatal) = fatal.take() {
                let _ = fatal.send(reason);
            }
            continue;
        }
        let (done, committed) = oneshot::channel();
        if bus.job(Job::Heartbeat(Some(done))).await.is_err() {
            return; // the writer has stopped
        }
        if committed.await == Ok(true) {
            let since_last = last_beat.elapsed();
            last_beat = Instant::now();
            if since_last > late_after {
                tracing::warn!(
                    ?since_last,
                    "a heartbeat was late: others may have expired this instance's connections"
                );
            }
            if let Err(error) = bus.restore_presence(hub).await {
                tracing::warn!(%error, "could not check this instance's presence");
            }
        }
        if let Err(error) = bus.expire_dead_connections().await {
            tracing::warn!(%error, "could not expire the connections of dead instances");
        }
    }
}

/// Why the instance must stop now, if it must.
fn stop_reason(bus: &SqliteBus, config: &Config) -> Option<String> {
    if let Some(worker) = bus.stopped_worker() {
        return Some(format!("the {worker} thread stopped unexpectedly; stopping so that a restart brings it back"));
    }
    // The log position, epochs and presence of this process belong to the old file: only a fresh start can
    // join the new one. (A deleted file only makes commits fail until the file is back; see `identity.rs`.)
    (bus.file_found() == Found::Other).then(|| {
        format!(
            "the database file {} was replaced by another file; stopping so that a restart opens it",
            config.db.display()
        )
    })
}

/// Checkpoints what this instance wrote. Every commit to the file is some live instance's, so an instance
/// that wrote nothing since its last checkpoint has nothing to copy and skips the tick.
async fn checkpoints(bus: &SqliteBus, period: Duration, stop: CancellationToken) {
    let mut ticks = ticker(period);
    let mut checkpointed_writes = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let writes = bus.writes();
        if checkpointed_writes == Some(writes) {
            continue;
        }
        match bus.checkpoint().await {
            Ok(()) => checkpointed_writes = Some(writes),
            Err(error) => tracing::warn!(%error, "WAL checkpoint failed"),
        }
    }
}

/// Deletes expired rows, then idle empty canvases, one small batch (one short transaction) at a time until
/// none are left, so the write lock is never held for long and other writers interleave between batches.
async fn clean_up(bus: &SqliteBus, config: &Config) {
    let limit = config.cleanup_batch;
    let rows = batches(|reply| Job::Cleanup { limit, reply }, bus, limit).await;
    // Idle for the TTL (every row expired) and a cleanup round more, so the rows are gone too.
    let idle_before = now_ms() - (config.message_ttl + config.cleanup_interval).as_millis() as i64;
    let canvases = batches(|reply| Job::DropIdleCanvases { idle_before, limit, reply }, bus, limit).await;
    if rows + canvases > 0 {
        tracing::debug!(rows, canvases, "expired messages and idle canvases deleted");
    }
    let forget_before = now_ms() - (config.presence_timeout * FORGET_AFTER_TIMEOUTS).as_millis() as i64;
    let _ = bus.job(Job::ForgetInstances { before_ms: forget_before }).await;
}

/// Runs a deleting job until a batch comes back short; returns how many went in all.
async fn batches(job: impl Fn(oneshot::Sender<Result<usize, String>>) -> Job, bus: &SqliteBus, limit: u32) -> usize {
    let mut total = 0;
    loop {
        let (reply, deleted) = oneshot::channel();
        if bus.job(job(reply)).await.is_err() {
            return total;
        }
        match deleted.await {
            Ok(Ok(n)) => {
                total += n;
                if n < limit as usize {
                    return total;
                }
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "cleanup batch failed; next round will retry");
                return total;
            }
            Err(_) => return total,
        }
    }
}

impl SqliteBus {
    /// Registers again every local connection that is missing from the shared connection list
    /// ([`crate::bus::register_again`]).
    async fn restore_presence(&self, hub: &Hub) -> Result<(), crate::bus::BusError> {
        let own = self.inner.instance_id.clone();
        // Every heartbeat, one count: the list is read only when rows are missing.
        let (_, local) = hub.counts();
        let count = self.read({
            let own = own.clone();
            move |conn| super::presence::instance_connection_count(conn, &own)
        });
        if count.await? >= local as u64 {
            return Ok(());
        }
        let registered = self.read(move |conn| super::presence::instance_connections(conn, &own)).await?;
        crate::bus::register_again(hub, &registered, |publish, urgent| self.publish(publish, urgent)).await
    }
}
