//! `cargo xtask bench`: measured, printed, never asserted.
//!
//! 1. Native: spawns the built server on a fresh database, pushes N mutations in batches
//!    over one keep-alive loopback connection, then sends them all again (every one must come
//!    back `duplicate`). Printed only; `cargo xtask bench --server` (PostgreSQL) is separate.
//! 2. Browser: rangersync beside Workbox 7.4.1 (a `NetworkOnly` route with a
//!    `BackgroundSyncPlugin`, bundled from npm by `bench/`) in the same headless Chromium against
//!    the same reference server, both timed from the page. The measuring code is the
//!    `#[ignore]`d test `tests/tests/bench_browser.rs`; it writes its results as JSON, and this
//!    module turns them into one table (printed, and written between the
//!    `<!-- bench:browser -->` markers of `BENCHMARKS.md` with the machine and the versions)
//!    and the chart `docs/bench-drain-10k.svg`. Workbox is bundled with npm and esbuild when
//!    `bench/dist/workbox-sw.js` is missing or older than its sources; when that fails, its
//!    cells say "not measured" (never numbers copied from a document).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::server::{self, Server};
use crate::util::{self, Result};

/// What to run and how big.
struct Options {
    mutations: usize,
    batch: usize,
    release: bool,
    native: bool,
    browser: bool,
    browser_release: bool,
    sizes: BrowserSizes,
}

/// The sizes of the browser half.
#[derive(Debug, Clone, Copy)]
struct BrowserSizes {
    writes: usize,
    drain: usize,
    drain_large: Option<usize>,
    cold_runs: usize,
}

/// Runs the benchmark. Native: `--mutations N` (20,000), `--batch B` (500), `--debug` to
/// measure the dev-profile server. Browser: `--writes N` (2,000) for the write rows,
/// `--drain N` (10,000) and `--drain-large N` (10 × `--drain`; 0 skips it) for the drains,
/// `--cold-runs N` (20), `--browser-release` to build the browser harness in release (slower to
/// build; the dev build is what `cargo xtask test` already compiled). `--native-only` /
/// `--browser-only` run one half. `--profile` profiles the worker instead (`bench_profile.rs`).
/// `--quote` only rewrites README.md's Measured quote from
/// BENCHMARKS.md.
pub fn run(args: &[String]) -> Result {
    if args.iter().any(|a| a == "--server") {
        return crate::bench_server::run(args);
    }
    if args.iter().any(|a| a == "--load") {
        return crate::bench_server::run_load(args);
    }
    if args.iter().any(|a| a == "--encryption") {
        return crate::bench_encryption::run();
    }
    if args.iter().any(|a| a == "--profile") {
        return crate::bench_profile::run();
    }
    if args.iter().any(|a| a == "--quote") {
        return crate::measured::write(&util::root());
    }
    let mut o = Options {
        mutations: 20_000,
        batch: 500,
        release: true,
        native: true,
        browser: true,
        browser_release: false,
        sizes: BrowserSizes {
            writes: 2_000,
            drain: 10_000,
            drain_large: None,
            cold_runs: 20,
        },
    };
    for (flag, value) in util::parse_flags(
        args,
        &[
            "--mutations",
            "--batch",
            "--writes",
            "--drain",
            "--drain-large",
            "--cold-runs",
        ],
        &[
            "--debug",
            "--native-only",
            "--browser-only",
            "--browser-release",
        ],
    )? {
        let number = || -> Result<usize> {
            value
                .unwrap_or_default()
                .parse()
                .map_err(|_| format!("{flag} needs a number"))
        };
        match flag.as_str() {
            "--mutations" => o.mutations = number()?,
            "--batch" => o.batch = number()?,
            "--writes" => o.sizes.writes = number()?,
            "--drain" => o.sizes.drain = number()?,
            "--drain-large" => o.sizes.drain_large = Some(number()?),
            "--cold-runs" => o.sizes.cold_runs = number()?,
            "--native-only" => o.browser = false,
            "--browser-only" => o.native = false,
            "--browser-release" => o.browser_release = true,
            _ => o.release = false,
        }
    }
    if o.mutations == 0 || o.batch == 0 || o.sizes.writes == 0 || o.sizes.cold_runs == 0 {
        return Err("--mutations, --batch, --writes and --cold-runs must be positive".into());
    }
    if !o.native && !o.browser {
        return Err("--native-only and --browser-only exclude each other".into());
    }
    if o.native {
        native(o.mutations, o.batch, o.release)?;
    }
    if o.browser {
        browser(o.sizes, o.browser_release)?;
    }
    Ok(())
}

