//! Unit tests of a client's two-lane queue: the bounds of the logged lane, coalescing on the ephemeral lane,
//! flush order, and the reasons a client is cut.

use futures_util::FutureExt;
use uuid::Uuid;

use super::*;

fn bounds(frames: usize) -> Bounds {
    Bounds { frames, bytes: 1 << 20, riding_bytes: 1 << 20 }
}

fn texts(frames: Vec<Message>) -> Vec<String> {
    frames.into_iter().map(|m| m.into_text().unwrap().to_string()).collect()
}

#[test]
fn a_full_logged_lane_cuts_the_client_as_slow_and_ephemeral_frames_never_do() {
    let (outbox, inbox) = outbox(bounds(2));
    let sender = Uuid::new_v4();
    assert!(outbox.push(Message::text("1")));
    assert!(outbox.push(Message::text("2")));
    for x in 0..100 {
        outbox.push_ephemeral(sender, Message::text(format!("c{x}")));
    }
    assert!(inbox.kicked().now_or_never().is_none(), "ephemeral frames never cut");
    assert!(!outbox.push(Message::text("3")));
    assert_eq!(inbox.cut().now_or_never(), Some(Cut::Slow));
    assert!(!outbox.push(Message::text("4")), "a client being cut takes nothing more");
}

#[test]
fn a_restores_frames_count_as_one_entry_however_they_arrive_and_what_follows_is_bounded_as_ever() {
    let (outbox, inbox) = outbox(Bounds { frames: 3, bytes: 1000, riding_bytes: 1 << 20 });
    assert!(outbox.push(Message::text("before")));
    let restore = (0..50).map(|n| (Message::text(format!("r{n}-{}", "x".repeat(40))), true));
    assert_eq!(outbox.push_run(restore.clone().take(20)), Some(20), "past both bounds, counted as one");
    assert_eq!(outbox.push_run(restore.skip(20)), Some(30), "its next frames ride on it, offered apart");
    assert!(outbox.push(Message::text("after")), "before + restore + after: three entries");
    assert!(!outbox.push(Message::text("one too many")), "then the bound holds as ever");
    assert_eq!(inbox.cut().now_or_never(), Some(Cut::Slow));

    let (again, inbox) = super::outbox(Bounds { frames: 3, bytes: 1000, riding_bytes: 1 << 20 });
    let restore = |n: usize| (0..n).map(|i| (Message::text(format!("r{i}")), true));
    assert_eq!(again.push_run(restore(10)), Some(10));
    assert_eq!(inbox.take_flush(8, usize::MAX).len(), 8, "a flush writes part of it");
    let pushed = ["a", "b", "c"].map(|text| again.push(Message::text(text)));
    assert_eq!(pushed, [true; 3], "once its first frame is written, what is left of a restore rides whole");
    assert!(!again.push(Message::text("d")), "three counted: the bound holds");
}

#[test]
fn each_restore_counts_once_and_what_rides_is_bounded_too() {
    let restore = |n: usize| (0..n).map(|i| (Message::text(format!("r{i}")), true));
    let (queue, inbox) = outbox(Bounds { frames: 3, bytes: 1000, riding_bytes: 1 << 20 });
    let outbox = queue;
    assert_eq!(outbox.push_run(restore(10)), Some(10), "one entry");
    assert!(outbox.push(Message::text("between")), "two");
    assert_eq!(outbox.push_run(restore(10)), Some(10), "three: a frame between, so its first counts");
    assert_eq!(outbox.push_run(restore(1)), Some(1), "it rides on the one before");
    assert!(!outbox.push(Message::text("four")), "past 3");
    assert_eq!(inbox.cut().now_or_never(), Some(Cut::Slow));

    let (outbox, inbox) = super::outbox(Bounds { frames: 3, bytes: 1 << 20, riding_bytes: 100 });
    let pushed = outbox.push_run((0..100).map(|i| (Message::text(format!("{i:08}")), true)));
    assert_eq!(pushed, None, "restores back to back to a client that reads nothing: past what may ride, cut");
    assert_eq!(inbox.cut().now_or_never(), Some(Cut::Slow));
}

#[test]
fn the_logged_lane_is_bounded_by_bytes_too() {
    let (outbox, inbox) = outbox(Bounds { frames: 1000, bytes: 1000, riding_bytes: 1 << 20 });
    assert!(outbox.push(Message::text("x".repeat(800))));
    assert!(!outbox.push(Message::text("x".repeat(200))), "800 + 200 + overhead is past 1000 bytes");
    assert_eq!(inbox.cut().now_or_never(), Some(Cut::Slow));
}

#[test]
fn draining_frees_room_in_both_bounds() {
    let (outbox, inbox) = outbox(Bounds { frames: 2, bytes: 1000, riding_bytes: 1 << 20 });
    for _ in 0..10 {
        assert!(outbox.push(Message::text("x".repeat(400))));
        assert_eq!(inbox.take_flush(64, 64 * 1024).len(), 1);
    }
}

