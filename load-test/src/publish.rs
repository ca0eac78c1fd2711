//! The publishers of the consumer scenarios (`webhook`, `stream`): one WebSocket client per canvas of the
//! run, on the targets in turn, sending logged [`KIND`] messages stamped with their send time (unix µs in
//! `data.t`), either paced (the canvases share a total rate) or as a burst (a count, each publisher keeping a
//! window unacked). Every ack goes into the [`Ledger`] with its seq and arrival instant. What the consumers
//! receive is judged elsewhere.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{histogram, unix_us, Frame, Socket};
use crate::ledger::{micros, Canvases, Ledger, KIND};
use crate::welcome;

/// After its last send, a publisher waits this long without any frame before giving up on its missing acks.
const ACK_WAIT: Duration = Duration::from_secs(10);

/// How much to publish, shared over the canvases.
#[derive(Clone, Copy)]
pub enum Plan {
    /// `rate` messages a second in all, from `start` until `end`.
    Paced { rate: f64, start: Instant, end: Instant },
    /// `total` messages in all, as fast as acks come back, each publisher keeping `window` unacked.
    Burst { total: u64, window: usize },
}

/// How each message looks.
#[derive(Clone, Copy)]
pub struct Shape {
    /// Bytes of padding in `data`.
    pub payload: usize,
    /// Whether each message carries an `idempotency_key`.
    pub keyed: bool,
}

/// What the publishers did, added up.
pub struct Published {
    pub sent: u64,
    pub acked: u64,
    /// Error frames the relay answered with.
    pub errors: u64,
    pub ack_us: Histogram<u64>,
    /// Why publishers stopped early or went without acks, one entry per publisher that did.
    pub failed: Vec<String>,
    /// From the first send to the last ack, over all publishers.
    pub seconds: f64,
}

/// Joins one publisher per canvas, canvas `i` on target `i % targets`.
pub async fn connect(targets: &[String], canvases: &Canvases) -> anyhow::Result<Vec<Socket>> {
    let mut sockets = Vec::with_capacity(canvases.count());
    for i in 0..canvases.count() {
        let joined = welcome::open(&targets[i % targets.len()], &canvases.name(i), &format!("p{i}")).await;
        sockets.push(joined.map_err(|e| anyhow::anyhow!("publisher {i} could not join: {e}"))?.socket);
    }
    Ok(sockets)
}

/// Runs every publisher to the end of `plan` and its acks, closes their sockets, and adds up.
pub async fn run(sockets: Vec<Socket>, plan: Plan, shape: Shape, ledger: Arc<Ledger>) -> anyhow::Result<Published> {
    let count = sockets.len().max(1);
    let tasks: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(canvas, ws)| {
            let share = share(plan, canvas, count);
            tokio::spawn(publisher(ws, canvas, share, shape, ledger.clone()))
        })
        .collect();
    let mut all = Published { sent: 0, acked: 0, errors: 0, ack_us: histogram(), failed: Vec::new(), seconds: 0.0 };
    let (mut first, mut last) = (None::<Instant>, None::<Instant>);
    for task in tasks {
        let one = task.await?;
        all.sent += one.sent;
        all.acked += one.acked;
        all.errors += one.errors;
        let _ = all.ack_us.add(&one.ack_us);
        all.failed.extend(one.failed);
        first = first.into_iter().chain(one.first_sent).min();
        last = last.into_iter().chain(one.last_ack).max();
    }
    if let (Some(first), Some(last)) = (first, last) {
        all.seconds = last.saturating_duration_since(first).as_secs_f64();
    }
    Ok(all)
}

/// One publisher's part of the plan.
#[derive(Clone, Copy)]
enum Share {
    /// One message every `period`, the first at `first`, none from `end` on.
    Every { period: Duration, first: Instant, end: Instant },
    /// `count` messages, `window` of them unacked at most.
    Count { count: u64, window: usize },
}

/// Publisher `index` of `count`'s part: paced publishers start staggered over one period, so the total
/// rate is even; a burst's remainder goes to the first ones.
fn share(plan: Plan, index: usize, count: usize) -> Share {
    match plan {
        Plan::Paced { rate, start, end } => {
            let period = Duration::from_secs_f64(count as f64 / rate);
            Share::Every { period, first: start + period.mul_f64(index as f64 / count as f64), end }
        }
        Plan::Burst { total, window } => {
            let (each, extra) = (total / count as u64, total % count as u64);
            Share::Count { count: each + u64::from((index as u64) < extra), window: window.max(1) }
        }
    }
}

