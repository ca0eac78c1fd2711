//! Which canvases this instance delivers: those of the shards it holds a lease on. Every heartbeat it
//! renews its leases and takes free (or expired) ones up to its fair share, `SHARDS` ÷ live instances
//! rounded up, giving back any above it so that a new instance gets its share; a dead instance's leases
//! run out after `--presence-timeout` and the survivors take them. A lease counts as held here until one
//! heartbeat before it runs out in the store, and no request is sent past that point (`canvas.rs`); a lease
//! given back stops counting as held at once but is released in the store only when no request sent under
//! it is still in flight. So no two instances ever have a request for one canvas in flight at once.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Shared;
use crate::core::Bus;
use crate::periodic::ticker;

/// Shards of canvases: every instance of a store must agree on it, so it is not a flag.
pub const SHARDS: u32 = 16;
/// Canvases looked at per backlog page.
const BACKLOG_PAGE: usize = 500;

/// The shard of a canvas: FNV-1a of its id, stable across processes and versions.
pub fn shard_of(canvas: &str) -> u32 {
    let hash = canvas.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ b as u32).wrapping_mul(0x0100_0193));
    hash % SHARDS
}

/// The store's name of a shard's lease.
pub fn name(shard: u32) -> String {
    format!("webhook:{shard}")
}

/// The leases this instance holds, each until when it counts as held.
pub struct Leases {
    ttl: Duration,
    period: Duration,
    held: Mutex<HashMap<u32, Instant>>,
    /// Set when the tail missed rows: the next round looks for every held shard's backlog.
    rescan: AtomicBool,
    /// Shards given back whose release in the store waits for requests in flight: not asked for meanwhile.
    leaving: Mutex<HashSet<u32>>,
    /// Requests in flight per shard (see [`Leases::in_flight`]).
    in_flight: [AtomicU32; SHARDS as usize],
}

impl Leases {
    pub fn new(ttl: Duration, period: Duration) -> Leases {
        let in_flight = std::array::from_fn(|_| AtomicU32::new(0));
        let (held, leaving, rescan) = (Mutex::default(), Mutex::default(), AtomicBool::new(false));
        Leases { ttl, period, held, leaving, rescan, in_flight }
    }

    /// Until when this instance may send for `shard`, if it holds it.
    pub fn valid_until(&self, shard: u32) -> Option<Instant> {
        let until = *self.held.lock().expect("leases lock").get(&shard)?;
        (until > Instant::now()).then_some(until)
    }

    /// Counts a request of `shard` in flight until the guard drops. Taken before the lease is checked (under
    /// the `held` lock), and a release drops the lease (under that lock) before it looks at the count: the
    /// lock orders the two, so either the request sees the lease gone and is not sent, or the release sees
    /// the count and waits.
    pub fn in_flight(&self, shard: u32) -> InFlight<'_> {
        let count = &self.in_flight[shard as usize];
        count.fetch_add(1, Ordering::SeqCst);
        InFlight(count)
    }

    fn any_in_flight(&self, shard: u32) -> bool {
        self.in_flight[shard as usize].load(Ordering::SeqCst) > 0
    }

    pub fn holds(&self, shard: u32) -> bool {
        self.valid_until(shard).is_some()
    }

    pub fn rescan(&self) {
        self.rescan.store(true, Ordering::Relaxed);
    }

    /// The shards to ask for this round: those kept (held, up to `fair`) and every other one (the store
    /// grants only those free or expired; what is taken past `fair` is given back at once, see [`run`]);
    /// and those to give back now.
    fn plan(&self, fair: u32) -> (Vec<u32>, Vec<u32>) {
        let now = Instant::now();
        let mut held: Vec<u32> =
            self.held.lock().expect("leases lock").iter().filter(|(_, u)| **u > now).map(|(s, _)| *s).collect();
        held.sort_unstable();
        let give_back = held.split_off(held.len().min(fair as usize));
        let leaving = self.leaving.lock().expect("leases lock");
        let others = (0..SHARDS).filter(|s| !held.contains(s) && !give_back.contains(s) && !leaving.contains(s));
        let ask = held.iter().copied().chain(others).collect();
        (ask, give_back)
    }

    /// Held shards past `fair`, newest first: those taken this round that this instance has no room for.
    fn excess(&self, fair: u32, taken: &[u32]) -> Vec<u32> {
        let held = self.held.lock().expect("leases lock").len();
        let over = held.saturating_sub(fair as usize);
        taken.iter().rev().take(over).copied().collect()
    }
}

