//! What an HTTP answer (or a network failure) to a push or a replayed captured request means
//! for the outbox: acknowledge, dead-letter, wait for Retry-After, back off, halve the batch,
//! or stop and report an auth error.

use crate::messages::codes::CURSOR_EXPIRED;
use crate::protocol::{ErrorBody, Millis, PushResponse};
use crate::retry::parse_retry_after;

/// Longest server text carried into a dead-letter reason.
pub const MAX_REASON_CHARS: usize = 500;
/// Longest server text carried into a status message.
const MAX_MESSAGE_CHARS: usize = 200;

/// What came back from one HTTP attempt, as the shell saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum HttpOutcome {
    /// No HTTP answer at all (connection refused, DNS, CORS, offline, timeout).
    Network { message: String },
    /// An HTTP answer.
    Response {
        status: u16,
        retry_after: Option<String>,
        body: String,
    },
}

/// Whether a failed attempt says something about the entries, so that it counts toward
/// `max_attempts`; or only that the server could not be reached (no answer, `429`, `502`,
/// `503`, `504`: an outage or a gateway in front of a down server), which is left to
/// `max_age_ms` so that an outage never dead-letters the queue.
pub fn counts_toward_attempts(outcome: &HttpOutcome) -> bool {
    match outcome {
        HttpOutcome::Network { .. } => false,
        HttpOutcome::Response { status, .. } => !matches!(status, 429 | 502 | 503 | 504),
    }
}

