use serde_json::value::RawValue;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::*;
use crate::protocol::{CanvasId, LoggedMessage};

fn rules() -> Rules {
    Rules { max_state: 1 << 20, instance: "i1".into(), forget_after: 60_000, forget_after_history: 600_000 }
}

fn message(kind: &str, data: &str, key: Option<&str>, user: &str) -> Publish {
    let mut message = LoggedMessage::new(kind, RawValue::from_string(data.into()).unwrap(), None).unwrap();
    message.idempotency_key = key.map(|k| IdempotencyKey::parse(k).unwrap());
    let (canvas, from) = (CanvasId::parse("c").unwrap(), UserId::parse(user).unwrap());
    Publish::message(canvas, message, from, Origin::Caller(oneshot::channel().0))
}

fn presence(change: PresenceChange, user: &str, conn: Uuid, name: Option<&str>) -> Publish {
    let (canvas, user) = (CanvasId::parse("c").unwrap(), UserId::parse(user).unwrap());
    let opened = crate::clock::opened_now();
    Publish::leaving(crate::hub::Member { canvas, conn, user, name: name.map(str::to_owned), opened }, change)
}

/// Stages `publishes` on `canvas` and, as a store would, takes the result as the canvas's new state.
fn commit(canvas: &mut Canvas, publishes: &[Publish]) -> Staging {
    let staging = canvas.stage(&publishes.iter().collect::<Vec<_>>(), &Told::default(), &rules());
    *canvas = staging.after.clone();
    canvas.head.seq += staging.entries.len() as u64;
    staging
}

