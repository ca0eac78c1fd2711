//! The `stream` scenario: what `GET /api/v1/stream` delivers and how fast. Live mode: `--readers` streams
//! opened on the first target at the head, then publishers (`publish`) send `--rate` messages a second over
//! `--canvases` canvases for `--duration` (or a burst of `--messages`, `--window` unacked per canvas); each
//! reader reports events per second, the lag from commit `ts` and from the send time, and whether every seq
//! came once per canvas, in order (`judge`). Backlog mode (`--backlog N`): N messages first, then one reader
//! with `?since=0`, timed until it has drained them. A stream that ends early is reopened with
//! `Last-Event-ID`, as a real consumer would, and counted.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::judge::Judge;
use crate::ledger::{Canvases, Ledger};
use crate::publish::{self, Plan, Published, Shape};
use crate::report::percentiles;
use crate::sse::{self, Sse};
use crate::StreamArgs;

const PATH: &str = "/api/v1/stream";
/// Reopens allowed per reader before it is reported as failed.
const MAX_REOPENS: u64 = 100;

/// Where a reader reads from, to reopen it.
#[derive(Clone)]
struct Source {
    target: String,
    api_key: Option<String>,
}

/// The acked heads and the latest time to reach them, once publishing is over.
type Finish = Option<(Vec<u64>, Instant)>;

/// Runs the scenario (live or backlog mode) and prints its report.
pub async fn stream(args: &StreamArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.canvases > 0 && args.window > 0, "--canvases and --window must be above zero");
    let source = Source { target: args.common.targets[0].clone(), api_key: args.api_key.clone() };
    let outcome = match args.backlog {
        Some(count) => backlog(args, &source, count).await?,
        None => live(args, &source).await?,
    };
    if args.common.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        print!("{}", human(&outcome));
    }
    Ok(())
}

/// Readers at the head first, then the publishers; the readers stop once they reached every acked head.
async fn live(args: &StreamArgs, source: &Source) -> anyhow::Result<Value> {
    anyhow::ensure!(args.readers > 0, "--readers must be above zero");
    anyhow::ensure!(args.messages.is_some() || args.rate > 0, "--rate must be above zero");
    let canvases = Arc::new(Canvases::new(&args.common.prefix, "st", args.canvases));
    let mut streams = Vec::with_capacity(args.readers);
    for _ in 0..args.readers {
        streams.push(open(source, PATH, None).await?);
    }
    // The 200 is in; give the relay a moment to have each reader listening before the first message.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ledger = Arc::new(Ledger::new(args.canvases, false));
    let sockets = publish::connect(&args.common.targets, &canvases).await?;
    let (finish, finished) = watch::channel::<Finish>(None);
    let began = Instant::now();
    let readers: Vec<_> = streams
        .into_iter()
        .map(|sse| tokio::spawn(read(sse, Judge::new(canvases.clone(), true), source.clone(), finished.clone())))
        .collect();
    let start = Instant::now() + Duration::from_millis(200);
    let plan = match args.messages {
        Some(total) => Plan::Burst { total, window: args.window },
        None => Plan::Paced { rate: f64::from(args.rate), start, end: start + args.common.duration },
    };
    let published = publish::run(sockets, plan, shape(args), ledger.clone()).await?;
    let _ = finish.send(Some((ledger.heads(), Instant::now() + args.drain)));
    let mut judged = Vec::with_capacity(readers.len());
    for reader in readers {
        judged.push(reader.await?.to_json(began.into_std()));
    }
    let mode = match args.messages {
        Some(total) => json!({"burst": total, "window": args.window}),
        None => json!({"rate": args.rate, "seconds": args.common.duration.as_secs_f64()}),
    };
    Ok(json!({
        "scenario": "stream", "mode": mode, "canvases": args.canvases, "instances": args.common.targets.len(),
        "reader_target": source.target, "published": published_json(&published, ledger.total()),
        "readers": judged,
    }))
}

/// `count` messages first, then one reader from `since=0`, timed from its request to the last acked head.
async fn backlog(args: &StreamArgs, source: &Source, count: u64) -> anyhow::Result<Value> {
    anyhow::ensure!(count > 0, "--backlog must be above zero");
    let canvases = Arc::new(Canvases::new(&args.common.prefix, "sb", args.canvases));
    let ledger = Arc::new(Ledger::new(args.canvases, false));
    let sockets = publish::connect(&args.common.targets, &canvases).await?;
    let plan = Plan::Burst { total: count, window: args.window };
    let published = publish::run(sockets, plan, shape(args), ledger.clone()).await?;
    let opened = Instant::now();
    let sse = open(source, &format!("{PATH}?since=0"), None).await?;
    let judge = Judge::new(canvases, false);
    let (_finish, finished) = watch::channel::<Finish>(Some((ledger.heads(), Instant::now() + args.drain)));
    let judge = read(sse, judge, source.clone(), finished).await;
    let seconds = judge.caught_up.or(judge.last_at).map(|at| at.saturating_duration_since(opened.into_std()));
    let seconds = seconds.map_or(0.0, |s| s.as_secs_f64());
    Ok(json!({
        "scenario": "stream", "mode": {"backlog": count, "window": args.window}, "canvases": args.canvases,
        "instances": args.common.targets.len(), "reader_target": source.target,
        "published": published_json(&published, ledger.total()),
        "catch_up": {
            "seconds": seconds, "caught_up": judge.caught_up.is_some(),
            "events_per_second": judge.all_events as f64 / seconds.max(1e-9),
        },
        "readers": [judge.to_json(opened.into_std())],
    }))
}

