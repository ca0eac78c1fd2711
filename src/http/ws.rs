//! `GET /ws/{canvas}`: checks the request (HTTP 400 with a JSON body before any upgrade), joins the canvas,
//! answers 101 and hands the upgraded connection to a [`Session`]. `GET /ws` (v1.1) does the same for a
//! multiplexed socket, which joins canvases over its frames once upgraded.
//!
//! The WebSocket handshake is done here rather than with `warp::ws()` so that the connection gets our
//! `WebSocketConfig`: warp 0.4 offers no way to set tungstenite's read and write buffer sizes, whose
//! defaults (128 KiB each) dominate the memory of an idle socket.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::{Sink, Stream};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role as SocketRole, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use uuid::Uuid;
use warp::filters::BoxedFilter;
use warp::http::{header, HeaderMap, StatusCode};
use warp::reply::Response;
use warp::Filter;

use super::{json_error, with_state};
use crate::admission::{NotAdmitted, Ticket};
use crate::core::{BusError, JoinRequest, Joined};
use crate::hub::{self, Inbox, Outbox};
use crate::protocol::{ConnectParams, Role, SocketParams, UserId};
use crate::session::{Mux, Session, SessionParts};
use crate::shutdown::{Guard, Phase};
use crate::App;

pub fn route(app: Arc<App>) -> BoxedFilter<(Response,)> {
    let single = warp::path!("ws" / String)
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<OnUpgrade>())
        .and(with_state(app.clone()))
        .then(connect);
    let multiplexed = warp::path!("ws")
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<OnUpgrade>())
        .and(with_state(app))
        .then(connect_multiplexed);
    single.or(multiplexed).unify().boxed()
}

/// Who the client is, until when, and what it may do: the token's `sub`, expiry and grant when auth is on,
/// else the `user` parameter (which `ConnectParams::parse` then required) as an editor. `?role` may lower
/// the role, never raise it. A refusal says its status and why.
fn identify(app: &App, params: &ConnectParams) -> Result<(UserId, Option<u64>, Role), (StatusCode, String)> {
    let (user, expires_at, granted) = match (&app.verifier, params.user.clone()) {
        (Some(verifier), _) => match verifier.verify(params.token.as_deref(), &params.canvas) {
            Ok(identity) => (identity.user, Some(identity.expires_at), identity.role),
            Err(error) => return Err((StatusCode::UNAUTHORIZED, error.to_string())),
        },
        (None, Some(user)) => (user, None, Role::Editor),
        (None, None) => return Err((StatusCode::BAD_REQUEST, "query parameter user is required".into())),
    };
    Ok((user, expires_at, granted.min(params.role)))
}

