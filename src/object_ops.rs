//! Canvas state: what object ops mean, independent of where the state is stored. `object-create` sets
//! `objects[id] = data`, `object-update` merges `data`'s top-level fields into it, `object-delete` removes it.
//! An update or delete of an id that does not exist is refused (not logged, no seq).
//!
//! The bus applies these inside the transaction that logs the op, so the state is always the fold of the log
//! up to the canvas's last seq.

use std::collections::BTreeMap;

use serde_json::value::RawValue;

use crate::protocol::MsgType;

/// One object op, as the protocol read it from the message's `data`, once, when it checked the frame
/// (`LoggedMessage::object`): the object's id, and for a create or an update its top-level fields. The
/// stores take both from here and never parse the op's data again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectOp {
    Create { id: String, fields: Vec<Field> },
    Update { id: String, fields: Vec<Field> },
    Delete { id: String },
}

/// One top-level field of an object op's data: its name, and its value as the exact JSON text it arrived
/// as (so a number is stored and relayed digit for digit).
#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub value: Box<RawValue>,
}

impl PartialEq for Field {
    fn eq(&self, other: &Field) -> bool {
        self.name == other.name && self.value.get() == other.value.get()
    }
}

impl Eq for Field {}

impl ObjectOp {
    /// The op of a message of type `kind` on object `id` whose data has `fields` (a later duplicate name
    /// already dropped, as JSON parsers do); `None` when `kind` is not an object op. A delete keeps no
    /// fields.
    pub fn new(kind: &MsgType, id: String, fields: Vec<Field>) -> Option<ObjectOp> {
        match kind.as_str() {
            "object-create" => Some(ObjectOp::Create { id, fields }),
            "object-update" => Some(ObjectOp::Update { id, fields }),
            "object-delete" => Some(ObjectOp::Delete { id }),
            _ => None,
        }
    }

    /// The fields it sets: a create's whole object, an update's patch, nothing for a delete.
    pub fn fields(&self) -> &[Field] {
        match self {
            ObjectOp::Create { fields, .. } | ObjectOp::Update { fields, .. } => fields,
            ObjectOp::Delete { .. } => &[],
        }
    }

    pub fn id(&self) -> &str {
        match self {
            ObjectOp::Create { id, .. } | ObjectOp::Update { id, .. } | ObjectOp::Delete { id } => id,
        }
    }
}

/// Why the canvas state refused an object op: nothing was logged, and the sender gets this as its error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// An update or delete of an object that does not exist.
    #[error("object {id:?} does not exist on this canvas")]
    Missing { id: String },
    /// An update whose patch cannot be merged into the stored object.
    #[error("object {id:?} could not be updated: {reason}")]
    Unmergeable { id: String, reason: String },
    /// The op would take the canvas state past `--max-canvas-state` (`size`: what it would be, where the
    /// store says).
    #[error("the canvas state would be {}, over its limit of {limit} bytes (--max-canvas-state)",
        .size.map_or_else(|| "too big".to_owned(), |size| format!("{size} bytes")))]
    CanvasFull { size: Option<u64>, limit: usize },
}

/// `object-update`: the stored object with `patch`'s top-level fields set (a field set to null stays, as
/// null: only `object-delete` removes). Returns the new JSON text, fields in name order, every value the
/// exact text it was stored or sent as: only the stored object is parsed, and only into its fields.
pub fn merge(stored: &str, patch: &[Field]) -> Result<String, serde_json::Error> {
    let mut object: BTreeMap<String, &RawValue> = serde_json::from_str(stored)?;
    object.extend(patch.iter().map(|field| (field.name.clone(), &*field.value)));
    serde_json::to_string(&object)
}

/// A canvas state as the JSON a welcome and the API carry, `{"id":object,...}`, assembled from each object's
/// stored text as it is: the one place its form is written, for every store. Ids are written by serde;
/// objects are copied, never parsed (a `RawValue` per object would parse a 100,000-object state on every
/// read of it).
pub struct StateJson {
    json: Vec<u8>,
}

impl StateJson {
    /// An empty state, its buffer sized for `bytes` of objects (the state's size, where the store keeps it).
    pub fn with_capacity(bytes: usize) -> StateJson {
        let mut json = Vec::with_capacity(bytes + 2);
        json.push(b'{');
        StateJson { json }
    }

    /// Adds object `id`, whose stored JSON text is `object`.
    pub fn push(&mut self, id: &str, object: &[u8]) {
        if self.json.len() > 1 {
            self.json.push(b',');
        }
        serde_json::to_writer(&mut self.json, id).expect("a string always serializes");
        self.json.push(b':');
        self.json.extend_from_slice(object);
    }

