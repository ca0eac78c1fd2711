//! How connections and processes end: a slow client is cut with 4009 and resumes without a gap; SIGTERM
//! drains (every accepted message committed and acked, close 1001, exit 0); SIGKILL after acks loses nothing.

#[macro_use]
mod helpers;

use std::collections::BTreeSet;

use helpers::{SharedFile, Store};
use serde_json::json;

on_both_buses!(a_client_that_stops_reading_is_cut_with_4009_resumes_and_the_others_carry_on);
async fn a_client_that_stops_reading_is_cut_with_4009_resumes_and_the_others_carry_on(store: Store) {
    let file = &store;
    // No rate limit: this test floods on purpose, from a client the limiter would otherwise slow down.
    // --max-in-flight: at most --client-queue / 2, so this client's own acks always fit its queue.
    let a = file
        .start(&["--client-queue", "16", "--max-in-flight", "8", "--write-timeout", "30s", "--rate-limit", "0"])
        .await;
    let mut slow = a.connect("slow", "snail").await;
    let mut fast = a.connect("slow", "hare").await;
    let mut writer = a.connect("slow", "writer").await;
    fast.skip_presence(writer.seq()).await;
    let epoch = writer.epoch();
    // Enough bytes to fill the socket buffers between the server and a client that does not read.
    let total = 1500u64;
    let blob = "z".repeat(16 * 1024);
    // The writer keeps at most 8 messages in flight, so only a client that stops reading can overflow.
    let sending = tokio::spawn(async move {
        let mut last_ack = 0;
        for window in (0..total).collect::<Vec<_>>().chunks(8) {
            for n in window {
                writer.publish("blob", json!({"n": n, "pad": blob}), "r").await;
            }
            for _ in window {
                // Snail's leaving (when it is cut) is logged among the blobs.
                let frame = loop {
                    let frame = writer.recv().await;
                    if frame["type"] != "user-disconnected" {
                        break frame;
                    }
                };
                assert_eq!(frame["type"], "ack");
                last_ack = frame["seq"].as_u64().unwrap();
            }
        }
        last_ack
    });
    // The reading client gets every blob, gap-free, while they are sent.
    let (mut blobs, mut next) = (0, fast.seq() + 1);
    while blobs < total {
        let frame = fast.recv().await;
        let Some(seq) = frame["seq"].as_u64() else { continue };
        assert_eq!(seq, next, "gap or reorder");
        next += 1;
        blobs += u64::from(frame["type"] == "blob");
    }
    let last_ack = sending.await.unwrap();

    // The slow client now reads: some messages, in order, then close 4009.
    let (code, frames) = slow.recv_until_close().await;
    assert_eq!(code, Some(4009));
    let seqs: Vec<u64> = frames.iter().filter_map(|f| f["seq"].as_u64()).collect();
    assert!((seqs.len() as u64) < total, "it was cut before the end");
    let first = slow.seq() + 1;
    assert_eq!(seqs, (first..first + seqs.len() as u64).collect::<Vec<_>>(), "what it got was gap-free");

    // Counted once, as slow (it was counted twice, and gaps and new epochs were counted as slow too). The
    // second count came when the session finished closing, after up to 2 s waiting for the close reply: so
    // the counts are read once snail's session (and the writer's, whose client is gone) has ended.
    helpers::eventually("the sessions of snail and the writer to end", || async {
        a.metric("relay_connections").await == 1.0
    })
    .await;
    assert_eq!(a.metric(r#"relay_clients_cut_total{reason="slow"}"#).await, 1.0);
    assert_eq!(a.metric("relay_clients_cut_slow_total").await, 1.0);
    assert_eq!(a.metric(r#"relay_canvas_cuts_total{canvas="slow",reason="slow"}"#).await, 1.0);
    let last = seqs.last().copied().unwrap_or(slow.seq());
    let mut back = a.resume("slow", "snail", last, &epoch).await;
    assert_eq!(back.welcome["resumed"], true);
    let (rest, _) = back.read_through(last_ack).await;
    assert_eq!(rest.len() as u64, last_ack - last, "resume catches up with no gap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_commits_and_acks_everything_accepted_then_closes_1001_and_exits_0() {
    let file = SharedFile::new();
    let mut a = file.start(&["--rate-limit", "0"]).await;
    let b = file.start(&[]).await;
    let mut client = a.connect("drain", "ann").await;
    let sent = 400u64;
    for n in 0..sent {
        client.publish("note", json!({"n": n}), &format!("{n}")).await;
    }
    a.signal("TERM");
    let (code, frames) = client.recv_until_close().await;
    assert_eq!(code, Some(1001));
    assert_eq!(a.wait().await, Some(0), "clean exit");

    let acked: BTreeSet<u64> =
        frames.iter().filter(|f| f["type"] == "ack").map(|f| f["ref"].as_str().unwrap().parse().unwrap()).collect();
    let errors = frames.iter().filter(|f| f["type"] == "error").count();
    assert!(!acked.is_empty());
    let mut stored = BTreeSet::new();
    let conn = file.open();
    let mut stmt =
        conn.prepare("SELECT payload FROM message_queue WHERE canvas_id = 'drain' AND message_type = 'note'").unwrap();
    for payload in stmt.query_map([], |r| r.get::<_, String>(0)).unwrap() {
        let data: serde_json::Value = serde_json::from_str(&payload.unwrap()).unwrap();
        stored.insert(data["n"].as_u64().unwrap());
    }
    assert_eq!(stored, acked, "exactly the acked messages are committed: none lost, none committed unacked");
    assert!(acked.len() + errors <= sent as usize);
    assert_eq!(file.count("SELECT count(*) FROM instances"), 1, "the stopped instance deregistered");

    // Everything acked is readable from the surviving instance.
    let mut reader = b.resume("drain", "bob", 0, &client.epoch()).await;
    assert_eq!(reader.welcome["resumed"], true);
    // Seq 1 is ann's user-connected; the notes follow it.
    let (seen, _) = reader.read_through(1 + acked.len() as u64).await;
    assert_eq!(seen[0].1.kind(), "user-connected");
    assert!(seen[1..].iter().all(|(_, m)| m.kind() == "note"));
}

on_both_buses!(sigkill_after_acks_loses_nothing_and_its_clients_resume_on_the_survivor);
async fn sigkill_after_acks_loses_nothing_and_its_clients_resume_on_the_survivor(store: Store) {
    let file = &store;
    let mut a = file.start(&[]).await;
    let b = file.start(&[]).await;
    let mut writer = a.connect("kill", "ann").await;
    let mut watcher = b.connect("kill", "bob").await;
    writer.skip_presence(watcher.seq()).await;
    let (epoch, base) = (writer.epoch(), writer.seq());
    let total = 200u64;
    for n in 0..total {
        writer.publish("note", json!({"n": n}), "r").await;
    }
    let (acks, _) = writer.read_through(base + total).await;
    assert_eq!(acks.len() as u64, total);
    a.kill().await;

    let (seen, _) = watcher.read_through(base + total).await;
    assert_eq!(seen.len() as u64, total, "the survivor's client got every acked message");
    let mut resumed = b.resume("kill", "ann", base, &epoch).await;
    assert_eq!(resumed.welcome["resumed"], true, "the killed instance's client resumes on the survivor");
    let (replay, _) = resumed.read_through(base + total).await;
    let ns: Vec<u64> = replay.iter().map(|(_, s)| s.data()["n"].as_u64().unwrap()).collect();
    assert_eq!(ns, (0..total).collect::<Vec<_>>());
}
