//! The committer over the SQLite writer, against a temporary file: seqs, refusals, idempotency, presence
//! and the checks of a head another process moved, as a round of publishes goes through both.

use std::sync::Arc;
use std::time::Duration;

use deadpool_sqlite::rusqlite::{params, Connection};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use super::schema::{self, ConnSettings};
use super::writer::{SqliteWriter, WriterSettings};
use super::{read_pool, PoolReads, Progress};
use crate::config::{Config, Synchronous};
use crate::core::committer::{Committer, Setup};
use crate::core::upkeep::Leaving;
use crate::core::{BusError, Committed, Origin, PresenceChange, Publish};
use crate::hub::{Hub, Member};
use crate::metrics::Metrics;
use crate::protocol::{CanvasId, IdempotencyKey, LoggedMessage, UserId};
use crate::store::Commit;

mod history;
mod loads;

type Answer = oneshot::Receiver<Result<Committed, BusError>>;

fn settings() -> ConnSettings {
    ConnSettings { synchronous: Synchronous::Normal, busy_timeout: Duration::from_secs(1), memory: false }
}

/// A committer over a writer of the file at `dir`, as instance `instance` (several may share the file).
fn committer(dir: &tempfile::TempDir, instance: &str) -> Committer<SqliteWriter> {
    with_hub(dir, instance, Arc::new(Hub::new()))
}

fn with_hub(dir: &tempfile::TempDir, instance: &str, hub: Arc<Hub>) -> Committer<SqliteWriter> {
    let path = dir.path().join("w.db");
    let mut conn = schema::open(&path, settings()).unwrap();
    schema::migrate(&mut conn).unwrap();
    let config = Config::with_db(&path);
    let writer = SqliteWriter {
        conn,
        progress: Arc::new(Progress::default()),
        metrics: Metrics::default(),
        settings: WriterSettings::new(&config, instance, "127.0.0.1:0", "e"),
        doorbell: None,
        peers: Vec::new(),
        file: None,
        reads: PoolReads::new(read_pool(path.clone(), settings()).unwrap(), settings().busy_timeout),
    };
    let setup =
        Setup::new(&config, instance, hub, Metrics::default(), mpsc::channel(8).0, Arc::new(Leaving::default()));
    setup.start(writer).committer
}

/// A logged message from `user` on `canvas`, with an idempotency key if given, and where its outcome arrives.
fn message(canvas: &str, kind: &str, data: &str, key: Option<&str>) -> (Publish, Answer) {
    let mut message = LoggedMessage::new(kind, RawValue::from_string(data.into()).unwrap(), None).unwrap();
    message.idempotency_key = key.map(|key| IdempotencyKey::parse(key).unwrap());
    let (reply, answer) = oneshot::channel();
    let (canvas, from) = (CanvasId::parse(canvas).unwrap(), UserId::parse("u1").unwrap());
    (Publish::message(canvas, message, from, Origin::Caller(reply)), answer)
}

