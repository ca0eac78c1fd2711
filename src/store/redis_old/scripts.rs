//! The Lua scripts that make every multi-key change atomic on the Redis side (`lua/`), each prefixed with
//! `common.lua`. `Script` sends EVALSHA and loads the script on NOSCRIPT, so a restarted Redis costs one
//! extra round trip per script, not an error.
//!
//! Every script starts with a `#!lua` shebang (Redis 7 script flags, none set): Redis then refuses a script
//! whole while out of memory instead of letting it fail at a write part way (scripts are not rolled back).

use std::sync::LazyLock;

use redis::Script;

const COMMON: &str = include_str!("lua/common.lua");

/// A script's full text: the shebang, the shared helpers, then the script itself.
fn source(script: &str) -> String {
    format!("#!lua\n{COMMON}\n{script}")
}

macro_rules! scripts {
    ($($(#[$doc:meta])* $name:ident = $file:literal;)*) => {$(
        $(#[$doc])*
        pub static $name: LazyLock<Script> = LazyLock::new(|| Script::new(&source(include_str!($file))));
    )*};
}

scripts! {
    /// Commits a batch: seqs, stream appends, TTL trimming, object fold and presence.
    PUBLISH = "lua/publish.lua";
    /// A canvas's head, state version, presence and resume check at one point of its log (objects if small).
    SNAPSHOT = "lua/snapshot.lua";
    /// The end of a state read that scanned the objects: what changed since, with the head and presence.
    STATE_TAIL = "lua/state_tail.lua";
    /// A page of a canvas's retained log.
    MESSAGES = "lua/messages.lua";
    /// A canvas reset: new generation, log and objects dropped, reset marker appended.
    RESET = "lua/reset.lua";
    /// An instance's heartbeat, the store's epoch and write count, and the dead instances.
    HEARTBEAT = "lua/heartbeat.lua";
    /// A new store epoch after Redis lost writes.
    ROTATE = "lua/rotate.lua";
    /// A user message for every instance.
    TO_USER = "lua/to_user.lua";
    /// A user removed from a canvas on every instance, and blocked from it for a while.
    REMOVE_USER = "lua/remove_user.lua";
    /// A page of canvases in id order.
    CANVASES = "lua/canvases.lua";
    /// Connected users across instances.
    USERS = "lua/users.lua";
    /// The connections a dead instance left, and forgetting it once there are none.
    FORGET = "lua/forget.lua";
    /// One canvas from the store's first layout to the current one.
    MIGRATE = "lua/migrate.lua";
    /// The log of every canvas: its head, the newest id trimmed and a page after a position.
    LOG = "lua/log.lua";
    /// A canvas's head and its retained entries after a seq, for the webhook.
    CANVAS_TAIL = "lua/canvas_tail.lua";
    /// A page of canvases whose head is past the webhook's position.
    BACKLOG = "lua/backlog.lua";
    /// The webhook's position of a canvas, if the lease is still the holder's.
    SAVE_DELIVERED = "lua/save_delivered.lua";
    /// Takes or renews leases.
    HOLD_LEASES = "lua/hold_leases.lua";
    /// Gives up leases.
    RELEASE_LEASES = "lua/release_leases.lua";
    /// The presence states of a round of cursor batches, every canvas at once, kept for joiners.
    PRESENCE_STATES = "lua/presence_states.lua";
}

/// `snapshot.lua`'s text, for the MULTI that reads a big state beside it (a pipeline cannot fall back from
/// EVALSHA to EVAL the way `Script` does, so it sends the text).
pub static SNAPSHOT_SOURCE: LazyLock<String> = LazyLock::new(|| source(include_str!("lua/snapshot.lua")));
