//! The reference server's benchmarks, each an ignored test of `server/tests/` run in a release
//! build, each writing its table into its own part of `BENCHMARKS.md` (between its markers; the
//! rest of the file is left alone):
//!
//! - `cargo xtask bench --server`: push throughput on SQLite and on 1, 2 and 3 instances
//!   sharing one PostgreSQL database, 50 concurrent clients (`server/tests/bench_push.rs`,
//!   `<!-- bench:server -->`).
//! - `cargo xtask bench --load`: many clients pushing and pulling at once for a fixed time
//!   against one server with its default limits: latency, requests/s, every non-2xx, and
//!   whether anything acknowledged is missing from the feed (`server/tests/bench_load.rs`,
//!   `<!-- bench:load -->`).
//!
//! Their PostgreSQL is a throwaway cluster the test starts itself.

use std::process::Stdio;

use crate::util::{self, Result};

/// The markers of each benchmark's part of `BENCHMARKS.md`.
struct Markers {
    begin: &'static str,
    end: &'static str,
}

const SERVER: Markers = Markers {
    begin: "<!-- bench:server -->",
    end: "<!-- /bench:server -->",
};
const LOAD: Markers = Markers {
    begin: "<!-- bench:load -->",
    end: "<!-- /bench:load -->",
};
const TABLE_MARK: &str = "BENCH-TABLE";

/// Runs the benchmark and writes its table into `BENCHMARKS.md`. `--batches N` (per client,
/// 10) and `--batch B` (mutations per push, 40) size it.
pub fn run(args: &[String]) -> Result {
    let mut batches = "10".to_owned();
    let mut batch = "40".to_owned();
    for (flag, value) in util::parse_flags(args, &["--batches", "--batch"], &["--server"])? {
        let Some(value) = value else {
            continue; // --server itself
        };
        if value.parse::<usize>().map_or(true, |n| n == 0) {
            return Err(format!("{flag} needs a positive number"));
        }
        match flag.as_str() {
            "--batches" => batches = value.to_owned(),
            "--batch" => batch = value.to_owned(),
            _ => {}
        }
    }
    crate::postgres::ensure_installed()?;
    let table = run_bench_test(
        "bench_push",
        &[
            ("RANGERSYNC_BENCH_BATCHES", batches),
            ("RANGERSYNC_BENCH_BATCH", batch),
        ],
    )?;
    let section = format!(
        "## Push throughput of the sync server (`cargo xtask bench --server`, {})\n\n{table}\n",
        today()
    );
    write_section(&SERVER, &section)
}

/// `cargo xtask bench --load`: `--clients N` (200) for `--secs S` (60) on SQLite;
/// `--postgres` adds the same run on PostgreSQL.
pub fn run_load(args: &[String]) -> Result {
    let mut clients = "200".to_owned();
    let mut secs = "60".to_owned();
    let mut postgres = false;
    for (flag, value) in
        util::parse_flags(args, &["--clients", "--secs"], &["--load", "--postgres"])?
    {
        match (flag.as_str(), value) {
            ("--postgres", _) => postgres = true,
            (_, None) => {} // --load itself
            (_, Some(value)) if value.parse::<usize>().map_or(true, |n| n == 0) => {
                return Err(format!("{flag} needs a positive number"));
            }
            ("--clients", Some(value)) => clients = value.to_owned(),
            (_, Some(value)) => secs = value.to_owned(),
        }
    }
    if postgres {
        crate::postgres::ensure_installed()?;
    }
    let table = run_bench_test(
        "bench_load",
        &[
            ("RANGERSYNC_BENCH_CLIENTS", clients),
            ("RANGERSYNC_BENCH_SECS", secs),
            (
                "RANGERSYNC_BENCH_POSTGRES",
                if postgres { "1" } else { "0" }.to_owned(),
            ),
        ],
    )?;
    let section = format!(
        "## Many clients at once against one server (`cargo xtask bench --load`)\n\n\
         Written by `cargo xtask bench --load` from one run; rerun it rather than editing by \
         hand.\n\n{}\n{table}\n",
        environment()
    );
    write_section(&LOAD, &section)
}

