//! The PostgreSQL store: the only module that knows the PostgreSQL schema. Any number of
//! server instances share one database; every guarantee is kept by the database, none by a
//! process.
//!
//! - **Dedup.** [`PushTx::claim`] inserts the `(client_id, seq)` row first, with
//!   `ON CONFLICT DO NOTHING`. A second instance claiming the same pair while the first is
//!   still committing waits on the primary key until the first ends, then finds its row and
//!   answers from it (`duplicate`, or the first `rejected`/`conflict`); if the first rolled
//!   back, the second applies it. A mutation is never applied twice and never gets a 500.
//! - **The conflict rule in the row.** [`PushTx::write_if_newer`] is one
//!   `INSERT … ON CONFLICT (user_id, collection, key) DO UPDATE … WHERE stored < incoming`:
//!   the comparison runs on the latest committed row under its row lock, so two instances
//!   racing on an entity converge to the greater stamp. `client_id` is `COLLATE "C"` so that
//!   the tuple compares like `rangersync_shared::conflict::Stamp` (bytewise).
//! - **The feed never skips.** Rows are written with version 0 (seen only by their own
//!   transaction); [`PushTx::finish`] then takes the batch's versions from the one-row
//!   `counters` table, whose row lock it holds until commit, and sets them in the same
//!   statement. The next transaction gets its versions only after this one is visible, so
//!   versions become visible in increasing order and a pull can never return version `v`
//!   while a smaller version is still to commit. The cost: batch tails (one statement and
//!   the commit) run one at a time across instances.
//! - **Client ids.** A batch first claims its client ids in the `clients` table, in sorted
//!   order; a concurrent first claim of the same id waits on its primary key.
//! - **No deadlocks.** A batch then takes a transaction-scoped advisory lock per entity it
//!   touches, all in one statement in hash order, then claims its seqs in ascending order,
//!   and takes the counters row last; every transaction waits in that one order, so none
//!   waits in a cycle (entity row locks are then never contended).
//! - **One transaction per batch**, retried whole (a few times) if the database still aborts
//!   it for a deadlock or a serialization failure; a connection lost mid-batch rolls it back.

use std::collections::HashMap;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Transaction};
use rangersync_shared::conflict::{Stamp, Stored};
use rangersync_shared::protocol::{Entity, Millis, Mutation, MutationResult, Op};
use rangersync_shared::snapshot::Snapshot;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use crate::db_location::redact_url;
use crate::error::ApiError;
use crate::push::apply_batch;
use crate::restore::{apply_restore, RestoreOutcome};
use crate::retention::{cursor_expired, expired, Pruned};
use crate::storage::{
    client_owned_by_another_user, counts_text, json_text, new_backup_id, parse_counts, parse_json,
    BackupInfo, BackupStored, BlobAppended, BlobBegun, BlobCounts, BlobPart, BlobRow, CapturedRow,
    Counters, MutationRow, MutationStatus, NewBackup, Overwrite, PushTx, RestoreTx, Seen, Written,
};

/// Schema migrations, in order. Never edit a released one: append a new one.
pub const MIGRATIONS: &[&str] = &[
    // 1: the SQLite schema's tables, with the counters in one row (the version lock).
    r#"
    CREATE TABLE entities (
        collection TEXT NOT NULL,
        key        TEXT NOT NULL,
        value      TEXT NOT NULL,              -- JSON; 'null' for a tombstone
        deleted    BOOLEAN NOT NULL,
        updated_at BIGINT NOT NULL,            -- the stamp of the write that made this state
        client_id  TEXT COLLATE "C" NOT NULL,
        seq        BIGINT NOT NULL,
        version    BIGINT NOT NULL,            -- the pull order; 0 only inside its own transaction
        PRIMARY KEY (collection, key)
    );
    CREATE INDEX entities_by_version ON entities (version);
    CREATE TABLE mutations (
        client_id   TEXT NOT NULL,
        seq         BIGINT NOT NULL,
        status      TEXT NOT NULL CHECK (status IN ('claimed', 'applied', 'conflict', 'rejected')),
        collection  TEXT NOT NULL,
        key         TEXT NOT NULL,
        op          TEXT NOT NULL,
        version     BIGINT,                    -- for 'applied'
        reason      TEXT,                      -- for 'rejected'
        received_at BIGINT NOT NULL,
        PRIMARY KEY (client_id, seq)
    );
    CREATE TABLE counters (
        only_row          BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
        version           BIGINT NOT NULL DEFAULT 0,
        push_requests     BIGINT NOT NULL DEFAULT 0,
        mutations_applied BIGINT NOT NULL DEFAULT 0,
        duplicates        BIGINT NOT NULL DEFAULT 0,
        conflicts         BIGINT NOT NULL DEFAULT 0,
        rejected          BIGINT NOT NULL DEFAULT 0
    );
    INSERT INTO counters DEFAULT VALUES;
    CREATE TABLE backups (
        id          BIGSERIAL PRIMARY KEY,
        exported_at BIGINT NOT NULL,
        checksum    TEXT NOT NULL,
        source      TEXT NOT NULL,
        client_id   TEXT,
        app_version TEXT NOT NULL,
        entities    BIGINT NOT NULL,
        format      TEXT NOT NULL,             -- 'json' | 'yaml': how it was sent
        body        TEXT NOT NULL,             -- the text as received
        received_at BIGINT NOT NULL
    );
    CREATE TABLE captured_requests (
        id              BIGSERIAL PRIMARY KEY,
        path            TEXT NOT NULL,
        body            TEXT NOT NULL,
        idempotency_key TEXT UNIQUE,
        received_at     BIGINT NOT NULL
    );
    "#,
    // 2: as SQLite's migration 2: backups keep their size and counts, one row per (client,
    //    checksum), rows stored before made to agree (their counts are filled in at start).
    r#"
    ALTER TABLE backups ADD COLUMN size BIGINT NOT NULL DEFAULT 0;     -- bytes of body
    ALTER TABLE backups ADD COLUMN counts TEXT;                        -- JSON {collection: n}
    UPDATE backups SET size = octet_length(body), checksum = lower(checksum),
                       client_id = nullif(client_id, '');
    DELETE FROM backups WHERE id NOT IN (
        SELECT min(id) FROM backups GROUP BY coalesce(client_id, ''), checksum
    );
    CREATE UNIQUE INDEX backups_by_content ON backups ((coalesce(client_id, '')), checksum);
    "#,
    // 3: as SQLite's migration 3: users. Rows stored before belong to `default`; a client id
    //    belongs to the user who first used it; entities are keyed by user; backups get
    //    unguessable public ids; idempotency keys and backups are unique per user; the
    //    counters of `/api/test/stats` are kept per user (the version stays in `counters`).
    r#"
    CREATE TABLE clients (
        client_id TEXT PRIMARY KEY,
        user_id   TEXT NOT NULL
    );
    INSERT INTO clients SELECT DISTINCT client_id, 'default' FROM mutations
        ON CONFLICT DO NOTHING;
    INSERT INTO clients SELECT DISTINCT client_id, 'default' FROM backups
        WHERE client_id IS NOT NULL ON CONFLICT DO NOTHING;
    ALTER TABLE entities ADD COLUMN user_id TEXT NOT NULL DEFAULT 'default';
    ALTER TABLE entities DROP CONSTRAINT entities_pkey;
    ALTER TABLE entities ADD PRIMARY KEY (user_id, collection, key);
    DROP INDEX entities_by_version;
    CREATE INDEX entities_by_user_version ON entities (user_id, version);
    ALTER TABLE backups ADD COLUMN user_id TEXT NOT NULL DEFAULT 'default';
    ALTER TABLE backups ADD COLUMN public_id TEXT;                     -- 32 hex digits
    UPDATE backups SET public_id = md5(gen_random_uuid()::text || gen_random_uuid()::text);
    CREATE UNIQUE INDEX backups_by_public_id ON backups (public_id);
    DROP INDEX backups_by_content;
    CREATE UNIQUE INDEX backups_by_content
        ON backups (user_id, (coalesce(client_id, '')), checksum);
    ALTER TABLE captured_requests ADD COLUMN user_id TEXT NOT NULL DEFAULT 'default';
    ALTER TABLE captured_requests DROP CONSTRAINT captured_requests_idempotency_key_key;
    ALTER TABLE captured_requests
        ADD CONSTRAINT captured_requests_by_user UNIQUE (user_id, idempotency_key);
    CREATE TABLE user_counters (
        user_id           TEXT PRIMARY KEY,
        push_requests     BIGINT NOT NULL DEFAULT 0,
        mutations_applied BIGINT NOT NULL DEFAULT 0,
        duplicates        BIGINT NOT NULL DEFAULT 0,
        conflicts         BIGINT NOT NULL DEFAULT 0,
        rejected          BIGINT NOT NULL DEFAULT 0
    );
    INSERT INTO user_counters
        SELECT 'default', push_requests, mutations_applied, duplicates, conflicts, rejected
        FROM counters;
    UPDATE counters SET push_requests = 0, mutations_applied = 0, duplicates = 0,
                        conflicts = 0, rejected = 0;
    "#,
    // 4: as SQLite's migration 4: retention (`crate::retention`). The newest version a
    //    forgotten mutation made is kept in its own one-row table, not in `counters`, whose
    //    row lock is every push's version lock.
    r#"
    ALTER TABLE clients ADD COLUMN pruned_through_seq BIGINT NOT NULL DEFAULT 0;
    CREATE TABLE user_horizons (
        user_id                   TEXT PRIMARY KEY,
        tombstones_pruned_through BIGINT NOT NULL
    );
    CREATE TABLE retention (
        only_row       BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
        pruned_version BIGINT NOT NULL DEFAULT 0
    );
    INSERT INTO retention DEFAULT VALUES;
    CREATE INDEX mutations_by_received_at ON mutations (received_at);
    CREATE INDEX captured_by_received_at ON captured_requests (received_at);
    CREATE INDEX tombstones_by_version ON entities (version) WHERE deleted;
    "#,
    // 5: as SQLite's migration 5: blobs (`crate::blobs`), complete or uploading, and the
    //    accepted chunks of uploads in progress.
    r#"
    CREATE TABLE blobs (
        user_id      TEXT NOT NULL,
        sha256       TEXT NOT NULL,            -- 64 lower-case hex digits
        size         BIGINT NOT NULL,
        received     BIGINT NOT NULL,          -- bytes received so far, from 0
        complete     BOOLEAN NOT NULL DEFAULT FALSE,
        upload_id    TEXT NOT NULL,            -- names this attempt's part objects
        created_at   BIGINT NOT NULL,
        completed_at BIGINT,
        PRIMARY KEY (user_id, sha256)
    );
    CREATE TABLE blob_parts (
        user_id    TEXT NOT NULL,
        sha256     TEXT NOT NULL,
        upload_id  TEXT NOT NULL,
        first_byte BIGINT NOT NULL,
        length     BIGINT NOT NULL,
        object_key TEXT NOT NULL,
        PRIMARY KEY (user_id, sha256, upload_id, first_byte)
    );
    "#,
];

