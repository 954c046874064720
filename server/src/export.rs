//! `GET /api/export` (a server-side snapshot of every entity) and `/api/backups` (a place
//! where clients store their scheduled snapshots as a server-side copy).

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rangersync_shared::messages::ExportFormat;
use rangersync_shared::snapshot::{self, SnapshotSource, MAX_SNAPSHOT_BYTES};
use serde_json::json;

use crate::body::read_body;
use crate::error::{codes, ApiError};
use crate::pull::query_params;
use crate::storage::{BackupInfo, NewBackup};
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
    let entities = state.db.all_entities().await?;
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

/// `POST /api/backups`: a JSON or YAML snapshot (at most 64 MiB), verified before it is
/// stored. `201 {id, checksum, entities}`; `400 bad_snapshot` / `400 checksum_mismatch`.
pub async fn create_backup(
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = read_body(&parts.headers, body, MAX_SNAPSHOT_BYTES).await?;
    let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
        ApiError::bad_request(
            rangersync_shared::messages::codes::BAD_SNAPSHOT,
            "snapshot is not UTF-8 text",
        )
    })?;
    let received_at = now_ms();
    let snap =
        snapshot::decode(&text).map_err(|e| ApiError::bad_request(e.code(), e.to_string()))?;
    let format = if text.trim_start().starts_with('{') {
        "json"
    } else {
        "yaml"
    };
    let backup = NewBackup {
        exported_at: snap.exported_at,
        checksum: snap.checksum.value.clone(),
        source: match snap.source {
            SnapshotSource::Client => "client".to_owned(),
            SnapshotSource::Server => "server".to_owned(),
        },
        client_id: snap.client_id.clone(),
        app_version: snap.app_version.clone(),
        entities: snap.entities.len() as u64,
        format: format.to_owned(),
        body: text,
        received_at,
    };
    let (checksum, entities) = (backup.checksum.clone(), backup.entities);
    let id = state.db.insert_backup(backup).await?;
    let stored = json!({ "id": id, "checksum": checksum, "entities": entities });
    Ok((StatusCode::CREATED, Json(stored)).into_response())
}

/// `GET /api/backups`: `[ {id, exported_at, checksum, source, client_id, app_version,
/// entities, format, bytes, received_at} ]`, oldest first.
pub async fn list_backups(
    State(state): State<AppState>,
) -> Result<Json<Vec<BackupInfo>>, ApiError> {
    Ok(Json(state.db.backups().await?))
}

/// `GET /api/backups/{id}`: the stored text, as it was sent.
pub async fn get_backup(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::not_found(format!("no backup {id:?}")))?;
    let (format, body) = state
        .db
        .backup_body(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no backup {id}")))?;
    let ct = if format == "yaml" {
        "application/yaml"
    } else {
        "application/json"
    };
    Ok(([(header::CONTENT_TYPE, ct)], body).into_response())
}
