//! Reading Redis replies: the few shapes the scripts return, a canvas's head, its connection rows, and the
//! entries of its log and ops streams as `common.lua` and `commit.lua` write them. Only this relay writes
//! these keys; an entry that does not parse is skipped with an error in the log rather than taking a reader
//! down.

use std::sync::Arc;

use redis::Value;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::protocol::{null_value, CanvasId, ConnId};
use crate::store::records::Conn;
use crate::store::records::{ConnRow, Head, LogEntry};

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

/// A non-negative integer, sent as one or as its text.
pub(super) fn uint(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
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

/// How an optional string travels to the scripts: '' for none, '=' and the value for some.
pub fn encode_optional(value: Option<&str>) -> String {
    value.map_or_else(String::new, |value| format!("={value}"))
}

/// The inverse of [`encode_optional`].
pub fn optional(encoded: &str) -> Option<&str> {
    encoded.strip_prefix('=')
}

/// A head as the scripts reply it: gen, seq, rev, version, bytes, objects, connections, users.
pub(super) fn head(value: &Value) -> Option<Head> {
    let [generation, seq, rev, version, bytes, objects, connections, users] = array(value)? else {
        return None;
    };
    Some(Head {
        generation: uint(generation)?,
        seq: uint(seq)?,
        rev: uint(rev)?,
        version: uint(version)?,
        bytes: uint(bytes)?,
        objects: uint(objects)?,
        connections: uint(connections)?,
        users: uint(users)?,
    })
}

/// A connection row (see `conn_row` in `common.lua`): instance, user, opened and the encoded name.
pub(super) fn conn_row(conn: &str, row: &str) -> Option<ConnRow> {
    let mut parts = row.splitn(4, '\n');
    let (instance, user, opened, name) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    Some(ConnRow {
        conn: conn.parse().ok()?,
        row: Conn {
            user: Arc::from(user),
            name: optional(name).map(Arc::from),
            instance: Arc::from(instance),
            opened: opened.parse().ok()?,
        },
        state: None,
    })
}

/// A canvas's connection rows (flat: conn, row) with the presence states kept for them (flat: conn, state).
pub(super) fn conn_rows(rows: &Value, states: &Value) -> Option<Vec<ConnRow>> {
    let states: std::collections::HashMap<&str, &str> = pairs(states)?.into_iter().collect();
    let rows = pairs(rows)?
        .into_iter()
        .filter_map(|(conn, row)| {
            let mut parsed = conn_row(conn, row);
            if parsed.is_none() {
                tracing::error!(conn, row, "a connection row this relay did not write; skipped");
            }
            if let (Some(parsed), Some(state)) = (parsed.as_mut(), states.get(conn)) {
                parsed.state = RawValue::from_string((*state).to_owned()).ok();
            }
            parsed
        })
        .collect();
    Some(rows)
}

/// A connection of an index (`relay:i:{instance}:conns`, `relay:u:{user}`): its canvas, then its row.
pub(super) fn indexed_conn(conn: &str, value: &str) -> Option<(CanvasId, ConnRow)> {
    let (canvas, row) = value.split_once('\n')?;
    Some((CanvasId::parse(canvas).ok()?, conn_row(conn, row)?))
}

/// One entry of a canvas's log or ops stream: `[id, [field, value, ...]]`.
pub(super) fn log_entry(canvas: &CanvasId, value: &Value) -> Option<LogEntry> {
    let [id, fields] = array(value)? else { return None };
    let (time_part, seq) = text(id)?.split_once('-')?;
    let generation = time_part.parse::<u64>().ok()?.checked_sub(1)?;
    let seq: u64 = seq.parse().ok()?;
    let fields = pairs(fields)?;
    let data = field(&fields, "d")?;
    let data = RawValue::from_string(data.to_owned()).unwrap_or_else(|error| {
        // Only this relay writes the log, after validating the JSON: relay the seq with null data rather
        // than leave a gap in every stream.
        tracing::error!(%canvas, seq, %error, "stored data is not JSON; relaying null");
        null_value()
    });
    Some(LogEntry {
        canvas: canvas.clone(),
        generation,
        seq,
        kind: field(&fields, "t")?.to_owned(),
        from: field(&fields, "f")?.to_owned(),
        data,
        ts: field(&fields, "ts")?.parse().ok()?,
        id: seq as i64,
        instance: field(&fields, "i").unwrap_or_default().to_owned(),
        conn: field(&fields, "c").and_then(|conn| Uuid::parse_str(conn).ok()),
        reference: field(&fields, "r").and_then(optional).map(str::to_owned),
        restore: field(&fields, "x") == Some("1"),
    })
}

/// A list of entries of a canvas's stream, skipping (and reporting) any that do not parse.
pub(super) fn log_entries(canvas: &CanvasId, value: &Value) -> Vec<LogEntry> {
    parse_entries(canvas, array(value).unwrap_or_default())
}

/// [`log_entries`] of the entries themselves.
pub(super) fn parse_entries(canvas: &CanvasId, entries: &[Value]) -> Vec<LogEntry> {
    entries
        .iter()
        .filter_map(|value| {
            let entry = log_entry(canvas, value);
            if entry.is_none() {
                tracing::error!(%canvas, ?value, "a stream entry this relay did not write; skipped");
            }
            entry
        })
        .collect()
}

/// Who gets the ack instead of the message, if a connection of `instance` sent it.
pub(super) fn ack_on(entry: &LogEntry, instance: &str) -> Option<crate::hub::AckTo> {
    if entry.instance != instance {
        return None;
    }
    let conn: ConnId = entry.conn?;
    Some(crate::hub::AckTo { conn, reference: entry.reference.clone() })
}

/// A bulk string reply, as Redis sends text: for the tests of reply parsing.
#[cfg(test)]
pub(super) fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_entry(id: &str, fields: &[&str]) -> Value {
        Value::Array(vec![bulk(id), Value::Array(fields.iter().map(|f| bulk(f)).collect())])
    }

    #[test]
    fn an_entry_parses_back_with_its_ack() {
        let conn = Uuid::new_v4().to_string();
        let fields =
            ["ts", "1700", "s", "42", "t", "stroke", "f", "ann", "d", "{\"x\":1}", "i", "me", "c", &conn, "r", "=c-1"];
        let canvas = CanvasId::parse("c1").unwrap();
        let entry = log_entry(&canvas, &stream_entry("3-42", &fields)).unwrap();
        assert_eq!((entry.generation, entry.seq, entry.ts, entry.id), (2, 42, 1700, 42));
        assert_eq!((entry.kind.as_str(), entry.from.as_str(), entry.data.get()), ("stroke", "ann", "{\"x\":1}"));
        assert_eq!(ack_on(&entry, "me").unwrap().reference.as_deref(), Some("c-1"));
        assert!(ack_on(&entry, "another instance").is_none());
        let op = log_entry(&canvas, &stream_entry("3-43", &["ts", "1", "s", "43", "t", "x", "f", "u", "d", "1"]));
        let op = op.expect("an ops stream entry: no instance, conn nor ref");
        assert!(op.conn.is_none() && op.reference.is_none() && op.instance.is_empty());
    }

    #[test]
    fn a_reset_marker_is_seq_zero_of_its_generation_and_bad_entries_are_skipped() {
        let canvas = CanvasId::parse("c1").unwrap();
        let fields = ["ts", "1", "s", "0", "t", "reset", "f", "server", "d", "null", "i", "x", "c", "", "r", ""];
        let entries =
            Value::Array(vec![stream_entry("8-0", &fields), stream_entry("0-1", &fields), stream_entry("x", &[])]);
        let entries = log_entries(&canvas, &entries);
        assert_eq!(entries.len(), 1, "generation -1 and an id that is none are skipped");
        assert!(entries[0].is_reset());
        assert_eq!(entries[0].generation, 7);
        assert_eq!(entries[0].conn, None);
    }

    #[test]
    fn heads_and_connection_rows_read_as_the_scripts_write_them() {
        let reply = Value::Array([3, 10, 4, 9, 120, 2, 1, 5].map(Value::Int).to_vec());
        let head = head(&reply).unwrap();
        assert_eq!((head.generation, head.seq, head.rev, head.version, head.users), (3, 10, 4, 9, 5));
        assert!(super::head(&Value::Array(vec![Value::Int(1)])).is_none());
        let conn = Uuid::new_v4().to_string();
        let rows = Value::Array(vec![bulk(&conn), bulk("i1\nann\n7\n=Ann\nSmith"), bulk("bad"), bulk("row")]);
        let states = Value::Array(vec![bulk(&conn), bulk("{\"x\":1}")]);
        let rows = conn_rows(&rows, &states).unwrap();
        assert_eq!(rows.len(), 1, "a row this relay did not write is skipped");
        let row = &rows[0];
        assert_eq!((&*row.row.user, row.row.name.as_deref(), &*row.row.instance), ("ann", Some("Ann\nSmith"), "i1"));
        assert_eq!((row.row.opened, row.state.as_ref().map(|s| s.get())), (7, Some("{\"x\":1}")));
        let (canvas, indexed) = indexed_conn(&conn, "c9\ni2\nbob\n1\n").unwrap();
        assert_eq!((canvas.as_str(), &*indexed.row.user, indexed.row.name.as_deref()), ("c9", "bob", None));
    }

    #[test]
    fn stream_ids_and_optional_strings_match_the_scripts() {
        assert_eq!(stream_id(0, 5), "1-5");
        assert_eq!(stream_id(9_000_000_000, 5), "9000000001-5", "generations from the counter can be big");
        assert_eq!(optional(&encode_optional(Some(""))), Some(""));
        assert_eq!(optional(&encode_optional(None)), None);
    }
}
