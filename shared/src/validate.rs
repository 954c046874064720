//! Input validation shared by the worker, the page and the server: collection pattern,
//! key length, value size, batch limits. Every failure is a typed error with a stable code.

use serde_json::Value;

use crate::protocol::{Mutation, Op, PushRequest};

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
    ClientMismatch {
        seq: u64,
        expected: String,
        got: String,
    },
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

/// Latest plausible `updated_at`: 9999-12-31T23:59:59Z in milliseconds.
pub const MAX_UPDATED_AT: i64 = 253_402_300_799_000;
/// `client_id` is 1..=128 characters of `[A-Za-z0-9_-]`.
pub const MAX_CLIENT_ID_LEN: usize = 128;

impl ValidationError {
    /// Stable machine code (the `code` of the error body / the page's typed error).
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidCollection(_) => "invalid_collection",
            Self::InvalidKey(_) => "invalid_key",
            Self::ValueTooLarge(_) => "value_too_large",
            Self::DeleteWithValue | Self::InvalidTime(_) => "invalid_value",
            Self::InvalidClientId
            | Self::ClientMismatch { .. }
            | Self::SeqOutOfOrder { .. }
            | Self::EmptyBatch => "invalid_request",
            Self::TooManyMutations(_) | Self::BatchTooLarge(_) => "payload_too_large",
        }
    }

    /// Whether this error concerns the whole request (400/413) rather than one mutation (`rejected`).
    pub fn is_whole_request(&self) -> bool {
        match self {
            Self::InvalidClientId
            | Self::ClientMismatch { .. }
            | Self::SeqOutOfOrder { .. }
            | Self::TooManyMutations(_)
            | Self::BatchTooLarge(_)
            | Self::EmptyBatch => true,
            Self::InvalidCollection(_)
            | Self::InvalidKey(_)
            | Self::ValueTooLarge(_)
            | Self::DeleteWithValue
            | Self::InvalidTime(_) => false,
        }
    }
}

/// `[a-z0-9_-]{1,64}`.
pub fn validate_collection(collection: &str) -> Result<(), ValidationError> {
    let ok = !collection.is_empty()
        && collection.len() <= MAX_COLLECTION_LEN
        && collection
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ValidationError::InvalidCollection(collection.to_owned()))
    }
}

/// 1..=256 UTF-8 bytes (any characters).
pub fn validate_key(key: &str) -> Result<(), ValidationError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        Err(ValidationError::InvalidKey(key.len()))
    } else {
        Ok(())
    }
}

/// Returns the size of the value's JSON encoding.
///
/// The size is that of `serde_json::to_vec(value)`, measured without building the encoding.
/// At most [`MAX_VALUE_BYTES`] is accepted.
pub fn validate_value(value: &Value) -> Result<usize, ValidationError> {
    let size = json_len(value);
    if size > MAX_VALUE_BYTES {
        Err(ValidationError::ValueTooLarge(size))
    } else {
        Ok(size)
    }
}

/// Length in bytes of `serde_json::to_vec(value)`, without allocating it.
pub fn json_len(value: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Serializing a `Value` into a writer that never fails cannot fail; if it ever did, the
    // count would only be a lower bound, so report it as too large rather than accept it.
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => counter.0,
        Err(_) => usize::MAX,
    }
}

/// `[A-Za-z0-9_-]{1,128}`.
pub fn validate_client_id(client_id: &str) -> Result<(), ValidationError> {
    let ok = !client_id.is_empty()
        && client_id.len() <= MAX_CLIENT_ID_LEN
        && client_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ValidationError::InvalidClientId)
    }
}

/// `updated_at` must lie in `0..=`[`MAX_UPDATED_AT`].
pub fn validate_time(updated_at: i64) -> Result<(), ValidationError> {
    if (0..=MAX_UPDATED_AT).contains(&updated_at) {
        Ok(())
    } else {
        Err(ValidationError::InvalidTime(updated_at))
    }
}

/// Per-mutation checks (collection, key, value size, delete without value, time).
/// A failure here makes that one mutation `rejected`, not the whole batch.
///
/// Checked in that order; the first failure is returned.
pub fn validate_mutation(m: &Mutation) -> Result<(), ValidationError> {
    validate_collection(&m.collection)?;
    validate_key(&m.key)?;
    match m.op {
        Op::Delete if !m.value.is_null() => return Err(ValidationError::DeleteWithValue),
        Op::Delete => {}
        Op::Put => {
            validate_value(&m.value)?;
        }
    }
    validate_time(m.updated_at)
}

