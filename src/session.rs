//! One WebSocket connection, owned by exactly one task: a `select!` over the client's frames, its bounded
//! outbound queue, a kick (queue overflow), the ping tick and the shutdown phase. Nothing else touches the
//! socket; everything the relay sends a client goes through its queue, so frames leave in the order the hub
//! decided.
//!
//! This module turns frames into actions (publish, cursor, pong, error) and decides how a connection ends
//! (close codes); parsing is `protocol`'s job and ordering is the hub's.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::watch;
use tokio::time::Sleep;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::admission::Ticket;
use crate::bus::{Joined, Origin, Publish};
use crate::clock::now_ms;
use crate::hub::{ConnId, Inbox, Outbox};
use crate::protocol::{
    close, cursor_frame, error_frame, to_json, ClientFrame, ErrorCode, FrameError, LoggedMessage, Welcome, PONG_FRAME,
};
use crate::protocol::{CanvasId, UserId};
use crate::ratelimit::{RateLimit, Verdict};
use crate::shutdown::{Guard, Phase};
use crate::App;

/// Most frames written per flush, so one busy canvas cannot starve the socket's reads.
const MAX_FRAMES_PER_FLUSH: usize = 64;
/// How long a closing session waits for the client's close reply.
const CLOSE_REPLY_WAIT: Duration = Duration::from_secs(2);
/// Most bytes fed to the socket before a flush.
const MAX_BYTES_PER_FLUSH: usize = 64 * 1024;

/// Why a connection ended (for the log).
#[derive(Debug)]
enum End {
    ClientClosed,
    TooSlow,
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
    /// The display name given at connect, shown in presence.
    name: Option<String>,
    conn: ConnId,
    /// A clone of the queue the hub writes to: pongs and error frames join the same order.
    outbox: Outbox,
    inbox: Inbox,
    phase: watch::Receiver<Phase>,
    /// Held while this session may still read frames (and so publish); dropped when draining starts.
    reading: Option<Guard>,
    /// Held until the session ends.
    _alive: Guard,
    /// This connection's place in the instance's connection limits, given back when the session ends.
    _admitted: Ticket,
    /// When the client last sent anything; a client silent for three ping intervals is dropped.
    last_heard: Instant,
    /// The connection's allowance of logged messages.
    rate_limit: RateLimit,
    /// Fires when the client's token expires (never without a token): the session closes with 1008.
    token_expiry: Pin<Box<Sleep>>,
}

