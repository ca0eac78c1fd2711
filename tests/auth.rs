//! Client auth with `--jwt-secret`: the user comes from the token, bad tokens are refused before the
//! upgrade with 401, and a session closes with 1008 when its token expires. And `--allowed-origins`: a page on
//! another site gets 403 before the upgrade.

mod helpers;

use helpers::{Client, SharedFile};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const SECRET: &str = "integration-secret";

fn token(claims: Value) -> String {
    encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test]
async fn the_user_is_the_tokens_sub_and_the_user_parameter_is_ignored() {
    let file = SharedFile::new();
    let a = file.start(&["--jwt-secret", SECRET]).await;
    let t = token(json!({"sub": "ann@example.com", "exp": now_s() + 3600, "canvases": ["c1"]}));
    let mut ann = a.connect_path(&format!("/ws/c1?user=mallory&token={t}")).await.expect("a good token connects");
    assert_eq!(ann.welcome["user"], "ann@example.com");
    let mut bob =
        a.connect_path(&format!("/ws/c1?token={}", token(json!({"sub": "bob", "exp": now_s() + 3600})))).await.unwrap();
    assert_eq!(ann.recv().await["data"], json!({"user": "bob"}), "bob's user-connected");
    ann.publish("note", json!(1), "r").await;
    assert_eq!(ann.recv().await["type"], "ack");
    assert_eq!(bob.recv().await["from"], "ann@example.com");
}

#[tokio::test]
async fn missing_invalid_expired_or_out_of_scope_tokens_get_401_before_the_upgrade() {
    let file = SharedFile::new();
    let a = file.start(&["--jwt-secret", SECRET]).await;
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "ann", "exp": now_s() + 3600}),
        &EncodingKey::from_secret(b"not-the-secret"),
    )
    .unwrap();
    let cases = [
        ("/ws/c1?user=ann".to_owned(), "required"),
        (format!("/ws/c1?token={forged}"), "not valid"),
        ("/ws/c1?token=garbage".to_owned(), "not valid"),
        (format!("/ws/c1?token={}", token(json!({"sub": "ann", "exp": now_s() - 60}))), "expired"),
        (format!("/ws/c1?token={}", token(json!({"sub": "ann", "exp": now_s() + 3600, "canvases": ["c2"]}))), "c1"),
        (format!("/ws/c1?token={}", token(json!({"sub": "server", "exp": now_s() + 3600}))), "reserved"),
    ];
    for (path, mentions) in cases {
        let Err((status, body)) = a.connect_path(&path).await else { panic!("{path} should be refused") };
        assert_eq!(status, 401, "{path}");
        assert!(body["error"].as_str().unwrap().contains(mentions), "{path}: {body}");
    }
}

#[tokio::test]
async fn a_token_whose_expiry_is_beyond_any_clock_is_taken_without_overflow() {
    let file = SharedFile::new();
    let a = file.start(&["--jwt-secret", SECRET]).await;
    // exp * 1000 overflowed an i64 and the session took the token for expired at once (close 1008).
    for exp in [9_300_000_000_000_000u64, u64::MAX] {
        let mut client =
            a.connect_path(&format!("/ws/c1?token={}", token(json!({"sub": "ann", "exp": exp})))).await.unwrap();
        client.publish("note", json!(exp.to_string()), "n").await;
        assert_eq!(client.recv().await["type"], "ack", "the session lives on");
        client.close().await;
    }
}

#[tokio::test]
async fn a_token_expiring_mid_session_closes_it_with_1008() {
    let file = SharedFile::new();
    let a = file.start(&["--jwt-secret", SECRET]).await;
    let t = token(json!({"sub": "ann", "exp": now_s() + 2}));
    let mut ann = a.connect_path(&format!("/ws/c1?token={t}")).await.unwrap();
    ann.send(json!({"type": "ping"})).await;
    assert_eq!(ann.recv().await["type"], "pong", "working until it expires");
    let (code, _) = ann.recv_until_close().await;
    assert_eq!(code, Some(1008));
}

#[tokio::test]
async fn without_a_secret_the_user_parameter_is_trusted_and_tokens_are_ignored() {
    let file = SharedFile::new();
    let a = file.start(&[]).await;
    let client = a.connect_path("/ws/c1?user=ann&token=whatever").await.unwrap();
    assert_eq!(client.welcome["user"], "ann");
}

#[tokio::test]
async fn with_allowed_origins_another_sites_page_is_refused_before_the_upgrade() {
    let file = SharedFile::new();
    let a = file.start(&["--allowed-origins", "https://app.example,https://admin.example"]).await;
    let url = a.url("/ws/c1?user=ann");
    let (status, body) = Client::connect_with_origin(url.clone(), Some("https://evil.example")).await.err().unwrap();
    assert_eq!(status, 403);
    assert!(body["error"].as_str().unwrap().contains("--allowed-origins"), "{body}");
    assert_eq!(file.count("SELECT count(*) FROM connections"), 0, "the refusal joined nothing");
    for origin in [Some("https://admin.example"), Some(&format!("http://{}", a.addr) as &str), None] {
        let client = Client::connect_with_origin(url.clone(), origin).await;
        assert!(client.is_ok(), "{origin:?} is listed, the server's own page, or not a browser");
    }
}
