//! One WebSocket connection, owned by exactly one task: a `select!` over the client's frames, its outbound
//! queue, a cut (4009), the ping tick, the shutdown phase, a publish waiting for the store and a held cursor.
//! Nothing else touches the socket; everything the relay sends a client goes through its queue, so frames
//! leave in the order the hub decided.
//!
//! This module turns frames into actions (publish, cursor, pong, error) and decides how a connection ends
//! (close codes); parsing is `protocol`'s job, ordering the hub's, the first frames `welcome.rs`'s, and writing to the
//! socket and closing it `write.rs`'s.
//!
//! **Back-pressure.** A connection has at most `--max-in-flight` publishes waiting for the store. While one
//! waits for room (in-flight permits or the writer's queue), the session stops reading the socket, so the
//! client's sends block in TCP, but it keeps writing its queue: acks keep flowing and the client is never
//! cut for the server's slowness. 4009 is only for a client that does not read.

mod cursors;
mod publish;
mod welcome;
mod write;

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::{watch, Semaphore};
use tokio::time::Sleep;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use self::cursors::CursorPace;
use self::publish::{wait_stalled, Stalled};
use crate::admission::Ticket;
use crate::bus::{Joined, Replay};
use crate::clock::now_ms;
use crate::hub::{ConnId, Cut, Inbox, Outbox};
use crate::protocol::{close, error_frame, ClientFrame, FrameError, Role, Welcome, PONG_FRAME};
use crate::protocol::{CanvasId, ErrorCode, UserId};
use crate::ratelimit::{RateLimit, Verdict};
use crate::shutdown::{Guard, Phase};
use crate::App;

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
    canvas: CanvasId,
    user: UserId,
    role: Role,
    conn: ConnId,
    /// A clone of the queue the hub writes to: pongs and error frames join the same order.
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
    /// The connection's allowance of logged messages.
    rate_limit: RateLimit,
    /// Its allowance of ephemeral events (`--ephemeral-rate-limit`; refusals never close it).
    event_limit: RateLimit,
    /// Fires when the client's token expires (never without a token): the session closes with 1008.
    token_expiry: Pin<Box<Sleep>>,
    /// `--max-in-flight` permits: one per publish not yet answered by the store.
    in_flight: Arc<Semaphore>,
    /// The publish waiting for the store, if any: the socket is not read meanwhile.
    stalled: Option<Stalled>,
    /// This connection's cursors, paced to `--max-cursor-rate`.
    cursors: CursorPace,
}

