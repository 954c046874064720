//! `cargo xtask test`: everything CI checks, in order, stopping at the first
//! failure with one line naming the step.
//!
//! One target folder and fixed profiles throughout, so nothing is built twice:
//! `dev` for native code and the wasm tests, `wasm-release` (or `release`) for
//! the wasm in `www/pkg`.

use std::time::{Duration, Instant};

use crate::server::{self, Server};
use crate::tools::{self, Browser, WASM_TARGET};
use crate::util::{self, Result};

/// The port the wasm tests' server prefers (see [`server::preferred_listen`]).
const WASM_TEST_PORT: u16 = 18787;

/// What earlier steps found and later steps use.
#[derive(Default)]
struct State {
    browser: Option<Browser>,
}

/// A step: its id (for `cargo xtask test ID…`), its name, what it does.
type Step = (&'static str, &'static str, fn(&mut State) -> Result);

const STEPS: [Step; 8] = [
    ("docs", "docs (links, guarantee tests)", docs),
    ("fmt", "fmt", fmt),
    ("clippy", "clippy (native)", clippy_native),
    ("clippy-wasm", "clippy (wasm32)", clippy_wasm),
    ("unit", "native tests", native_tests),
    ("browser", "chromium + chromedriver", browser),
    ("wasm", "wasm tests in a service worker", wasm_tests),
    ("e2e", "build www/pkg + e2e tests", e2e_tests),
];

/// Runs every step, or only the ones named (`cargo xtask test wasm e2e`; the
/// browser step is added when a later step needs it); prints each one's time
/// and a summary table.
pub fn run(args: &[String]) -> Result {
    let ids: Vec<&str> = STEPS.iter().map(|(id, _, _)| *id).collect();
    if let Some(unknown) = args.iter().find(|a| !ids.contains(&a.as_str())) {
        return Err(format!(
            "unknown step `{unknown}`; steps are: {}",
            ids.join(" ")
        ));
    }
    let needs_browser = args.iter().any(|a| a == "wasm" || a == "e2e");
    let selected = |id: &str| {
        args.is_empty() || args.iter().any(|a| a == id) || (id == "browser" && needs_browser)
    };
    let start = Instant::now();
    let mut state = State::default();
    let mut times: Vec<(&str, Duration, bool)> = Vec::new();
    let mut failure = None;
    for (number, (id, name, step)) in STEPS.iter().enumerate() {
        if !selected(id) {
            continue;
        }
        println!("\n=== step {}/{}: {name}", number + 1, STEPS.len());
        let (result, elapsed) = util::timed(name, || step(&mut state));
        times.push((name, elapsed, result.is_ok()));
        if let Err(e) = result {
            failure = Some(format!("step {} ({name}) failed: {e}", number + 1));
            break;
        }
    }
    println!("\n{:<34} {:>12}  result", "step", "time");
    for (name, elapsed, ok) in &times {
        let verdict = if *ok { "ok" } else { "FAILED" };
        println!("{name:<34} {:>12}  {verdict}", util::fmt_duration(*elapsed));
    }
    println!(
        "{:<34} {:>12}",
        "total",
        util::fmt_duration(start.elapsed())
    );
    match failure {
        Some(message) => Err(message),
        None => Ok(()),
    }
}

/// First, because it takes a second and compiles nothing: a broken link or a guarantee whose
/// test was renamed fails here, not after ten minutes. (`cargo test -p xtask` checks the same.)
fn docs(_: &mut State) -> Result {
    crate::docs::run(&[])
}

fn fmt(_: &mut State) -> Result {
    tools::ensure_component("rustfmt")?;
    util::run(util::cargo().args(["fmt", "--all", "--", "--check"]))
}

