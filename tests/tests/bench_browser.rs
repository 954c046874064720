//! The browser half of `cargo xtask bench`: rangersync beside Workbox's background-sync
//! `Queue` (workbox-background-sync 7.4.1, bundled from npm by `bench/`), in the same headless
//! Chromium, against the same reference server (one in-process instance per peer, so each peer
//! has its own origin and storage).
//!
//! `#[ignore]`d: CI never runs it. `cargo xtask bench` runs it with `--ignored --nocapture`.
//! It measures and prints; it asserts nothing about speed. It fails only when the harness
//! itself cannot run (no wasm build, a wait that times out).
//!
//! Scenarios (N = `RANGERSYNC_BENCH_WRITES`, default 2,000; ~100-byte JSON values):
//! a) durable enqueue while the server is unreachable: rangersync `await client.put(...)`
//!    (timed in the page: includes the page → worker round trip) sequentially and 50 in
//!    flight; Workbox `queue.pushRequest({request})` (timed inside the worker), the same two ways.
//! b) delivery of everything a) queued (2N entries): rangersync flushes until `pending` is 0
//!    (batched pushes); Workbox `queue.replayRequests()` (one POST per entry to the captured-style
//!    route `POST /api/sync/chat`, with no `Idempotency-Key`, so every delivery is stored).
//! c) two `sync` events dispatched at once (CDP `ServiceWorker.dispatchSyncEvent`) on a queue of
//!    `RANGERSYNC_BENCH_SYNC_QUEUE` (500): server-side deliveries and duplicates.
//! d) the server answers 500 to the first 3 POSTs of a replay of `RANGERSYNC_BENCH_FAULT_QUEUE`
//!    (200) entries: entries lost.
//!
//! When `bench/dist/workbox-sw.js` is missing (no npm), the Workbox rows are the numbers of
//! `docs/TOOLCHAIN.md`, labelled as such.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chromiumoxide::Page;
use rangersync_e2e::{
    browser_cdp, eval, wait_for_controller, wait_until, workspace_root, www_dir, Result,
    ServiceWorkers, TestBrowser, TestServer, SYNC_TAG,
};
use serde_json::{json, Value};

/// Writes in flight in the concurrent enqueue.
const CONCURRENCY: usize = 50;
/// POSTs answered 500 in scenario d.
const FAULTS: u64 = 3;
/// The longest any one measured step may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(600);
/// The longest the two sync events of scenario c may take to drain their queue.
const SYNC_TIMEOUT: Duration = Duration::from_secs(300);
/// The Workbox queue names (created in `bench/entry.js`) and its sync tag prefix.
const WB_TAG_PREFIX: &str = "workbox-background-sync:";

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

fn bundle_path() -> PathBuf {
    workspace_root()
        .join("bench")
        .join("dist")
        .join("workbox-sw.js")
}

// ---------------------------------------------------------------------------
// One server per peer, serving a copy of www/ plus the bench pages

/// The first `times` POSTs to `path` are answered 500.
async fn fail_posts(server: &TestServer, path: &str, times: u64) -> Result {
    server
        .add_faults(json!([{ "path": path, "method": "POST", "status": 500, "times": times }]))
        .await?;
    Ok(())
}

/// The server-side counters of rangersync's push route.
#[derive(Debug, Clone, Copy, Default)]
struct PushCounts {
    requests: u64,
    applied: u64,
    duplicates: u64,
    faults: u64,
}

impl PushCounts {
    fn of(stats: &Value) -> PushCounts {
        let n = |k: &str| stats[k].as_u64().unwrap_or(0);
        PushCounts {
            requests: n("push_requests"),
            applied: n("mutations_applied"),
            duplicates: n("duplicates"),
            faults: n("faults_served"),
        }
    }

    fn since(self, before: PushCounts) -> PushCounts {
        PushCounts {
            requests: self.requests - before.requests,
            applied: self.applied - before.applied,
            duplicates: self.duplicates - before.duplicates,
            faults: self.faults - before.faults,
        }
    }
}

