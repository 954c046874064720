//! `POST /api/backups`, `GET /api/backups`, `GET /api/backups/{id}`: a client's snapshots
//! kept off the device.

use reqwest::StatusCode;
use serde_json::{json, Value};

use rangersync_shared::sealed;
use rangersync_shared::snapshot::MAX_SNAPSHOT_BYTES;

use crate::common::*;

fn ids(list: &[Value]) -> Vec<String> {
    list.iter().map(id_of).collect()
}

#[tokio::test]
async fn an_uploaded_backup_is_verified_listed_and_given_back_exactly_as_sent() {
    let s = TestServer::default("backup-round-trip").await;
    let snap = client_snapshot(
        "client-a",
        T0 + 5,
        vec![
            snap_entity("n1", json!({"title": "héllo", "n": [1, 2.5, null]}), false),
            snap_entity("n2", json!("two"), false),
            snap_entity("gone", Value::Null, true),
        ],
        2,
    );
    let json_text = format!("  {}\n", json_of(&snap));
    let (status, headers, stored) = s
        .post_text("/api/backups", json_text.clone(), "application/json")
        .await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    let id = id_of(&stored);
    assert_eq!(headers["location"], format!("/api/backups/{id}").as_str());
    assert_eq!(stored["client_id"], "client-a");
    assert_eq!(stored["exported_at"], T0 + 5);
    assert_eq!(stored["size"], json_text.len());
    assert_eq!(stored["checksum"], snap.checksum.value.as_str());
    assert_eq!(stored["counts"], json!({"notes": 2}));
    assert_eq!(stored["entities"], 3);
    assert_eq!(stored["source"], "client");
    assert_eq!(stored["format"], "json");
    assert!(stored["received_at"].as_i64().unwrap() > T0);

    // Another snapshot of the same client, as YAML.
    let later = client_snapshot(
        "client-a",
        T0 + 6,
        vec![snap_entity("n1", json!(1), false)],
        0,
    );
    let yaml_text = yaml_of(&later);
    let (status, _, yaml_stored) = s
        .post_text("/api/backups", yaml_text.clone(), "application/yaml")
        .await;
    assert_eq!(status, StatusCode::CREATED, "{yaml_stored}");
    assert_eq!(yaml_stored["format"], "yaml");

    let list = s.backups("").await;
    assert_eq!(
        ids(&list),
        vec![id_of(&yaml_stored), id.clone()],
        "newest first"
    );
    assert_eq!(list[1], stored, "the list shows what the upload answered");
    assert!(
        list.iter().all(|b| b.get("body").is_none()),
        "no documents in the list"
    );

    for (id, text, ct) in [
        (id, &json_text, "application/json"),
        (id_of(&yaml_stored), &yaml_text, "application/yaml"),
    ] {
        let resp = s
            .http
            .get(s.at(&format!("/api/backups/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], ct);
        assert_eq!(&resp.text().await.unwrap(), text, "byte for byte as sent");
    }
    s.stop().await;
}

#[tokio::test]
async fn only_the_newest_n_backups_of_each_client_are_kept_and_other_clients_are_untouched() {
    let s = TestServer::start("backup-keep", |o| o.keep_backups = 3).await;
    let mut a = Vec::new();
    for i in 0..2 {
        let (status, b) = s
            .upload(json_of(&client_snapshot("client-b", T0 + i, vec![], 0)))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{b}");
    }
    for i in 0..5 {
        let snap = client_snapshot(
            "client-a",
            T0 + i,
            vec![snap_entity("k", json!(i), false)],
            0,
        );
        let (status, b) = s.upload(json_of(&snap)).await;
        assert_eq!(status, StatusCode::CREATED, "{b}");
        a.push(id_of(&b));
    }
    let kept = s.backups("?client_id=client-a").await;
    assert_eq!(
        ids(&kept),
        vec![a[4].clone(), a[3].clone(), a[2].clone()],
        "the newest 3, newest first"
    );
    for pruned in &a[..2] {
        let (status, body) = s.get_json(&format!("/api/backups/{pruned}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(code(&body), "not_found");
    }
    assert_eq!(
        s.backups("?client_id=client-b").await.len(),
        2,
        "another client's backups are untouched"
    );
    assert_eq!(s.backups("").await.len(), 5);
    s.stop().await;
}

#[tokio::test]
async fn uploading_the_same_document_again_answers_the_stored_backup_and_uses_no_slot() {
    let s = TestServer::start("backup-idempotent", |o| o.keep_backups = 2).await;
    let first = client_snapshot("client-a", T0, vec![snap_entity("k", json!(1), false)], 1);
    let second = client_snapshot(
        "client-a",
        T0 + 1,
        vec![snap_entity("k", json!(2), false)],
        0,
    );
    let (status, one) = s.upload(json_of(&first)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, two) = s.upload(json_of(&second)).await;
    assert_eq!(status, StatusCode::CREATED);

    let (status, again) = s.upload(json_of(&first)).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again, one, "the stored backup, unchanged");
    let (status, _, as_yaml) = s
        .post_text("/api/backups", yaml_of(&first), "application/yaml")
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "same checksum in another encoding: {as_yaml}"
    );
    assert_eq!(as_yaml["id"], one["id"]);
    assert_eq!(
        as_yaml["format"], "json",
        "the first upload is what is kept"
    );

    assert_eq!(
        ids(&s.backups("").await),
        vec![id_of(&two), id_of(&one)],
        "both kept: a re-upload used no slot and pruned nothing"
    );

    // The same document from another client is that client's backup.
    let mut theirs = first.clone();
    theirs.client_id = Some("client-b".into());
    theirs.checksum.value = rangersync_shared::snapshot::compute_checksum(&theirs);
    let (status, _) = s.upload(json_of(&theirs)).await;
    assert_eq!(status, StatusCode::CREATED);
    s.stop().await;
}

#[tokio::test]
async fn a_flipped_byte_a_truncated_document_a_newer_version_or_an_oversize_body_is_refused_and_stores_nothing(
) {
    let s = TestServer::default("backup-refused").await;
    let snap = client_snapshot(
        "client-a",
        T0,
        vec![snap_entity("k", json!("original"), false)],
        0,
    );
    let text = json_of(&snap);

    let flipped = text.replacen("original", "originaL", 1);
    let (status, body) = s.upload(flipped).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&body), "checksum_mismatch");

    let (status, body) = s.upload(text[..text.len() / 2].to_owned()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&body), "bad_snapshot");

    let newer = text.replacen("\"format_version\": 2", "\"format_version\": 3", 1);
    assert_ne!(newer, text);
    let (status, body) = s.upload(newer).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&body), "bad_snapshot");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("version 3"));

    let (status, body) = s
        .upload("{\"format\":\"rangersync-snapshot\"".to_owned())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&body), "bad_snapshot");

    // 64 MiB is the limit: the same document padded to exactly 64 MiB is taken, one byte
    // more is 413.
    let mut padded = text.clone();
    padded.push_str(&" ".repeat(MAX_SNAPSHOT_BYTES - text.len() + 1));
    let (status, body) = s.upload(padded.clone()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(code(&body), "payload_too_large");
    assert_eq!(
        s.backups("").await,
        Vec::<Value>::new(),
        "nothing was stored"
    );

    padded.pop();
    let (status, body) = s.upload(padded).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["size"], MAX_SNAPSHOT_BYTES);
    s.stop().await;
}

