//! PostgreSQL only: the database connection dies in the middle of a batch.

use rangersync_server::DbLocation;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_postgres::NoTls;

use crate::common::*;

/// Terminates every other connection to the test's database, over and over, until stopped.
async fn cut_connections(url: String, stop: tokio::sync::oneshot::Receiver<()>) -> u64 {
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    let mut stop = stop;
    let mut cut = 0;
    loop {
        let rows = client
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap();
        cut += rows.len() as u64;
        tokio::select! {
            _ = &mut stop => return cut,
            () = tokio::time::sleep(std::time::Duration::from_millis(30)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_mid_batch_leaves_nothing_half_applied_and_the_resend_applies_it_once() {
    let s = TestServer::default("connection-loss").await;
    let DbLocation::Postgres(url) = s.opts.db.clone() else {
        panic!("a PostgreSQL test");
    };
    let batch: Vec<Value> = (1..=1000u64)
        .map(|i| put("c1", i, &format!("k{i}"), json!({ "n": i }), T0))
        .collect();
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let cutter = tokio::spawn(cut_connections(url, stopped));
    let (status, body) = s.push("c1", batch.clone()).await;
    let _ = stop.send(());
    let cut = cutter.await.unwrap();
    assert!(cut > 0, "connections were cut");

    let (_, feed) = s.get_json("/api/sync/pull?limit=1000").await;
    let stored = feed["changes"].as_array().unwrap().len();
    match status {
        StatusCode::OK => assert_eq!(stored, 1000, "{body}"),
        StatusCode::INTERNAL_SERVER_ERROR => {
            assert_eq!(code(&body), "internal");
            assert_eq!(stored, 0, "nothing of the cut batch is stored");
            assert!(s.mutations_of("c1").await.is_empty());
        }
        other => panic!("unexpected {other}: {body}"),
    }

    // The client sends it again, as the outbox does after a 500.
    let again = s.push_ok("c1", batch).await;
    let applied_now = statuses(&again).iter().filter(|s| **s == "applied").count();
    assert_eq!(
        applied_now + stored,
        1000,
        "each mutation applied exactly once"
    );
    assert_eq!(s.stats().await["mutations_applied"], 1000);
    s.stop().await;
}