/// The columns [`backup_info`] reads, in its order.
const BACKUP_COLUMNS: &str =
    "public_id, client_id, exported_at, received_at, size, checksum, counts, entities, source, app_version, format";

fn backup_info(r: &Row) -> BackupInfo {
    BackupInfo {
        id: r.get(0),
        client_id: r.get(1),
        exported_at: r.get(2),
        received_at: r.get(3),
        size: to_u64(r.get(4)),
        checksum: r.get(5),
        counts: parse_counts(r.get(6)),
        entities: to_u64(r.get(7)),
        source: r.get(8),
        app_version: r.get(9),
        format: r.get(10),
    }
}

/// The first key of the two-key advisory locks that serialise the backups of one client
/// (two-key locks never collide with the one-key entity locks of a push).
const BACKUP_LOCK_CLASS: i32 = 0x6261_636b; // "back"

/// The first key of the two-key advisory locks that serialise the new uploads of one user
/// (so that two cannot both take the last of a quota).
const BLOB_LOCK_CLASS: i32 = 0x626c_6f62; // "blob"

/// Rows per statement when a restore writes entities.
const RESTORE_CHUNK: usize = 2000;

/// Instances starting together on a new database migrate one at a time under this
/// transaction-scoped advisory lock (any constant; "rangersync" in ASCII, truncated).
const MIGRATION_LOCK: i64 = 0x7261_6e67_6572_7379;

/// Instances prune one at a time under this transaction-scoped advisory lock ("prunelck").
const PRUNE_LOCK: i64 = 0x7072_756e_656c_636b;

/// How many times a batch aborted by a deadlock or a serialization failure is tried.
const PUSH_ATTEMPTS: u32 = 5;

/// The PostgreSQL database behind a connection pool; cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    shown: String,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.shown)
            .field("pool", &self.pool.status())
            .finish()
    }
}

impl PgStore {
    /// Connect with a pool of at most `pool_size` connections and run the migrations.
    pub async fn open(url: &str, pool_size: usize) -> Result<Self, String> {
        let shown = redact_url(url);
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| format!("invalid PostgreSQL URL {shown}: {e}"))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if pool_size == 0 {
            return Err("--db-pool must be at least 1".to_owned());
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                // A connection the database ended (a restart, a failover, an operator's
                // pg_terminate_backend) is found at checkout by one empty query, not by the
                // request that would get it and answer 500 (`Fast` only sees a connection
                // the client already knows is closed).
                recycling_method: RecyclingMethod::Verified,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .build()
            .map_err(|e| format!("connection pool for {shown}: {e}"))?;
        let store = Self { pool, shown };
        let mut client = store
            .pool
            .get()
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", store.shown))?;
        migrate(&mut client)
            .await
            .map_err(|e| format!("migrating {}: {e}", store.shown))?;
        Ok(store)
    }

    async fn client(&self) -> Result<Object, ApiError> {
        self.pool
            .get()
            .await
            .map_err(|e| ApiError::internal(format!("database {}: {e}", self.shown)))
    }

