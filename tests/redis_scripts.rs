//! `publish.lua` run directly on a real `redis-server`, without a relay: the guarantees of the script itself,
//! which a relay's traffic reaches only by chance of timing. A batch is checked whole before anything is
//! written and applied at most once; a batch for another store epoch is not applied; an idempotency key
//! repeated within a batch or after it is a duplicate of the first. (What Redis failing does to a running
//! relay is in `redis.rs`.)

mod helpers;

use helpers::RedisServer;

/// An EVAL of `publish.lua` (after the helpers every script shares) for one batch: the store epoch to take on
/// an empty store (`candidate`), the one the batch is for (`known`, '' for none), the batch number, then each
/// message's 12 fields (see the script's header).
fn publish_eval(candidate: &str, known: &str, batch: u32, messages: &[[String; 12]]) -> redis::Cmd {
    let script = format!(
        "#!lua\n{}\n{}",
        include_str!("../src/bus/redis/lua/common.lua"),
        include_str!("../src/bus/redis/lua/publish.lua")
    );
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(0).arg(60_000).arg("i1").arg(candidate).arg(batch).arg(1 << 20).arg(known).arg(0);
    for message in messages {
        cmd.arg(&message[..]);
    }
    cmd
}

/// `publish.lua` checks a whole batch before it writes: a malformed message anywhere fails the batch with
/// nothing applied (Redis does not roll a script back). And the same batch sent twice is applied once.
#[tokio::test]
async fn a_batch_is_applied_whole_or_not_at_all_and_at_most_once() {
    let Some(redis) = RedisServer::start(false).await else { return };
    let message =
        |canvas: &str, data: &str| ["log", canvas, "note", "u", data, "", "", "", "", "0", "0", ""].map(str::to_owned);
    let run = |batch: u32, messages: Vec<[String; 12]>| publish_eval("epoch", "", batch, &messages);
    let mut conn = redis.connection().await;
    let mut bad = message("c2", "2");
    bad[0] = "bogus".into();
    let refused: redis::RedisResult<redis::Value> = run(1, vec![message("c1", "1"), bad]).query_async(&mut conn).await;
    assert!(refused.is_err());
    let head: Option<u64> = redis::cmd("HGET").arg("relay:{c1}:head").arg("seq").query_async(&mut conn).await.unwrap();
    assert_eq!(head, None, "the good first message was not applied either");

    let first: Vec<String> = run(2, vec![message("c1", "1")]).query_async(&mut conn).await.unwrap();
    let again: Vec<String> = run(2, vec![message("c1", "1")]).query_async(&mut conn).await.unwrap();
    assert_eq!(first[3..], again[3..], "the same outcome (seq, generation)");
    let length: u64 = redis::cmd("XLEN").arg("relay:{c1}:log").query_async(&mut conn).await.unwrap();
    assert_eq!(length, 1, "applied once");
}

/// A batch is for the store epoch its instance knew: sent (again) to a Redis that came back empty, it is not
/// logged into a log its senders never saw. The reply is the store's epoch alone.
#[tokio::test]
async fn a_batch_for_another_store_epoch_is_not_applied() {
    let Some(redis) = RedisServer::start(false).await else { return };
    let message = ["log", "c1", "note", "u", "1", "", "", "", "", "0", "0", ""].map(str::to_owned);
    let run = |candidate: &str, known: &str, batch: u32| {
        publish_eval(candidate, known, batch, std::slice::from_ref(&message))
    };
    let mut conn = redis.connection().await;
    let first: Vec<String> = run("old", "", 1).query_async(&mut conn).await.unwrap();
    assert_eq!(first[0], "old", "an empty store takes the candidate epoch");
    let () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    let again: Vec<String> = run("new", "old", 1).query_async(&mut conn).await.unwrap();
    assert_eq!(again, ["new"], "the new epoch, nothing applied");
    let length: u64 = redis::cmd("XLEN").arg("relay:{c1}:log").query_async(&mut conn).await.unwrap();
    assert_eq!(length, 0, "the batch sent again was not logged in the new epoch");
    let current: Vec<String> = run("unused", "new", 2).query_async(&mut conn).await.unwrap();
    assert_eq!(current[3], "1", "a batch for the epoch in force is applied: seq 1 of the new log");
}

/// `publish.lua`'s idempotency keys: on a canvas that has no head yet, a key repeated in the same batch and
/// in a later one is answered `-3` with the original seq, and logged once; another user's same key is its own.
#[tokio::test]
async fn a_repeated_key_in_a_batch_or_after_it_is_a_duplicate_of_the_first() {
    let Some(redis) = RedisServer::start(false).await else { return };
    let keyed =
        |user: &str, data: &str| ["log", "fresh", "note", user, data, "", "", "", "", "0", "0", "k"].map(str::to_owned);
    let mut conn = redis.connection().await;
    let outcomes = |reply: Vec<String>| reply[3..].iter().map(|n| n.parse::<i64>().unwrap()).collect::<Vec<_>>();
    let first: Vec<String> =
        publish_eval("e", "", 1, &[keyed("u", "1"), keyed("u", "2")]).query_async(&mut conn).await.unwrap();
    assert_eq!(outcomes(first), [1, 1, -3, 1], "seq 1 in generation 1, then a duplicate of seq 1 in the same batch");
    let later: Vec<String> =
        publish_eval("e", "", 2, &[keyed("u", "3"), keyed("v", "4")]).query_async(&mut conn).await.unwrap();
    assert_eq!(outcomes(later), [-3, 1, 2, 1], "a later batch: still seq 1; another user's key logs seq 2");
    let length: u64 = redis::cmd("XLEN").arg("relay:{fresh}:log").query_async(&mut conn).await.unwrap();
    assert_eq!(length, 2);
}
