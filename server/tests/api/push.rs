//! `POST /api/sync/push`.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

#[tokio::test]
async fn a_resent_batch_is_answered_duplicate_and_changes_nothing() {
    let s = TestServer::default("dedup").await;
    let batch = vec![
        put("c1", 1, "a", json!({"t": 1}), T0),
        put("c1", 2, "b", json!({"t": 2}), T0),
    ];
    let first = s.push_ok("c1", batch.clone()).await;
    assert_eq!(statuses(&first), ["applied", "applied"]);
    let (_, before) = s.get_json("/api/sync/pull").await;

    let again = s.push_ok("c1", batch).await;
    assert_eq!(
        again,
        vec![
            json!({"seq": 1, "status": "duplicate"}),
            json!({"seq": 2, "status": "duplicate"})
        ]
    );

    let (_, after) = s.get_json("/api/sync/pull").await;
    assert_eq!(before, after, "a duplicate changes nothing");
    let stats = s.stats().await;
    assert_eq!(stats["mutations_applied"], 2);
    assert_eq!(stats["duplicates"], 2);
    assert_eq!(stats["push_requests"], 2);
    let rows = s.mutations_of("c1").await;
    assert_eq!(rows.len(), 2, "each (client_id, seq) is recorded once");
    s.stop().await;
}

#[tokio::test]
async fn a_resent_batch_that_overlaps_new_mutations_applies_only_the_new_ones() {
    let s = TestServer::default("overlap").await;
    s.push_ok(
        "c1",
        vec![
            put("c1", 1, "a", json!(1), T0),
            put("c1", 2, "a", json!(2), T0 + 1),
        ],
    )
    .await;
    let results = s
        .push_ok(
            "c1",
            vec![
                put("c1", 2, "a", json!(2), T0 + 1),
                put("c1", 3, "a", json!(3), T0 + 2),
            ],
        )
        .await;
    assert_eq!(statuses(&results), ["duplicate", "applied"]);
    let (_, pull) = s.get_json("/api/sync/pull").await;
    assert_eq!(pull["changes"][0]["value"], 3);
    s.stop().await;
}

#[tokio::test]
async fn applied_mutations_get_increasing_versions_in_seq_order_and_are_recorded_in_order() {
    let s = TestServer::default("order").await;
    let results = s
        .push_ok(
            "c1",
            (1..=5)
                .map(|i| put("c1", i, &format!("k{i}"), json!(i), T0 + i as i64))
                .collect(),
        )
        .await;
    let versions: Vec<u64> = results
        .iter()
        .map(|r| r["version"].as_u64().unwrap())
        .collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    let seqs: Vec<u64> = results.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);

    let more = s
        .push_ok("c1", vec![put("c1", 6, "k1", json!("later"), T0 + 100)])
        .await;
    assert!(more[0]["version"].as_u64().unwrap() > versions[4]);

    let rows = s.mutations_of("c1").await;
    let seqs: Vec<u64> = rows.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    assert!(rows.iter().all(|r| r["status"] == "applied"));
    s.stop().await;
}

#[tokio::test]
async fn an_older_write_is_a_conflict_carrying_the_current_state() {
    let s = TestServer::default("conflict").await;
    let newer = s
        .push_ok(
            "alice",
            vec![put("alice", 1, "n", json!({"by": "alice"}), T0 + 10)],
        )
        .await;
    let version = newer[0]["version"].clone();

    let older = s
        .push_ok("bob", vec![put("bob", 1, "n", json!({"by": "bob"}), T0)])
        .await;
    assert_eq!(
        older[0],
        json!({"seq": 1, "status": "conflict",
               "current": {"value": {"by": "alice"}, "deleted": false, "updated_at": T0 + 10, "version": version}})
    );
    // Same updated_at: the tuple (updated_at, client_id, seq) decides; "bob" > "alice".
    let tie = s
        .push_ok(
            "bob",
            vec![put("bob", 2, "n", json!({"by": "bob"}), T0 + 10)],
        )
        .await;
    assert_eq!(tie[0]["status"], "applied");
    assert_eq!(s.stats().await["conflicts"], 1);
    s.stop().await;
}

