//! Every bad input of the contract's "Other frames" and "Connecting" sections gets its documented answer,
//! and other clients of the same canvas carry on unaffected.

mod helpers;

use futures_util::SinkExt;
use helpers::SharedFile;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

async fn error_for(client: &mut helpers::Client, frame: &str) -> Value {
    client.send_text(frame).await;
    let reply = client.recv().await;
    assert_eq!(reply["type"], "error", "reply to {frame}: {reply}");
    assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()));
    reply
}

#[tokio::test]
async fn bad_frames_get_error_frames_and_the_connection_stays_open() {
    let file = SharedFile::new();
    let a = file.start(&[]).await;
    let mut bad = a.connect("bad", "mallory").await;
    let mut peer = a.connect("bad", "peer").await;
    bad.skip_presence(peer.seq()).await;
    let next = peer.seq() + 1;

    assert_eq!(error_for(&mut bad, "{not json").await["code"], "invalid_json");
    assert_eq!(error_for(&mut bad, "[1,2,3]").await["code"], "invalid_frame");
    assert_eq!(error_for(&mut bad, r#"{"data":1}"#).await["code"], "invalid_frame");
    let unknown = error_for(&mut bad, r#"{"type":"Not_A_Type","ref":"x1"}"#).await;
    assert_eq!((unknown["code"].as_str(), unknown["ref"].as_str()), (Some("unknown_type"), Some("x1")));
    for reserved in ["ack", "welcome", "error", "reset", "user-connected", "user-disconnected", "pong"] {
        let reply = error_for(&mut bad, &format!(r#"{{"type":"{reserved}","ref":"x2"}}"#)).await;
        assert_eq!((reply["code"].as_str(), reply["ref"].as_str()), (Some("unknown_type"), Some("x2")), "{reserved}");
    }
    let no_id = error_for(&mut bad, r#"{"type":"object-create","data":{"x":1},"ref":"x3"}"#).await;
    assert_eq!((no_id["code"].as_str(), no_id["ref"].as_str()), (Some("invalid_frame"), Some("x3")));
    bad.ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(bad.recv().await["code"], "invalid_frame");

    // Still open and working, and nothing bad was logged.
    bad.publish("note", json!("fine"), "ok").await;
    assert_eq!(bad.recv().await, json!({"type": "ack", "seq": next, "ref": "ok"}));
    let msg = peer.recv().await;
    assert_eq!(
        (msg["seq"].as_u64(), msg["data"].as_str()),
        (Some(next), Some("fine")),
        "the peer saw only the good one"
    );
    assert_eq!(file.count("SELECT count(*) FROM message_queue WHERE message_type = 'note'"), 1);
}

#[tokio::test]
async fn an_oversized_frame_closes_with_1009_and_spares_the_others() {
    let file = SharedFile::new();
    let a = file.start(&["--max-frame-size", "2048"]).await;
    let mut big = a.connect("big", "mallory").await;
    let mut peer = a.connect("big", "peer").await;
    let mut other = a.connect("big", "other").await;
    peer.skip_presence(other.seq()).await;
    big.publish("note", json!("x".repeat(4000)), "huge").await;
    let (code, _) = big.recv_until_close().await;
    assert_eq!(code, Some(1009));
    // Mallory's leaving is the next seq everyone sees: the oversized frame was never logged.
    // (Beside it, mallory's presence state going null: an ephemeral frame, before or after.)
    for client in [&mut peer, &mut other] {
        assert_eq!(client.recv_skipping("presence").await["type"], "user-disconnected");
    }
    // A frame just under the limit is fine.
    other.publish("note", json!("y".repeat(1900)), "near").await;
    assert_eq!(other.recv_skipping("presence").await["type"], "ack");
    let near = peer.recv_skipping("presence").await;
    assert_eq!((near["seq"].as_u64(), near["type"].as_str()), (Some(other.seq() + 2), Some("note")));
}

#[tokio::test]
async fn bad_connect_requests_get_http_errors_with_json_bodies() {
    let file = SharedFile::new();
    let a = file.start(&[]).await;
    let cases = [
        ("/ws/bad%20canvas?user=u", 400, "canvas"),
        (&format!("/ws/{}?user=u", "c".repeat(129)), 400, "canvas"),
        ("/ws/c1", 400, "user"),
        ("/ws/c1?user=bad/user", 400, "user"),
        ("/ws/c1?user=u&since=5", 400, "since and epoch"),
        ("/ws/c1?user=u&since=-1&epoch=e", 400, "since"),
        // Messages from `server` are the HTTP API's: no client may pass for it.
        ("/ws/c1?user=server", 400, "reserved"),
    ];
    for (path, status, mentions) in cases {
        let Err((got, body)) = a.connect_path(path).await else { panic!("{path} should be refused") };
        assert_eq!(got, status, "{path}");
        let error = body["error"].as_str().unwrap_or_else(|| panic!("{path}: JSON error body, got {body}"));
        assert!(error.contains(mentions), "{path}: {error}");
    }
    let (status, body) = a.get("/ws/c1?user=u").await;
    assert_eq!(status, 426, "a plain GET is not an upgrade: {body}");
    assert!(serde_json::from_str::<Value>(&body).unwrap()["error"].is_string());
}

#[tokio::test]
async fn a_client_over_its_rate_gets_rate_limited_then_4008_if_it_keeps_going() {
    let file = SharedFile::new();
    // One message a second, bursts of 5: the refill is negligible over this test.
    let a = file.start(&["--rate-limit", "1", "--rate-burst", "5"]).await;
    let mut flood = a.connect("rl", "flood").await;
    let mut peer = a.connect("rl", "peer").await;
    flood.skip_presence(peer.seq()).await;
    for n in 0..5 {
        flood.publish("note", json!(n), &format!("ok{n}")).await;
        assert_eq!(flood.recv().await["type"], "ack");
    }
    flood.publish("note", json!("too many"), "over1").await;
    let refused = flood.recv().await;
    assert_eq!((refused["code"].as_str(), refused["ref"].as_str()), (Some("rate_limited"), Some("over1")));
    flood.send(json!({"type": "cursor", "data": {"x": 1}})).await; // cursors are not limited
    for n in 2..=4 {
        flood.publish("note", json!(n), &format!("over{n}")).await;
        assert_eq!(flood.recv().await["code"], "rate_limited");
    }
    flood.publish("note", json!("fifth refusal"), "over5").await;
    let (code, _) = flood.recv_until_close().await;
    assert_eq!(code, Some(4008), "a burst's worth of refusals in a row closes the connection");
    let (seen, _) = peer.read_through(peer.seq() + 5).await;
    assert!(seen.iter().all(|(_, m)| m.data().is_number()), "the peer saw exactly the accepted messages");
    assert_eq!(peer.recv().await["type"], "cursor", "then the cursor, sent after them");
    assert_eq!(
        file.count("SELECT count(*) FROM message_queue WHERE message_type = 'note'"),
        5,
        "refused messages were not logged"
    );
}
