//! The first frames of a connection: the welcome, and the replay that follows it before anything live.
//!
//! A welcome carries the whole canvas state, which may be tens of megabytes, and the canvas's peers. It goes
//! out as one WebSocket text message, split into frames (RFC 6455 fragmentation: clients see one message)
//! once it is bigger than [`SMALL_FRAGMENT`], cut from the state's shared `Bytes` without copying it: 50
//! joiners of a 10 MB canvas hold one copy between them, and each socket buffers a fragment at a time rather
//! than the whole message. The fragments are small for a welcome of moderate size because a socket's write
//! buffer keeps the capacity of the largest frame it ever wrote: with 190 connections on a canvas, its
//! welcome's peers alone are ~17 KB, which every idle socket would otherwise keep (measured:
//! docs/BENCHMARKS.md, "One socket, many canvases").

use bytes::Bytes;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

use crate::protocol::{to_json, Welcome};

/// The fragment size of a welcome bigger than [`FRAGMENT`].
pub const FRAGMENT: usize = 64 * 1024;

/// A welcome this small or smaller goes as one frame; a bigger one, up to [`FRAGMENT`], in fragments of
/// this size, which is about what an idle socket's write buffer keeps afterwards (3.2 KB of every socket on
/// a canvas of 100 with 4 KiB fragments, in a heap profile: docs/BENCHMARKS.md).
pub const SMALL_FRAGMENT: usize = 512;

/// Seqs read from the log per page of a replay: at most this many frames are held in memory at once.
pub const REPLAY_PAGE: u64 = 256;

/// The welcome as the messages to write: one text message, or the fragments of one.
pub fn welcome_frames(welcome: &Welcome<'_>, objects: Option<Bytes>) -> Vec<Message> {
    let head = to_json(welcome);
    // The message's pieces, in order: the head alone, or (its closing brace making way for the objects
    // field) the head, the objects and a closing brace.
    let pieces = match objects {
        None => vec![Bytes::from(head)],
        Some(objects) => {
            let prefix = format!("{},\"objects\":", &head[..head.len() - 1]);
            vec![Bytes::from(prefix), objects, Bytes::from_static(b"}")]
        }
    };
    let total: usize = pieces.iter().map(Bytes::len).sum();
    if total <= SMALL_FRAGMENT {
        let whole: Vec<u8> = pieces.concat();
        return vec![Message::text(String::from_utf8(whole).unwrap_or_default())];
    }
    let size = if total <= FRAGMENT { SMALL_FRAGMENT } else { FRAGMENT };
    let mut fragments = Vec::with_capacity(total / size + pieces.len() + 1);
    for piece in pieces {
        let mut at = 0;
        while at < piece.len() {
            let end = char_boundary(&piece, (at + size).min(piece.len()));
            fragments.push(piece.slice(at..end));
            at = end;
        }
    }
    let last = fragments.len() - 1;
    fragments
        .into_iter()
        .enumerate()
        .map(|(n, payload)| {
            let opcode = if n == 0 { OpCode::Data(Data::Text) } else { OpCode::Data(Data::Continue) };
            Message::Frame(Frame::message(payload, opcode, n == last))
        })
        .collect()
}

/// The first UTF-8 character boundary at or after `at` (a fragment never splits a character, which strict
/// clients would otherwise have to reassemble).
fn char_boundary(text: &[u8], mut at: usize) -> usize {
    while at < text.len() && (text[at] & 0xC0) == 0x80 {
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{CanvasId, UserId};
    use serde_json::value::RawValue;

    fn welcome_of(objects: Option<Bytes>) -> (Vec<Message>, serde_json::Value) {
        let (canvas, user) = (CanvasId::parse("c1").unwrap(), UserId::parse("u1").unwrap());
        let presence = RawValue::from_string("[]".into()).unwrap();
        let welcome = Welcome {
            kind: "welcome",
            canvas: &canvas,
            user: &user,
            connection: "conn".into(),
            instance: "inst".into(),
            epoch: "e-1",
            seq: 7,
            resumed: false,
            role: "viewer",
            presence: &presence,
            peers: &presence,
        };
        let frames = welcome_frames(&welcome, objects);
        let mut text = Vec::new();
        for frame in &frames {
            match frame {
                Message::Text(t) => text.extend_from_slice(t.as_bytes()),
                Message::Frame(f) => text.extend_from_slice(f.payload()),
                other => panic!("unexpected {other:?}"),
            }
        }
        (frames, serde_json::from_slice(&text).expect("the pieces make one JSON object"))
    }

    #[test]
    fn a_small_welcome_is_one_text_frame_with_its_objects() {
        let (frames, welcome) = welcome_of(Some(Bytes::from_static(br#"{"o1":{"id":"o1","x":1}}"#)));
        assert!(matches!(frames.as_slice(), [Message::Text(_)]));
        assert_eq!(welcome["objects"]["o1"]["x"], 1);
        assert_eq!(welcome["seq"], 7);
        let (_, resumed) = welcome_of(None);
        assert!(resumed.get("objects").is_none());
    }

    #[test]
    fn a_welcome_of_moderate_size_goes_in_small_fragments_head_included() {
        let objects: String = (0..300).map(|i| format!(r#""o{i}":{{"id":"o{i}"}}"#)).collect::<Vec<_>>().join(",");
        let (frames, welcome) = welcome_of(Some(Bytes::from(format!("{{{objects}}}"))));
        assert!(frames.len() >= 2, "{} frames", frames.len());
        for frame in &frames {
            let Message::Frame(frame) = frame else { panic!("fragments only") };
            assert!(frame.payload().len() <= SMALL_FRAGMENT + 3);
        }
        assert_eq!(welcome["objects"].as_object().unwrap().len(), 300);
    }

    #[test]
    fn a_big_welcome_is_one_message_in_fragments_that_never_split_a_character() {
        let objects: String = (0..20_000)
            .map(|i| format!(r#""o{i}":{{"id":"o{i}","t":"žluťoučký kůň {i}"}}"#))
            .collect::<Vec<_>>()
            .join(",");
        let objects = Bytes::from(format!("{{{objects}}}"));
        let (frames, welcome) = welcome_of(Some(objects.clone()));
        assert!(frames.len() > 3);
        for (n, frame) in frames.iter().enumerate() {
            let Message::Frame(frame) = frame else { panic!("fragments only") };
            assert_eq!(frame.header().is_final, n == frames.len() - 1);
            let opcode = if n == 0 { OpCode::Data(Data::Text) } else { OpCode::Data(Data::Continue) };
            assert_eq!(frame.header().opcode, opcode);
            assert!(frame.payload().len() <= FRAGMENT + 3);
            assert!(!frame.payload().is_empty());
            assert!(std::str::from_utf8(frame.payload()).is_ok(), "fragment {n} is whole characters");
        }
        assert_eq!(welcome["objects"].as_object().unwrap().len(), 20_000);
        assert_eq!(welcome["objects"]["o19999"]["t"], "žluťoučký kůň 19999");
    }
}
