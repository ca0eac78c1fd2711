//! The Redis store's scripts run directly on a real `redis-server`, without a relay: the guarantees of the
//! scripts themselves, which a relay's traffic reaches only by chance of timing. `commit.lua`: a batch is
//! checked whole before anything is written; a batch sent again is answered as it was, not applied twice; a
//! batch for another store epoch is not applied; a claimed key that is taken is answered, not applied; a
//! head that moved (or a canvas forgotten and created again) is answered with what is new since the seq the
//! fold knew; a survivor's expiry spares a connection whose instance is alive. Cleanup's scripts say when
//! more is due. (What Redis failing does to a running relay is in `redis.rs`.)

mod helpers;

use helpers::RedisServer;
use redis::aio::MultiplexedConnection;
use redis::Value;

/// One canvas's part of a batch (see the header of `commit.lua`).
#[derive(Clone)]
struct Part {
    canvas: &'static str,
    /// `None`: an append.
    expect: Option<u64>,
    known: (u64, u64),
    /// type, data, changes objects
    entries: Vec<(&'static str, &'static str, bool)>,
    conns: Vec<ConnArg>,
    /// user, key, entry
    keys: Vec<(&'static str, &'static str, usize)>,
}

/// A connection write of a part.
#[derive(Clone)]
enum ConnArg {
    /// conn, user, instance
    Put(&'static str, &'static str, &'static str),
    /// conn, user, instance, unless its instance had a heartbeat within this many ms
    Remove(&'static str, &'static str, &'static str, Option<i64>),
}

impl Part {
    fn append(canvas: &'static str, data: &'static str) -> Part {
        Part { canvas, expect: None, known: (0, 0), entries: vec![("note", data, false)], conns: vec![], keys: vec![] }
    }

    fn guarded(
        canvas: &'static str,
        rev: u64,
        known: (u64, u64),
        entries: Vec<(&'static str, &'static str, bool)>,
    ) -> Part {
        Part { canvas, expect: Some(rev), known, entries, conns: vec![], keys: vec![] }
    }

    fn args(&self) -> Vec<String> {
        let mut args = vec![self.canvas.to_owned(), self.expect.map_or_else(String::new, |rev| rev.to_string())];
        args.extend([self.known.0, self.known.1, 10, 1, self.conns.len() as u64, 1].map(|n| n.to_string()));
        args.push(String::new());
        args.extend([self.entries.len(), self.conns.len(), self.keys.len()].map(|n| n.to_string()));
        for (kind, data, changes) in &self.entries {
            args.extend([*kind, "u", *data, "", "", if *changes { "1" } else { "0" }].map(str::to_owned));
        }
        for write in &self.conns {
            args.extend(match *write {
                ConnArg::Put(conn, user, instance) => ["p", conn, instance, user, "", "1"].map(str::to_owned),
                ConnArg::Remove(conn, user, instance, within) => {
                    let within = within.map_or_else(String::new, |ms| ms.to_string());
                    ["r".into(), conn.into(), instance.into(), user.into(), String::new(), within]
                }
            });
        }
        for (user, key, entry) in &self.keys {
            args.extend([user.to_string(), key.to_string(), entry.to_string()]);
        }
        args
    }
}

/// An EVAL of `commit.lua` (after the helpers every script shares) for one batch of instance `i1`: the store
/// epoch to take on an empty store (`candidate`), the one the batch is for (`known`, '' for none), the batch
/// number, then the parts.
fn commit(candidate: &str, known: &str, batch: u64, parts: &[Part]) -> redis::Cmd {
    let script = format!(
        "#!lua\n{}\n{}",
        include_str!("../src/store/redis/lua/common.lua"),
        include_str!("../src/store/redis/lua/commit.lua")
    );
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(0).arg("i1").arg(batch).arg(known).arg(candidate).arg(60_000).arg(60_000);
    for part in parts {
        cmd.arg(part.args());
    }
    cmd
}

async fn run(conn: &mut MultiplexedConnection, batch: u64, parts: &[Part]) -> Vec<Value> {
    commit("epoch", "", batch, parts).query_async(conn).await.unwrap()
}

async fn length(conn: &mut MultiplexedConnection, key: &str) -> u64 {
    redis::cmd("XLEN").arg(key).query_async(conn).await.unwrap()
}

/// A part's answer as text: its tag and the numbers or texts after it (arrays left out).
fn answer(reply: &[Value], part: usize) -> Vec<String> {
    let Value::Array(items) = &reply[4 + part] else { panic!("{reply:?}") };
    items
        .iter()
        .filter_map(|item| match item {
            Value::BulkString(text) => Some(String::from_utf8(text.clone()).unwrap()),
            Value::Int(n) => Some(n.to_string()),
            _ => None,
        })
        .collect()
}

/// `commit.lua` checks a whole batch before it writes: a malformed part anywhere fails the batch with
/// nothing applied (Redis does not roll a script back). The same batch sent twice is applied once and
/// answered the same.
#[tokio::test]
async fn a_batch_is_checked_whole_applied_at_most_once_and_answered_as_it_was() {
    let Some(redis) = RedisServer::start(false).await else { return };
    let mut conn = redis.connection().await;
    let mut bad = Part::append("c2", "2");
    bad.keys.push(("u", "k", 5)); // names an entry the part does not have
    let refused: redis::RedisResult<Value> =
        commit("epoch", "", 1, &[Part::append("c1", "1"), bad]).query_async(&mut conn).await;
    assert!(refused.is_err());
    let head: Option<u64> = redis::cmd("HGET").arg("relay:{c1}:head").arg("seq").query_async(&mut conn).await.unwrap();
    assert_eq!(head, None, "the good first part was not applied either");

    let parts = [Part::append("c1", "1"), Part::guarded("c2", 0, (0, 0), vec![("object-create", "{}", true)])];
    let first = run(&mut conn, 2, &parts).await;
    let again = run(&mut conn, 2, &parts).await;
    assert_eq!((answer(&first, 0), answer(&first, 1)), (answer(&again, 0), answer(&again, 1)), "the same answers");
    assert_eq!(answer(&first, 1)[..4], ["p", "2", "1", "1"], "placed: generation 2, seq 1, rev 1");
    assert_eq!((length(&mut conn, "relay:{c1}:log").await, length(&mut conn, "relay:{c2}:log").await), (1, 1));
    assert_eq!(length(&mut conn, "relay:{c2}:ops").await, 1, "the object op in the ops stream too");
    let later = run(&mut conn, 3, &parts[..1]).await;
    assert_eq!(answer(&later, 0)[2], "2", "a later batch appends: seq 2");
}

/// A batch is for the store epoch its instance knew: sent (again) to a Redis that came back empty, it is not
/// logged into a log its senders never saw. The reply is the store's epoch alone.
#[tokio::test]
async fn a_batch_for_another_store_epoch_is_not_applied() {
    let Some(redis) = RedisServer::start(false).await else { return };
    let mut conn = redis.connection().await;
    let part = [Part::append("c1", "1")];
    let first: Vec<Value> = commit("old", "", 1, &part).query_async(&mut conn).await.unwrap();
    assert_eq!(first[1], Value::BulkString(b"old".to_vec()), "an empty store takes the candidate epoch");
    let () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    let again: Vec<String> = commit("new", "old", 1, &part).query_async(&mut conn).await.unwrap();
    assert_eq!(again, ["epoch", "new"], "the new epoch, nothing applied");
    assert_eq!(length(&mut conn, "relay:{c1}:log").await, 0, "the batch sent again was not logged in the new epoch");
    let current: Vec<Value> = commit("unused", "new", 2, &part).query_async(&mut conn).await.unwrap();
    assert_eq!(answer(&current, 0)[2], "1", "a batch for the epoch in force is applied: seq 1 of the new log");
}

/// A claimed idempotency key that an entry holds already: the part is answered with the key and its seq,
/// and nothing of it is written.
#[tokio::test]
async fn a_claimed_key_that_is_taken_is_answered_not_applied() {
    let Some(redis) = RedisServer::start(false).await else { return };
    let mut conn = redis.connection().await;
    let mut keyed = Part::guarded("c", 0, (0, 0), vec![("note", "1", false)]);
    keyed.keys.push(("ann", "k1", 0));
    assert_eq!(answer(&run(&mut conn, 1, &[keyed.clone()]).await, 0)[..4], ["p", "1", "1", "1"]);
    let mut repeat = Part::guarded("c", 1, (1, 1), vec![("note", "2", false), ("note", "3", false)]);
    repeat.keys.push(("ann", "k1", 1));
    assert_eq!(answer(&run(&mut conn, 2, &[repeat]).await, 0), ["k", "1", "ann", "k1", "1"]);
    assert_eq!(length(&mut conn, "relay:{c}:log").await, 1, "neither entry of the part was written");
    let rev: u64 = redis::cmd("HGET").arg("relay:{c}:head").arg("rev").query_async(&mut conn).await.unwrap();
    assert_eq!(rev, 1, "nor the head");
}

/// A guarded part whose head moved is answered with the head, the object ops after the seq the fold knew
/// and the connections; when the ops since are no longer all kept (a snapshot past that seq, or another
/// generation), with "read it whole". Nothing of it is written.
#[tokio::test]
async fn a_head_that_moved_is_answered_with_what_is_new() {
    let Some(redis) = RedisServer::start(false).await else { return };
    let mut conn = redis.connection().await;
    let mut first = Part::guarded("c", 0, (0, 0), vec![("object-create", r#"{"id":"a"}"#, true)]);
    first.conns.push(ConnArg::Put("0b4c3f5e-1111-4222-8333-944455566677", "ann", "i1"));
    run(&mut conn, 1, &[first]).await;
    run(&mut conn, 2, &[Part::append("c", "note")]).await;
    run(&mut conn, 3, &[Part::guarded("c", 1, (1, 2), vec![("object-delete", r#"{"id":"a"}"#, true)])]).await;
    let stale = Part::guarded("c", 1, (1, 1), vec![("object-create", r#"{"id":"b"}"#, true)]);
    let reply = run(&mut conn, 4, std::slice::from_ref(&stale)).await;
    assert_eq!(
        answer(&reply, 0),
        ["s", "1", "3", "2", "3", "10", "1", "0", "1"],
        "the head now, as the last fold staged it"
    );
    let Value::Array(items) = &reply[4] else { panic!() };
    let (Value::Array(ops), Value::Array(conns)) = (&items[9], &items[10]) else { panic!("{items:?}") };
    assert_eq!(ops.len(), 1, "the delete at seq 3: the note at seq 2 is no object op");
    assert_eq!(conns.len(), 2, "ann's connection row");
    assert_eq!(length(&mut conn, "relay:{c}:log").await, 3, "nothing of the stale part was written");

    let () = redis::cmd("HSET").arg("relay:{c}:head").arg("snap").arg(2).query_async(&mut conn).await.unwrap();
    assert_eq!(
        answer(&run(&mut conn, 5, &[stale]).await, 0),
        ["w"],
        "ops since seq 1 not all kept past a snapshot at 2"
    );
    let other = Part::guarded("c", 1, (9, 3), vec![("object-create", r#"{"id":"b"}"#, true)]);
    assert_eq!(answer(&run(&mut conn, 6, &[other]).await, 0), ["w"], "another generation");
}

/// A canvas forgotten and created again starts its rev over in a new generation: a fold that knew the old
/// one at the same rev is answered with "read it whole", not applied over a state it never saw.
#[tokio::test]
async fn a_head_of_another_generation_at_the_same_rev_is_news() {
    let Some(redis) = RedisServer::start(false).await else { return };
    let mut conn = redis.connection().await;
    run(&mut conn, 1, &[Part::guarded("old", 0, (0, 0), vec![("object-create", r#"{"id":"a"}"#, true)])]).await;
    let placed =
        run(&mut conn, 2, &[Part::guarded("c", 0, (0, 0), vec![("object-create", r#"{"id":"b"}"#, true)])]).await;
    assert_eq!(answer(&placed, 0)[..4], ["p", "2", "1", "1"], "canvas c: generation 2, seq 1, rev 1");
    let stale = Part::guarded("c", 1, (1, 1), vec![("object-delete", r#"{"id":"a"}"#, true)]);
    assert_eq!(answer(&run(&mut conn, 3, &[stale]).await, 0), ["w"], "rev 1 of generation 1 is not rev 1 of 2");
    assert_eq!(length(&mut conn, "relay:{c}:log").await, 1, "nothing written");
}

/// A survivor's expiry of a connection is applied only if the connection's instance has had no heartbeat
/// within the time the expiry allows: one that came back keeps it (the part is answered with the spared
/// connection, and nothing of it is written); one still silent loses it.
#[tokio::test]
async fn a_survivors_expiry_spares_a_connection_whose_instance_came_back() {
    let Some(redis) = RedisServer::start(false).await else { return };
    let mut conn = redis.connection().await;
    const TAB: &str = "0b4c3f5e-1111-4222-8333-944455566677";
    let mut connect = Part::guarded("c", 0, (0, 0), vec![("user-connected", "null", false)]);
    connect.conns.push(ConnArg::Put(TAB, "ann", "i2"));
    run(&mut conn, 1, &[connect]).await;
    let mut expire = Part::guarded("c", 1, (1, 1), vec![("user-disconnected", "null", false)]);
    expire.conns.push(ConnArg::Remove(TAB, "ann", "i2", Some(10_000)));
    let reply = run(&mut conn, 2, std::slice::from_ref(&expire)).await;
    assert_eq!(answer(&reply, 0), ["k", "0", TAB], "i2 registered the connection just now: spared");
    assert_eq!(length(&mut conn, "relay:{c}:log").await, 1, "nothing written");
    let () = redis::cmd("HSET").arg("relay:instances").arg("i2").arg(5).query_async(&mut conn).await.unwrap();
    let reply = run(&mut conn, 3, &[expire]).await;
    assert_eq!(answer(&reply, 0)[..3], ["p", "1", "2"], "i2 silent since long ago: expired, seq 2");
    let rows: u64 = redis::cmd("HLEN").arg("relay:{c}:conns").query_async(&mut conn).await.unwrap();
    assert_eq!(rows, 0);
}

/// An instance that registers a connection is in `relay:instances`, where survivors look for instances to
/// expire, even when it was forgotten there meanwhile (its heartbeat was late): if it dies, its connections
/// are found. A heartbeat already there is left as it is.
#[tokio::test]
async fn an_instance_that_registers_a_connection_is_one_survivors_know() {
    let Some(redis) = RedisServer::start(false).await else { return };
    let mut conn = redis.connection().await;
    let mut connect = Part::guarded("c", 0, (0, 0), vec![("user-connected", "null", false)]);
    connect.conns.push(ConnArg::Put("0b4c3f5e-1111-4222-8333-944455566677", "ann", "i1"));
    run(&mut conn, 1, &[connect]).await;
    let beat: Option<i64> = redis::cmd("HGET").arg("relay:instances").arg("i1").query_async(&mut conn).await.unwrap();
    assert!(beat.is_some_and(|beat| beat > 0), "registered with Redis's time: {beat:?}");
    let () = redis::cmd("HSET").arg("relay:instances").arg("i1").arg(5).query_async(&mut conn).await.unwrap();
    let mut another = Part::guarded("c", 1, (1, 1), vec![]);
    another.conns.push(ConnArg::Put("0b4c3f5e-1111-4222-8333-944455566678", "bob", "i1"));
    run(&mut conn, 2, &[another]).await;
    let beat: i64 = redis::cmd("HGET").arg("relay:instances").arg("i1").query_async(&mut conn).await.unwrap();
    assert_eq!(beat, 5, "a heartbeat there is the instance's own to write");
}

/// An EVAL of one of the store's scripts (after the helpers every script shares).
fn script(text: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(format!("#!lua\n{}\n{text}", include_str!("../src/store/redis/lua/common.lua"))).arg(0);
    cmd
}

/// Cleanup's trim of the logs looks at a bounded number of canvases per call, and says when more may be
/// due, so that the caller calls again in the same cleanup: 70 canvases due are all trimmed in two calls,
/// not 64 now and the rest a cleanup interval later.
#[tokio::test]
async fn a_trim_of_the_logs_says_when_more_canvases_are_due() {
    let Some(redis) = RedisServer::start(false).await else { return };
    let mut conn = redis.connection().await;
    let mut pipe = redis::pipe();
    for n in 0..70 {
        let log = format!("relay:{{c{n}}}:log");
        pipe.cmd("XADD").arg(&log).arg("2-1").arg("ts").arg(1).arg("s").arg(1).ignore();
        pipe.cmd("ZADD").arg("relay:trim").arg(0).arg(format!("c{n}")).ignore();
    }
    let () = pipe.query_async(&mut conn).await.unwrap();
    let trim = || script(include_str!("../src/store/redis/lua/trim_logs.lua")).arg(1000).arg(0).arg(1000).clone();
    let first: (u64, u64) = trim().query_async(&mut conn).await.unwrap();
    assert_eq!(first, (64, 1), "64 canvases looked at, and more may be due");
    let second: (u64, u64) = trim().query_async(&mut conn).await.unwrap();
    assert_eq!(second, (6, 0), "the rest, and nothing more");
    let due: u64 = redis::cmd("ZCARD").arg("relay:trim").query_async(&mut conn).await.unwrap();
    assert_eq!(due, 0, "every log emptied leaves the index");
}
