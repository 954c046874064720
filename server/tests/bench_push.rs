//! The push benchmark behind `cargo xtask bench --server` (ignored in normal test runs):
//! 50 concurrent clients push new mutations, then send them all again, to SQLite (one
//! instance) and to 1, 2 and 3 instances on one PostgreSQL database; each request goes to
//! the next instance in turn. Prints a Markdown table between `BENCH-TABLE` lines.
//!
//! `RANGERSYNC_BENCH_BATCHES` (per client, default 10) and `RANGERSYNC_BENCH_BATCH` (mutations
//! per batch, default 40) size it. `RANGERSYNC_BENCH_ONLY=sqlite` (or `postgres`) runs one
//! backend only, for profiling.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rangersync_server::test_postgres;
use serde_json::{json, Value};
use support::{env_number, Instance};

const CLIENTS: usize = 50;

/// One phase's numbers.
struct Phase {
    mutations_per_second: f64,
    p99: Duration,
}

/// Every client sends its batches in order (the next after the answer), round-robin over
/// `urls`; every result must be `expected`.
async fn run_phase(urls: &[String], bodies: &Arc<Vec<Vec<String>>>, expected: &str) -> Phase {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let (http, urls, bodies, expected) = (
            http.clone(),
            urls.to_vec(),
            bodies.clone(),
            expected.to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut sent = 0;
            for (i, body) in bodies[client].iter().enumerate() {
                let url = &urls[(client + i) % urls.len()];
                let t = Instant::now();
                let resp = http
                    .post(format!("{url}/api/sync/push"))
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("push sent");
                assert!(
                    resp.status().is_success(),
                    "push answered {}",
                    resp.status()
                );
                let answer: Value = resp.json().await.expect("a push answer");
                latencies.push(t.elapsed());
                let results = answer["results"].as_array().expect("results");
                assert!(
                    results.iter().all(|r| r["status"] == expected.as_str()),
                    "expected {expected}: {answer}"
                );
                sent += results.len();
            }
            (sent, latencies)
        }));
    }
    let mut total = 0;
    let mut latencies = Vec::new();
    for task in tasks {
        let (sent, l) = task.await.unwrap();
        total += sent;
        latencies.extend(l);
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort();
    let p99 = latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)];
    Phase {
        mutations_per_second: total as f64 / elapsed,
        p99,
    }
}

fn bodies(batches: usize, batch: usize) -> Arc<Vec<Vec<String>>> {
    Arc::new(
        (0..CLIENTS)
            .map(|c| {
                let client = format!("bench-{c:02}");
                (0..batches)
                    .map(|b| {
                        let mutations: Vec<Value> = (0..batch)
                            .map(|i| {
                                let seq = b * batch + i + 1;
                                json!({
                                    "client_id": client, "seq": seq, "collection": "bench",
                                    // Each client its own notes, rewritten now and then.
                                    "key": format!("{client}-{}", seq % 200),
                                    "op": "put",
                                    "value": { "title": format!("note {seq}"), "body": "x".repeat(64) },
                                    "updated_at": 1_764_000_000_000u64 + seq as u64,
                                })
                            })
                            .collect();
                        json!({ "client_id": client, "mutations": mutations }).to_string()
                    })
                    .collect()
            })
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: run by `cargo xtask bench --server`"]
async fn push_throughput_on_sqlite_and_on_one_two_and_three_postgres_instances() {
    let batches = env_number("RANGERSYNC_BENCH_BATCHES", 10);
    let batch = env_number("RANGERSYNC_BENCH_BATCH", 40);
    let bodies = bodies(batches, batch);
    let scratch = std::env::temp_dir().join(format!("rangersync-bench-{}", std::process::id()));
    let mut rows = Vec::new();
    for (backend, instances) in [
        ("SQLite", 1),
        ("PostgreSQL", 1),
        ("PostgreSQL", 2),
        ("PostgreSQL", 3),
    ] {
        if let Ok(only) = std::env::var("RANGERSYNC_BENCH_ONLY") {
            if !backend
                .to_ascii_lowercase()
                .starts_with(&only.to_ascii_lowercase())
            {
                continue;
            }
        }
        let db = if backend == "SQLite" {
            scratch.join("bench.db").display().to_string()
        } else {
            test_postgres::fresh_database()
                .await
                .unwrap_or_else(|e| panic!("the benchmark needs PostgreSQL: {e}"))
        };
        let servers: Vec<Instance> = (0..instances).map(|_| Instance::start(&db, &[])).collect();
        let urls: Vec<String> = servers.iter().map(Instance::url).collect();
        let new = run_phase(&urls, &bodies, "applied").await;
        let resent = run_phase(&urls, &bodies, "duplicate").await;
        eprintln!(
            "{backend} ×{instances}: {:.0} new/s, {:.0} resent/s",
            new.mutations_per_second, resent.mutations_per_second
        );
        rows.push(format!(
            "| {backend} | {instances} | {:.0} | {:.0} | {:.0} | {:.0} |",
            new.mutations_per_second,
            resent.mutations_per_second,
            new.p99.as_secs_f64() * 1000.0,
            resent.p99.as_secs_f64() * 1000.0,
        ));
        drop(servers);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    println!("BENCH-TABLE");
    println!(
        "{CLIENTS} concurrent clients, each {batches} batches of {batch} mutations ({} in all), \
         round-robin over the instances, release build, loopback.",
        CLIENTS * batches * batch
    );
    println!();
    println!("| backend | instances | new mutations/s | resent mutations/s | p99 new (ms) | p99 resent (ms) |");
    println!("|---|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    println!("BENCH-TABLE");
}
