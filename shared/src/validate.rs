//! Input validation shared by the worker, the page and the server: collection pattern,
//! key length, value size, batch limits. Every failure is a typed error with a stable code.

use serde_json::Value;

use crate::protocol::{Mutation, PushRequest};

/// `[a-z0-9_-]{1,64}`.
pub const MAX_COLLECTION_LEN: usize = 64;
/// Keys are 1..=256 UTF-8 bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// A value's JSON encoding may be at most 1 MiB.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// At most this many mutations per push.
pub const MAX_BATCH_MUTATIONS: usize = 1000;
/// At most this many bytes per push body.
pub const MAX_BATCH_BYTES: usize = 5 * 1024 * 1024;

/// Why an input was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("collection {0:?} must match [a-z0-9_-]{{1,64}}")]
    InvalidCollection(String),
    #[error("key must be 1 to 256 UTF-8 bytes (got {0})")]
    InvalidKey(usize),
    #[error("value exceeds 1 MiB ({0} bytes)")]
    ValueTooLarge(usize),
    #[error("a delete carries no value")]
    DeleteWithValue,
    #[error("client_id must be 1 to 128 characters of [A-Za-z0-9_-]")]
    InvalidClientId,
    #[error("mutation seq {seq} belongs to client {got:?}, not the request's {expected:?}")]
    ClientMismatch { seq: u64, expected: String, got: String },
    #[error("seq must start at 1 and increase strictly within a batch (got {got} after {after})")]
    SeqOutOfOrder { after: u64, got: u64 },
    #[error("updated_at {0} is not a plausible time")]
    InvalidTime(i64),
    #[error("batch has {0} mutations (at most 1000)")]
    TooManyMutations(usize),
    #[error("batch is {0} bytes (at most 5 MiB)")]
    BatchTooLarge(usize),
    #[error("batch is empty")]
    EmptyBatch,
}

impl ValidationError {
    /// Stable machine code (the `code` of the error body / the page's typed error).
    pub fn code(&self) -> &'static str {
        todo!()
    }

    /// Whether this error concerns the whole request (400/413) rather than one mutation (`rejected`).
    pub fn is_whole_request(&self) -> bool {
        todo!()
    }
}

pub fn validate_collection(collection: &str) -> Result<(), ValidationError> {
    let _ = collection;
    todo!()
}

pub fn validate_key(key: &str) -> Result<(), ValidationError> {
    let _ = key;
    todo!()
}

/// Returns the size of the value's JSON encoding.
pub fn validate_value(value: &Value) -> Result<usize, ValidationError> {
    let _ = value;
    todo!()
}

pub fn validate_client_id(client_id: &str) -> Result<(), ValidationError> {
    let _ = client_id;
    todo!()
}

/// Per-mutation checks (collection, key, value size, delete without value, time).
/// A failure here makes that one mutation `rejected`, not the whole batch.
pub fn validate_mutation(m: &Mutation) -> Result<(), ValidationError> {
    let _ = m;
    todo!()
}

/// Whole-request checks: client id, count, body size, every mutation's client id, strictly
/// increasing seqs. A failure here is a 400 (or 413 for size/count).
pub fn validate_push(req: &PushRequest, body_len: usize) -> Result<(), ValidationError> {
    let _ = (req, body_len);
    todo!()
}
