//! The committer's loads of canvases it does not hold, over the SQLite writer: what waits for a load, and
//! what is read for it.

use super::*;

/// A canvas the committer must load first holds up its own publishes only: another canvas's commit is
/// answered meanwhile, and a later plain message for the loading canvas waits behind its object op.
#[tokio::test]
async fn a_canvas_being_loaded_holds_up_its_own_publishes_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut committer = committer(&dir, "i1");
    let (create, mut created) = message("a", "object-create", r#"{"id":"o","x":0}"#, None);
    committer.commit(vec![create]).await;
    let (other, mut answered) = note("b");
    let (later, mut after) = note("a");
    committer.commit(vec![other, later]).await;
    assert_eq!(answered.try_recv().unwrap().unwrap().seq, 1, "b is committed while a is read");
    assert!(created.try_recv().is_err() && after.try_recv().is_err(), "a's publishes wait for its load");
    committer.finish_loads().await;
    assert_eq!(created.try_recv().unwrap().unwrap().seq, 1);
    assert_eq!(after.try_recv().unwrap().unwrap().seq, 2, "in the order they came");
}

/// A join's registration on a canvas the committer does not hold reads only its head and connections: the
/// head keeps the objects' counts, and the first object op reads the objects whole before it is staged.
#[tokio::test]
async fn a_registration_reads_no_objects_and_the_first_object_op_reads_them_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = committer(&dir, "i1");
    let answers = commit(&mut first, vec![message("c", "object-create", r#"{"id":"o","x":0}"#, None)]).await;
    assert_eq!(seqs(&answers), [(1, false)]);
    let head = |dir: &tempfile::TempDir| -> (i64, i64, i64) {
        file(dir)
            .query_row("SELECT objects, state_bytes, connections FROM canvases WHERE canvas_id = 'c'", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap()
    };
    let (objects, bytes, _) = head(&dir);
    // Another instance (a committer that holds nothing) registers a connection: its head's counts stand.
    let mut second = committer(&dir, "i2");
    let ann = member("c", "ann");
    settle(&mut second, vec![Publish::leaving(ann, PresenceChange::Connect)]).await;
    assert_eq!(head(&dir), (objects, bytes, 1));
    let c = CanvasId::parse("c").unwrap();
    assert!(second.holds(&c, false) && !second.holds(&c, true), "held without its objects");
    // An update of the object the second committer never read is staged against the objects, read whole.
    let answers = commit(&mut second, vec![message("c", "object-update", r#"{"id":"o","x":1}"#, None)]).await;
    assert_eq!(seqs(&answers), [(3, false)], "user-connected took seq 2");
    assert_eq!(head(&dir).0, 1);
    assert!(second.holds(&c, true));
}
