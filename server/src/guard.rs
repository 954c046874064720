//! No CSRF, no DNS rebinding: what a request to `/api/*` must look like before any handler
//! (or the auth check) sees it.
//!
//! - **Content type.** A request that can change something (any method but `GET`, `HEAD` and
//!   `OPTIONS`) must say `Content-Type: application/json`; the snapshot routes
//!   ([`SNAPSHOT_ROUTES`]: backup upload and restore) also take the YAML types. A browser
//!   sends a cross-site form or a "simple" `fetch` only as `text/plain`,
//!   `application/x-www-form-urlencoded` or `multipart/form-data`, so no page of another site
//!   can reach a handler without a CORS preflight. A blob chunk (`PUT /api/blobs/…`) must say
//!   `application/octet-stream` instead, which needs a preflight too. Otherwise
//!   `415 unsupported_media_type`.
//! - **Origin.** A request whose `Origin` header is present must come from the server's own
//!   origin (`http(s)://` + its `Host`) or from an `--allow-origin` (the CORS allow-list is
//!   the list of allowed origins; `*` allows any). Otherwise `403 forbidden_origin`.
//! - **Host.** Without auth, the `Host` must be a loopback name or address (`localhost`,
//!   `127.0.0.0/8`, `[::1]`) or an `--allow-host`: a hostile domain that resolves to
//!   127.0.0.1 (DNS rebinding) is same-origin with itself, and only its `Host` gives it away.
//!   Otherwise `403 forbidden_host`.
//!
//! [`check_listen`] is the start-time half: without auth, the server listens only on
//! loopback unless told `--insecure-no-auth`.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{codes, ApiError, ServerError};
use crate::AppState;

/// The routes whose body is a snapshot, JSON or YAML.
pub const SNAPSHOT_ROUTES: &[&str] = &["/api/backups", "/api/restore"];

/// The content types a snapshot route takes besides `application/json`.
pub const YAML_TYPES: &[&str] = &[
    "application/yaml",
    "application/x-yaml",
    "text/yaml",
    "text/x-yaml",
];

/// What the guard allows, fixed at start.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    /// `--allow-origin` values without a trailing slash, lower-case.
    origins: Vec<String>,
    /// `--allow-origin '*'`.
    any_origin: bool,
    /// `--allow-host` values, lower-case.
    hosts: Vec<String>,
    /// Whether the `Host` is checked (only without auth).
    check_host: bool,
}

impl Guard {
    /// A guard for these `--allow-origin` and `--allow-host` values; `auth` says whether
    /// callers must authenticate (then the `Host` is not checked).
    pub fn new(allow_origins: &[String], allow_hosts: &[String], auth: bool) -> Self {
        Self {
            origins: allow_origins
                .iter()
                .filter(|o| *o != "*")
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            any_origin: allow_origins.iter().any(|o| o == "*"),
            hosts: allow_hosts
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .collect(),
            check_host: !auth,
        }
    }

    /// Why a request to `path` is refused, or `None` when it may go on.
    pub fn refuse(&self, method: &Method, path: &str, headers: &HeaderMap) -> Option<ApiError> {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase);
        if self.check_host && !host.as_deref().is_some_and(|h| self.host_allowed(h)) {
            return Some(ApiError::new(
                StatusCode::FORBIDDEN,
                codes::FORBIDDEN_HOST,
                "this server has no auth and answers only requests to a loopback name or \
                 address (start it with --allow-host NAME to allow another)",
            ));
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("").to_ascii_lowercase();
            if !self.origin_allowed(&origin, host.as_deref()) {
                return Some(ApiError::new(
                    StatusCode::FORBIDDEN,
                    codes::FORBIDDEN_ORIGIN,
                    "requests from this page's origin are not allowed (start the server \
                     with --allow-origin ORIGIN to allow it)",
                ));
            }
        }
        if !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
            && !content_type_allowed(path, headers)
        {
            let also = if SNAPSHOT_ROUTES.contains(&path) {
                " or a YAML type (application/yaml)"
            } else {
                ""
            };
            if is_blob_route(path) {
                return Some(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    codes::UNSUPPORTED_MEDIA_TYPE,
                    format!(
                        "{method} {path} needs Content-Type: {}; nothing was changed",
                        crate::blobs::CHUNK_CONTENT_TYPE
                    ),
                ));
            }
            return Some(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                codes::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "{method} {path} needs Content-Type: application/json{also}; nothing was changed"
                ),
            ));
        }
        None
    }

    fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        if self.any_origin || self.origins.iter().any(|o| o == origin) {
            return true;
        }
        host.is_some_and(|h| origin == format!("http://{h}") || origin == format!("https://{h}"))
    }

    fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host);
        is_loopback_name(name) || self.hosts.iter().any(|h| h == host || h == name)
    }
}

/// The name or address of a `Host` value, without its port (and brackets for IPv6).
pub fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// `localhost`, an address in 127.0.0.0/8, or `::1`.
pub fn is_loopback_name(name: &str) -> bool {
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || is_mapped_loopback(ip))
}

fn is_mapped_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        IpAddr::V4(_) => false,
    }
}

/// Whether the request's content type is one `path` takes.
fn content_type_allowed(path: &str, headers: &HeaderMap) -> bool {
    let Some(essence) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|e| e.trim().to_ascii_lowercase())
    else {
        return false;
    };
    if is_blob_route(path) {
        return essence == crate::blobs::CHUNK_CONTENT_TYPE;
    }
    essence == "application/json"
        || (SNAPSHOT_ROUTES.contains(&path) && YAML_TYPES.contains(&essence.as_str()))
}

