//! Canvas states serialized once and shared by every joiner who needs the same one.
//!
//! A welcome carries the whole canvas state; on a big canvas (100,000 objects is about 10 MB of JSON) reading
//! and serializing it per joiner is what made a join storm slow and heavy. A state is identified by its canvas
//! epoch and its *state version*: the seq of the last logged message that changed the objects (presence
//! messages do not). The state at any seq is the state at its version, so joiners at different seqs (each
//! join logs a `user-connected`) still share one copy. Entries are immutable `Bytes`: a joiner writing one
//! holds a reference, never a copy.
//!
//! Only states bigger than [`INLINE_LIMIT`] are cached; smaller ones are cheaper to read with the snapshot.
//! Building a missing one is single-flight per canvas ([`StateCache::build_lock`]): the first joiner reads
//! it, the others wait and take it. The cache holds at most `budget` bytes; the least recently used go first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;

use crate::protocol::CanvasId;

/// States at most this big are read with each join's snapshot rather than cached.
pub const INLINE_LIMIT: usize = 64 * 1024;

/// Which state an entry is: the canvas's epoch and the seq of the last op that changed its objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateKey {
    pub epoch: String,
    pub version: u64,
}

/// The serialized states of recently joined big canvases.
pub struct StateCache {
    /// Most bytes kept (entries in use by a joiner stay alive through their `Bytes` even when evicted).
    budget: usize,
    /// std Mutex: lookups and inserts only, nothing awaited while held.
    entries: Mutex<HashMap<CanvasId, Cached>>,
    /// One async lock per canvas being built, so a storm reads a state once.
    building: Mutex<HashMap<CanvasId, Arc<tokio::sync::Mutex<()>>>>,
}

struct Cached {
    key: StateKey,
    objects: Bytes,
    /// For eviction: the least recently used entry goes first.
    used: Instant,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl StateCache {
    pub fn new(budget: usize) -> Self {
        StateCache { budget, entries: Mutex::default(), building: Mutex::default() }
    }

    /// The key of what is cached for `canvas`, if anything: a snapshot can skip reading the objects when the
    /// canvas is still at that version.
    pub fn key(&self, canvas: &CanvasId) -> Option<StateKey> {
        lock(&self.entries).get(canvas).map(|cached| cached.key.clone())
    }

    /// The cached state of `canvas` if it is exactly `key`.
    pub fn get(&self, canvas: &CanvasId, key: &StateKey) -> Option<Bytes> {
        let mut entries = lock(&self.entries);
        let cached = entries.get_mut(canvas).filter(|cached| cached.key == *key)?;
        cached.used = Instant::now();
        Some(cached.objects.clone())
    }

    /// Keeps `objects` as the state of `canvas` at `key` (replacing an older one), then evicts the least
    /// recently used others while over budget.
    pub fn insert(&self, canvas: &CanvasId, key: StateKey, objects: Bytes) {
        let mut entries = lock(&self.entries);
        entries.insert(canvas.clone(), Cached { key, objects, used: Instant::now() });
        let mut total: usize = entries.values().map(|cached| cached.objects.len()).sum();
        while total > self.budget && entries.len() > 1 {
            let oldest = entries
                .iter()
                .filter(|(id, _)| *id != canvas)
                .min_by_key(|(_, cached)| cached.used)
                .map(|(id, cached)| (id.clone(), cached.objects.len()));
            let Some((id, size)) = oldest else { break };
            entries.remove(&id);
            total -= size;
        }
    }

    /// Forgets the state of `canvas` (it was reset or deleted).
    pub fn forget(&self, canvas: &CanvasId) {
        lock(&self.entries).remove(canvas);
    }

    /// The lock a joiner holds while it reads and serializes `canvas`'s state, so that others wait for it
    /// instead of reading the same state again.
    pub fn build_lock(&self, canvas: &CanvasId) -> Arc<tokio::sync::Mutex<()>> {
        let mut building = lock(&self.building);
        // Locks nobody holds or waits for are dropped as new ones are made: the map stays small.
        building.retain(|_, lock| Arc::strong_count(lock) > 1);
        building.entry(canvas.clone()).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canvas(id: &str) -> CanvasId {
        CanvasId::parse(id).unwrap()
    }

    fn key(version: u64) -> StateKey {
        StateKey { epoch: "e-1".into(), version }
    }

    #[test]
    fn a_state_is_found_only_at_its_exact_version() {
        let cache = StateCache::new(1 << 20);
        cache.insert(&canvas("c"), key(7), Bytes::from_static(b"{}"));
        assert!(cache.get(&canvas("c"), &key(7)).is_some());
        assert!(cache.get(&canvas("c"), &key(8)).is_none());
        assert!(cache.get(&canvas("c"), &StateKey { epoch: "e-2".into(), version: 7 }).is_none(), "another epoch");
        assert_eq!(cache.key(&canvas("c")), Some(key(7)));
        cache.forget(&canvas("c"));
        assert_eq!(cache.key(&canvas("c")), None);
    }

    #[test]
    fn past_the_budget_the_least_recently_used_state_goes() {
        let cache = StateCache::new(250);
        let state = || Bytes::from(vec![b' '; 100]);
        cache.insert(&canvas("a"), key(1), state());
        cache.insert(&canvas("b"), key(1), state());
        cache.get(&canvas("a"), &key(1));
        cache.insert(&canvas("c"), key(1), state());
        assert!(cache.key(&canvas("a")).is_some());
        assert!(cache.key(&canvas("b")).is_none(), "b was used least recently");
        assert!(cache.key(&canvas("c")).is_some(), "the newest always stays");
    }

    #[tokio::test]
    async fn one_builder_per_canvas_at_a_time() {
        let cache = StateCache::new(1 << 20);
        let first = cache.build_lock(&canvas("c"));
        let held = first.lock().await;
        let second = cache.build_lock(&canvas("c"));
        assert!(second.try_lock().is_err(), "the same canvas waits");
        assert!(cache.build_lock(&canvas("other")).try_lock().is_ok(), "another canvas does not");
        drop(held);
        assert!(second.try_lock().is_ok());
    }
}
