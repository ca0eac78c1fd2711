//! The last storage error, kept until storage works again: what makes `/health` critical on either bus.

use std::sync::Mutex;

/// The last storage error and when it happened (unix ms), kept until storage works again: what makes
/// `/health` critical. Shared by a bus's writer, reader and health check.
#[derive(Debug, Default)]
pub struct LastError(Mutex<Option<(i64, String)>>);

impl LastError {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(i64, String)>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn set(&self, at: i64, message: &str) {
        *self.lock() = Some((at, message.to_owned()));
    }

    pub fn clear(&self) {
        self.lock().take();
    }

    pub fn get(&self) -> Option<(i64, String)> {
        self.lock().clone()
    }

    /// The error and its age at `now`, as the figures report them.
    pub fn report(&self, now: i64) -> (Option<String>, Option<i64>) {
        self.get().map_or((None, None), |(at, message)| (Some(message), Some(now - at)))
    }
}
