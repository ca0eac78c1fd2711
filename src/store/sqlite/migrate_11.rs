//! The code of migration 11 (`migrations/0011_snapshots.sql`): each canvas's objects (`canvas_objects`)
//! become one snapshot at its head, written exactly as the fold writes one (objects in id order, each
//! object's text as stored), and the head gets the counts the fold keeps from now on. Then
//! `canvas_objects` goes.

use deadpool_sqlite::rusqlite::{params, Connection, Result};

use crate::clock::now_ms;
use crate::object_ops::JsonObject;

/// How long an empty canvas of a file migrated at rest may stay before it is forgotten (the fold sets this
/// from the TTL at its next commit).
const FORGET_AFTER_MS: i64 = 120_000;

pub fn objects_to_snapshots(tx: &Connection) -> Result<()> {
    let canvases: Vec<(String, i64, i64)> = tx
        .prepare("SELECT canvas_id, generation, last_seq FROM canvases")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
        .collect::<Result<_>>()?;
    let mut objects_of =
        tx.prepare("SELECT object_id, data FROM canvas_objects WHERE canvas_id = ?1 ORDER BY object_id")?;
    for (canvas, generation, seq) in canvases {
        let mut json = JsonObject::with_capacity(0);
        let mut count = 0i64;
        let mut rows = objects_of.query([&canvas])?;
        while let Some(row) = rows.next()? {
            json.push(row.get_ref(0)?.as_str()?, row.get_ref(1)?.as_bytes()?);
            count += 1;
        }
        if count > 0 {
            tx.execute(
                "INSERT INTO snapshots (canvas_id, generation, seq, created_at, json) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![canvas, generation, seq, now_ms(), &json.finish()[..]],
            )?;
        }
        tx.execute(
            "UPDATE canvases SET rev = 1, objects = ?2, snap_seq = CASE WHEN ?2 > 0 THEN last_seq ELSE 0 END,
                 connections = (SELECT count(*) FROM connections k WHERE k.canvas_id = ?1),
                 users = (SELECT count(DISTINCT user_id) FROM connections k WHERE k.canvas_id = ?1)
             WHERE canvas_id = ?1",
            params![canvas, count],
        )?;
    }
    tx.execute(
        "UPDATE canvases SET forget_after = ?1, forget_at = updated_at + ?1 WHERE objects = 0 AND connections = 0",
        [FORGET_AFTER_MS],
    )?;
    // When each connection opened, in microseconds.
    tx.execute_batch("UPDATE connections SET opened = connected_at * 1000; DROP TABLE canvas_objects;")
}

#[cfg(test)]
mod tests {
    use deadpool_sqlite::rusqlite::Connection;

    use crate::core::fold::canvas::Canvas;
    use crate::protocol::CanvasId;
    use crate::store::sqlite::{reads, schema};
    use crate::store::Want;

    /// A file at schema 10 (the fold in SQL: objects as rows of `canvas_objects`) with a canvas of objects,
    /// updated ones among them, and connections, migrated: the state reads back the same, objects in id
    /// order, each object's text as stored; the head counts them; connections keep their order.
    #[test]
    fn a_schema_10_file_keeps_its_canvases_state_and_presence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let conn = Connection::open(&path).unwrap();
        schema::migrate_to(&conn, 10).unwrap();
        conn.execute_batch(
            r#"INSERT INTO canvases (canvas_id, last_seq, generation, created_at, updated_at, state_bytes, state_seq)
                   VALUES ('c', 7, 3, 0, 0, 61, 6), ('empty', 2, 4, 0, 0, 0, 0);
               INSERT INTO canvas_objects (canvas_id, object_id, data) VALUES
                   ('c', 'b', '{"id":"b","x":1.50}'), ('c', 'a', '{"id":"a","k":{"z":[1,2]}}'),
                   ('c', 'é', '{"id":"é"}');
               INSERT INTO connections (conn_id, instance_id, canvas_id, user_id, name, connected_at) VALUES
                   ('6f2b6a47-5c52-4a0e-9d3b-000000000001', 'i1', 'c', 'ann', 'Ann', 10),
                   ('6f2b6a47-5c52-4a0e-9d3b-000000000002', 'i2', 'c', 'ann', 'Annie', 20);"#,
        )
        .unwrap();
        drop(conn);
        let mut conn = schema::open(&path, crate::store::sqlite::schema::tests_settings()).unwrap();
        schema::migrate(&mut conn).unwrap();
        let tx = conn.transaction().unwrap();
        let read = reads::canvas(&tx, &CanvasId::parse("c").unwrap(), Want::all()).unwrap();
        let head = read.head.unwrap();
        assert_eq!((head.seq, head.generation, head.objects, head.connections, head.users), (7, 3, 3, 2, 1));
        assert_eq!(read.snapshot.as_ref().map(|s| s.seq), Some(7), "one snapshot at the head");
        let canvas = Canvas::from_read(read).unwrap();
        let json = canvas.objects.to_json();
        assert_eq!(
            std::str::from_utf8(&json).unwrap(),
            r#"{"a":{"id":"a","k":{"z":[1,2]}},"b":{"id":"b","x":1.50},"é":{"id":"é"}}"#
        );
        assert_eq!(canvas.presence.name_of("ann"), Some("Annie"), "the newest named connection names the user");
        let empty = reads::canvas(&tx, &CanvasId::parse("empty").unwrap(), Want::all()).unwrap();
        assert!(empty.snapshot.is_none() && empty.head.unwrap().seq == 2, "no objects: no snapshot");
        let old: i64 =
            tx.query_row("SELECT count(*) FROM sqlite_master WHERE name = 'canvas_objects'", [], |r| r.get(0)).unwrap();
        assert_eq!(old, 0, "canvas_objects is gone");
    }
}
