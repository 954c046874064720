//! Snapshots of the local state: export, backups to the server (manual and scheduled, as
//! `shared::backup` decides), and restore with a dry run.

use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use rangersync_shared::backup::{dead_letters_let_go, BackupAction, BackupTrigger, UploadResult};
use rangersync_shared::capture::{redact, redact_record, secret_headers_for, split_url};
use rangersync_shared::classify::HttpOutcome;
use rangersync_shared::messages::{codes, ExportFormat};
use rangersync_shared::outbox::Trigger;
use rangersync_shared::protocol::{Entity, ErrorDetail, Op};
use rangersync_shared::requeue;
use rangersync_shared::snapshot::{self, SnapshotSource};
use serde_json::Value;

use super::capture::own_origin;
use super::Engine;
use crate::error::SwError;
use crate::js::{self, now, MathRandom, Signal, Timeout};
use crate::schema::meta;
use crate::store::{ExportContents, NewEntry};
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::spawn_local;

impl Engine {
    /// A snapshot of everything but the collections `left_out` (local-only ones, and for a
    /// backup those excluded from backups too), with captured calls' secrets redacted.
    pub(super) async fn export(
        &self,
        format: ExportFormat,
        left_out: &[String],
        include_blobs: bool,
    ) -> Result<(snapshot::Snapshot, String), SwError> {
        let at = now();
        let mut contents = self.store.export_contents(&self.client_id).await?;
        self.redact_secrets(&mut contents);
        if !left_out.is_empty() {
            let kept = |c: &str| !left_out.iter().any(|l| l == c);
            contents.entities.retain(|e| kept(&e.collection));
            contents.outbox.retain(|m| kept(&m.collection));
            contents.dead.retain(|d| {
                d.record
                    .get("collection")
                    .and_then(Value::as_str)
                    .is_none_or(kept)
            });
        }
        let blobs = if include_blobs {
            self.blob_copies(&contents.entities, &mut contents.problems)
                .await?
        } else {
            Vec::new()
        };
        for p in &contents.problems {
            js::log(&format!(
                "export: {} record {} could not be read: {}",
                p.store, p.key, p.reason
            ));
        }
        let snap = snapshot::build_with(
            SnapshotSource::Client,
            Some(self.client_id.clone()),
            env!("CARGO_PKG_VERSION"),
            at,
            contents.entities,
            contents.outbox,
            snapshot::Extras {
                requests: contents.requests,
                dead: contents.dead,
                meta: Some(contents.meta),
                problems: contents.problems,
                blobs,
            },
        );
        let text = snapshot::encode(&snap, format);
        if include_blobs && text.len() > snapshot::MAX_SNAPSHOT_BYTES {
            return Err(SwError::coded(
                codes::VALUE_TOO_LARGE,
                format!(
                    "with its blobs the snapshot is {} bytes, more than the {} a restore accepts: export without includeBlobs (uploaded blobs stay on the server)",
                    text.len(),
                    snapshot::MAX_SNAPSHOT_BYTES
                ),
            ));
        }
        self.store
            .put_meta(meta::LAST_EXPORTED_AT, &(at as f64).into())
            .await?;
        self.update_counts(|c| c.last_exported_at = Some(at));
        self.backups.borrow_mut().handle_exported(at);
        self.broadcast_status();
        Ok((snap, text))
    }

