//! The state one process's writer, watcher and health checks share: the read cursor, the watcher's
//! wake-up signal, when the watcher last read, the last storage error, and how many writes committed.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use super::signal::Signal;
use crate::store::last_error::LastError;

/// Where this process is in the shared file, as its writer, watcher and health checks see it.
#[derive(Default)]
pub struct Progress {
    /// This process's read cursor: every row with a lower or equal id has been offered to the hub (or was
    /// committed by this process and delivered directly). Only moves forward.
    cursor: AtomicI64,
    /// Wakes the watcher.
    pub signal: Signal,
    /// When the watcher last finished reading (unix ms).
    pub(super) last_poll_ms: AtomicI64,
    /// The last storage failure and when (unix ms), cleared by the next successful commit.
    pub(super) last_error: LastError,
    /// Successful writer transactions so far: a checkpoint is due only after one.
    pub(super) writes: AtomicU64,
}

impl Progress {
    pub fn cursor(&self) -> i64 {
        self.cursor.load(Ordering::Acquire)
    }

    pub fn advance_cursor(&self, id: i64) {
        self.cursor.fetch_max(id, Ordering::AcqRel);
    }

    /// After our own commit of rows `first..=last`: if the cursor sits right before them, nothing foreign is
    /// in between and the watcher need not read them back.
    pub fn skip_own_rows(&self, first: i64, last: i64) {
        let _ = self.cursor.compare_exchange(first - 1, last, Ordering::AcqRel, Ordering::Acquire);
    }

    pub(super) fn polled(&self, now: i64) {
        self.last_poll_ms.store(now, Ordering::Release);
    }

    pub(super) fn write_succeeded(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.last_error.clear();
    }

    pub(super) fn write_failed(&self, now: i64, message: &str) {
        self.last_error.set(now, message);
    }

    pub(super) fn read_failed(&self, now: i64, message: &str) {
        self.write_failed(now, message);
    }
}
