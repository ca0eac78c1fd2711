//! Canonical data (v1.2): `data` sent with whitespace between its tokens (CR, LF, CRLF, tab, spaces), by a
//! client or through the HTTP API, is stored and relayed as one text, its canonical form: the whitespace
//! gone, nothing else changed (member order, numbers as written, strings with their own whitespace and
//! escapes). Checked on the raw text of every place it reaches, on both buses: the relay to other clients
//! (logged, cursor, presence state, event; user messages and broadcasts), `GET .../messages`, a welcome's
//! objects, the event stream read as an EventSource reads it (a CR ends a line there), and a webhook body.

#[macro_use]
mod helpers;

use futures_util::StreamExt;
use helpers::receiver::Receiver;
use helpers::sse::EventStream;
use helpers::{eventually, Client, Store, WAIT};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "canonical-key";

/// A note's data as sent: whitespace of every kind between tokens, members not in name order, numbers
/// written as `1.0` and `1e2`, a string holding spaces and the escapes `\r\n\t`.
const NOTE_SENT: &str = "{\r\"z\" :\t1.0,\n\"a\" : [ 1e2 ,\r\n-0.0 , \"x \\r\\n\\t  y\" ] ,\"m\":{ \"k\" : [ ] } }";
/// ... and as it is kept.
const NOTE: &str = r#"{"z":1.0,"a":[1e2,-0.0,"x \r\n\t  y"],"m":{"k":[]}}"#;
/// An object created with whitespace (its members in name order: a canvas state's order on either store).
const OBJECT_SENT: &str = "{ \"e\" :\r1e2 ,\n\"id\" : \"o1\" ,\t\"n\":1.0 }";
const OBJECT: &str = r#"{"e":1e2,"id":"o1","n":1.0}"#;

/// The next text frame of `client` whose type is `kind`, as the server wrote it.
async fn raw_frame(client: &mut Client, kind: &str) -> String {
    loop {
        let next = tokio::time::timeout(WAIT, client.ws.next()).await.expect("no frame in time");
        if let Message::Text(text) = next.expect("socket ended").expect("socket error") {
            let frame: Value = serde_json::from_str(&text).expect("server sent invalid JSON");
            if frame["type"] == kind {
                return text.as_str().to_owned();
            }
        }
    }
}

/// Asserts that `text` carries `data` as its `"data"`, byte for byte.
fn carries(text: &str, data: &str, what: &str) {
    assert!(text.contains(&format!(r#""data":{data}"#)), "{what} does not carry {data}: {text}");
}

on_both_buses!(data_sent_with_whitespace_is_stored_and_relayed_as_one_canonical_text);
async fn data_sent_with_whitespace_is_stored_and_relayed_as_one_canonical_text(store: Store) {
    let receiver = Receiver::start().await;
    let args = receiver.relay_args(&["--api-key", KEY]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (a, b) = (store.start(&args).await, store.start(&["--api-key", KEY]).await);
    let mut stream = EventStream::open(a.addr, "", Some(KEY), None).await.expect("the stream opens");
    let mut ann = a.connect("c1", "ann").await;
    let mut bob = b.connect("c1", "bob").await;
    let mut cat = a.connect("c1", "cat").await;

    ann.send_text(format!(r#"{{"type":"note","data":{NOTE_SENT},"ref":"n"}}"#)).await;
    ann.send_text(format!(r#"{{"type":"object-create","data":{OBJECT_SENT},"ref":"o"}}"#)).await;
    for reference in ["n", "o"] {
        let ack: Value = serde_json::from_str(&raw_frame(&mut ann, "ack").await).unwrap();
        assert_eq!(ack["ref"], reference, "{ack}");
    }
    carries(&raw_frame(&mut bob, "note").await, NOTE, "the note relayed to another instance");
    carries(&raw_frame(&mut bob, "object-create").await, OBJECT, "the create relayed to another instance");

    // Ephemeral data, relayed at once to a client of the same instance.
    ann.send_text(format!(r#"{{"type":"cursor","data":{NOTE_SENT}}}"#)).await;
    carries(&raw_frame(&mut cat, "cursor").await, NOTE, "a cursor");
    ann.send_text(format!(r#"{{"type":"presence","data":{NOTE_SENT}}}"#)).await;
    carries(&raw_frame(&mut cat, "presence").await, NOTE, "a presence state");
    ann.send_text(format!(r#"{{"type":"poke","ephemeral":true,"data":{NOTE_SENT}}}"#)).await;
    carries(&raw_frame(&mut cat, "poke").await, NOTE, "an ephemeral event");

    // The HTTP API's bodies.
    let body = |kind: &str| format!("{{ \"type\" : \"{kind}\" ,\r\n \"data\" :\t{NOTE_SENT} }}");
    let (status, _) = a.http("POST", "/api/v1/canvases/c1/messages", Some(KEY), &body("api-note")).await;
    assert_eq!(status, 201);
    carries(&raw_frame(&mut bob, "api-note").await, NOTE, "a message published through the API");
    let (status, _) = a.http("POST", "/api/v1/users/bob/messages", Some(KEY), &body("hello")).await;
    assert_eq!(status, 202);
    carries(&raw_frame(&mut bob, "hello").await, NOTE, "a user message");
    let (status, _) = a.http("POST", "/api/v1/broadcast", Some(KEY), &body("news")).await;
    assert_eq!(status, 202);
    carries(&raw_frame(&mut bob, "news").await, NOTE, "a broadcast");

    let (status, log) = b.http("GET", "/api/v1/canvases/c1/messages?since=0", Some(KEY), "").await;
    assert_eq!(status, 200);
    for data in [NOTE, OBJECT] {
        assert_eq!(log.matches(&format!(r#""data":{data}"#)).count(), if data == NOTE { 2 } else { 1 }, "{log}");
    }
    let (welcomed, _) = tokio_tungstenite::connect_async(b.url("/ws/c1?user=dan")).await.expect("dan connects");
    let mut dan = Client { ws: welcomed, welcome: Value::Null };
    let welcome = raw_frame(&mut dan, "welcome").await;
    assert!(welcome.contains(&format!(r#""objects":{{"o1":{OBJECT}}}"#)), "a welcome's objects: {welcome}");

    stream_carries_canonical_data(&mut stream).await;
    eventually("the webhook to deliver the three messages", || async {
        let bodies: String = receiver.of("c1").iter().map(|delivery| delivery.raw.clone()).collect();
        bodies.matches(&format!(r#""data":{NOTE}"#)).count() == 2 && bodies.contains(&format!(r#""data":{OBJECT}"#))
    })
    .await;
}

/// The stream, read as an EventSource reads it, has the note, the create and the API's note of `c1` each
/// as one whole event with its canonical data.
async fn stream_carries_canonical_data(stream: &mut EventStream) {
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = stream.next_event().await.expect("the stream goes on");
        let message = event.json();
        let data = match message["type"].as_str() {
            Some("note" | "api-note") => NOTE,
            Some("object-create") => OBJECT,
            _ => continue,
        };
        carries(&event.data, data, "a stream event");
        seen.push(message["seq"].clone());
    }
}
