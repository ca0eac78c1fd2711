//! The figures behind `/health` that a store reports, in one shape whichever store it is: the common ones by
//! name, and those only one store has ([`StoreFigures`]) flattened beside them, so that nothing above the
//! stores names a concrete store.

use serde::Serialize;

/// What `/health` reports about the bus.
#[derive(Debug, Clone, Serialize)]
pub struct BusFigures {
    /// `sqlite`, `memory` or `redis`.
    pub bus: &'static str,
    /// What only the store in use can tell (the file's rows and head; Redis's round trip and epoch), each
    /// under its own name in `/health`.
    #[serde(flatten)]
    pub storage: StoreFigures,
    /// How long cleanup has been behind (ms), where the store keeps one log to clean up (the file): the one
    /// store figure `/health` judges. Absent on Redis, whose logs are trimmed as they are written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleanup_overdue_ms: Option<i64>,
    /// Messages waiting for this process's writer, and how many fit.
    pub writer_queue_depth: usize,
    pub writer_queue_capacity: usize,
    /// Messages committed that this process has not read yet (SQLite; Redis reads each canvas's stream
    /// from its own position, so 0 there).
    pub poll_lag_rows: i64,
    /// How long since the watcher (SQLite) or the stream reader (Redis) last read (ms).
    pub last_poll_age_ms: i64,
    /// Other instances with a recent heartbeat.
    pub peer_instances: i64,
    /// How long the oldest commit this instance has not read yet has waited (ms); `None` when it has read
    /// everything it serves.
    pub oldest_unread_age_ms: Option<i64>,
    /// The last storage error and its age, if one happened since the last good commit.
    pub last_error: Option<String>,
    pub last_error_age_ms: Option<i64>,
}

/// The figures only one store has, by name, as `/health` lists them beside the others: core reports them
/// without knowing which store it runs on.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(transparent)]
pub struct StoreFigures(serde_json::Map<String, serde_json::Value>);

impl StoreFigures {
    /// A store's figures from its own struct, whose fields become the names (one that is not a JSON object
    /// gives none).
    pub fn of(figures: &impl Serialize) -> StoreFigures {
        match serde_json::to_value(figures) {
            Ok(serde_json::Value::Object(map)) => StoreFigures(map),
            _ => StoreFigures::default(),
        }
    }
}
