//! The on-demand half of the page module: `rangersync_page_extras.js` (crate
//! `rangersync-page-extras`), which holds the page-only fallback engine and the YAML snapshot
//! conversion. It is loaded with a dynamic `import()` the first time a page needs either, from
//! next to `rangersync_page.js`, so a page in worker mode never downloads it.
//!
//! The snippet's specifier is a string literal, so a bundler (Vite, Rollup, webpack) sees it and
//! emits the extras as a lazy chunk; without a bundler the browser resolves it against the
//! snippet's own URL (`<pkg>/snippets/<crate>-<hash>/inline0.js` → `<pkg>/`).

use std::cell::RefCell;

use js_sys::{Function, Promise};
use rangersync_shared::messages::codes;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use crate::error::ClientError;
use crate::js::describe;

#[wasm_bindgen(inline_js = r#"
const EXTRAS = '../../rangersync_page_extras.js';
export function load_rangersync_extras() {
  return import('../../rangersync_page_extras.js').then(
    async (extras) => { await extras.default(); return extras; },
    (e) => {
      const url = new URL(EXTRAS, import.meta.url).href;
      throw new Error(`cannot load ${url}: ${e && e.message ? e.message : e}`);
    });
}
"#)]
extern "C" {
    /// The initialised extras module; rejects with an `Error` naming the URL that failed.
    fn load_rangersync_extras() -> Promise;
}

#[wasm_bindgen]
extern "C" {
    /// The namespace of `rangersync_page_extras.js` (see `page-extras/src/engine.rs`).
    pub type ExtrasModule;

    #[wasm_bindgen(method, js_name = openPageEngine)]
    fn open_page_engine(this: &ExtrasModule, on_broadcast: &Function) -> Promise;

    #[wasm_bindgen(method, catch, js_name = yamlFromJson)]
    fn yaml_from_json(this: &ExtrasModule, json: &str) -> Result<String, JsValue>;

    #[wasm_bindgen(method, catch, js_name = jsonFromYaml)]
    fn json_from_yaml(this: &ExtrasModule, yaml: &str) -> Result<String, JsValue>;

    /// The outbox engine running in this page (`PageEngine` of the extras).
    pub type PageEngine;

    #[wasm_bindgen(method, js_name = handle)]
    fn handle_text(this: &PageEngine, text: &str, key: &JsValue) -> Promise;

    #[wasm_bindgen(method, js_name = close)]
    fn close_engine(this: &PageEngine);
}

thread_local! {
    /// The one load of this page (a promise shared by concurrent callers); cleared on failure so
    /// that a later call tries again (the network may be back).
    static LOADING: RefCell<Option<Promise>> = const { RefCell::new(None) };
}

/// The extras module, loaded and initialised once per page. Fails with `worker_unavailable`
/// naming the URL (404, offline, a blocked import): never a silent success.
pub async fn load(purpose: &str) -> Result<ExtrasModule, ClientError> {
    let loading = LOADING.with(|l| {
        l.borrow_mut()
            .get_or_insert_with(load_rangersync_extras)
            .clone()
    });
    match JsFuture::from(loading).await {
        Ok(module) => Ok(module.unchecked_into()),
        Err(e) => {
            LOADING.with(|l| l.borrow_mut().take());
            Err(ClientError::new(
                codes::WORKER_UNAVAILABLE,
                format!(
                    "{purpose} needs rangersync_page_extras.js, which could not be loaded: {}",
                    describe(&e)
                ),
            ))
        }
    }
}

/// A rejection or throw of the extras (a `SyncError` with `code`) as a [`ClientError`].
pub fn error_from_js(e: &JsValue) -> ClientError {
    let code = js_sys::Reflect::get(e, &JsValue::from_str("code"))
        .ok()
        .and_then(|c| c.as_string());
    let message = e
        .dyn_ref::<js_sys::Error>()
        .map_or_else(|| describe(e), |err| String::from(err.message()));
    ClientError {
        code: code.unwrap_or_else(|| codes::INTERNAL.to_owned()),
        message,
    }
}

impl ExtrasModule {
    /// Open the page engine; `on_broadcast(text)` hears every broadcast as JSON text.
    pub async fn open_engine(&self, on_broadcast: &Function) -> Result<PageEngine, ClientError> {
        JsFuture::from(self.open_page_engine(on_broadcast))
            .await
            .map(JsCast::unchecked_into)
            .map_err(|e| error_from_js(&e))
    }

    /// A JSON snapshot as YAML.
    pub fn yaml(&self, json: &str) -> Result<String, ClientError> {
        self.yaml_from_json(json).map_err(|e| error_from_js(&e))
    }

    /// A YAML snapshot, verified, as JSON.
    pub fn json(&self, yaml: &str) -> Result<String, ClientError> {
        self.json_from_yaml(yaml).map_err(|e| error_from_js(&e))
    }
}

impl PageEngine {
    /// Send one request envelope (JSON text) and the `CryptoKey` or `Blob` it carries (or
    /// `undefined`); resolves with the reply envelope's JSON text and what its reply carries
    /// beside it (`undefined` but for `get_blob`).
    pub async fn request(
        &self,
        text: &str,
        beside: &JsValue,
    ) -> Result<(String, JsValue), ClientError> {
        let reply = JsFuture::from(self.handle_text(text, beside))
            .await
            .map_err(|e| error_from_js(&e))?;
        crate::client::split_reply(&reply)
            .ok_or_else(|| ClientError::internal("the page engine replied with no text"))
    }

    /// Send a request envelope and forget the reply (page events).
    pub fn post(&self, text: &str) {
        let _ = self.handle_text(text, &JsValue::UNDEFINED);
    }

    /// Stop the engine and close its database connection.
    pub fn close(&self) {
        self.close_engine();
    }
}
