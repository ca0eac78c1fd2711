//! Relays' resident memory, read from /proc: once (`rss_kib`), or sampled every 10 ms on a thread of its own
//! to catch a peak (`Sampler`). It only reads; which pids to watch is the scenario's business.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the sampler reads /proc.
const EVERY: Duration = Duration::from_millis(10);

/// Resident memory of a process, from /proc/PID/status.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))?;
    Ok(line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// The highest RSS of each process since the last `reset`. A plain thread rather than a task: a load
/// generator's busy async workers would delay the samples exactly when memory peaks.
pub struct Sampler {
    /// The processes, in report order.
    pids: Vec<u32>,
    /// Per pid, the highest RSS seen since the last reset (KiB).
    peaks: Arc<Vec<AtomicU64>>,
    /// Tells the thread to end.
    done: Arc<AtomicBool>,
    /// The sampling thread, joined on drop.
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    /// Starts sampling; fails at once if a pid cannot be read.
    pub fn start(pids: &[u32]) -> anyhow::Result<Sampler> {
        for pid in pids {
            rss_kib(*pid).map_err(|e| anyhow::anyhow!("cannot read the RSS of pid {pid}: {e}"))?;
        }
        let peaks: Arc<Vec<AtomicU64>> = Arc::new(pids.iter().map(|_| AtomicU64::new(0)).collect());
        let done = Arc::new(AtomicBool::new(false));
        let thread = {
            let (pids, peaks, done) = (pids.to_vec(), Arc::clone(&peaks), Arc::clone(&done));
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    for (pid, peak) in pids.iter().zip(peaks.iter()) {
                        // A relay that exited reads as nothing; its peak so far stands.
                        if let Ok(kib) = rss_kib(*pid) {
                            peak.fetch_max(kib, Ordering::Relaxed);
                        }
                    }
                    std::thread::sleep(EVERY);
                }
            })
        };
        Ok(Sampler { pids: pids.to_vec(), peaks, done, thread: Some(thread) })
    }

    /// The current RSS of each process (0 for one that cannot be read), and restarts the peaks from there.
    pub fn reset(&self) -> Vec<u64> {
        let now: Vec<u64> = self.pids.iter().map(|pid| rss_kib(*pid).unwrap_or(0)).collect();
        for (peak, kib) in self.peaks.iter().zip(&now) {
            peak.store(*kib, Ordering::Relaxed);
        }
        now
    }

    /// The highest RSS of each process since the last reset.
    pub fn peaks(&self) -> Vec<u64> {
        self.peaks.iter().map(|peak| peak.load(Ordering::Relaxed)).collect()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
