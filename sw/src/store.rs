//! Typed operations on the stores of `schema.rs`. Every operation is one transaction; none
//! awaits anything but IndexedDB requests inside it (invariant 6).

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use js_sys::Array;
use rangersync_shared::backup::BackupFailure;
use rangersync_shared::messages::Config;
use rangersync_shared::outbox::{
    coalescable, Backoff, BlobUpload, CapturedRequest, CoalesceGuard, Item, QueuedEntry, RecordPlan,
};
use rangersync_shared::protocol::{Entity, Millis, Mutation, Op};
use rangersync_shared::requeue::{LocalOutbox, RequeuePlan};
use rangersync_shared::snapshot::{DeadLetterCopy, PendingRequest, Problem, SnapshotMeta};
use rangersync_shared::status::LastError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::IdbDatabase;

use crate::error::{Result, SwError};
use crate::idb::{issue, req, result_of, settle, Tx};
use crate::js::{from_js, to_js};
use crate::schema::{
    self, entity_key, meta, seq_key, BLOBS, BY_ENTITY, DEAD, ENTITIES, META, OUTBOX,
};

/// One outbox record as stored (flat, so the `by_entity` index sees `collection` and `key`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxRecord {
    pub seq: u64,
    /// `"mutation"` or `"request"`.
    pub kind: String,
    pub created_at: Millis,
    /// Failed attempts that count toward `max_attempts`.
    #[serde(default)]
    pub attempts: u32,
    /// Every time it was sent (whatever came of it); what a dead letter reports.
    #[serde(default)]
    pub tries: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<Op>,
    #[serde(default)]
    pub value: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<(String, String)>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Vec<u8>>,
    /// A restored captured call's secret headers, to be given by the page at replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redacted: Option<Vec<String>>,
    /// A blob upload's SHA-256 (its bytes are in the `blobs` store under it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// A blob upload's size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

impl OutboxRecord {
    fn new(seq: u64, entry: &NewEntry, now: Millis) -> Self {
        let mut r = Self {
            seq,
            kind: "mutation".into(),
            created_at: now,
            attempts: 0,
            tries: 0,
            collection: None,
            key: None,
            op: None,
            value: Value::Null,
            updated_at: None,
            method: None,
            url: None,
            headers: None,
            body: None,
            redacted: None,
            sha256: None,
            size: None,
        };
        match entry {
            NewEntry::Write {
                collection,
                key,
                op,
                value,
                updated_at,
            } => {
                r.collection = Some(collection.clone());
                r.key = Some(key.clone());
                r.op = Some(*op);
                r.value = if *op == Op::Delete {
                    Value::Null
                } else {
                    value.clone()
                };
                r.updated_at = Some(*updated_at);
            }
            NewEntry::Captured(c) => {
                r.kind = "request".into();
                r.method = Some(c.method.clone());
                r.url = Some(c.url.clone());
                r.headers = Some(c.headers.clone());
                r.body = Some(c.body.clone());
                r.redacted = (!c.redacted.is_empty()).then(|| c.redacted.clone());
            }
            NewEntry::Blob(b) => {
                r.kind = schema::KIND_BLOB.into();
                r.sha256 = Some(b.sha256.clone());
                r.size = Some(b.size);
            }
        }
        r
    }

    /// The machine's view of this record.
    pub fn to_entry(&self, client_id: &str) -> Result<QueuedEntry> {
        let item = match self.kind.as_str() {
            "mutation" => {
                let (Some(collection), Some(key), Some(op), Some(updated_at)) = (
                    self.collection.clone(),
                    self.key.clone(),
                    self.op,
                    self.updated_at,
                ) else {
                    return Err(SwError::Corrupt(format!(
                        "outbox mutation {} lacks a field",
                        self.seq
                    )));
                };
                Item::Mutation(Mutation {
                    client_id: client_id.to_owned(),
                    seq: self.seq,
                    collection,
                    key,
                    op,
                    value: self.value.clone(),
                    updated_at,
                })
            }
            "request" => {
                let (Some(method), Some(url)) = (self.method.clone(), self.url.clone()) else {
                    return Err(SwError::Corrupt(format!(
                        "outbox request {} lacks a field",
                        self.seq
                    )));
                };
                Item::Request(CapturedRequest {
                    method,
                    url,
                    headers: self.headers.clone().unwrap_or_default(),
                    body: self.body.clone().unwrap_or_default(),
                    redacted: self.redacted.clone().unwrap_or_default(),
                })
            }
            schema::KIND_BLOB => {
                let (Some(sha256), Some(size)) = (self.sha256.clone(), self.size) else {
                    return Err(SwError::Corrupt(format!(
                        "outbox blob upload {} lacks a field",
                        self.seq
                    )));
                };
                Item::Blob(BlobUpload { sha256, size })
            }
            other => {
                return Err(SwError::Corrupt(format!(
                    "outbox entry {} has kind {other:?}",
                    self.seq
                )))
            }
        };
        Ok(QueuedEntry {
            seq: self.seq,
            created_at: self.created_at,
            attempts: self.attempts,
            item,
        })
    }

    fn entity(&self) -> Option<(String, String)> {
        Some((self.collection.clone()?, self.key.clone()?))
    }
}

/// One entity of the local copy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityRecord {
    pub collection: String,
    pub key: String,
    #[serde(default)]
    pub value: Value,
    #[serde(default)]
    pub deleted: bool,
    pub updated_at: Millis,
    #[serde(default)]
    pub version: u64,
    #[serde(default)]
    pub pending: bool,
    /// The epoch of the full re-pull under way that has not brought this record yet
    /// (`rangersync_shared::resync`); any rewrite of the record clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unconfirmed: Option<u64>,
}

impl EntityRecord {
    /// The local copy of an entity with a write of it queued.
    fn pending_write(
        collection: &str,
        key: &str,
        op: Op,
        value: &Value,
        updated_at: Millis,
        version: u64,
    ) -> Self {
        Self {
            collection: collection.to_owned(),
            key: key.to_owned(),
            value: if op == Op::Delete {
                Value::Null
            } else {
                value.clone()
            },
            deleted: op == Op::Delete,
            updated_at,
            version,
            pending: true,
            unconfirmed: None,
        }
    }

    /// Whether this local copy is newer than a write stamped `updated_at` that is put back
    /// (a re-queued dead letter, a restored write): writes of it are still pending, or it is
    /// stamped later. It then stays, as the server's last-writer-wins rule keeps it there.
    fn newer_than(&self, updated_at: Millis) -> bool {
        self.pending || self.updated_at > updated_at
    }

    pub fn to_entity(&self) -> Entity {
        Entity {
            collection: self.collection.clone(),
            key: self.key.clone(),
            value: self.value.clone(),
            deleted: self.deleted,
            updated_at: self.updated_at,
            version: self.version,
        }
    }
}

/// One dead letter as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadRecord {
    pub seq: u64,
    pub reason: String,
    pub dead_at: Millis,
    #[serde(default)]
    pub attempts: u32,
    /// The outbox record (as JSON), or whatever could be read of a corrupt one.
    #[serde(default)]
    pub record: Value,
}

/// A write to commit.
#[derive(Debug, Clone, PartialEq)]
pub enum NewEntry {
    Write {
        collection: String,
        key: String,
        op: Op,
        value: Value,
        updated_at: Millis,
    },
    Captured(CapturedRequest),
    /// The upload of a blob already in the `blobs` store.
    Blob(BlobUpload),
}

