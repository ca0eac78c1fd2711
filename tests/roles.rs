//! Roles (v1.1): a token grants `editor` or `viewer` per canvas (a list with the `role` claim, or a map), a
//! client may lower its role with `?role` but never raise it, and a viewer receives everything and sends
//! cursors, while its logged messages get `forbidden` and are not logged.

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
