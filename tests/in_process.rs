//! Instances run inside the test process: `canvas_relay::run` on a port-0 listener, stopped through its
//! `shutdown` future. Two of them share one store as two processes would, and nothing process-wide stands
//! between them: each has its own Prometheus recorder (its `/metrics` counts only its own traffic) and its
//! own SQLite busy timeout. Checks of status codes and of logic need no binary this way.

#[macro_use]
mod helpers;

use std::net::SocketAddr;

use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use canvas_relay::config::{Cli, Command};
use helpers::{http, Client, Seen, Store, WAIT};

/// One instance running in this process.
struct InProcess {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    served: JoinHandle<anyhow::Result<()>>,
}

impl InProcess {
    /// Starts an instance on `store` with the flags `args`, as `canvas-relay serve` would.
    async fn start(store: &Store, args: &[&str]) -> InProcess {
        let storage = match store {
            Store::File(file) => vec!["--db".to_owned(), file.db.display().to_string()],
            Store::Redis(redis) => vec!["--bus".to_owned(), redis.url()],
        };
        let flags = ["canvas-relay", "serve"].into_iter().map(str::to_owned).chain(storage);
        let cli = Cli::try_parse_resolved_from(flags.chain(args.iter().map(|a| a.to_string()))).expect("flags");
        let Command::Serve(config) = cli.command;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(canvas_relay::run(listener, config, async move { drop(stopped.await) }));
        let instance = InProcess { addr, stop, served };
        for _ in 0..300 {
            if http(addr, "GET", "/health", None, "").await.0 == 200 {
                return instance;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("the in-process instance never became healthy");
    }

    async fn connect(&self, canvas: &str, user: &str) -> Client {
        Client::connect_url(format!("ws://{}/ws/{canvas}?user={user}", self.addr)).await.expect("connect")
    }

    /// One series of this instance's `/metrics` (0 when absent).
    async fn metric(&self, series: &str) -> f64 {
        let (_, text) = http(self.addr, "GET", "/metrics", None, "").await;
        text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
    }

    /// Stops it as a signal would and returns what `run` returned.
    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT, self.served).await.expect("run did not return").expect("run panicked")
    }
}

/// Two instances of one process carry a message between them, and each counts only its own.
async fn two_instances_in_one_process_deliver_and_keep_their_own_metrics(store: Store) {
    let (a, b) = (InProcess::start(&store, &[]).await, InProcess::start(&store, &[]).await);
    let mut ann = a.connect("shared", "ann").await;
    let mut bob = b.connect("shared", "bob").await;
    ann.publish("note", json!({"text": "hi"}), "n1").await;
    let seq = loop {
        let frame = ann.recv().await;
        if frame["type"] == "ack" {
            assert_eq!(frame["ref"], "n1");
            break frame["seq"].as_u64().unwrap();
        }
    };
    let (seen, _) = bob.read_through(seq).await;
    let note = seen.iter().find(|(s, _)| *s == seq).map(|(_, item)| item);
    assert!(
        matches!(note, Some(Seen::Message { kind, from, .. }) if kind == "note" && from == "ann"),
        "bob on the other instance got ann's note at seq {seq}: {seen:?}"
    );

    assert_eq!(a.metric("relay_messages_in_total").await, 1.0, "the sender's instance counts its message");
    assert_eq!(b.metric("relay_messages_in_total").await, 0.0, "the other instance has a recorder of its own");
    assert_eq!(b.metric("relay_connections").await, 1.0);

    drop((ann, bob));
    a.stop().await.expect("a clean stop");
    b.stop().await.expect("a clean stop");
}

on_both_buses!(two_instances_in_one_process_deliver_and_keep_their_own_metrics);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_codes_in_process() {
    let store = Store::sqlite();
    let relay = InProcess::start(&store, &["--api-key", "k"]).await;
    let cases = [
        ("GET", "/ws/c?user=u", None, 426),
        ("GET", "/ws/c", None, 400),
        ("GET", "/ws/bad%20canvas?user=u", None, 400),
        ("GET", "/api/v1/canvases/c", None, 401),
        ("GET", "/api/v1/canvases/c", Some("wrong"), 401),
        ("GET", "/api/v1/canvases/c", Some("k"), 200),
        ("POST", "/api/v1/canvases/c/messages", Some("k"), 400),
        ("GET", "/health", None, 200),
    ];
    for (method, path, key, expected) in cases {
        let (status, body) = http(relay.addr, method, path, key, "").await;
        assert_eq!(status, expected, "{method} {path}: {body}");
        if status >= 400 {
            let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path}: {body}"));
            assert!(body["error"].is_string(), "{method} {path}: an error body says why: {body}");
        }
    }
    relay.stop().await.expect("a clean stop");
}
