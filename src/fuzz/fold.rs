//! The fold (`core::fold::Objects`: what every store's commits and joins run) against a model of the
//! contract: create sets, update sets top-level fields, delete removes; update or delete of a missing id
//! is refused. For any sequence of ops both refuse the same ops and end in the same state, with the same
//! order (objects by id; fields in the order they were first set), every value's text as sent; the byte
//! count the fold keeps (checked against `--max-canvas-state`) is exactly the size of the state's JSON; and a
//! snapshot of the state reads back to the same state. Every store keeps what this fold decides, so this
//! covers them all at once (`tests/stores_agree.rs` checks the stores end to end).

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::json_value;
use crate::core::fold::objects::Objects;
use crate::protocol::ClientFrame;

#[derive(Debug, Clone)]
enum Op {
    Create(String, Vec<(String, Value)>),
    Update(String, Vec<(String, Value)>),
    Delete(String),
}

fn op() -> impl Strategy<Value = Op> {
    let id = "[abc]";
    // `id` names the object: it is given once, by `data`.
    let name = "[a-z]{1,3}".prop_filter("not the id", |name: &String| name != "id");
    let fields = move || prop::collection::vec((name.clone(), json_value()), 0..4);
    // A create's data is kept as it was sent: its names are made distinct here (an update's may repeat:
    // the last value is set, in the place of the first).
    let distinct = |mut fields: Vec<(String, Value)>| {
        let mut seen = std::collections::HashSet::new();
        fields.retain(|(name, _)| seen.insert(name.clone()));
        fields
    };
    prop_oneof![
        (id, fields()).prop_map(move |(id, f)| Op::Create(id, distinct(f))),
        (id, fields()).prop_map(|(id, f)| Op::Update(id, f)),
        id.prop_map(Op::Delete),
    ]
}

/// An op's data as a client writes it: its fields in order (a name given twice, as written: the last
/// value wins, in the place of the first), then the id.
fn data(id: &str, fields: &[(String, Value)]) -> String {
    let mut members: Vec<String> = fields.iter().map(|(name, value)| format!("{}:{value}", json!(name))).collect();
    members.push(format!("\"id\":{}", json!(id)));
    format!("{{{}}}", members.join(","))
}

/// An object in the model: its fields in the order first set.
type Object = Vec<(String, Value)>;

fn set(object: &mut Object, name: &str, value: &Value) {
    match object.iter_mut().find(|(n, _)| n == name) {
        Some((_, v)) => *v = value.clone(),
        None => object.push((name.to_owned(), value.clone())),
    }
}

/// The model: Ok(()) when applied, Err(()) when refused.
fn apply_model(model: &mut BTreeMap<String, Object>, op: &Op) -> Result<(), ()> {
    match op {
        Op::Create(id, fields) => {
            let mut object = Object::new();
            for (name, value) in fields {
                set(&mut object, name, value);
            }
            set(&mut object, "id", &json!(id));
            model.insert(id.clone(), object);
        }
        Op::Update(id, fields) => {
            let object = model.get_mut(id).ok_or(())?;
            for (name, value) in fields {
                set(object, name, value);
            }
            set(object, "id", &json!(id));
        }
        Op::Delete(id) => drop(model.remove(id).ok_or(())?),
    }
    Ok(())
}

/// The real thing: the frame parsed as a client's, then folded.
fn apply_fold(objects: &mut Objects, op: &Op) -> Result<(), ()> {
    let (kind, text) = match op {
        Op::Create(id, f) => ("object-create", data(id, f)),
        Op::Update(id, f) => ("object-update", data(id, f)),
        Op::Delete(id) => ("object-delete", data(id, &[])),
    };
    let frame = format!(r#"{{"type":"{kind}","data":{text}}}"#);
    let Ok(ClientFrame::Logged(message)) = ClientFrame::parse(&frame) else {
        panic!("a valid op was refused: {frame}")
    };
    objects.apply(&message.object.expect("an object op"), message.data.get(), usize::MAX).map_err(drop)
}

/// The model's state as text, in its order: what the fold must write byte for byte.
fn model_json(model: &BTreeMap<String, Object>) -> String {
    let objects: Vec<String> = model
        .iter()
        .map(|(id, object)| {
            let fields: Vec<String> = object.iter().map(|(name, value)| format!("{}:{value}", json!(name))).collect();
            format!("{}:{{{}}}", json!(id), fields.join(","))
        })
        .collect();
    format!("{{{}}}", objects.join(","))
}

proptest! {
    #[test]
    fn fuzz_the_fold_matches_the_model(ops in prop::collection::vec(op(), 1..40)) {
        let mut objects = Objects::default();
        let mut model = BTreeMap::new();
        for op in &ops {
            prop_assert_eq!(apply_fold(&mut objects, op), apply_model(&mut model, op), "{:?}", op);
        }
        let json = objects.to_json();
        prop_assert_eq!(std::str::from_utf8(&json).unwrap(), model_json(&model), "the same text, in the same order");
        prop_assert_eq!((objects.bytes() + 1).max(2), json.len() as u64, "the kept byte count is the JSON's size");
        let read = Objects::from_json(std::str::from_utf8(&json).unwrap()).unwrap();
        prop_assert_eq!(read, objects, "a snapshot reads back to the same state");
    }
}