    /// The bytes of every blob `entities` reference, read from this device; one it does not
    /// hold is named in `problems` (never left out silently). Refuses (`value_too_large`) once
    /// the bytes would make a snapshot larger than a restore accepts.
    async fn blob_copies(
        &self,
        entities: &[Entity],
        problems: &mut Vec<snapshot::Problem>,
    ) -> Result<Vec<snapshot::BlobCopy>, SwError> {
        let mut wanted = std::collections::BTreeMap::new();
        for e in entities.iter().filter(|e| !e.deleted) {
            rangersync_shared::blob::references_in(&e.value, &mut wanted);
        }
        let mut copies = Vec::with_capacity(wanted.len());
        let mut bytes_total: u64 = 0;
        for (sha256, reference) in wanted {
            let problem = |reason: String| snapshot::Problem {
                store: crate::schema::BLOBS.into(),
                key: sha256.clone(),
                reason,
            };
            let blob = match self.store.get_blob(&sha256).await {
                Ok(Some(blob)) => blob,
                Ok(None) => {
                    problems.push(problem(
                        "referenced, but this device does not hold its bytes (the server may)"
                            .into(),
                    ));
                    continue;
                }
                // One unreadable blob is named, never the end of every backup.
                Err(e) => {
                    problems.push(problem(format!("its record cannot be read: {e}")));
                    continue;
                }
            };
            bytes_total += blob.size() as u64;
            // Base64 is 4/3 of the bytes.
            if bytes_total.saturating_mul(4) / 3 > snapshot::MAX_SNAPSHOT_BYTES as u64 {
                return Err(SwError::coded(
                    codes::VALUE_TOO_LARGE,
                    format!(
                        "the blobs would make the snapshot larger than the {} MiB a restore accepts: export without includeBlobs (uploaded blobs stay on the server)",
                        snapshot::MAX_SNAPSHOT_BYTES / (1024 * 1024)
                    ),
                ));
            }
            let buffer = match wasm_bindgen_futures::JsFuture::from(blob.array_buffer()).await {
                Ok(buffer) => buffer,
                Err(e) => {
                    problems.push(problem(format!(
                        "its bytes cannot be read: {}",
                        SwError::from_js(&e)
                    )));
                    continue;
                }
            };
            let bytes = js_sys::Uint8Array::new(&buffer).to_vec();
            copies.push(snapshot::BlobCopy::new(
                sha256,
                reference.content_type,
                &bytes,
            ));
        }
        Ok(copies)
    }

    /// Keep the bytes of the blobs of `snap` this device does not hold (the `blobs` store
    /// only: nothing is queued yet, so the restore's own check of this device's outbox is not
    /// changed by it). Returns the uploads to queue once the restore is applied.
    async fn keep_snapshot_blobs(
        &self,
        snap: &snapshot::Snapshot,
    ) -> Result<(Vec<rangersync_shared::outbox::BlobUpload>, u64), SwError> {
        let mut uploads = Vec::new();
        let mut kept = 0;
        for copy in &snap.blobs {
            // Every blob gets an upload, one this device holds too: the restore may be onto a
            // server that lost it (one that has it answers `complete` at once).
            uploads.push(rangersync_shared::outbox::BlobUpload {
                sha256: copy.sha256.clone(),
                size: copy.size,
            });
            if self.store.get_blob(&copy.sha256).await?.is_some() {
                continue;
            }
            let bytes = copy.bytes()?;
            let parts = js_sys::Array::of1(&js_sys::Uint8Array::from(&bytes[..]));
            let options = web_sys::BlobPropertyBag::new();
            options.set_type(&copy.content_type);
            let blob = web_sys::Blob::new_with_u8_array_sequence_and_options(&parts, &options)
                .map_err(|e| SwError::from_js(&e))?;
            self.store
                .put_blob(&copy.sha256, &blob, &copy.content_type, now())
                .await?;
            kept += 1;
        }
        Ok((uploads, kept))
    }

    /// Take every captured call's secret headers (credentials, its route's `secretHeaders`)
    /// out of what an export or a backup writes; the outbox keeps them to replay the call.
    fn redact_secrets(&self, contents: &mut ExportContents) {
        let config = self.config.borrow();
        let server = split_url(&config.server_url).map(|(origin, _)| origin);
        let own = own_origin();
        let secret_of =
            |url: &str| secret_headers_for(&config.capture_routes, url, &own, server.as_deref());
        for r in &mut contents.requests {
            r.redacted = redact(&mut r.headers, &secret_of(&r.url));
        }
        for d in &mut contents.dead {
            let url = d
                .record
                .get("url")
                .and_then(|u| u.as_str())
                .map(str::to_owned);
            if let Some(url) = url {
                d.redacted = redact_record(&mut d.record, &secret_of(&url));
            }
        }
    }

