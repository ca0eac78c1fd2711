//! One round of the committer as a store sees it ([`Batch`]): the publishes grouped by canvas in arrival
//! order, each group staged by the fold against its canvas, then placed (or staged again on news) by the
//! store, and finally one outcome per publish.

use std::collections::HashMap;
use std::sync::Arc;

use crate::core::delivery::{Logged, Outcome};
use crate::core::fold::canvas::{Canvas, Rules, Staged, Staging, Told};
use crate::core::{BusError, Origin, Publish, Unavailable};
use crate::hub::{AckTo, Hub};
use crate::protocol::CanvasId;
use crate::store::records::{Batch, NewEntry, News, Placed, Writes};

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
    /// The canvas as the fold knew it when it staged (empty for an append to a canvas it does not hold).
    pub base: Canvas,
    pub staging: Staging,
    /// What the store told of its publishes (keys logged already, expiries of live instances).
    told: Told,
    pub placed: Option<Placed>,
    /// Set when the canvas could not be read, or news could not be folded in: the group's publishes get
    /// this, and the canvas is read again next time.
    pub broken: Option<BusError>,
}

impl Round {
    /// Groups `publishes` by canvas, in arrival order.
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
                staging: Canvas::default().stage(&[], &Told::default(), &rules),
                told: Told::default(),
                placed: None,
                broken: None,
            })
            .collect();
        Round { number, publishes, groups, rules, hub, conflicts: 0 }
    }

    /// Stages every group, against the canvas `held` gives for it (what the committer holds).
    pub fn stage(&mut self, mut held: impl FnMut(&CanvasId) -> Option<Canvas>) {
        for group in &mut self.groups {
            if let Some(canvas) = held(&group.canvas) {
                group.base = canvas;
            }
            group.restage(&self.publishes, &self.rules);
        }
    }

    /// How many times the store found a canvas moved under its staging.
    pub fn conflicts(&self) -> u64 {
        self.conflicts
    }

    /// Forgets the acks [`Batch::placed`] registered: the commit did not happen.
    pub fn forget_acks(&self) {
        for group in &self.groups {
            let Some(room) = self.hub.room(&group.canvas) else { continue };
            let mut room = room.lock();
            for logged in (0..group.at.len()).filter_map(|i| group.outcome(i).ok()?.logged().copied()) {
                room.forget_ack(logged.generation, logged.seq);
            }
        }
    }

    /// One outcome per publish, in order: what became of it, or (a group the store did not place) why not.
    pub fn outcomes(&self) -> Vec<Result<Outcome, BusError>> {
        let mut outcomes = Vec::with_capacity(self.publishes.len());
        outcomes.resize_with(self.publishes.len(), || Ok(Outcome::Unlogged { changed: false }));
        for group in &self.groups {
            for (i, &at) in group.at.iter().enumerate() {
                outcomes[at] = group.outcome(i);
            }
        }
        outcomes
    }
}

impl Group {
    /// Stages the group's publishes against its canvas with what the store told.
    fn restage(&mut self, publishes: &[Publish], rules: &Rules) {
        let mine: Vec<&Publish> = self.at.iter().map(|&at| &publishes[at]).collect();
        self.staging = self.base.stage(&mine, &self.told, rules);
    }

    /// The seq, generation and id of the group's entry `entry`, once placed.
    fn logged(&self, entry: usize) -> Option<Logged> {
        let placed = self.placed.as_ref()?;
        let id = *placed.ids.get(entry)?;
        Some(Logged { seq: placed.first_seq + entry as u64, generation: placed.head.generation, id })
    }

    /// What became of the group's publish `i`: an error when the store did not place the group (the canvas
    /// could not be read, or kept moving under the staging), whatever the fold had decided.
    fn outcome(&self, i: usize) -> Result<Outcome, BusError> {
        if let Some(error) = &self.broken {
            return Err(error.clone());
        }
        let unplaced = || BusError::from(Unavailable::KeptMoving);
        if self.placed.is_none() {
            return Err(unplaced());
        }
        Ok(match &self.staging.outcomes[i] {
            Staged::Logged { entry } => Outcome::Logged(self.logged(*entry).ok_or_else(unplaced)?),
            Staged::Refused(refusal) => Outcome::Refused(refusal.clone()),
            Staged::Unlogged { changed } => Outcome::Unlogged { changed: *changed },
            Staged::Duplicate { seq } => Outcome::Duplicate { seq: *seq },
            Staged::Repeats { entry } => Outcome::Duplicate { seq: self.logged(*entry).ok_or_else(unplaced)?.seq },
            Staged::Restored { first, ops } => {
                let made = self.staging.made.iter().filter(|(entry, _)| (*first..first + ops).contains(entry));
                let made = made.map(|(entry, made)| Some((self.logged(*entry)?, made.clone())));
                let made = made.collect::<Option<Vec<_>>>().ok_or_else(unplaced)?;
                let head = self.placed.as_ref().ok_or_else(unplaced)?.head.seq;
                Outcome::Restored { seq: made.last().map_or(head, |(logged, _)| logged.seq), made }
            }
        })
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
        let mut made = staging.made.iter().peekable();
        let entries = staging
            .entries
            .iter()
            .enumerate()
            .map(|(entry, &(i, changes_objects))| {
                if let Some((_, made)) = made.next_if(|(at, _)| *at == entry) {
                    let (kind, from, data) = (made.kind, "server", &*made.data);
                    let (conn, reference, restore) = (None, None, true);
                    return NewEntry { kind, from, data, conn, reference, changes_objects, restore };
                }
                let publish = &self.publishes[group.at[i]];
                let (conn, reference) = match &publish.origin {
                    Origin::Socket { conn, reference, .. } => (Some(*conn), reference.as_deref()),
                    _ => (None, None),
                };
                NewEntry {
                    kind: publish.kind.as_str(),
                    from: publish.from.as_str(),
                    data: &publish.data,
                    conn,
                    reference,
                    changes_objects,
                    restore: false,
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
            group.told.keys.insert((user, key), seq);
        }
        group.told.spared.extend(news.spared);
        if let Some(moved) = news.moved {
            self.conflicts += 1;
            if let Err(refusal) = group.base.absorb(moved) {
                tracing::error!(canvas = %group.canvas, %refusal, "the canvas's log does not fold; its publishes are refused");
                group.broken = Some(Unavailable::Corrupt("a canvas's snapshot and log do not fold").into());
                return;
            }
        }
        group.restage(&self.publishes, &self.rules);
    }

    /// Registers each placed publish's ack in its room: the ack goes out when the room delivers that seq,
    /// in its place in the stream, whichever path (this commit or the store's reader) brings it first.
    fn placed(&mut self, canvas: usize, placed: Placed) {
        let Some(group) = self.groups.get_mut(canvas) else { return };
        group.placed = Some(placed);
        let Some(room) = self.hub.room(&group.canvas) else { return };
        let mut room = room.lock();
        for (i, &at) in group.at.iter().enumerate() {
            let (Origin::Socket { conn, reference, .. }, Ok(Outcome::Logged(logged))) =
                (&self.publishes[at].origin, group.outcome(i))
            else {
                continue;
            };
            let ack = AckTo { conn: *conn, reference: reference.clone() };
            room.expect_ack_unless_delivered(logged.generation, logged.seq, ack);
        }
    }

    fn failed(&mut self) {
        self.forget_acks();
    }
}
