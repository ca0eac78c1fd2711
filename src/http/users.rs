//! The HTTP API's user routes (`/api/v1/users...`): message every connection of a user, wherever it is, and
//! read who is connected. Counts are across instances (the shared `connections` table); the same API key
//! rules as `api.rs` apply.

use std::sync::Arc;

use bytes::Bytes;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::api::{authorized, bad_request, json, ApiError};
use crate::clock::now_ms;
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
    let users =
        warp::path!("api" / "v1" / "users").and(warp::get()).and(authorized(app)).then(users).map(Reply::into_response);
    send.or(user).unify().or(users).unify().boxed()
}

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
    let connections = app.bus.send_to_user(user, frame).await?;
    Ok(json(StatusCode::ACCEPTED, format!(r#"{{"connections":{connections}}}"#)))
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
