//! The canvas app (`web/`), compiled into the binary so that `canvas-relay serve` alone shows a working
//! canvas: `GET /` is the page, `GET /app/{file}` its script and style. Plain files, no build step.

use warp::filters::BoxedFilter;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Filter;

use super::json_error;

/// (name under /app/, content type, contents)
const FILES: &[(&str, &str, &str)] = &[
    ("index.html", "text/html; charset=utf-8", include_str!("../../web/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_str!("../../web/app.js")),
    ("relay-client.js", "text/javascript; charset=utf-8", include_str!("../../web/relay-client.js")),
    ("style.css", "text/css; charset=utf-8", include_str!("../../web/style.css")),
];

/// Scripts, styles and WebSockets from this origin only.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; frame-ancestors 'none'";

pub fn routes() -> BoxedFilter<(Response,)> {
    let page = warp::path::end().and(warp::get()).map(|| file("index.html"));
    let files = warp::path!("app" / String).and(warp::get()).map(|name: String| file(&name));
    page.or(files).unify().boxed()
}

fn file(name: &str) -> Response {
    let Some((_, content_type, body)) = FILES.iter().find(|(file, _, _)| *file == name) else {
        return json_error(StatusCode::NOT_FOUND, format!("no file {name} in the canvas app"));
    };
    let mut response = Response::new((*body).into());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Small files, and a new binary may bring new ones: always revalidate.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    response
}
