//! Blobs (attachments): content-addressed, chunked, resumable uploads and streamed downloads,
//! each blob its user's own. The contract is the "Blobs" section of docs/PROTOCOL.md.
//!
//! | route | handler |
//! |---|---|
//! | `PUT /api/blobs/{sha256}` (`Content-Range: bytes START-END/TOTAL`) | [`put_chunk`] |
//! | `GET /api/blobs/{sha256}/upload` | [`upload_status`] |
//! | `GET /api/blobs/{sha256}` | [`download`] |
//!
//! Caveats first:
//! - **No store, no blobs.** A SQLite server keeps blob bytes in `blobs/` beside its database
//!   file unless told otherwise; a PostgreSQL server has no default (instances on several
//!   hosts need one store they all share, and a guess would split uploads between hosts), so
//!   without `--blob-store` or `--blob-dir` every blob route answers
//!   `501 blobs_not_configured` and the server says so at start.
//! - **Abandoned uploads keep their quota.** An upload in progress counts at its full size
//!   against `--blob-quota-bytes` until it completes or fails its hash; nothing expires it yet.
//! - **Chunks are read whole** (at most [`MAX_CHUNK_BYTES`]) before anything is decided, so
//!   `--max-concurrent-requests` uploads in flight hold at most that many chunks in memory.
//!
//! How one chunk is accepted: the handler checks the request (nothing changes when it is
//! refused), writes the chunk as its own object of the [`BlobStore`], then records it with a
//! compare-and-set on the upload's `received` ([`crate::storage::Db::append_blob_part`]): of
//! two requests appending at one offset, on one instance or two, one wins and the other
//! deletes its object and answers `409` with where the upload got to. The request that brings
//! the last byte streams the parts in order through SHA-256 into the final object
//! ([`BlobStore::assemble`], bounded memory), marks it complete and deletes the parts; a hash
//! that differs discards the upload (`422`). The assembly runs in its own task, so a request
//! that times out or goes away does not cut it in half; an upload whose every byte arrived but
//! whose assembly failed (the process died, the store was unreachable) is assembled again by
//! the next `PUT` of that blob.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::TryStreamExt;
use rangersync_shared::protocol::ErrorBody;
use serde::Serialize;
use serde_json::Value;

use crate::auth::Caller;
use crate::blob_store::{
    blob_key, new_part_key, upload_prefix, Assembled, BlobLocation, BlobStore,
};
use crate::body::read_body;
use crate::db_location::DbLocation;
use crate::error::{codes, ApiError};
use crate::storage::{new_backup_id, BlobAppended, BlobBegun, BlobPart, BlobRow, Db};
use crate::{now_ms, AppState, ServerOptions};

/// The largest chunk one `PUT` may carry (the worker sends 1 MiB); a larger body is
/// `413 payload_too_large`.
pub const MAX_CHUNK_BYTES: usize = 8 * 1024 * 1024;

/// The content type of a chunk (any other is `415`, before auth; see [`crate::guard`]).
pub const CHUNK_CONTENT_TYPE: &str = "application/octet-stream";

/// The blob store and the limits, fixed at start.
#[derive(Debug, Clone)]
pub struct Blobs {
    /// `None`: no store is configured (PostgreSQL without `--blob-store`/`--blob-dir`).
    pub store: Option<BlobStore>,
    /// `--max-blob-bytes`.
    pub max_blob_bytes: u64,
    /// `--blob-quota-bytes`.
    pub quota_bytes: u64,
}

impl Blobs {
    fn store(&self) -> Result<&BlobStore, ApiError> {
        self.store.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                codes::BLOBS_NOT_CONFIGURED,
                "this server has no blob store: start it with --blob-store URL or --blob-dir DIR",
            )
        })
    }
}

/// Where blob bytes live for these options: `--blob-store`, else `--blob-dir`, else with
/// SQLite `blobs/` beside the database file; `None` with PostgreSQL and neither.
pub fn location(opts: &ServerOptions) -> Option<BlobLocation> {
    if let Some(url) = &opts.blob_store {
        return Some(BlobLocation::Url(url.clone()));
    }
    if let Some(dir) = &opts.blob_dir {
        return Some(BlobLocation::Dir(dir.clone()));
    }
    match &opts.db {
        DbLocation::Sqlite(path) => Some(BlobLocation::Dir(
            path.parent()
                .unwrap_or_else(|| std::path::Path::new(""))
                .join("blobs"),
        )),
        DbLocation::Postgres(_) => None,
    }
}

