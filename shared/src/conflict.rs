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
        Self { updated_at: m.updated_at, client_id: m.client_id.clone(), seq: m.seq }
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
    let _ = (stored, incoming);
    todo!()
}

/// Apply one mutation to an entity slot by the rule; returns the verdict. `next_version` is
/// the version to give the entity when the write applies. Used by the server and by tests.
pub fn apply(slot: &mut Option<Stored>, m: &Mutation, next_version: u64) -> Verdict {
    let _ = (slot, m, next_version, Op::Put);
    todo!()
}
