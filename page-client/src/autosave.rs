//! `client.autosave(collection, key)`: one value saved as it changes, with no save button.
//! Changes coalesce ([`Coalescer`]); one write is in flight at a time, in order; what is not
//! yet written is handed to the outbox at once when the page is hidden or unloads
//! (`visibilitychange` → hidden, `pagehide`), so closing or reloading the tab loses nothing
//! typed. A write that fails keeps the value and says why in the handle's status; the next
//! change or `flush()` tries again.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

use js_sys::{Function, Promise};
use rangersync_shared::messages::{codes, Request};
use rangersync_shared::validate::{validate_collection, validate_key, validate_value};
use serde_json::{json, Value};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::spawn_local;
use web_sys::VisibilityState;

use crate::client::Inner;
use crate::coalesce::Coalescer;
use crate::error::ClientError;
use crate::js::{self, call_listener, Listener};
use crate::options::AutosaveOptions;

/// Where an auto-saved value stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Everything set so far is committed to IndexedDB (the outbox delivers it).
    Saved,
    /// A change is waiting for its write or being written.
    Saving,
    /// The last write failed; the value is kept and tried again on the next change or flush.
    Error,
}

struct Shared {
    client: Rc<Inner>,
    collection: String,
    key: String,
    coalescer: RefCell<Coalescer>,
    /// The latest value not yet handed to the outbox.
    pending: RefCell<Option<Value>>,
    writing: Cell<bool>,
    timer: RefCell<JsValue>,
    /// The one timer callback (re-armed, never re-created per keystroke).
    on_timer: RefCell<Option<Closure<dyn FnMut()>>>,
    state: Cell<State>,
    saved_at: Cell<Option<f64>>,
    error: RefCell<Option<ClientError>>,
    listeners: RefCell<Vec<(u32, Function)>>,
    next_listener: Cell<u32>,
    /// `flush()` calls waiting for the writes to end: (resolve, reject).
    waiters: RefCell<Vec<(Function, Function)>>,
    dom: RefCell<Vec<Listener>>,
    disposed: Cell<bool>,
}

/// A value saved as it changes: `set(value)` as often as it changes, `flush()` to wait for the
/// write, `dispose()` when done. Made by `client.autosave(collection, key, options)`.
#[wasm_bindgen]
pub struct Autosave {
    shared: Rc<Shared>,
}

impl Autosave {
    /// A handle for `(collection, key)` on `client`, listening for the page being hidden.
    pub(crate) fn new(
        client: Rc<Inner>,
        collection: String,
        key: String,
        options: AutosaveOptions,
    ) -> Result<Self, ClientError> {
        // The names are checked now, not at the first write.
        validate_collection(&collection)?;
        validate_key(&key)?;
        let shared = Rc::new(Shared {
            client,
            collection,
            key,
            coalescer: RefCell::new(Coalescer::new(options.debounce_ms, options.max_wait_ms)),
            pending: RefCell::new(None),
            writing: Cell::new(false),
            timer: RefCell::new(JsValue::UNDEFINED),
            on_timer: RefCell::new(None),
            state: Cell::new(State::Saved),
            saved_at: Cell::new(None),
            error: RefCell::new(None),
            listeners: RefCell::new(Vec::new()),
            next_listener: Cell::new(0),
            waiters: RefCell::new(Vec::new()),
            dom: RefCell::new(Vec::new()),
            disposed: Cell::new(false),
        });
        let weak = Rc::downgrade(&shared);
        *shared.on_timer.borrow_mut() = Some(Closure::<dyn FnMut()>::new(move || {
            if let Some(shared) = weak.upgrade() {
                *shared.timer.borrow_mut() = JsValue::UNDEFINED;
                spawn_local(write_pending(shared));
            }
        }));
        if let Some(window) = web_sys::window() {
            let mut dom = Vec::new();
            let weak = Rc::downgrade(&shared);
            dom.push(Listener::new(window.as_ref(), "pagehide", move |_| {
                hand_over(&weak)
            }));
            if let Some(document) = window.document() {
                let weak = Rc::downgrade(&shared);
                let doc = document.clone();
                dom.push(Listener::new(
                    document.as_ref(),
                    "visibilitychange",
                    move |_| {
                        if doc.visibility_state() == VisibilityState::Hidden {
                            hand_over(&weak)
                        }
                    },
                ));
            }
            *shared.dom.borrow_mut() = dom;
        }
        Ok(Self { shared })
    }
}

