//! What a client restore puts back in the outbox: the snapshot's pending writes, captured
//! requests and dead letters, under their ORIGINAL `(client_id, seq)`, so the server's
//! dedup recognises every one it applied after the backup was taken and applies the others
//! once.
//!
//! - A snapshot of this client (same client id) puts back each entry that neither the
//!   outbox nor the dead-letter store holds any more.
//! - A snapshot of another client id (the site's storage was cleared, so this database is a
//!   new client; or a new machine) can be restored under the backup's ids only if this
//!   database *becomes* that client: it adopts the backup's client id, and its next seq
//!   jumps [`SEQ_JUMP`] past the backup's, beyond anything the old copy may have sent
//!   since. It adopts only while its own outbox and dead letters are empty: what it sent under
//!   its first id is on the server already, and nothing of it is left to send.
//!
//! Pure: the shell reads [`LocalOutbox`] inside the restore's transaction, calls
//! [`plan_requeue`] and writes the plan in the same transaction.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::protocol::Mutation;
use crate::snapshot::{DeadLetterCopy, PendingRequest, Snapshot};
use crate::validate::validate_mutation;

/// How far the seq of an adopted client id jumps past the backup's `next_seq`: more writes
/// than the old copy of the client can have made after its backup (2³² of them), and room
/// for 2²¹ adoptions under JavaScript's largest safe integer.
pub const SEQ_JUMP: u64 = 1 << 32;

/// The largest seq a snapshot entry may carry: the jump above it is still a safe JS integer
/// (an IndexedDB key and a JSON number that round-trip exactly).
pub const MAX_RESTORED_SEQ: u64 = (1 << 53) - 1 - SEQ_JUMP;

/// The local state a re-queue is planned against.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocalOutbox {
    pub client_id: String,
    pub next_seq: u64,
    /// No write coalesces an outbox entry at or below this seq.
    pub capture_barrier: u64,
    /// The seqs in the outbox.
    pub outbox: BTreeSet<u64>,
    /// The seqs in the dead-letter store.
    pub dead: BTreeSet<u64>,
}

/// One snapshot entry the re-queue leaves out, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedEntry {
    pub seq: u64,
    pub reason: String,
}

/// The re-queue part of a restore report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RequeueReport {
    /// The client id the restored entries are (re)sent under.
    pub client_id: String,
    /// This database takes the backup's client id (it had another one).
    pub adopts_client_id: bool,
    /// Seqs of the pending writes and captured requests put back in the outbox.
    pub requeued: Vec<u64>,
    /// Seqs of the dead letters put back.
    pub dead_restored: Vec<u64>,
    /// Seqs the outbox or the dead-letter store still holds: left as they are.
    pub already_here: Vec<u64>,
    pub refused: Vec<RefusedEntry>,
}

/// What to write, in one transaction.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RequeuePlan {
    pub report: RequeueReport,
    /// Pending writes to put back at their seq.
    pub mutations: Vec<Mutation>,
    /// Captured requests to put back at their seq.
    pub requests: Vec<PendingRequest>,
    /// Dead letters to put back at their seq.
    pub dead: Vec<DeadLetterCopy>,
    /// The client id to store, when it changes.
    pub adopt_client_id: Option<String>,
    /// `next_seq` afterwards.
    pub next_seq: u64,
    /// The capture barrier afterwards: nothing coalesces into a restored entry (one the
    /// server applied after the backup would swallow the newer value under its old seq).
    pub capture_barrier: u64,
}

/// Why the snapshot's pending entries cannot be put back under their own ids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequeueBlocked {
    #[error(
        "this device has {pending} write(s) waiting to sync and {dead} dead letter(s) of its own \
         (client {local}); the backup's pending writes belong to client {owner} and are sent \
         under their own ids only by a device with none: let the writes sync (and retry or \
         discard the dead letters), then restore"
    )]
    OwnEntriesWaiting {
        local: String,
        owner: String,
        pending: usize,
        dead: usize,
    },
    #[error("the snapshot holds pending entries but names no client id to send them under")]
    NoOwner,
}

