//! A multiplexed socket (`GET /ws`, v1.1 "One socket, many canvases"): `join` and `leave`, and frames that
//! name a joined canvas.
//!
//! - A join is checked at once (not joined or joining already, within `--max-canvases-per-connection`,
//!   inside the token's scope), then waits for the store (the API's block, presence, the snapshot) in the
//!   select loop beside everything else, so a slow join never holds up the socket's other canvases. Its
//!   canvas's frames wait in the queue until its welcome is written (`Inbox::hold`).
//! - A canvas counts as joined from its welcome: a frame for a canvas not joined (or still joining) gets
//!   `invalid_frame` naming it.
//! - A leave is answered `left` whatever the state of the join (v1.2 "Leaving"), never charged to the rate
//!   limit: a joined canvas is left; a join still waiting for the store is cancelled, and leaves nothing
//!   behind (its presence registration is undone, its subscriber and held frames dropped, no welcome); a
//!   canvas neither joined nor joining is simply answered.
//! - A refused join is an error frame naming the canvas: `forbidden` (out of the token's scope, blocked
//!   through the API, or removed through it while joining), `invalid_frame`, `too_many_canvases`,
//!   `unavailable` (the store).

use std::future::Future;
use std::task::Poll;
use std::time::Instant;

use futures_util::future::{AbortHandle, Abortable, BoxFuture};
use futures_util::stream::FuturesUnordered;
use futures_util::{Sink, Stream, StreamExt};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use uuid::Uuid;

use super::{End, Session};
use crate::auth::Grant;
use crate::core::{JoinRequest, Joined};
use crate::protocol::{
    close, left_frame, Addressed, CanvasId, ConnId, ErrorCode, FrameError, Misaddressed, Resume, Role, PONG_FRAME,
};
use crate::ratelimit::Verdict;

/// A join the store answered: its canvas, the role it is granted, and the outcome.
type JoinOutcome = (CanvasId, Role, Result<Joined, FrameError>);

/// A join waiting for the store; `None` when a leave cancelled it.
type Joining = BoxFuture<'static, Option<JoinOutcome>>;

/// A join waiting for the store, as a leave finds it.
struct Pending {
    /// Its canvas: a socket joins a canvas once at a time, so a leave names the join it cancels.
    canvas: CanvasId,
    /// The connection id it registers in presence and subscribes to the room with: a leave takes that
    /// subscriber out of the room at once, whatever the join has done so far.
    conn: ConnId,
    /// Cancels it: the join's future is dropped at its next poll, which undoes its registration (see
    /// `Membership`) and abandons a room it created.
    abort: AbortHandle,
}

/// What a multiplexed socket needs to join canvases.
pub struct Mux {
    /// What the client's token grants (with `--jwt-secret`); without auth every canvas, as an editor.
    grant: Option<Grant>,
    /// The role the client asked for (`?role`): it lowers what the grant gives, never raises it.
    asked: Role,
    /// The display name every join shows in presence.
    name: Option<String>,
    /// `--max-canvases-per-connection`: joined and joining canvases at once.
    max_canvases: usize,
    /// Joins waiting for the store (and cancelled ones, until their next poll drops them).
    joins: FuturesUnordered<Joining>,
    /// The joins still waiting, by canvas.
    joining: Vec<Pending>,
    /// Joining canvases the API removed this user from after their room took the join and before its
    /// welcome: they are left as soon as they are joined.
    removed: Vec<CanvasId>,
}

impl Mux {
    pub fn new(grant: Option<Grant>, asked: Role, name: Option<String>, max_canvases: usize) -> Self {
        Mux {
            grant,
            asked,
            name,
            max_canvases,
            joins: FuturesUnordered::new(),
            joining: Vec::new(),
            removed: Vec::new(),
        }
    }

    pub(super) fn is_joining(&self) -> bool {
        !self.joins.is_empty()
    }

