//! Object ops as a message carries them: the op and its object's id, an update's top-level fields (where
//! they are in the data's text), why an op is refused, and the JSON object a state is written as. What the
//! ops do to a canvas's objects is the fold's (`core::fold::objects`), the one place those rules are written.

use std::fmt;
use std::ops::Range;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::protocol::MsgType;

/// One object op, as the protocol read it from the message's `data`, once, when it checked the frame
/// (`LoggedMessage::object`): the object's id, and for an update where the patch's top-level fields are in
/// that data (an update means its fields; a create means its whole data, which the fold keeps as it is).
/// The fold takes both from here and never parses an update's data again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectOp {
    Create { id: String },
    Update { id: String, fields: Vec<Field> },
    Delete { id: String },
}

/// One top-level field of an object op's data: where its name and its value are in that data's text, so
/// that reading the fields allocates nothing per field (a create is the common op, and the fold never
/// looks at its fields). Read it with [`Field::name`] and [`Field::value`] against the same data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    name: Name,
    value: Range<usize>,
}

/// A field's name: where it is in the data, or decoded when its JSON string has escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Name {
    At(Range<usize>),
    Decoded(Box<str>),
}

impl Field {
    /// Its name, read from `data` (the text the field was read from).
    pub fn name<'a>(&'a self, data: &'a str) -> &'a str {
        match &self.name {
            Name::At(at) => &data[at.clone()],
            Name::Decoded(name) => name,
        }
    }

    /// Its value's exact JSON text in `data` (so a number is stored and relayed digit for digit).
    pub fn value<'a>(&self, data: &'a str) -> &'a str {
        &data[self.value.clone()]
    }
}

impl ObjectOp {
    /// The op of a message of type `kind` on object `id`, an update with the `fields` of its patch (a later
    /// duplicate name already dropped, as JSON parsers do); `None` when `kind` is not an object op. A create
    /// or a delete keeps no fields.
    pub fn new(kind: &MsgType, id: String, fields: Vec<Field>) -> Option<ObjectOp> {
        match kind.as_str() {
            "object-create" => Some(ObjectOp::Create { id }),
            "object-update" => Some(ObjectOp::Update { id, fields }),
            "object-delete" => Some(ObjectOp::Delete { id }),
            _ => None,
        }
    }

    /// The op a logged entry of type `kind` with `data` performs (`None`: not an object op), read as it was
    /// logged: none of the limits a client's frame is checked against applies (they may have changed since).
    pub fn logged(kind: &str, data: &str) -> Result<Option<ObjectOp>, serde_json::Error> {
        let Ok(kind) = MsgType::parse(kind) else { return Ok(None) };
        if !kind.is_object_op() {
            return Ok(None);
        }
        let fields = fields(data)?;
        let id = fields
            .iter()
            .find(|field| field.name(data) == "id")
            .map(|field| serde_json::from_str::<String>(field.value(data)))
            .transpose()?
            .ok_or_else(|| serde::de::Error::custom("an object op without a string id"))?;
        Ok(ObjectOp::new(&kind, id, fields))
    }

    /// The fields of an update's patch, in the data it was read from; nothing for a create or a delete.
    pub fn fields(&self) -> &[Field] {
        match self {
            ObjectOp::Update { fields, .. } => fields,
            ObjectOp::Create { .. } | ObjectOp::Delete { .. } => &[],
        }
    }

    pub fn id(&self) -> &str {
        match self {
            ObjectOp::Create { id } | ObjectOp::Update { id, .. } | ObjectOp::Delete { id } => id,
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
    /// An op whose data the fold could not read as an object (the protocol checks it is one first), or a
    /// stored state it could not read.
    #[error("object {id:?} could not be read: {reason}")]
    Unreadable { id: String, reason: String },
    /// The op would take the canvas state past `--max-canvas-state` (`size`: what it would be, when
    /// known).
    /// A restore whose target was read in another epoch of the canvas (a reset came between).
    #[error("the canvas was reset after the state to restore was read: nothing was restored")]
    EpochChanged,
    #[error("the canvas state would be {}, over its limit of {limit} bytes (--max-canvas-state)",
        .size.map_or_else(|| "too big".to_owned(), |size| format!("{size} bytes")))]
    CanvasFull { size: Option<u64>, limit: usize },
}

