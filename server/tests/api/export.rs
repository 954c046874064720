//! `GET /api/export` and `/api/backups`.

use reqwest::StatusCode;
use serde_json::{json, Value};

use rangersync_shared::snapshot;

use crate::common::*;

async fn export(s: &TestServer, format: &str) -> (String, String, String) {
    let resp = s
        .http
        .get(s.at(&format!("/api/export?format={format}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    let cd = resp.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    (ct, cd, resp.text().await.unwrap())
}

async fn post_backup(s: &TestServer, text: String, ct: &str) -> (StatusCode, Value) {
    let resp = s
        .http
        .post(s.at("/api/backups"))
        .header("content-type", ct)
        .body(text)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn json_and_yaml_exports_carry_the_same_checksum_and_both_store_as_backups() {
    let s = TestServer::default("export").await;
    s.push_ok(
        "c1",
        vec![
            put(
                "c1",
                1,
                "a",
                json!({"title": "héllo", "n": [1, 2.5, null, true]}),
                T0,
            ),
            put("c1", 2, "b", json!("two"), T0),
            delete("c1", 3, "b", T0 + 1),
        ],
    )
    .await;

    let (ct, cd, json_text) = export(&s, "json").await;
    assert!(ct.starts_with("application/json"), "{ct}");
    assert!(cd.starts_with("attachment") && cd.contains(".json"), "{cd}");
    let doc: Value = serde_json::from_str(&json_text).unwrap();
    assert_eq!(doc["format"], "rangersync-snapshot");
    assert_eq!(doc["source"], "server");
    assert_eq!(
        doc["counts"]["notes"], 1,
        "tombstones are exported but not counted"
    );

    // A millisecond later, so the YAML export is another snapshot (another checksum).
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    let (ct, cd, yaml_text) = export(&s, "yaml").await;
    assert!(ct.starts_with("application/yaml"), "{ct}");
    assert!(cd.contains(".yaml"), "{cd}");
    assert!(!yaml_text.trim_start().starts_with('{'));

    // Two exports are two snapshots (exported_at differs); with the same time they are the
    // same document, so YAML and JSON carry the same checksum.
    let from_json_doc = snapshot::decode(&json_text).unwrap();
    let mut from_yaml_doc = snapshot::decode(&yaml_text).unwrap();
    assert_eq!(from_yaml_doc.entities, from_json_doc.entities);
    assert_eq!(from_yaml_doc.counts, from_json_doc.counts);
    from_yaml_doc.exported_at = from_json_doc.exported_at;
    assert_eq!(
        snapshot::compute_checksum(&from_yaml_doc),
        from_json_doc.checksum.value
    );
    let yaml_checksum = snapshot::decode(&yaml_text).unwrap().checksum.value;

    let (status, from_json) = post_backup(&s, json_text, "application/json").await;
    assert_eq!(status, StatusCode::CREATED, "{from_json}");
    let (status, from_yaml) = post_backup(&s, yaml_text, "application/yaml").await;
    assert_eq!(status, StatusCode::CREATED, "{from_yaml}");
    assert_eq!(from_json["checksum"], doc["checksum"]["value"]);
    assert_eq!(
        from_yaml["checksum"], yaml_checksum,
        "the YAML text verifies after parsing"
    );
    assert_eq!(from_json["entities"], 2);

    let (status, list) = s.get_json("/api/backups").await;
    assert_eq!(status, StatusCode::OK);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[1]["id"], from_json["id"], "newest first");
    assert_eq!(list[0]["format"], "yaml");
    for b in list {
        assert_eq!(b["source"], "server");
        assert_eq!(b["client_id"], Value::Null);
        assert!(b["received_at"].as_i64().unwrap() > 0);
        assert!(b["exported_at"].as_i64().unwrap() > 0);
    }

    let (status, again) = s
        .get_json(&format!("/api/backups/{}", id_of(&from_json)))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, doc, "a stored backup is given back as sent");
    let (status, _) = s.get_json("/api/backups/999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    s.stop().await;
}

#[tokio::test]
async fn a_tampered_or_broken_backup_is_refused_and_stores_nothing() {
    let s = TestServer::default("tampered").await;
    s.push_ok(
        "c1",
        vec![put("c1", 1, "a", json!({"title": "original"}), T0)],
    )
    .await;
    let (_, _, text) = export(&s, "json").await;
    let tampered = text.replace("original", "forged!!");
    assert_ne!(tampered, text);

    let (status, body) = post_backup(&s, tampered, "application/json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&body), "checksum_mismatch");

    for garbage in ["not a snapshot", "{\"format\":\"other\"}", "{"] {
        let (status, body) = post_backup(&s, garbage.to_owned(), "application/json").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{garbage}");
        assert_eq!(code(&body), "bad_snapshot", "{garbage}");
    }
    let (_, list) = s.get_json("/api/backups").await;
    assert_eq!(list, json!([]));
    s.stop().await;
}

#[tokio::test]
async fn an_unknown_export_format_is_400() {
    let s = TestServer::default("export-format").await;
    let (status, body) = s.get_json("/api/export?format=xml").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&body), "bad_query");
    let (status, _) = s.get_json("/api/export").await;
    assert_eq!(status, StatusCode::OK, "json is the default");
    s.stop().await;
}
