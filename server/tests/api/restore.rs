//! `POST /api/restore`: an operator restores the server's entities from a snapshot.

use std::collections::BTreeMap;

use rangersync_server::DbLocation;
use reqwest::StatusCode;
use serde_json::{json, Value};

use rangersync_shared::snapshot::MAX_SNAPSHOT_BYTES;

use crate::common::*;
use crate::BACKEND;

/// The server's own export, as JSON text.
async fn export_text(s: &TestServer) -> String {
    let resp = s.http.get(s.at("/api/export")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.text().await.unwrap()
}

/// `key → (value, deleted)` of every entity, from an export.
async fn state(s: &TestServer) -> BTreeMap<String, (Value, bool)> {
    let doc: Value = serde_json::from_str(&export_text(s).await).unwrap();
    doc["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["key"].as_str().unwrap().to_owned(),
                (e["value"].clone(), e["deleted"].as_bool().unwrap()),
            )
        })
        .collect()
}

async fn restore(s: &TestServer, query: &str, text: String) -> (StatusCode, Value) {
    let (status, _, body) = s
        .post_text(&format!("/api/restore{query}"), text, "application/json")
        .await;
    (status, body)
}

fn keys(report: &Value, list: &str) -> Vec<String> {
    report[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} in {report}"))
        .iter()
        .map(|r| r["key"].as_str().unwrap().to_owned())
        .collect()
}

/// `a`, `b` and `c` stored, exported; then `a` changed, `b` deleted, `d` added. Returns the
/// export (the "backup") and the feed cursor after the changes.
async fn backed_up_then_changed(s: &TestServer) -> (String, String) {
    s.push_ok(
        "c1",
        vec![
            put("c1", 1, "a", json!({"v": "a1"}), T0),
            put("c1", 2, "b", json!({"v": "b1"}), T0),
            put("c1", 3, "c", json!({"v": "c1"}), T0),
        ],
    )
    .await;
    let backup = export_text(s).await;
    s.push_ok(
        "c1",
        vec![
            put("c1", 4, "a", json!({"v": "a2"}), T0 + 10),
            delete("c1", 5, "b", T0 + 10),
            put("c1", 6, "d", json!({"v": "d2"}), T0 + 10),
        ],
    )
    .await;
    let (_, cursor) = s.pull_all("").await;
    (backup, cursor)
}

#[tokio::test]
async fn a_dry_run_restore_reports_what_would_change_and_writes_nothing() {
    let s = TestServer::default("restore-dry-run").await;
    let (backup, cursor) = backed_up_then_changed(&s).await;
    let before = state(&s).await;

    for query in ["?dry_run=true", ""] {
        let (status, report) = restore(&s, query, backup.clone()).await;
        assert_eq!(status, StatusCode::OK, "{report}");
        assert_eq!(
            report["dry_run"], true,
            "{query:?}: a dry run unless told otherwise"
        );
        assert_eq!(keys(&report, "replaced"), vec!["a", "b"]);
        assert_eq!(keys(&report, "unchanged"), vec!["c"]);
        assert!(keys(&report, "added").is_empty());
        assert!(keys(&report, "refused").is_empty());
        assert_eq!(
            report["totals"],
            json!({"added": 0, "replaced": 2, "unchanged": 1, "refused": 0})
        );
        assert_eq!(report["versions"], Value::Null);
        assert_eq!(report["snapshot"]["source"], "server");
        assert_eq!(report["snapshot"]["backup_id"], Value::Null);
    }

    let (changes, _) = s.pull_all(&cursor).await;
    assert!(changes.is_empty(), "a dry run makes no change: {changes:?}");
    assert_eq!(state(&s).await, before);
    s.stop().await;
}

