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
    pub const AUTH: &str = "auth";
    pub const BAD_RESPONSE: &str = "bad_response";
    pub const BAD_SNAPSHOT: &str = "bad_snapshot";
    pub const CHECKSUM_MISMATCH: &str = "checksum_mismatch";
    pub const TIMEOUT: &str = "timeout";
    pub const INTERNAL: &str = "internal";
}

/// Largest message a worker accepts from a page, in bytes of JSON (a 1 MiB value plus room).
pub const MAX_MESSAGE_BYTES: usize = 2 * 1024 * 1024;

/// Configuration set by the page and persisted by the worker in `meta`,
/// so the worker can sync with no page open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Base URL of the sync server, e.g. `http://127.0.0.1:8787`.
    pub server_url: String,
    /// Optional bearer token sent as `Authorization: Bearer …`. Never logged.
    pub token: Option<String>,
    /// URL path patterns of existing REST routes to capture (`*` matches any run of characters).
    pub capture_routes: Vec<String>,
    /// Most mutations per push request (1..=1000).
    pub batch_size: u32,
    /// Backoff and give-up limits.
    pub retry: RetryPolicy,
    /// Periodic Background Sync interval; `None` leaves it unregistered.
    pub periodic_interval_ms: Option<u64>,
    /// Scheduled export interval; `None` disables scheduled exports.
    pub export_interval_ms: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_url: String::new(),
            token: None,
            capture_routes: Vec::new(),
            batch_size: 100,
            retry: RetryPolicy::default(),
            periodic_interval_ms: None,
            export_interval_ms: None,
        }
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
    },
    Restore {
        text: String,
        dry_run: bool,
    },
    PageEvent {
        event: PageEvent,
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
    /// `"mutation"` or `"request"` (a captured REST call).
    pub kind: String,
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
    Status { status: Status },
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
pub fn parse_request(text: &str) -> Result<RequestEnvelope, (Option<u64>, MessageError)> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err((
            None,
            MessageError::TooLarge {
                limit: MAX_MESSAGE_BYTES,
            },
        ));
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

    #[test]
    fn config_fills_defaults_and_refuses_unknown_fields() {
        let c: Config = serde_json::from_str(r#"{"server_url":"http://x"}"#).unwrap();
        assert_eq!(c.batch_size, 100);
        assert!(serde_json::from_str::<Config>(r#"{"serverUrl":"http://x"}"#).is_err());
    }
}
