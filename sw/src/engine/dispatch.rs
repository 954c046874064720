//! A page's request → its answer. Every request is validated here before anything is stored.

use std::rc::Rc;

use rangersync_shared::backup::BackupTrigger;
use rangersync_shared::messages::{
    codes, parse_request, DeadLetter, ListItem, PageEvent, ReplyEnvelope, Request, WriteAck,
    WriteOp, MAX_WRITE_MANY_OPS, MESSAGE_VERSION,
};
use rangersync_shared::outbox::Trigger;
use rangersync_shared::protocol::{ErrorDetail, Millis, Op};
use rangersync_shared::validate;
use serde_json::{json, Value};
use wasm_bindgen::JsValue;

use super::encryption::Unlock;
use super::{validate_config, Engine};
use crate::bindings;
use crate::error::SwError;
use crate::js::now;
use crate::schema::meta;
use crate::store::NewEntry;

impl Engine {
    /// Parse a page's message text and answer it (errors are replies too; never panics).
    pub async fn handle_text(self: &Rc<Self>, text: &str) -> ReplyEnvelope {
        self.handle_text_with(text, None).await
    }

    /// [`Self::handle_text`] for a message that carried a `CryptoKey` beside its text
    /// ([`rangersync_shared::messages::KEY_BESIDE`]).
    pub async fn handle_text_with(
        self: &Rc<Self>,
        text: &str,
        key: Option<JsValue>,
    ) -> ReplyEnvelope {
        self.handle_text_carrying(text, key).await.0
    }

    /// [`Self::handle_text_with`] where the reply may carry a value beside its text too: the
    /// `Blob` of a `get_blob` ([`rangersync_shared::messages::BLOB_BESIDE`]).
    pub async fn handle_text_carrying(
        self: &Rc<Self>,
        text: &str,
        beside: Option<JsValue>,
    ) -> (ReplyEnvelope, Option<JsValue>) {
        let env = match parse_request(text) {
            Err((id, e)) => {
                return (
                    ReplyEnvelope::err(id.unwrap_or(0), e.code(), e.to_string()),
                    None,
                )
            }
            Ok(env) => env,
        };
        if let Request::GetBlob {
            sha256,
            content_type,
        } = &env.request
        {
            return match self.get_blob(sha256, content_type.as_deref()).await {
                Ok(blob) => (
                    ReplyEnvelope::ok(env.id, json!({ "sha256": sha256 })),
                    Some(blob.into()),
                ),
                Err(e) => {
                    let d = e.detail();
                    (ReplyEnvelope::err(env.id, &d.code, d.message), None)
                }
            };
        }
        let reply = match self
            .handle_inner(env.request, beside)
            .await
            .map_err(|e| e.detail())
        {
            Ok(v) => ReplyEnvelope::ok(env.id, v),
            Err(d) => ReplyEnvelope {
                v: MESSAGE_VERSION,
                id: env.id,
                ok: false,
                result: None,
                error: Some(d),
            },
        };
        (reply, None)
    }

    /// Answer one request.
    pub async fn handle(self: &Rc<Self>, request: Request) -> Result<Value, ErrorDetail> {
        self.handle_inner(request, None)
            .await
            .map_err(|e| e.detail())
    }

