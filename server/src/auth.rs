//! Optional bearer-token auth: when a token is configured, every `/api/*` route except
//! `/api/health` (and CORS preflights, answered before this layer) needs
//! `Authorization: Bearer <token>`. The token is compared in constant time and never logged.

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::{codes, ApiError};
use crate::AppState;

/// A configured token, kept only as its SHA-256 so comparisons take the same time whatever
/// the input (length included) and the secret is not sitting in memory dumps as text.
#[derive(Clone)]
pub struct Token([u8; 32]);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Wrap a configured token.
    pub fn new(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// Constant-time comparison with a presented token.
    pub fn matches(&self, presented: &str) -> bool {
        let other: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.0
            .iter()
            .zip(other.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// Whether `path` needs the token.
pub fn is_protected(method: &Method, path: &str) -> bool {
    let api = path == "/api" || path.starts_with("/api/");
    api && path != "/api/health" && method != Method::OPTIONS
}

/// The middleware.
pub async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(token) = &state.token else {
        return next.run(req).await;
    };
    if !is_protected(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match presented {
        Some(p) if token.matches(p) => next.run(req).await,
        Some(_) => ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            codes::UNAUTHORIZED,
            "invalid bearer token",
        )
        .into_response(),
        None => ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            codes::UNAUTHORIZED,
            "this server requires Authorization: Bearer <token>",
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_matches_only_itself_and_debug_hides_it() {
        let t = Token::new("s3cret");
        assert!(t.matches("s3cret"));
        assert!(!t.matches("s3cre"));
        assert!(!t.matches(""));
        assert!(!format!("{t:?}").contains("s3cret"));
    }

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
