//! The `webhook` scenario's receiver: a small hyper 1 HTTP/1.1 server (keep-alive, any path) that checks
//! each request's `X-Relay-Signature`, answers 200 (401 for a bad signature, 400 for a body it cannot read),
//! and records every batch of this run's canvases: lag from each message's commit `ts` and from its send
//! time, first deliveries against the [`Ledger`] (which pairs them with their acks), repeated
//! `Idempotency-Key`s, keys that do not match their body, seq order per canvas, gaps and resets.
//! It does not decide when a run is over (`webhook`).

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hdrhistogram::Histogram;
use hmac::{Hmac, Mac};
use http_body_util::BodyExt;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

use crate::client::{histogram, unix_us};
use crate::ledger::{Canvases, Ledger, KIND};

/// What the receiver counted. Everything is about this run's canvases unless it says otherwise.
pub struct Tally {
    /// Requests of any kind, on any canvas.
    pub requests: u64,
    /// Requests whose signature did not match (answered 401).
    pub bad_signature: u64,
    /// Requests whose body was not a batch (answered 400).
    pub bad_body: u64,
    /// Signed batches about canvases of other runs (answered 200, not counted further).
    pub foreign: u64,
    /// Signed batches of this run, repeats included.
    pub batches: u64,
    /// Messages in them, of every type, repeats included.
    pub messages: u64,
    /// Batches whose `Idempotency-Key` had been seen before (a retry or a takeover's repeat).
    pub duplicate_keys: u64,
    /// Messages that came again inside such a repeated batch.
    pub redelivered: u64,
    /// Messages at or below a seq already delivered on their canvas, outside a repeated batch.
    pub out_of_order: u64,
    /// Seqs skipped without a `gap` to say so (legitimate only under `--webhook-types`).
    pub skipped: u64,
    /// Batches whose `Idempotency-Key` is not `<canvas>:<epoch>:<first>-<last>` of their body.
    pub key_mismatch: u64,
    /// Batches with a `gap` and with `reset`.
    pub gaps: u64,
    pub resets: u64,
    /// First deliveries of [`KIND`] seqs, per canvas.
    pub delivered: Vec<HashSet<u64>>,
    /// Commit `ts` (unix ms) to receipt, per first delivery of [`KIND`], in µs (ms resolution).
    pub commit_lag_us: Histogram<u64>,
    /// Send time (`data.t`, unix µs, this host's clock) to receipt.
    pub send_lag_us: Histogram<u64>,
    /// The first and the latest batch of this run.
    pub first_batch: Option<Instant>,
    pub last_batch: Option<Instant>,
    /// The highest seq delivered so far per canvas, to judge order.
    last_seq: Vec<u64>,
    /// Every `Idempotency-Key` seen.
    keys: HashSet<String>,
}

/// The receiver's shared state: the secret, the run, and the tally behind a `std` mutex (one short
/// section per request, no `.await` inside).
struct State {
    secret: Vec<u8>,
    canvases: Arc<Canvases>,
    ledger: Arc<Ledger>,
    tally: Mutex<Tally>,
}

/// A running receiver: read its tally at any time.
pub struct Receiver {
    state: Arc<State>,
    accept: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Listens on `addr` and serves every connection until dropped.
    pub async fn start(addr: &str, secret: &str, canvases: Arc<Canvases>, ledger: Arc<Ledger>) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            anyhow::anyhow!("--receiver {addr}: cannot listen ({e}); the relays' RELAY_WEBHOOK_URL must point here")
        })?;
        let count = canvases.count();
        let tally = Tally {
            requests: 0,
            bad_signature: 0,
            bad_body: 0,
            foreign: 0,
            batches: 0,
            messages: 0,
            duplicate_keys: 0,
            redelivered: 0,
            out_of_order: 0,
            skipped: 0,
            key_mismatch: 0,
            gaps: 0,
            resets: 0,
            delivered: vec![HashSet::new(); count],
            commit_lag_us: histogram(),
            send_lag_us: histogram(),
            first_batch: None,
            last_batch: None,
            last_seq: vec![0; count],
            keys: HashSet::new(),
        };
        let state = Arc::new(State { secret: secret.as_bytes().to_vec(), canvases, ledger, tally: Mutex::new(tally) });
        let accept = tokio::spawn(accept(listener, state.clone()));
        Ok(Receiver { state, accept })
    }

    /// Runs `read` on the tally under its lock.
    pub fn with<T>(&self, read: impl FnOnce(&Tally) -> T) -> T {
        read(&self.state.lock())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl State {
    fn lock(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

async fn accept(listener: tokio::net::TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| handle(request, state.clone()));
            let io = hyper_util::rt::TokioIo::new(stream);
            // A relay that hangs up mid-request is its business: the retry shows in the figures.
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
        });
    }
}

async fn handle(request: Request<Incoming>, state: Arc<State>) -> Result<Response<String>, Infallible> {
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (signature, key) = (header("x-relay-signature"), header("idempotency-key"));
    let status = match request.into_body().collect().await {
        Err(_) => StatusCode::BAD_REQUEST,
        Ok(body) => record(&state, &body.to_bytes(), signature.as_deref(), key),
    };
    let mut response = Response::new(String::new());
    *response.status_mut() = status;
    Ok(response)
}

