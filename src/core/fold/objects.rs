//! A canvas's objects at one seq, and what object ops do to them: the one place these rules are written,
//! for every store. `object-create` sets `objects[id] = data` (replacing any object of that id),
//! `object-update` sets `data`'s top-level fields on the object, `object-delete` removes it; an update or a
//! delete of an id that does not exist is refused, and so is any op that would take the state's JSON past
//! `--max-canvas-state`. A refused op changes nothing.
//!
//! Order, the same on every store: objects in id order (byte order of the id); an object's fields in the
//! order they were first set (a create's as its data lists them, an update's new fields after the others).
//! Every value keeps the exact JSON text it was sent as, so a number is stored and relayed digit for digit.
//!
//! The map is persistent (`imbl::OrdMap`): a clone is O(1), so a snapshot of a 100,000-object canvas is
//! taken on the commit path without copying it, and serialized elsewhere.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use imbl::ordmap::DiffItem;
use imbl::OrdMap;
use serde_json::value::RawValue;

use crate::object_ops::{self, Field, JsonObject, ObjectOp, Refusal};

/// A canvas's objects: id → the object's JSON text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Objects {
    map: OrdMap<Arc<str>, Arc<str>>,
    /// The bytes every object takes in the state's JSON (see [`JsonObject::member_bytes`]): the JSON is this
    /// plus its opening brace. Kept so that the limit is checked without serializing.
    bytes: u64,
}

impl Objects {
    /// How many objects there are.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The bytes the objects take in the state's JSON, less its opening brace.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Object `id`'s JSON text.
    #[cfg(test)]
    pub fn get(&self, id: &str) -> Option<&str> {
        self.map.get(id).map(|text| &**text)
    }

    /// Applies one object op with its message's `data`, or refuses it and changes nothing. `limit` is
    /// `--max-canvas-state`: an op that would take the state's JSON past it is refused (one that shrinks
    /// it never is, so a canvas over a lowered limit can still be cleaned up).
    pub fn apply(&mut self, op: &ObjectOp, data: &str, limit: usize) -> Result<(), Refusal> {
        let id = op.id();
        let before = self.map.get(id).map(|text| member_bytes(id, text.len()));
        let text: Option<Arc<str>> = match (op, self.map.get(id)) {
            (ObjectOp::Create { .. }, _) => Some(Arc::from(data)),
            (ObjectOp::Update { fields, .. }, Some(stored)) => Some(Arc::from(merge(stored, fields, data, id)?)),
            (ObjectOp::Delete { .. }, Some(_)) => None,
            (ObjectOp::Update { .. } | ObjectOp::Delete { .. }, None) => {
                return Err(Refusal::Missing { id: id.to_owned() })
            }
        };
        let after = text.as_ref().map_or(0, |text| member_bytes(id, text.len()));
        let bytes = self.bytes - before.unwrap_or(0) + after;
        if after > before.unwrap_or(0) && bytes + 1 > limit as u64 {
            return Err(Refusal::CanvasFull { size: Some(bytes + 1), limit });
        }
        self.bytes = bytes;
        match text {
            Some(text) => drop(self.map.insert(Arc::from(id), text)),
            None => drop(self.map.remove(id)),
        }
        Ok(())
    }

    /// The objects as one JSON object, `{"id":object,...}` in id order: what a welcome, the API and a
    /// snapshot carry.
    pub fn to_json(&self) -> Bytes {
        let mut json = JsonObject::with_capacity(self.bytes as usize);
        for (id, text) in &self.map {
            json.push(id, text.as_bytes());
        }
        json.finish()
    }

    /// The object ops that turn these objects into `target`, in id order: an `object-create` (replacing)
    /// with the object's text for each object of `target` that differs or is missing here, an
    /// `object-delete` for each object here that `target` lacks. What a restore logs. Shared structure is
    /// skipped (`OrdMap::diff`): a restore of a recent state costs what changed since, not the canvas.
    pub fn ops_to(&self, target: &Objects) -> Vec<(ObjectOp, Arc<str>)> {
        self.map
            .diff(&target.map)
            .map(|item| match item {
                DiffItem::Add(id, text) | DiffItem::Update { new: (id, text), .. } => {
                    (ObjectOp::Create { id: id.to_string() }, text.clone())
                }
                DiffItem::Remove(id, _) => {
                    let data = serde_json::json!({ "id": &**id }).to_string();
                    (ObjectOp::Delete { id: id.to_string() }, Arc::from(data))
                }
            })
            .collect()
    }

    /// The objects a snapshot's JSON holds (as [`Objects::to_json`] wrote it). Each object's text is kept
    /// as it is; only the top level is read.
    pub fn from_json(json: &str) -> Result<Objects, serde_json::Error> {
        let members: Vec<(String, &RawValue)> = serde_json::from_str::<Members>(json)?.0;
        let mut objects = Objects::default();
        for (id, text) in members {
            objects.bytes += member_bytes(&id, text.get().len());
            objects.map.insert(Arc::from(id), Arc::from(text.get()));
        }
        Ok(objects)
    }
}

/// The bytes one object takes in the state's JSON (its quoted id, a colon, its text and the comma or
/// closing brace after it).
fn member_bytes(id: &str, text_len: usize) -> u64 {
    JsonObject::member_bytes(id, text_len) as u64
}

/// The members of a JSON object in the order written, values unparsed.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Members<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = Members<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object of objects")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Members<'a>, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some((id, text)) = map.next_entry::<String, &'de RawValue>()? {
                    members.push((id, text));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// `object-update`: the stored object with the patch's fields (read from `data`) set. Fields keep the