/// `GET /ws/{canvas}`: one canvas, joined before the upgrade (a refusal is an HTTP status).
async fn connect(
    canvas: String,
    query: HashMap<String, String>,
    headers: HeaderMap,
    on_upgrade: Option<OnUpgrade>,
    app: Arc<App>,
) -> Response {
    if !origin_allowed(&headers, app.config.allowed_origins.as_deref()) {
        return origin_refused();
    }
    let params = match ConnectParams::parse(&canvas, &query, app.verifier.is_some()) {
        Ok(params) => params,
        Err(error) => return json_error(StatusCode::BAD_REQUEST, error.to_string()),
    };
    let (user, expires_at, role) = match identify(&app, &params) {
        Ok(identity) => identity,
        Err((status, why)) => return json_error(status, why),
    };
    let opening = match Opening::admit(&app, &headers, on_upgrade, &user) {
        Ok(opening) => opening,
        Err((status, why)) => return json_error(status, why),
    };
    let bounds = hub::Bounds {
        frames: app.config.client_queue,
        bytes: app.config.client_queue_bytes,
        riding_bytes: hub::Bounds::riding_for(app.config.max_canvas_state),
    };
    let (outbox, inbox) = hub::outbox(bounds);
    let request = JoinRequest {
        canvas: params.canvas,
        conn: Uuid::new_v4(),
        user: user.clone(),
        name: params.name,
        resume: params.resume,
        outbox: outbox.clone(),
    };
    // The store's work, after every check that costs nothing: a blocked user, or one removed from the
    // canvas while it joins, gets 403. If the client hangs up while this waits, the join is dropped and
    // leaves presence again by itself.
    let joined = match app.bus.join(request).await {
        Ok(joined) => joined,
        Err(error @ (BusError::Blocked { .. } | BusError::Removed { .. })) => {
            return json_error(StatusCode::FORBIDDEN, error.to_string())
        }
        Err(error) => return json_error(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
    };
    opening.upgrade(app, user, expires_at, (outbox, inbox), Start::Canvas(role, joined))
}

/// `GET /ws` (v1.1): a multiplexed socket, which joins canvases over its frames.
async fn connect_multiplexed(
    query: HashMap<String, String>,
    headers: HeaderMap,
    on_upgrade: Option<OnUpgrade>,
    app: Arc<App>,
) -> Response {
    if !origin_allowed(&headers, app.config.allowed_origins.as_deref()) {
        return origin_refused();
    }
    let params = match SocketParams::parse(&query, app.verifier.is_some()) {
        Ok(params) => params,
        Err(error) => return json_error(StatusCode::BAD_REQUEST, error.to_string()),
    };
    let (user, grant) = match (&app.verifier, params.user) {
        (Some(verifier), _) => match verifier.verify_socket(params.token.as_deref()) {
            Ok(grant) => (grant.user.clone(), Some(grant)),
            Err(error) => return json_error(StatusCode::UNAUTHORIZED, error.to_string()),
        },
        (None, Some(user)) => (user, None),
        (None, None) => return json_error(StatusCode::BAD_REQUEST, "query parameter user is required"),
    };
    let opening = match Opening::admit(&app, &headers, on_upgrade, &user) {
        Ok(opening) => opening,
        Err((status, why)) => return json_error(status, why),
    };
    let expires_at = grant.as_ref().map(|grant| grant.expires_at);
    let mux = Mux::new(grant, params.role, params.name, app.config.max_canvases_per_connection);
    let bounds = hub::Bounds {
        frames: app.config.client_queue,
        bytes: app.config.client_queue_bytes,
        riding_bytes: hub::Bounds::riding_for(app.config.max_canvas_state),
    };
    opening.upgrade(app, user, expires_at, hub::outbox(bounds), Start::Multiplexed(mux))
}

fn origin_refused() -> Response {
    json_error(StatusCode::FORBIDDEN, "WebSockets from this page's origin are not allowed here (--allowed-origins)")
}

/// An upgrade request that passed the checks every socket shares: a version-13 WebSocket upgrade, while the
/// server runs, within the connection limits.
struct Opening {
    accept: String,
    on_upgrade: OnUpgrade,
    reading: Guard,
    alive: Guard,
    admitted: Ticket,
}

impl Opening {
    /// The opening, or the refusal's status and why.
    fn admit(
        app: &App,
        headers: &HeaderMap,
        on_upgrade: Option<OnUpgrade>,
        user: &UserId,
    ) -> Result<Self, (StatusCode, String)> {
        let (Some(accept), Some(on_upgrade)) = (accept_key(headers), on_upgrade) else {
            return Err((StatusCode::UPGRADE_REQUIRED, "expected a WebSocket upgrade request".into()));
        };
        // Counted before the phase is checked: shutdown either sees this connection (and waits for it while
        // it upgrades) or this connection sees shutdown (and is refused); never neither.
        let reading = app.shutdown.reading.token();
        let alive = app.shutdown.alive.token();
        if app.shutdown.phase() != Phase::Running {
            return Err((StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down".into()));
        }
        let admitted = match app.admission.admit(user) {
            Ok(ticket) => ticket,
            Err(refusal @ NotAdmitted::Full(_)) => return Err((StatusCode::SERVICE_UNAVAILABLE, refusal.to_string())),
            Err(refusal @ NotAdmitted::UserFull(_)) => {
                return Err((StatusCode::TOO_MANY_REQUESTS, refusal.to_string()))
            }
        };
        Ok(Opening { accept, on_upgrade, reading, alive, admitted })
    }

    /// Answers 101 and starts the session once the upgrade is done.
    fn upgrade(
        self,
        app: Arc<App>,
        user: UserId,
        expires_at: Option<u64>,
        queue: (Outbox, Inbox),
        start: Start,
    ) -> Response {
        let Opening { accept, on_upgrade, reading, alive, admitted } = self;
        let (outbox, inbox) = queue;
        let parts = SessionParts { user, expires_at, outbox, inbox, reading, alive, admitted };
        // One box for what the session starts with, until the upgrade is done (see `SessionStart`).
        let config = socket_config(app.config.max_frame_size);
        let start = Box::new(SessionStart { app, parts, start });
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let socket =
                        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), SocketRole::Server, Some(config))
                            .await;
                    start.session(socket).await;
                }
                // Dropping `start` drops a joined canvas, which leaves the room and presence (see `Membership`).
                Err(error) => tracing::debug!(%error, "WebSocket upgrade failed"),
            }
        });
        switching_protocols(&accept)
    }
}

/// What a session begins with: the canvas of `/ws/{canvas}`, joined, or a multiplexed socket's state.
enum Start {
    Canvas(Role, Joined),
    Multiplexed(Mux),
}

