//! What one event-stream reader of the `stream` scenario saw: every `message` event of this run's canvases
//! judged against the one before it on its canvas (each seq once, in order, none skipped), its lag from the
//! commit `ts` and from the send time, and when it had reached every canvas's acked head. It neither reads
//! the socket (`sse`) nor decides the run (`stream`).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::client::{histogram, unix_us};
use crate::ledger::{Canvases, KIND};
use crate::report::percentiles;
use crate::sse::Event;

/// The fields of a `message` event the judge reads, borrowed from its data.
#[derive(Deserialize)]
struct StreamMessage<'a> {
    #[serde(borrow)]
    canvas: Cow<'a, str>,
    seq: u64,
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    ts: u64,
    data: Option<Stamp>,
}

/// The publishers' send time; presence data (an object without `t`) fits too.
#[derive(Deserialize)]
struct Stamp {
    t: Option<u64>,
}

/// Just the canvas, for an event whose data is not shaped like ours (another client's canvas).
#[derive(Deserialize)]
struct CanvasOnly<'a> {
    #[serde(borrow)]
    canvas: Cow<'a, str>,
}

/// One reader's judgement so far.
pub struct Judge {
    canvases: Arc<Canvases>,
    /// The highest seq seen per canvas.
    last: Vec<u64>,
    /// Message events of this run's canvases (every type), and of those, the publishers' own.
    pub events: u64,
    pub ours: u64,
    /// Events of any kind, any canvas: what the reader had to read.
    pub all_events: u64,
    /// Message events at or below a seq already seen on their canvas: a repeat or a reorder.
    pub repeated: u64,
    /// Seqs jumped over.
    pub skipped: u64,
    /// `gap` and `reset` events, and message events that could not be read.
    pub gaps: u64,
    pub resets: u64,
    pub unreadable: u64,
    /// Commit `ts` (ms clock) and send time (µs clock) to receipt, live runs only.
    commit_us: Histogram<u64>,
    send_us: Histogram<u64>,
    /// Whether to record lags (not for a backlog: its messages are old by design).
    timed: bool,
    /// The first and the latest event of this run, and when the heads were all reached.
    pub first_at: Option<Instant>,
    pub last_at: Option<Instant>,
    pub caught_up: Option<Instant>,
    /// The `id` of the latest event, to resume from.
    pub last_id: Option<String>,
    /// Times the stream ended and was reopened with `Last-Event-ID`, and why the reader stopped early.
    pub reopened: u64,
    pub failed: Option<String>,
    /// The acked head per canvas, once known, and how many canvases are still below theirs.
    heads: Option<Vec<u64>>,
    behind: usize,
}

impl Judge {
    pub fn new(canvases: Arc<Canvases>, timed: bool) -> Judge {
        let count = canvases.count();
        Judge {
            canvases,
            last: vec![0; count],
            events: 0,
            ours: 0,
            all_events: 0,
            repeated: 0,
            skipped: 0,
            gaps: 0,
            resets: 0,
            unreadable: 0,
            commit_us: histogram(),
            send_us: histogram(),
            timed,
            first_at: None,
            last_at: None,
            caught_up: None,
            last_id: None,
            reopened: 0,
            failed: None,
            heads: None,
            behind: 0,
        }
    }

    /// From now on the reader is done once every canvas reached `heads`.
    pub fn set_heads(&mut self, heads: Vec<u64>) {
        self.behind = heads.iter().zip(&self.last).filter(|(head, last)| last < head).count();
        self.heads = Some(heads);
        if self.behind == 0 {
            self.caught_up.get_or_insert_with(Instant::now);
        }
    }

    /// Whether every canvas reached its head.
    pub fn done(&self) -> bool {
        self.heads.is_some() && self.behind == 0
    }

    /// Judges one event.
    pub fn event(&mut self, event: &Event) {
        let now = Instant::now();
        self.all_events += 1;
        if event.id.is_some() {
            self.last_id.clone_from(&event.id);
        }
        match event.kind.as_str() {
            "message" => self.message(&event.data, now),
            "gap" => self.gaps += 1,
            "reset" => {
                let canvas = serde_json::from_str::<CanvasOnly>(&event.data).ok();
                if let Some(index) = canvas.and_then(|c| self.canvases.index(&c.canvas)) {
                    self.resets += 1;
                    self.last[index] = 0;
                }
            }
            _ => {}
        }
    }

