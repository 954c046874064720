//! The flusher driver: runs `shared::outbox::Flusher`'s actions (read a batch, send it, record
//! the answer, pull) against IndexedDB and the network; the triggers that start it; the retry
//! timer; Background Sync registration and events.
//!
//! The pipe stays full: while a full batch is on the wire, the next one is read from IndexedDB
//! (its seqs are then guarded from coalescing), so the next push leaves as soon as the answer
//! to the last one is recorded.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use rangersync_shared::messages::codes;
use rangersync_shared::outbox::{
    Action, CoalesceGuard, FlusherState, QueuedEntry, SendRequest, Trigger,
};
use rangersync_shared::protocol::ErrorDetail;
use wasm_bindgen_futures::{spawn_local, JsFuture};

use super::Engine;
use crate::bindings;
use crate::error::SwError;
use crate::js::{self, now, MathRandom, Signal, Timeout};
use crate::lock::FlushLock;
use crate::schema::meta;

/// How long after a `lastChance` sync handler the engine registers a new sync.
const LAST_CHANCE_REREGISTER_MS: i64 = 1_000;

type Loaded = Result<(Vec<QueuedEntry>, Vec<SwError>), SwError>;

/// The next batch, read while the current one is on the wire.
struct Prefetch {
    after: u64,
    limit: usize,
    /// The commit count when the read began: a batch that came back short is only whole if
    /// nothing was committed since.
    commits_at_start: u64,
    slot: Rc<RefCell<Option<Loaded>>>,
    ready: JsFuture,
}

/// The driver's state.
#[derive(Default)]
pub(super) struct Driver {
    driving: Cell<bool>,
    waiters: RefCell<Vec<Signal>>,
    timer: RefCell<Option<Timeout>>,
    in_sync_handler: Cell<bool>,
    sync_registrations: Cell<u64>,
    /// A Background Sync is registered and has not fired yet: the rest of the burst needs no
    /// other registration.
    sync_requested: Cell<bool>,
    /// The re-registration after a `lastChance` sync (runs once the handler has settled).
    reregister: RefCell<Option<Timeout>>,
    prefetch: RefCell<Option<Prefetch>>,
}

impl Driver {
    pub(super) fn sync_registrations(&self) -> u64 {
        self.sync_registrations.get()
    }

    pub(super) fn stop_timers(&self) {
        self.timer.borrow_mut().take();
        self.reregister.borrow_mut().take();
    }
}

impl Engine {
    /// What a new write may not coalesce away: the flusher's guard, plus a batch read ahead.
    pub(super) fn coalesce_guard(&self) -> CoalesceGuard {
        let mut guard = self.flusher.borrow().coalesce_guard();
        if let Some(p) = self.flush.prefetch.borrow().as_ref() {
            match &*p.slot.borrow() {
                None => {
                    guard.loading_after =
                        Some(guard.loading_after.map_or(p.after, |a| a.min(p.after)));
                }
                Some(Ok((entries, _))) => guard.in_flight.extend(entries.iter().map(|e| e.seq)),
                Some(Err(_)) => {}
            }
        }
        guard
    }

    async fn register_sync(&self) {
        self.flush
            .sync_registrations
            .set(self.flush.sync_registrations.get() + 1);
        self.flush.sync_requested.set(true);
        bindings::register_sync().await;
    }

