//! Hostile clients against a live server: data other parsers choke on, frames exactly at and one byte over
//! the size limit, one user opening a thousand canvases, a connection flood past `--max-connections`, and
//! slowloris handshakes. Each gets its documented answer, and a bystander on the same instance keeps getting
//! its acks while it happens. (Malformed UTF-8, bad frames, rate abuse and clients that never read are in
//! `bad_input.rs` and `resume.rs`.)

mod helpers;

use std::time::{Duration, Instant};

use helpers::{Client, SharedFile, WAIT};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// A bystander publishes and waits for its ack: the instance still serves others in bounded time.
async fn round_trip(bystander: &mut Client, n: u64) {
    let reference = format!("by-{n}");
    bystander.publish("note", json!(n), &reference).await;
    loop {
        let frame = bystander.recv().await;
        if frame["type"] == "ack" {
            assert_eq!(frame["ref"], reference.as_str());
            return;
        }
    }
}

#[tokio::test]
async fn data_other_parsers_cannot_read_is_refused_and_never_relayed() {
    let file = SharedFile::new();
    let a = file.start(&[]).await;
    let mut mallory = a.connect("poison", "mallory").await;
    let mut peer = a.connect("poison", "peer").await;
    mallory.skip_presence(peer.seq()).await;
    let deep = format!("{}0{}", "[".repeat(65), "]".repeat(65));
    for data in [deep.as_str(), "{\"x\":1e400}", "[-1e999]"] {
        mallory.send_text(format!(r#"{{"type":"object-create","data":{data},"ref":"p"}}"#)).await;
        let reply = mallory.recv().await;
        assert_eq!((reply["code"].as_str(), reply["ref"].as_str()), (Some("invalid_json"), Some("p")), "{data}");
        mallory.send_text(format!(r#"{{"type":"cursor","data":{data}}}"#)).await;
        assert_eq!(mallory.recv().await["code"], "invalid_json", "cursor {data}");
    }
    // The peer's next frame is the good message after them: nothing of the bad ones was relayed or logged.
    mallory.send_text(r#"{"type":"note","data":{"big":123456789012345678901234567890},"ref":"fine"}"#).await;
    let next = peer.recv().await;
    assert_eq!((next["seq"].as_u64(), next["type"].as_str()), (Some(peer.seq() + 1), Some("note")), "{next}");
    assert_eq!(file.count("SELECT count(*) FROM message_queue WHERE op = 1"), 0, "no object op was logged");
}

#[tokio::test]
async fn a_frame_exactly_at_the_size_limit_passes_and_one_byte_more_closes_with_1009() {
    let file = SharedFile::new();
    let a = file.start(&["--max-frame-size", "4096"]).await;
    let mut client = a.connect("limits", "mallory").await;
    let frame = |len: usize| {
        let envelope = r#"{"type":"note","data":"","ref":"at"}"#;
        format!(r#"{{"type":"note","data":"{}","ref":"at"}}"#, "x".repeat(len - envelope.len()))
    };
    client.send_text(frame(4096)).await;
    assert_eq!(client.recv().await["type"], "ack");
    client.send_text(frame(4097)).await;
    assert_eq!(client.recv_until_close().await.0, Some(1009));
}

#[tokio::test]
async fn one_user_opening_a_thousand_canvases_is_capped_per_user_with_429() {
    let file = SharedFile::new();
    let a = file.start(&["--max-connections-per-user", "20"]).await;
    let mut bystander = a.connect("calm", "bystander").await;
    let mut open = Vec::new();
    let mut refused = 0;
    for i in 0..1000 {
        match a.connect_path(&format!("/ws/canvas-{i}?user=greedy")).await {
            Ok(client) => open.push(client),
            Err((status, body)) => {
                assert_eq!(status, 429, "{body}");
                assert!(body["error"].as_str().unwrap().contains("--max-connections-per-user"), "{body}");
                refused += 1;
            }
        }
        if i % 250 == 0 {
            round_trip(&mut bystander, i).await;
        }
    }
    assert_eq!((open.len(), refused), (20, 980));
    // Other users are not affected, and a closed connection frees its place.
    a.connect("canvas-0", "someone-else").await;
    open.pop().unwrap().close().await;
    let again = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(client) = a.connect_path("/ws/canvas-again?user=greedy").await {
                return client;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    again.await.expect("the closed connection's place was not given back");
}

#[tokio::test]
async fn a_connection_flood_past_max_connections_gets_503_before_the_upgrade() {
    let file = SharedFile::new();
    let a = file.start(&["--max-connections", "30"]).await;
    let mut bystander = a.connect("flood", "bystander").await;
    let mut open = Vec::new();
    for i in 0..29 {
        open.push(a.connect("flood", &format!("u{i}")).await);
    }
    for i in 0..200 {
        let (status, body) =
            a.connect_path(&format!("/ws/flood?user=late{i}")).await.err().expect("admitted past the limit");
        assert_eq!(status, 503, "{body}");
        assert!(body["error"].as_str().unwrap().contains("--max-connections"), "{body}");
    }
    round_trip(&mut bystander, 1).await;
    let (status, health) = a.api("GET", "/health", None, Value::Null).await;
    assert_eq!((status, health["local_connections"].as_u64()), (200, Some(30)), "{health}");
    // The refused ones never joined: nobody saw them in presence.
    let presence: i64 = file.count("SELECT count(*) FROM message_queue WHERE sender LIKE 'late%'");
    assert_eq!(presence, 0);
}

/// Opens a connection that sends the start of a WebSocket upgrade and then one header byte every 200 ms, or
/// nothing at all; says on `open` when it has, and returns how long the connection lasted, from before the
/// connect to the server's close.
async fn slowloris(addr: std::net::SocketAddr, trickle: bool, open: mpsc::Sender<()>) -> Duration {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.expect("tcp connect");
    if trickle {
        stream.write_all(b"GET /ws/calm?user=slow HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n").await.unwrap();
    }
    open.send(()).await.expect("the test waits for every slow connection");
    let mut buf = [0u8; 512];
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => continue, // a 408 before the close is fine
            },
            _ = tokio::time::sleep(Duration::from_millis(200)), if trickle => {
                if stream.write_all(b"X").await.is_err() {
                    return started.elapsed();
                }
            }
        }
    }
}

/// Every slow handshake is cut by `--handshake-timeout 1s`: not before the second is up (measured from before
/// its connect, so never longer than the server's own count), and within a few seconds of it, well before the
/// 10 s default that a flag ignored would leave in place.
#[tokio::test]
async fn slowloris_handshakes_are_cut_at_the_handshake_timeout_while_others_are_served() {
    const SLOW: usize = 200;
    let file = SharedFile::new();
    let a = file.start(&["--handshake-timeout", "1s"]).await;
    let (open, mut opened) = mpsc::channel(SLOW);
    let slow: Vec<_> = (0..SLOW).map(|i| tokio::spawn(slowloris(a.addr, i % 2 == 0, open.clone()))).collect();
    for _ in 0..SLOW {
        tokio::time::timeout(WAIT, opened.recv()).await.expect("the slow connections opened");
    }
    // While they hold their sockets, a new client connects and is served.
    let mut bystander = a.connect("calm", "bystander").await;
    round_trip(&mut bystander, 1).await;
    for task in slow {
        let lasted = tokio::time::timeout(WAIT, task).await.expect("the server kept a slow handshake open").unwrap();
        assert!(lasted >= Duration::from_secs(1), "cut before the handshake timeout, after {lasted:?}");
        assert!(lasted < Duration::from_secs(5), "cut {lasted:?} after the connect, for a 1 s handshake timeout");
    }
    round_trip(&mut bystander, 2).await;
}