#[tokio::test]
async fn the_backup_list_takes_a_client_and_a_bounded_limit_and_a_missing_backup_is_a_typed_404() {
    let s = TestServer::default("backup-list").await;
    for i in 0..3 {
        s.upload(json_of(&client_snapshot("client-a", T0 + i, vec![], 0)))
            .await;
    }
    s.upload(json_of(&client_snapshot("client-b", T0, vec![], 0)))
        .await;
    let a = s.backups("?client_id=client-a").await;
    assert_eq!(a.len(), 3);
    assert!(a.iter().all(|b| b["client_id"] == "client-a"));
    assert!(s.backups("?client_id=nobody").await.is_empty());

    let two = s.backups("?limit=2").await;
    assert_eq!(two.len(), 2);
    assert_eq!(two[0]["client_id"], "client-b", "newest first");
    assert_eq!(
        s.backups("?limit=100000").await.len(),
        4,
        "clamped, not refused"
    );
    for bad in ["?limit=0", "?limit=-1", "?limit=ten", "?client_id="] {
        let (status, body) = s.get_json(&format!("/api/backups{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(code(&body), "bad_query", "{bad}");
    }
    for missing in ["999999", "0", "abc", "-1"] {
        let (status, body) = s.get_json(&format!("/api/backups/{missing}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
        assert_eq!(code(&body), "not_found", "{missing}");
    }
    s.stop().await;
}

/// A database at schema version 1 (before backups had sizes, counts and one row per
/// document), holding `rows` as that server stored them: `(client_id, checksum, format, body)`.
async fn database_of_the_previous_version(
    dir: &TempDir,
    rows: &[(Option<&str>, String, &str, String)],
) -> rangersync_server::DbLocation {
    use rangersync_server::DbLocation;
    let db = fresh_db(dir).await;
    let insert = "INSERT INTO backups (exported_at, checksum, source, client_id, app_version,
                                       entities, format, body, received_at)";
    match &db {
        DbLocation::Sqlite(path) => {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let conn = rusqlite::Connection::open(path).unwrap();
            conn.execute_batch(rangersync_server::sqlite::MIGRATIONS[0])
                .unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            for (client, checksum, format, body) in rows {
                conn.execute(
                    &format!("{insert} VALUES (?1, ?2, 'client', ?3, 'old', 0, ?4, ?5, ?1)"),
                    rusqlite::params![T0, checksum, client, format, body],
                )
                .unwrap();
            }
        }
        DbLocation::Postgres(url) => {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .unwrap();
            let driver = tokio::spawn(connection);
            client
                .batch_execute(rangersync_server::postgres::MIGRATIONS[0])
                .await
                .unwrap();
            client
                .batch_execute(
                    "CREATE TABLE rangersync_schema (
                         only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
                         version  INTEGER NOT NULL
                     );
                     INSERT INTO rangersync_schema (version) VALUES (1);",
                )
                .await
                .unwrap();
            for (id, checksum, format, body) in rows {
                client
                    .execute(
                        &format!("{insert} VALUES ($1, $2, 'client', $3, 'old', 0, $4, $5, $1)"),
                        &[&T0, checksum, id, format, body],
                    )
                    .await
                    .unwrap();
            }
            drop(client);
            let _ = driver.await;
        }
    }
    db
}

#[tokio::test]
async fn backups_stored_by_the_previous_version_keep_one_row_per_document_with_size_and_counts() {
    let dir = TempDir::new("backup-migration");
    let a = client_snapshot("client-a", T0, vec![snap_entity("k", json!(1), false)], 0);
    let server = rangersync_shared::snapshot::build(
        rangersync_shared::snapshot::SnapshotSource::Server,
        None,
        "old",
        T0,
        vec![
            snap_entity("k", json!(1), false),
            snap_entity("j", json!(2), false),
        ],
        vec![],
    );
    let a_text = json_of(&a);
    let server_text = yaml_of(&server);
    let db = database_of_the_previous_version(
        &dir,
        &[
            (
                Some("client-a"),
                a.checksum.value.clone(),
                "json",
                a_text.clone(),
            ),
            // The same document sent again: the previous version stored it twice.
            (
                Some("client-a"),
                a.checksum.value.to_ascii_uppercase(),
                "json",
                a_text.clone(),
            ),
            (
                None,
                server.checksum.value.clone(),
                "yaml",
                server_text.clone(),
            ),
        ],
    )
    .await;
    let opts = rangersync_server::ServerOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        db,
        www: None,
        ..rangersync_server::ServerOptions::default()
    };
    let running = rangersync_server::start(opts.clone())
        .await
        .expect("starts");
    let s = TestServer {
        url: running.url(),
        server: Some(running),
        opts,
        http: reqwest::Client::new(),
        _dir: dir,
        keys: None,
    };

    let list = s.backups("").await;
    assert_eq!(
        list.len(),
        2,
        "the second copy of the same document is gone"
    );
    let migrated = ids(&list);
    assert_ne!(migrated[0], migrated[1]);
    assert_eq!(list[1]["size"], a_text.len());
    assert_eq!(list[1]["counts"], json!({"notes": 1}));
    assert_eq!(list[0]["size"], server_text.len());
    assert_eq!(
        list[0]["counts"],
        json!({"notes": 2}),
        "filled in from the YAML text"
    );
    assert_eq!(list[0]["client_id"], Value::Null);
    let (status, again) = s.upload(a_text).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["id"], list[1]["id"], "the first copy is the one kept");
    s.stop().await;
}

