//! How this process learns of commits in the shared file and reads them: a dedicated thread with its own
//! connection checks `PRAGMA data_version` (about 3 µs; it changes when any other connection commits) every
//! `--poll-interval`, and on a change reads every new row after the process's read cursor in one primary-key
//! range scan, handing rows of canvases with local subscribers to their rooms.
//!
//! Its cost per tick is one PRAGMA whatever the number of canvases; per commit it is the rows committed.
//! Backoff: after `--backoff-after` without traffic the interval doubles up to `--idle-poll-interval`; a
//! commit that brought messages, cursors or user messages, a local publish or a wake-up resets it (the
//! peer-wakeup idea, with the file's own change counter as the wake-up). Commits that carry no traffic (every
//! instance's heartbeat) are read but do not reset it. With no local canvases it sleeps at the idle interval.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_sqlite::rusqlite::Connection;
use tokio_tungstenite::tungstenite::Message;

use super::queries::{self, Relayed};
use super::Progress;
use crate::clock::now_ms;
use crate::hub::{Hub, Room, Settled};
use crate::metrics::Metrics;
use crate::protocol::CanvasId;

/// The adaptive interval between checks.
#[derive(Debug, Clone)]
pub struct Backoff {
    active: Duration,
    idle: Duration,
    after: Duration,
    current: Duration,
    last_activity: Instant,
}

impl Backoff {
    pub fn new(active: Duration, idle: Duration, after: Duration, now: Instant) -> Self {
        Backoff { active, idle, after, current: active, last_activity: now }
    }

    pub fn interval(&self) -> Duration {
        self.current
    }

    /// A commit or local activity: check at the active rate again.
    pub fn activity(&mut self, now: Instant) {
        self.current = self.active;
        self.last_activity = now;
    }

    /// Nothing happened this tick. Back off once quiet for long enough; at once when there is nobody to
    /// deliver to.
    pub fn quiet(&mut self, now: Instant, has_local_canvases: bool) {
        if !has_local_canvases {
            self.current = self.idle;
        } else if now.duration_since(self.last_activity) >= self.after {
            self.current = (self.current * 2).min(self.idle);
        }
    }
}

pub struct Watcher {
    /// Its own connection: `data_version` is per connection and counts the others' commits.
    conn: Connection,
    hub: Arc<Hub>,
    progress: Arc<Progress>,
    metrics: Metrics,
    backoff: Backoff,
    max_rows: u32,
    /// This instance's id: its own cursor batches were delivered locally already.
    instance_id: String,
    /// The last cursor batch read. Only this thread uses it; cursors need no cross-thread promise.
    cursor_batches_read: i64,
    /// The last user message read, likewise.
    user_messages_read: i64,
    /// The last removal read, likewise.
    removals_read: i64,
}

/// Where the relayed tables (other instances' cursor batches and user messages) end when this instance
/// starts: it relays what comes after.
#[derive(Debug, Clone, Copy)]
pub struct RelayedHeads {
    pub cursor_batches: i64,
    pub user_messages: i64,
    pub removals: i64,
}

impl RelayedHeads {
    pub fn read(conn: &Connection) -> deadpool_sqlite::rusqlite::Result<RelayedHeads> {
        Ok(RelayedHeads {
            cursor_batches: queries::max_relayed_id(conn, Relayed::CursorBatches)?,
            user_messages: queries::max_relayed_id(conn, Relayed::UserMessages)?,
            removals: queries::max_relayed_id(conn, Relayed::Removals)?,
        })
    }
}

impl Watcher {
    pub fn new(
        conn: Connection,
        hub: Arc<Hub>,
        progress: Arc<Progress>,
        metrics: Metrics,
        config: &crate::config::Config,
        instance_id: String,
        relayed: RelayedHeads,
    ) -> Self {
        let backoff =
            Backoff::new(config.poll_interval, config.idle_poll_interval, config.backoff_after, Instant::now());
        let RelayedHeads {
            cursor_batches: cursor_batches_read,
            user_messages: user_messages_read,
            removals: removals_read,
        } = relayed;
        let max_rows = config.max_messages_per_poll;
        Watcher {
            conn,
            hub,
            progress,
            metrics,
            backoff,
            max_rows,
            instance_id,
            cursor_batches_read,
            user_messages_read,
            removals_read,
        }
    }

