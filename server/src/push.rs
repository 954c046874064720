//! `POST /api/sync/push`: dedup by `(client_id, seq)`, per-mutation validation, the
//! last-writer-wins rule, each batch applied whole or not at all (its own transaction on
//! PostgreSQL; on SQLite its own savepoint in a group-committed transaction, see
//! [`crate::sqlite`]).

use std::collections::HashMap;

use axum::extract::{Request, State};
use axum::Json;
use rangersync_shared::conflict::{self, Stored};
use rangersync_shared::protocol::{
    CurrentEntity, Millis, Mutation, MutationResult, PushRequest, PushResponse,
};
use rangersync_shared::validate::{self, ValidationError, MAX_BATCH_BYTES};

use crate::auth::Caller;
use crate::body::{is_json, read_body};
use crate::error::{codes, ApiError};
use crate::storage::{client_owned_by_another_user, Counters, MutationStatus, PushTx, Written};
use crate::{now_ms, AppState};

/// Bodies up to this size are read and judged by `validate_push` (which refuses anything over
/// 5 MiB with its own code); bigger ones are cut off unread.
pub const PUSH_BODY_LIMIT: usize = MAX_BATCH_BYTES + 64 * 1024;

/// Map a whole-request validation failure to its answer: 413 for size and count, else 400.
fn whole_request_error(e: &ValidationError) -> ApiError {
    match e {
        ValidationError::TooManyMutations(_) | ValidationError::BatchTooLarge(_) => {
            ApiError::too_large(e.code(), e.to_string())
        }
        _ => ApiError::bad_request(e.code(), e.to_string()),
    }
}

/// The handler.
pub async fn push(
    State(state): State<AppState>,
    caller: Caller,
    req: Request,
) -> Result<Json<PushResponse>, ApiError> {
    let (parts, body) = req.into_parts();
    if !is_json(&parts.headers) {
        return Err(ApiError::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            codes::UNSUPPORTED_MEDIA_TYPE,
            "push bodies must be sent as application/json",
        ));
    }
    let bytes = read_body(&parts.headers, body, PUSH_BODY_LIMIT).await?;
    let request: PushRequest = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(codes::MALFORMED_BODY, format!("not a push request: {e}"))
    })?;
    validate::validate_push(&request, bytes.len()).map_err(|e| whole_request_error(&e))?;
    if let Some(m) = request
        .mutations
        .iter()
        .find(|m| i64::try_from(m.seq).is_err())
    {
        return Err(ApiError::bad_request(
            codes::MALFORMED_BODY,
            format!("seq {} is larger than this server stores", m.seq),
        ));
    }
    let now = now_ms();
    let mut mutations = request.mutations;
    // A valid stamp too far ahead of the server's clock is stored under the allowed one
    // (an invalid one stays as sent, to be rejected); the client is told which.
    let restamped: Vec<Option<Millis>> = mutations
        .iter_mut()
        .map(|m| {
            let bounded = conflict::bounded_stamp(m.updated_at, now, state.max_clock_skew_ms);
            (bounded != m.updated_at && validate::validate_mutation(m).is_ok()).then(|| {
                m.updated_at = bounded;
                bounded
            })
        })
        .collect();
    let mut results = state.db.push(&caller.user_id, mutations, now).await?;
    // One result per mutation, in request order.
    for (r, stamp) in results.iter_mut().zip(restamped) {
        if let MutationResult::Applied { stamped_at, .. } = r {
            *stamped_at = stamp;
        }
    }
    Ok(Json(PushResponse {
        results,
        server_time: now_ms(),
    }))
}

