//! A committer's batch applied to the shared file, inside the writer's one `BEGIN IMMEDIATE` transaction
//! (see [`Batch`]). The file's write lock is held throughout, so a canvas whose head moved since the fold
//! staged it is staged again right here, against what the file holds: a commit never fails for a conflict,
//! and nothing is read twice. The SQL only stores: every value it writes was decided by the fold, except
//! the seqs (each entry takes the next), the version (the seq of the last entry that changed the objects)
//! and the generation of a canvas created here.

use deadpool_sqlite::rusqlite::{params, Connection, OptionalExtension, Result};

use super::reads;
use crate::store::records::{Batch, ConnWrite, Expect, Head, KeyClaim, Moved, News, Placed, Writes};

/// Most times one canvas is staged again within one commit: the news read in the transaction is exact, so
/// one for the head and one for a key taken meanwhile are all it ever takes; the bound only keeps a bug
/// from looping.
const MAX_RESTAGES: usize = 8;

/// How the transaction stamps what it writes.
#[derive(Debug, Clone, Copy)]
pub struct Stamp<'a> {
    pub now: i64,
    pub instance: &'a str,
    /// `--message-ttl`: entries expire for clients after it, keys with it.
    pub ttl_ms: i64,
    /// How long an entry is kept at least (`purge_at`): the TTL, or longer while a webhook may deliver it.
    pub keep_ms: i64,
}

/// Applies every canvas of `batch` in the open transaction `tx`.
pub fn apply(tx: &Connection, batch: &mut dyn Batch, stamp: Stamp<'_>) -> Result<()> {
    for canvas in 0..batch.len() {
        for _ in 0..MAX_RESTAGES {
            let Some(writes) = batch.writes(canvas) else { break };
            match apply_canvas(tx, &writes, stamp)? {
                Applied::Placed(placed) => {
                    batch.placed(canvas, placed);
                    break;
                }
                Applied::Moved(news) => batch.refold(canvas, news),
            }
        }
    }
    Ok(())
}

enum Applied {
    Placed(Placed),
    Moved(News),
}

/// One canvas: its expectation checked, its keys claimed, then everything written.
fn apply_canvas(tx: &Connection, writes: &Writes<'_>, stamp: Stamp<'_>) -> Result<Applied> {
    let canvas = writes.canvas.as_str();
    let head = reads::head(tx, writes.canvas)?;
    if let Expect::Rev(rev) = writes.expect {
        // The generation too: a canvas forgotten and created again starts its rev over.
        if head.map_or((0, 0), |h| (h.generation, h.rev)) != (writes.known.0, rev) {
            let moved = Some(moved(tx, writes, head)?);
            return Ok(Applied::Moved(News { moved, ..News::default() }));
        }
        let taken = taken_keys(tx, writes, head.map_or(0, |h| h.generation), stamp.now)?;
        let spared = spared(tx, writes.conns, stamp.now)?;
        if !taken.is_empty() || !spared.is_empty() {
            return Ok(Applied::Moved(News { moved: None, taken, spared }));
        }
        let claims = writes.keys.iter().any(|claim| claim.entry.is_some());
        if writes.entries.is_empty() && writes.conns.is_empty() && !claims {
            let head = head.unwrap_or_default();
            return Ok(Applied::Placed(Placed { head, first_seq: head.seq + 1, ids: Vec::new() }));
        }
    }
    let mut next = match head {
        Some(head) => head,
        None => create_head(tx, canvas, stamp.now, writes.forget_after)?,
    };
    let first_seq = next.seq + 1;
    let mut insert = tx.prepare_cached(
        "INSERT INTO message_queue (canvas_id, seq, message_type, payload, sender, origin_instance, created_at,
             expires_at, generation, purge_at, op)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    let mut ids = Vec::with_capacity(writes.entries.len());
    for entry in &writes.entries {
        next.seq += 1;
        insert.execute(params![
            canvas,
            next.seq as i64,
            entry.kind,
            entry.data.get(),
            entry.from,
            stamp.instance,
            stamp.now,
            stamp.now + stamp.ttl_ms,
            next.generation as i64,
            stamp.now + stamp.keep_ms,
            match (entry.restore, entry.changes_objects) {
                (true, _) => 2,
                (false, changes_objects) => changes_objects as i64,
            },
        ])?;
        ids.push(tx.last_insert_rowid());
        if entry.changes_objects {
            next.version = next.seq;
        }
    }
    if let Expect::Rev(_) = writes.expect {
        write_conns(tx, canvas, writes.conns, stamp.now)?;
        claim_keys(tx, canvas, writes.keys, first_seq, next.generation, stamp.now + stamp.ttl_ms)?;
        let staged = writes.head;
        next = Head {
            rev: next.rev + 1,
            bytes: staged.bytes,
            objects: staged.objects,
            connections: staged.connections,
            users: staged.users,
            ..next
        };
    }
    store_head(tx, canvas, &next, writes, stamp.now)?;
    Ok(Applied::Placed(Placed { head: next, first_seq, ids }))
}

/// A canvas's first head, in a generation never used before by any canvas (so a canvas forgotten when idle
/// and created again starts a new epoch), with the rule for forgetting it the fold gave.
fn create_head(tx: &Connection, canvas: &str, now: i64, forget_after: Option<u64>) -> Result<Head> {
    let generation = next_generation(tx)?;
    tx.prepare_cached(
        "INSERT INTO canvases (canvas_id, last_seq, generation, created_at, updated_at, gen_at, forget_after)
         VALUES (?1, 0, ?2, ?3, ?3, ?3, ?4)",
    )?
    .execute(params![canvas, generation as i64, now, forget_after.map(|ms| ms as i64)])?;
    Ok(Head { generation, ..Head::default() })
}