#[tokio::test]
async fn a_restore_gives_the_restored_values_new_versions_that_pulling_clients_receive() {
    let s = TestServer::default("restore-real").await;
    let (backup, cursor) = backed_up_then_changed(&s).await;

    let (status, report) = restore(&s, "?dry_run=false", backup.clone()).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["dry_run"], false);
    assert_eq!(keys(&report, "replaced"), vec!["a", "b"]);
    let restored_at = report["restored_at"].as_i64().unwrap();

    // A client that had pulled everything before the restore gets the restored values as
    // changes, with new versions.
    let (changes, _) = s.pull_all(&cursor).await;
    let got: BTreeMap<&str, (&Value, bool)> = changes
        .iter()
        .map(|c| {
            (
                c["key"].as_str().unwrap(),
                (&c["value"], c["deleted"].as_bool().unwrap()),
            )
        })
        .collect();
    assert_eq!(
        got,
        BTreeMap::from([
            ("a", (&json!({"v": "a1"}), false)),
            ("b", (&json!({"v": "b1"}), false)),
        ]),
        "the deleted b is back, a has its old value, c (unchanged) and d (not in the backup) are not sent"
    );
    let versions: Vec<u64> = changes
        .iter()
        .map(|c| c["version"].as_u64().unwrap())
        .collect();
    assert_eq!(
        versions,
        vec![
            report["versions"]["from"].as_u64().unwrap(),
            report["versions"]["to"].as_u64().unwrap()
        ]
    );
    assert!(changes
        .iter()
        .all(|c| c["updated_at"].as_i64().unwrap() >= restored_at));
    assert_eq!(
        state(&s).await["d"],
        (json!({"v": "d2"}), false),
        "d is kept"
    );

    // The restore is authoritative: a write made before it (delivered late) loses to it and
    // gets the restored value; a write made after it wins.
    let results = s
        .push_ok(
            "c2",
            vec![put("c2", 1, "a", json!({"v": "stale"}), T0 + 20)],
        )
        .await;
    assert_eq!(statuses(&results), vec!["conflict"]);
    assert_eq!(results[0]["current"]["value"], json!({"v": "a1"}));
    let results = s
        .push_ok(
            "c2",
            vec![put("c2", 2, "a", json!({"v": "after"}), restored_at + 1000)],
        )
        .await;
    assert_eq!(statuses(&results), vec!["applied"]);

    // Restoring the same backup again changes only what changed since.
    let (status, again) = restore(&s, "?dry_run=false", backup).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(keys(&again, "replaced"), vec!["a"]);
    assert_eq!(keys(&again, "unchanged"), vec!["b", "c"]);
    s.stop().await;
}

/// Make the database refuse to write the entity `poison` (a trigger), or allow it again.
async fn poison_entity_writes(db: &DbLocation, on: bool) {
    match (BACKEND, db) {
        (Backend::Sqlite, DbLocation::Sqlite(path)) => {
            let conn = rusqlite::Connection::open(path).unwrap();
            conn.busy_timeout(std::time::Duration::from_secs(5))
                .unwrap();
            conn.execute_batch(if on {
                "CREATE TRIGGER poison_insert BEFORE INSERT ON entities WHEN NEW.key = 'poison'
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END;
                 CREATE TRIGGER poison_update BEFORE UPDATE ON entities WHEN NEW.key = 'poison'
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
            } else {
                "DROP TRIGGER poison_insert; DROP TRIGGER poison_update;"
            })
            .unwrap();
        }
        (Backend::Postgres, DbLocation::Postgres(url)) => {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .unwrap();
            let driver = tokio::spawn(connection);
            client
                .batch_execute(if on {
                    "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
                     BEGIN
                         IF NEW.key = 'poison' THEN RAISE EXCEPTION 'injected failure'; END IF;
                         RETURN NEW;
                     END $$;
                     CREATE TRIGGER poison BEFORE INSERT OR UPDATE ON entities
                     FOR EACH ROW EXECUTE FUNCTION poison();"
                } else {
                    "DROP TRIGGER poison ON entities; DROP FUNCTION poison();"
                })
                .await
                .unwrap();
            drop(client);
            let _ = driver.await;
        }
        other => panic!("unexpected backend and database {other:?}"),
    }
}