fn clippy_native(_: &mut State) -> Result {
    tools::ensure_component("clippy")?;
    util::run(util::cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
}

/// Clippy for wasm32: the shared core's library (its tests are native-only and
/// its dev-dependencies, proptest → getrandom, do not build for wasm32), and
/// every target of the three wasm crates.
fn clippy_wasm(_: &mut State) -> Result {
    tools::ensure_component("clippy")?;
    tools::ensure_wasm_target()?;
    let clippy = |packages: &[&str], targets: &str| {
        let mut cargo = util::cargo();
        cargo.arg("clippy");
        for package in packages {
            cargo.args(["-p", package]);
        }
        cargo.args(["--target", WASM_TARGET, targets, "--", "-D", "warnings"]);
        util::run(&mut cargo)
    };
    clippy(&["rangersync-shared"], "--lib")?;
    clippy(
        &["rangersync-sw", "rangersync-page", "rangersync-page-extras"],
        "--all-targets",
    )
}

fn native_tests(_: &mut State) -> Result {
    // The server's protocol tests run on SQLite and on PostgreSQL.
    crate::postgres::ensure_installed()?;
    // `sw/tests/sw_js.rs` runs `www/sw.js` in Node; it fails (never skips) without it.
    let node = tools::ensure_node()?;
    util::run(
        util::cargo()
            .args(["test", "--workspace", "--exclude", "rangersync-e2e"])
            .env(tools::NODE_ENV, node),
    )
}

fn browser(state: &mut State) -> Result {
    let browser = tools::ensure_browser()?;
    if let Some(version) =
        util::output(std::process::Command::new(&browser.chromium).arg("--version"))
    {
        println!("{version}");
    }
    state.browser = Some(browser);
    Ok(())
}

/// The wasm crates' tests, run by wasm-bindgen-test-runner in headless Chromium
/// (inside a service worker where the tests ask for it), against a real server
/// whose URL they read at compile time from `RANGERSYNC_TEST_SERVER`.
fn wasm_tests(state: &mut State) -> Result {
    let browser = state
        .browser
        .clone()
        .ok_or("no browser (the browser step did not run)")?;
    // The page module's tests in page mode import `/rangersync_page_extras.js`: the runner
    // serves files it did not generate from its working directory, so build `www/pkg` and run
    // the runner there.
    let bindgen = crate::build::build()?;
    let pkg = crate::build::pkg_dir();
    let runner = format!(
        "/usr/bin/env -C {} {}",
        pkg.display(),
        bindgen.test_runner.display()
    );
    let binary = server::build(false)?;
    let scratch = util::ScratchDir::new("wasm-tests")?;
    let db = scratch.path().join("wasm-tests.db");
    let listen = server::preferred_listen(WASM_TEST_PORT);
    let server = Server::spawn(
        &binary,
        &[
            "--listen",
            &listen,
            "--db",
            &db.to_string_lossy(),
            "--allow-origin",
            "*",
            "--test-endpoints",
        ],
    )?;
    let result = util::run(
        util::cargo()
            // `--tests`: lib and integration tests; doctests would be
            // cross-compiled to wasm and have nothing to run.
            .args(["test", "-p", "rangersync-sw", "-p", "rangersync-page"])
            .args(["--target", WASM_TARGET, "--tests"])
            .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER", &runner)
            .env("CHROMEDRIVER", &browser.chromedriver)
            .env_remove("GECKODRIVER")
            .env("RANGERSYNC_TEST_SERVER", server.url())
            .env("WASM_BINDGEN_TEST_TIMEOUT", "120"),
    );
    drop(server);
    result
}

/// Builds `www/pkg` (release wasm) and runs the browser end-to-end tests,
/// one at a time: each launches its own Chromium and there are 2 cores.
fn e2e_tests(state: &mut State) -> Result {
    let browser = state
        .browser
        .clone()
        .ok_or("no browser (the browser step did not run)")?;
    crate::build::build()?;
    crate::postgres::ensure_installed()?;
    util::run(
        util::cargo()
            .args(["test", "-p", "rangersync-e2e", "--", "--test-threads=1"])
            .env("RANGERSYNC_WWW", util::root().join("www"))
            .env("CHROMIUM", &browser.chromium),
    )
}
