//! Frames a client sends: parsed into [`ClientFrame`], or refused with the [`FrameError`] the client gets.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::object_ops::{self, ObjectOp};

use super::canonical::canonical;
use super::{ErrorCode, RESERVED_TYPES};

/// Longest `ref` a client may attach, in characters.
const MAX_REF_CHARS: usize = 64;
/// Longest `idempotency_key`, in characters.
const MAX_IDEMPOTENCY_KEY_CHARS: usize = 64;
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
    Cursor {
        data: Box<RawValue>,
    },
    /// `{"type":"presence","data":{...}}` (v1.1): replaces this connection's presence state. `data` is a
    /// JSON object (its size is the session's to judge, against `--max-presence-bytes`).
    Presence {
        data: Box<RawValue>,
    },
    Logged(LoggedMessage),
    /// A custom type sent with `"ephemeral":true` (v1.1): relayed, never logged.
    Event {
        kind: MsgType,
        data: Box<RawValue>,
        reference: Option<String>,
    },
}

/// A logged (durable, ordered) message as a client sent it.
#[derive(Debug)]
pub struct LoggedMessage {
    pub kind: MsgType,
    /// The `data` value as the client's JSON text in canonical form (whitespace removed, nothing else
    /// changed): it is stored and relayed without re-encoding.
    pub data: Box<RawValue>,
    /// The client's `ref`, echoed in the ack.
    pub reference: Option<String>,
    /// The object op it performs, if it is one, with the id read from `data` when the frame was checked.
    pub object: Option<ObjectOp>,
    /// The client's key for it (v1.1): a repeat from the same user on the same canvas and epoch within the
    /// TTL is acked with the original seq instead of being logged again.
    pub idempotency_key: Option<IdempotencyKey>,
}

/// An `idempotency_key` (1–64 characters) or an API caller's `Idempotency-Key` header.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(key: &str) -> Result<Self, FrameError> {
        match key.chars().count() {
            1..=MAX_IDEMPOTENCY_KEY_CHARS => Ok(IdempotencyKey(key.to_owned())),
            _ => Err(FrameError::new(ErrorCode::InvalidFrame, "idempotency_key must be 1 to 64 characters")),
        }
    }

    /// The key as a frame's `idempotency_key` carries it: a JSON string, else `invalid_frame`.
    fn from_json(raw: &RawValue) -> Result<Self, FrameError> {
        let key: String = serde_json::from_str(raw.get())
            .map_err(|_| FrameError::new(ErrorCode::InvalidFrame, "idempotency_key must be a string"))?;
        IdempotencyKey::parse(&key)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
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
pub(super) struct Envelope<'a> {
    #[serde(rename = "type")]
    pub(super) kind: Option<String>,
    data: Option<Box<RawValue>>,
    #[serde(rename = "ref")]
    pub(super) reference: Option<String>,
    /// Read as it came, so that a key of the wrong type gets its own error (with the frame's `ref`).
    idempotency_key: Option<Box<RawValue>>,
    /// `true` for an ephemeral event; anything but `true` is a logged message.
    #[serde(default)]
    ephemeral: Option<bool>,
    /// The canvas a frame of a multiplexed socket is for, and a join's resume (v1.1, `addressed`). Read as
    /// they came, without judging them: a single-canvas socket ignores them like any unknown field.
    #[serde(borrow)]
    pub(super) canvas: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) since: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) epoch: Option<&'a RawValue>,
}

impl ClientFrame {
    /// Parses one text frame. Syntax errors are `invalid_json`; valid JSON of the wrong shape is
    /// `invalid_frame`; a type the client may not send is `unknown_type`.
    pub fn parse(text: &str) -> Result<ClientFrame, FrameError> {
        ClientFrame::from_envelope(Envelope::parse(text)?)
    }

    /// The frame an envelope carries, checked.
    pub(super) fn from_envelope(envelope: Envelope<'_>) -> Result<ClientFrame, FrameError> {
        let reference = envelope.reference;
        if reference.as_ref().is_some_and(|r| r.chars().count() > MAX_REF_CHARS) {
            return Err(FrameError::new(ErrorCode::InvalidFrame, "ref is longer than 64 characters"));
        }
        let Some(kind) = envelope.kind else {
            return Err(FrameError::new(ErrorCode::InvalidFrame, "frame has no string \"type\"").with_ref(reference));
        };
        let data = canonical(envelope.data.unwrap_or_else(null_value)).map_err(|e| e.with_ref(reference.clone()))?;
        match kind.as_str() {
            "ping" => Ok(ClientFrame::Ping),
            "cursor" => Ok(ClientFrame::Cursor { data }),
            "presence" if data.get().starts_with('{') => Ok(ClientFrame::Presence { data }),
            "presence" => Err(FrameError::new(ErrorCode::InvalidFrame, "presence data must be a JSON object")),
            _ if envelope.ephemeral == Some(true) => {
                let kind = MsgType::parse(&kind).map_err(|e| e.with_ref(reference.clone()))?;
                if kind.is_object_op() {
                    let error = FrameError::new(ErrorCode::InvalidFrame, "object ops cannot be ephemeral");
                    return Err(error.with_ref(reference));
                }
                Ok(ClientFrame::Event { kind, data, reference })
            }
            _ => {
                let key = envelope.idempotency_key.as_deref().map(IdempotencyKey::from_json).transpose();
                let key = key.map_err(|e| e.with_ref(reference.clone()))?;
                let message = LoggedMessage::new(&kind, data, reference)?;
                Ok(ClientFrame::Logged(LoggedMessage { idempotency_key: key, ..message }))
            }
        }
    }
}

