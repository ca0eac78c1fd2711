//! The canvases a committer holds: each one's state at its head as this process last committed or read it,
//! so that staging a publish needs no read, and when a snapshot of it is due. Bounded by bytes; the least
//! recently used canvas is dropped first and read again (newest snapshot plus the ops after it) when
//! something needs its state.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::core::fold::canvas::Canvas;
use crate::protocol::CanvasId;
use crate::store::records::Head;

/// When a canvas's snapshot is due: `--snapshot-every` object ops since the newest snapshot, once their data
/// is also a quarter of the state's size; or `--snapshot-bytes` of their data, whatever the state's size.
/// Writing a snapshot costs the whole state: the quarter keeps a canvas that grows from being written out
/// every thousand ops (a 100,000-object canvas filled from empty: 14 snapshots instead of 100, and
/// a quarter of the writes), and a join folds at most about a quarter of the state's worth of ops.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotPolicy {
    pub every_ops: u64,
    pub every_bytes: u64,
}

/// A held canvas and how far its log has run since its newest snapshot (as this process knows it).
#[derive(Debug, Clone)]
struct Held {
    canvas: Canvas,
    /// Object ops, and bytes of their data, since the newest snapshot.
    ops: u64,
    bytes: u64,
    /// For eviction: the committer's tick when it was last used.
    used: u64,
    /// When it was read, or a commit last logged an object op to it: how long it has been quiet.
    changed: Instant,
}

/// The canvases this process's committer holds.
#[derive(Debug)]
pub struct Canvases {
    held: HashMap<CanvasId, Held>,
    /// Most bytes of objects held (a canvas bigger than this is still held while it is the only one).
    budget: u64,
    bytes: u64,
    tick: u64,
    policy: SnapshotPolicy,
}

impl Canvases {
    pub fn new(budget: u64, policy: SnapshotPolicy) -> Self {
        Canvases { held: HashMap::new(), budget, bytes: 0, tick: 0, policy }
    }

    /// The canvas, if held (a clone: O(1), the maps are persistent).
    pub fn get(&mut self, canvas: &CanvasId) -> Option<Canvas> {
        self.tick += 1;
        let held = self.held.get_mut(canvas)?;
        held.used = self.tick;
        Some(held.canvas.clone())
    }

    /// Whether the canvas is held, with its objects if `with_objects`.
    pub fn holds(&self, canvas: &CanvasId, with_objects: bool) -> bool {
        self.held.get(canvas).is_some_and(|held| !with_objects || !held.canvas.objects_unread)
    }

    /// Holds a canvas just read: `ops` object ops, with `bytes` of data, follow its newest snapshot.
    pub fn read(&mut self, id: CanvasId, canvas: Canvas, ops: u64, bytes: u64) {
        self.put(id, Held { canvas, ops, bytes, used: self.tick, changed: Instant::now() });
    }

    /// Holds the canvas as a commit left it, which logged `ops` object ops with `bytes` of data. Returns
    /// the canvas when its snapshot is due; the counts start again once it is on its way
    /// ([`Canvases::snapshot_queued`]), so a snapshot that could not be queued is asked for again.
    pub fn after_commit(&mut self, id: &CanvasId, canvas: Canvas, ops: u64, bytes: u64) -> Option<Canvas> {
        let mut changed = Instant::now();
        if let Some(held) = self.held.get(id) {
            if ops == 0 {
                changed = held.changed;
            }
        }
        let (ops, bytes) = match self.held.get(id) {
            Some(held) => (ops + held.ops, bytes + held.bytes),
            None => (ops, bytes),
        };
        // A canvas held without its objects logged no object op (staging one reads them first), and its
        // empty `objects` must never be taken for a snapshot.
        let policy = &self.policy;
        let many = ops >= policy.every_ops && bytes.saturating_mul(4) >= canvas.objects.bytes();
        let due = !canvas.objects_unread && (many || bytes >= policy.every_bytes);
        let snapshot = due.then(|| canvas.clone());
        self.put(id.clone(), Held { canvas, ops, bytes, used: self.tick, changed });
        snapshot
    }

    /// Canvases with object ops after their newest snapshot and none for `quiet_for`: each is snapshotted at
    /// its head, so that a burst of edits ends with a snapshot and later joins read one blob, folding nothing.
    pub fn quiet(&self, now: Instant, quiet_for: Duration) -> Vec<(CanvasId, Canvas)> {
        let quiet = |held: &&Held| held.ops > 0 && !held.canvas.objects_unread && now - held.changed >= quiet_for;
        self.held.iter().filter(|(_, held)| quiet(held)).map(|(id, held)| (id.clone(), held.canvas.clone())).collect()
    }

    /// A snapshot of the canvas is on its way: the counts start again.
    pub fn snapshot_queued(&mut self, id: &CanvasId) {
        if let Some(held) = self.held.get_mut(id) {
            (held.ops, held.bytes) = (0, 0);
        }
    }

    /// Moves a held canvas's head after an append of plain messages: its state is unchanged, if no other
    /// commit changed it meanwhile (`head.rev` is the one held); else the canvas is dropped, to be read again.
    pub fn appended(&mut self, id: &CanvasId, head: &Head) {
        let Some(held) = self.held.get_mut(id) else { return };
        if held.canvas.head.rev == head.rev && held.canvas.head.generation == head.generation {
            held.canvas.head.seq = held.canvas.head.seq.max(head.seq);
        } else {
            self.forget(id);
        }
    }

    /// Drops a canvas (reset, or its state uncertain after a failed commit).
    pub fn forget(&mut self, id: &CanvasId) {
        if let Some(held) = self.held.remove(id) {
            self.bytes -= held.canvas.objects.bytes();
        }
    }