#[tokio::test]
async fn a_restore_that_fails_midway_changes_nothing_and_succeeds_once_the_fault_is_gone() {
    let s = TestServer::default("restore-atomic").await;
    let seed: Vec<Value> = (0..500u64)
        .map(|i| put("c1", i + 1, &format!("k{i:04}"), json!({"old": i}), T0))
        .collect();
    s.push_ok("c1", seed).await;
    let (_, cursor) = s.pull_all("").await;
    let before = state(&s).await;

    // 2,500 entities sorted by key: the first 2,500 are written before `poison` fails (several
    // statements on PostgreSQL, which writes 2,000 per statement).
    let mut entities: Vec<_> = (0..2500)
        .map(|i| snap_entity(&format!("k{i:04}"), json!({"new": i}), false))
        .collect();
    entities.push(snap_entity("poison", json!("x"), false));
    let backup = json_of(&client_snapshot("client-a", T0, entities, 0));

    poison_entity_writes(&s.opts.db, true).await;
    let (status, body) = restore(&s, "?dry_run=false", backup.clone()).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(code(&body), "internal");

    let (changes, _) = s.pull_all(&cursor).await;
    assert!(
        changes.is_empty(),
        "nothing of the failed restore is visible"
    );
    assert_eq!(state(&s).await, before, "every entity as it was");
    // Not even a version was used up: the next write gets the next version.
    let results = s
        .push_ok("c1", vec![put("c1", 501, "probe", json!(1), T0)])
        .await;
    assert_eq!(
        results[0]["version"].as_u64().unwrap(),
        cursor.parse::<u64>().unwrap() + 1
    );

    poison_entity_writes(&s.opts.db, false).await;
    let (status, report) = restore(&s, "?dry_run=false", backup).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["totals"]["replaced"], 500);
    assert_eq!(report["totals"]["added"], 2001);
    let after = state(&s).await;
    assert_eq!(after.len(), 2502);
    assert_eq!(after["k0007"], (json!({"new": 7}), false));
    assert_eq!(after["k2499"], (json!({"new": 2499}), false));
    assert_eq!(after["probe"], (json!(1), false));
    s.stop().await;
}

