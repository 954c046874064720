//! The link to the service worker: registration at root scope, waiting until it controls the
//! page, and request/reply over a `MessageChannel` per request with a timeout.
//!
//! A request in flight when the controller changes (a worker update) fails with
//! [`LinkError::ControllerChanged`]; the client sends a read once more to the new controller,
//! and fails a write with `worker_unavailable` (it may have been committed already).

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Array, Function, Promise, Reflect};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    AddEventListenerOptions, MessageChannel, MessageEvent, RegistrationOptions,
    ServiceWorkerContainer, ServiceWorkerRegistration, Window,
};

use crate::js::{self, describe};

/// How long to wait for control when a worker is already active but not controlling this page.
const HARD_RELOAD_WAIT_MS: u32 = 300;
const TIMEOUT_MARK: &str = "rangersync:timeout";
const CHANGED_MARK: &str = "rangersync:controller-changed";

/// Why a request to the worker got no reply.
#[derive(Debug)]
pub enum LinkError {
    /// No worker controls the page (a hard reload, or the worker was unregistered).
    NoController,
    /// No reply within the timeout.
    Timeout,
    /// The controller changed while the request was in flight.
    ControllerChanged,
    /// `postMessage` itself failed (e.g. a value that cannot be cloned).
    Post(String),
}

/// A registered worker that controls this page.
pub struct WorkerLink {
    container: ServiceWorkerContainer,
    /// `reject` of every request in flight, by id. A few entries at most: a `Vec` (a map would
    /// add its hashing or rebalancing code to the module).
    in_flight: RefCell<Vec<(u64, Function)>>,
}

impl WorkerLink {
    /// Register `sw_url` at scope `/` and wait (at most `timeout_ms`) until a worker controls
    /// this page. `Err` says why no worker can be used; the caller falls back to page mode.
    pub async fn connect(
        window: &Window,
        sw_url: &str,
        timeout_ms: u32,
    ) -> Result<Rc<Self>, String> {
        if !window.is_secure_context() {
            return Err("this page is not a secure context (https or localhost)".into());
        }
        let navigator = window.navigator();
        let has_container = Reflect::get(&navigator, &JsValue::from_str("serviceWorker"))
            .map(|c| !c.is_undefined() && !c.is_null())
            .unwrap_or(false);
        if !has_container {
            return Err("this browser has no service workers (navigator.serviceWorker)".into());
        }
        let container = navigator.service_worker();
        let options = RegistrationOptions::new();
        options.set_scope("/");
        let registration: ServiceWorkerRegistration =
            JsFuture::from(container.register_with_options(sw_url, &options))
                .await
                .map_err(|e| format!("registering {sw_url} failed: {}", describe(&e)))?
                .unchecked_into();
        if container.controller().is_none() {
            // First visit: the worker claims the page when it activates. With an active worker
            // and nothing being installed, this page was loaded bypassing it (a hard reload):
            // it will not be claimed, so do not wait long.
            let settling = registration.installing().is_some() || registration.waiting().is_some();
            let timeout_ms = if settling {
                timeout_ms
            } else {
                timeout_ms.min(HARD_RELOAD_WAIT_MS)
            };
            let changed = Promise::new(&mut |resolve, _reject| {
                let once = AddEventListenerOptions::new();
                once.set_once(true);
                let _ = container.add_event_listener_with_callback_and_add_event_listener_options(
                    "controllerchange",
                    &resolve,
                    &once,
                );
            });
            let timeout = js::delay(timeout_ms, JsValue::FALSE);
            let race = Promise::race(&Array::of2(&changed, &timeout));
            let _ = JsFuture::from(race).await;
            if container.controller().is_none() {
                return Err(format!(
                    "the worker did not take control of the page within {timeout_ms} ms"
                ));
            }
        }
        // Deliver queued broadcasts now (web-sys has no binding for `startMessages`).
        if let Ok(start) = Reflect::get(&container, &JsValue::from_str("startMessages")) {
            if let Some(start) = start.dyn_ref::<Function>() {
                let _ = start.call0(&container);
            }
        }
        Ok(Rc::new(Self {
            container,
            in_flight: RefCell::new(Vec::new()),
        }))
    }

    /// The `navigator.serviceWorker` this link talks through (broadcasts arrive on it).
    pub fn container(&self) -> &ServiceWorkerContainer {
        &self.container
    }

    /// Post `message` (a request envelope) to the controller with a fresh port and await the one
    /// reply, at most `timeout_ms`. Returns the reply's data.
    pub async fn request(
        &self,
        id: u64,
        message: &JsValue,
        timeout_ms: u32,
    ) -> Result<JsValue, LinkError> {
        let controller = self.container.controller().ok_or(LinkError::NoController)?;
        let channel = MessageChannel::new().map_err(|e| LinkError::Post(describe(&e)))?;
        let port = channel.port1();
        let mut timer = JsValue::UNDEFINED;
        let reply = Promise::new(&mut |resolve, reject| {
            let on_message = Closure::once_into_js(move |event: MessageEvent| {
                let _ = resolve.call1(&JsValue::UNDEFINED, &event.data());
            });
            port.set_onmessage(Some(on_message.unchecked_ref()));
            let timed_out = reject.clone();
            let on_timeout = Closure::once_into_js(move || {
                let _ = timed_out.call1(&JsValue::UNDEFINED, &JsValue::from_str(TIMEOUT_MARK));
            });
            timer = js::set_timeout(on_timeout.unchecked_ref(), timeout_ms);
            self.in_flight.borrow_mut().push((id, reject));
        });
        let posted =
            controller.post_message_with_transferable(message, &Array::of1(&channel.port2()));
        if let Err(e) = posted {
            js::clear_timeout(&timer);
            self.forget(id);
            port.close();
            return Err(LinkError::Post(describe(&e)));
        }
        let outcome = JsFuture::from(reply).await;
        // A timer per request left running would pile up over a burst of writes.
        js::clear_timeout(&timer);
        self.forget(id);
        port.set_onmessage(None);
        port.close();
        outcome.map_err(|e| match e.as_string().as_deref() {
            Some(CHANGED_MARK) => LinkError::ControllerChanged,
            Some(TIMEOUT_MARK) => LinkError::Timeout,
            _ => LinkError::Post(describe(&e)),
        })
    }

    fn forget(&self, id: u64) {
        self.in_flight.borrow_mut().retain(|(i, _)| *i != id);
    }

    /// Post `message` with a port nobody reads: for page events sent while the page unloads.
    pub fn post_and_forget(&self, message: &JsValue) -> Result<(), LinkError> {
        let controller = self.container.controller().ok_or(LinkError::NoController)?;
        let channel = MessageChannel::new().map_err(|e| LinkError::Post(describe(&e)))?;
        controller
            .post_message_with_transferable(message, &Array::of1(&channel.port2()))
            .map_err(|e| LinkError::Post(describe(&e)))
    }

    /// A new worker controls the page: every request in flight fails with
    /// [`LinkError::ControllerChanged`] (the client resends reads, not writes).
    pub fn controller_changed(&self) {
        let waiting = std::mem::take(&mut *self.in_flight.borrow_mut());
        for (_, reject) in waiting {
            let _ = reject.call1(&JsValue::UNDEFINED, &JsValue::from_str(CHANGED_MARK));
        }
    }
}