/// What to do after a push attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum PushAction {
    /// 2xx with one well-formed result per mutation, in order: record them.
    Results(PushResponse),
    /// Wait at least this long (429/503 with Retry-After), then try again.
    RetryAfter {
        delay_ms: u64,
        code: &'static str,
        message: String,
    },
    /// Transient failure (network, 408, 5xx, 429/503 without Retry-After, a garbled 2xx,
    /// a 2xx with the wrong number of results): retry with backoff and report `code`.
    Backoff { code: &'static str, message: String },
    /// The batch was too large or held something malformed (413, or 400 with more than one
    /// mutation): send half as many next time to isolate it.
    HalveBatch { code: &'static str, message: String },
    /// A single-mutation batch that the server refuses as a whole (400/413/422):
    /// dead-letter it with this reason.
    DeadLetter { reason: String },
    /// 401/403: stop sending and report an auth error until the configuration changes.
    AuthStop { status: u16, message: String },
    /// The URL does not lead to a rangersync sync endpoint: 404, 405, 415 or any other status
    /// the protocol never uses, a 2xx that is not a push response (an HTML page, a proxy's
    /// login form), a 400/422 without the protocol's error body. Nothing is wrong with the
    /// entries: report `config_error` (`message` says what came back), back off, count nothing
    /// toward `max_attempts`, dead-letter nothing.
    ConfigError { message: String },
}

/// Classify the answer to a push of `batch_len` mutations.
pub fn classify_push(outcome: &HttpOutcome, batch_len: usize, now: Millis) -> PushAction {
    let (status, retry_after, body) = match outcome {
        HttpOutcome::Network { message } => {
            return PushAction::Backoff {
                code: "network",
                message: format!("network error: {message}"),
            };
        }
        HttpOutcome::Response {
            status,
            retry_after,
            body,
        } => (*status, retry_after.as_deref(), body.as_str()),
    };
    let said = server_says(body);
    match status {
        200..=299 => match serde_json::from_str::<PushResponse>(body) {
            Ok(response) if response.results.len() == batch_len => PushAction::Results(response),
            Ok(response) => PushAction::Backoff {
                code: "bad_response",
                message: format!(
                    "the server answered HTTP {status} with {} results for {batch_len} mutations",
                    response.results.len()
                ),
            },
            Err(e) => PushAction::ConfigError {
                message: format!(
                    "answered HTTP {status} with {} instead of a push response ({e})",
                    what_came_back(body)
                ),
            },
        },
        400 | 422 if error_detail(body).is_none() => PushAction::ConfigError {
            message: format!("answered HTTP {status} with {}", what_came_back(body)),
        },
        400 | 422 => refuse(
            batch_len,
            "bad_request",
            status,
            body,
            &said,
            "refused the batch as malformed",
        ),
        413 => refuse(
            batch_len,
            "payload_too_large",
            status,
            body,
            &said,
            "refused the batch as too large",
        ),
        401 | 403 => PushAction::AuthStop {
            status,
            message: auth_detail(body),
        },
        429 | 503 => {
            let (code, what) = if status == 429 {
                ("rate_limited", "is rate limiting")
            } else {
                ("unavailable", "is unavailable")
            };
            match retry_after.and_then(|h| parse_retry_after(h, now)) {
                Some(delay_ms) => PushAction::RetryAfter {
                    delay_ms,
                    code,
                    message: format!(
                        "the server {what} (HTTP {status}){said}; retrying in {} s",
                        delay_ms.div_ceil(1000)
                    ),
                },
                None => PushAction::Backoff {
                    code,
                    message: format!("the server {what} (HTTP {status}){said}"),
                },
            }
        }
        408 => PushAction::Backoff {
            code: "timeout",
            message: format!("the server timed out (HTTP 408){said}"),
        },
        500..=599 => PushAction::Backoff {
            code: "server_error",
            message: format!("the server failed (HTTP {status}){said}"),
        },
        _ => PushAction::ConfigError {
            message: format!("answered HTTP {status} with {}", what_came_back(body)),
        },
    }
}

/// What a pull answer means: `Ok(body)` for a 2xx (the caller parses it; an unreadable one is
/// [`pull_unreadable`]), else `Err((code, message))` for the status: `network` (no answer),
/// `auth` (401/403), `server_error` / `unavailable` / `rate_limited` (5xx, 429),
/// `cursor_expired` (410 with that code: pull again from the start, see [`crate::resync`]), and
/// `config_error` for anything that shows `url` is not a rangersync pull route (404, 405,
/// 415, another status the protocol never uses).
pub fn classify_pull(outcome: HttpOutcome, url: &str) -> Result<String, (&'static str, String)> {
    let (status, body) = match outcome {
        HttpOutcome::Network { message } => {
            return Err(("network", format!("network error: {message}")))
        }
        HttpOutcome::Response { status, body, .. } => (status, body),
    };
    let said = server_says(&body);
    match status {
        200..=299 => Ok(body),
        401 | 403 => Err((
            "auth",
            format!("the server refused the credentials for GET {url} (HTTP {status}){said}"),
        )),
        429 => Err((
            "rate_limited",
            format!("the server is rate limiting (HTTP 429){said}"),
        )),
        503 => Err((
            "unavailable",
            format!("the server is unavailable (HTTP 503){said}"),
        )),
        410 if error_detail(&body).is_some_and(|d| d.code == CURSOR_EXPIRED) => Err((
            CURSOR_EXPIRED,
            format!("the server no longer holds the changes after the stored cursor (HTTP 410){said}"),
        )),
        408 | 500..=599 => Err((
            "server_error",
            format!("the pull failed (HTTP {status}){said}"),
        )),
        _ => Err((
            "config_error",
            format!(
                "GET {url} answered HTTP {status} with {}: the server URL does not lead to a rangersync sync server",
                what_came_back(&body)
            ),
        )),
    }
}

/// A 2xx pull answer that is not the protocol's: a `config_error` naming what came back.
pub fn pull_unreadable(url: &str, body: &str, error: &str) -> (&'static str, String) {
    (
        "config_error",
        format!(
            "GET {url} answered with {} instead of a pull response ({error}): the server URL does not lead to a rangersync sync server",
            what_came_back(body)
        ),
    )
}

/// Longest excerpt of an unexpected body carried into a `config_error` message.
const MAX_EXCERPT_CHARS: usize = 120;

/// What an unexpected answer held, for a person: `an empty body`, `an HTML page titled "…"`,
/// the protocol's error (`code: message`), or the first characters of the text.
pub fn what_came_back(body: &str) -> String {
    let text = body.trim();
    if text.is_empty() {
        return "an empty body".to_owned();
    }
    if let Some(said) = server_says(text).strip_prefix(": ") {
        return format!("the error {said:?}");
    }
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let lower = collapsed.to_ascii_lowercase();
    if lower.starts_with("<!doctype html") || lower.starts_with("<html") || lower.contains("<body")
    {
        let title = lower
            .find("<title>")
            .map(|i| i + "<title>".len())
            .and_then(|start| {
                let end = start + lower[start..].find("</title>")?;
                collapsed.get(start..end).map(str::trim)
            })
            .filter(|t| !t.is_empty());
        return match title {
            Some(t) => format!(
                "an HTML page titled {:?}",
                truncate_chars(t, MAX_EXCERPT_CHARS)
            ),
            None => "an HTML page".to_owned(),
        };
    }
    format!("{:?}", truncate_chars(&collapsed, MAX_EXCERPT_CHARS))
}

/// 400/413/422: halve a batch of several, dead-letter a batch of one. An empty batch (which
/// the outbox never sends) cannot be halved or dead-lettered, so it backs off.
fn refuse(
    batch_len: usize,
    code: &'static str,
    status: u16,
    body: &str,
    said: &str,
    what: &str,
) -> PushAction {
    match batch_len {
        0 => PushAction::Backoff {
            code,
            message: format!("the server {what} (HTTP {status}){said}"),
        },
        1 => PushAction::DeadLetter {
            reason: dead_letter_reason(status, body),
        },
        n => PushAction::HalveBatch {
            code,
            message: format!(
                "the server {what} (HTTP {status}){said}; retrying with {} mutations",
                n / 2
            ),
        },
    }
}

/// The server's error message (from `{"error":{"code","message"}}`), else the body text
/// truncated to [`MAX_REASON_CHARS`], else `HTTP <status>`.
fn dead_letter_reason(status: u16, body: &str) -> String {
    if let Some(detail) = error_detail(body) {
        if !detail.message.trim().is_empty() {
            return truncate_chars(detail.message.trim(), MAX_REASON_CHARS);
        }
    }
    let text = body.trim();
    if text.is_empty() {
        format!("HTTP {status}")
    } else {
        truncate_chars(text, MAX_REASON_CHARS)
    }
}

/// `": <code>: <message>"` when the body is the protocol's JSON error body, else `""`.
pub(crate) fn server_says(body: &str) -> String {
    match error_detail(body) {
        Some(detail) => {
            let text = if detail.code.is_empty() {
                detail.message
            } else if detail.message.is_empty() {
                detail.code
            } else {
                format!("{}: {}", detail.code, detail.message)
            };
            format!(": {}", truncate_chars(text.trim(), MAX_MESSAGE_CHARS))
        }
        None => String::new(),
    }
}

/// The `message` of an `AuthStop`: only what the server said (`code: message` of an error body,
/// else the body text, shortened), or `no details given`; the caller adds the framing sentence
/// and the status.
fn auth_detail(body: &str) -> String {
    let said = server_says(body);
    if let Some(text) = said.strip_prefix(": ") {
        return text.to_owned();
    }
    let text = truncate_chars(body.trim(), MAX_MESSAGE_CHARS);
    if text.is_empty() {
        "no details given".to_owned()
    } else {
        text
    }
}

fn error_detail(body: &str) -> Option<crate::protocol::ErrorDetail> {
    serde_json::from_str::<ErrorBody>(body)
        .ok()
        .map(|b| b.error)
}

/// A short human-readable form of a body: the server's error message, else the text itself,
/// truncated to `max` characters (with `…` when cut).
fn short_body(body: &str, max: usize) -> String {
    match error_detail(body) {
        Some(detail) if !detail.message.trim().is_empty() => {
            truncate_chars(detail.message.trim(), max)
        }
        _ => truncate_chars(body.trim(), max),
    }
}

/// At most `max` characters of `text` (never splitting a character), `…` appended when cut.
pub fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((cut, _)) => {
            let mut out = text[..cut].to_owned();
            out.push('…');
            out
        }
    }
}