#[tokio::test]
async fn an_encrypted_backup_is_stored_as_sent_checked_only_by_its_outer_checksum_and_a_tampered_one_is_refused(
) {
    let s = TestServer::default("backup-sealed").await;
    let ciphertext = b"an AES-GCM ciphertext and its 16-byte tag, opaque to the server";
    let text = sealed::seal(
        Some("client-s".into()),
        T0 + 9,
        Some(&sealed::Derivation {
            iterations: sealed::PBKDF2_ITERATIONS,
            salt: vec![3; sealed::SALT_BYTES],
        }),
        &[4; sealed::IV_BYTES],
        ciphertext,
    );
    let (status, _, stored) = s
        .post_text("/api/backups", text.clone(), "application/json")
        .await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    assert_eq!(stored["format"], "sealed");
    assert_eq!(stored["client_id"], "client-s");
    assert_eq!(stored["exported_at"], T0 + 9);
    assert_eq!(
        stored["checksum"],
        rangersync_shared::snapshot::sha256_hex(ciphertext).as_str()
    );
    let resp = s
        .http
        .get(s.at(&format!("/api/backups/{}", id_of(&stored))))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.text().await.unwrap(), text, "byte for byte as sent");

    // One changed byte of the ciphertext: the outer checksum no longer holds.
    let mut envelope: Value = serde_json::from_str(&text).unwrap();
    let c = envelope["ciphertext"].as_str().unwrap().to_owned();
    let flipped = if c.starts_with('Q') { "R" } else { "Q" };
    envelope["ciphertext"] = json!(format!("{flipped}{}", &c[1..]));
    let (status, _, refused) = s
        .post_text("/api/backups", envelope.to_string(), "application/json")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(refused["error"]["code"], "checksum_mismatch", "{refused}");
    // Too few PBKDF2 iterations: refused too.
    let weak = text.replace("\"iterations\":600000", "\"iterations\":1000");
    let (status, _, _) = s.post_text("/api/backups", weak, "application/json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(s.backups("").await.len(), 1, "nothing else stored");
    s.stop().await;
}
