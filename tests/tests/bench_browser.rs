//! The browser half of `cargo xtask bench`: rangersync beside Workbox 7.4.1's offline-write
//! recipe (a `NetworkOnly` route with a `BackgroundSyncPlugin`, bundled from npm by `bench/`), in
//! the same headless Chromium against the same reference server (one in-process instance, and so
//! one origin and one storage, per peer and per drain).
//!
//! `#[ignore]`d: CI never runs it. `cargo xtask bench` runs it with `--ignored --nocapture`,
//! then turns the JSON it writes (`$RANGERSYNC_BENCH_RESULTS`) into the table of BENCHMARKS.md
//! and the drain chart. It measures; it asserts nothing about speed. A phase that cannot run
//! records `{"error": ...}` and the table says "not measured" there.
//!
//! Both peers are timed from the page, the way an app sees them:
//! - rangersync: `await client.put(...)` / `await client.putMany(items)` (page → worker →
//!   strict IndexedDB commit → acknowledgement).
//! - Workbox: `await fetch('/api/sync/push?q=…', {method: 'POST', body})` while the server is
//!   down: the fetch fails, the plugin's `fetchDidFail` stores the request, then the page's
//!   promise settles. Each body is a one-mutation push, so the server counts deliveries and
//!   duplicates of both peers the same way.
//!
//! Phases, per peer: page bytes loaded by `register`; sequential writes (per-write latency),
//! 50, 100 and 500 in flight, `putMany` (rangersync only), all with the server stopped; the
//! browser's limits in the rangersync page (`bench/limits-sw.js` at its own scope: a message
//! echo, one strict IndexedDB put a message at each write row's concurrency, one strict
//! transaction of many records); the navigation cost of rangersync's stopped worker (a
//! navigation and a plain fetch POST, beside the same page on an origin with no worker); worker cold
//! start (median of `RANGERSYNC_BENCH_COLD_RUNS`); drains of `RANGERSYNC_BENCH_DRAIN` and
//! `RANGERSYNC_BENCH_DRAIN_LARGE` queued writes started by a `sync` event, with the server's
//! delivery count sampled every 50 ms and the worker's JS heap (CDP `Runtime.getHeapUsage` on
//! the service worker target) every 100 ms.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chromiumoxide::cdp::browser_protocol::service_worker::{
    ServiceWorkerVersionRunningStatus, ServiceWorkerVersionStatus,
};
use chromiumoxide::Page;
use rangersync_e2e::{
    browser_cdp, eval, wait_for_controller, wait_until, workspace_root, www_dir, Result,
    ServiceWorkers, TestBrowser, TestServer, WorkerSession, SYNC_TAG,
};
use serde_json::{json, Map, Value};

/// The longest any one page job may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(1800);
/// A drain with no delivery for this long is re-triggered with another `sync` event
/// (Chrome may end a long `sync` event); the number of re-triggers is reported.
const DRAIN_NUDGE_AFTER: Duration = Duration::from_secs(20);
/// A drain with no delivery for this long is given up and reported as stalled.
const DRAIN_GIVE_UP_AFTER: Duration = Duration::from_secs(120);
/// How often the server's delivery count is sampled during a drain (the chart's resolution).
const DELIVERY_SAMPLE: Duration = Duration::from_millis(50);
/// How often the worker's heap is read during a drain.
const HEAP_SAMPLE: Duration = Duration::from_millis(100);
/// How often the server is asked whether the first request of a cold start has arrived.
const COLD_POLL: Duration = Duration::from_millis(5);
/// Items per `putMany` call.
const PUT_MANY_BATCH: usize = 100;
/// Writes in flight while filling a drain queue.
const FILL_CONCURRENCY: usize = 500;
/// The write rows: (results key, writes in flight).
const WRITE_ROWS: [(&str, usize); 4] = [
    ("put_sequential", 1),
    ("put_50", 50),
    ("put_100", 100),
    ("put_500", 500),
];
/// Records in the one strict transaction of the batch limit, and how many such batches.
const LIMIT_BATCH: usize = 1_000;
const LIMIT_BATCH_RUNS: usize = 5;
/// Message round trips of the echo limit.
const LIMIT_ECHOES: usize = 1_000;
/// Navigations and fetches timed per side (with and without the worker). A navigation here takes
/// one of two times, ~12 ms or ~48 ms, on both sides alike: with 20 runs the median moved
/// between the modes from one run to the next (0.95× once, 1.11× the next).
const NAVIGATION_RUNS: usize = 60;
/// Workbox's sync tags are this prefix + the queue name.
const WB_TAG_PREFIX: &str = "workbox-background-sync:";

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn bundle_path() -> PathBuf {
    workspace_root()
        .join("bench")
        .join("dist")
        .join("workbox-sw.js")
}

/// Sizes of this run.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    writes: usize,
    drain: usize,
    drain_large: usize,
    cold_runs: usize,
}

