//! One webhook request: which messages it carries, its body, its idempotency key and its signature. A batch
//! is a range of one canvas's seqs, decided before its first attempt and recorded (`Position::inflight`),
//! so every attempt of it, on whichever instance, has the same messages and the same key.

use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::value::RawValue;
use sha2::Sha256;

use crate::config::Webhook;
use crate::store::records::LogEntry;

/// One request for one canvas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookBatch {
    pub canvas: String,
    pub epoch: String,
    /// The last seq the batch covers: the position once it is answered 2xx (filtered messages included).
    pub through: u64,
    /// The messages it carries (those `--webhook-types` delivers).
    pub messages: Vec<LogEntry>,
    /// Seqs after `.0` up to before `.1` expired before delivery.
    pub gap: Option<(u64, u64)>,
    /// A reset batch: the canvas starts the new epoch, and carries no messages.
    pub reset: bool,
}

#[derive(Serialize)]
struct Body<'a> {
    canvas: &'a str,
    epoch: &'a str,
    messages: Vec<Message<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gap: Option<Gap>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    reset: bool,
}

#[derive(Serialize)]
struct Message<'a> {
    seq: u64,
    #[serde(rename = "type")]
    kind: &'a str,
    from: &'a str,
    data: &'a RawValue,
    ts: i64,
}

#[derive(Serialize)]
struct Gap {
    after: u64,
    next: u64,
}

impl WebhookBatch {
    /// The batch of `entries` (a canvas's next retained messages of one generation, in seq order) after
    /// `after`, through `through`: the gap if the first is not `after + 1`, the messages `webhook` delivers.
    pub fn of(
        canvas: &str,
        epoch: String,
        after: u64,
        through: u64,
        entries: Vec<LogEntry>,
        webhook: &Webhook,
    ) -> WebhookBatch {
        let next = entries.first().map_or(through + 1, |first| first.seq);
        let gap = (next > after + 1).then_some((after, next));
        let messages = entries.into_iter().filter(|m| m.seq <= through && webhook.delivers(&m.kind)).collect();
        WebhookBatch { canvas: canvas.to_owned(), epoch, through, messages, gap, reset: false }
    }

    /// The batch saying the canvas was reset: its new epoch, no messages.
    pub fn reset(canvas: &str, epoch: String) -> WebhookBatch {
        WebhookBatch { canvas: canvas.to_owned(), epoch, through: 0, messages: Vec::new(), gap: None, reset: true }
    }

    /// Whether there is anything to tell the receiver (else the position just moves on).
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.gap.is_none() && !self.reset
    }

    /// `<canvas>:<epoch>:<first>-<last>`: the seqs of its messages; for a reset `0-0`, for a gap with no
    /// message after it the seqs the gap covers.
    pub fn idempotency_key(&self) -> String {
        let (first, last) = match (self.messages.first(), self.messages.last(), self.gap) {
            (Some(first), Some(last), _) => (first.seq, last.seq),
            (_, _, Some((after, next))) => (after + 1, next - 1),
            _ => (0, 0),
        };
        format!("{}:{}:{first}-{last}", self.canvas, self.epoch)
    }

    /// The JSON body, as the contract spells it.
    pub fn body(&self) -> String {
        let messages = self
            .messages
            .iter()
            .map(|m| Message { seq: m.seq, kind: &m.kind, from: &m.from, data: &m.data, ts: m.ts })
            .collect();
        let gap = self.gap.map(|(after, next)| Gap { after, next });
        let body = Body { canvas: &self.canvas, epoch: &self.epoch, messages, gap, reset: self.reset };
        serde_json::to_string(&body).expect("a body of strings, numbers and valid JSON serializes")
    }
}

/// `sha256=<hex HMAC-SHA256 of body keyed with secret>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logged(seq: u64, kind: &str) -> LogEntry {
        LogEntry {
            canvas: crate::protocol::CanvasId::parse("c1").unwrap(),
            generation: 1,
            seq,
            kind: kind.into(),
            from: "u1".into(),
            data: RawValue::from_string(r#"{"id":"a"}"#.into()).unwrap(),
            ts: 5,
            id: seq as i64,
            instance: "i1".into(),
            conn: None,
            reference: None,
            restore: false,
        }
    }

    fn webhook(types: &[&str]) -> Webhook {
        let mut args = vec!["canvas-relay", "serve", "--webhook-url", "http://h/", "--webhook-secret", "s"];
        let types = types.join(",");
        if !types.is_empty() {
            args.extend(["--webhook-types", &types]);
        }
        let crate::config::Command::Serve(config) = crate::config::Cli::try_parse_resolved_from(args).unwrap().command;
        config.consumers.webhook().unwrap().unwrap()
    }

    #[test]
    fn a_batch_carries_the_delivered_types_and_is_keyed_by_their_seqs() {
        let entries = vec![logged(4, "object-create"), logged(5, "note"), logged(6, "object-update")];
        let batch = WebhookBatch::of("c1", "e-1".into(), 3, 6, entries, &webhook(&["object-*"]));
        assert_eq!(batch.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), [4, 6]);
        assert_eq!(batch.idempotency_key(), "c1:e-1:4-6");
        let body: serde_json::Value = serde_json::from_str(&batch.body()).unwrap();
        assert_eq!(
            body["messages"][1],
            serde_json::json!({"seq":6,"type":"object-update","from":"u1","data":{"id":"a"},"ts":5})
        );
        assert!(body.get("gap").is_none() && body.get("reset").is_none());
    }

    #[test]
    fn expired_seqs_before_the_first_are_a_gap_and_a_reset_has_no_messages() {
        let batch = WebhookBatch::of("c1", "e-1".into(), 3, 9, vec![logged(8, "x"), logged(9, "x")], &webhook(&[]));
        assert_eq!(batch.gap, Some((3, 8)));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&batch.body()).unwrap()["gap"],
            serde_json::json!({"after":3,"next":8})
        );
        let only_gap = WebhookBatch::of("c1", "e-1".into(), 3, 9, vec![], &webhook(&[]));
        assert_eq!((only_gap.gap, only_gap.idempotency_key()), (Some((3, 10)), "c1:e-1:4-9".to_owned()));
        let reset = WebhookBatch::reset("c1", "e-2".into());
        assert_eq!(reset.idempotency_key(), "c1:e-2:0-0");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&reset.body()).unwrap()["reset"], true);
        let filtered = WebhookBatch::of("c1", "e-1".into(), 3, 4, vec![logged(4, "x")], &webhook(&["y"]));
        assert!(filtered.is_empty());
    }

    #[test]
    fn the_signature_is_the_hex_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
