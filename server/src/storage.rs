//! The storage seam: what the protocol needs from a database, and the two databases that
//! provide it ([`crate::sqlite`], embedded, one process; [`crate::postgres`], shared by any
//! number of instances).
//!
//! The protocol is written once against this module: [`crate::push::apply_batch`] over a
//! [`PushTx`] (dedup, validation, the conflict rule, per-mutation results, counters),
//! [`crate::restore::apply_restore`] over a [`RestoreTx`] (the plan, the authoritative stamps),
//! and the other handlers over [`Db`]'s typed reads and writes. A backend only says how a step
//! is done in its SQL, never what the answer to a client is.
//!
//! Invariants every backend keeps (tested against both by `server/tests/api`):
//! - one push batch is one transaction: all of it is stored, or none of it;
//! - a `(client_id, seq)` is claimed once: while one transaction holds a claim, another that
//!   claims the same pair waits, then sees its first outcome;
//! - an entity changes only when the incoming `(updated_at, client_id, seq)` is greater than
//!   its stored one (`rangersync_shared::conflict`), except by an operator's restore, which
//!   overwrites with a stamp greater than the one it replaces;
//! - a restore is one transaction that no other writer of entities interleaves with;
//! - a client keeps at most `keep` backups, one per checksum, pruned in the transaction that
//!   stores a new one;
//! - versions are handed out in commit order, so a pull that returned version `v` has already
//!   seen every change that will ever carry a version below `v` (the feed never skips).

use std::collections::{BTreeMap, HashMap};

use rangersync_shared::conflict::{Stamp, Stored};
use rangersync_shared::protocol::{Entity, Millis, Mutation, MutationResult};
use rangersync_shared::snapshot::{self, Snapshot};
use serde::Serialize;
use serde_json::Value;

use crate::db_location::DbLocation;
use crate::error::ApiError;
use crate::postgres::PgStore;
use crate::restore::RestoreOutcome;
use crate::retention::Pruned;
use crate::sqlite::SqliteStore;

/// How the server answered a `(client_id, seq)` the first time it saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MutationStatus {
    /// Stored.
    Applied,
    /// Lost to a newer write.
    Conflict,
    /// Invalid.
    Rejected,
}

impl MutationStatus {
    /// The name stored in the `mutations.status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Conflict => "conflict",
            Self::Rejected => "rejected",
        }
    }

    /// The status a stored name stands for.
    pub fn parse(s: &str) -> Self {
        match s {
            "applied" => Self::Applied,
            "conflict" => Self::Conflict,
            _ => Self::Rejected,
        }
    }
}

/// A `(client_id, seq)` seen before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Its first outcome.
    pub status: MutationStatus,
    /// The rejection reason, for `rejected`.
    pub reason: Option<String>,
}

/// What [`PushTx::write_if_newer`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Written {
    /// The entity now holds the incoming write; its version is handed out by
    /// [`PushTx::finish`].
    Applied,
    /// The stored write is newer (or the same stamp); nothing changed.
    Lost(Stored),
}

/// The steps of one push batch, inside one transaction. The transaction commits only when
/// the caller commits it after [`PushTx::finish`]; dropping it rolls everything back.
// The futures are awaited where the transaction lives (SQLite's on a blocking thread), so
// they need no `Send` bound; the trait is implemented only in this crate.
#[allow(async_fn_in_trait)]
pub trait PushTx {
    /// Called before anything else with the batch's client ids (sorted, distinct): make each
    /// one that no user has yet this transaction's user's, and return the first that belongs
    /// to another user (the batch is then refused and nothing is stored).
    async fn own_clients(&mut self, client_ids: &[&str]) -> Result<Option<String>, ApiError>;

    /// Called next with the whole batch: take whatever locks the batch's entities need, in
    /// an order every transaction agrees on, so that batches never deadlock; a backend may
    /// also claim every `(client_id, seq)` of the batch here, ahead of [`PushTx::claim`].
    async fn begin(&mut self, mutations: &[Mutation]) -> Result<(), ApiError>;

    /// Claim `(m.client_id, m.seq)` for this transaction, or return its first outcome when
    /// it was seen before. A concurrent claim of the same pair waits for this one to end.
    async fn claim(&mut self, m: &Mutation) -> Result<Option<Seen>, ApiError>;