impl Sizes {
    fn from_env() -> Sizes {
        Sizes {
            writes: env_number("RANGERSYNC_BENCH_WRITES", 2_000).max(1),
            drain: env_number("RANGERSYNC_BENCH_DRAIN", 10_000),
            drain_large: env_number("RANGERSYNC_BENCH_DRAIN_LARGE", 100_000),
            cold_runs: env_number("RANGERSYNC_BENCH_COLD_RUNS", 20),
        }
    }
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
    for page in ["rangersync.html", "workbox.html", "nav.html"] {
        std::fs::copy(bench.join(page), dir.path().join(page))?;
    }
    // The limits worker has a folder, and so a scope, of its own.
    std::fs::create_dir_all(dir.path().join("bench-limits"))?;
    std::fs::copy(
        bench.join("limits-sw.js"),
        dir.path().join("bench-limits").join("limits-sw.js"),
    )?;
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

/// `window.timed(n, concurrency, op)`: runs `op(i)` for i in 0..n with `concurrency` lanes,
/// timing each call from the page; returns `{ ms, latencies, outcomes }` (outcomes: how many
/// calls resolved with each value).
const TIMED_JS: &str = r#"window.timed = async (n, concurrency, op) => {
    let next = 0;
    const latencies = [];
    const outcomes = {};
    const lane = async () => {
      while (next < n) {
        const i = next++;
        const t = performance.now();
        const outcome = String(await op(i));
        latencies.push(performance.now() - t);
        outcomes[outcome] = (outcomes[outcome] || 0) + 1;
      }
    };
    const t0 = performance.now();
    await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, n)) }, lane));
    return { ms: performance.now() - t0, latencies, outcomes };
  }; true"#;

/// Same-origin resources this page started loading since `t0` (a `performance.now()` value),
/// from the browser's resource timing; not `/api/`, not the browser's own favicon request.
fn resources_since_js(t0: &str) -> String {
    format!(
        "performance.getEntriesByType('resource')
           .filter((e) => e.startTime >= {t0} && new URL(e.name).origin === location.origin
             && !new URL(e.name).pathname.startsWith('/api/')
             && new URL(e.name).pathname !== '/favicon.ico')
           .map((e) => ({{ path: new URL(e.name).pathname, transfer: e.transferSize,
                          encoded: e.encodedBodySize, decoded: e.decodedBodySize }}))"
    )
}