    pub fn run(mut self) {
        let mut last_version = None;
        loop {
            let wakeups = self.progress.signal.wait(self.backoff.interval());
            if wakeups.stop {
                return;
            }
            let version = match self.data_version() {
                Ok(version) => Some(version),
                Err(error) => {
                    self.failed(&error);
                    continue;
                }
            };
            let changed = version != last_version;
            last_version = version;
            let mut found = false;
            if changed || wakeups.read {
                match self.read_in_one_snapshot(&wakeups.settle) {
                    Ok(read) => found = read,
                    Err(error) => {
                        self.failed(&error);
                        last_version = None; // read again on the next tick
                        continue;
                    }
                }
            }
            // Only traffic keeps the fast rate: the file also changes with every instance's heartbeat, and
            // treating those commits as activity would keep an idle relay polling every millisecond.
            let now = Instant::now();
            if found || wakeups.read || wakeups.active {
                self.backoff.activity(now);
            } else {
                self.backoff.quiet(now, !self.hub.is_empty());
            }
        }
    }

    fn failed(&mut self, error: &dyn std::fmt::Display) {
        tracing::warn!(%error, "watcher could not read the progress file; retrying");
        self.progress.read_failed(now_ms(), &error.to_string());
        self.backoff.quiet(Instant::now(), false);
    }

    fn data_version(&self) -> deadpool_sqlite::rusqlite::Result<i64> {
        self.conn.prepare_cached("PRAGMA data_version")?.query_row([], |row| row.get(0))
    }

    /// [`Watcher::read_new_rows`] in one read transaction: its three queries take the file's read lock once.
    fn read_in_one_snapshot(&mut self, settle: &[CanvasId]) -> deadpool_sqlite::rusqlite::Result<bool> {
        self.conn.prepare_cached("BEGIN")?.execute([])?;
        let read = self.read_new_rows(settle);
        let end = self.conn.prepare_cached(if read.is_ok() { "COMMIT" } else { "ROLLBACK" })?.execute([]);
        let found = read?;
        end?;
        Ok(found)
    }

    /// Reads everything after the cursor, in full batches until caught up, then checks rooms that hold early
    /// seqs for holes that can no longer fill. Returns whether it found any message, cursor or user message.
    fn read_new_rows(&mut self, settle: &[CanvasId]) -> deadpool_sqlite::rusqlite::Result<bool> {
        let mut waiting: Vec<Arc<Room>> = settle.iter().filter_map(|c| self.hub.room(c)).collect();
        let mut found = false;
        loop {
            // With no local canvas nothing needs delivering: move the cursor to the head without reading rows.
            // The hub is checked again after the head is read, so a room created meanwhile started from a
            // snapshot that already includes every row the cursor skips. (With canvases, no head query at all.)
            // Nor while a join is under way: a removal it must hear of may be among the skipped rows.
            if self.hub.is_idle() {
                let head = queries::max_id(&self.conn)?;
                if self.hub.is_idle() {
                    self.progress.advance_cursor(head);
                    self.cursor_batches_read = queries::max_relayed_id(&self.conn, Relayed::CursorBatches)?;
                    self.user_messages_read = queries::max_relayed_id(&self.conn, Relayed::UserMessages)?;
                    self.removals_read = queries::max_relayed_id(&self.conn, Relayed::Removals)?;
                    break;
                }
            }
            let rows = queries::rows_after(&self.conn, self.progress.cursor(), now_ms(), self.max_rows)?;
            self.metrics.polls.increment(1);
            self.metrics.poll_rows.increment(rows.len() as u64);
            let Some(last_id) = rows.last().map(|r| r.id) else { break };
            found = true;
            self.offer(&rows, &mut waiting);
            self.progress.advance_cursor(last_id);
            if rows.len() < self.max_rows as usize {
                break;
            }
        }
        self.progress.polled(now_ms());
        found |= self.relay_cursors()?;
        found |= self.relay_user_messages()?;
        found |= self.relay_removals()?;
        let read_up_to = self.progress.cursor();
        for room in waiting {
            if let Settled::GapSkipped { from, to } = room.lock().settle(read_up_to, &self.metrics) {
                tracing::warn!(canvas = %room.canvas, from, to, "rows expired before this instance read them; \
                    subscribers cut with 4009 to resume");
            }
        }
        Ok(found)
    }

    /// Relays other instances' cursor batches to local clients of their canvases. Lossy by design: a client
    /// whose queue is full misses a cursor, and the next batch carries a newer one. Returns whether any came.
    fn relay_cursors(&mut self) -> deadpool_sqlite::rusqlite::Result<bool> {
        let (hub, max_rows) = (&self.hub, self.max_rows);
        let fetch = |after| {
            queries::relayed_after(&self.conn, Relayed::CursorBatches, after, &self.instance_id, now_ms(), max_rows)
        };
        let metrics = &self.metrics;
        relay(&mut self.cursor_batches_read, max_rows, fetch, |canvas, frames| {
            if let Some(room) = CanvasId::parse(canvas).ok().and_then(|c| hub.room(&c)) {
                room.relay_batch(frames, metrics);
            }
        })
    }

