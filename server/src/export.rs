//! `GET /api/export` (a server-side snapshot of every entity) and `/api/backups` (where
//! clients store their snapshots as a copy off the device: verified, deduplicated by
//! checksum, the newest `--keep-backups` per client kept).

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rangersync_shared::messages::ExportFormat;
use rangersync_shared::sealed;
use rangersync_shared::snapshot::{
    self, Snapshot, SnapshotError, SnapshotSource, MAX_SNAPSHOT_BYTES,
};

use crate::auth::Caller;
use crate::body::read_body;
use crate::error::{codes, ApiError};
use crate::pull::query_params;
use crate::storage::{is_backup_id, BackupInfo, NewBackup};
use crate::{now_ms, AppState};

/// The content type of an encoding.
pub fn content_type(format: ExportFormat) -> &'static str {
    match format {
        ExportFormat::Json => "application/json",
        ExportFormat::Yaml => "application/yaml",
    }
}

fn extension(format: ExportFormat) -> &'static str {
    match format {
        ExportFormat::Json => "json",
        ExportFormat::Yaml => "yaml",
    }
}

/// `GET /api/export?format=json|yaml` (default json).
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query_params(q)?;
    let format = match params.get("format").map(String::as_str) {
        None | Some("json") => ExportFormat::Json,
        Some("yaml" | "yml") => ExportFormat::Yaml,
        Some(other) => {
            return Err(ApiError::bad_request(
                codes::BAD_QUERY,
                format!("format must be json or yaml (got {other:?})"),
            ))
        }
    };
    let exported_at = now_ms();
    let entities = state.db.all_entities(&caller.user_id).await?;
    let snap = snapshot::build(
        SnapshotSource::Server,
        None,
        env!("CARGO_PKG_VERSION"),
        exported_at,
        entities,
        Vec::new(),
    );
    let text = snapshot::encode(&snap, format);
    let disposition = format!(
        "attachment; filename=\"rangersync-export-{exported_at}.{}\"",
        extension(format)
    );
    let mut resp = text.into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(format)),
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// Decode and verify a snapshot text (`shared::snapshot::decode`): `400 bad_snapshot` or
/// `400 checksum_mismatch`, `413` over 64 MiB.
pub fn decode_snapshot(text: &str) -> Result<Snapshot, ApiError> {
    snapshot::decode(text).map_err(|e| match e {
        SnapshotError::TooLarge { .. } => {
            ApiError::too_large(codes::PAYLOAD_TOO_LARGE, e.to_string())
        }
        _ => ApiError::bad_request(e.code(), e.to_string()),
    })
}

/// A backup id as written in a query: 32 lower-case hex digits.
pub fn parse_backup_id(text: &str) -> Result<String, String> {
    if is_backup_id(text) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not a backup id (32 lower-case hex digits)"
        ))
    }
}