    /// Holds a canvas as the most recently used, then makes room for it: the canvas just put is never the
    /// one dropped (it was read, or committed to, for what waits now).
    fn put(&mut self, id: CanvasId, mut held: Held) {
        self.tick += 1;
        held.used = self.tick;
        self.bytes += held.canvas.objects.bytes();
        if let Some(old) = self.held.insert(id.clone(), held) {
            self.bytes -= old.canvas.objects.bytes();
        }
        self.evict(&id);
    }

    /// Drops the least recently used canvases but `keep` until the rest fit the budget.
    fn evict(&mut self, keep: &CanvasId) {
        while self.bytes > self.budget {
            let others = self.held.iter().filter(|(id, _)| *id != keep);
            let Some(oldest) = others.min_by_key(|(_, held)| held.used).map(|(id, _)| id.clone()) else {
                return;
            };
            self.forget(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fold::objects::Objects;

    fn canvas(objects: usize) -> Canvas {
        let mut state = Objects::default();
        for i in 0..objects {
            let data = format!(r#"{{"id":"o{i}"}}"#);
            let op = crate::object_ops::ObjectOp::Create { id: format!("o{i}") };
            state.apply(&op, &data, usize::MAX).unwrap();
        }
        Canvas { objects: state, ..Canvas::default() }
    }

    fn id(name: &str) -> CanvasId {
        CanvasId::parse(name).unwrap()
    }

    #[test]
    fn a_snapshot_is_due_every_so_many_ops_or_bytes_and_the_counts_start_again() {
        let mut canvases = Canvases::new(1 << 30, SnapshotPolicy { every_ops: 10, every_bytes: 1000 });
        canvases.read(id("c"), canvas(1), 4, 100);
        assert!(canvases.after_commit(&id("c"), canvas(1), 5, 100).is_none());
        assert!(canvases.after_commit(&id("c"), canvas(1), 1, 1).is_some(), "4 + 5 + 1 ops");
        assert!(canvases.after_commit(&id("c"), canvas(1), 1, 1).is_some(), "due until a snapshot is on its way");
        canvases.snapshot_queued(&id("c"));
        assert!(canvases.after_commit(&id("c"), canvas(1), 9, 999).is_none(), "counted from the snapshot on");
        assert!(canvases.after_commit(&id("d"), canvas(1), 1, 1000).is_some(), "1000 bytes of ops");
    }

    #[test]
    fn a_big_canvas_waits_until_its_ops_since_the_snapshot_are_a_quarter_of_it_or_the_bytes_cap() {
        let big = canvas(100);
        let quarter = big.objects.bytes() / 4;
        let mut canvases = Canvases::new(1 << 30, SnapshotPolicy { every_ops: 10, every_bytes: 1 << 20 });
        assert!(canvases.after_commit(&id("c"), big.clone(), 20, quarter - 1).is_none(), "20 ops, too small");
        assert!(canvases.after_commit(&id("c"), big.clone(), 1, 1).is_some(), "a quarter of the state");
        canvases.snapshot_queued(&id("c"));
        let mut capped = Canvases::new(1 << 30, SnapshotPolicy { every_ops: 1000, every_bytes: quarter / 2 });
        assert!(capped.after_commit(&id("c"), big, 1, quarter / 2).is_some(), "--snapshot-bytes, whatever the size");
    }

    #[test]
    fn a_canvas_quiet_with_ops_after_its_snapshot_is_snapshotted_once() {
        let mut canvases = Canvases::new(1 << 30, SnapshotPolicy { every_ops: 1000, every_bytes: 1 << 30 });
        canvases.read(id("read"), canvas(3), 0, 0);
        assert!(canvases.after_commit(&id("c"), canvas(3), 2, 50).is_none());
        let later = Instant::now() + Duration::from_secs(2);
        assert!(canvases.quiet(Instant::now(), Duration::from_secs(1)).is_empty(), "not quiet yet");
        let quiet: Vec<CanvasId> = canvases.quiet(later, Duration::from_secs(1)).into_iter().map(|(c, _)| c).collect();
        assert_eq!(quiet, [id("c")], "only a canvas with ops after its snapshot");
        canvases.snapshot_queued(&id("c"));
        assert!(canvases.quiet(later, Duration::from_secs(1)).is_empty(), "once");
    }

    #[test]
    fn the_canvas_just_read_is_never_the_one_dropped() {
        let one = canvas(10).objects.bytes();
        let mut canvases = Canvases::new(one, SnapshotPolicy { every_ops: 1000, every_bytes: 1 << 30 });
        for name in ["a", "b", "c", "d", "e", "f"] {
            canvases.read(id(name), canvas(10), 0, 0);
            assert!(canvases.holds(&id(name), true), "{name} was read for what waits on it");
        }
    }

    #[test]
    fn the_least_recently_used_canvases_go_first_past_the_budget() {
        let one = canvas(10).objects.bytes();
        let mut canvases = Canvases::new(one * 2, SnapshotPolicy { every_ops: 1000, every_bytes: 1 << 30 });
        canvases.read(id("a"), canvas(10), 0, 0);
        canvases.read(id("b"), canvas(10), 0, 0);
        assert!(canvases.get(&id("a")).is_some());
        canvases.read(id("c"), canvas(10), 0, 0);
        let holds = |canvases: &Canvases, name: &str| canvases.holds(&id(name), true);
        assert!(holds(&canvases, "a") && holds(&canvases, "c") && !holds(&canvases, "b"));
        let mut moved = canvas(10).head;
        moved.rev = 5;
        canvases.appended(&id("a"), &moved);
        assert!(!holds(&canvases, "a"), "its state changed under it: read again when needed");
    }
}
