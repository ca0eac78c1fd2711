//! The two stores must not disagree (issues 27 and 28): the same seeded random steps, sent to a relay on the
//! SQLite file and to one on a real redis-server, get byte-identical answers. Steps: object creates (fields
//! in any order, whitespace between tokens, numbers written `1.0`, `1e2`, `-0.0`, big integers, nested
//! values), updates (fields changed, added, set to null), deletes, updates and deletes of missing objects,
//! creates that replace, repeated idempotency keys, plain messages, `canvas_full` refusals (a small
//! `--max-canvas-state`), and tabs of several users opened with and without a name and closed in any order.
//! A publish goes through the HTTP API or as a client frame, either with an idempotency key or without.
//!
//! Compared byte for byte: each step's answer (status and body, the ack or error frame, the opening tab's
//! welcome) and the logged frames a watching connection got for it; at checkpoints and at the end,
//! `GET /api/v1/canvases/{c}`, `GET .../messages` and a fresh joiner's welcome. Only what is random by
//! design is normalised ([`normalised`]). The seed is new on each run and printed on failure;
//! `RELAY_AGREE_SEED=N` replays run N. It holds because one fold, in Rust, serves both stores (issue 28).

#[macro_use]
mod helpers;
#[path = "stores_agree/steps.rs"]
mod steps;

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use helpers::{Instance, Store, WAIT};
use serde_json::value::RawValue;
use serde_json::Value;
use steps::{script, Step, MAX_STATE};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const KEY: &str = "agree-key";
const CANVAS: &str = "board";

/// A tab the test holds open: its sending half, and a task that reads (and drops) whatever it receives, so
/// that it never falls behind and is never cut.
struct Tab {
    /// Where the close is sent from.
    sink: SplitSink<Ws, Message>,
    /// Ends when the server has answered the close and ended the socket.
    reader: tokio::task::JoinHandle<()>,
    /// Its connection id, whose `null` presence frame tells the watcher the close is committed.
    connection: String,
}

/// One relay under test, and the connections the test holds on it.
struct Side {
    /// One `canvas-relay` process on its store, with an API key and `--max-canvas-state` [`MAX_STATE`].
    relay: Instance,
    /// Open all along (user `pen`): sends the client ops and reads every logged frame, in seq order.
    watcher: Ws,
    /// The last seq the watcher has read.
    head: u64,
    /// The tabs open now, by the step's tab number (the same on both sides).
    tabs: HashMap<usize, Tab>,
    /// Random connection ids and the test's names for them (`pen`, `tab3`), for [`normalised`].
    labels: Vec<(String, String)>,
}

impl Side {
    async fn start(store: &Store) -> Side {
        let max_state = MAX_STATE.to_string();
        let relay = store.start(&["--api-key", KEY, "--max-canvas-state", &max_state, "--message-ttl", "1h"]).await;
        let (watcher, welcome) = connect(&relay, "user=pen").await;
        let welcome: Value = serde_json::from_str(&welcome).expect("a JSON welcome");
        let labels = vec![(welcome["connection"].as_str().expect("a connection id").to_owned(), "pen".to_owned())];
        Side { relay, watcher, head: welcome["seq"].as_u64().expect("a seq"), tabs: HashMap::new(), labels }
    }

