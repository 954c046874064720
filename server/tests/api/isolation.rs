//! Every user sees only their own data: pull, export, backups, captured requests and stats;
//! a client id belongs to the user who first used it.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

const ALICE: &str = "alice-token-0123456789";
const BOB: &str = "bob-token-0123456789";
const ROOT: &str = "root-token-0123456789";

/// `(key, value)` of every entity in a JSON export.
async fn exported(s: &TestServer) -> Vec<(String, Value)> {
    let (status, doc) = s.get_json("/api/export").await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    doc["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["key"].as_str().unwrap().to_owned(), e["value"].clone()))
        .collect()
}

/// `(key, value)` of every change in the feed.
async fn pulled(s: &TestServer) -> Vec<(String, Value)> {
    let (changes, _) = s.pull_all("").await;
    changes
        .iter()
        .map(|c| (c["key"].as_str().unwrap().to_owned(), c["value"].clone()))
        .collect()
}

/// Two users write the same entity, capture a request with the same idempotency key and
/// back up; each then sees only their own.
async fn each_sees_only_their_own(a: &TestServer, b: &TestServer) {
    a.push_ok(
        "client-a",
        vec![
            put("client-a", 1, "shared", json!("a's"), T0),
            put("client-a", 2, "only-a", json!(1), T0),
        ],
    )
    .await;
    b.push_ok(
        "client-b",
        vec![put("client-b", 1, "shared", json!("b's"), T0)],
    )
    .await;

    assert_eq!(
        pulled(a).await,
        vec![
            ("shared".to_owned(), json!("a's")),
            ("only-a".to_owned(), json!(1))
        ]
    );
    assert_eq!(pulled(b).await, vec![("shared".to_owned(), json!("b's"))]);
    assert_eq!(exported(a).await.len(), 2);
    assert_eq!(exported(b).await, vec![("shared".to_owned(), json!("b's"))]);

    for (s, text) in [(a, "from a"), (b, "from b")] {
        let resp = s
            .http
            .post(s.at("/api/sync/chat"))
            .header("idempotency-key", "same-key")
            .json(&json!({ "message": text }))
            .send()
            .await
            .unwrap();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["duplicate"], false, "keys are per user: {body}");
    }
    let a_captured = a.stats().await["captured"].clone();
    assert_eq!(a_captured.as_array().unwrap().len(), 1);
    assert_eq!(a_captured[0]["body"]["message"], "from a");
    assert_eq!(b.stats().await["captured"][0]["body"]["message"], "from b");
    assert_eq!(a.stats().await["mutations_applied"], 2);
    assert_eq!(b.stats().await["mutations_applied"], 1);
    assert!(
        b.mutations_of("client-a").await.is_empty(),
        "another user's client"
    );
    assert_eq!(a.mutations_of("client-a").await.len(), 2);

    let snap = json_of(&client_snapshot(
        "client-a",
        T0,
        vec![snap_entity("shared", json!("a's"), false)],
        0,
    ));
    let (status, stored) = a.upload(snap).await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    let a_backup = id_of(&stored);
    let (status, _) = a.upload(exported_text(a).await).await;
    assert_eq!(status, StatusCode::CREATED, "a server export of a's data");
    assert_eq!(a.backups("").await.len(), 2);
    assert!(
        b.backups("").await.is_empty(),
        "b lists none of a's backups"
    );
    let (status, body) = b.get_json(&format!("/api/backups/{a_backup}")).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let (status, _) = a.get_json(&format!("/api/backups/{a_backup}")).await;
    assert_eq!(status, StatusCode::OK);
}

async fn exported_text(s: &TestServer) -> String {
    let resp = s.http.get(s.at("/api/export")).send().await.unwrap();
    resp.text().await.unwrap()
}

#[tokio::test]
async fn two_users_of_a_tokens_file_each_see_only_their_own_data() {
    let s = TestServer::with_users("isolation-tokens", |_| {}).await;
    each_sees_only_their_own(&s.as_user(ALICE), &s.as_user(BOB)).await;
    s.stop().await;
}

#[tokio::test]
async fn two_users_of_jwts_each_see_only_their_own_data() {
    let s = TestServer::with_users("isolation-jwt", |_| {}).await;
    let carol = hs256_jwt(&user_claims("carol"), HS256_SECRET);
    let dave = eddsa_jwt(&user_claims("dave"), ED25519_PRIVATE);
    each_sees_only_their_own(&s.as_user(&carol), &s.as_user(&dave)).await;
    s.stop().await;
}

