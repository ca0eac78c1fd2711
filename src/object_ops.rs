//! Canvas state: what object ops mean, independent of where the state is stored. `object-create` sets
//! `objects[id] = data`, `object-update` merges `data`'s top-level fields into it, `object-delete` removes it.
//! An update or delete of an id that does not exist is refused (not logged, no seq).
//!
//! The bus applies these inside the transaction that logs the op, so the state is always the fold of the log
//! up to the canvas's last seq.

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::protocol::MsgType;

/// One object op, with the object id taken from its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectOp {
    Create { id: String },
    Update { id: String },
    Delete { id: String },
}

impl ObjectOp {
    /// The op of a message of type `kind` on object `id`; `None` when `kind` is not an object op. The
    /// protocol reads `id` from `data` once, when it checks the frame (`LoggedMessage::object`).
    pub fn new(kind: &MsgType, id: String) -> Option<ObjectOp> {
        match kind.as_str() {
            "object-create" => Some(ObjectOp::Create { id }),
            "object-update" => Some(ObjectOp::Update { id }),
            "object-delete" => Some(ObjectOp::Delete { id }),
            _ => None,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            ObjectOp::Create { id } | ObjectOp::Update { id } | ObjectOp::Delete { id } => id,
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
/// null: only `object-delete` removes). Returns the new JSON text.
pub fn merge(stored: &str, patch: &RawValue) -> Result<String, serde_json::Error> {
    let mut object: Map<String, Value> = serde_json::from_str(stored)?;
    let patch: Map<String, Value> = serde_json::from_str(patch.get())?;
    object.extend(patch);
    serde_json::to_string(&object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn ops_are_recognised_with_their_ids() {
        let create = MsgType::parse("object-create").unwrap();
        assert_eq!(ObjectOp::new(&create, "o1".into()), Some(ObjectOp::Create { id: "o1".into() }));
        let delete = MsgType::parse("object-delete").unwrap();
        assert_eq!(ObjectOp::new(&delete, "o2".into()).unwrap().id(), "o2");
        assert_eq!(ObjectOp::new(&MsgType::parse("chat").unwrap(), "o1".into()), None);
    }

    #[test]
    fn update_keeps_every_number_exactly() {
        // Found by fuzz::fold: without serde_json's float_roundtrip the merged state said ...153e-187 where
        // the relayed message said ...154e-187 (a late joiner's state differed from the live clients').
        let patch = raw(r#"{"id":"a","x":4.061360003766153e-187,"big":123456789012345678,"neg":-0.1}"#);
        let merged: Value = serde_json::from_str(&merge(r#"{"id":"a"}"#, &patch).unwrap()).unwrap();
        let sent: Value = serde_json::from_str(patch.get()).unwrap();
        assert_eq!(merged, sent);
        assert_eq!(merged["x"].as_f64(), Some(4.061360003766153e-187));
    }

    #[test]
    fn update_merges_top_level_fields_only() {
        let merged = merge(
            r#"{"id":"o1","x":1,"style":{"fill":"red","w":2}}"#,
            &raw(r#"{"id":"o1","x":5,"style":{"fill":"blue"},"y":null}"#),
        )
        .unwrap();
        let merged: Value = serde_json::from_str(&merged).unwrap();
        assert_eq!(merged, serde_json::json!({"id":"o1","x":5,"style":{"fill":"blue"},"y":null}));
    }
}
