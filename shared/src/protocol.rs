//! The wire types of PROTOCOL.md, version 1. Field names are snake_case JSON;
//! times are integer milliseconds since the Unix epoch.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// A mutation's operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Store `value` under `(collection, key)`.
    Put,
    /// Delete the entity; the server keeps a tombstone.
    Delete,
}

/// One local write, as queued in the outbox and sent to the server.
/// `(client_id, seq)` is its identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mutation {
    pub client_id: String,
    pub seq: u64,
    pub collection: String,
    pub key: String,
    pub op: Op,
    /// Any JSON for `put`, `null` for `delete`.
    #[serde(default)]
    pub value: Value,
    pub updated_at: Millis,
}

/// Body of `POST /api/sync/push`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushRequest {
    pub client_id: String,
    pub mutations: Vec<Mutation>,
}

/// The server's view of one entity, as carried in a `conflict` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurrentEntity {
    pub value: Value,
    #[serde(default)]
    pub deleted: bool,
    pub updated_at: Millis,
    pub version: u64,
}

/// One result per mutation, in request order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum MutationResult {
    /// Stored; `version` is the entity's new server version. `stamped_at` is set when the
    /// server stored it under another `updated_at` than the one sent (a stamp further ahead
    /// of the server's clock than it allows is stored as the server's clock plus that skew);
    /// absent otherwise, and from older servers.
    Applied {
        seq: u64,
        version: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stamped_at: Option<Millis>,
    },
    /// This `(client_id, seq)` was seen before; nothing changed.
    Duplicate { seq: u64 },
    /// The server holds a newer write of the entity.
    Conflict { seq: u64, current: CurrentEntity },
    /// Permanently invalid; goes to the dead-letter store.
    Rejected { seq: u64, reason: String },
}

impl MutationResult {
    /// The seq this result answers.
    pub fn seq(&self) -> u64 {
        match self {
            Self::Applied { seq, .. }
            | Self::Duplicate { seq }
            | Self::Conflict { seq, .. }
            | Self::Rejected { seq, .. } => *seq,
        }
    }
}

/// `200` answer of `POST /api/sync/push`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushResponse {
    pub results: Vec<MutationResult>,
    pub server_time: Millis,
}

/// One entity as the server (or a snapshot) holds it; also one change of the pull feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entity {
    pub collection: String,
    pub key: String,
    #[serde(default)]
    pub value: Value,
    #[serde(default)]
    pub deleted: bool,
    pub updated_at: Millis,
    pub version: u64,
}

/// `200` answer of `GET /api/sync/pull`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullResponse {
    pub changes: Vec<Entity>,
    /// Opaque; pass back as `since`.
    pub cursor: String,
    pub has_more: bool,
}

/// `200` answer of `GET /api/health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub version: String,
    pub time: Millis,
}

/// The `error` member of every error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// Every error body: `{ "error": { "code", "message" } }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutation_results_serialize_with_a_status_tag() {
        let r = MutationResult::Applied {
            seq: 42,
            version: 17,
            stamped_at: None,
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"seq": 42, "status": "applied", "version": 17})
        );
        let stamped: MutationResult =
            serde_json::from_str(r#"{"seq":1,"status":"applied","version":2,"stamped_at":5}"#)
                .unwrap();
        assert_eq!(
            stamped,
            MutationResult::Applied {
                seq: 1,
                version: 2,
                stamped_at: Some(5)
            }
        );
        let back: MutationResult =
            serde_json::from_str(r#"{"seq":41,"status":"duplicate"}"#).unwrap();
        assert_eq!(back, MutationResult::Duplicate { seq: 41 });
        assert_eq!(back.seq(), 41);
    }

    #[test]
    fn a_mutation_with_an_unknown_field_is_refused() {
        let text = r#"{"client_id":"c","seq":1,"collection":"notes","key":"k","op":"put","value":1,"updated_at":5,"evil":true}"#;
        assert!(serde_json::from_str::<Mutation>(text).is_err());
    }

    #[test]
    fn a_delete_may_omit_its_value() {
        let text = r#"{"client_id":"c","seq":1,"collection":"notes","key":"k","op":"delete","updated_at":5}"#;
        let m: Mutation = serde_json::from_str(text).unwrap();
        assert_eq!(m.op, Op::Delete);
        assert!(m.value.is_null());
    }
}
