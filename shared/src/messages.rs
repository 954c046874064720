//! The typed, versioned messages between a page and the worker (or the page fallback).
//!
//! A page sends a [`RequestEnvelope`] with a `MessageChannel` port and gets exactly one
//! [`ReplyEnvelope`] on that port. The worker broadcasts [`Broadcast`]s to every window
//! client of its origin.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::protocol::{ErrorDetail, Millis};
use crate::retry::RetryPolicy;
use crate::status::Status;

/// Version of the page ⇄ worker message format.
pub const MESSAGE_VERSION: u32 = 1;

/// Stable error codes a caller can switch on. One place, so page and worker agree.
pub mod codes {
    pub const INVALID_MESSAGE: &str = "invalid_message";
    pub const UNSUPPORTED_VERSION: &str = "unsupported_version";
    pub const FORBIDDEN_ORIGIN: &str = "forbidden_origin";
    pub const INVALID_COLLECTION: &str = "invalid_collection";
    pub const INVALID_KEY: &str = "invalid_key";
    pub const INVALID_VALUE: &str = "invalid_value";
    pub const VALUE_TOO_LARGE: &str = "value_too_large";
    pub const INVALID_CONFIG: &str = "invalid_config";
    pub const QUOTA_EXCEEDED: &str = "quota_exceeded";
    pub const STORAGE_ERROR: &str = "storage_error";
    pub const CORRUPT_RECORD: &str = "corrupt_record";
    pub const WORKER_UNAVAILABLE: &str = "worker_unavailable";
    pub const NOT_FOUND: &str = "not_found";
    pub const NETWORK: &str = "network";
    pub const SERVER_ERROR: &str = "server_error";
    /// The server is rate limiting (429); never counts toward `max_attempts`.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// The server is unavailable (503); never counts toward `max_attempts`.
    pub const UNAVAILABLE: &str = "unavailable";
    pub const AUTH: &str = "auth";
    pub const BAD_RESPONSE: &str = "bad_response";
    pub const BAD_SNAPSHOT: &str = "bad_snapshot";
    pub const CHECKSUM_MISMATCH: &str = "checksum_mismatch";
    /// A restore cannot put the backup's pending entries back under their own ids
    /// (`requeue::RequeueBlocked`); nothing was changed.
    pub const RESTORE_BLOCKED: &str = "restore_blocked";
    pub const TIMEOUT: &str = "timeout";
    /// The server pruned deletes after the stored pull cursor (`410`): the client pulls
    /// everything again from the start and drops what the server no longer holds.
    pub const CURSOR_EXPIRED: &str = "cursor_expired";
    /// The server URL does not lead to a rangersync sync endpoint (404, 405, 415, an HTML or
    /// non-protocol answer), or the stored configuration cannot be read: nothing is sent and
    /// nothing is dead-lettered until it answers properly or a page sends a valid config.
    pub const CONFIG_ERROR: &str = "config_error";
    pub const INTERNAL: &str = "internal";
    /// The passphrase (or the `CryptoKey`) does not open an encrypted backup; nothing was
    /// changed.
    pub const WRONG_PASSPHRASE: &str = "wrong_passphrase";
    /// An encrypted backup was restored without a passphrase, or a backup is due and no page
    /// has given the passphrase since the worker started.
    pub const PASSPHRASE_REQUIRED: &str = "passphrase_required";
    /// A captured call's body is over `capture_max_body_bytes`: answered `413`, not queued.
    pub const CAPTURE_TOO_LARGE: &str = "capture_too_large";
    /// A blob is over `blob::MAX_BLOB_BYTES` (or the server's `--max-blob-bytes`).
    pub const BLOB_TOO_LARGE: &str = "blob_too_large";
    /// `getBlob`: neither this device nor the server holds the blob (yet: another device may
    /// not have uploaded it).
    pub const BLOB_NOT_FOUND: &str = "blob_not_found";
    /// `putBlob` was given something that is not a `Blob`, or `getBlob` a bad reference.
    pub const INVALID_BLOB: &str = "invalid_blob";
}

