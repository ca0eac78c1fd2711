//! Frames a client sends: parsed into [`ClientFrame`], or refused with the [`FrameError`] the client gets.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{ErrorCode, RESERVED_TYPES};

/// Longest `ref` a client may attach, in characters.
const MAX_REF_CHARS: usize = 64;
/// Longest object id in an object op, in characters.
const MAX_OBJECT_ID_CHARS: usize = 128;

/// The type of a logged message: `[a-z][a-z0-9-]{0,31}` and not reserved for the server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MsgType(String);

impl MsgType {
    pub fn parse(s: &str) -> Result<Self, FrameError> {
        let mut bytes = s.bytes();
        let first_ok = bytes.next().is_some_and(|b| b.is_ascii_lowercase());
        let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !(first_ok && rest_ok && s.len() <= 32) {
            return Err(FrameError::new(
                ErrorCode::UnknownType,
                format!("type {s:?} is not a known type and does not match [a-z][a-z0-9-]{{0,31}}"),
            ));
        }
        if RESERVED_TYPES.contains(&s) {
            return Err(FrameError::new(ErrorCode::UnknownType, format!("type {s:?} is reserved for the server")));
        }
        Ok(MsgType(s.to_owned()))
    }
    /// A type the server itself logs (`user-connected`, `user-disconnected`, `reset`); clients may not send it.
    pub fn reserved(kind: &'static str) -> Self {
        debug_assert!(RESERVED_TYPES.contains(&kind), "{kind} is not a reserved type");
        MsgType(kind.to_owned())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn is_object_op(&self) -> bool {
        matches!(self.0.as_str(), "object-create" | "object-update" | "object-delete")
    }
}

/// A frame a client sent, parsed and checked.
#[derive(Debug)]
pub enum ClientFrame {
    Ping,
    Cursor { data: Box<RawValue> },
    Logged(LoggedMessage),
}

/// A logged (durable, ordered) message as a client sent it.
#[derive(Debug)]
pub struct LoggedMessage {
    pub kind: MsgType,
    /// The `data` value, kept as the client's JSON text: it is stored and relayed without re-encoding.
    pub data: Box<RawValue>,
    /// The client's `ref`, echoed in the ack.
    pub reference: Option<String>,
}

/// A bad frame: the error frame the client gets, with the `ref` of the frame when it had one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub code: ErrorCode,
    pub message: String,
    pub reference: Option<String>,
}

impl FrameError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        FrameError { code, message: message.into(), reference: None }
    }
    pub fn with_ref(mut self, reference: Option<String>) -> Self {
        self.reference = reference;
        self
    }
}

/// The envelope every client frame shares; unknown fields are ignored so clients may add their own.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: Option<String>,
    data: Option<Box<RawValue>>,
    #[serde(rename = "ref")]
    reference: Option<String>,
}

impl ClientFrame {
    /// Parses one text frame. Syntax errors are `invalid_json`; valid JSON of the wrong shape is
    /// `invalid_frame`; a type the client may not send is `unknown_type`.
    pub fn parse(text: &str) -> Result<ClientFrame, FrameError> {
        let envelope: Envelope = serde_json::from_str(text).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => {
                FrameError::new(ErrorCode::InvalidFrame, format!("not a frame object: {e}"))
            }
            _ => FrameError::new(ErrorCode::InvalidJson, format!("invalid JSON: {e}")),
        })?;
        let reference = envelope.reference;
        if reference.as_ref().is_some_and(|r| r.chars().count() > MAX_REF_CHARS) {
            return Err(FrameError::new(ErrorCode::InvalidFrame, "ref is longer than 64 characters"));
        }
        let Some(kind) = envelope.kind else {
            return Err(FrameError::new(ErrorCode::InvalidFrame, "frame has no string \"type\"").with_ref(reference));
        };
        let data = envelope.data.unwrap_or_else(null_value);
        match kind.as_str() {
            "ping" => Ok(ClientFrame::Ping),
            "cursor" => Ok(ClientFrame::Cursor { data }),
            _ => LoggedMessage::new(&kind, data, reference).map(ClientFrame::Logged),
        }
    }
}

impl LoggedMessage {
    /// Checks a logged message's type and data, from a socket frame or an HTTP API body alike.
    pub fn new(kind: &str, data: Box<RawValue>, reference: Option<String>) -> Result<Self, FrameError> {
        let kind = MsgType::parse(kind).map_err(|e| e.with_ref(reference.clone()))?;
        if kind.is_object_op() {
            check_object_op(&data).map_err(|e| e.with_ref(reference.clone()))?;
        }
        Ok(LoggedMessage { kind, data, reference })
    }

    /// Checks the body of `POST /api/v1/canvases/{canvas}/messages`: `{"type": ..., "data": ...}`.
    pub fn from_api_body(body: &[u8]) -> Result<Self, FrameError> {
        let envelope: Envelope = serde_json::from_slice(body)
            .map_err(|e| FrameError::new(ErrorCode::InvalidJson, format!("body is not a JSON object: {e}")))?;
        let Some(kind) = envelope.kind else {
            return Err(FrameError::new(ErrorCode::InvalidFrame, "body has no string \"type\""));
        };
        LoggedMessage::new(&kind, envelope.data.unwrap_or_else(null_value), None)
    }
}

/// JSON `null`, for a frame without `data` and a stored payload that cannot be read.
pub fn null_value() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).expect("null is valid JSON")
}

/// Object ops carry an object with a string `id` (the key of the canvas state).
fn check_object_op(data: &RawValue) -> Result<(), FrameError> {
    #[derive(Deserialize)]
    struct ObjectRef {
        id: Option<serde_json::Value>,
    }
    let bad = || FrameError::new(ErrorCode::InvalidFrame, "object ops need data: an object with a string \"id\"");
    if !data.get().starts_with('{') {
        return Err(bad());
    }
    let object: ObjectRef = serde_json::from_str(data.get()).map_err(|_| bad())?;
    match object.id {
        Some(serde_json::Value::String(id)) if (1..=MAX_OBJECT_ID_CHARS).contains(&id.chars().count()) => Ok(()),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
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
    fn custom_types_are_logged_and_missing_data_is_null() {
        let ClientFrame::Logged(msg) = ClientFrame::parse(r#"{"type":"chat-1"}"#).unwrap() else {
            panic!("expected a logged message")
        };
        assert_eq!(msg.kind.as_str(), "chat-1");
        assert_eq!(msg.data.get(), "null");
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
        for kind in RESERVED_TYPES.iter().filter(|k| **k != "cursor") {
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
        for data in [r#"{"x":1}"#, r#"{"id":5}"#, r#"["o1"]"#, "null", r#"{"id":""}"#] {
            let err = parse_err(&format!(r#"{{"type":"object-create","data":{data},"ref":"r"}}"#));
            assert_eq!(err.code, ErrorCode::InvalidFrame, "{data}");
            assert_eq!(err.reference.as_deref(), Some("r"));
        }
        assert!(ClientFrame::parse(r#"{"type":"object-delete","data":{"id":"o1"}}"#).is_ok());
    }

    #[test]
    fn long_refs_are_refused() {
        let long = "r".repeat(65);
        assert_eq!(parse_err(&format!(r#"{{"type":"x","ref":"{long}"}}"#)).code, ErrorCode::InvalidFrame);
    }
}