    /// Record the outcome of a claimed mutation (`version` is set later for `applied`).
    async fn record(
        &mut self,
        m: &Mutation,
        status: MutationStatus,
        reason: Option<&str>,
        now: Millis,
    ) -> Result<(), ApiError>;

    /// The stored state of an entity.
    async fn entity(&mut self, collection: &str, key: &str) -> Result<Option<Stored>, ApiError>;

    /// Store `m` in its entity if its stamp is greater than the stored one (the conflict rule
    /// of `rangersync_shared::conflict`), atomically with respect to other transactions.
    async fn write_if_newer(&mut self, m: &Mutation) -> Result<Written, ApiError>;

    /// Give the applied mutations their versions, in the order given (which is the order they
    /// were applied), add the counters, and return the versions. Versions are handed out in
    /// commit order: none is taken by a transaction that may commit after a later one.
    async fn finish(
        &mut self,
        applied: &[&Mutation],
        counts: &Counters,
    ) -> Result<Vec<u64>, ApiError>;
}

/// One recorded `(client_id, seq)` (for `GET /api/test/mutations`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MutationRow {
    /// The client.
    pub client_id: String,
    /// Its seq.
    pub seq: u64,
    /// The first outcome.
    pub status: MutationStatus,
    /// As sent.
    pub collection: String,
    /// As sent.
    pub key: String,
    /// `put` or `delete`.
    pub op: String,
    /// The version it made, when applied.
    pub version: Option<u64>,
    /// Why, when rejected.
    pub reason: Option<String>,
    /// When the server first saw it.
    pub received_at: Millis,
}

/// Counts kept across restarts (for `GET /api/test/stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Push batches handled (faulted and refused requests excluded).
    pub push_requests: u64,
    /// Mutations applied.
    pub mutations_applied: u64,
    /// Mutations sent again after a first outcome.
    pub duplicates: u64,
    /// Mutations that lost to a newer write.
    pub conflicts: u64,
    /// Invalid mutations.
    pub rejected: u64,
}

impl Counters {
    /// `(name, value)` pairs as stored in the `counters` table.
    pub fn named(&self) -> [(&'static str, u64); 5] {
        [
            ("push_requests", self.push_requests),
            ("mutations_applied", self.mutations_applied),
            ("duplicates", self.duplicates),
            ("conflicts", self.conflicts),
            ("rejected", self.rejected),
        ]
    }
}

/// The counter that hands out versions (kept by a test reset).
pub const VERSION_COUNTER: &str = "version";

/// A verified backup to store.
#[derive(Debug, Clone)]
pub struct NewBackup {
    /// From the snapshot.
    pub exported_at: Millis,
    /// The verified checksum, lower-case hex.
    pub checksum: String,
    /// `client` or `server`.
    pub source: String,
    /// The client that made it; `None` for a server export (and for an empty id).
    pub client_id: Option<String>,
    /// From the snapshot.
    pub app_version: String,
    /// Number of entities in it (tombstones included).
    pub entities: u64,
    /// Live entities per collection, as the snapshot states (and verification checked).
    pub counts: BTreeMap<String, u64>,
    /// `json` or `yaml`.
    pub format: String,
    /// The text as received.
    pub body: String,
    /// When it was stored.
    pub received_at: Millis,
}

/// One stored backup, without its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupInfo {
    /// Its id: 32 lower-case hex digits, 128 random bits (unguessable).
    pub id: String,
    /// The client that made it (`null` for a server export).
    pub client_id: Option<String>,
    /// From the snapshot.
    pub exported_at: Millis,
    /// When the server stored it.
    pub received_at: Millis,
    /// Bytes of the stored text.
    pub size: u64,
    /// The verified checksum (SHA-256, lower-case hex).
    pub checksum: String,
    /// Live entities per collection; `null` only for a backup stored by an older server
    /// whose text no longer decodes.
    pub counts: Option<BTreeMap<String, u64>>,
    /// Number of entities in it (tombstones included).
    pub entities: u64,
    /// `client` or `server`.
    pub source: String,
    /// From the snapshot.
    pub app_version: String,
    /// `json` or `yaml`: how it was sent, and how it is given back.
    pub format: String,
}