impl NewEntry {
    /// About the bytes the entry adds to storage (its value as JSON text, or the captured
    /// request's body and headers): enough to tell a write that cannot fit from one that can.
    pub fn approximate_size(&self) -> usize {
        match self {
            Self::Write {
                collection,
                key,
                value,
                ..
            } => collection.len() + key.len() + serde_json::to_string(value).map_or(0, |t| t.len()),
            Self::Captured(request) => {
                request.url.len()
                    + request.body.len()
                    + request
                        .headers
                        .iter()
                        .map(|(name, value)| name.len() + value.len())
                        .sum::<usize>()
            }
            // The bytes were stored before the entry (`Store::put_blob`).
            Self::Blob(b) => b.sha256.len(),
        }
    }
}

/// What [`Store::record`] did.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Entities whose local copy changed (conflicts adopted, refused writes undone).
    pub changed: Vec<(String, String)>,
    /// Outbox entries removed (acknowledged or dead-lettered).
    pub removed: u64,
    /// Dead letters added.
    pub dead: u64,
}

/// An entity a group of writes touches: what its reads found.
struct EntityState {
    queued_req: web_sys::IdbRequest,
    current_req: web_sys::IdbRequest,
    /// Its seqs in the outbox (this transaction's included, as they are added).
    queued: Vec<u64>,
    version: u64,
}

/// What `meta` holds, read once at start.
#[derive(Debug, Clone, Default)]
pub struct MetaState {
    pub client_id: String,
    pub config: Config,
    pub last_saved_at: Option<Millis>,
    pub last_synced_at: Option<Millis>,
    /// The newest `server_time` heard (the write clock's floor).
    pub server_time: Option<Millis>,
    pub last_exported_at: Option<Millis>,
    pub last_backup_at: Option<Millis>,
    pub backup_failure: Option<BackupFailure>,
    /// The client id was created now: the database is new (or was cleared).
    pub created: bool,
    pub last_error: Option<LastError>,
    /// The persisted backoff of the last failed attempt.
    pub backoff: Option<Backoff>,
    /// Why the stored config could not be used (it is kept as it was): the engine reports
    /// `config_error` and sends nothing until a page sends a valid config.
    pub config_problem: Option<String>,
}

fn as_u64(v: &JsValue) -> Option<u64> {
    v.as_f64()
        .filter(|f| f.is_finite() && *f >= 0.0)
        .map(|f| f as u64)
}

fn as_millis(v: &JsValue) -> Option<Millis> {
    v.as_f64().filter(|f| f.is_finite()).map(|f| f as Millis)
}

fn keys_of(v: &JsValue) -> Vec<u64> {
    Array::from(v).iter().filter_map(|k| as_u64(&k)).collect()
}

/// The version of the stored `config` record: `{ "v": 2, "config": {…} }`. Version 1 (before
/// the field existed) was the bare `Config` object; it is migrated when read.
pub const CONFIG_SCHEMA_VERSION: u64 = 2;

/// What the `config` record of `meta` holds.
#[derive(Debug, PartialEq)]
enum StoredConfig {
    Absent,
    Current(Config),
    /// A version-1 record (a bare `Config`), to be rewritten as the current version.
    Legacy(Config),
    /// Undecodable, or written by a newer version: why.
    Unreadable(String),
}

impl StoredConfig {
    fn record(config: &Config) -> Value {
        serde_json::json!({ "v": CONFIG_SCHEMA_VERSION, "config": config })
    }

    fn read(value: Option<Value>) -> Self {
        let Some(value) = value else {
            return Self::Unreadable("the stored configuration is not a JSON value".into());
        };
        let decode = |v: Value| {
            serde_json::from_value::<Config>(v).map_err(|e| {
                format!("the stored configuration could not be read ({e}); it is kept as it was under meta \"config_unreadable\": send a valid config")
            })
        };
        match value.get("v").map(Value::as_u64) {
            None => match decode(value) {
                Ok(c) => Self::Legacy(c),
                Err(why) => Self::Unreadable(why),
            },
            Some(Some(CONFIG_SCHEMA_VERSION)) => {
                match decode(value.get("config").cloned().unwrap_or(Value::Null)) {
                    Ok(c) => Self::Current(c),
                    Err(why) => Self::Unreadable(why),
                }
            }
            Some(v) => Self::Unreadable(format!(
                "the stored configuration has schema version {} but this worker reads {CONFIG_SCHEMA_VERSION} (written by a newer rangersync?); it is kept under meta \"config_unreadable\": send a valid config",
                v.map_or_else(|| "?".to_owned(), |v| v.to_string())
            )),
        }
    }
}

/// Entities read per request by [`Store::export_contents`].
pub const EXPORT_PAGE: u32 = 1_000;

/// What [`Store::export_contents`] read.
#[derive(Debug, Default)]
pub struct ExportContents {
    pub entities: Vec<Entity>,
    pub outbox: Vec<Mutation>,
    pub requests: Vec<PendingRequest>,
    pub dead: Vec<DeadLetterCopy>,
    pub meta: SnapshotMeta,
    pub problems: Vec<Problem>,
}

/// The typed stores over one open database.
pub struct Store {
    db: IdbDatabase,
    /// The connection ended under us (`versionchange`, `close`): see [`Store::is_closed`].
    closed: Rc<Cell<bool>>,
}

impl Store {
    pub async fn open(name: &str) -> Result<Self> {
        let closed = Rc::new(Cell::new(false));
        Ok(Self {
            db: schema::open(name, &closed).await?,
            closed,
        })
    }

    pub fn close(&self) {
        self.closed.set(true);
        self.db.close();
    }

    /// Whether the connection is closed (by [`Store::close`], or under us: the database was
    /// deleted or upgraded by another connection, or the browser cleared the origin's
    /// storage). Every operation would fail with "The database connection is closing": the
    /// owner opens a new store.
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Read `meta`, creating the client id (once per profile) when absent.
    pub async fn init(&self, new_client_id: impl FnOnce() -> String) -> Result<MetaState> {
        let tx = Tx::new(&self.db, &[META], true)?;
        let m = tx.store(META)?;
        // Every read issued at once and awaited together (one round trip, not eleven): this
        // runs at every worker start, before the first event is handled.
        let read = |k: &str| issue(m.get(&k.into()));
        let reads = [
            read(meta::CLIENT_ID)?,
            read(meta::CONFIG)?,
            read(meta::LAST_SAVED_AT)?,
            read(meta::LAST_SYNCED_AT)?,
            read(meta::SERVER_TIME)?,
            read(meta::LAST_EXPORTED_AT)?,
            read(meta::LAST_BACKUP_AT)?,
            read(meta::BACKUP_FAILURE)?,
            read(meta::LAST_ERROR)?,
            read(meta::BACKOFF)?,
            read(meta::NOT_BEFORE)?,
        ];
        settle(&reads).await?;
        let [client_id, config, last_saved_at, last_synced_at, server_time, last_exported_at, last_backup_at, backup_failure, last_error, backoff, legacy_not_before] =
            reads.each_ref().map(result_of);
        let client_id = client_id.as_string();
        let last_saved_at = as_millis(&last_saved_at);
        let last_synced_at = as_millis(&last_synced_at);
        let server_time = as_millis(&server_time);
        let last_exported_at = as_millis(&last_exported_at);
        let last_backup_at = as_millis(&last_backup_at);
        let legacy_not_before = as_millis(&legacy_not_before);
        let created = client_id.is_none();
        let client_id = match client_id {
            Some(id) => id,
            None => {
                let id = new_client_id();
                req(m.put_with_key(&id.as_str().into(), &meta::CLIENT_ID.into())).await?;
                req(m.put_with_key(&1.0.into(), &meta::NEXT_SEQ.into())).await?;
                id
            }
        };
        let stored = if config.is_undefined() {
            StoredConfig::Absent
        } else {
            StoredConfig::read(from_js::<Value>(config.clone()).ok())
        };
        let (config, config_problem) = match stored {
            StoredConfig::Absent => (Config::default(), None),
            StoredConfig::Current(c) => (c, None),
            StoredConfig::Legacy(c) => {
                // Migrate in this transaction: the next reader sees the versioned record.
                req(m.put_with_key(&to_js(&StoredConfig::record(&c))?, &meta::CONFIG.into()))
                    .await?;
                (c, None)
            }
            StoredConfig::Unreadable(why) => {
                // Keep the record as it was, beside the one a page will write.
                req(m.put_with_key(&config, &meta::CONFIG_UNREADABLE.into())).await?;
                (Config::default(), Some(why))
            }
        };
        let backoff = if backoff.is_undefined() || backoff.is_null() {
            legacy_not_before.map(|at| Backoff {
                attempt: 0,
                retry_at: at,
                not_before: at,
                unreachable: false,
            })
        } else {
            from_js::<Backoff>(backoff).ok()
        };
        tx.commit().await?;
        let last_error = if last_error.is_undefined() || last_error.is_null() {
            None
        } else {
            from_js(last_error).ok()
        };
        let backup_failure = if backup_failure.is_undefined() || backup_failure.is_null() {
            None
        } else {
            from_js(backup_failure).ok()
        };
        Ok(MetaState {
            client_id,
            config,
            last_saved_at,
            last_synced_at,
            server_time,
            last_exported_at,
            last_backup_at,
            backup_failure,
            created,
            last_error,
            backoff,
            config_problem,
        })
    }