    /// Check a snapshot, plan its restore against the local copy, and (unless `dry_run`) apply
    /// the plan in ONE transaction: the snapshot's pending writes, captured requests and dead
    /// letters go back under their own `(client_id, seq)` (`shared::requeue`: the server's
    /// dedup recognises any it applied after the backup), and every entity the plan adds or
    /// replaces that no re-queued write shows becomes an ordinary write, so it syncs like any
    /// other.
    ///
    /// Entries put back below what this engine has already sent (or under an adopted client
    /// id) are not in its flusher's view: the engine retires, and its owner opens a fresh one,
    /// which flushes at start.
    pub(super) async fn restore(
        self: &Rc<Self>,
        text: &str,
        dry_run: bool,
    ) -> Result<Value, SwError> {
        let snap = snapshot::decode(text)?;
        let current: HashMap<(String, String), Entity> = self
            .store
            .entities(None)
            .await?
            .into_iter()
            .map(|e| ((e.collection.clone(), e.key.clone()), e.to_entity()))
            .collect();
        let lookup = |c: &str, k: &str| current.get(&(c.to_owned(), k.to_owned())).cloned();
        let mut report = snapshot::plan_restore(&snap, &lookup, dry_run);
        if dry_run {
            let local = self.store.local_outbox().await?;
            match requeue::plan_requeue(&snap, &local) {
                Ok(plan) => report.pending = Some(plan.report),
                Err(blocked) => report.blocked = Some(blocked.to_string()),
            }
            for copy in &snap.blobs {
                if self.store.get_blob(&copy.sha256).await?.is_none() {
                    report.blobs_restored += 1;
                }
            }
            return Ok(serde_json::to_value(report).unwrap_or(Value::Null));
        }
        let mut blob_uploads = Vec::new();
        if !snap.blobs.is_empty() {
            // A restore that will be refused keeps no blob either.
            if let Err(blocked) = requeue::plan_requeue(&snap, &self.store.local_outbox().await?) {
                return Err(SwError::coded(blocked.code(), blocked.to_string()));
            }
            let (uploads, kept) = self.keep_snapshot_blobs(&snap).await?;
            blob_uploads = uploads;
            report.blobs_restored = kept;
        }
        let by_key: HashMap<(&str, &str), &Entity> = snap
            .entities
            .iter()
            .map(|e| ((e.collection.as_str(), e.key.as_str()), e))
            .collect();
        let at = now();
        let changed: Vec<(String, String)> = report
            .added
            .iter()
            .chain(&report.replaced)
            .map(|r| (r.collection.clone(), r.key.clone()))
            .collect();
        // An entity a re-queued write now shows needs no write of its own; any other the
        // plan adds or replaces (a newer local state kept over a re-queued write included)
        // is written again.
        let writes = |shown: &BTreeSet<(String, String)>| -> Vec<NewEntry> {
            changed
                .iter()
                .filter(|key| !shown.contains(*key))
                .filter_map(|(c, k)| by_key.get(&(c.as_str(), k.as_str())))
                .map(|e| NewEntry::Write {
                    collection: e.collection.clone(),
                    key: e.key.clone(),
                    op: if e.deleted { Op::Delete } else { Op::Put },
                    value: if e.deleted {
                        Value::Null
                    } else {
                        e.value.clone()
                    },
                    updated_at: at,
                })
                .collect()
        };
        let guard = self.coalesce_guard();
        let local_only = self.config.borrow().local_only.clone();
        let applied = self
            .store
            .apply_restore(
                |local| requeue::plan_requeue(&snap, local),
                writes,
                at,
                &guard,
                &local_only,
            )
            .await?;
        let (plan, seqs, _) =
            applied.map_err(|blocked| SwError::coded(blocked.code(), blocked.to_string()))?;
        // Queued after the restore's own entries (its check wants this device's outbox as it
        // was): a re-queued write may reach the server before the bytes it references, and a
        // device reading it then hears `blob_not_found` until they arrive.
        let blob_bytes: u64 = blob_uploads.iter().map(|b| b.size).sum();
        if !blob_uploads.is_empty() {
            self.write(blob_uploads.into_iter().map(NewEntry::Blob).collect())
                .await?;
            self.update_counts(|c| c.blob_bytes_pending += blob_bytes);
        }
        let requeued = !plan.report.requeued.is_empty() || !plan.report.dead_restored.is_empty();
        report.pending = Some(plan.report);
        for (c, k) in &changed {
            self.broadcast_change(c, k);
        }
        if requeued || plan.adopt_client_id.is_some() {
            self.retire();
        } else if !seqs.is_empty() {
            self.recount().await;
            self.update_counts(|c| c.last_saved_at = Some(at));
            self.broadcast_status();
            self.request_background_sync();
            self.kick(Trigger::Write);
        }
        Ok(serde_json::to_value(report).unwrap_or(Value::Null))
    }

