//! Upgrading a Redis written by an earlier build: the keys of its layout are written here directly, as that
//! build left them, and a relay of this build opens the store at start (key layout 4) and gives the same
//! state and answers: epoch, seqs, objects, presence with its names, resume, idempotency keys, the index of
//! canvases, and the connections of an instance that then dies.

#[macro_use]
mod helpers;

use std::collections::HashMap;

use helpers::{eventually, RedisServer};
use serde_json::{json, Value};

const FAST: [&str; 6] = ["--heartbeat-interval", "100ms", "--presence-timeout", "1s", "--api-key", "k"];

/// Redis's clock (ms), which stamps a layout's entries as that build's scripts did.
async fn redis_now(conn: &mut redis::aio::MultiplexedConnection) -> i64 {
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(conn).await.unwrap();
    secs * 1000 + micros / 1000
}

/// A Redis written by the first Redis bus (objects as field hashes only, an `ids` set) is converted at start:
/// joiners get the same state, and updates merge into it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_the_first_layout_is_converted_at_start() {
    let Some(redis) = RedisServer::start(false).await else { return };
    let mut conn = redis.connection().await;
    let () = redis::pipe()
        .cmd("SET")
        .arg("relay:epoch")
        .arg("old-store")
        .ignore()
        .cmd("HSET")
        .arg("relay:{v1}:head")
        .arg("seq")
        .arg(3)
        .arg("gen")
        .arg(4)
        .ignore()
        .cmd("SADD")
        .arg("relay:{v1}:ids")
        .arg("o1")
        .arg("o/2")
        .ignore()
        .cmd("HSET")
        .arg("relay:{v1}:o:o1")
        .arg("id")
        .arg("\"o1\"")
        .arg("x")
        .arg("1.5e-300")
        .ignore()
        .cmd("HSET")
        .arg("relay:{v1}:o:o/2")
        .arg("id")
        .arg("\"o/2\"")
        .arg("tags")
        .arg("[]")
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    let a = helpers::Instance::start_on_redis(&redis.url(), &["--api-key", "k"]).await;
    let mut ann = a.connect("v1", "ann").await;
    assert_eq!(ann.epoch(), "old-store-4", "the epoch is kept: clients resume across the upgrade");
    let expected = json!({"o1": {"id": "o1", "x": 1.5e-300}, "o/2": {"id": "o/2", "tags": []}});
    assert_eq!(ann.welcome["objects"], expected);
    ann.publish("object-update", json!({"id": "o1", "y": 2}), "u").await;
    assert_eq!(ann.recv().await["type"], "ack");
    let bob = a.connect("v1", "bob").await;
    assert_eq!(bob.welcome["objects"]["o1"], json!({"id": "o1", "x": 1.5e-300, "y": 2}));
    let format: String = redis::cmd("GET").arg("relay:format").query_async(&mut conn).await.unwrap();
    assert_eq!(format, "4");
    // The index of canvases holds the canvas from before; an entry whose head is gone is not listed, and
    // leaves the index.
    let () = redis::cmd("ZADD").arg("relay:canvases").arg(0).arg("gone").query_async(&mut conn).await.unwrap();
    let (status, page) = a.api("GET", "/api/v1/canvases", Some("k"), json!(null)).await;
    assert_eq!(status, 200);
    let listed: Vec<&str> =
        page["canvases"].as_array().unwrap().iter().map(|c| c["canvas"].as_str().unwrap()).collect();
    assert_eq!(listed, ["v1"]);
    let score: Option<f64> =
        redis::cmd("ZSCORE").arg("relay:canvases").arg("gone").query_async(&mut conn).await.unwrap();
    assert_eq!(score, None);
}

/// The next frame of `client` that answers `reference` (an ack or an error).
async fn answer(client: &mut helpers::Client, reference: &str) -> Value {
    loop {
        let frame = client.recv().await;
        if frame["ref"] == reference {
            return frame;
        }
    }
}

