//! The engine: the outbox shell that drives `rangersync_shared::outbox::Flusher` over
//! IndexedDB (`store.rs`), `fetch` and timers. It runs in the service worker AND in a window
//! (the page-only fallback): it only uses `js_sys::global()` for `indexedDB`, `fetch`,
//! `setTimeout` and, when present, `registration`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};

use js_sys::{Array, Uint8Array};
use rangersync_shared::classify::HttpOutcome;
use rangersync_shared::messages::{
    codes, parse_request, Broadcast, Config, DeadLetter, ExportFormat, ListItem, PageEvent,
    ReplyEnvelope, Request, WriteAck, MESSAGE_VERSION,
};
use rangersync_shared::outbox::{
    route_matches, Action, CapturedRequest, Flusher, FlusherState, SendRequest, StoreCounts,
    Trigger,
};
use rangersync_shared::protocol::{ErrorDetail, Op, PullResponse, PushRequest};
use rangersync_shared::snapshot::{self, SnapshotSource};
use rangersync_shared::status::{Mode, Status};
use rangersync_shared::validate;
use serde_json::{json, Value};
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::spawn_local;

use crate::bindings;
use crate::error::SwError;
use crate::js::{self, now, MathRandom, Signal, Timeout};
use crate::schema::{self, meta};
use crate::store::{NewEntry, Store};

type Slot = Rc<RefCell<Option<Result<u64, SwError>>>>;

/// How long after a `lastChance` sync handler the engine registers a new sync.
const LAST_CHANCE_REREGISTER_MS: i64 = 1_000;

struct Job {
    entry: NewEntry,
    slot: Slot,
    done: Signal,
}

/// The outbox engine. Create with [`Engine::open`]; share as `Rc<Engine>`.
pub struct Engine {
    store: Store,
    mode: Mode,
    notify: Rc<dyn Fn(&Broadcast)>,
    client_id: String,
    config: RefCell<Config>,
    flusher: RefCell<Flusher>,
    counts: Cell<StoreCounts>,
    driving: Cell<bool>,
    waiters: RefCell<Vec<Signal>>,
    queue: RefCell<Vec<Job>>,
    committing: Cell<bool>,
    commits: Cell<u64>,
    pushes: Cell<u64>,
    timer: RefCell<Option<Timeout>>,
    in_sync_handler: Cell<bool>,
    last_status: RefCell<Option<Status>>,
    me: RefCell<Weak<Engine>>,
    sync_registrations: Cell<u64>,
    /// The re-registration after a `lastChance` sync (runs once the handler has settled).
    reregister: RefCell<Option<Timeout>>,
}

