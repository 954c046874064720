//! Snapshot text between JSON (what the worker exports and restores) and YAML (what a person may
//! keep). The checksum covers the content, not the encoding, so it is the same in both.

use rangersync_shared::messages::ExportFormat;
use rangersync_shared::snapshot::{self, SnapshotError};

/// A JSON snapshot (the worker's export) as block YAML. Fails with the snapshot's error
/// (`bad_snapshot`, `checksum_mismatch`) when the text is not a valid snapshot.
pub fn yaml_from_json(json: &str) -> Result<String, SnapshotError> {
    let doc = snapshot::decode(json)?;
    Ok(snapshot::encode(&doc, ExportFormat::Yaml))
}

/// A YAML snapshot, parsed and verified (format, version, checksum, counts), as JSON for the
/// worker. Fails with `bad_snapshot` or `checksum_mismatch`; nothing is written then.
pub fn json_from_yaml(yaml: &str) -> Result<String, SnapshotError> {
    let doc = snapshot::decode(yaml)?;
    Ok(snapshot::encode(&doc, ExportFormat::Json))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rangersync_shared::messages::codes;
    use serde_json::json;

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

    fn is_json(text: &str) -> bool {
        text.trim_start().starts_with('{')
    }

    #[test]
    fn a_json_export_becomes_block_yaml_with_the_same_checksum() {
        let doc = sample();
        let yaml = yaml_from_json(&snapshot::encode(&doc, ExportFormat::Json)).unwrap();
        assert!(!is_json(&yaml), "block YAML, not JSON: {yaml}");
        assert_eq!(snapshot::decode(&yaml).unwrap().checksum, doc.checksum);
    }

    #[test]
    fn a_yaml_snapshot_is_verified_and_becomes_json() {
        let doc = sample();
        let sent = json_from_yaml(&snapshot::encode(&doc, ExportFormat::Yaml)).unwrap();
        assert!(is_json(&sent));
        assert_eq!(snapshot::decode(&sent).unwrap(), doc);
    }

    #[test]
    fn a_tampered_or_broken_yaml_snapshot_is_refused_with_its_code() {
        let doc = sample();
        let tampered = snapshot::encode(&doc, ExportFormat::Yaml).replace("\"yes\"", "\"no\"");
        assert_eq!(
            json_from_yaml(&tampered).unwrap_err().code(),
            codes::CHECKSUM_MISMATCH
        );
        for garbage in ["just: [yaml", "hello"] {
            assert_eq!(
                json_from_yaml(garbage).unwrap_err().code(),
                codes::BAD_SNAPSHOT,
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn a_bad_json_export_is_refused_rather_than_converted() {
        assert_eq!(
            yaml_from_json(r#"{"format":"zip"}"#).unwrap_err().code(),
            codes::BAD_SNAPSHOT
        );
    }
}
