//! Small JS helpers that work in any global scope (service worker, window, worker):
//! the clock, `fetch`, `setTimeout`, promises as futures, serde conversion.

use js_sys::{Function, Promise};
use serde::de::DeserializeOwned;
use serde::Serialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use crate::error::{Result, SwError};
use rangersync_shared::protocol::Millis;
use rangersync_shared::retry::RandomSource;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = fetch)]
    fn global_fetch(request: &web_sys::Request) -> Promise;
    #[wasm_bindgen(js_name = setTimeout)]
    fn global_set_timeout(handler: &Function, ms: i32) -> JsValue;
    #[wasm_bindgen(js_name = clearTimeout)]
    fn global_clear_timeout(id: &JsValue);
}

/// The global object (`self` in a worker, `window` in a page).
pub fn global() -> js_sys::Object {
    js_sys::global()
}

/// A property of the global object, if defined.
pub fn global_prop(name: &str) -> Option<JsValue> {
    js_sys::Reflect::get(&global(), &JsValue::from_str(name))
        .ok()
        .filter(|v| !v.is_undefined() && !v.is_null())
}

/// Wall-clock milliseconds.
pub fn now() -> Millis {
    js_sys::Date::now() as Millis
}

/// `Math.random`, as the flusher's random source.
pub struct MathRandom;
impl RandomSource for MathRandom {
    fn next_unit(&mut self) -> f64 {
        js_sys::Math::random()
    }
}

/// A random id: `crypto.randomUUID()` when present, else Math.random.
pub fn random_id() -> String {
    if let Some(crypto) = global_prop("crypto") {
        if let Ok(f) = js_sys::Reflect::get(&crypto, &"randomUUID".into()) {
            if let Some(f) = f.dyn_ref::<Function>() {
                if let Ok(v) = f.call0(&crypto) {
                    if let Some(s) = v.as_string() {
                        return s;
                    }
                }
            }
        }
    }
    (0..4)
        .map(|_| format!("{:08x}", (js_sys::Math::random() * 4_294_967_296.0) as u64))
        .collect::<Vec<_>>()
        .join("-")
}

/// Await a promise; a rejection becomes an [`SwError`].
pub async fn await_promise(p: Promise) -> Result<JsValue> {
    JsFuture::from(p).await.map_err(|e| SwError::from_js(&e))
}

/// `fetch(request)`: `Err` only when there was no HTTP answer. Only the worker's fetch
/// handler passes a request through.
#[cfg(feature = "worker")]
pub async fn fetch(request: &web_sys::Request) -> Result<web_sys::Response, String> {
    match JsFuture::from(global_fetch(request)).await {
        Ok(v) => v
            .dyn_into::<web_sys::Response>()
            .map_err(|_| "fetch returned no Response".to_owned()),
        Err(e) => Err(SwError::from_js(&e).to_string()),
    }
}

/// A one-shot signal: `fire()` wakes whoever awaits the future.
pub struct Signal(Function);
impl Signal {
    pub fn new() -> (Self, JsFuture) {
        let mut resolve = None;
        let p = Promise::new(&mut |res, _rej| resolve = Some(res));
        let resolve = resolve.unwrap_or_else(|| Function::new_no_args(""));
        (Self(resolve), JsFuture::from(p))
    }
    pub fn fire(&self) {
        let _ = self.0.call0(&JsValue::NULL);
    }
}

/// A `setTimeout` handle that clears itself and frees its closure on drop.
pub struct Timeout {
    id: JsValue,
    _closure: Closure<dyn FnMut()>,
}
impl Timeout {
    pub fn new(ms: i64, f: impl FnMut() + 'static) -> Self {
        let closure = Closure::<dyn FnMut()>::new(f);
        let ms = ms.clamp(0, i64::from(i32::MAX)) as i32;
        let id = global_set_timeout(closure.as_ref().unchecked_ref(), ms);
        Self {
            id,
            _closure: closure,
        }
    }
}
impl Drop for Timeout {
    fn drop(&mut self) {
        global_clear_timeout(&self.id);
    }
}

/// Rust → JS plain objects (never `Map`, numbers never BigInt), through JSON text: serde_json
/// is the worker's one serialization path (no second serializer in the wasm), and
/// `JSON.parse` builds the object natively in one call instead of one call per field.
pub fn to_js<T: Serialize + ?Sized>(value: &T) -> Result<JsValue> {
    let text = serde_json::to_string(value)
        .map_err(|e| SwError::coded(rangersync_shared::messages::codes::INTERNAL, e.to_string()))?;
    js_sys::JSON::parse(&text).map_err(|e| SwError::from_js(&e))
}

/// JS → Rust through `JSON.stringify`; anything that does not fit `T` (or is not JSON at all)
/// is a corrupt record.
pub fn from_js<T: DeserializeOwned>(value: JsValue) -> Result<T> {
    let text = js_sys::JSON::stringify(&value)
        .ok()
        .and_then(|t| t.as_string())
        .ok_or_else(|| SwError::Corrupt("not a JSON value".into()))?;
    serde_json::from_str(&text).map_err(|e| SwError::Corrupt(e.to_string()))
}

/// Log to the console (never with tokens or bodies).
pub fn log(message: &str) {
    web_sys::console::warn_1(&JsValue::from_str(&format!("rangersync: {message}")));
}

/// `navigator.storage.estimate()` as `(usage, quota)` in bytes; `None` where there is no
/// Storage API (or it fails).
pub async fn storage_estimate() -> Option<(f64, f64)> {
    let storage = navigator_storage()?;
    let estimate: js_sys::Function = js_sys::Reflect::get(&storage, &"estimate".into())
        .ok()?
        .dyn_into()
        .ok()?;
    let promise: Promise = estimate.call0(&storage).ok()?.dyn_into().ok()?;
    let answer = JsFuture::from(promise).await.ok()?;
    let number = |k: &str| js_sys::Reflect::get(&answer, &k.into()).ok()?.as_f64();
    Some((number("usage")?, number("quota")?))
}

/// `navigator.storage`, where the global scope has one.
fn navigator_storage() -> Option<JsValue> {
    let navigator = global_prop("navigator")?;
    js_sys::Reflect::get(&navigator, &"storage".into())
        .ok()
        .filter(|s| s.is_object())
}

/// `navigator.storage.persisted()`: whether the browser keeps this origin's storage under
/// pressure; `None` where there is no Storage API (or it fails).
pub async fn storage_persisted() -> Option<bool> {
    let storage = navigator_storage()?;
    let persisted: js_sys::Function = js_sys::Reflect::get(&storage, &"persisted".into())
        .ok()?
        .dyn_into()
        .ok()?;
    let promise: Promise = persisted.call0(&storage).ok()?.dyn_into().ok()?;
    JsFuture::from(promise).await.ok()?.as_bool()
}