/// A JSON object assembled from its members' JSON texts as they are: a canvas state as a welcome and the
/// API carry it, `{"id":object,...}` (the one place its form is written, whichever the store), and an object
/// merged from its stored fields and an update's. Names are written by serde; values are copied, never
/// parsed (a `RawValue` per object would parse a 100,000-object state on every read of it).
pub struct JsonObject {
    json: Vec<u8>,
}

impl JsonObject {
    /// An empty state, its buffer sized for `bytes` of objects (the state's size, where the store keeps it).
    pub fn with_capacity(bytes: usize) -> JsonObject {
        let mut json = Vec::with_capacity(bytes + 2);
        json.push(b'{');
        JsonObject { json }
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

    /// The object, closed, as the shared bytes a welcome is written from.
    pub fn finish(self) -> bytes::Bytes {
        bytes::Bytes::from(self.close())
    }

    /// The object, closed, as text (every member was pushed as text).
    pub fn finish_string(self) -> String {
        String::from_utf8(self.close()).expect("assembled from UTF-8 texts")
    }

    fn close(mut self) -> Vec<u8> {
        self.json.push(b'}');
        self.json
    }

    /// The bytes one member takes: its quoted name, a colon, its text, and the comma or closing brace after
    /// it. A state's JSON is the sum of these plus the opening brace; the fold keeps that sum to check
    /// `--max-canvas-state`.
    pub fn member_bytes(id: &str, text_len: usize) -> i64 {
        (crate::protocol::to_json(&id).len() + text_len + 2) as i64
    }
}

/// Where the top-level fields of a JSON object's text are in it, in the order they are written, in one
/// pass and with one allocation (a name with escapes is kept decoded). A name given twice keeps the place
/// of its first and the value of its last, as JSON parsers read the value; `id`, which names the object,
/// may be given once.
pub fn fields(object: &str) -> Result<Vec<Field>, serde_json::Error> {
    let mut parser = serde_json::Deserializer::from_str(object);
    let fields = parser.deserialize_map(FieldsOf { text: object })?;
    parser.end()?;
    // The id names the object: given twice it is ambiguous (a create or delete refuses it as well).
    if fields.iter().filter(|field| field.name(object) == "id").count() > 1 {
        return Err(serde::de::Error::custom("duplicate field `id`"));
    }
    Ok(last_value_first_place(fields, object))
}

/// Drops repeated names: each name keeps the place of its first field and the value of its last.
fn last_value_first_place(mut fields: Vec<Field>, object: &str) -> Vec<Field> {
    let mut kept: Vec<Field> = Vec::with_capacity(fields.len());
    if fields.len() <= 16 {
        // A usual object: a few comparisons find a repeated name (rare).
        for field in fields.drain(..) {
            match kept.iter_mut().find(|k| k.name(object) == field.name(object)) {
                Some(first) => first.value = field.value,
                None => kept.push(field),
            }
        }
        return kept;
    }
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::with_capacity(fields.len());
    for field in fields.drain(..) {
        match at.get(field.name(object)) {
            Some(&i) => kept[i].value = field.value,
            None => {
                at.insert(field.name(object).to_owned(), kept.len());
                kept.push(field);
            }
        }
    }
    kept
}

/// Reads an object's members as spans of `text`, which the deserializer borrows from.
struct FieldsOf<'t> {
    text: &'t str,
}

impl<'t> FieldsOf<'t> {
    /// Where `part`, a slice of `text`, is in it.
    fn span(&self, part: &str) -> Range<usize> {
        let start = part.as_ptr() as usize - self.text.as_ptr() as usize;
        start..start + part.len()
    }
}

impl<'de> Visitor<'de> for FieldsOf<'de> {
    type Value = Vec<Field>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<Field>, A::Error> {
        let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(name) = map.next_key_seed(NameOf { text: self.text })? {
            let value: &'de RawValue = map.next_value()?;
            fields.push(Field { name, value: self.span(value.get()) });
        }
        Ok(fields)
    }
}

