//! The stream reader: one task per process, on its own Redis connection, blocked in one `XREAD` over the
//! streams this process needs: the log and cursor streams of each canvas it has clients on, the shared
//! user-message stream, and its own wake-up stream. Redis answers the moment any of them grows, so other
//! instances' messages arrive without polling, and a canvas with no local client costs nothing.
//!
//! A log stream is read from where its room has delivered up to (`stream_id(generation, delivered)`), so
//! the reader keeps no position of its own for logs and never skips a seq: whatever the room has not
//! delivered is read again. A join that creates a room writes to the wake-up stream, which ends the blocked
//! read so the next one includes the new canvas.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Value};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::entry::{ack_on, array, field, pairs, parse_entries, stream_id, text};
use super::keys;
use super::link::Link;
use crate::clock::now_ms;
use crate::hub::{Entry, Hub, Room, Settled};
use crate::metrics::Metrics;
use crate::protocol::{logged_frame, reset_frame, CanvasId};
use crate::store::epoch;
use crate::store::records::LogEntry;

/// How long one XREAD blocks before it is sent again (with the current set of canvases).
const BLOCK: Duration = Duration::from_secs(2);
/// Entries per stream per read.
const COUNT: usize = 512;
/// Reconnect backoff: from the first to the last, doubling.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(5));
/// Cursors older than this when a canvas is first read are not relayed.
const CURSOR_LOOKBACK_MS: i64 = 1_000;

/// The stream reader of this process.
pub struct Reader {
    /// Where its own connection comes from (a blocked XREAD must not hold up anyone else's commands).
    pub client: Client,
    pub hub: Arc<Hub>,
    pub link: Arc<Link>,
    pub metrics: Metrics,
    /// This instance: its own user messages and cursors are not relayed back to it, and its own log
    /// entries are acked from the entry when the reader delivers them first.
    pub instance_id: String,
    /// User messages older than this (the TTL) are not relayed.
    pub ttl_ms: i64,
}

/// What a stream in the XREAD is for.
enum Stream {
    Wake,
    UserMessages,
    Log(Arc<Room>),
    Cursors(CanvasId),
}

/// Positions of the streams that are not logs, on Redis's clock.
struct Positions {
    wake: String,
    user_messages: String,
    cursors: HashMap<CanvasId, String>,
    /// Redis's clock minus ours, for starting a new canvas's cursor stream.
    clock_offset_ms: i64,
}

