//! The wire contract (`../shared/PROTOCOL.md`) as types: validated ids (`ids`), the frames a client may send
//! (`client`) with their `data` in canonical form (`canonical`), the frames the server writes (`server`),
//! error codes and close codes.
//!
//! Parsing happens here and only here ("parse, don't validate"): the rest of the relay receives a
//! [`ClientFrame`] or a [`FrameError`] that already carries the contract's error code. This module does not
//! know about sockets, storage or delivery.

mod addressed;
mod canonical;
mod client;
mod ids;
mod role;
mod server;

pub use addressed::{Addressed, Misaddressed};
pub use canonical::without_whitespace;
pub use client::{null_value, ClientFrame, FrameError, IdempotencyKey, LoggedMessage, MsgType};
pub use ids::{CanvasId, ConnId, ConnectParams, Resume, SocketParams, UserId, RESERVED_USER};
pub use role::Role;
pub use server::{
    ack_frame, cursor_frame, duplicate_ack_frame, error_frame_in, event_frame, left_frame, logged_frame, presence_data,
    presence_frame, reset_frame, to_json, user_frame, Welcome, PONG_FRAME,
};

/// Close codes of the contract's table.
pub mod close {
    /// The server is shutting down: reconnect (elsewhere) and resume.
    pub const GOING_AWAY: u16 = 1001;
    /// A text frame was not valid UTF-8 (RFC 6455 "invalid frame payload data").
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Policy: the token expired mid-session.
    pub const POLICY: u16 = 1008;
    /// A frame or message over `--max-frame-size`.
    pub const TOO_LARGE: u16 = 1009;
    /// Rate limit abuse: kept sending after `rate_limited` errors.
    pub const RATE_LIMIT: u16 = 4008;
    /// Removed from the canvas through the API (v1.1): do not reconnect on your own.
    pub const REMOVED: u16 = 4003;
    /// The client's outbound queue overflowed: reconnect with `since` to catch up.
    pub const TOO_SLOW: u16 = 4009;
}

/// Why a client is cut with 4009 ([`close::TOO_SLOW`]; 4003, [`close::REMOVED`], for `Removed`). Kept apart
/// in the metrics: only `Slow` is the client's doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Its logged lane overflowed: it reads too slowly.
    Slow,
    /// Rows it would have needed expired before this instance read them (a hole in the stream).
    Gap,
    /// The log it follows is gone: a canvas reset whose marker expired unread, or a store with a new epoch.
    Epoch,
    /// Removed from the canvas through the API: closed with 4003, not 4009.
    Removed,
}

impl Cut {
    pub fn as_str(self) -> &'static str {
        match self {
            Cut::Slow => "slow",
            Cut::Gap => "gap",
            Cut::Epoch => "epoch",
            Cut::Removed => "removed",
        }
    }
}

/// Types a client may not log: the server's frames (v1), and v1.1's `presence`, `join`, `leave` and
/// `left`, which are frames of their own. A logged message of one of these types gets `unknown_type`.
pub const RESERVED_TYPES: [&str; 12] = [
    "welcome",
    "ack",
    "error",
    "pong",
    "cursor",
    "reset",
    "user-connected",
    "user-disconnected",
    "presence",
    "join",
    "leave",
    "left",
];

/// Error codes of `{"type":"error","code":...}` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidJson,
    InvalidFrame,
    UnknownType,
    TooLarge,
    RateLimited,
    Unavailable,
    /// An object op would take the canvas state past `--max-canvas-state` (v1.1).
    CanvasFull,
    /// The connection's role does not allow it: a viewer's logged message, or a join outside the token's
    /// scope (v1.1).
    Forbidden,
    /// A join past `--max-canvases-per-connection` on a multiplexed socket (v1.1).
    TooManyCanvases,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidFrame => "invalid_frame",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::CanvasFull => "canvas_full",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TooManyCanvases => "too_many_canvases",
        }
    }
}