/// Reads a member's name: borrowed from the text where it has no escapes, decoded where it has.
struct NameOf<'t> {
    text: &'t str,
}

impl<'de> DeserializeSeed<'de> for NameOf<'de> {
    type Value = Name;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Name, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for NameOf<'de> {
    type Value = Name;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E>(self, name: &'de str) -> Result<Name, E> {
        Ok(Name::At(FieldsOf { text: self.text }.span(name)))
    }

    fn visit_str<E>(self, name: &str) -> Result<Name, E> {
        Ok(Name::Decoded(name.into()))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// The fields of `json` as (name, value text).
    fn texts(json: &str) -> Vec<(String, String)> {
        fields(json).unwrap().iter().map(|f| (f.name(json).to_owned(), f.value(json).to_owned())).collect()
    }

    #[test]
    fn ops_are_recognised_with_their_ids_and_only_an_update_keeps_fields() {
        let update = MsgType::parse("object-update").unwrap();
        let op = ObjectOp::new(&update, "o1".into(), fields(r#"{"id":"o1","x":1}"#).unwrap()).unwrap();
        assert_eq!((op.id(), op.fields().len()), ("o1", 2));
        let create = MsgType::parse("object-create").unwrap();
        let op = ObjectOp::new(&create, "o1".into(), fields(r#"{"id":"o1","x":1}"#).unwrap()).unwrap();
        assert_eq!(op, ObjectOp::Create { id: "o1".into() });
        let delete = MsgType::parse("object-delete").unwrap();
        let op = ObjectOp::new(&delete, "o2".into(), fields(r#"{"id":"o2","x":1}"#).unwrap()).unwrap();
        assert_eq!(op, ObjectOp::Delete { id: "o2".into() });
        assert!(op.fields().is_empty());
        assert_eq!(ObjectOp::new(&MsgType::parse("chat").unwrap(), "o1".into(), Vec::new()), None);
    }

    #[test]
    fn fields_keep_their_text_and_the_last_duplicate() {
        let mut got = texts(r#"{"x": 1.50, "style": {"fill": "red"}, "x": 2e0, "a\"b": true, "\u0079": 1, "y": 2}"#);
        got.sort();
        let want = [("a\"b", "true"), ("style", r#"{"fill": "red"}"#), ("x", "2e0"), ("y", "2")];
        assert_eq!(got, want.map(|(n, v)| (n.to_owned(), v.to_owned())), "an escaped name is decoded; y == \\u0079");
        // Past 16 fields repeats are found by sorting: the same rule.
        let big = format!(
            "{{{},\"k3\":\"last\"}}",
            (0..40).map(|i| format!("\"k{}\":{i}", i % 20)).collect::<Vec<_>>().join(",")
        );
        let got = texts(&big);
        assert_eq!(got.len(), 20);
        assert!(
            got.contains(&("k3".to_owned(), "\"last\"".to_owned()))
                && got.contains(&("k4".to_owned(), "24".to_owned()))
        );
        assert!(texts("{}").is_empty());
        for bad in ["[1]", "{\"a\":}", "{} {}", "1", r#"{"id":"a","id":"b"}"#, r#"{"id":"a","\u0069d":"b"}"#] {
            assert!(fields(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_state_is_assembled_from_stored_texts_and_its_size_is_the_sum_of_its_entries() {
        let mut state = JsonObject::with_capacity(0);
        let objects = [("b", r#"{"id":"b","x":1.0000000000000002e-187}"#), ("a\"q", r#"{"id":"a\"q","tags":[]}"#)];
        for (id, text) in objects {
            state.push(id, text.as_bytes());
        }
        let json = state.finish();
        let parsed: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(parsed["b"]["x"].as_f64(), Some(1.0000000000000002e-187), "copied, never re-encoded");
        assert_eq!(parsed["a\"q"]["tags"], serde_json::json!([]));
        let size: i64 = objects.iter().map(|(id, text)| JsonObject::member_bytes(id, text.len())).sum();
        assert_eq!(size + 1, json.len() as i64);
        assert_eq!(&JsonObject::with_capacity(0).finish()[..], b"{}");
    }
}