/// What the captured route stored for bodies whose `id` starts with `prefix`:
/// (deliveries, distinct entries).
fn captured(stats: &Value, prefix: &str) -> (u64, u64) {
    let mut ids = std::collections::HashSet::new();
    let mut deliveries = 0;
    for c in stats["captured"].as_array().into_iter().flatten() {
        if c["path"] != "/api/sync/chat" {
            continue;
        }
        let body = match &c["body"] {
            Value::String(text) => serde_json::from_str(text).unwrap_or(Value::Null),
            other => other.clone(),
        };
        if let Some(id) = body["id"].as_str().filter(|id| id.starts_with(prefix)) {
            deliveries += 1;
            ids.insert(id.to_string());
        }
    }
    (deliveries, ids.len() as u64)
}

fn copy_dir(from: &Path, to: &Path) -> Result {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// A temp folder: `www/` (with the built wasm) + the bench pages + the Workbox bundle if built.
fn bench_www(with_workbox: bool) -> Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("rangersync-bench-www-")
        .tempdir()?;
    copy_dir(&www_dir()?, dir.path())?;
    let bench = workspace_root().join("bench");
    for page in ["rangersync.html", "workbox.html"] {
        std::fs::copy(bench.join(page), dir.path().join(page))?;
    }
    if with_workbox {
        std::fs::copy(bundle_path(), dir.path().join("workbox-sw.js"))?;
    }
    Ok(dir)
}

// ---------------------------------------------------------------------------
// Long-running page jobs (a CDP command must not wait for minutes)

/// Starts `expression` (a promise) in the page and polls until it settles, for at most
/// `timeout`; returns its value.
async fn job(page: &Page, expression: &str, timeout: Duration) -> Result<Value> {
    eval(
        page,
        &format!(
            "(() => {{ window.__job = {{ done: false }};
                Promise.resolve().then(() => ({expression})).then(
                  (value) => {{ window.__job = {{ done: true, value }}; }},
                  (e) => {{ window.__job = {{ done: true, error: String((e && e.stack) || e) }}; }});
                return true; }})()"
        ),
    )
    .await?;
    let short: String = expression.chars().take(60).collect();
    let settled = wait_until(&format!("the page finished `{short}`"), timeout, || async {
        let state = eval(page, "window.__job").await?;
        Ok((state["done"] == true).then_some(state))
    })
    .await?;
    if let Some(error) = settled["error"].as_str() {
        return Err(format!("`{short}` failed: {error}").into());
    }
    Ok(settled["value"].clone())
}

fn ms_of(value: &Value) -> f64 {
    value["ms"].as_f64().unwrap_or(f64::NAN)
}

// ---------------------------------------------------------------------------
// Tables

struct Table {
    title: String,
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    notes: Vec<String>,
}

