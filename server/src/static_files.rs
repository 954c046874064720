//! The web app: the `www` directory served at `/` (with `index.html` for directories).
//! `sw.js`, `rangersync-worker.js`, the wasm packages under `/pkg/` and HTML pages are sent with
//! `Cache-Control: no-cache` so that a new build is picked up at once (the browser
//! revalidates; the worker's own update check is not delayed by the HTTP cache).

use std::path::Path;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use tower_http::services::ServeDir;

/// Whether a static path must be revalidated on every use.
pub fn is_no_cache(path: &str) -> bool {
    path == "/"
        || path == "/sw.js"
        || path == "/rangersync-worker.js"
        || path.starts_with("/pkg/")
        || path.ends_with(".html")
        || path.ends_with('/')
        || path.ends_with(".webmanifest")
}

async fn cache_headers(req: Request, next: Next) -> Response {
    let no_cache = is_no_cache(req.uri().path());
    let mut resp = next.run(req).await;
    if no_cache && resp.status().is_success() {
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    resp
}

/// The service for every path outside `/api`.
pub fn service(www: Option<&Path>) -> Router {
    match www {
        Some(dir) => Router::new()
            .fallback_service(ServeDir::new(dir).append_index_html_on_directories(true))
            .layer(middleware::from_fn(cache_headers)),
        None => Router::new().fallback(|| async { (StatusCode::NOT_FOUND, "not found") }),
    }
}