/// The browser half: builds the wasm, bundles Workbox when possible, runs the ignored test,
/// then prints and writes the report.
fn browser(sizes: BrowserSizes, release: bool) -> Result {
    let chromium = crate::tools::ensure_browser()?.chromium;
    crate::build::build()?;
    let workbox_error = ensure_workbox_bundle().err();
    if let Some(message) = &workbox_error {
        eprintln!("xtask bench: Workbox not measured: {message}");
    }
    let results_path = util::target_dir().join("bench-browser.json");
    let _ = std::fs::remove_file(&results_path);
    let mut test = util::cargo();
    test.args(["test", "-p", "rangersync-e2e"]);
    if release {
        test.arg("--release");
    }
    test.args([
        "--test",
        "bench_browser",
        "--",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("RANGERSYNC_BENCH_WRITES", sizes.writes.to_string())
    .env("RANGERSYNC_BENCH_DRAIN", sizes.drain.to_string())
    .env(
        "RANGERSYNC_BENCH_DRAIN_LARGE",
        sizes.drain_large.unwrap_or(sizes.drain * 10).to_string(),
    )
    .env("RANGERSYNC_BENCH_COLD_RUNS", sizes.cold_runs.to_string())
    .env("RANGERSYNC_BENCH_RESULTS", &results_path)
    .env("RANGERSYNC_WWW", util::root().join("www"))
    .env("CHROMIUM", chromium);
    if let Some(message) = &workbox_error {
        test.env("RANGERSYNC_BENCH_WORKBOX_ERROR", message);
    }
    util::run(&mut test)?;
    let text = std::fs::read_to_string(&results_path)
        .map_err(|e| format!("{}: {e}", results_path.display()))?;
    let results: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not JSON: {e}", results_path.display()))?;
    report(&results)
}

/// `bench/dist/workbox-sw.js`, rebuilt when missing or older than its sources: `npm install`
/// (npm registry only), then esbuild into a classic-worker IIFE. `Err` is one line.
fn ensure_workbox_bundle() -> Result {
    let bench = util::root().join("bench");
    let bundle = bench.join("dist").join("workbox-sw.js");
    let modified = |p: &Path| p.metadata().and_then(|m| m.modified()).ok();
    let sources =
        ["entry.js", "package.json", "package-lock.json"].map(|f| modified(&bench.join(f)));
    if let Some(built) = modified(&bundle) {
        if sources.iter().all(|s| s.is_some_and(|s| s <= built)) {
            return Ok(());
        }
    }
    // A stale bundle must not be measured as if it were the current one.
    let _ = std::fs::remove_file(&bundle);
    let npm = util::which("npm").ok_or("npm not found (apt-get install npm)")?;
    let esbuild = bench.join("node_modules").join(".bin").join("esbuild");
    let installed = [
        "workbox-background-sync",
        "workbox-routing",
        "workbox-strategies",
    ]
    .iter()
    .all(|p| {
        bench
            .join("node_modules")
            .join(p)
            .join("package.json")
            .is_file()
    });
    if !installed || !util::is_executable(&esbuild) {
        util::run(
            util::cmd(npm)
                .current_dir(&bench)
                .args(["ci", "--no-audit", "--no-fund"]),
        )?;
    }
    util::run(util::cmd(&esbuild).current_dir(&bench).args([
        "entry.js",
        "--bundle",
        "--format=iife",
        "--minify",
        "--define:process.env.NODE_ENV=\"production\"",
        "--outfile=dist/workbox-sw.js",
    ]))
}

/// The native half: push and dedup throughput of the reference server.
fn native(mutations: usize, batch: usize, release: bool) -> Result {
    let binary = server::build(release)?;
    let scratch = util::ScratchDir::new("bench")?;
    let db = scratch.path().join("bench.db");
    let server = Server::spawn(
        &binary,
        &["--listen", "127.0.0.1:0", "--db", &db.to_string_lossy()],
    )?;
    let client_id = format!(
        "bench-{:x}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let bodies: Vec<String> = (0..mutations)
        .collect::<Vec<_>>()
        .chunks(batch)
        .map(|seqs| push_body(&client_id, seqs))
        .collect();
    let mut http = Http::connect(server.addr())?;

    let first = push_all(&mut http, &bodies, "applied")?;
    let again = push_all(&mut http, &bodies, "duplicate")?;
    drop(server);

    let profile = if release { "release" } else { "dev" };
    println!(
        "\nreference server ({profile}), {mutations} mutations in batches of {batch}, loopback"
    );
    println!(
        "{:<24} {:>10} {:>16} {:>14}",
        "phase", "time", "mutations/s", "ms/request"
    );
    for (phase, elapsed) in [("push (new)", first), ("re-send (dedup)", again)] {
        let secs = elapsed.as_secs_f64().max(1e-9);
        println!(
            "{phase:<24} {:>10} {:>16.0} {:>14.2}",
            util::fmt_duration(elapsed),
            mutations as f64 / secs,
            secs * 1000.0 / bodies.len() as f64
        );
    }
    Ok(())
}

/// A push request body as PROTOCOL.md describes it.
fn push_body(client_id: &str, seqs: &[usize]) -> String {
    let mutations: Vec<serde_json::Value> = seqs
        .iter()
        .map(|&i| {
            serde_json::json!({
                "client_id": client_id,
                "seq": i + 1,
                "collection": "bench",
                "key": format!("k{}", i % 1000),
                "op": "put",
                "value": { "title": format!("note {i}"), "body": "x".repeat(64) },
                "updated_at": 1_764_000_000_000u64 + i as u64,
            })
        })
        .collect();
    serde_json::json!({ "client_id": client_id, "mutations": mutations }).to_string()
}

/// Sends every body; each result must have the `expected` status.
fn push_all(http: &mut Http, bodies: &[String], expected: &str) -> Result<Duration> {
    let start = Instant::now();
    for body in bodies {
        let (status, answer) = http.post("/api/sync/push", body)?;
        if status != 200 {
            return Err(format!("push answered {status}: {answer}"));
        }
        let answer: serde_json::Value =
            serde_json::from_str(&answer).map_err(|e| format!("push answer is not JSON: {e}"))?;
        let results = answer["results"]
            .as_array()
            .ok_or("push answer has no `results`")?;
        if let Some(bad) = results.iter().find(|r| r["status"] != expected) {
            return Err(format!("expected every result `{expected}`, got {bad}"));
        }
    }
    Ok(start.elapsed())
}

/// A minimal blocking HTTP/1.1 client over one keep-alive connection.
struct Http {
    addr: SocketAddr,
    reader: BufReader<TcpStream>,
}

impl Http {
    fn connect(addr: SocketAddr) -> Result<Http> {
        let stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(Http {
            addr,
            reader: BufReader::new(stream),
        })
    }

    /// POSTs a JSON body; returns the status code and the body as text.
    fn post(&mut self, path: &str, body: &str) -> Result<(u16, String)> {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        self.reader
            .get_mut()
            .write_all(request.as_bytes())
            .map_err(|e| format!("send: {e}"))?;
        self.read_response().map_err(|e| format!("receive: {e}"))
    }

    fn read_response(&mut self) -> std::io::Result<(u16, String)> {
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no status line"))?;
        let mut length = None;
        let mut chunked = false;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.parse::<usize>().ok();
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = value.eq_ignore_ascii_case("chunked");
                }
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| bad("bad chunk size"))?;
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else {
            let length = length.ok_or_else(|| bad("no Content-Length"))?;
            body.resize(length, 0);
            self.reader.read_exact(&mut body)?;
        }
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

// ---------------------------------------------------------------------------
// The browser report: one table, BENCHMARKS.md, the drain chart

/// The markers of this command's part of `BENCHMARKS.md` (`--server` writes its own part).
pub const BEGIN_MARKER: &str = "<!-- bench:browser -->";
pub const END_MARKER: &str = "<!-- /bench:browser -->";
/// The chart of the (small) drain, relative to the repository root.
const CHART: &str = "docs/bench-drain-10k.svg";
/// What the start-up worker is made of besides its wasm (`www/sw.js` imports the library, which
/// imports the glue, which fetches the wasm: see [`worker_wasm`]).
const RANGERSYNC_WORKER_SCRIPTS: [&str; 3] = [
    "www/sw.js",
    "www/rangersync-worker.js",
    "www/pkg/rangersync_sw.js",
];
const WORKBOX_WORKER_FILES: [&str; 1] = ["bench/dist/workbox-sw.js"];

/// A measured number, or why there is none.
type Measured = std::result::Result<f64, String>;

/// `results[peer][phase][field]`, or the error recorded for the peer or the phase.
fn measured(peer: &Value, phase: &str, field: &str) -> Measured {
    if let Some(error) = peer["error"].as_str() {
        return Err(error.to_string());
    }
    let phase_value = &peer[phase];
    if let Some(error) = phase_value["error"].as_str() {
        return Err(error.to_string());
    }
    phase_value[field]
        .as_f64()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("no {phase}.{field} in the results"))
}

/// Which way is better for a row.
#[derive(Clone, Copy, PartialEq)]
enum Better {
    Lower,
    Higher,
}

/// A target from issue 19, checked against the rangersync number (and Workbox's, for ratios).
#[derive(Clone, Copy)]
enum Target {
    None,
    AtMost(f64, &'static str),
    AtLeast(f64, &'static str),
    /// At most this many times Workbox's number (lower is better).
    AtMostTimesWorkbox(f64, &'static str),
    /// At most this many times the row's first limit (lower is better).
    AtMostTimesLimit(f64, &'static str),
    /// A target for another size than this run's: shown, not checked.
    Text(&'static str),
}

impl Target {
    fn cell(self, rangersync: &Measured, workbox: &Measured, limit: Option<&Measured>) -> String {
        let (met, text) = match (self, rangersync) {
            (Target::None, _) => return String::new(),
            (Target::Text(t), _) => return format!("{t} (other size: not checked)"),
            (Target::AtMost(_, t), Err(_))
            | (Target::AtLeast(_, t), Err(_))
            | (Target::AtMostTimesWorkbox(_, t), Err(_))
            | (Target::AtMostTimesLimit(_, t), Err(_)) => return t.to_string(),
            (Target::AtMostTimesLimit(times, t), Ok(v)) => match limit {
                Some(Ok(l)) => (*v <= times * l, t),
                _ => return format!("{t} (no limit measured)"),
            },
            (Target::AtMost(limit, t), Ok(v)) => (*v <= limit, t),
            (Target::AtLeast(limit, t), Ok(v)) => (*v >= limit, t),
            (Target::AtMostTimesWorkbox(times, t), Ok(v)) => match workbox {
                Ok(w) => (*v <= times * w, t),
                Err(_) => return format!("{t} (no Workbox number)"),
            },
        };
        format!("{} {text}", if met { "met:" } else { "**missed**:" })
    }
}

/// One row of the table.
struct Row {
    label: String,
    rangersync: Measured,
    workbox: Measured,
    /// Formats a number of this row.
    format: fn(f64) -> String,
    better: Better,
    target: Target,
    /// Replaces the Workbox cell's text (the number still feeds the ratio).
    workbox_text: Option<String>,
    /// Replaces the rangersync cell's text (the number still feeds the target).
    rangersync_text: Option<String>,
    /// What the browser itself does in the same run, for comparison: the first one is the
    /// limit a `Target::AtMostTimesLimit` is checked against.
    limits: Vec<Limit>,
}

/// A browser limit a row is compared with: its name and its measured number (in the row's
/// unit, formatted by the row).
struct Limit {
    name: String,
    /// What the ratio cell calls it when a row has several.
    short: &'static str,
    value: Measured,
}

impl Row {
    fn new(label: impl Into<String>, rangersync: Measured, workbox: Measured) -> Row {
        Row {
            label: label.into(),
            rangersync,
            workbox,
            format: |v| format!("{v:.0}"),
            better: Better::Lower,
            target: Target::None,
            workbox_text: None,
            rangersync_text: None,
            limits: Vec::new(),
        }
    }

    fn limit(mut self, name: impl Into<String>, short: &'static str, value: Measured) -> Row {
        self.limits.push(Limit {
            name: name.into(),
            short,
            value,
        });
        self
    }

    fn rangersync_text(mut self, text: String) -> Row {
        self.rangersync_text = Some(text);
        self
    }

    /// The limits, each as its number and name.
    fn limit_cell(&self) -> String {
        let cells: Vec<String> = self
            .limits
            .iter()
            .map(|l| match &l.value {
                Ok(v) => format!("{} ({})", (self.format)(*v), l.name),
                Err(reason) => format!("{}: not measured: {}", l.name, one_line(reason, 60)),
            })
            .collect();
        cells.join("; ")
    }

    /// rangersync's number ÷ each limit: above 1 is slower for a time, below 1 is slower for
    /// a rate.
    fn of_limit_cell(&self) -> String {
        let Ok(r) = &self.rangersync else {
            return if self.limits.is_empty() {
                String::new()
            } else {
                "–".into()
            };
        };
        let cells: Vec<String> = self
            .limits
            .iter()
            .map(|l| match &l.value {
                Ok(v) if *v > 0.0 => {
                    let ratio = format!("{}×", times(r / v));
                    if self.limits.len() > 1 {
                        format!("{ratio} {}", l.short)
                    } else {
                        ratio
                    }
                }
                _ => "–".into(),
            })
            .collect();
        cells.join("; ")
    }

    fn format(mut self, format: fn(f64) -> String) -> Row {
        self.format = format;
        self
    }

    fn higher_is_better(mut self) -> Row {
        self.better = Better::Higher;
        self
    }

    fn target(mut self, target: Target) -> Row {
        self.target = target;
        self
    }

    fn workbox_text(mut self, text: String) -> Row {
        self.workbox_text = Some(text);
        self
    }

    fn cell(&self, value: &Measured) -> String {
        match value {
            Ok(v) => (self.format)(*v),
            Err(reason) => format!("not measured: {}", one_line(reason, 90)),
        }
    }

    /// "×N better" / "×N worse" for rangersync against Workbox.
    fn ratio(&self) -> String {
        let (Ok(r), Ok(w)) = (&self.rangersync, &self.workbox) else {
            return "–".into();
        };
        if *r <= 0.0 || *w <= 0.0 {
            return "n/a".into();
        }
        let factor = match self.better {
            Better::Lower => w / r,
            Better::Higher => r / w,
        };
        if factor >= 1.0 {
            format!("×{} better", significant(factor))
        } else {
            format!("×{} worse", significant(1.0 / factor))
        }
    }

    fn cells(&self) -> [String; COLUMNS] {
        [
            self.label.clone(),
            self.rangersync_text
                .clone()
                .unwrap_or_else(|| self.cell(&self.rangersync)),
            self.workbox_text
                .clone()
                .unwrap_or_else(|| self.cell(&self.workbox)),
            self.ratio(),
            self.limit_cell(),
            self.of_limit_cell(),
            self.target.cell(
                &self.rangersync,
                &self.workbox,
                self.limits.first().map(|l| &l.value),
            ),
        ]
    }
}

/// The table's columns.
const COLUMNS: usize = 7;

/// A ratio: two decimals below 1 (`0.18`), else [`significant`] (`1.4`, `12`).
fn times(v: f64) -> String {
    if v < 1.0 {
        format!("{v:.2}")
    } else {
        significant(v)
    }
}

/// Two significant figures, at least one decimal below 10: `1.4`, `12`, `250`.
fn significant(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.1}")
    } else {
        let digits = v.log10().floor() as i32 - 1;
        let scale = 10f64.powi(digits.max(0));
        format!("{:.0}", (v / scale).round() * scale)
    }
}

fn one_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or_default().replace('|', "/");
    if line.chars().count() > max {
        format!("{}…", line.chars().take(max).collect::<String>())
    } else {
        line
    }
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.0} ms")
    }
}

fn per_second(v: f64) -> String {
    format!("{}/s", thousands(v.round() as usize))
}

fn seconds(v: f64) -> String {
    format!("{:.1} s", v / 1000.0)
}

fn count(v: f64) -> String {
    thousands(v.round() as usize)
}

fn mebibytes(v: f64) -> String {
    format!("{:.1} MiB", v / (1024.0 * 1024.0))
}

fn kilobytes(v: f64) -> String {
    format!("{:.1} KiB", v / 1024.0)
}

/// Raw and gzip (-9) bytes of these files (relative to the repository root).
fn file_sizes<'a>(
    files: impl IntoIterator<Item = &'a str>,
) -> std::result::Result<(f64, f64), String> {
    let (mut raw, mut gzip) = (0, 0);
    for file in files {
        let bytes = std::fs::read(util::root().join(file)).map_err(|e| format!("{file}: {e}"))?;
        raw += bytes.len();
        gzip += crate::build::gzip_len(&bytes);
    }
    Ok((raw as f64, gzip as f64))
}

/// The files of `www/pkg` whose names start with `prefix` and end with one of `suffixes`, as
/// paths relative to the repository root, sorted.
fn pkg_files(prefix: &str, suffixes: &[&str]) -> std::result::Result<Vec<String>, String> {
    let dir = util::root().join("www").join("pkg");
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut found: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(prefix) && suffixes.iter().any(|s| name.ends_with(s)))
        .map(|name| format!("www/pkg/{name}"))
        .collect();
    found.sort();
    Ok(found)
}