    /// Apply a validated push batch in one transaction, retried whole when the database
    /// aborted it for a deadlock (two batches locking the same entities in other orders).
    pub async fn push(
        &self,
        user: &str,
        mutations: Vec<Mutation>,
        now: Millis,
    ) -> Result<Vec<MutationResult>, ApiError> {
        let mut attempt = 1;
        loop {
            match self.push_once(user, &mutations, now).await {
                Err(PushError::Retry(e)) if attempt < PUSH_ATTEMPTS => {
                    attempt += 1;
                    // A little jitter so the two victims do not meet again at once.
                    let pause = 10 * u64::from(attempt);
                    eprintln!("rangersync-server: push retried ({})", describe(&e));
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                Err(PushError::Retry(e)) => return Err(e.into()),
                Err(PushError::Api(e)) => return Err(e),
                Ok(results) => return Ok(results),
            }
        }
    }

    async fn push_once(
        &self,
        user: &str,
        mutations: &[Mutation],
        now: Millis,
    ) -> Result<Vec<MutationResult>, PushError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut batch = PgTx {
            tx,
            user: user.to_owned(),
            error: None,
            records: Vec::new(),
            seen: HashMap::new(),
        };
        let outcome = apply_batch(&mut batch, mutations, now).await;
        // A database error that the protocol turned into an ApiError is kept here, so that
        // a deadlock can be told apart and retried.
        if let Some(e) = batch.error.take() {
            return Err(e.into());
        }
        let results = outcome?;
        batch.tx.commit().await?;
        Ok(results)
    }

