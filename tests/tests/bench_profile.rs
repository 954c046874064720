//! Where the worker's time goes, for the bench rows that miss their targets: a cold start phase
//! by phase, and CPU profiles of `putMany` and of 100 `put`s in flight, taken in the worker by
//! CDP's `Profiler`. `#[ignore]`d: CI never runs it. `cargo xtask bench --profile` runs it
//! against a copy of `www/` whose worker wasm keeps its function names, and writes the Markdown
//! it leaves in `$RANGERSYNC_PROFILE_REPORT` into BENCHMARKS.md.
//!
//! - Cold start: the copy's `rangersync-worker.js` is the shipped one with marks added (each
//!   `performance.now()`, in ms since the worker's time origin, kept in `self.__t`), a queue of
//!   [`QUEUED`] writes, the server holding every push; per run the worker is stopped
//!   (confirmed), a `sync` event dispatched, and once the server has received the push the
//!   marks are read from the worker by `Runtime.evaluate`. The median of [`COLD_RUNS`].
//! - Writes: [`WRITES`] writes with the server down, timed from the page, while the worker's
//!   CPU is sampled every 200 µs. Self time is the function on top of the stack; total time
//!   counts each function once per sample it is anywhere on the stack.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use rangersync_e2e::{
    eval, serial, worker_page, www_dir, www_with, Result, ServiceWorkers, TestBrowser, TestServer,
    WorkerSession, SYNC_TAG,
};
use serde_json::{json, Value};

const QUEUED: usize = 2_000;
const COLD_RUNS: usize = 10;
const WRITES: usize = 3_000;

/// Marks added at the top of the worker script: its start, every `fetch` it makes (the
/// engine's `fetch` is `self.fetch`), the `sync` event's dispatch.
const MARKS: &str = r#"
self.__t = { script: performance.now() };
const profiledFetch = self.fetch;
self.fetch = function (input) {
  const url = typeof input === 'string' ? input : (input && input.url) || String(input);
  (self.__t.fetches = self.__t.fetches || []).push([performance.now(), url]);
  return profiledFetch.apply(this, arguments);
};
self.addEventListener('sync', () => { self.__t.sync = performance.now(); });
"#;

/// `(what the shipped worker script says, what it says with a mark)`: each must be found, or
/// the script changed and the phases would silently go missing.
const MARKED: [(&str, &str); 4] = [
    (
        "importScripts(pkgUrl + GLUE_FILE);",
        "importScripts(pkgUrl + GLUE_FILE); self.__t.glue = performance.now();",
    ),
    (
        "loading = wasmResponse()\n",
        "loading = wasmResponse().then((r) => { self.__t.cached = performance.now(); return r; })\n",
    ),
    (
        ".then(compile)\n",
        ".then(compile).then((m) => { self.__t.compiled = performance.now(); return m; })\n",
    ),
    (
        ".then(() => rangersync_wasm.start())",
        ".then(() => { self.__t.instantiated = performance.now(); return rangersync_wasm.start(); }).then(() => { self.__t.started = performance.now(); })",
    ),
];

/// The phases, in order: (mark, what it is).
const PHASES: [(&str, &str); 8] = [
    ("script", "the worker script runs"),
    ("glue", "the wasm-bindgen glue is imported"),
    ("sync", "the `sync` event is dispatched to the script"),
    ("cached", "the wasm is read from Cache Storage"),
    ("compiled", "it is compiled (`compileStreaming`)"),
    ("instantiated", "it is instantiated"),
    ("started", "the engine is open (database, state, counts)"),
    ("push", "the first push `fetch` is called"),
];

fn marked_worker_script() -> Result<String> {
    let shipped = std::fs::read_to_string(www_dir()?.join("rangersync-worker.js"))?;
    let mut script = shipped;
    for (from, to) in MARKED {
        if !script.contains(from) {
            return Err(
                format!("rangersync-worker.js no longer has `{from}`: update MARKED").into(),
            );
        }
        script = script.replacen(from, to, 1);
    }
    Ok(format!("{MARKS}\n{script}"))
}

