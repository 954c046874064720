//! `cargo xtask bench`: throughput tables, printed, never asserted.
//!
//! 1. Native: spawns the built server on a fresh database, pushes N mutations in batches
//!    over one keep-alive loopback connection, then sends them all again (every one must come
//!    back `duplicate`).
//! 2. Browser: rangersync beside Workbox's background-sync `Queue` (7.4.1, from npm) in the
//!    same headless Chromium against the same reference server: durable enqueue, delivery, two
//!    concurrent sync events, a 500 during replay. The measuring code is the `#[ignore]`d test
//!    `tests/tests/bench_browser.rs`; the Workbox worker is bundled from `bench/` with npm and
//!    esbuild when `bench/dist/workbox-sw.js` is missing or older than its sources. Without npm
//!    the Workbox rows are the numbers of `docs/TOOLCHAIN.md`, labelled as such.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::server::{self, Server};
use crate::util::{self, Result};

/// What to run and how big.
struct Options {
    mutations: usize,
    batch: usize,
    release: bool,
    writes: usize,
    native: bool,
    browser: bool,
    browser_release: bool,
}

/// Runs the benchmark. Native: `--mutations N` (20,000), `--batch B` (500), `--debug` to
/// measure the dev-profile server. Browser: `--writes N` (2,000), `--browser-release` to build
/// the browser harness in release (slower to build; the dev build is what `cargo xtask test`
/// already compiled). `--native-only` / `--browser-only` run one half.
pub fn run(args: &[String]) -> Result {
    if args.iter().any(|a| a == "--server") {
        return crate::bench_server::run(args);
    }
    let mut o = Options {
        mutations: 20_000,
        batch: 500,
        release: true,
        writes: 2_000,
        native: true,
        browser: true,
        browser_release: false,
    };
    for (flag, value) in util::parse_flags(
        args,
        &["--mutations", "--batch", "--writes"],
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
                .map_err(|_| format!("{flag} needs a positive number"))
        };
        match flag.as_str() {
            "--mutations" => o.mutations = number()?,
            "--batch" => o.batch = number()?,
            "--writes" => o.writes = number()?,
            "--native-only" => o.browser = false,
            "--browser-only" => o.native = false,
            "--browser-release" => o.browser_release = true,
            _ => o.release = false,
        }
    }
    if o.mutations == 0 || o.batch == 0 || o.writes == 0 {
        return Err("--mutations, --batch and --writes must be positive".into());
    }
    if !o.native && !o.browser {
        return Err("--native-only and --browser-only exclude each other".into());
    }
    if o.native {
        native(o.mutations, o.batch, o.release)?;
    }
    if o.browser {
        browser(o.writes, o.browser_release)?;
    }
    Ok(())
}

/// The browser half: builds the wasm, bundles Workbox when possible, runs the ignored test.
fn browser(writes: usize, release: bool) -> Result {
    let chromium = crate::tools::ensure_browser()?.chromium;
    crate::build::build()?;
    if let Err(message) = ensure_workbox_bundle() {
        // One line, then the rangersync side alone (Workbox rows from docs/TOOLCHAIN.md).
        eprintln!("xtask bench: Workbox side skipped: {message}");
    }
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
    .env("RANGERSYNC_BENCH_WRITES", writes.to_string())
    .env("RANGERSYNC_WWW", util::root().join("www"))
    .env("CHROMIUM", chromium);
    util::run(&mut test)
}

/// `bench/dist/workbox-sw.js`, rebuilt when missing or older than `entry.js` / `package.json`:
/// `npm install` (npm registry only), then esbuild into a classic-worker IIFE. `Err` is one line.
fn ensure_workbox_bundle() -> Result {
    let bench = util::root().join("bench");
    let bundle = bench.join("dist").join("workbox-sw.js");
    let modified = |p: &Path| p.metadata().and_then(|m| m.modified()).ok();
    let sources = ["entry.js", "package.json"].map(|f| modified(&bench.join(f)));
    if let Some(built) = modified(&bundle) {
        if sources.iter().all(|s| s.is_some_and(|s| s <= built)) {
            return Ok(());
        }
    }
    let npm = util::which("npm").ok_or(
        "npm not found (apt-get install npm); Workbox rows are the docs/TOOLCHAIN.md numbers",
    )?;
    let esbuild = bench.join("node_modules").join(".bin").join("esbuild");
    let installed = bench
        .join("node_modules")
        .join("workbox-background-sync")
        .join("package.json");
    if !installed.is_file() || !util::is_executable(&esbuild) {
        util::run(
            util::cmd(npm)
                .current_dir(&bench)
                .args(["install", "--no-audit", "--no-fund"]),
        )
        .map_err(|e| format!("{e}; Workbox rows are the docs/TOOLCHAIN.md numbers"))?;
    }
    util::run(util::cmd(&esbuild).current_dir(&bench).args([
        "entry.js",
        "--bundle",
        "--format=iife",
        "--minify",
        "--define:process.env.NODE_ENV=\"production\"",
        "--outfile=dist/workbox-sw.js",
    ]))
    .map_err(|e| format!("{e}; Workbox rows are the docs/TOOLCHAIN.md numbers"))
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
