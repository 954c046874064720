//! `POST /api/sync/push`: dedup by `(client_id, seq)`, per-mutation validation, the
//! last-writer-wins rule, one transaction per batch.

use axum::extract::{Request, State};
use axum::Json;
use rangersync_shared::conflict::{self, Stamp, Stored, Verdict};
use rangersync_shared::protocol::{
    CurrentEntity, Mutation, MutationResult, Op, PushRequest, PushResponse,
};
use rangersync_shared::validate::{self, ValidationError, MAX_BATCH_BYTES};
use serde_json::Value;

use crate::body::{is_json, read_body};
use crate::db::{Counters, MutationStatus, Store};
use crate::error::{codes, ApiError};
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
    let results = state
        .db
        .write(move |store| apply_batch(store, &request.mutations, now_ms()))
        .await?;
    Ok(Json(PushResponse {
        results,
        server_time: now_ms(),
    }))
}

/// Apply a validated batch inside the caller's transaction.
///
/// A `(client_id, seq)` seen before changes nothing: an applied one answers `duplicate`; a
/// rejected one answers `rejected` again with its first reason (so a client that lost the
/// first answer dead-letters it rather than believing it stored); a conflicted one answers
/// `conflict` again with the entity's state now (a write that lost once always loses, since
/// stored stamps only grow).
pub fn apply_batch(
    store: &Store<'_>,
    mutations: &[Mutation],
    now: i64,
) -> Result<Vec<MutationResult>, ApiError> {
    let mut counts = Counters {
        push_requests: 1,
        ..Counters::default()
    };
    let mut results = Vec::with_capacity(mutations.len());
    for m in mutations {
        let seq = m.seq;
        if let Some(seen) = store.seen(&m.client_id, seq)? {
            counts.duplicates += 1;
            let result = match seen.status {
                MutationStatus::Applied => MutationResult::Duplicate { seq },
                MutationStatus::Rejected => MutationResult::Rejected {
                    seq,
                    reason: seen.reason.unwrap_or_else(|| "rejected".to_owned()),
                },
                MutationStatus::Conflict => match store.entity(&m.collection, &m.key)? {
                    Some(stored) => MutationResult::Conflict {
                        seq,
                        current: current_of(stored),
                    },
                    None => MutationResult::Duplicate { seq },
                },
            };
            results.push(result);
            continue;
        }
        if let Err(e) = validate::validate_mutation(m) {
            let reason = e.to_string();
            store.record_mutation(m, MutationStatus::Rejected, None, Some(&reason), now)?;
            counts.rejected += 1;
            results.push(MutationResult::Rejected { seq, reason });
            continue;
        }
        let stored = store.entity(&m.collection, &m.key)?;
        let incoming = Stamp::of(m);
        match conflict::decide(stored.as_ref().map(|s| &s.stamp), &incoming) {
            Verdict::Apply => {
                let version = store.next_version()?;
                let deleted = m.op == Op::Delete;
                let value = if deleted {
                    Value::Null
                } else {
                    m.value.clone()
                };
                let state = Stored {
                    value,
                    deleted,
                    stamp: incoming,
                    version,
                };
                store.put_entity(&m.collection, &m.key, &state)?;
                store.record_mutation(m, MutationStatus::Applied, Some(version), None, now)?;
                counts.mutations_applied += 1;
                results.push(MutationResult::Applied { seq, version });
            }
            Verdict::Conflict => {
                // decide() only answers Conflict against a stored write.
                let Some(stored) = stored else {
                    return Err(ApiError::internal("conflict without a stored entity"));
                };
                store.record_mutation(m, MutationStatus::Conflict, None, None, now)?;
                counts.conflicts += 1;
                results.push(MutationResult::Conflict {
                    seq,
                    current: current_of(stored),
                });
            }
        }
    }
    store.add_counters(&counts)?;
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