/// The page's sync registrations still pending (fired or waiting for a retry).
const SYNC_TAGS_JS: &str =
    "navigator.serviceWorker.ready.then((r) => r.sync ? r.sync.getTags() : [])";

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `{ n, ms, rate, p50_ms, p99_ms, outcomes }` of a `timed` run of `n` operations carrying
/// `items` writes in all.
fn timing(run: &Value, items: usize) -> Value {
    let mut latencies: Vec<f64> = run["latencies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_f64)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let ms = run["ms"].as_f64().unwrap_or(f64::NAN);
    json!({
        "n": items,
        "ms": ms,
        "rate": items as f64 * 1000.0 / ms,
        "p50_ms": percentile(&latencies, 50.0),
        "p99_ms": percentile(&latencies, 99.0),
        "outcomes": run["outcomes"],
    })
}

/// Runs a phase; its error becomes `{"error": ...}` in the results instead of ending the run.
async fn record(
    results: &mut Map<String, Value>,
    key: &str,
    phase: impl std::future::Future<Output = Result<Value>>,
) {
    let value = match phase.await {
        Ok(value) => value,
        Err(e) => {
            println!("bench: {key} not measured: {e}");
            json!({ "error": e.to_string() })
        }
    };
    results.insert(key.to_string(), value);
}

// ---------------------------------------------------------------------------
// The server's push counters

#[derive(Debug, Clone, Copy, Default)]
struct PushCounts {
    requests: u64,
    applied: u64,
    duplicates: u64,
}

impl PushCounts {
    async fn of(server: &TestServer) -> Result<PushCounts> {
        let stats = server.stats().await?;
        let n = |k: &str| stats[k].as_u64().unwrap_or(0);
        Ok(PushCounts {
            requests: n("push_requests"),
            applied: n("mutations_applied"),
            duplicates: n("duplicates"),
        })
    }
}

// ---------------------------------------------------------------------------
// Drains and cold starts, the same procedure for both peers

/// One drain: a `sync` event starts delivery of `n` writes already queued while the server was
/// down. `before` are the server's counters from before anything of this drain was delivered
/// (they survive a restart); a stopped server is started just before the event, after the heap
/// session is set up, so that nothing is delivered before the clock starts. Returns `{ n, ms, requests, duplicates, heap_peak_bytes,
/// heap_samples, samples: [[ms, delivered]…], nudges }`.
async fn measure_drain(
    browser: &TestBrowser,
    workers: &ServiceWorkers,
    server: &mut TestServer,
    before: PushCounts,
    origin: &str,
    tag: &str,
    n: usize,
) -> Result<Value> {
    // The worker runs (it just took the writes); keep a session on it for its heap.
    let mut session = WorkerSession::attach(browser, origin).await?;
    let heap_fields = session.call("Runtime.getHeapUsage", json!({})).await?;
    let (done, mut finished) = tokio::sync::watch::channel(false);
    let heap = async move {
        let mut heap = HeapPeak::default();
        loop {
            match session.call("Runtime.getHeapUsage", json!({})).await {
                Ok(usage) => heap.add(&usage),
                Err(e) => heap.last_error = Some(e.to_string()),
            }
            tokio::select! {
                _ = tokio::time::sleep(HEAP_SAMPLE) => {}
                _ = finished.changed() => break,
            }
        }
        session.detach().await;
        heap
    };
    if !server.is_running() {
        server.restart().await?;
    }
    let server = &*server;
    let deliveries = async move {
        let delivered = deliver(workers, server, before, origin, tag, n).await;
        let _ = done.send(true);
        delivered
    };
    let (delivered, heap) = futures::join!(deliveries, heap);
    let (samples, nudges) = delivered?;
    let ms = samples.last().map_or(0.0, |s| s.0);
    // Late duplicates, if any, arrive within this grace period.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = PushCounts::of(server).await?;
    Ok(json!({
        "n": n,
        "ms": ms,
        "requests": after.requests - before.requests,
        "delivered": after.applied - before.applied,
        "duplicates": after.duplicates - before.duplicates,
        "nudges": nudges,
        "heap_peak_bytes": heap.used,
        "heap_peak_with_backing_bytes": heap.used_with_backing,
        "heap_samples": heap.samples,
        "heap_error": heap.last_error,
        "heap_fields": heap_fields,
        "samples": samples.iter().map(|(ms, d)| json!([ms.round(), d])).collect::<Vec<_>>(),
    }))
}

/// The largest `Runtime.getHeapUsage` answers seen.
#[derive(Debug, Default)]
struct HeapPeak {
    /// `usedSize`: the JS heap.
    used: f64,
    /// `usedSize + backingStorageSize` (ArrayBuffers, wasm memory among them, when reported).
    used_with_backing: f64,
    samples: u64,
    last_error: Option<String>,
}

impl HeapPeak {
    fn add(&mut self, usage: &Value) {
        let used = usage["usedSize"].as_f64().unwrap_or(0.0);
        let backing = usage["backingStorageSize"].as_f64().unwrap_or(0.0);
        self.used = self.used.max(used);
        self.used_with_backing = self.used_with_backing.max(used + backing);
        self.samples += 1;
    }
}

/// Dispatches `tag` and samples the server's delivery count until `n` more than `before` are
/// applied. Returns the samples `(ms since the dispatch, delivered)` and the re-dispatches.
async fn deliver(
    workers: &ServiceWorkers,
    server: &TestServer,
    before: PushCounts,
    origin: &str,
    tag: &str,
    n: usize,
) -> Result<(Vec<(f64, u64)>, u32)> {
    let t0 = Instant::now();
    workers.dispatch_sync(origin, tag, false).await?;
    let mut samples = vec![(0.0, 0_u64)];
    let mut last_progress = Instant::now();
    let mut nudges = 0;
    loop {
        tokio::time::sleep(DELIVERY_SAMPLE).await;
        let delivered = PushCounts::of(server).await?.applied - before.applied;
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        if delivered > samples.last().map_or(0, |s| s.1) {
            last_progress = Instant::now();
        }
        samples.push((ms, delivered));
        if delivered >= n as u64 {
            return Ok((samples, nudges));
        }
        let quiet = last_progress.elapsed();
        if quiet >= DRAIN_GIVE_UP_AFTER {
            return Err(format!(
                "stalled: {delivered} of {n} delivered, nothing more for {DRAIN_GIVE_UP_AFTER:?}"
            )
            .into());
        }
        if quiet >= DRAIN_NUDGE_AFTER * (nudges + 1) {
            nudges += 1;
            workers.dispatch_sync(origin, tag, false).await?;
        }
    }
}

/// `ServiceWorker.stopAllWorkers` until every live version of the registration is seen
/// stopped: something may start it again at once (a retry of Chrome's own sync registration, a
/// page message). A `stopAllWorkers` that times out (it answers only once every worker has
/// stopped, and after the large write rows one was seen to take longer than CDP's 30 s) is not
/// an error by itself: the running status decides, and the last such error is reported only if
/// the worker never stops.
async fn stop_confirmed(workers: &ServiceWorkers, registration_id: &str, origin: &str) -> Result {
    let last_error = std::cell::RefCell::new(workers.stop_all().await.err().map(|e| e.to_string()));
    let stopped = wait_until(
        &format!("{origin}'s worker is stopped"),
        Duration::from_secs(120),
        || async {
            let stopped = workers
                .versions(registration_id)
                .iter()
                .filter(|v| v.status != ServiceWorkerVersionStatus::Redundant)
                .all(|v| v.running == ServiceWorkerVersionRunningStatus::Stopped);
            if stopped {
                return Ok(Some(()));
            }
            if let Err(e) = workers.stop_all().await {
                *last_error.borrow_mut() = Some(e.to_string());
            }
            Ok(None)
        },
    )
    .await;
    stopped.map_err(|e| match last_error.into_inner() {
        Some(stop) => format!("{e} (the last ServiceWorker.stopAllWorkers: {stop})").into(),
        None => e,
    })
}

/// `runs` cold starts: the worker is stopped (`ServiceWorker.stopAllWorkers`, confirmed by the
/// version's running status), then a `sync` event is dispatched; the time is until the server
/// has received the handler's first push request (its fault layer counts it on arrival, before
/// the body is read: a peer's batch size or the debug server's parsing is not in the row). The
/// server answers no push meanwhile (a fault rule with a long `delay_ms`, installed by the
/// caller) so each run finds the queue unchanged; stopping the worker cancels the held request.
/// Returns `{ runs, median_ms, ms: [...] }`.
async fn measure_cold_start(
    workers: &ServiceWorkers,
    server: &TestServer,
    origin: &str,
    tag: &str,
    runs: usize,
) -> Result<Value> {
    let registration = workers.registration(origin).await?;
    let mut times = Vec::with_capacity(runs);
    for run in 0..runs {
        stop_confirmed(workers, &registration.id, origin).await?;
        let before = push_arrivals(server).await?;
        let t0 = Instant::now();
        workers.dispatch_sync(origin, tag, false).await?;
        loop {
            if push_arrivals(server).await? > before {
                break;
            }
            if t0.elapsed() > Duration::from_secs(30) {
                return Err(format!("cold start run {run}: no push request within 30 s").into());
            }
            tokio::time::sleep(COLD_POLL).await;
        }
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    // The last run's request is still held: stop the worker so nothing waits on it.
    stop_confirmed(workers, &registration.id, origin).await?;
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(json!({ "runs": runs, "median_ms": percentile(&sorted, 50.0), "ms": times }))
}

/// Holds every push for 10 minutes, then answers `503`: the request is counted on arrival
/// ([`push_arrivals`]) and never reaches the handler, so nothing is applied or dequeued.
async fn hold_push_answers(server: &TestServer) -> Result {
    server
        .add_faults(
            json!([{ "path": "/api/sync/push", "method": "POST", "status": 503,
                              "delay_ms": 600_000, "times": 100_000 }]),
        )
        .await?;
    Ok(())
}

/// The requests the server's fault rules have taken so far (counted as each arrives).
async fn push_arrivals(server: &TestServer) -> Result<u64> {
    let stats = server.stats().await?;
    stats["faults_served"]
        .as_u64()
        .ok_or_else(|| format!("the server's stats have no faults_served: {stats}").into())
}

// ---------------------------------------------------------------------------
// The bench

#[tokio::test]
#[ignore = "a benchmark: `cargo xtask bench` runs it"]
async fn bench_rangersync_vs_workbox() -> Result {
    let sizes = Sizes::from_env();
    // xtask passes why the Workbox bundle could not be (re)built; its cells then say so.
    let workbox_error = std::env::var("RANGERSYNC_BENCH_WORKBOX_ERROR")
        .ok()
        .filter(|e| !e.is_empty())
        .or_else(|| {
            (!bundle_path().is_file()).then(|| {
                "bench/dist/workbox-sw.js was not built (npm ci + esbuild in bench/)".to_string()
            })
        });
    let with_workbox = workbox_error.is_none();
    let www = bench_www(with_workbox)?;
    let browser = TestBrowser::launch().await?;
    let workers = ServiceWorkers::enable(&browser).await?;
    let version = browser_cdp(browser.browser(), "Browser.getVersion", json!({})).await?;
    let started = Instant::now();

    let rangersync = bench_rangersync(&browser, &workers, www.path(), sizes).await;
    let workbox = if with_workbox {
        bench_workbox(&browser, &workers, www.path(), sizes).await
    } else {
        let mut results = Map::new();
        results.insert("error".into(), json!(workbox_error));
        results
    };
    browser.close().await?;

    let results = json!({
        "browser": version["product"],
        "user_agent": version["userAgent"],
        "sizes": {
            "writes": sizes.writes, "drain": sizes.drain, "drain_large": sizes.drain_large,
            "cold_runs": sizes.cold_runs, "put_many_batch": PUT_MANY_BATCH,
            "limit_batch": LIMIT_BATCH, "limit_batch_runs": LIMIT_BATCH_RUNS,
            "limit_echoes": LIMIT_ECHOES,
            "navigation_runs": NAVIGATION_RUNS,
        },
        "seconds": started.elapsed().as_secs_f64(),
        "server_build": if cfg!(debug_assertions) { "dev" } else { "release" },
        "rangersync": rangersync,
        "workbox": workbox,
    });
    let out = std::env::var_os("RANGERSYNC_BENCH_RESULTS").map_or_else(
        || workspace_root().join("target").join("bench-browser.json"),
        PathBuf::from,
    );
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&results)?)?;
    println!("bench: results in {}", out.display());
    Ok(())
}

