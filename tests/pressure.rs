//! Pressure from either side: a sender faster than the store gets TCP back-pressure and every ack, never a
//! 4009; a store that stops answering gets bounded errors (HTTP 503, `unavailable`) instead of hung
//! requests, and leaves no presence behind; a cursor flood neither cuts a slow reader nor delays the logged
//! messages it waits for, and its latest cursor always arrives.

#[macro_use]
mod helpers;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use helpers::{Client, Store, WAIT};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// The next text frame as JSON; panics on a close (with its code) or a silent end.
async fn next_json<S>(stream: &mut S) -> Value
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match tokio::time::timeout(WAIT, stream.next()).await.expect("a frame in time") {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
            Some(Ok(Message::Close(close))) => panic!("closed: {close:?}"),
            Some(Ok(_)) => continue,
            other => panic!("the socket ended: {other:?}"),
        }
    }
}

on_both_buses!(a_sender_faster_than_the_store_is_acked_in_full_and_never_cut);
async fn a_sender_faster_than_the_store_is_acked_in_full_and_never_cut(store: Store) {
    // A small client queue and writer queue: a group commit of this one client's messages used to push more
    // acks at once than its queue holds, and the server cut it with 4009 for its own slowness.
    let a = store
        .start(&["--rate-limit", "0", "--client-queue", "64", "--writer-queue", "64", "--max-in-flight", "32"])
        .await;
    let client = a.connect("flat", "fast").await;
    let first = client.seq() + 1;
    let (mut sink, mut stream) = client.ws.split();
    const COUNT: u64 = 20_000;
    let sending = tokio::spawn(async move {
        for n in 0..COUNT {
            let frame = json!({"type": "note", "data": n, "ref": n.to_string()});
            sink.send(Message::text(frame.to_string())).await.expect("send");
        }
        sink
    });
    for n in 0..COUNT {
        let frame = next_json(&mut stream).await;
        assert_eq!(
            (frame["type"].as_str(), frame["ref"].as_str()),
            (Some("ack"), Some(n.to_string().as_str())),
            "{frame}"
        );
        assert_eq!(frame["seq"], first + n, "acked in order, gap-free");
    }
    drop(sending.await.unwrap());
    assert_eq!(store.head("flat").await, first + COUNT - 1, "every message logged once");
}

