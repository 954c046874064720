//! Hand-written bindings for Background Sync and Periodic Background Sync, which web-sys
//! does not have. Both managers may be absent (Firefox, Safari, Electron): the getters
//! return `None` then.

use js_sys::Promise;
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    /// A `ServiceWorkerRegistration` seen with its `sync` and `periodicSync` members.
    #[wasm_bindgen(extends = web_sys::ServiceWorkerRegistration)]
    #[derive(Debug, Clone)]
    pub type SyncRegistration;

    /// `registration.sync` (undefined without Background Sync).
    #[wasm_bindgen(method, getter, js_name = sync)]
    pub fn sync(this: &SyncRegistration) -> Option<SyncManager>;

    /// `registration.periodicSync` (undefined without Periodic Background Sync).
    #[wasm_bindgen(method, getter, js_name = periodicSync)]
    pub fn periodic_sync(this: &SyncRegistration) -> Option<PeriodicSyncManager>;

    /// `SyncManager`.
    #[derive(Debug, Clone)]
    pub type SyncManager;

    /// `sync.register(tag)`.
    #[wasm_bindgen(method, catch, js_name = register)]
    pub fn register(this: &SyncManager, tag: &str) -> Result<Promise, JsValue>;

    /// `sync.getTags()`.
    #[wasm_bindgen(method, catch, js_name = getTags)]
    pub fn get_tags(this: &SyncManager) -> Result<Promise, JsValue>;

    /// `PeriodicSyncManager`.
    #[derive(Debug, Clone)]
    pub type PeriodicSyncManager;

    /// `periodicSync.register(tag, { minInterval })`.
    #[wasm_bindgen(method, catch, js_name = register)]
    pub fn register_periodic(
        this: &PeriodicSyncManager,
        tag: &str,
        options: &JsValue,
    ) -> Result<Promise, JsValue>;

    /// `periodicSync.unregister(tag)`.
    #[wasm_bindgen(method, catch, js_name = unregister)]
    pub fn unregister(this: &PeriodicSyncManager, tag: &str) -> Result<Promise, JsValue>;

    /// `periodicSync.getTags()`.
    #[wasm_bindgen(method, catch, js_name = getTags)]
    pub fn get_periodic_tags(this: &PeriodicSyncManager) -> Result<Promise, JsValue>;

    /// `SyncEvent`.
    #[wasm_bindgen(extends = web_sys::ExtendableEvent, extends = web_sys::Event)]
    #[derive(Debug, Clone)]
    pub type SyncEvent;

    #[wasm_bindgen(method, getter)]
    pub fn tag(this: &SyncEvent) -> String;

    #[wasm_bindgen(method, getter, js_name = lastChance)]
    pub fn last_chance(this: &SyncEvent) -> bool;

    /// `PeriodicSyncEvent`.
    #[wasm_bindgen(extends = web_sys::ExtendableEvent, extends = web_sys::Event)]
    #[derive(Debug, Clone)]
    pub type PeriodicSyncEvent;

    #[wasm_bindgen(method, getter, js_name = tag)]
    pub fn periodic_tag(this: &PeriodicSyncEvent) -> String;
}

/// The Background Sync tag rangersync registers.
pub const SYNC_TAG: &str = "rangersync-flush";
/// The Periodic Background Sync tag rangersync registers.
pub const PERIODIC_TAG: &str = "rangersync-periodic";

/// The worker's registration, when running in a service worker (else `None`).
pub fn registration() -> Option<SyncRegistration> {
    use wasm_bindgen::JsCast;
    crate::js::global_prop("registration").map(|r| r.unchecked_into::<SyncRegistration>())
}

/// Register the Background Sync tag. Returns whether the browser took it.
pub async fn register_sync() -> bool {
    let Some(manager) = registration().and_then(|r| r.sync()) else {
        return false;
    };
    match manager.register(SYNC_TAG) {
        Ok(p) => crate::js::await_promise(p).await.is_ok(),
        Err(_) => false,
    }
}

/// Register (or, with `None`, unregister) the periodic sync. Returns whether it is registered.
pub async fn set_periodic(interval_ms: Option<u64>) -> bool {
    let Some(manager) = registration().and_then(|r| r.periodic_sync()) else {
        return false;
    };
    match interval_ms {
        Some(ms) => {
            let options = js_sys::Object::new();
            let _ = js_sys::Reflect::set(&options, &"minInterval".into(), &(ms as f64).into());
            match manager.register_periodic(PERIODIC_TAG, &options) {
                Ok(p) => crate::js::await_promise(p).await.is_ok(),
                Err(_) => false,
            }
        }
        None => {
            if let Ok(p) = manager.unregister(PERIODIC_TAG) {
                let _ = crate::js::await_promise(p).await;
            }
            false
        }
    }
}
