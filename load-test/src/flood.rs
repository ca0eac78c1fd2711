//! The `flood` scenario: cursors must never crowd out logged messages. A flooder sends cursors flat out,
//! a publisher on the other target sends a timed logged `note` every `--every`, and a slow reader (at most
//! `--reader-fps` frames a second) records how late each note reaches it, how many frames it had to read
//! in between, whether it was cut, and whether the flooder's last cursor reached it in the end.
//! Whatever the relay does (queue, coalesce, cut) is reported, never a panic.

use std::borrow::Cow;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{unix_us, Socket};
use crate::report::nearest_rank;
use crate::welcome;
use crate::{FloodArgs, ReaderOn};

/// How long after the flood the reader keeps reading before the report: time to catch up to the last cursor.
const AFTER: Duration = Duration::from_secs(2);
/// Cursors written before each flush: as fast as the socket takes them, without a syscall per frame.
const BATCH: u64 = 64;
/// The user ids the reader tells frames apart by.
const FLOODER: &str = "flooder";
const PUBLISHER: &str = "publisher";

/// What the flooder did.
struct Flooded {
    /// Cursors written: the last one's `x` is `sent - 1`.
    sent: u64,
    /// Why it stopped before the end, if it did.
    failed: Option<String>,
}

/// What the slow reader saw.
#[derive(Default)]
struct Read {
    /// Text frames read, of any type.
    frames: u64,
    /// Cursor frames from the flooder.
    cursors: u64,
    /// Of those, the ones read before the flood ended: the pace the relay fed the reader.
    cursors_in_flood: u64,
    /// The `x` of the latest flooder cursor read.
    last_x: Option<u64>,
    /// Per note read: send-to-receive latency (ms) and frames read since the previous note (or the start).
    notes: Vec<(f64, u64)>,
    /// How the connection ended before the report, if it did: a close code or what broke.
    closed: Option<String>,
    /// The relay's close code, if it sent one (4009: cut as too slow).
    close_code: Option<u16>,
    /// From the flood's start to the reader's last read.
    seconds: f64,
}

/// The fields of a server frame the reader looks at.
#[derive(Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    /// The sender's user id: which of our clients it came from.
    from: Option<String>,
    /// A cursor's `x`, a note's `t`.
    data: Option<Value>,
}

/// Just a frame's type, borrowed: the publisher may receive the flooder's cursors by the hundred thousand.
#[derive(Deserialize)]
struct Kind<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

/// Runs the scenario and prints its report; an error only when a client cannot join.
pub async fn flood(args: &FloodArgs) -> anyhow::Result<()> {
    let targets = &args.common.targets;
    anyhow::ensure!(args.reader_fps > 0, "--reader-fps must be above zero");
    let canvas = format!("{}-flood", args.common.prefix);
    let (flooder_at, other) = (&targets[0], &targets[1 % targets.len()]);
    let reader_at = match args.reader_on {
        ReaderOn::First => flooder_at,
        ReaderOn::Second => other,
    };
    let open = |target: &str, user: &'static str| {
        let (target, canvas) = (target.to_string(), canvas.clone());
        async move {
            let joined = welcome::open(&target, &canvas, user).await;
            joined.map(|j| j.socket).map_err(|e| anyhow::anyhow!("the {user} could not join: {e}"))
        }
    };
    // The reader joins first, so every later frame of the canvas reaches it.
    let reader = open(reader_at, "reader").await?;
    let (publisher, flooder) = (open(other, PUBLISHER).await?, open(flooder_at, FLOODER).await?);
    let started = Instant::now();
    let (flood_end, report_at) = (started + args.common.duration, started + args.common.duration + AFTER);
    let reading = tokio::spawn(read_slowly(reader, args.reader_fps, (started, flood_end), report_at));
    let publishing = tokio::spawn(publish(publisher, args.every, flood_end, report_at));
    let flooded = flood_cursors(flooder, flood_end, report_at).await;
    let read = reading.await?;
    let published = publishing.await?;
    let outcome = json!({
        "scenario": "flood", "canvas": canvas, "seconds": args.common.duration.as_secs_f64(),
        "flooder": {"target": flooder_at, "cursors_sent": flooded.sent,
                    "per_second": flooded.sent as f64 / args.common.duration.as_secs_f64().max(1e-9),
                    "last_x": flooded.sent.checked_sub(1), "failed": flooded.failed},
        "publisher": {"target": other, "every_ms": args.every.as_micros() as f64 / 1000.0, "sent": published.0,
                      "acked": published.1, "failed": published.2},
        "reader": reader_json(&read, reader_at, args),
        "logged": logged_json(&read, published.0),
        "latest_delivered": read.last_x.is_some() && read.last_x == flooded.sent.checked_sub(1),
    });
    if args.common.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        print!("{}", human(&outcome));
    }
    Ok(())
}

