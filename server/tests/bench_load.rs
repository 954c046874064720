//! The load benchmark behind `cargo xtask bench --load` (ignored in normal test runs): many
//! clients at once against one release server with its default limits, each pushing small
//! batches and pulling the feed in turn for a fixed time, as a fleet of workers syncing does.
//! It measures latency (p50, p99), requests per second and every answer that was not a 2xx,
//! then checks that nothing was lost: every mutation a push answered `applied` (or, resent
//! after a failed attempt, `duplicate`) is in the server's pull feed.
//!
//! A client does what the real one does with a failed push: it waits `Retry-After` when a 503
//! says so (else a short pause) and sends the same batch again, so its seqs stay in order and
//! the server's dedup is exercised. Prints a Markdown table between `BENCH-TABLE` lines.
//!
//! `RANGERSYNC_BENCH_CLIENTS` (default 200), `RANGERSYNC_BENCH_SECS` (default 60) size it;
//! `RANGERSYNC_BENCH_POSTGRES=1` adds a run on PostgreSQL after the SQLite one.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use rangersync_server::test_postgres;
use serde_json::{json, Value};
use support::{env_number, Instance};

/// Mutations per push: a worker's burst of a few writes.
const BATCH: usize = 5;
/// Changes per pull page.
const PULL_LIMIT: usize = 100;
/// The pause before resending after a failure that named no `Retry-After`.
const PAUSE_WITHOUT_RETRY_AFTER: Duration = Duration::from_millis(200);

/// What one client saw.
#[derive(Default)]
struct Tally {
    push_latencies: Vec<Duration>,
    pull_latencies: Vec<Duration>,
    /// Non-2xx answers by status, and 503s by error code.
    statuses: BTreeMap<u16, usize>,
    unavailable_by_code: BTreeMap<String, usize>,
    /// Requests that got no HTTP answer at all.
    transport_errors: usize,
    /// Keys of the mutations the server acknowledged.
    acknowledged: Vec<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.push_latencies.extend(other.push_latencies);
        self.pull_latencies.extend(other.pull_latencies);
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        for (code, n) in other.unavailable_by_code {
            *self.unavailable_by_code.entry(code).or_default() += n;
        }
        self.transport_errors += other.transport_errors;
        self.acknowledged.extend(other.acknowledged);
    }

    /// Count a non-2xx answer; how long to wait before resending.
    async fn refused(&mut self, resp: reqwest::Response) -> Duration {
        let status = resp.status().as_u16();
        *self.statuses.entry(status).or_default() += 1;
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .map(Duration::from_secs);
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status == 503 {
            let code = body["error"]["code"].as_str().unwrap_or("?").to_owned();
            *self.unavailable_by_code.entry(code).or_default() += 1;
        }
        retry_after.unwrap_or(PAUSE_WITHOUT_RETRY_AFTER)
    }
}

fn push_body(client: &str, first_seq: u64) -> String {
    let mutations: Vec<Value> = (first_seq..first_seq + BATCH as u64)
        .map(|seq| {
            json!({
                "client_id": client, "seq": seq, "collection": "load",
                "key": format!("{client}-{seq}"), "op": "put",
                "value": { "title": format!("note {seq}"), "body": "x".repeat(64) },
                "updated_at": 1_764_000_000_000u64 + seq,
            })
        })
        .collect();
    json!({ "client_id": client, "mutations": mutations }).to_string()
}

