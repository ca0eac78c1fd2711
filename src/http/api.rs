//! The HTTP API's canvas routes (`/api/v1/canvases/...`): publish a logged message as user `server`, read a
//! canvas's retained messages, read its state and presence, reset it. Every API route (these and
//! `users.rs`) needs `Authorization: Bearer <--api-key>`; without a configured key the API is off and
//! answers 403 saying how to turn it on.
//!
//! Server publishes go through the same writer, seq and fan-out as client messages.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::{json_error, with_state};
use crate::core::{BusError, Committed, Origin, Publish, Unavailable};
use crate::protocol::{to_json, CanvasId, ErrorCode, IdempotencyKey, LoggedMessage, UserId};
use crate::App;

/// Most messages one `GET .../messages` returns, and the default.
const MAX_PAGE: u64 = 1000;
const DEFAULT_PAGE: u64 = 100;

pub fn routes(app: Arc<App>) -> BoxedFilter<(Response,)> {
    let publish = warp::path!("api" / "v1" / "canvases" / String / "messages")
        .and(warp::post())
        .and(authorized(app.clone()))
        .and(warp::body::content_length_limit(app.config.max_frame_size as u64))
        .and(warp::header::optional::<String>("idempotency-key"))
        .and(warp::body::bytes())
        .then(publish)
        .map(Reply::into_response);
    let messages = warp::path!("api" / "v1" / "canvases" / String / "messages")
        .and(warp::get())
        .and(authorized(app.clone()))
        .and(warp::query::<HashMap<String, String>>())
        .then(messages)
        .map(Reply::into_response);
    let canvas = warp::path!("api" / "v1" / "canvases" / String)
        .and(warp::get())
        .and(authorized(app.clone()))
        .then(canvas)
        .map(Reply::into_response);
    let list = warp::path!("api" / "v1" / "canvases")
        .and(warp::get())
        .and(authorized(app.clone()))
        .and(warp::query::<HashMap<String, String>>())
        .then(list)
        .map(Reply::into_response);
    let reset = warp::path!("api" / "v1" / "canvases" / String)
        .and(warp::delete())
        .and(authorized(app))
        .then(reset)
        .map(Reply::into_response);
    publish.or(messages).unify().or(canvas).unify().or(reset).unify().or(list).unify().boxed()
}

/// Why a request was not let in.
#[derive(Debug)]
enum Denied {
    /// No key configured: the API is off.
    Disabled,
    /// Missing or wrong bearer key.
    Unauthorized,
}

impl warp::reject::Reject for Denied {}

/// Passes the app on when the request carries the configured API key.
pub(super) fn authorized(app: Arc<App>) -> impl Filter<Extract = (Arc<App>,), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("authorization").and(with_state(app)).and_then(
        |header: Option<String>, app: Arc<App>| async move {
            if app.config.api_key.is_none() {
                return Err(warp::reject::custom(Denied::Disabled));
            }
            match carries_api_key(&app, header.as_deref()) {
                true => Ok(app),
                false => Err(warp::reject::custom(Denied::Unauthorized)),
            }
        },
    )
}

/// The JSON answer for a denied request, for the top-level `recover`.
pub fn denied_response(rejection: &warp::Rejection) -> Option<Response> {
    match rejection.find::<Denied>()? {
        Denied::Disabled => Some(json_error(
            StatusCode::FORBIDDEN,
            "the HTTP API is disabled: start the server with --api-key KEY (or RELAY_API_KEY) to enable it",
        )),
        Denied::Unauthorized => {
            Some(json_error(StatusCode::UNAUTHORIZED, "missing or wrong API key: send Authorization: Bearer KEY"))
        }
    }
}

/// Whether an `Authorization` header is `Bearer <--api-key>` (never, with no key configured).
pub(super) fn carries_api_key(app: &App, header: Option<&str>) -> bool {
    let given = header.and_then(|h| h.strip_prefix("Bearer "));
    match (given, app.config.api_key.as_ref()) {
        (Some(given), Some(key)) => constant_time_eq(given.as_bytes(), key.expose().as_bytes()),
        _ => false,
    }
}