fn note(canvas: &str) -> (Publish, Answer) {
    message(canvas, "note", r#"{"n":1}"#, None)
}

async fn commit(
    committer: &mut Committer<SqliteWriter>,
    round: Vec<(Publish, Answer)>,
) -> Vec<Result<Committed, BusError>> {
    let (publishes, mut answers): (Vec<_>, Vec<_>) = round.into_iter().unzip();
    committer.commit(publishes).await;
    committer.finish_loads().await;
    answers.iter_mut().map(|answer| answer.try_recv().unwrap()).collect()
}

/// Commits `publishes` and waits until they are (their canvas may have to be loaded first).
async fn settle(committer: &mut Committer<SqliteWriter>, publishes: Vec<Publish>) {
    committer.commit(publishes).await;
    committer.finish_loads().await;
}

/// A new connection of `user` to `canvas`, without a name.
fn member(canvas: &str, user: &str) -> Member {
    Member {
        canvas: CanvasId::parse(canvas).unwrap(),
        conn: uuid::Uuid::new_v4(),
        user: UserId::parse(user).unwrap(),
        name: None,
        opened: crate::clock::opened_now(),
    }
}

fn seqs(answers: &[Result<Committed, BusError>]) -> Vec<(u64, bool)> {
    answers.iter().map(|a| a.as_ref().map(|c| (c.seq, c.duplicate)).unwrap_or((0, false))).collect()
}

fn file(dir: &tempfile::TempDir) -> Connection {
    schema::open(&dir.path().join("w.db"), settings()).unwrap()
}

#[tokio::test]
async fn seqs_are_assigned_per_canvas_in_arrival_order_within_one_round() {
    let dir = tempfile::tempdir().unwrap();
    let mut committer = committer(&dir, "i1");
    let answers = commit(&mut committer, ["a", "b", "a", "a", "b"].map(note).into()).await;
    assert_eq!(seqs(&answers), [(1, false), (1, false), (2, false), (3, false), (2, false)]);
    let answers = commit(&mut committer, ["b", "c"].map(note).into()).await;
    assert_eq!(seqs(&answers), [(3, false), (1, false)], "the next round continues each canvas's head");
    let ordered: bool = file(&dir)
        .query_row(
            "SELECT count(*) = 0 FROM message_queue m1 JOIN message_queue m2
             ON m1.canvas_id = m2.canvas_id AND m1.id < m2.id AND m1.seq > m2.seq",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(ordered, "row ids and seqs agree in order within each canvas");
}

#[tokio::test]
async fn object_ops_fold_and_refusals_take_no_seq() {
    let dir = tempfile::tempdir().unwrap();
    let mut committer = committer(&dir, "i1");
    let answers = commit(
        &mut committer,
        vec![
            message("c", "object-update", r#"{"id":"a","x":1}"#, None),
            message("c", "object-create", r#"{"id":"a","x":0}"#, None),
            message("c", "object-update", r#"{"id":"a","y":2}"#, None),
        ],
    )
    .await;
    assert!(matches!(answers[0], Err(BusError::Refused(_))), "an update of a missing object");
    assert_eq!(seqs(&answers[1..]), [(1, false), (2, false)]);
    let (objects, version): (i64, i64) = file(&dir)
        .query_row("SELECT objects, state_seq FROM canvases WHERE canvas_id = 'c'", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!((objects, version), (1, 2), "the head keeps what the fold counted, and the version");
}

#[tokio::test]
async fn a_failed_commit_answers_unavailable_and_assigns_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut committer = committer(&dir, "i1");
    committer.writer_mut().conn.pragma_update(None, "query_only", true).unwrap();
    let answers = commit(&mut committer, vec![note("a")]).await;
    assert!(matches!(answers[0], Err(BusError::Unavailable(_))));
    assert!(committer.writer_mut().progress.last_error.get().is_some(), "health sees the failure");
    committer.writer_mut().conn.pragma_update(None, "query_only", false).unwrap();
    let answers = commit(&mut committer, vec![note("a")]).await;
    assert_eq!(seqs(&answers), [(1, false)], "the failed message took no seq");
    assert!(committer.writer_mut().progress.last_error.get().is_none(), "a good commit clears it");
}

#[tokio::test]
async fn a_repeated_idempotency_key_is_acked_with_the_original_seq_and_logged_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut committer = committer(&dir, "i1");
    let keyed = |canvas, key| message(canvas, "note", "1", key);
    let round = vec![keyed("a", Some("k1")), keyed("a", Some("k1")), keyed("a", None), keyed("b", Some("k1"))];
    let answers = commit(&mut committer, round).await;
    assert_eq!(seqs(&answers), [(1, false), (1, true), (2, false), (1, false)], "a repeat in the same round too");
    let answers = commit(&mut committer, vec![keyed("a", Some("k1")), keyed("a", Some("k2"))]).await;
    assert_eq!(seqs(&answers), [(1, true), (3, false)], "a later round; another key");
    let logged: i64 = file(&dir).query_row("SELECT count(*) FROM message_queue", [], |r| r.get(0)).unwrap();
    assert_eq!(logged, 4);
}

/// Two processes on one file: each stages against what it holds, and the one whose canvas moved under it
/// is staged again inside its transaction, against the file: an op it would have refused (an update of
/// an object the other created) is logged, a key the other logged is a duplicate, and no seq is taken twice.
#[tokio::test]
async fn a_canvas_another_process_moved_is_staged_again_against_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (mut first, mut second) = (committer(&dir, "i1"), committer(&dir, "i2"));
    commit(&mut second, vec![message("c", "object-create", r#"{"id":"seed"}"#, None)]).await;
    commit(&mut first, vec![message("c", "object-update", r#"{"id":"seed","n":1}"#, None)]).await;
    let answers = commit(&mut second, vec![message("c", "object-create", r#"{"id":"a"}"#, Some("k"))]).await;
    assert_eq!(seqs(&answers), [(3, false)]);
    let answers = commit(
        &mut first,
        vec![
            message("c", "object-update", r#"{"id":"a","x":1}"#, None),
            message("c", "object-create", r#"{"id":"b"}"#, Some("k")),
            message("c", "object-update", r#"{"id":"seed","m":2}"#, None),
        ],
    )
    .await;
    assert_eq!(seqs(&answers), [(4, false), (3, true), (5, false)], "folded against what the file holds");
    let answers = commit(&mut second, vec![message("c", "object-delete", r#"{"id":"a"}"#, None)]).await;
    assert_eq!(seqs(&answers), [(6, false)]);
}

#[tokio::test]
async fn a_users_first_and_last_connection_log_and_rows_follow_presence() {
    let dir = tempfile::tempdir().unwrap();
    let mut committer = committer(&dir, "i1");
    let member = |name: Option<&str>| Member {
        canvas: CanvasId::parse("c").unwrap(),
        conn: uuid::Uuid::new_v4(),
        user: UserId::parse("ann").unwrap(),
        name: name.map(str::to_owned),
        opened: crate::clock::opened_now(),
    };
    let (tab1, tab2) = (member(Some("Ann")), member(None));
    for (member, change) in
        [(&tab1, PresenceChange::Connect), (&tab2, PresenceChange::Connect), (&tab1, PresenceChange::Disconnect)]
    {
        settle(&mut committer, vec![Publish::leaving(member.clone(), change)]).await;
    }
    let conn = file(&dir);
    let logged: Vec<String> = conn
        .prepare("SELECT message_type FROM message_queue ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(logged, ["user-connected"], "only the first connection logged: the second tab is left");
    let rows: i64 = conn.query_row("SELECT count(*) FROM connections WHERE canvas_id = 'c'", [], |r| r.get(0)).unwrap();
    let (connections, users): (i64, i64) = conn
        .query_row("SELECT connections, users FROM canvases WHERE canvas_id = 'c'", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!((rows, connections, users), (1, 1, 1));
    let name: Option<String> = conn
        .query_row("SELECT name FROM connections WHERE conn_id = ?1", params![tab2.conn.to_string()], |r| r.get(0))
        .unwrap();
    assert_eq!(name, None, "the nameless tab is the one left");
}

#[tokio::test]
async fn a_commit_rings_live_peers_found_at_the_heartbeat_and_not_itself() {
    let dir = tempfile::tempdir().unwrap();
    let mut committer = committer(&dir, "i1");
    committer.writer_mut().doorbell = Some(super::doorbell::Doorbell::bind().unwrap());
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let now = crate::clock::now_ms();
    for (id, heartbeat_at, addr) in
        [("live", now, peer.local_addr().unwrap().to_string()), ("dead", 0, "127.0.0.1:9".into())]
    {
        file(&dir)
            .execute(
                "INSERT INTO instances (instance_id, pid, listen, started_at, heartbeat_at, wake_addr)
                 VALUES (?1, 1, '', 0, ?2, ?3)",
                params![id, heartbeat_at, addr],
            )
            .unwrap();
    }
    let (reply, live) = oneshot::channel();
    committer.writer_mut().run_job(super::jobs::WriterJob::Heartbeat(reply));
    let live: Vec<String> = live.await.unwrap().unwrap().into_iter().map(|i| i.id).collect();
    assert!(live.contains(&"i1".to_owned()) && live.contains(&"live".to_owned()) && !live.contains(&"dead".to_owned()));
    assert_eq!(committer.writer_mut().peers, [peer.local_addr().unwrap()], "only the live peer, never this instance");
    assert_eq!(seqs(&commit(&mut committer, vec![note("a")]).await), [(1, false)]);
    let mut buf = [0u8; 16];
    assert_eq!(peer.recv(&mut buf).unwrap(), 1, "the peer was rung");
}

#[tokio::test]
async fn only_a_write_that_wrote_clears_the_last_storage_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut committer = committer(&dir, "i1");
    let writer = committer.writer_mut();
    writer.progress.write_failed(1, "the disk is full");
    // Nothing to clean up: the transaction commits without writing a page, which proves nothing.
    let (reply, _) = oneshot::channel();
    writer.run_job(super::jobs::WriterJob::CleanUp { limit: 10, forget_instances_before: 0, reply });
    assert_eq!(writer.progress.last_error.get().map(|(_, e)| e).as_deref(), Some("the disk is full"));
    let (reply, _) = oneshot::channel();
    writer.run_job(super::jobs::WriterJob::Heartbeat(reply));
    assert_eq!(writer.progress.last_error.get(), None, "a heartbeat wrote its row: the storage works again");
}

/// A canvas created again (in a new generation, without a reset marker) while a room of this instance still
/// follows its old generation: the room cannot take the row from the committer, so the read cursor must
/// not skip it; the watcher reads it back and moves the room on.
#[tokio::test]
async fn a_row_of_a_generation_its_room_never_saw_is_left_for_the_watcher() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Arc::new(Hub::new());
    let mut committer = with_hub(&dir, "i1", hub.clone());
    hub.room_for_join(&CanvasId::parse("again").unwrap()).lock().start_at(7, 0, &Metrics::default());
    let cursor = committer.writer_mut().progress.cursor();
    assert_eq!(seqs(&commit(&mut committer, vec![note("again")]).await), [(1, false)]);
    assert_eq!(committer.writer_mut().progress.cursor(), cursor, "the row stays for the watcher to read");
    commit(&mut committer, vec![note("elsewhere")]).await;
    assert_eq!(committer.writer_mut().progress.cursor(), cursor, "nothing foreign may be skipped over it either");
}

/// Reads canvas `c` whole from the file and folds it, as a join or the committer does.
fn folded(dir: &tempfile::TempDir) -> crate::core::fold::canvas::Canvas {
    let mut conn = file(dir);
    let tx = conn.transaction().unwrap();
    let read = super::reads::canvas(&tx, &CanvasId::parse("c").unwrap(), crate::store::Want::all()).unwrap();
    crate::core::fold::canvas::Canvas::from_read(read).unwrap()
}

/// Cleanup as it runs eight days from now (past the TTL and a week of history): everything past its keep
/// time, except what must stay.
fn clean_up_later(dir: &tempfile::TempDir) {
    let mut conn = file(dir);
    let tx = conn.transaction().unwrap();
    let later = crate::clock::now_ms() + 8 * 86_400_000;
    super::jobs::clean_up(&tx, 1000, later, 0).unwrap();
    tx.commit().unwrap();
}

fn snapshot_now(dir: &tempfile::TempDir, generation: u64, seq: u64, json: &str) -> bool {
    let mut conn = file(dir);
    let tx = conn.transaction().unwrap();
    let canvas = CanvasId::parse("c").unwrap();
    let put = super::history::put_snapshot(&tx, &canvas, (generation, seq), json.as_bytes(), 0, 0);
    tx.commit().unwrap();
    put.unwrap()
}

/// A reset starts the canvas's snapshots over: the new generation's are kept, and cleanup keeps its ops
/// until one covers them (once, the old snapshot's seq stayed and the new ops went with the TTL).
#[tokio::test]
async fn after_a_reset_the_new_generations_ops_stay_until_a_snapshot_covers_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut committer = committer(&dir, "i1");
    let create = |id: &str| message("c", "object-create", &format!(r#"{{"id":"{id}"}}"#), None);
    commit(&mut committer, vec![create("old1"), create("old2"), create("old3")]).await;
    let generation = super::reads::head(&file(&dir), &CanvasId::parse("c").unwrap()).unwrap().unwrap().generation;
    assert!(snapshot_now(&dir, generation, 3, r#"{"old1":{"id":"old1"},"old2":{"id":"old2"},"old3":{"id":"old3"}}"#));
    let reset = committer.writer_mut().reset(&CanvasId::parse("c").unwrap()).await.unwrap();
    commit(&mut committer, vec![create("a"), create("b")]).await;
    clean_up_later(&dir);
    assert_eq!(&folded(&dir).objects.to_json()[..], br#"{"a":{"id":"a"},"b":{"id":"b"}}"#, "the new ops are kept");
    assert!(snapshot_now(&dir, reset.generation, 2, r#"{"a":{"id":"a"},"b":{"id":"b"}}"#), "a new snapshot is taken");
    clean_up_later(&dir);
    assert_eq!(&folded(&dir).objects.to_json()[..], br#"{"a":{"id":"a"},"b":{"id":"b"}}"#, "now from the snapshot");
    let ops: i64 = file(&dir).query_row("SELECT count(*) FROM message_queue WHERE op = 1", [], |r| r.get(0)).unwrap();
    assert_eq!(ops, 0, "the covered ops went");
}

/// A canvas forgotten when idle and created again starts its rev over: a process that held the old one
/// must not have its staging taken for current (the generation is checked too).
#[tokio::test]
async fn a_canvas_forgotten_and_created_again_is_staged_again_against_its_new_generation() {
    let dir = tempfile::tempdir().unwrap();
    let (mut first, mut second) = (committer(&dir, "i1"), committer(&dir, "i2"));
    let ann = member("c", "ann");
    settle(&mut first, vec![Publish::leaving(ann.clone(), PresenceChange::Connect)]).await;
    settle(&mut first, vec![Publish::leaving(ann.clone(), PresenceChange::Disconnect)]).await;
    clean_up_later(&dir);
    let heads: i64 = file(&dir).query_row("SELECT count(*) FROM canvases", [], |r| r.get(0)).unwrap();
    assert_eq!(heads, 0, "the empty canvas was forgotten");
    commit(&mut second, vec![message("c", "object-create", r#"{"id":"o1"}"#, None)]).await;
    commit(&mut second, vec![message("c", "object-update", r#"{"id":"o1","n":1}"#, None)]).await;
    let answers = commit(&mut first, vec![message("c", "object-update", r#"{"id":"o1","m":2}"#, None)]).await;
    assert_eq!(seqs(&answers), [(3, false)], "staged against the canvas as it is now");
    assert_eq!(folded(&dir).objects.get("o1"), Some(r#"{"id":"o1","n":1,"m":2}"#));
}

/// A survivor's expiry of a connection whose instance heartbeats again by the time it commits is not
/// applied: the connection stays, and nothing is logged.
#[tokio::test]
async fn an_expiry_spares_a_connection_whose_instance_came_back() {
    let dir = tempfile::tempdir().unwrap();
    let (mut owner, mut survivor) = (committer(&dir, "owner"), committer(&dir, "survivor"));
    let ann = member("c", "ann");
    settle(&mut owner, vec![Publish::leaving(ann.clone(), PresenceChange::Connect)]).await;
    let (reply, _) = oneshot::channel();
    owner.writer_mut().run_job(super::jobs::WriterJob::Heartbeat(reply));
    settle(&mut survivor, vec![Publish::leaving(ann.clone(), PresenceChange::Expire { dead_after_ms: 60_000 })]).await;
    let rows: i64 = file(&dir).query_row("SELECT count(*) FROM connections", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 1, "its instance is alive: the connection stays");
    settle(&mut survivor, vec![Publish::leaving(ann, PresenceChange::Expire { dead_after_ms: -1 })]).await;
    let rows: i64 = file(&dir).query_row("SELECT count(*) FROM connections", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 0, "silent for longer than allowed: expired");
}
