//! The HTTP API's user routes (`/api/v1/users...`): message every connection of a user, wherever it is, and
//! read who is connected; and `DELETE /api/v1/canvases/{canvas}/users/{user}`, which removes a user from a
//! canvas. Counts are across instances (the shared `connections` table); the same API key rules as `api.rs`
//! apply.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::api::{authorized, bad_request, canvas_id, json, ApiError};
use crate::clock::now_ms;
use crate::hub::{Recipient, EVERYONE};
use crate::protocol::{user_frame, LoggedMessage, UserId};
use crate::App;

pub fn routes(app: Arc<App>) -> BoxedFilter<(Response,)> {
    let send = warp::path!("api" / "v1" / "users" / String / "messages")
        .and(warp::post())
        .and(authorized(app.clone()))
        .and(warp::body::content_length_limit(app.config.max_frame_size as u64))
        .and(warp::body::bytes())
        .then(send)
        .map(Reply::into_response);
    let user = warp::path!("api" / "v1" / "users" / String)
        .and(warp::get())
        .and(authorized(app.clone()))
        .then(user)
        .map(Reply::into_response);
    let users = warp::path!("api" / "v1" / "users")
        .and(warp::get())
        .and(authorized(app.clone()))
        .then(users)
        .map(Reply::into_response);
    let broadcast = warp::path!("api" / "v1" / "broadcast")
        .and(warp::post())
        .and(authorized(app.clone()))
        .and(warp::body::content_length_limit(app.config.max_frame_size as u64))
        .and(warp::body::bytes())
        .then(broadcast)
        .map(Reply::into_response);
    let remove = warp::path!("api" / "v1" / "canvases" / String / "users" / String)
        .and(warp::delete())
        .and(warp::query::<HashMap<String, String>>())
        .and(authorized(app))
        .then(remove)
        .map(Reply::into_response);
    send.or(user).unify().or(users).unify().or(broadcast).unify().or(remove).unify().boxed()
}

/// The longest block: a year. Longer is refused rather than silently cut.
const MAX_BLOCK_SECONDS: u64 = 365 * 24 * 3600;

fn user_id(user: &str) -> Result<UserId, ApiError> {
    UserId::parse(user).map_err(|e| bad_request(e.to_string()))
}

/// `POST /api/v1/users/{user}/messages` `{"type","data"}` → 202 `{"connections":N}`: every connection of the
/// user, on every canvas and instance, gets `{"type","from":"server","to","data","ts"}`. No seq: it is not
/// logged in any canvas and not replayed on resume. Connections on other instances get it within their next
/// poll; the row is kept for the message TTL. `N` is how many connections the user had when it was sent.
async fn send(user: String, app: Arc<App>, body: Bytes) -> Result<Response, ApiError> {
    let user = user_id(&user)?;
    let message = LoggedMessage::from_api_body(&body).map_err(|e| bad_request(e.message))?;
    let frame = user_frame(message.kind.as_str(), user.as_str(), &message.data, now_ms());
    let connections = app.bus.send_to(Recipient::User(user), frame).await?;
    Ok(json(StatusCode::ACCEPTED, format!(r#"{{"connections":{connections}}}"#)))
}

/// `POST /api/v1/broadcast` `{"type","data"}` → 202 `{"connections":N}`: every connection of every canvas, on
/// every instance, gets `{"type","from":"server","to":"*","data","ts"}`, as a user message (not logged, not
/// replayed; other instances relay it within the TTL). `N` counts this instance's connections only.
async fn broadcast(app: Arc<App>, body: Bytes) -> Result<Response, ApiError> {
    let message = LoggedMessage::from_api_body(&body).map_err(|e| bad_request(e.message))?;
    let frame = user_frame(message.kind.as_str(), EVERYONE, &message.data, now_ms());
    let connections = app.bus.send_to(Recipient::Everyone, frame).await?;
    Ok(json(StatusCode::ACCEPTED, format!(r#"{{"connections":{connections}}}"#)))
}

/// `DELETE /api/v1/canvases/{canvas}/users/{user}[?block=SECONDS]` → 200 `{"connections":N}`: every
/// connection of the user to the canvas, on every instance, is closed with 4003 (others on the canvas see
/// the user leave as for any close); with `block` (whole seconds, up to a year; 0 for none), its new
/// connections to the canvas get 403 on every instance until the time is up. `N` is how many connections the
/// user had on the canvas.
async fn remove(
    canvas: String,
    user: String,
    query: HashMap<String, String>,
    app: Arc<App>,
) -> Result<Response, ApiError> {
    let (canvas, user) = (canvas_id(&canvas)?, user_id(&user)?);
    let block = match query.get("block") {
        None => None,
        Some(seconds) => match seconds.parse::<u64>() {
            Ok(0) => None,
            Ok(seconds) if seconds <= MAX_BLOCK_SECONDS => Some(Duration::from_secs(seconds)),
            _ => return Err(bad_request(format!("block must be a whole number of seconds, 0 to {MAX_BLOCK_SECONDS}"))),
        },
    };
    let connections = app.bus.remove_user(canvas, user, block).await?;
    Ok(json(StatusCode::OK, format!(r#"{{"connections":{connections}}}"#)))
}

/// `GET /api/v1/users/{user}` → `{"user","connected","connections","canvases":[...]}` across instances.
async fn user(user: String, app: Arc<App>) -> Result<Response, ApiError> {
    let user = user_id(&user)?;
    let found = app.bus.users(Some(user.clone())).await?.pop();
    let (connections, canvases) = found.map_or((0, Vec::new()), |u| (u.connections, u.canvases));
    let body = serde_json::json!({
        "user": user, "connected": connections > 0, "connections": connections, "canvases": canvases,
    });
    Ok(json(StatusCode::OK, body.to_string()))
}

/// `GET /api/v1/users` → `{"users":[{"user","connections","canvases"}]}`: every connected user across
/// instances, sorted by id.
async fn users(app: Arc<App>) -> Result<Response, ApiError> {
    let users = app.bus.users(None).await?;
    Ok(json(StatusCode::OK, serde_json::json!({ "users": users }).to_string()))
}