    /// See [`crate::storage::Db::changes_after`].
    pub async fn changes_after(
        &self,
        user: &str,
        since: u64,
        limit: usize,
    ) -> Result<Vec<Entity>, ApiError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT collection, key, value, deleted, updated_at, version FROM entities
                 WHERE user_id = $3 AND version > $1 ORDER BY version LIMIT $2",
                &[&to_i64(since)?, &to_i64(limit as u64)?, &user],
            )
            .await?;
        // Read after the changes: a pruning that committed in between shows here (and the
        // answer is 410), one that did not left the tombstones in the rows read above.
        let pruned_through = client
            .query_opt(
                "SELECT tombstones_pruned_through FROM user_horizons WHERE user_id = $1",
                &[&user],
            )
            .await?
            .map_or(0, |r| to_u64(r.get(0)));
        if expired(since, pruned_through) {
            return Err(cursor_expired(since, pruned_through));
        }
        rows.iter().map(entity_of).collect()
    }

    /// See [`crate::storage::Db::prune_step`]. Instances sharing the database prune one at a
    /// time (a step waits for another instance's to commit, then finds what is left); rows a
    /// push holds locked are skipped (taken by a later pass), so the pruner never waits on a
    /// push and the two never deadlock. Mutation records are
    /// deleted and their clients' floors raised in one transaction, so a push that no longer
    /// finds a record sees the floor that replaced it (see [`PgTx::claim_all`]).
    pub async fn prune_step(&self, before: Millis, limit: usize) -> Result<Pruned, ApiError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PRUNE_LOCK])
            .await?;
        let limit = to_i64(limit as u64)?;
        let forgotten = tx
            .query(
                "DELETE FROM mutations WHERE (client_id, seq) IN (
                     SELECT client_id, seq FROM mutations
                     WHERE received_at < $1 AND status = 'applied'
                     ORDER BY received_at LIMIT $2 FOR UPDATE SKIP LOCKED
                 )
                 RETURNING client_id, seq, version",
                &[&before, &limit],
            )
            .await?;
        let mut floors: HashMap<String, i64> = HashMap::new();
        let mut newest_version = 0i64;
        for r in &forgotten {
            let floor = floors.entry(r.get(0)).or_default();
            *floor = (*floor).max(r.get(1));
            newest_version = newest_version.max(r.get::<_, Option<i64>>(2).unwrap_or(0));
        }
        let (clients, seqs): (Vec<String>, Vec<i64>) = floors.into_iter().unzip();
        tx.execute(
            "UPDATE clients c SET pruned_through_seq = GREATEST(c.pruned_through_seq, d.seq)
             FROM unnest($1::text[], $2::bigint[]) AS d(client_id, seq)
             WHERE c.client_id = d.client_id",
            &[&clients, &seqs],
        )
        .await?;
        let pruned_version: i64 = tx
            .query_one(
                "UPDATE retention SET pruned_version = GREATEST(pruned_version, $1)
                 RETURNING pruned_version",
                &[&newest_version],
            )
            .await?
            .get(0);
        let buried = tx
            .query(
                "DELETE FROM entities WHERE (user_id, collection, key) IN (
                     SELECT user_id, collection, key FROM entities
                     WHERE deleted AND version > 0 AND version <= $1
                     ORDER BY version LIMIT $2 FOR UPDATE SKIP LOCKED
                 ) AND deleted AND version <= $1
                 RETURNING user_id, version",
                &[&pruned_version, &limit],
            )
            .await?;
        let mut horizons: HashMap<String, i64> = HashMap::new();
        for r in &buried {
            let h = horizons.entry(r.get(0)).or_default();
            *h = (*h).max(r.get(1));
        }
        let (users, throughs): (Vec<String>, Vec<i64>) = horizons.into_iter().unzip();
        tx.execute(
            "INSERT INTO user_horizons AS h (user_id, tombstones_pruned_through)
             SELECT * FROM unnest($1::text[], $2::bigint[])
             ON CONFLICT (user_id) DO UPDATE SET tombstones_pruned_through =
                 GREATEST(h.tombstones_pruned_through, excluded.tombstones_pruned_through)",
            &[&users, &throughs],
        )
        .await?;
        let captured = tx
            .execute(
                "DELETE FROM captured_requests WHERE id IN (
                     SELECT id FROM captured_requests WHERE received_at < $1
                     ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED
                 )",
                &[&before, &limit],
            )
            .await?;
        tx.commit().await?;
        Ok(Pruned {
            mutations: forgotten.len() as u64,
            tombstones: buried.len() as u64,
            captured,
        })
    }

    /// See [`crate::storage::Db::all_entities`].
    pub async fn all_entities(&self, user: &str) -> Result<Vec<Entity>, ApiError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT collection, key, value, deleted, updated_at, version FROM entities
                 WHERE user_id = $1
                 ORDER BY collection COLLATE \"C\", key COLLATE \"C\"",
                &[&user],
            )
            .await?;
        rows.iter().map(entity_of).collect()
    }

    /// See [`crate::storage::Db::insert_backup`]. The client's backups are serialised by a
    /// transaction-scoped advisory lock, so that the check, the insert and the pruning of
    /// two concurrent uploads do not interleave (the unique index is the backstop).
    pub async fn insert_backup(
        &self,
        user: &str,
        b: NewBackup,
        keep: usize,
    ) -> Result<BackupStored, ApiError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        if let Some(client_id) = &b.client_id {
            if !claim_client(&tx, user, client_id).await? {
                return Err(client_owned_by_another_user(client_id));
            }
        }
        let owner = b.client_id.as_deref().unwrap_or("");
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($3 || chr(1) || $2))",
            &[&BACKUP_LOCK_CLASS, &owner, &user],
        )
        .await?;
        let existing = tx
            .query_opt(
                "SELECT id FROM backups
                 WHERE user_id = $3 AND coalesce(client_id, '') = $1 AND checksum = $2",
                &[&owner, &b.checksum, &user],
            )
            .await?;
        let (id, created): (i64, bool) = match existing {
            Some(row) => (row.get(0), false),
            None => {
                let row = tx
                    .query_one(
                        "INSERT INTO backups (exported_at, checksum, source, client_id, app_version,
                                              entities, counts, format, body, size, received_at,
                                              user_id, public_id)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                         RETURNING id",
                        &[
                            &b.exported_at,
                            &b.checksum,
                            &b.source,
                            &b.client_id,
                            &b.app_version,
                            &to_i64(b.entities)?,
                            &counts_text(&b.counts),
                            &b.format,
                            &b.body,
                            &to_i64(b.body.len() as u64)?,
                            &b.received_at,
                            &user,
                            &new_backup_id(),
                        ],
                    )
                    .await?;
                tx.execute(
                    "DELETE FROM backups
                     WHERE user_id = $3 AND coalesce(client_id, '') = $1 AND id NOT IN (
                         SELECT id FROM backups WHERE user_id = $3 AND coalesce(client_id, '') = $1
                         ORDER BY id DESC LIMIT $2
                     )",
                    &[&owner, &to_i64(keep as u64)?, &user],
                )
                .await?;
                (row.get(0), true)
            }
        };
        let info = tx
            .query_one(
                &format!("SELECT {BACKUP_COLUMNS} FROM backups WHERE id = $1"),
                &[&id],
            )
            .await?;
        let info = backup_info(&info);
        tx.commit().await?;
        Ok(BackupStored { info, created })
    }

    /// See [`crate::storage::Db::backups`].
    pub async fn backups(
        &self,
        user: &str,
        client_id: Option<String>,
        limit: usize,
    ) -> Result<Vec<BackupInfo>, ApiError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {BACKUP_COLUMNS} FROM backups
                     WHERE user_id = $3 AND ($1::TEXT IS NULL OR coalesce(client_id, '') = $1)
                     ORDER BY id DESC LIMIT $2"
                ),
                &[&client_id, &to_i64(limit as u64)?, &user],
            )
            .await?;
        Ok(rows.iter().map(backup_info).collect())
    }

    /// See [`crate::storage::Db::backup_body`].
    pub async fn backup_body(
        &self,
        user: &str,
        id: String,
    ) -> Result<Option<(String, String)>, ApiError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT format, body FROM backups WHERE public_id = $1 AND user_id = $2",
                &[&id, &user],
            )
            .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// A backup's text by its row (for the counts backfill).
    pub async fn backup_text(&self, row: i64) -> Result<Option<String>, ApiError> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT body FROM backups WHERE id = $1", &[&row])
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Ids of the backups with no counts.
    pub async fn backups_without_counts(&self) -> Result<Vec<i64>, ApiError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id FROM backups WHERE counts IS NULL ORDER BY id",
                &[],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Set a backup's counts (JSON text).
    pub async fn set_backup_counts(&self, id: i64, counts: String) -> Result<(), ApiError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE backups SET counts = $2 WHERE id = $1",
                &[&id, &counts],
            )
            .await?;
        Ok(())
    }

    /// See [`crate::storage::Db::restore`]: a dry run reads one consistent snapshot
    /// (REPEATABLE READ, read only) and commits nothing; a real restore runs in one READ
    /// COMMITTED transaction that first shuts out every other writer of entities.
    pub async fn restore(
        &self,
        user: &str,
        snapshot: Snapshot,
        dry_run: bool,
        now: Millis,
    ) -> Result<RestoreOutcome, ApiError> {
        let mut client = self.client().await?;
        let tx = if dry_run {
            client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?
        } else {
            client.transaction().await?
        };
        let mut restore = PgRestore {
            tx,
            user: user.to_owned(),
        };
        let outcome = apply_restore(&mut restore, &snapshot, dry_run, now).await?;
        if dry_run {
            restore.tx.rollback().await?;
        } else {
            restore.tx.commit().await?;
        }
        Ok(outcome)
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
        let client = self.client().await?;
        let n = client
            .execute(
                "INSERT INTO captured_requests (path, body, idempotency_key, received_at, user_id)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, idempotency_key) DO NOTHING",
                &[&path, &body, &idempotency_key, &now, &user],
            )
            .await?;
        Ok(n == 1)
    }

    /// See [`crate::storage::Db::stats`].
    pub async fn stats(&self, user: &str) -> Result<(Counters, Vec<CapturedRow>), ApiError> {
        let mut client = self.client().await?;
        // One snapshot for both reads.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let c = tx
            .query_opt(
                "SELECT push_requests, mutations_applied, duplicates, conflicts, rejected
                 FROM user_counters WHERE user_id = $1",
                &[&user],
            )
            .await?;
        let counters = c.map_or_else(Counters::default, |c| Counters {
            push_requests: to_u64(c.get(0)),
            mutations_applied: to_u64(c.get(1)),
            duplicates: to_u64(c.get(2)),
            conflicts: to_u64(c.get(3)),
            rejected: to_u64(c.get(4)),
        });
        let rows = tx
            .query(
                "SELECT path, idempotency_key, body, received_at FROM captured_requests
                 WHERE user_id = $1 ORDER BY id",
                &[&user],
            )
            .await?;
        let captured = rows
            .iter()
            .map(|r| CapturedRow {
                path: r.get(0),
                idempotency_key: r.get(1),
                body: parse_json(r.get(2)),
                received_at: r.get(3),
            })
            .collect();
        tx.commit().await?;
        Ok((counters, captured))
    }

    /// See [`crate::storage::Db::mutations_of`].
    pub async fn mutations_of(
        &self,
        user: &str,
        client_id: String,
    ) -> Result<Vec<MutationRow>, ApiError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT client_id, seq, status, collection, key, op, version, reason, received_at
                 FROM mutations WHERE client_id = $1
                   AND client_id IN (SELECT client_id FROM clients WHERE user_id = $2)
                 ORDER BY seq",
                &[&client_id, &user],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| MutationRow {
                client_id: r.get(0),
                seq: to_u64(r.get(1)),
                status: MutationStatus::parse(r.get(2)),
                collection: r.get(3),
                key: r.get(4),
                op: r.get(5),
                version: r.get::<_, Option<i64>>(6).map(to_u64),
                reason: r.get(7),
                received_at: r.get(8),
            })
            .collect())
    }

    /// See [`crate::storage::Db::wipe`].
    pub async fn wipe(&self) -> Result<(), ApiError> {
        let client = self.client().await?;
        client
            .batch_execute(
                "BEGIN;
                 DELETE FROM entities;
                 DELETE FROM mutations;
                 DELETE FROM backups;
                 DELETE FROM captured_requests;
                 DELETE FROM clients;
                 DELETE FROM user_counters;
                 DELETE FROM user_horizons;
                 DELETE FROM blobs;
                 DELETE FROM blob_parts;
                 UPDATE retention SET pruned_version = 0;
                 UPDATE counters SET push_requests = 0, mutations_applied = 0, duplicates = 0,
                                     conflicts = 0, rejected = 0;
                 COMMIT;",
            )
            .await?;
        Ok(())
    }
}

