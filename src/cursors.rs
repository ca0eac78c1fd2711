//! Cursors for other instances: the latest cursor frame of each connection on each canvas, coalesced between
//! batches. Local clients get each cursor at once (through the hub, paced by `--max-cursor-rate`); other
//! instances get what is here every `--cursor-batch`, one batch per canvas, so a flood of cursors costs at
//! most one row per canvas per batch interval. A batch is a JSON object from the sending connection's id to
//! its frame: the receiving instance coalesces per sender again, in each reader's queue.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio_tungstenite::tungstenite::Message;

use crate::hub::{ConnId, Room};
use crate::metrics::Metrics;
use crate::protocol::{to_json, CanvasId};

/// Coalesced cursors waiting for the next batch.
#[derive(Default)]
pub struct CursorBuffer {
    /// canvas → sending connection → latest cursor frame (JSON text). std Mutex: inserts and one swap,
    /// nothing blocking.
    latest: Mutex<HashMap<CanvasId, HashMap<ConnId, String>>>,
}

/// One canvas's batch: `{"<connection>": frame, ...}` as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorBatch {
    pub canvas: CanvasId,
    pub frames: String,
}

impl CursorBuffer {
    /// Keeps `frame` as connection `from`'s latest cursor on `canvas`, replacing any earlier one not yet sent.
    pub fn record(&self, canvas: &CanvasId, from: ConnId, frame: String) {
        let mut latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        latest.entry(canvas.clone()).or_default().insert(from, frame);
    }

    /// Takes everything recorded since the last call, one batch per canvas.
    pub fn take(&self) -> Vec<CursorBatch> {
        let latest = std::mem::take(&mut *self.latest.lock().unwrap_or_else(|p| p.into_inner()));
        latest
            .into_iter()
            .map(|(canvas, senders)| {
                let entries: Vec<String> = senders
                    .into_iter()
                    .map(|(from, frame)| format!("{}:{frame}", to_json(&from.to_string())))
                    .collect();
                CursorBatch { canvas, frames: format!("{{{}}}", entries.join(",")) }
            })
            .collect()
    }
}

/// Delivers a batch another instance wrote to this process's room of its canvas, whichever store carried
/// it: each sender's cursor goes to every other subscriber's ephemeral lane, where it replaces any earlier
/// one of that sender still waiting. Lossy by design: the next batch carries a newer cursor.
pub fn relay_batch(room: &Room, frames: &str, metrics: &Metrics) {
    let state = room.lock();
    let missed: u64 = parse_batch(frames)
        .into_iter()
        .map(|(from, frame)| state.broadcast_ephemeral(from, &Message::text(frame.get()), metrics))
        .sum();
    drop(state);
    metrics.ephemeral_missed(&room.canvas, missed);
}

/// The frames of a batch another instance wrote, each with its sending connection; nothing for a batch that
/// does not parse (cursors are best effort: a newer version may write another form).
fn parse_batch(frames: &str) -> Vec<(ConnId, Box<serde_json::value::RawValue>)> {
    let Ok(senders) = serde_json::from_str::<HashMap<String, Box<serde_json::value::RawValue>>>(frames) else {
        return Vec::new();
    };
    senders.into_iter().filter_map(|(from, frame)| Some((from.parse().ok()?, frame))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_latest_cursor_per_connection_and_canvas_is_batched() {
        let buffer = CursorBuffer::default();
        let (c1, c2) = (CanvasId::parse("c1").unwrap(), CanvasId::parse("c2").unwrap());
        let (tab1, tab2) = (ConnId::new_v4(), ConnId::new_v4());
        for x in 0..1000 {
            buffer.record(&c1, tab1, format!(r#"{{"x":{x}}}"#));
        }
        buffer.record(&c1, tab2, r#"{"x":"b"}"#.into());
        buffer.record(&c2, tab1, r#"{"x":"c2"}"#.into());
        let mut batches = buffer.take();
        batches.sort_by(|a, b| a.canvas.cmp(&b.canvas));
        assert_eq!(batches.len(), 2, "one batch per canvas");
        let frames = parse_batch(&batches[0].frames);
        assert_eq!(frames.len(), 2, "one frame per connection, even of one user");
        let first: Vec<&str> = frames.iter().filter(|(from, _)| *from == tab1).map(|(_, f)| f.get()).collect();
        assert_eq!(first, [r#"{"x":999}"#], "the latest of tab1's 1,000");
        assert_eq!(parse_batch(&batches[1].frames).len(), 1);
        assert!(buffer.take().is_empty(), "taken once");
        assert!(parse_batch("[1,2]").is_empty(), "a batch of another form is skipped");
    }
}