/// Largest message a worker accepts from a page, in bytes of JSON (a 1 MiB value plus room).
pub const MAX_MESSAGE_BYTES: usize = 2 * 1024 * 1024;

/// Largest `restore` message a worker accepts: a snapshot of up to
/// [`crate::snapshot::MAX_SNAPSHOT_BYTES`] plus the envelope (JSON escaping may add some more).
pub const MAX_RESTORE_MESSAGE_BYTES: usize = crate::snapshot::MAX_SNAPSHOT_BYTES + 1024 * 1024;

/// A message that carries a `CryptoKey` (`backupEncryption: { key }`, `restore…({ key })`) is
/// not JSON text alone, since a key cannot be written as text: it is an object
/// `{ text, key }`, the request's JSON text and the key beside it (structured clone keeps it
/// non-extractable). Its request says `key: true`.
pub const KEY_BESIDE: &str = "key";
/// The field of a message that carries a `Blob` beside its text (`put_blob`, and the reply of
/// `get_blob`): `{ text, blob }`.
pub const BLOB_BESIDE: &str = "blob";
/// The field of such a message that holds the request's JSON text (see [`KEY_BESIDE`]).
pub const TEXT_BESIDE: &str = "text";

/// The size limit for a message of this request type (`restore` may carry a whole snapshot).
pub fn message_limit(request: &Request) -> usize {
    match request {
        Request::Restore { .. } => MAX_RESTORE_MESSAGE_BYTES,
        _ => MAX_MESSAGE_BYTES,
    }
}

/// Smallest `retry.base_delay_ms` a worker accepts.
pub const MIN_BASE_DELAY_MS: u64 = 100;
/// Smallest periodic-sync interval a worker accepts (one minute).
pub const MIN_INTERVAL_MS: u64 = 60_000;
/// Smallest scheduled-backup interval a worker accepts (ten seconds: each backup is a whole
/// snapshot uploaded, so real apps use hours; tests use seconds).
pub const MIN_EXPORT_INTERVAL_MS: u64 = 10_000;
/// The scheduled-backup interval a page asks for when it does not say (24 hours).
pub const DEFAULT_EXPORT_INTERVAL_MS: u64 = 86_400_000;
/// Default `request_timeout_ms`: how long one HTTP request may take before it is aborted.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 30_000;
/// Smallest and largest `request_timeout_ms` a worker accepts.
pub const REQUEST_TIMEOUT_RANGE_MS: std::ops::RangeInclusive<u64> = 100..=600_000;
/// The largest body of a captured call the worker queues, unless configured.
pub const DEFAULT_CAPTURE_MAX_BODY_BYTES: u64 = 1024 * 1024;
/// The most `capture_max_body_bytes` may be set to (one outbox record stays well under what an
/// IndexedDB transaction and a snapshot can carry).
pub const MAX_CAPTURE_MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;

/// Default `dead_letter_retention_days`.
pub const DEFAULT_DEAD_LETTER_RETENTION_DAYS: u32 = 90;
/// The most `dead_letter_retention_days` may be set to (about 100 years).
pub const MAX_DEAD_LETTER_RETENTION_DAYS: u32 = 36_500;