/// Runs the ignored test `test` of the server (release build) with `env`; its table, printed
/// between `BENCH-TABLE` lines.
fn run_bench_test(test: &str, env: &[(&str, String)]) -> Result<String> {
    let mut cargo = util::cargo();
    cargo
        .args(["test", "--release", "-p", "rangersync-server"])
        .args(["--test", test, "--", "--ignored", "--nocapture"])
        .stdout(Stdio::piped());
    for (name, value) in env {
        cargo.env(name, value);
    }
    println!("$ {}", util::display(&cargo));
    let out = cargo
        .spawn()
        .and_then(|child| child.wait_with_output())
        .map_err(|e| format!("cargo test: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    if !out.status.success() {
        return Err(format!("the {test} benchmark failed ({})", out.status));
    }
    Ok(stdout
        .split(TABLE_MARK)
        .nth(1)
        .ok_or("the benchmark printed no table")?
        .trim()
        .to_owned())
}

fn today() -> String {
    util::output(std::process::Command::new("date").arg("+%Y-%m-%d"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// When, on what and with which build, as a Markdown list.
fn environment() -> String {
    let date = util::output(std::process::Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
        .unwrap_or_else(|| "unknown date".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu =
        crate::bench::proc_field("cpuinfo", "model name").unwrap_or_else(|| "unknown CPU".into());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let rustc = util::output(
        std::process::Command::new("rustc")
            .arg("--version")
            .current_dir(util::root()),
    )
    .unwrap_or_else(|| "rustc ?".into());
    let commit = util::output(
        std::process::Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .current_dir(util::root()),
    )
    .unwrap_or_else(|| "?".into());
    format!(
        "- run: {}; load average at the end {} (1, 5, 15 min)\n\
         - machine: {cpu}, {cores} cores; the load generator and the server share them\n\
         - build: release `rangersync-server` at commit {}, {}\n",
        date.trim(),
        load.join(" "),
        commit.trim(),
        rustc.trim(),
    )
}

fn write_section(markers: &Markers, section: &str) -> Result {
    let path = util::root().join("BENCHMARKS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    std::fs::write(&path, replace_section(&old, markers, section))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// `text` with the part between the markers replaced by `section` (markers kept), or the
/// markers and `section` appended when absent.
fn replace_section(text: &str, markers: &Markers, section: &str) -> String {
    let Markers {
        begin: open,
        end: close,
    } = markers;
    let block = format!("{open}\n{section}{close}");
    match (text.find(open), text.find(close)) {
        (Some(begin), Some(end)) if begin < end => {
            format!("{}{block}{}", &text[..begin], &text[end + close.len()..])
        }
        _ if text.trim().is_empty() => format!("# Benchmarks\n\n{block}\n"),
        _ => format!("{}\n\n{block}\n", text.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_server_section_of_benchmarks_md_is_replaced() {
        let (begin, end) = (SERVER.begin, SERVER.end);
        let text = format!("# B\n\nbrowser table\n\n{begin}\nold\n{end}\n\nmore\n");
        let new = replace_section(&text, &SERVER, "new\n");
        assert_eq!(
            new,
            format!("# B\n\nbrowser table\n\n{begin}\nnew\n{end}\n\nmore\n")
        );
        let appended = replace_section("# B\n\nbrowser\n", &SERVER, "new\n");
        assert_eq!(appended, format!("# B\n\nbrowser\n\n{begin}\nnew\n{end}\n"));
        assert!(replace_section("", &SERVER, "new\n").contains(&format!("{begin}\nnew\n{end}")));
    }

    #[test]
    fn the_load_table_goes_between_its_own_markers_and_leaves_the_push_table_alone() {
        let push = format!("{}\npush table\n{}", SERVER.begin, SERVER.end);
        let text = format!("# B\n\n{push}\n");
        let once = replace_section(&text, &LOAD, "load 1\n");
        assert_eq!(
            once,
            format!("# B\n\n{push}\n\n{}\nload 1\n{}\n", LOAD.begin, LOAD.end)
        );
        let twice = replace_section(&once, &LOAD, "load 2\n");
        assert_eq!(
            twice,
            format!("# B\n\n{push}\n\n{}\nload 2\n{}\n", LOAD.begin, LOAD.end)
        );
    }
}
