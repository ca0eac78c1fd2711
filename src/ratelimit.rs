//! The per-connection limit on logged messages: a token bucket refilled at `--rate-limit` per second up to
//! `--rate-burst`, and the rule for a client that keeps going after being told to slow down. Pure logic over
//! explicit instants, so it is tested without sleeping.

use std::time::Instant;

/// What to do with one logged message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// Refuse it with a `rate_limited` error; the connection stays open.
    Refuse,
    /// The client has sent a whole burst's worth of refused messages since its last accepted one: close 4008.
    Close,
}

#[derive(Debug, Clone)]
pub struct RateLimit {
    /// Tokens per second; 0 turns the limit off.
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    /// Refusals since the last accepted message.
    strikes: u32,
}

impl RateLimit {
    pub fn new(per_second: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        RateLimit { rate: f64::from(per_second), burst, tokens: burst, last: now, strikes: 0 }
    }

    /// Spends a token for one message, if there is one.
    pub fn check(&mut self, now: Instant) -> Verdict {
        if self.rate == 0.0 {
            return Verdict::Accept;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.strikes = 0;
            return Verdict::Accept;
        }
        self.strikes += 1;
        if f64::from(self.strikes) >= self.burst {
            Verdict::Close
        } else {
            Verdict::Refuse
        }
    }

    pub fn describe(&self) -> String {
        format!("rate limit: at most {} messages/s (bursts of {}); slow down", self.rate, self.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_passes_then_the_rate_applies() {
        let start = Instant::now();
        let mut limit = RateLimit::new(10, 5, start);
        let verdicts: Vec<_> = (0..7).map(|_| limit.check(start)).collect();
        assert_eq!(&verdicts[..5], [Verdict::Accept; 5]);
        assert_eq!(&verdicts[5..], [Verdict::Refuse; 2]);
        assert_eq!(limit.check(start + Duration::from_millis(100)), Verdict::Accept, "one token per 100 ms");
        assert_eq!(limit.check(start + Duration::from_millis(100)), Verdict::Refuse);
    }

    #[test]
    fn refusing_a_whole_burst_without_slowing_down_closes() {
        let start = Instant::now();
        let mut limit = RateLimit::new(1, 3, start);
        for _ in 0..3 {
            assert_eq!(limit.check(start), Verdict::Accept);
        }
        assert_eq!(limit.check(start), Verdict::Refuse);
        assert_eq!(limit.check(start), Verdict::Refuse);
        assert_eq!(limit.check(start), Verdict::Close);
    }

    #[test]
    fn an_accepted_message_forgives_earlier_refusals() {
        let start = Instant::now();
        let mut limit = RateLimit::new(1, 2, start);
        limit.check(start);
        limit.check(start);
        assert_eq!(limit.check(start), Verdict::Refuse);
        assert_eq!(limit.check(start + Duration::from_secs(1)), Verdict::Accept);
        assert_eq!(limit.check(start + Duration::from_secs(1)), Verdict::Refuse, "strikes start over");
    }

    #[test]
    fn zero_turns_the_limit_off() {
        let start = Instant::now();
        let mut limit = RateLimit::new(0, 1, start);
        assert!((0..10_000).all(|_| limit.check(start) == Verdict::Accept));
    }
}
