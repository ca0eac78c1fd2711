//! One canvas as a committer knows it (its head, objects and connections), and how a round's publishes for
//! it become one commit: each publish is judged against the canvas as it stands after the ones before it
//! (logged, refused, a duplicate of an idempotency key, or a presence change that logs nothing), and the
//! canvas after them all, with the writes that get it there, is what the store applies under a check of
//! the head's `rev` ([`Expect::Rev`]). A store that finds the head moved hands back what is new
//! ([`News`]); [`Canvas::absorb`] folds it in and the publishes are staged again.
//!
//! Plain messages (no object op, no idempotency key, no presence change) need nothing of the state: a
//! canvas whose publishes are all plain is appended to without a check ([`Expect::Append`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::objects::Objects;
use super::presence::{Change, Conn, Presence};
use crate::core::{Origin, PresenceChange, Publish};
use serde_json::value::RawValue;

use crate::object_ops::ObjectOp;
use crate::object_ops::Refusal;
use crate::protocol::{ConnId, IdempotencyKey, UserId};
use crate::store::records::{ConnWrite, Expect, Head, KeyClaim, LogEntry, Moved};
use crate::store::CanvasRead;

/// A canvas at its head, as far as its committer knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Canvas {
    pub head: Head,
    pub objects: Objects,
    pub presence: Presence,
    /// Only the head and the connections were read ([`Canvas::without_objects`]): `objects` is empty and
    /// the head's counts stand for the objects. Enough for every publish but an object op, so a join's
    /// registration on a big canvas never waits for its objects to be read and folded.
    pub objects_unread: bool,
}

/// What staging needs to know besides the canvas.
#[derive(Debug, Clone)]
pub struct Rules {
    /// `--max-canvas-state`.
    pub max_state: usize,
    /// This instance, which holds the connections it registers.
    pub instance: Arc<str>,
    /// How long after a commit leaves a canvas with neither objects nor connections it may be forgotten
    /// (ms): its log has expired for clients by then, and for the webhook.
    pub forget_after: u64,
    /// ... and one that had objects in its epoch, once its history has expired too.
    pub forget_after_history: u64,
}

/// What staging decided for one publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Staged {
    /// Logged as the commit's entry number `entry` (the store gives it its seq).
    Logged { entry: usize },
    /// Refused by the canvas state: nothing logged.
    Refused(Refusal),
    /// A presence change that logged nothing (`changed`: it was not the user's first or last connection;
    /// else it changed nothing at all).
    Unlogged { changed: bool },
    /// Its idempotency key was logged before at `seq`: nothing logged.
    Duplicate { seq: u64 },
    /// Its idempotency key is the same user's key of entry `entry` of this very commit.
    Repeats { entry: usize },
    /// A restore, logged as the commit's entries `first..first + ops` (none when nothing differed).
    Restored { first: usize, ops: usize },
}

/// An entry the fold made rather than a publish brought: a restore's object op, as user `server`.
#[derive(Debug, Clone)]
pub struct Made {
    pub kind: &'static str,
    pub data: Box<RawValue>,
}

/// One canvas's commit as staged.
#[derive(Debug, Clone)]
pub struct Staging {
    /// The canvas after the commit (its seq, version and rev as the store will set them are not known yet).
    pub after: Canvas,
    pub expect: Expect,
    /// The publishes logged, by their index among the canvas's publishes, in log order, and whether each
    /// changes the objects.
    pub entries: Vec<(usize, bool)>,
    /// The entries the fold made (a restore's), by their index in `entries`, in order.
    pub made: Vec<(usize, Made)>,
    pub conns: Vec<ConnWrite>,
    pub keys: Vec<KeyClaim>,
    /// One per publish.
    pub outcomes: Vec<Staged>,
    /// Set when the commit leaves the canvas with neither objects nor connections.
    pub forget_after: Option<u64>,
}

#[cfg(test)]
impl Staging {
    /// Whether the commit writes anything (a guarded one that does not only checks the head).
    pub fn writes_anything(&self) -> bool {
        !self.entries.is_empty() || !self.conns.is_empty() || self.keys.iter().any(|claim| claim.entry.is_some())
    }
}

/// What a store told the fold besides how the canvas moved (its `News`), kept while a round is staged again.
#[derive(Debug, Clone, Default)]
pub struct Told {
    /// Keys logged already: (user, key) → seq.
    pub keys: HashMap<(UserId, IdempotencyKey), u64>,
    /// Connections whose expiry found their instance alive: their expiry changes nothing.
    pub spared: HashSet<ConnId>,
}

/// Whether a publish needs nothing of the canvas's state.
pub fn is_plain(publish: &Publish) -> bool {
    publish.object.is_none()
        && publish.idempotency_key.is_none()
        && !matches!(publish.origin, Origin::Presence { .. } | Origin::Restore { .. })
}