    fn is_joining_canvas(&self, canvas: &CanvasId) -> bool {
        self.joining.iter().any(|pending| &pending.canvas == canvas)
    }

    /// A removal through the API for a canvas still joining: kept until its join is done.
    pub(super) fn removed_while_joining(&mut self, canvas: &CanvasId) {
        if self.is_joining_canvas(canvas) && !self.removed.contains(canvas) {
            self.removed.push(canvas.clone());
        }
    }

    /// Cancels the join of `canvas`, if one waits; returns the connection id it joins with.
    fn cancel(&mut self, canvas: &CanvasId) -> Option<ConnId> {
        let at = self.joining.iter().position(|pending| &pending.canvas == canvas)?;
        let pending = self.joining.swap_remove(at);
        pending.abort.abort();
        self.removed.retain(|gone| gone != canvas);
        Some(pending.conn)
    }
}

/// The next join the store answered (the select loop polls this only while one waits); cancelled ones are
/// dropped on the way. A `poll_fn` rather than an async fn: the select loop of every session, multiplexed or
/// not, holds this future, and an async fn's would keep room for the whole `Joined` it returns.
pub(super) fn next_join(mux: &mut Option<Box<Mux>>) -> impl Future<Output = JoinOutcome> + '_ {
    std::future::poll_fn(move |cx| {
        let Some(mux) = mux.as_mut() else { return Poll::Pending };
        loop {
            match mux.joins.poll_next_unpin(cx) {
                Poll::Ready(Some(Some(outcome))) => return Poll::Ready(outcome),
                Poll::Ready(Some(None)) => continue,
                _ => return Poll::Pending,
            }
        }
    })
}