#[tokio::test]
async fn a_stored_backup_restores_by_id_and_client_side_state_is_reported_not_restored() {
    let s = TestServer::default("restore-by-id").await;
    let snap = client_snapshot(
        "client-a",
        T0,
        vec![
            snap_entity("n1", json!("one"), false),
            snap_entity("n2", Value::Null, true),
        ],
        3,
    );
    let (status, stored) = s.upload(yaml_of(&snap)).await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    let id = id_of(&stored);

    let (status, report) =
        restore(&s, &format!("?backup_id={id}&dry_run=false"), String::new()).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(keys(&report, "added"), vec!["n1"]);
    assert_eq!(
        keys(&report, "unchanged"),
        vec!["n2"],
        "a tombstone of nothing changes nothing"
    );
    assert_eq!(report["snapshot"]["backup_id"], id);
    assert_eq!(report["snapshot"]["client_id"], "client-a");
    assert_eq!(report["snapshot"]["checksum"], stored["checksum"]);
    assert_eq!(
        report["not_restored"]["outbox"], 3,
        "the client's pending entries are its own: counted, not restored"
    );
    assert_eq!(state(&s).await["n1"], (json!("one"), false));
    assert!(
        s.mutations_of("client-a").await.is_empty(),
        "no push was recorded for the client"
    );

    let (status, body) = restore(&s, &format!("?backup_id={NO_SUCH_BACKUP}"), String::new()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(code(&body), "not_found");
    let (status, body) = restore(&s, &format!("?backup_id={id}"), json_of(&snap)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&body), "malformed_body");
    for bad in ["?backup_id=x", "?dry_run=maybe"] {
        let (status, body) = restore(&s, bad, json_of(&snap)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(code(&body), "bad_query", "{bad}");
    }
    s.stop().await;
}

#[tokio::test]
async fn a_broken_or_oversize_restore_document_is_refused_and_changes_nothing() {
    let s = TestServer::default("restore-refused").await;
    s.push_ok("c1", vec![put("c1", 1, "k", json!("live"), T0)])
        .await;
    let (_, cursor) = s.pull_all("").await;
    let good = client_snapshot(
        "client-a",
        T0,
        vec![snap_entity("k", json!("original"), false)],
        0,
    );
    let text = json_of(&good);

    let cases = [
        (
            text.replacen("original", "originaL", 1),
            StatusCode::BAD_REQUEST,
            "checksum_mismatch",
        ),
        (
            text[..text.len() - 20].to_owned(),
            StatusCode::BAD_REQUEST,
            "bad_snapshot",
        ),
        (
            text.replacen("\"format_version\": 2", "\"format_version\": 3", 1),
            StatusCode::BAD_REQUEST,
            "bad_snapshot",
        ),
        (
            "not a snapshot".to_owned(),
            StatusCode::BAD_REQUEST,
            "bad_snapshot",
        ),
        (
            " ".repeat(MAX_SNAPSHOT_BYTES + 1),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    for (doc, want_status, want_code) in cases {
        for query in ["?dry_run=true", "?dry_run=false"] {
            let (status, body) = restore(&s, query, doc.clone()).await;
            assert_eq!(status, want_status, "{query} {want_code}: {body}");
            assert_eq!(code(&body), want_code, "{query}");
        }
    }

    // A verified document with an entity that cannot be stored: the dry run lists it, the
    // real restore refuses the whole document.
    let bad_entity = client_snapshot(
        "client-a",
        T0,
        vec![
            snap_entity("fine", json!(1), false),
            rangersync_shared::protocol::Entity {
                collection: "Not Valid".into(),
                ..snap_entity("x", json!(1), false)
            },
        ],
        0,
    );
    let (status, report) = restore(&s, "?dry_run=true", json_of(&bad_entity)).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(keys(&report, "refused"), vec!["x"]);
    assert_eq!(keys(&report, "added"), vec!["fine"]);
    let (status, body) = restore(&s, "?dry_run=false", json_of(&bad_entity)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(code(&body), "bad_snapshot");

    let (changes, _) = s.pull_all(&cursor).await;
    assert!(changes.is_empty(), "nothing changed: {changes:?}");
    assert_eq!(state(&s).await["k"], (json!("live"), false));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_racing_a_restore_never_fail_and_each_entity_ends_as_one_of_them() {
    let s = TestServer::default("restore-race").await;
    let (writers, batches, per_batch) = (4usize, 20usize, 50usize);
    let n = writers * batches * per_batch;
    let entities = (0..n)
        .map(|i| snap_entity(&format!("k{i:04}"), json!({"restored": i}), false))
        .collect();
    let backup = json_of(&client_snapshot("client-a", T0, entities, 0));
    let restoring = {
        let http = s.http.clone();
        let url = s.at("/api/restore?dry_run=false");
        tokio::spawn(async move {
            let resp = http
                .post(url)
                .header("content-type", "application/json")
                .body(backup)
                .send()
                .await
                .unwrap();
            (resp.status(), resp.text().await.unwrap())
        })
    };
    // Each entity is pushed once, stamped far in the future: a push that commits before the
    // restore is overwritten by it, one that commits after wins.
    let far = 4_000_000_000_000; // 2096
    let writers: Vec<_> = (0..writers)
        .map(|w| {
            let http = s.http.clone();
            let url = s.at("/api/sync/push");
            tokio::spawn(async move {
                let client = format!("w{w}");
                for b in 0..batches {
                    let mutations: Vec<Value> = (0..per_batch)
                        .map(|j| {
                            let i = (w * batches + b) * per_batch + j;
                            let seq = (b * per_batch + j + 1) as u64;
                            put(&client, seq, &format!("k{i:04}"), json!({"pushed": i}), far)
                        })
                        .collect();
                    let resp = http
                        .post(&url)
                        .json(&json!({"client_id": client, "mutations": mutations}))
                        .send()
                        .await
                        .unwrap();
                    let status = resp.status();
                    assert_eq!(status, StatusCode::OK, "{}", resp.text().await.unwrap());
                }
            })
        })
        .collect();
    let (status, report) = restoring.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{report}");
    for w in writers {
        w.await.unwrap();
    }

    let final_state = state(&s).await;
    assert_eq!(final_state.len(), n);
    for (i, (key, (value, _))) in final_state.iter().enumerate() {
        assert!(
            *value == json!({"restored": i}) || *value == json!({"pushed": i}),
            "{key}: {value}"
        );
    }
    // The feed from the start ends in the same state.
    let (changes, _) = s.pull_all("").await;
    let fed: BTreeMap<String, Value> = changes
        .iter()
        .map(|c| (c["key"].as_str().unwrap().to_owned(), c["value"].clone()))
        .collect();
    let exported: BTreeMap<String, Value> =
        final_state.into_iter().map(|(k, (v, _))| (k, v)).collect();
    assert_eq!(fed, exported);
    s.stop().await;
}
