//! One canvas a session serves ([`JoinedCanvas`]): the canvas of `/ws/{canvas}`, or one that a multiplexed socket
//! joined. Each is its own connection in presence and in its room, with its own connection id, role and
//! cursor pace. This module starts one (the welcome, then the replay before anything live) and ends one
//! (out of the room at once, out of presence through the writer).

use futures_util::future::BoxFuture;
use futures_util::{Sink, Stream};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::cursor_pace::CursorPace;
use super::welcome::{welcome_frames, REPLAY_PAGE};
use super::{End, Session};
use crate::core::join::Membership;
use crate::core::{Joined, Replay};
use crate::hub::Outbox;
use crate::protocol::{left_frame, CanvasId, ConnId, Cut, Role, Welcome};

/// One canvas of a session.
pub(super) struct JoinedCanvas {
    /// Its place in presence (canvas, connection id, user, name); leaving takes it out.
    membership: Membership,
    /// What the token grants on the canvas, lowered by `?role`.
    pub(super) role: Role,
    /// The socket's queue as this canvas's handle: acks and errors name the canvas on a multiplexed socket.
    pub(super) outbox: Outbox,
    /// This connection's cursors, paced to `--max-cursor-rate`.
    pub(super) cursors: CursorPace,
    /// Its presence states (v1.1), paced to the same rate.
    pub(super) presence: CursorPace,
}

impl JoinedCanvas {
    pub(super) fn canvas(&self) -> &CanvasId {
        &self.membership.member.canvas
    }

    pub(super) fn conn(&self) -> ConnId {
        self.membership.member.conn
    }

    /// Leaves the room and presence now.
    pub(super) async fn leave(self) {
        self.membership.leave().await;
    }
}

impl<S> Session<S>
where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin + Send,
{
    /// Starts serving a joined canvas: its welcome, then the seqs after it that come before anything live.
    /// On a multiplexed socket the caller then releases what its queue held for the canvas meanwhile.
    ///
    /// Boxed: once per canvas, and its future (the welcome's frames, a replay) would otherwise be part of
    /// every idle session's task, which at 19,000 sockets is what their memory is.
    pub(super) fn start(&mut self, role: Role, joined: Joined) -> BoxFuture<'_, Result<(), End>> {
        Box::pin(self.start_now(role, joined))
    }

    async fn start_now(&mut self, role: Role, mut joined: Joined) -> Result<(), End> {
        let canvas = joined.membership.member.canvas.clone();
        let welcome = Welcome {
            kind: "welcome",
            canvas: &canvas,
            user: &self.user,
            connection: joined.membership.member.conn.to_string(),
            instance: self.app.instance_id.to_string(),
            epoch: &joined.epoch,
            seq: joined.seq,
            resumed: joined.resumed,
            role: role.as_str(),
            presence: &joined.presence,
            peers: &joined.peers,
        };
        let frames = welcome_frames(&welcome, joined.objects.take());
        // What only the welcome needed goes now: a session lives for hours, and the presence list of a busy
        // canvas is kilobytes (the state, shared, went with `take`).
        let Joined { replay, membership, .. } = joined;
        let outbox = match self.mux {
            Some(_) => self.outbox.for_canvas(canvas.clone()),
            None => self.outbox.clone(),
        };
        let (cursors, presence) =
            (CursorPace::new(self.app.config.max_cursor_rate), CursorPace::new(self.app.config.max_cursor_rate));
        // A member from here on: however the writes below end, the session leaves it.
        self.members.push(JoinedCanvas { membership, role, outbox, cursors, presence });
        self.write_all(frames).await?;
        match replay {
            // Boxed: once per join at most, and reading from the store makes a big future.
            Some(replay) => Box::pin(self.replay(&canvas, replay)).await,
            None => Ok(()),
        }
    }

    /// Sends the seqs after the welcome that come before anything live, a page at a time from the log. A
    /// page that comes back short (rows expired meanwhile) cuts the client: it resumes, and reloads.
    async fn replay(&mut self, canvas: &CanvasId, replay: Replay) -> Result<(), End> {
        let mut after = replay.after;
        while after < replay.upto {
            let upto = (after + REPLAY_PAGE).min(replay.upto);
            let page = self.app.bus.replay_page(canvas, replay.generation, after, upto).await;
            match page {
                Ok(page) if page.len() as u64 == upto - after => self.write_all(page).await?,
                Ok(_) | Err(_) => return Err(self.cut(Cut::Gap).await),
            }
            after = upto;
        }
        Ok(())
    }

    /// Where `canvas` is among this session's members.
    pub(super) fn member_at(&self, canvas: &CanvasId) -> Option<usize> {
        self.members.iter().position(|member| member.canvas() == canvas)
    }

    /// Leaves `self.members[at]` (a multiplexed socket's `leave`, or its removal through the API) and tells
    /// the client with `left`. The room lets go of it here, so nothing of the canvas follows `left`; presence
    /// follows through the writer, after the messages this connection sent.
    pub(super) fn drop_member(&mut self, at: usize, removed: bool) {
        let member = self.members.swap_remove(at);
        self.app.hub.leave(member.canvas(), member.conn());
        self.queue(Message::text(left_frame(member.canvas().as_str(), removed)));
        // Dropping a joined membership leaves presence in a task of its own (see `Membership`).
        drop(member);
    }
}