impl Table {
    fn new(title: impl Into<String>, header: &[&'static str]) -> Table {
        Table {
            title: title.into(),
            header: header.to_vec(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    fn print(&self) {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        println!("\n{}", self.title);
        let line = |cells: Vec<String>| {
            let padded: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if i == 0 {
                        format!("{c:<w$}", w = widths[i])
                    } else {
                        format!("{c:>w$}", w = widths[i])
                    }
                })
                .collect();
            println!("  {}", padded.join(" | "));
        };
        line(self.header.iter().map(|h| h.to_string()).collect());
        println!(
            "  {}",
            widths
                .iter()
                .map(|w| "-".repeat(*w))
                .collect::<Vec<_>>()
                .join("-|-")
        );
        for row in &self.rows {
            line(row.clone());
        }
        for note in &self.notes {
            println!("  note: {note}");
        }
    }
}

fn rate(ops: u64, ms: f64) -> String {
    if ms.is_finite() && ms > 0.0 {
        format!("{:.0}", ops as f64 * 1000.0 / ms)
    } else {
        "-".into()
    }
}

fn millis(ms: f64) -> String {
    if ms.is_finite() {
        format!("{ms:.0}")
    } else {
        "-".into()
    }
}

// ---------------------------------------------------------------------------
// The bench

struct Sizes {
    writes: usize,
    sync_queue: usize,
    fault_queue: usize,
}

/// Page helpers for rangersync: register (a long base retry delay so that only the triggers
/// under test start a flush), `rsPut` and `rsDrain`.
const RS_SETUP: &str = r#"(async () => {
    const { default: init, SyncClient } = await import('/pkg/rangersync_page.js');
    await init();
    window.client = await SyncClient.register({
      swUrl: '/sw.js', serverUrl: location.origin,
      retry: { baseDelayMs: 60000, maxDelayMs: 60000 },
    });
    const value = (id, i) => ({ id, title: 'note ' + i, body: 'x'.repeat(56) });
    window.rsPut = async (prefix, n, concurrency) => {
      let next = 0;
      const lane = async () => {
        while (next < n) { const i = next++; await client.put('bench', prefix + i, value(prefix + i, i)); }
      };
      const t0 = performance.now();
      await Promise.all(Array.from({ length: Math.max(1, concurrency) }, lane));
      return { ms: performance.now() - t0 };
    };
    window.rsDrain = async (timeoutMs) => {
      const t0 = performance.now();
      let s = await client.flush();
      while (s.pending > 0) {
        if (performance.now() - t0 > timeoutMs) throw new Error(`still ${s.pending} pending after ${timeoutMs} ms`);
        const before = s.pending;
        s = await client.flush();
        if (s.pending >= before) await new Promise((r) => setTimeout(r, 20));
      }
      return { ms: performance.now() - t0, pending: s.pending, dead: s.dead };
    };
    return client.mode;
  })()"#;

/// 200 puts, one transaction each, with and without `durability: "strict"`; ms per variant.
const RAW_IDB: &str = r#"(async () => {
    const db = await new Promise((resolve, reject) => {
      const open = indexedDB.open('bench-raw', 1);
      open.onupgradeneeded = () => open.result.createObjectStore('s');
      open.onsuccess = () => resolve(open.result);
      open.onerror = () => reject(open.error);
    });
    const run = async (durability) => {
      const t0 = performance.now();
      for (let i = 0; i < 200; i++) {
        await new Promise((resolve, reject) => {
          const tx = db.transaction('s', 'readwrite', durability ? { durability } : {});
          tx.objectStore('s').put({ id: 'r' + i, title: 'note ' + i, body: 'x'.repeat(56) }, String(durability) + i);
          tx.oncomplete = resolve;
          tx.onerror = () => reject(tx.error);
        });
      }
      return performance.now() - t0;
    };
    const strict = await run('strict');
    const fallback = await run(undefined);
    db.close();
    return { strict, default: fallback };
  })()"#;

struct Tables {
    enqueue: Table,
    deliver: Table,
    sync2: Table,
    fault: Table,
}

