//! How a session writes to its socket and how it ends: a flush's worth of its queue at a time, whole
//! sequences of frames (a welcome's fragments), a cut (4009), and a close that waits for the client's reply.

use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::time::error::Elapsed;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::{End, Session};
use crate::protocol::{close, Cut};

/// Most frames written per flush, so one busy canvas cannot starve the socket's reads.
const MAX_FRAMES_PER_FLUSH: usize = 64;
/// How long a closing session waits for the client's close reply.
const CLOSE_REPLY_WAIT: Duration = Duration::from_secs(2);
/// Most bytes of logged frames fed to the socket before a flush.
const MAX_BYTES_PER_FLUSH: usize = 64 * 1024;

impl<S> Session<S>
where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin + Send,
{
    /// Writes one flush's worth of the queue (logged frames first, then cursors), then flushes. A cut or a
    /// client that stops reading for `--write-timeout` interrupts it.
    pub(super) async fn write(&mut self) -> Result<(), End> {
        let frames = self.inbox.take_flush(MAX_FRAMES_PER_FLUSH, MAX_BYTES_PER_FLUSH);
        if frames.is_empty() {
            return Ok(());
        }
        let limit = self.app.config.write_timeout;
        let mut frames = futures_util::stream::iter(frames.into_iter().map(Ok));
        let written = tokio::select! {
            result = tokio::time::timeout(limit, self.socket.send_all(&mut frames)) => result,
            // Only a cut interrupts a write: a removal from one canvas waits for the select loop.
            reason = self.inbox.cut() => return Err(self.cut(reason).await),
        };
        outcome(written)
    }

    /// Writes frames in order, then flushes. `--write-timeout` bounds each frame (a welcome fragment is one),
    /// not the whole: a 64 MiB welcome to a slow but reading client takes as long as it takes. After each
    /// fragment of a big welcome the task yields: a storm of joiners each being sent megabytes takes turns
    /// with every other session on the worker, a fragment at a time, instead of holding it for a whole
    /// scheduling budget (128 writes) each while other canvases' small frames wait.
    ///
    /// Boxed, like [`Session::close`]: used at the start and the end of a session, its future would
    /// otherwise make every idle session's task that much bigger.
    pub(super) fn write_all<I>(&mut self, frames: I) -> BoxFuture<'_, Result<(), End>>
    where
        I: IntoIterator<Item = Message> + Send + 'static,
        I::IntoIter: Send,
    {
        Box::pin(self.write_all_now(frames))
    }

    async fn write_all_now(&mut self, frames: impl IntoIterator<Item = Message>) -> Result<(), End> {
        let limit = self.app.config.write_timeout;
        for frame in frames {
            let fragment = matches!(frame, Message::Frame(_));
            outcome(tokio::time::timeout(limit, self.socket.feed(frame)).await)?;
            if fragment {
                // Out of the write buffer before the next one, so that the buffer never grows past a
                // fragment (it keeps its largest size for the socket's life: see `welcome`).
                outcome(tokio::time::timeout(limit, self.socket.flush()).await)?;
                tokio::task::yield_now().await;
            }
        }
        outcome(tokio::time::timeout(limit, self.socket.flush()).await)
    }

    /// Cuts the client with 4009 (it resumes to catch up), or 4003 when it was removed from the canvas,
    /// counted under its reason.
    pub(super) async fn cut(&mut self, reason: Cut) -> End {
        for member in &self.members {
            self.app.metrics.cut(member.canvas(), reason);
        }
        let (code, message) = match reason {
            Cut::Slow => (close::TOO_SLOW, "too slow: reconnect with since to catch up"),
            Cut::Gap => (close::TOO_SLOW, "messages expired before they could be sent: reconnect with since"),
            Cut::Epoch => (close::TOO_SLOW, "the canvas's log was replaced: reconnect with since (it will reload)"),
            Cut::Removed => (close::REMOVED, "removed from the canvas"),
        };
        self.close(code, message).await;
        End::Cut(reason)
    }

    /// Sends a close frame (bounded by the write timeout: a client that never reads is simply dropped), then
    /// reads until the client's close reply, as RFC 6455 asks: dropping a socket with unread client bytes
    /// makes the kernel send RST, which can destroy the close frame and the last frames before it.
    ///
    /// Boxed: rare, and its future (a bounded send, then a bounded drain) would otherwise be part of every
    /// idle session's task.
    pub(super) fn close(&mut self, code: u16, reason: &str) -> BoxFuture<'_, End> {
        let reason = reason.to_owned();
        Box::pin(async move { self.close_now(code, &reason).await })
    }

    async fn close_now(&mut self, code: u16, reason: &str) -> End {
        let frame = CloseFrame { code: CloseCode::from(code), reason: reason.to_owned().into() };
        let limit = self.app.config.write_timeout;
        if let Ok(Ok(())) = tokio::time::timeout(limit, self.socket.send(Message::Close(Some(frame)))).await {
            let drain = async { while let Some(Ok(_)) = self.socket.next().await {} };
            let _ = tokio::time::timeout(CLOSE_REPLY_WAIT, drain).await;
        }
        match code {
            close::GOING_AWAY => End::ShuttingDown,
            close::TOO_LARGE => End::TooLarge,
            close::INVALID_PAYLOAD => End::InvalidUtf8,
            close::RATE_LIMIT => End::RateLimited,
            close::POLICY => End::TokenExpired,
            _ => End::Broken(reason.to_owned()),
        }
    }
}

/// How a socket write bounded by `--write-timeout` ended, as the session's end if it failed.
fn outcome(written: Result<Result<(), WsError>, Elapsed>) -> Result<(), End> {
    match written {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(End::Broken(error.to_string())),
        Err(_) => Err(End::WriteStalled),
    }
}
