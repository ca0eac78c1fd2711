//! The floor under the relay's fan-out: a bare warp process that speaks just enough of the wire contract for
//! `load-test fanout` (a welcome with the canvas's seq, an ack to the sender, the message with its seq to
//! everyone else) and does nothing else: no store, no presence, no back-pressure, no slow-reader cut. Each
//! logged message gets the next seq and goes into one tokio `broadcast` channel as one shared `Message`;
//! every socket's task takes what the channel holds, feeds it all to the socket and flushes once.
//!
//! `scripts/fanout-floor.sh` runs it and the relay in turn under the same client and prints the ratio. It
//! serves one canvas's worth of sequence numbers per process (whatever canvas is asked for): the fan-out
//! scenario uses one.
//!
//! ```sh
//! cargo run --release -p load-test --bin fanout-floor -- 127.0.0.1:9201 [WORKER_THREADS]
//! ```

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::value::RawValue;
use tokio::sync::broadcast;
use warp::ws::{Message, WebSocket};
use warp::Filter;

/// Frames the channel holds for the slowest socket; one that falls further behind skips ahead (and its
/// client sees a gap: the floor does not cut).
const CHANNEL: usize = 16 * 1024;

/// One logged message as the channel carries it: the frame every other socket gets, and what its sender's
/// socket needs to answer with the ack instead.
#[derive(Clone)]
struct Logged {
    seq: u64,
    /// Which socket sent it (its ack goes there instead of the frame).
    from_socket: u64,
    /// The sender's `ref`, echoed in the ack.
    reference: Option<Arc<str>>,
    frame: Message,
}

/// The canvas: its last seq and the channel, under one lock so that seqs enter the channel in order and a
/// joiner's welcome seq is exactly where its subscription starts.
struct Canvas {
    /// (last seq, the channel's sending side).
    head: Mutex<(u64, broadcast::Sender<Logged>)>,
}

/// What a client sends: only logged messages matter here.
#[derive(serde::Deserialize)]
struct Publish<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(rename = "ref")]
    reference: Option<String>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:9201".to_owned());
    let workers = args.next().and_then(|n| n.parse().ok()).unwrap_or(2);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build()?;
    runtime.block_on(serve(&listen))
}

async fn serve(listen: &str) -> std::io::Result<()> {
    let canvas = Arc::new(Canvas { head: Mutex::new((0, broadcast::channel(CHANNEL).0)) });
    let next_socket = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let routes = warp::path!("ws" / String)
        .and(warp::query::<std::collections::HashMap<String, String>>())
        .and(warp::ws())
        .map(move |name: String, query: std::collections::HashMap<String, String>, ws: warp::ws::Ws| {
            let canvas = canvas.clone();
            let user = query.get("user").cloned().unwrap_or_default();
            let socket = next_socket.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            ws.on_upgrade(move |ws| run(ws, canvas, name, user, socket))
        });
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?; // as the relay does: small frames leave at once
        let service = TowerToHyperService::new(warp::service(routes.clone()));
        tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(socket), service).with_upgrades());
    }
}

/// One socket: a welcome at the canvas's head, then every logged message from there, a channel's worth per
/// flush, while its own publishes get the next seq.
async fn run(ws: WebSocket, canvas: Arc<Canvas>, name: String, user: String, socket: u64) {
    let (mut sink, mut stream) = ws.split();
    let (seq, mut logged) = {
        let head = canvas.head.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        (head.0, head.1.subscribe())
    };
    let welcome = serde_json::json!({"type": "welcome", "canvas": name, "user": user, "seq": seq});
    if sink.send(Message::text(welcome.to_string())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            incoming = stream.next() => match incoming {
                Some(Ok(frame)) if frame.is_text() => publish(&canvas, &name, &user, socket, frame.to_str().unwrap_or("")),
                Some(Ok(frame)) if frame.is_close() => return,
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            },
            first = logged.recv() => {
                let mut next = Some(first);
                while let Some(received) = next.take() {
                    let frame = match received {
                        Ok(item) => frame_for(item, socket),
                        Err(broadcast::error::RecvError::Lagged(_)) => None,
                        Err(broadcast::error::RecvError::Closed) => return,
                    };
                    if let Some(frame) = frame {
                        if sink.feed(frame).await.is_err() {
                            return;
                        }
                    }
                    next = match logged.try_recv() {
                        Ok(item) => Some(Ok(item)),
                        Err(broadcast::error::TryRecvError::Lagged(n)) => Some(Err(broadcast::error::RecvError::Lagged(n))),
                        Err(_) => None,
                    };
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The frame `socket` gets for `item`: the ack of its own message, or the shared frame.
fn frame_for(item: Logged, socket: u64) -> Option<Message> {
    if item.from_socket != socket {
        return Some(item.frame);
    }
    let ack = serde_json::json!({"type": "ack", "seq": item.seq, "ref": item.reference.as_deref()});
    Some(Message::text(ack.to_string()))
}

/// Gives a logged message the next seq and puts it in the channel, serialized once.
fn publish(canvas: &Canvas, name: &str, user: &str, socket: u64, text: &str) {
    let Ok(frame) = serde_json::from_str::<Publish>(text) else { return };
    let data = frame.data.map_or("null", RawValue::get);
    let ts = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let mut head = canvas.head.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    head.0 += 1;
    let seq = head.0;
    let kind = serde_json::to_string(frame.kind).unwrap_or_default();
    let (name, user) =
        (serde_json::to_string(name).unwrap_or_default(), serde_json::to_string(user).unwrap_or_default());
    let text = format!(r#"{{"type":{kind},"seq":{seq},"canvas":{name},"from":{user},"data":{data},"ts":{ts}}}"#);
    let reference = frame.reference.map(Arc::from);
    // No receiver at all is not an error here: nobody listens yet.
    let _ = head.1.send(Logged { seq, from_socket: socket, reference, frame: Message::text(text) });
}
