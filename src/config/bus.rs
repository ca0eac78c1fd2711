//! `--bus`: which store keeps the log, state and presence, parsed from `sqlite`, `memory` or a Redis URL. How
//! each store works is `bus/`; this file only reads the flag.

/// Where the relay keeps its log, state and presence (`--bus`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusKind {
    /// `sqlite`: the shared SQLite file of --db: any number of processes on one host, durable.
    Sqlite,
    /// `memory`: a private in-memory SQLite database: one process, no file, everything lost at exit. Same
    /// protocol; for tests and single-node demos.
    Memory,
    /// `redis://HOST:PORT/DB`: Redis Streams, for instances on several hosts; durability is Redis's own
    /// persistence (see the README).
    Redis(String),
}

impl BusKind {
    /// Parses `--bus`: `sqlite`, `memory` or a `redis://` URL.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "sqlite" => Ok(BusKind::Sqlite),
            "memory" => Ok(BusKind::Memory),
            url if url.starts_with("redis://") || url.starts_with("redis+unix://") => {
                redis::parse_redis_url(url).ok_or_else(|| format!("{url:?} is not a valid Redis URL"))?;
                Ok(BusKind::Redis(url.to_owned()))
            }
            other => Err(format!("{other:?}: expected sqlite, memory or redis://HOST:PORT/DB")),
        }
    }

    /// What the logs say about where the relay keeps its data (no password).
    pub fn describe(&self, db: &std::path::Path) -> String {
        match self {
            BusKind::Sqlite => db.display().to_string(),
            BusKind::Memory => "memory (one process, lost at exit)".to_owned(),
            BusKind::Redis(url) => match redis::parse_redis_url(url) {
                Some(mut parsed) => {
                    if parsed.password().is_some() {
                        let _ = parsed.set_password(Some("***"));
                    }
                    parsed.to_string()
                }
                None => "redis".to_owned(),
            },
        }
    }
}
