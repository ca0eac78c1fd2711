//! A real HTTP webhook receiver for the webhook tests (hyper's HTTP/1.1 server on a loopback port): it checks
//! each request's `X-Relay-Signature`, records every request (when it started and ended, canvas, idempotency
//! key, parsed body, signature verdict, the answer given), and answers as the test says: 2xx, a status, slowly
//! for one canvas, or not at all because it is down (not listening: connections are refused) until it comes
//! back on the same port. The queries turn the record into what the contract promises a receiver: first
//! deliveries in seq order, no two requests for one canvas at once, a repeat always under its first key.
//!
//! It does not judge which instance sent a request (the receiver cannot see that), nor timings.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// The secret the relay signs with in these tests (`--webhook-secret`).
pub const SECRET: &str = "webhook-test-secret";

/// How the receiver answers a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// 200 at once.
    Ok,
    /// This status at once (500, 410, ...).
    Status(u16),
    /// 200 after this long: longer than the relay's `--webhook-timeout`, it makes every attempt time out.
    Slow(Duration),
}

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub started: Instant,
    /// When the receiver answered, or the request was cut (the relay gave up or died, or the receiver went
    /// down); `None` while it is still in flight.
    pub ended: Option<Instant>,
    pub method: String,
    pub content_type: Option<String>,
    /// The body's `canvas` (empty when the body is not the contract's JSON).
    pub canvas: String,
    pub key: Option<String>,
    /// The parsed body; `Null` when it was not JSON or was cut short.
    pub body: Value,
    /// The body's text as it came (lossy UTF-8), for what parsing hides: its exact form.
    pub raw: String,
    /// `X-Relay-Signature` is `sha256=<lowercase hex HMAC-SHA256 of the raw body>` keyed with [`SECRET`].
    pub signature_ok: bool,
    /// The Standard Webhooks headers verify as the spec says (and its libraries do): `webhook-id` is the
    /// idempotency key, `webhook-timestamp` within five minutes of now, `webhook-signature` a `v1,` base64
    /// HMAC-SHA256 of "id.timestamp.body" keyed with [`SECRET`]'s bytes (it has no `whsec_` prefix).
    pub standard_ok: bool,
    /// What the receiver answered; `None` when the request ended before an answer.
    pub status: Option<u16>,
}

impl Delivery {
    pub fn messages(&self) -> &[Value] {
        self.body["messages"].as_array().map(Vec::as_slice).unwrap_or_default()
    }

    pub fn seqs(&self) -> Vec<u64> {
        self.messages().iter().filter_map(|m| m["seq"].as_u64()).collect()
    }

    pub fn epoch(&self) -> &str {
        self.body["epoch"].as_str().unwrap_or_default()
    }

    /// Answered 2xx: the relay may count the batch as delivered.
    pub fn accepted(&self) -> bool {
        matches!(self.status, Some(200..=299))
    }

    pub fn is_reset(&self) -> bool {
        self.body["reset"] == true
    }

    /// The `Idempotency-Key` the contract gives this body: `<canvas>:<epoch>:<first seq>-<last seq>` of its
    /// messages; `0-0` for a reset; the missing range for a gap with no message after it yet.
    pub fn expected_key(&self) -> Option<String> {
        let range = if self.is_reset() {
            (0, 0)
        } else if let (Some(first), Some(last)) = (self.seqs().first(), self.seqs().last()) {
            (*first, *last)
        } else {
            let gap = &self.body["gap"];
            (gap["after"].as_u64()? + 1, gap["next"].as_u64()?.checked_sub(1)?)
        };
        Some(format!("{}:{}:{}-{}", self.canvas, self.epoch(), range.0, range.1))
    }
}

/// What the receiver and its request handlers share.
struct Shared {
    /// Every canvas's answer, unless `overrides` names the canvas.
    answer: Mutex<Answer>,
    /// Answers for single canvases (a slow one among fast ones).
    overrides: Mutex<HashMap<String, Answer>>,
    /// Every request ever received, in the order they started.
    deliveries: Mutex<Vec<Delivery>>,
}

/// Records a request's end when dropped: when the handler answers, or when hyper drops it because the
/// connection closed (the relay timed out or died) or the receiver went down.
struct InFlight {
    shared: Arc<Shared>,
    index: usize,
    status: Option<u16>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut deliveries = self.shared.deliveries.lock().unwrap();
        deliveries[self.index].ended = Some(Instant::now());
        deliveries[self.index].status = self.status;
    }
}