/// rangersync's page helpers: `rsValue`, `rsDrain` (flush until nothing is pending).
const RS_HELPERS_JS: &str = r#"
    window.rsValue = (id, i) => ({ id, title: 'note ' + i, body: 'x'.repeat(56) });
    window.rsDrain = async (timeoutMs) => {
      const t0 = performance.now();
      let s = await client.flush();
      while (s.pending > 0) {
        if (performance.now() - t0 > timeoutMs) throw new Error(`still ${s.pending} pending after ${timeoutMs} ms`);
        const before = s.pending;
        s = await client.flush();
        if (s.pending >= before) await new Promise((r) => setTimeout(r, 20));
      }
      return { ms: performance.now() - t0, pending: s.pending };
    };
    window.rsPutMany = (prefix, n, batch, concurrency) => timed(Math.ceil(n / batch), concurrency, (b) => {
      const items = [];
      for (let i = b * batch; i < Math.min(n, (b + 1) * batch); i++) {
        items.push({ collection: 'bench', key: prefix + i, value: rsValue(prefix + i, i) });
      }
      return client.putMany(items).then((ack) => 'acked ' + ack.seqs.length);
    });
    true"#;

/// The browser's limits, from the rangersync page: registers `bench/limits-sw.js` at its own
/// scope (`/bench-limits/`: it controls no page; rangersync's worker at `/` keeps this page)
/// and defines `limitAsk(message)` (post to its active worker with a reply port, resolve with
/// the reply), `limitBatch(runs, size)` (`runs` strict transactions of `size` records each, one
/// at a time; `{ ms: [...] }` per transaction) and `limitUnregister()`.
const LIMITS_JS: &str = r#"window.limitsReady = (async () => {
    const registration = await navigator.serviceWorker.register('/bench-limits/limits-sw.js',
      { scope: '/bench-limits/' });
    const worker = registration.installing || registration.waiting || registration.active;
    if (worker.state !== 'activated') {
      await new Promise((resolve) => worker.addEventListener('statechange',
        () => { if (worker.state === 'activated') resolve(); }));
    }
    window.limitsRegistration = registration;
    return worker.state;
  })();
  window.limitAsk = (message) => new Promise((resolve, reject) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = (event) => {
      if (event.data && event.data.ok) resolve(event.data);
      else reject(new Error((event.data && event.data.error) || 'no reply'));
    };
    limitsRegistration.active.postMessage(message, [channel.port2]);
  });
  window.limitBatch = async (runs, size) => {
    const ms = [];
    let durability = null;
    for (let r = 0; r < runs; r++) {
      const items = [];
      for (let i = 0; i < size; i++) items.push(['batch-' + r + '-' + i, rsValue('batch-' + i, i)]);
      const t = performance.now();
      const reply = await limitAsk({ op: 'many', items });
      ms.push(performance.now() - t);
      durability = reply.durability;
    }
    return { ms, durability };
  };
  window.limitUnregister = () => limitsRegistration.unregister();
  true"#;

