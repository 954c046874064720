//! `cargo xtask bench --server`: push throughput of the reference server on SQLite and on
//! 1, 2 and 3 instances sharing one PostgreSQL database, 50 concurrent clients, in one run.
//!
//! The measuring code is the ignored test `server/tests/bench_push.rs` (release build; it
//! starts the instances and its own throwaway PostgreSQL cluster). Its table replaces the
//! part of `BENCHMARKS.md` between `<!-- bench:server -->` and `<!-- /bench:server -->`;
//! the rest of the file (the browser benchmark) is left alone.

use std::process::Stdio;

use crate::util::{self, Result};

const BEGIN: &str = "<!-- bench:server -->";
const END: &str = "<!-- /bench:server -->";
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
    let mut test = util::cargo();
    test.args(["test", "--release", "-p", "rangersync-server"])
        .args(["--test", "bench_push", "--", "--ignored", "--nocapture"])
        .env("RANGERSYNC_BENCH_BATCHES", &batches)
        .env("RANGERSYNC_BENCH_BATCH", &batch)
        .stdout(Stdio::piped());
    println!("$ {}", util::display(&test));
    let out = test
        .spawn()
        .and_then(|child| child.wait_with_output())
        .map_err(|e| format!("cargo test: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    if !out.status.success() {
        return Err(format!("the server benchmark failed ({})", out.status));
    }
    let table = stdout
        .split(TABLE_MARK)
        .nth(1)
        .ok_or("the benchmark printed no table")?
        .trim();
    let path = util::root().join("BENCHMARKS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let date =
        util::output(std::process::Command::new("date").arg("+%Y-%m-%d")).unwrap_or_default();
    let section = format!(
        "## Push throughput of the sync server (`cargo xtask bench --server`, {})\n\n{table}\n",
        date.trim()
    );
    std::fs::write(&path, replace_section(&old, &section))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// `text` with the part between the markers replaced by `section` (markers kept), or the
/// markers and `section` appended when absent.
fn replace_section(text: &str, section: &str) -> String {
    let block = format!("{BEGIN}\n{section}{END}");
    match (text.find(BEGIN), text.find(END)) {
        (Some(begin), Some(end)) if begin < end => {
            format!("{}{block}{}", &text[..begin], &text[end + END.len()..])
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
        let text = format!("# B\n\nbrowser table\n\n{BEGIN}\nold\n{END}\n\nmore\n");
        let new = replace_section(&text, "new\n");
        assert_eq!(
            new,
            format!("# B\n\nbrowser table\n\n{BEGIN}\nnew\n{END}\n\nmore\n")
        );
        let appended = replace_section("# B\n\nbrowser\n", "new\n");
        assert_eq!(appended, format!("# B\n\nbrowser\n\n{BEGIN}\nnew\n{END}\n"));
        assert!(replace_section("", "new\n").contains(&format!("{BEGIN}\nnew\n{END}")));
    }
}