/// Compares without an early exit (`subtle`, whose barrier keeps the optimizer from adding one), so response
/// time does not reveal how much of a guessed key was right. A key of another length is refused at once: the
/// length is not the secret.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// A refused API request: its status and the `{"error"}` text.
#[derive(Debug)]
pub(super) struct ApiError(pub StatusCode, pub String);

impl Reply for ApiError {
    fn into_response(self) -> Response {
        json_error(self.0, self.1)
    }
}

impl From<BusError> for ApiError {
    fn from(error: BusError) -> Self {
        let status = match error.code() {
            ErrorCode::CanvasFull => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::InvalidFrame => StatusCode::CONFLICT,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, error.to_string())
    }
}

pub(super) fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

pub(super) fn canvas_id(canvas: &str) -> Result<CanvasId, ApiError> {
    CanvasId::parse(canvas).map_err(|e| bad_request(e.to_string()))
}

pub(super) fn json(status: StatusCode, body: String) -> Response {
    let mut response = warp::reply::with_status(body, status).into_response();
    response.headers_mut().insert("content-type", warp::http::HeaderValue::from_static("application/json"));
    response
}

/// `POST /api/v1/canvases/{canvas}/messages` `{"type","data"}` → 201 `{"seq":N}` once committed. With an
/// `Idempotency-Key` header (1–64 characters) a repeat of the key on the canvas and epoch within the TTL
/// logs nothing: 200 `{"seq":N,"duplicate":true}` with the original seq.
async fn publish(canvas: String, app: Arc<App>, key: Option<String>, body: Bytes) -> Result<Response, ApiError> {
    let canvas = canvas_id(&canvas)?;
    let mut message = LoggedMessage::from_api_body(&body).map_err(|e| bad_request(e.message))?;
    let key = key.as_deref().map(IdempotencyKey::parse).transpose();
    message.idempotency_key = key.map_err(|_| bad_request("Idempotency-Key must be 1 to 64 characters"))?;
    app.metrics.messages_in.increment(1);
    let (reply, committed) = oneshot::channel();
    let from = UserId::server();
    let publish = Publish::message(canvas, message, from, Origin::Caller(reply));
    // Bounded: a store that does not answer within --publish-timeout gets 503 (the message may still be
    // logged later; the answer says so).
    let commit = async {
        app.bus.publish(publish).await?;
        committed.await.map_err(|_| BusError::ShuttingDown)?
    };
    let committed = tokio::time::timeout(app.bus.publish_timeout(), commit)
        .await
        .map_err(|_| BusError::from(Unavailable::Timeout))??;
    Ok(match committed {
        Committed { seq, duplicate: false } => json(StatusCode::CREATED, format!(r#"{{"seq":{seq}}}"#)),
        Committed { seq, duplicate: true } => json(StatusCode::OK, format!(r#"{{"seq":{seq},"duplicate":true}}"#)),
    })
}

/// Most canvases one page of `GET /api/v1/canvases` lists.
const MAX_LIST_LIMIT: u32 = 1000;

/// `GET /api/v1/canvases?limit=M&after=C&active=true` → `{"canvases":[{"canvas","seq","epoch","connections",
/// "users","objects"}],"next":C|null}`: canvases in id order after C (from the first without it), at most M
/// (default 100, at most 1000), with `active=true` only those with a connection on some instance. Counts are
/// across instances. `next` is where the next page starts (`after=next`); `null` once the listing is done.
async fn list(app: Arc<App>, query: HashMap<String, String>) -> Result<Response, ApiError> {
    let limit = match query.get("limit") {
        None => 100,
        Some(limit) => match limit.parse::<u32>() {
            Ok(limit @ 1..=MAX_LIST_LIMIT) => limit,
            _ => return Err(bad_request(format!("limit must be an integer from 1 to {MAX_LIST_LIMIT}"))),
        },
    };
    let after = query.get("after").map(|after| canvas_id(after)).transpose()?;
    let active = match query.get("active").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(bad_request("active must be true or false")),
    };
    let page = app.bus.canvases(after, limit, active).await?;
    Ok(json(StatusCode::OK, to_json(&page)))
}

/// `GET /api/v1/canvases/{canvas}/messages?since=N&limit=M` → the retained messages after N (default 0), at
/// most M (default 100, at most 1000), in seq order, as relayed: `{"canvas","epoch","seq","messages":[...]}`
/// where `seq` is the canvas's last seq. A client pages by passing the last message's seq as `since`.
async fn messages(canvas: String, app: Arc<App>, query: HashMap<String, String>) -> Result<Response, ApiError> {
    let canvas = canvas_id(&canvas)?;
    let number = |name: &str, default: u64| match query.get(name) {
        None => Ok(default),
        Some(v) => v.parse::<u64>().map_err(|_| bad_request(format!("{name} must be a non-negative integer"))),
    };
    let (since, limit) = (number("since", 0)?, number("limit", DEFAULT_PAGE)?.clamp(1, MAX_PAGE));
    let log = app.bus.messages(canvas.clone(), since, limit).await?;
    let messages: Vec<Box<RawValue>> = log.messages.into_iter().filter_map(|m| RawValue::from_string(m).ok()).collect();
    // Serialized as they are: a `json!` value would parse each message's data again and write it anew
    // (`1e2` as `100.0`, members sorted), not in the canonical text every other place carries.
    let body = Log { canvas: &canvas, epoch: &log.epoch, seq: log.seq, messages: &messages };
    Ok(json(StatusCode::OK, to_json(&body)))
}

/// The answer of `GET /api/v1/canvases/{canvas}/messages`.
#[derive(serde::Serialize)]
struct Log<'a> {
    canvas: &'a CanvasId,
    epoch: &'a str,
    /// The canvas's last seq.
    seq: u64,
    /// Each message as relayed, its data as stored.
    messages: &'a [Box<RawValue>],
}

/// `GET /api/v1/canvases/{canvas}` → `{"canvas","seq","epoch","objects","presence"}`, objects and presence
/// being the state at exactly `seq`.
async fn canvas(canvas: String, app: Arc<App>) -> Result<Response, ApiError> {
    let canvas = canvas_id(&canvas)?;
    let state = app.bus.canvas(canvas.clone()).await?;
    // The objects are already JSON (up to --max-canvas-state): spliced in, not parsed and written again.
    let objects = std::str::from_utf8(&state.objects)
        .map_err(|_| BusError::from(Unavailable::Corrupt("the stored state is not UTF-8")))?;
    let head =
        serde_json::json!({ "canvas": canvas, "seq": state.seq, "epoch": state.epoch, "presence": state.presence });
    let head = head.to_string();
    let body = format!("{},\"objects\":{objects}}}", &head[..head.len() - 1]);
    Ok(json(StatusCode::OK, body))
}

/// `DELETE /api/v1/canvases/{canvas}` → 200 `{"canvas","epoch","seq":0}`: the log and objects are gone, the
/// canvas goes on in a new epoch from seq 0, and every connected client, on every instance, gets
/// `{"type":"reset","canvas","epoch","seq":0}`. Presence is unaffected. Resetting a canvas nobody wrote to
/// still starts a new epoch.
async fn reset(canvas: String, app: Arc<App>) -> Result<Response, ApiError> {
    let canvas = canvas_id(&canvas)?;
    let epoch = app.bus.reset(canvas.clone()).await?;
    let body = serde_json::json!({ "canvas": canvas, "epoch": epoch, "seq": 0 });
    Ok(json(StatusCode::OK, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_equal_only_when_identical() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