    /// Store a page's config as the current versioned record.
    pub async fn put_config(&self, config: &Config) -> Result<()> {
        self.put_meta(meta::CONFIG, &to_js(&StoredConfig::record(config))?)
            .await
    }

    /// Put one `meta` value.
    /// One `meta` record (`undefined` when absent).
    pub async fn get_meta(&self, key: &str) -> Result<JsValue> {
        let tx = Tx::new(&self.db, &[META], false)?;
        let value = req(tx.store(META)?.get(&key.into())).await?;
        tx.commit().await?;
        Ok(value)
    }

    pub async fn put_meta(&self, key: &str, value: &JsValue) -> Result<()> {
        let tx = Tx::new(&self.db, &[META], true)?;
        req(tx.store(META)?.put_with_key(value, &key.into())).await?;
        tx.commit().await
    }

    /// Put several `meta` values in one transaction.
    pub async fn put_metas(&self, entries: &[(&str, JsValue)]) -> Result<()> {
        let tx = Tx::new(&self.db, &[META], true)?;
        let m = tx.store(META)?;
        let requests = entries
            .iter()
            .map(|(key, value)| issue(m.put_with_key(value, &(*key).into())))
            .collect::<Result<Vec<_>>>()?;
        settle(&requests).await?;
        tx.commit().await
    }

    /// Commit writes in ONE strict transaction: allocate seqs from `next_seq` (in the same
    /// transaction, so a crash rolls both back), coalesce superseded queued entries that the
    /// `guard` allows (never across a captured request: the barrier is kept in `meta`), put the
    /// outbox entries, reflect them in `entities` (pending). Returns the seqs and how many
    /// queued entries were coalesced away.
    ///
    /// Two round trips whatever the number of writes: every read is issued at once and awaited
    /// together, then every write is issued and the commit awaited.
    pub async fn commit_writes(
        &self,
        entries: &[&NewEntry],
        now: Millis,
        guard: &CoalesceGuard,
        local_only: &[String],
    ) -> Result<(Vec<u64>, u64)> {
        let tx = Tx::new(&self.db, &[META, OUTBOX, ENTITIES], true)?;
        let written = Self::stage_writes(&tx, entries, now, guard, local_only).await?;
        tx.commit().await?;
        Ok(written)
    }

    /// The body of [`Store::commit_writes`], inside the caller's transaction (which covers
    /// `meta`, `outbox` and `entities`): it reads `next_seq` and the barrier there, so it sees
    /// whatever the transaction wrote before.
    ///
    /// A write to a `local_only` collection changes `entities` only: it never enters the
    /// outbox, so it is never pushed. The second number returned counts the writes that did not
    /// add to the outbox (coalesced away, or local-only).
    async fn stage_writes(
        tx: &Tx,
        entries: &[&NewEntry],
        now: Millis,
        guard: &CoalesceGuard,
        local_only: &[String],
    ) -> Result<(Vec<u64>, u64)> {
        let m = tx.store(META)?;
        let outbox = tx.store(OUTBOX)?;
        let entities = tx.store(ENTITIES)?;
        let by_entity = outbox.index(BY_ENTITY).map_err(|e| SwError::from_js(&e))?;

        // Reads: the seq counter, the capture barrier, and per entity written its queued
        // entries and its current record.
        let next_req = issue(m.get(&meta::NEXT_SEQ.into()))?;
        let barrier_req = issue(m.get(&meta::CAPTURE_BARRIER.into()))?;
        let mut reads = vec![next_req.clone(), barrier_req.clone()];
        let mut targets: BTreeMap<(&str, &str), EntityState> = BTreeMap::new();
        for entry in entries {
            if let NewEntry::Write {
                collection, key, ..
            } = entry
            {
                if targets.contains_key(&(collection.as_str(), key.as_str())) {
                    continue;
                }
                let ek = entity_key(collection, key);
                let queued = issue(by_entity.get_all_keys_with_key(&ek))?;
                let current = issue(entities.get(&ek))?;
                reads.push(queued.clone());
                reads.push(current.clone());
                targets.insert(
                    (collection.as_str(), key.as_str()),
                    EntityState {
                        queued_req: queued,
                        current_req: current,
                        queued: Vec::new(),
                        version: 0,
                    },
                );
            }
        }
        settle(&reads).await?;
        let mut next = as_u64(&result_of(&next_req)).unwrap_or(1).max(1);
        let barrier_before = as_u64(&result_of(&barrier_req)).unwrap_or(0);
        for state in targets.values_mut() {
            state.queued = keys_of(&result_of(&state.queued_req));
            let current = result_of(&state.current_req);
            if !current.is_undefined() {
                state.version = from_js::<EntityRecord>(current).map_or(0, |p| p.version);
            }
        }

        // Writes, in order; only the commit is awaited.
        let mut guard = guard.clone();
        guard.barrier = guard.barrier.max(barrier_before);
        let mut seqs = Vec::with_capacity(entries.len());
        let mut coalesced = 0u64;
        for entry in entries {
            let seq = next;
            next += 1;
            match entry {
                // No later write coalesces across a captured call or a blob upload (a write
                // that references the blob must reach the server after its bytes).
                NewEntry::Captured(_) | NewEntry::Blob(_) => guard.barrier = seq,
                NewEntry::Write {
                    collection,
                    key,
                    op,
                    value,
                    updated_at,
                } => {
                    let state = targets
                        .get_mut(&(collection.as_str(), key.as_str()))
                        .ok_or_else(|| SwError::coded("internal", "entity not read"))?;
                    if local_only.contains(collection) {
                        let mut ent = EntityRecord::pending_write(
                            collection,
                            key,
                            *op,
                            value,
                            *updated_at,
                            state.version,
                        );
                        ent.pending = false;
                        issue(entities.put(&to_js(&ent)?))?;
                        seqs.push(seq);
                        coalesced += 1;
                        continue;
                    }
                    for s in coalescable(&state.queued, &guard) {
                        issue(outbox.delete(&seq_key(s)))?;
                        state.queued.retain(|q| *q != s);
                        coalesced += 1;
                    }
                    // A later write of the same entity in this transaction may supersede it.
                    state.queued.push(seq);
                    let ent = EntityRecord::pending_write(
                        collection,
                        key,
                        *op,
                        value,
                        *updated_at,
                        state.version,
                    );
                    issue(entities.put(&to_js(&ent)?))?;
                }
            }
            issue(outbox.put(&to_js(&OutboxRecord::new(seq, entry, now))?))?;
            seqs.push(seq);
        }
        issue(m.put_with_key(&(next as f64).into(), &meta::NEXT_SEQ.into()))?;
        issue(m.put_with_key(&(now as f64).into(), &meta::LAST_SAVED_AT.into()))?;
        if guard.barrier > barrier_before {
            issue(m.put_with_key(
                &(guard.barrier as f64).into(),
                &meta::CAPTURE_BARRIER.into(),
            ))?;
        }
        Ok((seqs, coalesced))
    }