#[tokio::test]
#[ignore = "a benchmark: `cargo xtask bench` runs it"]
async fn bench_rangersync_vs_workbox_queue() -> Result {
    let sizes = Sizes {
        writes: env_number("RANGERSYNC_BENCH_WRITES", 2_000),
        sync_queue: env_number("RANGERSYNC_BENCH_SYNC_QUEUE", 500),
        fault_queue: env_number("RANGERSYNC_BENCH_FAULT_QUEUE", 200),
    };
    let with_workbox = bundle_path().is_file();
    let www = bench_www(with_workbox)?;
    let browser = TestBrowser::launch().await?;
    let workers = ServiceWorkers::enable(&browser).await?;
    let version = browser_cdp(browser.browser(), "Browser.getVersion", json!({})).await?;
    let product = version["product"]
        .as_str()
        .unwrap_or("Chromium ?")
        .to_string();

    let n = sizes.writes;
    let mut tables = Tables {
        enqueue: Table::new(
            format!("a) durable enqueue of {n} writes (~100 B JSON), server unreachable unless marked UP"),
            &[
                "peer, mode",
                "ops/s",
                "ms total",
                "queued after",
                "server applied",
                "duplicates",
            ],
        ),
        deliver: Table::new(
            format!("b) delivery of the {} entries queued in a)", 2 * n),
            &[
                "peer",
                "ops/s",
                "ms total",
                "HTTP requests",
                "server applied",
                "duplicates",
            ],
        ),
        sync2: Table::new(
            format!(
                "c) two sync events dispatched at once on a queue of {}",
                sizes.sync_queue
            ),
            &[
                "peer",
                "ops/s",
                "ms to drain",
                "deliveries",
                "server applied",
                "duplicates",
            ],
        ),
        fault: Table::new(
            format!(
                "d) the server answers 500 to the first {FAULTS} POSTs of a replay of {} entries",
                sizes.fault_queue
            ),
            &[
                "peer",
                "500s served",
                "server applied",
                "still queued",
                "dead-lettered",
                "lost",
            ],
        ),
    };

    tables.enqueue.note(
        "rangersync is timed in the page (put -> worker -> one strict IndexedDB commit -> ack); \
         Workbox inside the worker (no page round trip)",
    );
    tables.deliver.note(
        "rangersync pushes batches of 100 (default batchSize) and pulls; \
         Workbox sends one POST per entry, one at a time",
    );
    tables.sync2.note(
        "ms to drain: wall clock from the two dispatches to the queue drained, polled every \
         100 ms. Workbox's onSync is gated shut while its queue fills (else Chrome's own sync events \
         replay mid-fill), then opened: each event runs Workbox's replayRequests()",
    );
    tables.fault.note(
        "Workbox re-queues an entry only when fetch() rejects; a 500 resolves, so the entry is \
         deleted. rangersync classifies a 500 as retry (its explicit flushes cut the backoff short)",
    );

    let started = Instant::now();
    bench_rangersync(&browser, &workers, www.path(), &sizes, &mut tables).await?;
    if with_workbox {
        bench_workbox(&browser, &workers, www.path(), &sizes, &mut tables).await?;
    } else {
        workbox_from_docs(&mut tables);
    }

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "\nrangersync vs Workbox background-sync Queue 7.4.1: {product} headless, {cores} cores, \
         reference server in-process ({} build), one browser, one origin (own storage) per peer, {:.0} s total",
        if cfg!(debug_assertions) {
            "dev"
        } else {
            "release"
        },
        started.elapsed().as_secs_f64()
    );
    println!(
        "load average at the end (1, 5, 15 min): {}; other work on these cores shows in every row",
        load.join(" ")
    );
    println!(
        "duplicates = deliveries of an entry the server already had; rangersync's server discards \
         them by (client_id, seq), Workbox sends no Idempotency-Key so each one is stored again."
    );
    for table in [
        &tables.enqueue,
        &tables.deliver,
        &tables.sync2,
        &tables.fault,
    ] {
        table.print();
    }
    browser.close().await?;
    Ok(())
}