#[wasm_bindgen]
impl Autosave {
    /// The new value (any JSON value). Written after `debounceMs` without another change, and
    /// at most `maxWaitMs` after the first unsaved one. Throws a `SyncError` (`invalid_value`,
    /// `value_too_large`) for a value that cannot be stored, which changes nothing.
    pub fn set(
        &self,
        #[wasm_bindgen(unchecked_param_type = "unknown")] value: JsValue,
    ) -> Result<(), JsValue> {
        let shared = &self.shared;
        if shared.disposed.get() {
            return Err(ClientError::new(
                codes::INVALID_CONFIG,
                "this autosave handle was disposed",
            )
            .into());
        }
        let value = js::to_json(&value)?;
        validate_value(&value).map_err(ClientError::from)?;
        *shared.pending.borrow_mut() = Some(value);
        let now = js_sys::Date::now();
        let due = shared.coalescer.borrow_mut().handle_change(now);
        shared.arm(Coalescer::poll_delay(due, now));
        if shared.state.get() != State::Saving {
            shared.state.set(State::Saving);
            shared.notify();
        }
        Ok(())
    }

    /// Write what is waiting now; resolves with the status once everything set so far is
    /// committed, or rejects with the write's error (the value is kept).
    #[wasm_bindgen(unchecked_return_type = "Promise<AutosaveStatus>")]
    pub fn flush(&self) -> Promise {
        flush(Rc::clone(&self.shared))
    }

    /// Write what is waiting, then stop: no more timers or page listeners. Resolves like
    /// `flush()`; a later `set` throws.
    #[wasm_bindgen(unchecked_return_type = "Promise<AutosaveStatus>")]
    pub fn dispose(&self) -> Promise {
        let shared = Rc::clone(&self.shared);
        shared.disposed.set(true);
        shared.dom.borrow_mut().clear();
        flush(shared)
    }

    /// Forget what is waiting (it is not written) and stop, like `dispose()` without the
    /// write: for an entity being deleted, whose draft must not bring it back. A write already
    /// in flight is not recalled.
    pub fn cancel(&self) {
        let shared = &self.shared;
        shared.disposed.set(true);
        shared.dom.borrow_mut().clear();
        shared.disarm();
        shared.pending.borrow_mut().take();
        shared.coalescer.borrow_mut().handle_taken();
        if !shared.writing.get() && shared.state.get() == State::Saving {
            shared.state.set(State::Saved);
            shared.notify();
        }
    }

    /// `{ collection, key, state: 'saved' | 'saving' | 'error', savedAt, error }` now.
    #[wasm_bindgen(getter, unchecked_return_type = "AutosaveStatus")]
    pub fn status(&self) -> JsValue {
        js::from_json(&self.shared.status())
    }

    /// Call `listener(status)` whenever the state changes (and after each write). Returns a
    /// function that unsubscribes.
    #[wasm_bindgen(js_name = onStatus, unchecked_return_type = "() => void")]
    pub fn on_status(
        &self,
        #[wasm_bindgen(unchecked_param_type = "(status: AutosaveStatus) => void")]
        listener: Function,
    ) -> Function {
        let id = self.shared.next_listener.get();
        self.shared.next_listener.set(id + 1);
        self.shared.listeners.borrow_mut().push((id, listener));
        let weak = Rc::downgrade(&self.shared);
        Closure::<dyn FnMut()>::new(move || {
            if let Some(shared) = weak.upgrade() {
                shared.listeners.borrow_mut().retain(|(i, _)| *i != id);
            }
        })
        .into_js_value()
        .unchecked_into()
    }
}

impl Shared {
    /// The write of `value` to this handle's key.
    fn put(&self, value: Value) -> Request {
        Request::Put {
            collection: self.collection.clone(),
            key: self.key.clone(),
            value,
        }
    }