/// place they were first set at; new ones follow, in the patch's order. A field set to `null` stays, as
/// `null`: only `object-delete` removes. Values are copied as text, never re-encoded.
fn merge(stored: &str, patch: &[Field], data: &str, id: &str) -> Result<String, Refusal> {
    let unmergeable = |error: serde_json::Error| Refusal::Unmergeable { id: id.to_owned(), reason: error.to_string() };
    let stored_fields = object_ops::fields(stored).map_err(unmergeable)?;
    let mut fields: Vec<(&str, &str)> =
        stored_fields.iter().map(|field| (field.name(stored), field.value(stored))).collect();
    let mut at: HashMap<&str, usize> = fields.iter().enumerate().map(|(i, (name, _))| (*name, i)).collect();
    for field in patch {
        let (name, value) = (field.name(data), field.value(data));
        match at.get(name) {
            Some(&i) => fields[i].1 = value,
            None => {
                at.insert(name, fields.len());
                fields.push((name, value));
            }
        }
    }
    let mut json = JsonObject::with_capacity(stored.len() + data.len());
    for (name, value) in fields {
        json.push(name, value.as_bytes());
    }
    Ok(json.finish_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MsgType;

    const LIMIT: usize = 1 << 20;

    /// The op a message of type `kind` with `data` carries, as the protocol reads it.
    fn op(kind: &str, data: &str) -> ObjectOp {
        let kind = MsgType::parse(kind).unwrap();
        let id = serde_json::from_str::<serde_json::Value>(data).unwrap()["id"].as_str().unwrap().to_owned();
        ObjectOp::new(&kind, id, object_ops::fields(data).unwrap()).unwrap()
    }

    fn apply(objects: &mut Objects, kind: &str, data: &str) -> Result<(), Refusal> {
        objects.apply(&op(kind, data), data, LIMIT)
    }

    #[test]
    fn fields_keep_the_order_they_were_first_set_in_and_every_value_its_text() {
        let mut objects = Objects::default();
        apply(&mut objects, "object-create", r#"{"id":"a","z":1.50,"b":{"k":[1,2]}}"#).unwrap();
        apply(&mut objects, "object-update", r#"{"id":"a","new":1e2,"z":null}"#).unwrap();
        apply(&mut objects, "object-update", r#"{"b":2,"id":"a","a":"x"}"#).unwrap();
        assert_eq!(objects.get("a"), Some(r#"{"id":"a","z":null,"b":2,"new":1e2,"a":"x"}"#));
    }

    #[test]
    fn objects_are_in_id_order_and_a_create_replaces_in_place() {
        let mut objects = Objects::default();
        for id in ["b", "a", "c"] {
            apply(&mut objects, "object-create", &format!(r#"{{"id":"{id}"}}"#)).unwrap();
        }
        apply(&mut objects, "object-create", r#"{"id":"b","x":1}"#).unwrap();
        assert_eq!(&objects.to_json()[..], br#"{"a":{"id":"a"},"b":{"id":"b","x":1},"c":{"id":"c"}}"#);
        apply(&mut objects, "object-delete", r#"{"id":"a"}"#).unwrap();
        assert_eq!(objects.len(), 2);
    }

    #[test]
    fn a_missing_object_refuses_updates_and_deletes_and_nothing_changes() {
        let mut objects = Objects::default();
        apply(&mut objects, "object-create", r#"{"id":"a"}"#).unwrap();
        let before = objects.clone();
        for (kind, data) in [("object-update", r#"{"id":"b","x":1}"#), ("object-delete", r#"{"id":"b"}"#)] {
            assert_eq!(apply(&mut objects, kind, data), Err(Refusal::Missing { id: "b".into() }));
        }
        assert_eq!(objects, before);
    }

    #[test]
    fn the_size_is_the_json_length_and_growth_past_the_limit_is_refused() {
        let mut objects = Objects::default();
        for data in [r#"{"id":"a","x":1}"#, r#"{"id":"b\"q","tags":[]}"#] {
            apply(&mut objects, "object-create", data).unwrap();
        }
        apply(&mut objects, "object-update", r#"{"id":"a","long":"xxxxxxxx"}"#).unwrap();
        assert_eq!(objects.bytes() + 1, objects.to_json().len() as u64);
        let limit = objects.to_json().len() + 5;
        let grow = op("object-update", r#"{"id":"a","more":"123456"}"#);
        let refused = objects.apply(&grow, r#"{"id":"a","more":"123456"}"#, limit);
        assert!(matches!(refused, Err(Refusal::CanvasFull { size: Some(_), .. })), "{refused:?}");
        let shrink = op("object-update", r#"{"id":"a","long":0}"#);
        objects.apply(&shrink, r#"{"id":"a","long":0}"#, 10).expect("shrinking is never refused");
        let delete = op("object-delete", r#"{"id":"a"}"#);
        objects.apply(&delete, r#"{"id":"a"}"#, 10).unwrap();
        assert_eq!(objects.bytes() + 1, objects.to_json().len() as u64);
    }

    #[test]
    fn a_snapshot_reads_back_to_the_same_objects() {
        let mut objects = Objects::default();
        for data in [r#"{"id":"a","x":4.061360003766153e-187}"#, r#"{"id":"é\n","y":[{"a":1}]}"#] {
            apply(&mut objects, "object-create", data).unwrap();
        }
        let json = objects.to_json();
        let read = Objects::from_json(std::str::from_utf8(&json).unwrap()).unwrap();
        assert_eq!(read, objects);
        assert_eq!(read.to_json(), json);
        assert_eq!(Objects::from_json("{}").unwrap(), Objects::default());
        assert!(Objects::from_json("[1]").is_err());
    }
}
