//! Presence in the shared file (`connections`): every open connection of every instance is a row. A
//! `user-connected` is logged in the transaction that inserts a user's first row for a canvas, a
//! `user-disconnected` in the one that deletes the last, so presence read in a snapshot is always the fold of
//! the log up to the seq read with it, and counts are across instances by construction.
//!
//! An instance that dies leaves its rows behind; survivors find them (`dead_connections`) and publish their
//! disconnects. Deleting a row is what decides whether a disconnect is logged, and only one transaction can
//! delete it, so several survivors racing over the same dead instance log each disconnect exactly once.

use deadpool_sqlite::rusqlite::{params, Connection, Result};
use serde_json::value::RawValue;

use crate::bus::{Peer, Present, UserPresence};
use crate::hub::ConnId;
use crate::protocol::{to_json, CanvasId, UserId};

/// Registers a connection; returns whether it is the user's first on the canvas (log `user-connected`).
pub fn connect(
    conn: &Connection,
    id: ConnId,
    instance: &str,
    canvas: &CanvasId,
    user: &UserId,
    name: Option<&str>,
    now: i64,
) -> Result<Option<bool>> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO connections (conn_id, instance_id, canvas_id, user_id, name, connected_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (conn_id) DO NOTHING",
        )?
        .execute(params![id.to_string(), instance, canvas.as_str(), user.as_str(), name, now])?;
    Ok(match inserted {
        1 => Some(user_connections(conn, canvas, user)? == 1),
        _ => None,
    })
}

/// Removes a connection; returns `None` if there was none to remove (a survivor that took this instance
/// for dead removed it), else whether it was the user's last on the canvas (log `user-disconnected`).
pub fn disconnect(conn: &Connection, id: ConnId, canvas: &CanvasId, user: &UserId) -> Result<Option<bool>> {
    let deleted = conn.prepare_cached("DELETE FROM connections WHERE conn_id = ?1")?.execute([id.to_string()])?;
    removed(conn, deleted, canvas, user)
}

/// A survivor's removal of a dead instance's connection: like [`disconnect`], but only if the owner's last
/// heartbeat is still before `dead_before` (it may have come back and registered the connection again).
pub fn expire(
    conn: &Connection,
    id: ConnId,
    canvas: &CanvasId,
    user: &UserId,
    dead_before: i64,
) -> Result<Option<bool>> {
    let deleted = conn
        .prepare_cached(
            "DELETE FROM connections WHERE conn_id = ?1
             AND instance_id NOT IN (SELECT instance_id FROM instances WHERE heartbeat_at >= ?2)",
        )?
        .execute(params![id.to_string(), dead_before])?;
    removed(conn, deleted, canvas, user)
}

/// What a removal of `deleted` rows did: `None` for nothing, else whether the user left the canvas.
fn removed(conn: &Connection, deleted: usize, canvas: &CanvasId, user: &UserId) -> Result<Option<bool>> {
    Ok(match deleted {
        1 => Some(user_connections(conn, canvas, user)? == 0),
        _ => None,
    })
}

fn user_connections(conn: &Connection, canvas: &CanvasId, user: &UserId) -> Result<i64> {
    conn.prepare_cached("SELECT count(*) FROM connections WHERE canvas_id = ?1 AND user_id = ?2")?
        .query_row(params![canvas.as_str(), user.as_str()], |r| r.get(0))
}

/// Who is on a canvas, by user id, at the caller's snapshot.
pub fn on_canvas(conn: &Connection, canvas: &CanvasId) -> Result<Vec<Present>> {
    // SQLite takes the bare `name` from the row that holds max(connected_at).
    let mut stmt = conn.prepare_cached(
        "SELECT user_id, name, count(*), max(connected_at) FROM connections
         WHERE canvas_id = ?1 GROUP BY user_id ORDER BY user_id",
    )?;
    let rows = stmt.query_map([canvas.as_str()], |r| {
        Ok(Present { user: r.get(0)?, name: r.get(1)?, connections: r.get::<_, i64>(2)? as u64 })
    })?;
    rows.collect()
}

/// Every connection of a canvas with its presence state, at the caller's snapshot (v1.1, `welcome.peers`).
pub fn peers(conn: &Connection, canvas: &CanvasId) -> Result<Vec<Peer>> {
    let mut stmt =
        conn.prepare_cached("SELECT conn_id, user_id, name, presence FROM connections WHERE canvas_id = ?1")?;
    let rows = stmt.query_map([canvas.as_str()], |r| {
        let data: Option<String> = r.get(3)?;
        Ok(Peer {
            connection: r.get(0)?,
            user: r.get(1)?,
            name: r.get(2)?,
            data: data.and_then(|text| RawValue::from_string(text).ok()),
        })
    })?;
    rows.collect()
}

