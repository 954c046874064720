//! RangerPlex's captured routes.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

async fn send(s: &TestServer, path: &str, key: Option<&str>, body: &Value) -> (StatusCode, Value) {
    let mut req = s.http.post(s.at(path)).json(body);
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn a_repeated_idempotency_key_is_stored_once() {
    let s = TestServer::default("captured").await;
    let msg = json!({"message": "hello", "n": 1});
    let (status, first) = send(&s, "/api/sync/chat", Some("c1:7"), &msg).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first, json!({"stored": true, "duplicate": false}));
    let (status, again) = send(&s, "/api/sync/chat", Some("c1:7"), &msg).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, json!({"stored": true, "duplicate": true}));

    let (_, other) = send(
        &s,
        "/api/sync/settings",
        Some("c1:8"),
        &json!({"theme": "dark"}),
    )
    .await;
    assert_eq!(other["duplicate"], false);
    // Without a key every request is stored.
    send(&s, "/api/sync/settings", None, &json!({"theme": "light"})).await;
    send(&s, "/api/sync/settings", None, &json!({"theme": "light"})).await;

    let captured = s.stats().await["captured"].clone();
    assert_eq!(
        captured,
        json!([
            {"path": "/api/sync/chat", "idempotency_key": "c1:7", "body": msg},
            {"path": "/api/sync/settings", "idempotency_key": "c1:8", "body": {"theme": "dark"}},
            {"path": "/api/sync/settings", "idempotency_key": null, "body": {"theme": "light"}},
            {"path": "/api/sync/settings", "idempotency_key": null, "body": {"theme": "light"}},
        ])
    );
    s.stop().await;
}

#[tokio::test]
async fn a_captured_route_refuses_non_json_and_oversize_bodies() {
    let s = TestServer::default("captured-bad").await;
    let resp = s
        .http
        .post(s.at("/api/sync/chat"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let resp = s
        .http
        .post(s.at("/api/sync/chat"))
        .header("content-type", "application/json")
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let big = json!({"blob": "x".repeat(1024 * 1024 + 1)});
    let (status, body) = send(&s, "/api/sync/chat", Some("k"), &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(code(&body), "payload_too_large");
    assert_eq!(s.stats().await["captured"], json!([]));
    s.stop().await;
}