fn shape(args: &StreamArgs) -> Shape {
    Shape { payload: args.common.payload, keyed: args.common.idempotency_keys }
}

async fn open(source: &Source, path: &str, last_id: Option<&str>) -> anyhow::Result<Sse> {
    sse::open(&source.target, path, source.api_key.as_deref(), last_id).await.map_err(|e| {
        let hint = if source.api_key.is_none() { " (start the relays with RELAY_API_KEY, pass --api-key)" } else { "" };
        anyhow::anyhow!("{e}{hint}")
    })
}

/// Reads and judges events until the judge reached the heads `finished` announces, or its deadline passes;
/// a stream that ends is reopened after the last event's id.
async fn read(mut sse: Sse, mut judge: Judge, source: Source, mut finished: watch::Receiver<Finish>) -> Judge {
    let mut deadline = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let mut announced = false;
    loop {
        if !announced {
            if let Some((heads, until)) = finished.borrow_and_update().clone() {
                judge.set_heads(heads);
                (deadline, announced) = (until, true);
            }
        }
        if judge.done() {
            return judge;
        }
        let next = tokio::select! {
            next = sse.next() => next,
            changed = finished.changed(), if !announced => {
                if changed.is_err() {
                    return judge; // the run ended without heads: nothing more to wait for
                }
                continue;
            }
            _ = tokio::time::sleep_until(deadline) => return judge,
        };
        match next {
            Ok(Some(event)) => judge.event(&event),
            Ok(None) | Err(_) if judge.reopened < MAX_REOPENS => {
                judge.reopened += 1;
                match open(&source, PATH, judge.last_id.as_deref()).await {
                    Ok(reopened) => sse = reopened,
                    Err(e) => {
                        judge.failed = Some(format!("reopening: {e}"));
                        return judge;
                    }
                }
            }
            Ok(None) => return stopped(judge, "the stream ended".into()),
            Err(e) => return stopped(judge, format!("the stream broke: {e}")),
        }
    }
}

fn stopped(mut judge: Judge, why: String) -> Judge {
    judge.failed = Some(format!("{why} (after {MAX_REOPENS} reopens)"));
    judge
}

fn published_json(published: &Published, acked: u64) -> Value {
    json!({
        "sent": published.sent, "acked": acked, "errors": published.errors, "seconds": published.seconds,
        "acked_per_second": acked as f64 / published.seconds.max(1e-9),
        "ack_ms": percentiles(&published.ack_us), "failed": published.failed,
    })
}

/// The human summary, from the JSON report (one source for both).
fn human(o: &Value) -> String {
    let num = |v: &Value| v.as_f64().unwrap_or(0.0);
    let (m, p) = (&o["mode"], &o["published"]);
    let how = if !m["backlog"].is_null() {
        format!("backlog of {} (window {}), then one reader from since=0", m["backlog"], m["window"])
    } else if !m["burst"].is_null() {
        format!("burst of {} (window {} per canvas)", m["burst"], m["window"])
    } else {
        format!("{} msg/s for {:.1} s", m["rate"], num(&m["seconds"]))
    };
    let mut out = format!(
        "stream: {how} over {} canvases on {} instances; readers on {}\n",
        o["canvases"],
        o["instances"],
        o["reader_target"].as_str().unwrap_or("")
    );
    out += &format!(
        "  published: sent {}, acked {} ({:.0}/s), errors {}; ack p50 {:.3} ms, p99 {:.3} ms\n",
        p["sent"],
        p["acked"],
        num(&p["acked_per_second"]),
        p["errors"],
        num(&p["ack_ms"]["p50"]),
        num(&p["ack_ms"]["p99"])
    );
    for failed in p["failed"].as_array().into_iter().flatten() {
        out += &format!("    publisher: {}\n", failed.as_str().unwrap_or(""));
    }
    if let Some(c) = o.get("catch_up") {
        let done = if c["caught_up"] == true { "caught up" } else { "NOT caught up" };
        out += &format!(
            "  catch-up: {:.0} events/s ({} events in {:.3} s, {done})\n",
            num(&c["events_per_second"]),
            o["readers"][0]["all_events"],
            num(&c["seconds"])
        );
    }
    for (i, r) in o["readers"].as_array().into_iter().flatten().enumerate() {
        out += &reader_line(i, r, o.get("catch_up").is_none());
    }
    out
}

fn reader_line(i: usize, r: &Value, timed: bool) -> String {
    let num = |v: &Value| v.as_f64().unwrap_or(0.0);
    let mut out = format!(
        "  reader {i}: {} events ({} published ones), {:.0} events/s; violations {} (repeated {}, skipped {}, missing {}); gaps {}, resets {}, reopened {}\n",
        r["events"], r["ours"], num(&r["events_per_second"]), r["violations"], r["repeated"], r["skipped"],
        r["missing"], r["gaps"], r["resets"], r["reopened"],
    );
    if timed {
        for (name, key) in [("commit ts->event", "commit_to_event_ms"), ("send->event", "send_to_event_ms")] {
            let h = &r[key];
            out += &format!(
                "    {name:<18} p50 {:>8.3}  p99 {:>8.3}  max {:>8.3} ms  (n={})\n",
                num(&h["p50"]),
                num(&h["p99"]),
                num(&h["max"]),
                h["count"]
            );
        }
    }
    if let Some(failed) = r["failed"].as_str() {
        out += &format!("    stopped: {failed}\n");
    }
    out
}
