//! Bringing the keys of an earlier layout to layout 4 at start (`relay:format` names the layout). Layouts 1
//! and 2 are first taken to layout 3, one canvas at a time (`migrate_1.lua`: objects as whole JSON texts,
//! the index of canvases). Then each canvas of layout 3 gets its objects as one snapshot blob: read from its
//! `objects` hash a chunk at a time (HSCAN) and serialized here by the fold's own code, so the state is
//! exactly what the fold makes of it; and `migrate_3.lua` converts the rest (head, connections, expiry).
//! The indexes of connections by instance and by user are emptied first and written again from the
//! canvases. An interrupted migration is run again whole at the next start: each step is safe to repeat.
//!
//! Instances of another layout must not run against the same Redis: stop them all, then start this one.

use anyhow::Context;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;

use super::keys::{self, LAYOUT};
use super::scripts::{MIGRATE_1, MIGRATE_3};
use crate::core::fold::Objects;
use crate::protocol::{to_json, CanvasId};

/// Objects read, and field hashes deleted, per command.
const CHUNK: usize = 1000;

/// Brings the store to layout 4, or refuses a layout newer than this binary knows.
pub async fn run(conn: &mut ConnectionManager, forget_after_ms: i64) -> anyhow::Result<()> {
    let format: Option<u32> =
        redis::cmd("GET").arg(keys::FORMAT).query_async(conn).await.context("reading the key layout")?;
    match format {
        Some(LAYOUT) => return Ok(()),
        Some(newer) if newer > LAYOUT => anyhow::bail!(
            "Redis holds key layout {newer}, newer than this binary knows ({LAYOUT}): upgrade canvas-relay"
        ),
        _ => {}
    }
    let canvases: Vec<CanvasId> = scan(conn, "relay:{*}:head")
        .await?
        .iter()
        .filter_map(|key| key.strip_prefix("relay:{")?.strip_suffix("}:head"))
        .filter_map(|canvas| CanvasId::parse(canvas).ok())
        .collect();
    if format.unwrap_or(1) < 3 {
        for canvas in &canvases {
            let _: u64 = MIGRATE_1.arg(canvas.as_str()).invoke_async(conn).await.context("converting a canvas")?;
        }
    }
    for pattern in ["relay:i:*:conns", "relay:u:*", "relay:i:*:batch"] {
        for key in scan(conn, pattern).await? {
            let () = conn.unlink(key).await.context("emptying the indexes of connections")?;
        }
    }
    let () = conn.del(keys::USERS).await.context("emptying the index of users")?;
    let (mut objects, mut connections) = (0, 0);
    for canvas in &canvases {
        let (converted_objects, converted_connections) = convert(conn, canvas, forget_after_ms).await?;
        objects += converted_objects;
        connections += converted_connections;
    }
    let () = conn.set(keys::FORMAT, LAYOUT).await.context("recording the key layout")?;
    if !canvases.is_empty() {
        tracing::info!(canvases = canvases.len(), objects, connections, "Redis keys converted to layout {LAYOUT}");
    }
    Ok(())
}

/// Every key matching `pattern` (SCAN: Redis is never held for the whole keyspace).
async fn scan(conn: &mut ConnectionManager, pattern: &str) -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    let mut iter: redis::AsyncIter<String> = conn.scan_match(pattern).await.context("listing keys")?;
    while let Some(key) = iter.next_item().await {
        found.push(key.context("listing keys")?);
    }
    Ok(found)
}

/// One canvas to layout 4 (or, converted already, only its connections indexed again): returns its objects
/// and connections.
async fn convert(conn: &mut ConnectionManager, canvas: &CanvasId, forget_after_ms: i64) -> anyhow::Result<(u64, u64)> {
    let converted: bool = conn.hexists(keys::head(canvas), "rev").await.context("reading a canvas's head")?;
    let (key, bytes, count) = match converted {
        true => (String::new(), 0, 0),
        false => snapshot(conn, canvas).await?,
    };
    let connections: u64 = MIGRATE_3
        .arg(canvas.as_str())
        .arg(&key)
        .arg(bytes)
        .arg(count)
        .arg(forget_after_ms)
        .invoke_async(conn)
        .await
        .context("converting a canvas")?;
    Ok((count, connections))
}

/// Writes a layout-3 canvas's objects as its snapshot at its head's seq, and deletes the per-object field
/// hashes: returns the snapshot's key ('' for a canvas without objects), its bytes and its objects.
async fn snapshot(conn: &mut ConnectionManager, canvas: &CanvasId) -> anyhow::Result<(String, u64, u64)> {
    let hash = format!("relay:{{{}}}:objects", canvas.as_str());
    let mut members: Vec<(String, String)> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, chunk): (u64, Vec<(String, String)>) =
            redis::cmd("HSCAN").arg(&hash).arg(cursor).arg("COUNT").arg(CHUNK).query_async(conn).await?;
        members.extend(chunk);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    if members.is_empty() {
        return Ok((String::new(), 0, 0));
    }
    members.sort_by(|a, b| a.0.cmp(&b.0));
    members.dedup_by(|a, b| a.0 == b.0); // HSCAN may return a field twice
    let mut text = String::from("{");
    for (i, (id, object)) in members.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&to_json(id));
        text.push(':');
        text.push_str(object);
    }
    text.push('}');
    let objects = Objects::from_json(&text).with_context(|| format!("reading the objects of canvas {canvas}"))?;
    let (generation, seq): (u64, u64) =
        redis::cmd("HMGET").arg(keys::head(canvas)).arg("gen").arg("seq").query_async(conn).await?;
    let key = keys::snapshot(canvas, generation, seq, "layout3");
    let () = conn.set(&key, &objects.to_json()[..]).await.context("writing a canvas's snapshot")?;
    for chunk in members.chunks(CHUNK) {
        let fields: Vec<String> = chunk.iter().map(|(id, _)| format!("relay:{{{}}}:o:{id}", canvas.as_str())).collect();
        let () = conn.unlink(fields).await.context("deleting a canvas's field hashes")?;
    }
    Ok((key, objects.bytes(), objects.len() as u64))
}
