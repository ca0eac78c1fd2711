//! History on a real `redis-server` (see `super::super::testing`): snapshots kept with their time and size,
//! reads at a seq, retention 0, names, forks, thinning, what a reset and forgetting drop, heads written
//! before history, and a restore's marker on its entries. Commits are `commit.lua` called as the committer
//! calls it.

use redis::aio::MultiplexedConnection;
use serde_json::value::RawValue;

use super::*;
use crate::store::records::{Expect, Head, NewEntry, Writes};
use crate::store::redis::batch::{self, Args, Header, Part, Reply};
use crate::store::redis::scripts::COMMIT;
use crate::store::redis::testing::Server;
use crate::store::{Commit, Store, Want};

const HOUR_MS: i64 = 3_600_000;

fn canvas(name: &str) -> CanvasId {
    CanvasId::parse(name).unwrap()
}

/// An entry to commit: an object op (`o`), a restore's object op (`r`) or a plain message (`m`).
fn entry(kind: char) -> NewEntry<'static> {
    let data: &'static RawValue = Box::leak(RawValue::from_string(r#"{"id":"a"}"#.to_owned()).unwrap());
    let (name, changes_objects, restore) = match kind {
        'o' => ("object-create", true, false),
        'r' => ("object-create", true, true),
        _ => ("note", false, false),
    };
    NewEntry { kind: name, from: "ann", data, conn: None, reference: None, changes_objects, restore }
}

/// Commits `kinds` (see [`entry`]) to `canvas` as a guarded part over its head; returns the head after it
/// and the commit's time. `forget_after`: the canvas may be forgotten that long after (it holds nothing).
async fn commit_with(store: &RedisStore, to: &CanvasId, kinds: &str, forget_after: Option<u64>) -> (Head, i64) {
    let known = store.read_canvas(to, Want::head()).await.unwrap().head.unwrap_or_default();
    let staged = Head { bytes: 10, objects: u64::from(forget_after.is_none()), ..Head::default() };
    let writes = Writes {
        canvas: to,
        expect: Expect::Rev(known.rev),
        known: (known.generation, known.seq),
        head: &staged,
        entries: kinds.chars().map(entry).collect(),
        conns: &[],
        keys: &[],
        forget_after,
    };
    let header = Header {
        instance: "i1",
        number: rand_number(),
        epoch: "",
        candidate: "e",
        ttl_ms: 60_000,
        marker_ttl_ms: 60_000,
    };
    let mut args = Args::default();
    header.encode(&mut args);
    batch::encode(&mut args, &writes);
    let mut invocation = COMMIT.prepare_invoke();
    invocation.arg(args.0);
    let reply: Value = invocation.invoke_async(&mut store.conn()).await.unwrap();
    let Some(Reply::Applied { now, mut parts, .. }) = batch::parse(&reply, std::slice::from_ref(to)) else {
        panic!("{reply:?}")
    };
    let Some(Part::Placed(placed)) = parts.pop() else { panic!("{parts:?}") };
    (placed.head, now)
}

async fn commit(store: &RedisStore, to: &CanvasId, kinds: &str) -> (Head, i64) {
    commit_with(store, to, kinds, None).await
}

/// A batch number no earlier commit of these tests used (a part's marker answers a number it saw).
fn rand_number() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0 >> 1
}

/// Commits one object op per seq up to `seqs`, each at a later millisecond; returns each seq's time (index 0
/// unused).
async fn ops(store: &RedisStore, to: &CanvasId, seqs: u64) -> Vec<i64> {
    let mut times = vec![0];
    for _ in 0..seqs {
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        times.push(commit(store, to, "o").await.1);
    }
    times
}