/// The start-up worker's files: the scripts and its wasm.
fn worker_files() -> std::result::Result<Vec<String>, String> {
    let mut files: Vec<String> = RANGERSYNC_WORKER_SCRIPTS
        .iter()
        .map(|f| f.to_string())
        .collect();
    files.push(format!(
        "www/pkg/{}",
        crate::build::worker_wasm_name(&crate::build::pkg_dir())?
    ));
    Ok(files)
}

/// The page module: `rangersync_page.js` and its wasm.
const PAGE_MODULE_FILES: [&str; 2] = [
    "www/pkg/rangersync_page.js",
    "www/pkg/rangersync_page_bg.wasm",
];

/// The page extras (loaded on demand): every `www/pkg/rangersync_page_extras*` script and wasm.
fn page_extras_files() -> std::result::Result<Vec<String>, String> {
    let found = pkg_files("rangersync_page_extras", &[".js", ".wasm"])?;
    if found.is_empty() {
        return Err("no www/pkg/rangersync_page_extras* (run `cargo xtask build`)".into());
    }
    Ok(found)
}

/// The files a page loaded for `register` (paths from the browser's resource timing), mapped
/// back to the repository: the bench serves a copy of `www/` plus `bench/` pages and bundle.
fn register_files(peer: &Value) -> std::result::Result<Vec<String>, String> {
    if let Some(error) = peer["error"]
        .as_str()
        .or(peer["register"]["error"].as_str())
    {
        return Err(error.to_string());
    }
    let loaded = peer["register"]["loaded"]
        .as_array()
        .ok_or("no register.loaded in the results")?;
    loaded
        .iter()
        .filter_map(|r| r["path"].as_str())
        .map(|path| {
            let path = path.trim_start_matches('/');
            ["www", "bench", "bench/dist"]
                .iter()
                .map(|dir| format!("{dir}/{path}"))
                .find(|candidate| util::root().join(candidate).is_file())
                .ok_or_else(|| format!("/{path} was loaded but is not in www/ or bench/"))
        })
        .collect()
}