impl PgStore {
    /// See [`crate::storage::Db::blob`].
    pub async fn blob(&self, user: &str, sha256: &str) -> Result<Option<BlobRow>, ApiError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT size, received, complete, upload_id FROM blobs
                 WHERE user_id = $1 AND sha256 = $2",
                &[&user, &sha256],
            )
            .await?;
        Ok(row.as_ref().map(blob_row))
    }

    /// See [`crate::storage::Db::begin_blob`]. The user's new uploads are serialised by a
    /// transaction-scoped advisory lock, so the quota check and the insert are one step
    /// across instances.
    pub async fn begin_blob(
        &self,
        user: &str,
        sha256: &str,
        size: u64,
        upload_id: String,
        quota: u64,
        now: Millis,
    ) -> Result<BlobBegun, ApiError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            &[&BLOB_LOCK_CLASS, &user],
        )
        .await?;
        let existing = tx
            .query_opt(
                "SELECT size, received, complete, upload_id FROM blobs
                 WHERE user_id = $1 AND sha256 = $2",
                &[&user, &sha256],
            )
            .await?;
        if let Some(row) = existing {
            return Ok(BlobBegun::Existing(blob_row(&row)));
        }
        let used: i64 = tx
            .query_one(
                "SELECT coalesce(sum(size), 0)::BIGINT FROM blobs WHERE user_id = $1",
                &[&user],
            )
            .await?
            .get(0);
        let used = to_u64(used);
        if used.saturating_add(size) > quota {
            return Ok(BlobBegun::OverQuota { used });
        }
        tx.execute(
            "INSERT INTO blobs (user_id, sha256, size, received, complete, upload_id, created_at)
             VALUES ($1, $2, $3, 0, FALSE, $4, $5)",
            &[&user, &sha256, &to_i64(size)?, &upload_id, &now],
        )
        .await?;
        tx.commit().await?;
        Ok(BlobBegun::Created(BlobRow {
            size,
            received: 0,
            complete: false,
            upload_id,
        }))
    }

    /// See [`crate::storage::Db::append_blob_part`]. The `UPDATE … WHERE received = start`
    /// is the compare-and-set: a second request at the same offset waits for the first's row
    /// lock, then finds `received` moved and updates nothing.
    pub async fn append_blob_part(
        &self,
        user: &str,
        sha256: &str,
        upload_id: &str,
        part: BlobPart,
    ) -> Result<BlobAppended, ApiError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let start = to_i64(part.start)?;
        let end = to_i64(part.start + part.len)?;
        let moved = tx
            .execute(
                "UPDATE blobs SET received = $5
                 WHERE user_id = $1 AND sha256 = $2 AND upload_id = $3 AND received = $4
                   AND NOT complete",
                &[&user, &sha256, &upload_id, &start, &end],
            )
            .await?;
        if moved == 0 {
            let row = tx
                .query_opt(
                    "SELECT size, received, complete, upload_id FROM blobs
                     WHERE user_id = $1 AND sha256 = $2",
                    &[&user, &sha256],
                )
                .await?;
            return Ok(BlobAppended::Moved(row.as_ref().map(blob_row)));
        }
        tx.execute(
            "INSERT INTO blob_parts (user_id, sha256, upload_id, first_byte, length, object_key)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &user,
                &sha256,
                &upload_id,
                &start,
                &to_i64(part.len)?,
                &part.key,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(BlobAppended::Appended(to_u64(end)))
    }

    /// See [`crate::storage::Db::blob_parts`].
    pub async fn blob_parts(
        &self,
        user: &str,
        sha256: &str,
        upload_id: &str,
    ) -> Result<Vec<BlobPart>, ApiError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT first_byte, length, object_key FROM blob_parts
                 WHERE user_id = $1 AND sha256 = $2 AND upload_id = $3 ORDER BY first_byte",
                &[&user, &sha256, &upload_id],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| BlobPart {
                start: to_u64(r.get(0)),
                len: to_u64(r.get(1)),
                key: r.get(2),
            })
            .collect())
    }

    /// See [`crate::storage::Db::complete_blob`].
    pub async fn complete_blob(
        &self,
        user: &str,
        sha256: &str,
        upload_id: &str,
        now: Millis,
    ) -> Result<bool, ApiError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let done = tx
            .execute(
                "UPDATE blobs SET complete = TRUE, received = size, completed_at = $4
                 WHERE user_id = $1 AND sha256 = $2 AND upload_id = $3 AND NOT complete",
                &[&user, &sha256, &upload_id, &now],
            )
            .await?;
        tx.execute(
            "DELETE FROM blob_parts WHERE user_id = $1 AND sha256 = $2 AND upload_id = $3",
            &[&user, &sha256, &upload_id],
        )
        .await?;
        tx.commit().await?;
        Ok(done == 1)
    }

    /// See [`crate::storage::Db::discard_blob`].
    pub async fn discard_blob(
        &self,
        user: &str,
        sha256: &str,
        upload_id: &str,
    ) -> Result<bool, ApiError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let gone = tx
            .execute(
                "DELETE FROM blobs
                 WHERE user_id = $1 AND sha256 = $2 AND upload_id = $3 AND NOT complete",
                &[&user, &sha256, &upload_id],
            )
            .await?;
        tx.execute(
            "DELETE FROM blob_parts WHERE user_id = $1 AND sha256 = $2 AND upload_id = $3",
            &[&user, &sha256, &upload_id],
        )
        .await?;
        tx.commit().await?;
        Ok(gone == 1)
    }

    /// See [`crate::storage::Db::blob_counts`].
    pub async fn blob_counts(&self, user: &str) -> Result<BlobCounts, ApiError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE complete), count(*) FILTER (WHERE NOT complete),
                        coalesce(sum(size), 0)::BIGINT
                 FROM blobs WHERE user_id = $1",
                &[&user],
            )
            .await?;
        Ok(BlobCounts {
            complete: to_u64(row.get(0)),
            uploading: to_u64(row.get(1)),
            bytes: to_u64(row.get(2)),
        })
    }
}

fn blob_row(r: &Row) -> BlobRow {
    BlobRow {
        size: to_u64(r.get(0)),
        received: to_u64(r.get(1)),
        complete: r.get(2),
        upload_id: r.get(3),
    }
}

async fn migrate(client: &mut Object) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS rangersync_schema (
             only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
             version  INTEGER NOT NULL
         );
         INSERT INTO rangersync_schema (version) VALUES (0) ON CONFLICT DO NOTHING;",
    )
    .await?;
    let current: i32 = tx
        .query_one("SELECT version FROM rangersync_schema", &[])
        .await?
        .get(0);
    let current = usize::try_from(current).unwrap_or(0);
    if current > MIGRATIONS.len() {
        // Refuse rather than run against a schema this build does not know.
        tx.batch_execute(&format!(
            "DO $$ BEGIN RAISE EXCEPTION 'database schema version {current} is newer than this server ({})'; END $$",
            MIGRATIONS.len()
        ))
        .await?;
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        tx.batch_execute(sql).await?;
        let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tx.execute("UPDATE rangersync_schema SET version = $1", &[&version])
            .await?;
    }
    tx.commit().await
}

