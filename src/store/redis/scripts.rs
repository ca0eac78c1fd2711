//! The Lua scripts that make every multi-key change atomic on the Redis side (`lua/`), each prefixed with
//! `common.lua`. `Script` sends EVALSHA and loads the script on NOSCRIPT, so a restarted Redis costs one
//! extra round trip per script, not an error.
//!
//! Every script starts with a `#!lua` shebang (Redis 7 script flags, none set): Redis then refuses a script
//! whole while out of memory instead of letting it fail at a write part way (scripts are not rolled back).
//! None reads a whole big state or log: what can be long is read a chunk at a time.

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
    /// Commits a batch of staged canvases, each under its expectation, or answers what is new.
    COMMIT = "lua/commit.lua";
    /// A canvas's head, connections, newest snapshot's key and the object ops after it, at one point.
    READ_CANVAS = "lua/read_canvas.lua";
    /// A canvas's next generation, with its reset marker.
    RESET = "lua/reset.lua";
    /// Keeps a snapshot already written to its key, if it is the canvas's newest (a compare-and-set).
    SNAPSHOT = "lua/snapshot.lua";
    /// A page of canvases in id order, with their heads.
    HEADS = "lua/heads.lua";
    /// Canvases with object ops after their newest snapshot, quiet since a time.
    STALE = "lua/stale.lua";
    /// A canvas at one seq of its history: head, floor, the nearest snapshot's key and the ops after it.
    READ_AT = "lua/read_at.lua";
    /// A page of a canvas's kept snapshots, newest first.
    VERSIONS = "lua/versions.lua";
    /// Names a version, keeping a snapshot already written to its key if none is kept at its seq.
    NAME_VERSION = "lua/name_version.lua";
    /// Takes a version's name off.
    UNNAME_VERSION = "lua/unname_version.lua";
    /// A new generation of a canvas that has no seq, object or connection, from a snapshot already written.
    FORK = "lua/fork.lua";
    /// Canvases whose history may be thinned, with their snapshots.
    HISTORY_DUE = "lua/history_due.lua";
    /// Drops a canvas's aged snapshots and raises its history's floor.
    THIN = "lua/thin.lua";
    /// An instance's heartbeat, the store's epoch and write count, and the live instances.
    HEARTBEAT = "lua/heartbeat.lua";
    /// A new store epoch after Redis lost writes.
    ROTATE = "lua/rotate.lua";
    /// Presence states kept for joiners.
    SAVE_STATES = "lua/save_states.lua";
    /// A user message for every instance.
    TO_USER = "lua/to_user.lua";
    /// A user removed from a canvas on every instance, and blocked from it for a while.
    REMOVE_USER = "lua/remove_user.lua";
    /// Trims the canvas logs that are due, a bounded number of entries per call.
    TRIM_LOGS = "lua/trim_logs.lua";
    /// Trims the log of every canvas by the TTL, a bounded number of entries per call.
    TRIM_STREAM = "lua/trim_stream.lua";
    /// Forgets idle canvases past their forget time.
    FORGET = "lua/forget.lua";
    /// The log of every canvas: its head, the newest id trimmed and a page after a position.
    LOG = "lua/log.lua";
    /// The webhook's position of a canvas, over the one expected, if the lease is still the holder's.
    SAVE_POSITION = "lua/save_position.lua";
    /// Takes or renews leases.
    HOLD_LEASES = "lua/hold_leases.lua";
    /// Gives up leases.
    RELEASE_LEASES = "lua/release_leases.lua";
    /// One canvas from the store's first layouts to layout 3.
    MIGRATE_1 = "lua/migrate_1.lua";
    /// One canvas from layout 3 to layout 4.
    MIGRATE_3 = "lua/migrate_3.lua";
}
