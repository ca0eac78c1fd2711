//! One canvas's delivery: from its durable position, the next batch (a reset batch first if the canvas
//! started a new epoch), its range recorded before the first attempt, sent until answered 2xx, then the new
//! position recorded; then the next, until the canvas is caught up. The task ends when the canvas has been
//! idle a while, when its shard's lease lapses, or when the deliverer stops.
//!
//! The position is read again after every wait (a linger, a retry's backoff, a wait for more messages): the
//! lease may have lapsed meanwhile and come back after another instance delivered further, and a task that
//! went on from what it last saw would send seqs already delivered under other keys. The store backs this
//! up: a save is a compare-and-set over the position the task last read or recorded, refused when the store
//! holds another (`Saved::Behind`), and the task reads again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::batch::WebhookBatch;
use super::leases::{self, shard_of};
use super::post::Answer;
use super::turns::{Retry, Slot};
use super::{sleep_or_stop, until, Shared, RETRY};
use crate::clock::now_ms;
use crate::core::BusError;
use crate::protocol::CanvasId;
use crate::store::consumer::{Position, Saved};

/// How long a caught-up canvas's task waits for more before it ends.
const IDLE: Duration = Duration::from_secs(30);

/// What one step came to.
enum Step {
    /// Delivered (or skipped) something: look again at once.
    More,
    /// A batch that is not full waits this long for more messages.
    Linger(Duration),
    CaughtUp,
    /// The store holds a position this task's may not replace (another instance delivered while its view
    /// was stale): read it again.
    Behind,
    /// An attempt failed while other canvases wait their turn: the next attempt is not before this.
    Failed(Instant),
    /// The lease was lost, the receiver is gone, or the deliverer is stopping.
    Stop,
}

/// Where the task stands.
struct Cursor {
    canvas: CanvasId,
    shard: u32,
    lease: String,
    /// The recorded position, once read (`None` until then).
    at: Option<Position>,
    /// What the store holds as this task last read or recorded it (`None`: nothing): what a save expects.
    stored: Option<Position>,
    /// The store had no position: the canvas was never delivered, so a new epoch needs no reset batch.
    fresh: bool,
    /// Failed attempts of the batch being sent (its backoff grows with them, across turns).
    failures: u32,
    /// A request was answered since the task last looked at the queue: its turn is used.
    answered: bool,
}

/// Delivers `canvas` until it is caught up while others wait, idle for `IDLE`, must stop, or gives its
/// turn to a waiting canvas (`turns.rs`). `retry`: where its retries stood when it last gave way.
pub async fn deliver(shared: Arc<Shared>, canvas: CanvasId, slot: Arc<Slot>, retry: Retry) {
    let shard = shard_of(canvas.as_str());
    let failures = retry.failures;
    let mut cursor = Cursor {
        lease: leases::name(shard),
        canvas,
        shard,
        at: None,
        stored: None,
        fresh: false,
        failures,
        answered: false,
    };
    if let Some(not_before) = retry.not_before {
        let _ = sleep_or_stop(&shared.stop, not_before.saturating_duration_since(Instant::now())).await;
    }
    loop {
        let seen = slot.wakes.load(std::sync::atomic::Ordering::SeqCst);
        let step = match shared.leases.holds(shard) && !shared.stop.is_cancelled() {
            true => step(&shared, &mut cursor).await,
            false => Ok(Step::Stop),
        };
        let name = cursor.canvas.as_str();
        match step {
            Ok(Step::More) => {
                // A turn is one request: once one was answered, a waiting canvas goes first.
                if std::mem::take(&mut cursor.answered) && shared.give_way(&cursor.canvas, &slot, Retry::default()) {
                    return;
                }
                continue;
            }
            Ok(Step::Behind) => cursor.failures = 0,
            Ok(Step::Failed(not_before)) => {
                let retry = Retry { failures: cursor.failures, not_before: Some(not_before) };
                if shared.give_way(&cursor.canvas, &slot, retry) {
                    return;
                }
                let _ = sleep_or_stop(&shared.stop, not_before.saturating_duration_since(Instant::now())).await;
            }
            Ok(Step::Linger(wait)) => {
                let _ = sleep_or_stop(&shared.stop, wait).await;
            }
            Ok(Step::CaughtUp) => {
                shared.status.set_behind(name, 0, None);
                if shared.turns.has_waiting() && shared.may_end(name, &slot, seen) {
                    return;
                }
                tokio::select! {
                    () = slot.wake.notified() => {}
                    () = tokio::time::sleep(IDLE) => if shared.may_end(name, &slot, seen) { return },
                    () = leases::lapsed(&shared.leases, shard) => {}
                    () = shared.stop.cancelled() => {}
                }
            }
            // Unless woken since (a wake that would be lost with this task), which the next round looks at.
            Ok(Step::Stop) if shared.stop.is_cancelled() || shared.may_end(name, &slot, seen) => break,
            Ok(Step::Stop) => {}
            Err(error) => {
                tracing::warn!(%error, canvas = name, "webhook: a read or write of the store failed; retrying");
                let _ = sleep_or_stop(&shared.stop, RETRY).await;
            }
        }
        cursor.at = None;
    }
    let name = cursor.canvas.as_str();
    shared.status.set_behind(name, 0, None);
    shared.ended(name, &slot);
}

