//! The example webhook receiver (`examples/webhook-receiver/receiver.py`) beside real relays: it checks
//! signatures, applies each batch once, and its copy of a canvas ends equal to the relay's, including after
//! it was down (and restarted on its own file) while the canvas changed. Its own unit tests run with the
//! test command too (`python3 -m unittest`).

#[macro_use]
mod helpers;

use std::process::Stdio;

use helpers::{eventually, http, Store, WAIT};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const SECRET: &str = "example-secret";
const KEY: &str = "k";

/// The receiver as a process on `port` (0: any), on its own file in `dir`.
struct Receiver {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Receiver {
    async fn start(dir: &std::path::Path, port: u16) -> Receiver {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/webhook-receiver/receiver.py");
        let mut child = Command::new("python3")
            .args([script, "--secret", SECRET, "--listen", &format!("127.0.0.1:{port}")])
            .arg("--db")
            .arg(dir.join("receiver.db"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs the example receiver");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    return rest.split_whitespace().next().unwrap().parse().unwrap();
                }
            }
            panic!("the receiver ended without listening");
        })
        .await
        .expect("the receiver listens");
        Receiver { child, addr }
    }

    /// Its copy of a canvas: `{"canvas","epoch","seq","objects"}`.
    async fn canvas(&self, canvas: &str) -> Value {
        let (status, body) = http(self.addr, "GET", &format!("/objects/{canvas}"), None, "").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }
}

/// Object ops and a custom message from a WebSocket client and the API, the receiver stopped and started
/// again in between: its objects, epoch and seq end equal to the relay's.
async fn the_example_receiver_keeps_a_copy_of_every_canvas(store: Store) {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path(), 0).await;
    let url = format!("http://{}/webhook", receiver.addr);
    let args = ["--api-key", KEY, "--webhook-url", &url, "--webhook-secret", SECRET, "--webhook-max-backoff", "200ms"];
    let relay = store.start(&args).await;
    let mut ann = relay.connect("board", "ann").await;
    ann.publish("object-create", json!({"id": "r1", "kind": "rect", "x": 1}), "a").await;
    ann.publish("object-create", json!({"id": "r2", "kind": "rect", "x": 2}), "b").await;
    ann.publish("comment", json!({"text": "hi"}), "c").await;
    let first = converged(&relay, &receiver, "board").await;
    assert_eq!(first["objects"]["r1"]["x"], 1);

    let port = receiver.addr.port();
    drop(receiver); // kill_on_drop: the receiver is down while the canvas changes
    ann.publish("object-update", json!({"id": "r1", "x": 5}), "d").await;
    ann.publish("object-delete", json!({"id": "r2"}), "e").await;
    let (status, _) = relay
        .api(
            "POST",
            "/api/v1/canvases/board/messages",
            Some(KEY),
            json!({"type": "object-create", "data": {"id": "r3"}}),
        )
        .await;
    assert_eq!(status, 201);
    let receiver = Receiver::start(dir.path(), port).await;
    let last = converged(&relay, &receiver, "board").await;
    assert_eq!(last["objects"], json!({"r1": {"id": "r1", "kind": "rect", "x": 5}, "r3": {"id": "r3"}}));
    drop(receiver);
}

/// Waits until the receiver's copy of `canvas` equals the relay's state; returns it.
async fn converged(relay: &helpers::Instance, receiver: &Receiver, canvas: &str) -> Value {
    eventually("the receiver's copy to equal the relay's state", || async {
        let (_, state) = relay.api("GET", &format!("/api/v1/canvases/{canvas}"), Some(KEY), Value::Null).await;
        let copy = receiver.canvas(canvas).await;
        copy["objects"] == state["objects"] && copy["seq"] == state["seq"] && copy["epoch"] == state["epoch"]
    })
    .await;
    receiver.canvas(canvas).await
}

on_both_buses!(the_example_receiver_keeps_a_copy_of_every_canvas);

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