impl Canvas {
    /// A canvas as a store read it: the objects of its newest snapshot with the object ops after it folded
    /// in, and its connections. Fails when the snapshot cannot be read, or an op cannot be applied to it:
    /// the snapshot and the log do not belong together.
    pub fn from_read(read: CanvasRead) -> Result<Canvas, Refusal> {
        let corrupt = |reason: String| Refusal::Unreadable { id: String::new(), reason };
        let mut objects = match &read.snapshot {
            Some(snapshot) => {
                let json = std::str::from_utf8(&snapshot.json).map_err(|e| corrupt(e.to_string()))?;
                Objects::from_json(json).map_err(|e| corrupt(e.to_string()))?
            }
            None => Objects::default(),
        };
        for op in &read.ops {
            apply_logged(&mut objects, op)?;
        }
        let presence = Presence::from_rows(read.conns.into_iter().map(|row| (row.conn, row.row)));
        Ok(Canvas { head: read.head.unwrap_or_default(), objects, presence, objects_unread: false })
    }

    /// A canvas as a store read it without its objects ([`crate::store::Want::head`]).
    pub fn without_objects(read: CanvasRead) -> Canvas {
        let presence = Presence::from_rows(read.conns.into_iter().map(|row| (row.conn, row.row)));
        Canvas { head: read.head.unwrap_or_default(), objects: Objects::default(), presence, objects_unread: true }
    }

    /// Stages `publishes` (all of this canvas, in order), with what the store `told` of them before.
    pub fn stage(&self, publishes: &[&Publish], told: &Told, rules: &Rules) -> Staging {
        if publishes.iter().all(|publish| is_plain(publish)) {
            let entries = (0..publishes.len()).map(|at| (at, false)).collect();
            let outcomes = (0..publishes.len()).map(|entry| Staged::Logged { entry }).collect();
            // A canvas this append creates holds nothing: it is forgotten once idle, like any empty one.
            return Staging {
                after: self.clone(),
                expect: Expect::Append,
                entries,
                made: Vec::new(),
                conns: Vec::new(),
                keys: Vec::new(),
                outcomes,
                forget_after: Some(rules.forget_after),
            };
        }
        let mut staging = Staging {
            after: self.clone(),
            expect: Expect::Rev(self.head.rev),
            entries: Vec::new(),
            made: Vec::new(),
            conns: Vec::new(),
            keys: Vec::new(),
            outcomes: Vec::with_capacity(publishes.len()),
            forget_after: None,
        };
        let mut claimed: HashMap<(&UserId, &IdempotencyKey), usize> = HashMap::new();
        for (at, publish) in publishes.iter().enumerate() {
            let key = publish.idempotency_key.as_ref().map(|key| (&publish.from, key));
            let repeat = key.and_then(|(user, key)| {
                let taken = told.keys.get(&(user.clone(), key.clone())).map(|&seq| Staged::Duplicate { seq });
                taken.or_else(|| claimed.get(&(user, key)).map(|&entry| Staged::Repeats { entry }))
            });
            let outcome = match repeat {
                Some(repeat) => repeat,
                None => staging.judge(at, publish, told, rules),
            };
            match (&outcome, key) {
                (Staged::Logged { entry }, Some((user, key))) => {
                    claimed.insert((user, key), *entry);
                    staging.keys.push(KeyClaim { user: user.clone(), key: key.clone(), entry: Some(*entry) });
                }
                // Refused by the state, which its own earlier send may have left: the store checks the key.
                (Staged::Refused(_), Some((user, key))) => {
                    staging.keys.push(KeyClaim { user: user.clone(), key: key.clone(), entry: None });
                }
                _ => {}
            }
            staging.outcomes.push(outcome);
        }
        staging.settle_head(rules);
        staging
    }

    /// Folds in how the canvas moved under a guarded commit. Fails as [`Canvas::from_read`] does.
    pub fn absorb(&mut self, moved: Moved) -> Result<(), Refusal> {
        let (head, ops, conns) = match moved {
            Moved::Whole(read) => {
                *self = Canvas::from_read(read)?;
                return Ok(());
            }
            Moved::Since { head, ops, conns } => (head, ops, conns),
        };
        if head.generation != self.head.generation {
            let reason = "ops of another generation".to_owned();
            return Err(Refusal::Unreadable { id: String::new(), reason });
        }
        if !self.objects_unread {
            for op in ops.iter().filter(|op| op.seq > self.head.seq) {
                apply_logged(&mut self.objects, op)?;
            }
        }
        self.presence = Presence::from_rows(conns.into_iter().map(|row| (row.conn, row.row)));
        self.head = head;
        Ok(())
    }
}

