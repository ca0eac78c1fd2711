//! History on the file (`history.rs`): object ops past their keep time are retired (gone for the log's
//! readers, kept for the fold's reads), snapshots stay past the newest, and thinning drops snapshots and
//! the retired ops below the new floor.

use super::*;
use crate::store::history::Thinning;

fn canvas() -> CanvasId {
    CanvasId::parse("c").unwrap()
}

fn read_at(dir: &tempfile::TempDir, at: u64) -> crate::store::history::AtRead {
    let mut conn = file(dir);
    let tx = conn.transaction().unwrap();
    super::super::history::read_at(&tx, &canvas(), at).unwrap()
}

fn put_snapshot(dir: &tempfile::TempDir, generation: u64, seq: u64, json: &str) {
    let mut conn = file(dir);
    let tx = conn.transaction().unwrap();
    let week = 7 * 86_400_000;
    assert!(super::super::history::put_snapshot(&tx, &canvas(), (generation, seq), json.as_bytes(), 0, week).unwrap());
    tx.commit().unwrap();
}

fn ops(dir: &tempfile::TempDir, which: &str) -> Vec<i64> {
    let sql = format!("SELECT seq FROM message_queue WHERE canvas_id = 'c' AND {which} ORDER BY seq");
    let conn = file(dir);
    let mut stmt = conn.prepare(&sql).unwrap();
    stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
}

#[tokio::test]
async fn ops_past_their_keep_time_are_retired_for_history_and_go_once_thinning_passes_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut committer = committer(&dir, "i1");
    for n in 1..=6 {
        commit(&mut committer, vec![message("c", "object-create", &format!(r#"{{"id":"o{n}"}}"#), None)]).await;
    }
    let generation = super::super::reads::head(&file(&dir), &canvas()).unwrap().unwrap().generation;
    put_snapshot(&dir, generation, 2, r#"{"o1":{"id":"o1"},"o2":{"id":"o2"}}"#);
    put_snapshot(&dir, generation, 4, r#"{"o1":{"id":"o1"},"o2":{"id":"o2"},"o3":{"id":"o3"},"o4":{"id":"o4"}}"#);
    clean_up_later(&dir);
    assert_eq!(ops(&dir, "op = 3"), [1, 2, 3, 4, 5, 6], "retired, every one: the floor is still 0");
    assert_eq!(ops(&dir, "op <= 2"), Vec::<i64>::new(), "gone for the log's readers");
    let log = super::super::reads::log(&file(&dir), &canvas(), generation, 0, 6, 100).unwrap();
    assert!(log.is_empty(), "GET …/messages, resume and the webhook read nothing of them");
    let at3 = read_at(&dir, 3);
    assert_eq!((at3.floor, at3.snapshot.map(|s| s.seq), at3.ops.len()), (0, Some(2), 1), "snapshot 2 and op 3");

    let mut conn = file(&dir);
    let tx = conn.transaction().unwrap();
    super::super::history::thin(&tx, &canvas(), generation, &Thinning { drop: vec![2], floor: 4 }, 0).unwrap();
    tx.commit().unwrap();
    assert_eq!(ops(&dir, "op = 3"), [5, 6], "the ops the floor passed went; those above it stay");
    let at3 = read_at(&dir, 3);
    assert_eq!((at3.floor, at3.snapshot.is_none(), at3.ops.len()), (4, true, 0), "below the floor: nothing to fold");
    let at6 = read_at(&dir, 6);
    assert_eq!((at6.snapshot.map(|s| s.seq), at6.ops.len()), (Some(4), 2));
    let due = super::super::history::history_due(&file(&dir), i64::MAX, 10).unwrap();
    assert!(due.is_empty(), "the floor is at the newest snapshot: nothing left to thin");
}

/// A committer that held the canvas from before ops that history then dropped reads it whole: the ops it
/// missed are gone from the log, and the snapshot has them.
#[tokio::test]
async fn a_fold_that_knew_the_canvas_before_ops_thinning_dropped_reads_it_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (mut stale, mut busy) = (committer(&dir, "i1"), committer(&dir, "i2"));
    commit(&mut stale, vec![message("c", "object-create", r#"{"id":"a"}"#, None)]).await;
    for n in 0..4 {
        commit(&mut busy, vec![message("c", "object-create", &format!(r#"{{"id":"b{n}"}}"#), None)]).await;
    }
    let generation = super::super::reads::head(&file(&dir), &canvas()).unwrap().unwrap().generation;
    let json = folded(&dir).objects.to_json();
    put_snapshot(&dir, generation, 5, std::str::from_utf8(&json).unwrap());
    clean_up_later(&dir);
    let mut conn = file(&dir);
    let tx = conn.transaction().unwrap();
    super::super::history::thin(&tx, &canvas(), generation, &Thinning { drop: vec![], floor: 5 }, 0).unwrap();
    tx.commit().unwrap();
    assert!(ops(&dir, "op > 0").is_empty(), "the ops went: the snapshot at 5 has them");
    commit(&mut stale, vec![message("c", "object-create", r#"{"id":"c"}"#, None)]).await;
    let objects = folded(&dir).objects;
    assert_eq!(objects.len(), 6, "a, b0..b3 and c: {}", String::from_utf8_lossy(&objects.to_json()));
    let head = super::super::reads::head(&file(&dir), &canvas()).unwrap().unwrap();
    assert_eq!((head.objects, head.bytes), (6, objects.bytes()), "the stale fold's state is the canvas's");
}