fn json(seq: u64) -> Bytes {
    Bytes::from(format!(r#"{{"at":{seq}}}"#))
}

async fn snapshot(store: &RedisStore, to: &CanvasId, generation: u64, seq: u64) -> bool {
    store.put_snapshot(to, generation, seq, json(seq)).await.unwrap()
}

fn seqs(versions: &[Version]) -> Vec<u64> {
    versions.iter().map(|version| version.seq).collect()
}

fn op_seqs(read: &AtRead) -> Vec<u64> {
    read.ops.iter().map(|op| op.seq).collect()
}

/// What a read at `at` gives: its snapshot's seq and JSON, and the ops after it.
async fn at(store: &RedisStore, to: &CanvasId, at: u64) -> (Option<(u64, String)>, Vec<u64>) {
    let read = store.read_at(to, at).await.unwrap();
    let snapshot = read.snapshot.as_ref().map(|s| (s.seq, String::from_utf8(s.json.to_vec()).unwrap()));
    (snapshot, op_seqs(&read))
}

fn state(seq: u64) -> Option<(u64, String)> {
    Some((seq, String::from_utf8(json(seq).to_vec()).unwrap()))
}

/// The seqs the ops stream of a canvas holds.
async fn ops_kept(conn: &mut MultiplexedConnection, to: &CanvasId) -> Vec<u64> {
    let reply: Value =
        redis::cmd("XRANGE").arg(format!("relay:{{{to}}}:ops")).arg("-").arg("+").query_async(conn).await.unwrap();
    log_entries(to, &reply).iter().map(|entry| entry.seq).collect()
}

/// Every snapshot blob of a canvas, kept or expiring.
async fn blobs(conn: &mut MultiplexedConnection, to: &CanvasId) -> Vec<String> {
    let mut keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("relay:{{{to}}}:snap:*")).query_async(conn).await.unwrap();
    keys.sort();
    keys
}

#[tokio::test]
async fn snapshots_are_kept_with_their_seqs_time_and_size_and_listed_newest_first() {
    let Some(server) = Server::start() else { return };
    let store = server.store(60_000, HOUR_MS).await;
    let c = canvas("c");
    let times = ops(&store, &c, 3).await;
    let generation = store.read_canvas(&c, Want::head()).await.unwrap().head.unwrap().generation;
    for seq in 1..=3 {
        assert!(snapshot(&store, &c, generation, seq).await, "snapshot at {seq} kept");
    }
    assert!(!snapshot(&store, &c, generation, 2).await, "not newer than the newest: refused");
    assert!(!snapshot(&store, &c, generation + 1, 3).await, "another generation: refused");
    let versions = store.versions(&c, generation, u64::MAX, 10).await.unwrap();
    let expected: Vec<Version> = (1..=3)
        .rev()
        .map(|seq| Version { seq, ts: times[seq as usize], name: None, bytes: json(seq).len() as u64 })
        .collect();
    assert_eq!(versions, expected, "each with the commit time of its seq and its JSON's size");
    assert_eq!(seqs(&store.versions(&c, generation, 3, 1).await.unwrap()), [2], "below 3, one");
    assert!(store.versions(&c, generation + 1, u64::MAX, 10).await.unwrap().is_empty(), "another generation");
    let mut conn = server.connection().await;
    assert_eq!(ops_kept(&mut conn, &c).await, [1, 2, 3], "with history, the ops stay back to the floor, 0");
    assert_eq!(blobs(&mut conn, &c).await.len(), 3, "no refused blob is left");
}

#[tokio::test]
async fn a_read_at_a_seq_gets_the_nearest_snapshot_below_and_the_ops_after_it() {
    let Some(server) = Server::start() else { return };
    let store = server.store(60_000, HOUR_MS).await;
    let c = canvas("c");
    ops(&store, &c, 4).await;
    commit(&store, &c, "m").await; // seq 5: a plain message, no object op
    let (head, _) = commit(&store, &c, "o").await;
    assert_eq!(head.seq, 6);
    for seq in [2, 4] {
        assert!(snapshot(&store, &c, head.generation, seq).await);
    }
    assert_eq!(at(&store, &c, 3).await, (state(2), vec![3]));
    assert_eq!(at(&store, &c, 4).await, (state(4), vec![]));
    assert_eq!(at(&store, &c, 5).await, (state(4), vec![]), "a seq that is no object op: the state after it");
    assert_eq!(at(&store, &c, 6).await, (state(4), vec![6]));
    assert_eq!(at(&store, &c, 99).await, (state(4), vec![6]), "capped at the head");
    assert_eq!(at(&store, &c, 1).await, (None, vec![1]), "no snapshot below: the ops from the start");
    assert_eq!(at(&store, &c, 0).await, (None, vec![]));
    let read = store.read_at(&c, 3).await.unwrap();
    assert_eq!((read.head.unwrap().seq, read.floor), (6, 0));
    let unknown = store.read_at(&canvas("nobody"), 3).await.unwrap();
    assert!(unknown.head.is_none() && unknown.snapshot.is_none() && unknown.ops.is_empty());
}

#[tokio::test]
async fn without_retention_only_the_newest_snapshot_and_named_ones_are_kept() {
    let Some(server) = Server::start() else { return };
    let store = server.store(60_000, 0).await;
    let c = canvas("c");
    ops(&store, &c, 4).await;
    let generation = store.read_canvas(&c, Want::head()).await.unwrap().head.unwrap().generation;
    assert!(snapshot(&store, &c, generation, 1).await);
    assert_eq!(store.name_version(&c, generation, 2, "v2", json(2)).await.unwrap(), Named::Done);
    assert!(snapshot(&store, &c, generation, 3).await);
    let versions = store.versions(&c, generation, u64::MAX, 10).await.unwrap();
    assert_eq!(seqs(&versions), [3, 2], "the unnamed older one went, the named one stays");
    assert_eq!(versions[1].name.as_deref(), Some("v2"));
    let read = store.read_at(&c, 2).await.unwrap();
    assert_eq!(read.floor, 3, "the floor moved up to the newest snapshot");
    assert_eq!((read.snapshot.as_ref().map(|s| s.seq), op_seqs(&read)), (Some(2), vec![]), "a named state is kept");
    assert_eq!(at(&store, &c, 1).await, (None, vec![]), "below the floor: nothing to build it from");
    assert_eq!(at(&store, &c, 4).await, (state(3), vec![4]));
    let mut conn = server.connection().await;
    assert_eq!(ops_kept(&mut conn, &c).await, [4], "the ops the newest snapshot covers went");
    let dropped = keys::snapshot(&c, generation, 1, "");
    let expiring: Vec<String> = blobs(&mut conn, &c).await.into_iter().filter(|k| k.starts_with(&dropped)).collect();
    let ttl: i64 = redis::cmd("PTTL").arg(&expiring[0]).query_async(&mut conn).await.unwrap();
    assert!(ttl > 0, "the dropped snapshot stays readable a little longer for a reader that found it");
}

#[tokio::test]
async fn a_version_is_named_renamed_and_unnamed() {
    let Some(server) = Server::start() else { return };
    let store = server.store(60_000, HOUR_MS).await;
    let c = canvas("c");
    let times = ops(&store, &c, 3).await;
    let generation = store.read_canvas(&c, Want::head()).await.unwrap().head.unwrap().generation;
    assert!(snapshot(&store, &c, generation, 2).await);
    let named = |seq, name: &'static str| store.name_version(&c, generation, seq, name, json(seq + 100));
    assert_eq!(named(2, "first").await.unwrap(), Named::Done);
    assert_eq!(named(2, "renamed").await.unwrap(), Named::Done);
    assert_eq!(at(&store, &c, 2).await.0, state(2), "naming a kept snapshot keeps its state, not the new blob");
    assert_eq!(named(3, "head").await.unwrap(), Named::Done);
    assert_eq!(at(&store, &c, 3).await, (Some((3, r#"{"at":103}"#.to_owned())), vec![]), "a new snapshot");
    let read = store.read_canvas(&c, Want::all()).await.unwrap();
    assert_eq!(read.snapshot.map(|s| s.seq), Some(3), "the head's newest snapshot moved to it");
    assert_eq!(named(4, "ahead").await.unwrap(), Named::Moved, "past the head");
    let other = store.name_version(&c, generation + 1, 1, "x", json(1)).await.unwrap();
    assert_eq!(other, Named::Moved, "another generation");
    let versions = store.versions(&c, generation, u64::MAX, 10).await.unwrap();
    let listed: Vec<_> = versions.iter().map(|v| (v.seq, v.name.as_deref(), v.ts)).collect();
    assert_eq!(listed, [(3, Some("head"), times[3]), (2, Some("renamed"), times[2])]);
    assert!(store.unname_version(&c, generation, 2).await.unwrap());
    assert!(!store.unname_version(&c, generation, 2).await.unwrap(), "no name there any more");
    assert!(!store.unname_version(&c, generation, 1).await.unwrap(), "nothing there");
    assert!(!store.unname_version(&c, generation + 1, 3).await.unwrap(), "another generation");
    let versions = store.versions(&c, generation, u64::MAX, 10).await.unwrap();
    assert_eq!((seqs(&versions), versions[1].name.clone()), (vec![3, 2], None), "kept as an automatic one");
    let mut conn = server.connection().await;
    assert_eq!(blobs(&mut conn, &c).await.len(), 2, "the blobs of renames were not kept");
}

#[tokio::test]
async fn a_fork_refuses_a_canvas_that_exists_and_starts_a_new_generation_at_seq_0() {
    let Some(server) = Server::start() else { return };
    let store = server.store(60_000, HOUR_MS).await;
    let (taken, connected, fresh) = (canvas("taken"), canvas("connected"), canvas("fresh"));
    let (head, _) = commit(&store, &taken, "m").await;
    let fork = |objects| Fork { json: Bytes::from_static(br#"{"a":{"x":1}}"#), objects, bytes: 13 };
    assert_eq!(store.fork(&taken, fork(1)).await.unwrap(), None, "it has a seq");
    let mut conn = server.connection().await;
    let () =
        redis::cmd("HSET").arg("relay:{connected}:conns").arg("c1").arg("row").query_async(&mut conn).await.unwrap();
    assert_eq!(store.fork(&connected, fork(1)).await.unwrap(), None, "it has a connection");
    let epoch = store.fork(&fresh, fork(1)).await.unwrap().expect("a fresh canvas forks");
    let read = store.read_canvas(&fresh, Want::all()).await.unwrap();
    let forked = read.head.unwrap();
    assert!(forked.generation > head.generation, "a new generation");
    assert_eq!(epoch, crate::store::epoch(&store.store_epoch(), forked.generation));
    assert_eq!((forked.seq, forked.objects, forked.bytes), (0, 1, 13));
    assert_eq!(read.snapshot.map(|s| s.json), Some(fork(1).json), "joins read the fork's state");
    let versions = store.versions(&fresh, forked.generation, u64::MAX, 10).await.unwrap();
    assert_eq!((seqs(&versions), versions[0].bytes), (vec![0], 13));
    assert!(versions[0].ts > 0);
    let (read, _) = commit(&store, &fresh, "o").await;
    assert_eq!((read.generation, read.seq), (forked.generation, 1), "commits go on from seq 0");
    assert_eq!(store.fork(&fresh, fork(1)).await.unwrap(), None, "now it has a seq");
    let forgettable: Option<i64> =
        redis::cmd("ZSCORE").arg("relay:forget").arg("fresh").query_async(&mut conn).await.unwrap();
    assert_eq!(forgettable, None, "a fork with objects is kept");
    let mut writer = super::super::commit::RedisWriter::new(store.clone());
    let reset = writer.reset(&taken).await.unwrap();
    let empty = store.fork(&taken, fork(0)).await.unwrap().expect("a reset canvas at seq 0 forks");
    let head = store.read_canvas(&taken, Want::head()).await.unwrap().head.unwrap();
    assert!(head.generation > reset.generation && empty.ends_with(&format!("-{}", head.generation)));
    let forgettable: Option<i64> =
        redis::cmd("ZSCORE").arg("relay:forget").arg("taken").query_async(&mut conn).await.unwrap();
    assert!(forgettable.is_some(), "an empty fork may be forgotten like any empty canvas");
    assert!(store.read_log(&taken, head.generation, 0, 10, 10).await.unwrap().is_empty(), "no logged ops");
}

#[tokio::test]
async fn thinning_drops_unnamed_older_snapshots_and_raises_the_floor() {
    let Some(server) = Server::start() else { return };
    let store = server.store(60_000, HOUR_MS).await;
    let c = canvas("c");
    ops(&store, &c, 7).await;
    let generation = store.read_canvas(&c, Want::head()).await.unwrap().head.unwrap().generation;
    for seq in [2, 3, 4, 6] {
        assert!(snapshot(&store, &c, generation, seq).await);
    }
    assert_eq!(store.name_version(&c, generation, 3, "kept", json(3)).await.unwrap(), Named::Done);
    let due = store.history_due(i64::MAX, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].canvas.as_str(), due[0].generation, due[0].floor), ("c", generation, 0));
    assert_eq!(seqs(&due[0].versions), [2, 3, 4, 6], "oldest first");
    assert!(due[0].started > 0 && due[0].started <= due[0].versions[0].ts, "when the generation started");
    let other = Thinning { drop: vec![2, 4], floor: 5 };
    store.thin(&c, generation + 1, other).await.unwrap();
    assert_eq!(seqs(&store.versions(&c, generation, u64::MAX, 10).await.unwrap()), [6, 4, 3, 2], "other generation");
    store.thin(&c, generation, Thinning { drop: vec![2, 3, 6], floor: 5 }).await.unwrap();
    assert_eq!(seqs(&store.versions(&c, generation, u64::MAX, 10).await.unwrap()), [6, 4, 3], "named and newest stay");
    let mut conn = server.connection().await;
    assert_eq!(ops_kept(&mut conn, &c).await, [6, 7], "the ops below the floor went");
    let read = store.read_at(&c, 5).await.unwrap();
    assert_eq!((read.floor, read.snapshot.as_ref().map(|s| s.seq), op_seqs(&read)), (5, Some(4), vec![]), "not kept");
    assert_eq!(at(&store, &c, 4).await, (state(4), vec![]), "a kept snapshot's state is");
    assert_eq!(at(&store, &c, 7).await, (state(6), vec![7]));
    assert!(store.history_due(crate::clock::now_ms() - 60_000, 10).await.unwrap().is_empty(), "thinned just now");
    assert_eq!(store.history_due(i64::MAX, 10).await.unwrap()[0].floor, 5);
    store.thin(&c, generation, Thinning { drop: vec![], floor: 1 }).await.unwrap();
    assert_eq!(store.read_at(&c, 7).await.unwrap().floor, 5, "a floor is never lowered");
    store.thin(&c, generation, Thinning { drop: vec![], floor: 99 }).await.unwrap();
    assert_eq!(store.read_at(&c, 7).await.unwrap().floor, 6, "nor raised past the newest snapshot");
    assert!(store.history_due(i64::MAX, 10).await.unwrap().is_empty(), "nothing left to thin");
    assert!(snapshot(&store, &c, generation, 7).await);
    assert_eq!(seqs(&store.history_due(i64::MAX, 10).await.unwrap()[0].versions), [3, 4, 6, 7], "due again");
}

#[tokio::test]
async fn a_reset_starts_an_empty_history_and_a_named_version_keeps_a_canvas_from_being_forgotten() {
    let Some(server) = Server::start() else { return };
    let store = server.store(1, HOUR_MS).await;
    let (c, idle) = (canvas("c"), canvas("idle"));
    ops(&store, &c, 2).await;
    let generation = store.read_canvas(&c, Want::head()).await.unwrap().head.unwrap().generation;
    assert!(snapshot(&store, &c, generation, 1).await);
    assert_eq!(store.name_version(&c, generation, 2, "v", json(2)).await.unwrap(), Named::Done);
    let reset = super::super::commit::RedisWriter::new(store.clone()).reset(&c).await.unwrap();
    assert!(store.versions(&c, reset.generation, u64::MAX, 10).await.unwrap().is_empty());
    let mut conn = server.connection().await;
    assert!(blobs(&mut conn, &c).await.is_empty(), "every snapshot went, the named one too");
    assert_eq!((at(&store, &c, 0).await, store.read_at(&c, 0).await.unwrap().floor), ((None, vec![]), 0));
    assert!(store.history_due(i64::MAX, 10).await.unwrap().is_empty());

    let (head, _) = commit_with(&store, &idle, "m", Some(1)).await;
    assert_eq!(store.name_version(&idle, head.generation, 1, "keep me", json(1)).await.unwrap(), Named::Done);
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    store.clean_up().await.unwrap();
    assert!(store.read_canvas(&idle, Want::head()).await.unwrap().head.is_some(), "a named version keeps it");
    assert!(store.unname_version(&idle, head.generation, 1).await.unwrap());
    store.clean_up().await.unwrap();
    assert!(store.read_canvas(&idle, Want::head()).await.unwrap().head.is_none(), "forgotten once unnamed");
    assert!(blobs(&mut conn, &idle).await.is_empty(), "with its history");
    let left: Vec<String> = redis::cmd("KEYS").arg("relay:{idle}:*").query_async(&mut conn).await.unwrap();
    let left: Vec<_> = left.iter().filter(|key| !key.contains(":batch:")).collect(); // they expire on their own
    assert!(left.is_empty(), "{left:?}");
}

/// A head written before history: no floor (its ops were trimmed to its snapshot), a snapshot no index
/// holds, no generation start.
#[tokio::test]
async fn a_head_written_before_history_reads_with_its_floor_at_its_snapshot() {
    let Some(server) = Server::start() else { return };
    let store = server.store(60_000, HOUR_MS).await;
    let c = canvas("c");
    ops(&store, &c, 3).await;
    let generation = store.read_canvas(&c, Want::head()).await.unwrap().head.unwrap().generation;
    let mut conn = server.connection().await;
    let key = keys::snapshot(&c, generation, 2, "old");
    let () = redis::cmd("SET").arg(&key).arg(&json(2)[..]).query_async(&mut conn).await.unwrap();
    let head = keys::head(&c);
    let () =
        redis::cmd("HSET").arg(&head).arg("snap").arg(2).arg("snapkey").arg(&key).query_async(&mut conn).await.unwrap();
    let () = redis::cmd("HDEL").arg(&head).arg("hfrom").arg("genat").query_async(&mut conn).await.unwrap();
    let from = crate::store::redis::entry::stream_id(generation, 3);
    let _: i64 = redis::cmd("XTRIM").arg("relay:{c}:ops").arg("MINID").arg(from).query_async(&mut conn).await.unwrap();
    let () = redis::cmd("DEL").arg("relay:{c}:log").query_async(&mut conn).await.unwrap();
    let read = store.read_at(&c, 1).await.unwrap();
    assert_eq!((read.floor, read.snapshot.is_none(), read.ops.len()), (2, true, 0), "the ops before 2 are gone");
    assert_eq!(at(&store, &c, 3).await, (state(2), vec![3]));
    let versions = store.versions(&c, generation, u64::MAX, 10).await.unwrap();
    assert_eq!((seqs(&versions), versions[0].bytes), (vec![2], json(2).len() as u64), "its snapshot is listed");
    assert!(snapshot(&store, &c, generation, 3).await);
    assert_eq!(seqs(&store.versions(&c, generation, u64::MAX, 10).await.unwrap()), [3, 2]);
    assert_eq!(store.read_at(&c, 3).await.unwrap().floor, 2, "the floor stays at the old snapshot");
    assert_eq!(store.history_due(i64::MAX, 10).await.unwrap()[0].started, 0, "no generation start known");
}

#[tokio::test]
async fn a_restores_ops_carry_its_marker_in_every_read() {
    let Some(server) = Server::start() else { return };
    let store = server.store(60_000, HOUR_MS).await;
    let c = canvas("c");
    let (head, _) = commit(&store, &c, "omrr").await;
    let marked = |entries: &[crate::store::records::LogEntry]| {
        entries.iter().map(|entry| (entry.seq, entry.restore)).collect::<Vec<_>>()
    };
    let log = store.read_log(&c, head.generation, 0, 4, 10).await.unwrap();
    assert_eq!(marked(&log), [(1, false), (2, false), (3, true), (4, true)]);
    let read = store.read_canvas(&c, Want::all()).await.unwrap();
    assert_eq!(marked(&read.ops), [(1, false), (3, true), (4, true)], "object ops only");
    assert_eq!(head.version, 4, "a restore's ops change the objects");
    assert_eq!(marked(&store.read_at(&c, 3).await.unwrap().ops), [(1, false), (3, true)]);
}
