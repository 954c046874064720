//! Retention: what pruning forgets, and the answers that stay the same after it
//! (`/api/test/prune` runs the hourly pruner now).

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

impl TestServer {
    /// Prune what was received before `before` (milliseconds; `None`: everything so far).
    async fn prune(&self, before: Option<u64>) -> Value {
        let path = match before {
            Some(ms) => format!("/api/test/prune?before={ms}"),
            None => "/api/test/prune".to_owned(),
        };
        let (status, pruned) = self.post_json(&path, &json!({})).await;
        assert_eq!(status, StatusCode::OK, "{pruned}");
        pruned
    }
}

fn millis_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn a_resend_of_a_pruned_seq_is_still_a_duplicate_and_changes_nothing() {
    let s = TestServer::default("pruned-dedup").await;
    s.push_ok(
        "c1",
        (1..=3)
            .map(|i| put("c1", i, &format!("k{i}"), json!(i), T0))
            .collect(),
    )
    .await;
    let pruned = s.prune(None).await;
    assert_eq!(pruned["mutations"], 3, "{pruned}");
    assert!(
        s.mutations_of("c1").await.is_empty(),
        "the records are gone"
    );

    // The same seq again, even with another value and a newer stamp: nothing changes.
    let again = s
        .push_ok("c1", vec![put("c1", 2, "k2", json!("changed"), T0 + 10)])
        .await;
    assert_eq!(statuses(&again), ["duplicate"]);
    let (changes, _) = s.pull_all("").await;
    let k2 = changes.iter().find(|c| c["key"] == "k2").unwrap();
    assert_eq!(k2["value"], 2);
    // A new seq is applied as ever, and another client's seq 2 is its own.
    let next = s
        .push_ok("c1", vec![put("c1", 4, "k2", json!("new"), T0 + 10)])
        .await;
    assert_eq!(statuses(&next), ["applied"]);
    let other = s.push_ok("c2", vec![put("c2", 2, "x", json!(1), T0)]).await;
    assert_eq!(statuses(&other), ["applied"]);
    s.stop().await;
}

#[tokio::test]
async fn a_rejected_or_conflicted_record_is_kept_so_its_resend_still_hears_the_same() {
    let s = TestServer::default("pruned-rejected").await;
    let mut bad = put("c1", 2, "k", json!(1), T0);
    bad["collection"] = json!("Bad Collection!");
    s.push_ok("c2", vec![put("c2", 1, "x", json!("newer"), T0 + 100)])
        .await;
    let first = s
        .push_ok(
            "c1",
            vec![
                put("c1", 1, "a", json!(1), T0),
                bad.clone(),
                put("c1", 3, "x", json!("older"), T0),
                put("c1", 4, "b", json!(1), T0),
            ],
        )
        .await;
    assert_eq!(
        statuses(&first),
        ["applied", "rejected", "conflict", "applied"]
    );
    let pruned = s.prune(None).await;
    assert_eq!(pruned["mutations"], 3, "the applied ones only: {pruned}");
    let again = s
        .push_ok(
            "c1",
            vec![
                put("c1", 1, "a", json!(1), T0),
                bad,
                put("c1", 3, "x", json!("older"), T0),
            ],
        )
        .await;
    assert_eq!(statuses(&again), ["duplicate", "rejected", "conflict"]);
    s.stop().await;
}

