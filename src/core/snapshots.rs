//! Snapshots of canvas states, written off the commit path. A canvas's state is its newest snapshot plus
//! the object ops after it: the committer finds a snapshot due (every `--snapshot-every` object ops, or
//! `--snapshot-bytes` of their data, since the newest one) and hands the objects over as they stand at a seq
//! (an O(1) clone); [`write`] serializes them and has the store keep them, a compare-and-set at that seq that
//! whichever instance gets there first wins. A canvas nobody commits to any more but whose ops since its
//! snapshot are getting old is read and snapshotted by the cleanup ([`take`]), so that its log can go.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::committer::SnapshotDue;
use super::fold::canvas::Canvas;
use super::{BusError, Unavailable};
use crate::metrics::Metrics;
use crate::protocol::CanvasId;
use crate::store::{Store, Want};

/// Snapshots due at most waiting to be written (the committer skips one when full: the next op asks again).
pub const QUEUE: usize = 64;

/// States at least this big are serialized on a blocking thread.
const BLOCKING_BYTES: u64 = 256 * 1024;

/// Writes the snapshots the committer finds due, until it stops.
pub async fn write(store: Arc<dyn Store>, mut due: mpsc::Receiver<SnapshotDue>, metrics: Metrics) {
    while let Some(SnapshotDue { canvas, generation, seq, objects }) = due.recv().await {
        let json = match objects.bytes() >= BLOCKING_BYTES {
            true => match tokio::task::spawn_blocking(move || objects.to_json()).await {
                Ok(json) => json,
                Err(_) => continue,
            },
            false => objects.to_json(),
        };
        match store.put_snapshot(&canvas, generation, seq, json).await {
            Ok(true) => metrics.snapshots_written.increment(1),
            Ok(false) => {}
            Err(error) => tracing::warn!(%canvas, %error, "a snapshot was not written; the next one is due soon"),
        }
    }
}

/// Reads a canvas whole and snapshots it at its head.
pub async fn take(store: &dyn Store, canvas: &CanvasId) -> Result<bool, BusError> {
    let read = store.read_canvas(canvas, Want::all()).await?;
    let Some(head) = read.head else { return Ok(false) };
    let state = Canvas::from_read(read).map_err(|refusal| {
        tracing::error!(%canvas, %refusal, "the canvas's snapshot and log do not fold");
        BusError::from(Unavailable::Corrupt("a canvas's snapshot and log do not fold"))
    })?;
    let json = tokio::task::spawn_blocking(move || state.objects.to_json())
        .await
        .map_err(|_| BusError::from(Unavailable::ReadLost))?;
    store.put_snapshot(canvas, head.generation, head.seq, json).await
}
