//! One timed join of a big canvas: from the start of the TCP connect to the whole `welcome` in hand, then
//! the count of its objects. Every way a join can fail becomes a `JoinFailure` reason to report, never a
//! panic or an early exit. It does not decide who joins when: that is the `join` scenario.

use std::fmt;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use crate::client::Socket;

/// A welcome (one text message, however many WebSocket frames the server split it into) may be tens of MB.
const MAX_MESSAGE: usize = 256 << 20;
/// Fragments of it may be large too.
const MAX_FRAME: usize = 64 << 20;
/// A join that has no welcome after this long is reported as timed out.
const TIMEOUT: Duration = Duration::from_secs(120);

/// Client limits big enough for any welcome the contract allows (`--max-canvas-state`, default 64 MiB).
pub fn big_config() -> WebSocketConfig {
    WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE)).max_frame_size(Some(MAX_FRAME))
}

/// A join that got its welcome.
pub struct Joined {
    /// From the start of the TCP connect to the last byte of the welcome.
    pub elapsed: Duration,
    /// The welcome's size in bytes.
    pub bytes: usize,
    /// Entries in the welcome's `objects`.
    pub objects: usize,
    /// Still open, for the caller to close when it suits the measurement.
    pub socket: Socket,
}

/// Why a join did not yield a welcome with the expected objects.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JoinFailure {
    /// The upgrade was refused with this HTTP status.
    Http(u16),
    /// The server closed the WebSocket with this code before the welcome.
    Closed(u16),
    /// The connection ended (or broke) before the welcome, without a close code.
    Dropped(String),
    /// The first frame was not a welcome (its type, or what failed to parse).
    NotWelcome(String),
    /// The welcome carried this many objects instead of the expected count.
    Count { got: usize, expected: usize },
    /// No welcome within `TIMEOUT`.
    TimedOut,
}

impl fmt::Display for JoinFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinFailure::Http(status) => write!(f, "HTTP {status}"),
            JoinFailure::Closed(code) => write!(f, "closed with code {code} before the welcome"),
            JoinFailure::Dropped(why) => write!(f, "connection dropped before the welcome ({why})"),
            JoinFailure::NotWelcome(what) => write!(f, "first frame was not a welcome: {what}"),
            JoinFailure::Count { got, expected } => write!(f, "welcome had {got} objects, expected {expected}"),
            JoinFailure::TimedOut => write!(f, "no welcome within {} s", TIMEOUT.as_secs()),
        }
    }
}

/// Joins `canvas` on `target` as `user`, times it, and checks the welcome carries `expected` objects.
pub async fn join(target: &str, canvas: &str, user: &str, expected: usize) -> Result<Joined, JoinFailure> {
    let joined = open(target, canvas, user).await?;
    if joined.objects != expected {
        return Err(JoinFailure::Count { got: joined.objects, expected });
    }
    Ok(joined)
}

/// Joins `canvas` on `target` as `user`, times it, and counts the welcome's objects (off the async workers,
/// after the clock stopped).
pub async fn open(target: &str, canvas: &str, user: &str) -> Result<Joined, JoinFailure> {
    let started = Instant::now();
    let (socket, text) = match tokio::time::timeout(TIMEOUT, welcome_text(target, canvas, user)).await {
        Ok(result) => result?,
        Err(_) => return Err(JoinFailure::TimedOut),
    };
    let elapsed = started.elapsed();
    let bytes = text.len();
    let objects = tokio::task::spawn_blocking(move || count_objects(text.as_str()))
        .await
        .map_err(|e| JoinFailure::NotWelcome(format!("counting task failed: {e}")))??;
    Ok(Joined { elapsed, bytes, objects, socket })
}

/// Closes a joined socket politely, ignoring a server that is already gone.
pub async fn close(mut socket: Socket) {
    let _ = socket.close(None).await;
    // Read until the close handshake ends (or fails) so the server sees a clean close.
    while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(2), socket.next()).await {}
}

/// Connects and returns the first text message, whole.
async fn welcome_text(target: &str, canvas: &str, user: &str) -> Result<(Socket, Utf8Bytes), JoinFailure> {
    let url = format!("ws://{target}/ws/{canvas}?user={user}");
    let (mut socket, _) = tokio_tungstenite::connect_async_with_config(&url, Some(big_config()), true).await.map_err(
        |error| match error {
            WsError::Http(response) => JoinFailure::Http(response.status().as_u16()),
            other => JoinFailure::Dropped(format!("connect: {other}")),
        },
    )?;
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => return Ok((socket, text)),
            Some(Ok(Message::Close(frame))) => {
                return Err(frame.map_or(JoinFailure::Dropped("close without a code".into()), |f| {
                    JoinFailure::Closed(u16::from(f.code))
                }))
            }
            Some(Ok(Message::Binary(_))) => return Err(JoinFailure::NotWelcome("a binary frame".into())),
            Some(Ok(_)) => continue, // ping, pong
            Some(Err(error)) => return Err(JoinFailure::Dropped(error.to_string())),
            None => return Err(JoinFailure::Dropped("end of stream".into())),
        }
    }
}

/// The number of entries of the welcome's `objects`, without building them.
fn count_objects(text: &str) -> Result<usize, JoinFailure> {
    #[derive(Deserialize)]
    struct Welcome {
        #[serde(rename = "type")]
        kind: String,
        objects: Option<Entries>,
    }
    let welcome: Welcome =
        serde_json::from_str(text).map_err(|e| JoinFailure::NotWelcome(format!("unparsable: {e}")))?;
    if welcome.kind != "welcome" {
        return Err(JoinFailure::NotWelcome(format!("type {:?}", welcome.kind)));
    }
    Ok(welcome.objects.map_or(0, |entries| entries.0))
}

/// A JSON object's entry count; keys and values are skipped.
struct Entries(usize);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Count;
        impl<'de> Visitor<'de> for Count {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut n = 0;
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(Entries(n))
            }
        }
        deserializer.deserialize_map(Count)
    }
}