/// `POST /api/backups`: a JSON or YAML snapshot (at most 64 MiB), verified before it is
/// stored, kept with the newest `--keep-backups` of its client. `201` with the stored
/// backup's [`BackupInfo`] (and a `Location`); `200` with the stored one when the same
/// client had already stored the same checksum (nothing changes). `400 bad_snapshot` /
/// `400 checksum_mismatch` / `413`, and nothing is stored.
pub async fn create_backup(
    State(state): State<AppState>,
    caller: Caller,
    req: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = read_body(&parts.headers, body, MAX_SNAPSHOT_BYTES).await?;
    let text = String::from_utf8(bytes.into()).map_err(|_| {
        ApiError::bad_request(
            rangersync_shared::messages::codes::BAD_SNAPSHOT,
            "snapshot is not UTF-8 text",
        )
    })?;
    let received_at = now_ms();
    if sealed::is_sealed(&text) {
        // Encrypted in the browser: only the envelope and its outer checksum can be checked.
        let opened = sealed::open(&text).map_err(|e| match e {
            SnapshotError::TooLarge { .. } => {
                ApiError::too_large(codes::PAYLOAD_TOO_LARGE, e.to_string())
            }
            _ => ApiError::bad_request(e.code(), e.to_string()),
        })?;
        let backup = NewBackup {
            exported_at: opened.exported_at,
            checksum: opened.checksum,
            source: "client".to_owned(),
            client_id: opened.client_id.filter(|c| !c.is_empty()),
            app_version: String::new(),
            entities: 0,
            counts: Default::default(),
            format: SEALED_FORMAT.to_owned(),
            body: text,
            received_at,
        };
        return stored_response(&state, &caller, backup).await;
    }
    let snap = decode_snapshot(&text)?;
    let format = if text.trim_start().starts_with('{') {
        "json"
    } else {
        "yaml"
    };
    let backup = NewBackup {
        exported_at: snap.exported_at,
        checksum: snap.checksum.value.to_ascii_lowercase(),
        source: match snap.source {
            SnapshotSource::Client => "client".to_owned(),
            SnapshotSource::Server => "server".to_owned(),
        },
        client_id: snap.client_id.filter(|c| !c.is_empty()),
        app_version: snap.app_version,
        entities: snap.entities.len() as u64,
        counts: snap.counts,
        format: format.to_owned(),
        body: text,
        received_at,
    };
    stored_response(&state, &caller, backup).await
}

/// `format` of a backup encrypted in the browser (`shared::sealed`): stored and given back as
/// JSON, never decoded.
pub const SEALED_FORMAT: &str = "sealed";

async fn stored_response(
    state: &AppState,
    caller: &Caller,
    backup: NewBackup,
) -> Result<Response, ApiError> {
    let stored = state
        .db
        .insert_backup(&caller.user_id, backup, state.keep_backups)
        .await?;
    let status = if stored.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = format!("/api/backups/{}", stored.info.id);
    let mut resp = (status, Json(stored.info)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

/// Backups listed when `limit` is not given.
pub const DEFAULT_LIST_LIMIT: usize = 100;
/// Most backups one list answers.
pub const MAX_LIST_LIMIT: usize = 1000;

/// `GET /api/backups?client_id=X&limit=N`: `[BackupInfo]`, newest (last stored) first,
/// without the documents; only `client_id`'s when given; `limit` from 1 (default 100,
/// clamped to 1000).
pub async fn list_backups(
    State(state): State<AppState>,
    caller: Caller,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Vec<BackupInfo>>, ApiError> {
    let params = query_params(q)?;
    let client_id = match params.get("client_id") {
        None => None,
        Some(c) if c.is_empty() => {
            return Err(ApiError::bad_request(
                codes::BAD_QUERY,
                "client_id must not be empty (leave it out to list every client's backups)",
            ))
        }
        Some(c) => Some(c.clone()),
    };
    let limit = match params.get("limit") {
        None => DEFAULT_LIST_LIMIT,
        Some(text) => match text.parse::<u64>() {
            Ok(n) if n >= 1 => usize::try_from(n).map_or(MAX_LIST_LIMIT, |n| n.min(MAX_LIST_LIMIT)),
            _ => {
                return Err(ApiError::bad_request(
                    codes::BAD_QUERY,
                    format!(
                        "limit must be a whole number from 1 to {MAX_LIST_LIMIT} (got {text:?})"
                    ),
                ))
            }
        },
    };
    Ok(Json(
        state.db.backups(&caller.user_id, client_id, limit).await?,
    ))
}

/// `GET /api/backups/{id}`: the stored text exactly as it was sent, as `application/json`
/// or `application/yaml`; `404 not_found` when there is no such backup.
pub async fn get_backup(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (format, body) = state
        .db
        .backup_body(&caller.user_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no backup {id}")))?;
    let ct = if format == "yaml" {
        content_type(ExportFormat::Yaml)
    } else {
        content_type(ExportFormat::Json)
    };
    Ok((
        [
            (header::CONTENT_TYPE, ct),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}