fn detail(e: SwError) -> ErrorDetail {
    e.detail()
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
        let store = Store::open(name).await.map_err(detail)?;
        let m = store.init(js::random_id).await.map_err(detail)?;
        let (pending, dead) = store.counts().await.map_err(detail)?;
        let mut flusher = Flusher::new(
            m.client_id.clone(),
            m.config.batch_size,
            m.config.retry.clone(),
        );
        flusher.restore_history(m.last_error.clone(), m.last_synced_at);
        // A Retry-After floor outlives the worker: a restarted one honours it.
        flusher.restore_not_before(now(), m.not_before);
        let counts = StoreCounts {
            pending,
            dead,
            last_saved_at: m.last_saved_at,
            last_exported_at: m.last_exported_at,
            saving: false,
        };
        let engine = Rc::new(Engine {
            store,
            mode,
            notify,
            client_id: m.client_id,
            config: RefCell::new(m.config),
            flusher: RefCell::new(flusher),
            counts: Cell::new(counts),
            driving: Cell::new(false),
            waiters: RefCell::default(),
            queue: RefCell::default(),
            committing: Cell::new(false),
            commits: Cell::new(0),
            pushes: Cell::new(0),
            timer: RefCell::new(None),
            in_sync_handler: Cell::new(false),
            last_status: RefCell::new(None),
            me: RefCell::new(Weak::new()),
            sync_registrations: Cell::new(0),
            reregister: RefCell::new(None),
        });
        *engine.me.borrow_mut() = Rc::downgrade(&engine);
        engine.arm_timer();
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
        self.flusher.borrow().status(&self.counts.get(), self.mode)
    }

    /// The flusher's state (tests, diagnostics).
    pub fn flusher_state(&self) -> FlusherState {
        self.flusher.borrow().state()
    }

    /// How many write transactions committed (group commit makes this smaller than the writes).
    pub fn commit_count(&self) -> u64 {
        self.commits.get()
    }

    /// How many push requests were sent.
    pub fn push_count(&self) -> u64 {
        self.pushes.get()
    }

    /// How many times this engine asked the browser for a Background Sync (tests, diagnostics).
    pub fn sync_register_count(&self) -> u64 {
        self.sync_registrations.get()
    }

    async fn register_sync(&self) {
        self.sync_registrations
            .set(self.sync_registrations.get() + 1);
        bindings::register_sync().await;
    }

    /// Close the database connection (the engine is unusable afterwards).
    pub fn close(&self) {
        self.timer.borrow_mut().take();
        self.reregister.borrow_mut().take();
        self.store.close();
    }

    /// Whether the fetch handler should capture this request: a non-GET to a configured route,
    /// of this worker's own origin or the configured server's (never a third party's: its
    /// `Authorization` header would be stored and replayed).
    pub fn wants(&self, url: &str, method: &str) -> bool {
        if matches!(
            method.to_ascii_uppercase().as_str(),
            "GET" | "HEAD" | "OPTIONS"
        ) {
            return false;
        }
        let config = self.config.borrow();
        if config.capture_routes.is_empty() {
            return false;
        }
        let Ok(u) = web_sys::Url::new(url) else {
            return false;
        };
        let origin = u.origin();
        let own = js::global_prop("location")
            .and_then(|l| js_sys::Reflect::get(&l, &"origin".into()).ok())
            .and_then(|o| o.as_string());
        let server = web_sys::Url::new(&config.server_url)
            .ok()
            .map(|s| s.origin());
        if own.as_deref() != Some(origin.as_str()) && server.as_deref() != Some(origin.as_str()) {
            return false;
        }
        let path = u.pathname();
        config
            .capture_routes
            .iter()
            .any(|p| route_matches(p, &path))
    }

    /// Parse a page's message text and answer it (errors are replies too; never panics).
    pub async fn handle_text(self: &Rc<Self>, text: &str) -> ReplyEnvelope {
        match parse_request(text) {
            Err((id, e)) => ReplyEnvelope::err(id.unwrap_or(0), e.code(), e.to_string()),
            Ok(env) => match self.handle(env.request).await {
                Ok(v) => ReplyEnvelope::ok(env.id, v),
                Err(d) => ReplyEnvelope {
                    v: MESSAGE_VERSION,
                    id: env.id,
                    ok: false,
                    result: None,
                    error: Some(d),
                },
            },
        }
    }

    /// Answer one request.
    pub async fn handle(self: &Rc<Self>, request: Request) -> Result<Value, ErrorDetail> {
        self.handle_inner(request).await.map_err(detail)
    }

    async fn handle_inner(self: &Rc<Self>, request: Request) -> Result<Value, SwError> {
        match request {
            Request::Configure { config } => {
                validate_config(&config)?;
                self.store
                    .put_meta(meta::CONFIG, &js::to_js(&config)?)
                    .await?;
                let endpoint_changed = self.config.borrow().endpoint_differs(&config);
                if endpoint_changed {
                    // Another server: the old one's Retry-After does not apply.
                    self.store
                        .put_meta(meta::NOT_BEFORE, &JsValue::NULL)
                        .await?;
                }
                self.flusher.borrow_mut().handle_config_update(
                    config.batch_size,
                    config.retry.clone(),
                    endpoint_changed,
                );
                let periodic = config.periodic_interval_ms;
                *self.config.borrow_mut() = config;
                bindings::set_periodic(periodic).await;
                self.broadcast_status();
                self.kick(Trigger::Manual);
                self.status_json()
            }
            Request::Put {
                collection,
                key,
                value,
            } => {
                validate::validate_collection(&collection)?;
                validate::validate_key(&key)?;
                validate::validate_value(&value)?;
                let seq = self
                    .write_one(NewEntry::Write {
                        collection,
                        key,
                        op: Op::Put,
                        value,
                        updated_at: now(),
                    })
                    .await?;
                Ok(serde_json::to_value(WriteAck { seq }).unwrap_or(Value::Null))
            }
            Request::Delete { collection, key } => {
                validate::validate_collection(&collection)?;
                validate::validate_key(&key)?;
                let entry = NewEntry::Write {
                    collection,
                    key,
                    op: Op::Delete,
                    value: Value::Null,
                    updated_at: now(),
                };
                let seq = self.write_one(entry).await?;
                Ok(serde_json::to_value(WriteAck { seq }).unwrap_or(Value::Null))
            }
            Request::WriteMany { ops } => {
                let entries = write_many_entries(ops, now())?;
                let seqs = self.write(entries).await?;
                Ok(json!({ "seqs": seqs }))
            }
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
                Ok(serde_json::to_value(items).unwrap_or(Value::Null))
            }
            Request::Status => self.status_json(),
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
                            reason: d.reason,
                            attempts: d.attempts,
                            dead_at: d.dead_at,
                        }
                    })
                    .collect();
                Ok(serde_json::to_value(letters).unwrap_or(Value::Null))
            }
            Request::RetryDead { seq } => {
                let new_seq = self.store.requeue_dead(seq, now()).await?.ok_or_else(|| {
                    SwError::coded(codes::NOT_FOUND, format!("no dead letter {seq}"))
                })?;
                self.refresh_counts().await;
                self.broadcast_status();
                self.kick(Trigger::Manual);
                Ok(json!({ "seq": new_seq }))
            }
            Request::DiscardDead { seq } => {
                if !self.store.discard_dead(seq).await? {
                    return Err(SwError::coded(
                        codes::NOT_FOUND,
                        format!("no dead letter {seq}"),
                    ));
                }
                self.refresh_counts().await;
                self.broadcast_status();
                Ok(json!({ "discarded": seq }))
            }
            Request::Export { format } => {
                let (snap, text) = self.export(format).await?;
                Ok(json!({
                    "format": format, "text": text, "exported_at": snap.exported_at,
                    "checksum": snap.checksum.value, "counts": snap.counts,
                }))
            }
            Request::Restore { text, dry_run } => {
                let snap = snapshot::decode(&text)?;
                let current: HashMap<(String, String), rangersync_shared::protocol::Entity> = self
                    .store
                    .entities(None)
                    .await?
                    .into_iter()
                    .map(|e| ((e.collection.clone(), e.key.clone()), e.to_entity()))
                    .collect();
                let lookup = |c: &str, k: &str| current.get(&(c.to_owned(), k.to_owned())).cloned();
                let report = snapshot::plan_restore(&snap, &lookup, dry_run);
                if !dry_run {
                    let by_key: HashMap<(&str, &str), &rangersync_shared::protocol::Entity> = snap
                        .entities
                        .iter()
                        .map(|e| ((e.collection.as_str(), e.key.as_str()), e))
                        .collect();
                    let at = now();
                    let entries: Vec<NewEntry> = report
                        .added
                        .iter()
                        .chain(&report.replaced)
                        .filter_map(|r| by_key.get(&(r.collection.as_str(), r.key.as_str())))
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
                        .collect();
                    if !entries.is_empty() {
                        self.write(entries).await?;
                    }
                }
                Ok(serde_json::to_value(report).unwrap_or(Value::Null))
            }
            Request::PageEvent { event } => {
                let trigger = match event {
                    PageEvent::Online => Trigger::Online,
                    PageEvent::Offline => Trigger::Offline,
                    PageEvent::Visible | PageEvent::Hidden | PageEvent::Pagehide => {
                        Trigger::PageEvent
                    }
                };
                self.kick(trigger);
                self.status_json()
            }
        }
    }

    async fn export(&self, format: ExportFormat) -> Result<(snapshot::Snapshot, String), SwError> {
        let at = now();
        let entities = self
            .store
            .entities(None)
            .await?
            .iter()
            .map(|e| e.to_entity())
            .collect();
        let outbox = self
            .store
            .outbox_records()
            .await?
            .iter()
            .filter_map(|r| r.to_entry(&self.client_id).ok())
            .filter_map(|e| match e.item {
                rangersync_shared::outbox::Item::Mutation(m) => Some(m),
                rangersync_shared::outbox::Item::Request(_) => None,
            })
            .collect();
        let snap = snapshot::build(
            SnapshotSource::Client,
            Some(self.client_id.clone()),
            env!("CARGO_PKG_VERSION"),
            at,
            entities,
            outbox,
        );
        let text = snapshot::encode(&snap, format);
        self.store
            .put_meta(meta::LAST_EXPORTED_AT, &(at as f64).into())
            .await?;
        let mut c = self.counts.get();
        c.last_exported_at = Some(at);
        self.counts.set(c);
        self.broadcast_status();
        Ok((snap, text))
    }

    /// A scheduled export (`config.export_interval_ms`), kept in the `snapshots` store (last 3).
    /// Runs on periodic sync and at start when due.
    pub async fn scheduled_export(self: &Rc<Self>) -> Result<bool, ErrorDetail> {
        let Some(interval) = self.config.borrow().export_interval_ms else {
            return Ok(false);
        };
        let last = self.counts.get().last_exported_at.unwrap_or(0);
        if now() - last < interval as i64 {
            return Ok(false);
        }
        let (snap, text) = self.export(ExportFormat::Json).await.map_err(detail)?;
        self.store
            .keep_snapshot(snap.exported_at, &text)
            .await
            .map_err(detail)?;
        Ok(true)
    }

    /// Fallback trigger for "every page message": flush when something waits.
    pub fn note_page_message(self: &Rc<Self>) {
        if self.counts.get().pending > 0 {
            self.kick(Trigger::PageEvent);
        }
    }

    /// Ask for a flush (sync, periodic sync, online, start, …) and wait until it is over.
    pub async fn trigger(self: &Rc<Self>, trigger: Trigger) {
        self.kick(trigger);
        self.wait_idle().await;
    }

    /// A Background Sync event. `Err` when the attempt failed, so the sync promise rejects and
    /// the browser retries; on `last_chance` the failure is recorded and the data kept.
    pub async fn handle_sync(self: &Rc<Self>, last_chance: bool) -> Result<(), ErrorDetail> {
        if self.config.borrow().server_url.is_empty() {
            return Ok(());
        }
        self.in_sync_handler.set(true);
        self.trigger(Trigger::Sync { last_chance }).await;
        self.in_sync_handler.set(false);
        // An auth stop is not the browser's to retry: resolve, the status shows auth_error.
        let failed = {
            let f = self.flusher.borrow();
            f.last_attempt_failed() && matches!(f.state(), FlusherState::WaitingRetry { .. })
        } && self.counts.get().pending > 0;
        if !failed {
            return Ok(());
        }
        let last = self.flusher.borrow().last_error().cloned();
        let code = last
            .as_ref()
            .map_or(codes::NETWORK.to_owned(), |e| e.code.clone());
        if last_chance {
            let message = format!(
                "the browser gave up background sync after its last attempt ({}); the data is kept and goes out on the next trigger",
                last.as_ref().map_or("unknown error", |e| e.message.as_str())
            );
            let code: &'static str = if code == codes::AUTH {
                codes::AUTH
            } else {
                codes::NETWORK
            };
            self.flusher.borrow_mut().report_error(now(), code, message);
            let recorded = self.flusher.borrow().last_error().cloned();
            if let Some(e) = recorded {
                if let Ok(v) = js::to_js(&e) {
                    let _ = self.store.put_meta(meta::LAST_ERROR, &v).await;
                }
            }
            self.broadcast_status();
            // The browser dropped the registration: ask again once this handler has settled
            // (registering from inside it makes Chrome fire it again at once).
            let weak = Rc::downgrade(self);
            let timer = Timeout::new(LAST_CHANCE_REREGISTER_MS, move || {
                if let Some(engine) = weak.upgrade() {
                    spawn_local(async move {
                        engine.reregister.borrow_mut().take();
                        if engine.counts.get().pending > 0 {
                            engine.register_sync().await;
                        }
                    });
                }
            });
            *self.reregister.borrow_mut() = Some(timer);
            return Ok(());
        }
        Err(last.map_or_else(
            || ErrorDetail {
                code,
                message: "flush failed".into(),
            },
            |e| ErrorDetail {
                code: e.code,
                message: e.message,
            },
        ))
    }

    /// Queue a captured REST request (the fetch handler's offline path). Returns its seq.
    pub async fn capture(self: &Rc<Self>, request: CapturedRequest) -> Result<u64, ErrorDetail> {
        self.write_one(NewEntry::Captured(request))
            .await
            .map_err(detail)
    }

    // ---- writes (group commit) ----

    async fn write_one(self: &Rc<Self>, entry: NewEntry) -> Result<u64, SwError> {
        let mut seqs = self.write(vec![entry]).await?;
        seqs.pop()
            .ok_or_else(|| SwError::coded(codes::INTERNAL, "no seq"))
    }

    /// Commit entries; writes arriving while a commit is in flight go into the next
    /// transaction together; a lone write starts at once.
    async fn write(self: &Rc<Self>, entries: Vec<NewEntry>) -> Result<Vec<u64>, SwError> {
        let mut waits = Vec::with_capacity(entries.len());
        for entry in entries {
            let slot: Slot = Rc::default();
            let (done, fut) = Signal::new();
            self.queue.borrow_mut().push(Job {
                entry,
                slot: slot.clone(),
                done,
            });
            waits.push((slot, fut));
        }
        if !self.committing.replace(true) {
            let me = self.clone();
            spawn_local(async move { me.commit_loop().await });
        }
        let mut out = Vec::with_capacity(waits.len());
        for (slot, fut) in waits {
            let _ = fut.await;
            let r = slot.borrow_mut().take();
            out.push(r.unwrap_or_else(|| Err(SwError::coded(codes::INTERNAL, "write lost")))?);
        }
        Ok(out)
    }

    async fn commit_loop(self: Rc<Self>) {
        let mut any = false;
        loop {
            let jobs = std::mem::take(&mut *self.queue.borrow_mut());
            if jobs.is_empty() {
                break;
            }
            self.set_saving(true);
            let entries: Vec<NewEntry> = jobs.iter().map(|j| j.entry.clone()).collect();
            let guard = self.flusher.borrow().coalesce_guard();
            let at = now();
            let result = self.store.commit_writes(&entries, at, &guard).await;
            self.commits.set(self.commits.get() + 1);
            match result {
                Ok((seqs, coalesced)) => {
                    any = true;
                    let mut c = self.counts.get();
                    c.last_saved_at = Some(at);
                    // Counted now, before the acknowledgements, so a status read right after
                    // a write sees it.
                    c.pending = (c.pending + seqs.len() as u64).saturating_sub(coalesced);
                    self.counts.set(c);
                    // Every tab hears about local writes too (put, delete, restore).
                    for job in &jobs {
                        if let NewEntry::Write {
                            collection, key, ..
                        } = &job.entry
                        {
                            (self.notify)(&Broadcast::Change {
                                collection: collection.clone(),
                                key: key.clone(),
                            });
                        }
                    }
                    for (job, seq) in jobs.into_iter().zip(seqs) {
                        *job.slot.borrow_mut() = Some(Ok(seq));
                        job.done.fire();
                    }
                }
                Err(e) => {
                    for job in jobs {
                        *job.slot.borrow_mut() = Some(Err(e.clone()));
                        job.done.fire();
                    }
                }
            }
        }
        self.committing.set(false);
        self.refresh_counts().await;
        self.set_saving(false);
        if any {
            if !self.queue.borrow().is_empty() && !self.committing.replace(true) {
                let me = self.clone();
                spawn_local(async move { me.commit_loop().await });
            }
            let me = self.clone();
            spawn_local(async move {
                me.register_sync().await;
            });
            self.kick(Trigger::Write);
        }
    }

    fn set_saving(&self, saving: bool) {
        let mut c = self.counts.get();
        c.saving = saving;
        self.counts.set(c);
        self.broadcast_status();
    }

    // ---- the flusher loop ----

    fn kick(self: &Rc<Self>, trigger: Trigger) {
        if self.config.borrow().server_url.is_empty() && trigger != Trigger::Offline {
            return;
        }
        let started = self.flusher.borrow_mut().handle_trigger(now(), trigger);
        self.broadcast_status();
        if started && !self.driving.get() {
            let me = self.clone();
            spawn_local(async move { me.drive().await });
        }
    }

    async fn wait_idle(self: &Rc<Self>) {
        if !self.driving.get() && !self.flusher.borrow().is_busy() {
            return;
        }
        let (signal, fut) = Signal::new();
        self.waiters.borrow_mut().push(signal);
        let _ = fut.await;
    }

    async fn drive(self: Rc<Self>) {
        if self.driving.replace(true) {
            return;
        }
        loop {
            let action = self.flusher.borrow_mut().poll_action();
            let Some(action) = action else { break };
            self.execute(action).await;
            self.broadcast_status();
        }
        self.driving.set(false);
        self.arm_timer();
        for w in std::mem::take(&mut *self.waiters.borrow_mut()) {
            w.fire();
        }
    }

    async fn execute(self: &Rc<Self>, action: Action) {
        match action {
            Action::LoadBatch { after, limit } => {
                let loaded = self
                    .store
                    .load_batch(after, limit, &self.client_id, now())
                    .await;
                let entries = match loaded {
                    Ok((entries, errors)) => {
                        if !errors.is_empty() {
                            for e in &errors {
                                js::log(&e.to_string());
                                self.flusher.borrow_mut().report_error(
                                    now(),
                                    codes::CORRUPT_RECORD,
                                    e.to_string(),
                                );
                            }
                            self.refresh_counts().await;
                        }
                        entries
                    }
                    Err(e) => {
                        // Not an empty outbox: back off and read again later.
                        self.flusher.borrow_mut().handle_batch_failed(
                            now(),
                            e.code(),
                            e.to_string(),
                            &mut MathRandom,
                        );
                        return;
                    }
                };
                self.flusher
                    .borrow_mut()
                    .handle_batch_loaded(now(), entries);
            }
            Action::Send(SendRequest::Push(body)) => {
                let outcome = self.push(&body).await;
                self.flusher
                    .borrow_mut()
                    .handle_push_outcome(now(), &outcome, &mut MathRandom);
            }
            Action::Send(SendRequest::Captured {
                request,
                idempotency_key,
                ..
            }) => {
                let outcome = self.replay(&request, &idempotency_key).await;
                self.flusher
                    .borrow_mut()
                    .handle_captured_outcome(now(), &outcome, &mut MathRandom);
            }
            Action::Record(plan) => {
                let (synced, error) = {
                    let f = self.flusher.borrow();
                    (f.last_synced_at(), f.last_error().cloned())
                };
                let result = self
                    .store
                    .record(&plan, now(), synced, error.as_ref())
                    .await;
                let result = match result {
                    Ok(changed) => {
                        for (collection, key) in changed {
                            (self.notify)(&Broadcast::Change { collection, key });
                        }
                        Ok(())
                    }
                    Err(e) => Err(e.to_string()),
                };
                self.flusher.borrow_mut().handle_recorded(now(), result);
                self.refresh_counts().await;
            }
            Action::Pull => {
                let result = self.pull().await;
                self.flusher.borrow_mut().handle_pulled(now(), result);
            }
            Action::ScheduleWake { .. } => {}
            Action::RegisterSync => {
                if !self.in_sync_handler.get() {
                    self.register_sync().await;
                }
            }
        }
    }

    fn arm_timer(self: &Rc<Self>) {
        let at = self.flusher.borrow().poll_timeout();
        let timeout = at.map(|at| {
            let weak = Rc::downgrade(self);
            Timeout::new(at.saturating_sub(now()).saturating_add(5), move || {
                let Some(engine) = weak.upgrade() else { return };
                spawn_local(async move {
                    let started = engine.flusher.borrow_mut().handle_timeout(now());
                    if started {
                        engine.drive().await;
                    } else {
                        engine.arm_timer();
                    }
                });
            })
        });
        *self.timer.borrow_mut() = timeout;
    }

    fn base_url(&self) -> String {
        self.config
            .borrow()
            .server_url
            .trim_end_matches('/')
            .to_owned()
    }

    fn auth_headers(&self) -> Result<web_sys::Headers, JsValue> {
        let headers = web_sys::Headers::new()?;
        if let Some(token) = self.config.borrow().token.as_deref() {
            headers.set("authorization", &format!("Bearer {token}"))?;
        }
        Ok(headers)
    }

    async fn http(
        &self,
        method: &str,
        url: &str,
        headers: &web_sys::Headers,
        body: Option<&JsValue>,
    ) -> HttpOutcome {
        let init = web_sys::RequestInit::new();
        init.set_method(method);
        init.set_headers(headers);
        if let Some(b) = body {
            init.set_body(b);
        }
        let request = match web_sys::Request::new_with_str_and_init(url, &init) {
            Ok(r) => r,
            Err(e) => {
                return HttpOutcome::Network {
                    message: SwError::from_js(&e).to_string(),
                }
            }
        };
        match js::fetch(&request).await {
            Err(message) => HttpOutcome::Network { message },
            Ok(resp) => {
                let retry_after = resp.headers().get("retry-after").ok().flatten();
                let body = match resp.text() {
                    Ok(p) => js::await_promise(p)
                        .await
                        .ok()
                        .and_then(|v| v.as_string())
                        .unwrap_or_default(),
                    Err(_) => String::new(),
                };
                HttpOutcome::Response {
                    status: resp.status(),
                    retry_after,
                    body,
                }
            }
        }
    }

    async fn push(&self, body: &PushRequest) -> HttpOutcome {
        self.pushes.set(self.pushes.get() + 1);
        let url = format!("{}/api/sync/push", self.base_url());
        let text = match serde_json::to_string(body) {
            Ok(t) => t,
            Err(e) => {
                return HttpOutcome::Network {
                    message: e.to_string(),
                }
            }
        };
        let headers = match self.auth_headers() {
            Ok(h) => h,
            Err(e) => {
                return HttpOutcome::Network {
                    message: SwError::from_js(&e).to_string(),
                }
            }
        };
        let _ = headers.set("content-type", "application/json");
        self.http("POST", &url, &headers, Some(&JsValue::from_str(&text)))
            .await
    }

    async fn replay(&self, request: &CapturedRequest, idempotency_key: &str) -> HttpOutcome {
        let Ok(headers) = web_sys::Headers::new() else {
            return HttpOutcome::Network {
                message: "Headers unavailable".into(),
            };
        };
        for (k, v) in &request.headers {
            let _ = headers.append(k, v);
        }
        let _ = headers.set("idempotency-key", idempotency_key);
        let method = request.method.to_ascii_uppercase();
        let body: Option<JsValue> = if matches!(method.as_str(), "GET" | "HEAD") {
            None
        } else {
            Some(Uint8Array::from(&request.body[..]).into())
        };
        self.http(&method, &request.url, &headers, body.as_ref())
            .await
    }

    async fn pull(self: &Rc<Self>) -> Result<(), String> {
        let mut cursor = self.store.cursor().await.map_err(|e| e.to_string())?;
        for _ in 0..100 {
            let since: String = js_sys::encode_uri_component(&cursor).into();
            let url = format!("{}/api/sync/pull?since={since}&limit=500", self.base_url());
            let headers = self
                .auth_headers()
                .map_err(|e| SwError::from_js(&e).to_string())?;
            let resp = match self.http("GET", &url, &headers, None).await {
                HttpOutcome::Network { message } => return Err(message),
                HttpOutcome::Response { status, body, .. } if (200..300).contains(&status) => body,
                HttpOutcome::Response { status, .. } => {
                    return Err(format!("pull answered HTTP {status}"))
                }
            };
            let page: PullResponse = serde_json::from_str(&resp)
                .map_err(|e| format!("pull answer is malformed: {e}"))?;
            let (changed, skipped) = self
                .store
                .apply_pull(&page.changes, &page.cursor)
                .await
                .map_err(|e| e.to_string())?;
            for (collection, key) in changed {
                (self.notify)(&Broadcast::Change { collection, key });
            }
            // A skipped change (its entity had a pending write) is fetched again next time:
            // the stored cursor stays before it, so stop here.
            if skipped || !page.has_more {
                break;
            }
            cursor = page.cursor;
        }
        Ok(())
    }

    // ---- status ----

    async fn refresh_counts(&self) {
        if let Ok((pending, dead)) = self.store.counts().await {
            let mut c = self.counts.get();
            c.pending = pending;
            c.dead = dead;
            self.counts.set(c);
        }
    }

    fn status_json(&self) -> Result<Value, SwError> {
        serde_json::to_value(self.status())
            .map_err(|e| SwError::coded(codes::INTERNAL, e.to_string()))
    }

    /// Post the status to every window client when it changed.
    fn broadcast_status(&self) {
        let status = self.status();
        if self.last_status.borrow().as_ref() == Some(&status) {
            return;
        }
        *self.last_status.borrow_mut() = Some(status.clone());
        (self.notify)(&Broadcast::Status { status });
    }
}