/// Sends cursors `x = y = 0, 1, 2, ..` as fast as the socket takes them until `end`, draining whatever
/// arrives meanwhile, and leaves at `until`: leaving earlier would be one more logged frame for the reader.
async fn flood_cursors(socket: Socket, end: Instant, until: Instant) -> Flooded {
    let (mut sink, mut stream) = socket.split();
    let drain = tokio::spawn(async move {
        while let Ok(Some(Ok(_))) = tokio::time::timeout_at(until, stream.next()).await {}
        stream
    });
    let mut flooded = Flooded { sent: 0, failed: None };
    'flood: while Instant::now() < end {
        for _ in 0..BATCH {
            let i = flooded.sent;
            let frame = format!(r#"{{"type":"cursor","data":{{"x":{i},"y":{i}}}}}"#);
            if let Err(error) = sink.feed(Message::text(frame)).await {
                flooded.failed = Some(error.to_string());
                break 'flood;
            }
            flooded.sent += 1;
        }
        if let Err(error) = sink.flush().await {
            flooded.failed = Some(error.to_string());
            break;
        }
    }
    if let Ok(stream) = drain.await {
        if let Ok(socket) = stream.reunite(sink) {
            welcome::close(socket).await;
        }
    }
    flooded
}

/// Reads at most `fps` frames a second until `until` or until the relay closes the connection.
/// `flood` is when the flood starts and ends.
async fn read_slowly(mut socket: Socket, fps: u32, flood: (Instant, Instant), until: Instant) -> Read {
    let mut read = Read::default();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / fps as f64));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut since_note = 0;
    loop {
        let next = tokio::time::timeout_at(until, async {
            tick.tick().await;
            socket.next().await
        });
        let text = match next.await {
            Err(_) => break, // time for the report
            Ok(Some(Ok(Message::Text(text)))) => text,
            Ok(Some(Ok(Message::Close(frame)))) => {
                read.close_code = frame.map(|f| u16::from(f.code));
                read.closed =
                    Some(read.close_code.map_or("a close without a code".into(), |code| format!("close code {code}")));
                break;
            }
            Ok(Some(Ok(_))) => continue, // ping, pong, binary: not the relay's frames
            Ok(Some(Err(error))) => {
                read.closed = Some(format!("connection broke: {error}"));
                break;
            }
            Ok(None) => {
                read.closed = Some("the connection ended without a close frame".into());
                break;
            }
        };
        read.frames += 1;
        since_note += 1;
        let Ok(frame) = serde_json::from_str::<Frame>(&text) else { continue };
        let from = frame.from.as_deref();
        let data = frame.data.unwrap_or(Value::Null);
        match frame.kind.as_str() {
            "cursor" if from == Some(FLOODER) => {
                read.cursors += 1;
                read.cursors_in_flood += u64::from(Instant::now() < flood.1);
                read.last_x = data["x"].as_u64().or(read.last_x);
            }
            "note" if from == Some(PUBLISHER) => {
                let latency_ms = unix_us().saturating_sub(data["t"].as_u64().unwrap_or(0)) as f64 / 1000.0;
                read.notes.push((latency_ms, since_note));
                since_note = 0;
            }
            _ => {}
        }
    }
    read.seconds = flood.0.elapsed().as_secs_f64();
    if read.closed.is_none() {
        welcome::close(socket).await;
    }
    read
}

/// Sends a logged note carrying its send time (unix µs) every `every` until `end`, reads (and counts the
/// acks of) whatever arrives until `until`, then leaves. Returns notes sent, acked, and what failed.
async fn publish(mut socket: Socket, every: Duration, end: Instant, until: Instant) -> (u64, u64, Option<String>) {
    let (mut sent, mut acked, mut failed) = (0, 0, None);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick(), if Instant::now() < end => {
                let note = json!({"type": "note", "ref": sent.to_string(), "data": {"t": unix_us()}});
                if let Err(error) = socket.send(Message::text(note.to_string())).await {
                    failed = Some(format!("send failed: {error}"));
                    break;
                }
                sent += 1;
            }
            frame = socket.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    acked += u64::from(serde_json::from_str::<Kind>(&text).is_ok_and(|k| k.kind == "ack"));
                }
                Some(Ok(Message::Close(frame))) => {
                    failed = Some(frame.map_or("closed without a code".into(), |f| format!("closed with code {}", u16::from(f.code))));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => { failed = Some(format!("connection broke: {error}")); break }
                None => { failed = Some("the connection ended".into()); break }
            },
            _ = tokio::time::sleep_until(until) => break,
        }
    }
    if failed.is_none() {
        welcome::close(socket).await;
    }
    (sent, acked, failed)
}