async fn bench_rangersync(
    browser: &TestBrowser,
    workers: &ServiceWorkers,
    www: &Path,
    sizes: &Sizes,
    tables: &mut Tables,
) -> Result {
    let n = sizes.writes;
    let mut server = TestServer::start_serving(www.to_path_buf()).await?;
    let origin = server.url();
    let page = browser.open(&format!("{origin}/rangersync.html")).await?;
    let mode = eval(&page, RS_SETUP).await?;
    if mode != "worker" {
        return Err(format!("rangersync runs in {mode} mode, not in the worker").into());
    }
    wait_for_controller(&page).await?;
    workers.activated(&origin).await?;
    // The initial flush and pull of register() are done before anything is measured.
    job(&page, "rsDrain(60000)", STEP_TIMEOUT).await?;

    // The page <-> worker round trip alone, to read the enqueue rows against.
    let round_trip = job(
        &page,
        "(async () => { const t0 = performance.now(); for (let i = 0; i < 200; i++) await client.status(); return { ms: (performance.now() - t0) / 200 }; })()",
        STEP_TIMEOUT,
    )
    .await?;
    tables.enqueue.note(format!(
        "a rangersync page -> worker round trip with no write (client.status()) took {:.1} ms here",
        ms_of(&round_trip)
    ));

    // Raw IndexedDB, one transaction per record, in this page: the floor under any durable
    // enqueue (rangersync commits with durability "strict", Workbox with the default).
    let raw = job(&page, RAW_IDB, STEP_TIMEOUT).await?;
    tables.enqueue.note(format!(
        "raw IndexedDB in this browser, one put per transaction, 200 records of ~100 B: \
         {} puts/s with durability \"strict\", {} puts/s with the default",
        rate(200, raw["strict"].as_f64().unwrap_or(f64::NAN)),
        rate(200, raw["default"].as_f64().unwrap_or(f64::NAN)),
    ));

    // a) first, for reference, sequential writes while the server is up (delivering meanwhile).
    let before = PushCounts::of(&server.stats().await?);
    let result = job(&page, &format!("rsPut('a-u-', {n}, 1)"), STEP_TIMEOUT).await?;
    let status = eval(&page, "client.status()").await?;
    let delta = PushCounts::of(&server.stats().await?).since(before);
    let ms = ms_of(&result);
    tables.enqueue.row(vec![
        "rangersync, sequential, server UP".into(),
        rate(n as u64, ms),
        millis(ms),
        status["pending"].to_string(),
        delta.applied.to_string(),
        format!("{} (discarded)", delta.duplicates),
    ]);
    job(&page, "rsDrain(600000)", STEP_TIMEOUT).await?;

    // a) enqueue with the server down.
    server.stop().await;
    for (label, prefix, concurrency) in [
        ("sequential", "a-s-", 1),
        ("50 in flight", "a-c-", CONCURRENCY),
    ] {
        let result = job(
            &page,
            &format!("rsPut('{prefix}', {n}, {concurrency})"),
            STEP_TIMEOUT,
        )
        .await?;
        let status = eval(&page, "client.status()").await?;
        let ms = ms_of(&result);
        tables.enqueue.row(vec![
            format!("rangersync, {label}"),
            rate(n as u64, ms),
            millis(ms),
            status["pending"].to_string(),
            "0 (offline)".into(),
            "0".into(),
        ]);
    }

    // b) deliver everything: flush until pending is 0.
    server.restart().await?;
    let before = PushCounts::of(&server.stats().await?);
    let drained = job(&page, "rsDrain(600000)", STEP_TIMEOUT).await?;
    let delta = PushCounts::of(&server.stats().await?).since(before);
    let ms = ms_of(&drained);
    tables.deliver.row(vec![
        "rangersync (flush until pending 0)".into(),
        rate(delta.applied, ms),
        millis(ms),
        format!("{} pushes", delta.requests),
        delta.applied.to_string(),
        format!("{} (discarded)", delta.duplicates),
    ]);

    // c) two sync events at once on a queue of `sync_queue`.
    let q = sizes.sync_queue;
    server.stop().await;
    job(
        &page,
        &format!("rsPut('c-', {q}, {CONCURRENCY})"),
        STEP_TIMEOUT,
    )
    .await?;
    server.restart().await?;
    let before = PushCounts::of(&server.stats().await?);
    let t0 = Instant::now();
    let (first, second) = tokio::join!(
        workers.dispatch_sync(&origin, SYNC_TAG, false),
        workers.dispatch_sync(&origin, SYNC_TAG, false)
    );
    first?;
    second?;
    wait_until(
        "rangersync delivered the sync queue",
        SYNC_TIMEOUT,
        || async {
            let delta = PushCounts::of(&server.stats().await?).since(before);
            Ok((delta.applied >= q as u64).then_some(()))
        },
    )
    .await?;
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    // Late duplicates, if any, arrive within this grace period.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let delta = PushCounts::of(&server.stats().await?).since(before);
    tables.sync2.row(vec![
        "rangersync".into(),
        rate(delta.applied, ms),
        millis(ms),
        format!(
            "{} in {} pushes",
            delta.applied + delta.duplicates,
            delta.requests
        ),
        delta.applied.to_string(),
        format!("{} (discarded)", delta.duplicates),
    ]);

    // d) 500s during delivery.
    let d = sizes.fault_queue;
    server.stop().await;
    job(
        &page,
        &format!("rsPut('d-', {d}, {CONCURRENCY})"),
        STEP_TIMEOUT,
    )
    .await?;
    server.restart().await?;
    let before = PushCounts::of(&server.stats().await?);
    fail_posts(&server, "/api/sync/push", FAULTS).await?;
    let drained = job(&page, "rsDrain(600000)", STEP_TIMEOUT).await?;
    let delta = PushCounts::of(&server.stats().await?).since(before);
    let pending = drained["pending"].as_u64().unwrap_or(0);
    let dead = drained["dead"].as_u64().unwrap_or(0);
    tables.fault.row(vec![
        "rangersync (retries, batches)".into(),
        delta.faults.to_string(),
        delta.applied.to_string(),
        pending.to_string(),
        dead.to_string(),
        (d as u64)
            .saturating_sub(delta.applied + pending + dead)
            .to_string(),
    ]);

    page.close().await?;
    server.stop().await;
    Ok(())
}