/// Reads from the position and delivers the next batch, if there is one.
async fn step(shared: &Shared, cursor: &mut Cursor) -> Result<Step, BusError> {
    let store = &shared.store;
    let at = match cursor.at {
        Some(at) => at,
        None => {
            let recorded = store.positions(std::slice::from_ref(&cursor.canvas)).await?.pop().flatten();
            cursor.fresh = recorded.is_none();
            cursor.stored = recorded;
            *cursor.at.insert(recorded.unwrap_or_default())
        }
    };
    let limit = shared.webhook.batch.max(at.inflight.map_or(0, |last| last.saturating_sub(at.seq) as usize));
    let tail = shared.bus.canvas_tail(&cursor.canvas, at.generation, at.seq, limit).await?;
    if tail.generation != at.generation {
        return new_epoch(shared, cursor, tail.generation).await;
    }
    let behind = tail.seq.saturating_sub(at.seq);
    shared.status.set_behind(cursor.canvas.as_str(), behind, tail.entries.first().map(|e| e.ts));
    if behind == 0 {
        return Ok(Step::CaughtUp);
    }
    let through = match at.inflight {
        Some(last) if last > at.seq => last,
        _ => {
            if let Some(first) = tail.entries.first().filter(|_| tail.entries.len() < shared.webhook.batch) {
                let age = Duration::from_millis((now_ms() - first.ts).max(0) as u64);
                if let Some(wait) = shared.webhook.linger.checked_sub(age).filter(|w| !w.is_zero()) {
                    return Ok(Step::Linger(wait));
                }
            }
            tail.entries.last().map_or(tail.seq, |last| last.seq)
        }
    };
    let epoch = shared.bus.epoch_of(at.generation);
    let batch = WebhookBatch::of(cursor.canvas.as_str(), epoch, at.seq, through, tail.entries, &shared.webhook);
    let done = Position { generation: at.generation, seq: through, inflight: None };
    if batch.is_empty() {
        return record(shared, cursor, done).await;
    }
    let fixed = Position { inflight: Some(through), ..at };
    if at.inflight != Some(through) {
        match record(shared, cursor, fixed).await? {
            Step::More => {}
            other => return Ok(other),
        }
    }
    match send(shared, cursor, &batch, fixed, true).await? {
        Step::More => record(shared, cursor, done).await,
        other => Ok(other),
    }
}

/// While a batch is retried, the canvas goes on being written: its lag (what `/health` and `/metrics` say
/// is undelivered) is read again before each wait, or it would stay what it was when the batch was fixed
/// for as long as the receiver is down. Best effort: a failed read leaves the last figure.
async fn refresh_lag(shared: &Shared, canvas: &CanvasId, at: Position) {
    if let Ok(tail) = shared.bus.canvas_tail(canvas, at.generation, at.seq, 1).await {
        if tail.generation == at.generation {
            let behind = tail.seq.saturating_sub(at.seq);
            shared.status.set_behind(canvas.as_str(), behind, tail.entries.first().map(|e| e.ts));
        }
    }
}