/// Whether `path` is a blob's (whose chunks are `application/octet-stream`).
fn is_blob_route(path: &str) -> bool {
    path.starts_with("/api/blobs/")
}

/// Whether `path` is under `/api`.
fn is_api(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

/// The middleware: a refused request never reaches auth or a handler.
pub async fn check(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if is_api(path) {
        if let Some(e) = state.guard.refuse(req.method(), path, req.headers()) {
            return e.into_response();
        }
    }
    next.run(req).await
}

/// Refuse to listen beyond loopback without auth, unless `insecure_no_auth`.
pub fn check_listen(
    listen: SocketAddr,
    auth: bool,
    insecure_no_auth: bool,
) -> Result<(), ServerError> {
    let ip = listen.ip();
    if auth || insecure_no_auth || ip.is_loopback() || is_mapped_loopback(ip) {
        return Ok(());
    }
    Err(ServerError::Config(format!(
        "refusing to listen on {listen} without auth: anyone who can reach it could read and \
         overwrite every write. Give --token, --tokens-file or a --jwt-* key, listen on \
         127.0.0.1, or pass --insecure-no-auth if something in front of it authenticates"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn loopback_names_and_addresses_are_told_apart_from_others() {
        for host in [
            "localhost:8787",
            "127.0.0.1:1",
            "127.9.8.7",
            "[::1]:8787",
            "LOCALHOST",
        ] {
            assert!(is_loopback_name(host_name(host)), "{host}");
        }
        for host in [
            "evil.example:8787",
            "10.0.0.1",
            "[2001:db8::1]:1",
            "localhost.evil.example",
            "",
        ] {
            assert!(!is_loopback_name(host_name(host)), "{host}");
        }
    }

    #[test]
    fn a_form_post_is_refused_and_a_yaml_snapshot_only_on_snapshot_routes() {
        let g = Guard::new(&[], &[], false);
        let form = headers(&[("host", "127.0.0.1:1"), ("content-type", "text/plain")]);
        let e = g.refuse(&Method::POST, "/api/restore", &form).unwrap();
        assert_eq!(e.code, codes::UNSUPPORTED_MEDIA_TYPE);
        let yaml = headers(&[
            ("host", "127.0.0.1:1"),
            ("content-type", "application/yaml"),
        ]);
        assert!(g.refuse(&Method::POST, "/api/backups", &yaml).is_none());
        assert!(g.refuse(&Method::POST, "/api/sync/push", &yaml).is_some());
        let none = headers(&[("host", "127.0.0.1:1")]);
        assert!(g
            .refuse(&Method::DELETE, "/api/test/faults", &none)
            .is_some());
        assert!(g.refuse(&Method::GET, "/api/sync/pull", &none).is_none());
    }

    #[test]
    fn an_origin_is_allowed_when_it_is_the_servers_own_or_listed() {
        let g = Guard::new(&["http://localhost:5173/".to_owned()], &[], false);
        let get = |origin: &'static str| {
            g.refuse(
                &Method::GET,
                "/api/sync/pull",
                &headers(&[("host", "127.0.0.1:8787"), ("origin", origin)]),
            )
            .map(|e| e.code)
        };
        assert_eq!(get("http://127.0.0.1:8787"), None);
        assert_eq!(get("http://localhost:5173"), None);
        assert_eq!(
            get("http://evil.example"),
            Some(codes::FORBIDDEN_ORIGIN.to_owned())
        );
        assert_eq!(get("null"), Some(codes::FORBIDDEN_ORIGIN.to_owned()));
        let any = Guard::new(&["*".to_owned()], &[], false);
        assert!(any
            .refuse(
                &Method::GET,
                "/api/sync/pull",
                &headers(&[
                    ("host", "127.0.0.1:8787"),
                    ("origin", "http://evil.example")
                ])
            )
            .is_none());
    }

    #[test]
    fn without_auth_a_foreign_host_is_refused_unless_allowed_and_with_auth_it_is_not_checked() {
        let foreign = headers(&[("host", "rebind.evil.example:8787")]);
        let g = Guard::new(&[], &[], false);
        assert_eq!(
            g.refuse(&Method::GET, "/api/export", &foreign)
                .unwrap()
                .code,
            codes::FORBIDDEN_HOST
        );
        let allowed = Guard::new(&[], &["rebind.evil.example".to_owned()], false);
        assert!(allowed
            .refuse(&Method::GET, "/api/export", &foreign)
            .is_none());
        let auth = Guard::new(&[], &[], true);
        assert!(auth.refuse(&Method::GET, "/api/export", &foreign).is_none());
        assert!(g
            .refuse(&Method::GET, "/api/export", &HeaderMap::new())
            .is_some());
    }

    #[test]
    fn listening_beyond_loopback_needs_auth_or_the_insecure_flag() {
        let any: SocketAddr = "0.0.0.0:8787".parse().unwrap();
        assert!(check_listen(any, false, false).is_err());
        assert!(check_listen(any, true, false).is_ok());
        assert!(check_listen(any, false, true).is_ok());
        assert!(check_listen("127.0.0.1:0".parse().unwrap(), false, false).is_ok());
        assert!(check_listen("[::1]:0".parse().unwrap(), false, false).is_ok());
    }
}
