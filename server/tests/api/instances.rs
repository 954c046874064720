//! Two instances on one database, pushed and pulled at the same time: what a load balancer
//! in front of several servers does to the protocol.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rangersync_shared::conflict::Stamp;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_resent_to_another_instance_while_the_first_commits_is_applied_once() {
    let a = TestServer::default("resend-a").await;
    let b = a.another_instance().await;
    for round in 0..10u64 {
        let batch: Vec<Value> = (1..=100u64)
            .map(|i| {
                put(
                    "c1",
                    round * 100 + i,
                    &format!("k{i}"),
                    json!(round),
                    T0 + round as i64,
                )
            })
            .collect();
        let ((sa, ra), (sb, rb)) =
            tokio::join!(a.push("c1", batch.clone()), b.push("c1", batch.clone()));
        assert_eq!((sa, sb), (StatusCode::OK, StatusCode::OK), "{ra} {rb}");
        let (ra, rb) = (
            ra["results"].as_array().unwrap(),
            rb["results"].as_array().unwrap(),
        );
        for (x, y) in ra.iter().zip(rb) {
            let mut pair = [x["status"].as_str().unwrap(), y["status"].as_str().unwrap()];
            pair.sort_unstable();
            assert_eq!(pair, ["applied", "duplicate"], "{x} {y}");
        }
    }
    let stats = b.stats().await;
    assert_eq!(stats["mutations_applied"], 1000);
    assert_eq!(stats["duplicates"], 1000);
    assert_eq!(a.mutations_of("c1").await.len(), 1000);
    b.stop().await;
    a.stop().await;
}

/// Pulls from `servers` in turn (one page each) from cursor 0 until `done` is set and a
/// page comes back empty; returns every key it was given.
async fn follow_the_feed(servers: [&TestServer; 2], done: &AtomicBool) -> BTreeSet<String> {
    let mut cursor = String::new();
    let mut seen = BTreeSet::new();
    for turn in 0usize.. {
        let finished = done.load(Ordering::SeqCst);
        let server = servers[turn % 2];
        let (status, page) = server
            .get_json(&format!("/api/sync/pull?since={cursor}&limit=37"))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let changes = page["changes"].as_array().unwrap();
        for change in changes {
            seen.insert(change["key"].as_str().unwrap().to_owned());
        }
        let next = page["cursor"].as_str().unwrap().to_owned();
        assert!(
            next.parse::<u64>().unwrap() >= cursor.parse::<u64>().unwrap_or(0),
            "the cursor never goes back"
        );
        cursor = next;
        if finished && changes.is_empty() {
            break;
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pull_racing_concurrent_pushes_on_two_instances_never_skips_a_change() {
    let a = Arc::new(TestServer::default("feed-a").await);
    let b = Arc::new(a.another_instance().await);
    let done = Arc::new(AtomicBool::new(false));
    let follower = {
        let (a, b, done) = (a.clone(), b.clone(), done.clone());
        tokio::spawn(async move { follow_the_feed([&a, &b], &done).await })
    };
    let mut writers = Vec::new();
    for w in 0..8u64 {
        let target = if w % 2 == 0 { a.clone() } else { b.clone() };
        writers.push(tokio::spawn(async move {
            let client = format!("w{w}");
            let mut keys = Vec::new();
            for batch in 0..25u64 {
                let mutations: Vec<Value> = (1..=4u64)
                    .map(|i| {
                        let seq = batch * 4 + i;
                        keys.push(format!("{client}-{seq}"));
                        put(&client, seq, &format!("{client}-{seq}"), json!(seq), T0)
                    })
                    .collect();
                let results = target.push_ok(&client, mutations).await;
                assert!(statuses(&results).iter().all(|s| *s == "applied"));
            }
            keys
        }));
    }
    let mut written = BTreeSet::new();
    for writer in writers {
        written.extend(writer.await.unwrap());
    }
    done.store(true, Ordering::SeqCst);
    let seen = follower.await.unwrap();
    assert_eq!(written.len(), 800);
    let missed: Vec<&String> = written.difference(&seen).collect();
    assert!(missed.is_empty(), "the feed skipped {missed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_racing_on_one_entity_through_two_instances_converge_to_the_greatest_stamp() {
    let a = Arc::new(TestServer::default("race-a").await);
    let b = Arc::new(a.another_instance().await);
    let mut writers = Vec::new();
    for w in 0..10u64 {
        let (a, b) = (a.clone(), b.clone());
        writers.push(tokio::spawn(async move {
            let client = format!("r{w}");
            let mut stamps = Vec::new();
            for seq in 1..=20u64 {
                // Many equal times, so client_id and seq break the ties.
                let updated_at = T0 + ((w * 7 + seq * 13) % 9) as i64;
                let target = if (w + seq) % 2 == 0 { &a } else { &b };
                let results = target
                    .push_ok(
                        &client,
                        vec![put(&client, seq, "shared", json!([w, seq]), updated_at)],
                    )
                    .await;
                assert!(["applied", "conflict"].contains(&statuses(&results)[0]));
                stamps.push(Stamp {
                    updated_at,
                    client_id: client.clone(),
                    seq,
                });
            }
            stamps
        }));
    }
    let mut greatest: Option<Stamp> = None;
    for writer in writers {
        for stamp in writer.await.unwrap() {
            if greatest.as_ref().is_none_or(|g| stamp > *g) {
                greatest = Some(stamp);
            }
        }
    }
    let greatest = greatest.unwrap();
    let (_, from_a) = a.get_json("/api/sync/pull").await;
    let (_, from_b) = b.get_json("/api/sync/pull").await;
    assert_eq!(from_a, from_b, "every instance serves the same feed");
    let entity = &from_a["changes"][0];
    let w: u64 = greatest.client_id[1..].parse().unwrap();
    assert_eq!(entity["value"], json!([w, greatest.seq]));
    assert_eq!(entity["updated_at"], greatest.updated_at);
}