/// One client until `deadline`: push a batch (resent until answered), pull a page, repeat.
async fn run_client(
    http: reqwest::Client,
    url: String,
    client: String,
    deadline: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let mut next_seq = 1u64;
    let mut cursor = String::new();
    while Instant::now() < deadline {
        let body = push_body(&client, next_seq);
        let mut resent = false;
        loop {
            if Instant::now() >= deadline {
                return tally;
            }
            let t = Instant::now();
            let sent = http
                .post(format!("{url}/api/sync/push"))
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            let resp = match sent {
                Ok(resp) => resp,
                Err(_) => {
                    tally.transport_errors += 1;
                    tokio::time::sleep(PAUSE_WITHOUT_RETRY_AFTER).await;
                    resent = true;
                    continue;
                }
            };
            if !resp.status().is_success() {
                let wait = tally.refused(resp).await;
                tokio::time::sleep(wait).await;
                resent = true;
                continue;
            }
            let answer: Value = resp.json().await.expect("a push answer");
            tally.push_latencies.push(t.elapsed());
            for result in answer["results"].as_array().expect("results") {
                let seq = result["seq"].as_u64().expect("a seq");
                match result["status"].as_str() {
                    Some("applied") => {}
                    // An earlier attempt was applied but its answer lost.
                    Some("duplicate") if resent => {}
                    other => panic!("{client} seq {seq}: unexpected result {other:?}: {answer}"),
                }
                tally.acknowledged.push(format!("{client}-{seq}"));
            }
            break;
        }
        next_seq += BATCH as u64;

        let t = Instant::now();
        match http
            .get(format!(
                "{url}/api/sync/pull?since={cursor}&limit={PULL_LIMIT}"
            ))
            .send()
            .await
        {
            Ok(resp) if resp.status().is_success() => {
                let page: Value = resp.json().await.expect("a pull page");
                tally.pull_latencies.push(t.elapsed());
                cursor = page["cursor"].as_str().expect("a cursor").to_owned();
            }
            Ok(resp) => {
                let wait = tally.refused(resp).await;
                tokio::time::sleep(wait).await;
            }
            Err(_) => tally.transport_errors += 1,
        }
    }
    tally
}

/// Every key in the feed, read from the start.
async fn feed_keys(http: &reqwest::Client, url: &str) -> HashSet<String> {
    let mut keys = HashSet::new();
    let mut cursor = String::new();
    loop {
        let page: Value = http
            .get(format!("{url}/api/sync/pull?since={cursor}&limit=1000"))
            .send()
            .await
            .expect("a pull")
            .error_for_status()
            .expect("a pull page")
            .json()
            .await
            .expect("a pull page");
        for change in page["changes"].as_array().expect("changes") {
            keys.insert(change["key"].as_str().expect("a key").to_owned());
        }
        cursor = page["cursor"].as_str().expect("a cursor").to_owned();
        if !page["has_more"].as_bool().expect("has_more") {
            return keys;
        }
    }
}