on_both_buses!(a_store_that_stops_answering_gets_bounded_errors_and_leaves_no_presence);
async fn a_store_that_stops_answering_gets_bounded_errors_and_leaves_no_presence(store: Store) {
    let a = store.start(&["--publish-timeout", "1s", "--busy-timeout", "60s", "--api-key", "k"]).await;
    let mut ann = a.connect("stall", "ann").await;
    let stall = store.stall();
    let started = Instant::now();
    let body = json!({"type": "note", "data": "api"});
    let (status, answer) = a.api("POST", "/api/v1/canvases/stall/messages", Some("k"), body).await;
    assert_eq!(status, 503, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("--publish-timeout"), "{answer}");
    let refused = a.connect_path("/ws/stall?user=bob").await.err().expect("no join while the store is silent");
    assert_eq!(refused.0, 503, "{refused:?}");
    assert!(started.elapsed() < WAIT, "answered, not hung");
    ann.publish("note", json!("socket"), "s").await;
    drop(stall);
    // The socket's message was taken while the store was silent: it is acked once the store answers.
    loop {
        let frame = ann.recv().await;
        if frame["ref"] == "s" {
            assert_eq!(frame["type"], "ack", "{frame}");
            break;
        }
    }
    // The refused join left nothing behind, even where its registration was applied late.
    tokio::time::timeout(WAIT, async {
        while store.connections().await != 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("only ann is present");
}

on_both_buses!(a_cursor_flood_neither_cuts_a_slow_reader_nor_delays_its_logged_messages);
async fn a_cursor_flood_neither_cuts_a_slow_reader_nor_delays_its_logged_messages(store: Store) {
    let a = store.start(&[]).await;
    let b = store.start(&[]).await;
    let mut readers = vec![a.connect("flood", "near").await, b.connect("flood", "far").await];
    let flooder = a.connect("flood", "flooder").await;
    let mut publisher = b.connect("flood", "publisher").await;
    let flooder_conn = flooder.welcome["connection"].clone();
    let head = publisher.seq();
    for reader in &mut readers {
        reader.skip_presence(head).await;
    }
    // The readers read nothing while 20,000 cursors come in as fast as a socket takes them.
    let (mut sink, _stream) = flooder.ws.split();
    const LAST: u64 = 19_999;
    for x in 0..=LAST {
        sink.send(Message::text(json!({"type": "cursor", "data": {"x": x}}).to_string())).await.unwrap();
    }
    publisher.publish("note", json!("after the flood"), "n").await;
    while publisher.recv().await["type"] != "ack" {} // the publisher sees the cursors too
    for reader in &mut readers {
        // Cursors are paced to 60/s per sender and coalesced per receiver: few frames stand before the note.
        let mut before = 0;
        loop {
            let frame = reader.recv().await;
            if frame["type"] == "note" {
                break;
            }
            assert_eq!(frame["type"], "cursor", "{frame}");
            before += 1;
        }
        assert!(before < 200, "{before} frames before the logged message");
        // And the flood's latest cursor arrives, whatever was skipped.
        loop {
            let frame = reader.recv().await;
            assert_eq!((frame["type"].as_str(), &frame["connection"]), (Some("cursor"), &flooder_conn));
            if frame["data"]["x"] == LAST {
                break;
            }
        }
    }
    let cut = a.metric(r#"relay_clients_cut_total{reason="slow"}"#).await
        + b.metric(r#"relay_clients_cut_total{reason="slow"}"#).await;
    assert_eq!(cut, 0.0, "nobody was cut");
    drop(Client::connect_url(a.url("/ws/flood?user=check")).await.expect("the instance still serves"));
}

on_both_buses!(cursors_a_reader_does_not_take_are_replaced_counted_for_its_canvas_and_never_cut_it);
/// With pacing off, a sender's cursors outrun a reader that reads nothing: once its socket is full, each new
/// cursor replaces the one still waiting for it. The misses are counted, under the canvas, and the reader is
/// not cut; when it reads again, the flood's latest cursor is there.
async fn cursors_a_reader_does_not_take_are_replaced_counted_for_its_canvas_and_never_cut_it(store: Store) {
    let a = store.start(&["--max-cursor-rate", "0"]).await;
    let mut reader = a.connect("drops", "reader").await;
    let flooder = a.connect("drops", "flooder").await;
    reader.skip_presence(flooder.seq()).await;
    let (mut sink, _stream) = flooder.ws.split();
    // 4,000 cursors of 16 KB: 64 MB, far past what the sockets between them buffer.
    let pad = "x".repeat(16 * 1024);
    const LAST: u64 = 3_999;
    for x in 0..=LAST {
        sink.send(Message::text(json!({"type": "cursor", "data": {"x": x, "pad": pad}}).to_string())).await.unwrap();
    }
    loop {
        let frame = reader.recv().await;
        assert_eq!(frame["type"], "cursor", "{frame}");
        if frame["data"]["x"] == LAST {
            break;
        }
    }
    // The latest arrived, so every cursor has been handled: the counts are final.
    let (_, metrics) = a.get("/metrics").await;
    let value = |series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let missed = value(r#"relay_canvas_outbox_drops_total{canvas="drops",lane="ephemeral"}"#);
    assert!(missed > 0.0, "a reader that read nothing missed no cursor");
    assert_eq!(value("relay_ephemeral_missed_total"), missed, "all of them on this canvas");
    assert_eq!(a.metric(r#"relay_clients_cut_total{reason="slow"}"#).await, 0.0);
}
