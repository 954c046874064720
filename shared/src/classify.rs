//! What an HTTP answer (or a network failure) to a push or a replayed captured request means
//! for the outbox: acknowledge, dead-letter, wait for Retry-After, back off, halve the batch,
//! or stop and report an auth error.

use crate::protocol::{Millis, PushResponse};

/// What came back from one HTTP attempt, as the shell saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum HttpOutcome {
    /// No HTTP answer at all (connection refused, DNS, CORS, offline, timeout).
    Network { message: String },
    /// An HTTP answer.
    Response { status: u16, retry_after: Option<String>, body: String },
}

/// What to do after a push attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum PushAction {
    /// 2xx with one well-formed result per mutation, in order: record them.
    Results(PushResponse),
    /// Wait at least this long (429/503 with Retry-After), then try again.
    RetryAfter { delay_ms: u64, code: &'static str, message: String },
    /// Transient failure (network, 408, 5xx, 429/503 without Retry-After, a garbled 2xx,
    /// a misrouted 404/405/415): retry with backoff and report `code`.
    Backoff { code: &'static str, message: String },
    /// The batch was too large or held something malformed (413, or 400 with more than one
    /// mutation): send half as many next time to isolate it.
    HalveBatch { code: &'static str, message: String },
    /// A single-mutation batch that the server refuses as a whole (400/413/422):
    /// dead-letter it with this reason.
    DeadLetter { reason: String },
    /// 401/403: stop sending and report an auth error until the configuration changes.
    AuthStop { status: u16, message: String },
}

/// Classify the answer to a push of `batch_len` mutations.
pub fn classify_push(outcome: &HttpOutcome, batch_len: usize, now: Millis) -> PushAction {
    let _ = (outcome, batch_len, now);
    todo!()
}

/// What to do after replaying one captured REST request.
#[derive(Debug, Clone, PartialEq)]
pub enum CapturedAction {
    /// 2xx: delivered.
    Ack,
    /// 408, 429, 5xx, network: retry (at least `retry_after_ms` when given).
    Retry { retry_after_ms: Option<u64>, code: &'static str, message: String },
    /// 401/403: stop and report auth.
    AuthStop { status: u16, message: String },
    /// Any other 4xx: dead-letter.
    DeadLetter { reason: String },
}

/// Classify the answer to a replayed captured request (PROTOCOL.md, "Plain HTTP requests").
pub fn classify_captured(outcome: &HttpOutcome, now: Millis) -> CapturedAction {
    let _ = (outcome, now);
    todo!()
}
