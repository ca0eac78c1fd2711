//! Unit tests of the writer against a temporary file.

use super::*;
use crate::bus::sqlite::schema::{self, ConnSettings};
use crate::bus::Committed;
use crate::config::Synchronous;
use crate::protocol::{IdempotencyKey, MsgType, UserId};
use serde_json::value::RawValue;
use std::time::Duration;
use tokio::sync::oneshot;

fn publish(canvas: &str) -> (Publish, oneshot::Receiver<Result<Committed, BusError>>) {
    keyed(canvas, None)
}

/// A publish, with an idempotency key if given, and where its outcome arrives.
fn keyed(canvas: &str, key: Option<&str>) -> (Publish, oneshot::Receiver<Result<Committed, BusError>>) {
    let (reply, result) = oneshot::channel();
    let publish = Publish {
        canvas: CanvasId::parse(canvas).unwrap(),
        kind: MsgType::parse("note").unwrap(),
        data: RawValue::from_string(format!(r#"{{"on":"{canvas}"}}"#)).unwrap(),
        from: UserId::parse("u1").unwrap(),
        object: None,
        idempotency_key: key.map(|key| IdempotencyKey::parse(key).unwrap()),
        origin: Origin::Caller(reply),
    };
    (publish, result)
}

fn writer(dir: &tempfile::TempDir) -> Writer {
    let settings =
        ConnSettings { synchronous: Synchronous::Normal, busy_timeout: Duration::from_secs(1), memory: false };
    let mut conn = schema::open(&dir.path().join("w.db"), settings).unwrap();
    schema::migrate(&mut conn).unwrap();
    let settings = WriterSettings {
        instance_id: "i1".into(),
        listen: "127.0.0.1:0".into(),
        db_epoch: "e".into(),
        ttl_ms: 60_000,
        keep_ms: 60_000,
        max_batch: 100,
        max_canvas_state: 64 << 20,
        local_broadcast: true,
        peer_timeout_ms: 10_000,
    };
    Writer::new(conn, Arc::new(Hub::new()), Arc::new(Progress::default()), Metrics::default(), settings, None, None)
}

#[test]
fn seqs_are_assigned_per_canvas_in_arrival_order_within_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = writer(&dir);
    let (batch, mut results): (Vec<_>, Vec<_>) = ["a", "b", "a", "a", "b"].iter().map(|c| publish(c)).unzip();
    writer.commit(batch);
    let seqs: Vec<u64> = results.iter_mut().map(|r| r.try_recv().unwrap().unwrap().seq).collect();
    assert_eq!(seqs, [1, 1, 2, 3, 2]);
    let (batch, mut results): (Vec<_>, Vec<_>) = ["b", "c"].iter().map(|c| publish(c)).unzip();
    writer.commit(batch);
    let seqs: Vec<u64> = results.iter_mut().map(|r| r.try_recv().unwrap().unwrap().seq).collect();
    assert_eq!(seqs, [3, 1], "the next batch continues each canvas's head");
    let heads: Vec<(String, i64)> = writer
        .conn
        .prepare("SELECT canvas_id, last_seq FROM canvases ORDER BY canvas_id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(heads, [("a".into(), 3), ("b".into(), 3), ("c".into(), 1)]);
    let ordered: bool = writer
        .conn
        .query_row(
            "SELECT count(*) = 0 FROM message_queue m1 JOIN message_queue m2
             ON m1.canvas_id = m2.canvas_id AND m1.id < m2.id AND m1.seq > m2.seq",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(ordered, "row ids and seqs agree in order within each canvas");
    for sql in [INSERT_MESSAGE, LOAD_HEAD, STORE_HEAD] {
        let stmt = writer.conn.prepare_cached(sql).unwrap();
        let reprepared = stmt.get_status(deadpool_sqlite::rusqlite::StatementStatus::RePrepare);
        assert_eq!(reprepared, 0, "the commit path's statements are prepared once: {sql}");
    }
}

#[test]
fn a_failed_commit_answers_unavailable_and_assigns_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = writer(&dir);
    writer.conn.pragma_update(None, "query_only", true).unwrap();
    let (p, mut result) = publish("a");
    writer.commit(vec![p]);
    assert!(matches!(result.try_recv().unwrap(), Err(BusError::Unavailable(_))));
    assert!(writer.progress.last_error.get().is_some(), "health sees the failure");
    writer.conn.pragma_update(None, "query_only", false).unwrap();
    let (p, mut result) = publish("a");
    writer.commit(vec![p]);
    assert_eq!(result.try_recv().unwrap().unwrap().seq, 1, "the failed message took no seq");
    assert!(writer.progress.last_error.get().is_none(), "a good commit clears it");
}

#[test]
fn a_commit_rings_live_peers_found_at_the_heartbeat_and_not_itself() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = writer(&dir);
    writer.doorbell = Some(Doorbell::bind().unwrap());
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let now = now_ms();
    for (id, heartbeat_at, addr) in
        [("live", now, peer.local_addr().unwrap().to_string()), ("dead", 0, "127.0.0.1:9".into())]
    {
        writer
            .conn
            .execute(
                "INSERT INTO instances (instance_id, pid, listen, started_at, heartbeat_at, wake_addr)
                 VALUES (?1, 1, '', 0, ?2, ?3)",
                params![id, heartbeat_at, addr],
            )
            .unwrap();
    }
    writer.run_job(Job::Heartbeat(None));
    assert_eq!(writer.peers, [peer.local_addr().unwrap()], "only the live peer, never this instance");
    let own: Option<String> =
        writer.conn.query_row("SELECT wake_addr FROM instances WHERE instance_id = 'i1'", [], |r| r.get(0)).unwrap();
    assert_eq!(own, Some(writer.doorbell.as_ref().unwrap().addr().to_string()), "registered for the peers");
    let (p, mut result) = publish("a");
    writer.commit(vec![p]);
    assert_eq!(result.try_recv().unwrap().unwrap().seq, 1);
    let mut buf = [0u8; 16];
    assert_eq!(peer.recv(&mut buf).unwrap(), 1, "the peer was rung");
}

#[test]
fn only_a_job_that_wrote_clears_the_last_storage_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = writer(&dir);
    writer.progress.write_failed(1, "the disk is full");
    // Nothing to forget: the transaction commits without writing a page, which proves nothing.
    writer.run_job(Job::ForgetInstances { before_ms: 0 });
    let (done, _) = oneshot::channel();
    writer.run_job(Job::Barrier(done));
    assert_eq!(writer.progress.last_error.get().map(|(_, e)| e).as_deref(), Some("the disk is full"));
    writer.run_job(Job::Heartbeat(None));
    assert_eq!(writer.progress.last_error.get(), None, "a heartbeat wrote its row: the storage works again");
}