/// The table's rows, from the test's JSON.
fn rows(results: &Value) -> Vec<Row> {
    let rs = &results["rangersync"];
    let wb = &results["workbox"];
    let limits = &rs["limits"];
    // A limit: `rs.limits[phase][field]`, or why there is none.
    let limit = |phase: &str, field: &str| -> Measured {
        if limits.is_null() {
            return measured(rs, "limits", "error");
        }
        measured(limits, phase, field)
    };
    let sizes = &results["sizes"];
    let size = |k: &str| sizes[k].as_u64().unwrap_or(0) as usize;
    let n = size("writes");
    let batch = size("put_many_batch");
    let cold_runs = size("cold_runs");
    let limit_batch = size("limit_batch");
    let batch_name = format!(
        "one strict transaction of {} records",
        thousands(limit_batch)
    );
    let mut rows = vec![
        Row::new(
            format!(
                "sequential `put`, p50 ({} writes, server down)",
                thousands(n)
            ),
            measured(rs, "put_sequential", "p50_ms"),
            measured(wb, "put_sequential", "p50_ms"),
        )
        .format(ms)
        .limit("strict put", "put", limit("put_sequential", "p50_ms"))
        .limit("echo", "echo", limit("echo", "p50_ms"))
        .target(Target::AtMostTimesLimit(1.2, "≤ 1.2× the worker-put limit")),
        Row::new(
            "sequential `put`, p99",
            measured(rs, "put_sequential", "p99_ms"),
            measured(wb, "put_sequential", "p99_ms"),
        )
        .format(ms)
        .limit("strict put", "put", limit("put_sequential", "p99_ms")),
        Row::new(
            "sequential `put`, rate",
            measured(rs, "put_sequential", "rate"),
            measured(wb, "put_sequential", "rate"),
        )
        .format(per_second)
        .higher_is_better()
        .limit("strict puts", "puts", limit("put_sequential", "rate")),
    ];
    for (phase, label, target) in [
        ("put_50", "concurrent `put`, 50 in flight", Target::None),
        (
            "put_100",
            "concurrent `put`, 100 in flight",
            Target::AtLeast(5000.0, "≥ 5,000/s"),
        ),
        ("put_500", "concurrent `put`, 500 in flight", Target::None),
    ] {
        let in_flight = format!(
            "strict puts, {} in flight",
            phase.trim_start_matches("put_")
        );
        rows.push(
            Row::new(
                label,
                measured(rs, phase, "rate"),
                measured(wb, phase, "rate"),
            )
            .format(per_second)
            .higher_is_better()
            .limit(in_flight, "puts", limit(phase, "rate"))
            .limit(batch_name.clone(), "batch", limit("batch", "rate"))
            .target(target),
        );
    }
    // Workbox has no batch API: putMany is compared with its best way of writing many.
    let best_workbox = ["put_sequential", "put_50", "put_100", "put_500"]
        .iter()
        .filter_map(|phase| measured(wb, phase, "rate").ok())
        .fold(None, |best: Option<f64>, v| {
            Some(best.map_or(v, |b| b.max(v)))
        });
    let best_workbox: Measured = match best_workbox {
        Some(v) => Ok(v),
        None => measured(wb, "put_500", "rate"),
    };
    let many = Row::new(
        format!("`putMany` ({batch} items a call), writes/s"),
        measured(rs, "put_many", "rate"),
        best_workbox.clone(),
    )
    .format(per_second)
    .higher_is_better()
    .limit(batch_name, "batch", limit("batch", "rate"))
    .target(Target::AtLeast(15_000.0, "≥ 15,000 writes/s"));
    let many = match &best_workbox {
        Ok(v) => many.workbox_text(format!(
            "{} (no batch API: its best concurrent rate)",
            per_second(*v)
        )),
        Err(_) => many,
    };
    rows.push(many);
    rows.push(
        Row::new(
            format!(
                "worker message round trip (echo), p50 of {}",
                thousands(size("limit_echoes"))
            ),
            Err("not a rangersync row".into()),
            Err("not a Workbox row".into()),
        )
        .format(ms)
        .rangersync_text("–".into())
        .workbox_text("–".into())
        .limit("echo", "echo", limit("echo", "p50_ms")),
    );

    for (phase, target_size, time_target, other_size) in [
        (
            "drain",
            10_000,
            Target::AtMost(1000.0, "≤ 1 s"),
            Target::Text("≤ 1 s at 10,000"),
        ),
        (
            "drain_large",
            100_000,
            Target::AtMost(10_000.0, "≤ 10 s"),
            Target::Text("≤ 10 s at 100,000"),
        ),
    ] {
        let n = rs[phase]["n"].as_u64().or(wb[phase]["n"].as_u64());
        let Some(n) = n else { continue };
        let time_target = if n == target_size {
            time_target
        } else {
            other_size
        };
        let label = thousands(n as usize);
        // Workbox's large drain is not run: estimate it from its measured rates instead.
        let skipped = wb[phase]["skipped"] == true;
        let estimate = || -> String {
            let drain_rate = measured(wb, "drain", "ms")
                .ok()
                .zip(wb["drain"]["n"].as_f64())
                .map(|(ms, k)| k / (ms / 1000.0));
            let fill_rate = measured(wb, "put_500", "rate").ok();
            match (drain_rate, fill_rate) {
                (Some(d), Some(f)) => {
                    let secs = n as f64 / f + n as f64 / d;
                    let time = if secs < 120.0 {
                        format!("{secs:.0} s")
                    } else {
                        format!("{:.0} min", secs / 60.0)
                    };
                    format!(
                        "not measured: would take ~{time} (queue at {}, deliver at {} as measured)",
                        per_second(f),
                        per_second(d)
                    )
                }
                _ => "not measured (Workbox's smaller drain did not run)".into(),
            }
        };
        let mut time = Row::new(
            format!("drain of {label} queued writes: time"),
            measured(rs, phase, "ms"),
            measured(wb, phase, "ms"),
        )
        .format(seconds)
        .target(time_target);
        let mut requests = Row::new(
            format!("drain of {label}: HTTP requests (pushes the server counted)"),
            measured(rs, phase, "requests"),
            measured(wb, phase, "requests"),
        )
        .format(count);
        let mut heap = Row::new(
            format!("drain of {label}: peak worker JS heap"),
            measured(rs, phase, "heap_peak_bytes"),
            measured(wb, phase, "heap_peak_bytes"),
        )
        .format(mebibytes);
        if skipped {
            time = time.workbox_text(estimate());
            requests = requests.workbox_text(format!(
                "not measured (would be {}: one per write)",
                thousands(n as usize)
            ));
            heap = heap.workbox_text("not measured".into());
        }
        rows.extend([time, requests, heap]);
    }

    rows.push(
        Row::new(
            format!("worker cold start → `sync` handler's first request (median of {cold_runs})"),
            measured(rs, "cold_start", "median_ms"),
            measured(wb, "cold_start", "median_ms"),
        )
        .format(ms)
        .target(Target::AtMostTimesWorkbox(1.5, "≤ 1.5× Workbox")),
    );

    // The worker's cost to a page while it is stopped: with ÷ without, in the rangersync cell.
    let navigation = &rs["navigation"];
    let nav_runs = navigation["runs"].as_u64().unwrap_or(0);
    for (label, field) in [
        (
            format!(
                "page navigation, worker stopped: with ÷ without a worker (median of {nav_runs})"
            ),
            "navigation",
        ),
        (
            format!(
                "non-captured `fetch` POST, worker stopped: with ÷ without (median of {nav_runs})"
            ),
            "fetch",
        ),
    ] {
        let ratio = measured(rs, "navigation", &format!("{field}_ratio"));
        // Two decimals: the target is 1.1, and "1.1×" could be 1.05 or 1.14.
        let mut row = Row::new(label, ratio.clone(), Err("not run for Workbox".into()))
            .format(|v| format!("{v:.2}×"))
            .workbox_text("not run".into())
            .target(Target::AtMost(1.1, "≤ 1.1"));
        if let (Ok(r), Ok(with), Ok(without)) = (
            &ratio,
            measured(rs, "navigation", &format!("with_{field}_ms")),
            measured(rs, "navigation", &format!("without_{field}_ms")),
        ) {
            row = row.rangersync_text(format!(
                "{r:.2}× ({} with, {} without)",
                ms(with),
                ms(without)
            ));
        }
        rows.push(row);
    }

    let page = |peer: &Value| {
        register_files(peer).and_then(|files| file_sizes(files.iter().map(String::as_str)))
    };
    let (rs_page, wb_page) = (page(rs), page(wb));
    let workbox_page_note = |v: f64| {
        if v == 0.0 {
            "0 (`register()` is a browser API; no page library)".to_string()
        } else {
            kilobytes(v)
        }
    };
    for (label, pick, target) in [
        ("bytes a page downloads to `register`, raw", 0, Target::None),
        (
            "bytes a page downloads to `register`, gzip",
            1,
            Target::AtMost(25.0 * 1024.0, "≤ 25 KB (JS + wasm)"),
        ),
    ] {
        let get = |sizes: &std::result::Result<(f64, f64), String>| {
            sizes.clone().map(|s| if pick == 0 { s.0 } else { s.1 })
        };
        let mut row = Row::new(label, get(&rs_page), get(&wb_page))
            .format(kilobytes)
            .target(target);
        if let Ok(v) = get(&wb_page) {
            row = row.workbox_text(workbox_page_note(v));
        }
        rows.push(row);
    }

    // Bytes per module, read from www/ (gzip -9).
    let gzip_of = |files: std::result::Result<Vec<String>, String>| -> Measured {
        files.and_then(|f| file_sizes(f.iter().map(String::as_str)).map(|s| s.1))
    };
    rows.push(
        Row::new(
            "page module (`rangersync_page.js` + `_bg.wasm`), gzip",
            gzip_of(Ok(PAGE_MODULE_FILES.map(str::to_string).to_vec())),
            Ok(0.0),
        )
        .format(kilobytes)
        .workbox_text("0 (no page library)".into()),
    );
    rows.push(
        Row::new(
            "page extras (`rangersync_page_extras*`, loaded on demand), gzip",
            gzip_of(page_extras_files()),
            Ok(0.0),
        )
        .format(kilobytes)
        .workbox_text("–".into()),
    );
    let workbox_built = wb["error"].is_null();
    let rs_worker = worker_files().and_then(|f| file_sizes(f.iter().map(String::as_str)));
    let wb_worker = if workbox_built {
        file_sizes(WORKBOX_WORKER_FILES)
    } else {
        Err(wb["error"].as_str().unwrap_or("not built").to_string())
    };
    for (label, pick, target) in [
        (
            "start-up worker (`sw.js` + `rangersync-worker.js` + glue + wasm), raw",
            0,
            Target::None,
        ),
        (
            "start-up worker, gzip",
            1,
            Target::AtMost(100.0 * 1024.0, "≤ 100 KB"),
        ),
    ] {
        let get = |sizes: &std::result::Result<(f64, f64), String>| {
            sizes.clone().map(|s| if pick == 0 { s.0 } else { s.1 })
        };
        rows.push(
            Row::new(label, get(&rs_worker), get(&wb_worker))
                .format(kilobytes)
                .target(target),
        );
    }
    rows
}

