//! `POST /api/restore?dry_run=true|false[&backup_id=N]`: restore the server's entities from a
//! snapshot, for an operator. The body is a snapshot (JSON or YAML, as `GET /api/export` or a
//! client writes it), or empty with `backup_id` naming a stored backup.
//!
//! - **Verified first.** Format, version, checksum and counts (`snapshot::decode`), then every
//!   entity (`snapshot::plan_restore`'s refusals). A broken document is `400` (`413` over
//!   64 MiB) and nothing is read or written. A dry run still answers `200` with the refused
//!   entities listed, so that one call shows every problem; a real restore with any refused
//!   entity is `400 bad_snapshot`.
//! - **Dry run by default.** Without `dry_run=false` nothing is written: the answer says what
//!   a restore would add, replace and leave unchanged, against the state right now.
//! - **All or nothing.** A real restore is one database transaction: it shuts out writers of
//!   entities (pushes wait), reads the current state, writes every added or replaced entity
//!   and commits; any failure rolls all of it back.
//! - **The restore is authoritative.** Each written entity gets a new version (so it flows
//!   through the change feed to every client, like any change) and the stamp
//!   `(max(now, stored updated_at + 1), "rangersync-restore", 0)`: it wins over the state it
//!   replaced, and a client's pending write made before the restore then loses to it (that
//!   client gets `conflict` with the restored value and adopts it); a write made after the
//!   restore wins as usual. Entities the snapshot does not hold are left as they are; a
//!   snapshot tombstone deletes a live entity.
//! - **Client-side state is not restored.** A client's snapshot also carries its pending
//!   outbox (and, from newer clients, dead letters and metadata). Those belong to the browser
//!   that exported them; the server writes entities only, and the answer counts what it left
//!   out under `not_restored`.

use std::collections::{BTreeMap, HashMap, HashSet};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rangersync_shared::conflict::Stamp;
use rangersync_shared::messages::codes::BAD_SNAPSHOT;
use rangersync_shared::protocol::{Entity, Millis};
use rangersync_shared::snapshot::{self, RestoreReport, Snapshot, SnapshotSource};
use serde::Serialize;
use serde_json::Value;

use crate::auth::Caller;
use crate::body::read_body;
use crate::error::{codes, ApiError};
use crate::export::{decode_snapshot, parse_backup_id};
use crate::pull::query_params;
use crate::storage::{Overwrite, RestoreTx};
use crate::{now_ms, AppState};

/// The `client_id` of the stamp a restore writes (never a browser's: those are random hex).
pub const RESTORE_CLIENT_ID: &str = "rangersync-restore";

/// What [`apply_restore`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreOutcome {
    /// The plan (dry run) or what was done.
    pub report: RestoreReport,
    /// The first and last version the restored entities got (none for a dry run or when
    /// nothing changed).
    pub versions: Option<(u64, u64)>,
}