/// Opens `/rangersync.html` on a fresh server, registers `SyncClient` (a long retry delay so
/// that only the triggers under test start a flush; no `appShell`, so the worker caches nothing of
/// the app), and delivers what `register` queued. Returns the page and what `register`
/// made the page download.
async fn rangersync_page(
    browser: &TestBrowser,
    workers: &ServiceWorkers,
    server: &TestServer,
    timeout_ms: u32,
) -> Result<(Page, Value)> {
    let origin = server.url();
    let page = browser.open(&format!("{origin}/rangersync.html")).await?;
    eval(&page, TIMED_JS).await?;
    let register = eval(
        &page,
        &format!(
            r#"(async () => {{
    const t0 = performance.now();
    const {{ default: init, SyncClient }} = await import('/pkg/rangersync_page.js');
    await init();
    window.client = await SyncClient.register({{
      swUrl: '/sw.js', serverUrl: location.origin,
      retry: {{ baseDelayMs: 60000, maxDelayMs: 60000 }}, timeoutMs: {timeout_ms},
    }});
    return {{ mode: client.mode, ms: performance.now() - t0, loaded: {} }};
  }})()"#,
            resources_since_js("t0")
        ),
    )
    .await?;
    if register["mode"] != "worker" {
        return Err(format!(
            "rangersync runs in {} mode, not in the worker",
            register["mode"]
        )
        .into());
    }
    eval(&page, RS_HELPERS_JS).await?;
    wait_for_controller(&page).await?;
    workers.activated(&origin).await?;
    job(&page, "rsDrain(60000)", STEP_TIMEOUT).await?;
    Ok((page, register))
}

