//! Project automation for rangersync, in the style of rust-analyzer's `xtask`.
//!
//! Run through the alias in `.cargo/config.toml`: `cargo xtask <command>`.
//!
//! | command | what it does |
//! |---|---|
//! | `demo [--listen ADDR]` | builds the wasm and the server, serves the demo app until Ctrl-C |
//! | `build` | checks/installs the wasm target and the pinned wasm-bindgen CLI, builds both wasm crates into `www/pkg`, runs `wasm-opt -Oz` when available, prints sizes |
//! | `docs` | every relative link, anchor and cited file in the docs resolves; every test docs/GUARANTEES.md's "Guarantees and their tests" names exists |
//! | `docs --api` | builds the npm package, then rewrites the API reference `docs/api/` from its `.d.ts` files with the pinned TypeDoc (`xtask/typedoc/`), then checks the docs |
//! | `test` | the whole CI: docs, fmt, clippy (native and wasm32), native tests, Chromium, wasm tests in a real service worker (wasm-pack), the Vite example built from the npm package and the API reference regenerated from it (it must match `docs/api/`), end-to-end tests in Chromium, then in Firefox ESR; a table of the fault scenarios at the end |
//! | `pkg` | builds, then assembles the npm package in `dist/rangersync/` and packs it into `dist/rangersync.tgz` |
//! | `bench` | native push and dedup throughput against the reference server; rangersync beside Workbox 7.4 in headless Chromium, timed from the page, into `BENCHMARKS.md` |
//! | `bench --encryption` | what encrypted backups cost on 10,000 entities beside the same backup in clear, in Chromium, into `BENCHMARKS.md` |
//! | `bench --profile` | where the worker's time goes: a cold start phase by phase and CPU profiles of `putMany` and concurrent `put`, in Chromium, into `BENCHMARKS.md` |
//! | `bench --quote` | rewrites README.md's Measured quote from `BENCHMARKS.md` (`bench` does it after each run) |
//! | `bench --server` | push throughput (new, resent, p99) on SQLite and on 1, 2 and 3 PostgreSQL instances, into `BENCHMARKS.md` |
//! | `bench --load` | 200 clients pushing and pulling for 60 s against one server (SQLite; `--postgres` too): p50/p99, requests/s, non-2xx, nothing lost, into `BENCHMARKS.md` |
//!
//! Prerequisites are installed only from crates.io (`cargo install`) and Debian
//! (`apt-get`, as root); nothing is ever downloaded from anywhere else. A missing
//! prerequisite that cannot be installed is a one-line error saying what to install.
//!
//! One module per command; `util`, `tools` and `server` hold what they share;
//! `tidy` holds repository rules checked as tests.

mod api;
mod bench;
mod bench_encryption;
mod bench_profile;
mod bench_server;
mod build;
mod demo;
mod docs;
mod example;
mod measured;
mod pkg;
mod postgres;
mod server;
mod test;
mod tidy;
mod tools;
mod util;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  demo [--listen ADDR]   build everything and serve the demo app (default 127.0.0.1:8787)
  build                  build the service worker and page wasm into www/pkg
  docs [--api]           check the docs: links, anchors, cited files, the guarantee tests;
                         --api first builds the package and rewrites docs/api/ (TypeDoc)
  test [--repeat N] [STEP…]
                         run every check CI runs, or only some steps:
                         docs fmt clippy clippy-wasm unit browser wasm example e2e
                         firefox-install firefox webkit-install webkit; --repeat N runs
                         the browser steps (wasm, e2e, firefox, webkit) N times and ends
                         with a table of the tests that failed in any run
  pkg                    build the npm package into dist/rangersync/ and dist/rangersync.tgz
  bench [--mutations N] [--batch B] [--debug] [--writes N] [--drain N] [--drain-large N]
        [--cold-runs N] [--browser-release] [--native-only | --browser-only]
                         measure push and dedup throughput of the reference server, then
                         rangersync beside Workbox 7.4 in Chromium, timed from the page;
                         writes BENCHMARKS.md (browser part) and docs/bench-drain-10k.svg
  bench --encryption     backupNow() and register with and without backupEncryption on
                         10,000 entities (Chromium): BENCHMARKS.md (encryption part)
  bench --profile        a cold start phase by phase, CPU profiles of putMany and of 100
                         puts in flight in the worker (Chromium): BENCHMARKS.md (profile part)
  bench --quote          rewrite README.md's Measured quote from BENCHMARKS.md
  bench --server         push throughput of SQLite and of 1, 2, 3 PostgreSQL instances,
                         50 clients; written into BENCHMARKS.md
  bench --load [--clients N] [--secs S] [--postgres]
                         N clients (200) pushing and pulling for S seconds (60) against one
                         server: p50/p99, requests/s, non-2xx, nothing lost; BENCHMARKS.md";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::FAILURE;
    };
    let result = match command.as_str() {
        "demo" => demo::run(rest),
        "docs" => docs::run(rest),
        "build" => build::run(rest),
        "test" => test::run(rest),
        "pkg" => pkg::run(rest),
        "bench" => bench::run(rest),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command `{other}`\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask {command}: error: {message}");
            ExitCode::FAILURE
        }
    }
}