    /// `beside`: the `CryptoKey` the message carried, for a request that says `key: true`.
    async fn handle_inner(
        self: &Rc<Self>,
        request: Request,
        beside: Option<JsValue>,
    ) -> Result<Value, SwError> {
        let key = |wanted: bool| -> Result<Option<JsValue>, SwError> {
            match (wanted, beside.clone()) {
                (false, _) => Ok(None),
                (true, Some(key)) => Ok(Some(key)),
                (true, None) => Err(SwError::coded(
                    codes::INVALID_MESSAGE,
                    "the request says a key travels beside it and none did",
                )),
            }
        };
        match request {
            Request::Configure { config } => {
                validate_config(&config)?;
                self.store.put_config(&config).await?;
                let was_broken = self.config_problem.borrow_mut().take().is_some();
                let endpoint_changed = was_broken || self.config.borrow().endpoint_differs(&config);
                if endpoint_changed {
                    // Another server: the old one's backoff does not apply.
                    self.store.put_meta(meta::BACKOFF, &JsValue::NULL).await?;
                }
                self.flusher.borrow_mut().handle_config_update(
                    config.batch_size,
                    config.retry.clone(),
                    endpoint_changed,
                );
                let (periodic, exports) = (config.periodic_interval_ms, config.export_interval_ms);
                self.backups
                    .borrow_mut()
                    .handle_config(exports, config.retry.clone());
                *self.config.borrow_mut() = config;
                let url = self.push_url();
                self.flusher.borrow_mut().set_endpoint(url);
                if was_broken {
                    self.flusher.borrow_mut().clear_error(codes::CONFIG_ERROR);
                }
                bindings::set_periodic(periodic_interval(periodic, exports)).await;
                self.refresh_persistent().await;
                self.broadcast_status();
                // A page opened: back up when one is due.
                self.spawn_backup(BackupTrigger::PageOpen);
                // Pages send their config on every load: the same one must not cut a backoff
                // short (a reload is a page event); a new server is tried at once.
                self.kick(if endpoint_changed {
                    Trigger::Manual
                } else {
                    Trigger::PageEvent
                });
                self.status_json()
            }
            Request::Put { .. }
            | Request::Delete { .. }
            | Request::WriteMany { .. }
            | Request::PutBlob { .. }
                if self.capture_only() =>
            {
                Err(SwError::coded(
                    codes::INVALID_CONFIG,
                    "this client has no serverUrl (capture only): a put or delete would have nowhere to go; set serverUrl to a rangersync server",
                ))
            }
            Request::Put {
                collection,
                key,
                value,
            } => {
                let op = WriteOp::Put {
                    collection,
                    key,
                    value,
                };
                let seq = self.write_one(checked_entry(op, now())?).await?;
                Ok(json!(WriteAck { seq }))
            }
            Request::Delete { collection, key } => {
                let op = WriteOp::Delete { collection, key };
                let seq = self.write_one(checked_entry(op, now())?).await?;
                Ok(json!(WriteAck { seq }))
            }
            Request::WriteMany { ops } => {
                if ops.is_empty() || ops.len() > MAX_WRITE_MANY_OPS {
                    return Err(SwError::coded(
                        codes::INVALID_VALUE,
                        format!(
                            "write_many takes 1 to {MAX_WRITE_MANY_OPS} operations (got {})",
                            ops.len()
                        ),
                    ));
                }
                let at = now();
                // Every operation is checked before anything is written.
                let entries = ops
                    .into_iter()
                    .map(|op| checked_entry(op, at))
                    .collect::<Result<Vec<_>, _>>()?;
                let seqs = self.write(entries).await?;
                Ok(json!({ "seqs": seqs }))
            }
            Request::PutBlob { name } => match beside {
                Some(blob) => self.put_blob(blob, name).await,
                None => Err(SwError::coded(
                    codes::INVALID_BLOB,
                    "put_blob carries its Blob beside its text ({ text, blob }) and none came",
                )),
            },
            Request::GetBlob { .. } => Err(SwError::coded(
                codes::INTERNAL,
                "get_blob is answered before the other requests",
            )),
            Request::Get { collection, key } => {
                validate::validate_collection(&collection)?;
                validate::validate_key(&key)?;
                Ok(match self.store.get_entity(&collection, &key).await? {
                    Some(e) if !e.deleted => json!({
                        "collection": e.collection, "key": e.key, "value": e.value,
                        "updated_at": e.updated_at, "version": e.version, "pending": e.pending,
                    }),
                    _ => Value::Null,
                })
            }
            Request::List { collection } => {
                validate::validate_collection(&collection)?;
                let items: Vec<ListItem> = self
                    .store
                    .entities(Some(&collection))
                    .await?
                    .into_iter()
                    .filter(|e| !e.deleted)
                    .map(|e| ListItem {
                        key: e.key,
                        value: e.value,
                        updated_at: e.updated_at,
                        pending: e.pending,
                    })
                    .collect();
                Ok(json!(items))
            }
            Request::Status => {
                // A page may have been granted persistent storage since.
                self.refresh_persistent().await;
                self.status_json()
            }
            Request::Flush => {
                self.trigger(Trigger::Manual).await;
                self.status_json()
            }
            Request::DeadLetters => {
                let letters: Vec<DeadLetter> = self
                    .store
                    .dead_letters()
                    .await?
                    .into_iter()
                    .map(|d| {
                        let r = &d.record;
                        let s = |k: &str| r.get(k).and_then(Value::as_str).map(str::to_owned);
                        DeadLetter {
                            seq: d.seq,
                            kind: s("kind").unwrap_or_else(|| "mutation".into()),
                            collection: s("collection"),
                            key: s("key"),
                            method: s("method"),
                            url: s("url"),
                            sha256: s("sha256"),
                            reason: d.reason,
                            attempts: d.attempts,
                            dead_at: d.dead_at,
                        }
                    })
                    .collect();
                Ok(json!(letters))
            }
            Request::RetryDead { seq } => {
                let (new_seq, entity) =
                    self.store.requeue_dead(seq, now()).await?.ok_or_else(|| {
                        SwError::coded(codes::NOT_FOUND, format!("no dead letter {seq}"))
                    })?;
                self.update_counts(|c| {
                    c.pending += 1;
                    c.dead = c.dead.saturating_sub(1);
                });
                if entity.is_none() {
                    // A captured call or a blob upload: a blob's bytes count as pending again.
                    self.recount().await;
                }
                self.broadcast_status();
                if let Some((collection, key)) = entity {
                    self.broadcast_change(&collection, &key);
                } else {
                    // A captured request went back into the outbox.
                    self.reload_captured().await;
                }
                self.kick(Trigger::Manual);
                Ok(json!({ "seq": new_seq }))
            }
            Request::DiscardDead { seq } => {
                let Some(entity) = self.store.discard_dead(seq).await? else {
                    return Err(SwError::coded(
                        codes::NOT_FOUND,
                        format!("no dead letter {seq}"),
                    ));
                };
                self.update_counts(|c| c.dead = c.dead.saturating_sub(1));
                self.broadcast_status();
                if let Some((collection, key)) = entity {
                    self.broadcast_change(&collection, &key);
                }
                Ok(json!({ "discarded": seq }))
            }
            Request::Export {
                format,
                include_local_only,
                include_blobs,
            } => {
                let left_out = if include_local_only {
                    Vec::new()
                } else {
                    self.config.borrow().local_only.clone()
                };
                let (snap, text) = self.export(format, &left_out, include_blobs).await?;
                Ok(json!({
                    "format": format, "text": text, "exported_at": snap.exported_at,
                    "checksum": snap.checksum.value, "counts": snap.counts,
                }))
            }
            Request::Restore {
                text,
                dry_run,
                passphrase,
                key: with_key,
            } => {
                let unlock = Unlock {
                    passphrase: passphrase.as_deref(),
                    key: key(with_key)?,
                };
                let text = self.opened(text, unlock).await?;
                let report = self.restore(&text, dry_run).await;
                if !dry_run {
                    self.reload_captured().await;
                }
                report
            }
            Request::PageEvent { event } => {
                let trigger = match event {
                    PageEvent::Online => Trigger::Online,
                    PageEvent::Offline => Trigger::Offline,
                    PageEvent::Visible => Trigger::PageVisible,
                    PageEvent::Hidden | PageEvent::Pagehide => Trigger::PageEvent,
                };
                self.kick(trigger);
                if event == PageEvent::Visible {
                    self.spawn_backup(BackupTrigger::PageVisible);
                }
                self.status_json()
            }
            Request::Backup { manual: true } => match self.backup(BackupTrigger::Manual).await {
                Some(Ok(done)) => Ok(done),
                Some(Err(d)) => Err(SwError::Reported(d)),
                // A manual backup always runs one (after any already running).
                None => Err(SwError::coded(codes::INTERNAL, "the manual backup did not run")),
            },
            Request::ServerBackups { all_clients } => {
                let mut url = format!("{}/api/backups?limit=100", self.base_url());
                if !all_clients {
                    url.push_str("&client_id=");
                    url.push_str(self.client_id());
                }
                let text = self.fetch_text(&url).await?;
                serde_json::from_str::<Value>(&text).map_err(|e| {
                    SwError::coded(
                        codes::BAD_RESPONSE,
                        format!("GET {url} did not answer a backup list: {e}"),
                    )
                })
            }
            Request::CaptureCredentials { headers } => {
                if let Some((name, _)) = headers.iter().find(|(k, v)| {
                    !rangersync_shared::capture::is_header_name(k)
                        || !rangersync_shared::capture::is_header_value(v)
                }) {
                    return Err(SwError::coded(
                        codes::INVALID_CONFIG,
                        format!("captureCredentials gave a header that is not one: {name:?}"),
                    ));
                }
                *self.capture_credentials.borrow_mut() = headers
                    .into_iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v))
                    .collect();
                // A restored call that waited for them may go now.
                self.kick(Trigger::Manual);
                self.status_json()
            }
            Request::BackupKey {
                passphrase,
                key: with_key,
            } => {
                self.set_backup_key(passphrase, key(with_key)?).await?;
                // A backup that failed for want of the key may go now.
                self.spawn_backup(BackupTrigger::PageOpen);
                self.status_json()
            }
            Request::RestoreFromServer {
                id,
                dry_run,
                passphrase,
                key: with_key,
            } => {
                let unlock = Unlock {
                    passphrase: passphrase.as_deref(),
                    key: key(with_key)?,
                };
                let url = format!(
                    "{}/api/backups/{}",
                    self.base_url(),
                    String::from(js_sys::encode_uri_component(&id))
                );
                let text = self.fetch_text(&url).await?;
                let text = self.opened(text, unlock).await?;
                let report = self.restore(&text, dry_run).await;
                if !dry_run {
                    self.reload_captured().await;
                }
                report
            }
            Request::Backup { manual: false } => {
                self.spawn_backup(BackupTrigger::Timer);
                self.status_json()
            }
        }
    }

    /// `GET url` from the sync server: its body, or a typed error (`network`, `auth`,
    /// `not_found`, `config_error`, …).
    async fn fetch_text(&self, url: &str) -> Result<String, SwError> {
        if self.config.borrow().server_url.is_empty() {
            return Err(SwError::coded(
                codes::INVALID_CONFIG,
                "no serverUrl: there is no server to ask",
            ));
        }
        match self.get(url).await {
            rangersync_shared::classify::HttpOutcome::Response { status: 404, .. } => Err(
                SwError::coded(codes::NOT_FOUND, format!("GET {url} answered 404")),
            ),
            outcome => rangersync_shared::classify::classify_pull(outcome, url).map_err(
                |(code, message)| {
                    SwError::Reported(ErrorDetail {
                        code: code.into(),
                        message,
                    })
                },
            ),
        }
    }

    /// Start a backup if one is due, without waiting for it.
    pub(super) fn spawn_backup(self: &Rc<Self>, trigger: BackupTrigger) {
        let me = self.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let _ = me.backup(trigger).await;
        });
    }

    /// No sync server, only captured routes.
    fn capture_only(&self) -> bool {
        let c = self.config.borrow();
        c.server_url.is_empty() && !c.capture_routes.is_empty()
    }

    pub(super) fn status_json(&self) -> Result<Value, SwError> {
        serde_json::to_value(self.status())
            .map_err(|e| SwError::coded(codes::INTERNAL, e.to_string()))
    }
}

/// Validate one write and turn it into an outbox entry stamped `at`.
fn checked_entry(op: WriteOp, at: Millis) -> Result<NewEntry, SwError> {
    let (collection, key) = op.target();
    validate::validate_collection(collection)?;
    validate::validate_key(key)?;
    Ok(match op {
        WriteOp::Put {
            collection,
            key,
            value,
        } => {
            validate::validate_value(&value)?;
            NewEntry::Write {
                collection,
                key,
                op: Op::Put,
                value,
                updated_at: at,
            }
        }
        WriteOp::Delete { collection, key } => NewEntry::Write {
            collection,
            key,
            op: Op::Delete,
            value: Value::Null,
            updated_at: at,
        },
    })
}

/// The periodic sync's interval: the shorter of the flush's and the backups', so that a
/// periodic sync can bring a due backup too.
pub fn periodic_interval(flush: Option<u64>, exports: Option<u64>) -> Option<u64> {
    match (flush, exports) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
