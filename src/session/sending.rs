//! A session's logged messages on their way to the store: the rate limit, then a publish that waits for an
//! in-flight permit and a place in the writer's queue while the session goes on writing (see the back-
//! pressure paragraph of `session/mod.rs`), bounded by `--publish-timeout`.

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use futures_util::{Sink, Stream};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::{End, Session};
use crate::core::{BusError, Origin, Publish, TryPublish, Unavailable};
use crate::hub::Outbox;
use crate::protocol::{close, error_frame_in, ErrorCode, FrameError, LoggedMessage};
use crate::ratelimit::Verdict;

/// A publish waiting for an in-flight permit and a place in the writer's queue: it ends with the handle
/// of its canvas (which a refusal names) and its `ref`.
pub(super) type Stalled = Pin<Box<dyn Future<Output = (Outbox, Option<String>, Result<(), BusError>)> + Send>>;

impl<S> Session<S>
where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin + Send,
{
    /// Publishes a logged message for `self.members[at]`'s canvas, within the socket's rate limit. It is
    /// handed to the store in the select loop (`stalled`), so that waiting for room never stops this session
    /// from writing.
    pub(super) async fn publish(&mut self, at: usize, mut message: LoggedMessage) -> Result<(), End> {
        match self.rate_limit.check(Instant::now()) {
            Verdict::Accept => {}
            Verdict::Refuse => {
                let error = FrameError::new(ErrorCode::RateLimited, self.rate_limit.describe());
                self.reject_in(at, error.with_ref(message.reference));
                return Ok(());
            }
            Verdict::Close => {
                self.app.metrics.clients_cut_rate.increment(1);
                return Err(self.close(close::RATE_LIMIT, "kept sending after rate_limited errors").await);
            }
        }
        self.app.metrics.messages_in.increment(1);
        let member = &self.members[at];
        let (canvas, conn, outbox) = (member.canvas().clone(), member.conn(), member.outbox.clone());
        // The usual case: a permit free and room in the queue, taken at once without a future or a turn of
        // the select loop.
        let mut message = match self.in_flight.clone().try_acquire_owned() {
            Ok(in_flight) => {
                let reference = message.reference.clone();
                let origin =
                    Origin::Socket { conn, reference: message.reference.take(), outbox: outbox.clone(), in_flight };
                let publish = Publish::message(canvas.clone(), message, self.user.clone(), origin);
                match self.app.bus.try_publish(publish) {
                    Ok(()) => return Ok(()),
                    Err(TryPublish::Closed) => {
                        self.on_queued(&outbox, reference, Err(BusError::ShuttingDown));
                        return Ok(());
                    }
                    Err(TryPublish::Full(publish)) => (*publish).into_message(reference),
                }
            }
            Err(_) => message,
        };
        let from = self.user.clone();
        let (bus, in_flight, limit) = (self.app.bus.clone(), self.in_flight.clone(), self.app.bus.publish_timeout());
        self.stalled = Some(Box::pin(async move {
            let reference = message.reference.clone();
            let replies = outbox.clone();
            let queue = async {
                let in_flight = in_flight.acquire_owned().await.map_err(|_| BusError::ShuttingDown)?;
                let origin = Origin::Socket { conn, reference: message.reference.take(), outbox, in_flight };
                bus.publish(Publish::message(canvas, message, from, origin)).await
            };
            let queued = tokio::time::timeout(limit, queue).await.unwrap_or_else(|_| Err(Unavailable::Timeout.into()));
            (replies, reference, queued)
        }));
        Ok(())
    }

    /// A stalled publish was queued, or given up: in that case the client hears why, through `outbox`, the
    /// handle of the publish's canvas.
    pub(super) fn on_queued(&mut self, outbox: &Outbox, reference: Option<String>, queued: Result<(), BusError>) {
        self.last_heard = Instant::now();
        if let Err(error) = queued {
            let error = FrameError::new(error.code(), error.to_string()).with_ref(reference);
            outbox.push(Message::text(error_frame_in(&error, outbox.canvas())));
        }
        self.stop_reading_if_draining();
    }
}

/// The stalled publish's outcome (the select loop polls this only while there is one).
pub(super) async fn wait_stalled(stalled: &mut Option<Stalled>) -> (Outbox, Option<String>, Result<(), BusError>) {
    match stalled {
        Some(publish) => publish.await,
        None => std::future::pending().await,
    }
}
