//! The start-up check of `--max-connections` against the process's open-file limit (`ulimit -n`): every
//! WebSocket holds a file descriptor, so past the limit new connections fail at accept. It only warns:
//! raising the limit is the operator's job (`ulimit -n`, systemd's `LimitNOFILE`), and a small limit is fine
//! for an instance that never gets that many clients.

/// Descriptors the relay needs besides its WebSockets: the database, its WAL and read pool, Redis, the
/// listener, the doorbell socket and the runtime's own.
pub const RESERVE: u64 = 64;

/// What to warn about when the soft limit is `limit` descriptors and `--max-connections` is `max_connections`:
/// nothing if the connections and the [`RESERVE`] fit.
pub fn warning(limit: u64, max_connections: usize) -> Option<String> {
    let needed = (max_connections as u64).saturating_add(RESERVE);
    (limit < needed).then(|| {
        format!(
            "the open-file limit (ulimit -n) is {limit}, below --max-connections {max_connections} plus {RESERVE} for \
             files and the store: connections past ~{} will fail to be accepted; raise ulimit -n or lower \
             --max-connections",
            limit.saturating_sub(RESERVE)
        )
    })
}

/// Logs [`warning`] for this process's soft `RLIMIT_NOFILE`, if any (an unlimited one never warns).
pub fn warn_if_low(max_connections: usize) {
    #[cfg(unix)]
    {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        if let Some(message) = limit.and_then(|limit| warning(limit, max_connections)) {
            tracing::warn!("{message}");
        }
    }
    #[cfg(not(unix))]
    let _ = max_connections;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_only_when_the_connections_and_the_reserve_do_not_fit() {
        assert_eq!(
            warning(1024, 10_000).as_deref(),
            Some(
                "the open-file limit (ulimit -n) is 1024, below --max-connections 10000 plus 64 for files and the \
                 store: connections past ~960 will fail to be accepted; raise ulimit -n or lower --max-connections"
            )
        );
        assert_eq!(warning(10_064, 10_000), None);
        assert!(warning(10_063, 10_000).is_some_and(|message| message.contains("past ~9999 ")));
        assert!(warning(20, 1).is_some_and(|message| message.contains("past ~0 ")));
        assert_eq!(warning(u64::MAX, usize::MAX), None);
    }
}
