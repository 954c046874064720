//! `SyncClient`: the JavaScript API. Thin wrappers that turn each call into a [`Request`], check
//! it locally, and hand it to the [`Transport`]: the service worker, or the page engine of the
//! extras module (loaded on demand) when no worker can run. Both speak the same text protocol.
//! Status and change broadcasts fan out to every `onStatus` / `onChange` listener.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

use js_sys::{Function, Promise, Reflect, JSON};
use rangersync_shared::messages::{
    codes, Config, ExportFormat, PageEvent, Request, BLOB_BESIDE, KEY_BESIDE, MESSAGE_VERSION,
    TEXT_BESIDE,
};
use rangersync_shared::outbox::VISIBLE_PROBE_MS;
use rangersync_shared::status::Mode;
use serde_json::Value;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{future_to_promise, spawn_local, JsFuture};
use web_sys::{BroadcastChannel, MessageEvent, VisibilityState, Window};

use crate::autosave::Autosave;
use crate::error::ClientError;
use crate::extras::{self, error_from_js, PageEngine};
use crate::js::{self, call_listener, describe, Listener};
use crate::options::{
    parse_autosave_options, parse_restore_options, BackupEncryption, ClientOptions, RestoreOptions,
    SLOW_REQUEST_FACTOR,
};
use crate::request::{self, Incoming};
use crate::worker::{LinkError, WorkerLink};

/// A reply's text and what it carries beside it: a string is the text alone; `{ text, blob }`
/// carries a `Blob`. `None` for anything else.
pub(crate) fn split_reply(data: &JsValue) -> Option<(String, JsValue)> {
    if let Some(text) = data.as_string() {
        return Some((text, JsValue::UNDEFINED));
    }
    let text = Reflect::get(data, &TEXT_BESIDE.into()).ok()?.as_string()?;
    let blob = Reflect::get(data, &BLOB_BESIDE.into()).unwrap_or(JsValue::UNDEFINED);
    Some((text, blob))
}

/// Name of the `BroadcastChannel` that page-mode tabs use to tell each other about changes.
const RELAY_CHANNEL: &str = "rangersync-page";

/// Where requests go.
#[derive(Clone)]
enum Transport {
    /// The service worker that controls this page.
    Worker(Rc<WorkerLink>),
    /// The same outbox over the same IndexedDB database, run in this page.
    Page(Rc<PageLink>),
}

/// The page engine of the extras module and the broadcast callback it holds.
struct PageLink {
    engine: PageEngine,
    /// Called by the engine with each broadcast's JSON text; lives as long as the engine.
    _on_broadcast: Closure<dyn Fn(String)>,
}

/// The shortest wait of the backup timer (a due time in the past must not spin).
const BACKUP_WAKE_FLOOR_MS: f64 = 5_000.0;

/// A `setTimeout` id and the callback it holds.
type WakeTimer = (JsValue, Closure<dyn FnMut()>);

/// Where a broadcast came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Worker,
    PageEngine,
    OtherTab,
}

/// The state behind a `SyncClient`. Event handlers and the engine hold it weakly, so dropping
/// (or `free()`ing) the client removes every listener it added.
pub(crate) struct Inner {
    options: ClientOptions,
    transport: RefCell<Option<Transport>>,
    next_id: Cell<u64>,
    next_listener: Cell<u32>,
    status_listeners: RefCell<Vec<(u32, Function)>>,
    change_listeners: RefCell<Vec<(u32, Function)>>,
    last_status: RefCell<Option<Value>>,
    dom: RefCell<Vec<Listener>>,
    /// The page-mode switch in progress (or done), so that it happens once.
    fallback: RefCell<Option<Promise>>,
    relay: RefCell<Option<BroadcastChannel>>,
    /// Why this tab runs the outbox in the page (shown in every status as `fallback_reason`).
    fallback_reason: RefCell<Option<String>>,
    /// The wake-up timer of a visible page (see [`Inner::arm_wake`]): its id and callback.
    wake: RefCell<Option<WakeTimer>>,
    /// The timer of an open page at the next backup's due time (see [`Inner::arm_backup_wake`]).
    backup_wake: RefCell<Option<WakeTimer>>,
    /// `token` given as a function: asked for a fresh token at register, before a flush the
    /// page asks for, and when the worker shows `auth_error` (see [`Inner::refresh_token`]).
    token_source: Option<Function>,
    /// The token sent to the outbox last (from `token`, or the function's last answer).
    token: RefCell<Option<String>>,
    /// A refresh is running, or ran within [`TOKEN_REFRESH_MIN_MS`] (`js_sys::Date::now`).
    token_refreshed_at: Cell<f64>,
    token_refreshing: Cell<bool>,
    /// `captureCredentials`: gives the secret headers (the API's `Authorization`, say) that a
    /// captured call restored from a snapshot lost; asked at register and before each
    /// `flush()`, handed to the outbox, which keeps them in memory only.
    credentials_source: Option<Function>,
}

/// A refused token is asked for again at most this often (a token function that keeps giving
/// a refused token must not make the page and worker spin).
const TOKEN_REFRESH_MIN_MS: f64 = 2_000.0;

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some((id, _)) = self.wake.get_mut().take() {
            js::clear_timeout(&id);
        }
        if let Some((id, _)) = self.backup_wake.get_mut().take() {
            js::clear_timeout(&id);
        }
        if let Some(channel) = self.relay.get_mut().take() {
            channel.set_onmessage(None);
            channel.close();
        }
        if let Some(Transport::Page(link)) = self.transport.get_mut().take() {
            link.engine.close();
        }
    }
}

impl Inner {
    fn new(
        options: ClientOptions,
        token_source: Option<Function>,
        credentials_source: Option<Function>,
    ) -> Rc<Self> {
        let token = RefCell::new(options.config.token.clone());
        Rc::new(Self {
            options,
            token_source,
            credentials_source,
            token,
            token_refreshed_at: Cell::new(f64::NEG_INFINITY),
            token_refreshing: Cell::new(false),
            transport: RefCell::new(None),
            next_id: Cell::new(1),
            next_listener: Cell::new(1),
            status_listeners: RefCell::new(Vec::new()),
            change_listeners: RefCell::new(Vec::new()),
            last_status: RefCell::new(None),
            dom: RefCell::new(Vec::new()),
            fallback: RefCell::new(None),
            relay: RefCell::new(None),
            wake: RefCell::new(None),
            backup_wake: RefCell::new(None),
            fallback_reason: RefCell::new(None),
        })
    }

    /// The config sent to the outbox: the options', with the current token.
    fn config(&self) -> Config {
        Config {
            token: self.token.borrow().clone(),
            ..self.options.config.clone()
        }
    }

