//! Frames of a multiplexed socket (`GET /ws`, v1.1 "One socket, many canvases"): every frame but `ping`
//! names the canvas it is for, and `join` / `leave` open and close a canvas on the socket. Parsed here into
//! an [`Addressed`] frame, or refused with the error frame the client gets, which names the canvas whenever
//! the frame named one (so that a client can tell which join or which op was refused).
//!
//! What a canvas's frame then says is parsed exactly as on `/ws/{canvas}` (`client`).

use serde_json::value::RawValue;

use super::client::Envelope;
use super::{CanvasId, ClientFrame, ErrorCode, FrameError, Resume};

/// A frame of a multiplexed socket, checked.
#[derive(Debug)]
pub enum Addressed {
    Ping,
    /// `{"type":"join","canvas":C[,"since":S,"epoch":E]}`.
    Join {
        canvas: CanvasId,
        resume: Option<Resume>,
    },
    /// `{"type":"leave","canvas":C}`.
    Leave {
        canvas: CanvasId,
    },
    /// Any other frame, for canvas `canvas`.
    To {
        canvas: CanvasId,
        frame: ClientFrame,
    },
}

/// A refused frame: the error, and the canvas it named as the client wrote it (`None` if it named none
/// that is a string).
#[derive(Debug, PartialEq, Eq)]
pub struct Misaddressed {
    pub canvas: Option<String>,
    pub error: FrameError,
}

impl Addressed {
    /// Parses one text frame of a multiplexed socket.
    pub fn parse(text: &str) -> Result<Addressed, Misaddressed> {
        let untagged = |error| Misaddressed { canvas: None, error };
        let envelope = Envelope::parse(text).map_err(untagged)?;
        let reference = envelope.reference.clone();
        let kind = envelope.kind.as_deref();
        if kind == Some("ping") {
            return Ok(Addressed::Ping);
        }
        let Some(named) = envelope.canvas else {
            let error = FrameError::new(
                ErrorCode::InvalidFrame,
                "frame has no \"canvas\": on /ws every frame but ping names a canvas",
            );
            return Err(untagged(error.with_ref(reference)));
        };
        let Ok(named) = serde_json::from_str::<String>(named.get()) else {
            let error = FrameError::new(ErrorCode::InvalidFrame, "\"canvas\" must be a string");
            return Err(untagged(error.with_ref(reference)));
        };
        let tagged = |error: FrameError| Misaddressed { canvas: Some(named.clone()), error };
        let canvas = CanvasId::parse(&named)
            .map_err(|invalid| tagged(FrameError::new(ErrorCode::InvalidFrame, invalid.to_string())))?;
        match kind {
            Some("join") => {
                let resume = resume(envelope.since, envelope.epoch).map_err(tagged)?;
                Ok(Addressed::Join { canvas, resume })
            }
            Some("leave") => Ok(Addressed::Leave { canvas }),
            _ => match ClientFrame::from_envelope(envelope) {
                Ok(frame) => Ok(Addressed::To { canvas, frame }),
                Err(error) => Err(tagged(error)),
            },
        }
    }
}

/// A join's `since` + `epoch`: both or neither, `since` a non-negative integer, `epoch` a welcome's.
fn resume(since: Option<&RawValue>, epoch: Option<&RawValue>) -> Result<Option<Resume>, FrameError> {
    let bad = |why: String| FrameError::new(ErrorCode::InvalidFrame, why);
    match (since, epoch) {
        (None, None) => Ok(None),
        (Some(since), Some(epoch)) => {
            let since: u64 = serde_json::from_str(since.get())
                .map_err(|_| bad("since must be a non-negative integer".to_owned()))?;
            let epoch: String = serde_json::from_str(epoch.get())
                .map_err(|_| bad("epoch must be the epoch string from a welcome".to_owned()))?;
            Resume::new(since, &epoch).map(Some).map_err(|e| bad(e.to_string()))
        }
        _ => Err(bad("resume needs both since and epoch".to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> (Option<String>, ErrorCode) {
        let refused = Addressed::parse(text).expect_err("should be refused");
        (refused.canvas, refused.error.code)
    }

    #[test]
    fn joins_leaves_and_frames_name_their_canvas() {
        let Addressed::Join { canvas, resume } = Addressed::parse(r#"{"type":"join","canvas":"c1"}"#).unwrap() else {
            panic!("expected a join")
        };
        assert_eq!((canvas.as_str(), resume), ("c1", None));
        let join = Addressed::parse(r#"{"type":"join","canvas":"c1","since":41,"epoch":"ab-0"}"#).unwrap();
        let Addressed::Join { resume, .. } = join else { panic!("expected a join") };
        assert_eq!(resume, Some(Resume { since: 41, epoch: "ab-0".into() }));
        assert!(matches!(Addressed::parse(r#"{"type":"leave","canvas":"c1"}"#), Ok(Addressed::Leave { .. })));
        assert!(matches!(Addressed::parse(r#"{"type":"ping"}"#), Ok(Addressed::Ping)));
        let op = Addressed::parse(r#"{"type":"object-create","canvas":"c2","data":{"id":"o1"},"ref":"r"}"#).unwrap();
        let Addressed::To { canvas, frame: ClientFrame::Logged(message) } = op else { panic!("expected an op") };
        assert_eq!((canvas.as_str(), message.reference.as_deref()), ("c2", Some("r")));
    }

    #[test]
    fn a_refusal_names_the_canvas_the_frame_named() {
        assert_eq!(refused(r#"{"type":"join","canvas":"bad id"}"#), (Some("bad id".into()), ErrorCode::InvalidFrame));
        assert_eq!(refused(r#"{"type":"join","canvas":"c1","since":4}"#), (Some("c1".into()), ErrorCode::InvalidFrame));
        let negative = r#"{"type":"join","canvas":"c1","since":-1,"epoch":"e"}"#;
        assert_eq!(refused(negative), (Some("c1".into()), ErrorCode::InvalidFrame));
        assert_eq!(refused(r#"{"type":"welcome","canvas":"c1"}"#), (Some("c1".into()), ErrorCode::UnknownType));
        assert_eq!(refused(r#"{"type":"cursor","data":{}}"#), (None, ErrorCode::InvalidFrame), "no canvas");
        assert_eq!(refused(r#"{"type":"cursor","canvas":7}"#), (None, ErrorCode::InvalidFrame));
        assert_eq!(refused("{nope"), (None, ErrorCode::InvalidJson));
    }

    #[test]
    fn a_single_canvas_socket_ignores_the_fields_of_a_multiplexed_one() {
        let frame = ClientFrame::parse(r#"{"type":"note","canvas":7,"since":"x","epoch":[],"data":1}"#).unwrap();
        assert!(matches!(frame, ClientFrame::Logged(_)));
        assert_eq!(ClientFrame::parse(r#"{"type":"join","canvas":"c1"}"#).unwrap_err().code, ErrorCode::UnknownType);
    }
}
