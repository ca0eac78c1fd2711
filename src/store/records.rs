//! What the fold and the stores hand each other: a canvas's head, its log entries and connection rows as a
//! store reads them back, and a commit's parts as a store applies them ([`Batch`], [`Writes`]) or answers
//! them ([`Placed`], [`News`]). Plain data: no rule of the canvas lives here (they are in `core::fold`).

use std::sync::Arc;

use serde_json::value::RawValue;

use crate::protocol::{CanvasId, ConnId, IdempotencyKey, UserId};

/// One open connection of the canvas, as its store row keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conn {
    pub user: Arc<str>,
    /// The display name it connected with.
    pub name: Option<Arc<str>>,
    /// The instance that holds it: survivors expire the connections of an instance that died.
    pub instance: Arc<str>,
    /// Its place in the order connections to this canvas were opened (1 for the first ever): the newest
    /// named connection names its user.
    pub opened: u64,
}

/// A canvas's head: where its log stands and what the fold keeps of its state, as the last commit left it.
/// A store assigns the seqs (every commit's entries follow its head's seq, and nothing is read first), the
/// generation of a head it creates, and the `version`; it keeps the rest as the fold gave it, and checks
/// `rev` for a guarded commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Head {
    /// The canvas's generation (a reset starts the next); 0 only before its first commit.
    pub generation: u64,
    /// The last seq logged in this generation.
    pub seq: u64,
    /// Bumped by every commit that changes the canvas's state (objects, connections, keys): what a guarded
    /// commit is checked against. Plain messages leave it: they never wait for, nor stop, anyone's fold.
    pub rev: u64,
    /// The seq of the last entry that changed the objects: the state's version (joiners share a state
    /// serialized once per version; a snapshot is taken at one).
    pub version: u64,
    /// The bytes of the objects' JSON less its opening brace (`--max-canvas-state` is checked against it).
    pub bytes: u64,
    pub objects: u64,
    pub connections: u64,
    pub users: u64,
}

/// One logged message (or a generation's reset marker, seq 0) as a store reads it back.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub canvas: CanvasId,
    pub generation: u64,
    pub seq: u64,
    pub kind: String,
    pub from: String,
    /// The message's `data`, as the canonical JSON text it was logged with.
    pub data: Box<RawValue>,
    /// Unix ms when committed (the store's clock).
    pub ts: i64,
    /// Its place in the store's commit order across canvases (the SQLite row id; the seq on Redis, whose
    /// readers follow each canvas on its own).
    pub id: i64,
    /// The instance that committed it, and the connection that sent it, with its `ref`: the ack of a seq
    /// that reaches the sender's instance by its reader first.
    pub instance: String,
    pub conn: Option<ConnId>,
    pub reference: Option<String>,
    /// An object op logged by a restore: a client's queue counts a restore's frames as one entry.
    pub restore: bool,
}

impl PartialEq for LogEntry {
    fn eq(&self, other: &Self) -> bool {
        let key = |e: &LogEntry| (e.canvas.clone(), e.generation, e.seq, e.id, e.ts);
        key(self) == key(other)
            && (&self.kind, &self.from, self.data.get()) == (&other.kind, &other.from, other.data.get())
            && (&self.instance, self.conn, &self.reference) == (&other.instance, other.conn, &other.reference)
            && self.restore == other.restore
    }
}

impl Eq for LogEntry {}

impl LogEntry {
    /// Whether this is a generation's reset marker.
    pub fn is_reset(&self) -> bool {
        self.seq == 0 && self.kind == "reset"
    }
}

/// A connection row of a canvas, with the presence state its client last set (v1.1), as a store keeps it.
#[derive(Debug, Clone)]
pub struct ConnRow {
    pub conn: ConnId,
    pub row: Conn,
    /// The presence state as JSON text, `None` until the client sets one.
    pub state: Option<Box<RawValue>>,
}

/// What a guarded commit expects of the canvas's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The head is at this `rev` in the generation the fold knew ([`Writes::known`]; 0 and 0: the canvas
    /// has no head). Both are checked: a canvas forgotten and created again starts its rev over. The store
    /// then keeps the head the fold gave, with its own seq, version and generation, and `rev` one more, if
    /// anything is written; with nothing to write, it only checks (the fold refused something, or found it
    /// done, on what it knew).
    Rev(u64),
    /// Nothing: the store appends the entries after its head's seq and changes nothing else (the fast
    /// path of plain messages: no object op, no idempotency key, no presence change). A head created by
    /// an append takes the writes' `forget_after`; an existing one keeps its own rule.
    Append,
}

/// One entry of a commit; the store gives it the next seq.
#[derive(Debug, Clone, Copy)]
pub struct NewEntry<'a> {
    pub kind: &'a str,
    pub from: &'a str,
    pub data: &'a RawValue,
    /// The sending connection on this instance and its `ref` (kept with the entry for the ack).
    pub conn: Option<ConnId>,
    pub reference: Option<&'a str>,
    /// It is an object op the fold applied: the head's `version` becomes its seq.
    pub changes_objects: bool,
    /// It is an object op of a restore (kept with the entry: see [`LogEntry::restore`]).
    pub restore: bool,
}

