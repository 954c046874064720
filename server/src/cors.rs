//! CORS for the configured page origins (a page on one port and the API on another is the
//! usual deployment). `*` mirrors any origin, for test runners on random ports.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::error::ServerError;

/// The layer for `origins`, or `None` when no origin is configured (same-origin only).
pub fn layer(origins: &[String]) -> Result<Option<CorsLayer>, ServerError> {
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::mirror_request()
    } else {
        let list = origins
            .iter()
            .map(|o| {
                HeaderValue::from_str(o.trim_end_matches('/')).map_err(|_| {
                    ServerError::Config(format!("--allow-origin {o:?} is not a valid origin"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let refused = RefusedOrigins::default();
        AllowOrigin::predicate(move |origin: &HeaderValue, _| {
            let allowed = list.contains(origin);
            if !allowed {
                if let Some(line) = refused.note(origin) {
                    eprintln!("rangersync-server: {line}");
                }
            }
            allowed
        })
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            // PUT and Content-Range: a blob chunk (`PUT /api/blobs/{sha256}`).
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                header::CONTENT_RANGE,
                HeaderName::from_static("idempotency-key"),
            ])
            .expose_headers([header::RETRY_AFTER, header::CONTENT_DISPOSITION])
            .max_age(Duration::from_secs(600)),
    ))
}

/// The most distinct refused origins remembered (and logged); later ones are not logged.
const MAX_LOGGED_ORIGINS: usize = 100;

/// Which refused origins were already logged: a wrong `--allow-origin` looks exactly like being
/// offline from the page, so the server says it once per origin, with the flag that would
/// allow it.
#[derive(Debug, Default)]
pub struct RefusedOrigins(Mutex<HashSet<String>>);

impl RefusedOrigins {
    /// The line to log the first time `origin` is refused, else `None`.
    pub fn note(&self, origin: &HeaderValue) -> Option<String> {
        let text = String::from_utf8_lossy(origin.as_bytes()).into_owned();
        let mut seen = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() >= MAX_LOGGED_ORIGINS || !seen.insert(text.clone()) {
            return None;
        }
        Some(format!(
            "refused a cross-origin request from {text:?} (not in --allow-origin); start the server with --allow-origin {text} to allow it"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_origin_is_logged_once_with_the_flag_that_would_allow_it() {
        let refused = RefusedOrigins::default();
        let origin = HeaderValue::from_static("http://localhost:5173");
        let line = refused.note(&origin).expect("logged the first time");
        assert!(
            line.contains("--allow-origin http://localhost:5173"),
            "{line}"
        );
        assert_eq!(refused.note(&origin), None, "once");
        assert!(refused
            .note(&HeaderValue::from_static("http://localhost:3000"))
            .is_some());
    }
}
