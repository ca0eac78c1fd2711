//! Cursors for other instances: the latest cursor frame of each connection on each canvas, coalesced between
//! batches. Local clients get each cursor at once (through the hub, paced by `--max-cursor-rate`); other
//! instances get what is here every `--cursor-batch`, one batch per canvas, so a flood of cursors costs at
//! most one row per canvas per batch interval. A batch is a JSON object from the sending connection's id to
//! its frame: the receiving instance coalesces per sender again, in each reader's queue. Ephemeral events
//! ride in the same batch, in send order, under the key `events` (`[[connection, frame], ...]`): never
//! coalesced, at most [`MAX_EVENTS_PER_BATCH`] per canvas (past it an event is dropped: at most once).
//! Presence states (v1.1) ride under `presence` (`{"<connection>": frame}`), the latest per connection, and
//! the batch also carries them as data for the store to keep ([`CursorBatch::states`]): what a joiner on
//! another instance reads as `welcome.peers`. A connection that is gone is a state of `null`.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::value::RawValue;

use crate::protocol::{to_json, CanvasId, ConnId};

/// Most events of one canvas one batch carries.
pub const MAX_EVENTS_PER_BATCH: usize = 1024;

/// Coalesced cursors and events waiting for the next batch.
#[derive(Default)]
pub struct CursorBuffer {
    /// What the next batches carry. std Mutex: inserts and one swap, nothing blocking.
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    /// canvas → sending connection → latest cursor frame (JSON text).
    latest: HashMap<CanvasId, HashMap<ConnId, String>>,
    /// canvas → events (sending connection, frame), in the order they were sent.
    events: HashMap<CanvasId, Vec<(ConnId, String)>>,
    /// canvas → connection → its latest presence (frame, data).
    presence: HashMap<CanvasId, HashMap<ConnId, (String, String)>>,
}

/// One canvas's batch: `{"<connection>": frame, ...}` as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorBatch {
    pub canvas: CanvasId,
    pub frames: String,
    /// The presence states the batch carries (connection, data as JSON text; `null` for one gone), for the
    /// store to keep where joiners read them.
    pub states: Vec<(ConnId, String)>,
}

impl CursorBuffer {
    /// Keeps `frame` as connection `from`'s latest cursor on `canvas`, replacing any earlier one not yet sent.
    pub fn record(&self, canvas: &CanvasId, from: ConnId, frame: String) {
        self.pending().latest.entry(canvas.clone()).or_default().insert(from, frame);
    }

    /// Adds an ephemeral event of connection `from` on `canvas` to the next batch; returns false if the batch
    /// is full and the event is dropped.
    pub fn record_event(&self, canvas: &CanvasId, from: ConnId, frame: String) -> bool {
        let mut pending = self.pending();
        let events = pending.events.entry(canvas.clone()).or_default();
        let room = events.len() < MAX_EVENTS_PER_BATCH;
        if room {
            events.push((from, frame));
        }
        room
    }