    /// The write of `value` failed with `e`: the value is kept (unless a newer one replaced it
    /// meanwhile) and the status says why.
    fn failed(&self, value: Value, e: ClientError) {
        self.pending.borrow_mut().get_or_insert(value);
        *self.error.borrow_mut() = Some(e);
        self.state.set(State::Error);
        self.notify();
    }

    fn arm(&self, delay_ms: u32) {
        self.disarm();
        if let Some(callback) = self.on_timer.borrow().as_ref() {
            *self.timer.borrow_mut() = js::set_timeout(callback.as_ref().unchecked_ref(), delay_ms);
        }
    }

    fn disarm(&self) {
        let timer = std::mem::replace(&mut *self.timer.borrow_mut(), JsValue::UNDEFINED);
        if !timer.is_undefined() {
            js::clear_timeout(&timer);
        }
    }

    fn status(&self) -> Value {
        let state = match self.state.get() {
            State::Saved => "saved",
            State::Saving => "saving",
            State::Error => "error",
        };
        let error = self
            .error
            .borrow()
            .as_ref()
            .map(|e| json!({ "code": e.code, "message": e.message }));
        json!({
            "collection": self.collection,
            "key": self.key,
            "state": state,
            "savedAt": self.saved_at.get(),
            "error": error,
        })
    }

    fn notify(&self) {
        let status = js::from_json(&self.status());
        let listeners: Vec<Function> = self
            .listeners
            .borrow()
            .iter()
            .map(|(_, f)| f.clone())
            .collect();
        for f in listeners {
            call_listener(&f, std::slice::from_ref(&status));
        }
    }

    /// The writes ended: every waiting `flush()` hears how.
    fn settle(&self) {
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        let error = self.error.borrow().clone();
        for (resolve, reject) in waiters {
            let _ = match &error {
                Some(e) => reject.call1(&JsValue::UNDEFINED, &JsValue::from(e.clone())),
                None => resolve.call1(&JsValue::UNDEFINED, &js::from_json(&self.status())),
            };
        }
    }
}

/// Write the pending value, then any that came meanwhile, one at a time and in order.
async fn write_pending(shared: Rc<Shared>) {
    if shared.writing.replace(true) {
        // The write in flight takes the new value when it ends.
        return;
    }
    loop {
        let Some(value) = shared.pending.borrow_mut().take() else {
            break;
        };
        shared.coalescer.borrow_mut().handle_taken();
        match shared.client.send(shared.put(value.clone())).await {
            Ok(_) => {
                *shared.error.borrow_mut() = None;
                shared.saved_at.set(Some(js_sys::Date::now()));
                if shared.pending.borrow().is_none() {
                    shared.state.set(State::Saved);
                }
                shared.notify();
            }
            Err(e) => {
                shared.failed(value, e);
                break;
            }
        }
    }
    shared.writing.set(false);
    shared.settle();
}

fn flush(shared: Rc<Shared>) -> Promise {
    shared.disarm();
    if shared.pending.borrow().is_none() && !shared.writing.get() {
        return Promise::resolve(&js::from_json(&shared.status()));
    }
    let waiting = Promise::new(&mut |resolve, reject| {
        shared.waiters.borrow_mut().push((resolve, reject));
    });
    spawn_local(write_pending(shared));
    waiting
}

/// The page is hidden or unloading: what is waiting goes to the outbox now (its message is
/// posted before the page can go), not when its timer would have fired.
fn hand_over(weak: &Weak<Shared>) {
    let Some(shared) = weak.upgrade() else { return };
    shared.disarm();
    if shared.pending.borrow().is_none() {
        return;
    }
    if !shared.writing.get() {
        spawn_local(write_pending(shared));
        return;
    }
    // A write is in flight and its answer may never come: post the newer value now. It is
    // committed after the one in flight: the worker starts requests in the order they arrive,
    // and IndexedDB runs read-write transactions on one store in the order they began.
    let Some(value) = shared.pending.borrow_mut().take() else {
        return;
    };
    spawn_local(async move {
        if let Err(e) = shared.client.send(shared.put(value.clone())).await {
            shared.failed(value, e);
        }
    });
}
