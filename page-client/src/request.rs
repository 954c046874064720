//! Requests as the page sends them: checked locally first (fast typed errors, nothing sent),
//! wrapped in a versioned envelope, and the one reply unwrapped into a result or a typed error.
//!
//! Pure, so every rule is tested natively.

use rangersync_shared::messages::{
    codes, message_limit, ExportFormat, ReplyEnvelope, Request, RequestEnvelope, WriteOp,
    MAX_WRITE_MANY_OPS, MESSAGE_VERSION,
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
/// looks like JSON but does not parse. The full check (format, version, checksum, counts, and
/// YAML) is the worker's: its YAML parser and hashing are too large to ship in the page too.
fn check_snapshot_text(text: &str) -> Result<(), ClientError> {
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
        let doc: serde_json::Map<String, Value> = serde_json::from_str(text)
            .map_err(|e| snapshot::SnapshotError::Parse(e.to_string()))?;
        match doc.get("format").and_then(Value::as_str) {
            Some(snapshot::SNAPSHOT_FORMAT) => {}
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
fn is_json(text: &str) -> bool {
    text.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}')
        .starts_with('{')
}

/// The export text to hand the caller: the worker writes JSON (it has no YAML encoder), so a
/// YAML export is converted here. The checksum is the same in both encodings.
pub fn export_text(format: ExportFormat, text: String) -> Result<String, ClientError> {
    match format {
        ExportFormat::Yaml if is_json(&text) => {
            let doc = snapshot::decode(&text).map_err(|e| {
                ClientError::new(
                    codes::BAD_RESPONSE,
                    format!("the worker exported a bad snapshot: {e}"),
                )
            })?;
            Ok(snapshot::encode(&doc, ExportFormat::Yaml))
        }
        _ => Ok(text),
    }
}

/// The snapshot text to send for a restore: YAML is parsed and verified here and sent as
/// JSON (the worker reads JSON only); JSON goes as it is, after the cheap checks of [`check`].
pub fn restore_text(text: String) -> Result<String, ClientError> {
    if is_json(&text) {
        return Ok(text);
    }
    check_snapshot_text(&text)?;
    let doc = snapshot::decode(&text)?;
    Ok(snapshot::encode(&doc, ExportFormat::Json))
}

/// Whether the request may take long (network, large documents): it gets a longer timeout.
pub fn is_slow(request: &Request) -> bool {
    matches!(
        request,
        Request::Flush | Request::Export { .. } | Request::Restore { .. }
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
            | Request::Restore { dry_run: false, .. }
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

/// Unwrap the worker's reply (as JSON text) to request `id`.
pub fn reply(id: u64, text: &str) -> Result<Value, ClientError> {
    let reply: ReplyEnvelope = serde_json::from_str(text).map_err(|e| {
        ClientError::new(
            codes::INVALID_MESSAGE,
            format!("the worker sent an unreadable reply: {e}"),
        )
    })?;
    if reply.id != id {
        return Err(ClientError::new(
            codes::INVALID_MESSAGE,
            format!(
                "the worker answered request {} on the port of request {id}",
                reply.id
            ),
        ));
    }
    if reply.ok {
        Ok(reply.result.unwrap_or(Value::Null))
    } else {
        Err(reply.error.map_or_else(
            || ClientError::internal("the worker refused the request without saying why"),
            ClientError::from,
        ))
    }
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
    fn restoring_garbage_is_a_bad_snapshot_error() {
        for text in ["{ not a snapshot", "", "   ", r#"{"format":"zip"}"#] {
            let garbage = Request::Restore {
                text: text.into(),
                dry_run: true,
            };
            assert_eq!(
                check(&garbage).unwrap_err().code,
                codes::BAD_SNAPSHOT,
                "{text:?}"
            );
        }
    }

    fn sample() -> snapshot::Snapshot {
        let entity = rangersync_shared::protocol::Entity {
            collection: "notes".into(),
            key: "n1".into(),
            value: json!({ "title": "yes", "n": 1.5, "code": "007" }),
            deleted: false,
            updated_at: 1_764_000_000_000,
            version: 3,
        };
        snapshot::build(
            snapshot::SnapshotSource::Client,
            Some("c1".into()),
            "0.1.0",
            1_764_000_000_001,
            vec![entity],
            Vec::new(),
        )
    }

    #[test]
    fn a_yaml_export_is_converted_from_the_workers_json_and_keeps_its_checksum() {
        let doc = sample();
        let json_text = snapshot::encode(&doc, ExportFormat::Json);
        let yaml = export_text(ExportFormat::Yaml, json_text.clone()).unwrap();
        assert!(!is_json(&yaml), "block YAML, not JSON: {yaml}");
        assert_eq!(snapshot::decode(&yaml).unwrap().checksum, doc.checksum);
        assert_eq!(
            export_text(ExportFormat::Json, json_text.clone()).unwrap(),
            json_text
        );
        assert_eq!(
            export_text(ExportFormat::Yaml, yaml.clone()).unwrap(),
            yaml,
            "YAML stays"
        );
    }

    #[test]
    fn a_yaml_restore_is_verified_here_and_sent_as_json() {
        let doc = sample();
        let yaml = snapshot::encode(&doc, ExportFormat::Yaml);
        let sent = restore_text(yaml).unwrap();
        assert!(is_json(&sent));
        assert_eq!(snapshot::decode(&sent).unwrap(), doc);
        let tampered = snapshot::encode(&doc, ExportFormat::Yaml).replace("\"yes\"", "\"no\"");
        assert_eq!(
            restore_text(tampered).unwrap_err().code,
            codes::CHECKSUM_MISMATCH
        );
        assert_eq!(
            restore_text("just: [yaml".into()).unwrap_err().code,
            codes::BAD_SNAPSHOT
        );
        assert_eq!(
            restore_text("hello".into()).unwrap_err().code,
            codes::BAD_SNAPSHOT
        );
    }

    #[test]
    fn a_restore_larger_than_the_general_message_limit_can_be_sent() {
        let big = "x".repeat(rangersync_shared::messages::MAX_MESSAGE_BYTES + 1);
        let text = envelope(
            1,
            Request::Restore {
                text: big.clone(),
                dry_run: false,
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
            dry_run: false
        }));
        assert!(!is_write(&Request::Restore {
            text: String::new(),
            dry_run: true
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