/// What a session starts with, boxed until the upgrade is done: a task's future keeps room for every value
/// it holds across an await, for as long as it runs, and at 19,000 idle sockets those bytes count.
struct SessionStart {
    app: Arc<App>,
    parts: SessionParts,
    start: Start,
}

impl SessionStart {
    /// The session's future, built outside the task's own so that nothing here stays alive beside it.
    fn session<S>(self: Box<Self>, socket: S) -> impl std::future::Future<Output = ()> + Send
    where
        S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin + Send,
    {
        let SessionStart { app, parts, start } = *self;
        let session = Session::new(socket, app, parts);
        match start {
            Start::Canvas(role, joined) => session.run(Some(Box::new((role, joined)))),
            Start::Multiplexed(mux) => session.multiplexed(mux).run(None),
        }
    }
}

/// Small buffers: an idle socket holds little, and the session batches writes itself. The read buffer is
/// what every socket keeps for its life (1 KiB: several client frames a read; a bigger frame still arrives
/// whole, the buffer grows for it). The write buffer's bound fits a flush of frames plus one frame of the
/// largest client message relayed; a big welcome goes out in fragments that fit it too (`session::welcome`).
fn socket_config(max_frame_size: usize) -> WebSocketConfig {
    let write_buffer = 16 * 1024;
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(write_buffer)
        .max_write_buffer_size(write_buffer + 4 * max_frame_size.max(64 * 1024))
        .max_message_size(Some(max_frame_size))
        .max_frame_size(Some(max_frame_size))
}

/// Whether the page that opens this WebSocket may: always without `--allowed-origins` or without an `Origin`
/// header (only browsers send one, and they always do); otherwise when the origin is this server's own (its
/// `Host`: the built-in canvas app) or listed. An `Origin` that is not text is refused.
fn origin_allowed(headers: &HeaderMap, allowed: Option<&[String]>) -> bool {
    let (Some(allowed), Some(origin)) = (allowed, headers.get(header::ORIGIN)) else { return true };
    let Ok(origin) = origin.to_str() else { return false };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
    let same_origin = matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h));
    same_origin || allowed.iter().any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

/// The `Sec-WebSocket-Accept` value, if the headers ask for a version-13 WebSocket upgrade.
fn accept_key(headers: &HeaderMap) -> Option<String> {
    let has = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|part| part.trim().eq_ignore_ascii_case(token)))
    };
    let upgrade = has(header::CONNECTION, "upgrade") && has(header::UPGRADE, "websocket");
    let version_13 = headers.get(header::SEC_WEBSOCKET_VERSION).is_some_and(|v| v == "13");
    let key = headers.get(header::SEC_WEBSOCKET_KEY)?;
    (upgrade && version_13).then(|| derive_accept_key(key.as_bytes()))
}

fn switching_protocols(accept: &str) -> Response {
    let mut response = Response::default();
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, header::HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, header::HeaderValue::from_static("websocket"));
    if let Ok(value) = header::HeaderValue::from_str(accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_follows_rfc_6455() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        headers.insert(header::UPGRADE, "websocket".parse().unwrap());
        headers.insert(header::SEC_WEBSOCKET_VERSION, "13".parse().unwrap());
        headers.insert(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap());
        // The example of RFC 6455 section 1.3.
        assert_eq!(accept_key(&headers).as_deref(), Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
        headers.insert(header::SEC_WEBSOCKET_VERSION, "8".parse().unwrap());
        assert_eq!(accept_key(&headers), None);
    }

    #[test]
    fn origins_are_checked_only_when_a_list_is_given() {
        let request = |origin: Option<&str>| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, "relay.example:8080".parse().unwrap());
            if let Some(origin) = origin {
                headers.insert(header::ORIGIN, origin.parse().unwrap());
            }
            headers
        };
        let list = ["https://app.example".to_owned(), "http://localhost:3000/".to_owned()];
        assert!(origin_allowed(&request(Some("https://evil.example")), None), "no list: anyone");
        assert!(origin_allowed(&request(None), Some(&list)), "no Origin: not a browser");
        assert!(origin_allowed(&request(Some("https://app.example")), Some(&list)));
        assert!(origin_allowed(&request(Some("http://localhost:3000")), Some(&list)), "a trailing / in the list");
        assert!(origin_allowed(&request(Some("http://relay.example:8080")), Some(&list)), "the server's own page");
        assert!(!origin_allowed(&request(Some("https://evil.example")), Some(&list)));
        assert!(!origin_allowed(&request(Some("https://app.example.evil.example")), Some(&list)));
        assert!(!origin_allowed(&request(Some("null")), Some(&list)), "sandboxed frames and files");
    }
}
