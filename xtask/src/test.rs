//! `cargo xtask test`: everything CI checks, in order, stopping at the first
//! failure with one line naming the step.
//!
//! One target folder and fixed profiles throughout, so nothing is built twice:
//! `dev` for native code and the wasm tests, `wasm-release` (or `release`) for
//! the wasm in `www/pkg`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::server::{self, Server};
use crate::tools::{self, Browser, Firefox, WebKit, WASM_TARGET};
use crate::util::{self, Result};

/// The port the wasm tests' server prefers (see [`server::preferred_listen`]).
const WASM_TEST_PORT: u16 = 18787;

/// What earlier steps found and later steps use.
#[derive(Default)]
struct State {
    browser: Option<Browser>,
    firefox: Option<Firefox>,
    webkit: Option<WebKit>,
    /// With `--repeat N`: the browser steps run N times and every run's failures are kept.
    repeat: Option<u32>,
    /// The tests that failed, as `(run, step, test)`.
    failures: Vec<(u32, &'static str, String)>,
    /// The run of a repeated step (1-based; 1 without `--repeat`).
    run: u32,
    /// The step being run.
    step: &'static str,
}

impl State {
    /// Runs a test command: with `--repeat`, cargo is asked to go on past a failing test
    /// binary (`--no-fail-fast`, given in `no_fail_fast_at`, the place for cargo's own
    /// options), and the failed tests are recorded either way.
    fn run_tests(&mut self, command: &mut Command) -> Result {
        let (result, failed) = util::run_tests(command);
        for name in failed {
            self.failures.push((self.run, self.step, name));
        }
        result
    }

    /// `--no-fail-fast` when repeating (so one flaky test does not hide the others).
    fn cargo_test(&self) -> Command {
        let mut cargo = util::cargo();
        cargo.arg("test");
        if self.repeat.is_some() {
            cargo.arg("--no-fail-fast");
        }
        cargo
    }
}

/// The steps that drive browsers: the ones `--repeat N` runs N times.
const BROWSER_STEPS: [&str; 4] = ["wasm", "e2e", "firefox", "webkit"];

/// A step: its id (for `cargo xtask test ID…`), its name, what it does.
type Step = (&'static str, &'static str, fn(&mut State) -> Result);

const STEPS: [Step; 13] = [
    ("docs", "docs (links, guarantee tests)", docs),
    ("fmt", "fmt", fmt),
    ("clippy", "clippy (native)", clippy_native),
    ("clippy-wasm", "clippy (wasm32)", clippy_wasm),
    ("unit", "native tests", native_tests),
    ("browser", "chromium + chromedriver", browser),
    ("wasm", "wasm tests (wasm-pack, Chromium)", wasm_tests),
    (
        "example",
        "build www/pkg + size budget + the Vite example + the API reference (npm)",
        example,
    ),
    ("e2e", "e2e tests (Chromium)", e2e_tests),
    (
        "firefox-install",
        "firefox-esr + geckodriver",
        firefox_install,
    ),
    ("firefox", "e2e tests (Firefox)", firefox_tests),
    ("webkit-install", "webkit2gtk-driver + xvfb", webkit_install),
    ("webkit", "e2e tests (WebKitGTK)", webkit_tests),
];

/// Where the fault scenarios write their summary lines (`tests/src/summary.rs`), emptied at
/// the start of a run that includes `e2e` or `firefox` and printed as a table at its end.
const SCENARIO_SUMMARY_ENV: &str = "RANGERSYNC_SCENARIO_SUMMARY";

fn scenario_summary_file() -> PathBuf {
    util::target_dir().join("xtask").join("scenarios.jsonl")
}

/// The browsers driven through WebDriver, each with its own test files
/// (`tests/tests/<prefix>*.rs`) whose tests are all named `<prefix>…`: the Chromium run skips
/// them by that prefix.
const DRIVER_BROWSER_PREFIXES: [&str; 2] = ["firefox_", "webkit_"];

/// The end-to-end test files whose name starts with `prefix` (`firefox_`, `webkit_`).
fn driver_test_files(prefix: &str) -> Result<Vec<String>> {
    let dir = util::root().join("tests").join("tests");
    let entries =
        std::fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(prefix) && name.ends_with(".rs"))
        .map(|name| name.trim_end_matches(".rs").to_string())
        .collect();
    names.sort();
    Ok(names)
}