fn reader_json(read: &Read, target: &str, args: &FloodArgs) -> Value {
    json!({
        "target": target, "on": args.reader_on, "max_fps": args.reader_fps,
        "frames": read.frames, "cursors": read.cursors,
        // Read during the flood, over the flood or the reader's life if it was cut sooner.
        "cursors_per_second_in_flood":
            read.cursors_in_flood as f64 / read.seconds.min(args.common.duration.as_secs_f64()).max(1e-9),
        "seconds": read.seconds, "last_x": read.last_x, "closed": read.closed, "close_code": read.close_code,
    })
}

fn logged_json(read: &Read, sent: u64) -> Value {
    let mut latency: Vec<f64> = read.notes.iter().map(|(ms, _)| *ms).collect();
    latency.sort_by(f64::total_cmp);
    let mut between: Vec<f64> = read.notes.iter().map(|(_, n)| *n as f64).collect();
    between.sort_by(f64::total_cmp);
    json!({
        "received": read.notes.len(), "sent": sent,
        "latency_ms": {"p50": nearest_rank(&latency, 0.5), "max": nearest_rank(&latency, 1.0)},
        "frames_between": {"p50": nearest_rank(&between, 0.5), "max": nearest_rank(&between, 1.0)},
    })
}

/// The human summary, from the JSON report (one source for both).
fn human(o: &Value) -> String {
    let (f, p, r, l) = (&o["flooder"], &o["publisher"], &o["reader"], &o["logged"]);
    let num = |v: &Value| v.as_f64().unwrap_or(0.0);
    let mut out = format!(
        "flood: cursors flat out for {:.1} s from {}; reader on {} ({}, at most {} frames/s); a logged note every {} ms from {}\n",
        num(&o["seconds"]), f["target"].as_str().unwrap_or(""), r["target"].as_str().unwrap_or(""),
        r["on"].as_str().unwrap_or(""), r["max_fps"], p["every_ms"], p["target"].as_str().unwrap_or(""),
    );
    out += &format!(
        "  flooder: {} cursors sent ({:.0}/s), last x {}\n",
        f["cursors_sent"],
        num(&f["per_second"]),
        f["last_x"]
    );
    if let Some(failed) = f["failed"].as_str() {
        out += &format!("    flooder stopped: {failed}\n");
    }
    out += &format!("  logged: {}/{} received", l["received"], l["sent"]);
    if l["received"] != 0 {
        out += &format!(
            "; latency p50 {:.1} ms, max {:.1} ms; frames read between two: p50 {}, max {}",
            num(&l["latency_ms"]["p50"]),
            num(&l["latency_ms"]["max"]),
            num(&l["frames_between"]["p50"]),
            num(&l["frames_between"]["max"]),
        );
    }
    out += "\n";
    if let Some(failed) = p["failed"].as_str() {
        out += &format!("    publisher stopped: {failed}\n");
    }
    let closed = match r["closed"].as_str() {
        None => "no".to_string(),
        Some(how) if r["close_code"] == 4009 => format!("yes, {how} (cut as too slow)"),
        Some(how) => format!("yes, {how}"),
    };
    out += &format!(
        "  reader: {} frames read in {:.1} s, {} cursors ({:.0}/s during the flood); closed: {closed}\n",
        r["frames"],
        num(&r["seconds"]),
        r["cursors"],
        num(&r["cursors_per_second_in_flood"]),
    );
    let yes = if o["latest_delivered"].as_bool() == Some(true) { "yes" } else { "no" };
    let x = |v: &Value| if v.is_null() { "none".to_string() } else { v.to_string() };
    out += &format!(
        "  latest delivered: {yes} (last cursor read x={}, last sent x={})\n",
        x(&r["last_x"]),
        x(&f["last_x"])
    );
    out
}
