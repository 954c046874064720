//! The IndexedDB schema, and the only module that knows it: database name and version,
//! stores, key paths, indexes, key encodings, and the upgrade function.
//!
//! | store       | key                           | value                                               |
//! |-------------|-------------------------------|-----------------------------------------------------|
//! | `meta`      | out-of-line string            | `client_id`, `next_seq`, `cursor`, `config` (`{v, config}`), `last_*`, `backoff`, `backup_failure`, `capture_barrier` |
//! | `outbox`    | `seq` (a JS number, never BigInt) | a mutation or a captured request, `attempts`, `created_at`; indexes `by_entity` on `[collection, key]`, `by_kind` on `kind` |
//! | `entities`  | `[collection, key]`           | `value`, `deleted`, `updated_at`, `version`, `pending` |
//! | `dead`      | `seq`                         | the entry, `reason`, `dead_at`, `attempts`          |
//! | `snapshots` | `exported_at`                 | scheduled exports of older versions (no longer written: backups go to the server) |
//! | `blobs`     | `sha256`                      | an attachment's `blob` (a `Blob`), `size`, `type`, `stored_at` (version 3) |

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::Array;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{IdbDatabase, IdbFactory, IdbKeyRange, IdbObjectStoreParameters, IdbOpenDbRequest};

use crate::error::{Result, SwError};
use crate::js;

/// Database name.
pub const DB_NAME: &str = "rangersync";
/// Current schema version (2: the `by_kind` index of `outbox`; 3: the `blobs` store).
pub const DB_VERSION: u32 = 3;

pub const META: &str = "meta";
pub const OUTBOX: &str = "outbox";
pub const ENTITIES: &str = "entities";
pub const DEAD: &str = "dead";
pub const SNAPSHOTS: &str = "snapshots";
pub const BLOBS: &str = "blobs";
/// Index of `outbox` on `[collection, key]`.
pub const BY_ENTITY: &str = "by_entity";
/// Index of `outbox` on `kind` (`"mutation"` / `"request"`): the captured requests waiting,
/// read at start without scanning the mutations.
pub const BY_KIND: &str = "by_kind";
/// The `kind` of an outbox record holding a captured request.
pub const KIND_REQUEST: &str = "request";
/// The `kind` of an outbox record holding a blob upload.
pub const KIND_BLOB: &str = "blob";

/// Keys of the `meta` store.
pub mod meta {
    pub const CLIENT_ID: &str = "client_id";
    pub const NEXT_SEQ: &str = "next_seq";
    pub const CURSOR: &str = "cursor";
    pub const CONFIG: &str = "config";
    pub const LAST_SAVED_AT: &str = "last_saved_at";
    pub const LAST_SYNCED_AT: &str = "last_synced_at";
    /// The newest `server_time` the server reported: the floor of the write clock.
    pub const SERVER_TIME: &str = "server_time";
    pub const LAST_EXPORTED_AT: &str = "last_exported_at";
    /// The snapshot time of the last backup the server confirmed (`POST /api/backups`).
    pub const LAST_BACKUP_AT: &str = "last_backup_at";
    /// The failure of the last backup attempt (`shared::backup::BackupFailure`); absent after
    /// a success.
    pub const BACKUP_FAILURE: &str = "backup_failure";
    pub const LAST_ERROR: &str = "last_error";
    /// A `Retry-After` floor (ms since the epoch) written by older versions; read once as a
    /// backoff, then replaced by [`BACKOFF`].
    pub const NOT_BEFORE: &str = "not_before";
    /// The backoff of the last failed attempt (`shared::outbox::Backoff`: attempt, next
    /// retry, `Retry-After` floor); absent after a success.
    pub const BACKOFF: &str = "backoff";
    /// A stored `config` record this version could not read, kept as it was for diagnosis
    /// (the status shows `config_error` until a page sends a valid config).
    pub const CONFIG_UNREADABLE: &str = "config_unreadable";
    /// The highest seq ever given to a captured request: no write coalesces an entry at or
    /// below it (every entry below a delivered captured request has left the outbox).
    pub const CAPTURE_BARRIER: &str = "capture_barrier";
    /// The key server backups are encrypted with: `{ key, salt, iterations }`, `key` a
    /// non-extractable AES-GCM `CryptoKey` (the passphrase itself is never stored).
    pub const BACKUP_KEY: &str = "backup_key";
    /// The epoch of the full re-pull under way after `410 cursor_expired`
    /// (`shared::resync`); absent when none is.
    pub const RESYNC: &str = "resync";
}

/// A seq as an IndexedDB key: a JS number (a BigInt is not a valid key).
pub fn seq_key(seq: u64) -> JsValue {
    JsValue::from_f64(seq as f64)
}

/// An entity's key `[collection, key]`.
pub fn entity_key(collection: &str, key: &str) -> JsValue {
    Array::of2(&collection.into(), &key.into()).into()
}

/// Every seq greater than `after`.
pub fn seqs_after(after: u64) -> Result<JsValue> {
    IdbKeyRange::lower_bound_with_open(&seq_key(after), true)
        .map(Into::into)
        .map_err(|e| SwError::from_js(&e))
}

/// Seqs `lo..=hi`.
pub fn seq_range(lo: u64, hi: u64) -> Result<JsValue> {
    IdbKeyRange::bound(&seq_key(lo), &seq_key(hi))
        .map(Into::into)
        .map_err(|e| SwError::from_js(&e))
}