impl RequeueBlocked {
    /// Stable code of the error a real restore answers.
    pub fn code(&self) -> &'static str {
        crate::messages::codes::RESTORE_BLOCKED
    }
}

/// Plan the re-queue of `snapshot`'s pending writes, captured requests and dead letters over
/// `local`.
pub fn plan_requeue(
    snapshot: &Snapshot,
    local: &LocalOutbox,
) -> Result<RequeuePlan, RequeueBlocked> {
    let owner = snapshot
        .client_id
        .clone()
        .or_else(|| snapshot.outbox.first().map(|m| m.client_id.clone()));
    let mut plan = RequeuePlan {
        next_seq: local.next_seq.max(1),
        capture_barrier: local.capture_barrier,
        ..RequeuePlan::default()
    };
    let mut seen = BTreeSet::new();
    let mut usable = |plan: &mut RequeuePlan, seq: u64| -> bool {
        if seq == 0 || seq > MAX_RESTORED_SEQ {
            refuse(plan, seq, format!("seq must be 1..={MAX_RESTORED_SEQ}"));
            false
        } else if !seen.insert(seq) {
            refuse(
                plan,
                seq,
                "the snapshot holds this seq more than once".into(),
            );
            false
        } else {
            true
        }
    };
    let mut mutations = Vec::new();
    for m in &snapshot.outbox {
        if !usable(&mut plan, m.seq) {
            continue;
        }
        if Some(&m.client_id) != owner.as_ref() {
            refuse(
                &mut plan,
                m.seq,
                format!("written by client {}, not the snapshot's", m.client_id),
            );
        } else if let Err(e) = validate_mutation(m) {
            refuse(&mut plan, m.seq, e.to_string());
        } else {
            mutations.push(m.clone());
        }
    }
    let requests: Vec<PendingRequest> = snapshot
        .requests
        .iter()
        .filter(|r| usable(&mut plan, r.seq))
        .cloned()
        .collect();
    let mut dead = Vec::new();
    for d in &snapshot.dead {
        if !usable(&mut plan, d.seq) {
            continue;
        }
        if d.record.is_object() {
            dead.push(d.clone());
        } else {
            refuse(
                &mut plan,
                d.seq,
                "a dead letter's record is a JSON object".into(),
            );
        }
    }
    if mutations.is_empty() && requests.is_empty() && dead.is_empty() {
        plan.report.client_id = local.client_id.clone();
        return Ok(plan);
    }
    let owner = owner.ok_or(RequeueBlocked::NoOwner)?;
    let adopt = owner != local.client_id;
    if adopt && (!local.outbox.is_empty() || !local.dead.is_empty()) {
        return Err(RequeueBlocked::OwnEntriesWaiting {
            local: local.client_id.clone(),
            owner,
            pending: local.outbox.len(),
            dead: local.dead.len(),
        });
    }
    // Under the same id, a seq still held stays as it is; an adopting database holds none.
    let mut highest = 0;
    // Whether the entry `seq` goes back (listed in `back`), or is still held here.
    let mut goes_back = |seq: u64, back: &mut Vec<u64>, already_here: &mut Vec<u64>| {
        if local.outbox.contains(&seq) || local.dead.contains(&seq) {
            already_here.push(seq);
            false
        } else {
            highest = highest.max(seq);
            back.push(seq);
            true
        }
    };
    let report = &mut plan.report;
    plan.mutations = mutations
        .into_iter()
        .filter(|m| goes_back(m.seq, &mut report.requeued, &mut report.already_here))
        .collect();
    plan.requests = requests
        .into_iter()
        .filter(|r| goes_back(r.seq, &mut report.requeued, &mut report.already_here))
        .collect();
    plan.dead = dead
        .into_iter()
        .filter(|d| goes_back(d.seq, &mut report.dead_restored, &mut report.already_here))
        .collect();
    let outbox_highest = plan
        .mutations
        .iter()
        .map(|m| m.seq)
        .chain(plan.requests.iter().map(|r| r.seq))
        .max()
        .unwrap_or(0);
    plan.capture_barrier = plan.capture_barrier.max(outbox_highest);
    plan.report.requeued.sort_unstable();
    plan.report.already_here.sort_unstable();
    plan.report.dead_restored.sort_unstable();
    if adopt {
        let backup_next = snapshot.meta.as_ref().map_or(0, |m| m.next_seq);
        plan.next_seq = backup_next.max(highest + 1).min(MAX_RESTORED_SEQ) + SEQ_JUMP;
        plan.adopt_client_id = Some(owner.clone());
        plan.report.adopts_client_id = true;
    } else {
        plan.next_seq = plan.next_seq.max(highest + 1);
    }
    plan.report.client_id = owner;
    Ok(plan)
}

