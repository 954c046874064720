//! The full re-pull a client makes when the server answers its pull `410 cursor_expired`
//! (the server pruned tombstones after the stored cursor, so the feed from there could miss a
//! delete).
//!
//! The client starts a re-pull *epoch*, pulls every page again from an empty cursor and marks
//! each local entity record a page brings with the epoch (pages apply as usual: an entity
//! with a write waiting keeps its local state). When the last page is applied, a record the
//! re-pull did not bring is one the server no longer holds: it is dropped, unless a write of
//! it is waiting (that write is still delivered). The epoch is stored, so a re-pull spread
//! over several flushes or a worker restart goes on where it stopped.

use crate::protocol::Millis;

/// The epoch of a re-pull started at `now`: greater than any earlier one started by this
/// client (`previous`), so a record marked by an earlier re-pull is never taken as seen.
pub fn new_epoch(now: Millis, previous: u64) -> u64 {
    u64::try_from(now)
        .unwrap_or(0)
        .max(previous.saturating_add(1))
}

/// Whether a local entity record is dropped when the re-pull of `epoch` ends: it has no
/// write waiting, and the re-pull did not bring it.
pub fn dropped_at_end(pending: bool, seen_in: Option<u64>, epoch: u64) -> bool {
    !pending && seen_in != Some(epoch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_epoch_is_always_greater_than_the_previous_one() {
        assert_eq!(new_epoch(1_000, 0), 1_000);
        assert_eq!(new_epoch(1_000, 5_000), 5_001, "a clock that went back");
        assert_eq!(new_epoch(-3, 0), 1);
    }

    #[test]
    fn only_a_record_neither_waiting_nor_brought_by_this_re_pull_is_dropped() {
        assert!(dropped_at_end(false, None, 9));
        assert!(
            dropped_at_end(false, Some(8), 9),
            "brought by an earlier re-pull"
        );
        assert!(!dropped_at_end(false, Some(9), 9));
        assert!(
            !dropped_at_end(true, None, 9),
            "its write is still delivered"
        );
    }
}
