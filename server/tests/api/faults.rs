//! The test endpoints: fault rules, stats, recorded mutations, reset.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

async fn add_rules(s: &TestServer, rules: Value) {
    let (status, body) = s
        .post_json("/api/test/faults", &json!({ "rules": rules }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn fault_rules_answer_their_status_in_order_without_touching_the_database() {
    let s = TestServer::default("faults").await;
    add_rules(
        &s,
        json!([
            {"path": "/api/sync/push", "status": 503, "retry_after": "2", "times": 2},
            {"path": "/api/sync/push", "status": 429, "retry_after": 7, "body": "slow down"},
            {"path": "/api/sync/push", "status": 401},
        ]),
    )
    .await;
    let batch = vec![put("c1", 1, "a", json!(1), T0)];
    let push = || {
        s.http
            .post(s.at("/api/sync/push"))
            .json(&json!({"client_id": "c1", "mutations": batch}))
    };

    for _ in 0..2 {
        let resp = push().send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()["retry-after"], "2");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(code(&body), "injected_fault");
    }
    let resp = push().send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "7");
    assert_eq!(resp.text().await.unwrap(), "slow down");
    let resp = push().send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let stats = s.stats().await;
    assert_eq!(
        stats["push_requests"], 0,
        "faulted requests never reach the database"
    );
    assert_eq!(stats["mutations_applied"], 0);
    assert_eq!(stats["faults_served"], 4);

    let resp = push().send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "rules are used up");
    assert_eq!(s.stats().await["mutations_applied"], 1);
    s.stop().await;
}

#[tokio::test]
async fn fault_rules_match_their_path_only_and_can_be_listed_and_cleared() {
    let s = TestServer::default("faults-clear").await;
    add_rules(
        &s,
        json!([{"path": "/api/sync/pull", "status": 500, "times": 3}]),
    )
    .await;
    let (status, _) = s.get_json("/api/health").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s.get_json("/api/sync/pull").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let (_, list) = s.get_json("/api/test/faults").await;
    assert_eq!(list["rules"][0]["times"], 2);

    let resp = s
        .http
        .delete(s.at("/api/test/faults"))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.json::<Value>().await.unwrap()["cleared"], 1);
    let (status, _) = s.get_json("/api/sync/pull").await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = s
        .post_json(
            "/api/test/faults",
            &json!({"rules": [{"path": "/api/sync/push", "status": 42}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    s.stop().await;
}

#[tokio::test]
async fn a_delayed_push_is_applied_even_when_the_client_gives_up_waiting() {
    let s = TestServer::default("delay").await;
    add_rules(&s, json!([{"path": "/api/sync/push", "delay_ms": 1500}])).await;
    let batch = vec![put("c1", 1, "a", json!(1), T0)];
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = impatient
        .post(s.at("/api/sync/push"))
        .json(&json!({"client_id": "c1", "mutations": batch}))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(started.elapsed() < Duration::from_millis(1500));

    // The worker "restarts" and sends the batch again: it was applied once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = s.push_ok("c1", batch).await;
    assert_eq!(statuses(&again), ["duplicate"]);
    let rows = s.mutations_of("c1").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["status"], "applied");
    s.stop().await;
}

#[tokio::test]
async fn a_delayed_fault_holds_its_answer() {
    let s = TestServer::default("delay-fault").await;
    add_rules(
        &s,
        json!([{"path": "/api/sync/push", "status": 503, "delay_ms": 300}]),
    )
    .await;
    let started = Instant::now();
    let (status, _) = s.push("c1", vec![put("c1", 1, "a", json!(1), T0)]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() >= Duration::from_millis(300));
    s.stop().await;
}

#[tokio::test]
async fn recorded_mutations_are_listed_per_client_in_seq_order_and_reset_wipes_everything() {
    let s = TestServer::default("reset").await;
    s.push_ok(
        "c1",
        vec![
            put("c1", 1, "a", json!(1), T0),
            put("c1", 2, "b", json!(1), T0),
        ],
    )
    .await;
    s.push_ok("c2", vec![put("c2", 1, "a", json!(2), T0 - 1)])
        .await;
    s.push_ok("c1", vec![put("c1", 3, "c", json!(1), T0)]).await;
    let rows = s.mutations_of("c1").await;
    let seqs: Vec<u64> = rows.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(rows[0]["collection"], "notes");
    assert_eq!(rows[0]["key"], "a");
    assert_eq!(rows[0]["op"], "put");
    assert!(rows[0]["version"].as_u64().is_some());
    let c2 = s.mutations_of("c2").await;
    assert_eq!(c2[0]["status"], "conflict");
    let (status, _) = s.get_json("/api/test/mutations").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "client_id is required");

    let (_, before) = s.get_json("/api/sync/pull").await;
    let (status, _) = s.post_json("/api/test/reset", &json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert!(s.mutations_of("c1").await.is_empty());
    let stats = s.stats().await;
    assert_eq!(stats["mutations_applied"], 0);
    assert_eq!(stats["captured"], json!([]));
    let (_, after) = s.get_json("/api/sync/pull").await;
    assert_eq!(after["changes"], json!([]));

    // Versions keep growing after a reset, so old cursors never hide new changes.
    let results = s.push_ok("c1", vec![put("c1", 1, "a", json!(1), T0)]).await;
    let old_cursor: u64 = before["cursor"].as_str().unwrap().parse().unwrap();
    assert!(results[0]["version"].as_u64().unwrap() > old_cursor);
    s.stop().await;
}

#[tokio::test]
async fn test_endpoints_are_404_unless_enabled() {
    let s = TestServer::start("no-test", |o| o.test_endpoints = false).await;
    for path in [
        "/api/test/stats",
        "/api/test/mutations?client_id=c1",
        "/api/test/no-store",
    ] {
        let (status, body) = s.get_json(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(code(&body), "not_found");
    }
    let (status, _) = s.post_json("/api/test/faults", &json!({"rules": []})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = s.post_json("/api/test/reset", &json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    s.stop().await;
}

#[tokio::test]
async fn the_no_store_test_page_forbids_every_cache() {
    let s = TestServer::default("no-store").await;
    let resp = s.http.get(s.at("/api/test/no-store")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    s.stop().await;
}
