//! The canvas app (`web/`), compiled into the binary so that `canvas-relay serve` alone shows a working
//! canvas: `GET /` is the page, `GET /app/{file}` its scripts and style, `GET /app/sdk/{file}` the JS client
//! package's own modules (`clients/js/src`), the same files `npm install` gives an app. Plain files, no
//! build step.

use warp::filters::BoxedFilter;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Filter;

use super::json_error;

/// (name under /app/, content type, contents)
const FILES: &[(&str, &str, &str)] = &[
    ("index.html", "text/html; charset=utf-8", include_str!("../../web/index.html")),
    ("two.html", "text/html; charset=utf-8", include_str!("../../web/two.html")),
    ("app.js", "text/javascript; charset=utf-8", include_str!("../../web/app.js")),
    ("two.js", "text/javascript; charset=utf-8", include_str!("../../web/two.js")),
    ("page.js", "text/javascript; charset=utf-8", include_str!("../../web/page.js")),
    ("draw.js", "text/javascript; charset=utf-8", include_str!("../../web/draw.js")),
    ("history.js", "text/javascript; charset=utf-8", include_str!("../../web/history.js")),
    ("style.css", "text/css; charset=utf-8", include_str!("../../web/style.css")),
];

/// The client package's modules, under /app/sdk/.
const SDK: &[(&str, &str, &str)] = &[
    ("index.js", "text/javascript; charset=utf-8", include_str!("../../clients/js/src/index.js")),
    ("client.js", "text/javascript; charset=utf-8", include_str!("../../clients/js/src/client.js")),
    ("board.js", "text/javascript; charset=utf-8", include_str!("../../clients/js/src/board.js")),
    ("answers.js", "text/javascript; charset=utf-8", include_str!("../../clients/js/src/answers.js")),
    ("emitter.js", "text/javascript; charset=utf-8", include_str!("../../clients/js/src/emitter.js")),
    ("error.js", "text/javascript; charset=utf-8", include_str!("../../clients/js/src/error.js")),
    ("frames.js", "text/javascript; charset=utf-8", include_str!("../../clients/js/src/frames.js")),
    ("http.js", "text/javascript; charset=utf-8", include_str!("../../clients/js/src/http.js")),
    ("limiter.js", "text/javascript; charset=utf-8", include_str!("../../clients/js/src/limiter.js")),
    ("index.d.ts", "text/plain; charset=utf-8", include_str!("../../clients/js/src/index.d.ts")),
];

/// Scripts, styles and WebSockets from this origin only.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; frame-ancestors 'none'";

pub fn routes() -> BoxedFilter<(Response,)> {
    let page = warp::path::end().and(warp::get()).map(|| file(FILES, "index.html"));
    let files = warp::path!("app" / String).and(warp::get()).map(|name: String| file(FILES, &name));
    let sdk = warp::path!("app" / "sdk" / String).and(warp::get()).map(|name: String| file(SDK, &name));
    page.or(files).unify().or(sdk).unify().boxed()
}

fn file(files: &'static [(&'static str, &'static str, &'static str)], name: &str) -> Response {
    let Some((_, content_type, body)) = files.iter().find(|(file, _, _)| *file == name) else {
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
