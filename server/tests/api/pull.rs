//! `GET /api/sync/pull`.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

#[tokio::test]
async fn pull_pages_through_five_changes_two_at_a_time_oldest_first() {
    let s = TestServer::default("paging").await;
    s.push_ok(
        "c1",
        (1..=5)
            .map(|i| put("c1", i, &format!("k{i}"), json!(i), T0))
            .collect(),
    )
    .await;

    let mut since = String::new();
    let mut keys = Vec::new();
    let mut pages = 0;
    loop {
        let (status, page) = s
            .get_json(&format!("/api/sync/pull?since={since}&limit=2"))
            .await;
        assert_eq!(status, StatusCode::OK);
        pages += 1;
        let changes = page["changes"].as_array().unwrap();
        assert!(changes.len() <= 2);
        keys.extend(
            changes
                .iter()
                .map(|c| c["key"].as_str().unwrap().to_owned()),
        );
        since = page["cursor"].as_str().unwrap().to_owned();
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(keys, ["k1", "k2", "k3", "k4", "k5"]);

    // Nothing new: an empty page that keeps the cursor.
    let (_, empty) = s.get_json(&format!("/api/sync/pull?since={since}")).await;
    assert_eq!(
        empty,
        json!({"changes": [], "cursor": since, "has_more": false})
    );

    // A later change shows up after the cursor.
    s.push_ok("c1", vec![put("c1", 6, "k2", json!("new"), T0 + 1)])
        .await;
    let (_, next) = s.get_json(&format!("/api/sync/pull?since={since}")).await;
    let changes = next["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["key"], "k2");
    assert_eq!(changes[0]["value"], "new");
    s.stop().await;
}

#[tokio::test]
async fn pull_gives_one_row_per_entity_with_its_latest_state() {
    let s = TestServer::default("latest").await;
    s.push_ok(
        "c1",
        vec![
            put("c1", 1, "a", json!(1), T0),
            put("c1", 2, "b", json!(1), T0),
            put("c1", 3, "a", json!(2), T0 + 1),
            delete("c1", 4, "b", T0 + 2),
        ],
    )
    .await;
    let (_, pull) = s.get_json("/api/sync/pull").await;
    let changes = pull["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[0]["key"], "a");
    assert_eq!(changes[0]["value"], 2);
    assert_eq!(changes[0]["collection"], "notes");
    assert_eq!(changes[1]["key"], "b");
    assert_eq!(changes[1]["deleted"], true);
    assert!(changes[0]["version"].as_u64() < changes[1]["version"].as_u64());
    s.stop().await;
}

#[tokio::test]
async fn an_invalid_cursor_or_limit_is_400_with_an_error_body() {
    let s = TestServer::default("bad-pull").await;
    for (query, expected) in [
        ("since=abc", "invalid_cursor"),
        ("since=-1", "invalid_cursor"),
        ("since=99999999999999999999999", "invalid_cursor"),
        ("limit=0", "bad_query"),
        ("limit=lots", "bad_query"),
    ] {
        let (status, body) = s.get_json(&format!("/api/sync/pull?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(code(&body), expected, "{query}");
    }
    let (status, body): (StatusCode, Value) = s.get_json("/api/sync/pull?limit=5000").await;
    assert_eq!(status, StatusCode::OK, "a large limit is clamped: {body}");
    s.stop().await;
}
