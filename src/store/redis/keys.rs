//! Key names, as `lua/common.lua` spells them (key layout 4). Every key of canvas C is `relay:{C}:…`: the
//! hash tag keeps a canvas's keys in one Redis Cluster slot.

use crate::protocol::{CanvasId, UserId};

/// The key layout this binary writes (`FORMAT`); see `migrate.rs`.
pub const LAYOUT: u32 = 4;
/// The layout of the keys; absent before layout 2.
pub const FORMAT: &str = "relay:format";
/// The store's random id, part of every canvas epoch.
pub const EPOCH: &str = "relay:epoch";
/// Every user message and removal of the last TTL, for every instance.
pub const USER_MESSAGES: &str = "relay:user-messages";
/// instance id → last heartbeat (unix ms on Redis's clock; 0 once it stopped).
pub const INSTANCES: &str = "relay:instances";
/// user → how many connections it has across canvases and instances.
pub const USERS: &str = "relay:users";

fn canvas_key(canvas: &CanvasId, part: &str) -> String {
    format!("relay:{{{}}}:{part}", canvas.as_str())
}

/// A canvas's head (see `read_head` in `common.lua`).
pub fn head(canvas: &CanvasId) -> String {
    canvas_key(canvas, "head")
}

/// A canvas's log: one stream entry per logged message and reset marker, at id `(generation + 1)-seq`.
pub fn log(canvas: &CanvasId) -> String {
    canvas_key(canvas, "log")
}

/// A canvas's object ops (a stream at the log's ids), kept back to its history's floor.
pub fn ops(canvas: &CanvasId) -> String {
    canvas_key(canvas, "ops")
}

/// Where a snapshot of a canvas's objects at (generation, seq) is written: a key of its own, never changed.
pub fn snapshot(canvas: &CanvasId, generation: u64, seq: u64, nonce: &str) -> String {
    canvas_key(canvas, &format!("snap:{generation}-{seq}-{nonce}"))
}

/// Where the first snapshot of a fork is written (its generation is the script's to pick).
pub fn fork_snapshot(canvas: &CanvasId, nonce: &str) -> String {
    canvas_key(canvas, &format!("snap:fork-{nonce}"))
}

/// Present while `user` is blocked from `canvas` (it expires when the block ends).
pub fn block(canvas: &CanvasId, user: &UserId) -> String {
    canvas_key(canvas, &format!("block:{}", user.as_str()))
}

/// How far the webhook has delivered a canvas: `g` generation, `s` seq, `p` the last seq of the batch being
/// sent (absent when none).
pub fn webhook(canvas: &CanvasId) -> String {
    canvas_key(canvas, "webhook")
}

/// A canvas's cursor batches (a capped stream that expires when idle).
pub fn cursors(canvas: &CanvasId) -> String {
    canvas_key(canvas, "cursors")
}

/// An instance's wake-up stream: a join that adds a canvas writes to it to end the reader's blocked XREAD.
pub fn wake(instance: &str) -> String {
    format!("relay:i:{instance}:wake")
}

/// An instance's connections, every canvas's: connection id → canvas and row.
pub fn instance_conns(instance: &str) -> String {
    format!("relay:i:{instance}:conns")
}

/// A user's connections, every canvas's: connection id → canvas and row.
pub fn user_conns(user: &UserId) -> String {
    format!("relay:u:{}", user.as_str())
}