/// A webhook body; every field the scenario does not judge is skipped.
#[derive(Deserialize)]
struct Batch {
    canvas: String,
    epoch: String,
    #[serde(default)]
    messages: Vec<Delivered>,
    #[serde(default)]
    reset: bool,
    gap: Option<Gap>,
}

#[derive(Deserialize)]
struct Delivered {
    seq: u64,
    #[serde(rename = "type")]
    kind: String,
    ts: u64,
    #[serde(default)]
    data: Value,
}

#[derive(Deserialize)]
struct Gap {
    after: u64,
    next: u64,
}

/// Checks and records one request; the status to answer.
fn record(state: &State, body: &Bytes, signature: Option<&str>, key: Option<String>) -> StatusCode {
    let received = Instant::now();
    let now_us = unix_us();
    let signed = signature.is_some_and(|s| s.strip_prefix("sha256=") == Some(sign(&state.secret, body).as_str()));
    let batch = serde_json::from_slice::<Batch>(body);
    let mut tally = state.lock();
    tally.requests += 1;
    if !signed {
        tally.bad_signature += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(batch) = batch else {
        tally.bad_body += 1;
        return StatusCode::BAD_REQUEST;
    };
    let Some(canvas) = state.canvases.index(&batch.canvas) else {
        tally.foreign += 1;
        return StatusCode::OK;
    };
    tally.batches += 1;
    tally.messages += batch.messages.len() as u64;
    tally.first_batch.get_or_insert(received);
    tally.last_batch = Some(received);
    let key = key.unwrap_or_default();
    tally.key_mismatch += u64::from(key != expected_key(&batch));
    let repeat = !tally.keys.insert(key);
    tally.duplicate_keys += u64::from(repeat);
    let first = judge(&mut tally, canvas, &batch, repeat, now_us);
    drop(tally);
    state.ledger.received(canvas, &first, received);
    StatusCode::OK
}

/// Order, gaps, resets and lags of one signed batch of canvas `canvas`; the [`KIND`] seqs delivered for the
/// first time.
fn judge(tally: &mut Tally, canvas: usize, batch: &Batch, repeat: bool, now_us: u64) -> Vec<u64> {
    if batch.reset {
        tally.resets += 1;
        tally.last_seq[canvas] = 0;
    }
    if let Some(gap) = &batch.gap {
        tally.gaps += 1;
        let before = gap.next.saturating_sub(1).max(gap.after);
        tally.last_seq[canvas] = tally.last_seq[canvas].max(before);
    }
    let mut first = Vec::with_capacity(batch.messages.len());
    for message in &batch.messages {
        let last = tally.last_seq[canvas];
        if message.seq <= last {
            if repeat {
                tally.redelivered += 1;
            } else {
                tally.out_of_order += 1;
            }
        } else {
            tally.skipped += message.seq - last - 1;
            tally.last_seq[canvas] = message.seq;
        }
        if message.kind == KIND && tally.delivered[canvas].insert(message.seq) {
            first.push(message.seq);
            let _ = tally.commit_lag_us.record(now_us.saturating_sub(message.ts.saturating_mul(1000)).max(1));
            if let Some(sent) = message.data.get("t").and_then(Value::as_u64) {
                let _ = tally.send_lag_us.record(now_us.saturating_sub(sent).max(1));
            }
        }
    }
    first
}

/// The `Idempotency-Key` the contract gives `batch`: `<canvas>:<epoch>:<first seq>-<last seq>`, `0-0` for a
/// reset, and the expired range for a gap with no message after it yet.
fn expected_key(batch: &Batch) -> String {
    let range = match (batch.messages.first(), batch.messages.last(), &batch.gap) {
        (Some(first), Some(last), _) => format!("{}-{}", first.seq, last.seq),
        (_, _, Some(gap)) => format!("{}-{}", gap.after + 1, gap.next.saturating_sub(1)),
        _ => "0-0".to_string(),
    };
    format!("{}:{}:{range}", batch.canvas, batch.epoch)
}

/// Lowercase hex of HMAC-SHA256(secret, body). Compared as text: timing does not matter to a load tool.
fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else { return String::new() };
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2.
        let mac = sign(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(mac, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn keys_follow_the_contract() {
        let batch: Batch = serde_json::from_str(
            r#"{"canvas":"c1","epoch":"E","messages":[{"seq":3,"type":"a","ts":1},{"seq":5,"type":"a","ts":1}]}"#,
        )
        .expect("a batch");
        assert_eq!(expected_key(&batch), "c1:E:3-5");
        let gap: Batch =
            serde_json::from_str(r#"{"canvas":"c1","epoch":"E","gap":{"after":2,"next":9},"messages":[]}"#)
                .expect("gap");
        assert_eq!(expected_key(&gap), "c1:E:3-8");
        let reset: Batch =
            serde_json::from_str(r#"{"canvas":"c1","epoch":"F","reset":true,"messages":[]}"#).expect("reset");
        assert_eq!(expected_key(&reset), "c1:F:0-0");
    }
}
