//! The `join` scenario's fill phase: one client creates the canvas's objects with `object-create` frames,
//! keeping a window of unacked ones, and waits for every answer. It stops early, and says why, on
//! `canvas_full`, on a broken connection or when the relay goes quiet; other errors are counted by code.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message;

use crate::client::Socket;

/// Object ops in flight at once, as a throughput client keeps them.
const WINDOW: usize = 256;
/// With ops in flight, this long without a frame means the relay stalled.
const STALL: Duration = Duration::from_secs(30);

/// What the fill did.
pub struct Filled {
    /// Objects acked: the canvas holds exactly these.
    pub acked: usize,
    /// From the first send to the last answer.
    pub elapsed: Duration,
    /// Error frames by code (`canvas_full` included).
    pub errors: BTreeMap<String, u64>,
    /// Why it stopped before creating every object, if it did.
    pub stopped: Option<String>,
}

/// The answer fields a sender of object ops needs (the fill's, and `contention`'s).
#[derive(Deserialize)]
pub struct Answer {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    pub code: Option<String>,
}

/// Creates objects `o-0` .. `o-{objects-1}` of about `object_bytes` bytes of JSON each through `socket`.
pub async fn fill(mut socket: Socket, objects: usize, object_bytes: usize) -> Filled {
    let mut filled = Filled { acked: 0, elapsed: Duration::ZERO, errors: BTreeMap::new(), stopped: None };
    let mut in_flight = HashSet::with_capacity(WINDOW);
    let mut next = 0;
    let started = Instant::now();
    loop {
        if filled.stopped.is_none() {
            if let Err(error) = top_up(&mut socket, &mut next, objects, object_bytes, &mut in_flight).await {
                filled.stopped = Some(format!("sending failed: {error}"));
                break;
            }
        }
        if in_flight.is_empty() && (next == objects || filled.stopped.is_some()) {
            break;
        }
        let text = match tokio::time::timeout(STALL, socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => text,
            Ok(Some(Ok(Message::Close(frame)))) => {
                let code = frame.map_or("no code".to_string(), |f| u16::from(f.code).to_string());
                filled.stopped =
                    Some(format!("relay closed the connection ({code}) with {} ops unanswered", in_flight.len()));
                break;
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(error))) => {
                filled.stopped = Some(format!("connection failed: {error}"));
                break;
            }
            Ok(None) => {
                filled.stopped = Some("connection ended".into());
                break;
            }
            Err(_) => {
                filled.stopped =
                    Some(format!("no answer for {} s with {} ops in flight", STALL.as_secs(), in_flight.len()));
                break;
            }
        };
        let Ok(answer) = serde_json::from_str::<Answer>(&text) else { continue };
        let answered = answer.reference.as_ref().is_some_and(|r| in_flight.remove(r));
        match answer.kind.as_str() {
            "ack" if answered => filled.acked += 1,
            "error" => {
                let code = answer.code.unwrap_or_default();
                if code == "canvas_full" && filled.stopped.is_none() {
                    filled.stopped = Some(format!("canvas_full after {} objects", filled.acked));
                }
                *filled.errors.entry(code).or_default() += 1;
            }
            _ => {} // others' presence, our own user-connected
        }
    }
    filled.elapsed = started.elapsed();
    let _ = socket.close(None).await;
    filled
}

/// Sends creates from `next` on until `WINDOW` are in flight or all `objects` are sent.
async fn top_up(
    socket: &mut Socket,
    next: &mut usize,
    objects: usize,
    object_bytes: usize,
    in_flight: &mut HashSet<String>,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    while *next < objects && in_flight.len() < WINDOW {
        socket.feed(Message::text(create_frame(*next, object_bytes))).await?;
        in_flight.insert(next.to_string());
        *next += 1;
    }
    socket.flush().await
}

/// `{"type":"object-create","ref":"<i>","data":{"id":"o-<i>","kind":"rect",...,"pad":"xx.."}}`, the data
/// padded to about `object_bytes` bytes of JSON.
fn create_frame(i: usize, object_bytes: usize) -> String {
    let (x, y) = ((i % 1000) * 12, (i / 1000) * 12);
    let object = format!(r#"{{"id":"o-{i}","kind":"rect","x":{x},"y":{y},"w":10,"h":10,"pad":""}}"#);
    let pad = "x".repeat(object_bytes.saturating_sub(object.len()));
    let object = format!(r#"{{"id":"o-{i}","kind":"rect","x":{x},"y":{y},"w":10,"h":10,"pad":"{pad}"}}"#);
    format!(r#"{{"type":"object-create","ref":"{i}","data":{object}}}"#)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_padded_to_the_requested_size() {
        let frame: serde_json::Value = serde_json::from_str(&create_frame(123, 100)).unwrap();
        assert_eq!(frame["data"].to_string().len(), 100);
        assert_eq!(frame["data"]["id"], "o-123");
        assert_eq!(frame["ref"], "123");
    }
}