    /// Runs `step`: its answer, then the frames the watcher got for it, each normalised, one a line.
    async fn run(&mut self, step: &Step) -> String {
        match step {
            Step::Publish { body, key } => {
                let auth = format!("Bearer {KEY}");
                let mut headers = vec![("Authorization", auth.as_str())];
                headers.extend(key.as_deref().map(|key| ("Idempotency-Key", key)));
                let path = format!("/api/v1/canvases/{CANVAS}/messages");
                let (status, answer) = helpers::http_with(self.relay.addr, "POST", &path, &headers, body).await;
                let logged = (status == 201).then(|| serde_json::from_str::<Value>(&answer).expect("a JSON answer"));
                let head = logged.and_then(|answer| answer["seq"].as_u64()).unwrap_or(self.head);
                format!("{status} {}{}", self.normalised(&answer), self.follow(head, None, None).await)
            }
            Step::Send { frame, reference } => {
                self.watcher.send(Message::text(frame.clone())).await.expect("send");
                self.follow(self.head, Some(reference), None).await
            }
            Step::Open { tab, user, name } => {
                let name = name.map_or(String::new(), |name| format!("&name={name}"));
                let (ws, text) = connect(&self.relay, &format!("user={user}{name}")).await;
                let welcome: Value = serde_json::from_str(&text).expect("a JSON welcome");
                let connection = welcome["connection"].as_str().expect("a connection id").to_owned();
                self.labels.push((connection.clone(), format!("tab{tab}")));
                let (sink, mut stream) = ws.split();
                let reader = tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
                self.tabs.insert(*tab, Tab { sink, reader, connection });
                let head = welcome["seq"].as_u64().expect("a seq");
                format!("{}{}", self.normalised(&text), self.follow(head, None, None).await)
            }
            Step::Close { tab, last } => {
                let mut tab = self.tabs.remove(tab).expect("the step closes an open tab");
                let _ = tab.sink.close().await;
                tokio::time::timeout(WAIT, tab.reader).await.expect("the server ends a closed socket").unwrap();
                // The `null` comes from the commit that removed the connection (README, "Presence state"), and
                // the last tab's `user-disconnected` in that commit: the next step cannot overtake either.
                self.follow(self.head + u64::from(*last), None, Some(&tab.connection)).await
            }
            Step::Read => {
                let canvas = self.relay.http("GET", &format!("/api/v1/canvases/{CANVAS}"), Some(KEY), "").await;
                let path = format!("/api/v1/canvases/{CANVAS}/messages?since=0&limit=1000");
                let messages = self.relay.http("GET", &path, Some(KEY), "").await;
                let canvas = format!("{} {}", canvas.0, self.normalised(&canvas.1));
                format!("{canvas}\n{} {}", messages.0, self.normalised(&messages.1))
            }
        }
    }

    /// Reads the watcher's frames until it has read seq `head`, the ack or error of `reference` and the
    /// `null` presence of connection `gone` (each if any); returns the logged frames and the answer, in order.
    async fn follow(&mut self, head: u64, reference: Option<&str>, gone: Option<&str>) -> String {
        let (mut answered, mut vanished, mut seen) = (reference.is_none(), gone.is_none(), String::new());
        while self.head < head || !answered || !vanished {
            let text = next_text(&mut self.watcher).await;
            let frame: Value = serde_json::from_str(&text).expect("a JSON frame");
            let ours = reference.is_some() && frame["ref"].as_str() == reference;
            match frame["type"].as_str() {
                Some("presence") => vanished |= frame["data"].is_null() && frame["connection"].as_str() == gone,
                Some("ack" | "error") if ours => {
                    answered = true;
                    if frame["duplicate"].is_null() && frame["seq"].is_u64() {
                        self.head = self.next_seq(&frame);
                    }
                    seen = format!("{seen}\n{}", self.normalised(&text));
                }
                _ if frame["seq"].is_u64() => {
                    self.head = self.next_seq(&frame);
                    seen = format!("{seen}\n{}", self.normalised(&text));
                }
                _ => panic!("the watcher got a frame no step asked for: {text}"),
            }
        }
        seen
    }

    /// The seq of a logged frame, which must be the one after the last the watcher read.
    fn next_seq(&self, frame: &Value) -> u64 {
        assert_eq!(frame["seq"].as_u64(), Some(self.head + 1), "a gap in the watcher's stream: {frame}");
        self.head + 1
    }

    fn normalised(&self, text: &str) -> String {
        normalised(text, &self.labels)
    }
}

/// Opens `/ws/{CANVAS}?{query}` and reads the welcome, as the server wrote it.
async fn connect(relay: &Instance, query: &str) -> (Ws, String) {
    let url = relay.url(&format!("/ws/{CANVAS}?{query}"));
    let connected = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url)).await;
    let (mut ws, _) = connected.expect("connect in time").expect("connect");
    let welcome = next_text(&mut ws).await;
    (ws, welcome)
}

