//! Joining a canvas: where a new connection's stream starts, its replay when resuming, and the canvas state
//! and presence its welcome carries, all read in one snapshot taken under the room's lock.

use deadpool_sqlite::rusqlite::{Connection, Result};
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Message;

use super::{objects, presence, queries};
use crate::bus::{JoinRequest, Joined};
use crate::clock::now_ms;
use crate::hub::{Hub, Subscriber};
use crate::protocol::{CanvasId, Resume};

/// Runs on a pool connection. The room's lock is held from before the snapshot is taken until the subscriber
/// is in the room, so no delivery to the room can fall between what the snapshot saw and what the subscriber
/// receives live:
/// - a new room starts delivering after the snapshot's last seq;
/// - the subscriber starts after the snapshot's last seq; seqs up to it come from the replay (resume) or
///   are covered by the welcome (no resume), whether or not the room has delivered them to others yet.
///
/// With `readers_block_writer` (`--bus memory`: no WAL) the order is reversed: the writer waits for room
/// locks while it holds its write lock, and in rollback-journal mode a new read lock waits for that write
/// lock, so taking the room's lock first could stall both. The read lock is taken first instead; nothing can
/// commit while it is held, so every row the room delivers after that was seen by the snapshot (and is at or
/// below the new subscriber's start), which is the same guarantee.
pub(super) fn join_blocking(
    conn: &mut Connection,
    hub: &Hub,
    db_epoch: &str,
    max_resume: u64,
    readers_block_writer: bool,
    request: JoinRequest,
) -> Result<Joined> {
    loop {
        let room = hub.room_for_join(&request.canvas);
        let (mut state, snapshot) = match readers_block_writer {
            false => (room.lock(), conn.transaction()?),
            true => {
                let snapshot = conn.transaction()?;
                snapshot.query_row("SELECT count(*) FROM meta", [], |_| Ok(()))?; // takes the read lock now
                (room.lock(), snapshot)
            }
        };
        if state.is_closed() {
            continue; // the last subscriber left between lookup and lock; take a fresh room
        }
        let head = queries::head(&snapshot, db_epoch, &request.canvas)?;
        state.start_at(head.last_seq, head.generation);
        let (seq, resumed, replay) = match &request.resume {
            Some(resume) => replay(&snapshot, max_resume, &request.canvas, resume, &head)?,
            None => (head.last_seq, false, Vec::new()),
        };
        // The state is read in the same snapshot as the head: it is the fold of the log up to `seq` exactly.
        let objects = match resumed {
            true => None,
            false => Some(objects_raw(&snapshot, &request.canvas)?),
        };
        let presence = presence::on_canvas_json(&snapshot, &request.canvas)?;
        drop(snapshot);
        state.subscribe(Subscriber {
            conn: request.conn,
            user: request.user,
            generation: head.generation,
            start_after: head.last_seq,
            outbox: request.outbox,
        });
        return Ok(Joined { epoch: head.epoch, seq, resumed, replay, objects, presence });
    }
}

/// The canvas's objects as JSON, checked once here so the welcome can embed them verbatim.
pub(super) fn objects_raw(conn: &Connection, canvas: &CanvasId) -> Result<Box<RawValue>> {
    let json = objects::objects_json(conn, canvas)?;
    RawValue::from_string(json).map_err(|e| deadpool_sqlite::rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

/// A resume: the frames after `since` when the epoch matches and every one of them is still retained (and
/// there are not more than `--max-resume`); otherwise a fresh start at the head.
fn replay(
    conn: &Connection,
    max_resume: u64,
    canvas: &CanvasId,
    resume: &Resume,
    head: &queries::Head,
) -> Result<(u64, bool, Vec<Message>)> {
    let fresh = Ok((head.last_seq, false, Vec::new()));
    if resume.epoch != head.epoch || resume.since > head.last_seq || head.last_seq - resume.since > max_resume {
        return fresh;
    }
    let rows = queries::canvas_rows(conn, canvas, resume.since, head.last_seq, now_ms())?;
    if rows.len() as u64 != head.last_seq - resume.since {
        return fresh; // some rows expired: the client must reload
    }
    Ok((resume.since, true, rows.iter().map(queries::StoredMessage::frame).collect()))
}
