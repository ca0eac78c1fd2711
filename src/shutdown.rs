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

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Running,
    Draining,
    Closing,
}

/// Counts live guards and wakes waiters when the count reaches zero.
#[derive(Default)]
pub struct Tracker {
    count: AtomicUsize,
    zero: Notify,
}

/// Held while some work is in progress; dropping it counts it done.
pub struct Guard(Arc<Tracker>);

impl Tracker {
    pub fn guard(self: &Arc<Self>) -> Guard {
        self.count.fetch_add(1, Ordering::AcqRel);
        Guard(self.clone())
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Waits until no guard is held, or `limit` passes; returns how many were still held.
    pub async fn wait_idle(&self, limit: Duration) -> usize {
        let idle = async {
            loop {
                // Created before the check: notify_waiters reaches it even if it is not polled yet.
                let notified = self.zero.notified();
                if self.count() == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(limit, idle).await;
        self.count()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.zero.notify_waiters();
        }
    }
}

/// The shutdown state every session watches.
pub struct Shutdown {
    phase: watch::Sender<Phase>,
    /// Sessions still reading client frames.
    pub reading: Arc<Tracker>,
    /// Sessions still open.
    pub alive: Arc<Tracker>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown { phase: watch::Sender::new(Phase::Running), reading: Arc::default(), alive: Arc::default() }
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

    #[tokio::test(start_paused = true)]
    async fn wait_idle_returns_when_the_last_guard_drops() {
        let tracker = Arc::new(Tracker::default());
        let guards = vec![tracker.guard(), tracker.guard()];
        let waiter = tokio::spawn({
            let tracker = tracker.clone();
            async move { tracker.wait_idle(Duration::from_secs(60)).await }
        });
        tokio::task::yield_now().await;
        drop(guards);
        assert_eq!(waiter.await.unwrap(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_idle_gives_up_after_the_limit_and_reports_stragglers() {
        let tracker = Arc::new(Tracker::default());
        let _held = tracker.guard();
        assert_eq!(tracker.wait_idle(Duration::from_secs(5)).await, 1);
    }
}