fn percentile(sorted: &[Duration], p: usize) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// One backend's run, as a table row.
async fn run(
    backend: &str,
    db: &str,
    limits: &[&str],
    clients: usize,
    secs: u64,
) -> (String, String) {
    let args: Vec<&str> = std::iter::once("--test-endpoints")
        .chain(limits.iter().copied())
        .collect();
    let server = Instance::start(db, &args);
    let url = server.url();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            tokio::spawn(run_client(
                http.clone(),
                url.clone(),
                format!("load-{c:03}"),
                deadline,
            ))
        })
        .collect();
    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(task.await.expect("a client task"));
    }
    let elapsed = start.elapsed().as_secs_f64();

    let feed = feed_keys(&http, &url).await;
    let lost: Vec<&String> = tally
        .acknowledged
        .iter()
        .filter(|k| !feed.contains(*k))
        .collect();
    let acknowledged: HashSet<&String> = tally.acknowledged.iter().collect();
    let stats: Value = http
        .get(format!("{url}/api/test/stats"))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("stats");
    let wal = std::fs::metadata(format!("{db}-wal")).map(|m| m.len()).ok();
    drop(server);

    tally.push_latencies.sort();
    tally.pull_latencies.sort();
    let answered = tally.push_latencies.len() + tally.pull_latencies.len();
    let refused: usize = tally.statuses.values().sum();
    let requests = answered + refused + tally.transport_errors;
    let non_2xx = if tally.statuses.is_empty() {
        "none".to_owned()
    } else {
        tally
            .statuses
            .iter()
            .map(|(status, n)| format!("{status}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let unavailable = if tally.unavailable_by_code.is_empty() {
        "0".to_owned()
    } else {
        tally
            .unavailable_by_code
            .iter()
            .map(|(code, n)| format!("{n} {code}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    eprintln!(
        "{backend}: {requests} requests in {elapsed:.1} s, {} acknowledged, {} in the feed, \
         stats {stats}",
        acknowledged.len(),
        feed.len()
    );
    let row = format!(
        "| {backend} | {clients} × {secs} s | {requests} | {:.0} | {:.0} / {:.0} | {:.0} / {:.0} | {non_2xx} | {unavailable} | {} | {} | {} | {} |",
        requests as f64 / elapsed,
        percentile(&tally.push_latencies, 50),
        percentile(&tally.push_latencies, 99),
        percentile(&tally.pull_latencies, 50),
        percentile(&tally.pull_latencies, 99),
        tally.transport_errors,
        acknowledged.len(),
        feed.len(),
        lost.len(),
    );
    let note = match wal {
        Some(bytes) => format!(
            "{backend}: the write-ahead log (`-wal` file) was {:.1} MiB at the end of the run.",
            bytes as f64 / 1024.0 / 1024.0
        ),
        None => String::new(),
    };
    assert!(
        lost.is_empty(),
        "{backend}: {} acknowledged mutations are not in the feed, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    (row, note)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: run by `cargo xtask bench --load`"]
async fn many_clients_pushing_and_pulling_at_once_lose_nothing_and_are_answered_within_the_limits()
{
    let clients = env_number("RANGERSYNC_BENCH_CLIENTS", 200);
    let secs = env_number("RANGERSYNC_BENCH_SECS", 60) as u64;
    let postgres = std::env::var("RANGERSYNC_BENCH_POSTGRES").is_ok_and(|v| v == "1");
    let scratch = std::env::temp_dir().join(format!("rangersync-load-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let mut rows = vec![
        run(
            "SQLite",
            &scratch.join("load.db").display().to_string(),
            &[],
            clients,
            secs,
        )
        .await,
    ];
    // The same load against a limit below it: the overload answer under real traffic, and
    // the clients' resends after its `Retry-After`.
    let overloaded_limit = (clients / 4).max(1).to_string();
    rows.push(
        run(
            &format!("SQLite, `--max-concurrent-requests {overloaded_limit}`"),
            &scratch.join("load-overloaded.db").display().to_string(),
            &["--max-concurrent-requests", &overloaded_limit],
            clients,
            secs,
        )
        .await,
    );
    if postgres {
        let db = test_postgres::fresh_database()
            .await
            .unwrap_or_else(|e| panic!("the PostgreSQL run needs PostgreSQL: {e}"));
        rows.push(run("PostgreSQL", &db, &[], clients, secs).await);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    println!("BENCH-TABLE");
    println!(
        "{clients} concurrent clients for {secs} s against one release server with its default \
         limits (`--max-concurrent-requests 256`, `--request-timeout-secs 30`) unless the row \
         names another (a limit below the load, to show the overload answer), loopback, the \
         load generator on the same cores. Each client pushes a batch of {BATCH} new mutations \
         (resent after a refusal, waiting its `Retry-After`), then pulls a page of at most \
         {PULL_LIMIT} changes from its cursor, and again. Latencies are of answered requests; \
         \"lost\" counts acknowledged mutations missing from the pull feed read from the start \
         afterwards."
    );
    println!();
    println!(
        "| backend | clients × time | requests | requests/s | push p50 / p99 (ms) | pull p50 / p99 (ms) | non-2xx by status | of which 503 | no answer | mutations acknowledged | in the feed | lost |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (row, _) in &rows {
        println!("{row}");
    }
    let notes: Vec<&String> = rows
        .iter()
        .map(|(_, n)| n)
        .filter(|n| !n.is_empty())
        .collect();
    if !notes.is_empty() {
        println!();
        for note in notes {
            println!("{note}");
        }
    }
    println!("BENCH-TABLE");
}
