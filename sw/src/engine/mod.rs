//! The engine: the outbox shell that drives `rangersync_shared::outbox::Flusher` over
//! IndexedDB (`store.rs`), `fetch` and timers. It runs in the service worker AND in a window
//! (the page-only fallback): it only uses `js_sys::global()` for `indexedDB`, `fetch`,
//! `setTimeout` and, when present, `registration`.
//!
//! One concern per module:
//!
//! | module | what it owns |
//! |---|---|
//! | [`dispatch`] | a page's request → its answer |
//! | [`commit`] | the write path: group commit, the acknowledgement, nothing else |
//! | [`flush`] | the flusher driver (IndexedDB ↔ network), triggers, the retry timer, sync events |
//! | [`http`] | requests to the server: push, replay of captured requests, GETs |
//! | [`pull`] | the change feed |
//! | [`backup`] | export, restore, scheduled export |
//! | [`broadcast`] | status and change broadcasts, coalesced to one per macrotask |
//! | [`capture`] | which fetches the worker captures, and queueing them |
//! | [`blob`] | attachments: keeping a page's `Blob`, its chunked upload, `get_blob` |

mod backup;
mod blob;
mod broadcast;
mod capture;
mod commit;
mod dispatch;
mod encryption;
mod flush;
mod http;
mod pull;

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

use rangersync_shared::backup::BackupSchedule;
use rangersync_shared::messages::{codes, Broadcast, Config};
use rangersync_shared::outbox::{Flusher, FlusherState, StoreCounts};
use rangersync_shared::protocol::ErrorDetail;
use rangersync_shared::status::{Mode, Status};

use crate::error::SwError;
use crate::js::{self, now};
use crate::schema;
use crate::store::Store;

pub use capture::{headers_to_vec, own_origin, same_origin};
pub use dispatch::periodic_interval;

/// The outbox engine. Create with [`Engine::open`]; share as `Rc<Engine>`.
pub struct Engine {
    store: Store,
    mode: Mode,
    notify: Rc<dyn Fn(&Broadcast)>,
    client_id: String,
    config: RefCell<Config>,
    flusher: RefCell<Flusher>,
    /// Pending and dead counts and the save/export times, kept in memory: every write and
    /// every recorded result adjusts them, so nothing re-reads IndexedDB to show a status.
    counts: Cell<StoreCounts>,
    me: RefCell<Weak<Engine>>,
    commit: commit::GroupCommit,
    flush: flush::Driver,
    broadcast: broadcast::Coalescer,
    pushes: Cell<u64>,
    /// The stored config could not be read (kept as it was): nothing is sent, the status says
    /// `config_error`, until a page sends a valid config.
    config_problem: RefCell<Option<String>>,
    /// The database's name.
    db_name: String,
    /// The Web Lock held while flushing (`rangersync-flush:<database>`).
    lock_name: String,
    /// The captured requests waiting in the outbox (seq → URL): a new call to one of their
    /// routes queues behind them.
    captured: RefCell<std::collections::BTreeMap<u64, String>>,
    /// When backups are due and what became of the last one (`shared::backup`).
    backups: RefCell<BackupSchedule>,
    /// The wake-up at the next backup's due time.
    backup_timer: RefCell<Option<js::Timeout>>,
    /// Manual backups waiting for the one already running.
    backup_waiters: RefCell<Vec<js::Signal>>,
    /// `navigator.storage.persisted()`, when the browser can tell.
    persistent: Cell<Option<bool>>,
    /// Secret headers a page gave for restored captured calls (`captureCredentials`): in memory
    /// only, never stored (lower-case name → value).
    capture_credentials: RefCell<std::collections::BTreeMap<String, String>>,
    /// The backup encryption key, once read from `meta` (`Some(None)`: there is none).
    backup_key: RefCell<Option<Option<encryption::BackupKey>>>,
    /// This engine created the database.
    new_database: bool,
    /// The database changed under this engine's own view of it (a restore put entries back
    /// below what it has sent, or adopted another client id): its owner replaces it, as for
    /// a closed connection.
    retired: Cell<bool>,
}

fn invalid_config(message: impl Into<String>) -> SwError {
    SwError::coded(codes::INVALID_CONFIG, message)
}

/// The configuration rules a page's `configure` must satisfy ([`Config::check`]: retry
/// delays, batch size, intervals, server URL, capture routes, token).
pub fn validate_config(c: &Config) -> Result<(), SwError> {
    c.check().map_err(invalid_config)
}

impl Engine {
    /// Open the engine over the database `rangersync`.
    pub async fn open(
        mode: Mode,
        notify: Rc<dyn Fn(&Broadcast)>,
    ) -> Result<Rc<Engine>, ErrorDetail> {
        Self::open_named(schema::DB_NAME, mode, notify).await
    }

