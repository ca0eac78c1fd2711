//! Chaos under load: 3 instances on one store (the SQLite file, or a Redis server), clients on all of them
//! publishing at a steady rate, and every few seconds a random instance is killed with SIGKILL and started
//! again. Clients reconnect to any live instance and resume from the last seq they saw. At the end every
//! client's view must be gap-free from its first welcome to the head, agree with the stored log entry by
//! entry, contain every acked message exactly once at its acked seq, and presence must show exactly the
//! connected clients.
//!
//! The suite runs a short form. The longer run whose results `docs/CHAOS.md` records:
//!
//! ```text
//! CHAOS_ROUNDS=60 CHAOS_CLIENTS=12 cargo test --release --test chaos -- --nocapture   # both buses
//! CHAOS_ROUNDS=60 CHAOS_CLIENTS=12 cargo test --release --test chaos redis -- --nocapture   # one
//! ```
//!
//! `CHAOS_SEED` replays a run's choices of victims and instances (printed in the report).

mod helpers;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use helpers::{Store, WAIT};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

const CANVAS: &str = "chaos";
const KEY: &str = "chaos-key";
/// Short heartbeats so dead instances' connections expire quickly; a TTL longer than any run, so the store
/// still holds every message at the end.
const ARGS: &[&str] =
    &["--api-key", KEY, "--heartbeat-interval", "300ms", "--presence-timeout", "1500ms", "--message-ttl", "1h"];

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A small deterministic generator (xorshift64*): the run's choices replay from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

/// The addresses of the instances that are up; clients pick one at random when they (re)connect.
#[derive(Default)]
struct Cluster {
    live: Mutex<Vec<SocketAddr>>,
    reconnects: AtomicU64,
    sent: AtomicU64,
}

impl Cluster {
    fn pick(&self, rng: &mut Rng) -> Option<SocketAddr> {
        let live = self.live.lock().unwrap();
        (!live.is_empty()).then(|| live[rng.below(live.len())])
    }
}

/// What one client saw: every seq after its first welcome, and the seqs its own messages were acked at.
#[derive(Default, Debug)]
struct View {
    user: String,
    first: u64,
    /// seq -> (from, data) for others' messages, or (user, {"ack": ref}) for our acks.
    seen: BTreeMap<u64, (String, Value)>,
    acked: HashMap<String, u64>,
    violations: Vec<String>,
}

impl View {
    fn last(&self) -> u64 {
        self.seen.keys().next_back().copied().unwrap_or(self.first)
    }

    /// Takes one server frame; anything with a seq must be exactly the next one.
    fn take(&mut self, frame: &Value) {
        let Some(seq) = frame["seq"].as_u64() else { return };
        if frame["type"] == "welcome" || frame["type"] == "reset" {
            return;
        }
        if seq != self.last() + 1 {
            self.violations.push(format!("{}: expected seq {}, got {frame}", self.user, self.last() + 1));
            return;
        }
        if frame["type"] == "ack" {
            let reference = frame["ref"].as_str().unwrap_or_default().to_owned();
            self.acked.insert(reference.clone(), seq);
            self.seen.insert(seq, (self.user.clone(), json!({ "ref": reference })));
        } else {
            let from = frame["from"].as_str().unwrap_or_default().to_owned();
            self.seen.insert(seq, (from, frame["data"].clone()));
        }
    }
}

/// One client: publishes `rate` messages a second while `sending`, reconnecting (with resume) to a random
/// live instance whenever its socket dies; once `target` names the head, reads up to it and returns.
async fn client(
    user: String,
    seed: u64,
    rate: u64,
    cluster: Arc<Cluster>,
    sending: Arc<AtomicBool>,
    mut target: watch::Receiver<Option<u64>>,
) -> View {
    let mut rng = Rng(seed);
    let mut view = View { user: user.clone(), ..View::default() };
    let mut epoch: Option<String> = None;
    let mut ticker = tokio::time::interval(Duration::from_millis(1000 / rate));
    let mut n = 0u64;
    loop {
        let Some(addr) = cluster.pick(&mut rng) else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let resume = epoch.as_ref().map(|e| format!("&since={}&epoch={e}", view.last())).unwrap_or_default();
        let url = format!("ws://{addr}/ws/{CANVAS}?user={user}{resume}");
        let Ok(Ok((ws, _))) = tokio::time::timeout(Duration::from_secs(2), tokio_tungstenite::connect_async(url)).await
        else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let (mut tx, mut rx) = ws.split();
        loop {
            tokio::select! {
                _ = ticker.tick(), if sending.load(Ordering::Relaxed) && epoch.is_some() => {
                    n += 1;
                    let frame = json!({"type": "stroke", "data": {"ref": format!("{user}-{n}")}, "ref": format!("{user}-{n}")});
                    if tx.send(Message::text(frame.to_string())).await.is_err() { break }
                    cluster.sent.fetch_add(1, Ordering::Relaxed);
                }
                frame = rx.next() => {
                    let Some(Ok(Message::Text(text))) = frame else {
                        if matches!(frame, Some(Ok(_))) { continue } // pings, pongs
                        break;
                    };
                    let frame: Value = serde_json::from_str(&text).expect("server sent invalid JSON");
                    if frame["type"] == "welcome" {
                        if epoch.is_none() {
                            view.first = frame["seq"].as_u64().unwrap();
                            epoch = frame["epoch"].as_str().map(str::to_owned);
                        } else if frame["resumed"] != true {
                            view.violations.push(format!("{user}: resume refused: {frame}"));
                        }
                    }
                    view.take(&frame);
                }
                _ = target.changed() => {}
            }
            let head = *target.borrow();
            if let Some(head) = head {
                if view.last() >= head {
                    let _ = tx.send(Message::Close(None)).await;
                    return view;
                }
            }
        }
        cluster.reconnects.fetch_add(1, Ordering::Relaxed);
    }
}

