//! RangerPlex's existing REST routes, served as example targets for requests the worker
//! captures and replays: `POST /api/sync/chat` and `POST /api/sync/settings`.
//!
//! Each takes any JSON body of at most 1 MiB and stores it. An `Idempotency-Key` seen before
//! stores nothing and answers `{"stored":true,"duplicate":true}`, which makes replay of a
//! captured request exactly-once.

use axum::extract::{Request, State};
use axum::Json;
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::body::read_body;
use crate::error::{codes, ApiError};
use crate::{now_ms, AppState};

/// The captured routes this server serves.
pub const CAPTURED_ROUTES: &[&str] = &["/api/sync/chat", "/api/sync/settings"];

/// Largest captured body.
pub const MAX_CAPTURED_BYTES: usize = 1024 * 1024;

/// Longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 512;

/// The handler.
pub async fn store(
    State(state): State<AppState>,
    caller: Caller,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let key = match parts.headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v.to_str().ok().filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY).ok_or_else(|| {
                ApiError::bad_request(
                    codes::BAD_HEADER,
                    format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
                )
            })?;
            Some(k.to_owned())
        }
    };
    let bytes = read_body(&parts.headers, body, MAX_CAPTURED_BYTES).await?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(codes::MALFORMED_BODY, format!("body is not JSON: {e}"))
    })?;
    let text = value.to_string();
    let now = now_ms();
    let stored = state
        .db
        .insert_captured(&caller.user_id, path, text, key, now)
        .await?;
    Ok(Json(json!({ "stored": true, "duplicate": !stored })))
}
