//! `GET /api/sync/pull?since=CURSOR&limit=N`: the changes after a cursor, oldest first, one
//! row per entity (its latest state, tombstones included).
//!
//! The cursor is the base-10 version of the last change returned. Clients must treat it as
//! opaque; the server refuses anything it could not have issued.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use rangersync_shared::protocol::PullResponse;

use crate::auth::Caller;
use crate::error::{codes, ApiError};
use crate::AppState;

/// Changes per page when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 500;
/// Largest page; a bigger `limit` is clamped to it.
pub const MAX_LIMIT: usize = 1000;

/// Parse a cursor: empty means "from the start".
pub fn parse_cursor(text: &str) -> Result<u64, ApiError> {
    if text.is_empty() {
        return Ok(0);
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) || text.len() > 19 {
        return Err(ApiError::bad_request(
            codes::INVALID_CURSOR,
            format!("invalid cursor {text:?}"),
        ));
    }
    text.parse::<u64>()
        .ok()
        .filter(|n| i64::try_from(*n).is_ok())
        .ok_or_else(|| {
            ApiError::bad_request(codes::INVALID_CURSOR, format!("invalid cursor {text:?}"))
        })
}

/// Parse `limit`: 1 or more, clamped to [`MAX_LIMIT`].
pub fn parse_limit(text: Option<&str>) -> Result<usize, ApiError> {
    let Some(text) = text else {
        return Ok(DEFAULT_LIMIT);
    };
    match text.parse::<u64>() {
        Ok(0) | Err(_) => Err(ApiError::bad_request(
            codes::BAD_QUERY,
            format!("limit must be a whole number from 1 to {MAX_LIMIT} (got {text:?})"),
        )),
        Ok(n) => Ok(usize::try_from(n).unwrap_or(MAX_LIMIT).min(MAX_LIMIT)),
    }
}

/// Turn a query-string rejection into the protocol's error body.
pub fn query_params(
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<HashMap<String, String>, ApiError> {
    q.map(|Query(m)| m)
        .map_err(|e| ApiError::bad_request(codes::BAD_QUERY, e.body_text()))
}

/// The handler.
pub async fn pull(
    State(state): State<AppState>,
    caller: Caller,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<PullResponse>, ApiError> {
    let params = query_params(q)?;
    let since = parse_cursor(params.get("since").map_or("", String::as_str))?;
    let limit = parse_limit(params.get("limit").map(String::as_str))?;
    let mut changes = state
        .db
        .changes_after(&caller.user_id, since, limit + 1)
        .await?;
    let has_more = changes.len() > limit;
    changes.truncate(limit);
    let cursor = changes.last().map_or(since, |e| e.version).to_string();
    Ok(Json(PullResponse {
        changes,
        cursor,
        has_more,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_cursor_starts_from_the_beginning_and_garbage_is_refused() {
        assert_eq!(parse_cursor("").unwrap(), 0);
        assert_eq!(parse_cursor("17").unwrap(), 17);
        for bad in [
            "-1",
            "abc",
            "1.5",
            " 1",
            "99999999999999999999",
            "18446744073709551615",
        ] {
            assert_eq!(
                parse_cursor(bad).unwrap_err().code,
                codes::INVALID_CURSOR,
                "{bad}"
            );
        }
    }

    #[test]
    fn limit_defaults_to_500_is_clamped_to_1000_and_zero_is_refused() {
        assert_eq!(parse_limit(None).unwrap(), DEFAULT_LIMIT);
        assert_eq!(parse_limit(Some("2")).unwrap(), 2);
        assert_eq!(parse_limit(Some("5000")).unwrap(), MAX_LIMIT);
        assert!(parse_limit(Some("0")).is_err());
        assert!(parse_limit(Some("-3")).is_err());
        assert!(parse_limit(Some("ten")).is_err());
    }
}
