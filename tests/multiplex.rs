//! One socket, many canvases (v1.1): `GET /ws` joins canvases over its frames. Each join is its own
//! connection in presence; every frame names its canvas; each canvas resumes from its own seq; joins are
//! bounded and checked against the token per canvas; rate limits and the slow-client rule apply to the
//! socket as a whole; a removal through the API leaves one canvas. `/ws/{canvas}` is unchanged (every other
//! test file).

#[macro_use]
mod helpers;

use futures_util::SinkExt;
use helpers::{Client, Store};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "mux-key";
const SECRET: &str = "mux-secret";

fn token(claims: Value) -> String {
    let mut claims = claims;
    claims["exp"] = json!(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600);
    encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

/// The next frame, which must be `kind` about `canvas`.
async fn expect(client: &mut Client, kind: &str, canvas: &str) -> Value {
    let frame = client.recv().await;
    assert_eq!((frame["type"].as_str(), frame["canvas"].as_str()), (Some(kind), Some(canvas)), "{frame}");
    frame
}

/// Reads a multiplexed socket's frames of `canvas` through seq `upto`, starting after `since`: every seq
/// once, in order, each frame naming the canvas. Presence states are skipped, of any canvas: a connection
/// gone from another instance has its `null` relayed in a cursor batch, which may come late. Returns the
/// types seen.
async fn read_canvas(client: &mut Client, canvas: &str, since: u64, upto: u64) -> Vec<String> {
    let (mut next, mut kinds) = (since + 1, Vec::new());
    while next <= upto {
        let frame = client.recv().await;
        if frame["type"] == "presence" && frame["canvas"].is_string() {
            continue;
        }
        assert_eq!(frame["canvas"], canvas, "a frame of another canvas, or naming none: {frame}");
        let Some(seq) = frame["seq"].as_u64() else { continue };
        assert_eq!(seq, next, "gap or reorder on {canvas}: {frame}");
        kinds.push(frame["type"].as_str().unwrap().to_owned());
        next += 1;
    }
    kinds
}

on_both_buses!(one_socket_joins_two_canvases_each_its_own_connection_and_every_frame_names_its_canvas);
async fn one_socket_joins_two_canvases_each_its_own_connection_and_every_frame_names_its_canvas(store: Store) {
    let (a, b) = (store.start(&["--api-key", KEY]).await, store.start(&["--api-key", KEY]).await);
    let mut bob1 = b.connect("c1", "bob").await;
    let mut bob2 = b.connect("c2", "bob").await;
    let mut ann = a.multiplexed("user=ann&name=Ann").await;
    let w1 = ann.join("c1", None).await;
    let w2 = ann.join("c2", None).await;
    assert_ne!(w1["connection"], w2["connection"], "each join is its own connection");
    assert_eq!(
        (w1["seq"].as_u64(), w1["role"].as_str(), w1["resumed"].as_bool()),
        (Some(2), Some("editor"), Some(false))
    );
    let users = json!([{"user": "ann", "name": "Ann", "connections": 1}, {"user": "bob", "connections": 1}]);
    assert_eq!((&w1["presence"], &w1["objects"]), (&users, &json!({})));
    for bob in [&mut bob1, &mut bob2] {
        let joined = bob.recv().await;
        assert_eq!(
            (joined["type"].as_str(), &joined["data"]),
            (Some("user-connected"), &json!({"user": "ann", "name": "Ann"}))
        );
    }

    ann.send(json!({"type": "object-create", "canvas": "c1", "data": {"id": "r1", "x": 1}, "ref": "a1"})).await;
    let ack = expect(&mut ann, "ack", "c1").await;
    assert_eq!((ack["seq"].as_u64(), ack["ref"].as_str()), (Some(3), Some("a1")));
    let seen = bob1.recv().await;
    assert_eq!(
        (seen["type"].as_str(), seen["seq"].as_u64(), seen["from"].as_str()),
        (Some("object-create"), Some(3), Some("ann"))
    );
    bob2.publish("note", json!("to c2"), "b1").await;
    assert_eq!(bob2.recv().await["type"], "ack");
    let note = expect(&mut ann, "note", "c2").await;
    assert_eq!((note["seq"].as_u64(), &note["data"]), (Some(3), &json!("to c2")));
    ann.send(json!({"type": "cursor", "canvas": "c1", "data": {"x": 5}})).await;
    let cursor = bob1.recv().await;
    assert_eq!((cursor["type"].as_str(), &cursor["connection"]), (Some("cursor"), &w1["connection"]));

    // A user message reaches the socket once, whatever canvases it is on.
    let (status, _) = b.api("POST", "/api/v1/users/ann/messages", Some(KEY), json!({"type": "hello", "data": 1})).await;
    assert_eq!(status, 202);
    let hello = ann.recv().await;
    assert_eq!((hello["type"].as_str(), hello["to"].as_str()), (Some("hello"), Some("ann")), "{hello}");
    ann.send(json!({"type": "ping"})).await;
    assert_eq!(ann.recv().await, json!({"type": "pong"}), "the user message came once");

    // Frames for a canvas not joined, or naming none, are refused; the socket stays.
    ann.send(json!({"type": "note", "canvas": "c9", "data": 1, "ref": "x"})).await;
    let refused = expect(&mut ann, "error", "c9").await;
    assert_eq!((refused["code"].as_str(), refused["ref"].as_str()), (Some("invalid_frame"), Some("x")));
    ann.send(json!({"type": "cursor", "data": {"x": 1}})).await;
    let refused = ann.recv().await;
    assert_eq!((refused["code"].as_str(), refused.get("canvas")), (Some("invalid_frame"), None), "{refused}");

    ann.send(json!({"type": "leave", "canvas": "c1"})).await;
    assert_eq!(ann.recv().await, json!({"type": "left", "canvas": "c1"}));
    let gone = bob1.recv_skipping("presence").await; // (ann's state going null comes in either order)
    assert_eq!(
        (gone["type"].as_str(), gone["seq"].as_u64(), &gone["data"]),
        (Some("user-disconnected"), Some(4), &json!({"user": "ann", "name": "Ann"}))
    );
    ann.send(json!({"type": "note", "canvas": "c1", "data": 1, "ref": "late"})).await;
    assert_eq!(expect(&mut ann, "error", "c1").await["code"], "invalid_frame", "c1 is left");
    ann.send(json!({"type": "note", "canvas": "c2", "data": 2, "ref": "a2"})).await;
    assert_eq!(expect(&mut ann, "ack", "c2").await["seq"], 4, "c2 carries on");
    let kinds: Vec<String> = store.logged("c1").await;
    assert_eq!(kinds, ["user-connected", "user-connected", "object-create", "user-disconnected"]);
}

on_both_buses!(each_canvas_of_a_new_socket_resumes_from_its_own_seq_and_epoch);
async fn each_canvas_of_a_new_socket_resumes_from_its_own_seq_and_epoch(store: Store) {
    let (a, b) = (store.start(&[]).await, store.start(&[]).await);
    let mut ann = a.multiplexed("user=ann").await;
    let (w1, w2) = (ann.join("c1", None).await, ann.join("c2", None).await);
    let (since1, since2) = (w1["seq"].as_u64().unwrap(), w2["seq"].as_u64().unwrap());
    ann.close().await;
    left_everywhere(&store, &["c1", "c2"]).await;
    let mut bobs = [b.connect("c1", "bob").await, b.connect("c2", "bob").await];
    for bob in &mut bobs {
        for n in 0..3 {
            bob.publish("note", json!(n), "b").await;
        }
    }
    let mut heads = Vec::new();
    for bob in &mut bobs {
        let (seen, _) = bob.read_through(bob.seq() + 3).await;
        heads.push(seen.last().unwrap().0);
    }

    let mut back = b.multiplexed("user=ann").await;
    for (canvas, since, welcome, head) in [("c1", since1, &w1, heads[0]), ("c2", since2, &w2, heads[1])] {
        let resumed = back.join(canvas, Some((since, welcome["epoch"].as_str().unwrap()))).await;
        assert_eq!((resumed["resumed"].as_bool(), resumed["seq"].as_u64()), (Some(true), Some(since)), "{resumed}");
        assert!(resumed.get("objects").is_none(), "a resumed welcome carries no state");
        // The replay: ann's leaving, bob's arrival and notes, then ann's return, each once and in order.
        let kinds = read_canvas(&mut back, canvas, since, head + 1).await;
        assert_eq!(kinds.iter().filter(|k| *k == "note").count(), 3, "{canvas}: {kinds:?}");
        assert_eq!(kinds.last().map(String::as_str), Some("user-connected"), "{canvas}: live after the replay");
    }
    let stale = back.join("c3", Some((5, "not-an-epoch"))).await;
    assert_eq!((stale["resumed"].as_bool(), &stale["objects"]), (Some(false), &json!({})), "an unknown epoch reloads");
}

on_both_buses!(joins_are_bounded_and_refusals_name_the_canvas_and_the_rate_limit_is_the_sockets);
async fn joins_are_bounded_and_refusals_name_the_canvas_and_the_rate_limit_is_the_sockets(store: Store) {
    let a = store.start(&["--max-canvases-per-connection", "2", "--rate-limit", "1", "--rate-burst", "10"]).await;
    let mut ann = a.multiplexed("user=ann").await;
    ann.join("c1", None).await;
    ann.join("c2", None).await;
    let refusals = [
        (json!({"type": "join", "canvas": "c3"}), "c3", "too_many_canvases"),
        (json!({"type": "join", "canvas": "c1"}), "c1", "invalid_frame"),
        (json!({"type": "join", "canvas": "bad id"}), "bad id", "invalid_frame"),
        (json!({"type": "join", "canvas": "c4", "since": 3}), "c4", "invalid_frame"),
    ];
    for (frame, canvas, code) in refusals {
        ann.send(frame.clone()).await;
        assert_eq!(expect(&mut ann, "error", canvas).await["code"], code, "{frame}");
    }
    ann.send(json!({"type": "leave", "canvas": "c2"})).await;
    expect(&mut ann, "left", "c2").await;
    ann.join("c3", None).await;

    // Joins are charged to the socket's allowance like messages (five so far, two of them refused; frames
    // refused at parse are not, nor leaves), so of a burst of ten, five are left for seven messages over two
    // canvases: not ten per canvas, nor ten for messages alone.
    for n in 0..7 {
        let canvas = if n % 2 == 0 { "c1" } else { "c3" };
        ann.send(json!({"type": "note", "canvas": canvas, "data": n, "ref": format!("m{n}")})).await;
    }
    let (mut acked, mut limited) = (0, 0);
    for _ in 0..7 {
        let frame = ann.recv().await;
        let n: usize = frame["ref"].as_str().unwrap()[1..].parse().unwrap();
        assert_eq!(frame["canvas"], if n % 2 == 0 { "c1" } else { "c3" }, "{frame}");
        match (frame["type"].as_str(), frame["code"].as_str()) {
            (Some("ack"), _) => acked += 1,
            (Some("error"), Some("rate_limited")) => limited += 1,
            _ => panic!("unexpected {frame}"),
        }
    }
    assert!(acked <= 6 && limited >= 1, "{acked} acked, {limited} limited");
}

on_both_buses!(scope_and_role_are_checked_per_join_and_a_removal_leaves_one_canvas);
async fn scope_and_role_are_checked_per_join_and_a_removal_leaves_one_canvas(store: Store) {
    let flags = ["--jwt-secret", SECRET, "--api-key", KEY];
    let (a, b) = (store.start(&flags).await, store.start(&flags).await);
    let Err((status, _)) = Client::open_multiplexed(a.url("/ws?user=ann")).await else { panic!("no token") };
    assert_eq!(status, 401);
    let Err((status, _)) = Client::open_multiplexed(a.url("/ws?token=forged")).await else { panic!("bad token") };
    assert_eq!(status, 401);
    let grant = token(json!({"sub": "ann", "canvases": {"c1": "editor", "c2": "viewer"}}));
    let mut ann = a.multiplexed(&format!("token={grant}")).await;
    assert_eq!(ann.join("c1", None).await["role"], "editor");
    assert_eq!(ann.join("c2", None).await["role"], "viewer");
    ann.send(json!({"type": "join", "canvas": "c3"})).await;
    assert_eq!(expect(&mut ann, "error", "c3").await["code"], "forbidden", "outside the token's scope");
    ann.send(json!({"type": "note", "canvas": "c2", "data": 1, "ref": "v"})).await;
    let refused = expect(&mut ann, "error", "c2").await;
    assert_eq!((refused["code"].as_str(), refused["ref"].as_str()), (Some("forbidden"), Some("v")), "a viewer there");
    let mut bob = b.connect_path(&format!("/ws/c1?token={}", token(json!({"sub": "bob"})))).await.unwrap();
    assert_eq!(expect(&mut ann, "user-connected", "c1").await["data"], json!({"user": "bob"}));

    let (status, body) = b.api("DELETE", "/api/v1/canvases/c1/users/ann?block=600", Some(KEY), json!(null)).await;
    assert_eq!((status, body), (200, json!({"connections": 1})));
    let left = expect(&mut ann, "left", "c1").await;
    assert_eq!(left["code"], 4003, "{left}");
    let gone = bob.recv_skipping("presence").await;
    assert_eq!((gone["type"].as_str(), &gone["data"]), (Some("user-disconnected"), &json!({"user": "ann"})));
    ann.send(json!({"type": "cursor", "canvas": "c2", "data": {"x": 1}})).await;
    ann.send(json!({"type": "ping"})).await;
    assert_eq!(ann.recv().await["type"], "pong", "the socket and its other canvas stay");
    ann.send(json!({"type": "join", "canvas": "c1"})).await;
    let refused = expect(&mut ann, "error", "c1").await;
    assert_eq!(refused["code"], "forbidden", "blocked: {refused}");
}

on_both_buses!(a_socket_that_stops_reading_is_cut_as_a_whole_and_each_canvas_resumes_without_a_gap);
async fn a_socket_that_stops_reading_is_cut_as_a_whole_and_each_canvas_resumes_without_a_gap(store: Store) {
    let flags = ["--client-queue", "16", "--max-in-flight", "8", "--write-timeout", "30s", "--rate-limit", "0"];
    let a = store.start(&flags).await;
    let mut slow = a.multiplexed("user=snail").await;
    let welcomes = [slow.join("c1", None).await, slow.join("c2", None).await];
    // Enough bytes to fill the socket buffers between the server and a client that does not read, spread
    // over both canvases: each canvas alone stays within what a client's queue holds.
    let blob = "z".repeat(32 * 1024);
    let mut writers = [a.connect("c1", "writer").await, a.connect("c2", "writer").await];
    for round in 0..100 {
        for writer in &mut writers {
            for n in 0..8 {
                writer.publish("blob", json!({"n": round * 8 + n, "pad": blob}), "w").await;
            }
            for _ in 0..8 {
                let frame = loop {
                    let frame = writer.recv().await;
                    if frame["type"] != "user-disconnected" {
                        break frame;
                    }
                };
                assert_eq!(frame["type"], "ack", "{frame}");
            }
        }
    }
    let (code, _) = slow.recv_until_close().await;
    assert_eq!(code, Some(4009), "the socket is cut as a whole");
    left_everywhere(&store, &["c1", "c2"]).await;

    let mut back = a.multiplexed("user=snail").await;
    for (canvas, welcome) in ["c1", "c2"].into_iter().zip(&welcomes) {
        let since = welcome["seq"].as_u64().unwrap();
        let head = store.logged(canvas).await.len() as u64;
        let resumed = back.join(canvas, Some((since, welcome["epoch"].as_str().unwrap()))).await;
        assert_eq!(resumed["resumed"], true, "{resumed}");
        // Everything missed, then this join's own arrival.
        let kinds = read_canvas(&mut back, canvas, since, head + 1).await;
        assert_eq!(kinds.iter().filter(|k| *k == "blob").count(), 800, "{canvas}: every blob once");
        assert_eq!(kinds.last().map(String::as_str), Some("user-connected"));
    }
}

/// Sends `frames` in one write: the server reads them back to back, so a leave sent with its join is read
/// before the join's first step in the store (the block check) can be answered.
async fn send_together(client: &mut Client, frames: &[&Value]) {
    for frame in frames {
        client.ws.feed(Message::text(frame.to_string())).await.expect("send");
    }
    client.ws.flush().await.expect("send");
}

on_both_buses!(a_leave_cancels_a_join_in_progress_and_leaves_nothing_behind_and_a_rejoin_comes_after_left);
async fn a_leave_cancels_a_join_in_progress_and_leaves_nothing_behind_and_a_rejoin_comes_after_left(store: Store) {
    let a = store.start(&["--rate-limit", "0"]).await;
    let mut bob = a.connect("big", "bob").await;
    let head = bob.create_objects("o", 5_000, 400).await; // ~2.5 MB: a join of it reads for a while
    let mut ann = a.multiplexed("user=ann").await;
    let (join, leave) = (json!({"type": "join", "canvas": "big"}), json!({"type": "leave", "canvas": "big"}));
    let left = json!({"type": "left", "canvas": "big"});

    // Left at once after the join: answered `left`, never a welcome or an error; so too while the store
    // does not answer (the join cannot get anywhere, `left` does not wait for it).
    send_together(&mut ann, &[&join, &leave]).await;
    assert_eq!(ann.recv().await, left, "no welcome for a cancelled join, and no error");
    let stall = store.stall();
    send_together(&mut ann, &[&join, &leave]).await;
    assert_eq!(ann.recv().await, left, "left while the store holds the join");
    drop(stall);
    helpers::eventually("the cancelled joins out of presence", || async { store.connections().await == 1 }).await;
    // Left once its registration is in, while the big state is read: cancelled then (`left` alone), unless
    // the join won the race (its welcome, then `left`).
    let (mut seen, now) = (head, store.head("big").await);
    while seen < now {
        seen = bob.recv().await["seq"].as_u64().unwrap_or(seen); // past the presence changes so far
    }
    ann.send(join.clone()).await;
    let registered = bob.recv_skipping("presence").await;
    assert_eq!((registered["type"].as_str(), &registered["data"]["user"]), (Some("user-connected"), &json!("ann")));
    ann.send(leave.clone()).await;
    let answer = ann.recv().await;
    if answer["type"] == "welcome" {
        assert_eq!(ann.recv().await, left);
    } else {
        assert_eq!(answer, left);
    }
    // The mount, unmount, mount of a UI: the second join's welcome comes after the `left`.
    send_together(&mut ann, &[&join, &leave, &join]).await;
    assert_eq!(ann.recv().await, left);
    let welcome = expect(&mut ann, "welcome", "big").await;
    assert_eq!(welcome["objects"].as_object().map(|objects| objects.len()), Some(5_000));
    assert!(welcome["seq"].as_u64().unwrap() > head, "{}", welcome["seq"]);

    // Nothing of the cancelled joins is left: ann's one connection in presence and in the room beside bob's,
    // and its stream goes on from its one welcome with no frame of theirs.
    helpers::eventually("the cancelled joins out of presence", || async { store.connections().await == 2 }).await;
    let (_, health) = a.api("GET", "/health", None, json!(null)).await;
    assert_eq!((&health["local_canvases"], &health["local_connections"]), (&json!(1), &json!(2)), "{health}");
    bob.publish("note", json!("after"), "n").await;
    let acked = loop {
        let frame = bob.recv().await;
        if frame["type"] == "ack" {
            break frame["seq"].as_u64().unwrap();
        }
    };
    let kinds = read_canvas(&mut ann, "big", welcome["seq"].as_u64().unwrap(), acked).await;
    assert_eq!(kinds.last().map(String::as_str), Some("note"), "{kinds:?}");
    ann.send(json!({"type": "ping"})).await;
    assert_eq!(ann.recv_skipping("presence").await, json!({"type": "pong"}), "no second welcome");
}

on_both_buses!(every_leave_is_answered_left_never_refused_for_rate_even_of_a_canvas_never_joined);
async fn every_leave_is_answered_left_never_refused_for_rate_even_of_a_canvas_never_joined(store: Store) {
    let a = store.start(&["--rate-limit", "1", "--rate-burst", "2"]).await;
    let mut ann = a.multiplexed("user=ann").await;
    ann.join("c1", None).await;
    ann.join("c2", None).await; // the burst is spent
                                // Far more leaves than the allowance, of a canvas joined, then no longer, and of one never joined: each
                                // answered `left`, none refused, and the socket (never cut with 4008) keeps its other canvas.
    for _ in 0..20 {
        ann.send(json!({"type": "leave", "canvas": "c1"})).await;
        ann.send(json!({"type": "leave", "canvas": "never"})).await;
    }
    for _ in 0..20 {
        assert_eq!(ann.recv_skipping("presence").await, json!({"type": "left", "canvas": "c1"}));
        assert_eq!(ann.recv_skipping("presence").await, json!({"type": "left", "canvas": "never"}));
    }
    helpers::eventually("c1 left in presence", || async { store.connections().await == 1 }).await;
    ann.send(json!({"type": "cursor", "canvas": "c2", "data": {"x": 1}})).await;
    ann.send(json!({"type": "ping"})).await;
    assert_eq!(ann.recv_skipping("presence").await, json!({"type": "pong"}), "c2 still joined, nothing refused");
}

/// Waits until the log of each canvas says a user left (the socket's leaving is committed), so that what
/// follows is logged after it.
async fn left_everywhere(store: &Store, canvases: &[&str]) {
    for canvas in canvases {
        helpers::eventually(&format!("the leave logged on {canvas}"), || async {
            store.logged(canvas).await.iter().any(|kind| kind == "user-disconnected")
        })
        .await;
    }
}