/// One restore's transaction.
struct PgRestore<'a> {
    tx: Transaction<'a>,
    /// Whose entities it restores.
    user: String,
}

impl RestoreTx for PgRestore<'_> {
    /// `SHARE ROW EXCLUSIVE` on `entities` conflicts with the `ROW EXCLUSIVE` lock every
    /// statement that writes it takes (and with itself): it waits for the pushes that already
    /// wrote an entity to commit, then holds new writers (and other restores) until this
    /// transaction ends; pulls and exports still read. No cycle: this transaction holds
    /// nothing while it waits, and a push takes `entities` before the counters row (even its
    /// finishing statement names `entities` before it locks that row).
    async fn exclude_writers(&mut self) -> Result<(), ApiError> {
        self.tx
            .batch_execute("LOCK TABLE entities IN SHARE ROW EXCLUSIVE MODE")
            .await?;
        Ok(())
    }

    async fn stored(
        &mut self,
        keys: &[(&str, &str)],
    ) -> Result<HashMap<(String, String), Stored>, ApiError> {
        let collections: Vec<&str> = keys.iter().map(|k| k.0).collect();
        let names: Vec<&str> = keys.iter().map(|k| k.1).collect();
        let rows = self
            .tx
            .query(
                "SELECT e.collection, e.key, e.value, e.deleted, e.updated_at, e.client_id,
                        e.seq, e.version
                 FROM entities e
                 JOIN unnest($1::text[], $2::text[]) AS d(collection, key)
                   ON e.collection = d.collection AND e.key = d.key
                 WHERE e.user_id = $3",
                &[&collections, &names, &self.user],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    (r.get(0), r.get(1)),
                    Stored {
                        value: parse_json(r.get(2)),
                        deleted: r.get(3),
                        stamp: Stamp {
                            updated_at: r.get(4),
                            client_id: r.get(5),
                            seq: to_u64(r.get(6)),
                        },
                        version: to_u64(r.get(7)),
                    },
                )
            })
            .collect())
    }

    /// The versions are taken first, from the counters row, whose lock this transaction then
    /// holds until it commits (as [`PushTx::finish`] does): versions become visible in
    /// increasing order.
    async fn overwrite(&mut self, rows: &[Overwrite]) -> Result<Vec<u64>, ApiError> {
        let n = to_i64(rows.len() as u64)?;
        let base: i64 = self
            .tx
            .query_one(
                "UPDATE counters SET version = version + $1 RETURNING version - $1",
                &[&n],
            )
            .await?
            .get(0);
        for (i, chunk) in rows.chunks(RESTORE_CHUNK).enumerate() {
            let first = base + to_i64((i * RESTORE_CHUNK) as u64)? + 1;
            let collections: Vec<&str> = chunk.iter().map(|r| r.collection.as_str()).collect();
            let keys: Vec<&str> = chunk.iter().map(|r| r.key.as_str()).collect();
            let values: Vec<String> = chunk.iter().map(|r| json_text(&r.value)).collect();
            let deleted: Vec<bool> = chunk.iter().map(|r| r.deleted).collect();
            let updated_at: Vec<i64> = chunk.iter().map(|r| r.stamp.updated_at).collect();
            let client_ids: Vec<&str> = chunk.iter().map(|r| r.stamp.client_id.as_str()).collect();
            let seqs = chunk
                .iter()
                .map(|r| to_i64(r.stamp.seq))
                .collect::<Result<Vec<_>, _>>()?;
            self.tx
                .execute(
                    "INSERT INTO entities (collection, key, value, deleted, updated_at, client_id,
                                           seq, version, user_id)
                     SELECT d.collection, d.key, d.value, d.deleted, d.updated_at, d.client_id,
                            d.seq, $8 + d.n - 1, $9
                     FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[], $5::bigint[],
                                 $6::text[], $7::bigint[])
                          WITH ORDINALITY AS d(collection, key, value, deleted, updated_at,
                                               client_id, seq, n)
                     ON CONFLICT (user_id, collection, key) DO UPDATE SET
                       value = excluded.value, deleted = excluded.deleted,
                       updated_at = excluded.updated_at, client_id = excluded.client_id,
                       seq = excluded.seq, version = excluded.version",
                    &[
                        &collections,
                        &keys,
                        &values,
                        &deleted,
                        &updated_at,
                        &client_ids,
                        &seqs,
                        &first,
                        &self.user,
                    ],
                )
                .await?;
        }
        Ok((1..=n).map(|i| to_u64(base + i)).collect())
    }
}

/// Why one attempt at a batch failed.
enum PushError {
    /// The database aborted the transaction (deadlock, serialization failure): try again.
    Retry(tokio_postgres::Error),
    /// Anything else: answer it.
    Api(ApiError),
}

impl From<tokio_postgres::Error> for PushError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.code() {
            Some(code)
                if *code == SqlState::T_R_DEADLOCK_DETECTED
                    || *code == SqlState::T_R_SERIALIZATION_FAILURE =>
            {
                Self::Retry(e)
            }
            _ => Self::Api(e.into()),
        }
    }
}

impl From<ApiError> for PushError {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

/// Statements of the push path, prepared once per connection and kept (deadpool's statement
/// cache): a statement given as text is parsed and planned again on every call, at the cost
/// of one more round trip to the database each time.
trait Cached {
    async fn cached_query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error>;
    async fn cached_query_one(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, tokio_postgres::Error>;
    async fn cached_query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, tokio_postgres::Error>;
    async fn cached_execute(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error>;
}

impl Cached for Transaction<'_> {
    async fn cached_query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let statement = self.prepare_cached(sql).await?;
        self.query(&statement, params).await
    }

    async fn cached_query_one(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, tokio_postgres::Error> {
        let statement = self.prepare_cached(sql).await?;
        self.query_one(&statement, params).await
    }

    async fn cached_query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        let statement = self.prepare_cached(sql).await?;
        self.query_opt(&statement, params).await
    }

    async fn cached_execute(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        let statement = self.prepare_cached(sql).await?;
        self.execute(&statement, params).await
    }
}

/// An outcome to write at [`PushTx::finish`].
struct Record {
    client_id: String,
    seq: i64,
    status: MutationStatus,
    reason: Option<String>,
    received_at: Millis,
}

/// One push batch's transaction.
struct PgTx<'a> {
    tx: Transaction<'a>,
    /// Whose entities the batch writes.
    user: String,
    /// The first database error, kept whole (an [`ApiError`] only says "internal").
    error: Option<tokio_postgres::Error>,
    /// Outcomes of the claimed mutations, written by `finish` in one statement.
    records: Vec<Record>,
    /// First outcomes of the batch's seqs seen before, from `begin`.
    seen: HashMap<i64, Seen>,
}

