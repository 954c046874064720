//! Attachments (`shared::blob`): a page's `Blob` is hashed, kept in the `blobs` store and its
//! upload queued in seq order; the flusher's blob sends run one [`Upload`] attempt over HTTP;
//! `get_blob` answers from this device, else downloads from the server and keeps the bytes.

use std::rc::Rc;

use js_sys::{Array, Uint8Array};
use rangersync_shared::blob::{self, BlobRef, ContentHash, Upload, UploadStep};
use rangersync_shared::classify::HttpOutcome;
use rangersync_shared::messages::codes;
use rangersync_shared::outbox::BlobUpload;
use serde_json::Value;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::Blob;

use super::Engine;
use crate::error::SwError;
use crate::js::now;
use crate::store::NewEntry;

/// Bytes hashed per read of a blob.
const HASH_SLICE_BYTES: u64 = 4 * 1024 * 1024;

fn invalid(message: impl Into<String>) -> SwError {
    SwError::coded(codes::INVALID_BLOB, message)
}

fn slice(blob: &Blob, start: u64, end: u64) -> Result<Blob, SwError> {
    blob.slice_with_f64_and_f64(start as f64, end as f64)
        .map_err(|e| SwError::from_js(&e))
}

async fn bytes_of(blob: &Blob) -> Result<Vec<u8>, SwError> {
    let buffer = JsFuture::from(blob.array_buffer())
        .await
        .map_err(|e| SwError::from_js(&e))?;
    Ok(Uint8Array::new(&buffer).to_vec())
}

/// The SHA-256 of a blob, read a slice at a time.
async fn hash(blob: &Blob, size: u64) -> Result<String, SwError> {
    let mut hash = ContentHash::default();
    let mut at = 0;
    while at < size {
        let end = (at + HASH_SLICE_BYTES).min(size);
        hash.update(&bytes_of(&slice(blob, at, end)?).await?);
        at = end;
    }
    Ok(hash.finish())
}

impl Engine {
    fn blob_url(&self, sha256: &str) -> String {
        format!("{}/api/blobs/{sha256}", self.base_url())
    }

    /// Keep `blob` and queue its upload (a write referencing it afterwards is sent after it);
    /// answer its reference.
    pub(super) async fn put_blob(
        self: &Rc<Self>,
        blob: JsValue,
        name: Option<String>,
    ) -> Result<Value, SwError> {
        let blob: Blob = blob
            .dyn_into()
            .map_err(|_| invalid("putBlob takes a Blob or a File"))?;
        let size = blob.size() as u64;
        blob::check_size(size).map_err(|m| SwError::coded(codes::BLOB_TOO_LARGE, m))?;
        let content_type = blob.type_();
        blob::check_label("type", &content_type).map_err(invalid)?;
        if let Some(name) = &name {
            blob::check_label("name", name).map_err(invalid)?;
        }
        let sha256 = hash(&blob, size).await?;
        self.store
            .put_blob(&sha256, &blob, &content_type, now())
            .await?;
        let upload = BlobUpload {
            sha256: sha256.clone(),
            size,
        };
        self.write_one(NewEntry::Blob(upload)).await?;
        self.update_counts(|c| c.blob_bytes_pending += size);
        self.broadcast_status();
        Ok(BlobRef {
            sha256,
            size,
            content_type,
            name,
        }
        .to_value())
    }

