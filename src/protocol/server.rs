//! Frames the server writes. Each is serialized once; fan-out clones the resulting message.

use serde::Serialize;
use serde_json::value::RawValue;

use super::{CanvasId, FrameError, UserId};

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
    /// `"editor"` or `"viewer"` (v1.1).
    pub role: &'static str,
    /// Who is on the canvas at `seq`, across instances.
    pub presence: &'a RawValue,
    /// Every other live connection of the canvas with its presence state (v1.1):
    /// `[{"connection","user","name","data"}]`.
    pub peers: &'a RawValue,
    // `objects` (the canvas state at `seq`, omitted when resumed) is appended by `session::welcome`, which
    // sends a big state in fragments from a copy shared by every joiner rather than serializing it here.
}

/// `{"type":"ack","seq":N,"ref":"..."}`; on a multiplexed socket `canvas` names the canvas (v1.1).
pub fn ack_frame(seq: u64, reference: Option<&str>, canvas: Option<&str>) -> String {
    to_json(&Ack { kind: "ack", canvas, seq, reference, duplicate: false })
}

/// `{"type":"ack","seq":N,"ref":"...","duplicate":true}`: a repeated idempotency key, `seq` the original's.
pub fn duplicate_ack_frame(seq: u64, reference: Option<&str>, canvas: Option<&str>) -> String {
    to_json(&Ack { kind: "ack", canvas, seq, reference, duplicate: true })
}

#[derive(Serialize)]
struct Ack<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    canvas: Option<&'a str>,
    seq: u64,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reference: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    duplicate: bool,
}

/// `{"type":"error","code":...,"message":...,"ref":...}`; on a multiplexed socket an error about one canvas
/// names it: `{"type":"error","canvas":C,...}` (v1.1).
pub fn error_frame_in(error: &FrameError, canvas: Option<&str>) -> String {
    #[derive(Serialize)]
    struct Error<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        canvas: Option<&'a str>,
        code: &'static str,
        message: &'a str,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    }
    to_json(&Error {
        kind: "error",
        canvas,
        code: error.code.as_str(),
        message: &error.message,
        reference: error.reference.as_deref(),
    })
}

pub const PONG_FRAME: &str = r#"{"type":"pong"}"#;

/// `{"type":"left","canvas":C}`: a multiplexed socket left a canvas, at its request; when the API removed
/// the user from it, with `"code":4003` and a reason, the same as the close of a single-canvas socket (v1.1).
pub fn left_frame(canvas: &str, removed: bool) -> String {
    #[derive(Serialize)]
    struct Left<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        canvas: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        code: Option<u16>,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'static str>,
    }
    let (code, reason) = match removed {
        true => (Some(super::close::REMOVED), Some("removed from the canvas")),
        false => (None, None),
    };
    to_json(&Left { kind: "left", canvas, code, reason })
}

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

/// An ephemeral cursor frame: `{"type":"cursor","canvas":C,"from":U,"connection":ID,"data":D,"ts":MS}`
/// (`connection` tells two tabs of one user apart; v1.1).
pub fn cursor_frame(canvas: &str, from: &str, connection: &str, data: &RawValue, ts: i64) -> String {
    to_json(&Relayed { kind: "cursor", canvas, from, connection, data, ts, ephemeral: false })
}

/// A connection's presence state as every other connection of the canvas receives it (v1.1):
/// `{"type":"presence","canvas":C,"from":U,"connection":ID,"data":D,"ts":MS}`; `data` is `null` once the
/// connection is gone.
pub fn presence_frame(canvas: &str, from: &str, connection: &str, data: &RawValue, ts: i64) -> String {
    to_json(&Relayed { kind: "presence", canvas, from, connection, data, ts, ephemeral: false })
}

/// An ephemeral event as every other connection of the canvas receives it (v1.1):
/// `{"type":T,"canvas":C,"from":U,"connection":ID,"data":...,"ts":...,"ephemeral":true}`.
pub fn event_frame(kind: &str, canvas: &str, from: &str, connection: &str, data: &RawValue, ts: i64) -> String {
    to_json(&Relayed { kind, canvas, from, connection, data, ts, ephemeral: true })
}

/// What one connection sent that the relay passes on without logging it: a cursor, a presence state, an
/// ephemeral event (which alone says `"ephemeral":true`).
#[derive(Serialize)]
struct Relayed<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    canvas: &'a str,
    from: &'a str,
    connection: &'a str,
    data: &'a RawValue,
    ts: i64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    ephemeral: bool,
}

/// `{"type":"reset","canvas":C,"epoch":E,"seq":0}`: the canvas was reset; the stream goes on in epoch `E`.
pub fn reset_frame(canvas: &str, epoch: &str) -> String {
    #[derive(Serialize)]
    struct Reset<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        canvas: &'a str,
        epoch: &'a str,
        seq: u64,
    }
    to_json(&Reset { kind: "reset", canvas, epoch, seq: 0 })
}

/// A message for one user through the API: `{"type":T,"from":"server","to":U,"data":D,"ts":MS}` (no seq).
pub fn user_frame(kind: &str, to: &str, data: &RawValue, ts: i64) -> String {
    #[derive(Serialize)]
    struct ToUser<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        from: &'static str,
        to: &'a str,
        data: &'a RawValue,
        ts: i64,
    }
    to_json(&ToUser { kind, from: "server", to, data, ts })
}

/// The `data` of `user-connected` / `user-disconnected`: `{"user":U,"name":N}` (`name` only when given).
pub fn presence_data(user: &str, name: Option<&str>) -> Box<RawValue> {
    #[derive(Serialize)]
    struct Presence<'a> {
        user: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
    }
    RawValue::from_string(to_json(&Presence { user, name })).expect("serde_json writes valid JSON")
}

/// Serializes a frame struct. Our frame structs hold only strings, numbers and already-valid JSON, for which
/// serde_json cannot fail; a failure would be a bug in this module, not something input can cause.
pub fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("frame structs always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;

    #[test]
    fn server_frames_have_the_contract_shape() {
        assert_eq!(ack_frame(42, Some("c-17"), None), r#"{"type":"ack","seq":42,"ref":"c-17"}"#);
        assert_eq!(ack_frame(7, None, None), r#"{"type":"ack","seq":7}"#);
        assert_eq!(ack_frame(7, None, Some("c1")), r#"{"type":"ack","canvas":"c1","seq":7}"#);
        let data = RawValue::from_string(r#"{"id":"o1"}"#.to_owned()).unwrap();
        assert_eq!(
            logged_frame("object-create", 3, "c1", "u1", &data, 99),
            r#"{"type":"object-create","seq":3,"canvas":"c1","from":"u1","data":{"id":"o1"},"ts":99}"#
        );
        let err = FrameError::new(ErrorCode::InvalidJson, "bad").with_ref(Some("x".into()));
        assert_eq!(error_frame_in(&err, None), r#"{"type":"error","code":"invalid_json","message":"bad","ref":"x"}"#);
        assert_eq!(
            error_frame_in(&err, Some("c1")),
            r#"{"type":"error","canvas":"c1","code":"invalid_json","message":"bad","ref":"x"}"#
        );
        assert_eq!(left_frame("c1", false), r#"{"type":"left","canvas":"c1"}"#);
        assert_eq!(
            left_frame("c1", true),
            r#"{"type":"left","canvas":"c1","code":4003,"reason":"removed from the canvas"}"#
        );
    }
}
