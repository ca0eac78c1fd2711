//! Idempotent publish (v1.1): a logged message with an `idempotency_key` (or an API call with an
//! `Idempotency-Key` header) is logged once per user, canvas and epoch within the TTL, on any instance; a
//! repeat is acked with the original seq and `"duplicate":true`. The check and the insert are one atomic
//! step in the store, so a key raced from two instances is logged once.

#[macro_use]
mod helpers;

use helpers::{Client, SharedFile, Store};
use serde_json::{json, Value};

const KEY: &str = "idem-key";

/// Sends a logged message with an idempotency key.
async fn send_keyed(client: &mut Client, kind: &str, data: Value, reference: &str, key: &str) {
    client.send(json!({"type": kind, "data": data, "ref": reference, "idempotency_key": key})).await;
}

/// Every answer (ack or error) of `client` until each of `references` has one, by reference. Answers come
/// in any order: a duplicate's ack does not wait for the stream the way a logged message's does.
async fn answers(client: &mut Client, references: &[String]) -> std::collections::HashMap<String, Value> {
    let mut answers = std::collections::HashMap::new();
    while !references.iter().all(|reference| answers.contains_key(reference)) {
        let frame = client.recv().await;
        if let Some(reference) = frame["ref"].as_str() {
            answers.insert(reference.to_owned(), frame);
        }
    }
    answers
}

/// The next frame of `client` that answers `reference` (an ack or an error).
async fn answer(client: &mut Client, reference: &str) -> Value {
    loop {
        let frame = client.recv().await;
        if frame["ref"] == reference {
            return frame;
        }
    }
}

on_both_buses!(a_repeated_key_is_acked_with_the_original_seq_on_any_instance_and_logged_once);
async fn a_repeated_key_is_acked_with_the_original_seq_on_any_instance_and_logged_once(store: Store) {
    let (a, b) = (store.start(&["--api-key", KEY]).await, store.start(&["--api-key", KEY]).await);
    let mut ann = a.connect("c1", "ann").await;
    send_keyed(&mut ann, "note", json!("once"), "r1", "k1").await;
    let first = answer(&mut ann, "r1").await;
    assert_eq!(first["type"], "ack");
    assert!(first.get("duplicate").is_none(), "a first send is a plain ack: {first}");
    let seq = first["seq"].as_u64().unwrap();

    // The same user, after a reconnect to the other instance, sends it again.
    let mut again = b.connect("c1", "ann").await;
    send_keyed(&mut again, "note", json!("once"), "r2", "k1").await;
    assert_eq!(answer(&mut again, "r2").await, json!({"type": "ack", "seq": seq, "ref": "r2", "duplicate": true}));
    // An object op repeated is not folded twice: its repeat is acked, and the state holds the first.
    send_keyed(&mut again, "object-create", json!({"id": "o1", "v": 1}), "c1", "k-create").await;
    let created = answer(&mut again, "c1").await["seq"].as_u64().unwrap();
    send_keyed(&mut ann, "object-create", json!({"id": "o1", "v": 2}), "c2", "k-create").await;
    assert_eq!(answer(&mut ann, "c2").await, json!({"type": "ack", "seq": created, "ref": "c2", "duplicate": true}));
    // Another user's key is its own.
    let mut bob = b.connect("c1", "bob").await;
    send_keyed(&mut bob, "note", json!("bob's"), "b1", "k1").await;
    let bobs = answer(&mut bob, "b1").await;
    assert!(bobs.get("duplicate").is_none() && bobs["seq"].as_u64() > Some(created), "{bobs}");

    let notes = store.logged("c1").await.iter().filter(|kind| *kind == "note").count();
    assert_eq!(notes, 2, "ann's note once, bob's once");
    let (_, state) = a.api("GET", "/api/v1/canvases/c1", Some(KEY), json!(null)).await;
    assert_eq!(state["objects"], json!({"o1": {"id": "o1", "v": 1}}));

    // The API: 201 first, 200 with the same seq after, on either instance.
    let body = json!({"type": "note", "data": "from the server"});
    let with_key = [("Idempotency-Key", "job-7")];
    let (status, created) =
        a.api_with("POST", "/api/v1/canvases/c1/messages", Some(KEY), &with_key, body.clone()).await;
    assert_eq!(status, 201, "{created}");
    let (status, repeat) = b.api_with("POST", "/api/v1/canvases/c1/messages", Some(KEY), &with_key, body.clone()).await;
    assert_eq!((status, repeat), (200, json!({"seq": created["seq"], "duplicate": true})));

    // A reset starts a new epoch: the key logs again.
    let (status, _) = a.api("DELETE", "/api/v1/canvases/c1", Some(KEY), json!(null)).await;
    assert_eq!(status, 200);
    let (status, fresh) = b.api_with("POST", "/api/v1/canvases/c1/messages", Some(KEY), &with_key, body).await;
    assert_eq!(status, 201, "a new epoch: {fresh}");
}