/// Apply a validated batch inside the caller's transaction; the caller commits.
///
/// A `(client_id, seq)` seen before changes nothing: an applied one answers `duplicate`; a
/// rejected one answers `rejected` again with its first reason (so a client that lost the
/// first answer dead-letters it rather than believing it stored); a conflicted one answers
/// `conflict` again with the entity's state now (a write that lost once always loses, since
/// stored stamps only grow).
pub async fn apply_batch(
    tx: &mut impl PushTx,
    mutations: &[Mutation],
    now: Millis,
) -> Result<Vec<MutationResult>, ApiError> {
    let mut counts = Counters {
        push_requests: 1,
        ..Counters::default()
    };
    let mut results = Vec::with_capacity(mutations.len());
    // Indexes into `results` (and the mutations) of the applied ones, whose versions come
    // from `finish`.
    let mut applied = Vec::new();
    // The entities this batch wrote (their last applied position), and the conflict results
    // that show one of them: those carry the version `finish` gives it.
    let mut written_here: HashMap<(&str, &str), usize> = HashMap::new();
    let mut shows_written: Vec<(usize, usize)> = Vec::new();
    let mut client_ids: Vec<&str> = mutations.iter().map(|m| m.client_id.as_str()).collect();
    client_ids.sort_unstable();
    client_ids.dedup();
    if let Some(client_id) = tx.own_clients(&client_ids).await? {
        return Err(client_owned_by_another_user(&client_id));
    }
    tx.begin(mutations).await?;
    for m in mutations {
        let seq = m.seq;
        if let Some(seen) = tx.claim(m).await? {
            counts.duplicates += 1;
            let result = match seen.status {
                MutationStatus::Applied => MutationResult::Duplicate { seq },
                MutationStatus::Rejected => MutationResult::Rejected {
                    seq,
                    reason: seen.reason.unwrap_or_else(|| "rejected".to_owned()),
                },
                MutationStatus::Conflict => match tx.entity(&m.collection, &m.key).await? {
                    Some(stored) => {
                        if let Some(&position) =
                            written_here.get(&(m.collection.as_str(), m.key.as_str()))
                        {
                            shows_written.push((results.len(), position));
                        }
                        MutationResult::Conflict {
                            seq,
                            current: current_of(stored),
                        }
                    }
                    None => MutationResult::Duplicate { seq },
                },
            };
            results.push(result);
            continue;
        }
        if let Err(e) = validate::validate_mutation(m) {
            let reason = e.to_string();
            tx.record(m, MutationStatus::Rejected, Some(&reason), now)
                .await?;
            counts.rejected += 1;
            results.push(MutationResult::Rejected { seq, reason });
            continue;
        }
        match tx.write_if_newer(m).await? {
            Written::Applied => {
                tx.record(m, MutationStatus::Applied, None, now).await?;
                counts.mutations_applied += 1;
                written_here.insert((m.collection.as_str(), m.key.as_str()), applied.len());
                applied.push(results.len());
                results.push(MutationResult::Applied {
                    seq,
                    version: 0,
                    stamped_at: None,
                });
            }
            Written::Lost(stored) => {
                tx.record(m, MutationStatus::Conflict, None, now).await?;
                counts.conflicts += 1;
                if let Some(&position) = written_here.get(&(m.collection.as_str(), m.key.as_str()))
                {
                    shows_written.push((results.len(), position));
                }
                results.push(MutationResult::Conflict {
                    seq,
                    current: current_of(stored),
                });
            }
        }
    }
    let applied_mutations: Vec<&Mutation> = applied.iter().map(|&i| &mutations[i]).collect();
    let versions = tx.finish(&applied_mutations, &counts).await?;
    if versions.len() != applied.len() {
        return Err(ApiError::internal(format!(
            "{} versions for {} applied mutations",
            versions.len(),
            applied.len()
        )));
    }
    for (result, position) in shows_written {
        if let MutationResult::Conflict { current, .. } = &mut results[result] {
            current.version = versions[position];
        }
    }
    for (&i, new_version) in applied.iter().zip(versions) {
        if let MutationResult::Applied { version, .. } = &mut results[i] {
            *version = new_version;
        }
    }
    Ok(results)
}

fn current_of(stored: Stored) -> CurrentEntity {
    CurrentEntity {
        value: stored.value,
        deleted: stored.deleted,
        updated_at: stored.stamp.updated_at,
        version: stored.version,
    }
}
