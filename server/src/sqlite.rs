//! The SQLite store: the only module that knows the SQLite schema.
//!
//! One writer connection behind a mutex and a small pool of read-only connections
//! ([`READERS`]), used from `spawn_blocking`; WAL mode, so the readers run beside the writer,
//! each read transaction on a snapshot of what had committed when it began; `synchronous=FULL`
//! so that an answered push survives a crash or power loss (the client drops acknowledged
//! entries, so an acknowledgement must be durable). The schema is upgraded by
//! `PRAGMA user_version`: [`MIGRATIONS`]`[i]` takes a database from version `i` to `i + 1`.
//!
//! Pushes are group-committed: the batches that queue while the writer is busy go into its
//! next transaction together, each in its own savepoint, and are answered after its one
//! commit (one flush of the log for all of them; see `commit_pending`).
//!
//! One process, one writer: `BEGIN IMMEDIATE` serialises every write transaction, so the
//! dedup claim, the conflict rule and the version counter need no more than plain reads and
//! writes here (contrast [`crate::postgres`]). Versions are taken in commit order, so a reader's
//! snapshot holds every version up to its newest: a pull page never skips one that commits
//! later.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rangersync_shared::conflict::{self, Stamp, Stored, Verdict};
use rangersync_shared::protocol::{Entity, Millis, Mutation, MutationResult, Op};
use rangersync_shared::snapshot::Snapshot;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::error::ApiError;
use crate::push::apply_batch;
use crate::restore::{apply_restore, RestoreOutcome};
use crate::retention::{cursor_expired, expired, Pruned};
use crate::storage::{
    client_owned_by_another_user, counts_text, json_text, new_backup_id, parse_counts, parse_json,
    BackupInfo, BackupStored, BlobAppended, BlobBegun, BlobCounts, BlobPart, BlobRow, CapturedRow,
    Counters, MutationRow, MutationStatus, NewBackup, Overwrite, PushTx, RestoreTx, Seen, Written,
    VERSION_COUNTER,
};