/// Configuration set by the page and persisted by the worker in `meta`,
/// so the worker can sync with no page open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Base URL of the sync server, e.g. `http://127.0.0.1:8787`.
    pub server_url: String,
    /// Optional bearer token sent as `Authorization: Bearer …`. Never logged.
    pub token: Option<String>,
    /// Existing REST routes whose requests the worker captures when they get no answer (see
    /// [`crate::capture`]): path patterns for the page's or the sync server's origin, full URL
    /// patterns or `{origin, path}` for any other API origin.
    pub capture_routes: Vec<crate::capture::CaptureRoute>,
    /// Most mutations per push request (1..=1000).
    pub batch_size: u32,
    /// Backoff and give-up limits.
    pub retry: RetryPolicy,
    /// Periodic Background Sync interval; `None` leaves it unregistered.
    pub periodic_interval_ms: Option<u64>,
    /// Scheduled backup interval (a snapshot uploaded to the server); `None` disables
    /// scheduled backups (a page asks for [`DEFAULT_EXPORT_INTERVAL_MS`] unless told `0`).
    pub export_interval_ms: Option<u64>,
    /// How long one HTTP request (push, pull, replay) may take, body included, before it is
    /// aborted and counted as a network failure (retried with backoff).
    pub request_timeout_ms: u64,
    /// The largest body of a captured call that is queued; a larger one is answered `413`
    /// (`capture_too_large`) and nothing is queued.
    pub capture_max_body_bytes: u64,
    /// Collections that never leave the device: written to IndexedDB, never pushed, left out
    /// of backups, and out of exports unless asked (`include_local_only`).
    pub local_only: Vec<String>,
    /// Collections that sync like any other but are left out of server backups.
    pub exclude_from_backup: Vec<String>,
    /// Server backups are encrypted (`backupEncryption`): none is uploaded in clear, even
    /// before a page has given the passphrase.
    pub backup_encryption: bool,
    /// Dead letters that died more than this many days before a backup the server stored are
    /// removed after it (they leave the device only into a backup); `0` keeps them all.
    pub dead_letter_retention_days: u32,
    /// Server backups hold the bytes of the blobs their entities reference, not only the
    /// references (`backupIncludeBlobs`).
    pub backup_include_blobs: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_url: String::new(),
            token: None,
            capture_routes: Vec::new(),
            batch_size: 500,
            retry: RetryPolicy::default(),
            periodic_interval_ms: None,
            export_interval_ms: None,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            capture_max_body_bytes: DEFAULT_CAPTURE_MAX_BODY_BYTES,
            local_only: Vec::new(),
            exclude_from_backup: Vec::new(),
            backup_encryption: false,
            dead_letter_retention_days: DEFAULT_DEAD_LETTER_RETENTION_DAYS,
            backup_include_blobs: false,
        }
    }
}

impl Config {
    /// The rules a configuration must satisfy before a worker takes it: a `server_url` that is
    /// empty or an absolute `http(s)` URL, `batch_size` 1..=1000, `retry.base_delay_ms` ≥ 100
    /// and `retry.max_delay_ms` ≥ it, intervals of at least a minute, capture routes that are
    /// paths (start with `/`), a token without control characters. `Err` says what is wrong.
    pub fn check(&self) -> Result<(), String> {
        let max_batch = crate::validate::MAX_BATCH_MUTATIONS as u32;
        if !(1..=max_batch).contains(&self.batch_size) {
            return Err(format!(
                "batch_size must be 1..={max_batch} (got {})",
                self.batch_size
            ));
        }
        if !self.server_url.is_empty() {
            let rest = self
                .server_url
                .strip_prefix("http://")
                .or_else(|| self.server_url.strip_prefix("https://"));
            let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or(""));
            let ok = host.is_some_and(|h| {
                !h.is_empty() && !h.contains(['@', ' ']) && !h.chars().any(char::is_control)
            });
            if !ok {
                return Err(format!(
                    "server_url must be an http:// or https:// URL with a host (got {:?})",
                    self.server_url
                ));
            }
        }
        for route in &self.capture_routes {
            route.parts()?;
        }
        let retry = &self.retry;
        if retry.base_delay_ms < MIN_BASE_DELAY_MS {
            return Err(format!(
                "retry.base_delay_ms must be at least {MIN_BASE_DELAY_MS} (got {})",
                retry.base_delay_ms
            ));
        }
        if retry.max_delay_ms < retry.base_delay_ms {
            return Err(format!(
                "retry.max_delay_ms ({}) must be at least retry.base_delay_ms ({})",
                retry.max_delay_ms, retry.base_delay_ms
            ));
        }
        for (name, v, min) in [
            (
                "periodic_interval_ms",
                self.periodic_interval_ms,
                MIN_INTERVAL_MS,
            ),
            (
                "export_interval_ms",
                self.export_interval_ms,
                MIN_EXPORT_INTERVAL_MS,
            ),
        ] {
            if let Some(ms) = v.filter(|ms| *ms < min) {
                return Err(format!(
                    "{name} must be at least {min} ms or absent (got {ms})"
                ));
            }
        }
        if !REQUEST_TIMEOUT_RANGE_MS.contains(&self.request_timeout_ms) {
            return Err(format!(
                "request_timeout_ms must be {}..={} (got {})",
                REQUEST_TIMEOUT_RANGE_MS.start(),
                REQUEST_TIMEOUT_RANGE_MS.end(),
                self.request_timeout_ms
            ));
        }
        for (name, list) in [
            ("local_only", &self.local_only),
            ("exclude_from_backup", &self.exclude_from_backup),
        ] {
            for collection in list {
                crate::validate::validate_collection(collection)
                    .map_err(|e| format!("{name}: {e}"))?;
            }
        }
        if self.dead_letter_retention_days > MAX_DEAD_LETTER_RETENTION_DAYS {
            return Err(format!(
                "dead_letter_retention_days must be 0..={MAX_DEAD_LETTER_RETENTION_DAYS} (got {})",
                self.dead_letter_retention_days
            ));
        }
        if !(1..=MAX_CAPTURE_MAX_BODY_BYTES).contains(&self.capture_max_body_bytes) {
            return Err(format!(
                "capture_max_body_bytes must be 1..={MAX_CAPTURE_MAX_BODY_BYTES} (got {})",
                self.capture_max_body_bytes
            ));
        }
        if self
            .token
            .as_deref()
            .is_some_and(|t| t.chars().any(char::is_control))
        {
            return Err("token must not contain control characters".into());
        }
        Ok(())
    }

    /// Whether `other` talks to a different server (URL or credentials).
    pub fn endpoint_differs(&self, other: &Config) -> bool {
        self.server_url != other.server_url || self.token != other.token
    }
}

