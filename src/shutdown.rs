//! Orderly shutdown in phases, so that nothing accepted is lost and every ack reaches its client:
//!
//! 1. `Draining`: the listener stops accepting; sessions stop reading new frames (what they already passed
//!    to the writer is still queued) and drop their *reading* guard.
//! 2. Once no session reads, the writer queue is flushed: every accepted message is committed and its ack
//!    queued to its sender.
//! 3. `Closing`: sessions write what is queued, close with 1001 and drop their *alive* guard.
//! 4. The bus saves watermarks, deregisters the instance and stops its threads.
//!
//! `lib::run` drives the phases; sessions only watch them. Waits are bounded by `--shutdown-timeout`.

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::task::task_tracker::{TaskTracker, TaskTrackerToken};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Running,
    Draining,
    Closing,
}

/// Held while some work is in progress (a token of a [`TaskTracker`]); dropping it counts it done.
pub type Guard = TaskTrackerToken;

/// Waits until no guard of `tracker` is held, or `limit` passes; returns how many were still held. A guard
/// taken while others are still held is waited for too; one taken once none is held is not, so a new
/// connection takes its guards before it checks the phase (`http/ws.rs`): either shutdown waits for it or it
/// sees shutdown and is refused.
pub async fn wait_idle(tracker: &TaskTracker, limit: Duration) -> usize {
    tracker.close();
    let _ = tokio::time::timeout(limit, tracker.wait()).await;
    tracker.len()
}

/// The shutdown state every session watches.
pub struct Shutdown {
    phase: watch::Sender<Phase>,
    /// Sessions still reading client frames.
    pub reading: TaskTracker,
    /// Sessions still open.
    pub alive: TaskTracker,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown { phase: watch::Sender::new(Phase::Running), reading: TaskTracker::new(), alive: TaskTracker::new() }
    }
}

impl Shutdown {
    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    pub fn enter(&self, phase: Phase) {
        self.phase.send_replace(phase);
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Resolves when the phase leaves `Running`: the listener's graceful-shutdown signal.
    pub fn stopped_accepting(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut phase = self.subscribe();
        async move {
            let _ = phase.wait_for(|p| *p != Phase::Running).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The clock is paused, so a wait that ignored the guards would still end (at the limit, the runtime
    // skipping ahead to it): each test asserts how much virtual time the wait took.

    #[tokio::test(start_paused = true)]
    async fn wait_idle_returns_when_the_last_guard_drops() {
        let tracker = TaskTracker::new();
        let (first, last) = (tracker.token(), tracker.token());
        let start = tokio::time::Instant::now();
        let waiter = tokio::spawn({
            let tracker = tracker.clone();
            async move { (wait_idle(&tracker, Duration::from_secs(60)).await, start.elapsed()) }
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(first);
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(last);
        let (held, took) = waiter.await.unwrap();
        assert_eq!(held, 0);
        assert_eq!(took, Duration::from_secs(5), "returned when the last guard dropped, not before, not at the limit");
    }

    #[tokio::test(start_paused = true)]
    async fn wait_idle_gives_up_after_the_limit_and_reports_stragglers() {
        let tracker = TaskTracker::new();
        let _held = tracker.token();
        let start = tokio::time::Instant::now();
        assert_eq!(wait_idle(&tracker, Duration::from_secs(5)).await, 1);
        assert_eq!(start.elapsed(), Duration::from_secs(5), "waited for the guard until the limit");
    }
}