/// A canvas created again (in a new generation, without a reset marker) while a room of this instance still
/// follows its old generation: the room cannot take the row from the writer, so the read cursor must not
/// skip it; the watcher reads it back and moves the room on.
#[test]
fn a_row_of_a_generation_its_room_never_saw_is_left_for_the_watcher() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = writer(&dir);
    let canvas = CanvasId::parse("again").unwrap();
    writer.hub.room_for_join(&canvas).lock().start_at(7, 0, &Metrics::default());
    let cursor = writer.progress.cursor();
    let (p, mut result) = publish("again");
    writer.commit(vec![p]);
    assert_eq!(result.try_recv().unwrap().unwrap().seq, 1);
    assert_eq!(writer.progress.cursor(), cursor, "the row stays for the watcher to read");
    let (p, _) = publish("elsewhere");
    writer.commit(vec![p]);
    assert!(writer.progress.cursor() == cursor, "nothing foreign may be skipped over it either");
}

#[test]
fn a_repeated_idempotency_key_is_acked_with_the_original_seq_and_logged_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = writer(&dir);
    let (batch, mut results): (Vec<_>, Vec<_>) = [("a", Some("k1")), ("a", Some("k1")), ("a", None), ("b", Some("k1"))]
        .map(|(c, k)| keyed(c, k))
        .into_iter()
        .unzip();
    writer.commit(batch);
    let outcomes: Vec<Committed> = results.iter_mut().map(|r| r.try_recv().unwrap().unwrap()).collect();
    let seqs = |outcomes: &[Committed]| outcomes.iter().map(|c| (c.seq, c.duplicate)).collect::<Vec<_>>();
    assert_eq!(seqs(&outcomes), [(1, false), (1, true), (2, false), (1, false)], "a repeat in the same batch too");
    let (batch, mut results): (Vec<_>, Vec<_>) = [keyed("a", Some("k1")), keyed("a", Some("k2"))].into_iter().unzip();
    writer.commit(batch);
    let outcomes: Vec<Committed> = results.iter_mut().map(|r| r.try_recv().unwrap().unwrap()).collect();
    assert_eq!(seqs(&outcomes), [(1, true), (3, false)], "a later batch; another key");
    let logged: i64 = writer.conn.query_row("SELECT count(*) FROM message_queue", [], |r| r.get(0)).unwrap();
    assert_eq!(logged, 4);
}