/// Page events that make the worker flush (fallback triggers for browsers without Background Sync).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PageEvent {
    Online,
    Offline,
    Visible,
    Hidden,
    Pagehide,
}

/// Export encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    Json,
    Yaml,
}

/// The most operations one `write_many` request may carry.
pub const MAX_WRITE_MANY_OPS: usize = 10_000;

/// One operation of a [`Request::WriteMany`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum WriteOp {
    Put {
        collection: String,
        key: String,
        value: Value,
    },
    Delete {
        collection: String,
        key: String,
    },
}

impl WriteOp {
    /// The `(collection, key)` it writes.
    pub fn target(&self) -> (&str, &str) {
        match self {
            WriteOp::Put {
                collection, key, ..
            }
            | WriteOp::Delete { collection, key } => (collection, key),
        }
    }
}

/// What a page may ask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Configure {
        config: Config,
    },
    Put {
        collection: String,
        key: String,
        value: Value,
    },
    Delete {
        collection: String,
        key: String,
    },
    /// Several puts and deletes committed in one strict transaction: all or nothing, one
    /// acknowledgement `{ seqs: [..] }` in the order given.
    WriteMany {
        ops: Vec<WriteOp>,
    },
    Get {
        collection: String,
        key: String,
    },
    List {
        collection: String,
    },
    Status,
    Flush,
    DeadLetters,
    RetryDead {
        seq: u64,
    },
    DiscardDead {
        seq: u64,
    },
    Export {
        format: ExportFormat,
        /// Put the `local_only` collections in too (they are left out unless asked).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        include_local_only: bool,
        /// Put the bytes of the blobs the entities reference in too (`snapshot::BlobCopy`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        include_blobs: bool,
    },
    Restore {
        text: String,
        dry_run: bool,
        /// The passphrase of an encrypted backup (never stored).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        passphrase: Option<String>,
        /// The backup's `CryptoKey` travels beside this text (see [`KEY_BESIDE`]).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        key: bool,
    },
    /// Keep the `Blob` beside this text ([`BLOB_BESIDE`]) and queue its upload; answered with
    /// its reference (`blob::BlobRef` as `{ "$blob": {…} }`). `name`: a `File`'s name.
    PutBlob {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// The bytes of a reference: from this device, else downloaded from the server (and kept).
    /// Answered with the reference as text and the `Blob` beside it ([`BLOB_BESIDE`]).
    GetBlob {
        sha256: String,
        /// The reference's type, given to a blob downloaded from the server.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content_type: Option<String>,
    },
    /// The page's current secret headers for restored captured calls (`captureCredentials`):
    /// kept in memory by the worker, never stored, used only for the headers a restored call
    /// lost to its snapshot.
    CaptureCredentials {
        headers: Vec<(String, String)>,
    },
    /// The passphrase server backups are encrypted with, or (`key: true`) the AES-256-GCM
    /// `CryptoKey` the app gave, beside this text (see [`KEY_BESIDE`]); neither: none. The
    /// worker keeps only a key, not extractable; a passphrase itself is never stored.
    BackupKey {
        passphrase: Option<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        key: bool,
    },
    PageEvent {
        event: PageEvent,
    },
    /// Back up to the server: build a snapshot of everything and upload it (`POST
    /// /api/backups`). `manual: true` (a person asked) runs at once and is answered when the
    /// server confirmed it, or with why not; `manual: false` (a page's timer) runs only when
    /// one is due and is answered with the status at once.
    Backup {
        manual: bool,
    },
    /// The sync server's backups (`GET /api/backups`), newest first, without their documents:
    /// this client's, or (`all_clients`) every client's the credentials may see (after a
    /// cleared database this device is a new client; its old backups are another client's).
    ServerBackups {
        all_clients: bool,
    },
    /// Fetch a server backup (`GET /api/backups/{id}`) and restore it like a file (a dry run
    /// writes nothing). The id is the server's (32 hex digits from the reference server).
    RestoreFromServer {
        id: String,
        dry_run: bool,
        /// The passphrase of an encrypted backup (never stored).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        passphrase: Option<String>,
        /// The backup's `CryptoKey` travels beside this text (see [`KEY_BESIDE`]).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        key: bool,
    },
}