    /// Ask the browser for a Background Sync, once per burst of writes.
    pub(super) fn request_background_sync(self: &Rc<Self>) {
        if self.flush.sync_requested.get() || self.flush.in_sync_handler.get() {
            return;
        }
        self.flush.sync_requested.set(true);
        let me = self.clone();
        spawn_local(async move { me.register_sync().await });
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
        // The registration fired: a later write needs a new one.
        self.flush.sync_requested.set(false);
        if let Some(why) = self.config_problem.borrow().clone() {
            // Not done: the browser keeps the registration and retries once a page has
            // sent a valid config.
            return Err(ErrorDetail {
                code: codes::CONFIG_ERROR.into(),
                message: why,
            });
        }
        {
            let c = self.config.borrow();
            if c.server_url.is_empty() && c.capture_routes.is_empty() {
                return Ok(());
            }
        }
        self.flush.in_sync_handler.set(true);
        self.trigger(Trigger::Sync { last_chance }).await;
        self.flush.in_sync_handler.set(false);
        // An auth stop is not the browser's to retry: resolve, the status shows auth_error.
        let failed = {
            let f = self.flusher.borrow();
            f.last_attempt_failed() && matches!(f.state(), FlusherState::WaitingRetry { .. })
        } && self.counts.get().pending > 0;
        if !failed {
            return Ok(());
        }
        if last_chance {
            self.flusher.borrow_mut().handle_sync_given_up(now());
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
                        engine.flush.reregister.borrow_mut().take();
                        if engine.counts.get().pending > 0 {
                            engine.register_sync().await;
                        }
                    });
                }
            });
            *self.flush.reregister.borrow_mut() = Some(timer);
            return Ok(());
        }
        let last = self.flusher.borrow().last_error().cloned();
        Err(last.map_or_else(
            || ErrorDetail {
                code: codes::NETWORK.into(),
                message: "flush failed".into(),
            },
            |e| ErrorDetail {
                code: e.code,
                message: e.message,
            },
        ))
    }

    pub(super) fn kick(self: &Rc<Self>, trigger: Trigger) {
        let unusable = {
            let c = self.config.borrow();
            (c.server_url.is_empty() && c.capture_routes.is_empty())
                || self.config_problem.borrow().is_some()
        };
        if unusable && trigger != Trigger::Offline {
            return;
        }
        let started = self.flusher.borrow_mut().handle_trigger(now(), trigger);
        self.broadcast_status();
        if started && !self.flush.driving.get() {
            let me = self.clone();
            spawn_local(async move { me.drive().await });
        }
    }

    async fn wait_idle(self: &Rc<Self>) {
        if !self.flush.driving.get() && !self.flusher.borrow().is_busy() {
            return;
        }
        let (signal, fut) = Signal::new();
        self.flush.waiters.borrow_mut().push(signal);
        let _ = fut.await;
    }

    async fn drive(self: Rc<Self>) {
        if self.flush.driving.replace(true) {
            return;
        }
        // One engine per outbox: the worker and a page-mode engine never flush at once.
        let (lock, waited) = FlushLock::acquire(&self.lock_name).await;
        if waited {
            // The holder delivered (or dead-lettered) entries under this engine.
            self.recount().await;
        }
        loop {
            let action = self.flusher.borrow_mut().poll_action();
            let Some(action) = action else { break };
            self.execute(action).await;
            self.broadcast_status();
        }
        drop(lock);
        self.flush.driving.set(false);
        // Nothing is on the wire: a batch read ahead of it is no longer guarded.
        self.flush.prefetch.borrow_mut().take();
        self.arm_timer();
        for w in std::mem::take(&mut *self.flush.waiters.borrow_mut()) {
            w.fire();
        }
    }

    /// Start reading the batch after `after` while the current one is on the wire.
    fn start_prefetch(self: &Rc<Self>, after: u64, limit: usize) {
        let slot: Rc<RefCell<Option<Loaded>>> = Rc::default();
        let (done, ready) = Signal::new();
        *self.flush.prefetch.borrow_mut() = Some(Prefetch {
            after,
            limit,
            commits_at_start: self.commit.transactions(),
            slot: slot.clone(),
            ready,
        });
        let me = self.clone();
        spawn_local(async move {
            let loaded = me
                .store
                .load_batch(after, limit, &me.client_id, now())
                .await;
            *slot.borrow_mut() = Some(loaded);
            done.fire();
        });
    }

    /// The batch read ahead, when it is exactly the one asked for and still whole.
    async fn take_prefetch(&self, after: u64, limit: usize) -> Option<Loaded> {
        let p = self.flush.prefetch.borrow_mut().take()?;
        if p.after != after || p.limit != limit {
            return None;
        }
        let _ = p.ready.await;
        let loaded = p.slot.borrow_mut().take()?;
        let whole = match &loaded {
            Ok((entries, errors)) => {
                errors.is_empty()
                    && (entries.len() == limit || self.commit.transactions() == p.commits_at_start)
            }
            Err(_) => false,
        };
        whole.then_some(loaded)
    }

    async fn load_batch(&self, after: u64, limit: usize) {
        let loaded = match self.take_prefetch(after, limit).await {
            Some(loaded) => loaded,
            None => {
                self.store
                    .load_batch(after, limit, &self.client_id, now())
                    .await
            }
        };
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
                    // Corrupt records moved to `dead`: how many is only known to the store.
                    self.recount().await;
                    self.reload_captured().await;
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

    async fn execute(self: &Rc<Self>, action: Action) {
        match action {
            Action::LoadBatch { after, limit } => self.load_batch(after, limit).await,
            Action::Send(SendRequest::Push(body)) => {
                let limit = self.flusher.borrow().batch_limit();
                if let Some(last) = body
                    .mutations
                    .last()
                    .filter(|_| body.mutations.len() == limit)
                {
                    self.start_prefetch(last.seq, limit);
                }
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
            Action::Send(SendRequest::Blob { upload, .. }) => self.send_blob(&upload).await,
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
                    Ok(recorded) => {
                        {
                            let mut captured = self.captured.borrow_mut();
                            for seq in plan.removed() {
                                captured.remove(&seq);
                            }
                        }
                        self.update_counts(|c| {
                            c.pending = c.pending.saturating_sub(recorded.removed);
                            c.dead += recorded.dead;
                        });
                        for (collection, key) in &recorded.changed {
                            self.broadcast_change(collection, key);
                        }
                        if recorded.removed > 0 && self.counts.get().blob_bytes_pending > 0 {
                            // Which removed entries were uploads, and of what size, only the
                            // store knows.
                            self.recount().await;
                        }
                        Ok(())
                    }
                    Err(e) => Err(e.to_string()),
                };
                self.flusher.borrow_mut().handle_recorded(now(), result);
            }
            Action::Pull => {
                // Capture only (no sync server): nothing to pull.
                let result = if self.config.borrow().server_url.is_empty() {
                    Ok(())
                } else {
                    self.pull().await
                };
                self.flusher.borrow_mut().handle_pulled(now(), result);
            }
            Action::ScheduleWake { .. } => {}
            Action::RegisterSync => {
                if !self.flush.in_sync_handler.get() {
                    self.register_sync().await;
                }
            }
        }
    }

    pub(super) fn arm_timer(self: &Rc<Self>) {
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
        *self.flush.timer.borrow_mut() = timeout;
    }
}