/// Writes canvas `v3` as layout 3 left it: seqs 1-5 of generation 7 (ann's user-connected, two creates, an
/// update, a note logged under an idempotency key), the objects hash and a field hash per object, ann
/// connected (named Ann) through instance `old-i`, and every index layout 3 kept.
async fn write_layout_3(conn: &mut redis::aio::MultiplexedConnection, now: i64) {
    let c1 = "0b4c3f5e-1111-4222-8333-944455566677";
    let entries: [(&str, &str, &str); 5] = [
        ("user-connected", "ann", "null"),
        ("object-create", "ann", r#"{"id":"o1","x":1.5e-300}"#),
        ("object-create", "ann", r#"{"id":"o2","tags":[]}"#),
        ("object-update", "ann", r#"{"id":"o1","y":2}"#),
        ("note", "ann", r#""once""#),
    ];
    let mut pipe = redis::pipe();
    pipe.set("relay:epoch", "old-store").ignore().set("relay:format", 3).ignore().set("relay:generations", 7).ignore();
    pipe.set("relay:writes", 5).ignore();
    for (seq, (kind, from, data)) in entries.iter().enumerate() {
        let seq = (seq + 1).to_string();
        let fields = [("ts", now.to_string()), ("s", seq.clone()), ("t", kind.to_string())];
        let fields = [&fields[..], &[("f", from.to_string()), ("d", data.to_string()), ("i", "old-i".into())]].concat();
        let fields = [&fields[..], &[("c", String::new()), ("r", String::new())]].concat();
        pipe.xadd("relay:{v3}:log", format!("8-{seq}"), &fields).ignore();
    }
    pipe.pexpire("relay:{v3}:log", 60_000).ignore();
    let objects = [("o1", r#"{"id":"o1","x":1.5e-300,"y":2}"#), ("o2", r#"{"id":"o2","tags":[]}"#)];
    pipe.hset_multiple("relay:{v3}:objects", &objects).ignore();
    pipe.hset_multiple("relay:{v3}:o:o1", &[("\"id\"", "\"o1\""), ("\"x\"", "1.5e-300"), ("\"y\"", "2")]).ignore();
    pipe.hset_multiple("relay:{v3}:o:o2", &[("\"id\"", "\"o2\""), ("\"tags\"", "[]")]).ignore();
    let head = [("seq", "5"), ("gen", "7"), ("bytes", "56"), ("oseq", "4")];
    pipe.hset_multiple("relay:{v3}:head", &head).ignore();
    pipe.zadd("relay:canvases", "v3", 0).ignore();
    pipe.cmd("SET").arg("relay:{v3}:idem:7:3:ann:k1").arg(5).arg("PX").arg(60_000).ignore();
    pipe.hset("relay:{v3}:conns", c1, "old-i").ignore().hset("relay:{v3}:peers", c1, "ann\n=Ann").ignore();
    pipe.hset("relay:{v3}:names", "ann", "Ann").ignore().hset("relay:{v3}:users", "ann", 1).ignore();
    pipe.hset("relay:users", "ann", 1).ignore().hset("relay:u:ann", "v3", 1).ignore();
    pipe.hset("relay:i:old-i:conns", c1, "v3\nann\n=Ann").ignore().hset("relay:instances", "old-i", now).ignore();
    pipe.set("relay:i:old-i:batch", "9 x").ignore();
    let () = pipe.query_async(conn).await.unwrap();
}

/// A Redis of layout 3 (objects in a hash of JSON texts, presence in `conns`, `peers` and `names`) opened by
/// this build: the same epoch and seqs, the same objects, ann still present under her name, a resume
/// across the upgrade, a repeated idempotency key answered with its original seq, and ann's connection
/// expired once its instance is dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_layout_3_is_converted_at_start_and_gives_the_same_state_and_answers() {
    let Some(redis) = RedisServer::start(false).await else { return };
    let mut conn = redis.connection().await;
    let now = redis_now(&mut conn).await;
    write_layout_3(&mut conn, now).await;
    let a = helpers::Instance::start_on_redis(&redis.url(), &FAST).await;
    let bob = a.connect("v3", "bob").await;
    assert_eq!((bob.epoch().as_str(), bob.seq()), ("old-store-7", 6), "the epoch and the seqs go on");
    assert_eq!(
        bob.welcome["objects"],
        json!({"o1": {"id": "o1", "x": 1.5e-300, "y": 2}, "o2": {"id": "o2", "tags": []}})
    );
    let presence: HashMap<String, Value> = bob.welcome["presence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|user| (user["user"].as_str().unwrap().to_owned(), user.clone()))
        .collect();
    assert_eq!(presence["ann"], json!({"user": "ann", "name": "Ann", "connections": 1}), "ann keeps her name");
    let mut back = a.resume("v3", "carl", 3, "old-store-7").await;
    assert_eq!(back.welcome["resumed"], true, "the log from before the upgrade resumes");
    let (seen, _) = back.read_through(7).await;
    assert_eq!(seen.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), [4, 5, 6, 7]);

    let mut ann = a.connect("v3", "ann").await;
    ann.send(json!({"type": "note", "data": "once", "ref": "again", "idempotency_key": "k1"})).await;
    assert_eq!(answer(&mut ann, "again").await, json!({"type": "ack", "seq": 5, "ref": "again", "duplicate": true}));
    ann.publish("object-update", json!({"id": "o2", "tags": [1]}), "u").await;
    assert_eq!(answer(&mut ann, "u").await["type"], "ack");
    let state = a.api("GET", "/api/v1/canvases/v3", Some("k"), json!(null)).await.1;
    assert_eq!(state["objects"]["o2"], json!({"id": "o2", "tags": [1]}));

    let format: String = redis::cmd("GET").arg("relay:format").query_async(&mut conn).await.unwrap();
    assert_eq!(format, "4");
    for gone in ["relay:{v3}:objects", "relay:{v3}:o:o1", "relay:{v3}:peers", "relay:i:old-i:batch"] {
        let exists: bool = redis::cmd("EXISTS").arg(gone).query_async(&mut conn).await.unwrap();
        assert!(!exists, "{gone} is not a key of layout 4");
    }
    // Instance `old-i` stops heartbeating: the survivor expires ann's connection it registered.
    let () = redis::cmd("HSET").arg("relay:instances").arg("old-i").arg(0).query_async(&mut conn).await.unwrap();
    let users: HashMap<String, i64> = redis::cmd("HGETALL").arg("relay:users").query_async(&mut conn).await.unwrap();
    assert_eq!(users["ann"], 2, "the old connection and the new one");
    eventually("ann's old connection expired", || {
        let url = redis.url();
        async move {
            let mut conn = redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap();
            let users: HashMap<String, i64> =
                redis::cmd("HGETALL").arg("relay:users").query_async(&mut conn).await.unwrap();
            users.get("ann") == Some(&1)
        }
    })
    .await;
}
