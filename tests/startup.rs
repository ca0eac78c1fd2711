//! What the `canvas-relay` binary tells an operator before it serves: `--help` and start-up errors never show
//! a Redis password, whether it came from `--bus` or `RELAY_BUS`; an open-file limit too low for
//! `--max-connections` is warned about; a webhook that cannot work (no URL, not http://, no secret) is
//! refused with the flag to fix.

mod helpers;

use std::process::Stdio;

use helpers::{Instance, SharedFile, WAIT};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_canvas-relay");

/// Runs the binary to completion and returns (exit code, stdout + stderr).
async fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let output = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(WAIT, output).await.expect("canvas-relay did not exit in time");
    let output = output.expect("run canvas-relay");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.code(), text)
}

#[tokio::test]
async fn help_does_not_show_the_redis_url_from_the_environment() {
    let (code, help) = run(&["serve", "--help"], &[("RELAY_BUS", "redis://:hunter2@10.0.0.5:6379/1")]).await;
    assert_eq!(code, Some(0), "{help}");
    assert!(help.contains("RELAY_BUS") && !help.contains("hunter2"), "{help}");
}

#[tokio::test]
async fn a_refused_or_unreachable_redis_url_is_reported_without_its_password() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("relay.db");
    let db = db.to_str().expect("utf-8 path");
    // Not a URL: clap refuses it, naming the flag.
    let (code, text) = run(&["serve", "--db", db, "--bus", "redis://:hunter2@10.0.0.5:notaport/1"], &[]).await;
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("--bus") && text.contains("not a valid Redis URL") && !text.contains("hunter2"), "{text}");
    // A URL nobody answers on (port 1 of loopback): the start-up error names the store, not the password.
    let bus = [("RELAY_BUS", "redis://:hunter2@127.0.0.1:1/0")];
    let (code, text) = run(&["serve", "--db", db, "--listen", "127.0.0.1:0"], &bus).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("redis://:***@127.0.0.1:1/0") && !text.contains("hunter2"), "{text}");
}

#[tokio::test]
async fn an_open_file_limit_below_max_connections_is_warned_about_and_a_sufficient_one_is_not() {
    let file = SharedFile::new();
    let low = Instance::start_with_open_file_limit(&file.db, 256, &["--max-connections", "10000"]).await;
    let log = low.log_text();
    assert!(
        log.contains(
            "the open-file limit (ulimit -n) is 256, below --max-connections 10000 plus 64 for files and the store: \
             connections past ~192 will fail to be accepted"
        ),
        "{log}"
    );
    let enough = Instance::start_with_open_file_limit(&file.db, 256, &["--max-connections", "192"]).await;
    assert!(!enough.log_text().contains("open-file limit"), "{}", enough.log_text());
}

#[tokio::test]
async fn a_webhook_that_cannot_work_is_refused_at_start_naming_the_flag() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("relay.db");
    let db = db.to_str().expect("utf-8 path");
    let serve = ["serve", "--db", db, "--listen", "127.0.0.1:0"];
    // (flags, environment, exit code, what the refusal says): a value that is no URL at all is refused by the
    // flag parser (a usage error, as for any bad flag value), the others when the webhook is checked.
    type Refusal<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], i32, &'a str);
    let refusals: [Refusal; 6] = [
        (&["--webhook-url", "not a url", "--webhook-secret", "s"], &[], 2, "'--webhook-url <URL>': not a URL"),
        (&["--webhook-url", "https://example.com/hook", "--webhook-secret", "s"], &[], 1, "must be an http:// URL"),
        (&["--webhook-url", "http://127.0.0.1:9/hook"], &[], 1, "--webhook-url needs --webhook-secret"),
        (
            &[],
            &[("RELAY_WEBHOOK_URL", "http://127.0.0.1:9/hook"), ("RELAY_WEBHOOK_SECRET", "")],
            1,
            "needs --webhook-secret",
        ),
        (&["--webhook-secret", "s"], &[], 1, "--webhook-secret is set but --webhook-url is not"),
        (
            &["--webhook-url", "http://127.0.0.1:9/hook", "--webhook-secret", "whsec_not*base64"],
            &[],
            1,
            "--webhook-secret starts with whsec_ but what follows is not base64",
        ),
    ];
    for (flags, env, exit, message) in refusals {
        let args: Vec<&str> = serve.iter().chain(flags).copied().collect();
        let (code, text) = run(&args, env).await;
        assert_eq!(code, Some(exit), "{flags:?} {env:?}: {text}");
        assert!(text.contains(message) && !text.contains("listening on"), "{flags:?} {env:?}: {text}");
    }
}