    /// What a restore's re-queue is planned against (`shared::requeue`), read in the
    /// transaction `tx` (which covers `meta`, `outbox` and `dead`).
    async fn read_local_outbox(tx: &Tx) -> Result<LocalOutbox> {
        let m = tx.store(META)?;
        let reads = [
            issue(m.get(&meta::CLIENT_ID.into()))?,
            issue(m.get(&meta::NEXT_SEQ.into()))?,
            issue(m.get(&meta::CAPTURE_BARRIER.into()))?,
            issue(tx.store(OUTBOX)?.get_all_keys())?,
            issue(tx.store(DEAD)?.get_all_keys())?,
        ];
        settle(&reads).await?;
        Ok(LocalOutbox {
            client_id: result_of(&reads[0]).as_string().unwrap_or_default(),
            next_seq: as_u64(&result_of(&reads[1])).unwrap_or(1).max(1),
            capture_barrier: as_u64(&result_of(&reads[2])).unwrap_or(0),
            outbox: keys_of(&result_of(&reads[3])).into_iter().collect(),
            dead: keys_of(&result_of(&reads[4])).into_iter().collect(),
        })
    }

    /// [`Store::read_local_outbox`] on its own (a dry run).
    pub async fn local_outbox(&self) -> Result<LocalOutbox> {
        let tx = Tx::new(&self.db, &[META, OUTBOX, DEAD], false)?;
        let local = Self::read_local_outbox(&tx).await?;
        tx.commit().await?;
        Ok(local)
    }

    /// A real restore, in ONE transaction (all of it or none of it): read the local outbox,
    /// `plan` the re-queue against it, put the snapshot's pending writes, captured requests
    /// and dead letters back at their own seqs (adopting the backup's client id when the plan
    /// says so), show each re-queued write in `entities` unless something newer is there,
    /// then commit `writes(shown)` as ordinary writes, where `shown` are the entities a
    /// re-queued write now shows (their seqs follow the plan's `next_seq`). Returns the plan,
    /// the seqs of the writes and how many queued entries they coalesced.
    pub async fn apply_restore<E>(
        &self,
        plan: impl FnOnce(&LocalOutbox) -> std::result::Result<RequeuePlan, E>,
        writes: impl FnOnce(&BTreeSet<(String, String)>) -> Vec<NewEntry>,
        now: Millis,
        guard: &CoalesceGuard,
        local_only: &[String],
    ) -> Result<std::result::Result<(RequeuePlan, Vec<u64>, u64), E>> {
        let tx = Tx::new(&self.db, &[META, OUTBOX, ENTITIES, DEAD], true)?;
        let local = Self::read_local_outbox(&tx).await?;
        let plan = match plan(&local) {
            Ok(plan) => plan,
            // Nothing was written: dropping the transaction ends it.
            Err(e) => return Ok(Err(e)),
        };
        let (m, outbox, entities, dead) = (
            tx.store(META)?,
            tx.store(OUTBOX)?,
            tx.store(ENTITIES)?,
            tx.store(DEAD)?,
        );
        // The entities of the re-queued writes: the last write of each, and what is there.
        let mut last_write: BTreeMap<(&str, &str), &Mutation> = BTreeMap::new();
        for w in &plan.mutations {
            last_write.insert((w.collection.as_str(), w.key.as_str()), w);
        }
        let current: Vec<web_sys::IdbRequest> = last_write
            .keys()
            .map(|(c, k)| issue(entities.get(&entity_key(c, k))))
            .collect::<Result<_>>()?;
        settle(&current).await?;
        let mut shown = BTreeSet::new();
        for (w, found) in last_write.values().zip(&current) {
            let found = result_of(found);
            let prev = if found.is_undefined() {
                None
            } else {
                from_js::<EntityRecord>(found).ok()
            };
            if prev.as_ref().is_some_and(|p| p.newer_than(w.updated_at)) {
                continue;
            }
            let e = EntityRecord::pending_write(
                &w.collection,
                &w.key,
                w.op,
                &w.value,
                w.updated_at,
                prev.map_or(0, |p| p.version),
            );
            issue(entities.put(&to_js(&e)?))?;
            shown.insert((w.collection.clone(), w.key.clone()));
        }
        for w in &plan.mutations {
            let entry = NewEntry::Write {
                collection: w.collection.clone(),
                key: w.key.clone(),
                op: w.op,
                value: w.value.clone(),
                updated_at: w.updated_at,
            };
            issue(outbox.put(&to_js(&OutboxRecord::new(w.seq, &entry, now))?))?;
        }
        for r in &plan.requests {
            let entry = NewEntry::Captured(CapturedRequest {
                method: r.method.clone(),
                url: r.url.clone(),
                headers: r.headers.clone(),
                body: r.body.clone(),
                redacted: r.redacted.clone(),
            });
            issue(outbox.put(&to_js(&OutboxRecord::new(r.seq, &entry, r.created_at))?))?;
        }
        for d in &plan.dead {
            let record = DeadRecord {
                seq: d.seq,
                reason: d.reason.clone(),
                dead_at: d.dead_at,
                attempts: d.attempts,
                record: d.record.clone(),
            };
            issue(dead.put(&to_js(&record)?))?;
        }
        if let Some(id) = &plan.adopt_client_id {
            issue(m.put_with_key(&id.into(), &meta::CLIENT_ID.into()))?;
        }
        issue(m.put_with_key(&(plan.next_seq as f64).into(), &meta::NEXT_SEQ.into()))?;
        if plan.capture_barrier > local.capture_barrier {
            issue(m.put_with_key(
                &(plan.capture_barrier as f64).into(),
                &meta::CAPTURE_BARRIER.into(),
            ))?;
        }
        let entries = writes(&shown);
        let (seqs, coalesced) = if entries.is_empty() {
            (Vec::new(), 0)
        } else {
            let refs: Vec<&NewEntry> = entries.iter().collect();
            Self::stage_writes(&tx, &refs, now, guard, local_only).await?
        };
        tx.commit().await?;
        Ok(Ok((plan, seqs, coalesced)))
    }

