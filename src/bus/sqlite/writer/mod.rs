//! The one writer of this process: a dedicated thread that owns the only write connection, takes whatever
//! publishes are waiting (group commit), assigns each canvas's next seqs inside one `BEGIN IMMEDIATE`
//! transaction, commits, and only then lets the messages out: acks and local delivery through the hub,
//! results to API callers. This is the only place a seq is assigned.
//!
//! It also runs the small maintenance writes (TTL cleanup batches, heartbeat, watermarks), so a
//! process never has two of its own connections competing for the file's write lock.

use std::collections::hash_map::{Entry as MapEntry, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use deadpool_sqlite::rusqlite::{
    params, CachedStatement, Connection, Error as SqlError, OptionalExtension, TransactionBehavior,
};

mod consumer;
mod jobs;
mod refusal;

pub use consumer::ConsumerJob;
pub use jobs::Job;

pub(super) use refusal::unavailable;
use refusal::{describe, same_file};

use super::doorbell::Doorbell;
use super::identity::FileIdentity;
use super::{idempotency, objects, presence, Progress};
use crate::bus::committed::{self, Logged, Outcome};
use crate::bus::lanes::{Lanes, Round};
use crate::bus::{refuse_all, BusError, Origin, PresenceChange, Publish, Unavailable};
use crate::clock::now_ms;
use crate::config::Config;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::object_ops::Refusal;
use crate::protocol::CanvasId;

/// Fixed settings of the writer.
#[derive(Debug, Clone)]
pub struct WriterSettings {
    pub instance_id: String,
    pub listen: String,
    /// The file's random id: epochs are `{db_epoch}-{generation}`.
    pub db_epoch: String,
    pub ttl_ms: i64,
    /// How long a row is kept (`purge_at`) until a webhook delivers it: `--webhook-retention` with a
    /// webhook, else the TTL.
    pub keep_ms: i64,
    pub max_batch: usize,
    /// `--max-canvas-state`: an object op that would take a canvas's state past it is refused.
    pub max_canvas_state: usize,
    pub local_broadcast: bool,
    /// Peers whose heartbeat is older than this are not rung.
    pub peer_timeout_ms: i64,
}

impl WriterSettings {
    /// The writer's settings for instance `instance_id`, listening on `listen`, on the file of `db_epoch`.
    pub fn new(config: &Config, instance_id: &str, listen: &str, db_epoch: &str) -> Self {
        WriterSettings {
            instance_id: instance_id.to_owned(),
            listen: listen.to_owned(),
            db_epoch: db_epoch.to_owned(),
            ttl_ms: config.message_ttl.as_millis() as i64,
            keep_ms: config.consumers.retention().unwrap_or_default().max(config.message_ttl).as_millis() as i64,
            max_batch: config.max_batch,
            max_canvas_state: config.max_canvas_state,
            local_broadcast: config.local_broadcast,
            peer_timeout_ms: config.presence_timeout.as_millis() as i64,
        }
    }
}

pub struct Writer {
    /// The process's only write connection.
    conn: Connection,
    hub: Arc<Hub>,
    progress: Arc<Progress>,
    metrics: Metrics,
    settings: WriterSettings,
    /// Rings the peers after commits they must deliver; `None` with `--peer-wakeup false`.
    doorbell: Option<Doorbell>,
    /// The doorbells of live peers, refreshed with every heartbeat.
    peers: Vec<SocketAddr>,
    /// The file this writer opened, checked before every commit; `None` for `--bus memory`.
    file: Option<FileIdentity>,
}

const INSERT_MESSAGE: &str = "INSERT INTO message_queue
    (canvas_id, seq, message_type, payload, sender, origin_instance, created_at, expires_at, generation, purge_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

const LOAD_HEAD: &str = "SELECT last_seq, generation, state_bytes, state_seq FROM canvases WHERE canvas_id = ?1";

const CREATE_HEAD: &str = "INSERT INTO canvases (canvas_id, last_seq, generation, created_at, updated_at)
    VALUES (?1, 0, ?2, ?3, ?3)";

const STORE_HEAD: &str =
    "UPDATE canvases SET last_seq = ?2, updated_at = ?3, state_bytes = ?4, state_seq = ?5 WHERE canvas_id = ?1";

/// A canvas's head as a batch moves it.
#[derive(Debug, Clone, Copy)]
struct Head {
    last: u64,
    generation: u64,
    /// See `JsonObject::member_bytes`: the objects' JSON is this plus its opening brace.
    state_bytes: i64,
    /// The seq of the last message that changed the objects.
    state_seq: u64,
}

/// Takes the next generation from the file's counter: every new canvas and every reset gets one never used
/// before by any canvas, so a canvas deleted when idle and created again starts a new epoch.
pub(super) fn next_generation(tx: &Connection) -> Result<u64, SqlError> {
    let generation: i64 = tx
        .prepare_cached(
            "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'last_generation'
             RETURNING CAST(value AS INTEGER)",
        )?
        .query_row([], |r| r.get(0))?;
    Ok(generation as u64)
}

/// A canvas's head inside the caller's write transaction, creating the canvas (in a new generation) if it
/// has none.
fn load_head(tx: &Connection, canvas: &CanvasId, now: i64) -> Result<Head, SqlError> {
    let row: Option<(i64, i64, i64, i64)> = tx
        .prepare_cached(LOAD_HEAD)?
        .query_row([canvas.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    if let Some((last, generation, state_bytes, state_seq)) = row {
        return Ok(Head { last: last as u64, generation: generation as u64, state_bytes, state_seq: state_seq as u64 });
    }
    let generation = next_generation(tx)?;
    tx.prepare_cached(CREATE_HEAD)?.execute(params![canvas.as_str(), generation as i64, now])?;
    Ok(Head { last: 0, generation, state_bytes: 0, state_seq: 0 })
}

/// One publish inside its batch's transaction: a presence change recorded (and logged only if it is the
/// user's first or last connection), an object op folded into the canvas state (or refused), and the row
/// logged at the canvas's next seq with `insert` (`INSERT_MESSAGE`, prepared once per batch).
fn stage<'a>(
    tx: &Connection,
    insert: &mut CachedStatement<'_>,
    settings: &WriterSettings,
    heads: &mut HashMap<&'a CanvasId, Head>,
    publish: &'a Publish,
    now: i64,
) -> Result<Outcome, SqlError> {
    if let Origin::Presence { change, conn, name, .. } = &publish.origin {
        let (canvas, user, name) = (&publish.canvas, &publish.from, name.as_deref());
        let recorded = match *change {
            PresenceChange::Connect => presence::connect(tx, *conn, &settings.instance_id, canvas, user, name, now)?,
            PresenceChange::Disconnect => presence::disconnect(tx, *conn, canvas, user)?,
            PresenceChange::Expire { dead_after_ms } => presence::expire(tx, *conn, canvas, user, now - dead_after_ms)?,
        };
        match recorded {
            None => return Ok(Outcome::Unlogged { changed: false }),
            Some(false) => return Ok(Outcome::Unlogged { changed: true }),
            Some(true) => {}
        }
    }
    let head = match heads.entry(&publish.canvas) {
        MapEntry::Occupied(e) => e.into_mut(),
        MapEntry::Vacant(e) => e.insert(load_head(tx, &publish.canvas, now)?),
    };
    if let Some(seq) = idempotency::repeat_of(tx, publish, head.generation, now)? {
        return Ok(Outcome::Duplicate { seq });
    }
    if let Some(op) = &publish.object {
        let change = match objects::plan(tx, &publish.canvas, op, &publish.data)? {
            Ok(change) => change,
            Err(refusal) => return Ok(Outcome::Refused(refusal)),
        };
        let size = head.state_bytes + change.delta + 1;
        if change.delta > 0 && size > settings.max_canvas_state as i64 {
            let refusal = Refusal::CanvasFull { size: Some(size as u64), limit: settings.max_canvas_state };
            return Ok(Outcome::Refused(refusal));
        }
        head.state_bytes += change.delta;
        objects::apply(tx, &publish.canvas, op, &publish.data, change)?;
        head.state_seq = head.last + 1;
    }
    head.last += 1;
    insert.execute(params![
        publish.canvas.as_str(),
        head.last as i64,
        publish.kind.as_str(),
        publish.data.get(),
        publish.from.as_str(),
        settings.instance_id,
        now,
        now + settings.ttl_ms,
        head.generation as i64,
        now + settings.keep_ms,
    ])?;
    let logged = Logged { seq: head.last, generation: head.generation, id: tx.last_insert_rowid() };
    idempotency::remember(tx, publish, (logged.generation, logged.seq), now + settings.ttl_ms)?;
    Ok(Outcome::Logged(logged))
}

impl Writer {
    pub fn new(
        conn: Connection,
        hub: Arc<Hub>,
        progress: Arc<Progress>,
        metrics: Metrics,
        settings: WriterSettings,
        doorbell: Option<Doorbell>,
        file: Option<FileIdentity>,
    ) -> Self {
        Writer { conn, hub, progress, metrics, settings, doorbell, peers: Vec::new(), file }
    }

    /// Tells the other instances to read now (see `doorbell`).
    fn ring_peers(&self) {
        if let Some(doorbell) = &self.doorbell {
            self.metrics.doorbells_rung.increment(doorbell.ring(&self.peers) as u64);
        }
    }

    /// Runs until a `Stop` job or until every sender is gone. Each round takes what waits in the urgent lane,
    /// then up to `--max-batch` publishes from the queue (see `bus/lanes.rs`). The writer is an OS thread: it
    /// waits on the lanes through a small current-thread runtime of its own. If that cannot be built, the
    /// writer ends at once, which stops the instance (see `bus/workers.rs`).
    pub fn run(mut self, mut lanes: Lanes<Job>) {
        let runtime = match tokio::runtime::Builder::new_current_thread().build() {
            Ok(runtime) => runtime,
            Err(error) => return tracing::error!(%error, "the writer could not build its runtime"),
        };
        while let Some(Round { publishes, jobs }) = runtime.block_on(lanes.next_round(self.settings.max_batch)) {
            self.metrics.writer_queue_depth.set(lanes.depth() as f64);
            if !publishes.is_empty() {
                self.commit(publishes);
            }
            let mut jobs = jobs.into_iter();
            while let Some(job) = jobs.next() {
                if let Job::Stop(done) = job {
                    // Jobs that came in the same round after the stop go with the ones still queued.
                    self.stop(&mut lanes, jobs.collect());
                    let _ = done.send(());
                    return;
                }
                self.run_job(job);
            }
        }
    }

    /// Commits one batch and tells everyone involved.
    fn commit(&mut self, batch: Vec<Publish>) {
        let started = Instant::now();
        let now = now_ms();
        match self.try_commit(&batch, now) {
            Ok(outcomes) => {
                committed::record(&self.metrics, &outcomes, started);
                self.progress.write_succeeded();
                let rings = outcomes.iter().any(|o| o.logged().is_some());
                self.deliver(batch, outcomes, now);
                // After the local fan-out: on a busy host the woken peer can take this core, and the local
                // clients are the ones waiting for an ack.
                if rings {
                    self.ring_peers();
                }
            }
            Err(error) => {
                self.metrics.commit_errors.increment(1);
                let message = describe(&error);
                tracing::error!(%error, messages = batch.len(), "commit failed; senders get `unavailable`");
                self.progress.write_failed(now, &message);
                refuse_all(batch, BusError::Unavailable(Unavailable::Sqlite(message)));
            }
        }
    }

    /// The transaction: seqs assigned in arrival order, one canvas head read and written per canvas, object
    /// ops folded into the canvas state and presence changes into the connection list as they are logged. An
    /// object op the state refuses (update or delete of a missing object, or one that would take the state
    /// past `--max-canvas-state`) is not logged and takes no seq; neither does a presence change that is not
    /// the user's first or last connection to the canvas.
    fn try_commit(&mut self, batch: &[Publish], now: i64) -> Result<Vec<Outcome>, SqlError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut heads: HashMap<&CanvasId, Head> = HashMap::new();
        let mut insert = tx.prepare_cached(INSERT_MESSAGE)?;
        let outcomes: Vec<Outcome> = batch
            .iter()
            .map(|publish| stage(&tx, &mut insert, &self.settings, &mut heads, publish, now))
            .collect::<Result<_, _>>()?;
        drop(insert);
        let mut store_head = tx.prepare_cached(STORE_HEAD)?;
        for (canvas, head) in &heads {
            store_head.execute(params![
                canvas.as_str(),
                head.last as i64,
                now,
                head.state_bytes,
                head.state_seq as i64
            ])?;
        }
        drop(store_head);
        same_file(&self.file)?;
        // Acks are registered before COMMIT: once committed, the watcher may read a row before we deliver it,
        // and whichever path delivers the seq must know its sender gets the ack.
        committed::expect_acks(&self.hub, batch, &outcomes);
        if let Err(error) = tx.commit() {
            committed::forget_acks(&self.hub, batch, &outcomes);
            return Err(error);
        }
        Ok(outcomes)
    }

    /// After commit: answer the publishers and deliver to local rooms (see `bus::committed`), then move the
    /// read cursor past our own rows when nothing foreign is between, and wake the watcher if a room now
    /// waits on rows committed by another process before ours.
    fn deliver(&self, batch: Vec<Publish>, outcomes: Vec<Outcome>, now: i64) {
        let hub = &self.hub;
        let delivered = committed::deliver(hub, &self.metrics, batch, outcomes, now, self.settings.local_broadcast);
        if !self.settings.local_broadcast {
            self.progress.signal.wake(delivered.waiting);
            return;
        }
        // Only now that every row of the batch has been offered: the cursor promises that every row at or
        // below it has been (the watcher's hole check relies on it). The batch's rows are consecutive ids. A
        // row the room could not take (`read_back`) must be read back, so the cursor must not skip it.
        if let (Some((first, last)), false) = (delivered.ids, delivered.read_back) {
            self.progress.skip_own_rows(first, last);
        }
        if delivered.waiting.is_empty() {
            self.progress.signal.poke();
        } else {
            self.progress.signal.wake(delivered.waiting);
        }
    }

    /// Clean stop: refuse whatever is still queued (the server is going away), answer the barriers and stops
    /// among the jobs left (`later`: the ones behind the stop in its own round), then deregister.
    fn stop(&mut self, lanes: &mut Lanes<Job>, later: Vec<Job>) {
        for job in later.into_iter().chain(lanes.close()) {
            if let Job::Barrier(done) | Job::Stop(done) = job {
                let _ = done.send(());
            }
        }
        let id = self.settings.instance_id.clone();
        if let Err(error) = self.write(|tx| tx.execute("DELETE FROM instances WHERE instance_id = ?1", [id]).map(drop))
        {
            tracing::warn!(%error, "could not deregister this instance");
        }
    }
}

#[cfg(test)]
mod tests;
