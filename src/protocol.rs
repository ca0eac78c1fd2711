//! The wire contract (`../shared/PROTOCOL.md`) as types: validated ids, the frames a client may send, the
//! frames the server writes, error codes and close codes.
//!
//! Parsing happens here and only here ("parse, don't validate"): the rest of the relay receives a
//! [`ClientFrame`] or a [`FrameError`] that already carries the contract's error code. This module does not
//! know about sockets, storage or delivery.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Close codes of the contract's table.
pub mod close {
    /// The server is shutting down: reconnect (elsewhere) and resume.
    pub const GOING_AWAY: u16 = 1001;
    /// A text frame was not valid UTF-8 (RFC 6455 "invalid frame payload data").
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Policy: the token expired mid-session.
    pub const POLICY: u16 = 1008;
    /// A frame or message over `--max-frame-size`.
    pub const TOO_LARGE: u16 = 1009;
    /// Rate limit abuse: kept sending after `rate_limited` errors.
    pub const RATE_LIMIT: u16 = 4008;
    /// The client's outbound queue overflowed: reconnect with `since` to catch up.
    pub const TOO_SLOW: u16 = 4009;
}

/// Types only the server may send; a client frame using one gets `unknown_type`.
pub const RESERVED_TYPES: [&str; 8] =
    ["welcome", "ack", "error", "pong", "cursor", "reset", "user-connected", "user-disconnected"];

/// Longest `ref` a client may attach, in characters.
const MAX_REF_CHARS: usize = 64;
/// Longest object id in an object op, in characters.
const MAX_OBJECT_ID_CHARS: usize = 128;

/// Error codes of `{"type":"error","code":...}` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidJson,
    InvalidFrame,
    UnknownType,
    TooLarge,
    RateLimited,
    Unavailable,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidFrame => "invalid_frame",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

/// Why an id in a URL or query was refused: the text of the HTTP 400 body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} must be {rule}")]
pub struct InvalidId {
    what: &'static str,
    rule: &'static str,
}

fn check_id(s: &str, what: &'static str, rule: &'static str, extra: &[u8]) -> Result<(), InvalidId> {
    let ok_len = (1..=128).contains(&s.len());
    let ok_chars = s.bytes().all(|b| b.is_ascii_alphanumeric() || extra.contains(&b));
    if ok_len && ok_chars {
        Ok(())
    } else {
        Err(InvalidId { what, rule })
    }
}

/// A canvas (room) id: 1–128 chars of `[A-Za-z0-9._:-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct CanvasId(String);

