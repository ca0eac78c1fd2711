//! Unit tests of a session: its token expiry deadline, and how much an idle one keeps.

use super::*;

#[test]
fn a_token_expiry_of_any_size_gives_a_deadline_without_overflow() {
    let now = 1_700_000_000_000;
    let start = tokio::time::Instant::now();
    let soon = expiry_deadline(Some(1_700_000_010), now);
    assert!(soon >= start + Duration::from_secs(9) && soon <= start + Duration::from_secs(11));
    assert!(expiry_deadline(Some(1), now) <= tokio::time::Instant::now(), "already expired: now");
    for huge in [9_300_000_000_000_000, u64::MAX] {
        assert!(expiry_deadline(Some(huge), now) > start + Duration::from_secs(50 * 365 * 24 * 3600));
    }
}

/// The size of the future `make` returns, without a value to call it with.
fn future_size<A, F: std::future::Future>(_make: impl FnOnce(A) -> F) -> usize {
    std::mem::size_of::<F>()
}

/// An idle socket's memory is mostly its task, and the task is this future: it must not keep room for
/// what a session only does now and then (a welcome, a frame read, a flush, a multiplexed join). The
/// bound is what it measured in a debug build (2,200 bytes; smaller in a release build) with a little
/// room; 3,160 before those moved out of it.
#[test]
fn an_idle_sessions_future_keeps_no_room_for_what_it_does_now_and_then() {
    type Socket = tokio_tungstenite::WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;
    let size = future_size(|session: Session<Socket>| session.run(None));
    assert!(size <= 2_304, "a session's future takes {size} bytes");
}
