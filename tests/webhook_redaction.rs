//! A `--webhook-url` with a password and a `?token=` never shows them: not in the log of an instance whose
//! deliveries fail (warnings, then the error of a 410), not on `/health`, not in `--help` with the URL in
//! the environment, and not in the refusal of a URL that does not parse. On both buses.

#[macro_use]
mod helpers;

use helpers::receiver::{Answer, Receiver, SECRET};
use helpers::{eventually, Store};
use serde_json::{json, Value};

const KEY: &str = "webhook-key";
/// The parts of the URL that must never be shown.
const PASSWORD: &str = "hunter2-pw";
const TOKEN: &str = "s3cret-token";

fn secret_parts_in(text: &str) -> Vec<&'static str> {
    [PASSWORD, TOKEN].into_iter().filter(|secret| text.contains(secret)).collect()
}

/// 500s, then a 410: the instance logs failed attempts and the error that stops delivery, and `/health`
/// shows the last failure; none of it shows the password or the token, and the log names the receiver as
/// `http://***@host:port/hook?***`.
async fn the_url_is_redacted_in_logs_and_health(store: Store) {
    let receiver = Receiver::start().await;
    receiver.answer(Answer::Status(500));
    let url = format!("http://relay:{PASSWORD}@{}/hook?token={TOKEN}", receiver.addr);
    let args = ["--webhook-url", &url, "--webhook-secret", SECRET, "--webhook-max-backoff", "300ms", "--api-key", KEY];
    let a = store.start(&args).await;
    let path = "/api/v1/canvases/secretive/messages";
    let (status, body) = a.api("POST", path, Some(KEY), json!({"type": "comment", "data": {"text": "hi"}})).await;
    assert_eq!(status, 201, "{body}");
    eventually("attempts to fail", || async { receiver.deliveries().len() >= 2 }).await;
    let (_, health) = a.get("/health").await;
    assert!(serde_json::from_str::<Value>(&health).unwrap()["webhook"]["last_failure"].is_string(), "{health}");
    assert_eq!(secret_parts_in(&health), Vec::<&str>::new(), "{health}");
    receiver.answer(Answer::Status(410));
    eventually("the 410 to stop delivery", || async {
        let (_, health) = a.get("/health").await;
        serde_json::from_str::<Value>(&health).unwrap()["webhook"]["gone"] == true
    })
    .await;
    let (_, health) = a.get("/health").await;
    assert_eq!(secret_parts_in(&health), Vec::<&str>::new(), "{health}");
    let log = a.log_text();
    assert!(log.contains("ERROR") && log.contains("410"), "{log}");
    assert_eq!(secret_parts_in(&log), Vec::<&str>::new(), "{log}");
    assert!(log.contains(&format!("http://***@{}/hook?***", receiver.addr)), "the log names the receiver: {log}");
}

/// `serve --help` with the URL in `RELAY_WEBHOOK_URL`, and a URL that does not parse: neither output shows
/// the secret parts.
#[tokio::test]
async fn the_url_is_redacted_in_help_and_refusals() {
    let relay = env!("CARGO_BIN_EXE_canvas-relay");
    let url = format!("http://relay:{PASSWORD}@127.0.0.1:9/hook?token={TOKEN}");
    let help = std::process::Command::new(relay).args(["serve", "--help"]).env("RELAY_WEBHOOK_URL", &url).output();
    let help = help.expect("run --help");
    let shown = String::from_utf8_lossy(&help.stdout).into_owned() + &String::from_utf8_lossy(&help.stderr);
    assert!(help.status.success() && shown.contains("RELAY_WEBHOOK_URL"), "{shown}");
    assert_eq!(secret_parts_in(&shown), Vec::<&str>::new(), "{shown}");
    let bad = format!("http://relay:{PASSWORD}@127.0.0.1:9/a hook?token={TOKEN}");
    let args = ["serve", "--webhook-url", &bad, "--webhook-secret", SECRET];
    let refused = std::process::Command::new(relay).args(args).output().expect("run");
    let shown = String::from_utf8_lossy(&refused.stdout).into_owned() + &String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && shown.contains("--webhook-url"), "{shown}");
    assert!(shown.contains("http://***@127.0.0.1:9/a hook?***"), "{shown}");
    assert_eq!(secret_parts_in(&shown), Vec::<&str>::new(), "{shown}");
}

on_both_buses!(the_url_is_redacted_in_logs_and_health);
