//! Cursors for other instances: the latest cursor frame of each user on each canvas, coalesced between
//! batches. Local clients get every cursor at once (through the hub); other instances get what is here every
//! `--cursor-batch`, one batch per canvas, so a client sending 1,000 cursors a second costs at most one row
//! per canvas per batch interval.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::protocol::{CanvasId, UserId};

/// Coalesced cursors waiting for the next batch.
#[derive(Default)]
pub struct CursorBuffer {
    /// canvas → user → latest cursor frame (JSON text). std Mutex: inserts and one swap, nothing blocking.
    latest: Mutex<HashMap<CanvasId, HashMap<UserId, String>>>,
}

/// One canvas's batch: its cursor frames as a JSON array text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorBatch {
    pub canvas: CanvasId,
    pub frames: String,
}

impl CursorBuffer {
    /// Keeps `frame` as `user`'s latest cursor on `canvas`, replacing any earlier one not yet sent.
    pub fn record(&self, canvas: &CanvasId, user: &UserId, frame: String) {
        let mut latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        latest.entry(canvas.clone()).or_default().insert(user.clone(), frame);
    }

    /// Takes everything recorded since the last call, one batch per canvas.
    pub fn take(&self) -> Vec<CursorBatch> {
        let latest = std::mem::take(&mut *self.latest.lock().unwrap_or_else(|p| p.into_inner()));
        latest
            .into_iter()
            .map(|(canvas, users)| {
                let frames = format!("[{}]", users.into_values().collect::<Vec<_>>().join(","));
                CursorBatch { canvas, frames }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_latest_cursor_per_user_and_canvas_is_batched() {
        let buffer = CursorBuffer::default();
        let (c1, c2) = (CanvasId::parse("c1").unwrap(), CanvasId::parse("c2").unwrap());
        let (ann, bob) = (UserId::parse("ann").unwrap(), UserId::parse("bob").unwrap());
        for x in 0..1000 {
            buffer.record(&c1, &ann, format!(r#"{{"x":{x}}}"#));
        }
        buffer.record(&c1, &bob, r#"{"x":"b"}"#.into());
        buffer.record(&c2, &ann, r#"{"x":"c2"}"#.into());
        let mut batches = buffer.take();
        batches.sort_by(|a, b| a.canvas.cmp(&b.canvas));
        assert_eq!(batches.len(), 2, "one batch per canvas");
        let frames: Vec<serde_json::Value> = serde_json::from_str(&batches[0].frames).unwrap();
        assert_eq!(frames.len(), 2, "one frame per user");
        assert!(frames.contains(&serde_json::json!({"x": 999})), "the latest of ann's 1,000");
        assert_eq!(batches[1].frames, r#"[{"x":"c2"}]"#);
        assert!(buffer.take().is_empty(), "taken once");
    }
}
