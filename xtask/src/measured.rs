//! The README's "Measured" section: rows of BENCHMARKS.md's browser table, quoted verbatim
//! between two markers. `cargo xtask bench` rewrites the quote after each run, and
//! `cargo xtask docs` fails when the README's quote is not what BENCHMARKS.md holds now, so a
//! number in the README is always one of the last run's.

use std::path::Path;

use crate::util::Result;

/// The markers of the quote in README.md.
pub const BEGIN_MARKER: &str = "<!-- measured:quote -->";
pub const END_MARKER: &str = "<!-- /measured:quote -->";

/// The README the quote lives in and the document it quotes, relative to the root.
pub const README: &str = "README.md";
pub const BENCHMARKS: &str = "BENCHMARKS.md";

/// The browser rows quoted, by how their first cell starts: the targets of issue 19 (writes,
/// drains, start, the app's own traffic, bytes), in BENCHMARKS.md's order.
const QUOTED_ROWS: [&str; 10] = [
    "sequential `put`, p50",
    "concurrent `put`, 100 in flight",
    "`putMany`",
    "drain of 10,000 queued writes: time",
    "drain of 100,000 queued writes: time",
    "worker cold start",
    "page navigation, worker stopped",
    "non-captured `fetch` POST",
    "bytes a page downloads to `register`, gzip",
    "start-up worker, gzip",
];

/// The quote BENCHMARKS.md's browser part gives: the run line, the table's header and the
/// [`QUOTED_ROWS`], between the markers. Fails when BENCHMARKS.md lacks the run line, the
/// table or one of the rows (a renamed row must be renamed here too).
pub fn quote(benchmarks: &str) -> Result<String> {
    let browser = section(
        benchmarks,
        crate::bench::BEGIN_MARKER,
        crate::bench::END_MARKER,
    )
    .ok_or_else(|| format!("{BENCHMARKS} has no browser part (run `cargo xtask bench`)"))?;
    let run = browser
        .lines()
        .find_map(|l| l.strip_prefix("- run: "))
        .and_then(|l| l.split(',').next())
        .ok_or_else(|| format!("{BENCHMARKS}'s browser part has no `- run:` line"))?;
    let table: Vec<&str> = browser.lines().filter(|l| l.starts_with('|')).collect();
    if table.len() < 2 {
        return Err(format!("{BENCHMARKS}'s browser part has no table"));
    }
    let mut out = format!(
        "{BEGIN_MARKER}\nFrom the run of {run} ([BENCHMARKS.md](BENCHMARKS.md) has every row, the \
         machine and how each is measured; `cargo xtask bench` rewrites both):\n\n{}\n{}\n",
        table[0], table[1]
    );
    for label in QUOTED_ROWS {
        let row = table[2..]
            .iter()
            .find(|row| row.trim_start_matches('|').trim_start().starts_with(label))
            .ok_or_else(|| format!("{BENCHMARKS}'s browser table has no row `{label}…`"))?;
        out.push_str(row);
        out.push('\n');
    }
    out.push_str(END_MARKER);
    Ok(out)
}

/// The text from `begin` to `end`, both included.
fn section<'a>(text: &'a str, begin: &str, end: &str) -> Option<&'a str> {
    let from = text.find(begin)?;
    let to = text[from..].find(end)? + from + end.len();
    Some(&text[from..to])
}

/// Rewrites the README's quote from BENCHMARKS.md (after a bench run).
pub fn write(root: &Path) -> Result {
    let benchmarks = read(root, BENCHMARKS)?;
    let readme = read(root, README)?;
    if section(&readme, BEGIN_MARKER, END_MARKER).is_none() {
        return Err(format!(
            "{README} has no `{BEGIN_MARKER}` … `{END_MARKER}` quote"
        ));
    }
    let new =
        crate::bench::replace_section(&readme, BEGIN_MARKER, END_MARKER, &quote(&benchmarks)?);
    std::fs::write(root.join(README), new).map_err(|e| format!("cannot write {README}: {e}"))
}

/// The problem with the README's quote, if any: missing, or not what BENCHMARKS.md holds.
pub fn check(readme: &str, benchmarks: &str) -> Option<String> {
    let Some(quoted) = section(readme, BEGIN_MARKER, END_MARKER) else {
        return Some(format!(
            "{README}: no `{BEGIN_MARKER}` … `{END_MARKER}` quote of {BENCHMARKS}"
        ));
    };
    match quote(benchmarks) {
        Ok(expected) if expected == quoted => None,
        Ok(_) => Some(format!(
            "{README}: the Measured quote is not what {BENCHMARKS} holds: run `cargo xtask bench --quote`"
        )),
        Err(e) => Some(format!("{README}: {e}")),
    }
}

fn read(root: &Path, name: &str) -> Result<String> {
    std::fs::read_to_string(root.join(name)).map_err(|e| format!("cannot read {name}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn benchmarks(cold_start: &str) -> String {
        let mut rows = String::new();
        for label in QUOTED_ROWS {
            let value = if label == "worker cold start" {
                cold_start
            } else {
                "1"
            };
            rows.push_str(&format!("| {label} (detail) | {value} | 2 | – |\n"));
        }
        format!(
            "# Benchmarks\n\n{}\n## Browser\n\n- run: 2026-12-08 01:00 UTC, 200 s in all\n\n| | rangersync | Workbox | ratio |\n|---|---|---|---|\n| a row not quoted | 9 | 9 | – |\n{rows}\nprose\n{}\n",
            crate::bench::BEGIN_MARKER,
            crate::bench::END_MARKER
        )
    }

    #[test]
    fn the_quote_holds_the_run_the_header_and_the_quoted_rows_only() {
        let quote = quote(&benchmarks("40 ms")).unwrap();
        assert!(quote.starts_with(BEGIN_MARKER) && quote.ends_with(END_MARKER));
        assert!(
            quote.contains("From the run of 2026-12-08 01:00 UTC ("),
            "{quote}"
        );
        assert!(quote.contains("| worker cold start (detail) | 40 ms | 2 | – |\n"));
        assert!(!quote.contains("a row not quoted"));
        assert_eq!(
            quote.lines().filter(|l| l.starts_with('|')).count(),
            2 + QUOTED_ROWS.len()
        );
    }

    #[test]
    fn a_readme_quoting_an_older_run_is_reported() {
        let readme = format!(
            "# App\n\n## Measured\n\n{}\n",
            quote(&benchmarks("40 ms")).unwrap()
        );
        assert_eq!(check(&readme, &benchmarks("40 ms")), None);
        let stale = check(&readme, &benchmarks("35 ms")).unwrap();
        assert!(stale.contains("not what BENCHMARKS.md holds"), "{stale}");
        let missing = check("# App\n", &benchmarks("40 ms")).unwrap();
        assert!(
            missing.contains("no `<!-- measured:quote -->`"),
            "{missing}"
        );
    }

    #[test]
    fn a_row_missing_from_benchmarks_is_an_error_naming_it() {
        let without = benchmarks("40 ms").replace("| worker cold start (detail)", "| renamed");
        let error = quote(&without).unwrap_err();
        assert!(error.contains("no row `worker cold start…`"), "{error}");
    }

    #[test]
    fn the_repository_readme_quotes_the_benchmarks_of_the_last_run() {
        let root = crate::util::root();
        let readme = read(&root, README).unwrap();
        let benchmarks = read(&root, BENCHMARKS).unwrap();
        assert_eq!(check(&readme, &benchmarks), None);
    }
}