/// Whole-request checks: client id, count, body size, every mutation's client id, strictly
/// increasing seqs. A failure here is a 400 (or 413 for size/count).
///
/// Order: client id, empty batch, count, body size, then each mutation in order (its client
/// id, then its seq: the first must be at least 1, each next one greater than the last).
pub fn validate_push(req: &PushRequest, body_len: usize) -> Result<(), ValidationError> {
    validate_client_id(&req.client_id)?;
    if req.mutations.is_empty() {
        return Err(ValidationError::EmptyBatch);
    }
    if req.mutations.len() > MAX_BATCH_MUTATIONS {
        return Err(ValidationError::TooManyMutations(req.mutations.len()));
    }
    if body_len > MAX_BATCH_BYTES {
        return Err(ValidationError::BatchTooLarge(body_len));
    }
    let mut after = 0u64;
    for m in &req.mutations {
        if m.client_id != req.client_id {
            return Err(ValidationError::ClientMismatch {
                seq: m.seq,
                expected: req.client_id.clone(),
                got: m.client_id.clone(),
            });
        }
        if m.seq <= after {
            return Err(ValidationError::SeqOutOfOrder { after, got: m.seq });
        }
        after = m.seq;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn put(seq: u64, value: Value) -> Mutation {
        Mutation {
            client_id: "client-1".into(),
            seq,
            collection: "notes".into(),
            key: format!("k{seq}"),
            op: Op::Put,
            value,
            updated_at: 1_764_000_000_000,
        }
    }

    fn push(mutations: Vec<Mutation>) -> PushRequest {
        PushRequest {
            client_id: "client-1".into(),
            mutations,
        }
    }

    #[test]
    fn every_error_has_its_stable_code() {
        use ValidationError as E;
        let cases = [
            (
                E::InvalidCollection("X".into()),
                "invalid_collection",
                false,
            ),
            (E::InvalidKey(0), "invalid_key", false),
            (E::ValueTooLarge(2_000_000), "value_too_large", false),
            (E::DeleteWithValue, "invalid_value", false),
            (E::InvalidTime(-1), "invalid_value", false),
            (E::InvalidClientId, "invalid_request", true),
            (
                E::ClientMismatch {
                    seq: 1,
                    expected: "a".into(),
                    got: "b".into(),
                },
                "invalid_request",
                true,
            ),
            (
                E::SeqOutOfOrder { after: 2, got: 1 },
                "invalid_request",
                true,
            ),
            (E::EmptyBatch, "invalid_request", true),
            (E::TooManyMutations(1001), "payload_too_large", true),
            (E::BatchTooLarge(6_000_000), "payload_too_large", true),
        ];
        for (err, code, whole) in cases {
            assert_eq!(err.code(), code, "{err:?}");
            assert_eq!(err.is_whole_request(), whole, "{err:?}");
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn collections_must_be_1_to_64_lowercase_letters_digits_dashes_or_underscores() {
        assert!(validate_collection("notes").is_ok());
        assert!(validate_collection("a-b_c-09").is_ok());
        assert!(validate_collection(&"a".repeat(64)).is_ok());
        for bad in [
            "",
            "Notes",
            "no tes",
            "notes/1",
            "é",
            "notes.",
            &"a".repeat(65),
        ] {
            assert_eq!(
                validate_collection(bad),
                Err(ValidationError::InvalidCollection(bad.into())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn keys_must_be_1_to_256_utf8_bytes_counted_in_bytes_not_chars() {
        assert!(validate_key("k").is_ok());
        assert!(validate_key(&"k".repeat(256)).is_ok());
        assert!(validate_key("any chars / ok ✓").is_ok());
        assert_eq!(validate_key(""), Err(ValidationError::InvalidKey(0)));
        assert_eq!(
            validate_key(&"k".repeat(257)),
            Err(ValidationError::InvalidKey(257))
        );
        // 86 three-byte characters = 258 bytes.
        assert_eq!(
            validate_key(&"✓".repeat(86)),
            Err(ValidationError::InvalidKey(258))
        );
    }

    #[test]
    fn value_size_is_the_length_of_its_json_encoding() {
        for v in [
            json!(null),
            json!(1),
            json!("é\n\"x"),
            json!({"b": [1, 2.5, {"c": null}], "a": true}),
        ] {
            assert_eq!(
                validate_value(&v),
                Ok(serde_json::to_vec(&v).unwrap().len())
            );
        }
    }

    #[test]
    fn a_value_of_exactly_one_mebibyte_is_accepted_and_one_byte_more_is_not() {
        // A JSON string's encoding is its content plus two quotes.
        let exact = Value::String("x".repeat(MAX_VALUE_BYTES - 2));
        assert_eq!(validate_value(&exact), Ok(MAX_VALUE_BYTES));
        let over = Value::String("x".repeat(MAX_VALUE_BYTES - 1));
        assert_eq!(
            validate_value(&over),
            Err(ValidationError::ValueTooLarge(MAX_VALUE_BYTES + 1))
        );
    }

    #[test]
    fn client_ids_are_1_to_128_url_safe_characters() {
        assert!(validate_client_id("0b6c-A_z9").is_ok());
        assert!(validate_client_id(&"a".repeat(128)).is_ok());
        for bad in ["", "a b", "a/b", "a.b", "é", &"a".repeat(129)] {
            assert_eq!(
                validate_client_id(bad),
                Err(ValidationError::InvalidClientId),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_well_formed_put_and_delete_pass() {
        assert!(validate_mutation(&put(1, json!({"title": "t"}))).is_ok());
        let delete = Mutation {
            op: Op::Delete,
            value: Value::Null,
            ..put(2, Value::Null)
        };
        assert!(validate_mutation(&delete).is_ok());
    }

    #[test]
    fn a_delete_carrying_a_value_is_refused() {
        let delete = Mutation {
            op: Op::Delete,
            ..put(1, json!({"x": 1}))
        };
        assert_eq!(
            validate_mutation(&delete),
            Err(ValidationError::DeleteWithValue)
        );
    }

    #[test]
    fn a_put_with_an_oversize_value_is_refused() {
        let m = put(1, Value::String("x".repeat(MAX_VALUE_BYTES)));
        assert_eq!(
            validate_mutation(&m),
            Err(ValidationError::ValueTooLarge(MAX_VALUE_BYTES + 2))
        );
    }

    #[test]
    fn a_mutation_with_an_implausible_time_is_refused() {
        for t in [-1, i64::MIN, MAX_UPDATED_AT + 1, i64::MAX] {
            let m = Mutation {
                updated_at: t,
                ..put(1, json!(1))
            };
            assert_eq!(validate_mutation(&m), Err(ValidationError::InvalidTime(t)));
        }
        for t in [0, MAX_UPDATED_AT] {
            assert!(validate_mutation(&Mutation {
                updated_at: t,
                ..put(1, json!(1))
            })
            .is_ok());
        }
    }

    #[test]
    fn a_mutation_reports_its_first_problem_collection_before_key() {
        let m = Mutation {
            collection: "BAD".into(),
            key: String::new(),
            ..put(1, json!(1))
        };
        assert_eq!(
            validate_mutation(&m),
            Err(ValidationError::InvalidCollection("BAD".into()))
        );
        let m = Mutation {
            key: String::new(),
            updated_at: -5,
            ..put(1, json!(1))
        };
        assert_eq!(validate_mutation(&m), Err(ValidationError::InvalidKey(0)));
    }

    #[test]
    fn a_well_formed_push_passes() {
        assert!(validate_push(
            &push(vec![put(1, json!(1)), put(2, json!(2)), put(7, json!(3))]),
            300
        )
        .is_ok());
    }

    #[test]
    fn a_push_with_a_bad_client_id_is_refused_first() {
        let req = PushRequest {
            client_id: "bad id".into(),
            mutations: vec![],
        };
        assert_eq!(
            validate_push(&req, usize::MAX),
            Err(ValidationError::InvalidClientId)
        );
    }

    #[test]
    fn an_empty_push_is_refused() {
        assert_eq!(
            validate_push(&push(vec![]), 10),
            Err(ValidationError::EmptyBatch)
        );
    }

    #[test]
    fn a_push_of_more_than_1000_mutations_is_refused_and_1000_pass() {
        let many: Vec<Mutation> = (1..=1001).map(|s| put(s, Value::Null)).collect();
        assert_eq!(
            validate_push(&push(many.clone()), 100),
            Err(ValidationError::TooManyMutations(1001))
        );
        assert!(validate_push(&push(many[..1000].to_vec()), 100).is_ok());
    }

    #[test]
    fn a_push_body_over_5_mib_is_refused_and_exactly_5_mib_passes() {
        let req = push(vec![put(1, json!(1))]);
        assert!(validate_push(&req, MAX_BATCH_BYTES).is_ok());
        assert_eq!(
            validate_push(&req, MAX_BATCH_BYTES + 1),
            Err(ValidationError::BatchTooLarge(MAX_BATCH_BYTES + 1))
        );
    }

    #[test]
    fn a_mutation_of_another_client_makes_the_whole_push_invalid() {
        let stranger = Mutation {
            client_id: "other".into(),
            ..put(2, json!(1))
        };
        assert_eq!(
            validate_push(&push(vec![put(1, json!(1)), stranger]), 10),
            Err(ValidationError::ClientMismatch {
                seq: 2,
                expected: "client-1".into(),
                got: "other".into()
            })
        );
    }

    #[test]
    fn seqs_must_start_at_one_or_more_and_increase_strictly() {
        assert_eq!(
            validate_push(&push(vec![put(0, json!(1))]), 10),
            Err(ValidationError::SeqOutOfOrder { after: 0, got: 0 })
        );
        assert_eq!(
            validate_push(&push(vec![put(3, json!(1)), put(3, json!(1))]), 10),
            Err(ValidationError::SeqOutOfOrder { after: 3, got: 3 })
        );
        assert_eq!(
            validate_push(&push(vec![put(3, json!(1)), put(2, json!(1))]), 10),
            Err(ValidationError::SeqOutOfOrder { after: 3, got: 2 })
        );
        assert!(validate_push(
            &push(vec![put(u64::MAX - 1, json!(1)), put(u64::MAX, json!(1))]),
            10
        )
        .is_ok());
    }

    #[test]
    fn per_mutation_problems_do_not_fail_the_whole_push() {
        let bad = Mutation {
            collection: "BAD".into(),
            ..put(1, json!(1))
        };
        assert!(validate_push(&push(vec![bad.clone()]), 10).is_ok());
        assert!(!validate_mutation(&bad).unwrap_err().is_whole_request());
    }
}
