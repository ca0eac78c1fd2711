//! A multiplexed socket (`GET /ws`, v1.1 "One socket, many canvases"): `join` and `leave`, and frames that
//! name a joined canvas.
//!
//! - A join is checked at once (not joined or joining already, within `--max-canvases-per-connection`,
//!   inside the token's scope), then waits for the store (the API's block, presence, the snapshot) in the
//!   select loop beside everything else, so a slow join never holds up the socket's other canvases. Its
//!   canvas's frames wait in the queue until its welcome is written (`Inbox::hold`).
//! - A canvas counts as joined from its welcome: a frame for a canvas not joined (or still joining) gets
//!   `invalid_frame` naming it, and so does a leave.
//! - A refused join is an error frame naming the canvas: `forbidden` (out of the token's scope, blocked
//!   through the API, or removed through it while joining), `invalid_frame`, `too_many_canvases`,
//!   `unavailable` (the store).

use std::future::Future;
use std::task::Poll;
use std::time::Instant;

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{Sink, Stream, StreamExt};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use uuid::Uuid;

use super::{End, Session};
use crate::auth::Grant;
use crate::bus::{JoinRequest, Joined};
use crate::protocol::{close, Addressed, CanvasId, ErrorCode, FrameError, Misaddressed, Resume, Role, PONG_FRAME};
use crate::ratelimit::Verdict;

/// A join waiting for the store: its canvas, the role it is granted, and the outcome.
type Joining = BoxFuture<'static, (CanvasId, Role, Result<Joined, FrameError>)>;

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
    /// Joins waiting for the store.
    joins: FuturesUnordered<Joining>,
    /// Their canvases.
    joining: Vec<CanvasId>,
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

    /// A removal through the API for a canvas still joining: kept until its join is done.
    pub(super) fn removed_while_joining(&mut self, canvas: &CanvasId) {
        if self.joining.contains(canvas) && !self.removed.contains(canvas) {
            self.removed.push(canvas.clone());
        }
    }
}

/// The next join the store answered (the select loop polls this only while one waits). A `poll_fn` rather
/// than an async fn: the select loop of every session, multiplexed or not, holds this future, and an async
/// fn's would keep room for the whole `Joined` it returns.
pub(super) fn next_join(
    mux: &mut Option<Box<Mux>>,
) -> impl Future<Output = (CanvasId, Role, Result<Joined, FrameError>)> + '_ {
    std::future::poll_fn(move |cx| match mux.as_mut().map(|mux| mux.joins.poll_next_unpin(cx)) {
        Some(Poll::Ready(Some(joined))) => Poll::Ready(joined),
        _ => Poll::Pending,
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
            Ok(Addressed::Leave { canvas }) => match self.member_at(&canvas) {
                Some(at) if self.within_rate(&canvas).await? => self.drop_member(at, false),
                Some(_) => {}
                None => self.reject(Some(canvas.as_str()), not_joined(&canvas, None)),
            },
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

    /// Charges a join or a leave to the socket's rate limit, as a logged message is: each costs store writes
    /// and may log a presence message that reaches every connection of the canvas. `false` when refused
    /// (`rate_limited`, naming the canvas); 4008 for a client that keeps going.
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
        let refusal = if self.members.iter().any(|member| member.canvas() == &canvas) || mux.joining.contains(&canvas) {
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
        let request = JoinRequest {
            canvas: canvas.clone(),
            conn: Uuid::new_v4(),
            user: self.user.clone(),
            name: mux.name.clone(),
            resume,
            outbox: self.outbox.for_canvas(canvas.clone()),
        };
        self.inbox.hold(&canvas);
        mux.joining.push(canvas.clone());
        let app = self.app.clone();
        mux.joins.push(Box::pin(async move {
            // A blocked user, or one removed from the canvas while it joins, is `forbidden`.
            let joined = app.bus.join(request).await.map_err(|error| FrameError::new(error.code(), error.to_string()));
            (canvas, role, joined)
        }));
    }

    /// A join the store answered: its welcome, then what its queue held meanwhile; or its refusal.
    pub(super) async fn on_joined(
        &mut self,
        (canvas, role, joined): (CanvasId, Role, Result<Joined, FrameError>),
    ) -> Result<(), End> {
        let mut removed = false;
        if let Some(mux) = self.mux.as_deref_mut() {
            mux.joining.retain(|joining| joining != &canvas);
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