/// Runs every step, or only the ones named (`cargo xtask test wasm e2e`; the
/// browser step is added when a later step needs it); prints each one's time
/// and a summary table.
pub fn run(args: &[String]) -> Result {
    let (repeat, args) = split_repeat(args)?;
    let args = &args[..];
    let ids: Vec<&str> = STEPS.iter().map(|(id, _, _)| *id).collect();
    if let Some(unknown) = args.iter().find(|a| !ids.contains(&a.as_str())) {
        return Err(format!(
            "unknown step `{unknown}`; steps are: {}",
            ids.join(" ")
        ));
    }
    let needs_browser = args.iter().any(|a| a == "wasm" || a == "e2e");
    // The e2e tests include the Vite example's, which need it built.
    let needs_example = args.iter().any(|a| a == "e2e");
    let needs_firefox = args.iter().any(|a| a == "firefox");
    let needs_webkit = args.iter().any(|a| a == "webkit");
    let selected = |id: &str| {
        args.is_empty()
            || args.iter().any(|a| a == id)
            || (id == "browser" && needs_browser)
            || (id == "example" && needs_example)
            || (id == "firefox-install" && needs_firefox)
            || (id == "webkit-install" && needs_webkit)
    };
    let summary = scenario_summary_file();
    if selected("e2e") || selected("firefox") || selected("webkit") {
        let _ = std::fs::remove_file(&summary);
        // The scenarios append to it: its folder must exist even when no earlier step made it.
        if let Some(dir) = summary.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
    }
    let start = Instant::now();
    let mut state = State {
        repeat,
        ..State::default()
    };
    let mut times: Vec<(String, Duration, bool)> = Vec::new();
    let mut failure = None;
    let mut failed_runs = Vec::new();
    'steps: for (number, (id, name, step)) in STEPS.iter().enumerate() {
        if !selected(id) {
            continue;
        }
        let runs = match repeat {
            Some(n) if BROWSER_STEPS.contains(id) => n,
            _ => 1,
        };
        for run in 1..=runs {
            let label = if runs > 1 {
                format!("{name} (run {run}/{runs})")
            } else {
                (*name).to_owned()
            };
            println!("\n=== step {}/{}: {label}", number + 1, STEPS.len());
            state.run = run;
            state.step = id;
            let (result, elapsed) = util::timed(name, || step(&mut state));
            times.push((label.clone(), elapsed, result.is_ok()));
            if let Err(e) = result {
                let message = format!("step {} ({label}) failed: {e}", number + 1);
                if runs > 1 {
                    // A repeated browser step goes on: the point is to count every failure.
                    failed_runs.push(message);
                    continue;
                }
                failure = Some(message);
                break 'steps;
            }
        }
    }
    if failure.is_none() && !failed_runs.is_empty() {
        failure = Some(failed_runs.join("; "));
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
    if let Some(n) = repeat {
        println!("\n{}", flaky_table(n, &state.failures));
    }
    if let Ok(lines) = std::fs::read_to_string(&summary) {
        println!("\nfault scenarios ({}):\n", summary.display());
        println!("{}", scenario_table(&lines));
    }
    match failure {
        Some(message) => Err(message),
        None => Ok(()),
    }
}

/// `--repeat N` (N ≥ 1) taken out of the arguments.
fn split_repeat(args: &[String]) -> Result<(Option<u32>, Vec<String>)> {
    let mut repeat = None;
    let mut rest = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--repeat" {
            let value = args.next().ok_or("--repeat needs a number of runs")?;
            let n: u32 = value
                .parse()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("--repeat takes a number of runs ≥ 1, not `{value}`"))?;
            repeat = Some(n);
        } else {
            rest.push(arg.clone());
        }
    }
    Ok((repeat, rest))
}