impl PgTx<'_> {
    /// Claims every `(client_id, seq)` of the batch in one statement (rows inserted in seq
    /// order, so two instances claiming overlapping batches wait for each other in seq
    /// order), then reads the first outcome of those seen before in a second statement,
    /// which sees what another instance committed while this one waited on it.
    async fn claim_all(&mut self, mutations: &[Mutation]) -> Result<(), ApiError> {
        let Some(first) = mutations.first() else {
            return Ok(());
        };
        let client_id = first.client_id.as_str();
        let seqs = mutations
            .iter()
            .map(|m| to_i64(m.seq))
            .collect::<Result<Vec<_>, _>>()?;
        let collections: Vec<&str> = mutations.iter().map(|m| m.collection.as_str()).collect();
        let keys: Vec<&str> = mutations.iter().map(|m| m.key.as_str()).collect();
        let ops: Vec<&str> = mutations.iter().map(|m| op_str(m.op)).collect();
        let claimed = self
            .tx
            .cached_query(
                "INSERT INTO mutations (client_id, seq, status, collection, key, op, received_at)
                 SELECT $1, seq, 'claimed', collection, key, op, 0
                 FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[])
                      WITH ORDINALITY AS d(seq, collection, key, op, n)
                 ORDER BY n
                 ON CONFLICT (client_id, seq) DO NOTHING
                 RETURNING seq",
                &[&client_id, &seqs, &collections, &keys, &ops],
            )
            .await;
        let claimed: Vec<i64> = match claimed {
            Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
            Err(e) => return Err(self.fail(e)),
        };
        let before: Vec<i64> = seqs
            .iter()
            .copied()
            .filter(|s| !claimed.contains(s))
            .collect();
        if !before.is_empty() {
            self.read_seen(client_id, &before).await?;
        }
        // Read after the claims and the records: a pruning that deleted a record this batch
        // claimed again, or one it was about to read, committed its floor with the deletion.
        let floor: i64 = match self
            .tx
            .cached_query_opt(
                "SELECT pruned_through_seq FROM clients WHERE client_id = $1",
                &[&client_id],
            )
            .await
        {
            Ok(row) => row.map_or(0, |r| r.get(0)),
            Err(e) => return Err(self.fail(e)),
        };
        let forgotten: Vec<i64> = seqs
            .iter()
            .copied()
            .filter(|s| *s <= floor && !self.seen.contains_key(s))
            .collect();
        if forgotten.is_empty() {
            return Ok(());
        }
        if let Err(e) = self
            .tx
            .cached_execute(
                "DELETE FROM mutations
                 WHERE client_id = $1 AND seq = ANY($2) AND status = 'claimed'",
                &[&client_id, &forgotten],
            )
            .await
        {
            return Err(self.fail(e));
        }
        for seq in forgotten {
            self.seen.insert(
                seq,
                Seen {
                    status: MutationStatus::Applied,
                    reason: None,
                },
            );
        }
        Ok(())
    }

    /// The first outcomes of seqs of `client_id` that were recorded before.
    async fn read_seen(&mut self, client_id: &str, before: &[i64]) -> Result<(), ApiError> {
        let rows = self
            .tx
            .cached_query(
                "SELECT seq, status, reason FROM mutations
                 WHERE client_id = $1 AND seq = ANY($2)",
                &[&client_id, &before],
            )
            .await;
        match rows {
            Ok(rows) => {
                for r in rows {
                    self.seen.insert(
                        r.get(0),
                        Seen {
                            status: MutationStatus::parse(r.get(1)),
                            reason: r.get(2),
                        },
                    );
                }
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    fn fail(&mut self, e: tokio_postgres::Error) -> ApiError {
        let api = ApiError::internal(format!("database: {}", describe(&e)));
        self.error.get_or_insert(e);
        api
    }

    async fn stored(&mut self, collection: &str, key: &str) -> Result<Option<Stored>, ApiError> {
        let row = self
            .tx
            .cached_query_opt(
                "SELECT value, deleted, updated_at, client_id, seq, version
                 FROM entities WHERE user_id = $3 AND collection = $1 AND key = $2",
                &[&collection, &key, &self.user],
            )
            .await;
        match row {
            Ok(row) => Ok(row.map(|r| Stored {
                value: parse_json(r.get(0)),
                deleted: r.get(1),
                stamp: Stamp {
                    updated_at: r.get(2),
                    client_id: r.get(3),
                    seq: to_u64(r.get(4)),
                },
                version: to_u64(r.get(5)),
            })),
            Err(e) => Err(self.fail(e)),
        }
    }
}

impl PushTx for PgTx<'_> {
    /// In sorted order, so two batches claiming the same new ids wait in one order.
    async fn own_clients(&mut self, client_ids: &[&str]) -> Result<Option<String>, ApiError> {
        for &client_id in client_ids {
            match claim_client(&self.tx, &self.user, client_id).await {
                Ok(true) => {}
                Ok(false) => return Ok(Some(client_id.to_owned())),
                Err(e) => return Err(self.fail(e)),
            }
        }
        Ok(None)
    }

    async fn begin(&mut self, mutations: &[Mutation]) -> Result<(), ApiError> {
        let collections: Vec<&str> = mutations.iter().map(|m| m.collection.as_str()).collect();
        let keys: Vec<&str> = mutations.iter().map(|m| m.key.as_str()).collect();
        // Volatile functions in a select list run after ORDER BY, so every transaction takes
        // these locks in the same (hash) order. A hash collision only serialises more.
        let locked = self
            .tx
            .cached_execute(
                "SELECT pg_advisory_xact_lock(h) FROM (
                     SELECT DISTINCT hashtextextended($3 || chr(1) || c || chr(1) || k, 0) AS h
                     FROM unnest($1::text[], $2::text[]) AS d(c, k)
                 ) AS entity_keys
                 ORDER BY h",
                &[&collections, &keys, &self.user],
            )
            .await;
        if let Err(e) = locked {
            return Err(self.fail(e));
        }
        self.claim_all(mutations).await
    }

    async fn claim(&mut self, m: &Mutation) -> Result<Option<Seen>, ApiError> {
        // `begin` claimed the whole batch.
        Ok(self.seen.remove(&to_i64(m.seq)?))
    }

    async fn record(
        &mut self,
        m: &Mutation,
        status: MutationStatus,
        reason: Option<&str>,
        now: Millis,
    ) -> Result<(), ApiError> {
        self.records.push(Record {
            client_id: m.client_id.clone(),
            seq: to_i64(m.seq)?,
            status,
            reason: reason.map(str::to_owned),
            received_at: now,
        });
        Ok(())
    }

    async fn entity(&mut self, collection: &str, key: &str) -> Result<Option<Stored>, ApiError> {
        self.stored(collection, key).await
    }

    async fn write_if_newer(&mut self, m: &Mutation) -> Result<Written, ApiError> {
        let deleted = m.op == Op::Delete;
        let value = if deleted {
            "null".to_owned()
        } else {
            json_text(&m.value)
        };
        let written = self
            .tx
            .cached_execute(
                "INSERT INTO entities (collection, key, value, deleted, updated_at, client_id, seq, version, user_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8)
                 ON CONFLICT (user_id, collection, key) DO UPDATE SET
                   value = excluded.value, deleted = excluded.deleted,
                   updated_at = excluded.updated_at, client_id = excluded.client_id,
                   seq = excluded.seq, version = 0
                 WHERE (entities.updated_at, entities.client_id, entities.seq)
                     < (excluded.updated_at, excluded.client_id, excluded.seq)",
                &[
                    &m.collection,
                    &m.key,
                    &value,
                    &deleted,
                    &m.updated_at,
                    &m.client_id,
                    &to_i64(m.seq)?,
                    &self.user,
                ],
            )
            .await;
        match written {
            Ok(1) => Ok(Written::Applied),
            // The row exists, is newer, and is locked by this transaction now.
            Ok(_) => self
                .stored(&m.collection, &m.key)
                .await?
                .map(Written::Lost)
                .ok_or_else(|| ApiError::internal("conflict without a stored entity")),
            Err(e) => Err(self.fail(e)),
        }
    }

    async fn finish(
        &mut self,
        applied: &[&Mutation],
        counts: &Counters,
    ) -> Result<Vec<u64>, ApiError> {
        // Positions (1-based) of the applied mutations; an entity takes its last one.
        let mut last_of_entity: HashMap<(&str, &str), i64> = HashMap::new();
        let mut position_of: HashMap<(&str, i64), i64> = HashMap::new();
        for (i, m) in applied.iter().enumerate() {
            let position = i64::try_from(i + 1).unwrap_or(i64::MAX);
            last_of_entity.insert((m.collection.as_str(), m.key.as_str()), position);
            position_of.insert((m.client_id.as_str(), to_i64(m.seq)?), position);
        }
        let (e_collections, e_keys, e_positions) = last_of_entity.into_iter().fold(
            (Vec::new(), Vec::new(), Vec::new()),
            |(mut c, mut k, mut p), ((collection, key), position)| {
                c.push(collection);
                k.push(key);
                p.push(position);
                (c, k, p)
            },
        );
        let mut m_clients = Vec::with_capacity(self.records.len());
        let mut m_seqs = Vec::with_capacity(self.records.len());
        let mut m_statuses = Vec::with_capacity(self.records.len());
        let mut m_reasons = Vec::with_capacity(self.records.len());
        let mut m_positions = Vec::with_capacity(self.records.len());
        let mut m_received = Vec::with_capacity(self.records.len());
        for r in &self.records {
            m_received.push(r.received_at);
            m_clients.push(r.client_id.as_str());
            m_seqs.push(r.seq);
            m_statuses.push(r.status.as_str());
            m_reasons.push(r.reason.as_deref());
            m_positions.push(
                position_of
                    .get(&(r.client_id.as_str(), r.seq))
                    .copied()
                    .unwrap_or(0),
            );
        }
        let n = i64::try_from(applied.len()).unwrap_or(i64::MAX);
        // One statement: take the versions under the counters row lock (held until commit),
        // then stamp them on the entities and record every outcome.
        let row = self
            .tx
            .cached_query_one(
                "WITH taken AS (
                     UPDATE counters SET version = version + $1
                     RETURNING version - $1 AS base
                 ),
                 counted AS (
                     INSERT INTO user_counters AS u (user_id, push_requests, mutations_applied,
                                                     duplicates, conflicts, rejected)
                     VALUES ($16, $2, $3, $4, $5, $6)
                     ON CONFLICT (user_id) DO UPDATE SET
                         push_requests = u.push_requests + excluded.push_requests,
                         mutations_applied = u.mutations_applied + excluded.mutations_applied,
                         duplicates = u.duplicates + excluded.duplicates,
                         conflicts = u.conflicts + excluded.conflicts,
                         rejected = u.rejected + excluded.rejected
                 ),
                 stamped AS (
                     UPDATE entities e SET version = (SELECT base FROM taken) + d.position
                     FROM unnest($7::text[], $8::text[], $9::bigint[]) AS d(collection, key, position)
                     WHERE e.user_id = $16 AND e.collection = d.collection AND e.key = d.key
                 ),
                 recorded AS (
                     UPDATE mutations m SET status = d.status, reason = d.reason,
                         received_at = d.received_at,
                         version = CASE WHEN d.position > 0
                                        THEN (SELECT base FROM taken) + d.position END
                     FROM unnest($10::text[], $11::bigint[], $12::text[], $13::text[],
                                 $14::bigint[], $15::bigint[])
                          AS d(client_id, seq, status, reason, position, received_at)
                     WHERE m.client_id = d.client_id AND m.seq = d.seq
                 )
                 SELECT base FROM taken",
                &[
                    &n,
                    &to_i64(counts.push_requests)?,
                    &to_i64(counts.mutations_applied)?,
                    &to_i64(counts.duplicates)?,
                    &to_i64(counts.conflicts)?,
                    &to_i64(counts.rejected)?,
                    &e_collections,
                    &e_keys,
                    &e_positions,
                    &m_clients,
                    &m_seqs,
                    &m_statuses,
                    &m_reasons,
                    &m_positions,
                    &m_received,
                    &self.user,
                ],
            )
            .await;
        let base: i64 = match row {
            Ok(r) => r.get(0),
            Err(e) => return Err(self.fail(e)),
        };
        Ok((1..=n).map(|i| to_u64(base + i)).collect())
    }
}