/// What a session starts with.
pub struct SessionParts {
    pub canvas: CanvasId,
    pub user: UserId,
    /// What the token grants, lowered by `?role` if the client asked.
    pub role: Role,
    /// When the client's token expires (unix seconds), if it came with one.
    pub expires_at: Option<u64>,
    pub conn: ConnId,
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
        let cursors = CursorPace::new(app.config.max_cursor_rate);
        Session {
            socket,
            app,
            canvas: parts.canvas,
            user: parts.user,
            role: parts.role,
            conn: parts.conn,
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
            cursors,
        }
    }

    /// Serves the connection until it ends, then leaves the canvas.
    pub async fn run(mut self, mut joined: Joined) {
        self.app.metrics.connections.increment(1.0);
        self.app.metrics.connections_total.increment(1);
        let end = self.serve(&mut joined).await;
        tracing::debug!(canvas = %self.canvas, user = %self.user, conn = %self.conn, ?end, "connection ended");
        // Boxed: it runs once, at the end, and its future would otherwise be part of every session's task.
        Box::pin(joined.membership.leave()).await;
        self.app.metrics.connections.decrement(1.0);
    }

    async fn serve(&mut self, joined: &mut Joined) -> End {
        let welcome = Welcome {
            kind: "welcome",
            canvas: &self.canvas,
            user: &self.user,
            connection: self.conn.to_string(),
            instance: self.app.instance_id.to_string(),
            epoch: &joined.epoch,
            seq: joined.seq,
            resumed: joined.resumed,
            role: self.role.as_str(),
            presence: &joined.presence,
        };
        let frames = welcome::welcome_frames(&welcome, joined.objects.take());
        // What only the welcome needed goes now: a session lives for hours, and the presence list of a busy
        // canvas is kilobytes (the state, shared, went with `take`).
        joined.presence = crate::protocol::null_value();
        joined.epoch = String::new();
        if let Err(end) = self.write_all(frames).await {
            return end;
        }
        if let Some(replay) = joined.replay {
            // Boxed: once per session at most, and reading from the store makes a big future.
            if let Err(end) = Box::pin(self.replay(replay)).await {
                return end;
            }
        }
        let ping_every = self.app.config.ping_interval;
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        loop {
            let (reading, stalled) = (self.reading.is_some() && self.stalled.is_none(), self.stalled.is_some());
            // Not biased: under a constant stream of frames to write, reads, pings and held cursors still get
            // their turn.
            let step = tokio::select! {
                reason = self.inbox.kicked() => Err(self.cut(reason).await),
                _ = self.phase.changed() => self.on_phase().await,
                _ = &mut self.token_expiry => Err(self.close(close::POLICY, "token expired").await),
                (reference, queued) = wait_stalled(&mut self.stalled), if stalled => {
                    self.stalled = None;
                    self.on_queued(reference, queued);
                    Ok(())
                }
                () = self.inbox.ready() => self.write().await,
                incoming = self.socket.next(), if reading => self.on_incoming(incoming).await,
                _ = ping.tick() => self.on_ping_tick(ping_every),
                () = tokio::time::sleep_until(self.cursors.release_at()), if self.cursors.holding() => {
                    if let Some(data) = self.cursors.release(tokio::time::Instant::now()) {
                        cursors::relay(&data, &self.app, &self.canvas, &self.user, self.conn);
                    }
                    Ok(())
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Sends the seqs after the welcome that come before anything live, a page at a time from the log. A
    /// page that comes back short (rows expired meanwhile) cuts the client: it resumes, and reloads.
    async fn replay(&mut self, replay: Replay) -> Result<(), End> {
        let mut after = replay.after;
        while after < replay.upto {
            let upto = (after + welcome::REPLAY_PAGE).min(replay.upto);
            let page = self.app.bus.replay_page(&self.canvas, replay.generation, after, upto).await;
            match page {
                Ok(page) if page.len() as u64 == upto - after => self.write_all(page).await?,
                Ok(_) | Err(_) => return Err(self.cut(Cut::Gap).await),
            }
            after = upto;
        }
        Ok(())
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
            Some(Ok(Message::Text(text))) => self.on_text(text.as_str()).await,
            Some(Ok(Message::Binary(_))) => {
                self.reject(FrameError::new(
                    ErrorCode::InvalidFrame,
                    "binary frames are not supported: send JSON text",
                ));
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

    async fn on_text(&mut self, text: &str) -> Result<(), End> {
        match ClientFrame::parse(text) {
            Ok(ClientFrame::Ping) => self.queue(Message::text(PONG_FRAME)),
            Ok(ClientFrame::Cursor { data }) => {
                self.app.metrics.cursors_in.increment(1);
                if let Some(data) = self.cursors.offer(data, tokio::time::Instant::now()) {
                    cursors::relay(&data, &self.app, &self.canvas, &self.user, self.conn);
                }
            }
            Ok(ClientFrame::Logged(message)) if !self.role.may_publish() => {
                let error = FrameError::new(ErrorCode::Forbidden, "a viewer cannot send logged messages");
                self.reject(error.with_ref(message.reference));
            }
            Ok(ClientFrame::Logged(message)) => return self.publish(message).await,
            Ok(ClientFrame::Event { kind, data, reference }) => match self.event_limit.check(Instant::now()) {
                Verdict::Accept => cursors::relay_event(&kind, &data, &self.app, &self.canvas, &self.user, self.conn),
                Verdict::Refuse | Verdict::Close => {
                    let limit = self.app.config.ephemeral_rate_limit;
                    let message = format!("ephemeral events: at most {limit}/s per connection; slow down");
                    self.reject(FrameError::new(ErrorCode::RateLimited, message).with_ref(reference));
                }
            },
            Err(error) => self.reject(error),
        }
        Ok(())
    }

    fn reject(&mut self, error: FrameError) {
        self.app.metrics.frame_errors.increment(1);
        self.queue(Message::text(error_frame(&error)));
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
mod tests {
    use super::*;

    #[test]
    fn a_token_expiry_of_any_size_gives_a_deadline_without_overflow() {
        let now = 1_700_000_000_000;
        let start = tokio::time::Instant::now();
        let soon = expiry_deadline(Some(1_700_000_010), now);
        assert!(soon >= start + Duration::from_secs(9) && soon <= start + Duration::from_secs(11));
        assert!(expiry_deadline(Some(1), now) <= tokio::time::Instant::now(), "already expired: now");
        for huge in [9_300_000_000_000_000, u64::MAX] {
            assert!(expiry_deadline(Some(huge), now) > start + Duration::from_secs(50 * 365 * 24 * 3600));
        }
    }
}
