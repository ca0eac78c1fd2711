//! Reads of a canvas's log (a joiner's replay, a page for the API), the users API, and the two API writes
//! that are not logged messages: resetting a canvas and messaging a user. Snapshots are `state.rs`'s.

use redis::Value;
use tokio_tungstenite::tungstenite::Message;

use super::entry::{array, items, stream_id, string, uint, LogEntry};
use super::scripts::{MESSAGES, RESET, TO_USER, USERS};
use super::{keys, malformed, unavailable, RedisBus};
use crate::bus::{BusError, CanvasLog, UserPresence};
use crate::protocol::{CanvasId, UserId};

impl RedisBus {
    /// The frames of seqs `after + 1 ..= upto` of one generation of a canvas, as its stream still holds them.
    pub async fn replay_page(
        &self,
        canvas: &CanvasId,
        generation: u64,
        after: u64,
        upto: u64,
    ) -> Result<Vec<Message>, BusError> {
        let mut range = redis::cmd("XRANGE");
        range.arg(keys::log(canvas)).arg(stream_id(generation, after + 1)).arg(stream_id(generation, upto));
        let reply: Value = self
            .read_twice(|mut conn| {
                let range = &range;
                async move { range.query_async(&mut conn).await }
            })
            .await?;
        let epoch = self.inner.link.epoch().unwrap_or_default();
        Ok(LogEntry::parse_all(&reply).iter().map(|e| e.frame(canvas.as_str(), &epoch)).collect())
    }

    /// Retained messages of a canvas after `since`, at most `limit`, in seq order, with the canvas head.
    pub async fn messages(&self, canvas: CanvasId, since: u64, limit: u64) -> Result<CanvasLog, BusError> {
        let reply: Value = MESSAGES
            .arg(canvas.as_str())
            .arg(Self::candidate())
            .arg(since)
            .arg(limit)
            .arg(self.inner.ttl_ms)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let [epoch, generation, seq, entries] = items::<4>(&reply).ok_or_else(|| malformed("a log read"))?;
        let (store_epoch, generation, seq) = (string(epoch), uint(generation), uint(seq));
        let (Some(store_epoch), Some(generation), Some(seq)) = (store_epoch, generation, seq) else {
            return Err(malformed("a log read"));
        };
        let messages = LogEntry::parse_all(entries)
            .iter()
            .map(|e| e.frame(canvas.as_str(), &store_epoch).into_text().map(|t| t.to_string()).unwrap_or_default())
            .collect();
        Ok(CanvasLog { epoch: format!("{store_epoch}-{generation}"), seq, messages })
    }

    /// Connected users across instances (all, or only `user`), with their connections and canvases.
    pub async fn users(&self, only: Option<UserId>) -> Result<Vec<UserPresence>, BusError> {
        let reply: Value = USERS
            .arg(only.as_ref().map_or("", UserId::as_str))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let parse = || {
            let mut users = array(&reply)?
                .chunks_exact(3)
                .map(|user| {
                    let mut canvases: Vec<String> = array(&user[2])?.iter().filter_map(string).collect();
                    canvases.sort();
                    Some(UserPresence { user: string(&user[0])?, connections: uint(&user[1])?, canvases })
                })
                .collect::<Option<Vec<_>>>()?;
            users.sort_by(|a, b| a.user.cmp(&b.user));
            Some(users)
        };
        parse().ok_or_else(|| malformed("a users read"))
    }

    /// Resets a canvas: a new generation at seq 0, log and objects dropped. Every instance's readers see the
    /// reset marker and send connected clients `reset`. Returns the new epoch.
    pub async fn reset(&self, canvas: CanvasId) -> Result<String, BusError> {
        let reply: Value = RESET
            .arg(canvas.as_str())
            .arg(Self::candidate())
            .arg(self.inner.ttl_ms)
            .arg(&self.inner.instance_id)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let [epoch, generation] = items::<2>(&reply).ok_or_else(|| malformed("a reset"))?;
        let (Some(epoch), Some(generation)) = (string(epoch), uint(generation)) else {
            return Err(malformed("a reset"));
        };
        self.inner.link.observe_epoch(&epoch, &self.inner.hub);
        Ok(format!("{epoch}-{generation}"))
    }

    /// Sends a frame to every connection of `user` on every instance: this process's at once, the others'
    /// through the shared user-message stream. Returns how many connections the user has.
    pub async fn send_to_user(&self, user: UserId, frame: String) -> Result<u64, BusError> {
        let connections: u64 = TO_USER
            .arg(user.as_str())
            .arg(&frame)
            .arg(&self.inner.instance_id)
            .arg(self.inner.ttl_ms)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        self.inner.hub.send_to_user(user.as_str(), &Message::text(frame));
        Ok(connections)
    }
}