/// The canvas is in another generation than its position: a reset batch (unless it was never delivered),
/// then the position at the new generation's start.
async fn new_epoch(shared: &Shared, cursor: &mut Cursor, generation: u64) -> Result<Step, BusError> {
    let start = Position { generation, seq: 0, inflight: None };
    if cursor.fresh {
        cursor.at = Some(start);
        cursor.fresh = false;
        return Ok(Step::More);
    }
    let Some(at) = cursor.at else { return Ok(Step::Behind) };
    let batch = WebhookBatch::reset(cursor.canvas.as_str(), shared.bus.epoch_of(generation));
    match send(shared, cursor, &batch, at, false).await? {
        Step::More => record(shared, cursor, start).await,
        other => Ok(other),
    }
}

/// Records `position` while the lease is held and the store holds nothing later: `Stop` when the lease
/// is not held any more, `Behind` when the store's position is ahead of this task's.
async fn record(shared: &Shared, cursor: &mut Cursor, position: Position) -> Result<Step, BusError> {
    let name = cursor.canvas.as_str();
    if !position.may_replace(cursor.stored) {
        return Ok(Step::Behind);
    }
    let saved = shared.store.save_position(&cursor.canvas, &cursor.lease, &shared.holder, cursor.stored, position);
    match saved.await? {
        Saved::Recorded => {
            cursor.at = Some(position);
            cursor.stored = Some(position);
            Ok(Step::More)
        }
        Saved::NotHolder => {
            tracing::info!(canvas = name, "webhook: the lease moved to another instance");
            Ok(Step::Stop)
        }
        Saved::Behind => {
            tracing::info!(canvas = name, "webhook: another instance delivered further; reading the position again");
            Ok(Step::Behind)
        }
    }
}

/// Sends `batch` until it is answered 2xx (`More`), or the lease runs out, the receiver is gone, or the
/// deliverer stops (`Stop`), or the stored position is no longer `fixed` (the one it was sent from) after a
/// backoff (`Behind`), or an attempt failed while other canvases wait their turn (`Failed`). No attempt
/// outlives the lease, and at most `--webhook-concurrency` are in flight across canvases. With `lag`, the
/// canvas's lag is kept current between attempts.
async fn send(
    shared: &Shared,
    cursor: &mut Cursor,
    batch: &WebhookBatch,
    fixed: Position,
    lag: bool,
) -> Result<Step, BusError> {
    let body = Bytes::from(batch.body());
    loop {
        let answer = {
            // A request slot first (in the order canvases asked for one), then counted in flight before the
            // lease is checked, until the answer (not through the backoff): a lease given back is released
            // in the store once this has ended.
            let _permit = tokio::select! {
                permit = shared.requests.acquire() => permit,
                () = shared.stop.cancelled() => return Ok(Step::Stop),
            };
            let _in_flight = shared.leases.in_flight(cursor.shard);
            let Some(within) = shared.leases.valid_until(cursor.shard).and_then(until) else { return Ok(Step::Stop) };
            shared.poster.post(batch, &body, within.min(shared.webhook.timeout)).await
        };
        match answer {
            Answer::Delivered => {
                (cursor.failures, cursor.answered) = (0, true);
                let metrics = &shared.metrics;
                if let Some(first) = batch.messages.first() {
                    metrics.webhook_delivery_seconds.record((now_ms() - first.ts).max(0) as f64 / 1000.0);
                }
                metrics.webhook_batches.increment(1);
                metrics.webhook_messages.increment(batch.messages.len() as u64);
                return Ok(Step::More);
            }
            Answer::Gone => {
                shared.gone();
                return Ok(Step::Stop);
            }
            Answer::Failed(status) => {
                cursor.failures += 1;
                shared.metrics.webhook_failed(&status);
                let key = batch.idempotency_key();
                shared.status.failed(format!("{status} for {key}"));
                if cursor.failures == 1 {
                    tracing::warn!(%status, %key, "webhook attempt failed; retrying with backoff");
                }
                if lag {
                    refresh_lag(shared, &cursor.canvas, fixed).await;
                }
                let backoff = shared.poster.backoff(cursor.failures);
                if shared.turns.has_waiting() {
                    return Ok(Step::Failed(Instant::now() + backoff));
                }
                if sleep_or_stop(&shared.stop, backoff).await {
                    return Ok(Step::Stop);
                }
                if shared.store.positions(std::slice::from_ref(&cursor.canvas)).await?.pop().flatten() != Some(fixed) {
                    return Ok(Step::Behind);
                }
            }
        }
    }
}