/// A connection row written or removed by a commit. A removal names the row's user and instance, for a
/// store that indexes connections by them (Redis).
#[derive(Debug, Clone)]
pub enum ConnWrite {
    Put {
        conn: ConnId,
        row: Conn,
    },
    Remove {
        conn: ConnId,
        user: UserId,
        instance: String,
        /// A survivor's expiry: applied only if the row's instance has had no heartbeat for this many ms
        /// when the commit applies it (else the store answers [`News::spared`] and nothing is applied).
        unless_alive_within: Option<i64>,
    },
}

/// An idempotency key claimed by a commit for one of its entries: kept with that entry's seq for the TTL,
/// in the head's generation, if no entry of the canvas holds it yet (else the commit is not applied and
/// the store answers [`News::taken`]).
#[derive(Debug, Clone)]
pub struct KeyClaim {
    pub user: UserId,
    pub key: IdempotencyKey,
    /// Which entry of the commit it names; `None` for a key only checked: its publish was refused by the
    /// state, which may be the state its own earlier send left (a resend after a lost ack: a delete of what
    /// it deleted). Taken, it makes the publish a duplicate; else nothing is kept for it.
    pub entry: Option<usize>,
}

/// One canvas's part of a commit, as the fold staged it: applied atomically, or not at all.
#[derive(Debug, Clone)]
pub struct Writes<'a> {
    pub canvas: &'a CanvasId,
    pub expect: Expect,
    /// The generation and last seq the fold knew of the canvas: on a conflict the store answers the object
    /// ops after it ([`Moved::Since`]), or the canvas whole.
    pub known: (u64, u64),
    /// The head after a guarded commit as the fold staged it: the store keeps its counts (bytes, objects,
    /// connections, users) and sets seq, version, rev and (for a new canvas) generation itself.
    /// Unused by [`Expect::Append`].
    pub head: &'a Head,
    pub entries: Vec<NewEntry<'a>>,
    pub conns: &'a [ConnWrite],
    pub keys: &'a [KeyClaim],
    /// When the commit leaves the canvas with neither objects nor connections: how long after it (ms) the
    /// store may forget the canvas, its log and its snapshots, unless something is committed meanwhile.
    pub forget_after: Option<u64>,
}

/// Where a store placed one canvas's commit.
#[derive(Debug, Clone)]
pub struct Placed {
    /// The head after the commit, as the store keeps it.
    pub head: Head,
    /// The seq of the first entry (its others follow).
    pub first_seq: u64,
    /// Each entry's place in the store's commit order (see [`LogEntry::id`]).
    pub ids: Vec<i64>,
}

/// Why a guarded commit of one canvas was not applied: what is new since what the fold knew, for it to
/// stage the canvas again.
#[derive(Debug, Clone, Default)]
pub struct News {
    /// `None` when the head is where the fold expected it (only keys were taken).
    pub moved: Option<Moved>,
    /// Claimed keys some entry holds already: (user, key, its seq).
    pub taken: Vec<(UserId, IdempotencyKey, u64)>,
    /// Connections a survivor's expiry would remove whose instance is alive after all.
    pub spared: Vec<ConnId>,
}

/// How a canvas moved under a guarded commit.
#[derive(Debug, Clone)]
pub enum Moved {
    /// In the generation the fold knew, with every object op since the seq it knew still in the log: the
    /// head now, those ops, and the connections now.
    Since { head: Head, ops: Vec<LogEntry>, conns: Vec<ConnRow> },
    /// Otherwise (a reset meanwhile, or the ops since are no longer all kept): the canvas read whole.
    Whole(crate::store::CanvasRead),
}

/// A commit of several canvases, as the store sees it. The store applies each canvas's writes atomically
/// under its expectation, says where it placed them ([`Batch::placed`], before the commit is visible to
/// anyone), and for a canvas whose head moved hands the news back ([`Batch::refold`]) and applies what
/// the fold staged again.
pub trait Batch: Send {
    /// The batch's number, unique in this process: a batch committed again after its reply was lost has
    /// the same one, so a store that applied it can tell and answer as it did.
    fn number(&self) -> u64;
    fn len(&self) -> usize;
    fn writes(&self, canvas: usize) -> Option<Writes<'_>>;
    fn refold(&mut self, canvas: usize, news: News);
    fn placed(&mut self, canvas: usize, placed: Placed);
    /// What was placed is not committed after all (the store calls this before anything it placed could
    /// be seen: before a rollback).
    fn failed(&mut self);
}

/// What local delivery of a batch left for the store's reader to do.
#[derive(Debug, Default)]
pub struct AfterDelivery {
    /// Canvases whose room holds seqs early, waiting for another instance's commits before them.
    pub waiting: Vec<CanvasId>,
    /// Whether a row belongs to a generation its room has not seen the reset marker of: the room cannot
    /// take it from here, so the reader must read it back in commit order (`Room::offer_stored`).
    pub read_back: bool,
    /// The first and last store ids the batch logged, if it logged any.
    pub ids: Option<(i64, i64)>,
}
