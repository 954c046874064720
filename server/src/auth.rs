//! Who is calling: every `/api/*` route except `/api/health` (and CORS preflights, answered
//! before this layer) runs as a [`Caller`], which this middleware puts in the request's
//! extensions for the handlers (`Caller` is an extractor).
//!
//! | configured | caller |
//! |---|---|
//! | nothing | user `default`, admin (the server then answers only loopback; see [`crate::guard`]) |
//! | `--token T` | `Authorization: Bearer T` is user `default`, admin |
//! | `--tokens-file` | the line's user, admin when the line says so ([`crate::tokens`]) |
//! | `--jwt-*` | the token's `sub`, admin with `"rangersync_admin": true` ([`crate::jwt`]) |
//!
//! Several may be configured at once; anything else is `401 unauthorized`. A token is never
//! logged or echoed.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{codes, ApiError};
use crate::jwt::Jwt;
use crate::tokens::{Tokens, DEFAULT_USER};
use crate::AppState;

/// The authenticated user of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Whose data the request reads and writes.
    pub user_id: String,
    /// May restore the server's entities (`POST /api/restore`).
    pub admin: bool,
}

impl Caller {
    /// The caller of a server without auth (loopback only): user `default`, admin.
    pub fn unauthenticated() -> Self {
        Self {
            user_id: DEFAULT_USER.to_owned(),
            admin: true,
        }
    }

    /// `403 forbidden` unless an admin.
    pub fn require_admin(&self, what: &str) -> Result<(), ApiError> {
        if self.admin {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                codes::FORBIDDEN,
                format!("{what} needs an admin"),
            ))
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::internal("a handler that needs a caller ran without auth"))
    }
}

/// What the server accepts as credentials.
#[derive(Debug, Default)]
pub struct Authenticator {
    /// `--token` and `--tokens-file`.
    pub tokens: Option<Arc<Tokens>>,
    /// `--jwt-*`.
    pub jwt: Option<Jwt>,
}

impl Authenticator {
    /// Whether callers must authenticate.
    pub fn required(&self) -> bool {
        self.tokens.is_some() || self.jwt.is_some()
    }

    /// Who a presented bearer credential names.
    pub fn caller(&self, presented: &str) -> Result<Caller, ApiError> {
        let refused =
            |message: &str| ApiError::new(StatusCode::UNAUTHORIZED, codes::UNAUTHORIZED, message);
        if let Some(caller) = self.tokens.as_ref().and_then(|t| t.caller(presented)) {
            return Ok(caller);
        }
        if let Some(jwt) = &self.jwt {
            if presented.split('.').count() == 3 {
                return jwt.caller(presented).map_err(|m| refused(&m));
            }
        }
        Err(refused("invalid bearer token"))
    }
}

/// Whether `path` needs a caller.
pub fn is_protected(method: &Method, path: &str) -> bool {
    let api = path == "/api" || path.starts_with("/api/");
    api && path != "/api/health" && method != Method::OPTIONS
}

/// The middleware.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    if !is_protected(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let caller = if state.auth.required() {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let Some(presented) = presented else {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                codes::UNAUTHORIZED,
                "this server requires Authorization: Bearer <token>",
            )
            .into_response();
        };
        match state.auth.caller(presented) {
            Ok(c) => c,
            Err(e) => return e.into_response(),
        }
    } else {
        Caller::unauthenticated()
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_and_preflights_and_static_files_are_open() {
        assert!(!is_protected(&Method::GET, "/api/health"));
        assert!(!is_protected(&Method::OPTIONS, "/api/sync/push"));
        assert!(!is_protected(&Method::GET, "/index.html"));
        assert!(!is_protected(&Method::GET, "/apiary"));
        assert!(is_protected(&Method::POST, "/api/sync/push"));
        assert!(is_protected(&Method::GET, "/api/nope"));
    }
}
