//! Test endpoints, mounted only with `--test-endpoints` (else every `/api/test/*` is `404`):
//! fault injection, delivery counts and the recorded mutations of a client, pruning now, and a
//! reset.
//!
//! - `POST /api/test/faults` `{"rules":[{"path","method"?,"status"?,"retry_after"?,"body"?,
//!   "times"?,"delay_ms"?}]}` appends rules (FIFO per path). A request to `path` (and
//!   `method`, when given) consumes one of the first rule's `times` (default 1). With a
//!   `status`, it is answered with that status, the `Retry-After` header and `body` (default a
//!   JSON error body with code `injected_fault`) without reaching the handler or the database,
//!   after `delay_ms` if given. Without a `status`, the request is handled normally and the
//!   answer is held `delay_ms` after the work is committed (a "worker killed mid-flush" test:
//!   the push is applied, the answer is late or lost). Answers `{"pending": n}`.
//! - `GET /api/test/faults` lists the pending rules; `DELETE /api/test/faults` clears them.
//! - `GET /api/test/stats`: `{"push_requests","mutations_applied","duplicates","conflicts",
//!   "rejected","faults_served","captured":[{"path","idempotency_key","body"}],
//!   "blobs":{"complete","uploading","bytes"}}`.
//! - `GET /api/test/mutations?client_id=X`: every recorded `(client_id, seq)` of that client
//!   (applied, conflict or rejected) in seq order.
//! - `POST /api/test/prune?before=MILLIS`: prunes now, for every user, what the hourly pruner
//!   prunes with its horizon at `before` (default: now); answers what it removed.
//! - `POST /api/test/reset`: wipes every table (the version counter keeps growing), the
//!   blob store's blobs and parts, and the fault rules.
//! - `GET /api/test/no-store`: a small text page sent with `Cache-Control: no-store`, which
//!   must never be cached (the app-shell tests list it).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::body::read_body;
use crate::error::{codes, ApiError};
use crate::pull::query_params;
use crate::AppState;

/// Longest delay a rule may ask for.
pub const MAX_DELAY_MS: u64 = 10 * 60 * 1000;

/// One fault rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// The exact request path, e.g. `/api/sync/push`.
    pub path: String,
    /// Only requests with this method (any when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The status to answer; absent: handle normally (with `delay_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The `Retry-After` header value (a string or a number of seconds).
    #[serde(
        default,
        deserialize_with = "string_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_after: Option<String>,
    /// The answer body (JSON when it parses as JSON, else text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// How many requests the rule applies to.
    #[serde(default = "one")]
    pub times: u32,
    /// Hold the answer this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
}

fn one() -> u32 {
    1
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => {
            return Err(serde::de::Error::custom(
                "retry_after must be a string or a number",
            ))
        }
    })
}

/// Body of `POST /api/test/faults`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddRules {
    /// Rules to append.
    pub rules: Vec<FaultRule>,
}

/// The pending fault rules and how many faults were served.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Mutex<VecDeque<FaultRule>>,
    served: AtomicU64,
}

impl Faults {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<FaultRule>> {
        self.rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Append rules; returns how many are pending.
    pub fn add(&self, rules: Vec<FaultRule>) -> usize {
        let mut q = self.lock();
        q.extend(rules);
        q.len()
    }

    /// Drop every rule; returns how many there were.
    pub fn clear(&self) -> usize {
        let mut q = self.lock();
        let n = q.len();
        q.clear();
        n
    }

    /// The pending rules.
    pub fn pending(&self) -> Vec<FaultRule> {
        self.lock().iter().cloned().collect()
    }

    /// Consume one use of the first rule matching this request.
    pub fn take(&self, method: &str, path: &str) -> Option<FaultRule> {
        let mut q = self.lock();
        let i = q.iter().position(|r| {
            r.path == path
                && r.method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method))
        })?;
        let rule = q[i].clone();
        if q[i].times <= 1 {
            q.remove(i);
        } else {
            q[i].times -= 1;
        }
        Some(rule)
    }

    /// How many requests got an injected status.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

fn check_rule(r: &FaultRule) -> Result<(), String> {
    if !r.path.starts_with('/') {
        return Err(format!("path {:?} must start with /", r.path));
    }
    if r.path.starts_with("/api/test/") {
        return Err("the test endpoints cannot be faulted".to_owned());
    }
    if let Some(s) = r.status {
        if !(100..=599).contains(&s) {
            return Err(format!("status {s} is not an HTTP status"));
        }
    }
    if r.times == 0 {
        return Err("times must be at least 1".to_owned());
    }
    if r.delay_ms.is_some_and(|d| d > MAX_DELAY_MS) {
        return Err(format!("delay_ms is at most {MAX_DELAY_MS}"));
    }
    if let Some(v) = &r.retry_after {
        HeaderValue::from_str(v).map_err(|_| format!("retry_after {v:?} is not a header value"))?;
    }
    if r.status.is_none() && r.delay_ms.is_none() {
        return Err("a rule needs a status, a delay_ms, or both".to_owned());
    }
    Ok(())
}