    fn message(&mut self, data: &str, now: Instant) {
        let Ok(message) = serde_json::from_str::<StreamMessage>(data) else {
            let ours = serde_json::from_str::<CanvasOnly>(data).ok().and_then(|c| self.canvases.index(&c.canvas));
            self.unreadable += u64::from(ours.is_some());
            return;
        };
        let Some(canvas) = self.canvases.index(&message.canvas) else { return };
        self.events += 1;
        self.first_at.get_or_insert(now);
        self.last_at = Some(now);
        let last = self.last[canvas];
        if message.seq <= last {
            self.repeated += 1;
            return;
        }
        self.skipped += message.seq - last - 1;
        self.last[canvas] = message.seq;
        if let Some(head) = self.heads.as_ref().map(|heads| heads[canvas]) {
            if last < head && message.seq >= head {
                self.behind -= 1;
                if self.behind == 0 {
                    self.caught_up = Some(now);
                }
            }
        }
        if message.kind == KIND {
            self.ours += 1;
            if self.timed {
                let now_us = unix_us();
                let _ = self.commit_us.record(now_us.saturating_sub(message.ts.saturating_mul(1000)).max(1));
                if let Some(sent) = message.data.and_then(|d| d.t) {
                    let _ = self.send_us.record(now_us.saturating_sub(sent).max(1));
                }
            }
        }
    }

    /// Seqs below the heads never received.
    pub fn missing(&self) -> u64 {
        let heads = self.heads.iter().flatten();
        heads.zip(&self.last).map(|(head, last)| head.saturating_sub(*last)).sum()
    }

    /// Everything that breaks "each seq once, in order, per canvas".
    pub fn violations(&self) -> u64 {
        self.repeated + self.skipped + self.missing()
    }

    /// The reader's figures; `from` is when its stream was opened (for a backlog) or the run began.
    pub fn to_json(&self, from: Instant) -> Value {
        let span = match (self.first_at, self.last_at) {
            (Some(first), Some(last)) => last.saturating_duration_since(first).as_secs_f64(),
            _ => 0.0,
        };
        let since = |at: Option<Instant>| at.map(|at| at.saturating_duration_since(from).as_secs_f64());
        json!({
            "events": self.events, "ours": self.ours, "all_events": self.all_events,
            "events_per_second": self.events as f64 / span.max(1e-9),
            "first_event_s": since(self.first_at), "caught_up_s": since(self.caught_up),
            "violations": self.violations(), "repeated": self.repeated, "skipped": self.skipped,
            "missing": self.missing(), "gaps": self.gaps, "resets": self.resets, "unreadable": self.unreadable,
            "reopened": self.reopened, "failed": self.failed,
            "commit_to_event_ms": percentiles(&self.commit_us), "send_to_event_ms": percentiles(&self.send_us),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(canvases: &Canvases, canvas: usize, seq: u64) -> Event {
        let data = json!({"canvas": canvases.name(canvas), "epoch": "E", "seq": seq, "type": KIND,
                          "from": "p0", "data": {"t": unix_us()}, "ts": unix_us() / 1000});
        Event { id: Some(seq.to_string()), kind: "message".into(), data: data.to_string() }
    }

    #[test]
    fn repeats_skips_and_the_missing_tail_are_violations() {
        let canvases = Arc::new(Canvases::new("t", "st", 2));
        let mut judge = Judge::new(canvases.clone(), true);
        for seq in [1, 2, 2, 4] {
            judge.event(&message(&canvases, 0, seq));
        }
        judge.set_heads(vec![5, 0]);
        assert!(!judge.done());
        assert_eq!((judge.repeated, judge.skipped, judge.missing()), (1, 1, 1));
        judge.event(&message(&canvases, 0, 5));
        assert!(judge.done());
        assert_eq!(judge.violations(), 2);
        assert_eq!(judge.last_id.as_deref(), Some("5"));
    }
}
