//! Wall-clock time as the wire and the file use it: unix milliseconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the unix epoch. A clock set before 1970 reads as 0 rather than failing: the value is
/// used for `ts` and expiry, where a wrong clock is a misconfiguration to log, not a reason to crash.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