#[tokio::test]
async fn a_conflicted_mutation_sent_again_is_answered_conflict_again_with_the_state_now() {
    let s = TestServer::default("conflict-again").await;
    s.push_ok("alice", vec![put("alice", 1, "n", json!("a1"), T0 + 10)])
        .await;
    let stale = put("bob", 1, "n", json!("b"), T0);
    assert_eq!(
        s.push_ok("bob", vec![stale.clone()]).await[0]["status"],
        "conflict"
    );
    s.push_ok("alice", vec![put("alice", 2, "n", json!("a2"), T0 + 20)])
        .await;

    let again = s.push_ok("bob", vec![stale]).await;
    assert_eq!(again[0]["status"], "conflict");
    assert_eq!(again[0]["current"]["value"], "a2");
    assert_eq!(s.mutations_of("bob").await.len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn a_stale_put_after_a_delete_stays_deleted() {
    let s = TestServer::default("tombstone").await;
    s.push_ok(
        "c1",
        vec![
            put("c1", 1, "n", json!("v1"), T0),
            delete("c1", 2, "n", T0 + 10),
        ],
    )
    .await;

    let stale = s
        .push_ok("c2", vec![put("c2", 1, "n", json!("zombie"), T0 + 5)])
        .await;
    assert_eq!(stale[0]["status"], "conflict");
    assert_eq!(stale[0]["current"]["deleted"], true);
    assert_eq!(stale[0]["current"]["value"], Value::Null);

    let (_, pull) = s.get_json("/api/sync/pull").await;
    let changes = pull["changes"].as_array().unwrap();
    assert_eq!(
        changes.len(),
        1,
        "the tombstone is kept and is the entity's one row"
    );
    assert_eq!(changes[0]["deleted"], true);
    assert_eq!(changes[0]["updated_at"], T0 + 10);

    // A newer put does bring it back.
    let newer = s
        .push_ok("c2", vec![put("c2", 2, "n", json!("back"), T0 + 20)])
        .await;
    assert_eq!(newer[0]["status"], "applied");
    s.stop().await;
}

#[tokio::test]
async fn invalid_mutations_are_rejected_alongside_applied_ones_and_stay_rejected_when_resent() {
    let s = TestServer::default("rejected").await;
    let big = "x".repeat(1024 * 1024 + 10);
    let mut bad_collection = put("c1", 2, "k", json!(1), T0);
    bad_collection["collection"] = json!("Bad Collection!");
    let batch = vec![
        put("c1", 1, "ok1", json!(1), T0),
        bad_collection,
        put("c1", 3, "huge", json!(big), T0),
        put("c1", 4, "ok2", json!(2), T0),
    ];
    let results = s.push_ok("c1", batch.clone()).await;
    assert_eq!(
        statuses(&results),
        ["applied", "rejected", "rejected", "applied"]
    );
    assert!(results[1]["reason"]
        .as_str()
        .unwrap()
        .contains("collection"));
    assert!(results[2]["reason"].as_str().unwrap().contains("1 MiB"));

    let again = s.push_ok("c1", batch).await;
    assert_eq!(
        statuses(&again),
        ["duplicate", "rejected", "rejected", "duplicate"]
    );
    assert_eq!(again[2]["reason"], results[2]["reason"]);

    let (_, pull) = s.get_json("/api/sync/pull").await;
    assert_eq!(
        pull["changes"].as_array().unwrap().len(),
        2,
        "rejected mutations store nothing"
    );
    let rows = s.mutations_of("c1").await;
    let st: Vec<&str> = rows.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(st, ["applied", "rejected", "rejected", "applied"]);
    assert_eq!(s.stats().await["rejected"], 2);
    s.stop().await;
}

#[tokio::test]
async fn a_batch_of_1001_mutations_is_413_and_stores_nothing() {
    let s = TestServer::default("count-limit").await;
    let batch: Vec<Value> = (1..=1001)
        .map(|i| put("c1", i, "k", json!(i), T0))
        .collect();
    let (status, body) = s.push("c1", batch).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(code(&body), "payload_too_large");

    let batch: Vec<Value> = (1..=1000)
        .map(|i| put("c1", i, &format!("k{i}"), json!(i), T0))
        .collect();
    assert_eq!(
        s.push_ok("c1", batch).await.len(),
        1000,
        "1000 is still fine"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_body_over_5_mib_is_413() {
    let s = TestServer::default("size-limit").await;
    // 5.28 MB: over 5 MiB, within the read slack, so validate_push judges it.
    let chunk = "y".repeat(880_000);
    let batch: Vec<Value> = (1..=6)
        .map(|i| put("c1", i, &format!("k{i}"), json!(chunk), T0))
        .collect();
    let (status, body) = s.push("c1", batch).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(code(&body), "payload_too_large");

    // Far over the limit: cut off without reading it all.
    let huge = format!(
        "{{\"client_id\":\"c1\",\"mutations\":[],\"pad\":\"{}\"}}",
        "z".repeat(12 * 1024 * 1024)
    );
    let resp = s
        .http
        .post(s.at("/api/sync/push"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(s.stats().await["push_requests"], 0);
    s.stop().await;
}

#[tokio::test]
async fn malformed_json_or_shape_is_400_with_an_error_body() {
    let s = TestServer::default("bad-json").await;
    for text in [
        "{not json",
        r#"{"client_id":"c1"}"#,
        r#"{"client_id":"c1","mutations":[{"seq":1}]}"#,
        r#"{"client_id":"c1","mutations":[],"extra":1}"#,
    ] {
        let resp = s
            .http
            .post(s.at("/api/sync/push"))
            .header("content-type", "application/json")
            .body(text)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{text}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(code(&body), "malformed_body");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }
    s.stop().await;
}

#[tokio::test]
async fn a_batch_breaking_whole_request_rules_is_400_and_stores_nothing() {
    let s = TestServer::default("whole-request").await;
    let cases = [
        (
            "c1",
            vec![
                put("c1", 1, "a", json!(1), T0),
                put("c2", 2, "b", json!(1), T0),
            ],
        ),
        (
            "c1",
            vec![
                put("c1", 2, "a", json!(1), T0),
                put("c1", 1, "b", json!(1), T0),
            ],
        ),
        (
            "c1",
            vec![
                put("c1", 1, "a", json!(1), T0),
                put("c1", 1, "b", json!(1), T0),
            ],
        ),
        ("bad id!", vec![put("bad id!", 1, "a", json!(1), T0)]),
        ("c1", vec![]),
    ];
    for (client, batch) in cases {
        let (status, body) = s.push(client, batch).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(code(&body), "invalid_request");
    }
    let (_, pull) = s.get_json("/api/sync/pull").await;
    assert!(pull["changes"].as_array().unwrap().is_empty());
    s.stop().await;
}

#[tokio::test]
async fn a_push_that_is_not_application_json_is_415() {
    let s = TestServer::default("content-type").await;
    let body =
        json!({"client_id": "c1", "mutations": [put("c1", 1, "a", json!(1), T0)]}).to_string();
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut req = s.http.post(s.at("/api/sync/push")).body(body.clone());
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(code(&err), "unsupported_media_type");
    }
    let resp = s
        .http
        .post(s.at("/api/sync/push"))
        .header("content-type", "application/json; charset=utf-8")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "a charset parameter is fine");
    s.stop().await;
}

#[tokio::test]
async fn concurrent_pushes_of_the_same_batch_apply_each_mutation_once() {
    let s = TestServer::default("concurrent").await;
    let batch: Vec<Value> = (1..=50)
        .map(|i| put("c1", i, &format!("k{i}"), json!(i), T0))
        .collect();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (http, url, batch) = (s.http.clone(), s.at("/api/sync/push"), batch.clone());
        tasks.push(tokio::spawn(async move {
            let resp = http
                .post(url)
                .json(&json!({"client_id": "c1", "mutations": batch}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats = s.stats().await;
    assert_eq!(stats["mutations_applied"], 50);
    assert_eq!(stats["duplicates"], 350);
    assert_eq!(s.mutations_of("c1").await.len(), 50);
    s.stop().await;
}
