//! `GET /api/v1/stream` against real relays on both buses: every logged message of every canvas once, in
//! seq order per canvas, across a drop and a resume on another instance; `gap` for a position the log no
//! longer holds; `reset`; the API key; a position that is not one; a reader too slow for its buffer, cut
//! and resumed; the keep-alive comment; SIGTERM with a reader that reads nothing.

#[macro_use]
mod helpers;

use std::collections::{BTreeMap, HashSet};

use helpers::receiver::{Answer, Receiver};
use helpers::sse::{EventStream, Item};
use helpers::{eventually, Instance, Store};
use serde_json::{json, Value};

const KEY: &str = "stream-key";

/// Logs one message through the API and returns its seq.
async fn post(instance: &Instance, canvas: &str, kind: &str, data: Value) -> u64 {
    let path = format!("/api/v1/canvases/{canvas}/messages");
    let (status, body) = instance.api("POST", &path, Some(KEY), json!({"type": kind, "data": data})).await;
    assert_eq!(status, 201, "{body}");
    body["seq"].as_u64().unwrap()
}

async fn open(instance: &Instance, query: &str, last_event_id: Option<&str>) -> EventStream {
    EventStream::open(instance.addr, query, Some(KEY), last_event_id).await.expect("the stream opens")
}

/// Messages from two instances to three canvases; the stream is read from one instance, dropped part-way,
/// and resumed with `Last-Event-ID` on the other after more was written (the URL still says `since=0`, as
/// an EventSource's reconnect does: the header wins): together the two readings hold every message once,
/// each canvas in seq order, with the data as logged.
async fn a_stream_resumed_on_another_instance_has_no_gap_and_no_repeat(store: Store) {
    let a = store.start(&["--api-key", KEY]).await;
    let b = store.start(&["--api-key", KEY]).await;
    let canvases = ["c1", "c2", "c3"];
    let mut written = BTreeMap::new(); // (canvas, seq) -> data
    for i in 0..30u64 {
        let (canvas, instance) = (canvases[i as usize % 3], if i % 2 == 0 { &a } else { &b });
        let seq = post(instance, canvas, "object-create", json!({"id": format!("o{i}")})).await;
        written.insert((canvas.to_owned(), seq), json!({"id": format!("o{i}")}));
    }
    let mut first = open(&a, "?since=0", None).await;
    assert_eq!(first.content_type.as_deref(), Some("text/event-stream"));
    let read_first = first.events(13).await;
    drop(first);
    let last_id = read_first.last().unwrap().id.clone().expect("every message has an id");
    for i in 30..60u64 {
        let (canvas, instance) = (canvases[i as usize % 3], if i % 2 == 0 { &b } else { &a });
        let seq = post(instance, canvas, "object-create", json!({"id": format!("o{i}")})).await;
        written.insert((canvas.to_owned(), seq), json!({"id": format!("o{i}")}));
    }
    let mut second = open(&b, "?since=0", Some(&last_id)).await;
    let read_second = second.events(60 - 13).await;

    let mut seen = BTreeMap::new();
    let mut last_seq: BTreeMap<String, u64> = BTreeMap::new();
    let mut ids = HashSet::new();
    for event in read_first.iter().chain(&read_second) {
        assert_eq!(event.event, "message", "{event:?}");
        assert!(ids.insert(event.id.clone().unwrap()), "a position twice: {event:?}");
        let message = event.json();
        let canvas = message["canvas"].as_str().unwrap().to_owned();
        let seq = message["seq"].as_u64().unwrap();
        let previous = last_seq.insert(canvas.clone(), seq).unwrap_or(0);
        assert_eq!(seq, previous + 1, "{canvas}: seq {seq} after {previous}");
        assert_eq!(message["type"], "object-create");
        assert!(message["epoch"].is_string() && message["from"].is_string() && message["ts"].is_i64(), "{message}");
        assert!(seen.insert((canvas, seq), message["data"].clone()).is_none());
    }
    assert_eq!(seen, written);
}

/// A position whose messages the TTL has dropped gets `gap` first (naming it and the oldest retained one),
/// then the retained messages; a position at or past the head gets nothing until the next commit.
async fn a_position_older_than_the_log_gets_a_gap(store: Store) {
    let a = store.start(&["--api-key", KEY, "--message-ttl", "1s", "--cleanup-interval", "100ms"]).await;
    for i in 0..5 {
        post(&a, "old", "object-create", json!({"id": format!("o{i}")})).await;
    }
    eventually("cleanup to drop the expired messages", || async { store.logged("old").await.is_empty() }).await;
    let seq = post(&a, "old", "comment", json!({"text": "after"})).await;
    // The log of every canvas may drop them a moment later than the canvas's own (Redis trims it lazily).
    eventually("the stream to have dropped them", || async {
        open(&a, "?since=0", None).await.next_event().await.unwrap().event == "gap"
    })
    .await;
    let mut stream = open(&a, "?since=0", None).await;
    let gap = stream.next_event().await.unwrap();
    assert_eq!(gap.event, "gap", "{gap:?}");
    let message = stream.next_event().await.unwrap();
    assert_eq!((message.event.as_str(), message.json()["seq"].as_u64()), ("message", Some(seq)));
    assert_eq!(gap.json(), json!({"since": "0", "oldest": message.id.clone().unwrap()}));

    // From the last position: nothing old again, only what comes next.
    let mut resumed = open(&a, "", message.id.as_deref()).await;
    post(&a, "old", "comment", json!({"text": "next"})).await;
    let next = resumed.next_event().await.unwrap();
    assert_eq!((next.event.as_str(), next.json()["data"]["text"].as_str()), ("message", Some("next")));
}

