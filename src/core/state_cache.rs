//! Canvas states serialized once and shared by every joiner who needs the same one.
//!
//! A welcome carries the whole canvas state; on a big canvas (100,000 objects is about 10 MB of JSON) reading
//! and serializing it per joiner is what made a join storm slow and heavy. A state is identified by its canvas
//! epoch and its *state version*: the seq of the last logged message that changed the objects (presence
//! messages do not). The state at any seq is the state at its version, so joiners at different seqs (each
//! join logs a `user-connected`) still share one copy. Entries are immutable `Bytes`: a joiner writing one
//! holds a reference, never a copy.
//!
//! Only states bigger than [`INLINE_LIMIT`] are cached; smaller ones are cheaper to read with the view.
//! Building a missing one is single-flight per canvas ([`StateCache::build_lock`]): the first joiner reads
//! it, the others wait and take it: the same version if theirs still is, or else the whole view the
//! builder read, when it was read after their own registration committed (so it includes them), even on a
//! canvas that changes all the time. The cache holds at most `budget` bytes; the least recently used go
//! first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;

use super::reads::View;
use crate::protocol::CanvasId;

/// States at most this big are read with each join's view rather than cached.
pub const INLINE_LIMIT: usize = 64 * 1024;

/// Which state an entry is: the canvas's epoch and the seq of the last op that changed its objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateKey {
    pub epoch: String,
    pub generation: u64,
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
    /// The view the state was read with (objects included): whole, for joiners that waited for it.
    view: View,
    /// When that view's read began: it includes everything committed before.
    read_at: Instant,
    /// For eviction: the least recently used entry goes first.
    used: Instant,
}

impl Cached {
    fn size(&self) -> usize {
        self.view.objects.as_ref().map_or(0, Bytes::len)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl StateCache {
    pub fn new(budget: usize) -> Self {
        StateCache { budget, entries: Mutex::default(), building: Mutex::default() }
    }

    /// The key of what is cached for `canvas`, if anything: a view can skip reading the objects when the
    /// canvas is still at that version.
    pub fn key(&self, canvas: &CanvasId) -> Option<StateKey> {
        lock(&self.entries).get(canvas).map(|cached| cached.view.key())
    }

    /// The cached state of `canvas` if it is exactly `key`.
    pub fn get(&self, canvas: &CanvasId, key: &StateKey) -> Option<Bytes> {
        let mut entries = lock(&self.entries);
        let cached = entries
            .get_mut(canvas)
            .filter(|cached| cached.view.version == key.version && cached.view.epoch == key.epoch)?;
        cached.used = Instant::now();
        cached.view.objects.clone()
    }

    /// The whole view cached for `canvas` if its read began after `since`.
    pub fn read_since(&self, canvas: &CanvasId, since: Instant) -> Option<View> {
        let mut entries = lock(&self.entries);
        let cached = entries.get_mut(canvas).filter(|cached| cached.read_at > since)?;
        cached.used = Instant::now();
        Some(cached.view.clone())
    }

    /// Keeps `view` (objects included, read from `read_at`) as the state of its canvas (replacing an
    /// older one), then evicts the least recently used others while over budget.
    pub fn insert(&self, canvas: &CanvasId, view: View, read_at: Instant) {
        let mut entries = lock(&self.entries);
        entries.insert(canvas.clone(), Cached { view, read_at, used: Instant::now() });
        let mut total: usize = entries.values().map(Cached::size).sum();
        while total > self.budget && entries.len() > 1 {
            let oldest = entries
                .iter()
                .filter(|(id, _)| *id != canvas)
                .min_by_key(|(_, cached)| cached.used)
                .map(|(id, cached)| (id.clone(), cached.size()));
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
        StateKey { epoch: "e-1".into(), generation: 1, version }
    }

    fn view(version: u64, objects: Vec<u8>) -> View {
        View {
            epoch: "e-1".into(),
            generation: 1,
            seq: version + 3,
            version,
            presence: serde_json::value::RawValue::from_string("[]".into()).unwrap(),
            peers: Vec::new(),
            resumed: false,
            objects: Some(Bytes::from(objects)),
        }
    }

    #[test]
    fn a_state_is_found_only_at_its_exact_version() {
        let cache = StateCache::new(1 << 20);
        cache.insert(&canvas("c"), view(7, b"{}".to_vec()), Instant::now());
        assert!(cache.get(&canvas("c"), &key(7)).is_some());
        assert!(cache.get(&canvas("c"), &key(8)).is_none());
        assert!(
            cache.get(&canvas("c"), &StateKey { epoch: "e-2".into(), generation: 2, version: 7 }).is_none(),
            "another epoch"
        );
        assert_eq!(cache.key(&canvas("c")), Some(key(7)));
        cache.forget(&canvas("c"));
        assert_eq!(cache.key(&canvas("c")), None);
    }

    #[test]
    fn past_the_budget_the_least_recently_used_state_goes() {
        let cache = StateCache::new(250);
        let state = || view(1, vec![b' '; 100]);
        cache.insert(&canvas("a"), state(), Instant::now());
        cache.insert(&canvas("b"), state(), Instant::now());
        cache.get(&canvas("a"), &key(1));
        cache.insert(&canvas("c"), state(), Instant::now());
        assert!(cache.key(&canvas("a")).is_some());
        assert!(cache.key(&canvas("b")).is_none(), "b was used least recently");
        assert!(cache.key(&canvas("c")).is_some(), "the newest always stays");
    }

    #[test]
    fn a_waiter_takes_the_builders_whole_view_only_if_it_was_read_after_the_waiter_registered() {
        let cache = StateCache::new(1 << 20);
        let registered = Instant::now();
        cache.insert(&canvas("c"), view(9, b"{}".to_vec()), registered - std::time::Duration::from_millis(1));
        assert!(cache.read_since(&canvas("c"), registered).is_none(), "read before: it may miss the waiter");
        cache.insert(&canvas("c"), view(10, b"{}".to_vec()), Instant::now());
        assert_eq!(cache.read_since(&canvas("c"), registered).map(|s| s.version), Some(10));
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
