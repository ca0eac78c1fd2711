//! What the committer, the stream reader, the upkeep and `/health` share about this process's view of Redis:
//! the store's epoch as last seen, the highest write count seen, the last error, the reader's last read.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::hub::Hub;
use crate::store::last_error::LastError;

/// This process's link to Redis.
#[derive(Default)]
pub struct Link {
    /// The store's epoch as this process last saw it; `None` before the first reply.
    epoch: Mutex<Option<String>>,
    /// The highest write count of the store this process has seen: a lower one later means Redis lost writes.
    pub writes_seen: AtomicU64,
    /// The last Redis error, until a commit succeeds.
    pub last_error: LastError,
    /// When the stream reader last got a reply (unix ms).
    pub last_read_ms: AtomicI64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Link {
    /// The store epoch, once known.
    pub fn epoch(&self) -> Option<String> {
        lock(&self.epoch).clone()
    }

    /// Records the store epoch a reply carried. If it is not the one this process served from, the log every
    /// local client follows is gone (Redis lost its data, or it was rotated after a rollback): every local
    /// connection is cut to resume, which fails on the epoch, so each reloads.
    pub fn observe_epoch(&self, epoch: &str, hub: &Hub) {
        // std Mutex: a comparison and an assignment, no await inside.
        let mut known = lock(&self.epoch);
        match known.as_deref() {
            Some(current) if current == epoch => {}
            None => *known = Some(epoch.to_owned()),
            Some(current) => {
                let cut = hub.drop_all_rooms();
                tracing::warn!(
                    old = current,
                    new = epoch,
                    connections = cut,
                    "the Redis store has a new epoch (it lost data): local clients cut to reload"
                );
                *known = Some(epoch.to_owned());
            }
        }
    }

    pub fn saw_writes(&self, writes: u64) {
        self.writes_seen.fetch_max(writes, Ordering::AcqRel);
    }
}