/// Restore `snap` inside the caller's transaction; the caller commits unless `dry_run`.
///
/// Plans with `snapshot::plan_restore` against the stored state, then (unless `dry_run`)
/// overwrites every added or replaced entity, in the snapshot's order, with the authoritative
/// stamp described in the module docs. Refuses (changing nothing) when the plan refuses any
/// entity and this is not a dry run.
pub async fn apply_restore(
    tx: &mut impl RestoreTx,
    snap: &Snapshot,
    dry_run: bool,
    now: Millis,
) -> Result<RestoreOutcome, ApiError> {
    if !dry_run {
        tx.exclude_writers().await?;
    }
    let keys: Vec<(&str, &str)> = snap
        .entities
        .iter()
        .map(|e| (e.collection.as_str(), e.key.as_str()))
        .collect();
    let stored = tx.stored(&keys).await?;
    let current = |collection: &str, key: &str| {
        stored
            .get(&(collection.to_owned(), key.to_owned()))
            .map(|s| Entity {
                collection: collection.to_owned(),
                key: key.to_owned(),
                value: s.value.clone(),
                deleted: s.deleted,
                updated_at: s.stamp.updated_at,
                version: s.version,
            })
    };
    let report = snapshot::plan_restore(snap, &current, dry_run);
    if dry_run {
        return Ok(RestoreOutcome {
            report,
            versions: None,
        });
    }
    if let Some(first) = report.refused.first() {
        return Err(refused_error(report.refused.len(), first));
    }
    let changing: HashSet<(&str, &str)> = report
        .added
        .iter()
        .chain(&report.replaced)
        .map(|r| (r.collection.as_str(), r.key.as_str()))
        .collect();
    let rows: Vec<Overwrite> = snap
        .entities
        .iter()
        .filter(|e| changing.contains(&(e.collection.as_str(), e.key.as_str())))
        .map(|e| {
            let before = stored
                .get(&(e.collection.clone(), e.key.clone()))
                .map_or(Millis::MIN, |s| s.stamp.updated_at);
            Overwrite {
                collection: e.collection.clone(),
                key: e.key.clone(),
                value: if e.deleted {
                    Value::Null
                } else {
                    e.value.clone()
                },
                deleted: e.deleted,
                stamp: Stamp {
                    updated_at: now.max(before.saturating_add(1)),
                    client_id: RESTORE_CLIENT_ID.to_owned(),
                    seq: 0,
                },
            }
        })
        .collect();
    let versions = if rows.is_empty() {
        Vec::new()
    } else {
        tx.overwrite(&rows).await?
    };
    if versions.len() != rows.len() {
        return Err(ApiError::internal(format!(
            "{} versions for {} restored entities",
            versions.len(),
            rows.len()
        )));
    }
    Ok(RestoreOutcome {
        report,
        versions: versions.first().copied().zip(versions.last().copied()),
    })
}

fn refused_error(n: usize, first: &snapshot::Refusal) -> ApiError {
    ApiError::bad_request(
        BAD_SNAPSHOT,
        format!(
            "{n} entit{} cannot be restored (first: {}/{}: {}); nothing was changed \
             (a dry run lists them all)",
            if n == 1 { "y" } else { "ies" },
            first.collection,
            first.key,
            first.reason
        ),
    )
}

/// Where the restored snapshot came from.
#[derive(Debug, Clone, Serialize)]
pub struct RestoredFrom {
    /// The stored backup, when restored by `backup_id`.
    pub backup_id: Option<String>,
    /// Whose entities were restored.
    pub user_id: String,
    /// `client` or `server`.
    pub source: SnapshotSource,
    /// The client that exported it.
    pub client_id: Option<String>,
    /// When it was exported.
    pub exported_at: Millis,
    /// Its verified checksum.
    pub checksum: String,
}

/// The versions the restored entities got.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct VersionRange {
    /// The first.
    pub from: u64,
    /// The last.
    pub to: u64,
}

/// The answer of `POST /api/restore`: the client's restore report (`dry_run`, `added`,
/// `replaced`, `unchanged`, `refused`), and what only the server says.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreAnswer {
    /// The report, the same shape as a client's restore answers.
    #[serde(flatten)]
    pub report: RestoreReport,
    /// The length of each list of the report.
    pub totals: BTreeMap<String, usize>,
    /// The snapshot restored.
    pub snapshot: RestoredFrom,
    /// Versions of the restored entities (`null` for a dry run or when nothing changed).
    pub versions: Option<VersionRange>,
    /// The stamp time of the restored entities (the time of the restore).
    pub restored_at: Millis,
    /// Client-side lists of the snapshot (pending outbox entries, dead letters, …) with
    /// their lengths: not restored on the server.
    pub not_restored: BTreeMap<String, usize>,
}

/// The length of every list in `value`'s top-level object (a report's `added`, …; a
/// snapshot's `outbox`, …), skipping the fields named in `except`.
fn list_lengths(value: &Value, except: &[&str]) -> BTreeMap<String, usize> {
    value
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(name, _)| !except.contains(&name.as_str()))
        .filter_map(|(name, v)| v.as_array().map(|items| (name.clone(), items.len())))
        .collect()
}

