//! `GET /api/v1/stream[?since=POS]` (API key): every logged message of every canvas, in commit order, as
//! Server-Sent Events (`event: message`, `event: reset`, first `event: gap` for a position older than the
//! retained log), each `id:` a position that `Last-Event-ID` or `since` resumes exactly after, on any
//! instance. The loop behind it is `consumers::stream`; this is the HTTP edge: the key, the position, the
//! encoding, the keep-alive comments.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use futures_util::stream::{self, Stream};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, watch};
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::sse::Event;
use warp::{Filter, Reply};

use super::api::{authorized, ApiError};
use super::json_error;
use crate::consumers::stream::{feed, StreamEvent};
use crate::protocol::without_whitespace;
use crate::shutdown::Phase;
use crate::App;

pub fn route(app: Arc<App>) -> BoxedFilter<(Response,)> {
    warp::path!("api" / "v1" / "stream")
        .and(warp::get())
        .and(authorized(app))
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::header::optional::<String>("last-event-id"))
        .then(open)
        .boxed()
}

/// Starts a reader's loop and answers with its events; a position this store never handed out is 400.
/// Without one the reader starts at the head as of this request, read before the answer: whatever is
/// committed after the client has its 200 is on its stream.
async fn open(app: Arc<App>, query: HashMap<String, String>, last_event_id: Option<String>) -> Response {
    // Last-Event-ID is what a reconnecting EventSource sends; it names a later point than the URL's `since`.
    let since = last_event_id.or_else(|| query.get("since").cloned()).map(|s| s.trim().to_owned());
    let consumers = app.bus.consumers();
    let since = match since {
        Some(position) if consumers.is_position(&position) => position,
        Some(position) => return json_error(StatusCode::BAD_REQUEST, format!("{position:?} is not a stream position")),
        None => match consumers.log_head().await {
            Ok(head) => head,
            Err(error) => return ApiError::from(error).into_response(),
        },
    };
    let (events, buffered) = mpsc::channel(app.config.consumers.stream_buffer);
    let (bus, metrics) = (app.bus.clone(), app.metrics.clone());
    tokio::spawn(async move {
        metrics.stream_readers.increment(1.0);
        let ended = feed(bus, since, events, metrics.clone()).await;
        metrics.stream_readers.decrement(1.0);
        tracing::debug!(?ended, "event stream reader ended");
    });
    let keep_alive = warp::sse::keep_alive().interval(app.config.consumers.stream_keepalive).text("keep-alive");
    let body = events_of(buffered, app.shutdown.subscribe());
    warp::sse::reply(keep_alive.stream(body)).into_response()
}

/// The buffered events as SSE events; ends when the loop ends and the buffer is drained, or at once when
/// the server stops (the reader resumes with its last id elsewhere).
fn events_of(
    buffered: mpsc::Receiver<StreamEvent>,
    phase: watch::Receiver<Phase>,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + Sync {
    stream::unfold((buffered, phase), |(mut buffered, mut phase)| async move {
        let event = tokio::select! {
            event = buffered.recv() => event?,
            _ = phase.wait_for(|p| *p != Phase::Running) => return None,
        };
        Some((Ok(encode(&event)), (buffered, phase)))
    })
}

/// `data:` of `event: message`, as the contract spells it.
#[derive(Serialize)]
struct Message<'a> {
    canvas: &'a str,
    epoch: &'a str,
    seq: u64,
    #[serde(rename = "type")]
    kind: &'a str,
    from: &'a str,
    data: &'a RawValue,
    ts: i64,
}

fn encode(event: &StreamEvent) -> Event {
    match event {
        StreamEvent::Gap { since, oldest } => {
            Event::default().event("gap").data(serde_json::json!({ "since": since, "oldest": oldest }).to_string())
        }
        StreamEvent::Entry { position, entry, epoch } if entry.is_reset() => Event::default()
            .id(position.as_str())
            .event("reset")
            .data(serde_json::json!({ "canvas": entry.canvas, "epoch": epoch }).to_string()),
        StreamEvent::Entry { position, entry, epoch } => {
            let stored = &*entry.data;
            // Data is stored canonical, with no raw line break; text an older build stored may have one, which
            // would end this `data:` line early for an EventSource (at a CR, an LF or both).
            let rewritten = without_whitespace(stored.get()).and_then(|text| RawValue::from_string(text).ok());
            let data = rewritten.as_deref().unwrap_or(stored);
            let message = Message {
                canvas: entry.canvas.as_str(),
                epoch,
                seq: entry.seq,
                kind: &entry.kind,
                from: &entry.from,
                data,
                ts: entry.ts,
            };
            let text = serde_json::to_string(&message).unwrap_or_default();
            Event::default().id(position.as_str()).event("message").data(text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::CanvasId;
    use crate::store::records::LogEntry;

    /// What an EventSource makes of one event's text: its `data:` lines, split where it splits lines.
    fn data_lines(event: &Event) -> Vec<String> {
        let text = event.to_string();
        let lines = text.split("\r\n").flat_map(|line| line.split(['\r', '\n']));
        lines.filter_map(|line| line.strip_prefix("data:")).map(str::to_owned).collect()
    }

    #[test]
    fn stored_data_with_raw_line_breaks_is_written_on_one_data_line_as_its_canonical_text() {
        let entry = |data: &str| StreamEvent::Entry {
            position: "7".into(),
            entry: LogEntry {
                canvas: CanvasId::parse("c1").unwrap(),
                generation: 1,
                seq: 3,
                kind: "note".into(),
                from: "ann".into(),
                data: RawValue::from_string(data.into()).unwrap(),
                ts: 5,
                id: 7,
                instance: "i1".into(),
                conn: None,
                reference: None,
                restore: false,
            },
            epoch: "e1".into(),
        };
        let expected = r#"{"canvas":"c1","epoch":"e1","seq":3,"type":"note","from":"ann","data":DATA,"ts":5}"#;
        for (stored, data) in [
            ("{\r\"a\":1}", r#"{"a":1}"#),
            ("{ \"a\" :\r\n[ 1.0 ,\n\"b\\r c\" ] }", r#"{"a":[1.0,"b\r c"]}"#),
            (r#"{"a":1}"#, r#"{"a":1}"#),
        ] {
            assert_eq!(data_lines(&encode(&entry(stored))), [expected.replace("DATA", data)], "{stored:?}");
        }
    }
}