/// What a session starts with.
pub struct SessionParts {
    pub canvas: CanvasId,
    pub user: UserId,
    pub name: Option<String>,
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
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
{
    pub fn new(socket: S, app: Arc<App>, parts: SessionParts) -> Self {
        let phase = app.shutdown.subscribe();
        let rate_limit = RateLimit::new(app.config.rate_limit, app.config.rate_burst, Instant::now());
        let token_expiry = Box::pin(tokio::time::sleep_until(expiry_deadline(parts.expires_at)));
        Session {
            socket,
            app,
            canvas: parts.canvas,
            user: parts.user,
            name: parts.name,
            conn: parts.conn,
            outbox: parts.outbox,
            inbox: parts.inbox,
            phase,
            reading: Some(parts.reading),
            _alive: parts.alive,
            _admitted: parts.admitted,
            last_heard: Instant::now(),
            rate_limit,
            token_expiry,
        }
    }

    /// Serves the connection until it ends, then leaves the canvas.
    pub async fn run(mut self, joined: Joined) {
        let metrics = self.app.metrics.clone();
        metrics.connections.increment(1.0);
        metrics.connections_total.increment(1);
        let end = self.serve(joined).await;
        tracing::debug!(canvas = %self.canvas, user = %self.user, conn = %self.conn, ?end, "connection ended");
        let (canvas, user, name) = (self.canvas.clone(), self.user.clone(), self.name.take());
        self.app.bus.leave(canvas, self.conn, user, name).await;
        metrics.connections.decrement(1.0);
    }

    async fn serve(&mut self, joined: Joined) -> End {
        let welcome = Welcome {
            kind: "welcome",
            canvas: &self.canvas,
            user: &self.user,
            connection: self.conn.to_string(),
            instance: self.app.instance_id.to_string(),
            epoch: &joined.epoch,
            seq: joined.seq,
            resumed: joined.resumed,
            presence: &joined.presence,
            objects: joined.objects.as_deref(),
        };
        let frames = std::iter::once(Message::text(to_json(&welcome))).chain(joined.replay);
        if let Err(end) = self.write_all(frames).await {
            return end;
        }
        let ping_every = self.app.config.ping_interval;
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        loop {
            let step = tokio::select! {
                biased;
                _ = self.inbox.kicked() => Err(self.close(close::TOO_SLOW, "too slow: reconnect with since to catch up").await),
                _ = self.phase.changed() => self.on_phase().await,
                _ = &mut self.token_expiry => Err(self.close(close::POLICY, "token expired").await),
                frame = self.inbox.recv() => self.write(frame).await,
                incoming = self.socket.next(), if self.reading.is_some() => self.on_incoming(incoming).await,
                _ = ping.tick() => self.on_ping_tick(ping_every),
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    async fn on_phase(&mut self) -> Result<(), End> {
        let phase = *self.phase.borrow_and_update();
        match phase {
            Phase::Running => Ok(()),
            Phase::Draining => {
                self.reading = None;
                Ok(())
            }
            Phase::Closing => {
                let mut queued = Vec::new();
                while let Some(frame) = self.inbox.try_recv() {
                    queued.push(frame);
                }
                self.write_all(queued).await?;
                Err(self.close(close::GOING_AWAY, "server shutting down: reconnect and resume").await)
            }
        }
    }

    fn on_ping_tick(&mut self, every: Duration) -> Result<(), End> {
        if self.last_heard.elapsed() > every * 3 {
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
                self.reject(FrameError::new(ErrorCode::InvalidFrame, "binary frames are not supported: send JSON text"));
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
                let frame = cursor_frame(self.canvas.as_str(), self.user.as_str(), &data, now_ms());
                if let Some(room) = self.app.hub.room(&self.canvas) {
                    room.lock().broadcast_ephemeral(Some(self.conn), &Message::text(frame.clone()));
                }
                self.app.cursors.record(&self.canvas, &self.user, frame);
            }
            Ok(ClientFrame::Logged(message)) => return self.publish(message).await,
            Err(error) => self.reject(error),
        }
        Ok(())
    }

    /// Publishes a logged message, within the connection's rate limit.
    async fn publish(&mut self, message: LoggedMessage) -> Result<(), End> {
        match self.rate_limit.check(Instant::now()) {
            Verdict::Accept => {}
            Verdict::Refuse => {
                let error = FrameError::new(ErrorCode::RateLimited, self.rate_limit.describe());
                self.reject(error.with_ref(message.reference));
                return Ok(());
            }
            Verdict::Close => {
                self.app.metrics.clients_cut_rate.increment(1);
                return Err(self.close(close::RATE_LIMIT, "kept sending after rate_limited errors").await);
            }
        }
        self.app.metrics.messages_in.increment(1);
        let reference = message.reference.clone();
        let publish = Publish {
            canvas: self.canvas.clone(),
            kind: message.kind,
            data: message.data,
            from: self.user.clone(),
            origin: Origin::Socket { conn: self.conn, reference: message.reference, outbox: self.outbox.clone() },
        };
        if let Err(error) = self.app.bus.publish(publish).await {
            let error = FrameError::new(ErrorCode::Unavailable, error.to_string()).with_ref(reference);
            self.queue(Message::text(error_frame(&error)));
        }
        Ok(())
    }

    fn reject(&mut self, error: FrameError) {
        self.app.metrics.frame_errors.increment(1);
        self.queue(Message::text(error_frame(&error)));
    }

    /// Queues a frame behind whatever the hub queued; an overflow kicks this session like any other.
    fn queue(&self, frame: Message) {
        self.outbox.push(frame);
    }

    /// Writes one queued frame and whatever else is waiting (up to a flush's worth), then flushes. A kick or a
    /// client that stops reading for `--write-timeout` interrupts it.
    async fn write(&mut self, first: Message) -> Result<(), End> {
        let limit = self.app.config.write_timeout;
        let written = tokio::select! {
            result = tokio::time::timeout(limit, write_batch(&mut self.socket, first, &self.inbox)) => result,
            _ = self.inbox.kicked() => {
                return Err(self.close(close::TOO_SLOW, "too slow: reconnect with since to catch up").await)
            }
        };
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(End::Broken(error.to_string())),
            Err(_) => Err(End::WriteStalled),
        }
    }

    async fn write_all(&mut self, frames: impl IntoIterator<Item = Message>) -> Result<(), End> {
        let limit = self.app.config.write_timeout;
        let mut stream = futures_util::stream::iter(frames.into_iter().map(Ok));
        match tokio::time::timeout(limit, self.socket.send_all(&mut stream)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(End::Broken(error.to_string())),
            Err(_) => Err(End::WriteStalled),
        }
    }

    /// Sends a close frame (bounded by the write timeout: a client that never reads is simply dropped), then
    /// reads until the client's close reply, as RFC 6455 asks: dropping a socket with unread client bytes
    /// makes the kernel send RST, which can destroy the close frame and the last frames before it.
    async fn close(&mut self, code: u16, reason: &str) -> End {
        let frame = CloseFrame { code: CloseCode::from(code), reason: reason.to_owned().into() };
        let limit = self.app.config.write_timeout;
        if let Ok(Ok(())) = tokio::time::timeout(limit, self.socket.send(Message::Close(Some(frame)))).await {
            let drain = async { while let Some(Ok(_)) = self.socket.next().await {} };
            let _ = tokio::time::timeout(CLOSE_REPLY_WAIT, drain).await;
        }
        match code {
            close::TOO_SLOW => {
                self.app.metrics.clients_cut_slow.increment(1);
                End::TooSlow
            }
            close::GOING_AWAY => End::ShuttingDown,
            close::TOO_LARGE => End::TooLarge,
            close::INVALID_PAYLOAD => End::InvalidUtf8,
            close::RATE_LIMIT => End::RateLimited,
            close::POLICY => End::TokenExpired,
            _ => End::Broken(reason.to_owned()),
        }
    }
}

/// The instant a token expiring at `expires_at` (unix seconds) runs out; far in the future without a token.
fn expiry_deadline(expires_at: Option<u64>) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    match expires_at {
        Some(at) => now + Duration::from_millis((at as i64 * 1000 - now_ms()).max(0) as u64),
        None => now + Duration::from_secs(100 * 365 * 24 * 3600),
    }
}

/// Feeds `first` and what is already queued behind it, then flushes once.
async fn write_batch<S>(socket: &mut S, first: Message, inbox: &Inbox) -> Result<(), WsError>
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    let mut bytes = first.len();
    socket.feed(first).await?;
    for _ in 1..MAX_FRAMES_PER_FLUSH {
        if bytes >= MAX_BYTES_PER_FLUSH {
            break;
        }
        let Some(frame) = inbox.try_recv() else { break };
        bytes += frame.len();
        socket.feed(frame).await?;
    }
    socket.flush().await
}
