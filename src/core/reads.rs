//! Reading canvases, whichever store: a canvas at one point of its log as a joiner or the API sees it
//! ([`View`]: epoch, seq, presence, and the objects folded from the newest snapshot and the ops after it),
//! the resume check, replay pages, the API's log pages and listings. Every read filters what clients must
//! no longer see (entries past `--message-ttl`); the stores return what they keep.

use bytes::Bytes;
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Message;

use super::fold::canvas::Canvas;
use super::fold::presence::Presence;
use super::state_cache::StateKey;
use super::views::{CanvasLog, CanvasPage, CanvasState, CanvasSummary, Peer, UserPresence};
use super::{Bus, BusError, Unavailable};
use crate::clock::now_ms;
use crate::protocol::{logged_frame, reset_frame, CanvasId, Resume, UserId};
use crate::store::records::{Head, LogEntry};
use crate::store::{epoch, CanvasRead, Want, Whose};

/// Canvases a listing of active ones looks at per page asked for, at most (so that a page of a store with
/// many idle canvases is answered in bounded time, perhaps short, with a `next`).
const SCAN_PER_ACTIVE: usize = 10;

/// A canvas's head and its log after a seq, as the webhook reads it.
#[derive(Debug, Clone, Default)]
pub struct CanvasTail {
    /// The head: the canvas's generation and last seq.
    pub generation: u64,
    pub seq: u64,
    /// Messages of the generation asked for after the seq asked for, in seq order.
    pub entries: Vec<LogEntry>,
}

/// A canvas read at one point of its log, as a joiner or the API sees it.
#[derive(Debug, Clone)]
pub struct View {
    pub epoch: String,
    pub generation: u64,
    /// The canvas's last seq at the read.
    pub seq: u64,
    /// The seq of the last message that changed the objects: the state's version (see `state_cache`).
    pub version: u64,
    /// Who is on the canvas at `seq`, as the welcome's JSON array.
    pub presence: Box<RawValue>,
    /// Every connection of the canvas with its presence state as the store last kept it (v1.1).
    pub peers: Vec<Peer>,
    /// A resume was asked for and every seq after its `since` is still retained.
    pub resumed: bool,
    /// The objects at `seq` as one JSON object, when they were read (see [`Want`]).
    pub objects: Option<Bytes>,
}

impl View {
    pub fn key(&self) -> StateKey {
        StateKey { epoch: self.epoch.clone(), generation: self.generation, version: self.version }
    }
}

impl Bus {
    /// A canvas's epoch for a generation.
    pub(crate) fn epoch_of(&self, generation: u64) -> String {
        epoch(&self.store().store_epoch(), generation)
    }

    /// A canvas at one point of its log, with the resume check if asked, and the objects unless `want` says
    /// the caller does not need them (or a successful resume).
    pub(crate) async fn view(&self, canvas: &CanvasId, resume: Option<&Resume>, want: Want) -> Result<View, BusError> {
        let read = self.store().read_canvas(canvas, want).await?;
        let head = read.head.unwrap_or_default();
        let epoch = self.epoch_of(head.generation);
        let resumed = match resume {
            Some(resume) => self.can_replay(canvas, resume, &epoch, &head).await?,
            None => false,
        };
        let presence = Presence::from_rows(read.conns.iter().map(|row| (row.conn, row.row.clone())));
        let peers = read
            .conns
            .iter()
            .map(|row| Peer {
                connection: row.conn.to_string(),
                user: row.row.user.to_string(),
                name: row.row.name.as_deref().map(str::to_owned),
                data: row.state.clone(),
            })
            .collect();
        let objects = match resumed || want.skips(&head) {
            false => Some(objects_of(canvas, read).await?),
            true => None,
        };
        Ok(View {
            epoch,
            generation: head.generation,
            seq: head.seq,
            version: head.version,
            presence: presence.present_json(),
            peers,
            resumed,
            objects,
        })
    }