/// A request with its version and the id the reply echoes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestEnvelope {
    pub v: u32,
    pub id: u64,
    pub request: Request,
}

/// The one reply to a request: `ok` with a `result`, or not with an `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplyEnvelope {
    pub v: u32,
    pub id: u64,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

impl ReplyEnvelope {
    pub fn ok(id: u64, result: Value) -> Self {
        Self {
            v: MESSAGE_VERSION,
            id,
            ok: true,
            result: Some(result),
            error: None,
        }
    }
    pub fn err(id: u64, code: &str, message: impl Into<String>) -> Self {
        Self {
            v: MESSAGE_VERSION,
            id,
            ok: false,
            result: None,
            error: Some(ErrorDetail {
                code: code.to_owned(),
                message: message.into(),
            }),
        }
    }
}

/// Result of `put` / `delete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteAck {
    pub seq: u64,
}

/// One row of `list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListItem {
    pub key: String,
    pub value: Value,
    pub updated_at: Millis,
    /// A local write of this entity is still in the outbox.
    pub pending: bool,
}

/// One entry of the dead-letter store as the page sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub seq: u64,
    /// `"mutation"`, `"request"` (a captured REST call) or `"blob"` (an attachment's upload).
    pub kind: String,
    /// A blob's SHA-256 (kind `"blob"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub collection: Option<String>,
    pub key: Option<String>,
    pub method: Option<String>,
    pub url: Option<String>,
    pub reason: String,
    pub attempts: u32,
    pub dead_at: Millis,
}

/// What the worker tells every window client without being asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Broadcast {
    Status { status: Box<Status> },
    Change { collection: String, key: String },
    WorkerError { code: String, message: String },
}

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("message is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("message is not a valid request: {0}")]
    Malformed(String),
    #[error("message version {got} is not supported (this worker speaks {MESSAGE_VERSION})")]
    UnsupportedVersion { got: u32 },
}

impl MessageError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => codes::VALUE_TOO_LARGE,
            Self::Malformed(_) => codes::INVALID_MESSAGE,
            Self::UnsupportedVersion { .. } => codes::UNSUPPORTED_VERSION,
        }
    }
}