    /// Open the engine over a database of another name (tests, several apps on one origin).
    pub async fn open_named(
        name: &str,
        mode: Mode,
        notify: Rc<dyn Fn(&Broadcast)>,
    ) -> Result<Rc<Engine>, ErrorDetail> {
        let store = Store::open(name).await.map_err(|e| e.detail())?;
        let m = store.init(js::random_id).await.map_err(|e| e.detail())?;
        let (pending, dead, blob_bytes_pending) = store.counts().await.map_err(|e| e.detail())?;
        let captured = store
            .captured_requests()
            .await
            .map_err(|e| e.detail())?
            .into_iter()
            .collect();
        let mut flusher = Flusher::new(
            m.client_id.clone(),
            m.config.batch_size,
            m.config.retry.clone(),
        );
        flusher.restore_history(m.last_error.clone(), m.last_synced_at, m.server_time);
        // The backoff outlives the worker: a restarted one waits for the same retry time.
        flusher.restore_backoff(now(), m.backoff);
        if let Some(why) = &m.config_problem {
            flusher.report_error(now(), codes::CONFIG_ERROR, why.clone());
        }
        let counts = StoreCounts {
            pending,
            dead,
            last_saved_at: m.last_saved_at,
            last_exported_at: m.last_exported_at,
            saving: false,
            blob_bytes_pending,
        };
        let mut backups = BackupSchedule::new(m.config.export_interval_ms, m.config.retry.clone());
        backups.restore(
            m.last_exported_at,
            m.last_backup_at,
            m.backup_failure.clone(),
        );
        let persistent = js::storage_persisted().await;
        let engine = Rc::new(Engine {
            store,
            mode,
            notify,
            client_id: m.client_id,
            config: RefCell::new(m.config),
            flusher: RefCell::new(flusher),
            counts: Cell::new(counts),
            me: RefCell::new(Weak::new()),
            commit: commit::GroupCommit::default(),
            flush: flush::Driver::default(),
            broadcast: broadcast::Coalescer::default(),
            pushes: Cell::new(0),
            config_problem: RefCell::new(m.config_problem),
            db_name: name.to_owned(),
            lock_name: format!("rangersync-flush:{name}"),
            captured: RefCell::new(captured),
            backups: RefCell::new(backups),
            backup_timer: RefCell::new(None),
            backup_waiters: RefCell::new(Vec::new()),
            persistent: Cell::new(persistent),
            backup_key: RefCell::new(None),
            capture_credentials: RefCell::new(std::collections::BTreeMap::new()),
            new_database: m.created,
            retired: Cell::new(false),
        });
        let url = engine.push_url();
        engine.flusher.borrow_mut().set_endpoint(url);
        *engine.me.borrow_mut() = Rc::downgrade(&engine);
        engine.arm_timer();
        engine.arm_backup_timer();
        Ok(engine)
    }

    /// Whether the database connection ended under this engine (the database was deleted,
    /// upgraded by another connection, or cleared by the browser), or a restore retired it.
    /// Its owner replaces it with [`Engine::reopen`] before the next use, and at once after
    /// answering the request that retired it.
    pub fn is_closed(&self) -> bool {
        self.store.is_closed() || self.retired.get()
    }

    /// Have the owner replace this engine (see `retired`), after telling the tabs what changed.
    fn retire(&self) {
        self.send_broadcasts();
        self.retired.set(true);
    }

    /// A new engine over the same database, after [`Engine::is_closed`]: this one is closed
    /// (timers stopped). When the database was wiped (a fresh one, with a new client id and
    /// no config), the config in force here is applied to the new one, so writes keep going
    /// to the same server; its cursor starts at 0, so the next flush pulls everything the
    /// server holds.
    pub async fn reopen(self: &Rc<Self>) -> Result<Rc<Engine>, ErrorDetail> {
        self.close();
        let engine = Self::open_named(&self.db_name, self.mode, self.notify.clone()).await?;
        let config = self.config();
        if engine.config() != config && self.config_problem.borrow().is_none() {
            engine
                .handle(rangersync_shared::messages::Request::Configure { config })
                .await?;
        }
        engine.broadcast_status();
        Ok(engine)
    }

    /// This profile's client id (created once, kept in `meta`).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The configuration in force.
    pub fn config(&self) -> Config {
        self.config.borrow().clone()
    }

    /// The status object right now.
    pub fn status(&self) -> Status {
        let mut status = self.flusher.borrow().status(&self.counts.get(), self.mode);
        if self.config_problem.borrow().is_some() {
            status.state = rangersync_shared::status::SyncState::ConfigError;
        }
        let b = self.backups.borrow();
        status.last_exported_at = status.last_exported_at.max(b.last_exported_at());
        status.last_backup_at = b.last_backup_at();
        status.next_backup_at = if self.can_back_up() {
            b.next_backup_at()
        } else {
            None
        };
        status.backup_error = b.failure().map(|f| f.error.clone());
        status.persistent = self.persistent.get();
        status.new_database = self.new_database;
        status.client_id = self.client_id.clone();
        status
    }

    /// The flusher's state (tests, diagnostics).
    pub fn flusher_state(&self) -> FlusherState {
        self.flusher.borrow().state()
    }

    /// How many write transactions committed (group commit makes this smaller than the writes).
    pub fn commit_count(&self) -> u64 {
        self.commit.transactions()
    }

    /// How many push requests were sent.
    pub fn push_count(&self) -> u64 {
        self.pushes.get()
    }

    /// How many times this engine asked the browser for a Background Sync (tests, diagnostics).
    pub fn sync_register_count(&self) -> u64 {
        self.flush.sync_registrations()
    }

    /// Close the database connection (the engine is unusable afterwards).
    pub fn close(&self) {
        self.flush.stop_timers();
        self.backup_timer.borrow_mut().take();
        self.broadcast.cancel();
        self.store.close();
    }

    /// Ask the browser again whether storage is persistent (after a page asked for it).
    pub(super) async fn refresh_persistent(&self) {
        self.persistent.set(js::storage_persisted().await);
    }

    /// Adjust the in-memory counts.
    fn update_counts(&self, f: impl FnOnce(&mut StoreCounts)) {
        let mut c = self.counts.get();
        f(&mut c);
        self.counts.set(c);
    }

    /// Re-read the pending and dead counts from IndexedDB: only after the rare operations whose
    /// effect on them is not known in advance (corrupt records, restarts).
    async fn recount(&self) {
        if let Ok((pending, dead, blob_bytes_pending)) = self.store.counts().await {
            self.update_counts(|c| {
                c.pending = pending;
                c.dead = dead;
                c.blob_bytes_pending = blob_bytes_pending;
            });
        }
    }
}
