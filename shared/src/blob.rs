//! Attachments: what a blob reference is, and how one blob is uploaded (PROTOCOL.md, "Blobs").
//!
//! A page hands the worker a `Blob`; the worker keeps its bytes in IndexedDB beside the
//! outbox, queues an upload entry in seq order (so the write that references it is sent after
//! it), and answers with a [`BlobRef`] the app stores in any entity value. The upload is
//! content-addressed (`PUT /api/blobs/{sha256}` in [`CHUNK_BYTES`] chunks with
//! `Content-Range`) and resumes where the server says it stopped. [`Upload`] makes every
//! decision of one attempt (what to ask or send next, what an answer means); the shell only
//! moves bytes. Its final answer is classified by [`classify_blob`] like a captured call's.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::classify::{server_says, CapturedAction, HttpOutcome};
use crate::messages::codes;
use crate::protocol::Millis;
use crate::retry::parse_retry_after;

/// The field of an entity value's object that marks a blob reference: `{ "$blob": {…} }`.
pub const REF_FIELD: &str = "$blob";
/// The bytes one `PUT` carries (the server accepts up to 8 MiB).
pub const CHUNK_BYTES: u64 = 1024 * 1024;
/// The largest blob a worker accepts, as the reference server does by default (100 MiB).
pub const MAX_BLOB_BYTES: u64 = 100 * 1024 * 1024;
/// Longest `name` and `type` of a reference.
pub const MAX_LABEL_CHARS: usize = 255;
/// `409 blob_range_mismatch` answers one attempt follows before it gives up (another device
/// or an earlier attempt moving the offset under it settles after one).
const MAX_RESUMES: u32 = 3;

/// What an entity holds in place of the bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobRef {
    /// SHA-256 of the bytes, 64 lowercase hex digits.
    pub sha256: String,
    pub size: u64,
    /// The MIME type the `Blob` had (may be empty).
    #[serde(rename = "type", default)]
    pub content_type: String,
    /// The file name, when the page gave one (a `File`'s name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl BlobRef {
    /// `{ "$blob": { sha256, size, type, name? } }`.
    pub fn to_value(&self) -> Value {
        json!({ REF_FIELD: self })
    }

    /// Read a reference the way the page gave it back: `{ "$blob": {…} }`, or the inner object.
    pub fn from_value(value: &Value) -> Result<Self, String> {
        let inner = value.get(REF_FIELD).unwrap_or(value);
        let parsed: BlobRef = serde_json::from_value(inner.clone()).map_err(|e| {
            format!("not a blob reference ({{ \"$blob\": {{ sha256, size, type }} }}): {e}")
        })?;
        parsed.check()?;
        Ok(parsed)
    }

    /// The rules a reference satisfies.
    pub fn check(&self) -> Result<(), String> {
        check_sha256(&self.sha256)?;
        check_size(self.size)?;
        check_label("type", &self.content_type)?;
        if let Some(name) = &self.name {
            check_label("name", name)?;
        }
        Ok(())
    }
}

/// The SHA-256 of a blob, fed chunk by chunk (a blob is never held whole to hash it).
#[derive(Default)]
pub struct ContentHash(sha2::Sha256);

impl ContentHash {
    pub fn update(&mut self, bytes: &[u8]) {
        sha2::Digest::update(&mut self.0, bytes);
    }

    /// 64 lowercase hex digits.
    pub fn finish(self) -> String {
        crate::snapshot::hex(&sha2::Digest::finalize(self.0))
    }
}