/// Keeps the presence states a cursor batch carries (connection, JSON), for joiners: a connection that is
/// gone has no row, and its state goes nowhere.
pub fn save_states(conn: &Connection, states: &[(ConnId, String)]) -> Result<()> {
    let mut update = conn.prepare_cached("UPDATE connections SET presence = ?2 WHERE conn_id = ?1")?;
    for (id, data) in states {
        update.execute(params![id.to_string(), data])?;
    }
    Ok(())
}

/// [`on_canvas`] as the JSON array a welcome embeds.
pub fn on_canvas_json(conn: &Connection, canvas: &CanvasId) -> Result<Box<RawValue>> {
    let json = to_json(&on_canvas(conn, canvas)?);
    Ok(RawValue::from_string(json).expect("serde_json writes valid JSON"))
}

/// Every connected user, or only `user`, with their connections and canvases.
pub fn users(conn: &Connection, only: Option<&UserId>) -> Result<Vec<UserPresence>> {
    let mut stmt = conn.prepare_cached(
        "SELECT user_id, canvas_id, count(*) FROM connections
         WHERE ?1 IS NULL OR user_id = ?1 GROUP BY user_id, canvas_id ORDER BY user_id, canvas_id",
    )?;
    let mut rows = stmt.query([only.map(UserId::as_str)])?;
    let mut users: Vec<UserPresence> = Vec::new();
    while let Some(row) = rows.next()? {
        let (user, canvas, count): (String, String, i64) = (row.get(0)?, row.get(1)?, row.get(2)?);
        match users.last_mut() {
            Some(last) if last.user == user => {
                last.connections += count as u64;
                last.canvases.push(canvas);
            }
            _ => users.push(UserPresence { user, connections: count as u64, canvases: vec![canvas] }),
        }
    }
    Ok(users)
}

