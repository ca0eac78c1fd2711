//! The history routes (PROTOCOL v1.2, "History"): the state at a seq (`GET /api/v1/canvases/{c}?at=N`),
//! the versions (list, name, unname), restore and fork. Who may: the API key; for everything but fork and
//! unnaming, also a client JWT granting `editor` on the canvas, or anyone when the server has no
//! `--jwt-secret` (anyone may then join and edit). Errors with a code answer `{"error","code"}`.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::api::{authorized, bad_request, canvas_id, carries_api_key, json, ApiError};
use super::with_state;
use crate::core::history::HistoryError;
use crate::protocol::{CanvasId, Role};
use crate::App;

/// Most versions one `GET …/versions` lists, and the default.
const MAX_VERSIONS: usize = 1000;
const DEFAULT_VERSIONS: usize = 100;
/// The longest name a version may have, in characters.
const MAX_NAME: usize = 200;
/// The largest body of a history POST.
const MAX_BODY: u64 = 4096;

pub fn routes(app: Arc<App>) -> BoxedFilter<(Response,)> {
    let bearer = || warp::header::optional::<String>("authorization");
    let at = warp::path!("api" / "v1" / "canvases" / String)
        .and(warp::get())
        .and(warp::query::<AtQuery>())
        .and(bearer())
        .and(with_state(app.clone()))
        .then(state_at)
        .map(Reply::into_response);
    let versions = warp::path!("api" / "v1" / "canvases" / String / "versions")
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(bearer())
        .and(with_state(app.clone()))
        .then(versions)
        .map(Reply::into_response);
    let name = warp::path!("api" / "v1" / "canvases" / String / "versions")
        .and(warp::post())
        .and(bearer())
        .and(with_state(app.clone()))
        .and(warp::body::content_length_limit(MAX_BODY))
        .and(warp::body::bytes())
        .then(name)
        .map(Reply::into_response);
    let unname = warp::path!("api" / "v1" / "canvases" / String / "versions" / String)
        .and(warp::delete())
        .and(authorized(app.clone()))
        .then(unname)
        .map(Reply::into_response);
    let restore = warp::path!("api" / "v1" / "canvases" / String / "restore")
        .and(warp::post())
        .and(bearer())
        .and(with_state(app.clone()))
        .and(warp::body::content_length_limit(MAX_BODY))
        .and(warp::body::bytes())
        .then(restore)
        .map(Reply::into_response);
    let fork = warp::path!("api" / "v1" / "canvases" / String / "fork")
        .and(warp::post())
        .and(authorized(app))
        .and(warp::body::content_length_limit(MAX_BODY))
        .and(warp::body::bytes())
        .then(fork)
        .map(Reply::into_response);
    at.or(versions).unify().or(name).unify().or(unname).unify().or(restore).unify().or(fork).unify().boxed()
}

/// A route that has `at` in its query string (any other `GET /api/v1/canvases/{c}` is the current state's).
#[derive(Deserialize)]
struct AtQuery {
    at: String,
}

/// A refused history request: its status, text and code.
#[derive(Debug)]
enum Refused {
    Api(ApiError),
    Coded(StatusCode, String, &'static str),
}

impl Reply for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::Api(error) => error.into_response(),
            Refused::Coded(status, error, code) => {
                json(status, serde_json::json!({ "error": error, "code": code }).to_string())
            }
        }
    }
}

impl From<ApiError> for Refused {
    fn from(error: ApiError) -> Self {
        Refused::Api(error)
    }
}

impl From<crate::core::BusError> for Refused {
    fn from(error: crate::core::BusError) -> Self {
        Refused::Api(error.into())
    }
}

impl From<HistoryError> for Refused {
    fn from(error: HistoryError) -> Self {
        let text = error.to_string();
        match error {
            HistoryError::SeqAhead { .. } => Refused::Coded(StatusCode::BAD_REQUEST, text, "seq_ahead"),
            HistoryError::Expired { .. } => Refused::Coded(StatusCode::GONE, text, "history_expired"),
            HistoryError::Exists(_) => Refused::Coded(StatusCode::CONFLICT, text, "canvas_exists"),
            HistoryError::NotNamed(_) => Refused::Api(ApiError(StatusCode::NOT_FOUND, text)),
            HistoryError::Bus(error) => error.into(),
        }
    }
}

/// Lets in the API key, a JWT granting `editor` on `canvas`, or anyone when the server has no
/// `--jwt-secret`.
fn may_edit(app: &App, header: Option<&str>, canvas: &CanvasId) -> Result<(), ApiError> {
    if carries_api_key(app, header) {
        return Ok(());
    }
    let Some(verifier) = &app.verifier else { return Ok(()) };
    let given = header.and_then(|header| header.strip_prefix("Bearer "));
    let unauthorized = |why: String| ApiError(StatusCode::UNAUTHORIZED, why);
    let Some(given) = given else {
        return Err(unauthorized("send Authorization: Bearer with the API key or a client token".into()));
    };
    match verifier.verify(Some(given), canvas) {
        Ok(identity) if identity.role == Role::Editor => Ok(()),
        Ok(_) => Err(ApiError(StatusCode::FORBIDDEN, "history needs the editor role on this canvas".into())),
        Err(error) => Err(unauthorized(error.to_string())),
    }
}

