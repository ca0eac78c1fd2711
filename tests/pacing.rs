//! A connection's cursors and presence states, paced to `--max-cursor-rate` (v1 "Ephemeral messages", v1.1
//! "Presence state"): coalesced, so a reader may miss some, but never out of order, and the last a reader
//! gets from a sender, on the sender's instance or another, is the sender's latest. `relay.rs` has the
//! coalescing itself, `presence_state.rs` what presence states are.

#[macro_use]
mod helpers;

use std::collections::{BTreeMap, BTreeSet};

use futures_util::future::join_all;
use futures_util::StreamExt;
use helpers::{Client, Store, WAIT};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// Rounds of a flood, each ending with a latest that every reader must get and nothing older after it.
const ROUNDS: u64 = 10;

/// Cursors and presence states each sender floods with in a round.
const FLOOD: u64 = 100;

/// What one reader got from the senders: (frame type, sender) -> every `n` in arrival order.
type Got = BTreeMap<(String, String), Vec<u64>>;

/// Reads `reader`'s cursors and presence states until it has `n == upto` of both kinds from every sender
/// (frames of anyone else are skipped), adding them to `got`. Fails with what it got if a frame takes longer
/// than [`WAIT`].
async fn read_until(reader: &mut Client, who: &str, senders: &[String], upto: u64, got: &mut Got) {
    let kinds = ["cursor", "presence"];
    let missing = |got: &Got| -> BTreeSet<(String, String)> {
        let wanted = kinds.iter().flat_map(|kind| senders.iter().map(move |from| (kind.to_string(), from.clone())));
        wanted.filter(|key| !got.get(key).is_some_and(|ns| ns.contains(&upto))).collect()
    };
    while !missing(got).is_empty() {
        let text = match tokio::time::timeout(WAIT, reader.ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => text,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => {
                let last: Vec<_> = got.iter().map(|(key, ns)| (key, ns.last())).collect();
                panic!("{who} never got n = {upto} from {:?} ({other:?}); the last of each: {last:?}", missing(got));
            }
        };
        let frame: Value = serde_json::from_str(&text).expect("JSON");
        let (Some(kind), Some(from)) = (frame["type"].as_str(), frame["from"].as_str()) else { continue };
        if kinds.contains(&kind) && senders.iter().any(|sender| sender == from) {
            let n = frame["data"]["n"].as_u64().unwrap_or_else(|| panic!("{who}: {frame}"));
            got.entry((kind.to_owned(), from.to_owned())).or_default().push(n);
        }
    }
}

on_both_buses!(the_last_cursor_and_presence_state_each_reader_gets_from_a_sender_is_its_latest);
async fn the_last_cursor_and_presence_state_each_reader_gets_from_a_sender_is_its_latest(store: Store) {
    // A short slot, so that a flood sent at once keeps each sender's connection holding one now and then
    // while its next comes in: where the loop reads the next before it releases the held one, the held one
    // must never follow.
    let flags = ["--max-cursor-rate", "1000"];
    let (a, b) = (store.start(&flags).await, store.start(&flags).await);
    let mut readers = vec![("a reader on the senders' instance", a.connect("c1", "reader-a").await)];
    readers.push(("a reader on the other instance", b.connect("c1", "reader-b").await));
    let senders: Vec<String> = (0..4).map(|n| format!("sender-{n}")).collect();
    let mut clients = Vec::new();
    for sender in &senders {
        clients.push(a.connect("c1", sender).await);
    }

    let mut got = vec![Got::new(), Got::new()];
    for round in 0..ROUNDS {
        let first = round * FLOOD;
        join_all(clients.iter_mut().map(|client| async move {
            for n in first..first + FLOOD {
                client.send(json!({"type": "cursor", "data": {"n": n}})).await;
                client.send(json!({"type": "presence", "data": {"n": n}})).await;
            }
        }))
        .await;
        // Every reader gets every sender's latest. A held one goes within a slot, long before every reader
        // has it (the other instance's through a cursor batch): the next round comes after anything older.
        for ((who, reader), got) in readers.iter_mut().zip(&mut got) {
            read_until(reader, who, &senders, first + FLOOD - 1, got).await;
        }
    }
    let marker = ROUNDS * FLOOD;
    for client in &mut clients {
        client.send(json!({"type": "cursor", "data": {"n": marker}})).await;
        client.send(json!({"type": "presence", "data": {"n": marker}})).await;
    }
    for ((who, reader), got) in readers.iter_mut().zip(&mut got) {
        read_until(reader, who, &senders, marker, got).await;
        for ((kind, from), ns) in got.iter() {
            assert!(ns.windows(2).all(|w| w[0] < w[1]), "{who}: {from}'s {kind}s out of order: {ns:?}");
        }
    }
}