/// The receiver: a loopback port that is up (serving) or down (refusing connections).
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    /// The accept loop while up; it owns every connection it serves, so aborting it cuts them all.
    serving: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Starts listening on a free loopback port, answering 200.
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the receiver");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            answer: Mutex::new(Answer::Ok),
            overrides: Mutex::default(),
            deliveries: Mutex::default(),
        });
        let serving = Some(tokio::spawn(accept_loop(listener, shared.clone())));
        Receiver { addr, shared, serving }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The relay flags that point webhooks here, with short retries, followed by `extra`.
    pub fn relay_args(&self, extra: &[&str]) -> Vec<String> {
        let own = ["--webhook-url", &self.url(), "--webhook-secret", SECRET, "--webhook-max-backoff", "300ms"];
        own.iter().map(|s| s.to_string()).chain(extra.iter().map(|s| s.to_string())).collect()
    }

    /// How every canvas without an override is answered from now on.
    pub fn answer(&self, answer: Answer) {
        *self.shared.answer.lock().unwrap() = answer;
    }

    /// How `canvas` is answered from now on, whatever the others get.
    pub fn answer_for(&self, canvas: &str, answer: Answer) {
        self.shared.overrides.lock().unwrap().insert(canvas.to_owned(), answer);
    }

    /// Stops listening and cuts every open connection (requests in flight end unanswered): the relay's
    /// connections are refused until [`Receiver::come_up`].
    pub async fn go_down(&mut self) {
        if let Some(serving) = self.serving.take() {
            serving.abort();
            let _ = serving.await; // the listener is closed once the task is gone
        }
    }

    /// Listens again on the same port.
    pub async fn come_up(&mut self) {
        assert!(self.serving.is_none(), "the receiver is already up");
        let deadline = Instant::now() + super::WAIT;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(error) if Instant::now() < deadline => {
                    eprintln!("receiver: rebinding {}: {error}; retrying", self.addr);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => panic!("the receiver could not listen on {} again: {error}", self.addr),
            }
        };
        self.serving = Some(tokio::spawn(accept_loop(listener, self.shared.clone())));
    }

    /// Every request so far, in the order they started.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared.deliveries.lock().unwrap().clone()
    }

    /// The requests for `canvas`, in the order they started.
    pub fn of(&self, canvas: &str) -> Vec<Delivery> {
        self.deliveries().into_iter().filter(|d| d.canvas == canvas).collect()
    }

    /// The first request of each idempotency key for `canvas`, answered or not, in the order they started.
    pub fn first_deliveries(&self, canvas: &str) -> Vec<Delivery> {
        let mut seen = std::collections::HashSet::new();
        self.of(canvas).into_iter().filter(|d| d.key.is_none() || seen.insert(d.key.clone())).collect()
    }

    /// The batches a receiver that remembers keys processed: answered 2xx, each key once, in order.
    pub fn accepted_batches(&self, canvas: &str) -> Vec<Delivery> {
        let mut seen = std::collections::HashSet::new();
        let accepted = self.of(canvas).into_iter().filter(Delivery::accepted);
        accepted.filter(|d| d.key.is_none() || seen.insert(d.key.clone())).collect()
    }

    /// The messages of [`Receiver::accepted_batches`], in order.
    pub fn delivered(&self, canvas: &str) -> Vec<Value> {
        self.accepted_batches(canvas).iter().flat_map(|d| d.messages().to_vec()).collect()
    }

    /// Everything wrong with the requests for `canvas` that the contract rules out in any scenario: a bad
    /// signature, a key other than the body's range, not a JSON POST, two requests in flight at once, a
    /// repeat with another key or another body. Empty when all is well.
    pub fn violations(&self, canvas: &str) -> Vec<String> {
        let requests = self.of(canvas);
        let mut found = Vec::new();
        for (i, d) in requests.iter().enumerate() {
            let what = format!("{canvas} request {i} (key {:?})", d.key);
            if !d.signature_ok {
                found.push(format!("{what}: bad or missing X-Relay-Signature"));
            }
            if !d.standard_ok {
                found.push(format!("{what}: bad or missing Standard Webhooks headers"));
            }
            if d.key.is_none() || d.key != d.expected_key() {
                found.push(format!("{what}: expected key {:?} for body {}", d.expected_key(), d.body));
            }
            if d.method != "POST" || !d.content_type.as_deref().is_some_and(|t| t.starts_with("application/json")) {
                found.push(format!("{what}: {} with content type {:?}", d.method, d.content_type));
            }
        }
        found.extend(overlaps(&requests));
        found.extend(inconsistent_repeats(&requests));
        found
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(serving) = self.serving.take() {
            serving.abort();
        }
    }
}

