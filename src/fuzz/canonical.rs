//! Canonical data (contract v1.2): whatever whitespace a client puts between the tokens of its `data`, the
//! relay keeps the compact text of the same value, and canonical text stays as it is.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::json_value;
use crate::protocol::ClientFrame;

/// `value` as JSON text with whitespace from `gaps` (taken in turn) around every token.
fn spaced(value: &Value, gaps: &[String]) -> String {
    let mut out = String::new();
    write_spaced(value, gaps, &mut 0, &mut out);
    out
}

fn write_spaced(value: &Value, gaps: &[String], next: &mut usize, out: &mut String) {
    gap(gaps, next, out);
    match value {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_spaced(item, gaps, next, out);
            }
            out.push(']');
        }
        Value::Object(members) => {
            out.push('{');
            for (i, (name, member)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_spaced(&json!(name), gaps, next, out);
                out.push(':');
                write_spaced(member, gaps, next, out);
            }
            out.push('}');
        }
        leaf => out.push_str(&leaf.to_string()),
    }
    gap(gaps, next, out);
}

/// The next whitespace of `gaps`.
fn gap(gaps: &[String], next: &mut usize, out: &mut String) {
    out.push_str(&gaps[*next % gaps.len()]);
    *next += 1;
}

/// The data of a logged message sent with `data` as its text, as the relay keeps it.
fn kept(data: &str) -> String {
    let frame = format!(r#"{{"type":"note","data":{data}}}"#);
    match ClientFrame::parse(&frame) {
        Ok(ClientFrame::Logged(message)) => message.data.get().to_owned(),
        other => panic!("{frame:?} was not taken as a logged message: {other:?}"),
    }
}

proptest! {
    #[test]
    fn fuzz_data_is_kept_canonical_as_the_same_value_and_canonical_data_as_it_is(
        value in json_value(),
        gaps in prop::collection::vec("[ \t\r\n]{0,3}", 1..8),
    ) {
        let sent = spaced(&value, &gaps);
        let canonical = kept(&sent);
        prop_assert_eq!(&canonical, &value.to_string(), "sent as {:?}", sent);
        prop_assert_eq!(serde_json::from_str::<Value>(&canonical).unwrap(), value, "the same value");
        prop_assert_eq!(kept(&canonical), canonical.clone(), "canonical data is kept as it is");
        prop_assert!(!canonical.contains(['\r', '\n']), "no raw line break: {:?}", canonical);
    }
}