/// The tests that failed in any of `runs` runs, as a Markdown table: test, step, failed runs
/// out of `runs`; "no test failed" when there is none.
fn flaky_table(runs: u32, failures: &[(u32, &str, String)]) -> String {
    use std::collections::BTreeMap;
    if failures.is_empty() {
        return format!("flaky tests: no test failed in {runs} run(s) of the browser steps");
    }
    let mut by_test: BTreeMap<(&str, &str), Vec<u32>> = BTreeMap::new();
    for (run, step, test) in failures {
        by_test.entry((step, test)).or_default().push(*run);
    }
    let mut table = format!(
        "flaky tests ({runs} runs of the browser steps):\n\n\
         | test | step | failed in | runs |\n|---|---|---|---|\n"
    );
    for ((step, test), failed) in by_test {
        let list: Vec<String> = failed.iter().map(u32::to_string).collect();
        table.push_str(&format!(
            "| {test} | {step} | {} of {runs} | {} |\n",
            failed.len(),
            list.join(", ")
        ));
    }
    table
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

/// The wasm crates' tests, run by `wasm-pack test --headless --chrome --mode no-install` (one
/// crate at a time) in headless Chromium (inside a service worker where the tests ask for it),
/// against a real server whose URL they read at compile time from `RANGERSYNC_TEST_SERVER`.
///
/// In no-install mode wasm-pack takes `wasm-bindgen` from `PATH` (of the version the lock file
/// names) and the test runner beside it, and chromedriver from `--chromedriver`: it downloads
/// nothing. The runner serves files it did not generate from its working directory, and the
/// page module's page-mode tests import `/rangersync_page_extras.js` from `www/pkg`; so `PATH`
/// starts with a folder of two small scripts that run the pinned binaries from `.tools/`, the
/// runner inside `www/pkg`.
fn wasm_tests(state: &mut State) -> Result {
    let browser = state
        .browser
        .clone()
        .ok_or("no browser (the browser step did not run)")?;
    let bindgen = crate::build::build()?;
    let wasm_pack = tools::ensure_wasm_pack()?;
    let shims = util::target_dir().join("xtask").join("wasm-pack-bin");
    write_shim(
        &shims.join("wasm-bindgen"),
        &format!("exec '{}' \"$@\"", bindgen.cli.display()),
    )?;
    write_shim(
        &shims.join("wasm-bindgen-test-runner"),
        &format!(
            "cd '{}' && exec '{}' \"$@\"",
            crate::build::pkg_dir().display(),
            bindgen.test_runner.display()
        ),
    )?;
    let path = std::env::join_paths(std::iter::once(shims.clone()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .map_err(|e| format!("cannot build PATH: {e}"))?;
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
    let mut result = Ok(());
    for krate in ["sw", "page-client"] {
        result = state.run_tests(
            util::cmd(&wasm_pack)
                .args(["test", "--headless", "--chrome", "--chromedriver"])
                .arg(&browser.chromedriver)
                .args(["--mode", "no-install", krate])
                // The lib's and the integration tests: doctests would be cross-compiled to
                // wasm and have nothing to run. (Not `--tests`: wasm-pack passes these options
                // to its own `cargo build --tests` too, and cargo refuses a repeated flag.)
                .args(["--lib", "--test", "*"])
                .env("PATH", &path)
                .env_remove("GECKODRIVER")
                .env("RANGERSYNC_TEST_SERVER", server.url())
                .env("WASM_BINDGEN_TEST_TIMEOUT", "120"),
        );
        if result.is_err() {
            break;
        }
    }
    drop(server);
    result
}

/// Writes an executable `sh` script.
fn write_shim(path: &Path, body: &str) -> Result {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::write(path, format!("#!/bin/sh\n{body}\n"))
        .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Builds `www/pkg` (release wasm), packs the npm package and builds the Vite example with it
/// (`examples/vite-react`, whose end-to-end tests run in the next step); then regenerates the
/// API reference from the package just packed and fails when `docs/api/` differs.
fn example(_: &mut State) -> Result {
    crate::build::build()?;
    crate::build::check_size_budget()?;
    crate::example::prepare()?;
    let (result, _) = util::timed(
        "API reference (TypeDoc) against docs/api",
        crate::api::check,
    );
    result
}

/// The browser end-to-end tests, one at a time: each launches its own Chromium and there are
/// 2 cores. (`www/pkg` and the example were built by the step before.)
fn e2e_tests(state: &mut State) -> Result {
    let browser = state
        .browser
        .clone()
        .ok_or("no browser (the browser step did not run)")?;
    crate::postgres::ensure_installed()?;
    let node = tools::ensure_node()?;
    let mut cargo = state.cargo_test();
    state.run_tests(
        cargo
            .args(["-p", "rangersync-e2e", "--"])
            .arg("--test-threads=1")
            .args(DRIVER_BROWSER_PREFIXES.iter().flat_map(|p| ["--skip", p]))
            .env(tools::NODE_ENV, node)
            .env("RANGERSYNC_WWW", util::root().join("www"))
            .env("CHROMIUM", &browser.chromium)
            .env(SCENARIO_SUMMARY_ENV, scenario_summary_file()),
    )
}

fn firefox_install(state: &mut State) -> Result {
    let firefox = tools::ensure_firefox()?;
    for program in [&firefox.firefox, &firefox.geckodriver] {
        if let Some(version) = util::output(Command::new(program).arg("--version")) {
            println!("{}", version.lines().next().unwrap_or_default());
        }
    }
    state.firefox = Some(firefox);
    Ok(())
}

/// The end-to-end tests that drive Firefox ESR through geckodriver (`tests/tests/firefox_*.rs`),
/// against the same `www/pkg`.
fn firefox_tests(state: &mut State) -> Result {
    let firefox = state
        .firefox
        .clone()
        .ok_or("no Firefox (the firefox-install step did not run)")?;
    driver_browser_tests(
        state,
        "firefox_",
        &[
            ("FIREFOX", &firefox.firefox),
            ("GECKODRIVER", &firefox.geckodriver),
        ],
    )
}

/// The end-to-end test files of one WebDriver browser (`tests/tests/<prefix>*.rs`), one test
/// at a time, against the same `www/pkg`, with the browser's tools in `tools`.
fn driver_browser_tests(state: &mut State, prefix: &str, tools: &[(&str, &Path)]) -> Result {
    crate::build::build()?;
    let mut cargo = state.cargo_test();
    cargo.args(["-p", "rangersync-e2e"]);
    for file in driver_test_files(prefix)? {
        cargo.args(["--test", &file]);
    }
    cargo
        .args(["--", "--test-threads=1"])
        .env("RANGERSYNC_WWW", util::root().join("www"))
        .env(SCENARIO_SUMMARY_ENV, scenario_summary_file());
    for (name, path) in tools {
        cargo.env(name, path);
    }
    state.run_tests(&mut cargo)
}

fn webkit_install(state: &mut State) -> Result {
    let webkit = tools::ensure_webkit()?;
    if let Some(version) = util::output(Command::new(&webkit.driver).arg("--version")) {
        println!("{}", version.lines().next().unwrap_or_default());
    }
    state.webkit = Some(webkit);
    Ok(())
}

/// The end-to-end tests that drive WebKitGTK through WebKitWebDriver
/// (`tests/tests/webkit_*.rs`), against the same `www/pkg`.
fn webkit_tests(state: &mut State) -> Result {
    let webkit = state
        .webkit
        .clone()
        .ok_or("no WebKit (the webkit-install step did not run)")?;
    driver_browser_tests(
        state,
        "webkit_",
        &[
            ("WEBKIT_WEBDRIVER", &webkit.driver),
            ("XVFB_RUN", &webkit.xvfb_run),
        ],
    )
}

/// The summary lines as a Markdown table: scenario, browser, writes, faults injected, lost,
/// duplicated, time (docs/GUARANTEES.md keeps a copy from the last run).
fn scenario_table(lines: &str) -> String {
    let mut table = String::from(
        "| scenario | browser | writes | faults injected | lost | duplicated | time |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for line in lines.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(row) = serde_json::from_str::<serde_json::Value>(line) else {
            table.push_str(&format!("| unreadable line: {line} |\n"));
            continue;
        };
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {:.1} s |\n",
            row["scenario"].as_str().unwrap_or("?"),
            row["browser"].as_str().unwrap_or("?"),
            row["writes"],
            row["faults"],
            row["lost"],
            row["duplicated"],
            row["seconds"].as_f64().unwrap_or(0.0),
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scenario_table_has_one_row_per_line() {
        let lines = r#"{"scenario":"s","browser":"firefox 153.8.0","writes":20,"faults":1,"lost":0,"duplicated":0,"seconds":4.31}

{"scenario":"t","browser":"HeadlessChrome/156","writes":2000,"faults":15,"lost":0,"duplicated":0,"seconds":30.0}"#;
        let table = scenario_table(lines);
        assert!(table.starts_with(
            "| scenario | browser | writes | faults injected | lost | duplicated | time |\n"
        ));
        assert!(
            table.contains("| s | firefox 153.8.0 | 20 | 1 | 0 | 0 | 4.3 s |\n"),
            "{table}"
        );
        assert!(
            table.contains("| t | HeadlessChrome/156 | 2000 | 15 | 0 | 0 | 30.0 s |\n"),
            "{table}"
        );
        assert_eq!(table.lines().count(), 4);
    }

    #[test]
    fn repeat_is_taken_out_of_the_step_names_and_must_be_a_positive_number() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (repeat, rest) = split_repeat(&args(&["e2e", "--repeat", "5", "firefox"])).unwrap();
        assert_eq!(repeat, Some(5));
        assert_eq!(rest, args(&["e2e", "firefox"]));
        assert_eq!(
            split_repeat(&args(&["wasm"])).unwrap(),
            (None, args(&["wasm"]))
        );
        for bad in [&["--repeat"][..], &["--repeat", "0"], &["--repeat", "x"]] {
            assert!(split_repeat(&args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_flaky_table_counts_each_test_s_failed_runs() {
        let failures = vec![
            (1, "e2e", "offline_app::reopens".to_string()),
            (3, "e2e", "offline_app::reopens".to_string()),
            (2, "firefox", "firefox_quota".to_string()),
        ];
        let table = flaky_table(5, &failures);
        assert!(
            table.contains("| offline_app::reopens | e2e | 2 of 5 | 1, 3 |"),
            "{table}"
        );
        assert!(
            table.contains("| firefox_quota | firefox | 1 of 5 | 2 |"),
            "{table}"
        );
        assert!(flaky_table(5, &[]).contains("no test failed in 5 run(s)"));
    }

    #[test]
    fn a_failed_test_is_read_from_the_harness_line() {
        assert_eq!(util::failed_test_name("test a::b ... FAILED"), Some("a::b"));
        assert_eq!(util::failed_test_name("test a::b ... ok"), None);
        assert_eq!(
            util::failed_test_name("test result: FAILED. 1 passed"),
            None
        );
    }

    #[test]
    fn the_firefox_and_webkit_test_files_are_found() {
        let files = driver_test_files("firefox_").unwrap();
        assert!(files.contains(&"firefox_delivery".to_string()), "{files:?}");
        let files = driver_test_files("webkit_").unwrap();
        assert!(files.contains(&"webkit_delivery".to_string()), "{files:?}");
    }

    /// The Chromium run skips the WebDriver browsers' tests by name (`--skip firefox_`,
    /// `--skip webkit_`): a test in such a file named otherwise would run in two steps.
    #[test]
    fn every_test_in_a_firefox_or_webkit_file_is_named_after_its_browser() {
        for prefix in DRIVER_BROWSER_PREFIXES {
            for file in driver_test_files(prefix).unwrap() {
                let path = util::root().join(format!("tests/tests/{file}.rs"));
                let text = std::fs::read_to_string(&path).unwrap();
                let mut lines = text.lines();
                while let Some(line) = lines.next() {
                    if !line.trim_start().starts_with("#[tokio::test]") {
                        continue;
                    }
                    let signature = lines.next().unwrap_or_default().trim();
                    let name = signature
                        .trim_start_matches("async ")
                        .trim_start_matches("fn ")
                        .split(['(', '<'])
                        .next()
                        .unwrap_or_default();
                    assert!(
                        name.starts_with(prefix),
                        "{}: test `{name}` must be named {prefix}…",
                        path.display()
                    );
                }
            }
        }
    }
}