    /// Whether a resume can replay: the epoch matches and every seq after `since` is still retained for
    /// clients (and there are not more than `--max-resume`). Entries leave the log oldest first, so the
    /// first one after `since` being there and within the TTL says it of all of them.
    async fn can_replay(&self, canvas: &CanvasId, resume: &Resume, epoch: &str, head: &Head) -> Result<bool, BusError> {
        if resume.epoch != epoch || resume.since > head.seq || head.seq - resume.since > self.inner.max_resume {
            return Ok(false);
        }
        if resume.since == head.seq {
            return Ok(true);
        }
        let first = self.store().read_log(canvas, head.generation, resume.since, resume.since + 1, 1).await?;
        Ok(first.first().is_some_and(|entry| entry.seq == resume.since + 1 && self.visible(entry)))
    }

    /// Whether clients may still see an entry (within `--message-ttl` of its commit).
    fn visible(&self, entry: &LogEntry) -> bool {
        entry.ts + self.inner.ttl_ms > now_ms()
    }

    /// The frames of seqs `after + 1 ..= upto` of one generation of a canvas, in order; fewer when some
    /// expired.
    pub async fn replay_page(
        &self,
        canvas: &CanvasId,
        generation: u64,
        after: u64,
        upto: u64,
    ) -> Result<Vec<Message>, BusError> {
        let limit = (upto.saturating_sub(after)).min(10_000) as usize;
        let entries = self.store().read_log(canvas, generation, after, upto, limit).await?;
        Ok(entries.iter().filter(|entry| self.visible(entry)).map(|entry| self.frame(entry)).collect())
    }

    /// The frame other connections receive for a logged entry.
    pub(crate) fn frame(&self, entry: &LogEntry) -> Message {
        match entry.is_reset() {
            true => Message::text(reset_frame(entry.canvas.as_str(), &self.epoch_of(entry.generation))),
            false => Message::text(logged_frame(
                &entry.kind,
                entry.seq,
                entry.canvas.as_str(),
                &entry.from,
                &entry.data,
                entry.ts,
            )),
        }
    }

    /// Retained messages of a canvas after `since`, at most `limit`, in seq order, with the canvas head.
    pub async fn messages(&self, canvas: CanvasId, since: u64, limit: u64) -> Result<CanvasLog, BusError> {
        let head = self.store().read_canvas(&canvas, Want::head()).await?.head.unwrap_or_default();
        let upto = head.seq.min(since.saturating_add(limit));
        let entries = self.store().read_log(&canvas, head.generation, since, upto, limit as usize).await?;
        let messages = entries
            .iter()
            .filter(|entry| self.visible(entry))
            .map(|entry| self.frame(entry).into_text().map(|text| text.to_string()).unwrap_or_default())
            .collect();
        Ok(CanvasLog { epoch: self.epoch_of(head.generation), seq: head.seq, messages })
    }

    /// A canvas's head, objects and presence, read at one point of its log.
    pub async fn canvas(&self, canvas: CanvasId) -> Result<CanvasState, BusError> {
        let view = self.view(&canvas, None, Want::all()).await?;
        let objects = view.objects.unwrap_or_else(|| Bytes::from_static(b"{}"));
        Ok(CanvasState { epoch: view.epoch, seq: view.seq, objects, presence: view.presence })
    }

    /// Canvases in id order after `after`, at most `limit`, only those with a connection if `active`. A
    /// full page has a `next`; a listing of active canvases looks at a bounded number of canvases per page,
    /// so its page may be short and still have one.
    pub async fn canvases(&self, after: Option<CanvasId>, limit: u32, active: bool) -> Result<CanvasPage, BusError> {
        let limit = limit as usize;
        let looked = if active { limit.saturating_mul(SCAN_PER_ACTIVE) } else { limit };
        let heads = self.store().heads(after.as_ref(), looked).await?;
        let last = (heads.len() == looked).then(|| heads.last().map(|(canvas, _)| canvas.clone())).flatten();
        let mut canvases: Vec<CanvasSummary> = heads
            .into_iter()
            .filter(|(_, head)| !active || head.connections > 0)
            .take(limit)
            .map(|(canvas, head)| CanvasSummary {
                canvas: canvas.as_str().to_owned(),
                seq: head.seq,
                epoch: self.epoch_of(head.generation),
                connections: head.connections,
                users: head.users,
                objects: head.objects,
            })
            .collect();
        let next = match canvases.len() == limit {
            true => canvases.last().map(|c| c.canvas.clone()),
            false => last.map(|c| c.as_str().to_owned()),
        };
        canvases.truncate(limit);
        Ok(CanvasPage { canvases, next })
    }