    pub fn finish(mut self) -> bytes::Bytes {
        self.json.push(b'}');
        bytes::Bytes::from(self.json)
    }

    /// The bytes one object takes in the state's JSON: its quoted id, a colon, its text, and the comma or
    /// closing brace after it. The whole JSON is the sum of these plus the opening brace; the stores keep
    /// that sum to check `--max-canvas-state` (`publish.lua` counts the same way).
    pub fn entry_bytes(id: &str, text_len: usize) -> i64 {
        (crate::protocol::to_json(&id).len() + text_len + 2) as i64
    }
}

/// The top-level fields of a JSON object's text, each value as the exact text it has there; a later
/// duplicate name wins, as JSON parsers do. One pass over the text.
pub fn fields(object: &str) -> Result<Vec<Field>, serde_json::Error> {
    let fields: BTreeMap<String, Box<RawValue>> = serde_json::from_str(object)?;
    Ok(fields.into_iter().map(|(name, value)| Field { name, value }).collect())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn patch(json: &str) -> Vec<Field> {
        fields(json).unwrap()
    }

    #[test]
    fn ops_are_recognised_with_their_ids_and_a_delete_keeps_no_fields() {
        let create = MsgType::parse("object-create").unwrap();
        let op = ObjectOp::new(&create, "o1".into(), patch(r#"{"id":"o1","x":1}"#)).unwrap();
        assert_eq!((op.id(), op.fields().len()), ("o1", 2));
        let delete = MsgType::parse("object-delete").unwrap();
        let op = ObjectOp::new(&delete, "o2".into(), patch(r#"{"id":"o2","x":1}"#)).unwrap();
        assert_eq!(op, ObjectOp::Delete { id: "o2".into() });
        assert!(op.fields().is_empty());
        assert_eq!(ObjectOp::new(&MsgType::parse("chat").unwrap(), "o1".into(), Vec::new()), None);
    }

    #[test]
    fn fields_keep_their_text_and_the_last_duplicate() {
        let fields = patch(r#"{"x": 1.50, "style": {"fill": "red"}, "x": 2e0}"#);
        let texts: Vec<(&str, &str)> = fields.iter().map(|f| (f.name.as_str(), f.value.get())).collect();
        assert_eq!(texts, [("style", r#"{"fill": "red"}"#), ("x", "2e0")]);
        assert!(super::fields("[1]").is_err());
    }

    #[test]
    fn update_keeps_every_number_exactly() {
        // Found by fuzz::fold: when the merge went through serde_json's Value, without float_roundtrip the
        // merged state said ...153e-187 where the relayed message said ...154e-187. Now values are never
        // re-encoded: the merged text holds the patch's digits.
        let sent = r#"{"id":"a","x":4.061360003766153e-187,"big":123456789012345678,"neg":-0.1}"#;
        let merged = merge(r#"{"id":"a"}"#, &patch(sent)).unwrap();
        assert!(merged.contains("4.061360003766153e-187") && merged.contains("123456789012345678"), "{merged}");
        let (merged, sent): (Value, Value) =
            (serde_json::from_str(&merged).unwrap(), serde_json::from_str(sent).unwrap());
        assert_eq!(merged, sent);
    }

    #[test]
    fn a_state_is_assembled_from_stored_texts_and_its_size_is_the_sum_of_its_entries() {
        let mut state = StateJson::with_capacity(0);
        let objects = [("b", r#"{"id":"b","x":1.0000000000000002e-187}"#), ("a\"q", r#"{"id":"a\"q","tags":[]}"#)];
        for (id, text) in objects {
            state.push(id, text.as_bytes());
        }
        let json = state.finish();
        let parsed: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(parsed["b"]["x"].as_f64(), Some(1.0000000000000002e-187), "copied, never re-encoded");
        assert_eq!(parsed["a\"q"]["tags"], serde_json::json!([]));
        let size: i64 = objects.iter().map(|(id, text)| StateJson::entry_bytes(id, text.len())).sum();
        assert_eq!(size + 1, json.len() as i64);
        assert_eq!(&StateJson::with_capacity(0).finish()[..], b"{}");
    }

    #[test]
    fn update_merges_top_level_fields_only() {
        let merged = merge(
            r#"{"id":"o1","x":1,"style":{"fill":"red","w":2}}"#,
            &patch(r#"{"id":"o1","x":5,"style":{"fill":"blue"},"y":null}"#),
        )
        .unwrap();
        let merged: Value = serde_json::from_str(&merged).unwrap();
        assert_eq!(merged, serde_json::json!({"id":"o1","x":5,"style":{"fill":"blue"},"y":null}));
        assert!(merge("[1]", &[]).is_err(), "a stored object that is not one cannot be updated");
    }
}