/// The client-side lists of a snapshot and their lengths (every list but `entities`), read
/// without copying the entities.
fn client_side_lists(snap: &mut Snapshot) -> BTreeMap<String, usize> {
    let entities = std::mem::take(&mut snap.entities);
    let rest = serde_json::to_value(&*snap).unwrap_or(Value::Null);
    snap.entities = entities;
    list_lengths(&rest, &["entities"])
}

fn parse_dry_run(text: Option<&str>) -> Result<bool, ApiError> {
    match text {
        None | Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(other) => Err(ApiError::bad_request(
            codes::BAD_QUERY,
            format!("dry_run must be true or false (got {other:?})"),
        )),
    }
}

/// The handler.
pub async fn restore(
    State(state): State<AppState>,
    caller: Caller,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    caller.require_admin("POST /api/restore")?;
    let params = query_params(q)?;
    // An admin restores their own entities, or another user's with `user_id`.
    let user = match params.get("user_id") {
        None => caller.user_id.clone(),
        Some(u) if !u.is_empty() => u.clone(),
        Some(_) => {
            return Err(ApiError::bad_request(
                codes::BAD_QUERY,
                "user_id must not be empty",
            ))
        }
    };
    let dry_run = parse_dry_run(params.get("dry_run").map(String::as_str))?;
    let backup_id = params
        .get("backup_id")
        .map(|id| parse_backup_id(id).map_err(|e| ApiError::bad_request(codes::BAD_QUERY, e)))
        .transpose()?;
    let (parts, body) = req.into_parts();
    let bytes = read_body(&parts.headers, body, snapshot::MAX_SNAPSHOT_BYTES).await?;
    let text = match &backup_id {
        Some(id) => {
            if !bytes.iter().all(u8::is_ascii_whitespace) {
                return Err(ApiError::bad_request(
                    codes::MALFORMED_BODY,
                    "send either a snapshot as the body or backup_id, not both",
                ));
            }
            state
                .db
                .backup_body(&user, id)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("no backup {id}")))?
                .1
        }
        None => String::from_utf8(bytes.into())
            .map_err(|_| ApiError::bad_request(BAD_SNAPSHOT, "snapshot is not UTF-8 text"))?,
    };
    let mut snap = decode_snapshot(&text)?;
    drop(text);
    // Entity refusals do not depend on the stored state: a real restore that would refuse
    // one is answered before the database is touched.
    if !dry_run {
        let plan = snapshot::plan_restore(&snap, &|_: &str, _: &str| None, true);
        if let Some(first) = plan.refused.first() {
            return Err(refused_error(plan.refused.len(), first));
        }
    }
    let not_restored = client_side_lists(&mut snap);
    let from = RestoredFrom {
        backup_id,
        user_id: user.clone(),
        source: snap.source,
        client_id: snap.client_id.clone(),
        exported_at: snap.exported_at,
        checksum: snap.checksum.value.to_ascii_lowercase(),
    };
    let now = now_ms();
    let outcome = state.db.restore(&user, snap, dry_run, now).await?;
    let report_value = serde_json::to_value(&outcome.report).unwrap_or(Value::Null);
    let answer = RestoreAnswer {
        totals: list_lengths(&report_value, &[]),
        report: outcome.report,
        snapshot: from,
        versions: outcome.versions.map(|(from, to)| VersionRange { from, to }),
        restored_at: now,
        not_restored,
    };
    Ok(Json(answer).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dry_run_is_the_default_and_anything_but_true_or_false_is_refused() {
        assert_eq!(parse_dry_run(None), Ok(true));
        assert_eq!(parse_dry_run(Some("true")), Ok(true));
        assert_eq!(parse_dry_run(Some("false")), Ok(false));
        assert_eq!(parse_dry_run(Some("0")), Ok(false));
        assert_eq!(
            parse_dry_run(Some("no")).unwrap_err().code,
            codes::BAD_QUERY
        );
    }

    #[test]
    fn list_lengths_counts_every_top_level_list_but_the_excluded() {
        let v = serde_json::json!({"a": [1, 2], "b": [], "c": 3, "entities": [1]});
        let lengths = list_lengths(&v, &["entities"]);
        assert_eq!(
            lengths,
            BTreeMap::from([("a".to_owned(), 2), ("b".to_owned(), 0)])
        );
    }
}
