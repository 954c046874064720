//! Retention: what the server forgets, and what it remembers so that forgetting changes no
//! answer a client relies on.
//!
//! Every `--retain-mutations-days` (default 30; 0 keeps everything) the server prunes, in
//! bounded transactions of [`PRUNE_CHUNK`] rows:
//! - **applied mutation records** (an applied `(client_id, seq)`) received before the horizon.
//!   Each client keeps its highest forgotten seq; a resend at or below it that has no record
//!   is answered `duplicate`, as the forgotten record would have been. Clients send their
//!   writes in seq order, so a seq at or below that floor was delivered before (the same rule
//!   as Replicache's last mutation id). Rejected and conflicted records are kept: a resend of
//!   one must hear `rejected` or `conflict` again, never `duplicate` (they are few);
//! - **tombstones** whose version is no newer than the newest version a forgotten mutation
//!   made (so older than the horizon). Each user keeps the newest version of a forgotten
//!   tombstone: a pull from a cursor before it could miss a delete, so it is answered
//!   `410 cursor_expired`, and the client pulls everything again from the start (keeping its
//!   pending writes) and drops what the server no longer holds;
//! - **captured requests** received before the horizon (an idempotency key replayed after that
//!   is stored again).
//!
//! Counters (`/api/test/stats`) are a fixed set of numbers and are never pruned.

use std::time::Duration;

use axum::http::StatusCode;
use rangersync_shared::protocol::Millis;
use serde::Serialize;

use crate::error::{codes, ApiError};
use crate::now_ms;
use crate::storage::Db;

/// `--retain-mutations-days` when not given.
pub const DEFAULT_RETAIN_DAYS: u32 = 30;

/// The most `--retain-mutations-days` accepts (about 100 years).
pub const MAX_RETAIN_DAYS: u32 = 36_500;

/// Rows of each kind one pruning transaction removes at most: a write transaction of SQLite
/// holds back every push while it runs, so it stays short.
pub const PRUNE_CHUNK: usize = 5_000;

/// How often the server prunes (and once at start).
pub const PRUNE_EVERY: Duration = Duration::from_secs(60 * 60);

const DAY_MS: Millis = 24 * 60 * 60 * 1000;

/// What pruning removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    /// Mutation records.
    pub mutations: u64,
    /// Tombstones.
    pub tombstones: u64,
    /// Captured requests.
    pub captured: u64,
}

impl Pruned {
    /// Whether nothing was removed.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    fn add(&mut self, other: Self) {
        self.mutations += other.mutations;
        self.tombstones += other.tombstones;
        self.captured += other.captured;
    }
}

/// The horizon for `days` of retention at `now`: rows received before it are pruned.
pub fn horizon(now: Millis, days: u32) -> Millis {
    now.saturating_sub(Millis::from(days).saturating_mul(DAY_MS))
        .max(0)
}

/// Prune everything received before `before`, one bounded transaction at a time, until a
/// step finds nothing more.
pub async fn prune(db: &Db, before: Millis) -> Result<Pruned, ApiError> {
    let mut total = Pruned::default();
    loop {
        let step = db.prune_step(before, PRUNE_CHUNK).await?;
        total.add(step);
        let full = |n: u64| n >= PRUNE_CHUNK as u64;
        if !(full(step.mutations) || full(step.tombstones) || full(step.captured)) {
            return Ok(total);
        }
    }
}

/// Prune at start and every [`PRUNE_EVERY`] after, while the server runs. A failed pass is
/// named on stderr and tried again at the next one.
pub fn spawn_pruner(db: Db, days: u32) -> Option<tokio::task::JoinHandle<()>> {
    if days == 0 {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut every = tokio::time::interval(PRUNE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            match prune(&db, horizon(now_ms(), days)).await {
                Ok(p) if p.is_empty() => {}
                Ok(p) => eprintln!(
                    "rangersync-server: pruned what is older than {days} days: {} mutation records, {} tombstones, {} captured requests",
                    p.mutations, p.tombstones, p.captured
                ),
                Err(e) => eprintln!("rangersync-server: pruning failed: {}", e.message),
            }
        }
    }))
}

/// `410 cursor_expired`: tombstones after `since` were pruned, so the feed from there could
/// miss a delete.
pub fn cursor_expired(since: u64, pruned_through: u64) -> ApiError {
    ApiError::new(
        StatusCode::GONE,
        codes::CURSOR_EXPIRED,
        format!(
            "cursor {since} is older than the server's retention horizon (deletes up to version {pruned_through} were pruned): pull again from the start with an empty cursor"
        ),
    )
}

/// Whether a pull from `since` must be refused, given the user's newest pruned tombstone.
pub fn expired(since: u64, pruned_through: u64) -> bool {
    since > 0 && since < pruned_through
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_horizon_is_the_given_number_of_days_before_now() {
        assert_eq!(horizon(10 * DAY_MS, 3), 7 * DAY_MS);
        assert_eq!(horizon(DAY_MS, 30), 0);
    }

    #[test]
    fn only_a_cursor_before_the_newest_pruned_tombstone_is_expired() {
        assert!(!expired(0, 100), "an empty cursor always pulls everything");
        assert!(expired(99, 100));
        assert!(!expired(100, 100), "the client saw that tombstone");
        assert!(!expired(5, 0), "nothing pruned");
    }
}
