//! What a client's frames parse into, and the error each malformed one gets (with its `ref` when it can be
//! read).

use super::*;

fn parse_err(text: &str) -> FrameError {
    ClientFrame::parse(text).expect_err("should be refused")
}

#[test]
fn logged_message_keeps_data_text_and_ref() {
    let frame = ClientFrame::parse(r#"{"type":"object-update","data":{"id":"o1","x":5},"ref":"c-17"}"#).unwrap();
    let ClientFrame::Logged(msg) = frame else { panic!("expected a logged message") };
    assert_eq!(msg.kind.as_str(), "object-update");
    assert_eq!(msg.data.get(), r#"{"id":"o1","x":5}"#);
    assert_eq!(msg.reference.as_deref(), Some("c-17"));
}

#[test]
fn an_object_op_carries_the_id_read_when_it_was_checked_and_other_messages_none() {
    let ClientFrame::Logged(msg) = ClientFrame::parse(r#"{"type":"object-delete","data":{"id":"o2"}}"#).unwrap() else {
        panic!("expected a logged message")
    };
    assert_eq!(msg.object, Some(ObjectOp::Delete { id: "o2".into() }), "a delete keeps no fields");
    let ClientFrame::Logged(msg) = ClientFrame::parse(r#"{"type":"note","data":{"id":"o2"}}"#).unwrap() else {
        panic!("expected a logged message")
    };
    assert_eq!(msg.object, None);
    let api = LoggedMessage::from_api_body(br#"{"type":"object-create","data":{"id":"o3","x":1}}"#).unwrap();
    assert_eq!(api.object, Some(ObjectOp::Create { id: "o3".into() }));
    let api = LoggedMessage::from_api_body(br#"{"type":"object-update","data":{"id":"o3","x":1}}"#).unwrap();
    let op = api.object.as_ref().unwrap();
    let fields: Vec<(&str, &str)> =
        op.fields().iter().map(|f| (f.name(api.data.get()), f.value(api.data.get()))).collect();
    assert_eq!((op.id(), fields), ("o3", vec![("id", r#""o3""#), ("x", "1")]), "with its fields, read once");
}

#[test]
fn custom_types_are_logged_and_missing_data_is_null() {
    let ClientFrame::Logged(msg) = ClientFrame::parse(r#"{"type":"chat-1"}"#).unwrap() else {
        panic!("expected a logged message")
    };
    assert_eq!(msg.kind.as_str(), "chat-1");
    assert_eq!(msg.data.get(), "null");
}

#[test]
fn a_presence_state_is_an_object() {
    let ClientFrame::Presence { data } = ClientFrame::parse(r#"{"type":"presence","data":{"c":1}}"#).unwrap() else {
        panic!("expected a presence state")
    };
    assert_eq!(data.get(), r#"{"c":1}"#);
    for data in ["[1]", "null", "\"x\""] {
        let text = format!(r#"{{"type":"presence","data":{data}}}"#);
        assert_eq!(parse_err(&text).code, ErrorCode::InvalidFrame, "{data}");
    }
}

#[test]
fn ping_and_cursor_are_recognised() {
    assert!(matches!(ClientFrame::parse(r#"{"type":"ping"}"#), Ok(ClientFrame::Ping)));
    let ClientFrame::Cursor { data } = ClientFrame::parse(r#"{"type":"cursor","data":{"x":1}}"#).unwrap() else {
        panic!("expected a cursor")
    };
    assert_eq!(data.get(), r#"{"x":1}"#);
}

#[test]
fn syntax_errors_are_invalid_json_and_shape_errors_invalid_frame() {
    assert_eq!(parse_err("{nope").code, ErrorCode::InvalidJson);
    assert_eq!(parse_err("").code, ErrorCode::InvalidJson);
    assert_eq!(parse_err("[1,2]").code, ErrorCode::InvalidFrame);
    assert_eq!(parse_err(r#"{"type":5}"#).code, ErrorCode::InvalidFrame);
    assert_eq!(parse_err(r#"{"data":1}"#).code, ErrorCode::InvalidFrame);
    let deep = "[".repeat(10_000);
    assert_eq!(parse_err(&format!(r#"{{"type":"x","data":{deep}}}"#)).code, ErrorCode::InvalidJson);
}

#[test]
fn reserved_and_malformed_types_are_unknown_type_with_ref() {
    for kind in RESERVED_TYPES.iter().filter(|k| !["cursor", "presence"].contains(*k)) {
        let err = parse_err(&format!(r#"{{"type":"{kind}","ref":"r1"}}"#));
        assert_eq!(err.code, ErrorCode::UnknownType, "{kind}");
        assert_eq!(err.reference.as_deref(), Some("r1"));
    }
    for kind in ["Upper", "1abc", "a_b", "", &"a".repeat(33)] {
        assert_eq!(parse_err(&format!(r#"{{"type":"{kind}"}}"#)).code, ErrorCode::UnknownType, "{kind}");
    }
    assert!(MsgType::parse(&"a".repeat(32)).is_ok());
}

#[test]
fn object_ops_need_a_string_id() {
    let bad = [r#"{"x":1}"#, r#"{"id":5}"#, r#"["o1"]"#, "null", r#"{"id":""}"#, r#"{"id":"a","id":"b"}"#];
    for (kind, data) in
        ["object-create", "object-update", "object-delete"].into_iter().flat_map(|k| bad.map(|d| (k, d)))
    {
        let err = parse_err(&format!(r#"{{"type":"{kind}","data":{data},"ref":"r"}}"#));
        assert_eq!(err.code, ErrorCode::InvalidFrame, "{kind} {data}");
        assert_eq!(err.reference.as_deref(), Some("r"));
    }
    assert!(ClientFrame::parse(r#"{"type":"object-delete","data":{"id":"o1"}}"#).is_ok());
}

#[test]
fn data_other_parsers_cannot_read_is_invalid_json_with_ref() {
    let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    assert!(ClientFrame::parse(&format!(r#"{{"type":"x","data":{}}}"#, nested(64))).is_ok());
    let deep = r#"{"a":{"b":{"c":"#.to_owned() + &nested(62) + "}}}";
    let err = parse_err(&format!(r#"{{"type":"x","data":{deep},"ref":"r9"}}"#));
    assert_eq!((err.code, err.reference.as_deref()), (ErrorCode::InvalidJson, Some("r9")));
    assert!(err.message.contains("deeper than 64"), "{}", err.message);
    for number in ["1e400", "-1e400", "1e309"] {
        let err = parse_err(&format!(r#"{{"type":"cursor","data":{{"x":{number}}}}}"#));
        assert_eq!(err.code, ErrorCode::InvalidJson, "{number}");
    }
    for number in ["123456789012345678901234567890", "1e308", "-0.0", "5e-324"] {
        assert!(ClientFrame::parse(&format!(r#"{{"type":"x","data":[{number}]}}"#)).is_ok(), "{number}");
    }
    let body = format!(r#"{{"type":"x","data":{}}}"#, nested(65));
    assert_eq!(LoggedMessage::from_api_body(body.as_bytes()).unwrap_err().code, ErrorCode::InvalidJson);
}

#[test]
fn long_refs_are_refused() {
    let long = "r".repeat(65);
    assert_eq!(parse_err(&format!(r#"{{"type":"x","ref":"{long}"}}"#)).code, ErrorCode::InvalidFrame);
}