/// Parse a page's message. On error, also returns the request id when one could be read,
/// so the reply can still be matched.
///
/// Messages are at most [`MAX_MESSAGE_BYTES`], except `restore`, which may be up to
/// [`MAX_RESTORE_MESSAGE_BYTES`] (checked with a cheap parse that skips the snapshot text).
pub fn parse_request(text: &str) -> Result<RequestEnvelope, (Option<u64>, MessageError)> {
    if text.len() > MAX_MESSAGE_BYTES {
        let too_large = |limit| Err((None, MessageError::TooLarge { limit }));
        if text.len() > MAX_RESTORE_MESSAGE_BYTES || !is_restore(text) {
            return too_large(if text.len() > MAX_RESTORE_MESSAGE_BYTES {
                MAX_RESTORE_MESSAGE_BYTES
            } else {
                MAX_MESSAGE_BYTES
            });
        }
    }
    let raw: Value =
        serde_json::from_str(text).map_err(|e| (None, MessageError::Malformed(e.to_string())))?;
    let id = raw.get("id").and_then(Value::as_u64);
    if let Some(v) = raw.get("v").and_then(Value::as_u64) {
        if v != u64::from(MESSAGE_VERSION) {
            return Err((id, MessageError::UnsupportedVersion { got: v as u32 }));
        }
    }
    serde_json::from_value(raw).map_err(|e| (id, MessageError::Malformed(e.to_string())))
}

/// Whether a message is a `restore` request, without building its (large) text.
fn is_restore(text: &str) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        request: Kind,
    }
    #[derive(Deserialize)]
    struct Kind {
        #[serde(rename = "type")]
        kind: String,
    }
    serde_json::from_str::<Probe>(text).is_ok_and(|p| p.request.kind == "restore")
}

