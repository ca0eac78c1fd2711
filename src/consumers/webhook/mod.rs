//! The webhook deliverer: every logged message reaches `--webhook-url` per canvas in seq order, in signed
//! batches, each sent again until answered 2xx, through receiver outages, restarts and instance deaths.
//!
//! - `leases.rs`: canvases fall into `SHARDS` shards; an instance delivers the canvases of the shards it
//!   holds a lease on (renewed every heartbeat, lasting `--presence-timeout`), so no two instances deliver a
//!   canvas at once and a dead instance's shards are taken over when its leases run out.
//! - here: the tail of the log of every canvas wakes the task of each canvas that got a message (starting it
//!   if it has none), and a shard just taken wakes every canvas of it with something undelivered.
//! - `canvas.rs`: one task per canvas with something to deliver: read from the durable position, batch,
//!   send, record the new position, so a slow receiver for one canvas never holds up another.
//! - `turns.rs`: how many of those tasks live at once (and requests are in flight), and in what order the
//!   other canvases get theirs.
//! - `batch.rs`, `post.rs`: what one request carries and how it is sent and retried.

mod batch;
mod canvas;
mod leases;
mod post;
pub mod standard;
mod turns;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::config::{Config, Webhook};
use crate::core::Bus;
use crate::metrics::Metrics;
use crate::store::consumer::ConsumerStore;

/// How long the tail waits before reading again when it is at the head.
const TAIL_POLL: Duration = Duration::from_millis(5);
/// Entries the tail reads per page.
const TAIL_PAGE: usize = 1024;
/// How long a read that failed waits before the next.
const RETRY: Duration = Duration::from_millis(500);

/// The deliverer's figures for `/health` (and `relay_webhook_lag_messages`).
#[derive(Debug, Default)]
pub struct DeliveryStatus {
    /// A receiver answered 410: delivery stopped.
    gone: AtomicBool,
    /// The last failed attempt: what it got, and when (unix ms).
    last_failure: Mutex<Option<(String, i64)>>,
    /// Per canvas with something undelivered: messages behind, and the commit time of the oldest.
    behind: Mutex<HashMap<String, (u64, Option<i64>)>>,
    /// Shards this instance holds.
    shards: AtomicU64,
    /// Canvases with a delivery task now (at most `turns::TASKS_PER_REQUEST × --webhook-concurrency`).
    delivering: AtomicU64,
    /// Canvases with something to deliver waiting for a task.
    waiting: AtomicU64,
}

/// What `/health` shows under `webhook`.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub lag_messages: u64,
    pub oldest_undelivered_age_ms: Option<i64>,
    pub shards: u64,
    /// Canvases with a delivery task (bounded: see `turns.rs`).
    pub canvases_delivering: u64,
    /// Canvases with something to deliver waiting for their turn.
    pub canvases_waiting: u64,
    pub gone: bool,
    pub last_failure: Option<String>,
    pub last_failure_age_ms: Option<i64>,
}

impl DeliveryStatus {
    pub fn figures(&self) -> Figures {
        let now = now_ms();
        let behind = self.behind.lock().expect("status lock");
        let lag_messages = behind.values().map(|(n, _)| n).sum();
        let oldest = behind.values().filter_map(|(_, ts)| *ts).min();
        let failure = self.last_failure.lock().expect("status lock").clone();
        Figures {
            lag_messages,
            oldest_undelivered_age_ms: oldest.map(|ts| (now - ts).max(0)),
            shards: self.shards.load(Ordering::Relaxed),
            canvases_delivering: self.delivering.load(Ordering::Relaxed),
            canvases_waiting: self.waiting.load(Ordering::Relaxed),
            gone: self.gone.load(Ordering::Relaxed),
            last_failure_age_ms: failure.as_ref().map(|(_, at)| (now - at).max(0)),
            last_failure: failure.map(|(what, _)| what),
        }
    }

    fn set_behind(&self, canvas: &str, behind: u64, oldest_ts: Option<i64>) {
        let mut all = self.behind.lock().expect("status lock");
        match behind {
            0 => all.remove(canvas),
            _ => all.insert(canvas.to_owned(), (behind, oldest_ts)),
        };
    }

    fn failed(&self, what: String) {
        *self.last_failure.lock().expect("status lock") = Some((what, now_ms()));
    }

    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
    }
}