on_both_buses!(a_key_raced_from_two_instances_is_logged_once);
async fn a_key_raced_from_two_instances_is_logged_once(store: Store) {
    let (a, b) = (store.start(&[]).await, store.start(&[]).await);
    let (mut on_a, mut on_b) = (a.connect("race", "ann").await, b.connect("race", "ann").await);
    const KEYS: usize = 50;
    // Both connections send every key at once, neither waiting for an answer: each key's two copies reach
    // the store from two instances at about the same time.
    for i in 0..KEYS {
        let key = format!("k{i}");
        send_keyed(&mut on_a, "note", json!(i), &format!("a{i}"), &key).await;
        send_keyed(&mut on_b, "note", json!(i), &format!("b{i}"), &key).await;
    }
    let of = |side: &str| (0..KEYS).map(|i| format!("{side}{i}")).collect::<Vec<_>>();
    let (on_a, on_b) = (answers(&mut on_a, &of("a")).await, answers(&mut on_b, &of("b")).await);
    for i in 0..KEYS {
        let (from_a, from_b) = (&on_a[&format!("a{i}")], &on_b[&format!("b{i}")]);
        assert_eq!((from_a["type"].as_str(), from_b["type"].as_str()), (Some("ack"), Some("ack")));
        assert_eq!(from_a["seq"], from_b["seq"], "key k{i}: one seq for both");
        let flags = [from_a, from_b].map(|ack| ack.get("duplicate").is_some());
        assert_eq!(flags.iter().filter(|d| **d).count(), 1, "key k{i}: exactly one duplicate: {from_a} {from_b}");
    }
    let notes = store.logged("race").await.iter().filter(|kind| *kind == "note").count();
    assert_eq!(notes, KEYS, "each key logged once");
}

#[tokio::test]
async fn a_bad_key_is_invalid_frame_and_a_bad_header_is_a_400() {
    let file = SharedFile::new();
    let a = file.start(&["--api-key", KEY]).await;
    let mut ann = a.connect("c1", "ann").await;
    for (i, key) in [json!(""), json!("x".repeat(65)), json!(5), json!({"k": 1}), json!(["k"])].into_iter().enumerate()
    {
        let reference = format!("bad{i}");
        ann.send(json!({"type": "note", "data": 1, "ref": reference, "idempotency_key": key})).await;
        let refused = answer(&mut ann, &reference).await;
        assert_eq!((refused["type"].as_str(), refused["code"].as_str()), (Some("error"), Some("invalid_frame")));
    }
    let longest = "é".repeat(64);
    send_keyed(&mut ann, "note", json!(1), "ok", &longest).await;
    assert_eq!(answer(&mut ann, "ok").await["type"], "ack", "64 characters, not bytes");
    ann.send(json!({"type": "note", "data": 1, "ref": "null", "idempotency_key": null})).await;
    assert_eq!(answer(&mut ann, "null").await["type"], "ack", "null: no key");

    let body = json!({"type": "note", "data": 1});
    let too_long = "x".repeat(65);
    for key in ["", too_long.as_str()] {
        let headers = [("Idempotency-Key", key)];
        let (status, reply) =
            a.api_with("POST", "/api/v1/canvases/c1/messages", Some(KEY), &headers, body.clone()).await;
        assert_eq!(status, 400, "{key:?}: {reply}");
        assert!(reply["error"].as_str().unwrap().contains("Idempotency-Key"), "{reply}");
    }
}

on_both_buses!(an_op_resent_after_its_ack_was_lost_is_a_duplicate_even_where_the_state_would_refuse_it);
/// A client whose instance died before the ack resends its ops with their keys, in order, to another
/// instance: a delete of what its first send deleted, an update of an object its first send deleted after.
/// The state refuses those, but they were logged: each is acked as a duplicate of its first send.
async fn an_op_resent_after_its_ack_was_lost_is_a_duplicate_even_where_the_state_would_refuse_it(store: Store) {
    let (a, b) = (store.start(&[]).await, store.start(&[]).await);
    let mut ann = a.connect("lost-acks", "ann").await;
    send_keyed(&mut ann, "object-create", json!({"id": "t", "v": 0}), "c", "k-c").await;
    send_keyed(&mut ann, "object-update", json!({"id": "t", "v": 1}), "u", "k-u").await;
    send_keyed(&mut ann, "object-delete", json!({"id": "t"}), "d", "k-d").await;
    let first = answers(&mut ann, &["c".into(), "u".into(), "d".into()]).await;
    assert!(first.values().all(|frame| frame["type"] == "ack"), "{first:?}");
    let mut again = b.connect("lost-acks", "ann").await;
    send_keyed(&mut again, "object-update", json!({"id": "t", "v": 1}), "u2", "k-u").await;
    send_keyed(&mut again, "object-delete", json!({"id": "t"}), "d2", "k-d").await;
    let resent = answers(&mut again, &["u2".into(), "d2".into()]).await;
    for (resend, original) in [("u2", "u"), ("d2", "d")] {
        let expected = json!({"type": "ack", "seq": first[original]["seq"], "ref": resend, "duplicate": true});
        assert_eq!(resent[resend], expected);
    }
    // A fresh op the state refuses is still refused.
    send_keyed(&mut again, "object-delete", json!({"id": "t"}), "d3", "k-new").await;
    assert_eq!(answer(&mut again, "d3").await["code"], "invalid_frame");
}