/// Two requests in flight at once (one started before an earlier one ended). A request the relay abandoned
/// (timeout) ends when hyper sees its connection close, which may be a moment after the relay gave up: a
/// test whose receiver answers slowly looks at the other canvases only.
fn overlaps(requests: &[Delivery]) -> Vec<String> {
    let mut found = Vec::new();
    for (i, earlier) in requests.iter().enumerate() {
        for (j, later) in requests.iter().enumerate().skip(i + 1) {
            if earlier.ended.is_none_or(|ended| later.started < ended) {
                found.push(format!(
                    "{} requests {i} (key {:?}) and {j} (key {:?}) were in flight at once",
                    later.canvas, earlier.key, later.key
                ));
            }
        }
    }
    found
}

/// A repeat (the same key again) must carry the same batch, and a seq once sent must always travel under
/// the key it was first sent with (the same range after a retry, a restart or a takeover).
fn inconsistent_repeats(requests: &[Delivery]) -> Vec<String> {
    let mut found = Vec::new();
    let mut first_body: HashMap<&str, &Value> = HashMap::new();
    let mut first_key: HashMap<(&str, u64), &str> = HashMap::new();
    for d in requests {
        let Some(key) = d.key.as_deref() else { continue };
        let first = *first_body.entry(key).or_insert(&d.body);
        if first != &d.body {
            found.push(format!("key {key} repeated with another body: {first} then {}", d.body));
        }
        for seq in d.seqs() {
            let owner = *first_key.entry((d.epoch(), seq)).or_insert(key);
            if owner != key {
                found.push(format!("seq {seq} first sent under key {owner}, later under {key}"));
            }
        }
    }
    found
}

/// Accepts connections until aborted; each connection is served by hyper in a task of `connections`, so
/// that aborting this loop (dropping the set) cuts them all.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await; // out of file descriptors: try again
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let shared = shared.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| handle(shared.clone(), request));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// Records one request and answers it as the receiver is told to.
async fn handle(shared: Arc<Shared>, request: Request<Incoming>) -> Result<Response<String>, Infallible> {
    let started = Instant::now();
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (key, signature, content_type) =
        (header("idempotency-key"), header("x-relay-signature"), header("content-type"));
    let standard = (header("webhook-id"), header("webhook-timestamp"), header("webhook-signature"));
    let method = request.method().to_string();
    let raw = read_body(request.into_body()).await;
    let body: Value = raw.as_deref().and_then(|raw| serde_json::from_slice(raw).ok()).unwrap_or(Value::Null);
    let signature_ok = matches!((&raw, &signature), (Some(raw), Some(s)) if *s == sign(raw));
    let standard_ok = match (&raw, standard) {
        (Some(raw), (Some(id), Some(timestamp), Some(signature))) => {
            Some(&id) == key.as_ref() && verify_standard(&id, &timestamp, &signature, raw)
        }
        _ => false,
    };
    let canvas = body["canvas"].as_str().unwrap_or_default().to_owned();
    let answer = shared.overrides.lock().unwrap().get(&canvas).copied().unwrap_or(*shared.answer.lock().unwrap());
    let raw_text = String::from_utf8_lossy(raw.as_deref().unwrap_or_default()).into_owned();
    let delivery = Delivery {
        started,
        ended: None,
        method,
        content_type,
        canvas,
        key,
        body,
        raw: raw_text,
        signature_ok,
        standard_ok,
        status: None,
    };
    let index = {
        let mut deliveries = shared.deliveries.lock().unwrap();
        deliveries.push(delivery);
        deliveries.len() - 1
    };
    let mut in_flight = InFlight { shared, index, status: None };
    let status = match answer {
        Answer::Ok => 200,
        Answer::Status(status) => status,
        Answer::Slow(delay) => {
            tokio::time::sleep(delay).await;
            200
        }
    };
    in_flight.status = Some(status);
    // The end is recorded before the answer is written: the relay cannot send its next request sooner.
    drop(in_flight);
    let mut response = Response::new(String::new());
    *response.status_mut() = hyper::StatusCode::from_u16(status).expect("a valid status");
    Ok(response)
}

/// The whole request body; `None` when the connection broke before its end.
async fn read_body(mut body: Incoming) -> Option<Vec<u8>> {
    let mut raw = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await {
        if let Ok(data) = frame.ok()?.into_data() {
            raw.extend_from_slice(&data);
        }
    }
    Some(raw)
}

/// `sha256=<lowercase hex HMAC-SHA256(SECRET, body)>`, the header the relay must send.
/// A Standard Webhooks signature checked as the spec's libraries do: the timestamp within five minutes of
/// now, one of the space-separated `v1,` signatures the HMAC-SHA256 of "id.timestamp.body".
fn verify_standard(id: &str, timestamp: &str, signatures: &str, body: &[u8]) -> bool {
    use base64::Engine;
    let Ok(seconds) = timestamp.parse::<u64>() else { return false };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    if now.abs_diff(seconds) > 300 {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    signatures.split(' ').any(|signature| signature.strip_prefix("v1,") == Some(expected.as_str()))
}

pub fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}
