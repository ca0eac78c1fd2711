//! The bus on Redis Streams (`--bus redis://HOST:PORT/DB`), for instances on several hosts. The contract is
//! the SQLite bus's, kept the same way:
//!
//! - **Seq, log, TTL, state, presence: one script.** `publish.lua` assigns each canvas's next seq, appends to
//!   the canvas's stream (entry id = generation + 1, seq), trims entries past the TTL, folds object ops and
//!   records presence, atomically: two instances can never take the same seq or fold out of order.
//! - **Delivery without polling.** Each process blocks in one XREAD over the streams of the canvases it
//!   has clients on (`reader.rs`), from where each room has delivered; its own commits reach its clients at
//!   once (`publisher.rs`), and rooms order both paths as on SQLite.
//! - **Joins and resume.** `snapshot.lua` reads head, objects, presence and the resume replay atomically;
//!   entries a room delivered after that snapshot are sent to the joiner before anything live.
//! - **Redis down.** Commits fail with `unavailable` (no ack), `/health` is critical, the connection
//!   manager and the reader reconnect with backoff, and rooms read on from where they were.
//! - **Redis lost data.** The store's epoch (`relay:epoch`) is part of every canvas epoch. A Redis that
//!   comes back empty gets a new one; one that comes back from an older snapshot is caught by its write
//!   count going backwards and given a new one (`maintenance.rs`). Either way every client is cut and
//!   reloads rather than trust reused seqs.

mod api;
mod entry;
mod keys;
pub mod maintenance;
mod publisher;
mod reader;
mod scripts;
mod shared;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Value};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use self::entry::{stream_id, LogEntry};
use self::publisher::{Publisher, Request};
use self::reader::Reader;
use self::shared::Shared;
use crate::bus::views::StorageFigures;
use crate::bus::{BusError, BusFigures, JoinRequest, Joined, Publish};
use crate::clock::now_ms;
use crate::config::Config;
use crate::hub::{Hub, Subscriber};
use crate::metrics::Metrics;
use crate::protocol::CanvasId;

/// How long one Redis command may take before it counts as a failure.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What `/health` reports about Redis.
#[derive(Debug, Clone, Serialize)]
pub struct RedisFigures {
    /// Round trip of the health read just now (ms).
    pub redis_ping_ms: f64,
    /// The store's epoch (part of every canvas epoch).
    pub store_epoch: Option<String>,
    /// Instances with a heartbeat within the presence timeout, this one included.
    pub live_instances: i64,
}

/// The Redis bus of one process. Cheap to clone.
#[derive(Clone)]
pub struct RedisBus {
    inner: Arc<Inner>,
}