/// What to do after replaying one captured REST request.
#[derive(Debug, Clone, PartialEq)]
pub enum CapturedAction {
    /// 2xx: delivered.
    Ack,
    /// 408, 429, 5xx, network: retry (at least `retry_after_ms` when given).
    Retry {
        retry_after_ms: Option<u64>,
        code: &'static str,
        message: String,
    },
    /// Not produced any more (401/403 on a captured route are dead-lettered like any other
    /// 4xx); kept so that matching code still compiles.
    AuthStop { status: u16, message: String },
    /// Any other 4xx: dead-letter.
    DeadLetter { reason: String },
}

/// Classify the answer to a replayed captured request (PROTOCOL.md, "Plain HTTP requests").
pub fn classify_captured(outcome: &HttpOutcome, now: Millis) -> CapturedAction {
    let (status, retry_after, body) = match outcome {
        HttpOutcome::Network { message } => {
            return CapturedAction::Retry {
                retry_after_ms: None,
                code: "network",
                message: format!("network error: {message}"),
            };
        }
        HttpOutcome::Response {
            status,
            retry_after,
            body,
        } => (*status, retry_after.as_deref(), body.as_str()),
    };
    let retry_after_ms = retry_after.and_then(|h| parse_retry_after(h, now));
    // The API's own words: its error body, or what else it answered (an Express stack
    // trace, an HTML error page's title), so a person can see why.
    let said = match server_says(body) {
        s if s.is_empty() && !body.trim().is_empty() => format!(": {}", what_came_back(body)),
        s => s,
    };
    let retry = |code: &'static str, what: &str| CapturedAction::Retry {
        retry_after_ms,
        code,
        message: format!("{what} (HTTP {status}){said}"),
    };
    match status {
        200..=299 => CapturedAction::Ack,
        // 401/403 go to dead like any other 4xx: the replay carries the Authorization header
        // frozen at capture time, so waiting for a new config would stop the outbox forever.
        408 => retry("timeout", "the server timed out"),
        429 => retry("rate_limited", "the server is rate limiting"),
        503 => retry("unavailable", "the server is unavailable"),
        500..=599 => retry("server_error", "the server failed"),
        400..=499 => {
            let short = short_body(body, MAX_MESSAGE_CHARS);
            let reason = if short.is_empty() {
                format!("HTTP {status}")
            } else {
                format!("HTTP {status}: {short}")
            };
            CapturedAction::DeadLetter { reason }
        }
        // 1xx, 3xx (an opaque redirect) and anything outside the HTTP range: never lose the request.
        _ => retry("unexpected_status", "unexpected answer"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::protocol::MutationResult;

    const NOW: Millis = 784_111_777_000; // Sun, 06 Nov 1994 08:49:37 GMT

    fn resp(status: u16, body: &str) -> HttpOutcome {
        HttpOutcome::Response {
            status,
            retry_after: None,
            body: body.into(),
        }
    }

    fn resp_after(status: u16, retry_after: &str, body: &str) -> HttpOutcome {
        HttpOutcome::Response {
            status,
            retry_after: Some(retry_after.into()),
            body: body.into(),
        }
    }

    fn error_body(code: &str, message: &str) -> String {
        serde_json::to_string(&ErrorBody::new(code, message)).unwrap()
    }

    fn results_body(n: u64) -> String {
        let results: Vec<MutationResult> = (1..=n)
            .map(|seq| MutationResult::Applied {
                seq,
                version: seq,
                stamped_at: None,
            })
            .collect();
        serde_json::to_string(&PushResponse {
            results,
            server_time: NOW,
        })
        .unwrap()
    }

    fn code_of(action: &PushAction) -> &'static str {
        match action {
            PushAction::RetryAfter { code, .. }
            | PushAction::Backoff { code, .. }
            | PushAction::HalveBatch { code, .. } => code,
            PushAction::Results(_) => "results",
            PushAction::DeadLetter { .. } => "dead_letter",
            PushAction::AuthStop { .. } => "auth",
            PushAction::ConfigError { .. } => "config_error",
        }
    }

    #[test]
    fn a_network_failure_backs_off() {
        let a = classify_push(
            &HttpOutcome::Network {
                message: "connection refused".into(),
            },
            5,
            NOW,
        );
        assert_eq!(
            a,
            PushAction::Backoff {
                code: "network",
                message: "network error: connection refused".into()
            }
        );
    }

    #[test]
    fn a_2xx_with_one_result_per_mutation_is_recorded() {
        let body = results_body(3);
        let expected: PushResponse = serde_json::from_str(&body).unwrap();
        assert_eq!(
            classify_push(&resp(200, &body), 3, NOW),
            PushAction::Results(expected.clone())
        );
        assert_eq!(
            classify_push(&resp(201, &body), 3, NOW),
            PushAction::Results(expected)
        );
    }

    #[test]
    fn a_2xx_with_the_wrong_number_of_results_backs_off_as_a_bad_response() {
        let a = classify_push(&resp(200, &results_body(2)), 3, NOW);
        assert_eq!(code_of(&a), "bad_response");
        assert!(
            matches!(a, PushAction::Backoff { ref message, .. } if message.contains("2 results for 3"))
        );
    }

    #[test]
    fn a_garbled_empty_or_html_2xx_is_a_config_error_and_never_acknowledges() {
        for body in [
            "",
            "<html>ok</html>",
            "{}",
            r#"{"results":"x","server_time":1}"#,
            "null",
        ] {
            assert_eq!(
                code_of(&classify_push(&resp(200, body), 1, NOW)),
                "config_error",
                "{body:?}"
            );
        }
        assert_eq!(
            code_of(&classify_push(&resp(204, ""), 1, NOW)),
            "config_error"
        );
    }

    #[test]
    fn a_400_or_422_without_the_protocols_error_body_is_a_config_error_not_a_dead_letter() {
        for status in [400, 422] {
            for body in ["", "<html><title>Bad Request</title></html>", "Bad Request"] {
                assert_eq!(
                    code_of(&classify_push(&resp(status, body), 1, NOW)),
                    "config_error",
                    "{status} {body:?}"
                );
            }
        }
    }

    #[test]
    fn a_pull_answered_410_cursor_expired_means_start_over_and_another_410_is_a_config_error() {
        let url = "http://x/api/sync/pull?since=7&limit=500";
        let (code, message) =
            classify_pull(resp(410, &error_body("cursor_expired", "pull again")), url).unwrap_err();
        assert_eq!(code, CURSOR_EXPIRED);
        assert!(message.contains("pull again"), "{message}");
        assert_eq!(
            classify_pull(resp(410, "gone"), url).unwrap_err().0,
            "config_error"
        );
    }

    #[test]
    fn a_pull_answered_404_or_html_is_a_config_error_not_a_network_error() {
        let url = "http://x/api/sync/pull?since=&limit=500";
        assert_eq!(
            classify_pull(resp(404, "<html></html>"), url)
                .unwrap_err()
                .0,
            "config_error"
        );
        assert_eq!(
            classify_pull(resp(405, ""), url).unwrap_err().0,
            "config_error"
        );
        assert_eq!(
            classify_pull(resp(500, ""), url).unwrap_err().0,
            "server_error"
        );
        assert_eq!(classify_pull(resp(401, ""), url).unwrap_err().0, "auth");
        let net = HttpOutcome::Network {
            message: "refused".into(),
        };
        assert_eq!(classify_pull(net, url).unwrap_err().0, "network");
        assert_eq!(classify_pull(resp(200, "{}"), url).unwrap(), "{}");
        let (code, message) =
            pull_unreadable(url, "<!doctype html><title>App</title>", "expected value");
        assert_eq!(code, "config_error");
        assert!(message.contains("HTML page titled \"App\""), "{message}");
    }

    #[test]
    fn what_came_back_names_an_html_pages_title_or_quotes_the_text() {
        assert_eq!(what_came_back("  "), "an empty body");
        assert_eq!(
            what_came_back("<!DOCTYPE html>\n<html><head><title> Vite  App </title></head><body></body></html>"),
            "an HTML page titled \"Vite App\""
        );
        assert_eq!(
            what_came_back("<html><body>x</body></html>"),
            "an HTML page"
        );
        assert_eq!(
            what_came_back("Cannot POST /api/sync/push"),
            "\"Cannot POST /api/sync/push\""
        );
        assert_eq!(
            what_came_back(&error_body("not_found", "no route")),
            "the error \"not_found: no route\""
        );
        assert!(what_came_back(&"x".repeat(1000)).chars().count() < 130);
    }

    #[test]
    fn a_400_halves_a_batch_of_several() {
        let a = classify_push(
            &resp(
                400,
                &error_body("bad_request", "mutations[3].op is unknown"),
            ),
            8,
            NOW,
        );
        match a {
            PushAction::HalveBatch { code, message } => {
                assert_eq!(code, "bad_request");
                assert!(message.contains("HTTP 400"), "{message}");
                assert!(message.contains("mutations[3].op is unknown"), "{message}");
                assert!(message.contains("4 mutations"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_400_on_a_single_mutation_dead_letters_it_with_the_servers_message() {
        let a = classify_push(
            &resp(400, &error_body("bad_request", "value is not JSON")),
            1,
            NOW,
        );
        assert_eq!(
            a,
            PushAction::DeadLetter {
                reason: "value is not JSON".into()
            }
        );
    }

    #[test]
    fn a_dead_letter_reason_falls_back_to_the_truncated_body_text() {
        let long = "é".repeat(800);
        match classify_push(&resp(413, &long), 1, NOW) {
            PushAction::DeadLetter { reason } => {
                assert_eq!(reason.chars().count(), MAX_REASON_CHARS + 1);
                assert!(reason.ends_with('…'));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            classify_push(&resp(413, "  bad  "), 1, NOW),
            PushAction::DeadLetter {
                reason: "bad".into()
            }
        );
        assert_eq!(
            classify_push(&resp(413, ""), 1, NOW),
            PushAction::DeadLetter {
                reason: "HTTP 413".into()
            }
        );
    }

    #[test]
    fn a_413_halves_a_batch_and_dead_letters_a_single_mutation() {
        assert_eq!(
            code_of(&classify_push(&resp(413, ""), 2, NOW)),
            "payload_too_large"
        );
        assert!(matches!(
            classify_push(&resp(413, ""), 2, NOW),
            PushAction::HalveBatch { .. }
        ));
        assert_eq!(
            classify_push(&resp(413, "too big"), 1, NOW),
            PushAction::DeadLetter {
                reason: "too big".into()
            }
        );
    }

    #[test]
    fn a_422_is_treated_like_a_400() {
        assert!(matches!(
            classify_push(&resp(422, &error_body("invalid", "bad")), 10, NOW),
            PushAction::HalveBatch {
                code: "bad_request",
                ..
            }
        ));
        assert!(matches!(
            classify_push(&resp(422, &error_body("invalid", "bad")), 1, NOW),
            PushAction::DeadLetter { .. }
        ));
    }

    #[test]
    fn an_empty_batch_refused_as_a_whole_backs_off_instead_of_dead_lettering_nothing() {
        assert!(matches!(
            classify_push(&resp(413, ""), 0, NOW),
            PushAction::Backoff {
                code: "payload_too_large",
                ..
            }
        ));
    }

    #[test]
    fn auth_failures_stop_sending() {
        for status in [401, 403] {
            match classify_push(
                &resp(status, &error_body("unauthorized", "bad token")),
                3,
                NOW,
            ) {
                PushAction::AuthStop { status: s, message } => {
                    assert_eq!(s, status);
                    assert_eq!(message, "unauthorized: bad token");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn rate_limiting_with_retry_after_waits_that_long() {
        let a = classify_push(&resp_after(429, "30", ""), 3, NOW);
        assert!(
            matches!(
                a,
                PushAction::RetryAfter {
                    delay_ms: 30_000,
                    code: "rate_limited",
                    ..
                }
            ),
            "{a:?}"
        );
        let a = classify_push(
            &resp_after(503, "Sun, 06 Nov 1994 08:50:37 GMT", ""),
            3,
            NOW,
        );
        assert!(
            matches!(
                a,
                PushAction::RetryAfter {
                    delay_ms: 60_000,
                    code: "unavailable",
                    ..
                }
            ),
            "{a:?}"
        );
    }

    #[test]
    fn rate_limiting_without_a_usable_retry_after_backs_off() {
        assert!(matches!(
            classify_push(&resp(429, ""), 3, NOW),
            PushAction::Backoff {
                code: "rate_limited",
                ..
            }
        ));
        assert!(matches!(
            classify_push(&resp_after(503, "later", ""), 3, NOW),
            PushAction::Backoff {
                code: "unavailable",
                ..
            }
        ));
    }

    #[test]
    fn only_failures_that_reached_a_working_server_count_toward_attempts() {
        let network = HttpOutcome::Network {
            message: "refused".into(),
        };
        assert!(!counts_toward_attempts(&network));
        for status in [429, 502, 503, 504] {
            assert!(!counts_toward_attempts(&resp(status, "")), "{status}");
        }
        for status in [200, 400, 408, 500, 501, 599] {
            assert!(counts_toward_attempts(&resp(status, "")), "{status}");
        }
    }

    #[test]
    fn timeouts_and_server_errors_back_off() {
        assert_eq!(code_of(&classify_push(&resp(408, ""), 3, NOW)), "timeout");
        for status in [500, 502, 504, 599] {
            assert_eq!(
                code_of(&classify_push(&resp(status, ""), 3, NOW)),
                "server_error",
                "{status}"
            );
        }
    }

    #[test]
    fn a_misconfigured_url_is_a_config_error_that_never_dead_letters_data() {
        for status in [
            404,
            405,
            415,
            0,
            100,
            301,
            302,
            304,
            409,
            410,
            418,
            451,
            600,
            u16::MAX,
        ] {
            let a = classify_push(&resp(status, "<h1>Not Found</h1>"), 1, NOW);
            match a {
                PushAction::ConfigError { message } => {
                    assert!(message.contains(&format!("HTTP {status}")), "{message}")
                }
                other => panic!("{status}: {other:?}"),
            }
        }
    }

    #[test]
    fn messages_quote_the_servers_error_code_and_message() {
        match classify_push(&resp(500, &error_body("internal", "disk full")), 2, NOW) {
            PushAction::Backoff { message, .. } => {
                assert_eq!(message, "the server failed (HTTP 500): internal: disk full")
            }
            other => panic!("{other:?}"),
        }
        match classify_push(&resp(500, "<html>oops</html>"), 2, NOW) {
            PushAction::Backoff { message, .. } => {
                assert_eq!(message, "the server failed (HTTP 500)")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_captured_request_answered_2xx_is_acknowledged() {
        for status in [200, 201, 202, 204, 299] {
            assert_eq!(
                classify_captured(&resp(status, ""), NOW),
                CapturedAction::Ack
            );
        }
    }

    #[test]
    fn a_captured_request_retries_on_network_timeout_rate_limit_and_5xx() {
        assert!(matches!(
            classify_captured(
                &HttpOutcome::Network {
                    message: "offline".into()
                },
                NOW
            ),
            CapturedAction::Retry {
                retry_after_ms: None,
                code: "network",
                ..
            }
        ));
        let cases = [
            (408, "timeout"),
            (429, "rate_limited"),
            (500, "server_error"),
            (502, "server_error"),
            (503, "unavailable"),
        ];
        for (status, code) in cases {
            let a = classify_captured(&resp(status, ""), NOW);
            assert!(
                matches!(a, CapturedAction::Retry { retry_after_ms: None, code: c, .. } if c == code),
                "{status}: {a:?}"
            );
        }
    }

    #[test]
    fn a_captured_request_honours_retry_after() {
        let a = classify_captured(&resp_after(429, "120", ""), NOW);
        assert!(
            matches!(
                a,
                CapturedAction::Retry {
                    retry_after_ms: Some(120_000),
                    code: "rate_limited",
                    ..
                }
            ),
            "{a:?}"
        );
        let a = classify_captured(&resp_after(503, "Sun, 06 Nov 1994 08:48:00 GMT", ""), NOW);
        assert!(
            matches!(
                a,
                CapturedAction::Retry {
                    retry_after_ms: Some(0),
                    ..
                }
            ),
            "{a:?}"
        );
    }

    #[test]
    fn an_auth_stop_carries_only_what_the_server_said() {
        assert!(matches!(
            classify_push(&resp(401, ""), 1, NOW),
            PushAction::AuthStop { status: 401, message } if message == "no details given"
        ));
        assert!(matches!(
            classify_push(&resp(403, &error_body("auth", "token expired")), 1, NOW),
            PushAction::AuthStop { status: 403, message } if message == "auth: token expired"
        ));
    }

    #[test]
    fn a_captured_request_refused_with_401_or_403_is_dead_lettered_not_an_outbox_stop() {
        assert_eq!(
            classify_captured(&resp(401, ""), NOW),
            CapturedAction::DeadLetter {
                reason: "HTTP 401".into()
            }
        );
        assert_eq!(
            classify_captured(&resp(403, " <h1>Forbidden</h1> "), NOW),
            CapturedAction::DeadLetter {
                reason: "HTTP 403: <h1>Forbidden</h1>".into()
            }
        );
        assert_eq!(
            classify_captured(&resp(401, &error_body("auth", "token expired")), NOW),
            CapturedAction::DeadLetter {
                reason: "HTTP 401: token expired".into()
            }
        );
    }

    #[test]
    fn a_captured_request_refused_with_another_4xx_is_dead_lettered_with_a_short_reason() {
        assert_eq!(
            classify_captured(&resp(422, &error_body("invalid", "title is required")), NOW),
            CapturedAction::DeadLetter {
                reason: "HTTP 422: title is required".into()
            }
        );
        assert_eq!(
            classify_captured(&resp(404, ""), NOW),
            CapturedAction::DeadLetter {
                reason: "HTTP 404".into()
            }
        );
        match classify_captured(&resp(400, &"x".repeat(10_000)), NOW) {
            CapturedAction::DeadLetter { reason } => {
                assert!(reason.starts_with("HTTP 400: xxx"));
                assert!(reason.chars().count() < 220, "{}", reason.len());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_captured_request_answered_with_a_redirect_or_informational_status_is_retried() {
        for status in [0, 100, 101, 301, 302, 307, 600] {
            let a = classify_captured(&resp(status, ""), NOW);
            assert!(
                matches!(
                    a,
                    CapturedAction::Retry {
                        code: "unexpected_status",
                        ..
                    }
                ),
                "{status}: {a:?}"
            );
        }
    }

    #[test]
    fn truncation_never_splits_a_character() {
        assert_eq!(truncate_chars("héllo", 2), "hé…");
        assert_eq!(truncate_chars("héllo", 5), "héllo");
        assert_eq!(truncate_chars("", 0), "");
        assert_eq!(truncate_chars("ab", 0), "…");
    }

    #[test]
    fn an_error_body_with_extra_fields_still_yields_its_message() {
        let body = json!({"error": {"code": "bad_request", "message": "nope", "details": [1]}, "trace": "x"}).to_string();
        assert_eq!(
            classify_push(&resp(400, &body), 1, NOW),
            PushAction::DeadLetter {
                reason: "nope".into()
            }
        );
    }
}