/// Millisecond timestamp helper for messages that carry one.
pub fn is_plausible_time(t: Millis) -> bool {
    (0..=253_402_300_799_000).contains(&t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_put_request_round_trips() {
        let text = r#"{"v":1,"id":7,"request":{"type":"put","collection":"notes","key":"n1","value":{"title":"hi"}}}"#;
        let env = parse_request(text).unwrap();
        assert_eq!(env.id, 7);
        assert!(matches!(env.request, Request::Put { .. }));
    }

    #[test]
    fn a_write_many_request_round_trips_with_puts_and_deletes() {
        let text = r#"{"v":1,"id":3,"request":{"type":"write_many","ops":[{"op":"put","collection":"notes","key":"a","value":1},{"op":"delete","collection":"notes","key":"b"}]}}"#;
        let env = parse_request(text).unwrap();
        let Request::WriteMany { ops } = env.request else {
            panic!("not write_many");
        };
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[1].target(), ("notes", "b"));
    }

    #[test]
    fn a_malformed_message_is_refused_with_its_id() {
        let (id, err) = parse_request(r#"{"v":1,"id":9,"request":{"type":"launch"}}"#).unwrap_err();
        assert_eq!(id, Some(9));
        assert_eq!(err.code(), codes::INVALID_MESSAGE);
        let (id, err) = parse_request("not json").unwrap_err();
        assert_eq!(id, None);
        assert_eq!(err.code(), codes::INVALID_MESSAGE);
    }

    #[test]
    fn another_message_version_is_refused() {
        let (_, err) = parse_request(r#"{"v":2,"id":1,"request":{"type":"status"}}"#).unwrap_err();
        assert_eq!(err, MessageError::UnsupportedVersion { got: 2 });
    }

    #[test]
    fn an_oversize_message_is_refused_before_parsing() {
        let big = "x".repeat(MAX_MESSAGE_BYTES + 1);
        let (_, err) = parse_request(&big).unwrap_err();
        assert_eq!(err.code(), codes::VALUE_TOO_LARGE);
    }

    fn restore_message(text_len: usize) -> String {
        serde_json::to_string(&RequestEnvelope {
            v: MESSAGE_VERSION,
            id: 5,
            request: Request::Restore {
                text: "x".repeat(text_len),
                dry_run: true,
                passphrase: None,
                key: false,
            },
        })
        .unwrap()
    }

    #[test]
    fn a_restore_message_may_carry_a_snapshot_larger_than_the_general_limit() {
        let text = restore_message(MAX_MESSAGE_BYTES + 10);
        let env = parse_request(&text).expect("a 2 MiB+ restore is accepted");
        assert!(matches!(env.request, Request::Restore { .. }));
        let put = format!(
            r#"{{"v":1,"id":1,"request":{{"type":"put","collection":"notes","key":"k","value":"{}"}}}}"#,
            "x".repeat(MAX_MESSAGE_BYTES)
        );
        assert_eq!(
            parse_request(&put).unwrap_err().1,
            MessageError::TooLarge {
                limit: MAX_MESSAGE_BYTES
            }
        );
        let huge = restore_message(MAX_RESTORE_MESSAGE_BYTES);
        assert_eq!(
            parse_request(&huge).unwrap_err().1,
            MessageError::TooLarge {
                limit: MAX_RESTORE_MESSAGE_BYTES
            }
        );
        assert_eq!(
            message_limit(&Request::Restore {
                text: String::new(),
                dry_run: false,
                passphrase: None,
                key: false,
            }),
            MAX_RESTORE_MESSAGE_BYTES
        );
        assert_eq!(message_limit(&Request::Status), MAX_MESSAGE_BYTES);
    }

    fn valid() -> Config {
        Config {
            server_url: "https://sync.example:8443/base".into(),
            ..Config::default()
        }
    }

    #[test]
    fn a_config_with_tiny_retry_delays_or_intervals_or_a_bad_url_is_refused() {
        valid().check().unwrap();
        Config::default().check().unwrap();
        let bad = |f: &dyn Fn(&mut Config)| {
            let mut c = valid();
            f(&mut c);
            c.check().expect_err("refused")
        };
        bad(&|c| c.retry.base_delay_ms = 0);
        bad(&|c| {
            c.retry.base_delay_ms = 0;
            c.retry.max_delay_ms = 0;
        });
        bad(&|c| c.retry.base_delay_ms = 99);
        bad(&|c| c.retry.max_delay_ms = c.retry.base_delay_ms - 1);
        bad(&|c| c.batch_size = 0);
        bad(&|c| c.batch_size = 1001);
        bad(&|c| c.periodic_interval_ms = Some(59_999));
        bad(&|c| c.export_interval_ms = Some(1));
        bad(&|c| c.request_timeout_ms = 0);
        bad(&|c| c.request_timeout_ms = 99);
        bad(&|c| c.request_timeout_ms = 600_001);
        bad(&|c| c.capture_max_body_bytes = 0);
        bad(&|c| c.dead_letter_retention_days = MAX_DEAD_LETTER_RETENTION_DAYS + 1);
        bad(&|c| c.capture_max_body_bytes = MAX_CAPTURE_MAX_BODY_BYTES + 1);
        bad(&|c| c.server_url = "ftp://x".into());
        bad(&|c| c.server_url = "http://".into());
        bad(&|c| c.server_url = "sync.example".into());
        bad(&|c| c.capture_routes = vec!["*".into()]);
        bad(&|c| c.capture_routes = vec!["api/*".into()]);
        bad(&|c| c.capture_routes = vec!["ftp://h/api/*".into()]);
        bad(&|c| c.token = Some("a\nb".into()));
        let mut ok = valid();
        ok.retry.base_delay_ms = 100;
        ok.retry.max_delay_ms = 100;
        ok.periodic_interval_ms = Some(60_000);
        ok.export_interval_ms = Some(86_400_000);
        ok.capture_routes = vec!["/api/*".into()];
        ok.check().unwrap();
    }

    #[test]
    fn config_fills_defaults_and_refuses_unknown_fields() {
        let c: Config = serde_json::from_str(r#"{"server_url":"http://x"}"#).unwrap();
        assert_eq!(c.batch_size, 500);
        assert!(serde_json::from_str::<Config>(r#"{"serverUrl":"http://x"}"#).is_err());
    }
}