#[test]
fn plain_messages_are_appended_without_a_check() {
    let canvas = Canvas::default();
    let publishes = [message("note", "1", None, "u"), message("chat", r#"{"t":"hi"}"#, None, "u")];
    let staging = canvas.stage(&publishes.iter().collect::<Vec<_>>(), &Told::default(), &rules());
    assert_eq!(staging.expect, Expect::Append);
    assert_eq!(staging.forget_after, Some(60_000), "a canvas an append creates is forgotten once idle");
    assert_eq!(staging.outcomes, [Staged::Logged { entry: 0 }, Staged::Logged { entry: 1 }]);
    assert_eq!(staging.entries, [(0, false), (1, false)]);
}

#[test]
fn object_ops_are_judged_in_order_against_the_canvas_the_ones_before_left() {
    let mut canvas = Canvas::default();
    canvas.head.rev = 7;
    let publishes = [
        message("object-update", r#"{"id":"a","x":1}"#, None, "u"),
        message("object-create", r#"{"id":"a","x":0}"#, None, "u"),
        message("note", "1", None, "u"),
        message("object-update", r#"{"id":"a","x":2}"#, None, "u"),
        message("object-delete", r#"{"id":"b"}"#, None, "u"),
    ];
    let staging = commit(&mut canvas, &publishes);
    assert_eq!(staging.expect, Expect::Rev(7), "guarded by the head the fold knew");
    assert!(matches!(&staging.outcomes[0], Staged::Refused(Refusal::Missing { id }) if id == "a"));
    assert!(matches!(&staging.outcomes[4], Staged::Refused(Refusal::Missing { id }) if id == "b"));
    assert_eq!(staging.entries, [(1, true), (2, false), (3, true)]);
    assert_eq!(canvas.objects.get("a"), Some(r#"{"id":"a","x":2}"#));
    assert_eq!((canvas.head.objects, canvas.head.bytes), (1, canvas.objects.bytes()));
    assert_eq!(staging.forget_after, None, "a canvas with objects is kept");
}

#[test]
fn a_key_logged_before_or_earlier_in_the_commit_logs_nothing() {
    let canvas = Canvas::default();
    let publishes = [
        message("object-create", r#"{"id":"a"}"#, Some("k1"), "ann"),
        message("object-create", r#"{"id":"b"}"#, Some("k1"), "ann"),
        message("object-create", r#"{"id":"c"}"#, Some("k1"), "bob"),
        message("note", "1", Some("old"), "ann"),
    ];
    let mut told = Told::default();
    told.keys.insert((UserId::parse("ann").unwrap(), IdempotencyKey::parse("old").unwrap()), 3);
    let staging = canvas.stage(&publishes.iter().collect::<Vec<_>>(), &told, &rules());
    let want = [Staged::Logged { entry: 0 }, Staged::Repeats { entry: 0 }, Staged::Logged { entry: 1 }];
    assert_eq!(staging.outcomes[..3], want, "keys are per user");
    assert_eq!(staging.outcomes[3], Staged::Duplicate { seq: 3 });
    assert!(staging.after.objects.get("b").is_none(), "a repeat is not folded");
    let claims: Vec<(&str, Option<usize>)> = staging.keys.iter().map(|k| (k.user.as_str(), k.entry)).collect();
    assert_eq!(claims, [("ann", Some(0)), ("bob", Some(1))]);
}

/// A keyed op the state refuses may be the resend of one that was logged (its ack lost with a crashed
/// instance): a delete of what it deleted. Its key is checked; taken, the op is a duplicate, not an error.
#[test]
fn a_keyed_op_the_state_refuses_is_a_duplicate_when_its_key_was_logged() {
    let mut canvas = Canvas::default();
    commit(&mut canvas, &[message("object-create", r#"{"id":"a"}"#, None, "ann")]);
    commit(&mut canvas, &[message("object-delete", r#"{"id":"a"}"#, Some("del"), "ann")]);
    let resent = [message("object-delete", r#"{"id":"a"}"#, Some("del"), "ann")];
    let staging = canvas.stage(&resent.iter().collect::<Vec<_>>(), &Told::default(), &rules());
    assert!(matches!(staging.outcomes[0], Staged::Refused(_)));
    let checked: Vec<Option<usize>> = staging.keys.iter().map(|k| k.entry).collect();
    assert_eq!(checked, [None], "checked, not claimed");
    let mut told = Told::default();
    told.keys.insert((UserId::parse("ann").unwrap(), IdempotencyKey::parse("del").unwrap()), 2);
    let staging = canvas.stage(&resent.iter().collect::<Vec<_>>(), &told, &rules());
    assert_eq!(staging.outcomes, [Staged::Duplicate { seq: 2 }]);
    assert!(staging.keys.is_empty() && staging.entries.is_empty());
}

#[test]
fn presence_logs_a_users_first_and_last_connection_and_counts_every_one() {
    let mut canvas = Canvas::default();
    let (tab1, tab2) = (Uuid::new_v4(), Uuid::new_v4());
    let staging = commit(
        &mut canvas,
        &[
            presence(PresenceChange::Connect, "ann", tab1, Some("Ann")),
            presence(PresenceChange::Connect, "ann", tab2, None),
        ],
    );
    assert_eq!(staging.outcomes, [Staged::Logged { entry: 0 }, Staged::Unlogged { changed: true }]);
    assert_eq!(staging.conns.len(), 2);
    assert_eq!((canvas.head.connections, canvas.head.users), (2, 1));
    assert_eq!(canvas.presence.name_of("ann"), Some("Ann"));
    let again = commit(&mut canvas, &[presence(PresenceChange::Connect, "ann", tab2, None)]);
    assert_eq!(again.outcomes, [Staged::Unlogged { changed: false }]);
    assert!(!again.writes_anything(), "nothing to write: the store only checks the head");
    let staging = commit(
        &mut canvas,
        &[
            presence(PresenceChange::Disconnect, "ann", tab1, Some("Ann")),
            presence(PresenceChange::Expire { dead_after_ms: 9000 }, "ann", tab2, None),
            presence(PresenceChange::Disconnect, "ann", tab2, None),
        ],
    );
    let want = [Staged::Unlogged { changed: true }, Staged::Logged { entry: 0 }, Staged::Unlogged { changed: false }];
    assert_eq!(staging.outcomes, want);
    assert_eq!(staging.forget_after, Some(60_000), "no objects and no connections: forgotten once idle");
}

#[test]
fn what_moved_under_a_commit_is_folded_in() {
    let mut canvas = Canvas { head: Head { generation: 3, seq: 5, rev: 2, ..Head::default() }, ..Canvas::default() };
    let entry = |seq: u64, kind: &str, data: &str| LogEntry {
        canvas: CanvasId::parse("c").unwrap(),
        generation: 3,
        seq,
        kind: kind.into(),
        from: "bob".into(),
        data: RawValue::from_string(data.into()).unwrap(),
        ts: 0,
        id: seq as i64,
        instance: "i2".into(),
        conn: None,
        reference: None,
        restore: false,
    };
    let since = |generation: u64| Moved::Since {
        head: Head { generation, seq: 7, rev: 3, objects: 1, ..Head::default() },
        ops: vec![entry(5, "object-create", r#"{"id":"old"}"#), entry(6, "object-create", r#"{"id":"x"}"#)],
        conns: Vec::new(),
    };
    assert!(canvas.clone().absorb(since(4)).is_err(), "a reset meanwhile: the store sends the canvas whole");
    canvas.absorb(since(3)).unwrap();
    assert_eq!(canvas.objects.get("x"), Some(r#"{"id":"x"}"#));
    assert_eq!(canvas.objects.get("old"), None, "ops it had folded already are skipped");
    assert_eq!(canvas.head.rev, 3);
    let whole = CanvasRead {
        head: Some(Head { generation: 4, seq: 1, ..Head::default() }),
        snapshot: Some(crate::store::SnapshotRead { seq: 0, json: bytes::Bytes::from_static(br#"{"s":{"id":"s"}}"#) }),
        ops: vec![LogEntry { generation: 4, ..entry(1, "object-update", r#"{"id":"s","v":1}"#) }],
        conns: Vec::new(),
    };
    canvas.absorb(Moved::Whole(whole)).unwrap();
    assert_eq!(&canvas.objects.to_json()[..], br#"{"s":{"id":"s","v":1}}"#);
}

#[test]
fn a_survivors_expiry_of_a_connection_whose_instance_is_alive_changes_nothing() {
    let mut canvas = Canvas::default();
    let tab = Uuid::new_v4();
    commit(&mut canvas, &[presence(PresenceChange::Connect, "ann", tab, None)]);
    let expiry = [presence(PresenceChange::Expire { dead_after_ms: 9000 }, "ann", tab, None)];
    let staging = canvas.stage(&expiry.iter().collect::<Vec<_>>(), &Told::default(), &rules());
    let Some(ConnWrite::Remove { unless_alive_within, .. }) = staging.conns.first() else { panic!("a removal") };
    assert_eq!(*unless_alive_within, Some(9000), "the store checks the instance is still silent");
    let mut told = Told::default();
    told.spared.insert(tab);
    let staging = canvas.stage(&expiry.iter().collect::<Vec<_>>(), &told, &rules());
    assert_eq!(staging.outcomes, [Staged::Unlogged { changed: false }]);
    assert!(!staging.writes_anything());
}

/// A canvas read without its objects stages presence changes and keyed messages as a whole one would: the
/// head keeps the counts it was read with, so the commit writes the objects' size and number unchanged.
#[test]
fn a_canvas_read_without_its_objects_keeps_its_heads_counts_through_presence_and_keys() {
    let mut whole = Canvas::default();
    commit(&mut whole, &[message("object-create", r#"{"id":"a","x":1}"#, None, "u")]);
    let (bytes, objects) = (whole.head.bytes, whole.head.objects);
    assert!(bytes > 0 && objects == 1);
    let read = CanvasRead { head: Some(whole.head), ..CanvasRead::default() };
    let mut partial = Canvas::without_objects(read);
    let ann = Uuid::new_v4();
    let staging = commit(
        &mut partial,
        &[presence(PresenceChange::Connect, "ann", ann, None), message("note", "1", Some("k1"), "ann")],
    );
    assert_eq!(staging.outcomes, [Staged::Logged { entry: 0 }, Staged::Logged { entry: 1 }]);
    assert_eq!((partial.head.bytes, partial.head.objects, partial.head.connections), (bytes, objects, 1));
    let staging = commit(&mut partial, &[presence(PresenceChange::Disconnect, "ann", ann, None)]);
    assert_eq!(staging.forget_after, None, "its objects are still there: not an empty canvas");
}

#[test]
fn a_canvas_emptied_of_its_objects_is_forgotten_only_once_its_history_has_expired() {
    let mut canvas = Canvas::default();
    let staging = commit(&mut canvas, &[message("object-create", r#"{"id":"a"}"#, None, "u")]);
    assert_eq!(staging.forget_after, None);
    canvas.head.version = canvas.head.seq; // as the store sets it
    let staging = commit(&mut canvas, &[message("object-delete", r#"{"id":"a"}"#, None, "u")]);
    assert_eq!(staging.forget_after, Some(600_000), "it can still be restored: kept as long as its history");
    let staging = Canvas::default().stage(
        &[&message("object-create", r#"{"id":"b"}"#, None, "u"), &message("object-delete", r#"{"id":"b"}"#, None, "u")],
        &Told::default(),
        &rules(),
    );
    assert_eq!(staging.forget_after, Some(600_000), "objects in this very commit count too");
}

#[test]
fn a_restore_stages_the_ops_from_the_canvas_as_it_stands_to_the_target_in_id_order() {
    let mut canvas = Canvas::default();
    let creates = ["a", "b", "c"].map(|id| message("object-create", &format!(r#"{{"id":"{id}","v":1}}"#), None, "u"));
    commit(&mut canvas, &creates);
    let target = canvas.objects.clone();
    let edits = [
        message("object-update", r#"{"id":"b","v":2}"#, None, "u"),
        message("object-delete", r#"{"id":"c"}"#, None, "u"),
        message("object-create", r#"{"id":"d"}"#, None, "u"),
    ];
    commit(&mut canvas, &edits);
    let rules = Rules { max_state: 16, ..rules() }; // far below the target's size: a restore is never refused for it
    let restore = |generation| {
        Publish::restore(CanvasId::parse("c").unwrap(), (target.clone(), generation), oneshot::channel().0)
    };
    let elsewhere = canvas.stage(&[&restore(canvas.head.generation + 1)], &Told::default(), &rules);
    assert_eq!(elsewhere.outcomes, [Staged::Refused(Refusal::EpochChanged)], "read before a reset: not restored");
    let restore = restore(canvas.head.generation);
    let staging = canvas.stage(&[&restore], &Told::default(), &rules);
    assert_eq!(staging.outcomes, [Staged::Restored { first: 0, ops: 3 }]);
    let made: Vec<(&str, &str)> = staging.made.iter().map(|(_, made)| (made.kind, made.data.get())).collect();
    assert_eq!(
        made,
        [
            ("object-create", r#"{"id":"b","v":1}"#),
            ("object-create", r#"{"id":"c","v":1}"#),
            ("object-delete", r#"{"id":"d"}"#)
        ]
    );
    assert_eq!(staging.entries, [(0, true), (0, true), (0, true)], "three entries of the one publish");
    assert_eq!(staging.after.objects, target);
    let again = staging.after.stage(&[&restore], &Told::default(), &rules);
    assert_eq!(again.outcomes, [Staged::Restored { first: 0, ops: 0 }], "nothing differs: nothing logged");
    assert!(!again.writes_anything());
}
