//! One load client: connects, publishes on a schedule or a window, and records what it receives: acks (ack
//! latency), others' messages (end-to-end latency from the send time in the payload), and seq continuity.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;

/// When to send.
#[derive(Clone, Copy)]
pub enum Pace {
    /// One message every interval.
    Every(Duration),
    /// Keep this many unacked messages in flight.
    Window(usize),
    /// Send nothing: only receive.
    Listen,
}

/// What one client saw.
pub struct Tally {
    pub sent: u64,
    pub acked: u64,
    pub delivered: u64,
    /// Deliveries of messages sent through another instance.
    pub delivered_cross: u64,
    pub gaps: u64,
    pub errors: u64,
    /// `user-disconnected` frames about this client's own user while it was connected: the relay took a live
    /// user for gone (each load client is the only connection of its user).
    pub expired: u64,
    /// The last seq seen on its canvas.
    pub last_seq: u64,
    pub ack_us: Histogram<u64>,
    pub e2e_cross_us: Histogram<u64>,
    pub e2e_local_us: Histogram<u64>,
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

pub fn unix_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// A client of `canvas` on `target` (the index of its instance is sent along, to tell cross-instance
/// deliveries apart).
pub struct Spec {
    pub target: String,
    pub instance: usize,
    pub canvas: String,
    pub user: String,
    pub pace: Pace,
    pub payload: usize,
    /// Whether each logged message carries an `idempotency_key`.
    pub keyed: bool,
    /// Counts every message this client sends or receives, for the progress bar.
    pub progress: Arc<AtomicU64>,
}

/// Connects and returns the socket after the welcome, and the welcome's seq.
pub async fn connect(spec: &Spec) -> anyhow::Result<(Socket, u64)> {
    let url = format!("ws://{}/ws/{}?user={}", spec.target, spec.canvas, spec.user);
    // Nagle off on the client side too: small frames must leave at once.
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(&url, None, true).await?;
    let welcome = next_json(&mut ws).await?.ok_or_else(|| anyhow::anyhow!("closed before welcome"))?;
    anyhow::ensure!(welcome["type"] == "welcome", "first frame was not a welcome: {welcome}");
    Ok((ws, welcome["seq"].as_u64().unwrap_or(0)))
}

pub type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_json(ws: &mut Socket) -> anyhow::Result<Option<Value>> {
    while let Some(frame) = ws.next().await {
        match frame? {
            Message::Text(text) => return Ok(Some(serde_json::from_str(&text)?)),
            Message::Close(_) => return Ok(None),
            _ => continue,
        }
    }
    Ok(None)
}

/// When a client stops sending, and the latest it may drain until. Fixed up front for the timed scenarios;
/// set from outside for background load that lasts as long as another measurement (`join`).
#[derive(Clone)]
pub struct Stop(watch::Receiver<(Instant, Instant)>);

impl Stop {
    /// Stops sending at `stop_sending` and draining at `drain_until`.
    pub fn at(stop_sending: Instant, drain_until: Instant) -> Stop {
        Stop(watch::channel((stop_sending, drain_until)).1)
    }

    /// Runs until told: `sender.send((stop_sending, drain_until))` sets the times.
    pub fn later() -> (watch::Sender<(Instant, Instant)>, Stop) {
        // A year is "never" for a load test, and far from Instant's overflow.
        let never = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        let (sender, receiver) = watch::channel((never, never));
        (sender, Stop(receiver))
    }