/// How many connections `user` has in all, and how many of them on instances other than `own`.
pub fn user_connection_counts(conn: &Connection, user: &UserId, own: &str) -> Result<(u64, u64)> {
    let (all, elsewhere): (i64, i64) = conn
        .prepare_cached("SELECT count(*), coalesce(sum(instance_id != ?2), 0) FROM connections WHERE user_id = ?1")?
        .query_row(params![user.as_str(), own], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok((all as u64, elsewhere as u64))
}

/// How many connections `user` has to `canvas`, across instances.
pub fn user_connections_on(conn: &Connection, canvas: &CanvasId, user: &UserId) -> Result<u64> {
    user_connections(conn, canvas, user).map(|n| n as u64)
}

/// How many connections are registered for `instance`.
pub fn instance_connection_count(conn: &Connection, instance: &str) -> Result<u64> {
    let count: i64 = conn
        .prepare_cached("SELECT count(*) FROM connections WHERE instance_id = ?1")?
        .query_row([instance], |r| r.get(0))?;
    Ok(count as u64)
}

/// The connections registered for `instance`: what survivors have not expired of it.
pub fn instance_connections(conn: &Connection, instance: &str) -> Result<std::collections::HashSet<ConnId>> {
    let mut stmt = conn.prepare_cached("SELECT conn_id FROM connections WHERE instance_id = ?1")?;
    let rows = stmt.query_map([instance], |r| r.get::<_, String>(0))?;
    let mut conns = std::collections::HashSet::new();
    for row in rows {
        if let Ok(conn) = row?.parse() {
            conns.insert(conn);
        }
    }
    Ok(conns)
}

/// A connection of a dead instance, to be disconnected by a survivor.
#[derive(Debug, Clone)]
pub struct Orphan {
    pub conn: ConnId,
    pub canvas: CanvasId,
    pub user: UserId,
    pub name: Option<String>,
}

/// Connections of instances other than `own` whose heartbeat is older than `dead_before` (or that are gone
/// from the instances table: stopped, or forgotten).
pub fn dead_connections(conn: &Connection, own: &str, dead_before: i64) -> Result<Vec<Orphan>> {
    let mut stmt = conn.prepare_cached(
        "SELECT c.conn_id, c.canvas_id, c.user_id, c.name FROM connections c
         LEFT JOIN instances i ON i.instance_id = c.instance_id
         WHERE c.instance_id != ?1 AND (i.instance_id IS NULL OR i.heartbeat_at < ?2)",
    )?;
    let rows = stmt.query_map(params![own, dead_before], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get(3)?))
    })?;
    let mut orphans = Vec::new();
    for row in rows {
        let (conn_id, canvas, user, name) = row?;
        // Rows are written only by this relay, from validated values; skip anything else rather than fail.
        let (Ok(conn), Ok(canvas), Ok(user)) = (conn_id.parse(), CanvasId::parse(&canvas), UserId::parse(&user)) else {
            tracing::warn!(conn_id, "skipping a malformed connections row");
            continue;
        };
        orphans.push(Orphan { conn, canvas, user, name });
    }
    Ok(orphans)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::sqlite::schema;
    use uuid::Uuid;

    fn file() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let settings = schema::ConnSettings {
            synchronous: crate::config::Synchronous::Normal,
            busy_timeout: std::time::Duration::from_secs(1),
            memory: false,
        };
        let mut conn = schema::open(&dir.path().join("p.db"), settings).unwrap();
        schema::migrate(&mut conn).unwrap();
        (dir, conn)
    }

    #[test]
    fn first_and_last_connection_of_a_user_are_the_ones_logged() {
        let (_dir, conn) = file();
        let (c1, ann) = (CanvasId::parse("c1").unwrap(), UserId::parse("ann").unwrap());
        let (tab1, tab2) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(connect(&conn, tab1, "i1", &c1, &ann, Some("Ann"), 1).unwrap(), Some(true));
        assert_eq!(connect(&conn, tab2, "i2", &c1, &ann, Some("Annie"), 2).unwrap(), Some(false));
        assert_eq!(connect(&conn, tab2, "i2", &c1, &ann, None, 3).unwrap(), None, "registering twice changes nothing");
        let present = on_canvas(&conn, &c1).unwrap();
        assert_eq!(present, [Present { user: "ann".into(), name: Some("Annie".into()), connections: 2 }]);
        assert_eq!(disconnect(&conn, tab1, &c1, &ann).unwrap(), Some(false));
        assert_eq!(disconnect(&conn, tab2, &c1, &ann).unwrap(), Some(true));
        assert_eq!(disconnect(&conn, tab2, &c1, &ann).unwrap(), None, "a second removal does nothing");
        assert!(on_canvas(&conn, &c1).unwrap().is_empty());
    }

    #[test]
    fn an_expiry_spares_a_connection_whose_instance_came_back() {
        let (_dir, conn) = file();
        conn.execute_batch("INSERT INTO instances (instance_id, pid, listen, started_at, heartbeat_at) VALUES ('back', 1, 'x', 0, 1000)").unwrap();
        let (c1, u) = (CanvasId::parse("c1").unwrap(), UserId::parse("u").unwrap());
        let id = Uuid::new_v4();
        connect(&conn, id, "back", &c1, &u, None, 1).unwrap();
        assert_eq!(expire(&conn, id, &c1, &u, 500).unwrap(), None, "its heartbeat (1000) is after the dead line (500)");
        assert_eq!(on_canvas(&conn, &c1).unwrap().len(), 1);
        assert_eq!(expire(&conn, id, &c1, &u, 2000).unwrap(), Some(true), "still silent: removed, and the user's last");
    }

    #[test]
    fn only_connections_of_dead_or_missing_instances_are_orphans() {
        let (_dir, conn) = file();
        conn.execute_batch(
            "INSERT INTO instances (instance_id, pid, listen, started_at, heartbeat_at)
             VALUES ('alive', 1, 'x', 0, 1000), ('dead', 2, 'y', 0, 10), ('me', 3, 'z', 0, 5)",
        )
        .unwrap();
        let (c1, u) = (CanvasId::parse("c1").unwrap(), UserId::parse("u").unwrap());
        for instance in ["alive", "dead", "gone", "me"] {
            connect(&conn, Uuid::new_v4(), instance, &c1, &u, None, 1).unwrap();
        }
        let orphans = dead_connections(&conn, "me", 500).unwrap();
        let owners: Vec<String> = orphans
            .iter()
            .map(|o| {
                conn.query_row("SELECT instance_id FROM connections WHERE conn_id = ?1", [o.conn.to_string()], |r| {
                    r.get(0)
                })
                .unwrap()
            })
            .collect();
        assert_eq!(owners.len(), 2);
        assert!(owners.contains(&"dead".to_owned()) && owners.contains(&"gone".to_owned()));
    }

    #[test]
    fn users_are_listed_with_their_canvases_across_instances() {
        let (_dir, conn) = file();
        let ann = UserId::parse("ann").unwrap();
        for (canvas, instance) in [("c2", "i1"), ("c1", "i2"), ("c1", "i1")] {
            connect(&conn, Uuid::new_v4(), instance, &CanvasId::parse(canvas).unwrap(), &ann, None, 1).unwrap();
        }
        connect(&conn, Uuid::new_v4(), "i1", &CanvasId::parse("c1").unwrap(), &UserId::parse("bob").unwrap(), None, 1)
            .unwrap();
        let all = users(&conn, None).unwrap();
        assert_eq!(all.iter().map(|u| (u.user.as_str(), u.connections)).collect::<Vec<_>>(), [("ann", 3), ("bob", 1)]);
        assert_eq!(all[0].canvases, ["c1", "c2"]);
        assert_eq!(users(&conn, Some(&ann)).unwrap().len(), 1);
        assert_eq!(user_connection_counts(&conn, &ann, "i1").unwrap(), (3, 1));
    }
}
