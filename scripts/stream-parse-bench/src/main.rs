//! Reads one XREAD reply the shape the relay's stream reader gets (4 canvases × 64 entries of a typical
//! stroke, as `commit.lua` writes them) into entries two ways, and prints the cost per entry:
//!
//! - in place, as `store/redis/entry.rs` does (`LogEntry::parse`, copied here: the relay's modules are
//!   private);
//! - through `redis::streams::StreamReadReply`, then the same entry from its field map.
//!
//! Run: `cargo run --release --manifest-path scripts/stream-parse-bench/Cargo.toml`

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

use redis::streams::StreamReadReply;
use redis::{FromRedisValue, Value};

const STREAMS: usize = 4;
const ENTRIES: usize = 64; // the reader's XREAD COUNT
const ROUNDS: usize = 2_000;

#[derive(Default)]
#[allow(dead_code)] // read only through black_box
struct Entry {
    generation: u64,
    seq: u64,
    ts: i64,
    kind: String,
    from: String,
    data: String,
    instance: String,
    conn: String,
    reference: String,
}

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

fn text(value: &Value) -> Option<&str> {
    match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
        _ => None,
    }
}

fn array(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(items) => Some(items),
        _ => None,
    }
}

/// As `LogEntry::parse`: `[id, [field, value, ...]]`, read where it lies.
fn in_place(value: &Value) -> Option<Entry> {
    let [id, fields] = array(value)? else { return None };
    let (generation, _) = text(id)?.split_once('-')?;
    let mut entry = Entry { generation: generation.parse::<u64>().ok()?.checked_sub(1)?, ..Entry::default() };
    for pair in array(fields)?.chunks_exact(2) {
        let (field, value) = (text(&pair[0])?, text(&pair[1])?);
        match field {
            "ts" => entry.ts = value.parse().ok()?,
            "s" => entry.seq = value.parse().ok()?,
            "t" => entry.kind = value.to_owned(),
            "f" => entry.from = value.to_owned(),
            "d" => entry.data = value.to_owned(),
            "i" => entry.instance = value.to_owned(),
            "c" => entry.conn = value.to_owned(),
            "r" => entry.reference = value.to_owned(),
            _ => {}
        }
    }
    Some(entry)
}

/// The same entry from a `StreamId`'s id and field map.
fn from_map(id: &str, map: &HashMap<String, Value>) -> Option<Entry> {
    let (generation, _) = id.split_once('-')?;
    let field = |name: &str| map.get(name).and_then(text).map(str::to_owned).unwrap_or_default();
    Some(Entry {
        generation: generation.parse::<u64>().ok()?.checked_sub(1)?,
        seq: field("s").parse().ok()?,
        ts: field("ts").parse().ok()?,
        kind: field("t"),
        from: field("f"),
        data: field("d"),
        instance: field("i"),
        conn: field("c"),
        reference: field("r"),
    })
}

fn reply() -> Value {
    let data = r##"{"id":"s-1","kind":"stroke","points":[[1,2],[3,4],[5,6]],"color":"#0af","width":2}"##;
    let entry = |seq: usize| {
        let seq = seq.to_string();
        let fields = [
            "ts",
            "1764300000000",
            "s",
            &seq,
            "t",
            "object-create",
            "f",
            "ann",
            "d",
            data,
            "i",
            "6f1c1f7e-0000-4000-8000-000000000000",
            "c",
            "0b8d1f7e-0000-4000-8000-000000000000",
            "r",
            "=c-17",
        ];
        Value::Array(vec![bulk(&format!("1-{seq}")), Value::Array(fields.iter().map(|f| bulk(f)).collect())])
    };
    let stream = |canvas: usize| {
        let entries = (1..=ENTRIES).map(entry).collect();
        Value::Array(vec![bulk(&format!("relay:{{c{canvas}}}:log")), Value::Array(entries)])
    };
    Value::Array((0..STREAMS).map(stream).collect())
}

fn main() {
    let reply = reply();
    let per_entry = |started: Instant| started.elapsed().as_nanos() as f64 / (ROUNDS * STREAMS * ENTRIES) as f64;
    for _ in 0..3 {
        let started = Instant::now();
        for _ in 0..ROUNDS {
            for stream in array(&reply).unwrap() {
                for entry in array(&array(stream).unwrap()[1]).unwrap() {
                    black_box(in_place(entry));
                }
            }
        }
        let by_hand = per_entry(started);

        // The reader owns the reply it got, so the crate is handed a copy made outside the timing.
        let copies: Vec<Value> = (0..ROUNDS).map(|_| reply.clone()).collect();
        let started = Instant::now();
        for copy in copies {
            let parsed = StreamReadReply::from_redis_value(copy).unwrap();
            for key in &parsed.keys {
                for id in &key.ids {
                    black_box(from_map(&id.id, &id.map));
                }
            }
        }
        let with_crate = per_entry(started);
        println!("per entry: in place {by_hand:.0} ns, StreamReadReply {with_crate:.0} ns");
    }
}