/// What the deliverer's loops and tasks share.
struct Shared {
    /// Canvas heads and logs.
    bus: Bus,
    /// Positions, leases and the log of every canvas.
    store: Arc<dyn ConsumerStore>,
    webhook: Webhook,
    poster: post::Poster,
    holder: String,
    leases: leases::Leases,
    /// The canvases with a task, and those waiting for one.
    turns: turns::Turns,
    /// Requests in flight (`--webhook-concurrency`): fair, so canvases get them in the order they asked.
    requests: Semaphore,
    status: Arc<DeliveryStatus>,
    metrics: Metrics,
    stop: CancellationToken,
}

impl Shared {
    /// The receiver answered 410: every task and loop stops, and `/health` says why.
    fn gone(&self) {
        if !self.status.gone.swap(true, Ordering::SeqCst) {
            tracing::error!(url = %self.webhook.url, "the webhook receiver answered 410 Gone: webhook delivery stopped \
                until this instance restarts");
        }
        self.stop.cancel();
    }
}

/// Starts delivering, if a webhook is configured, until `stop`; returns its task and status.
pub fn start(
    bus: &Bus,
    config: &Config,
    holder: String,
    metrics: Metrics,
    stop: CancellationToken,
) -> Option<(JoinHandle<()>, Arc<DeliveryStatus>)> {
    let webhook = config.consumers.webhook().ok().flatten()?;
    let status = Arc::new(DeliveryStatus::default());
    let concurrency = webhook.concurrency;
    let shared = Arc::new(Shared {
        bus: bus.clone(),
        store: bus.consumers(),
        poster: post::Poster::new(webhook.clone()),
        webhook,
        holder,
        leases: leases::Leases::new(config.presence_timeout, config.heartbeat_interval),
        turns: turns::Turns::new(concurrency.saturating_mul(turns::TASKS_PER_REQUEST)),
        requests: Semaphore::new(concurrency),
        status: status.clone(),
        metrics,
        stop: stop.child_token(),
    });
    tracing::info!(url = %shared.webhook.url, "webhook delivery on");
    let bus = bus.clone();
    let task = tokio::spawn(async move {
        tokio::join!(leases::run(shared.clone(), bus), tail(shared.clone()));
        // Given back for the others to take at their next heartbeat (after any request still out has ended);
        // after a 410 they run out instead.
        if !shared.status.is_gone() {
            leases::release_all(&shared).await;
        }
    });
    Some((task, status))
}

/// Follows the log of every canvas from its head, waking the task of each canvas of a held shard that got
/// a message. Messages before the head are the lease loop's to find (a shard taken wakes its backlog).
async fn tail(shared: Arc<Shared>) {
    let store = &shared.store;
    let mut position = loop {
        match store.log_head().await {
            Ok(head) => break head,
            Err(error) => tracing::warn!(%error, "webhook: could not read the log head; retrying"),
        }
        if sleep_or_stop(&shared.stop, RETRY).await {
            return;
        }
    };
    loop {
        let wait = match store.log_after(&position, TAIL_PAGE).await {
            Ok(page) => {
                if page.oldest.is_some() {
                    // Rows went before this tail read them: find every canvas with a backlog again.
                    shared.leases.rescan();
                }
                let full = page.entries.len() == TAIL_PAGE;
                for (at, entry) in page.entries {
                    if shared.leases.holds(leases::shard_of(entry.canvas.as_str())) {
                        shared.wake(entry.canvas.as_str());
                    }
                    position = at;
                }
                if full {
                    Duration::ZERO
                } else {
                    TAIL_POLL
                }
            }
            Err(error) => {
                tracing::warn!(%error, "webhook: a read of the log failed; retrying");
                RETRY
            }
        };
        if sleep_or_stop(&shared.stop, wait).await {
            return;
        }
    }
}

/// Sleeps `wait`; true if `stop` came first.
async fn sleep_or_stop(stop: &CancellationToken, wait: Duration) -> bool {
    tokio::select! {
        () = stop.cancelled() => true,
        () = tokio::time::sleep(wait) => false,
    }
}

/// How long until `deadline`, if it is still ahead.
fn until(deadline: Instant) -> Option<Duration> {
    deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
}
