//! # The scenario summary: what each fault scenario did, one JSON line per run
//!
//! Each scenario test ends by calling [`record`] with its counts, *before* its assertions, so a
//! failing run is in the summary too. When `$RANGERSYNC_SCENARIO_SUMMARY` names a file (`cargo
//! xtask test` sets it to `target/xtask/scenarios.jsonl` and empties it first), the line is
//! appended there and `cargo xtask test` prints the table at the end; the line is printed in
//! the test's output either way.
//!
//! "Lost" and "duplicated" are counted from what the server committed
//! ([`count_lost_and_duplicated`]), never from what the client believes.

use std::collections::BTreeSet;
use std::io::Write;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{assert_seqs_applied_once, Result, TestServer};

/// The variable naming the JSON-lines file scenarios append to.
pub const SUMMARY_ENV: &str = "RANGERSYNC_SCENARIO_SUMMARY";

/// One scenario run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioLine {
    /// What happened, in a few words ("proxy faults during a 2,000-write flush").
    pub scenario: String,
    /// `chromium 156.0…` or `firefox 153.8.0esr`.
    pub browser: String,
    /// Writes acknowledged to the page.
    pub writes: u64,
    /// Faults injected (by the proxy, the server's fault rules, stops and restarts).
    pub faults: u64,
    /// Acknowledged writes the server does not hold.
    pub lost: u64,
    /// Writes the server recorded or applied more than once.
    pub duplicated: u64,
    /// How long the scenario took, in seconds.
    pub seconds: f64,
}

/// Appends `line` to `$RANGERSYNC_SCENARIO_SUMMARY` (when set) and prints it.
pub fn record(line: &ScenarioLine) -> Result {
    let json = serde_json::to_string(line)?;
    println!("scenario summary: {json}");
    if let Some(path) = std::env::var_os(SUMMARY_ENV).filter(|p| !p.is_empty()) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("{SUMMARY_ENV}={}: {e}", path.to_string_lossy()))?;
        writeln!(file, "{json}")?;
    }
    Ok(())
}

/// From one client's recorded mutations (`TestServer::mutations_of`), the server's
/// `mutations_applied` counter (on a server only this client wrote to) and the seqs acknowledged
/// to the page: how many acknowledged seqs the server does not hold (lost), and how many
/// recordings or applications there were beyond one per seq (duplicated).
pub fn count_lost_and_duplicated(
    recorded: &[Value],
    mutations_applied: u64,
    acked: impl IntoIterator<Item = u64>,
) -> (u64, u64) {
    let seqs: Vec<u64> = recorded.iter().filter_map(|m| m["seq"].as_u64()).collect();
    let distinct: BTreeSet<u64> = seqs.iter().copied().collect();
    let lost = acked
        .into_iter()
        .filter(|seq| !distinct.contains(seq))
        .count() as u64;
    let applied: BTreeSet<u64> = recorded
        .iter()
        .filter(|m| m["status"] == "applied")
        .filter_map(|m| m["seq"].as_u64())
        .collect();
    let recorded_twice = (seqs.len() - distinct.len()) as u64;
    let applied_twice = mutations_applied.saturating_sub(applied.len() as u64);
    (lost, recorded_twice + applied_twice)
}

/// The end of every fault scenario: reads what the server committed for `client_id`, records the
/// summary line (before asserting, so a failing run is in the table too), then asserts that no
/// acknowledged seq is missing, none recorded or applied twice, and that the recorded seqs are
/// `1..=n` in order, each applied once (a write that was never acknowledged may be among them:
/// a page that went away mid-write). Returns the recorded mutations.
pub async fn check_server_and_record(
    server: &TestServer,
    client_id: &str,
    acked: &[u64],
    scenario: &str,
    browser: &str,
    faults: u64,
    started: std::time::Instant,
) -> Result<Vec<Value>> {
    let recorded = server.mutations_of(client_id).await?;
    let stats = server.stats().await?;
    let (lost, duplicated) = count_lost_and_duplicated(
        &recorded,
        stats["mutations_applied"].as_u64().unwrap_or(0),
        acked.iter().copied(),
    );
    record(&ScenarioLine {
        scenario: scenario.into(),
        browser: browser.into(),
        writes: acked.len() as u64,
        faults,
        lost,
        duplicated,
        seconds: started.elapsed().as_secs_f64(),
    })?;
    assert_eq!(
        (lost, duplicated),
        (0, 0),
        "nothing lost or duplicated ({scenario}); server stats: {stats}"
    );
    assert_seqs_applied_once(&recorded, recorded.len() as u64);
    Ok(recorded)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn lost_and_duplicated_are_counted_from_the_server_side() {
        let recorded = vec![
            json!({ "seq": 1, "status": "applied" }),
            json!({ "seq": 2, "status": "applied" }),
            json!({ "seq": 2, "status": "applied" }),
            json!({ "seq": 4, "status": "conflict" }),
        ];
        // Seq 3 acknowledged and missing; seq 2 recorded twice; one application too many.
        assert_eq!(count_lost_and_duplicated(&recorded, 3, 1..=4), (1, 2));
        let clean = vec![json!({ "seq": 1, "status": "applied" })];
        assert_eq!(count_lost_and_duplicated(&clean, 1, [1]), (0, 0));
    }
}
