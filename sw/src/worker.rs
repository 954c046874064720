//! The service-worker entry points the worker library `www/rangersync-worker.js` calls (feature
//! `worker`, on by default).
//!
//! `rangersync.listen(options)` (from `www/sw.js`, or from an app's own worker) adds every
//! listener synchronously during the script's first run and calls these inside
//! `event.waitUntil(ready().then(…))` / `event.respondWith(…)`, where `ready()` loads the wasm
//! through the `rangersync_wasm` glue and then calls [`start`].

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Array, Uint8Array};
use rangersync_shared::backup::BackupTrigger;
use rangersync_shared::messages::{self, codes, Broadcast, ReplyEnvelope};
use rangersync_shared::outbox::{CapturedRequest, Trigger};
use rangersync_shared::status::Mode;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::{spawn_local, JsFuture};
use web_sys::{
    ClientQueryOptions, ClientType, ExtendableMessageEvent, MessagePort, ServiceWorkerGlobalScope,
    WindowClient,
};

use crate::bindings::{PERIODIC_TAG, SYNC_TAG};
use crate::engine::{headers_to_vec, own_origin, same_origin, Engine};
use crate::error::SwError;
use crate::js;

thread_local! {
    static ENGINE: RefCell<Option<Rc<Engine>>> = const { RefCell::new(None) };
    /// Broadcasts waiting for the `clients.matchAll` already asked for.
    static OUTGOING: RefCell<Vec<JsValue>> = const { RefCell::new(Vec::new()) };
}

fn scope() -> Option<ServiceWorkerGlobalScope> {
    js::global().dyn_into::<ServiceWorkerGlobalScope>().ok()
}

/// The engine, reopened first when its database connection ended under it (the database was
/// deleted or cleared while the worker ran: DevTools' "Clear storage", an eviction, "Clear
/// site data"), so the next request works instead of failing with "The database connection
/// is closing".
async fn engine() -> Result<Rc<Engine>, SwError> {
    let current = ENGINE
        .with(|e| e.borrow().clone())
        .ok_or_else(|| SwError::coded(codes::WORKER_UNAVAILABLE, "the worker has not started"))?;
    if !current.is_closed() {
        return Ok(current);
    }
    let fresh = current.reopen().await.map_err(|d| {
        SwError::coded(
            codes::STORAGE_ERROR,
            format!(
                "the database closed and could not be reopened: {}",
                d.message
            ),
        )
    })?;
    // Two events may have reopened it at once: keep the first, close the other.
    let kept = ENGINE.with(|e| {
        let mut slot = e.borrow_mut();
        match slot.as_ref() {
            Some(now) if !Rc::ptr_eq(now, &current) && !now.is_closed() => now.clone(),
            _ => {
                *slot = Some(fresh.clone());
                fresh.clone()
            }
        }
    });
    if !Rc::ptr_eq(&kept, &fresh) {
        fresh.close();
    } else {
        let flush = kept.clone();
        spawn_local(async move {
            flush.trigger(Trigger::WorkerStart).await;
        });
    }
    Ok(kept)
}

/// Post a message to every window client of the origin (controlled or not). Messages posted
/// in the same turn share one `clients.matchAll`.
pub fn broadcast(message: &Broadcast) {
    let Some(scope) = scope() else { return };
    let Ok(value) = js::to_js(message) else {
        return;
    };
    let first = OUTGOING.with(|q| {
        let mut q = q.borrow_mut();
        q.push(value);
        q.len() == 1
    });
    if !first {
        return;
    }
    let options = ClientQueryOptions::new();
    options.set_type(ClientType::Window);
    options.set_include_uncontrolled(true);
    let all = scope.clients().match_all_with_options(&options);
    spawn_local(async move {
        let clients = JsFuture::from(all).await;
        let messages = OUTGOING.with(|q| std::mem::take(&mut *q.borrow_mut()));
        if let Ok(list) = clients {
            for client in Array::from(&list).iter() {
                let client: web_sys::Client = client.unchecked_into();
                for message in &messages {
                    let _ = client.post_message(message);
                }
            }
        }
    });
}

