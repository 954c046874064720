//! Requests as the page sends them: checked locally first (fast typed errors, nothing sent),
//! wrapped in a versioned envelope, and the one reply unwrapped into a result or a typed error.
//!
//! Replies and broadcasts are read as `serde_json::Value` by hand rather than through the shared
//! types' `Deserialize`: derived deserializers (tagged enums above all) are among the largest
//! code in a wasm module, and the messaging client has to stay small.
//!
//! Pure, so every rule is tested natively.

use rangersync_shared::messages::{
    codes, message_limit, Request, RequestEnvelope, WriteOp, MAX_WRITE_MANY_OPS, MESSAGE_VERSION,
};
use rangersync_shared::snapshot;
use rangersync_shared::validate::{validate_collection, validate_key, validate_value};
use serde_json::Value;

use crate::error::ClientError;

/// Check a request the way the worker will, before it leaves the page.
pub fn check(request: &Request) -> Result<(), ClientError> {
    match request {
        Request::Put {
            collection,
            key,
            value,
        } => {
            validate_collection(collection)?;
            validate_key(key)?;
            validate_value(value)?;
        }
        Request::Delete { collection, key } | Request::Get { collection, key } => {
            validate_collection(collection)?;
            validate_key(key)?;
        }
        Request::WriteMany { ops } => {
            if ops.is_empty() || ops.len() > MAX_WRITE_MANY_OPS {
                return Err(ClientError::new(
                    codes::INVALID_VALUE,
                    format!(
                        "putMany/writeMany take 1 to {MAX_WRITE_MANY_OPS} operations (got {})",
                        ops.len()
                    ),
                ));
            }
            for op in ops {
                let (collection, key) = op.target();
                validate_collection(collection)?;
                validate_key(key)?;
                if let WriteOp::Put { value, .. } = op {
                    validate_value(value)?;
                }
            }
        }
        Request::List { collection } => validate_collection(collection)?,
        Request::RetryDead { seq } | Request::DiscardDead { seq } if *seq == 0 => {
            return Err(ClientError::new(
                codes::INVALID_VALUE,
                "seq must be a whole number ≥ 1",
            ));
        }
        Request::Restore { text, .. } => check_snapshot_text(text)?,
        _ => {}
    }
    Ok(())
}

/// Refuse obvious garbage before sending a snapshot: empty or oversize text, and text that
/// looks like JSON but does not parse. The full check (format, version, checksum, counts) is
/// the worker's for JSON and the extras module's for YAML: the YAML parser and the hashing are
/// too large for the messaging client.
pub fn check_snapshot_text(text: &str) -> Result<(), ClientError> {
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err(ClientError::new(
            codes::BAD_SNAPSHOT,
            "the snapshot is empty",
        ));
    }
    if text.len() > snapshot::MAX_SNAPSHOT_BYTES {
        return Err(snapshot::SnapshotError::TooLarge {
            limit: snapshot::MAX_SNAPSHOT_BYTES,
        }
        .into());
    }
    if trimmed.starts_with('{') {
        // As a `Value`: a typed deserializer would bring serde's error formatting (floats
        // included) into the module.
        let doc: Value = serde_json::from_str(text)
            .map_err(|e| snapshot::SnapshotError::Parse(e.to_string()))?;
        match doc.get("format").and_then(Value::as_str) {
            Some(snapshot::SNAPSHOT_FORMAT | rangersync_shared::sealed::FORMAT) => {}
            other => {
                return Err(snapshot::SnapshotError::WrongFormat(
                    other.unwrap_or_default().to_owned(),
                )
                .into())
            }
        }
    }
    Ok(())
}

/// Whether snapshot text is JSON (its first non-blank character is `{`), else YAML.
pub fn is_json(text: &str) -> bool {
    text.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}')
        .starts_with('{')
}