/// The requests the server's fault rules have taken (each counted as it arrives).
async fn push_arrivals(server: &TestServer) -> Result<u64> {
    let stats = server.stats().await?;
    Ok(stats["faults_served"]
        .as_u64()
        .ok_or_else(|| format!("no faults_served in {stats}"))?)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `putMany` of `n` ~100-byte values, 100 a call, one call at a time.
fn fill_js(prefix: &str, n: usize) -> String {
    format!(
        "(async () => {{ const t0 = performance.now(); for (let i = 0; i < {n}; i += 100) {{ const items = []; for (let j = i; j < Math.min(i + 100, {n}); j++) items.push({{ collection: 'bench', key: '{prefix}' + j, value: {{ title: 'note ' + j, body: 'x'.repeat(60), n: j }} }}); await client.putMany(items); }} return performance.now() - t0; }})()"
    )
}

/// `n` `put`s, 100 in flight.
fn puts_js(n: usize) -> String {
    format!(
        "(async () => {{ const t0 = performance.now(); let next = 0; const one = async () => {{ while (next < {n}) {{ const j = next++; await client.put('bench', 'p' + j, {{ title: 'note ' + j, body: 'x'.repeat(60), n: j }}); }} }}; await Promise.all(Array.from({{ length: 100 }}, one)); return performance.now() - t0; }})()"
    )
}

async fn cold_start(report: &mut String) -> Result {
    let dir = www_with(&[("rangersync-worker.js", &marked_worker_script()?)])?;
    let mut server = TestServer::start_serving(dir.path().to_path_buf()).await?;
    let browser = TestBrowser::launch().await?;
    let workers = ServiceWorkers::enable(&browser).await?;
    let page = worker_page(&browser, &server, "{}").await?;
    server.stop().await;
    eval(&page, &fill_js("q", QUEUED)).await?;
    let _ = page.close().await;
    server.restart().await?;
    server
        .add_faults(
            json!([{ "path": "/api/sync/push", "method": "POST", "status": 503,
                              "delay_ms": 600_000, "times": 100_000 }]),
        )
        .await?;
    let origin = server.url();
    let registration = workers.registration(&origin).await?;
    let mut phases: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut received = Vec::new();
    for run in 0..COLD_RUNS {
        workers.stop_until_stopped(&registration.id).await?;
        let before = push_arrivals(&server).await?;
        let t0 = Instant::now();
        workers.dispatch_sync(&origin, SYNC_TAG, false).await?;
        while push_arrivals(&server).await? == before {
            if t0.elapsed() > Duration::from_secs(30) {
                return Err(format!("cold start run {run}: no push within 30 s").into());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        received.push(t0.elapsed().as_secs_f64() * 1000.0);
        let mut session = WorkerSession::attach(&browser, &origin).await?;
        let marks = session
            .call(
                "Runtime.evaluate",
                json!({ "expression": "JSON.stringify(self.__t)", "returnByValue": true }),
            )
            .await?;
        session.detach().await;
        let marks: Value = serde_json::from_str(marks["result"]["value"].as_str().unwrap_or(""))
            .map_err(|e| format!("run {run}: the worker's marks are not JSON: {e}"))?;
        for (mark, _) in PHASES {
            let at = if mark == "push" {
                marks["fetches"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|f| f[1].as_str().is_some_and(|u| u.ends_with("/api/sync/push")))
                    .and_then(|f| f[0].as_f64())
            } else {
                marks[mark].as_f64()
            };
            let at = at.ok_or_else(|| format!("run {run}: no `{mark}` mark in {marks}"))?;
            phases.entry(mark).or_default().push(at);
        }
    }
    workers.stop_until_stopped(&registration.id).await?;
    let _ = writeln!(
        report,
        "### Cold start, phase by phase\n\n{QUEUED} writes queued, the server holding every push; \
         median of {COLD_RUNS} runs, in ms since the worker's time origin. The `sync` event to the \
         push's arrival at the server, timed outside the browser: **{:.0} ms** (the main bench's \
         cold-start row).\n\n| phase | at (ms) | step (ms) |\n|---|---|---|",
        median(&mut received)
    );
    let mut previous = 0.0;
    for (mark, what) in PHASES {
        let at = median(phases.get_mut(mark).map_or(&mut [][..], |v| &mut v[..]));
        let _ = writeln!(report, "| {what} | {at:.1} | {:.1} |", at - previous);
        previous = at;
    }
    report.push('\n');
    browser.close().await?;
    Ok(())
}

/// One sampled function: `name [file]`, with Rust's hash suffixes and closure markers dropped
/// so that one function's pieces add up.
fn frame_name(frame: &Value) -> String {
    let name = frame["functionName"].as_str().unwrap_or_default();
    let mut clean = String::with_capacity(name.len());
    for part in name.split("::") {
        let is_hash = part.len() == 17
            && part.starts_with('h')
            && part[1..].bytes().all(|b| b.is_ascii_hexdigit());
        if is_hash || part == "{{closure}}" {
            continue;
        }
        if !clean.is_empty() {
            clean.push_str("::");
        }
        clean.push_str(part);
    }
    let clean = clean
        .trim_end_matches(" externref shim")
        .trim_end_matches(" multivalue shim")
        .to_string();
    let clean: String = if clean.chars().count() > 100 {
        clean.chars().take(99).chain(['…']).collect()
    } else {
        clean
    };
    let file = frame["url"]
        .as_str()
        .unwrap_or_default()
        .rsplit('/')
        .next()
        .unwrap_or_default();
    // The worker's wasm is named by a hash of its bytes: the report names it the same in every run.
    let file = if file.starts_with("rangersync_sw_bg.") && file.ends_with(".wasm") {
        "worker wasm"
    } else {
        file
    };
    let shown = if clean.is_empty() {
        "(anonymous)".to_string()
    } else {
        clean
    };
    if file.is_empty() {
        format!("`{shown}` (browser)")
    } else {
        format!("`{shown}` ({file})")
    }
}

/// Self and total time per function of a CDP profile, in ms, and the whole sampled time.
fn tally(profile: &Value) -> (HashMap<String, f64>, HashMap<String, f64>, f64) {
    let nodes = profile["nodes"].as_array().cloned().unwrap_or_default();
    let mut name_of = HashMap::new();
    let mut parent = HashMap::new();
    for node in &nodes {
        let id = node["id"].as_u64().unwrap_or(0);
        name_of.insert(id, frame_name(&node["callFrame"]));
        for child in node["children"].as_array().into_iter().flatten() {
            parent.insert(child.as_u64().unwrap_or(0), id);
        }
    }
    let (mut own, mut total, mut sampled) = (HashMap::new(), HashMap::new(), 0.0);
    let samples = profile["samples"].as_array().cloned().unwrap_or_default();
    let deltas = profile["timeDeltas"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (sample, delta) in samples.iter().zip(&deltas) {
        let ms = delta.as_f64().unwrap_or(0.0) / 1000.0;
        sampled += ms;
        let Some(mut id) = sample.as_u64() else {
            continue;
        };
        *own.entry(name_of[&id].clone()).or_insert(0.0) += ms;
        let mut seen = HashSet::new();
        loop {
            let name = &name_of[&id];
            if seen.insert(name.clone()) {
                *total.entry(name.clone()).or_insert(0.0) += ms;
            }
            match parent.get(&id) {
                Some(&p) => id = p,
                None => break,
            }
        }
    }
    (own, total, sampled)
}

fn top(times: &HashMap<String, f64>, keep: impl Fn(&str) -> bool, n: usize) -> Vec<(&str, f64)> {
    let mut rows: Vec<(&str, f64)> = times
        .iter()
        .filter(|(name, _)| keep(name))
        .map(|(name, ms)| (name.as_str(), *ms))
        .collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    rows.truncate(n);
    rows
}

async fn write_profiles(report: &mut String) -> Result {
    let mut server = TestServer::start_serving(www_dir()?).await?;
    let browser = TestBrowser::launch().await?;
    let _workers = ServiceWorkers::enable(&browser).await?;
    let page = worker_page(&browser, &server, "{}").await?;
    let origin = server.url();
    server.stop().await;
    eval(&page, &fill_js("warm", 100)).await?;
    for (what, js) in [
        (
            format!("`putMany`, {WRITES} writes, 100 a call, one call at a time"),
            fill_js("m", WRITES),
        ),
        (
            format!("`put`, {WRITES} writes, 100 in flight"),
            puts_js(WRITES),
        ),
    ] {
        let mut session = WorkerSession::attach(&browser, &origin).await?;
        session.call("Profiler.enable", json!({})).await?;
        session
            .call("Profiler.setSamplingInterval", json!({ "interval": 200 }))
            .await?;
        session.call("Profiler.start", json!({})).await?;
        let ms = eval(&page, &js).await?.as_f64().unwrap_or(f64::NAN);
        let profile = session.call("Profiler.stop", json!({})).await?;
        session.detach().await;
        let (own, total, sampled) = tally(&profile["profile"]);
        let idle = own.get("`(idle)` (browser)").copied().unwrap_or(0.0);
        let busy = sampled - idle;
        let share = |t: f64| format!("{:.0}%", 100.0 * t / busy.max(f64::MIN_POSITIVE));
        let _ = writeln!(
            report,
            "### {what}\n\n{:.0} ms from the page, {:.0} writes/s. The worker was busy {:.0} ms \
             and idle {:.0} ms (waiting: for IndexedDB's commits, for the page's next message). \
             Shares are of the busy time.\n\nBy self time (the function on top of the stack):\n\n\
             | function | self (ms) | share |\n|---|---|---|",
            ms,
            WRITES as f64 * 1000.0 / ms,
            busy,
            idle
        );
        let skip = |name: &str| name.starts_with("`(idle)`") || name.starts_with("`(root)`");
        for (name, t) in top(&own, |n| !skip(n), 12) {
            let _ = writeln!(report, "| {name} | {t:.1} | {} |", share(t));
        }
        let _ = writeln!(
            report,
            "\nrangersync's own functions by total time (anywhere on the stack):\n\n\
             | function | total (ms) | share |\n|---|---|---|"
        );
        for (name, t) in top(&total, |n| n.starts_with("`rangersync_"), 14) {
            let _ = writeln!(report, "| {name} | {t:.1} | {} |", share(t));
        }
        report.push('\n');
    }
    browser.close().await?;
    Ok(())
}

#[tokio::test]
#[ignore = "a profile: cargo xtask bench --profile"]
async fn where_the_worker_time_goes() -> Result {
    let _serial = serial().await;
    let out = std::env::var_os("RANGERSYNC_PROFILE_REPORT")
        .ok_or("RANGERSYNC_PROFILE_REPORT is not set: run `cargo xtask bench --profile`")?;
    let mut report = String::new();
    cold_start(&mut report).await?;
    write_profiles(&mut report).await?;
    print!("{report}");
    std::fs::write(out, report)?;
    Ok(())
}
