//! Periodic work that stops on a token: the upkeep loops of the buses and of the metrics recorder.

use std::future::Future;
use std::time::Duration;

use tokio::time::{interval, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// Ticks every `period`; a tick missed while the work overran is taken late, not made up in a burst.
pub fn ticker(period: Duration) -> Interval {
    let mut ticks = interval(period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticks
}

/// Calls `work` every `period` (skipping ticks it overran) until `stop` is cancelled.
pub async fn every<F, Fut>(period: Duration, stop: CancellationToken, mut work: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut ticks = ticker(period);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = work() => {}
        }
    }
}