    /// Ask the token function (if `token` is one) for a fresh token; when it differs from the
    /// one the outbox has, send the outbox the new config (which lifts an `auth_error` and
    /// flushes at once). On an `auth_error` status at most once per [`TOKEN_REFRESH_MIN_MS`];
    /// `now_needed` (an explicit `flush()`) always asks.
    async fn refresh_token(self: &Rc<Self>, now_needed: bool) -> Result<(), ClientError> {
        let Some(source) = self.token_source.clone() else {
            return Ok(());
        };
        let at = js_sys::Date::now();
        if self.token_refreshing.get()
            || (!now_needed && at - self.token_refreshed_at.get() < TOKEN_REFRESH_MIN_MS)
        {
            return Ok(());
        }
        self.token_refreshing.set(true);
        self.token_refreshed_at.set(at);
        let fresh = call_token_source(&source).await;
        self.token_refreshing.set(false);
        let fresh = fresh?;
        if fresh == *self.token.borrow() {
            return Ok(());
        }
        *self.token.borrow_mut() = fresh;
        self.send(Request::Configure {
            config: self.config(),
        })
        .await
        .map(|_| ())
    }

    /// Ask `captureCredentials` (if given) for the current secret headers and hand them to
    /// the outbox.
    async fn give_capture_credentials(self: &Rc<Self>) -> Result<(), ClientError> {
        let Some(source) = self.credentials_source.clone() else {
            return Ok(());
        };
        let failed = |e: &JsValue| {
            ClientError::config(format!("captureCredentials failed: {}", describe(e)))
        };
        let mut answer = source.call0(&JsValue::UNDEFINED).map_err(|e| failed(&e))?;
        if let Some(p) = answer.dyn_ref::<Promise>() {
            answer = JsFuture::from(p.clone()).await.map_err(|e| failed(&e))?;
        }
        let headers: Vec<(String, String)> = match js::options_json(&answer)? {
            Value::Null => Vec::new(),
            Value::Object(map) => map
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(v) => Ok((k, v)),
                    _ => Err(ClientError::config(format!(
                        "captureCredentials must give {{ header: string }} (got {k:?}: {v})"
                    ))),
                })
                .collect::<Result<_, _>>()?,
            other => {
                return Err(ClientError::config(format!(
                    "captureCredentials must give {{ header: string }} (got {other})"
                )))
            }
        };
        self.send(Request::CaptureCredentials { headers })
            .await
            .map(|_| ())
    }

    fn mode(&self) -> Mode {
        match self.transport.borrow().as_ref() {
            Some(Transport::Page(_)) => Mode::Page,
            _ => Mode::Worker,
        }
    }

    fn take_id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        id
    }

    /// Send `request` and await its result. Checked locally first. A read in flight when the
    /// worker is replaced is sent once more to the new one; a write is not (the old worker has
    /// usually committed it: sending it again would commit it twice, possibly after a newer
    /// write), it fails with `worker_unavailable`. With no worker in control, the client falls
    /// back to page mode and sends it there.
    pub(crate) async fn send(self: &Rc<Self>, request: Request) -> Result<Value, ClientError> {
        self.send_carrying(request, &JsValue::UNDEFINED).await
    }

    /// [`Self::send`] for a request that carries a `CryptoKey` (`key: true`): the message is
    /// `{ text, key }` ([`rangersync_shared::messages::KEY_BESIDE`]), the key cloned, never
    /// written as text.
    async fn send_carrying(
        self: &Rc<Self>,
        request: Request,
        key: &JsValue,
    ) -> Result<Value, ClientError> {
        let beside = (!key.is_undefined()).then_some((KEY_BESIDE, key));
        self.send_beside(request, beside)
            .await
            .map(|(value, _)| value)
    }

    /// Send `request` with `beside` = `(field, value)` cloned beside its text (`{ text,
    /// [field]: value }`: a `CryptoKey`, a `Blob`); answers the result and what the reply
    /// carries beside its text (`undefined` but for `get_blob`).
    pub(crate) async fn send_beside(
        self: &Rc<Self>,
        request: Request,
        beside: Option<(&str, &JsValue)>,
    ) -> Result<(Value, JsValue), ClientError> {
        request::check(&request)?;
        let factor = if request::is_slow(&request) {
            SLOW_REQUEST_FACTOR
        } else {
            1
        };
        let timeout_ms = self.options.timeout_ms.saturating_mul(factor);
        let mut resent = false;
        loop {
            let transport = self.transport.borrow().clone();
            let Some(transport) = transport else {
                return Err(ClientError::unavailable("the client is closed"));
            };
            match transport {
                Transport::Page(link) => {
                    let id = self.take_id();
                    let carried = beside.map_or(JsValue::UNDEFINED, |(_, v)| v.clone());
                    let (reply, with) = link
                        .engine
                        .request(&request::envelope(id, request)?, &carried)
                        .await?;
                    return request::reply(id, &reply).map(|v| (v, with));
                }
                Transport::Worker(link) => {
                    let id = self.take_id();
                    // As text: the worker parses it once and answers with text, so no
                    // message is converted to a JS object and back on either side.
                    let text = JsValue::from_str(&request::envelope(id, request.clone())?);
                    let message = match beside {
                        None => text,
                        Some((field, value)) => {
                            let carrying = js_sys::Object::new();
                            let _ = Reflect::set(&carrying, &TEXT_BESIDE.into(), &text);
                            let _ = Reflect::set(&carrying, &field.into(), value);
                            carrying.into()
                        }
                    };
                    match link.request(id, &message, timeout_ms).await {
                        Ok(data) => {
                            // A string to a string (`{ text, blob }` for `get_blob`; an
                            // object only from an old worker).
                            let (text, with) = split_reply(&data).unwrap_or_else(|| {
                                let text = JSON::stringify(&data)
                                    .ok()
                                    .and_then(|t| t.as_string())
                                    .unwrap_or_default();
                                (text, JsValue::UNDEFINED)
                            });
                            return request::reply(id, &text).map(|v| (v, with));
                        }
                        Err(LinkError::ControllerChanged) if request::is_write(&request) => {
                            return Err(request::write_interrupted())
                        }
                        Err(LinkError::ControllerChanged) if !resent => resent = true,
                        Err(LinkError::ControllerChanged) => {
                            return Err(ClientError::unavailable(
                                "the worker was replaced twice while this request was in flight",
                            ))
                        }
                        Err(LinkError::NoController) => {
                            self.fall_back("no service worker controls this page")
                                .await?;
                        }
                        Err(LinkError::Timeout) => {
                            return Err(ClientError::timeout(format!(
                                "the worker did not answer within {timeout_ms} ms"
                            )))
                        }
                        Err(LinkError::Post(why)) => return Err(ClientError::unavailable(why)),
                    }
                }
            }
        }
    }

    /// Switch to page mode (once; concurrent callers await the same switch).
    async fn fall_back(self: &Rc<Self>, reason: &str) -> Result<(), ClientError> {
        let pending = self.fallback.borrow().clone();
        let switch = match pending {
            Some(p) => p,
            None => {
                // Page mode delivers only while a page is open: say so loudly, and in the
                // status (`fallback_reason`), never silently.
                web_sys::console::warn_1(&JsValue::from_str(&format!(
                    "rangersync: running in page mode ({reason}): writes are delivered only while a page of this app is open"
                )));
                *self.fallback_reason.borrow_mut() = Some(reason.to_owned());
                let inner = Rc::clone(self);
                let p = future_to_promise(async move {
                    inner
                        .open_page_engine()
                        .await
                        .map(|()| JsValue::UNDEFINED)
                        .map_err(JsValue::from)
                });
                *self.fallback.borrow_mut() = Some(p.clone());
                p
            }
        };
        match JsFuture::from(switch).await {
            Ok(_) => Ok(()),
            Err(e) => {
                // Let a later call try again.
                *self.fallback.borrow_mut() = None;
                Err(error_from_js(&e))
            }
        }
    }

    /// Load the extras module, open its engine over this origin's database and configure it.
    async fn open_page_engine(self: &Rc<Self>) -> Result<(), ClientError> {
        let extras = extras::load("page mode (no service worker)").await?;
        let weak = Rc::downgrade(self);
        let on_broadcast = Closure::<dyn Fn(String)>::new(move |text: String| {
            let Some(inner) = weak.upgrade() else { return };
            match request::incoming(&text) {
                Some(b) => {
                    inner.dispatch(&b, Source::PageEngine);
                    inner.relay(&text);
                }
                None => web_sys::console::debug_1(&JsValue::from_str(
                    "rangersync: ignored a page engine message that is not a broadcast",
                )),
            }
        });
        let engine = extras
            .open_engine(on_broadcast.as_ref().unchecked_ref())
            .await?;
        let link = Rc::new(PageLink {
            engine,
            _on_broadcast: on_broadcast,
        });
        let id = self.take_id();
        let configure = Request::Configure {
            config: self.config(),
        };
        let reply = link
            .engine
            .request(&request::envelope(id, configure)?, &JsValue::UNDEFINED)
            .await;
        if let Err(e) = reply.and_then(|(text, _)| request::reply(id, &text)) {
            link.engine.close();
            return Err(e);
        }
        *self.transport.borrow_mut() = Some(Transport::Page(link));
        self.open_relay();
        Ok(())
    }

    /// Page-mode tabs tell each other about statuses and changes over a `BroadcastChannel`
    /// (in worker mode the worker broadcasts to every tab itself).
    fn open_relay(self: &Rc<Self>) {
        let Ok(channel) = BroadcastChannel::new(RELAY_CHANNEL) else {
            return;
        };
        let weak = Rc::downgrade(self);
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            let Some(inner) = weak.upgrade() else { return };
            if let Some(b) = event.data().as_string().and_then(|t| request::incoming(&t)) {
                inner.dispatch(&b, Source::OtherTab);
            }
        });
        channel.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        // The channel lives as long as the client; its handler is released with the page.
        on_message.forget();
        *self.relay.borrow_mut() = Some(channel);
    }

    /// Tell the other page-mode tabs about a broadcast of this tab's engine (its JSON text).
    fn relay(&self, text: &str) {
        if let Some(channel) = self.relay.borrow().as_ref() {
            let _ = channel.post_message(&JsValue::from_str(text));
        }
    }

    /// Hand a broadcast to the listeners. Worker broadcasts are ignored in page mode (this tab's
    /// engine is the source of truth then), and other tabs' relays in worker mode.
    fn dispatch(self: &Rc<Self>, b: &Incoming, source: Source) {
        let mode = self.mode();
        match (source, mode) {
            (Source::Worker, Mode::Page) | (Source::OtherTab, Mode::Worker) => return,
            _ => {}
        }
        match b {
            Incoming::Status(status) => {
                if status["state"] == "auth_error" && self.token_source.is_some() {
                    let inner = Rc::clone(self);
                    spawn_local(async move {
                        if let Err(e) = inner.refresh_token(false).await {
                            web_sys::console::warn_1(&JsValue::from_str(&format!(
                                "rangersync: the token function failed: {e}"
                            )));
                        }
                    });
                }
                let status = &self.with_fallback_reason(status.clone());
                self.arm_wake(status, 0.0);
                self.arm_backup_wake(status);
                *self.last_status.borrow_mut() = Some(status.clone());
                let js_status = js::from_json(status);
                let listeners = self.status_listeners.borrow().clone();
                for (_, f) in &listeners {
                    call_listener(f, std::slice::from_ref(&js_status));
                }
            }
            Incoming::Change { collection, key } => {
                let (c, k) = (JsValue::from_str(collection), JsValue::from_str(key));
                let listeners = self.change_listeners.borrow().clone();
                for (_, f) in &listeners {
                    call_listener(f, &[c.clone(), k.clone()]);
                }
            }
            Incoming::WorkerError { code, message } => {
                web_sys::console::warn_1(&JsValue::from_str(&format!(
                    "rangersync: the worker reported {code}: {message}; switching to page mode"
                )));
                let inner = Rc::clone(self);
                let reason = format!("the worker reported {code}: {message}");
                spawn_local(async move {
                    if let Err(e) = inner.fall_back(&reason).await {
                        web_sys::console::error_1(&JsValue::from(e));
                    } else {
                        inner.refresh_status().await;
                    }
                });
            }
        }
    }

    /// While this page is visible and writes wait for a retry, wake the outbox at the retry
    /// time, and at least every [`VISIBLE_PROBE_MS`] while the server did not answer at all
    /// (`offline`). The worker may have been stopped with its own timer (Firefox stops an idle
    /// worker after about 30 s): the wake-up message starts it again. The worker decides
    /// whether to send: it never probes a server answering 5xx faster than its backoff.
    /// `floor_ms`: the shortest wait (a re-arm after a wake-up the worker did not act on must
    /// not spin).
    fn arm_wake(self: &Rc<Self>, status: &Value, floor_ms: f64) {
        if let Some((id, _)) = self.wake.borrow_mut().take() {
            js::clear_timeout(&id);
        }
        let visible = web_sys::window()
            .and_then(|w| w.document())
            .is_some_and(|d| d.visibility_state() == VisibilityState::Visible);
        let waiting = status["pending"].as_u64().unwrap_or(0) > 0;
        let Some(retry_at) = status["next_retry_at"].as_f64() else {
            return;
        };
        if !visible || !waiting {
            return;
        }
        let now = js_sys::Date::now();
        let mut delay = (retry_at - now).max(0.0) + 100.0;
        delay = delay.max(floor_ms);
        if status["state"] == "offline" {
            delay = delay.min(VISIBLE_PROBE_MS as f64);
        }
        let weak = Rc::downgrade(self);
        // Outside the timer's own call (a microtask later), so that replacing the timer may
        // drop this closure.
        let callback = Closure::<dyn FnMut()>::new(move || {
            if let Some(inner) = weak.upgrade() {
                spawn_local(async move { inner.on_wake() });
            }
        });
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let ms = delay.min(f64::from(i32::MAX)) as u32;
        let id = js::set_timeout(callback.as_ref().unchecked_ref(), ms);
        *self.wake.borrow_mut() = Some((id, callback));
    }

    /// While this page is open, ask for a backup at the status's `next_backup_at`: the worker
    /// may be stopped with its own timer (browsers stop an idle worker after about 30 s), and
    /// where there is no periodic sync this timer is what makes scheduled backups run. The
    /// worker decides whether one is due. Never sooner than [`BACKUP_WAKE_FLOOR_MS`].
    fn arm_backup_wake(self: &Rc<Self>, status: &Value) {
        if let Some((id, _)) = self.backup_wake.borrow_mut().take() {
            js::clear_timeout(&id);
        }
        let Some(due) = status["next_backup_at"].as_f64() else {
            return;
        };
        let delay = (due - js_sys::Date::now() + 100.0).max(BACKUP_WAKE_FLOOR_MS);
        let weak = Rc::downgrade(self);
        let callback = Closure::<dyn FnMut()>::new(move || {
            if let Some(inner) = weak.upgrade() {
                spawn_local(async move {
                    inner.backup_wake.borrow_mut().take();
                    let _ = inner.send(Request::Backup { manual: false }).await;
                });
            }
        });
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let ms = delay.min(f64::from(i32::MAX)) as u32;
        let id = js::set_timeout(callback.as_ref().unchecked_ref(), ms);
        *self.backup_wake.borrow_mut() = Some((id, callback));
    }

    /// `status` with `fallback_reason`: why this tab is in page mode, or `null`.
    fn with_fallback_reason(&self, mut status: Value) -> Value {
        if let Value::Object(map) = &mut status {
            let reason = match self.mode() {
                Mode::Page => self.fallback_reason.borrow().clone(),
                Mode::Worker => None,
            };
            map.insert(
                "fallback_reason".into(),
                reason.map_or(Value::Null, Value::String),
            );
        }
        status
    }

    /// The wake-up timer fired: nudge the outbox if the page is still visible.
    fn on_wake(self: &Rc<Self>) {
        self.wake.borrow_mut().take();
        let visible = web_sys::window()
            .and_then(|w| w.document())
            .is_some_and(|d| d.visibility_state() == VisibilityState::Visible);
        if visible {
            self.page_event(PageEvent::Visible);
            // A new status re-arms it; if none comes (nothing changed), check again.
            let last = self.last_status.borrow().clone();
            if let Some(last) = last {
                self.arm_wake(&last, 1_000.0);
            }
        }
    }

    /// Ask for the status and tell the listeners (after a mode switch or a worker update).
    async fn refresh_status(self: &Rc<Self>) {
        if let Ok(value) = self.send(Request::Status).await {
            if request::is_status(&value) {
                self.dispatch(&Incoming::Status(value), Source::PageEngine);
            }
        }
    }

    /// Listen to the worker: broadcasts, and a new controller after an update.
    fn attach_worker(self: &Rc<Self>, link: &Rc<WorkerLink>) {
        *self.transport.borrow_mut() = Some(Transport::Worker(Rc::clone(link)));
        let target = link.container().as_ref();
        let weak = Rc::downgrade(self);
        let on_message = Listener::new(target, "message", move |event| {
            let Some(inner) = weak.upgrade() else { return };
            let Some(event) = event.dyn_ref::<MessageEvent>() else {
                return;
            };
            let text = JSON::stringify(&event.data())
                .ok()
                .and_then(|t| t.as_string());
            match text.as_deref().and_then(request::incoming) {
                Some(b) => inner.dispatch(&b, Source::Worker),
                _ => web_sys::console::debug_1(&JsValue::from_str(
                    "rangersync: ignored a worker message that is not a broadcast",
                )),
            }
        });
        let weak = Rc::downgrade(self);
        let on_controller = Listener::new(target, "controllerchange", move |_| {
            let Some(inner) = weak.upgrade() else { return };
            let Some(Transport::Worker(link)) = inner.transport.borrow().clone() else {
                return;
            };
            // Tell the new worker the config first, then resend what was in flight.
            let configure = Request::Configure {
                config: inner.config(),
            };
            if let Ok(message) =
                request::envelope(inner.take_id(), configure).and_then(|text| js::parse_text(&text))
            {
                let _ = link.post_and_forget(&message);
            }
            link.controller_changed();
            let inner = Rc::clone(&inner);
            spawn_local(async move { inner.refresh_status().await });
        });
        self.dom.borrow_mut().extend([on_message, on_controller]);
    }

    /// Tell the outbox about the page's life: unloading and hiding make it flush.
    fn install_page_events(self: &Rc<Self>, window: &Window) {
        let mut listeners = Vec::new();
        for (kind, event) in [
            ("pagehide", PageEvent::Pagehide),
            ("online", PageEvent::Online),
            ("offline", PageEvent::Offline),
        ] {
            let weak = Rc::downgrade(self);
            listeners.push(Listener::new(window.as_ref(), kind, move |_| {
                if let Some(inner) = weak.upgrade() {
                    inner.page_event(event);
                }
            }));
        }
        if let Some(document) = window.document() {
            let weak = Rc::downgrade(self);
            let doc = document.clone();
            listeners.push(Listener::new(
                document.as_ref(),
                "visibilitychange",
                move |_| {
                    let Some(inner) = weak.upgrade() else { return };
                    match doc.visibility_state() {
                        VisibilityState::Hidden => inner.page_event(PageEvent::Hidden),
                        VisibilityState::Visible => {
                            inner.page_event(PageEvent::Visible);
                            let last = inner.last_status.borrow().clone();
                            if let Some(last) = last {
                                inner.arm_wake(&last, 1_000.0);
                            }
                        }
                        _ => {}
                    }
                },
            ));
        }
        self.dom.borrow_mut().extend(listeners);
    }

    /// Fire and forget: posted synchronously, so it leaves even while the page unloads.
    fn page_event(self: &Rc<Self>, event: PageEvent) {
        let transport = self.transport.borrow().clone();
        match transport {
            Some(Transport::Worker(link)) => {
                let request = Request::PageEvent { event };
                if let Ok(message) =
                    request::envelope(self.take_id(), request).and_then(|t| js::parse_text(&t))
                {
                    let _ = link.post_and_forget(&message);
                }
            }
            Some(Transport::Page(link)) => {
                if let Ok(text) = request::envelope(self.take_id(), Request::PageEvent { event }) {
                    link.engine.post(&text);
                }
            }
            None => {}
        }
    }

    fn add_listener(self: &Rc<Self>, status: bool, f: Function) -> Function {
        let id = self.next_listener.get();
        self.next_listener.set(id + 1);
        let list = if status {
            &self.status_listeners
        } else {
            &self.change_listeners
        };
        list.borrow_mut().push((id, f.clone()));
        if status {
            // A new status listener hears the last known status at once (asynchronously).
            if let Some(last) = self.last_status.borrow().clone() {
                spawn_local(async move { call_listener(&f, &[js::from_json(&last)]) });
            }
        }
        let weak: Weak<Self> = Rc::downgrade(self);
        Closure::<dyn FnMut()>::new(move || {
            if let Some(inner) = weak.upgrade() {
                let list = if status {
                    &inner.status_listeners
                } else {
                    &inner.change_listeners
                };
                list.borrow_mut().retain(|(i, _)| *i != id);
            }
        })
        .into_js_value()
        .unchecked_into()
    }
}