async fn bench_rangersync(
    browser: &TestBrowser,
    workers: &ServiceWorkers,
    www: &Path,
    sizes: Sizes,
) -> Map<String, Value> {
    let mut results = Map::new();
    let mut server = match TestServer::start_serving(www.to_path_buf()).await {
        Ok(server) => server,
        Err(e) => {
            results.insert("error".into(), json!(e.to_string()));
            return results;
        }
    };
    let origin = server.url();
    // The client's default reply timeout: the write rows see what an app sees.
    let (page, register) = match rangersync_page(browser, workers, &server, 10_000).await {
        Ok(opened) => opened,
        Err(e) => {
            results.insert("error".into(), json!(e.to_string()));
            return results;
        }
    };
    results.insert("register".into(), register);
    let n = sizes.writes;
    // The limits worker is registered now: its script cannot be fetched once the server is down.
    let limits_registered = async {
        eval(&page, LIMITS_JS).await?;
        job(&page, "limitsReady", Duration::from_secs(60)).await
    }
    .await
    .map_err(|e| e.to_string());

    server.stop().await;
    for (key, concurrency) in WRITE_ROWS {
        record(&mut results, key, async {
            let run = job(
                &page,
                &format!(
                    "timed({n}, {concurrency}, (i) => client.put('bench', '{key}-' + i, rsValue('{key}-' + i, i)).then(() => 'acked'))"
                ),
                STEP_TIMEOUT,
            )
            .await?;
            Ok(timing(&run, n))
        })
        .await;
    }
    record(&mut results, "put_many", async {
        let run = job(
            &page,
            &format!("rsPutMany('many-', {n}, {PUT_MANY_BATCH}, 1)"),
            STEP_TIMEOUT,
        )
        .await?;
        let mut timing = timing(&run, n);
        timing["batch"] = json!(PUT_MANY_BATCH);
        Ok(timing)
    })
    .await;
    record(&mut results, "queued_after_writes", async {
        eval(&page, "client.status().then((s) => s.pending)").await
    })
    .await;
    let limits = measure_limits(workers, &page, &origin, n, limits_registered).await;
    results.insert("limits".into(), Value::Object(limits));

    // Cold start: the queue holds what the write rows left; the server holds every answer.
    // The page is closed first: only the `sync` event may start the worker.
    let _ = page.close().await;
    record(&mut results, "cold_start", async {
        server.restart().await?;
        hold_push_answers(&server).await?;
        let cold = measure_cold_start(workers, &server, &origin, SYNC_TAG, sizes.cold_runs).await;
        server.clear_faults().await?;
        cold
    })
    .await;
    server.stop().await;

    // Each drain on a fresh origin: an empty outbox, then exactly `n` queued writes.
    for (key, n) in [("drain", sizes.drain), ("drain_large", sizes.drain_large)] {
        if n == 0 {
            continue;
        }
        record(&mut results, key, async {
            let mut server = TestServer::start_serving(www.to_path_buf()).await?;
            let origin = server.url();
            // Filling is setup, not a row: one `putMany` of 500 at a time, with a long reply
            // timeout (4 such calls in flight took over the default 10 s at 100,000 queued).
            let (page, _) = rangersync_page(browser, workers, &server, 120_000).await?;
            let before = PushCounts::of(&server).await?;
            server.stop().await;
            let fill = job(
                &page,
                &format!("rsPutMany('d-', {n}, 500, 1)"),
                STEP_TIMEOUT,
            )
            .await?;
            let mut drain =
                measure_drain(browser, workers, &mut server, before, &origin, SYNC_TAG, n).await?;
            drain["fill"] = timing(&fill, n);
            let _ = page.close().await;
            server.stop().await;
            Ok(drain)
        })
        .await;
    }
    record(
        &mut results,
        "navigation",
        measure_navigation(browser, workers, www),
    )
    .await;
    results
}

/// The browser's limits in the rangersync page (see [`LIMITS_JS`], registered by the caller
/// while the server was up), with the server still stopped: `echo` (sequential message round trips), `put_*` (one strict put a message, at each
/// write row's concurrency), `batch` (one strict transaction of [`LIMIT_BATCH`] records). Then
/// the limits worker is unregistered and this waits until the DevTools protocol has seen it go,
/// so that the cold start below finds rangersync's registration only.
async fn measure_limits(
    workers: &ServiceWorkers,
    page: &Page,
    origin: &str,
    n: usize,
    registered: std::result::Result<Value, String>,
) -> Map<String, Value> {
    let mut limits = Map::new();
    if let Err(e) = registered {
        limits.insert("error".into(), json!(e));
        return limits;
    }
    // It may have stopped while idle during the write rows: start it before timing anything.
    if let Err(e) = job(
        page,
        "timed(20, 1, () => limitAsk({ op: 'echo' }).then(() => 'echoed'))",
        Duration::from_secs(60),
    )
    .await
    {
        limits.insert("error".into(), json!(e.to_string()));
        return limits;
    }
    record(&mut limits, "echo", async {
        let run = job(
            page,
            &format!(
                "timed({LIMIT_ECHOES}, 1, () => limitAsk({{ op: 'echo' }}).then(() => 'echoed'))"
            ),
            STEP_TIMEOUT,
        )
        .await?;
        Ok(timing(&run, LIMIT_ECHOES))
    })
    .await;
    for (key, concurrency) in WRITE_ROWS {
        record(&mut limits, key, async {
            let run = job(
                page,
                &format!(
                    "timed({n}, {concurrency}, (i) => limitAsk({{ op: 'put', key: '{key}-' + i, value: rsValue('{key}-' + i, i) }}).then((r) => r.durability))"
                ),
                STEP_TIMEOUT,
            )
            .await?;
            Ok(timing(&run, n))
        })
        .await;
    }
    record(&mut limits, "batch", async {
        let run = job(
            page,
            &format!("limitBatch({LIMIT_BATCH_RUNS}, {LIMIT_BATCH})"),
            STEP_TIMEOUT,
        )
        .await?;
        let mut ms: Vec<f64> = run["ms"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_f64)
            .collect();
        ms.sort_by(f64::total_cmp);
        let median = percentile(&ms, 50.0);
        Ok(json!({
            "records": LIMIT_BATCH,
            "runs": LIMIT_BATCH_RUNS,
            "median_ms": median,
            "rate": LIMIT_BATCH as f64 * 1000.0 / median,
            "ms": run["ms"],
            "durability": run["durability"],
        }))
    })
    .await;
    let expected_scope = format!("{origin}/");
    let gone = async {
        job(page, "limitUnregister()", Duration::from_secs(60)).await?;
        wait_until(
            "only rangersync's registration is left",
            Duration::from_secs(30),
            || async {
                let registration = workers.registration(origin).await?;
                Ok((registration.scope == expected_scope).then_some(()))
            },
        )
        .await
    };
    if let Err(e) = gone.await {
        limits.insert("unregister_error".into(), json!(e.to_string()));
    }
    limits
}

