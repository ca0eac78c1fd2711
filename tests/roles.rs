//! Roles (v1.1): a token grants `editor` or `viewer` per canvas (a list with the `role` claim, or a map), a
//! client may lower its role with `?role` but never raise it, and a viewer receives everything and sends
//! cursors, while its logged messages get `forbidden` and are not logged. A removal through the API closes
//! every connection of the user to the canvas on every instance, and refuses those still joining.

#[macro_use]
mod helpers;

use helpers::{SharedFile, Store};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const SECRET: &str = "roles-secret";

fn token(claims: Value) -> String {
    let mut claims = claims;
    claims["exp"] = json!(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600);
    encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

on_both_buses!(a_viewer_receives_everything_but_its_logged_messages_are_forbidden_and_not_logged);
async fn a_viewer_receives_everything_but_its_logged_messages_are_forbidden_and_not_logged(store: Store) {
    let (a, b) = (store.start(&["--jwt-secret", SECRET]).await, store.start(&["--jwt-secret", SECRET]).await);
    let editor = token(json!({"sub": "ann", "canvases": ["c1"]}));
    let mut ann = a.connect_path(&format!("/ws/c1?token={editor}")).await.unwrap();
    let viewer = token(json!({"sub": "vic", "canvases": {"c1": "viewer", "*": "editor"}}));
    let mut vic = b.connect_path(&format!("/ws/c1?token={viewer}")).await.unwrap();
    assert_eq!((ann.welcome["role"].as_str(), vic.welcome["role"].as_str()), (Some("editor"), Some("viewer")));
    assert_eq!(ann.recv().await["data"], json!({"user": "vic"}), "a viewer is in presence like anyone");

    for (kind, data) in [("note", json!("hi")), ("object-create", json!({"id": "o1"}))] {
        vic.publish(kind, data, "v1").await;
        let refused = vic.recv().await;
        assert_eq!((refused["type"].as_str(), refused["code"].as_str()), (Some("error"), Some("forbidden")));
        assert_eq!(refused["ref"], "v1", "{refused}");
    }
    vic.send(json!({"type": "cursor", "data": {"x": 1}})).await;
    let cursor = ann.recv().await;
    assert_eq!((cursor["type"].as_str(), cursor["from"].as_str()), (Some("cursor"), Some("vic")), "cursors pass");
    vic.send(json!({"type": "ping"})).await;
    assert_eq!(vic.recv().await["type"], "pong");

    ann.publish("note", json!("from the editor"), "a1").await;
    let ack = ann.recv().await;
    assert_eq!(ack["seq"], vic.seq() + 1, "nothing of the viewer's was logged: {ack}");
    let seen = vic.recv().await;
    assert_eq!((seen["from"].as_str(), seen["seq"].as_u64()), (Some("ann"), ack["seq"].as_u64()));
    assert_eq!(store.logged("c1").await.len() as u64, ack["seq"].as_u64().unwrap(), "the log: presence and ann's note");

    // On the other canvas the map's "*" makes vic an editor.
    let mut elsewhere = a.connect_path(&format!("/ws/c2?token={viewer}")).await.unwrap();
    assert_eq!(elsewhere.welcome["role"], "editor");
    elsewhere.publish("note", json!(1), "e").await;
    assert_eq!(elsewhere.recv().await["type"], "ack");
}

#[tokio::test]
async fn the_role_claim_applies_to_a_list_and_role_can_lower_a_grant_but_never_raise_it() {
    let file = SharedFile::new();
    let a = file.start(&["--jwt-secret", SECRET]).await;
    let role = |path: String| {
        let a = &a;
        async move { a.connect_path(&path).await.unwrap().welcome["role"].as_str().unwrap().to_owned() }
    };
    let listed_viewer = token(json!({"sub": "ann", "canvases": ["c1"], "role": "viewer"}));
    assert_eq!(role(format!("/ws/c1?token={listed_viewer}")).await, "viewer");
    assert_eq!(role(format!("/ws/c1?token={listed_viewer}&role=editor")).await, "viewer", "?role cannot raise");
    let everywhere_viewer = token(json!({"sub": "ann", "role": "viewer"}));
    assert_eq!(role(format!("/ws/c7?token={everywhere_viewer}&role=editor")).await, "viewer");
    let mapped_viewer = token(json!({"sub": "ann", "canvases": {"c1": "viewer"}}));
    assert_eq!(role(format!("/ws/c1?token={mapped_viewer}&role=editor")).await, "viewer");
    let editor = token(json!({"sub": "ann"}));
    assert_eq!(role(format!("/ws/c1?token={editor}")).await, "editor");
    assert_eq!(role(format!("/ws/c1?token={editor}&role=viewer")).await, "viewer", "a client may demote itself");

    let Err((status, body)) = a.connect_path(&format!("/ws/c2?token={mapped_viewer}")).await else {
        panic!("a map without c2 or \"*\" does not cover c2")
    };
    assert_eq!((status, body["error"].as_str()), (401, Some("the token does not cover canvas c2")));
    let unknown = token(json!({"sub": "ann", "canvases": {"c1": "owner"}}));
    let Err((status, _)) = a.connect_path(&format!("/ws/c1?token={unknown}")).await else { panic!() };
    assert_eq!(status, 401, "a role that does not exist makes the token invalid");
}

#[tokio::test]
async fn without_auth_role_viewer_demotes_a_client_and_another_value_is_a_400() {
    let file = SharedFile::new();
    let a = file.start(&[]).await;
    let mut embed = a.connect_path("/ws/c1?user=embed&role=viewer").await.unwrap();
    assert_eq!(embed.welcome["role"], "viewer");
    embed.publish("note", json!(1), "r").await;
    assert_eq!(embed.recv().await["code"], "forbidden");
    let ann = a.connect("c1", "ann").await;
    assert_eq!(ann.welcome["role"], "editor", "the default");
    for bad in ["owner", "", "Viewer"] {
        let Err((status, body)) = a.connect_path(&format!("/ws/c1?user=ann&role={bad}")).await else { panic!() };
        assert_eq!((status, body["error"].as_str()), (400, Some("role must be editor or viewer")), "{bad:?}");
    }
}

const KEY: &str = "roles-key";

on_both_buses!(removing_a_user_closes_its_connections_to_the_canvas_everywhere_and_a_block_refuses_it_everywhere);
async fn removing_a_user_closes_its_connections_to_the_canvas_everywhere_and_a_block_refuses_it_everywhere(
    store: Store,
) {
    let (a, b) = (store.start(&["--api-key", KEY]).await, store.start(&["--api-key", KEY]).await);
    let mut ann_on_a = a.connect("c1", "ann").await;
    let mut ann_on_b = b.connect("c1", "ann").await;
    let mut ann_elsewhere = a.connect("c2", "ann").await;
    let mut bob = b.connect("c1", "bob").await;
    assert_eq!(bob.welcome["presence"], json!([{"user": "ann", "connections": 2}, {"user": "bob", "connections": 1}]));

    let (status, body) = a.api("DELETE", "/api/v1/canvases/c1/users/ann?block=600", Some(KEY), json!(null)).await;
    assert_eq!((status, body), (200, json!({"connections": 2})), "counted across instances");
    for (instance, ann) in [("the instance asked", &mut ann_on_a), ("the other instance", &mut ann_on_b)] {
        let (code, _) = ann.recv_until_close().await;
        assert_eq!(code, Some(4003), "closed on {instance}");
    }
    let left = loop {
        let frame = bob.recv().await;
        if frame["type"] == "user-disconnected" {
            break frame;
        }
    };
    assert_eq!(left["data"], json!({"user": "ann"}), "presence changes as for any close");
    ann_elsewhere.publish("note", json!("still here"), "r").await;
    assert_eq!(ann_elsewhere.recv().await["type"], "ack", "another canvas is not touched");

    for instance in [&a, &b] {
        let Err((status, body)) = instance.connect_path("/ws/c1?user=ann").await else { panic!("blocked") };
        assert_eq!(status, 403);
        assert!(body["error"].as_str().unwrap().contains("blocked"), "{body}");
    }
    b.connect("c2", "ann").await; // the block is for c1 only
    b.connect("c1", "carol").await; // and for ann only

    // Without a block the user may come straight back.
    let (status, body) = b.api("DELETE", "/api/v1/canvases/c1/users/bob", Some(KEY), json!(null)).await;
    assert_eq!((status, body), (200, json!({"connections": 1})));
    assert_eq!(bob.recv_until_close().await.0, Some(4003));
    a.connect("c1", "bob").await;

    // A block ends on its own.
    let (status, _) = b.api("DELETE", "/api/v1/canvases/c1/users/dave?block=3", Some(KEY), json!(null)).await;
    assert_eq!(status, 200);
    let Err((status, _)) = a.connect_path("/ws/c1?user=dave").await else { panic!("blocked for 3 s") };
    assert_eq!(status, 403);
    let back = async {
        loop {
            match a.connect_path("/ws/c1?user=dave").await {
                Ok(client) => return client,
                Err((status, _)) => assert_eq!(status, 403),
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    let back = tokio::time::timeout(std::time::Duration::from_secs(20), back).await.expect("unblocked after 3 s");
    assert_eq!(back.welcome["user"], "dave");
}

#[tokio::test]
async fn a_removal_with_a_bad_block_canvas_or_key_gets_a_json_error() {
    let file = SharedFile::new();
    let a = file.start(&["--api-key", KEY]).await;
    for (path, status) in [
        ("/api/v1/canvases/c1/users/ann?block=abc", 400),
        ("/api/v1/canvases/c1/users/ann?block=-1", 400),
        ("/api/v1/canvases/c1/users/ann?block=1.5", 400),
        ("/api/v1/canvases/c1/users/ann?block=99999999999", 400),
        ("/api/v1/canvases/bad%20id/users/ann", 400),
        ("/api/v1/canvases/c1/users/bad%20id", 400),
    ] {
        let (got, body) = a.api("DELETE", path, Some(KEY), json!(null)).await;
        assert_eq!(got, status, "{path}");
        assert!(body["error"].is_string(), "{path}: {body}");
    }
    let (status, body) = a.api("DELETE", "/api/v1/canvases/c1/users/ann", Some("wrong"), json!(null)).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = a.api("DELETE", "/api/v1/canvases/c1/users/ann?block=0", Some(KEY), json!(null)).await;
    assert_eq!((status, body), (200, json!({"connections": 0})), "nobody to remove, no block");
    a.connect("c1", "ann").await;
}

/// How a join raced against a removal ended, once the removal has answered.
enum Raced {
    /// Refused: 403 before the upgrade (`/ws/{canvas}`) or a `forbidden` error for the canvas (a join on
    /// `/ws`), because the join read the block or the removal came while it joined.
    Refused,
    /// Welcomed (on `/ws` if `multiplexed`): the removal must still close it.
    Welcomed { client: Box<helpers::Client>, multiplexed: bool },
}

/// Joins `canvas` as ann on `/ws/{canvas}`.
async fn join_single(instance: &helpers::Instance, canvas: &str) -> Raced {
    match instance.connect_path(&format!("/ws/{canvas}?user=ann")).await {
        Ok(client) => Raced::Welcomed { client: Box::new(client), multiplexed: false },
        Err((403, _)) => Raced::Refused,
        Err(refused) => panic!("a join racing a removal got {refused:?}"),
    }
}

/// Joins `canvas` as ann with a `join` on an open `/ws` socket.
async fn join_multiplexed(mut client: helpers::Client, canvas: &str) -> Raced {
    client.send(json!({"type": "join", "canvas": canvas})).await;
    let answer = client.recv_skipping("presence").await;
    match (answer["type"].as_str(), answer["code"].as_str()) {
        (Some("welcome"), _) => Raced::Welcomed { client: Box::new(client), multiplexed: true },
        (Some("error"), Some("forbidden")) => Raced::Refused,
        _ => panic!("a join racing a removal got {answer}"),
    }
}

/// A welcomed connection must be closed by the removal: 4003 on `/ws/{canvas}`, `left` with 4003 on `/ws`.
/// A connection left open fails here, after the helpers' bounded wait.
async fn closed_by_the_removal(raced: Raced, canvas: &str) {
    let Raced::Welcomed { mut client, multiplexed } = raced else { return };
    if multiplexed {
        let left = loop {
            let frame = client.recv().await;
            if frame["type"] == "left" {
                break frame;
            }
        };
        assert_eq!((left["canvas"].as_str(), left["code"].as_u64()), (Some(canvas), Some(4003)), "{left}");
    } else {
        assert_eq!(client.recv_until_close().await.0, Some(4003), "a welcomed join on {canvas}");
    }
}

on_both_buses!(a_join_racing_a_removal_with_a_block_is_refused_or_closed_and_never_stays);
async fn a_join_racing_a_removal_with_a_block_is_refused_or_closed_and_never_stays(store: Store) {
    let (a, b) = (store.start(&["--api-key", KEY]).await, store.start(&["--api-key", KEY]).await);
    // Each round's joins land on both sides of the removal: most read the block or are refused for the
    // removal that came while they joined, some are welcomed first and closed after.
    for round in 0..40 {
        // A canvas per round: ann is blocked from the last one.
        let canvas = format!("race-{round}");
        let sockets = [a.multiplexed("user=ann").await, b.multiplexed("user=ann").await];
        let [on_a, on_b] = sockets;
        let taken_by = if round % 2 == 0 { &a } else { &b };
        let path = format!("/api/v1/canvases/{canvas}/users/ann?block=600");
        let (joins, (status, _)) = tokio::join!(
            futures_util::future::join4(
                join_single(&a, &canvas),
                join_single(&b, &canvas),
                join_multiplexed(on_a, &canvas),
                join_multiplexed(on_b, &canvas),
            ),
            taken_by.api("DELETE", &path, Some(KEY), json!(null)),
        );
        assert_eq!(status, 200);
        for raced in <[Raced; 4]>::from(joins) {
            closed_by_the_removal(raced, &canvas).await;
        }
    }
    helpers::eventually("ann connected nowhere", || async {
        let (_, user) = a.api("GET", "/api/v1/users/ann", Some(KEY), json!(null)).await;
        user["connections"] == 0
    })
    .await;
}