#[test]
fn only_the_latest_ephemeral_frame_of_each_sender_waits() {
    let (outbox, inbox) = outbox(bounds(8));
    let (ann, bob) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(outbox.push_ephemeral(ann, Message::text("a1")), Ephemeral::Queued);
    assert_eq!(outbox.push_ephemeral(bob, Message::text("b1")), Ephemeral::Queued);
    assert_eq!(outbox.push_ephemeral(ann, Message::text("a2")), Ephemeral::Coalesced);
    assert_eq!(texts(inbox.take_flush(64, 1 << 16)), ["a2", "b1"]);
}

#[test]
fn events_wait_in_order_beside_cursors_are_never_replaced_and_are_dropped_past_the_bound() {
    let (outbox, inbox) = outbox(bounds(8));
    let ann = Uuid::new_v4();
    assert_eq!(outbox.push_event(Message::text("e1")), Ephemeral::Queued);
    assert_eq!(outbox.push_ephemeral(ann, Message::text("c1")), Ephemeral::Queued);
    assert_eq!(outbox.push_event(Message::text("e2")), Ephemeral::Queued);
    assert_eq!(outbox.push_ephemeral(ann, Message::text("c2")), Ephemeral::Coalesced, "a cursor, not an event");
    assert_eq!(texts(inbox.take_flush(64, 1 << 16)), ["e1", "c2", "e2"]);
    let big = "x".repeat(MAX_EPHEMERAL_BYTES / 2);
    assert_eq!(outbox.push_event(Message::text(big.clone())), Ephemeral::Queued);
    assert_eq!(outbox.push_event(Message::text(big)), Ephemeral::Dropped, "past the lane's bytes");
    assert!(inbox.kicked().now_or_never().is_none(), "never a cut");
}

#[test]
fn a_flush_takes_logged_frames_first_then_the_ephemeral_ones() {
    let (outbox, inbox) = outbox(bounds(100));
    let ann = Uuid::new_v4();
    outbox.push_ephemeral(ann, Message::text("cursor"));
    for n in 0..5 {
        outbox.push(Message::text(format!("m{n}")));
    }
    assert_eq!(
        texts(inbox.take_flush(3, 1 << 16)),
        ["m0", "m1", "m2", "cursor"],
        "a cursor is never ahead of a message"
    );
    assert_eq!(texts(inbox.take_flush(3, 1 << 16)), ["m3", "m4"]);
}

#[test]
fn a_flush_stops_at_its_byte_budget_but_always_takes_one_frame() {
    let (outbox, inbox) = outbox(bounds(100));
    outbox.push(Message::text("x".repeat(100)));
    outbox.push(Message::text("y"));
    assert_eq!(inbox.take_flush(64, 10).len(), 1);
    assert_eq!(inbox.take_flush(64, 10).len(), 1);
}

#[test]
fn draining_releases_the_buffer_a_burst_grew() {
    let (outbox, inbox) = outbox(bounds(1000));
    for i in 0..500 {
        assert!(outbox.push(Message::text(i.to_string())));
    }
    assert!(inbox.channel.queue().logged.capacity() >= 500);
    while !inbox.take_flush(64, 1 << 16).is_empty() {}
    assert!(inbox.channel.queue().logged.capacity() <= KEEP_CAPACITY);
}

#[tokio::test]
async fn ready_wakes_on_a_push_from_another_task() {
    let (outbox, inbox) = outbox(bounds(4));
    let pusher = tokio::spawn(async move {
        tokio::task::yield_now().await;
        outbox.push_ephemeral(Uuid::new_v4(), Message::text("late"))
    });
    inbox.ready().await;
    assert_eq!(texts(inbox.take_all()), ["late"]);
    assert_eq!(pusher.await.unwrap(), Ephemeral::Queued);
}

#[test]
fn the_first_reason_to_cut_is_the_one_reported() {
    let (outbox, inbox) = outbox(bounds(4));
    outbox.kick(Cut::Gap);
    outbox.kick(Cut::Slow);
    assert_eq!(inbox.cut().now_or_never(), Some(Cut::Gap));
}

#[test]
fn pushes_after_the_session_is_gone_report_it() {
    let (outbox, inbox) = outbox(bounds(4));
    drop(inbox);
    assert!(!outbox.push(Message::text("x")));
    assert_eq!(outbox.push_ephemeral(Uuid::new_v4(), Message::text("c")), Ephemeral::Dropped);
}

#[test]
fn waiting_ephemeral_frames_are_bounded_by_bytes_too() {
    let (outbox, inbox) = outbox(bounds(8));
    let big = "c".repeat(60 * 1024);
    let pushed: Vec<Ephemeral> =
        (0..6).map(|_| outbox.push_ephemeral(Uuid::new_v4(), Message::text(big.clone()))).collect();
    assert_eq!(&pushed[..4], [Ephemeral::Queued; 4]);
    assert_eq!(pushed[5], Ephemeral::Dropped, "past 256 KiB of waiting cursors");
    assert!(inbox.kicked().now_or_never().is_none());
    let first = inbox.take_flush(64, 64 * 1024);
    assert_eq!(first.len(), 2, "a flush takes ephemeral frames within its bytes too");
    assert_eq!(outbox.push_ephemeral(Uuid::new_v4(), Message::text(big)), Ephemeral::Queued, "room again");
}
