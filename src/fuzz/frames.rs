//! Frame parsing never panics, and whatever it accepts is relayed as JSON every client can parse.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::json_value;
use crate::protocol::{logged_frame, ClientFrame};

/// Frame-shaped text: an envelope with a type, data and ref drawn from valid and invalid pieces, then
/// possibly cut short or with a byte changed.
fn frame_text() -> impl Strategy<Value = String> {
    let kind = prop_oneof![
        Just(json!("object-create")),
        Just(json!("object-update")),
        Just(json!("object-delete")),
        Just(json!("ping")),
        Just(json!("cursor")),
        Just(json!("ack")),
        "[a-z][a-z0-9-]{0,40}".prop_map(Value::String),
        json_value(),
    ];
    let envelope = (kind, json_value(), prop::option::of("\\PC{0,70}")).prop_map(|(kind, data, reference)| {
        let mut frame = json!({"type": kind, "data": data});
        if let Some(reference) = reference {
            frame["ref"] = json!(reference);
        }
        frame.to_string()
    });
    (envelope, any::<prop::sample::Index>(), any::<u8>(), 0..3u8).prop_map(|(text, at, byte, mangle)| {
        let mut bytes = text.into_bytes();
        let at = at.index(bytes.len().max(1)).min(bytes.len());
        match mangle {
            0 => {}
            1 => bytes.truncate(at),
            _ => {
                if at < bytes.len() {
                    bytes[at] = byte;
                }
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

proptest! {
    #[test]
    fn fuzz_parse_never_panics_on_any_text(text in "\\PC{0,200}") {
        let _ = ClientFrame::parse(&text);
    }

    #[test]
    fn fuzz_accepted_frames_relay_as_parseable_json(text in frame_text()) {
        if let Ok(ClientFrame::Logged(message)) = ClientFrame::parse(&text) {
            let relayed = logged_frame(message.kind.as_str(), 7, "c1", "u1", &message.data, 1);
            let frame: Value = serde_json::from_str(&relayed).expect("a relayed frame is JSON");
            let sent: Value = serde_json::from_str(message.data.get()).expect("accepted data is JSON");
            prop_assert_eq!(&frame["data"], &sent);
            prop_assert_eq!(frame["type"].as_str(), Some(message.kind.as_str()));
        }
    }

    #[test]
    fn fuzz_object_ops_are_accepted_exactly_with_a_string_id(id in "\\PC{0,140}", data in json_value()) {
        let mut object = match data { Value::Object(map) => map, _ => Default::default() };
        object.insert("id".into(), json!(id));
        let text = json!({"type": "object-update", "data": object}).to_string();
        let accepted = ClientFrame::parse(&text).is_ok();
        prop_assert_eq!(accepted, (1..=128).contains(&id.chars().count()), "{}", text);
    }
}