/// Every valid reference a value holds, at any depth (`{ "$blob": {…} }` objects), by hash.
pub fn references_in(value: &Value, out: &mut std::collections::BTreeMap<String, BlobRef>) {
    match value {
        Value::Object(map) => {
            if map.contains_key(REF_FIELD) {
                if let Ok(r) = BlobRef::from_value(value) {
                    out.insert(r.sha256.clone(), r);
                    return;
                }
            }
            map.values().for_each(|v| references_in(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| references_in(v, out)),
        _ => {}
    }
}

/// `Err` unless `sha256` is 64 lowercase hex digits.
pub fn check_sha256(sha256: &str) -> Result<(), String> {
    if sha256.len() == 64
        && sha256
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        Ok(())
    } else {
        Err(format!(
            "sha256 must be 64 lowercase hex digits (got {} characters)",
            sha256.chars().count()
        ))
    }
}

/// `Err` (for `blob_too_large`) when a blob of `size` bytes is over [`MAX_BLOB_BYTES`].
pub fn check_size(size: u64) -> Result<(), String> {
    if size > MAX_BLOB_BYTES {
        Err(format!(
            "a blob may be at most {MAX_BLOB_BYTES} bytes (this one is {size})"
        ))
    } else {
        Ok(())
    }
}

/// A reference's `name` or `type`: at most [`MAX_LABEL_CHARS`], no control characters.
pub fn check_label(what: &str, label: &str) -> Result<(), String> {
    if label.chars().count() > MAX_LABEL_CHARS {
        return Err(format!(
            "{what} may be at most {MAX_LABEL_CHARS} characters"
        ));
    }
    if label.chars().any(char::is_control) {
        return Err(format!("{what} must not contain control characters"));
    }
    Ok(())
}

/// The `Content-Range` of the chunk `start..end` (end exclusive) of a blob of `size` bytes.
pub fn content_range(start: u64, end: u64, size: u64) -> String {
    if size == 0 {
        "bytes */0".to_owned()
    } else {
        format!("bytes {start}-{}/{size}", end - 1)
    }
}

/// What the shell does next in one upload attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum UploadStep {
    /// `GET /api/blobs/{sha256}/upload`, then [`Upload::handle_progress`].
    AskProgress,
    /// `PUT` the bytes `start..end` with [`content_range`], then [`Upload::handle_chunk`].
    SendChunk { start: u64, end: u64 },
    /// The attempt is over: give this answer to the outbox ([`classify_blob`]).
    Finished(HttpOutcome),
}

/// One attempt to upload one blob.
#[derive(Debug, Clone)]
pub struct Upload {
    size: u64,
    /// Bytes the server holds, as far as this attempt knows.
    received: u64,
    next: Option<UploadStep>,
    resumes: u32,
}

/// The fields of the server's upload answers this machine reads.
#[derive(Deserialize)]
struct Progress {
    received: u64,
    #[serde(default)]
    complete: bool,
}

impl Upload {
    /// An attempt for a blob of `size` bytes. A blob larger than one chunk asks the server how
    /// far an earlier attempt got before it sends anything.
    pub fn new(size: u64) -> Self {
        let next = if size > CHUNK_BYTES {
            UploadStep::AskProgress
        } else {
            UploadStep::SendChunk {
                start: 0,
                end: size,
            }
        };
        Self {
            size,
            received: 0,
            next: Some(next),
            resumes: 0,
        }
    }

    /// The next step; `None` once [`UploadStep::Finished`] was returned.
    pub fn poll_step(&mut self) -> Option<UploadStep> {
        self.next.take()
    }

    /// Bytes the server holds, as far as this attempt knows.
    pub fn received(&self) -> u64 {
        self.received
    }

    fn send_from(&mut self, received: u64) {
        self.received = received;
        // Every byte arrived but the server did not finish assembling them (it stopped, its
        // store failed): the last chunk again makes it finish (PROTOCOL.md, "Blobs").
        let start = if received >= self.size {
            self.size.saturating_sub(CHUNK_BYTES.min(self.size))
        } else {
            received
        };
        let end = (start + CHUNK_BYTES).min(self.size);
        self.next = Some(UploadStep::SendChunk { start, end });
    }

    fn finish(&mut self, outcome: HttpOutcome) {
        self.next = Some(UploadStep::Finished(outcome));
    }

    fn garbled(&mut self, status: u16, what: &str) {
        self.finish(HttpOutcome::Network {
            message: format!("the server's answer to a blob upload ({status}) {what}"),
        });
    }

    /// The answer to [`UploadStep::AskProgress`].
    pub fn handle_progress(&mut self, outcome: HttpOutcome) {
        match &outcome {
            HttpOutcome::Response {
                status: 200, body, ..
            } => match serde_json::from_str::<Progress>(body) {
                Ok(p) if p.complete => self.finish(outcome),
                Ok(p) if p.received <= self.size => self.send_from(p.received),
                _ => self.garbled(200, "is not a progress report for this blob"),
            },
            // Nothing of it on the server yet.
            HttpOutcome::Response { status: 404, .. } => self.send_from(0),
            // Only a `200` with a body says where the upload stands (a proxy's 204 does not).
            HttpOutcome::Response {
                status: 201..=299, ..
            } => self.garbled(201, "is not a progress report"),
            _ => self.finish(outcome),
        }
    }