    /// Whether backups have somewhere to go: a server URL and a usable config.
    pub(super) fn can_back_up(&self) -> bool {
        !self.config.borrow().server_url.is_empty() && self.config_problem.borrow().is_none()
    }

    /// Something that may start a backup happened (`shared::backup` decides whether one is
    /// due). Runs it to the end: a snapshot of everything, uploaded with `POST /api/backups`.
    /// A manual one asked for while another runs waits for it, then takes its own snapshot
    /// (the running one may predate the writes it is asked to keep). `None` when nothing was
    /// due; else the stored backup's info or why it failed (kept in the status and retried
    /// with the sync's backoff).
    pub async fn backup(
        self: &Rc<Self>,
        trigger: BackupTrigger,
    ) -> Option<Result<Value, ErrorDetail>> {
        if !self.can_back_up() {
            return (trigger == BackupTrigger::Manual).then(|| {
                Err(ErrorDetail {
                    code: codes::INVALID_CONFIG.into(),
                    message: "no serverUrl to upload a backup to".into(),
                })
            });
        }
        loop {
            let action = {
                let mut b = self.backups.borrow_mut();
                b.handle_trigger(now(), trigger);
                b.poll_action()
            };
            if action == Some(BackupAction::ExportAndUpload) {
                break;
            }
            if trigger != BackupTrigger::Manual || !self.backups.borrow().is_running() {
                return None;
            }
            // The one running may have read the database before the writes this person
            // wants backed up: wait for it, then take a fresh one.
            let (signal, done) = Signal::new();
            self.backup_waiters.borrow_mut().push(signal);
            let _ = done.await;
        }
        self.backup_timer.borrow_mut().take();
        self.broadcast_status();
        let result = self.export_and_upload().await;
        self.persist_backup_state().await;
        self.broadcast_status();
        self.arm_backup_timer();
        for w in std::mem::take(&mut *self.backup_waiters.borrow_mut()) {
            w.fire();
        }
        Some(result)
    }