    /// The next `limit` entries after `after`, in seq order. Corrupt records are moved to
    /// `dead` (reason `corrupt record: …`) and reported, never returned.
    pub async fn load_batch(
        &self,
        after: u64,
        limit: usize,
        client_id: &str,
        now: Millis,
    ) -> Result<(Vec<QueuedEntry>, Vec<SwError>)> {
        let tx = Tx::new(&self.db, &[OUTBOX], false)?;
        let range = schema::seqs_after(after)?;
        let raw = req(tx
            .store(OUTBOX)?
            .get_all_with_key_and_limit(&range, limit.min(u32::MAX as usize) as u32))
        .await?;
        tx.commit().await?;
        let mut entries = Vec::new();
        let mut corrupt: Vec<(JsValue, u64, String, Value)> = Vec::new();
        for v in Array::from(&raw).iter() {
            let raw_key = js_sys::Reflect::get(&v, &"seq".into()).unwrap_or(JsValue::UNDEFINED);
            // Only a whole number ≥ 1 is usable as the dead letter's key; else a fresh seq.
            let seq = raw_key
                .as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 1.0 && *f <= 9_007_199_254_740_991.0)
                .map_or(0, |f| f as u64);
            match from_js::<OutboxRecord>(v.clone()).and_then(|r| r.to_entry(client_id)) {
                Ok(e) => entries.push(e),
                Err(e) => {
                    let json = from_js::<Value>(v).unwrap_or(Value::Null);
                    corrupt.push((raw_key, seq, e.to_string(), json));
                }
            }
        }
        let mut errors = Vec::new();
        if !corrupt.is_empty() {
            let tx = Tx::new(&self.db, &[META, OUTBOX, DEAD], true)?;
            let (m, outbox, dead) = (tx.store(META)?, tx.store(OUTBOX)?, tx.store(DEAD)?);
            let mut next = as_u64(&req(m.get(&meta::NEXT_SEQ.into())).await?)
                .unwrap_or(1)
                .max(1);
            let fresh_before = next;
            for (raw_key, seq, reason, record) in corrupt {
                let taken = seq > 0 && !req(dead.get(&seq_key(seq))).await?.is_undefined();
                let seq = if seq == 0 || taken {
                    next += 1;
                    next - 1
                } else {
                    seq
                };
                let d = DeadRecord {
                    seq,
                    reason: reason.clone(),
                    dead_at: now,
                    attempts: 0,
                    record,
                };
                req(dead.put(&to_js(&d)?)).await?;
                // Delete by the stored key itself (it may not even be an integer).
                req(outbox.delete(&raw_key)).await?;
                errors.push(SwError::Corrupt(reason));
            }
            if next != fresh_before {
                req(m.put_with_key(&(next as f64).into(), &meta::NEXT_SEQ.into())).await?;
            }
            tx.commit().await?;
        }
        Ok((entries, errors))
    }

    /// Write the result of one attempt in ONE transaction: three round trips whatever the batch
    /// size (read the records, write the outcome and read what is left of each entity, update
    /// the entities). Returns what changed, for the counts and the pages.
    ///
    /// A dead-lettered mutation leaves its entity showing the server's view: an entity the
    /// server never had is removed; otherwise the pull cursor is reset, so the next pull
    /// brings the server's value back (a full pull: dead letters are rare).
    pub async fn record(
        &self,
        plan: &RecordPlan,
        now: Millis,
        last_synced_at: Option<Millis>,
        last_error: Option<&LastError>,
    ) -> Result<Recorded> {
        let tx = Tx::new(&self.db, &[META, OUTBOX, ENTITIES, DEAD], true)?;
        let (m, outbox, entities, dead) = (
            tx.store(META)?,
            tx.store(OUTBOX)?,
            tx.store(ENTITIES)?,
            tx.store(DEAD)?,
        );
        let removed: BTreeSet<u64> = plan.removed().collect();

        // 1. The records the plan touches.
        let mut records: BTreeMap<u64, OutboxRecord> = BTreeMap::new();
        if let Some((lo, hi)) = plan.remove_range {
            let all = issue(outbox.get_all_with_key(&schema::seq_range(lo, hi)?))?;
            settle(std::slice::from_ref(&all)).await?;
            for v in Array::from(&result_of(&all)).iter() {
                if let Ok(r) = from_js::<OutboxRecord>(v) {
                    records.insert(r.seq, r);
                }
            }
        } else {
            let wanted: BTreeSet<u64> = removed
                .iter()
                .chain(plan.bump_attempts.iter())
                .chain(plan.tried.iter())
                .copied()
                .collect();
            let reads = wanted
                .iter()
                .map(|s| issue(outbox.get(&seq_key(*s))))
                .collect::<Result<Vec<_>>>()?;
            settle(&reads).await?;
            for r in &reads {
                let v = result_of(r);
                if !v.is_undefined() {
                    if let Ok(r) = from_js::<OutboxRecord>(v) {
                        records.insert(r.seq, r);
                    }
                }
            }
        }
        // Everything in a removed range goes; otherwise only the removed seqs still there.
        let removed_count = if plan.remove_range.is_some() {
            records.len()
        } else {
            removed.iter().filter(|s| records.contains_key(s)).count()
        } as u64;

        // 2. Dead letters, removals, attempt counts; then what is left of each entity.
        let tried: BTreeSet<u64> = plan.tried.iter().copied().collect();
        let mut dead_entities: BTreeSet<(String, String)> = BTreeSet::new();
        for (seq, reason) in &plan.dead {
            let record = records.get(seq);
            if let Some(ent) = record.and_then(OutboxRecord::entity) {
                dead_entities.insert(ent);
            }
            // Every delivery try, the one that ended it included.
            let attempts =
                record.map_or(0, |r| r.tries.max(r.attempts)) + u32::from(tried.contains(seq));
            let d = DeadRecord {
                seq: *seq,
                reason: reason.clone(),
                dead_at: now,
                attempts,
                record: record
                    .and_then(|r| serde_json::to_value(r).ok())
                    .unwrap_or(Value::Null),
            };
            issue(dead.put(&to_js(&d)?))?;
        }
        if let Some((lo, hi)) = plan.remove_range {
            issue(outbox.delete(&schema::seq_range(lo, hi)?))?;
        } else {
            for s in &removed {
                issue(outbox.delete(&seq_key(*s)))?;
            }
        }
        let bumped: BTreeSet<u64> = plan.bump_attempts.iter().copied().collect();
        for s in bumped.union(&tried) {
            if removed.contains(s) {
                continue;
            }
            if let Some(r) = records.get(s) {
                let mut r = r.clone();
                if bumped.contains(s) {
                    r.attempts = r.attempts.saturating_add(1);
                }
                if tried.contains(s) {
                    r.tries = r.tries.max(r.attempts).saturating_add(1);
                }
                issue(outbox.put(&to_js(&r)?))?;
            }
        }
        // Entities: clear `pending` when no entry of theirs is left; take conflicts' current.
        let versions: BTreeMap<u64, u64> = plan.applied.iter().copied().collect();
        let mut touched: BTreeMap<(String, String), Option<u64>> = BTreeMap::new();
        for s in &removed {
            if let Some(ent) = records.get(s).and_then(OutboxRecord::entity) {
                let v = versions.get(s).copied();
                let slot = touched.entry(ent).or_insert(None);
                if v.is_some() {
                    *slot = v;
                }
            }
        }
        let adopt: BTreeMap<(String, String), _> = plan
            .adopt
            .iter()
            .map(|(c, k, cur)| ((c.clone(), k.clone()), cur.clone()))
            .collect();
        for ent in adopt.keys() {
            touched.entry(ent.clone()).or_insert(None);
        }
        let index = outbox.index(BY_ENTITY).map_err(|e| SwError::from_js(&e))?;
        let mut lookups = Vec::with_capacity(touched.len());
        let mut reads = Vec::with_capacity(touched.len() * 2);
        for ((c, k), version) in touched {
            let key = entity_key(&c, &k);
            // Issued after the removals above, so they see the outbox without them.
            let left = issue(index.count_with_key(&key))?;
            let current = issue(entities.get(&key))?;
            reads.push(left.clone());
            reads.push(current.clone());
            lookups.push((c, k, key, version, left, current));
        }
        settle(&reads).await?;

        // 3. The entities.
        let mut changed = Vec::new();
        let mut reset_cursor = false;
        for (c, k, key, version, left, current) in lookups {
            let refused = version.is_none()
                && dead_entities.contains(&(c.clone(), k.clone()))
                && !adopt.contains_key(&(c.clone(), k.clone()));
            let remaining = as_u64(&result_of(&left)).unwrap_or(0);
            let prev = result_of(&current);
            let prev = if prev.is_undefined() {
                None
            } else {
                from_js::<EntityRecord>(prev).ok()
            };
            let next = match (adopt.get(&(c.clone(), k.clone())), prev) {
                (Some(cur), _) if remaining == 0 => {
                    changed.push((c.clone(), k.clone()));
                    Some(EntityRecord {
                        collection: c,
                        key: k,
                        value: cur.value.clone(),
                        deleted: cur.deleted,
                        updated_at: cur.updated_at,
                        version: cur.version,
                        pending: false,
                        unconfirmed: None,
                    })
                }
                (_, Some(e)) if refused && remaining == 0 && e.version == 0 => {
                    // The server never had it: the refused value goes.
                    issue(entities.delete(&key))?;
                    changed.push((c, k));
                    None
                }
                (_, Some(mut e)) => {
                    if refused && remaining == 0 {
                        reset_cursor = true;
                    }
                    e.pending = remaining > 0;
                    if let Some(v) = version {
                        e.version = v;
                    }
                    Some(e)
                }
                (_, None) => None,
            };
            if let Some(e) = next {
                issue(entities.put(&to_js(&e)?))?;
            }
        }
        if let Some(t) = last_synced_at {
            issue(m.put_with_key(&(t as f64).into(), &meta::LAST_SYNCED_AT.into()))?;
        }
        if let Some(t) = plan.server_time {
            issue(m.put_with_key(&(t as f64).into(), &meta::SERVER_TIME.into()))?;
        }
        match last_error {
            Some(e) => issue(m.put_with_key(&to_js(e)?, &meta::LAST_ERROR.into()))?,
            None => issue(m.delete(&meta::LAST_ERROR.into()))?,
        };
        match &plan.backoff {
            Some(b) => issue(m.put_with_key(&to_js(b)?, &meta::BACKOFF.into()))?,
            None => issue(m.delete(&meta::BACKOFF.into()))?,
        };
        issue(m.delete(&meta::NOT_BEFORE.into()))?;
        if reset_cursor {
            issue(m.delete(&meta::CURSOR.into()))?;
        }
        tx.commit().await?;
        Ok(Recorded {
            changed,
            removed: removed_count,
            dead: plan.dead.len() as u64,
        })
    }

    /// Take server changes into `entities`, except entities with pending local writes. The
    /// cursor is kept only when no change was skipped: a skipped change is fetched again by the
    /// next pull (when its entity may have nothing pending any more). Returns the entities that
    /// changed and whether something was skipped.
    pub async fn apply_pull(
        &self,
        changes: &[Entity],
        cursor: &str,
    ) -> Result<(Vec<(String, String)>, bool)> {
        let tx = Tx::new(&self.db, &[META, ENTITIES], true)?;
        let (m, entities) = (tx.store(META)?, tx.store(ENTITIES)?);
        let reads = changes
            .iter()
            .map(|ch| issue(entities.get(&entity_key(&ch.collection, &ch.key))))
            .collect::<Result<Vec<_>>>()?;
        settle(&reads).await?;
        let mut changed = Vec::new();
        let mut skipped = false;
        for (ch, read) in changes.iter().zip(&reads) {
            let prev = result_of(read);
            let prev = if prev.is_undefined() {
                None
            } else {
                from_js::<EntityRecord>(prev).ok()
            };
            if prev.as_ref().is_some_and(|p| p.pending) {
                skipped = true;
                continue;
            }
            let same = prev.as_ref().is_some_and(|p| {
                p.version == ch.version && p.value == ch.value && p.deleted == ch.deleted
            });
            // A record a re-pull has not confirmed yet is written even unchanged: its mark goes.
            if same && prev.as_ref().is_some_and(|p| p.unconfirmed.is_none()) {
                continue;
            }
            let e = EntityRecord {
                collection: ch.collection.clone(),
                key: ch.key.clone(),
                value: ch.value.clone(),
                deleted: ch.deleted,
                updated_at: ch.updated_at,
                version: ch.version,
                pending: false,
                unconfirmed: None,
            };
            issue(entities.put(&to_js(&e)?))?;
            if !same {
                changed.push((ch.collection.clone(), ch.key.clone()));
            }
        }
        if !skipped {
            issue(m.put_with_key(&cursor.into(), &meta::CURSOR.into()))?;
        }
        tx.commit().await?;
        Ok((changed, skipped))
    }

    /// Everything a snapshot holds, read in ONE readonly transaction (a consistent view):
    /// entities page by page ([`EXPORT_PAGE`] records per request, each page turned into
    /// `Entity`s before the next is read, so the JS copy of the whole store never exists next
    /// to the Rust one), the outbox split into mutations and captured requests, the dead
    /// letters, the meta. A record that cannot be read is named in `problems`, never skipped
    /// silently.
    pub async fn export_contents(&self, client_id: &str) -> Result<ExportContents> {
        let tx = Tx::new(&self.db, &[META, ENTITIES, OUTBOX, DEAD], false)?;
        let mut out = ExportContents::default();
        for_each_entity(&tx.store(ENTITIES)?, |raw| {
            let collection = js_sys::Reflect::get(&raw, &"collection".into()).ok();
            let key = js_sys::Reflect::get(&raw, &"key".into()).ok();
            match from_js::<EntityRecord>(raw) {
                Ok(r) => out.entities.push(r.to_entity()),
                Err(e) => out.problems.push(Problem {
                    store: ENTITIES.into(),
                    key: format!(
                        "[{:?},{:?}]",
                        collection.and_then(|c| c.as_string()).unwrap_or_default(),
                        key.and_then(|k| k.as_string()).unwrap_or_default()
                    ),
                    reason: e.to_string(),
                }),
            }
            Ok(())
        })
        .await?;
        let outbox = Array::from(&req(tx.store(OUTBOX)?.get_all()).await?);
        for raw in outbox.iter() {
            let seq = js_sys::Reflect::get(&raw, &"seq".into())
                .ok()
                .and_then(|s| as_u64(&s));
            let entry = from_js::<OutboxRecord>(raw).and_then(|r| {
                let entry = r.to_entry(client_id)?;
                Ok((r, entry))
            });
            match entry {
                Ok((
                    _,
                    QueuedEntry {
                        item: Item::Mutation(m),
                        ..
                    },
                )) => out.outbox.push(m),
                Ok((
                    r,
                    QueuedEntry {
                        item: Item::Request(c),
                        ..
                    },
                )) => {
                    out.requests.push(PendingRequest {
                        seq: r.seq,
                        created_at: r.created_at,
                        method: c.method,
                        url: c.url,
                        headers: c.headers,
                        body: c.body,
                        redacted: Vec::new(),
                    });
                }
                // A snapshot holds blob references (in the entities), not the uploads.
                Ok((
                    _,
                    QueuedEntry {
                        item: Item::Blob(_),
                        ..
                    },
                )) => {}
                Err(e) => out.problems.push(Problem {
                    store: OUTBOX.into(),
                    key: seq.map_or_else(|| "?".into(), |s| s.to_string()),
                    reason: e.to_string(),
                }),
            }
        }
        let dead = Array::from(&req(tx.store(DEAD)?.get_all()).await?);
        for raw in dead.iter() {
            let seq = js_sys::Reflect::get(&raw, &"seq".into())
                .ok()
                .and_then(|s| as_u64(&s));
            match from_js::<DeadRecord>(raw) {
                Ok(d) => out.dead.push(DeadLetterCopy {
                    seq: d.seq,
                    reason: d.reason,
                    dead_at: d.dead_at,
                    attempts: d.attempts,
                    record: d.record,
                    redacted: Vec::new(),
                }),
                Err(e) => out.problems.push(Problem {
                    store: DEAD.into(),
                    key: seq.map_or_else(|| "?".into(), |s| s.to_string()),
                    reason: e.to_string(),
                }),
            }
        }
        let m = tx.store(META)?;
        let next_seq = as_u64(&req(m.get(&meta::NEXT_SEQ.into())).await?).unwrap_or(1);
        let cursor = req(m.get(&meta::CURSOR.into())).await?;
        let last_synced_at = as_millis(&req(m.get(&meta::LAST_SYNCED_AT.into())).await?);
        tx.commit().await?;
        out.meta = SnapshotMeta {
            next_seq,
            cursor: cursor
                .as_string()
                .or_else(|| cursor.as_f64().map(|f| format!("{f}")))
                .unwrap_or_default(),
            last_synced_at,
        };
        Ok(out)
    }

    /// The stored pull cursor, and the epoch of the full re-pull under way, if any.
    pub async fn pull_position(&self) -> Result<(String, Option<u64>)> {
        let tx = Tx::new(&self.db, &[META], false)?;
        let m = tx.store(META)?;
        let cursor = req(m.get(&meta::CURSOR.into())).await?;
        let resync = req(m.get(&meta::RESYNC.into())).await?;
        tx.commit().await?;
        Ok((cursor.as_string().unwrap_or_default(), as_u64(&resync)))
    }

    /// Start a full re-pull (`rangersync_shared::resync`): every entity record with no write
    /// waiting, but those of `local_only` collections, is marked unconfirmed by the new epoch, the cursor goes back
    /// to the start and the epoch is stored, in one transaction; returns the epoch.
    pub async fn begin_resync(&self, now: Millis, local_only: &[String]) -> Result<u64> {
        let tx = Tx::new(&self.db, &[META, ENTITIES], true)?;
        let m = tx.store(META)?;
        let previous = as_u64(&req(m.get(&meta::RESYNC.into())).await?).unwrap_or(0);
        let epoch = rangersync_shared::resync::new_epoch(now, previous);
        let entities = tx.store(ENTITIES)?;
        for_each_entity(&entities, |raw| {
            // A record that cannot be read is left as it is (and named by an export).
            let Ok(mut r) = from_js::<EntityRecord>(raw) else {
                return Ok(());
            };
            // A record with a write waiting is never dropped: it is not marked, so its
            // acknowledgement leaves nothing to drop either.
            if !r.pending && rangersync_shared::resync::marked_at_start(&r.collection, local_only) {
                r.unconfirmed = Some(epoch);
                issue(entities.put(&to_js(&r)?))?;
            }
            Ok(())
        })
        .await?;
        issue(m.put_with_key(&JsValue::from_f64(epoch as f64), &meta::RESYNC.into()))?;
        issue(m.put_with_key(&"".into(), &meta::CURSOR.into()))?;
        tx.commit().await?;
        Ok(epoch)
    }

    /// End the full re-pull of `epoch` after its last page: drop every local entity record
    /// still marked by it that no write waits for (the server no longer holds it), in one
    /// transaction with forgetting the epoch. Returns the dropped entities.
    pub async fn finish_resync(&self, epoch: u64) -> Result<Vec<(String, String)>> {
        let tx = Tx::new(&self.db, &[META, ENTITIES], true)?;
        let entities = tx.store(ENTITIES)?;
        let mut dropped = Vec::new();
        for_each_entity(&entities, |raw| {
            // A record that cannot be read is left for the export to name.
            let Ok(r) = from_js::<EntityRecord>(raw) else {
                return Ok(());
            };
            if rangersync_shared::resync::dropped_at_end(r.pending, r.unconfirmed, epoch) {
                issue(entities.delete(&entity_key(&r.collection, &r.key)))?;
                dropped.push((r.collection, r.key));
            }
            Ok(())
        })
        .await?;
        issue(tx.store(META)?.delete(&meta::RESYNC.into()))?;
        tx.commit().await?;
        Ok(dropped)
    }

    /// `(outbox entries, dead letters)`.
    /// Entries in the outbox, dead letters, and the bytes of the blob uploads waiting (read
    /// through the `by_kind` index: the mutations are not read).
    pub async fn counts(&self) -> Result<(u64, u64, u64)> {
        let tx = Tx::new(&self.db, &[OUTBOX, DEAD], false)?;
        let outbox = tx.store(OUTBOX)?;
        let index = outbox
            .index(schema::BY_KIND)
            .map_err(|e| SwError::from_js(&e))?;
        // Issued at once, awaited together (it runs at every worker start).
        let reads = [
            issue(outbox.count())?,
            issue(tx.store(DEAD)?.count())?,
            issue(index.get_all_with_key(&schema::KIND_BLOB.into()))?,
        ];
        settle(&reads).await?;
        let [p, d, blobs] = reads.each_ref().map(result_of);
        tx.commit().await?;
        let blob_bytes = Array::from(&blobs)
            .iter()
            .filter_map(|v| from_js::<OutboxRecord>(v).ok())
            .filter_map(|r| r.size)
            .sum();
        Ok((as_u64(&p).unwrap_or(0), as_u64(&d).unwrap_or(0), blob_bytes))
    }

    /// Keep a blob's bytes under its SHA-256 (the same hash is the same bytes: one already
    /// there is kept as it is).
    pub async fn put_blob(
        &self,
        sha256: &str,
        blob: &web_sys::Blob,
        content_type: &str,
        now: Millis,
    ) -> Result<()> {
        let tx = Tx::new(&self.db, &[BLOBS], true)?;
        let store = tx.store(BLOBS)?;
        let there = req(store.count_with_key(&sha256.into())).await?;
        if as_u64(&there).unwrap_or(0) == 0 {
            let record = js_sys::Object::new();
            for (name, value) in [
                ("sha256", JsValue::from_str(sha256)),
                ("blob", blob.into()),
                ("size", JsValue::from_f64(blob.size())),
                ("type", JsValue::from_str(content_type)),
                ("stored_at", JsValue::from_f64(now as f64)),
            ] {
                let _ = js_sys::Reflect::set(&record, &name.into(), &value);
            }
            req(store.put(&record)).await?;
        }
        tx.commit().await
    }

    /// A blob's bytes, when this device holds them (a record that is not a `Blob` is corrupt).
    pub async fn get_blob(&self, sha256: &str) -> Result<Option<web_sys::Blob>> {
        let tx = Tx::new(&self.db, &[BLOBS], false)?;
        let v = req(tx.store(BLOBS)?.get(&sha256.into())).await?;
        tx.commit().await?;
        if v.is_undefined() {
            return Ok(None);
        }
        js_sys::Reflect::get(&v, &"blob".into())
            .ok()
            .and_then(|b| b.dyn_into::<web_sys::Blob>().ok())
            .map(Some)
            .ok_or_else(|| SwError::Corrupt(format!("blob {sha256} holds no Blob")))
    }

    pub async fn get_entity(&self, collection: &str, key: &str) -> Result<Option<EntityRecord>> {
        let tx = Tx::new(&self.db, &[ENTITIES], false)?;
        let v = req(tx.store(ENTITIES)?.get(&entity_key(collection, key))).await?;
        tx.commit().await?;
        if v.is_undefined() {
            Ok(None)
        } else {
            from_js(v).map(Some)
        }
    }

    /// Entities of one collection (or all), skipping corrupt ones.
    pub async fn entities(&self, collection: Option<&str>) -> Result<Vec<EntityRecord>> {
        let tx = Tx::new(&self.db, &[ENTITIES], false)?;
        let store = tx.store(ENTITIES)?;
        let raw = match collection {
            Some(c) => req(store.get_all_with_key(&schema::collection_range(c)?)).await?,
            None => req(store.get_all()).await?,
        };
        tx.commit().await?;
        Ok(Array::from(&raw)
            .iter()
            .filter_map(|v| from_js(v).ok())
            .collect())
    }

    pub async fn dead_letters(&self) -> Result<Vec<DeadRecord>> {
        let tx = Tx::new(&self.db, &[DEAD], false)?;
        let raw = req(tx.store(DEAD)?.get_all()).await?;
        tx.commit().await?;
        Ok(Array::from(&raw)
            .iter()
            .filter_map(|v| from_js(v).ok())
            .collect())
    }

    /// Put a dead letter back into the outbox under a NEW seq (the server may remember the
    /// old one as rejected). Returns the new seq and the letter's entity, or `None` when there
    /// is no such letter.
    ///
    /// The local copy shows the letter's write again only when nothing newer is there: an
    /// entity with writes still pending, or stamped later than the letter, keeps its newer
    /// state (the re-sent write keeps its old `updated_at`, so the server's last-writer-wins
    /// rule does not let it overwrite the newer one there either).
    pub async fn requeue_dead(
        &self,
        seq: u64,
        now: Millis,
    ) -> Result<Option<(u64, Option<(String, String)>)>> {
        let tx = Tx::new(&self.db, &[META, OUTBOX, DEAD, ENTITIES], true)?;
        let (m, outbox, dead, entities) = (
            tx.store(META)?,
            tx.store(OUTBOX)?,
            tx.store(DEAD)?,
            tx.store(ENTITIES)?,
        );
        let v = req(dead.get(&seq_key(seq))).await?;
        if v.is_undefined() {
            return Ok(None);
        }
        let d: DeadRecord = from_js(v)?;
        let mut r: OutboxRecord = serde_json::from_value(d.record)
            .map_err(|e| SwError::Corrupt(format!("dead letter {seq}: {e}")))?;
        let next = as_u64(&req(m.get(&meta::NEXT_SEQ.into())).await?)
            .unwrap_or(1)
            .max(1);
        r.seq = next;
        r.attempts = 0;
        r.tries = 0;
        r.created_at = now;
        req(outbox.put(&to_js(&r)?)).await?;
        req(dead.delete(&seq_key(seq))).await?;
        if r.kind == schema::KIND_REQUEST || r.kind == schema::KIND_BLOB {
            req(m.put_with_key(&(next as f64).into(), &meta::CAPTURE_BARRIER.into())).await?;
        }
        let entity = r.entity();
        if let (Some((c, k)), Some(op)) = (r.entity(), r.op) {
            let prev = req(entities.get(&entity_key(&c, &k))).await?;
            let prev = if prev.is_undefined() {
                None
            } else {
                from_js::<EntityRecord>(prev).ok()
            };
            let stamp = r.updated_at.unwrap_or(now);
            // The local copy shows the write again (a refused one was undone), unless newer.
            if !prev.as_ref().is_some_and(|p| p.newer_than(stamp)) {
                let version = prev.as_ref().map_or(0, |p| p.version);
                let e = EntityRecord::pending_write(&c, &k, op, &r.value, stamp, version);
                req(entities.put(&to_js(&e)?)).await?;
            }
        }
        req(m.put_with_key(&((next + 1) as f64).into(), &meta::NEXT_SEQ.into())).await?;
        tx.commit().await?;
        Ok(Some((next, entity)))
    }

    /// The captured requests waiting in the outbox: `(seq, url)`, through the `by_kind` index
    /// (the mutations are not read).
    pub async fn captured_requests(&self) -> Result<Vec<(u64, String)>> {
        let tx = Tx::new(&self.db, &[OUTBOX], false)?;
        let index = tx
            .store(OUTBOX)?
            .index(schema::BY_KIND)
            .map_err(|e| SwError::from_js(&e))?;
        let all = req(index.get_all_with_key(&schema::KIND_REQUEST.into())).await?;
        Ok(Array::from(&all)
            .iter()
            .filter_map(|v| from_js::<OutboxRecord>(v).ok())
            .filter_map(|r| Some((r.seq, r.url?)))
            .collect())
    }

    /// Forget the dead letters `seqs` (those a stored backup holds, see
    /// `rangersync_shared::backup::dead_letters_let_go`) in one transaction. Returns how many
    /// were there, with their entities.
    pub async fn remove_dead(&self, seqs: &[u64]) -> Result<(u64, Vec<(String, String)>)> {
        let tx = Tx::new(&self.db, &[DEAD], true)?;
        let store = tx.store(DEAD)?;
        let mut removed = 0;
        let mut entities = Vec::new();
        for &seq in seqs {
            let v = req(store.get(&seq_key(seq))).await?;
            if v.is_undefined() {
                continue;
            }
            if let Some(entity) = from_js::<DeadRecord>(v)
                .ok()
                .and_then(|d| serde_json::from_value::<OutboxRecord>(d.record).ok())
                .and_then(|r| r.entity())
            {
                entities.push(entity);
            }
            issue(store.delete(&seq_key(seq)))?;
            removed += 1;
        }
        tx.commit().await?;
        Ok((removed, entities))
    }

    /// Forget a dead letter. Returns its entity (`None` inside for a captured request), or
    /// `None` when there is no such letter.
    pub async fn discard_dead(&self, seq: u64) -> Result<Option<Option<(String, String)>>> {
        let tx = Tx::new(&self.db, &[DEAD], true)?;
        let store = tx.store(DEAD)?;
        let v = req(store.get(&seq_key(seq))).await?;
        if v.is_undefined() {
            return Ok(None);
        }
        let entity = from_js::<DeadRecord>(v)
            .ok()
            .and_then(|d| serde_json::from_value::<OutboxRecord>(d.record).ok())
            .and_then(|r| r.entity());
        req(store.delete(&seq_key(seq))).await?;
        tx.commit().await?;
        Ok(Some(entity))
    }
}