    /// One upload attempt of the blob queued as `seq`, driven by [`Upload`]; its final
    /// answer goes to the flusher.
    pub(super) async fn send_blob(self: &Rc<Self>, upload: &BlobUpload) {
        let blob = match self.store.get_blob(&upload.sha256).await {
            Ok(Some(b)) if b.size() as u64 == upload.size => b,
            Ok(found) => {
                let why = match found {
                    Some(b) => format!(
                        "its stored bytes are {} long, not {}",
                        b.size(),
                        upload.size
                    ),
                    None => "this device no longer holds its bytes".to_owned(),
                };
                self.flusher.borrow_mut().handle_blob_unreadable(
                    now(),
                    format!("blob {} cannot be uploaded: {why}", upload.sha256),
                    &mut crate::js::MathRandom,
                );
                return;
            }
            Err(e) => {
                // Reading failed (not a missing record): a storage error, retried later.
                let outcome = HttpOutcome::Network {
                    message: format!("reading blob {} failed: {e}", upload.sha256),
                };
                self.flusher.borrow_mut().handle_blob_outcome(
                    now(),
                    &outcome,
                    &mut crate::js::MathRandom,
                );
                return;
            }
        };
        let url = self.blob_url(&upload.sha256);
        let mut attempt = Upload::new(upload.size);
        let outcome = loop {
            match attempt.poll_step() {
                Some(UploadStep::AskProgress) => {
                    let answer = self.get(&format!("{url}/upload")).await;
                    attempt.handle_progress(answer);
                }
                Some(UploadStep::SendChunk { start, end }) => {
                    let range = blob::content_range(start, end, upload.size);
                    let answer = match slice(&blob, start, end) {
                        Ok(chunk) => {
                            self.put_bytes(
                                &url,
                                &[
                                    ("content-range", &range),
                                    ("content-type", "application/octet-stream"),
                                ],
                                chunk.into(),
                            )
                            .await
                        }
                        Err(e) => HttpOutcome::Network {
                            message: e.to_string(),
                        },
                    };
                    attempt.handle_chunk(answer);
                }
                Some(UploadStep::Finished(outcome)) => break outcome,
                None => {
                    break HttpOutcome::Network {
                        message: "the upload ended without an answer".into(),
                    }
                }
            }
        };
        self.flusher
            .borrow_mut()
            .handle_blob_outcome(now(), &outcome, &mut crate::js::MathRandom);
    }

    /// The bytes of `sha256`: this device's, else the server's (verified, then kept here).
    /// `content_type` names the type of a downloaded blob.
    pub(super) async fn get_blob(
        &self,
        sha256: &str,
        content_type: Option<&str>,
    ) -> Result<Blob, SwError> {
        blob::check_sha256(sha256).map_err(invalid)?;
        if let Some(local) = self.store.get_blob(sha256).await? {
            return Ok(local);
        }
        if self.base_url().is_empty() {
            return Err(SwError::coded(
                codes::BLOB_NOT_FOUND,
                format!("blob {sha256} is not on this device and there is no sync server"),
            ));
        }
        let bytes = match self.get_bytes(&self.blob_url(sha256)).await {
            Ok(bytes) => bytes,
            Err(HttpOutcome::Response { status: 404, .. }) => {
                return Err(SwError::coded(
                    codes::BLOB_NOT_FOUND,
                    format!(
                        "blob {sha256} is neither on this device nor on the server (the device that holds it may not have uploaded it yet)"
                    ),
                ))
            }
            Err(HttpOutcome::Response {
                status: status @ (401 | 403),
                ..
            }) => {
                return Err(SwError::coded(
                    codes::AUTH,
                    format!("the server refused the download of blob {sha256} (HTTP {status})"),
                ))
            }
            Err(HttpOutcome::Response { status, .. }) => {
                return Err(SwError::coded(
                    codes::SERVER_ERROR,
                    format!("the server answered HTTP {status} to the download of blob {sha256}"),
                ))
            }
            Err(HttpOutcome::Network { message }) => {
                return Err(SwError::coded(
                    codes::NETWORK,
                    format!("blob {sha256} is not on this device and the server could not be reached: {message}"),
                ))
            }
        };
        let mut check = ContentHash::default();
        check.update(&bytes);
        if check.finish() != sha256 {
            return Err(SwError::coded(
                codes::BAD_RESPONSE,
                format!("the server's bytes for blob {sha256} do not hash to it"),
            ));
        }
        let parts = Array::of1(&Uint8Array::from(&bytes[..]));
        let options = web_sys::BlobPropertyBag::new();
        let content_type = content_type.unwrap_or("");
        options.set_type(content_type);
        let blob = Blob::new_with_u8_array_sequence_and_options(&parts, &options)
            .map_err(|e| SwError::from_js(&e))?;
        self.store
            .put_blob(sha256, &blob, content_type, now())
            .await?;
        Ok(blob)
    }
}