fn fault_response(rule: &FaultRule, status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = match &rule.body {
        Some(text) => {
            let ct = if serde_json::from_str::<Value>(text).is_ok() {
                "application/json"
            } else {
                "text/plain; charset=utf-8"
            };
            (status, [(header::CONTENT_TYPE, ct)], text.clone()).into_response()
        }
        None => {
            let mut r = ApiError::new(
                status,
                codes::INJECTED_FAULT,
                format!("injected fault: {}", status.as_u16()),
            )
            .into_response();
            *r.status_mut() = status;
            r
        }
    };
    if let Some(v) = rule
        .retry_after
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// The fault-injection middleware (installed only with test endpoints).
pub async fn inject_faults(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path.starts_with("/api/test/") {
        return next.run(req).await;
    }
    let Some(rule) = state.faults.take(req.method().as_str(), path) else {
        return next.run(req).await;
    };
    let delay = Duration::from_millis(rule.delay_ms.unwrap_or(0));
    match rule.status {
        Some(status) => {
            state.faults.served.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(delay).await;
            fault_response(&rule, status)
        }
        None => {
            let resp = next.run(req).await;
            tokio::time::sleep(delay).await;
            resp
        }
    }
}

/// The largest `POST /api/test/faults` body.
pub const MAX_FAULTS_BYTES: usize = 64 * 1024;

/// `POST /api/test/faults`.
pub async fn add_faults(
    State(state): State<AppState>,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = read_body(&parts.headers, body, MAX_FAULTS_BYTES).await?;
    let add: AddRules = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(
            codes::MALFORMED_BODY,
            format!("not a list of fault rules: {e}"),
        )
    })?;
    for r in &add.rules {
        check_rule(r).map_err(|m| ApiError::bad_request(codes::MALFORMED_BODY, m))?;
    }
    let pending = state.faults.add(add.rules);
    Ok(Json(json!({ "pending": pending })))
}

/// `GET /api/test/faults`.
pub async fn list_faults(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "rules": state.faults.pending() }))
}

/// `DELETE /api/test/faults`.
pub async fn clear_faults(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "cleared": state.faults.clear() }))
}

/// `GET /api/test/stats`.
pub async fn stats(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let (counters, captured) = state.db.stats(&caller.user_id).await?;
    let blobs = state.db.blob_counts(&caller.user_id).await?;
    let captured: Vec<Value> = captured
        .into_iter()
        .map(|c| json!({ "path": c.path, "idempotency_key": c.idempotency_key, "body": c.body }))
        .collect();
    Ok(Json(json!({
        "push_requests": counters.push_requests,
        "mutations_applied": counters.mutations_applied,
        "duplicates": counters.duplicates,
        "conflicts": counters.conflicts,
        "rejected": counters.rejected,
        "faults_served": state.faults.served(),
        "captured": captured,
        "blobs": blobs,
    })))
}

/// `GET /api/test/mutations?client_id=X`.
pub async fn mutations(
    State(state): State<AppState>,
    caller: Caller,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let params = query_params(q)?;
    let client_id = params
        .get("client_id")
        .filter(|c| !c.is_empty())
        .cloned()
        .ok_or_else(|| ApiError::bad_request(codes::BAD_QUERY, "client_id is required"))?;
    let rows = state.db.mutations_of(&caller.user_id, client_id).await?;
    Ok(Json(json!({ "mutations": rows })))
}

/// `GET /api/test/no-store`: personal data that no cache may keep.
pub async fn no_store() -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        ],
        "personal data: never cache this",
    )
        .into_response()
}

/// `POST /api/test/prune?before=MILLIS`: prune now what the hourly pruner would prune with
/// its horizon at `before` (default: now, so everything received so far), for every user.
pub async fn prune(
    State(state): State<AppState>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<crate::retention::Pruned>, ApiError> {
    let params = query_params(q)?;
    let before = match params.get("before") {
        None => crate::now_ms() + 1,
        Some(text) => text
            .parse::<rangersync_shared::protocol::Millis>()
            .map_err(|_| {
                ApiError::bad_request(
                    codes::BAD_QUERY,
                    format!("before must be milliseconds since the epoch (got {text:?})"),
                )
            })?,
    };
    Ok(Json(crate::retention::prune(&state.db, before).await?))
}

/// `POST /api/test/reset`.
pub async fn reset(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.faults.clear();
    state.db.wipe().await?;
    if let Some(store) = &state.blobs.store {
        store
            .wipe()
            .await
            .map_err(|e| ApiError::internal(format!("blob store {}: {e}", store.shown())))?;
    }
    Ok(Json(json!({ "reset": true })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(path: &str, status: u16, times: u32) -> FaultRule {
        FaultRule {
            path: path.to_owned(),
            method: None,
            status: Some(status),
            retry_after: None,
            body: None,
            times,
            delay_ms: None,
        }
    }

    #[test]
    fn rules_are_consumed_first_in_first_out_per_path() {
        let f = Faults::default();
        f.add(vec![
            rule("/a", 503, 2),
            rule("/b", 500, 1),
            rule("/a", 429, 1),
        ]);
        assert_eq!(f.take("POST", "/a").unwrap().status, Some(503));
        assert_eq!(f.take("POST", "/a").unwrap().status, Some(503));
        assert_eq!(f.take("POST", "/a").unwrap().status, Some(429));
        assert!(f.take("POST", "/a").is_none());
        assert_eq!(f.take("GET", "/b").unwrap().status, Some(500));
        assert!(f.pending().is_empty());
    }

    #[test]
    fn retry_after_may_be_given_as_a_number() {
        let r: FaultRule =
            serde_json::from_str(r#"{"path":"/x","status":429,"retry_after":2}"#).unwrap();
        assert_eq!(r.retry_after.as_deref(), Some("2"));
        assert_eq!(r.times, 1);
    }
}