    /// The answer to [`UploadStep::SendChunk`].
    pub fn handle_chunk(&mut self, outcome: HttpOutcome) {
        match &outcome {
            HttpOutcome::Response {
                status: 200, body, ..
            } => match serde_json::from_str::<Progress>(body) {
                Ok(p) if p.complete => self.finish(outcome),
                Ok(p) if p.received > self.received && p.received < self.size => {
                    // Moving forward: the races lost earlier in this attempt are behind it.
                    self.resumes = 0;
                    self.send_from(p.received)
                }
                _ => self.garbled(200, "does not move the upload forward"),
            },
            HttpOutcome::Response {
                status: 409, body, ..
            } if self.resumes < MAX_RESUMES => {
                let received = serde_json::from_str::<Value>(body)
                    .ok()
                    .and_then(|v| v.get("received").and_then(Value::as_u64))
                    .filter(|r| *r <= self.size);
                match received {
                    Some(r) => {
                        self.resumes += 1;
                        self.send_from(r)
                    }
                    None => self.finish(outcome),
                }
            }
            HttpOutcome::Response {
                status: 201..=299, ..
            } => self.garbled(201, "does not say how far the upload got"),
            _ => self.finish(outcome),
        }
    }
}

/// The code of an upload attempt that kept losing races at its offset (another device or tab
/// uploading the same blob): retried, never counted toward `max_attempts`.
pub const RANGE_MISMATCH: &str = "blob_range_mismatch";

