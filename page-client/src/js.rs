//! Small bridges between Rust and JavaScript: JSON values both ways, errors as JS `Error`s
//! with a `code`, timers, and event listeners that remove themselves on drop.

use js_sys::{Function, Promise, Reflect, JSON};
use rangersync_shared::messages::codes;
use serde_json::Value;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{Event, EventTarget};

use crate::error::ClientError;

impl From<ClientError> for JsValue {
    /// An `Error` named `SyncError` with the stable `code` as a property.
    fn from(e: ClientError) -> Self {
        let error = js_sys::Error::new(&e.message);
        error.set_name("SyncError");
        let _ = Reflect::set(
            &error,
            &JsValue::from_str("code"),
            &JsValue::from_str(&e.code),
        );
        error.into()
    }
}

/// A JS value as JSON. `undefined`, functions, symbols, cycles and BigInts are refused with
/// `invalid_value`.
pub fn to_json(value: &JsValue) -> Result<Value, ClientError> {
    let refused = |why: String| ClientError::new(codes::INVALID_VALUE, why);
    let text = JSON::stringify(value)
        .map_err(|e| refused(format!("value cannot be stored as JSON: {}", describe(&e))))?;
    let text = text.as_string().ok_or_else(|| {
        refused("value cannot be stored as JSON (undefined or a function)".into())
    })?;
    serde_json::from_str(&text).map_err(|e| refused(format!("value is not JSON: {e}")))
}

/// Options objects: `undefined`/`null` mean none; anything unserialisable is `invalid_config`.
pub fn options_json(value: &JsValue) -> Result<Value, ClientError> {
    if value.is_undefined() || value.is_null() {
        return Ok(Value::Null);
    }
    to_json(value).map_err(|e| ClientError::config(e.message))
}

/// `options.key` when it is a `CryptoKey` (`None` when absent); anything else there is
/// `invalid_config` naming it `label`. Keys are read from the options object itself: JSON
/// cannot hold one.
pub fn crypto_key_option(options: &JsValue, label: &str) -> Result<Option<JsValue>, ClientError> {
    if options.is_undefined() || options.is_null() {
        return Ok(None);
    }
    let value = Reflect::get(options, &JsValue::from_str("key")).unwrap_or(JsValue::UNDEFINED);
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    if value.has_type::<web_sys::CryptoKey>() {
        Ok(Some(value))
    } else {
        Err(not_a_crypto_key(label))
    }
}

/// The `invalid_config` of an option `label` that must be a `CryptoKey` and is not.
pub fn not_a_crypto_key(label: &str) -> ClientError {
    ClientError::config(format!(
        "{label} must be a CryptoKey (from crypto.subtle.generateKey, importKey or deriveKey)"
    ))
}

/// A JSON value as a plain JS value (objects, arrays; never `Map`).
pub fn from_json(value: &Value) -> JsValue {
    let text = serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned());
    JSON::parse(&text).unwrap_or(JsValue::NULL)
}

/// Parse JSON text into a JS value.
pub fn parse_text(text: &str) -> Result<JsValue, ClientError> {
    JSON::parse(text).map_err(|e| ClientError::internal(format!("bad JSON: {}", describe(&e))))
}

/// The message of a thrown JS value, for error messages.
pub fn describe(value: &JsValue) -> String {
    if let Some(e) = value.dyn_ref::<js_sys::Error>() {
        return format!("{}: {}", String::from(e.name()), String::from(e.message()));
    }
    value.as_string().unwrap_or_else(|| format!("{value:?}"))
}

/// `setTimeout(callback, ms)` on the global (window or worker).
pub fn set_timeout(callback: &Function, ms: u32) -> JsValue {
    let global = js_sys::global();
    Reflect::get(&global, &JsValue::from_str("setTimeout"))
        .ok()
        .and_then(|set| set.dyn_into::<Function>().ok())
        .and_then(|set| set.call2(&global, callback, &JsValue::from(ms)).ok())
        .unwrap_or(JsValue::UNDEFINED)
}

/// `clearTimeout(id)` for an id from [`set_timeout`].
pub fn clear_timeout(id: &JsValue) {
    let global = js_sys::global();
    if let Ok(clear) = Reflect::get(&global, &JsValue::from_str("clearTimeout")) {
        if let Some(clear) = clear.dyn_ref::<Function>() {
            let _ = clear.call1(&global, id);
        }
    }
}

/// A promise that resolves with `value` after `ms` milliseconds.
pub fn delay(ms: u32, value: JsValue) -> Promise {
    Promise::new(&mut |resolve, _reject| {
        let value = value.clone();
        let done = Closure::once_into_js(move || {
            let _ = resolve.call1(&JsValue::UNDEFINED, &value);
        });
        set_timeout(done.unchecked_ref(), ms);
    })
}

/// An event listener that is removed when dropped (`#[must_use]`, like gloo's).
#[must_use = "the listener is removed when this is dropped"]
pub struct Listener {
    target: EventTarget,
    kind: &'static str,
    callback: Closure<dyn FnMut(Event)>,
}

impl Listener {
    /// Listen for `kind` events on `target`.
    pub fn new(target: &EventTarget, kind: &'static str, f: impl FnMut(Event) + 'static) -> Self {
        let callback = Closure::<dyn FnMut(Event)>::new(f);
        let _ = target.add_event_listener_with_callback(kind, callback.as_ref().unchecked_ref());
        Self {
            target: target.clone(),
            kind,
            callback,
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self
            .target
            .remove_event_listener_with_callback(self.kind, self.callback.as_ref().unchecked_ref());
    }
}

/// Call a user's callback; a throwing listener is reported on the console, never propagated.
pub fn call_listener(f: &Function, args: &[JsValue]) {
    let result = match args {
        [] => f.call0(&JsValue::UNDEFINED),
        [a] => f.call1(&JsValue::UNDEFINED, a),
        [a, b, ..] => f.call2(&JsValue::UNDEFINED, a, b),
    };
    if let Err(e) = result {
        web_sys::console::error_2(&JsValue::from_str("rangersync: a listener threw"), &e);
    }
}

/// Call `navigator.storage.persist()` (asks the browser to keep this origin's storage under
/// pressure) without waiting for it: Firefox may ask the person first. `None` where there is
/// no Storage API.
pub fn request_persistent_storage(window: &web_sys::Window) -> Option<Promise> {
    let storage = Reflect::get(&window.navigator(), &JsValue::from_str("storage"))
        .ok()
        .filter(JsValue::is_object)?;
    let persist: Function = Reflect::get(&storage, &JsValue::from_str("persist"))
        .ok()?
        .dyn_into()
        .ok()?;
    persist.call0(&storage).ok()?.dyn_into().ok()
}