/// Open the store `opts` name (`None` when there is none, said on stderr).
pub async fn open(opts: &ServerOptions) -> Result<Blobs, String> {
    let store = match location(opts) {
        Some(location) => Some(BlobStore::open(&location).await?),
        None => {
            eprintln!(
                "rangersync-server: no blob store (PostgreSQL needs --blob-store URL, shared by \
                 every instance, or --blob-dir DIR): the blob routes answer 501 \
                 blobs_not_configured"
            );
            None
        }
    };
    Ok(Blobs {
        store,
        max_blob_bytes: opts.max_blob_bytes,
        quota_bytes: opts.blob_quota_bytes,
    })
}

/// The answer of every upload route: where an upload of the caller's got to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlobStatus {
    /// The blob.
    pub sha256: String,
    /// Its size (`TOTAL`).
    pub size: u64,
    /// Bytes received so far.
    pub received: u64,
    /// Verified and stored: downloadable.
    pub complete: bool,
}

fn status_of(sha256: &str, row: &BlobRow) -> Json<BlobStatus> {
    Json(BlobStatus {
        sha256: sha256.to_owned(),
        size: row.size,
        received: if row.complete { row.size } else { row.received },
        complete: row.complete,
    })
}

/// One chunk's `Content-Range`: `bytes START-END/TOTAL` (END inclusive), or `bytes */0` for
/// the empty blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRange {
    /// The first byte's offset.
    pub start: u64,
    /// How many bytes (0 only for `bytes */0`).
    pub len: u64,
    /// The whole blob's size.
    pub total: u64,
}

/// Parse a chunk's `Content-Range`; the error says what is wrong.
pub fn parse_content_range(text: &str) -> Result<ChunkRange, String> {
    let bad = |why: &str| format!("Content-Range {text:?}: {why}");
    let rest = text
        .get(..6)
        .filter(|unit| unit.eq_ignore_ascii_case("bytes "))
        .map(|_| &text[6..])
        .ok_or_else(|| bad("must be `bytes START-END/TOTAL`"))?;
    let (range, total) = rest
        .split_once('/')
        .ok_or_else(|| bad("must be `bytes START-END/TOTAL`"))?;
    let total = number(total).ok_or_else(|| bad("TOTAL must be a whole number"))?;
    if range == "*" {
        return if total == 0 {
            Ok(ChunkRange {
                start: 0,
                len: 0,
                total: 0,
            })
        } else {
            Err(bad(
                "`bytes */TOTAL` is only for the empty blob (`bytes */0`)",
            ))
        };
    }
    let (start, end) = range
        .split_once('-')
        .ok_or_else(|| bad("must be `bytes START-END/TOTAL`"))?;
    let start = number(start).ok_or_else(|| bad("START must be a whole number"))?;
    let end = number(end).ok_or_else(|| bad("END must be a whole number"))?;
    if end < start {
        return Err(bad("END is before START"));
    }
    if end >= total {
        return Err(bad("END must be below TOTAL (END is inclusive)"));
    }
    Ok(ChunkRange {
        start,
        len: end - start + 1,
        total,
    })
}

/// Decimal digits only (no sign, no spaces), fitting an `i64` (the databases' integers).
fn number(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u64>()
        .ok()
        .filter(|n| i64::try_from(*n).is_ok())
}

/// Whether `text` is a sha256 as the routes take it: 64 lower-case hex digits.
pub fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(codes::BAD_BLOB_REQUEST, message)
}

fn sha_of(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    match path {
        Ok(Path(sha256)) if is_sha256(&sha256) => Ok(sha256),
        Ok(Path(other)) => Err(bad_request(format!(
            "{other:?} is not a sha256 (64 lower-case hex digits)"
        ))),
        Err(e) => Err(bad_request(format!("not a blob path: {e}"))),
    }
}

fn not_found(sha256: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        codes::BLOB_NOT_FOUND,
        format!("you have no blob {sha256}"),
    )
}

/// An error answer that also says, at the top level, how many bytes the upload has.
fn with_received(e: ApiError, received: u64) -> Response {
    let mut body = serde_json::to_value(ErrorBody::new(e.code, e.message)).unwrap_or(Value::Null);
    if let Value::Object(fields) = &mut body {
        fields.insert("received".to_owned(), Value::from(received));
    }
    (e.status, Json(body)).into_response()
}

/// `409 blob_range_mismatch` with `received`.
fn range_mismatch(start: u64, received: u64) -> Response {
    with_received(
        ApiError::new(
            StatusCode::CONFLICT,
            codes::BLOB_RANGE_MISMATCH,
            format!(
                "this chunk starts at {start} but the upload has {received} bytes: send from \
                 {received}; nothing was changed"
            ),
        ),
        received,
    )
}

