//! Unit tests of a room's ordering, acks, generations and slow-client policy.

use super::*;
use crate::hub::{outbox, Bounds, Inbox};
use crate::protocol::Cut;
use uuid::Uuid;

fn entry(seq: u64) -> Entry {
    Entry { seq, generation: 0, id: seq as i64 * 10, frame: Message::text(format!("m{seq}")), restore: false }
}

fn subscriber(conn: ConnId, start_after: u64, outbox: Outbox) -> Subscriber {
    Subscriber { conn, user: UserId::parse("u").unwrap(), name: None, opened: 0, generation: 0, start_after, outbox }
}

fn texts(inbox: &mut Inbox) -> Vec<String> {
    inbox.take_all().into_iter().map(|m| m.into_text().unwrap().to_string()).collect()
}

fn queue(frames: usize) -> (Outbox, Inbox) {
    outbox(Bounds { frames, bytes: 1 << 20, riding_bytes: 1 << 20 })
}

fn started_room(at: u64) -> (RoomState, Inbox, Metrics) {
    let mut state = RoomState::new();
    state.start_at(at, 0, &Metrics::default());
    let (outbox, inbox) = queue(64);
    state.subscribe(subscriber(Uuid::new_v4(), at, outbox));
    (state, inbox, Metrics::default())
}

#[test]
fn early_seqs_wait_for_the_missing_ones_then_flow_in_order() {
    let (mut room, mut inbox, metrics) = started_room(5);
    room.offer(entry(8), &metrics);
    room.offer(entry(7), &metrics);
    assert!(texts(&mut inbox).is_empty(), "6 is missing: nothing may be delivered yet");
    room.offer(entry(6), &metrics);
    assert_eq!(texts(&mut inbox), ["m6", "m7", "m8"]);
    assert_eq!(room.delivered(), 8);
}

#[test]
fn a_seq_is_delivered_once_whoever_offers_it() {
    let (mut room, mut inbox, metrics) = started_room(0);
    room.offer(entry(1), &metrics);
    room.offer(entry(1), &metrics);
    room.offer(entry(2), &metrics);
    room.offer(entry(1), &metrics);
    assert_eq!(texts(&mut inbox), ["m1", "m2"]);
}

