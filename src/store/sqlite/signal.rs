//! How other threads wake the watcher: the writer after a local commit (`poke`; `wake` when a room waits for
//! earlier rows), the doorbell thread when a peer rang, and shutdown. A condvar over the accumulated
//! [`Wakeups`], which the watcher takes in one piece each time it wakes.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::protocol::CanvasId;

/// Wake-ups for the watcher thread from other threads.
#[derive(Default)]
pub struct Signal {
    state: Mutex<Wakeups>,
    changed: Condvar,
}

/// What happened since the watcher last looked.
#[derive(Default, Debug)]
pub struct Wakeups {
    /// Read now (a local commit is waiting for earlier rows, or local delivery is off).
    pub read: bool,
    /// Canvases whose rooms hold early seqs: check them for holes after reading.
    pub settle: Vec<CanvasId>,
    /// Local activity: reset the backoff.
    pub active: bool,
    /// A peer rang the doorbell: it committed something, check now.
    pub rung: bool,
    pub stop: bool,
}

impl Signal {
    fn update(&self, f: impl FnOnce(&mut Wakeups)) {
        // std Mutex: a few field writes, never held across anything that blocks.
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
        self.changed.notify_one();
    }

    /// Asks for a read now, then a hole check of `settle`.
    pub fn wake(&self, settle: Vec<CanvasId>) {
        self.update(|w| {
            w.read = true;
            w.active = true;
            w.settle.extend(settle);
        });
    }

    /// Reports local activity (replies from other processes are likely soon).
    pub fn poke(&self) {
        self.update(|w| w.active = true);
    }

    /// A peer's ring (see `doorbell`). Returns false once the watcher is stopped.
    pub fn ring(&self) -> bool {
        let mut stopped = false;
        self.update(|w| {
            w.rung = true;
            stopped = w.stop;
        });
        !stopped
    }

    pub fn stop(&self) {
        self.update(|w| w.stop = true);
    }

    /// Waits up to `timeout` for a wake-up and takes what accumulated.
    pub(super) fn wait(&self, timeout: Duration) -> Wakeups {
        let guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let idle = |w: &mut Wakeups| !(w.read || w.active || w.rung || w.stop);
        let (mut guard, _) = self.changed.wait_timeout_while(guard, timeout, idle).unwrap_or_else(|p| p.into_inner());
        let taken = std::mem::take(&mut *guard);
        guard.stop = taken.stop; // stays set: the doorbell's thread reads it too
        taken
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn signal_wakes_a_waiting_watcher_and_hands_over_what_accumulated() {
        let signal = Arc::new(Signal::default());
        let waiter = {
            let signal = signal.clone();
            std::thread::spawn(move || signal.wait(Duration::from_secs(30)))
        };
        signal.wake(vec![CanvasId::parse("c1").unwrap()]);
        let wakeups = waiter.join().unwrap();
        assert!(wakeups.read && wakeups.active && !wakeups.stop);
        assert_eq!(wakeups.settle, [CanvasId::parse("c1").unwrap()]);
        let empty = signal.wait(Duration::from_millis(1));
        assert!(!empty.read && empty.settle.is_empty(), "taken once");
    }
}
