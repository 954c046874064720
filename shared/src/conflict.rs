//! The conflict rule: last writer wins per entity by `(updated_at, client_id, seq)` compared
//! as a tuple; a delete is a write like any other (a tombstone), so a stale put never
//! resurrects a deleted entity.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::protocol::{Millis, Mutation, Op};

/// The LWW stamp of a write.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    pub updated_at: Millis,
    pub client_id: String,
    pub seq: u64,
}

impl Stamp {
    pub fn of(m: &Mutation) -> Self {
        Self {
            updated_at: m.updated_at,
            client_id: m.client_id.clone(),
            seq: m.seq,
        }
    }
}

/// An entity as a store holds it, with the stamp of the write that made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    pub value: Value,
    pub deleted: bool,
    pub stamp: Stamp,
    pub version: u64,
}

/// The rule's verdict on one incoming write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The incoming write is newer: store it.
    Apply,
    /// The stored write is newer (or the same stamp): keep it, report a conflict.
    Conflict,
}

/// Decide whether `incoming` replaces `stored`.
pub fn decide(stored: Option<&Stamp>, incoming: &Stamp) -> Verdict {
    match stored {
        Some(stored) if incoming <= stored => Verdict::Conflict,
        _ => Verdict::Apply,
    }
}

/// Apply one mutation to an entity slot by the rule; returns the verdict. `next_version` is
/// the version to give the entity when the write applies. Used by the server and by tests.
///
/// A delete stores a tombstone (`deleted: true`, value `null`) whatever value it carried.
pub fn apply(slot: &mut Option<Stored>, m: &Mutation, next_version: u64) -> Verdict {
    let incoming = Stamp::of(m);
    let verdict = decide(slot.as_ref().map(|s| &s.stamp), &incoming);
    if verdict == Verdict::Apply {
        let deleted = m.op == Op::Delete;
        *slot = Some(Stored {
            value: if deleted {
                Value::Null
            } else {
                m.value.clone()
            },
            deleted,
            stamp: incoming,
            version: next_version,
        });
    }
    verdict
}

/// How far ahead of the server's clock a stamp may be when no other limit is configured
/// (5 minutes).
pub const DEFAULT_MAX_CLOCK_SKEW_MS: Millis = 300_000;