    /// A canvas's head (generation and last seq) and up to `limit` of its messages of `generation` after
    /// `after`, for the webhook: those past `--message-ttl` that are still kept for it included, none when
    /// the canvas is in another generation.
    pub(crate) async fn canvas_tail(
        &self,
        canvas: &CanvasId,
        generation: u64,
        after: u64,
        limit: usize,
    ) -> Result<CanvasTail, BusError> {
        let head = self.store().read_canvas(canvas, Want::head()).await?.head.unwrap_or_default();
        let entries = match head.generation == generation {
            true => self.store().read_log(canvas, generation, after, head.seq, limit).await?,
            false => Vec::new(),
        };
        Ok(CanvasTail { generation: head.generation, seq: head.seq, entries })
    }

    /// Canvases in id order after `after`, at most `limit` of them looked at, whose head is past the
    /// webhook's delivered position (or that it never delivered); the second value is the last canvas
    /// looked at (`None`: the end).
    pub(crate) async fn backlog(
        &self,
        after: Option<CanvasId>,
        limit: usize,
    ) -> Result<(Vec<CanvasId>, Option<CanvasId>), BusError> {
        let heads = self.store().heads(after.as_ref(), limit).await?;
        let last = (heads.len() == limit).then(|| heads.last().map(|(canvas, _)| canvas.clone())).flatten();
        let canvases: Vec<CanvasId> = heads.iter().map(|(canvas, _)| canvas.clone()).collect();
        let positions = self.consumers().positions(&canvases).await?;
        let pending = heads
            .into_iter()
            .zip(positions)
            .filter(|((_, head), position)| match position {
                Some(at) => at.generation != head.generation || at.seq < head.seq,
                None => head.seq > 0,
            })
            .map(|((canvas, _), _)| canvas)
            .collect();
        Ok((pending, last))
    }

    /// Connected users across instances (all, or only `user`), with their connections and canvases.
    pub async fn users(&self, only: Option<UserId>) -> Result<Vec<UserPresence>, BusError> {
        let whose = only.map_or(Whose::Everyone, Whose::User);
        let mut rows = self.store().connections(whose).await?;
        rows.sort_by(|(a, x), (b, y)| x.row.user.cmp(&y.row.user).then_with(|| a.cmp(b)));
        let mut users: Vec<UserPresence> = Vec::new();
        for (canvas, row) in rows {
            match users.last_mut() {
                Some(last) if *last.user == *row.row.user => {
                    last.connections += 1;
                    if last.canvases.last().map(String::as_str) != Some(canvas.as_str()) {
                        last.canvases.push(canvas.as_str().to_owned());
                    }
                }
                _ => users.push(UserPresence {
                    user: row.row.user.to_string(),
                    connections: 1,
                    canvases: vec![canvas.as_str().to_owned()],
                }),
            }
        }
        Ok(users)
    }
}

/// The objects a read holds, folded (its newest snapshot and the ops after it) and serialized: on a
/// blocking thread, as a big state takes tens of milliseconds.
async fn objects_of(canvas: &CanvasId, read: CanvasRead) -> Result<Bytes, BusError> {
    if read.ops.is_empty() {
        if let Some(snapshot) = &read.snapshot {
            return Ok(snapshot.json.clone()); // written by the same fold: already the state's JSON
        }
    }
    let canvas = canvas.clone();
    tokio::task::spawn_blocking(move || {
        let state = Canvas::from_read(read).map_err(|refusal| {
            tracing::error!(%canvas, %refusal, "the canvas's snapshot and log do not fold");
            BusError::from(Unavailable::Corrupt("a canvas's snapshot and log do not fold"))
        })?;
        Ok(state.objects.to_json())
    })
    .await
    .map_err(|_| BusError::from(Unavailable::ReadLost))?
}