/// Whether the request may take long (network, large documents): it gets a longer timeout.
pub fn is_slow(request: &Request) -> bool {
    matches!(
        request,
        Request::Flush
            | Request::Export { .. }
            | Request::Restore { .. }
            | Request::Backup { manual: true }
            | Request::ServerBackups { .. }
            | Request::RestoreFromServer { .. }
            | Request::BackupKey { .. }
            | Request::PutBlob { .. }
            | Request::GetBlob { .. }
    )
}

/// Whether the request writes (`put`, `delete`, a real `restore`, `retryDead`,
/// `discardDead`): such a request is never sent twice, since a worker replaced while it was in
/// flight has usually committed it (a second `put` would commit it again, possibly after a
/// newer write; a second `retryDead` would fail with `not_found`).
pub fn is_write(request: &Request) -> bool {
    matches!(
        request,
        Request::Put { .. }
            | Request::Delete { .. }
            | Request::WriteMany { .. }
            | Request::PutBlob { .. }
            | Request::Restore { dry_run: false, .. }
            | Request::RestoreFromServer { dry_run: false, .. }
            | Request::RetryDead { .. }
            | Request::DiscardDead { .. }
    )
}

/// The error for a write whose worker was replaced before it answered.
pub fn write_interrupted() -> ClientError {
    ClientError::new(
        codes::WORKER_UNAVAILABLE,
        "the service worker was replaced while this write was in flight: it may or may not have \
         been saved (read it back before writing it again)",
    )
}

/// The envelope of `request` with `id`, as JSON text (checked against the worker's size limit
/// for its type: a `restore` may carry a whole snapshot).
pub fn envelope(id: u64, request: Request) -> Result<String, ClientError> {
    let limit = message_limit(&request);
    let env = RequestEnvelope {
        v: MESSAGE_VERSION,
        id,
        request,
    };
    let text = serde_json::to_string(&env)
        .map_err(|e| ClientError::internal(format!("cannot encode request: {e}")))?;
    if text.len() > limit {
        return Err(ClientError::new(
            codes::VALUE_TOO_LARGE,
            format!("message is larger than {limit} bytes"),
        ));
    }
    Ok(text)
}

/// Unwrap the worker's reply (a `ReplyEnvelope` as JSON text) to request `id`.
pub fn reply(id: u64, text: &str) -> Result<Value, ClientError> {
    let unreadable = |why: &str| {
        ClientError::new(
            codes::INVALID_MESSAGE,
            format!("the worker sent an unreadable reply: {why}"),
        )
    };
    // Fields are read with `get` / `take`, never `Map::remove`: removal is the B-tree's
    // rebalancing code, which nothing else in the module needs.
    let Ok(mut reply @ Value::Object(_)) = serde_json::from_str::<Value>(text) else {
        return Err(unreadable("not a JSON object"));
    };
    let answered = reply
        .get("id")
        .and_then(Value::as_u64)
        .ok_or_else(|| unreadable("no id"))?;
    if answered != id {
        return Err(ClientError::new(
            codes::INVALID_MESSAGE,
            format!("the worker answered request {answered} on the port of request {id}"),
        ));
    }
    match reply.get("ok").and_then(Value::as_bool) {
        Some(true) => Ok(reply
            .get_mut("result")
            .map(Value::take)
            .unwrap_or(Value::Null)),
        Some(false) => {
            let error = reply.get("error").unwrap_or(&Value::Null);
            match (text_of(error, "code"), text_of(error, "message")) {
                (Some(code), Some(message)) => Err(ClientError { code, message }),
                _ => Err(ClientError::internal(
                    "the worker refused the request without saying why",
                )),
            }
        }
        None => Err(unreadable("no ok")),
    }
}

fn text_of(value: &Value, field: &str) -> Option<String> {
    value.get(field).and_then(Value::as_str).map(str::to_owned)
}

/// What the worker (or the page engine) tells every tab without being asked: a
/// [`rangersync_shared::messages::Broadcast`], read from its JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// `{ type: "status", status }`: the status object, handed to listeners as it is.
    Status(Value),
    /// `{ type: "change", collection, key }`.
    Change {
        /// The entity's collection.
        collection: String,
        /// The entity's key.
        key: String,
    },
    /// `{ type: "worker_error", code, message }`: the worker cannot work; use page mode.
    WorkerError {
        /// Stable code.
        code: String,
        /// For people.
        message: String,
    },
}

