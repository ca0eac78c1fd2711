//! One WebSocket connection, owned by exactly one task: a `select!` over the client's frames, its outbound
//! queue, a cut (4009), the ping tick, the shutdown phase, a publish waiting for the store, a join waiting
//! for the store and held cursors. Nothing else touches the socket; everything the relay sends a client
//! goes through its queue, so frames leave in the order the hub decided.
//!
//! A socket serves one canvas (`/ws/{canvas}`) or, multiplexed (`GET /ws`, v1.1), the canvases it joins:
//! each is a [`JoinedCanvas`], its own connection in presence with its own id, role and cursor pace, while the
//! queue, the rate limits, back-pressure, the slow-client rule and close codes belong to the socket. The
//! multiplexed frames (join, leave, a canvas on every frame) are `mux.rs`'s.
//!
//! This module turns frames into actions (publish, cursor, pong, error) and decides how a connection ends
//! (close codes); parsing is `protocol`'s job, ordering the hub's, the first frames of a canvas
//! `joined_canvas.rs`'s, and writing to the socket and closing it `write.rs`'s.
//!
//! **Back-pressure.** A socket has at most `--max-in-flight` publishes waiting for the store. While one
//! waits for room (in-flight permits or the writer's queue), the session stops reading the socket, so the
//! client's sends block in TCP, but it keeps writing its queue: acks keep flowing and the client is never
//! cut for the server's slowness. 4009 is only for a client that does not read.

mod cursor_pace;
mod joined_canvas;
mod mux;
mod sending;
mod welcome;
mod write;

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::{watch, Semaphore};
use tokio::time::Sleep;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use self::joined_canvas::JoinedCanvas;
use self::sending::{wait_stalled, Stalled};
use crate::admission::Ticket;
use crate::clock::now_ms;
use crate::core::Joined;
use crate::hub::{Inbox, Kick, Outbox};
use crate::protocol::{close, error_frame_in, ClientFrame, Cut, ErrorCode, FrameError, Role, UserId, PONG_FRAME};
use crate::ratelimit::{RateLimit, Verdict};
use crate::shutdown::{Guard, Phase};
use crate::App;

pub use self::mux::Mux;

/// Why a connection ended (for the log).
#[derive(Debug)]
enum End {
    ClientClosed,
    /// Read through `Debug` in the "connection ended" log line.
    #[allow(dead_code)]
    Cut(Cut),
    TooLarge,
    InvalidUtf8,
    RateLimited,
    TokenExpired,
    ShuttingDown,
    Silent,
    WriteStalled,
    /// Read through `Debug` in the "connection ended" log line.
    #[allow(dead_code)]
    Broken(String),
}

/// One connected client.
pub struct Session<S> {
    socket: S,
    app: Arc<App>,
    user: UserId,
    /// The canvases this socket serves: the one of `/ws/{canvas}`, or those a multiplexed socket joined.
    members: Vec<JoinedCanvas>,
    /// What a multiplexed socket needs to join canvases; `None` on `/ws/{canvas}`.
    mux: Option<Box<Mux>>,
    /// The socket's queue, as the handle that names no canvas: pongs, and errors about no canvas. The
    /// hub writes to it through each member's handle.
    outbox: Outbox,
    inbox: Inbox,
    phase: watch::Receiver<Phase>,
    /// Held while this session may still read frames (and so publish); dropped when draining starts and no
    /// publish is still waiting to be queued.
    reading: Option<Guard>,
    /// Shutdown started: stop reading once nothing is stalled.
    draining: bool,
    /// Held until the session ends.
    _alive: Guard,
    /// This connection's place in the instance's connection limits, given back when the session ends.
    _admitted: Ticket,
    /// When the client last sent anything; a client silent for three ping intervals is dropped.
    last_heard: Instant,
    /// The socket's allowance of logged messages, whatever canvas they are for.
    rate_limit: RateLimit,
    /// Its allowance of ephemeral events (`--ephemeral-rate-limit`; refusals never close it).
    event_limit: RateLimit,
    /// Fires when the client's token expires (never without a token): the session closes with 1008.
    token_expiry: Pin<Box<Sleep>>,
    /// `--max-in-flight` permits: one per publish not yet answered by the store.
    in_flight: Arc<Semaphore>,
    /// The publish waiting for the store, if any: the socket is not read meanwhile.
    stalled: Option<Stalled>,
}

