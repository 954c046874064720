//! `cargo xtask bench --profile`: where the worker's time goes, for the targets the main bench
//! shows missed (cold start, `put`, `putMany`). Builds the worker with its function names kept
//! (`build::build_named_worker`) into a copy of `www/`, runs `tests/tests/bench_profile.rs` in
//! Chromium against it, and writes what it prints between `<!-- bench:profile -->` and
//! `<!-- /bench:profile -->` in `BENCHMARKS.md`.

use std::path::Path;

use crate::util::{self, Result};

const BEGIN: &str = "<!-- bench:profile -->";
const END: &str = "<!-- /bench:profile -->";

pub fn run() -> Result {
    let chromium = crate::tools::ensure_browser()?.chromium;
    let bindgen = crate::build::build()?;
    let scratch = util::target_dir().join("bench-profile");
    let www = scratch.join("www");
    if www.exists() {
        std::fs::remove_dir_all(&www)
            .map_err(|e| format!("cannot clear {}: {e}", www.display()))?;
    }
    copy_dir(&util::root().join("www"), &www)?;
    crate::build::build_named_worker(&bindgen, &www.join("pkg"))?;
    let report = scratch.join("report.md");
    let _ = std::fs::remove_file(&report);
    util::run(
        util::cargo()
            .args(["test", "-p", "rangersync-e2e", "--test", "bench_profile"])
            .args(["--", "--ignored", "--nocapture", "--test-threads=1"])
            .env("RANGERSYNC_PROFILE_REPORT", &report)
            .env("RANGERSYNC_WWW", &www)
            .env("CHROMIUM", chromium),
    )?;
    let body = std::fs::read_to_string(&report).map_err(|e| {
        format!(
            "{}: {e} (the profile test wrote no report)",
            report.display()
        )
    })?;
    let section = format!(
        "{BEGIN}\n## Where the worker's time goes (`cargo xtask bench --profile`)\n\n\
         Written by `cargo xtask bench --profile` from one run ({}); rerun it rather than \
         editing by hand. The worker is the one `cargo xtask build` ships (`wasm-opt -Oz`), \
         with its function names kept so that the profile names them \
         (`tests/tests/bench_profile.rs`). Times are from a loaded 2-core machine: read the \
         shares, not the milliseconds.\n\n{}\n{END}",
        now_utc(),
        body.trim_end()
    );
    println!("{section}");
    crate::bench::write_section(BEGIN, END, &section)
}

/// `date -u`, for the report's heading.
fn now_utc() -> String {
    util::output(util::cmd("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "date unknown".into())
}

fn copy_dir(from: &Path, to: &Path) -> Result {
    std::fs::create_dir_all(to).map_err(|e| format!("cannot create {}: {e}", to.display()))?;
    for entry in std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        let target = to.join(entry.file_name());
        if entry.file_type().map_err(|e| e.to_string())?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .map_err(|e| format!("cannot copy {}: {e}", entry.path().display()))?;
        }
    }
    Ok(())
}