#[tokio::test]
async fn a_client_id_of_another_user_is_refused_and_changes_nothing() {
    let s = TestServer::with_users("isolation-client", |_| {}).await;
    let (alice, bob) = (s.as_user(ALICE), s.as_user(BOB));
    alice
        .push_ok(
            "client-a",
            vec![put("client-a", 1, "k", json!("alice"), T0)],
        )
        .await;

    let (status, body) = bob
        .push(
            "client-a",
            vec![
                put("client-a", 2, "k", json!("bob"), T0 + 1),
                put("client-a", 3, "j", json!(1), T0),
            ],
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "client_owned_by_another_user")
    );
    assert!(pulled(&bob).await.is_empty(), "nothing stored for bob");
    assert_eq!(pulled(&alice).await, vec![("k".to_owned(), json!("alice"))]);
    let seqs: Vec<u64> = alice
        .mutations_of("client-a")
        .await
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1], "bob's seq 2 of client-a was not recorded");

    // A forged backup under alice's client id is refused, and cannot push hers out.
    let forged = json_of(&client_snapshot(
        "client-a",
        T0 + 9,
        vec![snap_entity("k", json!("forged"), false)],
        0,
    ));
    let (status, body) = bob.upload(forged).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "client_owned_by_another_user")
    );
    assert!(bob.backups("").await.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn an_admin_restores_one_users_entities_and_no_one_elses() {
    let s = TestServer::with_users("isolation-restore", |_| {}).await;
    let (alice, bob, root) = (s.as_user(ALICE), s.as_user(BOB), s.as_user(ROOT));
    alice
        .push_ok(
            "client-a",
            vec![put("client-a", 1, "k", json!("alice"), T0)],
        )
        .await;
    bob.push_ok("client-b", vec![put("client-b", 1, "k", json!("bob"), T0)])
        .await;
    let (status, stored) = alice
        .upload(json_of(&client_snapshot(
            "client-a",
            T0,
            vec![snap_entity("k", json!("backed up"), false)],
            0,
        )))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = id_of(&stored);

    // Root's own backups do not hold alice's: by id it is not found for root's own data.
    let (status, _, _) = root
        .post_text(
            &format!("/api/restore?backup_id={id}&dry_run=false"),
            "",
            "application/json",
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, report) = root
        .post_text(
            &format!("/api/restore?user_id=alice&backup_id={id}&dry_run=false"),
            "",
            "application/json",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["snapshot"]["user_id"], "alice");
    assert_eq!(
        pulled(&alice).await,
        vec![("k".to_owned(), json!("backed up"))]
    );
    assert_eq!(pulled(&bob).await, vec![("k".to_owned(), json!("bob"))]);
    assert!(pulled(&root).await.is_empty());
    s.stop().await;
}

/// A database as the previous version (schema 2, before users) left it: one entity written by
/// `old-client`, its dedup record, its counters and a captured request.
async fn database_before_users(dir: &TempDir) -> rangersync_server::DbLocation {
    use rangersync_server::DbLocation;
    let db = fresh_db(dir).await;
    let rows = |deleted: &str| {
        format!(
            "INSERT INTO entities (collection, key, value, deleted, updated_at, client_id, seq, version)
                 VALUES ('notes', 'k', '\"old\"', {deleted}, {T0}, 'old-client', 1, 1);
             INSERT INTO mutations (client_id, seq, status, collection, key, op, version, received_at)
                 VALUES ('old-client', 1, 'applied', 'notes', 'k', 'put', 1, {T0});
             INSERT INTO captured_requests (path, body, idempotency_key, received_at)
                 VALUES ('/api/sync/chat', '{{\"m\":1}}', 'old-client:2', {T0});"
        )
    };
    match &db {
        DbLocation::Sqlite(path) => {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let conn = rusqlite::Connection::open(path).unwrap();
            for sql in &rangersync_server::sqlite::MIGRATIONS[..2] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 2).unwrap();
            conn.execute_batch(&rows("0")).unwrap();
            conn.execute_batch(
                "INSERT INTO counters (name, value) VALUES ('version', 1), ('mutations_applied', 1), ('push_requests', 1);",
            )
            .unwrap();
        }
        DbLocation::Postgres(url) => {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .unwrap();
            let driver = tokio::spawn(connection);
            for sql in &rangersync_server::postgres::MIGRATIONS[..2] {
                client.batch_execute(sql).await.unwrap();
            }
            client
                .batch_execute(&format!(
                    "CREATE TABLE rangersync_schema (
                         only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
                         version  INTEGER NOT NULL
                     );
                     INSERT INTO rangersync_schema (version) VALUES (2);
                     {}
                     UPDATE counters SET version = 1, mutations_applied = 1, push_requests = 1;",
                    rows("false")
                ))
                .await
                .unwrap();
            drop(client);
            let _ = driver.await;
        }
    }
    db
}

#[tokio::test]
async fn rows_stored_before_users_existed_belong_to_the_default_user() {
    let dir = TempDir::new("migration-users");
    let db = database_before_users(&dir).await;
    let s = TestServer::with_users("migration-users", |o| {
        o.db = db;
        o.token = Some("default-token-0123456789".into());
        // The old rows were received at T0, long ago: the pruner would forget them at start.
        o.retain_mutations_days = 0;
    })
    .await;
    let (default, alice) = (s.as_user("default-token-0123456789"), s.as_user(ALICE));
    assert_eq!(pulled(&default).await, vec![("k".to_owned(), json!("old"))]);
    assert_eq!(default.stats().await["mutations_applied"], 1);
    assert_eq!(
        default.stats().await["captured"][0]["body"],
        json!({"m": 1})
    );
    assert!(pulled(&alice).await.is_empty());
    assert_eq!(alice.stats().await["captured"], json!([]));
    let (status, body) = alice
        .push(
            "old-client",
            vec![put("old-client", 2, "k", json!("alice"), T0 + 1)],
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "client_owned_by_another_user"),
        "old-client is default's"
    );
    let results = default
        .push_ok(
            "old-client",
            vec![
                put("old-client", 1, "k", json!("again"), T0),
                put("old-client", 2, "k", json!("new"), T0 + 1),
            ],
        )
        .await;
    assert_eq!(
        statuses(&results),
        ["duplicate", "applied"],
        "the dedup record was kept"
    );
    s.stop().await;
}
