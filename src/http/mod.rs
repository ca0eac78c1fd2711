//! The HTTP surface: warp routes (one small function each, boxed at this module's edge), the JSON error
//! shape of the contract, and the one `recover` that turns every rejection into it.

mod api;
mod health;
mod history;
pub mod server;
mod stream;
mod users;
mod web;
mod ws;

use std::convert::Infallible;
use std::sync::Arc;

use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::App;

/// Every route of the relay.
pub fn routes(app: Arc<App>) -> BoxedFilter<(Response,)> {
    ws::route(app.clone())
        .or(history::routes(app.clone()))
        .unify()
        .or(api::routes(app.clone()))
        .unify()
        .or(users::routes(app.clone()))
        .unify()
        .or(stream::route(app.clone()))
        .unify()
        .or(health::health(app.clone()))
        .unify()
        .or(health::metrics(app))
        .unify()
        .or(web::routes())
        .unify()
        .recover(rejection_to_json)
        .unify()
        .boxed()
}

/// Injects the shared application state into a handler.
fn with_state(app: Arc<App>) -> impl Filter<Extract = (Arc<App>,), Error = Infallible> + Clone {
    warp::any().map(move || app.clone())
}

/// `{"error": "..."}` with a status: the contract's error body.
pub fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": message.into() });
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

/// Anything no route answered: 404 for unknown paths, 405 for known paths with the wrong method, 400 for a
/// query string that cannot be decoded.
async fn rejection_to_json(rejection: Rejection) -> Result<Response, Infallible> {
    if let Some(response) = api::denied_response(&rejection) {
        return Ok(response);
    }
    let (status, message) = if rejection.is_not_found() {
        (StatusCode::NOT_FOUND, "no such route".to_owned())
    } else if rejection.find::<warp::reject::InvalidQuery>().is_some() {
        (StatusCode::BAD_REQUEST, "the query string could not be decoded".to_owned())
    } else if let Some(limit) = rejection.find::<warp::reject::PayloadTooLarge>() {
        (StatusCode::PAYLOAD_TOO_LARGE, format!("body too large: {limit}"))
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        (StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route".to_owned())
    } else {
        tracing::debug!(?rejection, "unhandled rejection");
        (StatusCode::BAD_REQUEST, "bad request".to_owned())
    };
    Ok(json_error(status, message))
}
