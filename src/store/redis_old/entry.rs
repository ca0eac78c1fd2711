//! Reading Redis replies: stream entries of a canvas's log (as the publish script wrote them) and the few
//! shapes the scripts return. Only this relay writes these keys; an entry that does not parse is skipped
//! with an error in the log rather than taking the reader down.

use redis::Value;
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::hub::{AckTo, Entry};
use crate::protocol::{logged_frame, null_value, reset_frame};

/// The text of a bulk or simple string.
pub(super) fn text(value: &Value) -> Option<&str> {
    match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

/// An integer, sent as one or as its text.
pub(super) fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        other => text(other)?.parse().ok(),
    }
}

pub(super) fn array(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(items) | Value::Set(items) => Some(items),
        Value::Nil => Some(&[]),
        _ => None,
    }
}

/// A flat `[field, value, field, value, ...]` reply as string pairs.
pub(super) fn pairs(value: &Value) -> Option<Vec<(&str, &str)>> {
    let items = array(value)?;
    items.chunks_exact(2).map(|pair| Some((text(&pair[0])?, text(&pair[1])?))).collect()
}

/// Reads `[a, b, ...]` of exactly N items.
pub(super) fn items<const N: usize>(value: &Value) -> Option<&[Value; N]> {
    array(value)?.try_into().ok()
}

/// A non-negative integer.
pub(super) fn uint(value: &Value) -> Option<u64> {
    int(value).map(|n| n.max(0) as u64)
}

/// A string, owned.
pub(super) fn string(value: &Value) -> Option<String> {
    text(value).map(str::to_owned)
}

/// The value of `name` among a stream entry's fields.
pub(super) fn field<'a>(fields: &[(&'a str, &'a str)], name: &str) -> Option<&'a str> {
    fields.iter().find(|(f, _)| *f == name).map(|(_, v)| *v)
}

/// The stream id of (generation, seq); see `entry_id` in `common.lua`.
pub fn stream_id(generation: u64, seq: u64) -> String {
    format!("{}-{seq}", generation + 1)
}

/// One entry of a canvas's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub generation: u64,
    pub seq: u64,
    pub ts: i64,
    pub kind: String,
    pub from: String,
    pub data: String,
    /// The instance that published it, and the sending connection and ref on that instance (for the ack).
    pub instance: String,
    pub conn: String,
    pub reference: String,
}

impl LogEntry {
    /// Parses `[id, [field, value, ...]]`.
    pub fn parse(value: &Value) -> Option<LogEntry> {
        let [id, fields] = array(value)? else { return None };
        let (time_part, _) = text(id)?.split_once('-')?;
        let generation = time_part.parse::<u64>().ok()?.checked_sub(1)?;
        let mut entry = LogEntry {
            generation,
            seq: 0,
            ts: 0,
            kind: String::new(),
            from: String::new(),
            data: String::new(),
            instance: String::new(),
            conn: String::new(),
            reference: String::new(),
        };
        for (field, value) in pairs(fields)? {
            match field {
                "ts" => entry.ts = value.parse().ok()?,
                "s" => entry.seq = value.parse().ok()?,
                "t" => entry.kind = value.to_owned(),
                "f" => entry.from = value.to_owned(),
                "d" => entry.data = value.to_owned(),
                "i" => entry.instance = value.to_owned(),
                "c" => entry.conn = value.to_owned(),
                "r" => entry.reference = value.to_owned(),
                _ => {}
            }
        }
        Some(entry)
    }

    /// Parses a list of entries, skipping (and reporting) any that do not parse.
    pub fn parse_all(value: &Value) -> Vec<LogEntry> {
        LogEntry::parse_each(array(value).unwrap_or_default())
    }

    /// [`LogEntry::parse_all`] of the entries themselves.
    pub fn parse_each(entries: &[Value]) -> Vec<LogEntry> {
        entries
            .iter()
            .filter_map(|value| {
                let entry = LogEntry::parse(value);
                if entry.is_none() {
                    tracing::error!(?value, "a stream entry this relay did not write; skipped");
                }
                entry
            })
            .collect()
    }