/// Every entity of a collection: `[c, ""]` up to `[c, []]` (arrays sort after strings).
pub fn collection_range(collection: &str) -> Result<JsValue> {
    let lo = Array::of2(&collection.into(), &"".into());
    let hi = Array::of2(&collection.into(), &Array::new());
    IdbKeyRange::bound(&lo, &hi)
        .map(Into::into)
        .map_err(|e| SwError::from_js(&e))
}

fn factory() -> Result<IdbFactory> {
    js::global_prop("indexedDB")
        .and_then(|v| v.dyn_into::<IdbFactory>().ok())
        .ok_or_else(|| {
            SwError::coded(
                rangersync_shared::messages::codes::STORAGE_ERROR,
                "IndexedDB is not available here",
            )
        })
}

/// Create or upgrade the stores from `old_version` to [`DB_VERSION`], inside the
/// `versionchange` transaction `tx`.
fn upgrade(
    db: &IdbDatabase,
    tx: &web_sys::IdbTransaction,
    old_version: u32,
) -> std::result::Result<(), JsValue> {
    if old_version < 1 {
        db.create_object_store(META)?;
        let p = IdbObjectStoreParameters::new();
        p.set_key_path(&"seq".into());
        let outbox = db.create_object_store_with_optional_parameters(OUTBOX, &p)?;
        let keys: Array = ["collection", "key"]
            .iter()
            .map(|s| JsValue::from_str(s))
            .collect();
        outbox.create_index_with_str_sequence_and_optional_parameters(
            BY_ENTITY,
            &keys,
            &web_sys::IdbIndexParameters::new(),
        )?;
        let p = IdbObjectStoreParameters::new();
        p.set_key_path(&keys);
        db.create_object_store_with_optional_parameters(ENTITIES, &p)?;
        let p = IdbObjectStoreParameters::new();
        p.set_key_path(&"seq".into());
        db.create_object_store_with_optional_parameters(DEAD, &p)?;
        let p = IdbObjectStoreParameters::new();
        p.set_key_path(&"exported_at".into());
        db.create_object_store_with_optional_parameters(SNAPSHOTS, &p)?;
    }
    if old_version < 2 {
        tx.object_store(OUTBOX)?
            .create_index_with_str_and_optional_parameters(
                BY_KIND,
                "kind",
                &web_sys::IdbIndexParameters::new(),
            )?;
    }
    if old_version < 3 {
        let p = IdbObjectStoreParameters::new();
        p.set_key_path(&"sha256".into());
        db.create_object_store_with_optional_parameters(BLOBS, &p)?;
    }
    // Future versions: `if old_version < 4 { … }`.
    Ok(())
}

/// Open (creating or upgrading) the database `name`. `closed` becomes true when the
/// connection ends under its owner: a `versionchange` (another connection upgrades or deletes
/// the database; this one closes to let it) or a `close` event (the browser closed it: the
/// origin's storage was cleared, DevTools' "Clear storage", an eviction). The owner then opens
/// a new connection before its next use.
pub async fn open(name: &str, closed: &Rc<std::cell::Cell<bool>>) -> Result<IdbDatabase> {
    let request: IdbOpenDbRequest = factory()?
        .open_with_u32(name, DB_VERSION)
        .map_err(|e| SwError::from_js(&e))?;
    let upgrade_error: Rc<RefCell<Option<JsValue>>> = Rc::default();
    let r = request.clone();
    let slot = upgrade_error.clone();
    let on_upgrade = Closure::<dyn FnMut(web_sys::IdbVersionChangeEvent)>::new(
        move |e: web_sys::IdbVersionChangeEvent| {
            let old = e.old_version() as u32;
            let result = r
                .result()
                .and_then(|db| db.dyn_into::<IdbDatabase>())
                .and_then(|db| {
                    let tx = r
                        .transaction()
                        .ok_or_else(|| JsValue::from_str("no versionchange transaction"))?;
                    upgrade(&db, &tx, old)
                });
            if let Err(err) = result {
                *slot.borrow_mut() = Some(err);
                if let Some(tx) = r.transaction() {
                    let _ = tx.abort();
                }
            }
        },
    );
    request.set_onupgradeneeded(Some(on_upgrade.as_ref().unchecked_ref()));
    let result = crate::idb::req(Ok(request.clone().unchecked_into())).await;
    request.set_onupgradeneeded(None);
    drop(on_upgrade);
    if let Some(err) = upgrade_error.borrow_mut().take() {
        return Err(SwError::from_js(&err));
    }
    let db: IdbDatabase = result?
        .dyn_into()
        .map_err(|_| SwError::coded("storage_error", "open did not return a database"))?;
    // Let a newer version (another tab's worker) upgrade, or a deletion go ahead: close on
    // versionchange, and reopen on next use.
    let d = db.clone();
    let flag = closed.clone();
    let on_change = Closure::<dyn FnMut()>::new(move || {
        flag.set(true);
        d.close();
    });
    db.set_onversionchange(Some(on_change.as_ref().unchecked_ref()));
    on_change.forget();
    // Closed by the browser (storage cleared or evicted): no `versionchange` comes first.
    let flag = closed.clone();
    let on_close = Closure::<dyn FnMut()>::new(move || flag.set(true));
    db.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    on_close.forget();
    Ok(db)
}

/// Delete the database `name` (tests).
pub async fn delete(name: &str) -> Result<()> {
    let request = factory()?
        .delete_database(name)
        .map_err(|e| SwError::from_js(&e))?;
    crate::idb::req(Ok(request.unchecked_into()))
        .await
        .map(|_| ())
}