impl ClientFrame {
    /// The frame's `ref`, to echo in its refusal (only logged messages and events carry one).
    pub fn reference(&self) -> Option<&str> {
        match self {
            ClientFrame::Logged(message) => message.reference.as_deref(),
            ClientFrame::Event { reference, .. } => reference.as_deref(),
            ClientFrame::Ping | ClientFrame::Cursor { .. } | ClientFrame::Presence { .. } => None,
        }
    }
}

impl<'a> Envelope<'a> {
    /// Reads one text frame's envelope: syntax errors are `invalid_json`, valid JSON of the wrong shape
    /// `invalid_frame`.
    pub(super) fn parse(text: &'a str) -> Result<Self, FrameError> {
        serde_json::from_str(text).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => {
                FrameError::new(ErrorCode::InvalidFrame, format!("not a frame object: {e}"))
            }
            _ => FrameError::new(ErrorCode::InvalidJson, format!("invalid JSON: {e}")),
        })
    }
}

impl LoggedMessage {
    /// Checks a logged message's type and data, from a socket frame or an HTTP API body alike.
    pub fn new(kind: &str, data: Box<RawValue>, reference: Option<String>) -> Result<Self, FrameError> {
        let kind = MsgType::parse(kind).map_err(|e| e.with_ref(reference.clone()))?;
        let object = match kind.is_object_op() {
            true => Some(object_op(&kind, &data).map_err(|e| e.with_ref(reference.clone()))?),
            false => None,
        };
        Ok(LoggedMessage { kind, data, reference, object, idempotency_key: None })
    }

    /// Checks the body of `POST /api/v1/canvases/{canvas}/messages`: `{"type": ..., "data": ...}`.
    pub fn from_api_body(body: &[u8]) -> Result<Self, FrameError> {
        let envelope: Envelope = serde_json::from_slice(body)
            .map_err(|e| FrameError::new(ErrorCode::InvalidJson, format!("body is not a JSON object: {e}")))?;
        let Some(kind) = envelope.kind else {
            return Err(FrameError::new(ErrorCode::InvalidFrame, "body has no string \"type\""));
        };
        let data = canonical(envelope.data.unwrap_or_else(null_value))?;
        LoggedMessage::new(&kind, data, None)
    }
}

/// JSON `null`, for a frame without `data` and a stored payload that cannot be read.
pub fn null_value() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).expect("null is valid JSON")
}

/// Object ops carry an object with a string `id` (the key of the canvas state): the op, with that id and,
/// for an update, where its patch's top-level fields are, read from `data` in one pass. The stores use
/// these and never parse an update's data again. A create or a delete needs only its id, read without
/// keeping anything else: a create is the common op, and reading its fields here made SQLite's creates
/// about 8 % slower for nothing (that store keeps a create's data as it is).
fn object_op(kind: &MsgType, data: &RawValue) -> Result<ObjectOp, FrameError> {
    #[derive(Deserialize)]
    struct ObjectRef {
        id: Option<serde_json::Value>,
    }
    let bad = || FrameError::new(ErrorCode::InvalidFrame, "object ops need data: an object with a string \"id\"");
    let text = data.get();
    if !text.starts_with('{') {
        return Err(bad());
    }
    let (id, fields) = if kind.as_str() == "object-update" {
        let fields = object_ops::fields(text).map_err(|_| bad())?;
        let id = fields.iter().find(|field| field.name(text) == "id").map(|id| id.value(text));
        (id.and_then(|id| serde_json::from_str::<String>(id).ok()), fields)
    } else {
        let object: ObjectRef = serde_json::from_str(text).map_err(|_| bad())?;
        let id = match object.id {
            Some(serde_json::Value::String(id)) => Some(id),
            _ => None,
        };
        (id, Vec::new())
    };
    match id {
        Some(id) if (1..=MAX_OBJECT_ID_CHARS).contains(&id.chars().count()) => {
            ObjectOp::new(kind, id, fields).ok_or_else(bad)
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests;