impl CanvasId {
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        check_id(s, "canvas", "1-128 characters of [A-Za-z0-9._:-]", b"._:-")?;
        Ok(CanvasId(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CanvasId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user id: 1–128 chars of `[A-Za-z0-9._:@-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        check_id(s, "user", "1-128 characters of [A-Za-z0-9._:@-]", b"._:@-")?;
        Ok(UserId(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

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
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn is_object_op(&self) -> bool {
        matches!(self.0.as_str(), "object-create" | "object-update" | "object-delete")
    }
}

/// A resume request: the last seq the client processed and the epoch it was in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    pub since: u64,
    pub epoch: String,
}

/// The parameters of `GET /ws/{canvas}?user=..&name=..&since=..&epoch=..`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectParams {
    pub canvas: CanvasId,
    pub user: UserId,
    /// Display name shown in presence (at most 64 characters).
    pub name: Option<String>,
    pub resume: Option<Resume>,
}

/// Longest display name, in characters.
const MAX_NAME_CHARS: usize = 64;
/// Longest epoch a client may send back (ours are far shorter).
const MAX_EPOCH_CHARS: usize = 128;

impl ConnectParams {
    /// Checks the path segment and query of a connect request; the error is the HTTP 400 body's text.
    pub fn parse(canvas: &str, query: &std::collections::HashMap<String, String>) -> Result<Self, String> {
        let canvas = CanvasId::parse(canvas).map_err(|e| e.to_string())?;
        let user = match query.get("user") {
            Some(user) => UserId::parse(user).map_err(|e| e.to_string())?,
            None => return Err("query parameter user is required".into()),
        };
        let name = query.get("name").cloned();
        if name.as_ref().is_some_and(|n| n.chars().count() > MAX_NAME_CHARS) {
            return Err("name must be at most 64 characters".into());
        }
        let resume = match (query.get("since"), query.get("epoch")) {
            (None, None) => None,
            (Some(since), Some(epoch)) => {
                let since = since.parse().map_err(|_| "since must be a non-negative integer".to_owned())?;
                if epoch.is_empty() || epoch.chars().count() > MAX_EPOCH_CHARS {
                    return Err("epoch must be the epoch string from a welcome".into());
                }
                Some(Resume { since, epoch: epoch.clone() })
            }
            _ => return Err("resume needs both since and epoch".into()),
        };
        Ok(ConnectParams { canvas, user, name, resume })
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
    fn with_ref(mut self, reference: Option<String>) -> Self {
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
            _ => {
                let kind = MsgType::parse(&kind).map_err(|e| e.with_ref(reference.clone()))?;
                if kind.is_object_op() {
                    check_object_op(&data).map_err(|e| e.with_ref(reference.clone()))?;
                }
                Ok(ClientFrame::Logged(LoggedMessage { kind, data, reference }))
            }
        }
    }
}

fn null_value() -> Box<RawValue> {
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

/// `{"type":"welcome",...}`: the first frame of every connection.
#[derive(Debug, Serialize)]
pub struct Welcome<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub canvas: &'a CanvasId,
    pub user: &'a UserId,
    pub connection: String,
    pub instance: String,
    pub epoch: &'a str,
    pub seq: u64,
    pub resumed: bool,
}

/// `{"type":"ack","seq":N,"ref":"..."}`.
pub fn ack_frame(seq: u64, reference: Option<&str>) -> String {
    #[derive(Serialize)]
    struct Ack<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        seq: u64,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    }
    to_json(&Ack { kind: "ack", seq, reference })
}

/// `{"type":"error","code":...,"message":...,"ref":...}`.
pub fn error_frame(error: &FrameError) -> String {
    #[derive(Serialize)]
    struct Error<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        code: &'static str,
        message: &'a str,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    }
    to_json(&Error {
        kind: "error",
        code: error.code.as_str(),
        message: &error.message,
        reference: error.reference.as_deref(),
    })
}

pub const PONG_FRAME: &str = r#"{"type":"pong"}"#;

/// A logged message as every other connection receives it:
/// `{"type":T,"seq":N,"canvas":C,"from":U,"data":D,"ts":MS}`. `data` is the stored JSON text, copied verbatim.
pub fn logged_frame(kind: &str, seq: u64, canvas: &str, from: &str, data: &RawValue, ts: i64) -> String {
    #[derive(Serialize)]
    struct Logged<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        seq: u64,
        canvas: &'a str,
        from: &'a str,
        data: &'a RawValue,
        ts: i64,
    }
    to_json(&Logged { kind, seq, canvas, from, data, ts })
}

/// An ephemeral cursor frame: `{"type":"cursor","canvas":C,"from":U,"data":D,"ts":MS}`.
pub fn cursor_frame(canvas: &str, from: &str, data: &RawValue, ts: i64) -> String {
    #[derive(Serialize)]
    struct Cursor<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        canvas: &'a str,
        from: &'a str,
        data: &'a RawValue,
        ts: i64,
    }
    to_json(&Cursor { kind: "cursor", canvas, from, data, ts })
}

/// Serializes a frame struct. Our frame structs hold only strings, numbers and already-valid JSON, for which
/// serde_json cannot fail; a failure would be a bug in this module, not something input can cause.
pub fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("frame structs always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(text: &str) -> FrameError {
        ClientFrame::parse(text).expect_err("should be refused")
    }

    #[test]
    fn canvas_and_user_ids_follow_the_contract() {
        assert!(CanvasId::parse("team-1.a:b_c").is_ok());
        assert!(CanvasId::parse(&"c".repeat(128)).is_ok());
        assert!(CanvasId::parse(&"c".repeat(129)).is_err());
        assert!(CanvasId::parse("").is_err());
        assert!(CanvasId::parse("a b").is_err());
        assert!(CanvasId::parse("a@b").is_err(), "@ is for user ids only");
        assert!(UserId::parse("ann@example.com").is_ok());
        assert!(UserId::parse("ann/1").is_err());
        assert!(UserId::parse("é").is_err());
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

    fn query(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn connect_params_need_a_valid_canvas_and_user() {
        let ok = ConnectParams::parse("c1", &query(&[("user", "u1"), ("name", "Ann")])).unwrap();
        assert_eq!((ok.canvas.as_str(), ok.user.as_str(), ok.name.as_deref(), ok.resume), ("c1", "u1", Some("Ann"), None));
        assert!(ConnectParams::parse("c 1", &query(&[("user", "u1")])).unwrap_err().contains("canvas"));
        assert!(ConnectParams::parse("c1", &query(&[])).unwrap_err().contains("user"));
        assert!(ConnectParams::parse("c1", &query(&[("user", "u/1")])).unwrap_err().contains("user"));
        let long_name = "n".repeat(65);
        assert!(ConnectParams::parse("c1", &query(&[("user", "u"), ("name", &long_name)])).is_err());
    }

    #[test]
    fn connect_params_resume_needs_since_and_epoch() {
        let ok = ConnectParams::parse("c1", &query(&[("user", "u"), ("since", "41"), ("epoch", "ab-0")])).unwrap();
        assert_eq!(ok.resume, Some(Resume { since: 41, epoch: "ab-0".into() }));
        assert!(ConnectParams::parse("c1", &query(&[("user", "u"), ("since", "41")])).is_err());
        assert!(ConnectParams::parse("c1", &query(&[("user", "u"), ("since", "-1"), ("epoch", "e")])).is_err());
    }

    #[test]
    fn server_frames_have_the_contract_shape() {
        assert_eq!(ack_frame(42, Some("c-17")), r#"{"type":"ack","seq":42,"ref":"c-17"}"#);
        assert_eq!(ack_frame(7, None), r#"{"type":"ack","seq":7}"#);
        let data = RawValue::from_string(r#"{"id":"o1"}"#.to_owned()).unwrap();
        assert_eq!(
            logged_frame("object-create", 3, "c1", "u1", &data, 99),
            r#"{"type":"object-create","seq":3,"canvas":"c1","from":"u1","data":{"id":"o1"},"ts":99}"#
        );
        let err = FrameError::new(ErrorCode::InvalidJson, "bad").with_ref(Some("x".into()));
        assert_eq!(error_frame(&err), r#"{"type":"error","code":"invalid_json","message":"bad","ref":"x"}"#);
    }
}