/// Resolves once this instance no longer holds `shard`: at its lease's local deadline, unless renewed by
/// then (a renewal only moves the deadline on, so this sleeps again without any read of the store).
pub async fn lapsed(leases: &Leases, shard: u32) {
    while let Some(until) = leases.valid_until(shard) {
        tokio::time::sleep_until(until.into()).await;
    }
}

/// A request in flight under a shard's lease (see [`Leases::in_flight`]).
pub struct InFlight<'a>(&'a AtomicU32);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Renews and takes leases every heartbeat until the deliverer stops; wakes the backlog of each shard taken.
pub async fn run(shared: Arc<Shared>, bus: Bus) {
    let leases = &shared.leases;
    let mut ticks = ticker(leases.period);
    loop {
        tokio::select! {
            () = shared.stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let live = bus.figures().await.map_or(1, |f| f.peer_instances.max(0) as u32 + 1);
        let fair = SHARDS.div_ceil(live);
        let (ask, give_back) = leases.plan(fair);
        release(&shared, &give_back);
        let mut taken = hold(&shared, &ask).await;
        // Asking for every free shard takes a freed one the same round (asking for a few by turns left
        // shards given back by another instance without a deliverer for rounds); the surplus goes back.
        let surplus = leases.excess(fair, &taken);
        taken.retain(|s| !surplus.contains(s));
        release(&shared, &surplus);
        let everything = leases.rescan.swap(false, Ordering::Relaxed);
        let to_scan: Vec<u32> = match everything {
            true => ask.iter().copied().filter(|s| leases.holds(*s)).collect(),
            false => taken,
        };
        if !to_scan.is_empty() {
            // In a task of its own: a long scan must not hold up the next renewal.
            tokio::spawn(wake_backlog(shared.clone(), to_scan));
        }
    }
}

/// Gives back `shards`: stops counting them as held at once (no request starts under them), then, in a
/// task of its own so that renewals go on, releases each in the store once no request sent under it is in
/// flight. A request ends by its lease's local deadline, a heartbeat before the store's lease does; if one
/// is somehow still out then, the lease is left to run out in the store instead. Until the release is
/// committed the shard is `leaving`, and not asked for again.
fn release(shared: &Arc<Shared>, shards: &[u32]) -> Option<tokio::task::JoinHandle<()>> {
    if shards.is_empty() {
        return None;
    }
    let leases = &shared.leases;
    let (count, deadlines) = {
        leases.leaving.lock().expect("leases lock").extend(shards);
        let mut held = leases.held.lock().expect("leases lock");
        let now = Instant::now();
        let deadlines: Vec<(u32, Instant)> = shards.iter().map(|s| (*s, held.remove(s).unwrap_or(now))).collect();
        (held.len(), deadlines)
    };
    shared.status.shards.store(count as u64, Ordering::Relaxed);
    let shared = shared.clone();
    Some(tokio::spawn(async move {
        let busy = |shard: u32| shared.leases.any_in_flight(shard);
        let mut waiting = deadlines;
        loop {
            let now = Instant::now();
            let idle: Vec<u32> = waiting.iter().filter(|(s, _)| !busy(*s)).map(|(s, _)| *s).collect();
            let overdue: Vec<u32> =
                waiting.iter().filter(|(s, until)| busy(*s) && now >= *until).map(|(s, _)| *s).collect();
            if !idle.is_empty() {
                let names: Vec<String> = idle.iter().map(|s| name(*s)).collect();
                if let Err(error) = shared.store.release_leases(&shared.holder, &names).await {
                    tracing::warn!(%error, "webhook: could not give back leases (they run out on their own)");
                }
            }
            let finished = |s: &u32| idle.contains(s) || overdue.contains(s);
            shared.leases.leaving.lock().expect("leases lock").retain(|s| !finished(s));
            waiting.retain(|(s, _)| !finished(s));
            if waiting.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }))
}

/// Gives back every shard held (the deliverer is stopping) and waits until that is done.
pub async fn release_all(shared: &Arc<Shared>) {
    let held: Vec<u32> = shared.leases.held.lock().expect("leases lock").keys().copied().collect();
    if let Some(releasing) = release(shared, &held) {
        let _ = releasing.await;
    }
}

/// Asks for `shards`; returns those newly taken.
async fn hold(shared: &Shared, shards: &[u32]) -> Vec<u32> {
    let leases = &shared.leases;
    let names: Vec<String> = shards.iter().map(|s| name(*s)).collect();
    let asked_at = Instant::now();
    let answer = shared.store.hold_leases(&shared.holder, &names, leases.ttl.as_millis() as u64).await;
    let mut held = leases.held.lock().expect("leases lock");
    let mut taken = Vec::new();
    match answer {
        Ok(holds) => {
            // Counted from before the request: the store's lease ends later than this.
            let until = asked_at + leases.ttl.saturating_sub(leases.period);
            for (shard, holds) in shards.iter().zip(holds) {
                match holds {
                    // A lease whose local deadline had passed is taken anew too (its backlog is woken).
                    true => match held.insert(*shard, until) {
                        Some(before) if before > asked_at => {}
                        _ => taken.push(*shard),
                    },
                    false => drop(held.remove(shard)),
                }
            }
        }
        Err(error) => tracing::warn!(%error, "webhook: could not renew leases"),
    }
    shared.status.shards.store(held.len() as u64, Ordering::Relaxed);
    if !taken.is_empty() {
        tracing::info!(?taken, "webhook: took shards");
    }
    taken
}

/// Wakes every canvas of `shards` with something undelivered.
async fn wake_backlog(shared: Arc<Shared>, shards: Vec<u32>) {
    let mut after = None;
    loop {
        match shared.bus.backlog(after.clone(), BACKLOG_PAGE).await {
            Ok((pending, last)) => {
                for canvas in pending.iter().filter(|c| shards.contains(&shard_of(c.as_str()))) {
                    shared.wake(canvas.as_str());
                }
                match last {
                    Some(last) => after = Some(last),
                    None => return,
                }
            }
            Err(error) => {
                tracing::warn!(%error, "webhook: could not read the backlog; the next round retries");
                shared.leases.rescan();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(shard_of("c1"), shard_of("c1"));
        let used: std::collections::HashSet<u32> = (0..200).map(|i| shard_of(&format!("canvas-{i}"))).collect();
        assert_eq!(used.len(), SHARDS as usize);
    }

    #[test]
    fn a_plan_keeps_the_fair_share_and_gives_back_the_rest() {
        let leases = Leases::new(Duration::from_secs(10), Duration::from_secs(1));
        let until = Instant::now() + Duration::from_secs(5);
        leases.held.lock().unwrap().extend((0..SHARDS).map(|s| (s, until)));
        let (ask, give_back) = leases.plan(8);
        assert_eq!(ask, (0..8).collect::<Vec<_>>());
        assert_eq!(give_back, (8..16).collect::<Vec<_>>());
        leases.held.lock().unwrap().clear();
        let (ask, give_back) = leases.plan(8);
        assert_eq!((ask.len(), give_back.len()), (16, 0), "every free shard is asked for");
        leases.held.lock().unwrap().extend((0..11).map(|s| (s, until)));
        assert_eq!(leases.excess(8, &[5, 9, 10]), [10, 9, 5], "taken this round past the share go back");
        assert_eq!(leases.excess(12, &[9, 10]), Vec::<u32>::new());
    }
}
