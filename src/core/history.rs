//! History (PROTOCOL v1.2, "History"), written once for every store: the state at any kept seq (the
//! nearest snapshot at or below it plus the object ops between, folded as a join's state is), named
//! versions, restore (the fold's diff, committed as one round: see `Origin::Restore`), fork, and which
//! snapshots are kept as they age ([`thinning`]). The stores keep and read what they are told
//! (`crate::store::history`).

use std::time::Duration;

use tokio::sync::oneshot;

use super::fold::canvas::Canvas;
use super::fold::Objects;
use super::{Bus, BusError, Publish, Restored, Unavailable};
use crate::clock::now_ms;
use crate::protocol::CanvasId;
use crate::store::history::{Fork, HistoryDue, Named, Thinning, Version};
use crate::store::{CanvasRead, Want};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// Canvases whose history one cleanup round thins, and how long a canvas's thinning holds.
const THIN_PER_ROUND: usize = 100;
const THIN_EVERY_MS: i64 = 10 * 60_000;
/// Reads of the head a naming makes before it gives up on a canvas reset again and again meanwhile.
const NAME_TRIES: usize = 3;

/// Why a history request was not answered as asked.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The seq is past the canvas's head (`seq_ahead`).
    #[error("seq {at} is past the canvas's head, seq {head}")]
    SeqAhead { at: u64, head: u64 },
    /// The state at that seq is no longer kept (`history_expired`).
    #[error("the state at seq {at} is no longer kept: history starts at seq {floor}")]
    Expired { at: u64, floor: u64 },
    /// A fork's target has a seq, an object or a connection (`canvas_exists`).
    #[error("canvas {0} exists: a fork needs a canvas with no seq, object or connection")]
    Exists(CanvasId),
    /// No named version at that seq.
    #[error("no named version at seq {0}")]
    NotNamed(u64),
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// A canvas's objects at one seq of its current epoch.
#[derive(Debug)]
pub struct StateAt {
    pub seq: u64,
    pub epoch: String,
    /// The canvas's generation it was read in (part of `epoch`).
    pub generation: u64,
    pub objects: Objects,
}

/// One page of a canvas's versions, newest first; `next` is where the next page starts (`before=next`).
#[derive(Debug)]
pub struct VersionPage {
    pub versions: Vec<Version>,
    pub next: Option<u64>,
}

impl Bus {
    /// The canvas's objects exactly after seq `at` (the empty state at 0 while the epoch's start is kept).
    pub async fn state_at(&self, canvas: &CanvasId, at: u64) -> Result<StateAt, HistoryError> {
        let read = self.store().read_at(canvas, at).await?;
        let head = read.head.unwrap_or_default();
        if at > head.seq {
            return Err(HistoryError::SeqAhead { at, head: head.seq });
        }
        let from = read.snapshot.as_ref().map(|snapshot| snapshot.seq);
        let kept = match from {
            Some(from) => from >= read.floor || from == at,
            None => read.floor == 0,
        };
        if !kept {
            return Err(HistoryError::Expired { at, floor: read.floor });
        }
        let read = CanvasRead { head: read.head, conns: Vec::new(), snapshot: read.snapshot, ops: read.ops };
        let objects = fold(read).await?;
        Ok(StateAt { seq: at, epoch: self.epoch_of(head.generation), generation: head.generation, objects })
    }

