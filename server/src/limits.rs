//! Bounds on every request to `/api/*`, so that a flood of clients or a slow one can neither
//! wedge the server nor make it hold ever more work.
//!
//! - **Concurrency**: at most [`ServerOptions::max_concurrent_requests`] requests are handled at
//!   a time. One more is answered at once `503 overloaded` with `Retry-After:`
//!   [`OVERLOAD_RETRY_AFTER_SECS`], never queued: a queue would only move the wait into the
//!   client's timeout. The client honours `Retry-After` on a 503 and does not count it toward
//!   its give-up limit. `GET /api/health` is not counted, so a load balancer's health check
//!   still answers while the server is saturated.
//! - **Time**: a request gets [`ServerOptions::request_timeout`] from the moment it is admitted
//!   to its answer (the body's arrival included). A body still arriving then is answered
//!   `408 body_timeout` (the client is too slow, or its network is); a handler still working
//!   is answered `503 timeout` (the server is too slow: retry later, with backoff). The
//!   answer's body is not bounded here: it streams at the client's pace.
//!
//! A handler that times out is dropped, but work it handed to the database is not cut in
//! half: a SQLite transaction runs to its end on its blocking thread, a PostgreSQL transaction
//! that has not committed is rolled back with its connection. Either way a push is applied
//! whole or not at all, and its resend is answered `duplicate` or applied then.
//!
//! [`ServerOptions::max_concurrent_requests`]: crate::ServerOptions::max_concurrent_requests
//! [`ServerOptions::request_timeout`]: crate::ServerOptions::request_timeout

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};
use tokio::sync::Semaphore;

use crate::error::{codes, ApiError};

/// The `Retry-After` of a `503 overloaded`, in seconds. Requests turn over in milliseconds, so
/// a second is plenty; the client waits the longer of this and its own jittered backoff, which
/// spreads out the retries of many clients refused at once as their attempts add up.
pub const OVERLOAD_RETRY_AFTER_SECS: u64 = 1;

/// The permits and the deadline every `/api/*` request is held to.
#[derive(Debug)]
pub struct Limits {
    permits: Arc<Semaphore>,
    max_concurrent: usize,
    timeout: Duration,
}

impl Limits {
    /// At most `max_concurrent` requests at a time (at least 1), each answered within `timeout`.
    pub fn new(max_concurrent: usize, timeout: Duration) -> Self {
        let max_concurrent = max_concurrent.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            timeout,
        }
    }
}

/// Whether a request to `path` is held to the limits: the API, except the health check.
fn is_bounded(path: &str) -> bool {
    (path == "/api" || path.starts_with("/api/")) && path != "/api/health"
}

/// The middleware: admit or refuse at once, then answer within the deadline.
pub async fn bound(State(limits): State<Arc<Limits>>, req: Request, next: Next) -> Response {
    if !is_bounded(req.uri().path()) {
        return next.run(req).await;
    }
    let Ok(_permit) = Arc::clone(&limits.permits).try_acquire_owned() else {
        return overloaded(limits.max_concurrent);
    };
    let (parts, body) = req.into_parts();
    let received = Arc::new(AtomicBool::new(body.is_end_stream()));
    let body = Body::new(Watched {
        inner: body,
        received: Arc::clone(&received),
    });
    match tokio::time::timeout(limits.timeout, next.run(Request::from_parts(parts, body))).await {
        Ok(response) => response,
        Err(_) if received.load(Ordering::Acquire) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::TIMEOUT,
            format!(
                "the server did not answer within {} ms; a push may have been applied \
                 (resending it is safe: it is deduplicated)",
                limits.timeout.as_millis()
            ),
        )
        .into_response(),
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            codes::BODY_TIMEOUT,
            format!(
                "the request body did not arrive within {} ms",
                limits.timeout.as_millis()
            ),
        )
        .into_response(),
    }
}

fn overloaded(max_concurrent: usize) -> Response {
    let mut response = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        codes::OVERLOADED,
        format!(
            "the server is handling {max_concurrent} requests already; \
             retry after {OVERLOAD_RETRY_AFTER_SECS} s"
        ),
    )
    .into_response();
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(OVERLOAD_RETRY_AFTER_SECS),
    );
    response
}

/// A request body that records when it has been read to its end, so that a timeout can tell a
/// slow client (`408`) from a slow server (`503`).
struct Watched {
    inner: Body,
    received: Arc<AtomicBool>,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.received.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_api_route_but_the_health_check_is_bounded_and_static_files_are_not() {
        for path in [
            "/api",
            "/api/sync/push",
            "/api/sync/pull",
            "/api/test/stats",
            "/api/x",
        ] {
            assert!(is_bounded(path), "{path}");
        }
        for path in [
            "/api/health",
            "/",
            "/index.html",
            "/apix",
            "/pkg/rangersync_sw.js",
        ] {
            assert!(!is_bounded(path), "{path}");
        }
    }
}