async fn bench_workbox(
    browser: &TestBrowser,
    workers: &ServiceWorkers,
    www: &Path,
    sizes: &Sizes,
    tables: &mut Tables,
) -> Result {
    let n = sizes.writes;
    let mut server = TestServer::start_serving(www.to_path_buf()).await?;
    let origin = server.url();
    let page = browser.open(&format!("{origin}/workbox.html")).await?;
    job(&page, "window.ready", Duration::from_secs(60)).await?;
    wait_for_controller(&page).await?;
    workers.activated(&origin).await?;
    let wb = |command: Value| format!("wb({command})");

    // a) enqueue (the queue's sync gate is closed: nothing is replayed meanwhile).
    for (label, prefix, concurrency) in [
        ("sequential", "a-s-", 1),
        ("50 in flight", "a-c-", CONCURRENCY),
    ] {
        let result = job(
            &page,
            &wb(
                json!({ "cmd": "enqueue", "queue": "bench-a", "prefix": prefix, "n": n,
                        "concurrency": concurrency, "url": "/api/sync/chat" }),
            ),
            STEP_TIMEOUT,
        )
        .await?;
        let ms = ms_of(&result);
        let (deliveries, _) = captured(&server.stats().await?, prefix);
        tables.enqueue.row(vec![
            format!("Workbox Queue, {label}"),
            rate(n as u64, ms),
            millis(ms),
            result["size"].to_string(),
            deliveries.to_string(),
            "0".into(),
        ]);
    }

    // b) replayRequests(): one POST per entry.
    let replayed = job(
        &page,
        &wb(json!({ "cmd": "replay", "queue": "bench-a" })),
        STEP_TIMEOUT,
    )
    .await?;
    let (deliveries, distinct) = captured(&server.stats().await?, "a-");
    let ms = ms_of(&replayed);
    let mut label = "Workbox Queue (replayRequests)".to_string();
    if let Some(error) = replayed["error"].as_str() {
        label.push_str(&format!(" [failed: {error}]"));
    }
    tables.deliver.row(vec![
        label,
        rate(distinct, ms),
        millis(ms),
        format!("{deliveries} POSTs"),
        distinct.to_string(),
        format!("{} (stored)", deliveries - distinct),
    ]);

    // c) two sync events at once on a queue of `sync_queue`.
    let q = sizes.sync_queue;
    job(
        &page,
        &wb(
            json!({ "cmd": "enqueue", "queue": "bench-c", "prefix": "c-", "n": q,
                    "concurrency": CONCURRENCY, "url": "/api/sync/chat" }),
        ),
        STEP_TIMEOUT,
    )
    .await?;
    // Let the sync events Chrome fired for pushRequest's registrations settle (gate closed).
    wait_until(
        "no Workbox sync registration is pending",
        Duration::from_secs(30),
        || async {
            let tags = job(
                &page,
                &wb(json!({ "cmd": "tags" })),
                Duration::from_secs(30),
            )
            .await?;
            Ok(tags["tags"]
                .as_array()
                .is_some_and(|t| t.is_empty())
                .then_some(()))
        },
    )
    .await?;
    job(
        &page,
        &wb(json!({ "cmd": "arm", "queue": "bench-c", "on": true })),
        Duration::from_secs(30),
    )
    .await?;
    let syncs_before = job(
        &page,
        &wb(json!({ "cmd": "syncs" })),
        Duration::from_secs(30),
    )
    .await?;
    let started_before = syncs_before["started"].as_u64().unwrap_or(0);
    let tag = format!("{WB_TAG_PREFIX}bench-c");
    let t0 = Instant::now();
    let (first, second) = tokio::join!(
        workers.dispatch_sync(&origin, &tag, false),
        workers.dispatch_sync(&origin, &tag, false)
    );
    first?;
    second?;
    wait_until(
        "both Workbox sync events finished",
        SYNC_TIMEOUT,
        || async {
            let s = eval(&page, &wb(json!({ "cmd": "syncs" }))).await?;
            let started = s["started"].as_u64().unwrap_or(0);
            let active = s["active"].as_u64().unwrap_or(1);
            Ok((started >= started_before + 2 && active == 0).then_some(()))
        },
    )
    .await?;
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (deliveries, distinct) = captured(&server.stats().await?, "c-");
    tables.sync2.row(vec![
        "Workbox Queue".into(),
        rate(distinct, ms),
        millis(ms),
        format!("{deliveries} POSTs"),
        distinct.to_string(),
        format!("{} (stored)", deliveries - distinct),
    ]);

    // d) 500s during replay.
    let d = sizes.fault_queue;
    job(
        &page,
        &wb(
            json!({ "cmd": "enqueue", "queue": "bench-d", "prefix": "d-", "n": d,
                    "concurrency": CONCURRENCY, "url": "/api/sync/chat" }),
        ),
        STEP_TIMEOUT,
    )
    .await?;
    let faults_before = server.stats().await?["faults_served"].as_u64().unwrap_or(0);
    fail_posts(&server, "/api/sync/chat", FAULTS).await?;
    let replayed = job(
        &page,
        &wb(json!({ "cmd": "replay", "queue": "bench-d" })),
        STEP_TIMEOUT,
    )
    .await?;
    let stats = server.stats().await?;
    let faults = stats["faults_served"].as_u64().unwrap_or(0) - faults_before;
    let (_, distinct) = captured(&stats, "d-");
    let still = replayed["size"].as_u64().unwrap_or(0);
    tables.fault.row(vec![
        "Workbox Queue (replayRequests)".into(),
        faults.to_string(),
        distinct.to_string(),
        still.to_string(),
        "-".into(),
        (d as u64).saturating_sub(distinct + still).to_string(),
    ]);

    page.close().await?;
    server.stop().await;
    Ok(())
}