/// The next text frame, as the server wrote it (WebSocket pings and pongs skipped).
async fn next_text(ws: &mut Ws) -> String {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next()).await.expect("no frame in time");
        match frame.expect("socket ended").expect("socket error") {
            Message::Text(text) => return text.as_str().to_owned(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// `text` (a JSON object) with only what is random by design made the same on both stores, and nothing else
/// touched: the `epoch` (its store part is each store's random id; its generation part each store's own
/// count), the `instance` (a random UUID per process), connection ids (random UUIDs) replaced by the test's
/// name for the connection, `welcome.peers` put in the order of those names (the relay lists peers in
/// connection id order, so in a random order), and every `ts` (each commit's clock) set to 0.
fn normalised(sent: &str, labels: &[(String, String)]) -> String {
    let Ok(top) = serde_json::from_str::<HashMap<String, &RawValue>>(sent) else { return sent.to_owned() };
    let mut text = sent.to_owned();
    if let Some(peers) = top.get("peers") {
        let mut items: Vec<String> = serde_json::from_str::<Vec<&RawValue>>(peers.get())
            .expect("peers is a list")
            .iter()
            .map(|peer| relabelled(peer.get(), labels))
            .collect();
        items.sort();
        // `peers` borrows `sent`: where it starts there is where it is in `text`.
        let at = peers.get().as_ptr() as usize - sent.as_ptr() as usize;
        text.replace_range(at..at + peers.get().len(), &format!("[{}]", items.join(",")));
    }
    let mut random = labels.to_vec();
    for field in ["epoch", "instance"] {
        if let Some(value) = top.get(field).and_then(|raw| serde_json::from_str::<String>(raw.get()).ok()) {
            random.push((value, format!("<{field}>")));
        }
    }
    without_ts(&relabelled(&text, &random))
}

/// `text` with each random id (as a JSON string) replaced by its label.
fn relabelled(text: &str, labels: &[(String, String)]) -> String {
    labels.iter().fold(text.to_owned(), |text, (id, label)| text.replace(&format!("\"{id}\""), &format!("\"{label}\"")))
}

/// `text` with the value of every `"ts":` member set to 0. The test's data never has a member named `ts`
/// nor a string holding `"ts":`, so every one is a frame's or a message's commit time.
fn without_ts(text: &str) -> String {
    let (mut out, mut rest) = (String::with_capacity(text.len()), text);
    while let Some(at) = rest.find("\"ts\":") {
        out.push_str(&rest[..at + 5]);
        rest = &rest[at + 5..];
        out.push('0');
        rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out + rest
}

/// This run's seed: `RELAY_AGREE_SEED` to replay one, else a new one from the clock.
fn seed() -> u64 {
    match std::env::var("RELAY_AGREE_SEED") {
        Ok(seed) => seed.trim().parse().expect("RELAY_AGREE_SEED must be an unsigned integer"),
        Err(_) => SystemTime::now().duration_since(UNIX_EPOCH).expect("a clock after 1970").as_nanos() as u64,
    }
}

/// `text[from..to]`, widened to character boundaries.
fn clip(text: &str, from: usize, to: usize) -> &str {
    let from = (0..=from.min(text.len())).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    let to = (to.min(text.len())..=text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
    &text[from..to]
}

/// Fails the run where the two answers to a step first differ, showing both around that byte.
fn agree(seed: u64, index: usize, step: &Step, file: &str, redis: &str) {
    if file == redis {
        return;
    }
    let at = file.bytes().zip(redis.bytes()).take_while(|(a, b)| a == b).count();
    let step = step.described();
    // An answer's lines (its texts) shown on one line each side, so that the two excerpts stay side by side.
    let around = |text| clip(text, at.saturating_sub(150), at + 150).replace('\n', " ⏎ ");
    panic!(
        "seed {seed}, step {index} {}: the stores disagree from byte {at}:\n  SQLite file: …{}…\n  Redis:       …{}…",
        clip(&step, 0, 400),
        around(file),
        around(redis)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_steps_get_byte_identical_answers_from_the_file_and_from_redis() {
    let Some(redis) = Store::redis().await else { return };
    let file = Store::sqlite();
    let seed = seed();
    // Shown with the failure, whatever fails (libtest prints a failed test's output).
    eprintln!("stores_agree: seed {seed} (replay with RELAY_AGREE_SEED={seed})");
    let (mut on_file, mut on_redis) = tokio::join!(Side::start(&file), Side::start(&redis));
    for (index, step) in script(seed).iter().enumerate() {
        let (a, b) = tokio::join!(on_file.run(step), on_redis.run(step));
        agree(seed, index, step, &a, &b);
    }
}
