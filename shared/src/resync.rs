//! The full re-pull a client makes when the server answers its pull `410 cursor_expired`
//! (the server pruned tombstones after the stored cursor, so the feed from there could miss a
//! delete).
//!
//! When it starts, the client marks every local entity record *unconfirmed* by the re-pull's
//! *epoch* (except those with a write waiting, and those of `localOnly` collections: the
//! server never holds them), then pulls
//! every page again from an empty cursor. A page clears the mark of each record it brings
//! (pages apply as usual: an entity with a write waiting keeps its local state); so does any
//! local rewrite of a record (a new write, a server answer to one), since the record is then
//! the device's own or the server's current state. When the last page is applied, a record
//! still marked by this epoch is one the server no longer holds: it is dropped, unless a write
//! of it is waiting. Losing a mark can only keep a record, never drop one. The epoch is
//! stored, so a re-pull spread over several flushes or a worker restart goes on where it
//! stopped.

use crate::protocol::Millis;

/// The epoch of a re-pull started at `now`: greater than any earlier one started by this
/// client (`previous`), so a mark left by an earlier re-pull is never taken for this one's.
pub fn new_epoch(now: Millis, previous: u64) -> u64 {
    u64::try_from(now)
        .unwrap_or(0)
        .max(previous.saturating_add(1))
}

/// Whether a record of `collection` is marked unconfirmed when a re-pull starts: any but
/// those of the `local_only` collections.
pub fn marked_at_start(collection: &str, local_only: &[String]) -> bool {
    !local_only.iter().any(|c| c == collection)
}

/// Whether a local entity record is dropped when the re-pull of `epoch` ends: no write of it
/// is waiting, and it still carries this re-pull's mark (no page brought it, nothing rewrote
/// it).
pub fn dropped_at_end(pending: bool, unconfirmed: Option<u64>, epoch: u64) -> bool {
    !pending && unconfirmed == Some(epoch)
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
    fn local_only_records_are_never_marked() {
        let local_only = vec!["secrets".to_owned()];
        assert!(!marked_at_start("secrets", &local_only));
        assert!(marked_at_start("notes", &local_only));
    }

    #[test]
    fn only_a_record_still_marked_by_this_re_pull_and_not_waiting_is_dropped() {
        assert!(dropped_at_end(false, Some(9), 9));
        assert!(
            !dropped_at_end(false, None, 9),
            "a page brought it, or it was rewritten"
        );
        assert!(
            !dropped_at_end(false, Some(8), 9),
            "marked by an earlier re-pull"
        );
        assert!(
            !dropped_at_end(true, Some(9), 9),
            "its write is still delivered"
        );
    }
}