/// Run `f` as a promise that resolves with its JSON result or rejects with a `SyncError`.
fn promise<F>(f: F) -> Promise
where
    F: std::future::Future<Output = Result<JsValue, ClientError>> + 'static,
{
    future_to_promise(async move { f.await.map_err(JsValue::from) })
}

/// The page side of rangersync. Create one with `SyncClient.register(options)`.
#[wasm_bindgen]
pub struct SyncClient {
    inner: Rc<Inner>,
}

#[wasm_bindgen]
impl SyncClient {
    /// Register the service worker (scope `/`), wait until it controls the page, send it the
    /// config, and start hydration. Falls back to page mode when no worker can run.
    pub async fn register(
        #[wasm_bindgen(unchecked_optional_param_type = "SyncClientOptions")] options: Option<
            JsValue,
        >,
    ) -> Result<SyncClient, JsValue> {
        console_error_panic_hook::set_once();
        Ok(Self::connect(&options.unwrap_or(JsValue::UNDEFINED)).await?)
    }

    async fn connect(options: &JsValue) -> Result<SyncClient, ClientError> {
        let window = web_sys::window().ok_or_else(|| {
            ClientError::unavailable("SyncClient.register runs in a page (no window)")
        })?;
        let origin = window
            .location()
            .origin()
            .map_err(|e| ClientError::internal(format!("no origin: {}", describe(&e))))?;
        // `token` may be a function (JSON leaves it out of the options it reads).
        let function_option = |name: &str| {
            (!options.is_undefined() && !options.is_null())
                .then(|| js_sys::Reflect::get(options, &name.into()).ok())
                .flatten()
                .and_then(|t| t.dyn_into::<Function>().ok())
        };
        let token_source = function_option("token");
        let credentials_source = function_option("captureCredentials");
        let backup_key = (!options.is_undefined() && !options.is_null())
            .then(|| Reflect::get(options, &"backupEncryption".into()).ok())
            .flatten()
            .map(|encryption| js::crypto_key_option(&encryption, "backupEncryption.key"))
            .transpose()?
            .flatten();
        let mut options = ClientOptions::parse(&js::options_json(options)?, &origin)?;
        if let Some(source) = &token_source {
            options.config.token = call_token_source(source).await?;
            options.config.check().map_err(ClientError::config)?;
        }
        // Ask before the first write, so the browser does not evict the database under
        // storage pressure; the status's `persistent` says whether it agreed.
        let persisting = options
            .persist_storage
            .then(|| js::request_persistent_storage(&window))
            .flatten();
        let inner = Inner::new(options, token_source, credentials_source);
        if inner.options.force_page_mode {
            inner.fall_back("forcePageMode").await?;
        } else {
            let (sw_url, wait) = (
                inner.options.worker_url(),
                inner.options.controller_timeout_ms,
            );
            match WorkerLink::connect(&window, &sw_url, wait).await {
                Ok(link) => {
                    inner.attach_worker(&link);
                    let configure = Request::Configure {
                        config: inner.config(),
                    };
                    match inner.send(configure).await {
                        Ok(_) => {}
                        Err(e)
                            if e.code == codes::TIMEOUT || e.code == codes::WORKER_UNAVAILABLE =>
                        {
                            inner
                                .fall_back(&format!("the worker did not accept the config: {e}"))
                                .await?;
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(reason) => inner.fall_back(&reason).await?,
            }
        }
        if let Some(answer) = persisting {
            // Firefox may ask the person: the status is refreshed when they answer.
            let inner = Rc::clone(&inner);
            spawn_local(async move {
                if wasm_bindgen_futures::JsFuture::from(answer).await.is_ok() {
                    inner.refresh_status().await;
                }
            });
        }
        match (inner.options.backup_encryption.clone(), backup_key) {
            (Some(BackupEncryption::Passphrase(passphrase)), _) => {
                // The outbox keeps the key derived from it (PBKDF2: a fraction of a second).
                inner
                    .send(Request::BackupKey {
                        passphrase: Some(passphrase),
                        key: false,
                    })
                    .await?;
            }
            (Some(BackupEncryption::Key), Some(key)) => {
                inner
                    .send_carrying(
                        Request::BackupKey {
                            passphrase: None,
                            key: true,
                        },
                        &key,
                    )
                    .await?;
            }
            (Some(BackupEncryption::Key), None) => {
                return Err(js::not_a_crypto_key("backupEncryption.key"))
            }
            (None, _) => {}
        }
        inner.give_capture_credentials().await?;
        inner.install_page_events(&window);
        // Hydration: the local copy is readable now; ask for a flush (which pulls after it).
        let hydrate = Rc::clone(&inner);
        spawn_local(async move {
            let _ = hydrate.send(Request::Flush).await;
        });
        Ok(SyncClient { inner })
    }

    /// `"worker"` or `"page"`: where the outbox runs for this tab right now.
    #[wasm_bindgen(getter, unchecked_return_type = "\"worker\" | \"page\"")]
    pub fn mode(&self) -> String {
        match self.inner.mode() {
            Mode::Worker => "worker".into(),
            Mode::Page => "page".into(),
        }
    }

    /// Stop: remove every listener and close the page engine's database connection. Writes
    /// already acknowledged stay in IndexedDB (the worker, or the next launch, delivers them).
    /// Later calls reject with `worker_unavailable`. `free()` does the same.
    pub fn close(&self) {
        let inner = &self.inner;
        inner.dom.borrow_mut().clear();
        inner.status_listeners.borrow_mut().clear();
        inner.change_listeners.borrow_mut().clear();
        if let Some(channel) = inner.relay.borrow_mut().take() {
            channel.set_onmessage(None);
            channel.close();
        }
        let transport = inner.transport.borrow_mut().take();
        if let Some(Transport::Page(link)) = transport {
            link.engine.close();
        }
    }

    /// Store `value` under `(collection, key)`. Resolves with `{ seq }` only after the write is
    /// committed in IndexedDB.
    #[wasm_bindgen(unchecked_return_type = "Promise<WriteAck>")]
    pub fn put(
        &self,
        collection: String,
        key: String,
        #[wasm_bindgen(unchecked_param_type = "unknown")] value: JsValue,
    ) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            let value = js::to_json(&value)?;
            // `onChange` hears it from the engine's broadcast (every tab, this one included).
            let ack = inner
                .send(Request::Put {
                    collection,
                    key,
                    value,
                })
                .await?;
            Ok(js::from_json(&ack))
        })
    }

