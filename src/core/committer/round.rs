//! One round of the committer as a store sees it ([`Batch`]): the publishes grouped by canvas in arrival
//! order, each group staged by the fold against its canvas, then placed (or staged again on news) by the
//! store, and finally one outcome per publish.

use std::collections::HashMap;
use std::sync::Arc;

use crate::core::delivery::{Logged, Outcome};
use crate::core::fold::canvas::{Canvas, Rules, Staged, Staging, Taken};
use crate::core::{Origin, Publish};
use crate::hub::{AckTo, Hub};
use crate::object_ops::Refusal;
use crate::protocol::CanvasId;
use crate::store::records::{Batch, Entry, News, Placed, Writes};

/// One round's publishes, staged by canvas.
pub struct Round {
    number: u64,
    pub(super) publishes: Vec<Publish>,
    pub(super) groups: Vec<Group>,
    rules: Rules,
    /// Where the acks of placed publishes are registered: in the room of their canvas, before the commit
    /// is visible to any reader (see [`Batch::placed`]).
    hub: Arc<Hub>,
    /// Canvases the store found moved under their staging (each time).
    conflicts: u64,
}

/// One canvas's publishes in a round.
pub(super) struct Group {
    pub canvas: CanvasId,
    /// Its publishes, by index in the round, in arrival order.
    pub at: Vec<usize>,
    /// The canvas as the fold knew it when it staged (empty for an append of a canvas it does not hold).
    pub base: Canvas,
    /// Whether `base` is the canvas as the committer holds it (else the group is an append to a canvas the
    /// committer never read).
    pub known: bool,
    pub staging: Staging,
    /// Keys the store said are logged already.
    taken: Taken,
    pub placed: Option<Placed>,
    /// Set when news could not be folded in: the group is refused, and the canvas read again next time.
    pub broken: Option<Refusal>,
}

impl Round {
    /// Groups `publishes` by canvas; `canvas_of` gives the canvas the committer holds for a group, if it
    /// does (it must for any group that is not all plain messages: see [`Round::needs`]).
    pub fn new(number: u64, publishes: Vec<Publish>, rules: Rules, hub: Arc<Hub>) -> Round {
        let mut index: HashMap<&CanvasId, usize> = HashMap::new();
        let mut ats: Vec<(CanvasId, Vec<usize>)> = Vec::new();
        for (at, publish) in publishes.iter().enumerate() {
            let group = *index.entry(&publish.canvas).or_insert_with(|| {
                ats.push((publish.canvas.clone(), Vec::new()));
                ats.len() - 1
            });
            ats[group].1.push(at);
        }
        let groups = ats
            .into_iter()
            .map(|(canvas, at)| Group {
                canvas,
                at,
                base: Canvas::default(),
                known: false,
                staging: Canvas::default().stage(&[], &Taken::new(), &rules),
                taken: Taken::new(),
                placed: None,
                broken: None,
            })
            .collect();
        Round { number, publishes, groups, rules, hub, conflicts: 0 }
    }

    /// The canvases whose groups need their state (any publish that is not a plain message).
    pub fn needs(&self) -> impl Iterator<Item = &CanvasId> {
        self.groups
            .iter()
            .filter(|group| {
                group.at.iter().any(|&at| {
                    let publish = &self.publishes[at];
                    publish.object.is_some()
                        || publish.idempotency_key.is_some()
                        || matches!(publish.origin, Origin::Presence { .. })
                })
            })
            .map(|group| &group.canvas)
    }

    /// Stages every group, against the canvas `held` gives for it (what the committer holds).
    pub fn stage(&mut self, mut held: impl FnMut(&CanvasId) -> Option<Canvas>) {
        for group in &mut self.groups {
            if let Some(canvas) = held(&group.canvas) {
                group.base = canvas;
                group.known = true;
            }
            let publishes: Vec<&Publish> = group.at.iter().map(|&at| &self.publishes[at]).collect();
            group.staging = group.base.stage(&publishes, &group.taken, &self.rules);
        }
    }

    /// How many times the store found a canvas moved under its staging.
    pub fn conflicts(&self) -> u64 {
        self.conflicts
    }

    /// Forgets the acks [`Batch::placed`] registered, for a commit that then failed.
    pub fn forget_acks(&self) {
        for group in &self.groups {
            let Some(room) = self.hub.room(&group.canvas) else { continue };
            let mut room = room.lock();
            for i in 0..group.at.len() {
                if let Outcome::Logged(logged) = group.outcome(i) {
                    room.forget_ack(logged.generation, logged.seq);
                }
            }
        }
    }

