//! Property-based fuzzing (proptest) of what a hostile client controls: frame parsing, the canonical form of
//! its data, and the canvas-state fold. Each property runs `PROPTEST_CASES` cases (256 by default, as in the
//! suite); a longer run by hand:
//!
//! ```text
//! PROPTEST_CASES=100000 cargo test --release --lib fuzz
//! ```
//!
//! proptest shrinks a failure to a minimal input and records its seed under `proptest-regressions/`, which
//! is committed: every input that once failed runs first in every later run.

mod canonical;
mod fold;
mod frames;

use proptest::prelude::*;
use serde_json::Value;

/// Any JSON value, nested a few levels, with the awkward parts: unicode and escapes in strings, extreme
/// and negative numbers, empty containers, duplicate-looking keys.
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z\"\\\\]{0,4}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