on_both_buses!(acked_messages_survive_random_sigkills_and_presence_converges);

async fn acked_messages_survive_random_sigkills_and_presence_converges(store: Store) {
    let (rounds, clients, rate, period_ms) = (
        setting("CHAOS_ROUNDS", 4),
        setting("CHAOS_CLIENTS", 6),
        setting("CHAOS_RATE", 20),
        setting("CHAOS_PERIOD_MS", 1500),
    );
    let seed = setting("CHAOS_SEED", 0x5eed_cafe);
    let mut rng = Rng(seed);
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(store.start(ARGS).await);
    }
    let cluster = Arc::new(Cluster::default());
    *cluster.live.lock().unwrap() = instances.iter().map(|i| i.addr).collect();
    let sending = Arc::new(AtomicBool::new(true));
    let (set_target, target) = watch::channel(None);
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let run = client(format!("u{i}"), seed + 1 + i, rate, cluster.clone(), sending.clone(), target.clone());
            tokio::spawn(run)
        })
        .collect();

    for _ in 0..rounds {
        tokio::time::sleep(Duration::from_millis(period_ms)).await;
        let victim = rng.below(instances.len());
        cluster.live.lock().unwrap().retain(|a| *a != instances[victim].addr);
        instances[victim].kill().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        instances[victim] = store.start(ARGS).await;
        cluster.live.lock().unwrap().push(instances[victim].addr);
    }
    tokio::time::sleep(Duration::from_millis(period_ms)).await;
    sending.store(false, Ordering::Relaxed);

    // Presence converges to exactly the connected clients (the killed instances' connections expire).
    let expected: Vec<Value> = (0..clients).map(|i| json!([format!("u{i}"), 1])).collect();
    let converged = tokio::time::timeout(WAIT * 2, async {
        loop {
            let (_, state) =
                instances[0].api("GET", &format!("/api/v1/canvases/{CANVAS}"), Some(KEY), Value::Null).await;
            let mut present: Vec<Value> =
                state["presence"].as_array().unwrap().iter().map(|p| json!([p["user"], p["connections"]])).collect();
            present.sort_by_key(|p| p[0].as_str().unwrap()[1..].parse::<u64>().unwrap());
            if present == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    converged.expect("presence did not converge to the connected clients");
    // Messages sent just before the stop may still be committing: the head is where the log stays put.
    let mut head = store.head(CANVAS).await;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let again = store.head(CANVAS).await;
        if again == head {
            break;
        }
        head = again;
    }
    set_target.send(Some(head)).unwrap();
    let mut views = Vec::new();
    for task in tasks {
        views.push(tokio::time::timeout(WAIT * 2, task).await.expect("a client did not reach the head").unwrap());
    }

    // The store is the truth: every client's view equals it, seq by seq, and every acked message is in it once.
    // (Past the head are the disconnects of the clients leaving just now.)
    let rows: BTreeMap<u64, (String, Value)> = store
        .log(CANVAS, head)
        .await
        .into_iter()
        .map(|(seq, (sender, data))| (seq, (sender, serde_json::from_str(&data).unwrap())))
        .collect();
    let missing: Vec<u64> = (1..=head).filter(|seq| !rows.contains_key(seq)).take(10).collect();
    assert!(
        missing.is_empty() && rows.len() as u64 == head,
        "the log up to {head} has {} entries, missing {missing:?}",
        rows.len()
    );
    let mut refs = HashMap::new();
    for (seq, (_, data)) in &rows {
        if let Some(reference) = data["ref"].as_str() {
            assert!(refs.insert(reference.to_owned(), *seq).is_none(), "{reference} logged twice");
        }
    }
    let (mut acked, mut viewed) = (0, 0);
    for view in &views {
        assert!(view.violations.is_empty(), "{:?}", view.violations);
        assert!(view.last() >= head);
        let upto_head = view.seen.range(..=head);
        assert_eq!(upto_head.clone().count() as u64, head - view.first, "{} has a hole in its view", view.user);
        for (seq, (from, data)) in upto_head {
            let (sender, payload) = &rows[seq];
            assert_eq!(from, sender, "seq {seq}: {} saw another sender than the store has", view.user);
            assert_eq!(data, payload, "seq {seq}: {} saw other data than the store has", view.user);
        }
        for (reference, seq) in view.acked.iter().filter(|(_, seq)| **seq <= head) {
            assert_eq!(refs.get(reference), Some(seq), "{reference} was acked at {seq} but is not there in the store");
        }
        acked += view.acked.len();
        viewed += view.seen.len();
    }
    let sent = cluster.sent.load(Ordering::Relaxed);
    let logged = refs.len();
    println!(
        "chaos on {}: seed {seed:#x}, {rounds} SIGKILL rounds, {clients} clients at {rate}/s: {sent} sent, {acked} acked, \
         {logged} logged ({} logged whose ack died with its instance, {} never logged: in flight to a killed \
         instance, never acked), {} reconnects, head seq {head}, {viewed} deliveries checked against the store",
        store.name(),
        logged - acked,
        sent as usize - logged,
        cluster.reconnects.load(Ordering::Relaxed),
    );
    assert!(acked > 0 && cluster.reconnects.load(Ordering::Relaxed) > 0, "the run exercised nothing");
}