/// What the final answer of an upload attempt means for its outbox entry: `2xx` delivered;
/// `401`/`403` stop the outbox like a push's (the upload carries the sync server's
/// credentials); `404`/`405`/`415`/`501` say the server takes no blobs (`config_error`,
/// retried, never dead-lettered); `408`, `429`, `5xx` and no answer are retried; any other
/// `4xx` (too large, over quota, a hash that does not match) is a dead letter with the
/// server's words.
pub fn classify_blob(outcome: &HttpOutcome, now: Millis) -> CapturedAction {
    let (status, retry_after, body) = match outcome {
        HttpOutcome::Network { message } => {
            return CapturedAction::Retry {
                retry_after_ms: None,
                code: codes::NETWORK,
                message: format!("network error uploading a blob: {message}"),
            }
        }
        HttpOutcome::Response {
            status,
            retry_after,
            body,
        } => (*status, retry_after.as_deref(), body.as_str()),
    };
    let said = server_says(body);
    let retry = |code: &'static str, what: &str| CapturedAction::Retry {
        retry_after_ms: retry_after.and_then(|h| parse_retry_after(h, now)),
        code,
        message: format!("{what} (HTTP {status}){said}"),
    };
    match status {
        200..=299 => CapturedAction::Ack,
        401 | 403 => CapturedAction::AuthStop {
            status,
            message: format!("the server refused a blob upload (HTTP {status}){said}"),
        },
        404 | 405 | 415 | 501 => retry(
            codes::CONFIG_ERROR,
            "the sync server takes no blobs (PUT /api/blobs/{sha256}; the reference server on PostgreSQL needs --blob-store or --blob-dir)",
        ),
        409 => retry(
            RANGE_MISMATCH,
            "another upload of the same blob keeps moving its offset",
        ),
        408 => retry(codes::TIMEOUT, "the server timed out on a blob upload"),
        429 => retry(codes::RATE_LIMITED, "the server is rate limiting"),
        503 => retry(codes::UNAVAILABLE, "the server is unavailable"),
        500..=599 => retry(codes::SERVER_ERROR, "the server failed a blob upload"),
        400..=499 => CapturedAction::DeadLetter {
            reason: format!("the server refused the blob (HTTP {status}){said}"),
        },
        _ => retry("unexpected_status", "unexpected answer to a blob upload"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn answer(status: u16, body: &str) -> HttpOutcome {
        HttpOutcome::Response {
            status,
            retry_after: None,
            body: body.into(),
        }
    }

    fn progress(received: u64, complete: bool) -> String {
        json!({ "sha256": SHA, "size": 0, "received": received, "complete": complete }).to_string()
    }

    #[test]
    fn a_reference_round_trips_through_its_value_and_rejects_a_bad_hash() {
        let r = BlobRef {
            sha256: SHA.into(),
            size: 4,
            content_type: "text/plain".into(),
            name: Some("a.txt".into()),
        };
        assert_eq!(BlobRef::from_value(&r.to_value()), Ok(r.clone()));
        let inner = serde_json::to_value(&r).unwrap();
        assert_eq!(BlobRef::from_value(&inner), Ok(r));
        assert!(BlobRef::from_value(&json!({ "$blob": { "sha256": "ABC", "size": 1 } })).is_err());
        assert!(BlobRef::from_value(
            &json!({ "$blob": { "sha256": SHA, "size": MAX_BLOB_BYTES + 1 } })
        )
        .is_err());
        assert!(BlobRef::from_value(
            &json!({ "$blob": { "sha256": SHA, "size": 1, "type": "a\nb" } })
        )
        .is_err());
        assert!(
            BlobRef::from_value(&json!({ "$blob": { "sha256": SHA, "size": 1, "extra": 1 } }))
                .is_err()
        );
    }

    #[test]
    fn references_are_found_at_any_depth_and_malformed_ones_are_skipped() {
        let r = BlobRef {
            sha256: SHA.into(),
            size: 4,
            content_type: String::new(),
            name: None,
        };
        let value = json!({ "title": "t", "attachments": [r.to_value(), { "$blob": { "sha256": "bad" } }],
            "nested": { "deeper": [r.to_value()] } });
        let mut found = std::collections::BTreeMap::new();
        references_in(&value, &mut found);
        assert_eq!(found.into_values().collect::<Vec<_>>(), vec![r]);
    }

    #[test]
    fn the_content_hash_of_chunks_is_the_hash_of_the_whole() {
        let mut h = ContentHash::default();
        h.update(b"te");
        h.update(b"st");
        assert_eq!(h.finish(), SHA);
    }

    #[test]
    fn content_ranges_are_inclusive_and_an_empty_blob_has_its_own_form() {
        assert_eq!(content_range(0, 10, 10), "bytes 0-9/10");
        assert_eq!(
            content_range(1_048_576, 2_000_000, 2_000_000),
            "bytes 1048576-1999999/2000000"
        );
        assert_eq!(content_range(0, 0, 0), "bytes */0");
    }

    #[test]
    fn a_small_blob_is_sent_in_one_chunk_without_asking_first() {
        let mut u = Upload::new(10);
        assert_eq!(
            u.poll_step(),
            Some(UploadStep::SendChunk { start: 0, end: 10 })
        );
        assert_eq!(u.poll_step(), None);
        let done = answer(200, &progress(10, true));
        u.handle_chunk(done.clone());
        assert_eq!(u.poll_step(), Some(UploadStep::Finished(done)));
    }

    #[test]
    fn a_large_blob_resumes_where_the_server_says_an_earlier_attempt_stopped() {
        let size = 3 * CHUNK_BYTES + 5;
        let mut u = Upload::new(size);
        assert_eq!(u.poll_step(), Some(UploadStep::AskProgress));
        u.handle_progress(answer(200, &progress(2 * CHUNK_BYTES, false)));
        assert_eq!(
            u.poll_step(),
            Some(UploadStep::SendChunk {
                start: 2 * CHUNK_BYTES,
                end: 3 * CHUNK_BYTES
            })
        );
        u.handle_chunk(answer(200, &progress(3 * CHUNK_BYTES, false)));
        assert_eq!(
            u.poll_step(),
            Some(UploadStep::SendChunk {
                start: 3 * CHUNK_BYTES,
                end: size
            })
        );
        assert_eq!(u.received(), 3 * CHUNK_BYTES);
    }

    #[test]
    fn nothing_on_the_server_starts_at_zero_and_a_complete_blob_is_not_sent_again() {
        let mut u = Upload::new(2 * CHUNK_BYTES);
        u.poll_step();
        u.handle_progress(answer(
            404,
            r#"{"error":{"code":"blob_not_found","message":"no"}}"#,
        ));
        assert_eq!(
            u.poll_step(),
            Some(UploadStep::SendChunk {
                start: 0,
                end: CHUNK_BYTES
            })
        );

        let mut u = Upload::new(2 * CHUNK_BYTES);
        u.poll_step();
        let done = answer(200, &progress(2 * CHUNK_BYTES, true));
        u.handle_progress(done.clone());
        assert_eq!(u.poll_step(), Some(UploadStep::Finished(done)));
    }

    #[test]
    fn every_byte_received_but_not_assembled_sends_the_last_chunk_again() {
        let size = 2 * CHUNK_BYTES + 10;
        let mut u = Upload::new(size);
        u.poll_step();
        u.handle_progress(answer(200, &progress(size, false)));
        assert_eq!(
            u.poll_step(),
            Some(UploadStep::SendChunk {
                start: size - CHUNK_BYTES,
                end: size
            })
        );
        let mut u = Upload::new(10);
        u.poll_step();
        u.handle_chunk(answer(409, r#"{"received":10}"#));
        assert_eq!(
            u.poll_step(),
            Some(UploadStep::SendChunk { start: 0, end: 10 })
        );
        assert!(matches!(
            classify_blob(&answer(501, ""), 0),
            CapturedAction::Retry {
                code: codes::CONFIG_ERROR,
                ..
            }
        ));
    }

    #[test]
    fn a_range_mismatch_resumes_at_the_servers_offset_a_few_times_then_gives_its_answer() {
        let mut u = Upload::new(4 * CHUNK_BYTES);
        u.poll_step();
        u.handle_progress(answer(404, ""));
        u.poll_step();
        let mismatch = |r: u64| {
            answer(409, &json!({ "error": { "code": "blob_range_mismatch", "message": "m" }, "received": r }).to_string())
        };
        for _ in 0..MAX_RESUMES {
            u.handle_chunk(mismatch(CHUNK_BYTES));
            assert_eq!(
                u.poll_step(),
                Some(UploadStep::SendChunk {
                    start: CHUNK_BYTES,
                    end: 2 * CHUNK_BYTES
                })
            );
        }
        u.handle_chunk(mismatch(CHUNK_BYTES));
        let Some(UploadStep::Finished(last)) = u.poll_step() else {
            panic!()
        };
        assert!(matches!(last, HttpOutcome::Response { status: 409, .. }));
        // Retried later, never a dead letter: the other upload may finish it meanwhile.
        assert!(matches!(
            classify_blob(&last, 0),
            CapturedAction::Retry {
                code: RANGE_MISMATCH,
                ..
            }
        ));
    }

    #[test]
    fn a_2xx_other_than_200_is_no_acknowledgement() {
        let mut u = Upload::new(10);
        u.poll_step();
        u.handle_chunk(answer(204, ""));
        let Some(UploadStep::Finished(outcome)) = u.poll_step() else {
            panic!()
        };
        assert!(
            matches!(outcome, HttpOutcome::Network { .. }),
            "{outcome:?}"
        );
        let mut u = Upload::new(2 * CHUNK_BYTES);
        u.poll_step();
        u.handle_progress(answer(204, ""));
        assert!(matches!(
            u.poll_step(),
            Some(UploadStep::Finished(HttpOutcome::Network { .. }))
        ));
    }

    #[test]
    fn an_answer_that_does_not_move_the_upload_forward_ends_the_attempt_as_a_retry() {
        let mut u = Upload::new(10);
        u.poll_step();
        u.handle_chunk(answer(200, &progress(0, false)));
        let Some(UploadStep::Finished(outcome)) = u.poll_step() else {
            panic!()
        };
        assert!(matches!(
            classify_blob(&outcome, 0),
            CapturedAction::Retry { .. }
        ));
    }

    #[test]
    fn final_answers_are_classified_like_a_push_for_auth_and_like_a_call_for_the_rest() {
        assert_eq!(classify_blob(&answer(200, "{}"), 0), CapturedAction::Ack);
        assert!(matches!(
            classify_blob(&answer(401, ""), 0),
            CapturedAction::AuthStop { status: 401, .. }
        ));
        assert!(matches!(
            classify_blob(&answer(404, ""), 0),
            CapturedAction::Retry {
                code: codes::CONFIG_ERROR,
                ..
            }
        ));
        assert!(matches!(
            classify_blob(&answer(503, ""), 0),
            CapturedAction::Retry {
                code: codes::UNAVAILABLE,
                ..
            }
        ));
        assert!(matches!(
            classify_blob(&answer(500, ""), 0),
            CapturedAction::Retry {
                code: codes::SERVER_ERROR,
                ..
            }
        ));
        let CapturedAction::DeadLetter { reason } = classify_blob(
            &answer(
                413,
                r#"{"error":{"code":"blob_quota_exceeded","message":"over your quota"}}"#,
            ),
            0,
        ) else {
            panic!()
        };
        assert!(reason.contains("over your quota"), "{reason}");
        assert!(matches!(
            classify_blob(&answer(422, ""), 0),
            CapturedAction::DeadLetter { .. }
        ));
    }
}
