//! The `history` scenario (issue 29): fills one canvas with --objects objects, changes --changed of them
//! (one `object-update` each), then
//! - times --reads `GET /api/v1/canvases/{c}?at=SEQ` at seqs spread evenly over the whole history (the
//!   state after each is folded from the nearest snapshot plus the ops after it), alternating targets;
//! - opens --watchers clients (alternating targets), restores the state before the changes
//!   (`POST …/restore`, --changed creates), and times until every watcher has received the restore's last
//!   seq: the issue's "until every client on two instances has converged".

use std::time::{Duration, Instant};

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::client::Socket;
use crate::fill::{self, Answer};
use crate::report::nearest_rank;
use crate::welcome;
use crate::Common;

#[derive(Args, Clone)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub common: Common,
    /// The relays' API key (their --api-key), sent as `Authorization: Bearer`.
    #[arg(long)]
    pub api_key: Option<String>,
    #[arg(long, default_value_t = 100_000)]
    pub objects: usize,
    /// About how many bytes of JSON each object is.
    #[arg(long, default_value_t = 100)]
    pub object_bytes: usize,
    /// Objects changed after the fill (one update each), and so created again by the restore.
    #[arg(long, default_value_t = 10_000)]
    pub changed: usize,
    #[arg(long, default_value_t = 200)]
    pub reads: usize,
    #[arg(long, default_value_t = 4)]
    pub watchers: usize,
}

/// Updates in flight at once.
const WINDOW: usize = 256;
/// This long without a frame means the relay stalled.
const STALL: Duration = Duration::from_secs(60);