fn refuse(plan: &mut RequeuePlan, seq: u64, reason: String) {
    plan.report.refused.push(RefusedEntry { seq, reason });
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::protocol::Op;
    use crate::snapshot::{Checksum, SnapshotMeta, SnapshotSource, SNAPSHOT_FORMAT};

    fn write(client: &str, seq: u64, key: &str) -> Mutation {
        Mutation {
            client_id: client.into(),
            seq,
            collection: "notes".into(),
            key: key.into(),
            op: Op::Put,
            value: json!({ "seq": seq }),
            updated_at: 1_000 + seq as i64,
        }
    }

    fn request(seq: u64) -> PendingRequest {
        PendingRequest {
            seq,
            created_at: 5,
            method: "POST".into(),
            url: "https://api.example/api/sync/chat".into(),
            headers: vec![],
            body: b"{}".to_vec(),
            redacted: Vec::new(),
        }
    }

    fn dead_letter(seq: u64) -> DeadLetterCopy {
        DeadLetterCopy {
            seq,
            reason: "refused".into(),
            dead_at: 7,
            attempts: 1,
            record: json!({ "seq": seq, "kind": "mutation" }),
            redacted: Vec::new(),
        }
    }

    /// A snapshot of client `old` whose next seq was 10: writes 4 and 6 pending, request 5,
    /// dead letter 3.
    fn backup() -> Snapshot {
        Snapshot {
            format: SNAPSHOT_FORMAT.into(),
            format_version: 2,
            exported_at: 1,
            source: SnapshotSource::Client,
            client_id: Some("old".into()),
            app_version: "t".into(),
            blobs: vec![],
            entities: vec![],
            outbox: vec![write("old", 4, "a"), write("old", 6, "b")],
            requests: vec![request(5)],
            dead: vec![dead_letter(3)],
            meta: Some(SnapshotMeta {
                next_seq: 10,
                ..SnapshotMeta::default()
            }),
            problems: vec![],
            counts: BTreeMap::new(),
            checksum: Checksum {
                algorithm: "sha256".into(),
                value: String::new(),
            },
        }
    }

    fn fresh(client: &str) -> LocalOutbox {
        LocalOutbox {
            client_id: client.into(),
            next_seq: 3,
            ..LocalOutbox::default()
        }
    }

    #[test]
    fn a_fresh_database_adopts_the_backups_client_id_and_puts_everything_back_at_its_own_seq() {
        let plan = plan_requeue(&backup(), &fresh("new")).unwrap();
        assert_eq!(plan.adopt_client_id.as_deref(), Some("old"));
        assert!(plan.report.adopts_client_id);
        assert_eq!(plan.report.client_id, "old");
        assert_eq!(plan.report.requeued, vec![4, 5, 6]);
        assert_eq!(plan.report.dead_restored, vec![3]);
        let seqs: Vec<u64> = plan.mutations.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, vec![4, 6]);
        assert_eq!(plan.requests[0].seq, 5);
        assert_eq!(plan.dead[0].seq, 3);
        assert_eq!(
            plan.next_seq,
            10 + SEQ_JUMP,
            "past anything the old copy sent"
        );
        assert_eq!(
            plan.capture_barrier, 6,
            "nothing coalesces into a restored write"
        );
    }

    #[test]
    fn the_same_client_puts_back_only_what_its_outbox_and_dead_letters_no_longer_hold() {
        let local = LocalOutbox {
            client_id: "old".into(),
            next_seq: 12,
            capture_barrier: 8,
            outbox: [6, 11].into(),
            dead: [3].into(),
        };
        let plan = plan_requeue(&backup(), &local).unwrap();
        assert_eq!(plan.adopt_client_id, None);
        assert_eq!(plan.report.requeued, vec![4, 5]);
        assert_eq!(plan.report.already_here, vec![3, 6]);
        assert!(plan.dead.is_empty());
        assert_eq!(plan.next_seq, 12, "the counter never goes back");
        assert_eq!(plan.capture_barrier, 8);
    }

    #[test]
    fn the_same_client_moves_its_counter_past_a_restored_seq_it_had_not_reached() {
        let local = LocalOutbox {
            client_id: "old".into(),
            next_seq: 2,
            ..LocalOutbox::default()
        };
        let plan = plan_requeue(&backup(), &local).unwrap();
        assert_eq!(plan.next_seq, 7);
    }

    #[test]
    fn another_clients_backup_is_blocked_while_this_device_has_writes_of_its_own_to_send() {
        let mut local = fresh("new");
        local.outbox.insert(1);
        let err = plan_requeue(&backup(), &local).unwrap_err();
        assert!(matches!(
            err,
            RequeueBlocked::OwnEntriesWaiting {
                pending: 1,
                dead: 0,
                ..
            }
        ));
        assert!(err.to_string().contains("client old"), "{err}");
        let mut local = fresh("new");
        local.dead.insert(1);
        assert!(plan_requeue(&backup(), &local).is_err());
    }

    #[test]
    fn a_backup_with_nothing_pending_changes_no_identity_even_with_writes_waiting_here() {
        let mut snap = backup();
        snap.outbox.clear();
        snap.requests.clear();
        snap.dead.clear();
        let mut local = fresh("new");
        local.outbox.insert(1);
        let plan = plan_requeue(&snap, &local).unwrap();
        assert_eq!(plan.adopt_client_id, None);
        assert_eq!(plan.next_seq, 3);
        assert!(plan.report.requeued.is_empty());
    }

    #[test]
    fn entries_with_a_foreign_client_an_invalid_write_a_repeated_or_unsafe_seq_are_refused_by_seq()
    {
        let mut snap = backup();
        snap.outbox.push(write("someone-else", 7, "c"));
        let mut bad = write("old", 8, "d");
        bad.collection = String::new();
        snap.outbox.push(bad);
        snap.requests.push(request(4));
        snap.dead.push(dead_letter(MAX_RESTORED_SEQ + 1));
        let mut not_a_record = dead_letter(9);
        not_a_record.record = json!("text");
        snap.dead.push(not_a_record);
        let plan = plan_requeue(&snap, &fresh("new")).unwrap();
        let refused: Vec<u64> = plan.report.refused.iter().map(|r| r.seq).collect();
        assert_eq!(refused, vec![7, 8, 4, MAX_RESTORED_SEQ + 1, 9]);
        assert_eq!(plan.report.requeued, vec![4, 5, 6], "the first seq 4 stays");
    }

    #[test]
    fn pending_entries_without_any_client_id_cannot_be_put_back() {
        let mut snap = backup();
        snap.client_id = None;
        snap.outbox.clear();
        assert_eq!(
            plan_requeue(&snap, &fresh("new")).unwrap_err(),
            RequeueBlocked::NoOwner
        );
    }

    #[test]
    fn the_adopted_counter_stays_a_safe_integer_even_for_the_largest_restored_seq() {
        let mut snap = backup();
        snap.outbox = vec![write("old", MAX_RESTORED_SEQ, "a")];
        snap.meta = Some(SnapshotMeta {
            next_seq: u64::MAX,
            ..SnapshotMeta::default()
        });
        let plan = plan_requeue(&snap, &fresh("new")).unwrap();
        assert_eq!(plan.next_seq, (1 << 53) - 1);
    }
}