/// The `updated_at` a write is stored and compared under: as sent, unless it is further
/// ahead of the server's clock `now` than `max_skew`; then `now + max_skew`. A device whose
/// clock runs years ahead would otherwise win every later conflict.
pub fn bounded_stamp(updated_at: Millis, now: Millis, max_skew: Millis) -> Millis {
    updated_at.min(now.saturating_add(max_skew.max(0)))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn m(client: &str, seq: u64, key: &str, op: Op, value: Value, updated_at: Millis) -> Mutation {
        Mutation {
            client_id: client.into(),
            seq,
            collection: "notes".into(),
            key: key.into(),
            op,
            value: if op == Op::Delete { Value::Null } else { value },
            updated_at,
        }
    }

    fn stamp(updated_at: Millis, client: &str, seq: u64) -> Stamp {
        Stamp {
            updated_at,
            client_id: client.into(),
            seq,
        }
    }

    #[test]
    fn the_first_write_of_an_entity_applies() {
        assert_eq!(decide(None, &stamp(0, "a", 1)), Verdict::Apply);
    }

    #[test]
    fn a_later_time_wins_whatever_the_client_and_seq() {
        assert_eq!(
            decide(Some(&stamp(5, "z", 99)), &stamp(6, "a", 1)),
            Verdict::Apply
        );
        assert_eq!(
            decide(Some(&stamp(6, "a", 1)), &stamp(5, "z", 99)),
            Verdict::Conflict
        );
    }

    #[test]
    fn equal_times_are_broken_by_client_id_then_seq() {
        assert_eq!(
            decide(Some(&stamp(5, "a", 9)), &stamp(5, "b", 1)),
            Verdict::Apply
        );
        assert_eq!(
            decide(Some(&stamp(5, "b", 1)), &stamp(5, "a", 9)),
            Verdict::Conflict
        );
        assert_eq!(
            decide(Some(&stamp(5, "a", 1)), &stamp(5, "a", 2)),
            Verdict::Apply
        );
        assert_eq!(
            decide(Some(&stamp(5, "a", 2)), &stamp(5, "a", 1)),
            Verdict::Conflict
        );
    }

    #[test]
    fn the_same_stamp_is_a_conflict() {
        assert_eq!(
            decide(Some(&stamp(5, "a", 1)), &stamp(5, "a", 1)),
            Verdict::Conflict
        );
    }

    #[test]
    fn a_newer_put_replaces_the_value_and_takes_the_given_version() {
        let mut slot = None;
        assert_eq!(
            apply(&mut slot, &m("a", 1, "k", Op::Put, json!(1), 10), 1),
            Verdict::Apply
        );
        assert_eq!(
            apply(&mut slot, &m("a", 2, "k", Op::Put, json!({"x": 2}), 11), 2),
            Verdict::Apply
        );
        assert_eq!(
            slot,
            Some(Stored {
                value: json!({"x": 2}),
                deleted: false,
                stamp: stamp(11, "a", 2),
                version: 2
            })
        );
    }

    #[test]
    fn a_delete_leaves_a_tombstone_with_a_null_value() {
        let mut slot = None;
        apply(&mut slot, &m("a", 1, "k", Op::Put, json!(1), 10), 1);
        let mut delete = m("a", 2, "k", Op::Delete, Value::Null, 11);
        delete.value = json!("ignored");
        assert_eq!(apply(&mut slot, &delete, 2), Verdict::Apply);
        assert_eq!(
            slot,
            Some(Stored {
                value: Value::Null,
                deleted: true,
                stamp: stamp(11, "a", 2),
                version: 2
            })
        );
    }

    #[test]
    fn a_stale_put_never_resurrects_a_deleted_entity() {
        let mut slot = None;
        apply(&mut slot, &m("b", 1, "k", Op::Delete, Value::Null, 20), 1);
        let before = slot.clone();
        assert_eq!(
            apply(&mut slot, &m("a", 7, "k", Op::Put, json!("old"), 19), 2),
            Verdict::Conflict
        );
        assert_eq!(slot, before);
    }

    #[test]
    fn a_newer_put_after_a_delete_recreates_the_entity() {
        let mut slot = None;
        apply(&mut slot, &m("b", 1, "k", Op::Delete, Value::Null, 20), 1);
        assert_eq!(
            apply(&mut slot, &m("a", 2, "k", Op::Put, json!("new"), 21), 2),
            Verdict::Apply
        );
        assert!(!slot.as_ref().unwrap().deleted);
    }

    #[test]
    fn a_stale_write_is_a_conflict_and_changes_nothing() {
        let mut slot = None;
        apply(&mut slot, &m("a", 2, "k", Op::Put, json!("new"), 20), 1);
        let before = slot.clone();
        assert_eq!(
            apply(&mut slot, &m("a", 1, "k", Op::Put, json!("old"), 10), 2),
            Verdict::Conflict
        );
        assert_eq!(
            apply(&mut slot, &m("a", 3, "k", Op::Delete, Value::Null, 10), 3),
            Verdict::Conflict
        );
        assert_eq!(slot, before);
    }

    #[test]
    fn reapplying_the_same_mutation_is_a_conflict_and_changes_nothing() {
        let mut slot = None;
        let w = m("a", 1, "k", Op::Put, json!([1, 2]), 10);
        assert_eq!(apply(&mut slot, &w, 1), Verdict::Apply);
        let before = slot.clone();
        assert_eq!(apply(&mut slot, &w, 2), Verdict::Conflict);
        assert_eq!(slot, before);
    }

    #[test]
    fn stamps_order_by_time_then_client_then_seq() {
        let mut stamps = vec![
            stamp(2, "a", 1),
            stamp(1, "b", 5),
            stamp(1, "b", 2),
            stamp(1, "a", 9),
        ];
        stamps.sort();
        assert_eq!(
            stamps,
            vec![
                stamp(1, "a", 9),
                stamp(1, "b", 2),
                stamp(1, "b", 5),
                stamp(2, "a", 1)
            ]
        );
    }

    /// The observable state of a store: value, deleted, stamp per key (versions depend on order).
    type State = BTreeMap<String, (Value, bool, Stamp)>;

    fn run(mutations: &[Mutation]) -> State {
        let mut store: BTreeMap<String, Option<Stored>> = BTreeMap::new();
        for (i, w) in mutations.iter().enumerate() {
            apply(store.entry(w.key.clone()).or_default(), w, i as u64 + 1);
        }
        store
            .into_iter()
            .filter_map(|(k, s)| s.map(|s| (k, (s.value, s.deleted, s.stamp))))
            .collect()
    }

    /// Mutations over 3 keys from 3 clients, with small times so that ties are common; each
    /// client's seqs are unique (as the protocol guarantees).
    fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
        let one = (0usize..3, 0usize..3, any::<bool>(), 0i64..4, 0i64..100);
        prop::collection::vec(one, 1..24).prop_map(|raw| {
            let mut next_seq = [0u64; 3];
            raw.into_iter()
                .map(|(client, key, delete, time, payload)| {
                    next_seq[client] += 1;
                    let op = if delete { Op::Delete } else { Op::Put };
                    m(
                        ["a", "b", "c"][client],
                        next_seq[client],
                        ["k0", "k1", "k2"][key],
                        op,
                        json!(payload),
                        time,
                    )
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn any_delivery_order_converges_to_the_same_state(
            (ms, shuffled) in mutations().prop_flat_map(|ms| {
                let shuffled = Just(ms.clone()).prop_shuffle();
                (Just(ms), shuffled)
            })
        ) {
            prop_assert_eq!(run(&ms), run(&shuffled));
        }

        #[test]
        fn the_final_state_holds_each_entitys_greatest_stamp(ms in mutations()) {
            let state = run(&ms);
            for (key, (value, deleted, stamp)) in &state {
                let winner = ms.iter().filter(|w| &w.key == key).max_by_key(|w| Stamp::of(w)).unwrap();
                prop_assert_eq!(stamp, &Stamp::of(winner));
                prop_assert_eq!(*deleted, winner.op == Op::Delete);
                prop_assert_eq!(value, &winner.value);
            }
        }

        #[test]
        fn redelivering_every_mutation_changes_nothing(ms in mutations()) {
            let mut store: BTreeMap<String, Option<Stored>> = BTreeMap::new();
            for (i, w) in ms.iter().enumerate() {
                apply(store.entry(w.key.clone()).or_default(), w, i as u64 + 1);
            }
            let before = store.clone();
            for w in &ms {
                prop_assert_eq!(apply(store.entry(w.key.clone()).or_default(), w, 1000), Verdict::Conflict);
            }
            prop_assert_eq!(store, before);
        }

        #[test]
        fn a_stale_put_after_a_newer_delete_keeps_the_tombstone(
            delete_at in 0i64..1000, lag in 1i64..1000, payload in any::<i64>()
        ) {
            let mut slot = None;
            apply(&mut slot, &m("a", 2, "k", Op::Delete, Value::Null, delete_at), 1);
            let verdict = apply(&mut slot, &m("b", 1, "k", Op::Put, json!(payload), delete_at - lag), 2);
            prop_assert_eq!(verdict, Verdict::Conflict);
            let stored = slot.unwrap();
            prop_assert!(stored.deleted);
            prop_assert_eq!(stored.value, Value::Null);
        }
    }

    #[test]
    fn a_stamp_far_ahead_of_the_server_clock_is_brought_back_to_the_allowed_skew() {
        let now = 1_764_000_000_000;
        assert_eq!(bounded_stamp(now + 1000, now, 300_000), now + 1000);
        assert_eq!(bounded_stamp(now - 5, now, 300_000), now - 5);
        assert_eq!(
            bounded_stamp(253_402_300_799_000, now, 300_000),
            now + 300_000
        );
        assert_eq!(bounded_stamp(now + 1, now, 0), now);
    }
}