/// Read a broadcast's JSON text; `None` for anything else.
pub fn incoming(text: &str) -> Option<Incoming> {
    let mut value: Value = serde_json::from_str(text).ok()?;
    match value.get("type")?.as_str()? {
        "status" => match value.get_mut("status")?.take() {
            status @ Value::Object(_) => Some(Incoming::Status(status)),
            _ => None,
        },
        "change" => Some(Incoming::Change {
            collection: text_of(&value, "collection")?,
            key: text_of(&value, "key")?,
        }),
        "worker_error" => Some(Incoming::WorkerError {
            code: text_of(&value, "code")?,
            message: text_of(&value, "message")?,
        }),
        _ => None,
    }
}

/// Whether a result is a status object (`flush` answers with one).
pub fn is_status(value: &Value) -> bool {
    value.get("state").is_some_and(Value::is_string) && value.get("pending").is_some()
}

/// One item of `putMany` (`op` given: `{ collection, key, value }`) or `writeMany`
/// (`{ op: "put", collection, key, value } | { op: "delete", collection, key }`). Unknown or
/// missing fields are `invalid_value`, as the shared type's deserializer would say.
pub fn write_op(item: Value, op: Option<&str>) -> Result<WriteOp, ClientError> {
    let refused = |why: String| {
        ClientError::new(
            codes::INVALID_VALUE,
            format!("not a write operation ({{ op, collection, key, value }}): {why}"),
        )
    };
    let Value::Object(map) = &item else {
        return Err(refused("not an object".into()));
    };
    // `putMany` makes every item a put, whatever `op` it carries.
    let op = match (op, map.get("op")) {
        (Some(op), _) => op,
        (None, Some(Value::String(op))) => op.as_str(),
        (None, _) => return Err(refused("no op".into())),
    };
    let fields: &[&str] = match op {
        "put" => &["op", "collection", "key", "value"],
        "delete" => &["op", "collection", "key"],
        other => return Err(refused(format!("unknown op {other:?}"))),
    };
    if let Some(unknown) = map.keys().find(|k| !fields.contains(&k.as_str())) {
        return Err(refused(format!("unknown field {unknown:?}")));
    }
    let text = |field: &str| match map.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(refused(format!("{field} must be a string"))),
    };
    let (collection, key) = (text("collection")?, text("key")?);
    if op == "delete" {
        return Ok(WriteOp::Delete { collection, key });
    }
    let mut item = item;
    let value = item
        .get_mut("value")
        .map(Value::take)
        .ok_or_else(|| refused("a put needs a value".into()))?;
    Ok(WriteOp::Put {
        collection,
        key,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn put(collection: &str, key: &str, value: Value) -> Request {
        Request::Put {
            collection: collection.into(),
            key: key.into(),
            value,
        }
    }

    fn write_many(ops: Value) -> Request {
        Request::WriteMany {
            ops: serde_json::from_value(ops).expect("write ops"),
        }
    }

    #[test]
    fn a_write_many_is_checked_operation_by_operation_before_it_leaves() {
        assert!(check(&write_many(json!([
            { "op": "put", "collection": "notes", "key": "a", "value": 1 },
            { "op": "delete", "collection": "notes", "key": "b" },
        ])))
        .is_ok());
        let bad_key = write_many(json!([
            { "op": "put", "collection": "notes", "key": "a", "value": 1 },
            { "op": "put", "collection": "notes", "key": "", "value": 2 },
        ]));
        assert_eq!(check(&bad_key).unwrap_err().code, codes::INVALID_KEY);
        assert_eq!(
            check(&write_many(json!([]))).unwrap_err().code,
            codes::INVALID_VALUE,
            "an empty batch"
        );
        let too_many: Vec<Value> = (0..=MAX_WRITE_MANY_OPS)
            .map(|i| json!({ "op": "delete", "collection": "notes", "key": i.to_string() }))
            .collect();
        assert_eq!(
            check(&write_many(Value::Array(too_many))).unwrap_err().code,
            codes::INVALID_VALUE
        );
    }

    #[test]
    fn a_write_many_is_a_write_and_never_sent_twice() {
        assert!(is_write(&write_many(json!([
            { "op": "delete", "collection": "notes", "key": "a" }
        ]))));
    }

    #[test]
    fn a_valid_put_passes_the_local_check() {
        check(&put("notes", "n1", json!({ "title": "hi" }))).unwrap();
    }

    #[test]
    fn a_bad_collection_key_or_value_is_refused_before_sending() {
        assert_eq!(
            check(&put("Notes!", "n1", json!(1))).unwrap_err().code,
            codes::INVALID_COLLECTION
        );
        assert_eq!(
            check(&put("notes", "", json!(1))).unwrap_err().code,
            codes::INVALID_KEY
        );
        let big = json!("x".repeat(1024 * 1024 + 1));
        assert_eq!(
            check(&put("notes", "n1", big)).unwrap_err().code,
            codes::VALUE_TOO_LARGE
        );
        let list = Request::List {
            collection: String::new(),
        };
        assert_eq!(check(&list).unwrap_err().code, codes::INVALID_COLLECTION);
        assert_eq!(
            check(&Request::RetryDead { seq: 0 }).unwrap_err().code,
            codes::INVALID_VALUE
        );
    }

    #[test]
    fn snapshot_text_starting_with_a_brace_is_json_and_anything_else_yaml() {
        assert!(is_json("  {\"format\":\"rangersync-snapshot\"}"));
        assert!(is_json("\u{feff}{}"));
        assert!(!is_json("format: rangersync-snapshot"));
        assert!(!is_json(""));
    }

    #[test]
    fn restoring_garbage_is_a_bad_snapshot_error() {
        for text in ["{ not a snapshot", "", "   ", r#"{"format":"zip"}"#] {
            let garbage = Request::Restore {
                text: text.into(),
                dry_run: true,
                passphrase: None,
                key: false,
            };
            assert_eq!(
                check(&garbage).unwrap_err().code,
                codes::BAD_SNAPSHOT,
                "{text:?}"
            );
        }
    }

    #[test]
    fn a_restore_larger_than_the_general_message_limit_can_be_sent() {
        let big = "x".repeat(rangersync_shared::messages::MAX_MESSAGE_BYTES + 1);
        let text = envelope(
            1,
            Request::Restore {
                text: big.clone(),
                dry_run: false,
                passphrase: None,
                key: false,
            },
        )
        .expect("a 2 MiB+ restore fits its own limit");
        rangersync_shared::messages::parse_request(&text).expect("and the worker takes it");
        let put = Request::Put {
            collection: "notes".into(),
            key: "k".into(),
            value: Value::String(big),
        };
        assert_eq!(envelope(2, put).unwrap_err().code, codes::VALUE_TOO_LARGE);
    }

    #[test]
    fn writes_are_never_resent_after_a_controller_change() {
        assert!(is_write(&put("notes", "k", json!(1))));
        assert!(is_write(&Request::Delete {
            collection: "notes".into(),
            key: "k".into()
        }));
        assert!(is_write(&Request::Restore {
            text: String::new(),
            dry_run: false,
            passphrase: None,
            key: false,
        }));
        assert!(!is_write(&Request::Restore {
            text: String::new(),
            dry_run: true,
            passphrase: None,
            key: false,
        }));
        assert!(is_write(&Request::RetryDead { seq: 3 }));
        assert!(is_write(&Request::DiscardDead { seq: 3 }));
        for read in [
            Request::Status,
            Request::Flush,
            Request::List {
                collection: "notes".into(),
            },
        ] {
            assert!(!is_write(&read), "{read:?}");
        }
        let e = write_interrupted();
        assert_eq!(e.code, codes::WORKER_UNAVAILABLE);
        assert!(e.message.contains("may or may not"));
    }

    #[test]
    fn an_envelope_carries_the_version_and_id() {
        let text = envelope(7, Request::Status).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!({ "v": 1, "id": 7, "request": { "type": "status" } })
        );
    }

    #[test]
    fn broadcasts_are_read_by_type_and_anything_else_is_ignored() {
        assert_eq!(
            incoming(r#"{"type":"change","collection":"notes","key":"n1"}"#),
            Some(Incoming::Change {
                collection: "notes".into(),
                key: "n1".into()
            })
        );
        assert_eq!(
            incoming(r#"{"type":"status","status":{"state":"idle","pending":0}}"#),
            Some(Incoming::Status(json!({ "state": "idle", "pending": 0 })))
        );
        assert_eq!(
            incoming(r#"{"type":"worker_error","code":"storage_error","message":"x"}"#),
            Some(Incoming::WorkerError {
                code: "storage_error".into(),
                message: "x".into()
            })
        );
        for other in [
            r#"{"type":"hello"}"#,
            r#"{"type":"change"}"#,
            "[]",
            "nonsense",
        ] {
            assert_eq!(incoming(other), None, "{other}");
        }
    }

    #[test]
    fn what_the_shared_broadcast_type_writes_is_read_back_the_same() {
        use rangersync_shared::messages::Broadcast;
        let change = Broadcast::Change {
            collection: "chat".into(),
            key: "k".into(),
        };
        assert_eq!(
            incoming(&serde_json::to_string(&change).unwrap()),
            Some(Incoming::Change {
                collection: "chat".into(),
                key: "k".into()
            })
        );
        let status = rangersync_shared::status::Status::default();
        let text = serde_json::to_string(&Broadcast::Status {
            status: Box::new(status.clone()),
        })
        .unwrap();
        let Some(Incoming::Status(value)) = incoming(&text) else {
            panic!("a status broadcast: {text}");
        };
        assert!(is_status(&value));
        assert_eq!(value, serde_json::to_value(&status).unwrap());
    }

    #[test]
    fn write_operations_are_read_as_the_shared_type_reads_them() {
        assert_eq!(
            write_op(
                json!({ "collection": "notes", "key": "k", "value": 1 }),
                Some("put")
            )
            .unwrap(),
            WriteOp::Put {
                collection: "notes".into(),
                key: "k".into(),
                value: json!(1)
            }
        );
        assert_eq!(
            write_op(
                json!({ "op": "delete", "collection": "notes", "key": "k" }),
                None
            )
            .unwrap(),
            WriteOp::Delete {
                collection: "notes".into(),
                key: "k".into()
            }
        );
        for bad in [
            json!({ "op": "put", "collection": "notes", "key": "k" }),
            json!({ "op": "move", "collection": "notes", "key": "k" }),
            json!({ "collection": "notes", "key": "k", "value": 1 }),
            json!({ "op": "delete", "collection": "notes", "key": 5 }),
            json!({ "op": "delete", "collection": "notes", "key": "k", "extra": 1 }),
            json!("put"),
        ] {
            let shared: Result<WriteOp, _> = serde_json::from_value(bad.clone());
            assert!(shared.is_err(), "the shared type refuses {bad} too");
            assert_eq!(
                write_op(bad.clone(), None).unwrap_err().code,
                codes::INVALID_VALUE,
                "{bad}"
            );
        }
    }

    #[test]
    fn a_reply_unwraps_to_its_result_or_its_typed_error() {
        assert_eq!(
            reply(3, r#"{"v":1,"id":3,"ok":true,"result":{"seq":9}}"#).unwrap(),
            json!({ "seq": 9 })
        );
        let e = reply(
            3,
            r#"{"v":1,"id":3,"ok":false,"error":{"code":"quota_exceeded","message":"full"}}"#,
        )
        .unwrap_err();
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("quota_exceeded", "full")
        );
        assert_eq!(
            reply(3, r#"{"v":1,"id":4,"ok":true}"#).unwrap_err().code,
            codes::INVALID_MESSAGE
        );
        assert_eq!(
            reply(3, "nonsense").unwrap_err().code,
            codes::INVALID_MESSAGE
        );
    }
}