impl Staging {
    /// Judges one publish against the canvas as the ones before it left it.
    fn judge(&mut self, at: usize, publish: &Publish, told: &Told, rules: &Rules) -> Staged {
        let canvas = &mut self.after;
        let mut changes_objects = false;
        if let Origin::Presence { change: asked, conn, name, opened, .. } = &publish.origin {
            let change = match *asked {
                PresenceChange::Connect => {
                    let row = Conn {
                        user: Arc::from(publish.from.as_str()),
                        name: name.as_deref().map(Arc::from),
                        instance: rules.instance.clone(),
                        opened: *opened,
                    };
                    let change = canvas.presence.connect(*conn, row.clone());
                    if change != Change::None {
                        self.conns.push(ConnWrite::Put { conn: *conn, row });
                    }
                    change
                }
                PresenceChange::Expire { .. } if told.spared.contains(conn) => Change::None,
                PresenceChange::Disconnect | PresenceChange::Expire { .. } => {
                    let instance = canvas.presence.get(conn).map(|row| row.instance.to_string());
                    let change = canvas.presence.disconnect(*conn);
                    if let Some(instance) = instance {
                        let unless_alive_within = match *asked {
                            PresenceChange::Expire { dead_after_ms } => Some(dead_after_ms),
                            _ => None,
                        };
                        let user = publish.from.clone();
                        self.conns.push(ConnWrite::Remove { conn: *conn, user, instance, unless_alive_within });
                    }
                    change
                }
            };
            match change {
                Change::None => return Staged::Unlogged { changed: false },
                Change::Done { logged: false } => return Staged::Unlogged { changed: true },
                Change::Done { logged: true } => {}
            }
        } else if let Origin::Restore { target, generation, .. } = &publish.origin {
            if *generation != self.after.head.generation {
                return Staged::Refused(Refusal::EpochChanged);
            }
            return self.restore(at, target);
        } else if let Some(op) = &publish.object {
            if canvas.objects_unread {
                // The committer reads the objects before it stages an object op: this is a bug, not the op's.
                debug_assert!(false, "an object op staged against a canvas whose objects were not read");
                let reason = "the canvas's objects were not read".to_owned();
                return Staged::Refused(Refusal::Unreadable { id: String::new(), reason });
            }
            if let Err(refusal) = canvas.objects.apply(op, publish.data.get(), rules.max_state) {
                return Staged::Refused(refusal);
            }
            changes_objects = true;
        }
        self.entries.push((at, changes_objects));
        Staged::Logged { entry: self.entries.len() - 1 }
    }

    /// Stages a restore: the object ops that turn the canvas as the publishes before it left it into
    /// `target`, applied whatever `--max-canvas-state` is now (the target is a state the canvas had).
    fn restore(&mut self, at: usize, target: &Objects) -> Staged {
        let objects = &mut self.after.objects;
        if self.after.objects_unread {
            debug_assert!(false, "a restore staged against a canvas whose objects were not read");
            let reason = "the canvas's objects were not read".to_owned();
            return Staged::Refused(Refusal::Unreadable { id: String::new(), reason });
        }
        let first = self.entries.len();
        let ops = objects.ops_to(target);
        for (op, text) in &ops {
            let kind = match op {
                ObjectOp::Delete { .. } => "object-delete",
                _ => "object-create",
            };
            let data = RawValue::from_string(text.to_string()).expect("an object's text is JSON");
            objects.apply(op, data.get(), usize::MAX).expect("a create, or a delete of an object that exists");
            self.made.push((self.entries.len(), Made { kind, data }));
            self.entries.push((at, true));
        }
        Staged::Restored { first, ops: ops.len() }
    }

    /// The head's counts after the commit, and whether the canvas may be forgotten once idle.
    fn settle_head(&mut self, rules: &Rules) {
        let canvas = &mut self.after;
        if !canvas.objects_unread {
            canvas.head.bytes = canvas.objects.bytes();
            canvas.head.objects = canvas.objects.len() as u64;
        }
        canvas.head.connections = canvas.presence.connections() as u64;
        canvas.head.users = canvas.presence.users() as u64;
        let no_objects = match canvas.objects_unread {
            true => canvas.head.objects == 0,
            false => canvas.objects.is_empty(),
        };
        let empty = no_objects && canvas.presence.connections() == 0;
        let had_objects = canvas.head.version > 0 || self.entries.iter().any(|&(_, changes)| changes);
        let after = if had_objects { rules.forget_after_history } else { rules.forget_after };
        self.forget_after = empty.then_some(after);
    }
}

/// Applies a logged entry to the objects, if it is an object op. It was accepted when it was logged, so
/// it is applied whatever the limits are now (size, or what a client may send); one that cannot be
/// applied means the log and the state it is folded into do not belong together.
fn apply_logged(objects: &mut Objects, entry: &LogEntry) -> Result<(), Refusal> {
    let unreadable = |error: serde_json::Error| Refusal::Unreadable { id: String::new(), reason: error.to_string() };
    match ObjectOp::logged(&entry.kind, entry.data.get()).map_err(unreadable)? {
        Some(op) => objects.apply(&op, entry.data.get(), usize::MAX),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
