//! The ephemeral channel between instances on Redis: cursor batches (a capped, expiring stream per canvas,
//! which every instance with clients on the canvas reads beside its log), user messages and removals (one
//! shared stream, trimmed by the TTL as it grows, with a block key per removed user), and the presence
//! states joiners read. Best effort for cursors; the rest is one script each.

use super::keys;
use super::scripts::{REMOVE_USER, SAVE_STATES, TO_USER};
use super::{unavailable, RedisStore};
use crate::clock::now_ms;
use crate::protocol::{CanvasId, ConnId};
use crate::store::{BusError, Post};

/// How long a canvas's cursor stream outlives its last batch.
const CURSOR_STREAM_TTL_MS: i64 = 60_000;
/// Cursor batches a canvas's stream keeps (about: `MAXLEN ~`).
const CURSOR_STREAM_LENGTH: usize = 64;

impl RedisStore {
    /// Posts on the ephemeral channel.
    pub(super) async fn send_post(&self, post: Post) -> Result<(), BusError> {
        let (instance, ttl_ms) = (&self.inner.instance_id, self.inner.settings.ttl_ms);
        match post {
            Post::Cursors(batches) => {
                let mut pipe = redis::pipe();
                for batch in &batches {
                    let key = keys::cursors(&batch.canvas);
                    pipe.cmd("XADD")
                        .arg(&key)
                        .arg("MAXLEN")
                        .arg("~")
                        .arg(CURSOR_STREAM_LENGTH)
                        .arg("*")
                        .arg("i")
                        .arg(instance)
                        .arg("d")
                        .arg(&batch.frames)
                        .ignore();
                    pipe.pexpire(&key, CURSOR_STREAM_TTL_MS).ignore();
                }
                pipe.exec_async(&mut self.conn()).await.map_err(unavailable)
            }
            Post::ToUser { to, frame } => {
                let mut invocation = TO_USER.prepare_invoke();
                invocation.arg(to.as_str()).arg(frame).arg(instance).arg(ttl_ms);
                invocation.invoke_async(&mut self.conn()).await.map_err(unavailable)
            }
            Post::Removal { canvas, user, blocked_until } => {
                let block_ms = if blocked_until > 0 { (blocked_until - now_ms()).max(1) } else { 0 };
                let mut invocation = REMOVE_USER.prepare_invoke();
                invocation.arg(canvas.as_str()).arg(user.as_str()).arg(instance).arg(ttl_ms).arg(block_ms);
                invocation.invoke_async(&mut self.conn()).await.map_err(unavailable)
            }
        }
    }

    /// `save_states.lua`: every state of a round of cursor batches in one call.
    pub(super) async fn keep_states(&self, states: Vec<(CanvasId, ConnId, Option<String>)>) -> Result<(), BusError> {
        if states.is_empty() {
            return Ok(());
        }
        let mut invocation = SAVE_STATES.prepare_invoke();
        for (canvas, conn, state) in &states {
            let (flag, state) = match state {
                Some(state) => ("1", state.as_str()),
                None => ("0", ""),
            };
            invocation.arg(canvas.as_str()).arg(conn.to_string()).arg(flag).arg(state);
        }
        invocation.invoke_async::<()>(&mut self.conn()).await.map_err(unavailable)
    }
}