/// The table's header.
fn header(workbox: &str) -> [String; COLUMNS] {
    [
        "",
        "rangersync",
        workbox,
        "ratio",
        "limit (this browser, same run)",
        "rangersync ÷ limit",
        "target",
    ]
    .map(str::to_string)
}

/// The table as Markdown.
fn markdown_table(rows: &[Row], workbox: &str) -> String {
    let mut out = format!(
        "| {} |\n|{}\n",
        header(workbox).join(" | "),
        "---|".repeat(COLUMNS)
    );
    for row in rows {
        let _ = writeln!(out, "| {} |", row.cells().join(" | "));
    }
    out
}

/// The table as aligned text for the terminal.
fn text_table(rows: &[Row], workbox: &str) -> String {
    let all: Vec<[String; COLUMNS]> = std::iter::once(header(workbox))
        .chain(rows.iter().map(Row::cells))
        .collect();
    let mut widths = [0; COLUMNS];
    for cells in &all {
        for (w, c) in widths.iter_mut().zip(cells) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for (i, cells) in all.iter().enumerate() {
        let line: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "  {}", line.join(" | ").trim_end());
        if i == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            let _ = writeln!(out, "  {}", rule.join("-|-"));
        }
    }
    out
}

/// A field of `/proc/<file>` such as `model name` or `MemTotal`.
pub(crate) fn proc_field(file: &str, name: &str) -> Option<String> {
    std::fs::read_to_string(Path::new("/proc").join(file))
        .ok()?
        .lines()
        .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

/// `"7.6"` from an npm package's package.json under `bench/node_modules`.
fn npm_version(package: &str) -> Option<String> {
    let path = util::root()
        .join("bench")
        .join("node_modules")
        .join(package)
        .join("package.json");
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    manifest["version"].as_str().map(str::to_string)
}

/// Machine, browser and versions, one Markdown list.
fn environment(results: &Value) -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = proc_field("cpuinfo", "model name").unwrap_or_else(|| "unknown CPU".into());
    let memory = proc_field("meminfo", "MemTotal")
        .and_then(|m| m.split_whitespace().next()?.parse::<f64>().ok())
        .map_or("unknown".into(), |kib| {
            format!("{:.1} GiB", kib / 1024.0 / 1024.0)
        });
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let date = util::output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
        .unwrap_or_else(|| "unknown date".into());
    let rustc = util::output(
        Command::new("rustc")
            .arg("--version")
            .current_dir(util::root()),
    )
    .unwrap_or_else(|| "rustc ?".into());
    let workbox = match (npm_version("workbox-background-sync"), results["workbox"]["error"].as_str()) {
        (_, Some(error)) => format!("not measured ({})", one_line(error, 120)),
        (Some(v), None) => format!(
            "{v} (workbox-background-sync, workbox-routing {}, workbox-strategies {}; bundled with esbuild {})",
            npm_version("workbox-routing").unwrap_or_else(|| "?".into()),
            npm_version("workbox-strategies").unwrap_or_else(|| "?".into()),
            npm_version("esbuild").unwrap_or_else(|| "?".into()),
        ),
        (None, None) => "? (no bench/node_modules)".into(),
    };
    let sizes = &results["sizes"];
    format!(
        "- run: {date}, {:.0} s in all; load average at the end {} (1, 5, 15 min: other work on these cores shows in every row)\n\
         - machine: {cpu}, {cores} cores, {memory} memory\n\
         - browser: {} headless (`{}`)\n\
         - {rustc}; the in-process reference server is a {} build\n\
         - Workbox: {workbox}\n\
         - sizes: {} writes per write row, drains of {} and {}, {} cold starts; limits: {} echoes, the write rows' counts of strict puts, {} strict transactions of {} records; {} navigations and fetches a side\n",
        results["seconds"].as_f64().unwrap_or(0.0),
        load.join(" "),
        results["browser"].as_str().unwrap_or("?"),
        results["user_agent"].as_str().unwrap_or("?"),
        results["server_build"].as_str().unwrap_or("?"),
        thousands(sizes["writes"].as_u64().unwrap_or(0) as usize),
        thousands(sizes["drain"].as_u64().unwrap_or(0) as usize),
        thousands(sizes["drain_large"].as_u64().unwrap_or(0) as usize),
        sizes["cold_runs"].as_u64().unwrap_or(0),
        thousands(sizes["limit_echoes"].as_u64().unwrap_or(0) as usize),
        sizes["limit_batch_runs"].as_u64().unwrap_or(0),
        thousands(sizes["limit_batch"].as_u64().unwrap_or(0) as usize),
        sizes["navigation_runs"].as_u64().unwrap_or(0),
    )
}