/// What [`Db::insert_backup`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupStored {
    /// The stored backup: the new one, or the one already holding this document.
    pub info: BackupInfo,
    /// Whether it was stored now (`false`: the same client had stored the same checksum).
    pub created: bool,
}

/// A new backup id: 128 bits from the operating system's random source, as 32 lower-case hex
/// digits.
pub fn new_backup_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `text` has the shape of a backup id (anything else is no backup of anyone).
pub fn is_backup_id(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `403 client_owned_by_another_user`: a client id belongs to the user who first used it.
pub fn client_owned_by_another_user(client_id: &str) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::FORBIDDEN,
        crate::error::codes::CLIENT_OWNED_BY_ANOTHER_USER,
        format!("client id {client_id:?} belongs to another user; nothing was changed"),
    )
}

/// A counts column back to its map (`None` for NULL or anything unreadable).
pub fn parse_counts(text: Option<&str>) -> Option<BTreeMap<String, u64>> {
    text.and_then(|t| serde_json::from_str(t).ok())
}

/// A counts map as stored in its column.
pub fn counts_text(counts: &BTreeMap<String, u64>) -> String {
    serde_json::to_string(counts).unwrap_or_else(|_| "{}".to_owned())
}

/// An entity state a restore writes, whatever is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Overwrite {
    /// The collection.
    pub collection: String,
    /// The key.
    pub key: String,
    /// The value (`null` for a tombstone).
    pub value: Value,
    /// A tombstone.
    pub deleted: bool,
    /// The stamp stored with it, which later pushes are compared against.
    pub stamp: Stamp,
}

/// The steps of a restore, inside one transaction. The transaction commits only when the
/// caller commits it; dropping it rolls everything back. A dry run calls only
/// [`RestoreTx::stored`].
#[allow(async_fn_in_trait)]
pub trait RestoreTx {
    /// Make this transaction the only one that writes entities until it ends: a push that
    /// would write one waits. Called before anything is read.
    async fn exclude_writers(&mut self) -> Result<(), ApiError>;

    /// The stored state of these entities, by `(collection, key)`; absent ones are left out.
    async fn stored(
        &mut self,
        keys: &[(&str, &str)],
    ) -> Result<HashMap<(String, String), Stored>, ApiError>;

    /// Store each row whatever the stored stamp, giving them new versions in the order given,
    /// and return the versions. Versions are handed out in commit order, as by
    /// [`PushTx::finish`], so the change feed carries the restored states.
    async fn overwrite(&mut self, rows: &[Overwrite]) -> Result<Vec<u64>, ApiError>;
}

/// One stored captured request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CapturedRow {
    /// The route.
    pub path: String,
    /// The `Idempotency-Key` header, if any.
    pub idempotency_key: Option<String>,
    /// The JSON body.
    pub body: Value,
    /// When it was stored.
    pub received_at: Millis,
}

/// One blob of a user, complete or still uploading (see [`crate::blobs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRow {
    /// Its size in bytes (the `TOTAL` of its `Content-Range`).
    pub size: u64,
    /// Bytes received so far, in order from 0 (`size` once complete).
    pub received: u64,
    /// Assembled, verified and stored under its final key.
    pub complete: bool,
    /// Names this upload attempt's part objects (a discarded upload's parts never mix with a
    /// new attempt's).
    pub upload_id: String,
}

/// One accepted chunk of an upload in progress, stored as its own object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobPart {
    /// Its first byte's offset in the blob.
    pub start: u64,
    /// Its length in bytes.
    pub len: u64,
    /// The object holding its bytes.
    pub key: String,
}

/// What [`Db::begin_blob`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobBegun {
    /// The user already has this blob, complete or uploading: nothing changed.
    Existing(BlobRow),
    /// A new upload, with nothing received yet.
    Created(BlobRow),
    /// The user's blobs already take `used` bytes: with this one they would pass the quota.
    /// Nothing changed.
    OverQuota {
        /// Bytes of the user's blobs, complete and in progress.
        used: u64,
    },
}

/// What [`Db::append_blob_part`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobAppended {
    /// The part was recorded: the upload has received this many bytes now.
    Appended(u64),
    /// The upload is not where the part starts (another request got there first, or it was
    /// discarded): nothing changed. Its state now, if it still exists.
    Moved(Option<BlobRow>),
}