    /// Relays user messages (`POST /api/v1/users/{user}/messages` on another instance) to this process's
    /// connections of their user. Returns whether any came.
    fn relay_user_messages(&mut self) -> deadpool_sqlite::rusqlite::Result<bool> {
        let (hub, max_rows) = (&self.hub, self.max_rows);
        let fetch = |after| {
            queries::relayed_after(&self.conn, Relayed::UserMessages, after, &self.instance_id, now_ms(), max_rows)
        };
        relay(&mut self.user_messages_read, max_rows, fetch, |user, frame| {
            hub.send_to_user(user, &Message::text(frame));
        })
    }

    /// Closes this process's connections of users removed from a canvas on another instance (4003).
    fn relay_removals(&mut self) -> deadpool_sqlite::rusqlite::Result<bool> {
        let (hub, max_rows) = (&self.hub, self.max_rows);
        let fetch =
            |after| queries::relayed_after(&self.conn, Relayed::Removals, after, &self.instance_id, now_ms(), max_rows);
        relay(&mut self.removals_read, max_rows, fetch, |canvas, user| {
            if let Ok(canvas) = CanvasId::parse(canvas) {
                hub.remove_user(&canvas, user);
            }
        })
    }

    /// Hands rows to the rooms of their canvases; rooms left holding early seqs are collected in `waiting`.
    /// Rows other instances committed are timed from their commit to now (the peer-delivery histogram).
    fn offer(&self, rows: &[queries::StoredMessage], waiting: &mut Vec<Arc<Room>>) {
        let mut rooms: HashMap<&str, Option<Arc<Room>>> = HashMap::new();
        let now = now_ms();
        for row in rows {
            if row.origin != self.instance_id {
                self.metrics.peer_delivery_seconds.record((now - row.created_at).max(0) as f64 / 1000.0);
            }
            let room = rooms
                .entry(row.canvas.as_str())
                .or_insert_with(|| CanvasId::parse(&row.canvas).ok().and_then(|canvas| self.hub.room(&canvas)));
            let Some(room) = room else { continue };
            let mut state = room.lock();
            // Rows are read in commit order, so a generation's reset marker comes first unless it expired
            // before this process read it.
            if state.offer_stored(row.entry(), &self.metrics) {
                tracing::warn!(canvas = %room.canvas, "a canvas reset expired before this instance read it");
                continue;
            }
            if state.has_pending() && !waiting.iter().any(|w| Arc::ptr_eq(w, room)) {
                waiting.push(room.clone());
            }
        }
    }
}

/// Reads ephemeral rows other instances wrote (id, key, text) after `read`, a page of `max_rows` at a time,
/// hands each to `each`, and moves `read` past them. Returns whether there were any.
fn relay(
    read: &mut i64,
    max_rows: u32,
    fetch: impl Fn(i64) -> deadpool_sqlite::rusqlite::Result<Vec<(i64, String, String)>>,
    mut each: impl FnMut(&str, &str),
) -> deadpool_sqlite::rusqlite::Result<bool> {
    let mut found = false;
    loop {
        let rows = fetch(*read)?;
        let Some((last, _, _)) = rows.last() else { return Ok(found) };
        found = true;
        *read = *last;
        for (_, key, text) in &rows {
            each(key, text);
        }
        if rows.len() < max_rows as usize {
            return Ok(found);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn backoff_stays_active_until_quiet_long_enough_then_doubles_to_idle() {
        let start = Instant::now();
        let mut b = Backoff::new(MS, 16 * MS, 100 * MS, start);
        b.quiet(start + 50 * MS, true);
        assert_eq!(b.interval(), MS, "quiet for less than backoff_after");
        let later = start + 100 * MS;
        let steps: Vec<_> = (0..6)
            .map(|_| {
                b.quiet(later, true);
                b.interval()
            })
            .collect();
        assert_eq!(steps, [2 * MS, 4 * MS, 8 * MS, 16 * MS, 16 * MS, 16 * MS]);
    }

    #[test]
    fn any_activity_resets_the_backoff() {
        let start = Instant::now();
        let mut b = Backoff::new(MS, 16 * MS, 10 * MS, start);
        for i in 0..10 {
            b.quiet(start + (20 + i) * MS, true);
        }
        assert_eq!(b.interval(), 16 * MS);
        b.activity(start + 40 * MS);
        assert_eq!(b.interval(), MS);
        b.quiet(start + 45 * MS, true);
        assert_eq!(b.interval(), MS, "the quiet spell restarts at the activity");
    }

    #[test]
    fn no_local_canvases_means_idle_at_once() {
        let start = Instant::now();
        let mut b = Backoff::new(MS, 20 * MS, Duration::from_secs(10), start);
        b.quiet(start, false);
        assert_eq!(b.interval(), 20 * MS);
    }
}