    /// Keep `blob` (a `Blob` or a `File`) on this device and queue its upload to the sync
    /// server. Resolves with its reference `{ $blob: { sha256, size, type, name? } }` once its
    /// bytes are committed in IndexedDB: store the reference in any value (`put`); a write
    /// that references it is sent after its bytes. The upload is content-addressed, in 1 MiB
    /// chunks that resume after an outage or a restart. Rejects `blob_too_large` over
    /// 100 MiB, `invalid_blob` for anything but a `Blob`.
    #[wasm_bindgen(js_name = putBlob, unchecked_return_type = "Promise<BlobRef>")]
    pub fn put_blob(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Blob")] blob: JsValue,
    ) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            if !blob.is_instance_of::<web_sys::Blob>() {
                return Err(ClientError::new(
                    codes::INVALID_BLOB,
                    "putBlob takes a Blob or a File",
                ));
            }
            let name = Reflect::get(&blob, &"name".into())
                .ok()
                .and_then(|n| n.as_string());
            let (reference, _) = inner
                .send_beside(Request::PutBlob { name }, Some((BLOB_BESIDE, &blob)))
                .await?;
            Ok(js::from_json(&reference))
        })
    }

    /// The bytes a reference of `putBlob` names, as a `Blob` of its type: from this device,
    /// else downloaded from the sync server (verified against its SHA-256, then kept here).
    /// Rejects `blob_not_found` when neither holds it (the device that made it may not have
    /// uploaded it yet), `invalid_blob` for something that is not a reference.
    #[wasm_bindgen(js_name = getBlob, unchecked_return_type = "Promise<Blob>")]
    pub fn get_blob(
        &self,
        #[wasm_bindgen(unchecked_param_type = "BlobRef")] reference: JsValue,
    ) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            // Read with js-sys, not serde: the worker checks the hash again.
            let field = |of: &JsValue, name: &str| Reflect::get(of, &name.into()).ok();
            let named = field(&reference, rangersync_shared::blob::REF_FIELD)
                .filter(|v| v.is_object())
                .unwrap_or(reference);
            let sha256 = field(&named, "sha256")
                .and_then(|v| v.as_string())
                .filter(|s| rangersync_shared::blob::check_sha256(s).is_ok())
                .ok_or_else(|| {
                    ClientError::new(
                        codes::INVALID_BLOB,
                        "getBlob takes a reference of putBlob: { $blob: { sha256, size, type } }",
                    )
                })?;
            let request = Request::GetBlob {
                sha256,
                content_type: field(&named, "type")
                    .and_then(|v| v.as_string())
                    .filter(|t| !t.is_empty()),
            };
            let (_, blob) = inner.send_beside(request, None).await?;
            if !blob.is_instance_of::<web_sys::Blob>() {
                return Err(ClientError::internal("getBlob's reply carried no Blob"));
            }
            Ok(blob)
        })
    }

    /// Save `(collection, key)` as it changes, with no save button: `handle.set(value)` on
    /// every change; changes coalesce (`debounceMs`, default 300, and at most `maxWaitMs`,
    /// default 2000, after the first unsaved one) and what is waiting is handed to the outbox
    /// at once when the page is hidden or unloads. Throws `invalid_config` for bad options or
    /// names.
    #[wasm_bindgen(js_name = autosave)]
    pub fn autosave(
        &self,
        collection: String,
        key: String,
        #[wasm_bindgen(unchecked_optional_param_type = "AutosaveOptions")] options: Option<JsValue>,
    ) -> Result<Autosave, JsValue> {
        let options = options.unwrap_or(JsValue::UNDEFINED);
        let options = parse_autosave_options(&js::options_json(&options)?)?;
        Ok(Autosave::new(
            Rc::clone(&self.inner),
            collection,
            key,
            options,
        )?)
    }

    /// Delete `(collection, key)` (a tombstone that syncs like any write). Resolves with `{ seq }`.
    #[wasm_bindgen(unchecked_return_type = "Promise<WriteAck>")]
    pub fn delete(&self, collection: String, key: String) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            let ack = inner.send(Request::Delete { collection, key }).await?;
            Ok(js::from_json(&ack))
        })
    }

    /// Store several values in one strict IndexedDB transaction: all or nothing, one
    /// acknowledgement. `items` is `[{ collection, key, value }]`; resolves with `{ seqs }` in
    /// the order given.
    #[wasm_bindgen(js_name = putMany, unchecked_return_type = "Promise<WriteManyAck>")]
    pub fn put_many(
        &self,
        #[wasm_bindgen(unchecked_param_type = "PutItem[]")] items: JsValue,
    ) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            let ops = write_ops(&items, Some("put"))?;
            let ack = inner.send(Request::WriteMany { ops }).await?;
            Ok(js::from_json(&ack))
        })
    }

    /// Puts and deletes in one strict IndexedDB transaction: all or nothing, one
    /// acknowledgement. `ops` is `[{ op: "put", collection, key, value } | { op: "delete",
    /// collection, key }]`; resolves with `{ seqs }` in the order given.
    #[wasm_bindgen(js_name = writeMany, unchecked_return_type = "Promise<WriteManyAck>")]
    pub fn write_many(
        &self,
        #[wasm_bindgen(unchecked_param_type = "WriteOp[]")] ops: JsValue,
    ) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            let ops = write_ops(&ops, None)?;
            let ack = inner.send(Request::WriteMany { ops }).await?;
            Ok(js::from_json(&ack))
        })
    }

    /// The local value of `(collection, key)`, or `undefined`.
    #[wasm_bindgen(unchecked_return_type = "Promise<unknown>")]
    pub fn get(&self, collection: String, key: String) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            // The worker answers `null` or the entity `{ key, value, updated_at, pending, … }`.
            Ok(match inner.send(Request::Get { collection, key }).await? {
                entity @ Value::Object(_) => match entity.get("value") {
                    Some(value) => js::from_json(value),
                    None => JsValue::UNDEFINED,
                },
                _ => JsValue::UNDEFINED,
            })
        })
    }

    /// Every live entity of `collection`: `[{ key, value, updated_at, pending }]`.
    #[wasm_bindgen(unchecked_return_type = "Promise<ListItem[]>")]
    pub fn list(&self, collection: String) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            let items = inner.send(Request::List { collection }).await?;
            Ok(js::from_json(&items))
        })
    }

    /// Call `listener(status)` on every status change (in every tab), and once at once with the
    /// last known status. Returns a function that unsubscribes.
    #[wasm_bindgen(js_name = onStatus, unchecked_return_type = "() => void")]
    pub fn on_status(
        &self,
        #[wasm_bindgen(unchecked_param_type = "(status: SyncStatus) => void")] listener: Function,
    ) -> Function {
        self.inner.add_listener(true, listener)
    }

    /// Call `listener(collection, key)` whenever an entity changes (a local write in any tab, a
    /// pulled server change, a conflict resolved by the server). Returns a function that
    /// unsubscribes.
    #[wasm_bindgen(js_name = onChange, unchecked_return_type = "() => void")]
    pub fn on_change(
        &self,
        #[wasm_bindgen(unchecked_param_type = "(collection: string, key: string) => void")]
        listener: Function,
    ) -> Function {
        self.inner.add_listener(false, listener)
    }

    /// The status object now.
    #[wasm_bindgen(unchecked_return_type = "Promise<SyncStatus>")]
    pub fn status(&self) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            let status = inner.with_fallback_reason(inner.send(Request::Status).await?);
            *inner.last_status.borrow_mut() = Some(status.clone());
            Ok(js::from_json(&status))
        })
    }

    /// Ask for a sync now. Resolves with the status after the attempt.
    #[wasm_bindgen(unchecked_return_type = "Promise<SyncStatus>")]
    pub fn flush(&self) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            // Before a burst of requests: a fresh token, when `token` is a function.
            inner.refresh_token(true).await?;
            inner.give_capture_credentials().await?;
            let result = inner.send(Request::Flush).await?;
            let status = if request::is_status(&result) {
                result
            } else {
                inner.send(Request::Status).await?
            };
            let status = inner.with_fallback_reason(status);
            *inner.last_status.borrow_mut() = Some(status.clone());
            Ok(js::from_json(&status))
        })
    }

    /// The dead-letter store: entries the server refused or that ran out of attempts.
    #[wasm_bindgen(js_name = deadLetters, unchecked_return_type = "Promise<DeadLetter[]>")]
    pub fn dead_letters(&self) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move { Ok(js::from_json(&inner.send(Request::DeadLetters).await?)) })
    }

    /// Put dead letter `seq` back in the outbox (it is sent again, in order).
    #[wasm_bindgen(js_name = retryDead, unchecked_return_type = "Promise<WriteAck>")]
    pub fn retry_dead(&self, seq: f64) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            let seq = seq_from_js(seq)?;
            Ok(js::from_json(
                &inner.send(Request::RetryDead { seq }).await?,
            ))
        })
    }

    /// Drop dead letter `seq` for good.
    #[wasm_bindgen(js_name = discardDead, unchecked_return_type = "Promise<void>")]
    pub fn discard_dead(&self, seq: f64) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            let seq = seq_from_js(seq)?;
            inner.send(Request::DiscardDead { seq }).await?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// A snapshot of the local copy and the outbox, as JSON or YAML text. `includeBlobs`: the
    /// bytes of the blobs the entities reference too (base64; a restore puts them back), else
    /// the references alone.
    #[wasm_bindgen(js_name = exportSnapshot, unchecked_return_type = "Promise<string>")]
    pub fn export_snapshot(
        &self,
        #[wasm_bindgen(unchecked_param_type = "\"json\" | \"yaml\"")] format: JsValue,
        #[wasm_bindgen(
            unchecked_optional_param_type = "{ includeLocalOnly?: boolean; includeBlobs?: boolean }"
        )]
        options: Option<JsValue>,
    ) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            let flag = |name: &str| -> Result<bool, ClientError> {
                let Some(o) = options
                    .as_ref()
                    .filter(|o| !o.is_undefined() && !o.is_null())
                else {
                    return Ok(false);
                };
                match js_sys::Reflect::get(o, &name.into()) {
                    Ok(v) if v.is_undefined() => Ok(false),
                    Ok(v) => v.as_bool().ok_or_else(|| {
                        ClientError::new(
                            codes::INVALID_MESSAGE,
                            format!("exportSnapshot's {name} must be true or false"),
                        )
                    }),
                    Err(_) => Ok(false),
                }
            };
            let include_local_only = flag("includeLocalOnly")?;
            let include_blobs = flag("includeBlobs")?;
            let format = match format.as_string().as_deref() {
                Some("json") => ExportFormat::Json,
                Some("yaml") => ExportFormat::Yaml,
                None if format.is_undefined() => ExportFormat::Json,
                _ => return Err(bad_format(&format)),
            };
            let text = match inner
                .send(Request::Export {
                    format,
                    include_local_only,
                    include_blobs,
                })
                .await?
            {
                Value::String(text) => text,
                mut map @ Value::Object(_) => match map.get_mut("text").map(Value::take) {
                    Some(Value::String(text)) => text,
                    _ => return Err(no_export_text()),
                },
                _ => return Err(no_export_text()),
            };
            if format == ExportFormat::Json || !request::is_json(&text) {
                return Ok(JsValue::from_str(&text));
            }
            // The worker exports JSON only (it has no YAML encoder): convert it here.
            let yaml = extras::load("exportSnapshot('yaml')")
                .await?
                .yaml(&text)
                .map_err(|e| {
                    ClientError::new(
                        codes::BAD_RESPONSE,
                        format!("the worker exported a bad snapshot: {}", e.message),
                    )
                })?;
            Ok(JsValue::from_str(&yaml))
        })
    }

    /// Back up now: a snapshot of everything is built and uploaded to the sync server
    /// (`POST /api/backups`, verified there); when a scheduled one is running, after it, so
    /// the snapshot holds every write made before this call. Resolves with `{ backup, exported_at, checksum }`
    /// once the server holds it; rejects with why not (`network`, `auth`, …; the status shows
    /// it as `backup_error` and it is retried with backoff).
    #[wasm_bindgen(js_name = backupNow, unchecked_return_type = "Promise<BackupResult>")]
    pub fn backup_now(&self) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            Ok(js::from_json(
                &inner.send(Request::Backup { manual: true }).await?,
            ))
        })
    }

    /// The sync server's backups, newest first (`{ id, client_id, exported_at, received_at,
    /// size, checksum, counts, … }`, without the documents): this client's, or with
    /// `{ allClients: true }` every client's the credentials may see (after "Clear site data"
    /// this device is a new client, and its earlier backups are another client id's).
    #[wasm_bindgen(js_name = serverBackups, unchecked_return_type = "Promise<ServerBackup[]>")]
    pub fn server_backups(
        &self,
        #[wasm_bindgen(unchecked_optional_param_type = "{ allClients?: boolean }")] options: Option<
            JsValue,
        >,
    ) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            let options = js::options_json(&options.unwrap_or(JsValue::UNDEFINED))?;
            let all_clients = match options.get("allClients") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(ClientError::config("allClients must be true or false")),
            };
            if let Some(unknown) = options
                .as_object()
                .and_then(|m| m.keys().find(|k| k.as_str() != "allClients"))
            {
                return Err(ClientError::config(format!(
                    "unknown serverBackups option {unknown:?} (known: allClients)"
                )));
            }
            Ok(js::from_json(
                &inner.send(Request::ServerBackups { all_clients }).await?,
            ))
        })
    }

    /// Restore a backup the sync server holds (an id from `serverBackups()`), like a file:
    /// verified first; `{ dryRun: true }` writes nothing and reports what would change.
    #[wasm_bindgen(js_name = restoreFromServer, unchecked_return_type = "Promise<RestoreReport>")]
    pub fn restore_from_server(
        &self,
        id: String,
        #[wasm_bindgen(unchecked_optional_param_type = "RestoreOptions")] options: Option<JsValue>,
    ) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            let options = options.unwrap_or(JsValue::UNDEFINED);
            let RestoreOptions {
                dry_run,
                passphrase,
                key: with_key,
            } = parse_restore_options(&js::options_json(&options)?)?;
            let key = js::crypto_key_option(&options, "key")?.unwrap_or(JsValue::UNDEFINED);
            Ok(js::from_json(
                &inner
                    .send_carrying(
                        Request::RestoreFromServer {
                            id,
                            dry_run,
                            passphrase,
                            key: with_key,
                        },
                        &key,
                    )
                    .await?,
            ))
        })
    }

    /// Restore a snapshot (JSON or YAML text). With `{ dryRun: true }` nothing is written and
    /// the report says what would be added, replaced, left unchanged or refused.
    #[wasm_bindgen(unchecked_return_type = "Promise<RestoreReport>")]
    pub fn restore(
        &self,
        text: String,
        #[wasm_bindgen(unchecked_optional_param_type = "RestoreOptions")] options: Option<JsValue>,
    ) -> Promise {
        let inner = Rc::clone(&self.inner);
        promise(async move {
            let options = options.unwrap_or(JsValue::UNDEFINED);
            let RestoreOptions {
                dry_run,
                passphrase,
                key: with_key,
            } = parse_restore_options(&js::options_json(&options)?)?;
            let key = js::crypto_key_option(&options, "key")?.unwrap_or(JsValue::UNDEFINED);
            let text = if request::is_json(&text) {
                text
            } else {
                // YAML: cheap checks here, then parsed and verified by the extras and sent as
                // JSON (the worker reads JSON only).
                request::check_snapshot_text(&text)?;
                extras::load("restoring YAML").await?.json(&text)?
            };
            Ok(js::from_json(
                &inner
                    .send_carrying(
                        Request::Restore {
                            text,
                            dry_run,
                            passphrase,
                            key: with_key,
                        },
                        &key,
                    )
                    .await?,
            ))
        })
    }
}

