//! The write side of the Redis store, driven by this process's committer (a task): a batch goes to
//! `commit.lua` in one call; canvases whose head moved come back with what is new, the fold stages them
//! again, and only those go again (a bounded number of rounds). Resets are one script too.
//!
//! **No answer is not "no".** A send whose reply never came (a timeout, a dropped connection) may have been
//! applied: the commit answers [`Unavailable::Unresolved`] and the committer commits the same batch again,
//! with the same number, until Redis answers; each canvas part the script applied left a marker with its
//! reply, so the second send gets the first's answer and nothing is logged twice. The same holds once any
//! round of a batch was applied: a later round that fails is unresolved too, never "nothing applied".
//!
//! A batch is for the store epoch this process knew when it first sent it. If Redis has another by then
//! (it came back empty, or was rotated after a rollback), the script applies nothing and answers with the
//! new epoch: local clients are cut to reload and the batch is refused with `unavailable`.

use std::sync::Arc;

use async_trait::async_trait;
use redis::{ErrorKind, RedisError, ScriptInvocation, Value};

use super::batch::{self, Args, Header, Part, Reply};
use super::entry::{string, uint};
use super::scripts::{COMMIT, RESET};
use super::{malformed, unavailable, RedisStore};
use crate::clock::now_ms;
use crate::protocol::CanvasId;
use crate::store::records::{Batch, Moved, News};
use crate::store::{epoch, BusError, CanvasReader, Commit, ResetDone, Unavailable, Want};

/// Most sends of one batch in one commit: the first, then one per round of canvases found moved (another
/// instance committed to them first) or with a key taken. The news is exact, so a send fails only when yet
/// another commit came first in the moment between the news and the send; nothing waits in that moment (a
/// pause there would only let more commits in first). Past the bound, the batch is unresolved and the
/// committer sends it again.
const MAX_ROUNDS: usize = 32;

/// How long a canvas part's marker answers a batch sent again (`commit.lua`): longer than any batch stays
/// unresolved (the committer sends it again every second at most until Redis answers).
const MARKER_TTL_MS: i64 = 24 * 60 * 60 * 1000;

/// Where a commit's sends stand.
struct Rounds {
    /// The canvases (indexes in the batch) still to send.
    pending: Vec<usize>,
    /// Redis's time at the last reply.
    now: Option<i64>,
    /// Whether a send applied anything: then no failure means "nothing applied".
    applied: bool,
}

impl Rounds {
    /// What a commit that fails now answers: the error, or unresolved once something was applied (the
    /// committer sends the batch again, and what was applied answers from its markers).
    fn failed(&self, error: BusError) -> BusError {
        match self.applied {
            true => Unavailable::Unresolved.into(),
            false => error,
        }
    }
}

/// The Redis store has no writes of its own to run in the committer's turn.
#[derive(Debug)]
pub enum NoJob {}

/// The write side of the Redis store.
pub struct RedisWriter {
    store: RedisStore,
    /// The number of the last batch sent and the store epoch it was for: a batch sent again is for the
    /// epoch of its first send.
    last: Option<(u64, String)>,
}

impl RedisWriter {
    pub fn new(store: RedisStore) -> Self {
        RedisWriter { store, last: None }
    }

    /// The store epoch batch `number` is for.
    fn epoch_for(&mut self, number: u64) -> String {
        let epoch = match &self.last {
            Some((last, epoch)) if *last == number => epoch.clone(),
            _ => self.store.inner.link.epoch().unwrap_or_default(),
        };
        self.last = Some((number, epoch.clone()));
        epoch
    }

    /// The send of the canvases `pending` of a batch, and which canvases it carries (`None`: nothing to send).
    fn invocation(
        &self,
        batch: &dyn Batch,
        pending: &[usize],
        epoch: &str,
    ) -> Option<(ScriptInvocation<'static>, Vec<(usize, CanvasId)>)> {
        let inner = &self.store.inner;
        let candidate = RedisStore::candidate();
        let header = Header {
            instance: &inner.instance_id,
            number: batch.number(),
            epoch,
            candidate: &candidate,
            ttl_ms: inner.settings.ttl_ms,
            marker_ttl_ms: MARKER_TTL_MS,
        };
        let mut args = Args::default();
        header.encode(&mut args);
        let mut sent = Vec::new();
        for &i in pending {
            if let Some(writes) = batch.writes(i) {
                batch::encode(&mut args, &writes);
                sent.push((i, writes.canvas.clone()));
            }
        }
        let mut invocation = COMMIT.prepare_invoke();
        invocation.arg(args.0);
        (!sent.is_empty()).then_some((invocation, sent))
    }

    /// The parts of a reply of the store's epoch; a reply of another epoch cuts the local clients, and
    /// nothing of the batch was applied.
    fn parts_of(&self, reply: &Value, canvases: &[CanvasId], rounds: &mut Rounds) -> Result<Vec<Part>, BusError> {
        let inner = &self.store.inner;
        match batch::parse(reply, canvases) {
            Some(Reply::Applied { epoch, writes, now, parts }) => {
                inner.link.observe_epoch(&epoch, &inner.hub);
                inner.link.saw_writes(writes);
                inner.link.last_error.clear();
                rounds.now = Some(now);
                Ok(parts)
            }
            Some(Reply::OtherEpoch(epoch)) => {
                inner.link.observe_epoch(&epoch, &inner.hub);
                inner.link.last_error.set(now_ms(), &Unavailable::NewEpoch.to_string());
                Err(Unavailable::NewEpoch.into())
            }
            None => {
                tracing::error!(?reply, "commit.lua answered in a shape it never sends");
                Err(rounds.failed(malformed("a batch")))
            }
        }
    }