fn seq(text: &str, what: &str) -> Result<u64, ApiError> {
    text.parse::<u64>().map_err(|_| bad_request(format!("{what} must be a non-negative integer")))
}

/// A history POST's JSON body.
fn body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|error| bad_request(format!("invalid body: {error}")))
}

/// `GET /api/v1/canvases/{canvas}?at=SEQ` → `{"seq","epoch","objects"}`: the state exactly after that seq.
async fn state_at(canvas: String, query: AtQuery, header: Option<String>, app: Arc<App>) -> Result<Response, Refused> {
    let canvas = canvas_id(&canvas)?;
    may_edit(&app, header.as_deref(), &canvas)?;
    let at = seq(&query.at, "at")?;
    let state = app.bus.state_at(&canvas, at).await?;
    let objects = state.objects.to_json();
    let objects = std::str::from_utf8(&objects).expect("the fold writes UTF-8");
    let head = serde_json::json!({ "seq": state.seq, "epoch": state.epoch }).to_string();
    Ok(json(StatusCode::OK, format!("{},\"objects\":{objects}}}", &head[..head.len() - 1])))
}

/// `GET /api/v1/canvases/{canvas}/versions?limit=M&before=SEQ` → `{"versions":[{"seq","ts","name","bytes"}],
/// "next":SEQ|null}`, newest first (limit 1 to 1000, default 100).
async fn versions(
    canvas: String,
    query: HashMap<String, String>,
    header: Option<String>,
    app: Arc<App>,
) -> Result<Response, Refused> {
    let canvas = canvas_id(&canvas)?;
    may_edit(&app, header.as_deref(), &canvas)?;
    let limit = match query.get("limit").map(|limit| limit.parse::<usize>()) {
        None => DEFAULT_VERSIONS,
        Some(Ok(limit @ 1..=MAX_VERSIONS)) => limit,
        Some(_) => return Err(bad_request(format!("limit must be an integer from 1 to {MAX_VERSIONS}")).into()),
    };
    let before = query.get("before").map(|before| seq(before, "before")).transpose()?;
    let page = app.bus.versions(&canvas, before, limit).await?;
    let versions: Vec<_> = page
        .versions
        .iter()
        .map(|v| serde_json::json!({ "seq": v.seq, "ts": v.ts, "name": v.name, "bytes": v.bytes }))
        .collect();
    Ok(json(StatusCode::OK, serde_json::json!({ "versions": versions, "next": page.next }).to_string()))
}

#[derive(Deserialize)]
struct NameBody {
    name: String,
}

/// `POST /api/v1/canvases/{canvas}/versions` `{"name"}` → 201 `{"seq","name"}`: names the head's state.
async fn name(canvas: String, header: Option<String>, app: Arc<App>, raw: bytes::Bytes) -> Result<Response, Refused> {
    let canvas = canvas_id(&canvas)?;
    may_edit(&app, header.as_deref(), &canvas)?;
    let NameBody { name } = body(&raw)?;
    let length = name.chars().count();
    if length == 0 || length > MAX_NAME || name.chars().any(char::is_control) {
        let why = format!("name must be 1 to {MAX_NAME} characters, none of them a control character");
        return Err(bad_request(why).into());
    }
    let seq = app.bus.name_version(&canvas, &name).await?;
    Ok(json(StatusCode::CREATED, serde_json::json!({ "seq": seq, "name": name }).to_string()))
}

/// `DELETE /api/v1/canvases/{canvas}/versions/{seq}` (API key) → 204: the version is no longer named.
async fn unname(canvas: String, at: String, app: Arc<App>) -> Result<Response, Refused> {
    let canvas = canvas_id(&canvas)?;
    let at = seq(&at, "the version's seq")?;
    app.bus.unname_version(&canvas, at).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct RestoreBody {
    seq: u64,
}

/// `POST /api/v1/canvases/{canvas}/restore` `{"seq"}` → 200 `{"seq","ops"}` (the head after it).
async fn restore(
    canvas: String,
    header: Option<String>,
    app: Arc<App>,
    raw: bytes::Bytes,
) -> Result<Response, Refused> {
    let canvas = canvas_id(&canvas)?;
    may_edit(&app, header.as_deref(), &canvas)?;
    let RestoreBody { seq } = body(&raw)?;
    let restored = app.bus.restore(&canvas, seq).await?;
    Ok(json(StatusCode::OK, serde_json::json!({ "seq": restored.seq, "ops": restored.ops }).to_string()))
}

#[derive(Deserialize)]
struct ForkBody {
    to: String,
    at: Option<u64>,
}

/// `POST /api/v1/canvases/{canvas}/fork` `{"to"[,"at"]}` (API key) → 201 `{"canvas","seq":0,"epoch"}`.
async fn fork(canvas: String, app: Arc<App>, raw: bytes::Bytes) -> Result<Response, Refused> {
    let canvas = canvas_id(&canvas)?;
    let ForkBody { to, at } = body(&raw)?;
    let to = canvas_id(&to)?;
    let epoch = app.bus.fork(&canvas, at, &to).await?;
    Ok(json(StatusCode::CREATED, serde_json::json!({ "canvas": to, "seq": 0, "epoch": epoch }).to_string()))
}
