//! What a join reads from the shared file: a snapshot of a canvas (head, state version, presence, whether a
//! resume can replay, and the objects when asked for) in one read transaction, and pages of the log to
//! replay after the welcome. No room lock is held while reading: `bus::join` places the subscriber after.

use deadpool_sqlite::rusqlite::{Connection, Result};
use tokio_tungstenite::tungstenite::Message;

use super::{objects, presence, queries};
use crate::bus::{ReadObjects, Snapshot};
use crate::clock::now_ms;
use crate::protocol::{CanvasId, Resume};

/// The canvas at its head, everything read in one transaction, so the objects and presence are exactly those
/// at `seq`. With `--bus memory` (no WAL) the read holds off the writer for its length; there is no room
/// lock for the writer to wait on in turn, so that only slows commits down.
pub(super) fn snapshot(
    conn: &mut Connection,
    db_epoch: &str,
    max_resume: u64,
    canvas: &CanvasId,
    resume: Option<&Resume>,
    read: &ReadObjects,
) -> Result<Snapshot> {
    let snapshot = conn.transaction()?;
    let head = queries::head(&snapshot, db_epoch, canvas)?;
    let resumed = match resume {
        Some(resume) => can_replay(&snapshot, max_resume, canvas, resume, &head)?,
        None => false,
    };
    let json_bytes = head.state_bytes as usize + 1;
    let cached = read.unless.as_ref().is_some_and(|key| key.epoch == head.epoch && key.version == head.state_seq);
    let objects = match resumed || cached || json_bytes > read.up_to {
        true => None,
        false => Some(objects::objects_json(&snapshot, canvas, json_bytes)?),
    };
    let presence = presence::on_canvas_json(&snapshot, canvas)?;
    let peers = presence::peers(&snapshot, canvas)?;
    Ok(Snapshot {
        epoch: head.epoch,
        generation: head.generation,
        seq: head.last_seq,
        version: head.state_seq,
        presence,
        peers,
        resumed,
        objects,
    })
}

/// Whether a resume can replay: the epoch matches and every seq after `since` is still retained (and there
/// are not more than `--max-resume`). The rows themselves are read later, a page at a time.
fn can_replay(
    conn: &Connection,
    max_resume: u64,
    canvas: &CanvasId,
    resume: &Resume,
    head: &queries::Head,
) -> Result<bool> {
    if resume.epoch != head.epoch || resume.since > head.last_seq || head.last_seq - resume.since > max_resume {
        return Ok(false);
    }
    let retained = queries::count_rows(conn, canvas, resume.since, head.last_seq, now_ms())?;
    Ok(retained == head.last_seq - resume.since)
}

/// The frames of seqs `after + 1 ..= upto` of `generation`, in order; fewer when some expired meanwhile.
pub(super) fn replay_page(
    conn: &mut Connection,
    canvas: &CanvasId,
    generation: u64,
    after: u64,
    upto: u64,
) -> Result<Vec<Message>> {
    let rows = queries::canvas_rows(conn, canvas, after, upto, now_ms())?;
    Ok(rows.iter().take_while(|row| row.generation == generation).map(queries::StoredMessage::frame).collect())
}