/// How many blobs a user has (for `GET /api/test/stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BlobCounts {
    /// Complete blobs.
    pub complete: u64,
    /// Uploads in progress.
    pub uploading: u64,
    /// Their sizes added up (uploads in progress at their full size).
    pub bytes: u64,
}

/// JSON as stored in a text column.
pub fn json_text(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

/// A text column back to JSON.
pub fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// The opened database; cheap to clone. Each method is one transaction.
#[derive(Debug, Clone)]
pub enum Db {
    /// The embedded SQLite file.
    Sqlite(SqliteStore),
    /// A PostgreSQL database (possibly shared with other instances).
    Postgres(PgStore),
}

impl Db {
    /// Open `location` (creating a SQLite file and its directory when missing), run the
    /// migrations; `pool` is the PostgreSQL connection pool size.
    pub async fn open(location: &DbLocation, pool: usize) -> Result<Self, String> {
        let db = match location {
            DbLocation::Sqlite(path) => Self::Sqlite(SqliteStore::open(path).await?),
            DbLocation::Postgres(url) => Self::Postgres(PgStore::open(url, pool).await?),
        };
        db.backfill_backup_counts()
            .await
            .map_err(|e| format!("filling in backup counts: {}", e.message))?;
        Ok(db)
    }

    /// Apply a validated push batch of `user` in one transaction (refused whole with `403
    /// client_owned_by_another_user` when a client id of it is another user's).
    pub async fn push(
        &self,
        user: &str,
        mutations: Vec<Mutation>,
        now: Millis,
    ) -> Result<Vec<MutationResult>, ApiError> {
        match self {
            Self::Sqlite(s) => s.push(user, mutations, now).await,
            Self::Postgres(p) => p.push(user, mutations, now).await,
        }
    }

    /// Up to `limit` of `user`'s entities whose version is greater than `since`, oldest
    /// first; `410 cursor_expired` when one of `user`'s tombstones after `since` was pruned
    /// (the feed could miss a delete).
    pub async fn changes_after(
        &self,
        user: &str,
        since: u64,
        limit: usize,
    ) -> Result<Vec<Entity>, ApiError> {
        match self {
            Self::Sqlite(s) => s.changes_after(user, since, limit).await,
            Self::Postgres(p) => p.changes_after(user, since, limit).await,
        }
    }

    /// Every entity of `user`, tombstones included, by `(collection, key)`.
    pub async fn all_entities(&self, user: &str) -> Result<Vec<Entity>, ApiError> {
        match self {
            Self::Sqlite(s) => s.all_entities(user).await,
            Self::Postgres(p) => p.all_entities(user).await,
        }
    }

    /// Store a verified backup of `user` unless the same client of that user already stored
    /// the same checksum (then nothing changes and the stored one is returned), and delete
    /// that client's oldest backups beyond the newest `keep`, in the same transaction.
    /// Backups with no client id are one more client of the user. A client id of another
    /// user is `403 client_owned_by_another_user`; one no user has yet becomes `user`'s.
    pub async fn insert_backup(
        &self,
        user: &str,
        backup: NewBackup,
        keep: usize,
    ) -> Result<BackupStored, ApiError> {
        match self {
            Self::Sqlite(s) => s.insert_backup(user, backup, keep).await,
            Self::Postgres(p) => p.insert_backup(user, backup, keep).await,
        }
    }

    /// Up to `limit` of `user`'s backups, newest (last stored) first, without bodies; only
    /// those of `client_id` when given.
    pub async fn backups(
        &self,
        user: &str,
        client_id: Option<String>,
        limit: usize,
    ) -> Result<Vec<BackupInfo>, ApiError> {
        match self {
            Self::Sqlite(s) => s.backups(user, client_id, limit).await,
            Self::Postgres(p) => p.backups(user, client_id, limit).await,
        }
    }

    /// The format and text of `user`'s backup `id` (`None` for another user's).
    pub async fn backup_body(
        &self,
        user: &str,
        id: &str,
    ) -> Result<Option<(String, String)>, ApiError> {
        if !is_backup_id(id) {
            return Ok(None);
        }
        match self {
            Self::Sqlite(s) => s.backup_body(user, id.to_owned()).await,
            Self::Postgres(p) => p.backup_body(user, id.to_owned()).await,
        }
    }

    /// Rows of the backups stored without counts (by a server older than the counts column).
    async fn backups_without_counts(&self) -> Result<Vec<i64>, ApiError> {
        match self {
            Self::Sqlite(s) => s.backups_without_counts().await,
            Self::Postgres(p) => p.backups_without_counts().await,
        }
    }

    /// A backup's text, by its row.
    async fn backup_text(&self, row: i64) -> Result<Option<String>, ApiError> {
        match self {
            Self::Sqlite(s) => s.backup_text(row).await,
            Self::Postgres(p) => p.backup_text(row).await,
        }
    }

    /// Set a backup's counts, by its row.
    async fn set_backup_counts(&self, row: i64, counts: String) -> Result<(), ApiError> {
        match self {
            Self::Sqlite(s) => s.set_backup_counts(row, counts).await,
            Self::Postgres(p) => p.set_backup_counts(row, counts).await,
        }
    }

    /// Fill in the counts of backups stored before there was a counts column, from their
    /// text (verified again). One at a time: a backup may be 64 MiB. One that no longer
    /// decodes keeps no counts and is named on stderr.
    async fn backfill_backup_counts(&self) -> Result<(), ApiError> {
        for row in self.backups_without_counts().await? {
            let Some(body) = self.backup_text(row).await? else {
                continue;
            };
            match snapshot::decode(&body) {
                Ok(snap) => {
                    self.set_backup_counts(row, counts_text(&snap.counts))
                        .await?
                }
                Err(e) => eprintln!("rangersync-server: backup row {row} has no counts: {e}"),
            }
        }
        Ok(())
    }

    /// Restore `user`'s entities from `snapshot` (verified, and with no entity
    /// `plan_restore` refuses) in one transaction with [`crate::restore::apply_restore`]: a
    /// dry run only reads, and commits nothing; a real restore commits only when every write
    /// succeeded.
    pub async fn restore(
        &self,
        user: &str,
        snapshot: Snapshot,
        dry_run: bool,
        now: Millis,
    ) -> Result<RestoreOutcome, ApiError> {
        match self {
            Self::Sqlite(s) => s.restore(user, snapshot, dry_run, now).await,
            Self::Postgres(p) => p.restore(user, snapshot, dry_run, now).await,
        }
    }

    /// Store a captured request of `user` unless its idempotency key was stored before for
    /// that user; returns whether it was stored.
    pub async fn insert_captured(
        &self,
        user: &str,
        path: String,
        body: String,
        idempotency_key: Option<String>,
        now: Millis,
    ) -> Result<bool, ApiError> {
        match self {
            Self::Sqlite(s) => {
                s.insert_captured(user, path, body, idempotency_key, now)
                    .await
            }
            Self::Postgres(p) => {
                p.insert_captured(user, path, body, idempotency_key, now)
                    .await
            }
        }
    }

    /// `user`'s counters and captured requests, in arrival order.
    pub async fn stats(&self, user: &str) -> Result<(Counters, Vec<CapturedRow>), ApiError> {
        match self {
            Self::Sqlite(s) => s.stats(user).await,
            Self::Postgres(p) => p.stats(user).await,
        }
    }

    /// Every recorded `(client_id, seq)` of one client of `user`, in seq order (nothing for
    /// another user's client).
    pub async fn mutations_of(
        &self,
        user: &str,
        client_id: String,
    ) -> Result<Vec<MutationRow>, ApiError> {
        match self {
            Self::Sqlite(s) => s.mutations_of(user, client_id).await,
            Self::Postgres(p) => p.mutations_of(user, client_id).await,
        }
    }

    /// One bounded pruning transaction (see [`crate::retention`]): at most `limit` of each of
    /// the mutation records and captured requests received before `before` and of the
    /// tombstones older than them, with what must be remembered of them.
    pub async fn prune_step(&self, before: Millis, limit: usize) -> Result<Pruned, ApiError> {
        match self {
            Self::Sqlite(s) => s.prune_step(before, limit).await,
            Self::Postgres(p) => p.prune_step(before, limit).await,
        }
    }

    /// `user`'s blob `sha256`, complete or uploading.
    pub async fn blob(&self, user: &str, sha256: &str) -> Result<Option<BlobRow>, ApiError> {
        match self {
            Self::Sqlite(s) => s.blob(user, sha256.to_owned()).await,
            Self::Postgres(p) => p.blob(user, sha256).await,
        }
    }

    /// Start an upload of `size` bytes of `user`'s blob `sha256` under `upload_id`, unless the
    /// user already has that blob (then nothing changes and it is returned) or the sizes of
    /// the user's blobs, complete and in progress, plus `size` exceed `quota`. One
    /// transaction: two uploads racing for the last of a quota do not both start.
    pub async fn begin_blob(
        &self,
        user: &str,
        sha256: &str,
        size: u64,
        upload_id: String,
        quota: u64,
        now: Millis,
    ) -> Result<BlobBegun, ApiError> {
        match self {
            Self::Sqlite(s) => {
                s.begin_blob(user, sha256.to_owned(), size, upload_id, quota, now)
                    .await
            }
            Self::Postgres(p) => {
                p.begin_blob(user, sha256, size, upload_id, quota, now)
                    .await
            }
        }
    }

    /// Record `part` of upload `upload_id` of `user`'s blob `sha256` if the upload has
    /// received exactly `part.start` bytes and is not complete (a compare-and-set: of two
    /// requests appending at one offset, on one instance or two, one wins and the other
    /// changes nothing).
    pub async fn append_blob_part(
        &self,
        user: &str,
        sha256: &str,
        upload_id: &str,
        part: BlobPart,
    ) -> Result<BlobAppended, ApiError> {
        match self {
            Self::Sqlite(s) => {
                s.append_blob_part(user, sha256.to_owned(), upload_id.to_owned(), part)
                    .await
            }
            Self::Postgres(p) => p.append_blob_part(user, sha256, upload_id, part).await,
        }
    }

    /// The parts of upload `upload_id` of `user`'s blob `sha256`, by offset.
    pub async fn blob_parts(
        &self,
        user: &str,
        sha256: &str,
        upload_id: &str,
    ) -> Result<Vec<BlobPart>, ApiError> {
        match self {
            Self::Sqlite(s) => {
                s.blob_parts(user, sha256.to_owned(), upload_id.to_owned())
                    .await
            }
            Self::Postgres(p) => p.blob_parts(user, sha256, upload_id).await,
        }
    }

    /// Mark upload `upload_id` of `user`'s blob `sha256` complete and forget its parts;
    /// whether it did (`false`: already complete, or discarded).
    pub async fn complete_blob(
        &self,
        user: &str,
        sha256: &str,
        upload_id: &str,
        now: Millis,
    ) -> Result<bool, ApiError> {
        match self {
            Self::Sqlite(s) => {
                s.complete_blob(user, sha256.to_owned(), upload_id.to_owned(), now)
                    .await
            }
            Self::Postgres(p) => p.complete_blob(user, sha256, upload_id, now).await,
        }
    }

    /// Forget upload `upload_id` of `user`'s blob `sha256` and its parts unless it is
    /// complete; whether it did.
    pub async fn discard_blob(
        &self,
        user: &str,
        sha256: &str,
        upload_id: &str,
    ) -> Result<bool, ApiError> {
        match self {
            Self::Sqlite(s) => {
                s.discard_blob(user, sha256.to_owned(), upload_id.to_owned())
                    .await
            }
            Self::Postgres(p) => p.discard_blob(user, sha256, upload_id).await,
        }
    }

    /// How many blobs `user` has.
    pub async fn blob_counts(&self, user: &str) -> Result<BlobCounts, ApiError> {
        match self {
            Self::Sqlite(s) => s.blob_counts(user).await,
            Self::Postgres(p) => p.blob_counts(user).await,
        }
    }

    /// Delete every row of every table, except the version counter, which keeps growing so
    /// that a client's old cursor never hides new changes.
    pub async fn wipe(&self) -> Result<(), ApiError> {
        match self {
            Self::Sqlite(s) => s.wipe().await,
            Self::Postgres(p) => p.wipe().await,
        }
    }
}