impl Reader {
    /// Runs until `stop` is cancelled, reconnecting with backoff whenever Redis fails.
    pub async fn run(self, stop: CancellationToken) {
        let mut backoff = BACKOFF.0;
        // Kept across reconnects: user messages sent while the reader was away are still delivered (within
        // the TTL); logs need no position of their own.
        let mut positions = None;
        loop {
            let error = tokio::select! {
                result = self.serve(&mut positions) => match result {
                    Ok(()) => return,
                    Err(error) => error,
                },
                () = stop.cancelled() => return,
            };
            tracing::warn!(%error, retry_in = ?backoff, "Redis stream reader failed; reconnecting");
            self.link.last_error.set(now_ms(), &format!("Redis: {error}"));
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = stop.cancelled() => return,
            }
            backoff = (backoff * 2).min(BACKOFF.1);
        }
    }

    /// One connection's life: check the epoch, take positions from Redis's clock the first time, then read
    /// until an error.
    async fn serve(&self, positions: &mut Option<Positions>) -> redis::RedisResult<()> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(BLOCK + Duration::from_secs(3)));
        let mut conn = self.client.get_multiplexed_async_connection_with_config(&config).await?;
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await?;
        let redis_now = secs * 1000 + micros / 1000;
        let epoch: Option<String> = redis::cmd("GET").arg(keys::EPOCH).query_async(&mut conn).await?;
        if let Some(epoch) = epoch {
            self.link.observe_epoch(&epoch, &self.hub);
        }
        tracing::info!("Redis stream reader connected");
        let positions = positions.get_or_insert_with(|| Positions {
            wake: "0".into(),
            user_messages: format!("{redis_now}-0"),
            cursors: HashMap::new(),
            clock_offset_ms: redis_now - now_ms(),
        });
        loop {
            self.read_once(&mut conn, positions).await?;
        }
    }

    async fn read_once(&self, conn: &mut MultiplexedConnection, positions: &mut Positions) -> redis::RedisResult<()> {
        let wake_key = keys::wake(&self.instance_id);
        let mut streams = vec![(wake_key, positions.wake.clone(), Stream::Wake)];
        streams.push((keys::USER_MESSAGES.to_owned(), positions.user_messages.clone(), Stream::UserMessages));
        let cursor_start = format!("{}-0", now_ms() + positions.clock_offset_ms - CURSOR_LOOKBACK_MS);
        let rooms = self.hub.all_rooms();
        positions.cursors.retain(|canvas, _| rooms.iter().any(|room| &room.canvas == canvas));
        for room in rooms {
            let (started, generation, delivered) = {
                let state = room.lock();
                (state.is_started(), state.generation(), state.delivered())
            };
            if !started {
                continue; // its join is still placing it; the join wakes us when it is done
            }
            let canvas = room.canvas.clone();
            let cursors_from = positions.cursors.entry(canvas.clone()).or_insert_with(|| cursor_start.clone()).clone();
            streams.push((keys::cursors(&canvas), cursors_from, Stream::Cursors(canvas.clone())));
            streams.push((keys::log(&canvas), stream_id(generation, delivered), Stream::Log(room)));
        }
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(COUNT).arg("BLOCK").arg(BLOCK.as_millis() as u64).arg("STREAMS");
        for (key, _, _) in &streams {
            cmd.arg(key);
        }
        for (_, from, _) in &streams {
            cmd.arg(from);
        }
        let reply: Value = cmd.query_async(conn).await?;
        self.link.last_read_ms.store(now_ms(), std::sync::atomic::Ordering::Release);
        self.metrics.polls.increment(1);
        let by_key: HashMap<&str, &Stream> = streams.iter().map(|(key, _, stream)| (key.as_str(), stream)).collect();
        for item in array(&reply).unwrap_or_default() {
            let Some([key, entries]) = array(item) else { continue };
            let Some(stream) = text(key).and_then(|key| by_key.get(key)) else { continue };
            let entries = array(entries).unwrap_or_default();
            self.metrics.poll_rows.increment(entries.len() as u64);
            match stream {
                Stream::Wake => positions.wake = last_id(entries).unwrap_or_else(|| positions.wake.clone()),
                Stream::UserMessages => {
                    self.relay_user_messages(entries);
                    positions.user_messages = last_id(entries).unwrap_or_else(|| positions.user_messages.clone());
                }
                Stream::Cursors(canvas) => {
                    self.relay_cursors(canvas, entries);
                    if let Some(last) = last_id(entries) {
                        positions.cursors.insert(canvas.clone(), last);
                    }
                }
                Stream::Log(room) => self.offer(room, entries),
            }
        }
        Ok(())
    }

    /// Hands a canvas's entries to its room, in log order, then checks for a hole the read proved permanent.
    fn offer(&self, room: &Room, entries: &[Value]) {
        let Some(epoch) = self.link.epoch() else { return };
        let entries = parse_entries(&room.canvas, entries);
        let Some(last) = entries.last().map(|e| (e.generation, e.seq)) else { return };
        let now = now_ms();
        let mut state = room.lock();
        for stored in &entries {
            if stored.instance != self.instance_id {
                // Redis's clock stamped it; the histogram is only as good as the hosts' clocks agree.
                self.metrics.peer_delivery_seconds.record((now - stored.ts).max(0) as f64 / 1000.0);
            }
            if stored.generation == state.generation() && stored.seq <= state.delivered() {
                continue; // delivered already (this process's own commits, mostly): no frame to build
            }
            if let Some(ack) = ack_on(stored, &self.instance_id) {
                state.expect_ack_unless_delivered(stored.generation, stored.seq, ack);
            }
            if state.offer_stored(room_entry(stored, &epoch), &self.metrics) {
                tracing::warn!(canvas = %room.canvas, "a canvas reset expired before this instance read it");
            }
        }
        // Entries come in log order from the room's position: a seq still waiting in the room at or below
        // the last one read can only be waiting for entries that expired before they were read.
        let (last_generation, last_seq) = last;
        if last_generation != state.generation() {
            return;
        }
        if let Settled::GapSkipped { from, to } = state.settle(last_seq as i64, &self.metrics) {
            tracing::warn!(canvas = %room.canvas, from, to, "entries expired before this instance read them; \
                subscribers cut with 4009 to resume");
        }
    }

    /// Other instances' user messages and removals (this process applied its own already), while within the
    /// TTL. A removal names its canvas (`k`) and no frame.
    fn relay_user_messages(&self, entries: &[Value]) {
        let oldest = now_ms() - self.ttl_ms;
        for entry in entries {
            let Some([id, fields]) = array(entry) else { continue };
            let ms = text(id).and_then(|id| id.split('-').next()?.parse::<i64>().ok()).unwrap_or(0);
            let Some(fields) = pairs(fields) else { continue };
            if field(&fields, "i") == Some(self.instance_id.as_str()) || ms < oldest {
                continue;
            }
            match (field(&fields, "u"), field(&fields, "d"), field(&fields, "k")) {
                (Some(user), Some(frame), None) => drop(self.hub.send_to_user(user, &Message::text(frame))),
                (Some(user), None, Some(canvas)) => {
                    if let Ok(canvas) = CanvasId::parse(canvas) {
                        self.hub.remove_user(&canvas, user);
                    }
                }
                _ => tracing::error!(?fields, "a user-message entry this relay did not write; skipped"),
            }
        }
    }

    /// Other instances' cursor batches to local clients of the canvas. Lossy by design, as on SQLite.
    fn relay_cursors(&self, canvas: &CanvasId, entries: &[Value]) {
        let Some(room) = self.hub.room(canvas) else { return };
        for entry in entries {
            let Some([_, fields]) = array(entry) else { continue };
            let Some(fields) = pairs(fields) else { continue };
            if field(&fields, "i") == Some(self.instance_id.as_str()) {
                continue;
            }
            if let Some(frames) = field(&fields, "d") {
                room.relay_batch(frames, &self.metrics);
            }
        }
    }
}

/// The room entry of a log entry: its `id` is the seq, since a room compares ids only within its generation
/// (Redis's stream ids already order generations, and generations come from a counter that only grows).
fn room_entry(entry: &LogEntry, store_epoch: &str) -> Entry {
    let canvas = entry.canvas.as_str();
    let frame = match entry.is_reset() {
        true => reset_frame(canvas, &epoch(store_epoch, entry.generation)),
        false => logged_frame(&entry.kind, entry.seq, canvas, &entry.from, &entry.data, entry.ts),
    };
    let (seq, generation, restore) = (entry.seq, entry.generation, entry.restore);
    Entry { seq, generation, id: seq as i64, frame: Message::text(frame), restore }
}

fn last_id(entries: &[Value]) -> Option<String> {
    let [id, ..] = array(entries.last()?)? else { return None };
    text(id).map(str::to_owned)
}
