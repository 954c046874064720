//! The JS exports the page module calls after its dynamic `import()`: the page engine (the
//! worker's [`Engine`] over the same IndexedDB database, answering the same text protocol) and
//! the YAML conversions. Only strings and functions cross between the two wasm modules.

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Function, Promise, Reflect};
use rangersync_shared::messages::{Broadcast, BLOB_BESIDE, TEXT_BESIDE};
use rangersync_shared::outbox::Trigger;
use rangersync_shared::status::Mode;
use rangersync_sw::Engine;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::convert;

/// An `Error` named `SyncError` with a stable `code`, like every rejection of the client.
fn sync_error(code: &str, message: &str) -> JsValue {
    let error = js_sys::Error::new(message);
    error.set_name("SyncError");
    let _ = Reflect::set(&error, &JsValue::from_str("code"), &JsValue::from_str(code));
    error.into()
}

/// The outbox engine running in this page: the client's transport in page mode.
#[wasm_bindgen]
pub struct PageEngine {
    engine: Rc<RefCell<Rc<Engine>>>,
}

/// The engine, reopened first when its database connection ended under it (the database was
/// deleted or cleared while the page ran).
async fn live(slot: &RefCell<Rc<Engine>>) -> Result<Rc<Engine>, JsValue> {
    let current = slot.borrow().clone();
    if !current.is_closed() {
        return Ok(current);
    }
    let fresh = current.reopen().await.map_err(|e| {
        sync_error(
            "storage_error",
            &format!(
                "the database closed and could not be reopened: {}",
                e.message
            ),
        )
    })?;
    let now = slot.borrow().clone();
    if Rc::ptr_eq(&now, &current) || now.is_closed() {
        *slot.borrow_mut() = fresh.clone();
        Ok(fresh)
    } else {
        // Another request reopened it first.
        fresh.close();
        Ok(now)
    }
}

/// Open the engine over the `rangersync` database in page mode. `onBroadcast(text)` hears
/// every status and change broadcast as the JSON text the worker would post.
#[wasm_bindgen(js_name = openPageEngine)]
pub async fn open_page_engine(
    #[wasm_bindgen(unchecked_param_type = "(broadcast: string) => void")] on_broadcast: Function,
) -> Result<PageEngine, JsValue> {
    console_error_panic_hook::set_once();
    let notify: Rc<dyn Fn(&Broadcast)> = Rc::new(move |b: &Broadcast| {
        let Ok(text) = serde_json::to_string(b) else {
            return;
        };
        if let Err(e) = on_broadcast.call1(&JsValue::UNDEFINED, &JsValue::from_str(&text)) {
            web_sys::console::error_2(&JsValue::from_str("rangersync: a listener threw"), &e);
        }
    });
    let engine = Engine::open(Mode::Page, notify)
        .await
        .map_err(|e| sync_error(&e.code, &e.message))?;
    Ok(PageEngine {
        engine: Rc::new(RefCell::new(engine)),
    })
}

#[wasm_bindgen]
impl PageEngine {
    /// Answer one request envelope (`{ v, id, request }` as JSON text) with its reply envelope
    /// as JSON text; `key` is the `CryptoKey` a request saying `key: true` carries, or the
    /// `Blob` of a `put_blob` (else `undefined`). A reply that carries a `Blob` (`get_blob`)
    /// is `{ text, blob }`. Refusals are replies too; the promise itself does not reject.
    #[wasm_bindgen(unchecked_return_type = "Promise<string | { text: string, blob: Blob }>")]
    pub fn handle(&self, text: String, key: JsValue) -> Promise {
        let slot = Rc::clone(&self.engine);
        let key = (!key.is_undefined() && !key.is_null()).then_some(key);
        future_to_promise(async move {
            let engine = live(&slot).await?;
            let (reply, beside) = engine.handle_text_carrying(&text, key).await;
            if engine.is_closed() {
                // A restore retired it: the fresh engine flushes what was put back.
                let fresh = live(&slot).await?;
                wasm_bindgen_futures::spawn_local(async move {
                    fresh.trigger(Trigger::WorkerStart).await;
                });
            }
            let text = serde_json::to_string(&reply)
                .map(|text| JsValue::from_str(&text))
                .map_err(|e| sync_error("internal", &format!("cannot encode a reply: {e}")))?;
            Ok(match beside {
                // `{ text, blob }`, as the worker posts it (`get_blob`).
                Some(blob) => {
                    let carrying = js_sys::Object::new();
                    let _ = Reflect::set(&carrying, &TEXT_BESIDE.into(), &text);
                    let _ = Reflect::set(&carrying, &BLOB_BESIDE.into(), &blob);
                    carrying.into()
                }
                None => text,
            })
        })
    }

    /// Stop the engine's timers and close its database connection.
    pub fn close(&self) {
        self.engine.borrow().close();
    }
}

/// A JSON snapshot as block YAML (same checksum). Throws a `SyncError` (`bad_snapshot`,
/// `checksum_mismatch`) when the text is not a valid snapshot.
#[wasm_bindgen(js_name = yamlFromJson)]
pub fn yaml_from_json(json: &str) -> Result<String, JsValue> {
    convert::yaml_from_json(json).map_err(|e| sync_error(e.code(), &e.to_string()))
}

/// A YAML snapshot, verified, as JSON. Throws a `SyncError` (`bad_snapshot`,
/// `checksum_mismatch`) when it is not a valid snapshot.
#[wasm_bindgen(js_name = jsonFromYaml)]
pub fn json_from_yaml(yaml: &str) -> Result<String, JsValue> {
    convert::json_from_yaml(yaml).map_err(|e| sync_error(e.code(), &e.to_string()))
}