/// How each row is measured, for the reader of BENCHMARKS.md.
const METHOD: &str = "\
How each row is measured (`tests/tests/bench_browser.rs`; one browser, one origin and so one storage per peer and per drain):

- Both peers are timed **from the page**, the way an app sees them. rangersync: `await client.put(collection, key, value)` (page → worker → one strict IndexedDB commit → acknowledgement), `await client.putMany(items)`. Workbox: `await fetch('/api/sync/push?q=…', {method: 'POST', body})` through a `NetworkOnly` route with a `BackgroundSyncPlugin`; the server is stopped, so the fetch fails and the plugin stores the request before the page's promise settles. Values are ~100-byte JSON objects; each Workbox body is a one-mutation push, so the server counts both peers' deliveries the same way.
- Write rows: the server is stopped (nothing is delivered meanwhile); p50/p99 are per-write latencies of the sequential run; rates are writes per second of wall-clock time in the page; \"in flight\" is how many calls the page keeps outstanding.
- Drains: the writes are queued while the server is down (rangersync `putMany`, Workbox fetches 500 in flight), the server is started, and one `sync` event is dispatched (CDP `ServiceWorker.dispatchSyncEvent`); time runs until the server has applied all of them, its count sampled every 50 ms (the chart). Requests are the push requests the server counted (rangersync's pull after a drain is a GET and not counted). The heap is CDP `Runtime.getHeapUsage` (`usedSize`, the JS heap; wasm linear memory is not in it) on the service worker target, every 100 ms.
- Cold start: the worker is stopped (`ServiceWorker.stopAllWorkers`, confirmed by its running status), a `sync` event is dispatched, and the time runs until the server has received the handler's first push request (its fault layer counts it on arrival, before the body is read, so neither a peer's batch size nor the dev-build server's parsing is in the row; polled every 5 ms). The server answers no push meanwhile (held, never applied) so that each run finds the same queue.
- Limits (the \"limit\" column): what this browser itself does in the same run, in the same page as the rangersync write rows, right after them (server still stopped). The page registers a tiny service worker of the bench (`bench/limits-sw.js`, no rangersync code) at its own scope `/bench-limits/`, so it controls no page and rangersync's worker keeps the page; it writes to its own database (`rangersync-bench-limits`). A service worker rather than a dedicated `Worker` because rangersync's page talks to a service worker: the limit takes the same path, `registration.active.postMessage(message, [port])` and one reply on the port. **Echo**: the worker replies at once; p50 of 1,000 sequential round trips. **Strict put**: the page sends the key and the same ~100-byte value as rangersync's rows; the worker does one `put` in one `readwrite` transaction with `durability: 'strict'` and replies on `complete`; as many writes as each write row, one at a time (p50, p99, rate) and 50, 100 and 500 in flight (rate). **Strict batch**: one message holding 1,000 such records, all `put` in one strict transaction, replied to on `complete`; records ÷ time from the page's send to the reply, median of 5. The limits worker is unregistered before the cold start. \"rangersync ÷ limit\" is rangersync's number divided by the limit's: above 1 is slower for a time, below 1 is slower for a rate. The limits are one `put` a transaction (rangersync's put also writes its outbox entry, and its reply carries a sequence number), so they bound from below what a worker-backed put can cost.
- Navigation cost: two fresh servers serving the same files on two ports (origins): on one, rangersync's worker is registered (by `SyncClient.register`, nothing queued); the other has no service worker at all. For 60 runs, each side in turn: all workers are stopped (`ServiceWorker.stopAllWorkers`, confirmed by the registration's running status; the same calls on both sides), the side's tab navigates (CDP `Page.navigate`) to `/nav.html?run=N`, a small static page in scope, and the time is its navigation timing, `loadEventEnd - startTime` (from the start of the navigation, which includes starting the worker, to the end of the load event); the worker is stopped again (confirmed) and the page times a `fetch('/api/health', {method: 'POST'})` (no capture rule matches it; the server answers 405 without touching its database) from the call to the end of the body. The rows are the median with the worker ÷ the median without; the medians are in the cell. A navigation takes one of two times here (~12 ms or ~48 ms, on both sides alike), so the median needs the 60 runs to stay in one mode. Workbox is not run for these rows.
- Page bytes: the same-origin files the page's resource timing lists between starting to `register` and `register` resolving (for rangersync the page module, its wasm and anything it loads on `register`; for Workbox, `navigator.serviceWorker.register()` loads nothing into the page), read from disk; gzip is `gzip -9`. Bytes per module, read from `www/` after `cargo xtask build`: the page module is `pkg/rangersync_page.js` + `pkg/rangersync_page_bg.wasm`; the page extras every `pkg/rangersync_page_extras*` `.js` and `.wasm` (loaded on demand, not by `register`); the start-up worker `www/sw.js` + `www/rangersync-worker.js` + `pkg/rangersync_sw.js` + the `pkg/rangersync_sw_bg.<hash>.wasm` the glue names; for Workbox its bundle, which also holds this bench's ~1 KB of harness code.
- Targets are issue 19's; a row without one has none there.
";

/// Prints the table and writes BENCHMARKS.md's browser part and the chart.
fn report(results: &Value) -> Result {
    let workbox = format!(
        "Workbox {}",
        npm_version("workbox-background-sync").unwrap_or_else(|| "7.4".into())
    );
    let rows = rows(results);
    println!("\nrangersync beside {workbox}, timed from the page\n");
    print!("{}", text_table(&rows, &workbox));
    let environment = environment(results);
    println!("\n{environment}");

    let chart_written = match drain_chart(results) {
        Some(svg) => {
            let path = util::root().join(CHART);
            std::fs::write(&path, svg).map_err(|e| format!("{}: {e}", path.display()))?;
            println!("chart: {}", path.display());
            true
        }
        None => false,
    };
    let mut section = format!(
        "{BEGIN_MARKER}\n## Browser: rangersync beside {workbox} (`cargo xtask bench`)\n\n\
         Written by `cargo xtask bench` from one run; rerun it rather than editing by hand.\n\n\
         {environment}\n{}\n",
        markdown_table(&rows, &workbox)
    );
    if chart_written {
        let n = results["sizes"]["drain"].as_u64().unwrap_or(0) as usize;
        let _ = writeln!(
            section,
            "Drain of {} queued writes, items delivered over time (server count every 50 ms):\n\n![drain of {} writes]({CHART})\n",
            thousands(n),
            thousands(n)
        );
    }
    section.push_str(METHOD);
    section.push_str(END_MARKER);
    write_section(BEGIN_MARKER, END_MARKER, &section)?;
    crate::measured::write(&util::root())?;
    println!("written: README.md's Measured quote");
    Ok(())
}

/// Writes `section` between `begin` and `end` in BENCHMARKS.md (appended when they are absent;
/// the file is started when there is none).
pub fn write_section(begin: &str, end: &str, section: &str) -> Result {
    let path = util::root().join("BENCHMARKS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".into());
    std::fs::write(&path, replace_section(&old, begin, end, section))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    println!("written: {}", path.display());
    Ok(())
}

/// `old` with the part between the markers (inclusive) replaced by `section`, or with
/// `section` appended when the markers are absent. Everything else is kept.
pub fn replace_section(old: &str, begin_marker: &str, end_marker: &str, section: &str) -> String {
    match (old.find(begin_marker), old.find(end_marker)) {
        (Some(begin), Some(end)) if begin < end => format!(
            "{}{section}{}",
            &old[..begin],
            &old[end + end_marker.len()..]
        ),
        _ => format!("{}\n\n{section}\n", old.trim_end()),
    }
}

/// The delivery samples `[[ms, delivered]…]` of a peer's small drain.
fn samples(peer: &Value) -> Vec<(f64, f64)> {
    peer["drain"]["samples"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| Some((s[0].as_f64()?, s[1].as_f64()?)))
        .collect()
}

/// A hand-written SVG line chart of both peers' small drain: items delivered over time.
fn drain_chart(results: &Value) -> Option<String> {
    let series = [
        ("rangersync", "#1f77b4", samples(&results["rangersync"])),
        ("Workbox", "#d62728", samples(&results["workbox"])),
    ];
    if series.iter().all(|(_, _, s)| s.is_empty()) {
        return None;
    }
    let n = results["sizes"]["drain"].as_f64().unwrap_or(1.0).max(1.0);
    let max_ms = series
        .iter()
        .flat_map(|(_, _, s)| s.iter().map(|p| p.0))
        .fold(1.0_f64, f64::max);
    let (width, height) = (760.0, 400.0);
    let (left, right, top, bottom) = (70.0, 20.0, 40.0, 50.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let x = |ms: f64| left + ms / max_ms * plot_w;
    let y = |items: f64| top + plot_h - items / n * plot_h;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"22\" font-size=\"15\">Drain of {} queued writes: items the server applied over time</text>\n",
        thousands(n as usize)
    );
    for i in 0..=5 {
        let items = n * f64::from(i) / 5.0;
        let ms = max_ms * f64::from(i) / 5.0;
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{:.1} s</text>",
            left + plot_w,
            y(items),
            y(items),
            left - 6.0,
            y(items) + 4.0,
            thousands(items as usize),
            x(ms),
            top + plot_h + 18.0,
            ms / 1000.0
        );
    }
    let _ = writeln!(
        svg,
        "<line x1=\"{left}\" x2=\"{left}\" y1=\"{top}\" y2=\"{:.1}\" stroke=\"#333\"/>\
         <line x1=\"{left}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#333\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">time since the sync event (s)</text>",
        top + plot_h,
        left + plot_w,
        top + plot_h,
        top + plot_h,
        left + plot_w / 2.0,
        height - 10.0
    );
    for (i, (name, color, points)) in series.iter().enumerate() {
        if points.is_empty() {
            continue;
        }
        let path: Vec<String> = points
            .iter()
            .map(|(ms, items)| format!("{:.1},{:.1}", x(*ms), y(*items)))
            .collect();
        let end = points.last().map_or(0.0, |p| p.0) / 1000.0;
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\
             <rect x=\"{:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{color}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{name}: {end:.1} s</text>",
            path.join(" "),
            left + plot_w - 200.0,
            top + plot_h - 40.0 - 20.0 * i as f64,
            left + plot_w - 182.0,
            top + plot_h - 30.0 - 20.0 * i as f64
        );
    }
    svg.push_str("</svg>\n");
    Some(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_browser_part_of_benchmarks_md_is_replaced() {
        let old = format!("# B\n\nserver part\n\n{BEGIN_MARKER}\nold\n{END_MARKER}\n\ntail\n");
        let new = replace_section(
            &old,
            BEGIN_MARKER,
            END_MARKER,
            &format!("{BEGIN_MARKER}\nnew\n{END_MARKER}"),
        );
        assert_eq!(
            new,
            format!("# B\n\nserver part\n\n{BEGIN_MARKER}\nnew\n{END_MARKER}\n\ntail\n")
        );
        let appended = replace_section("# B\n", BEGIN_MARKER, END_MARKER, "S");
        assert_eq!(appended, "# B\n\nS\n");
    }

    #[test]
    fn ratios_say_which_peer_is_better() {
        let row = Row::new("t", Ok(2.0), Ok(20.0));
        assert_eq!(row.ratio(), "×10 better");
        let row = Row::new("r", Ok(100.0), Ok(400.0)).higher_is_better();
        assert_eq!(row.ratio(), "×4.0 worse");
        let row = Row::new("x", Err("down".into()), Ok(1.0));
        assert_eq!(row.ratio(), "–");
    }

    #[test]
    fn rows_are_divided_by_their_limits_and_checked_against_the_first() {
        let row = Row::new("p50", Ok(3.0), Ok(9.0))
            .limit("strict put", "put", Ok(2.0))
            .limit("echo", "echo", Ok(0.25))
            .target(Target::AtMostTimesLimit(1.2, "≤ 1.2×"));
        let cells = row.cells();
        assert_eq!(cells[5], "1.5× put; 12× echo");
        assert_eq!(cells[6], "**missed**: ≤ 1.2×");
        let row = Row::new("rate", Ok(500.0), Ok(100.0))
            .higher_is_better()
            .limit("batch", "batch", Ok(20_000.0));
        assert_eq!(row.cells()[5], "0.03×");
        let row = Row::new("p50", Ok(2.0), Ok(9.0))
            .limit("strict put", "put", Err("no worker".into()))
            .target(Target::AtMostTimesLimit(1.2, "≤ 1.2×"));
        assert_eq!(row.cells()[6], "≤ 1.2× (no limit measured)");
    }
}