    fn times(&self) -> (Instant, Instant) {
        *self.0.borrow()
    }
}

/// After sending stops and every ack is in, a client this quiet for this long has everything.
const QUIET: Duration = Duration::from_millis(500);

/// Runs the client: sends until `stop`'s first time, then receives until it is quiet (see `QUIET`) or its
/// second time passes. Loss is judged afterwards against the highest seq any client of the canvas saw, so
/// the socket is handed back still open: a client leaving early would log a `user-disconnected` that the
/// others see and it does not.
pub async fn run(spec: Spec, mut ws: Socket, welcome_seq: u64, stop: Stop) -> anyhow::Result<(Tally, Socket)> {
    let mut tally = Tally {
        sent: 0,
        acked: 0,
        delivered: 0,
        delivered_cross: 0,
        gaps: 0,
        errors: 0,
        expired: 0,
        last_seq: welcome_seq,
        ack_us: histogram(),
        e2e_cross_us: histogram(),
        e2e_local_us: histogram(),
    };
    let pad = "x".repeat(spec.payload);
    let mut in_flight: HashMap<u64, Instant> = HashMap::new();
    let mut next_ref = 0u64;
    let period = match spec.pace {
        Pace::Every(period) => period,
        _ => Duration::from_secs(3600),
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut check = tokio::time::interval(Duration::from_millis(20));
    let mut last_frame = Instant::now();
    loop {
        let (stop_sending, drain_until) = stop.times();
        let sending = Instant::now() < stop_sending;
        let want = match spec.pace {
            Pace::Window(w) if sending => w.saturating_sub(in_flight.len()),
            _ => 0,
        };
        for _ in 0..want {
            send(&mut ws, &spec, &pad, &mut next_ref, &mut in_flight, &mut tally).await?;
        }
        tokio::select! {
            _ = tick.tick(), if sending && matches!(spec.pace, Pace::Every(_)) => {
                send(&mut ws, &spec, &pad, &mut next_ref, &mut in_flight, &mut tally).await?;
            }
            _ = check.tick() => {
                let settled = !sending && in_flight.is_empty() && last_frame.elapsed() >= QUIET;
                if settled || Instant::now() > drain_until {
                    return Ok((tally, ws));
                }
            }
            frame = ws.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None => anyhow::bail!("server closed the connection"),
                    Some(Ok(_)) => continue,
                    Some(Err(error)) => return Err(error.into()),
                };
                last_frame = Instant::now();
                receive(&text, &spec, &mut in_flight, &mut tally)?;
                spec.progress.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn send(
    ws: &mut Socket,
    spec: &Spec,
    pad: &str,
    next_ref: &mut u64,
    in_flight: &mut HashMap<u64, Instant>,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    *next_ref += 1;
    let mut frame = json!({
        "type": "stroke",
        "ref": next_ref.to_string(),
        "data": {"t": unix_us(), "i": spec.instance, "pad": pad},
    });
    if spec.keyed {
        frame["idempotency_key"] = json!(format!("{}-{next_ref}", spec.user));
    }
    in_flight.insert(*next_ref, Instant::now());
    tally.sent += 1;
    ws.send(Message::text(frame.to_string())).await?;
    spec.progress.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// The fields of a server frame the tally (and `publish`) needs, borrowed from the text (the padding is skipped, not copied):
/// at hundreds of thousands of deliveries a second, parsing into a `Value` would measure the load generator.
#[derive(Deserialize)]
pub(crate) struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    pub seq: Option<u64>,
    #[serde(rename = "ref", borrow)]
    pub reference: Option<Cow<'a, str>>,
    #[serde(borrow)]
    from: Option<Cow<'a, str>>,
    data: Option<Payload>,
}

/// Our own messages' data: send time (unix µs) and the sender's instance index.
#[derive(Deserialize)]
struct Payload {
    t: Option<u64>,
    i: Option<u64>,
}

fn receive(text: &str, spec: &Spec, in_flight: &mut HashMap<u64, Instant>, tally: &mut Tally) -> anyhow::Result<()> {
    // Presence data is an object without t/i, cursors and pongs have no seq: all fit `Frame`.
    let frame: Frame = match serde_json::from_str(text) {
        Ok(frame) => frame,
        Err(_) => {
            let value: Value = serde_json::from_str(text)?;
            anyhow::bail!("unexpected frame {value}")
        }
    };
    if let Some(seq) = frame.seq {
        if seq != tally.last_seq + 1 {
            tally.gaps += 1;
        }
        tally.last_seq = tally.last_seq.max(seq);
    }
    match frame.kind.as_ref() {
        "ack" => {
            let sent = frame.reference.and_then(|r| r.parse().ok()).and_then(|r: u64| in_flight.remove(&r));
            if let Some(sent) = sent {
                tally.acked += 1;
                let _ = tally.ack_us.record(sent.elapsed().as_micros().max(1) as u64);
            }
        }
        "error" => tally.errors += 1,
        "user-disconnected" if frame.from.as_deref() == Some(spec.user.as_str()) => tally.expired += 1,
        "stroke" => {
            tally.delivered += 1;
            let data = frame.data.unwrap_or(Payload { t: None, i: None });
            let latency = unix_us().saturating_sub(data.t.unwrap_or(0)).max(1);
            if data.i == Some(spec.instance as u64) {
                let _ = tally.e2e_local_us.record(latency);
            } else {
                tally.delivered_cross += 1;
                let _ = tally.e2e_cross_us.record(latency);
            }
        }
        _ => {}
    }
    Ok(())
}