/// With a webhook, cleanup deletes out of commit order: a canvas whose receiver keeps failing has its rows
/// kept past the TTL, while the rows of a delivered canvas committed after them go. A position before all
/// that gets `gap` naming the first message after everything dropped, not the kept row (after which the
/// dropped ones would be missing without a word), and then that message.
async fn a_gap_is_after_every_dropped_message_when_cleanup_kept_older_ones(store: Store) {
    let receiver = Receiver::start().await;
    receiver.answer_for("held", Answer::Status(500));
    let args = receiver.relay_args(&["--api-key", KEY, "--message-ttl", "1s", "--cleanup-interval", "100ms"]);
    let a = store.start(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    post(&a, "held", "comment", json!({"text": "kept for the webhook"})).await;
    for i in 0..3 {
        post(&a, "free", "comment", json!({"i": i})).await;
    }
    eventually("the delivered rows to be dropped", || async { store.logged("free").await.is_empty() }).await;
    assert_eq!(store.logged("held").await.len(), 1, "the undelivered row is kept");
    let seq = post(&a, "after", "comment", json!({"text": "next"})).await;
    eventually("the stream to report the gap", || async {
        open(&a, "?since=0", None).await.next_event().await.unwrap().event == "gap"
    })
    .await;
    let mut stream = open(&a, "?since=0", None).await;
    let gap = stream.next_event().await.unwrap();
    let next = stream.next_event().await.unwrap();
    assert_eq!((next.json()["canvas"].as_str(), next.json()["seq"].as_u64()), (Some("after"), Some(seq)), "{next:?}");
    assert_eq!(gap.json()["oldest"].as_str(), next.id.as_deref(), "{gap:?}");
}

/// Without `since` the stream starts at the head as of the request's answer; a DELETE of a canvas is
/// `reset` with the new epoch, after a message logged just before it (a reset drops the canvas's log for
/// clients, not from the stream), and the canvas's next message carries that epoch and seq 1.
async fn a_reset_is_an_event_and_a_stream_without_since_starts_at_the_head(store: Store) {
    let a = store.start(&["--api-key", KEY]).await;
    post(&a, "r", "comment", json!({"text": "before the reader"})).await;
    let mut stream = open(&a, "", None).await;
    let first = post(&a, "r", "comment", json!({"text": "one"})).await;
    let (status, reset_answer) = a.api("DELETE", "/api/v1/canvases/r", Some(KEY), Value::Null).await;
    assert_eq!(status, 200, "{reset_answer}");
    post(&a, "r", "comment", json!({"text": "two"})).await;
    let events = stream.events(3).await;
    assert_eq!((events[0].event.as_str(), events[0].json()["seq"].as_u64()), ("message", Some(first)));
    assert_eq!(events[1].event, "reset");
    let reset = events[1].json();
    assert_eq!(reset["canvas"], "r");
    assert_eq!(reset["epoch"], reset_answer["epoch"]);
    assert_ne!(reset["epoch"], events[0].json()["epoch"], "a reset starts a new epoch");
    let after = events[2].json();
    assert_eq!((after["seq"].as_u64(), &after["epoch"]), (Some(1), &reset["epoch"]));
    assert!(events.iter().all(|e| e.id.is_some()), "{events:?}");
}

/// The stream is behind the API key like the rest of the API, on every instance and with either way of
/// naming a position; a position that is not one is 400 with a JSON body.
async fn the_stream_needs_the_api_key_and_a_real_position(store: Store) {
    let a = store.start(&["--api-key", KEY]).await;
    let b = store.start(&["--api-key", KEY]).await;
    let without = store.start(&[]).await;
    for instance in [&a, &b] {
        for (key, last_event_id) in [(None, None), (Some("wrong"), None), (None, Some("0")), (Some("wrong"), Some("0"))]
        {
            let (status, body) = EventStream::open(instance.addr, "?since=0", key, last_event_id).await.err().unwrap();
            assert_eq!(status, 401, "{body}");
            assert!(serde_json::from_str::<Value>(&body).unwrap()["error"].is_string(), "{body}");
        }
        for (query, last_event_id) in [("?since=garbage", None), ("", Some("12abc")), ("?since=", None)] {
            let refused = EventStream::open(instance.addr, query, Some(KEY), last_event_id).await;
            let (status, body) = refused.err().unwrap();
            assert_eq!(status, 400, "{query} {last_event_id:?}: {body}");
            let body: Value = serde_json::from_str(&body).unwrap();
            assert!(body["error"].as_str().unwrap().contains("not a stream position"), "{body}");
        }
    }
    let (status, body) = EventStream::open(without.addr, "", Some(KEY), None).await.err().unwrap();
    assert_eq!(status, 403, "an instance without --api-key has no API: {body}");
}

/// A reader that does not read while much is logged fills its buffer (`--stream-buffer 16`) and is cut
/// off: its stream ends before the head. Resuming from the last id it got, again and again as a reader
/// does (each resumed reader, offered the backlog a page at a time, may be cut again), yields the rest:
/// every message once, in order, and every resumed stream makes progress.
async fn a_reader_too_slow_for_its_buffer_is_cut_off_and_resumes(store: Store) {
    let a = store.start(&["--api-key", KEY, "--stream-buffer", "16"]).await;
    let window = Some(4096); // a small receive window, so the server's socket fills soon
    let mut slow = EventStream::open_with_window(a.addr, "", Some(KEY), None, window).await.unwrap();
    eventually("the relay to count the reader", || async { a.metric("relay_stream_readers").await == 1.0 }).await;
    let payload = "x".repeat(8 * 1024);
    let total = 600;
    for i in 0..total {
        post(&a, "busy", "comment", json!({"i": i, "pad": payload})).await;
    }
    eventually("the relay to count the slow reader gone", || async { a.metric("relay_stream_readers").await == 0.0 })
        .await;
    let (mut seqs, mut last_id) = (Vec::new(), None);
    read_until(&mut slow, &mut seqs, &mut last_id, total).await;
    assert!(seqs.len() < total, "the slow reader was cut off before the head");
    while seqs.len() < total {
        let before = seqs.len();
        let mut resumed = open(&a, "", last_id.as_deref()).await;
        if read_until(&mut resumed, &mut seqs, &mut last_id, total).await {
            break;
        }
        assert!(seqs.len() > before, "a resumed stream ended without an event");
    }
    assert_eq!(seqs, (1..=total as u64).collect::<Vec<_>>());
}

/// Reads `stream` until it ends (false), noting each message's seq and the last id, or until `total` seqs
/// are noted (true): a reader that caught up to the head is not cut, and its stream stays open.
async fn read_until(stream: &mut EventStream, seqs: &mut Vec<u64>, last_id: &mut Option<String>, total: usize) -> bool {
    while seqs.len() < total {
        match stream.next().await {
            Some(Item::Event(event)) => {
                seqs.push(event.json()["seq"].as_u64().unwrap());
                *last_id = event.id;
            }
            Some(Item::Comment(_)) => {}
            None => return false,
        }
    }
    true
}

/// An idle stream gets a keep-alive comment every `--stream-keepalive`, and events still follow.
async fn an_idle_stream_gets_keep_alive_comments(store: Store) {
    let a = store.start(&["--api-key", KEY, "--stream-keepalive", "200ms"]).await;
    let mut stream = open(&a, "", None).await;
    for _ in 0..2 {
        assert_eq!(stream.next().await, Some(Item::Comment("keep-alive".into())));
    }
    let seq = post(&a, "quiet", "comment", json!({})).await;
    assert_eq!(stream.next_event().await.unwrap().json()["seq"].as_u64(), Some(seq));
}

/// SIGTERM with two readers, one at the head and one that reads nothing while its socket and buffer are
/// full: both streams end and the process exits 0 within `--shutdown-timeout`, nothing left hanging.
async fn sigterm_ends_every_stream_even_one_nobody_reads(store: Store) {
    let mut a = store.start(&["--api-key", KEY, "--shutdown-timeout", "2s", "--stream-buffer", "200"]).await;
    let mut reading = open(&a, "", None).await;
    let stuck = EventStream::open_with_window(a.addr, "", Some(KEY), None, Some(4096)).await.unwrap();
    let payload = "x".repeat(8 * 1024);
    // More than the stuck reader's socket holds: the server's write to it blocks.
    for i in 0..600 {
        post(&a, "busy", "comment", json!({"i": i, "pad": payload})).await;
    }
    assert_eq!(reading.events(600).await.len(), 600);
    a.signal("TERM");
    assert_eq!(a.wait().await, Some(0), "{}", a.log_text());
    assert!(reading.next().await.is_none(), "the stream ended with the process");
    drop(stuck);
}

on_both_buses!(
    a_stream_resumed_on_another_instance_has_no_gap_and_no_repeat,
    a_position_older_than_the_log_gets_a_gap,
    a_gap_is_after_every_dropped_message_when_cleanup_kept_older_ones,
    a_reset_is_an_event_and_a_stream_without_since_starts_at_the_head,
    the_stream_needs_the_api_key_and_a_real_position,
    a_reader_too_slow_for_its_buffer_is_cut_off_and_resumes,
    an_idle_stream_gets_keep_alive_comments,
    sigterm_ends_every_stream_even_one_nobody_reads,
);