/// Make `client_id` `user`'s if no user has it yet; whether it is `user`'s. A concurrent
/// claim of the same new id waits for this transaction on the primary key.
async fn claim_client(
    tx: &Transaction<'_>,
    user: &str,
    client_id: &str,
) -> Result<bool, tokio_postgres::Error> {
    tx.cached_execute(
        "INSERT INTO clients (client_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &[&client_id, &user],
    )
    .await?;
    let owner: String = tx
        .cached_query_one(
            "SELECT user_id FROM clients WHERE client_id = $1",
            &[&client_id],
        )
        .await?
        .get(0);
    Ok(owner == user)
}

fn op_str(op: Op) -> &'static str {
    match op {
        Op::Put => "put",
        Op::Delete => "delete",
    }
}

fn entity_of(r: &Row) -> Result<Entity, ApiError> {
    Ok(Entity {
        collection: r.get(0),
        key: r.get(1),
        value: parse_json(r.get(2)),
        deleted: r.get(3),
        updated_at: r.get(4),
        version: to_u64(r.get(5)),
    })
}

/// Seqs, versions and counts are stored as BIGINT; the push handler already refused seqs
/// above `i64::MAX`.
fn to_i64(n: u64) -> Result<i64, ApiError> {
    i64::try_from(n).map_err(|_| ApiError::internal(format!("{n} does not fit in a BIGINT")))
}

/// Stored numbers are never negative (versions start at 1, seqs are checked on the way in).
fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The server's own message and SQLSTATE for a database error (tokio-postgres displays
/// only "db error").
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::internal(format!("database: {}", describe(&e)))
    }
}