/// Every record of the entities store in key order, read [`EXPORT_PAGE`] at a time (each
/// page handed to `each` before the next is read, in the caller's transaction): the walk over
/// the whole store that an export and a re-pull's start and end share. The key to go on from
/// is read off the raw record, so an unreadable one never stops the walk.
async fn for_each_entity(
    entities: &web_sys::IdbObjectStore,
    mut each: impl FnMut(JsValue) -> Result<()>,
) -> Result<()> {
    let mut after: Option<JsValue> = None;
    loop {
        let range = match &after {
            None => JsValue::UNDEFINED,
            Some(key) => web_sys::IdbKeyRange::lower_bound_with_open(key, true)
                .map_err(|e| SwError::from_js(&e))?
                .into(),
        };
        let page =
            Array::from(&req(entities.get_all_with_key_and_limit(&range, EXPORT_PAGE)).await?);
        let n = page.length();
        for raw in page.iter() {
            let field =
                |name: &str| js_sys::Reflect::get(&raw, &name.into()).unwrap_or(JsValue::UNDEFINED);
            after = Some(Array::of2(&field("collection"), &field("key")).into());
            each(raw)?;
        }
        if n < EXPORT_PAGE {
            return Ok(());
        }
    }
}

#[cfg(all(test, target_arch = "wasm32"))]
mod tests {
    use super::*;
    use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

    wasm_bindgen_test_configure!(run_in_browser);

    /// Every write the page is told "saved" went through a readwrite transaction of the store:
    /// it must be a strict one (flushed to disk before `complete`), not the browser's default.
    #[wasm_bindgen_test]
    async fn readwrite_transactions_are_strict_and_readonly_ones_are_not() {
        let store = Store::open("durability-check").await.expect("opens");
        let write = Tx::new(&store.db, &[META, OUTBOX, ENTITIES], true).expect("a readwrite tx");
        assert_eq!(write.durability().as_deref(), Some("strict"));
        write.commit().await.expect("commits");
        let read = Tx::new(&store.db, &[META], false).expect("a readonly tx");
        assert_eq!(read.durability().as_deref(), Some("default"));
        read.commit().await.expect("ends");
    }
}