/// Takes the next generation from the file's counter.
pub fn next_generation(tx: &Connection) -> Result<u64> {
    let generation: i64 = tx
        .prepare_cached(
            "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'last_generation'
             RETURNING CAST(value AS INTEGER)",
        )?
        .query_row([], |r| r.get(0))?;
    Ok(generation as u64)
}

/// Saves the head. A canvas left with neither objects nor connections may be forgotten `forget_after` ms
/// after its last commit; an append keeps the rule the last guarded commit set, counted from now.
fn store_head(tx: &Connection, canvas: &str, head: &Head, writes: &Writes<'_>, now: i64) -> Result<()> {
    let set_forget = matches!(writes.expect, Expect::Rev(_));
    tx.prepare_cached(
        "UPDATE canvases SET last_seq = ?2, rev = ?3, state_seq = ?4, state_bytes = ?5, objects = ?6,
             connections = ?7, users = ?8, updated_at = ?9,
             forget_after = CASE WHEN ?10 THEN ?11 ELSE forget_after END,
             forget_at = ?9 + CASE WHEN ?10 THEN ?11 ELSE forget_after END
         WHERE canvas_id = ?1",
    )?
    .execute(params![
        canvas,
        head.seq as i64,
        head.rev as i64,
        head.version as i64,
        head.bytes as i64,
        head.objects as i64,
        head.connections as i64,
        head.users as i64,
        now,
        set_forget,
        writes.forget_after.map(|ms| ms as i64),
    ])
    .map(drop)
}

/// The connection rows a commit adds and removes.
fn write_conns(tx: &Connection, canvas: &str, conns: &[ConnWrite], now: i64) -> Result<()> {
    for write in conns {
        match write {
            ConnWrite::Put { conn, row } => tx
                .prepare_cached(
                    "INSERT INTO connections (conn_id, instance_id, canvas_id, user_id, name, connected_at, opened)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    conn.to_string(),
                    &*row.instance,
                    canvas,
                    &*row.user,
                    row.name.as_deref(),
                    now,
                    row.opened as i64
                ])?,
            ConnWrite::Remove { conn, .. } => {
                tx.prepare_cached("DELETE FROM connections WHERE conn_id = ?1")?.execute([conn.to_string()])?
            }
        };
    }
    Ok(())
}

/// The claimed (or checked) keys some entry of this generation holds already, within the TTL.
fn taken_keys(
    tx: &Connection,
    writes: &Writes<'_>,
    generation: u64,
    now: i64,
) -> Result<Vec<(crate::protocol::UserId, crate::protocol::IdempotencyKey, u64)>> {
    let mut find = tx.prepare_cached(
        "SELECT seq FROM idempotency_keys
         WHERE canvas_id = ?1 AND user_id = ?2 AND key = ?3 AND generation = ?4 AND expires_at > ?5",
    )?;
    let mut taken = Vec::new();
    for claim in writes.keys {
        let params = params![writes.canvas.as_str(), claim.user.as_str(), claim.key.as_str(), generation as i64, now];
        if let Some(seq) = find.query_row(params, |r| r.get::<_, i64>(0)).optional()? {
            taken.push((claim.user.clone(), claim.key.clone(), seq as u64));
        }
    }
    Ok(taken)
}

/// Keeps each claimed key with its entry's seq until `expires_at`.
fn claim_keys(
    tx: &Connection,
    canvas: &str,
    keys: &[KeyClaim],
    first_seq: u64,
    generation: u64,
    expires_at: i64,
) -> Result<()> {
    let mut upsert = tx.prepare_cached(
        "INSERT INTO idempotency_keys (canvas_id, user_id, key, generation, seq, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (canvas_id, user_id, key) DO UPDATE
         SET generation = excluded.generation, seq = excluded.seq, expires_at = excluded.expires_at",
    )?;
    for claim in keys {
        let Some(entry) = claim.entry else { continue }; // only checked
        let seq = first_seq + entry as u64;
        upsert.execute(params![
            canvas,
            claim.user.as_str(),
            claim.key.as_str(),
            generation as i64,
            seq as i64,
            expires_at
        ])?;
    }
    Ok(())
}

/// How a canvas moved since what the fold knew: the object ops since, while the log still has them all
/// (cleanup may drop ops up to the canvas's `pruned_seq`), or else the canvas whole (a reset or a forget
/// meanwhile; or a fold that knew the canvas long ago).
fn moved(tx: &Connection, writes: &Writes<'_>, head: Option<Head>) -> Result<Moved> {
    let (generation, seq) = writes.known;
    if let Some(head) = head.filter(|head| head.generation == generation) {
        if reads::pruned_seq(tx, writes.canvas)? <= seq {
            let ops = reads::ops_after(tx, writes.canvas, generation, seq, head.seq)?;
            let conns = reads::conn_rows(tx, writes.canvas)?;
            return Ok(Moved::Since { head, ops, conns });
        }
    }
    Ok(Moved::Whole(reads::canvas(tx, writes.canvas, crate::store::Want::all())?))
}

/// The connections a survivor's expiry would remove whose instance has had a heartbeat within the time
/// the expiry allows: it came back, and they stay.
fn spared(tx: &Connection, conns: &[ConnWrite], now: i64) -> Result<Vec<crate::protocol::ConnId>> {
    let mut alive = tx.prepare_cached(
        "SELECT 1 FROM connections k JOIN instances i ON i.instance_id = k.instance_id
         WHERE k.conn_id = ?1 AND i.heartbeat_at >= ?2",
    )?;
    let mut spared = Vec::new();
    for write in conns {
        if let ConnWrite::Remove { conn, unless_alive_within: Some(ms), .. } = write {
            if alive.exists(params![conn.to_string(), now - ms])? {
                spared.push(*conn);
            }
        }
    }
    Ok(spared)
}
