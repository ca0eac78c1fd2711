//! What the stores keep of a canvas's history (PROTOCOL v1.2, "History"), as plain records: its snapshots
//! (automatic ones, thinned as they age, and named ones, kept until unnamed), the object ops back to the
//! oldest kept snapshot, and the seq from which every state is kept (the history's floor). Which snapshots
//! to keep is the core's rule (`core::history`); a store keeps and drops what it is told.

use bytes::Bytes;

use super::records::{Head, LogEntry};
use super::SnapshotRead;

/// A canvas read at one seq of its history: the nearest snapshot at or below it and the object ops after
/// that snapshot up to the seq, read at one point of the log.
#[derive(Debug, Clone, Default)]
pub struct AtRead {
    /// `None` for a canvas nothing was committed to.
    pub head: Option<Head>,
    /// Every seq from this one to the head has its state kept (0: the epoch's start, the empty state, is).
    pub floor: u64,
    /// The newest snapshot of the head's generation at or below the seq asked for.
    pub snapshot: Option<SnapshotRead>,
    /// The object ops after the snapshot (or from seq 1) up to the seq asked for, in seq order; empty when
    /// the seq is below the floor and not a snapshot's (the ops there are not all kept).
    pub ops: Vec<LogEntry>,
}

/// One kept snapshot of a canvas's generation, as `GET …/versions` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub seq: u64,
    /// The commit time of its seq (unix ms).
    pub ts: i64,
    /// Its name, for a named version.
    pub name: Option<String>,
    /// The size of its snapshot's JSON.
    pub bytes: u64,
}

/// A canvas whose history is due to be thinned: its generation's snapshots, oldest first, and when that
/// generation started (the empty state at seq 0 is kept like a snapshot of that time while the floor is 0).
#[derive(Debug, Clone)]
pub struct HistoryDue {
    pub canvas: crate::protocol::CanvasId,
    pub generation: u64,
    pub floor: u64,
    pub started: i64,
    pub versions: Vec<Version>,
}

/// What thinning decided for one canvas: the unnamed snapshots to drop and the new floor (never lower).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thinning {
    pub drop: Vec<u64>,
    pub floor: u64,
}

/// A new canvas forked from another's state: its first snapshot, at seq 0 of a new generation.
#[derive(Debug, Clone)]
pub struct Fork {
    /// The objects' JSON (as [`crate::core::fold::Objects::to_json`] writes it).
    pub json: Bytes,
    /// What its head holds (the fold's counts).
    pub objects: u64,
    pub bytes: u64,
}

/// How naming a version went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named {
    Done,
    /// The canvas is no longer in that generation (a reset came between): nothing named.
    Moved,
}