/// The navigation timing of the page it runs in, once its load event has ended: `ms` is
/// `loadEventEnd - startTime` (from the start of the navigation, before any service worker
/// is looked up or started, to the end of the load event).
const NAVIGATION_TIMING_JS: &str = r#"new Promise((resolve) => {
    const read = () => {
      const e = performance.getEntriesByType('navigation')[0];
      if (e && e.loadEventEnd > 0) {
        resolve({ ms: e.loadEventEnd - e.startTime, worker_start: e.workerStart,
                  response_end: e.responseEnd,
                  controlled: navigator.serviceWorker.controller !== null });
      } else {
        setTimeout(read, 5);
      }
    };
    read();
  })"#;

/// A fetch POST no rule captures (`/api/health` answers a POST 405 without touching the
/// database), timed in the page from the call to the end of the body.
const PLAIN_POST_JS: &str = r#"(async () => {
    const t = performance.now();
    const response = await fetch('/api/health', { method: 'POST',
      headers: { 'content-type': 'application/json' }, body: '{}' });
    await response.arrayBuffer();
    return { ms: performance.now() - t, status: response.status,
             controlled: navigator.serviceWorker.controller !== null };
  })()"#;

/// What rangersync's worker costs a page while it is stopped (the usual state of a worker
/// between visits): two fresh servers serving the same files on two origins, one with
/// rangersync registered (nothing queued), one with no service worker at all. For each of
/// [`NAVIGATION_RUNS`] runs and each side in turn: stop the worker (confirmed), navigate the
/// side's tab to `/nav.html?run=N` (navigation timing, and the wall clock of the CDP
/// navigation), stop the worker again (confirmed), then a fetch POST from that page. Both
/// sides go through the same stop procedure. Medians, and with ÷ without.
async fn measure_navigation(
    browser: &TestBrowser,
    workers: &ServiceWorkers,
    www: &Path,
) -> Result<Value> {
    let with_server = TestServer::start_serving(www.to_path_buf()).await?;
    let without_server = TestServer::start_serving(www.to_path_buf()).await?;
    let with_origin = with_server.url();
    let without_origin = without_server.url();
    let (with_page, _) = rangersync_page(browser, workers, &with_server, 10_000).await?;
    let registration = workers.registration(&with_origin).await?;
    let without_page = browser.open(&format!("{without_origin}/nav.html")).await?;
    let sides = [
        ("with", &with_page, &with_origin),
        ("without", &without_page, &without_origin),
    ];
    // [side][navigation, navigation wall clock, fetch]
    let mut times = [
        [Vec::new(), Vec::new(), Vec::new()],
        [Vec::new(), Vec::new(), Vec::new()],
    ];
    let mut statuses = Vec::new();
    for run in 0..NAVIGATION_RUNS {
        for (s, (side, page, origin)) in sides.iter().enumerate() {
            let controlled = *side == "with";
            stop_confirmed(workers, &registration.id, &with_origin).await?;
            let t0 = Instant::now();
            page.goto(format!("{origin}/nav.html?run={run}"))
                .await
                .map_err(|e| format!("navigating to {origin}/nav.html: {e}"))?;
            let wall = t0.elapsed().as_secs_f64() * 1000.0;
            let navigation = eval(page, NAVIGATION_TIMING_JS).await?;
            if navigation["controlled"] != controlled {
                return Err(format!(
                    "{side} the worker, run {run}: the page's controlled state is {}",
                    navigation["controlled"]
                )
                .into());
            }
            stop_confirmed(workers, &registration.id, &with_origin).await?;
            let fetch = eval(page, PLAIN_POST_JS).await?;
            statuses.push(fetch["status"].clone());
            let number = |v: &Value| v.as_f64().ok_or_else(|| format!("no time in {v}"));
            times[s][0].push(number(&navigation["ms"])?);
            times[s][1].push(wall);
            times[s][2].push(number(&fetch["ms"])?);
        }
    }
    let _ = with_page.close().await;
    let _ = without_page.close().await;
    let median = |v: &[f64]| {
        let mut sorted = v.to_vec();
        sorted.sort_by(f64::total_cmp);
        percentile(&sorted, 50.0)
    };
    let [with, without] = &times;
    statuses.sort_by_key(Value::to_string);
    statuses.dedup();
    Ok(json!({
        "runs": NAVIGATION_RUNS,
        "with_navigation_ms": median(&with[0]),
        "without_navigation_ms": median(&without[0]),
        "navigation_ratio": median(&with[0]) / median(&without[0]),
        "with_navigation_wall_ms": median(&with[1]),
        "without_navigation_wall_ms": median(&without[1]),
        "navigation_wall_ratio": median(&with[1]) / median(&without[1]),
        "with_fetch_ms": median(&with[2]),
        "without_fetch_ms": median(&without[2]),
        "fetch_ratio": median(&with[2]) / median(&without[2]),
        "fetch_statuses": statuses,
        "samples": { "with": with, "without": without },
    }))
}