/// Schema migrations, in order. Never edit a released one: append a new one.
pub const MIGRATIONS: &[&str] = &[
    // 1: entities with their LWW stamp, every (client_id, seq) seen, counters, backups,
    //    captured REST requests.
    "
    CREATE TABLE entities (
        collection TEXT NOT NULL,
        key        TEXT NOT NULL,
        value      TEXT NOT NULL,            -- JSON; 'null' for a tombstone
        deleted    INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,         -- the stamp of the write that made this state
        client_id  TEXT NOT NULL,
        seq        INTEGER NOT NULL,
        version    INTEGER NOT NULL UNIQUE,  -- global change counter: the pull order
        PRIMARY KEY (collection, key)
    );
    CREATE TABLE mutations (
        client_id   TEXT NOT NULL,
        seq         INTEGER NOT NULL,
        status      TEXT NOT NULL CHECK (status IN ('applied', 'conflict', 'rejected')),
        collection  TEXT NOT NULL,
        key         TEXT NOT NULL,
        op          TEXT NOT NULL,
        version     INTEGER,                 -- for 'applied'
        reason      TEXT,                    -- for 'rejected'
        received_at INTEGER NOT NULL,
        PRIMARY KEY (client_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE counters (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE backups (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        exported_at INTEGER NOT NULL,
        checksum    TEXT NOT NULL,
        source      TEXT NOT NULL,
        client_id   TEXT,
        app_version TEXT NOT NULL,
        entities    INTEGER NOT NULL,
        format      TEXT NOT NULL,           -- 'json' | 'yaml': how it was sent
        body        TEXT NOT NULL,           -- the text as received
        received_at INTEGER NOT NULL
    );
    CREATE TABLE captured_requests (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        path            TEXT NOT NULL,
        body            TEXT NOT NULL,
        idempotency_key TEXT UNIQUE,
        received_at     INTEGER NOT NULL
    );
    ",
    // 2: backups keep their size and counts; one row per (client, checksum), so that an
    //    upload of a stored document is answered with it. Rows stored before are made to
    //    agree: lower-case checksums, no empty client id, the first of each duplicate kept.
    //    Their counts are filled in from their text at start (`Db::open`).
    "
    ALTER TABLE backups ADD COLUMN size INTEGER NOT NULL DEFAULT 0;   -- bytes of body
    ALTER TABLE backups ADD COLUMN counts TEXT;                       -- JSON {collection: n}
    UPDATE backups SET size = length(CAST(body AS BLOB)), checksum = lower(checksum),
                       client_id = nullif(client_id, '');
    DELETE FROM backups WHERE id NOT IN (
        SELECT min(id) FROM backups GROUP BY coalesce(client_id, ''), checksum
    );
    CREATE UNIQUE INDEX backups_by_content ON backups (coalesce(client_id, ''), checksum);
    ",
    // 3: users. Every row belongs to a user; rows stored before belong to `default` (the
    //    user of `--token` and of a server without auth). A client id belongs to the user who
    //    first used it. Entities are keyed by user; backups get unguessable public ids and
    //    are unique per (user, client, checksum); idempotency keys are unique per user; the
    //    counters of `/api/test/stats` are kept per user (the version counter stays global:
    //    it orders every user's feed).
    "
    CREATE TABLE clients (
        client_id TEXT PRIMARY KEY,
        user_id   TEXT NOT NULL
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO clients SELECT DISTINCT client_id, 'default' FROM mutations;
    INSERT OR IGNORE INTO clients SELECT DISTINCT client_id, 'default' FROM backups
        WHERE client_id IS NOT NULL;
    CREATE TABLE entities_by_user (
        user_id    TEXT NOT NULL,
        collection TEXT NOT NULL,
        key        TEXT NOT NULL,
        value      TEXT NOT NULL,
        deleted    INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        client_id  TEXT NOT NULL,
        seq        INTEGER NOT NULL,
        version    INTEGER NOT NULL UNIQUE,
        PRIMARY KEY (user_id, collection, key)
    );
    INSERT INTO entities_by_user
        SELECT 'default', collection, key, value, deleted, updated_at, client_id, seq, version
        FROM entities;
    DROP TABLE entities;
    ALTER TABLE entities_by_user RENAME TO entities;
    CREATE INDEX entities_by_user_version ON entities (user_id, version);
    ALTER TABLE backups ADD COLUMN user_id TEXT NOT NULL DEFAULT 'default';
    ALTER TABLE backups ADD COLUMN public_id TEXT;                    -- 32 hex digits
    UPDATE backups SET public_id = lower(hex(randomblob(16)));
    CREATE UNIQUE INDEX backups_by_public_id ON backups (public_id);
    DROP INDEX backups_by_content;
    CREATE UNIQUE INDEX backups_by_content ON backups (user_id, coalesce(client_id, ''), checksum);
    CREATE TABLE captured_by_user (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id         TEXT NOT NULL,
        path            TEXT NOT NULL,
        body            TEXT NOT NULL,
        idempotency_key TEXT,
        received_at     INTEGER NOT NULL,
        UNIQUE (user_id, idempotency_key)
    );
    INSERT INTO captured_by_user
        SELECT id, 'default', path, body, idempotency_key, received_at FROM captured_requests;
    DROP TABLE captured_requests;
    ALTER TABLE captured_by_user RENAME TO captured_requests;
    CREATE TABLE user_counters (
        user_id TEXT NOT NULL,
        name    TEXT NOT NULL,
        value   INTEGER NOT NULL,
        PRIMARY KEY (user_id, name)
    ) WITHOUT ROWID;
    INSERT INTO user_counters SELECT 'default', name, value FROM counters WHERE name <> 'version';
    DELETE FROM counters WHERE name <> 'version';
    ",
    // 4: retention (`crate::retention`). What pruning must remember: each client's highest
    //    forgotten seq, each user's newest forgotten tombstone, and (in `counters`, as
    //    `pruned_version`) the newest version a forgotten mutation made. Indexes for the
    //    pruner's range reads.
    "
    ALTER TABLE clients ADD COLUMN pruned_through_seq INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE user_horizons (
        user_id                   TEXT PRIMARY KEY,
        tombstones_pruned_through INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX mutations_by_received_at ON mutations (received_at);
    CREATE INDEX captured_by_received_at ON captured_requests (received_at);
    CREATE INDEX tombstones_by_version ON entities (version) WHERE deleted = 1;
    ",
    // 5: blobs (`crate::blobs`): one row per (user, sha256), complete or uploading, and
    //    each accepted chunk of an upload in progress (its bytes are an object of the blob
    //    store, named by `object_key`).
    "
    CREATE TABLE blobs (
        user_id      TEXT NOT NULL,
        sha256       TEXT NOT NULL,          -- 64 lower-case hex digits
        size         INTEGER NOT NULL,
        received     INTEGER NOT NULL,       -- bytes received so far, from 0
        complete     INTEGER NOT NULL DEFAULT 0,
        upload_id    TEXT NOT NULL,          -- names this attempt's part objects
        created_at   INTEGER NOT NULL,
        completed_at INTEGER,
        PRIMARY KEY (user_id, sha256)
    ) WITHOUT ROWID;
    CREATE TABLE blob_parts (
        user_id    TEXT NOT NULL,
        sha256     TEXT NOT NULL,
        upload_id  TEXT NOT NULL,
        first_byte INTEGER NOT NULL,
        length     INTEGER NOT NULL,
        object_key TEXT NOT NULL,
        PRIMARY KEY (user_id, sha256, upload_id, first_byte)
    ) WITHOUT ROWID;
    ",
];

/// The columns [`backup_info`] reads, in its order.
const BACKUP_COLUMNS: &str =
    "public_id, client_id, exported_at, received_at, size, checksum, counts, entities, source, app_version, format";

fn backup_info(r: &rusqlite::Row<'_>) -> rusqlite::Result<BackupInfo> {
    Ok(BackupInfo {
        id: r.get(0)?,
        client_id: r.get(1)?,
        exported_at: r.get(2)?,
        received_at: r.get(3)?,
        size: r.get(4)?,
        checksum: r.get(5)?,
        counts: parse_counts(r.get::<_, Option<String>>(6)?.as_deref()),
        entities: r.get(7)?,
        source: r.get(8)?,
        app_version: r.get(9)?,
        format: r.get(10)?,
    })
}

/// The `counters` row holding the newest version a pruned mutation made.
const PRUNED_VERSION: &str = "pruned_version";

/// Read-only connections beside the writer. Reads are short and mostly CPU (a page of at most
/// 1,000 rows); four keep both cores of a small machine busy while one waits on the disk, and
/// more would only queue on the same cores.
pub const READERS: usize = 4;

/// Prepared statements the writer keeps (rusqlite's default is 16; a push uses about ten, the
/// restore, pruning and blob steps some more).
const WRITER_STATEMENTS: usize = 64;

/// The SQLite database; cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// Push batches waiting for the writer, taken together by [`commit_pending`].
    pending: Arc<Mutex<Vec<PushJob>>>,
    readers: Arc<ReadPool>,
    path: PathBuf,
}

/// The read-only connections, each lent to one read at a time; a read waits (asynchronously,
/// holding no thread) for a free one.
struct ReadPool {
    free: Mutex<Vec<Connection>>,
    available: Semaphore,
}

impl ReadPool {
    /// Lend a connection until the returned guard drops (a panic included: the guard's drop
    /// rolls back the transaction's leftovers and puts it back).
    async fn lend(self: &Arc<Self>) -> Result<Lent, ApiError> {
        self.available
            .acquire()
            .await
            .map_err(|e| ApiError::internal(format!("read pool: {e}")))?
            .forget();
        let conn = self
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .ok_or_else(|| ApiError::internal("read pool: a permit without a connection"))?;
        Ok(Lent {
            conn: Some(conn),
            pool: Arc::clone(self),
        })
    }
}

/// A read connection out of the pool.
struct Lent {
    conn: Option<Connection>,
    pool: Arc<ReadPool>,
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool
                .free
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
            self.pool.available.add_permits(1);
        }
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Open (creating the file and its directory if needed) and migrate the database at
    /// `path`.
    pub async fn open(path: &Path) -> Result<Self, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let owned = path.to_owned();
        tokio::task::spawn_blocking(move || Self::open_blocking(&owned))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    fn open_blocking(path: &Path) -> Result<Self, rusqlite::Error> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            eprintln!("rangersync-server: warning: journal_mode is {mode}, not wal");
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Every statement of a push is prepared once and kept: compiling the SQL again for
        // each mutation was about half the writer's CPU.
        conn.set_prepared_statement_cache_capacity(WRITER_STATEMENTS);
        migrate(&mut conn)?;
        // Opened after the migrations, so no reader ever sees an older schema.
        let readers = (0..READERS)
            .map(|_| open_reader(path))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            pending: Arc::new(Mutex::new(Vec::new())),
            readers: Arc::new(ReadPool {
                free: Mutex::new(readers),
                available: Semaphore::new(READERS),
            }),
            path: path.to_owned(),
        })
    }

    /// Run `f` in one write transaction (`BEGIN IMMEDIATE`) on a blocking thread; commit when
    /// it returns `Ok`, roll back otherwise. The work runs to completion even when the HTTP
    /// request that asked for it goes away.
    async fn write<T, F>(&self, user: &str, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store<'_>) -> Result<T, ApiError> + Send + 'static,
    {
        self.run(TransactionBehavior::Immediate, true, user, f)
            .await
    }

    /// Run `f` in one read transaction (a consistent view) on a read-only connection of the
    /// pool, on a blocking thread. It never waits for the writer, nor the writer for it.
    async fn read<T, F>(&self, user: &str, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store<'_>) -> Result<T, ApiError> + Send + 'static,
    {
        let mut lent = self.readers.lend().await?;
        let user = user.to_owned();
        finish(tokio::task::spawn_blocking(move || {
            let conn = lent
                .conn
                .as_mut()
                .ok_or_else(|| ApiError::internal("read pool: a lent connection is gone"))?;
            in_transaction(conn, TransactionBehavior::Deferred, false, user, f)
        }))
        .await
    }

    async fn run<T, F>(
        &self,
        behavior: TransactionBehavior,
        commit: bool,
        user: &str,
        f: F,
    ) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store<'_>) -> Result<T, ApiError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let user = user.to_owned();
        finish(tokio::task::spawn_blocking(move || {
            in_transaction(&mut lock(&conn), behavior, commit, user, f)
        }))
        .await
    }

    /// Apply a validated push batch of `user`, atomically: with the batches of other
    /// requests waiting for the writer at the same time, in one transaction (group commit,
    /// see `commit_pending`), each batch inside its own savepoint. Answered after the
    /// commit, so an acknowledgement is as durable as before.
    pub async fn push(
        &self,
        user: &str,
        mutations: Vec<Mutation>,
        now: Millis,
    ) -> Result<Vec<MutationResult>, ApiError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        lock(&self.pending).push(PushJob {
            user: user.to_owned(),
            mutations,
            now,
            reply,
        });
        let conn = Arc::clone(&self.conn);
        let pending = Arc::clone(&self.pending);
        let runtime = tokio::runtime::Handle::current();
        // Not awaited: the batch is applied to its end even when this request goes away.
        drop(tokio::task::spawn_blocking(move || {
            commit_pending(&conn, &pending, &runtime);
        }));
        answer
            .await
            .map_err(|_| ApiError::internal("database task failed: a push batch was dropped"))?
    }

    /// See [`crate::storage::Db::changes_after`].
    pub async fn changes_after(
        &self,
        user: &str,
        since: u64,
        limit: usize,
    ) -> Result<Vec<Entity>, ApiError> {
        self.read(user, move |store| store.changes_after(since, limit))
            .await
    }

    /// See [`crate::storage::Db::all_entities`].
    pub async fn all_entities(&self, user: &str) -> Result<Vec<Entity>, ApiError> {
        self.read(user, |store| store.all_entities()).await
    }

    /// See [`crate::storage::Db::insert_backup`].
    pub async fn insert_backup(
        &self,
        user: &str,
        backup: NewBackup,
        keep: usize,
    ) -> Result<BackupStored, ApiError> {
        self.write(user, move |store| store.insert_backup(&backup, keep))
            .await
    }

    /// See [`crate::storage::Db::backups`].
    pub async fn backups(
        &self,
        user: &str,
        client_id: Option<String>,
        limit: usize,
    ) -> Result<Vec<BackupInfo>, ApiError> {
        self.read(user, move |store| {
            store.backups(client_id.as_deref(), limit)
        })
        .await
    }

    /// See [`crate::storage::Db::backup_body`].
    pub async fn backup_body(
        &self,
        user: &str,
        id: String,
    ) -> Result<Option<(String, String)>, ApiError> {
        self.read(user, move |store| store.backup_body(&id)).await
    }

    /// A backup's text by its row (for the counts backfill).
    pub async fn backup_text(&self, row: i64) -> Result<Option<String>, ApiError> {
        self.read("", move |store| {
            Ok(store
                .tx
                .query_row(
                    "SELECT body FROM backups WHERE id = ?1",
                    params![row],
                    |r| r.get(0),
                )
                .optional()?)
        })
        .await
    }

    /// Rows of the backups with no counts.
    pub async fn backups_without_counts(&self) -> Result<Vec<i64>, ApiError> {
        self.read("", |store| {
            let mut stmt = store
                .tx
                .prepare("SELECT id FROM backups WHERE counts IS NULL ORDER BY id")?;
            let ids = stmt.query_map([], |r| r.get(0))?;
            Ok(ids.collect::<Result<_, _>>()?)
        })
        .await
    }

    /// Set a backup's counts (JSON text), by its row.
    pub async fn set_backup_counts(&self, row: i64, counts: String) -> Result<(), ApiError> {
        self.write("", move |store| {
            store.tx.execute(
                "UPDATE backups SET counts = ?2 WHERE id = ?1",
                params![row, counts],
            )?;
            Ok(())
        })
        .await
    }

    /// See [`crate::storage::Db::restore`]: a dry run in a read transaction, a real restore
    /// in a write transaction (`BEGIN IMMEDIATE`: the only writer until it commits).
    pub async fn restore(
        &self,
        user: &str,
        snapshot: Snapshot,
        dry_run: bool,
        now: Millis,
    ) -> Result<RestoreOutcome, ApiError> {
        let runtime = tokio::runtime::Handle::current();
        let job = move |store: &mut Store<'_>| {
            runtime.block_on(apply_restore(store, &snapshot, dry_run, now))
        };
        if dry_run {
            self.read(user, job).await
        } else {
            self.write(user, job).await
        }
    }

    /// See [`crate::storage::Db::insert_captured`].
    pub async fn insert_captured(
        &self,
        user: &str,
        path: String,
        body: String,
        idempotency_key: Option<String>,
        now: Millis,
    ) -> Result<bool, ApiError> {
        self.write(user, move |store| {
            store.insert_captured(&path, &body, idempotency_key.as_deref(), now)
        })
        .await
    }

    /// See [`crate::storage::Db::stats`].
    pub async fn stats(&self, user: &str) -> Result<(Counters, Vec<CapturedRow>), ApiError> {
        self.read(user, |store| Ok((store.counters()?, store.captured()?)))
            .await
    }

    /// See [`crate::storage::Db::mutations_of`].
    pub async fn mutations_of(
        &self,
        user: &str,
        client_id: String,
    ) -> Result<Vec<MutationRow>, ApiError> {
        self.read(user, move |store| store.mutations_of(&client_id))
            .await
    }

    /// See [`crate::storage::Db::prune_step`].
    pub async fn prune_step(&self, before: Millis, limit: usize) -> Result<Pruned, ApiError> {
        self.write("", move |store| store.prune_step(before, limit))
            .await
    }

    /// See [`crate::storage::Db::wipe`].
    pub async fn wipe(&self) -> Result<(), ApiError> {
        self.write("", |store| store.wipe()).await
    }

    /// See [`crate::storage::Db::blob`].
    pub async fn blob(&self, user: &str, sha256: String) -> Result<Option<BlobRow>, ApiError> {
        self.read(user, move |store| store.blob(&sha256)).await
    }

    /// See [`crate::storage::Db::begin_blob`]. `BEGIN IMMEDIATE` makes the quota check and
    /// the insert one step.
    pub async fn begin_blob(
        &self,
        user: &str,
        sha256: String,
        size: u64,
        upload_id: String,
        quota: u64,
        now: Millis,
    ) -> Result<BlobBegun, ApiError> {
        self.write(user, move |store| {
            if let Some(row) = store.blob(&sha256)? {
                return Ok(BlobBegun::Existing(row));
            }
            let used: u64 = store.tx.query_row(
                "SELECT coalesce(sum(size), 0) FROM blobs WHERE user_id = ?1",
                params![store.user],
                |r| r.get(0),
            )?;
            if used.saturating_add(size) > quota {
                return Ok(BlobBegun::OverQuota { used });
            }
            store.tx.execute(
                "INSERT INTO blobs (user_id, sha256, size, received, complete, upload_id, created_at)
                 VALUES (?1, ?2, ?3, 0, 0, ?4, ?5)",
                params![store.user, sha256, size, upload_id, now],
            )?;
            Ok(BlobBegun::Created(BlobRow {
                size,
                received: 0,
                complete: false,
                upload_id,
            }))
        })
        .await
    }

    /// See [`crate::storage::Db::append_blob_part`].
    pub async fn append_blob_part(
        &self,
        user: &str,
        sha256: String,
        upload_id: String,
        part: BlobPart,
    ) -> Result<BlobAppended, ApiError> {
        self.write(user, move |store| {
            let end = part.start + part.len;
            let moved = store.tx.execute(
                "UPDATE blobs SET received = ?5
                 WHERE user_id = ?1 AND sha256 = ?2 AND upload_id = ?3 AND received = ?4
                   AND complete = 0",
                params![store.user, sha256, upload_id, part.start, end],
            )?;
            if moved == 0 {
                return Ok(BlobAppended::Moved(store.blob(&sha256)?));
            }
            store.tx.execute(
                "INSERT INTO blob_parts (user_id, sha256, upload_id, first_byte, length, object_key)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![store.user, sha256, upload_id, part.start, part.len, part.key],
            )?;
            Ok(BlobAppended::Appended(end))
        })
        .await
    }

    /// See [`crate::storage::Db::blob_parts`].
    pub async fn blob_parts(
        &self,
        user: &str,
        sha256: String,
        upload_id: String,
    ) -> Result<Vec<BlobPart>, ApiError> {
        self.read(user, move |store| {
            let mut stmt = store.tx.prepare(
                "SELECT first_byte, length, object_key FROM blob_parts
                 WHERE user_id = ?1 AND sha256 = ?2 AND upload_id = ?3 ORDER BY first_byte",
            )?;
            let rows = stmt.query_map(params![store.user, sha256, upload_id], |r| {
                Ok(BlobPart {
                    start: r.get(0)?,
                    len: r.get(1)?,
                    key: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    /// See [`crate::storage::Db::complete_blob`].
    pub async fn complete_blob(
        &self,
        user: &str,
        sha256: String,
        upload_id: String,
        now: Millis,
    ) -> Result<bool, ApiError> {
        self.write(user, move |store| {
            let done = store.tx.execute(
                "UPDATE blobs SET complete = 1, received = size, completed_at = ?4
                 WHERE user_id = ?1 AND sha256 = ?2 AND upload_id = ?3 AND complete = 0",
                params![store.user, sha256, upload_id, now],
            )?;
            store.forget_parts(&sha256, &upload_id)?;
            Ok(done == 1)
        })
        .await
    }

    /// See [`crate::storage::Db::discard_blob`].
    pub async fn discard_blob(
        &self,
        user: &str,
        sha256: String,
        upload_id: String,
    ) -> Result<bool, ApiError> {
        self.write(user, move |store| {
            let gone = store.tx.execute(
                "DELETE FROM blobs
                 WHERE user_id = ?1 AND sha256 = ?2 AND upload_id = ?3 AND complete = 0",
                params![store.user, sha256, upload_id],
            )?;
            store.forget_parts(&sha256, &upload_id)?;
            Ok(gone == 1)
        })
        .await
    }

    /// See [`crate::storage::Db::blob_counts`].
    pub async fn blob_counts(&self, user: &str) -> Result<BlobCounts, ApiError> {
        self.read(user, |store| {
            Ok(store.tx.query_row(
                "SELECT coalesce(sum(complete), 0), coalesce(sum(1 - complete), 0),
                        coalesce(sum(size), 0)
                 FROM blobs WHERE user_id = ?1",
                params![store.user],
                |r| {
                    Ok(BlobCounts {
                        complete: r.get(0)?,
                        uploading: r.get(1)?,
                        bytes: r.get(2)?,
                    })
                },
            )?)
        })
        .await
    }
}

/// A push batch waiting for the writer, and where its answer goes.
struct PushJob {
    user: String,
    mutations: Vec<Mutation>,
    now: Millis,
    reply: tokio::sync::oneshot::Sender<Result<Vec<MutationResult>, ApiError>>,
}

/// At most this many mutations go into one group transaction (at least one whole batch),
/// so that a burst of big batches does not become one huge transaction.
const GROUP_MUTATIONS: usize = 2_000;

/// Group commit: take the writer, then every push batch waiting for it, and apply them in one
/// `BEGIN IMMEDIATE` transaction, each batch in its own savepoint (a batch that fails is
/// rolled back to it, alone, and answered its error), then commit once and answer them all.
/// One commit (one flush of the log) serves every batch that queued while the one before was
/// committing. Versions are still taken one after another inside the only write transaction,
/// so they become visible in commit order. Every push spawns one of these, and each commits one
/// group at most, then gives up the writer (so that restores, backups and pruning get their turn
/// under steady pushes, and no blocking thread waits longer than one group): there are always at
/// least as many calls still to run as batches queued, as each call takes at least one batch
/// when there is any. One that finds the queue empty (others took its batch) does nothing.
fn commit_pending(
    conn: &Mutex<Connection>,
    pending: &Mutex<Vec<PushJob>>,
    runtime: &tokio::runtime::Handle,
) {
    let mut conn = lock(conn);
    {
        let jobs: Vec<PushJob> = {
            let mut queue = lock(pending);
            let mut take = 0;
            let mut mutations = 0;
            while take < queue.len() && (take == 0 || mutations < GROUP_MUTATIONS) {
                mutations += queue[take].mutations.len();
                take += 1;
            }
            queue.drain(..take).collect()
        };
        if jobs.is_empty() {
            return;
        }
        let mut answers = Vec::with_capacity(jobs.len());
        let group = (|| -> Result<(), ApiError> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut store = Store {
                tx,
                user: String::new(),
                versions: Vec::new(),
            };
            for job in &jobs {
                store.user.clone_from(&job.user);
                store.versions.clear();
                store.tx.execute_batch("SAVEPOINT push_batch")?;
                // The protocol is async (PostgreSQL's steps are); SQLite's steps never wait,
                // so the batch is driven to the end right here on the blocking thread.
                let answer = runtime.block_on(apply_batch(&mut store, &job.mutations, job.now));
                if answer.is_err() {
                    store.tx.execute_batch("ROLLBACK TO push_batch")?;
                }
                store.tx.execute_batch("RELEASE push_batch")?;
                answers.push(answer);
            }
            store.tx.commit()?;
            Ok(())
        })();
        match group {
            Ok(()) => {
                for (job, answer) in jobs.into_iter().zip(answers) {
                    let _ = job.reply.send(answer);
                }
            }
            // Nothing of the group committed.
            Err(e) => {
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// A read-only connection to the database at `path` (already in WAL mode, migrated).
fn open_reader(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // A WAL reader waits only while the writer recovers or resets the log.
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// Run `f` in one transaction on `conn`, committing when asked and `f` returned `Ok`.
fn in_transaction<T, F>(
    conn: &mut Connection,
    behavior: TransactionBehavior,
    commit: bool,
    user: String,
    f: F,
) -> Result<T, ApiError>
where
    F: FnOnce(&mut Store<'_>) -> Result<T, ApiError>,
{
    let tx = conn.transaction_with_behavior(behavior)?;
    let mut store = Store {
        tx,
        user,
        versions: Vec::new(),
    };
    let out = f(&mut store)?;
    if commit {
        store.tx.commit()?;
    }
    Ok(out)
}

/// The answer of a database task; a task that panicked is a `500`.
async fn finish<T>(job: tokio::task::JoinHandle<Result<T, ApiError>>) -> Result<T, ApiError> {
    match job.await {
        Ok(result) => result,
        Err(e) => Err(ApiError::internal(format!("database task failed: {e}"))),
    }
}

/// A panic inside a transaction poisons the mutex; the transaction was rolled back when it
/// unwound, so the connection is fine to use again.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn migrate(conn: &mut Connection) -> Result<(), rusqlite::Error> {
    let current: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > MIGRATIONS.len() {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "database schema version {current} is newer than this server ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// The tables, inside one transaction.
pub struct Store<'a> {
    tx: rusqlite::Transaction<'a>,
    /// Whose rows this transaction reads and writes (empty for the whole-database steps).
    user: String,
    /// The versions taken by this push batch so far, in order.
    versions: Vec<u64>,
}

fn op_str(op: Op) -> &'static str {
    match op {
        Op::Put => "put",
        Op::Delete => "delete",
    }
}

/// Every step is a plain statement: `BEGIN IMMEDIATE` already made this the only writer.
impl PushTx for Store<'_> {
    async fn own_clients(&mut self, client_ids: &[&str]) -> Result<Option<String>, ApiError> {
        for &client_id in client_ids {
            if self.claim_client(client_id)? {
                continue;
            }
            return Ok(Some(client_id.to_owned()));
        }
        Ok(None)
    }

    async fn begin(&mut self, _: &[Mutation]) -> Result<(), ApiError> {
        Ok(())
    }

    async fn claim(&mut self, m: &Mutation) -> Result<Option<Seen>, ApiError> {
        self.seen(&m.client_id, m.seq)
    }

    async fn record(
        &mut self,
        m: &Mutation,
        status: MutationStatus,
        reason: Option<&str>,
        now: Millis,
    ) -> Result<(), ApiError> {
        let version = match status {
            MutationStatus::Applied => self.versions.last().copied(),
            _ => None,
        };
        self.record_mutation(m, status, version, reason, now)
    }

    async fn entity(&mut self, collection: &str, key: &str) -> Result<Option<Stored>, ApiError> {
        self.stored_entity(collection, key)
    }

    async fn write_if_newer(&mut self, m: &Mutation) -> Result<Written, ApiError> {
        let stored = self.stored_entity(&m.collection, &m.key)?;
        let incoming = Stamp::of(m);
        match conflict::decide(stored.as_ref().map(|s| &s.stamp), &incoming) {
            Verdict::Apply => {
                let version = self.next_version()?;
                let deleted = m.op == Op::Delete;
                let state = Stored {
                    value: if deleted {
                        Value::Null
                    } else {
                        m.value.clone()
                    },
                    deleted,
                    stamp: incoming,
                    version,
                };
                self.put_entity(&m.collection, &m.key, &state)?;
                self.versions.push(version);
                Ok(Written::Applied)
            }
            // decide() only answers Conflict against a stored write.
            Verdict::Conflict => stored
                .map(Written::Lost)
                .ok_or_else(|| ApiError::internal("conflict without a stored entity")),
        }
    }

    async fn finish(
        &mut self,
        applied: &[&Mutation],
        counts: &Counters,
    ) -> Result<Vec<u64>, ApiError> {
        debug_assert_eq!(applied.len(), self.versions.len());
        self.add_counters(counts)?;
        Ok(std::mem::take(&mut self.versions))
    }
}

/// `BEGIN IMMEDIATE` already made a real restore the only writer.
impl RestoreTx for Store<'_> {
    async fn exclude_writers(&mut self) -> Result<(), ApiError> {
        Ok(())
    }

    async fn stored(
        &mut self,
        keys: &[(&str, &str)],
    ) -> Result<HashMap<(String, String), Stored>, ApiError> {
        let mut found = HashMap::new();
        for &(collection, key) in keys {
            if let Some(stored) = self.stored_entity(collection, key)? {
                found.insert((collection.to_owned(), key.to_owned()), stored);
            }
        }
        Ok(found)
    }

    async fn overwrite(&mut self, rows: &[Overwrite]) -> Result<Vec<u64>, ApiError> {
        let n = rows.len() as u64;
        let last: u64 = self.tx.query_row(
            "INSERT INTO counters (name, value) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET value = value + excluded.value
             RETURNING value",
            params![VERSION_COUNTER, n],
            |r| r.get(0),
        )?;
        let base = last - n;
        let mut stmt = self.tx.prepare_cached(
            "INSERT INTO entities (collection, key, value, deleted, updated_at, client_id, seq, version, user_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (user_id, collection, key) DO UPDATE SET
               value = excluded.value, deleted = excluded.deleted, updated_at = excluded.updated_at,
               client_id = excluded.client_id, seq = excluded.seq, version = excluded.version",
        )?;
        let mut versions = Vec::with_capacity(rows.len());
        for (row, version) in rows.iter().zip(base + 1..) {
            stmt.execute(params![
                row.collection,
                row.key,
                json_text(&row.value),
                row.deleted,
                row.stamp.updated_at,
                row.stamp.client_id,
                row.stamp.seq,
                version,
                self.user
            ])?;
            versions.push(version);
        }
        Ok(versions)
    }
}

impl Store<'_> {
    /// This user's blob `sha256`.
    fn blob(&self, sha256: &str) -> Result<Option<BlobRow>, ApiError> {
        Ok(self
            .tx
            .query_row(
                "SELECT size, received, complete, upload_id FROM blobs
                 WHERE user_id = ?1 AND sha256 = ?2",
                params![self.user, sha256],
                |r| {
                    Ok(BlobRow {
                        size: r.get(0)?,
                        received: r.get(1)?,
                        complete: r.get(2)?,
                        upload_id: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    /// Forget the part rows of one upload.
    fn forget_parts(&self, sha256: &str, upload_id: &str) -> Result<(), ApiError> {
        self.tx.execute(
            "DELETE FROM blob_parts WHERE user_id = ?1 AND sha256 = ?2 AND upload_id = ?3",
            params![self.user, sha256, upload_id],
        )?;
        Ok(())
    }

    /// Make `client_id` this user's if no user has it yet; whether it is this user's.
    fn claim_client(&self, client_id: &str) -> Result<bool, ApiError> {
        self.tx
            .prepare_cached(
                "INSERT INTO clients (client_id, user_id) VALUES (?1, ?2)
             ON CONFLICT (client_id) DO NOTHING",
            )?
            .execute(params![client_id, self.user])?;
        let owner: String = self
            .tx
            .prepare_cached("SELECT user_id FROM clients WHERE client_id = ?1")?
            .query_row(params![client_id], |r| r.get(0))?;
        Ok(owner == self.user)
    }

    /// The first outcome of `(client_id, seq)`, if it was seen; `applied` for a seq at or
    /// below the client's highest pruned one (its record was forgotten, see
    /// [`crate::retention`]).
    fn seen(&self, client_id: &str, seq: u64) -> Result<Option<Seen>, ApiError> {
        let recorded = self
            .tx
            .prepare_cached(
                "SELECT status, reason FROM mutations WHERE client_id = ?1 AND seq = ?2",
            )?
            .query_row(params![client_id, seq], |r| {
                Ok(Seen {
                    status: MutationStatus::parse(&r.get::<_, String>(0)?),
                    reason: r.get(1)?,
                })
            })
            .optional()?;
        if recorded.is_some() {
            return Ok(recorded);
        }
        let floor: u64 = self
            .tx
            .prepare_cached("SELECT pruned_through_seq FROM clients WHERE client_id = ?1")?
            .query_row(params![client_id], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        Ok((seq <= floor).then_some(Seen {
            status: MutationStatus::Applied,
            reason: None,
        }))
    }

    /// Record the first outcome of a mutation.
    fn record_mutation(
        &self,
        m: &Mutation,
        status: MutationStatus,
        version: Option<u64>,
        reason: Option<&str>,
        now: Millis,
    ) -> Result<(), ApiError> {
        self.tx.prepare_cached("INSERT INTO mutations (client_id, seq, status, collection, key, op, version, reason, received_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)")?.execute(
            params![m.client_id, m.seq, status.as_str(), m.collection, m.key, op_str(m.op), version, reason, now],
        )?;
        Ok(())
    }

    /// The stored state of an entity with the stamp of the write that made it.
    fn stored_entity(&self, collection: &str, key: &str) -> Result<Option<Stored>, ApiError> {
        Ok(self
            .tx
            .prepare_cached(
                "SELECT value, deleted, updated_at, client_id, seq, version
                 FROM entities WHERE user_id = ?3 AND collection = ?1 AND key = ?2",
            )?
            .query_row(params![collection, key, self.user], |r| {
                Ok(Stored {
                    value: parse_json(&r.get::<_, String>(0)?),
                    deleted: r.get(1)?,
                    stamp: Stamp {
                        updated_at: r.get(2)?,
                        client_id: r.get(3)?,
                        seq: r.get(4)?,
                    },
                    version: r.get(5)?,
                })
            })
            .optional()?)
    }

    /// Take the next global version (the pull order).
    fn next_version(&self) -> Result<u64, ApiError> {
        Ok(self
            .tx
            .prepare_cached(
                "INSERT INTO counters (name, value) VALUES (?1, 1)
             ON CONFLICT (name) DO UPDATE SET value = value + 1
             RETURNING value",
            )?
            .query_row(params![VERSION_COUNTER], |r| r.get(0))?)
    }

    /// Store an entity's new state (a tombstone when `deleted`).
    fn put_entity(&self, collection: &str, key: &str, state: &Stored) -> Result<(), ApiError> {
        self.tx.prepare_cached("INSERT INTO entities (collection, key, value, deleted, updated_at, client_id, seq, version, user_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (user_id, collection, key) DO UPDATE SET
               value = excluded.value, deleted = excluded.deleted, updated_at = excluded.updated_at,
               client_id = excluded.client_id, seq = excluded.seq, version = excluded.version")?.execute(
            params![
                collection,
                key,
                json_text(&state.value),
                state.deleted,
                state.stamp.updated_at,
                state.stamp.client_id,
                state.stamp.seq,
                state.version,
                self.user
            ],
        )?;
        Ok(())
    }

    /// Add to the persistent counters.
    fn add_counters(&self, c: &Counters) -> Result<(), ApiError> {
        for (name, n) in c.named() {
            if n > 0 {
                self.tx
                    .prepare_cached(
                        "INSERT INTO user_counters (user_id, name, value) VALUES (?3, ?1, ?2)
                     ON CONFLICT (user_id, name) DO UPDATE SET value = value + excluded.value",
                    )?
                    .execute(params![name, n, self.user])?;
            }
        }
        Ok(())
    }

    /// The persistent counters.
    fn counters(&self) -> Result<Counters, ApiError> {
        let get = |name: &str| -> Result<u64, ApiError> {
            Ok(self
                .tx
                .query_row(
                    "SELECT value FROM user_counters WHERE user_id = ?2 AND name = ?1",
                    params![name, self.user],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(0))
        };
        Ok(Counters {
            push_requests: get("push_requests")?,
            mutations_applied: get("mutations_applied")?,
            duplicates: get("duplicates")?,
            conflicts: get("conflicts")?,
            rejected: get("rejected")?,
        })
    }

    fn entities_where(
        &self,
        sql_tail: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<Entity>, ApiError> {
        let sql = format!(
            "SELECT collection, key, value, deleted, updated_at, version FROM entities
             WHERE user_id = :user {sql_tail}"
        );
        let mut stmt = self.tx.prepare(&sql)?;
        let rows = stmt.query_map(args, |r| {
            Ok(Entity {
                collection: r.get(0)?,
                key: r.get(1)?,
                value: parse_json(&r.get::<_, String>(2)?),
                deleted: r.get(3)?,
                updated_at: r.get(4)?,
                version: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Up to `limit` entities whose version is greater than `since`, oldest first; `410
    /// cursor_expired` when a tombstone after `since` was pruned.
    fn changes_after(&self, since: u64, limit: usize) -> Result<Vec<Entity>, ApiError> {
        let pruned_through: u64 = self
            .tx
            .query_row(
                "SELECT tombstones_pruned_through FROM user_horizons WHERE user_id = ?1",
                params![self.user],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        if expired(since, pruned_through) {
            return Err(cursor_expired(since, pruned_through));
        }
        self.entities_where(
            "AND version > :since ORDER BY version LIMIT :limit",
            rusqlite::named_params! {":user": self.user, ":since": since, ":limit": limit},
        )
    }

    /// One pruning step (see [`crate::retention`]): at most `limit` applied mutation records
    /// received before `before` (raising their clients' floors and the pruned version), the
    /// tombstones at or below the pruned version (raising their users' horizons), and
    /// captured requests received before `before`.
    fn prune_step(&self, before: Millis, limit: usize) -> Result<Pruned, ApiError> {
        let mut old = self.tx.prepare_cached(
            "SELECT client_id, seq, version FROM mutations
             WHERE received_at < ?1 AND status = 'applied' LIMIT ?2",
        )?;
        let rows = old
            .query_map(params![before, limit as u64], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, u64>(1)?,
                    r.get::<_, Option<u64>>(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut floors: HashMap<&str, u64> = HashMap::new();
        let mut newest_version = 0;
        for (client_id, seq, version) in &rows {
            let floor = floors.entry(client_id).or_default();
            *floor = (*floor).max(*seq);
            newest_version = newest_version.max(version.unwrap_or(0));
        }
        for (client_id, floor) in &floors {
            self.tx.execute(
                "UPDATE clients SET pruned_through_seq = max(pruned_through_seq, ?2)
                 WHERE client_id = ?1",
                params![client_id, floor],
            )?;
        }
        let mut forget = self
            .tx
            .prepare_cached("DELETE FROM mutations WHERE client_id = ?1 AND seq = ?2")?;
        for (client_id, seq, _) in &rows {
            forget.execute(params![client_id, seq])?;
        }
        let pruned_version: u64 = self.tx.query_row(
            "INSERT INTO counters (name, value) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)
             RETURNING value",
            params![PRUNED_VERSION, newest_version],
            |r| r.get(0),
        )?;
        let mut tombstones = self.tx.prepare_cached(
            "SELECT user_id, collection, key, version FROM entities
             WHERE deleted = 1 AND version <= ?1 LIMIT ?2",
        )?;
        let dead = tombstones
            .query_map(params![pruned_version, limit as u64], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, u64>(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut horizons: HashMap<&str, u64> = HashMap::new();
        for (user, _, _, version) in &dead {
            let h = horizons.entry(user).or_default();
            *h = (*h).max(*version);
        }
        for (user, through) in &horizons {
            self.tx.execute(
                "INSERT INTO user_horizons (user_id, tombstones_pruned_through) VALUES (?1, ?2)
                 ON CONFLICT (user_id) DO UPDATE SET tombstones_pruned_through =
                     max(tombstones_pruned_through, excluded.tombstones_pruned_through)",
                params![user, through],
            )?;
        }
        let mut bury = self.tx.prepare_cached(
            "DELETE FROM entities WHERE user_id = ?1 AND collection = ?2 AND key = ?3",
        )?;
        for (user, collection, key, _) in &dead {
            bury.execute(params![user, collection, key])?;
        }
        let captured = self.tx.execute(
            "DELETE FROM captured_requests WHERE id IN (
                 SELECT id FROM captured_requests WHERE received_at < ?1 LIMIT ?2
             )",
            params![before, limit as u64],
        )?;
        Ok(Pruned {
            mutations: rows.len() as u64,
            tombstones: dead.len() as u64,
            captured: captured as u64,
        })
    }

    /// Every entity, tombstones included, by `(collection, key)`.
    fn all_entities(&self) -> Result<Vec<Entity>, ApiError> {
        self.entities_where(
            "ORDER BY collection, key",
            rusqlite::named_params! {":user": self.user},
        )
    }

    /// See [`crate::storage::Db::insert_backup`]. `BEGIN IMMEDIATE` makes the check, the
    /// insert and the pruning one step.
    fn insert_backup(&self, b: &NewBackup, keep: usize) -> Result<BackupStored, ApiError> {
        if let Some(client_id) = &b.client_id {
            if !self.claim_client(client_id)? {
                return Err(client_owned_by_another_user(client_id));
            }
        }
        let owner = b.client_id.as_deref().unwrap_or("");
        let existing: Option<i64> = self
            .tx
            .query_row(
                "SELECT id FROM backups
                 WHERE user_id = ?3 AND coalesce(client_id, '') = ?1 AND checksum = ?2",
                params![owner, b.checksum, self.user],
                |r| r.get(0),
            )
            .optional()?;
        let (id, created) = match existing {
            Some(id) => (id, false),
            None => {
                self.tx.execute(
                    "INSERT INTO backups (exported_at, checksum, source, client_id, app_version,
                                          entities, counts, format, body, size, received_at,
                                          user_id, public_id)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                    params![
                        b.exported_at,
                        b.checksum,
                        b.source,
                        b.client_id,
                        b.app_version,
                        b.entities,
                        counts_text(&b.counts),
                        b.format,
                        b.body,
                        b.body.len() as u64,
                        b.received_at,
                        self.user,
                        new_backup_id()
                    ],
                )?;
                let id = self.tx.last_insert_rowid();
                self.tx.execute(
                    "DELETE FROM backups
                     WHERE user_id = ?3 AND coalesce(client_id, '') = ?1 AND id NOT IN (
                         SELECT id FROM backups WHERE user_id = ?3 AND coalesce(client_id, '') = ?1
                         ORDER BY id DESC LIMIT ?2
                     )",
                    params![owner, keep as u64, self.user],
                )?;
                (id, true)
            }
        };
        let info = self
            .tx
            .query_row(
                &format!("SELECT {BACKUP_COLUMNS} FROM backups WHERE id = ?1"),
                params![id],
                backup_info,
            )
            .optional()?
            .ok_or_else(|| ApiError::internal(format!("backup {id} vanished")))?;
        Ok(BackupStored { info, created })
    }

    /// See [`crate::storage::Db::backups`].
    fn backups(&self, client_id: Option<&str>, limit: usize) -> Result<Vec<BackupInfo>, ApiError> {
        let sql = format!(
            "SELECT {BACKUP_COLUMNS} FROM backups
             WHERE user_id = ?3 AND (?1 IS NULL OR coalesce(client_id, '') = ?1)
             ORDER BY id DESC LIMIT ?2"
        );
        let mut stmt = self.tx.prepare(&sql)?;
        let rows = stmt.query_map(params![client_id, limit as u64, self.user], backup_info)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A backup's format and text.
    fn backup_body(&self, id: &str) -> Result<Option<(String, String)>, ApiError> {
        Ok(self
            .tx
            .query_row(
                "SELECT format, body FROM backups WHERE public_id = ?1 AND user_id = ?2",
                params![id, self.user],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Store a captured request unless its idempotency key was stored before; returns
    /// whether it was stored.
    fn insert_captured(
        &self,
        path: &str,
        body: &str,
        idempotency_key: Option<&str>,
        now: Millis,
    ) -> Result<bool, ApiError> {
        let n = self.tx.execute(
            "INSERT INTO captured_requests (path, body, idempotency_key, received_at, user_id)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (user_id, idempotency_key) DO NOTHING",
            params![path, body, idempotency_key, now, self.user],
        )?;
        Ok(n == 1)
    }

    /// Every captured request, in arrival order.
    fn captured(&self) -> Result<Vec<CapturedRow>, ApiError> {
        let mut stmt = self.tx.prepare(
            "SELECT path, idempotency_key, body, received_at FROM captured_requests
             WHERE user_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![self.user], |r| {
            Ok(CapturedRow {
                path: r.get(0)?,
                idempotency_key: r.get(1)?,
                body: parse_json(&r.get::<_, String>(2)?),
                received_at: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every recorded `(client_id, seq)` of one client, in seq order.
    fn mutations_of(&self, client_id: &str) -> Result<Vec<MutationRow>, ApiError> {
        let mut stmt = self.tx.prepare(
            "SELECT client_id, seq, status, collection, key, op, version, reason, received_at
             FROM mutations WHERE client_id = ?1
               AND client_id IN (SELECT client_id FROM clients WHERE user_id = ?2)
             ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![client_id, self.user], |r| {
            Ok(MutationRow {
                client_id: r.get(0)?,
                seq: r.get(1)?,
                status: MutationStatus::parse(&r.get::<_, String>(2)?),
                collection: r.get(3)?,
                key: r.get(4)?,
                op: r.get(5)?,
                version: r.get(6)?,
                reason: r.get(7)?,
                received_at: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Delete every row of every table, except the global version counter, which keeps
    /// growing so that a client's old cursor never hides new changes.
    fn wipe(&self) -> Result<(), ApiError> {
        self.tx.execute_batch(
            "DELETE FROM entities;
             DELETE FROM mutations;
             DELETE FROM backups;
             DELETE FROM captured_requests;
             DELETE FROM clients;
             DELETE FROM user_counters;
             DELETE FROM user_horizons;
             DELETE FROM blobs;
             DELETE FROM blob_parts;
             DELETE FROM counters WHERE name <> 'version';",
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn a_read_runs_beside_an_open_write_transaction_and_sees_only_what_had_committed() {
        let dir = std::env::temp_dir().join(format!(
            "rangersync-sqlite-readers-{}-{}",
            std::process::id(),
            crate::now_ms()
        ));
        let store = SqliteStore::open(&dir.join("db.sqlite")).await.unwrap();
        let note = Mutation {
            client_id: "c".to_owned(),
            seq: 1,
            collection: "notes".to_owned(),
            key: "k".to_owned(),
            op: Op::Put,
            value: Value::from("before"),
            updated_at: 1,
        };
        store.push("u", vec![note], crate::now_ms()).await.unwrap();

        let (entered, in_write) = tokio::sync::oneshot::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write("u", move |s| {
                        s.tx.execute("UPDATE entities SET value = '\"after\"'", [])?;
                        let _ = entered.send(());
                        let _ = released.recv();
                        Ok(())
                    })
                    .await
            })
        };
        in_write.await.unwrap();
        // With one connection for everything this read would wait for the writer forever.
        let seen = tokio::time::timeout(Duration::from_secs(60), store.all_entities("u"))
            .await
            .expect("the read does not wait for the writer")
            .unwrap();
        assert_eq!(seen[0].value, Value::from("before"));
        release.send(()).unwrap();
        writer.await.unwrap().unwrap();
        let seen = store.all_entities("u").await.unwrap();
        assert_eq!(seen[0].value, Value::from("after"));
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn batches_that_wait_for_the_writer_commit_together_and_a_failing_one_alone_is_undone() {
        let dir = std::env::temp_dir().join(format!(
            "rangersync-sqlite-group-{}-{}",
            std::process::id(),
            crate::now_ms()
        ));
        let store = SqliteStore::open(&dir.join("db.sqlite")).await.unwrap();
        let note = |client: &str, seq: u64| Mutation {
            client_id: client.to_owned(),
            seq,
            collection: "notes".to_owned(),
            key: format!("{client}-{seq}"),
            op: Op::Put,
            value: Value::from(format!("{client} {seq}")),
            updated_at: 1,
        };
        // "taken" is user a's client.
        store
            .push("a", vec![note("taken", 1)], crate::now_ms())
            .await
            .unwrap();

        // Hold the writer while four batches queue for it.
        let (entered, in_write) = tokio::sync::oneshot::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write("", move |_| {
                        let _ = entered.send(());
                        let _ = released.recv();
                        Ok(())
                    })
                    .await
            })
        };
        in_write.await.unwrap();
        let mut pushes = Vec::new();
        for (user, client) in [("u", "c0"), ("u", "c1"), ("intruder", "taken"), ("u", "c2")] {
            let pusher = store.clone();
            // The intruder's batch first claims the new client c9, then fails on "taken".
            let batch = if user == "intruder" {
                vec![note("c9", 1), note(client, 2)]
            } else {
                vec![note(client, 2), note(client, 3)]
            };
            pushes.push(tokio::spawn(async move {
                pusher.push(user, batch, crate::now_ms()).await
            }));
            // In this order in the queue.
            tokio::time::timeout(Duration::from_secs(60), async {
                while lock(&store.pending).len() < pushes.len() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .expect("the batch queues for the writer");
        }
        release.send(()).unwrap();
        writer.await.unwrap().unwrap();
        let mut answers = Vec::new();
        for push in pushes {
            answers.push(push.await.unwrap());
        }

        // The intruder's batch failed alone; the others were applied, their versions one
        // after another in queue order, all after user a's version 1.
        let refused = answers[2].as_ref().expect_err("a client of another user");
        assert_eq!(
            refused.status,
            axum::http::StatusCode::FORBIDDEN,
            "{refused:?}"
        );
        let versions: Vec<u64> = [0, 1, 3]
            .iter()
            .flat_map(|&i| answers[i].as_ref().unwrap().clone())
            .map(|r| match r {
                MutationResult::Applied { version, .. } => version,
                other => panic!("expected applied: {other:?}"),
            })
            .collect();
        assert_eq!(versions, (2..=7).collect::<Vec<u64>>());
        let feed = store.changes_after("u", 0, 100).await.unwrap();
        let fed: Vec<(String, u64)> = feed.into_iter().map(|e| (e.key, e.version)).collect();
        let expected: Vec<(String, u64)> = ["c0-2", "c0-3", "c1-2", "c1-3", "c2-2", "c2-3"]
            .iter()
            .zip(2..)
            .map(|(k, v)| ((*k).to_owned(), v))
            .collect();
        assert_eq!(fed, expected);
        assert!(store.all_entities("intruder").await.unwrap().is_empty());
        // The intruder's claim of c9 was undone with its batch: c9 is still free.
        let again = store
            .push("u", vec![note("c9", 1)], crate::now_ms())
            .await
            .unwrap();
        assert!(
            matches!(again[..], [MutationResult::Applied { version: 8, .. }]),
            "{again:?}"
        );
        // And the group's records were committed: a resend is a duplicate.
        let resent = store
            .push("u", vec![note("c1", 3)], crate::now_ms())
            .await
            .unwrap();
        assert!(
            matches!(resent[..], [MutationResult::Duplicate { seq: 3 }]),
            "{resent:?}"
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
