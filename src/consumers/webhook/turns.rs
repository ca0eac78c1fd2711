//! Which canvases have a delivery task now, and in what order the others get one. A task for every canvas
//! with something to deliver would, with a receiver that hangs, hold a connection per canvas until
//! `--webhook-timeout` (and a shard taken over would start one per canvas of it): a client that creates
//! canvases cheaply could exhaust the file descriptors and starve WebSocket accepts. So requests in flight
//! are capped (`--webhook-concurrency`, a fair semaphore taken in `canvas.rs`), and so are live tasks: at
//! most [`TASKS_PER_REQUEST`] times that many. The other canvases wait their turn here, in arrival order;
//! a task gives its turn to the first waiting canvas after each attempt, answered or failed (a failure's
//! backoff goes with the canvas into the queue), and when it is caught up. However many canvases are slow,
//! each gets a turn within a round of the queue.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

use super::{canvas, Shared};
use crate::protocol::CanvasId;

/// Live canvas tasks per request slot: a task holds at most one batch in memory and waits for a slot to
/// send it, and a few per slot keep every slot busy while some tasks linger for more messages or back off
/// after a failure.
pub const TASKS_PER_REQUEST: usize = 4;

/// A canvas's task, as the tail and the lease loop wake it.
#[derive(Debug, Default)]
pub struct Slot {
    /// Told when the canvas got a message (or its shard was taken), so that a caught-up task looks again.
    pub wake: Notify,
    /// Wakes so far: a task that saw them all may end (see [`Shared::may_end`]).
    pub wakes: AtomicU64,
}

/// Where a canvas's retries of a batch stand, kept while it waits its turn so that its backoff goes on
/// growing instead of starting over at every turn.
#[derive(Debug, Clone, Copy, Default)]
pub struct Retry {
    /// Failed attempts of the batch so far.
    pub failures: u32,
    /// No attempt before this (the backoff after the last failure).
    pub not_before: Option<Instant>,
}

/// The canvases with a task and those waiting for one.
pub struct Turns {
    /// Most tasks at once.
    max: usize,
    /// Held for a few map operations at a time, never across an `.await`.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The canvases with a task, by id: a wake reaches the task through its slot.
    running: HashMap<String, Arc<Slot>>,
    /// In the order they are to start, each canvas once.
    waiting: VecDeque<(CanvasId, Retry)>,
    /// The canvases in `waiting`: a wake of one already waiting changes nothing.
    queued: HashSet<String>,
}

impl Turns {
    pub fn new(max: usize) -> Turns {
        Turns { max: max.max(1), state: Mutex::default() }
    }

    /// Whether a canvas waits for a task.
    pub fn has_waiting(&self) -> bool {
        !self.state.lock().expect("turns lock").waiting.is_empty()
    }
}

impl Shared {
    /// Wakes `canvas`'s task; without one, starts one if there is room, else queues the canvas (once).
    pub(super) fn wake(self: &Arc<Self>, canvas: &str) {
        let mut state = self.turns.state.lock().expect("turns lock");
        if let Some(slot) = state.running.get(canvas) {
            slot.wakes.fetch_add(1, Ordering::SeqCst);
            slot.wake.notify_one();
            return;
        }
        if state.queued.contains(canvas) {
            return;
        }
        let Ok(id) = CanvasId::parse(canvas) else { return };
        if state.running.len() < self.turns.max {
            self.start(&mut state, id, Retry::default());
        } else {
            state.queued.insert(canvas.to_owned());
            state.waiting.push_back((id, Retry::default()));
        }
        self.count(&state);
    }

    /// Ends `canvas`'s task if nothing woke it since it saw `seen` wakes, and starts the next waiting
    /// canvas; otherwise (false) the task goes on.
    pub(super) fn may_end(self: &Arc<Self>, canvas: &str, slot: &Arc<Slot>, seen: u64) -> bool {
        let mut state = self.turns.state.lock().expect("turns lock");
        if slot.wakes.load(Ordering::SeqCst) != seen {
            return false;
        }
        forget(&mut state, canvas, slot);
        self.start_waiting(&mut state);
        self.count(&state);
        true
    }

    /// Gives `canvas`'s turn to the first waiting canvas and queues it behind the others with `retry`; false
    /// (the task goes on) when none waits.
    pub(super) fn give_way(self: &Arc<Self>, canvas: &CanvasId, slot: &Arc<Slot>, retry: Retry) -> bool {
        let mut state = self.turns.state.lock().expect("turns lock");
        if state.waiting.is_empty() {
            return false;
        }
        forget(&mut state, canvas.as_str(), slot);
        state.queued.insert(canvas.as_str().to_owned());
        state.waiting.push_back((canvas.clone(), retry));
        self.start_waiting(&mut state);
        self.count(&state);
        true
    }

    /// A task that ended otherwise (the deliverer stops): its canvas has no task any more.
    pub(super) fn ended(self: &Arc<Self>, canvas: &str, slot: &Arc<Slot>) {
        let mut state = self.turns.state.lock().expect("turns lock");
        forget(&mut state, canvas, slot);
        self.start_waiting(&mut state);
        self.count(&state);
    }

    fn start(self: &Arc<Self>, state: &mut State, canvas: CanvasId, retry: Retry) {
        let slot = Arc::new(Slot::default());
        state.running.insert(canvas.as_str().to_owned(), slot.clone());
        tokio::spawn(canvas::deliver(self.clone(), canvas, slot, retry));
    }

    /// Shows the numbers of canvases with a task and waiting for one on `/health`.
    fn count(&self, state: &State) {
        self.status.delivering.store(state.running.len() as u64, Ordering::Relaxed);
        self.status.waiting.store(state.waiting.len() as u64, Ordering::Relaxed);
    }

    /// Starts waiting canvases, first come first, while there is room (none once the deliverer stops).
    fn start_waiting(self: &Arc<Self>, state: &mut State) {
        while state.running.len() < self.turns.max && !self.stop.is_cancelled() {
            let Some((canvas, retry)) = state.waiting.pop_front() else { return };
            state.queued.remove(canvas.as_str());
            self.start(state, canvas, retry);
        }
    }
}

/// Drops `canvas`'s entry if it is still `slot`'s (not a later task's).
fn forget(state: &mut State, canvas: &str, slot: &Arc<Slot>) {
    if state.running.get(canvas).is_some_and(|s| Arc::ptr_eq(s, slot)) {
        state.running.remove(canvas);
    }
}