async fn bench_workbox(
    browser: &TestBrowser,
    workers: &ServiceWorkers,
    www: &Path,
    sizes: Sizes,
) -> Map<String, Value> {
    let mut results = Map::new();
    if let Err(e) = bench_workbox_into(browser, workers, www, sizes, &mut results).await {
        results.insert("error".into(), json!(e.to_string()));
    }
    results
}

async fn bench_workbox_into(
    browser: &TestBrowser,
    workers: &ServiceWorkers,
    www: &Path,
    sizes: Sizes,
    results: &mut Map<String, Value>,
) -> Result {
    let n = sizes.writes;
    let mut server = TestServer::start_serving(www.to_path_buf()).await?;
    let origin = server.url();
    let page = browser.open(&format!("{origin}/workbox.html")).await?;
    eval(&page, TIMED_JS).await?;
    // register() is a browser API here: what the page loads for it is read the same way.
    let register = job(
        &page,
        &format!(
            "(async () => {{ const t0 = performance.now(); await window.ready; \
             return {{ ms: performance.now() - t0, loaded: {} }}; }})()",
            resources_since_js("0")
        ),
        Duration::from_secs(60),
    )
    .await?;
    // The page's own HTML is not part of registering.
    let mut register = register;
    if let Some(loaded) = register["loaded"].as_array_mut() {
        loaded.retain(|r| r["path"] != "/workbox.html");
    }
    results.insert("register".into(), register);
    wait_for_controller(&page).await?;
    workers.activated(&origin).await?;
    let wb = |command: Value| format!("wb({command})");
    let write = |queue: &str, prefix: &str, count: usize, concurrency: usize| {
        format!("timed({count}, {concurrency}, (i) => wbWrite('{queue}', '{prefix}' + i, i))")
    };

    server.stop().await;
    for (key, concurrency) in WRITE_ROWS {
        record(results, key, async {
            let run = job(&page, &write("put", key, n, concurrency), STEP_TIMEOUT).await?;
            Ok(timing(&run, n))
        })
        .await;
    }
    record(results, "queued_after_writes", async {
        Ok(job(
            &page,
            &wb(json!({ "cmd": "size", "queue": "put" })),
            STEP_TIMEOUT,
        )
        .await?["size"]
            .clone())
    })
    .await;

    // The cold-start queue: one entry per run is lost (Workbox deletes an entry before sending
    // it, and the worker is stopped while the server holds the answer), so fill it generously.
    let cold_fill = sizes.cold_runs * 2 + 10;
    job(&page, &write("cold", "cold-", cold_fill, 1), STEP_TIMEOUT).await?;
    let drain_fill = if sizes.drain > 0 {
        Some(
            job(
                &page,
                &write("drain", "d-", sizes.drain, FILL_CONCURRENCY),
                STEP_TIMEOUT,
            )
            .await?,
        )
    } else {
        None
    };

    record(results, "cold_start", async {
        server.restart().await?;
        hold_push_answers(&server).await?;
        let tag = format!("{WB_TAG_PREFIX}bench-cold");
        let cold = measure_cold_start(workers, &server, &origin, &tag, sizes.cold_runs).await;
        server.clear_faults().await?;
        // Deliver what is left of the cold-start queue now, or Chrome's own retry of its
        // (ungated) sync would send it in the middle of the drain below.
        workers.dispatch_sync(&origin, &tag, false).await?;
        wait_until(
            "the cold-start queue is empty",
            Duration::from_secs(120),
            || async {
                let size = eval(&page, &wb(json!({ "cmd": "size", "queue": "cold" }))).await?;
                Ok((size["size"] == 0).then_some(()))
            },
        )
        .await?;
        cold
    })
    .await;

    if let Some(fill) = drain_fill {
        let n = sizes.drain;
        record(results, "drain", async {
            // Chrome's own sync events for the gated queue resolve without replaying; wait
            // until none is pending, else one would replay beside ours (and send each twice).
            wait_until(
                "no Workbox sync registration is pending",
                Duration::from_secs(60),
                || async {
                    let tags = eval(&page, SYNC_TAGS_JS).await?;
                    Ok(tags
                        .as_array()
                        .is_some_and(|t| {
                            !t.iter().any(|t| t == "workbox-background-sync:bench-drain")
                        })
                        .then_some(()))
                },
            )
            .await?;
            let queued = job(
                &page,
                &wb(json!({ "cmd": "size", "queue": "drain" })),
                STEP_TIMEOUT,
            )
            .await?;
            job(
                &page,
                &wb(json!({ "cmd": "arm", "queue": "drain", "on": true })),
                STEP_TIMEOUT,
            )
            .await?;
            let tag = format!("{WB_TAG_PREFIX}bench-drain");
            // The queue replays nothing until armed: nothing is delivered before the event.
            let before = PushCounts::of(&server).await?;
            let mut drain =
                measure_drain(browser, workers, &mut server, before, &origin, &tag, n).await?;
            drain["fill"] = timing(&fill, n);
            drain["queued_before"] = queued["size"].clone();
            Ok(drain)
        })
        .await;
    }
    if sizes.drain_large > 0 {
        // Not run: at Workbox's rates a large drain takes many minutes; xtask estimates it from
        // the measured drain and says so.
        results.insert(
            "drain_large".into(),
            json!({ "skipped": true, "n": sizes.drain_large }),
        );
    }
    let _ = page.close().await;
    server.stop().await;
    Ok(())
}
