//! Errors: [`ApiError`] is every HTTP error answer (`{ "error": { "code", "message" } }`),
//! [`ServerError`] is why the server could not start.

use std::net::SocketAddr;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rangersync_shared::protocol::ErrorBody;

/// Stable error codes of the server's own answers (validation and snapshot errors carry the
/// codes of `rangersync-shared`).
pub mod codes {
    /// The body is not JSON, or not of the expected shape.
    pub const MALFORMED_BODY: &str = "malformed_body";
    /// A query parameter is missing or invalid.
    pub const BAD_QUERY: &str = "bad_query";
    /// A request header is invalid.
    pub const BAD_HEADER: &str = "bad_header";
    /// The `since` cursor was not issued by this server.
    pub const INVALID_CURSOR: &str = "invalid_cursor";
    /// The `since` cursor is older than the retention horizon: pull again from the start.
    pub const CURSOR_EXPIRED: &str = "cursor_expired";
    /// The body is larger than the route accepts.
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    /// The request's content type is not the one the route accepts.
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";
    /// Auth is configured and the request carried no valid credential.
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// The request's `Origin` is neither the server's own nor an `--allow-origin`.
    pub const FORBIDDEN_ORIGIN: &str = "forbidden_origin";
    /// Without auth, the request's `Host` is not a loopback name or an `--allow-host`.
    pub const FORBIDDEN_HOST: &str = "forbidden_host";
    /// The caller may not do this (e.g. a restore by a non-admin).
    pub const FORBIDDEN: &str = "forbidden";
    /// The client id of a push or a backup belongs to another user.
    pub const CLIENT_OWNED_BY_ANOTHER_USER: &str = "client_owned_by_another_user";
    /// No such route or resource.
    pub const NOT_FOUND: &str = "not_found";
    /// The route exists but not with this method.
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    /// An answer injected by a test fault rule.
    pub const INJECTED_FAULT: &str = "injected_fault";
    /// The server is handling as many requests as it may (`--max-concurrent-requests`):
    /// `503` with `Retry-After`.
    pub const OVERLOADED: &str = "overloaded";
    /// The handler did not answer within `--request-timeout-secs`: `503`.
    pub const TIMEOUT: &str = "timeout";
    /// The request body did not arrive within `--request-timeout-secs`: `408`.
    pub const BODY_TIMEOUT: &str = "body_timeout";
    /// A blob request is malformed: its sha256 is not 64 lower-case hex digits, its
    /// `Content-Range` is missing or malformed, its body is not the range's length, or its
    /// total differs from the upload in progress. Nothing changed.
    pub const BAD_BLOB_REQUEST: &str = "bad_blob_request";
    /// A blob chunk does not start where the upload got to: `409`, with the top-level
    /// `received` to resume from. Nothing changed.
    pub const BLOB_RANGE_MISMATCH: &str = "blob_range_mismatch";
    /// A blob is larger than `--max-blob-bytes`: `413`. Nothing changed.
    pub const BLOB_TOO_LARGE: &str = "blob_too_large";
    /// A new upload would take the user's blobs past `--blob-quota-bytes`: `413`.
    pub const BLOB_QUOTA_EXCEEDED: &str = "blob_quota_exceeded";
    /// The assembled bytes do not hash to the blob's sha256: `422`, the upload is discarded.
    pub const BLOB_HASH_MISMATCH: &str = "blob_hash_mismatch";
    /// No such blob of the caller (never uploaded, not complete yet, or another user's).
    pub const BLOB_NOT_FOUND: &str = "blob_not_found";
    /// The server has no blob store (PostgreSQL without `--blob-store` or `--blob-dir`): `501`.
    pub const BLOBS_NOT_CONFIGURED: &str = "blobs_not_configured";
    /// Something failed on the server (database, a panic).
    pub const INTERNAL: &str = "internal";
}

/// An HTTP error answer with the protocol's JSON error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine code.
    pub code: String,
    /// Human-readable message.
    pub message: String,
}

impl ApiError {
    /// An error with any status.
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    /// `400` with this code.
    pub fn bad_request(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// `413`.
    pub fn too_large(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, code, message)
    }

    /// `404 not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, message)
    }

    /// `500 internal`. The details go to stderr, not to the client.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        eprintln!("rangersync-server: internal error: {detail}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            codes::INTERNAL,
            "internal server error",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(ErrorBody::new(self.code, self.message))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        Self::internal(format!("database: {e}"))
    }
}

/// Why [`crate::start`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The database could not be opened, created or migrated.
    #[error("database {location}: {message}")]
    Database {
        /// The file, or the URL with its password redacted.
        location: String,
        /// What went wrong.
        message: String,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another I/O failure (reading the bound address).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// An option is invalid (an allowed origin that is not a header value, say).
    #[error("invalid option: {0}")]
    Config(String),
}