impl<S> Session<S>
where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin + Send,
{
    /// A frame of a multiplexed socket.
    pub(super) async fn on_addressed(&mut self, text: &str) -> Result<(), End> {
        match Addressed::parse(text) {
            Ok(Addressed::Ping) => self.queue(Message::text(PONG_FRAME)),
            Ok(Addressed::Join { canvas, resume }) => {
                if self.within_rate(&canvas).await? {
                    self.join(canvas, resume);
                }
            }
            Ok(Addressed::Leave { canvas }) => self.leave(&canvas),
            Ok(Addressed::To { canvas, frame }) => match self.member_at(&canvas) {
                Some(at) => return self.on_frame(at, frame).await,
                None => {
                    let reference = frame.reference().map(str::to_owned);
                    self.reject(Some(canvas.as_str()), not_joined(&canvas, reference));
                }
            },
            Err(Misaddressed { canvas, error }) => self.reject(canvas.as_deref(), error),
        }
        Ok(())
    }

    /// A leave (v1.2 "Leaving"), in any state of the join, answered `left` once. Not charged to the rate
    /// limit: a client must always be able to let go of a canvas, and what it undoes (presence, a room) is
    /// at most what its join was charged for.
    fn leave(&mut self, canvas: &CanvasId) {
        if let Some(at) = self.member_at(canvas) {
            return self.drop_member(at, false);
        }
        if let Some(conn) = self.mux.as_deref_mut().and_then(|mux| mux.cancel(canvas)) {
            // Out of the room now (the join may have placed it), then what its room delivered meanwhile
            // goes: none of it may follow `left`, nor reach a rejoin's welcome.
            self.app.hub.leave(canvas, conn);
            self.inbox.discard(canvas);
        }
        self.queue(Message::text(left_frame(canvas.as_str(), false)));
    }

    /// Charges a join to the socket's rate limit, as a logged message is: it costs store writes and may log a
    /// presence message that reaches every connection of the canvas. `false` when refused (`rate_limited`,
    /// naming the canvas); 4008 for a client that keeps going.
    async fn within_rate(&mut self, canvas: &CanvasId) -> Result<bool, End> {
        match self.rate_limit.check(Instant::now()) {
            Verdict::Accept => Ok(true),
            Verdict::Refuse => {
                let error = FrameError::new(ErrorCode::RateLimited, self.rate_limit.describe());
                self.reject(Some(canvas.as_str()), error);
                Ok(false)
            }
            Verdict::Close => {
                self.app.metrics.clients_cut_rate.increment(1);
                Err(self.close(close::RATE_LIMIT, "kept sending after rate_limited errors").await)
            }
        }
    }

    /// Checks a join and sets it waiting for the store.
    fn join(&mut self, canvas: CanvasId, resume: Option<Resume>) {
        let Some(mux) = self.mux.as_deref_mut() else { return };
        let refusal = if self.members.iter().any(|member| member.canvas() == &canvas) || mux.is_joining_canvas(&canvas)
        {
            Some(FrameError::new(ErrorCode::InvalidFrame, format!("canvas {canvas} is already joined on this socket")))
        } else if self.members.len() + mux.joining.len() >= mux.max_canvases {
            let message =
                format!("at most {} canvases per connection (--max-canvases-per-connection)", mux.max_canvases);
            Some(FrameError::new(ErrorCode::TooManyCanvases, message))
        } else {
            None
        };
        let granted = match (&mux.grant, refusal) {
            (_, Some(refusal)) => Err(refusal),
            (Some(grant), None) => {
                grant.role_on(&canvas).map_err(|e| FrameError::new(ErrorCode::Forbidden, e.to_string()))
            }
            (None, None) => Ok(Role::Editor),
        };
        let role = match granted {
            Ok(role) => role.min(mux.asked),
            Err(error) => return self.reject(Some(canvas.as_str()), error),
        };
        let conn = Uuid::new_v4();
        let request = JoinRequest {
            canvas: canvas.clone(),
            conn,
            user: self.user.clone(),
            name: mux.name.clone(),
            resume,
            outbox: self.outbox.for_canvas(canvas.clone()),
        };
        self.inbox.hold(&canvas);
        let (abort, registration) = AbortHandle::new_pair();
        mux.joining.push(Pending { canvas: canvas.clone(), conn, abort });
        let app = self.app.clone();
        let joining = async move {
            // A blocked user, or one removed from the canvas while it joins, is `forbidden`.
            let joined = app.bus.join(request).await.map_err(|error| FrameError::new(error.code(), error.to_string()));
            (canvas, role, joined)
        };
        mux.joins.push(Box::pin(async move { Abortable::new(joining, registration).await.ok() }));
    }

    /// A join the store answered: its welcome, then what its queue held meanwhile; or its refusal.
    pub(super) async fn on_joined(&mut self, (canvas, role, joined): JoinOutcome) -> Result<(), End> {
        let mut removed = false;
        if let Some(mux) = self.mux.as_deref_mut() {
            mux.joining.retain(|pending| pending.canvas != canvas);
            removed = mux.removed.iter().any(|gone| gone == &canvas);
            mux.removed.retain(|gone| gone != &canvas);
        }
        match joined {
            Ok(joined) => {
                // What is queued goes first: a `left` of this canvas (a rejoin) and anything of it before
                // that must reach the client before the new welcome, which is written past the queue.
                let queued = self.inbox.take_all();
                self.write_all(queued).await?;
                let started = self.start(role, joined).await;
                self.inbox.release(&canvas);
                if let (true, Some(at)) = (removed, self.member_at(&canvas)) {
                    self.drop_member(at, true);
                }
                started
            }
            Err(error) => {
                self.inbox.discard(&canvas);
                self.reject(Some(canvas.as_str()), error);
                Ok(())
            }
        }
    }
}

/// The refusal of a frame for a canvas this socket has not joined.
fn not_joined(canvas: &CanvasId, reference: Option<String>) -> FrameError {
    let message = format!("canvas {canvas} is not joined on this socket: send a join and wait for its welcome");
    FrameError::new(ErrorCode::InvalidFrame, message).with_ref(reference)
}
