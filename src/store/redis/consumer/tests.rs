//! Tests of the consumers' store on Redis: reading the log's replies, and `save_position.lua` against a real
//! `redis-server` (skipped, saying so, with `RELAY_SKIP_REDIS_TESTS=1`).

use super::*;
use crate::store::redis::entry::bulk;
use crate::store::redis::testing::Server;

/// An entry of `relay:stream` as `log_everywhere` writes it.
fn global(id: &str, canvas: &str, seq: u64) -> Value {
    let seq = seq.to_string();
    let fields = ["ts", "1700", "canvas", canvas, "g", "3", "s", &seq, "t", "note", "f", "ann", "d", "{}"];
    Value::Array(vec![bulk(id), Value::Array(fields.iter().map(|f| bulk(f)).collect())])
}

fn reply(head: &str, trimmed: &str, entries: Vec<Value>) -> Value {
    Value::Array(vec![bulk(head), bulk(trimmed), Value::Array(entries)])
}

#[test]
fn positions_are_stream_ids_as_redis_reads_them() {
    assert_eq!(position("0"), Some((0, 0)));
    assert_eq!(position("1733400000000-7"), Some((1_733_400_000_000, 7)));
    assert_eq!(position("18446744073709551615-18446744073709551615"), Some((u64::MAX, u64::MAX)));
    for bad in ["", "-", "1-", "-1", "1-2-3", "+", "$", "1.5", " 1", "1-x", "18446744073709551616"] {
        assert_eq!(position(bad), None, "{bad:?}");
    }
}

#[test]
fn an_entry_of_the_log_of_every_canvas_reads_back() {
    let (position, entry) = parse_logged(&global("1700-2", "c1", 5)).unwrap();
    assert_eq!((position.as_str(), entry.canvas.as_str(), entry.generation, entry.seq), ("1700-2", "c1", 3, 5));
    assert_eq!((entry.kind.as_str(), entry.from.as_str(), entry.data.get(), entry.ts), ("note", "ann", "{}", 1700));
    assert!(!entry.is_reset());
    assert!(parse_logged(&Value::Array(vec![bulk("1-0"), Value::Array(vec![])])).is_none());
}

#[test]
fn a_reader_before_the_newest_trimmed_id_has_a_gap_and_no_other_does() {
    let entries = || vec![global("200-0", "c1", 2), global("200-1", "c2", 1)];
    let (head, page) = log_page(&reply("200-1", "150-3", entries()), (100, 0)).unwrap();
    assert_eq!(head, "200-1");
    assert_eq!(page.oldest.as_deref(), Some("200-0"), "the gap goes on from the first entry left");
    assert_eq!(page.entries.len(), 2);
    let (_, page) = log_page(&reply("200-1", "150-3", entries()), (150, 3)).unwrap();
    assert_eq!(page.oldest, None, "a reader at the newest trimmed id missed nothing");
    let (_, page) = log_page(&reply("200-1", "150-3", vec![]), (150, 2)).unwrap();
    assert_eq!(page.oldest.as_deref(), Some("200-1"), "nothing left after it: on from the head");
    let (_, page) = log_page(&reply("0-0", "0-0", vec![]), (0, 0)).unwrap();
    assert_eq!(page.oldest, None, "an empty log has no gap");
    assert!(log_page(&Value::Nil, (0, 0)).is_none());
}

fn at(generation: u64, seq: u64, inflight: Option<u64>) -> Position {
    Position { generation, seq, inflight }
}

/// `save_position.lua`'s answer for `holder` saving `position` over `expected` in canvas `c`.
async fn save(
    conn: &mut redis::aio::MultiplexedConnection,
    holder: &str,
    expected: Option<Position>,
    position: Position,
) -> i64 {
    let text = |p: Option<u64>| p.map_or_else(String::new, |p| p.to_string());
    let mut invocation = SAVE_POSITION.prepare_invoke();
    invocation.arg("c").arg("webhook:3").arg(holder);
    match expected {
        Some(e) => invocation.arg("1").arg(e.generation).arg(e.seq).arg(text(e.inflight)),
        None => invocation.arg("0").arg("").arg("").arg(""),
    };
    invocation.arg(position.generation).arg(position.seq).arg(text(position.inflight));
    invocation.invoke_async(conn).await.unwrap()
}

/// A save writes only over the position Redis holds, and only by the lease's holder: a holder whose view is
/// stale is refused and writes nothing.
#[tokio::test]
async fn a_position_is_saved_only_over_the_one_redis_holds_and_only_by_the_leaseholder() {
    let Some(server) = Server::start() else { return };
    let mut conn = server.connection().await;
    let () = redis::cmd("SET").arg("relay:lease:webhook:3").arg("a").query_async(&mut conn).await.unwrap();
    for (expected, position, answer) in [
        (None, at(1, 3, None), 1),
        (Some(at(1, 3, None)), at(1, 3, Some(6)), 1),
        (Some(at(1, 3, None)), at(1, 7, None), -1),
        (None, at(1, 9, None), -1),
        (Some(at(1, 3, Some(6))), at(1, 6, None), 1),
    ] {
        assert_eq!(save(&mut conn, "a", expected, position).await, answer, "saving {position:?} over {expected:?}");
    }
    let stored: (u64, u64, Option<u64>) = redis::cmd("HMGET")
        .arg(keys::webhook(&CanvasId::parse("c").unwrap()))
        .arg(&["g", "s", "p"][..])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored, (1, 6, None), "nothing refused was written");
    assert_eq!(save(&mut conn, "b", Some(at(1, 6, None)), at(1, 9, None)).await, 0, "only the lease's holder saves");
}