    async fn export_and_upload(self: &Rc<Self>) -> Result<Value, ErrorDetail> {
        let left_out = {
            let c = self.config.borrow();
            let mut l = c.local_only.clone();
            l.extend(c.exclude_from_backup.iter().cloned());
            l
        };
        let include_blobs = self.config.borrow().backup_include_blobs;
        let (snap, text) = match self
            .export(ExportFormat::Json, &left_out, include_blobs)
            .await
        {
            Ok(built) => built,
            Err(e) => {
                self.backups.borrow_mut().handle_export_failed(
                    now(),
                    e.code(),
                    format!("the backup snapshot could not be built: {e}"),
                    &mut MathRandom,
                );
                return Err(e.detail());
            }
        };
        let text = match self.sealed_for_upload(text, snap.exported_at).await {
            Ok(text) => text,
            Err(e) => {
                self.backups.borrow_mut().handle_export_failed(
                    now(),
                    e.code(),
                    e.to_string(),
                    &mut MathRandom,
                );
                return Err(e.detail());
            }
        };
        let outcome = self.upload_backup(text).await;
        let result = self.backups.borrow_mut().handle_upload(
            now(),
            snap.exported_at,
            &outcome,
            &mut MathRandom,
        );
        match result {
            UploadResult::Stored => {
                self.let_go_of_backed_up_dead_letters(&snap).await;
                let body = match &outcome {
                    HttpOutcome::Response { body, .. } => {
                        serde_json::from_str(body).unwrap_or(Value::Null)
                    }
                    HttpOutcome::Network { .. } => Value::Null,
                };
                Ok(serde_json::json!({
                    "backup": body,
                    "exported_at": snap.exported_at,
                    "checksum": snap.checksum.value,
                }))
            }
            UploadResult::Failed { code, .. } => {
                let message = self
                    .backups
                    .borrow()
                    .failure()
                    .map_or_else(String::new, |f| f.error.message.clone());
                Err(ErrorDetail { code, message })
            }
        }
    }

    /// The server holds `snap`: remove the dead letters in it that are older than
    /// `dead_letter_retention_days` (they leave the device only into a backup).
    async fn let_go_of_backed_up_dead_letters(&self, snap: &snapshot::Snapshot) {
        let days = self.config.borrow().dead_letter_retention_days;
        let seqs = dead_letters_let_go(&snap.dead, snap.exported_at, days);
        if seqs.is_empty() {
            return;
        }
        match self.store.remove_dead(&seqs).await {
            Ok((removed, entities)) => {
                self.update_counts(|c| c.dead = c.dead.saturating_sub(removed));
                for (collection, key) in entities {
                    self.broadcast_change(&collection, &key);
                }
            }
            Err(e) => js::log(&format!(
                "the dead letters kept in the backup could not be removed: {e}"
            )),
        }
    }

    /// Keep the backup state in `meta`, so a restarted worker keeps its backoff and shows
    /// the last backup.
    async fn persist_backup_state(&self) {
        let (last, failure) = {
            let b = self.backups.borrow();
            (b.last_backup_at(), b.failure().cloned())
        };
        let last = last.map_or(JsValue::NULL, |at| (at as f64).into());
        let failure = failure
            .and_then(|f| js::to_js(&f).ok())
            .unwrap_or(JsValue::NULL);
        if let Err(e) = self
            .store
            .put_metas(&[
                (meta::LAST_BACKUP_AT, last),
                (meta::BACKUP_FAILURE, failure),
            ])
            .await
        {
            js::log(&format!("the backup state could not be stored: {e}"));
        }
    }

    /// Wake at the next backup's due time while this engine lives (a page open on a worker
    /// that stays up, or the page engine). The worker may be stopped before: then the page's
    /// own timer, the next start, page open or focus, or a periodic sync brings it.
    pub(super) fn arm_backup_timer(self: &Rc<Self>) {
        let at = if self.can_back_up() {
            self.backups.borrow().poll_timeout()
        } else {
            None
        };
        let timer = at.map(|at| {
            let weak = Rc::downgrade(self);
            Timeout::new(
                at.saturating_sub(now()).max(MIN_BACKUP_WAKE_MS),
                move || {
                    if let Some(engine) = weak.upgrade() {
                        spawn_local(async move {
                            engine.backup_timer.borrow_mut().take();
                            if engine.backup(BackupTrigger::Timer).await.is_none() {
                                engine.arm_backup_timer();
                            }
                        });
                    }
                },
            )
        });
        *self.backup_timer.borrow_mut() = timer;
    }
}

/// The shortest wait of the backup timer (a due time in the past must not spin).
const MIN_BACKUP_WAKE_MS: i64 = 1_000;