/// No bundle: the Workbox numbers measured on this kind of machine, from docs/TOOLCHAIN.md.
fn workbox_from_docs(tables: &mut Tables) {
    const FROM: &str = "from docs/TOOLCHAIN.md, measured Nov 2026";
    println!(
        "\nnote: bench/dist/workbox-sw.js is missing (npm install + esbuild in bench/ did not run): \
         the Workbox rows are {FROM}, not measured now"
    );
    tables.enqueue.row(vec![
        format!("Workbox Queue ({FROM})"),
        "~356".into(),
        "-".into(),
        "-".into(),
        "-".into(),
        "-".into(),
    ]);
    tables.deliver.row(vec![
        format!("Workbox Queue ({FROM}: 10k in ~78 s)"),
        "~128".into(),
        "-".into(),
        "1 POST per entry".into(),
        "-".into(),
        "-".into(),
    ]);
    tables.sync2.row(vec![
        format!("Workbox Queue ({FROM})"),
        "-".into(),
        "-".into(),
        "-".into(),
        "-".into(),
        "same entries replayed twice".into(),
    ]);
    tables.fault.row(vec![
        "Workbox Queue (from its source: a 500 is a resolved fetch)".into(),
        "-".into(),
        "-".into(),
        "-".into(),
        "-".into(),
        "1 per 500".into(),
    ]);
}
