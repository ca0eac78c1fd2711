//! Adding up the clients' tallies into one report: counts, rates and latency percentiles, for people and as
//! JSON.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::client::{histogram, Tally};

pub struct Report {
    title: String,
    elapsed: Duration,
    sent: u64,
    acked: u64,
    delivered: u64,
    delivered_cross: u64,
    gaps: u64,
    lost: u64,
    errors: u64,
    expired: u64,
    ack_us: Histogram<u64>,
    e2e_cross_us: Histogram<u64>,
    e2e_local_us: Histogram<u64>,
}

impl Report {
    pub fn new(title: String, elapsed: Duration, tallies: Vec<Tally>, lost: u64) -> Report {
        let mut r = Report {
            title,
            elapsed,
            sent: 0,
            acked: 0,
            delivered: 0,
            delivered_cross: 0,
            gaps: 0,
            lost,
            errors: 0,
            expired: 0,
            ack_us: histogram(),
            e2e_cross_us: histogram(),
            e2e_local_us: histogram(),
        };
        for t in tallies {
            r.sent += t.sent;
            r.acked += t.acked;
            r.delivered += t.delivered;
            r.delivered_cross += t.delivered_cross;
            r.gaps += t.gaps;
            r.errors += t.errors;
            r.expired += t.expired;
            let _ = r.ack_us.add(&t.ack_us);
            let _ = r.e2e_cross_us.add(&t.e2e_cross_us);
            let _ = r.e2e_local_us.add(&t.e2e_local_us);
        }
        r
    }

    fn per_second(&self, n: u64) -> f64 {
        n as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "scenario": self.title,
            "seconds": self.elapsed.as_secs_f64(),
            "sent": self.sent, "acked": self.acked, "delivered": self.delivered,
            "delivered_cross_instance": self.delivered_cross,
            "gaps": self.gaps, "lost": self.lost, "errors": self.errors,
            "live_users_expired": self.expired,
            "acked_per_second": self.per_second(self.acked),
            "deliveries_per_second": self.per_second(self.delivered),
            "ack_ms": percentiles(&self.ack_us),
            "e2e_cross_instance_ms": percentiles(&self.e2e_cross_us),
            "e2e_same_instance_ms": percentiles(&self.e2e_local_us),
        })
    }

    pub fn human(&self) -> String {
        let line = |name: &str, h: &Histogram<u64>| {
            let p = percentiles(h);
            format!(
                "  {name:<22} p50 {:>7.3}  p95 {:>7.3}  p99 {:>7.3}  max {:>8.3} ms  (n={})\n",
                p["p50"].as_f64().unwrap_or(0.0),
                p["p95"].as_f64().unwrap_or(0.0),
                p["p99"].as_f64().unwrap_or(0.0),
                p["max"].as_f64().unwrap_or(0.0),
                h.len()
            )
        };
        format!(
            "{}\n  {:.1}s: sent {} acked {} ({:.0}/s), delivered {} ({:.0}/s, {} cross-instance)\n  gaps {}  lost {}  errors {}  live users expired {}\n{}{}{}",
            self.title,
            self.elapsed.as_secs_f64(),
            self.sent,
            self.acked,
            self.per_second(self.acked),
            self.delivered,
            self.per_second(self.delivered),
            self.delivered_cross,
            self.gaps,
            self.lost,
            self.errors,
            self.expired,
            line("ack", &self.ack_us),
            line("end-to-end cross", &self.e2e_cross_us),
            line("end-to-end same", &self.e2e_local_us),
        )
    }
}

pub fn percentiles(h: &Histogram<u64>) -> Value {
    let ms = |us: u64| us as f64 / 1000.0;
    json!({
        "p50": ms(h.value_at_quantile(0.50)),
        "p95": ms(h.value_at_quantile(0.95)),
        "p99": ms(h.value_at_quantile(0.99)),
        "max": ms(h.max()),
        "count": h.len(),
    })
}

/// The nearest-rank `q` quantile of ascending `sorted` samples (0 when there are none): exact for the few
/// samples of a join or flood run, where a histogram would only round.
pub fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `report`'s human summary indented by `indent` spaces, to nest it under another scenario's.
pub fn indented(report: &Report, indent: usize) -> String {
    let pad = " ".repeat(indent);
    report.human().lines().map(|line| format!("{pad}{line}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::nearest_rank;

    #[test]
    fn nearest_rank_picks_a_sample() {
        let samples = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(nearest_rank(&samples, 0.5), 2.0);
        assert_eq!(nearest_rank(&samples, 0.99), 4.0);
        assert_eq!(nearest_rank(&samples, 0.0), 1.0);
        assert_eq!(nearest_rank(&[], 0.5), 0.0);
    }
}