    /// What became of canvas `i`'s part: placed, or its news folded in and the canvas pending again.
    async fn place(
        &self,
        batch: &mut dyn Batch,
        i: usize,
        canvas: &CanvasId,
        part: Part,
        rounds: &mut Rounds,
    ) -> Result<(), BusError> {
        let news = match part {
            Part::Placed(placed) => {
                batch.placed(i, placed);
                rounds.applied = true;
                return Ok(());
            }
            Part::Since { head, ops, conns } => {
                News { moved: Some(Moved::Since { head, ops, conns }), taken: vec![], spared: vec![] }
            }
            Part::Whole => match self.store.read_canvas_now(canvas, Want::all()).await {
                Ok(read) => News { moved: Some(Moved::Whole(read)), taken: vec![], spared: vec![] },
                Err(error) => return Err(rounds.failed(error)),
            },
            Part::Refused { taken, spared } => News { moved: None, taken, spared },
        };
        batch.refold(i, news); // the committer counts the conflict (`relay_commit_conflicts_total`)
        rounds.pending.push(i);
        Ok(())
    }

    /// Sends a batch: its reply, or why there is none. `applied`: an earlier round of the batch was applied,
    /// so no failure now means "nothing applied".
    async fn send(&self, invocation: &ScriptInvocation<'static>, applied: bool) -> Result<Value, BusError> {
        match invocation.invoke_async::<Value>(&mut self.store.conn()).await {
            Ok(reply) => Ok(reply),
            Err(error) => {
                self.store.inner.link.last_error.set(now_ms(), &format!("Redis: {error}"));
                match !applied && (answered(&error) || error.is_connection_refusal()) {
                    true => Err(unavailable(error)),
                    false => {
                        tracing::warn!(%error, "no answer to a batch Redis may have applied");
                        Err(Unavailable::Unresolved.into())
                    }
                }
            }
        }
    }
}

#[async_trait]
impl Commit for RedisWriter {
    type Job = NoJob;

    async fn commit(&mut self, batch: &mut dyn Batch) -> Result<i64, BusError> {
        let epoch = self.epoch_for(batch.number());
        let mut rounds = Rounds { pending: (0..batch.len()).collect(), now: None, applied: false };
        for _ in 0..MAX_ROUNDS {
            let Some((invocation, sent)) = self.invocation(batch, &rounds.pending, &epoch) else {
                return Ok(rounds.now.unwrap_or_else(now_ms));
            };
            let reply = self.send(&invocation, rounds.applied).await?;
            let canvases: Vec<CanvasId> = sent.iter().map(|(_, canvas)| canvas.clone()).collect();
            let parts = self.parts_of(&reply, &canvases, &mut rounds)?;
            rounds.pending.clear();
            for (part, (i, canvas)) in parts.into_iter().zip(sent) {
                self.place(batch, i, &canvas, part, &mut rounds).await?;
            }
        }
        if rounds.pending.is_empty() {
            return Ok(rounds.now.unwrap_or_else(now_ms));
        }
        // Nothing is left unanswered: the committer sends the batch again after a pause (what was applied
        // answers from its markers).
        tracing::warn!(canvases = rounds.pending.len(), "canvases still moving after {MAX_ROUNDS} sends");
        Err(Unavailable::Unresolved.into())
    }

    fn reader(&self) -> Arc<dyn CanvasReader> {
        Arc::new(self.store.clone())
    }

    /// `reset.lua`: the canvas's next generation and its marker, in one script.
    async fn reset(&mut self, canvas: &CanvasId) -> Result<ResetDone, BusError> {
        let inner = &self.store.inner;
        let reply: Vec<Value> = RESET
            .arg(canvas.as_str())
            .arg(RedisStore::candidate())
            .arg(&inner.instance_id)
            .arg(inner.settings.ttl_ms)
            .invoke_async(&mut self.store.conn())
            .await
            .map_err(unavailable)?;
        let [store_epoch, generation] = &reply[..] else { return Err(malformed("a reset")) };
        let (Some(store_epoch), Some(generation)) = (string(store_epoch), uint(generation)) else {
            return Err(malformed("a reset"));
        };
        inner.link.observe_epoch(&store_epoch, &inner.hub);
        // Redis's readers follow each canvas on its own: a marker's place is its seq, 0.
        Ok(ResetDone { generation, epoch: epoch(&store_epoch, generation), id: 0 })
    }

    async fn run(&mut self, job: NoJob) {
        match job {}
    }
}

/// Whether Redis itself answered with this error (nothing was applied: the script checks its arguments
/// before writing and is refused whole when Redis is out of memory), as opposed to no answer at all.
fn answered(error: &RedisError) -> bool {
    matches!(error.kind(), ErrorKind::Server(_) | ErrorKind::Extension)
}
