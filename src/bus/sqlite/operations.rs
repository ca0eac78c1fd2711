//! What the HTTP API asks of the bus: a canvas's retained messages (read in one snapshot on a pool
//! connection), the connected users, and the two API writes that are writer jobs rather than
//! logged messages: resetting a canvas and messaging a user.

use tokio::sync::oneshot;

use super::writer::Job;
use super::{presence, queries, SqliteBus};
use crate::bus::{BusError, CanvasLog, UserPresence};
use crate::clock::now_ms;
use crate::protocol::{CanvasId, UserId};

impl SqliteBus {
    /// Retained messages of a canvas after `since`, at most `limit`, in seq order, with the canvas head.
    pub async fn messages(&self, canvas: CanvasId, since: u64, limit: u64) -> Result<CanvasLog, BusError> {
        let db_epoch = self.inner.db_epoch.clone();
        self.read(move |conn| {
            let snapshot = conn.transaction()?;
            let head = queries::head(&snapshot, &db_epoch, &canvas)?;
            let upto = head.last_seq.min(since.saturating_add(limit));
            let rows = queries::canvas_rows(&snapshot, &canvas, since, upto, now_ms())?;
            let messages = rows.iter().map(|row| row.frame().into_text().map(|t| t.to_string()).unwrap_or_default());
            Ok(CanvasLog { epoch: head.epoch, seq: head.last_seq, messages: messages.collect() })
        })
        .await
    }

    /// Connected users across instances (all, or only `user`), with their connections and canvases.
    pub async fn users(&self, only: Option<UserId>) -> Result<Vec<UserPresence>, BusError> {
        self.read(move |conn| presence::users(conn, only.as_ref())).await
    }

    /// Resets a canvas (see `Job::Reset`); returns its new epoch.
    pub async fn reset(&self, canvas: CanvasId) -> Result<String, BusError> {
        let (reply, done) = oneshot::channel();
        self.job(Job::Reset { canvas, reply }).await?;
        done.await.map_err(|_| BusError::ShuttingDown)?
    }

    /// Sends a frame to every connection of `user` on every instance; returns how many connections it has.
    pub async fn send_to_user(&self, user: UserId, frame: String) -> Result<u64, BusError> {
        let (reply, done) = oneshot::channel();
        self.job(Job::SendToUser { user, frame, reply }).await?;
        done.await.map_err(|_| BusError::ShuttingDown)?
    }
}