#[tokio::test]
async fn a_pull_from_before_a_pruned_tombstone_is_410_and_an_empty_cursor_gets_what_is_left() {
    let s = TestServer::default("pruned-tombstone").await;
    s.push_ok("c1", vec![put("c1", 1, "kept", json!(1), T0)])
        .await;
    let (_, after_first) = s.pull_all("").await;
    s.push_ok(
        "c1",
        vec![
            put("c1", 2, "gone", json!(1), T0),
            delete("c1", 3, "gone", T0 + 1),
        ],
    )
    .await;
    let (_, latest) = s.pull_all("").await;
    let pruned = s.prune(None).await;
    assert_eq!(pruned["tombstones"], 1, "{pruned}");

    let (status, body) = s
        .get_json(&format!("/api/sync/pull?since={after_first}"))
        .await;
    assert_eq!(status, StatusCode::GONE, "{body}");
    assert_eq!(code(&body), "cursor_expired");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("empty cursor"),
        "{body}"
    );
    // From the start: what is left, and no tombstone.
    let (changes, _) = s.pull_all("").await;
    let keys: Vec<&str> = changes.iter().map(|c| c["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["kept"]);
    // A cursor that saw the delete is still good.
    let (status, _) = s.get_json(&format!("/api/sync/pull?since={latest}")).await;
    assert_eq!(status, StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn pruning_keeps_what_is_newer_than_the_horizon() {
    let s = TestServer::default("pruned-horizon").await;
    s.push_ok(
        "c1",
        vec![
            put("c1", 1, "old", json!(1), T0),
            delete("c1", 2, "old", T0 + 1),
        ],
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let horizon = millis_now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    s.push_ok(
        "c1",
        vec![
            put("c1", 3, "new", json!(1), T0),
            delete("c1", 4, "new", T0 + 1),
        ],
    )
    .await;
    let pruned = s.prune(Some(horizon)).await;
    assert_eq!(
        pruned,
        json!({"mutations": 2, "tombstones": 1, "captured": 0})
    );
    let seqs: Vec<u64> = s
        .mutations_of("c1")
        .await
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [3, 4]);
    let (changes, _) = s.pull_all("").await;
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["key"], "new");
    assert_eq!(changes[0]["deleted"], true);
    // Nothing older is left: a second pass prunes nothing.
    assert_eq!(
        s.prune(Some(horizon)).await,
        json!({"mutations": 0, "tombstones": 0, "captured": 0})
    );
    s.stop().await;
}

#[tokio::test]
async fn captured_requests_are_pruned_too_and_counters_stay() {
    let s = TestServer::default("pruned-captured").await;
    let resp = s
        .http
        .post(s.at("/api/sync/chat"))
        .header("idempotency-key", "c1:1")
        .json(&json!({"message": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    s.push_ok("c1", vec![put("c1", 1, "k", json!(1), T0)]).await;
    let pruned = s.prune(None).await;
    assert_eq!(pruned["captured"], 1, "{pruned}");
    let stats = s.stats().await;
    assert_eq!(stats["captured"], json!([]), "{stats}");
    assert_eq!(stats["mutations_applied"], 1, "{stats}");
    s.stop().await;
}

#[tokio::test]
async fn another_users_pruned_tombstones_do_not_expire_my_cursor() {
    let alice = TestServer::with_users("pruned-users", |_| {}).await;
    let alice_client = alice.as_user("alice-token-0123456789");
    let bob = alice.as_user("bob-token-0123456789");
    alice_client
        .push_ok("a1", vec![put("a1", 1, "k", json!(1), T0)])
        .await;
    let (_, alice_cursor) = alice_client.pull_all("").await;
    bob.push_ok(
        "b1",
        vec![
            put("b1", 1, "x", json!(1), T0),
            delete("b1", 2, "x", T0 + 1),
        ],
    )
    .await;
    let (_, bob_first) = bob.pull_all("").await;
    let root = alice.as_user("root-token-0123456789");
    let pruned = root.prune(None).await;
    assert_eq!(pruned["tombstones"], 1, "{pruned}");
    let (status, _) = alice_client
        .get_json(&format!("/api/sync/pull?since={alice_cursor}"))
        .await;
    assert_eq!(status, StatusCode::OK, "alice lost nothing");
    // Bob's cursor after his tombstone is fine too; one from before it would not be.
    let (status, _) = bob
        .get_json(&format!("/api/sync/pull?since={bob_first}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = bob.get_json("/api/sync/pull?since=1").await;
    assert_eq!(status, StatusCode::GONE, "{body}");
    alice.stop().await;
}