struct Inner {
    /// Commands and scripts; reconnects by itself with backoff.
    conn: ConnectionManager,
    publisher: mpsc::Sender<Request>,
    shared: Arc<Shared>,
    hub: Arc<Hub>,
    instance_id: String,
    ttl_ms: i64,
    max_resume: u64,
    /// An instance silent for longer than this is dead (as on SQLite: presence timeout less a heartbeat).
    dead_after_ms: i64,
    presence_timeout_ms: i64,
    writer_capacity: usize,
    stop_reader: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl RedisBus {
    /// Connects (failing if Redis cannot be reached at start), registers this instance and starts the
    /// publisher and the stream reader.
    pub async fn open(url: &str, config: &Config, instance_id: &str, hub: Arc<Hub>, metrics: Metrics) -> anyhow::Result<Self> {
        let client = Client::open(url).context("parsing the Redis URL")?;
        // A command waits for the manager's reconnection attempt, so the attempt is short (two retries, 50
        // then 100 ms): while Redis is down a commit fails within ~150 ms and its senders get `unavailable`
        // instead of waiting for an ack; the next command (at the latest the next heartbeat) tries again.
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1))
            .set_number_of_retries(2);
        let conn = tokio::time::timeout(RESPONSE_TIMEOUT * 2, client.get_connection_manager_with_config(manager))
            .await
            .context("connecting to Redis timed out")?
            .context("connecting to Redis")?;
        let shared = Arc::new(Shared::default());
        let (publisher_tx, publisher_rx) = mpsc::channel(config.writer_queue);
        let (stop_reader, reader_stopped) = watch::channel(false);
        let publisher = Publisher {
            conn: conn.clone(),
            hub: hub.clone(),
            shared: shared.clone(),
            metrics: metrics.clone(),
            instance_id: instance_id.to_owned(),
            ttl_ms: config.message_ttl.as_millis() as i64,
            max_batch: config.max_batch,
            local_broadcast: config.local_broadcast,
        };
        let reader = Reader {
            client,
            hub: hub.clone(),
            shared: shared.clone(),
            metrics,
            instance_id: instance_id.to_owned(),
            ttl_ms: config.message_ttl.as_millis() as i64,
        };
        let bus = RedisBus {
            inner: Arc::new(Inner {
                conn,
                publisher: publisher_tx,
                shared,
                hub,
                instance_id: instance_id.to_owned(),
                ttl_ms: config.message_ttl.as_millis() as i64,
                max_resume: config.max_resume,
                dead_after_ms: config.presence_timeout.saturating_sub(config.heartbeat_interval).as_millis() as i64,
                presence_timeout_ms: config.presence_timeout.as_millis() as i64,
                writer_capacity: config.writer_queue,
                stop_reader,
                tasks: Mutex::new(Vec::new()),
            }),
        };
        // Registered before the instance announces itself, so peers count it from the start.
        bus.heartbeat().await.map_err(|e| anyhow::anyhow!("registering with Redis: {e}"))?;
        let tasks = vec![tokio::spawn(publisher.run(publisher_rx)), tokio::spawn(reader.run(reader_stopped))];
        *bus.inner.tasks.lock().unwrap_or_else(|p| p.into_inner()) = tasks;
        Ok(bus)
    }

    fn conn(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    /// A fresh id, offered to a script in case the store has no epoch yet (see `store_epoch` in the Lua).
    fn candidate() -> String {
        Uuid::new_v4().to_string()
    }

    /// Queues a logged message for the publisher. Waits when its queue is full (back-pressure).
    pub async fn publish(&self, publish: Publish) -> Result<(), BusError> {
        self.inner.publisher.send(Request::Publish(publish)).await.map_err(|_| BusError::ShuttingDown)
    }

    /// Returns once everything queued before the call is committed or refused.
    pub async fn flush(&self) -> Result<(), BusError> {
        let (done, committed) = oneshot::channel();
        self.inner.publisher.send(Request::Barrier(done)).await.map_err(|_| BusError::ShuttingDown)?;
        committed.await.map_err(|_| BusError::ShuttingDown)
    }

    /// Subscribes a connection whose presence is registered, and says where its stream starts. The snapshot is read first (a Redis round trip cannot hold
    /// the room's lock); then, under the lock: a room that has delivered past the snapshot makes the joiner
    /// start after what it delivered, and those entries are read and sent before anything live, so the
    /// client still sees every seq after its welcome once, in order. A reset between the two retries.
    pub async fn subscribe(&self, request: JoinRequest) -> Result<Joined, BusError> {
        let hub = &self.inner.hub;
        loop {
            let snap = self.snapshot(&request.canvas, request.resume.as_ref(), true).await?;
            self.inner.shared.observe_epoch(&snap.store_epoch, hub);
            let Some((delivered, created)) = place(hub, &request, &snap) else { continue };
            if created {
                self.wake_reader().await;
            }
            let presence = snap.presence_json();
            let mut replay = snap.replay;
            if delivered > snap.seq {
                match self.entries(&request.canvas, snap.generation, snap.seq, delivered).await {
                    Ok(frames) if frames.len() as u64 == delivered - snap.seq => replay.extend(frames),
                    Ok(_) => {
                        hub.leave(&request.canvas, request.conn);
                        return Err(BusError::Unavailable("the canvas moved on while joining: retry".into()));
                    }
                    Err(error) => {
                        hub.leave(&request.canvas, request.conn);
                        return Err(error);
                    }
                }
            }
            let epoch = format!("{}-{}", snap.store_epoch, snap.generation);
            let seq = if snap.resumed { request.resume.as_ref().map_or(snap.seq, |r| r.since) } else { snap.seq };
            return Ok(Joined { epoch, seq, resumed: snap.resumed, replay, objects: snap.objects, presence });
        }
    }

    /// The frames of seqs `after + 1 ..= upto` of one generation of a canvas.
    async fn entries(&self, canvas: &CanvasId, generation: u64, after: u64, upto: u64) -> Result<Vec<Message>, BusError> {
        let reply: Value = redis::cmd("XRANGE")
            .arg(keys::log(canvas))
            .arg(stream_id(generation, after + 1))
            .arg(stream_id(generation, upto))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let epoch = self.inner.shared.epoch().unwrap_or_default();
        Ok(LogEntry::parse_all(&reply).iter().map(|e| e.frame(canvas.as_str(), &epoch)).collect())
    }

    /// Ends the reader's blocked XREAD so that its next one includes a canvas that just got a room.
    async fn wake_reader(&self) {
        let wake = redis::cmd("XADD")
            .arg(keys::wake(&self.inner.instance_id))
            .arg("MAXLEN")
            .arg(1)
            .arg("*")
            .arg("w")
            .arg(1)
            .exec_async(&mut self.conn())
            .await;
        if let Err(error) = wake {
            // The reader then picks the canvas up when its read times out (or reconnects).
            tracing::warn!(%error, "could not wake the stream reader");
        }
    }

    /// This process's rooms.
    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    /// The figures behind `/health`; an error when Redis does not answer.
    pub async fn figures(&self) -> Result<BusFigures, BusError> {
        let started = Instant::now();
        let (beats, (secs, micros)): (Vec<i64>, (i64, i64)) = redis::pipe()
            .hvals(keys::INSTANCES)
            .cmd("TIME")
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let ping = started.elapsed();
        let live_after = secs * 1000 + micros / 1000 - self.inner.presence_timeout_ms;
        let now = now_ms();
        let shared = &self.inner.shared;
        let (last_error, last_error_age_ms) = shared.last_error.report(now);
        Ok(BusFigures {
            bus: "redis",
            storage: StorageFigures::Redis(RedisFigures {
                redis_ping_ms: ping.as_secs_f64() * 1000.0,
                store_epoch: shared.epoch(),
                live_instances: beats.iter().filter(|beat| **beat > live_after).count() as i64,
            }),
            writer_queue_depth: self.inner.writer_capacity - self.inner.publisher.capacity(),
            writer_queue_capacity: self.inner.writer_capacity,
            poll_lag_rows: 0,
            last_poll_age_ms: (now - shared.last_read_ms.load(Ordering::Acquire)).max(0),
            last_error,
            last_error_age_ms,
        })
    }

    /// How long messages are kept, in ms.
    pub fn ttl_ms(&self) -> i64 {
        self.inner.ttl_ms
    }

    /// Final stop, after every connection is gone: refuses what is still queued, stops the reader, and marks
    /// this instance as gone (heartbeat 0) so that survivors expire any connection whose disconnect Redis
    /// never took.
    pub async fn close(&self) {
        let (done, stopped) = oneshot::channel();
        if self.inner.publisher.send(Request::Stop(done)).await.is_ok() {
            let _ = stopped.await;
        }
        let _ = self.inner.stop_reader.send(true);
        let tasks = std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
        let mut pipe = redis::pipe();
        pipe.hset(keys::INSTANCES, &self.inner.instance_id, 0).ignore();
        pipe.del(keys::wake(&self.inner.instance_id)).ignore();
        if let Err(error) = pipe.exec_async(&mut self.conn()).await {
            tracing::warn!(%error, "could not deregister this instance from Redis");
        }
    }
}

/// Subscribes the joiner to its room under the room's lock; returns the seq it starts after and whether the
/// room was created by this join, or `None` to read the snapshot again (a room that was closed meanwhile, or
/// a reset the room delivered after the snapshot).
fn place(hub: &Hub, request: &JoinRequest, snap: &api::Snapshot) -> Option<(u64, bool)> {
    let room = hub.room_for_join(&request.canvas);
    let mut state = room.lock();
    if state.is_closed() {
        return None; // the last subscriber left between lookup and lock
    }
    let created = state.start_at(snap.seq, snap.generation);
    if state.generation() > snap.generation {
        return None;
    }
    let delivered = match state.generation() == snap.generation {
        true => state.delivered().max(snap.seq),
        false => snap.seq, // the room has yet to read the reset marker; it will start over at 0
    };
    state.subscribe(Subscriber {
        conn: request.conn,
        user: request.user.clone(),
        generation: snap.generation,
        start_after: delivered,
        outbox: request.outbox.clone(),
    });
    Some((delivered, created))
}

/// A Redis failure as clients see it.
fn unavailable(error: redis::RedisError) -> BusError {
    BusError::Unavailable(format!("Redis: {error}"))
}
