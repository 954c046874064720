//! Reading request bodies: the JSON content-type check and a size-limited read that drains
//! (within reason) what it refuses, so the client gets to read the `413`.

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use http_body_util::BodyExt;

use crate::error::{codes, ApiError};

/// Whether the request says its body is JSON (`application/json`, any parameters).
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// How much of an oversize body is read and thrown away before answering `413`. Answering
/// while the client is still sending makes the server close the connection under it, and
/// the client may see a connection reset instead of the `413` (and retry the same batch
/// rather than halve it); draining lets it read the answer.
pub const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// Read a body of at most `limit` bytes, answering `413` beyond it.
pub async fn read_body(
    headers: &HeaderMap,
    mut body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::too_large(
            codes::PAYLOAD_TOO_LARGE,
            format!("body exceeds {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit.saturating_add(DRAIN_LIMIT)) {
        return Err(too_large());
    }
    let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(limit));
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::bad_request(codes::MALFORMED_BODY, format!("cannot read body: {e}"))
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total = total.saturating_add(data.len());
        if total <= limit {
            buf.extend_from_slice(&data);
        } else if total > limit.saturating_add(DRAIN_LIMIT) {
            break;
        }
    }
    if total > limit {
        return Err(too_large());
    }
    Ok(Bytes::from(buf))
}
