//! The canvas-state fold in SQLite (`objects::fold`: the `plan` and `apply` the writer runs) against a model of the contract
//! (a map: create sets, update merges top-level fields, delete removes; update or delete of a missing id
//! is refused): for any sequence of ops, both refuse the same ops and end in the same state, and the byte
//! count the writer keeps (checked against `--max-canvas-state`) is exactly the size of the state's JSON.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::json_value;
use crate::bus::sqlite::{objects, schema};
use crate::protocol::{CanvasId, ClientFrame};
use crate::rusqlite::Connection;

#[derive(Debug, Clone)]
enum Op {
    Create(String, Map<String, Value>),
    Update(String, Map<String, Value>),
    Delete(String),
}

fn op() -> impl Strategy<Value = Op> {
    let id = "[abc]";
    let fields = || prop::collection::btree_map("[a-z]{1,3}", json_value(), 0..4).prop_map(|m| m.into_iter().collect());
    prop_oneof![
        (id, fields()).prop_map(|(id, f)| Op::Create(id, f)),
        (id, fields()).prop_map(|(id, f)| Op::Update(id, f)),
        id.prop_map(Op::Delete),
    ]
}

/// The model: Ok(()) when applied, Err(()) when refused.
fn apply_model(model: &mut BTreeMap<String, Map<String, Value>>, op: &Op) -> Result<(), ()> {
    match op {
        Op::Create(id, fields) => {
            let mut object = fields.clone();
            object.insert("id".into(), json!(id));
            model.insert(id.clone(), object);
        }
        Op::Update(id, fields) => {
            let object = model.get_mut(id).ok_or(())?;
            object.extend(fields.clone());
            object.insert("id".into(), json!(id));
        }
        Op::Delete(id) => drop(model.remove(id).ok_or(())?),
    }
    Ok(())
}

/// The real thing: the frame parsed as a client's, then folded by the writer's code. Ok(how the state's
/// bytes moved) when applied.
fn apply_sqlite(conn: &Connection, canvas: &CanvasId, op: &Op) -> Result<i64, ()> {
    let (kind, id, mut data) = match op {
        Op::Create(id, f) => ("object-create", id, f.clone()),
        Op::Update(id, f) => ("object-update", id, f.clone()),
        Op::Delete(id) => ("object-delete", id, Map::new()),
    };
    data.insert("id".into(), json!(id));
    let text = json!({"type": kind, "data": data}).to_string();
    let Ok(ClientFrame::Logged(message)) = ClientFrame::parse(&text) else { panic!("a valid op was refused: {text}") };
    let parsed = message.object.expect("an object op");
    let data: &RawValue = &message.data;
    objects::fold(conn, canvas, &parsed, data).expect("no SQLite error").map_err(drop)
}

proptest! {
    #[test]
    fn fuzz_sqlite_fold_matches_the_model(ops in prop::collection::vec(op(), 1..40)) {
        let mut conn = Connection::open_in_memory().unwrap();
        schema::migrate(&mut conn).unwrap();
        let canvas = CanvasId::parse("fuzz").unwrap();
        let mut model = BTreeMap::new();
        let mut bytes = 0;
        for op in &ops {
            let applied = apply_sqlite(&conn, &canvas, op);
            prop_assert_eq!(applied.map(drop), apply_model(&mut model, op), "{:?}", op);
            bytes += applied.unwrap_or(0);
        }
        let json = objects::objects_json(&conn, &canvas, 0).unwrap();
        prop_assert_eq!((bytes + 1).max(2) as usize, json.len(), "the kept byte count is the JSON's size");
        let stored: Value = serde_json::from_slice(&json).unwrap();
        let expected: Map<String, Value> = model.into_iter().map(|(id, object)| (id, Value::Object(object))).collect();
        prop_assert_eq!(stored, Value::Object(expected));
    }
}