/// Open the engine (idempotent) and flush once (the fallback trigger "on worker start").
#[wasm_bindgen]
pub async fn start() -> Result<(), JsValue> {
    console_error_panic_hook::set_once();
    if ENGINE.with(|e| e.borrow().is_some()) {
        return Ok(());
    }
    let notify: Rc<dyn Fn(&Broadcast)> = Rc::new(broadcast);
    let engine = Engine::open(Mode::Worker, notify).await.map_err(|d| {
        JsValue::from(SwError::coded(
            codes::WORKER_UNAVAILABLE,
            format!("{}: {}", d.code, d.message),
        ))
    })?;
    let already = ENGINE.with(|e| {
        let mut slot = e.borrow_mut();
        if slot.is_some() {
            true
        } else {
            *slot = Some(engine.clone());
            false
        }
    });
    if already {
        engine.close();
        return Ok(());
    }
    spawn_local(async move {
        // Keep the periodic registration in step with the stored config (when permitted).
        let config = engine.config();
        if let Some(ms) =
            crate::engine::periodic_interval(config.periodic_interval_ms, config.export_interval_ms)
        {
            crate::bindings::set_periodic(Some(ms)).await;
        }
        engine.trigger(Trigger::WorkerStart).await;
        // Back up when one is due: a worker that starts now and then brings the scheduled
        // backups where there is no periodic sync (Firefox, Safari, an app not installed).
        let _ = engine.backup(BackupTrigger::WorkerStart).await;
    });
    Ok(())
}

/// `install`: take over at once (the worker library also calls `skipWaiting` itself).
#[wasm_bindgen]
pub async fn on_install() -> Result<(), JsValue> {
    if let Some(scope) = scope() {
        JsFuture::from(scope.skip_waiting()?).await?;
    }
    Ok(())
}

/// `activate`: claim the open pages so a first visit is controlled at once.
#[wasm_bindgen]
pub async fn on_activate() -> Result<(), JsValue> {
    if let Some(scope) = scope() {
        JsFuture::from(scope.clients().claim()).await?;
    }
    Ok(())
}

fn post(port: &MessagePort, reply: &ReplyEnvelope, as_text: bool, beside: Option<JsValue>) {
    let value = if as_text {
        serde_json::to_string(reply).map(JsValue::from).ok()
    } else {
        js::to_js(reply).ok()
    };
    let value = match (value, beside) {
        // `{ text, blob }`: a reply that carries a Blob (`get_blob`).
        (Some(text), Some(blob)) => {
            let carrying = js_sys::Object::new();
            let _ = js_sys::Reflect::set(&carrying, &messages::TEXT_BESIDE.into(), &text);
            let _ = js_sys::Reflect::set(&carrying, &messages::BLOB_BESIDE.into(), &blob);
            Some(carrying.into())
        }
        (value, _) => value,
    };
    if let Some(v) = value {
        let _ = port.post_message(&v);
    }
}

/// `message`: only from a window client of this origin; one reply on `event.ports[0]`,
/// as a JSON string when the request was a string, else as an object.
#[wasm_bindgen]
pub async fn on_message(event: ExtendableMessageEvent) -> Result<(), JsValue> {
    let port = event.ports().get(0).dyn_into::<MessagePort>().ok();
    let data = event.data();
    // `{ text, key }` / `{ text, blob }`: a request's text with the CryptoKey or the Blob it
    // carries beside it.
    let beside_text = (!data.is_string())
        .then(|| js_sys::Reflect::get(&data, &messages::TEXT_BESIDE.into()).ok())
        .flatten()
        .and_then(|t| t.as_string());
    let key = beside_text.as_ref().and_then(|_| {
        [messages::KEY_BESIDE, messages::BLOB_BESIDE]
            .into_iter()
            .filter_map(|field| js_sys::Reflect::get(&data, &field.into()).ok())
            .find(|v| !v.is_undefined())
    });
    let as_text = data.is_string() || beside_text.is_some();
    let text = beside_text
        .or_else(|| data.as_string())
        .or_else(|| {
            js_sys::JSON::stringify(&data)
                .ok()
                .and_then(|s| s.as_string())
        })
        .unwrap_or_default();
    let allowed = event
        .source()
        .as_ref()
        .and_then(|s| s.dyn_ref::<WindowClient>())
        .is_some_and(|c| same_origin(&c.url(), &own_origin()));
    if !allowed {
        if let Some(port) = &port {
            post(
                port,
                &ReplyEnvelope::err(
                    request_id(&text),
                    codes::FORBIDDEN_ORIGIN,
                    "messages are accepted only from window clients of this origin",
                ),
                as_text,
                None,
            );
        }
        return Ok(());
    }
    let current = match engine().await {
        Ok(current) => current,
        Err(error) => {
            // Answer it: the page hears why at once instead of waiting out its timeout.
            if let Some(port) = &port {
                post(
                    port,
                    &ReplyEnvelope::err(request_id(&text), error.code(), error.to_string()),
                    as_text,
                    None,
                );
            }
            return Err(error.into());
        }
    };
    let (reply, beside) = current.handle_text_carrying(&text, key).await;
    if let Some(port) = &port {
        post(port, &reply, as_text, beside);
    }
    current.note_page_message();
    if current.is_closed() {
        // A restore retired it: the fresh engine flushes what was put back.
        engine().await?;
    }
    Ok(())
}

