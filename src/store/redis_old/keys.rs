//! Key names, as `lua/common.lua` spells them.

use crate::protocol::{CanvasId, UserId};

/// The store's random id, part of every canvas epoch.
pub const EPOCH: &str = "relay:epoch";
/// Every user message of the last TTL, for every instance.
pub const USER_MESSAGES: &str = "relay:user-messages";

/// A canvas's own log: one stream entry per logged message and reset marker.
pub fn log(canvas: &CanvasId) -> String {
    format!("relay:{{{}}}:log", canvas.as_str())
}

/// A canvas's objects: object id → its whole JSON text.
pub fn objects(canvas: &CanvasId) -> String {
    format!("relay:{{{}}}:objects", canvas.as_str())
}

/// Present while `user` is blocked from `canvas` (it expires when the block ends).
pub fn block(canvas: &CanvasId, user: &UserId) -> String {
    format!("relay:{{{}}}:block:{}", canvas.as_str(), user.as_str())
}

/// How far the webhook has delivered a canvas: `g` generation, `s` seq, `p` the last seq of the batch being
/// sent (absent when none). It expires with the canvas's head.
pub fn webhook(canvas: &CanvasId) -> String {
    format!("relay:{{{}}}:webhook", canvas.as_str())
}

pub fn cursors(canvas: &CanvasId) -> String {
    format!("relay:{{{}}}:cursors", canvas.as_str())
}

/// An instance's wake-up stream: a join that adds a canvas writes to it to end the reader's blocked XREAD.
pub fn wake(instance: &str) -> String {
    format!("relay:i:{instance}:wake")
}

/// The layout of the keys (see `RedisBus::migrate`); absent before layout 2.
pub const FORMAT: &str = "relay:format";

/// instance id → last heartbeat (unix ms on Redis's clock; 0 once it stopped).
pub const INSTANCES: &str = "relay:instances";