    /// One outcome per publish, in order, once the store placed every group (a group it did not place
    /// gets `unavailable` from the caller, which never asks for these then).
    pub fn outcomes(&self) -> Vec<Outcome> {
        let mut outcomes = vec![Outcome::Unlogged { changed: false }; self.publishes.len()];
        for group in &self.groups {
            for (i, &at) in group.at.iter().enumerate() {
                outcomes[at] = group.outcome(i);
            }
        }
        outcomes
    }
}

impl Group {
    /// The seq, generation and id of the group's entry `entry`, once placed.
    fn logged(&self, entry: usize) -> Option<Logged> {
        let placed = self.placed.as_ref()?;
        let id = *placed.ids.get(entry)?;
        Some(Logged { seq: placed.first_seq + entry as u64, generation: placed.head.generation, id })
    }

    /// What became of the group's publish `i`.
    fn outcome(&self, i: usize) -> Outcome {
        if let Some(refusal) = &self.broken {
            return Outcome::Refused(refusal.clone());
        }
        match &self.staging.outcomes[i] {
            Staged::Logged { entry } => {
                self.logged(*entry).map_or(Outcome::Unlogged { changed: false }, Outcome::Logged)
            }
            Staged::Refused(refusal) => Outcome::Refused(refusal.clone()),
            Staged::Unlogged { changed } => Outcome::Unlogged { changed: *changed },
            Staged::Duplicate { seq } => Outcome::Duplicate { seq: *seq },
            Staged::Repeats { entry } => match self.logged(*entry) {
                Some(logged) => Outcome::Duplicate { seq: logged.seq },
                None => Outcome::Unlogged { changed: false },
            },
        }
    }
}

impl Batch for Round {
    fn number(&self) -> u64 {
        self.number
    }

    fn len(&self) -> usize {
        self.groups.len()
    }

    fn writes(&self, canvas: usize) -> Option<Writes<'_>> {
        let group = self.groups.get(canvas)?;
        if group.broken.is_some() {
            return None;
        }
        let staging = &group.staging;
        let entries = staging
            .entries
            .iter()
            .map(|&(i, changes_objects)| {
                let publish = &self.publishes[group.at[i]];
                let (conn, reference) = match &publish.origin {
                    Origin::Socket { conn, reference, .. } => (Some(*conn), reference.as_deref()),
                    _ => (None, None),
                };
                Entry {
                    kind: publish.kind.as_str(),
                    from: publish.from.as_str(),
                    data: &publish.data,
                    conn,
                    reference,
                    changes_objects,
                }
            })
            .collect();
        Some(Writes {
            canvas: &group.canvas,
            expect: staging.expect,
            known: (group.base.head.generation, group.base.head.seq),
            head: &staging.after.head,
            entries,
            conns: &staging.conns,
            keys: &staging.keys,
            forget_after: staging.forget_after,
        })
    }

    fn refold(&mut self, canvas: usize, news: News) {
        let Some(group) = self.groups.get_mut(canvas) else { return };
        for (user, key, seq) in news.taken {
            group.taken.insert((user, key), seq);
        }
        if let Some(moved) = news.moved {
            self.conflicts += 1;
            if let Err(refusal) = group.base.absorb(moved) {
                tracing::error!(canvas = %group.canvas, %refusal, "the canvas's log does not fold; its publishes are refused");
                group.broken = Some(refusal);
                return;
            }
            group.known = true;
        }
        let publishes: Vec<&Publish> = group.at.iter().map(|&at| &self.publishes[at]).collect();
        group.staging = group.base.stage(&publishes, &group.taken, &self.rules);
    }

    /// Registers each placed publish's ack in its room: the ack goes out when the room delivers that seq,
    /// in its place in the stream, whichever path (this commit or the store's reader) brings it first.
    fn placed(&mut self, canvas: usize, placed: Placed) {
        let Some(group) = self.groups.get_mut(canvas) else { return };
        group.placed = Some(placed);
        let Some(room) = self.hub.room(&group.canvas) else { return };
        let mut room = room.lock();
        for (i, &at) in group.at.iter().enumerate() {
            let (Origin::Socket { conn, reference, .. }, Outcome::Logged(logged)) =
                (&self.publishes[at].origin, group.outcome(i))
            else {
                continue;
            };
            let ack = AckTo { conn: *conn, reference: reference.clone() };
            room.expect_ack_unless_delivered(logged.generation, logged.seq, ack);
        }
    }
}