    /// The canvas's kept versions with a seq below `before`, newest first, at most `limit`.
    pub async fn versions(
        &self,
        canvas: &CanvasId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<VersionPage, BusError> {
        let head = self.store().read_canvas(canvas, Want::head()).await?.head.unwrap_or_default();
        let versions = self.store().versions(canvas, head.generation, before.unwrap_or(u64::MAX), limit).await?;
        let next = (versions.len() == limit).then(|| versions.last().map(|version| version.seq)).flatten();
        Ok(VersionPage { versions, next })
    }

    /// Names the state at the canvas's head; returns its seq.
    pub async fn name_version(&self, canvas: &CanvasId, name: &str) -> Result<u64, BusError> {
        for _ in 0..NAME_TRIES {
            let read = self.store().read_canvas(canvas, Want::all()).await?;
            let head = read.head.unwrap_or_default();
            let json = fold(read).await?.to_json();
            if let Named::Done = self.store().name_version(canvas, head.generation, head.seq, name, json).await? {
                return Ok(head.seq);
            }
            // A reset came between: name the new epoch's head.
        }
        Err(Unavailable::KeptMoving.into())
    }

    /// Takes the name off the version at `seq` of the canvas's current epoch.
    pub async fn unname_version(&self, canvas: &CanvasId, seq: u64) -> Result<(), HistoryError> {
        let head = self.store().read_canvas(canvas, Want::head()).await?.head.unwrap_or_default();
        match self.store().unname_version(canvas, head.generation, seq).await? {
            true => Ok(()),
            false => Err(HistoryError::NotNamed(seq)),
        }
    }

    /// Logs, as user `server` and in one commit, the object ops that turn the canvas into its state at `at`.
    pub async fn restore(&self, canvas: &CanvasId, at: u64) -> Result<Restored, HistoryError> {
        let state = self.state_at(canvas, at).await?;
        let (reply, restored) = oneshot::channel();
        let restore = async {
            self.publish(Publish::restore(canvas.clone(), (state.objects, state.generation), reply)).await?;
            restored.await.map_err(|_| BusError::ShuttingDown)?
        };
        let restored = tokio::time::timeout(self.publish_timeout(), restore).await;
        Ok(restored.map_err(|_| BusError::from(Unavailable::Timeout))??)
    }

    /// Creates canvas `to` with the state of `from` at `at` (its head when `None`) as its first snapshot, at
    /// seq 0 of a new epoch; returns that epoch.
    pub async fn fork(&self, from: &CanvasId, at: Option<u64>, to: &CanvasId) -> Result<String, HistoryError> {
        let objects = match at {
            Some(at) => self.state_at(from, at).await?.objects,
            None => fold(self.store().read_canvas(from, Want::all()).await?).await?,
        };
        let fork = Fork { objects: objects.len() as u64, bytes: objects.bytes(), json: objects.to_json() };
        let epoch = self.store().fork(to, fork).await?.ok_or_else(|| HistoryError::Exists(to.clone()))?;
        self.state_cache().forget(to);
        Ok(epoch)
    }
}

/// A read's objects, folded on a blocking thread (a big canvas takes tens of milliseconds).
async fn fold(read: CanvasRead) -> Result<Objects, BusError> {
    let folded = tokio::task::spawn_blocking(move || Canvas::from_read(read)).await;
    let folded = folded.map_err(|_| BusError::ShuttingDown)?;
    let corrupt = |_| BusError::from(Unavailable::Corrupt("a canvas's snapshot and log do not fold"));
    Ok(folded.map_err(corrupt)?.objects)
}

/// Thins the history of the canvases due (part of cleanup).
pub(crate) async fn thin(bus: &Bus, retention: Duration) -> Result<usize, BusError> {
    let now = now_ms();
    let retention_ms = retention.as_millis().min(i64::MAX as u128) as i64;
    let due = bus.store().history_due(now - THIN_EVERY_MS, THIN_PER_ROUND).await?;
    for canvas in &due {
        let thinned = thinning(canvas, now, retention_ms);
        bus.store().thin(&canvas.canvas, canvas.generation, thinned).await?;
    }
    Ok(due.len())
}

/// Which of a canvas's snapshots to keep as they age, and the floor that leaves: the newest and the named
/// ones always; of the others, none older than the retention, and within it all of the last hour, the
/// newest of each hour for a day, then the newest of each day. The epoch's start (the empty state at seq
/// 0, while the floor is 0) is kept like a snapshot of the time the epoch started. The floor is the
/// oldest kept base that is not named (a named version older than it stands alone: its own state only);
/// an unnamed snapshot below the floor goes.
pub fn thinning(due: &HistoryDue, now: i64, retention_ms: i64) -> Thinning {
    // (seq, ts, named, a snapshot rather than the epoch's start)
    let starts_empty = due.floor == 0 && due.versions.first().is_none_or(|version| version.seq > 0);
    let start = starts_empty.then_some((0, due.started, false, false));
    let bases = due.versions.iter().map(|version| (version.seq, version.ts, version.name.is_some(), true));
    let bases: Vec<(u64, i64, bool, bool)> = start.into_iter().chain(bases).collect();
    let newest = due.versions.last().map_or(0, |version| version.seq);
    // Newest first, so that the first base seen in an hour's or a day's bucket is the one it keeps.
    let mut buckets = std::collections::HashSet::new();
    let mut kept = Vec::new();
    let mut drop = Vec::new();
    for &(seq, ts, named, snapshot) in bases.iter().rev() {
        let age = now.saturating_sub(ts);
        // An unnamed snapshot below the floor (a version unnamed since) has no ops kept after it: it goes.
        let keep = named
            || seq == newest
            || (seq >= due.floor
                && age <= retention_ms
                && match age {
                    age if age <= HOUR_MS => true,
                    age if age <= DAY_MS => buckets.insert((HOUR_MS, ts.div_euclid(HOUR_MS))),
                    _ => buckets.insert((DAY_MS, ts.div_euclid(DAY_MS))),
                });
        match (keep, named) {
            (true, false) => kept.push(seq),
            (true, true) => {}
            (false, _) if snapshot => drop.push(seq),
            (false, _) => {} // the epoch's start is no snapshot: only the floor moves past it
        }
    }
    let floor = kept.iter().copied().min().unwrap_or(newest).max(due.floor);
    drop.sort_unstable();
    Thinning { drop, floor }
}

#[cfg(test)]
mod tests;