/// What a session starts with.
pub struct SessionParts {
    pub user: UserId,
    /// When the client's token expires (unix seconds), if it came with one.
    pub expires_at: Option<u64>,
    pub outbox: Outbox,
    pub inbox: Inbox,
    pub reading: Guard,
    pub alive: Guard,
    pub admitted: Ticket,
}

impl<S> Session<S>
where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin + Send,
{
    pub fn new(socket: S, app: Arc<App>, parts: SessionParts) -> Self {
        let mut phase = app.shutdown.subscribe();
        // A session that starts after shutdown began must see the phase it starts in.
        phase.mark_changed();
        let rate_limit = RateLimit::new(app.config.rate_limit, app.config.rate_burst, Instant::now());
        let events = app.config.ephemeral_rate_limit;
        let event_limit = RateLimit::new(events, events, Instant::now());
        let token_expiry = Box::pin(tokio::time::sleep_until(expiry_deadline(parts.expires_at, now_ms())));
        let in_flight = Arc::new(Semaphore::new(app.config.max_in_flight));
        Session {
            socket,
            app,
            user: parts.user,
            members: Vec::with_capacity(1),
            mux: None,
            outbox: parts.outbox,
            inbox: parts.inbox,
            phase,
            reading: Some(parts.reading),
            draining: false,
            _alive: parts.alive,
            _admitted: parts.admitted,
            last_heard: Instant::now(),
            rate_limit,
            event_limit,
            token_expiry,
            in_flight,
            stalled: None,
        }
    }

    /// Makes this a multiplexed socket, which joins canvases as the client asks.
    pub fn multiplexed(mut self, mux: Mux) -> Self {
        self.mux = Some(Box::new(mux));
        self
    }

    /// Serves the connection until it ends, starting with `first`'s welcome (the canvas of `/ws/{canvas}`),
    /// then leaves every canvas it is on. `first` comes boxed: an async fn keeps its arguments for as long as
    /// it runs, and a joined canvas's welcome material would otherwise stay in every session's task.
    pub async fn run(mut self, first: Option<Box<(Role, Joined)>>) {
        self.app.metrics.connections.increment(1.0);
        self.app.metrics.connections_total.increment(1);
        let started = match first.map(|first| *first) {
            Some((role, joined)) => self.start(role, joined).await,
            None => Ok(()),
        };
        let end = match started {
            Ok(()) => self.serve().await,
            Err(end) => end,
        };
        let canvases: Vec<&str> = self.members.iter().map(|member| member.canvas().as_str()).collect();
        tracing::debug!(user = %self.user, ?canvases, ?end, "connection ended");
        for member in std::mem::take(&mut self.members) {
            // Boxed: it runs once, at the end, and its future would otherwise be part of every session's task.
            Box::pin(member.leave()).await;
        }
        self.app.metrics.connections.decrement(1.0);
    }

    async fn serve(&mut self) -> End {
        let ping_every = self.app.config.ping_interval;
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        loop {
            let (reading, stalled) = (self.reading.is_some() && self.stalled.is_none(), self.stalled.is_some());
            let joining = self.mux.as_ref().is_some_and(|mux| mux.is_joining());
            let release = self.cursor_release();
            // Not biased: under a constant stream of frames to write, reads, pings and held cursors still get
            // their turn.
            let step = tokio::select! {
                kick = self.inbox.kicked() => self.on_kick(kick).await,
                _ = self.phase.changed() => self.on_phase().await,
                _ = &mut self.token_expiry => Err(self.close(close::POLICY, "token expired").await),
                (outbox, reference, queued) = wait_stalled(&mut self.stalled), if stalled => {
                    self.stalled = None;
                    self.on_queued(&outbox, reference, queued);
                    Ok(())
                }
                // Boxed, like the multiplexed frames below: a single-canvas session's task keeps no room for them.
                joined = mux::next_join(&mut self.mux), if joining => Box::pin(self.on_joined(joined)).await,
                // Boxed while they run, a flush and a frame's handling: an idle session's task would otherwise
                // keep room for both all its life (~1.3 KB of every idle socket).
                () = self.inbox.ready() => Box::pin(self.write()).await,
                incoming = self.socket.next(), if reading => Box::pin(self.on_incoming(incoming)).await,
                _ = ping.tick() => self.on_ping_tick(ping_every),
                () = tokio::time::sleep_until(release.unwrap_or_else(tokio::time::Instant::now)), if release.is_some() => {
                    self.release_cursors();
                    Ok(())
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    async fn on_kick(&mut self, kick: Kick) -> Result<(), End> {
        match kick {
            Kick::Cut(reason) => Err(self.cut(reason).await),
            Kick::Removed(canvases) => {
                for canvas in canvases {
                    self.app.metrics.cut(&canvas, Cut::Removed);
                    match (self.member_at(&canvas), self.mux.as_deref_mut()) {
                        (Some(at), _) => self.drop_member(at, true),
                        (None, Some(mux)) => mux.removed_while_joining(&canvas),
                        (None, None) => {}
                    }
                }
                Ok(())
            }
        }
    }

    async fn on_phase(&mut self) -> Result<(), End> {
        let phase = *self.phase.borrow_and_update();
        match phase {
            Phase::Running => Ok(()),
            Phase::Draining => {
                self.draining = true;
                self.stop_reading_if_draining();
                Ok(())
            }
            Phase::Closing => {
                let queued = self.inbox.take_all();
                self.write_all(queued).await?;
                Err(self.close(close::GOING_AWAY, "server shutting down: reconnect and resume").await)
            }
        }
    }

    /// Shutdown waits for sessions to stop reading before it flushes the writer: a publish still waiting to
    /// be queued keeps this one reading until it is.
    fn stop_reading_if_draining(&mut self) {
        if self.draining && self.stalled.is_none() {
            self.reading = None;
        }
    }

    fn on_ping_tick(&mut self, every: Duration) -> Result<(), End> {
        // While a publish is stalled the socket is not read on purpose: its silence is ours, not the client's.
        if self.stalled.is_none() && self.last_heard.elapsed() > every * 3 {
            return Err(End::Silent);
        }
        self.queue(Message::Ping(Default::default()));
        Ok(())
    }

    async fn on_incoming(&mut self, incoming: Option<Result<Message, WsError>>) -> Result<(), End> {
        self.last_heard = Instant::now();
        match incoming {
            None | Some(Ok(Message::Close(_))) => {
                // tungstenite queued the close reply; give it a moment to leave.
                let _ = tokio::time::timeout(Duration::from_secs(1), self.socket.close()).await;
                Err(End::ClientClosed)
            }
            Some(Ok(Message::Text(text))) => match self.mux {
                None => self.on_text(text.as_str()).await,
                Some(_) => Box::pin(self.on_addressed(text.as_str())).await,
            },
            Some(Ok(Message::Binary(_))) => {
                self.reject(
                    None,
                    FrameError::new(ErrorCode::InvalidFrame, "binary frames are not supported: send JSON text"),
                );
                Ok(())
            }
            Some(Ok(_)) => Ok(()), // WebSocket ping/pong: tungstenite answers pings itself
            Some(Err(WsError::Capacity(_))) => {
                let limit = self.app.config.max_frame_size;
                Err(self.close(close::TOO_LARGE, &format!("frame larger than {limit} bytes")).await)
            }
            Some(Err(WsError::Utf8(_))) => {
                Err(self.close(close::INVALID_PAYLOAD, "text frame is not valid UTF-8").await)
            }
            Some(Err(error)) => Err(End::Broken(error.to_string())),
        }
    }

    /// A frame of a single-canvas socket: for its one canvas.
    async fn on_text(&mut self, text: &str) -> Result<(), End> {
        match ClientFrame::parse(text) {
            Ok(frame) if !self.members.is_empty() => return self.on_frame(0, frame).await,
            Ok(_) => {}
            Err(error) => self.reject(None, error),
        }
        Ok(())
    }

    /// A frame for the canvas of `self.members[at]`.
    async fn on_frame(&mut self, at: usize, frame: ClientFrame) -> Result<(), End> {
        match frame {
            ClientFrame::Ping => self.queue(Message::text(PONG_FRAME)),
            ClientFrame::Cursor { data } => {
                self.app.metrics.cursors_in.increment(1);
                let member = &mut self.members[at];
                if let Some(data) = member.cursors.offer(data, tokio::time::Instant::now()) {
                    cursor_pace::relay(&data, &self.app, member.canvas(), &self.user, member.conn());
                }
            }
            ClientFrame::Presence { data } if data.get().len() > self.app.config.max_presence_bytes => {
                let (size, limit) = (data.get().len(), self.app.config.max_presence_bytes);
                let message = format!("a presence state of {size} bytes: at most {limit} (--max-presence-bytes)");
                self.reject_in(at, FrameError::new(ErrorCode::TooLarge, message));
            }
            ClientFrame::Presence { data } => {
                let member = &mut self.members[at];
                if let Some(data) = member.presence.offer(data, tokio::time::Instant::now()) {
                    cursor_pace::relay_presence(&data, &self.app, member.canvas(), &self.user, member.conn());
                }
            }
            ClientFrame::Logged(message) if !self.members[at].role.may_publish() => {
                let error = FrameError::new(ErrorCode::Forbidden, "a viewer cannot send logged messages");
                self.reject_in(at, error.with_ref(message.reference));
            }
            ClientFrame::Logged(message) => return self.publish(at, message).await,
            ClientFrame::Event { kind, data, reference } => match self.event_limit.check(Instant::now()) {
                Verdict::Accept => {
                    let member = &self.members[at];
                    cursor_pace::relay_event(&kind, &data, &self.app, member.canvas(), &self.user, member.conn());
                }
                Verdict::Refuse | Verdict::Close => {
                    let limit = self.app.config.ephemeral_rate_limit;
                    let message = format!("ephemeral events: at most {limit}/s per connection; slow down");
                    self.reject_in(at, FrameError::new(ErrorCode::RateLimited, message).with_ref(reference));
                }
            },
        }
        Ok(())
    }

    /// Queues an error frame about `canvas` (or about no canvas).
    fn reject(&mut self, canvas: Option<&str>, error: FrameError) {
        self.app.metrics.frame_errors.increment(1);
        self.queue(Message::text(error_frame_in(&error, canvas)));
    }

    /// Queues an error frame about a frame for `self.members[at]` (naming its canvas on a multiplexed socket).
    fn reject_in(&mut self, at: usize, error: FrameError) {
        self.app.metrics.frame_errors.increment(1);
        let outbox = &self.members[at].outbox;
        outbox.push(Message::text(error_frame_in(&error, outbox.canvas())));
    }

    /// Queues a frame behind whatever the hub queued; an overflow cuts this session like any other.
    fn queue(&self, frame: Message) {
        self.outbox.push(frame);
    }
}

/// The instant a token expiring at `expires_at` (unix seconds) runs out, at `now` (unix ms); far in the
/// future without a token, or for an expiry too far away to represent (a token may say any number).
fn expiry_deadline(expires_at: Option<u64>, now: i64) -> tokio::time::Instant {
    let start = tokio::time::Instant::now();
    let far = start + Duration::from_secs(100 * 365 * 24 * 3600);
    let Some(at) = expires_at else { return far };
    let left_ms = at.saturating_mul(1000).saturating_sub(now.max(0) as u64);
    start.checked_add(Duration::from_millis(left_ms)).map_or(far, |deadline| deadline.min(far))
}

#[cfg(test)]
mod tests;
