//! `cargo xtask bench --encryption`: what encrypted backups cost (tests/tests/bench_encryption.rs,
//! in Chromium), as a table in `BENCHMARKS.md` between `<!-- bench:encryption -->` and
//! `<!-- /bench:encryption -->`. No peer encrypts backups; the row beside it is the same
//! backup in clear, measured in the same run.

use serde_json::Value;

use crate::util::{self, Result};

const BEGIN: &str = "<!-- bench:encryption -->";
const END: &str = "<!-- /bench:encryption -->";

pub fn run() -> Result {
    let chromium = crate::tools::ensure_browser()?.chromium;
    crate::build::build()?;
    let results_path = util::target_dir().join("bench-encryption.json");
    let _ = std::fs::remove_file(&results_path);
    util::run(
        util::cargo()
            .args(["test", "-p", "rangersync-e2e", "--test", "bench_encryption"])
            .args(["--", "--ignored", "--nocapture", "--test-threads=1"])
            .env("RANGERSYNC_BENCH_RESULTS", &results_path)
            .env("RANGERSYNC_WWW", util::root().join("www"))
            .env("CHROMIUM", chromium),
    )?;
    let text = std::fs::read_to_string(&results_path)
        .map_err(|e| format!("{}: {e}", results_path.display()))?;
    let results: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not JSON: {e}", results_path.display()))?;
    let section = table(&results);
    println!("{section}");
    crate::bench::write_section(BEGIN, END, &section)
}

/// The median of a case's backup times, and the bytes the server stored.
fn backup_cells(case: &Value) -> (String, String) {
    if let Some(e) = case["error"].as_str() {
        return (format!("not measured: {e}"), String::new());
    }
    let mut ms: Vec<f64> = case["backups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["ms"].as_f64())
        .collect();
    ms.sort_by(f64::total_cmp);
    let median = ms
        .get(ms.len() / 2)
        .map_or("—".into(), |m| format!("{m:.0} ms"));
    let bytes = case["backups"][0]["bytes"]
        .as_f64()
        .map_or("—".into(), |b| format!("{:.0} KB", b / 1024.0));
    (median, bytes)
}

fn table(results: &Value) -> String {
    let (plain, encrypted) = (&results["plain"], &results["encrypted"]);
    let ms = |case: &Value| {
        case["register_ms"]
            .as_f64()
            .map_or("—".into(), |m| format!("{m:.0} ms"))
    };
    let (plain_backup, plain_bytes) = backup_cells(plain);
    let (sealed_backup, sealed_bytes) = backup_cells(encrypted);
    format!(
        "{BEGIN}\n## Encrypted backups (`cargo xtask bench --encryption`)\n\n\
         {} in headless {}, {} entities, `backupNow()` timed from the page (median of {}: \
         export, AES-256-GCM, upload, the server's check); `register` includes the PBKDF2-SHA-256 \
         derivation (600,000 iterations) when a passphrase is given. No peer encrypts backups: \
         the column beside is the same backup in clear, in the same run. The server checks an \
         encrypted backup only by its outer SHA-256, where a backup in clear is decoded and its \
         canonical checksum recomputed: that difference is part of the `backupNow()` row.\n\n\
         | | in clear | encrypted |\n|---|---|---|\n\
         | `register` | {} | {} |\n| `backupNow()` | {plain_backup} | {sealed_backup} |\n\
         | stored on the server | {plain_bytes} | {sealed_bytes} |\n{END}",
        "Measured",
        results["browser"].as_str().unwrap_or("Chromium"),
        results["entities"],
        results["runs"],
        ms(plain),
        ms(encrypted),
    )
}