    /// Keeps `frame` as connection `from`'s latest presence state (`data`) on `canvas`, replacing any earlier
    /// one not yet sent.
    pub fn record_presence(&self, canvas: &CanvasId, from: ConnId, frame: String, data: String) {
        self.pending().presence.entry(canvas.clone()).or_default().insert(from, (frame, data));
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes everything recorded since the last call, one batch per canvas.
    pub fn take(&self) -> Vec<CursorBatch> {
        let Pending { mut latest, mut events, mut presence } = std::mem::take(&mut *self.pending());
        let canvases: std::collections::BTreeSet<CanvasId> =
            latest.keys().chain(events.keys()).chain(presence.keys()).cloned().collect();
        canvases
            .into_iter()
            .map(|canvas| {
                let mut entries: Vec<String> = latest
                    .remove(&canvas)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(from, frame)| format!("{}:{frame}", to_json(&from.to_string())))
                    .collect();
                if let Some(events) = events.remove(&canvas) {
                    let events: Vec<String> = events
                        .iter()
                        .map(|(from, frame)| format!("[{},{frame}]", to_json(&from.to_string())))
                        .collect();
                    entries.push(format!(r#""events":[{}]"#, events.join(",")));
                }
                let mut states = Vec::new();
                if let Some(latest) = presence.remove(&canvas) {
                    let frames: Vec<String> = latest
                        .iter()
                        .map(|(from, (frame, _))| format!("{}:{frame}", to_json(&from.to_string())))
                        .collect();
                    entries.push(format!(r#""presence":{{{}}}"#, frames.join(",")));
                    states = latest.into_iter().map(|(from, (_, data))| (from, data)).collect();
                }
                CursorBatch { canvas, frames: format!("{{{}}}", entries.join(",")), states }
            })
            .collect()
    }
}

/// A batch another instance wrote: cursors and presence states (one per sending connection) and events (in
/// send order).
#[derive(Default)]
pub(crate) struct ParsedBatch {
    pub cursors: Vec<(ConnId, Box<RawValue>)>,
    pub events: Vec<(ConnId, Box<RawValue>)>,
    pub presence: Vec<(ConnId, Box<RawValue>)>,
}

/// The frames of a batch, each with its sending connection; nothing for a batch that does not parse, and
/// no event for an `events` entry that does not (best effort: a newer version may write another form).
pub(crate) fn parse_batch(frames: &str) -> ParsedBatch {
    let Ok(entries) = serde_json::from_str::<HashMap<String, Box<RawValue>>>(frames) else {
        return ParsedBatch::default();
    };
    let mut batch = ParsedBatch::default();
    for (key, value) in entries {
        if key == "events" {
            let events = serde_json::from_str::<Vec<(String, Box<RawValue>)>>(value.get()).unwrap_or_default();
            batch.events = events.into_iter().filter_map(|(from, frame)| Some((from.parse().ok()?, frame))).collect();
        } else if key == "presence" {
            let states = serde_json::from_str::<HashMap<String, Box<RawValue>>>(value.get()).unwrap_or_default();
            batch.presence = states.into_iter().filter_map(|(from, frame)| Some((from.parse().ok()?, frame))).collect();
        } else if let Ok(from) = key.parse() {
            batch.cursors.push((from, value));
        }
    }
    batch
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
        let frames = parse_batch(&batches[0].frames).cursors;
        assert_eq!(frames.len(), 2, "one frame per connection, even of one user");
        let first: Vec<&str> = frames.iter().filter(|(from, _)| *from == tab1).map(|(_, f)| f.get()).collect();
        assert_eq!(first, [r#"{"x":999}"#], "the latest of tab1's 1,000");
        assert_eq!(parse_batch(&batches[1].frames).cursors.len(), 1);
        assert!(buffer.take().is_empty(), "taken once");
        let other = parse_batch("[1,2]");
        assert!(other.cursors.is_empty() && other.events.is_empty(), "a batch of another form is skipped");
    }

    #[test]
    fn events_ride_in_the_batch_in_send_order_and_are_never_coalesced() {
        let buffer = CursorBuffer::default();
        let canvas = CanvasId::parse("c1").unwrap();
        let (tab1, tab2) = (ConnId::new_v4(), ConnId::new_v4());
        buffer.record(&canvas, tab1, r#"{"x":1}"#.into());
        for n in 0..3 {
            assert!(buffer.record_event(&canvas, tab1, format!(r#"{{"n":{n}}}"#)));
        }
        assert!(buffer.record_event(&canvas, tab2, r#"{"n":"b"}"#.into()));
        let batches = buffer.take();
        assert_eq!(batches.len(), 1);
        let batch = parse_batch(&batches[0].frames);
        assert_eq!(batch.cursors.len(), 1);
        let events: Vec<(ConnId, &str)> = batch.events.iter().map(|(from, frame)| (*from, frame.get())).collect();
        assert_eq!(events, [(tab1, r#"{"n":0}"#), (tab1, r#"{"n":1}"#), (tab1, r#"{"n":2}"#), (tab2, r#"{"n":"b"}"#)]);
        for _ in 0..MAX_EVENTS_PER_BATCH {
            buffer.record_event(&canvas, tab1, "{}".into());
        }
        assert!(!buffer.record_event(&canvas, tab1, "{}".into()), "past the bound: dropped");
        let only_events = parse_batch(&buffer.take()[0].frames);
        assert_eq!((only_events.cursors.len(), only_events.events.len()), (0, MAX_EVENTS_PER_BATCH));
    }
}
