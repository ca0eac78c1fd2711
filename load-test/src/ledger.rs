//! What the consumer scenarios (`webhook`, `stream`) judge deliveries against: the run's canvas names, and a
//! [`Ledger`] of every seq the publishers had acked, with the instant each ack arrived. For the webhook it also
//! pairs each ack with the receipt of the same message (same process, same monotonic clock), whichever of the
//! two comes first. It does not publish (`publish`) nor receive (`receiver`, `stream`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::client::{histogram, unix_us};

/// The type of every message the publishers send: deliveries of other types (presence) are counted apart.
pub const KIND: &str = "stroke";

/// The canvases of one run: `<prefix>-<tag><run id>-<index>`. The run id keeps a relay that outlives one run
/// (its webhook retries, its retained log read with `since=0`) from mixing an earlier run's canvases into
/// this one's counts.
pub struct Canvases {
    /// Everything before the index.
    base: String,
    /// How many there are: indexes are `0..count`.
    count: usize,
}

impl Canvases {
    /// `count` canvases named after `prefix`, the scenario's `tag` and the current time.
    pub fn new(prefix: &str, tag: &str, count: usize) -> Canvases {
        let run = (unix_us() / 1000) % 0x1_0000_0000;
        Canvases { base: format!("{prefix}-{tag}{run:x}-"), count }
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// The name of canvas `index`.
    pub fn name(&self, index: usize) -> String {
        format!("{}{index}", self.base)
    }

    /// The index of a canvas of this run, `None` for any other canvas.
    pub fn index(&self, name: &str) -> Option<usize> {
        let index: usize = name.strip_prefix(self.base.as_str())?.parse().ok()?;
        (index < self.count).then_some(index)
    }
}

/// One message of the ack/receipt pairing, until both sides have been seen.
enum Side {
    /// The publisher has the ack; the receipt is still to come.
    Acked(Instant),
    /// The receiver has it and the ack is still on its way (the relay answers the sender and commits to the
    /// webhook queue independently, so this can happen).
    Received(Instant),
}

/// Everything under the ledger's lock.
struct Inner {
    /// Acked seqs per canvas, in the order their acks came.
    acked: Vec<Vec<u64>>,
    /// Messages seen by only one side so far (only when pairing).
    pending: HashMap<(usize, u64), Side>,
    /// Ack to receipt, for messages whose ack came first.
    ack_to_receipt_us: Histogram<u64>,
    /// By how much the receipt beat the ack, for the others.
    receipt_first_us: Histogram<u64>,
}

/// The record of acks shared by the publishers and the receivers of one run.
pub struct Ledger {
    /// A `std` mutex: every section is a few map operations, never an `.await`.
    inner: Mutex<Inner>,
    /// Whether acks are paired with receipts ([`Ledger::received`]); without it, nothing is kept pending.
    pairing: bool,
}

/// What the pairing measured.
pub struct Pairing {
    pub ack_to_receipt_us: Histogram<u64>,
    pub receipt_first_us: Histogram<u64>,
}

impl Ledger {
    pub fn new(canvases: usize, pairing: bool) -> Ledger {
        let inner = Inner {
            acked: vec![Vec::new(); canvases],
            pending: HashMap::new(),
            ack_to_receipt_us: histogram(),
            receipt_first_us: histogram(),
        };
        Ledger { inner: Mutex::new(inner), pairing }
    }

    /// The publisher of `canvas` got the ack of `seq` at `at`.
    pub fn acked(&self, canvas: usize, seq: u64, at: Instant) {
        let mut inner = self.lock();
        if let Some(seqs) = inner.acked.get_mut(canvas) {
            seqs.push(seq);
        }
        if !self.pairing {
            return;
        }
        match inner.pending.remove(&(canvas, seq)) {
            Some(Side::Received(received)) => {
                let _ = inner.receipt_first_us.record(micros(at.saturating_duration_since(received)));
            }
            _ => {
                inner.pending.insert((canvas, seq), Side::Acked(at));
            }
        }
    }

    /// The receiver got these seqs of `canvas` (first deliveries only) at `at`.
    pub fn received(&self, canvas: usize, seqs: &[u64], at: Instant) {
        if !self.pairing || seqs.is_empty() {
            return;
        }
        let mut inner = self.lock();
        for &seq in seqs {
            match inner.pending.remove(&(canvas, seq)) {
                Some(Side::Acked(acked)) => {
                    let _ = inner.ack_to_receipt_us.record(micros(at.saturating_duration_since(acked)));
                }
                _ => {
                    inner.pending.insert((canvas, seq), Side::Received(at));
                }
            }
        }
    }

    /// Acked seqs per canvas, so far.
    pub fn acked_seqs(&self) -> Vec<Vec<u64>> {
        self.lock().acked.clone()
    }

    /// The highest acked seq of each canvas (0 for a canvas with none).
    pub fn heads(&self) -> Vec<u64> {
        self.lock().acked.iter().map(|seqs| seqs.iter().copied().max().unwrap_or(0)).collect()
    }

    /// Acks so far, over all canvases.
    pub fn total(&self) -> u64 {
        self.lock().acked.iter().map(|seqs| seqs.len() as u64).sum()
    }

    /// The pairing's histograms so far.
    pub fn pairing(&self) -> Pairing {
        let inner = self.lock();
        Pairing { ack_to_receipt_us: inner.ack_to_receipt_us.clone(), receipt_first_us: inner.receipt_first_us.clone() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic under the lock leaves plain counters behind: still fit to report.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A duration in whole µs, at least 1 (the histograms start at 1).
pub fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canvas_names_round_trip_and_others_are_foreign() {
        let canvases = Canvases::new("load", "wh", 3);
        assert_eq!(canvases.index(&canvases.name(2)), Some(2));
        assert_eq!(canvases.index(&canvases.name(3)), None);
        assert_eq!(canvases.index("load-bg"), None);
    }

    #[test]
    fn pairing_works_whichever_side_comes_first() {
        let ledger = Ledger::new(1, true);
        let t0 = Instant::now();
        ledger.acked(0, 1, t0);
        ledger.received(0, &[1, 2], t0 + Duration::from_millis(3));
        ledger.acked(0, 2, t0 + Duration::from_millis(4));
        let pairing = ledger.pairing();
        assert_eq!(pairing.ack_to_receipt_us.len(), 1);
        assert_eq!(pairing.receipt_first_us.len(), 1);
        assert_eq!(ledger.heads(), vec![2]);
    }
}