/// The `id` of a request's text, or 0 when it has none (a reply must echo it when it can).
fn request_id(text: &str) -> u64 {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v.get("id")?.as_u64())
        .unwrap_or(0)
}

/// `sync`: flush; reject when the attempt failed so the browser retries (unless `last_chance`,
/// then record that the browser gave up and keep the data).
#[wasm_bindgen]
pub async fn on_sync(tag: String, last_chance: bool) -> Result<(), JsValue> {
    if tag != SYNC_TAG {
        return Ok(());
    }
    let engine = engine().await?;
    engine.handle_sync(last_chance).await.map_err(|d| {
        let err = js_sys::Error::new(&d.message);
        let _ = js_sys::Reflect::set(&err, &"code".into(), &d.code.into());
        err.into()
    })
}

/// `periodicsync`: flush (and pull).
#[wasm_bindgen]
pub async fn on_periodic_sync(tag: String) -> Result<(), JsValue> {
    if tag != PERIODIC_TAG {
        return Ok(());
    }
    let engine = engine().await?;
    engine.trigger(Trigger::PeriodicSync).await;
    if let Some(Err(d)) = engine.backup(BackupTrigger::PeriodicSync).await {
        // Kept in the status and retried; the browser needs no retry of its own.
        crate::js::log(&format!(
            "scheduled backup failed: {}: {}",
            d.code, d.message
        ));
    }
    Ok(())
}

/// `online` / `offline`.
#[wasm_bindgen]
pub async fn on_online(online: bool) -> Result<(), JsValue> {
    let engine = engine().await?;
    engine
        .trigger(if online {
            Trigger::Online
        } else {
            Trigger::Offline
        })
        .await;
    Ok(())
}

/// Bytes of this worker's wasm memory (diagnostics). Wasm memory only grows, so this is also
/// its peak since the worker started: `cargo test -p rangersync-e2e --test backups_100k`
/// reads it around a 100,000-entity export.
#[wasm_bindgen]
pub fn memory_bytes() -> f64 {
    wasm_bindgen::memory()
        .dyn_into::<js_sys::WebAssembly::Memory>()
        .map_or(0.0, |m| {
            m.buffer()
                .dyn_ref::<js_sys::ArrayBuffer>()
                .map_or(0.0, |b| f64::from(b.byte_length()))
        })
}

/// Synchronous check for the fetch handler: capture this request?
#[wasm_bindgen]
pub fn wants(url: &str, method: &str) -> bool {
    ENGINE.with(|e| e.borrow().as_ref().is_some_and(|e| e.wants(url, method)))
}

fn json_response(status: u16, body: &serde_json::Value) -> Result<web_sys::Response, JsValue> {
    let init = web_sys::ResponseInit::new();
    init.set_status(status);
    let headers = web_sys::Headers::new()?;
    headers.set("content-type", "application/json")?;
    init.set_headers(&headers);
    web_sys::Response::new_with_opt_str_and_init(Some(&body.to_string()), &init)
}

/// `fetch` for a captured route: pass through when the server answers; when there is no
/// answer, or while an earlier request of the same route still waits in the outbox, queue
/// method, URL, headers and body and answer `202 {"queued":true,"seq":N}`.
#[wasm_bindgen]
pub async fn on_fetch(request: web_sys::Request) -> Result<web_sys::Response, JsValue> {
    let engine = engine().await?;
    let copy = request.clone()?;
    // While a captured request of this route waits, a newer call must not overtake it.
    let sent = if engine.must_queue_behind(&request.url()) {
        Err("queued behind an earlier captured request of this route".to_owned())
    } else {
        js::fetch(&request).await
    };
    match sent {
        Ok(resp) => Ok(resp),
        Err(_network) => {
            let buf = JsFuture::from(copy.array_buffer()?).await?;
            let body = Uint8Array::new(&buf);
            let limit = engine.capture_max_body_bytes();
            if u64::from(body.length()) > limit {
                // Never queued: the page learns at once, rather than a replay that cannot fit.
                return json_response(
                    413,
                    &serde_json::json!({ "error": {
                        "code": codes::CAPTURE_TOO_LARGE,
                        "message": format!(
                            "the request body is {} bytes, over captureMaxBodyBytes ({limit}): not queued",
                            body.length()
                        ),
                    } }),
                );
            }
            let captured = CapturedRequest {
                method: copy.method(),
                url: copy.url(),
                headers: headers_to_vec(&copy.headers()),
                body: body.to_vec(),
                redacted: Vec::new(),
            };
            match engine.capture(captured).await {
                Ok(seq) => json_response(202, &serde_json::json!({ "queued": true, "seq": seq })),
                Err(d) => json_response(
                    503,
                    &serde_json::json!({ "error": { "code": d.code, "message": d.message } }),
                ),
            }
        }
    }
}