    /// The frame other connections receive: the message, or a generation's `reset` for its marker (seq 0).
    pub fn frame(&self, canvas: &str, store_epoch: &str) -> Message {
        if self.seq == 0 {
            return Message::text(reset_frame(canvas, &format!("{store_epoch}-{}", self.generation)));
        }
        let data = RawValue::from_string(self.data.clone()).unwrap_or_else(|error| {
            tracing::error!(canvas, seq = self.seq, %error, "stored data is not JSON; relaying null");
            null_value()
        });
        Message::text(logged_frame(&self.kind, self.seq, canvas, &self.from, &data, self.ts))
    }

    /// The room entry: its `id` is the seq, since a room compares ids only within its generation (Redis's
    /// stream ids already order generations, and generations come from a counter that only grows).
    pub fn entry(&self, canvas: &str, store_epoch: &str) -> Entry {
        Entry {
            seq: self.seq,
            generation: self.generation,
            id: self.seq as i64,
            frame: self.frame(canvas, store_epoch),
        }
    }

    /// Who gets the ack instead of the message, if a connection of `instance` sent it.
    pub fn ack_on(&self, instance: &str) -> Option<AckTo> {
        if self.instance != instance {
            return None;
        }
        let conn = Uuid::parse_str(&self.conn).ok()?;
        Some(AckTo { conn, reference: optional(&self.reference).map(str::to_owned) })
    }
}

/// How an optional string travels to the scripts: '' for none, '=' and the value for some.
pub fn encode_optional(value: Option<&str>) -> String {
    value.map_or_else(String::new, |value| format!("={value}"))
}

/// The inverse of [`encode_optional`].
pub fn optional(encoded: &str) -> Option<&str> {
    encoded.strip_prefix('=')
}

/// A bulk string reply, as Redis sends text: for the tests of reply parsing.
#[cfg(test)]
pub(super) fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_parses_back_to_its_frame_and_ack() {
        let conn = Uuid::new_v4().to_string();
        let fields =
            ["ts", "1700", "s", "42", "t", "stroke", "f", "ann", "d", "{\"x\":1}", "i", "me", "c", &conn, "r", "=c-1"];
        let value = Value::Array(vec![bulk("3-42"), Value::Array(fields.iter().map(|f| bulk(f)).collect())]);
        let entry = LogEntry::parse(&value).unwrap();
        assert_eq!((entry.generation, entry.seq, entry.ts), (2, 42, 1700));
        let frame: serde_json::Value = serde_json::from_str(entry.frame("c1", "e").to_text().unwrap()).unwrap();
        assert_eq!(
            frame,
            serde_json::json!({"type":"stroke","seq":42,"canvas":"c1","from":"ann","data":{"x":1},"ts":1700})
        );
        assert_eq!(entry.ack_on("me").unwrap().reference.as_deref(), Some("c-1"));
        assert!(entry.ack_on("another instance").is_none());
        assert_eq!(entry.entry("c1", "e").id, 42);
    }

    #[test]
    fn a_reset_marker_is_the_reset_frame_of_its_generation() {
        let fields = ["ts", "1", "s", "0", "t", "reset", "f", "server", "d", "null", "i", "x", "c", "", "r", ""];
        let value = Value::Array(vec![bulk("8-0"), Value::Array(fields.iter().map(|f| bulk(f)).collect())]);
        let frame = LogEntry::parse(&value).unwrap().frame("c1", "store");
        let frame: serde_json::Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
        assert_eq!(frame["type"], "reset");
        assert_eq!(frame["epoch"], "store-7");
    }

    #[test]
    fn stream_ids_match_the_scripts() {
        assert_eq!(stream_id(0, 5), "1-5");
        assert_eq!(stream_id(9_000_000_000, 5), "9000000001-5", "generations from the counter can be big");
        assert_eq!(optional(&encode_optional(Some(""))), Some(""));
        assert_eq!(optional(&encode_optional(None)), None);
    }
}