/// Read `putMany`'s items (`op` given) or `writeMany`'s operations from JS.
fn write_ops(
    value: &JsValue,
    op: Option<&str>,
) -> Result<Vec<rangersync_shared::messages::WriteOp>, ClientError> {
    let Value::Array(items) = js::to_json(value)? else {
        return Err(ClientError::new(
            codes::INVALID_VALUE,
            "expected an array of operations",
        ));
    };
    items
        .into_iter()
        .map(|item| request::write_op(item, op))
        .collect()
}

fn no_export_text() -> ClientError {
    ClientError::new(codes::BAD_RESPONSE, "the worker's export carried no text")
}

fn bad_format(format: &JsValue) -> ClientError {
    ClientError::new(
        codes::INVALID_VALUE,
        format!(
            "export format must be \"json\" or \"yaml\" (got {})",
            describe(format)
        ),
    )
}

fn seq_from_js(seq: f64) -> Result<u64, ClientError> {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    if seq.is_finite() && seq >= 1.0 && seq.fract() == 0.0 && seq <= 9_007_199_254_740_991.0 {
        Ok(seq as u64)
    } else {
        // JS prints the number: Rust's float formatting would be a large part of this module.
        let shown = js_sys::Number::from(seq)
            .to_string_with_radix(10)
            .map(String::from)
            .unwrap_or_default();
        Err(ClientError::new(
            codes::INVALID_VALUE,
            format!("seq must be a whole number ≥ 1 (got {shown})"),
        ))
    }
}

/// The message version this client speaks (for diagnostics).
#[wasm_bindgen(js_name = messageVersion)]
pub fn message_version() -> u32 {
    MESSAGE_VERSION
}

/// Call the `token` function: its answer (or what its promise resolves to) must be a string,
/// or `null`/`undefined` for none.
async fn call_token_source(source: &Function) -> Result<Option<String>, ClientError> {
    let failed =
        |e: &JsValue| ClientError::config(format!("the token function failed: {}", describe(e)));
    let mut answer = source.call0(&JsValue::UNDEFINED).map_err(|e| failed(&e))?;
    if let Some(p) = answer.dyn_ref::<Promise>() {
        answer = JsFuture::from(p.clone()).await.map_err(|e| failed(&e))?;
    }
    if answer.is_undefined() || answer.is_null() {
        return Ok(None);
    }
    answer.as_string().map(Some).ok_or_else(|| {
        ClientError::config("the token function must return a string (or a promise of one)")
    })
}