/// `PUT /api/blobs/{sha256}`: one chunk of an upload (see the module doc).
pub async fn put_chunk(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let store = state.blobs.store()?.clone();
    let sha256 = sha_of(path)?;
    let (parts, body) = req.into_parts();
    let bytes = read_body(&parts.headers, body, MAX_CHUNK_BYTES).await?;
    let range = parts
        .headers
        .get(header::CONTENT_RANGE)
        .ok_or_else(|| bad_request("a chunk needs Content-Range: bytes START-END/TOTAL"))?
        .to_str()
        .map_err(|_| bad_request("Content-Range is not text"))
        .and_then(|text| parse_content_range(text).map_err(bad_request))?;
    if bytes.len() as u64 != range.len {
        return Err(bad_request(format!(
            "the body has {} bytes but Content-Range says {}",
            bytes.len(),
            range.len
        )));
    }
    if range.total > state.blobs.max_blob_bytes {
        return Err(ApiError::too_large(
            codes::BLOB_TOO_LARGE,
            format!(
                "a blob of {} bytes is larger than this server takes ({} bytes)",
                range.total, state.blobs.max_blob_bytes
            ),
        ));
    }
    let user = caller.user_id;
    let row = match state.db.blob(&user, &sha256).await? {
        Some(row) => row,
        None if range.start != 0 => return Ok(range_mismatch(range.start, 0)),
        None => match state
            .db
            .begin_blob(
                &user,
                &sha256,
                range.total,
                new_backup_id(),
                state.blobs.quota_bytes,
                now_ms(),
            )
            .await?
        {
            BlobBegun::Created(row) | BlobBegun::Existing(row) => row,
            BlobBegun::OverQuota { used } => {
                return Err(ApiError::too_large(
                    codes::BLOB_QUOTA_EXCEEDED,
                    format!(
                        "your blobs take {used} bytes; {} more would pass your quota of {} bytes",
                        range.total, state.blobs.quota_bytes
                    ),
                ))
            }
        },
    };
    if row.size != range.total {
        return Err(bad_request(format!(
            "this blob's upload is of {} bytes, not {}",
            row.size, range.total
        )));
    }
    if row.complete {
        return Ok(status_of(&sha256, &row).into_response());
    }
    if row.received == row.size {
        return finish(&state.db, store, user, sha256, row).await;
    }
    if range.start != row.received {
        return Ok(range_mismatch(range.start, row.received));
    }
    let key = new_part_key(&user, &sha256, &row.upload_id, range.start);
    store
        .put(&key, bytes)
        .await
        .map_err(|e| ApiError::internal(format!("blob store {}: {e}", store.shown())))?;
    let part = BlobPart {
        start: range.start,
        len: range.len,
        key: key.clone(),
    };
    match state
        .db
        .append_blob_part(&user, &sha256, &row.upload_id, part)
        .await?
    {
        BlobAppended::Appended(received) if received == row.size => {
            let row = BlobRow { received, ..row };
            finish(&state.db, store, user, sha256, row).await
        }
        BlobAppended::Appended(received) => {
            Ok(status_of(&sha256, &BlobRow { received, ..row }).into_response())
        }
        BlobAppended::Moved(now) => {
            // Another request got there first: this chunk's object is no one's.
            if let Err(e) = store.delete(&key).await {
                eprintln!("rangersync-server: blob store {}: {e}", store.shown());
            }
            let received = now.map_or(0, |r| if r.complete { r.size } else { r.received });
            Ok(range_mismatch(range.start, received))
        }
    }
}

/// Assemble an upload whose every byte arrived, in a task of its own (it runs to its end
/// even when the request goes away).
async fn finish(
    db: &Db,
    store: BlobStore,
    user: String,
    sha256: String,
    row: BlobRow,
) -> Result<Response, ApiError> {
    let db = db.clone();
    tokio::spawn(async move { assemble(&db, &store, &user, &sha256, &row).await })
        .await
        .map_err(|e| ApiError::internal(format!("blob assembly failed: {e}")))?
}