/// Runs the scenario and prints its report.
pub async fn history(args: &HistoryArgs) -> anyhow::Result<()> {
    let targets = &args.common.targets;
    let canvas = format!("{}-history", args.common.prefix);
    let key = args.api_key.as_deref();
    let filler = welcome::open(&targets[0], &canvas, "filler").await.map_err(|e| anyhow::anyhow!("join: {e}"))?;
    let filled = fill::fill(filler.socket, args.objects, args.object_bytes).await;
    anyhow::ensure!(filled.stopped.is_none(), "the fill stopped: {:?}", filled.stopped);
    let before = head(&targets[0], &canvas, key).await?;
    let changer = welcome::open(&targets[0], &canvas, "changer").await.map_err(|e| anyhow::anyhow!("join: {e}"))?;
    let changing = Instant::now();
    change(changer.socket, args.changed).await?;
    let changed_in = changing.elapsed();
    let end = head(&targets[0], &canvas, key).await?;
    eprintln!("filled {} objects and changed {} (seq {before} -> {end}); reading history", args.objects, args.changed);

    let mut reads = Vec::with_capacity(args.reads);
    let mut bytes = 0;
    for i in 0..args.reads {
        let seq = end * i as u64 / (args.reads.max(2) - 1) as u64;
        let started = Instant::now();
        let (status, body) =
            request(&targets[i % targets.len()], "GET", &format!("/api/v1/canvases/{canvas}?at={seq}"), key, "")
                .await?;
        reads.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(status == 200, "?at={seq}: HTTP {status}: {}", &body[..body.len().min(300)]);
        bytes += body.len();
    }
    reads.sort_by(f64::total_cmp);

    let mut watchers = Vec::with_capacity(args.watchers);
    for i in 0..args.watchers {
        let joined = welcome::open(&targets[i % targets.len()], &canvas, &format!("watcher{i}")).await;
        watchers.push(joined.map_err(|e| anyhow::anyhow!("watcher {i}: {e}"))?.socket);
    }
    let started = Instant::now();
    let (restore_seq, waiting) = tokio::join!(
        async {
            let body = format!(r#"{{"seq":{before}}}"#);
            let answer = request(&targets[0], "POST", &format!("/api/v1/canvases/{canvas}/restore"), key, &body).await;
            (answer, started.elapsed())
        },
        // Every watcher reads from now on; each returns the seq it got to and when, once it stops hearing.
        futures_util::future::join_all(watchers.into_iter().map(|socket| follow(socket, started))),
    );
    let (answer, answered_in) = restore_seq;
    let (status, answer) = answer?;
    anyhow::ensure!(status == 200, "restore: HTTP {status}: {answer}");
    let answer: Value = serde_json::from_str(&answer)?;
    let last = answer["seq"].as_u64().unwrap_or(0);
    let mut converged = Duration::ZERO;
    for (i, seen) in waiting.into_iter().enumerate() {
        let seen = seen?;
        let Some(&(_, at)) = seen.iter().find(|(seq, _)| *seq >= last) else {
            anyhow::bail!("watcher {i} never got the restore's last seq, {last}");
        };
        converged = converged.max(at);
    }
    let report = serde_json::json!({
        "objects": args.objects,
        "changed": args.changed,
        "changed_in_ms": changed_in.as_millis(),
        "history_seqs": end,
        "at_reads": args.reads,
        "at_ms": {
            "p50": nearest_rank(&reads, 0.5),
            "p99": nearest_rank(&reads, 0.99),
            "max": reads.last().copied().unwrap_or(0.0),
        },
        "at_mean_bytes": bytes / args.reads.max(1),
        "restore": { "ops": answer["ops"], "answered_ms": answered_in.as_millis(),
                     "every_watcher_converged_ms": converged.as_millis(), "watchers": args.watchers },
    });
    println!("{}", if args.common.json { report.to_string() } else { serde_json::to_string_pretty(&report)? });
    Ok(())
}

/// Updates objects `o-0` .. `o-{count-1}` once each, keeping a window unacked, until every one is acked.
async fn change(mut socket: Socket, count: usize) -> anyhow::Result<()> {
    let (mut next, mut acked, mut in_flight) = (0, 0, 0);
    while acked < count {
        while next < count && in_flight < WINDOW {
            let frame = format!(r#"{{"type":"object-update","ref":"u{next}","data":{{"id":"o-{next}","x":-1}}}}"#);
            socket.feed(Message::text(frame)).await?;
            (next, in_flight) = (next + 1, in_flight + 1);
        }
        socket.flush().await?;
        let Ok(Some(Ok(Message::Text(text)))) = tokio::time::timeout(STALL, socket.next()).await else {
            anyhow::bail!("the relay stopped answering updates after {acked}");
        };
        let Ok(answer) = serde_json::from_str::<Answer>(&text) else { continue };
        match (answer.kind.as_str(), answer.reference.as_deref()) {
            ("ack", Some(r)) if r.starts_with('u') => (acked, in_flight) = (acked + 1, in_flight - 1),
            ("error", _) => anyhow::bail!("an update was refused: {text}"),
            _ => {}
        }
    }
    welcome::close(socket).await;
    Ok(())
}

/// Reads a watcher's frames until it hears nothing for three seconds: each seq it got, and when.
async fn follow(mut socket: Socket, since: Instant) -> anyhow::Result<Vec<(u64, Duration)>> {
    let mut seen = Vec::new();
    while let Ok(Some(frame)) = tokio::time::timeout(Duration::from_secs(3), socket.next()).await {
        let Message::Text(text) = frame? else { continue };
        // Only the seq is read: `"seq":N` as the relay writes it, without parsing the frame.
        if let Some(n) = text.split("\"seq\":").nth(1).and_then(|rest| rest.split([',', '}']).next()) {
            if let Ok(n) = n.parse::<u64>() {
                seen.push((n, since.elapsed()));
            }
        }
    }
    welcome::close(socket).await;
    Ok(seen)
}

/// The canvas's head seq (`GET /api/v1/canvases/{c}/versions` would not say it: the current state's read).
async fn head(target: &str, canvas: &str, key: Option<&str>) -> anyhow::Result<u64> {
    let (status, body) = request(target, "GET", &format!("/api/v1/canvases/{canvas}"), key, "").await?;
    anyhow::ensure!(status == 200, "GET the canvas: HTTP {status} (start the relays with --api-key, pass --api-key)");
    let body: Value = serde_json::from_str(&body)?;
    body["seq"].as_u64().ok_or_else(|| anyhow::anyhow!("no seq in the canvas's state"))
}

/// One plain HTTP/1.1 request, `Connection: close`: (status, body).
async fn request(
    target: &str,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(target).await?;
    let auth = key.map(|key| format!("Authorization: Bearer {key}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {target}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8(response)?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(|| anyhow::anyhow!("no HTTP answer"))?;
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    // A chunked body (hyper chunks bodies of unknown length) is de-chunked here.
    let body = match head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        true => dechunk(body),
        false => body.to_owned(),
    };
    Ok((status, body))
}

fn dechunk(mut text: &str) -> String {
    let mut body = String::new();
    while let Some((size, rest)) = text.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 || rest.len() < size {
            break;
        }
        body.push_str(&rest[..size]);
        text = rest[size..].trim_start_matches("\r\n");
    }
    body
}