#[test]
fn the_sender_gets_an_ack_and_the_others_the_message() {
    let metrics = Metrics::default();
    let mut room = RoomState::new();
    room.start_at(0, 0, &metrics);
    let (sender_box, mut sender) = queue(8);
    let (other_box, mut other) = queue(8);
    let sender_id = Uuid::new_v4();
    room.subscribe(subscriber(sender_id, 0, sender_box));
    room.subscribe(subscriber(Uuid::new_v4(), 0, other_box));
    room.expect_ack(0, 1, AckTo { conn: sender_id, reference: Some("r1".into()) });
    room.offer(entry(1), &metrics);
    assert_eq!(texts(&mut sender), [r#"{"type":"ack","seq":1,"ref":"r1"}"#]);
    assert_eq!(texts(&mut other), ["m1"]);
}

#[test]
fn a_new_subscriber_skips_what_its_welcome_covered() {
    let (mut room, mut first, metrics) = started_room(0);
    let (late_box, mut late) = queue(8);
    room.subscribe(subscriber(Uuid::new_v4(), 2, late_box));
    for seq in 1..=3 {
        room.offer(entry(seq), &metrics);
    }
    assert_eq!(texts(&mut first), ["m1", "m2", "m3"]);
    assert_eq!(texts(&mut late), ["m3"]);
}

#[test]
fn an_unstarted_room_keeps_offers_until_its_start_then_drops_what_the_snapshot_covered() {
    let mut room = RoomState::new();
    let metrics = Metrics::default();
    for seq in [2, 3, 5, 4] {
        assert_eq!(room.offer(entry(seq), &metrics), 0);
    }
    assert!(!room.has_pending());
    room.start_at(3, 0, &metrics);
    let (outbox, mut inbox) = queue(8);
    room.subscribe(subscriber(Uuid::new_v4(), 3, outbox));
    assert_eq!(room.delivered(), 5, "4 and 5 came in while the snapshot at 3 was read");
    assert!(texts(&mut inbox).is_empty(), "delivered before the subscriber came: its snapshot covers them");
    room.offer(entry(6), &metrics);
    assert_eq!(texts(&mut inbox), ["m6"]);
}

#[test]
fn an_offer_made_twice_before_the_start_is_kept_once() {
    let mut room = RoomState::new();
    let metrics = Metrics::default();
    room.offer(entry(4), &metrics);
    room.offer_stored(entry(4), &metrics);
    assert_eq!(room.early.len(), 1);
    room.start_at(3, 0, &metrics);
    assert_eq!(room.delivered(), 4);
}

#[test]
fn a_room_whose_start_never_comes_closes_rather_than_grow_without_bound() {
    let mut room = RoomState::new();
    let metrics = Metrics::default();
    for seq in 1..=MAX_EARLY as u64 + 1 {
        room.offer(entry(seq), &metrics);
    }
    assert!(room.is_closed());
    assert!(room.early.is_empty());
}

#[test]
fn overflow_cuts_the_slow_subscriber_and_spares_the_others() {
    let metrics = Metrics::default();
    let mut room = RoomState::new();
    room.start_at(0, 0, &metrics);
    let (slow_box, slow) = queue(16);
    let (fast_box, mut fast) = queue(64);
    room.subscribe(subscriber(Uuid::new_v4(), 0, slow_box));
    room.subscribe(subscriber(Uuid::new_v4(), 0, fast_box));
    for seq in 1..=20 {
        room.offer(entry(seq), &metrics);
    }
    assert_eq!(room.subscribers.len(), 1, "the slow one is gone");
    assert_eq!(texts(&mut fast).len(), 20);
    // notify_one stored a permit: the session's next wait for a kick completes at once.
    assert_eq!(futures_util::FutureExt::now_or_never(slow.cut()), Some(Cut::Slow));
}

#[test]
fn settle_skips_a_hole_that_can_no_longer_fill_and_cuts_subscribers() {
    let (mut room, inbox, metrics) = started_room(5);
    room.offer(entry(9), &metrics); // id 90
    assert_eq!(room.settle(50, &metrics), Settled::Ok, "rows up to id 50 read: 6..8 may still come");
    assert_eq!(room.settle(90, &metrics), Settled::GapSkipped { from: 6, to: 8 });
    assert_eq!(room.delivered(), 9);
    assert!(room.subscribers.is_empty());
    assert_eq!(futures_util::FutureExt::now_or_never(inbox.cut()), Some(Cut::Gap), "cut for the gap, not as slow");
}

fn in_generation(mut entry: Entry, generation: u64) -> Entry {
    entry.generation = generation;
    entry
}

#[test]
fn a_reset_marker_starts_the_new_generation_and_its_seq_1_is_not_taken_for_the_old_one() {
    let (mut room, mut inbox, metrics) = started_room(0);
    room.offer(entry(1), &metrics);
    room.expect_ack(1, 1, AckTo { conn: Uuid::new_v4(), reference: None });
    // The new generation's seq 2 arrives before its marker (a local commit): dropped, the watcher offers
    // it again after the marker.
    room.offer(in_generation(entry(2), 1), &metrics);
    assert_eq!(texts(&mut inbox), ["m1"]);
    let marker = Entry { seq: 0, generation: 1, id: 50, frame: Message::text("reset"), restore: false };
    room.offer(marker, &metrics);
    room.offer(entry(2), &metrics); // old generation: ignored
    room.offer(in_generation(entry(1), 1), &metrics);
    room.offer(in_generation(entry(2), 1), &metrics);
    assert_eq!(texts(&mut inbox), ["reset", "m1", "m2"]);
    assert_eq!((room.generation(), room.delivered()), (1, 2));
    assert!(room.acks.is_empty(), "the ack of generation 1 seq 1 went to its (absent) sender");
}

#[test]
fn a_subscriber_who_joined_in_the_new_generation_gets_no_reset_and_no_old_rows() {
    let (mut room, mut old, metrics) = started_room(4);
    let (new_box, mut new) = queue(8);
    room.subscribe(Subscriber { generation: 1, ..subscriber(Uuid::new_v4(), 1, new_box) });
    room.offer(entry(5), &metrics);
    room.offer(Entry { seq: 0, generation: 1, id: 60, frame: Message::text("reset"), restore: false }, &metrics);
    room.offer(in_generation(entry(1), 1), &metrics);
    room.offer(in_generation(entry(2), 1), &metrics);
    assert_eq!(texts(&mut old), ["m5", "reset", "m1", "m2"]);
    assert_eq!(texts(&mut new), ["m2"]);
}