/// What one publisher did.
struct One {
    sent: u64,
    acked: u64,
    errors: u64,
    ack_us: Histogram<u64>,
    failed: Option<String>,
    first_sent: Option<Instant>,
    last_ack: Option<Instant>,
}

/// Sends its share on `canvas`, records every ack, and closes once all are in (or [`ACK_WAIT`] passed).
async fn publisher(mut ws: Socket, canvas: usize, share: Share, shape: Shape, ledger: Arc<Ledger>) -> One {
    let mut one =
        One { sent: 0, acked: 0, errors: 0, ack_us: histogram(), failed: None, first_sent: None, last_ack: None };
    let pad = "x".repeat(shape.payload);
    let mut in_flight: HashMap<u64, Instant> = HashMap::new();
    let (period, first) = match share {
        Share::Every { period, first, .. } => (period, first),
        Share::Count { .. } => (Duration::from_secs(3600), Instant::now()),
    };
    let mut tick = tokio::time::interval_at(first, period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    loop {
        let sending = match share {
            Share::Every { end, .. } => Instant::now() < end,
            Share::Count { count, .. } => one.sent < count,
        };
        if let Share::Count { count, window } = share {
            while in_flight.len() < window && one.sent < count {
                if let Err(e) = send(&mut ws, canvas, &pad, shape.keyed, &mut in_flight, &mut one).await {
                    return stopped(one, format!("send failed: {e}"));
                }
            }
        }
        if !sending && in_flight.is_empty() {
            break;
        }
        tokio::select! {
            _ = tick.tick(), if sending && matches!(share, Share::Every { .. }) => {
                if let Err(e) = send(&mut ws, canvas, &pad, shape.keyed, &mut in_flight, &mut one).await {
                    return stopped(one, format!("send failed: {e}"));
                }
            }
            frame = tokio::time::timeout(ACK_WAIT, ws.next()) => match frame {
                Ok(Some(Ok(Message::Text(text)))) => receive(&text, canvas, &mut in_flight, &mut one, &ledger),
                Ok(Some(Ok(Message::Close(frame)))) => {
                    let code = frame.map_or("no code".to_string(), |f| u16::from(f.code).to_string());
                    return stopped(one, format!("canvas {canvas}: the relay closed the publisher ({code})"));
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => return stopped(one, format!("canvas {canvas}: connection broke: {e}")),
                Ok(None) => return stopped(one, format!("canvas {canvas}: the connection ended")),
                Err(_) if !sending => {
                    one.failed = Some(format!("canvas {canvas}: {} acks never came", in_flight.len()));
                    break;
                }
                Err(_) => {}
            },
        }
    }
    welcome::close(ws).await;
    one
}

fn stopped(mut one: One, why: String) -> One {
    one.failed = Some(why);
    one
}

async fn send(
    ws: &mut Socket,
    canvas: usize,
    pad: &str,
    keyed: bool,
    in_flight: &mut HashMap<u64, Instant>,
    one: &mut One,
) -> anyhow::Result<()> {
    one.sent += 1;
    let reference = one.sent;
    let mut frame = json!({"type": KIND, "ref": reference.to_string(), "data": {"t": unix_us(), "pad": pad}});
    if keyed {
        frame["idempotency_key"] = json!(format!("p{canvas}-{reference}"));
    }
    let now = Instant::now();
    one.first_sent.get_or_insert(now);
    in_flight.insert(reference, now);
    ws.send(Message::text(frame.to_string())).await?;
    Ok(())
}

/// An ack goes into the ledger; an error frame releases its message from the window, counted.
fn receive(text: &str, canvas: usize, in_flight: &mut HashMap<u64, Instant>, one: &mut One, ledger: &Ledger) {
    let Ok(frame) = serde_json::from_str::<Frame>(text) else { return };
    let reference = frame.reference.and_then(|r| r.parse::<u64>().ok());
    let Some(sent) = reference.and_then(|r| in_flight.remove(&r)) else { return };
    match (frame.kind.as_ref(), frame.seq) {
        ("ack", Some(seq)) => {
            let now = Instant::now();
            one.acked += 1;
            one.last_ack = Some(now);
            let _ = one.ack_us.record(micros(now - sent));
            ledger.acked(canvas, seq, now.into_std());
        }
        ("error", _) => one.errors += 1,
        _ => {}
    }
}