/// Check every operation of a `write_many` first (nothing is written when one is invalid), then
/// turn them into outbox entries stamped `at`.
fn write_many_entries(
    ops: Vec<rangersync_shared::messages::WriteOp>,
    at: rangersync_shared::protocol::Millis,
) -> Result<Vec<NewEntry>, SwError> {
    use rangersync_shared::messages::{WriteOp, MAX_WRITE_MANY_OPS};
    if ops.is_empty() || ops.len() > MAX_WRITE_MANY_OPS {
        return Err(SwError::coded(
            codes::INVALID_VALUE,
            format!(
                "write_many takes 1 to {MAX_WRITE_MANY_OPS} operations (got {})",
                ops.len()
            ),
        ));
    }
    for op in &ops {
        let (collection, key) = op.target();
        validate::validate_collection(collection)?;
        validate::validate_key(key)?;
        if let WriteOp::Put { value, .. } = op {
            validate::validate_value(value)?;
        }
    }
    Ok(ops
        .into_iter()
        .map(|op| match op {
            WriteOp::Put {
                collection,
                key,
                value,
            } => NewEntry::Write {
                collection,
                key,
                op: Op::Put,
                value,
                updated_at: at,
            },
            WriteOp::Delete { collection, key } => NewEntry::Write {
                collection,
                key,
                op: Op::Delete,
                value: Value::Null,
                updated_at: at,
            },
        })
        .collect())
}

/// Whether a client URL has the worker's origin.
pub fn same_origin(client_url: &str, origin: &str) -> bool {
    web_sys::Url::new(client_url)
        .map(|u| u.origin() == origin)
        .unwrap_or(false)
}

/// Convert a list of headers from a JS `Headers` object.
pub fn headers_to_vec(headers: &web_sys::Headers) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Ok(Some(iter)) = js_sys::try_iter(headers) {
        for pair in iter.flatten() {
            let pair = Array::from(&pair);
            if let (Some(k), Some(v)) = (pair.get(0).as_string(), pair.get(1).as_string()) {
                out.push((k, v));
            }
        }
    }
    out
}