async fn assemble(
    db: &Db,
    store: &BlobStore,
    user: &str,
    sha256: &str,
    row: &BlobRow,
) -> Result<Response, ApiError> {
    let parts = db.blob_parts(user, sha256, &row.upload_id).await?;
    let mut next = 0;
    for part in &parts {
        if part.start != next {
            break;
        }
        next += part.len;
    }
    let keys: Vec<String> = parts.into_iter().map(|p| p.key).collect();
    let assembled = if next == row.size {
        store.assemble(&keys, &blob_key(user, sha256), sha256).await
    } else {
        // Another request completed (or discarded) this upload and forgot its parts.
        Err(object_store::Error::NotFound {
            path: upload_prefix(user, sha256, &row.upload_id),
            source: "the upload's parts do not cover the blob".into(),
        })
    };
    let outcome = match assembled {
        Ok(Assembled::Verified) => {
            db.complete_blob(user, sha256, &row.upload_id, now_ms())
                .await?;
            Ok(status_of(
                sha256,
                &BlobRow {
                    complete: true,
                    received: row.size,
                    ..row.clone()
                },
            )
            .into_response())
        }
        Ok(Assembled::Mismatch { actual }) => {
            db.discard_blob(user, sha256, &row.upload_id).await?;
            Ok(with_received(
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    codes::BLOB_HASH_MISMATCH,
                    format!(
                        "the {} bytes received hash to {actual}, not {sha256}: the upload was \
                         discarded; send it again from 0",
                        row.size
                    ),
                ),
                0,
            ))
        }
        Err(e) => {
            // Perhaps another request finished it meanwhile.
            if let Some(now) = db.blob(user, sha256).await?.filter(|r| r.complete) {
                return Ok(status_of(sha256, &now).into_response());
            }
            if matches!(e, object_store::Error::NotFound { .. }) {
                // A part is gone for good (instances that do not share one store, say):
                // the client starts the upload again.
                db.discard_blob(user, sha256, &row.upload_id).await?;
                Err(ApiError::internal(format!(
                    "blob store {}: a part of an upload is missing ({e}); the upload was \
                     discarded. Do all instances share one --blob-store?",
                    store.shown()
                )))
            } else {
                return Err(ApiError::internal(format!(
                    "blob store {}: assembling an upload: {e}",
                    store.shown()
                )));
            }
        }
    };
    if let Err(e) = store
        .delete_prefix(&upload_prefix(user, sha256, &row.upload_id))
        .await
    {
        eprintln!("rangersync-server: blob store {}: {e}", store.shown());
    }
    outcome
}

/// `GET /api/blobs/{sha256}/upload`: where the caller's upload of this blob got to.
pub async fn upload_status(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<BlobStatus>, ApiError> {
    state.blobs.store()?;
    let sha256 = sha_of(path)?;
    match state.db.blob(&caller.user_id, &sha256).await? {
        Some(row) => Ok(status_of(&sha256, &row)),
        None => Err(not_found(&sha256)),
    }
}

/// `GET /api/blobs/{sha256}`: the caller's complete blob, streamed from the store.
pub async fn download(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let store = state.blobs.store()?;
    let sha256 = sha_of(path)?;
    let row = state
        .db
        .blob(&caller.user_id, &sha256)
        .await?
        .filter(|r| r.complete)
        .ok_or_else(|| not_found(&sha256))?;
    let stream = store
        .read(&blob_key(&caller.user_id, &sha256))
        .await
        .map_err(|e| {
            ApiError::internal(format!(
                "blob store {}: a complete blob cannot be read: {e}",
                store.shown()
            ))
        })?;
    let mut resp = Body::from_stream(stream.map_err(std::io::Error::other)).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(CHUNK_CONTENT_TYPE),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(row.size));
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{sha256}\"")) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: u64, len: u64, total: u64) -> Result<ChunkRange, String> {
        Ok(ChunkRange { start, len, total })
    }

    #[test]
    fn a_content_range_gives_the_start_the_length_and_the_total() {
        assert_eq!(parse_content_range("bytes 0-0/1"), range(0, 1, 1));
        assert_eq!(
            parse_content_range("bytes 0-1048575/3000000"),
            range(0, 1_048_576, 3_000_000)
        );
        assert_eq!(
            parse_content_range("bytes 2097152-2999999/3000000"),
            range(2_097_152, 902_848, 3_000_000)
        );
        assert_eq!(parse_content_range("Bytes 5-9/10"), range(5, 5, 10));
        assert_eq!(parse_content_range("bytes */0"), range(0, 0, 0));
    }

    #[test]
    fn a_malformed_content_range_is_refused_with_what_is_wrong() {
        for bad in [
            "",
            "bytes",
            "bytes ",
            "items 0-1/2",
            "bytes=0-1/2",
            "bytes 0-1",
            "bytes 0-1/*",
            "bytes */5",
            "bytes */*",
            "bytes 1-0/5",
            "bytes 0-5/5",
            "bytes 0-9/5",
            "bytes -1-2/5",
            "bytes +0-1/5",
            "bytes 0 -1/5",
            "bytes  0-1/5",
            "bytes 0-1/5 ",
            "bytes 0x0-1/5",
            "bytes 0-1/18446744073709551616",
            "bytes 0-1/9223372036854775808",
            "bytes 0-1-2/5",
        ] {
            let e = parse_content_range(bad).unwrap_err();
            assert!(e.starts_with("Content-Range"), "{bad:?}: {e}");
        }
        assert!(parse_content_range("bytes 0-9223372036854775806/9223372036854775807").is_ok());
    }

    #[test]
    fn a_sha256_is_64_lower_case_hex_digits() {
        assert!(is_sha256(&"0a".repeat(32)));
        assert!(!is_sha256(&"0A".repeat(32)));
        assert!(!is_sha256(&"0".repeat(63)));
        assert!(!is_sha256(&"0".repeat(65)));
        assert!(!is_sha256(&format!("{}g", "0".repeat(63))));
    }
}
